/* Stages for testing and measuring the engine itself: a deterministic tensor generator and a
 * sink that proves what it received (checksums, no duplicate, nothing missing). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <time.h>

#include "saeflow.h"
#include "sf_util.h"

/* FNV-1a over the tensor bytes: cheap, and any corruption in transit changes it. */
static uint64_t fnv1a(const void *p, size_t n) {
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void sleep_us(int64_t us) {
    if (us <= 0) return;
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

/* ---- tensor_gen ---- */

typedef struct gen {
    int64_t count, next, rows, cols, delay_us;
    uint64_t seed;
    int fill;
} gen;

static const sf_param_def gen_params[] = {
    {"count", SF_PARAM_INT, "1000", "messages to generate (split across replicas)", "[0, inf)"},
    {"rows", SF_PARAM_INT, "16", "tensor rows", "[1, inf)"},
    {"cols", SF_PARAM_INT, "64", "tensor columns (float32)", "[1, inf)"},
    {"seed", SF_PARAM_INT, "1", "random seed"},
    {"delay_us", SF_PARAM_INT, "0", "pause after each message (a slow producer)"},
    {"fill", SF_PARAM_BOOL, "true", "fill tensors with random numbers and a checksum (false: with one byte value per message, no checksum, for throughput benchmarks)"},
    {NULL, 0, NULL, NULL},
};

/* The parameters, for check and init alike: a tensor must fit a message. */
static int gen_check(sf_ctx *ctx) {
    int64_t shape[2] = {sf_param_int(ctx, "rows"), sf_param_int(ctx, "cols")};
    size_t nbytes;
    if (sf_tensor_size("tensor", SF_F32, 2, shape, &nbytes) != SF_OK || nbytes > SF_MSG_MAX_BYTES)
        return sf_param_fail(ctx, "rows", "%lld x %lld float32 is more than a message holds (%zu bytes): lower rows or cols",
                             (long long)shape[0], (long long)shape[1], SF_MSG_MAX_BYTES);
    return SF_OK;
}

static int gen_init(sf_ctx *ctx, void **state) {
    if (gen_check(ctx) != SF_OK) return SF_ERR;
    gen *g = sf_zalloc("tensor_gen state", 1, sizeof *g);
    if (!g) return SF_ERR;
    g->count = sf_param_int(ctx, "count");
    g->rows = sf_param_int(ctx, "rows");
    g->cols = sf_param_int(ctx, "cols");
    g->seed = (uint64_t)sf_param_int(ctx, "seed");
    g->delay_us = sf_param_int(ctx, "delay_us");
    g->fill = sf_param_bool(ctx, "fill");
    g->next = sf_replica_index(ctx);
    *state = g;
    return SF_OK;
}

static int gen_produce(sf_ctx *ctx, void *state) {
    gen *g = state;
    if (g->next >= g->count || sf_stopping(ctx)) return SF_DONE;
    sf_msg *m = sf_msg_new();
    int64_t shape[2] = {g->rows, g->cols};
    float *x = sf_msg_put_tensor_inplace(m, "tensor", SF_F32, 2, shape);
    if (!x) { /* out of memory: sf_last_error() says how much */
        sf_msg_free(m);
        return SF_ERR;
    }
    uint64_t s = g->seed * 1000003u + (uint64_t)g->next, sum = 0;
    if (g->fill) {
        for (int64_t i = 0; i < g->rows * g->cols; i++) x[i] = (float)(splitmix(&s) >> 40) / (float)(1 << 24) - 0.5f;
        sum = fnv1a(x, (size_t)(g->rows * g->cols) * 4);
    } else {
        memset(x, (int)(g->next & 0xff), (size_t)(g->rows * g->cols) * 4); /* written, as any producer's data */
    }
    sf_msg_put_int(m, "seq", g->next);
    sf_msg_put_int(m, "checksum", (int64_t)(sum >> 1));
    g->next += sf_replica_count(ctx);
    sf_progress(ctx, (uint64_t)g->next, (uint64_t)g->count, "msgs");
    sleep_us(g->delay_us);
    return sf_emit(ctx, m);
}

static const sf_stage_def tensor_gen = {
    .name = "tensor_gen",
    .summary = "generates deterministic random float32 tensors (for tests and benchmarks)",
    .doc = "Emits `count` messages {seq: int, tensor: f32 [rows, cols], checksum: int}; replicas split the sequence "
           "numbers between them (replica r makes seq = r, r + replicas, ...).",
    .params = gen_params,
    .min_inputs = 0, .max_inputs = 0, .has_output = 1,
    .init = gen_init, .produce = gen_produce,
    .destroy = free,
    .check = gen_check,
    SF_STAGE_DEF_SIZES,
};

/* ---- verify_sink ---- */

typedef struct sink {
    int64_t expect, delay_us, received;
    uint8_t *seen; /* one bit... a byte per expected seq */
    int64_t seen_len, seq_sum, bytes;
    double t_first, t_last; /* when the first and the last message arrived */
    const char *report;
} sink;

static const sf_param_def sink_params[] = {
    {"expect", SF_PARAM_INT, "-1", "messages that must arrive, seq 0..expect-1 each once (-1: don't check totals)"},
    {"delay_us", SF_PARAM_INT, "0", "pause per message (a slow consumer)"},
    {"report", SF_PARAM_STRING, "", "append a line 'NAME received SEQSUM' to this file at the end"},
    {"fail_at", SF_PARAM_INT, "-1", "fail on the message with this seq (tests error handling)"},
    {"checksums", SF_PARAM_BOOL, "true", "verify each tensor's checksum (false: count only, for throughput benchmarks)"},
    {NULL, 0, NULL, NULL},
};

static int sink_init(sf_ctx *ctx, void **state) {
    sink *s = sf_zalloc("verify_sink state", 1, sizeof *s);
    if (!s) return SF_ERR;
    *state = s;
    s->expect = sf_param_int(ctx, "expect");
    s->delay_us = sf_param_int(ctx, "delay_us");
    s->report = sf_param_str(ctx, "report");
    s->seen_len = s->expect > 0 ? s->expect : 1 << 20;
    s->seen = sf_zalloc("verify_sink's table of sequence numbers (a byte per expected message)", (size_t)s->seen_len, 1);
    return s->seen ? SF_OK : SF_ERR;
}

static int sink_message(sf_ctx *ctx, void *state, int input, const sf_msg *m) {
    (void)input;
    sink *s = state;
    int64_t seq, checksum;
    sf_tensor t;
    if (sf_msg_get_int(m, "seq", &seq) || sf_msg_get_int(m, "checksum", &checksum) || sf_msg_get_tensor(m, "tensor", &t))
        return SF_ERR;
    if (seq == sf_param_int(ctx, "fail_at")) return sf_fail("failing on seq %lld as asked (fail_at)", (long long)seq);
    if (sf_param_bool(ctx, "checksums") && (int64_t)(fnv1a(t.data, t.nbytes) >> 1) != checksum) return sf_fail("message %lld: checksum mismatch (corrupted in transit)", (long long)seq);
    if (seq < 0 || (s->expect >= 0 && seq >= s->expect)) return sf_fail("message seq %lld is out of range", (long long)seq);
    if (seq < s->seen_len) {
        if (s->seen[seq]) return sf_fail("message %lld arrived twice", (long long)seq);
        s->seen[seq] = 1;
    }
    s->t_last = sf_now();
    if (s->received++ == 0) s->t_first = s->t_last;
    s->seq_sum += seq;
    s->bytes += (int64_t)t.nbytes;
    sf_count(ctx, "received", 1);
    sf_progress(ctx, (uint64_t)s->received, s->expect > 0 ? (uint64_t)s->expect : 0, "msgs");
    sleep_us(s->delay_us);
    return SF_OK;
}

static int sink_eos(sf_ctx *ctx, void *state) {
    sink *s = state;
    (void)ctx;
    if (s->expect >= 0 && s->received != s->expect)
        return sf_fail("received %lld messages, expected %lld: %lld missing", (long long)s->received, (long long)s->expect,
                       (long long)(s->expect - s->received));
    sf_log(SF_LOG_INFO, "verified %lld messages (%lld bytes of tensors), each once, checksums ok", (long long)s->received, (long long)s->bytes);
    if (s->received > 1 && s->t_last > s->t_first) /* as bench/zmq_raw times its receiver */
        sf_log(SF_LOG_INFO, "receive rate %.1f MB/s of tensors, first to last message (%.3f s)",
               (double)s->bytes * (double)(s->received - 1) / (double)s->received / (s->t_last - s->t_first) / 1e6,
               s->t_last - s->t_first);
    return SF_OK;
}

static int sink_finish(sf_ctx *ctx, void *state) {
    sink *s = state;
    if (!s->report || !*s->report) return SF_OK;
    char line[256];
    int n = snprintf(line, sizeof line, "%s %lld %lld\n", sf_instance_name(ctx), (long long)s->received, (long long)s->seq_sum);
    int fd = open(s->report, O_WRONLY | O_APPEND | O_CREAT, 0644);
    if (fd < 0 || write(fd, line, (size_t)n) != n) return sf_fail("cannot write report %s", s->report);
    close(fd);
    return SF_OK;
}

static void sink_destroy(void *state) {
    sink *s = state;
    free(s->seen);
    free(s);
}

static const sf_stage_def verify_sink = {
    .name = "verify_sink",
    .summary = "checks tensor_gen messages: checksums, no duplicate, nothing missing",
    .doc = "Reads {seq, tensor, checksum} messages; fails on a corrupt or repeated message, and at the end if fewer than "
           "`expect` arrived. With `report`, appends its count and sum of seq to a file (for replicated sinks).",
    .params = sink_params,
    .min_inputs = 1, .max_inputs = 8, .has_output = 0,
    .init = sink_init, .on_message = sink_message, .on_eos = sink_eos, .finish = sink_finish,
    .destroy = sink_destroy,
    SF_STAGE_DEF_SIZES,
};

/* ---- relay ---- */

static const sf_param_def relay_params[] = {
    {"delay_us", SF_PARAM_INT, "0", "pause per message (a slow stage in the middle)"},
    {NULL, 0, NULL, NULL},
};

static int relay_message(sf_ctx *ctx, void *state, int input, const sf_msg *m) {
    (void)state, (void)input;
    sleep_us(sf_param_int(ctx, "delay_us"));
    return sf_emit(ctx, sf_msg_clone(m));
}

static const sf_stage_def relay = {
    .name = "relay",
    .summary = "passes every message on unchanged (for multi-hop tests)",
    .doc = "Forwards each message of any of its inputs to its output as it is.",
    .params = relay_params,
    .min_inputs = 1, .max_inputs = 8, .has_output = 1,
    .on_message = relay_message,
    SF_STAGE_DEF_SIZES,
};

SF_PLUGIN(&tensor_gen, &verify_sink, &relay)
