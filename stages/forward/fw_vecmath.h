/* fw_vecmath.h — elementwise math that vectorizes: exp, reciprocal, sigmoid and SiLU without libm
 * calls or divides, and float sums in partial sums, for the row-wise loops of the forward
 * (model_forward.c) and of the trainer (stages/lm_trainer). Functions that loop over them are
 * marked FW_VECTOR to be compiled for AVX-512, AVX2 and baseline x86-64, picked at run time. */
#ifndef FW_VECMATH_H
#define FW_VECMATH_H

#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define FW_VECTOR __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FW_VECTOR
#endif

/* exp(x) to ~2e-7 relative error, branch-free and call-free so loops over it vectorize (libm's
 * expf is one call per element). 2^(x log2 e) = 2^n 2^f with n the nearest integer and
 * |f| <= 1/2: 2^f by its Taylor series to degree 6 (error < 2e-7), 2^n built in the exponent bits.
 * x is clamped to [-87, 88], so exp of very negative x is ~1e-38 instead of 0. */
static inline float fw_exp(float x) {
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float t = x * 1.44269504088896341f;
    float r = t + 12582912.0f; /* 1.5 * 2^23: the low mantissa bits of r hold round(t) */
    float f = t - (r - 12582912.0f);
    int32_t ri;
    memcpy(&ri, &r, sizeof ri);
    float p = 1.54035304e-4f;
    p = p * f + 1.33335581e-3f;
    p = p * f + 9.61812911e-3f;
    p = p * f + 5.55041087e-2f;
    p = p * f + 2.40226507e-1f;
    p = p * f + 6.93147181e-1f;
    p = p * f + 1.0f;
    int32_t bits = (ri - 0x4B400000 + 127) * (1 << 23);
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* 1 / y for y in [1, 2^126], without a divide (vdivps is the bottleneck of SiLU): a first guess
 * from the exponent bits (relative error < 1/8), then three Newton steps r(2 - y r), each of which
 * squares the error, to < 1e-7. */
static inline float fw_recip(float y) {
    int32_t bits;
    memcpy(&bits, &y, sizeof bits);
    bits = 0x7EF311C7 - bits;
    float r;
    memcpy(&r, &bits, sizeof r);
    r = r * (2.0f - y * r);
    r = r * (2.0f - y * r);
    return r * (2.0f - y * r);
}

/* sigmoid(x) = 1 / (1 + exp(-x)). Below -80 the sigmoid is below 1e-33 and exp(-x) would push it
 * out of the normal floats, so x is clamped there. */
static inline float fw_sigmoid(float x) {
    float t = x < -80.0f ? 80.0f : -x;
    return fw_recip(1.0f + fw_exp(t));
}

/* x sigmoid(x) */
static inline float fw_silu(float x) { return x * fw_sigmoid(x); }

/* A float sum in 16 partial sums, which the compiler vectorizes without -ffast-math. */
static inline float sum_f32(const float *x, int n) {
    float part[16] = {0}, s = 0;
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++) part[k] += x[i + k];
    for (int k = 0; k < 16; k++) s += part[k];
    for (; i < n; i++) s += x[i];
    return s;
}

static inline float max_f32(const float *x, int n) {
    float m = x[0];
    for (int i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

#endif
