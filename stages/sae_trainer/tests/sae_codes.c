/* sae_codes — test driver: loads an SAE with sae_load_as (any layout, sae.pth included) and writes
 * what saeflow computes for raw activations, for a Python test to compare with independent forwards:
 *   sae_codes SAE_PATH X.f32 OUT_PREFIX [K NORM]
 * X.f32: rows of d float32 (d from the SAE). Writes OUT_PREFIX.idx (int32 [rows, k], -1 unused),
 * .val (float32 [rows, k]), .xhat (float32 [rows, d], raw space) and .xhatn (the SAE's normalised
 * space), and prints "d n k norm" on stdout. K <= 0 / NORM "-": as the files record. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sae.h"
#include "saeflow.h"

static int write_file(const char *prefix, const char *ext, const void *p, size_t bytes) {
    char path[4096];
    snprintf(path, sizeof path, "%s.%s", prefix, ext);
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(p, 1, bytes, f) == bytes;
    if (f && fclose(f) != 0) ok = 0;
    return ok ? 0 : (fprintf(stderr, "sae_codes: cannot write %s\n", path), 1);
}

int main(int argc, char **argv) {
    if (argc != 4 && argc != 6) {
        fprintf(stderr, "usage: sae_codes SAE_PATH X.f32 OUT_PREFIX [K NORM]\n");
        return 2;
    }
    int k = argc == 6 ? atoi(argv[4]) : 0, norm = -1;
    sae_norm_mode nm;
    if (argc == 6 && strcmp(argv[5], "-") != 0) {
        if (sae_norm_parse(argv[5], &nm) != SF_OK) return fprintf(stderr, "sae_codes: %s\n", sf_last_error()), 2;
        norm = (int)nm;
    }
    sae_model m;
    if (sae_load_as(&m, argv[1], k, norm) != SF_OK) return fprintf(stderr, "sae_codes: %s\n", sf_last_error()), 1;
    FILE *f = fopen(argv[2], "rb");
    if (!f) return fprintf(stderr, "sae_codes: cannot open %s\n", argv[2]), 1;
    fseek(f, 0, SEEK_END);
    long bytes = ftell(f);
    fseek(f, 0, SEEK_SET);
    int64_t rows = bytes / (long)(sizeof(float) * (size_t)m.d);
    float *x = malloc((size_t)bytes + 1), *xhat = malloc((size_t)bytes + 1), *xn = malloc((size_t)bytes + 1),
          *val = malloc((size_t)rows * (size_t)m.k * sizeof(float) + 1);
    int32_t *idx = malloc((size_t)rows * (size_t)m.k * sizeof(int32_t) + 1);
    if (!x || !xhat || !xn || !val || !idx || fread(x, 1, (size_t)bytes, f) != (size_t)bytes)
        return fprintf(stderr, "sae_codes: cannot read %s\n", argv[2]), 1;
    fclose(f);
    if (sae_encode(&m, x, rows, rows, idx, val) != SF_OK || sae_reconstruct(&m, x, rows, rows, xhat) != SF_OK)
        return fprintf(stderr, "sae_codes: %s\n", sf_last_error()), 1;
    sae_decode(&m, idx, val, rows, NULL, xn);
    size_t rk = (size_t)rows * (size_t)m.k;
    int rc = write_file(argv[3], "idx", idx, rk * sizeof *idx) || write_file(argv[3], "val", val, rk * sizeof *val) ||
             write_file(argv[3], "xhat", xhat, (size_t)bytes) || write_file(argv[3], "xhatn", xn, (size_t)bytes);
    printf("%d %d %d %s\n", m.d, m.n, m.k, sae_norm_name(m.norm));
    free(x), free(xhat), free(xn), free(val), free(idx);
    sae_model_free(&m);
    return rc;
}
