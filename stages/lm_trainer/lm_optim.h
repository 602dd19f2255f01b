/* lm_optim.h — what turns gradients into weight updates when training an lm_model: the learning
 * rate schedules (constant, cosine, warmup-stable-decay, each after a linear warmup), global-norm
 * gradient clipping, AdamW with weight decay per parameter group, and the seeded initialisation of
 * a new model. Runtime-independent (no sf_ctx): the lm_trainer stage and the tests drive it.
 *
 * Semantics are PyTorch's, so a run can be compared with tools/train_suite.py step by step:
 *   AdamW      torch.optim.AdamW (decoupled decay w *= 1 - lr wd, bias-corrected moments,
 *              denominator sqrt(v) / sqrt(1 - beta2^t) + eps); tensors with decay = 0 (norms,
 *              biases) get no weight decay, as train_suite's two parameter groups;
 *   clipping   torch.nn.utils.clip_grad_norm_: one L2 norm over every gradient, each scaled by
 *              max_norm / (norm + 1e-6) when that is below 1;
 *   warmup     step s < warmup (0-based) uses lr (s + 1) / warmup (train_suite's lr_at).
 * Every loop runs in a fixed order on one thread (sums in double), so an update depends only on
 * its inputs: the same weights, gradients and step give the same bits on any thread count.
 */
#ifndef LM_OPTIM_H
#define LM_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "lm_model.h"

/* ---- learning rate ---- */

typedef enum lm_sched_kind {
    LM_SCHED_CONSTANT, /* lr after the warmup */
    LM_SCHED_COSINE,   /* cosine from lr to min_ratio * lr over the steps after the warmup */
    LM_SCHED_WSD,      /* warmup, stable at lr, then linear to min_ratio * lr over the last decay steps */
} lm_sched_kind;

typedef struct lm_schedule {
    lm_sched_kind kind;
    double lr;        /* peak learning rate */
    int64_t warmup;   /* linear warmup steps (0: none) */
    int64_t total;    /* steps of the whole run (cosine, wsd) */
    int64_t decay;    /* wsd: steps of the final decay, at most total - warmup */
    double min_ratio; /* cosine, wsd: the last lr as a fraction of lr */
} lm_schedule;

/* "constant", "cosine" or "wsd" into *out; SF_ERR (sf_fail listing them) otherwise. */
int lm_schedule_parse(const char *name, lm_sched_kind *out);
/* SF_OK, or SF_ERR naming the field that is out of range. */
int lm_schedule_check(const lm_schedule *s);
/* The learning rate of 0-based step `step`. */
double lm_schedule_lr(const lm_schedule *s, int64_t step);

/* ---- gradients ---- */

/* The L2 norm of every gradient together (double accumulation, tensor order). */
double lm_grad_norm(const lm_tensor *t, size_t nt);
/* Scales every gradient by max_norm / (norm + 1e-6) when that is below 1 (max_norm <= 0: never);
 * returns the norm before clipping. */
double lm_clip_grads(lm_tensor *t, size_t nt, double max_norm);

/* ---- AdamW ---- */

typedef struct lm_adamw_opts {
    double beta1, beta2, eps, weight_decay;
} lm_adamw_opts;

typedef struct lm_adamw {
    lm_adamw_opts o;
    int64_t t;    /* updates taken (torch's state["step"]) */
    size_t n;     /* elements of every tensor together */
    float *m, *v; /* [n] first and second moments, the tensors one after another in their order */
} lm_adamw;

/* Moments for tensors of n elements in all, zero. SF_ERR on bad options or out of memory. */
int lm_adamw_init(lm_adamw *a, const lm_adamw_opts *o, size_t n);
void lm_adamw_free(lm_adamw *a);
/* One update of every tensor's weights from its gradient at learning rate lr. The tensors must be
 * those (and in the order) the moments were made for: nt tensors of a->n elements together. */
void lm_adamw_step(lm_adamw *a, lm_tensor *t, size_t nt, double lr);

/* ---- one training step ---- */

/* Zeroes the gradients, runs accum micro-batches of B sequences (tokens: accum consecutive
 * [B, T+1] blocks) each with gradient scale 1 / accum, clips to clip (<= 0: no clipping) and takes
 * one AdamW step at lr. *loss: the mean loss over every micro-batch; *grad_norm: the norm before
 * clipping. SF_ERR (lm_loss_grad's error, e.g. a token outside the vocabulary, or a non-finite
 * loss) leaves the weights as they were. */
int lm_train_step(lm_model *m, lm_work *w, lm_adamw *a, const int32_t *tokens, int B, int T, int accum,
                  double lr, double clip, double *loss, double *grad_norm);

/* ---- initialisation ---- */

/* splitmix64's step: a well-mixed 64-bit value of x (the initialisation's and the epochs' generator). */
uint64_t lm_splitmix64(uint64_t x);

/* tools/llama_suite.py's init_weights scheme: one-dimensional tensors (the RMSNorm weights) 1,
 * every matrix normal(0, std). The normals come from a counter-based generator keyed by seed, the
 * tensor's name and the element's index, so they depend on nothing else (not the thread count nor
 * the order tensors are visited). They are not torch.randn's numbers: a run that must start where
 * PyTorch starts loads its step-0 checkpoint instead (init_from). */
void lm_init_weights(lm_tensor *t, size_t nt, uint64_t seed, double std);

#endif
