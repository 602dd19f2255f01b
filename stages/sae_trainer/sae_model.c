/* sae_model.c — TopK SAE model: init, normalisation, encoding (dense sgemm + top-k per row),
 * decoding, and files in the paper's, sparsify's and SAELens' layouts. */
#include <cblas.h>
#include <errno.h>
#include <immintrin.h>
#include <float.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "saeflow.h"
#include "sf_output.h"
#include "sf_safetensors.h"
#include "sae_internal.h"
#include "sae_pth.h"

/* Generous bounds so a corrupt config cannot make us allocate absurd amounts. */
#define SAE_MAX_D (1 << 16)
#define SAE_MAX_N (1 << 22)
#define SAE_MAX_K 4096
/* Top-k candidates kept on the stack by the fast path of sae_topk_row. */
#define SAE_CAND_MAX 1024

float *sae_alloc_floats(size_t count) {
    size_t bytes = (count * sizeof(float) + 63) & ~(size_t)63;
    float *p = aligned_alloc(64, bytes ? bytes : 64);
    if (p) memset(p, 0, bytes);
    return p;
}

int sae_model_alloc(sae_model *m, int d, int n, int k) {
    memset(m, 0, sizeof *m);
    if (d < 1 || d > SAE_MAX_D || n < 1 || n > SAE_MAX_N || k < 1 || k > n || k > SAE_MAX_K)
        return sf_fail("sae: bad shape d=%d n=%d k=%d", d, n, k);
    m->d = d;
    m->n = n;
    m->k = k;
    m->norm = SAE_NORM_NONE;
    m->norm_scale = 1.0f;
    m->W_enc = sae_alloc_floats((size_t)n * d);
    m->W_dec = sae_alloc_floats((size_t)n * d);
    m->b_enc = sae_alloc_floats((size_t)n);
    m->b_dec = sae_alloc_floats((size_t)d);
    if (!m->W_enc || !m->W_dec || !m->b_enc || !m->b_dec) {
        sae_model_free(m);
        return sf_fail("sae: out of memory for d=%d n=%d", d, n);
    }
    return SF_OK;
}

void sae_model_free(sae_model *m) {
    free(m->W_enc);
    free(m->W_dec);
    free(m->b_enc);
    free(m->b_dec);
    memset(m, 0, sizeof *m);
}

/* splitmix64: small, good enough for weight init, and trivially reproducible. */
static uint64_t sae_rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

SAE_SIMD
void sae_renorm_row(float *w, int d) {
    double ss = 0;
    for (int j = 0; j < d; j++) ss += (double)w[j] * w[j];
    float inv = 1.0f / ((float)sqrt(ss) + FLT_EPSILON);
    for (int j = 0; j < d; j++) w[j] *= inv;
}

void sae_model_init(sae_model *m, uint64_t seed) {
    /* nn.Linear's default init is uniform; only the direction survives the renormalisation. */
    uint64_t s = seed;
    size_t nd = (size_t)m->n * m->d;
    for (size_t i = 0; i < nd; i++)
        m->W_dec[i] = (float)((double)(sae_rng_next(&s) >> 11) * 0x1.0p-53 * 2.0 - 1.0);
    for (int i = 0; i < m->n; i++) sae_renorm_row(m->W_dec + (size_t)i * m->d, m->d);
    memcpy(m->W_enc, m->W_dec, nd * sizeof(float));
    memset(m->b_enc, 0, (size_t)m->n * sizeof(float));
    memset(m->b_dec, 0, (size_t)m->d * sizeof(float));
}

float sae_norm_scale_estimate(const float *x, int64_t rows, int d) {
    double sum = 0;
    for (int64_t r = 0; r < rows; r++) {
        double ss = 0;
        for (int j = 0; j < d; j++) ss += (double)x[r * d + j] * x[r * d + j];
        sum += sqrt(ss);
    }
    return sum > 0 ? (float)(sqrt((double)d) / (sum / (double)rows)) : 1.0f;
}

SAE_SIMD
void sae_normalize(const sae_model *m, float *x, int64_t rows, float *norms) {
    int d = m->d;
    for (int64_t r = 0; r < rows; r++) {
        float *v = x + r * d;
        float f = 1.0f;
        if (m->norm == SAE_NORM_UNIT) {
            double ss = 0;
            for (int j = 0; j < d; j++) ss += (double)v[j] * v[j];
            float nrm = (float)sqrt(ss);
            f = nrm > 0 ? 1.0f / nrm : 1.0f; /* a zero row stays zero */
        } else if (m->norm == SAE_NORM_SCALAR) {
            f = m->norm_scale;
        }
        if (f != 1.0f)
            for (int j = 0; j < d; j++) v[j] *= f;
        if (norms) norms[r] = f;
    }
}

/* The encoder's sgemm in fixed tiles: a block of rows (the caller's) by SAE_PREACT_COLS latents,
 * each tile one single-threaded sgemm, the tiles spread over sae_lib's pool. Fixed tiles because
 * under some OpenBLAS kernels an element's rounding depends on its place inside the call (Haswell's
 * sgemm kernel sums even and odd k apart for rows past the last multiple of 12 and for the edge
 * columns of a block) and so also on OpenBLAS's own split over its threads: with tiles that depend
 * on neither the grouping of the blocks nor the thread count, a row's pre-activations are the same
 * bits whichever other rows share the call, on any number of threads. */
enum { SAE_PREACT_COLS = 1024 };

typedef struct sae_preact_job {
    const sae_model *m;
    const float *xc;
    float *pre;
    int rows, block, col_tiles;
} sae_preact_job;

static void sae_preact_tiles(void *ctx, int tid, int64_t b, int64_t e) {
    (void)tid;
    const sae_preact_job *j = ctx;
    int n = j->m->n, d = j->m->d;
    for (int64_t t = b; t < e; t++) {
        int c0 = (int)(t % j->col_tiles) * SAE_PREACT_COLS, r0 = (int)(t / j->col_tiles) * j->block;
        int cols = n - c0 < SAE_PREACT_COLS ? n - c0 : SAE_PREACT_COLS, rows = j->rows - r0 < j->block ? j->rows - r0 : j->block;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, cols, d, 1.0f, j->xc + (size_t)r0 * d, d,
                    j->m->W_enc + (size_t)c0 * d, d, 0.0f, j->pre + (size_t)r0 * n + c0, n);
    }
}

void sae_preacts(const sae_model *m, const float *xc, int rows, int block, float *pre) {
    sae_preact_job j = {m, xc, pre, rows, block, (m->n + SAE_PREACT_COLS - 1) / SAE_PREACT_COLS};
    int64_t tiles = (int64_t)j.col_tiles * ((rows + block - 1) / block);
    sf_blas_single_enter(openblas_get_num_threads, openblas_set_num_threads);
    sae_parallel_for(tiles, 1, sae_preact_tiles, &j);
    sf_blas_single_leave(openblas_set_num_threads);
}

/* Min-heap of (value, index) on the value: the root is the smallest kept value. */
static void sae_heap_sift_down(float *hv, int32_t *hi, int len, int pos) {
    for (;;) {
        int l = 2 * pos + 1, r = l + 1, s = pos;
        if (l < len && hv[l] < hv[s]) s = l;
        if (r < len && hv[r] < hv[s]) s = r;
        if (s == pos) return;
        float tv = hv[s]; hv[s] = hv[pos]; hv[pos] = tv;
        int32_t ti = hi[s]; hi[s] = hi[pos]; hi[pos] = ti;
        pos = s;
    }
}

static void sae_heap_push(float *hv, int32_t *hi, int *len, int k, float v, int32_t i) {
    if (*len < k) { /* sift up */
        int pos = (*len)++;
        while (pos > 0) {
            int parent = (pos - 1) / 2;
            if (hv[parent] <= v) break;
            hv[pos] = hv[parent];
            hi[pos] = hi[parent];
            pos = parent;
        }
        hv[pos] = v;
        hi[pos] = i;
    } else {
        hv[0] = v;
        hi[0] = i;
        sae_heap_sift_down(hv, hi, k, 0);
    }
}

/* Offers value v of latent i to the heap of the k largest; returns the new threshold. */
static inline float sae_topk_offer(float *val, int32_t *idx, int *len, int k, float v, int32_t i, float thr) {
    sae_heap_push(val, idx, len, k, v, i);
    return *len == k ? val[0] : thr;
}

/* One scan keeping the k largest values > floor (and allowed by mask) in the heap; returns how
 * many it kept. The scan is the hot loop: most values fall below the current k-th largest, so
 * the AVX-512 version compares 16 at a time and visits only the lanes above it. */
__attribute__((target("avx512f")))
static int sae_topk_scan_avx512(const float *pre, const float *bias, int n, int k, const uint8_t *mask,
                                int32_t *idx, float *val) {
    int len = 0, i = 0;
    float thr = 0.0f; /* ReLU: only positive values */
    __m512 vthr = _mm512_set1_ps(thr);
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_add_ps(_mm512_loadu_ps(pre + i), _mm512_loadu_ps(bias + i));
        for (__mmask16 hit = _mm512_cmp_ps_mask(v, vthr, _CMP_GT_OQ); hit; hit &= hit - 1) {
            int j = i + __builtin_ctz(hit);
            float x = pre[j] + bias[j];
            if (x > thr && (!mask || mask[j])) {
                thr = sae_topk_offer(val, idx, &len, k, x, j, thr);
                vthr = _mm512_set1_ps(thr);
            }
        }
    }
    for (; i < n; i++) {
        float x = pre[i] + bias[i];
        if (x > thr && (!mask || mask[i])) thr = sae_topk_offer(val, idx, &len, k, x, i, thr);
    }
    return len;
}

static int sae_topk_scan_generic(const float *pre, const float *bias, int n, int k, const uint8_t *mask,
                                 int32_t *idx, float *val) {
    int len = 0;
    float thr = 0.0f;
    for (int i = 0; i < n; i++) {
        float x = pre[i] + bias[i];
        if (x > thr && (!mask || mask[i])) thr = sae_topk_offer(val, idx, &len, k, x, i, thr);
    }
    return len;
}

static int sae_use_avx512(void) {
    static int avx512 = -1; /* a benign race: every thread computes the same answer */
    if (avx512 < 0) avx512 = __builtin_cpu_supports("avx512f") && !getenv("SAE_NO_AVX512"); /* tests */
    return avx512;
}

/* The values > floor and their indices, in index order, into cv/ci; -1 if there are more than cap. */
__attribute__((target("avx512f")))
static int sae_collect_avx512(const float *pre, const float *bias, int n, float floor, int cap, float *cv,
                              int32_t *ci) {
    int m = 0, i = 0;
    __m512 vf = _mm512_set1_ps(floor);
    __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_add_ps(_mm512_loadu_ps(pre + i), _mm512_loadu_ps(bias + i));
        __mmask16 hit = _mm512_cmp_ps_mask(v, vf, _CMP_GT_OQ);
        if (!hit) continue;
        int c = __builtin_popcount(hit);
        if (m + c > cap) return -1;
        _mm512_mask_compressstoreu_ps(cv + m, hit, v);
        _mm512_mask_compressstoreu_epi32(ci + m, hit, _mm512_add_epi32(lane, _mm512_set1_epi32(i)));
        m += c;
    }
    for (; i < n; i++) {
        float x = pre[i] + bias[i];
        if (x > floor) {
            if (m == cap) return -1;
            cv[m] = x;
            ci[m++] = i;
        }
    }
    return m;
}

static int sae_collect_generic(const float *pre, const float *bias, int n, float floor, int cap, float *cv,
                               int32_t *ci) {
    int m = 0;
    for (int i = 0; i < n; i++) {
        float x = pre[i] + bias[i];
        if (x > floor) {
            if (m == cap) return -1;
            cv[m] = x;
            ci[m++] = i;
        }
    }
    return m;
}

/* The value of rank r (0 = largest) of a[0..m), reordering a (quickselect). */
static float sae_select_rank(float *a, int m, int r) {
    int lo = 0, hi = m - 1;
    while (lo < hi) {
        float p = a[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (a[i] > p) i++;
            while (a[j] < p) j--;
            if (i <= j) {
                float t = a[i]; a[i] = a[j]; a[j] = t;
                i++, j--;
            }
        }
        if (r <= j) hi = j;
        else if (r >= i) lo = i;
        else return a[r];
    }
    return a[r];
}

/* The k largest of m >= k candidates (index order), ties to the lower index, sorted by value. */
static void sae_select_k(const float *cv, const int32_t *ci, int m, int k, int32_t *idx, float *val) {
    float tmp[SAE_CAND_MAX];
    memcpy(tmp, cv, (size_t)m * sizeof(float));
    float tau = sae_select_rank(tmp, m, k - 1);
    int g = 0;
    for (int j = 0; j < m; j++)
        if (cv[j] > tau) idx[g] = ci[j], val[g++] = cv[j];
    for (int j = 0; j < m && g < k; j++)
        if (cv[j] == tau) idx[g] = ci[j], val[g++] = cv[j];
    for (int a = 1; a < k; a++) { /* insertion sort, stable: equal values keep index order */
        float v = val[a];
        int32_t i = idx[a];
        int b = a - 1;
        for (; b >= 0 && val[b] < v; b--) val[b + 1] = val[b], idx[b + 1] = idx[b];
        val[b + 1] = v;
        idx[b + 1] = i;
    }
}

/* A threshold below the row's k-th largest value, from a strided sample of the row: the sample's
 * value whose rank predicts about 4k values above it. 0 if the row is too short for this. */
static float sae_sample_floor(const float *pre, const float *bias, int n, int k) {
    float samp[SAE_CAND_MAX];
    int S = n / 16 < SAE_CAND_MAX ? n / 16 : SAE_CAND_MAX;
    if (S < 16) return 0;
    int stride = n / S, q = 4 * k / stride - 1;
    if (q < 0 || q >= S) return 0;
    for (int j = 0; j < S; j++) samp[j] = pre[j * stride] + bias[j * stride];
    float f = sae_select_rank(samp, S, q);
    return f > 0 ? f : 0;
}

int sae_topk_row(const float *pre, const float *bias, int n, int k, const uint8_t *mask, int32_t *idx, float *val) {
    /* Fast path: select among the values above a sampled floor (about 4k of them). If the floor
     * lets through fewer than k or too many, or with a mask, a heap over the whole row. */
    float floor = !mask && 8 * k <= SAE_CAND_MAX ? sae_sample_floor(pre, bias, n, k) : 0;
    if (floor > 0) {
        float cv[SAE_CAND_MAX];
        int32_t ci[SAE_CAND_MAX];
        int m = sae_use_avx512() ? sae_collect_avx512(pre, bias, n, floor, SAE_CAND_MAX, cv, ci)
                                 : sae_collect_generic(pre, bias, n, floor, SAE_CAND_MAX, cv, ci);
        if (m >= k) {
            sae_select_k(cv, ci, m, k, idx, val);
            return k;
        }
    }
    int len = sae_use_avx512() ? sae_topk_scan_avx512(pre, bias, n, k, mask, idx, val)
                               : sae_topk_scan_generic(pre, bias, n, k, mask, idx, val);
    /* Heap sort: repeatedly move the minimum to the end, giving descending order. */
    for (int end = len - 1; end > 0; end--) {
        float tv = val[0]; val[0] = val[end]; val[end] = tv;
        int32_t ti = idx[0]; idx[0] = idx[end]; idx[end] = ti;
        sae_heap_sift_down(val, idx, end, 0);
    }
    for (int j = len; j < k; j++) {
        idx[j] = -1;
        val[j] = 0.0f;
    }
    return len;
}

typedef struct sae_topk_job {
    const sae_model *m;
    const float *pre; /* [rows][n] */
    int32_t *idx;
    float *val;
} sae_topk_job;

static void sae_topk_rows(void *ctx, int tid, int64_t b, int64_t e) {
    (void)tid;
    const sae_topk_job *j = ctx;
    int n = j->m->n, k = j->m->k;
    for (int64_t r = b; r < e; r++)
        sae_topk_row(j->pre + r * n, j->m->b_enc, n, k, NULL, j->idx + r * k, j->val + r * k);
}

/* The encoding of sae_encode; with pre_out, pre_out[rows][n] is the pre-activation buffer itself
 * (one pass over all rows) and receives b_enc added after the top-k (which adds it the same way,
 * so its values are exactly those floats); without, a chunk-sized buffer is reused. */
static int sae_encode_rows(const sae_model *m, const float *x, int64_t rows, int64_t block, int32_t *idx, float *val,
                           float *pre_out) {
    int d = m->d, n = m->n, k = m->k;
    if (rows == 0) return SF_OK;
    if (block < 1 || block > rows || rows % block || block > INT_MAX || (pre_out && rows > INT_MAX))
        return sf_fail("sae_encode: %lld rows are not blocks of %lld", (long long)rows, (long long)block);
    /* chunks of whole blocks (one block when a block is longer than a chunk) */
    int64_t whole = sae_chunk_rows(n) / block * block;
    int chunk = (int)(pre_out || rows < whole ? rows : whole > 0 ? whole : block);
    float *xc = sae_alloc_floats((size_t)chunk * d);
    /* Not zeroed: sgemm overwrites it, and this runs once per message in the miner. */
    float *pre = pre_out ? pre_out : aligned_alloc(64, ((size_t)chunk * n * sizeof(float) + 63) & ~(size_t)63);
    if (!xc || !pre) {
        free(xc);
        if (!pre_out) free(pre);
        return sf_fail("sae_encode: out of memory");
    }
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
        int c = rows - r0 < chunk ? (int)(rows - r0) : chunk;
        memcpy(xc, x + r0 * d, (size_t)c * d * sizeof(float));
        sae_normalize(m, xc, c, NULL);
        for (int r = 0; r < c; r++)
            for (int j = 0; j < d; j++) xc[(size_t)r * d + j] -= m->b_dec[j];
        sae_preacts(m, xc, c, (int)block, pre);
        sae_topk_job job = {m, pre, idx + r0 * k, val + r0 * k};
        sae_parallel_for(c, 32, sae_topk_rows, &job);
    }
    free(xc);
    if (!pre_out) {
        free(pre);
        return SF_OK;
    }
    for (int64_t r = 0; r < rows; r++)
        for (int i = 0; i < n; i++) pre_out[r * n + i] += m->b_enc[i];
    return SF_OK;
}

int sae_encode(const sae_model *m, const float *x, int64_t rows, int64_t block, int32_t *idx, float *val) {
    return sae_encode_rows(m, x, rows, block, idx, val, NULL);
}

int sae_encode_preacts(const sae_model *m, const float *x, int64_t rows, int64_t block, int32_t *idx, float *val,
                       float *pre) {
    if (rows > INT_MAX || (rows > 0 && (uint64_t)rows > SIZE_MAX / sizeof(float) / (uint64_t)m->n))
        return sf_fail("sae_encode_preacts: %lld rows x %d latents do not fit in memory", (long long)rows, m->n);
    return sae_encode_rows(m, x, rows, block, idx, val, pre);
}

typedef struct sae_decode_job {
    const sae_model *m;
    const int32_t *idx;
    const float *val, *norms;
    float *xhat;
} sae_decode_job;

SAE_SIMD
static void sae_decode_rows(void *ctx, int tid, int64_t b, int64_t e) {
    (void)tid;
    const sae_decode_job *j = ctx;
    const sae_model *m = j->m;
    const int32_t *idx = j->idx;
    const float *val = j->val, *norms = j->norms;
    int d = m->d, k = m->k;
    for (int64_t r = b; r < e; r++) {
        float *o = j->xhat + r * d;
        memcpy(o, m->b_dec, (size_t)d * sizeof(float));
        for (int j = 0; j < k; j++) {
            int32_t i = idx[r * k + j];
            if (i < 0 || i >= m->n) continue;
            float a = val[r * k + j];
            const float *w = m->W_dec + (size_t)i * d;
            for (int c = 0; c < d; c++) o[c] += a * w[c];
        }
        if (norms && norms[r] != 1.0f) {
            float inv = 1.0f / norms[r];
            for (int c = 0; c < d; c++) o[c] *= inv;
        }
    }
}

void sae_decode(const sae_model *m, const int32_t *idx, const float *val, int64_t rows,
                const float *norms, float *xhat) {
    sae_decode_job job = {m, idx, val, norms, xhat};
    sae_parallel_for(rows, 64, sae_decode_rows, &job);
}

int sae_reconstruct(const sae_model *m, const float *x, int64_t rows, int64_t block, float *xhat) {
    int32_t *idx = malloc((size_t)rows * m->k * sizeof *idx);
    float *val = malloc((size_t)rows * m->k * sizeof *val), *norms = malloc((size_t)rows * sizeof *norms);
    int rc = idx && val && norms ? sae_encode(m, x, rows, block, idx, val) : sf_fail("sae_reconstruct: out of memory");
    if (rc == SF_OK) {
        memcpy(xhat, x, (size_t)rows * m->d * sizeof *xhat);
        sae_normalize(m, xhat, rows, norms); /* only for the factors: decode overwrites xhat */
        sae_decode(m, idx, val, rows, norms, xhat);
    }
    free(idx);
    free(val);
    free(norms);
    return rc;
}

/* One Weiszfeld iteration over a piece of rows: sum of w_r x_r and of w_r, w_r = 1 / (|x_r - guess| + 1e-8),
 * into the piece's own slot (pieces are fixed ranges, summed in order: deterministic). */
typedef struct sae_gm_job {
    const float *x;
    int d;
    int64_t grain;
    const double *guess;
    double *part; /* [pieces][d + 1]: weighted sum, then the weight sum */
} sae_gm_job;

SAE_SIMD
static void sae_gm_piece(void *ctx, int tid, int64_t b, int64_t e) {
    (void)tid;
    const sae_gm_job *j = ctx;
    int d = j->d;
    double *acc = j->part + (b / j->grain) * (d + 1);
    memset(acc, 0, (size_t)(d + 1) * sizeof(double));
    for (int64_t r = b; r < e; r++) {
        const float *v = j->x + r * d;
        double ss = 0;
        for (int c = 0; c < d; c++) ss += (v[c] - j->guess[c]) * (v[c] - j->guess[c]);
        double w = 1.0 / (sqrt(ss) + 1e-8);
        for (int c = 0; c < d; c++) acc[c] += w * v[c];
        acc[d] += w;
    }
}

void sae_geometric_median(const float *x, int64_t rows, int d, int max_iter, double tol, float *out) {
    const int64_t grain = 256;
    int64_t pieces = (rows + grain - 1) / grain;
    double *guess = calloc((size_t)d, sizeof(double));
    double *part = malloc((size_t)(pieces > 0 ? pieces : 1) * (d + 1) * sizeof(double));
    if (!guess || !part || rows < 1) {
        free(guess);
        free(part);
        memset(out, 0, (size_t)d * sizeof(float));
        return;
    }
    for (int64_t r = 0; r < rows; r++)
        for (int c = 0; c < d; c++) guess[c] += x[r * d + c];
    for (int c = 0; c < d; c++) guess[c] /= (double)rows;
    sae_gm_job job = {x, d, grain, guess, part};
    for (int it = 0; it < max_iter; it++) {
        sae_parallel_for(rows, grain, sae_gm_piece, &job);
        double step = 0, wsum = 0;
        for (int64_t p = 0; p < pieces; p++) wsum += part[p * (d + 1) + d];
        for (int c = 0; c < d; c++) {
            double v = 0;
            for (int64_t p = 0; p < pieces; p++) v += part[p * (d + 1) + c];
            v /= wsum;
            step += (v - guess[c]) * (v - guess[c]);
            guess[c] = v;
        }
        if (sqrt(step) < tol) break;
    }
    for (int c = 0; c < d; c++) out[c] = (float)guess[c];
    free(guess);
    free(part);
}

/* ---------------------------------------------------------------------------------------------- */
/* Names                                                                                           */

static const char *const sae_norm_names[] = {"none", "unit", "scalar"};
static const char *const sae_layout_names[] = {"paper", "sparsify", "saelens"};

const char *sae_norm_name(sae_norm_mode mode) {
    return (unsigned)mode < 3 ? sae_norm_names[mode] : "?";
}

int sae_norm_parse(const char *name, sae_norm_mode *out) {
    for (int i = 0; i < 3; i++)
        if (!strcmp(name, sae_norm_names[i])) {
            *out = (sae_norm_mode)i;
            return SF_OK;
        }
    return sf_fail("sae: unknown normalisation '%s' (none, unit, scalar)", name);
}

int sae_layout_parse(const char *name, sae_layout *out) {
    for (int i = 0; i < 3; i++)
        if (!strcmp(name, sae_layout_names[i])) {
            *out = (sae_layout)i;
            return SF_OK;
        }
    return sf_fail("sae: unknown layout '%s' (paper, sparsify, saelens)", name);
}

/* ---------------------------------------------------------------------------------------------- */
/* Files                                                                                           */

/* The file names of each layout: config, weights, then tensor names for
 * W_enc, b_enc, W_dec, b_dec, and whether W_enc / W_dec are stored transposed ([d, n]). */
typedef struct sae_layout_desc {
    const char *config, *weights;
    const char *w_enc, *b_enc, *w_dec, *b_dec;
    int enc_transposed, dec_transposed;
} sae_layout_desc;

static const sae_layout_desc sae_layouts[3] = {
    {"config.json", "model.safetensors", "encoder.weight", "encoder.bias", "decoder.weight", "b_dec", 0, 1},
    {"cfg.json", "sae.safetensors", "encoder.weight", "encoder.bias", "W_dec", "b_dec", 0, 0},
    {"cfg.json", "sae_weights.safetensors", "W_enc", "b_enc", "W_dec", "b_dec", 1, 0},
};

static void sae_transpose(const float *src, int rows, int cols, float *dst) {
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) dst[(size_t)c * rows + r] = src[(size_t)r * cols + c];
}

/* Writes JSON atomically and durably (sf_write_file_atomic). */
static int sae_write_json(const char *path, json_t *j) {
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
    if (!text) return sf_fail("sae: out of memory writing %s", path);
    int rc = sf_write_file_atomic(path, text, strlen(text));
    free(text);
    return rc;
}

static int sae_save_layout(const sae_model *m, const char *dir, sae_layout layout, const char *extra_json);

/* SAELens' normalize_activations "constant_norm_rescale" feeds the SAE x sqrt(d) / ||x|| and scales
 * the output back by ||x|| / sqrt(d); ours feeds x / ||x||. With W_enc / sqrt(d), W_dec sqrt(d) and
 * b_dec sqrt(d) the pre-activations, so the codes, are the same and so is x_hat in the raw space.
 * to_saelens 1 converts ours to SAELens', 0 back. */
static void sae_fold_unit(sae_model *m, int to_saelens) {
    float s = sqrtf((float)m->d), in = to_saelens ? 1.0f / s : s, out = to_saelens ? s : 1.0f / s;
    for (size_t i = 0; i < (size_t)m->n * m->d; i++) {
        m->W_enc[i] *= in;
        m->W_dec[i] *= out;
    }
    for (int j = 0; j < m->d; j++) m->b_dec[j] *= out;
}

/* sparsify and SAELens apply no scalar normalisation of their own: fold it into the weights,
 * W_enc s, W_dec / s, b_dec / s (the same encodings of raw inputs, outputs in the raw space). A unit
 * normalisation goes to SAELens as its constant_norm_rescale (sae_fold_unit); sparsify has nothing
 * like it and no weights can fold a per-token division: its export keeps our weights, for inputs
 * x / ||x|| (cfg.json says so; saeflow sae convert warns). */
int sae_save(const sae_model *m, const char *dir, sae_layout layout, const char *extra_json) {
    if (layout == SAE_LAYOUT_SPARSIFY && m->norm == SAE_NORM_UNIT)
        sf_log(SF_LOG_WARN, "%s: sparsify applies no input normalisation and this SAE's (x/||x|| per token) cannot "
               "be folded into weights: feed this export normalised activations (its cfg.json's saeflow_input says "
               "so), or use the SAELens export, which normalises itself", dir);
    int scalar = layout != SAE_LAYOUT_PAPER && m->norm == SAE_NORM_SCALAR;
    int unit = layout == SAE_LAYOUT_SAELENS && m->norm == SAE_NORM_UNIT;
    if (!scalar && !unit) return sae_save_layout(m, dir, layout, extra_json);
    sae_model f;
    if (sae_model_alloc(&f, m->d, m->n, m->k) != SF_OK) return SF_ERR;
    f.norm = unit ? SAE_NORM_UNIT : SAE_NORM_NONE; /* a scalar one is in the weights now */
    f.norm_scale = 1.0f;
    float s = scalar ? m->norm_scale : 1.0f;
    for (size_t i = 0; i < (size_t)m->n * m->d; i++) {
        f.W_enc[i] = m->W_enc[i] * s;
        f.W_dec[i] = m->W_dec[i] / s;
    }
    memcpy(f.b_enc, m->b_enc, (size_t)m->n * sizeof(float));
    for (int j = 0; j < m->d; j++) f.b_dec[j] = m->b_dec[j] / s;
    if (unit) sae_fold_unit(&f, 1);
    int rc = sae_save_layout(&f, dir, layout, extra_json);
    sae_model_free(&f);
    return rc;
}

static int sae_save_layout(const sae_model *m, const char *dir, sae_layout layout, const char *extra_json) {
    if ((unsigned)layout > 2) return sf_fail("sae_save: bad layout");
    const sae_layout_desc *L = &sae_layouts[layout];
    if (sf_mkdirs(dir) != SF_OK) return SF_ERR;

    json_t *cfg = json_object();
    if (extra_json && *extra_json) {
        json_error_t err;
        json_t *extra = json_loads(extra_json, 0, &err);
        if (!json_is_object(extra)) {
            json_decref(extra);
            json_decref(cfg);
            return sf_fail("sae_save: extra metadata is not a JSON object: %s", err.text);
        }
        json_object_update(cfg, extra);
        json_decref(extra);
    }
    json_object_set_new(cfg, "d_in", json_integer(m->d));
    json_object_set_new(cfg, "k", json_integer(m->k));
    json_object_set_new(cfg, "saeflow_normalize", json_string(sae_norm_name(m->norm)));
    json_object_set_new(cfg, "saeflow_norm_scale", json_real(m->norm_scale));
    if (layout == SAE_LAYOUT_PAPER) {
        json_object_set_new(cfg, "num_latents", json_integer(m->n));
        json_object_set_new(cfg, "model_type", json_string("topk_sae"));
        json_object_set_new(cfg, "architectures", json_pack("[s]", "TopKSAE"));
        json_object_set_new(cfg, "torch_dtype", json_string("float32"));
    } else if (layout == SAE_LAYOUT_SPARSIFY) {
        json_object_set_new(cfg, "num_latents", json_integer(m->n));
        json_object_set_new(cfg, "expansion_factor", json_integer(m->n / m->d));
        json_object_set_new(cfg, "normalize_decoder", json_true());
        json_object_set_new(cfg, "signed", json_false());
        json_object_set_new(cfg, "multi_topk", json_false());
        json_object_set_new(cfg, "skip_connection", json_false());
        if (m->norm == SAE_NORM_UNIT)
            json_object_set_new(cfg, "saeflow_input",
                                json_string("x / ||x|| per token: sparsify applies no input normalisation and a "
                                            "per-token one cannot be folded into weights; normalise the "
                                            "activations before encode()"));
    } else {
        json_object_set_new(cfg, "d_sae", json_integer(m->n));
        json_object_set_new(cfg, "architecture", json_string("topk"));
        json_object_set_new(cfg, "dtype", json_string("float32"));
        json_object_set_new(cfg, "device", json_string("cpu"));
        json_object_set_new(cfg, "apply_b_dec_to_input", json_true());
        json_object_set_new(cfg, "rescale_acts_by_decoder_norm", json_false());
        /* unit: weights folded for SAELens' own per-token rescale (sae_save); scalar: folded whole */
        json_object_set_new(cfg, "normalize_activations",
                            json_string(m->norm == SAE_NORM_UNIT ? "constant_norm_rescale" : "none"));
        if (!json_object_get(cfg, "metadata"))
            json_object_set_new(cfg, "metadata", json_object());
        json_t *md = json_object_get(cfg, "metadata");
        if (json_is_object(md)) json_object_set_new(md, "sae_lens_version", json_string("6.0.0"));
    }

    /* The config marks a directory as holding a model: it goes last, after the weights are on disk,
     * and an older one goes first (a full disk must not leave a config describing weights that are
     * not there, or not these). */
    char path[4200], config_path[4200];
    snprintf(config_path, sizeof config_path, "%s/%s", dir, L->config);
    if (unlink(config_path) == 0 ? sf_sync_parent(config_path) != SF_OK
                                 : errno != ENOENT && sf_fail("cannot remove %s: %s", config_path, strerror(errno))) {
        json_decref(cfg);
        return SF_ERR;
    }
    int rc;

    size_t nd = (size_t)m->n * m->d;
    /* At most one matrix is stored transposed in each layout. */
    const float *enc = m->W_enc, *dec = m->W_dec;
    float *tmat = NULL;
    if (L->enc_transposed || L->dec_transposed) {
        tmat = sae_alloc_floats(nd);
        if (!tmat) return sf_fail("sae_save: out of memory");
        sae_transpose(L->enc_transposed ? m->W_enc : m->W_dec, m->n, m->d, tmat);
        if (L->enc_transposed) enc = tmat;
        else dec = tmat;
    }
    int64_t nd_shape[2] = {m->n, m->d}, dn_shape[2] = {m->d, m->n};
    int64_t n_shape[1] = {m->n}, d_shape[1] = {m->d};
    sf_st_writer *w = sf_st_writer_new();
    sf_st_writer_add(w, L->w_enc, SF_F32, 2, L->enc_transposed ? dn_shape : nd_shape, enc);
    sf_st_writer_add(w, L->b_enc, SF_F32, 1, n_shape, m->b_enc);
    sf_st_writer_add(w, L->w_dec, SF_F32, 2, L->dec_transposed ? dn_shape : nd_shape, dec);
    sf_st_writer_add(w, L->b_dec, SF_F32, 1, d_shape, m->b_dec);
    sf_st_writer_meta(w, "format", "pt");
    snprintf(path, sizeof path, "%s/%s", dir, L->weights);
    rc = sf_st_writer_save(w, path, NULL);
    sf_st_writer_free(w);
    free(tmat);
    if (rc == SF_OK) rc = sae_write_json(config_path, cfg);
    json_decref(cfg);
    return rc;
}

/* Copies one tensor of the file into dst ([rows, cols], transposed from [cols, rows] if asked),
 * checking name, shape and dtype. */
static int sae_read_tensor(const sf_st_file *f, const char *file, const char *name, int64_t rows,
                           int64_t cols, int transposed, float *dst) {
    const sf_st_tensor *t = sf_st_find(f, name);
    if (!t) return sf_fail("%s: no tensor '%s'", file, name);
    int64_t want0 = transposed ? cols : rows, want1 = transposed ? rows : cols;
    int ok = cols == 0 ? (t->t.ndim == 1 && t->t.shape[0] == rows)
                       : (t->t.ndim == 2 && t->t.shape[0] == want0 && t->t.shape[1] == want1);
    if (!ok) return sf_fail("%s: tensor '%s' has an unexpected shape", file, name);
    if (t->t.dtype != SF_F32 && t->t.dtype != SF_F16 && t->t.dtype != SF_BF16 && t->t.dtype != SF_F64)
        return sf_fail("%s: tensor '%s' is %s, not a float type", file, name, sf_dtype_name(t->t.dtype));
    size_t count = (size_t)rows * (size_t)(cols ? cols : 1);
    if (!transposed) {
        sf_convert_to_f32(dst, t->t.data, t->t.dtype, count);
        return SF_OK;
    }
    float *tmp = sae_alloc_floats(count);
    if (!tmp) return sf_fail("%s: out of memory", file);
    sf_convert_to_f32(tmp, t->t.data, t->t.dtype, count);
    sae_transpose(tmp, (int)cols, (int)rows, dst);
    free(tmp);
    return SF_OK;
}

static int sae_json_int(json_t *cfg, const char *key, int64_t *out) {
    json_t *v = json_object_get(cfg, key);
    if (!json_is_integer(v)) return SF_ERR;
    *out = json_integer_value(v);
    return SF_OK;
}

/* The normalisation of a state dict of llm-jp-sae's 2025-03 code converted to safetensors: its files
 * record none, the directory names that code saved under do (nl_Scalar = x/||x||, nl_None). */
static int sae_legacy_norm(const char *dir, sae_norm_mode *norm, char *from, size_t cap) {
    char full[4200];
    if (!realpath(dir, full)) snprintf(full, sizeof full, "%s", dir);
    strncat(full, "/", sizeof full - strlen(full) - 1);
    int rc = sae_pth_dir_norm(full, norm, from, cap);
    if (rc != SF_DONE) return rc;
    return sf_fail("%s: a state dict of llm-jp-sae's 2025-03 SparseAutoEncoder (encoder.weight, W_dec [n,d]) "
                   "converted to safetensors: nothing records its input normalisation (that code's --nl: Scalar, "
                   "its default, is x/||x||; None; Standardization) and loading it with the wrong one gives wrong "
                   "codes silently. State it: saeflow sae convert %s OUT --normalize unit|none",
                   dir, dir);
}

int sae_load(sae_model *m, const char *dir) {
    return sae_load_as(m, dir, 0, -1);
}

int sae_load_as(sae_model *m, const char *dir, int k_given, int norm_given) {
    memset(m, 0, sizeof *m);
    size_t dl = strlen(dir);
    if (dl >= 4096) return sf_fail("sae: directory name too long");
    char path[4200];
    /* llm-jp-sae's 2025-03 release: sae.pth, named or in the directory */
    struct stat sb;
    if (dl > 4 && !strcmp(dir + dl - 4, ".pth") && stat(dir, &sb) == 0 && S_ISREG(sb.st_mode))
        return sae_pth_load(m, dir, k_given, norm_given);
    int layout = -1;
    for (int l = 0; l < 3 && layout < 0; l++) {
        snprintf(path, sizeof path, "%s/%s", dir, sae_layouts[l].weights);
        if (access(path, R_OK) == 0) layout = l;
    }
    if (layout < 0) {
        snprintf(path, sizeof path, "%s/sae.pth", dir);
        if (access(path, R_OK) == 0) return sae_pth_load(m, path, k_given, norm_given);
        return sf_fail("%s: no model.safetensors, sae.safetensors, sae_weights.safetensors or sae.pth", dir);
    }
    const sae_layout_desc *L = &sae_layouts[layout];

    snprintf(path, sizeof path, "%s/%s", dir, L->config);
    json_error_t jerr;
    json_t *cfg = json_load_file(path, 0, &jerr);
    if (!json_is_object(cfg)) {
        json_decref(cfg);
        if (layout == SAE_LAYOUT_SPARSIFY && access(path, F_OK) != 0)
            return sf_fail("%s: sae.safetensors without cfg.json: k and the input normalisation are recorded nowhere "
                           "(a state dict converted to safetensors?). State them: saeflow sae convert %s OUT --k K "
                           "--normalize unit|none", dir, dir);
        return sf_fail("%s: %s (line %d)", path, jerr.text, jerr.line);
    }
    int64_t k = 0;
    if (k_given > 0) k = k_given;
    else if (sae_json_int(cfg, "k", &k) != SF_OK) {
        json_decref(cfg);
        return sf_fail("%s: no integer 'k' (not a TopK SAE? state it: saeflow sae convert %s OUT --k K)", path, dir);
    }
    sae_norm_mode norm = SAE_NORM_NONE;
    float norm_scale = 1.0f;
    char layout_name[sizeof m->layout], norm_from[sizeof m->norm_from] = "";
    int saelens_rescale = 0; /* SAELens' constant_norm_rescale: x sqrt(d) / ||x||, our unit with scaled weights */
    json_t *jn = json_object_get(cfg, "saeflow_normalize");
    json_t *na = json_object_get(cfg, "normalize_activations");
    if (norm_given >= 0) {
        norm = (sae_norm_mode)norm_given;
        snprintf(norm_from, sizeof norm_from, "stated by the user");
    } else if (json_is_string(jn)) {
        if (sae_norm_parse(json_string_value(jn), &norm) != SF_OK) {
            json_decref(cfg);
            return SF_ERR;
        }
        snprintf(norm_from, sizeof norm_from, "%s saeflow_normalize", L->config);
    }
    if (layout == SAE_LAYOUT_SAELENS && json_is_string(na) && strcmp(json_string_value(na), "none") != 0) {
        if (strcmp(json_string_value(na), "constant_norm_rescale") != 0) {
            int rc = sf_fail("%s: normalize_activations '%s' is not supported (only 'none' and "
                             "'constant_norm_rescale')", path, json_string_value(na));
            json_decref(cfg);
            return rc;
        }
        saelens_rescale = 1;
        if (norm_given < 0) {
            norm = SAE_NORM_UNIT;
            snprintf(norm_from, sizeof norm_from, "cfg.json normalize_activations constant_norm_rescale");
        }
    }
    int native_sparsify = json_object_get(cfg, "normalize_decoder") != NULL; /* sparsify's own cfg.json */
    /* What the other libraries can save that is not this TopK SAE's forward: refused, not misread. */
    json_t *arch = json_object_get(cfg, layout == SAE_LAYOUT_SAELENS ? "architecture" : "activation");
    const char *other = json_is_string(arch) && strcmp(json_string_value(arch), "topk") != 0 ? json_string_value(arch)
                        : layout == SAE_LAYOUT_SPARSIFY && json_is_true(json_object_get(cfg, "transcode")) ? "transcode"
                        : layout == SAE_LAYOUT_SPARSIFY && json_is_true(json_object_get(cfg, "skip_connection"))
                            ? "skip_connection"
                            : NULL;
    if (other) {
        int rc = sf_fail("%s: a '%s' sparse coder, not a TopK SAE (z = TopK(ReLU(W_enc (x - b_dec) + b_enc))): "
                         "saeflow cannot encode with it", path, other);
        json_decref(cfg);
        return rc;
    }
    /* SAELens' TopK option: pre-activations times ||W_dec row||, codes divided by it before decoding */
    int saelens_dec_norm = layout == SAE_LAYOUT_SAELENS && json_is_true(json_object_get(cfg, "rescale_acts_by_decoder_norm"));
    /* SAELens without apply_b_dec_to_input encodes x, not x - b_dec */
    int saelens_raw_in = layout == SAE_LAYOUT_SAELENS && json_is_false(json_object_get(cfg, "apply_b_dec_to_input"));
    json_t *hk = json_object_get(json_object_get(cfg, "saeflow_training"), "hook");
    if (!json_is_string(hk)) hk = json_object_get(cfg, "hook_name");
    if (!json_is_string(hk)) hk = json_object_get(json_object_get(cfg, "metadata"), "hook_name");
    char hook[sizeof m->hook] = "", checkpoint[sizeof m->checkpoint] = "", model[sizeof m->model] = "";
    if (json_is_string(hk)) snprintf(hook, sizeof hook, "%s", json_string_value(hk));
    json_t *ck = json_object_get(json_object_get(cfg, "saeflow_training"), "checkpoint"),
           *md = json_object_get(json_object_get(cfg, "saeflow_training"), "model");
    int ours = json_is_string(jn) || json_object_get(cfg, "saeflow_training") != NULL;
    if (json_is_string(ck)) snprintf(checkpoint, sizeof checkpoint, "%s", json_string_value(ck));
    if (json_is_string(md)) snprintf(model, sizeof model, "%s", json_string_value(md));
    json_t *js = json_object_get(cfg, "saeflow_norm_scale");
    if (json_is_number(js)) norm_scale = (float)json_number_value(js);
    json_decref(cfg);

    snprintf(path, sizeof path, "%s/%s", dir, L->weights);
    sf_st_file *f = sf_st_open(path);
    if (!f) return SF_ERR;
    /* Which code wrote it, and so the normalisation when the config does not state it. */
    if (layout == SAE_LAYOUT_PAPER && sf_st_find(f, "W_dec") && !sf_st_find(f, "decoder.weight")) {
        L = &sae_layouts[SAE_LAYOUT_SPARSIFY]; /* the 2025-03 tensor names, in a save_pretrained folder */
        snprintf(layout_name, sizeof layout_name, "llm-jp-sae 2025-03 SparseAutoEncoder state dict in model.safetensors");
        if (!norm_from[0] && sae_legacy_norm(dir, &norm, norm_from, sizeof norm_from) != SF_OK) goto fail;
    } else if (layout == SAE_LAYOUT_PAPER) {
        snprintf(layout_name, sizeof layout_name, "%s", ours ? "saeflow, in llm-jp-sae's TopKSAE layout (config.json + "
                 "model.safetensors)" : "llm-jp-sae 2025-09 TopKSAE (save_pretrained: config.json + model.safetensors)");
        if (!norm_from[0]) {
            norm = SAE_NORM_UNIT;
            snprintf(norm_from, sizeof norm_from, "llm-jp-sae's 2025-09 code always normalises x/||x||");
        }
    } else if (layout == SAE_LAYOUT_SPARSIFY && !native_sparsify && !norm_from[0]) {
        snprintf(layout_name, sizeof layout_name, "llm-jp-sae 2025-03 SparseAutoEncoder state dict in sae.safetensors");
        if (sae_legacy_norm(dir, &norm, norm_from, sizeof norm_from) != SF_OK) goto fail;
    } else if (layout == SAE_LAYOUT_SPARSIFY) {
        snprintf(layout_name, sizeof layout_name, "%s", ours ? "saeflow export, EleutherAI sparsify layout (cfg.json + "
                 "sae.safetensors)" : "EleutherAI sparsify (cfg.json + sae.safetensors)");
        if (!norm_from[0]) snprintf(norm_from, sizeof norm_from, "sparsify has none");
    } else {
        snprintf(layout_name, sizeof layout_name, "%s", ours ? "saeflow export, SAELens v6 layout (cfg.json + "
                 "sae_weights.safetensors)" : "SAELens v6 (cfg.json + sae_weights.safetensors)");
        if (!norm_from[0]) snprintf(norm_from, sizeof norm_from, "cfg.json normalize_activations none");
    }
    /* Shapes come from the weights; b_dec gives d, the encoder bias n. */
    const sf_st_tensor *tb = sf_st_find(f, L->b_dec), *te = sf_st_find(f, L->b_enc);
    if (!tb || !te || tb->t.ndim != 1 || te->t.ndim != 1) {
        sf_fail("%s: missing or malformed '%s' / '%s'", path, L->b_dec, L->b_enc);
        goto fail;
    }
    int64_t d = tb->t.shape[0], n = te->t.shape[0];
    if (d > SAE_MAX_D || n > SAE_MAX_N || k > n) {
        sf_fail("%s: unsupported shape d=%lld n=%lld k=%lld", path, (long long)d, (long long)n, (long long)k);
        goto fail;
    }
    if (sae_model_alloc(m, (int)d, (int)n, (int)k) != SF_OK) goto fail;
    m->norm = norm;
    m->norm_scale = norm == SAE_NORM_SCALAR ? norm_scale : 1.0f;
    memcpy(m->hook, hook, sizeof hook);
    memcpy(m->checkpoint, checkpoint, sizeof checkpoint);
    memcpy(m->model, model, sizeof model);
    memcpy(m->layout, layout_name, sizeof layout_name);
    memcpy(m->norm_from, norm_from, sizeof norm_from);
    int rc = SF_OK;
    if (sae_read_tensor(f, path, L->w_enc, n, d, L->enc_transposed, m->W_enc) != SF_OK ||
        sae_read_tensor(f, path, L->b_enc, n, 0, 0, m->b_enc) != SF_OK ||
        sae_read_tensor(f, path, L->w_dec, n, d, L->dec_transposed, m->W_dec) != SF_OK ||
        sae_read_tensor(f, path, L->b_dec, d, 0, 0, m->b_dec) != SF_OK) {
        rc = SF_ERR;
        sae_model_free(m);
    }
    sf_st_close(f);
    if (rc == SF_OK && saelens_raw_in) /* W_enc x + b_enc = W_enc (x - b_dec) + (b_enc + W_enc b_dec) */
        for (int i = 0; i < m->n; i++) {
            double dot = 0;
            for (int j = 0; j < m->d; j++) dot += (double)m->W_enc[(size_t)i * m->d + j] * m->b_dec[j];
            m->b_enc[i] += (float)dot;
        }
    if (rc == SF_OK && saelens_rescale) sae_fold_unit(m, 0);
    if (rc == SF_OK && saelens_dec_norm) /* folded as SAELens' own fold_W_dec_norm does: the same codes */
        for (int i = 0; i < m->n; i++) {
            float *wd = m->W_dec + (size_t)i * m->d, *we = m->W_enc + (size_t)i * m->d, s2 = 0;
            for (int j = 0; j < m->d; j++) s2 += wd[j] * wd[j];
            float s = sqrtf(s2);
            for (int j = 0; j < m->d; j++) we[j] *= s, wd[j] = s > 0 ? wd[j] / s : 0;
            m->b_enc[i] *= s; /* a zero row: pre-activation 0, as in SAELens */
        }
    return rc;
fail:
    sf_st_close(f);
    return SF_ERR;
}

/* ---------------------------------------------------------------------------------------------- */
/* What the SAE reads                                                                              */

/* Two model directory names: the same string, or the same directory here. Names that do not both
 * exist here (a model recorded on another host) are compared as strings. */
static int same_model(const char *a, const char *b) {
    struct stat sa, sb;
    if (strcmp(a, b) == 0) return 1;
    if (stat(a, &sa) != 0 || stat(b, &sb) != 0) return 0;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int sae_check_source(const sae_model *m, const char *sae_dir, const char *hook, const char *checkpoint,
                     const char *model, int accept) {
    const char *what = NULL, *mine = NULL, *theirs = NULL;
    if (m->hook[0] && hook && *hook && !sf_same_hook(m->hook, hook)) what = "hook", mine = m->hook, theirs = hook;
    else if (m->checkpoint[0] && checkpoint && *checkpoint && strcmp(m->checkpoint, checkpoint) != 0)
        what = "checkpoint", mine = m->checkpoint, theirs = checkpoint;
    else if (m->model[0] && model && *model && !same_model(m->model, model))
        what = "model", mine = m->model, theirs = model;
    if (!what) return SF_OK;
    if (accept) {
        sf_log(SF_LOG_WARN, "the SAE %s was trained on %s %s, these activations are of %s %s: used anyway "
               "(accept_sae_mismatch = true)", sae_dir, what, mine, what, theirs);
        return SF_OK;
    }
    return sf_fail("the SAE %s was trained on %s %s, but these activations are of %s %s: its features mean "
                   "nothing there. Use the SAE of %s %s (or activations of %s %s); to use it anyway, set "
                   "accept_sae_mismatch = true",
                   sae_dir, what, mine, what, theirs, what, theirs, what, mine);
}
