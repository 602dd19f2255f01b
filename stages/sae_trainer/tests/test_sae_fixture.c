/* test_sae_fixture — the C trainer against fixtures made by tools/sae_reference.py (PyTorch):
 * geometric median, normalisation scale, one step's gradients and parameters (within 1e-5), and
 * loss curves (every step within 1%).
 *
 *   test_sae_fixture FIXTURE.safetensors[.gz]
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "sae.h"
#include "saeflow.h"
#include "sf_safetensors.h"
#include "sf_check.h"

/* Gunzips src into a temporary file (sf_st_open wants a plain file); returns its path. */
static char *gunzip_to_temp(const char *src) {
    static char path[] = "/tmp/sae_fixture_XXXXXX";
    int fd = mkstemp(path);
    gzFile in = gzopen(src, "rb");
    if (fd < 0 || !in) {
        fprintf(stderr, "cannot open %s\n", src);
        exit(1);
    }
    char buf[65536];
    int got;
    while ((got = gzread(in, buf, sizeof buf)) > 0)
        if (write(fd, buf, (size_t)got) != got) exit(1);
    gzclose(in);
    close(fd);
    return path;
}

static const float *tensor(const sf_st_file *f, const char *prefix, const char *name, size_t count,
                           float *dst) {
    char key[256];
    snprintf(key, sizeof key, "%s%s", prefix, name);
    const sf_st_tensor *t = sf_st_find(f, key);
    if (!t || sf_tensor_numel(&t->t) != (int64_t)count) {
        fprintf(stderr, "fixture: tensor %s missing or of the wrong size\n", key);
        exit(1);
    }
    sf_convert_to_f32(dst, t->t.data, t->t.dtype, count);
    return dst;
}

static double max_abs_diff(const float *a, const float *b, size_t count) {
    double m = 0;
    for (size_t i = 0; i < count; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

static void run_case(const sf_st_file *f, const char *prefix, json_t *cfg, const float *pool, int64_t pool_rows) {
    int d = (int)json_integer_value(json_object_get(cfg, "d"));
    int n = (int)json_integer_value(json_object_get(cfg, "n"));
    int k = (int)json_integer_value(json_object_get(cfg, "k"));
    int batch = (int)json_integer_value(json_object_get(cfg, "batch"));
    int steps = (int)json_integer_value(json_object_get(cfg, "steps"));
    const char *norm = json_string_value(json_object_get(cfg, "norm"));
    size_t nd = (size_t)n * d;

    sae_model m;
    if (sae_model_alloc(&m, d, n, k) != SF_OK || sae_norm_parse(norm, &m.norm) != SF_OK) {
        fprintf(stderr, "%s\n", sf_last_error());
        exit(1);
    }
    float *x = malloc((size_t)batch * d * sizeof(float));
    float *ref = malloc(nd * sizeof(float));
    if (m.norm == SAE_NORM_SCALAR) {
        m.norm_scale = sae_norm_scale_estimate(pool, batch, d);
        double want = json_number_value(json_object_get(cfg, "norm_scale"));
        CHECK(fabs(m.norm_scale - want) <= 1e-6 * want, "%s norm_scale %.9g vs torch %.9g", prefix,
              m.norm_scale, want);
        m.norm_scale = (float)want;
    }

    /* Init: W_dec from the fixture, W_enc = W_dec, b_enc = 0 (the recipe), b_dec = geometric
     * median of the first normalised batch; ours is checked, then torch's used. */
    tensor(f, prefix, "init.W_dec", nd, m.W_dec);
    memcpy(m.W_enc, m.W_dec, nd * sizeof(float));
    memcpy(x, pool, (size_t)batch * d * sizeof(float));
    sae_normalize(&m, x, batch, NULL);
    sae_geometric_median(x, batch, d, 100, 1e-5, m.b_dec);
    tensor(f, prefix, "init.b_dec", (size_t)d, ref);
    double gm = max_abs_diff(m.b_dec, ref, (size_t)d);
    CHECK(gm <= 1e-5, "%s geometric median differs by %g", prefix, gm);
    memcpy(m.b_dec, ref, (size_t)d * sizeof(float));

    sae_train_opts o;
    sae_train_opts_default(&o);
    o.warmup_steps = json_integer_value(json_object_get(cfg, "warmup"));
    json_t *v;
    if ((v = json_object_get(cfg, "k_aux"))) o.k_aux = (int)json_integer_value(v);
    if ((v = json_object_get(cfg, "dead_tokens"))) o.dead_tokens = json_integer_value(v);
    if ((v = json_object_get(cfg, "remove_parallel"))) o.remove_parallel_grad = json_is_true(v);
    if ((v = json_object_get(cfg, "decay_start"))) o.decay_start = json_integer_value(v);
    if ((v = json_object_get(cfg, "decay_steps"))) o.decay_steps = json_integer_value(v);
    char key[256];
    snprintf(key, sizeof key, "%sgrad.W_enc", prefix);
    int with_step1 = sf_st_find(f, key) != NULL;
    o.keep_grads = with_step1;
    sae_trainer *t = sae_trainer_new(&m, &o, batch);
    if (!t) {
        fprintf(stderr, "%s\n", sf_last_error());
        exit(1);
    }

    snprintf(key, sizeof key, "%slosses", prefix);
    const sf_st_tensor *lt = sf_st_find(f, key);
    if (!lt || lt->t.ndim != 2 || lt->t.shape[0] != steps || lt->t.shape[1] != 3) {
        fprintf(stderr, "fixture: bad %s\n", key);
        exit(1);
    }
    double *losses = malloc((size_t)steps * 3 * sizeof(double));
    memcpy(losses, lt->t.data, (size_t)steps * 3 * sizeof(double));

    int nb = (int)(pool_rows / batch);
    double worst = 0, worst_mse = 0, worst_ours = 0;
    int worst_step = 0;
    for (int s = 0; s < steps; s++) {
        memcpy(x, pool + (size_t)(s % nb) * batch * d, (size_t)batch * d * sizeof(float));
        sae_normalize(&m, x, batch, NULL);
        sae_stats st;
        if (sae_train_step(t, x, batch, &st) != SF_OK) {
            fprintf(stderr, "%s\n", sf_last_error());
            exit(1);
        }
        double rel = fabs(st.loss - losses[s * 3]) / fmax(fabs(losses[s * 3]), 1e-12);
        if (rel >= worst) worst = rel, worst_step = s, worst_ours = st.loss;
        worst_mse = fmax(worst_mse, fabs(st.mse - losses[s * 3 + 1]) / fmax(losses[s * 3 + 1], 1e-12));
        if (s == 0 && with_step1) {
            const float *g[4];
            sae_trainer_grads(t, &g[0], &g[1], &g[2], &g[3]);
            const char *names[4] = {"W_enc", "b_enc", "W_dec", "b_dec"};
            size_t counts[4] = {nd, (size_t)n, nd, (size_t)d};
            float *params[4] = {m.W_enc, m.b_enc, m.W_dec, m.b_dec};
            for (int i = 0; i < 4; i++) {
                char name[64];
                snprintf(name, sizeof name, "grad.%s", names[i]);
                double dg = max_abs_diff(g[i], tensor(f, prefix, name, counts[i], ref), counts[i]);
                snprintf(name, sizeof name, "step1.%s", names[i]);
                double dp = max_abs_diff(params[i], tensor(f, prefix, name, counts[i], ref), counts[i]);
                printf("%s %-5s grad max|diff| %.3g  param after step 1 max|diff| %.3g\n", prefix,
                       names[i], dg, dp);
                CHECK(dg <= 1e-5, "%s gradient of %s differs by %g", prefix, names[i], dg);
                CHECK(dp <= 1e-5, "%s %s after step 1 differs by %g", prefix, names[i], dp);
            }
            CHECK(fabs(st.aux - losses[2]) <= 1e-5 * fmax(1, losses[2]), "%s aux loss %g vs torch %g",
                  prefix, st.aux, losses[2]);
        }
    }
    printf("%s %d steps: loss max relative diff %.3g (step %d: %g vs torch %g), mse %.3g; final loss %g\n",
           prefix, steps, worst, worst_step, worst_ours, losses[worst_step * 3], worst_mse, losses[(steps - 1) * 3]);
    CHECK(worst <= 0.01, "%s loss curve differs by %.3g%% at step %d", prefix, 100 * worst, worst_step);
    /* The curve must actually go down, or matching it proves little. */
    if (steps >= 50)
        CHECK(losses[(steps - 1) * 3] < 0.8 * losses[0], "%s reference loss did not decrease", prefix);

    free(losses);
    free(x);
    free(ref);
    sae_trainer_free(t);
    sae_model_free(&m);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s FIXTURE.safetensors[.gz]\n", argv[0]);
        return 2;
    }
    const char *path = argv[1];
    size_t len = strlen(path);
    char *tmp = NULL;
    if (len > 3 && !strcmp(path + len - 3, ".gz")) path = tmp = gunzip_to_temp(path);
    sf_st_file *f = sf_st_open(path);
    if (!f) {
        fprintf(stderr, "%s\n", sf_last_error());
        return 1;
    }
    json_error_t err;
    json_t *cases = json_loads(sf_st_metadata(f, "cases") ? sf_st_metadata(f, "cases") : "", 0, &err);
    const sf_st_tensor *pt = sf_st_find(f, "pool");
    if (!json_is_object(cases) || !pt || pt->t.ndim != 2) {
        fprintf(stderr, "fixture: no cases / pool\n");
        return 1;
    }
    int64_t rows = pt->t.shape[0];
    float *pool = malloc((size_t)sf_tensor_numel(&pt->t) * sizeof(float));
    sf_convert_to_f32(pool, pt->t.data, pt->t.dtype, (size_t)sf_tensor_numel(&pt->t));
    const char *prefix;
    json_t *cfg;
    json_object_foreach(cases, prefix, cfg) run_case(f, prefix, cfg, pool, rows);
    free(pool);
    json_decref(cases);
    sf_st_close(f);
    if (tmp) unlink(tmp);
    printf(failures ? "%d FAILURES\n" : "all fixture checks passed\n", failures);
    return failures ? 1 : 0;
}
