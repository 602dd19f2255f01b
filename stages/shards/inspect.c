/* `saeflow shards inspect DIR [--verify] [--hist-rows N]`: what a shard directory holds. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shards.h"

#define HIST_BINS 20

static int usage_to(FILE *out, int rc) {
    fprintf(out, "usage: saeflow shards inspect DIR [--verify] [--hist-rows N]\n"
                    "  --verify       re-check every shard's CRC-32 and layout against the manifest\n"
                    "  --hist-rows N  rows sampled (evenly) for the norms histogram, 0 for none (default 100000)\n");
    return rc;
}

static int usage(void) { return usage_to(stderr, 2); }

/* L2 norms of rows sampled every `stride` rows (global row index) into norms[*n]. */
static int sample_norms(const char *dir, const sh_manifest *m, int verify, int64_t stride, float *norms, int64_t cap,
                        int64_t *n, int *bad) {
    int64_t base = 0;
    float *row = sf_alloc("a row", (size_t)m->run.d, sizeof *row);
    if (!row) return SF_ERR;
    size_t row_bytes = (size_t)m->run.d * sf_dtype_size(m->run.dtype);
    for (size_t k = 0; k < m->nshards; k++) {
        const sh_shard_info *si = &m->shards[k];
        sh_shard s;
        if (sh_shard_open(dir, m, si, verify, &s) != SF_OK) {
            printf("  BAD %s\n", sf_last_error());
            ++*bad;
        } else {
            if (verify) printf("  ok  %s\n", si->file);
            for (int64_t i = stride ? (stride - base % stride) % stride : s.n; i < s.n && *n < cap; i += stride) {
                sf_convert_to_f32(row, s.acts + (size_t)i * row_bytes, m->run.dtype, (size_t)m->run.d);
                double sq = 0;
                for (int64_t j = 0; j < m->run.d; j++) sq += (double)row[j] * row[j];
                norms[(*n)++] = (float)sqrt(sq);
            }
            sh_shard_close(&s);
        }
        base += si->count;
    }
    free(row);
    return SF_OK;
}

static void histogram(const float *v, int64_t n) {
    float lo = INFINITY, hi = -INFINITY;
    int64_t counts[HIST_BINS] = {0}, top = 0, nonfinite = 0;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(v[i])) {
            lo = fminf(lo, v[i]);
            hi = fmaxf(hi, v[i]);
        }
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(v[i])) {
            nonfinite++;
            continue;
        }
        int b = hi > lo ? (int)((v[i] - lo) / (hi - lo) * HIST_BINS) : 0;
        if (b >= HIST_BINS) b = HIST_BINS - 1;
        if (++counts[b] > top) top = counts[b];
    }
    printf("norms histogram (%lld rows sampled):\n", (long long)n);
    for (int b = 0; b < HIST_BINS && top; b++) {
        char bar[51];
        int w = (int)(50 * counts[b] / top);
        memset(bar, '#', (size_t)w);
        bar[w] = 0;
        printf("  [%10.4g, %10.4g) %9lld %s\n", lo + (hi - lo) * b / HIST_BINS, lo + (hi - lo) * (b + 1) / HIST_BINS,
               (long long)counts[b], bar);
    }
    if (nonfinite) printf("  non-finite norms: %lld\n", (long long)nonfinite);
}

static int inspect(const char *dir, int verify, int64_t hist_rows) {
    sh_manifest m;
    int rc = sh_manifest_load(dir, &m);
    if (rc == SF_DONE) {
        fprintf(stderr, "%s: no manifest.json (not a shard directory, or no shard completed yet)\n", dir);
        return 1;
    }
    if (rc != SF_OK) {
        fprintf(stderr, "%s\n", sf_last_error());
        return 1;
    }
    int64_t rows = 0, seqs = 0, bytes = 0;
    double nsum = 0, nsq = 0;
    for (size_t i = 0; i < m.nshards; i++) {
        rows += m.shards[i].count;
        seqs += m.shards[i].sequences;
        bytes += m.shards[i].bytes;
        nsum += m.shards[i].norm_sum;
        nsq += m.shards[i].norm_sq_sum;
    }
    printf("%s: %s v%d, %s\n", dir, SH_FORMAT, SH_VERSION, m.complete ? "complete" : "incomplete (writer did not finish)");
    printf("model %s  checkpoint %s  hook %s  layer %lld  d %lld  dtype %s\n", m.run.model, m.run.checkpoint,
           m.run.hook, (long long)m.run.layer, (long long)m.run.d, sf_dtype_name(m.run.dtype));
    if (m.run.corpus) printf("corpus %s\n", m.run.corpus);
    printf("rows %lld  sequences %lld  shards %zu  bytes %lld  labels:", (long long)rows, (long long)seqs, m.nshards,
           (long long)bytes);
    for (size_t i = 0; i < m.nlabels; i++) printf(" %s", m.labels[i]);
    printf("\nmean norm %.6g  mean squared norm %.6g\n", rows ? nsum / (double)rows : 0.0, rows ? nsq / (double)rows : 0.0);
    printf("%-32s %-10s %10s %9s %12s %8s %10s\n", "shard", "split", "rows", "seqs", "bytes", "crc32", "mean norm");
    for (size_t i = 0; i < m.nshards; i++) {
        const sh_shard_info *s = &m.shards[i];
        printf("%-32s %-10s %10lld %9lld %12lld %08x %10.6g\n", s->file, s->split, (long long)s->count,
               (long long)s->sequences, (long long)s->bytes, s->crc32, s->norm_sum / (double)s->count);
    }
    int bad = 0;
    if (verify || hist_rows > 0) {
        int64_t cap = hist_rows > 0 ? hist_rows : 0, n = 0;
        int64_t stride = cap ? (rows + cap - 1) / cap : 0;
        float *norms = sf_alloc("the sampled row norms (--hist)", (size_t)(cap ? cap : 1), sizeof *norms);
        if (verify) printf("verifying %zu shards:\n", m.nshards);
        if (!norms || sample_norms(dir, &m, verify, stride, norms, cap, &n, &bad) != SF_OK) {
            fprintf(stderr, "saeflow shards: %s\n", sf_last_error());
            free(norms);
            sh_manifest_free(&m);
            return 1;
        }
        if (cap) histogram(norms, n);
        free(norms);
    }
    if (verify) printf("%s: %d bad shard%s of %zu\n", bad ? "FAILED" : "verified", bad, bad == 1 ? "" : "s", m.nshards);
    sh_manifest_free(&m);
    return bad ? 1 : 0;
}

int sh_command_main(int argc, char **argv) {
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) return usage_to(stdout, 0);
    if (argc < 3 || strcmp(argv[1], "inspect") != 0) return usage();
    const char *dir = NULL;
    int verify = 0;
    int64_t hist_rows = 100000;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return usage_to(stdout, 0);
        if (strcmp(argv[i], "--verify") == 0) verify = 1;
        else if (strcmp(argv[i], "--hist-rows") == 0 && i + 1 < argc) {
            char *end;
            hist_rows = strtoll(argv[++i], &end, 10);
            if (*end || hist_rows < 0 || hist_rows > (1ll << 30)) return usage();
        } else if (argv[i][0] != '-' && !dir) dir = argv[i];
        else return usage();
    }
    return dir ? inspect(dir, verify, hist_rows) : usage();
}
