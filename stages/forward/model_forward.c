/* model_forward.c — the batched causal forward of model.h, top to bottom: embed, then per block
 * norm -> fused qkv sgemm -> RoPE -> causal attention (sgemm per head and query chunk) -> output
 * sgemm -> norm -> MLP sgemms, copying out hook points on the way; then the final norm and head. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

#define FW_MAX_TOKENS (1 << 22) /* per call; keeps every size_t product far from overflow */
#define FW_HEAD_ROWS 128        /* logits are computed this many rows at a time */

typedef struct fw_buf {
    float *p;
    size_t cap;
} fw_buf;

struct fw_state {
    int attn_chunk;
    fw_buf x;        /* [N, d] residual stream */
    fw_buf xn;       /* [N, d] normed input of a sublayer */
    fw_buf qkv;      /* [N, (H + 2*KV) * hd] */
    fw_buf att;      /* [N, H * hd] attention output of all heads, before the output projection */
    fw_buf attn_out; /* [N, d] */
    fw_buf mlp_in;   /* [N, ff] or [N, 2*ff] gated */
    fw_buf mlp_act;  /* [N, ff] */
    fw_buf mlp_out;  /* [N, d] */
    fw_buf scores;   /* [chunk, T] */
    fw_buf rope;     /* [T, rotary_dim / 2] cos, then the same for sin */
    fw_buf head;     /* [FW_HEAD_ROWS, vocab] logits when the caller keeps none, and normed rows */
};

static float *buf_get(fw_buf *b, size_t n) {
    if (n > b->cap) {
        free(b->p);
        if (posix_memalign((void **)&b->p, 64, n * sizeof(float)) != 0) {
            fprintf(stderr, "forward: out of memory (%zu floats)\n", n);
            abort();
        }
        b->cap = n;
    }
    return b->p;
}

fw_state *fw_state_new(void) {
    fw_state *s = calloc(1, sizeof *s);
    if (!s) abort();
    s->attn_chunk = 256;
    return s;
}

void fw_state_set_attn_chunk(fw_state *s, int chunk) { s->attn_chunk = chunk > 0 ? chunk : 1; }

void fw_state_free(fw_state *s) {
    if (!s) return;
    fw_buf *all[] = {&s->x, &s->xn, &s->qkv, &s->att, &s->attn_out, &s->mlp_in,
                     &s->mlp_act, &s->mlp_out, &s->scores, &s->rope, &s->head};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) free(all[i]->p);
    free(s);
}

void fw_set_threads(int n) {
    if (n > 0) openblas_set_num_threads(n);
}

/* ------------------------------------------------------------------------------------------ */
/* Hooks                                                                                       */

static const char *const hook_names[] = {"resid_pre", "attn_out", "mlp_hidden", "mlp_out", "resid_post"};

int fw_hook_parse(const char *name, fw_hook *out) {
    for (int k = 0; k < (int)(sizeof hook_names / sizeof *hook_names); k++) {
        size_t n = strlen(hook_names[k]);
        if (strncmp(name, hook_names[k], n) != 0 || name[n] != '.') continue;
        const char *p = name + n + 1;
        char *end;
        long layer = strtol(p, &end, 10);
        if (p[0] < '0' || p[0] > '9' || *end || layer > 100000) break;
        out->kind = (fw_hook_kind)k;
        out->layer = (int)layer;
        return SF_OK;
    }
    return sf_fail("bad hook \"%s\" (expected resid_pre.L, attn_out.L, mlp_hidden.L, mlp_out.L or resid_post.L)", name);
}

void fw_hook_name(fw_hook h, char *buf, size_t len) { snprintf(buf, len, "%s.%d", hook_names[h.kind], h.layer); }

int fw_hook_width(const fw_config *cfg, fw_hook h) { return h.kind == FW_MLP_HIDDEN ? cfg->d_ff : cfg->d_model; }

static void hook_copy(const fw_request *r, fw_hook_kind kind, int layer, const float *src, size_t n) {
    for (int i = 0; i < r->n_hooks; i++)
        if (r->hooks[i].kind == kind && r->hooks[i].layer == layer) memcpy(r->hook_out[i], src, n * sizeof *src);
}

/* ------------------------------------------------------------------------------------------ */
/* Building blocks                                                                             */

/* y[rows, out] = x[rows, in] W^T (+ b), with W [out, in] as nn.Linear stores it. */
static void linear(const float *x, const float *w, const float *b, float *y, int rows, int in, int out) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out, in, 1.0f, x, in, w, in, 0.0f, y, out);
    if (b)
        for (size_t i = 0; i < (size_t)rows; i++)
            for (int j = 0; j < out; j++) y[i * out + j] += b[j];
}

/* RMSNorm (b == NULL) or LayerNorm, row by row; statistics accumulate in double. */
static void norm(const fw_config *c, const float *w, const float *b, const float *x, float *y, int rows) {
    int d = c->d_model;
    for (size_t i = 0; i < (size_t)rows; i++) {
        const float *xi = x + i * d;
        float *yi = y + i * d;
        double mean = 0, var = 0;
        if (c->norm == FW_LAYERNORM) {
            for (int j = 0; j < d; j++) mean += xi[j];
            mean /= d;
        }
        for (int j = 0; j < d; j++) var += (xi[j] - mean) * (xi[j] - mean);
        float inv = (float)(1.0 / sqrt(var / d + c->norm_eps)), m = (float)mean;
        if (b)
            for (int j = 0; j < d; j++) yi[j] = (xi[j] - m) * inv * w[j] + b[j];
        else
            for (int j = 0; j < d; j++) yi[j] = xi[j] * inv * w[j];
    }
}

void fw_final_norm(const fw_model *m, const float *x, float *y, int rows) {
    norm(&m->cfg, m->lnf_w, m->lnf_b, x, y, rows);
}

static float activation(fw_act a, float x) {
    switch (a) {
    case FW_ACT_SILU: return x / (1.0f + expf(-x));
    case FW_ACT_GELU: return 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2));
    case FW_ACT_GELU_TANH: return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    case FW_ACT_RELU: return x > 0 ? x : 0;
    }
    return x;
}

/* cos and sin of position t times each inverse frequency, for t in [0, T). Dynamic NTK scaling
 * raises the base once the sequence is longer than max_position_embeddings, as Hugging Face does. */
static void rope_tables(const fw_model *m, int T, float *cos_t, float *sin_t) {
    const fw_config *c = &m->cfg;
    int half = c->rotary_dim / 2;
    double base = c->rope_theta;
    int dynamic = c->rope_scaling == FW_ROPE_DYNAMIC && T > c->max_pos;
    if (dynamic)
        base *= pow(c->rope_factor * T / c->max_pos - (c->rope_factor - 1), (double)c->rotary_dim / (c->rotary_dim - 2));
    for (int i = 0; i < half; i++) {
        double f = dynamic ? 1.0 / pow(base, (2.0 * i) / c->rotary_dim) : m->inv_freq[i];
        for (int t = 0; t < T; t++) {
            cos_t[(size_t)t * half + i] = (float)cos(t * f);
            sin_t[(size_t)t * half + i] = (float)sin(t * f);
        }
    }
}

/* Rotates the first rotary_dim dims of every q and k head in place, pairing dim i with
 * i + rotary_dim/2 (Hugging Face's rotate_half convention, also GPT-NeoX's). */
static void rope_apply(const fw_config *c, float *qkv, int B, int T, const float *cos_t, const float *sin_t) {
    int hd = c->head_dim, half = c->rotary_dim / 2, heads = c->n_heads + c->n_kv_heads;
    int W = (c->n_heads + 2 * c->n_kv_heads) * hd;
    for (size_t bt = 0; bt < (size_t)B * T; bt++) {
        size_t t = bt % (size_t)T;
        const float *cs = cos_t + t * half, *sn = sin_t + t * half;
        for (int h = 0; h < heads; h++) { /* the q heads, then the k heads: adjacent in a row */
            float *v = qkv + bt * W + (size_t)h * hd;
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half];
                v[i] = a * cs[i] - b * sn[i];
                v[i + half] = b * cs[i] + a * sn[i];
            }
        }
    }
}

/* Causal softmax attention of every head, written head by head into att [B*T, H*hd]. Queries go
 * in chunks so that a chunk only scores the keys up to its last position (half the work of a
 * full T x T product) and the score buffer stays chunk x T. With GQA, query head h reads
 * key/value head h / (H / KV). */
static void attention(const fw_config *c, fw_state *s, const float *qkv, float *att, int B, int T, float scale) {
    int H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim, group = H / KV;
    int W = (H + 2 * KV) * hd, chunk = s->attn_chunk < T ? s->attn_chunk : T;
    float *S = buf_get(&s->scores, (size_t)chunk * T);
    for (int b = 0; b < B; b++) {
        const float *base = qkv + (size_t)b * T * W;
        for (int h = 0; h < H; h++) {
            const float *q = base + (size_t)h * hd;
            const float *k = base + (size_t)(H + h / group) * hd;
            const float *v = base + (size_t)(H + KV + h / group) * hd;
            for (int i0 = 0; i0 < T; i0 += chunk) {
                int rows = T - i0 < chunk ? T - i0 : chunk, keys = i0 + rows;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, keys, hd, scale, q + (size_t)i0 * W, W, k,
                            W, 0.0f, S, keys);
                for (int r = 0; r < rows; r++) {
                    float *sr = S + (size_t)r * keys;
                    int n = i0 + r + 1; /* keys this query may see */
                    float mx = sr[0];
                    for (int j = 1; j < n; j++) mx = sr[j] > mx ? sr[j] : mx;
                    float sum = 0;
                    for (int j = 0; j < n; j++) sum += (sr[j] = expf(sr[j] - mx));
                    float inv = 1.0f / sum;
                    for (int j = 0; j < n; j++) sr[j] *= inv;
                    for (int j = n; j < keys; j++) sr[j] = 0;
                }
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, hd, keys, 1.0f, S, keys, v, W, 0.0f,
                            att + ((size_t)b * T + i0) * H * hd + (size_t)h * hd, H * hd);
            }
        }
    }
}

static void add_inplace(float *x, const float *y, size_t n) {
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

/* Final norm and LM head, FW_HEAD_ROWS rows at a time so logits of a large vocabulary need not
 * all exist at once; loss[t] = logsumexp(logits[t]) - logits[t][token t+1]. */
static void lm_head(const fw_model *m, fw_state *s, const fw_request *r, const float *x) {
    const fw_config *c = &m->cfg;
    int V = c->vocab, d = c->d_model, N = r->batch * r->seq;
    float *buf = buf_get(&s->head, (size_t)FW_HEAD_ROWS * (V + d)), *xn = buf + (size_t)FW_HEAD_ROWS * V;
    for (int i0 = 0; i0 < N; i0 += FW_HEAD_ROWS) {
        int rows = N - i0 < FW_HEAD_ROWS ? N - i0 : FW_HEAD_ROWS;
        float *lg = r->logits ? r->logits + (size_t)i0 * V : buf;
        norm(c, m->lnf_w, m->lnf_b, x + (size_t)i0 * d, xn, rows);
        linear(xn, m->lm_head, NULL, lg, rows, d, V);
        if (!r->loss) continue;
        for (int k = 0; k < rows; k++) {
            int i = i0 + k, t = i % r->seq;
            const float *l = lg + (size_t)k * V;
            if (t == r->seq - 1) {
                r->loss[i] = NAN;
                continue;
            }
            float mx = l[0];
            for (int j = 1; j < V; j++) mx = l[j] > mx ? l[j] : mx;
            double sum = 0;
            for (int j = 0; j < V; j++) sum += exp((double)l[j] - mx);
            r->loss[i] = (float)(mx + log(sum) - l[r->tokens[i + 1]]);
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* The forward                                                                                 */

static int check_request(const fw_model *m, const fw_request *r, int *last) {
    const fw_config *c = &m->cfg;
    if (r->batch < 1 || r->seq < 1 || (int64_t)r->batch * r->seq > FW_MAX_TOKENS)
        return sf_fail("batch %d x %d tokens: must be non-empty and at most %d tokens", r->batch, r->seq, FW_MAX_TOKENS);
    if (c->learned_pos && r->seq > c->max_pos)
        return sf_fail("sequence of %d tokens is longer than the model's %d positions", r->seq, c->max_pos);
    if (c->sliding_window > 0 && r->seq > c->sliding_window)
        return sf_fail("sequence of %d tokens is longer than the sliding window (%d), which is not implemented",
                       r->seq, c->sliding_window);
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
    if (r->logits || r->loss) {
        if (!m->lm_head || m->n_loaded < c->n_layers)
            return sf_fail("logits or loss need all blocks and the LM head loaded");
        *last = c->n_layers - 1;
    }
    return SF_OK;
}

int fw_forward(const fw_model *m, fw_state *s, const fw_request *r) {
    const fw_config *c = &m->cfg;
    int last = -1;
    if (check_request(m, r, &last) != SF_OK) return SF_ERR;
    int B = r->batch, T = r->seq, N = B * T, d = c->d_model, ff = c->d_ff;
    int qn = c->n_heads * c->head_dim, Wqkv = qn + 2 * c->n_kv_heads * c->head_dim;
    int ff_in = c->gated_mlp ? 2 * ff : ff, half = c->rotary_dim / 2;
    size_t nd = (size_t)N * d;
    float *x = buf_get(&s->x, nd), *xn = buf_get(&s->xn, nd), *qkv = buf_get(&s->qkv, (size_t)N * Wqkv);
    float *att = buf_get(&s->att, (size_t)N * qn), *attn_out = buf_get(&s->attn_out, nd);
    float *mlp_in = buf_get(&s->mlp_in, (size_t)N * ff_in), *mlp_act = buf_get(&s->mlp_act, (size_t)N * ff);
    float *mlp_out = buf_get(&s->mlp_out, nd);
    float *cos_t = buf_get(&s->rope, (size_t)2 * T * (half ? half : 1)), *sin_t = cos_t + (size_t)T * half;

    for (size_t i = 0; i < (size_t)N; i++) {
        memcpy(x + i * d, m->tok_emb + (size_t)r->tokens[i] * d, (size_t)d * sizeof *x);
        if (m->pos_emb) add_inplace(x + i * d, m->pos_emb + (i % T) * d, (size_t)d);
    }
    if (half) rope_tables(m, T, cos_t, sin_t);

    for (int l = 0; l <= last; l++) {
        const fw_layer *ly = &m->layers[l];
        hook_copy(r, FW_RESID_PRE, l, x, nd);

        /* attention */
        norm(c, ly->ln1_w, ly->ln1_b, x, xn, N);
        linear(xn, ly->wqkv, ly->bqkv, qkv, N, d, Wqkv);
        if (half) rope_apply(c, qkv, B, T, cos_t, sin_t);
        attention(c, s, qkv, att, B, T, c->attn_scale / (c->attn_scale_by_layer ? (float)(l + 1) : 1.0f));
        linear(att, ly->wo, ly->bo, attn_out, N, qn, d);
        hook_copy(r, FW_ATTN_OUT, l, attn_out, nd);

        /* MLP: on x + attn_out, or on x itself with GPT-NeoX's parallel residual */
        if (!c->parallel_residual) add_inplace(x, attn_out, nd);
        norm(c, ly->ln2_w, ly->ln2_b, x, xn, N);
        if (c->parallel_residual) add_inplace(x, attn_out, nd);
        linear(xn, ly->w_in, ly->b_in, mlp_in, N, d, ff_in);
        for (size_t i = 0; i < (size_t)N; i++) {
            const float *in = mlp_in + i * ff_in;
            float *a = mlp_act + i * ff;
            if (c->gated_mlp)
                for (int j = 0; j < ff; j++) a[j] = activation(c->act, in[j]) * in[ff + j];
            else
                for (int j = 0; j < ff; j++) a[j] = activation(c->act, in[j]);
        }
        hook_copy(r, FW_MLP_HIDDEN, l, mlp_act, (size_t)N * ff);
        linear(mlp_act, ly->w_out, ly->b_out, mlp_out, N, ff, d);
        hook_copy(r, FW_MLP_OUT, l, mlp_out, nd);
        add_inplace(x, mlp_out, nd);
        hook_copy(r, FW_RESID_POST, l, x, nd);
    }
    if (r->logits || r->loss) lm_head(m, s, r, x);
    return SF_OK;
}
