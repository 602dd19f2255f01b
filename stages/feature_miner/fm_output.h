/* fm_output.h — what the miner writes at the end: per-feature JSON (the paper's schema plus our
 * fields), summary.json, and an offline HTML dashboard (index.html + features/<id>.html). */
#ifndef FM_OUTPUT_H
#define FM_OUTPUT_H

#include <stdint.h>
#include <stdio.h>

#include "fm_gran.h"
#include "fm_lang.h"
#include "fm_miner.h"
#include "fm_pairs.h"
#include "fm_vocab.h"

/* Logit effects: per feature, the n_top tokens its decoder direction promotes and suppresses
 * most through the unembedding. */
typedef struct fm_logits {
    int n_top;
    int32_t *pos_id, *neg_id; /* [n_features][n_top], -1 when unused */
    float *pos_val, *neg_val;
} fm_logits;

typedef struct fm_info {
    const char *checkpoint, *hook, *model, *sae_dir;
    int d, k;
    fm_gran_params gran; /* granularity judge */
    double lang_share; /* language vote, paper 0.9 */
    int html;          /* write the dashboard too */
    int neuronpedia;   /* and neuronpedia/<id>.json */
    int threads;       /* writing the files; 0: one per CPU */
    const fm_pairs *pairs; /* finished cross-lingual (pairs) test, or NULL: a `pairs` block per feature and in the summary */
} fm_info;

/* Computes languages and granularity, writes every file into out_dir (created). Sorts the
 * miner's examples (fm_miner_sort). logits may be NULL. SF_OK / SF_ERR. */
int fm_write_outputs(const char *out_dir, fm_miner *m, const fm_vocab *v, const fm_info *info,
                     const fm_logits *logits);

/* The language verdicts of a feature, by these names in the JSON files: one per rule (fm_rule,
 * same index), then the corpus label's. */
enum { FM_VOTE_LABEL = FM_RULE_COUNT, FM_VOTES };
extern const char *const fm_vote_names[FM_VOTES]; /* "paper", "ascii", "script", "label" */

/* s escaped for HTML/SVG text and attribute values (a newline shows as ↵). */
void fm_html_text(FILE *fp, const char *s);

#endif
