/* hook.h — hook point names: the one place where a name a user writes becomes a hook point.
 *
 * saeflow's canonical names count blocks from 0 as TransformerLens does (resid_pre.L, attn_out.L,
 * mlp_hidden.L, mlp_out.L, resid_post.L; see model.h). Hugging Face's `output_hidden_states`
 * indexing is accepted on input: hidden_states.0 is the embeddings (resid_pre.0) and
 * hidden_states.N, N >= 1, the output of block N-1 (resid_post.N-1), so the paper's "layer 12" of
 * LLM-jp-3 (hidden_states[12], model.layers[11]'s output) is resid_post.11. Everything downstream
 * (messages, shard manifests, SAE configs) records the canonical name.
 *
 * Kept free of the model code so that stages which only filter by hook name (shard_writer) can
 * compile it without the forward pass and OpenBLAS. */
#ifndef FW_HOOK_H
#define FW_HOOK_H

#include <stdbool.h>
#include <stddef.h>

typedef enum fw_hook_kind {
    FW_RESID_PRE, FW_ATTN_OUT, FW_MLP_HIDDEN, FW_MLP_OUT, FW_RESID_POST
} fw_hook_kind;

typedef struct fw_hook {
    fw_hook_kind kind;
    int layer;
    /* Named hidden_states.N with N >= 1: if block N-1 is the model's last, Hugging Face's entry is
     * after the final norm, which no saeflow hook is (fw_hook_check refuses it). */
    bool hf_named;
} fw_hook;

/* "resid_post.11" or "hidden_states.12" -> {FW_RESID_POST, 11}. SF_ERR (sf_fail) on a bad name;
 * the layer is checked against a model by fw_hook_check (model.h). */
int fw_hook_parse(const char *name, fw_hook *out);
/* The canonical name, e.g. "resid_post.11". */
void fw_hook_name(fw_hook h, char *buf, size_t len);
/* name's canonical form into buf (SF_ERR on a bad name): for stages that compare hook names. */
int fw_hook_canonical(const char *name, char *buf, size_t len);

#endif
