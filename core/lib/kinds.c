/* kinds.c — the message kinds' field tables and their readers (sf_kinds.h). The tables are the code
 * side of core/MESSAGES.md, which tests/test_messages.py holds them against. */
#include "sf_kinds.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const sf_kind_field document_fields[] = {
    {"doc_id", "int", 0}, {"label", "str", 0},  {"split", "str", 0},
    {"text", "str", 0},   {"source", "str", 0}, {"corpus", "str", 0},
    {NULL, NULL, 0},
};
static const sf_kind_field tokens_fields[] = {
    {"tokens", "int32 [B, T]", 0}, {"doc_id", "int64 [B]", 0}, {"pos", "int32 [B]", 0},
    {"label", "str array [B]", 0}, {"split", "str", 0},        {"corpus", "str", 1},
    {NULL, NULL, 0},
};
static const sf_kind_field activations_fields[] = {
    {"acts", "f32 or bf16 [B, T, d]", 0},
    {"tokens", "int32 [B, T]", 0},
    {"doc_id", "int64 [B]", 0},
    {"pos", "int32 [B]", 0},
    {"label", "str array [B]", 0},
    {"split", "str", 0},
    {"hook", "str", 0},
    {"layer", "int", 0},
    {"model", "str", 0},
    {"checkpoint", "str", 0},
    {"corpus", "str", 1},
    {NULL, NULL, 0},
};
static const sf_kind_field checkpoint_fields[] = {
    {"path", "str", 0},       {"step", "int", 0},       {"tokens_seen", "int", 0},
    {"train_loss", "float", 0}, {"val_loss", "float", 1}, {"checkpoint", "str", 1},
    {"val_seqs", "int", 1},   {"dtype", "str", 1},      {NULL, NULL, 0},
};
static const sf_kind_def kinds[] = {
    {"document", document_fields},
    {"tokens", tokens_fields},
    {"activations", activations_fields},
    {"checkpoint", checkpoint_fields},
    {NULL, NULL},
};

const sf_kind_def *sf_kinds(void) { return kinds; }

const sf_kind_def *sf_kind_findn(const char *name, size_t n) {
    for (const sf_kind_def *k = kinds; k->name; k++)
        if (strlen(k->name) == n && memcmp(k->name, name, n) == 0) return k;
    return NULL;
}

const sf_kind_def *sf_kind_find(const char *name) { return sf_kind_findn(name, strlen(name)); }

int64_t sf_int_at(const sf_tensor *t, size_t i) {
    if (t->dtype == SF_I32) {
        int32_t v;
        memcpy(&v, (const char *)t->data + 4 * i, 4);
        return v;
    }
    int64_t v;
    memcpy(&v, (const char *)t->data + 8 * i, 8);
    return v;
}

int sf_strv_eq(sf_strv v, const char *s) { return v.len == strlen(s) && (!v.len || memcmp(v.s, s, v.len) == 0); }

void sf_strv_copy(sf_strv v, char *dst, size_t cap) {
    size_t n = v.len < cap - 1 ? v.len : cap - 1;
    if (n) memcpy(dst, v.s, n);
    dst[n] = 0;
}

/* "[4, 64]" */
static const char *shape_str(const sf_tensor *t, char *buf, size_t cap) {
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < t->ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
    return buf;
}

/* Tensor `key` of dtype want with ndim dims: shape[0] == d0 and (ndim 2) shape[1] == d1. */
static int get_tensor(const sf_msg *m, const char *kind, const char *key, sf_dtype want, int ndim, int64_t d0,
                      int64_t d1, sf_tensor *t) {
    if (sf_msg_get_tensor(m, key, t) != SF_OK) return sf_fail("%s '%s': %s", kind, key, sf_last_error());
    if (t->dtype == want && t->ndim == ndim && t->shape[0] == d0 && (ndim == 1 || t->shape[1] == d1)) return SF_OK;
    char got[160];
    if (ndim == 1)
        return sf_fail("%s '%s': want %s [B = %lld], got %s %s", kind, key, want == SF_I64 ? "int64" : "int32", (long long)d0,
                       sf_dtype_name(t->dtype), shape_str(t, got, sizeof got));
    return sf_fail("%s '%s': want int32 [B, T] = [%lld, %lld], got %s %s", kind, key, (long long)d0, (long long)d1,
                   sf_dtype_name(t->dtype), shape_str(t, got, sizeof got));
}

static int get_strv(const sf_msg *m, const char *kind, const char *key, int required, sf_strv *v) {
    memset(v, 0, sizeof *v);
    if (!sf_msg_has(m, key)) return required ? sf_fail("%s message has no '%s'", kind, key) : SF_OK;
    if (sf_msg_get_str(m, key, &v->s, &v->len) != SF_OK) return sf_fail("%s '%s': %s", kind, key, sf_last_error());
    v->present = 1;
    return SF_OK;
}

/* The sequence fields, B and T known (from tokens or acts). */
static int read_seq(const sf_msg *m, const char *kind, int need, sf_seq_fields *q) {
    int has_doc = sf_msg_has(m, "doc_id"), has_pos = sf_msg_has(m, "pos");
    if (has_doc != has_pos) return sf_fail("%s message has %s without %s: they come together", kind, has_doc ? "'doc_id'" : "'pos'", has_doc ? "'pos'" : "'doc_id'");
    if (!has_doc && (need & SF_NEED_KEYS)) return sf_fail("%s message has no 'doc_id' and 'pos'", kind);
    q->has_keys = has_doc;
    if (has_doc && (get_tensor(m, kind, "doc_id", SF_I64, 1, q->B, 0, &q->doc_id) != SF_OK ||
                    get_tensor(m, kind, "pos", SF_I32, 1, q->B, 0, &q->pos) != SF_OK))
        return SF_ERR;
    q->n_labels = 0;
    if (sf_msg_has(m, "label")) {
        if (sf_msg_get_strs_count(m, "label", &q->n_labels) != SF_OK) return sf_fail("%s 'label': %s", kind, sf_last_error());
        if ((int64_t)q->n_labels != q->B)
            return sf_fail("%s 'label': want B = %lld strings, got %zu", kind, (long long)q->B, q->n_labels);
    } else if (need & SF_NEED_LABEL) {
        return sf_fail("%s message has no 'label'", kind);
    }
    if (get_strv(m, kind, "split", need & SF_NEED_META, &q->split) != SF_OK) return SF_ERR;
    return get_strv(m, kind, "corpus", 0, &q->corpus);
}

int sf_read_document(const sf_msg *m, sf_document_msg *out) {
    memset(out, 0, sizeof *out);
    if (get_strv(m, "document", "text", 1, &out->text) != SF_OK) return SF_ERR;
    if (!sf_msg_has(m, "doc_id")) return sf_fail("document message has no 'doc_id'");
    if (sf_msg_get_int(m, "doc_id", &out->doc_id) != SF_OK) return sf_fail("document 'doc_id': %s", sf_last_error());
    if (get_strv(m, "document", "label", 0, &out->label) != SF_OK || get_strv(m, "document", "split", 0, &out->split) != SF_OK ||
        get_strv(m, "document", "source", 0, &out->source) != SF_OK)
        return SF_ERR;
    return get_strv(m, "document", "corpus", 0, &out->corpus);
}

int sf_read_tokens(const sf_msg *m, int need, sf_tokens_msg *out) {
    memset(out, 0, sizeof *out);
    sf_seq_fields *q = &out->seq;
    if (sf_msg_get_tensor(m, "tokens", &q->tokens) != SF_OK) return sf_fail("tokens '%s': %s", "tokens", sf_last_error());
    if (q->tokens.dtype != SF_I32 || q->tokens.ndim != 2) {
        char got[160];
        return sf_fail("tokens 'tokens': want int32 [B, T], got %s %s", sf_dtype_name(q->tokens.dtype),
                       shape_str(&q->tokens, got, sizeof got));
    }
    q->B = q->tokens.shape[0], q->T = q->tokens.shape[1];
    q->has_tokens = 1;
    return read_seq(m, "tokens", need, q);
}

int sf_read_activations(const sf_msg *m, const char *acts_key, int need, sf_acts_msg *out) {
    memset(out, 0, sizeof *out);
    sf_seq_fields *q = &out->seq;
    const sf_tensor *a = &out->acts;
    char got[160];
    const char *key = acts_key ? acts_key : "acts";
    if (sf_msg_get_tensor(m, key, &out->acts) != SF_OK) return sf_fail("activations '%s': %s", key, sf_last_error());
    int want_seqs = need & SF_NEED_SEQS;
    if ((a->dtype != SF_F32 && a->dtype != SF_BF16 && a->dtype != SF_F16) || (a->ndim != 3 && (a->ndim != 2 || want_seqs)) ||
        a->shape[a->ndim - 1] < 1)
        return sf_fail("activations '%s': want F32, BF16 or F16 [B, T, d]%s with d >= 1, got %s %s", key,
                       want_seqs ? "" : " (or [N, d])", sf_dtype_name(a->dtype), shape_str(a, got, sizeof got));
    q->B = a->shape[0];
    q->T = a->ndim == 3 ? a->shape[1] : 1;
    out->d = a->shape[a->ndim - 1];
    if (sf_msg_has(m, "tokens")) {
        if (get_tensor(m, "activations", "tokens", SF_I32, 2, q->B, q->T, &q->tokens) != SF_OK) return SF_ERR;
        q->has_tokens = 1;
    } else if (need & SF_NEED_TOKENS) {
        return sf_fail("activations message has no 'tokens'");
    }
    if (read_seq(m, "activations", need, q) != SF_OK) return SF_ERR;
    int meta = need & SF_NEED_META;
    if (get_strv(m, "activations", "hook", meta, &out->hook) != SF_OK ||
        get_strv(m, "activations", "model", meta, &out->model) != SF_OK ||
        get_strv(m, "activations", "checkpoint", meta, &out->checkpoint) != SF_OK)
        return SF_ERR;
    out->has_layer = sf_msg_has(m, "layer");
    if (out->has_layer && sf_msg_get_int(m, "layer", &out->layer) != SF_OK)
        return sf_fail("activations 'layer': %s", sf_last_error());
    if (!out->has_layer && meta) return sf_fail("activations message has no 'layer'");
    return SF_OK;
}

int sf_read_checkpoint(const sf_msg *m, sf_checkpoint_msg *out) {
    memset(out, 0, sizeof *out);
    if (get_strv(m, "checkpoint", "path", 1, &out->path) != SF_OK) return SF_ERR;
    if (sf_msg_get_int(m, "step", &out->step) != SF_OK || sf_msg_get_int(m, "tokens_seen", &out->tokens_seen) != SF_OK ||
        sf_msg_get_float(m, "train_loss", &out->train_loss) != SF_OK)
        return sf_fail("checkpoint message: %s", sf_last_error());
    out->val_loss = NAN;
    if (sf_msg_has(m, "val_loss") && sf_msg_get_float(m, "val_loss", &out->val_loss) != SF_OK)
        return sf_fail("checkpoint message: %s", sf_last_error());
    return SF_OK;
}
