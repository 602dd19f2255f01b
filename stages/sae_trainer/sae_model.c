/* sae_model.c — TopK SAE model: init, normalisation, encoding (dense sgemm + top-k per row),
 * decoding. Its files (layouts, loading, saving) are sae_files.c's. */
#include <cblas.h>
#include <immintrin.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow.h"
#include "sae_internal.h"

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
