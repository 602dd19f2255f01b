/* Errors (per thread) and logging. */
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <time.h>
#include <pthread.h>

#include "sf_internal.h"

static _Thread_local char last_error[1024];
static _Thread_local const char *thread_name;
static int log_level = SF_LOG_INFO;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

int sf_vfail(const char *fmt, va_list ap) {
    /* Format aside first: callers often pass sf_last_error() itself as an argument. */
    char buf[sizeof last_error];
    vsnprintf(buf, sizeof buf, fmt, ap);
    memcpy(last_error, buf, sizeof buf);
    return SF_ERR;
}

int sf_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    sf_vfail(fmt, ap);
    va_end(ap);
    return SF_ERR;
}

const char *sf_last_error(void) { return last_error; }

void sf_log_set_thread_name(const char *name) { thread_name = name; }
void sf_log_set_level(int level) { log_level = level; }

void sf_log_init_from_env(void) {
    const char *v = getenv("SAEFLOW_LOG");
    if (!v) return;
    static const char *names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (strcmp(v, names[i]) == 0) log_level = i;
}

void sf_log(int level, const char *fmt, ...) {
    if (level < log_level) return;
    static const char *tags[] = {"debug", "info", "warn", "error"};
    if (level < 0 || level > 3) level = SF_LOG_ERROR;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    localtime_r(&ts.tv_sec, &tm);
    /* One write per line under a lock, so lines from stage threads never interleave. */
    pthread_mutex_lock(&log_lock);
    fprintf(stderr, "%02d:%02d:%02d %s%s%s%s: %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
            thread_name ? "[" : "", thread_name ? thread_name : "", thread_name ? "] " : "",
            tags[level], msg);
    pthread_mutex_unlock(&log_lock);
}
