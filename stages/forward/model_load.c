/* model_load.c — config.json and safetensors weights of a Hugging Face checkpoint directory into
 * the uniform float32 layout of model.h. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model.h"
#include "sf_safetensors.h"

#define FW_MAX_DIM (1 << 20)  /* any single dimension */
#define FW_MAX_SHARDS 256

/* ------------------------------------------------------------------------------------------ */
/* config.json                                                                                 */

/* Reads an integer key; a missing (or null) key takes def, or is an error when def < 0. */
static int cfg_int(const char *path, json_t *j, const char *key, int def, int *out) {
    json_t *v = json_object_get(j, key);
    if (!v || json_is_null(v)) {
        if (def < 0) return sf_fail("%s: missing \"%s\"", path, key);
        *out = def;
        return SF_OK;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > FW_MAX_DIM)
        return sf_fail("%s: \"%s\" must be an integer in [0, %d]", path, key, FW_MAX_DIM);
    *out = (int)json_integer_value(v);
    return SF_OK;
}

static int cfg_num(const char *path, json_t *j, const char *key, double def, double *out) {
    json_t *v = json_object_get(j, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return SF_OK;
    }
    if (!json_is_number(v)) return sf_fail("%s: \"%s\" must be a number", path, key);
    *out = json_number_value(v);
    return SF_OK;
}

static int cfg_bool(const char *path, json_t *j, const char *key, int def, int *out) {
    json_t *v = json_object_get(j, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return SF_OK;
    }
    if (!json_is_boolean(v)) return sf_fail("%s: \"%s\" must be true or false", path, key);
    *out = json_is_true(v);
    return SF_OK;
}

/* An optional positive number: a missing key takes def, null means none (0). */
static int cfg_opt_num(const char *path, json_t *j, const char *key, double def, float *out) {
    json_t *v = json_object_get(j, key);
    double x = !v ? def : json_is_null(v) ? 0 : json_is_number(v) ? json_number_value(v) : -1;
    if (!(x >= 0) || (x == 0 && v && !json_is_null(v)))
        return sf_fail("%s: \"%s\" must be a positive number or null", path, key);
    *out = (float)x;
    return SF_OK;
}

static int cfg_act(const char *path, json_t *j, const char *key, const char *def, fw_act *out) {
    json_t *v = json_object_get(j, key);
    const char *s = v && json_is_string(v) ? json_string_value(v) : def;
    if (v && !json_is_null(v) && !json_is_string(v)) return sf_fail("%s: \"%s\" must be a string", path, key);
    if (!strcmp(s, "silu") || !strcmp(s, "swish")) *out = FW_ACT_SILU;
    else if (!strcmp(s, "gelu")) *out = FW_ACT_GELU;
    else if (!strcmp(s, "gelu_new") || !strcmp(s, "gelu_pytorch_tanh") || !strcmp(s, "gelu_fast"))
        *out = FW_ACT_GELU_TANH;
    else if (!strcmp(s, "relu")) *out = FW_ACT_RELU;
    else return sf_fail("%s: unsupported activation \"%s\" = \"%s\" (supported: silu, gelu, gelu_new, "
                        "gelu_pytorch_tanh, gelu_fast, relu)", path, key, s);
    return SF_OK;
}

/* rope_scaling: null, or {"type" or "rope_type": "linear" | "dynamic" | "llama3" | "default", ...} */
static int cfg_rope_scaling(const char *path, json_t *rs, const char *key, fw_config *c) {
    c->rope_scaling = FW_ROPE_PLAIN;
    if (!rs || json_is_null(rs)) return SF_OK;
    if (!json_is_object(rs)) return sf_fail("%s: \"%s\" must be an object or null", path, key);
    json_t *t = json_object_get(rs, "rope_type");
    if (!t) t = json_object_get(rs, "type");
    if (!json_is_string(t)) return sf_fail("%s: %s has no \"rope_type\" or \"type\"", path, key);
    const char *type = json_string_value(t);
    if (!strcmp(type, "default")) return SF_OK;
    if (cfg_num(path, rs, "factor", NAN, &c->rope_factor) != SF_OK) return SF_ERR;
    if (!(c->rope_factor >= 1.0)) return sf_fail("%s: %s.factor must be a number >= 1", path, key);
    if (!strcmp(type, "linear")) c->rope_scaling = FW_ROPE_LINEAR;
    else if (!strcmp(type, "dynamic")) c->rope_scaling = FW_ROPE_DYNAMIC;
    else if (!strcmp(type, "llama3")) {
        c->rope_scaling = FW_ROPE_LLAMA3;
        if (cfg_num(path, rs, "low_freq_factor", NAN, &c->rope_low_freq) != SF_OK ||
            cfg_num(path, rs, "high_freq_factor", NAN, &c->rope_high_freq) != SF_OK ||
            cfg_int(path, rs, "original_max_position_embeddings", -1, &c->rope_orig_max_pos) != SF_OK)
            return SF_ERR;
        if (!(c->rope_low_freq > 0 && c->rope_high_freq > c->rope_low_freq))
            return sf_fail("%s: llama3 %s needs 0 < low_freq_factor < high_freq_factor", path, key);
    } else
        return sf_fail("%s: unsupported %s type \"%s\" (supported: linear, dynamic, llama3)", path, key, type);
    return SF_OK;
}

/* Which blocks attend within sliding_window (c->layer_local): by default blocks from..n_layers-1
 * except every period-th (Qwen2 and Mistral: period 1, all from `from` on; Gemma-2: 2, Gemma-3:
 * sliding_window_pattern), as Hugging Face's config classes derive "layer_types"; a "layer_types"
 * list in config.json overrides that. No block is windowed when sliding_window is 0 (null). */
static int cfg_layer_types(const char *path, json_t *j, fw_config *c, int from, int period) {
    json_t *lt = json_object_get(j, "layer_types");
    if (c->n_layers > FW_MAX_LAYERS) /* before layer_local is written; cfg_finish checks every architecture */
        return sf_fail("%s: %d layers, more than the %d supported", path, c->n_layers, FW_MAX_LAYERS);
    memset(c->layer_local, 0, sizeof c->layer_local);
    if (lt && !json_is_null(lt)) {
        if (!json_is_array(lt) || json_array_size(lt) != (size_t)c->n_layers)
            return sf_fail("%s: \"layer_types\" must be a list of %d strings (one per layer)", path, c->n_layers);
        for (int l = 0; l < c->n_layers; l++) {
            const char *t = json_string_value(json_array_get(lt, (size_t)l));
            if (t && !strcmp(t, "sliding_attention")) c->layer_local[l] = c->sliding_window > 0;
            else if (!t || strcmp(t, "full_attention"))
                return sf_fail("%s: layer_types[%d] is \"%s\" (supported: full_attention, sliding_attention)", path, l,
                               t ? t : "not a string");
        }
        return SF_OK;
    }
    for (int l = from; l < c->n_layers && c->sliding_window > 0; l++) c->layer_local[l] = period == 1 || (l + 1) % period;
    return SF_OK;
}

/* RoPE base and scaling: transformers 4 writes rope_theta and rope_scaling, transformers 5 one
 * rope_parameters object {rope_type, rope_theta, factor, ...}, for Gemma-3 one per layer type
 * ({full_attention: {..}, sliding_attention: {..}}). local_theta: Gemma-3's base of the windowed
 * blocks (plain RoPE), NULL for models with one RoPE. */
static int cfg_rope(const char *path, json_t *j, fw_config *c, double def_theta, double *local_theta) {
    json_t *rp = json_object_get(j, "rope_parameters");
    if (!rp || json_is_null(rp))
        return cfg_num(path, j, "rope_theta", def_theta, &c->rope_theta) ||
               cfg_rope_scaling(path, json_object_get(j, "rope_scaling"), "rope_scaling", c) ||
               (local_theta && cfg_num(path, j, "rope_local_base_freq", 10000.0, local_theta));
    if (!json_is_object(rp)) return sf_fail("%s: \"rope_parameters\" must be an object", path);
    json_t *full = json_object_get(rp, "full_attention"), *local = json_object_get(rp, "sliding_attention");
    if (full || local) {
        fw_config lc = {0};
        if (!local_theta || !json_is_object(full) || !json_is_object(local))
            return sf_fail("%s: \"rope_parameters\" per layer type (full_attention, sliding_attention) is only "
                           "supported for Gemma-3, and needs both", path);
        if (cfg_num(path, local, "rope_theta", 10000.0, local_theta) ||
            cfg_rope_scaling(path, local, "rope_parameters.sliding_attention", &lc))
            return SF_ERR;
        if (lc.rope_scaling != FW_ROPE_PLAIN)
            return sf_fail("%s: rope_parameters.sliding_attention must be of rope_type default", path);
        rp = full;
    } else if (local_theta && cfg_num(path, j, "rope_local_base_freq", 10000.0, local_theta))
        return SF_ERR;
    return cfg_num(path, rp, "rope_theta", def_theta, &c->rope_theta) || cfg_rope_scaling(path, rp, "rope_parameters", c);
}

/* The Llama family: Llama, Qwen2, Mistral, OLMo-2 (post-norms, QK-norm), Qwen3 (per-head QK-norm). */
static int cfg_llama(const char *path, json_t *j, const char *arch, fw_config *c) {
    int is_qwen2 = !strcmp(arch, "Qwen2ForCausalLM"), is_mistral = !strcmp(arch, "MistralForCausalLM");
    int is_olmo2 = !strcmp(arch, "Olmo2ForCausalLM"), is_qwen3 = !strcmp(arch, "Qwen3ForCausalLM");
    double eps = 0, partial = 1;
    int attention_bias = 0;
    c->arch = FW_ARCH_LLAMA;
    if (cfg_int(path, j, "hidden_size", -1, &c->d_model) || cfg_int(path, j, "num_attention_heads", -1, &c->n_heads) ||
        cfg_int(path, j, "num_hidden_layers", -1, &c->n_layers) ||
        cfg_int(path, j, "intermediate_size", -1, &c->d_ff) || cfg_int(path, j, "vocab_size", -1, &c->vocab) ||
        cfg_int(path, j, "max_position_embeddings", 2048, &c->max_pos) ||
        cfg_int(path, j, "num_key_value_heads", c->n_heads, &c->n_kv_heads) ||
        /* Qwen3Config's head_dim defaults to 128 whatever the width */
        cfg_int(path, j, "head_dim", is_qwen3 ? 128 : c->n_heads ? c->d_model / c->n_heads : 0, &c->head_dim) ||
        cfg_num(path, j, "rms_norm_eps", is_olmo2 ? 1e-5 : 1e-6, &eps) || cfg_rope(path, j, c, 10000.0, NULL) ||
        cfg_num(path, j, "partial_rotary_factor", 1.0, &partial) ||
        cfg_bool(path, j, "tie_word_embeddings", 0, &c->tied_embeddings) ||
        cfg_bool(path, j, "attention_bias", 0, &attention_bias) || cfg_bool(path, j, "mlp_bias", 0, &c->mlp_bias) ||
        cfg_act(path, j, "hidden_act", "silu", &c->act))
        return SF_ERR;
    c->norm = FW_RMSNORM;
    if (is_olmo2) {
        c->norm_place = FW_NORM_POST;
        c->qk_norm = FW_QK_FULL;
        c->mlp_bias = 0; /* Olmo2MLP has no biases whatever mlp_bias says */
    }
    if (is_qwen3) {
        c->qk_norm = FW_QK_HEAD;
        c->mlp_bias = 0; /* as Olmo2MLP */
    }
    c->norm_eps = (float)eps;
    c->gated_mlp = 1;
    c->rotary_dim = (int)(c->head_dim * partial);
    c->attn_scale = 1.0f / sqrtf((float)c->head_dim);
    /* Qwen2 always has q/k/v biases and no output bias; Llama's attention_bias covers all four. */
    c->qkv_bias = is_qwen2 || attention_bias;
    c->o_bias = !is_qwen2 && attention_bias;
    /* Mistral windows every block; Qwen2 and Qwen3 only with use_sliding_window, from
     * max_window_layers on */
    int use_window = is_mistral, from = 0;
    if ((is_qwen2 || is_qwen3) && (cfg_bool(path, j, "use_sliding_window", 0, &use_window) ||
                     cfg_int(path, j, "max_window_layers", 28, &from)))
        return SF_ERR;
    if (use_window && cfg_int(path, j, "sliding_window", 0, &c->sliding_window)) return SF_ERR;
    return cfg_layer_types(path, j, c, from, 1);
}

/* Gemma-2: Llama's layout with embeddings scaled by sqrt(d), (1 + w) RMSNorms before and after
 * attention and MLP, GELU-tanh gated MLP, scores scaled by query_pre_attn_scalar^-1/2 and
 * soft-capped, soft-capped logits, sliding-window attention in every other block (0, 2, ...).
 * Gemma-3: the same with per-head QK-norm, no soft-capping by default, every
 * sliding_window_pattern-th block global and the others windowed with their own plain RoPE
 * (rope_local_base_freq), rope_scaling only on the global ones. Defaults are the config classes'. */
static int cfg_gemma(const char *path, json_t *j, const char *arch, fw_config *c) {
    int g3 = !strcmp(arch, "Gemma3ForCausalLM");
    double eps = 0, qpas = 0;
    int attention_bias = 0, period = 2, bidirectional = 0;
    c->arch = FW_ARCH_LLAMA;
    if (cfg_int(path, j, "hidden_size", -1, &c->d_model) || cfg_int(path, j, "num_attention_heads", -1, &c->n_heads) ||
        cfg_int(path, j, "num_hidden_layers", -1, &c->n_layers) ||
        cfg_int(path, j, "intermediate_size", -1, &c->d_ff) || cfg_int(path, j, "vocab_size", -1, &c->vocab) ||
        cfg_int(path, j, "max_position_embeddings", g3 ? 131072 : 8192, &c->max_pos) ||
        cfg_int(path, j, "num_key_value_heads", 4, &c->n_kv_heads) || cfg_int(path, j, "head_dim", 256, &c->head_dim) ||
        cfg_num(path, j, "rms_norm_eps", 1e-6, &eps) ||
        cfg_rope(path, j, c, g3 ? 1e6 : 10000.0, g3 ? &c->rope_local_theta : NULL) ||
        cfg_bool(path, j, "tie_word_embeddings", 1, &c->tied_embeddings) ||
        cfg_bool(path, j, "attention_bias", 0, &attention_bias) ||
        cfg_act(path, j, "hidden_activation", "gelu_pytorch_tanh", &c->act) ||
        cfg_num(path, j, "query_pre_attn_scalar", 256, &qpas) ||
        cfg_opt_num(path, j, "attn_logit_softcapping", g3 ? 0 : 50.0, &c->attn_softcap) ||
        cfg_opt_num(path, j, "final_logit_softcapping", g3 ? 0 : 30.0, &c->final_softcap) ||
        cfg_int(path, j, "sliding_window", 4096, &c->sliding_window) ||
        (g3 && (cfg_int(path, j, "sliding_window_pattern", 6, &period) ||
                cfg_bool(path, j, "use_bidirectional_attention", 0, &bidirectional))))
        return SF_ERR;
    if (!(qpas > 0)) return sf_fail("%s: \"query_pre_attn_scalar\" must be positive", path);
    if (period < 1) return sf_fail("%s: \"sliding_window_pattern\" must be at least 1", path);
    if (bidirectional)
        return sf_fail("%s: \"use_bidirectional_attention\" is not supported (the forward is causal)", path);
    if (g3) {
        c->qk_norm = FW_QK_HEAD;
        if (!(c->rope_local_theta > 0)) return sf_fail("%s: the local RoPE base must be positive", path);
    }
    c->norm = FW_RMSNORM;
    c->norm_eps = (float)eps;
    c->norm_place = FW_NORM_SANDWICH;
    c->norm_plus_one = 1;
    c->embed_scale = (float)sqrt((double)c->d_model);
    c->gated_mlp = 1;
    c->rotary_dim = c->head_dim;
    c->attn_scale = (float)(1.0 / sqrt(qpas));
    c->qkv_bias = c->o_bias = attention_bias;
    return cfg_layer_types(path, j, c, 0, period);
}

static int cfg_gpt2(const char *path, json_t *j, fw_config *c) {
    double eps = 0;
    int scale = 1;
    c->arch = FW_ARCH_GPT2;
    if (cfg_int(path, j, "n_embd", -1, &c->d_model) || cfg_int(path, j, "n_head", -1, &c->n_heads) ||
        cfg_int(path, j, "n_layer", -1, &c->n_layers) || cfg_int(path, j, "vocab_size", -1, &c->vocab) ||
        cfg_int(path, j, "n_positions", -1, &c->max_pos) ||
        cfg_int(path, j, "n_inner", 4 * c->d_model, &c->d_ff) ||
        cfg_num(path, j, "layer_norm_epsilon", 1e-5, &eps) ||
        cfg_bool(path, j, "tie_word_embeddings", 1, &c->tied_embeddings) ||
        cfg_bool(path, j, "scale_attn_weights", 1, &scale) ||
        cfg_bool(path, j, "scale_attn_by_inverse_layer_idx", 0, &c->attn_scale_by_layer) ||
        cfg_act(path, j, "activation_function", "gelu_new", &c->act))
        return SF_ERR;
    c->n_kv_heads = c->n_heads;
    c->head_dim = c->n_heads ? c->d_model / c->n_heads : 0;
    c->norm = FW_LAYERNORM;
    c->norm_eps = (float)eps;
    c->qkv_bias = c->o_bias = c->mlp_bias = 1;
    c->learned_pos = 1;
    c->attn_scale = scale ? 1.0f / sqrtf((float)c->head_dim) : 1.0f;
    return SF_OK;
}

static int cfg_neox(const char *path, json_t *j, fw_config *c) {
    double eps = 0, pct = 0, base = 0;
    int bias = 1;
    c->arch = FW_ARCH_NEOX;
    if (cfg_int(path, j, "hidden_size", -1, &c->d_model) || cfg_int(path, j, "num_attention_heads", -1, &c->n_heads) ||
        cfg_int(path, j, "num_hidden_layers", -1, &c->n_layers) ||
        cfg_int(path, j, "intermediate_size", -1, &c->d_ff) || cfg_int(path, j, "vocab_size", -1, &c->vocab) ||
        cfg_int(path, j, "max_position_embeddings", 2048, &c->max_pos) ||
        cfg_num(path, j, "layer_norm_eps", 1e-5, &eps) || cfg_num(path, j, "rotary_pct", 0.25, &pct) ||
        cfg_num(path, j, "partial_rotary_factor", pct, &pct) ||
        cfg_num(path, j, "rotary_emb_base", 10000.0, &base) || cfg_num(path, j, "rope_theta", base, &c->rope_theta) ||
        cfg_bool(path, j, "use_parallel_residual", 1, &c->parallel_residual) ||
        cfg_bool(path, j, "attention_bias", 1, &bias) ||
        cfg_bool(path, j, "tie_word_embeddings", 0, &c->tied_embeddings) ||
        cfg_act(path, j, "hidden_act", "gelu", &c->act) || cfg_rope_scaling(path, json_object_get(j, "rope_scaling"), "rope_scaling", c))
        return SF_ERR;
    c->n_kv_heads = c->n_heads;
    c->head_dim = c->n_heads ? c->d_model / c->n_heads : 0;
    c->norm = FW_LAYERNORM;
    c->norm_eps = (float)eps;
    c->qkv_bias = c->o_bias = bias;
    c->mlp_bias = 1;
    c->rotary_dim = (int)(c->head_dim * pct); /* int() as Hugging Face does */
    c->attn_scale = 1.0f / sqrtf((float)c->head_dim);
    return SF_OK;
}

/* Checks that do not depend on the architecture. */
static int cfg_finish(const char *path, fw_config *c) {
    if (c->n_layers < 1 || c->d_model < 1 || c->n_heads < 1 || c->n_kv_heads < 1 || c->head_dim < 1 ||
        c->d_ff < 1 || c->vocab < 1 || c->max_pos < 1)
        return sf_fail("%s: layer count, widths, heads, vocab_size and max positions must be positive", path);
    if (c->n_layers > FW_MAX_LAYERS)
        return sf_fail("%s: %d layers, more than the %d supported", path, c->n_layers, FW_MAX_LAYERS);
    if (c->n_heads % c->n_kv_heads)
        return sf_fail("%s: %d attention heads are not a multiple of %d key/value heads", path, c->n_heads,
                       c->n_kv_heads);
    if (c->arch != FW_ARCH_LLAMA && c->n_heads * c->head_dim != c->d_model)
        return sf_fail("%s: width %d is not divisible by %d heads", path, c->d_model, c->n_heads);
    if (c->rotary_dim % 2 || c->rotary_dim > c->head_dim || (!c->learned_pos && c->rotary_dim < 2))
        return sf_fail("%s: rotary dimension %d must be even and within head_dim %d", path, c->rotary_dim,
                       c->head_dim);
    if ((c->rotary_dim && !(c->rope_theta > 0)) || !(c->norm_eps >= 0))
        return sf_fail("%s: rope_theta must be positive and the norm epsilon non-negative", path);
    return SF_OK;
}

int fw_config_load(const char *dir, fw_config *c) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    memset(c, 0, sizeof *c);
    json_error_t err;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &err);
    if (!j) return sf_fail("%s: %s", path, err.text);
    int rc = SF_ERR;
    const char *arch = NULL;
    json_t *archs = json_object_get(j, "architectures"), *mt = json_object_get(j, "model_type");
    if (json_is_array(archs) && json_array_size(archs) > 0 && json_is_string(json_array_get(archs, 0)))
        arch = json_string_value(json_array_get(archs, 0));
    else if (json_is_string(mt)) { /* configs without "architectures": map model_type */
        const char *t = json_string_value(mt);
        arch = !strcmp(t, "llama") ? "LlamaForCausalLM" : !strcmp(t, "qwen2") ? "Qwen2ForCausalLM"
             : !strcmp(t, "mistral") ? "MistralForCausalLM" : !strcmp(t, "olmo2") ? "Olmo2ForCausalLM"
             : !strcmp(t, "qwen3") ? "Qwen3ForCausalLM" : !strcmp(t, "gemma2") ? "Gemma2ForCausalLM"
             : !strcmp(t, "gemma3_text") ? "Gemma3ForCausalLM"
             : !strcmp(t, "gpt2") ? "GPT2LMHeadModel"
             : !strcmp(t, "gpt_neox") ? "GPTNeoXForCausalLM" : t;
    }
    if (!json_is_object(j)) {
        sf_fail("%s: not a JSON object", path);
        goto out;
    }
    if (!arch) {
        sf_fail("%s: no \"architectures\" or \"model_type\"", path);
        goto out;
    }
    snprintf(c->architecture, sizeof c->architecture, "%s", arch);
    if (!strcmp(arch, "LlamaForCausalLM") || !strcmp(arch, "Qwen2ForCausalLM") || !strcmp(arch, "MistralForCausalLM") ||
        !strcmp(arch, "Olmo2ForCausalLM") || !strcmp(arch, "Qwen3ForCausalLM"))
        rc = cfg_llama(path, j, arch, c);
    else if (!strcmp(arch, "Gemma2ForCausalLM") || !strcmp(arch, "Gemma3ForCausalLM"))
        rc = cfg_gemma(path, j, arch, c);
    else if (!strcmp(arch, "GPT2LMHeadModel"))
        rc = cfg_gpt2(path, j, c);
    else if (!strcmp(arch, "GPTNeoXForCausalLM"))
        rc = cfg_neox(path, j, c);
    else
        rc = sf_fail("%s: unsupported architecture \"%s\" (supported: LlamaForCausalLM, Qwen2ForCausalLM, "
                     "MistralForCausalLM, Olmo2ForCausalLM, Qwen3ForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM, "
                     "GPT2LMHeadModel, GPTNeoXForCausalLM)",
                     path, arch);
    if (rc == SF_OK) rc = cfg_finish(path, c);
    json_t *bos = json_object_get(j, "bos_token_id");
    c->bos_id = json_is_integer(bos) ? (int)json_integer_value(bos) : -1;
out:
    json_decref(j);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Checkpoint files: one model.safetensors, or shards listed by model.safetensors.index.json    */

typedef struct fw_ckpt {
    char *dir;
    int drop_pages;      /* streamed: release a tensor's mapped pages once it is converted */
    json_t *weight_map;  /* name -> shard file name; NULL for a single file */
    int n_files;
    char *names[FW_MAX_SHARDS];
    sf_st_file *files[FW_MAX_SHARDS];
} fw_ckpt;

static void ckpt_close(fw_ckpt *ck) {
    for (int i = 0; i < ck->n_files; i++) {
        sf_st_close(ck->files[i]);
        free(ck->names[i]);
    }
    json_decref(ck->weight_map);
    free(ck->dir);
}

static int ckpt_add_file(fw_ckpt *ck, const char *name) {
    char path[4096];
    if (ck->n_files == FW_MAX_SHARDS) return sf_fail("%s: more than %d shards", ck->dir, FW_MAX_SHARDS);
    snprintf(path, sizeof path, "%s/%s", ck->dir, name);
    sf_st_file *f = sf_st_open(path);
    if (!f) return SF_ERR;
    ck->names[ck->n_files] = strdup(name);
    ck->files[ck->n_files++] = f;
    return SF_OK;
}

static int ckpt_open(fw_ckpt *ck, const char *dir) {
    char path[4096];
    struct stat st;
    memset(ck, 0, sizeof *ck);
    if (!(ck->dir = sf_strdup("checkpoint path", dir))) return SF_ERR;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (stat(path, &st) == 0) return ckpt_add_file(ck, "model.safetensors");
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    if (stat(path, &st) != 0) {
        snprintf(path, sizeof path, "%s/pytorch_model.bin", dir);
        if (stat(path, &st) == 0)
            return sf_fail("%s: only pytorch_model.bin, no model.safetensors (convert it to safetensors)", dir);
        return sf_fail("%s: no model.safetensors or model.safetensors.index.json", dir);
    }
    json_error_t err;
    json_t *idx = json_load_file(path, JSON_REJECT_DUPLICATES, &err);
    if (!idx) return sf_fail("%s: %s", path, err.text);
    json_t *wm = json_object_get(idx, "weight_map");
    if (!json_is_object(wm)) {
        json_decref(idx);
        return sf_fail("%s: no \"weight_map\" object", path);
    }
    ck->weight_map = json_incref(wm);
    json_decref(idx);
    const char *key;
    json_t *v;
    json_object_foreach(ck->weight_map, key, v) {
        const char *file = json_string_value(v);
        /* The index is untrusted: shard names must be plain file names in this directory. */
        if (!file || !*file || strchr(file, '/') || !strcmp(file, "..") || !strcmp(file, "."))
            return sf_fail("%s: tensor \"%s\" maps to a bad shard file name", path, key);
        int known = 0;
        for (int i = 0; i < ck->n_files && !known; i++) known = !strcmp(ck->names[i], file);
        if (!known && ckpt_add_file(ck, file) != SF_OK) return SF_ERR;
    }
    return SF_OK;
}

/* The tensor called name, or NULL after sf_fail naming it. */
static const sf_st_tensor *ckpt_find(const fw_ckpt *ck, const char *name) {
    if (!ck->weight_map) {
        const sf_st_tensor *t = sf_st_find(ck->files[0], name);
        if (!t) sf_fail("%s: checkpoint has no tensor \"%s\"", ck->dir, name);
        return t;
    }
    const char *file = json_string_value(json_object_get(ck->weight_map, name));
    if (!file) return sf_fail("%s: model.safetensors.index.json lists no tensor \"%s\"", ck->dir, name), NULL;
    for (int i = 0; i < ck->n_files; i++)
        if (!strcmp(ck->names[i], file)) {
            const sf_st_tensor *t = sf_st_find(ck->files[i], name);
            if (!t) sf_fail("%s/%s: no tensor \"%s\" although the index puts it there", ck->dir, file, name);
            return t;
        }
    return NULL; /* unreachable: every mapped file was opened */
}

static int ckpt_has(const fw_ckpt *ck, const char *name) {
    if (ck->weight_map) return json_object_get(ck->weight_map, name) != NULL;
    return sf_st_find(ck->files[0], name) != NULL;
}

/* n floats, 64-byte aligned, for weight `what`; NULL with the error naming it and its size. */
static float *fw_alloc(const char *what, size_t n) {
    void *p = NULL;
    size_t bytes;
    if (!sf_mul_size(n ? n : 1, sizeof(float), &bytes) || posix_memalign(&p, 64, bytes) != 0)
        return sf_fail("forward: out of memory allocating weight %s (%zu floats = %.1f MB)", what, n, (double)n * 4 / 1e6), NULL;
    return p;
}

/* Unmaps the whole pages inside [p, p + n) of a read-only file mapping: the process's RSS drops,
 * the data stays in the page cache and a later access faults it back in. */
static void drop_pages(const void *p, size_t n) {
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE), a = ((uintptr_t)p + pg - 1) & ~(pg - 1);
    uintptr_t e = ((uintptr_t)p + n) & ~(pg - 1);
    if (e > a) madvise((void *)a, e - a, MADV_DONTNEED); /* advice only: a failure costs memory, not results */
}

/* Converts tensor `name` to float32 into dst after checking its shape is exactly {d0[, d1]}. */
static int load_into(const fw_ckpt *ck, const char *name, int ndim, int64_t d0, int64_t d1, float *dst) {
    const sf_st_tensor *t = ckpt_find(ck, name);
    if (!t) return SF_ERR;
    if (t->t.dtype != SF_F32 && t->t.dtype != SF_F16 && t->t.dtype != SF_BF16 && t->t.dtype != SF_F64)
        return sf_fail("%s: tensor \"%s\" has unsupported dtype %s (F32, F16, BF16 or F64: convert the checkpoint)",
                       ck->dir, name,
                       sf_dtype_name(t->t.dtype));
    int ok = t->t.ndim == ndim && t->t.shape[0] == d0 && (ndim == 1 || t->t.shape[1] == d1);
    if (!ok) {
        char got[160] = "", want[64];
        for (int i = 0; i < t->t.ndim; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%lld", i ? ", " : "", (long long)t->t.shape[i]);
        if (ndim == 1) snprintf(want, sizeof want, "%lld", (long long)d0);
        else snprintf(want, sizeof want, "%lld, %lld", (long long)d0, (long long)d1);
        return sf_fail("%s: tensor \"%s\" has shape [%s], expected [%s]", ck->dir, name, got, want);
    }
    size_t n = (size_t)(ndim == 1 ? d0 : d0 * d1);
    sf_convert_to_f32(dst, t->t.data, t->t.dtype, n);
    if (ck->drop_pages) drop_pages(t->t.data, n * sf_dtype_size(t->t.dtype));
    return SF_OK;
}

static float *load_new(const fw_ckpt *ck, const char *name, int ndim, int64_t d0, int64_t d1) {
    size_t n;
    if (d0 < 0 || d1 < 0 || !sf_mul_size((size_t)d0, (size_t)(ndim == 1 ? 1 : d1), &n))
        return sf_fail("%s: tensor \"%s\": the config's sizes %lld x %lld are out of range", ck->dir, name, (long long)d0, (long long)d1), NULL;
    float *p = fw_alloc(name, n);
    if (!p) return NULL;
    if (load_into(ck, name, ndim, d0, d1, p) != SF_OK) {
        free(p);
        return NULL;
    }
    return p;
}

/* Like load_new into *slot, allocating it only when it is NULL (a streamed block's scratch keeps
 * its buffers from one block to the next: every Llama block has the same shapes). */
static int load_slot(const fw_ckpt *ck, const char *name, int ndim, int64_t d0, int64_t d1, float **slot) {
    if (!*slot) return (*slot = load_new(ck, name, ndim, d0, d1)) ? SF_OK : SF_ERR;
    return load_into(ck, name, ndim, d0, d1, *slot);
}

static int alloc_slot(const char *what, size_t n, float **slot) {
    return *slot || (*slot = fw_alloc(what, n)) ? SF_OK : SF_ERR;
}

/* GPT-2's Conv1D stores [in, out]; returns it transposed to [out, in]. */
static float *load_conv1d(const fw_ckpt *ck, const char *name, int in, int out) {
    float *tmp = load_new(ck, name, 2, in, out);
    if (!tmp) return NULL;
    float *w = fw_alloc(name, (size_t)in * out);
    if (!w) {
        free(tmp);
        return NULL;
    }
    for (int i = 0; i < in; i++)
        for (int o = 0; o < out; o++) w[(size_t)o * in + i] = tmp[(size_t)i * out + o];
    free(tmp);
    return w;
}

/* GPT-NeoX's query_key_value rows are grouped per head as [q, k, v] (hd rows each); reorders a
 * [3 * H * hd, cols] tensor (cols = 1 for the bias) to all q rows, then all k, then all v. */
static int neox_unfuse_qkv(float *w, int H, int hd, int cols) {
    size_t n = (size_t)3 * H * hd * cols, blk = (size_t)hd * cols;
    float *tmp = fw_alloc("query_key_value (a copy to reorder)", n);
    if (!tmp) return SF_ERR;
    memcpy(tmp, w, n * sizeof *w);
    for (int h = 0; h < H; h++)
        for (int s = 0; s < 3; s++)
            memcpy(w + ((size_t)s * H + h) * blk, tmp + ((size_t)h * 3 + s) * blk, blk * sizeof *w);
    free(tmp);
    return SF_OK;
}

#define NAME(buf, ...) (snprintf(buf, sizeof buf, __VA_ARGS__), buf)

/* An RMSNorm weight [n]: Gemma's scale by 1 + w, so 1 is added here (in float32, as Hugging Face
 * computes 1.0 + weight.float()). */
static int load_norm_slot(const fw_ckpt *ck, const fw_config *c, const char *name, int n, float **slot) {
    if (load_slot(ck, name, 1, n, 0, slot) != SF_OK) return SF_ERR;
    if (c->norm_plus_one)
        for (int i = 0; i < n; i++) (*slot)[i] += 1.0f;
    return SF_OK;
}

static float *load_norm(const fw_ckpt *ck, const fw_config *c, const char *name, int n) {
    float *w = NULL;
    return load_norm_slot(ck, c, name, n, &w) == SF_OK ? w : NULL;
}

/* A block's norms by where they sit (fw_norm_place): Llama's post_attention_layernorm is the norm
 * before the MLP, OLMo-2's and Gemma's is on the attention output. */
static int load_llama_norms(const fw_ckpt *ck, const fw_config *c, int l, fw_layer *ly) {
    char n[256];
    int d = c->d_model;
    const char *pre1 = "input_layernorm", *pre2 = "post_attention_layernorm";
    const char *post1 = "post_attention_layernorm", *post2 = "post_feedforward_layernorm";
    if (c->norm_place == FW_NORM_SANDWICH) pre2 = "pre_feedforward_layernorm";
    if (c->norm_place != FW_NORM_POST &&
        (load_norm_slot(ck, c, NAME(n, "model.layers.%d.%s.weight", l, pre1), d, &ly->ln1_w) ||
         load_norm_slot(ck, c, NAME(n, "model.layers.%d.%s.weight", l, pre2), d, &ly->ln2_w)))
        return SF_ERR;
    if (c->norm_place != FW_NORM_PRE &&
        (load_norm_slot(ck, c, NAME(n, "model.layers.%d.%s.weight", l, post1), d, &ly->post1_w) ||
         load_norm_slot(ck, c, NAME(n, "model.layers.%d.%s.weight", l, post2), d, &ly->post2_w)))
        return SF_ERR;
    if (c->qk_norm != FW_QK_NONE) {
        int full = c->qk_norm == FW_QK_FULL, hd = c->head_dim;
        if (load_norm_slot(ck, c, NAME(n, "model.layers.%d.self_attn.q_norm.weight", l),
                           full ? c->n_heads * hd : hd, &ly->q_norm) ||
            load_norm_slot(ck, c, NAME(n, "model.layers.%d.self_attn.k_norm.weight", l),
                           full ? c->n_kv_heads * hd : hd, &ly->k_norm))
            return SF_ERR;
    }
    return SF_OK;
}

static int load_llama_layer(const fw_ckpt *ck, const fw_config *c, int l, fw_layer *ly) {
    char n[256];
    int d = c->d_model, hd = c->head_dim, qn = c->n_heads * hd, kvn = c->n_kv_heads * hd, ff = c->d_ff;
    const char *qkv[3] = {"q_proj", "k_proj", "v_proj"};
    int rows[3] = {qn, kvn, kvn}, off = 0;
    if (load_llama_norms(ck, c, l, ly) != SF_OK) return SF_ERR;
    if (alloc_slot("q/k/v_proj", (size_t)(qn + 2 * kvn) * d, &ly->wqkv) ||
        (c->qkv_bias && alloc_slot("q/k/v_proj bias", (size_t)(qn + 2 * kvn), &ly->bqkv)))
        return SF_ERR;
    for (int i = 0; i < 3; off += rows[i], i++) {
        if (load_into(ck, NAME(n, "model.layers.%d.self_attn.%s.weight", l, qkv[i]), 2, rows[i], d,
                      ly->wqkv + (size_t)off * d) != SF_OK)
            return SF_ERR;
        if (c->qkv_bias &&
            load_into(ck, NAME(n, "model.layers.%d.self_attn.%s.bias", l, qkv[i]), 1, rows[i], 0, ly->bqkv + off))
            return SF_ERR;
    }
    if (load_slot(ck, NAME(n, "model.layers.%d.self_attn.o_proj.weight", l), 2, d, qn, &ly->wo)) return SF_ERR;
    if (c->o_bias && load_slot(ck, NAME(n, "model.layers.%d.self_attn.o_proj.bias", l), 1, d, 0, &ly->bo))
        return SF_ERR;
    if (alloc_slot("gate_proj and up_proj", (size_t)2 * ff * d, &ly->w_in)) return SF_ERR;
    if (load_into(ck, NAME(n, "model.layers.%d.mlp.gate_proj.weight", l), 2, ff, d, ly->w_in) ||
        load_into(ck, NAME(n, "model.layers.%d.mlp.up_proj.weight", l), 2, ff, d, ly->w_in + (size_t)ff * d))
        return SF_ERR;
    if (c->mlp_bias) {
        if (alloc_slot("gate_proj and up_proj bias", (size_t)2 * ff, &ly->b_in)) return SF_ERR;
        if (load_into(ck, NAME(n, "model.layers.%d.mlp.gate_proj.bias", l), 1, ff, 0, ly->b_in) ||
            load_into(ck, NAME(n, "model.layers.%d.mlp.up_proj.bias", l), 1, ff, 0, ly->b_in + ff) ||
            load_slot(ck, NAME(n, "model.layers.%d.mlp.down_proj.bias", l), 1, d, 0, &ly->b_out))
            return SF_ERR;
    }
    if (load_slot(ck, NAME(n, "model.layers.%d.mlp.down_proj.weight", l), 2, d, ff, &ly->w_out)) return SF_ERR;
    return SF_OK;
}

static int load_gpt2_layer(const fw_ckpt *ck, const char *pre, const fw_config *c, int l, fw_layer *ly) {
    char n[256];
    int d = c->d_model, ff = c->d_ff;
    if (!(ly->ln1_w = load_new(ck, NAME(n, "%sh.%d.ln_1.weight", pre, l), 1, d, 0)) ||
        !(ly->ln1_b = load_new(ck, NAME(n, "%sh.%d.ln_1.bias", pre, l), 1, d, 0)) ||
        !(ly->ln2_w = load_new(ck, NAME(n, "%sh.%d.ln_2.weight", pre, l), 1, d, 0)) ||
        !(ly->ln2_b = load_new(ck, NAME(n, "%sh.%d.ln_2.bias", pre, l), 1, d, 0)) ||
        !(ly->wqkv = load_conv1d(ck, NAME(n, "%sh.%d.attn.c_attn.weight", pre, l), d, 3 * d)) ||
        !(ly->bqkv = load_new(ck, NAME(n, "%sh.%d.attn.c_attn.bias", pre, l), 1, 3 * d, 0)) ||
        !(ly->wo = load_conv1d(ck, NAME(n, "%sh.%d.attn.c_proj.weight", pre, l), d, d)) ||
        !(ly->bo = load_new(ck, NAME(n, "%sh.%d.attn.c_proj.bias", pre, l), 1, d, 0)) ||
        !(ly->w_in = load_conv1d(ck, NAME(n, "%sh.%d.mlp.c_fc.weight", pre, l), d, ff)) ||
        !(ly->b_in = load_new(ck, NAME(n, "%sh.%d.mlp.c_fc.bias", pre, l), 1, ff, 0)) ||
        !(ly->w_out = load_conv1d(ck, NAME(n, "%sh.%d.mlp.c_proj.weight", pre, l), ff, d)) ||
        !(ly->b_out = load_new(ck, NAME(n, "%sh.%d.mlp.c_proj.bias", pre, l), 1, d, 0)))
        return SF_ERR;
    return SF_OK;
}

static int load_neox_layer(const fw_ckpt *ck, const fw_config *c, int l, fw_layer *ly) {
    char n[256];
    int d = c->d_model, ff = c->d_ff;
    if (!(ly->ln1_w = load_new(ck, NAME(n, "gpt_neox.layers.%d.input_layernorm.weight", l), 1, d, 0)) ||
        !(ly->ln1_b = load_new(ck, NAME(n, "gpt_neox.layers.%d.input_layernorm.bias", l), 1, d, 0)) ||
        !(ly->ln2_w = load_new(ck, NAME(n, "gpt_neox.layers.%d.post_attention_layernorm.weight", l), 1, d, 0)) ||
        !(ly->ln2_b = load_new(ck, NAME(n, "gpt_neox.layers.%d.post_attention_layernorm.bias", l), 1, d, 0)) ||
        !(ly->wqkv = load_new(ck, NAME(n, "gpt_neox.layers.%d.attention.query_key_value.weight", l), 2, 3 * d, d)) ||
        !(ly->wo = load_new(ck, NAME(n, "gpt_neox.layers.%d.attention.dense.weight", l), 2, d, d)) ||
        !(ly->w_in = load_new(ck, NAME(n, "gpt_neox.layers.%d.mlp.dense_h_to_4h.weight", l), 2, ff, d)) ||
        !(ly->b_in = load_new(ck, NAME(n, "gpt_neox.layers.%d.mlp.dense_h_to_4h.bias", l), 1, ff, 0)) ||
        !(ly->w_out = load_new(ck, NAME(n, "gpt_neox.layers.%d.mlp.dense_4h_to_h.weight", l), 2, d, ff)) ||
        !(ly->b_out = load_new(ck, NAME(n, "gpt_neox.layers.%d.mlp.dense_4h_to_h.bias", l), 1, d, 0)))
        return SF_ERR;
    if (neox_unfuse_qkv(ly->wqkv, c->n_heads, c->head_dim, d) != SF_OK) return SF_ERR;
    if (c->qkv_bias) {
        if (!(ly->bqkv = load_new(ck, NAME(n, "gpt_neox.layers.%d.attention.query_key_value.bias", l), 1, 3 * d, 0)) ||
            !(ly->bo = load_new(ck, NAME(n, "gpt_neox.layers.%d.attention.dense.bias", l), 1, d, 0)))
            return SF_ERR;
        if (neox_unfuse_qkv(ly->bqkv, c->n_heads, c->head_dim, 1) != SF_OK) return SF_ERR;
    }
    return SF_OK;
}

double *fw_rope_inv_freq(const fw_config *c, double theta, int scaled) {
    int half = c->rotary_dim / 2;
    double *inv = sf_zalloc("RoPE frequencies", (size_t)(half ? half : 1), sizeof *inv);
    if (!inv) return NULL;
    for (int i = 0; i < half; i++) {
        double f = 1.0 / pow(theta, (2.0 * i) / c->rotary_dim);
        if (scaled && c->rope_scaling == FW_ROPE_LINEAR) f /= c->rope_factor;
        if (scaled && c->rope_scaling == FW_ROPE_LLAMA3) {
            /* Low frequencies (long wavelengths) are divided by factor, high ones kept, and the
             * band between them interpolated smoothly. */
            double old = c->rope_orig_max_pos, wavelen = 2 * M_PI / f;
            double lo_wavelen = old / c->rope_low_freq, hi_wavelen = old / c->rope_high_freq;
            if (wavelen > lo_wavelen) f /= c->rope_factor;
            else if (wavelen >= hi_wavelen) {
                double s = (old / wavelen - c->rope_low_freq) / (c->rope_high_freq - c->rope_low_freq);
                f = (1 - s) * f / c->rope_factor + s * f;
            }
        }
        inv[i] = f;
    }
    return inv;
}

void fw_layer_free(fw_layer *ly) {
    float *p[] = {ly->ln1_w, ly->ln1_b, ly->ln2_w, ly->ln2_b, ly->post1_w, ly->post2_w, ly->q_norm, ly->k_norm,
                  ly->wqkv, ly->bqkv, ly->wo, ly->bo, ly->w_in, ly->b_in, ly->w_out, ly->b_out};
    for (size_t i = 0; i < sizeof p / sizeof *p; i++) free(p[i]);
    memset(ly, 0, sizeof *ly);
}

const fw_layer *fw_block(const fw_model *m, int l, fw_layer *scratch) {
    if (!m->ck) return &m->layers[l];
    return load_llama_layer(m->ck, &m->cfg, l, scratch) == SF_OK ? scratch : NULL;
}

void fw_embed_rows(const fw_model *m, const int32_t *tok, size_t n, float *x) {
    size_t d = (size_t)m->cfg.d_model;
    if (!m->ck) {
        for (size_t i = 0; i < n; i++) memcpy(x + i * d, m->tok_emb + (size_t)tok[i] * d, d * sizeof *x);
        return;
    }
    size_t es = sf_dtype_size(m->emb_dtype);
    for (size_t i = 0; i < n; i++)
        sf_convert_to_f32(x + i * d, (const char *)m->emb_src + (size_t)tok[i] * d * es, m->emb_dtype, d);
    drop_pages(m->emb_src, (size_t)m->cfg.vocab * d * es); /* only the rows a batch needs stay mapped */
}

/* Whether to stream: asked, or (auto) a Llama-family checkpoint whose float32 weights for blocks
 * 0..n_layers-1 and the embedding would take FW_STREAM_BYTES or more. */
static int want_stream(const fw_config *c, int n_layers, fw_weights how) {
    if (how != FW_WEIGHTS_AUTO) return how == FW_WEIGHTS_STREAM;
    if (c->arch != FW_ARCH_LLAMA) return 0;
    double d = c->d_model, q = (double)c->n_heads * c->head_dim, kv = (double)c->n_kv_heads * c->head_dim;
    double block = d * (q + 2 * kv) + q * d + (c->gated_mlp ? 3.0 : 2.0) * c->d_ff * d;
    return 4.0 * ((double)c->vocab * d + n_layers * block) >= (double)FW_STREAM_BYTES;
}

void fw_model_free(fw_model *m) {
    if (!m) return;
    for (int l = 0; l < m->n_loaded; l++) fw_layer_free(&m->layers[l]);
    if (m->ck) {
        ckpt_close(m->ck);
        free(m->ck);
    }
    if (m->lm_head != m->tok_emb) free(m->lm_head);
    free(m->layers);
    free(m->tok_emb);
    free(m->pos_emb);
    free(m->lnf_w);
    free(m->lnf_b);
    free(m->inv_freq);
    free(m->inv_freq_local);
    free(m);
}

fw_model *fw_model_load(const char *dir, int n_layers, int with_head) {
    return fw_model_load_mode(dir, n_layers, with_head, FW_WEIGHTS_RESIDENT);
}

/* Streamed: keeps the mapping, checks every needed block's names and shapes now by converting
 * it once into a scratch block (so a bad checkpoint fails at load, not mid-run). */
static int load_streamed(fw_model *m, fw_ckpt *ck, int n_layers) {
    const fw_config *c = &m->cfg;
    if (c->arch != FW_ARCH_LLAMA)
        return sf_fail("%s: streamed weights need a Llama-family model, not %s (use resident weights)", ck->dir,
                       c->architecture);
    const sf_st_tensor *t = ckpt_find(ck, "model.embed_tokens.weight");
    if (!t) return SF_ERR;
    if (t->t.dtype != SF_F32 && t->t.dtype != SF_F16 && t->t.dtype != SF_BF16)
        return sf_fail("%s: streamed weights need F32, F16 or BF16 tensors, not %s", ck->dir, sf_dtype_name(t->t.dtype));
    if (t->t.ndim != 2 || t->t.shape[0] != c->vocab || t->t.shape[1] != c->d_model)
        return sf_fail("%s: tensor \"model.embed_tokens.weight\" is not [%d, %d]", ck->dir, c->vocab, c->d_model);
    if (!(m->ck = sf_zalloc("streamed checkpoint", 1, sizeof *m->ck))) return SF_ERR;
    *m->ck = *ck;
    memset(ck, 0, sizeof *ck); /* the model owns the mapping now */
    m->ck->drop_pages = 1;
    m->emb_src = t->t.data;
    m->emb_dtype = t->t.dtype;
    drop_pages(t->t.data, (size_t)c->vocab * c->d_model * sf_dtype_size(t->t.dtype));
    fw_layer scratch = {0};
    int rc = SF_OK;
    for (int l = 0; l < n_layers && rc == SF_OK; l++) rc = fw_block(m, l, &scratch) ? SF_OK : SF_ERR;
    fw_layer_free(&scratch);
    m->n_loaded = n_layers;
    return rc;
}

fw_model *fw_model_load_mode(const char *dir, int n_layers, int with_head, fw_weights how) {
    fw_model *m = sf_zalloc("model", 1, sizeof *m);
    if (!m) return NULL;
    fw_ckpt ck = {0};
    if (fw_config_load(dir, &m->cfg) != SF_OK) {
        free(m);
        return NULL;
    }
    if (ckpt_open(&ck, dir) != SF_OK) goto fail;
    const fw_config *c = &m->cfg;
    int d = c->d_model, V = c->vocab;
    if (n_layers < 0 || n_layers > c->n_layers) n_layers = c->n_layers;
    if (!(m->layers = sf_zalloc("model blocks", (size_t)(n_layers ? n_layers : 1), sizeof *m->layers)) ||
        !(m->inv_freq = fw_rope_inv_freq(c, c->rope_theta, 1)) ||
        (c->rope_local_theta > 0 && !(m->inv_freq_local = fw_rope_inv_freq(c, c->rope_local_theta, 0))))
        goto fail;

    /* GPT-2 checkpoints exist with and without the "transformer." prefix. */
    const char *pre = c->arch == FW_ARCH_GPT2 && !ckpt_has(&ck, "transformer.wte.weight") &&
                      ckpt_has(&ck, "wte.weight") ? "" : "transformer.";
    char n[256];
    const char *emb = c->arch == FW_ARCH_LLAMA ? "model.embed_tokens.weight"
                    : c->arch == FW_ARCH_GPT2  ? NAME(n, "%swte.weight", pre) : "gpt_neox.embed_in.weight";
    if (want_stream(c, n_layers, how)) {
        if (load_streamed(m, &ck, n_layers) != SF_OK) goto fail;
    } else if (!(m->tok_emb = load_new(&ck, emb, 2, V, d)))
        goto fail;
    if (c->learned_pos && !(m->pos_emb = load_new(&ck, NAME(n, "%swpe.weight", pre), 2, c->max_pos, d))) goto fail;

    for (int l = 0; l < n_layers && !m->ck; l++) {
        m->n_loaded = l + 1; /* so fw_model_free frees a partly loaded layer */
        int rc = c->arch == FW_ARCH_LLAMA ? load_llama_layer(&ck, c, l, &m->layers[l])
               : c->arch == FW_ARCH_GPT2  ? load_gpt2_layer(&ck, pre, c, l, &m->layers[l])
                                          : load_neox_layer(&ck, c, l, &m->layers[l]);
        if (rc != SF_OK) goto fail;
    }
    if (with_head) {
        const char *lnf = c->arch == FW_ARCH_LLAMA ? "model.norm" : c->arch == FW_ARCH_GPT2 ? "ln_f"
                                                                  : "gpt_neox.final_layer_norm";
        char w[256], b[256];
        if (c->arch == FW_ARCH_GPT2) {
            snprintf(w, sizeof w, "%s%s.weight", pre, lnf);
            snprintf(b, sizeof b, "%s%s.bias", pre, lnf);
        } else {
            snprintf(w, sizeof w, "%s.weight", lnf);
            snprintf(b, sizeof b, "%s.bias", lnf);
        }
        const fw_ckpt *hk = m->ck ? m->ck : &ck;
        if (!(m->lnf_w = load_norm(hk, c, w, d))) goto fail;
        if (c->norm == FW_LAYERNORM && !(m->lnf_b = load_new(hk, b, 1, d, 0))) goto fail;
        if (c->tied_embeddings && !m->ck) m->lm_head = m->tok_emb;
        else if (!(m->lm_head = load_new(hk, c->tied_embeddings ? emb : c->arch == FW_ARCH_NEOX ? "embed_out.weight"
                                                                                               : "lm_head.weight", 2, V, d)))
            goto fail;
    }
    ckpt_close(&ck);
    return m;
fail:
    ckpt_close(&ck);
    fw_model_free(m);
    return NULL;
}
