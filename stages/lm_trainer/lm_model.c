/* lm_model.c — lm_model.h's parameters and their gradients: building a model from a config or a
 * Hugging Face checkpoint (through the forward stage's config parser and loader), the table of
 * HF-named tensors, and the activation buffers of lm_work. The passes themselves are in
 * lm_forward.c (forward) and lm_backward.c (backward). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>
#include <cblas.h>

#include "lm_internal.h"

int lm_config_check(const fw_config *c) {
    /* By name: the forward loads more Llama-like architectures than these, with parts (biases,
     * other norms) the backward does not have. */
    if (c->arch != FW_ARCH_LLAMA ||
        (strcmp(c->architecture, "LlamaForCausalLM") && strcmp(c->architecture, "MistralForCausalLM")))
        return sf_fail("lm: cannot train a %s: only LlamaForCausalLM (and MistralForCausalLM without a sliding "
                       "window) train", c->architecture);
    if (c->norm != FW_RMSNORM || c->act != FW_ACT_SILU || !c->gated_mlp)
        return sf_fail("lm: cannot train %s: training needs RMSNorm and a SwiGLU MLP (hidden_act \"silu\")",
                       c->architecture);
    if (c->qkv_bias || c->o_bias || c->mlp_bias)
        return sf_fail("lm: cannot train a model with attention or MLP biases (%s); set attention_bias and mlp_bias "
                       "to false", c->architecture);
    if (c->sliding_window)
        return sf_fail("lm: cannot train with sliding-window attention (sliding_window %d); remove it from the config",
                       c->sliding_window);
    if (c->rope_scaling == FW_ROPE_DYNAMIC)
        return sf_fail("lm: cannot train with dynamic rope_scaling (it changes with the sequence length); use "
                       "linear, llama3 or none");
    if (c->n_layers < 1 || c->d_model < 1 || c->n_heads < 1 || c->n_kv_heads < 1 || c->head_dim < 1 ||
        c->d_ff < 1 || c->vocab < 1 || c->max_pos < 1 || c->n_heads % c->n_kv_heads)
        return sf_fail("lm: layers, widths, heads (a multiple of the key/value heads), vocab_size and "
                       "max_position_embeddings must be positive");
    if (c->rotary_dim < 2 || c->rotary_dim % 2 || c->rotary_dim > c->head_dim || !(c->rope_theta > 0))
        return sf_fail("lm: RoPE needs an even rotary dimension within head_dim %d (got %d) and rope_theta > 0",
                       c->head_dim, c->rotary_dim);
    /* Every size below is a product of at most two of these; keep them well inside int and the
     * arena inside size_t. */
    const int lim = 1 << 24;
    if (c->d_model > lim || c->d_ff > lim || c->vocab > lim || c->n_heads * (int64_t)c->head_dim > lim ||
        c->n_layers > 4096 || c->max_pos > (1 << 20))
        return sf_fail("lm: the config's sizes are out of range (width, ff, vocab, heads x head_dim at most 2^24, "
                       "layers at most 4096)");
    return SF_OK;
}

/* Adds tensor `name` of shape [d0] or [d0, d1] to the table at arena offset *off (floats), which
 * it records in offs. With pad, the next offset is rounded up to a multiple of 16 floats (whole
 * SIMD vectors); without, the next tensor follows directly (the fused q/k/v and gate/up matrices).
 * Padding stays zero. */
static void add_tensor(lm_model *m, size_t *offs, const char *name, int ndim, int64_t d0, int64_t d1, size_t *off,
                       int pad) {
    offs[m->n_tensors] = *off;
    lm_tensor *t = &m->tensors[m->n_tensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = ndim == 2 ? d1 : 1;
    t->n = (size_t)d0 * (size_t)(ndim == 2 ? d1 : 1);
    t->decay = ndim == 2;
    *off += pad ? (t->n + 15) / 16 * 16 : t->n;
}

/* Lays out every tensor (names, shapes, offsets); q/k/v_proj adjacent, gate/up_proj adjacent. */
static void layout(lm_model *m, size_t *offs, size_t *total) {
    const fw_config *c = &m->cfg;
    int d = c->d_model, hd = c->head_dim, H = c->n_heads, KV = c->n_kv_heads, ff = c->d_ff;
    char n[96];
    size_t off = 0;
    m->n_tensors = 0;
    add_tensor(m, offs, "model.embed_tokens.weight", 2, c->vocab, d, &off, 1);
    for (int l = 0; l < c->n_layers; l++) {
#define LM_NAME(s) (snprintf(n, sizeof n, "model.layers.%d.%s", l, s), n)
        add_tensor(m, offs, LM_NAME("input_layernorm.weight"), 1, d, 0, &off, 1);
        add_tensor(m, offs, LM_NAME("self_attn.q_proj.weight"), 2, (int64_t)H * hd, d, &off, 0);
        add_tensor(m, offs, LM_NAME("self_attn.k_proj.weight"), 2, (int64_t)KV * hd, d, &off, 0);
        add_tensor(m, offs, LM_NAME("self_attn.v_proj.weight"), 2, (int64_t)KV * hd, d, &off, 1);
        add_tensor(m, offs, LM_NAME("self_attn.o_proj.weight"), 2, d, (int64_t)H * hd, &off, 1);
        add_tensor(m, offs, LM_NAME("post_attention_layernorm.weight"), 1, d, 0, &off, 1);
        add_tensor(m, offs, LM_NAME("mlp.gate_proj.weight"), 2, ff, d, &off, 0);
        add_tensor(m, offs, LM_NAME("mlp.up_proj.weight"), 2, ff, d, &off, 1);
        add_tensor(m, offs, LM_NAME("mlp.down_proj.weight"), 2, d, ff, &off, 1);
#undef LM_NAME
    }
    add_tensor(m, offs, "model.norm.weight", 1, d, 0, &off, 1);
    if (!c->tied_embeddings) add_tensor(m, offs, "lm_head.weight", 2, c->vocab, d, &off, 1);
    *total = off;
}

/* Points the views p at arena (the weights, the gradients or a slice's own gradient arena), each
 * tensor at its offset in the weight arena: the fused wqkv starts at q_proj, w_in at gate_proj. */
static void bind(const lm_model *m, lm_params *p, float *arena) {
    const lm_tensor *t = m->tensors;
    size_t i = 0;
#define LM_AT(k) (arena + (t[k].w - m->params))
    p->emb = LM_AT(i++);
    for (int l = 0; l < m->cfg.n_layers; l++) {
        lm_block *b = &p->blocks[l];
        b->ln1 = LM_AT(i);
        b->wqkv = LM_AT(i + 1);
        b->wo = LM_AT(i + 4);
        b->ln2 = LM_AT(i + 5);
        b->w_in = LM_AT(i + 6);
        b->w_out = LM_AT(i + 8);
        i += 9;
    }
    p->lnf = LM_AT(i++);
    p->head = m->cfg.tied_embeddings ? p->emb : LM_AT(i);
#undef LM_AT
}

int lm_model_new(const fw_config *cfg, lm_model **out) {
    *out = NULL;
    if (lm_config_check(cfg) != SF_OK) return SF_ERR;
    lm_model *m = sf_zalloc("the language model", 1, sizeof *m);
    if (!m) return SF_ERR;
    m->cfg = *cfg;
    const fw_config *c = &m->cfg;
    size_t max_tensors = 4 + (size_t)c->n_layers * 9;
    size_t total, *offs = NULL;
    if (!(m->tensors = sf_zalloc("the parameter table", max_tensors, sizeof *m->tensors)) ||
        !(offs = sf_alloc("the parameter offsets", max_tensors, sizeof *offs)) ||
        !(m->w.blocks = sf_zalloc("block weight views", (size_t)c->n_layers, sizeof *m->w.blocks)) ||
        !(m->g.blocks = sf_zalloc("block gradient views", (size_t)c->n_layers, sizeof *m->g.blocks)) ||
        !(m->inv_freq = fw_rope_inv_freq(c, c->rope_theta, 1)))
        goto fail;
    layout(m, offs, &total);
    m->n_arena = total;
    if (!(m->params = sf_zalloc("the model's weights", total, sizeof(float))) ||
        !(m->grads = sf_zalloc("the model's gradients", total, sizeof(float))))
        goto fail;
    for (size_t i = 0; i < m->n_tensors; i++) {
        m->tensors[i].w = m->params + offs[i];
        m->tensors[i].g = m->grads + offs[i];
    }
    free(offs);
    offs = NULL;
    bind(m, &m->w, m->params);
    bind(m, &m->g, m->grads);
    *out = m;
    return SF_OK;
fail:
    free(offs);
    lm_model_free(m);
    return SF_ERR;
}

int lm_model_load(const char *hf_dir, lm_model **out) {
    *out = NULL;
    fw_config cfg;
    if (fw_config_load(hf_dir, &cfg) != SF_OK || lm_config_check(&cfg) != SF_OK) return SF_ERR;
    fw_model *f = fw_model_load(hf_dir, -1, 1);
    if (!f) return SF_ERR;
    lm_model *m;
    if (lm_model_new(&f->cfg, &m) != SF_OK) {
        fw_model_free(f);
        return SF_ERR;
    }
    /* The loader's fused layout is ours: wqkv = [q; k; v] rows, w_in = [gate; up] rows. */
    const fw_config *c = &m->cfg;
    size_t d = (size_t)c->d_model, V = (size_t)c->vocab, ff = (size_t)c->d_ff;
    size_t qkv = (size_t)(c->n_heads + 2 * c->n_kv_heads) * c->head_dim, att = (size_t)c->n_heads * c->head_dim;
    memcpy(m->w.emb, f->tok_emb, V * d * sizeof(float));
    for (int l = 0; l < c->n_layers; l++) {
        const fw_layer *s = &f->layers[l];
        lm_block *b = &m->w.blocks[l];
        memcpy(b->ln1, s->ln1_w, d * sizeof(float));
        memcpy(b->wqkv, s->wqkv, qkv * d * sizeof(float));
        memcpy(b->wo, s->wo, d * att * sizeof(float));
        memcpy(b->ln2, s->ln2_w, d * sizeof(float));
        memcpy(b->w_in, s->w_in, 2 * ff * d * sizeof(float));
        memcpy(b->w_out, s->w_out, d * ff * sizeof(float));
    }
    memcpy(m->w.lnf, f->lnf_w, d * sizeof(float));
    if (!c->tied_embeddings) memcpy(m->w.head, f->lm_head, V * d * sizeof(float));
    fw_model_free(f);
    *out = m;
    return SF_OK;
}

void lm_model_free(lm_model *m) {
    if (!m) return;
    free(m->params);
    free(m->grads);
    free(m->tensors);
    free(m->w.blocks);
    free(m->g.blocks);
    free(m->inv_freq);
    free(m);
}

const fw_config *lm_model_config(const lm_model *m) { return &m->cfg; }

size_t lm_model_tensors(lm_model *m, lm_tensor **out) {
    *out = m->tensors;
    return m->n_tensors;
}

size_t lm_model_numel(const lm_model *m) {
    size_t n = 0;
    for (size_t i = 0; i < m->n_tensors; i++) n += m->tensors[i].n;
    return n;
}

void lm_zero_grad(lm_model *m) { memset(m->grads, 0, m->n_arena * sizeof(float)); }

/* ------------------------------------------------------------------------------------------ */
/* Activations                                                                                 */

/* Buffers of one slice: B sequences of up to T tokens; with own_grads, a gradient arena of its own. */
static int slice_new(const lm_model *m, lm_slice *s, int B, int T, int own_grads) {
    const fw_config *c = &m->cfg;
    size_t N = (size_t)B * T, L = (size_t)c->n_layers, d = (size_t)c->d_model, ff = (size_t)c->d_ff;
    size_t V = (size_t)c->vocab, TT = (size_t)T * T;
    size_t qkv = (size_t)(c->n_heads + 2 * c->n_kv_heads) * c->head_dim, att = (size_t)c->n_heads * c->head_dim;
    s->B = B;
    /* Rows of logits per head chunk: about LM_HEAD_FLOATS floats, at least one row. */
    size_t chunk = LM_HEAD_FLOATS / V;
    s->head_rows = (int)(chunk < 1 ? 1 : chunk > N ? N : chunk);
    struct {
        float **p;
        const char *what;
        size_t a, b, c;
    } bufs[] = {
        {&s->x, "residual stream (layers + 1 x tokens x d)", L + 1, N, d},
        {&s->xmid, "residual after attention (layers x tokens x d)", L, N, d},
        {&s->xn1, "attention norm outputs (layers x tokens x d)", L, N, d},
        {&s->rstd1, "attention norm statistics", L, N, 1},
        {&s->qkv, "q/k/v after RoPE (layers x tokens x (H + 2 KV) hd)", L, N, qkv},
        {&s->smax, "attention softmax statistics (layers x B x H x T x 2)", L * B * (size_t)c->n_heads, (size_t)T, 2},
        {&s->probs, "attention probabilities (T x T)", 1, TT, 1},
        {&s->atty, "attention outputs (layers x tokens x H hd)", L, N, att},
        {&s->xn2, "MLP norm outputs (layers x tokens x d)", L, N, d},
        {&s->rstd2, "MLP norm statistics", L, N, 1},
        {&s->gu, "MLP gate and up (layers x tokens x 2 ff)", L, N, 2 * ff},
        {&s->act, "MLP activations (layers x tokens x ff)", L, N, ff},
        {&s->xnf, "final norm outputs (tokens x d)", 1, N, d},
        {&s->rstdf, "final norm statistics", 1, N, 1},
        {&s->logits, "logits (head rows x vocab)", 1, (size_t)s->head_rows, V},
        {&s->dx, "residual gradient (tokens x d)", 1, N, d},
        {&s->dxn, "norm output gradient (tokens x d)", 1, N, d},
        {&s->dqkv, "q/k/v gradient (tokens x (H + 2 KV) hd)", 1, N, qkv},
        {&s->datty, "attention output gradient (tokens x H hd)", 1, N, att},
        {&s->dgu, "MLP gate and up gradient (tokens x 2 ff)", 1, N, 2 * ff},
        {&s->dact, "MLP activation gradient (tokens x ff)", 1, N, ff},
        {&s->dprobs, "attention score gradient (T x T)", 1, TT, 1},
        {&s->garena, "a thread's gradients (one per parameter)", own_grads ? 1 : 0, m->n_arena, 1},
    };
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) {
        size_t n;
        if (!bufs[i].a) continue;
        if (!sf_mul_size(bufs[i].a, bufs[i].b, &n) || !sf_mul_size(n, bufs[i].c, &n))
            return sf_fail("lm: %s for a batch of %d x %d tokens overflows; lower the batch", bufs[i].what, B, T);
        if (!(*bufs[i].p = sf_alloc(bufs[i].what, n, sizeof(float))))
            return sf_fail("lm: %s; lower the batch or the sequence length", sf_last_error());
    }
    if (!(s->g.blocks = sf_alloc("a thread's gradient views", (size_t)c->n_layers, sizeof *s->g.blocks)))
        return SF_ERR;
    bind(m, &s->g, own_grads ? s->garena : m->grads);
    return SF_OK;
}

static void slice_free(lm_slice *s) {
    float *all[] = {s->x,     s->xmid,  s->xn1,  s->rstd1, s->qkv,   s->smax, s->probs, s->atty,   s->xn2,
                    s->rstd2, s->gu,    s->act,  s->xnf,   s->rstdf, s->logits, s->dx,    s->dxn,
                    s->dqkv,  s->datty, s->dgu,  s->dact,  s->dprobs, s->garena};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) free(all[i]);
    free(s->g.blocks);
}

int lm_work_new_threads(const lm_model *m, int B, int T, int threads, lm_work **out) {
    *out = NULL;
    const fw_config *c = &m->cfg;
    if (B < 1 || T < 1) return sf_fail("lm: a batch needs at least one sequence of one token (got %d x %d)", B, T);
    if (T > c->max_pos)
        return sf_fail("lm: sequences of %d tokens are longer than the model's max_position_embeddings %d", T,
                       c->max_pos);
    size_t N;
    if (!sf_mul_size((size_t)B, (size_t)T, &N) || N > LM_MAX_TOKENS)
        return sf_fail("lm: a batch of %d x %d tokens is too large (at most %d tokens)", B, T, LM_MAX_TOKENS);
    if (threads < 0 || threads > LM_MAX_THREADS)
        return sf_fail("lm: %d threads: give 1..%d, or 0 for one per core", threads, LM_MAX_THREADS);
    if (threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        threads = n < 1 ? 1 : n > LM_MAX_THREADS ? LM_MAX_THREADS : (int)n;
    }
    lm_work *w = sf_zalloc("the training activations", 1, sizeof *w);
    if (!w) return SF_ERR;
    w->B = B;
    w->T = T;
    w->n_slices = threads < B ? threads : B;
    int half = c->rotary_dim / 2;
    if (!(w->slices = sf_zalloc("the threads' activations", (size_t)w->n_slices, sizeof *w->slices)) ||
        !(w->rope_cos = sf_alloc("RoPE table (T x rotary_dim / 2)", (size_t)T * half, sizeof(float))) ||
        !(w->rope_sin = sf_alloc("RoPE table (T x rotary_dim / 2)", (size_t)T * half, sizeof(float))))
        goto fail;
    for (int k = 0; k < w->n_slices; k++) /* slice k: at most ceil(B / n) sequences */
        if (slice_new(m, &w->slices[k], (B + w->n_slices - 1) / w->n_slices, T, k > 0) != SF_OK) goto fail;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < half; i++) {
            w->rope_cos[(size_t)t * half + i] = (float)cos(t * m->inv_freq[i]);
            w->rope_sin[(size_t)t * half + i] = (float)sin(t * m->inv_freq[i]);
        }
    *out = w;
    return SF_OK;
fail:
    lm_work_free(w);
    return SF_ERR;
}

int lm_work_new(const lm_model *m, int B, int T, lm_work **out) { return lm_work_new_threads(m, B, T, 0, out); }

void lm_work_free(lm_work *w) {
    if (!w) return;
    for (int k = 0; w->slices && k < w->n_slices; k++) slice_free(&w->slices[k]);
    free(w->slices);
    free(w->rope_cos);
    free(w->rope_sin);
    free(w);
}

/* ------------------------------------------------------------------------------------------ */
/* A call: the batch's sequences split over the slices' threads                               */

typedef struct lm_job {
    const lm_model *m;
    const lm_work *w;
    lm_slice *s;
    const int32_t *tokens; /* [B, T + 1] of this slice */
    int B, T;
    float gs;  /* gradient scale per position; 0: forward only */
    double loss; /* summed over the slice's positions */
} lm_job;

static void *job_run(void *arg) {
    lm_job *j = arg;
    if (j->gs != 0.0f && j->s->garena) memset(j->s->garena, 0, j->m->n_arena * sizeof(float));
    j->loss = lm_forward(j->m, j->w, j->s, j->tokens, j->B, j->T, j->gs);
    if (j->gs != 0.0f) lm_backward(j->m, j->w, j->s, j->tokens, j->B, j->T);
    return NULL;
}

/* Slice k takes sequences [B k / n, B (k + 1) / n) on its own thread (slice 0 on the caller's),
 * with OpenBLAS on one thread meanwhile; then the other slices' gradients are added into the
 * model's in slice order, so the result depends on the thread count but not on timing. With one
 * slice OpenBLAS stays on one thread as well: its own split of an sgemm would change where an
 * element falls inside a call and so, under some kernels (Haswell), its rounding. */
static int run(lm_model *m, lm_work *w, const int32_t *tokens, int B, int T, float scale, double *loss) {
    const fw_config *c = &m->cfg;
    if (B < 1 || T < 1 || B > w->B || T > w->T)
        return sf_fail("lm: a batch of %d x %d tokens does not fit the work buffers (%d x %d); make them with "
                       "lm_work_new for the largest batch", B, T, w->B, w->T);
    for (int b = 0; b < B; b++)
        for (int t = 0; t <= T; t++) {
            int32_t id = tokens[(size_t)b * (T + 1) + t];
            if (id < 0 || id >= c->vocab)
                return sf_fail("lm: token id %d (sequence %d, position %d) is outside the vocabulary [0, %d)", id, b,
                               t, c->vocab);
        }
    int n = w->n_slices < B ? w->n_slices : B;
    lm_job jobs[LM_MAX_THREADS];
    pthread_t tid[LM_MAX_THREADS];
    int started[LM_MAX_THREADS] = {0};
    float gs = scale / (float)((size_t)B * T);
    for (int k = 0; k < n; k++) {
        int b0 = (int)((int64_t)B * k / n), b1 = (int)((int64_t)B * (k + 1) / n);
        jobs[k] = (lm_job){m, w, &w->slices[k], tokens + (size_t)b0 * (T + 1), b1 - b0, T, gs, 0};
    }
    sf_blas_single_enter(openblas_get_num_threads, openblas_set_num_threads);
    for (int k = 1; k < n; k++) started[k] = pthread_create(&tid[k], NULL, job_run, &jobs[k]) == 0;
    job_run(&jobs[0]);
    for (int k = 1; k < n; k++) {
        if (started[k]) pthread_join(tid[k], NULL);
        else job_run(&jobs[k]); /* no thread: run it here */
    }
    sf_blas_single_leave(openblas_set_num_threads);
    double sum = 0;
    for (int k = 0; k < n; k++) sum += jobs[k].loss;
    if (gs != 0.0f)
        for (int k = 1; k < n; k++) {
            const float *src = w->slices[k].garena;
            for (size_t i = 0; i < m->n_arena; i++) m->grads[i] += src[i];
        }
    *loss = sum / (double)((size_t)B * T);
    return SF_OK;
}

int lm_loss(lm_model *m, lm_work *w, const int32_t *tokens, int B, int T, double *loss) {
    return run(m, w, tokens, B, T, 0.0f, loss);
}

int lm_loss_grad(lm_model *m, lm_work *w, const int32_t *tokens, int B, int T, float scale, double *loss) {
    return run(m, w, tokens, B, T, scale, loss); /* scale 0: the forward alone, nothing to add */
}
