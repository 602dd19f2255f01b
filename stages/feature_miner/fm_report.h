/* fm_report.h — `saeflow report RUN_DIR...`: the paper's cross-checkpoint tables and figures from
 * feature_miner run directories (one per checkpoint, in training order). */
#ifndef FM_REPORT_H
#define FM_REPORT_H

#define FM_REPORT_ARGS "RUN_DIR... [--out DIR] [--match-threshold 0.7] [--no-match]"

int fm_report_main(int argc, char **argv);

/* Feature matching between two SAEs by decoder cosine similarity: a feature of A persists if
 * some feature of B has cosine >= threshold with its decoder direction, else it vanishes; a
 * feature of B appears if no feature of A reaches the threshold. Only rows with alive == NULL or
 * alive[i] take part. W_* are [n][d]. partner[n_a] / partner_cos[n_a] receive each A feature's
 * closest B feature and its cosine (-1 / NAN for rows that do not take part). SF_OK, or SF_ERR
 * (sf_fail naming what did not fit) when out of memory. */
typedef struct fm_match {
    int persist, vanish, appear;
    int same_index;        /* persisting features whose closest B feature has the same index */
    double mean_best_a;    /* mean over A's features of their best cosine in B */
    double chance_persist; /* persist expected if A's and B's directions were independent and
                            * uniformly random (as two SAEs' initialisations from different seeds) */
} fm_match;

/* P(cos >= t) for two independent uniformly random directions in R^d. */
double fm_random_cos_tail(int d, double t);

int fm_match_decoders(const float *W_a, int n_a, const unsigned char *alive_a, const float *W_b, int n_b,
                      const unsigned char *alive_b, int d, double threshold, fm_match *out, int *partner,
                      float *partner_cos);

#endif
