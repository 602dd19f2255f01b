/* Memory and sizes: the one place where allocation failures and size overflows become errors.
 *
 * Stages and the core allocate through sf_alloc / sf_zalloc / sf_realloc / sf_strdup, which check
 * the element-count product and, when memory runs out, record an error that names what was being
 * allocated and how big, instead of aborting: the caller returns SF_ERR and the runtime stops the
 * pipeline with that message (exit 1, nothing marked complete). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow.h"

/* "12.3 MB", "4.0 GB": a size a reader can compare with `ulimit` or free memory. */
static void human(double bytes, char *out, size_t n) {
    static const char *units[] = {"bytes", "kB", "MB", "GB", "TB", "PB", "EB"};
    int u = 0;
    while (bytes >= 1000 && u < 6) bytes /= 1000, u++;
    if (u == 0) snprintf(out, n, "%.0f bytes", bytes);
    else snprintf(out, n, "%.1f %s", bytes, units[u]);
}

static void *failed(const char *what, size_t count, size_t size, int overflow) {
    char h[32];
    human((double)count * (double)size, h, sizeof h);
    if (overflow) sf_fail("cannot allocate %s: %zu x %zu bytes overflows the address space (%s)", what, count, size, h);
    else sf_fail("out of memory allocating %s (%zu x %zu bytes = %s)", what, count, size, h);
    return NULL;
}

void *sf_alloc(const char *what, size_t n, size_t size) {
    size_t bytes;
    if (!sf_mul_size(n, size, &bytes)) return failed(what, n, size, 1);
    void *p = malloc(bytes ? bytes : 1);
    return p ? p : failed(what, n, size, 0);
}

void *sf_zalloc(const char *what, size_t n, size_t size) {
    size_t bytes;
    if (!sf_mul_size(n, size, &bytes)) return failed(what, n, size, 1);
    void *p = calloc(n ? n : 1, size ? size : 1);
    return p ? p : failed(what, n, size, 0);
}

void *sf_realloc(void *old, const char *what, size_t n, size_t size) {
    size_t bytes;
    if (!sf_mul_size(n, size, &bytes)) return failed(what, n, size, 1);
    void *p = realloc(old, bytes ? bytes : 1);
    return p ? p : failed(what, n, size, 0);
}

char *sf_strdup(const char *what, const char *s) {
    size_t n = strlen(s) + 1;
    char *d = sf_alloc(what, n, 1);
    if (d) memcpy(d, s, n);
    return d;
}

int sf_tensor_size(const char *what, sf_dtype t, int ndim, const int64_t *shape, size_t *nbytes) {
    size_t b = sf_dtype_size(t);
    if (!b) return sf_fail("%s: unknown dtype %d", what, (int)t);
    if (ndim < 0 || ndim > SF_MAX_DIMS) return sf_fail("%s: %d dimensions (at most %d)", what, ndim, SF_MAX_DIMS);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return sf_fail("%s: dimension %d is negative (%lld)", what, i, (long long)shape[i]);
        if (!sf_mul_size(b, (size_t)shape[i], &b)) {
            char dims[200] = "";
            for (int j = 0; j < ndim; j++)
                snprintf(dims + strlen(dims), sizeof dims - strlen(dims), "%s%lld", j ? " x " : "", (long long)shape[j]);
            return sf_fail("%s: shape %s of %s overflows the address space", what, dims, sf_dtype_name(t));
        }
    }
    *nbytes = b;
    return SF_OK;
}
