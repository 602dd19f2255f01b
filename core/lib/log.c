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

/* The live progress block a terminal shows at its bottom while a pipeline runs (core/progress.c
 * draws it). Log lines go above it: the block is cleared, the line written and the block drawn
 * again, in one write under the log lock, so neither garbles the other and no line is drawn over. */
static char *live_text;
static size_t live_len;
static int live_lines;

/* Appends to a growing buffer; on allocation failure the buffer is left as it was. */
static void buf_add(char **b, size_t *n, size_t *cap, const char *s, size_t len) {
    if (*n + len + 1 > *cap) {
        size_t want = (*n + len + 1) * 2;
        char *p = realloc(*b, want);
        if (!p) return;
        *b = p, *cap = want;
    }
    memcpy(*b + *n, s, len);
    *n += len;
    (*b)[*n] = 0;
}

/* Cursor up over the block drawn last, and clear from there to the end of the screen. */
static void live_clear(char **b, size_t *n, size_t *cap) {
    if (!live_lines) return;
    char esc[32];
    int len = snprintf(esc, sizeof esc, "\033[%dA\r\033[J", live_lines);
    buf_add(b, n, cap, esc, (size_t)len);
}

void sf_log_live_draw(const char *text, int lines) {
    size_t len = strlen(text), n = 0, cap = 0;
    char *out = NULL;
    pthread_mutex_lock(&log_lock);
    live_clear(&out, &n, &cap);
    buf_add(&out, &n, &cap, text, len);
    if (out) fwrite(out, 1, n, stderr);
    fflush(stderr);
    free(out);
    char *copy = malloc(len + 1);
    free(live_text);
    live_text = copy;
    live_len = copy ? len : 0;
    live_lines = copy ? lines : 0; /* without a copy the next log line cannot redraw: forget the block */
    if (copy) memcpy(copy, text, len + 1);
    pthread_mutex_unlock(&log_lock);
}

void sf_log_live_end(void) {
    pthread_mutex_lock(&log_lock);
    free(live_text);
    live_text = NULL;
    live_len = 0;
    live_lines = 0;
    fflush(stderr);
    pthread_mutex_unlock(&log_lock);
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
    char line[2200];
    int len = snprintf(line, sizeof line, "%02d:%02d:%02d %s%s%s%s: %s\n", tm.tm_hour, tm.tm_min, tm.tm_sec,
                       thread_name ? "[" : "", thread_name ? thread_name : "", thread_name ? "] " : "", tags[level], msg);
    size_t line_len = len < 0 ? 0 : (size_t)len < sizeof line ? (size_t)len : sizeof line - 1;
    if (line_len && line[line_len - 1] != '\n') line[line_len - 1] = '\n'; /* cut: still one whole line */
    pthread_mutex_lock(&log_lock);
    if (live_lines) {
        size_t n = 0, cap = 0;
        char *out = NULL;
        live_clear(&out, &n, &cap);
        buf_add(&out, &n, &cap, line, line_len);
        buf_add(&out, &n, &cap, live_text, live_len);
        if (out) fwrite(out, 1, n, stderr);
        else fwrite(line, 1, line_len, stderr);
        free(out);
    } else {
        fwrite(line, 1, line_len, stderr);
    }
    pthread_mutex_unlock(&log_lock);
}
