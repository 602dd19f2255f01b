/* The streaming miner against a naive in-memory reference: a random sparse stream is kept whole
 * (dense values per sequence, token and feature, and pre-activations), and every statistic and
 * example set the miner reports is recomputed from it the slow, obvious way, under both samplings
 * (strongest; the paper's, with known maxima, shuffled order and ReLU(pre-activation) values).
 * Then the interval samples on a stream whose peaks are spread (99% low, 1% high and growing):
 * every interval's count, its examples, and that each interval's sample is uniform over its
 * sequences (chi-square over many features). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_miner.h"
#include "sf_check.h"

enum { S = 600, T = 12, N = 40, K = 3, TOP = 6, RES = 5 };

static float dense[S][T][N]; /* the whole stream's top-k output, for the reference */
static float pre[S][T][N];   /* its pre-activations: dense where that is positive, else random in [-1, 0.5) */
static int32_t toks[S][T];
static uint64_t rng = 12345;
static uint32_t rnd(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (uint32_t)(rng >> 11);
}

static float peak_of(int s, int f) {
    float p = 0;
    for (int t = 0; t < T; t++) p = dense[s][t][f] > p ? dense[s][t][f] : p;
    return p;
}

/* The shuffled order's key of sequence s (doc 1000 + s, pos s), as the reference computes it:
 * splitmix64 written out again. */
static uint64_t ref_mix(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static uint64_t ref_order(uint64_t seed, int s) { return ref_mix(ref_mix(ref_mix(seed) ^ (uint64_t)(1000 + s)) ^ (uint32_t)s) >> 11; }

/* The reference top list: sequences with peak > 0 ranked by (peak desc, index asc), or under the
 * paper's sampling (known) the first in shuffled order with peak > thr. */
static int reference_top(int f, int known, float thr, uint64_t seed, int *out) {
    int n = 0;
    int used[S] = {0};
    for (int r = 0; r < TOP; r++) {
        int best = -1;
        for (int s = 0; s < S; s++) {
            float p = peak_of(s, f);
            if (used[s] || !(p > 0)) continue;
            if (known) {
                if (p > thr && (best < 0 || ref_order(seed, s) < ref_order(seed, best))) best = s;
            } else if (best < 0 || p > peak_of(best, f)) {
                best = s;
            }
        }
        if (best < 0) break;
        used[best] = 1;
        out[n++] = best;
    }
    return n;
}

/* The reference intervals of a feature with maximum mx: [q*mx/Q, (q+1)*mx/Q) with a known max,
 * else 2Q buckets of [0, S), S the smallest power of two above mx. */
static int ref_buckets(int known, float mx, double *scale) {
    double sc = 1;
    while (sc <= mx) sc *= 2;
    while (sc / 2 > mx) sc /= 2;
    *scale = known ? mx : sc;
    return known ? FM_INTERVALS : 2 * FM_INTERVALS;
}

static int ref_bucket(float p, double scale, int nb) {
    int b = (int)floor(p / scale * nb);
    return b < nb ? b : nb - 1;
}

/* Feature f's interval samples against counts[b], its sequences per reference bucket. */
static void check_intervals(const fm_miner *m, int f, int known, float mx, const uint64_t *counts, int R) {
    const fm_feature *F = &m->f[f];
    double scale;
    int nb = ref_buckets(known, mx, &scale);
    CHECK(F->n_buckets == nb && F->scale == scale, "f%d (known %d): %d buckets of [0, %g), want %d of [0, %g)", f,
          known, F->n_buckets, F->scale, nb, scale);
    if (F->n_buckets != nb) return;
    int total = 0;
    for (int b = 0; b < nb; b++) {
        int want = counts[b] < (uint64_t)R ? (int)counts[b] : R;
        CHECK(F->bk[b].seqs == counts[b] && F->bk[b].n == want, "f%d (known %d) bucket %d: %llu seqs %d kept, want %llu %d",
              f, known, b, (unsigned long long)F->bk[b].seqs, F->bk[b].n, (unsigned long long)counts[b], want);
        double lo, hi;
        const fm_example *ivx = fm_miner_interval(m, f, b, &lo, &hi);
        for (int e = 0; e < F->bk[b].n; e++) {
            const fm_example *x = &ivx[e];
            CHECK(ref_bucket(x->peak, scale, nb) == b && x->peak >= lo && (x->peak < hi || (known && b == nb - 1)),
                  "f%d bucket %d [%g, %g): example with peak %g", f, b, lo, hi, x->peak);
            for (int e2 = 0; e2 < e; e2++) CHECK(ivx[e2].seq_no != x->seq_no, "f%d bucket %d duplicate", f, b);
        }
        total += F->bk[b].n;
    }
    CHECK(F->n_res == total, "f%d: n_res %d, buckets hold %d", f, F->n_res, total);
}

/* An example's peak (of the top-k output) and stored values: the top-k output, or under the
 * paper's sampling ReLU(pre-activation) at every token. */
static void check_example(const fm_example *e, int f, int paper, const char *what) {
    int s = (int)e->seq_no;
    CHECK(e->peak == peak_of(s, f), "%s f%d seq %d: peak %g, want %g", what, f, s, e->peak, peak_of(s, f));
    CHECK(dense[s][e->peak_pos][f] == e->peak, "%s f%d: peak_pos", what, f);
    CHECK(memcmp(e->seq->tokens, toks[s], sizeof toks[s]) == 0 && e->seq->doc_id == 1000 + s && e->seq->pos == s,
          "%s f%d: tokens/doc/pos of seq %d", what, f, s);
    int nnz = 0;
    for (int t = 0; t < T; t++) {
        float v = paper ? pre[s][t][f] : dense[s][t][f];
        if (v > 0) {
            CHECK(nnz < e->nnz && e->pos[nnz] == t && e->val[nnz] == v, "%s f%d seq %d: value at %d", what, f, s, t);
            nnz++;
        }
    }
    CHECK(e->nnz == nnz, "%s f%d: nnz %d want %d", what, f, e->nnz, nnz);
}

/* The spread stream: SP sequences of one token at which all SF features fire with the same value:
 * 99% low (uniform in [0.05, 1)), 1% high and growing over the stream (1.5 * 2^(4 s / SP) * jitter),
 * so in one pass the scale doubles several times and the low buckets are merged mid-stream. The
 * features draw independent keys, so each is an independent sample; pooled, the picks of one
 * interval must spread over the stream as its sequences do (10 cells of stream order, chi-square). */
enum { SP = 20000, SF = 200, SR = 3 };

static float spread_peak(int s) {
    uint64_t h = (uint64_t)s * 0x9E3779B97F4A7C15ull;
    h ^= h >> 29;
    double u = (double)(h % 1000003) / 1000003.0;
    return s % 100 == 37 ? (float)(1.5 * pow(2, 4.0 * s / SP) * (1 + 0.3 * u)) : (float)(0.05 + 0.95 * u);
}

static void spread_stream(void) {
    static int32_t idx[SF];
    static float val[SF];
    float mx = 0;
    for (int s = 0; s < SP; s++) mx = fmaxf(mx, spread_peak(s));
    float known_max[SF];
    for (int f = 0; f < SF; f++) known_max[f] = mx;
    for (int known = 0; known < 2; known++) {
        fm_miner_cfg cfg = {.n_features = SF, .top_n = 1, .reservoir = SR, .hist_bins = 8, .frac = 0.7,
                            .sampling = known ? FM_SAMPLING_PAPER : FM_SAMPLING_STRONGEST,
                            .known_max = known ? known_max : NULL, .seed = 3};
        fm_miner *m = fm_miner_new(&cfg);
        for (int s = 0; s < SP; s++) {
            int32_t tok = s % 1000;
            for (int f = 0; f < SF; f++) idx[f] = f, val[f] = spread_peak(s);
            if (fm_miner_add(m, &tok, 1, idx, val, SF, val, s, 0, "en", 2) != 0) exit(1); /* pre = val */
        }
        double scale;
        int nb = ref_buckets(known, mx, &scale);
        uint64_t counts[2 * FM_INTERVALS] = {0};
        for (int s = 0; s < SP; s++) counts[ref_bucket(spread_peak(s), scale, nb)]++;
        int high_intervals = 0;
        for (int b = 1; b < nb; b++) high_intervals += counts[b] > 0 && m->f[0].bk[b].n > 0;
        CHECK(high_intervals >= nb / 2, "known %d: only %d of the %d upper intervals have examples", known,
              high_intervals, nb - 1);
        for (int f = 0; f < SF; f++) check_intervals(m, f, known, mx, counts, SR);
        /* Uniformity in bucket 0 (the low 99%, merged while the scale grew) and in the fullest
         * bucket of the high 1%. */
        int test_b[2] = {0, 1};
        for (int b = 2; b < nb; b++)
            if (counts[b] > counts[test_b[1]]) test_b[1] = b;
        for (int t = 0; t < 2; t++) {
            int b = test_b[t];
            double pop[10] = {0}, got[10] = {0}, n_pop = 0, n_got = 0;
            for (int s = 0; s < SP; s++)
                if (ref_bucket(spread_peak(s), scale, nb) == b) pop[s * 10 / SP]++, n_pop++;
            for (int f = 0; f < SF; f++) {
                double lo, hi;
                const fm_example *ivx = fm_miner_interval(m, f, b, &lo, &hi);
                for (int e = 0; e < m->f[f].bk[b].n; e++) got[ivx[e].seq_no * 10 / SP]++, n_got++;
            }
            double chi2 = 0;
            for (int c = 0; c < 10; c++)
                if (pop[c] > 0) chi2 += pow(got[c] - n_got * pop[c] / n_pop, 2) / (n_got * pop[c] / n_pop);
                else CHECK(got[c] == 0, "known %d bucket %d: picks where it has no sequences", known, b);
            /* 9 degrees of freedom at most: P(chi2 > 33) < 2e-4 for a uniform sample. */
            printf("spread (known %d) bucket %d: %.0f sequences, %.0f picks over %d features, chi2 %.1f\n", known, b,
                   n_pop, n_got, SF, chi2);
            CHECK(n_got == SF * fmin(SR, n_pop) && chi2 < 33, "known %d bucket %d: picks not uniform (chi2 %.1f, %.0f picks)",
                  known, b, chi2, n_got);
        }
        fm_miner_free(m);
    }
}

int main(void) {
    /* Feature f fires with probability ~ (f+1)/N per token; some values repeat to test ties. */
    static int32_t idx[S][T * K];
    static float val[S][T * K];
    for (int s = 0; s < S; s++)
        for (int t = 0; t < T; t++) {
            toks[s][t] = (int32_t)(rnd() % 1000);
            for (int j = 0; j < K; j++) {
                int f = (int)(rnd() % N);
                float v = (rnd() % 4 == 0) ? 0.f : (float)(rnd() % 50) / 8.f; /* zeros are "not fired" */
                if (rnd() % 3 == 0) f = (int)(rnd() % 5); /* features 0..4 are frequent */
                idx[s][t * K + j] = f;
                val[s][t * K + j] = v;
                if (v > dense[s][t][f]) dense[s][t][f] = v; /* a latent twice at a token: the larger */
            }
        }
    for (int s = 0; s < S; s++)
        for (int t = 0; t < T; t++)
            for (int f = 0; f < N; f++)
                pre[s][t][f] = dense[s][t][f] > 0 ? dense[s][t][f] : (float)(rnd() % 1500) / 1000.f - 1.f;
    /* Maxima: of the top-k output (what the miner sees), and of the pre-activation (pass 1's). */
    float topk_max[N], known_max[N];
    for (int f = 0; f < N; f++) {
        topk_max[f] = known_max[f] = 0;
        for (int s = 0; s < S; s++) {
            topk_max[f] = fmaxf(topk_max[f], peak_of(s, f));
            for (int t = 0; t < T; t++) known_max[f] = fmaxf(known_max[f], pre[s][t][f]);
        }
    }

    for (int known = 0; known < 2; known++) {
        fm_miner_cfg cfg = {.n_features = N, .top_n = TOP, .reservoir = RES, .hist_bins = 16, .frac = 0.7,
                            .sampling = known ? FM_SAMPLING_PAPER : FM_SAMPLING_STRONGEST,
                            .known_max = known ? known_max : NULL, .seed = 7};
        fm_miner *m = fm_miner_new(&cfg);
        for (int s = 0; s < S; s++)
            if (fm_miner_add(m, toks[s], T, idx[s], val[s], K, known ? &pre[s][0][0] : NULL, 1000 + s, s,
                             s % 2 ? "ja" : "en", 2) != 0)
                return 1;
        CHECK(m->tokens == (uint64_t)S * T && m->sequences == S, "counts");
        CHECK(m->n_labels == 2, "labels interned: %d", m->n_labels);
        for (int f = 0; f < N; f++) {
            fm_feature *F = &m->f[f];
            uint64_t fired = 0, seqs = 0;
            double sum = 0;
            for (int s = 0; s < S; s++) {
                int any = 0;
                for (int t = 0; t < T; t++)
                    if (dense[s][t][f] > 0) fired++, sum += dense[s][t][f], any = 1;
                seqs += any;
            }
            CHECK(F->max == topk_max[f], "f%d max %g want %g", f, F->max, topk_max[f]);
            CHECK(F->fired == fired && F->seqs == seqs, "f%d fired %llu/%llu seqs %llu/%llu", f,
                  (unsigned long long)F->fired, (unsigned long long)fired, (unsigned long long)F->seqs,
                  (unsigned long long)seqs);
            CHECK(fabs(F->sum - sum) < 1e-6 * (1 + sum), "f%d sum", f);
            uint64_t hist_total = 0;
            int last = -1;
            for (int b = 0; F->hist.counts && b < cfg.hist_bins; b++) {
                hist_total += F->hist.counts[b];
                if (F->hist.counts[b]) last = b;
            }
            CHECK(hist_total == fired, "f%d histogram holds %llu of %llu", f, (unsigned long long)hist_total,
                  (unsigned long long)fired);
            if (fired)
                CHECK(last * F->hist.width <= F->max && F->max < (last + 1) * F->hist.width, "f%d max in last bin", f);

            fm_miner_sort(m, f);
            int ref[TOP];
            float thr = fm_miner_threshold(m, f);
            CHECK(thr == (float)(0.7 * (known ? known_max[f] : topk_max[f])), "f%d (known %d) threshold", f, known);
            int nref = reference_top(f, known, thr, cfg.seed, ref);
            CHECK(F->n_top == nref, "f%d (known %d): %d examples, want %d", f, known, F->n_top, nref);
            for (int e = 0; e < F->n_top && e < nref; e++) {
                CHECK((int)F->top[e].seq_no == ref[e], "f%d (known %d) example %d: seq %llu want %d", f, known, e,
                      (unsigned long long)F->top[e].seq_no, ref[e]);
                check_example(&F->top[e], f, known, "top");
            }
            uint64_t counts[2 * FM_INTERVALS] = {0};
            double scale;
            float mx = known ? known_max[f] : topk_max[f];
            int nb = ref_buckets(known, mx, &scale);
            for (int sq = 0; sq < S; sq++)
                if (peak_of(sq, f) > 0) counts[ref_bucket(peak_of(sq, f), scale, nb)]++;
            if (seqs) check_intervals(m, f, known, mx, counts, RES);
            for (int b = 0; b < F->n_buckets; b++) {
                double lo, hi;
                const fm_example *ivx = fm_miner_interval(m, f, b, &lo, &hi);
                for (int e = 0; e < F->bk[b].n; e++) check_example(&ivx[e], f, known, "interval");
            }
        }
        fm_miner_free(m);
    }

    spread_stream();

    /* Bad input is an error, not a crash. */
    fm_miner_cfg cfg = {.n_features = 4, .top_n = 2, .reservoir = 0, .hist_bins = 8, .frac = 0.7};
    fm_miner *m = fm_miner_new(&cfg);
    int32_t bad_idx[2] = {1, 9};
    float bad_val[2] = {1, 1};
    int32_t tk[1] = {0};
    CHECK(fm_miner_add(m, tk, 1, bad_idx, bad_val, 2, NULL, 0, 0, "x", 1) != 0, "index out of range accepted");
    fm_miner_free(m);
    cfg.hist_bins = 7;
    CHECK(fm_miner_new(&cfg) == NULL, "odd bin count accepted");
    cfg.hist_bins = 8;
    cfg.sampling = FM_SAMPLING_PAPER;
    CHECK(fm_miner_new(&cfg) == NULL, "the paper's sampling accepted without known maxima");
    float mx4[4] = {1, 1, 1, 1};
    cfg.known_max = mx4;
    m = fm_miner_new(&cfg);
    int32_t ok_idx[2] = {1, 2};
    CHECK(m && fm_miner_add(m, tk, 1, ok_idx, bad_val, 2, NULL, 0, 0, "x", 1) != 0, "the paper's sampling without pre-activations accepted");
    fm_miner_free(m);

    printf("%s\n", failures ? "FAIL" : "ok");
    return failures ? 1 : 0;
}
