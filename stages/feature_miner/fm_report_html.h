/* fm_report_html.h — what `saeflow report` knows about one checkpoint's run (fm_run, filled by
 * fm_report.c) and the writer of its report.html (fm_report_html.c): tables and inline-SVG line
 * charts over training tokens, with no scripts or fonts from the network. */
#ifndef FM_REPORT_HTML_H
#define FM_REPORT_HTML_H

#include <stddef.h>

#include <jansson.h>

#include "fm_gran.h"
#include "fm_lang.h"
#include "fm_output.h"
#include "fm_report.h"

typedef struct fm_run {
    char *dir, *name, *sae;
    json_t *summary;
    int n_features, alive;
    double lang[FM_VOTES][FM_FLANG_COUNT]; /* shares of alive features, per fm_vote_names */
    double gran[FM_GRAN_COUNT];
    double fvu, dead; /* NAN if no metrics were found */
    char *metrics_src; /* the file they came from */
    double loss, loss_sae; /* the LM's loss on the mined tokens, and with the SAE spliced in; NAN if none */
    char *loss_src;
    double pairs;     /* share of alive features cross-lingual (pairs); NAN if the run has no pairs test */
    char *pairs_src;
    /* Where the checkpoint sits in training, from the suite's checkpoints.json beside the model
     * directory the summary names (<model>/../checkpoints.json); NAN / -1 when unknown. */
    double tokens_seen, parameters;
    long step;
    char *suite_src;
    fm_match match;   /* with the previous run (not for the first) */
    int matched;
} fm_run;

/* "n/a" for NAN, else v printed with fmt. */
void fm_report_fmt_num(char *buf, size_t cap, double v, const char *fmt);
/* "3.985 (+0.036)": the LM loss and its change with the SAE, as README's table shows them. */
void fm_report_fmt_loss(char *buf, size_t cap, const fm_run *x);

/* OUT/report.html: the table (checkpoint names linked to each run's dashboard, RUN_DIR/index.html,
 * when it exists), a glossary and the charts. SF_OK or SF_ERR (sf_fail naming the file). */
int fm_report_write_html(const char *out, const fm_run *runs, int n, double thr, int do_match);

/* OUT/match-<r>.html: every alive feature of run a (r-1) with its closest feature in run b (r) and
 * their cosine (partner/cos as fm_match_decoders gives them, n of each), most similar first, each
 * linked to its page in its run's dashboard. SF_OK or SF_ERR. */
int fm_report_write_match_html(const char *out, int r, const fm_run *a, const fm_run *b, double thr, int n,
                               const int *partner, const float *cos);

#endif
