/* The streaming miner against a naive in-memory reference: a random sparse stream is kept whole
 * (dense values per sequence, token and feature), and every statistic and example set the miner
 * reports is recomputed from it the slow, obvious way. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_miner.h"

enum { S = 600, T = 12, N = 40, K = 3, TOP = 6, RES = 5 };

static int failures;
#define CHECK(cond, ...)                                                  \
    do {                                                                  \
        if (!(cond)) {                                                    \
            failures++;                                                   \
            fprintf(stderr, "%s:%d: FAIL: ", __FILE__, __LINE__);         \
            fprintf(stderr, __VA_ARGS__);                                 \
            fputc('\n', stderr);                                          \
        }                                                                 \
    } while (0)

static float dense[S][T][N]; /* the whole stream, for the reference */
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

/* The reference top list: sequences with peak > 0 ranked by (peak desc, index asc), or in
 * known-max mode the earliest with peak > frac*max. */
static int reference_top(int f, int known, float thr, int *out) {
    int n = 0;
    int used[S] = {0};
    for (int r = 0; r < TOP; r++) {
        int best = -1;
        for (int s = 0; s < S; s++) {
            float p = peak_of(s, f);
            if (used[s] || !(p > 0)) continue;
            if (known) {
                if (p > thr) { best = s; break; }
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

static void check_example(const fm_example *e, int f, const char *what) {
    int s = (int)e->seq_no;
    CHECK(e->peak == peak_of(s, f), "%s f%d seq %d: peak %g, want %g", what, f, s, e->peak, peak_of(s, f));
    CHECK(dense[s][e->peak_pos][f] == e->peak, "%s f%d: peak_pos", what, f);
    CHECK(memcmp(e->seq->tokens, toks[s], sizeof toks[s]) == 0 && e->seq->doc_id == 1000 + s && e->seq->pos == s,
          "%s f%d: tokens/doc/pos of seq %d", what, f, s);
    int nnz = 0;
    for (int t = 0; t < T; t++) nnz += dense[s][t][f] > 0;
    CHECK(e->nnz == nnz, "%s f%d: nnz %d want %d", what, f, e->nnz, nnz);
    for (int j = 0; j < e->nnz && j < nnz; j++) CHECK(e->val[j] == dense[s][e->pos[j]][f], "%s f%d: value", what, f);
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
    float known_max[N];
    for (int f = 0; f < N; f++) {
        known_max[f] = 0;
        for (int s = 0; s < S; s++) known_max[f] = fmaxf(known_max[f], peak_of(s, f));
    }

    for (int known = 0; known < 2; known++) {
        fm_miner_cfg cfg = {.n_features = N, .top_n = TOP, .reservoir = RES, .hist_bins = 16, .frac = 0.7,
                            .known_max = known ? known_max : NULL, .seed = 7};
        fm_miner *m = fm_miner_new(&cfg);
        for (int s = 0; s < S; s++)
            if (fm_miner_add(m, toks[s], T, idx[s], val[s], K, 1000 + s, s, s % 2 ? "ja" : "en", 2) != 0) return 1;
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
            CHECK(F->max == known_max[f], "f%d max %g want %g", f, F->max, known_max[f]);
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
            int nref = reference_top(f, known, thr, ref);
            if (known) { /* the paper's pass 2 keeps stream order; sort the reference like the miner */
                for (int a = 0; a < nref; a++)
                    for (int b = a + 1; b < nref; b++)
                        if (peak_of(ref[b], f) > peak_of(ref[a], f) ||
                            (peak_of(ref[b], f) == peak_of(ref[a], f) && ref[b] < ref[a])) {
                            int tmp = ref[a]; ref[a] = ref[b]; ref[b] = tmp;
                        }
            }
            CHECK(F->n_top == nref, "f%d (known %d): %d examples, want %d", f, known, F->n_top, nref);
            for (int e = 0; e < F->n_top && e < nref; e++) {
                CHECK((int)F->top[e].seq_no == ref[e], "f%d (known %d) example %d: seq %llu want %d", f, known, e,
                      (unsigned long long)F->top[e].seq_no, ref[e]);
                check_example(&F->top[e], f, "top");
            }
            int want_res = seqs < RES ? (int)seqs : RES;
            CHECK(F->n_res == want_res, "f%d reservoir %d want %d", f, F->n_res, want_res);
            for (int e = 0; e < F->n_res; e++) {
                check_example(&F->res[e], f, "reservoir");
                for (int e2 = 0; e2 < e; e2++) CHECK(F->res[e].seq_no != F->res[e2].seq_no, "f%d reservoir duplicate", f);
            }
        }
        fm_miner_free(m);
    }

    /* Bad input is an error, not a crash. */
    fm_miner_cfg cfg = {.n_features = 4, .top_n = 2, .reservoir = 0, .hist_bins = 8, .frac = 0.7};
    fm_miner *m = fm_miner_new(&cfg);
    int32_t bad_idx[2] = {1, 9};
    float bad_val[2] = {1, 1};
    int32_t tk[1] = {0};
    CHECK(fm_miner_add(m, tk, 1, bad_idx, bad_val, 2, 0, 0, "x", 1) != 0, "index out of range accepted");
    fm_miner_free(m);
    cfg.hist_bins = 7;
    CHECK(fm_miner_new(&cfg) == NULL, "odd bin count accepted");

    printf("%s\n", failures ? "FAIL" : "ok");
    return failures ? 1 : 0;
}
