/* The language rules (paper, ascii, script) on crafted tokens: digits, punctuation (ASCII and
 * full-width, in and out of the paper's class), Unicode whitespace, byte pieces, mixed scripts;
 * examples: the first of tied peaks, the digit walk and the paper's wrap before position 0; the 90%
 * vote at its boundary and what each rule divides by (granularity: tests/test_gran.c). */
#include <stdio.h>
#include <string.h>

#include "fm_lang.h"
#include "sf_check.h"

static const char *L(fm_lang l) { return fm_lang_names[l]; }

/* Expected per rule: paper (checked against Python's re and str.strip, see the comments), ascii, script. */
static void tok(const char *s, fm_lang paper, fm_lang ascii, fm_lang script) {
    fm_lang want[FM_RULE_COUNT] = {[FM_RULE_PAPER] = paper, [FM_RULE_ASCII] = ascii, [FM_RULE_SCRIPT] = script};
    for (int r = 0; r < FM_RULE_COUNT; r++) {
        fm_lang got = fm_token_lang((fm_rule)r, s);
        CHECK(got == want[r], "%s rule on \"%s\": %s, want %s", fm_rule_names[r], s, L(got), L(want[r]));
    }
}

/* An example of n tokens with the given activations. */
static fm_lang ex_lang(fm_rule rule, const char *const *toks, const int *acts, int n) {
    fm_token_act ex = {.n = n, .tok = toks, .act = acts};
    return fm_example_lang(rule, &ex);
}

#define N_ FM_LANG_NONE
#define EN FM_LANG_EN
#define JA FM_LANG_JA
#define OT FM_LANG_OTHER

int main(void) {
    /* token level                    paper ascii script */
    tok(" The", EN, EN, EN);
    tok("ed", EN, EN, EN);
    tok(":", JA, EN, N_);               /* ':' is outside the paper's class */
    tok(" (", EN, EN, N_);              /* stripped "(" is inside it */
    tok("don't", EN, EN, EN);
    tok("U.S.", EN, EN, EN);
    tok("e-mail", EN, EN, EN);
    tok("\"quoted\"", EN, EN, EN);
    tok("a_b", JA, EN, EN);
    tok("/", JA, EN, N_);
    tok("=", JA, EN, N_);
    tok("x;", JA, EN, EN);
    tok(" 7", N_, N_, N_);              /* ASCII digits defer */
    tok("1980", N_, N_, N_);
    tok("\u00a012\u00a0", N_, JA, N_);  /* no-break spaces stripped (str.isspace); ascii: non-ASCII */
    tok("12\n", N_, N_, N_);
    tok("1 2", JA, N_, N_);             /* a space between digits is neither class */
    tok("A75", JA, EN, EN);             /* letters with digits */
    tok(" ", JA, N_, N_);               /* empty after strip: matches neither regex */
    tok("\n", JA, N_, N_);
    tok("\u2028", JA, JA, N_);
    tok("<0x0A>", JA, N_, N_);          /* the piece's literal text, "<0x..>" */
    tok("<0x41>", JA, EN, EN);
    tok("<0xE3>", JA, JA, N_);
    tok("a\u00a0b", EN, JA, EN);        /* \s inside: Unicode whitespace */
    tok("\u3000the\u3000", EN, JA, EN);
    tok("\x1c\x1d" "ab\xc2\x85", EN, JA, EN); /* U+001C..U+001F and U+0085 are whitespace to Python */
    tok("a\u200bb", JA, JA, EN);        /* a zero-width space is not */
    tok("\ufeffab", JA, JA, EN);
    tok("年", JA, JA, JA);
    tok("みや", JA, JA, JA);
    tok("タレント", JA, JA, JA);
    tok("（", JA, JA, N_);
    tok("、", JA, JA, N_);
    tok("TBSの", JA, JA, EN);           /* script: 3 Latin letters outvote 1 kana */
    tok("は、", JA, JA, JA);
    tok("ía", JA, JA, EN);
    tok("ＤＯＧ", JA, JA, EN);
    tok("Москва", JA, JA, OT);
    tok("１９８０", JA, JA, N_);         /* full-width digits are not [0-9] */
    tok("\xff\xfe", JA, JA, N_);        /* invalid UTF-8 (never in JSON): no class */

    /* example level: the peak is the first highest activation; digits walk back */
    const char *a[] = {"日本", "の", "1980"};
    const int a1[] = {0, 0, 5};
    CHECK(ex_lang(FM_RULE_PAPER, a, a1, 3) == JA, "digits after Japanese");
    const char *b[] = {" The", " year", " 1980"};
    const int b1[] = {0, 0, 9}, b2[] = {3, 1, 3};
    CHECK(ex_lang(FM_RULE_PAPER, b, b1, 3) == EN, "digits after English");
    CHECK(ex_lang(FM_RULE_PAPER, b, b2, 3) == EN, "tie: the first highest");
    const char *t[] = {"日本", " cat", "犬"};
    const int t1[] = {2, 7, 7}, t2[] = {0, 0, 0};
    CHECK(ex_lang(FM_RULE_PAPER, t, t1, 3) == EN, "tie between English and Japanese: the first wins");
    CHECK(ex_lang(FM_RULE_PAPER, t, t2, 3) == JA, "all zero: position 0");
    /* the wrap: digits at position 0 look at the last token, then back from there */
    const char *w[] = {"12", " cat", "犬", " 3"};
    const int w1[] = {9, 0, 0, 0};
    CHECK(ex_lang(FM_RULE_PAPER, w, w1, 4) == JA, "paper: before position 0 comes the last token, then the one before");
    CHECK(ex_lang(FM_RULE_ASCII, w, w1, 4) == N_ && ex_lang(FM_RULE_SCRIPT, w, w1, 4) == N_,
          "ascii, script: no wrap");
    const char *w2[] = {" 3", "74", " dog", "5"};
    const int w2a[] = {0, 4, 0, 1};
    CHECK(ex_lang(FM_RULE_PAPER, w2, w2a, 4) == EN, "paper: back past 0 to the last tokens, digits skipped");
    const char *c[] = {" 3", "74"};
    const int c1[] = {0, 2};
    CHECK(ex_lang(FM_RULE_PAPER, c, c1, 2) == N_, "all digits: no language (Python raises IndexError)");
    fm_token_act empty = {.n = 0};
    CHECK(fm_example_lang(FM_RULE_PAPER, &empty) == N_ && fm_token_act_peak(&empty) == -1, "empty example");
    const char *d[] = {"東京", "、"};
    const int d1[] = {0, 3};
    CHECK(ex_lang(FM_RULE_SCRIPT, d, d1, 2) == JA, "script: full-width comma defers to kanji");
    CHECK(ex_lang(FM_RULE_PAPER, d, d1, 2) == JA, "paper: full-width comma is Japanese");
    const char *e[] = {"日本", " 1", ":"};
    const int e1[] = {0, 0, 3};
    CHECK(ex_lang(FM_RULE_ASCII, e, e1, 3) == EN, "ascii: ASCII colon after Japanese is English");
    CHECK(ex_lang(FM_RULE_PAPER, e, e1, 3) == JA, "paper: ASCII colon is Japanese");
    CHECK(ex_lang(FM_RULE_SCRIPT, e, e1, 3) == JA, "script: colon and digit defer to Japanese");

    /* feature vote: strictly more than 90% of all examples (paper) / of those with a language */
    enum { NV = 100 };
    const char *en_t[] = {" dog"}, *ja_t[] = {"犬"}, *dg_t[] = {"7"};
    const int one[] = {1};
    fm_token_act v[NV];
    fm_lang_vote vote;
    for (int i = 0; i < NV; i++) v[i] = (fm_token_act){.n = 1, .tok = i < 90 ? en_t : ja_t, .act = one};
    fm_feature_lang(FM_RULE_PAPER, v, NV, 0.9, &vote);
    CHECK(vote.verdict == FM_FLANG_MIXED && vote.counts[EN] == 90 && vote.counts[JA] == 10, "exactly 90%% is mixed");
    fm_feature_lang(FM_RULE_PAPER, v + 1, NV - 1, 0.9, &vote);
    CHECK(vote.verdict == FM_FLANG_MIXED, "89 of 99 is mixed");
    for (int i = 90; i < NV; i++) v[i].tok = i < 95 ? en_t : dg_t; /* 95 en, 5 all-digit */
    fm_feature_lang(FM_RULE_PAPER, v, NV, 0.9, &vote);
    CHECK(vote.verdict == FM_FLANG_EN && vote.counts[N_] == 5, "95 en of 100 with 5 without language: en");
    for (int i = 0; i < NV; i++) v[i].tok = i < 88 ? en_t : dg_t; /* 88 en, 12 none */
    fm_feature_lang(FM_RULE_PAPER, v, NV, 0.9, &vote);
    CHECK(vote.verdict == FM_FLANG_MIXED, "paper: examples without a language count against (88%%)");
    fm_feature_lang(FM_RULE_ASCII, v, NV, 0.9, &vote);
    CHECK(vote.verdict == FM_FLANG_EN && vote.counts[N_] == 12, "ascii: they are left out (100%%)");
    for (int i = 0; i < NV; i++) v[i].tok = ja_t;
    fm_feature_lang(FM_RULE_SCRIPT, v, 91, 0.9, &vote);
    CHECK(vote.verdict == FM_FLANG_JA, "all Japanese");
    for (int i = 0; i < NV; i++) v[i].tok = dg_t;
    fm_feature_lang(FM_RULE_ASCII, v, 7, 0.9, &vote);
    CHECK(vote.verdict == FM_FLANG_UNKNOWN, "ascii: no language at all");
    fm_feature_lang(FM_RULE_PAPER, v, 7, 0.9, &vote);
    CHECK(vote.verdict == FM_FLANG_MIXED, "paper: no language at all is mixed");
    fm_feature_lang(FM_RULE_PAPER, v, 0, 0.9, &vote);
    CHECK(vote.verdict == FM_FLANG_UNKNOWN, "no examples");
    const char *ru_t[] = {"Москва"};
    for (int i = 0; i < 10; i++) v[i].tok = i < 9 ? en_t : ru_t;
    fm_feature_lang(FM_RULE_SCRIPT, v, 10, 0.9, &vote);
    CHECK(vote.verdict == FM_FLANG_MIXED, "script: other script counts against");

    printf("%s\n", failures ? "FAIL" : "ok");
    return failures ? 1 : 0;
}
