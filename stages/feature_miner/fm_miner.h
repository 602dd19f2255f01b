/* fm_miner.h — streaming statistics and example selection for every SAE feature, in bounded
 * memory.
 *
 * Input: one sequence at a time, its T tokens and each token's top-k SAE latents (index, value),
 * and for the paper's sampling every latent's pre-activation at each token.
 * Per feature it keeps:
 *  - max, firing count (tokens with value > 0), sum of values, sequences fired in;
 *  - a histogram of the positive values whose bin width doubles when a value falls past the last
 *    bin (pairs of bins merge), so its range follows the max without a first pass;
 *  - a heap of at most top_n examples (one example = one sequence, with that feature's value at
 *    each of its tokens, kept sparse), ordered as the sampling below says;
 *  - examples stratified by activation interval (as sae_vis / Neuronpedia dashboards show them):
 *    per interval of the peak's range, a uniform sample without replacement of `reservoir` of the
 *    sequences whose peak falls in it, by bottom-k sampling (each firing sequence draws a uniform
 *    random key; an interval keeps the examples of smallest key).
 *
 * Which sequences become a feature's examples (the heap of at most top_n), by cfg.sampling:
 *  - FM_SAMPLING_STRONGEST (one pass): the top_n sequences of highest peak. Examples store the
 *    feature's top-k output (0 at tokens where it is not among the k).
 *  - FM_SAMPLING_PAPER (the paper's pass 2; needs known_max, each feature's maximum encoder
 *    pre-activation from a first pass): the first top_n sequences in the shuffled order whose
 *    peak exceeds frac * known_max. The shuffled order is a seeded random permutation of the
 *    sequences, by a hash of (seed, doc_id, pos) (fm_order_key), the same whatever order the
 *    stream brings them in; the heap keeps the smallest keys. Examples store the ReLU of the
 *    feature's pre-activation at every token (fm_miner_add's pre), as the paper does.
 * A sequence's peak is always the feature's largest top-k output in it (the paper compares its
 * top-k activations with the threshold).
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
    double key;      /* heap: peak (strongest) or -order key (paper); interval sample: random */
    float peak;      /* the feature's largest value in the sequence */
    int peak_pos;    /* its token position */
    uint64_t seq_no; /* the sequence's index in the stream */
    fm_seq *seq;
    int nnz;         /* tokens where the stored value is positive */
    int32_t *pos;    /* [nnz] their positions, ascending */
    float *val;      /* [nnz] the values: top-k output (strongest) or ReLU(pre-activation) (paper) */
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

typedef enum fm_sampling { FM_SAMPLING_STRONGEST = 0, FM_SAMPLING_PAPER = 1 } fm_sampling;

typedef struct fm_miner_cfg {
    int n_features;
    int top_n;           /* paper: 50 */
    int reservoir;       /* examples kept per activation interval; 0 for none */
    int hist_bins;       /* even */
    double frac;         /* paper: 0.7 */
    fm_sampling sampling;
    const float *known_max; /* [n_features] maximum pre-activations from pass 1: FM_SAMPLING_PAPER only */
    uint64_t seed;       /* of the interval samples' keys and the shuffled order */
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
    int32_t *pos_buf, *pre_pos;
    float *val_buf, *pre_val;
    int buf_cap;
} fm_miner;

fm_miner *fm_miner_new(const fm_miner_cfg *cfg);
void fm_miner_free(fm_miner *m);

/* One sequence: tokens [T], and per token k latents idx [T*k] with values val [T*k] (values
 * <= 0 are ignored, NaN and Inf skipped and counted in nonfinite, indices must be < n_features).
 * pre [T][n_features]: every latent's encoder pre-activation at each token (sae_encode_preacts);
 * required by FM_SAMPLING_PAPER, unused (may be NULL) otherwise. SF_ERR on a bad index. */
int fm_miner_add(fm_miner *m, const int32_t *tokens, int T, const int32_t *idx, const float *val, int k,
                 const float *pre, int64_t doc_id, int32_t pos, const char *label, int label_len);

/* The sequence's place in the shuffled order of FM_SAMPLING_PAPER (smaller comes first): a 64-bit
 * hash of (seed, doc_id, pos), or of (seed, seq_no, 0) when the stream has no document ids
 * (doc_id < 0). See fm_miner.c for the function. */
uint64_t fm_order_key(uint64_t seed, int64_t doc_id, int32_t pos, uint64_t seq_no);

/* Threshold of feature i's examples (a peak must exceed it): frac * (the known maximum
 * pre-activation under FM_SAMPLING_PAPER, else the largest top-k output seen). */
float fm_miner_threshold(const fm_miner *m, int i);

/* Feature i's interval b: its examples (m->f[i].bk[b].n of them), and its bounds [lo, hi). */
fm_example *fm_miner_interval(const fm_miner *m, int i, int b, double *lo, double *hi);

/* Sorts feature i's kept examples: the heap's in the order the paper lists them (shuffled order
 * under FM_SAMPLING_PAPER, descending peak under STRONGEST), each interval's by descending peak;
 * ties by stream order. They are no longer a heap or a bottom-k after this: call once at the end. */
void fm_miner_sort(fm_miner *m, int i);

/* Bytes held now (heaps, interval samples, sequences, histograms), for the memory test. */
uint64_t fm_miner_bytes(const fm_miner *m);

#endif
