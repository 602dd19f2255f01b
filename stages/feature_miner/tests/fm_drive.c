/* fm_drive — runs the feature_miner stage's callbacks without the runtime, for tests:
 *
 *   fm_drive stage MESSAGES_FILE [name=value...]   messages: [u32 little-endian length][msgpack]...
 *   fm_drive report ARGS...                        = saeflow report ARGS...
 *   fm_drive classify ARGS...                      = saeflow classify ARGS...
 *
 * It stands in for the runtime's side of saeflow.h (parameters with their declared defaults,
 * progress and counters as no-ops) so the stage is tested exactly as the plugin runs it.
 * FM_DRIVE_TIMES=1 prints the time spent streaming (init + messages) and at end of stream. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fm_classify.h"
#include "fm_report.h"
#include "saeflow.h"
#include "sf_params.h"
#include "sf_util.h"

const sf_stage_def *const *saeflow_stages(void);

struct sf_ctx {
    const sf_stage_def *def;
    int argc;
    char **argv; /* name=value */
};

static const char *param(sf_ctx *ctx, const char *name) {
    size_t n = strlen(name);
    for (int i = 0; i < ctx->argc; i++)
        if (strncmp(ctx->argv[i], name, n) == 0 && ctx->argv[i][n] == '=') return ctx->argv[i] + n + 1;
    for (const sf_param_def *p = ctx->def->params; p->name; p++)
        if (strcmp(p->name, name) == 0) return p->default_value;
    fprintf(stderr, "fm_drive: the stage asked for undeclared parameter %s\n", name);
    exit(2);
}

const char *sf_param_str(sf_ctx *ctx, const char *name) { return param(ctx, name); }
int64_t sf_param_int(sf_ctx *ctx, const char *name) { const char *v = param(ctx, name); return v ? strtoll(v, NULL, 10) : 0; }
double sf_param_float(sf_ctx *ctx, const char *name) { const char *v = param(ctx, name); return v ? strtod(v, NULL) : 0; }
int sf_param_bool(sf_ctx *ctx, const char *name) {
    const char *v = param(ctx, name);
    return v && (strcmp(v, "true") == 0 || strcmp(v, "1") == 0);
}
int sf_param_fail(sf_ctx *ctx, const char *name, const char *fmt, ...) {
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    (void)ctx;
    return sf_fail("parameter '%s': %s", name, msg);
}
int sf_emit(sf_ctx *ctx, sf_msg *m) { (void)ctx, sf_msg_free(m); return sf_fail("fm_drive: a sink emitted"); }
int sf_stopping(sf_ctx *ctx) { (void)ctx; return 0; }
int sf_replica_index(sf_ctx *ctx) { (void)ctx; return 0; }
int sf_replica_count(sf_ctx *ctx) { (void)ctx; return 1; }
const char *sf_instance_name(sf_ctx *ctx) { (void)ctx; return "feature_miner"; }
void sf_progress(sf_ctx *ctx, uint64_t done, uint64_t total, const char *unit) { (void)ctx, (void)done, (void)total, (void)unit; }
void sf_count(sf_ctx *ctx, const char *counter, int64_t delta) { (void)ctx, (void)counter, (void)delta; }

static int fail(const char *what) {
    fprintf(stderr, "fm_drive: %s: %s\n", what, sf_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "report") == 0) return fm_report_main(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "classify") == 0) return fm_classify_main(argc - 1, argv + 1);
    if (argc < 3 || strcmp(argv[1], "stage") != 0) {
        fprintf(stderr, "usage: fm_drive stage MESSAGES [name=value...] | fm_drive report|classify ARGS...\n");
        return 2;
    }
    sf_ctx ctx = {saeflow_stages()[0], argc - 3, argv + 3};
    const sf_stage_def *def = ctx.def;
    FILE *fp = fopen(argv[2], "rb");
    if (!fp) {
        perror(argv[2]);
        return 1;
    }
    void *state = NULL;
    double t0 = sf_now();
    int rc = 0;
    for (const sf_param_def *p = def->params; rc == 0 && p->name; p++) /* the ranges, as saeflow check */
        if (sf_range_check(p, param(&ctx, p->name) ? param(&ctx, p->name) : "") != SF_OK)
            rc = fail(p->name);
    if (rc == 0 && def->init(&ctx, &state) != SF_OK) rc = fail("init");
    unsigned char hdr[4];
    while (rc == 0 && fread(hdr, 1, 4, fp) == 4) {
        size_t len = (size_t)hdr[0] | (size_t)hdr[1] << 8 | (size_t)hdr[2] << 16 | (size_t)hdr[3] << 24;
        void *buf = malloc(len ? len : 1);
        if (!buf || fread(buf, 1, len, fp) != len) {
            free(buf);
            fprintf(stderr, "fm_drive: truncated message file\n");
            rc = 1;
            break;
        }
        sf_msg *m = sf_msg_parse(buf, len);
        if (!m) rc = fail("parse");
        else if (def->on_message(&ctx, state, 0, m) != SF_OK) rc = fail("on_message");
        sf_msg_free(m);
        free(buf);
    }
    fclose(fp);
    double t1 = sf_now();
    if (rc == 0 && def->on_eos && def->on_eos(&ctx, state) != SF_OK) rc = fail("on_eos");
    if (getenv("FM_DRIVE_TIMES")) fprintf(stderr, "fm_drive: stream %.3f s, end of stream %.3f s\n", t1 - t0, sf_now() - t1);
    if (def->finish) def->finish(&ctx, state);
    if (def->destroy) def->destroy(state);
    return rc;
}
