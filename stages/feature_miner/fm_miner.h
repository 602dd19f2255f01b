/* fm_miner.h — streaming statistics and example selection for every SAE feature, in bounded
 * memory.
 *
 * Input: one sequence at a time, its T tokens and each token's top-k SAE latents (index, value).
 * Per feature it keeps:
 *  - max, firing count (tokens with value > 0), sum of values, sequences fired in;
 *  - a histogram of the positive values whose bin width doubles when a value falls past the last
 *    bin (pairs of bins merge), so its range follows the max without a first pass;
 *  - a heap of at most top_n examples (one example = one sequence, with that feature's value at
 *    each of its tokens, kept sparse), ordered by the sequence's peak value;
 *  - examples stratified by activation interval (as sae_vis / Neuronpedia dashboards show them):
 *    per interval of the peak's range, a uniform sample without replacement of `reservoir` of the
 *    sequences whose peak falls in it, by bottom-k sampling (each firing sequence draws a uniform
 *    random key; an interval keeps the examples of smallest key).
 *
 * The paper collects examples in two passes: pass 1 finds each feature's max, pass 2 keeps the
 * first N sequences (stream order) whose value exceeds frac * max. One pass cannot know the max
 * ahead, so by default the heap keeps the N sequences of highest peak; those with peak > frac*max
 * at the end are exactly the paper's set whenever at most N sequences qualify, and the N strongest
 * of them otherwise (the paper then takes the N earliest). Given the maxima of an earlier pass
 * (known_max), the heap keeps the earliest N sequences with peak > frac * known_max instead:
 * exactly the paper's pass 2.
 *
 * The intervals: with a known max, the FM_INTERVALS intervals [q*max/Q, (q+1)*max/Q) (peaks above
 * the known max go to the last). Without one, 2*Q buckets of [0, S) where S is the smallest power
 * of two above the max seen (so the max lies in the upper half): when a peak reaches S, S doubles
 * and bucket pairs merge, keeping the smallest keys of their union, which is again the bottom-k of
 * the merged bucket, so the sample stays exact.
 *
 * Sequences are stored once and shared by reference between all examples that keep them. */
#ifndef FM_MINER_H
#define FM_MINER_H

#include <stddef.h>
#include <stdint.h>

#define FM_INTERVALS 10 /* activation intervals examples are sampled from (sae_vis: 10) */

typedef struct fm_seq {
    int32_t *tokens;
    int T;
    int64_t doc_id;
    int32_t pos;
    int label; /* index into the miner's label table */
    uint32_t refs;
} fm_seq;

typedef struct fm_example {
    double key;      /* heap: peak, or -stream index in known-max mode; interval sample: random */
    float peak;      /* the feature's largest value in the sequence */
    int peak_pos;    /* its token position */
    uint64_t seq_no; /* the sequence's index in the stream */
    fm_seq *seq;
    int nnz;         /* tokens where the feature fired */
    int32_t *pos;    /* [nnz] their positions, ascending */
    float *val;      /* [nnz] its values there */
} fm_example;

typedef struct fm_hist {
    double width;     /* 0 until the first value */
    uint64_t *counts; /* [nbins]: bin i covers [i*width, (i+1)*width) */
} fm_hist;

typedef struct fm_bucket {
    uint64_t seqs; /* sequences whose peak fell in this interval */
    int n;         /* examples kept of them, at most cfg.reservoir */
} fm_bucket;

typedef struct fm_feature {
    float max;
    uint64_t fired;  /* tokens with a positive value */
    uint64_t seqs;   /* sequences with a positive value */
    double sum;      /* of positive values */
    fm_hist hist;
    fm_example *top; /* min-heap of at most top_n on (key, -seq_no) */
    int n_top;
    double scale;     /* the intervals split [0, scale) into n_buckets equal parts */
    int n_buckets;    /* FM_INTERVALS with a known max, else 2 * FM_INTERVALS (scale a power of two) */
    fm_bucket *bk;    /* [n_buckets], allocated on the first firing */
    fm_example *res;  /* [n_buckets * reservoir]: interval b's examples from b * reservoir */
    int n_res;        /* examples kept over all intervals */
} fm_feature;

typedef struct fm_miner_cfg {
    int n_features;
    int top_n;           /* paper: 50 */
    int reservoir;       /* examples kept per activation interval; 0 for none */
    int hist_bins;       /* even */
    double frac;         /* paper: 0.7 */
    const float *known_max; /* [n_features] from an earlier pass, or NULL */
    uint64_t seed;       /* of the interval samples' keys */
} fm_miner_cfg;

typedef struct fm_miner {
    fm_miner_cfg cfg;
    fm_feature *f;
    uint64_t tokens, sequences;
    uint64_t nonfinite; /* latent values skipped for being NaN or Inf */
    char **labels; /* interned corpus labels */
    int n_labels;
    uint64_t rng;
    uint64_t bytes; /* held by examples, sequences and histograms */
    /* per-sequence scratch */
    fm_example *merge_buf; /* [2 * reservoir] */
    struct fm_hit *hits;
    size_t hits_cap;
    int32_t *pos_buf;
    float *val_buf;
    int buf_cap;
} fm_miner;

fm_miner *fm_miner_new(const fm_miner_cfg *cfg);
void fm_miner_free(fm_miner *m);

/* One sequence: tokens [T], and per token k latents idx [T*k] with values val [T*k] (values
 * <= 0 are ignored, NaN and Inf skipped and counted in nonfinite, indices must be < n_features).
 * SF_ERR on a bad index. */
int fm_miner_add(fm_miner *m, const int32_t *tokens, int T, const int32_t *idx, const float *val, int k,
                 int64_t doc_id, int32_t pos, const char *label, int label_len);

/* Threshold for the paper's example set of feature i: frac * (known max, or the max seen). */
float fm_miner_threshold(const fm_miner *m, int i);

/* Feature i's interval b: its examples (m->f[i].bk[b].n of them), and its bounds [lo, hi). */
fm_example *fm_miner_interval(const fm_miner *m, int i, int b, double *lo, double *hi);

/* Sorts feature i's kept examples (the heap, and each interval's) by descending peak, ties by
 * stream order. They are no longer a heap or a bottom-k after this: call once at the end. */
void fm_miner_sort(fm_miner *m, int i);

/* Bytes held now (heaps, interval samples, sequences, histograms), for the memory test. */
uint64_t fm_miner_bytes(const fm_miner *m);

#endif
