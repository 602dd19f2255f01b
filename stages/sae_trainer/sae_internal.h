/* sae_internal.h — helpers shared by sae_model.c and sae_train.c (not part of the sae_lib API). */
#ifndef SAE_INTERNAL_H
#define SAE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "sae.h"

/* Rows per encoder sgemm: bounds the dense pre-activation buffer to SAE_CHUNK * n floats. */
#define SAE_CHUNK 256

/* 64-byte aligned, zeroed; NULL on failure. Free with free(). */
float *sae_alloc_floats(size_t count);

/* Pre-activations of rows xc[rows][d] (already normalised, b_dec subtracted) into pre[rows][n]:
 * pre = xc W_enc^T + b_enc (one sgemm). rows <= SAE_CHUNK. */
void sae_preacts(const sae_model *m, const float *xc, int rows, float *pre);

/* The k largest values of pre[0..n) that are > 0 and whose latent is allowed (mask NULL: all;
 * else mask[i] != 0), sorted by value descending, unused slots idx -1 / val 0. Returns how many. */
int sae_topk_row(const float *pre, int n, int k, const uint8_t *mask, int32_t *idx, float *val);

/* Unit-norm row w[d] (norm + FLT_EPSILON, as the paper's set_decoder_norm_to_unit_norm). */
void sae_renorm_row(float *w, int d);

#endif
