/* forward_stage.c — the `forward` stage (tokens -> activations) and `saeflow forward`. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model.h"
#include "token_lines.h"
#ifdef FW_HAVE_SAE
#include "sae.h"
#endif
#include "sf_kinds.h"
#include "sf_util.h"

#define FW_MAX_HOOKS 64

/* ------------------------------------------------------------------------------------------ */
/* An SAE spliced into the forward: its reconstruction replaces a hook point's activations     */

typedef struct fwd_sae {
    fw_splice splice;
    const int32_t *tok; /* [batch, seq] of the current request */
    int bos_id;         /* a BOS at position 0 keeps its own activations (the paper excludes BOS) */
#ifdef FW_HAVE_SAE
    sae_model m;
    float *xhat;
    size_t cap;         /* rows xhat holds */
#endif
} fwd_sae;

#ifdef FW_HAVE_SAE
/* fw_splice fn: every row but a leading BOS becomes the SAE's reconstruction, in the raw space. */
static int fwd_sae_fn(void *ctx, float *acts, int batch, int seq, int width) {
    fwd_sae *a = ctx;
    size_t rows = (size_t)batch * seq;
    if (rows > a->cap) {
        free(a->xhat);
        a->cap = 0;
        size_t n;
        if (!sf_mul_size(rows, (size_t)width, &n) || !(a->xhat = sf_alloc("the SAE's reconstruction (rows x d floats)", n, sizeof *a->xhat)))
            return SF_ERR;
        a->cap = rows;
    }
    if (sae_reconstruct(&a->m, acts, (int64_t)rows, seq, a->xhat) != SF_OK) return SF_ERR;
    for (size_t i = 0; i < rows; i++)
        if (i % seq || a->tok[i] != a->bos_id) memcpy(acts + i * width, a->xhat + i * width, width * sizeof *acts);
    return SF_OK;
}

/* Loads the SAE in dir, to splice at hook_name ("": the hook its config records) of the model in
 * model_dir named checkpoint; the SAE must have been trained there unless accept_mismatch. NULL on
 * error. */
static fwd_sae *fwd_sae_open(const char *dir, const char *hook_name, const fw_config *cfg, int bos_id,
                             const char *model_dir, const char *checkpoint, int accept_mismatch) {
    fwd_sae *a = sf_zalloc("SAE splice", 1, sizeof *a);
    if (!a) return NULL;
    a->bos_id = bos_id;
    if (sae_load(&a->m, dir) != SF_OK) {
        free(a);
        return NULL;
    }
    const char *name = *hook_name ? hook_name : a->m.hook;
    int rc = SF_OK;
    if (!*name) rc = sf_fail("sae %s records no hook point: set sae_hook (e.g. resid_post.2)", dir);
    else if (fw_hook_parse(name, &a->splice.hook) != SF_OK) rc = SF_ERR;
    else if (fw_hook_check(cfg, a->splice.hook) != SF_OK) rc = SF_ERR;
    else if (fw_hook_width(cfg, a->splice.hook) != a->m.d)
        rc = sf_fail("sae %s has d = %d, hook %s is %d wide", dir, a->m.d, name, fw_hook_width(cfg, a->splice.hook));
    else rc = sae_check_source(&a->m, dir, name, checkpoint, model_dir, accept_mismatch);
    if (rc != SF_OK) {
        sae_model_free(&a->m);
        free(a);
        return NULL;
    }
    a->splice.fn = fwd_sae_fn;
    a->splice.ctx = a;
    sf_log(SF_LOG_INFO, "splicing SAE %s (%d latents, k %d) at %s", dir, a->m.n, a->m.k, name);
    return a;
}

static void fwd_sae_close(fwd_sae *a) {
    if (!a) return;
    sae_model_free(&a->m);
    free(a->xhat);
    free(a);
}
#else
static fwd_sae *fwd_sae_open(const char *dir, const char *hook_name, const fw_config *cfg, int bos_id,
                             const char *model_dir, const char *checkpoint, int accept_mismatch) {
    (void)hook_name, (void)cfg, (void)bos_id, (void)model_dir, (void)checkpoint, (void)accept_mismatch;
    sf_fail("sae %s: this build has no SAE library (stages/sae_trainer was not built)", dir);
    return NULL;
}

static void fwd_sae_close(fwd_sae *a) { (void)a; }
#endif

/* The splice for one request over tok. */
static const fw_splice *fwd_sae_splice(fwd_sae *a, const int32_t *tok) {
    a->tok = tok;
    return &a->splice;
}

/* ------------------------------------------------------------------------------------------ */
/* Replicas of the stage in one process share one read-only copy of the weights                */

static void model_free_shared(void *m) { fw_model_free(m); }
static sf_shared_cache shared_models = SF_SHARED_CACHE_INIT(model_free_shared);

typedef struct model_spec {
    const char *dir;
    int n_layers, head;
    fw_weights how;
} model_spec;

static void *model_load_shared(const char *key, void *arg) {
    (void)key;
    const model_spec *ms = arg;
    return fw_model_load_mode(ms->dir, ms->n_layers, ms->head, ms->how);
}

/* One copy per (directory, layers loaded, head, weights) in the process. */
static fw_model *model_acquire(const char *dir, int n_layers, int head, fw_weights how) {
    char key[4200];
    if ((size_t)snprintf(key, sizeof key, "%d %d %d %s", n_layers, head, (int)how, dir) >= sizeof key) {
        sf_fail("model directory name too long: %s", dir);
        return NULL;
    }
    model_spec ms = {dir, n_layers, head, how};
    return sf_shared_acquire(&shared_models, key, model_load_shared, &ms);
}

/* ------------------------------------------------------------------------------------------ */
/* The stage                                                                                   */

typedef struct fwd_stage {
    fw_model *model;
    fw_state *state;
    const char *model_dir;
    char checkpoint[256];
    int n_hooks;
    fw_hook hooks[FW_MAX_HOOKS];
    char hook_names[FW_MAX_HOOKS][48];
    int drop_bos, want_logits, want_loss, bos_id;
    sf_dtype out_dtype;
    fw_weights weights;    /* param weights */
    fwd_sae *sae;          /* param sae: loss_sae is the loss with its reconstruction spliced in */
    /* per-message buffers, grown to the largest batch */
    float *outs[FW_MAX_HOOKS];
    float *logits, *loss, *loss_sae;
    size_t cap_tokens;
    uint64_t tokens_done;
} fwd_stage;

static const sf_param_def fwd_params[] = {
    {"model", SF_PARAM_STRING, NULL, "Hugging Face checkpoint directory (config.json + safetensors)"},
    {"hooks", SF_PARAM_STRING, "", "comma-separated hook points, e.g. resid_post.11,mlp_out.3 (Hugging Face's hidden_states.12 = resid_post.11)"},
    {"drop_bos", SF_PARAM_BOOL, "true", "drop position 0 when every sequence starts with BOS"},
    {"bos_id", SF_PARAM_INT, "-1", "BOS token id; -1 takes bos_token_id from config.json"},
    {"out_dtype", SF_PARAM_STRING, "f32", "dtype of emitted activations: f32 or bf16", "f32|bf16"},
    {"checkpoint", SF_PARAM_STRING, "", "checkpoint name in emitted messages (default: model dir base name)"},
    {"logits", SF_PARAM_BOOL, "false", "add logits [B, T, vocab] (f32)"},
    {"loss", SF_PARAM_BOOL, "false", "add per-token cross-entropy of the next token [B, T] (NaN at the end)"},
    {"sae", SF_PARAM_STRING, "", "trained SAE directory (any layout): also emit loss_sae, the loss with sae_hook's "
     "activations replaced by the SAE's reconstruction (BOS kept); implies loss"},
    {"sae_hook", SF_PARAM_STRING, "", "hook point the SAE replaces (default: the hook its config records)"},
    {"accept_sae_mismatch", SF_PARAM_BOOL, "false",
     "splice the SAE into another hook (sae_hook), checkpoint or model than its config records (logged); "
     "otherwise that is an error"},
    {"weights", SF_PARAM_STRING, "auto", "how the blocks' weights are held: resident (float32, converted at load: "
     "2x a bf16 checkpoint's bytes), stream (Llama family: mapped, each block converted when it runs; RSS about "
     "one block) or auto (stream when the float32 weights would take 1 GiB or more)", "auto|resident|stream"},
    {"threads", SF_PARAM_INT, "0", "threads of the forward: each sgemm is split over them, with OpenBLAS on one thread meanwhile (0: all cores)", "[0, 4096]"},
    {NULL, 0, NULL, NULL},
};

/* Splits "a,b,c" into hooks; SF_ERR on a bad name or too many. */
static int parse_hooks(const char *list, fwd_stage *s) {
    char buf[4096];
    if (strlen(list) >= sizeof buf) return sf_fail("hooks: list too long");
    strcpy(buf, list);
    for (char *save = NULL, *tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        if (s->n_hooks == FW_MAX_HOOKS) return sf_fail("hooks: more than %d", FW_MAX_HOOKS);
        if (fw_hook_parse(tok, &s->hooks[s->n_hooks]) != SF_OK) return SF_ERR;
        fw_hook_name(s->hooks[s->n_hooks], s->hook_names[s->n_hooks], sizeof s->hook_names[0]);
        for (int i = 0; i < s->n_hooks; i++) /* e.g. hidden_states.3 and resid_post.2 */
            if (strcmp(s->hook_names[i], s->hook_names[s->n_hooks]) == 0)
                return sf_fail("hooks: %s names %s, which the list already has", tok, s->hook_names[i]);
        s->n_hooks++;
    }
    return SF_OK;
}

static void fwd_destroy(void *state) {
    fwd_stage *s = state;
    if (!s) return;
    sf_shared_release(&shared_models, s->model);
    fw_state_free(s->state);
    fwd_sae_close(s->sae);
    for (int i = 0; i < s->n_hooks; i++) free(s->outs[i]);
    free(s->logits);
    free(s->loss);
    free(s->loss_sae);
    free(s);
}

/* The parameters, for check and init alike: out_dtype, hooks, the model's config.json (each hook
 * within its depth), and the SAE to splice (loaded into s->sae, which the caller closes). */
static int fwd_params_load(sf_ctx *ctx, fwd_stage *s, fw_config *cfg) {
    s->model_dir = sf_param_str(ctx, "model");
    s->drop_bos = sf_param_bool(ctx, "drop_bos");
    s->want_logits = sf_param_bool(ctx, "logits");
    const char *sae_dir = sf_param_str(ctx, "sae");
    s->want_loss = sf_param_bool(ctx, "loss") || *sae_dir;
    const char *dt = sf_param_str(ctx, "out_dtype");
    if (!strcmp(dt, "f32")) s->out_dtype = SF_F32;
    else if (!strcmp(dt, "bf16")) s->out_dtype = SF_BF16;
    else return sf_param_fail(ctx, "out_dtype", "must be f32 or bf16, not \"%s\"", dt);
    if (parse_hooks(sf_param_str(ctx, "hooks"), s) != SF_OK) return sf_param_fail(ctx, "hooks", "%s", sf_last_error());
    if (!s->n_hooks && !s->want_logits && !s->want_loss) return sf_param_fail(ctx, "hooks", "nothing to emit: give hooks, logits or loss");
    if (fw_config_load(s->model_dir, cfg) != SF_OK)
        return sf_param_fail(ctx, "model", "%s (a Hugging Face checkpoint directory: config.json and safetensors)", sf_last_error());
    for (int i = 0; i < s->n_hooks; i++)
        if (fw_hook_check(cfg, s->hooks[i]) != SF_OK)
            return sf_param_fail(ctx, "hooks", "%s (%s)", sf_last_error(), s->model_dir);
    const char *w = sf_param_str(ctx, "weights");
    if (!strcmp(w, "auto")) s->weights = FW_WEIGHTS_AUTO;
    else if (!strcmp(w, "resident")) s->weights = FW_WEIGHTS_RESIDENT;
    else if (!strcmp(w, "stream")) s->weights = FW_WEIGHTS_STREAM;
    else return sf_param_fail(ctx, "weights", "must be auto, resident or stream, not \"%s\"", w);
    if (s->weights == FW_WEIGHTS_STREAM && cfg->arch != FW_ARCH_LLAMA)
        return sf_param_fail(ctx, "weights", "stream needs a Llama-family model, not %s", cfg->architecture);
    const char *name = sf_param_str(ctx, "checkpoint");
    if (!*name) sf_default_checkpoint(s->model_dir, s->checkpoint, sizeof s->checkpoint);
    else snprintf(s->checkpoint, sizeof s->checkpoint, "%s", name);
    s->bos_id = (int)sf_param_int(ctx, "bos_id");
    if (s->bos_id < 0) s->bos_id = cfg->bos_id;
    if (*sae_dir && !(s->sae = fwd_sae_open(sae_dir, sf_param_str(ctx, "sae_hook"), cfg, s->bos_id, s->model_dir,
                                            s->checkpoint, sf_param_bool(ctx, "accept_sae_mismatch"))))
        return sf_param_fail(ctx, "sae", "%s", sf_last_error());
    return SF_OK;
}

static int fwd_check(sf_ctx *ctx) {
    fwd_stage *s = sf_zalloc("forward check", 1, sizeof *s);
    if (!s) return SF_ERR;
    fw_config cfg;
    int rc = fwd_params_load(ctx, s, &cfg);
    fwd_sae_close(s->sae);
    free(s);
    return rc;
}

static int fwd_init(sf_ctx *ctx, void **state) {
    fwd_stage *s = sf_zalloc("forward state", 1, sizeof *s);
    if (!s) return SF_ERR;
    *state = s;
    fw_config cfg;
    if (fwd_params_load(ctx, s, &cfg) != SF_OK) return SF_ERR;

    /* Load only the blocks the hooks need, unless logits or loss need them all. */
    int need = 0, head = s->want_logits || s->want_loss;
    for (int i = 0; i < s->n_hooks; i++)
        if (s->hooks[i].layer + 1 > need) need = s->hooks[i].layer + 1;
    fw_set_threads((int)sf_param_int(ctx, "threads"));
    if (!(s->model = model_acquire(s->model_dir, head ? -1 : need, head, s->weights))) return SF_ERR;
    if (!(s->state = fw_state_new((int)sf_param_int(ctx, "threads")))) return SF_ERR;
    sf_log(SF_LOG_INFO, "%s (%s, %d of %d blocks, %s weights), checkpoint %s", s->model_dir, cfg.architecture,
           s->model->n_loaded, cfg.n_layers, s->model->ck ? "streamed" : "resident", s->checkpoint);
    return SF_OK;
}

/* An output buffer of B x T x width floats, named (with its size) when memory runs out. */
static float *alloc_out(const char *what, int64_t B, int64_t T, size_t width) {
    char name[160];
    snprintf(name, sizeof name, "%s for %lld x %lld tokens", what, (long long)B, (long long)T);
    float *p = sf_alloc(name, (size_t)(B * T), width * sizeof(float));
    if (!p) sf_fail("%s; lower the batch (the tokenizer's batch) or the sequence length", sf_last_error());
    return p;
}

/* Buffers for a batch of B x T tokens, kept for the largest batch so far. */
static int grow(fwd_stage *s, int64_t B, int64_t T) {
    size_t tokens = (size_t)(B * T);
    if (tokens <= s->cap_tokens) return SF_OK;
    const fw_config *c = &s->model->cfg;
    s->cap_tokens = 0; /* until every buffer has its new size */
    for (int i = 0; i < s->n_hooks; i++) {
        free(s->outs[i]);
        if (!(s->outs[i] = alloc_out(s->hook_names[i], B, T, (size_t)fw_hook_width(c, s->hooks[i])))) return SF_ERR;
    }
    free(s->logits);
    free(s->loss);
    free(s->loss_sae);
    s->logits = s->loss = s->loss_sae = NULL;
    if (s->want_logits && !(s->logits = alloc_out("logits", B, T, (size_t)c->vocab))) return SF_ERR;
    if (!(s->loss = alloc_out("loss", B, T, 1))) return SF_ERR;
    if (s->sae && !(s->loss_sae = alloc_out("loss_sae", B, T, 1))) return SF_ERR;
    s->cap_tokens = tokens;
    return SF_OK;
}

/* Puts [B, T, w] rows of src into m under key, keeping columns t >= skip of every sequence. */
static void put_rows(sf_msg *m, const char *key, sf_dtype dt, const float *src, int B, int T, int skip, int w) {
    int64_t shape[3] = {B, T - skip, w};
    int ndim = w ? 3 : 2;
    char *dst = sf_msg_put_tensor_inplace(m, key, dt, ndim, shape);
    if (!dst) return; /* the message keeps the error: sf_emit refuses it */
    size_t row = (size_t)(T - skip) * (w ? w : 1), esz = sf_dtype_size(dt);
    for (int b = 0; b < B; b++)
        sf_convert_from_f32(dst + (size_t)b * row * esz, dt, src + ((size_t)b * T + skip) * (w ? w : 1), row);
}

/* The metadata every emitted message carries; tokens and pos follow the dropped BOS column. */
static int put_meta(sf_msg *m, const sf_msg *in, const fwd_stage *s, const int32_t *tok, int B, int T, int skip,
                    const sf_tensor *pos) {
    int64_t shape[2] = {B, T - skip};
    int32_t *t = sf_msg_put_tensor_inplace(m, "tokens", SF_I32, 2, shape);
    if (!t) return SF_ERR;
    for (int b = 0; b < B; b++) memcpy(t + (size_t)b * (T - skip), tok + (size_t)b * T + skip, (size_t)(T - skip) * 4);
    if (pos) {
        int64_t n = B;
        int32_t *p = sf_msg_put_tensor_inplace(m, "pos", SF_I32, 1, &n);
        if (!p) return SF_ERR;
        for (int b = 0; b < B; b++) {
            int32_t v;
            memcpy(&v, (const char *)pos->data + (size_t)b * 4, 4);
            p[b] = v; /* pos names the first non-BOS token: dropping BOS does not move it */
        }
    }
    const char *pass[] = {"doc_id", "label", "split", "corpus"};
    for (size_t i = 0; i < sizeof pass / sizeof *pass; i++)
        if (sf_msg_has(in, pass[i]) && sf_msg_copy_field(m, in, pass[i]) != SF_OK) return SF_ERR;
    sf_msg_put_str(m, "model", s->model_dir);
    sf_msg_put_str(m, "checkpoint", s->checkpoint);
    return SF_OK;
}

static int fwd_on_message(sf_ctx *ctx, void *state, int input, const sf_msg *msg) {
    (void)input;
    fwd_stage *s = state;
    const fw_config *c = &s->model->cfg;
    sf_tokens_msg tm;
    if (sf_read_tokens(msg, 0, &tm) != SF_OK) return SF_ERR;
    int64_t B = tm.seq.B, T = tm.seq.T;
    if (B < 1 || T < 1 || B * T > (1 << 22)) return sf_fail("tokens: bad shape [%lld, %lld]", (long long)B, (long long)T);
    int has_pos = tm.seq.has_keys;
    const sf_tensor pos = tm.seq.pos;

    size_t N = (size_t)(B * T);
    int32_t *tok = sf_alloc("the batch's token ids", N, sizeof *tok);
    if (!tok) return SF_ERR;
    for (size_t i = 0; i < N; i++) { /* the payload is unaligned: copy element by element */
        int64_t v = sf_int_at(&tm.seq.tokens, i);
        tok[i] = v < 0 ? -1 : (int32_t)v; /* fw_forward names a bad id */
    }

    /* Drop column 0 only when every sequence starts with BOS; a mix would give ragged rows. */
    int skip = 0;
    if (s->drop_bos && s->bos_id >= 0 && T > 1) {
        int n_bos = 0;
        for (int64_t b = 0; b < B; b++) n_bos += tok[b * T] == s->bos_id;
        if (n_bos && n_bos != B) {
            free(tok);
            return sf_fail("drop_bos: %d of %lld sequences start with BOS (%d), the others do not", n_bos,
                           (long long)B, s->bos_id);
        }
        skip = n_bos ? 1 : 0;
    }

    if (grow(s, B, T) != SF_OK) {
        free(tok);
        return SF_ERR;
    }
    int want_head = s->want_logits || s->want_loss;
    /* with an SAE, a spliced pass from the SAE's block gives loss_sae */
    fw_request r = {tok,      (int)B, (int)T, s->n_hooks, s->hooks, s->outs, s->logits, want_head ? s->loss : NULL,
                    s->sae ? fwd_sae_splice(s->sae, tok) : NULL, s->loss_sae};
    if (fw_forward(s->model, s->state, &r) != SF_OK) {
        free(tok);
        return SF_ERR;
    }

    /* One message per hook; logits and loss ride with the first (or alone without hooks). */
    int n_msgs = s->n_hooks ? s->n_hooks : 1;
    for (int i = 0; i < n_msgs; i++) {
        sf_msg *m = sf_msg_new();
        if (put_meta(m, msg, s, tok, (int)B, (int)T, skip, has_pos ? &pos : NULL) != SF_OK) {
            sf_msg_free(m);
            free(tok);
            return SF_ERR;
        }
        if (s->n_hooks) {
            put_rows(m, "acts", s->out_dtype, s->outs[i], (int)B, (int)T, skip, fw_hook_width(c, s->hooks[i]));
            sf_msg_put_str(m, "hook", s->hook_names[i]);
            sf_msg_put_int(m, "layer", s->hooks[i].layer);
        }
        if (i == 0 && s->want_logits) put_rows(m, "logits", SF_F32, s->logits, (int)B, (int)T, skip, c->vocab);
        if (i == 0 && s->want_loss) put_rows(m, "loss", SF_F32, s->loss, (int)B, (int)T, skip, 0);
        if (i == 0 && s->sae) put_rows(m, "loss_sae", SF_F32, s->loss_sae, (int)B, (int)T, skip, 0);
        if (sf_emit(ctx, m) != SF_OK) {
            free(tok);
            return SF_ERR;
        }
    }
    free(tok);
    s->tokens_done += N;
    sf_progress(ctx, s->tokens_done, 0, "tokens");
    return SF_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* saeflow forward MODEL_DIR --hook HOOK --out FILE.npy [--logits] [--loss] [--threads N]      */

/* A version 1.0 .npy header for a C-order float32 array [rows, cols]. */
static int npy_header(FILE *f, size_t rows, size_t cols) {
    char dict[128];
    int n = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (%zu, %zu), }", rows, cols);
    int total = 10 + n + 1, pad = (64 - total % 64) % 64; /* magic, version, length; dict; '\n' */
    uint8_t pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (uint8_t)((n + pad + 1) & 0xff), (uint8_t)((n + pad + 1) >> 8)};
    if (fwrite(pre, 1, 10, f) != 10 || fwrite(dict, 1, (size_t)n, f) != (size_t)n) return SF_ERR;
    for (int i = 0; i < pad; i++) fputc(' ', f);
    fputc('\n', f);
    return ferror(f) ? SF_ERR : SF_OK;
}

static int cli_usage_to(FILE *out, int rc) {
    fprintf(out, "usage: saeflow forward MODEL_DIR [--hook HOOK] [--out FILE.npy] [--logits] [--loss]\n"
                    "                       [--sae SAE_DIR [--sae-hook HOOK] [--accept-sae-mismatch]]\n"
                    "                       [--loss-out FILE.npy] [--threads N] [--weights auto|resident|stream]\n"
                    "       saeflow forward MODEL_DIR --generate N\n"
                    "  reads token ids on stdin, one sequence per line; writes the hook's activations\n"
                    "  [tokens, d] (or with --logits the logits [tokens, vocab]) of every token in order as\n"
                    "  float32 .npy; --loss prints the mean next-token cross-entropy; with --sae also the mean\n"
                    "  loss with the SAE's reconstruction spliced in at its hook (or --sae-hook), BOS kept, and\n"
                    "  the increase (an SAE trained on another hook, checkpoint or model is refused unless\n"
                    "  --accept-sae-mismatch); --loss-out writes the per-token losses [tokens, 1] ([tokens, 2]: clean,\n"
                    "  spliced with --sae; NaN at each sequence's last token); --generate prints each sequence\n"
                    "  followed by its greedy continuation of N tokens. --weights: as the stage's param weights\n"
                    "  (auto streams a Llama-family model's blocks from the mapped checkpoint from 1 GiB of float32).\n");
    return rc;
}

static int cli_usage(void) { return cli_usage_to(stderr, 2); }

/* Greedy decoding without a cache (for checking a model, not for speed): prints each sequence
 * followed by n argmax tokens, one line per sequence. */
static int cli_generate(const fw_model *m, fw_state *st, const fw_seq_list *seqs, int n) {
    int V = m->cfg.vocab, rc = SF_OK;
    for (size_t i = 0; i < seqs->n_seq && rc == SF_OK; i++) {
        int T0 = (int)(seqs->start[i + 1] - seqs->start[i]);
        int32_t *ids = sf_alloc("the generated sequence", (size_t)T0 + (size_t)n, sizeof *ids);
        float *logits = ids ? sf_alloc("logits of the generated sequence", (size_t)T0 + (size_t)n, (size_t)V * sizeof *logits) : NULL;
        if (!logits) {
            free(ids);
            return SF_ERR;
        }
        memcpy(ids, seqs->tok + seqs->start[i], (size_t)T0 * sizeof *ids);
        for (int T = T0; T < T0 + n && rc == SF_OK; T++) {
            fw_request r = {ids, 1, T, 0, NULL, NULL, logits, NULL, NULL, NULL};
            if ((rc = fw_forward(m, st, &r)) != SF_OK) break;
            const float *last = logits + (size_t)(T - 1) * V;
            int best = 0;
            for (int v = 1; v < V; v++) best = last[v] > last[best] ? v : best;
            ids[T] = best;
        }
        for (int t = 0; t < T0 + n && rc == SF_OK; t++) printf("%d%c", (int)ids[t], t + 1 < T0 + n ? ' ' : '\n');
        free(ids);
        free(logits);
    }
    return rc;
}

static int cli_main(int argc, char **argv) {
    const char *dir = NULL, *hook_name = NULL, *out_path = NULL, *sae_dir = NULL, *sae_hook = "", *loss_path = NULL;
    const char *weights = "auto";
    int want_logits = 0, want_loss = 0, threads = 0, generate = 0, accept_mismatch = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return cli_usage_to(stdout, 0);
        if (!strcmp(argv[i], "--hook") && i + 1 < argc) hook_name = argv[++i];
        else if (!strcmp(argv[i], "--out") && i + 1 < argc) out_path = argv[++i];
        else if (!strcmp(argv[i], "--sae") && i + 1 < argc) sae_dir = argv[++i];
        else if (!strcmp(argv[i], "--sae-hook") && i + 1 < argc) sae_hook = argv[++i];
        else if (!strcmp(argv[i], "--loss-out") && i + 1 < argc) loss_path = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--weights") && i + 1 < argc) weights = argv[++i];
        else if (!strcmp(argv[i], "--generate") && i + 1 < argc) generate = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--logits")) want_logits = 1;
        else if (!strcmp(argv[i], "--loss")) want_loss = 1;
        else if (!strcmp(argv[i], "--accept-sae-mismatch")) accept_mismatch = 1;
        else if (argv[i][0] != '-' && !dir) dir = argv[i];
        else return cli_usage();
    }
    want_loss |= sae_dir || loss_path;
    fw_weights how = !strcmp(weights, "auto") ? FW_WEIGHTS_AUTO : !strcmp(weights, "resident") ? FW_WEIGHTS_RESIDENT
                   : !strcmp(weights, "stream") ? FW_WEIGHTS_STREAM : (fw_weights)-1;
    if ((int)how < 0) return cli_usage();
    int want_out = hook_name || want_logits;
    if (!dir || (hook_name && want_logits) || (want_out && !out_path) || (!want_out && !want_loss && generate <= 0) ||
        (generate > 0 && (want_out || want_loss)))
        return cli_usage();

    fw_hook hook = {.kind = FW_RESID_POST, .layer = 0};
    fw_config cfg;
    if ((hook_name && fw_hook_parse(hook_name, &hook) != SF_OK) || fw_config_load(dir, &cfg) != SF_OK) {
        fprintf(stderr, "saeflow forward: %s\n", sf_last_error());
        return 1;
    }
    if (hook_name && fw_hook_check(&cfg, hook) != SF_OK) {
        fprintf(stderr, "saeflow forward: %s: %s\n", dir, sf_last_error());
        return 1;
    }
    int head = want_logits || want_loss || generate > 0;
    fw_set_threads(threads);
    fw_seq_list seqs = {0};
    fw_model *m = NULL;
    fw_state *st = fw_state_new(threads);
    fwd_sae *sae = NULL;
    FILE *out = NULL;
    char out_tmp[4096] = "", loss_tmp[4096] = ""; /* outputs are written here and renamed when complete */
    float *acts = NULL, *loss = NULL, *losses = NULL;
    int rc = 1;
    if (!st || fw_read_sequences(stdin, &seqs) != SF_OK) goto done;
    char checkpoint[256];
    sf_default_checkpoint(dir, checkpoint, sizeof checkpoint);
    if (sae_dir && !(sae = fwd_sae_open(sae_dir, sae_hook, &cfg, cfg.bos_id, dir, checkpoint, accept_mismatch)))
        goto done;
    if (!(m = fw_model_load_mode(dir, head ? -1 : hook.layer + 1, head, how))) goto done;
    if (generate > 0) {
        rc = cli_generate(m, st, &seqs, generate) == SF_OK ? 0 : 1;
        goto done;
    }
    size_t width = want_logits ? (size_t)cfg.vocab : (size_t)fw_hook_width(&cfg, hook);
    if (out_path) {
        snprintf(out_tmp, sizeof out_tmp, "%s.partial", out_path);
        if (!(out = fopen(out_tmp, "wb"))) {
            out_tmp[0] = 0;
            sf_fail("%s: %s", out_path, strerror(errno));
            goto done;
        }
        if (npy_header(out, seqs.n_tok, width) != SF_OK) {
            sf_fail("%s: write error", out_path);
            goto done;
        }
    }
    int cols = sae ? 2 : 1; /* losses: clean, then spliced */
    if (want_loss && !(losses = sf_alloc("the per-token losses", seqs.n_tok, (size_t)cols * sizeof *losses))) goto done;
    double loss_sum[2] = {0, 0};
    size_t loss_n = 0;
    for (size_t i = 0; i < seqs.n_seq; i++) {
        int T = (int)(seqs.start[i + 1] - seqs.start[i]);
        const int32_t *tok = seqs.tok + seqs.start[i];
        float *o[1];
        free(acts);
        free(loss);
        loss = NULL;
        char what[160];
        snprintf(what, sizeof what, "%s of a %d-token sequence", want_logits ? "logits" : "activations", T);
        if (!(o[0] = acts = sf_alloc(what, (size_t)T, width * sizeof *acts)) ||
            !(loss = sf_alloc("the sequence's losses", (size_t)T, 2 * sizeof *loss))) {
            sf_fail("%s; feed shorter sequences", sf_last_error());
            goto done;
        }
        fw_request r = {tok,  1, T, hook_name ? 1 : 0, &hook, o, want_logits ? acts : NULL, want_loss ? loss : NULL,
                        sae ? fwd_sae_splice(sae, tok) : NULL, sae ? loss + T : NULL};
        if (fw_forward(m, st, &r) != SF_OK) {
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", sf_last_error());
            sf_fail("sequence %zu: %s", i + 1, msg);
            goto done;
        }
        if (out && fwrite(acts, sizeof *acts * width, (size_t)T, out) != (size_t)T) {
            sf_fail("%s: write error", out_path);
            goto done;
        }
        for (int t = 0; want_loss && t < T; t++) {
            for (int c = 0; c < cols; c++) losses[(seqs.start[i] + t) * cols + c] = loss[c * T + t];
            if (t + 1 == T) continue;
            for (int c = 0; c < cols; c++) loss_sum[c] += loss[c * T + t];
            loss_n++;
        }
    }
    if (out && fclose(out) != 0) {
        out = NULL;
        sf_fail("%s: write error", out_path);
        goto done;
    }
    out = NULL;
    if (loss_path) {
        snprintf(loss_tmp, sizeof loss_tmp, "%s.partial", loss_path);
        if (!(out = fopen(loss_tmp, "wb")) || npy_header(out, seqs.n_tok, (size_t)cols) != SF_OK ||
            fwrite(losses, sizeof *losses * cols, seqs.n_tok, out) != seqs.n_tok || fclose(out) != 0) {
            out = NULL;
            sf_fail("%s: cannot write: %s", loss_path, strerror(errno));
            goto done;
        }
        out = NULL;
    }
    /* every output complete: only now do they take their names */
    if (out_tmp[0] && sf_rename_durable(out_tmp, out_path) != SF_OK) goto done;
    out_tmp[0] = 0;
    if (loss_tmp[0] && sf_rename_durable(loss_tmp, loss_path) != SF_OK) goto done;
    loss_tmp[0] = 0;
    double mean = loss_n ? loss_sum[0] / loss_n : NAN, mean_sae = loss_n ? loss_sum[1] / loss_n : NAN;
    if (want_loss) printf("loss %.6f over %zu predicted tokens\n", mean, loss_n);
    if (sae) printf("loss_sae %.6f (increase %.6f)\n", mean_sae, mean_sae - mean);
    rc = 0;
done:
    if (rc) fprintf(stderr, "saeflow forward: %s\n", sf_last_error());
    if (out) fclose(out);
    if (out_tmp[0]) unlink(out_tmp); /* nothing half-written keeps an output's name */
    if (loss_tmp[0]) unlink(loss_tmp);
    free(acts);
    free(loss);
    free(losses);
    fwd_sae_close(sae);
    fw_seq_list_free(&seqs);
    fw_state_free(st);
    fw_model_free(m);
    return rc;
}

static const sf_command fwd_commands[] = {
    {"forward", "MODEL_DIR [--hook HOOK] [--out FILE.npy] [--logits] [--loss] [--sae DIR [--sae-hook HOOK]] "
     "[--loss-out FILE.npy] [--generate N] [--threads N] [--weights auto|resident|stream]",
     "run a checkpoint on token ids from stdin; write activations or logits as .npy", cli_main},
    {NULL, NULL, NULL, NULL},
};

static const sf_stage_def forward_stage = {
    .name = "forward",
    .summary = "transformer forward (Llama/Qwen2/Qwen3/Mistral, OLMo-2, Gemma-2/3, GPT-2, GPT-NeoX): tokens -> activations",
    .doc = "Reads tokens messages (tokens int32 [B, T], doc_id, pos, label, split) and emits one activations "
           "message per hook: acts [B, T, d] (f32 or bf16; [B, T, d_ff] for mlp_hidden), tokens, doc_id, pos, "
           "label, split, hook, layer, model, checkpoint. With drop_bos the BOS column is removed (pos, the first non-BOS token's position, is unchanged). "
           "logits [B, T, vocab] and loss [B, T] ride with the first hook's message when asked for; with sae, also "
           "loss_sae [B, T], the loss with sae_hook's activations replaced by the SAE's reconstruction.",
    .params = fwd_params,
    .min_inputs = 1,
    .max_inputs = 1,
    .has_output = 1,
    .init = fwd_init,
    .check = fwd_check,
    .on_message = fwd_on_message,
    .destroy = fwd_destroy,
    .commands = fwd_commands,
    SF_STAGE_DEF_SIZES,
    .takes = "tokens", .emits = "activations",
};

SF_PLUGIN(&forward_stage)
