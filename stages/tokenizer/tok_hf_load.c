/* tok_hf_load.c — reads a Hugging Face tokenizer.json (jansson) into struct tok_hf: the vocabulary
 * and added tokens, the BPE merges, WordPiece settings, and the normaliser, pre-tokeniser,
 * post-processor and decoder chains (regexes compiled with PCRE2-JIT). A type we do not support is
 * refused with its name. Encoding and decoding with the result: tok_hf.c. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "tok_hf_internal.h"


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
    const char *str = json_string_value(json_object_get(pat, "String"));
    const char *content = json_string_value(json_object_get(n, "content"));
    if (!content || (!rx && (!str || !str[0]))) {
        tok_errf(err, errlen, "Replace needs a content and a Regex or non-empty String pattern");
        return -1;
    }
    if (!(*b = hf_strdup(content))) return -1;
    if (rx) return (*re = hf_compile(rx, err, errlen)) ? 0 : -1;
    return (*a = hf_strdup(str)) ? 0 : -1;
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
