/* fm_gran.h — the granularity of a feature (token, concept, uninterpretable, few), judged from its
 * examples in the paper's token_act form, with no LLM.
 *
 * The paper's authors labelled 598 features by hand (token-level, concept-level, uninterpretable).
 * This rule reproduces those labels from four statistics of a feature's examples, with thresholds
 * calibrated on the paper's checkpoints 10, 1000 and 100000 only (README: "Granularity"):
 *
 *   n < min_examples                                        -> few (too few examples to judge)
 *   top_share >= token_share                                -> token
 *   distinct_share >= distinct_share (peaks scattered), and
 *     context_share < context_share (no shared neighbour), and
 *     active_share  < dense_share (not firing over whole examples) -> uninterpretable
 *   otherwise                                               -> concept
 *
 * An example's peak is its first token with the highest quantised activation (the paper's
 * choice for its language rule); tokens are compared normalised (NFKC case-folded, whitespace
 * stripped). Both the feature miner and `saeflow classify` call fm_gran_judge, so a feature gets the
 * same verdict from its examples in memory and from its written file. */
#ifndef FM_GRAN_H
#define FM_GRAN_H

#include "fm_token_act.h"

typedef enum fm_gran {
    FM_GRAN_TOKEN = 0,
    FM_GRAN_CONCEPT,
    FM_GRAN_UNINTERPRETABLE,
    FM_GRAN_FEW,
    FM_GRAN_COUNT
} fm_gran;

extern const char *const fm_gran_names[FM_GRAN_COUNT]; /* "token", "concept", "uninterpretable", "few" */

typedef struct fm_gran_params {
    int min_examples;      /* fewer examples: few */
    double token_share;    /* token-level if one peak token takes at least this share of examples */
    double distinct_share; /* distinct peak tokens per example at or above which peaks are scattered */
    double context_share;  /* a neighbour of the peak shared by this share of examples makes it a concept */
    double dense_share;    /* firing on this share of an example's tokens (on average) makes it a concept */
} fm_gran_params;

/* The calibrated values (README: "Granularity"), also the feature miner's parameter defaults. */
#define FM_GRAN_MIN_EXAMPLES 5
#define FM_GRAN_TOKEN_SHARE 0.5
#define FM_GRAN_DISTINCT_SHARE 0.65
#define FM_GRAN_CONTEXT_SHARE 0.7
#define FM_GRAN_DENSE_SHARE 0.9
extern const fm_gran_params fm_gran_defaults;

/* SF_OK, or SF_ERR (sf_fail naming the parameter) unless min_examples >= 0 and the shares are in [0, 1]. */
int fm_gran_check_params(const fm_gran_params *p);

typedef struct fm_gran_stats {
    int n;                 /* examples */
    int distinct;          /* distinct normalised peak tokens */
    double top_share;      /* share of examples peaking on the most common peak token */
    double distinct_share; /* distinct / n */
    double context_share;  /* largest share of examples with the same token just before (or just after) the peak */
    double active_share;   /* mean over examples of the share of tokens with activation > 0 */
    char top_token[64];    /* the most common peak token, normalised (truncated to fit) */
    fm_gran gran;
} fm_gran_stats;

/* Judges a feature from its n examples (n = 0: few). SF_OK, or SF_ERR (sf_fail) for an example
 * without tokens, a NULL token or an activation outside 0..10. */
int fm_gran_judge(const fm_token_act *ex, int n, const fm_gran_params *p, fm_gran_stats *out);

#endif
