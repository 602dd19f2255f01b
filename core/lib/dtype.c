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

/* The float32 -> 16-bit roundings, on bit patterns, without branches: static and inline so the
 * conversion loops below vectorise (the exported functions would be called per element, through
 * the PLT). Both round to nearest even, exactly as numpy's astype(float16) and torch's
 * to(bfloat16) (tests/shards-roundtrip). */
static inline uint32_t f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline uint16_t bf16_round(uint32_t u) {
    uint32_t nan = (u & 0x7fffffffu) > 0x7f800000u;
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1)) >> 16;
    return (uint16_t)(nan ? (u >> 16) | 0x40 : r); /* a NaN stays quiet */
}

/* Normal halves: rebias the exponent (127 -> 15) and round the 13 dropped bits to nearest even
 * (a carry may reach the exponent, and 65520 and up become inf). Subnormal halves: adding 0.5f
 * aligns the float's ulp with the half's (2^-24), so the FPU's round-to-nearest-even rounds
 * (core/meson.build builds this file with -fno-trapping-math, so that add may be speculated). */
static inline uint16_t f16_round(uint32_t u) {
    uint32_t sign = (u >> 16) & 0x8000, a = u & 0x7fffffffu;
    float fa, sub;
    memcpy(&fa, &a, 4);
    sub = fa + 0.5f;
    uint32_t h_sub = f32_bits(sub) - 0x3f000000u;
    uint32_t h_norm = (a - 0x38000000u + 0xfffu + ((a >> 13) & 1)) >> 13;
    uint32_t h = a < 0x38800000u ? h_sub : h_norm;
    h = a >= 0x47800000u ? 0x7c00u : h;
    h = a > 0x7f800000u ? 0x7e00u : h; /* NaN: quiet */
    return (uint16_t)(sign | h);
}

static inline float bf16_widen(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float sf_bf16_to_f32(uint16_t h) { return bf16_widen(h); }
uint16_t sf_f32_to_bf16(float f) { return bf16_round(f32_bits(f)); }
uint16_t sf_f32_to_f16(float f) { return f16_round(f32_bits(f)); }

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

/* Elements may be unaligned (tensors inside messages are), hence memcpy loads. */
#define LOAD(type, p, i) ({ type v_; memcpy(&v_, (const char *)(p) + (i) * sizeof(type), sizeof(type)); v_; })

void sf_convert_to_f32(float *dst, const void *src, sf_dtype t, size_t n) {
    switch (t) {
    case SF_F32: memcpy(dst, src, n * 4); break;
    case SF_F64: for (size_t i = 0; i < n; i++) dst[i] = (float)LOAD(double, src, i); break;
    case SF_F16: for (size_t i = 0; i < n; i++) dst[i] = sf_f16_to_f32(LOAD(uint16_t, src, i)); break;
    case SF_BF16: for (size_t i = 0; i < n; i++) dst[i] = bf16_widen(LOAD(uint16_t, src, i)); break;
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
    case SF_BF16: for (size_t i = 0; i < n; i++) h[i] = bf16_round(f32_bits(src[i])); break;
    case SF_F16: for (size_t i = 0; i < n; i++) h[i] = f16_round(f32_bits(src[i])); break;
    default: break; /* only float targets are supported; callers check */
    }
}

int sf_tensor_to_f32(const sf_tensor *t, float *dst, size_t capacity) {
    int64_t n = sf_tensor_numel(t);
    if ((size_t)n > capacity) return sf_fail("tensor of %lld elements does not fit %zu", (long long)n, capacity);
    sf_convert_to_f32(dst, t->data, t->dtype, (size_t)n);
    return SF_OK;
}
