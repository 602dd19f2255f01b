/* optim_driver.c — lm_optim.h on tensors a test writes, for tests/test_optim.py to compare with
 * torch.optim.AdamW, clip_grad_norm_ and its own schedule formulas.
 *
 *   optim_driver adamw IN.safetensors OUT.safetensors
 *       IN: weights w.K (F32, 1-D or 2-D; 2-D ones decay) and gradients g.S.K for steps S = 0..;
 *       metadata beta1 beta2 eps weight_decay clip schedule lr warmup total decay min_ratio.
 *       OUT: w.K, m.K, v.K after every step, and norm, lr (F64 [steps]): each step's gradient
 *       norm before clipping and its learning rate.
 *   optim_driver init IN.safetensors OUT.safetensors SEED STD
 *       OUT: IN's w.K initialised by lm_init_weights (named as in IN).
 *   optim_driver lr SCHEDULE LR WARMUP TOTAL DECAY MIN_RATIO STEPS
 *       prints the learning rate of steps 0..STEPS-1, one a line (%.17g).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lm_optim.h"
#include "sf_safetensors.h"

static int die(void) {
    fprintf(stderr, "optim_driver: %s\n", sf_last_error());
    return 1;
}

static double meta_num(const sf_st_file *f, const char *key) {
    const char *v = sf_st_metadata(f, key);
    if (!v) {
        fprintf(stderr, "optim_driver: metadata %s missing\n", key);
        exit(1);
    }
    return strtod(v, NULL);
}

/* The w.K tensors of f as lm_tensors with their own weight and gradient buffers. */
static size_t load_weights(const sf_st_file *f, lm_tensor **out) {
    size_t nt = 0;
    char name[96];
    for (;; nt++) {
        snprintf(name, sizeof name, "w.%zu", nt);
        if (!sf_st_find(f, name)) break;
    }
    lm_tensor *t = calloc(nt ? nt : 1, sizeof *t);
    for (size_t k = 0; k < nt; k++) {
        snprintf(t[k].name, sizeof t[k].name, "w.%zu", k);
        const sf_st_tensor *s = sf_st_find(f, t[k].name);
        t[k].ndim = s->t.ndim;
        t[k].shape[0] = s->t.shape[0];
        t[k].shape[1] = s->t.ndim == 2 ? s->t.shape[1] : 1;
        t[k].n = (size_t)sf_tensor_numel(&s->t);
        t[k].decay = s->t.ndim == 2;
        t[k].w = malloc(t[k].n * sizeof(float));
        t[k].g = calloc(t[k].n, sizeof(float));
        sf_tensor_to_f32(&s->t, t[k].w, t[k].n);
    }
    *out = t;
    return nt;
}

static void free_weights(lm_tensor *t, size_t nt) {
    for (size_t k = 0; k < nt; k++) free(t[k].w), free(t[k].g);
    free(t);
}

/* Adds PREFIX.K for every tensor: its weights, or its slice of flat; names[K] holds the name until
 * the writer has saved. */
static void add_tensors(sf_st_writer *w, lm_tensor *t, size_t nt, const char *prefix, const float *flat,
                        char (*names)[32]) {
    size_t off = 0;
    for (size_t k = 0; k < nt; k++) {
        snprintf(names[k], 32, "%s.%zu", prefix, k);
        sf_st_writer_add(w, names[k], SF_F32, t[k].ndim, t[k].shape, flat ? flat + off : t[k].w);
        off += t[k].n;
    }
}

static int cmd_adamw(const char *in, const char *out) {
    sf_st_file *f = sf_st_open(in);
    if (!f) return die();
    lm_tensor *t;
    size_t nt = load_weights(f, &t), n = 0;
    for (size_t k = 0; k < nt; k++) n += t[k].n;
    lm_adamw_opts o = {meta_num(f, "beta1"), meta_num(f, "beta2"), meta_num(f, "eps"), meta_num(f, "weight_decay")};
    lm_schedule s = {0};
    if (lm_schedule_parse(sf_st_metadata(f, "schedule"), &s.kind) != SF_OK) return die();
    s.lr = meta_num(f, "lr");
    s.warmup = (int64_t)meta_num(f, "warmup");
    s.total = (int64_t)meta_num(f, "total");
    s.decay = (int64_t)meta_num(f, "decay");
    s.min_ratio = meta_num(f, "min_ratio");
    double clip = meta_num(f, "clip");
    if (lm_schedule_check(&s) != SF_OK) return die();
    lm_adamw a;
    if (lm_adamw_init(&a, &o, n) != SF_OK) return die();
    int steps = 0;
    char name[96];
    for (;; steps++) {
        snprintf(name, sizeof name, "g.%d.0", steps);
        if (!sf_st_find(f, name)) break;
    }
    double *norms = calloc((size_t)steps + 1, sizeof(double)), *lrs = calloc((size_t)steps + 1, sizeof(double));
    for (int st = 0; st < steps; st++) {
        for (size_t k = 0; k < nt; k++) {
            snprintf(name, sizeof name, "g.%d.%zu", st, k);
            const sf_st_tensor *g = sf_st_find(f, name);
            if (!g) return fprintf(stderr, "optim_driver: %s missing\n", name), 1;
            sf_tensor_to_f32(&g->t, t[k].g, t[k].n);
        }
        norms[st] = lm_clip_grads(t, nt, clip);
        lrs[st] = lm_schedule_lr(&s, st);
        lm_adamw_step(&a, t, nt, lrs[st]);
    }
    sf_st_writer *w = sf_st_writer_new();
    char (*names)[32] = calloc(3 * nt + 1, 32);
    add_tensors(w, t, nt, "w", NULL, names);
    add_tensors(w, t, nt, "m", a.m, names + nt);
    add_tensors(w, t, nt, "v", a.v, names + 2 * nt);
    int64_t shape[1] = {steps};
    sf_st_writer_add(w, "norm", SF_F64, 1, shape, norms);
    sf_st_writer_add(w, "lr", SF_F64, 1, shape, lrs);
    if (sf_st_writer_save(w, out, NULL) != SF_OK) return die();
    sf_st_writer_free(w);
    sf_st_close(f);
    lm_adamw_free(&a);
    free_weights(t, nt);
    free(names), free(norms), free(lrs);
    return 0;
}

static int cmd_init(const char *in, const char *out, uint64_t seed, double std) {
    sf_st_file *f = sf_st_open(in);
    if (!f) return die();
    lm_tensor *t;
    size_t nt = load_weights(f, &t);
    lm_init_weights(t, nt, seed, std);
    sf_st_writer *w = sf_st_writer_new();
    char (*names)[32] = calloc(nt + 1, 32);
    add_tensors(w, t, nt, "w", NULL, names);
    if (sf_st_writer_save(w, out, NULL) != SF_OK) return die();
    sf_st_writer_free(w);
    sf_st_close(f);
    free_weights(t, nt);
    free(names);
    return 0;
}

static int cmd_lr(char **a) {
    lm_schedule s = {0};
    if (lm_schedule_parse(a[0], &s.kind) != SF_OK) return die();
    s.lr = strtod(a[1], NULL);
    s.warmup = atoll(a[2]);
    s.total = atoll(a[3]);
    s.decay = atoll(a[4]);
    s.min_ratio = strtod(a[5], NULL);
    if (lm_schedule_check(&s) != SF_OK) return die();
    for (int64_t st = 0; st < atoll(a[6]); st++) printf("%.17g\n", lm_schedule_lr(&s, st));
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "adamw")) return cmd_adamw(argv[2], argv[3]);
    if (argc == 6 && !strcmp(argv[1], "init")) return cmd_init(argv[2], argv[3], strtoull(argv[4], NULL, 10), strtod(argv[5], NULL));
    if (argc == 9 && !strcmp(argv[1], "lr")) return cmd_lr(argv + 2);
    fprintf(stderr, "usage: optim_driver adamw IN OUT | init IN OUT SEED STD | lr SCHEDULE LR WARMUP TOTAL DECAY "
                    "MIN_RATIO STEPS\n");
    return 2;
}
