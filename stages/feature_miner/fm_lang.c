/* fm_lang.c — per-token language rules and the feature vote. */
#include "fm_lang.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

const char *const fm_flang_names[FM_FLANG_COUNT] = {"en", "ja", "bilingual", "unknown"};

/* A SentencePiece byte-fallback piece "<0xNN>": its byte, or -1. */
static int byte_piece(const char *s) {
    if (strlen(s) != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>') return -1;
    char hex[3] = {s[3], s[4], 0};
    char *end;
    long v = strtol(hex, &end, 16);
    return *end ? -1 : (int)v;
}

static int is_space(int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

static fm_lang paper_lang(const char *tok) {
    int b = byte_piece(tok);
    if (b >= 0x80) return FM_LANG_JA;
    char one[2] = {(char)b, 0};
    const unsigned char *p = (const unsigned char *)(b >= 0 ? one : tok);
    int english = 0;
    for (; *p; p++) {
        if (*p >= 0x80) return FM_LANG_JA; /* any non-ASCII byte: "else Japanese" */
        if (!is_space(*p) && !(*p >= '0' && *p <= '9')) english = 1;
    }
    return english ? FM_LANG_EN : FM_LANG_DEFER;
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
    if (!letter) return FM_LANG_DEFER; /* digits, punctuation, symbols, spaces, marks */
    if (in(c, 'A', 'Z') || in(c, 'a', 'z') || in(c, 0xC0, 0x24F) || in(c, 0x1E00, 0x1EFF) ||
        in(c, 0xFF21, 0xFF3A) || in(c, 0xFF41, 0xFF5A))
        return FM_LANG_EN; /* Latin, also accented and full-width */
    return FM_LANG_OTHER;
}

static fm_lang script_lang(const char *tok) {
    int b = byte_piece(tok);
    if (b >= 0) return b < 0x80 ? script_of(b) : FM_LANG_DEFER; /* a lone byte of a UTF-8 sequence has no script */
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
    return n[FM_LANG_OTHER] ? FM_LANG_OTHER : FM_LANG_DEFER;
}

fm_lang fm_token_lang(fm_rule rule, const char *tok) {
    return rule == FM_RULE_PAPER ? paper_lang(tok) : script_lang(tok);
}

fm_lang fm_example_lang(fm_rule rule, const char *const *toks, int peak) {
    for (int i = peak; i >= 0; i--) {
        fm_lang l = fm_token_lang(rule, toks[i]);
        if (l != FM_LANG_DEFER) return l;
    }
    return FM_LANG_DEFER;
}

fm_flang fm_feature_lang(const int counts[FM_LANG_COUNT], double share) {
    int total = counts[FM_LANG_EN] + counts[FM_LANG_JA] + counts[FM_LANG_OTHER];
    if (total == 0) return FM_FLANG_UNKNOWN;
    if (counts[FM_LANG_EN] > share * total) return FM_FLANG_EN;
    if (counts[FM_LANG_JA] > share * total) return FM_FLANG_JA;
    return FM_FLANG_BI;
}
