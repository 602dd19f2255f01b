/* tok_core.c — the toolbox the loaders and encoders share (a leaf: it calls nothing of tok_spm.c,
 * tok_hf.c or tok_api.c): containers, vocabulary, the Unigram Viterbi and BPE merge algorithms and
 * the SentencePiece BPE encode. The public entry points of tok.h are in tok_api.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

void tok_errf(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------------------------------ */
/* Hash map and trie                                                                           */

static int tok_map_grow(tok_map *m) {
    size_t cap = m->cap ? m->cap * 2 : 1024;
    tok_map_entry *e = calloc(cap, sizeof *e);
    if (!e) return -1;
    unsigned shift = 64;
    for (size_t c = cap; c > 1; c >>= 1) shift--;
    tok_map grown = {e, cap, m->n, shift};
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->e[i].key) continue;
        size_t j = tok_slot(&grown, m->e[i].key);
        while (e[j].key) j = (j + 1) & (cap - 1);
        e[j] = m->e[i];
    }
    free(m->e);
    *m = grown;
    return 0;
}

/* The entry of key, or the empty slot where it would go. */
static tok_map_entry *tok_map_find(const tok_map *m, uint64_t key) {
    key |= 1ULL << 63;
    size_t mask = m->cap - 1, i = tok_slot(m, key);
    while (m->e[i].key && m->e[i].key != key) i = (i + 1) & mask;
    return &m->e[i];
}

int tok_map_put(tok_map *m, uint64_t key, uint64_t val) {
    if ((m->n + 1) * 2 > m->cap && tok_map_grow(m) != 0) return -1;
    tok_map_entry *e = tok_map_find(m, key);
    if (!e->key) m->n++;
    e->key = key | 1ULL << 63;
    e->val = val;
    return 0;
}

bool tok_map_get(const tok_map *m, uint64_t key, uint64_t *val) {
    if (m->cap == 0) return false;
    const tok_map_entry *e = tok_map_find(m, key);
    if (!e->key) return false;
    *val = e->val;
    return true;
}

void tok_map_free(tok_map *m) {
    free(m->e);
    memset(m, 0, sizeof *m);
}

int tok_trie_insert(tok_trie *t, const char *s, size_t len, int32_t value) {
    if (len == 0) return -1; /* the root holds no value */
    if (t->n_nodes == 0) {
        t->cap_nodes = 1024;
        if (!(t->value = malloc(t->cap_nodes * sizeof *t->value))) return -1;
        t->value[0] = -1;
        t->n_nodes = 1;
    }
    uint32_t node = 0;
    for (size_t i = 0; i < len; i++) {
        uint32_t child = tok_trie_step(t, node, (uint8_t)s[i]);
        if (!child) {
            if (t->n_nodes == t->cap_nodes) {
                int32_t *v = realloc(t->value, 2 * t->cap_nodes * sizeof *v);
                if (!v) return -1;
                t->value = v;
                t->cap_nodes *= 2;
            }
            child = t->n_nodes++;
            t->value[child] = -1;
            if (tok_map_put(&t->edges, (uint64_t)node << 8 | (uint8_t)s[i], child) != 0) return -1;
        }
        if (i + 1 == len) /* the value also rides on the edge into the node, for tok_trie_walk */
            tok_map_find(&t->edges, (uint64_t)node << 8 | (uint8_t)s[i])->val =
                child | (uint64_t)(uint32_t)(value + 1) << 32;
        node = child;
    }
    t->value[node] = value;
    return 0;
}

int32_t tok_trie_get(const tok_trie *t, const char *s, size_t len) {
    if (t->n_nodes == 0) return -1;
    uint32_t node = 0;
    for (size_t i = 0; i < len; i++)
        if (!(node = tok_trie_step(t, node, (uint8_t)s[i]))) return -1;
    return t->value[node];
}

void tok_trie_free(tok_trie *t) {
    tok_map_free(&t->edges);
    free(t->value);
    memset(t, 0, sizeof *t);
}

/* ------------------------------------------------------------------------------------------ */
/* UTF-8 and buffers                                                                           */

size_t tok_utf8_decode(const char *str, size_t len, uint32_t *cp) {
    const uint8_t *s = (const uint8_t *)str;
    if (len == 0) return 0;
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    size_t n = (s[0] & 0xE0) == 0xC0 ? 2 : (s[0] & 0xF0) == 0xE0 ? 3 : (s[0] & 0xF8) == 0xF0 ? 4 : 0;
    if (n == 0 || len < n) return 0;
    uint32_t c = s[0] & (0x7F >> n);
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        c = c << 6 | (s[i] & 0x3F);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (c < min_cp[n] || c > 0x10FFFF || (c >= 0xD800 && c < 0xE000)) return 0;
    *cp = c;
    return n;
}

size_t tok_utf8_encode(uint32_t c, char *out) {
    uint8_t *o = (uint8_t *)out;
    if (c < 0x80) {
        o[0] = (uint8_t)c;
        return 1;
    }
    if (c < 0x800) {
        o[0] = 0xC0 | (c >> 6);
        o[1] = 0x80 | (c & 0x3F);
        return 2;
    }
    if (c < 0x10000) {
        o[0] = 0xE0 | (c >> 12);
        o[1] = 0x80 | ((c >> 6) & 0x3F);
        o[2] = 0x80 | (c & 0x3F);
        return 3;
    }
    o[0] = 0xF0 | (c >> 18);
    o[1] = 0x80 | ((c >> 12) & 0x3F);
    o[2] = 0x80 | ((c >> 6) & 0x3F);
    o[3] = 0x80 | (c & 0x3F);
    return 4;
}

int tok_buf_reserve(tok_buf *b, size_t extra) {
    if (b->n + extra <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + extra) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

int tok_buf_add(tok_buf *b, const void *s, size_t len) {
    if (len == 0) return 0;
    if (tok_buf_reserve(b, len) != 0) return -1;
    memcpy(b->p + b->n, s, len);
    b->n += len;
    return 0;
}

int tok_push(tok_ids *out, int32_t id) {
    if (out->n == out->cap) {
        size_t cap = out->cap ? out->cap * 2 : 256;
        int32_t *p = realloc(out->ids, cap * sizeof *p);
        if (!p) return -1;
        out->ids = p;
        out->cap = cap;
    }
    out->ids[out->n++] = id;
    return 0;
}

static void *tok_grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return *p;
    size_t c = *cap ? *cap : 256;
    while (c < need) c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q) return NULL;
    *p = q;
    *cap = c;
    return q;
}

/* ------------------------------------------------------------------------------------------ */
/* Vocabulary                                                                                  */

tok_tokenizer *tok_alloc(void) {
    tok_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->unk_id = t->bos_id = t->eos_id = -1;
    for (int i = 0; i < 256; i++) t->byte_id[i] = -1;
    return t;
}

int tok_alloc_pieces(tok_tokenizer *t, int32_t n, size_t blob_bytes) {
    t->n_vocab = n;
    t->blob = malloc(blob_bytes ? blob_bytes : 1);
    t->piece_off = calloc((size_t)n + 1, sizeof *t->piece_off);
    t->piece_len = calloc((size_t)n + 1, sizeof *t->piece_len);
    t->score = calloc((size_t)n + 1, sizeof *t->score);
    t->type = calloc((size_t)n + 1, sizeof *t->type);
    return t->blob && t->piece_off && t->piece_len && t->score && t->type ? 0 : -1;
}

void tok_set_piece(tok_tokenizer *t, int32_t i, const char *s, size_t len, double score, int type) {
    uint32_t off = i == 0 ? 0 : t->piece_off[i - 1] + t->piece_len[i - 1];
    memcpy(t->blob + off, s, len);
    t->piece_off[i] = off;
    t->piece_len[i] = (uint32_t)len;
    t->score[i] = score;
    t->type[i] = (uint8_t)type;
}

int tok_byte_piece_value(const char *s, size_t len) {
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

int tok_finish_vocab(tok_tokenizer *t, char *err, size_t errlen) {
    t->min_score = 3.402823466e+38F; /* as SentencePiece: FLT_MAX and FLT_MIN */
    t->max_score = 1.175494351e-38F;
    for (int32_t i = 0; i < t->n_vocab; i++) {
        const char *s = t->blob + t->piece_off[i];
        size_t len = t->piece_len[i];
        if (t->type[i] == TOK_HOLE) continue;
        if (len == 0) {
            tok_errf(err, errlen, "piece %d is empty", i);
            return -1;
        }
        if (tok_trie_get(&t->vocab, s, len) >= 0) {
            tok_errf(err, errlen, "piece %d (%.*s) is defined twice", i, (int)len, s);
            return -1;
        }
        if (tok_trie_insert(&t->vocab, s, len, i) != 0) {
            tok_errf(err, errlen, "out of memory");
            return -1;
        }
        int b = tok_byte_piece_value(s, len);
        if (b >= 0 && (t->type[i] == TOK_BYTE || t->kind >= TOK_HF_BPE) && t->byte_id[b] < 0)
            t->byte_id[b] = i;
        if (t->type[i] == TOK_NORMAL) {
            if (t->score[i] < t->min_score) t->min_score = (float)t->score[i];
            if (t->score[i] > t->max_score) t->max_score = (float)t->score[i];
        }
        if (t->type[i] == TOK_USER) t->has_user = true;
    }
    if (!(t->uni_score = malloc((size_t)t->n_vocab * sizeof *t->uni_score))) {
        tok_errf(err, errlen, "out of memory");
        return -1;
    }
    for (int32_t i = 0; i < t->n_vocab; i++)
        t->uni_score[i] = t->type[i] == TOK_NORMAL ? t->score[i] : t->type[i] == TOK_USER ? INFINITY : NAN;
    if (t->byte_fallback && t->kind < TOK_HF_BPE) /* tokenizer.json: a missing byte piece means <unk> */
        for (int b = 0; b < 256; b++)
            if (t->byte_id[b] < 0) {
                tok_errf(err, errlen, "byte_fallback is set but piece <0x%02X> is missing", b);
                return -1;
            }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Emitting pieces: unknown pieces become bytes (byte fallback) or one fused <unk>             */

typedef struct tok_emitter {
    bool prev_unk;
} tok_emitter;

static int tok_emit(const tok_tokenizer *t, tok_emitter *e, const char *s, size_t len, int32_t id,
                    bool fuse_unk, tok_ids *out) {
    bool is_unk = id == t->unk_id || id < 0, bytes = is_unk && t->byte_fallback;
    for (size_t i = 0; bytes && i < len; i++) bytes = t->byte_id[(uint8_t)s[i]] >= 0; /* see hf_unknown */
    if (bytes) {
        for (size_t i = 0; i < len; i++)
            if (tok_push(out, t->byte_id[(uint8_t)s[i]]) != 0) return -1;
    } else if (is_unk) {
        if (t->unk_id < 0) return -1; /* as Hugging Face: a Unigram model without unk_id cannot encode it */
        if (!(fuse_unk && e->prev_unk) && tok_push(out, t->unk_id) != 0) return -1;
    } else if (tok_push(out, id) != 0) {
        return -1;
    }
    e->prev_unk = is_unk;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Unigram: Viterbi over byte positions, as SentencePiece's optimised encoder. SentencePiece
 * keeps path scores in float (a candidate is computed and compared in double, then stored
 * rounded to float; the unknown candidate is all float): reproduced exactly so that ties and
 * near-ties resolve identically.
 * tokenizer.json Unigram models (Hugging Face tokenizers, transformers.js) use doubles. */

typedef struct tok_vnode {
    double score;
    int32_t start; /* start of the best last piece ending here; -1 if unreached */
    int32_t id;
    int32_t next; /* forward link, filled while backtracking */
} tok_vnode;

int tok_unigram(const tok_tokenizer *t, const char *s, size_t len, bool fuse_unk, tok_ids *out) {
    tok_scratch *sc = out->scratch;
    if (len == 0) return 0;
    if (len > INT32_MAX - 1) return -1;
    tok_vnode *nodes = tok_grow(&sc->nodes, &sc->nodes_cap, len + 1, sizeof *nodes);
    if (!nodes) return -1;
    for (size_t i = 0; i <= len; i++) nodes[i] = (tok_vnode){0, -1, -1, -1};
    const bool f32 = t->hf == NULL;
    const float unk_score = t->min_score - 10.0f;
    const uint8_t *u = (const uint8_t *)s;
    for (size_t start = 0; start < len;) {
        size_t mblen = tok_utf8_lead_len(u[start]);
        if (mblen > len - start) mblen = len - start;
        const double base = nodes[start].score;
        bool single = false;
        uint32_t node = 0;
        for (size_t k = start; k < len; k++) {
            int32_t id;
            if (!(node = tok_trie_walk(&t->vocab, node, u[k], &id))) break;
            if (id < 0) continue;
            double score = t->uni_score[id];
            if (isnan(score)) continue; /* control, byte, unknown and unused pieces */
            size_t length = k + 1 - start;
            if (isinf(score)) score = (double)((float)length * t->max_score) - 0.1; /* user-defined */
            double cand = score + base;
            tok_vnode *tn = &nodes[k + 1];
            if (tn->start < 0 || cand > tn->score) {
                tn->score = f32 ? (double)(float)cand : cand;
                tn->start = (int32_t)start;
                tn->id = id;
            }
            if (length == mblen) single = true;
        }
        if (!single) {
            tok_vnode *tn = &nodes[start + mblen];
            double cand = f32 ? (double)(unk_score + (float)base) : t->hf_unk_score + base;
            if (tn->start < 0 || cand > tn->score) {
                tn->score = cand;
                tn->start = (int32_t)start;
                tn->id = t->unk_id;
            }
        }
        start += mblen;
    }
    for (int32_t end = (int32_t)len; end > 0; end = nodes[end].start) nodes[nodes[end].start].next = end;
    tok_emitter e = {0};
    for (int32_t pos = 0; pos < (int32_t)len; pos = nodes[pos].next) {
        int32_t end = nodes[pos].next;
        if (tok_emit(t, &e, s + pos, (size_t)(end - pos), nodes[end].id, fuse_unk, out) != 0) return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* BPE merges with a binary heap of candidate pairs                                             */

typedef struct tok_pair {
    double priority;
    int32_t left, right, merged_id;
    uint32_t size;
} tok_pair;

static bool tok_pair_before(const tok_pair *a, const tok_pair *b) {
    return a->priority < b->priority || (a->priority == b->priority && a->left < b->left);
}

typedef struct tok_heap {
    tok_pair *v;
    size_t n;
    tok_scratch *sc;
} tok_heap;

static int tok_heap_push(tok_heap *h, tok_pair p) {
    tok_pair *v = tok_grow(&h->sc->heap, &h->sc->heap_cap, h->n + 1, sizeof *v);
    if (!v) return -1;
    h->v = v;
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!tok_pair_before(&p, &v[parent])) break;
        v[i] = v[parent];
        i = parent;
    }
    v[i] = p;
    return 0;
}

static tok_pair tok_heap_pop(tok_heap *h) {
    tok_pair top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && tok_pair_before(&h->v[c + 1], &h->v[c])) c++;
        if (!tok_pair_before(&h->v[c], &last)) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n) h->v[i] = last;
    return top;
}

static int tok_bpe_try(const tok_tokenizer *t, tok_heap *h, const char *word, tok_bpe_sym *syms,
                       int32_t l, int32_t r, tok_bpe_pair_fn pair) {
    if (l < 0 || r < 0 || syms[l].frozen || syms[r].frozen) return 0;
    tok_pair p = {0, l, r, -1, syms[l].len + syms[r].len};
    if (!pair(t, word, &syms[l], &syms[r], &p.priority, &p.merged_id)) return 0;
    /* SentencePiece remembers the last pair that could form an unused piece, to split it again
     * when emitting: left start << 32 | left length << 16 | right length. */
    if (!t->hf && t->type[p.merged_id] == TOK_UNUSED && syms[l].len <= 0xFFFF && syms[r].len <= 0xFFFF &&
        tok_map_put(&h->sc->rev, (uint64_t)p.merged_id,
                    (uint64_t)syms[l].start << 32 | (uint64_t)syms[l].len << 16 | syms[r].len) != 0)
        return -1;
    return tok_heap_push(h, p);
}

int tok_bpe_syms_reserve(tok_scratch *sc, size_t n) {
    return tok_grow(&sc->syms, &sc->syms_cap, n, sizeof(tok_bpe_sym)) ? 0 : -1;
}

int tok_bpe_merge(const tok_tokenizer *t, tok_scratch *sc, const char *word, tok_bpe_sym *syms,
                  int32_t n, tok_bpe_pair_fn pair) {
    tok_heap h = {sc->heap, 0, sc};
    for (int32_t i = 1; i < n; i++)
        if (tok_bpe_try(t, &h, word, syms, i - 1, i, pair) != 0) return -1;
    while (h.n) {
        tok_pair top = tok_heap_pop(&h);
        tok_bpe_sym *l = &syms[top.left], *r = &syms[top.right];
        /* A stale pair: one side was merged away or grew since the pair was queued. */
        if (l->len == 0 || r->len == 0 || l->len + r->len != top.size) continue;
        l->len += r->len;
        l->id = top.merged_id;
        l->next = r->next;
        if (r->next >= 0) syms[r->next].prev = top.left;
        r->len = 0;
        if (tok_bpe_try(t, &h, word, syms, l->prev, top.left, pair) != 0 ||
            tok_bpe_try(t, &h, word, syms, top.left, l->next, pair) != 0)
            return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* SentencePiece encode                                                                        */

/* Length of the longest user-defined piece at s, or 0. */
static size_t tok_user_prefix(const tok_tokenizer *t, const char *s, size_t len) {
    size_t best = 0;
    uint32_t node = 0;
    for (size_t k = 0; k < len; k++) {
        if (!(node = tok_trie_step(&t->vocab, node, (uint8_t)s[k]))) break;
        int32_t id = t->vocab.value[node];
        if (id >= 0 && t->type[id] == TOK_USER) best = k + 1;
    }
    return best;
}

static bool tok_spm_pair(const tok_tokenizer *t, const char *word, const tok_bpe_sym *l,
                         const tok_bpe_sym *r, double *priority, int32_t *merged_id) {
    int32_t id = tok_trie_get(&t->vocab, word + l->start, l->len + r->len);
    if (id < 0) return false;
    int ty = t->type[id];
    if (ty != TOK_NORMAL && ty != TOK_USER && ty != TOK_UNUSED) return false;
    *priority = -t->score[id]; /* higher score merges first */
    *merged_id = id;
    return true;
}

/* Emits a merged symbol; an unused piece goes out as the two pieces it was formed from. */
static int tok_spm_resegment(const tok_tokenizer *t, const tok_scratch *sc, const char *word, uint32_t start,
                             uint32_t len, tok_emitter *e, tok_ids *out) {
    int32_t id = tok_trie_get(&t->vocab, word + start, len);
    uint64_t v;
    if (id >= 0 && t->type[id] == TOK_UNUSED && tok_map_get(&sc->rev, (uint64_t)id, &v)) {
        uint32_t ls = (uint32_t)(v >> 32), ll = (uint32_t)(v >> 16) & 0xFFFF, rl = (uint32_t)v & 0xFFFF;
        if (tok_spm_resegment(t, sc, word, ls, ll, e, out) != 0) return -1;
        return tok_spm_resegment(t, sc, word, ls + ll, rl, e, out);
    }
    return tok_emit(t, e, word + start, len, id, true, out);
}

int tok_spm_bpe(const tok_tokenizer *t, const char *s, size_t len, tok_ids *out) {
    tok_scratch *sc = out->scratch;
    if (len > INT32_MAX || tok_bpe_syms_reserve(sc, len) != 0) return -1;
    tok_bpe_sym *syms = sc->syms;
    int32_t n = 0;
    for (size_t pos = 0; pos < len;) {
        size_t user = t->has_user ? tok_user_prefix(t, s + pos, len - pos) : 0;
        size_t mblen = user ? user : tok_utf8_lead_len((uint8_t)s[pos]);
        if (mblen > len - pos) mblen = len - pos;
        syms[n] = (tok_bpe_sym){(uint32_t)pos, (uint32_t)mblen, -1, n - 1, -1, user > 0};
        if (n > 0) syms[n - 1].next = n;
        n++;
        pos += mblen;
    }
    if (n == 0) return 0;
    if (sc->rev.n) {
        memset(sc->rev.e, 0, sc->rev.cap * sizeof *sc->rev.e);
        sc->rev.n = 0;
    }
    if (tok_bpe_merge(t, sc, s, syms, n, tok_spm_pair) != 0) return -1;
    tok_emitter e = {0};
    for (int32_t i = 0; i >= 0; i = syms[i].next)
        if (tok_spm_resegment(t, sc, s, syms[i].start, syms[i].len, &e, out) != 0) return -1;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Vocabulary lookups                                                                          */

const char *tok_piece(const tok_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_vocab || t->type[id] == TOK_HOLE) return NULL;
    *len = t->piece_len[id];
    return t->blob + t->piece_off[id];
}

int32_t tok_piece_id(const tok_tokenizer *t, const char *piece, size_t len) {
    return tok_trie_get(&t->vocab, piece, len);
}
