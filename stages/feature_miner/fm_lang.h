/* fm_lang.h — the language of a feature, decided from its top examples.
 *
 * Token strings here are display strings: SentencePiece's "▁" already turned into a space,
 * byte-fallback pieces spelled "<0xNN>". An example is an fm_token_act (tokens and quantised
 * activations); its peak is the first token of the highest activation.
 *
 * Three per-token rules, reported side by side:
 *  - paper:  llm-jp-sae's detect_language/auto_language exactly. The peak token, Python-strip()ped
 *            (Unicode whitespace, as str.isspace), is English iff it matches
 *            ^[a-zA-Z\s"'(),.\-]+$ (\s: Unicode whitespace); a token of ASCII digits only takes the
 *            language of the token before it, recursively, and before position 0 Python's negative
 *            index wraps to the example's last token; everything else is Japanese (an empty token,
 *            byte pieces "<0x0A>", "_", "/", ":", "=", other scripts). A feature is English
 *            (Japanese) if strictly more than 90% of ALL its examples are, else mixed. An example
 *            whose tokens are all digits has no language ("none"; the paper's code raises
 *            IndexError there) and counts against both.
 *  - ascii:  this project's first approximation of it: ASCII letters and punctuation are English; a
 *            token of only ASCII digits or whitespace defers to the previous token (no wrap); any
 *            non-ASCII byte is Japanese; byte pieces count as their byte.
 *  - script: Unicode scripts: Han, Hiragana, Katakana are Japanese; Latin letters English;
 *            digits, punctuation, symbols and spaces of any width defer (no wrap); letters of other
 *            scripts are "other".
 * Under ascii and script an example that defers back to its first token has no language and is
 * left out of the vote; "other" counts against both. */
#ifndef FM_LANG_H
#define FM_LANG_H

#include <stddef.h>

#include "fm_token_act.h"

/* A token's or an example's language; FM_LANG_NONE: none of its own (defers), or none found. */
typedef enum fm_lang { FM_LANG_NONE = 0, FM_LANG_EN, FM_LANG_JA, FM_LANG_OTHER, FM_LANG_COUNT } fm_lang;
extern const char *const fm_lang_names[FM_LANG_COUNT]; /* "none", "en", "ja", "other" */

typedef enum fm_rule { FM_RULE_PAPER = 0, FM_RULE_ASCII, FM_RULE_SCRIPT, FM_RULE_COUNT } fm_rule;
extern const char *const fm_rule_names[FM_RULE_COUNT]; /* "paper", "ascii", "script" */

/* A feature's verdict; unknown when no example has a language (or there are no examples). */
typedef enum fm_flang { FM_FLANG_EN = 0, FM_FLANG_JA, FM_FLANG_MIXED, FM_FLANG_UNKNOWN, FM_FLANG_COUNT } fm_flang;
extern const char *const fm_flang_names[FM_FLANG_COUNT]; /* "en", "ja", "mixed", "unknown" */

/* The language of one token under a rule, FM_LANG_NONE if it defers. tok is UTF-8. */
fm_lang fm_token_lang(fm_rule rule, const char *tok);

/* The language of an example under a rule: of its peak token, walking back over deferring
 * tokens as the rule says. FM_LANG_NONE if none has a language (or the example is empty). */
fm_lang fm_example_lang(fm_rule rule, const fm_token_act *ex);

/* A feature's vote under one rule: per-language counts of its examples and the verdict (share 0.9
 * in the paper; strictly greater, as the paper's en/len > 0.9 in floating point). */
typedef struct fm_lang_vote {
    int counts[FM_LANG_COUNT];
    fm_flang verdict;
} fm_lang_vote;

void fm_feature_lang(fm_rule rule, const fm_token_act *ex, int n, double share, fm_lang_vote *out);

#endif
