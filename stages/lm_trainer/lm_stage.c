/* lm_stage.c — the lm_trainer stage: wiring of lm_lib (the model, lm_model.h) and lm_train_lib
 * (optimizer, schedules, checkpoints, training state: lm_optim.h, lm_ckpt.h) to a stream of
 * *tokens* messages; emits a *checkpoint* message per save (core/MESSAGES.md). It also carries the
 * `saeflow lm` command (lm_cli.h).
 *
 * Stream handling: sequences of the training split fill steps of batch x accum sequences in
 * stream order; the first valid_seqs sequences of the validation split are held out (training
 * waits, buffering, until they are in, so every checkpoint's validation loss is over the same
 * set). A resume replays the stream from its start and skips the sequences the state's steps
 * consumed, checking by hash that they are the same ones. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lm_ckpt.h"
#include "lm_cli.h"
#include "saeflow.h"
#include "sf_output.h"
#include "sf_safetensors.h"

#define MAX_SAVES 4096

static const sf_param_def lm_params[] = {
    {"out_dir", SF_PARAM_STRING, NULL, "output directory: step-NNNNNN checkpoints, checkpoints.json, loss.csv, "
     "train_state.safetensors"},
    {"config", SF_PARAM_STRING, "", "a new model: a directory holding config.json (LlamaForCausalLM), or that file; "
     "weights initialised from seed"},
    {"init_from", SF_PARAM_STRING, "", "start from this Hugging Face checkpoint directory instead (e.g. PyTorch's "
     "step-0 checkpoint)"},
    {"seed", SF_PARAM_INT, "0", "seed of the initialisation (config): norms 1, matrices normal(0, init_std)"},
    {"init_std", SF_PARAM_FLOAT, "0.02", "standard deviation of the initial matrices (HF's initializer_range)"},
    {"steps", SF_PARAM_INT, NULL, "optimizer steps of the run (the schedule's length)"},
    {"batch", SF_PARAM_INT, "32", "sequences per micro-batch"},
    {"accum", SF_PARAM_INT, "1", "micro-batches per step (gradient accumulation): a step is batch x accum sequences"},
    {"lr", SF_PARAM_FLOAT, "0.002", "peak learning rate"},
    {"schedule", SF_PARAM_STRING, "cosine", "after the warmup: constant, cosine (to min_lr_ratio x lr at the last "
     "step) or wsd (warmup-stable-decay: lr, then linear to min_lr_ratio x lr over the last decay_steps)"},
    {"warmup", SF_PARAM_INT, "100", "linear warmup steps: step s < warmup uses lr (s + 1) / warmup"},
    {"decay_steps", SF_PARAM_INT, "-1", "wsd: steps of the final decay (-1: a fifth of steps)"},
    {"min_lr_ratio", SF_PARAM_FLOAT, "0.1", "cosine, wsd: the final lr as a fraction of lr"},
    {"beta1", SF_PARAM_FLOAT, "0.9", "AdamW beta1"},
    {"beta2", SF_PARAM_FLOAT, "0.95", "AdamW beta2"},
    {"eps", SF_PARAM_FLOAT, "1e-8", "AdamW epsilon"},
    {"weight_decay", SF_PARAM_FLOAT, "0.1", "AdamW weight decay of the matrices (norm weights: none)"},
    {"clip", SF_PARAM_FLOAT, "1.0", "clip the global gradient norm to this (0: no clipping)"},
    {"save_steps", SF_PARAM_STRING, "0,10,100,1000,final", "steps to save a checkpoint at, comma-separated "
     "(final: the last step)"},
    {"dtype", SF_PARAM_STRING, "bf16", "checkpoint weights: bf16 or f32 (the training state is always f32)"},
    {"state_every", SF_PARAM_INT, "100", "also save the training state every this many steps (0: only at checkpoints)"},
    {"epochs", SF_PARAM_INT, "1", "passes over the training sequences: the first as they stream, the later ones from "
     "memory (every training sequence is then kept, 4 (T + 1) bytes each), each in a new order drawn from seed"},
    {"split", SF_PARAM_STRING, "train", "train on sequences of this split"},
    {"valid_split", SF_PARAM_STRING, "validation", "hold out sequences of this split for the validation loss (\"\": none)"},
    {"valid_seqs", SF_PARAM_INT, "256", "held-out sequences (the first ones of valid_split)"},
    {"valid_wait", SF_PARAM_INT, "65536", "training sequences buffered at most while the held-out set fills up"},
    {"resume", SF_PARAM_BOOL, "false", "continue the run in out_dir from its training state (a new run if it has none)"},
    {"emit_saved", SF_PARAM_BOOL, "false", "on resume, first emit a checkpoint message for every checkpoint saved before"},
    {"threads", SF_PARAM_INT, "0", "threads the batch is split over (0: one per CPU); results are bit-identical for "
     "one thread count"},
    {NULL, 0, NULL, NULL},
};

typedef struct lm_stage {
    /* parameters */
    char out_dir[3800], src_dir[3800], base_config[4000], split[64], valid_split[64];
    int init_new;                      /* 1: config + seed, 0: init_from */
    uint64_t seed;
    double init_std, clip;
    int64_t steps, state_every, valid_seqs, valid_wait, epochs;
    int batch, accum, resume, emit_saved, threads;
    lm_schedule sched;
    lm_adamw_opts aopts;
    sf_dtype dtype;
    int64_t saves[MAX_SAVES];
    int n_saves;
    char settings[6000];

    /* training */
    lm_model *m;
    lm_work *w;
    lm_adamw a;
    lm_train_pos pos;
    int W;                  /* tokens per sequence (T + 1), from the first message */
    int32_t *step_buf;      /* [batch * accum][W] the step being filled */
    int32_t *seq;           /* [W] one sequence copied out of a message (aligned) */
    int fill;
    int32_t *valid;         /* [valid_seqs][W] */
    int32_t *pending;       /* [valid_wait][W] training sequences waiting for the held-out set */
    int64_t n_pending;
    int started;            /* the held-out set is complete (or given up on): training runs */
    int64_t skip_left;      /* resume: sequences still to skip */
    uint64_t skip_hash;
    int64_t valid_have;
    uint64_t valid_hash;
    int64_t state_step;     /* step of the state on disk (-1: none) */
    int have_state;         /* a state was loaded */
    int64_t ignored;        /* training sequences after the last step */
    int32_t *kept;          /* epochs > 1: [n_kept][W] every training sequence of the stream, in order */
    int64_t n_kept, kept_cap;
    json_t *index;          /* checkpoints.json: the saves so far */
    FILE *log;
    double t_start;
    int64_t steps_at_start;
} lm_stage;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---------------------------------------------------------------------------------------------- */
/* Parameters                                                                                      */

/* "0,10,100,final" into sorted unique steps <= steps. */
static int parse_saves(sf_ctx *ctx, const char *text, int64_t steps, int64_t *out, int *n) {
    *n = 0;
    const char *p = text;
    while (*p) {
        while (*p == ' ' || *p == ',') p++;
        if (!*p) break;
        int64_t v;
        char *end;
        if (!strncmp(p, "final", 5)) v = steps, end = (char *)p + 5;
        else {
            errno = 0;
            v = strtoll(p, &end, 10);
            if (end == p || errno || v < 0)
                return sf_param_fail(ctx, "save_steps", "'%s' is not a comma-separated list of steps >= 0 (and 'final')", text);
        }
        if (*end && *end != ',' && *end != ' ')
            return sf_param_fail(ctx, "save_steps", "'%s' is not a comma-separated list of steps >= 0 (and 'final')", text);
        if (v > steps) return sf_param_fail(ctx, "save_steps", "step %lld is beyond steps = %lld", (long long)v, (long long)steps);
        if (*n == MAX_SAVES) return sf_param_fail(ctx, "save_steps", "more than %d steps", MAX_SAVES);
        int i = *n;
        while (i > 0 && out[i - 1] > v) out[i] = out[i - 1], i--;
        if (i > 0 && out[i - 1] == v) {
            for (; i < *n; i++) out[i] = out[i + 1];
            p = end;
            continue;
        }
        out[i] = v;
        (*n)++;
        p = end;
    }
    return SF_OK;
}

/* The model's source directory (config or init_from) and config.json, checked trainable. */
static int source_config(sf_ctx *ctx, lm_stage *s, fw_config *cfg) {
    const char *config = sf_param_str(ctx, "config"), *init = sf_param_str(ctx, "init_from");
    if (!!*config == !!*init)
        return sf_param_fail(ctx, *config ? "init_from" : "config",
                             "set exactly one of config (a new model) and init_from (a checkpoint to start from)");
    const char *which = *config ? "config" : "init_from", *src = *config ? config : init;
    s->init_new = !!*config;
    size_t len = strlen(src);
    if (len >= sizeof s->src_dir) return sf_param_fail(ctx, which, "path too long");
    snprintf(s->src_dir, sizeof s->src_dir, "%s", src);
    if (len >= 11 && !strcmp(src + len - 11, "config.json")) { /* the file itself: its directory */
        s->src_dir[len - 11] = 0;
        if (!s->src_dir[0]) snprintf(s->src_dir, sizeof s->src_dir, ".");
    }
    snprintf(s->base_config, sizeof s->base_config, "%s/config.json", s->src_dir);
    if (fw_config_load(s->src_dir, cfg) != SF_OK || lm_config_check(cfg) != SF_OK)
        return sf_param_fail(ctx, which, "%s", sf_last_error());
    if (!s->init_new) {
        char st[4100];
        snprintf(st, sizeof st, "%s/model.safetensors", s->src_dir);
        char idx[4200];
        snprintf(idx, sizeof idx, "%s.index.json", st);
        if (access(st, R_OK) != 0 && access(idx, R_OK) != 0)
            return sf_param_fail(ctx, which, "%s has no model.safetensors (or its index): not a checkpoint", s->src_dir);
    }
    return SF_OK;
}

static int read_params(sf_ctx *ctx, lm_stage *s) {
    fw_config cfg;
    int rc = source_config(ctx, s, &cfg);
    const char *out = sf_param_str(ctx, "out_dir");
    if (!*out || strlen(out) >= sizeof s->out_dir) rc = sf_param_fail(ctx, "out_dir", "must be a path (not empty, not too long)");
    snprintf(s->out_dir, sizeof s->out_dir, "%s", out);
    s->seed = (uint64_t)sf_param_int(ctx, "seed");
    s->init_std = sf_param_float(ctx, "init_std");
    if (!(s->init_std > 0)) rc = sf_param_fail(ctx, "init_std", "must be > 0");
    s->steps = sf_param_int(ctx, "steps");
    if (s->steps < 1) rc = sf_param_fail(ctx, "steps", "must be >= 1");
    int64_t batch = sf_param_int(ctx, "batch"), accum = sf_param_int(ctx, "accum");
    if (batch < 1 || batch > 65536) rc = sf_param_fail(ctx, "batch", "must be within [1, 65536]");
    if (accum < 1 || accum > 65536) rc = sf_param_fail(ctx, "accum", "must be within [1, 65536]");
    s->batch = (int)batch, s->accum = (int)accum;
    s->sched.lr = sf_param_float(ctx, "lr");
    if (lm_schedule_parse(sf_param_str(ctx, "schedule"), &s->sched.kind) != SF_OK)
        rc = sf_param_fail(ctx, "schedule", "%s", sf_last_error());
    s->sched.warmup = sf_param_int(ctx, "warmup");
    s->sched.total = s->steps;
    int64_t decay = sf_param_int(ctx, "decay_steps");
    s->sched.decay = decay < 0 ? s->steps / 5 : decay;
    s->sched.min_ratio = sf_param_float(ctx, "min_lr_ratio");
    if (rc == SF_OK && lm_schedule_check(&s->sched) != SF_OK) rc = sf_param_fail(ctx, "schedule", "%s", sf_last_error());
    s->aopts = (lm_adamw_opts){sf_param_float(ctx, "beta1"), sf_param_float(ctx, "beta2"), sf_param_float(ctx, "eps"),
                               sf_param_float(ctx, "weight_decay")};
    if (!(s->aopts.beta1 >= 0 && s->aopts.beta1 < 1)) rc = sf_param_fail(ctx, "beta1", "must be within [0, 1)");
    if (!(s->aopts.beta2 >= 0 && s->aopts.beta2 < 1)) rc = sf_param_fail(ctx, "beta2", "must be within [0, 1)");
    if (!(s->aopts.eps > 0)) rc = sf_param_fail(ctx, "eps", "must be > 0");
    if (!(s->aopts.weight_decay >= 0)) rc = sf_param_fail(ctx, "weight_decay", "must be >= 0");
    s->clip = sf_param_float(ctx, "clip");
    if (!(s->clip >= 0)) rc = sf_param_fail(ctx, "clip", "must be >= 0 (0: no clipping)");
    if (s->steps >= 1 && parse_saves(ctx, sf_param_str(ctx, "save_steps"), s->steps, s->saves, &s->n_saves) != SF_OK)
        rc = SF_ERR;
    const char *dt = sf_param_str(ctx, "dtype");
    if (!strcmp(dt, "bf16")) s->dtype = SF_BF16;
    else if (!strcmp(dt, "f32")) s->dtype = SF_F32;
    else rc = sf_param_fail(ctx, "dtype", "must be bf16 or f32, not '%s'", dt);
    s->epochs = sf_param_int(ctx, "epochs");
    if (s->epochs < 1 || s->epochs > 1000000) rc = sf_param_fail(ctx, "epochs", "must be within [1, 1000000]");
    s->state_every = sf_param_int(ctx, "state_every");
    if (s->state_every < 0) rc = sf_param_fail(ctx, "state_every", "must be >= 0");
    snprintf(s->split, sizeof s->split, "%s", sf_param_str(ctx, "split"));
    snprintf(s->valid_split, sizeof s->valid_split, "%s", sf_param_str(ctx, "valid_split"));
    if (!*s->split) rc = sf_param_fail(ctx, "split", "must name the training split");
    if (!strcmp(s->split, s->valid_split)) rc = sf_param_fail(ctx, "valid_split", "must differ from split ('%s')", s->split);
    s->valid_seqs = *s->valid_split ? sf_param_int(ctx, "valid_seqs") : 0;
    if (s->valid_seqs < 0 || s->valid_seqs > (1 << 24)) rc = sf_param_fail(ctx, "valid_seqs", "must be within [0, 16777216]");
    s->valid_wait = sf_param_int(ctx, "valid_wait");
    if (s->valid_wait < 0 || s->valid_wait > (1 << 24)) rc = sf_param_fail(ctx, "valid_wait", "must be within [0, 16777216]");
    s->resume = sf_param_bool(ctx, "resume");
    s->emit_saved = sf_param_bool(ctx, "emit_saved");
    int64_t threads = sf_param_int(ctx, "threads");
    if (threads < 0 || threads > 1024) rc = sf_param_fail(ctx, "threads", "must be within [0, 1024]");
    s->threads = (int)threads;
    /* everything the loss curve depends on (not save_steps, state_every, threads) */
    snprintf(s->settings, sizeof s->settings,
             "%s=%s seed=%" PRIu64 " init_std=%.17g steps=%" PRId64 " batch=%d accum=%d lr=%.17g schedule=%s "
             "warmup=%" PRId64 " decay_steps=%" PRId64 " min_lr_ratio=%.17g betas=%.17g,%.17g eps=%.17g "
             "weight_decay=%.17g clip=%.17g split=%s valid_split=%s valid_seqs=%" PRId64 " epochs=%" PRId64,
             s->init_new ? "config" : "init_from", s->src_dir, s->seed, s->init_std, s->steps, s->batch, s->accum,
             s->sched.lr, sf_param_str(ctx, "schedule"), s->sched.warmup, s->sched.decay, s->sched.min_ratio,
             s->aopts.beta1, s->aopts.beta2, s->aopts.eps, s->aopts.weight_decay, s->clip, s->split, s->valid_split,
             s->valid_seqs, s->epochs);
    return rc;
}

static int lm_check(sf_ctx *ctx) {
    lm_stage *s = calloc(1, sizeof *s);
    if (!s) return sf_fail("out of memory checking lm_trainer");
    int rc = read_params(ctx, s);
    free(s);
    return rc;
}

/* ---------------------------------------------------------------------------------------------- */
/* Saving                                                                                          */

static void path_in_out(const lm_stage *s, char *dst, size_t cap, const char *name) {
    snprintf(dst, cap, "%s/%s", s->out_dir, name);
}

/* A failed save's error, naming the cause when out_dir itself is gone: another process (a cleanup
 * of /tmp, say) removed or moved it during the run, which surfaces as a missing temp file. */
static int save_failed(const lm_stage *s) {
    struct stat st;
    if (stat(s->out_dir, &st) == 0) return SF_ERR;
    char err[1024];
    snprintf(err, sizeof err, "%s", sf_last_error());
    return sf_fail("%s (out_dir %s is gone: another process removed or moved it during the run; nothing else may "
                   "change out_dir while a run writes to it)", err, s->out_dir);
}

static int save_state(lm_stage *s) {
    char path[4096];
    path_in_out(s, path, sizeof path, "train_state.safetensors");
    if (s->log && fflush(s->log) != 0) return sf_fail("%s/loss.csv: %s", s->out_dir, strerror(errno));
    if (s->log && fsync(fileno(s->log)) != 0) return sf_fail("%s/loss.csv: fsync: %s", s->out_dir, strerror(errno));
    s->pos.log_bytes = s->log ? ftell(s->log) : 0;
    if (lm_state_save(path, s->m, &s->a, &s->pos, s->settings) != SF_OK) return save_failed(s);
    s->state_step = s->pos.step;
    return SF_OK;
}

/* The mean loss over the held-out set (NaN when it is empty). */
static int valid_loss(lm_stage *s, double *out) {
    double sum = 0;
    int T = s->W - 1;
    for (int64_t i = 0; i < s->valid_have; i += s->batch) {
        int b = (int)(s->valid_have - i < s->batch ? s->valid_have - i : s->batch);
        double l;
        if (lm_loss(s->m, s->w, s->valid + (size_t)i * s->W, b, T, &l) != SF_OK) return SF_ERR;
        sum += l * b;
    }
    *out = s->valid_have ? sum / (double)s->valid_have : NAN;
    return SF_OK;
}

/* A checkpoint message (core/MESSAGES.md) from a checkpoints.json entry, which has its fields. */
static void put_checkpoint(sf_msg *msg, json_t *e) {
    json_t *v = json_object_get(e, "train_loss");
    sf_msg_put_str(msg, "path", json_string_value(json_object_get(e, "path")));
    sf_msg_put_str(msg, "checkpoint", json_string_value(json_object_get(e, "checkpoint")));
    sf_msg_put_int(msg, "step", json_integer_value(json_object_get(e, "step")));
    sf_msg_put_int(msg, "tokens_seen", json_integer_value(json_object_get(e, "tokens_seen")));
    sf_msg_put_float(msg, "train_loss", json_is_number(v) ? json_number_value(v) : NAN); /* NaN at step 0 */
    if (json_is_number(v = json_object_get(e, "val_loss"))) sf_msg_put_float(msg, "val_loss", json_number_value(v));
    sf_msg_put_int(msg, "val_seqs", json_integer_value(json_object_get(e, "val_seqs")));
    sf_msg_put_str(msg, "dtype", json_string_value(json_object_get(e, "dtype")));
}

/* A checkpoint at the current step: HF directory, training state, checkpoints.json, message. */
static int save_checkpoint(sf_ctx *ctx, lm_stage *s) {
    char name[64], dir[4096], path[4096], meta_step[32], meta_tokens[32];
    int64_t tokens = s->pos.seqs * (s->W - 1);
    snprintf(name, sizeof name, "step-%06" PRId64, s->pos.step);
    path_in_out(s, dir, sizeof dir, name);
    double vl;
    if (valid_loss(s, &vl) != SF_OK) return SF_ERR;
    snprintf(meta_step, sizeof meta_step, "%" PRId64, s->pos.step);
    snprintf(meta_tokens, sizeof meta_tokens, "%" PRId64, tokens);
    const char *meta[] = {"step", meta_step, "tokens", meta_tokens, NULL};
    if (lm_ckpt_write(s->m, s->base_config, s->dtype, dir, meta) != SF_OK) return save_failed(s);
    double tl = s->pos.loss_steps ? s->pos.loss_sum / (double)s->pos.loss_steps : NAN;
    s->pos.loss_sum = 0, s->pos.loss_steps = 0;
    if (save_state(s) != SF_OK) return SF_ERR;
    json_t *e = json_pack("{s:s, s:s, s:I, s:I, s:o, s:o, s:I, s:s}", "checkpoint", name, "path", dir, "step",
                          (json_int_t)s->pos.step, "tokens_seen", (json_int_t)tokens, "train_loss",
                          isfinite(tl) ? json_real(tl) : json_null(), "val_loss", isfinite(vl) ? json_real(vl) : json_null(),
                          "val_seqs", (json_int_t)s->valid_have, "dtype", s->dtype == SF_BF16 ? "bf16" : "f32");
    if (!e || json_array_append_new(s->index, e) != 0) return sf_fail("out of memory recording checkpoint %s", name);
    char *text = json_dumps(s->index, JSON_INDENT(2) | JSON_REAL_PRECISION(9));
    if (!text) return sf_fail("out of memory writing checkpoints.json");
    path_in_out(s, path, sizeof path, "checkpoints.json");
    int rc = sf_write_file_atomic(path, text, strlen(text));
    free(text);
    if (rc != SF_OK) return save_failed(s);
    sf_log(SF_LOG_INFO, "checkpoint %s: step %" PRId64 ", %" PRId64 " tokens, train loss %.4f, validation loss %.4f (%" PRId64
           " sequences)", dir, s->pos.step, tokens, tl, vl, s->valid_have);
    sf_count(ctx, "checkpoints", 1);
    sf_msg *msg = sf_msg_new();
    put_checkpoint(msg, e);
    return sf_emit(ctx, msg);
}

static int is_save_step(const lm_stage *s, int64_t step) {
    for (int i = 0; i < s->n_saves; i++)
        if (s->saves[i] == step) return 1;
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Training                                                                                        */

static void fmt_eta(double sec, char *out, size_t cap) {
    if (!isfinite(sec) || sec < 0) snprintf(out, cap, "?");
    else if (sec < 3600) snprintf(out, cap, "%dm%02ds", (int)sec / 60, (int)sec % 60);
    else snprintf(out, cap, "%dh%02dm", (int)(sec / 3600), (int)(sec / 60) % 60);
}

static int do_step(sf_ctx *ctx, lm_stage *s) {
    int T = s->W - 1, n = s->batch * s->accum;
    double lr = lm_schedule_lr(&s->sched, s->pos.step), loss, norm;
    if (lm_train_step(s->m, s->w, &s->a, s->step_buf, s->batch, T, s->accum, lr, s->clip, &loss, &norm) != SF_OK)
        return sf_fail("step %" PRId64 ": %s", s->pos.step, sf_last_error());
    s->pos.data_hash = lm_hash_tokens(s->pos.data_hash, s->step_buf, (size_t)n * s->W);
    s->pos.step++;
    s->pos.seqs += n;
    s->pos.loss_sum += loss;
    s->pos.loss_steps++;
    s->fill = 0;
    if (fprintf(s->log, "%" PRId64 ",%.17g,%.17g,%.17g,%" PRId64 "\n", s->pos.step, loss, lr, norm,
                s->pos.seqs * T) < 0)
        return sf_fail("%s/loss.csv: %s", s->out_dir, strerror(errno));
    double el = now_s() - s->t_start;
    int64_t done = s->pos.step - s->steps_at_start;
    double tps = el > 0 ? (double)done * n * T / el : 0;
    char eta[32];
    fmt_eta(done ? el / (double)done * (double)(s->steps - s->pos.step) : NAN, eta, sizeof eta);
    sf_progress(ctx, (uint64_t)s->pos.step, (uint64_t)s->steps, "steps");
    sf_progress_note(ctx, "loss %.4f lr %.2e |g| %.2f %.0f tok/s ETA %s", loss, lr, norm, tps, eta);
    sf_count(ctx, "tokens_trained", (int64_t)n * T);
    if (is_save_step(s, s->pos.step)) return save_checkpoint(ctx, s);
    if (s->state_every && s->pos.step % s->state_every == 0) return save_state(s);
    return SF_OK;
}

/* One training sequence, in stream order, once the held-out set is complete. */
static int train_seq(sf_ctx *ctx, lm_stage *s, const int32_t *seq) {
    if (s->skip_left > 0) { /* resume: the state's steps consumed it */
        s->skip_hash = lm_hash_tokens(s->skip_hash, seq, (size_t)s->W);
        if (--s->skip_left == 0 && s->skip_hash != s->pos.data_hash)
            return sf_fail("resume: the stream's first %" PRId64 " training sequences are not those the saved state was "
                           "trained on (their hash differs): resume with the same inputs, tokenizer and order",
                           s->pos.seqs);
        return SF_OK;
    }
    if (s->pos.step >= s->steps) {
        s->ignored++;
        return SF_OK;
    }
    memcpy(s->step_buf + (size_t)s->fill * s->W, seq, (size_t)s->W * sizeof *seq);
    if (++s->fill == s->batch * s->accum) return do_step(ctx, s);
    return SF_OK;
}

/* The held-out set is complete, or will not be: check it against a resumed state, save step 0,
 * train on what waited. */
static int start_training(sf_ctx *ctx, lm_stage *s) {
    s->started = 1;
    if (s->valid_have < s->valid_seqs)
        sf_log(SF_LOG_WARN, "the held-out set has %" PRId64 " sequences of split '%s', fewer than valid_seqs = %" PRId64
               "%s", s->valid_have, s->valid_split, s->valid_seqs,
               s->n_pending >= s->valid_wait ? " (valid_wait training sequences came first: raise valid_wait)" : "");
    if (s->have_state) {
        if (s->valid_have != s->pos.valid_seqs || s->valid_hash != s->pos.valid_hash)
            return sf_fail("resume: the held-out set (%" PRId64 " sequences) differs from the saved state's (%" PRId64
                           "): resume with the same inputs", s->valid_have, s->pos.valid_seqs);
    } else {
        s->pos.valid_seqs = s->valid_have;
        s->pos.valid_hash = s->valid_hash;
        if (is_save_step(s, 0) && save_checkpoint(ctx, s) != SF_OK) return SF_ERR;
    }
    s->t_start = now_s();
    s->steps_at_start = s->pos.step;
    for (int64_t i = 0; i < s->n_pending; i++)
        if (train_seq(ctx, s, s->pending + (size_t)i * s->W) != SF_OK) return SF_ERR;
    s->n_pending = 0;
    return SF_OK;
}

/* epochs > 1: the stream's training sequences, for the later passes. */
static int keep_seq(lm_stage *s, const int32_t *seq) {
    if (s->n_kept == s->kept_cap) {
        int64_t cap = s->kept_cap ? 2 * s->kept_cap : 4096;
        int32_t *k = sf_realloc(s->kept, "the training sequences kept for later epochs", (size_t)cap * s->W, sizeof *k);
        if (!k) return sf_fail("%s; lower epochs to 1 (and feed the corpus again upstream)", sf_last_error());
        s->kept = k, s->kept_cap = cap;
    }
    memcpy(s->kept + (size_t)s->n_kept++ * s->W, seq, (size_t)s->W * sizeof *seq);
    return SF_OK;
}

/* Epochs 2..epochs over the kept sequences, each in a Fisher-Yates order from (seed, epoch). */
static int replay_epochs(sf_ctx *ctx, lm_stage *s) {
    if (s->epochs < 2 || !s->n_kept) return SF_OK;
    int64_t *order = sf_alloc("an epoch's order", (size_t)s->n_kept, sizeof *order);
    if (!order) return SF_ERR;
    int rc = SF_OK;
    /* a resume may also have to skip through epochs (its state can be at the last step) */
    for (int64_t e = 1; e < s->epochs && (s->pos.step < s->steps || s->skip_left > 0) && rc == SF_OK; e++) {
        uint64_t r = s->seed * 0x9e3779b97f4a7c15ull ^ (uint64_t)e;
        for (int64_t i = 0; i < s->n_kept; i++) order[i] = i;
        for (int64_t i = s->n_kept - 1; i > 0; i--) {
            r = lm_splitmix64(r);
            int64_t j = (int64_t)(r % (uint64_t)(i + 1));
            int64_t t = order[i];
            order[i] = order[j], order[j] = t;
        }
        sf_log(SF_LOG_INFO, "epoch %" PRId64 " of %" PRId64 ": %" PRId64 " sequences from memory", e + 1, s->epochs, s->n_kept);
        for (int64_t i = 0; i < s->n_kept && rc == SF_OK && (s->pos.step < s->steps || s->skip_left > 0); i++) {
            if (sf_stopping(ctx)) break;
            rc = train_seq(ctx, s, s->kept + (size_t)order[i] * s->W);
        }
    }
    free(order);
    return rc;
}

static int first_message(lm_stage *s, int W) {
    const fw_config *c = lm_model_config(s->m);
    if (W < 2) return sf_fail("tokens messages hold sequences of %d tokens: a sequence needs at least 2", W);
    if (W - 1 > c->max_pos)
        return sf_fail("sequences of %d tokens train %d positions, more than the model's max_position_embeddings = %d: "
                       "lower the tokenizer's seq_len", W, W - 1, c->max_pos);
    s->W = W;
    size_t n = (size_t)s->batch * s->accum;
    if (lm_work_new_threads(s->m, s->batch, W - 1, s->threads, &s->w) != SF_OK) return SF_ERR;
    if (!(s->step_buf = sf_alloc("a step's token windows", n * (size_t)W, sizeof(int32_t))) ||
        !(s->seq = sf_alloc("a token window", (size_t)W, sizeof(int32_t))) ||
        !(s->valid = sf_alloc("the held-out token windows", (size_t)(s->valid_seqs ? s->valid_seqs : 1) * W, sizeof(int32_t))))
        return SF_ERR;
    return SF_OK;
}

static int lm_on_message(sf_ctx *ctx, void *state, int input, const sf_msg *msg) {
    (void)input;
    lm_stage *s = state;
    if (sf_stopping(ctx)) return SF_OK; /* interrupted: stop at this step; finish saves the state */
    sf_tensor t;
    const char *split;
    size_t split_len;
    if (sf_msg_get_tensor(msg, "tokens", &t) != SF_OK) return sf_fail("%s (lm_trainer reads tokens messages)", sf_last_error());
    if (t.dtype != SF_I32 || t.ndim != 2) return sf_fail("'tokens' must be int32 [B, T], not %s with %d dimensions",
                                                         sf_dtype_name(t.dtype), t.ndim);
    if (sf_msg_get_str(msg, "split", &split, &split_len) != SF_OK) return SF_ERR;
    if (t.shape[1] > (1 << 20)) return sf_fail("'tokens' has %lld tokens per sequence", (long long)t.shape[1]);
    int W = (int)t.shape[1];
    if (!s->W && first_message(s, W) != SF_OK) return SF_ERR;
    if (W != s->W) return sf_fail("a tokens message of %d tokens per sequence after ones of %d: every sequence must have "
                                  "the same length", W, s->W);
    int is_train = split_len == strlen(s->split) && !memcmp(split, s->split, split_len);
    int is_valid = *s->valid_split && split_len == strlen(s->valid_split) && !memcmp(split, s->valid_split, split_len);
    int32_t *seq = s->seq;
    for (int64_t b = 0; b < t.shape[0]; b++) {
        memcpy(seq, (const char *)t.data + (size_t)b * W * 4, (size_t)W * 4); /* message data is unaligned */
        if (is_valid) {
            if (!s->started && s->valid_have < s->valid_seqs) { /* fixed once training starts */
                memcpy(s->valid + (size_t)s->valid_have * W, seq, (size_t)W * 4);
                s->valid_hash = lm_hash_tokens(s->valid_hash, seq, (size_t)W);
                s->valid_have++;
            }
            if (!s->started && s->valid_have == s->valid_seqs && start_training(ctx, s) != SF_OK) return SF_ERR;
            continue;
        }
        if (!is_train) continue;
        if (s->epochs > 1 && keep_seq(s, seq) != SF_OK) return SF_ERR;
        if (!s->started && s->valid_have < s->valid_seqs && s->n_pending < s->valid_wait) {
            if (!s->pending && !(s->pending = sf_alloc("training sequences waiting for the held-out set",
                                                       (size_t)s->valid_wait * W, sizeof(int32_t))))
                return SF_ERR;
            memcpy(s->pending + (size_t)s->n_pending++ * W, seq, (size_t)W * 4);
            continue;
        }
        if (!s->started && start_training(ctx, s) != SF_OK) return SF_ERR;
        if (train_seq(ctx, s, seq) != SF_OK) return SF_ERR;
    }
    if (!is_train && !is_valid) sf_count(ctx, "other_split_messages", 1);
    return SF_OK;
}

static int lm_on_eos(sf_ctx *ctx, void *state) {
    lm_stage *s = state;
    if (sf_stopping(ctx)) return SF_OK; /* an interrupt, not the stream's end: no final checkpoint */
    if (!s->W) return sf_fail("the input ended before any tokens message: nothing to train on");
    if (!s->started && start_training(ctx, s) != SF_OK) return SF_ERR;
    if (replay_epochs(ctx, s) != SF_OK) return SF_ERR;
    if (sf_stopping(ctx)) return SF_OK;
    if (s->skip_left > 0)
        return sf_fail("resume: the stream ended after %" PRId64 " training sequences, but the saved state had consumed %"
                       PRId64 ": resume with the same inputs", s->pos.seqs - s->skip_left, s->pos.seqs);
    if (s->pos.step == 0)
        return sf_fail("the stream ended after %d training sequences of split '%s', fewer than one step's batch x accum = "
                       "%d: give it more data (or lower batch)", s->fill, s->split, s->batch * s->accum);
    if (s->ignored) sf_log(SF_LOG_INFO, "%" PRId64 " training sequences after the last step were not used", s->ignored);
    if (s->pos.step < s->steps) {
        sf_log(SF_LOG_WARN, "the stream ended at step %" PRId64 " of %" PRId64 " (%d sequences left over): saving it as "
               "the last checkpoint; the schedule was for %" PRId64 " steps", s->pos.step, s->steps, s->fill, s->steps);
        if (!is_save_step(s, s->pos.step)) return save_checkpoint(ctx, s);
    }
    return SF_OK;
}

static int lm_finish(sf_ctx *ctx, void *state) {
    lm_stage *s = state;
    /* interrupted (or failed upstream): keep what was trained for a resume */
    if (sf_stopping(ctx) && s->started && s->skip_left == 0 && s->pos.step > s->state_step) {
        sf_log(SF_LOG_INFO, "stopping: saving the training state at step %" PRId64, s->pos.step);
        return save_state(s);
    }
    if (s->log && fflush(s->log) != 0) return sf_fail("%s/loss.csv: %s", s->out_dir, strerror(errno));
    return SF_OK;
}

/* ---------------------------------------------------------------------------------------------- */
/* Setup                                                                                           */

static void lm_destroy(void *state) {
    lm_stage *s = state;
    if (!s) return;
    lm_work_free(s->w);
    lm_model_free(s->m);
    lm_adamw_free(&s->a);
    free(s->step_buf);
    free(s->seq);
    free(s->kept);
    free(s->valid);
    free(s->pending);
    json_decref(s->index);
    if (s->log) fclose(s->log);
    free(s);
}

/* Resume: the state, the loss log cut at its step, the checkpoints it has saved (and their messages). */
static int open_resume(sf_ctx *ctx, lm_stage *s, const char *state_path) {
    if (lm_state_load(state_path, s->m, &s->a, &s->pos, s->settings) != SF_OK) return SF_ERR;
    s->have_state = 1;
    s->state_step = s->pos.step;
    s->skip_left = s->pos.seqs;
    s->skip_hash = LM_FNV_START;
    char path[4096];
    path_in_out(s, path, sizeof path, "loss.csv");
    if (truncate(path, s->pos.log_bytes) != 0)
        return sf_fail("resume: cannot cut %s at the state's step (%s)", path, strerror(errno));
    path_in_out(s, path, sizeof path, "checkpoints.json");
    json_error_t err;
    json_t *old = json_load_file(path, 0, &err);
    size_t i;
    json_t *e;
    json_array_foreach(old, i, e) { /* later ones are made again */
        if (json_integer_value(json_object_get(e, "step")) > s->pos.step) continue;
        json_array_append(s->index, e);
        if (s->emit_saved) {
            sf_msg *msg = sf_msg_new();
            put_checkpoint(msg, e);
            if (sf_emit(ctx, msg) != SF_OK) {
                json_decref(old);
                return SF_ERR;
            }
        }
    }
    json_decref(old);
    sf_log(SF_LOG_INFO, "resuming at step %" PRId64 " (%" PRId64 " sequences to skip)", s->pos.step, s->pos.seqs);
    return SF_OK;
}

static int lm_init(sf_ctx *ctx, void **state) {
    lm_stage *s = sf_zalloc("the lm_trainer state", 1, sizeof *s);
    if (!s) return SF_ERR;
    *state = s;
    s->state_step = -1;
    s->valid_hash = LM_FNV_START;
    s->pos.data_hash = LM_FNV_START;
    s->pos.seed = 0;
    if (read_params(ctx, s) != SF_OK) return SF_ERR;
    s->pos.seed = s->seed;
    if (!(s->index = json_array())) return sf_fail("out of memory");
    if (sf_mkdirs(s->out_dir) != SF_OK) return SF_ERR;
    char state_path[4096], log_path[4096], idx_path[4096];
    path_in_out(s, state_path, sizeof state_path, "train_state.safetensors");
    path_in_out(s, log_path, sizeof log_path, "loss.csv");
    path_in_out(s, idx_path, sizeof idx_path, "checkpoints.json");
    int has_state = access(state_path, F_OK) == 0, has_run = has_state || access(idx_path, F_OK) == 0;
    if (has_run && !s->resume)
        return sf_fail("%s holds a training run (train_state.safetensors, checkpoints.json): resume = true continues it; "
                       "or choose another out_dir", s->out_dir);
    if (s->init_new) {
        fw_config cfg;
        if (fw_config_load(s->src_dir, &cfg) != SF_OK || lm_model_new(&cfg, &s->m) != SF_OK) return SF_ERR;
        lm_tensor *t;
        size_t nt = lm_model_tensors(s->m, &t);
        lm_init_weights(t, nt, s->seed, s->init_std);
    } else if (lm_model_load(s->src_dir, &s->m) != SF_OK)
        return SF_ERR;
    if (lm_adamw_init(&s->a, &s->aopts, lm_model_numel(s->m)) != SF_OK) return SF_ERR;
    if (has_state && open_resume(ctx, s, state_path) != SF_OK) return SF_ERR;
    if (!has_state && s->resume) sf_log(SF_LOG_INFO, "resume: %s has no training state yet; starting the run", s->out_dir);
    if (!(s->log = fopen(log_path, has_state ? "a" : "w")))
        return sf_fail("cannot open %s: %s", log_path, strerror(errno));
    if (!has_state && fputs("step,loss,lr,grad_norm,tokens\n", s->log) < 0) return sf_fail("%s: %s", log_path, strerror(errno));
    sf_log(SF_LOG_INFO, "%zu parameters; %s; steps of %d x %d sequences", lm_model_numel(s->m),
           s->init_new ? "initialised from seed" : "from a checkpoint", s->batch, s->accum);
    return SF_OK;
}

static const sf_stage_def lm_trainer_def = {
    .name = "lm_trainer",
    .summary = "train a Llama-architecture language model on tokens messages; emits a checkpoint message per save",
    .doc = "Reads tokens messages (core/MESSAGES.md: int32 tokens [B, T], BOS + N-token windows; split). Sequences of "
           "`split` train, in stream order, batch x accum per AdamW step; the first valid_seqs of `valid_split` are "
           "held out for the validation loss. At each of save_steps it writes OUT_DIR/step-NNNNNN (config.json + "
           "model.safetensors, Hugging Face layout, bf16 or f32), the training state and checkpoints.json, and emits "
           "a checkpoint message: path (the directory), checkpoint (its name), step, tokens_seen, train_loss (mean since "
           "the previous save; NaN at step 0), val_loss (absent without a held-out set), val_seqs, dtype. "
           "resume = true continues a killed run bit for bit (same thread count). loss.csv logs every step.",
    .params = lm_params,
    .min_inputs = 1,
    .max_inputs = 16,
    .has_output = 1,
    .init = lm_init,
    .on_message = lm_on_message,
    .on_eos = lm_on_eos,
    .finish = lm_finish,
    .destroy = lm_destroy,
    .commands = lm_commands,
    .check = lm_check,
    SF_STAGE_DEF_SIZES,
    .takes = "tokens",
    .emits = "checkpoint",
};

extern const sf_stage_def checkpoint_run_def; /* ckpt_run_stage.c */

SF_PLUGIN(&lm_trainer_def, &checkpoint_run_def)
