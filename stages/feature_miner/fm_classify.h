/* fm_classify.h — `saeflow classify DIR... [--json]`: the language (every rule) and granularity
 * of every feature file in the paper's schema (llm-jp-sae's released docs/data/<ckpt>/<id>.json,
 * and feature_miner's features/<id>.json), judged by fm_judge exactly as the miner judges its own. */
#ifndef FM_CLASSIFY_H
#define FM_CLASSIFY_H

#include <jansson.h>

#include "fm_token_act.h"

#define FM_CLASSIFY_ARGS "DIR... [--json]"

/* One feature file's examples, pointing into its JSON (valid while root lives). */
typedef struct fm_feature_file {
    json_t *root;
    int n;
    fm_token_act *ex;
    const char **tok;
    int *act;
} fm_feature_file;

/* Reads and checks a feature file in the paper's schema ({"token_act": [[[token, act], ...], ...]}):
 * SF_OK, or SF_ERR with sf_fail("PATH...: problem"). Free with fm_feature_file_free either way. */
int fm_feature_file_load(const char *path, fm_feature_file *f);
void fm_feature_file_free(fm_feature_file *f);

int fm_classify_main(int argc, char **argv);

#endif
