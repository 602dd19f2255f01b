/* test_kinds.c — the message-kind readers (core/lib/sf_kinds.h) on messages built field by field:
 * a well-formed activations / tokens / document / checkpoint message reads back every field, and
 * each way a field can break the contract of core/MESSAGES.md (a wrong dtype or shape, doc_id
 * without pos, a label count off, [N, d] where sequences are needed, a missing required field) is
 * refused with a message naming the kind and the field. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sf_check.h"
#include "sf_kinds.h"

enum { B = 2, T = 3, D = 4 };

/* An activations message; `bad` names one field to break ("" for none). */
static sf_msg *acts_msg(const char *bad) {
    sf_msg *m = sf_msg_new();
    float acts[B * T * D];
    for (int i = 0; i < B * T * D; i++) acts[i] = (float)i;
    int32_t tok[B * T] = {1, 2, 3, 4, 5, 6}, pos[B] = {0, 64}, doc32[B] = {7, 8};
    int64_t doc[B] = {7, 8};
    int64_t s3[3] = {B, T, D}, s2[2] = {B, T}, s1[1] = {B}, n2[2] = {B * T, D};
    if (!strcmp(bad, "flat")) sf_msg_put_tensor(m, "acts", SF_F32, 2, n2, acts);
    else if (!strcmp(bad, "f64")) sf_msg_put_tensor(m, "acts", SF_F64, 2, (int64_t[]){B * T, D / 2}, acts);
    else sf_msg_put_tensor(m, "acts", SF_F32, 3, s3, acts);
    if (strcmp(bad, "no-tokens")) sf_msg_put_tensor(m, "tokens", SF_I32, 2, s2, tok);
    if (!strcmp(bad, "doc-i32")) sf_msg_put_tensor(m, "doc_id", SF_I32, 1, s1, doc32);
    else sf_msg_put_tensor(m, "doc_id", SF_I64, 1, s1, doc);
    if (strcmp(bad, "no-pos")) sf_msg_put_tensor(m, "pos", SF_I32, 1, s1, pos);
    const char *labels[3] = {"en", "ja", "en"};
    sf_msg_put_strs(m, "label", labels, strcmp(bad, "labels") ? B : 3);
    sf_msg_put_str(m, "split", "train");
    sf_msg_put_str(m, "hook", "resid_post.2");
    sf_msg_put_int(m, "layer", 2);
    sf_msg_put_str(m, "model", "suite/step-1");
    if (strcmp(bad, "no-checkpoint")) sf_msg_put_str(m, "checkpoint", "step-1");
    return m;
}

/* Encodes and parses m, as a message arrives (the parsed message references buf). */
static sf_msg *arrive(sf_msg *m, void **buf) {
    size_t len;
    const void *b = sf_msg_bytes(m, &len);
    *buf = malloc(len);
    memcpy(*buf, b, len);
    sf_msg_free(m);
    return sf_msg_parse(*buf, len);
}

static void expect_refused(const char *bad, int need, const char *words) {
    void *buf;
    sf_msg *m = arrive(acts_msg(bad), &buf);
    sf_acts_msg a;
    CHECK(m && sf_read_activations(m, NULL, need, &a) == SF_ERR && strstr(sf_last_error(), words),
          "%s: want an error with '%s', got '%s'", bad, words, sf_last_error());
    sf_msg_free(m);
    free(buf);
}

int main(void) {
    void *buf;
    sf_msg *m = arrive(acts_msg(""), &buf);
    sf_acts_msg a;
    int all = SF_NEED_TOKENS | SF_NEED_KEYS | SF_NEED_LABEL | SF_NEED_META | SF_NEED_SEQS;
    CHECK(sf_read_activations(m, NULL, all, &a) == SF_OK, "good activations: %s", sf_last_error());
    CHECK(a.seq.B == B && a.seq.T == T && a.d == D && a.seq.has_tokens && a.seq.has_keys && a.seq.n_labels == B,
          "shape B %lld T %lld d %lld", (long long)a.seq.B, (long long)a.seq.T, (long long)a.d);
    CHECK(sf_int_at(&a.seq.doc_id, 1) == 8 && sf_int_at(&a.seq.pos, 1) == 64 && sf_int_at(&a.seq.tokens, 5) == 6,
          "doc_id, pos, tokens values");
    CHECK(sf_strv_eq(a.hook, "resid_post.2") && sf_strv_eq(a.seq.split, "train") && sf_strv_eq(a.checkpoint, "step-1") &&
              a.has_layer && a.layer == 2 && !a.seq.corpus.present,
          "string fields and layer");
    char small[4];
    sf_strv_copy(a.model, small, sizeof small);
    CHECK(!strcmp(small, "sui"), "sf_strv_copy cuts to fit: '%s'", small);
    sf_msg_free(m);
    free(buf);

    expect_refused("doc-i32", 0, "activations 'doc_id': want int64 [B = 2], got I32 [2]");
    expect_refused("no-pos", 0, "'doc_id' without 'pos'");
    expect_refused("labels", 0, "activations 'label': want B = 2 strings, got 3");
    expect_refused("flat", SF_NEED_SEQS, "want F32, BF16 or F16 [B, T, d] with d >= 1, got F32 [6, 4]");
    expect_refused("f64", 0, "got F64");
    expect_refused("no-tokens", SF_NEED_TOKENS, "activations message has no 'tokens'");
    expect_refused("no-checkpoint", SF_NEED_META, "activations message has no 'checkpoint'");
    /* [N, d] is N one-token sequences where sequences are not needed; its tokens must then be [N, 1] */
    m = arrive(acts_msg("flat"), &buf);
    CHECK(m && sf_read_activations(m, NULL, 0, &a) == SF_ERR && strstr(sf_last_error(), "want int32 [B, T] = [6, 1]"),
          "[N, d] with [B, T] tokens: '%s'", sf_last_error());
    sf_msg_free(m);
    free(buf);

    /* tokens: int32 only (MESSAGES.md), and its per-sequence fields */
    sf_msg *t = sf_msg_new();
    int64_t tok64[B * T] = {0}, s2[2] = {B, T};
    sf_msg_put_tensor(t, "tokens", SF_I64, 2, s2, tok64);
    m = arrive(t, &buf);
    sf_tokens_msg tm;
    CHECK(sf_read_tokens(m, 0, &tm) == SF_ERR && strstr(sf_last_error(), "tokens 'tokens': want int32 [B, T], got I64 [2, 3]"),
          "int64 tokens refused: '%s'", sf_last_error());
    sf_msg_free(m);
    free(buf);

    /* document */
    sf_msg *d = sf_msg_new();
    sf_msg_put_int(d, "doc_id", 42);
    sf_msg_put_str(d, "text", "hello");
    sf_msg_put_str(d, "corpus", "v1:1:2:3");
    m = arrive(d, &buf);
    sf_document_msg dm;
    CHECK(sf_read_document(m, &dm) == SF_OK && dm.doc_id == 42 && sf_strv_eq(dm.text, "hello") && !dm.label.present &&
              sf_strv_eq(dm.corpus, "v1:1:2:3"),
          "document: %s", sf_last_error());
    sf_msg_free(m);
    free(buf);

    /* checkpoint: val_loss optional (NaN), step required */
    sf_msg *c = sf_msg_new();
    sf_msg_put_str(c, "path", "runs/lm/step-100");
    sf_msg_put_int(c, "step", 100);
    sf_msg_put_int(c, "tokens_seen", 6400);
    sf_msg_put_float(c, "train_loss", 3.5);
    m = arrive(c, &buf);
    sf_checkpoint_msg cm;
    CHECK(sf_read_checkpoint(m, &cm) == SF_OK && cm.step == 100 && cm.tokens_seen == 6400 && cm.train_loss == 3.5 &&
              isnan(cm.val_loss) && sf_strv_eq(cm.path, "runs/lm/step-100"),
          "checkpoint: %s", sf_last_error());
    sf_msg_free(m);
    free(buf);
    c = sf_msg_new();
    sf_msg_put_str(c, "path", "x");
    m = arrive(c, &buf);
    CHECK(sf_read_checkpoint(m, &cm) == SF_ERR && strstr(sf_last_error(), "step"), "checkpoint without step: '%s'", sf_last_error());
    sf_msg_free(m);
    free(buf);

    CHECK(sf_kind_find("activations") && sf_kind_findn("tokensXYZ", 6) && !sf_kind_find("token"), "kind lookup");
    if (!failures) printf("kinds: all checks passed\n");
    return failures != 0;
}
