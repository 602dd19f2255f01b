/* model.h — decoder-only transformers from Hugging Face checkpoint directories, on the CPU.
 *
 * fw_model_load() reads config.json and the safetensors weights (one file or a sharded index),
 * validates every tensor's name and shape against the config, and converts everything to float32
 * (at load, or block by block as the forward runs them: fw_weights) in one uniform layout, whatever
 * the architecture stored:
 *
 *   every linear layer is [out, in] row-major (nn.Linear), y = x W^T + b;
 *   attention projections are fused: wqkv holds the q rows of all heads, then k, then v;
 *   a gated MLP (SwiGLU) has w_in = [gate rows; up rows], so one sgemm computes both.
 *
 * fw_forward() runs a batch [B, T] of token sequences (position 0..T-1 in each) and copies out the
 * requested hook points. Hook names count blocks from 0 as TransformerLens does (hook.h also
 * accepts Hugging Face's hidden_states.N on input):
 *
 *   resid_pre.L   input of block L            (= Hugging Face hidden_states[L])
 *   attn_out.L    attention output, after the output projection and its bias
 *   mlp_hidden.L  MLP activation, [.., d_ff]  (act(gate) * up for gated MLPs)
 *   mlp_out.L     MLP output
 *   resid_post.L  output of block L           (= hidden_states[L+1], except that resid_post of the
 *                 last block is before the final norm, as in TransformerLens; Hugging Face applies
 *                 the final norm to its last hidden_states entry)
 *
 * With post-norms (OLMo-2: instead of pre-norms) attn_out and mlp_out are after them, what is added
 * to the residual stream (TransformerLens's hook_attn_out / hook_mlp_out); QK-norms are behind no hook.
 *
 * Gemma (sandwich norms): resid_pre.0 is the embedding after its sqrt(d) scaling (Hugging Face's
 * hidden_states[0]); the norms before attention and MLP sit after resid_pre / the attention's
 * addition, the post-norms before attn_out / mlp_out as above. Logits are after the final
 * soft-capping; fw_final_norm() and lm_head leave that to the caller.
 *
 * Supported: LlamaForCausalLM (also Qwen2ForCausalLM, MistralForCausalLM with sliding-window
 * attention, Olmo2ForCausalLM, Qwen3ForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM),
 * GPT2LMHeadModel, GPTNeoXForCausalLM. Errors go through sf_fail() and name exactly what is wrong.
 */
#ifndef FW_MODEL_H
#define FW_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "hook.h"
#include "saeflow.h"

typedef enum fw_arch { FW_ARCH_LLAMA, FW_ARCH_GPT2, FW_ARCH_NEOX } fw_arch;
#define FW_MAX_LAYERS 1024
typedef enum fw_norm { FW_RMSNORM, FW_LAYERNORM } fw_norm;
/* Where a block's norms sit: before attention and MLP (Llama, GPT-2, NeoX), on their outputs before
 * they are added to the residual stream (OLMo-2), or both (Gemma's "sandwich"). */
typedef enum fw_norm_place { FW_NORM_PRE, FW_NORM_POST, FW_NORM_SANDWICH } fw_norm_place;
/* RMSNorm of queries and keys before RoPE: none, over all heads' q (and all k) at once (OLMo-2),
 * or over each head (Qwen3, Gemma-3). */
typedef enum fw_qk_norm { FW_QK_NONE, FW_QK_FULL, FW_QK_HEAD } fw_qk_norm;
typedef enum fw_act { FW_ACT_SILU, FW_ACT_GELU, FW_ACT_GELU_TANH, FW_ACT_RELU } fw_act;
typedef enum fw_rope_scaling {
    FW_ROPE_PLAIN, FW_ROPE_LINEAR, FW_ROPE_DYNAMIC, FW_ROPE_LLAMA3
} fw_rope_scaling;

typedef struct fw_config {
    fw_arch arch;
    char architecture[64]; /* as config.json names it */
    int n_layers, d_model, n_heads, n_kv_heads, head_dim, d_ff, vocab, max_pos;
    fw_norm norm;
    float norm_eps;
    fw_norm_place norm_place;
    fw_qk_norm qk_norm;
    int norm_plus_one;      /* Gemma: RMSNorm scales by (1 + weight); folded into the weights at load */
    float embed_scale;      /* Gemma: embeddings times sqrt(d_model); 0 = none */
    float attn_softcap;     /* Gemma: scores -> cap * tanh(scores / cap) before the mask; 0 = none */
    float final_softcap;    /* Gemma: the same on the logits; 0 = none */
    fw_act act;
    int gated_mlp;          /* Llama family: act(gate) * up */
    int qkv_bias, o_bias, mlp_bias;
    int learned_pos;        /* GPT-2: learned absolute position embeddings, no RoPE */
    int parallel_residual;  /* GPT-NeoX: x + attn(ln1(x)) + mlp(ln2(x)) */
    int tied_embeddings;    /* the LM head is the token embedding */
    /* Sliding-window ("local") attention: a query at position i sees keys i - sliding_window + 1 .. i
     * in the blocks with layer_local[l] set (Hugging Face's layer_types "sliding_attention"). */
    int sliding_window;     /* 0 when no block is windowed */
    unsigned char layer_local[FW_MAX_LAYERS];
    float attn_scale;       /* score multiplier, usually 1/sqrt(head_dim) */
    int attn_scale_by_layer; /* GPT-2 scale_attn_by_inverse_layer_idx: also divide by L+1 */
    /* RoPE: the first rotary_dim dims of each head rotate (rotate_half pairing); 0 = no RoPE. */
    int rotary_dim;
    double rope_theta;
    fw_rope_scaling rope_scaling;
    double rope_factor, rope_low_freq, rope_high_freq;
    int rope_orig_max_pos;
    double rope_local_theta; /* Gemma-3: the windowed blocks' own plain RoPE base; 0 = they use the above */
    int bos_id; /* -1 when config.json has none */
} fw_config;

typedef struct fw_layer {
    float *ln1_w, *ln1_b;   /* pre-norms of attention and MLP, NULL without (OLMo-2); ln*_b are NULL for RMSNorm */
    float *ln2_w, *ln2_b;
    float *post1_w, *post2_w; /* post-norms (RMSNorm) of the attention and MLP outputs [d], or NULL */
    float *q_norm, *k_norm; /* QK-norm weights: [H * hd], [KV * hd] (FW_QK_FULL), [hd], [hd] (FW_QK_HEAD), or NULL */
    float *wqkv, *bqkv;     /* [(H + 2*KV) * hd, d], [(H + 2*KV) * hd] or NULL */
    float *wo, *bo;         /* [d, H * hd], [d] or NULL */
    float *w_in, *b_in;     /* [ff, d] or, gated, [2*ff, d] (gate rows, then up rows) */
    float *w_out, *b_out;   /* [d, ff], [d] or NULL */
} fw_layer;

/* How the blocks' weights are held. Resident: converted to float32 at load (2x the bytes of a bf16
 * checkpoint). Streamed (Llama family only): the safetensors files stay memory-mapped and a block is
 * converted into the caller's scratch (fw_block) each time a forward runs it, its source pages
 * released afterwards, and embedding rows are converted as the batch needs them (fw_embed_rows):
 * peak RSS is then about one block in float32 plus the activations, while the file data stays in
 * the page cache. Auto streams when the float32 weights would take FW_STREAM_BYTES or more. */
typedef enum fw_weights { FW_WEIGHTS_AUTO, FW_WEIGHTS_RESIDENT, FW_WEIGHTS_STREAM } fw_weights;
#define FW_STREAM_BYTES ((size_t)1 << 30)

struct fw_ckpt;

typedef struct fw_model {
    fw_config cfg;
    int n_loaded;         /* blocks loaded: 0..n_loaded-1 (fewer than cfg.n_layers if asked) */
    fw_layer *layers;     /* [n_loaded], all NULL pointers when streamed */
    struct fw_ckpt *ck;   /* the mapped checkpoint when streamed, else NULL */
    const void *emb_src;  /* streamed: the embedding tensor in the mapping, [vocab, d] of emb_dtype */
    sf_dtype emb_dtype;
    float *tok_emb;       /* [vocab, d]; NULL when streamed */
    float *pos_emb;       /* [max_pos, d] (GPT-2) or NULL */
    float *lnf_w, *lnf_b; /* final norm, NULL if the head was not loaded */
    float *lm_head;       /* [vocab, d]; == tok_emb when tied; NULL if the head was not loaded */
    double *inv_freq;     /* [rotary_dim / 2], scaling applied (except dynamic, done per call) */
    double *inv_freq_local; /* [rotary_dim / 2] of the windowed blocks (rope_local_theta), or NULL */
} fw_model;

/* Loads blocks 0..n_layers-1 (n_layers < 0: all), and the final norm and LM head if with_head.
 * NULL with sf_last_error() set. */
fw_model *fw_model_load(const char *dir, int n_layers, int with_head);
/* The same with the weights held as `how` says (fw_model_load: resident). SF_ERR (NULL) when
 * streaming is asked of a model that cannot stream (not Llama-family). */
fw_model *fw_model_load_mode(const char *dir, int n_layers, int with_head, fw_weights how);
/* Block l's weights: the resident ones, or (streamed) converted into scratch, which the caller
 * owns (zeroed at first, freed with fw_layer_free). NULL with sf_last_error() on a failure. */
const fw_layer *fw_block(const fw_model *m, int l, fw_layer *scratch);
void fw_layer_free(fw_layer *ly);
/* Embedding rows of tokens tok[0..n-1] (ids already checked) into x [n, d], as stored (no scaling). */
void fw_embed_rows(const fw_model *m, const int32_t *tok, size_t n, float *x);
void fw_model_free(fw_model *m);
/* Only config.json: for callers that want to check a hook before loading weights. */
int fw_config_load(const char *dir, fw_config *cfg);
/* Hugging Face's RoPE inverse frequencies [rotary_dim / 2] for base theta, with linear or llama3
 * scaling applied if `scaled` (dynamic scaling depends on the sequence length; the forward applies
 * it per call). free() the result; NULL with sf_last_error() set. */
double *fw_rope_inv_freq(const fw_config *c, double theta, int scaled);

/* Hook points and their names: hook.h. */
/* Whether h exists in a model of this config: SF_ERR (sf_fail) if its block is beyond the model's,
 * or if it is Hugging Face's last hidden_states entry, which is after the final norm. */
int fw_hook_check(const fw_config *cfg, fw_hook h);
/* Row width of the hook's activations: d_model, or d_ff for mlp_hidden. */
int fw_hook_width(const fw_config *cfg, fw_hook h);

/* Replaces a hook point's activations in a second, spliced pass of the forward that computes
 * loss_spliced: fn gets the point's rows [batch * seq, width] and may rewrite them in place;
 * everything after the hook point then sees the new values (resid_pre/resid_post: the residual
 * stream itself; attn_out, mlp_out: before they are added to it; mlp_hidden: before the down
 * projection). fn returns SF_OK, or SF_ERR with sf_fail() to abort the forward. */
typedef struct fw_splice {
    fw_hook hook;
    int (*fn)(void *ctx, float *acts, int batch, int seq, int width);
    void *ctx;
} fw_splice;

typedef struct fw_request {
    const int32_t *tokens; /* [batch, seq] */
    int batch, seq;
    int n_hooks;
    const fw_hook *hooks;
    float **hook_out;      /* hook_out[i]: [batch * seq, fw_hook_width(hooks[i])] */
    float *logits;         /* [batch * seq, vocab] or NULL */
    float *loss;           /* [batch * seq] or NULL: -log p(next token); NaN at the last position */
    /* Both or neither: loss_spliced [batch * seq] is the loss with the splice applied. Hooks,
     * logits and loss are those of the model as it is (the clean pass); the spliced pass resumes
     * from the residual stream the clean pass saved at the start of the splice's block. */
    const fw_splice *splice;
    float *loss_spliced;
} fw_request;

/* Scratch buffers and worker threads of one forward caller; buffers grow to the largest batch
 * seen. threads: for the work between sgemms (0: one per online CPU). */
typedef struct fw_state fw_state;
fw_state *fw_state_new(int threads);
void fw_state_free(fw_state *s);
/* Queries per attention chunk (scores are computed chunk x keys-so-far; default 64) and rows per
 * LM head chunk (default: about 16M logits). Tests shrink them; 0 restores the default. */
void fw_state_set_chunks(fw_state *s, int attn_chunk, int head_rows);

/* Runs blocks up to the last one a hook or the splice needs (all of them, then the head, when
 * logits or loss are asked for), then the spliced pass if there is a splice. SF_ERR on a bad
 * token id, a hook beyond the loaded blocks, a sequence longer than the model allows, or a
 * failed splice. */
int fw_forward(const fw_model *m, fw_state *s, const fw_request *r);

/* The final norm, row by row (for callers that apply the head themselves). */
void fw_final_norm(const fw_model *m, const float *x, float *y, int rows);

/* Threads OpenBLAS uses; 0 leaves its default. */
void fw_set_threads(int n);

#endif
