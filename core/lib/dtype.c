/* Element types: sizes, names, and conversions to and from float32. */
#include <string.h>

#include "saeflow.h"

static const struct { const char *name; size_t size; } dtypes[SF_DTYPE_COUNT] = {
    [SF_F32] = {"F32", 4}, [SF_F64] = {"F64", 8}, [SF_F16] = {"F16", 2}, [SF_BF16] = {"BF16", 2},
    [SF_I8] = {"I8", 1},   [SF_I16] = {"I16", 2}, [SF_I32] = {"I32", 4}, [SF_I64] = {"I64", 8},
    [SF_U8] = {"U8", 1},   [SF_U16] = {"U16", 2}, [SF_U32] = {"U32", 4}, [SF_U64] = {"U64", 8},
    [SF_BOOL] = {"BOOL", 1},
};

size_t sf_dtype_size(sf_dtype t) { return (unsigned)t < SF_DTYPE_COUNT ? dtypes[t].size : 0; }
const char *sf_dtype_name(sf_dtype t) { return (unsigned)t < SF_DTYPE_COUNT ? dtypes[t].name : "?"; }

int sf_dtype_parse(const char *name, sf_dtype *out) {
    for (int i = 0; i < SF_DTYPE_COUNT; i++)
        if (strcmp(dtypes[i].name, name) == 0) {
            *out = (sf_dtype)i;
            return SF_OK;
        }
    return sf_fail("unknown dtype '%s'", name);
}

int64_t sf_tensor_numel(const sf_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

float sf_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t sf_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1); /* round to nearest even */
    return (uint16_t)(u >> 16);
}

float sf_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0x1f) u = sign | 0x7f800000u | (man << 13); /* inf, NaN */
    else if (exp) u = sign | ((exp + 112) << 23) | (man << 13);
    else if (!man) u = sign;
    else { /* subnormal: normalise */
        int e = -1;
        do man <<= 1, e++; while (!(man & 0x400));
        u = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t sf_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000, abs = u & 0x7fffffffu;
    if (abs > 0x7f800000u) return (uint16_t)(sign | 0x7e00); /* NaN */
    if (abs >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* rounds to inf */
    if (abs < 0x38800000u) { /* subnormal half (or zero): value = abs * 2^24 rounded */
        if (abs < 0x33000000u) return (uint16_t)sign;
        uint32_t man = (abs & 0x7fffff) | 0x800000, shift = 126 - (abs >> 23);
        uint32_t h = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((abs - 0x38000000u) >> 13), rem = abs & 0x1fff; /* rebias 127 -> 15 */
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++; /* nearest even; may carry into exp */
    return (uint16_t)(sign | h);
}

/* Elements may be unaligned (tensors inside messages are), hence memcpy loads. */
#define LOAD(type, p, i) ({ type v_; memcpy(&v_, (const char *)(p) + (i) * sizeof(type), sizeof(type)); v_; })

void sf_convert_to_f32(float *dst, const void *src, sf_dtype t, size_t n) {
    switch (t) {
    case SF_F32: memcpy(dst, src, n * 4); break;
    case SF_F64: for (size_t i = 0; i < n; i++) dst[i] = (float)LOAD(double, src, i); break;
    case SF_F16: for (size_t i = 0; i < n; i++) dst[i] = sf_f16_to_f32(LOAD(uint16_t, src, i)); break;
    case SF_BF16: for (size_t i = 0; i < n; i++) dst[i] = sf_bf16_to_f32(LOAD(uint16_t, src, i)); break;
    case SF_I8: for (size_t i = 0; i < n; i++) dst[i] = (float)LOAD(int8_t, src, i); break;
    case SF_I16: for (size_t i = 0; i < n; i++) dst[i] = (float)LOAD(int16_t, src, i); break;
    case SF_I32: for (size_t i = 0; i < n; i++) dst[i] = (float)LOAD(int32_t, src, i); break;
    case SF_I64: for (size_t i = 0; i < n; i++) dst[i] = (float)LOAD(int64_t, src, i); break;
    case SF_U8: case SF_BOOL: for (size_t i = 0; i < n; i++) dst[i] = (float)LOAD(uint8_t, src, i); break;
    case SF_U16: for (size_t i = 0; i < n; i++) dst[i] = (float)LOAD(uint16_t, src, i); break;
    case SF_U32: for (size_t i = 0; i < n; i++) dst[i] = (float)LOAD(uint32_t, src, i); break;
    case SF_U64: for (size_t i = 0; i < n; i++) dst[i] = (float)LOAD(uint64_t, src, i); break;
    default: memset(dst, 0, n * 4); break;
    }
}

void sf_convert_from_f32(void *dst, sf_dtype t, const float *src, size_t n) {
    uint16_t *h = dst;
    switch (t) {
    case SF_F32: memcpy(dst, src, n * 4); break;
    case SF_BF16: for (size_t i = 0; i < n; i++) h[i] = sf_f32_to_bf16(src[i]); break;
    case SF_F16: for (size_t i = 0; i < n; i++) h[i] = sf_f32_to_f16(src[i]); break;
    default: break; /* only float targets are supported; callers check */
    }
}

int sf_tensor_to_f32(const sf_tensor *t, float *dst, size_t capacity) {
    int64_t n = sf_tensor_numel(t);
    if ((size_t)n > capacity) return sf_fail("tensor of %lld elements does not fit %zu", (long long)n, capacity);
    sf_convert_to_f32(dst, t->data, t->dtype, (size_t)n);
    return SF_OK;
}
