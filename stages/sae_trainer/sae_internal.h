/* sae_internal.h — helpers shared by sae_model.c, sae_files.c and sae_train.c (not part of the sae_lib API). */
#ifndef SAE_INTERNAL_H
#define SAE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "sae.h"

/* Generous bounds so a corrupt config cannot make us allocate absurd amounts. */
#define SAE_MAX_D (1 << 16)
#define SAE_MAX_N (1 << 22)

/* Rows per encoder sgemm: as many as fit 2^25 pre-activations (128 MiB), so the big sgemm
 * repacks W_enc rarely, yet memory stays bounded; at least 64, at most 4096 rows. */
static inline int sae_chunk_rows(int n) {
    int c = (1 << 25) / n;
    return c < 64 ? 64 : c > 4096 ? 4096 : c;
}

/* The hot loops are compiled for AVX-512 and AVX2 too, picked at load time (the build itself
 * targets baseline x86-64). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SAE_SIMD __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SAE_SIMD
#endif

/* 64-byte aligned, zeroed; NULL on failure. Free with free(). */
float *sae_alloc_floats(size_t count);

/* Pre-activations without the encoder bias of rows xc[rows][d] (already normalised, b_dec
 * subtracted) into pre[rows][n]: pre = xc W_enc^T; sae_topk_row adds b_enc. The rows come in
 * blocks of `block` rows (the last may be shorter), computed apart: a row's result depends only on
 * its block, never on the other blocks of the call or on the thread count (see sae_model.c). */
void sae_preacts(const sae_model *m, const float *xc, int rows, int block, float *pre);

/* The k largest values of pre[i] + bias[i], i < n, that are > 0 and whose latent is allowed (mask NULL: all;
 * else mask[i] != 0), sorted by value descending, unused slots idx -1 / val 0. Returns how many. */
int sae_topk_row(const float *pre, const float *bias, int n, int k, const uint8_t *mask, int32_t *idx, float *val);

/* Unit-norm row w[d] (norm + FLT_EPSILON, as the paper's set_decoder_norm_to_unit_norm). */
void sae_renorm_row(float *w, int d);

/* Runs fn(ctx, tid, begin, end) over [0, n) in pieces of grain items on the pool's threads (the
 * caller is tid 0; tid < sae_par_threads()). Results must not depend on which thread runs which
 * piece: that keeps every computation deterministic. */
typedef void (*sae_par_fn)(void *ctx, int tid, int64_t begin, int64_t end);
void sae_parallel_for(int64_t n, int64_t grain, sae_par_fn fn, void *ctx);
int sae_par_threads(void);

#endif
