/* forward_bench — times fw_forward on a checkpoint (bench/forward_bench.sh runs it beside the
 * PyTorch peer), and measures the sgemm peak it is compared with.
 *
 *   forward_bench MODEL_DIR BATCH SEQ LAST_LAYER|full ITERS [resident|stream|auto]
 *                                             -> "tokens/s GFLOP/s MFLOP/token tokens/CPU-second"
 *   forward_bench --sgemm N ITERS                              -> "GFLOP/s" of an N^3 sgemm
 *
 * Threads: OpenBLAS's default (OPENBLAS_NUM_THREADS). FLOPs count the multiply-adds of every
 * linear layer, the causal attention products (each query against the keys up to it) and the
 * LM head; norms, softmax and activations are not counted. Weights: resident unless the last
 * argument says otherwise (model.h's fw_weights; a streamed forward converts every block per call).
 * tokens/CPU-second divides by the process's CPU time of the best call (all threads): tokens/s per
 * core, which a loaded machine disturbs less than wall-clock time. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model.h"
#include "sf_util.h"

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int bench_sgemm(int n, int iters) {
    float *a = malloc(sizeof(float) * n * n), *b = malloc(sizeof(float) * n * n), *c = malloc(sizeof(float) * n * n);
    for (size_t i = 0; i < (size_t)n * n; i++) a[i] = b[i] = (float)(i % 7) * 0.1f;
    double best = 1e30;
    for (int it = 0; it <= iters; it++) { /* the first run warms up */
        double t0 = sf_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double dt = sf_now() - t0;
        if (it && dt < best) best = dt;
    }
    printf("%.1f\n", 2.0 * n * n * n / best / 1e9);
    free(a), free(b), free(c);
    return 0;
}

/* FLOPs per token of blocks 0..last and, if head, the LM head, for sequences of T tokens. */
static double flops_per_token(const fw_config *c, int T, int last, int head) {
    double d = c->d_model, hd = c->head_dim, qn = c->n_heads * hd, kvn = c->n_kv_heads * hd;
    double ff_in = c->gated_mlp ? 2.0 * c->d_ff : c->d_ff;
    double linear = d * (qn + 2 * kvn) + qn * d + d * ff_in + c->d_ff * d;
    double attn = 2.0 * qn * (T + 1) / 2.0; /* QK^T and PV over (T+1)/2 keys on average */
    return 2.0 * (last + 1) * (linear + attn) + (head ? 2.0 * d * c->vocab : 0);
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "--sgemm")) return bench_sgemm(atoi(argv[2]), atoi(argv[3]));
    fw_weights how = argc == 7 && !strcmp(argv[6], "stream") ? FW_WEIGHTS_STREAM
                   : argc == 7 && !strcmp(argv[6], "auto")   ? FW_WEIGHTS_AUTO : FW_WEIGHTS_RESIDENT;
    if ((argc != 6 && argc != 7) || (argc == 7 && how == FW_WEIGHTS_RESIDENT && strcmp(argv[6], "resident"))) {
        fprintf(stderr, "usage: %s MODEL_DIR BATCH SEQ LAST_LAYER|full ITERS [resident|stream|auto] | --sgemm N ITERS\n",
                argv[0]);
        return 2;
    }
    int B = atoi(argv[2]), T = atoi(argv[3]), full = !strcmp(argv[4], "full"), iters = atoi(argv[5]);
    fw_config cfg;
    if (fw_config_load(argv[1], &cfg) != SF_OK) {
        fprintf(stderr, "%s\n", sf_last_error());
        return 1;
    }
    int last = full ? cfg.n_layers - 1 : atoi(argv[4]);
    fw_model *m = fw_model_load_mode(argv[1], last + 1, full, how);
    if (!m) {
        fprintf(stderr, "%s\n", sf_last_error());
        return 1;
    }
    int32_t *tok = malloc(sizeof *tok * B * T);
    srand(1);
    for (int i = 0; i < B * T; i++) tok[i] = rand() % cfg.vocab;
    fw_hook h = {.kind = FW_RESID_POST, .layer = last};
    float *out = malloc(sizeof(float) * B * T * cfg.d_model);
    float *loss = malloc(sizeof(float) * B * T);
    fw_request r = {tok, B, T, full ? 0 : 1, &h, &out, NULL, full ? loss : NULL, NULL, NULL};
    fw_state *s = fw_state_new(0);
    double best = 1e30, best_cpu = 1e30;
    for (int it = 0; it <= iters; it++) {
        double t0 = sf_now(), c0 = cpu_now();
        if (fw_forward(m, s, &r) != SF_OK) {
            fprintf(stderr, "%s\n", sf_last_error());
            return 1;
        }
        double dt = sf_now() - t0, dc = cpu_now() - c0;
        if (it && dt < best) best = dt;
        if (it && dc < best_cpu) best_cpu = dc;
    }
    double tps = B * T / best;
    double f = flops_per_token(&cfg, T, last, full);
    printf("%.1f %.1f %.1f %.1f\n", tps, tps * f / 1e9, f / 1e6, B * T / best_cpu);
    fw_state_free(s);
    fw_model_free(m);
    free(tok), free(out), free(loss);
    return 0;
}
