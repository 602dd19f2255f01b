/* libFuzzer target: untrusted pipeline files through the parser and its validation
 * (sf_pipeline_load), with every parameter of the result read back.
 *
 * The stages a file may name are a fixed table here in place of the plugin loader: a source, a
 * filter and two sinks with parameters of every type and a required one (the shapes of
 * tensor_gen, relay, verify_sink and zmq_out, which the seeds from the error tests use). 'plugin'
 * lines load nothing (a fuzzer must not dlopen what it finds), they fail as a missing file does. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pipeline.h"

static int produce(sf_ctx *ctx, void *state) { (void)ctx, (void)state; return SF_DONE; }
static int on_message(sf_ctx *ctx, void *state, int input, const sf_msg *m) { (void)ctx, (void)state, (void)input, (void)m; return SF_OK; }

static const sf_param_def gen_params[] = {
    {"count", SF_PARAM_INT, "1000", ""}, {"rows", SF_PARAM_INT, "16", ""}, {"cols", SF_PARAM_INT, "64", ""},
    {"seed", SF_PARAM_INT, "1", ""}, {"delay_us", SF_PARAM_INT, "0", ""}, {"fill", SF_PARAM_BOOL, "true", ""},
    {NULL, 0, NULL, NULL}};
static const sf_param_def relay_params[] = {{"delay_us", SF_PARAM_INT, "0", ""}, {"scale", SF_PARAM_FLOAT, "1.0", ""}, {NULL, 0, NULL, NULL}};
static const sf_param_def sink_params[] = {
    {"expect", SF_PARAM_INT, "-1", ""}, {"report", SF_PARAM_STRING, "", ""}, {"checksums", SF_PARAM_BOOL, "true", ""},
    {NULL, 0, NULL, NULL}};
static const sf_param_def out_params[] = {{"endpoint", SF_PARAM_STRING, NULL, ""}, {"bind", SF_PARAM_BOOL, "true", ""}, {NULL, 0, NULL, NULL}};

static const sf_stage_def defs[] = {
    {.name = "tensor_gen", .params = gen_params, .has_output = 1, .produce = produce},
    {.name = "relay", .params = relay_params, .min_inputs = 1, .max_inputs = 8, .has_output = 1, .on_message = on_message},
    {.name = "verify_sink", .params = sink_params, .min_inputs = 1, .max_inputs = 8, .on_message = on_message},
    {.name = "zmq_out", .params = out_params, .min_inputs = 1, .max_inputs = 1, .on_message = on_message},
};
static sf_stage_entry entries[sizeof defs / sizeof *defs];

const sf_stage_entry *sf_plugins_find(const char *name) {
    for (size_t i = 0; i < sizeof defs / sizeof *defs; i++)
        if (strcmp(defs[i].name, name) == 0) return &entries[i];
    return NULL;
}

const sf_stage_entry *sf_plugins_at(size_t i) { return i < sizeof defs / sizeof *defs ? &entries[i] : NULL; }

int sf_plugins_load_file(const char *path) { return sf_fail("cannot load plugin %s: plugins are not loaded while fuzzing", path); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!entries[0].def)
        for (size_t i = 0; i < sizeof defs / sizeof *defs; i++) entries[i] = (sf_stage_entry){&defs[i], "fuzz", SF_ABI_VERSION};
    char path[] = "/tmp/sf-fuzz-flow-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return 0;
    if (write(fd, data, size) != (ssize_t)size) size = 0;
    close(fd);
    /* a command-line override, as `saeflow check FILE n=7`, for the files that declare n (for the
     * others it is an error before validation) */
    char over[] = "n=7";
    char *overrides[] = {over};
    int declares_n = memmem(data, size, "set n ", 6) != NULL;
    sf_pipeline *p = sf_pipeline_load(path, overrides, declares_n);
    if (p) {
        volatile size_t sum = 0;
        for (int i = 0; i < p->n_stages; i++) {
            const sf_stage_decl *st = &p->stages[i];
            for (const sf_param_def *pd = st->entry->def->params; pd && pd->name; pd++) {
                const char *v = sf_pipeline_param(st, pd->name);
                sum += v ? strlen(v) : 0;
            }
            for (int j = 0; j < st->n_inputs; j++) sum += (size_t)st->input_idx[j] < (size_t)p->n_stages;
            for (int r = 0; r < st->replicas; r++) sum += (size_t)(sf_replica_host(st, r) + 1);
        }
        (void)sum;
        sf_pipeline_free(p);
    }
    unlink(path);
    return 0;
}
