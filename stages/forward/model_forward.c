/* model_forward.c — the batched causal forward of model.h, top to bottom: embed, then per block
 * norm -> fused qkv sgemm -> RoPE -> causal attention (sgemm per head and query chunk) -> output
 * sgemm -> norm -> MLP sgemms, copying out hook points on the way; then the final norm and head.
 * With a splice (fw_splice), a second pass resumes at the splice's block from the residual stream
 * the first saved there, and applies it.
 *
 * Threads: everything is split over a small pool of our own threads, with OpenBLAS on one thread
 * for the whole forward: each sgemm by output columns (linear), attention head by head, and the
 * norms, RoPE, activation and loss by rows. OpenBLAS's own workers would spin in sched_yield
 * between calls, on the cores our threads need (measured: 6-8% slower at 16 x 64 tokens).
 *
 * Every linear layer is one sgemm over the whole batch per thread's share of the output columns,
 * and the share depends only on the thread count; attention is one sgemm per sequence, head and
 * query chunk. Under some OpenBLAS kernels (Haswell's sums the even and odd k in separate
 * registers for rows past the last multiple of 12 in a call) a row's rounding depends on its place
 * in the call, so a sequence's bits depend on its batch: the same batch at the same thread count
 * gives the same bits, another grouping agrees to rounding (README, "Which bits"). A resumed
 * extraction gets the uninterrupted run's bits because the tokenizer keeps its batches. */
#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fw_vecmath.h"
#include "model.h"

#define FW_MAX_TOKENS (1 << 22) /* per call; keeps every size_t product far from overflow */
/* Logits are computed in chunks of rows: big enough that OpenBLAS's packing of the [vocab, d]
 * head matrix (once per call) is small next to the product, small enough that a chunk of logits
 * stays near FW_HEAD_FLOATS. */
#define FW_HEAD_FLOATS (16u << 20)
#define FW_HEAD_MIN_ROWS 128

typedef struct fw_buf {
    float *p;
    size_t cap;
} fw_buf;

#define FW_MAX_THREADS 64

/* A task over items [begin, end), run by worker `w` (0 is the calling thread). */
typedef void (*fw_task)(void *arg, int w, size_t begin, size_t end);

typedef struct fw_pool {
    int n; /* threads, the caller included */
    pthread_t tid[FW_MAX_THREADS];
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    uint64_t job;   /* incremented for every task handed out */
    int pending;    /* workers still on the current task */
    int quit;
    fw_task fn;
    void *arg;
    size_t items;
} fw_pool;

typedef struct fw_worker {
    fw_pool *pool;
    int w;
} fw_worker;

struct fw_state {
    int attn_chunk;  /* queries per attention chunk */
    int head_rows;   /* rows per LM head chunk; 0: from FW_HEAD_FLOATS */
    fw_pool pool;
    fw_worker workers[FW_MAX_THREADS];
    fw_buf x;        /* [N, d] residual stream */
    fw_buf xn;       /* [N, d] normed input of a sublayer */
    fw_buf qkv;      /* [N, (H + 2*KV) * hd] */
    fw_buf att;      /* [N, H * hd] attention output of all heads, before the output projection */
    fw_buf attn_out; /* [N, d] */
    fw_buf mlp_in;   /* [N, ff] or [N, 2*ff] gated */
    fw_buf mlp_act;  /* [N, ff] */
    fw_buf mlp_out;  /* [N, d] */
    fw_buf saved;    /* [N, d] the residual stream where the spliced pass starts */
    fw_buf scores[FW_MAX_THREADS]; /* per thread: attention scores [chunk, T], or a row of exp(logits) */
    fw_buf rope;     /* [T, rotary_dim / 2] cos, then the same for sin */
    fw_buf head;     /* [chunk, vocab] logits when the caller keeps none, and normed rows */
    fw_buf next;     /* [chunk] int32: the token each row predicts, or -1 */
    fw_layer blk;    /* a streamed model's block, converted for this caller (fw_block) */
};

/* Grows b to n floats (64-byte aligned); SF_ERR naming what when memory runs out. Every buffer
 * of a request is reserved before it starts (reserve()), so the passes never allocate. */
static int buf_reserve(fw_buf *b, size_t n, const char *what) {
    if (n <= b->cap) return SF_OK;
    free(b->p);
    b->p = NULL;
    b->cap = 0;
    size_t bytes;
    if (!sf_mul_size(n, sizeof(float), &bytes) || posix_memalign((void **)&b->p, 64, bytes) != 0) {
        b->p = NULL;
        return sf_fail("forward: out of memory allocating %s (%zu floats = %.1f MB); lower the batch or the sequence length",
                       what, n, (double)n * 4 / 1e6);
    }
    b->cap = n;
    return SF_OK;
}

static void pool_range(const fw_pool *p, int w, size_t *begin, size_t *end) {
    *begin = p->items * (size_t)w / (size_t)p->n;
    *end = p->items * (size_t)(w + 1) / (size_t)p->n;
}

static void *pool_main(void *arg) {
    fw_worker *me = arg;
    fw_pool *p = me->pool;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->job == seen && !p->quit) pthread_cond_wait(&p->go, &p->mu);
        if (p->quit) break;
        seen = p->job;
        pthread_mutex_unlock(&p->mu);
        size_t b, e;
        pool_range(p, me->w, &b, &e);
        if (b < e) p->fn(p->arg, me->w, b, e);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Runs fn over [0, items) split in equal contiguous ranges, one per thread; returns when all are done. */
static void pool_run(fw_pool *p, size_t items, fw_task fn, void *arg) {
    if (p->n == 1 || items < 2) {
        if (items) fn(arg, 0, 0, items);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->arg = arg;
    p->items = items;
    p->pending = p->n - 1;
    p->job++;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    size_t b, e;
    pool_range(p, 0, &b, &e);
    if (b < e) fn(arg, 0, b, e);
    pthread_mutex_lock(&p->mu);
    while (p->pending) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

fw_state *fw_state_new(int threads) {
    fw_state *s = calloc(1, sizeof *s);
    if (!s) return sf_fail("out of memory allocating the forward's state (%zu bytes)", sizeof *s), NULL;
    s->attn_chunk = 64; /* measured: 64 beat 128, 256 and 512 at T = 1024 (less masked work) */
    if (threads <= 0) threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    s->pool.n = threads < 1 ? 1 : threads > FW_MAX_THREADS ? FW_MAX_THREADS : threads;
    pthread_mutex_init(&s->pool.mu, NULL);
    pthread_cond_init(&s->pool.go, NULL);
    pthread_cond_init(&s->pool.done, NULL);
    for (int w = 1; w < s->pool.n; w++) {
        s->workers[w] = (fw_worker){&s->pool, w};
        if (pthread_create(&s->pool.tid[w], NULL, pool_main, &s->workers[w]) != 0) {
            s->pool.n = w; /* run with the threads we got */
            break;
        }
    }
    return s;
}

void fw_state_set_chunks(fw_state *s, int attn_chunk, int head_rows) {
    s->attn_chunk = attn_chunk > 0 ? attn_chunk : 64;
    s->head_rows = head_rows > 0 ? head_rows : 0;
}

void fw_state_free(fw_state *s) {
    if (!s) return;
    pthread_mutex_lock(&s->pool.mu);
    s->pool.quit = 1;
    pthread_cond_broadcast(&s->pool.go);
    pthread_mutex_unlock(&s->pool.mu);
    for (int w = 1; w < s->pool.n; w++) pthread_join(s->pool.tid[w], NULL);
    pthread_mutex_destroy(&s->pool.mu);
    pthread_cond_destroy(&s->pool.go);
    pthread_cond_destroy(&s->pool.done);
    fw_buf *all[] = {&s->x, &s->xn, &s->qkv, &s->att, &s->attn_out, &s->mlp_in,
                     &s->mlp_act, &s->mlp_out, &s->saved, &s->rope, &s->head, &s->next};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) free(all[i]->p);
    fw_layer_free(&s->blk);
    for (int w = 0; w < FW_MAX_THREADS; w++) free(s->scores[w].p);
    free(s);
}

void fw_set_threads(int n) {
    if (n > 0) openblas_set_num_threads(n);
}

/* ------------------------------------------------------------------------------------------ */
/* Hooks                                                                                       */

int fw_hook_check(const fw_config *cfg, fw_hook h) {
    char name[80];
    fw_hook_name(h, name, sizeof name);
    if (h.hf_named) snprintf(name, sizeof name, "hidden_states.%d", h.layer + 1);
    if (h.layer >= cfg->n_layers)
        return sf_fail("hook %s: the model has %d blocks (0..%d)", name, cfg->n_layers, cfg->n_layers - 1);
    if (h.hf_named && h.kind == FW_RESID_POST && h.layer == cfg->n_layers - 1)
        return sf_fail("hook %s: Hugging Face's last hidden_states entry is after the model's final norm, which "
                       "no hook captures; resid_post.%d is the same point before that norm", name, h.layer);
    return SF_OK;
}

int fw_hook_width(const fw_config *cfg, fw_hook h) { return h.kind == FW_MLP_HIDDEN ? cfg->d_ff : cfg->d_model; }

/* A request runs as one or two passes over the blocks: the clean pass copies hooks out, the
 * spliced pass (for loss_spliced) only applies the splice. */
typedef enum fw_pass { FW_CLEAN, FW_SPLICED } fw_pass;

static int is_splice_point(const fw_request *r, fw_hook_kind kind, int layer) {
    return r->splice && r->splice->hook.kind == kind && r->splice->hook.layer == layer;
}

/* Whether this pass wants this point's activations. */
static int hooked(const fw_request *r, fw_pass pass, fw_hook_kind kind, int layer) {
    if (pass == FW_SPLICED) return is_splice_point(r, kind, layer);
    for (int i = 0; i < r->n_hooks; i++)
        if (r->hooks[i].kind == kind && r->hooks[i].layer == layer) return 1;
    return 0;
}

/* A hook point: the clean pass copies buf [batch * seq, width] out to the hooks that ask for it;
 * the spliced pass lets the splice rewrite it, if it is this point. */
static int hook_point(const fw_request *r, fw_pass pass, fw_hook_kind kind, int layer, float *buf, int width) {
    if (pass == FW_SPLICED)
        return is_splice_point(r, kind, layer) ? r->splice->fn(r->splice->ctx, buf, r->batch, r->seq, width) : SF_OK;
    size_t n = (size_t)r->batch * r->seq * width;
    for (int i = 0; i < r->n_hooks; i++)
        if (r->hooks[i].kind == kind && r->hooks[i].layer == layer) memcpy(r->hook_out[i], buf, n * sizeof *buf);
    return SF_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Building blocks; each row-wise step is a task over rows, so that pool_run can split it      */

typedef struct linear_job {
    const float *x, *w, *b;
    float *y;
    int rows, in, out;
    float beta;
} linear_job;

/* Output columns [begin, end) in blocks of 16 (whole SIMD vectors for every thread's part). */
static void linear_task(void *arg, int w, size_t begin, size_t end) {
    (void)w;
    const linear_job *j = arg;
    int c0 = (int)begin * 16, c1 = (int)end * 16 < j->out ? (int)end * 16 : j->out;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->rows, c1 - c0, j->in, 1.0f, j->x, j->in,
                j->w + (size_t)c0 * j->in, j->in, j->beta, j->y + c0, j->out);
    if (j->b)
        for (size_t i = 0; i < (size_t)j->rows; i++)
            for (int c = c0; c < c1; c++) j->y[i * j->out + c] += j->b[c];
}

/* y[rows, out] = x[rows, in] W^T (+ b) + beta y, with W [out, in] as nn.Linear stores it. Our
 * threads each take a share of the output columns with OpenBLAS on one thread (fw_forward sets
 * it): OpenBLAS's own workers would spin in sched_yield between calls, on the cores our threads
 * need. beta 1 adds to the residual stream in the product itself, without OpenBLAS's pass that
 * zeroes C for beta 0 and without a separate pass to add. */
static void linear_beta(fw_state *s, const float *x, const float *w, const float *b, float *y, int rows, int in,
                        int out, float beta) {
    linear_job j = {x, w, b, y, rows, in, out, beta};
    pool_run(&s->pool, (size_t)(out + 15) / 16, linear_task, &j);
}

static void linear(fw_state *s, const float *x, const float *w, const float *b, float *y, int rows, int in, int out) {
    linear_beta(s, x, w, b, y, rows, in, out, 0.0f);
}

/* RMSNorm (b == NULL) or LayerNorm of one vector xi [d] into yi (which may be xi). Statistics in
 * float, in 16 partial sums (as PyTorch's vectorized float32 reductions, which Hugging Face's
 * norms use): a double accumulator does not vectorize as well and cost 2-3% of a forward at d 768. */
static inline void norm_vec(fw_norm kind, float eps, const float *w, const float *b, const float *xi, float *yi, int d) {
    float m = kind == FW_LAYERNORM ? sum_f32(xi, d) / (float)d : 0.0f;
    float part[16] = {0}, var = 0;
    int j = 0;
    for (; j + 16 <= d; j += 16)
        for (int k = 0; k < 16; k++) part[k] += (xi[j + k] - m) * (xi[j + k] - m);
    for (int k = 0; k < 16; k++) var += part[k];
    for (; j < d; j++) var += (xi[j] - m) * (xi[j] - m);
    float inv = 1.0f / sqrtf(var / (float)d + eps);
    if (b)
        for (j = 0; j < d; j++) yi[j] = (xi[j] - m) * inv * w[j] + b[j];
    else
        for (j = 0; j < d; j++) yi[j] = xi[j] * inv * w[j];
}

/* The model's norm of rows [begin, end) of x [.., d] into y (which may be x). */
FW_VECTOR static void norm_rows(const fw_config *c, const float *w, const float *b, const float *x, float *y, size_t begin,
                                size_t end) {
    int d = c->d_model;
    for (size_t i = begin; i < end; i++) norm_vec(c->norm, c->norm_eps, w, b, x + i * d, y + i * d, d);
}

typedef struct norm_job {
    const fw_config *c;
    const float *w, *b, *x;
    float *y;
} norm_job;

static void norm_task(void *arg, int w, size_t begin, size_t end) {
    (void)w;
    norm_job *j = arg;
    norm_rows(j->c, j->w, j->b, j->x, j->y, begin, end);
}

static void norm(fw_state *s, const fw_config *c, const float *w, const float *b, const float *x, float *y, int rows) {
    norm_job j = {c, w, b, x, y};
    pool_run(&s->pool, (size_t)rows, norm_task, &j);
}

void fw_final_norm(const fw_model *m, const float *x, float *y, int rows) {
    norm_rows(&m->cfg, m->lnf_w, m->lnf_b, x, y, 0, (size_t)rows);
}

static inline float activation(fw_act a, float x) {
    switch (a) {
    case FW_ACT_SILU: return fw_silu(x);
    case FW_ACT_GELU: return 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2));
    case FW_ACT_GELU_TANH: return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    case FW_ACT_RELU: return x > 0 ? x : 0;
    }
    return x;
}

typedef struct qk_norm_job {
    const fw_config *c;
    const fw_layer *ly;
    float *qkv; /* [rows, (H + 2*KV) * hd] */
} qk_norm_job;

/* QK-norm of rows [begin, end) in place, before RoPE: RMSNorm over all heads' queries and over
 * all keys (OLMo-2), or over each head's (Qwen3, Gemma-3). */
FW_VECTOR static void qk_norm_task(void *arg, int w, size_t begin, size_t end) {
    (void)w;
    qk_norm_job *j = arg;
    const fw_config *c = j->c;
    int H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim;
    size_t W = (size_t)(H + 2 * KV) * hd;
    for (size_t i = begin; i < end; i++) {
        float *q = j->qkv + i * W, *k = q + (size_t)H * hd;
        if (c->qk_norm == FW_QK_FULL) {
            norm_vec(FW_RMSNORM, c->norm_eps, j->ly->q_norm, NULL, q, q, H * hd);
            norm_vec(FW_RMSNORM, c->norm_eps, j->ly->k_norm, NULL, k, k, KV * hd);
            continue;
        }
        for (int h = 0; h < H; h++) norm_vec(FW_RMSNORM, c->norm_eps, j->ly->q_norm, NULL, q + h * hd, q + h * hd, hd);
        for (int h = 0; h < KV; h++) norm_vec(FW_RMSNORM, c->norm_eps, j->ly->k_norm, NULL, k + h * hd, k + h * hd, hd);
    }
}

typedef struct act_job {
    const fw_config *c;
    const float *in; /* [rows, ff] or gated [rows, 2*ff]: gate, then up */
    float *out;      /* [rows, ff] */
} act_job;

FW_VECTOR static void act_task(void *arg, int w, size_t begin, size_t end) {
    (void)w;
    act_job *j = arg;
    fw_act act = j->c->act;
    int ff = j->c->d_ff, ff_in = j->c->gated_mlp ? 2 * ff : ff;
    for (size_t i = begin; i < end; i++) {
        const float *in = j->in + i * ff_in;
        float *a = j->out + i * ff;
        if (act == FW_ACT_SILU && j->c->gated_mlp) /* SwiGLU, the common case: one vectorized pass */
            for (int k = 0; k < ff; k++) a[k] = fw_silu(in[k]) * in[ff + k];
        else {
            for (int k = 0; k < ff; k++) a[k] = activation(act, in[k]);
            if (j->c->gated_mlp)
                for (int k = 0; k < ff; k++) a[k] *= in[ff + k];
        }
    }
}

/* cos and sin of position t times each inverse frequency, for t in [0, T): of the model's RoPE, or
 * with `local` of Gemma-3's windowed blocks (plain, inv_freq_local). Dynamic NTK scaling raises the
 * base once the sequence is longer than max_position_embeddings, as Hugging Face does. */
static void rope_tables(const fw_model *m, int local, int T, float *cos_t, float *sin_t) {
    const fw_config *c = &m->cfg;
    int half = c->rotary_dim / 2;
    double base = c->rope_theta;
    const double *inv = local ? m->inv_freq_local : m->inv_freq;
    int dynamic = !local && c->rope_scaling == FW_ROPE_DYNAMIC && T > c->max_pos;
    if (dynamic)
        base *= pow(c->rope_factor * T / c->max_pos - (c->rope_factor - 1), (double)c->rotary_dim / (c->rotary_dim - 2));
    for (int i = 0; i < half; i++) {
        double f = dynamic ? 1.0 / pow(base, (2.0 * i) / c->rotary_dim) : inv[i];
        for (int t = 0; t < T; t++) {
            cos_t[(size_t)t * half + i] = (float)cos(t * f);
            sin_t[(size_t)t * half + i] = (float)sin(t * f);
        }
    }
}

typedef struct rope_job {
    const fw_config *c;
    float *qkv;
    int T;
    const float *cos_t, *sin_t;
} rope_job;

/* Rotates the first rotary_dim dims of every q and k head of rows [begin, end) in place, pairing
 * dim i with i + rotary_dim/2 (Hugging Face's rotate_half convention, also GPT-NeoX's). */
FW_VECTOR static void rope_task(void *arg, int w, size_t begin, size_t end) {
    (void)w;
    rope_job *j = arg;
    const fw_config *c = j->c;
    int hd = c->head_dim, half = c->rotary_dim / 2, heads = c->n_heads + c->n_kv_heads;
    size_t W = (size_t)(c->n_heads + 2 * c->n_kv_heads) * hd;
    for (size_t bt = begin; bt < end; bt++) {
        size_t t = bt % (size_t)j->T;
        const float *cs = j->cos_t + t * half, *sn = j->sin_t + t * half;
        for (int h = 0; h < heads; h++) { /* the q heads, then the k heads: adjacent in a row */
            float *v = j->qkv + bt * W + (size_t)h * hd;
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half];
                v[i] = a * cs[i] - b * sn[i];
                v[i + half] = b * cs[i] + a * sn[i];
            }
        }
    }
}

/* x -> cap * tanh(x / cap) (Gemma's soft-capping) over n values. */
static void softcap(float *x, size_t n, float cap) {
    float inv = 1.0f / cap;
    for (size_t i = 0; i < n; i++) x[i] = cap * tanhf(x[i] * inv);
}

/* Row r of S [rows, keys] holds the scores of query i = i0 + r: softmax over the keys it sees, zero
 * elsewhere. It sees keys 0..i, or with a sliding window (window > 0) the last `window` of them,
 * i - window + 1 .. i (Hugging Face's sliding_window_overlay: kv > q - window). Scores are
 * soft-capped first when cap > 0. */
FW_VECTOR static void softmax_causal(float *S, int rows, int keys, int i0, int window, float cap) {
    for (int r = 0; r < rows; r++) {
        float *sr = S + (size_t)r * keys;
        int n = i0 + r + 1, lo = window > 0 && n > window ? n - window : 0;
        if (cap > 0) softcap(sr + lo, (size_t)(n - lo), cap);
        float mx = max_f32(sr + lo, n - lo);
        for (int m = 0; m < lo; m++) sr[m] = 0;
        for (int m = lo; m < n; m++) sr[m] = fw_exp(sr[m] - mx);
        float inv = 1.0f / sum_f32(sr + lo, n - lo);
        for (int m = lo; m < n; m++) sr[m] *= inv;
        for (int m = n; m < keys; m++) sr[m] = 0;
    }
}

typedef struct attn_job {
    const fw_config *c;
    fw_state *s;
    const float *qkv;
    float *att;
    int T, chunk;
    float scale;
    int window; /* sliding window of this block, 0 for none */
} attn_job;

/* Causal softmax attention of (sequence, head) pairs [begin, end), written head by head into
 * att [B*T, H*hd]. Queries go in chunks so that a chunk only scores the keys up to its last
 * position (about half the work of a full T x T product) and the score buffer stays chunk x T;
 * in a windowed block only from the first key its first query sees (chunk + window keys at most).
 * With GQA, query head h reads key/value head h / (H / KV). */
static void attn_task(void *arg, int w, size_t begin, size_t end) {
    attn_job *j = arg;
    const fw_config *c = j->c;
    int H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim, group = H / KV, T = j->T;
    int W = (H + 2 * KV) * hd;
    float *S = j->s->scores[w].p;
    for (size_t pair = begin; pair < end; pair++) {
        int b = (int)(pair / H), h = (int)(pair % H);
        const float *base = j->qkv + (size_t)b * T * W;
        const float *q = base + (size_t)h * hd;
        const float *k = base + (size_t)(H + h / group) * hd;
        const float *v = base + (size_t)(H + KV + h / group) * hd;
        for (int i0 = 0; i0 < T; i0 += j->chunk) {
            /* keys k0..i0+rows-1: with a sliding window, from the first one the chunk's first query sees */
            int rows = T - i0 < j->chunk ? T - i0 : j->chunk, k0 = j->window > 0 && i0 >= j->window ? i0 + 1 - j->window : 0;
            int keys = i0 + rows - k0;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, keys, hd, j->scale, q + (size_t)i0 * W, W,
                        k + (size_t)k0 * W, W, 0.0f, S, keys);
            softmax_causal(S, rows, keys, i0 - k0, j->window, c->attn_softcap);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hd, keys, 1.0f, S, keys, v + (size_t)k0 * W, W,
                        0.0f, j->att + ((size_t)b * T + i0) * H * hd + (size_t)h * hd, H * hd);
        }
    }
}

static void attention(fw_state *s, const fw_config *c, const float *qkv, float *att, int B, int T, float scale,
                      int window) {
    attn_job j = {c, s, qkv, att, T, s->attn_chunk < T ? s->attn_chunk : T, scale, window}; /* scores: reserve() */
    pool_run(&s->pool, (size_t)B * c->n_heads, attn_task, &j); /* each thread its own small sgemms */
}

static void add_inplace(float *x, const float *y, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

typedef struct loss_job {
    const float *logits; /* rows [0, n) of this head chunk */
    const int32_t *next; /* the token after each row's, or -1 at the end of a sequence */
    float *loss;
    int V;
    fw_state *s;         /* for a scratch row per thread */
} loss_job;

/* loss = logsumexp(logits) - logits[next token]. */
FW_VECTOR static void loss_task(void *arg, int w, size_t begin, size_t end) {
    loss_job *j = arg;
    float *e = j->s->scores[w].p;
    for (size_t k = begin; k < end; k++) {
        const float *l = j->logits + k * j->V;
        if (j->next[k] < 0) {
            j->loss[k] = NAN;
            continue;
        }
        float mx = max_f32(l, j->V);
        for (int v = 0; v < j->V; v++) e[v] = fw_exp(l[v] - mx);
        j->loss[k] = mx + logf(sum_f32(e, j->V)) - l[j->next[k]];
    }
}

typedef struct softcap_job {
    float *x; /* [rows, n] */
    int n;
    float cap;
} softcap_job;

static void softcap_task(void *arg, int w, size_t begin, size_t end) {
    (void)w;
    softcap_job *j = arg;
    softcap(j->x + begin * j->n, (end - begin) * (size_t)j->n, j->cap);
}

/* Rows of the LM head computed at a time: the final norm and LM head go a chunk of rows at a time
 * so logits of a large vocabulary need not all exist at once. */
static int head_chunk(const fw_state *s, int V, int N) {
    int chunk = s->head_rows ? s->head_rows : (int)(FW_HEAD_FLOATS / (unsigned)V);
    if (!s->head_rows && chunk < FW_HEAD_MIN_ROWS) chunk = FW_HEAD_MIN_ROWS;
    return chunk < N ? chunk : N;
}

static void lm_head(const fw_model *m, fw_state *s, const fw_request *r, const float *x, float *logits, float *loss) {
    const fw_config *c = &m->cfg;
    int V = c->vocab, d = c->d_model, N = r->batch * r->seq;
    int chunk = head_chunk(s, V, N);
    float *buf = s->head.p, *xn = buf + (size_t)chunk * V; /* reserved by reserve() */
    int32_t *next = (int32_t *)s->next.p;
    for (int i0 = 0; i0 < N; i0 += chunk) {
        int rows = N - i0 < chunk ? N - i0 : chunk;
        float *lg = logits ? logits + (size_t)i0 * V : buf;
        norm(s, c, m->lnf_w, m->lnf_b, x + (size_t)i0 * d, xn, rows);
        linear(s, xn, m->lm_head, NULL, lg, rows, d, V);
        if (c->final_softcap > 0) {
            softcap_job sj = {lg, V, c->final_softcap};
            pool_run(&s->pool, (size_t)rows, softcap_task, &sj);
        }
        if (!loss) continue;
        for (int k = 0; k < rows; k++) {
            int i = i0 + k;
            next[k] = i % r->seq == r->seq - 1 ? -1 : r->tokens[i + 1];
        }
        loss_job j = {lg, next, loss + i0, V, s};
        pool_run(&s->pool, (size_t)rows, loss_task, &j);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* The forward                                                                                 */

/* Checks r against m; *last is the last block the clean pass runs. */
static int check_request(const fw_model *m, const fw_request *r, int *last) {
    const fw_config *c = &m->cfg;
    if (r->batch < 1 || r->seq < 1 || (int64_t)r->batch * r->seq > FW_MAX_TOKENS)
        return sf_fail("batch %d x %d tokens: must be non-empty and at most %d tokens", r->batch, r->seq, FW_MAX_TOKENS);
    if (c->learned_pos && r->seq > c->max_pos)
        return sf_fail("sequence of %d tokens is longer than the model's %d positions", r->seq, c->max_pos);
    for (size_t i = 0; i < (size_t)r->batch * r->seq; i++)
        if (r->tokens[i] < 0 || r->tokens[i] >= c->vocab)
            return sf_fail("token id %d at index %zu is outside the vocabulary [0, %d)", (int)r->tokens[i], i, c->vocab);
    *last = -1;
    for (int i = 0; i < r->n_hooks; i++) {
        if (r->hooks[i].layer >= m->n_loaded) {
            char name[64];
            fw_hook_name(r->hooks[i], name, sizeof name);
            return sf_fail("hook %s: the model has %d blocks (%d loaded)", name, c->n_layers, m->n_loaded);
        }
        if (r->hooks[i].layer > *last) *last = r->hooks[i].layer;
    }
    if (!r->splice != !r->loss_spliced) return sf_fail("a splice and loss_spliced go together");
    if (r->logits || r->loss || r->loss_spliced) {
        if (!m->lm_head || m->n_loaded < c->n_layers)
            return sf_fail("logits or loss need all blocks and the LM head loaded");
        if (r->splice && r->splice->hook.layer >= c->n_layers)
            return sf_fail("splice at block %d: the model has %d blocks", r->splice->hook.layer, c->n_layers);
    }
    if (r->logits || r->loss) *last = c->n_layers - 1;
    /* the spliced pass resumes from the residual stream the clean pass saved at the splice's block */
    if (r->splice && *last < r->splice->hook.layer - 1) *last = r->splice->hook.layer - 1;
    return SF_OK;
}

/* A sublayer's output projection in [N, in_dim] W^T + b, with its post-norm post_w if not NULL
 * (OLMo-2, Gemma), added to the residual stream s->x [N, d]: through out (hook point `kind` of
 * block l, after the post-norm: what is added to the stream, as TransformerLens hooks it) when this
 * pass hooks that point or there is a post-norm, else inside the sgemm itself (beta 1: no pass that
 * zeroes C, no separate add). */
static int project_into_residual(fw_state *s, const fw_config *c, const fw_request *r, fw_pass pass, fw_hook_kind kind,
                                 int l, const float *in, const float *w, const float *b, const float *post_w, float *out,
                                 int in_dim, int d) {
    int N = r->batch * r->seq;
    if (!hooked(r, pass, kind, l) && !post_w) {
        linear_beta(s, in, w, b, s->x.p, N, in_dim, d, 1.0f);
        return SF_OK;
    }
    linear(s, in, w, b, out, N, in_dim, d);
    if (post_w) norm(s, c, post_w, NULL, out, out, N);
    if (hook_point(r, pass, kind, l, out, d) != SF_OK) return SF_ERR;
    add_inplace(s->x.p, out, (size_t)N * d);
    return SF_OK;
}

/* Blocks [from, to] (none if to < from) on the residual stream in s->x, hooks or splice as the
 * pass says. */
static int blocks(const fw_model *m, fw_state *s, const fw_request *r, fw_pass pass, int from, int to) {
    const fw_config *c = &m->cfg;
    int B = r->batch, T = r->seq, N = B * T, d = c->d_model, ff = c->d_ff;
    int qn = c->n_heads * c->head_dim, Wqkv = qn + 2 * c->n_kv_heads * c->head_dim;
    int ff_in = c->gated_mlp ? 2 * ff : ff, half = c->rotary_dim / 2;
    size_t nd = (size_t)N * d;
    (void)nd, (void)Wqkv, (void)ff_in; /* the buffers' sizes: reserve() */
    float *x = s->x.p, *xn = s->xn.p, *qkv = s->qkv.p, *att = s->att.p, *attn_out = s->attn_out.p;
    float *mlp_in = s->mlp_in.p, *mlp_act = s->mlp_act.p, *mlp_out = s->mlp_out.p;
    const float *cos_t = s->rope.p, *sin_t = cos_t + (size_t)T * half;
    const float *cos_local = sin_t + (size_t)T * half, *sin_local = cos_local + (size_t)T * half; /* Gemma-3 */

    for (int l = from; l <= to; l++) {
        const fw_layer *ly = fw_block(m, l, &s->blk);
        if (!ly) return SF_ERR;
        if (hook_point(r, pass, FW_RESID_PRE, l, x, d) != SF_OK) return SF_ERR;

        /* attention (OLMo-2 has no norm before it: its input is x itself) */
        if (ly->ln1_w) norm(s, c, ly->ln1_w, ly->ln1_b, x, xn, N);
        linear(s, ly->ln1_w ? xn : x, ly->wqkv, ly->bqkv, qkv, N, d, Wqkv);
        qk_norm_job qj = {c, ly, qkv};
        if (ly->q_norm) pool_run(&s->pool, (size_t)N, qk_norm_task, &qj);
        int local_rope = m->inv_freq_local && c->layer_local[l];
        rope_job rj = {c, qkv, T, local_rope ? cos_local : cos_t, local_rope ? sin_local : sin_t};
        if (half) pool_run(&s->pool, (size_t)N, rope_task, &rj);
        attention(s, c, qkv, att, B, T, c->attn_scale / (c->attn_scale_by_layer ? (float)(l + 1) : 1.0f),
                  c->layer_local[l] ? c->sliding_window : 0);
        /* the MLP's input: x + attn_out, or x itself with GPT-NeoX's parallel residual */
        if (c->parallel_residual) norm(s, c, ly->ln2_w, ly->ln2_b, x, xn, N);
        if (project_into_residual(s, c, r, pass, FW_ATTN_OUT, l, att, ly->wo, ly->bo, ly->post1_w, attn_out, qn, d) !=
            SF_OK)
            return SF_ERR;
        if (!c->parallel_residual && ly->ln2_w) norm(s, c, ly->ln2_w, ly->ln2_b, x, xn, N);

        /* MLP */
        linear(s, ly->ln2_w ? xn : x, ly->w_in, ly->b_in, mlp_in, N, d, ff_in);
        act_job aj = {c, mlp_in, mlp_act};
        pool_run(&s->pool, (size_t)N, act_task, &aj);
        if (hook_point(r, pass, FW_MLP_HIDDEN, l, mlp_act, ff) != SF_OK) return SF_ERR;
        if (project_into_residual(s, c, r, pass, FW_MLP_OUT, l, mlp_act, ly->w_out, ly->b_out, ly->post2_w, mlp_out, ff,
                                  d) != SF_OK)
            return SF_ERR;
        if (hook_point(r, pass, FW_RESID_POST, l, x, d) != SF_OK) return SF_ERR;
    }
    return SF_OK;
}

/* Every buffer request r needs, at once, so an out-of-memory is an error before any work (and
 * names the buffer and its size). */
static int reserve(const fw_model *m, fw_state *s, const fw_request *r) {
    const fw_config *c = &m->cfg;
    size_t B = (size_t)r->batch, T = (size_t)r->seq, N = B * T, d = (size_t)c->d_model, ff = (size_t)c->d_ff;
    size_t qn = (size_t)c->n_heads * c->head_dim, Wqkv = qn + 2 * (size_t)c->n_kv_heads * c->head_dim;
    size_t ff_in = c->gated_mlp ? 2 * ff : ff, half = (size_t)c->rotary_dim / 2, V = (size_t)c->vocab;
    int head = r->logits || r->loss || r->loss_spliced;
    size_t chunk = head ? (size_t)head_chunk(s, c->vocab, r->batch * r->seq) : 0;
    size_t attn = (size_t)(s->attn_chunk < r->seq ? s->attn_chunk : r->seq) * T;
    size_t rope = (m->inv_freq_local ? 4 : 2) * T * (half ? half : 1); /* cos, sin (and Gemma-3's local ones) */
    if (buf_reserve(&s->x, N * d, "the residual stream") || buf_reserve(&s->rope, rope, "rotary tables") ||
        (r->splice && buf_reserve(&s->saved, N * d, "the saved residual stream")) ||
        buf_reserve(&s->xn, N * d, "normed activations") || buf_reserve(&s->qkv, N * Wqkv, "queries, keys and values") ||
        buf_reserve(&s->att, N * qn, "attention outputs") || buf_reserve(&s->attn_out, N * d, "attention projections") ||
        buf_reserve(&s->mlp_in, N * ff_in, "MLP inputs") || buf_reserve(&s->mlp_act, N * ff, "MLP activations") ||
        buf_reserve(&s->mlp_out, N * d, "MLP outputs") ||
        (head && (buf_reserve(&s->head, chunk * (V + d), "LM-head rows") || buf_reserve(&s->next, chunk, "next tokens"))))
        return SF_ERR;
    for (int w = 0; w < s->pool.n; w++)
        if (buf_reserve(&s->scores[w], head && V > attn ? V : attn, "attention scores")) return SF_ERR;
    return SF_OK;
}

static int forward(const fw_model *m, fw_state *s, const fw_request *r) {
    const fw_config *c = &m->cfg;
    int last = -1;
    if (check_request(m, r, &last) != SF_OK || reserve(m, s, r) != SF_OK) return SF_ERR;
    int T = r->seq, N = r->batch * T, d = c->d_model, half = c->rotary_dim / 2;
    size_t nd = (size_t)N * d;
    float *x = s->x.p;
    float *cos_t = s->rope.p, *sin_t = cos_t + (size_t)T * half;

    fw_embed_rows(m, r->tokens, (size_t)N, x);
    for (size_t i = 0; i < (size_t)N; i++) {
        if (m->pos_emb) add_inplace(x + i * d, m->pos_emb + (i % T) * d, (size_t)d);
        for (int k = 0; k < d && c->embed_scale != 0; k++) x[i * d + k] *= c->embed_scale;
    }
    if (half) rope_tables(m, 0, T, cos_t, sin_t);
    if (half && m->inv_freq_local) rope_tables(m, 1, T, sin_t + (size_t)T * half, sin_t + (size_t)2 * T * half);

    /* the clean pass, keeping the residual stream at the start of the splice's block (check_request
     * made last reach the block before it); then the spliced pass from there */
    int at = r->splice ? r->splice->hook.layer : last + 1;
    float *saved = r->splice ? s->saved.p : NULL;
    if (blocks(m, s, r, FW_CLEAN, 0, at - 1) != SF_OK) return SF_ERR;
    if (saved) memcpy(saved, x, nd * sizeof *x);
    if (blocks(m, s, r, FW_CLEAN, at, last) != SF_OK) return SF_ERR;
    if (r->logits || r->loss) lm_head(m, s, r, x, r->logits, r->loss);
    if (!saved) return SF_OK;
    memcpy(x, saved, nd * sizeof *x);
    if (blocks(m, s, r, FW_SPLICED, at, c->n_layers - 1) != SF_OK) return SF_ERR;
    lm_head(m, s, r, x, NULL, r->loss_spliced);
    return SF_OK;
}

int fw_forward(const fw_model *m, fw_state *s, const fw_request *r) {
    /* every sgemm is split over our own threads (linear, attention): OpenBLAS on one thread, also
     * with a pool of one, so that the results depend on `threads` only, not on OpenBLAS's split */
    sf_blas_single_enter(openblas_get_num_threads, openblas_set_num_threads);
    int rc = forward(m, s, r);
    sf_blas_single_leave(openblas_set_num_threads);
    return rc;
}
