/* tok-bench TOKENIZER TEXT_FILE THREADS: encode every line of TEXT_FILE with THREADS threads
 * sharing one loaded tokenizer; prints tokens, wall and CPU seconds and the rates (loading and
 * reading excluded). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tok.h"

typedef struct job {
    const tok_tokenizer *tok;
    char **lines;
    size_t *lens, n, first, step;
    size_t tokens;
} job;

static void *run(void *arg) {
    job *j = arg;
    tok_ids ids = {0};
    for (size_t i = j->first; i < j->n; i += j->step) {
        if (tok_encode(j->tok, j->lines[i], j->lens[i], 0, &ids) != 0) abort();
        j->tokens += ids.n;
    }
    tok_ids_free(&ids);
    return NULL;
}

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: tok-bench TOKENIZER TEXT_FILE THREADS\n");
        return 2;
    }
    char err[512];
    tok_tokenizer *t = tok_load(argv[1], err, sizeof err);
    if (!t) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    FILE *f = fopen(argv[2], "rb");
    if (!f) {
        perror(argv[2]);
        return 1;
    }
    size_t n = 0, cap = 1024;
    char **lines = malloc(cap * sizeof *lines);
    size_t *lens = malloc(cap * sizeof *lens);
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    while ((len = getline(&line, &lcap, f)) >= 0) {
        if (len > 0 && line[len - 1] == '\n') len--;
        if (n == cap) {
            cap *= 2;
            lines = realloc(lines, cap * sizeof *lines);
            lens = realloc(lens, cap * sizeof *lens);
        }
        lines[n] = malloc((size_t)len + 1);
        memcpy(lines[n], line, (size_t)len);
        lens[n++] = (size_t)len;
    }
    free(line);
    fclose(f);
    int threads = atoi(argv[3]);
    if (threads < 1 || threads > 64) threads = 1;
    job jobs[64];
    pthread_t tid[64];
    double t0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
    for (int i = 0; i < threads; i++) {
        jobs[i] = (job){t, lines, lens, n, (size_t)i, (size_t)threads, 0};
        pthread_create(&tid[i], NULL, run, &jobs[i]);
    }
    size_t tokens = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(tid[i], NULL);
        tokens += jobs[i].tokens;
    }
    double dt = clock_s(CLOCK_MONOTONIC) - t0, cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
    /* wall: what this run got; cpu: per CPU-second (robust when other work shares the cores) */
    printf("%zu tokens wall %.3f s cpu %.3f s %.0f tokens/s wall %.0f tokens/cpu-s\n", tokens, dt, cpu,
           tokens / dt, tokens / cpu);
    for (size_t i = 0; i < n; i++) free(lines[i]);
    free(lines);
    free(lens);
    tok_free(t);
    return 0;
}
