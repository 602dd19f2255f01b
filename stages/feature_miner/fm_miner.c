/* fm_miner.c — see fm_miner.h. */
#include "fm_miner.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow.h"

#define FM_MAX_LABELS 4096

typedef struct fm_hit {
    int32_t feat, pos;
    float val;
} fm_hit;

fm_miner *fm_miner_new(const fm_miner_cfg *cfg) {
    if (cfg->n_features <= 0 || cfg->top_n <= 0 || cfg->reservoir < 0 || cfg->hist_bins < 2 ||
        cfg->hist_bins % 2 || !(cfg->frac >= 0 && cfg->frac <= 1) ||
        (cfg->sampling == FM_SAMPLING_PAPER) != (cfg->known_max != NULL)) {
        sf_fail("feature miner: bad configuration (features %d, top_n %d, reservoir %d, bins %d, frac %g)",
                cfg->n_features, cfg->top_n, cfg->reservoir, cfg->hist_bins, cfg->frac);
        return NULL;
    }
    fm_miner *m = sf_zalloc("the feature miner", 1, sizeof *m);
    if (!m) return NULL;
    m->cfg = *cfg;
    m->rng = cfg->seed ? cfg->seed : 0x9E3779B97F4A7C15ull;
    if (!(m->f = sf_zalloc("per-feature state", (size_t)cfg->n_features, sizeof *m->f)) ||
        !(m->merge_buf = sf_zalloc("the reservoir merge buffer", 2 * (size_t)cfg->reservoir + 1, sizeof *m->merge_buf))) {
        fm_miner_free(m);
        return NULL;
    }
    return m;
}

static void seq_release(fm_miner *m, fm_seq *s) {
    if (--s->refs) return;
    m->bytes -= sizeof *s + (uint64_t)s->T * sizeof *s->tokens;
    free(s->tokens);
    free(s);
}

static void example_release(fm_miner *m, fm_example *e) {
    m->bytes -= (uint64_t)e->nnz * (sizeof *e->pos + sizeof *e->val);
    free(e->pos); /* val lives in the same block */
    seq_release(m, e->seq);
    e->seq = NULL;
}

/* Interval b's examples: the intervals share one array, reservoir slots each. */
static fm_example *interval_ex(const fm_miner *m, const fm_feature *f, int b) {
    return f->res + (size_t)b * m->cfg.reservoir;
}

void fm_miner_free(fm_miner *m) {
    if (!m) return;
    for (int i = 0; m->f && i < m->cfg.n_features; i++) {
        fm_feature *f = &m->f[i];
        for (int j = 0; j < f->n_top; j++) example_release(m, &f->top[j]);
        for (int b = 0; b < f->n_buckets; b++)
            for (int j = 0; j < f->bk[b].n; j++) example_release(m, &interval_ex(m, f, b)[j]);
        free(f->top);
        free(f->res);
        free(f->bk);
        free(f->hist.counts);
    }
    for (int i = 0; i < m->n_labels; i++) free(m->labels[i]);
    free(m->labels);
    free(m->f);
    free(m->merge_buf);
    free(m->hits);
    free(m->pos_buf);
    free(m->val_buf);
    free(m->pre_pos);
    free(m->pre_val);
    free(m);
}

/* splitmix64: the state's next value, mixed. */
static uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t rng_next(fm_miner *m) {
    uint64_t z = mix64(m->rng);
    m->rng += 0x9E3779B97F4A7C15ull;
    return z;
}

uint64_t fm_order_key(uint64_t seed, int64_t doc_id, int32_t pos, uint64_t seq_no) {
    uint64_t doc = doc_id >= 0 ? (uint64_t)doc_id : seq_no;
    uint32_t at = doc_id >= 0 ? (uint32_t)pos : 0;
    return mix64(mix64(mix64(seed) ^ doc) ^ at);
}

static int hist_add(fm_miner *m, fm_hist *h, float v) {
    int nb = m->cfg.hist_bins;
    if (!h->counts) {
        if (!(h->counts = sf_zalloc("a histogram", (size_t)nb, sizeof *h->counts))) return SF_ERR;
        h->width = 2.0 * v / nb; /* the first value lands mid-range */
        m->bytes += (uint64_t)nb * sizeof *h->counts;
    }
    while (v >= h->width * nb) { /* double the range: merge pairs of bins */
        for (int i = 0; i < nb / 2; i++) h->counts[i] = h->counts[2 * i] + h->counts[2 * i + 1];
        memset(h->counts + nb / 2, 0, (size_t)(nb / 2) * sizeof *h->counts);
        h->width *= 2;
    }
    int b = (int)(v / h->width);
    h->counts[b < nb ? b : nb - 1]++;
    return SF_OK;
}

/* a ranks below b: the heap's root is the worst example kept. */
static int worse(const fm_example *a, double key, uint64_t seq_no) {
    return a->key < key || (a->key == key && a->seq_no > seq_no);
}

static void heap_swap(fm_example *h, int i, int j) {
    fm_example t = h[i];
    h[i] = h[j];
    h[j] = t;
}

static void heap_up(fm_example *h, int i) {
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!worse(&h[i], h[p].key, h[p].seq_no)) break;
        heap_swap(h, i, p);
        i = p;
    }
}

static void heap_down(fm_example *h, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && worse(&h[l], h[w].key, h[w].seq_no)) w = l;
        if (r < n && worse(&h[r], h[w].key, h[w].seq_no)) w = r;
        if (w == i) return;
        heap_swap(h, i, w);
        i = w;
    }
}

static int intern_label(fm_miner *m, const char *s, int len) {
    for (int i = 0; i < m->n_labels; i++)
        if ((int)strlen(m->labels[i]) == len && memcmp(m->labels[i], s, (size_t)len) == 0) return i;
    if (m->n_labels >= FM_MAX_LABELS) return sf_fail("feature miner: more than %d distinct corpus labels", FM_MAX_LABELS);
    char *copy = sf_alloc("a corpus label", (size_t)len + 1, 1);
    char **labels = copy ? sf_realloc(m->labels, "the corpus label table", (size_t)m->n_labels + 1, sizeof *m->labels) : NULL;
    if (!labels) {
        free(copy);
        return SF_ERR;
    }
    m->labels = labels;
    memcpy(copy, s, (size_t)len);
    copy[len] = 0;
    m->labels[m->n_labels] = copy;
    return m->n_labels++;
}

static int cmp_hit(const void *a, const void *b) {
    const fm_hit *x = a, *y = b;
    if (x->feat != y->feat) return x->feat < y->feat ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

/* The sequence being added, stored on first use and shared. */
typedef struct fm_cur {
    const int32_t *tokens;
    int T;
    int64_t doc_id;
    int32_t pos;
    int label;
    uint64_t seq_no;
    uint64_t order; /* fm_order_key */
    const float *pre; /* [T][n_features] or NULL */
    fm_seq *seq;
} fm_cur;

/* A new example in *e (the caller releases the one it replaces only after this succeeded, so a
 * failed allocation leaves every kept example intact): SF_ERR with nothing allocated. */
static int example_new(fm_miner *m, fm_example *e, fm_cur *c, double key, float peak, int peak_pos,
                       const int32_t *pos, const float *val, int nnz) {
    size_t bytes = (size_t)nnz * (sizeof *e->pos + sizeof *e->val);
    int32_t *block = sf_alloc("an example's values", bytes, 1); /* pos, then val */
    if (!block) return SF_ERR;
    if (!c->seq) {
        fm_seq *seq = sf_zalloc("a stored sequence", 1, sizeof *seq);
        if (seq && !(seq->tokens = sf_alloc("a stored sequence's tokens", (size_t)c->T, sizeof *seq->tokens))) {
            free(seq);
            seq = NULL;
        }
        if (!seq) {
            free(block);
            return SF_ERR;
        }
        c->seq = seq;
        memcpy(c->seq->tokens, c->tokens, (size_t)c->T * sizeof *c->tokens);
        c->seq->T = c->T;
        c->seq->doc_id = c->doc_id;
        c->seq->pos = c->pos;
        c->seq->label = c->label;
        m->bytes += sizeof *c->seq + (uint64_t)c->T * sizeof *c->tokens;
    }
    c->seq->refs++;
    e->key = key;
    e->peak = peak;
    e->peak_pos = peak_pos;
    e->seq_no = c->seq_no;
    e->seq = c->seq;
    e->nnz = nnz;
    e->pos = block;
    e->val = (float *)(e->pos + nnz);
    memcpy(e->pos, pos, (size_t)nnz * sizeof *pos);
    memcpy(e->val, val, (size_t)nnz * sizeof *val);
    m->bytes += bytes;
    return SF_OK;
}

/* Interval samples: bottom-k per interval on (key, seq_no). */
static int key_less(const fm_example *a, const fm_example *b) {
    return a->key < b->key || (a->key == b->key && a->seq_no < b->seq_no);
}

static int cmp_key(const void *a, const void *b) { return key_less(a, b) ? -1 : key_less(b, a); }

static int interval_of(const fm_feature *f, float peak) {
    int b = (int)(peak / f->scale * f->n_buckets);
    return b < f->n_buckets ? b : f->n_buckets - 1;
}

/* One-pass intervals: doubles the scale, so bucket b of the new one is buckets 2b and 2b+1 of the
 * old; the bottom-k of their union is the bottom-k of their two bottom-k's. */
static void interval_double(fm_miner *m, fm_feature *f) {
    int R = m->cfg.reservoir, half = f->n_buckets / 2;
    for (int b = 0; b < half; b++) { /* b <= 2b: slot b is written after buckets 2b, 2b+1 are read */
        fm_bucket *lo = &f->bk[2 * b], *hi = &f->bk[2 * b + 1];
        int n = 0;
        for (int j = 0; j < lo->n; j++) m->merge_buf[n++] = interval_ex(m, f, 2 * b)[j];
        for (int j = 0; j < hi->n; j++) m->merge_buf[n++] = interval_ex(m, f, 2 * b + 1)[j];
        qsort(m->merge_buf, (size_t)n, sizeof *m->merge_buf, cmp_key);
        int keep = n < R ? n : R;
        for (int j = keep; j < n; j++) example_release(m, &m->merge_buf[j]);
        f->n_res -= n - keep;
        memcpy(interval_ex(m, f, b), m->merge_buf, (size_t)keep * sizeof *m->merge_buf);
        f->bk[b] = (fm_bucket){lo->seqs + hi->seqs, keep};
    }
    memset(f->bk + half, 0, (size_t)half * sizeof *f->bk);
    f->scale *= 2;
}

static int interval_add(fm_miner *m, int fi, fm_cur *c, float peak, int peak_pos, const int32_t *pos,
                        const float *val, int nnz) {
    fm_feature *f = &m->f[fi];
    int R = m->cfg.reservoir;
    if (!f->bk) {
        float known = m->cfg.known_max ? m->cfg.known_max[fi] : 0;
        if (known > 0) {
            f->n_buckets = FM_INTERVALS;
            f->scale = known;
        } else { /* a feature dead in the earlier pass falls back to one-pass buckets */
            int e;
            frexp(peak, &e); /* 2^(e-1) <= peak < 2^e */
            f->n_buckets = 2 * FM_INTERVALS;
            f->scale = ldexp(1, e);
        }
        /* f->bk stays NULL (not yet allocated) unless both succeed */
        f->res = sf_zalloc("the interval samples", (size_t)f->n_buckets * (size_t)R, sizeof *f->res);
        f->bk = f->res ? sf_zalloc("the activation intervals", (size_t)f->n_buckets, sizeof *f->bk) : NULL;
        if (!f->bk) {
            free(f->res);
            f->res = NULL;
            f->n_buckets = 0; /* none to free or write */
            return sf_fail("feature %d: %s (reservoir = %d examples per interval: lower it)", fi, sf_last_error(), R);
        }
        m->bytes += (uint64_t)f->n_buckets * (sizeof *f->bk + (uint64_t)R * sizeof *f->res);
    }
    while (f->n_buckets == 2 * FM_INTERVALS && peak >= f->scale) interval_double(m, f);
    int b = interval_of(f, peak);
    fm_bucket *bk = &f->bk[b];
    fm_example *ex = interval_ex(m, f, b);
    fm_example cand = {.key = (double)(rng_next(m) >> 11) * 0x1p-53, .seq_no = c->seq_no};
    bk->seqs++;
    int slot = bk->n;
    if (bk->n == R) { /* full: replace the largest key if the new one is smaller */
        slot = 0;
        for (int j = 1; j < R; j++)
            if (key_less(&ex[slot], &ex[j])) slot = j;
        if (!key_less(&cand, &ex[slot])) return SF_OK;
    }
    fm_example e;
    if (example_new(m, &e, c, cand.key, peak, peak_pos, pos, val, nnz) != SF_OK)
        return sf_fail("feature %d: %s", fi, sf_last_error());
    if (slot < bk->n) example_release(m, &ex[slot]);
    else bk->n++, f->n_res++;
    ex[slot] = e;
    return SF_OK;
}

/* The values an example of feature fi stores under FM_SAMPLING_PAPER: ReLU of its pre-activation
 * at every token (pre [T][n], stride n), kept sparse where positive (and finite). */
static int preact_values(const fm_miner *m, int fi, const float *pre, int T, int32_t *pos, float *val) {
    int nnz = 0;
    for (int t = 0; t < T; t++) {
        float a = pre[(size_t)t * (size_t)m->cfg.n_features + (size_t)fi];
        if (a > 0 && isfinite(a)) pos[nnz] = t, val[nnz++] = a;
    }
    return nnz;
}

/* Feature `fi` fired (top-k output > 0) at nnz tokens of the current sequence. */
static int feature_add(fm_miner *m, int fi, fm_cur *c, const int32_t *pos, const float *val, int nnz) {
    fm_feature *f = &m->f[fi];
    float peak = val[0];
    int peak_pos = pos[0];
    for (int j = 0; j < nnz; j++) {
        if (val[j] > peak) peak = val[j], peak_pos = pos[j];
        f->sum += val[j];
        if (hist_add(m, &f->hist, val[j]) != SF_OK) return sf_fail("feature %d: %s", fi, sf_last_error());
    }
    if (peak > f->max) f->max = peak;
    f->fired += (uint64_t)nnz;
    f->seqs++;

    int candidate = 1;
    double key = peak;
    if (m->cfg.sampling == FM_SAMPLING_PAPER) {
        candidate = peak > fm_miner_threshold(m, fi);
        key = -(double)(c->order >> 11); /* the heap keeps the largest keys: the earliest in shuffled order */
        nnz = preact_values(m, fi, c->pre, c->T, m->pre_pos, m->pre_val);
        pos = m->pre_pos, val = m->pre_val;
    }
    if (candidate) {
        int cap = m->cfg.top_n;
        if (!f->top) {
            if (!(f->top = sf_zalloc("the top examples", (size_t)cap, sizeof *f->top)))
                return sf_fail("feature %d: %s (top_n = %d: lower it)", fi, sf_last_error(), cap);
            m->bytes += (uint64_t)cap * sizeof *f->top;
        }
        int full = f->n_top == cap;
        fm_example e;
        if (!full || worse(&f->top[0], key, c->seq_no)) {
            if (example_new(m, &e, c, key, peak, peak_pos, pos, val, nnz) != SF_OK)
                return sf_fail("feature %d: %s", fi, sf_last_error());
            if (full) {
                example_release(m, &f->top[0]);
                f->top[0] = e;
                heap_down(f->top, f->n_top, 0);
            } else {
                f->top[f->n_top] = e;
                heap_up(f->top, f->n_top++);
            }
        }
    }

    if (m->cfg.reservoir > 0) return interval_add(m, fi, c, peak, peak_pos, pos, val, nnz);
    return SF_OK;
}

int fm_miner_add(fm_miner *m, const int32_t *tokens, int T, const int32_t *idx, const float *val, int k,
                 const float *pre, int64_t doc_id, int32_t pos, const char *label, int label_len) {
    if (T <= 0 || k <= 0) return sf_fail("feature miner: empty sequence (T %d, k %d)", T, k);
    if (m->cfg.sampling == FM_SAMPLING_PAPER && !pre)
        return sf_fail("feature miner: the paper's sampling needs the pre-activations of every sequence");
    size_t need = (size_t)T * (size_t)k;
    if (need > m->hits_cap) { /* scratch: nothing to keep */
        free(m->hits);
        m->hits_cap = 0;
        if (!(m->hits = sf_alloc("a sequence's latents", need, sizeof *m->hits))) return SF_ERR;
        m->hits_cap = need;
    }
    size_t n = 0;
    for (size_t i = 0; i < need; i++) {
        if (!isfinite(val[i])) { /* NaN or Inf from non-finite activations: would break max and histogram */
            m->nonfinite++;
            continue;
        }
        if (!(val[i] > 0)) continue;
        if (idx[i] < 0 || idx[i] >= m->cfg.n_features)
            return sf_fail("feature miner: latent index %d out of range [0, %d)", idx[i], m->cfg.n_features);
        m->hits[n++] = (fm_hit){idx[i], (int32_t)(i / (size_t)k), val[i]};
    }
    qsort(m->hits, n, sizeof *m->hits, cmp_hit);
    if (T > m->buf_cap) {
        free(m->pos_buf), free(m->val_buf), free(m->pre_pos), free(m->pre_val);
        m->buf_cap = 0;
        m->pos_buf = sf_alloc("per-token scratch", (size_t)T, sizeof *m->pos_buf);
        m->val_buf = sf_alloc("per-token scratch", (size_t)T, sizeof *m->val_buf);
        m->pre_pos = sf_alloc("per-token scratch", (size_t)T, sizeof *m->pre_pos);
        m->pre_val = sf_alloc("per-token scratch", (size_t)T, sizeof *m->pre_val);
        if (!m->pos_buf || !m->val_buf || !m->pre_pos || !m->pre_val) return SF_ERR;
        m->buf_cap = T;
    }
    int li = intern_label(m, label ? label : "", label ? label_len : 0);
    if (li < 0) return SF_ERR;
    fm_cur c = {tokens, T, doc_id, pos, li, m->sequences,
                fm_order_key(m->cfg.seed, doc_id, pos, m->sequences), pre, NULL};
    for (size_t i = 0; i < n;) {
        int nnz = 0;
        size_t j = i;
        for (; j < n && m->hits[j].feat == m->hits[i].feat; j++) {
            if (nnz > 0 && m->pos_buf[nnz - 1] == m->hits[j].pos) { /* a latent listed twice at one token */
                if (m->hits[j].val > m->val_buf[nnz - 1]) m->val_buf[nnz - 1] = m->hits[j].val;
                continue;
            }
            m->pos_buf[nnz] = m->hits[j].pos;
            m->val_buf[nnz++] = m->hits[j].val;
        }
        if (feature_add(m, m->hits[i].feat, &c, m->pos_buf, m->val_buf, nnz) != SF_OK) return SF_ERR;
        i = j;
    }
    m->tokens += (uint64_t)T;
    m->sequences++;
    return SF_OK;
}

float fm_miner_threshold(const fm_miner *m, int i) {
    return (float)(m->cfg.frac * (m->cfg.known_max ? m->cfg.known_max[i] : m->f[i].max));
}

static int cmp_example(const void *a, const void *b) {
    const fm_example *x = a, *y = b;
    if (x->peak != y->peak) return x->peak > y->peak ? -1 : 1;
    return (x->seq_no > y->seq_no) - (x->seq_no < y->seq_no);
}

static int cmp_heap_key(const void *a, const void *b) { /* best first: the heap's own order, reversed */
    const fm_example *x = a, *y = b;
    return worse(y, x->key, x->seq_no) ? -1 : worse(x, y->key, y->seq_no) ? 1 : 0;
}

fm_example *fm_miner_interval(const fm_miner *m, int i, int b, double *lo, double *hi) {
    const fm_feature *f = &m->f[i];
    *lo = f->scale * b / f->n_buckets;
    *hi = f->scale * (b + 1) / f->n_buckets;
    return interval_ex(m, f, b);
}

void fm_miner_sort(fm_miner *m, int i) {
    fm_feature *f = &m->f[i];
    if (f->n_top)
        qsort(f->top, (size_t)f->n_top, sizeof *f->top, m->cfg.sampling == FM_SAMPLING_PAPER ? cmp_heap_key : cmp_example);
    for (int b = 0; b < f->n_buckets; b++)
        qsort(interval_ex(m, f, b), (size_t)f->bk[b].n, sizeof *f->res, cmp_example);
}

uint64_t fm_miner_bytes(const fm_miner *m) { return m->bytes; }
