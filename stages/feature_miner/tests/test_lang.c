/* The language rules on crafted tokens: digits, punctuation (ASCII and
 * full-width), byte pieces, mixed scripts, and the 90% vote at its boundary. */
#include <stdio.h>
#include <string.h>

#include "fm_lang.h"
#include "sf_check.h"

static const char *L(fm_lang l) { return (const char *[]){"defer", "en", "ja", "other"}[l]; }

static void tok(const char *s, fm_lang paper, fm_lang script) {
    fm_lang p = fm_token_lang(FM_RULE_PAPER, s), c = fm_token_lang(FM_RULE_SCRIPT, s);
    CHECK(p == paper, "paper rule on \"%s\": %s, want %s", s, L(p), L(paper));
    CHECK(c == script, "script rule on \"%s\": %s, want %s", s, L(c), L(script));
}

int main(void) {
    /* token level */
    tok(" The", FM_LANG_EN, FM_LANG_EN);
    tok("ed", FM_LANG_EN, FM_LANG_EN);
    tok(":", FM_LANG_EN, FM_LANG_DEFER);      /* ASCII punctuation: English for the paper, no script */
    tok(" (", FM_LANG_EN, FM_LANG_DEFER);
    tok(" 7", FM_LANG_DEFER, FM_LANG_DEFER);  /* digits defer */
    tok("1980", FM_LANG_DEFER, FM_LANG_DEFER);
    tok("A75", FM_LANG_EN, FM_LANG_EN);       /* letters with digits: English */
    tok(" ", FM_LANG_DEFER, FM_LANG_DEFER);
    tok("\n", FM_LANG_DEFER, FM_LANG_DEFER);
    tok("<0x0A>", FM_LANG_DEFER, FM_LANG_DEFER); /* byte piece of a newline */
    tok("<0x41>", FM_LANG_EN, FM_LANG_EN);
    tok("<0xE3>", FM_LANG_JA, FM_LANG_DEFER);   /* a lone UTF-8 byte: non-ASCII, but no script */
    tok("年", FM_LANG_JA, FM_LANG_JA);
    tok("みや", FM_LANG_JA, FM_LANG_JA);
    tok("タレント", FM_LANG_JA, FM_LANG_JA);
    tok("（", FM_LANG_JA, FM_LANG_DEFER);      /* full-width punctuation */
    tok("、", FM_LANG_JA, FM_LANG_DEFER);
    tok("TBSの", FM_LANG_JA, FM_LANG_EN);      /* 3 Latin letters outvote 1 kana */
    tok("は、", FM_LANG_JA, FM_LANG_JA);
    tok("ía", FM_LANG_JA, FM_LANG_EN);         /* the paper's rule calls any non-ASCII Japanese */
    tok("ＤＯＧ", FM_LANG_JA, FM_LANG_EN);     /* full-width Latin */
    tok("Москва", FM_LANG_JA, FM_LANG_OTHER);
    tok("１９８０", FM_LANG_JA, FM_LANG_DEFER); /* full-width digits */

    /* example level: walk back over deferring tokens */
    const char *a[] = {"日本", "の", "1980"};
    CHECK(fm_example_lang(FM_RULE_PAPER, a, 2) == FM_LANG_JA, "digits after Japanese");
    const char *b[] = {" The", " year", " 1980"};
    CHECK(fm_example_lang(FM_RULE_PAPER, b, 2) == FM_LANG_EN, "digits after English");
    CHECK(fm_example_lang(FM_RULE_PAPER, b, 0) == FM_LANG_EN, "first token");
    const char *c[] = {" 3", "74"};
    CHECK(fm_example_lang(FM_RULE_PAPER, c, 1) == FM_LANG_DEFER, "only digits back to the start");
    const char *d[] = {"東京", "、"};
    CHECK(fm_example_lang(FM_RULE_SCRIPT, d, 1) == FM_LANG_JA, "script: full-width comma defers to kanji");
    CHECK(fm_example_lang(FM_RULE_PAPER, d, 1) == FM_LANG_JA, "paper: full-width comma is Japanese");
    const char *e[] = {"日本", " 1", ":"};
    CHECK(fm_example_lang(FM_RULE_PAPER, e, 2) == FM_LANG_EN, "paper: ASCII colon after Japanese is English");
    CHECK(fm_example_lang(FM_RULE_SCRIPT, e, 2) == FM_LANG_JA, "script: colon and digit defer to Japanese");

    /* feature vote: strictly more than 90% */
    int v1[FM_LANG_COUNT] = {[FM_LANG_DEFER] = 5, [FM_LANG_EN] = 91, [FM_LANG_JA] = 9};
    CHECK(fm_feature_lang(v1, 0.9) == FM_FLANG_EN, "91%% English");
    int v2[FM_LANG_COUNT] = {[FM_LANG_EN] = 90, [FM_LANG_JA] = 10};
    CHECK(fm_feature_lang(v2, 0.9) == FM_FLANG_BI, "exactly 90%% is bilingual");
    int v3[FM_LANG_COUNT] = {[FM_LANG_JA] = 50};
    CHECK(fm_feature_lang(v3, 0.9) == FM_FLANG_JA, "all Japanese");
    int v4[FM_LANG_COUNT] = {[FM_LANG_DEFER] = 7};
    CHECK(fm_feature_lang(v4, 0.9) == FM_FLANG_UNKNOWN, "no language at all");
    int v5[FM_LANG_COUNT] = {[FM_LANG_EN] = 9, [FM_LANG_OTHER] = 1};
    CHECK(fm_feature_lang(v5, 0.9) == FM_FLANG_BI, "other script counts against");

    printf("%s\n", failures ? "FAIL" : "ok");
    return failures ? 1 : 0;
}
