/* fm_token_act.h — one feature example in the paper's `token_act` form, the input of the
 * language and granularity judges.
 *
 * The paper's feature files (llm-jp-sae's collect_feature_pattern.py, and our features/<id>.json)
 * store each example as a list of [token display string, quantised activation] pairs, the
 * activation quantised ceil(10 * a / max) against the feature's maximum (0 where it is off). Both
 * `saeflow classify` (reading such files) and the feature miner (from the examples it kept) judge a
 * feature from this form, so both give the same verdict for the same file. */
#ifndef FM_TOKEN_ACT_H
#define FM_TOKEN_ACT_H

typedef struct fm_token_act {
    int n;                  /* tokens in the example */
    const char *const *tok; /* [n] display strings ("▁" shown as a space, bytes as "<0xNN>") */
    const int *act;         /* [n] quantised activations, 0..10 */
} fm_token_act;

/* The example's peak: the first token of the highest activation (Python's max over range(n) keeps
 * the first of ties, as the paper's code does). -1 for an empty example. */
static inline int fm_token_act_peak(const fm_token_act *ex) {
    int peak = ex->n > 0 ? 0 : -1;
    for (int i = 1; i < ex->n; i++)
        if (ex->act[i] > ex->act[peak]) peak = i;
    return peak;
}

#endif
