/* sae.h — TopK sparse autoencoder: model, encoding, files (sae_lib), and its trainer.
 *
 *   z = TopK(ReLU(W_enc (x - b_dec) + b_enc)),   x_hat = W_dec^T z + b_dec
 *
 * x is an activation after the model's input normalisation (sae_norm_mode). In memory both weight
 * matrices are [n][d] row-major: row i of W_enc is latent i's encoder direction, row i of W_dec its
 * decoder direction (unit norm after training). Files:
 *   paper (llm-jp-sae TopKSAE): config.json + model.safetensors: encoder.weight [n,d],
 *       encoder.bias [n], decoder.weight [d,n], b_dec [d]
 *   sparsify (EleutherAI):      cfg.json + sae.safetensors: encoder.weight [n,d], encoder.bias [n],
 *       W_dec [n,d], b_dec [d]
 *   saelens (SAELens v6):       cfg.json + sae_weights.safetensors: W_enc [d,n], W_dec [n,d],
 *       b_enc [n], b_dec [d]; a unit normalisation as its normalize_activations "constant_norm_rescale"
 *       (x sqrt(d) / ||x||, weights scaled to match)
 * and, read only: llm-jp-sae's 2025-03 release, sae.pth (a torch.save state dict, bf16:
 * encoder.weight [n,d], encoder.bias [n], W_dec [n,d], b_dec [d]; sae_pth.h), or that state dict
 * converted to safetensors. sae_load detects the layout from the files present. Other programs (the feature miner) link
 * sae_lib (meson: sae_lib_dep) and use the "model" part only.
 */
#ifndef SAE_H
#define SAE_H

#include <stdint.h>

#include "sf_safetensors.h"

/* Input normalisation applied before encoding (the statistic is saved with the model). */
typedef enum sae_norm_mode {
    SAE_NORM_NONE = 0,
    SAE_NORM_UNIT = 1,   /* x / ||x|| per token: the paper's final code */
    SAE_NORM_SCALAR = 2, /* x * norm_scale, norm_scale = sqrt(d) / mean ||x|| (OpenAI, SAELens) */
} sae_norm_mode;

typedef enum sae_layout { SAE_LAYOUT_PAPER = 0, SAE_LAYOUT_SPARSIFY = 1, SAE_LAYOUT_SAELENS = 2 } sae_layout;

typedef struct sae_model {
    int d; /* input width */
    int n; /* number of latents */
    int k; /* active latents per token */
    float *W_enc; /* [n][d] */
    float *b_enc; /* [n] */
    float *W_dec; /* [n][d]: row i = decoder direction of latent i */
    float *b_dec; /* [d] */
    sae_norm_mode norm;
    float norm_scale; /* SAE_NORM_SCALAR only; 1 otherwise */
    char hook[64];    /* hook point it was trained on, as its config records it ("" if none) */
    char checkpoint[128]; /* the checkpoint name and model directory of its training activations, */
    char model[1024];     /* as saeflow_training records them ("" if not recorded) */
    char layout[112];     /* the file layout sae_load found, named with the code (and date) that writes it */
    char norm_from[160];  /* where sae_load took the normalisation from */
} sae_model;

/* ---------------------------------------------------------------------------------------------- */
/* Model (sae_lib)                                                                                 */

/* Allocates zeroed weights (64-byte aligned). SF_OK or SF_ERR (sf_fail). */
int sae_model_alloc(sae_model *m, int d, int n, int k);
void sae_model_free(sae_model *m);

/* The paper's init: decoder directions uniform random then unit norm, W_enc = W_dec, b_enc = 0,
 * b_dec = 0 (set it with sae_geometric_median on the first batch). Deterministic in seed. */
void sae_model_init(sae_model *m, uint64_t seed);

/* The SAE_NORM_SCALAR factor of a sample of rows: sqrt(d) / mean ||x||. */
float sae_norm_scale_estimate(const float *x, int64_t rows, int d);

/* Normalises rows x[rows][d] in place as m->norm says. If norms is not NULL it receives the factor
 * each row was multiplied by (so x_original = x / norms[r]). */
void sae_normalize(const sae_model *m, float *x, int64_t rows, float *norms);

/* Encodes raw activations x[rows][d] (normalisation applied inside, x unchanged): for each row
 * the k largest positive pre-activations, idx[r*k + j] / val[r*k + j], sorted by value, highest
 * first; unused slots (fewer than k positive) have idx -1 and val 0. The rows are blocks of `block`
 * rows (sequences; block = rows: one block), and a row's result depends only on its own block, not on
 * which other blocks share the call nor on the thread count: encoding sequences one message at a
 * time or all at once gives the same bits. Runs on sae_lib's thread pool (callers in several
 * threads take turns). SF_OK or SF_ERR (rows not a multiple of block). */
int sae_encode(const sae_model *m, const float *x, int64_t rows, int64_t block, int32_t *idx, float *val);

/* sae_encode, and also every latent's pre-activation W_enc (x - b_dec) + b_enc (x normalised),
 * before ReLU and top-k, into pre[rows][n]: the values the paper's feature collection hooks
 * (llm-jp-sae hooks sae.encoder, the linear layer). The top-k values in val are exactly these
 * floats, in the same blocks as sae_encode's. The caller bounds rows (pre holds rows * n floats).
 * SF_OK or SF_ERR. */
int sae_encode_preacts(const sae_model *m, const float *x, int64_t rows, int64_t block, int32_t *idx, float *val,
                       float *pre);

/* Reconstructs activations xhat[rows][d] from idx/val as sae_encode returns them: in the input's
 * raw space when norms holds the factors sae_normalize returned for these rows, in the SAE's
 * normalised space when norms is NULL. */
void sae_decode(const sae_model *m, const int32_t *idx, const float *val, int64_t rows,
                const float *norms, float *xhat);

/* Raw activations x[rows][d] -> their reconstruction xhat[rows][d] in the same raw space
 * (encode, decode, input normalisation undone), in blocks of `block` rows as sae_encode. SF_OK or SF_ERR. */
int sae_reconstruct(const sae_model *m, const float *x, int64_t rows, int64_t block, float *xhat);

/* Loads a model directory in any of the three layouts (detected). Our own config adds the
 * normalisation ("saeflow_normalize": "unit"|"scalar"|"none", "saeflow_norm_scale"); without it
 * the paper layout means "unit" (the paper's code), the others SAELens' normalize_activations or
 * "none". m->hook comes from our training metadata (saeflow_training.hook) or SAELens' hook_name
 * (top level or under metadata). SF_OK or SF_ERR with sf_last_error() set. */
int sae_load(sae_model *m, const char *dir);
/* sae_load with k and the normalisation stated by the caller (k <= 0, norm < 0: as recorded), for
 * files that do not record them: llm-jp-sae's 2025-03 sae.pth (dir may name the file) and its state
 * dict converted to safetensors (sae_load refuses those rather than guess). m->layout names what was
 * found, m->norm_from where the normalisation came from. */
int sae_load_as(sae_model *m, const char *dir, int k, int norm);

/* Checks that activations of (hook, checkpoint, model) are what the SAE in sae_dir was trained on,
 * as its config records them: another hook (so another layer), another checkpoint name or another
 * model directory (compared as files when both exist here) is an error naming both sides, unless
 * accept (the stages' accept_sae_mismatch), then a logged warning. Hooks compare by sf_same_hook. What either side does not
 * record ("" or NULL) is not compared. SF_OK or SF_ERR (sf_fail). */
int sae_check_source(const sae_model *m, const char *sae_dir, const char *hook, const char *checkpoint,
                     const char *model, int accept);

/* Saves into dir (created if missing) in a layout. extra_json (may be NULL) is a JSON object
 * text whose members are added to the config (training metadata). Exports are made so that each
 * library's own forward gives our codes: a scalar normalisation is folded into the weights of both;
 * a unit one becomes SAELens' normalize_activations "constant_norm_rescale" (weights scaled by
 * sqrt(d)); sparsify has no normalisation and a per-token one cannot be folded, so its export keeps
 * our weights for inputs x / ||x|| (cfg.json's saeflow_input says so; a warning is logged).
 * SF_OK or SF_ERR. */
int sae_save(const sae_model *m, const char *dir, sae_layout layout, const char *extra_json);

const char *sae_norm_name(sae_norm_mode mode);
int sae_norm_parse(const char *name, sae_norm_mode *out); /* SF_OK / SF_ERR */
int sae_layout_parse(const char *name, sae_layout *out);  /* "paper" "sparsify" "saelens" */

/* Geometric median of rows x[rows][d] by Weiszfeld iterations (start at the mean, at most
 * max_iter, stop when the step is below tol), as the paper's code computes b_dec. */
void sae_geometric_median(const float *x, int64_t rows, int d, int max_iter, double tol, float *out);

/* ---------------------------------------------------------------------------------------------- */
/* Training                                                                                        */

typedef struct sae_train_opts {
    double lr;            /* 1e-3 */
    int64_t warmup_steps; /* linear warmup: lr * step / warmup for step < warmup (0-based step) */
    int64_t decay_start;  /* 0 = no decay; else linear decay to 0 from this step ... */
    int64_t decay_steps;  /* ... over this many steps */
    double beta1, beta2, eps; /* Adam: 0.9, 0.999, 6.25e-10 */
    int remove_parallel_grad; /* drop the gradient component parallel to each decoder direction */
    int k_aux;                /* AuxK latents (0: off) */
    double aux_coef;          /* 1/32 */
    int64_t dead_tokens;      /* a latent is dead after this many tokens without firing */
    int keep_grads;           /* keep dense gradients of the last step (tests; costs 2 n d floats) */
} sae_train_opts;

void sae_train_opts_default(sae_train_opts *o);

typedef struct sae_stats {
    double loss;     /* total: mse + aux_coef * aux */
    double mse;      /* squared error summed over dims, mean over rows (the paper's loss) */
    double aux;      /* AuxK loss (0 if off or nothing dead) */
    double fvu;      /* sum ||x - xhat||^2 / sum ||x - mean(x)||^2 */
    double cosine;   /* mean cosine(x, xhat) */
    double l0;       /* mean active latents per row */
    double dead_fraction; /* latents not fired in the last dead_tokens tokens */
    double lr;       /* learning rate used */
} sae_stats;

typedef struct sae_trainer sae_trainer;

/* The trainer borrows m (it must outlive it) and updates it in place. */
sae_trainer *sae_trainer_new(sae_model *m, const sae_train_opts *o, int max_batch);
void sae_trainer_free(sae_trainer *t);

/* One optimisation step on x[rows][d], already normalised (sae_normalize). rows <= max_batch.
 * Fills st if not NULL. SF_OK or SF_ERR. */
int sae_train_step(sae_trainer *t, const float *x, int rows, sae_stats *st);

/* Evaluates the model on normalised rows without training (st->loss = mse; dead_fraction from
 * the trainer's counters). */
int sae_eval_batch(sae_trainer *t, const float *x, int rows, sae_stats *st);

int64_t sae_trainer_step(const sae_trainer *t);   /* steps done */
int64_t sae_trainer_tokens(const sae_trainer *t); /* tokens trained on */

/* Gradients of the last step, [n][d] / [n] / [n][d] / [d]; the two matrices only with keep_grads
 * (else NULL). */
void sae_trainer_grads(const sae_trainer *t, const float **gW_enc, const float **gb_enc,
                       const float **gW_dec, const float **gb_dec);

/* Checkpoint: the model, Adam moments, step, token count, dead counters, in one safetensors
 * file written atomically; extra metadata strings (key, value pairs, NULL-terminated) and extra
 * tensors (the caller's, read back with sf_st_open) are kept. Loading restores everything so
 * training continues bit-for-bit. */
int sae_checkpoint_save(const sae_trainer *t, const char *path, const char *const *meta, const sf_st_tensor *extra,
                        size_t n_extra);
int sae_checkpoint_load(sae_trainer *t, const char *path);

#endif
