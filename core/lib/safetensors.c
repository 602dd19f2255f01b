/* safetensors: an 8-byte little-endian header length, a JSON header naming each tensor's dtype,
 * shape and [begin, end) byte range in the data that follows, then the data. */
#include <errno.h>
#include <fcntl.h>
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
    for (int i = 0; i < t->t.ndim; i++) {
        json_t *d = json_array_get(shape, (size_t)i);
        if (!json_is_integer(d) || json_integer_value(d) < 0 || json_integer_value(d) > (1ll << 40)) {
            snprintf(what, sizeof what, "tensor '%s' has a bad dimension", name);
            return st_bad(path, what);
        }
        t->t.shape[i] = json_integer_value(d);
        nbytes *= (uint64_t)t->t.shape[i]; /* each factor < 2^40 and at most 8 of them, but check */
        if (nbytes > data_len) {
            snprintf(what, sizeof what, "tensor '%s' is larger than the file's data", name);
            return st_bad(path, what);
        }
    }
    json_t *b = json_array_get(offs, 0), *e = json_array_get(offs, 1);
    if (!json_is_integer(b) || !json_is_integer(e) || json_integer_value(b) < 0 ||
        json_integer_value(e) < json_integer_value(b) || (uint64_t)json_integer_value(e) > data_len ||
        (uint64_t)(json_integer_value(e) - json_integer_value(b)) != nbytes) {
        snprintf(what, sizeof what, "tensor '%s' has data_offsets outside the file or not matching its shape (file truncated?)", name);
        return st_bad(path, what);
    }
    t->t.data = data + json_integer_value(b);
    t->t.nbytes = nbytes;
    return SF_OK;
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
    if (rc == SF_OK && fsync(fd) != 0) rc = SF_ERR;
    int err = errno;
    if (close(fd) != 0 && rc == SF_OK) {
        rc = SF_ERR;
        err = errno;
    }
    if (rc != SF_OK) {
        unlink(tmp);
        return sf_fail("writing %s: %s", path, strerror(err));
    }
    if (rename(tmp, path) != 0) {
        err = errno;
        unlink(tmp);
        return sf_fail("renaming %s to %s: %s", tmp, path, strerror(err));
    }
    /* The rename is durable only once the directory entry is on disk. */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0) {
        err = errno;
        if (dfd >= 0) close(dfd);
        return sf_fail("%s was renamed into place, but its directory could not be synced (%s): after a crash it may "
                       "be missing",
                       path, strerror(err));
    }
    close(dfd);
    if (crc_out) *crc_out = crc;
    return SF_OK;
}
