/* tokenizer — the stage: *document* messages in, *tokens* messages out (core/MESSAGES.md).
 * Each document is encoded and cut into fixed-length sequences (BOS + seq_len tokens, as the
 * paper's 64 + BOS); optionally balanced by label and shuffled across documents (tk_mix.h, the
 * paper's SAE data); batches of `batch` sequences go out per message. Also adds the
 * `saeflow tokenize` subcommand. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow.h"
#include "sf_kinds.h"
#include "sf_util.h"
#include "shards.h"
#include "tk_mix.h"
#include "tok.h"

static const sf_param_def tk_params[] = {
    {"tokenizer", SF_PARAM_STRING, NULL,
     "tokenizer.json or SentencePiece .model file, or a folder holding one (tokenizer.json first); a comma-separated "
     "list is tried in order (\"suite,suite/step-1\": the suite's, else the checkpoint's own)"},
    {"seq_len", SF_PARAM_INT, "64", "tokens per sequence, BOS not counted", "[1, 1048576]"},
    {"bos", SF_PARAM_BOOL, "true", "start every sequence with BOS"},
    {"bos_id", SF_PARAM_INT, "-1", "BOS id (-1: the tokenizer's)"},
    {"mode", SF_PARAM_STRING, "chunk",
     "chunk: cut each document into consecutive seq_len pieces; truncate: its first seq_len tokens only", "chunk|truncate"},
    {"drop_remainder", SF_PARAM_BOOL, "true",
     "drop a sequence that would need padding (the paper); false pads it with pad_id"},
    {"pad_id", SF_PARAM_INT, "-1", "padding id when drop_remainder = false (must be set then)"},
    {"max_seqs_per_doc", SF_PARAM_INT, "-1", "at most this many sequences from one document (-1: all)"},
    {"batch", SF_PARAM_INT, "32", "sequences per emitted message", "[1, 1048576]"},
    {"shuffle_buffer", SF_PARAM_INT, "0",
     "sequences held to shuffle across documents (the paper permutes all its sequences at random): each "
     "goes out at a random time within about this many; 0: in document order. Memory: this x (T x 4 + 16) "
     "bytes"},
    {"balance", SF_PARAM_STRING, "",
     "comma list of labels to balance by sequence count, e.g. en,ja (the paper: as many Japanese as English "
     "sequences, the first of each): the smallest label's count limits, the rest is dropped and logged"},
    {"balance_pool", SF_PARAM_INT, "65536",
     "per label, sequences held while waiting for the other labels; beyond it a label's sequences are "
     "dropped (counted balance_dropped_full): an input long sorted by label needs it large"},
    {"seed", SF_PARAM_INT, "0", "the shuffle's seed: same input and seed, same order"},
    {"skip_stored", SF_PARAM_STRING, "",
     "comma list of shard directories and sae_trainer out_dirs: drop the batches whose every sequence every one "
     "of them already holds (stored, or trained whole), so a resumed run computes only the batches with missing "
     "ones, the same batches as the uninterrupted run; the input must produce every stored sequence, with the "
     "tokens stored"},
    {"skip_stored_model", SF_PARAM_STRING, "",
     "with skip_stored (required): the model directory the forward stage downstream reads (its `model`); a "
     "skip_stored directory of another model is refused before anything is skipped"},
    {"skip_stored_checkpoint", SF_PARAM_STRING, "",
     "with skip_stored: the forward stage's checkpoint name (default: skip_stored_model's base name, as forward's)"},
    {"skip_stored_hooks", SF_PARAM_STRING, "",
     "with skip_stored (required): the forward stage's hooks (comma list); each directory's hook must be one"},
    {NULL, 0, NULL, NULL},
};

/* ---- tokenizers shared by the replicas of one process (read-only once loaded) ---- */
static void tk_free_shared(void *t) { tok_free(t); }
static sf_shared_cache tk_cache = SF_SHARED_CACHE_INIT(tk_free_shared);

static void *tk_load_shared(const char *path, void *arg) {
    (void)arg;
    char err[1024];
    tok_tokenizer *t = tok_load(path, err, sizeof err);
    if (!t) sf_fail("%s", err);
    return t;
}

/* ---- the stage ---- */
#define TK_MET 0x40000000u
#define TK_MAX_DIRS 30

typedef struct tk_stage {
    tok_tokenizer *tok;
    char tok_path[4096]; /* the tokenizer file the parameter resolved to (tok_find) */
    tok_ids ids;
    int64_t seq_len, batch, max_seqs, pad_id;
    int32_t bos_id;        /* -1: no BOS */
    bool truncate, drop_remainder;
    int64_t T;             /* seq_len + (BOS ? 1 : 0) */
    /* the batch being filled */
    int32_t *tokens;       /* [batch][T] */
    int64_t *doc_ids;
    int32_t *pos;
    char **labels;
    char *split;
    char *corpus;          /* the batch's documents' corpus fingerprint (text_source), or NULL */
    int64_t n;
    int64_t fresh;         /* sequences of the batch that some skip_stored directory lacks */
    uint64_t total_tokens;
    /* skip_stored: the stored sequences; val bit i: held by directory i, TK_MET: produced again */
    sh_keys stored;
    char *stored_corpus[TK_MAX_DIRS]; /* each directory's recorded corpus, or NULL */
    const char *stored_dir[TK_MAX_DIRS];
    char *stored_list;     /* the skip_stored list, split in place: stored_dir points into it */
    int32_t *row;          /* [T]: a sequence's row, to compare with what a directory stored */
    uint32_t all_dirs;     /* the bits of every directory */
    int64_t met, skipped, resent; /* stored sequences: produced again, dropped, forwarded in a batch */
    /* shuffle_buffer / balance: sequences pass through mix; labels are interned (the balance list
     * first, in its order) since mix carries an index */
    tk_mix *mix;
    int n_balance, n_labels;
    char *label_names[TK_MIX_MAX_LABELS];
    char *mix_split;       /* the one split a mixed stream may have */
    sf_ctx *ctx;           /* the callback's, for tk_mix_take */
} tk_stage;

/* The run whose activations skip_stored directories must hold: what the forward downstream computes. */
typedef struct tk_run {
    const char *model, *hooks;
    char checkpoint[256];
} tk_run;

static int tk_hook_listed(const char *hooks, const char *hook) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", hooks);
    for (char *save = NULL, *h = strtok_r(buf, ", ", &save); h; h = strtok_r(NULL, ", ", &save))
        if (sf_same_hook(h, hook)) return 1;
    return 0;
}

/* A skip_stored directory of another model, checkpoint or hook than this run's: refused before
 * anything is skipped (its sequences would all be dropped and nothing written: "dropped 3188
 * sequences already stored", 0 rows, exit 0). What the directory does not record is not compared. */
static int tk_check_run(const char *dir, const sh_run *stored, const tk_run *want) {
    const char *what = NULL, *theirs = NULL, *ours = NULL;
    if (stored->model && strcmp(stored->model, want->model) != 0)
        what = "model", theirs = stored->model, ours = want->model;
    else if (stored->checkpoint && strcmp(stored->checkpoint, want->checkpoint) != 0)
        what = "checkpoint", theirs = stored->checkpoint, ours = want->checkpoint;
    else if (stored->hook && !tk_hook_listed(want->hooks, stored->hook))
        what = "hook", theirs = stored->hook, ours = want->hooks;
    if (!what) return SF_OK;
    return sf_fail("skip_stored: %s holds activations of %s %s, but this run computes %s %s "
                   "(skip_stored_model, skip_stored_checkpoint, skip_stored_hooks: the forward stage's): resuming "
                   "it would skip sequences it never computed. Name this run's directory in skip_stored (and the "
                   "writer's dir), or run the stored run's %s",
                   dir, what, theirs, what, ours, what);
}

/* Reads the sequence keys of each directory of the comma list (a shard directory, or a trainer's
 * out_dir) into st->stored, after checking that the directory holds want's run. */
static int tk_load_stored(tk_stage *st, const char *list, const tk_run *want) {
    char *copy = st->stored_list = strdup(list), *save = NULL;
    if (!copy) return sf_fail("out of memory");
    int n = 0, rc = SF_OK;
    for (char *dir = strtok_r(copy, ",", &save); dir && rc == SF_OK; dir = strtok_r(NULL, ",", &save), n++) {
        sh_manifest m;
        sh_keys k = {0};
        if (n == TK_MAX_DIRS) rc = sf_fail("skip_stored: more than %d directories", TK_MAX_DIRS);
        else if ((rc = sh_manifest_load(dir, &m)) == SF_OK) { /* shards */
            rc = tk_check_run(dir, &m.run, want);
            if (rc == SF_OK) rc = sh_stored_keys(dir, &m, &k);
            st->stored_dir[n] = dir;
            st->stored_corpus[n] = m.run.corpus; /* kept: compared with every document's */
            m.run.corpus = NULL;
            sh_manifest_free(&m);
        } else if (rc == SF_DONE) { /* or an SAE, or nothing yet */
            sh_run trained = {0};
            rc = sh_trained_keys(dir, &k, &trained);
            if (rc == SF_OK) rc = tk_check_run(dir, &trained, want);
            else if (rc == SF_DONE) rc = SF_OK;
            free(trained.model), free(trained.checkpoint), free(trained.hook);
        }
        for (size_t i = 0; i < k.cap; i++) {
            if (!k.k[i].val) continue;
            sh_key *to = sh_keys_add(&st->stored, k.k[i].doc, k.k[i].pos);
            if (!to) {
                rc = SF_ERR;
                break;
            }
            to->val |= 1u << n;
            if (!to->rows) { /* the first directory that knows the tokens is the one compared with */
                to->rows = k.k[i].rows;
                to->tokens_crc = k.k[i].tokens_crc;
            }
        }
        if (rc == SF_OK) sf_log(SF_LOG_INFO, "skip_stored: %s holds %zu sequences", dir, k.n);
        sh_keys_free(&k);
        st->all_dirs |= 1u << n;
    }
    return rc;
}

/* A document of another corpus than a skip_stored directory recorded: refused before anything
 * of it is computed (the directory would otherwise fill with a second corpus's sequences and
 * fail only at the end of the input, when its own never arrived). */
static int tk_check_corpus(const tk_stage *st, const char *corpus, size_t len) {
    for (int i = 0; i < TK_MAX_DIRS; i++) {
        const char *c = st->stored_corpus[i];
        if (c && (strlen(c) != len || memcmp(c, corpus, len) != 0))
            return sf_fail("skip_stored: %s holds sequences of the corpus %s, but this input is of corpus %.*s "
                           "(other files, or changed ones): use another directory, or the stored run's corpus",
                           st->stored_dir[i], c, (int)len, corpus);
    }
    return SF_OK;
}

static int tk_mix_init(sf_ctx *ctx, tk_stage *st);

/* The parameters, for check and init alike: mode and sizes, the tokenizer file (loaded into
 * st->tok, which the caller releases), its BOS and padding ids, skip_stored's replica count. */
static int tk_params_load(sf_ctx *ctx, tk_stage *st) {
    st->seq_len = sf_param_int(ctx, "seq_len");
    st->batch = sf_param_int(ctx, "batch");
    st->max_seqs = sf_param_int(ctx, "max_seqs_per_doc");
    st->pad_id = sf_param_int(ctx, "pad_id");
    st->drop_remainder = sf_param_bool(ctx, "drop_remainder");
    const char *mode = sf_param_str(ctx, "mode");
    st->truncate = strcmp(mode, "truncate") == 0;
    char err[1024];
    char *path = st->tok_path;
    if (tok_find(sf_param_str(ctx, "tokenizer"), path, sizeof st->tok_path, err, sizeof err) != 0)
        return sf_param_fail(ctx, "tokenizer", "%s", err);
    if (!(st->tok = sf_shared_acquire(&tk_cache, path, tk_load_shared, NULL))) {
        snprintf(err, sizeof err, "%s", sf_last_error());
        return sf_param_fail(ctx, "tokenizer", "%s (a tokenizer.json or SentencePiece .model file)", err);
    }
    int32_t vocab = tok_vocab_size(st->tok);
    if (!st->drop_remainder && (st->pad_id < 0 || st->pad_id >= vocab))
        return sf_param_fail(ctx, "pad_id", "drop_remainder = false needs pad_id in [0, %d)", vocab);
    st->bos_id = -1;
    if (sf_param_bool(ctx, "bos")) {
        int64_t b = sf_param_int(ctx, "bos_id");
        st->bos_id = b >= 0 && b <= INT32_MAX ? (int32_t)b : b < 0 ? tok_bos_id(st->tok) : INT32_MAX;
        if (st->bos_id < 0) return sf_param_fail(ctx, "bos_id", "%s defines no BOS token: set bos_id, or bos = false", path);
        if (st->bos_id >= vocab) return sf_param_fail(ctx, "bos_id", "%lld is not below the vocabulary size %d", (long long)b, vocab);
    }
    if (*sf_param_str(ctx, "skip_stored") && sf_replica_count(ctx) > 1)
        return sf_param_fail(ctx, "skip_stored", "needs a single tokenizer replica (it checks that the input holds every stored "
                             "sequence)");
    if (*sf_param_str(ctx, "skip_stored") && (!*sf_param_str(ctx, "skip_stored_model") || !*sf_param_str(ctx, "skip_stored_hooks")))
        return sf_param_fail(ctx, "skip_stored", "needs skip_stored_model and skip_stored_hooks, the forward stage's model and "
                             "hooks: a directory of another run is refused before anything is skipped");
    if (strlen(sf_param_str(ctx, "skip_stored_hooks")) >= 4096) return sf_param_fail(ctx, "skip_stored_hooks", "list too long");
    return SF_OK;
}

static int tk_check(sf_ctx *ctx) {
    tk_stage st = {0};
    int rc = tk_params_load(ctx, &st);
    if (st.tok) sf_shared_release(&tk_cache, st.tok);
    return rc;
}

static int tk_init(sf_ctx *ctx, void **state) {
    tk_stage *st = sf_zalloc("tokenizer state", 1, sizeof *st);
    if (!st) return SF_ERR;
    *state = st;
    if (tk_params_load(ctx, st) != SF_OK) return SF_ERR;
    st->T = st->seq_len + (st->bos_id >= 0 ? 1 : 0);
    /* batch and T are at most 2^20 + 1 each: the products fit */
    if (!(st->tokens = sf_alloc("tokenizer batch (batch x sequence tokens)", (size_t)(st->batch * st->T), sizeof *st->tokens)) ||
        !(st->doc_ids = sf_alloc("tokenizer batch doc ids", (size_t)st->batch, sizeof *st->doc_ids)) ||
        !(st->pos = sf_alloc("tokenizer batch positions", (size_t)st->batch, sizeof *st->pos)) ||
        !(st->labels = sf_zalloc("tokenizer batch labels", (size_t)st->batch, sizeof *st->labels)) ||
        !(st->row = sf_alloc("tokenizer sequence", (size_t)st->T, sizeof *st->row)))
        return sf_fail("%s; lower batch", sf_last_error());
    sf_log(SF_LOG_INFO, "%s: %s, %d tokens, sequences of %lld", st->tok_path, tok_kind(st->tok), tok_vocab_size(st->tok), (long long)st->T);
    if (tk_mix_init(ctx, st) != SF_OK) return SF_ERR;
    const char *stored = sf_param_str(ctx, "skip_stored");
    if (!*stored) return SF_OK;
    tk_run want = {sf_param_str(ctx, "skip_stored_model"), sf_param_str(ctx, "skip_stored_hooks"), ""};
    const char *ckpt = sf_param_str(ctx, "skip_stored_checkpoint");
    if (*ckpt) snprintf(want.checkpoint, sizeof want.checkpoint, "%s", ckpt);
    else sf_default_checkpoint(want.model, want.checkpoint, sizeof want.checkpoint);
    return tk_load_stored(st, stored, &want);
}

/* Empties the batch being filled. */
static void tk_clear(tk_stage *st) {
    for (int64_t i = 0; i < st->n; i++) {
        free(st->labels[i]);
        st->labels[i] = NULL;
    }
    st->n = st->fresh = 0;
}

/* Emits the batch, or drops it when every skip_stored directory holds every sequence of it. A
 * batch with one sequence missing somewhere goes out whole, its stored sequences too (the writers
 * skip those): the forward computes the uninterrupted run's batches, so a resumed extraction
 * stores its bits (a row's rounding depends on its batch under some OpenBLAS kernels). */
static int tk_flush(sf_ctx *ctx, tk_stage *st) {
    if (st->n == 0) return SF_OK;
    if (st->fresh == 0) { /* only with skip_stored: without it every sequence is fresh */
        st->skipped += st->n;
        sf_count(ctx, "stored_sequences_skipped", st->n);
        tk_clear(st);
        return SF_OK;
    }
    st->resent += st->n - st->fresh;
    sf_msg *m = sf_msg_new();
    int64_t shape[2] = {st->n, st->T};
    sf_msg_put_tensor(m, "tokens", SF_I32, 2, shape, st->tokens);
    sf_msg_put_tensor(m, "doc_id", SF_I64, 1, shape, st->doc_ids);
    sf_msg_put_tensor(m, "pos", SF_I32, 1, shape, st->pos);
    sf_msg_put_strs(m, "label", (const char *const *)st->labels, (size_t)st->n);
    sf_msg_put_str(m, "split", st->split ? st->split : "");
    if (st->corpus) sf_msg_put_str(m, "corpus", st->corpus);
    sf_count(ctx, "sequences", st->n);
    tk_clear(st);
    return sf_emit(ctx, m);
}

/* The row [T] of a sequence of have tokens: BOS (if any), the tokens, padding. */
static void tk_row(const tk_stage *st, const int32_t *ids, int64_t have, int32_t *row) {
    if (st->bos_id >= 0) *row++ = st->bos_id;
    memcpy(row, ids, (size_t)have * sizeof *row);
    for (int64_t i = have; i < st->seq_len; i++) row[i] = (int32_t)st->pad_id;
}

/* Whether the rows a directory stored for key k are this sequence's: its row, or the row without
 * its BOS (forward's drop_bos). */
static int tk_same_as_stored(const tk_stage *st, const sh_key *k, const int32_t *row) {
    if (!k->rows) return 1;
    for (int64_t off = 0; off <= 1 && off + k->rows <= st->T; off++)
        if (sh_key_same_tokens(k, row + off, k->rows)) return 1;
    return 0;
}

/* Adds one sequence's row [T] to the batch; stored: every skip_stored directory holds it. */
static int tk_add(sf_ctx *ctx, tk_stage *st, const int32_t *row, int64_t doc_id, int64_t pos, bool stored,
                  const char *label, size_t label_len, const char *split, size_t split_len) {
    if (st->n > 0 && (strlen(st->split) != split_len || memcmp(st->split, split, split_len) != 0) &&
        tk_flush(ctx, st) != SF_OK)
        return SF_ERR;
    if (st->n == 0) {
        free(st->split);
        if (!(st->split = strndup(split, split_len))) return sf_fail("out of memory");
    }
    memcpy(st->tokens + st->n * st->T, row, (size_t)st->T * sizeof *row);
    st->doc_ids[st->n] = doc_id;
    st->pos[st->n] = (int32_t)pos;
    if (!(st->labels[st->n] = strndup(label, label_len))) return sf_fail("out of memory");
    st->fresh += !stored;
    if (++st->n == st->batch) return tk_flush(ctx, st);
    return SF_OK;
}

/* The document's corpus fingerprint (optional) becomes the batch's: a batch holds one corpus. */
static int tk_set_corpus(sf_ctx *ctx, tk_stage *st, sf_strv corpus) {
    const char *c = corpus.present ? corpus.s : "";
    size_t n = corpus.len;
    bool same = st->corpus ? strlen(st->corpus) == n && memcmp(st->corpus, c, n) == 0 : n == 0;
    if (same) return SF_OK; /* checked when it first came */
    if (st->mix && st->mix_split)
        return sf_fail("shuffle_buffer and balance mix sequences of many documents, so the input must be of one corpus, "
                       "but its corpus changed from %s to %.*s", st->corpus ? st->corpus : "(none)", (int)n, c);
    if ((n && tk_check_corpus(st, c, n) != SF_OK) || tk_flush(ctx, st) != SF_OK) return SF_ERR;
    free(st->corpus);
    st->corpus = n ? strndup(c, n) : NULL;
    if (n && !st->corpus) return sf_fail("out of memory");
    return SF_OK;
}

/* A sequence that goes out, into the batch; one at a stored key is checked to have the stored
 * tokens. After tk_mix, so a resumed run has the batches of the same balanced, shuffled stream
 * (tk_flush drops those that every skip_stored directory holds whole). */
static int tk_take(sf_ctx *ctx, tk_stage *st, const int32_t *row, int64_t doc_id, int32_t pos, const char *label,
                   size_t label_len, const char *split, size_t split_len) {
    sh_key *k = sh_keys_find(&st->stored, doc_id, pos);
    if (k && !tk_same_as_stored(st, k, row))
        return sf_fail("skip_stored: document %lld, tokens from %d: a directory holds a sequence of %d rows "
                       "with other tokens under this key, so it is not the input of the stored run (another "
                       "corpus version, tokenizer or seq_len?): use another directory, or the stored run's "
                       "input", (long long)doc_id, (int)pos, (int)k->rows);
    if (k && !(k->val & TK_MET)) {
        k->val |= TK_MET;
        st->met++;
    }
    bool stored = k && (k->val & st->all_dirs) == st->all_dirs; /* every directory holds it already */
    return tk_add(ctx, st, row, doc_id, pos, stored, label, label_len, split, split_len);
}

static int tk_mix_take(void *p, const int32_t *row, int64_t doc_id, int32_t pos, int label) {
    tk_stage *st = p;
    const char *name = st->label_names[label], *split = st->mix_split;
    return tk_take(st->ctx, st, row, doc_id, pos, name, strlen(name), split, strlen(split));
}

/* The label's index among those seen (the balance list first); -1 with sf_fail() when balancing
 * and the label is not in the list, or when there are too many. */
static int tk_label_index(tk_stage *st, const char *label, size_t len) {
    for (int l = 0; l < st->n_labels; l++)
        if (strlen(st->label_names[l]) == len && memcmp(st->label_names[l], label, len) == 0) return l;
    if (st->n_balance)
        return sf_fail("balance: a document has the label \"%.*s\", which the balance list does not name (add it, "
                       "or select the corpora: text_source corpora / label_field)", (int)len, label), -1;
    if (st->n_labels == TK_MIX_MAX_LABELS)
        return sf_fail("shuffle_buffer: more than %d distinct labels", TK_MIX_MAX_LABELS), -1;
    if (!(st->label_names[st->n_labels] = strndup(label, len))) return sf_fail("out of memory"), -1;
    return st->n_labels++;
}

/* shuffle_buffer, balance, balance_pool, seed -> st->mix (NULL when neither is asked for). */
static int tk_mix_init(sf_ctx *ctx, tk_stage *st) {
    int64_t buffer = sf_param_int(ctx, "shuffle_buffer"), pool = sf_param_int(ctx, "balance_pool");
    const char *list = sf_param_str(ctx, "balance");
    for (const char *p = list; *p;) {
        size_t n = strcspn(p, ",");
        if (n == 0) return sf_fail("balance: an empty label in \"%s\" (a comma list such as en,ja)", list);
        for (int l = 0; l < st->n_labels; l++)
            if (strlen(st->label_names[l]) == n && memcmp(st->label_names[l], p, n) == 0)
                return sf_fail("balance: the label \"%.*s\" is listed twice", (int)n, p);
        if (tk_label_index(st, p, n) < 0) return SF_ERR;
        p += n + (p[n] == ',');
    }
    st->n_balance = st->n_labels;
    if (st->n_balance == 1) return sf_fail("balance = \"%s\": one label has nothing to balance against (e.g. en,ja)", list);
    if (buffer == 0 && st->n_balance == 0) return SF_OK;
    if (sf_replica_count(ctx) > 1)
        return sf_fail("shuffle_buffer and balance need a single tokenizer replica (each replica would balance and "
                       "shuffle only its share)");
    if (!(st->mix = tk_mix_new(st->T, st->n_balance, pool, buffer, (uint64_t)sf_param_int(ctx, "seed"), tk_mix_take,
                               st)))
        return SF_ERR;
    sf_log(SF_LOG_INFO, "sequences balanced by label (%s, pools of %lld) and shuffled through %lld: %.1f MB",
           st->n_balance ? list : "off", (long long)(st->n_balance ? pool : 0), (long long)buffer,
           (double)((st->n_balance ? pool * st->n_balance : 0) + buffer) * (double)(st->T * 4 + 16) / 1e6);
    return SF_OK;
}

/* A mixed stream holds sequences of many documents at once, so it must be of one split. */
static int tk_mix_check_split(tk_stage *st, const char *split, size_t len) {
    if (!st->mix_split) return (st->mix_split = strndup(split, len)) ? SF_OK : sf_fail("out of memory");
    if (strlen(st->mix_split) == len && memcmp(st->mix_split, split, len) == 0) return SF_OK;
    return sf_fail("shuffle_buffer and balance mix sequences of many documents, so the input must be one split, but "
                   "it holds '%s' and '%.*s': set text_source's split", st->mix_split, (int)len, split);
}

static int tk_on_message(sf_ctx *ctx, void *state, int input, const sf_msg *msg) {
    (void)input;
    tk_stage *st = state;
    sf_document_msg d;
    if (sf_read_document(msg, &d) != SF_OK) return SF_ERR;
    const char *text = d.text.s, *label = d.label.present ? d.label.s : "", *split = d.split.present ? d.split.s : "";
    size_t text_len = d.text.len, label_len = d.label.len, split_len = d.split.len;
    int64_t doc_id = d.doc_id;
    if (tk_set_corpus(ctx, st, d.corpus) != SF_OK) return SF_ERR;
    int label_index = 0;
    if (st->mix && (tk_mix_check_split(st, split, split_len) != SF_OK ||
                    (label_index = tk_label_index(st, label, label_len)) < 0))
        return SF_ERR;
    if (tok_encode(st->tok, text, text_len, 0, &st->ids) != 0)
        return sf_fail("cannot encode document %lld (out of memory, a regex limit, or a character the tokenizer has no "
                           "piece for and no unk_id)", (long long)doc_id);
    st->ctx = ctx;
    int64_t n = (int64_t)st->ids.n, used = 0, seqs = 0;
    for (int64_t p = 0; p < n; p += st->seq_len) {
        if ((st->max_seqs >= 0 && seqs >= st->max_seqs) || (st->truncate && p > 0)) break;
        int64_t have = n - p < st->seq_len ? n - p : st->seq_len;
        if (have < st->seq_len && st->drop_remainder) break;
        if (p > INT32_MAX) return sf_fail("document %lld: a position beyond 2^31 tokens", (long long)doc_id);
        tk_row(st, st->ids.ids + p, have, st->row);
        if ((st->mix ? tk_mix_add(st->mix, st->row, doc_id, (int32_t)p, label_index)
                     : tk_take(ctx, st, st->row, doc_id, (int32_t)p, label, label_len, split, split_len)) != SF_OK)
            return SF_ERR;
        used += have;
        seqs++;
    }
    if (text_len > (1 << 20)) tok_ids_free(&st->ids); /* do not keep a huge document's scratch */
    st->total_tokens += (uint64_t)n;
    sf_count(ctx, "documents", 1);
    sf_count(ctx, "tokens", n);
    sf_count(ctx, "tokens_unused", n - used);
    if (seqs == 0) sf_count(ctx, "documents_without_sequence", 1);
    sf_progress(ctx, st->total_tokens, 0, "tokens");
    return SF_OK;
}

/* The end of a mixed stream: the buffered sequences go out; what balancing dropped is logged. */
static int tk_mix_end(sf_ctx *ctx, tk_stage *st) {
    st->ctx = ctx;
    if (tk_mix_finish(st->mix) != SF_OK) return SF_ERR;
    for (int l = 0; l < st->n_balance; l++) {
        tk_mix_counts c = tk_mix_label_counts(st->mix, l);
        sf_count(ctx, "balance_dropped_surplus", c.dropped_surplus);
        sf_count(ctx, "balance_dropped_full", c.dropped_full);
        sf_log(SF_LOG_INFO, "balance: label %s: %lld sequences in, %lld out, %lld dropped as surplus over the "
               "smallest label, %lld dropped because its pool (balance_pool) was full", st->label_names[l],
               (long long)c.in, (long long)c.out, (long long)c.dropped_surplus, (long long)c.dropped_full);
        if (c.out == 0)
            sf_log(SF_LOG_WARN, "balance: no sequence went out: label %s had none", st->label_names[l]);
    }
    return SF_OK;
}

static int tk_on_eos(sf_ctx *ctx, void *state) {
    tk_stage *st = state;
    if (sf_stopping(ctx)) { /* only whole batches of the uninterrupted run go out: a resumed run computes the rest */
        if (st->n || st->mix)
            sf_log(SF_LOG_INFO, "stopped: the unfinished batch (%lld sequences)%s not emitted", (long long)st->n,
                   st->mix ? " and the sequences held to balance and shuffle" : "");
        return SF_OK;
    }
    if (st->mix && tk_mix_end(ctx, st) != SF_OK) return SF_ERR;
    if (st->met < (int64_t)st->stored.n)
        return sf_fail("skip_stored: the input ended, but %lld of the %zu stored sequences never came out of it: "
                       "it is not the input of the stored run",
                       (long long)((int64_t)st->stored.n - st->met), st->stored.n);
    if (tk_flush(ctx, st) != SF_OK) return SF_ERR;
    if (st->stored.n)
        sf_log(SF_LOG_INFO, "skip_stored: dropped %lld sequences already stored, in batches stored whole, before "
               "computing them; %lld stored sequences went out again in batches with missing ones (the writers skip "
               "them)", (long long)st->skipped, (long long)st->resent);
    return SF_OK;
}

static void tk_destroy(void *state) {
    tk_stage *st = state;
    if (!st) return;
    if (st->tok) sf_shared_release(&tk_cache, st->tok);
    tok_ids_free(&st->ids);
    sh_keys_free(&st->stored);
    tk_mix_free(st->mix);
    for (int l = 0; l < st->n_labels; l++) free(st->label_names[l]);
    free(st->mix_split);
    for (int64_t i = 0; st->labels && i < st->batch; i++) free(st->labels[i]);
    free(st->labels);
    free(st->tokens);
    free(st->row);
    free(st->corpus);
    free(st->stored_list);
    for (int i = 0; i < TK_MAX_DIRS; i++) free(st->stored_corpus[i]);
    free(st->doc_ids);
    free(st->pos);
    free(st->split);
    free(st);
}

static const sf_command tk_commands[] = {
    {"tokenize", "TOKENIZER_FILE [--tokens] [--special] [--decode]",
     "print the token ids (or pieces) of each stdin line; --decode turns id lines back into text", tok_cli_main},
    {NULL, NULL, NULL, NULL},
};

static const sf_stage_def tokenizer_def = {
    .name = "tokenizer",
    .summary = "encodes documents (tokenizer.json or SentencePiece .model) into fixed-length token sequences",
    .doc = "Reads document messages (doc_id, label, split, text) and emits tokens messages: tokens int32 "
           "[B, T] (BOS + seq_len ids), doc_id int64 [B], pos int32 [B] (first token's position in the "
           "document, BOS excluded), label [B], split. mode = chunk cuts every document into consecutive "
           "sequences and drops the rest shorter than seq_len (the paper: 64 + BOS); mode = truncate keeps "
           "the first sequence of each document, none of one shorter than seq_len (the paper's window). balance = "
           "\"en,ja\" keeps as many sequences of each label (the first of each, as the paper) and shuffle_buffer "
           "shuffles them across documents (the paper's SAE data). A batch holds one split; the last batch may "
           "be smaller.",
    .params = tk_params,
    .min_inputs = 1,
    .max_inputs = 1,
    .has_output = 1,
    .init = tk_init,
    .check = tk_check,
    .on_message = tk_on_message,
    .on_eos = tk_on_eos,
    .destroy = tk_destroy,
    .commands = tk_commands,
    SF_STAGE_DEF_SIZES,
    .takes = "document", .emits = "tokens",
};

SF_PLUGIN(&tokenizer_def)
