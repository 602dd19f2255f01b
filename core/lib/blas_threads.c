/* blas_threads.c — the process-wide "OpenBLAS on one thread" section of saeflow.h: one counter for
 * every stage in the process, because OpenBLAS's thread count is one global setting. Stages that
 * split sgemms over their own threads in fixed tiles need it at 1 for as long as any of them runs
 * (a per-stage counter would let one stage restore the threads under another). */
#include <pthread.h>

#include "saeflow.h"

static pthread_mutex_t blas_mu = PTHREAD_MUTEX_INITIALIZER;
static int single_users, saved_threads;

void sf_blas_single_enter(int (*get_threads)(void), void (*set_threads)(int)) {
    pthread_mutex_lock(&blas_mu);
    if (single_users++ == 0) {
        saved_threads = get_threads();
        set_threads(1);
    }
    pthread_mutex_unlock(&blas_mu);
}

void sf_blas_single_leave(void (*set_threads)(int)) {
    pthread_mutex_lock(&blas_mu);
    if (--single_users == 0) set_threads(saved_threads);
    pthread_mutex_unlock(&blas_mu);
}
