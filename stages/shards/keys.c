/* Sets of sequence keys (doc_id, pos of the first token), which the *tokens* contract makes
 * unique: the writer's resume check, the tokenizer's skip of stored sequences and the trainer's
 * skip of trained ones. Open addressing, 25-50% full: 48-96 bytes per key. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "sf_safetensors.h"
#include "sf_trained_on.h"
#include "shards.h"

static size_t key_hash(int64_t doc, int32_t pos) {
    uint64_t h = (uint64_t)doc * 0x9e3779b97f4a7c15ull ^ (uint64_t)(uint32_t)pos * 0xbf58476d1ce4e5b9ull;
    return (size_t)(h ^ h >> 29);
}

static sh_key *slot(const sh_keys *s, int64_t doc, int32_t pos) {
    for (size_t i = key_hash(doc, pos) & (s->cap - 1);; i = (i + 1) & (s->cap - 1))
        if (!s->k[i].val || (s->k[i].doc == doc && s->k[i].pos == pos)) return &s->k[i];
}

sh_key *sh_keys_find(const sh_keys *s, int64_t doc, int32_t pos) {
    if (!s->n) return NULL;
    sh_key *k = slot(s, doc, pos);
    return k->val ? k : NULL;
}

sh_key *sh_keys_add(sh_keys *s, int64_t doc, int32_t pos) {
    if (2 * (s->n + 1) > s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 64;
        sh_key *k = sf_zalloc("the sequence key table", cap, sizeof *k);
        if (!k) {
            sf_fail("%s, for %zu sequence keys", sf_last_error(), s->n + 1);
            return NULL;
        }
        sh_keys big = {k, cap, s->n};
        for (size_t i = 0; i < s->cap; i++)
            if (s->k[i].val) *slot(&big, s->k[i].doc, s->k[i].pos) = s->k[i];
        free(s->k);
        *s = big;
    }
    sh_key *k = slot(s, doc, pos);
    if (!k->val) {
        *k = (sh_key){doc, pos, SH_KEY_USED, 0, 0};
        s->n++;
    }
    return k;
}

void sh_keys_free(sh_keys *s) {
    free(s->k);
    memset(s, 0, sizeof *s);
}

int sh_stored_keys(const char *dir, const sh_manifest *m, sh_keys *keys) {
    for (size_t i = 0; i < m->nshards; i++) {
        sh_shard s;
        if (sh_shard_open(dir, m, &m->shards[i], 0, &s) != SF_OK) return SF_ERR;
        for (int64_t r = 0, end; r < s.n; r = end) { /* a sequence: rows [r, end) of one seq number */
            int64_t q, next, doc;
            int32_t pos;
            memcpy(&q, s.seq + 8 * r, 8);
            for (end = r + 1; end < s.n && (memcpy(&next, s.seq + 8 * end, 8), next == q); end++) {}
            memcpy(&doc, s.doc_id + 8 * r, 8);
            memcpy(&pos, s.pos + 4 * r, 4);
            if (end - r > INT32_MAX) {
                sh_shard_close(&s);
                return sf_fail("shard %s/%s: sequence %lld has %lld rows", dir, m->shards[i].file, (long long)q,
                               (long long)(end - r));
            }
            sh_key *k = sh_keys_add(keys, doc, pos);
            if (!k) {
                sh_shard_close(&s);
                return SF_ERR;
            }
            k->rows = (int32_t)(end - r);
            k->tokens_crc = sf_crc32(0, s.tokens + 4 * r, (size_t)(end - r) * 4);
        }
        sh_shard_close(&s);
    }
    return SF_OK;
}

int sh_key_same_tokens(const sh_key *k, const void *tokens, int64_t n) {
    return !k->rows || (n == k->rows && sf_crc32(0, tokens, (size_t)n * 4) == k->tokens_crc);
}

int sh_trained_lists(const sf_st_file *f, const char *path, sh_trained *t) {
    const sf_st_tensor *doc = sf_st_find(f, "trained_doc"), *pos = sf_st_find(f, "trained_pos"),
                       *rows = sf_st_find(f, "trained_rows");
    if (!doc && !pos && !rows) return SF_DONE;
    t->n = doc ? doc->t.shape[0] : -1;
    if (!doc || !pos || !rows || doc->t.dtype != SF_I64 || pos->t.dtype != SF_I32 || rows->t.dtype != SF_I32 ||
        doc->t.ndim != 1 || pos->t.ndim != 1 || rows->t.ndim != 1 || pos->t.shape[0] != t->n ||
        rows->t.shape[0] != t->n)
        return sf_fail("%s: trained_doc, trained_pos, trained_rows must be I64, I32, I32 vectors of one length", path);
    t->doc = doc->t.data;
    t->pos = pos->t.data;
    t->rows = rows->t.data;
    return SF_OK;
}

void sh_trained_at(const sh_trained *t, int64_t i, int64_t *doc, int32_t *pos, int32_t *rows) {
    memcpy(doc, (const char *)t->doc + 8 * i, 8);
    memcpy(pos, (const char *)t->pos + 4 * i, 4);
    memcpy(rows, (const char *)t->rows + 4 * i, 4);
}

static int key_cmp(const void *a, const void *b) {
    const sh_key *x = *(const sh_key *const *)a, *y = *(const sh_key *const *)b;
    if (x->doc != y->doc) return x->doc < y->doc ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

int sh_trained_build(const sh_keys *set, sh_trained_out *o) {
    int64_t K = (int64_t)set->n, j = 0;
    size_t nk = (size_t)(K ? K : 1);
    memset(o, 0, sizeof *o);
    const sh_key **all = sf_alloc("the trained sequences being sorted", nk, sizeof *all);
    o->doc = sf_alloc("the trained_doc list", nk, 8);
    o->pos = sf_alloc("the trained_pos list", nk, 4);
    o->rows = sf_alloc("the trained_rows list", nk, 4);
    if (!all || !o->doc || !o->pos || !o->rows) {
        free(all);
        sh_trained_out_free(o);
        return sf_fail("%s, listing the %lld trained sequences for the checkpoint", sf_last_error(), (long long)K);
    }
    for (size_t i = 0; i < set->cap; i++)
        if (set->k[i].val) all[j++] = &set->k[i];
    qsort(all, (size_t)K, sizeof *all, key_cmp);
    for (j = 0; j < K; j++)
        o->doc[j] = all[j]->doc, o->pos[j] = all[j]->pos, o->rows[j] = (int32_t)(all[j]->val & ~SH_KEY_USED);
    free(all);
    o->n = K;
    o->t[0] = (sf_st_tensor){"trained_doc", {SF_I64, 1, {K}, o->doc, (size_t)K * 8}};
    o->t[1] = (sf_st_tensor){"trained_pos", {SF_I32, 1, {K}, o->pos, (size_t)K * 4}};
    o->t[2] = (sf_st_tensor){"trained_rows", {SF_I32, 1, {K}, o->rows, (size_t)K * 4}};
    return SF_OK;
}

void sh_trained_out_free(sh_trained_out *o) {
    free(o->doc);
    free(o->pos);
    free(o->rows);
    memset(o, 0, sizeof *o);
}

int64_t sh_meta_int(const sf_st_file *f, const char *key) {
    const char *v = sf_st_metadata(f, key);
    char *end = NULL;
    long long x = v ? strtoll(v, &end, 10) : -1;
    return v && *v && !*end ? x : -1;
}

/* The run the checkpoint's activations came from, as sae_trainer records it in the metadata entry
 * "training" (sf_trained_on.h). */
static void trained_run(const sf_st_file *f, sh_run *run) {
    const char *meta = sf_st_metadata(f, "training");
    json_t *root = meta ? json_loads(meta, 0, NULL) : NULL;
    const char *model, *checkpoint, *hook;
    sf_trained_on_get(root, &model, &checkpoint, &hook, NULL);
    run->model = model ? strdup(model) : NULL;
    run->checkpoint = checkpoint ? strdup(checkpoint) : NULL;
    run->hook = hook ? strdup(hook) : NULL;
    json_decref(root);
}

int sh_trained_keys(const char *dir, sh_keys *keys, sh_run *run) {
    char path[4096];
    snprintf(path, sizeof path, "%s/checkpoint.safetensors", dir);
    if (access(path, F_OK) != 0) return SF_DONE;
    sf_st_file *f = sf_st_open(path);
    if (!f) return SF_ERR;
    int64_t seq_rows = sh_meta_int(f, "seq_rows");
    trained_run(f, run);
    sh_trained t;
    int rc = sh_trained_lists(f, path, &t);
    if (rc == SF_DONE) rc = sf_fail("%s lists no trained sequences (trained_doc, trained_pos, trained_rows)", path);
    else if (rc == SF_OK && seq_rows < 1)
        rc = sf_fail("%s: its sequences were not all of one length (seq_rows): which were trained whole is unknown",
                     path);
    for (int64_t i = 0; rc == SF_OK && i < t.n; i++) {
        int64_t d;
        int32_t p, r;
        sh_trained_at(&t, i, &d, &p, &r);
        if (r >= seq_rows && !sh_keys_add(keys, d, p)) rc = SF_ERR;
    }
    sf_st_close(f);
    return rc;
}
