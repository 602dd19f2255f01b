/* fm_lang.h — the language of a feature, decided from its top examples.
 *
 * Token strings here are display strings: SentencePiece's "▁" already turned into a space,
 * byte-fallback pieces spelled "<0xNN>".
 *
 * Two per-token rules, reported side by side:
 *  - paper:  ASCII letters and punctuation are English; a token of only digits (or only
 *            whitespace) defers to the previous token; anything else is Japanese.
 *  - script: Unicode scripts: Han, Hiragana, Katakana are Japanese; Latin letters English;
 *            digits, punctuation, symbols and spaces of any width defer; letters of other
 *            scripts are "other".
 * An example's language is the language of its max-activating token, walking back over deferring
 * tokens; a feature is English (Japanese) if more than 90% of its examples with a language are,
 * else bilingual. */
#ifndef FM_LANG_H
#define FM_LANG_H

#include <stddef.h>

typedef enum fm_lang { FM_LANG_DEFER = 0, FM_LANG_EN, FM_LANG_JA, FM_LANG_OTHER, FM_LANG_COUNT } fm_lang;

typedef enum fm_rule { FM_RULE_PAPER = 0, FM_RULE_SCRIPT, FM_RULE_COUNT } fm_rule;

/* A feature's verdict. */
typedef enum fm_flang { FM_FLANG_EN = 0, FM_FLANG_JA, FM_FLANG_BI, FM_FLANG_UNKNOWN, FM_FLANG_COUNT } fm_flang;

extern const char *const fm_flang_names[FM_FLANG_COUNT]; /* "en", "ja", "bilingual", "unknown" */

/* The language of one token under a rule, FM_LANG_DEFER if it has none of its own. */
fm_lang fm_token_lang(fm_rule rule, const char *tok);

/* The language of an example: of token `peak`, walking back over deferring tokens.
 * FM_LANG_DEFER if every token from the start up to peak defers. */
fm_lang fm_example_lang(fm_rule rule, const char *const *toks, int peak);

/* The feature-level vote (share threshold 0.9 in the paper; strictly greater). Examples whose
 * language is DEFER are left out of the denominator; OTHER counts against both. */
fm_flang fm_feature_lang(const int counts[FM_LANG_COUNT], double share);

#endif
