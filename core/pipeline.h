/* pipeline.h — pipeline files: parsing and validation against the loaded stages.
 *
 *     # comment
 *     set layer = 11                      # a variable; `saeflow run FILE layer=12` overrides it
 *     plugin "build/libmystage.so"        # an extra plugin, relative to the file
 *     host a = tcp://10.0.0.1:5700        # hosts (optional): where each host's stages listen
 *     stage tok = tokenizer {             # stage NAME = TYPE { ... }
 *         input = src                     # reserved keys: input, replicas, host, distribute
 *         file = "${suite}/tokenizer.model"
 *     }
 */
#ifndef SF_PIPELINE_H
#define SF_PIPELINE_H

#include "plugins.h"

typedef struct sf_kv {
    char *key, *value;
    int line;
} sf_kv;

typedef struct sf_host {
    char *name, *endpoint; /* tcp://ADDR:PORT (first port) or ipc://DIR */
    int line;
} sf_host;

typedef struct sf_stage_decl {
    char *name, *type;
    int line;
    sf_kv *params;
    int n_params;
    char **inputs; /* stage names */
    int n_inputs, inputs_line;
    int *input_idx; /* resolved: index into the pipeline's stages */
    int replicas;
    int broadcast; /* distribute = broadcast: every replica gets every message */
    int host;      /* index into hosts, or -1 */
    const sf_stage_entry *entry;
} sf_stage_decl;

typedef struct sf_pipeline {
    char *path;
    sf_stage_decl *stages;
    int n_stages;
    sf_host *hosts;
    int n_hosts;
    sf_kv *vars;
    int n_vars;
} sf_pipeline;

/* Parses and validates path; overrides are "key=value" strings for `set` variables.
 * NULL with sf_last_error() as "file:line: what is wrong (how to fix it)". */
sf_pipeline *sf_pipeline_load(const char *path, char **overrides, int n_overrides);
void sf_pipeline_free(sf_pipeline *p);
/* A parameter's value as written (after ${var} substitution), or its default, or NULL. */
const char *sf_pipeline_param(const sf_stage_decl *s, const char *name);

#endif
