/* text_source — a source stage emitting one *document* message per document of the corpora
 * (core/MESSAGES.md): doc_id, label, split, text, source. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow.h"
#include "ts_reader.h"

static const sf_param_def ts_params[] = {
    {"corpora", SF_PARAM_STRING, NULL,
     "comma-separated LABEL=GLOB items, e.g. \"en=data/en/*.jsonl.gz,ja=data/ja/*.txt\"; a bare GLOB "
     "has the empty label; repeat a label to give it several globs"},
    {"weights", SF_PARAM_STRING, "",
     "relative draw weights of the corpora, e.g. \"en=1,ja=3\" (default: every corpus 1; a corpus drawn "
     "when exhausted is skipped)"},
    {"format", SF_PARAM_STRING, "auto", "auto (by extension: .jsonl/.json[.gz] are JSON Lines), text, or jsonl"},
    {"unit", SF_PARAM_STRING, "line", "plain text: one document per line, paragraph (blank-line separated) or file"},
    {"text_field", SF_PARAM_STRING, "text", "JSON Lines: field holding the text"},
    {"id_field", SF_PARAM_STRING, "", "JSON Lines: field whose value (string or integer) identifies the document "
                                     "(stable ids even if files move); default: file path and line"},
    {"label_field", SF_PARAM_STRING, "",
     "JSON Lines: take the label from this field (e.g. lang) instead of the corpus"},
    {"split", SF_PARAM_STRING, "train", "split to emit: train, validation, test or all"},
    {"split_field", SF_PARAM_STRING, "",
     "JSON Lines: take each document's split from this field (train, valid or validation, test) instead of "
     "the hash of its id (split_ratios and split_seed are then unused)"},
    {"split_ratios", SF_PARAM_STRING, "0.8,0.1,0.1", "train,validation,test proportions (by hash of the document id)"},
    {"split_seed", SF_PARAM_INT, "0", "seed of the split assignment (independent of the order seed)"},
    {"seed", SF_PARAM_INT, "0", "seed of the order: file order, corpus interleaving and shuffle"},
    {"shuffle_buffer", SF_PARAM_INT, "10000", "documents held for shuffling (0: files in order, corpora interleaved)", "[0, 10000000]"},
    {"max_docs", SF_PARAM_INT, "-1", "stop after this many documents (per replica; -1: all)"},
    {"max_doc_bytes", SF_PARAM_INT, "4194304",
     "longer documents are skipped and counted (the tokenizer needs tens of bytes of scratch per text byte)", "[1, inf)"},
    {"min_bytes", SF_PARAM_INT, "1", "shorter documents are skipped and counted", "[0, inf)"},
    {"on_error", SF_PARAM_STRING, "skip", "bad input (invalid UTF-8, malformed JSON, missing field): skip or fail", "skip|fail"},
    {NULL, 0, NULL, NULL},
};

/* Skipped input is logged once per kind of message (the message without its line number: same file,
 * same problem), then counted; the end of the input reports each repeated kind once, with its first
 * example and how many more there were. A corpus without a field gave one warning per line. */
enum { TS_SKIP_KINDS = 64 };
typedef struct ts_skip_kind {
    char key[1024];   /* the message with its ":LINE:" removed */
    char first[1024]; /* the first message of the kind */
    int64_t count;
} ts_skip_kind;

typedef struct ts_stage {
    ts_reader *r;
    char corpus[64]; /* ts_fingerprint of the corpora, sent with every document */
    int64_t max_docs, emitted;
    bool done, single; /* single: the only replica, so it sees the whole corpus */
    char split[16];
    ts_counts reported;
    int64_t reported_emitted;
    ts_skip_kind skips[TS_SKIP_KINDS];
    int nskips;
} ts_stage;

/* Index of parameter param's value in names, or -1 after sf_param_fail. */
static int ts_pick(sf_ctx *ctx, const char *const *names, int n, const char *param) {
    const char *value = sf_param_str(ctx, param);
    for (int i = 0; i < n; i++)
        if (strcmp(value, names[i]) == 0) return i;
    char list[200] = "";
    for (int i = 0; i < n; i++) snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", names[i]);
    return sf_param_fail(ctx, param, "cannot be '%s': one of %s", value, list);
}

/* The parameters into cfg, for check and init alike. */
static int ts_read_params(sf_ctx *ctx, ts_config *cfg_out) {
    ts_config cfg = {0};
    cfg.corpora = sf_param_str(ctx, "corpora");
    cfg.weights = sf_param_str(ctx, "weights");
    static const char *const formats[] = {"auto", "text", "jsonl"}, *const units[] = {"line", "paragraph", "file"},
                             *const splits[] = {"train", "validation", "test", "all"}, *const errs[] = {"skip", "fail"};
    int format = ts_pick(ctx, formats, 3, "format");
    if (format < 0) return SF_ERR;
    int unit = ts_pick(ctx, units, 3, "unit");
    if (unit < 0) return SF_ERR;
    const char *split = sf_param_str(ctx, "split");
    int sp = strcmp(split, "all") == 0 ? TS_ALL : ts_pick(ctx, splits, 4, "split");
    if (sp < 0) return SF_ERR;
    int on_error = ts_pick(ctx, errs, 2, "on_error");
    if (on_error < 0) return SF_ERR;
    cfg.format = (enum ts_format)format;
    cfg.unit = (enum ts_unit)unit;
    cfg.split = (enum ts_split)sp;
    cfg.fail_on_error = on_error == 1;
    cfg.text_field = sf_param_str(ctx, "text_field");
    cfg.id_field = sf_param_str(ctx, "id_field");
    cfg.label_field = sf_param_str(ctx, "label_field");
    cfg.split_field = sf_param_str(ctx, "split_field");
    const char *ratios = sf_param_str(ctx, "split_ratios");
    char tail;
    if (sscanf(ratios, "%lf,%lf,%lf%c", &cfg.ratio[0], &cfg.ratio[1], &cfg.ratio[2], &tail) != 3)
        return sf_param_fail(ctx, "split_ratios", "must be three numbers 'TRAIN,VALIDATION,TEST', not '%s'", ratios);
    cfg.split_seed = (uint64_t)sf_param_int(ctx, "split_seed");
    cfg.seed = (uint64_t)sf_param_int(ctx, "seed");
    int64_t buf = sf_param_int(ctx, "shuffle_buffer"), maxb = sf_param_int(ctx, "max_doc_bytes"),
            minb = sf_param_int(ctx, "min_bytes");
    cfg.shuffle_buffer = (size_t)buf;
    cfg.max_doc_bytes = (size_t)maxb;
    cfg.min_chars = (size_t)minb;
    cfg.replica = sf_replica_index(ctx);
    cfg.replicas = sf_replica_count(ctx);
    *cfg_out = cfg;
    return SF_OK;
}

/* The parameters, and the corpora: every file the globs name opens. */
static int ts_check(sf_ctx *ctx) {
    ts_config cfg;
    if (ts_read_params(ctx, &cfg) != SF_OK) return SF_ERR;
    char err[1024];
    ts_reader *r = ts_open(&cfg, err, sizeof err);
    if (!r) return sf_param_fail(ctx, "corpora", "%s", err);
    ts_close(r);
    return SF_OK;
}

static int ts_init(sf_ctx *ctx, void **state) {
    ts_stage *st = sf_zalloc("text_source state", 1, sizeof *st);
    if (!st) return SF_ERR;
    *state = st;
    ts_config cfg;
    if (ts_read_params(ctx, &cfg) != SF_OK) return SF_ERR;
    st->max_docs = sf_param_int(ctx, "max_docs");
    st->single = cfg.replicas == 1;
    snprintf(st->split, sizeof st->split, "%s", sf_param_str(ctx, "split"));
    char err[1024];
    if (!(st->r = ts_open(&cfg, err, sizeof err))) return sf_fail("%s", err);
    if (ts_fingerprint(st->r, st->corpus, sizeof st->corpus, err, sizeof err) != 0) return sf_fail("%s", err);
    sf_log(SF_LOG_INFO, "corpus fingerprint %s", st->corpus);
    return SF_OK;
}

/* Adds what changed in the reader's counters to the run summary. "documents" are the ones sent
 * on; the reader may have read more into the shuffle buffer ("documents_read") when max_docs or
 * an interrupt stopped the run. */
static void ts_report(sf_ctx *ctx, ts_stage *st) {
    const ts_counts *c = ts_counts_get(st->r);
    sf_count(ctx, "documents", st->emitted - st->reported_emitted);
    st->reported_emitted = st->emitted;
    sf_count(ctx, "documents_read", c->docs - st->reported.docs);
    sf_count(ctx, "skipped_bad_json", c->bad_json - st->reported.bad_json);
    sf_count(ctx, "skipped_bad_utf8", c->bad_utf8 - st->reported.bad_utf8);
    sf_count(ctx, "skipped_missing_field", c->missing_field - st->reported.missing_field);
    sf_count(ctx, "skipped_too_long", c->too_long - st->reported.too_long);
    sf_count(ctx, "skipped_too_short", c->too_short - st->reported.too_short);
    st->reported = *c;
}

/* msg ("path:LINE: what") without its line number, into key. */
static void skip_key(const char *msg, char *key, size_t cap) {
    for (const char *p = msg; (p = strchr(p, ':')); p++) {
        const char *q = p + 1;
        while (*q >= '0' && *q <= '9') q++;
        if (q > p + 1 && *q == ':') {
            snprintf(key, cap, "%.*s%s", (int)(p - msg), msg, q);
            return;
        }
    }
    snprintf(key, cap, "%s", msg);
}

/* Logs a skipped input the first time its kind is seen; counts it always. */
static void note_skip(ts_stage *st, const char *msg) {
    char key[sizeof st->skips[0].key];
    skip_key(msg, key, sizeof key);
    for (int i = 0; i < st->nskips; i++)
        if (strcmp(st->skips[i].key, key) == 0) {
            st->skips[i].count++;
            return;
        }
    if (st->nskips < TS_SKIP_KINDS) {
        ts_skip_kind *k = &st->skips[st->nskips++];
        snprintf(k->key, sizeof k->key, "%s", key);
        snprintf(k->first, sizeof k->first, "%s", msg);
        k->count = 1;
    }
    sf_log(SF_LOG_WARN, "skipped: %s", msg); /* a new kind (or too many kinds to tell apart) */
}

/* The end of the input: each repeated kind of skipped input once more, with its count; a run that
 * emitted nothing is an error, not an empty success. */
static int ts_finish(sf_ctx *ctx, ts_stage *st) {
    const ts_counts *c = ts_counts_get(st->r);
    for (int i = 0; i < st->nskips; i++)
        if (st->skips[i].count > 1)
            sf_log(SF_LOG_WARN, "skipped: %s, and %lld more like it", st->skips[i].first,
                   (long long)(st->skips[i].count - 1));
    int64_t skipped = c->bad_json + c->bad_utf8 + c->missing_field + c->too_long + c->too_short;
    if (st->emitted > 0 || sf_stopping(ctx) || st->max_docs == 0 || (!st->single && skipped == 0)) return SF_DONE;
    return sf_fail("text_source emitted no document: %lld of another split than '%s', %lld skipped as bad or too "
                   "short%s%s. Check corpora, split and split_field (on_error = fail stops at the first bad line)",
                   (long long)c->other_split, st->split, (long long)skipped, st->nskips ? "; the first: " : "",
                   st->nskips ? st->skips[0].first : "");
}

static int ts_produce(sf_ctx *ctx, void *state) {
    ts_stage *st = state;
    char err[1024];
    for (int n = 0; n < 64; n++) {
        if (sf_stopping(ctx) || (st->max_docs >= 0 && st->emitted >= st->max_docs)) {
            st->done = true;
            break;
        }
        ts_doc d;
        int rc = ts_next(st->r, &d, err, sizeof err);
        if (rc < 0) {
            ts_report(ctx, st);
            return sf_fail("%s", err);
        }
        if (rc == TS_SKIPPED) {
            note_skip(st, err);
            continue;
        }
        if (rc == 0) {
            st->done = true;
            break;
        }
        sf_msg *m = sf_msg_new();
        sf_msg_put_int(m, "doc_id", (int64_t)d.doc_id);
        sf_msg_put_str(m, "label", d.label);
        sf_msg_put_str(m, "split", d.split);
        sf_msg_put_strn(m, "text", d.text, d.text_len);
        sf_msg_put_str(m, "source", d.source);
        sf_msg_put_str(m, "corpus", st->corpus);
        if (sf_emit(ctx, m) != SF_OK) return SF_ERR;
        st->emitted++;
        sf_progress(ctx, (uint64_t)st->emitted, 0, "docs");
    }
    ts_report(ctx, st);
    if (!st->done) return SF_OK;
    return ts_finish(ctx, st);
}

static void ts_destroy(void *state) {
    ts_stage *st = state;
    if (!st) return;
    ts_close(st->r);
    free(st);
}

static const sf_stage_def text_source_def = {
    .name = "text_source",
    .summary = "reads text / JSON Lines corpora (.gz too) and emits labelled, split documents",
    .doc = "Reads plain-text or JSON Lines files (gzip or not) of one or more labelled corpora, interleaves "
           "them in a seeded shuffled order (bounded buffer), keeps the documents of one split (by a hash "
           "of the document id, so the split is the same whatever the order), and emits one message per "
           "document: doc_id (int, stable 63-bit), label, split, text, source (file:line), corpus (a "
           "fingerprint of the corpora's files, which shard directories record so a resumed run on "
           "another corpus is refused at once). Bad input is "
           "logged with file:line and skipped (counted in the run summary) or fatal (on_error = fail).",
    .params = ts_params,
    .min_inputs = 0,
    .max_inputs = 0,
    .has_output = 1,
    .init = ts_init,
    .check = ts_check,
    .produce = ts_produce,
    .destroy = ts_destroy,
    SF_STAGE_DEF_SIZES,
    .emits = "document",
};

SF_PLUGIN(&text_source_def)
