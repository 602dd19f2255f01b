/* Compares the forward with reference activations that tools/forward_make_fixtures.py computed
 * in float64 with PyTorch (Hugging Face semantics), for each fixture directory given: every hook
 * point of every block, the logits and the per-token loss. Also checks that splitting the batch,
 * shrinking the attention chunk and loading only the blocks a hook needs change nothing, and that
 * the spliced pass (fw_splice) resumes from the right residual stream at every hook point.
 * Llama-family fixtures run twice: with resident float32 weights, and streamed (FW_WEIGHTS_STREAM:
 * each block converted from the mapped checkpoint when it runs), which must meet the same references. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "sf_safetensors.h"

#define TOL 1e-4 /* max abs error relative to the reference's max abs value */

static int failures;

/* Max abs difference over n values, relative to the reference's max abs value. */
static double rel_err(const float *got, const float *ref, size_t n) {
    double err = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(ref[i]) && isnan(got[i])) continue;
        double e = fabs((double)got[i] - ref[i]);
        if (isnan(e)) return INFINITY; /* a NaN where the reference has a number */
        if (e > err) err = e;
        if (fabs(ref[i]) > scale) scale = fabs(ref[i]);
    }
    return err / (scale > 0 ? scale : 1);
}

static void check(const char *fixture, const char *what, double err) {
    int ok = err <= TOL;
    if (!ok) failures++;
    printf("%-16s %-14s rel err %.2e %s\n", fixture, what, err, ok ? "ok" : "FAIL");
}

static const float *ref_f32(sf_st_file *ref, const char *name, size_t n) {
    const sf_st_tensor *t = sf_st_find(ref, name);
    if (!t || t->t.dtype != SF_F32 || (size_t)sf_tensor_numel(&t->t) != n) {
        fprintf(stderr, "reference lacks %s [%zu] f32\n", name, n);
        exit(1);
    }
    float *p = malloc(n * sizeof *p);
    memcpy(p, t->t.data, n * sizeof *p);
    return p;
}

/* Max abs difference of per-token losses; NaN exactly where the reference has NaN (last positions). */
static double loss_abs_err(const float *got, const float *want, int n) {
    double err = 0;
    for (int i = 0; i < n; i++) {
        if (isnan(want[i]) != isnan(got[i])) return INFINITY;
        if (!isnan(want[i]) && fabs(got[i] - want[i]) > err) err = fabs(got[i] - want[i]);
    }
    return err;
}

/* A splice that multiplies its point's activations by factor, and counts its calls. */
typedef struct scale_splice {
    float factor;
    int calls;
} scale_splice;

static int scale_fn(void *ctx, float *acts, int batch, int seq, int width) {
    scale_splice *sc = ctx;
    sc->calls++;
    for (size_t i = 0; i < (size_t)batch * seq * width; i++) acts[i] *= sc->factor;
    return SF_OK;
}

/* loss_spliced with a splice that scales hook point h by factor; loss as well if not NULL. */
static void spliced_loss(const fw_model *m, fw_state *s, const int32_t *tokens, int B, int T, fw_hook h, float factor,
                         float *loss, float *out) {
    scale_splice sc = {factor, 0};
    fw_splice sp = {h, scale_fn, &sc};
    fw_request r = {tokens, B, T, 0, NULL, NULL, NULL, loss, &sp, out};
    if (fw_forward(m, s, &r) != SF_OK || sc.calls != 1) {
        fprintf(stderr, "splice at block %d: %s (%d calls)\n", h.layer, sf_last_error(), sc.calls);
        exit(1);
    }
}

/* The spliced pass resumes at the splice's block from the residual stream the clean pass saved
 * there: a splice that changes nothing gives the reference loss at every hook point (with and
 * without the clean loss, which decides how far the clean pass runs), and halving resid_post.L
 * gives what halving resid_pre.L+1 gives, which is not the reference loss. */
static void check_splices(const char *name, const fw_model *m, fw_state *s, const int32_t *tokens, int B, int T,
                          const float *want_loss) {
    int N = B * T, L = m->cfg.n_layers;
    float *loss = calloc((size_t)N, sizeof *loss), *a = calloc((size_t)N, sizeof *a), *b = calloc((size_t)N, sizeof *b);
    double as_is = 0, same = 0, moved = INFINITY;
    for (int l = 0; l < L; l++)
        for (int k = 0; k < 5; k++) {
            int with_loss = (l + k) % 2;
            spliced_loss(m, s, tokens, B, T, (fw_hook){.kind = (fw_hook_kind)k, .layer = l}, 1.0f, with_loss ? loss : NULL, a);
            double e = loss_abs_err(a, want_loss, N);
            if (with_loss && loss_abs_err(loss, want_loss, N) > e) e = loss_abs_err(loss, want_loss, N);
            if (e > as_is) as_is = e;
        }
    for (int l = 0; l + 1 < L; l++) {
        spliced_loss(m, s, tokens, B, T, (fw_hook){.kind = FW_RESID_POST, .layer = l}, 0.5f, NULL, a);
        spliced_loss(m, s, tokens, B, T, (fw_hook){.kind = FW_RESID_PRE, .layer = l + 1}, 0.5f, NULL, b);
        double e = loss_abs_err(a, b, N), d = loss_abs_err(a, want_loss, N);
        if (e > same) same = e;
        if (d < moved) moved = d;
    }
    check(name, "splice as is", as_is);
    check(name, "splice post=pre", same);
    if (!(moved > 1e-3)) {
        printf("%-16s halving the residual stream changed the loss by only %.2e\n", name, moved);
        failures++;
    }
    free(loss);
    free(a);
    free(b);
}

static void run_fixture(const char *dir, fw_weights how) {
    char path[4096], name[64];
    snprintf(name, sizeof name, "%s%s", strrchr(dir, '/') ? strrchr(dir, '/') + 1 : dir,
             how == FW_WEIGHTS_STREAM ? "+stream" : "");
    snprintf(path, sizeof path, "%s/reference.safetensors", dir);
    sf_st_file *ref = sf_st_open(path);
    fw_model *m = fw_model_load_mode(dir, -1, 1, how);
    if (!ref || !m) {
        fprintf(stderr, "%s: %s\n", dir, sf_last_error());
        failures++;
        return;
    }
    if ((how == FW_WEIGHTS_STREAM) != (m->ck != NULL) || (m->ck && m->tok_emb)) {
        printf("%s: weights are %s, not as asked\n", name, m->ck ? "streamed" : "resident");
        failures++;
    }
    const fw_config *c = &m->cfg;
    const sf_st_tensor *tt = sf_st_find(ref, "tokens");
    int B = (int)tt->t.shape[0], T = (int)tt->t.shape[1], N = B * T, L = c->n_layers;
    int32_t *tokens = malloc((size_t)N * sizeof *tokens);
    memcpy(tokens, tt->t.data, (size_t)N * sizeof *tokens);

    /* every hook of every block at once */
    int n_hooks = 5 * L;
    fw_hook *hooks = calloc((size_t)n_hooks, sizeof *hooks);
    float **outs = calloc((size_t)n_hooks, sizeof *outs);
    for (int i = 0; i < n_hooks; i++) {
        hooks[i] = (fw_hook){.kind = (fw_hook_kind)(i % 5), .layer = i / 5};
        outs[i] = calloc((size_t)N * fw_hook_width(c, hooks[i]), sizeof(float));
    }
    float *logits = calloc((size_t)N * c->vocab, sizeof *logits), *loss = calloc((size_t)N, sizeof *loss);
    fw_state *s = fw_state_new(2);
    fw_request r = {tokens, B, T, n_hooks, hooks, outs, logits, loss, NULL, NULL};
    if (fw_forward(m, s, &r) != SF_OK) {
        fprintf(stderr, "%s: forward: %s\n", dir, sf_last_error());
        exit(1);
    }
    for (int i = 0; i < n_hooks; i++) {
        char hn[64];
        fw_hook_name(hooks[i], hn, sizeof hn);
        size_t n = (size_t)N * fw_hook_width(c, hooks[i]);
        const float *want = ref_f32(ref, hn, n);
        check(name, hn, rel_err(outs[i], want, n));
        free((void *)want);
    }
    const float *want_logits = ref_f32(ref, "logits", (size_t)N * c->vocab);
    const float *want_loss = ref_f32(ref, "loss", (size_t)N);
    check(name, "logits", rel_err(logits, want_logits, (size_t)N * c->vocab));
    check(name, "loss (abs)", loss_abs_err(loss, want_loss, N));
    check_splices(name, m, s, tokens, B, T, want_loss);

    /* one sequence at a time, in attention chunks of 3 queries and head chunks of 4 rows, and no
     * hooks (so the output projections add into the residual stream themselves): the same numbers */
    fw_state_set_chunks(s, 3, 4);
    float *one = calloc((size_t)T * c->vocab, sizeof *one);
    double split_err = 0;
    for (int b = 0; b < B; b++) {
        fw_request r1 = {tokens + (size_t)b * T, 1, T, 0, NULL, NULL, one, loss, NULL, NULL};
        if (fw_forward(m, s, &r1) != SF_OK) exit(1);
        double e = rel_err(one, want_logits + (size_t)b * T * c->vocab, (size_t)T * c->vocab);
        if (e > split_err) split_err = e;
        for (int t = 0; t < T - 1; t++) /* loss in absolute terms, as above */
            if (!(fabs(loss[t] - want_loss[(size_t)b * T + t]) <= TOL)) split_err = INFINITY;
        if (!isnan(loss[T - 1])) split_err = INFINITY;
    }
    check(name, "split+chunked", split_err);

    /* only the blocks up to resid_post.1 loaded, no head */
    fw_model *part = fw_model_load_mode(dir, 2, 0, how);
    float *mid = calloc((size_t)N * c->d_model, sizeof *mid);
    fw_hook h = {.kind = FW_RESID_POST, .layer = 1};
    fw_request r2 = {tokens, B, T, 1, &h, &mid, NULL, NULL, NULL, NULL};
    if (!part || part->n_loaded != 2 || part->lm_head || fw_forward(part, s, &r2) != SF_OK) {
        fprintf(stderr, "%s: partial load: %s\n", dir, sf_last_error());
        exit(1);
    }
    const float *want_mid = ref_f32(ref, "resid_post.1", (size_t)N * c->d_model);
    check(name, "partial load", rel_err(mid, want_mid, (size_t)N * c->d_model));
    /* and a hook past the loaded blocks, or logits without the head, are refused */
    fw_hook beyond = {.kind = FW_RESID_PRE, .layer = 2};
    fw_request r3 = {tokens, B, T, 1, &beyond, &mid, NULL, NULL, NULL, NULL};
    fw_request r4 = {tokens, B, T, 0, NULL, NULL, NULL, loss, NULL, NULL};
    if (fw_forward(part, s, &r3) == SF_OK || fw_forward(part, s, &r4) == SF_OK) {
        printf("%s: a hook beyond the loaded blocks or loss without the head was accepted\n", name);
        failures++;
    }

    free((void *)want_mid);
    free((void *)want_logits);
    free((void *)want_loss);
    free(mid);
    free(one);
    for (int i = 0; i < n_hooks; i++) free(outs[i]);
    free(outs);
    free(hooks);
    free(logits);
    free(loss);
    free(tokens);
    fw_state_free(s);
    fw_model_free(part);
    fw_model_free(m);
    sf_st_close(ref);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s FIXTURE_DIR...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        run_fixture(argv[i], FW_WEIGHTS_RESIDENT);
        fw_config c;
        if (fw_config_load(argv[i], &c) == SF_OK && c.arch == FW_ARCH_LLAMA) run_fixture(argv[i], FW_WEIGHTS_STREAM);
    }
    if (failures) printf("%d checks failed\n", failures);
    return failures ? 1 : 0;
}
