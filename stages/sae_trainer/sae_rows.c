/* sae_rows.c — the rows of an activations message as the sae_trainer and sae_eval stages read them. */
#include "sae_stage.h"

int sae_get_rows(const sf_msg *msg, const char *field, act_rows *a) {
    if (sf_read_activations(msg, field, 0, &a->m) != SF_OK) return SF_ERR;
    a->t = a->m.acts;
    a->d = a->m.d;
    a->seq_len = a->t.ndim == 3 ? a->m.seq.T : 0;
    a->rows = a->m.seq.B * a->m.seq.T;
    return SF_OK;
}

void sae_rows_to_f32(const act_rows *a, int64_t first, int64_t count, float *dst) {
    size_t es = sf_dtype_size(a->t.dtype);
    sf_convert_to_f32(dst, (const char *)a->t.data + (size_t)first * a->d * es, a->t.dtype,
                      (size_t)(count * a->d));
}

int sae_split_matches(const act_rows *a, const char *want) { return !*want || sf_strv_eq(a->m.seq.split, want); }
