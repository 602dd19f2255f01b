/* Regrouping: a sequence's activations, logits and loss must be the same bits whichever other
 * sequences share its batch, in whatever order. A resumed extraction (tokenizer skip_stored)
 * forwards only the sequences not stored yet, so its batches group them differently from the
 * uninterrupted run, and the shards claim the same bits. Under some OpenBLAS kernels (Haswell) a
 * row's rounding depends on its place inside an sgemm; the forward makes one sgemm per sequence so
 * that this cannot show. Each model: 7 sequences of 21 tokens (147 rows: a tail past the last
 * multiple of 12), every hook of every block, logits and loss, with a small LM head chunk
 * (not a whole number of sequences); then subsets and orders of them, compared bit for bit.
 * Usage: forward_test_regroup MODEL_DIR...   (directories that do not exist are skipped) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model.h"

enum { T = 21, ALL = 7, KINDS = 5 };

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

/* Row block of sequence slot i in o against slot j in ref; counts differing rows. */
static long rows_differing(const float *a, const float *b, int width) {
    long bad = 0;
    for (int t = 0; t < T; t++) bad += memcmp(a + (size_t)t * width, b + (size_t)t * width, sizeof(float) * width) != 0;
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
    /* what a resumed run forwards: subsets in their order, one alone, and the whole batch reversed */
    static const int groups[][ALL + 1] = {{3, 1, 3, 4}, {1, 2}, {2, 0, 2}, {4, 5, 6, 0, 1}, {7, 6, 5, 4, 3, 2, 1, 0}};
    for (size_t g = 0; g < sizeof groups / sizeof *groups; g++) {
        int n = groups[g][0];
        const int *seqs = groups[g] + 1;
        outputs o;
        if (run(m, s, toks, seqs, n, &o) != SF_OK) {
            printf("%s: FAIL: %s\n", dir, sf_last_error());
            return 1;
        }
        long bad = 0, rows = 0;
        for (int i = 0; i < n; i++) {
            size_t at = (size_t)i * T, ref_at = (size_t)seqs[i] * T;
            for (int h = 0; h < o.n_hooks; h++) {
                int w = o.width[h];
                bad += rows_differing(o.hook_out[h] + at * w, ref.hook_out[h] + ref_at * w, w);
            }
            bad += rows_differing(o.logits + at * m->cfg.vocab, ref.logits + ref_at * m->cfg.vocab, m->cfg.vocab);
            bad += rows_differing(o.loss + at, ref.loss + ref_at, 1);
            rows += (long)T * (o.n_hooks + 2);
        }
        printf("%s: batch of %d sequences: %ld of %ld rows (hooks, logits, loss) differ from the batch of %d%s\n", dir, n,
               bad, rows, ALL, bad ? ": FAIL" : "");
        failures += bad != 0;
        release(&o);
    }
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
