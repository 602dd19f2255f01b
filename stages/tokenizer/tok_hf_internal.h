/* tok_hf_internal.h — the loaded form of a tokenizer.json pipeline (struct tok_hf and its steps),
 * shared by tok_hf_load.c, which parses tokenizer.json into it, and tok_hf.c, which encodes and
 * decodes with it. Not installed. */
#ifndef SAEFLOW_TOK_HF_INTERNAL_H
#define SAEFLOW_TOK_HF_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "tok_internal.h"

#define HF_MAX_STEPS 8

enum { HN_NFC, HN_NFD, HN_NFKC, HN_NFKD, HN_LOWER, HN_PREPEND, HN_REPLACE, HN_STRIP, HN_BERT, HN_STRIP_ACCENTS };
enum { HP_SPLIT, HP_BYTELEVEL, HP_METASPACE, HP_CHARS };
/* What happens to the pieces a pattern matches (tokenizers' SplitDelimiterBehavior). */
enum { HS_REMOVED, HS_ISOLATED, HS_MERGED_PREV, HS_MERGED_NEXT, HS_CONTIGUOUS };
/* Character classes of the Digits, Punctuation and WhitespaceSplit pre-tokenisers. */
enum { HC_NUMERIC, HC_PUNCT, HC_SPACE };
enum { HM_ALWAYS, HM_FIRST, HM_NEVER }; /* Metaspace prepend_scheme */
enum { HD_BYTELEVEL, HD_REPLACE, HD_BYTEFALLBACK, HD_FUSE, HD_STRIP, HD_METASPACE, HD_WORDPIECE, HD_BPE_SUFFIX };

typedef struct hf_norm {
    int kind;
    char *a, *b;     /* Prepend: a; Replace: a (a String pattern) or re (a Regex) -> b */
    pcre2_code *re;
    bool left, right; /* Strip: which ends */
    bool clean, chinese, accents, lower; /* BertNormalizer: clean_text, handle_chinese_chars, strip_accents, lowercase */
} hf_norm;

typedef struct hf_pre {
    int kind;
    pcre2_code *re;      /* Split, Whitespace, or ByteLevel with use_regex */
    int behavior;        /* Split, Whitespace, the character classes */
    bool invert;         /* Split: the pattern matches the pieces to keep, not the delimiters */
    int char_class;      /* HP_CHARS */
    bool add_prefix;     /* ByteLevel add_prefix_space */
    char *repl;          /* Metaspace replacement */
    int scheme;          /* Metaspace prepend_scheme */
    bool split;          /* Metaspace split */
} hf_pre;

typedef struct hf_dec {
    int kind;
    char *a, *b;         /* Replace a (or re) -> b; Strip/Metaspace: a = content/replacement */
    pcre2_code *re;      /* Replace with a Regex pattern */
    int start, stop;     /* Strip */
    int scheme;          /* Metaspace */
    bool cleanup;        /* WordPiece: tokenizers' cleanup of spaces before punctuation and contractions */
} hf_dec;

struct tok_hf {
    hf_norm norms[HF_MAX_STEPS];
    int n_norms;
    hf_pre pres[HF_MAX_STEPS];
    int n_pres;
    hf_dec decs[HF_MAX_STEPS];
    int n_decs;
    bool byte_level;       /* a ByteLevel pre-tokeniser maps bytes to printable characters */
    tok_map merges;        /* (left id << 32 | right id) -> (rank << 32 | merged id) */
    bool ignore_merges, fuse_unk;
    char *wp_prefix;       /* WordPiece continuing_subword_prefix ("##") */
    int wp_max_chars;      /* WordPiece max_input_chars_per_word: longer words are <unk> */
    tok_trie added;        /* added token contents -> id */
    bool has_added;
    uint8_t *added_flags;  /* [n_vocab] HF_LSTRIP | HF_RSTRIP | HF_SINGLE_WORD of added tokens, or NULL */
    pcre2_code *word_re;   /* one character of Rust's \w, for single_word; NULL if no token has it */
    int32_t pre_ids[4], post_ids[4]; /* TemplateProcessing "single" around the sequence */
    int n_pre_ids, n_post_ids;
    char byte_enc[256][3]; /* byte -> UTF-8 of its ByteLevel character */
    uint8_t byte_enc_len[256];
    int16_t byte_dec[512]; /* ByteLevel character -> byte, -1 if none */
};

/* Added tokens' flags: absorb the whitespace on their left / right; match only as a whole word. */
enum { HF_LSTRIP = 1, HF_RSTRIP = 2, HF_SINGLE_WORD = 4 };

#endif
