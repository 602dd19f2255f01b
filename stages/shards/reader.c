/* The shard reader: replays the shards of one split, either as whole sequences in stored order
 * or as single rows drawn at random from a bounded shuffle buffer, for a number of epochs.
 *
 * Shuffling is two-level, as training data loaders do: the shard order is permuted every epoch,
 * and rows pass through a buffer of buffer_rows rows from which each emitted row is drawn
 * uniformly and replaced by the next incoming row. Every row is emitted exactly once per epoch;
 * the buffer is drained at the end of an epoch so epochs do not mix.
 *
 * The buffer holds references (shard, row), not the rows: the shards it refers to stay mapped
 * (and in the page cache) until their last row has been drawn, and a drawn row is copied once,
 * straight from its shard into the batch. Copying each row into the buffer and out again cost
 * two extra passes over a buffer far larger than the caches; the stream is the same rows in the
 * same order as that did (the same draws of the same generator). */
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sf_safetensors.h"
#include "shards.h"

/* ---- one shard ---- */

int sh_file_crc(const char *path, uint32_t *crc, int64_t *bytes) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sf_fail("%s: %s", path, strerror(errno));
    posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    enum { CHUNK = 1 << 20 };
    unsigned char *buf = sf_alloc("a CRC read buffer", CHUNK, 1);
    if (!buf) {
        close(fd);
        return SF_ERR;
    }
    uint32_t c = 0;
    int64_t total = 0;
    int rc = SF_OK;
    for (;;) {
        ssize_t k = read(fd, buf, CHUNK);
        if (k < 0 && errno == EINTR) continue;
        if (k < 0) {
            rc = sf_fail("%s: %s", path, strerror(errno));
            break;
        }
        if (k == 0) break;
        if (crc) c = sf_crc32(c, buf, (size_t)k); /* ISA-L: it decides how fast a verified read goes */
        total += k;
    }
    free(buf);
    close(fd);
    if (crc) *crc = c;
    *bytes = total;
    return rc;
}

/* Reads the next shard on a thread of its own, computing its CRC-32, while the current one is
 * replayed: the disk and the checksum then overlap the replay instead of following it. */
typedef struct sh_prefetch {
    pthread_t thread;
    int active;      /* started and not yet joined */
    int crc;         /* compute the CRC (verify), else only bring the file into the page cache */
    size_t shard;    /* manifest index of the shard read */
    int ok;          /* after the join: crc and bytes hold the file's */
    uint32_t sum;
    int64_t bytes;
    char path[4400];
} sh_prefetch;

static void *prefetch_main(void *arg) {
    sh_prefetch *p = arg;
    p->ok = sh_file_crc(p->path, p->crc ? &p->sum : NULL, &p->bytes) == SF_OK && p->crc;
    return NULL;
}

static void prefetch_wait(sh_prefetch *p) {
    if (p->active) pthread_join(p->thread, NULL);
    p->active = 0;
}

static void prefetch_start(sh_prefetch *p, const char *dir, const sh_manifest *m, size_t shard, int crc) {
    prefetch_wait(p);
    snprintf(p->path, sizeof p->path, "%s/%s", dir, m->shards[shard].file);
    p->shard = shard;
    p->crc = crc;
    p->ok = 0;
    p->active = pthread_create(&p->thread, NULL, prefetch_main, p) == 0;
}

int sh_shard_check_crc(const char *path, const sh_shard_info *si, uint32_t crc, int64_t bytes) {
    if (bytes != si->bytes)
        return sf_fail("shard %s is %lld bytes, the manifest says %lld: truncated or replaced", path,
                       (long long)bytes, (long long)si->bytes);
    if (crc != si->crc32)
        return sf_fail("shard %s is corrupt: CRC-32 %08x, the manifest says %08x", path, crc, si->crc32);
    return SF_OK;
}

/* The tensor `name` of f, checked to be `dtype` of shape [n] (or [n, d] if d > 0). */
static const uint8_t *shard_tensor(sf_st_file *f, const char *path, const char *name, sf_dtype dtype, int64_t n,
                                   int64_t d) {
    const sf_st_tensor *t = sf_st_find(f, name);
    int ndim = d > 0 ? 2 : 1;
    if (!t) return sf_fail("%s: no tensor '%s'", path, name), NULL;
    if (t->t.dtype != dtype || t->t.ndim != ndim || t->t.shape[0] != n || (d > 0 && t->t.shape[1] != d))
        return sf_fail("%s: tensor '%s' is not %s [%lld%s] as the manifest says", path, name, sf_dtype_name(dtype),
                       (long long)n, d > 0 ? ", d" : ""),
               NULL;
    return t->t.data;
}

/* Maps the activations' pages in one call instead of one fault per 64 KiB as they are copied
 * (the pages are in the page cache already, read by the prefetch thread). Best effort. */
static void populate(const void *p, size_t n) {
#ifdef MADV_POPULATE_READ
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)4095, e = (uintptr_t)p + n;
    if (n) madvise((void *)a, e - a, MADV_POPULATE_READ);
#else
    (void)p, (void)n;
#endif
}

int sh_shard_open(const char *dir, const sh_manifest *m, const sh_shard_info *si, int verify, sh_shard *s) {
    memset(s, 0, sizeof *s);
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", dir, si->file);
    struct stat st;
    if (stat(path, &st) != 0) return sf_fail("shard %s: %s", path, strerror(errno));
    if (st.st_size != si->bytes)
        return sf_fail("shard %s is %lld bytes, the manifest says %lld: truncated or replaced", path,
                       (long long)st.st_size, (long long)si->bytes);
    if (verify) {
        uint32_t crc;
        int64_t bytes;
        if (sh_file_crc(path, &crc, &bytes) != SF_OK || sh_shard_check_crc(path, si, crc, bytes) != SF_OK)
            return SF_ERR;
    }
    sf_st_file *f = sf_st_open(path);
    if (!f) return sf_fail("shard %s: %s", si->file, sf_last_error());
    s->file = f;
    s->n = si->count;
    if (!(s->acts = shard_tensor(f, path, "acts", m->run.dtype, s->n, m->run.d)) ||
        !(s->tokens = shard_tensor(f, path, "tokens", SF_I32, s->n, 0)) ||
        !(s->doc_id = shard_tensor(f, path, "doc_id", SF_I64, s->n, 0)) ||
        !(s->pos = shard_tensor(f, path, "pos", SF_I32, s->n, 0)) ||
        !(s->label = shard_tensor(f, path, "label", SF_U8, s->n, 0)) ||
        !(s->seq = shard_tensor(f, path, "seq", SF_I64, s->n, 0)))
        goto fail;
    /* Sequences are runs of equal, increasing seq numbers within the manifest's range; labels
     * index the manifest's list. Checked once here so the iteration below can trust them. */
    int64_t prev = -1, nseq = 0;
    for (int64_t i = 0; i < s->n; i++) {
        int64_t q;
        memcpy(&q, s->seq + 8 * i, 8);
        if (q != prev) {
            if (q < prev || q < si->first_seq || q > si->last_seq) {
                sf_fail("shard %s: sequence numbers out of order or outside the manifest's range", path);
                goto fail;
            }
            prev = q;
            nseq++;
        }
        if (s->label[i] >= m->nlabels) {
            sf_fail("shard %s: label index %u but the manifest lists %zu labels", path, s->label[i], m->nlabels);
            goto fail;
        }
    }
    if (nseq != si->sequences) {
        sf_fail("shard %s holds %lld sequences, the manifest says %lld", path, (long long)nseq,
                (long long)si->sequences);
        goto fail;
    }
    return SF_OK;
fail:
    sh_shard_close(s);
    return SF_ERR;
}

void sh_shard_close(sh_shard *s) {
    sf_st_close(s->file);
    memset(s, 0, sizeof *s);
}

/* ---- the reader ---- */

#define SH_AHEAD 8 /* draws made ahead of the copy that needs them */

struct sh_reader {
    char *dir;
    sh_reader_opts o;
    sh_manifest m;
    size_t acts_row; /* bytes of one activation row */
    size_t *shards;  /* indices into m.shards this reader reads */
    size_t nshards;
    size_t *order;   /* this epoch's shard order */
    int64_t epoch;
    size_t next_shard; /* position in order */
    sh_shard cur;      /* open shard, cur.file == NULL if none */
    sh_prefetch pf;    /* reading the shard after cur */
    int64_t row;       /* next row in cur */
    uint64_t rng[4];
    /* shuffled mode: the shards with rows in the buffer (cur is a view of pool[cur_slot]) */
    struct sh_pooled { sh_shard s; int64_t refs; } *pool;
    int npool, cur_slot; /* cur_slot -1: cur is not from the pool */
    int32_t *buf_slot;   /* shuffle buffer [buffer_rows]: row buf_row[i] of pool[buf_slot[i]] */
    int64_t *buf_row;
    int64_t buf_n;
    int64_t input_left;  /* rows of this epoch not yet put into the buffer */
    int64_t ahead[SH_AHEAD]; /* the next draws, made early so their rows are prefetched (ring) */
    int ahead_head, ahead_n;
    sh_cols out;
    int started;
};

/* Copies row i of shard s into row j of c (per-row pos, doc_id, seq: callers keep what they need). */
static void row_from_shard(sh_cols *c, int64_t j, const sh_shard *s, int64_t i, size_t acts_row) {
    memcpy(c->acts + (size_t)j * acts_row, s->acts + (size_t)i * acts_row, acts_row);
    memcpy(&c->tokens[j], s->tokens + 4 * i, 4);
    memcpy(&c->pos[j], s->pos + 4 * i, 4);
    memcpy(&c->doc_id[j], s->doc_id + 8 * i, 8);
    memcpy(&c->seq[j], s->seq + 8 * i, 8);
    c->label[j] = s->label[i];
}


/* xoshiro256** seeded through splitmix64. */
static uint64_t splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(uint64_t *s) {
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* Uniform in [0, n), without modulo bias (Lemire). */
static uint64_t rng_below(uint64_t *s, uint64_t n) {
    unsigned __int128 m = (unsigned __int128)rng_next(s) * n;
    if ((uint64_t)m < n) {
        uint64_t t = -n % n;
        while ((uint64_t)m < t) m = (unsigned __int128)rng_next(s) * n;
    }
    return (uint64_t)(m >> 64);
}

static void start_epoch(sh_reader *r) {
    for (size_t i = 0; i < r->nshards; i++) r->order[i] = r->shards[i];
    if (r->o.shuffle)
        for (size_t i = r->nshards; i > 1; i--) { /* Fisher-Yates */
            size_t j = (size_t)rng_below(r->rng, i), t = r->order[i - 1];
            r->order[i - 1] = r->order[j];
            r->order[j] = t;
        }
    r->next_shard = 0;
    r->input_left = 0;
    for (size_t i = 0; i < r->nshards; i++) r->input_left += r->m.shards[r->order[i]].count;
}

sh_reader *sh_reader_open(const char *dir, const sh_reader_opts *o) {
    if (o->epochs < 1 || o->parts < 1 || o->part < 0 || o->part >= o->parts || o->buffer_rows < 1 ||
        o->batch_rows < 1 || o->batch_seqs < 1)
        return sf_fail("reader options out of range (epochs, parts, buffer_rows, batch_rows, batch_seqs >= 1)"), NULL;
    if (sh_name_ok(o->split, strlen(o->split)) != SF_OK) return sf_fail("bad split name '%s'", o->split), NULL;
    sh_reader *r = sf_zalloc("a shard reader", 1, sizeof *r);
    if (!r) return NULL;
    r->o = *o;
    if (!(r->dir = sf_strdup("a directory path", dir))) goto fail;
    r->o.split = NULL; /* not kept: the caller's string */
    int rc = sh_manifest_load(dir, &r->m);
    if (rc == SF_DONE) sf_fail("%s/manifest.json: no such file: not a shard directory, or no shard was completed", dir);
    if (rc != SF_OK) goto fail;
    r->acts_row = (size_t)r->m.run.d * sf_dtype_size(r->m.run.dtype);
    r->shards = sf_alloc("the shard list", r->m.nshards + 1, sizeof *r->shards);
    r->order = sf_alloc("the shard order", r->m.nshards + 1, sizeof *r->order);
    if (!r->shards || !r->order) goto fail;
    size_t in_split = 0;
    for (size_t i = 0; i < r->m.nshards; i++) {
        if (strcmp(r->m.shards[i].split, o->split) != 0) continue;
        if (in_split++ % (size_t)o->parts == (size_t)o->part) r->shards[r->nshards++] = i;
    }
    if (in_split == 0) {
        char have[512] = "";
        for (size_t i = 0; i < r->m.nshards; i++) {
            size_t j = 0;
            while (j < i && strcmp(r->m.shards[j].split, r->m.shards[i].split) != 0) j++;
            if (j == i && strlen(have) + strlen(r->m.shards[i].split) + 2 < sizeof have)
                strcat(strcat(have, " "), r->m.shards[i].split);
        }
        sf_fail("%s has no shards of split '%s' (it has:%s)", dir, o->split, have[0] ? have : " none");
        goto fail;
    }
    if (r->nshards == 0)
        sf_log(SF_LOG_WARN, "%s: split '%s' has %zu shards, none for part %d of %d", dir, o->split, in_split, o->part,
               o->parts);
    /* Each part gets its own stream: mix the part into the seed. */
    uint64_t x = o->seed ^ (0x632be59bd9b4e019ull * (uint64_t)(o->part + 1));
    for (int i = 0; i < 4; i++) r->rng[i] = splitmix(&x);
    r->cur_slot = -1;
    if (o->shuffle && (!(r->buf_slot = sf_alloc("the shuffle buffer", (size_t)o->buffer_rows, sizeof *r->buf_slot)) ||
                       !(r->buf_row = sf_alloc("the shuffle buffer", (size_t)o->buffer_rows, sizeof *r->buf_row)))) {
        sf_fail("%s (buffer_rows = %lld: lower it)", sf_last_error(), (long long)o->buffer_rows);
        goto fail;
    }
    start_epoch(r);
    return r;
fail:
    sh_reader_free(r);
    return NULL;
}

const sh_manifest *sh_reader_manifest(const sh_reader *r) { return &r->m; }

int64_t sh_reader_rows_per_epoch(const sh_reader *r) {
    int64_t n = 0;
    for (size_t i = 0; i < r->nshards; i++) n += r->m.shards[r->shards[i]].count;
    return n;
}

/* A pool slot for the shard about to be opened (shuffled mode). -1: out of memory. */
static int pool_slot(sh_reader *r) {
    for (int i = 0; i < r->npool; i++)
        if (!r->pool[i].s.file) return i;
    struct sh_pooled *p = sf_realloc(r->pool, "the list of open shards", (size_t)r->npool + 1, sizeof *p);
    if (!p) return -1;
    r->pool = p;
    memset(&r->pool[r->npool], 0, sizeof *r->pool);
    return r->npool++;
}

/* One buffered row of pool slot i was drawn: the shard is closed after its last one, unless it
 * is still being read. */
static void pool_unref(sh_reader *r, int i) {
    if (--r->pool[i].refs == 0 && i != r->cur_slot) sh_shard_close(&r->pool[i].s);
}

/* Done with the current shard: closed, or (shuffled) left to the pool while the buffer holds
 * rows of it. */
static void release_cur(sh_reader *r) {
    if (r->cur_slot < 0) {
        sh_shard_close(&r->cur);
        return;
    }
    int i = r->cur_slot;
    r->cur_slot = -1;
    memset(&r->cur, 0, sizeof r->cur); /* a view: the pool owns the mapping */
    if (r->pool[i].refs == 0) sh_shard_close(&r->pool[i].s);
}

/* Makes a row available in r->cur at r->row, opening the next shard of the epoch if needed.
 * SF_OK, SF_DONE at the end of the epoch's shards, SF_ERR. */
static int input_ready(sh_reader *r) {
    while (!r->cur.file || r->row >= r->cur.n) {
        if (r->cur.file) release_cur(r);
        if (r->next_shard == r->nshards) return SF_DONE;
        size_t k = r->order[r->next_shard++];
        const sh_shard_info *si = &r->m.shards[k];
        if (!r->pf.active || r->pf.shard != k) prefetch_start(&r->pf, r->dir, &r->m, k, r->o.verify);
        prefetch_wait(&r->pf);
        /* Checked against the prefetched CRC; if the thread could not read it, the shard is
         * opened with the check done here, which reports the error. */
        if (r->pf.ok && sh_shard_check_crc(r->pf.path, si, r->pf.sum, r->pf.bytes) != SF_OK) return SF_ERR;
        if (sh_shard_open(r->dir, &r->m, si, r->o.verify && !r->pf.ok, &r->cur) != SF_OK) return SF_ERR;
        if (r->o.shuffle) {
            int i = pool_slot(r);
            if (i < 0) {
                sh_shard_close(&r->cur);
                return SF_ERR;
            }
            r->pool[i].s = r->cur;
            r->pool[i].refs = 0;
            r->cur_slot = i;
        }
        populate(r->cur.acts, (size_t)r->cur.n * r->acts_row);
        if (r->next_shard < r->nshards) prefetch_start(&r->pf, r->dir, &r->m, r->order[r->next_shard], r->o.verify);
        r->row = 0;
    }
    return SF_OK;
}

/* Whole sequences of equal length, in order, never across a shard boundary. */
static int next_in_order(sh_reader *r, sh_out *out) {
    int rc = input_ready(r);
    if (rc != SF_OK) return rc;
    const sh_shard *s = &r->cur;
    int64_t start = r->row, T = 0, B = 0;
    int64_t q0, q;
    memcpy(&q0, s->seq + 8 * start, 8);
    while (start + T < s->n && (memcpy(&q, s->seq + 8 * (start + T), 8), q == q0)) T++;
    int64_t end = start;
    /* Take following sequences while they have the same length. */
    while (B < r->o.batch_seqs && end + T <= s->n) {
        int64_t a, z;
        memcpy(&a, s->seq + 8 * end, 8);
        memcpy(&z, s->seq + 8 * (end + T - 1), 8);
        if (a != z || (end + T < s->n && (memcpy(&q, s->seq + 8 * (end + T), 8), q == a))) break;
        B++;
        end += T;
    }
    if (sh_cols_reserve(&r->out, B * T, r->acts_row) != SF_OK) return SF_ERR;
    memcpy(r->out.acts, s->acts + (size_t)start * r->acts_row, (size_t)(B * T) * r->acts_row);
    memcpy(r->out.tokens, s->tokens + 4 * start, (size_t)(B * T) * 4);
    for (int64_t b = 0; b < B; b++) {
        int64_t i = start + b * T;
        memcpy(&r->out.doc_id[b], s->doc_id + 8 * i, 8);
        memcpy(&r->out.pos[b], s->pos + 4 * i, 4);
        memcpy(&r->out.seq[b], s->seq + 8 * i, 8);
        r->out.label[b] = s->label[i];
    }
    r->row = end;
    out->B = B;
    out->T = T;
    return SF_OK;
}

/* Rows drawn from the shuffle buffer, refilled from the input. SF_DONE: the epoch is over. */
/* Puts the next input row into buffer slot i (a reference to it). */
static void buffer_put(sh_reader *r, int64_t i) {
    r->buf_slot[i] = r->cur_slot;
    r->buf_row[i] = r->row++;
    r->pool[r->cur_slot].refs++;
    r->input_left--;
}

/* The buffer index of the next draw. Draws are made up to SH_AHEAD steps early, and the row each
 * names is prefetched, so the copy does not wait for memory. A draw depends only on the buffer's
 * size, which stays the same while input rows remain to refill it: a draw is made early only for a
 * step that many input rows still cover, so the draws, and the stream, are those made on time. */
static int64_t next_draw(sh_reader *r) {
    int64_t i;
    if (r->ahead_n) {
        i = r->ahead[r->ahead_head];
        r->ahead_head = (r->ahead_head + 1) % SH_AHEAD;
        r->ahead_n--;
    } else {
        i = (int64_t)rng_below(r->rng, (uint64_t)r->buf_n);
    }
    /* after this step takes an input row (if any), ahead_n steps are queued before the new one */
    while (r->ahead_n < SH_AHEAD && r->input_left > r->ahead_n + 1) {
        int64_t j = (int64_t)rng_below(r->rng, (uint64_t)r->buf_n);
        r->ahead[(r->ahead_head + r->ahead_n++) % SH_AHEAD] = j;
        const uint8_t *row = r->pool[r->buf_slot[j]].s.acts + (size_t)r->buf_row[j] * r->acts_row;
        for (size_t b = 0; b < r->acts_row; b += 64) __builtin_prefetch(row + b);
    }
    return i;
}

static int next_shuffled(sh_reader *r, sh_out *out) {
    int rc = SF_OK;
    while (r->buf_n < r->o.buffer_rows && (rc = input_ready(r)) == SF_OK) buffer_put(r, r->buf_n++);
    if (rc == SF_ERR) return SF_ERR;
    if (r->buf_n == 0) return SF_DONE;
    if (sh_cols_reserve(&r->out, r->o.batch_rows, r->acts_row) != SF_OK) return SF_ERR;
    int64_t k = 0;
    while (k < r->o.batch_rows && r->buf_n > 0) {
        int64_t i = next_draw(r);
        int slot = r->buf_slot[i];
        row_from_shard(&r->out, k++, &r->pool[slot].s, r->buf_row[i], r->acts_row);
        rc = input_ready(r);
        if (rc == SF_ERR) return SF_ERR;
        if (rc == SF_OK) buffer_put(r, i);
        else {
            r->buf_n--;
            r->buf_slot[i] = r->buf_slot[r->buf_n];
            r->buf_row[i] = r->buf_row[r->buf_n];
        }
        pool_unref(r, slot);
    }
    out->B = k;
    out->T = 1;
    return SF_OK;
}

int sh_reader_next(sh_reader *r, sh_out *out) {
    memset(out, 0, sizeof *out);
    for (;;) {
        if (r->epoch >= r->o.epochs) return SF_DONE;
        int rc = r->o.shuffle ? next_shuffled(r, out) : next_in_order(r, out);
        if (rc == SF_ERR) return SF_ERR;
        if (rc == SF_OK) break;
        if (++r->epoch < r->o.epochs) start_epoch(r);
    }
    out->epoch = r->epoch;
    out->acts = r->out.acts;
    out->tokens = r->out.tokens;
    out->doc_id = r->out.doc_id;
    out->pos = r->out.pos;
    out->label = r->out.label;
    out->seq = r->out.seq;
    return SF_OK;
}

void sh_reader_free(sh_reader *r) {
    if (!r) return;
    prefetch_wait(&r->pf);
    if (r->cur.file) release_cur(r);
    for (int i = 0; i < r->npool; i++)
        if (r->pool[i].s.file) sh_shard_close(&r->pool[i].s);
    free(r->pool);
    free(r->buf_slot);
    free(r->buf_row);
    sh_cols_free(&r->out);
    sh_manifest_free(&r->m);
    free(r->shards);
    free(r->order);
    free(r->dir);
    free(r);
}
