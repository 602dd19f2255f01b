/* Messages: MessagePack maps with string keys; tensors encoded as msgpack-numpy encodes arrays.
 *
 * Building packs straight into one growing buffer (the map's entry count is patched in at the
 * end), so a finished message is a single allocation that ZeroMQ can send without a copy.
 * Parsing treats the bytes as untrusted: a structural walk checks every length against the
 * buffer before msgpack-c builds objects, then tensors are checked for dtype, rank and size. */
#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sf_internal.h"

struct sf_msg {
    /* building */
    msgpack_sbuffer sbuf;
    msgpack_packer pk;
    uint32_t count;
    char error[300]; /* the first put that failed (out of memory, too large): sf_emit refuses it */
    /* parsed */
    const char *buf;
    size_t len;
    msgpack_zone zone;
    msgpack_object root;
    int parsed;
};

/* ---- dtype <-> numpy type strings ---- */

static const char *np_types[SF_DTYPE_COUNT] = {
    [SF_F32] = "<f4", [SF_F64] = "<f8", [SF_F16] = "<f2", [SF_BF16] = "<V2",
    [SF_I8] = "|i1",  [SF_I16] = "<i2", [SF_I32] = "<i4", [SF_I64] = "<i8",
    [SF_U8] = "|u1",  [SF_U16] = "<u2", [SF_U32] = "<u4", [SF_U64] = "<u8",
    [SF_BOOL] = "|b1",
};

static int np_type_parse(const char *s, size_t n, sf_dtype *out) {
    for (int i = 0; i < SF_DTYPE_COUNT; i++) {
        /* numpy writes '|' for one-byte types; '<' and '=' are the same on little-endian. */
        const char *t = np_types[i];
        if (n == 3 && memcmp(s + 1, t + 1, 2) == 0 && (s[0] == t[0] || s[0] == '|' || s[0] == '=' || s[0] == '<')) {
            *out = (sf_dtype)i;
            return SF_OK;
        }
    }
    return SF_ERR;
}

/* ---- building ---- */

/* Records the first failed put; the message then takes no more fields. */
static void put_failed(sf_msg *m, const char *fmt, ...) SF_PRINTF(2, 3);
static void put_failed(sf_msg *m, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (!m->error[0]) vsnprintf(m->error, sizeof m->error, fmt, ap);
    va_end(ap);
    sf_fail("%s", m->error);
}

/* msgpack's writer, which fails on out of memory; the packer ignores the result, so it is kept. */
static int write_checked(void *data, const char *buf, size_t len) {
    sf_msg *m = data;
    if (m->error[0]) return -1;
    if (msgpack_sbuffer_write(&m->sbuf, buf, len) != 0) {
        put_failed(m, "out of memory building a message (%zu + %zu bytes)", m->sbuf.size, len);
        return -1;
    }
    return 0;
}

/* The message that sf_msg_new returns when even its header cannot be allocated: every put is
 * ignored and sf_emit refuses it (never written to: its error is set). */
static sf_msg oom_msg = {.error = "out of memory allocating a message"};

sf_msg *sf_msg_new(void) {
    sf_msg *m = calloc(1, sizeof *m);
    if (!m) {
        sf_fail("%s", oom_msg.error);
        return &oom_msg;
    }
    msgpack_sbuffer_init(&m->sbuf);
    msgpack_packer_init(&m->pk, m, write_checked);
    static const char map32[5] = {(char)0xdf, 0, 0, 0, 0}; /* count patched in later */
    write_checked(m, map32, 5);
    return m;
}

const char *sf_msg_error(const sf_msg *m) { return m->error[0] ? m->error : NULL; }

static void finish(sf_msg *m) {
    unsigned char *p = (unsigned char *)m->sbuf.data;
    p[1] = (unsigned char)(m->count >> 24);
    p[2] = (unsigned char)(m->count >> 16);
    p[3] = (unsigned char)(m->count >> 8);
    p[4] = (unsigned char)m->count;
}

void sf_msg_free(sf_msg *m) {
    if (!m || m == &oom_msg) return;
    if (m->parsed) {
        msgpack_zone_destroy(&m->zone);
    } else {
        msgpack_sbuffer_destroy(&m->sbuf);
    }
    free(m);
}

void *sf_msg_release(sf_msg *m, size_t *len) {
    if (m->error[0]) {
        sf_fail("%s", m->error);
        sf_msg_free(m);
        return NULL;
    }
    finish(m);
    *len = m->sbuf.size;
    void *data = msgpack_sbuffer_release(&m->sbuf);
    sf_msg_free(m);
    return data;
}

static void put_key(sf_msg *m, const char *key) {
    if (m->error[0]) return;
    size_t n = strlen(key);
    msgpack_pack_str(&m->pk, n);
    msgpack_pack_str_body(&m->pk, key, n);
    m->count++;
}

void sf_msg_put_int(sf_msg *m, const char *key, int64_t v) {
    put_key(m, key);
    msgpack_pack_int64(&m->pk, v);
}

void sf_msg_put_float(sf_msg *m, const char *key, double v) {
    put_key(m, key);
    msgpack_pack_double(&m->pk, v);
}

void sf_msg_put_bool(sf_msg *m, const char *key, int v) {
    put_key(m, key);
    if (v) msgpack_pack_true(&m->pk);
    else msgpack_pack_false(&m->pk);
}

void sf_msg_put_strn(sf_msg *m, const char *key, const char *s, size_t len) {
    put_key(m, key);
    msgpack_pack_str(&m->pk, len);
    msgpack_pack_str_body(&m->pk, s, len);
}

void sf_msg_put_str(sf_msg *m, const char *key, const char *s) { sf_msg_put_strn(m, key, s, strlen(s)); }

void sf_msg_put_strs(sf_msg *m, const char *key, const char *const *s, size_t n) {
    put_key(m, key);
    msgpack_pack_array(&m->pk, n);
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(s[i]);
        msgpack_pack_str(&m->pk, l);
        msgpack_pack_str_body(&m->pk, s[i], l);
    }
}

static void pack_bin_key(sf_msg *m, const char *k) {
    size_t n = strlen(k);
    msgpack_pack_bin(&m->pk, n); /* msgpack-numpy's keys are bytes, not str */
    msgpack_pack_bin_body(&m->pk, k, n);
}

void *sf_msg_put_tensor_inplace(sf_msg *m, const char *key, sf_dtype t, int ndim, const int64_t *shape) {
    if (m->error[0]) return sf_fail("%s", m->error), NULL;
    size_t nbytes;
    char what[120];
    snprintf(what, sizeof what, "tensor '%s'", key);
    if (sf_tensor_size(what, t, ndim, shape, &nbytes) != SF_OK) {
        put_failed(m, "%s", sf_last_error());
        return NULL;
    }
    if (nbytes > SF_MSG_MAX_BYTES) { /* MessagePack's largest binary is 4 GiB */
        put_failed(m, "tensor '%s' of %zu bytes exceeds a message's %zu-byte limit (MessagePack's 4 GiB): send it in parts",
                   key, nbytes, SF_MSG_MAX_BYTES);
        return NULL;
    }
    put_key(m, key);
    /* msgpack-numpy's five keys, plus "pad": a few bytes (ignored by readers) that put the data
     * at a 16-byte boundary of the buffer, so the caller can write floats straight into it. */
    msgpack_pack_map(&m->pk, 6);
    pack_bin_key(m, "nd");
    msgpack_pack_true(&m->pk);
    pack_bin_key(m, "type");
    msgpack_pack_str(&m->pk, 3);
    msgpack_pack_str_body(&m->pk, np_types[t], 3);
    pack_bin_key(m, "kind");
    msgpack_pack_bin(&m->pk, 0);
    pack_bin_key(m, "shape");
    msgpack_pack_array(&m->pk, (size_t)ndim);
    for (int i = 0; i < ndim; i++) msgpack_pack_int64(&m->pk, shape[i]);
    /* after here: "pad" key (5 bytes), bin8 header (2), p bytes, "data" key (6), bin32 header (5) */
    size_t p = (16 - (m->sbuf.size + 18) % 16) % 16;
    static const char zeros[16];
    pack_bin_key(m, "pad");
    msgpack_pack_bin(&m->pk, p);
    msgpack_pack_bin_body(&m->pk, zeros, p);
    pack_bin_key(m, "data");
    static const char bin32 = (char)0xc6; /* always the 5-byte header, so the padding above is exact */
    write_checked(m, &bin32, 1);
    char len[4] = {(char)(nbytes >> 24), (char)(nbytes >> 16), (char)(nbytes >> 8), (char)nbytes};
    write_checked(m, len, 4);
    if (m->error[0]) return sf_fail("%s", m->error), NULL;
    /* Reserve the payload in the buffer itself: the caller writes it there. */
    msgpack_sbuffer *sb = &m->sbuf;
    if (sb->alloc - sb->size < nbytes) {
        size_t want = sb->size + nbytes; /* no overflow: both are below 2^33 */
        size_t cap = sb->alloc ? sb->alloc : 4096;
        while (cap < want) cap *= 2;
        char *d = realloc(sb->data, cap);
        if (!d) {
            put_failed(m, "out of memory allocating tensor '%s' in a message (%zu bytes = %.1f MB)", key, nbytes, (double)nbytes / 1e6);
            return NULL;
        }
        sb->data = d;
        sb->alloc = cap;
    }
    void *ptr = sb->data + sb->size;
    sb->size += nbytes;
    return ptr;
}

void sf_msg_put_tensor(sf_msg *m, const char *key, sf_dtype t, int ndim, const int64_t *shape, const void *data) {
    void *p = sf_msg_put_tensor_inplace(m, key, t, ndim, shape);
    size_t nbytes;
    if (p && sf_tensor_size(key, t, ndim, shape, &nbytes) == SF_OK && nbytes) memcpy(p, data, nbytes);
}

/* ---- parsing ---- */

/* Walks one msgpack object at *p without building anything; every length is checked against
 * end, and containers cannot claim more elements than bytes remain (each takes at least one),
 * so msgpack-c never sizes an allocation from an unchecked count. */
static int walk(const unsigned char **p, const unsigned char *end, int depth) {
    if (depth > 32 || *p >= end) return SF_ERR;
    const unsigned char *q = *p;
    unsigned c = *q++;
    uint64_t len = 0, items = 0;
#define NEED(n) do { if ((uint64_t)(end - q) < (uint64_t)(n)) return SF_ERR; } while (0)
#define BE(n) ({ NEED(n); uint64_t v_ = 0; for (int i_ = 0; i_ < (n); i_++) v_ = (v_ << 8) | q[i_]; q += (n); v_; })
    if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) {
        /* fixint, nil, bool */
    } else if (c >= 0x80 && c <= 0x8f) items = 2 * (c & 0x0f);
    else if (c >= 0x90 && c <= 0x9f) items = c & 0x0f;
    else if (c >= 0xa0 && c <= 0xbf) len = c & 0x1f;
    else switch (c) {
        case 0xc4: case 0xd9: len = BE(1); break;
        case 0xc5: case 0xda: len = BE(2); break;
        case 0xc6: case 0xdb: len = BE(4); break;
        case 0xc7: len = BE(1) + 1; break; /* ext: type byte + data */
        case 0xc8: len = BE(2) + 1; break;
        case 0xc9: len = BE(4) + 1; break;
        case 0xca: case 0xce: case 0xd2: len = 4; break;
        case 0xcb: case 0xcf: case 0xd3: len = 8; break;
        case 0xcc: case 0xd0: len = 1; break;
        case 0xcd: case 0xd1: len = 2; break;
        case 0xd4: len = 2; break;
        case 0xd5: len = 3; break;
        case 0xd6: len = 5; break;
        case 0xd7: len = 9; break;
        case 0xd8: len = 17; break;
        case 0xdc: items = BE(2); break;
        case 0xdd: items = BE(4); break;
        case 0xde: items = 2 * BE(2); break;
        case 0xdf: items = 2 * BE(4); break;
        default: return SF_ERR; /* 0xc1 is never used */
        }
    NEED(len);
    q += len;
    if (items > (uint64_t)(end - q)) return SF_ERR;
    for (uint64_t i = 0; i < items; i++)
        if (walk(&q, end, depth + 1) != SF_OK) return SF_ERR;
    *p = q;
    return SF_OK;
#undef NEED
#undef BE
}

sf_msg *sf_msg_parse(const void *buf, size_t len) {
    const unsigned char *p = buf, *end = p + len;
    if (len == 0) return sf_fail("message is empty"), NULL;
    if (walk(&p, end, 0) != SF_OK) return sf_fail("message is not valid MessagePack (truncated or corrupt, %zu bytes)", len), NULL;
    if (p != end) return sf_fail("message has %zu trailing bytes after its map", (size_t)(end - p)), NULL;
    sf_msg *m = calloc(1, sizeof *m);
    if (!m) return sf_fail("out of memory parsing a message of %zu bytes", len), NULL;
    m->parsed = 1;
    m->buf = buf;
    m->len = len;
    msgpack_zone_init(&m->zone, 2048);
    size_t off = 0;
    if (msgpack_unpack(buf, len, &off, &m->zone, &m->root) != MSGPACK_UNPACK_SUCCESS ||
        m->root.type != MSGPACK_OBJECT_MAP) {
        msgpack_zone_destroy(&m->zone);
        free(m);
        return sf_fail("message is not a MessagePack map"), NULL;
    }
    return m;
}

const void *sf_msg_bytes(const sf_msg *m, size_t *len) {
    if (m->parsed) {
        *len = m->len;
        return m->buf;
    }
    finish((sf_msg *)m);
    *len = m->sbuf.size;
    return m->sbuf.data;
}

static int key_is(const msgpack_object *k, const char *key, size_t n) {
    if (k->type == MSGPACK_OBJECT_STR) return k->via.str.size == n && memcmp(k->via.str.ptr, key, n) == 0;
    if (k->type == MSGPACK_OBJECT_BIN) return k->via.bin.size == n && memcmp(k->via.bin.ptr, key, n) == 0;
    return 0;
}

static const msgpack_object *lookup(const msgpack_object *map, const char *key) {
    size_t n = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++)
        if (key_is(&map->via.map.ptr[i].key, key, n)) return &map->via.map.ptr[i].val;
    return NULL;
}

static const msgpack_object *field(const sf_msg *m, const char *key) {
    if (!m->parsed) {
        sf_fail("message '%s': read from a message that is still being built", key);
        return NULL;
    }
    const msgpack_object *o = lookup(&m->root, key);
    if (!o) sf_fail("message has no field '%s'", key);
    return o;
}

int sf_msg_has(const sf_msg *m, const char *key) { return m->parsed && lookup(&m->root, key) != NULL; }

static int wrong_type(const char *key, const char *want) {
    return sf_fail("message field '%s' is not %s", key, want);
}

int sf_msg_get_int(const sf_msg *m, const char *key, int64_t *out) {
    const msgpack_object *o = field(m, key);
    if (!o) return SF_ERR;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 > INT64_MAX) return sf_fail("message field '%s' is out of range", key);
        *out = (int64_t)o->via.u64;
    } else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) *out = o->via.i64;
    else return wrong_type(key, "an integer");
    return SF_OK;
}

int sf_msg_get_float(const sf_msg *m, const char *key, double *out) {
    const msgpack_object *o = field(m, key);
    if (!o) return SF_ERR;
    switch (o->type) {
    case MSGPACK_OBJECT_FLOAT32: case MSGPACK_OBJECT_FLOAT64: *out = o->via.f64; break;
    case MSGPACK_OBJECT_POSITIVE_INTEGER: *out = (double)o->via.u64; break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: *out = (double)o->via.i64; break;
    default: return wrong_type(key, "a number");
    }
    return SF_OK;
}

int sf_msg_get_bool(const sf_msg *m, const char *key, int *out) {
    const msgpack_object *o = field(m, key);
    if (!o) return SF_ERR;
    if (o->type != MSGPACK_OBJECT_BOOLEAN) return wrong_type(key, "a boolean");
    *out = o->via.boolean;
    return SF_OK;
}

static int as_str(const msgpack_object *o, const char **s, size_t *len) {
    if (o->type == MSGPACK_OBJECT_STR) {
        *s = o->via.str.ptr;
        *len = o->via.str.size;
    } else if (o->type == MSGPACK_OBJECT_BIN) { /* Python bytes */
        *s = o->via.bin.ptr;
        *len = o->via.bin.size;
    } else return SF_ERR;
    return SF_OK;
}

int sf_msg_get_str(const sf_msg *m, const char *key, const char **s, size_t *len) {
    const msgpack_object *o = field(m, key);
    if (!o) return SF_ERR;
    if (as_str(o, s, len) != SF_OK) return wrong_type(key, "a string");
    return SF_OK;
}

int sf_msg_get_strs_count(const sf_msg *m, const char *key, size_t *n) {
    const msgpack_object *o = field(m, key);
    if (!o) return SF_ERR;
    if (o->type != MSGPACK_OBJECT_ARRAY) return wrong_type(key, "an array of strings");
    *n = o->via.array.size;
    return SF_OK;
}

int sf_msg_get_strs_at(const sf_msg *m, const char *key, size_t i, const char **s, size_t *len) {
    size_t n;
    if (sf_msg_get_strs_count(m, key, &n) != SF_OK) return SF_ERR;
    if (i >= n) return sf_fail("message field '%s' has %zu strings, not %zu", key, n, i + 1);
    if (as_str(&field(m, key)->via.array.ptr[i], s, len) != SF_OK) return wrong_type(key, "an array of strings");
    return SF_OK;
}

int sf_msg_get_tensor(const sf_msg *m, const char *key, sf_tensor *out) {
    const msgpack_object *o = field(m, key);
    if (!o) return SF_ERR;
    if (o->type != MSGPACK_OBJECT_MAP) return wrong_type(key, "a tensor");
    const msgpack_object *nd = lookup(o, "nd"), *type = lookup(o, "type"), *shape = lookup(o, "shape"),
                         *data = lookup(o, "data");
    if (!nd || nd->type != MSGPACK_OBJECT_BOOLEAN || !nd->via.boolean || !type || !shape || !data)
        return wrong_type(key, "a msgpack-numpy array (nd, type, shape, data)");
    const char *ts;
    size_t tl;
    /* msgpack-numpy writes void dtypes (bf16 travels as 2-byte void) as a descr list
     * [['', '|V2']] with kind b'V'; take the single field's type string. */
    if (type->type == MSGPACK_OBJECT_ARRAY && type->via.array.size == 1 &&
        type->via.array.ptr[0].type == MSGPACK_OBJECT_ARRAY && type->via.array.ptr[0].via.array.size == 2)
        type = &type->via.array.ptr[0].via.array.ptr[1];
    if (as_str(type, &ts, &tl) != SF_OK || np_type_parse(ts, tl, &out->dtype) != SF_OK)
        return sf_fail("message field '%s': unsupported array type", key);
    if (shape->type != MSGPACK_OBJECT_ARRAY || shape->via.array.size > SF_MAX_DIMS)
        return sf_fail("message field '%s': shape must be an array of at most %d sizes", key, SF_MAX_DIMS);
    if (data->type != MSGPACK_OBJECT_BIN && data->type != MSGPACK_OBJECT_STR)
        return sf_fail("message field '%s': data is not binary", key);
    out->ndim = (int)shape->via.array.size;
    uint64_t nbytes = sf_dtype_size(out->dtype);
    for (int i = 0; i < out->ndim; i++) {
        const msgpack_object *d = &shape->via.array.ptr[i];
        if (d->type != MSGPACK_OBJECT_POSITIVE_INTEGER || d->via.u64 > (1ull << 40))
            return sf_fail("message field '%s': dimension %d is not a size", key, i);
        out->shape[i] = (int64_t)d->via.u64;
        if (d->via.u64 && nbytes > UINT64_MAX / d->via.u64) return sf_fail("message field '%s': shape overflows", key);
        nbytes *= d->via.u64;
    }
    size_t have = data->type == MSGPACK_OBJECT_BIN ? data->via.bin.size : data->via.str.size;
    if (nbytes != have)
        return sf_fail("message field '%s': shape and dtype need %llu bytes, data has %zu", key,
                       (unsigned long long)nbytes, have);
    out->data = data->type == MSGPACK_OBJECT_BIN ? (const void *)data->via.bin.ptr : (const void *)data->via.str.ptr;
    out->nbytes = have;
    return SF_OK;
}

int sf_msg_copy_field(sf_msg *m, const sf_msg *src, const char *key) {
    const msgpack_object *o = field(src, key);
    if (!o) return SF_ERR;
    if (m->error[0]) return sf_fail("%s", m->error);
    put_key(m, key);
    msgpack_pack_object(&m->pk, *o);
    return SF_OK;
}

sf_msg *sf_msg_clone(const sf_msg *src) {
    sf_msg *m = sf_msg_new();
    if (m->error[0]) return m;
    if (!src->parsed) {
        size_t len;
        const void *b = sf_msg_bytes(src, &len);
        write_checked(m, (const char *)b + 5, len - 5);
        m->count = src->count;
        return m;
    }
    for (uint32_t i = 0; i < src->root.via.map.size; i++) {
        msgpack_pack_object(&m->pk, src->root.via.map.ptr[i].key);
        msgpack_pack_object(&m->pk, src->root.via.map.ptr[i].val);
        m->count++;
    }
    return m;
}

int sf_same_hook(const char *a, const char *b) { return strcmp(a, b) == 0; }

void sf_default_checkpoint(const char *model_dir, char *out, size_t cap) {
    size_t len = strlen(model_dir);
    while (len > 1 && model_dir[len - 1] == '/') len--;
    const char *b = model_dir + len;
    while (b > model_dir && b[-1] != '/') b--;
    snprintf(out, cap, "%.*s", (int)(model_dir + len - b), b);
}
