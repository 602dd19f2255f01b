/* tok_hf.c — Hugging Face tokenizer.json: added tokens, normalisers, pre-tokenisers (Split with
 * PCRE2-JIT regexes, ByteLevel, Metaspace), the BPE and Unigram models, TemplateProcessing and
 * the decoders, following the tokenizers library's semantics. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <ctype.h>
#include <jansson.h>
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

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

/* Words produced by pre-tokenisers: spans into an arena. */
typedef struct hf_span {
    uint32_t off, len;
} hf_span;
typedef struct hf_words {
    tok_buf arena;
    hf_span *w;
    size_t n, cap;
} hf_words;

/* A piece of a word: a pattern match or the text between two. */
typedef struct hf_cut {
    uint32_t start, end;
    bool match;
} hf_cut;

typedef struct hf_scratch {
    pcre2_match_data *md;
    hf_cut *cuts;
    size_t n_cuts, cap_cuts;
    tok_buf clean;      /* input with invalid UTF-8 replaced */
    tok_buf wp;         /* WordPiece: prefix + candidate piece */
    hf_words a, b;
} hf_scratch;

/* ------------------------------------------------------------------------------------------ */
/* Loading                                                                                     */

static char *hf_strdup(const char *s) { return s ? strdup(s) : NULL; }

static pcre2_code *hf_compile(const char *pattern, char *err, size_t errlen) {
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &ec, &eo, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        tok_errf(err, errlen, "regex %s: %s at %zu", pattern, (char *)msg, (size_t)eo);
        return NULL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter if unavailable */
    return re;
}

static const char *hf_gpt2_pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* A Split/Replace pattern: {"Regex": ...} compiles as is; {"String": ...} is quoted. */
static pcre2_code *hf_pattern(json_t *pat, char *err, size_t errlen) {
    const char *rx = json_string_value(json_object_get(pat, "Regex"));
    if (rx) return hf_compile(rx, err, errlen);
    const char *lit = json_string_value(json_object_get(pat, "String"));
    if (!lit) {
        tok_errf(err, errlen, "pattern is neither Regex nor String");
        return NULL;
    }
    tok_buf q = {0};
    tok_buf_add(&q, "\\Q", 2);
    tok_buf_add(&q, lit, strlen(lit));
    tok_buf_add(&q, "\\E", 3); /* with the NUL */
    pcre2_code *re = q.p ? hf_compile(q.p, err, errlen) : NULL;
    free(q.p);
    return re;
}

/* A Replace step (normaliser or decoder): a String pattern is kept as text (*a), a Regex one
 * compiled (*re); content goes to *b. */
static int hf_load_replace(json_t *n, char **a, char **b, pcre2_code **re, char *err, size_t errlen) {
    json_t *pat = json_object_get(n, "pattern");
    const char *rx = json_string_value(json_object_get(pat, "Regex"));
    if (!(*b = hf_strdup(json_string_value(json_object_get(n, "content"))))) return -1;
    if (rx) return (*re = hf_compile(rx, err, errlen)) ? 0 : -1;
    *a = hf_strdup(json_string_value(json_object_get(pat, "String")));
    return *a && (*a)[0] ? 0 : -1;
}

static int hf_scheme(json_t *o) {
    const char *s = json_string_value(json_object_get(o, "prepend_scheme"));
    if (s) return strcmp(s, "first") == 0 ? HM_FIRST : strcmp(s, "never") == 0 ? HM_NEVER : HM_ALWAYS;
    json_t *aps = json_object_get(o, "add_prefix_space");
    return aps && json_is_false(aps) ? HM_NEVER : HM_ALWAYS;
}

/* One step of a normaliser, pre-tokeniser or decoder chain: 0, or -1 (with a message in err, or
 * none for a step of an unsupported type or with bad fields). type may be NULL. */
typedef int (*hf_step_loader)(tok_hf *hf, json_t *step, const char *type, char *err, size_t errlen);

/* A chain's JSON (what: its key in tokenizer.json): null, one step, or a Sequence of them under
 * list_key (nested ones flattened). */
static int hf_load_chain(tok_hf *hf, json_t *p, const char *what, const char *list_key, hf_step_loader one, char *err,
                         size_t errlen) {
    if (!p || json_is_null(p)) return 0;
    const char *type = json_string_value(json_object_get(p, "type"));
    if (!type || strcmp(type, "Sequence") != 0) {
        if (one(hf, p, type, err, errlen) == 0) return 0;
        if (err && !err[0]) tok_errf(err, errlen, "unsupported %s %s", what, type ? type : "(no type)");
        return -1;
    }
    json_t *v;
    size_t i;
    json_array_foreach(json_object_get(p, list_key), i, v) if (hf_load_chain(hf, v, what, list_key, one, err, errlen) != 0)
        return -1;
    return 0;
}

static int hf_load_normalizer(tok_hf *hf, json_t *n, const char *type, char *err, size_t errlen) {
    if (!type || hf->n_norms == HF_MAX_STEPS) return -1;
    hf_norm *d = &hf->norms[hf->n_norms++]; /* counted at once: tok_hf_free frees what a failed load set */
    static const char *const unicode[] = {"NFC", "NFD", "NFKC", "NFKD", "Lowercase"};
    for (int k = 0; k < 5; k++)
        if (strcmp(type, unicode[k]) == 0) {
            d->kind = k;
            return 0;
        }
    if (strcmp(type, "Prepend") == 0) {
        d->kind = HN_PREPEND;
        if (!(d->a = hf_strdup(json_string_value(json_object_get(n, "prepend"))))) return -1;
    } else if (strcmp(type, "Replace") == 0) {
        d->kind = HN_REPLACE;
        return hf_load_replace(n, &d->a, &d->b, &d->re, err, errlen);
    } else if (strcmp(type, "Strip") == 0) {
        d->kind = HN_STRIP;
        d->left = json_is_true(json_object_get(n, "strip_left"));
        d->right = json_is_true(json_object_get(n, "strip_right"));
    } else if (strcmp(type, "StripAccents") == 0) { /* drops non-spacing marks (Mn) */
        d->kind = HN_STRIP_ACCENTS;
    } else if (strcmp(type, "BertNormalizer") == 0) { /* tokenizers' defaults: all true, accents follow lowercase */
        d->kind = HN_BERT;
        json_t *c = json_object_get(n, "clean_text"), *h = json_object_get(n, "handle_chinese_chars");
        json_t *a = json_object_get(n, "strip_accents"), *l = json_object_get(n, "lowercase");
        d->clean = !json_is_false(c);
        d->chinese = !json_is_false(h);
        d->lower = !json_is_false(l);
        d->accents = a && !json_is_null(a) ? json_is_true(a) : d->lower;
    } else {
        return -1;
    }
    return 0;
}

/* Rust's \w (Alphabetic, marks, decimal digits, connector punctuation, joiners), for the
 * Whitespace pre-tokeniser and added tokens' single_word; PCRE2's own \w differs on marks and
 * other numbers. */
#define HF_W "\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}"
static const char *hf_word_pattern = "[" HF_W "]+|[^" HF_W "\\s]+";

/* The "behavior" field, or def if absent (NULL: required). */
static int hf_behavior(json_t *p, const char *def, char *err, size_t errlen) {
    static const char *const names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
    const char *b = json_string_value(json_object_get(p, "behavior"));
    if (!b) b = def;
    for (int i = 0; b && i < 5; i++)
        if (strcmp(b, names[i]) == 0) return i;
    tok_errf(err, errlen, "unsupported split behavior %s", b ? b : "(none)");
    return -1;
}

static int hf_load_pretok(tok_hf *hf, json_t *p, const char *type, char *err, size_t errlen) {
    if (!type || hf->n_pres == HF_MAX_STEPS) return -1;
    hf_pre *d = &hf->pres[hf->n_pres++]; /* counted at once: tok_hf_free frees what a failed load set */
    if (strcmp(type, "Split") == 0) {
        d->kind = HP_SPLIT;
        if ((d->behavior = hf_behavior(p, NULL, err, errlen)) < 0) return -1;
        d->invert = json_is_true(json_object_get(p, "invert"));
        if (!(d->re = hf_pattern(json_object_get(p, "pattern"), err, errlen))) return -1;
    } else if (strcmp(type, "Whitespace") == 0) { /* the matches of \w+|[^\w\s]+ (Rust's \w) */
        d->kind = HP_SPLIT;
        d->behavior = HS_REMOVED;
        d->invert = true;
        if (!(d->re = hf_compile(hf_word_pattern, err, errlen))) return -1;
    } else if (strcmp(type, "Digits") == 0) {
        d->kind = HP_CHARS;
        d->char_class = HC_NUMERIC;
        d->behavior = json_is_true(json_object_get(p, "individual_digits")) ? HS_ISOLATED : HS_CONTIGUOUS;
    } else if (strcmp(type, "Punctuation") == 0) {
        d->kind = HP_CHARS;
        d->char_class = HC_PUNCT;
        if ((d->behavior = hf_behavior(p, "Isolated", err, errlen)) < 0) return -1;
    } else if (strcmp(type, "WhitespaceSplit") == 0 || strcmp(type, "BertPreTokenizer") == 0) {
        d->kind = HP_CHARS;
        d->char_class = HC_SPACE;
        d->behavior = HS_REMOVED;
        if (type[0] == 'B') { /* Bert: then each punctuation character on its own */
            if (hf->n_pres == HF_MAX_STEPS) return -1;
            hf->pres[hf->n_pres++] = (hf_pre){.kind = HP_CHARS, .char_class = HC_PUNCT, .behavior = HS_ISOLATED};
        }
    } else if (strcmp(type, "CharDelimiterSplit") == 0) {
        const char *c = json_string_value(json_object_get(p, "delimiter"));
        json_t *pat = json_pack("{s:s}", "String", c ? c : "");
        d->kind = HP_SPLIT;
        d->behavior = HS_REMOVED;
        d->re = pat && c && c[0] ? hf_pattern(pat, err, errlen) : NULL;
        json_decref(pat);
        if (!d->re) return -1;
    } else if (strcmp(type, "ByteLevel") == 0) {
        d->kind = HP_BYTELEVEL;
        d->add_prefix = json_is_true(json_object_get(p, "add_prefix_space"));
        json_t *ur = json_object_get(p, "use_regex");
        if ((!ur || json_is_true(ur)) && !(d->re = hf_compile(hf_gpt2_pattern, err, errlen))) return -1;
        hf->byte_level = true;
    } else if (strcmp(type, "Metaspace") == 0) {
        d->kind = HP_METASPACE;
        const char *r = json_string_value(json_object_get(p, "replacement"));
        if (!(d->repl = hf_strdup(r ? r : "\xe2\x96\x81")) || !d->repl[0]) return -1;
        d->scheme = hf_scheme(p);
        json_t *sp = json_object_get(p, "split");
        d->split = !sp || json_is_true(sp);
    } else {
        return -1;
    }
    return 0;
}

static int hf_load_decoder(tok_hf *hf, json_t *p, const char *type, char *err, size_t errlen) {
    if (!type || hf->n_decs == HF_MAX_STEPS) return -1;
    hf_dec *d = &hf->decs[hf->n_decs++]; /* counted at once: tok_hf_free frees what a failed load set */
    if (strcmp(type, "ByteLevel") == 0) d->kind = HD_BYTELEVEL;
    else if (strcmp(type, "ByteFallback") == 0) d->kind = HD_BYTEFALLBACK;
    else if (strcmp(type, "Fuse") == 0) d->kind = HD_FUSE;
    else if (strcmp(type, "Replace") == 0) {
        d->kind = HD_REPLACE;
        return hf_load_replace(p, &d->a, &d->b, &d->re, err, errlen);
    } else if (strcmp(type, "Strip") == 0) {
        d->kind = HD_STRIP;
        d->a = hf_strdup(json_string_value(json_object_get(p, "content")));
        d->start = (int)json_integer_value(json_object_get(p, "start"));
        d->stop = (int)json_integer_value(json_object_get(p, "stop"));
        if (!d->a || !d->a[0]) return -1;
    } else if (strcmp(type, "WordPiece") == 0) {
        d->kind = HD_WORDPIECE;
        const char *pre = json_string_value(json_object_get(p, "prefix"));
        if (!(d->a = hf_strdup(pre ? pre : "##"))) return -1;
        json_t *c = json_object_get(p, "cleanup");
        d->cleanup = !c || json_is_true(c);
    } else if (strcmp(type, "BPEDecoder") == 0) {
        d->kind = HD_BPE_SUFFIX;
        const char *suf = json_string_value(json_object_get(p, "suffix"));
        if (!(d->a = hf_strdup(suf ? suf : "</w>")) || !d->a[0]) return -1;
    } else if (strcmp(type, "Metaspace") == 0) {
        d->kind = HD_METASPACE;
        const char *r = json_string_value(json_object_get(p, "replacement"));
        if (!(d->a = hf_strdup(r ? r : "\xe2\x96\x81")) || !d->a[0]) return -1;
        d->scheme = hf_scheme(p);
    } else {
        return -1;
    }
    return 0;
}

static int hf_load_post(tok_tokenizer *t, json_t *p, char *err, size_t errlen) {
    tok_hf *hf = t->hf;
    if (!p || json_is_null(p)) return 0;
    const char *type = json_string_value(json_object_get(p, "type"));
    if (type && strcmp(type, "Sequence") == 0) {
        json_t *list = json_object_get(p, "processors"), *v;
        size_t i;
        json_array_foreach(list, i, v) if (hf_load_post(t, v, err, errlen) != 0) return -1;
        return 0;
    }
    if (type && strcmp(type, "ByteLevel") == 0) return 0; /* offsets only */
    if (type && (strcmp(type, "BertProcessing") == 0 || strcmp(type, "RobertaProcessing") == 0)) {
        /* "cls": [token, id] before the sequence, "sep": [token, id] after it */
        json_int_t cls = json_integer_value(json_array_get(json_object_get(p, "cls"), 1));
        json_int_t sep = json_integer_value(json_array_get(json_object_get(p, "sep"), 1));
        if (!json_is_integer(json_array_get(json_object_get(p, "cls"), 1)) ||
            !json_is_integer(json_array_get(json_object_get(p, "sep"), 1)) || cls < 0 || cls >= t->n_vocab ||
            sep < 0 || sep >= t->n_vocab || hf->n_pre_ids || hf->n_post_ids) {
            tok_errf(err, errlen, "%s needs cls and sep as [token, id] within the vocabulary", type);
            return -1;
        }
        hf->pre_ids[hf->n_pre_ids++] = t->bos_id = (int32_t)cls;
        hf->post_ids[hf->n_post_ids++] = t->eos_id = (int32_t)sep;
        return 0;
    }
    if (!type || strcmp(type, "TemplateProcessing") != 0) {
        tok_errf(err, errlen, "unsupported post_processor %s", type ? type : "(no type)");
        return -1;
    }
    json_t *single = json_object_get(p, "single"), *specials = json_object_get(p, "special_tokens"), *item;
    bool seen_seq = false;
    size_t i;
    json_array_foreach(single, i, item) {
        if (json_object_get(item, "Sequence")) {
            seen_seq = true;
            continue;
        }
        const char *name = json_string_value(json_object_get(json_object_get(item, "SpecialToken"), "id"));
        json_t *ids = json_object_get(json_object_get(specials, name ? name : ""), "ids"), *idv;
        size_t k;
        json_array_foreach(ids, k, idv) {
            json_int_t id = json_integer_value(idv);
            int *n = seen_seq ? &hf->n_post_ids : &hf->n_pre_ids;
            int32_t *dst = seen_seq ? hf->post_ids : hf->pre_ids;
            if (*n == 4 || id < 0 || id >= t->n_vocab) {
                tok_errf(err, errlen, "TemplateProcessing special token %s is invalid", name ? name : "?");
                return -1;
            }
            dst[(*n)++] = (int32_t)id;
        }
    }
    if (hf->n_pre_ids) t->bos_id = hf->pre_ids[0];
    if (hf->n_post_ids) t->eos_id = hf->post_ids[0];
    return 0;
}

static void hf_init_byte_table(tok_hf *hf) {
    for (int i = 0; i < 512; i++) hf->byte_dec[i] = -1;
    int extra = 0;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        uint32_t cp = printable ? (uint32_t)b : 256u + (uint32_t)extra++;
        hf->byte_enc_len[b] = (uint8_t)tok_utf8_encode(cp, hf->byte_enc[b]);
        hf->byte_dec[cp] = (int16_t)b;
    }
}

/* Pieces of the vocabulary, collected from the model and added_tokens before the arrays exist. */
typedef struct hf_piece {
    const char *s;
    double score;
    int type;
} hf_piece;

static int hf_set(hf_piece *pieces, int32_t n, json_int_t id, const char *s, double score, int type,
                  char *err, size_t errlen) {
    if (id < 0 || id >= n || !s || !s[0]) {
        tok_errf(err, errlen, "bad vocabulary entry (id %lld)", (long long)id);
        return -1;
    }
    if (pieces[id].s && strcmp(pieces[id].s, s) != 0) {
        tok_errf(err, errlen, "id %lld is both %s and %s", (long long)id, pieces[id].s, s);
        return -1;
    }
    pieces[id] = (hf_piece){s, score, type};
    return 0;
}

static int hf_load_vocab(tok_tokenizer *t, json_t *root, char *err, size_t errlen) {
    json_t *model = json_object_get(root, "model"), *vocab = json_object_get(model, "vocab");
    json_t *added = json_object_get(root, "added_tokens"), *v;
    const char *mtype = json_string_value(json_object_get(model, "type"));
    static const char *const kinds[] = {"BPE", "Unigram", "WordPiece", "WordLevel"};
    int k = 0;
    while (mtype && k < 4 && strcmp(mtype, kinds[k]) != 0) k++;
    if (!mtype || k == 4) {
        tok_errf(err, errlen, "unsupported model type %s", mtype ? mtype : "(none)");
        return -1;
    }
    t->kind = TOK_HF_BPE + k;
    bool unigram = t->kind == TOK_HF_UNIGRAM;
    t->byte_fallback = json_is_true(json_object_get(model, "byte_fallback"));
    /* The id space: the model's vocabulary plus the added tokens, gaps allowed (holes). */
    json_int_t n = unigram ? (json_int_t)json_array_size(vocab) : 0;
    const char *key;
    size_t i;
    if (!unigram) {
        if (!json_is_object(vocab)) goto bad;
        json_object_foreach(vocab, key, v) {
            if (json_integer_value(v) >= n) n = json_integer_value(v) + 1;
        }
    } else if (!json_is_array(vocab)) {
        goto bad;
    }
    json_array_foreach(added, i, v) {
        json_int_t id = json_integer_value(json_object_get(v, "id"));
        if (id >= n) n = id + 1;
    }
    if (n <= 0 || n > (1 << 24)) goto bad;
    hf_piece *pieces = calloc((size_t)n, sizeof *pieces);
    if (!pieces) goto bad;
    int rc = -1;
    if (unigram) {
        json_array_foreach(vocab, i, v) {
            if (hf_set(pieces, (int32_t)n, (json_int_t)i, json_string_value(json_array_get(v, 0)),
                       json_number_value(json_array_get(v, 1)), TOK_NORMAL, err, errlen) != 0)
                goto out;
        }
        json_t *unk = json_object_get(model, "unk_id");
        if (json_is_integer(unk)) {
            if (json_integer_value(unk) < 0 || json_integer_value(unk) >= (json_int_t)json_array_size(vocab)) {
                tok_errf(err, errlen, "unk_id %lld is outside the vocabulary", (long long)json_integer_value(unk));
                goto out;
            }
            t->unk_id = (int32_t)json_integer_value(unk);
        }
    } else {
        json_object_foreach(vocab, key, v) {
            if (hf_set(pieces, (int32_t)n, json_integer_value(v), key, 0, TOK_NORMAL, err, errlen) != 0)
                goto out;
        }
        const char *unk = json_string_value(json_object_get(model, "unk_token"));
        json_t *uid = unk ? json_object_get(vocab, unk) : NULL;
        if (uid) t->unk_id = (int32_t)json_integer_value(uid);
    }
    json_array_foreach(added, i, v) {
        int type = json_is_true(json_object_get(v, "special")) ? TOK_CONTROL : TOK_USER;
        if (hf_set(pieces, (int32_t)n, json_integer_value(json_object_get(v, "id")),
                   json_string_value(json_object_get(v, "content")), 0, type, err, errlen) != 0)
            goto out;
    }
    size_t blob = 0;
    for (json_int_t k = 0; k < n; k++) {
        if (!pieces[k].s) pieces[k] = (hf_piece){"", 0, TOK_HOLE};
        blob += strlen(pieces[k].s);
    }
    if (blob > UINT32_MAX || tok_alloc_pieces(t, (int32_t)n, blob) != 0) goto out;
    for (json_int_t k = 0; k < n; k++) {
        int type = pieces[k].type;
        size_t len = strlen(pieces[k].s);
        if (type == TOK_NORMAL && t->byte_fallback && tok_byte_piece_value(pieces[k].s, len) >= 0) type = TOK_BYTE;
        if (k == t->unk_id && type == TOK_NORMAL) type = TOK_UNKNOWN;
        tok_set_piece(t, (int32_t)k, pieces[k].s, len, pieces[k].score, type);
    }
    rc = tok_finish_vocab(t, err, errlen);
    /* Unigram's unknown penalty: the lowest score of the model's pieces minus 10. */
    if (rc == 0 && unigram) {
        double lowest = 0;
        bool any = false;
        for (int32_t k = 0; k < t->n_vocab; k++)
            if (t->type[k] != TOK_CONTROL && t->type[k] != TOK_USER && t->type[k] != TOK_HOLE &&
                (!any || t->score[k] < lowest)) {
                lowest = t->score[k];
                any = true;
            }
        t->hf_unk_score = lowest - 10.0;
    }
out:
    free(pieces);
    return rc;
bad:
    tok_errf(err, errlen, "model.vocab is missing or malformed");
    return -1;
}

static int hf_load_merges(tok_tokenizer *t, json_t *merges, char *err, size_t errlen) {
    tok_hf *hf = t->hf;
    json_t *m;
    size_t rank;
    tok_buf cat = {0};
    int rc = -1;
    json_array_foreach(merges, rank, m) {
        const char *a, *b;
        size_t alen, blen;
        const char *s = json_string_value(m);
        if (s) { /* "left right" */
            const char *sp = strchr(s, ' ');
            if (!sp) goto bad;
            a = s;
            alen = (size_t)(sp - s);
            b = sp + 1;
            blen = strlen(b);
        } else { /* ["left", "right"] */
            a = json_string_value(json_array_get(m, 0));
            b = json_string_value(json_array_get(m, 1));
            if (!a || !b) goto bad;
            alen = strlen(a);
            blen = strlen(b);
        }
        cat.n = 0;
        if (tok_buf_add(&cat, a, alen) != 0 || tok_buf_add(&cat, b, blen) != 0) goto out;
        int32_t ia = tok_trie_get(&t->vocab, a, alen), ib = tok_trie_get(&t->vocab, b, blen);
        int32_t im = tok_trie_get(&t->vocab, cat.p, cat.n);
        if (ia < 0 || ib < 0 || im < 0) {
            tok_errf(err, errlen, "merge %zu (%.*s %.*s) uses tokens missing from the vocabulary",
                     rank, (int)alen, a, (int)blen, b);
            goto out;
        }
        uint64_t key = (uint64_t)ia << 32 | (uint32_t)ib, old;
        if (tok_map_get(&hf->merges, key, &old)) continue; /* the first (lowest) rank wins */
        if (tok_map_put(&hf->merges, key, (uint64_t)rank << 32 | (uint32_t)im) != 0) goto out;
    }
    rc = 0;
    goto out;
bad:
    tok_errf(err, errlen, "merge %zu is malformed", rank);
out:
    free(cat.p);
    return rc;
}

int tok_hf_load(tok_tokenizer *t, const char *text, size_t len, char *err, size_t errlen) {
    json_error_t je;
    json_t *root = json_loadb(text, len, 0, &je);
    if (!root) {
        tok_errf(err, errlen, "JSON error at line %d: %s", je.line, je.text);
        return -1;
    }
    int rc = -1;
    tok_hf *hf = t->hf = calloc(1, sizeof *hf);
    if (!hf) goto out;
    hf_init_byte_table(hf);
    json_t *model = json_object_get(root, "model");
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    const char *mtype = json_string_value(json_object_get(model, "type"));
    for (int k = 0; k < 2 && mtype && strcmp(mtype, "BPE") == 0; k++) {
        json_t *a = json_object_get(model, affixes[k]);
        if (json_is_string(a) && json_string_length(a) > 0) {
            tok_errf(err, errlen, "BPE %s is not supported", affixes[k]);
            goto out;
        }
    }
    json_t *dropout = json_object_get(model, "dropout");
    if (dropout && !json_is_null(dropout) && json_number_value(dropout) > 0) {
        tok_errf(err, errlen, "BPE dropout is not supported");
        goto out;
    }
    if (hf_load_vocab(t, root, err, errlen) != 0) goto out;
    if (t->kind == TOK_HF_WORDPIECE || t->kind == TOK_HF_WORDLEVEL) {
        if (t->unk_id < 0) { /* tokenizers fails on the first unknown word; we fail early */
            tok_errf(err, errlen, "%s model: unk_token is missing or not in the vocabulary", mtype);
            goto out;
        }
        const char *pre = json_string_value(json_object_get(model, "continuing_subword_prefix"));
        json_t *mx = json_object_get(model, "max_input_chars_per_word");
        if (!(hf->wp_prefix = hf_strdup(pre ? pre : "##"))) goto out;
        hf->wp_max_chars = json_is_integer(mx) ? (int)json_integer_value(mx) : 100;
    }
    hf->ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));
    json_t *fu = json_object_get(model, "fuse_unk");
    hf->fuse_unk = t->kind == TOK_HF_UNIGRAM ? true : json_is_true(fu);
    if (t->kind == TOK_HF_BPE && hf_load_merges(t, json_object_get(model, "merges"), err, errlen) != 0)
        goto out;
    if (hf_load_chain(hf, json_object_get(root, "normalizer"), "normalizer", "normalizers", hf_load_normalizer, err,
                      errlen) != 0 ||
        hf_load_chain(hf, json_object_get(root, "pre_tokenizer"), "pre_tokenizer", "pretokenizers", hf_load_pretok,
                      err, errlen) != 0 ||
        hf_load_chain(hf, json_object_get(root, "decoder"), "decoder", "decoders", hf_load_decoder, err, errlen) != 0 ||
        hf_load_post(t, json_object_get(root, "post_processor"), err, errlen) != 0)
        goto out;
    json_t *added = json_object_get(root, "added_tokens"), *v;
    size_t i;
    json_array_foreach(added, i, v) {
        const char *c = json_string_value(json_object_get(v, "content"));
        int32_t id = (int32_t)json_integer_value(json_object_get(v, "id")); /* checked by hf_load_vocab */
        if (tok_trie_insert(&hf->added, c, strlen(c), id) != 0) goto out;
        hf->has_added = true;
        uint8_t fl = (json_is_true(json_object_get(v, "lstrip")) ? HF_LSTRIP : 0) |
                     (json_is_true(json_object_get(v, "rstrip")) ? HF_RSTRIP : 0) |
                     (json_is_true(json_object_get(v, "single_word")) ? HF_SINGLE_WORD : 0);
        if (fl && !hf->added_flags && !(hf->added_flags = calloc((size_t)t->n_vocab, 1))) goto out;
        if (fl) hf->added_flags[id] = fl;
        if ((fl & HF_SINGLE_WORD) && !hf->word_re && !(hf->word_re = hf_compile("[" HF_W "]", err, errlen))) goto out;
    }
    rc = 0;
out:
    if (rc != 0 && err && !err[0]) tok_errf(err, errlen, "out of memory");
    json_decref(root);
    return rc;
}

void tok_hf_free(tok_hf *hf) {
    for (int i = 0; i < hf->n_norms; i++) {
        free(hf->norms[i].a);
        free(hf->norms[i].b);
        pcre2_code_free(hf->norms[i].re);
    }
    for (int i = 0; i < hf->n_pres; i++) {
        pcre2_code_free(hf->pres[i].re);
        free(hf->pres[i].repl);
    }
    for (int i = 0; i < hf->n_decs; i++) {
        free(hf->decs[i].a);
        free(hf->decs[i].b);
        pcre2_code_free(hf->decs[i].re);
    }
    tok_map_free(&hf->merges);
    free(hf->wp_prefix);
    tok_trie_free(&hf->added);
    free(hf->added_flags);
    pcre2_code_free(hf->word_re);
    free(hf);
}

/* ------------------------------------------------------------------------------------------ */
/* Encoding                                                                                    */

void tok_hf_scratch_free(void *p) {
    hf_scratch *s = p;
    pcre2_match_data_free(s->md);
    free(s->cuts);
    free(s->clean.p);
    free(s->wp.p);
    free(s->a.arena.p);
    free(s->a.w);
    free(s->b.arena.p);
    free(s->b.w);
    free(s);
}

static int hf_word_add(hf_words *w, const char *s, size_t len) {
    if (len == 0) return 0;
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 64;
        hf_span *p = realloc(w->w, cap * sizeof *p);
        if (!p) return -1;
        w->w = p;
        w->cap = cap;
    }
    if (w->arena.n + len > UINT32_MAX) return -1;
    w->w[w->n++] = (hf_span){(uint32_t)w->arena.n, (uint32_t)len};
    return tok_buf_add(&w->arena, s, len);
}

/* Replaces every occurrence of a by b in s[0..len) into out. */
static int hf_replace(tok_buf *out, const char *s, size_t len, const char *a, const char *b) {
    size_t alen = strlen(a), blen = strlen(b);
    for (size_t i = 0; i < len;) {
        if (len - i >= alen && memcmp(s + i, a, alen) == 0) {
            if (tok_buf_add(out, b, blen) != 0) return -1;
            i += alen;
        } else {
            if (tok_buf_add(out, s + i, 1) != 0) return -1;
            i++;
        }
    }
    return 0;
}

/* Replaces every match of re in s[0..len) by b into out (an empty match steps one character on,
 * as a global regex replace does). */
static int hf_replace_re(tok_buf *out, const char *s, size_t len, const pcre2_code *re, pcre2_match_data *md,
                         const char *b) {
    size_t blen = strlen(b), pos = 0, copied = 0;
    while (pos <= len) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, len, pos, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) return -1;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (ms < copied || me < ms || me > len) return -1; /* \K tricks: refuse rather than misplace */
        if (tok_buf_add(out, s + copied, ms - copied) != 0 || tok_buf_add(out, b, blen) != 0) return -1;
        copied = me;
        if (me == ms) {
            if (ms >= len) break;
            size_t k = tok_utf8_lead_len((uint8_t)s[ms]);
            pos = ms + (k < len - ms ? k : len - ms);
        } else {
            pos = me;
        }
    }
    return tok_buf_add(out, s + copied, len - copied);
}

/* Strip: White_Space removed at the chosen ends. */
static bool hf_in_class(uint32_t cp, int cls);
static int hf_strip(const hf_norm *n, const char *s, size_t len, tok_buf *out) {
    size_t k;
    uint32_t cp;
    while (n->left && len && (k = tok_utf8_decode(s, len, &cp)) && hf_in_class(cp, HC_SPACE)) {
        s += k;
        len -= k;
    }
    while (n->right && len) {
        size_t st = len - 1;
        while (st > 0 && ((uint8_t)s[st] & 0xC0) == 0x80) st--;
        if (!tok_utf8_decode(s + st, len - st, &cp) || !hf_in_class(cp, HC_SPACE)) break;
        len = st;
    }
    return tok_buf_add(out, s, len);
}

/* The CJK ideograph blocks BertNormalizer surrounds with spaces (tokenizers' is_chinese_char). */
static bool hf_is_cjk(uint32_t c) {
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x20000 && c <= 0x2A6DF) ||
           (c >= 0x2A700 && c <= 0x2B73F) || (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/* BertNormalizer (and StripAccents: the Mn rule alone, without NFD): drops NUL, U+FFFD and other-category characters but tab, newline and CR,
 * then white space -> ' ', CJK ideographs spaced, accents (Mn after NFD) stripped,
 * lower-cased; in that order, as tokenizers' BertNormalizer. */
static int hf_bert(const hf_norm *n, const char *s, size_t len, tok_buf *out) {
    utf8proc_uint8_t *nfd = NULL;
    if (n->accents) {
        utf8proc_ssize_t m = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, &nfd,
                                          UTF8PROC_STABLE | UTF8PROC_DECOMPOSE);
        if (m < 0) return -1;
        s = (const char *)nfd;
        len = (size_t)m;
    }
    int rc = 0;
    for (size_t i = 0; i < len && rc == 0;) {
        uint32_t cp = 0xFFFD;
        size_t k = tok_utf8_decode(s + i, len - i, &cp);
        i += k ? k : 1;
        utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
        bool tnr = cp == '\t' || cp == '\n' || cp == '\r', space = tnr || hf_in_class(cp, HC_SPACE);
        if (n->clean && !tnr && /* other-category (\v, \f, U+0085 too) goes before the white space rule */
            (cp == 0 || cp == 0xFFFD || c == UTF8PROC_CATEGORY_CC || c == UTF8PROC_CATEGORY_CF ||
             c == UTF8PROC_CATEGORY_CN || c == UTF8PROC_CATEGORY_CO || c == UTF8PROC_CATEGORY_CS))
            continue;
        if ((n->accents || n->kind == HN_STRIP_ACCENTS) && c == UTF8PROC_CATEGORY_MN) continue;
        if (n->clean && space) cp = ' ';
        if (n->lower) cp = (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp);
        char enc[4];
        size_t el = tok_utf8_encode(cp, enc);
        bool pad = n->chinese && hf_is_cjk(cp);
        if (pad) rc |= tok_buf_add(out, " ", 1);
        rc |= tok_buf_add(out, enc, el);
        if (pad) rc |= tok_buf_add(out, " ", 1);
    }
    free(nfd);
    return rc;
}

static int hf_unicode(int kind, const char *s, size_t len, tok_buf *out) {
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t n;
    if (kind == HN_LOWER) {
        for (size_t i = 0; i < len;) {
            uint32_t cp;
            size_t k = tok_utf8_decode(s + i, len - i, &cp);
            char enc[4];
            if (tok_buf_add(out, enc, tok_utf8_encode((uint32_t)utf8proc_tolower((utf8proc_int32_t)cp), enc)) != 0)
                return -1;
            i += k ? k : 1;
        }
        return 0;
    }
    int opt = UTF8PROC_STABLE | (kind == HN_NFC || kind == HN_NFKC ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE) |
              (kind == HN_NFKC || kind == HN_NFKD ? UTF8PROC_COMPAT : 0);
    n = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, &dst, opt);
    if (n < 0) return -1;
    int rc = tok_buf_add(out, dst, (size_t)n);
    free(dst);
    return rc;
}

/* Runs the normalisers over s; the result is in one of the two scratch buffers. */
static int hf_normalize(const tok_hf *hf, tok_scratch *sc, pcre2_match_data *md, const char *s, size_t len,
                        const char **res, size_t *res_len) {
    tok_buf *bufs[2] = {&sc->norm, &sc->tmp};
    int cur = 0;
    for (int i = 0; i < hf->n_norms; i++) {
        const hf_norm *n = &hf->norms[i];
        tok_buf *out = bufs[cur];
        out->n = 0;
        int rc;
        if (n->kind == HN_PREPEND)
            rc = len == 0 ? 0 : tok_buf_add(out, n->a, strlen(n->a)) | tok_buf_add(out, s, len);
        else if (n->kind == HN_REPLACE)
            rc = n->re ? hf_replace_re(out, s, len, n->re, md, n->b) : hf_replace(out, s, len, n->a, n->b);
        else if (n->kind == HN_STRIP)
            rc = hf_strip(n, s, len, out);
        else if (n->kind == HN_BERT || n->kind == HN_STRIP_ACCENTS)
            rc = hf_bert(n, s, len, out);
        else
            rc = hf_unicode(n->kind, s, len, out);
        if (rc != 0) return -1;
        s = out->p ? out->p : "";
        len = out->n;
        cur ^= 1;
    }
    *res = s;
    *res_len = len;
    return 0;
}

static int hf_cut_add(hf_scratch *hs, size_t start, size_t end, bool match) {
    if (start >= end) return 0;
    if (hs->n_cuts == hs->cap_cuts) {
        size_t cap = hs->cap_cuts ? 2 * hs->cap_cuts : 64;
        hf_cut *c = realloc(hs->cuts, cap * sizeof *c);
        if (!c) return -1;
        hs->cuts = c;
        hs->cap_cuts = cap;
    }
    hs->cuts[hs->n_cuts++] = (hf_cut){(uint32_t)start, (uint32_t)end, match};
    return 0;
}

/* Cuts a word at the matches of re (each match one cut, the text between one cut). */
static int hf_cuts_regex(hf_scratch *hs, pcre2_code *re, const char *s, size_t len, bool invert) {
    size_t pos = 0, gap = 0;
    hs->n_cuts = 0;
    while (pos <= len) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, len, pos, PCRE2_NO_UTF_CHECK, hs->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) return -1;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(hs->md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) { /* empty match: step over one character */
            if (ms >= len) break;
            pos = ms + tok_utf8_lead_len((uint8_t)s[ms]);
            continue;
        }
        if (hf_cut_add(hs, gap, ms, invert) != 0 || hf_cut_add(hs, ms, me, !invert) != 0) return -1;
        gap = pos = me;
    }
    return hf_cut_add(hs, gap, len, invert);
}

static bool hf_in_class(uint32_t cp, int cls) {
    if (cls == HC_SPACE) /* White_Space */
        return (cp >= 9 && cp <= 13) || cp == 32 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
               (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
               cp == 0x205F || cp == 0x3000;
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    if (cls == HC_NUMERIC) return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
    return (cp < 128 && strchr("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", (int)cp) && cp) ||
           (c >= UTF8PROC_CATEGORY_PC && c <= UTF8PROC_CATEGORY_PO);
}

/* Cuts a word at each character of a class (each such character one cut). */
static int hf_cuts_chars(hf_scratch *hs, int cls, const char *s, size_t len) {
    size_t gap = 0;
    hs->n_cuts = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp = 0xFFFD;
        size_t k = tok_utf8_decode(s + i, len - i, &cp);
        k = k ? k : 1;
        if (hf_in_class(cp, cls)) {
            if (hf_cut_add(hs, gap, i, false) != 0 || hf_cut_add(hs, i, i + k, true) != 0) return -1;
            gap = i + k;
        }
        i += k;
    }
    return hf_cut_add(hs, gap, len, false);
}

/* Turns the cuts into words by the split behaviour (as tokenizers' NormalizedString::split). */
static int hf_emit_cuts(hf_scratch *hs, int behavior, const char *s, hf_words *out,
                        int (*add)(hf_words *, const char *, size_t, const void *), const void *arg) {
    hf_cut *c = hs->cuts;
    size_t n = hs->n_cuts, k = 0; /* merged cuts are written back into c[0..k) */
    if (behavior == HS_MERGED_NEXT) { /* a match joins the text after it: mirror of PREV */
        for (size_t i = n; i-- > 0;) {
            bool join = c[i].match && k > 0 && !c[n - k].match;
            if (join) {
                c[n - k].start = c[i].start;
                c[n - k].match = true; /* the match before it stands alone */
            } else {
                c[n - ++k] = c[i];
            }
        }
        memmove(c, c + n - k, k * sizeof *c);
    } else {
        for (size_t i = 0; i < n; i++) {
            bool join = k > 0 && ((behavior == HS_MERGED_PREV && c[i].match && !c[k - 1].match) ||
                                  (behavior == HS_CONTIGUOUS && c[i].match == c[k - 1].match));
            if (join) c[k - 1].end = c[i].end;
            else c[k++] = c[i];
            if (join && behavior == HS_MERGED_PREV) c[k - 1].match = true; /* the next match stands alone */
        }
    }
    for (size_t i = 0; i < k; i++) {
        if (behavior == HS_REMOVED && c[i].match) continue;
        if (add(out, s + c[i].start, c[i].end - c[i].start, arg) != 0) return -1;
    }
    return 0;
}

static int hf_add_plain(hf_words *w, const char *s, size_t len, const void *arg) {
    (void)arg;
    return hf_word_add(w, s, len);
}

/* Adds the ByteLevel form of s: each byte as its printable character. */
static int hf_add_bytelevel(hf_words *w, const char *s, size_t len, const void *arg) {
    const tok_hf *hf = arg;
    if (len == 0) return 0;
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 64;
        hf_span *p = realloc(w->w, cap * sizeof *p);
        if (!p) return -1;
        w->w = p;
        w->cap = cap;
    }
    size_t start = w->arena.n;
    if (tok_buf_reserve(&w->arena, 2 * len) != 0) return -1;
    for (size_t i = 0; i < len; i++) {
        uint8_t b = (uint8_t)s[i];
        memcpy(w->arena.p + w->arena.n, hf->byte_enc[b], hf->byte_enc_len[b]);
        w->arena.n += hf->byte_enc_len[b];
    }
    if (w->arena.n > UINT32_MAX) return -1;
    w->w[w->n++] = (hf_span){(uint32_t)start, (uint32_t)(w->arena.n - start)};
    return 0;
}

static int hf_pretok_step(const tok_hf *hf, const hf_pre *p, hf_scratch *hs, const hf_words *in,
                          hf_words *out, bool first_segment) {
    out->n = 0;
    out->arena.n = 0;
    tok_buf tmp = {0};
    int rc = 0;
    for (size_t i = 0; i < in->n && rc == 0; i++) {
        const char *s = in->arena.p + in->w[i].off;
        size_t len = in->w[i].len;
        if (p->kind == HP_SPLIT || p->kind == HP_CHARS) {
            rc = p->kind == HP_SPLIT ? hf_cuts_regex(hs, p->re, s, len, p->invert)
                                     : hf_cuts_chars(hs, p->char_class, s, len);
            if (rc == 0) rc = hf_emit_cuts(hs, p->behavior, s, out, hf_add_plain, NULL);
        } else if (p->kind == HP_BYTELEVEL) {
            tmp.n = 0;
            if (p->add_prefix && (len == 0 || s[0] != ' ')) {
                rc = tok_buf_add(&tmp, " ", 1) | tok_buf_add(&tmp, s, len);
                s = tmp.p;
                len = tmp.n;
            }
            if (rc == 0 && p->re && (rc = hf_cuts_regex(hs, p->re, s, len, false)) == 0)
                rc = hf_emit_cuts(hs, HS_ISOLATED, s, out, hf_add_bytelevel, hf);
            else if (rc == 0)
                rc = hf_add_bytelevel(out, s, len, hf);
        } else { /* Metaspace: spaces become the replacement, words start at each replacement */
            tmp.n = 0;
            size_t rl = strlen(p->repl);
            bool prepend = p->scheme == HM_ALWAYS || (p->scheme == HM_FIRST && first_segment && i == 0);
            bool has = len > 0 && (s[0] == ' ' || (len >= rl && memcmp(s, p->repl, rl) == 0));
            if (prepend && len > 0 && !has) rc = tok_buf_add(&tmp, p->repl, rl);
            if (rc == 0) rc = hf_replace(&tmp, s, len, " ", p->repl);
            size_t start = 0;
            for (size_t k = 0; rc == 0 && p->split && k < tmp.n; k++)
                if (k > start && tmp.n - k >= rl && memcmp(tmp.p + k, p->repl, rl) == 0) {
                    rc = hf_word_add(out, tmp.p + start, k - start);
                    start = k;
                }
            if (rc == 0) rc = hf_word_add(out, tmp.p + start, tmp.n - start);
        }
    }
    free(tmp.p);
    return rc;
}

static bool hf_pair(const tok_tokenizer *t, const char *word, const tok_bpe_sym *l,
                    const tok_bpe_sym *r, double *priority, int32_t *merged_id) {
    (void)word;
    uint64_t v;
    if (l->id < 0 || r->id < 0) return false;
    if (!tok_map_get(&t->hf->merges, (uint64_t)l->id << 32 | (uint32_t)r->id, &v)) return false;
    *priority = (double)(v >> 32);
    *merged_id = (int32_t)(uint32_t)v;
    return true;
}

/* Appends the ids of an unknown piece: its bytes (byte_fallback, when the vocabulary has a <0xNN>
 * piece for every one of them, as Hugging Face's BPE requires) or one <unk>. */
static int hf_unknown(const tok_tokenizer *t, const char *s, size_t len, bool *prev_unk, tok_ids *out) {
    bool bytes = t->byte_fallback;
    for (size_t i = 0; bytes && i < len; i++) bytes = t->byte_id[(uint8_t)s[i]] >= 0;
    if (bytes) {
        for (size_t i = 0; i < len; i++)
            if (tok_push(out, t->byte_id[(uint8_t)s[i]]) != 0) return -1;
        *prev_unk = false;
        return 0;
    }
    if (t->unk_id < 0) return 0; /* no unk token: tokenizers drops the piece */
    if (!(t->hf->fuse_unk && *prev_unk) && tok_push(out, t->unk_id) != 0) return -1;
    *prev_unk = true;
    return 0;
}

static int hf_bpe_word(const tok_tokenizer *t, tok_scratch *sc, const char *s, size_t len,
                       bool *prev_unk, tok_ids *out) {
    if (t->hf->ignore_merges) {
        int32_t id = tok_trie_get(&t->vocab, s, len);
        if (id >= 0) {
            *prev_unk = false;
            return tok_push(out, id);
        }
    }
    if (len > INT32_MAX || tok_bpe_syms_reserve(sc, len) != 0) return -1;
    tok_bpe_sym *syms = sc->syms;
    int32_t n = 0;
    for (size_t pos = 0; pos < len;) {
        size_t cl = tok_utf8_lead_len((uint8_t)s[pos]);
        if (cl > len - pos) cl = len - pos;
        int32_t id = tok_trie_get(&t->vocab, s + pos, cl);
        syms[n] = (tok_bpe_sym){(uint32_t)pos, (uint32_t)cl, id, n - 1, -1, false};
        if (n > 0) syms[n - 1].next = n;
        n++;
        pos += cl;
    }
    if (tok_bpe_merge(t, sc, s, syms, n, hf_pair) != 0) return -1;
    for (int32_t i = 0; i >= 0; i = syms[i].next) {
        if (syms[i].id >= 0) {
            *prev_unk = false;
            if (tok_push(out, syms[i].id) != 0) return -1;
        } else if (hf_unknown(t, s + syms[i].start, syms[i].len, prev_unk, out) != 0) {
            return -1;
        }
    }
    return 0;
}

/* WordPiece (tokenizers' WordPiece::tokenize): the longest vocabulary prefix, then the longest
 * prefix-marked ("##") piece of the rest, and so on; a word with a part no piece covers, or of
 * more than max_input_chars_per_word characters, is one <unk>. */
static int hf_wordpiece_word(const tok_tokenizer *t, hf_scratch *hs, const char *s, size_t len, tok_ids *out) {
    const tok_hf *hf = t->hf;
    size_t chars = 0, plen = strlen(hf->wp_prefix);
    for (size_t i = 0; i < len; i++) chars += ((uint8_t)s[i] & 0xC0) != 0x80;
    if (chars > (size_t)hf->wp_max_chars) return tok_push(out, t->unk_id);
    size_t first = out->n;
    tok_buf *b = &hs->wp;
    for (size_t start = 0; start < len;) {
        int32_t id = -1;
        size_t end = len;
        for (; end > start; end--) {
            if (end < len && ((uint8_t)s[end] & 0xC0) == 0x80) continue; /* only at character boundaries */
            if (start == 0) {
                id = tok_trie_get(&t->vocab, s, end);
            } else {
                b->n = 0;
                if (tok_buf_add(b, hf->wp_prefix, plen) != 0 || tok_buf_add(b, s + start, end - start) != 0) return -1;
                id = tok_trie_get(&t->vocab, b->p, b->n);
            }
            if (id >= 0 && t->type[id] != TOK_HOLE) break;
            id = -1;
        }
        if (id < 0) {
            out->n = first;
            return tok_push(out, t->unk_id);
        }
        if (tok_push(out, id) != 0) return -1;
        start = end;
    }
    return 0;
}

static int hf_encode_segment(const tok_tokenizer *t, tok_scratch *sc, hf_scratch *hs, const char *s,
                             size_t len, bool first_segment, bool *prev_unk, tok_ids *out) {
    const tok_hf *hf = t->hf;
    const char *norm;
    size_t norm_len;
    if (hf_normalize(hf, sc, hs->md, s, len, &norm, &norm_len) != 0) return -1;
    if (norm_len == 0) return 0;
    hf_words *cur = &hs->a, *next = &hs->b;
    cur->n = cur->arena.n = 0;
    if (hf_word_add(cur, norm, norm_len) != 0) return -1;
    for (int i = 0; i < hf->n_pres; i++) {
        if (hf_pretok_step(hf, &hf->pres[i], hs, cur, next, first_segment) != 0) return -1;
        hf_words *x = cur;
        cur = next;
        next = x;
    }
    for (size_t i = 0; i < cur->n; i++) {
        const char *w = cur->arena.p + cur->w[i].off;
        size_t wl = cur->w[i].len;
        int rc;
        if (t->kind == TOK_HF_UNIGRAM) {
            rc = tok_unigram(t, w, wl, hf->fuse_unk, out);
            *prev_unk = false;
        } else if (t->kind == TOK_HF_WORDPIECE) {
            rc = hf_wordpiece_word(t, hs, w, wl, out);
        } else if (t->kind == TOK_HF_WORDLEVEL) {
            int32_t id = tok_trie_get(&t->vocab, w, wl);
            rc = tok_push(out, id >= 0 && t->type[id] != TOK_HOLE ? id : t->unk_id);
        } else {
            rc = hf_bpe_word(t, sc, w, wl, prev_unk, out);
        }
        if (rc != 0) return -1;
    }
    return 0;
}

/* Length of the longest added token at s, and its id. */
static size_t hf_added_at(const tok_hf *hf, const char *s, size_t len, int32_t *id) {
    size_t best = 0;
    uint32_t node = 0;
    for (size_t k = 0; k < len; k++) {
        if (!(node = tok_trie_step(&hf->added, node, (uint8_t)s[k]))) break;
        if (hf->added.value[node] >= 0) {
            best = k + 1;
            *id = hf->added.value[node];
        }
    }
    return best;
}

/* Whether the character c[0, k) is a word character, as single_word tests it (Rust's \w). */
static bool hf_word_char(const tok_hf *hf, hf_scratch *hs, const char *c, size_t k) {
    return pcre2_match(hf->word_re, (PCRE2_SPTR)c, k, 0, PCRE2_ANCHORED | PCRE2_NO_UTF_CHECK, hs->md, NULL) >= 0;
}

/* The code point ending at text[end) (end > 0; text is valid UTF-8), and its length. */
static uint32_t hf_cp_before(const char *text, size_t end, size_t *k) {
    size_t i = end - 1;
    while (i > 0 && ((uint8_t)text[i] & 0xC0) == 0x80) i--;
    uint32_t cp = 0xFFFD;
    tok_utf8_decode(text + i, end - i, &cp);
    *k = end - i;
    return cp;
}

static uint32_t hf_cp_at(const char *text, size_t len, size_t at, size_t *k) {
    uint32_t cp = 0xFFFD;
    *k = tok_utf8_decode(text + at, len - at, &cp);
    if (!*k) *k = 1;
    return cp;
}

/* Whether text[start, stop) has a word character right before or after it. */
static bool hf_inside_word(const tok_hf *hf, hf_scratch *hs, const char *text, size_t len, size_t start, size_t stop) {
    size_t k;
    if (start > 0 && (hf_cp_before(text, start, &k), hf_word_char(hf, hs, text + start - k, k))) return true;
    return stop < len && (hf_cp_at(text, len, stop, &k), hf_word_char(hf, hs, text + stop, k));
}

/* Points *s at a copy with each invalid UTF-8 byte replaced by U+FFFD, if there is any. */
static int hf_clean_utf8(tok_buf *out, const char **s, size_t *len) {
    size_t i = 0, k;
    uint32_t cp;
    while (i < *len && (k = tok_utf8_decode(*s + i, *len - i, &cp)) > 0) i += k;
    if (i == *len) return 0;
    out->n = 0;
    if (tok_buf_add(out, *s, i) != 0) return -1;
    while (i < *len) {
        k = tok_utf8_decode(*s + i, *len - i, &cp);
        int rc = k ? tok_buf_add(out, *s + i, k) : tok_buf_add(out, "\xef\xbf\xbd", 3);
        if (rc != 0) return -1;
        i += k ? k : 1;
    }
    *s = out->p;
    *len = out->n;
    return 0;
}

int tok_hf_encode(const tok_tokenizer *t, const char *text, size_t len, int flags, tok_ids *out) {
    const tok_hf *hf = t->hf;
    tok_scratch *sc = out->scratch;
    if (!sc->hf) {
        hf_scratch *hs = calloc(1, sizeof *hs);
        if (!hs || !(hs->md = pcre2_match_data_create(8, NULL))) {
            free(hs);
            return -1;
        }
        sc->hf = hs;
    }
    hf_scratch *hs = sc->hf;
    if (hf_clean_utf8(&hs->clean, &text, &len) != 0) return -1;
    if (flags & TOK_ADD_SPECIAL)
        for (int i = 0; i < hf->n_pre_ids; i++)
            if (tok_push(out, hf->pre_ids[i]) != 0) return -1;
    bool prev_unk = false, first = true;
    size_t seg = 0;
    for (size_t pos = 0; pos < len;) {
        int32_t id = -1;
        size_t n = hf->has_added ? hf_added_at(hf, text + pos, len - pos, &id) : 0, k;
        if (n == 0) {
            pos++;
            continue;
        }
        /* As Hugging Face's AddedVocabulary::find_matches: a single_word token next to a word
         * character is no match (and the search goes on after it); lstrip and rstrip make the
         * token's span take the whitespace beside it, back to the previous match at most. */
        uint8_t fl = hf->added_flags ? hf->added_flags[id] : 0;
        size_t start = pos, stop = pos + n;
        if ((fl & HF_SINGLE_WORD) && hf_inside_word(hf, hs, text, len, start, stop)) {
            pos = stop;
            continue;
        }
        while ((fl & HF_LSTRIP) && start > seg && hf_in_class(hf_cp_before(text, start, &k), HC_SPACE)) start -= k;
        while ((fl & HF_RSTRIP) && stop < len && hf_in_class(hf_cp_at(text, len, stop, &k), HC_SPACE)) stop += k;
        if (start > seg) {
            if (hf_encode_segment(t, sc, hs, text + seg, start - seg, first, &prev_unk, out) != 0) return -1;
            first = false;
        }
        if (tok_push(out, id) != 0) return -1;
        prev_unk = false;
        pos = seg = stop;
    }
    if (len > seg && hf_encode_segment(t, sc, hs, text + seg, len - seg, first, &prev_unk, out) != 0)
        return -1;
    if (flags & TOK_ADD_SPECIAL)
        for (int i = 0; i < hf->n_post_ids; i++)
            if (tok_push(out, hf->post_ids[i]) != 0) return -1;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Decoding                                                                                    */

/* ByteLevel characters back to bytes; other characters are kept. */
static int hf_unbytelevel(const tok_hf *hf, const char *s, size_t len, tok_buf *out) {
    for (size_t i = 0; i < len;) {
        uint32_t cp = 0;
        size_t k = tok_utf8_decode(s + i, len - i, &cp);
        int rc;
        if (k > 0 && cp < 512 && hf->byte_dec[cp] >= 0) {
            char b = (char)hf->byte_dec[cp];
            rc = tok_buf_add(out, &b, 1);
        } else {
            k = k ? k : 1;
            rc = tok_buf_add(out, s + i, k);
        }
        if (rc != 0) return -1;
        i += k;
    }
    return 0;
}

int tok_hf_token_bytes(const tok_tokenizer *t, int32_t id, tok_buf *out) {
    size_t len;
    const char *p = tok_piece(t, id, &len);
    if (!p) return 0;
    if (t->type[id] == TOK_BYTE) {
        char b = (char)tok_byte_piece_value(p, len);
        return tok_buf_add(out, &b, 1);
    }
    if (t->type[id] == TOK_CONTROL || t->type[id] == TOK_USER) return tok_buf_add(out, p, len);
    if (t->hf->byte_level) return hf_unbytelevel(t->hf, p, len, out);
    return hf_replace(out, p, len, "\xe2\x96\x81", " ");
}

/* Appends bytes as UTF-8, each byte of an invalid sequence as U+FFFD. */
static int hf_add_lossy(tok_buf *out, const char *s, size_t len) {
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t k = tok_utf8_decode(s + i, len - i, &cp);
        int rc = k ? tok_buf_add(out, s + i, k) : tok_buf_add(out, "\xef\xbf\xbd", 3);
        if (rc != 0) return -1;
        i += k ? k : 1;
    }
    return 0;
}

/* tokenizers' decoders::wordpiece::cleanup: no space before . ? ! , and in contractions. */
static int hf_wordpiece_cleanup(tok_buf *b) {
    static const char *const rules[][2] = {{" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"},
                                           {" n't", "n't"}, {" 'm", "'m"}, {" do not", " don't"}, {" 's", "'s"},
                                           {" 've", "'ve"}, {" 're", "'re"}};
    tok_buf t = {0};
    for (size_t r = 0; r < sizeof rules / sizeof rules[0]; r++) {
        t.n = 0;
        if (hf_replace(&t, b->p ? b->p : "", b->n, rules[r][0], rules[r][1]) != 0) {
            free(t.p);
            return -1;
        }
        b->n = 0;
        if (tok_buf_add(b, t.p ? t.p : "", t.n) != 0) {
            free(t.p);
            return -1;
        }
    }
    free(t.p);
    return 0;
}

/* The decoder chain over a list of token strings (kept as spans in two arenas). */
int tok_hf_decode(const tok_tokenizer *t, const int32_t *ids, size_t n, int skip_special, tok_buf *out) {
    const tok_hf *hf = t->hf;
    hf_words a = {0}, b = {0}, *cur = &a, *next = &b;
    tok_buf tmp = {0};
    pcre2_match_data *md = NULL; /* for Replace decoders with a Regex */
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        size_t len;
        const char *p = tok_piece(t, ids[i], &len);
        if (!p || (skip_special && t->type[ids[i]] == TOK_CONTROL)) continue;
        rc = hf_word_add(cur, p, len);
    }
    for (int d = 0; d < hf->n_decs && rc == 0; d++) {
        const hf_dec *dec = &hf->decs[d];
        next->n = next->arena.n = 0;
        if (dec->kind == HD_BYTELEVEL || dec->kind == HD_FUSE) { /* joins everything */
            tmp.n = 0;
            for (size_t i = 0; i < cur->n && rc == 0; i++) {
                const char *s = cur->arena.p + cur->w[i].off;
                rc = dec->kind == HD_FUSE ? tok_buf_add(&tmp, s, cur->w[i].len)
                                          : hf_unbytelevel(hf, s, cur->w[i].len, &tmp);
            }
            if (rc == 0 && dec->kind == HD_BYTELEVEL) {
                tok_buf fixed = {0};
                rc = hf_add_lossy(&fixed, tmp.p, tmp.n);
                if (rc == 0) rc = hf_word_add(next, fixed.p, fixed.n);
                free(fixed.p);
            } else if (rc == 0) {
                rc = hf_word_add(next, tmp.p, tmp.n);
            }
        } else if (dec->kind == HD_BYTEFALLBACK) { /* runs of <0xNN> become text */
            tmp.n = 0;
            for (size_t i = 0; i <= cur->n && rc == 0; i++) {
                const char *s = i < cur->n ? cur->arena.p + cur->w[i].off : NULL;
                size_t len = i < cur->n ? cur->w[i].len : 0;
                bool is_byte = s && len == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>' &&
                               isxdigit((unsigned char)s[3]) && isxdigit((unsigned char)s[4]); /* as u8::from_str_radix */
                if (is_byte) {
                    char byte = (char)strtol((char[]){s[3], s[4], 0}, NULL, 16);
                    rc = tok_buf_add(&tmp, &byte, 1);
                    continue;
                }
                if (tmp.n) {
                    tok_buf fixed = {0};
                    rc = hf_add_lossy(&fixed, tmp.p, tmp.n);
                    if (rc == 0) rc = hf_word_add(next, fixed.p, fixed.n);
                    free(fixed.p);
                    tmp.n = 0;
                }
                if (s && rc == 0) rc = hf_word_add(next, s, len);
            }
        } else {
            for (size_t i = 0; i < cur->n && rc == 0; i++) {
                const char *s = cur->arena.p + cur->w[i].off;
                size_t len = cur->w[i].len;
                tmp.n = 0;
                if (dec->kind == HD_REPLACE && dec->re) {
                    if (!md && !(md = pcre2_match_data_create(8, NULL))) rc = -1;
                    else rc = hf_replace_re(&tmp, s, len, dec->re, md, dec->b);
                } else if (dec->kind == HD_REPLACE) {
                    rc = hf_replace(&tmp, s, len, dec->a, dec->b);
                } else if (dec->kind == HD_WORDPIECE) { /* "##" glues to the previous token, others get a space */
                    size_t pl = strlen(dec->a);
                    bool cont = len >= pl && memcmp(s, dec->a, pl) == 0;
                    if (i > 0 && cont) s += pl, len -= pl;
                    else if (i > 0) rc = tok_buf_add(&tmp, " ", 1);
                    if (rc == 0) rc = tok_buf_add(&tmp, s, len);
                    if (rc == 0 && dec->cleanup) rc = hf_wordpiece_cleanup(&tmp);
                } else if (dec->kind == HD_BPE_SUFFIX) { /* the suffix ends a word: a space, none at the end */
                    rc = hf_replace(&tmp, s, len, dec->a, i + 1 < cur->n ? " " : "");
                } else if (dec->kind == HD_METASPACE) {
                    rc = hf_replace(&tmp, s, len, dec->a, " ");
                    if (rc == 0 && i == 0 && dec->scheme != HM_NEVER && tmp.n && tmp.p[0] == ' ') {
                        memmove(tmp.p, tmp.p + 1, --tmp.n);
                    }
                } else { /* Strip: up to start copies of content on the left, stop on the right */
                    size_t cl = strlen(dec->a);
                    for (int k = 0; k < dec->start && len >= cl && memcmp(s, dec->a, cl) == 0; k++) {
                        s += cl;
                        len -= cl;
                    }
                    for (int k = 0; k < dec->stop && len >= cl && memcmp(s + len - cl, dec->a, cl) == 0; k++)
                        len -= cl;
                    rc = tok_buf_add(&tmp, s, len);
                }
                if (rc == 0) rc = hf_word_add(next, tmp.p ? tmp.p : "", tmp.n);
            }
        }
        hf_words *x = cur;
        cur = next;
        next = x;
    }
    for (size_t i = 0; i < cur->n && rc == 0; i++) rc = tok_buf_add(out, cur->arena.p + cur->w[i].off, cur->w[i].len);
    free(tmp.p);
    pcre2_match_data_free(md);
    free(a.arena.p);
    free(a.w);
    free(b.arena.p);
    free(b.w);
    return rc;
}
