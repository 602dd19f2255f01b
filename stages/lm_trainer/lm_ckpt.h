/* lm_ckpt.h — what an lm_model training run writes to disk: Hugging Face checkpoints (config.json +
 * model.safetensors, bf16 or f32, loadable by the forward stage, tools/llama_suite.py and HF
 * transformers' LlamaForCausalLM) and the training state a killed run resumes from (weights,
 * AdamW moments, step, data position, the loss log's length), one safetensors file.
 *
 * Both are written so that a crash or a full disk at any moment leaves the last complete one
 * intact: a checkpoint is written into DIR.partial (weights first, then config.json, each file
 * through a temp file and fsync) and only then renamed to DIR, the completion marker; the state is
 * one file replaced by rename after fsync (sf_st_writer_save). Readers of a checkpoint directory
 * therefore never see half of one.
 */
#ifndef LM_CKPT_H
#define LM_CKPT_H

#include <stdint.h>

#include "lm_optim.h"

/* config.json for a LlamaForCausalLM of config c, stored as dtype (SF_BF16 or SF_F32): every field
 * the forward stage and HF transformers read, from c; the other fields of base_config (the
 * config.json the run started from, e.g. eos_token_id; NULL: none) are kept. A malloc'd string, or
 * NULL with sf_fail. */
char *lm_hf_config_text(const fw_config *c, const char *base_config, sf_dtype dtype);

/* Writes the checkpoint directory dir (its parent must exist): model.safetensors with every tensor
 * of m by its HF name in dtype (bf16: rounded to nearest even; tied embeddings stored once, as HF
 * saves them), metadata "format" = "pt" and the key/value pairs meta (NULL-terminated, may be
 * NULL), and config.json. A dir that exists is replaced whole once the new one is complete. SF_OK,
 * or SF_ERR (sf_fail: the file and the OS error) with dir as it was and no DIR.partial left. */
int lm_ckpt_write(lm_model *m, const char *base_config, sf_dtype dtype, const char *dir, const char *const *meta);

/* Where a run stands between two steps: what a resume needs besides weights and moments. */
typedef struct lm_train_pos {
    int64_t step;          /* optimizer steps done */
    int64_t seqs;          /* training sequences consumed by those steps (the data position) */
    uint64_t data_hash;    /* FNV-1a of those sequences' tokens, in order: the stream must replay them */
    int64_t valid_seqs;    /* held-out sequences collected for the validation loss */
    uint64_t valid_hash;   /* FNV-1a of their tokens */
    double loss_sum;       /* training losses of the steps since the last checkpoint ... */
    int64_t loss_steps;    /* ... and how many (the next checkpoint's train_loss is their mean) */
    int64_t log_bytes;     /* length of the run's loss log at this step (a resume truncates it there) */
    uint64_t seed;         /* the initialisation's seed */
} lm_train_pos;

/* Training state: every weight of m (F32, HF names), AdamW's moments (adamw.m.NAME, adamw.v.NAME),
 * the position, and settings: a text naming every setting the loss curve depends on, which a resume
 * must match. Written atomically to path. */
int lm_state_save(const char *path, lm_model *m, const lm_adamw *a, const lm_train_pos *pos, const char *settings);
/* Reads path into m (whose config must match: every tensor's name and shape), a (made for m's
 * element count) and pos. SF_ERR (sf_fail) on a missing or damaged file, other tensors, or when
 * the file's settings differ from `settings` (both shown). */
int lm_state_load(const char *path, lm_model *m, lm_adamw *a, lm_train_pos *pos, const char *settings);

/* FNV-1a, continued from h (start from LM_FNV_START), over n int32 tokens (as little-endian bytes). */
#define LM_FNV_START 0xcbf29ce484222325ull
uint64_t lm_hash_tokens(uint64_t h, const int32_t *tokens, size_t n);

#endif
