/* fm_logits.c — see fm_logits.h. */
#include "fm_logits.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow.h"
#ifdef FM_HAVE_FORWARD
#include "model.h"
#endif

enum { FM_LOGIT_CHUNK = 32 }; /* features per sgemm: 32 x vocab floats of scratch */

/* Keeps the n best (largest if sign > 0, else smallest) of a row, best first. */
static void select_extremes(const float *row, int vocab, int n, float sign, int32_t *ids, float *vals) {
    int have = 0;
    for (int v = 0; v < vocab; v++) {
        float x = sign * row[v];
        if (have == n && !(x > sign * vals[n - 1])) continue;
        int j = have < n ? have++ : n - 1;
        while (j > 0 && x > sign * vals[j - 1]) {
            ids[j] = ids[j - 1];
            vals[j] = vals[j - 1];
            j--;
        }
        ids[j] = v;
        vals[j] = row[v];
    }
    for (int j = have; j < n; j++) ids[j] = -1, vals[j] = 0;
}

int fm_logits_from(fm_logits *out, const float *W_dec, int n, int d, const unsigned char *alive,
                   const float *W_U, int vocab, const float *gain, int center, int n_top) {
    size_t cells = (size_t)n * (size_t)n_top;
    out->n_top = n_top;
    out->pos_id = malloc(cells * sizeof *out->pos_id);
    out->neg_id = malloc(cells * sizeof *out->neg_id);
    out->pos_val = calloc(cells, sizeof *out->pos_val);
    out->neg_val = calloc(cells, sizeof *out->neg_val);
    float *V = malloc((size_t)FM_LOGIT_CHUNK * (size_t)d * sizeof *V);
    float *C = malloc((size_t)FM_LOGIT_CHUNK * (size_t)vocab * sizeof *C);
    int *which = malloc(FM_LOGIT_CHUNK * sizeof *which);
    if (!out->pos_id || !out->neg_id || !out->pos_val || !out->neg_val || !V || !C || !which) {
        free(V), free(C), free(which);
        fm_logits_free(out);
        return sf_fail("logit effects: out of memory (%zu features x %d entries, %d x %d floats of logits)", (size_t)n, n_top,
                       FM_LOGIT_CHUNK, vocab);
    }
    memset(out->pos_id, 0xff, cells * sizeof *out->pos_id); /* -1: no entry (dead features) */
    memset(out->neg_id, 0xff, cells * sizeof *out->neg_id);
    for (int i0 = 0; i0 < n;) {
        int m = 0;
        for (; i0 < n && m < FM_LOGIT_CHUNK; i0++) {
            if (alive && !alive[i0]) continue;
            const float *w = W_dec + (size_t)i0 * d;
            double mean = 0;
            if (center)
                for (int j = 0; j < d; j++) mean += w[j] / d;
            for (int j = 0; j < d; j++) V[(size_t)m * d + j] = (float)(w[j] - mean) * (gain ? gain[j] : 1.f);
            which[m++] = i0;
        }
        if (!m) break;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, vocab, d, 1.f, V, d, W_U, d, 0.f, C, vocab);
        for (int r = 0; r < m; r++) {
            size_t at = (size_t)which[r] * n_top;
            select_extremes(C + (size_t)r * vocab, vocab, n_top, 1.f, out->pos_id + at, out->pos_val + at);
            select_extremes(C + (size_t)r * vocab, vocab, n_top, -1.f, out->neg_id + at, out->neg_val + at);
        }
    }
    free(V);
    free(C);
    free(which);
    return SF_OK;
}

int fm_logits_compute(fm_logits *out, const float *W_dec, int n, int d, const unsigned char *alive,
                      const char *model_dir, int n_top) {
#ifdef FM_HAVE_FORWARD
    fw_model *m = fw_model_load(model_dir, 0, 1);
    if (!m) return SF_ERR;
    if (m->cfg.d_model != d || !m->lm_head) {
        int dm = m->cfg.d_model;
        fw_model_free(m);
        return sf_fail("logit effects: model %s has width %d, the SAE %d (or no LM head)", model_dir, dm, d);
    }
    int rc = fm_logits_from(out, W_dec, n, d, alive, m->lm_head, m->cfg.vocab, m->lnf_w, m->cfg.norm == FW_LAYERNORM, n_top);
    fw_model_free(m);
    return rc;
#else
    (void)out, (void)W_dec, (void)n, (void)d, (void)alive, (void)n_top;
    return sf_fail("logit effects: this build has no model loader (stages/forward); cannot read %s", model_dir);
#endif
}

void fm_logits_free(fm_logits *lg) {
    free(lg->pos_id);
    free(lg->neg_id);
    free(lg->pos_val);
    free(lg->neg_val);
    memset(lg, 0, sizeof *lg);
}
