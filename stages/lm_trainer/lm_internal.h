/* lm_internal.h — the structs behind lm_model.h's opaque types, shared by lm_model.c (building),
 * lm_forward.c and lm_backward.c (the passes). Not for callers outside this folder. */
#ifndef LM_INTERNAL_H
#define LM_INTERNAL_H

#include "lm_model.h"

#define LM_MAX_TOKENS (1 << 22)       /* B * T per call; keeps every size_t product far from overflow */
#define LM_MAX_THREADS 64            /* slices of a call, each on its own thread */
#define LM_HEAD_FLOATS ((size_t)8 << 20) /* logits held at once: rows of the head chunk x vocab */

/* One block's tensors (weights or gradients: the same views into either arena). */
typedef struct lm_block {
    float *ln1;   /* [d] input_layernorm */
    float *wqkv;  /* [(H + 2 KV) hd, d]: q_proj rows, then k_proj, then v_proj */
    float *wo;    /* [d, H hd] o_proj */
    float *ln2;   /* [d] post_attention_layernorm */
    float *w_in;  /* [2 ff, d]: gate_proj rows, then up_proj */
    float *w_out; /* [d, ff] down_proj */
} lm_block;

typedef struct lm_params {
    float *emb;       /* [V, d] embed_tokens */
    lm_block *blocks; /* [n_layers] */
    float *lnf;       /* [d] model.norm */
    float *head;      /* [V, d] lm_head, or emb when tied */
} lm_params;

struct lm_model {
    fw_config cfg;
    float *params, *grads; /* the arenas, n_arena floats each (zero padding between tensors) */
    size_t n_arena;
    lm_tensor *tensors;
    size_t n_tensors;
    lm_params w, g;   /* views of the weights and of their gradients */
    double *inv_freq; /* [rotary_dim / 2] */
};

/* Everything one thread's share of a [B, T] batch needs for the backward, N = B * T rows (B its
 * sequences), row b * T + t. Per-layer buffers are L consecutive slices. */
typedef struct lm_slice {
    int B;            /* capacity in sequences (of up to lm_work.T tokens) */
    int head_rows;    /* rows of logits per head chunk */
    float *x;         /* [L + 1][N, d] residual stream: x[l] enters block l, x[L] enters the final norm */
    float *xmid;      /* [L][N, d] residual after block l's attention */
    float *xn1;       /* [L][N, d] input_layernorm output */
    float *rstd1;     /* [L][N] its 1 / rms */
    float *qkv;       /* [L][N, (H + 2 KV) hd] q, k after RoPE; v */
    float *smax;      /* [L][B, H, T, 2] each score row's max and 1 / sum of exp(score - max): the
                       * backward recomputes the probabilities from q and k with them, so no
                       * [T, T] matrix per head is kept (memory linear in T) */
    float *probs;     /* [T, T] one head's attention probabilities (row i: keys 0..i, zero after) */
    float *atty;      /* [L][N, H hd] attention output before o_proj */
    float *xn2;       /* [L][N, d] post_attention_layernorm output */
    float *rstd2;     /* [L][N] */
    float *gu;        /* [L][N, 2 ff] gate, then up (before the activation) */
    float *act;       /* [L][N, ff] silu(gate) * up */
    float *xnf;       /* [N, d] final norm output */
    float *rstdf;     /* [N] */
    float *logits;    /* [head_rows, V] one chunk of logits, then of their gradient */
    /* backward scratch */
    float *dx;        /* [N, d] gradient of the residual stream */
    float *dxn;       /* [N, d] gradient of a norm's output */
    float *dqkv;      /* [N, (H + 2 KV) hd] */
    float *datty;     /* [N, H hd] */
    float *dgu;       /* [N, 2 ff] */
    float *dact;      /* [N, ff] */
    float *dprobs;    /* [T, T] */
    /* Where this slice's weight gradients go: slice 0 adds into the model's, the others into
     * their own arena (garena, n_arena floats), summed into the model's after every call. */
    float *garena;
    lm_params g;
} lm_slice;

struct lm_work {
    int B, T;         /* capacity */
    int n_slices;     /* threads: slice k takes sequences [B k / n, B (k + 1) / n) of a call */
    lm_slice *slices;
    float *rope_cos, *rope_sin; /* [T, rotary_dim / 2] */
};

/* The forward of one slice over tokens [B, T+1] (inputs :T, targets 1:): saves every activation
 * in s and returns the summed cross-entropy of its B * T positions. With gs != 0 (the gradient's
 * scale per position: the caller's scale / all positions of the call) the head chunk also leaves
 * d loss / d (final norm output) in s->dxn and adds the head's weight gradient into s->g. */
double lm_forward(const lm_model *m, const lm_work *w, lm_slice *s, const int32_t *tokens, int B, int T, float gs);
/* The backward from s->dxn (left by lm_forward) down to the embeddings, adding into s->g. */
void lm_backward(const lm_model *m, const lm_work *w, lm_slice *s, const int32_t *tokens, int B, int T);

/* One query head's causal attention probabilities P [T, T] for the sequence whose q/k/v rows start
 * at qkv; stats [T, 2]: each row's softmax max and 1 / sum, written (given 0) or used (given 1,
 * the backward: the forward's bits again). */
void lm_attention_probs(const fw_config *c, const float *qkv, int h, int T, float *P, float *stats, int given);

/* Shared elementwise steps. */
void lm_rmsnorm(const float *x, const float *wt, float *y, float *rstd, size_t rows, int d, float eps);
void lm_rope(float *qkv, const lm_work *w, const fw_config *c, int B, int T, int inverse);

#endif
