/* shards_driver: runs the shard writer and reader modules in a process of their own, for the
 * tests (crash loops need a real process to kill) and the benchmark.
 *
 *   shards_driver write DIR [options]   feed a deterministic activations stream to the writer
 *   shards_driver read DIR [options]    replay DIR, dumping batches to --out FILE
 *   shards_driver cmd ARGS...           the `saeflow shards` command (argv[1..] as its argv)
 *
 * The stream (the Python tests compute the same): batch k has B = 1 + k % 4 sequences of
 * T = 3 + (5k) % 6 tokens, split "validation" when k % 5 == 4 else "train". Sequence s, token t:
 * doc_id = 1000003 (s / 2) + 17, pos = 64 (s % 2), token = (31 s + t) % 50000,
 * label "ja" if (s / 2) % 3 == 0 else "en", acts[j] = ((131 s + 17 t + 7 j) % 8191) / 8 - 500,
 * or, with --input FILE, the float32 rows of FILE in turn (cycling). --reorder SEED delivers the
 * batches shuffled within windows of 8. --bench: batches of
 * --bench-b x --bench-t rows of pseudo-random acts (the same every batch), one split, for throughput. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "sf_util.h"
#include "shards.h"

typedef struct args {
    const char *dir, *out, *input, *split, *model, *hook;
    sf_dtype dtype, in_dtype;
    int64_t seqs, d, layer, shard_kb, sleep_us, fsize_limit, bench_b, bench_t, buffer_rows, batch_rows, batch_seqs,
        epochs, seed, part, parts, reorder;
    int shuffle, verify, no_resume, bench;
} args;

static int parse(int argc, char **argv, args *a) {
    *a = (args){.split = "train", .model = "synthetic", .hook = "resid_post.3", .dtype = SF_F32, .in_dtype = SF_F32,
                .seqs = 1000, .d = 16, .layer = 3, .shard_kb = 64, .bench_b = 16, .bench_t = 256,
                .buffer_rows = 1000, .batch_rows = 64, .batch_seqs = 8, .epochs = 1, .parts = 1, .verify = 1};
    if (argc < 3) return SF_ERR;
    a->dir = argv[2];
    for (int i = 3; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int flag = 1;
        if (!strcmp(k, "--shuffle")) a->shuffle = 1;
        else if (!strcmp(k, "--no-verify")) a->verify = 0;
        else if (!strcmp(k, "--no-resume")) a->no_resume = 1;
        else if (!strcmp(k, "--bench")) a->bench = 1;
        else flag = 0;
        if (flag) continue;
        if (!v) return SF_ERR;
        i++;
        if (!strcmp(k, "--out")) a->out = v;
        else if (!strcmp(k, "--input")) a->input = v;
        else if (!strcmp(k, "--split")) a->split = v;
        else if (!strcmp(k, "--model")) a->model = v;
        else if (!strcmp(k, "--hook")) a->hook = v;
        else if (!strcmp(k, "--dtype")) { if (sh_dtype_parse(v, &a->dtype)) return SF_ERR; }
        else if (!strcmp(k, "--in-dtype")) { if (sh_dtype_parse(v, &a->in_dtype)) return SF_ERR; }
        else {
            int64_t x = strtoll(v, NULL, 10);
            if (!strcmp(k, "--seqs")) a->seqs = x;
            else if (!strcmp(k, "--d")) a->d = x;
            else if (!strcmp(k, "--layer")) a->layer = x;
            else if (!strcmp(k, "--shard-kb")) a->shard_kb = x;
            else if (!strcmp(k, "--sleep-us")) a->sleep_us = x;
            else if (!strcmp(k, "--fsize-limit")) a->fsize_limit = x;
            else if (!strcmp(k, "--bench-b")) a->bench_b = x;
            else if (!strcmp(k, "--bench-t")) a->bench_t = x;
            else if (!strcmp(k, "--buffer-rows")) a->buffer_rows = x;
            else if (!strcmp(k, "--batch-rows")) a->batch_rows = x;
            else if (!strcmp(k, "--batch-seqs")) a->batch_seqs = x;
            else if (!strcmp(k, "--epochs")) a->epochs = x;
            else if (!strcmp(k, "--seed")) a->seed = x;
            else if (!strcmp(k, "--part")) a->part = x;
            else if (!strcmp(k, "--parts")) a->parts = x;
            else if (!strcmp(k, "--reorder")) a->reorder = x;
            else return SF_ERR;
        }
    }
    if (a->bench_b < 1 || a->bench_b > 64 || a->bench_t < 1 || a->d < 1) return SF_ERR;
    return SF_OK;
}

static float *load_input(const char *path, int64_t d, int64_t *rows) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    *rows = n / (long)(4 * d);
    float *v = malloc((size_t)n + 4);
    if (!v || *rows == 0 || fread(v, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(v);
        return NULL;
    }
    fclose(f);
    return v;
}

static int run_write(const args *a) {
    if (a->fsize_limit > 0) { /* a full disk, as far as write(2) is concerned */
        struct rlimit rl = {(rlim_t)a->fsize_limit, (rlim_t)a->fsize_limit};
        signal(SIGXFSZ, SIG_IGN);
        setrlimit(RLIMIT_FSIZE, &rl);
    }
    int64_t in_rows = 0;
    float *input = a->input ? load_input(a->input, a->d, &in_rows) : NULL;
    if (a->input && !input) return fprintf(stderr, "cannot read %s\n", a->input), 1;
    sh_writer *w = sh_writer_open(a->dir, a->dtype, (size_t)a->shard_kb << 10, !a->no_resume, 0);
    if (!w) return fprintf(stderr, "error: %s\n", sf_last_error()), 1;
    int64_t maxB = a->bench ? a->bench_b : 4, maxT = a->bench ? a->bench_t : 8, d = a->d;
    float *acts = malloc((size_t)(maxB * maxT * d) * 4);
    uint16_t *acts16 = malloc((size_t)(maxB * maxT * d) * 2);
    int32_t *tokens = malloc((size_t)(maxB * maxT) * 4), pos[64];
    int64_t doc[64];
    const char *labels[64];
    size_t label_len[64];
    /* The batches in stream order, then (--reorder) shuffled within windows of 8, as replicated
     * upstream stages would deliver them. */
    typedef struct { int64_t k, s0, row0, B, T; } batch;
    batch *bs = malloc(sizeof *bs * (size_t)(a->seqs + 1));
    int64_t nb = 0;
    for (int64_t k = 0, s = 0, row = 0; s < a->seqs; k++, nb++) {
        int64_t B = a->bench ? a->bench_b : 1 + k % 4, T = a->bench ? a->bench_t : 3 + (5 * k) % 6;
        if (B > a->seqs - s) B = a->seqs - s;
        bs[nb] = (batch){k, s, row, B, T};
        s += B;
        row += B * T;
    }
    uint64_t x = 88172645463325252ull, rx = (uint64_t)a->reorder * 0x9e3779b97f4a7c15ull + 1;
    for (int64_t i = 0; a->reorder && i < nb; i++) {
        int64_t w0 = i / 8 * 8, span = (nb - w0 < 8 ? nb - w0 : 8) - i % 8;
        rx ^= rx << 13, rx ^= rx >> 7, rx ^= rx << 17;
        int64_t j = i + (int64_t)(rx % (uint64_t)span);
        batch t = bs[i];
        bs[i] = bs[j];
        bs[j] = t;
    }
    double t0 = sf_now();
    int rc = SF_OK;
    for (int64_t n = 0; n < nb && rc == SF_OK; n++) {
        int64_t k = bs[n].k, s = bs[n].s0, row = bs[n].row0, B = bs[n].B, T = bs[n].T;
        for (int64_t b = 0; b < B; b++, s++) {
            doc[b] = 1000003 * (s / 2) + 17;
            pos[b] = (int32_t)(64 * (s % 2));
            labels[b] = (s / 2) % 3 == 0 ? "ja" : "en";
            label_len[b] = 2;
            for (int64_t t = 0; t < T; t++, row++) {
                tokens[b * T + t] = (int32_t)((31 * s + t) % 50000);
                float *dst = acts + (b * T + t) * d;
                if (a->bench) {
                    if (n == 0) /* random once, then reused: the benchmark times the writer, not this */
                        for (int64_t j = 0; j < d; j++) {
                            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                            dst[j] = (float)(int32_t)(x >> 40) * 1e-6f;
                        }
                } else if (input) {
                    memcpy(dst, input + (row % in_rows) * d, (size_t)d * 4);
                } else {
                    for (int64_t j = 0; j < d; j++) dst[j] = (float)((131 * s + 17 * t + 7 * j) % 8191) / 8 - 500;
                }
            }
        }
        sh_batch bt = {.model = a->model, .checkpoint = "step-0", .hook = a->hook, .layer = a->layer,
                       .split = a->bench || k % 5 != 4 ? "train" : "validation", .tokens = tokens, .doc_id = doc,
                       .pos = pos, .label = labels, .label_len = label_len};
        bt.acts = (sf_tensor){.dtype = a->in_dtype, .ndim = 3, .shape = {B, T, d}, .data = acts};
        if (a->in_dtype != SF_F32) {
            sf_convert_from_f32(acts16, a->in_dtype, acts, (size_t)(B * T * d));
            bt.acts.data = acts16;
        }
        rc = sh_writer_add(w, &bt);
        if (a->sleep_us) usleep((useconds_t)a->sleep_us);
    }
    if (rc == SF_OK) rc = sh_writer_close(w, 1);
    double dt = sf_now() - t0;
    int64_t skipped, rows, shards;
    sh_writer_stats(w, &skipped, &rows, &shards);
    if (rc != SF_OK) fprintf(stderr, "error: %s\n", sf_last_error());
    printf("wrote %lld rows in %lld shards, skipped %lld sequences, %.3f s, %.1f MB/s of row data\n", (long long)rows,
           (long long)shards, (long long)skipped, dt, (double)rows * (double)(d * sf_dtype_size(a->dtype) + 25) / dt / 1e6);
    sh_writer_free(w);
    free(bs);
    free(acts);
    free(acts16);
    free(tokens);
    free(input);
    return rc == SF_OK ? 0 : 1;
}

/* Dump format per batch: int64 B, T, epoch; acts as float32 [B*T*d]; tokens int32 [B*T];
 * doc_id int64 [B]; pos int32 [B]; seq int64 [B]; label uint8 [B]. */
static int run_read(const args *a) {
    sh_reader_opts o = {.split = a->split, .shuffle = a->shuffle, .buffer_rows = a->buffer_rows,
                        .batch_rows = a->batch_rows, .batch_seqs = a->batch_seqs, .epochs = a->epochs,
                        .seed = (uint64_t)a->seed, .part = (int)a->part, .parts = (int)a->parts, .verify = a->verify};
    sh_reader *r = sh_reader_open(a->dir, &o);
    if (!r) return fprintf(stderr, "error: %s\n", sf_last_error()), 1;
    const sh_manifest *m = sh_reader_manifest(r);
    FILE *out = a->out ? fopen(a->out, "wb") : NULL;
    if (a->out && !out) return fprintf(stderr, "cannot write %s\n", a->out), 1;
    float *f32 = NULL;
    size_t cap = 0;
    int64_t rows = 0;
    int rc;
    double t0 = sf_now();
    sh_out b;
    while ((rc = sh_reader_next(r, &b)) == SF_OK) {
        size_t n = (size_t)(b.B * b.T * m->run.d);
        rows += b.B * b.T;
        if (!out) continue;
        if (n > cap) {
            f32 = realloc(f32, n * 4);
            cap = n;
        }
        sf_convert_to_f32(f32, b.acts, m->run.dtype, n);
        int64_t hdr[3] = {b.B, b.T, b.epoch};
        fwrite(hdr, 8, 3, out);
        fwrite(f32, 4, n, out);
        fwrite(b.tokens, 4, (size_t)(b.B * b.T), out);
        fwrite(b.doc_id, 8, (size_t)b.B, out);
        fwrite(b.pos, 4, (size_t)b.B, out);
        fwrite(b.seq, 8, (size_t)b.B, out);
        fwrite(b.label, 1, (size_t)b.B, out);
    }
    double dt = sf_now() - t0;
    if (rc == SF_ERR) fprintf(stderr, "error: %s\n", sf_last_error());
    printf("read %lld rows, %.3f s, %.1f MB/s of row data\n", (long long)rows, dt,
           (double)rows * (double)sh_row_bytes(&m->run) / dt / 1e6);
    if (out && fclose(out) != 0) rc = SF_ERR;
    free(f32);
    sh_reader_free(r);
    return rc == SF_ERR ? 1 : 0;
}

int main(int argc, char **argv) {
    args a;
    if (argc >= 2 && !strcmp(argv[1], "cmd")) return sh_command_main(argc - 1, argv + 1);
    if (argc < 3 || parse(argc, argv, &a) != SF_OK) {
        fprintf(stderr, "usage: shards_driver write|read DIR [options] | shards_driver cmd inspect DIR ...\n");
        return 2;
    }
    if (!strcmp(argv[1], "write")) return run_write(&a);
    if (!strcmp(argv[1], "read")) return run_read(&a);
    fprintf(stderr, "unknown mode %s\n", argv[1]);
    return 2;
}
