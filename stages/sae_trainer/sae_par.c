/* sae_par.c — a small blocking thread pool for sae_lib's loops.
 *
 * Why not OpenMP: between regions the SAE calls OpenBLAS, whose own threads then need the cores;
 * GOMP's workers spin-wait between regions and steal them (and spin at barriers when the
 * machine is shared). These workers sleep on a condition variable instead. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "sae_internal.h"

#define SAE_PAR_MAX_THREADS 64

static struct {
    pthread_once_t once;
    pthread_mutex_t call; /* one parallel loop at a time, whoever calls */
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    int nthreads;
    uint64_t gen;  /* bumped per loop: workers wake on a change */
    int pending;   /* workers still running the current loop */
    sae_par_fn fn;
    void *ctx;
    int64_t n, grain;
    atomic_int_fast64_t next;
} P = {.once = PTHREAD_ONCE_INIT, .call = PTHREAD_MUTEX_INITIALIZER, .mu = PTHREAD_MUTEX_INITIALIZER,
       .go = PTHREAD_COND_INITIALIZER, .done = PTHREAD_COND_INITIALIZER};

static void sae_par_run(int tid) {
    for (;;) {
        int64_t b = atomic_fetch_add(&P.next, P.grain);
        if (b >= P.n) return;
        int64_t e = b + P.grain < P.n ? b + P.grain : P.n;
        P.fn(P.ctx, tid, b, e);
    }
}

static void *sae_par_worker(void *arg) {
    int tid = (int)(intptr_t)arg;
    uint64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&P.mu);
        while (P.gen == seen) pthread_cond_wait(&P.go, &P.mu);
        seen = P.gen;
        pthread_mutex_unlock(&P.mu);
        sae_par_run(tid);
        pthread_mutex_lock(&P.mu);
        if (--P.pending == 0) pthread_cond_signal(&P.done);
        pthread_mutex_unlock(&P.mu);
    }
    return NULL;
}

static void sae_par_start(void) {
    cpu_set_t set;
    int n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
    const char *env = getenv("SAE_THREADS"); /* to measure scaling; default: every allowed CPU */
    if (env && atoi(env) > 0) n = atoi(env);
    if (n > SAE_PAR_MAX_THREADS) n = SAE_PAR_MAX_THREADS;
    P.nthreads = 1;
    for (int i = 1; i < n; i++) {
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&th, &attr, sae_par_worker, (void *)(intptr_t)i) == 0) P.nthreads++;
        pthread_attr_destroy(&attr);
    }
}

int sae_par_threads(void) {
    pthread_once(&P.once, sae_par_start);
    return P.nthreads;
}

void sae_parallel_for(int64_t n, int64_t grain, sae_par_fn fn, void *ctx) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    if (sae_par_threads() == 1 || n <= grain) {
        fn(ctx, 0, 0, n);
        return;
    }
    pthread_mutex_lock(&P.call);
    pthread_mutex_lock(&P.mu);
    P.fn = fn;
    P.ctx = ctx;
    P.n = n;
    P.grain = grain;
    atomic_store(&P.next, 0);
    P.pending = P.nthreads - 1;
    P.gen++;
    pthread_cond_broadcast(&P.go);
    pthread_mutex_unlock(&P.mu);
    sae_par_run(0);
    pthread_mutex_lock(&P.mu);
    while (P.pending > 0) pthread_cond_wait(&P.done, &P.mu);
    pthread_mutex_unlock(&P.mu);
    pthread_mutex_unlock(&P.call);
}
