/* fm_judge.c — see fm_judge.h. */
#include "fm_judge.h"

#include <stdlib.h>

void fm_judge(const fm_token_act *ex, int n, const fm_judge_params *p, fm_judgement *out) {
    for (int r = 0; r < FM_RULE_COUNT; r++) fm_feature_lang((fm_rule)r, ex, n, p->lang_share, &out->lang[r]);
    const char **peaks = malloc((size_t)(n > 0 ? n : 1) * sizeof *peaks);
    if (!peaks) abort();
    for (int e = 0; e < n; e++) {
        int peak = fm_token_act_peak(&ex[e]);
        peaks[e] = peak >= 0 ? ex[e].tok[peak] : "";
    }
    fm_granularity(peaks, n, p->min_examples, p->token_share, &out->gran);
    free(peaks);
}
