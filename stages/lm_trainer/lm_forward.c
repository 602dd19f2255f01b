/* lm_forward.c — the training forward of lm_model.h, top to bottom, saving what the backward
 * needs: embed -> per block [RMSNorm -> fused q/k/v sgemm -> RoPE -> causal GQA attention (sgemm
 * per sequence and head) -> o_proj sgemm added to the residual -> RMSNorm -> fused gate/up sgemm ->
 * SwiGLU -> down_proj sgemm added to the residual] -> final RMSNorm -> LM head and cross-entropy
 * in chunks of rows, where the training pass also starts the backward (the logits' gradient
 * never needs all rows at once). Each call covers one slice (a thread's share of the batch's
 * sequences, lm_model.c); every sgemm over tokens covers all of its rows. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "fw_vecmath.h"
#include "lm_internal.h"

/* RMSNorm of each row: y = x * r * wt with r = 1 / sqrt(mean(x^2) + eps), kept in rstd for the
 * backward. Sums of squares in 16 float partial sums (as PyTorch's vectorized float32 reductions). */
FW_VECTOR void lm_rmsnorm(const float *x, const float *wt, float *y, float *rstd, size_t rows, int d, float eps) {
    for (size_t i = 0; i < rows; i++) {
        const float *xi = x + i * d;
        float *yi = y + i * d;
        float part[16] = {0}, ss = 0;
        int j = 0;
        for (; j + 16 <= d; j += 16)
            for (int k = 0; k < 16; k++) part[k] += xi[j + k] * xi[j + k];
        for (int k = 0; k < 16; k++) ss += part[k];
        for (; j < d; j++) ss += xi[j] * xi[j];
        float r = 1.0f / sqrtf(ss / (float)d + eps);
        for (j = 0; j < d; j++) yi[j] = xi[j] * r * wt[j];
        rstd[i] = r;
    }
}

/* Rotates the first rotary_dim dims of every q and k head of each row, pairing dim i with
 * i + rotary_dim / 2 (Hugging Face's rotate_half); inverse applies the transposed rotation, which
 * is the backward of the rotation. */
void lm_rope(float *qkv, const lm_work *w, const fw_config *c, int B, int T, int inverse) {
    int hd = c->head_dim, half = c->rotary_dim / 2, heads = c->n_heads + c->n_kv_heads;
    size_t W = (size_t)(c->n_heads + 2 * c->n_kv_heads) * hd, N = (size_t)B * T;
    float sign = inverse ? -1.0f : 1.0f;
    for (size_t bt = 0; bt < N; bt++) {
        size_t t = bt % (size_t)T;
        const float *cs = w->rope_cos + t * half, *sn = w->rope_sin + t * half;
        for (int h = 0; h < heads; h++) { /* the q heads, then the k heads: adjacent in a row */
            float *v = qkv + bt * W + (size_t)h * hd;
            for (int i = 0; i < half; i++) {
                float a = v[i], b = v[i + half], s = sign * sn[i];
                v[i] = a * cs[i] - b * s;
                v[i + half] = b * cs[i] + a * s;
            }
        }
    }
}

/* Row i of P [T, T] holds query i's scores over keys 0..i: softmax over them, zero after, as
 * exp(s - max) * (1 / sum). With given, each row's max and 1 / sum are read from stats [T, 2]
 * (the backward's recomputation: the same bits as the forward's for the same scores); else they
 * are computed and stored there. */
FW_VECTOR static void softmax_causal(float *P, int T, float *stats, int given) {
    for (int i = 0; i < T; i++) {
        float *p = P + (size_t)i * T;
        float mx = given ? stats[2 * i] : max_f32(p, i + 1);
        for (int j = 0; j <= i; j++) p[j] = fw_exp(p[j] - mx);
        float inv = given ? stats[2 * i + 1] : 1.0f / sum_f32(p, i + 1);
        for (int j = 0; j <= i; j++) p[j] *= inv;
        for (int j = i + 1; j < T; j++) p[j] = 0.0f;
        if (!given) {
            stats[2 * i] = mx;
            stats[2 * i + 1] = inv;
        }
    }
}

/* The probabilities P [T, T] of query head h of the sequence whose q/k/v rows start at qkv: scores
 * scale q k^T, then softmax_causal (stats [T, 2] as there). */
void lm_attention_probs(const fw_config *c, const float *qkv, int h, int T, float *P, float *stats, int given) {
    int H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim, W = (H + 2 * KV) * hd;
    const float *q = qkv + (size_t)h * hd, *k = qkv + (size_t)(H + h / (H / KV)) * hd;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, c->attn_scale, q, W, k, W, 0.0f, P, T);
    softmax_causal(P, T, stats, given);
}

/* Causal grouped-query attention of one block: query head h reads key/value head h / (H / KV).
 * qkv [N, (H + 2 KV) hd] -> atty [N, H hd], the softmax statistics smax [B, H, T, 2]; P [T, T]
 * scratch. */
static void attention(const fw_config *c, const float *qkv, float *smax, float *atty, float *P, int B, int T) {
    int H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim, rep = H / KV;
    int W = (H + 2 * KV) * hd, A = H * hd;
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const float *seq = qkv + (size_t)b * T * W, *v = seq + (size_t)(H + KV + h / rep) * hd;
            lm_attention_probs(c, seq, h, T, P, smax + ((size_t)b * H + h) * T * 2, 0);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, 1.0f, P, T, v, W, 0.0f,
                        atty + (size_t)b * T * A + (size_t)h * hd, A);
        }
}

/* SiLU(gate) * up of each row; gu [N, 2 ff] (gate, then up) -> act [N, ff]. */
FW_VECTOR static void swiglu(const float *gu, float *act, size_t N, int ff) {
    for (size_t i = 0; i < N; i++) {
        const float *g = gu + i * 2 * ff, *u = g + ff;
        float *a = act + i * ff;
        for (int k = 0; k < ff; k++) a[k] = fw_silu(g[k]) * u[k];
    }
}

/* Logits and cross-entropy of rows [r0, r0 + rows); with gs != 0 the logits become their gradient,
 * gs * (softmax - onehot(target)), in place (without, they become exp(logit - max)). Returns the
 * summed loss of the rows. */
FW_VECTOR static double head_ce(float *logits, const int32_t *tokens, int T, size_t r0, int rows, int V, float gs) {
    double loss = 0;
    for (int i = 0; i < rows; i++) {
        size_t r = r0 + (size_t)i;
        int32_t tgt = tokens[(r / T) * (size_t)(T + 1) + r % T + 1];
        float *l = logits + (size_t)i * V, mx = max_f32(l, V), lt = l[tgt];
        for (int j = 0; j < V; j++) l[j] = fw_exp(l[j] - mx);
        float sum = sum_f32(l, V);
        loss += mx + log((double)sum) - lt;
        if (gs != 0.0f) {
            float k = gs / sum;
            for (int j = 0; j < V; j++) l[j] *= k;
            l[tgt] -= gs;
        }
    }
    return loss;
}

double lm_forward(const lm_model *m, const lm_work *w, lm_slice *s, const int32_t *tokens, int B, int T, float gs) {
    const fw_config *c = &m->cfg;
    int d = c->d_model, V = c->vocab, ff = c->d_ff;
    int QKV = (c->n_heads + 2 * c->n_kv_heads) * c->head_dim, A = c->n_heads * c->head_dim;
    size_t N = (size_t)B * T;

    /* embed */
    for (size_t r = 0; r < N; r++)
        memcpy(s->x + r * d, m->w.emb + (size_t)tokens[(r / T) * (T + 1) + r % T] * d, (size_t)d * sizeof(float));

    for (int l = 0; l < c->n_layers; l++) {
        const lm_block *p = &m->w.blocks[l];
        float *x = s->x + l * N * d, *xnext = s->x + (l + 1) * N * d, *xmid = s->xmid + l * N * d;
        float *xn1 = s->xn1 + l * N * d, *xn2 = s->xn2 + l * N * d, *qkv = s->qkv + l * N * QKV;
        float *atty = s->atty + l * N * A, *gu = s->gu + l * N * 2 * ff, *act = s->act + l * N * ff;
        /* attention */
        lm_rmsnorm(x, p->ln1, xn1, s->rstd1 + l * N, N, d, c->norm_eps);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, QKV, d, 1.0f, xn1, d, p->wqkv, d, 0.0f, qkv, QKV);
        lm_rope(qkv, w, c, B, T, 0);
        attention(c, qkv, s->smax + (size_t)l * B * c->n_heads * T * 2, atty, s->probs, B, T);
        memcpy(xmid, x, N * d * sizeof(float));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, d, A, 1.0f, atty, A, p->wo, A, 1.0f, xmid, d);
        /* MLP */
        lm_rmsnorm(xmid, p->ln2, xn2, s->rstd2 + l * N, N, d, c->norm_eps);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, 2 * ff, d, 1.0f, xn2, d, p->w_in, d, 0.0f, gu,
                    2 * ff);
        swiglu(gu, act, N, ff);
        memcpy(xnext, xmid, N * d * sizeof(float));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, d, ff, 1.0f, act, ff, p->w_out, ff, 1.0f, xnext, d);
    }

    /* final norm, head and loss, in chunks of rows */
    lm_rmsnorm(s->x + (size_t)c->n_layers * N * d, m->w.lnf, s->xnf, s->rstdf, N, d, c->norm_eps);
    double sum = 0;
    for (size_t r0 = 0; r0 < N; r0 += (size_t)s->head_rows) {
        int rows = (int)(N - r0 < (size_t)s->head_rows ? N - r0 : (size_t)s->head_rows);
        const float *xr = s->xnf + r0 * d;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, V, d, 1.0f, xr, d, m->w.head, d, 0.0f, s->logits, V);
        sum += head_ce(s->logits, tokens, T, r0, rows, V, gs);
        if (gs != 0.0f) {
            /* head weight += dlogits^T xnf; d xnf = dlogits head */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, V, d, rows, 1.0f, s->logits, V, xr, d, 1.0f,
                        s->g.head, d);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, d, V, 1.0f, s->logits, V, m->w.head, d, 0.0f,
                        s->dxn + r0 * d, d);
        }
    }
    return sum;
}
