/* fm_stage.c — the feature_miner stage (a sink) and the `saeflow report` subcommand.
 *
 * Reads "activations" messages, encodes every token with the SAE (sae_lib), feeds the top-k
 * latents of each sequence to the streaming miner (fm_miner.h), and at end of stream writes the
 * run directory (fm_output.h): features/<id>.json, summary.json, index.html, features/<id>.html. */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "fm_logits.h"
#include "fm_miner.h"
#include "fm_output.h"
#include "fm_report.h"
#include "sae.h"
#include "saeflow.h"
#include "sf_safetensors.h"

typedef struct fm_state {
    sae_model sae;
    int sae_loaded;
    fm_miner *miner;
    fm_vocab vocab;
    float *known_max;
    int drop_bos, accept_mismatch;
    char *sae_dir, *out_dir, *model_dir, *want_hook;
    char work_dir[4200]; /* out_dir + ".partial": the outputs are written here, then replace out_dir whole */
    char *checkpoint, *hook, *model_name; /* from the first message */
    int logit_top;
    fm_info info;
    /* per-message scratch */
    float *x;
    int32_t *tok, *idx;
    float *val;
    size_t cap_rows;
} fm_state;

static char *dup_or_null(const char *s) { return s && *s ? strdup(s) : NULL; }

/* Per-feature maxima from an earlier run's summary.json (two-pass mode). */
static int load_known_max(const char *path, int n, float **out) {
    json_error_t err;
    json_t *root = json_load_file(path, 0, &err);
    if (!root) return sf_fail("max_from %s: %s (line %d)", path, err.text, err.line);
    json_t *feats = json_object_get(root, "features");
    json_t *nf = json_object_get(root, "n_features");
    if (!json_is_array(feats) || !json_is_integer(nf) || json_integer_value(nf) != n) {
        json_decref(root);
        return sf_fail("max_from %s: not a feature_miner summary for %d features", path, n);
    }
    float *mx = calloc((size_t)n, sizeof *mx);
    if (!mx) abort();
    size_t i;
    json_t *f;
    json_array_foreach(feats, i, f) {
        json_int_t id = json_integer_value(json_object_get(f, "id"));
        json_t *v = json_object_get(f, "max_act");
        if (id < 0 || id >= n || !json_is_number(v)) {
            free(mx);
            json_decref(root);
            return sf_fail("max_from %s: bad entry %zu in features", path, i);
        }
        mx[id] = (float)json_number_value(v);
    }
    json_decref(root);
    *out = mx;
    return SF_OK;
}

/* A finished run's directory (or any files) at out is refused unless overwrite: re-mining into it
 * used to keep the previous run's per-feature files beside the new ones. */
static int check_out_dir(const char *out, int overwrite) {
    DIR *d = opendir(out);
    if (!d) return errno == ENOENT ? SF_OK : sf_fail("out %s: %s", out, strerror(errno));
    struct dirent *e;
    char what[300] = "";
    int finished = 0;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (!what[0]) snprintf(what, sizeof what, "files (%s ...)", e->d_name);
        finished |= !strcmp(e->d_name, "summary.json");
    }
    closedir(d);
    if (!what[0] || overwrite) return SF_OK;
    return sf_fail("out %s already holds %s: set overwrite = true to replace it whole (when this run has "
                   "finished), or mine into another directory", out,
                   finished ? "a finished mining run (summary.json)" : what);
}

static int fm_init(sf_ctx *ctx, void **out) {
    if (sf_replica_count(ctx) != 1) return sf_fail("feature_miner keeps global per-feature state: run it with replicas = 1");
    fm_state *s = calloc(1, sizeof *s);
    if (!s) abort();
    *out = s;
    s->vocab.bos = -1;
    s->sae_dir = dup_or_null(sf_param_str(ctx, "sae"));
    s->out_dir = dup_or_null(sf_param_str(ctx, "out"));
    s->model_dir = dup_or_null(sf_param_str(ctx, "model"));
    s->want_hook = dup_or_null(sf_param_str(ctx, "hook"));
    if (!s->sae_dir || !s->out_dir) return sf_fail("feature_miner needs the parameters sae and out");
    if (check_out_dir(s->out_dir, sf_param_bool(ctx, "overwrite")) != SF_OK) return SF_ERR;
    if ((size_t)snprintf(s->work_dir, sizeof s->work_dir, "%s.partial", s->out_dir) >= sizeof s->work_dir)
        return sf_fail("out: path too long");
    if (sf_remove_tree(s->work_dir) != SF_OK) return SF_ERR; /* left by a run that failed */
    if (sae_load(&s->sae, s->sae_dir) != SF_OK) return SF_ERR;
    s->sae_loaded = 1;
    const char *tok = sf_param_str(ctx, "tokenizer");
    if (tok && *tok && fm_vocab_load(&s->vocab, tok) != SF_OK) return SF_ERR;
    const char *max_from = sf_param_str(ctx, "max_from");
    if (max_from && *max_from && load_known_max(max_from, s->sae.n, &s->known_max) != SF_OK) return SF_ERR;
    int64_t top_n = sf_param_int(ctx, "top_n"), res = sf_param_int(ctx, "reservoir"), bins = sf_param_int(ctx, "hist_bins");
    if (top_n < 1 || top_n > 100000 || res < 0 || res > 100000 || bins < 2 || bins > 4096)
        return sf_fail("feature_miner: top_n must be in [1, 100000], reservoir in [0, 100000], hist_bins in [2, 4096]");
    fm_miner_cfg cfg = {
        .n_features = s->sae.n,
        .top_n = (int)top_n,
        .reservoir = (int)res,
        .hist_bins = (int)(bins + bins % 2),
        .frac = sf_param_float(ctx, "threshold"),
        .known_max = s->known_max,
        .seed = (uint64_t)sf_param_int(ctx, "seed"),
    };
    s->miner = fm_miner_new(&cfg);
    if (!s->miner) return SF_ERR;
    s->drop_bos = sf_param_bool(ctx, "drop_bos");
    s->accept_mismatch = sf_param_bool(ctx, "accept_sae_mismatch");
    s->logit_top = (int)sf_param_int(ctx, "logit_top");
    s->info = (fm_info){
        .sae_dir = s->sae_dir,
        .d = s->sae.d,
        .k = s->sae.k,
        .min_examples = (int)sf_param_int(ctx, "min_examples"),
        .token_share = sf_param_float(ctx, "token_share"),
        .lang_share = sf_param_float(ctx, "lang_share"),
        .html = sf_param_bool(ctx, "html"),
        .neuronpedia = sf_param_bool(ctx, "neuronpedia"),
        .threads = (int)sf_param_int(ctx, "threads"),
    };
    return fm_mkdirs(s->work_dir);
}

static void note_meta(const sf_msg *msg, const char *key, char **slot) {
    const char *v;
    size_t len;
    if (*slot || !sf_msg_has(msg, key) || sf_msg_get_str(msg, key, &v, &len) != SF_OK) return;
    *slot = strndup(v, len);
}

/* realloc that keeps the block on failure. */
static int grow(void **p, size_t bytes) {
    void *q = realloc(*p, bytes ? bytes : 1);
    if (!q) return sf_fail("feature_miner: out of memory (%zu bytes)", bytes);
    *p = q;
    return SF_OK;
}

/* An integer tensor of exactly n elements as int64 (I32 or I64 on the wire). */
static int int_field(const sf_msg *msg, const char *key, int64_t n, int64_t *out, int required) {
    sf_tensor t;
    if (!sf_msg_has(msg, key)) {
        if (required) return sf_fail("activations message has no '%s'", key);
        for (int64_t i = 0; i < n; i++) out[i] = -1;
        return SF_OK;
    }
    if (sf_msg_get_tensor(msg, key, &t) != SF_OK) return SF_ERR;
    if (sf_tensor_numel(&t) != n || (t.dtype != SF_I32 && t.dtype != SF_I64))
        return sf_fail("activations '%s': want %lld int32/int64 values, got %lld of %s", key, (long long)n,
                       (long long)sf_tensor_numel(&t), sf_dtype_name(t.dtype));
    const unsigned char *p = t.data; /* unaligned: copy element by element */
    for (int64_t i = 0; i < n; i++) {
        if (t.dtype == SF_I32) {
            int32_t v;
            memcpy(&v, p + 4 * i, 4);
            out[i] = v;
        } else {
            memcpy(&out[i], p + 8 * i, 8);
        }
    }
    return SF_OK;
}

static int fm_on_message(sf_ctx *ctx, void *state, int input, const sf_msg *msg) {
    (void)input;
    fm_state *s = state;
    sf_tensor acts;
    if (sf_msg_get_tensor(msg, "acts", &acts) != SF_OK) return SF_ERR;
    if (acts.ndim != 3 || acts.shape[2] != s->sae.d)
        return sf_fail("activations 'acts': want [B, T, %d], got %d dims (last %lld)", s->sae.d, acts.ndim,
                       (long long)(acts.ndim ? acts.shape[acts.ndim - 1] : 0));
    /* One SAE reads one hook point: a forward stage with several hooks emits a message per hook. */
    const char *hook = "";
    size_t hook_len = 0;
    if (sf_msg_has(msg, "hook") && sf_msg_get_str(msg, "hook", &hook, &hook_len) != SF_OK) return SF_ERR;
    if (s->want_hook && (strlen(s->want_hook) != hook_len || memcmp(s->want_hook, hook, hook_len) != 0)) {
        sf_count(ctx, "other_hook_messages", 1);
        return SF_OK;
    }
    if (s->hook && (strlen(s->hook) != hook_len || memcmp(s->hook, hook, hook_len) != 0))
        return sf_fail("activations of two hooks (%s, %.*s) in one stream: set the parameter hook to the one the SAE reads",
                       s->hook, (int)hook_len, hook);
    int64_t B = acts.shape[0], T = acts.shape[1], rows = B * T;
    if (B == 0 || T == 0) return SF_OK; /* an empty batch: nothing to mine */
    if (B < 0 || T < 0 || T > INT_MAX / 2) return sf_fail("activations: bad shape [%lld, %lld, d]", (long long)B, (long long)T);
    if (!s->hook) { /* the first message: is it what the SAE was trained on? */
        s->hook = strndup(hook, hook_len);
        note_meta(msg, "checkpoint", &s->checkpoint);
        note_meta(msg, "model", &s->model_name);
        if (sae_check_source(&s->sae, s->sae_dir, s->hook, s->checkpoint, s->model_name, s->accept_mismatch) != SF_OK)
            return SF_ERR;
    }

    if ((size_t)rows > s->cap_rows) {
        size_t r = (size_t)rows, k = (size_t)s->sae.k;
        if (grow((void **)&s->x, r * (size_t)s->sae.d * sizeof *s->x) != SF_OK || grow((void **)&s->tok, r * sizeof *s->tok) != SF_OK ||
            grow((void **)&s->idx, r * k * sizeof *s->idx) != SF_OK || grow((void **)&s->val, r * k * sizeof *s->val) != SF_OK)
            return SF_ERR;
        s->cap_rows = r;
    }
    if (sf_tensor_to_f32(&acts, s->x, (size_t)rows * (size_t)s->sae.d) != SF_OK) return SF_ERR;
    int64_t *tok64 = malloc((size_t)(rows + 2 * B) * sizeof *tok64);
    if (!tok64) abort();
    int64_t *doc = tok64 + rows, *pos = doc + B;
    int rc = int_field(msg, "tokens", rows, tok64, 1);
    if (rc == SF_OK) rc = int_field(msg, "doc_id", B, doc, 0);
    if (rc == SF_OK) rc = int_field(msg, "pos", B, pos, 0);
    size_t n_labels = 0;
    if (rc == SF_OK && sf_msg_has(msg, "label")) {
        rc = sf_msg_get_strs_count(msg, "label", &n_labels);
        if (rc == SF_OK && n_labels != (size_t)B) rc = sf_fail("activations 'label': %zu strings for %lld sequences", n_labels, (long long)B);
    }
    for (int64_t i = 0; rc == SF_OK && i < rows; i++) {
        if (tok64[i] < INT32_MIN || tok64[i] > INT32_MAX) rc = sf_fail("activations 'tokens': id %lld out of range", (long long)tok64[i]);
        s->tok[i] = (int32_t)tok64[i];
    }
    if (rc == SF_OK) rc = sae_encode(&s->sae, s->x, rows, s->idx, s->val);
    int k = s->sae.k;
    for (int64_t b = 0; rc == SF_OK && b < B; b++) {
        const char *label = "";
        size_t label_len = 0;
        if (n_labels) rc = sf_msg_get_strs_at(msg, "label", (size_t)b, &label, &label_len);
        if (rc != SF_OK) break;
        int skip = s->drop_bos && s->vocab.bos >= 0 && s->tok[b * T] == s->vocab.bos && T > 1;
        int64_t r0 = b * T + skip;
        rc = fm_miner_add(s->miner, s->tok + r0, (int)(T - skip), s->idx + r0 * k, s->val + r0 * k, k, doc[b],
                          (int32_t)pos[b], label, (int)label_len);
    }
    free(tok64);
    if (rc != SF_OK) return SF_ERR;
    sf_progress(ctx, s->miner->tokens, 0, "tokens");
    return SF_OK;
}

static int fm_on_eos(sf_ctx *ctx, void *state) {
    fm_state *s = state;
    if (s->miner->tokens == 0 && !sf_stopping(ctx)) /* an empty summary would look like a result */
        return sf_fail("feature_miner: no activations to mine arrived (0 tokens%s): nothing written to %s. Check the "
                       "upstream stages' errors and counters (documents of the split, the hook)",
                       s->want_hook ? ", or none of the hook parameter's" : "", s->out_dir);
    fm_logits lg = {0}, *lgp = NULL;
    if (s->model_dir && s->logit_top > 0) {
        unsigned char *alive = calloc((size_t)s->sae.n, 1);
        if (!alive) abort();
        for (int i = 0; i < s->sae.n; i++) alive[i] = s->miner->f[i].fired > 0;
        int rc = fm_logits_compute(&lg, s->sae.W_dec, s->sae.n, s->sae.d, alive, s->model_dir, s->logit_top);
        free(alive);
        if (rc != SF_OK) return SF_ERR;
        lgp = &lg;
    }
    s->info.checkpoint = s->checkpoint;
    s->info.hook = s->hook;
    s->info.model = s->model_name;
    int rc = fm_write_outputs(s->work_dir, s->miner, &s->vocab, &s->info, lgp);
    fm_logits_free(&lg);
    if (rc == SF_OK) rc = sf_replace_dir(s->work_dir, s->out_dir);
    if (rc == SF_OK && s->miner->nonfinite)
        sf_log(SF_LOG_WARN, "skipped %llu NaN/Inf latent values (non-finite activations in the stream)",
               (unsigned long long)s->miner->nonfinite);
    if (rc == SF_OK)
        sf_log(SF_LOG_INFO, "mined %llu tokens; wrote %s/summary.json", (unsigned long long)s->miner->tokens, s->out_dir);
    return rc;
}

static void fm_destroy(void *state) {
    fm_state *s = state;
    if (!s) return;
    fm_miner_free(s->miner);
    fm_vocab_free(&s->vocab);
    if (s->sae_loaded) sae_model_free(&s->sae);
    free(s->known_max);
    free(s->sae_dir), free(s->out_dir), free(s->model_dir), free(s->want_hook);
    free(s->checkpoint), free(s->hook), free(s->model_name);
    free(s->x), free(s->tok), free(s->idx), free(s->val);
    free(s);
}

static const sf_param_def fm_params[] = {
    {"sae", SF_PARAM_STRING, NULL, "SAE directory (llm-jp-sae, sparsify or SAELens layout)"},
    {"out", SF_PARAM_STRING, NULL, "run directory for summary.json, features/, index.html"},
    {"tokenizer", SF_PARAM_STRING, "", "tokenizer file (or spm_export_vocab listing) to show tokens"},
    {"model", SF_PARAM_STRING, "", "model directory, for logit effects (W_U . W_dec); empty: none"},
    {"hook", SF_PARAM_STRING, "", "mine only activations of this hook point (needed when the stream carries several)"},
    {"top_n", SF_PARAM_INT, "50", "examples kept per feature (paper: 50)"},
    {"threshold", SF_PARAM_FLOAT, "0.7", "example threshold as a fraction of the feature's max (paper: 0.7)"},
    {"max_from", SF_PARAM_STRING, "", "summary.json of an earlier pass: keep the earliest top_n sequences above threshold*max (the paper's second pass)"},
    {"reservoir", SF_PARAM_INT, "2", "examples sampled uniformly per activation interval of each feature (10 intervals of the max, 20 power-of-two buckets in one pass)"},
    {"hist_bins", SF_PARAM_INT, "64", "histogram bins (width doubles as the max grows)"},
    {"lang_share", SF_PARAM_FLOAT, "0.9", "a feature is English/Japanese if more than this share of its examples is"},
    {"min_examples", SF_PARAM_INT, "5", "granularity needs at least this many examples"},
    {"token_share", SF_PARAM_FLOAT, "0.5", "token-level if one peak token takes this share of examples"},
    {"logit_top", SF_PARAM_INT, "10", "promoted/suppressed tokens listed per feature"},
    {"drop_bos", SF_PARAM_BOOL, "true", "leave out a leading BOS token, as the paper does"},
    {"html", SF_PARAM_BOOL, "true", "write the HTML dashboard"},
    {"neuronpedia", SF_PARAM_BOOL, "false", "also write neuronpedia/<id>.json (Neuronpedia-style feature JSON)"},
    {"seed", SF_PARAM_INT, "0", "seed of the per-interval example sampling"},
    {"threads", SF_PARAM_INT, "0", "threads writing the output files at the end (0: one per CPU)"},
    {"overwrite", SF_PARAM_BOOL, "false",
     "replace a finished run (or any files) in out; the new outputs are written beside it (OUT.partial) and "
     "replace it whole only when complete, so a failed run leaves it intact"},
    {"accept_sae_mismatch", SF_PARAM_BOOL, "false",
     "mine activations of another hook, checkpoint or model than the SAE's config records (logged); otherwise "
     "that is an error"},
    {NULL, 0, NULL, NULL},
};

static const sf_command fm_commands[] = {
    {"report", FM_REPORT_ARGS,
     "cross-checkpoint tables and charts from feature_miner run directories", fm_report_main},
    {NULL, NULL, NULL, NULL},
};

static const sf_stage_def fm_stage_def = {
    .name = "feature_miner",
    .summary = "per-feature statistics, top examples, language and granularity of SAE features",
    .doc = "Reads activations messages (acts [B,T,d], tokens [B,T], doc_id, pos, label), encodes them with "
           "the SAE and, at end of stream, writes OUT/summary.json, OUT/features/<id>.json (the paper's "
           "token_act schema plus statistics, examples, histogram, language, granularity, logit effects) "
           "and an offline HTML dashboard OUT/index.html. Emits nothing.",
    .params = fm_params,
    .min_inputs = 1,
    .max_inputs = 1,
    .has_output = 0,
    .init = fm_init,
    .on_message = fm_on_message,
    .on_eos = fm_on_eos,
    .destroy = fm_destroy,
    .commands = fm_commands,
};

SF_PLUGIN(&fm_stage_def)
