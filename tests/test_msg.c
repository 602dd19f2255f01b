/* Message codec: round trips for every dtype and rank, and corrupt input that must fail cleanly. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow.h"
#include "sf_check.h"

static void round_trip_tensors(void) {
    for (int t = 0; t < SF_DTYPE_COUNT; t++)
        for (int ndim = 0; ndim <= 4; ndim++) {
            int64_t shape[4] = {3, 1, 4, 2};
            size_t n = 1;
            for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
            size_t nbytes = n * sf_dtype_size((sf_dtype)t);
            unsigned char *data = malloc(nbytes + 1);
            for (size_t i = 0; i < nbytes; i++) data[i] = (unsigned char)(i * 131 + (size_t)t);
            sf_msg *m = sf_msg_new();
            sf_msg_put_str(m, "name", "x");
            sf_msg_put_tensor(m, "t", (sf_dtype)t, ndim, shape, data);
            sf_msg_put_int(m, "after", -7);
            size_t len;
            const void *b = sf_msg_bytes(m, &len);
            void *copy = malloc(len);
            memcpy(copy, b, len);
            sf_msg *r = sf_msg_parse(copy, len);
            CHECK(r, "dtype %s rank %d: %s", sf_dtype_name((sf_dtype)t), ndim, sf_last_error());
            sf_tensor tt;
            int64_t after;
            if (r) {
                CHECK(sf_msg_get_tensor(r, "t", &tt) == SF_OK, "get_tensor: %s", sf_last_error());
                CHECK(tt.dtype == (sf_dtype)t && tt.ndim == ndim && tt.nbytes == nbytes, "dtype/rank/size differ");
                CHECK(memcmp(tt.data, data, nbytes) == 0, "data differs");
                for (int i = 0; i < ndim; i++) CHECK(tt.shape[i] == shape[i], "shape differs");
                CHECK(sf_msg_get_int(r, "after", &after) == SF_OK && after == -7, "field after the tensor");
            }
            sf_msg_free(r);
            sf_msg_free(m);
            free(copy);
            free(data);
        }
}

static void round_trip_scalars(void) {
    sf_msg *m = sf_msg_new();
    sf_msg_put_int(m, "big", INT64_MIN);
    sf_msg_put_int(m, "pos", 1ll << 62);
    sf_msg_put_float(m, "f", 0.25);
    sf_msg_put_bool(m, "yes", 1);
    const char *labels[] = {"en", "ja", "日本語"};
    sf_msg_put_strs(m, "labels", labels, 3);
    sf_msg_put_strn(m, "bytes", "a\0b", 3);
    size_t len;
    const void *b = sf_msg_bytes(m, &len);
    sf_msg *r = sf_msg_parse(b, len);
    CHECK(r != NULL, "parse: %s", sf_last_error());
    int64_t i;
    double f;
    int yes;
    const char *s;
    size_t sl, n;
    CHECK(sf_msg_get_int(r, "big", &i) == SF_OK && i == INT64_MIN, "int64 min");
    CHECK(sf_msg_get_int(r, "pos", &i) == SF_OK && i == 1ll << 62, "large positive");
    CHECK(sf_msg_get_float(r, "f", &f) == SF_OK && f == 0.25, "float");
    CHECK(sf_msg_get_float(r, "pos", &f) == SF_OK && f == (double)(1ll << 62), "int read as float");
    CHECK(sf_msg_get_bool(r, "yes", &yes) == SF_OK && yes == 1, "bool");
    CHECK(sf_msg_get_strs_count(r, "labels", &n) == SF_OK && n == 3, "strs count");
    CHECK(sf_msg_get_strs_at(r, "labels", 2, &s, &sl) == SF_OK && sl == strlen("日本語") && !memcmp(s, "日本語", sl), "utf-8 string");
    CHECK(sf_msg_get_strs_at(r, "labels", 3, &s, &sl) == SF_ERR, "index past the end must fail");
    CHECK(sf_msg_get_str(r, "bytes", &s, &sl) == SF_OK && sl == 3 && s[1] == 0, "embedded NUL");
    CHECK(sf_msg_get_int(r, "missing", &i) == SF_ERR && strstr(sf_last_error(), "missing"), "missing key names it: %s", sf_last_error());
    CHECK(sf_msg_get_int(r, "f", &i) == SF_ERR && strstr(sf_last_error(), "not an integer"), "type error: %s", sf_last_error());
    /* clone keeps every field, and can be extended */
    sf_msg *c = sf_msg_clone(r);
    sf_msg_put_int(c, "extra", 5);
    const void *cb = sf_msg_bytes(c, &len);
    sf_msg *cr = sf_msg_parse(cb, len);
    CHECK(cr && sf_msg_get_float(cr, "f", &f) == SF_OK && f == 0.25 && sf_msg_get_int(cr, "extra", &i) == SF_OK && i == 5, "clone");
    sf_msg_free(cr);
    sf_msg_free(c);
    sf_msg_free(r);
    sf_msg_free(m);
}

/* Truncations at every length and single-byte corruptions of a valid message: parsing and reading
 * must fail or succeed cleanly (ASan/UBSan builds catch anything else). */
static void corrupt_inputs(void) {
    sf_msg *m = sf_msg_new();
    int64_t shape[2] = {5, 7};
    float x[35];
    for (int i = 0; i < 35; i++) x[i] = (float)i;
    sf_msg_put_tensor(m, "acts", SF_F32, 2, shape, x);
    const char *labels[] = {"en", "ja"};
    sf_msg_put_strs(m, "label", labels, 2);
    sf_msg_put_int(m, "layer", 3);
    size_t len;
    const unsigned char *b = sf_msg_bytes(m, &len);
    unsigned char *buf = malloc(len);
    int parsed_truncated = 0;
    for (size_t cut = 0; cut < len; cut++) {
        memcpy(buf, b, cut);
        sf_msg *r = sf_msg_parse(buf, cut);
        parsed_truncated += r != NULL;
        sf_msg_free(r);
    }
    CHECK(parsed_truncated == 0, "%d truncated messages parsed", parsed_truncated);
    uint64_t seed = 42;
    int rejected = 0, tensor_ok = 0;
    for (int trial = 0; trial < 20000; trial++) {
        memcpy(buf, b, len);
        for (int k = 0; k < 1 + trial % 3; k++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            buf[(seed >> 33) % len] = (unsigned char)(seed >> 13);
        }
        sf_msg *r = sf_msg_parse(buf, len);
        if (!r) {
            rejected++;
            continue;
        }
        sf_tensor t;
        if (sf_msg_get_tensor(r, "acts", &t) == SF_OK) {
            tensor_ok++;
            /* a tensor that validates must lie inside the buffer */
            CHECK((const unsigned char *)t.data >= buf && (const unsigned char *)t.data + t.nbytes <= buf + len, "tensor outside buffer");
            CHECK(sf_tensor_numel(&t) * (int64_t)sf_dtype_size(t.dtype) == (int64_t)t.nbytes, "tensor size inconsistent");
        }
        size_t n;
        const char *s;
        size_t sl;
        if (sf_msg_get_strs_count(r, "label", &n) == SF_OK)
            for (size_t i = 0; i < n; i++) sf_msg_get_strs_at(r, "label", i, &s, &sl);
        sf_msg_free(r);
    }
    CHECK(rejected > 0 && tensor_ok > 0, "mutations should both be rejected and survive (rejected %d, ok %d)", rejected, tensor_ok);
    /* a container claiming more elements than bytes remain is refused before allocation */
    const unsigned char huge[] = {0x81, 0xa1, 'a', 0xdd, 0xff, 0xff, 0xff, 0xff, 0x01};
    CHECK(sf_msg_parse(huge, sizeof huge) == NULL, "oversized array count accepted");
    /* shape and data disagreeing is refused with a message */
    sf_msg *bad = sf_msg_new();
    int64_t wrong[1] = {3};
    sf_msg_put_tensor(bad, "t", SF_F32, 1, wrong, x);
    size_t bl;
    unsigned char *bb = (unsigned char *)sf_msg_bytes(bad, &bl);
    /* the shape is packed as bin key "shape", array of one, fixint 3: make it 4 */
    static const unsigned char key[] = {0xc4, 5, 's', 'h', 'a', 'p', 'e', 0x91, 3};
    for (size_t i = 0; i + sizeof key <= bl; i++)
        if (!memcmp(bb + i, key, sizeof key)) bb[i + sizeof key - 1] = 4;
    sf_msg *br = sf_msg_parse(bb, bl);
    sf_tensor t;
    CHECK(br && sf_msg_get_tensor(br, "t", &t) == SF_ERR && strstr(sf_last_error(), "bytes"), "shape/data mismatch: %s", sf_last_error());
    sf_msg_free(br);
    sf_msg_free(bad);
    free(buf);
    sf_msg_free(m);
}

/* Every half value converts to float and back unchanged; float -> half agrees with the compiler's
 * own rounding where it has one (GCC's _Float16). */
static void half_exhaustive(void) {
    for (uint32_t h = 0; h < 65536; h++) {
        float f = sf_f16_to_f32((uint16_t)h);
        if (f != f) continue; /* NaN payloads need not survive */
        CHECK(sf_f32_to_f16(f) == h, "half 0x%04x -> %g -> 0x%04x", h, f, sf_f32_to_f16(f));
    }
#if defined(__GNUC__) && !defined(__clang__)
    uint64_t s = 7;
    for (int i = 0; i < 1000000; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t u = (uint32_t)(s >> 32);
        float f;
        memcpy(&f, &u, 4);
        if (f != f) continue;
        _Float16 ref = (_Float16)f;
        uint16_t r;
        memcpy(&r, &ref, 2);
        CHECK(sf_f32_to_f16(f) == r, "float %g (0x%08x): 0x%04x, compiler says 0x%04x", f, u, sf_f32_to_f16(f), r);
        CHECK(sf_f16_to_f32(r) == (float)ref, "half 0x%04x to float", r);
    }
#endif
}

static void conversions(void) {
    float v[] = {0.0f, -1.5f, 3.140625f, 65504.0f, 1e-3f, -0.0f};
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        CHECK(sf_bf16_to_f32(sf_f32_to_bf16(v[i])) == v[i] || i == 3 || i == 4, "bf16 exact values");
        CHECK(sf_f16_to_f32(sf_f32_to_f16(v[i])) == v[i] || i == 4, "f16 exact values");
    }
    /* round to nearest even: 1 + 2^-8 lies halfway between bf16 neighbours 1 and 1 + 2^-7 */
    CHECK(sf_bf16_to_f32(sf_f32_to_bf16(1.0f + 1.0f / 256)) == 1.0f, "bf16 ties to even");
    CHECK(sf_bf16_to_f32(sf_f32_to_bf16(1.0f + 3.0f / 256)) == 1.0f + 4.0f / 256, "bf16 ties to even (up)");
}

int main(void) {
    round_trip_tensors();
    round_trip_scalars();
    corrupt_inputs();
    conversions();
    half_exhaustive();
    if (failures) fprintf(stderr, "%d checks failed\n", failures);
    else printf("all message codec checks passed\n");
    return failures ? 1 : 0;
}
