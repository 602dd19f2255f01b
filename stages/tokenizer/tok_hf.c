/* tok_hf.c — encoding and decoding with a loaded tokenizer.json pipeline (tok_hf_load.c reads it):
 * added tokens, normalisers, pre-tokenisers (Split with PCRE2-JIT regexes, ByteLevel, Metaspace,
 * character classes), the BPE, Unigram, WordPiece and WordLevel models, the post-processor's
 * special tokens and the decoders, following the tokenizers library's semantics. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tok_hf_internal.h"

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
