/* Writes to stdout, one after another, MessagePack messages encoded by saeflow's C encoder: one per
 * dtype and rank 0-3 (and one empty tensor), {"dtype": NAME, "rank": R, "a": tensor}, with values
 * test_python_interop.py builds itself with numpy:
 *   element 0: the dtype's largest value (its max for integers, FLT_MAX / DBL_MAX / 65504 / the
 *              largest bf16 for floats, true for bool), the last element (if more than one): the
 *              smallest (min for integers, minus that for floats, false for bool);
 *   element i between: floats (i - 5) * 0.25, signed integers i * 5 - 20, unsigned i * 9, bool i % 3 == 0.
 * usage: interop_encode > messages.bin */
#include <float.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow.h"
#include "sf_internal.h"

static void put(void *data, sf_dtype t, size_t i, double f, int64_t s, uint64_t u, int b) {
    char *p = (char *)data + i * sf_dtype_size(t);
    switch (t) {
    case SF_F32: { float v = (float)f; memcpy(p, &v, 4); break; }
    case SF_F64: memcpy(p, &f, 8); break;
    case SF_F16: { uint16_t v = sf_f32_to_f16((float)f); memcpy(p, &v, 2); break; }
    case SF_BF16: { uint16_t v = sf_f32_to_bf16((float)f); memcpy(p, &v, 2); break; }
    case SF_I8: { int8_t v = (int8_t)s; memcpy(p, &v, 1); break; }
    case SF_I16: { int16_t v = (int16_t)s; memcpy(p, &v, 2); break; }
    case SF_I32: { int32_t v = (int32_t)s; memcpy(p, &v, 4); break; }
    case SF_I64: memcpy(p, &s, 8); break;
    case SF_U8: { uint8_t v = (uint8_t)u; memcpy(p, &v, 1); break; }
    case SF_U16: { uint16_t v = (uint16_t)u; memcpy(p, &v, 2); break; }
    case SF_U32: { uint32_t v = (uint32_t)u; memcpy(p, &v, 4); break; }
    case SF_U64: memcpy(p, &u, 8); break;
    case SF_BOOL: *p = (char)(b != 0); break;
    default: abort();
    }
}

int main(void) {
    static const struct { int ndim; int64_t shape[3]; } shapes[] = {{0, {0}}, {1, {5}}, {2, {2, 3}}, {3, {2, 3, 4}}, {2, {0, 3}}};
    for (int t = 0; t < SF_DTYPE_COUNT; t++) {
        size_t bits = 8 * sf_dtype_size((sf_dtype)t);
        int64_t smax = (int64_t)(UINT64_MAX >> (65 - bits)), smin = -smax - 1;
        uint64_t umax = UINT64_MAX >> (64 - bits);
        double fmax = t == SF_F32 ? FLT_MAX : t == SF_F64 ? DBL_MAX : t == SF_F16 ? 65504.0 : 0x1.fep127;
        for (size_t k = 0; k < sizeof shapes / sizeof *shapes; k++) {
            size_t n = 1;
            for (int d = 0; d < shapes[k].ndim; d++) n *= (size_t)shapes[k].shape[d];
            sf_msg *m = sf_msg_new();
            sf_msg_put_str(m, "dtype", sf_dtype_name((sf_dtype)t));
            sf_msg_put_int(m, "rank", shapes[k].ndim);
            void *a = sf_msg_put_tensor_inplace(m, "a", (sf_dtype)t, shapes[k].ndim, shapes[k].shape);
            for (size_t i = 0; i < n; i++) {
                if (i == 0) put(a, (sf_dtype)t, i, fmax, smax, umax, 1);
                else if (i == n - 1) put(a, (sf_dtype)t, i, -fmax, smin, 0, 0);
                else put(a, (sf_dtype)t, i, ((double)i - 5) * 0.25, (int64_t)i * 5 - 20, (uint64_t)i * 9, i % 3 == 0);
            }
            size_t len;
            void *buf = sf_msg_release(m, &len);
            if (fwrite(buf, 1, len, stdout) != len) return 1;
            free(buf);
        }
    }
    return 0;
}
