/* sae_bench — training tokens/s of the C TopK-SAE trainer (the peer is tools/sae_reference.py bench).
 *
 *   sae_bench D N K BATCH STEPS DATA.f32   (DATA: raw float32 rows of width D, >= BATCH rows)
 *
 * Same recipe as the reference: unit-norm inputs, b_dec = geometric median of the first batch,
 * one untimed step, then STEPS timed steps cycling through the data's whole batches. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "sae.h"
#include "saeflow.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU seconds of the whole process (every thread): on a shared machine the wall clock depends on
 * the others' load, CPU time much less. */
static double cpu_s(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1e-6;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s D N K BATCH STEPS DATA.f32\n", argv[0]);
        return 2;
    }
    int d = atoi(argv[1]), n = atoi(argv[2]), k = atoi(argv[3]), batch = atoi(argv[4]), steps = atoi(argv[5]);
    FILE *f = fopen(argv[6], "rb");
    if (!f || d < 1 || batch < 1 || steps < 1) {
        fprintf(stderr, "bad arguments or cannot open %s\n", argv[6]);
        return 2;
    }
    fseek(f, 0, SEEK_END);
    long rows = ftell(f) / (long)(d * sizeof(float));
    fseek(f, 0, SEEK_SET);
    int nb = (int)(rows / batch);
    if (nb < 1) {
        fprintf(stderr, "%s holds %ld rows, fewer than one batch\n", argv[6], rows);
        return 2;
    }
    float *data = malloc((size_t)nb * batch * d * sizeof(float)), *x = malloc((size_t)batch * d * sizeof(float));
    if (!data || !x || fread(data, sizeof(float) * d, (size_t)nb * batch, f) != (size_t)nb * batch) return 1;
    fclose(f);

    sae_model m;
    sae_train_opts o;
    if (sae_model_alloc(&m, d, n, k) != SF_OK) return fprintf(stderr, "%s\n", sf_last_error()), 1;
    sae_model_init(&m, 0);
    m.norm = SAE_NORM_UNIT;
    sae_train_opts_default(&o);
    sae_trainer *t = sae_trainer_new(&m, &o, batch);
    if (!t) return fprintf(stderr, "%s\n", sf_last_error()), 1;
    memcpy(x, data, (size_t)batch * d * sizeof(float));
    sae_normalize(&m, x, batch, NULL);
    sae_geometric_median(x, batch, d, 100, 1e-5, m.b_dec);
    sae_stats st;
    sae_train_step(t, x, batch, &st);
    double t0 = now_s(), c0 = cpu_s();
    for (int s = 0; s < steps; s++) {
        memcpy(x, data + (size_t)((s + 1) % nb) * batch * d, (size_t)batch * d * sizeof(float));
        sae_normalize(&m, x, batch, NULL);
        sae_train_step(t, x, batch, &st);
    }
    double dt = now_s() - t0, dc = cpu_s() - c0;
    printf("{\"tokens_per_s\": %.1f, \"tokens_per_cpu_s\": %.1f, \"steps\": %d, \"seconds\": %.3f, "
           "\"loss\": %.6g, \"d\": %d, \"n\": %d, \"k\": %d, \"batch\": %d}\n",
           (double)steps * batch / dt, (double)steps * batch / dc, steps, dt, st.loss, d, n, k, batch);
    sae_trainer_free(t);
    sae_model_free(&m);
    free(data);
    free(x);
    return 0;
}
