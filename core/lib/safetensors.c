/* safetensors: an 8-byte little-endian header length, a JSON header naming each tensor's dtype,
 * shape and [begin, end) byte range in the data that follows, then the data. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef SF_HAVE_ISAL
#include <isa-l/crc.h>
#else
#include <zlib.h>
#endif

#include "sf_safetensors.h"

#define ST_MAX_HEADER (100u << 20) /* the reference implementation's limit */

struct sf_st_file {
    void *map;
    size_t map_len;
    json_t *header;
    sf_st_tensor *tensors;
    size_t count;
};

static int st_bad(const char *path, const char *what) {
    return sf_fail("%s: not a valid safetensors file: %s", path, what);
}

void sf_st_close(sf_st_file *f) {
    if (!f) return;
    if (f->map) munmap(f->map, f->map_len);
    json_decref(f->header);
    free(f->tensors);
    free(f);
}

/* Checks one header entry and fills t; data_len is the size of the data section. */
static int st_entry(const char *path, const char *name, json_t *v, const uint8_t *data, uint64_t data_len,
                    sf_st_tensor *t) {
    char what[512];
    json_t *dt = json_object_get(v, "dtype"), *shape = json_object_get(v, "shape"),
           *offs = json_object_get(v, "data_offsets");
    if (!json_is_string(dt) || !json_is_array(shape) || !json_is_array(offs) || json_array_size(offs) != 2) {
        snprintf(what, sizeof what, "tensor '%s' lacks dtype, shape or data_offsets", name);
        return st_bad(path, what);
    }
    if (sf_dtype_parse(json_string_value(dt), &t->t.dtype) != SF_OK) {
        snprintf(what, sizeof what, "tensor '%s' has unsupported dtype %s", name, json_string_value(dt));
        return st_bad(path, what);
    }
    if (json_array_size(shape) > SF_MAX_DIMS) {
        snprintf(what, sizeof what, "tensor '%s' has more than %d dimensions", name, SF_MAX_DIMS);
        return st_bad(path, what);
    }
    t->name = name;
    t->t.ndim = (int)json_array_size(shape);
    uint64_t nbytes = sf_dtype_size(t->t.dtype);
    char shape_text[200] = "[";
    for (int i = 0; i < t->t.ndim; i++) {
        json_t *d = json_array_get(shape, (size_t)i);
        if (!json_is_integer(d) || json_integer_value(d) < 0 || json_integer_value(d) > (1ll << 40)) {
            snprintf(what, sizeof what, "tensor '%s' has a bad dimension", name);
            return st_bad(path, what);
        }
        t->t.shape[i] = json_integer_value(d);
        size_t used = strlen(shape_text);
        snprintf(shape_text + used, sizeof shape_text - used, "%s%lld", i ? ", " : "", (long long)t->t.shape[i]);
        if (__builtin_mul_overflow(nbytes, (uint64_t)t->t.shape[i], &nbytes) || nbytes > data_len) {
            snprintf(what, sizeof what, "tensor '%s' (%s, shape [...%lld at dimension %d]) is larger than the file's data "
                     "(%llu bytes)", name, sf_dtype_name(t->t.dtype), (long long)t->t.shape[i], i,
                     (unsigned long long)data_len);
            return st_bad(path, what);
        }
    }
    strncat(shape_text, "]", sizeof shape_text - strlen(shape_text) - 1);
    json_t *b = json_array_get(offs, 0), *e = json_array_get(offs, 1);
    if (!json_is_integer(b) || !json_is_integer(e) || json_integer_value(b) < 0 ||
        json_integer_value(e) < json_integer_value(b)) {
        snprintf(what, sizeof what, "tensor '%s' has data_offsets that are not [begin, end] with 0 <= begin <= end", name);
        return st_bad(path, what);
    }
    uint64_t begin = (uint64_t)json_integer_value(b), end = (uint64_t)json_integer_value(e);
    if (end > data_len) {
        snprintf(what, sizeof what, "tensor '%s' has data_offsets [%llu, %llu] past the end of the data (%llu bytes): "
                 "file truncated?", name, (unsigned long long)begin, (unsigned long long)end, (unsigned long long)data_len);
        return st_bad(path, what);
    }
    if (end - begin != nbytes) {
        snprintf(what, sizeof what, "tensor '%s' is %s of shape %s, %llu bytes, but its data_offsets [%llu, %llu] hold %llu",
                 name, sf_dtype_name(t->t.dtype), shape_text, (unsigned long long)nbytes, (unsigned long long)begin,
                 (unsigned long long)end, (unsigned long long)(end - begin));
        return st_bad(path, what);
    }
    t->t.data = data + json_integer_value(b);
    t->t.nbytes = nbytes;
    return SF_OK;
}

static int st_by_offset(const void *a, const void *b) {
    const sf_st_tensor *x = *(const sf_st_tensor *const *)a, *y = *(const sf_st_tensor *const *)b;
    const uint8_t *xb = x->t.data, *yb = y->t.data;
    if (xb != yb) return xb < yb ? -1 : 1;
    return (x->t.nbytes > y->t.nbytes) - (x->t.nbytes < y->t.nbytes);
}

/* As the reference implementation (Metadata::validate): the tensors, in offset order, tile the data
 * section exactly, from 0 to its end. An overlap would make two tensors share bytes, a gap or a
 * tail would hide bytes no tensor owns (a polyglot file); either way the header lies. */
static int st_check_tiling(const char *path, const sf_st_file *f, const uint8_t *data, uint64_t data_len) {
    const sf_st_tensor **order = malloc((f->count ? f->count : 1) * sizeof *order);
    if (!order) return sf_fail("%s: out of memory sorting %zu tensors", path, f->count);
    for (size_t i = 0; i < f->count; i++) order[i] = &f->tensors[i];
    qsort(order, f->count, sizeof *order, st_by_offset);
    uint64_t at = 0;
    char what[600];
    int rc = SF_OK;
    for (size_t i = 0; i < f->count && rc == SF_OK; i++) {
        uint64_t begin = (uint64_t)((const uint8_t *)order[i]->t.data - data);
        if (begin != at) {
            snprintf(what, sizeof what,
                     "tensor '%s' starts at data offset %llu, but the tensors before it end at %llu (%s): "
                     "data_offsets must tile the data without overlaps or gaps",
                     order[i]->name, (unsigned long long)begin, (unsigned long long)at,
                     begin < at ? "an overlap" : "a gap");
            rc = st_bad(path, what);
        }
        at = begin + order[i]->t.nbytes;
    }
    if (rc == SF_OK && at != data_len) {
        snprintf(what, sizeof what, "the tensors end at data offset %llu but the data is %llu bytes (%s)",
                 (unsigned long long)at, (unsigned long long)data_len, "bytes no tensor owns after the last one");
        rc = st_bad(path, what);
    }
    free(order);
    return rc;
}

sf_st_file *sf_st_open(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return sf_fail("%s: %s", path, strerror(errno)), NULL;
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < 8) {
        close(fd);
        return st_bad(path, "shorter than its 8-byte header length"), NULL;
    }
    sf_st_file *f = calloc(1, sizeof *f);
    if (!f) {
        close(fd);
        return sf_fail("%s: out of memory opening it", path), NULL;
    }
    f->map_len = (size_t)st.st_size;
    f->map = mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        sf_fail("%s: mmap: %s", path, strerror(errno));
        goto fail;
    }
    const uint8_t *p = f->map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | p[i];
    if (hlen > ST_MAX_HEADER || hlen > f->map_len - 8) {
        st_bad(path, "header length runs past the end of the file (truncated?)");
        goto fail;
    }
    json_error_t jerr;
    f->header = json_loadb((const char *)p + 8, hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!f->header || !json_is_object(f->header)) {
        char what[300];
        snprintf(what, sizeof what, "header is not a JSON object (%s)", f->header ? "other JSON" : jerr.text);
        st_bad(path, what);
        goto fail;
    }
    const uint8_t *data = p + 8 + hlen;
    uint64_t data_len = f->map_len - 8 - hlen;
    f->tensors = calloc(json_object_size(f->header) + 1, sizeof *f->tensors);
    if (!f->tensors) {
        sf_fail("%s: out of memory for %zu tensor entries", path, json_object_size(f->header));
        goto fail;
    }
    const char *name;
    json_t *v;
    json_object_foreach(f->header, name, v) {
        if (strcmp(name, "__metadata__") == 0) {
            if (!json_is_object(v)) {
                st_bad(path, "__metadata__ is not an object");
                goto fail;
            }
            continue;
        }
        if (!json_is_object(v)) {
            st_bad(path, "a header entry is not an object");
            goto fail;
        }
        if (st_entry(path, name, v, data, data_len, &f->tensors[f->count]) != SF_OK) goto fail;
        f->count++;
    }
    if (st_check_tiling(path, f, data, data_len) != SF_OK) goto fail;
    return f;
fail:
    sf_st_close(f);
    return NULL;
}

size_t sf_st_count(const sf_st_file *f) { return f->count; }
const sf_st_tensor *sf_st_at(const sf_st_file *f, size_t i) { return i < f->count ? &f->tensors[i] : NULL; }

const sf_st_tensor *sf_st_find(const sf_st_file *f, const char *name) {
    for (size_t i = 0; i < f->count; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *sf_st_metadata(const sf_st_file *f, const char *key) {
    return json_string_value(json_object_get(json_object_get(f->header, "__metadata__"), key));
}

/* ---- writing ---- */

struct sf_st_writer {
    json_t *header, *meta;
    struct { sf_tensor t; } *items;
    size_t count, cap;
    uint64_t offset;
    char error[300]; /* the first add that failed (out of memory, a size overflowing): save refuses */
};

/* What sf_st_writer_new returns when even the writer cannot be allocated: adds are ignored and
 * save fails with its error (never written to). */
static sf_st_writer oom_writer = {.error = "out of memory allocating a safetensors writer"};

sf_st_writer *sf_st_writer_new(void) {
    sf_st_writer *w = calloc(1, sizeof *w);
    if (!w) return &oom_writer;
    w->header = json_object();
    w->meta = json_object();
    if (!w->header || !w->meta) snprintf(w->error, sizeof w->error, "out of memory creating a safetensors header");
    return w;
}

void sf_st_writer_free(sf_st_writer *w) {
    if (!w || w == &oom_writer) return;
    json_decref(w->header);
    json_decref(w->meta);
    free(w->items);
    free(w);
}

void sf_st_writer_add(sf_st_writer *w, const char *name, sf_dtype dtype, int ndim, const int64_t *shape,
                      const void *data) {
    if (w->error[0]) return;
    size_t nbytes;
    if (sf_tensor_size(name, dtype, ndim, shape, &nbytes) != SF_OK) {
        snprintf(w->error, sizeof w->error, "%s", sf_last_error());
        return;
    }
    if (w->count == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 16;
        void *items = sf_realloc(w->items, "safetensors writer entries", cap, sizeof *w->items);
        if (!items) {
            snprintf(w->error, sizeof w->error, "%s", sf_last_error());
            return;
        }
        w->items = items;
        w->cap = cap;
    }
    sf_tensor *t = &w->items[w->count++].t;
    t->dtype = dtype;
    t->ndim = ndim;
    t->data = data;
    json_t *js = json_array();
    for (int i = 0; i < ndim; i++) {
        t->shape[i] = shape[i];
        json_array_append_new(js, json_integer(shape[i]));
    }
    t->nbytes = nbytes;
    json_object_set_new(w->header, name,
                        json_pack("{s:s, s:o, s:[I,I]}", "dtype", sf_dtype_name(dtype), "shape", js,
                                  "data_offsets", (json_int_t)w->offset, (json_int_t)(w->offset + nbytes)));
    w->offset += nbytes;
}

void sf_st_writer_meta(sf_st_writer *w, const char *key, const char *value) {
    if (w->error[0]) return;
    json_object_set_new(w->meta, key, json_string(value));
}

#ifdef SF_HAVE_ISAL
uint32_t sf_crc32(uint32_t crc, const void *p, size_t n) { return crc32_gzip_refl(crc, p, n); }
#else
uint32_t sf_crc32(uint32_t crc, const void *p, size_t n) { return (uint32_t)crc32_z(crc, p, n); }
#endif

static int write_all(int fd, const void *buf, size_t n, uint32_t *crc) {
    const char *p = buf;
    if (crc) *crc = sf_crc32(*crc, buf, n);
    while (n) {
        ssize_t k = write(fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return SF_ERR;
        }
        p += k;
        n -= (size_t)k;
    }
    return SF_OK;
}

/* The end of an atomic write of path through tmp (open as fd; rc: how the writes went): fsync, close,
 * rename into place, fsync of the directory. A failure removes tmp and leaves path as it was. */
static int finish_atomic(int fd, int rc, const char *tmp, const char *path) {
    int err = errno;
    if (rc == SF_OK && fsync(fd) != 0) rc = SF_ERR, err = errno;
    if (close(fd) != 0 && rc == SF_OK) rc = SF_ERR, err = errno;
    if (rc != SF_OK) {
        unlink(tmp);
        return sf_fail("writing %s: %s", path, strerror(err));
    }
    if (rename(tmp, path) != 0) {
        err = errno;
        unlink(tmp);
        return sf_fail("renaming %s to %s: %s", tmp, path, strerror(err));
    }
    return sf_sync_parent(path);
}

int sf_sync_parent(const char *path) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0) {
        int err = errno;
        if (dfd >= 0) close(dfd);
        return sf_fail("%s was renamed into place, but its directory could not be synced (%s): after a crash it may "
                       "be missing", path, strerror(err));
    }
    close(dfd);
    return SF_OK;
}

int sf_write_file_atomic(const char *path, const void *buf, size_t len) {
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp", path) >= sizeof tmp) return sf_fail("path too long: %s", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return sf_fail("%s: %s", tmp, strerror(errno));
    return finish_atomic(fd, write_all(fd, buf, len, NULL), tmp, path);
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw) {
    (void)st, (void)ftw;
    return (type == FTW_DP ? rmdir(path) : unlink(path)) == 0 ? 0 : -1;
}

int sf_remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return errno == ENOENT ? SF_OK : sf_fail("%s: %s", path, strerror(errno));
    if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        return sf_fail("cannot remove %s: %s", path, strerror(errno));
    return SF_OK;
}

int sf_replace_dir(const char *tmp_dir, const char *dir) {
    if (renameat2(AT_FDCWD, tmp_dir, AT_FDCWD, dir, RENAME_EXCHANGE) == 0) {
        /* tmp_dir now holds the old output */
        if (sf_sync_parent(dir) != SF_OK) return SF_ERR;
        return sf_remove_tree(tmp_dir);
    }
    if (errno != ENOENT) return sf_fail("cannot put %s in place of %s: %s", tmp_dir, dir, strerror(errno));
    if (rename(tmp_dir, dir) != 0) return sf_fail("cannot rename %s to %s: %s", tmp_dir, dir, strerror(errno));
    return sf_sync_parent(dir);
}

int sf_st_writer_save(sf_st_writer *w, const char *path, uint32_t *crc_out) {
    if (w->error[0]) return sf_fail("%s: %s", path, w->error);
    if (json_object_size(w->meta)) json_object_set(w->header, "__metadata__", w->meta);
    char *hjson = json_dumps(w->header, JSON_COMPACT);
    json_object_del(w->header, "__metadata__");
    if (!hjson) return sf_fail("%s: out of memory writing the header", path);
    size_t hlen = strlen(hjson);
    size_t padded = (hlen + 7) & ~(size_t)7; /* keep the data 8-byte aligned, as the reference does */
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        free(hjson);
        return sf_fail("%s: %s", tmp, strerror(errno));
    }
    uint32_t crc = 0;
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    int rc = write_all(fd, len8, 8, &crc);
    if (rc == SF_OK) rc = write_all(fd, hjson, hlen, &crc);
    if (rc == SF_OK && padded > hlen) rc = write_all(fd, "        ", padded - hlen, &crc);
    for (size_t i = 0; rc == SF_OK && i < w->count; i++)
        rc = write_all(fd, w->items[i].t.data, w->items[i].t.nbytes, &crc);
    free(hjson);
    if (finish_atomic(fd, rc, tmp, path) != SF_OK) return SF_ERR;
    if (crc_out) *crc_out = crc;
    return SF_OK;
}
