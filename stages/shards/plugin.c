/* The shard_writer and shard_source stages and the `saeflow shards` command: thin wiring of the
 * writer and reader modules to activations messages. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hook.h"
#include "sf_kinds.h"
#include "shards.h"

/* ---- shard_writer ---- */

typedef struct writer_state {
    sh_writer *w;
    char hook[64]; /* filter (canonical name, as messages carry it), or "" */
    int ended;
    char *str_buf; /* NUL-terminated copies of a message's model, checkpoint, hook, split */
    size_t str_cap;
    const char **labels;
    size_t *label_len;
    size_t nlabels_cap;
    int64_t rows_seen;
} writer_state;

static const sf_param_def writer_params[] = {
    {"dir", SF_PARAM_STRING, NULL, "shard directory (created if missing; an existing run is resumed)"},
    {"dtype", SF_PARAM_STRING, "F32", "stored activation dtype: F32, BF16 or F16 (round to nearest even)"},
    {"shard_mb", SF_PARAM_INT, "128", "shard size in MiB of row data; memory holds one pending shard per split", "[1, 1048576]"},
    {"resume", SF_PARAM_BOOL, "true", "continue a directory that already holds shards of the same run"},
    {"hook", SF_PARAM_STRING, "",
     "store only messages of this hook point (forward emits one message per hook); empty: all must be of one"},
    {"skipped_upstream", SF_PARAM_BOOL, "false",
     "the source drops sequences already stored (tokenizer skip_stored = this dir: the batches stored whole), so "
     "they need not arrive again (those that do are skipped); the source checks that its input holds them"},
    {NULL, 0, NULL, NULL},
};

/* The parameters, for check and init alike (the directory is the writer's to create). */
static int writer_check(sf_ctx *ctx) {
    sf_dtype dt;
    if (sh_dtype_parse(sf_param_str(ctx, "dtype"), &dt) != SF_OK) return sf_param_fail(ctx, "dtype", "%s", sf_last_error());
    if (sf_replica_count(ctx) > 1)
        return sf_param_fail(ctx, "replicas", "shard_writer cannot have replicas: they would share one directory (use one writer per dir)");
    return SF_OK;
}

static int writer_init(sf_ctx *ctx, void **state) {
    if (writer_check(ctx) != SF_OK) return SF_ERR;
    sf_dtype dt;
    sh_dtype_parse(sf_param_str(ctx, "dtype"), &dt);
    int64_t mb = sf_param_int(ctx, "shard_mb");
    writer_state *s = sf_zalloc("shard_writer state", 1, sizeof *s);
    if (!s) return SF_ERR;
    *state = s;
    const char *hook = sf_param_str(ctx, "hook");
    if (*hook && fw_hook_canonical(hook, s->hook, sizeof s->hook) != SF_OK) return SF_ERR;
    s->w = sh_writer_open(sf_param_str(ctx, "dir"), dt, (size_t)mb << 20, sf_param_bool(ctx, "resume"),
                         sf_param_bool(ctx, "skipped_upstream"));
    return s->w ? SF_OK : SF_ERR;
}

/* Appends n bytes of p and a NUL to s->str_buf at *off, and advances *off. */
static int append_str(writer_state *s, const char *p, size_t n, size_t *off) {
    if (*off + n + 1 > s->str_cap) {
        char *grown = sf_realloc(s->str_buf, "a message's strings", 2 * (*off + n + 1), 1);
        if (!grown) return SF_ERR;
        s->str_buf = grown;
        s->str_cap = 2 * (*off + n + 1);
    }
    if (n) memcpy(s->str_buf + *off, p, n);
    s->str_buf[*off + n] = 0;
    *off += n + 1;
    return SF_OK;
}

static int writer_on_message(sf_ctx *ctx, void *state, int input, const sf_msg *msg) {
    (void)input;
    writer_state *s = state;
    sf_acts_msg a;
    if (sf_read_activations(msg, NULL, SF_NEED_TOKENS | SF_NEED_KEYS | SF_NEED_LABEL | SF_NEED_META | SF_NEED_SEQS, &a) != SF_OK) return SF_ERR;
    if (s->hook[0] && !sf_strv_eq(a.hook, s->hook)) return SF_OK;
    sh_batch b = {.acts = a.acts, .layer = a.layer};
    int64_t B = a.seq.B, T = a.seq.T;
    size_t nl = a.seq.n_labels, off = 0;
    /* model, checkpoint, hook, split, corpus ("" for inputs not from text_source), each NUL-ended */
    const sf_strv strs[5] = {a.model, a.checkpoint, a.hook, a.seq.split, a.seq.corpus};
    size_t o[5];
    for (int i = 0; i < 5; i++) {
        o[i] = off;
        if (append_str(s, strs[i].s, strs[i].len, &off) != SF_OK) return SF_ERR;
    }
    size_t o_model = o[0], o_ckpt = o[1], o_hook = o[2], o_split = o[3], o_corpus = o[4];
    b.model = s->str_buf + o_model; /* str_buf no longer moves */
    b.checkpoint = s->str_buf + o_ckpt;
    b.hook = s->str_buf + o_hook;
    b.split = s->str_buf + o_split;
    b.corpus = s->str_buf + o_corpus;
    if (nl > s->nlabels_cap) { /* scratch: refilled below */
        free(s->labels), free(s->label_len);
        s->nlabels_cap = 0;
        s->labels = sf_alloc("a message's labels", nl, sizeof *s->labels);
        s->label_len = sf_alloc("a message's label lengths", nl, sizeof *s->label_len);
        if (!s->labels || !s->label_len) return SF_ERR;
        s->nlabels_cap = nl;
    }
    for (size_t i = 0; i < nl; i++)
        if (sf_msg_get_strs_at(msg, "label", i, &s->labels[i], &s->label_len[i]) != SF_OK) return SF_ERR;
    b.label = s->labels;
    b.label_len = s->label_len;
    b.tokens = a.seq.tokens.data;
    b.doc_id = a.seq.doc_id.data;
    b.pos = a.seq.pos.data;
    if (sh_writer_add(s->w, &b) != SF_OK) return SF_ERR;
    s->rows_seen += B * T;
    sf_progress(ctx, (uint64_t)s->rows_seen, 0, "tokens");
    return SF_OK;
}

/* An end of stream while the pipeline is stopping (an interrupt drains it) is not the end of
 * the input: the run stays incomplete and a re-run resumes it. */
static int writer_on_eos(sf_ctx *ctx, void *state) {
    writer_state *s = state;
    s->ended = 1;
    return sh_writer_close(s->w, !sf_stopping(ctx));
}

/* After an interrupt the pending whole sequences are still written: a resumed run skips them. */
static int writer_finish(sf_ctx *ctx, void *state) {
    writer_state *s = state;
    if (!s || !s->w) return SF_OK; /* init failed */
    int rc = s->ended ? SF_OK : sh_writer_close(s->w, 0);
    int64_t skipped, rows, shards;
    sh_writer_stats(s->w, &skipped, &rows, &shards);
    sf_count(ctx, "skipped_sequences", skipped);
    sf_count(ctx, "rows_written", rows);
    sf_count(ctx, "shards_written", shards);
    return rc;
}

static void writer_destroy(void *state) {
    writer_state *s = state;
    if (!s) return;
    sh_writer_free(s->w);
    free(s->str_buf);
    free(s->labels);
    free(s->label_len);
    free(s);
}

static const sf_stage_def shard_writer_def = {
    .name = "shard_writer",
    .summary = "write activations to checksummed safetensors shards with a manifest (atomic, resumable)",
    .doc = "Reads activations messages (acts [B,T,d], tokens, doc_id, pos, label, split, model, checkpoint, "
           "hook, layer) and writes DIR/<split>-<n>.safetensors shards of flattened rows plus "
           "DIR/manifest.json. A shard appears only complete; re-running on the same DIR skips what is stored.",
    .params = writer_params,
    .min_inputs = 1,
    .max_inputs = 1,
    .has_output = 0,
    .init = writer_init,
    .check = writer_check,
    .on_message = writer_on_message,
    .on_eos = writer_on_eos,
    .finish = writer_finish,
    .destroy = writer_destroy,
    SF_STAGE_DEF_SIZES,
    .takes = "activations",
};

/* ---- shard_source ---- */

typedef struct source_state {
    sh_reader *r;
    int to_f32;          /* emit acts as F32 */
    const char **labels; /* [batch] pointers into the manifest's labels */
    size_t labels_cap;
    char split[SH_NAME_MAX];
    uint64_t done, total;
} source_state;

static const sf_param_def source_params[] = {
    {"dir", SF_PARAM_STRING, NULL, "shard directory written by shard_writer"},
    {"split", SF_PARAM_STRING, "train", "read only shards of this split"},
    {"shuffle", SF_PARAM_BOOL, "false",
     "false: whole sequences in stored order; true: single rows through a shuffle buffer (acts [N, 1, d])"},
    {"buffer_rows", SF_PARAM_INT, "131072", "shuffle buffer size in rows (12 bytes a row; the shards of its rows stay mapped: about rows x (d x dtype + 25) bytes of page cache)"},
    {"batch_rows", SF_PARAM_INT, "4096", "rows per message when shuffling"},
    {"batch_seqs", SF_PARAM_INT, "32", "at most this many sequences per message in order"},
    {"epochs", SF_PARAM_INT, "1", "passes over the data"},
    {"seed", SF_PARAM_INT, "0", "seed of the shard order and the shuffle buffer"},
    {"verify", SF_PARAM_BOOL, "true", "check every shard's CRC-32 before using it"},
    {"acts_dtype", SF_PARAM_STRING, "stored", "stored: F32/BF16 as stored (F16 is widened to F32); F32: always F32", "stored|F32"},
    {"part", SF_PARAM_INT, "0", "with parts: this host's part (replicas split each part further)"},
    {"parts", SF_PARAM_INT, "1", "hosts reading disjoint parts of the split", "[1, 65536]"},
    {NULL, 0, NULL, NULL},
};

/* The parameters and the directory's manifest, for check and init alike (init then opens the
 * shards themselves). */
static int source_check(sf_ctx *ctx) {
    const char *ad = sf_param_str(ctx, "acts_dtype");
    if (strcmp(ad, "stored") != 0 && strcmp(ad, "F32") != 0)
        return sf_param_fail(ctx, "acts_dtype", "must be 'stored' or 'F32', not '%s'", ad);
    int64_t part = sf_param_int(ctx, "part"), parts = sf_param_int(ctx, "parts");
    if (part < 0 || part >= parts) return sf_param_fail(ctx, "part", "must be in [0, parts = %lld)", (long long)parts);
    const char *dir = sf_param_str(ctx, "dir");
    sh_manifest m;
    int rc = sh_manifest_load(dir, &m);
    if (rc == SF_DONE) return sf_param_fail(ctx, "dir", "%s holds no shards (no manifest.json): write them first (pipelines/extract.flow)", dir);
    if (rc != SF_OK) return sf_param_fail(ctx, "dir", "%s", sf_last_error());
    sh_manifest_free(&m);
    return SF_OK;
}

static int source_init(sf_ctx *ctx, void **state) {
    source_state *s = sf_zalloc("shard_source state", 1, sizeof *s);
    if (!s) return SF_ERR;
    *state = s;
    if (source_check(ctx) != SF_OK) return SF_ERR;
    const char *ad = sf_param_str(ctx, "acts_dtype");
    int64_t part = sf_param_int(ctx, "part"), parts = sf_param_int(ctx, "parts");
    int rc = sf_replica_count(ctx), ri = sf_replica_index(ctx);
    sh_reader_opts o = {
        .split = sf_param_str(ctx, "split"),
        .shuffle = sf_param_bool(ctx, "shuffle"),
        .buffer_rows = sf_param_int(ctx, "buffer_rows"),
        .batch_rows = sf_param_int(ctx, "batch_rows"),
        .batch_seqs = sf_param_int(ctx, "batch_seqs"),
        .epochs = sf_param_int(ctx, "epochs"),
        .seed = (uint64_t)sf_param_int(ctx, "seed"),
        .part = (int)part * rc + ri,
        .parts = (int)parts * rc,
        .verify = sf_param_bool(ctx, "verify"),
    };
    snprintf(s->split, sizeof s->split, "%s", o.split);
    s->r = sh_reader_open(sf_param_str(ctx, "dir"), &o);
    if (!s->r) return SF_ERR;
    s->to_f32 = strcmp(ad, "F32") == 0 || sh_reader_manifest(s->r)->run.dtype == SF_F16;
    s->total = (uint64_t)(sh_reader_rows_per_epoch(s->r) * o.epochs);
    return SF_OK;
}

static int source_produce(sf_ctx *ctx, void *state) {
    source_state *s = state;
    sh_out out;
    if (sf_stopping(ctx)) return SF_DONE;
    int rc = sh_reader_next(s->r, &out);
    if (rc != SF_OK) return rc;
    const sh_manifest *m = sh_reader_manifest(s->r);
    int64_t B = out.B, T = out.T, d = m->run.d;
    size_t n = (size_t)(B * T * d);
    int64_t shape[3] = {B, T, d};
    sf_msg *msg = sf_msg_new();
    if (s->to_f32) {
        float *dst = sf_msg_put_tensor_inplace(msg, "acts", SF_F32, 3, shape);
        if (!dst) {
            sf_msg_free(msg);
            return SF_ERR;
        }
        sf_convert_to_f32(dst, out.acts, m->run.dtype, n);
    } else {
        sf_msg_put_tensor(msg, "acts", m->run.dtype, 3, shape, out.acts);
    }
    sf_msg_put_tensor(msg, "tokens", SF_I32, 2, shape, out.tokens);
    sf_msg_put_tensor(msg, "doc_id", SF_I64, 1, shape, out.doc_id);
    sf_msg_put_tensor(msg, "pos", SF_I32, 1, shape, out.pos);
    sf_msg_put_tensor(msg, "seq", SF_I64, 1, shape, out.seq);
    if ((size_t)B > s->labels_cap) { /* scratch */
        free(s->labels);
        s->labels_cap = 0;
        if (!(s->labels = sf_alloc("a batch's labels", (size_t)B, sizeof *s->labels))) {
            sf_msg_free(msg);
            return SF_ERR;
        }
        s->labels_cap = (size_t)B;
    }
    for (int64_t i = 0; i < B; i++) s->labels[i] = m->labels[out.label[i]];
    sf_msg_put_strs(msg, "label", s->labels, (size_t)B);
    sf_msg_put_str(msg, "split", s->split);
    sf_msg_put_str(msg, "hook", m->run.hook);
    sf_msg_put_int(msg, "layer", m->run.layer);
    sf_msg_put_str(msg, "model", m->run.model);
    sf_msg_put_str(msg, "checkpoint", m->run.checkpoint);
    if (m->run.corpus) sf_msg_put_str(msg, "corpus", m->run.corpus);
    sf_msg_put_int(msg, "epoch", out.epoch);
    s->done += (uint64_t)(B * T);
    sf_progress(ctx, s->done, s->total, "tokens");
    if (sf_emit(ctx, msg) != SF_OK) return sf_stopping(ctx) ? SF_DONE : SF_ERR;
    return SF_OK;
}

static void source_destroy(void *state) {
    source_state *s = state;
    if (!s) return;
    sh_reader_free(s->r);
    free(s->labels);
    free(s);
}

static const sf_command shard_commands[] = {
    {"shards", "inspect DIR [--verify] [--hist-rows N]",
     "summarise a shard directory: manifest, per-shard stats, norms histogram; --verify re-checks every shard",
     sh_command_main},
    {NULL, NULL, NULL, NULL},
};

static const sf_stage_def shard_source_def = {
    .name = "shard_source",
    .summary = "replay a shard directory as activations messages, in order or shuffled, for N epochs",
    .doc = "Reads DIR/manifest.json and the shards of one split (checksums verified). In order: whole "
           "sequences, acts [B, T, d] with per-sequence doc_id/pos/label. Shuffled: acts [N, 1, d], each row "
           "a one-token sequence with its own doc_id/pos/label. Adds seq [B] (global sequence number) and "
           "epoch. Replicas (and parts) read disjoint shards.",
    .params = source_params,
    .min_inputs = 0,
    .max_inputs = 0,
    .has_output = 1,
    .init = source_init,
    .check = source_check,
    .produce = source_produce,
    .destroy = source_destroy,
    .commands = shard_commands,
    SF_STAGE_DEF_SIZES,
    .emits = "activations",
};

SF_PLUGIN(&shard_writer_def, &shard_source_def)
