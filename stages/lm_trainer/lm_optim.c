/* lm_optim.c — learning rate schedules, gradient clipping, AdamW and the seeded initialisation of
 * lm_optim.h, each a plain loop in a fixed order. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lm_optim.h"

/* ---- learning rate ---- */

int lm_schedule_parse(const char *name, lm_sched_kind *out) {
    if (!strcmp(name, "constant")) *out = LM_SCHED_CONSTANT;
    else if (!strcmp(name, "cosine")) *out = LM_SCHED_COSINE;
    else if (!strcmp(name, "wsd")) *out = LM_SCHED_WSD;
    else return sf_fail("unknown schedule '%s' (constant, cosine or wsd)", name);
    return SF_OK;
}

int lm_schedule_check(const lm_schedule *s) {
    if (!(s->lr > 0) || !isfinite(s->lr)) return sf_fail("lr must be a positive number, not %g", s->lr);
    if (s->warmup < 0) return sf_fail("warmup must be >= 0, not %lld", (long long)s->warmup);
    if (!(s->min_ratio >= 0 && s->min_ratio <= 1))
        return sf_fail("min_lr_ratio must be within [0, 1], not %g", s->min_ratio);
    if (s->kind != LM_SCHED_CONSTANT && s->total < 1)
        return sf_fail("the cosine and wsd schedules need the run's length: steps must be >= 1");
    if (s->kind == LM_SCHED_WSD && (s->decay < 0 || s->decay > s->total - s->warmup))
        return sf_fail("wsd: decay_steps = %lld must be within [0, steps - warmup = %lld]", (long long)s->decay,
                       (long long)(s->total - s->warmup));
    return SF_OK;
}

double lm_schedule_lr(const lm_schedule *s, int64_t step) {
    if (step < s->warmup) return s->lr * (double)(step + 1) / (double)s->warmup;
    double lo = s->lr * s->min_ratio;
    switch (s->kind) {
    case LM_SCHED_COSINE: {
        double p = (double)(step - s->warmup) / (double)(s->total - s->warmup > 1 ? s->total - s->warmup : 1);
        if (p > 1) p = 1;
        return lo + (s->lr - lo) * 0.5 * (1 + cos(M_PI * p));
    }
    case LM_SCHED_WSD: {
        int64_t start = s->total - s->decay; /* the first step of the decay */
        if (step < start || s->decay == 0) return step < s->total || s->decay == 0 ? s->lr : lo;
        double p = (double)(step - start + 1) / (double)s->decay; /* reaches lo at the last step */
        return s->lr + (lo - s->lr) * (p > 1 ? 1 : p);
    }
    default: return s->lr;
    }
}

/* ---- gradients ---- */

double lm_grad_norm(const lm_tensor *t, size_t nt) {
    double sum = 0;
    for (size_t i = 0; i < nt; i++) {
        double s = 0;
        for (size_t j = 0; j < t[i].n; j++) s += (double)t[i].g[j] * t[i].g[j];
        sum += s;
    }
    return sqrt(sum);
}

double lm_clip_grads(lm_tensor *t, size_t nt, double max_norm) {
    double norm = lm_grad_norm(t, nt);
    double coef = max_norm / (norm + 1e-6);
    if (max_norm > 0 && coef < 1) {
        float c = (float)coef;
        for (size_t i = 0; i < nt; i++)
            for (size_t j = 0; j < t[i].n; j++) t[i].g[j] *= c;
    }
    return norm;
}

/* ---- AdamW ---- */

int lm_adamw_init(lm_adamw *a, const lm_adamw_opts *o, size_t n) {
    memset(a, 0, sizeof *a);
    if (!(o->beta1 >= 0 && o->beta1 < 1 && o->beta2 >= 0 && o->beta2 < 1))
        return sf_fail("AdamW betas must be within [0, 1), not %g, %g", o->beta1, o->beta2);
    if (!(o->eps > 0) || !(o->weight_decay >= 0) || !isfinite(o->weight_decay))
        return sf_fail("AdamW needs eps > 0 (not %g) and weight_decay >= 0 (not %g)", o->eps, o->weight_decay);
    a->o = *o;
    a->n = n;
    a->m = sf_zalloc("AdamW first moments (floats)", n, sizeof(float));
    a->v = a->m ? sf_zalloc("AdamW second moments (floats)", n, sizeof(float)) : NULL;
    if (!a->v) {
        lm_adamw_free(a);
        return SF_ERR;
    }
    return SF_OK;
}

void lm_adamw_free(lm_adamw *a) {
    free(a->m);
    free(a->v);
    a->m = a->v = NULL;
}

void lm_adamw_step(lm_adamw *a, lm_tensor *t, size_t nt, double lr) {
    a->t++;
    const double bc1 = 1 - pow(a->o.beta1, (double)a->t), bc2 = 1 - pow(a->o.beta2, (double)a->t);
    const float b1 = (float)a->o.beta1, b2 = (float)a->o.beta2, c1 = (float)(1 - a->o.beta1),
                c2 = (float)(1 - a->o.beta2), eps = (float)a->o.eps;
    const float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    size_t off = 0;
    for (size_t i = 0; i < nt; i++) {
        float *w = t[i].w, *m = a->m + off, *v = a->v + off;
        const float *g = t[i].g;
        const float keep = t[i].decay ? (float)(1 - lr * a->o.weight_decay) : 1.0f;
        for (size_t j = 0; j < t[i].n; j++) {
            m[j] = b1 * m[j] + c1 * g[j];
            v[j] = b2 * v[j] + c2 * g[j] * g[j];
            w[j] = w[j] * keep - step_size * m[j] / (sqrtf(v[j]) / bc2_sqrt + eps);
        }
        off += t[i].n;
    }
}

/* ---- one training step ---- */

int lm_train_step(lm_model *m, lm_work *w, lm_adamw *a, const int32_t *tokens, int B, int T, int accum,
                  double lr, double clip, double *loss, double *grad_norm) {
    lm_tensor *t;
    size_t nt = lm_model_tensors(m, &t);
    double sum = 0;
    lm_zero_grad(m);
    for (int i = 0; i < accum; i++) {
        double l;
        const int32_t *mb = tokens + (size_t)i * B * (T + 1);
        if (lm_loss_grad(m, w, mb, B, T, 1.0f / (float)accum, &l) != SF_OK) return SF_ERR;
        sum += l;
    }
    *loss = sum / accum;
    if (!isfinite(*loss)) return sf_fail("the training loss is %g at this step: lower lr (or check the data)", *loss);
    *grad_norm = lm_clip_grads(t, nt, clip);
    if (!isfinite(*grad_norm)) return sf_fail("the gradient norm is %g at this step: lower lr", *grad_norm);
    lm_adamw_step(a, t, nt, lr);
    return SF_OK;
}

/* ---- initialisation ---- */

uint64_t lm_splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* FNV-1a of a tensor's name: its stream of normals does not move when tensors are added or reordered. */
static uint64_t name_key(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

/* A standard normal from two uniforms in (0, 1] of 53 bits (Box-Muller, the cosine half). */
static double normal_at(uint64_t key, uint64_t j) {
    uint64_t r1 = lm_splitmix64(key ^ lm_splitmix64(2 * j)), r2 = lm_splitmix64(key ^ lm_splitmix64(2 * j + 1));
    double u1 = ((r1 >> 11) + 1) * 0x1.0p-53, u2 = (r2 >> 11) * 0x1.0p-53;
    return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

void lm_init_weights(lm_tensor *t, size_t nt, uint64_t seed, double std) {
    for (size_t i = 0; i < nt; i++) {
        if (t[i].ndim == 1) {
            for (size_t j = 0; j < t[i].n; j++) t[i].w[j] = 1.0f;
            continue;
        }
        uint64_t key = lm_splitmix64(seed) ^ name_key(t[i].name);
        for (size_t j = 0; j < t[i].n; j++) t[i].w[j] = (float)(std * normal_at(key, j));
    }
}
