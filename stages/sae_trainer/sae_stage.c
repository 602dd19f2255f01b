/* sae_stage.c — the sae_trainer stage and the plugin's list (sae_trainer, sae_eval in sae_eval.c,
 * the `saeflow sae` command in sae_cli.c): wiring of sae_lib to activations messages, metrics
 * files, checkpoints and the final model files. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sae.h"
#include "saeflow.h"
#include "sf_output.h"
#include "sf_safetensors.h"
#include "sf_trained_on.h"
#include "sf_util.h"
#include "sae_stage.h"
#include "shards.h"

/* ---------------------------------------------------------------------------------------------- */
/* sae_trainer                                                                                     */

static const sf_param_def trainer_params[] = {
    {"out_dir", SF_PARAM_STRING, NULL, "output directory: model, checkpoint, metrics"},
    {"latents", SF_PARAM_INT, "0", "number of latents (0: expansion x d)", "[0, inf)"},
    {"expansion", SF_PARAM_INT, "16", "latents per input dimension when latents = 0", "[1, inf)"},
    {"k", SF_PARAM_INT, "32", "active latents per token", "[1, inf)"},
    {"batch", SF_PARAM_INT, "32768", "tokens per optimisation step (the paper: 32768)", "[1, 1048576]"},
    {"lr", SF_PARAM_FLOAT, "0.001", "Adam learning rate"},
    {"warmup_steps", SF_PARAM_INT, "1000", "linear warmup steps (step s uses lr * s / warmup)"},
    {"decay_start", SF_PARAM_INT, "0", "step where a linear decay to 0 starts (with decay_steps)"},
    {"decay_steps", SF_PARAM_INT, "0", "length of the linear lr decay (0: constant lr)"},
    {"adam_eps", SF_PARAM_FLOAT, "6.25e-10", "Adam epsilon"},
    {"normalize", SF_PARAM_STRING, "unit", "input normalisation: unit (per token), scalar (mean norm sqrt(d)), none", "unit|scalar|none"},
    {"norm_mean", SF_PARAM_FLOAT, "0", "normalize=scalar: the dataset's mean L2 norm (0: from norm_manifest, else "
     "estimated from the first batch)", "[0, inf)"},
    {"norm_manifest", SF_PARAM_STRING, "", "normalize=scalar: a shard directory (or its manifest.json) whose "
     "norm_mean (of `split`, else of all rows) is the dataset-wide mean norm"},
    {"remove_parallel_grad", SF_PARAM_BOOL, "false", "remove the gradient component parallel to decoder directions"},
    {"k_aux", SF_PARAM_INT, "0", "AuxK latents for reviving dead ones (0: off; OpenAI uses d/2)"},
    {"aux_coef", SF_PARAM_FLOAT, "0.03125", "AuxK loss coefficient"},
    {"dead_tokens", SF_PARAM_INT, "10000000", "a latent is dead after this many tokens without firing"},
    {"seed", SF_PARAM_INT, "0", "seed of the decoder initialisation"},
    {"max_tokens", SF_PARAM_INT, "0", "stop training after this many tokens (0: the whole stream)"},
    {"metrics_every", SF_PARAM_INT, "50", "steps per metrics line (metrics.csv, metrics.jsonl)"},
    {"checkpoint_every", SF_PARAM_INT, "1000", "steps between checkpoints (0: only at the end)"},
    {"resume", SF_PARAM_BOOL, "false",
     "continue from out_dir/checkpoint.safetensors (or from OUT_DIR.partial's, an interrupted overwrite run, "
     "which then replaces out_dir when complete), skipping the sequences (doc_id, pos) it trained on, or the "
     "first rows it read when messages carry no doc_id/pos"},
    {"overwrite", SF_PARAM_BOOL, "false",
     "replace the SAE (or interrupted run) out_dir holds: this run works in OUT_DIR.partial and replaces out_dir "
     "whole when it completes, so a failed or interrupted run leaves it intact (without it, or resume, such a "
     "directory is refused)"},
    {"export", SF_PARAM_STRING, "", "extra layouts to write at the end: comma list of sparsify, saelens"},
    {"field", SF_PARAM_STRING, "acts", "message field holding the activations"},
    {"split", SF_PARAM_STRING, "", "train only on messages of this split (\"\": all)"},
    {NULL, 0, NULL, NULL},
};

/* Rows of one sequence put into the batch being filled. */
typedef struct trainer_take {
    int64_t doc;
    int32_t pos, rows;
} trainer_take;

typedef struct trainer_state {
    char out_dir[3800], field[64], split[64], export_list[128];
    sf_output out; /* out_dir as given (out.dir) and where this run trains (out.work, also in out_dir) */
    int64_t latents, expansion, k, batch, seed, max_tokens, metrics_every, checkpoint_every;
    int resume;
    sae_train_opts opts;
    sae_norm_mode norm;
    double norm_mean;     /* dataset-wide mean L2 norm for normalize=scalar; 0: first-batch estimate */
    char norm_source[64]; /* where norm_mean came from, for the log and the metadata */
    int64_t norm_d;       /* the width the manifest gives (0: no manifest) */

    int have_model;
    sae_model m;
    sae_trainer *t;
    float *x; /* [batch][d] rows being collected */
    int64_t fill;
    int64_t skip; /* by count: rows still to skip after a resume */
    int64_t stream_pos;     /* rows read from the stream (skipped and dropped ones included) */
    int64_t stream_at_step; /* stream_pos when the last step's batch was complete */
    int64_t start_step; /* step at which this run started (resume) */
    /* By key, when messages carry doc_id and pos (keyed = 1; 0: by count; -1: not known yet). */
    int keyed;
    sh_keys trained;    /* rows trained of each sequence up to the last step (all runs, all epochs) */
    sh_keys to_skip;    /* after a resume: rows of each sequence still to skip (trained before) */
    trainer_take *taken; /* rows put into the batch being filled, per sequence */
    int64_t ntaken, taken_cap;
    int64_t key_rows;   /* rows per sequence of the keyed messages (0: they vary) */

    sae_stats wsum; /* metrics window */
    int64_t wsteps, wtokens;
    double wstart;
    FILE *csv, *jsonl;

    char hook[256], model_name[1024], checkpoint[256];
    int64_t layer, seq_len;
    int failed; /* a step failed: keep the last good checkpoint, save nothing */
    int64_t other_split; /* messages of another split than `split`, skipped */
} trainer_state;

/* norm_mean of a shard directory's manifest.json (stages/shards): the split's, or the whole set's. */
static int trainer_read_manifest(trainer_state *s, const char *where) {
    char path[4096];
    struct stat st;
    int is_dir = stat(where, &st) == 0 && S_ISDIR(st.st_mode);
    if ((size_t)snprintf(path, sizeof path, is_dir ? "%s/manifest.json" : "%s", where) >= sizeof path)
        return sf_fail("norm_manifest: path too long");
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root) return sf_fail("norm_manifest %s: %s (line %d)", path, jerr.text, jerr.line);
    json_t *from = *s->split ? json_object_get(json_object_get(root, "splits"), s->split) : root;
    json_t *nm = json_object_get(from, "norm_mean"), *d = json_object_get(root, "d");
    int rc = SF_OK;
    if (!json_is_number(nm) || !(json_number_value(nm) > 0) || !json_is_integer(d))
        rc = sf_fail("norm_manifest %s: no positive norm_mean%s%s%s, or no d", path, *s->split ? " for split \"" : "",
                     s->split, *s->split ? "\"" : "");
    else {
        s->norm_mean = json_number_value(nm);
        s->norm_d = json_integer_value(d);
        snprintf(s->norm_source, sizeof s->norm_source, "manifest");
    }
    json_decref(root);
    return rc;
}

/* The scalar normalisation's factor sqrt(d) / mean ||x||: dataset-wide when norm_mean is known,
 * else estimated from the first batch (OpenAI's and SAELens' estimate), as logged. */
static int trainer_norm_scale(trainer_state *s, int B) {
    sae_model *m = &s->m;
    if (s->norm_d && s->norm_d != m->d)
        return sf_fail("norm_manifest is for d = %lld, the activations have d = %d", (long long)s->norm_d, m->d);
    if (s->norm_mean > 0) {
        m->norm_scale = (float)(sqrt((double)m->d) / s->norm_mean);
        sf_log(SF_LOG_INFO, "normalize=scalar: dataset-wide mean norm %.6g (%s), scale %.6g", s->norm_mean,
               s->norm_source, m->norm_scale);
    } else {
        m->norm_scale = sae_norm_scale_estimate(s->x, B, m->d);
        snprintf(s->norm_source, sizeof s->norm_source, "first batch of %d rows", B);
        sf_log(SF_LOG_INFO, "normalize=scalar: scale %.6g estimated from the first batch (%d rows); set norm_mean "
               "or norm_manifest for a dataset-wide value", m->norm_scale, B);
    }
    return SF_OK;
}

/* out_dir as sf_output_claim decides (core/lib/sf_output.h): a new run into a directory that holds
 * an SAE or an interrupted run is refused unless overwrite (it used to replace a finished SAE
 * silently, e.g. with a shorter run's); with overwrite it trains in OUT.partial, which replaces
 * out_dir whole when complete. resume = true continues in place, or continues an interrupted
 * overwrite run in OUT.partial when there is one. s->out_dir becomes the directory trained in. */
static int trainer_claim_out_dir(trainer_state *s, int overwrite) {
    static const sf_output_mark marks[] = {
        {"config.json", "an SAE"}, {"model.safetensors", "an SAE"}, {"checkpoint.safetensors", "an interrupted run"},
        {NULL, NULL}};
    if (s->resume && overwrite)
        return sf_fail("resume = true continues the run in %s and overwrite = true replaces it: set one", s->out_dir);
    if (s->resume) {
        char ck[4300];
        snprintf(s->out.dir, sizeof s->out.dir, "%s", s->out_dir);
        snprintf(s->out.work, sizeof s->out.work, "%s.partial", s->out_dir);
        snprintf(ck, sizeof ck, "%s/checkpoint.safetensors", s->out.work);
        if (access(ck, F_OK) == 0)
            sf_log(SF_LOG_INFO, "resume: continuing the interrupted overwrite run in %s; it replaces %s when complete",
                   s->out.work, s->out.dir);
        else
            memcpy(s->out.work, s->out.dir, sizeof s->out.dir); /* in place */
    } else {
        sf_output_opts opts = {.marks = marks, .also = ", resume = true to continue it", .overwrite = overwrite};
        if (sf_output_claim(&s->out, s->out_dir, &opts) != SF_OK) return SF_ERR;
    }
    if ((size_t)snprintf(s->out_dir, sizeof s->out_dir, "%s", s->out.work) >= sizeof s->out_dir)
        return sf_fail("out_dir: path too long");
    /* with its parents: in a fresh live pipeline nothing else may have made them yet */
    return sf_mkdirs(s->out_dir);
}

/* Whether this run trains in OUT.partial, which replaces out_dir (s->out.dir) when complete. */
static int trainer_replacing(const trainer_state *s) { return strcmp(s->out.work, s->out.dir) != 0; }

/* The parameters, for check and init alike (everything but creating out_dir). */
static int trainer_read_params(sf_ctx *ctx, trainer_state *s) {
    if (sf_replica_count(ctx) != 1) return sf_param_fail(ctx, "replicas", "sae_trainer cannot be replicated (one model, one optimizer)");
    struct { const char *name; char *dst; size_t cap; } strs[] = {
        {"out_dir", s->out_dir, sizeof s->out_dir}, {"field", s->field, sizeof s->field},
        {"split", s->split, sizeof s->split}, {"export", s->export_list, sizeof s->export_list}};
    for (int i = 0; i < 4; i++) {
        const char *v = sf_param_str(ctx, strs[i].name);
        if (strlen(v) >= strs[i].cap) return sf_param_fail(ctx, strs[i].name, "too long (at most %zu bytes)", strs[i].cap - 1);
        strcpy(strs[i].dst, v);
    }
    s->latents = sf_param_int(ctx, "latents");
    s->expansion = sf_param_int(ctx, "expansion");
    s->k = sf_param_int(ctx, "k");
    s->batch = sf_param_int(ctx, "batch");
    s->seed = sf_param_int(ctx, "seed");
    s->max_tokens = sf_param_int(ctx, "max_tokens");
    s->metrics_every = sf_param_int(ctx, "metrics_every");
    s->checkpoint_every = sf_param_int(ctx, "checkpoint_every");
    s->resume = sf_param_bool(ctx, "resume");
    s->keyed = -1;
    sae_train_opts_default(&s->opts);
    s->opts.lr = sf_param_float(ctx, "lr");
    s->opts.warmup_steps = sf_param_int(ctx, "warmup_steps");
    s->opts.decay_start = sf_param_int(ctx, "decay_start");
    s->opts.decay_steps = sf_param_int(ctx, "decay_steps");
    s->opts.eps = sf_param_float(ctx, "adam_eps");
    s->opts.remove_parallel_grad = sf_param_bool(ctx, "remove_parallel_grad");
    s->opts.k_aux = (int)sf_param_int(ctx, "k_aux");
    s->opts.aux_coef = sf_param_float(ctx, "aux_coef");
    s->opts.dead_tokens = sf_param_int(ctx, "dead_tokens");
    if (sae_norm_parse(sf_param_str(ctx, "normalize"), &s->norm) != SF_OK) return sf_param_fail(ctx, "normalize", "%s", sf_last_error());
    s->norm_mean = sf_param_float(ctx, "norm_mean");
    const char *manifest = sf_param_str(ctx, "norm_manifest");
    if ((s->norm_mean > 0 || *manifest) && s->norm != SAE_NORM_SCALAR)
        return sf_param_fail(ctx, s->norm_mean > 0 ? "norm_mean" : "norm_manifest", "is for normalize=scalar");
    if (s->norm_mean > 0) snprintf(s->norm_source, sizeof s->norm_source, "norm_mean parameter");
    else if (*manifest && trainer_read_manifest(s, manifest) != SF_OK) return sf_param_fail(ctx, "norm_manifest", "%s", sf_last_error());
    if (s->metrics_every < 1 || s->checkpoint_every < 0 || s->max_tokens < 0 || s->opts.warmup_steps < 0 ||
        s->opts.decay_steps < 0 || s->opts.decay_start < 0 || s->opts.dead_tokens < 0 || !(s->opts.lr >= 0))
        return sf_fail("metrics_every >= 1; checkpoint_every, max_tokens, warmup/decay steps, dead_tokens, lr >= 0");
    char exp[128];
    strcpy(exp, s->export_list);
    for (char *tok = strtok(exp, ","); tok; tok = strtok(NULL, ",")) {
        sae_layout l;
        if (sae_layout_parse(tok, &l) != SF_OK) return sf_param_fail(ctx, "export", "%s", sf_last_error());
    }
    return SF_OK;
}

static int trainer_check(sf_ctx *ctx) {
    trainer_state *s = sf_zalloc("sae_trainer check", 1, sizeof *s);
    if (!s) return SF_ERR;
    int rc = trainer_read_params(ctx, s);
    free(s);
    return rc;
}

static int trainer_init(sf_ctx *ctx, void **state) {
    trainer_state *s = sf_zalloc("sae_trainer state", 1, sizeof *s);
    if (!s) return SF_ERR;
    *state = s;
    if (trainer_read_params(ctx, s) != SF_OK) return SF_ERR;
    return trainer_claim_out_dir(s, sf_param_bool(ctx, "overwrite"));
}

static int trainer_path(const trainer_state *s, const char *name, char *buf, size_t cap) {
    if ((size_t)snprintf(buf, cap, "%s/%s", s->out_dir, name) >= cap) return sf_fail("path too long");
    return SF_OK;
}

/* Where a resumed run continues: after the sequences the checkpoint lists as trained (by doc_id
 * and pos, so the input may arrive in another order), or, for a checkpoint of a stream without
 * them, after the number of rows that run had read. */
static int trainer_resume_point(trainer_state *s, const sf_st_file *f, const char *path) {
    int64_t rows = sh_meta_int(f, "stream_rows");
    if (rows < sae_trainer_tokens(s->t)) return sf_fail("%s: no valid stream_rows in the metadata", path);
    s->stream_at_step = s->stream_pos = rows;
    sh_trained t;
    int rc = sh_trained_lists(f, path, &t);
    if (rc == SF_ERR) return SF_ERR;
    if (rc == SF_DONE) {
        s->keyed = 0;
        s->skip = rows;
        s->stream_pos = 0;
        sf_log(SF_LOG_INFO, "resuming at step %lld: skipping the first %lld input rows (already used; the checkpoint "
               "lists no sequences, its stream had no doc_id/pos: by count, so the input order must be the same)",
               (long long)sae_trainer_step(s->t), (long long)rows);
        return SF_OK;
    }
    int64_t total = 0;
    for (int64_t i = 0; i < t.n; i++) {
        int64_t d;
        int32_t p, r;
        sh_trained_at(&t, i, &d, &p, &r);
        sh_key *k = sh_keys_add(&s->trained, d, p);
        if (!k) return SF_ERR;
        if (r < 1 || r > (1 << 30) || k->val != SH_KEY_USED)
            return sf_fail("%s: trained sequence %lld (doc %lld pos %d) is listed twice or with %d rows", path,
                           (long long)i, (long long)d, p, r);
        k->val += (uint32_t)r;
        sh_key *skip = sh_keys_add(&s->to_skip, d, p);
        if (!skip) return SF_ERR;
        skip->val += (uint32_t)r;
        total += r;
    }
    if (total != rows)
        return sf_fail("%s: the trained sequences hold %lld rows, stream_rows says %lld", path, (long long)total,
                       (long long)rows);
    s->keyed = 1;
    s->key_rows = sh_meta_int(f, "seq_rows") > 0 ? sh_meta_int(f, "seq_rows") : 0;
    sf_log(SF_LOG_INFO, "resuming at step %lld, skipping %lld already-trained sequences (%lld rows) by doc_id and pos, "
           "in whatever order they arrive", (long long)sae_trainer_step(s->t), (long long)t.n, (long long)rows);
    return SF_OK;
}

/* First message: the model's shape is known; create it, or restore the checkpoint. */
static int trainer_setup(sf_ctx *ctx, trainer_state *s, int64_t d) {
    int64_t n = s->latents ? s->latents : s->expansion * d;
    if (n > (1 << 22)) return sf_fail("too many latents: %lld", (long long)n);
    if (sae_model_alloc(&s->m, (int)d, (int)n, (int)s->k) != SF_OK) return SF_ERR;
    s->have_model = 1;
    sae_model_init(&s->m, (uint64_t)s->seed);
    s->m.norm = s->norm;
    s->t = sae_trainer_new(&s->m, &s->opts, (int)s->batch);
    if (!s->t) return sf_fail("out of memory for the SAE's trainer (d=%lld n=%lld batch=%lld)", (long long)d,
                              (long long)n, (long long)s->batch);
    if (!(s->x = sf_alloc("the batch being collected (batch x d floats)", (size_t)s->batch * (size_t)d, sizeof(float))))
        return sf_fail("%s; lower batch", sf_last_error());
    char path[4096];
    if (trainer_path(s, "checkpoint.safetensors", path, sizeof path) != SF_OK) return SF_ERR;
    if (s->resume && access(path, F_OK) == 0) {
        if (sae_checkpoint_load(s->t, path) != SF_OK) return SF_ERR;
        if (s->m.norm != s->norm) return sf_fail("%s was trained with normalize=%s", path, sae_norm_name(s->m.norm));
        sf_st_file *f = sf_st_open(path);
        int rc = f ? trainer_resume_point(s, f, path) : SF_ERR;
        sf_st_close(f);
        if (rc != SF_OK) return SF_ERR;
    }
    s->start_step = sae_trainer_step(s->t);
    /* Metrics files: appended to on resume, header when new. */
    const char *names[2] = {"metrics.csv", "metrics.jsonl"};
    FILE **files[2] = {&s->csv, &s->jsonl};
    for (int i = 0; i < 2; i++) {
        if (trainer_path(s, names[i], path, sizeof path) != SF_OK) return SF_ERR;
        *files[i] = fopen(path, s->start_step > 0 ? "a" : "w");
        if (!*files[i]) return sf_fail("cannot open %s: %s", path, strerror(errno));
    }
    if (ftell(s->csv) == 0)
        fprintf(s->csv, "step,tokens,loss,mse,aux,fvu,cosine,l0,dead_fraction,lr,tokens_per_s\n");
    s->wstart = sf_now();
    sf_progress(ctx, (uint64_t)sae_trainer_tokens(s->t), (uint64_t)s->max_tokens, "tokens");
    return SF_OK;
}

static void trainer_write_metrics(sf_ctx *ctx, trainer_state *s) {
    if (s->wsteps == 0) return;
    double w = 1.0 / s->wsteps, dt = sf_now() - s->wstart;
    const sae_stats *a = &s->wsum;
    double tps = dt > 0 ? s->wtokens / dt : 0;
    long long step = (long long)sae_trainer_step(s->t), tok = (long long)sae_trainer_tokens(s->t);
    fprintf(s->csv, "%lld,%lld,%.7g,%.7g,%.7g,%.7g,%.7g,%.4g,%.6g,%.6g,%.1f\n", step, tok, a->loss * w,
            a->mse * w, a->aux * w, a->fvu * w, a->cosine * w, a->l0 * w, a->dead_fraction, a->lr, tps);
    fprintf(s->jsonl,
            "{\"step\": %lld, \"tokens\": %lld, \"loss\": %.7g, \"mse\": %.7g, \"aux\": %.7g, \"fvu\": %.7g, "
            "\"cosine\": %.7g, \"l0\": %.4g, \"dead_fraction\": %.6g, \"lr\": %.6g, \"tokens_per_s\": %.1f}\n",
            step, tok, a->loss * w, a->mse * w, a->aux * w, a->fvu * w, a->cosine * w, a->l0 * w,
            a->dead_fraction, a->lr, tps);
    fflush(s->csv);
    fflush(s->jsonl);
    sf_log(SF_LOG_INFO, "step %lld: loss %.5g fvu %.4f cos %.4f L0 %.1f dead %.3f lr %.3g, %.0f tokens/s", step,
           a->loss * w, a->fvu * w, a->cosine * w, a->l0 * w, a->dead_fraction, a->lr, tps);
    sf_progress_note(ctx, "step %lld loss %.4g fvu %.4f L0 %.1f dead %.1f%%", step, a->loss * w, a->fvu * w, a->l0 * w,
                     100 * a->dead_fraction);
    memset(&s->wsum, 0, sizeof s->wsum);
    s->wsteps = s->wtokens = 0;
    s->wstart = sf_now();
}

/* The training metadata kept in the model's config and the checkpoint. */
static char *trainer_meta_json(const trainer_state *s, int complete, int saelens) {
    const sae_train_opts *o = &s->opts;
    json_t *tr = json_pack("{s:I, s:I, s:I, s:f, s:I, s:I, s:I, s:f, s:b, s:I, s:f, s:I, s:I, s:b}",
                           "steps", (json_int_t)sae_trainer_step(s->t), "tokens",
                           (json_int_t)sae_trainer_tokens(s->t), "batch", (json_int_t)s->batch, "lr", o->lr,
                           "warmup_steps", (json_int_t)o->warmup_steps, "decay_start", (json_int_t)o->decay_start,
                           "decay_steps", (json_int_t)o->decay_steps, "adam_eps", o->eps, "remove_parallel_grad",
                           o->remove_parallel_grad, "k_aux", (json_int_t)o->k_aux, "aux_coef", o->aux_coef,
                           "dead_tokens", (json_int_t)o->dead_tokens, "seed", (json_int_t)s->seed, "complete", complete);
    sf_trained_on_put(tr, s->model_name, s->checkpoint, s->hook, (int)s->layer);
    if (s->norm_source[0]) /* empty after a resume: the scale came with the checkpoint */
        json_object_set_new(tr, "norm_scale_from", json_string(s->norm_source));
    json_t *root = json_pack("{s:o}", SF_TRAINED_ON_KEY, tr);
    if (saelens)
        json_object_set_new(root, "metadata",
                            json_pack("{s:s, s:s, s:I}", "model_name", s->model_name, "hook_name", s->hook,
                                      "context_size", (json_int_t)s->seq_len));
    char *text = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return text;
}

/* The checkpoint; keyed, it lists every sequence trained so far with the number of its rows
 * trained (the lists' format is the shards library's: sh_trained_build / sh_trained_lists). */
static int trainer_checkpoint(trainer_state *s) {
    char path[4096];
    if (trainer_path(s, "checkpoint.safetensors", path, sizeof path) != SF_OK) return SF_ERR;
    sh_trained_out lists;
    if (sh_trained_build(&s->trained, &lists) != SF_OK) return SF_ERR;
    char *meta = trainer_meta_json(s, 0, 0), rows[32], seq_rows[32];
    snprintf(rows, sizeof rows, "%lld", (long long)s->stream_at_step);
    snprintf(seq_rows, sizeof seq_rows, "%lld", (long long)(s->key_rows > 0 ? s->key_rows : 0));
    const char *kv[] = {"training", meta ? meta : "{}", "stream_rows", rows, "seq_rows", seq_rows, NULL};
    int rc = sae_checkpoint_save(s->t, path, kv, lists.t, s->keyed == 1 ? 3 : 0);
    free(meta);
    sh_trained_out_free(&lists);
    return rc;
}

/* The rows taken since the last step are trained now: they join the trained sequences. */
static int trainer_commit_taken(trainer_state *s) {
    for (int64_t i = 0; i < s->ntaken; i++) {
        const trainer_take *t = &s->taken[i];
        sh_key *k = sh_keys_add(&s->trained, t->doc, t->pos);
        if (!k) return SF_ERR;
        if ((k->val & ~SH_KEY_USED) + (uint32_t)t->rows > (1u << 30))
            return sf_fail("sequence doc %lld pos %d arrived more than 2^30 rows' worth", (long long)t->doc, t->pos);
        k->val += (uint32_t)t->rows;
    }
    s->ntaken = 0;
    return SF_OK;
}

static int trainer_step(sf_ctx *ctx, trainer_state *s) {
    sae_model *m = &s->m;
    int B = (int)s->fill;
    if (sae_trainer_step(s->t) == 0) {
        /* The first batch sets the normalisation scale and b_dec, as the paper's code does. */
        if (m->norm == SAE_NORM_SCALAR && trainer_norm_scale(s, B) != SF_OK) return SF_ERR;
        sae_normalize(m, s->x, B, NULL);
        sae_geometric_median(s->x, B, m->d, 100, 1e-5, m->b_dec);
    } else {
        sae_normalize(m, s->x, B, NULL);
    }
    sae_stats st;
    if (sae_train_step(s->t, s->x, B, &st) != SF_OK) return SF_ERR;
    s->fill = 0;
    if (!isfinite(st.loss)) return sf_fail("loss is %g at step %lld", st.loss, (long long)sae_trainer_step(s->t));
    s->wsum.loss += st.loss;
    s->wsum.mse += st.mse;
    s->wsum.aux += st.aux;
    s->wsum.fvu += st.fvu;
    s->wsum.cosine += st.cosine;
    s->wsum.l0 += st.l0;
    s->wsum.dead_fraction = st.dead_fraction;
    s->wsum.lr = st.lr;
    s->wsteps++;
    s->wtokens += B;
    int64_t step = sae_trainer_step(s->t);
    sf_progress(ctx, (uint64_t)sae_trainer_tokens(s->t), (uint64_t)s->max_tokens, "tokens");
    if (step % s->metrics_every == 0) trainer_write_metrics(ctx, s);
    if (s->checkpoint_every && step % s->checkpoint_every == 0) return trainer_checkpoint(s);
    return SF_OK;
}

/* Puts rows [r, end) of a into batches, training each full one; key: their sequence (keyed). */
static int trainer_take_rows(sf_ctx *ctx, trainer_state *s, const act_rows *a, int64_t r, int64_t end,
                             trainer_take *key) {
    int64_t d = s->m.d;
    while (r < end) {
        if (s->max_tokens && sae_trainer_tokens(s->t) + s->fill >= s->max_tokens) {
            sf_count(ctx, "tokens_beyond_max", end - r);
            return SF_OK;
        }
        int64_t take = end - r;
        if (take > s->batch - s->fill) take = s->batch - s->fill;
        if (s->max_tokens && take > s->max_tokens - sae_trainer_tokens(s->t) - s->fill)
            take = s->max_tokens - sae_trainer_tokens(s->t) - s->fill;
        float *dst = s->x + s->fill * d;
        sae_rows_to_f32(a, r, take, dst);
        /* A row with an inf or NaN would poison the model: drop it (counted). */
        int64_t kept = 0;
        for (int64_t i = 0; i < take; i++) {
            const float *row = dst + i * d;
            float sum = 0;
            for (int64_t c = 0; c < d; c++) sum += row[c] * 0.0f; /* NaN iff a value is inf or NaN */
            if (sum != sum) {
                sf_count(ctx, "nonfinite_rows_dropped", 1);
                continue;
            }
            if (kept != i) memmove(dst + kept * d, row, (size_t)d * sizeof(float));
            kept++;
        }
        s->fill += kept;
        r += take;
        s->stream_pos += take;
        if (key) { /* a dropped row counts as used too, as by count */
            trainer_take *last = s->ntaken ? &s->taken[s->ntaken - 1] : NULL;
            if (last && last->doc == key->doc && last->pos == key->pos) {
                last->rows += (int32_t)take;
            } else {
                if (s->ntaken == s->taken_cap) {
                    s->taken_cap = s->taken_cap ? 2 * s->taken_cap : 64;
                    s->taken = realloc(s->taken, (size_t)s->taken_cap * sizeof *s->taken);
                    if (!s->taken) return sf_fail("out of memory");
                }
                s->taken[s->ntaken++] = (trainer_take){key->doc, key->pos, (int32_t)take};
            }
        }
        if (s->fill == s->batch) {
            s->stream_at_step = s->stream_pos;
            if (trainer_commit_taken(s) != SF_OK || trainer_step(ctx, s) != SF_OK) return SF_ERR;
        }
    }
    return SF_OK;
}

static int trainer_consume(sf_ctx *ctx, trainer_state *s, const sf_msg *msg);

static int trainer_on_message(sf_ctx *ctx, void *state, int input, const sf_msg *msg) {
    (void)input;
    trainer_state *s = state;
    if (trainer_consume(ctx, s, msg) == SF_OK) return SF_OK;
    s->failed = 1;
    return SF_ERR;
}

static int trainer_consume(sf_ctx *ctx, trainer_state *s, const sf_msg *msg) {
    act_rows a;
    if (sae_get_rows(msg, s->field, &a) != SF_OK) return SF_ERR;
    if (!sae_split_matches(&a, s->split)) {
        sf_count(ctx, "other_split_messages", 1);
        s->other_split++;
        return SF_OK;
    }
    if (!s->have_model && trainer_setup(ctx, s, a.d) != SF_OK) return SF_ERR;
    if (a.d != s->m.d) return sf_fail("activations of width %lld, the SAE has d = %d", (long long)a.d, s->m.d);
    if (!s->hook[0]) sf_strv_copy(a.m.hook, s->hook, sizeof s->hook);
    if (!s->model_name[0]) sf_strv_copy(a.m.model, s->model_name, sizeof s->model_name);
    if (!s->checkpoint[0]) sf_strv_copy(a.m.checkpoint, s->checkpoint, sizeof s->checkpoint);
    if (!s->layer && a.m.has_layer) s->layer = a.m.layer;
    if (!s->seq_len) s->seq_len = a.seq_len;

    int has_doc = a.m.seq.has_keys;
    int64_t T = a.m.seq.T, B = a.m.seq.B;
    if (s->keyed < 0) { /* per-row keys of a shuffled replay would cost memory per row: count those */
        s->keyed = has_doc && T > 1;
        if (has_doc && T == 1)
            sf_log(SF_LOG_INFO, "one-row sequences (a shuffled replay?): the resume point is kept by count, exact "
                   "when a resumed run gets the same order (shard_source: same seed, one replica)");
    }
    if (s->keyed && !has_doc)
        return sf_fail("a message without doc_id/pos among keyed ones: the resume point cannot be kept");
    if (!s->keyed) { /* by count: the first `skip` rows of the stream were used before */
        int64_t r = s->skip < a.rows ? s->skip : a.rows;
        s->skip -= r;
        s->stream_pos += r;
        return trainer_take_rows(ctx, s, &a, r, a.rows, NULL);
    }
    s->key_rows = !s->key_rows || s->key_rows == T ? T : -1;
    for (int64_t b = 0; b < B; b++) {
        trainer_take key = {0, 0, 0};
        key.doc = sf_int_at(&a.m.seq.doc_id, (size_t)b);
        key.pos = (int32_t)sf_int_at(&a.m.seq.pos, (size_t)b);
        int64_t first = b * T;
        sh_key *k = sh_keys_find(&s->to_skip, key.doc, key.pos);
        if (k && k->val != SH_KEY_USED) { /* trained before the resume */
            uint32_t left = k->val & ~SH_KEY_USED, n = left < (uint32_t)T ? left : (uint32_t)T;
            k->val -= n;
            first += n;
            sf_count(ctx, "trained_rows_skipped", n);
        }
        if (trainer_take_rows(ctx, s, &a, first, (b + 1) * T, &key) != SF_OK) return SF_ERR;
    }
    return SF_OK;
}

/* A run that trained nothing leaves nothing: its metrics files (a header) and the directory it
 * made, if empty (OUT.partial whole). */
static void trainer_discard(trainer_state *s) {
    const char *names[2] = {"metrics.csv", "metrics.jsonl"};
    FILE **files[2] = {&s->csv, &s->jsonl};
    char path[4096];
    for (int i = 0; i < 2; i++) {
        if (!*files[i]) continue;
        fclose(*files[i]);
        *files[i] = NULL;
        if (trainer_path(s, names[i], path, sizeof path) == SF_OK) unlink(path);
    }
    if (trainer_replacing(s)) sf_output_abandon(&s->out);
    else rmdir(s->out_dir); /* only if empty: a directory holding anything else stays as it was */
}

static int trainer_finish(sf_ctx *ctx, void *state) {
    trainer_state *s = state;
    if (s->failed) {
        sf_log(SF_LOG_WARN, "training failed: the last checkpoint in %s is kept, no model saved", s->out_dir);
        return SF_OK;
    }
    if (s->fill) {
        /* A partial last batch is not trained on (the paper iterates whole batches); a resume
         * re-reads it. */
        sf_count(ctx, "untrained_tail_tokens", s->fill);
    }
    if (!s->have_model || sae_trainer_step(s->t) == 0) { /* an SAE of its initialisation would look trained */
        if (sf_stopping(ctx)) {
            sf_log(SF_LOG_WARN, "%s: nothing trained", s->have_model ? "stopped before the first batch" : "no activations arrived");
            return SF_OK;
        }
        char ck[4096];
        if (!s->have_model && s->resume && trainer_path(s, "checkpoint.safetensors", ck, sizeof ck) == SF_OK &&
            access(ck, F_OK) == 0) { /* e.g. skip_stored upstream dropped every sequence it trained on */
            sf_log(SF_LOG_INFO, "resume: no new activations arrived; %s is kept as it was", ck);
            return SF_OK;
        }
        trainer_discard(s);
        if (!s->have_model)
            return sf_fail("no activations arrived (0 rows%s): nothing trained, no SAE written to %s. Check the "
                           "upstream stages' errors and counters (documents of the split, the field)",
                           s->other_split ? ": every message was of another split than `split`" : "",
                           s->out.dir);
        return sf_fail("%lld activation rows arrived, fewer than one batch (%lld): nothing trained, no SAE written to "
                       "%s. Lower batch or feed more activations",
                       (long long)s->fill, (long long)s->batch, s->out.dir);
    }
    if (s->wsteps) trainer_write_metrics(ctx, s);
    int complete = !sf_stopping(ctx);
    if (sae_trainer_step(s->t) > s->start_step && trainer_checkpoint(s) != SF_OK) return SF_ERR;
    char *meta = trainer_meta_json(s, complete, 0);
    int rc = sae_save(&s->m, s->out_dir, SAE_LAYOUT_PAPER, meta);
    free(meta);
    char exp[128];
    strcpy(exp, s->export_list);
    for (char *tok = strtok(exp, ","); tok && rc == SF_OK; tok = strtok(NULL, ",")) {
        sae_layout l;
        char dir[4096];
        sae_layout_parse(tok, &l);
        /* sparsify keeps one folder per hook point (the name comes from messages: made safe). */
        if (l == SAE_LAYOUT_SPARSIFY) {
            char hook[sizeof s->hook];
            snprintf(hook, sizeof hook, "%s", s->hook[0] ? s->hook : "sae");
            for (char *c = hook; *c; c++)
                if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-", *c) &&
                    !(*c == '.' && c != hook))
                    *c = '_';
            snprintf(dir, sizeof dir, "%s/sparsify/%s", s->out_dir, hook);
        } else {
            snprintf(dir, sizeof dir, "%s/%s", s->out_dir, tok);
        }
        meta = trainer_meta_json(s, complete, l == SAE_LAYOUT_SAELENS);
        rc = sae_save(&s->m, dir, l, meta);
        free(meta);
    }
    if (rc == SF_OK && complete) rc = sf_output_commit(&s->out);
    if (rc != SF_OK) return rc;
    if (trainer_replacing(s) && !complete)
        sf_log(SF_LOG_WARN, "interrupted: %s is kept as it was; this run's checkpoint is in %s (resume = true "
               "continues it there)", s->out.dir, s->out_dir);
    sf_log(SF_LOG_INFO, "saved the SAE (%d latents, k %d) after %lld steps, %lld tokens to %s%s", s->m.n, s->m.k,
           (long long)sae_trainer_step(s->t), (long long)sae_trainer_tokens(s->t),
           complete ? s->out.dir : s->out_dir, complete ? "" : " (interrupted: resume=true continues)");
    return rc;
}

static void trainer_destroy(void *state) {
    trainer_state *s = state;
    if (!s) return;
    if (s->csv) fclose(s->csv);
    if (s->jsonl) fclose(s->jsonl);
    sae_trainer_free(s->t);
    if (s->have_model) sae_model_free(&s->m);
    sh_keys_free(&s->trained);
    sh_keys_free(&s->to_skip);
    free(s->taken);
    free(s->x);
    free(s);
}

/* saeflow sae info / convert: sae_cli.c */
int sae_cli_main(int argc, char **argv);

static const sf_command sae_commands[] = {
    {"sae", "info PATH | convert IN OUT_DIR [--layout paper|sparsify|saelens] [--k K] [--normalize unit|none]",
     "show an SAE (ours, llm-jp-sae's 2025-09 TopKSAE or 2025-03 sae.pth, sparsify, SAELens), or rewrite or export it in "
     "another layout",
     sae_cli_main},
    {NULL, NULL, NULL, NULL},
};

static const sf_stage_def trainer_def = {
    .name = "sae_trainer",
    .summary = "train a TopK sparse autoencoder on activations (the paper's recipe, sparse kernels)",
    .doc = "Reads activations messages (field `acts`, [B, T, d] or [N, d], F32/BF16/F16), collects `batch` "
           "tokens per Adam step. Writes OUT_DIR/config.json + model.safetensors (llm-jp-sae layout), "
           "checkpoint.safetensors, metrics.csv and metrics.jsonl; optionally sparsify/ and saelens/ exports. "
           "A sink: emits nothing.",
    .params = trainer_params,
    .min_inputs = 1,
    .max_inputs = 8,
    .has_output = 0,
    .init = trainer_init,
    .check = trainer_check,
    .on_message = trainer_on_message,
    .finish = trainer_finish,
    .destroy = trainer_destroy,
    .commands = sae_commands,
    SF_STAGE_DEF_SIZES,
    .takes = "activations",
};

SF_PLUGIN(&trainer_def, &sae_eval_def)
