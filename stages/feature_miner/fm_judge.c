/* fm_judge.c — see fm_judge.h. */
#include "fm_judge.h"

int fm_judge(const fm_token_act *ex, int n, const fm_judge_params *p, fm_judgement *out) {
    for (int r = 0; r < FM_RULE_COUNT; r++) fm_feature_lang((fm_rule)r, ex, n, p->lang_share, &out->lang[r]);
    return fm_gran_judge(ex, n, &p->gran, &out->gran);
}
