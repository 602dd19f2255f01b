/* fm_stage.c — the feature_miner stage (a sink) and the `saeflow report` and `saeflow classify` subcommands.
 *
 * Reads "activations" messages, encodes every token with the SAE (sae_lib), feeds the top-k
 * latents of each sequence to the streaming miner (fm_miner.h), and at end of stream writes the
 * run directory (fm_output.h): features/<id>.json, summary.json, index.html, features/<id>.html.
 *
 * The paper's sampling takes two runs over the same stream: `sampling = paper-max` only finds
 * every feature's maximum encoder pre-activation and writes OUT/maxima.json; `sampling = paper`
 * reads it (max_from) and mines, checking that it sees the same stream (counts and maxima). */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fm_logits.h"
#include "fm_miner.h"
#include "fm_output.h"
#include "fm_pairs.h"
#include "fm_classify.h"
#include "fm_judge.h"
#include "fm_report.h"
#include "sae.h"
#include "saeflow.h"
#include "sf_kinds.h"
#include "sf_output.h"
#include "sf_safetensors.h"
#ifdef FM_HAVE_FORWARD
#include "hook.h"
#endif

typedef enum fm_stage_sampling { SAMPLING_STRONGEST, SAMPLING_PAPER_MAX, SAMPLING_PAPER } fm_stage_sampling;
static const char *const sampling_names[] = {"strongest", "paper-max", "paper"};

/* Pre-activations held at once in the paper's modes: groups of whole sequences up to this many
 * floats (64 MiB), at least one sequence. */
#define FM_PRE_FLOATS ((size_t)1 << 24)

typedef struct fm_state {
    sae_model sae;
    int sae_loaded;
    fm_miner *miner; /* NULL in paper-max mode (pass 1 only takes maxima) */
    fm_vocab vocab;
    fm_pairs *pairs;             /* the cross-lingual (pairs) test, when the parameter pairs names a corpus */
    fm_stage_sampling sampling;
    char *maxima_path;           /* paper-max: written; paper: read */
    float *known_max;            /* paper: pass 1's maxima */
    uint64_t known_tokens, known_seqs; /* paper: pass 1's counts */
    float *pre_max;              /* paper modes: this stream's maximum pre-activation per feature */
    uint64_t tokens, sequences;  /* paper modes: this stream's counts (as the miner counts them) */
    float *pre;                  /* paper modes: pre-activations of a group of sequences */
    size_t cap_pre;
    int drop_bos, accept_mismatch;
    char *sae_dir, *out_dir, *model_dir, *want_hook;
    sf_output out; /* out_dir claimed: the outputs are written in out.work (OUT.partial), then replace it whole */
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

#define FM_MAXIMA_SCHEMA "saeflow.feature_miner.maxima/1"

/* Pass 1's file (sampling = paper-max): each feature's maximum pre-activation over the stream,
 * and the stream's counts, which pass 2 checks. */
static int write_maxima(const fm_state *s, const char *path) {
    json_t *o = json_object(), *mx = json_array();
    json_object_set_new(o, "schema", json_string(FM_MAXIMA_SCHEMA));
    json_object_set_new(o, "sae", json_string(s->sae_dir));
    json_object_set_new(o, "checkpoint", json_string(s->checkpoint ? s->checkpoint : ""));
    json_object_set_new(o, "hook", json_string(s->hook ? s->hook : ""));
    json_object_set_new(o, "n_features", json_integer(s->sae.n));
    json_object_set_new(o, "tokens", json_integer((json_int_t)s->tokens));
    json_object_set_new(o, "sequences", json_integer((json_int_t)s->sequences));
    for (int i = 0; i < s->sae.n; i++) json_array_append_new(mx, json_real(s->pre_max[i]));
    json_object_set_new(o, "max_preact", mx);
    int rc = json_dump_file(o, path, JSON_COMPACT | JSON_REAL_PRECISION(9)) == 0
                 ? SF_OK
                 : sf_fail("cannot write %s: %s", path, strerror(errno));
    json_decref(o);
    return rc;
}

static int load_maxima(fm_state *s) {
    const char *path = s->maxima_path;
    int n = s->sae.n;
    json_error_t err;
    json_t *root = json_load_file(path, 0, &err);
    if (!root)
        return sf_fail("max_from %s: %s (line %d); run this stream with sampling = paper-max first", path, err.text,
                       err.line);
    json_t *mx = json_object_get(root, "max_preact");
    json_t *nf = json_object_get(root, "n_features"), *nt = json_object_get(root, "tokens"),
           *ns = json_object_get(root, "sequences");
    const char *schema = json_string_value(json_object_get(root, "schema"));
    if (!schema || strcmp(schema, FM_MAXIMA_SCHEMA) != 0 || !json_is_array(mx) || !json_is_integer(nf) ||
        !json_is_integer(nt) || !json_is_integer(ns)) {
        json_decref(root);
        return sf_fail("max_from %s: not a maxima file of sampling = paper-max (%s)", path, FM_MAXIMA_SCHEMA);
    }
    long long n_file = (long long)json_integer_value(nf);
    if (n_file != n || json_array_size(mx) != (size_t)n) {
        json_decref(root);
        return sf_fail("max_from %s: maxima of %lld features, this SAE has %d", path, n_file, n);
    }
    if (!(s->known_max = sf_zalloc("max_from's maxima", (size_t)n, sizeof *s->known_max))) {
        json_decref(root);
        return SF_ERR;
    }
    for (int i = 0; i < n; i++) {
        json_t *v = json_array_get(mx, (size_t)i);
        if (!json_is_number(v) || !(json_number_value(v) >= 0)) {
            json_decref(root);
            return sf_fail("max_from %s: max_preact[%d] is not a number >= 0", path, i);
        }
        s->known_max[i] = (float)json_number_value(v);
    }
    s->known_tokens = (uint64_t)json_integer_value(nt);
    s->known_seqs = (uint64_t)json_integer_value(ns);
    json_decref(root);
    return SF_OK;
}

/* Pass 2 must see pass 1's stream: the same counts and, per feature, the same maximum (up to
 * float rounding, should the batches be grouped differently). */
static int check_same_stream(const fm_state *s) {
    const char *fix = "run sampling = paper-max on this same stream first";
    if (s->tokens != s->known_tokens || s->sequences != s->known_seqs)
        return sf_fail("max_from %s: made from %llu sequences (%llu tokens), this stream has %llu (%llu): %s",
                       s->maxima_path, (unsigned long long)s->known_seqs, (unsigned long long)s->known_tokens,
                       (unsigned long long)s->sequences, (unsigned long long)s->tokens, fix);
    for (int i = 0; i < s->sae.n; i++) {
        double a = s->known_max[i], b = s->pre_max[i];
        if (fabs(a - b) > 1e-5 * fmax(fabs(a), fabs(b)) + 1e-7)
            return sf_fail("max_from %s: feature %d's maximum pre-activation is %.9g there, %.9g in this stream: %s",
                           s->maxima_path, i, a, b, fix);
    }
    return SF_OK;
}

static void fm_destroy(void *state);

/* The parameters and the files they name (the SAE, the tokenizer, max_from), for check and init
 * alike; fm_destroy frees what they load. */
static int fm_read_params(sf_ctx *ctx, fm_state *s) {
    if (sf_replica_count(ctx) != 1) return sf_param_fail(ctx, "replicas", "feature_miner keeps global per-feature state: run it with replicas = 1");
    s->vocab.bos = -1;
    s->sae_dir = dup_or_null(sf_param_str(ctx, "sae"));
    s->out_dir = dup_or_null(sf_param_str(ctx, "out"));
    s->model_dir = dup_or_null(sf_param_str(ctx, "model"));
    s->want_hook = dup_or_null(sf_param_str(ctx, "hook"));
#ifdef FM_HAVE_FORWARD
    char canonical[64]; /* messages carry the canonical name: hidden_states.3 filters resid_post.2 */
    if (s->want_hook && fw_hook_canonical(s->want_hook, canonical, sizeof canonical) != SF_OK) return SF_ERR;
    if (s->want_hook) free(s->want_hook), s->want_hook = strdup(canonical);
#endif
    if (!s->sae_dir || !s->out_dir) return sf_fail("feature_miner needs the parameters sae and out");
    if (sae_load(&s->sae, s->sae_dir) != SF_OK) return sf_param_fail(ctx, "sae", "%s", sf_last_error());
    s->sae_loaded = 1;
    const char *tok = sf_param_str(ctx, "tokenizer");
    if (tok && *tok && fm_vocab_load(&s->vocab, tok) != SF_OK) return sf_param_fail(ctx, "tokenizer", "%s", sf_last_error());
    const char *sampling = sf_param_str(ctx, "sampling"), *max_from = sf_param_str(ctx, "max_from");
    int found = 0;
    for (int i = 0; i < (int)(sizeof sampling_names / sizeof *sampling_names); i++)
        if (sampling && strcmp(sampling, sampling_names[i]) == 0) s->sampling = (fm_stage_sampling)i, found = 1;
    if (!found) return sf_param_fail(ctx, "sampling", "'%s': want strongest, paper-max or paper", sampling ? sampling : "");
    if (max_from && *max_from && s->sampling != SAMPLING_PAPER)
        return sf_param_fail(ctx, "max_from", "is read by sampling = paper (the paper's second pass); remove it or set sampling = paper");
    if (s->sampling != SAMPLING_STRONGEST) {
        if (max_from && *max_from) s->maxima_path = sf_strdup("max_from", max_from);
        else if (asprintf(&s->maxima_path, "%s/maxima.json", s->out_dir) < 0) s->maxima_path = NULL;
        if (!s->maxima_path) return sf_fail("feature_miner: out of memory");
        /* from 0, as the paper's maxima */
        if (!(s->pre_max = sf_zalloc("maximum pre-activations", (size_t)s->sae.n, sizeof *s->pre_max))) return SF_ERR;
    }
    if (s->sampling == SAMPLING_PAPER && load_maxima(s) != SF_OK) return sf_param_fail(ctx, "max_from", "%s", sf_last_error());
    const char *pairs = sf_param_str(ctx, "pairs");
    if (pairs && *pairs) {
        fm_pairs_cfg pc = {.n_features = s->sae.n, .permutations = (int)sf_param_int(ctx, "pairs_permutations"),
                           .alpha = sf_param_float(ctx, "pairs_alpha"), .seed = (uint64_t)sf_param_int(ctx, "seed")};
        if (!(s->pairs = fm_pairs_load(pairs, &pc))) return sf_param_fail(ctx, "pairs", "%s", sf_last_error());
    }
    return SF_OK;
}

static int fm_check(sf_ctx *ctx) {
    fm_state *s = sf_zalloc("feature_miner check", 1, sizeof *s);
    if (!s) return SF_ERR;
    int rc = fm_read_params(ctx, s);
    fm_destroy(s);
    return rc;
}

static int fm_init(sf_ctx *ctx, void **out) {
    fm_state *s = sf_zalloc("feature_miner state", 1, sizeof *s);
    if (!s) return SF_ERR;
    *out = s;
    if (fm_read_params(ctx, s) != SF_OK) return SF_ERR;
    int64_t top_n = sf_param_int(ctx, "top_n"), res = sf_param_int(ctx, "reservoir"), bins = sf_param_int(ctx, "hist_bins");
    fm_miner_cfg cfg = {
        .n_features = s->sae.n,
        .top_n = (int)top_n,
        .reservoir = (int)res,
        .hist_bins = (int)(bins + bins % 2),
        .frac = sf_param_float(ctx, "threshold"),
        .sampling = s->sampling == SAMPLING_PAPER ? FM_SAMPLING_PAPER : FM_SAMPLING_STRONGEST,
        .known_max = s->known_max,
        .seed = (uint64_t)sf_param_int(ctx, "seed"),
    };
    if (s->sampling != SAMPLING_PAPER_MAX && !(s->miner = fm_miner_new(&cfg))) return SF_ERR;
    s->drop_bos = sf_param_bool(ctx, "drop_bos");
    s->accept_mismatch = sf_param_bool(ctx, "accept_sae_mismatch");
    s->logit_top = (int)sf_param_int(ctx, "logit_top");
    s->info = (fm_info){
        .sae_dir = s->sae_dir,
        .d = s->sae.d,
        .k = s->sae.k,
        .gran = {
            .min_examples = (int)sf_param_int(ctx, "min_examples"),
            .token_share = sf_param_float(ctx, "token_share"),
            .distinct_share = sf_param_float(ctx, "distinct_share"),
            .context_share = sf_param_float(ctx, "context_share"),
            .dense_share = sf_param_float(ctx, "dense_share"),
        },
        .lang_share = sf_param_float(ctx, "lang_share"),
        .html = sf_param_bool(ctx, "html"),
        .neuronpedia = sf_param_bool(ctx, "neuronpedia"),
        .threads = (int)sf_param_int(ctx, "threads"),
    };
    if (fm_gran_check_params(&s->info.gran) != SF_OK) return SF_ERR;
    char default_maxima[4200];
    snprintf(default_maxima, sizeof default_maxima, "%s/maxima.json", s->out_dir);
    const char *keep = s->sampling == SAMPLING_PAPER && !strcmp(s->maxima_path, default_maxima) ? "maxima.json" : NULL;
    /* A finished run's directory (or any files) at out is refused unless overwrite: re-mining into it
     * used to keep the previous run's per-feature files beside the new ones. keep: pass 2 of the
     * paper's sampling reads pass 1's maxima.json from out. Every run (pass 1 too, whose output is
     * maxima.json alone) writes in OUT.partial and replaces out whole. */
    static const sf_output_mark marks[] = {
        {"summary.json", "a finished mining run"}, {"maxima.json", "a first pass's maxima"}, {NULL, NULL}};
    sf_output_opts opts = {.marks = marks, .keep = keep, .aside = 1, .overwrite = sf_param_bool(ctx, "overwrite")};
    return sf_output_claim(&s->out, s->out_dir, &opts);
}

/* realloc that keeps the block on failure. */
static int grow(void **p, size_t bytes) {
    void *q = realloc(*p, bytes ? bytes : 1);
    if (!q) return sf_fail("feature_miner: out of memory (%zu bytes)", bytes);
    *p = q;
    return SF_OK;
}

/* mx[i] = max(mx[i], pre[t][i]) over T rows of n (NaN and Inf left out, as in the statistics). */
static void preact_max_update(float *mx, const float *pre, int T, int n) {
    for (int t = 0; t < T; t++)
        for (int i = 0; i < n; i++) {
            float a = pre[(size_t)t * (size_t)n + (size_t)i];
            if (a > mx[i] && isfinite(a)) mx[i] = a;
        }
}

static int fm_on_message(sf_ctx *ctx, void *state, int input, const sf_msg *msg) {
    (void)input;
    fm_state *s = state;
    sf_acts_msg am;
    if (sf_read_activations(msg, NULL, SF_NEED_TOKENS | SF_NEED_SEQS, &am) != SF_OK) return SF_ERR;
    const sf_tensor acts = am.acts;
    if (acts.ndim != 3 || acts.shape[2] != s->sae.d)
        return sf_fail("activations 'acts': want [B, T, %d], got %d dims (last %lld)", s->sae.d, acts.ndim,
                       (long long)(acts.ndim ? acts.shape[acts.ndim - 1] : 0));
    /* One SAE reads one hook point: a forward stage with several hooks emits a message per hook. */
    const char *hook = am.hook.present ? am.hook.s : "";
    size_t hook_len = am.hook.len;
    if (s->want_hook && !sf_strv_eq(am.hook, s->want_hook)) {
        sf_count(ctx, "other_hook_messages", 1);
        return SF_OK;
    }
    if (s->hook && !sf_strv_eq(am.hook, s->hook))
        return sf_fail("activations of two hooks (%s, %.*s) in one stream: set the parameter hook to the one the SAE reads",
                       s->hook, (int)hook_len, hook);
    int64_t B = am.seq.B, T = am.seq.T, rows = B * T;
    if (B == 0 || T == 0) return SF_OK; /* an empty batch: nothing to mine */
    if (B < 0 || T < 0 || T > INT_MAX / 2) return sf_fail("activations: bad shape [%lld, %lld, d]", (long long)B, (long long)T);
    if (!s->hook) { /* the first message: is it what the SAE was trained on? */
        s->hook = strndup(hook, hook_len);
        if (!s->checkpoint && am.checkpoint.present) s->checkpoint = strndup(am.checkpoint.s, am.checkpoint.len);
        if (!s->model_name && am.model.present) s->model_name = strndup(am.model.s, am.model.len);
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
    size_t n_labels = am.seq.n_labels;
    for (int64_t i = 0; i < rows; i++) s->tok[i] = (int32_t)sf_int_at(&am.seq.tokens, (size_t)i);
    int rc = SF_OK;
    /* Encoded in groups of whole sequences (all at once for the top-k alone; in the paper's modes as
     * many as FM_PRE_FLOATS pre-activations allow), each sequence its own block: the same bits
     * however the sequences are grouped into messages. */
    int k = s->sae.k, n = s->sae.n;
    int64_t group = B;
    if (rc == SF_OK && s->sampling != SAMPLING_STRONGEST) {
        size_t per_seq = (size_t)T * (size_t)n;
        group = per_seq >= FM_PRE_FLOATS ? 1 : (int64_t)(FM_PRE_FLOATS / per_seq);
        if (group > B) group = B;
        if ((size_t)group * per_seq > s->cap_pre) { /* aligned as sae_encode's own buffer: the sgemm writes it */
            free(s->pre);
            s->pre = aligned_alloc(64, ((size_t)group * per_seq * sizeof *s->pre + 63) & ~(size_t)63);
            s->cap_pre = s->pre ? (size_t)group * per_seq : 0;
            if (!s->pre) rc = sf_fail("feature_miner: out of memory (pre-activations of %lld sequences)", (long long)group);
        }
    }
    for (int64_t b0 = 0; rc == SF_OK && b0 < B; b0 += group) {
        int64_t g = B - b0 < group ? B - b0 : group, r0 = b0 * T;
        rc = s->sampling == SAMPLING_STRONGEST
                 ? sae_encode(&s->sae, s->x + r0 * s->sae.d, g * T, T, s->idx + r0 * k, s->val + r0 * k)
                 : sae_encode_preacts(&s->sae, s->x + r0 * s->sae.d, g * T, T, s->idx + r0 * k, s->val + r0 * k, s->pre);
        for (int64_t b = b0; rc == SF_OK && b < b0 + g; b++) {
            const char *label = "";
            size_t label_len = 0;
            if (n_labels) rc = sf_msg_get_strs_at(msg, "label", (size_t)b, &label, &label_len);
            if (rc != SF_OK) break;
            int64_t doc = am.seq.has_keys ? sf_int_at(&am.seq.doc_id, (size_t)b) : -1; /* -1: no doc_id/pos */
            int32_t pos = am.seq.has_keys ? (int32_t)sf_int_at(&am.seq.pos, (size_t)b) : -1;
            int skip = s->drop_bos && s->vocab.bos >= 0 && s->tok[b * T] == s->vocab.bos && T > 1;
            int64_t r = b * T + skip;
            const float *pre = NULL;
            if (s->pre_max) {
                pre = s->pre + ((size_t)(b - b0) * (size_t)T + (size_t)skip) * (size_t)n;
                preact_max_update(s->pre_max, pre, (int)(T - skip), n);
                s->tokens += (uint64_t)(T - skip);
                s->sequences++;
            }
            if (s->miner)
                rc = fm_miner_add(s->miner, s->tok + r, (int)(T - skip), s->idx + r * k, s->val + r * k, k, pre, doc, pos,
                                  label, (int)label_len);
            if (rc == SF_OK && s->miner && s->pairs)
                rc = fm_pairs_add(s->pairs, doc, s->tok + r, s->idx + r * k, s->val + r * k, (int)(T - skip), k);
        }
    }
    if (rc != SF_OK) return SF_ERR;
    sf_progress(ctx, s->miner ? s->miner->tokens : s->tokens, 0, "tokens");
    return SF_OK;
}

static int fm_on_eos(sf_ctx *ctx, void *state) {
    fm_state *s = state;
    uint64_t mined = s->miner ? s->miner->tokens : s->tokens;
    if (mined == 0 && !sf_stopping(ctx)) /* an empty summary would look like a result */
        return sf_fail("feature_miner: no activations to mine arrived (0 tokens%s): nothing written to %s. Check the "
                       "upstream stages' errors and counters (documents of the split, the hook)",
                       s->want_hook ? ", or none of the hook parameter's" : "", s->out_dir);
    if (s->sampling == SAMPLING_PAPER_MAX) { /* maxima_path is OUT/maxima.json: written aside, then put in place */
        char path[4300];
        snprintf(path, sizeof path, "%s/maxima.json", s->out.work);
        int rc = write_maxima(s, path);
        if (rc == SF_OK) rc = sf_output_commit(&s->out);
        if (rc == SF_OK)
            sf_log(SF_LOG_INFO, "pass 1 of the paper's sampling: maxima of %llu tokens in %s; mine with sampling = paper",
                   (unsigned long long)s->tokens, s->maxima_path);
        return rc;
    }
    if (s->sampling == SAMPLING_PAPER && check_same_stream(s) != SF_OK) return SF_ERR;
    fm_logits lg = {0}, *lgp = NULL;
    if (s->model_dir && s->logit_top > 0) {
        unsigned char *alive = sf_zalloc("per-feature flags", (size_t)s->sae.n, 1);
        if (!alive) return SF_ERR;
        for (int i = 0; i < s->sae.n; i++) alive[i] = s->miner->f[i].fired > 0;
        int rc = fm_logits_compute(&lg, s->sae.W_dec, s->sae.n, s->sae.d, alive, s->model_dir, s->logit_top);
        free(alive);
        if (rc != SF_OK) return SF_ERR;
        lgp = &lg;
    }
    s->info.checkpoint = s->checkpoint;
    s->info.hook = s->hook;
    s->info.model = s->model_name;
    if (s->pairs) {
        if (fm_pairs_finish(s->pairs) != SF_OK) {
            fm_logits_free(&lg);
            return SF_ERR;
        }
        s->info.pairs = s->pairs;
        sf_log(SF_LOG_INFO, "cross-lingual (pairs): %d of %d tested features on %d translation pairs", s->pairs->n_cross,
               s->pairs->n_tested, s->pairs->n_mined);
    }
    int rc = fm_write_outputs(s->out.work, s->miner, &s->vocab, &s->info, lgp);
    fm_logits_free(&lg);
    if (rc == SF_OK && s->sampling == SAMPLING_PAPER) { /* the run directory keeps the maxima it was mined with */
        char path[4300];
        snprintf(path, sizeof path, "%s/maxima.json", s->out.work);
        rc = write_maxima(s, path);
    }
    if (rc == SF_OK) rc = sf_output_commit(&s->out);
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
    /* a run that failed (out of memory, a bad message) leaves no half-written OUT.partial; after a
     * completed one there is nothing left there */
    sf_output_abandon(&s->out);
    fm_miner_free(s->miner);
    fm_vocab_free(&s->vocab);
    fm_pairs_free(s->pairs);
    if (s->sae_loaded) sae_model_free(&s->sae);
    free(s->known_max), free(s->pre_max), free(s->pre), free(s->maxima_path);
    free(s->sae_dir), free(s->out_dir), free(s->model_dir), free(s->want_hook);
    free(s->checkpoint), free(s->hook), free(s->model_name);
    free(s->x), free(s->tok), free(s->idx), free(s->val);
    free(s);
}

static const sf_param_def fm_params[] = {
    {"sae", SF_PARAM_STRING, NULL, "SAE directory (llm-jp-sae, sparsify or SAELens layout)"},
    {"out", SF_PARAM_STRING, NULL, "run directory for summary.json, features/, index.html"},
    {"tokenizer", SF_PARAM_STRING, "",
     "tokenizer file (or spm_export_vocab listing) to show tokens; as the tokenizer stage's, also a folder or a "
     "comma-separated list of candidates"},
    {"model", SF_PARAM_STRING, "", "model directory, for logit effects (W_U . W_dec); empty: none"},
    {"hook", SF_PARAM_STRING, "", "mine only activations of this hook point (needed when the stream carries several)"},
    {"top_n", SF_PARAM_INT, "50", "examples kept per feature (paper: 50)", "[1, 100000]"},
    {"threshold", SF_PARAM_FLOAT, "0.7", "example threshold as a fraction of the feature's max (paper: 0.7)"},
    {"sampling", SF_PARAM_STRING, "strongest",
     "which sequences become examples: strongest (one pass: the top_n of highest peak, top-k values), paper-max (the "
     "paper's pass 1: only OUT/maxima.json, each feature's maximum pre-activation), paper (its pass 2: the first top_n in "
     "shuffled order whose peak exceeds threshold*max, ReLU(pre-activation) values)"},
    {"max_from", SF_PARAM_STRING, "", "sampling = paper: the maxima file of pass 1 (default OUT/maxima.json)"},
    {"reservoir", SF_PARAM_INT, "2", "examples sampled uniformly per activation interval of each feature (10 intervals of the max, 20 power-of-two buckets in one pass)", "[0, 100000]"},
    {"hist_bins", SF_PARAM_INT, "64", "histogram bins (width doubles as the max grows)", "[2, 4096]"},
    {"lang_share", SF_PARAM_FLOAT, FM_STR(FM_DEFAULT_LANG_SHARE), "a feature is English/Japanese if more than this share of its examples is (paper rule: of all examples)"},
    {"min_examples", SF_PARAM_INT, FM_STR(FM_GRAN_MIN_EXAMPLES), "granularity: fewer examples than this are 'few'"},
    {"token_share", SF_PARAM_FLOAT, FM_STR(FM_GRAN_TOKEN_SHARE), "granularity: token-level if one peak token takes at least this share of examples"},
    {"distinct_share", SF_PARAM_FLOAT, FM_STR(FM_GRAN_DISTINCT_SHARE), "granularity: uninterpretable needs at least this many distinct peak tokens per example ..."},
    {"context_share", SF_PARAM_FLOAT, FM_STR(FM_GRAN_CONTEXT_SHARE), "granularity: ... no token before/after the peak shared by this share of examples ..."},
    {"dense_share", SF_PARAM_FLOAT, FM_STR(FM_GRAN_DENSE_SHARE), "granularity: ... and firing on less than this share of an example's tokens"},
    {"logit_top", SF_PARAM_INT, "10", "promoted/suppressed tokens listed per feature"},
    {"drop_bos", SF_PARAM_BOOL, "true", "leave out a leading BOS token, as the paper does"},
    {"html", SF_PARAM_BOOL, "true", "write the HTML dashboard"},
    {"neuronpedia", SF_PARAM_BOOL, "false", "also write neuronpedia/<id>.json (Neuronpedia-style feature JSON)"},
    {"pairs", SF_PARAM_STRING, "",
     "JSON Lines corpus (or comma-separated files) whose rows name their translation (id, lang, pair; e.g. data/corpus/debian-docs.jsonl.gz): "
     "test every feature for firing on both sides of the same pairs against shuffled pairs (cross-lingual (pairs), "
     "our test; needs both sides mined: text_source split = all, label_field = lang, id_field = id)"},
    {"pairs_permutations", SF_PARAM_INT, "1000", "pairs: shuffled pairings of the null (seeded by seed)", "[1, 1000000]"},
    {"pairs_alpha", SF_PARAM_FLOAT, "0.01", "pairs: family-wise error; a feature is cross-lingual when its p <= pairs_alpha / features tested", "(0, 1)"},
    {"seed", SF_PARAM_INT, "0", "seed of the shuffled order (sampling = paper), of the per-interval example sampling and of the pairs test's permutations"},
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
    {"classify", FM_CLASSIFY_ARGS,
     "language (paper, ascii, script rules) and granularity of feature files (the paper's token_act JSON)", fm_classify_main},
    {NULL, NULL, NULL, NULL},
};

static const sf_stage_def fm_stage_def = {
    .name = "feature_miner",
    .summary = "per-feature statistics, top examples, language and granularity of SAE features",
    .doc = "Reads activations messages (acts [B,T,d], tokens [B,T], doc_id, pos, label), encodes them with "
           "the SAE and, at end of stream, writes OUT/summary.json, OUT/features/<id>.json (the paper's "
           "token_act schema plus statistics, examples, histogram, language, granularity, logit effects) "
           "and an offline HTML dashboard OUT/index.html. With pairs (a corpus whose rows name their translation) "
           "also the cross-lingual (pairs) test: per feature, the translation pairs it fires on both sides of against "
           "shuffled pairings (a pairs block in summary.json and every feature file). Emits nothing.",
    .params = fm_params,
    .min_inputs = 1,
    .max_inputs = 1,
    .has_output = 0,
    .init = fm_init,
    .check = fm_check,
    .on_message = fm_on_message,
    .on_eos = fm_on_eos,
    .destroy = fm_destroy,
    .commands = fm_commands,
    SF_STAGE_DEF_SIZES,
    .takes = "activations",
};

SF_PLUGIN(&fm_stage_def)
