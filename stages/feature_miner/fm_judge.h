/* fm_judge.h — a feature's verdicts from its examples in token_act form: its language under every
 * rule and its granularity. The one place both the miner (on the token_act it writes) and
 * `saeflow classify` (on feature files) judge a feature, so the two always agree on the same file. */
#ifndef FM_JUDGE_H
#define FM_JUDGE_H

#include "fm_lang.h"
#include "fm_token_act.h"

typedef struct fm_judge_params {
    double lang_share;  /* language vote, strictly more than (paper: 0.9) */
    int min_examples;   /* granularity rule */
    double token_share; /* granularity rule */
} fm_judge_params;

/* The miner's defaults, which `saeflow classify` uses. */
#define FM_JUDGE_DEFAULTS ((fm_judge_params){.lang_share = 0.9, .min_examples = 5, .token_share = 0.5})

typedef struct fm_judgement {
    fm_lang_vote lang[FM_RULE_COUNT];
    fm_gran_stats gran;
} fm_judgement;

/* Judges the n examples ex[]. */
void fm_judge(const fm_token_act *ex, int n, const fm_judge_params *p, fm_judgement *out);

#endif
