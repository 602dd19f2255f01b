/* sae_pth.c — `torch.save` state dicts (llm-jp-sae's sae.pth) read without Python.
 *
 * A torch.save file is a zip archive: PREFIX/data.pkl (a pickle, protocol 2) and one entry
 * PREFIX/data/KEY per storage (raw little-endian elements), plus PREFIX/version and, from torch 2.1,
 * PREFIX/byteorder. The pickle of a state dict builds an OrderedDict of tensors, each
 * `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)` whose storage is a
 * persistent id ('storage', torch.BFloat16Storage, KEY, 'cpu', numel). The unpickler below knows
 * only the opcodes and globals that takes; anything else (a pickle can call any Python function) is
 * refused by name before a byte of tensor data is read. Values live in an arena freed at the end;
 * the stack, memo and node counts are bounded.
 */
#include "sae_pth.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zip.h>

#include "saeflow.h"

/* ---------------------------------------------------------------------------------------------- */
/* Pickle values                                                                                   */

typedef enum {
    PV_NONE, PV_BOOL, PV_INT, PV_STR, PV_TUPLE, PV_DICT, PV_GLOBAL, PV_STORAGE, PV_TENSOR, PV_MARK
} pv_kind;

/* The only callables and classes a state dict of tensors refers to. */
typedef enum { G_ORDERED_DICT = 1, G_REBUILD_TENSOR, G_STORAGE_BF16, G_STORAGE_F32, G_STORAGE_F16 } pv_global;

static const struct {
    const char *module, *name;
    pv_global g;
} pth_globals[] = {
    {"collections", "OrderedDict", G_ORDERED_DICT},
    {"torch._utils", "_rebuild_tensor_v2", G_REBUILD_TENSOR},
    {"torch", "BFloat16Storage", G_STORAGE_BF16},
    {"torch", "FloatStorage", G_STORAGE_F32},
    {"torch", "HalfStorage", G_STORAGE_F16},
};

typedef struct pv pv;
struct pv {
    pv_kind kind;
    int64_t i;            /* INT, BOOL; GLOBAL: pv_global; STORAGE: numel */
    const char *s;        /* STR, STORAGE key: points into the pickle (not NUL-terminated) */
    size_t len;
    pv **items;           /* TUPLE: its items; DICT: key, value, key, value ... */
    size_t count, cap;
    sf_dtype dtype;       /* STORAGE */
    const pv *storage;    /* TENSOR */
    int64_t offset;
    int ndim;
    int64_t shape[SAE_PTH_MAX_DIMS];
};

#define PTH_MAX_NODES (1 << 20)
#define PTH_MAX_STACK (1 << 16)
#define PTH_MAX_ITEMS (1 << 22)
#define PTH_MAX_MEMO (1 << 20)
#define PTH_MAX_PICKLE ((size_t)64 << 20)

typedef struct unpickler {
    const uint8_t *p;
    size_t size, pos;
    pv **nodes; /* the arena: every value made, freed together */
    size_t n_nodes, cap_nodes, n_items;
    pv **stack;
    size_t sp, cap_stack;
    pv **memo;
    size_t cap_memo;
    pv mark; /* the one MARK value */
} unpickler;

static void up_free(unpickler *u) {
    for (size_t i = 0; i < u->n_nodes; i++) {
        free(u->nodes[i]->items);
        free(u->nodes[i]);
    }
    free(u->nodes);
    free(u->stack);
    free(u->memo);
}

static int up_err(const unpickler *u, const char *what) {
    return sf_fail("sae.pth: data.pkl byte %zu: %s", u->pos, what);
}

static pv *up_new(unpickler *u, pv_kind kind) {
    if (u->n_nodes >= PTH_MAX_NODES) {
        up_err(u, "more than 1M pickle values: not a state dict of a few tensors");
        return NULL;
    }
    if (u->n_nodes == u->cap_nodes) {
        size_t cap = u->cap_nodes ? 2 * u->cap_nodes : 256;
        pv **n = sf_realloc(u->nodes, "pickle values", cap, sizeof *n);
        if (!n) return NULL;
        u->nodes = n, u->cap_nodes = cap;
    }
    pv *v = sf_zalloc("a pickle value", 1, sizeof *v);
    if (!v) return NULL;
    v->kind = kind;
    u->nodes[u->n_nodes++] = v;
    return v;
}

static int up_push(unpickler *u, pv *v) {
    if (!v) return SF_ERR;
    if (u->sp >= PTH_MAX_STACK) return up_err(u, "pickle stack deeper than 65536");
    if (u->sp == u->cap_stack) {
        size_t cap = u->cap_stack ? 2 * u->cap_stack : 64;
        pv **s = sf_realloc(u->stack, "the pickle stack", cap, sizeof *s);
        if (!s) return SF_ERR;
        u->stack = s, u->cap_stack = cap;
    }
    u->stack[u->sp++] = v;
    return SF_OK;
}

static pv *up_pop(unpickler *u) {
    if (u->sp == 0 || u->stack[u->sp - 1] == &u->mark) {
        up_err(u, "pickle stack underflow");
        return NULL;
    }
    return u->stack[--u->sp];
}

/* The position of the topmost MARK on the stack. */
static int up_find_mark(unpickler *u, size_t *at) {
    for (size_t i = u->sp; i-- > 0;)
        if (u->stack[i] == &u->mark) return *at = i, SF_OK;
    return up_err(u, "no MARK on the pickle stack");
}

static int up_need(unpickler *u, size_t n) {
    if (u->size - u->pos < n) return up_err(u, "truncated pickle");
    return SF_OK;
}

static uint64_t up_le(const uint8_t *b, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | b[i];
    return v;
}

static int up_add_item(unpickler *u, pv *c, pv *item) {
    /* BINGET pushes without making a value: bound the container items too */
    if (++u->n_items > PTH_MAX_ITEMS) return up_err(u, "more than 4M items in tuples and dicts: not a state dict");
    if (c->count == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 4;
        pv **n = sf_realloc(c->items, "pickle container items", cap, sizeof *n);
        if (!n) return SF_ERR;
        c->items = n, c->cap = cap;
    }
    c->items[c->count++] = item;
    return SF_OK;
}

/* Replaces stack[drop..sp) by a tuple of stack[from..sp). */
static int up_tuple_of(unpickler *u, size_t from, size_t drop) {
    pv *t = up_new(u, PV_TUPLE);
    if (!t) return SF_ERR;
    for (size_t i = from; i < u->sp; i++)
        if (up_add_item(u, t, u->stack[i]) != SF_OK) return SF_ERR;
    u->sp = drop;
    return up_push(u, t);
}

static int up_setitem(unpickler *u, pv *dict, pv *key, pv *value) {
    if (dict->kind != PV_DICT) return up_err(u, "SETITEM(S) on something that is not a dict");
    if (key->kind != PV_STR && key->kind != PV_INT) return up_err(u, "a dict key that is not a string");
    return up_add_item(u, dict, key) != SF_OK || up_add_item(u, dict, value) != SF_OK ? SF_ERR : SF_OK;
}

static int up_str_is(const pv *v, const char *s) {
    return v->kind == PV_STR && v->len == strlen(s) && memcmp(v->s, s, v->len) == 0;
}

static int up_global(unpickler *u, const char *mod, size_t mlen, const char *name, size_t nlen) {
    for (size_t i = 0; i < sizeof pth_globals / sizeof *pth_globals; i++)
        if (strlen(pth_globals[i].module) == mlen && !memcmp(pth_globals[i].module, mod, mlen) &&
            strlen(pth_globals[i].name) == nlen && !memcmp(pth_globals[i].name, name, nlen)) {
            pv *g = up_new(u, PV_GLOBAL);
            if (!g) return SF_ERR;
            g->i = pth_globals[i].g;
            return up_push(u, g);
        }
    return sf_fail("sae.pth: data.pkl byte %zu: refers to '%.*s.%.*s', which a state dict of tensors never uses "
                   "(only collections.OrderedDict, torch._utils._rebuild_tensor_v2 and torch BFloat16/Float/Half "
                   "storages are accepted): refused, not a plain state dict",
                   u->pos, (int)(mlen > 80 ? 80 : mlen), mod, (int)(nlen > 80 ? 80 : nlen), name);
}

/* A tuple of at most SAE_PTH_MAX_DIMS non-negative ints. */
static int up_dims(unpickler *u, const pv *t, int64_t *out, int *n) {
    if (t->kind != PV_TUPLE || t->count > SAE_PTH_MAX_DIMS) return up_err(u, "tensor size/stride is not a short tuple");
    for (size_t i = 0; i < t->count; i++) {
        if (t->items[i]->kind != PV_INT || t->items[i]->i < 0) return up_err(u, "tensor size/stride not ints >= 0");
        out[i] = t->items[i]->i;
    }
    *n = (int)t->count;
    return SF_OK;
}

/* REDUCE: OrderedDict() or _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks). */
static int up_reduce(unpickler *u) {
    pv *args = up_pop(u), *fn = args ? up_pop(u) : NULL;
    if (!fn) return SF_ERR;
    if (fn->kind != PV_GLOBAL || args->kind != PV_TUPLE) return up_err(u, "REDUCE of something not callable");
    if (fn->i == G_ORDERED_DICT) {
        if (args->count != 0) return up_err(u, "OrderedDict called with arguments");
        return up_push(u, up_new(u, PV_DICT));
    }
    if (fn->i != G_REBUILD_TENSOR) return up_err(u, "a storage class called directly");
    if (args->count != 6 && !(args->count == 7 && args->items[6]->kind == PV_NONE))
        return up_err(u, "_rebuild_tensor_v2 with other arguments than (storage, offset, size, stride, "
                         "requires_grad, hooks)");
    pv **a = args->items;
    if (a[0]->kind != PV_STORAGE || a[1]->kind != PV_INT || a[1]->i < 0 || a[4]->kind != PV_BOOL ||
        a[5]->kind != PV_DICT || a[5]->count != 0)
        return up_err(u, "_rebuild_tensor_v2 arguments of the wrong types (or backward hooks)");
    pv *t = up_new(u, PV_TENSOR);
    if (!t) return SF_ERR;
    int64_t stride[SAE_PTH_MAX_DIMS];
    int ns;
    if (up_dims(u, a[2], t->shape, &t->ndim) != SF_OK || up_dims(u, a[3], stride, &ns) != SF_OK) return SF_ERR;
    if (ns != t->ndim) return up_err(u, "tensor size and stride of different lengths");
    /* Contiguous row-major only (a state dict's parameters are); numel and extent within the storage. */
    uint64_t numel = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if ((uint64_t)stride[d] != numel && t->shape[d] > 1)
            return up_err(u, "a non-contiguous tensor (a view): save a .contiguous() state dict");
        if (__builtin_mul_overflow(numel, (uint64_t)t->shape[d], &numel) || numel > (uint64_t)INT64_MAX)
            return up_err(u, "tensor size overflows");
    }
    uint64_t end;
    if (__builtin_add_overflow(numel, (uint64_t)a[1]->i, &end) || end > (uint64_t)a[0]->i)
        return up_err(u, "tensor extends past the end of its storage");
    t->storage = a[0];
    t->offset = a[1]->i;
    t->dtype = a[0]->dtype;
    return up_push(u, t);
}

/* BINPERSID: ('storage', StorageClass, key, location, numel). */
static int up_persid(unpickler *u) {
    pv *t = up_pop(u);
    if (!t) return SF_ERR;
    if (t->kind != PV_TUPLE || t->count != 5 || !up_str_is(t->items[0], "storage") ||
        t->items[1]->kind != PV_GLOBAL || t->items[2]->kind != PV_STR || t->items[3]->kind != PV_STR ||
        t->items[4]->kind != PV_INT || t->items[4]->i < 0)
        return up_err(u, "a persistent id that is not ('storage', class, key, location, numel)");
    pv *s = up_new(u, PV_STORAGE);
    if (!s) return SF_ERR;
    switch (t->items[1]->i) {
    case G_STORAGE_BF16: s->dtype = SF_BF16; break;
    case G_STORAGE_F32: s->dtype = SF_F32; break;
    case G_STORAGE_F16: s->dtype = SF_F16; break;
    default: return up_err(u, "a persistent id whose class is not a storage");
    }
    if (t->items[2]->len == 0 || t->items[2]->len > 32) return up_err(u, "a storage key of a bad length");
    for (size_t i = 0; i < t->items[2]->len; i++)
        if (t->items[2]->s[i] == '/' || t->items[2]->s[i] == '\0') return up_err(u, "a storage key with '/' or NUL");
    s->s = t->items[2]->s, s->len = t->items[2]->len;
    s->i = t->items[4]->i;
    return up_push(u, s);
}

static int up_memo_put(unpickler *u, size_t idx) {
    if (u->sp == 0 || u->stack[u->sp - 1] == &u->mark) return up_err(u, "memo PUT with nothing to store");
    if (idx >= PTH_MAX_MEMO) return up_err(u, "memo index above 1M");
    if (idx >= u->cap_memo) {
        size_t cap = u->cap_memo ? u->cap_memo : 64;
        while (cap <= idx) cap *= 2;
        pv **m = sf_realloc(u->memo, "the pickle memo", cap, sizeof *m);
        if (!m) return SF_ERR;
        memset(m + u->cap_memo, 0, (cap - u->cap_memo) * sizeof *m);
        u->memo = m, u->cap_memo = cap;
    }
    u->memo[idx] = u->stack[u->sp - 1];
    return SF_OK;
}

static int up_memo_get(unpickler *u, size_t idx) {
    if (idx >= u->cap_memo || !u->memo[idx]) return up_err(u, "memo GET of an index never PUT");
    return up_push(u, u->memo[idx]);
}

/* Runs the pickle to STOP; *out is the dict it built. */
static int up_run(unpickler *u, pv **out) {
    size_t memo_next = 0; /* MEMOIZE's implicit index */
    for (;;) {
        if (up_need(u, 1) != SF_OK) return SF_ERR;
        uint8_t op = u->p[u->pos++];
        const uint8_t *a = u->p + u->pos;
        pv *v, *k, *d;
        size_t at = 0, len = 0;
        switch (op) {
        case 0x80: /* PROTO */
            if (up_need(u, 1) != SF_OK) return SF_ERR;
            if (a[0] > 5) return up_err(u, "pickle protocol above 5");
            u->pos += 1;
            break;
        case 0x95: /* FRAME: a length hint */
            if (up_need(u, 8) != SF_OK) return SF_ERR;
            u->pos += 8;
            break;
        case 'c': { /* GLOBAL module\nname\n */
            const char *mod = (const char *)a, *nl1 = memchr(mod, '\n', u->size - u->pos);
            if (!nl1) return up_err(u, "truncated GLOBAL");
            const char *name = nl1 + 1, *nl2 = memchr(name, '\n', u->size - u->pos - (size_t)(name - mod));
            if (!nl2) return up_err(u, "truncated GLOBAL");
            u->pos += (size_t)(nl2 + 1 - mod);
            if (up_global(u, mod, (size_t)(nl1 - mod), name, (size_t)(nl2 - name)) != SF_OK) return SF_ERR;
            break;
        }
        case 0x93: /* STACK_GLOBAL */
            if (!(v = up_pop(u)) || !(k = up_pop(u))) return SF_ERR;
            if (v->kind != PV_STR || k->kind != PV_STR) return up_err(u, "STACK_GLOBAL of non-strings");
            if (up_global(u, k->s, k->len, v->s, v->len) != SF_OK) return SF_ERR;
            break;
        case '}': /* EMPTY_DICT */
            if (up_push(u, up_new(u, PV_DICT)) != SF_OK) return SF_ERR;
            break;
        case ')': /* EMPTY_TUPLE */
            if (up_push(u, up_new(u, PV_TUPLE)) != SF_OK) return SF_ERR;
            break;
        case '(': /* MARK */
            if (up_push(u, &u->mark) != SF_OK) return SF_ERR;
            break;
        case 't': /* TUPLE: the items above the topmost MARK, which goes */
            if (up_find_mark(u, &at) != SF_OK || up_tuple_of(u, at + 1, at) != SF_OK) return SF_ERR;
            break;
        case 0x85: case 0x86: case 0x87: /* TUPLE1..3 */
            len = (size_t)(op - 0x84);
            if (u->sp < len) return up_err(u, "pickle stack underflow");
            for (size_t i = u->sp - len; i < u->sp; i++)
                if (u->stack[i] == &u->mark) return up_err(u, "MARK inside TUPLEn");
            if (up_tuple_of(u, u->sp - len, u->sp - len) != SF_OK) return SF_ERR;
            break;
        case 'X': /* BINUNICODE */
        case 0x8c: /* SHORT_BINUNICODE */
            len = op == 'X' ? 4 : 1;
            if (up_need(u, len) != SF_OK) return SF_ERR;
            at = (size_t)up_le(a, (int)len);
            u->pos += len;
            if (up_need(u, at) != SF_OK) return SF_ERR;
            if (!(v = up_new(u, PV_STR))) return SF_ERR;
            v->s = (const char *)u->p + u->pos, v->len = at;
            u->pos += at;
            if (up_push(u, v) != SF_OK) return SF_ERR;
            break;
        case 'J': case 'K': case 'M': /* BININT, BININT1, BININT2 */
            len = op == 'J' ? 4 : op == 'K' ? 1 : 2;
            if (up_need(u, len) != SF_OK || !(v = up_new(u, PV_INT))) return SF_ERR;
            v->i = op == 'J' ? (int64_t)(int32_t)(uint32_t)up_le(a, 4) : (int64_t)up_le(a, (int)len);
            u->pos += len;
            if (up_push(u, v) != SF_OK) return SF_ERR;
            break;
        case 0x8a: /* LONG1: n little-endian two's complement bytes */
            if (up_need(u, 1) != SF_OK) return SF_ERR;
            len = a[0];
            if (len > 8) return up_err(u, "an integer wider than 64 bits");
            if (up_need(u, 1 + len) != SF_OK || !(v = up_new(u, PV_INT))) return SF_ERR;
            v->i = (int64_t)up_le(a + 1, (int)len);
            if (len > 0 && len < 8 && (a[len] & 0x80)) v->i -= (int64_t)1 << (8 * len); /* sign */
            u->pos += 1 + len;
            if (up_push(u, v) != SF_OK) return SF_ERR;
            break;
        case 0x88: case 0x89: /* NEWTRUE, NEWFALSE */
            if (!(v = up_new(u, PV_BOOL))) return SF_ERR;
            v->i = op == 0x88;
            if (up_push(u, v) != SF_OK) return SF_ERR;
            break;
        case 'N':
            if (up_push(u, up_new(u, PV_NONE)) != SF_OK) return SF_ERR;
            break;
        case 'q': case 'r': /* BINPUT, LONG_BINPUT */
            len = op == 'q' ? 1 : 4;
            if (up_need(u, len) != SF_OK) return SF_ERR;
            at = (size_t)up_le(a, (int)len);
            u->pos += len;
            if (up_memo_put(u, at) != SF_OK) return SF_ERR;
            break;
        case 0x94: /* MEMOIZE */
            if (up_memo_put(u, memo_next++) != SF_OK) return SF_ERR;
            break;
        case 'h': case 'j': /* BINGET, LONG_BINGET */
            len = op == 'h' ? 1 : 4;
            if (up_need(u, len) != SF_OK) return SF_ERR;
            at = (size_t)up_le(a, (int)len);
            u->pos += len;
            if (up_memo_get(u, at) != SF_OK) return SF_ERR;
            break;
        case 'Q': /* BINPERSID */
            if (up_persid(u) != SF_OK) return SF_ERR;
            break;
        case 'R': /* REDUCE */
            if (up_reduce(u) != SF_OK) return SF_ERR;
            break;
        case 's': /* SETITEM */
            if (!(v = up_pop(u)) || !(k = up_pop(u))) return SF_ERR;
            if (u->sp == 0) return up_err(u, "SETITEM without a dict");
            if (up_setitem(u, u->stack[u->sp - 1], k, v) != SF_OK) return SF_ERR;
            break;
        case 'u': /* SETITEMS */
            if (up_find_mark(u, &at) != SF_OK) return SF_ERR;
            if (at == 0 || (u->sp - at - 1) % 2) return up_err(u, "SETITEMS with an odd count or no dict");
            d = u->stack[at - 1];
            for (size_t i = at + 1; i < u->sp; i += 2) {
                if (u->stack[i] == &u->mark || u->stack[i + 1] == &u->mark) return up_err(u, "MARK inside SETITEMS");
                if (up_setitem(u, d, u->stack[i], u->stack[i + 1]) != SF_OK) return SF_ERR;
            }
            u->sp = at;
            break;
        case 'b': /* BUILD: an OrderedDict's __dict__ (the state dict's _metadata): checked, ignored */
            if (!(v = up_pop(u))) return SF_ERR;
            if (u->sp == 0 || u->stack[u->sp - 1]->kind != PV_DICT || (v->kind != PV_DICT && v->kind != PV_NONE))
                return up_err(u, "BUILD of something other than a dict's attributes");
            break;
        case '.': /* STOP */
            if (u->sp != 1 || u->stack[0]->kind != PV_DICT) return up_err(u, "the pickle does not end with one dict");
            *out = u->stack[0];
            return SF_OK;
        default:
            u->pos--;
            return sf_fail("sae.pth: data.pkl byte %zu: pickle opcode 0x%02x ('%c') is not one a state dict of "
                           "tensors uses: refused, not a plain state dict",
                           u->pos, op, op >= 0x20 && op < 0x7f ? op : '?');
        }
    }
}

int sae_pth_check_pickle(const void *data, size_t size) {
    unpickler u = {.p = data, .size = size};
    u.mark.kind = PV_MARK;
    pv *dict = NULL;
    int rc = up_run(&u, &dict);
    up_free(&u);
    return rc;
}

/* ---------------------------------------------------------------------------------------------- */
/* The zip archive                                                                                 */

struct sae_pth {
    zip_t *z;
    sae_pth_tensor *t;
    size_t count;
};

void sae_pth_close(sae_pth *p) {
    if (!p) return;
    for (size_t i = 0; i < p->count; i++) free(p->t[i].name);
    free(p->t);
    if (p->z) zip_discard(p->z);
    free(p);
}

size_t sae_pth_count(const sae_pth *p) { return p->count; }
const sae_pth_tensor *sae_pth_at(const sae_pth *p, size_t i) { return i < p->count ? &p->t[i] : NULL; }

const sae_pth_tensor *sae_pth_find(const sae_pth *p, const char *name) {
    for (size_t i = 0; i < p->count; i++)
        if (!strcmp(p->t[i].name, name)) return &p->t[i];
    return NULL;
}

static int zip_fail(zip_t *z, const char *what) {
    return sf_fail("sae.pth: %s: %s", what, z ? zip_strerror(z) : "?");
}

/* Reads the whole entry idx (at most max bytes) into a new buffer. */
static int read_entry(zip_t *z, zip_uint64_t idx, size_t max, uint8_t **out, size_t *len) {
    zip_stat_t st;
    if (zip_stat_index(z, idx, 0, &st) != 0 || !(st.valid & ZIP_STAT_SIZE)) return zip_fail(z, "cannot stat an entry");
    if (st.size > max) return sf_fail("sae.pth: entry %s is %llu bytes, more than %zu", st.name ? st.name : "?",
                                      (unsigned long long)st.size, max);
    uint8_t *b = sf_alloc("a sae.pth entry", st.size ? (size_t)st.size : 1, 1);
    if (!b) return SF_ERR;
    zip_file_t *f = zip_fopen_index(z, idx, 0);
    zip_int64_t got = f ? zip_fread(f, b, st.size) : -1;
    if (f) zip_fclose(f);
    if (got < 0 || (zip_uint64_t)got != st.size) {
        free(b);
        return zip_fail(z, "cannot read an entry (truncated or corrupt archive)");
    }
    *out = b, *len = (size_t)st.size;
    return SF_OK;
}

/* Finds PREFIX/data.pkl (one directory level), checks PREFIX/byteorder, unpickles, and records every
 * tensor with its storage entry PREFIX/data/KEY, whose size must be the storage's. */
static sae_pth *pth_read(zip_t *z) {
    sae_pth *p = sf_zalloc("a sae.pth reader", 1, sizeof *p);
    if (!p) {
        zip_discard(z);
        return NULL;
    }
    p->z = z;
    zip_int64_t n = zip_get_num_entries(z, 0), pkl = -1;
    char prefix[256] = "";
    for (zip_int64_t i = 0; i < n; i++) {
        const char *name = zip_get_name(z, (zip_uint64_t)i, ZIP_FL_ENC_RAW);
        const char *slash = name ? strchr(name, '/') : NULL;
        if (!slash || strcmp(slash, "/data.pkl") != 0 || (size_t)(slash - name) >= sizeof prefix) continue;
        if (pkl >= 0) {
            sf_fail("sae.pth: two data.pkl records: not one torch.save file");
            goto fail;
        }
        pkl = i;
        memcpy(prefix, name, (size_t)(slash - name));
        prefix[slash - name] = '\0';
    }
    if (pkl < 0) {
        sf_fail("sae.pth: no ARCHIVE/data.pkl in the zip: not a torch.save file (or saved with "
                "_use_new_zipfile_serialization=False: load and save it again with a torch from 1.6 on)");
        goto fail;
    }
    char name[512];
    snprintf(name, sizeof name, "%s/byteorder", prefix);
    zip_int64_t bo = zip_name_locate(z, name, ZIP_FL_ENC_RAW);
    uint8_t *buf = NULL;
    size_t len = 0;
    if (bo >= 0) {
        if (read_entry(z, (zip_uint64_t)bo, 16, &buf, &len) != SF_OK) goto fail;
        int little = len == 6 && !memcmp(buf, "little", 6);
        free(buf);
        if (!little) {
            sf_fail("sae.pth: byteorder is not 'little' (saved on a big-endian machine): not supported");
            goto fail;
        }
    }
    if (read_entry(z, (zip_uint64_t)pkl, PTH_MAX_PICKLE, &buf, &len) != SF_OK) goto fail;
    unpickler u = {.p = buf, .size = len};
    u.mark.kind = PV_MARK;
    pv *dict = NULL;
    int rc = up_run(&u, &dict);
    if (rc == SF_OK && !(p->t = sf_zalloc("sae.pth tensors", dict->count / 2 + 1, sizeof *p->t))) rc = SF_ERR;
    for (size_t i = 0; rc == SF_OK && i < dict->count; i += 2) {
        const pv *key = dict->items[i], *t = dict->items[i + 1];
        if (key->kind != PV_STR || key->len == 0 || key->len > 255 || memchr(key->s, '\0', key->len)) {
            rc = sf_fail("sae.pth: a state dict key that is not a name");
            break;
        }
        if (t->kind != PV_TENSOR) {
            rc = sf_fail("sae.pth: '%.*s' is not a tensor: not a state dict of tensors", (int)key->len, key->s);
            break;
        }
        sae_pth_tensor *o = &p->t[p->count];
        if (!(o->name = sf_alloc("a tensor name", key->len + 1, 1))) {
            rc = SF_ERR;
            break;
        }
        memcpy(o->name, key->s, key->len);
        o->name[key->len] = '\0';
        p->count++;
        o->dtype = t->dtype, o->ndim = t->ndim, o->offset = t->offset;
        memcpy(o->shape, t->shape, sizeof o->shape);
        snprintf(name, sizeof name, "%s/data/%.*s", prefix, (int)t->storage->len, t->storage->s);
        o->entry = zip_name_locate(z, name, ZIP_FL_ENC_RAW);
        zip_stat_t st;
        size_t bytes;
        if (o->entry < 0 || zip_stat_index(z, (zip_uint64_t)o->entry, 0, &st) != 0) {
            rc = sf_fail("sae.pth: tensor '%s': no storage record %s", o->name, name);
            break;
        }
        if (!sf_mul_size((size_t)t->storage->i, sf_dtype_size(t->dtype), &bytes) || st.size != bytes) {
            rc = sf_fail("sae.pth: tensor '%s': storage %s holds %llu bytes, the pickle says %lld %s elements",
                         o->name, name, (unsigned long long)st.size, (long long)t->storage->i, sf_dtype_name(t->dtype));
            break;
        }
    }
    up_free(&u);
    free(buf);
    if (rc == SF_OK) return p;
fail:
    sae_pth_close(p);
    return NULL;
}

sae_pth *sae_pth_open(const char *path) {
    int err = 0;
    zip_t *z = zip_open(path, ZIP_RDONLY, &err);
    if (!z) {
        zip_error_t ze;
        zip_error_init_with_code(&ze, err);
        sf_fail("%s: not a torch.save zip archive: %s", path, zip_error_strerror(&ze));
        zip_error_fini(&ze);
        return NULL;
    }
    sae_pth *p = pth_read(z);
    if (!p) sf_fail("%s: %s", path, sf_last_error());
    return p;
}

sae_pth *sae_pth_open_mem(const void *data, size_t size) {
    zip_error_t ze;
    zip_error_init(&ze);
    zip_source_t *src = zip_source_buffer_create(data, size, 0, &ze);
    zip_t *z = src ? zip_open_from_source(src, ZIP_RDONLY, &ze) : NULL;
    if (!z) {
        sf_fail("sae.pth: not a zip archive: %s", zip_error_strerror(&ze));
        if (src) zip_source_free(src);
        zip_error_fini(&ze);
        return NULL;
    }
    zip_error_fini(&ze);
    return pth_read(z);
}

int sae_pth_read(sae_pth *p, const sae_pth_tensor *t, float *dst) {
    size_t es = sf_dtype_size(t->dtype), numel = 1, skip;
    for (int d = 0; d < t->ndim; d++) numel *= (size_t)t->shape[d]; /* bounded by the storage (checked) */
    if (!sf_mul_size((size_t)t->offset, es, &skip)) return sf_fail("sae.pth: tensor '%s': bad offset", t->name);
    zip_file_t *f = zip_fopen_index(p->z, (zip_uint64_t)t->entry, 0);
    if (!f) return zip_fail(p->z, "cannot open a storage record");
    enum { CHUNK = 1 << 20 };
    uint8_t *buf = sf_alloc("a sae.pth read buffer", CHUNK, 1);
    int rc = buf ? SF_OK : SF_ERR;
    while (rc == SF_OK && skip > 0) { /* the tensor's offset into its storage */
        size_t want = skip < CHUNK ? skip : CHUNK;
        if (zip_fread(f, buf, want) != (zip_int64_t)want) rc = zip_fail(p->z, "storage record truncated");
        skip -= want;
    }
    for (size_t done = 0; rc == SF_OK && done < numel;) {
        size_t items = numel - done < CHUNK / es ? numel - done : CHUNK / es;
        if (zip_fread(f, buf, items * es) != (zip_int64_t)(items * es)) {
            rc = zip_fail(p->z, "storage record truncated or corrupt");
            break;
        }
        sf_convert_to_f32(dst + done, buf, t->dtype, items);
        done += items;
    }
    free(buf);
    zip_fclose(f);
    return rc;
}
