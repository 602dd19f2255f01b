/* Memory stays flat on a long stream: 100k sequences whose values drift upwards, so every
 * feature's heap and interval samples keep replacing examples to the end. Asserts that the miner's own
 * byte count stays under its bound and that the process RSS grows by less than 16 MiB between
 * 20% and 100% of the stream (not under ASan). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_miner.h"

/* AddressSanitizer holds freed blocks in quarantine, so RSS is meaningless under it. */
#if defined(__SANITIZE_ADDRESS__)
#define FM_RSS_CHECK 0
#else
#define FM_RSS_CHECK 1
#endif

enum { S = 100000, T = 64, K = 8, N = 1024, TOP = 50, RES = 2, BINS = 64 };

static long rss_kib(void) {
    FILE *fp = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (fp && fgets(line, sizeof line, fp))
        if (strncmp(line, "VmRSS:", 6) == 0) kib = strtol(line + 6, NULL, 10);
    if (fp) fclose(fp);
    return kib;
}

int main(void) {
    fm_miner_cfg cfg = {.n_features = N, .top_n = TOP, .reservoir = RES, .hist_bins = BINS, .frac = 0.7, .seed = 1};
    fm_miner *m = fm_miner_new(&cfg);
    static int32_t tok[T], idx[T * K];
    static float val[T * K];
    uint64_t rng = 99;
    long rss_early = 0;
    /* Upper bound of what the miner may hold: every kept example distinct, every token fired. */
    uint64_t per_ex = sizeof(fm_example) + (uint64_t)T * 8 + sizeof(fm_seq) + (uint64_t)T * 4;
    uint64_t bound = (uint64_t)N * (TOP + 2 * FM_INTERVALS * RES) * per_ex + (uint64_t)N * BINS * 8 +
                     (uint64_t)N * 2 * FM_INTERVALS * sizeof(fm_bucket);
    uint64_t peak_bytes = 0;
    for (int s = 0; s < S; s++) {
        for (int t = 0; t < T; t++) {
            tok[t] = (int32_t)(rng % 50000);
            for (int j = 0; j < K; j++) {
                rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
                uint32_t r = (uint32_t)(rng >> 20);
                idx[t * K + j] = (int32_t)((r % N) * (r % N) / N); /* skewed towards low ids */
                val[t * K + j] = (float)((rng >> 8) % 1000) / 100.f * (1.f + (float)s / S);
            }
        }
        if (fm_miner_add(m, tok, T, idx, val, K, NULL, s, 0, s % 3 ? "en" : "ja", 2) != 0) return 1;
        uint64_t b = fm_miner_bytes(m);
        if (b > peak_bytes) peak_bytes = b;
        if (s == S / 5) rss_early = rss_kib();
    }
    long rss_end = rss_kib();
    printf("miner bytes: peak %.1f MiB (bound %.1f MiB); RSS at 20%%: %.1f MiB, at 100%%: %.1f MiB\n",
           peak_bytes / 1048576.0, bound / 1048576.0, rss_early / 1024.0, rss_end / 1024.0);
    int fail = 0;
    if (peak_bytes > bound) fprintf(stderr, "FAIL: miner holds more than its bound\n"), fail = 1;
    if (FM_RSS_CHECK && rss_end - rss_early > 16 * 1024) fprintf(stderr, "FAIL: RSS grew by %ld KiB\n", rss_end - rss_early), fail = 1;
    /* The drift makes the last sequences the strongest: the heaps must have kept replacing. */
    int late = 0;
    for (int i = 0; i < N; i++)
        for (int e = 0; e < m->f[i].n_top; e++) late += m->f[i].top[e].seq_no >= (uint64_t)S / 2;
    if (late < N * TOP / 2) fprintf(stderr, "FAIL: only %d of the kept examples come from the second half\n", late), fail = 1;
    fm_miner_free(m);
    printf("%s\n", fail ? "FAIL" : "ok");
    return fail;
}
