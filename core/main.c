/* saeflow: the command line. Built-in commands run pipelines and describe stages; plugins add
 * more (tokenize, forward, shards, report...). */
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas.h"
#include "curve.h"
#include "launch.h"
#include "pipeline.h"
#include "plugins.h"
#include "runtime.h"
#include "sf_internal.h"
#include "sf_kinds.h"
#include "sf_params.h"

static void usage(FILE *out) {
    fprintf(out,
            "saeflow %s — a streaming dataflow engine for studying how language models learn\n\n"
            "usage:\n"
            "  saeflow run FILE [options] [KEY=VALUE ...]   run a pipeline (KEY=VALUE overrides its 'set' variables)\n"
            "  saeflow check FILE [KEY=VALUE ...]           validate a pipeline without running it: its syntax, and each\n"
            "                                               stage's parameters and the files they name (--host NAME:\n"
            "                                               only that host's stages); run does the same first\n"
            "  saeflow launch FILE [options] [KEY=VALUE ...] run every host's part over ssh (SAEFLOW_SSH, SAEFLOW_BIN)\n"
            "  saeflow stages [NAME | --list | --kinds]     every stage's parameters, types, defaults and docs;\n"
            "                                               NAME: one stage; --list (-s): one line per stage;\n"
            "                                               --kinds: the message kinds and their fields\n"
            "  saeflow keygen DIR                           write a CurveZMQ keypair for a pipeline's 'curve \"DIR\"' line\n"
            "  saeflow version                              print the version and stage ABI\n"
            "  saeflow help                                 this text\n",
            SF_VERSION);
    size_t n = sf_plugins_count();
    int any = 0;
    for (size_t i = 0; i < n; i++)
        for (const sf_command *c = sf_plugins_at(i)->def->commands; c && c->name; c++) {
            if (!any++) fprintf(out, "\ncommands from stages:\n");
            char head[160];
            snprintf(head, sizeof head, "%s %s", c->name, c->usage ? c->usage : "");
            fprintf(out, "  saeflow %-36s %s\n", head, c->summary ? c->summary : "");
        }
    fprintf(out,
            "\nrun options:\n"
            "  --host NAME            run the stages placed on host NAME (pipelines with 'host' lines)\n"
            "  --sweep KEY=V1,V2,...  run the pipeline once per value of variable KEY, in order (e.g. step=a,b,c)\n"
            "  --credit N             messages in flight per edge link (default 8; small ones: up to 256 within 1 MiB)\n"
            "  --connect-timeout S    seconds to wait for peers at start (default 60)\n"
            "  --peer-timeout S       seconds without a heartbeat before a peer is lost (default 10)\n"
            "  --progress, --no-progress   live status (default: on a terminal; log lines otherwise)\n"
            "  --stop-on-stdin-eof    end-of-file on standard input stops the run like SIGTERM (launch uses it)\n"
            "\nenvironment:\n"
            "  SAEFLOW_PLUGIN_PATH    extra directories of stage plugins (.so), ':'-separated\n"
            "  SAEFLOW_LOG            debug | info | warn | error (default info)\n"
            "  SAEFLOW_SSH            launch: the ssh command (default 'ssh -o BatchMode=yes'), given ADDR and a command\n"
            "  SAEFLOW_BIN            launch: saeflow's path on the hosts (default: this binary's path)\n"
            "  OPENBLAS_CORETYPE      OpenBLAS kernel; saeflow picks one itself where OpenBLAS misdetects the CPU\n"
            "\nsignals: SIGINT, SIGTERM or SIGHUP stops the sources, drains and lets stages finish (a trainer saves),\n"
            "then exits 130; the interrupt reaches the other hosts' parts too. A second signal aborts at once.\n"
            "\nexit codes: 0 success, 1 a stage failed, 2 bad usage or pipeline file, 130 interrupted\n");
}

static const char *type_name(sf_param_type t) {
    static const char *names[] = {"int", "float", "bool", "string"};
    return names[t];
}

static void print_stage(const sf_stage_entry *e, int full) {
    const sf_stage_def *d = e->def;
    if (!full) {
        const char *kind = d->max_inputs == 0 ? "source" : !d->has_output ? "sink" : "filter";
        char flow[64];
        snprintf(flow, sizeof flow, "%s -> %s", d->max_inputs ? d->takes ? d->takes : "any" : "",
                 d->has_output ? d->emits ? d->emits : "any" : "");
        printf("  %-16s %-7s %-26s %s\n", d->name, kind, flow, d->summary ? d->summary : "");
        return;
    }
    printf("%s — %s\n\n", d->name, d->summary ? d->summary : "");
    if (d->doc) printf("%s\n\n", d->doc);
    printf("plugin:  %s\n", e->path);
    if (d->max_inputs == 0) printf("inputs:  none (source)\n");
    else printf("inputs:  %d to %d\n", d->min_inputs, d->max_inputs);
    printf("output:  %s\n", d->has_output ? "yes" : "none (sink)");
    if (d->max_inputs) printf("takes:   %s\n", d->takes ? d->takes : "any message (no kind declared)");
    if (d->has_output) printf("emits:   %s\n", d->emits ? d->emits : "any message (no kind declared)");
    printf("\nparameters:\n");
    for (const sf_param_def *p = d->params; p && p->name; p++) {
        char range[200] = "";
        if (p->range) snprintf(range, sizeof range, " (%s)", sf_range_text(p, range + 100, 100));
        printf("  %-18s %-7s %-22s %s%s\n", p->name, type_name(p->type), p->default_value ? p->default_value : "(required)",
               p->doc ? p->doc : "", range);
    }
    if (d->max_inputs) printf("  %-18s %-7s %-22s %s\n", "input", "list", "", "stages to read from, comma-separated");
    printf("  %-18s %-7s %-22s %s\n", "replicas", "int", "1", "parallel instances of this stage");
    printf("  %-18s %-7s %-22s %s\n", "distribute", "string", "share", "share: each message to one replica; broadcast: to all");
    printf("  %-18s %-7s %-22s %s\n", "host", "string", "", "host (from a 'host' line) that runs this stage");
    for (const sf_command *c = d->commands; c && c->name; c++) {
        if (c == d->commands) printf("\ncommands:\n");
        printf("  saeflow %s %s\n      %s\n", c->name, c->usage ? c->usage : "", c->summary ? c->summary : "");
    }
}

/* saeflow stages --kinds: the message kinds (core/MESSAGES.md) with their fields, from the code. */
static void print_kinds(void) {
    for (const sf_kind_def *k = sf_kinds(); k->name; k++) {
        printf("%s%s:\n", k == sf_kinds() ? "" : "\n", k->name);
        for (const sf_kind_field *f = k->fields; f->key; f++)
            printf("  %-12s %s%s\n", f->key, f->type, f->optional ? ", optional" : "");
    }
}

/* saeflow stages: every stage's full reference; --list: one line each; NAME: that stage only;
 * --kinds: the message kinds. */
static int cmd_stages(int argc, char **argv) {
    int list = argc > 2 && (!strcmp(argv[2], "--list") || !strcmp(argv[2], "-s"));
    if (argc > 2 && !strcmp(argv[2], "--kinds")) {
        print_kinds();
        return 0;
    }
    if (argc > 2 && !list) {
        const sf_stage_entry *e = sf_plugins_find(argv[2]);
        if (!e) {
            fprintf(stderr, "saeflow: no stage '%s' (saeflow stages --list lists them)\n", argv[2]);
            return 2;
        }
        print_stage(e, 1);
        return 0;
    }
    if (list) printf("stages (saeflow stages NAME for parameters):\n");
    for (size_t i = 0; i < sf_plugins_count(); i++) {
        if (!list && i) printf("\n------------------------------------------------------------------------\n\n");
        print_stage(sf_plugins_at(i), !list);
    }
    return 0;
}

/* Splits run/check arguments into options and KEY=VALUE overrides. */
static int parse_run_args(int argc, char **argv, sf_run_options *o, char ***overrides, int *n_over, const char **sweep) {
    *overrides = calloc((size_t)argc + 1, sizeof(char *)); /* one spare slot for the sweep value */
    *n_over = 0;
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i];
        int has_value = i + 1 < argc;
        if (!strcmp(a, "--host") && has_value) o->host = argv[++i];
        else if (!strcmp(a, "--sweep") && has_value) *sweep = argv[++i];
        else if (!strcmp(a, "--credit") && has_value) o->credit = atoi(argv[++i]);
        else if (!strcmp(a, "--connect-timeout") && has_value) o->connect_timeout = atof(argv[++i]);
        else if (!strcmp(a, "--peer-timeout") && has_value) o->peer_timeout = atof(argv[++i]);
        else if (!strcmp(a, "--progress")) o->progress = 1;
        else if (!strcmp(a, "--no-progress")) o->progress = 0;
        else if (!strcmp(a, "--stop-on-stdin-eof")) o->stop_on_stdin_eof = 1;
        else if (a[0] != '-' && strchr(a, '=')) (*overrides)[(*n_over)++] = argv[i];
        else {
            fprintf(stderr, "saeflow: unknown argument '%s' (saeflow help)\n", a);
            return 2;
        }
    }
    if (o->credit < 1 || o->credit > 4096) {
        fprintf(stderr, "saeflow: --credit must be from 1 to 4096\n");
        return 2;
    }
    return 0;
}

static void remember_signal(int signum) { sf_signal_before_run = signum; }

/* Loads (with overrides) and checks or runs one pipeline. */
static int run_once(const char *path, char **over, int n_over, const sf_run_options *o, int run) {
    if (run) { /* until sf_run takes the signals over: a stop during the checks is acted on when it starts */
        struct sigaction sa = {.sa_handler = remember_signal};
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL), sigaction(SIGTERM, &sa, NULL), sigaction(SIGHUP, &sa, NULL);
    }
    sf_pipeline *p = sf_pipeline_load(path, over, n_over);
    if (!p) {
        fprintf(stderr, "%s\n", sf_last_error());
        return 2;
    }
    /* every stage's own check (its parameters, the files they name) before anything starts */
    int findings = sf_check_stages(p, o->host);
    if (findings) {
        fprintf(stderr, "%s: %d problem%s found%s\n", path, findings, findings > 1 ? "s" : "", run ? ": nothing was started" : "");
        sf_pipeline_free(p);
        return 2;
    }
    int rc = 0;
    if (!run) {
        int n = 0;
        for (int i = 0; i < p->n_stages; i++) n += p->stages[i].replicas;
        printf("%s: ok (%d stages, %d instances, %d hosts)\n", path, p->n_stages, n, p->n_hosts);
    } else {
        rc = sf_run(p, o);
    }
    sf_pipeline_free(p);
    return rc;
}

static int cmd_run(int argc, char **argv, int run) {
    if (argc < 3) {
        fprintf(stderr, "usage: saeflow %s FILE [KEY=VALUE ...]\n", argv[1]);
        return 2;
    }
    sf_run_options o = {.credit = 8, .connect_timeout = 60, .peer_timeout = 10, .progress = -1};
    char **over;
    int n_over;
    const char *sweep = NULL;
    int rc = parse_run_args(argc, argv, &o, &over, &n_over, &sweep);
    if (rc) return free(over), rc;
    /* From the first log line on (sf_run keeps it so): a session lost while the run starts up (ssh
     * killed during the checks or the BLAS check) closes our stderr, and a write must then be EPIPE,
     * not death by SIGPIPE, so stdin's end-of-file still stops the run cleanly and the other hosts
     * hear of it instead of waiting out --connect-timeout for a producer that died. */
    if (run) signal(SIGPIPE, SIG_IGN);
    if (run && sf_blas_verify(1) != SF_OK) {
        fprintf(stderr, "saeflow: %s\n", sf_last_error());
        free(over);
        return 1;
    }
    if (!sweep) {
        rc = run_once(argv[2], over, n_over, &o, run);
        free(over);
        return rc;
    }
    /* --sweep KEY=V1,V2,...: the same pipeline once per value, in order, stopping at a failure */
    const char *eq = strchr(sweep, '=');
    if (!eq || eq == sweep || !eq[1]) {
        fprintf(stderr, "saeflow: --sweep takes KEY=VALUE1,VALUE2,...\n");
        free(over);
        return 2;
    }
    char *values = strdup(eq + 1), *save = NULL;
    int n = 1, i = 0;
    for (const char *c = values; *c; c++) n += *c == ',';
    for (char *v = strtok_r(values, ",", &save); v && rc == 0; v = strtok_r(NULL, ",", &save)) {
        char kv[4096];
        snprintf(kv, sizeof kv, "%.*s=%s", (int)(eq - sweep), sweep, v);
        over[n_over] = kv;
        fprintf(stderr, "saeflow: sweep %d/%d: %s\n", ++i, n, kv);
        rc = run_once(argv[2], over, n_over + 1, &o, run);
    }
    free(values);
    free(over);
    return rc;
}

/* Large message buffers (tensors of several MiB) are allocated by one thread and freed by another
 * (ZeroMQ's I/O thread) all the time. glibc's defaults map each one afresh and unmap it on free, or
 * trim the heap, so every buffer is page-faulted in again: 16 MiB tensors moved at 0.6x raw ZeroMQ.
 * Keeping such buffers in the heap (bounded anyway by the edges' credit) removes that. A user's
 * MALLOC_*_ environment settings win. */
static void tune_malloc(void) {
    if (!getenv("MALLOC_MMAP_THRESHOLD_")) mallopt(M_MMAP_THRESHOLD, 64 << 20);
    if (!getenv("MALLOC_TRIM_THRESHOLD_")) mallopt(M_TRIM_THRESHOLD, 128 << 20);
}

/* `saeflow CMD ... --help` (or -h) anywhere after the command asks for help, never for a file or a
 * directory of that name. */
static int asks_help(int argc, char **argv) {
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return 1;
    return 0;
}

int main(int argc, char **argv) {
    tune_malloc();
    sf_log_init_from_env();
    const char *cmd = argc > 1 ? argv[1] : "help";
    int verbose = !strcmp(cmd, "run");
    sf_blas_choose_core(); /* before any plugin can load OpenBLAS */
    sf_plugins_load_default(!verbose && strcmp(cmd, "stages") != 0);

    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("saeflow %s (stage ABI %u)\n", SF_VERSION, SF_ABI_VERSION);
        return 0;
    }
    int builtin = !strcmp(cmd, "stages") || !strcmp(cmd, "keygen") || !strcmp(cmd, "launch") ||
                  !strcmp(cmd, "run") || !strcmp(cmd, "check");
    if (builtin && asks_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "stages")) return cmd_stages(argc, argv);
    if (!strcmp(cmd, "keygen")) return sf_curve_keygen_main(argc, argv);
    if (!strcmp(cmd, "launch")) return sf_launch_main(argc, argv);
    if (!strcmp(cmd, "run")) return cmd_run(argc, argv, 1);
    if (!strcmp(cmd, "check")) return cmd_run(argc, argv, 0);
    const sf_command *c = sf_plugins_command(cmd);
    if (c) { /* the command prints its own help */
        if (!asks_help(argc, argv) && sf_blas_verify(1) != SF_OK) {
            fprintf(stderr, "saeflow: %s\n", sf_last_error());
            return 1;
        }
        return c->main(argc - 1, argv + 1);
    }
    fprintf(stderr, "saeflow: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
