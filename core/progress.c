/* Progress while a pipeline runs (a live block of lines on a terminal, log lines every 10 s
 * otherwise) and the summary at the end: per edge messages, bytes and rate (after a failure also
 * how many were acknowledged, in flight, processed), and per stage the counters stages keep. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "progress.h"
#include "sf_internal.h"

void sf_progress_note(sf_ctx *ctx, const char *fmt, ...) {
    char note[sizeof ctx->prog_note];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(note, sizeof note, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&ctx->lock);
    memcpy(ctx->prog_note, note, sizeof note);
    pthread_mutex_unlock(&ctx->lock);
}

static void human_bytes(double b, char *out, size_t n) {
    const char *u[] = {"B", "KB", "MB", "GB", "TB"};
    int i = 0;
    while (b >= 1000 && i < 4) b /= 1000, i++;
    snprintf(out, n, i ? "%.1f %s" : "%.0f %s", b, u[i]);
}

static void stage_line(sf_runtime *rt, sf_ctx *c, double elapsed, char *out, size_t n) {
    uint64_t in = atomic_load(&c->msgs_in), outm = atomic_load(&c->msgs_out);
    uint64_t done = atomic_load(&c->prog_done), total = atomic_load(&c->prog_total);
    pthread_mutex_lock(&c->lock);
    int depth = c->inbox_len;
    char unit[16], note[sizeof c->prog_note];
    snprintf(unit, sizeof unit, "%s", c->prog_unit);
    memcpy(note, c->prog_note, sizeof note);
    pthread_mutex_unlock(&c->lock);
    int len = snprintf(out, n, "%-14s in %8llu  out %8llu  queue %2d", c->name, (unsigned long long)in, (unsigned long long)outm, depth);
    if (unit[0] && len > 0 && (size_t)len < n) {
        len += snprintf(out + len, n - (size_t)len, "  %llu", (unsigned long long)done);
        if (total) len += snprintf(out + len, n - (size_t)len, "/%llu (%.0f%%)", (unsigned long long)total, 100.0 * (double)done / (double)total);
        len += snprintf(out + len, n - (size_t)len, " %s, %.0f/s", unit, elapsed > 0 ? (double)done / elapsed : 0.0);
    } else if (len > 0 && (size_t)len < n) /* a stage that keeps no count of its own: its messages */
        len += snprintf(out + len, n - (size_t)len, "  %.0f msgs/s", elapsed > 0 ? (double)(in ? in : outm) / elapsed : 0.0);
    if (note[0] && len > 0 && (size_t)len < n) snprintf(out + len, n - (size_t)len, "  %s", note);
    (void)rt;
}

void sf_progress_tick(sf_runtime *rt, int final) {
    if (rt->o.progress == 0) return;
    double now = sf_now(), elapsed = now - rt->start;
    if (!rt->live) {
        if (final || now - rt->last_report < 10) return;
        rt->last_report = now;
        for (int i = 0; i < rt->n_inst; i++) {
            char line[300];
            stage_line(rt, rt->inst[i], elapsed, line, sizeof line);
            sf_log(SF_LOG_INFO, "progress %s", line);
        }
        return;
    }
    /* The block is drawn by the logger (sf_log_live_draw), which prints log lines above it. Lines
     * are cut to the terminal's width, so none wraps and the count of lines stays right. */
    struct winsize ws;
    int width = ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 1 ? ws.ws_col - 1 : 299;
    size_t cap = (size_t)rt->n_inst * 301 + 1, n = 0;
    char *block = malloc(cap);
    if (!block) return;
    for (int i = 0; i < rt->n_inst; i++) {
        char line[300];
        stage_line(rt, rt->inst[i], elapsed, line, sizeof line);
        n += (size_t)snprintf(block + n, cap - n, "%.*s\n", width, line);
    }
    sf_log_live_draw(block, rt->n_inst);
    free(block);
    if (final) sf_log_live_end(); /* the last state stays on the screen; the summary follows it */
}

void sf_progress_summary(sf_runtime *rt) {
    double elapsed = sf_now() - rt->start;
    int failed = rt->error[0] != 0;
    fprintf(stderr, "saeflow: run summary after %.1f s\n", elapsed);
    if (rt->dropped) fprintf(stderr, "  dropped %llu frames from unknown peers\n", (unsigned long long)rt->dropped);
    for (int i = 0; i < rt->n_inst; i++) {
        sf_ctx *c = rt->inst[i];
        for (int j = 0; j < c->n_out; j++) {
            sf_out_link *l = &c->out[j];
            char b[32], rate[32];
            human_bytes((double)l->bytes, b, sizeof b);
            human_bytes(elapsed > 0 ? (double)l->bytes / elapsed : 0, rate, sizeof rate);
            fprintf(stderr, "  edge %s -> %s: %llu messages, %s, %s/s%s", c->name, l->id, (unsigned long long)l->seq, b, rate,
                    l->eos_sent ? ", end-of-stream sent" : "");
            if (failed) { /* credit the consumer's stage has not returned: sent, not acknowledged */
                int64_t in_flight = l->in_flight;
                fprintf(stderr, "; %llu acknowledged, %lld in flight", (unsigned long long)((int64_t)l->seq - in_flight), (long long)in_flight);
            }
            fputc('\n', stderr);
        }
        for (int j = 0; j < c->n_in; j++) {
            sf_in_link *l = &c->in[j];
            if (!l->remote) continue; /* local edges were printed by their producer */
            char b[32];
            human_bytes((double)l->bytes, b, sizeof b);
            fprintf(stderr, "  edge %s -> %s: %llu messages received, %s%s", l->peer, c->name, (unsigned long long)l->received, b,
                    l->eos ? ", all verified in sequence" : ", stream incomplete");
            uint64_t done = atomic_load(&l->processed);
            if (failed)
                fprintf(stderr, "; %llu processed, %llu not", (unsigned long long)done, (unsigned long long)(l->received - done));
            fputc('\n', stderr);
        }
        for (int j = 0; j < c->n_counters; j++)
            fprintf(stderr, "  %s: %s = %lld\n", c->name, c->counters[j].name, (long long)c->counters[j].value);
    }
}
