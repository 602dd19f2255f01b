/* fm_pairs.h — "cross-lingual (pairs)": our test of whether an SAE feature fires on both sides of
 * translation pairs more often than chance, from a corpus whose rows name their translation
 * (`pair`: the bundled Debian corpus pairs 877 English and Japanese sections). Not the paper's
 * test (it has none from pairs); the paper's language classes come from fm_lang.
 *
 * Per paired section mined, each feature's summary is its maximum top-k output over the section's
 * tokens that are exclusive to its language: that no mined paired section of the other language
 * contains (so a command, number or path copied verbatim into the translation cannot make a
 * feature "cross-lingual"; the set depends on the stream, not on the pairing, so shuffling the
 * pairs stays a valid null); the feature "fires on a side" when that maximum is > 0. The statistic of a
 * feature is C, the number of pairs where it fires on both sides. The null shuffles the pairing:
 * side B of pair pi(i) is matched with side A of pair i, for a seeded number of random
 * permutations pi; given how many sections fire on each side (a and b of n pairs), the null
 * count is hypergeometric (n, a, b), so its upper tail p_exact = P(X >= C) is computed exactly
 * and the permutations estimate the same null (mean, sd, 99.9th percentile, empirical p) as a
 * check and for display. A feature is cross-lingual (pairs) when p_exact <= alpha / F_tested,
 * F_tested the features that fire on at least one section of each side (Bonferroni over them).
 * The same count and exact tail over all mined tokens (shared ones included) are reported beside
 * it (all_tokens), to show how much verbatim shared tokens alone would add.
 *
 * Runtime-independent: the stage feeds it sequences (fm_pairs_add) and writes its JSON. */
#ifndef FM_PAIRS_H
#define FM_PAIRS_H

#include <jansson.h>
#include <stdint.h>

typedef struct fm_pairs_cfg {
    int n_features;
    int permutations; /* shuffled pairings of the null, >= 1 */
    uint64_t seed;    /* of the permutations */
    double alpha;     /* family-wise error over the tested features, e.g. 0.01 */
} fm_pairs_cfg;

/* One feature's result (after fm_pairs_finish). */
typedef struct fm_pairs_stat {
    int fires[2];      /* pairs whose side 0 / side 1 fires (a, b) */
    int both;          /* C */
    double expected;   /* a b / n, the null's exact mean */
    double null_mean, null_sd, null_q999; /* over the permutations */
    double p_perm;     /* (1 + #{permuted counts >= C}) / (permutations + 1) */
    double p_exact;    /* hypergeometric P(X >= C) */
    double z;          /* (C - null_mean) / null_sd, NaN when null_sd == 0 */
    double mean_max[2];/* mean over pairs of the side's section maximum */
    int tested;        /* fires on both sides somewhere (a > 0 and b > 0) */
    int cross;         /* cross-lingual (pairs) */
    /* the same over all mined tokens, shared ones included (no permutations) */
    int all_fires[2], all_both, all_cross;
    double all_p_exact;
} fm_pairs_stat;

/* What a paired section keeps until the end of the stream: its tokens, and its positive top-k
 * outputs with the token they are at. */
typedef struct fm_pairs_ent {
    int32_t tok, feat;
    float val;
} fm_pairs_ent;

typedef struct fm_pairs_sec {
    int seen;
    int32_t *tok; /* [n_tok] */
    size_t n_tok, cap_tok;
    fm_pairs_ent *ent; /* [n_ent] */
    size_t n_ent, cap_ent;
} fm_pairs_sec;

typedef struct fm_pairs {
    fm_pairs_cfg cfg;
    char *path;
    char *labels[2];     /* the two languages, side 0 first (byte order: "en" before "ja") */
    int n_pairs;         /* in the corpus */
    uint64_t *doc[2];    /* [n_pairs]: doc_id of each side (text_source's id: label NUL id) */
    uint64_t *keys;      /* open addressing doc_id -> slot, [cap] (0 = empty; ids are < 2^63, +1 stored) */
    int32_t *slot_of;    /* [cap]: pair * 2 + side */
    size_t cap;
    fm_pairs_sec *sec;   /* [2 * n_pairs]: pair k's side s at 2 k + s; pairs in the byte order of side 0's id */
    uint64_t seqs_paired, seqs_other; /* sequences of paired sections / of other documents */
    /* after fm_pairs_finish */
    int n_mined;         /* pairs with both sides mined */
    int sides_alone;     /* paired sections mined without their other side */
    int n_tested, n_cross;
    double threshold;    /* alpha / n_tested: p_exact must not exceed it */
    int n_tested_all, n_cross_all; /* over all tokens */
    int tokens_distinct[2], tokens_exclusive[2]; /* distinct tokens per side, and those the other lacks */
    double threshold_all;
    fm_pairs_stat *stat; /* [n_features] */
} fm_pairs;

/* Reads the pairs of a JSON Lines corpus (gzip or not; or a comma-separated list of files, read as
 * one) with string fields `id` and `lang` and `pair` (the id of the other side, or null), as
 * data/corpus/debian-docs.jsonl.gz. The two
 * sides must name each other and have the two languages of every other pair. A corpus without
 * any pair is an error saying so. NULL with sf_fail's message. */
fm_pairs *fm_pairs_load(const char *path, const fm_pairs_cfg *cfg);
void fm_pairs_free(fm_pairs *p);

/* One sequence of document doc_id: T tokens and their k latents (idx, val) as fm_miner_add takes
 * them. Sequences of documents that are no side of a pair are counted and ignored. SF_OK / SF_ERR. */
int fm_pairs_add(fm_pairs *p, int64_t doc_id, const int32_t *tokens, const int32_t *idx, const float *val, int T, int k);

/* The statistics and the null. Fails with a message when the stream held both sides of no pair,
 * or of too few for the rule to call any feature at all (the smallest p_exact n pairs allow,
 * 1 / C(n, n/2), above alpha / F_tested). SF_OK / SF_ERR. */
int fm_pairs_finish(fm_pairs *p);

/* Hypergeometric upper tail P(X >= c), X the number of marked items among b drawn without
 * replacement from n of which a are marked (a, b <= n). */
double fm_pairs_hyper_tail(int n, int a, int b, int c);

/* The i-th permutation's pi over [0, n) (fm_pairs.c documents the generator, so tests can redo it). */
void fm_pairs_permutation(uint64_t seed, int index, int n, int32_t *pi);

/* JSON: the run's block for summary.json (alive: features alive in the run, the share's
 * denominator), and a feature's block for its file and summary row. New references. */
json_t *fm_pairs_summary_json(const fm_pairs *p, int alive);
json_t *fm_pairs_feature_json(const fm_pairs *p, int i);

#endif
