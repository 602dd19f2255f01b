/* fm_judge.h — a feature's verdicts from its examples in token_act form: its language under every
 * rule and its granularity. The one place both the miner (on the token_act it writes) and
 * `saeflow classify` (on feature files) judge a feature, so the two always agree on the same file. */
#ifndef FM_JUDGE_H
#define FM_JUDGE_H

#include "fm_gran.h"
#include "fm_lang.h"
#include "fm_token_act.h"

typedef struct fm_judge_params {
    double lang_share;   /* language vote, strictly more than (paper: 0.9) */
    fm_gran_params gran; /* the granularity judge's thresholds (fm_gran.h) */
} fm_judge_params;

/* The defaults of the miner's parameters (fm_stage.c spells them as strings with FM_STR), which
 * `saeflow classify` uses. */
#define FM_DEFAULT_LANG_SHARE 0.9
#define FM_JUDGE_DEFAULTS                                                                                    \
    ((fm_judge_params){.lang_share = FM_DEFAULT_LANG_SHARE,                                                   \
                       .gran = {FM_GRAN_MIN_EXAMPLES, FM_GRAN_TOKEN_SHARE, FM_GRAN_DISTINCT_SHARE,           \
                                FM_GRAN_CONTEXT_SHARE, FM_GRAN_DENSE_SHARE}})
#define FM_STR_(x) #x
#define FM_STR(x) FM_STR_(x)

typedef struct fm_judgement {
    fm_lang_vote lang[FM_RULE_COUNT];
    fm_gran_stats gran;
} fm_judgement;

/* Judges the n examples ex[]. SF_OK, or SF_ERR (sf_fail) for a malformed example. */
int fm_judge(const fm_token_act *ex, int n, const fm_judge_params *p, fm_judgement *out);

#endif
