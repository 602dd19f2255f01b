/* fm_gran_judge FILE... — runs the granularity judge (fm_gran.c, default parameters) on feature files
 * in the paper's schema (a JSON object whose `token_act` lists examples, each a list of
 * [token string, quantised activation]) and prints one JSON object per file:
 *   {"file", "class", "n", "distinct", "top_share", "distinct_share", "context_share", "active_share", "top_token"}
 * tools/paper_granularity.py uses it to score the C judge against the paper's hand labels. Files
 * are read by `saeflow classify`'s reader (fm_feature_file_load). Exit 1 (naming the file) on a
 * file that is not in that schema. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "fm_classify.h"
#include "fm_gran.h"
#include "saeflow.h"

/* Judges one file; prints its line. 0 / 1. */
static int judge_file(const char *path) {
    fm_feature_file f;
    fm_gran_stats g;
    int rc = 0;
    if (fm_feature_file_load(path, &f) != SF_OK || fm_gran_judge(f.ex, f.n, &fm_gran_defaults, &g) != SF_OK) {
        fprintf(stderr, "fm_gran_judge: %s\n", sf_last_error());
        rc = 1;
    } else {
        json_t *o = json_pack("{s:s, s:s, s:i, s:i, s:f, s:f, s:f, s:f, s:s}", "file", path, "class",
                              fm_gran_names[g.gran], "n", g.n, "distinct", g.distinct, "top_share", g.top_share,
                              "distinct_share", g.distinct_share, "context_share", g.context_share, "active_share",
                              g.active_share, "top_token", g.top_token);
        char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
        if (!line) {
            fprintf(stderr, "fm_gran_judge: %s: cannot print the result (file name or top token not UTF-8)\n", path);
            rc = 1;
        } else {
            puts(line);
        }
        free(line);
        json_decref(o);
    }
    fm_feature_file_free(&f);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: fm_gran_judge FILE...\n");
        return 2;
    }
    int rc = 0;
    for (int i = 1; i < argc; i++) rc |= judge_file(argv[i]);
    return rc;
}
