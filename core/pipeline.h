/* pipeline.h — pipeline files: parsing and validation against the loaded stages.
 *
 *     # comment
 *     set layer = 11                      # a variable; `saeflow run FILE layer=12` overrides it
 *     plugin "build/libmystage.so"        # an extra plugin, relative to the file
 *     host a = tcp://10.0.0.1:5700        # hosts (optional): where each host's stages listen
 *     curve "keys"                        # CurveZMQ keys (saeflow keygen keys): tcp edges encrypted
 *                                         # and only peers holding the key may connect
 *     stage tok = tokenizer {             # stage NAME = TYPE { ... }
 *         input = src                     # reserved keys: input, replicas, host, distribute
 *         host = a, b                     # replica r runs on the (r mod n)-th host listed (extra hosts: unused)
 *         file = "${suite}/tokenizer.model"
 *     }
 */
#ifndef SF_PIPELINE_H
#define SF_PIPELINE_H

#include "plugins.h"

/* The most stage instances (replicas included) one pipeline may have: each is a thread with
 * its sockets, and `check` refuses more with the number. */
#define SF_MAX_INSTANCES 1024

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
    int *hosts;    /* replica r runs on hosts[r % n_hosts] (indexes into the pipeline's hosts) */
    int n_hosts;   /* 0: no hosts declared */
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
    char *curve_dir; /* from a 'curve' line (relative to the working directory), or NULL */
} sf_pipeline;

/* The host (index into p->hosts) of a stage's replica r, or -1 without hosts. */
static inline int sf_replica_host(const sf_stage_decl *s, int r) { return s->n_hosts ? s->hosts[r % s->n_hosts] : -1; }

/* Parses and validates path; overrides are "key=value" strings for `set` variables.
 * NULL with sf_last_error() as "file:line: what is wrong (how to fix it)". */
sf_pipeline *sf_pipeline_load(const char *path, char **overrides, int n_overrides);
void sf_pipeline_free(sf_pipeline *p);
/* A parameter's value as written (after ${var} substitution), or its default, or NULL. */
const char *sf_pipeline_param(const sf_stage_decl *s, const char *name);

#endif
