/* fm_lang.c — per-token language rules, the walk from an example's peak and the feature vote.
 * See fm_lang.h for the rules. */
#include "fm_lang.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

const char *const fm_lang_names[FM_LANG_COUNT] = {"none", "en", "ja", "other"};
const char *const fm_rule_names[FM_RULE_COUNT] = {"paper", "ascii", "script"};
const char *const fm_flang_names[FM_FLANG_COUNT] = {"en", "ja", "mixed", "unknown"};

/* A SentencePiece byte-fallback piece "<0xNN>": its byte, or -1. */
static int byte_piece(const char *s) {
    if (strlen(s) != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>') return -1;
    char hex[3] = {s[3], s[4], 0};
    char *end;
    long v = strtol(hex, &end, 16);
    return *end ? -1 : (int)v;
}

static int is_space(int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

static fm_lang ascii_lang(const char *tok) {
    int b = byte_piece(tok);
    if (b >= 0x80) return FM_LANG_JA;
    char one[2] = {(char)b, 0};
    const unsigned char *p = (const unsigned char *)(b >= 0 ? one : tok);
    int english = 0;
    for (; *p; p++) {
        if (*p >= 0x80) return FM_LANG_JA; /* any non-ASCII byte: "else Japanese" */
        if (!is_space(*p) && !(*p >= '0' && *p <= '9')) english = 1;
    }
    return english ? FM_LANG_EN : FM_LANG_NONE;
}

/* Python's str.isspace() for one code point: what str.strip() removes and what \s matches in a
 * str pattern (Py_UNICODE_ISSPACE; the same set in every Python 3 since Unicode 6.3). */
static int py_isspace(int32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* The paper's per-token test: re.match(r"^[a-zA-Z\s\"\'\(\),\.\-]+$", tok.strip()) -> en,
 * re.match(r"^[0-9]+$", ...) -> defer (NONE), else ja. strip() leaves no trailing newline, so
 * `$` matching before one never matters. Invalid UTF-8 (never in a JSON string) is ja. */
static fm_lang paper_lang(const char *tok) {
    /* One pass, no copy: strip() only drops edge spaces, so en holds when every non-space is of
     * its class (inner spaces are in it), digits when every non-space is a digit and no space
     * lies between two of them. */
    int any = 0, gap = 0, en = 1, digits = 1;
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)tok;
    for (utf8proc_ssize_t left = (utf8proc_ssize_t)strlen(tok); left > 0;) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate(p, left, &c);
        if (k <= 0) { k = 1; c = -1; } /* matches neither class */
        p += k;
        left -= k;
        if (py_isspace(c)) {
            gap |= any;
            continue;
        }
        digits &= !gap && c >= '0' && c <= '9';
        en &= (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c > 0 && c < 0x80 && strchr("\"'(),.-", c));
        any = 1;
    }
    return any && en ? FM_LANG_EN : any && digits ? FM_LANG_NONE : FM_LANG_JA;
}

static int in(utf8proc_int32_t c, utf8proc_int32_t lo, utf8proc_int32_t hi) { return c >= lo && c <= hi; }

static fm_lang script_of(utf8proc_int32_t c) {
    if (in(c, 0x3040, 0x309F) || in(c, 0x30A0, 0x30FF) || in(c, 0x31F0, 0x31FF) || in(c, 0xFF66, 0xFF9F))
        return FM_LANG_JA; /* Hiragana, Katakana (with ー), small and half-width Katakana */
    if (in(c, 0x4E00, 0x9FFF) || in(c, 0x3400, 0x4DBF) || in(c, 0xF900, 0xFAFF) || in(c, 0x20000, 0x3134F) ||
        c == 0x3005 || c == 0x3006 || c == 0x3007)
        return FM_LANG_JA; /* Han, and the iteration/closing marks 々 〆 〇 */
    utf8proc_category_t cat = utf8proc_category(c);
    int letter = cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
    if (!letter) return FM_LANG_NONE; /* digits, punctuation, symbols, spaces, marks */
    if (in(c, 'A', 'Z') || in(c, 'a', 'z') || in(c, 0xC0, 0x24F) || in(c, 0x1E00, 0x1EFF) ||
        in(c, 0xFF21, 0xFF3A) || in(c, 0xFF41, 0xFF5A))
        return FM_LANG_EN; /* Latin, also accented and full-width */
    return FM_LANG_OTHER;
}

static fm_lang script_lang(const char *tok) {
    int b = byte_piece(tok);
    if (b >= 0) return b < 0x80 ? script_of(b) : FM_LANG_NONE; /* a lone byte of a UTF-8 sequence has no script */
    int n[FM_LANG_COUNT] = {0};
    const utf8proc_uint8_t *p = (const utf8proc_uint8_t *)tok;
    utf8proc_ssize_t left = (utf8proc_ssize_t)strlen(tok);
    while (left > 0) {
        utf8proc_int32_t c;
        utf8proc_ssize_t len = utf8proc_iterate(p, left, &c);
        if (len <= 0) { len = 1; c = -1; } /* invalid UTF-8: skip the byte */
        if (c >= 0) n[script_of(c)]++;
        p += len;
        left -= len;
    }
    if (n[FM_LANG_JA] && n[FM_LANG_JA] >= n[FM_LANG_EN]) return FM_LANG_JA;
    if (n[FM_LANG_EN]) return FM_LANG_EN;
    return n[FM_LANG_OTHER] ? FM_LANG_OTHER : FM_LANG_NONE;
}

fm_lang fm_token_lang(fm_rule rule, const char *tok) {
    return rule == FM_RULE_PAPER ? paper_lang(tok) : rule == FM_RULE_ASCII ? ascii_lang(tok) : script_lang(tok);
}

fm_lang fm_example_lang(fm_rule rule, const fm_token_act *ex) {
    int peak = fm_token_act_peak(ex);
    if (peak < 0) return FM_LANG_NONE;
    /* The paper's detect_language(idx - 1) reaches index -1, which Python reads as the last token,
     * and goes on back to -n: so after position 0 it visits n-1 down to peak+1 (positions 0..peak
     * again would add nothing), then index -(n+1) raises IndexError: no language. The other rules
     * stop at position 0. */
    int steps = rule == FM_RULE_PAPER ? ex->n : peak + 1;
    for (int s = 0; s < steps; s++) {
        int i = peak - s < 0 ? peak - s + ex->n : peak - s;
        fm_lang l = fm_token_lang(rule, ex->tok[i]);
        if (l != FM_LANG_NONE) return l;
    }
    return FM_LANG_NONE;
}

void fm_feature_lang(fm_rule rule, const fm_token_act *ex, int n, double share, fm_lang_vote *out) {
    memset(out, 0, sizeof *out);
    for (int e = 0; e < n; e++) out->counts[fm_example_lang(rule, &ex[e])]++;
    /* The paper divides by all examples (len(token_acts)); the other rules leave out examples
     * without a language. Division, as the paper's en / len > 0.9, not en > 0.9 * len. */
    int total = rule == FM_RULE_PAPER ? n : n - out->counts[FM_LANG_NONE];
    if (total == 0) out->verdict = FM_FLANG_UNKNOWN;
    else if ((double)out->counts[FM_LANG_EN] / total > share) out->verdict = FM_FLANG_EN;
    else if ((double)out->counts[FM_LANG_JA] / total > share) out->verdict = FM_FLANG_JA;
    else out->verdict = FM_FLANG_MIXED;
}
