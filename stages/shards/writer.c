/* The shard writer: buffers whole sequences per split, writes a shard when a split's buffer
 * reaches the shard size, then records it in the manifest.
 *
 * Resume. A sequence is identified by (doc_id, pos of its first token). A writer opened on a
 * directory that holds shards reads those two columns of every listed shard into a hash set,
 * and skips each arriving sequence that is in it (once). So a re-run of the same input, in any
 * order (replicated upstream stages deliver in varying order), stores every sequence exactly
 * once. At the end of the input every stored sequence must have arrived again, else the input
 * is not the one the directory was made from and the run fails. `seq` numbers sequences in write
 * order across the directory; a resumed run continues after the largest stored number.
 *
 * Writing a shard (CRC, write, fsync, rename, manifest) runs on a flusher thread while the next
 * shard fills, so the upstream is not held up by the disk; at most one shard is in flight. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sf_output.h"
#include "sf_safetensors.h"
#include "shards.h"

#define SH_MAX_SPLITS 16

/* The rows of one shard being filled or written. */
typedef struct sh_rows {
    sh_cols c;
    int64_t n, nseq;
    int64_t first_seq, last_seq;
    double norm_sum, norm_sq_sum;
} sh_rows;

typedef struct sh_split {
    char name[SH_NAME_MAX];
    sh_rows rows;       /* pending rows of its next shard */
} sh_split;

/* The shard on the flusher thread. Its buffers are swapped with a split's when it is handed
 * over, so no shard-sized copy or allocation happens per shard. */
typedef struct sh_flush {
    pthread_t thread;
    int active;         /* started and not yet joined */
    sh_rows rows;
    char split[SH_NAME_MAX];
    size_t index;       /* shard number */
    char *labels_json;  /* the label list when it was handed over */
    int rc;
    char err[1024];
} sh_flush;

struct sh_writer {
    char *dir;
    int lock_fd;        /* the directory, flock()ed: one writer per directory */
    sf_dtype dtype;
    size_t shard_bytes;
    /* m.run is fixed once set; m.shards is appended to by the flusher; m.labels by add().
     * m_lock guards the manifest while the flusher appends to it and saves it. */
    sh_manifest m;
    pthread_mutex_t m_lock;
    int have_run;       /* m.run identity is set (from the manifest or the first batch) */
    sh_split splits[SH_MAX_SPLITS];
    int nsplits;
    size_t next_index;  /* number of the next shard */
    int64_t next_seq;   /* seq of the next sequence written */
    sh_keys keys;       /* the stored sequences; val bit 0: arrived again in this run (and was skipped) */
    int64_t keys_seen;  /* stored sequences skipped in this run */
    int skipped_upstream; /* the source drops stored sequences (and checks them): none need arrive */
    int64_t rows_written, shards_written;
    sh_flush fl;
    float *f32;         /* one sequence as float32 */
    size_t f32_cap;
    int failed;         /* a write failed: refuse further work so no gap can appear */
};

static sh_split *split_get(sh_writer *w, const char *name) {
    for (int i = 0; i < w->nsplits; i++)
        if (strcmp(w->splits[i].name, name) == 0) return &w->splits[i];
    if (w->nsplits == SH_MAX_SPLITS) return sf_fail("more than %d splits", SH_MAX_SPLITS), NULL;
    sh_split *s = &w->splits[w->nsplits++];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    return s;
}

/* True for names the writer creates: "<split>-<digits>.safetensors" and their ".tmp" files. */
static int is_shard_name(const char *name, int *is_tmp) {
    size_t n = strlen(name);
    *is_tmp = n > 4 && strcmp(name + n - 4, ".tmp") == 0;
    if (*is_tmp) n -= 4;
    if (n < 14 || strncmp(name + n - 12, ".safetensors", 12) != 0) return 0;
    size_t digits = 0;
    while (digits < n - 12 && name[n - 13 - digits] >= '0' && name[n - 13 - digits] <= '9') digits++;
    return digits >= 6 && digits < n - 12 && name[n - 13 - digits] == '-';
}

/* Removes what a crash can leave behind: temp files and shards written but never entered in the
 * manifest (a crash between the shard's rename and the manifest's). */
static int remove_leftovers(sh_writer *w) {
    DIR *d = opendir(w->dir);
    if (!d) return sf_fail("%s: %s", w->dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d))) {
        int tmp, listed = 0;
        if (strcmp(e->d_name, "manifest.json.tmp") != 0) {
            if (!is_shard_name(e->d_name, &tmp)) continue;
            for (size_t i = 0; !tmp && i < w->m.nshards; i++) listed |= strcmp(w->m.shards[i].file, e->d_name) == 0;
            if (listed) continue;
        }
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", w->dir, e->d_name);
        sf_log(SF_LOG_WARN, "removing %s, left by an interrupted run", path);
        if (unlink(path) != 0) {
            closedir(d);
            return sf_fail("cannot remove %s: %s", path, strerror(errno));
        }
    }
    closedir(d);
    return SF_OK;
}

/* Reads the (doc_id, pos) of every stored sequence into the key set (the two columns only). */
static int load_keys(sh_writer *w) {
    for (size_t i = 0; i < w->m.nshards; i++)
        if (w->m.shards[i].last_seq >= w->next_seq) w->next_seq = w->m.shards[i].last_seq + 1;
    return sh_stored_keys(w->dir, &w->m, &w->keys);
}

sh_writer *sh_writer_open(const char *dir, sf_dtype dtype, size_t shard_bytes, int resume, int skipped_upstream) {
    if (dtype != SF_F32 && dtype != SF_BF16 && dtype != SF_F16)
        return sf_fail("shards store F32, BF16 or F16, not %s", sf_dtype_name(dtype)), NULL;
    if (sf_mkdirs(dir) != SF_OK) return NULL;
    if (access(dir, W_OK) != 0) return sf_fail("cannot write to %s: %s", dir, strerror(errno)), NULL;
    sh_writer *w = sf_zalloc("a shard writer", 1, sizeof *w);
    if (!w) return NULL;
    w->dir = strdup(dir);
    pthread_mutex_init(&w->m_lock, NULL);
    w->lock_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (w->lock_fd < 0 || flock(w->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        sf_fail("%s: %s", dir, errno == EWOULDBLOCK ? "another writer is using this directory" : strerror(errno));
        goto fail;
    }
    w->dtype = dtype;
    w->skipped_upstream = skipped_upstream;
    w->shard_bytes = shard_bytes ? shard_bytes : 1;
    int rc = sh_manifest_load(dir, &w->m);
    if (rc == SF_ERR) goto fail;
    if (rc == SF_OK) {
        if (!resume && w->m.nshards) {
            sf_fail("%s already holds %zu shards and resume is off: use another directory", dir, w->m.nshards);
            goto fail;
        }
        if (w->m.run.dtype != dtype) {
            sf_fail("%s holds %s shards; this run writes %s: refusing to mix them (use another directory)", dir,
                    sf_dtype_name(w->m.run.dtype), sf_dtype_name(dtype));
            goto fail;
        }
        w->have_run = 1;
    }
    w->m.run.dtype = dtype;
    /* The shards a resumed run keeps were written by another run: each must still be what the
     * manifest recorded (size and CRC-32), or the directory would be completed around a damaged
     * shard. This reads them once; their keys are read next, from the page cache. */
    for (size_t i = 0; i < w->m.nshards; i++) {
        const sh_shard_info *si = &w->m.shards[i];
        char path[4400];
        uint32_t crc;
        int64_t bytes;
        snprintf(path, sizeof path, "%s/%s", dir, si->file);
        if (sh_file_crc(path, &crc, &bytes) != SF_OK || sh_shard_check_crc(path, si, crc, bytes) != SF_OK) {
            sf_fail("resuming %s: %s. The stored activations are damaged: extract into another directory (or "
                    "delete this one and start again)", dir, sf_last_error());
            goto fail;
        }
    }
    if (remove_leftovers(w) != SF_OK || load_keys(w) != SF_OK) goto fail;
    w->next_index = w->m.nshards;
    return w;
fail:
    sh_writer_free(w);
    return NULL;
}

void sh_writer_stats(const sh_writer *w, int64_t *skipped_seqs, int64_t *rows, int64_t *shards) {
    *skipped_seqs = w->keys_seen;
    *rows = w->rows_written;
    *shards = w->shards_written;
}

/* Checks the batch's run identity against the directory's (or adopts it). */
static int check_run(sh_writer *w, const sh_batch *b, int64_t d) {
    sh_run *r = &w->m.run;
    const char *corpus = b->corpus ? b->corpus : "";
    if (!w->have_run) {
        r->model = strdup(b->model);
        r->checkpoint = strdup(b->checkpoint);
        r->hook = strdup(b->hook);
        r->layer = b->layer;
        r->d = d;
        r->corpus = *corpus ? strdup(corpus) : NULL;
        w->have_run = 1;
        return SF_OK;
    }
    if (strcmp(r->model, b->model) || strcmp(r->checkpoint, b->checkpoint) || !sf_same_hook(r->hook, b->hook) ||
        r->layer != b->layer || r->d != d)
        return sf_fail("%s holds model '%s' checkpoint '%s' hook '%s' layer %lld d %lld, but this input is "
                       "model '%s' checkpoint '%s' hook '%s' layer %lld d %lld: refusing to mix runs (use another "
                       "directory)",
                       w->dir, r->model, r->checkpoint, r->hook, (long long)r->layer, (long long)r->d, b->model,
                       b->checkpoint, b->hook, (long long)b->layer, (long long)d);
    if (!*corpus) return SF_OK; /* this input names no corpus: nothing to check */
    if (!r->corpus) {               /* nor did the stored run's (or there is none yet) */
        pthread_mutex_lock(&w->m_lock);
        r->corpus = strdup(corpus);
        pthread_mutex_unlock(&w->m_lock);
    } else if (strcmp(r->corpus, corpus) != 0)
        return sf_fail("%s holds sequences of the corpus %s, but this input is of corpus %s (other files, or "
                       "changed ones): refusing to mix runs (use another directory, or the stored run's corpus)",
                       w->dir, r->corpus, corpus);
    return SF_OK;
}

/* Room for `rows` more rows; hint: the rows of a full shard, so one allocation usually lasts
 * (a shard overshoots it by less than one sequence). */
static int rows_reserve(sh_rows *r, int64_t rows, size_t acts_row, int64_t hint) {
    int64_t need = r->n + rows;
    if (need <= r->c.cap) return SF_OK;
    return sh_cols_reserve(&r->c, need < hint ? hint : need + need / 8, acts_row);
}

/* The shard is on disk (fsync'd): its pages leave the page cache, so a long extraction does not
 * evict everything else, and the next shard reuses them instead of growing the cache (which on
 * this VM costs ~8 ms per MB of never-used memory). */
static void drop_cache(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
}

/* Flusher thread: writes the shard, then the manifest that names it. */
static int flush_write(sh_writer *w) {
    sh_flush *f = &w->fl;
    const sh_rows *r = &f->rows;
    const sh_run *run = &w->m.run;
    sh_shard_info si = {0};
    snprintf(si.file, sizeof si.file, "%s-%06zu.safetensors", f->split, f->index);
    snprintf(si.split, sizeof si.split, "%s", f->split);
    char path[4400], num[32];
    snprintf(path, sizeof path, "%s/%s", w->dir, si.file);

    sf_st_writer *st = sf_st_writer_new();
    int64_t shape[2] = {r->n, run->d};
    /* Widest alignment first, so every tensor starts aligned to its element size (d even). */
    sf_st_writer_add(st, "doc_id", SF_I64, 1, shape, r->c.doc_id);
    sf_st_writer_add(st, "seq", SF_I64, 1, shape, r->c.seq);
    sf_st_writer_add(st, "acts", w->dtype, 2, shape, r->c.acts);
    sf_st_writer_add(st, "tokens", SF_I32, 1, shape, r->c.tokens);
    sf_st_writer_add(st, "pos", SF_I32, 1, shape, r->c.pos);
    sf_st_writer_add(st, "label", SF_U8, 1, shape, r->c.label);
    sf_st_writer_meta(st, "format", SH_FORMAT);
    sf_st_writer_meta(st, "model", run->model);
    sf_st_writer_meta(st, "checkpoint", run->checkpoint);
    sf_st_writer_meta(st, "hook", run->hook);
    snprintf(num, sizeof num, "%lld", (long long)run->layer);
    sf_st_writer_meta(st, "layer", num);
    sf_st_writer_meta(st, "split", f->split);
    sf_st_writer_meta(st, "labels", f->labels_json);
    int rc = sf_st_writer_save(st, path, &si.crc32);
    sf_st_writer_free(st);
    struct stat sb;
    if (rc == SF_OK && stat(path, &sb) != 0) rc = sf_fail("%s: %s", path, strerror(errno));
    if (rc != SF_OK) return SF_ERR;
    drop_cache(path);
    si.bytes = sb.st_size;
    si.count = r->n;
    si.sequences = r->nseq;
    si.first_seq = r->first_seq;
    si.last_seq = r->last_seq;
    si.norm_sum = r->norm_sum;
    si.norm_sq_sum = r->norm_sq_sum;

    sh_manifest *m = &w->m;
    pthread_mutex_lock(&w->m_lock);
    if (m->nshards == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 64;
        sh_shard_info *grown = sf_realloc(m->shards, "the manifest's shard list", cap, sizeof *m->shards);
        if (!grown) {
            pthread_mutex_unlock(&w->m_lock);
            return SF_ERR; /* the shard file stays an orphan; the next run removes it */
        }
        m->shards = grown;
        m->cap = cap;
    }
    m->shards[m->nshards++] = si;
    m->complete = 0;
    rc = sh_manifest_save(w->dir, m);
    if (rc != SF_OK) m->nshards--; /* the shard file stays an orphan; the next run removes it */
    pthread_mutex_unlock(&w->m_lock);
    return rc;
}

static void *flusher_main(void *arg) {
    sh_writer *w = arg;
    w->fl.rc = flush_write(w);
    if (w->fl.rc != SF_OK) snprintf(w->fl.err, sizeof w->fl.err, "%s", sf_last_error());
    return NULL;
}

/* Waits for the shard in flight; its error becomes the caller's. */
static int flush_wait(sh_writer *w) {
    sh_flush *f = &w->fl;
    if (!f->active) return SF_OK;
    pthread_join(f->thread, NULL);
    f->active = 0;
    free(f->labels_json);
    f->labels_json = NULL;
    if (f->rc != SF_OK) {
        w->failed = 1;
        return sf_fail("%s", f->err);
    }
    w->rows_written += f->rows.n;
    w->shards_written++;
    return SF_OK;
}

/* Hands the pending rows of s to the flusher thread as the next shard. */
static int flush_split(sh_writer *w, sh_split *s) {
    if (s->rows.n == 0) return SF_OK;
    if (flush_wait(w) != SF_OK) return SF_ERR;
    sh_flush *f = &w->fl;
    sh_rows t = f->rows;
    f->rows = s->rows;
    s->rows = t;
    s->rows.n = s->rows.nseq = 0;
    s->rows.norm_sum = s->rows.norm_sq_sum = 0;
    snprintf(f->split, sizeof f->split, "%s", s->name);
    f->index = w->next_index++;
    json_t *labels = json_array();
    for (size_t i = 0; i < w->m.nlabels; i++) json_array_append_new(labels, json_string(w->m.labels[i]));
    f->labels_json = json_dumps(labels, JSON_COMPACT);
    json_decref(labels);
    if (!f->labels_json) {
        w->failed = 1;
        return sf_fail("out of memory writing the label list of a shard");
    }
    if (pthread_create(&f->thread, NULL, flusher_main, w) != 0) {
        w->failed = 1;
        return sf_fail("cannot start the shard flusher thread");
    }
    f->active = 1;
    return SF_OK;
}

/* Sum of squares in double, over 8 independent accumulators so it is not one long chain of
 * dependent adds. */
static double sum_squares(const float *x, int64_t d) {
    double acc[8] = {0};
    int64_t j = 0;
    for (; j + 8 <= d; j += 8)
        for (int k = 0; k < 8; k++) acc[k] += (double)x[j + k] * x[j + k];
    for (; j < d; j++) acc[0] += (double)x[j] * x[j];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

int sh_writer_add(sh_writer *w, const sh_batch *b) {
    if (w->failed) return sf_fail("an earlier write failed; not writing more");
    const sf_tensor *a = &b->acts;
    if (a->ndim != 3 || (a->dtype != SF_F32 && a->dtype != SF_BF16 && a->dtype != SF_F16))
        return sf_fail("acts must be a [B, T, d] F32, BF16 or F16 tensor");
    int64_t B = a->shape[0], T = a->shape[1], d = a->shape[2];
    if (B == 0 || T == 0) return SF_OK;
    if (d <= 0 || d > (1 << 24)) return sf_fail("acts width d = %lld is out of range", (long long)d);
    if (sh_name_ok(b->split, strlen(b->split)) != SF_OK)
        return sf_fail("split '%s' is not a usable name ([A-Za-z0-9_.-], under 64 bytes)", b->split);
    if (check_run(w, b, d) != SF_OK) return SF_ERR;
    sh_split *s = split_get(w, b->split);
    if (!s) return SF_ERR;

    size_t td = (size_t)T * (size_t)d, in_size = sf_dtype_size(a->dtype), out_size = sf_dtype_size(w->dtype);
    if (w->f32_cap < td) { /* scratch: nothing to keep */
        free(w->f32);
        w->f32_cap = 0;
        if (!(w->f32 = sf_alloc("a sequence's float32 activations", td, sizeof(float)))) return SF_ERR;
        w->f32_cap = td;
    }
    for (int64_t i = 0; i < B; i++) {
        int64_t doc;
        int32_t pos;
        memcpy(&doc, (const char *)b->doc_id + 8 * i, 8);
        memcpy(&pos, (const char *)b->pos + 4 * i, 4);
        int label = sh_manifest_label_index(&w->m, b->label[i], b->label_len[i]);
        if (label < 0) {
            if (sh_name_ok(b->label[i], b->label_len[i]) != SF_OK)
                return sf_fail("label '%.*s' is not a usable name", (int)b->label_len[i], b->label[i]);
            if (w->m.nlabels == SH_MAX_LABELS) return sf_fail("more than %d distinct labels", SH_MAX_LABELS);
            char *name = sf_alloc("a label", b->label_len[i] + 1, 1);
            pthread_mutex_lock(&w->m_lock);
            char **labels = name ? sf_realloc(w->m.labels, "the label list", w->m.nlabels + 1, sizeof *w->m.labels) : NULL;
            if (labels) {
                w->m.labels = labels;
                memcpy(name, b->label[i], b->label_len[i]);
                name[b->label_len[i]] = 0;
                w->m.labels[w->m.nlabels] = name;
                label = (int)w->m.nlabels++;
            }
            pthread_mutex_unlock(&w->m_lock);
            if (!labels) {
                free(name);
                return SF_ERR;
            }
        }
        sh_key *k = sh_keys_find(&w->keys, doc, pos);
        if (k && !sh_key_same_tokens(k, (const char *)b->tokens + (size_t)i * T * 4, T))
            return sf_fail("%s already holds a sequence of %d rows for document %lld, tokens from %d, with other tokens "
                           "than this input's %lld: it is not the input of the stored run (another corpus version, "
                           "tokenizer or seq_len?): refusing to mix runs (use another directory)",
                           w->dir, (int)k->rows, (long long)doc, (int)pos, (long long)T);
        if (k && !(k->val & 1)) { /* already on disk from an earlier run */
            k->val |= 1;
            w->keys_seen++;
            continue;
        }
        int64_t seq = w->next_seq++;
        sh_rows *r = &s->rows;
        if (rows_reserve(r, T, (size_t)d * out_size, (int64_t)(w->shard_bytes / sh_row_bytes(&w->m.run)) + 1) != SF_OK)
            return SF_ERR;
        /* F32 is converted straight into the shard buffer (aligned: malloc'd, rows of 4d bytes);
         * the other dtypes round from a float32 copy, which the norms are computed from. */
        uint8_t *dst = r->c.acts + (size_t)r->n * d * out_size;
        float *x32 = w->dtype == SF_F32 ? (float *)(void *)dst : w->f32;
        sf_convert_to_f32(x32, (const char *)a->data + (size_t)i * td * in_size, a->dtype, td);
        if (w->dtype != SF_F32) sf_convert_from_f32(dst, w->dtype, x32, td);
        memcpy(r->c.tokens + r->n, (const char *)b->tokens + (size_t)i * T * 4, (size_t)T * 4);
        for (int64_t t = 0; t < T; t++) {
            double sq = sum_squares(x32 + t * d, d);
            r->norm_sum += sqrt(sq);
            r->norm_sq_sum += sq;
            r->c.doc_id[r->n + t] = doc;
            r->c.pos[r->n + t] = pos + (int32_t)t;
            r->c.label[r->n + t] = (uint8_t)label;
            r->c.seq[r->n + t] = seq;
        }
        if (r->nseq == 0) r->first_seq = seq;
        r->nseq++;
        r->n += T;
        r->last_seq = seq;
        if ((size_t)r->n * sh_row_bytes(&w->m.run) >= w->shard_bytes && flush_split(w, s) != SF_OK) return SF_ERR;
    }
    return SF_OK;
}

int sh_writer_close(sh_writer *w, int at_end) {
    if (w->failed) return SF_ERR;
    for (int i = 0; i < w->nsplits; i++)
        if (flush_split(w, &w->splits[i]) != SF_OK) return SF_ERR;
    if (flush_wait(w) != SF_OK || !at_end) return w->failed ? SF_ERR : SF_OK;
    if (!w->skipped_upstream && w->keys_seen < (int64_t)w->keys.n)
        return sf_fail("the input ended, but %lld of the %zu sequences %s already holds never arrived: it is not the "
                       "input of the stored run (a source that skips them needs skipped_upstream = true)",
                       (long long)((int64_t)w->keys.n - w->keys_seen), w->keys.n, w->dir);
    if (!w->have_run) { /* a fresh directory and nothing to store: an empty result would look like one */
        rmdir(w->dir); /* only if empty, as it was made */
        return sf_fail("no activations arrived: nothing written to %s. Check the upstream stages' errors and "
                       "counters (documents of the split, the hook)", w->dir);
    }
    w->m.complete = 1;
    return sh_manifest_save(w->dir, &w->m);
}

void sh_writer_free(sh_writer *w) {
    if (!w) return;
    if (w->fl.active) pthread_join(w->fl.thread, NULL);
    free(w->fl.labels_json);
    sh_cols_free(&w->fl.rows.c);
    for (int i = 0; i < w->nsplits; i++) sh_cols_free(&w->splits[i].rows.c);
    pthread_mutex_destroy(&w->m_lock);
    sh_manifest_free(&w->m);
    sh_keys_free(&w->keys);
    free(w->f32);
    free(w->dir);
    if (w->lock_fd >= 0) close(w->lock_fd); /* releases the lock */
    free(w);
}
