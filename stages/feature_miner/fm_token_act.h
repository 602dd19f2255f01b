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

#endif
