/* lm_bench — times lm_loss_grad (forward + backward) on a randomly initialised model of a
 * config.json; bench/lm_train_bench.sh runs it beside the same step in PyTorch.
 *
 *   lm_bench CONFIG_DIR BATCH SEQ ITERS THREADS   -> "tokens/s GFLOP/s params"
 *
 * SEQ is the number of predicted positions (each sequence is SEQ + 1 tokens). THREADS as
 * lm_work_new_threads (the batch's sequences split over them). Reports the best of ITERS steps after one warm-up. FLOPs count
 * the matrix products only, forward and backward (3 x the forward's: every linear layer, the
 * causal attention products of each query against the keys up to it, the LM head). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "lm_model.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A deterministic normal-ish value in [-std sqrt 3, std sqrt 3] (uniform, same variance). */
static float uniform(uint64_t *s, float std) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return ((float)(*s >> 40) / (float)(1 << 24) * 2.0f - 1.0f) * std * 1.7320508f;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: lm_bench CONFIG_DIR BATCH SEQ ITERS THREADS\n");
        return 2;
    }
    int B = atoi(argv[2]), T = atoi(argv[3]), iters = atoi(argv[4]), threads = atoi(argv[5]);
    fw_config cfg;
    lm_model *m;
    lm_work *w;
    if (fw_config_load(argv[1], &cfg) != SF_OK || lm_model_new(&cfg, &m) != SF_OK || lm_work_new_threads(m, B, T, threads, &w) != SF_OK) {
        fprintf(stderr, "lm_bench: %s\n", sf_last_error());
        return 1;
    }
    lm_tensor *ts;
    size_t nt = lm_model_tensors(m, &ts);
    uint64_t seed = 1;
    for (size_t i = 0; i < nt; i++)
        for (size_t j = 0; j < ts[i].n; j++) ts[i].w[j] = ts[i].ndim == 1 ? 1.0f : uniform(&seed, 0.02f);
    int32_t *tok = malloc(sizeof *tok * (size_t)B * (T + 1));
    for (size_t i = 0; i < (size_t)B * (T + 1); i++) tok[i] = (int32_t)(uniform(&seed, 1.0f) * 1e6f + 2e6f) % cfg.vocab;

    const fw_config *c = &cfg;
    double qkv = (double)(c->n_heads + 2 * c->n_kv_heads) * c->head_dim, att = (double)c->n_heads * c->head_dim;
    double per_tok = 2.0 * c->n_layers * (c->d_model * (qkv + att) + 3.0 * c->d_model * c->d_ff +
                                          2.0 * att * (T + 1) / 2.0) + 2.0 * c->d_model * c->vocab;
    double best = 1e30, loss;
    for (int it = 0; it <= iters; it++) {
        lm_zero_grad(m);
        double t0 = now();
        if (lm_loss_grad(m, w, tok, B, T, 1.0f, &loss) != SF_OK) {
            fprintf(stderr, "lm_bench: %s\n", sf_last_error());
            return 1;
        }
        double dt = now() - t0;
        if (it && dt < best) best = dt;
    }
    double tokens = (double)B * T;
    printf("%.1f %.1f %zu\n", tokens / best, 3.0 * per_tok * tokens / best / 1e9, lm_model_numel(m));
    free(tok);
    lm_work_free(w);
    lm_model_free(m);
    return 0;
}
