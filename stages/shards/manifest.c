/* manifest.json: the run identity, the label list and the list of complete shards. It is the
 * only source of truth: a shard file the manifest does not name does not exist for readers. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "shards.h"

int sh_name_ok(const char *s, size_t len) {
    if (len == 0 || len >= SH_NAME_MAX) return SF_ERR;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-' || c == '.'))
            return SF_ERR;
    }
    return SF_OK;
}

int sh_dtype_parse(const char *s, sf_dtype *out) {
    if (strcasecmp(s, "F32") == 0 || strcasecmp(s, "float32") == 0) *out = SF_F32;
    else if (strcasecmp(s, "BF16") == 0 || strcasecmp(s, "bfloat16") == 0) *out = SF_BF16;
    else if (strcasecmp(s, "F16") == 0 || strcasecmp(s, "float16") == 0) *out = SF_F16;
    else return sf_fail("dtype '%s': shards store F32, BF16 or F16", s);
    return SF_OK;
}

size_t sh_row_bytes(const sh_run *r) {
    /* acts + tokens (4) + doc_id (8) + pos (4) + label (1) + seq (8) */
    return (size_t)r->d * sf_dtype_size(r->dtype) + 25;
}

int sh_manifest_label_index(const sh_manifest *m, const char *label, size_t len) {
    for (size_t i = 0; i < m->nlabels; i++)
        if (strlen(m->labels[i]) == len && memcmp(m->labels[i], label, len) == 0) return (int)i;
    return -1;
}

void sh_manifest_free(sh_manifest *m) {
    free(m->run.model);
    free(m->run.checkpoint);
    free(m->run.hook);
    free(m->run.corpus);
    for (size_t i = 0; i < m->nlabels; i++) free(m->labels[i]);
    free(m->labels);
    free(m->shards);
    memset(m, 0, sizeof *m);
}

/* ---- loading ---- */

/* Field readers: each fails naming the manifest and the field. */
static int mf_bad(const char *path, const char *what, const char *field) {
    return sf_fail("%s: bad manifest: %s '%s'", path, what, field);
}

static int mf_str(const char *path, json_t *o, const char *key, char **out) {
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v)) return mf_bad(path, "missing or non-string field", key);
    *out = sf_strdup(key, json_string_value(v));
    return *out ? SF_OK : SF_ERR;
}

static int mf_int(const char *path, json_t *o, const char *key, int64_t lo, int64_t hi, int64_t *out) {
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v)) return mf_bad(path, "missing or non-integer field", key);
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi) return mf_bad(path, "out-of-range value in field", key);
    *out = x;
    return SF_OK;
}

/* Norm sums: a real, or null when the input held non-finite values. */
static int mf_real(const char *path, json_t *o, const char *key, double *out) {
    json_t *v = json_object_get(o, key);
    if (json_is_null(v)) *out = NAN;
    else if (json_is_number(v)) *out = json_number_value(v);
    else return mf_bad(path, "missing or non-numeric field", key);
    return SF_OK;
}

static int mf_shard(const char *path, json_t *o, const sh_manifest *m, sh_shard_info *s) {
    if (!json_is_object(o)) return mf_bad(path, "non-object entry in", "shards");
    json_t *file = json_object_get(o, "file"), *split = json_object_get(o, "split");
    if (!json_is_string(file) || !json_is_string(split)) return mf_bad(path, "shard without file or split in", "shards");
    const char *f = json_string_value(file), *sp = json_string_value(split);
    size_t fl = strlen(f);
    /* A plain base name, so a manifest cannot point outside its directory. */
    if (fl >= sizeof s->file || strchr(f, '/') || f[0] == '.' || fl < 13 ||
        strcmp(f + fl - 12, ".safetensors") != 0)
        return mf_bad(path, "shard file name is not a base name ending in .safetensors:", f);
    if (sh_name_ok(sp, strlen(sp)) != SF_OK) return mf_bad(path, "bad split name", sp);
    snprintf(s->file, sizeof s->file, "%s", f);
    snprintf(s->split, sizeof s->split, "%s", sp);
    int64_t crc = 0;
    const int64_t big = INT64_MAX / 2;
    if (mf_int(path, o, "count", 1, big, &s->count) || mf_int(path, o, "sequences", 1, s->count, &s->sequences) ||
        mf_int(path, o, "first_seq", 0, big, &s->first_seq) ||
        mf_int(path, o, "last_seq", s->first_seq, big, &s->last_seq) ||
        mf_int(path, o, "bytes", 8, big, &s->bytes) || mf_int(path, o, "crc32", 0, UINT32_MAX, &crc) ||
        mf_real(path, o, "norm_sum", &s->norm_sum) || mf_real(path, o, "norm_sq_sum", &s->norm_sq_sum))
        return SF_ERR;
    s->crc32 = (uint32_t)crc;
    uint64_t need; /* count x row bytes, which may not fit in 64 bits for a hostile count */
    if (__builtin_mul_overflow((uint64_t)s->count, (uint64_t)sh_row_bytes(&m->run), &need) || (uint64_t)s->bytes < need)
        return mf_bad(path, "byte size too small for its row count in shard", f);
    return SF_OK;
}

static int mf_from_json(const char *path, json_t *root, sh_manifest *m);

int sh_manifest_load(const char *dir, sh_manifest *m) {
    memset(m, 0, sizeof *m);
    char path[4096];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    if (access(path, F_OK) != 0 && errno == ENOENT) return SF_DONE;
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return sf_fail("%s: bad manifest: %s (line %d)", path, jerr.text, jerr.line);
    return mf_from_json(path, root, m);
}

int sh_manifest_parse(const char *path, const char *buf, size_t len, sh_manifest *m) {
    memset(m, 0, sizeof *m);
    json_error_t jerr;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) return sf_fail("%s: bad manifest: %s (line %d)", path, jerr.text, jerr.line);
    return mf_from_json(path, root, m);
}

/* Validates a manifest's JSON into m (named path in messages) and releases root. */
static int mf_from_json(const char *path, json_t *root, sh_manifest *m) {
    int rc = SF_ERR;
    int64_t version = 0, total = 0, want_total = 0;
    char *fmt = NULL, *dtype = NULL;
    if (!json_is_object(root)) {
        sf_fail("%s: bad manifest: not a JSON object", path);
        goto out;
    }
    if (mf_str(path, root, "format", &fmt)) goto out;
    if (strcmp(fmt, SH_FORMAT) != 0) {
        sf_fail("%s: format is '%s', not '%s'", path, fmt, SH_FORMAT);
        goto out;
    }
    if (mf_int(path, root, "version", 0, INT32_MAX, &version)) goto out;
    if (version != SH_VERSION) {
        sf_fail("%s: manifest version %lld; this saeflow reads version %d", path, (long long)version, SH_VERSION);
        goto out;
    }
    if (mf_str(path, root, "model", &m->run.model) || mf_str(path, root, "checkpoint", &m->run.checkpoint) ||
        mf_str(path, root, "hook", &m->run.hook) || mf_int(path, root, "layer", INT32_MIN, INT32_MAX, &m->run.layer) ||
        mf_int(path, root, "d", 1, 1 << 24, &m->run.d) || mf_str(path, root, "dtype", &dtype))
        goto out;
    json_t *corpus = json_object_get(root, "corpus"); /* optional: older directories have none */
    if (corpus && mf_str(path, root, "corpus", &m->run.corpus)) goto out;
    if (sh_dtype_parse(dtype, &m->run.dtype) != SF_OK) {
        sf_fail("%s: bad manifest: dtype '%s' (F32, BF16 or F16)", path, dtype);
        goto out;
    }
    json_t *complete = json_object_get(root, "complete");
    if (!json_is_boolean(complete)) {
        mf_bad(path, "missing or non-boolean field", "complete");
        goto out;
    }
    m->complete = json_is_true(complete);

    json_t *labels = json_object_get(root, "labels");
    if (!json_is_array(labels) || json_array_size(labels) > SH_MAX_LABELS) {
        mf_bad(path, "missing, non-array or too long (256 at most)", "labels");
        goto out;
    }
    m->labels = calloc(json_array_size(labels) + 1, sizeof *m->labels);
    for (size_t i = 0; i < json_array_size(labels); i++) {
        json_t *l = json_array_get(labels, i);
        const char *s = json_string_value(l);
        if (!s || sh_name_ok(s, strlen(s)) != SF_OK || sh_manifest_label_index(m, s, strlen(s)) >= 0) {
            mf_bad(path, "non-string, badly named or repeated entry in", "labels");
            goto out;
        }
        m->labels[m->nlabels++] = strdup(s);
    }

    json_t *shards = json_object_get(root, "shards");
    if (!json_is_array(shards)) {
        mf_bad(path, "missing or non-array field", "shards");
        goto out;
    }
    m->cap = json_array_size(shards) + 1;
    if (!(m->shards = sf_zalloc("the manifest's shard list", m->cap, sizeof *m->shards))) goto out;
    for (size_t i = 0; i < json_array_size(shards); i++) {
        sh_shard_info *s = &m->shards[i];
        if (mf_shard(path, json_array_get(shards, i), m, s) != SF_OK) goto out;
        for (size_t j = 0; j < i; j++)
            if (strcmp(m->shards[j].file, s->file) == 0) {
                mf_bad(path, "shard listed twice:", s->file);
                goto out;
            }
        /* Sequence numbers grow with the shard index within a split. */
        for (size_t j = i; j-- > 0;)
            if (strcmp(m->shards[j].split, s->split) == 0) {
                if (s->first_seq <= m->shards[j].last_seq) {
                    mf_bad(path, "sequence numbers overlap an earlier shard in", s->file);
                    goto out;
                }
                break;
            }
        if (__builtin_add_overflow(total, s->count, &total)) {
            mf_bad(path, "row counts add up beyond 2^63 in", "shards");
            goto out;
        }
        m->nshards++;
    }
    if (mf_int(path, root, "count", 0, INT64_MAX, &want_total)) goto out;
    if (want_total != total) {
        sf_fail("%s: bad manifest: count %lld but the shards add up to %lld", path, (long long)want_total,
                (long long)total);
        goto out;
    }
    rc = SF_OK;
out:
    free(fmt);
    free(dtype);
    json_decref(root);
    if (rc != SF_OK) sh_manifest_free(m);
    return rc;
}

/* ---- saving ---- */

static json_t *mf_real_or_null(double x) { return isfinite(x) ? json_real(x) : json_null(); }

/* Writes name in dir durably (sf_write_file_atomic: temp file, fsync, rename, fsync of the directory). */
static int write_atomic(const char *dir, const char *name, const char *buf, size_t len) {
    char path[4200];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path) return sf_fail("path too long: %s", dir);
    return sf_write_file_atomic(path, buf, len);
}

/* Totals of the shards of one split (split == NULL: of all shards). */
static void mf_totals(const sh_manifest *m, const char *split, int64_t *shards, int64_t *count, int64_t *seqs,
                      double *nsum, double *nsq) {
    *shards = *count = *seqs = 0;
    *nsum = *nsq = 0;
    for (size_t i = 0; i < m->nshards; i++) {
        const sh_shard_info *s = &m->shards[i];
        if (split && strcmp(s->split, split) != 0) continue;
        ++*shards;
        *count += s->count;
        *seqs += s->sequences;
        *nsum += s->norm_sum;
        *nsq += s->norm_sq_sum;
    }
}

char *sh_manifest_dumps(const sh_manifest *m) {
    json_t *labels = json_array(), *shards = json_array(), *splits = json_object();
    int64_t nsh, total, seqs;
    double nsum, nsq;
    for (size_t i = 0; i < m->nlabels; i++) json_array_append_new(labels, json_string(m->labels[i]));
    for (size_t i = 0; i < m->nshards; i++) {
        const sh_shard_info *s = &m->shards[i];
        json_array_append_new(
            shards, json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:o}", "file", s->file, "split",
                              s->split, "count", (json_int_t)s->count, "sequences", (json_int_t)s->sequences,
                              "first_seq", (json_int_t)s->first_seq, "last_seq", (json_int_t)s->last_seq,
                              "bytes", (json_int_t)s->bytes, "crc32",
                              (json_int_t)s->crc32, "norm_sum", mf_real_or_null(s->norm_sum), "norm_sq_sum",
                              mf_real_or_null(s->norm_sq_sum)));
        if (json_object_get(splits, s->split)) continue;
        /* Per split summaries, for people: the mean norm is what a trainer normalises with. */
        mf_totals(m, s->split, &nsh, &total, &seqs, &nsum, &nsq);
        json_object_set_new(splits, s->split,
                            json_pack("{s:I, s:I, s:I, s:o, s:o}", "shards", (json_int_t)nsh, "count",
                                      (json_int_t)total, "sequences", (json_int_t)seqs, "norm_mean",
                                      mf_real_or_null(nsum / (double)total), "norm_sq_mean",
                                      mf_real_or_null(nsq / (double)total)));
    }
    mf_totals(m, NULL, &nsh, &total, &seqs, &nsum, &nsq);
    json_t *root = json_pack(
        "{s:s, s:i, s:s, s:s, s:s, s:I, s:I, s:s, s:b, s:I, s:I, s:o, s:o, s:o, s:o, s:o}", "format", SH_FORMAT,
        "version", SH_VERSION, "model", m->run.model ? m->run.model : "", "checkpoint",
        m->run.checkpoint ? m->run.checkpoint : "", "hook", m->run.hook ? m->run.hook : "", "layer",
        (json_int_t)m->run.layer, "d", (json_int_t)m->run.d, "dtype", sf_dtype_name(m->run.dtype), "complete",
        m->complete, "count", (json_int_t)total, "sequences", (json_int_t)seqs, "norm_mean",
        mf_real_or_null(total ? nsum / (double)total : 0), "norm_sq_mean",
        mf_real_or_null(total ? nsq / (double)total : 0), "labels", labels, "splits", splits, "shards", shards);
    if (!root) {
        sf_fail("out of memory writing a shard manifest");
        return NULL;
    }
    if (m->run.corpus) json_object_set_new(root, "corpus", json_string(m->run.corpus));
    char *text = json_dumps(root, JSON_INDENT(1) | JSON_REAL_PRECISION(17));
    json_decref(root);
    if (!text) sf_fail("out of memory writing a shard manifest");
    return text;
}

int sh_manifest_save(const char *dir, const sh_manifest *m) {
    char *text = sh_manifest_dumps(m);
    if (!text) return sf_fail("%s: %s", dir, sf_last_error());
    size_t len = strlen(text);
    text[len] = '\n'; /* over the NUL: the file ends with a newline */
    int rc = write_atomic(dir, "manifest.json", text, len + 1);
    free(text);
    return rc;
}
