/* sae_eval.c — the sae_eval stage: a trained SAE on held-out activations (MSE, FVU, cosine, L0,
 * dead fraction), written as a JSON file. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sae.h"
#include "saeflow.h"
#include "sae_stage.h"

static const sf_param_def eval_params[] = {
    {"sae_dir", SF_PARAM_STRING, NULL, "trained SAE directory (any layout saeflow sae info reads, or the directory of llm-jp-sae's sae.pth)"},
    {"out", SF_PARAM_STRING, "", "results JSON (default: SAE_DIR/eval.json)"},
    {"field", SF_PARAM_STRING, "acts", "message field holding the activations"},
    {"split", SF_PARAM_STRING, "", "evaluate only messages of this split (\"\": all)"},
    {"max_tokens", SF_PARAM_INT, "0", "stop after this many tokens (0: the whole stream)"},
    {"accept_sae_mismatch", SF_PARAM_BOOL, "false",
     "evaluate activations of another hook, checkpoint or model than the SAE's config records (logged); "
     "otherwise that is an error"},
    {NULL, 0, NULL, NULL},
};

typedef struct eval_state {
    sae_model m;
    int have_model;
    int accept_mismatch, source_checked;
    char out[4096], field[64], split[64], sae_dir[3800];
    int64_t max_tokens, tokens;
    double err, sumsq, cos, l0;
    double ce, ce_sae;  /* sums of the forward's loss and loss_sae (SAE spliced in) */
    int64_t ce_tokens;
    double *sum;      /* [d] for the dataset mean */
    uint8_t *fired;   /* [n] */
    float *xn, *xhat, *val;
    int32_t *idx;
    int64_t cap;      /* rows the buffers hold */
} eval_state;

/* The parameters and the SAE they name (loaded into s->m), for check and init alike. */
static int eval_read_params(sf_ctx *ctx, eval_state *s) {
    const char *dir = sf_param_str(ctx, "sae_dir"), *out = sf_param_str(ctx, "out");
    if (strlen(dir) >= sizeof s->sae_dir || strlen(sf_param_str(ctx, "field")) >= sizeof s->field ||
        strlen(sf_param_str(ctx, "split")) >= sizeof s->split || strlen(out) >= sizeof s->out)
        return sf_fail("a parameter is too long (sae_dir and out: %zu bytes, field and split: %zu)", sizeof s->sae_dir - 1, sizeof s->field - 1);
    strcpy(s->sae_dir, dir);
    strcpy(s->field, sf_param_str(ctx, "field"));
    strcpy(s->split, sf_param_str(ctx, "split"));
    if (*out) strcpy(s->out, out);
    else snprintf(s->out, sizeof s->out, "%s/eval.json", dir);
    s->max_tokens = sf_param_int(ctx, "max_tokens");
    s->accept_mismatch = sf_param_bool(ctx, "accept_sae_mismatch");
    if (sae_load(&s->m, dir) != SF_OK) return sf_param_fail(ctx, "sae_dir", "%s", sf_last_error());
    s->have_model = 1;
    return SF_OK;
}

static int eval_check(sf_ctx *ctx) {
    eval_state *s = sf_zalloc("sae_eval check", 1, sizeof *s);
    if (!s) return SF_ERR;
    int rc = eval_read_params(ctx, s);
    if (s->have_model) sae_model_free(&s->m);
    free(s);
    return rc;
}

static int eval_init(sf_ctx *ctx, void **state) {
    eval_state *s = sf_zalloc("sae_eval state", 1, sizeof *s);
    if (!s) return SF_ERR;
    *state = s;
    if (eval_read_params(ctx, s) != SF_OK) return SF_ERR;
    s->sum = sf_zalloc("per-dimension sums", (size_t)s->m.d, sizeof(double));
    s->fired = s->sum ? sf_zalloc("per-latent flags", (size_t)s->m.n, 1) : NULL;
    return s->fired ? SF_OK : SF_ERR;
}

/* The forward stage's per-token losses without and with the SAE spliced in (fields loss and
 * loss_sae, [B, T] f32 beside acts) of the first rows tokens; positions with no next token (NaN)
 * are skipped. */
static int eval_add_losses(eval_state *s, const sf_msg *msg, int64_t rows) {
    if (!sf_msg_has(msg, "loss_sae")) return SF_OK;
    sf_tensor l, ls;
    if (sf_msg_get_tensor(msg, "loss", &l) != SF_OK || sf_msg_get_tensor(msg, "loss_sae", &ls) != SF_OK) return SF_ERR;
    if (l.dtype != SF_F32 || ls.dtype != SF_F32 || sf_tensor_numel(&l) < rows || sf_tensor_numel(&ls) < rows)
        return sf_fail("loss, loss_sae: want f32 tensors with one value per activation row");
    for (int64_t i = 0; i < rows; i++) {
        float a, b; /* the payload may be unaligned */
        memcpy(&a, (const char *)l.data + i * 4, 4);
        memcpy(&b, (const char *)ls.data + i * 4, 4);
        if (!isfinite(a) || !isfinite(b)) continue;
        s->ce += a;
        s->ce_sae += b;
        s->ce_tokens++;
    }
    return SF_OK;
}

/* Statistics in the SAE's (normalised) space, where the paper reports them. */
static int eval_on_message(sf_ctx *ctx, void *state, int input, const sf_msg *msg) {
    (void)input;
    eval_state *s = state;
    act_rows a;
    if (sae_get_rows(msg, s->field, &a) != SF_OK) return SF_ERR;
    if (!sae_split_matches(&a, s->split)) return SF_OK;
    const sae_model *m = &s->m;
    if (a.d != m->d) return sf_fail("activations of width %lld, the SAE has d = %d", (long long)a.d, m->d);
    if (!s->source_checked || !s->accept_mismatch) { /* accepted: warned once */
        char hook[sizeof m->hook] = "", checkpoint[sizeof m->checkpoint] = "", model[sizeof m->model] = "";
        sf_strv_copy(a.m.hook, hook, sizeof hook);
        sf_strv_copy(a.m.checkpoint, checkpoint, sizeof checkpoint);
        sf_strv_copy(a.m.model, model, sizeof model);
        if (sae_check_source(m, s->sae_dir, hook, checkpoint, model, s->accept_mismatch) != SF_OK) return SF_ERR;
        s->source_checked = 1;
    }
    int64_t rows = a.rows;
    if (s->max_tokens && rows > s->max_tokens - s->tokens) rows = s->max_tokens - s->tokens;
    if (rows <= 0) return SF_OK;
    if (rows > s->cap) {
        free(s->xn);
        free(s->xhat);
        free(s->val);
        free(s->idx);
        s->cap = rows;
        s->xn = malloc((size_t)rows * m->d * sizeof(float));
        s->xhat = malloc((size_t)rows * m->d * sizeof(float));
        s->val = malloc((size_t)rows * m->k * sizeof(float));
        s->idx = malloc((size_t)rows * m->k * sizeof(int32_t));
        if (!s->xn || !s->xhat || !s->val || !s->idx) return sf_fail("out of memory for %lld rows", (long long)rows);
    }
    if (eval_add_losses(s, msg, rows) != SF_OK) return SF_ERR;
    sae_rows_to_f32(&a, 0, rows, s->xn);
    if (sae_encode(m, s->xn, rows, rows, s->idx, s->val) != SF_OK) return SF_ERR;
    sae_normalize(m, s->xn, rows, NULL);
    sae_decode(m, s->idx, s->val, rows, NULL, s->xhat);
    for (int64_t r = 0; r < rows; r++) {
        const float *x = s->xn + r * m->d, *h = s->xhat + r * m->d;
        double e = 0, xx = 0, hh = 0, xh = 0;
        for (int c = 0; c < m->d; c++) {
            e += ((double)x[c] - h[c]) * ((double)x[c] - h[c]);
            xx += (double)x[c] * x[c];
            hh += (double)h[c] * h[c];
            xh += (double)x[c] * h[c];
            s->sum[c] += x[c];
        }
        s->err += e;
        s->sumsq += xx;
        s->cos += xx > 0 && hh > 0 ? xh / sqrt(xx * hh) : 0;
        for (int j = 0; j < m->k && s->idx[r * m->k + j] >= 0; j++) {
            s->fired[s->idx[r * m->k + j]] = 1;
            s->l0 += 1;
        }
    }
    s->tokens += rows;
    sf_progress(ctx, (uint64_t)s->tokens, (uint64_t)s->max_tokens, "tokens");
    return SF_OK;
}

static int eval_finish(sf_ctx *ctx, void *state) {
    (void)ctx;
    eval_state *s = state;
    if (!s->have_model) return SF_OK;
    if (s->tokens == 0 && !sf_stopping(ctx))
        return sf_fail("sae_eval: no activations arrived (0 tokens%s): nothing evaluated, no %s. Check the upstream "
                       "stages' errors and counters", s->split[0] ? " of the split" : "", s->out);
    if (s->tokens == 0) return SF_OK;
    double N = (double)s->tokens, mean2 = 0;
    for (int c = 0; c < s->m.d; c++) mean2 += (s->sum[c] / N) * (s->sum[c] / N);
    double var = s->sumsq - N * mean2;
    int64_t dead = 0;
    for (int i = 0; i < s->m.n; i++) dead += !s->fired[i];
    json_t *j = json_pack("{s:s, s:I, s:f, s:f, s:f, s:f, s:f, s:s}", "sae_dir", s->sae_dir, "tokens",
                          (json_int_t)s->tokens, "mse", s->err / N, "fvu", var > 0 ? s->err / var : 0.0,
                          "cosine", s->cos / N, "l0", s->l0 / N, "dead_fraction", (double)dead / s->m.n,
                          "normalize", sae_norm_name(s->m.norm));
    if (s->ce_tokens) {
        double ce = s->ce / s->ce_tokens, ce_sae = s->ce_sae / s->ce_tokens;
        json_object_set_new(j, "loss_tokens", json_integer(s->ce_tokens));
        json_object_set_new(j, "loss", json_real(ce));
        json_object_set_new(j, "loss_sae", json_real(ce_sae));
        json_object_set_new(j, "loss_increase", json_real(ce_sae - ce));
        sf_log(SF_LOG_INFO, "LM loss over %lld predictions: %.5f, with the SAE spliced in %.5f (+%.5f)",
               (long long)s->ce_tokens, ce, ce_sae, ce_sae - ce);
    }
    int rc = json_dump_file(j, s->out, JSON_INDENT(2)) == 0 ? SF_OK : sf_fail("cannot write %s", s->out);
    sf_log(SF_LOG_INFO, "eval over %lld tokens: mse %.5g fvu %.4f cosine %.4f L0 %.1f dead %.3f -> %s",
           (long long)s->tokens, s->err / N, var > 0 ? s->err / var : 0.0, s->cos / N, s->l0 / N,
           (double)dead / s->m.n, s->out);
    json_decref(j);
    return rc;
}

static void eval_destroy(void *state) {
    eval_state *s = state;
    if (!s) return;
    if (s->have_model) sae_model_free(&s->m);
    free(s->sum);
    free(s->fired);
    free(s->xn);
    free(s->xhat);
    free(s->val);
    free(s->idx);
    free(s);
}

const sf_stage_def sae_eval_def = {
    .name = "sae_eval",
    .summary = "evaluate a trained SAE on held-out activations: MSE, FVU, cosine, L0, dead fraction",
    .doc = "Reads activations messages; writes a JSON with the statistics in the SAE's normalised space. A sink.",
    .params = eval_params,
    .min_inputs = 1,
    .max_inputs = 8,
    .has_output = 0,
    .init = eval_init,
    .check = eval_check,
    .on_message = eval_on_message,
    .finish = eval_finish,
    .destroy = eval_destroy,
    SF_STAGE_DEF_SIZES,
    .takes = "activations",
};
