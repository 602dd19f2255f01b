/* tk_mix.c — balance by label and a bounded shuffle buffer for token sequences (tk_mix.h). */
#include "tk_mix.h"

#include <stdlib.h>
#include <string.h>

#include "saeflow.h"

/* Sequences stored side by side: rows [cap][T], doc ids, positions, labels. */
typedef struct slots {
    int32_t *rows;
    int64_t *doc;
    int32_t *pos;
    int *label;
    int64_t cap;
} slots;

typedef struct pool {
    slots s;
    int64_t head, n; /* a FIFO ring */
} pool;

struct tk_mix {
    int64_t T;
    int n_labels;           /* balanced labels; 0: no balance */
    pool pools[TK_MIX_MAX_LABELS];
    tk_mix_counts counts[TK_MIX_MAX_LABELS];
    slots buf;              /* the shuffle buffer */
    int64_t buf_n;
    uint64_t rng;
    tk_mix_out out;
    void *ctx;
};

static uint64_t mix_rand(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, n) (multiply-high: no modulo bias worth speaking of for n << 2^64). */
static int64_t mix_below(tk_mix *m, int64_t n) {
    return (int64_t)(((unsigned __int128)mix_rand(&m->rng) * (uint64_t)n) >> 64);
}

static int slots_alloc(slots *s, int64_t cap, int64_t T) {
    if (cap <= 0) return SF_OK;
    if ((uint64_t)cap > SIZE_MAX / sizeof(int32_t) / (uint64_t)T) return sf_fail("shuffle/balance buffer too large");
    s->cap = cap;
    s->rows = malloc((size_t)cap * (size_t)T * sizeof *s->rows);
    s->doc = malloc((size_t)cap * sizeof *s->doc);
    s->pos = malloc((size_t)cap * sizeof *s->pos);
    s->label = malloc((size_t)cap * sizeof *s->label);
    if (!s->rows || !s->doc || !s->pos || !s->label)
        return sf_fail("out of memory for %lld buffered sequences of %lld tokens", (long long)cap, (long long)T);
    return SF_OK;
}

static void slots_put(tk_mix *m, slots *s, int64_t i, const int32_t *row, int64_t doc, int32_t pos, int label) {
    memcpy(s->rows + i * m->T, row, (size_t)m->T * sizeof *row);
    s->doc[i] = doc;
    s->pos[i] = pos;
    s->label[i] = label;
}

static int emit(tk_mix *m, const int32_t *row, int64_t doc, int32_t pos, int label) {
    m->counts[label].out++;
    return m->out(m->ctx, row, doc, pos, label);
}

static int emit_slot(tk_mix *m, const slots *s, int64_t i) {
    return emit(m, s->rows + i * m->T, s->doc[i], s->pos[i], s->label[i]);
}

/* Into the shuffle buffer; once it is full, a random one (maybe this one) goes out. */
static int shuffle_add(tk_mix *m, const int32_t *row, int64_t doc, int32_t pos, int label) {
    if (m->buf.cap == 0) return emit(m, row, doc, pos, label);
    if (m->buf_n < m->buf.cap) {
        slots_put(m, &m->buf, m->buf_n++, row, doc, pos, label);
        return SF_OK;
    }
    int64_t j = mix_below(m, m->buf.cap + 1);
    if (j == m->buf.cap) return emit(m, row, doc, pos, label);
    if (emit_slot(m, &m->buf, j) != SF_OK) return SF_ERR;
    slots_put(m, &m->buf, j, row, doc, pos, label);
    return SF_OK;
}

tk_mix *tk_mix_new(int64_t T, int n_balance, int64_t pool_size, int64_t buffer, uint64_t seed, tk_mix_out out,
                   void *ctx) {
    if (n_balance == 1 || n_balance < 0 || n_balance > TK_MIX_MAX_LABELS) {
        sf_fail("balance: %d labels (give two or more, at most %d)", n_balance, TK_MIX_MAX_LABELS);
        return NULL;
    }
    if (n_balance && pool_size < 1) {
        sf_fail("balance_pool must be at least 1");
        return NULL;
    }
    if (buffer < 0) {
        sf_fail("shuffle_buffer must be >= 0");
        return NULL;
    }
    tk_mix *m = calloc(1, sizeof *m);
    if (!m) {
        sf_fail("out of memory");
        return NULL;
    }
    m->T = T;
    m->n_labels = n_balance;
    m->rng = seed;
    m->out = out;
    m->ctx = ctx;
    for (int l = 0; l < m->n_labels; l++)
        if (slots_alloc(&m->pools[l].s, pool_size, T) != SF_OK) goto fail;
    if (slots_alloc(&m->buf, buffer, T) != SF_OK) goto fail;
    return m;
fail:
    tk_mix_free(m);
    return NULL;
}

int tk_mix_add(tk_mix *m, const int32_t *row, int64_t doc_id, int32_t pos, int label) {
    m->counts[label].in++;
    if (!m->n_labels) return shuffle_add(m, row, doc_id, pos, label);
    pool *p = &m->pools[label];
    if (p->n == p->s.cap) { /* the input runs long on this label: keep the earlier ones */
        m->counts[label].dropped_full++;
        return SF_OK;
    }
    slots_put(m, &p->s, (p->head + p->n++) % p->s.cap, row, doc_id, pos, label);
    for (;;) { /* one of each label moves on while every label has one */
        for (int l = 0; l < m->n_labels; l++)
            if (m->pools[l].n == 0) return SF_OK;
        for (int l = 0; l < m->n_labels; l++) {
            pool *q = &m->pools[l];
            int64_t i = q->head;
            if (shuffle_add(m, q->s.rows + i * m->T, q->s.doc[i], q->s.pos[i], l) != SF_OK) return SF_ERR;
            q->head = (q->head + 1) % q->s.cap;
            q->n--;
        }
    }
}

int tk_mix_finish(tk_mix *m) {
    for (int l = 0; l < m->n_labels; l++) {
        m->counts[l].dropped_surplus += m->pools[l].n;
        m->pools[l].n = 0;
    }
    while (m->buf_n > 0) { /* the rest in a random order */
        int64_t j = mix_below(m, m->buf_n);
        if (emit_slot(m, &m->buf, j) != SF_OK) return SF_ERR;
        int64_t last = --m->buf_n;
        if (j != last)
            slots_put(m, &m->buf, j, m->buf.rows + last * m->T, m->buf.doc[last], m->buf.pos[last],
                      m->buf.label[last]);
    }
    return SF_OK;
}

tk_mix_counts tk_mix_label_counts(const tk_mix *m, int label) { return m->counts[label]; }

static void slots_free(slots *s) {
    free(s->rows);
    free(s->doc);
    free(s->pos);
    free(s->label);
}

void tk_mix_free(tk_mix *m) {
    if (!m) return;
    for (int l = 0; l < TK_MIX_MAX_LABELS; l++) slots_free(&m->pools[l].s);
    slots_free(&m->buf);
    free(m);
}
