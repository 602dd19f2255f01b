/* sf_params.h — parameter values against their declared ranges (sf_param_def.range), and the closest
 * known name to a misspelt one (for "did you mean" hints on parameters, stage types, variables). */
#ifndef SF_PARAMS_H
#define SF_PARAMS_H

#include <stddef.h>

#include "saeflow.h"

/* Whether pd->range is well formed for pd's type (NULL is): SF_OK, or SF_ERR (sf_fail naming it). */
SF_EXPORT int sf_range_valid(const sf_param_def *pd);
/* Whether v, already of pd's type, lies within pd->range: SF_OK, or SF_ERR with sf_last_error()
 * saying "must be in [1, 64], not 0" or "must be one of chunk|truncate, not 'x' (did you mean ...)". */
SF_EXPORT int sf_range_check(const sf_param_def *pd, const char *v);
/* "in [1, 64]" / "one of a|b": how a range reads in messages and listings, into buf[cap]. */
SF_EXPORT const char *sf_range_text(const sf_param_def *pd, char *buf, size_t cap);

/* The candidate closest to word by edit distance, if close enough to be a likely typo (at most a
 * third of the word's letters, at least 1, differ); else NULL. next(i) returns the i-th candidate
 * or NULL after the last. */
SF_EXPORT const char *sf_closest(const char *word, const char *(*next)(void *arg, size_t i), void *arg);

#endif
