/* lm_backward.c — the backward of lm_forward.c, bottom to top, one step per forward step in
 * reverse: final RMSNorm -> per block (last first) [down_proj -> SwiGLU -> gate/up -> RMSNorm ->
 * o_proj -> attention (probabilities recomputed; softmax, scores, values) -> RoPE -> q/k/v -> RMSNorm], the residual
 * gradient dx passing straight through each block's two additions -> embedding rows. Weight
 * gradients are added (beta 1) into the slice's gradients; sums over rows run in a fixed order,
 * so a run is deterministic for a given batch shape and thread count. */
#include <cblas.h>
#include <math.h>
#include <string.h>

#include "fw_vecmath.h"
#include "lm_internal.h"

/* y = x * r * wt with r = 1 / sqrt(mean(x^2) + eps) per row. Given dy, adds the weight's gradient
 * sum_rows dy * x * r into gw and writes (add 0) or adds (add 1) the input's gradient
 *   dx = r * (dy * wt) - x * r^3 / d * sum_j(dy_j * wt_j * x_j)
 * into dx. */
FW_VECTOR static void rmsnorm_backward(const float *x, const float *wt, const float *rstd, const float *dy, float *gw,
                                       float *dx, size_t rows, int d, int add) {
    for (size_t i = 0; i < rows; i++) {
        const float *xi = x + i * d, *dyi = dy + i * d;
        float *dxi = dx + i * d, r = rstd[i];
        float part[16] = {0}, dot = 0;
        int j = 0;
        for (; j + 16 <= d; j += 16)
            for (int k = 0; k < 16; k++) part[k] += dyi[j + k] * wt[j + k] * xi[j + k];
        for (int k = 0; k < 16; k++) dot += part[k];
        for (; j < d; j++) dot += dyi[j] * wt[j] * xi[j];
        float k = dot * r * r * r / (float)d;
        for (j = 0; j < d; j++) {
            float v = r * dyi[j] * wt[j] - xi[j] * k;
            dxi[j] = add ? dxi[j] + v : v;
            gw[j] += dyi[j] * xi[j] * r;
        }
    }
}

/* a = silu(g) * u: dg = da * u * s * (1 + g * (1 - s)) with s = sigmoid(g), du = da * silu(g). */
FW_VECTOR static void swiglu_backward(const float *gu, const float *dact, float *dgu, size_t N, int ff) {
    for (size_t i = 0; i < N; i++) {
        const float *g = gu + i * 2 * ff, *u = g + ff, *da = dact + i * ff;
        float *dg = dgu + i * 2 * ff, *du = dg + ff;
        for (int k = 0; k < ff; k++) {
            float s = fw_sigmoid(g[k]);
            dg[k] = da[k] * u[k] * s * (1.0f + g[k] * (1.0f - s));
            du[k] = da[k] * g[k] * s;
        }
    }
}

/* The backward of one block's attention, per sequence and query head, from datty [N, H hd] into
 * dqkv [N, (H + 2 KV) hd] (zeroed first: the heads of a group add into their shared k and v). The
 * probabilities are recomputed into P [T, T] from q, k and the forward's softmax statistics smax:
 *   O = P V            dV += P^T dO,  dP = dO V^T
 *   P = softmax(S)     dS = P * (dP - rowsum(dP * P))
 *   S = scale Q K^T    dQ = scale dS K,  dK += scale dS^T Q */
static void attention_backward(const fw_config *c, const float *qkv, float *smax, const float *datty, float *dqkv,
                               float *P, float *dP, int B, int T) {
    int H = c->n_heads, KV = c->n_kv_heads, hd = c->head_dim, rep = H / KV;
    int W = (H + 2 * KV) * hd, A = H * hd;
    float scale = c->attn_scale;
    memset(dqkv, 0, (size_t)B * T * W * sizeof(float));
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            size_t row0 = (size_t)b * T;
            size_t qo = (size_t)h * hd, ko = (size_t)(H + h / rep) * hd, vo = (size_t)(H + KV + h / rep) * hd;
            const float *q = qkv + row0 * W + qo, *k = qkv + row0 * W + ko, *v = qkv + row0 * W + vo;
            float *dq = dqkv + row0 * W + qo, *dk = dqkv + row0 * W + ko, *dv = dqkv + row0 * W + vo;
            const float *dO = datty + row0 * A + qo;
            lm_attention_probs(c, qkv + row0 * W, h, T, P, smax + ((size_t)b * H + h) * T * 2, 1);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, 1.0f, P, T, dO, A, 1.0f, dv, W);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hd, 1.0f, dO, A, v, W, 0.0f, dP, T);
            for (int i = 0; i < T; i++) {
                const float *p = P + (size_t)i * T;
                float *dp = dP + (size_t)i * T;
                double dot = 0;
                for (int j = 0; j <= i; j++) dot += (double)dp[j] * p[j];
                for (int j = 0; j <= i; j++) dp[j] = p[j] * (dp[j] - (float)dot);
                for (int j = i + 1; j < T; j++) dp[j] = 0.0f;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hd, T, scale, dP, T, k, W, 1.0f, dq, W);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hd, T, scale, dP, T, q, W, 1.0f, dk, W);
        }
}

void lm_backward(const lm_model *m, const lm_work *w, lm_slice *s, const int32_t *tokens, int B, int T) {
    const fw_config *c = &m->cfg;
    int d = c->d_model, ff = c->d_ff, L = c->n_layers;
    int QKV = (c->n_heads + 2 * c->n_kv_heads) * c->head_dim, A = c->n_heads * c->head_dim;
    size_t N = (size_t)B * T;

    /* final norm: s->dxn holds d loss / d xnf (from the head, in lm_forward) */
    rmsnorm_backward(s->x + (size_t)L * N * d, m->w.lnf, s->rstdf, s->dxn, s->g.lnf, s->dx, N, d, 0);

    for (int l = L - 1; l >= 0; l--) {
        const lm_block *p = &m->w.blocks[l];
        lm_block *g = &s->g.blocks[l];
        const float *x = s->x + l * N * d, *xmid = s->xmid + l * N * d;
        const float *xn1 = s->xn1 + l * N * d, *xn2 = s->xn2 + l * N * d, *qkv = s->qkv + l * N * QKV;
        const float *atty = s->atty + l * N * A, *gu = s->gu + l * N * 2 * ff, *act = s->act + l * N * ff;

        /* MLP: x_next = xmid + act down^T; dx is d loss / d x_next and becomes d loss / d xmid */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, ff, (int)N, 1.0f, s->dx, d, act, ff, 1.0f, g->w_out, ff);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, ff, d, 1.0f, s->dx, d, p->w_out, ff, 0.0f,
                    s->dact, ff);
        swiglu_backward(gu, s->dact, s->dgu, N, ff);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, 2 * ff, d, (int)N, 1.0f, s->dgu, 2 * ff, xn2, d, 1.0f,
                    g->w_in, d);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, d, 2 * ff, 1.0f, s->dgu, 2 * ff, p->w_in, d, 0.0f,
                    s->dxn, d);
        rmsnorm_backward(xmid, p->ln2, s->rstd2 + l * N, s->dxn, g->ln2, s->dx, N, d, 1);

        /* attention: xmid = x + atty o^T; dx becomes d loss / d x */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, A, (int)N, 1.0f, s->dx, d, atty, A, 1.0f, g->wo, A);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, A, d, 1.0f, s->dx, d, p->wo, A, 0.0f, s->datty, A);
        attention_backward(c, qkv, s->smax + (size_t)l * B * c->n_heads * T * 2, s->datty, s->dqkv, s->probs,
                           s->dprobs, B, T);
        lm_rope(s->dqkv, w, c, B, T, 1);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, QKV, d, (int)N, 1.0f, s->dqkv, QKV, xn1, d, 1.0f, g->wqkv, d);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, d, QKV, 1.0f, s->dqkv, QKV, p->wqkv, d, 0.0f,
                    s->dxn, d);
        rmsnorm_backward(x, p->ln1, s->rstd1 + l * N, s->dxn, g->ln1, s->dx, N, d, 1);
    }

    /* embedding rows, in token order */
    for (size_t r = 0; r < N; r++) {
        float *ge = s->g.emb + (size_t)tokens[(r / T) * (T + 1) + r % T] * d;
        const float *dr = s->dx + r * d;
        for (int j = 0; j < d; j++) ge[j] += dr[j];
    }
}
