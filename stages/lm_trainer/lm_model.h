/* lm_model.h — a Llama-architecture causal language model that can be trained: parameters in
 * Hugging Face layout with a gradient beside each, the forward pass with every activation the
 * backward needs saved, and the backward pass of the mean next-token cross-entropy, in C on
 * OpenBLAS. The forward stage (stages/forward/model.h) defines the semantics: RMSNorm, RoPE
 * (rotate_half pairing), grouped-query attention, SwiGLU MLP, tied or untied LM head, exactly as
 * Hugging Face's LlamaForCausalLM and tools/llama_suite.py compute them.
 *
 * Conventions (those of the code base, saeflow.h): functions return SF_OK, or SF_ERR after
 * sf_fail() recorded what is wrong (sf_last_error()). Sizes are int for model dimensions (as in
 * fw_config) and size_t for element counts.
 *
 * Layout: every parameter lives in one float arena and its gradient in a second one, each tensor
 * contiguous in Hugging Face's shape ([out, in] for linear weights), so a checkpoint writer saves
 * lm_tensor.w as it is and an optimizer may treat either arena as one flat vector. Inside a block
 * q_proj, k_proj and v_proj are adjacent (one fused [(H + 2 KV) hd, d] matrix for the sgemm), and so
 * are gate_proj and up_proj ([2 ff, d]); lm_tensor.w of each still points at its own HF-shaped rows.
 * With tied embeddings the head is model.embed_tokens.weight and is listed once; its gradient
 * collects both uses.
 *
 * What trains: LlamaForCausalLM (and MistralForCausalLM without a sliding window), hidden_act
 * silu, no attention or MLP biases, rope_scaling none, linear or llama3 (fw_rope_inv_freq's
 * frequencies). lm_config_check says why another config cannot train.
 *
 * Threads: a call's sequences are split over the work's threads (lm_work_new_threads), each
 * running whole passes on its share; results are deterministic for a given thread count and batch
 * shape [B, T] (not across different groupings of the same sequences).
 *
 * The `saeflow lm` command (lm grad): lm_cli.h's lm_commands, which the lm_trainer stage definition
 * lists as its .commands. */
#ifndef LM_MODEL_H
#define LM_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "model.h" /* fw_config, fw_config_load (stages/forward) */
#include "saeflow.h"

typedef struct lm_tensor {
    char name[96];    /* Hugging Face name, e.g. "model.layers.0.self_attn.q_proj.weight" */
    int ndim;         /* 1 or 2 */
    int64_t shape[2]; /* HF shape ([out, in] for linear weights); shape[1] = 1 when ndim == 1 */
    size_t n;         /* element count */
    float *w;         /* the weights, contiguous, HF layout */
    float *g;         /* its gradient, same layout (accumulated by lm_loss_grad) */
    int decay;        /* 1: weight decay applies (ndim == 2), 0: norms and biases */
} lm_tensor;

typedef struct lm_model lm_model; /* opaque; holds a copy of its fw_config */
typedef struct lm_work lm_work;   /* activations saved for backward, sized for [B, T] */

/* SF_OK if a model of this config can be built and trained here, else SF_ERR naming what is not
 * supported and what to change. lm_model_new and lm_model_load call it. */
int lm_config_check(const fw_config *cfg);
/* A model with every weight and gradient zero (the caller initialises the weights through
 * lm_model_tensors). SF_OK or SF_ERR (sf_fail: unsupported config, out of memory). */
int lm_model_new(const fw_config *cfg, lm_model **out);
/* config.json + safetensors (one file or sharded) through the forward's config parser and loader,
 * which check every name, shape and dtype; weights converted to float32, gradients zero. */
int lm_model_load(const char *hf_dir, lm_model **out);
void lm_model_free(lm_model *m);
const fw_config *lm_model_config(const lm_model *m);
/* Every parameter once, HF names, in a stable order (embed_tokens, then per block
 * input_layernorm, q/k/v/o_proj, post_attention_layernorm, gate/up/down_proj, then model.norm and
 * lm_head when untied). *out points into the model: valid until lm_model_free. Returns the count. */
size_t lm_model_tensors(lm_model *m, lm_tensor **out);
/* Total parameter count (each tensor once). */
size_t lm_model_numel(const lm_model *m);

/* Buffers for batches of up to B sequences of up to T tokens (T <= max_position_embeddings), for
 * one thread per online CPU (as lm_work_new_threads with threads 0). */
int lm_work_new(const lm_model *m, int B, int T, lm_work **out);
/* The same with every call split over `threads` threads (0: one per online CPU) by sequences:
 * each thread runs the forward and backward of its share of the batch with OpenBLAS on one thread
 * (sf_blas_single_enter), into its own gradient arena, and the arenas are then added into the
 * model's gradients in thread order. Results are deterministic for a given thread count (and batch
 * shape); a batch of one sequence runs on one thread. Memory: the
 * activations once in all, plus one gradient arena per thread after the first. */
int lm_work_new_threads(const lm_model *m, int B, int T, int threads, lm_work **out);
void lm_work_free(lm_work *w);

void lm_zero_grad(lm_model *m);

/* tokens [B, T+1] int32: inputs tokens[:, :T], targets tokens[:, 1:]. Adds d(mean CE over B*T)/dw
 * * scale to every g (scale lets the caller accumulate micro-batches), writes the mean loss.
 * B and T at most those of lm_work_new. SF_ERR on a token id outside [0, vocab). */
int lm_loss_grad(lm_model *m, lm_work *w, const int32_t *tokens, int B, int T, float scale, double *loss);
/* Forward only: the mean loss, gradients untouched. */
int lm_loss(lm_model *m, lm_work *w, const int32_t *tokens, int B, int T, double *loss);

#endif
