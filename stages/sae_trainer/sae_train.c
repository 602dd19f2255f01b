/* sae_train.c — one TopK-SAE training step with sparse kernels.
 *
 * Per step on a batch of B rows (d wide, n latents, k active):
 *   1. encoder: xc = x - b_dec; pre = xc W_enc^T + b_enc (dense sgemm, a chunk of rows at a time);
 *      keep only the top-k (index, value) pairs per row, plus the AuxK top-k_aux among dead latents.
 *   2. decoder as a gather of k rows: xhat = b_dec + sum_j val_j W_dec[idx_j]; g = dL/dxhat.
 *   3. dz = W_dec[idx] . g (the k active latents only, right after the row's decode); b_enc's
 *      gradient per latent; b_dec's = sum_r g_r - W_enc^T gb_enc (through xhat and x - b_dec).
 *   4. one pass over latents (entries grouped by latent, counting sort): each latent's gradient rows
 *      for W_enc / W_dec / b_enc from the rows it fired on, then Adam and the decoder renorm of that
 *      row, fused, so no dense n x d gradient is ever materialised.
 * Everything is deterministic (no floating-point reduction depends on thread timing), so a resumed
 * run reproduces an uninterrupted one bit for bit.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow.h"
#include "sf_safetensors.h"
#include "sae_internal.h"

typedef struct sae_adam {
    float *m, *v; /* first and second moments, same shape as the parameter */
} sae_adam;

/* Adam's scalars for one step (see sae_adam_update). */
typedef struct sae_adam_coef {
    float b1, omb1, b2, omb2, step_size, bc2_sqrt, eps;
} sae_adam_coef;

struct sae_trainer {
    sae_model *m;
    sae_train_opts o;
    int max_batch;
    int kk; /* entries per row: k main + k_aux */
    int64_t step, tokens;

    sae_adam a_W_enc, a_b_enc, a_W_dec, a_b_dec;
    int64_t *since_fired; /* [n] tokens since each latent last fired */
    uint8_t *dead;        /* [n] this step's dead mask */

    /* Batch work buffers, bounded by max_batch. */
    float *xc;       /* [B][d] x - b_dec */
    float *pre;      /* [chunk][n] dense pre-activations of one chunk */
    int chunk;       /* rows per encoder sgemm */
    int32_t *idx;    /* [B][kk] active latents (main then aux), -1 unused */
    float *val;      /* [B][kk] their activations */
    float *dz;       /* [B][kk] gradient w.r.t. those pre-activations */
    float *g;        /* [B][d] dL/dxhat */
    float *ga;       /* [B][d] dL/d(aux reconstruction) */
    float *h;        /* [B][d] xhat */
    double *row_err, *row_cos, *row_var, *row_aux; /* [B] per-row statistics */
    int32_t *lat_start;   /* [n+1] CSR of entries grouped by latent */
    int32_t *lat_entries; /* [B*kk] entry = row * kk + slot */
    int nthreads;
    float *tls;           /* [nthreads][2d] per-thread gradient rows */
    float *gb_enc;        /* [n] gradients of the biases this step */
    float *gb_dec;        /* [d] */
    double *mean;         /* [d] batch mean (statistics) */
    /* The step in progress, for the parallel jobs. */
    struct {
        const float *x;
        int B, r0, k_aux;
        int backward; /* training: the decode job also runs each row's backward */
        double aux_scale;
        const double *mean;
        sae_adam_coef ac;
    } cur;
    /* Dense gradients of the last step, kept only with opts.keep_grads (tests). */
    float *gW_enc, *gW_dec;
};

void sae_train_opts_default(sae_train_opts *o) {
    memset(o, 0, sizeof *o);
    o->lr = 1e-3;
    o->warmup_steps = 1000;
    o->beta1 = 0.9;
    o->beta2 = 0.999;
    o->eps = 6.25e-10;
    o->aux_coef = 1.0 / 32;
    o->dead_tokens = 10000000;
}

static int sae_adam_alloc(sae_adam *a, size_t count) {
    a->m = sae_alloc_floats(count);
    a->v = sae_alloc_floats(count);
    return a->m && a->v ? SF_OK : SF_ERR;
}

static void sae_adam_free(sae_adam *a) {
    free(a->m);
    free(a->v);
}

sae_trainer *sae_trainer_new(sae_model *m, const sae_train_opts *o, int max_batch) {
    if (max_batch < 1 || max_batch > (1 << 20)) {
        sf_fail("sae trainer: bad batch size %d", max_batch);
        return NULL;
    }
    if (o->k_aux < 0 || o->k_aux > m->n || o->k_aux > 4096) {
        sf_fail("sae trainer: bad k_aux %d", o->k_aux);
        return NULL;
    }
    if ((int64_t)max_batch * (m->k + o->k_aux) > INT32_MAX) {
        sf_fail("sae trainer: batch %d x (k + k_aux) too large", max_batch);
        return NULL;
    }
    sae_trainer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    size_t n = (size_t)m->n, d = (size_t)m->d, B = (size_t)max_batch;
    t->m = m;
    t->o = *o;
    t->max_batch = max_batch;
    t->kk = m->k + o->k_aux;
    t->nthreads = sae_par_threads();
    int ok = sae_adam_alloc(&t->a_W_enc, n * d) == SF_OK && sae_adam_alloc(&t->a_b_enc, n) == SF_OK &&
             sae_adam_alloc(&t->a_W_dec, n * d) == SF_OK && sae_adam_alloc(&t->a_b_dec, d) == SF_OK;
    t->since_fired = calloc(n, sizeof *t->since_fired);
    t->dead = calloc(n, 1);
    t->xc = sae_alloc_floats(B * d);
    t->chunk = sae_chunk_rows(m->n) < max_batch ? sae_chunk_rows(m->n) : max_batch;
    t->pre = sae_alloc_floats((size_t)t->chunk * n);
    t->idx = malloc(B * t->kk * sizeof *t->idx);
    t->val = sae_alloc_floats(B * t->kk);
    t->dz = sae_alloc_floats(B * t->kk);
    t->g = sae_alloc_floats(B * d);
    t->ga = o->k_aux ? sae_alloc_floats(B * d) : NULL;
    t->h = sae_alloc_floats(B * d);
    t->row_err = calloc(B, sizeof(double));
    t->row_cos = calloc(B, sizeof(double));
    t->row_var = calloc(B, sizeof(double));
    t->row_aux = calloc(B, sizeof(double));
    t->lat_start = calloc(n + 1, sizeof *t->lat_start);
    t->lat_entries = malloc(B * t->kk * sizeof *t->lat_entries);
    t->tls = sae_alloc_floats((size_t)t->nthreads * 2 * d);
    t->gb_dec = sae_alloc_floats(d);
    t->gb_enc = sae_alloc_floats(n);
    t->mean = calloc(d, sizeof(double));
    if (o->keep_grads) {
        t->gW_enc = sae_alloc_floats(n * d);
        t->gW_dec = sae_alloc_floats(n * d);
        ok = ok && t->gW_enc && t->gW_dec;
    }
    ok = ok && t->since_fired && t->dead && t->xc && t->pre && t->idx && t->val && t->dz && t->g &&
         (t->ga || !o->k_aux) && t->h && t->row_err && t->row_cos && t->row_var && t->row_aux &&
         t->lat_start && t->lat_entries && t->tls && t->gb_dec && t->gb_enc && t->mean;
    if (!ok) {
        sae_trainer_free(t);
        sf_fail("sae trainer: out of memory (d=%d n=%d batch=%d)", m->d, m->n, max_batch);
        return NULL;
    }
    return t;
}

void sae_trainer_free(sae_trainer *t) {
    if (!t) return;
    sae_adam_free(&t->a_W_enc);
    sae_adam_free(&t->a_b_enc);
    sae_adam_free(&t->a_W_dec);
    sae_adam_free(&t->a_b_dec);
    free(t->since_fired);
    free(t->dead);
    free(t->xc);
    free(t->pre);
    free(t->idx);
    free(t->val);
    free(t->dz);
    free(t->g);
    free(t->ga);
    free(t->h);
    free(t->row_err);
    free(t->row_cos);
    free(t->row_var);
    free(t->row_aux);
    free(t->lat_start);
    free(t->lat_entries);
    free(t->tls);
    free(t->gb_dec);
    free(t->mean);
    free(t->gW_enc);
    free(t->gW_dec);
    free(t->gb_enc);
    free(t);
}

int64_t sae_trainer_step(const sae_trainer *t) { return t->step; }
int64_t sae_trainer_tokens(const sae_trainer *t) { return t->tokens; }

void sae_trainer_grads(const sae_trainer *t, const float **gW_enc, const float **gb_enc,
                       const float **gW_dec, const float **gb_dec) {
    *gW_enc = t->gW_enc;
    *gb_enc = t->gb_enc;
    *gW_dec = t->gW_dec;
    *gb_dec = t->gb_dec;
}

/* The learning rate of 0-based step s: Hugging Face's constant schedule with linear warmup (so the
 * very first step has lr 0, as in the paper's code), then an optional linear decay to 0. */
static double sae_lr_at(const sae_train_opts *o, int64_t s) {
    double f = 1.0;
    if (s < o->warmup_steps) f = (double)s / (double)o->warmup_steps;
    if (o->decay_steps > 0 && s >= o->decay_start) {
        double left = 1.0 - (double)(s - o->decay_start) / (double)o->decay_steps;
        f *= left > 0 ? left : 0;
    }
    return o->lr * f;
}


static sae_adam_coef sae_adam_coef_at(const sae_train_opts *o, double lr, int64_t t) {
    sae_adam_coef c;
    double bc1 = 1.0 - pow(o->beta1, (double)t), bc2 = 1.0 - pow(o->beta2, (double)t);
    c.b1 = (float)o->beta1;
    c.omb1 = (float)(1.0 - o->beta1);
    c.b2 = (float)o->beta2;
    c.omb2 = (float)(1.0 - o->beta2);
    c.step_size = (float)(lr / bc1);
    c.bc2_sqrt = (float)sqrt(bc2);
    c.eps = (float)o->eps;
    return c;
}

/* torch.optim.Adam's update, element for element in float32 like its CPU kernel. */
static inline void sae_adam_update(float *restrict p, float *restrict m, float *restrict v,
                            const float *restrict g, size_t count, const sae_adam_coef *c) {
    for (size_t i = 0; i < count; i++) {
        m[i] = m[i] * c->b1 + g[i] * c->omb1;
        v[i] = v[i] * c->b2 + c->omb2 * (g[i] * g[i]);
        float denom = sqrtf(v[i]) / c->bc2_sqrt + c->eps;
        p[i] = p[i] - c->step_size * (m[i] / denom);
    }
}

/* Dot product with 16 independent partial sums: vectorises without -ffast-math and always sums
 * in the same order (deterministic). */
static inline float sae_dot(const float *restrict a, const float *restrict b, int d) {
    float acc[16] = {0};
    int c = 0;
    for (; c + 16 <= d; c += 16)
        for (int u = 0; u < 16; u++) acc[u] += a[c + u] * b[c + u];
    float s = 0;
    for (int u = 0; u < 16; u++) s += acc[u];
    for (; c < d; c++) s += a[c] * b[c];
    return s;
}

/* Asks for a d-float row ahead of its use: the gathers of decoder/encoder rows are latency bound. */
static inline void sae_prefetch_row(const float *row, int d) {
    for (int c = 0; c < d; c += 16) __builtin_prefetch(row + c);
}

/* g = gscale (xhat - x) and the row's sums |e|^2, |x|^2, |xhat|^2, x.xhat, in 16 float lanes
 * (vectorised, fixed order) combined in double. */
static inline void sae_row_sums(const float *restrict x, const float *restrict xh, float *restrict g, float gscale,
                         int d, double out[4]) {
    float ee[16] = {0}, xx[16] = {0}, hh[16] = {0}, xh_[16] = {0};
    int c = 0;
    for (; c + 16 <= d; c += 16)
        for (int u = 0; u < 16; u++) {
            float e = xh[c + u] - x[c + u];
            g[c + u] = gscale * e;
            ee[u] += e * e;
            xx[u] += x[c + u] * x[c + u];
            hh[u] += xh[c + u] * xh[c + u];
            xh_[u] += x[c + u] * xh[c + u];
        }
    for (int i = 0; i < 4; i++) out[i] = 0;
    for (int u = 0; u < 16; u++) out[0] += ee[u], out[1] += xx[u], out[2] += hh[u], out[3] += xh_[u];
    for (; c < d; c++) {
        float e = xh[c] - x[c];
        g[c] = gscale * e;
        out[0] += (double)e * e;
        out[1] += (double)x[c] * x[c];
        out[2] += (double)xh[c] * xh[c];
        out[3] += (double)x[c] * xh[c];
    }
}

/* Encoder forward, per row of the current chunk: top-k (and AuxK) entries from the dense
 * pre-activations. */
static void sae_job_topk(void *ctx, int tid, int64_t b, int64_t e) {
    (void)tid;
    sae_trainer *t = ctx;
    int n = t->m->n, k = t->m->k, kk = t->kk, k_aux = t->cur.k_aux;
    for (int64_t r = b; r < e; r++) {
        const float *p = t->pre + r * n;
        int32_t *ix = t->idx + (t->cur.r0 + r) * kk;
        float *vx = t->val + (t->cur.r0 + r) * kk;
        sae_topk_row(p, t->m->b_enc, n, k, NULL, ix, vx);
        if (k_aux > 0) sae_topk_row(p, t->m->b_enc, n, k_aux, t->dead, ix + k, vx + k);
        for (int j = k + k_aux; j < kk; j++) ix[j] = -1, vx[j] = 0;
    }
}

SAE_SIMD
static void sae_job_center(void *ctx, int tid, int64_t b, int64_t e) {
    (void)tid;
    sae_trainer *t = ctx;
    int d = t->m->d;
    for (int64_t r = b; r < e; r++)
        for (int j = 0; j < d; j++) t->xc[r * d + j] = t->cur.x[r * d + j] - t->m->b_dec[j];
}

/* xc = x - b_dec, then the dense pre-activations a chunk of rows at a time, kept sparse. */
static void sae_forward_encode(sae_trainer *t) {
    int B = t->cur.B, d = t->m->d;
    sae_parallel_for(B, 64, sae_job_center, t);
    for (int r0 = 0; r0 < B; r0 += t->chunk) {
        int c = B - r0 < t->chunk ? B - r0 : t->chunk;
        sae_preacts(t->m, t->xc + (size_t)r0 * d, c, c, t->pre); /* the chunk as one block: batches are fixed */
        t->cur.r0 = r0;
        sae_parallel_for(c, 32, sae_job_topk, t);
    }
}

/* Backward of one row: dz for each active entry, right after the row's decode while its decoder
 * rows are in cache. */
static inline void sae_row_backward(sae_trainer *t, int64_t r) {
    const sae_model *m = t->m;
    int d = m->d, k = m->k, kk = t->kk;
    const int32_t *ix = t->idx + r * kk;
    const float *gr = t->g + r * d, *ar = t->ga ? t->ga + r * d : NULL;
    float *dz = t->dz + r * kk;
    for (int j = 0; j < kk; j++) {
        dz[j] = 0;
        if (ix[j] < 0) continue;
        dz[j] = sae_dot(m->W_dec + (size_t)ix[j] * d, j < k ? gr : ar, d);
    }
}

/* Decoder forward as a gather of the active rows, the loss gradients w.r.t. xhat (g) and the
 * AuxK reconstruction (ga), per-row statistics, and (training) the row's backward. */
SAE_SIMD
static void sae_job_decode(void *ctx, int tid, int64_t b, int64_t e) {
    (void)tid;
    sae_trainer *t = ctx;
    const sae_model *m = t->m;
    int d = m->d, k = m->k, kk = t->kk, B = t->cur.B;
    float gscale = 2.0f / (float)B;
    float ascale = (float)(2.0 * t->cur.aux_scale * t->o.aux_coef / B);
    for (int64_t r = b; r < e; r++) {
        const float *xr = t->cur.x + r * d;
        float *xh = t->h + r * d, *gr = t->g + r * d;
        const int32_t *ix = t->idx + r * kk;
        const float *vx = t->val + r * kk;
        memcpy(xh, m->b_dec, (size_t)d * sizeof(float));
        for (int j = 0; j < k && ix[j] >= 0; j++) {
            const float *w = m->W_dec + (size_t)ix[j] * d;
            if (j + 1 < k && ix[j + 1] >= 0) sae_prefetch_row(m->W_dec + (size_t)ix[j + 1] * d, d);
            for (int c = 0; c < d; c++) xh[c] += vx[j] * w[c];
        }
        double sums[4]; /* |e|^2, |x|^2, |xhat|^2, x.xhat */
        sae_row_sums(xr, xh, gr, gscale, d, sums);
        t->row_err[r] = sums[0];
        t->row_cos[r] = sums[1] > 0 && sums[2] > 0 ? sums[3] / sqrt(sums[1] * sums[2]) : 0.0;
        t->row_aux[r] = 0;
        if (t->cur.aux_scale > 0) {
            /* AuxK: the dead latents' reconstruction (no bias) of the residual x - xhat. */
            float *ar = t->ga + r * d;
            memset(ar, 0, (size_t)d * sizeof(float));
            for (int j = k; j < kk && ix[j] >= 0; j++) {
                const float *w = m->W_dec + (size_t)ix[j] * d;
                for (int c = 0; c < d; c++) ar[c] += vx[j] * w[c];
            }
            double aerr = 0;
            for (int c = 0; c < d; c++) {
                float ec = ar[c] - (xr[c] - xh[c]);
                ar[c] = ascale * ec;
                aerr += (double)ec * ec;
            }
            t->row_aux[r] = aerr;
        }
        if (t->cur.backward) sae_row_backward(t, r);
    }
}

SAE_SIMD
static void sae_job_row_var(void *ctx, int tid, int64_t b, int64_t e) {
    (void)tid;
    sae_trainer *t = ctx;
    int d = t->m->d;
    for (int64_t r = b; r < e; r++) {
        double s = 0;
        for (int c = 0; c < d; c++) {
            double dev = t->cur.x[r * d + c] - t->cur.mean[c];
            s += dev * dev;
        }
        t->row_var[r] = s;
    }
}

/* Batch statistics, reduced serially in row order (deterministic). */
static void sae_batch_stats(sae_trainer *t, sae_stats *st) {
    int d = t->m->d, B = t->cur.B;
    double *mean = t->mean;
    memset(mean, 0, (size_t)d * sizeof(double));
    for (int r = 0; r < B; r++)
        for (int c = 0; c < d; c++) mean[c] += t->cur.x[(size_t)r * d + c];
    for (int c = 0; c < d; c++) mean[c] /= B;
    t->cur.mean = mean;
    sae_parallel_for(B, 64, sae_job_row_var, t);
    double err = 0, var = 0, cos = 0, aux = 0, l0 = 0;
    for (int r = 0; r < B; r++) {
        err += t->row_err[r];
        var += t->row_var[r];
        cos += t->row_cos[r];
        aux += t->row_aux[r];
        const int32_t *ix = t->idx + (size_t)r * t->kk;
        for (int j = 0; j < t->m->k && ix[j] >= 0; j++) l0 += 1;
    }
    int64_t dead = 0;
    for (int i = 0; i < t->m->n; i++) dead += t->since_fired[i] >= t->o.dead_tokens;
    st->mse = err / B;
    st->aux = t->cur.aux_scale * aux / B;
    st->loss = st->mse + t->o.aux_coef * st->aux;
    st->fvu = var > 0 ? err / var : 0;
    st->cosine = cos / B;
    st->l0 = l0 / B;
    st->dead_fraction = (double)dead / t->m->n;
}

static void sae_set_batch(sae_trainer *t, const float *x, int B) {
    memset(&t->cur, 0, sizeof t->cur);
    t->cur.x = x;
    t->cur.B = B;
}

int sae_eval_batch(sae_trainer *t, const float *x, int rows, sae_stats *st) {
    if (rows < 1 || rows > t->max_batch) return sf_fail("sae eval: bad batch of %d rows", rows);
    sae_set_batch(t, x, rows);
    sae_forward_encode(t);
    sae_parallel_for(rows, 16, sae_job_decode, t);
    memset(st, 0, sizeof *st);
    sae_batch_stats(t, st);
    return SF_OK;
}

/* Groups the batch's entries by latent (counting sort, row order kept). */
static void sae_group_by_latent(sae_trainer *t, int B) {
    int n = t->m->n, kk = t->kk;
    int32_t *start = t->lat_start;
    memset(start, 0, (size_t)(n + 1) * sizeof *start);
    int64_t total = (int64_t)B * kk;
    for (int64_t e = 0; e < total; e++)
        if (t->idx[e] >= 0) start[t->idx[e] + 1]++;
    for (int i = 0; i < n; i++) start[i + 1] += start[i];
    /* Fill using lat_start shifted by one as the write cursor, then shift back. */
    for (int64_t e = 0; e < total; e++)
        if (t->idx[e] >= 0) t->lat_entries[start[t->idx[e]]++] = (int32_t)e;
    for (int i = n; i > 0; i--) start[i] = start[i - 1];
    start[0] = 0;
}

/* b_enc's gradient: each latent's dz summed over its entries (in row order). */
SAE_SIMD
static void sae_job_gb_enc(void *ctx, int tid, int64_t b, int64_t e) {
    (void)tid;
    sae_trainer *t = ctx;
    for (int64_t i = b; i < e; i++) {
        float s = 0;
        for (int32_t q = t->lat_start[i]; q < t->lat_start[i + 1]; q++) s += t->dz[t->lat_entries[q]];
        t->gb_enc[i] = s;
    }
}

/* b_dec's gradient: sum_r g_r through xhat, minus W_enc^T gb_enc through the encoder input
 * x - b_dec (sum_r sum_j dz_rj W_enc[idx_rj] regrouped by latent: one pass over W_enc instead
 * of a gather per entry). Each column in a fixed order whatever the threads; a job takes a block
 * of columns so every row read uses whole cache lines. */
SAE_SIMD
static void sae_job_gb_dec(void *ctx, int tid, int64_t b, int64_t e) {
    (void)tid;
    sae_trainer *t = ctx;
    int d = t->m->d, n = t->m->n, B = t->cur.B;
    float *out = t->gb_dec, acc[64];
    for (int64_t c0 = b; c0 < e; c0 += 64) {
        int w = e - c0 < 64 ? (int)(e - c0) : 64;
        for (int c = 0; c < w; c++) out[c0 + c] = 0, acc[c] = 0;
        for (int r = 0; r < B; r++) {
            const float *gr = t->g + (size_t)r * d + c0;
            for (int c = 0; c < w; c++) out[c0 + c] += gr[c];
        }
        for (int i = 0; i < n; i++) {
            float gi = t->gb_enc[i];
            if (gi == 0) continue;
            const float *we = t->m->W_enc + (size_t)i * d + c0;
            for (int c = 0; c < w; c++) acc[c] += gi * we[c];
        }
        for (int c = 0; c < w; c++) out[c0 + c] -= acc[c];
    }
}

/* Per latent: gradient rows from the entries that fired it, Adam, decoder renorm. */
SAE_SIMD
static void sae_job_latents(void *ctx, int tid, int64_t b, int64_t e) {
    sae_trainer *t = ctx;
    sae_model *m = t->m;
    int d = m->d, k = m->k, kk = t->kk;
    const sae_adam_coef *ac = &t->cur.ac;
    float *gwe = t->tls + (size_t)tid * 2 * d, *gwd = gwe + d;
    for (int64_t i = b; i < e; i++) {
        memset(gwe, 0, 2 * (size_t)d * sizeof(float));
        for (int32_t q = t->lat_start[i]; q < t->lat_start[i + 1]; q++) {
            int32_t en = t->lat_entries[q];
            int r = en / kk, j = en % kk;
            if (q + 1 < t->lat_start[i + 1]) {
                int32_t nx = t->lat_entries[q + 1];
                sae_prefetch_row((nx % kk < k ? t->g : t->ga) + (size_t)(nx / kk) * d, d);
                sae_prefetch_row(t->xc + (size_t)(nx / kk) * d, d);
            }
            const float *src = j < k ? t->g + (size_t)r * d : t->ga + (size_t)r * d;
            const float *xr = t->xc + (size_t)r * d;
            float a = t->val[en], dz = t->dz[en];
            for (int c = 0; c < d; c++) gwd[c] += a * src[c];
            for (int c = 0; c < d; c++) gwe[c] += dz * xr[c];
        }
        float *wd = m->W_dec + i * d, *we = m->W_enc + i * d;
        if (t->o.remove_parallel_grad) {
            float p = sae_dot(gwd, wd, d);
            for (int c = 0; c < d; c++) gwd[c] -= p * wd[c];
        }
        if (t->gW_enc) {
            memcpy(t->gW_enc + i * d, gwe, (size_t)d * sizeof(float));
            memcpy(t->gW_dec + i * d, gwd, (size_t)d * sizeof(float));
        }
        sae_adam_update(we, t->a_W_enc.m + i * d, t->a_W_enc.v + i * d, gwe, d, ac);
        sae_adam_update(wd, t->a_W_dec.m + i * d, t->a_W_dec.v + i * d, gwd, d, ac);
        sae_adam_update(m->b_enc + i, t->a_b_enc.m + i, t->a_b_enc.v + i, t->gb_enc + i, 1, ac);
        sae_renorm_row(wd, d);
    }
}

int sae_train_step(sae_trainer *t, const float *x, int B, sae_stats *st) {
    sae_model *m = t->m;
    if (B < 1 || B > t->max_batch) return sf_fail("sae train: bad batch of %d rows", B);
    int d = m->d, n = m->n, k = m->k, kk = t->kk;
    sae_set_batch(t, x, B);

    /* Dead latents and the AuxK size for this step. */
    int64_t num_dead = 0;
    for (int i = 0; i < n; i++) num_dead += t->dead[i] = t->since_fired[i] >= t->o.dead_tokens;
    t->cur.k_aux = t->o.k_aux < num_dead ? t->o.k_aux : (int)num_dead;
    t->cur.aux_scale = t->o.k_aux ? fmin((double)num_dead / t->o.k_aux, 1.0) : 0.0;

    sae_forward_encode(t);
    t->cur.backward = 1;
    sae_parallel_for(B, 16, sae_job_decode, t);
    if (st) {
        memset(st, 0, sizeof *st);
        sae_batch_stats(t, st);
    }
    sae_group_by_latent(t, B);
    sae_parallel_for(n, 256, sae_job_gb_enc, t);
    sae_parallel_for(d, 64, sae_job_gb_dec, t);
    double lr = sae_lr_at(&t->o, t->step);
    t->cur.ac = sae_adam_coef_at(&t->o, lr, t->step + 1);
    sae_parallel_for(n, 32, sae_job_latents, t);
    sae_adam_update(m->b_dec, t->a_b_dec.m, t->a_b_dec.v, t->gb_dec, d, &t->cur.ac);

    /* Firing counters: a latent fires when it is among a row's top-k. */
    for (int i = 0; i < n; i++) {
        int fired = 0;
        for (int32_t q = t->lat_start[i]; q < t->lat_start[i + 1] && !fired; q++)
            fired = t->lat_entries[q] % kk < k;
        t->since_fired[i] = fired ? 0 : t->since_fired[i] + B;
    }
    if (st) st->lr = lr;
    t->step++;
    t->tokens += B;
    return SF_OK;
}

/* ---------------------------------------------------------------------------------------------- */
/* Checkpoints                                                                                     */

typedef struct sae_ckpt_entry {
    const char *name;
    void *data;
    sf_dtype dtype;
    int64_t rows, cols; /* cols 0: 1-D */
} sae_ckpt_entry;

static int sae_ckpt_entries(const sae_trainer *t, sae_ckpt_entry *e) {
    const sae_model *m = t->m;
    int64_t n = m->n, d = m->d;
    int c = 0;
    e[c++] = (sae_ckpt_entry){"W_enc", m->W_enc, SF_F32, n, d};
    e[c++] = (sae_ckpt_entry){"b_enc", m->b_enc, SF_F32, n, 0};
    e[c++] = (sae_ckpt_entry){"W_dec", m->W_dec, SF_F32, n, d};
    e[c++] = (sae_ckpt_entry){"b_dec", m->b_dec, SF_F32, d, 0};
    e[c++] = (sae_ckpt_entry){"adam.m.W_enc", t->a_W_enc.m, SF_F32, n, d};
    e[c++] = (sae_ckpt_entry){"adam.v.W_enc", t->a_W_enc.v, SF_F32, n, d};
    e[c++] = (sae_ckpt_entry){"adam.m.b_enc", t->a_b_enc.m, SF_F32, n, 0};
    e[c++] = (sae_ckpt_entry){"adam.v.b_enc", t->a_b_enc.v, SF_F32, n, 0};
    e[c++] = (sae_ckpt_entry){"adam.m.W_dec", t->a_W_dec.m, SF_F32, n, d};
    e[c++] = (sae_ckpt_entry){"adam.v.W_dec", t->a_W_dec.v, SF_F32, n, d};
    e[c++] = (sae_ckpt_entry){"adam.m.b_dec", t->a_b_dec.m, SF_F32, d, 0};
    e[c++] = (sae_ckpt_entry){"adam.v.b_dec", t->a_b_dec.v, SF_F32, d, 0};
    e[c++] = (sae_ckpt_entry){"since_fired", t->since_fired, SF_I64, n, 0};
    return c;
}

int sae_checkpoint_save(const sae_trainer *t, const char *path, const char *const *meta, const sf_st_tensor *extra,
                        size_t n_extra) {
    sae_ckpt_entry e[16];
    int ne = sae_ckpt_entries(t, e);
    sf_st_writer *w = sf_st_writer_new();
    for (int i = 0; i < ne; i++) {
        int64_t shape[2] = {e[i].rows, e[i].cols};
        sf_st_writer_add(w, e[i].name, e[i].dtype, e[i].cols ? 2 : 1, shape, e[i].data);
    }
    for (size_t i = 0; i < n_extra; i++)
        sf_st_writer_add(w, extra[i].name, extra[i].t.dtype, extra[i].t.ndim, extra[i].t.shape, extra[i].t.data);
    char buf[64];
    snprintf(buf, sizeof buf, "%lld", (long long)t->step);
    sf_st_writer_meta(w, "step", buf);
    snprintf(buf, sizeof buf, "%lld", (long long)t->tokens);
    sf_st_writer_meta(w, "tokens", buf);
    snprintf(buf, sizeof buf, "%d", t->m->k);
    sf_st_writer_meta(w, "k", buf);
    sf_st_writer_meta(w, "normalize", sae_norm_name(t->m->norm));
    snprintf(buf, sizeof buf, "%a", (double)t->m->norm_scale); /* hex: exact */
    sf_st_writer_meta(w, "norm_scale", buf);
    for (int i = 0; meta && meta[i] && meta[i + 1]; i += 2) sf_st_writer_meta(w, meta[i], meta[i + 1]);
    int rc = sf_st_writer_save(w, path, NULL);
    sf_st_writer_free(w);
    return rc;
}

static int sae_meta_i64(const sf_st_file *f, const char *path, const char *key, int64_t *out) {
    const char *s = sf_st_metadata(f, key);
    char *end;
    if (!s) return sf_fail("%s: no '%s' in the metadata", path, key);
    long long v = strtoll(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 0) return sf_fail("%s: bad '%s' = '%s'", path, key, s);
    *out = v;
    return SF_OK;
}

int sae_checkpoint_load(sae_trainer *t, const char *path) {
    sf_st_file *f = sf_st_open(path);
    if (!f) return SF_ERR;
    sae_ckpt_entry e[16];
    int ne = sae_ckpt_entries(t, e);
    int64_t step = 0, tokens = 0, k = 0;
    const char *norm = sf_st_metadata(f, "normalize"), *scale = sf_st_metadata(f, "norm_scale");
    sae_norm_mode mode;
    int rc = SF_OK;
    if (sae_meta_i64(f, path, "step", &step) != SF_OK || sae_meta_i64(f, path, "tokens", &tokens) != SF_OK ||
        sae_meta_i64(f, path, "k", &k) != SF_OK)
        rc = SF_ERR;
    else if (k != t->m->k)
        rc = sf_fail("%s: checkpoint has k=%lld, the model k=%d", path, (long long)k, t->m->k);
    else if (!norm || !scale || sae_norm_parse(norm, &mode) != SF_OK)
        rc = sf_fail("%s: missing or bad normalisation metadata", path);
    for (int i = 0; i < ne && rc == SF_OK; i++) {
        const sf_st_tensor *st = sf_st_find(f, e[i].name);
        int ndim = e[i].cols ? 2 : 1;
        if (!st || st->t.dtype != e[i].dtype || st->t.ndim != ndim || st->t.shape[0] != e[i].rows ||
            (ndim == 2 && st->t.shape[1] != e[i].cols))
            rc = sf_fail("%s: tensor '%s' missing or not %s of the model's shape", path, e[i].name,
                         sf_dtype_name(e[i].dtype));
        else
            memcpy(e[i].data, st->t.data, st->t.nbytes);
    }
    if (rc == SF_OK) {
        t->step = step;
        t->tokens = tokens;
        t->m->norm = mode;
        t->m->norm_scale = strtof(scale, NULL);
    }
    sf_st_close(f);
    return rc;
}
