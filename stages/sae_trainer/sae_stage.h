/* sae_stage.h — what the sae_trainer and sae_eval stages share (not part of sae_lib): the rows of an
 * activations message, and sae_eval's stage definition for the plugin's list (sae_stage.c). */
#ifndef SAE_STAGE_H
#define SAE_STAGE_H

#include "saeflow.h"
#include "sf_kinds.h"

/* The rows of a message's activation tensor: [B, T, d] or [N, d], float dtypes only, and the
 * message's other fields (sf_read_activations). */
typedef struct act_rows {
    sf_acts_msg m;
    sf_tensor t; /* m.acts */
    int64_t rows, d, seq_len;
} act_rows;

int sae_get_rows(const sf_msg *msg, const char *field, act_rows *a);
/* count rows from row first, as float32, into dst[count][d]. */
void sae_rows_to_f32(const act_rows *a, int64_t first, int64_t count, float *dst);
/* True if the message belongs to the wanted split ("" wants every message). */
int sae_split_matches(const act_rows *a, const char *want);

extern const sf_stage_def sae_eval_def;

#endif
