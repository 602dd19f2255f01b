/* ckpt_run_stage.c — the checkpoint_run stage: for every *checkpoint* message (core/MESSAGES.md)
 * it starts `saeflow run PIPELINE ARGS...` in a child process, with {model}, {dir}, {checkpoint}
 * and {step} in ARGS replaced by the message's values, so each checkpoint an lm_trainer saves is
 * analysed (extraction, SAE training, mining) while the language model trains on. At most `jobs`
 * children run at once; the stage waits for all of them at the end and fails if one failed. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "saeflow.h"
#include "sf_kinds.h"
#include "sf_output.h"

extern char **environ;

#define RUN_MAX_ARGS 64
#define RUN_MAX_JOBS 64

static const sf_param_def run_params[] = {
    {"pipeline", SF_PARAM_STRING, NULL, "the pipeline file each checkpoint runs (relative to the working directory)"},
    {"args", SF_PARAM_STRING, "", "its KEY=VALUE overrides, space-separated; {model} (the checkpoint directory, the message's "
     "path), {dir} (the directory holding it), {checkpoint} (its base name) and {step} are replaced by the message's values"},
    {"jobs", SF_PARAM_INT, "1", "pipelines running at once (a further checkpoint waits for one to end)"},
    {"log_dir", SF_PARAM_STRING, "", "each run's output to LOG_DIR/CHECKPOINT.log (\"\": this process's stderr)"},
    {NULL, 0, NULL, NULL},
};

typedef struct run_job {
    pid_t pid;
    char name[256];
} run_job;

typedef struct run_state {
    char pipeline[4096], args[4096], log_dir[4096], self[4096];
    int jobs;
    run_job running[RUN_MAX_JOBS];
    int n_running;
    int64_t started, failed;
    char first_failure[8704];
} run_state;

static int run_read_params(sf_ctx *ctx, run_state *s) {
    int rc = SF_OK;
    snprintf(s->pipeline, sizeof s->pipeline, "%s", sf_param_str(ctx, "pipeline"));
    snprintf(s->args, sizeof s->args, "%s", sf_param_str(ctx, "args"));
    snprintf(s->log_dir, sizeof s->log_dir, "%s", sf_param_str(ctx, "log_dir"));
    if (access(s->pipeline, R_OK) != 0)
        rc = sf_param_fail(ctx, "pipeline", "cannot read %s: %s", s->pipeline, strerror(errno));
    int64_t jobs = sf_param_int(ctx, "jobs");
    if (jobs < 1 || jobs > RUN_MAX_JOBS) rc = sf_param_fail(ctx, "jobs", "must be within [1, %d]", RUN_MAX_JOBS);
    s->jobs = (int)jobs;
    int n = 0;
    for (const char *p = s->args; *p;) {
        while (*p == ' ') p++;
        if (!*p) break;
        n++;
        while (*p && *p != ' ') p++;
    }
    if (n > RUN_MAX_ARGS) rc = sf_param_fail(ctx, "args", "more than %d overrides", RUN_MAX_ARGS);
    return rc;
}

static int run_check(sf_ctx *ctx) {
    run_state *s = calloc(1, sizeof *s);
    if (!s) return sf_fail("out of memory checking checkpoint_run");
    int rc = run_read_params(ctx, s);
    free(s);
    return rc;
}

/* Collects the children that have ended (only ours, by pid); with block, waits until one has. */
static void run_reap(run_state *s, int block) {
    for (;;) {
        int reaped = 0;
        for (int i = 0; i < s->n_running; i++) {
            int status;
            if (waitpid(s->running[i].pid, &status, WNOHANG) != s->running[i].pid) continue;
            if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                s->failed++;
                if (!s->first_failure[0])
                    snprintf(s->first_failure, sizeof s->first_failure, "%s: `saeflow run %s` %s %d%s%s",
                             s->running[i].name, s->pipeline,
                             WIFEXITED(status) ? "exited with status" : "was killed by signal",
                             WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), s->log_dir[0] ? "; see " : "",
                             s->log_dir);
                sf_log(SF_LOG_ERROR, "%s: its pipeline failed (status %d)", s->running[i].name, status);
            } else
                sf_log(SF_LOG_INFO, "%s: its pipeline finished", s->running[i].name);
            s->running[i--] = s->running[--s->n_running];
            reaped = 1;
        }
        if (reaped || !block || !s->n_running) return;
        usleep(100 * 1000);
    }
}

static int run_init(sf_ctx *ctx, void **state) {
    run_state *s = sf_zalloc("the checkpoint_run state", 1, sizeof *s);
    if (!s) return SF_ERR;
    *state = s;
    if (run_read_params(ctx, s) != SF_OK) return SF_ERR;
    ssize_t n = readlink("/proc/self/exe", s->self, sizeof s->self - 1);
    if (n <= 0) return sf_fail("cannot find the saeflow executable (/proc/self/exe): %s", strerror(errno));
    s->self[n] = 0;
    if (s->log_dir[0] && sf_mkdirs(s->log_dir) != SF_OK) return SF_ERR;
    return SF_OK;
}

/* out[cap] = in with each {key} replaced; SF_ERR if it does not fit. */
static int substitute(const char *in, const char *const *keys, const char *const *vals, int n, char *out, size_t cap) {
    size_t o = 0;
    while (*in) {
        int hit = -1;
        for (int k = 0; k < n && hit < 0; k++)
            if (*in == '{' && !strncmp(in + 1, keys[k], strlen(keys[k])) && in[1 + strlen(keys[k])] == '}') hit = k;
        const char *piece = hit >= 0 ? vals[hit] : in;
        size_t len = hit >= 0 ? strlen(vals[hit]) : 1;
        if (o + len >= cap) return sf_fail("checkpoint_run: the arguments are longer than %zu bytes", cap);
        memcpy(out + o, piece, len);
        o += len;
        in += hit >= 0 ? strlen(keys[hit]) + 2 : 1;
    }
    out[o] = 0;
    return SF_OK;
}

static int run_on_message(sf_ctx *ctx, void *state, int input, const sf_msg *msg) {
    (void)input;
    run_state *s = state;
    char model[4096], dir[4096], name[256], step[32], args[8192], logpath[4400];
    sf_checkpoint_msg c;
    if (sf_read_checkpoint(msg, &c) != SF_OK) return SF_ERR;
    if (c.path.len == 0 || c.path.len >= sizeof model || memchr(c.path.s, 0, c.path.len))
        return sf_fail("checkpoint message: 'path' is empty, too long or holds a NUL byte");
    sf_strv_copy(c.path, model, sizeof model);
    snprintf(step, sizeof step, "%" PRId64, c.step);
    snprintf(dir, sizeof dir, "%s", model);
    size_t len = strlen(dir);
    while (len > 1 && dir[len - 1] == '/') dir[--len] = 0;
    char *slash = strrchr(dir, '/');
    snprintf(name, sizeof name, "%s", slash ? slash + 1 : dir); /* the directory's base name */
    if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
    if (!name[0] || !strcmp(name, "..") || !strcmp(name, "."))
        return sf_fail("checkpoint message: 'path' %s names no checkpoint directory", model);
    const char *keys[] = {"model", "dir", "checkpoint", "step"}, *vals[] = {model, dir, name, step};
    if (substitute(s->args, keys, vals, 4, args, sizeof args) != SF_OK) return SF_ERR;
    char *argv[RUN_MAX_ARGS + 5];
    int argc = 0;
    argv[argc++] = s->self;
    argv[argc++] = "run";
    argv[argc++] = s->pipeline;
    argv[argc++] = "--no-progress";
    char *save = NULL;
    for (char *p = strtok_r(args, " ", &save); p && argc < RUN_MAX_ARGS + 4; p = strtok_r(NULL, " ", &save))
        argv[argc++] = p;
    argv[argc] = NULL;
    run_reap(s, 0);
    while (s->n_running >= s->jobs && !sf_stopping(ctx)) run_reap(s, 1);
    if (sf_stopping(ctx)) return SF_OK;
    int logfd = -1;
    if (s->log_dir[0]) {
        snprintf(logpath, sizeof logpath, "%s/%s.log", s->log_dir, name);
        if ((logfd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644)) < 0)
            return sf_fail("cannot create %s: %s", logpath, strerror(errno));
    }
    /* posix_spawn, not fork: fork runs OpenBLAS's atfork handler, which joins its worker threads and
     * can hang while the trainer's sgemms hold them */
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (logfd >= 0) {
        posix_spawn_file_actions_adddup2(&fa, logfd, 1);
        posix_spawn_file_actions_adddup2(&fa, logfd, 2);
    }
    pid_t pid;
    int err = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (err != 0) {
        if (logfd >= 0) close(logfd);
        return sf_fail("cannot start `saeflow run %s` for %s: %s", s->pipeline, name, strerror(err));
    }
    if (logfd >= 0) close(logfd);
    s->running[s->n_running].pid = pid;
    snprintf(s->running[s->n_running].name, sizeof s->running[0].name, "%s", name);
    s->n_running++;
    s->started++;
    sf_count(ctx, "pipelines_started", 1);
    sf_log(SF_LOG_INFO, "%s: started saeflow run %s %s", name, s->pipeline, s->args);
    return SF_OK;
}

static int run_finish(sf_ctx *ctx, void *state) {
    run_state *s = state;
    if (sf_stopping(ctx))
        for (int i = 0; i < s->n_running; i++) kill(s->running[i].pid, SIGINT); /* they drain and stop too */
    while (s->n_running > 0) run_reap(s, 1);
    sf_count(ctx, "pipelines_failed", s->failed);
    if (s->failed)
        return sf_fail("%" PRId64 " of %" PRId64 " checkpoint pipelines failed; the first: %s", s->failed, s->started,
                       s->first_failure);
    return SF_OK;
}

static void run_destroy(void *state) { free(state); }

const sf_stage_def checkpoint_run_def = {
    .name = "checkpoint_run",
    .summary = "run a pipeline on every checkpoint an lm_trainer saves, in another process, while it trains on",
    .doc = "Reads checkpoint messages (core/MESSAGES.md). For each it starts `saeflow run PIPELINE ARGS` (ARGS with "
           "{model}, {dir}, {checkpoint} and {step} replaced), at most `jobs` at once, output to LOG_DIR/CHECKPOINT.log. "
           "Waits for every run at the end and fails if one failed (an interrupt is passed on to them).",
    .params = run_params,
    .min_inputs = 1,
    .max_inputs = 16,
    .has_output = 0,
    .init = run_init,
    .on_message = run_on_message,
    .finish = run_finish,
    .destroy = run_destroy,
    .check = run_check,
    SF_STAGE_DEF_SIZES,
    .takes = "checkpoint",
};
