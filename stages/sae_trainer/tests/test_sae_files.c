/* test_sae_files — sae_lib's files and encoder: save/load round trips in the three layouts,
 * encode/decode against a dense double-precision reference, the paper's own config (no saeflow
 * keys, BF16 weights), and malformed directories rejected with an error. A save whose weights
 * cannot be written (an injected failure; as root also a full tmpfs) leaves no config.json, the
 * file that marks a directory as holding a model. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sae.h"
#include "saeflow.h"
#include "sf_safetensors.h"
#include "sf_check.h"

static uint64_t rng = 42;
static float frand(void) { /* uniform in [-1, 1) */
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng >> 40) * 0x1.0p-24 * 2.0 - 1.0);
}

static int same(const float *a, const float *b, size_t n) { return memcmp(a, b, n * sizeof(float)) == 0; }

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

/* Top-k of a dense double reference for one row: the k largest positive pre-activations. */
/* Every latent's pre-activation W_enc (norm(x) - b_dec) + b_enc, in double. */
static void reference_preacts(const sae_model *m, const float *x, double *pre) {
    double xn[256], nrm = 0;
    for (int c = 0; c < m->d; c++) nrm += (double)x[c] * x[c];
    for (int c = 0; c < m->d; c++) {
        double f = m->norm == SAE_NORM_UNIT ? 1 / sqrt(nrm) : m->norm == SAE_NORM_SCALAR ? m->norm_scale : 1;
        xn[c] = x[c] * f - m->b_dec[c];
    }
    for (int i = 0; i < m->n; i++) {
        double s = m->b_enc[i];
        for (int c = 0; c < m->d; c++) s += (double)m->W_enc[(size_t)i * m->d + c] * xn[c];
        pre[i] = s;
    }
}

static void reference_encode(const sae_model *m, const float *x, int32_t *idx, double *val) {
    double *pre = malloc((size_t)m->n * sizeof(double));
    reference_preacts(m, x, pre);
    for (int j = 0; j < m->k; j++) {
        int best = -1;
        for (int i = 0; i < m->n; i++)
            if (pre[i] > 0 && (best < 0 || pre[i] > pre[best])) best = i;
        idx[j] = best;
        val[j] = best >= 0 ? pre[best] : 0;
        if (best >= 0) pre[best] = -INFINITY;
    }
    free(pre);
}

/* sae_save into dir must fail and leave no config.json there (nor an older one). */
static void expect_failed_save_without_config(const sae_model *m, const char *dir, const char *what) {
    char config[600];
    snprintf(config, sizeof config, "%s/config.json", dir);
    CHECK(sae_save(m, dir, SAE_LAYOUT_PAPER, "{\"saeflow_training\": {\"complete\": true}}") == SF_ERR,
          "%s: the save fails", what);
    CHECK(access(config, F_OK) != 0, "%s: %s claims a model whose weights were not written", what, config);
}

/* The weights cannot be written: model.safetensors.tmp is a directory (open fails), then, as root,
 * a 64 KiB tmpfs that the weights do not fit. */
static void check_failed_saves(const sae_model *m, const char *root) {
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/unwritable", root);
    CHECK(sae_save(m, dir, SAE_LAYOUT_PAPER, NULL) == SF_OK, "a first save: %s", sf_last_error());
    snprintf(path, sizeof path, "%s/model.safetensors.tmp", dir);
    CHECK(mkdir(path, 0755) == 0, "mkdir %s", path);
    expect_failed_save_without_config(m, dir, "injected write failure over an earlier save");
    if (geteuid() != 0) {
        printf("skip the full-disk save: not root (mount -t tmpfs needs it)\n");
        return;
    }
    snprintf(dir, sizeof dir, "%s/full", root);
    CHECK(mkdir(dir, 0755) == 0, "mkdir %s", dir);
    if (mount("tmpfs", dir, "tmpfs", 0, "size=64k") != 0) {
        printf("skip the full-disk save: mount tmpfs: %s\n", strerror(errno));
        return;
    }
    expect_failed_save_without_config(m, dir, "full disk");
    CHECK(umount(dir) == 0, "umount %s: %s", dir, strerror(errno));
}

int main(void) {
    char root[] = "/tmp/sae_files_XXXXXX", dir[512], path[600];
    if (!mkdtemp(root)) return 1;
    const int d = 24, n = 96, k = 5, rows = 300;
    sae_model m;
    if (sae_model_alloc(&m, d, n, k) != SF_OK) return 1;
    sae_model_init(&m, 7);
    for (int i = 0; i < n; i++) m.b_enc[i] = 0.1f * frand();
    for (int c = 0; c < d; c++) m.b_dec[c] = 0.2f * frand();
    for (size_t i = 0; i < (size_t)n * d; i++) m.W_enc[i] += 0.05f * frand(); /* encoder != decoder */
    m.norm = SAE_NORM_SCALAR;
    m.norm_scale = 1.75f;

    /* Round trips. */
    const char *names[3] = {"paper", "sparsify", "saelens"};
    for (int l = 0; l < 3; l++) {
        snprintf(dir, sizeof dir, "%s/%s/deeper", root, names[l]);
        sae_model r;
        CHECK(sae_save(&m, dir, (sae_layout)l, "{\"note\": \"x\"}") == SF_OK, "save %s: %s", names[l], sf_last_error());
        CHECK(sae_load(&r, dir) == SF_OK, "load %s: %s", names[l], sf_last_error());
        if (failures) return 1;
        if (l == SAE_LAYOUT_PAPER) {
            CHECK(r.d == d && r.n == n && r.k == k && r.norm == SAE_NORM_SCALAR && r.norm_scale == 1.75f,
                  "%s: shape/normalisation", names[l]);
            CHECK(same(r.W_enc, m.W_enc, (size_t)n * d) && same(r.W_dec, m.W_dec, (size_t)n * d) &&
                      same(r.b_enc, m.b_enc, n) && same(r.b_dec, m.b_dec, d),
                  "%s: weights round trip exactly", names[l]);
        } else {
            /* The scalar normalisation is folded in: same encodings of raw inputs, same x_hat. */
            CHECK(r.d == d && r.n == n && r.k == k && r.norm == SAE_NORM_NONE, "%s: folded normalisation", names[l]);
            float xr[4 * 24], v1[4 * 5], v2[4 * 5], h1[4 * 24], h2[4 * 24], nr[4];
            int32_t i1[4 * 5], i2[4 * 5];
            for (int i = 0; i < 4 * d; i++) xr[i] = 2 * frand();
            sae_encode(&m, xr, 4, 4, i1, v1);
            sae_encode(&r, xr, 4, 4, i2, v2);
            memcpy(h1, xr, sizeof h1);
            sae_normalize(&m, h1, 4, nr);
            sae_decode(&m, i1, v1, 4, nr, h1);
            sae_decode(&r, i2, v2, 4, NULL, h2);
            double dv = 0, dh = 0;
            for (int i = 0; i < 4 * k; i++) dv = fmax(dv, fabs(v1[i] - v2[i]));
            for (int i = 0; i < 4 * d; i++) dh = fmax(dh, fabs(h1[i] - h2[i]));
            CHECK(!memcmp(i1, i2, sizeof i1) && dv < 1e-5 && dh < 1e-5, "%s: folded model encodes and "
                  "decodes raw inputs the same (value diff %g, x_hat diff %g)", names[l], dv, dh);
        }
        sae_model_free(&r);
    }

    /* Encode and decode against the dense reference. */
    float *x = malloc((size_t)rows * d * sizeof(float)), *val = malloc((size_t)rows * k * sizeof(float));
    float *xh = malloc((size_t)rows * d * sizeof(float)), *xn = malloc((size_t)rows * d * sizeof(float));
    float *norms = malloc((size_t)rows * sizeof(float));
    int32_t *idx = malloc((size_t)rows * k * sizeof(int32_t));
    for (int i = 0; i < rows * d; i++) x[i] = 3 * frand();
    /* A wide model too, so rows take the sampled-threshold fast path of the top-k. */
    sae_model wide;
    if (sae_model_alloc(&wide, d, 2048, 32) != SF_OK) return 1;
    sae_model_init(&wide, 9);
    for (int i = 0; i < 2048; i++) wide.b_enc[i] = 0.1f * frand();
    for (int c = 0; c < d; c++) wide.b_dec[c] = 0.2f * frand();
    wide.norm_scale = 0.5f;
    for (int mode = 0; mode < 3; mode++) {
        m.norm = (sae_norm_mode)mode;
        wide.norm = (sae_norm_mode)mode;
        int32_t *widx = malloc((size_t)rows * 32 * sizeof(int32_t));
        float *wval = malloc((size_t)rows * 32 * sizeof(float));
        CHECK(sae_encode(&wide, x, rows, rows, widx, wval) == SF_OK, "encode");
        double wworst = 0;
        int wbad = 0;
        for (int r = 0; r < rows; r++) {
            int32_t ri[32];
            double rv[32];
            reference_encode(&wide, x + r * d, ri, rv);
            for (int j = 0; j < 32; j++) {
                wbad += ri[j] != widx[r * 32 + j];
                wworst = fmax(wworst, fabs(rv[j] - wval[r * 32 + j]));
            }
        }
        CHECK(wbad == 0 && wworst < 1e-5, "n=2048 k=32 normalize=%s: encode matches the reference (%d index "
              "mismatches, max value diff %g)", sae_norm_name(wide.norm), wbad, wworst);
        /* sae_encode_preacts: the same top-k bit for bit, every pre-activation against the
         * reference, and the top-k values are exactly the pre-activations of their latents. */
        int32_t *pidx = malloc((size_t)rows * 32 * sizeof(int32_t));
        float *pval = malloc((size_t)rows * 32 * sizeof(float)), *pre = malloc((size_t)rows * 2048 * sizeof(float));
        double *rpre = malloc(2048 * sizeof(double));
        CHECK(sae_encode_preacts(&wide, x, rows, rows, pidx, pval, pre) == SF_OK, "encode_preacts");
        CHECK(memcmp(pidx, widx, (size_t)rows * 32 * sizeof(int32_t)) == 0 &&
              memcmp(pval, wval, (size_t)rows * 32 * sizeof(float)) == 0,
              "normalize=%s: sae_encode_preacts gives sae_encode's top-k", sae_norm_name(wide.norm));
        double pworst = 0;
        int pbad = 0;
        for (int r = 0; r < rows; r++) {
            reference_preacts(&wide, x + r * d, rpre);
            for (int i = 0; i < 2048; i++) pworst = fmax(pworst, fabs(rpre[i] - pre[(size_t)r * 2048 + i]));
            for (int j = 0; j < 32; j++) pbad += pidx[r * 32 + j] >= 0 && pre[(size_t)r * 2048 + pidx[r * 32 + j]] != pval[r * 32 + j];
        }
        CHECK(pworst < 1e-5 && pbad == 0, "normalize=%s: pre-activations match the reference (max diff %g), top-k "
              "values are theirs (%d differ)", sae_norm_name(wide.norm), pworst, pbad);
        free(pidx);
        free(pval);
        free(pre);
        free(rpre);
        free(widx);
        free(wval);

        CHECK(sae_encode(&m, x, rows, rows, idx, val) == SF_OK, "encode");
        double worst = 0;
        int idx_bad = 0;
        for (int r = 0; r < rows; r++) {
            int32_t ri[8];
            double rv[8];
            reference_encode(&m, x + r * d, ri, rv);
            for (int j = 0; j < k; j++) {
                idx_bad += ri[j] != idx[r * k + j];
                worst = fmax(worst, fabs(rv[j] - val[r * k + j]));
            }
        }
        CHECK(idx_bad == 0 && worst < 1e-5, "normalize=%s: encode matches the reference (%d index "
              "mismatches, max value diff %g)", sae_norm_name(m.norm), idx_bad, worst);
        /* Decode: x_hat in the input's space = (b_dec + sum val W_dec) / factor. */
        memcpy(xn, x, (size_t)rows * d * sizeof(float));
        sae_normalize(&m, xn, rows, norms);
        sae_decode(&m, idx, val, rows, m.norm == SAE_NORM_NONE ? NULL : norms, xh);
        double dworst = 0;
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < d; c++) {
                double s = m.b_dec[c];
                for (int j = 0; j < k && idx[r * k + j] >= 0; j++)
                    s += (double)val[r * k + j] * m.W_dec[(size_t)idx[r * k + j] * d + c];
                dworst = fmax(dworst, fabs(s / norms[r] - xh[r * d + c]));
            }
        CHECK(dworst < 1e-4, "normalize=%s: decode matches (max diff %g)", sae_norm_name(m.norm), dworst);
    }

    /* The paper's own files: config without saeflow keys, BF16 weights -> unit norm, values. */
    snprintf(dir, sizeof dir, "%s/hf", root);
    mkdir(dir, 0777);
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_file(path, "{\"d_in\": 24, \"num_latents\": 96, \"k\": 5, \"model_type\": \"topk_sae\", \"torch_dtype\": \"bfloat16\"}");
    uint16_t *enc = malloc((size_t)n * d * 2), *dec = malloc((size_t)n * d * 2), be[96], bd[24];
    for (int i = 0; i < n; i++)
        for (int c = 0; c < d; c++) {
            enc[i * d + c] = sf_f32_to_bf16(m.W_enc[i * d + c]);
            dec[c * n + i] = sf_f32_to_bf16(m.W_dec[i * d + c]); /* decoder.weight is [d, n] */
        }
    for (int i = 0; i < n; i++) be[i] = sf_f32_to_bf16(m.b_enc[i]);
    for (int c = 0; c < d; c++) bd[c] = sf_f32_to_bf16(m.b_dec[c]);
    int64_t s_nd[2] = {n, d}, s_dn[2] = {d, n}, s_n[1] = {n}, s_d[1] = {d};
    sf_st_writer *w = sf_st_writer_new();
    sf_st_writer_add(w, "encoder.weight", SF_BF16, 2, s_nd, enc);
    sf_st_writer_add(w, "encoder.bias", SF_BF16, 1, s_n, be);
    sf_st_writer_add(w, "decoder.weight", SF_BF16, 2, s_dn, dec);
    sf_st_writer_add(w, "b_dec", SF_BF16, 1, s_d, bd);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    CHECK(sf_st_writer_save(w, path, NULL) == SF_OK, "write bf16 file");
    sf_st_writer_free(w);
    sae_model r;
    CHECK(sae_load(&r, dir) == SF_OK, "load the paper's bf16 layout: %s", sf_last_error());
    if (r.W_dec) {
        CHECK(r.norm == SAE_NORM_UNIT, "paper layout without saeflow keys means unit normalisation");
        CHECK(r.W_dec[5 * d + 3] == sf_bf16_to_f32(dec[3 * n + 5]) && r.W_enc[7 * d + 2] == sf_bf16_to_f32(enc[7 * d + 2]),
              "bf16 values, decoder transposed");
        sae_model_free(&r);
    }

    /* Malformed: a wrong decoder shape, a missing tensor, no k, a truncated file, no files. */
    w = sf_st_writer_new();
    sf_st_writer_add(w, "encoder.weight", SF_BF16, 2, s_nd, enc);
    sf_st_writer_add(w, "encoder.bias", SF_BF16, 1, s_n, be);
    sf_st_writer_add(w, "decoder.weight", SF_BF16, 2, s_nd, dec); /* [n, d]: wrong */
    sf_st_writer_add(w, "b_dec", SF_BF16, 1, s_d, bd);
    CHECK(sf_st_writer_save(w, path, NULL) == SF_OK, "write");
    sf_st_writer_free(w);
    CHECK(sae_load(&r, dir) == SF_ERR && strstr(sf_last_error(), "decoder.weight"), "wrong shape rejected: %s",
          sf_last_error());
    w = sf_st_writer_new();
    sf_st_writer_add(w, "encoder.weight", SF_BF16, 2, s_nd, enc);
    sf_st_writer_add(w, "encoder.bias", SF_BF16, 1, s_n, be);
    sf_st_writer_add(w, "b_dec", SF_BF16, 1, s_d, bd);
    CHECK(sf_st_writer_save(w, path, NULL) == SF_OK, "write");
    sf_st_writer_free(w);
    CHECK(sae_load(&r, dir) == SF_ERR && strstr(sf_last_error(), "decoder.weight"), "missing tensor rejected: %s",
          sf_last_error());
    FILE *f = fopen(path, "r+");
    CHECK(f && ftruncate(fileno(f), 100) == 0, "truncate");
    fclose(f);
    CHECK(sae_load(&r, dir) == SF_ERR, "truncated file rejected: %s", sf_last_error());
    snprintf(path, sizeof path, "%s/config.json", dir);
    write_file(path, "{\"d_in\": 24, \"num_latents\": 96}");
    CHECK(sae_load(&r, dir) == SF_ERR && strstr(sf_last_error(), "'k'"), "config without k rejected: %s",
          sf_last_error());
    write_file(path, "{not json");
    CHECK(sae_load(&r, dir) == SF_ERR, "bad JSON rejected: %s", sf_last_error());
    snprintf(dir, sizeof dir, "%s/nothing", root);
    CHECK(sae_load(&r, dir) == SF_ERR, "empty directory rejected: %s", sf_last_error());

    sae_model big; /* 4 * 2 * 128 * 96 bytes of weights: more than the 64 KiB tmpfs holds */
    CHECK(sae_model_alloc(&big, 128, 96, 5) == SF_OK, "alloc");
    sae_model_init(&big, 3);
    check_failed_saves(&big, root);
    sae_model_free(&big);

    free(x), free(val), free(xh), free(xn), free(norms), free(idx), free(enc), free(dec);
    sae_model_free(&m);
    sae_model_free(&wide);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
    printf(failures ? "%d FAILURES\n" : "all file checks passed\n", failures);
    return failures ? 1 : 0;
}
