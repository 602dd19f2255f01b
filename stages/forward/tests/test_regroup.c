/* Batches: the same batch gives the same bits every time at the same thread count, whatever ran
 * before it through the same state and in a fresh state (a resumed extraction keeps the
 * uninterrupted run's batches, tokenizer skip_stored, and the shards claim its bits); a sequence
 * forwarded in another batch (subsets, another order) agrees to rounding only, within
 * FW_REGROUP_BOUND of the largest value of each output. Under some OpenBLAS kernels (Haswell) a
 * row's rounding depends on its place inside an sgemm, and the forward makes one sgemm per batch.
 * Each model: 7 sequences of 21 tokens (147 rows: a tail past the last multiple of 12), every hook
 * of every block, logits and loss, with a small LM head chunk that cuts sequences.
 * Usage: forward_test_regroup MODEL_DIR...   (directories that do not exist are skipped) */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model.h"

enum { T = 21, ALL = 7, KINDS = 5 };
/* Measured (README, "Which bits"): at most ~1e-6 of an output's largest value under Haswell and
 * SKYLAKEX; float32 rounding of a few blocks. */
#define FW_REGROUP_BOUND 1e-5

typedef struct outputs {
    int n_hooks, width[64];
    fw_hook hooks[64];
    float *hook_out[64], *logits, *loss;
} outputs;

/* Forwards the sequences seqs[0..n) of toks (ALL x T) as one batch. */
static int run(const fw_model *m, fw_state *s, const int32_t *toks, const int *seqs, int n, outputs *o) {
    int32_t *batch = malloc(sizeof *batch * n * T);
    for (int i = 0; i < n; i++) memcpy(batch + i * T, toks + seqs[i] * T, sizeof *batch * T);
    o->n_hooks = 0;
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int k = 0; k < KINDS; k++) {
            fw_hook h = {.kind = (fw_hook_kind)k, .layer = l};
            o->hooks[o->n_hooks] = h;
            o->width[o->n_hooks] = fw_hook_width(&m->cfg, h);
            o->hook_out[o->n_hooks] = malloc(sizeof(float) * n * T * o->width[o->n_hooks]);
            o->n_hooks++;
        }
    o->logits = malloc(sizeof(float) * n * T * m->cfg.vocab);
    o->loss = malloc(sizeof(float) * n * T);
    fw_request r = {batch, n, T, o->n_hooks, o->hooks, o->hook_out, o->logits, o->loss, NULL, NULL};
    int rc = fw_forward(m, s, &r);
    free(batch);
    return rc;
}

static void release(outputs *o) {
    for (int i = 0; i < o->n_hooks; i++) free(o->hook_out[i]);
    free(o->logits);
    free(o->loss);
}

/* Rows [T, width] of a sequence: how many differ at all, and the largest difference. */
static long rows_differing(const float *a, const float *b, int width, double *max_diff) {
    long bad = 0;
    for (int t = 0; t < T; t++) {
        const float *x = a + (size_t)t * width, *y = b + (size_t)t * width;
        if (memcmp(x, y, sizeof(float) * width) == 0) continue;
        bad++;
        for (int i = 0; i < width; i++)
            if (!(isnan(x[i]) && isnan(y[i])) && !(fabs((double)x[i] - y[i]) <= *max_diff)) *max_diff = fabs((double)x[i] - y[i]);
    }
    return bad;
}

static double max_abs(const float *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = isnan(x[i]) || fabs(x[i]) <= m ? m : fabs(x[i]);
    return m;
}

/* o (sequences seqs[0..n)) against ref (all ALL sequences): differing rows, and the largest
 * difference relative to the largest value of that output in ref. */
static long compare(const fw_model *m, const outputs *o, const outputs *ref, const int *seqs, int n, long *rows,
                    double *rel) {
    long bad = 0;
    *rows = 0;
    *rel = 0;
    for (int h = 0; h < o->n_hooks + 2; h++) {
        int w = h < o->n_hooks ? o->width[h] : h == o->n_hooks ? m->cfg.vocab : 1;
        const float *a = h < o->n_hooks ? o->hook_out[h] : h == o->n_hooks ? o->logits : o->loss;
        const float *b = h < o->n_hooks ? ref->hook_out[h] : h == o->n_hooks ? ref->logits : ref->loss;
        double diff = 0, scale = max_abs(b, (size_t)ALL * T * w);
        for (int i = 0; i < n; i++)
            bad += rows_differing(a + (size_t)i * T * w, b + (size_t)seqs[i] * T * w, w, &diff);
        *rows += (long)n * T;
        if (diff / (scale > 0 ? scale : 1) > *rel || isnan(diff)) *rel = diff / (scale > 0 ? scale : 1);
    }
    return bad;
}

static int check_model(const char *dir) {
    fw_model *m = fw_model_load(dir, -1, 1);
    if (!m) {
        printf("%s: FAIL: %s\n", dir, sf_last_error());
        return 1;
    }
    int32_t toks[ALL * T];
    uint32_t seed = 12345;
    for (int i = 0; i < ALL * T; i++) {
        seed = seed * 1103515245u + 12345u;
        toks[i] = (int32_t)((seed >> 8) % (uint32_t)m->cfg.vocab);
    }
    fw_state *s = fw_state_new(2);
    fw_state_set_chunks(s, 8, 30); /* attention chunks and an LM head chunk that cut sequences */
    int all[ALL] = {0, 1, 2, 3, 4, 5, 6};
    outputs ref;
    int failures = 0;
    if (run(m, s, toks, all, ALL, &ref) != SF_OK) {
        printf("%s: FAIL: %s\n", dir, sf_last_error());
        return 1;
    }
    /* another grouping: subsets in their order, one alone, the whole batch reversed */
    static const int groups[][ALL + 1] = {{3, 1, 3, 4}, {1, 2}, {2, 0, 2}, {4, 5, 6, 0, 1}, {7, 6, 5, 4, 3, 2, 1, 0}};
    for (size_t g = 0; g < sizeof groups / sizeof *groups; g++) {
        int n = groups[g][0];
        const int *seqs = groups[g] + 1;
        outputs o;
        if (run(m, s, toks, seqs, n, &o) != SF_OK) {
            printf("%s: FAIL: %s\n", dir, sf_last_error());
            return 1;
        }
        long rows;
        double rel;
        long bad = compare(m, &o, &ref, seqs, n, &rows, &rel);
        int fail = !(rel <= FW_REGROUP_BOUND);
        printf("%s: batch of %d sequences: %ld of %ld rows (hooks, logits, loss) differ from the batch of %d, by at most "
               "%.2g of an output's largest value (bound %g)%s\n", dir, n, bad, rows, ALL, rel, FW_REGROUP_BOUND,
               fail ? ": FAIL" : "");
        failures += fail;
        release(&o);
    }
    /* the same batch again, after the others ran through this state, and in a fresh state with
     * the same threads: the same bits */
    fw_state *fresh = fw_state_new(2);
    fw_state_set_chunks(fresh, 8, 30);
    fw_state *states[2] = {s, fresh};
    for (int i = 0; i < 2; i++) {
        outputs o;
        if (run(m, states[i], toks, all, ALL, &o) != SF_OK) {
            printf("%s: FAIL: %s\n", dir, sf_last_error());
            return 1;
        }
        long rows;
        double rel;
        long bad = compare(m, &o, &ref, all, ALL, &rows, &rel);
        printf("%s: the batch of %d again, %s: %ld of %ld rows differ%s\n", dir, ALL,
               i ? "in a fresh state" : "after the others", bad, rows, bad ? ": FAIL" : "");
        failures += bad != 0;
        release(&o);
    }
    fw_state_free(fresh);
    release(&ref);
    fw_state_free(s);
    fw_model_free(m);
    return failures;
}

int main(int argc, char **argv) {
    int failures = 0, checked = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            printf("%s: not here, skipped\n", argv[i]);
            continue;
        }
        failures += check_model(argv[i]);
        checked++;
    }
    if (!checked) return 77;
    printf(failures ? "FAIL\n" : "ok\n");
    return failures ? 1 : 0;
}
