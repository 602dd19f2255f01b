/* sf_kinds.h — the message kinds of core/MESSAGES.md as code: each kind's field table (the one list
 * that `saeflow stages --kinds`, the pipeline check and tests/test_messages.py compare with the
 * document) and one reader per kind that validates every standard field's type and shape and reads
 * them in one call. Stages decode the kinds they take with these instead of by hand, so one rule
 * holds everywhere (e.g. doc_id is int64 [B], as MESSAGES.md states). */
#ifndef SF_KINDS_H
#define SF_KINDS_H

#include "saeflow.h"

/* One field of a kind, as its table in MESSAGES.md lists it. */
typedef struct sf_kind_field {
    const char *key;
    const char *type; /* "str", "int", "float", "str array [B]", or a tensor's "int32 [B, T]"... */
    int optional;
} sf_kind_field;

typedef struct sf_kind_def {
    const char *name; /* "document", "tokens", "activations", "checkpoint" */
    const sf_kind_field *fields; /* terminated by key == NULL */
} sf_kind_def;

/* Every kind, terminated by name == NULL; and one by name (NULL if none). */
SF_EXPORT const sf_kind_def *sf_kinds(void);
SF_EXPORT const sf_kind_def *sf_kind_find(const char *name);
/* The same for the first n bytes of name. */
SF_EXPORT const sf_kind_def *sf_kind_findn(const char *name, size_t n);

/* A string field: points into the message, not NUL-terminated; len 0 and present 0 when absent. */
typedef struct sf_strv {
    const char *s;
    size_t len;
    int present;
} sf_strv;

/* What a reader requires beyond what it always requires (a field that is present is checked in
 * any case): */
enum {
    SF_NEED_TOKENS = 1, /* activations: tokens */
    SF_NEED_KEYS = 2,   /* doc_id and pos */
    SF_NEED_LABEL = 4,  /* label */
    SF_NEED_META = 8,   /* split; activations also hook, layer, model, checkpoint */
    SF_NEED_SEQS = 16,  /* activations: acts [B, T, d] (not [N, d]) */
};

/* The per-sequence fields of tokens and activations messages. Tensors point into the message
 * (unaligned: read them with sf_i64_at / sf_i32_at). doc_id and pos come together or not at all. */
typedef struct sf_seq_fields {
    int64_t B, T;
    int has_tokens;
    sf_tensor tokens; /* int32 [B, T] */
    int has_keys;
    sf_tensor doc_id; /* int64 [B] */
    sf_tensor pos;    /* int32 [B] */
    size_t n_labels;  /* B, or 0 when the message has no label (sf_msg_get_strs_at(m, "label", i, ...)) */
    sf_strv split, corpus;
} sf_seq_fields;

/* tokens: tokens int32 [B, T] (always required), doc_id, pos, label, split, corpus. */
typedef struct sf_tokens_msg {
    sf_seq_fields seq;
} sf_tokens_msg;

/* activations: acts F32/BF16/F16 [B, T, d] (or [N, d], read as N one-token sequences), and the
 * sequence fields with tokens [B, T], hook, layer, model, checkpoint. */
typedef struct sf_acts_msg {
    sf_tensor acts;
    int64_t d;
    sf_seq_fields seq;
    sf_strv hook, model, checkpoint;
    int has_layer;
    int64_t layer;
} sf_acts_msg;

/* document: text and doc_id (always required), label, split, source, corpus. */
typedef struct sf_document_msg {
    sf_strv text;
    int64_t doc_id;
    sf_strv label, split, source, corpus;
} sf_document_msg;

/* checkpoint (a language model's checkpoint saved while it trains): path, step, tokens_seen,
 * train_loss, val_loss (NaN when absent). */
typedef struct sf_checkpoint_msg {
    sf_strv path;
    int64_t step, tokens_seen;
    double train_loss, val_loss;
} sf_checkpoint_msg;

/* Each SF_OK, or SF_ERR with sf_last_error() naming the kind, the field, what it must be and what
 * it is: "activations 'doc_id': want int64 [B = 4], got I32 [4]". need: SF_NEED_* flags. */
SF_EXPORT int sf_read_document(const sf_msg *m, sf_document_msg *out);
SF_EXPORT int sf_read_tokens(const sf_msg *m, int need, sf_tokens_msg *out);
/* acts_key: the field holding the activations (NULL: "acts"; a stage's `field` parameter may name another). */
SF_EXPORT int sf_read_activations(const sf_msg *m, const char *acts_key, int need, sf_acts_msg *out);
SF_EXPORT int sf_read_checkpoint(const sf_msg *m, sf_checkpoint_msg *out);

/* Element i of an integer tensor of a received message (unaligned data): I32 or I64. */
SF_EXPORT int64_t sf_int_at(const sf_tensor *t, size_t i);
/* Whether a string field equals s. */
SF_EXPORT int sf_strv_eq(sf_strv v, const char *s);
/* Copies a string field into dst[cap] (cut to fit, NUL-terminated; "" when absent). */
SF_EXPORT void sf_strv_copy(sf_strv v, char *dst, size_t cap);

#endif
