/* libFuzzer target: untrusted message bytes through the parser and every getter. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "saeflow.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    sf_msg *m = sf_msg_parse(data, size);
    if (!m) return 0;
    static const char *keys[] = {"acts", "tokens", "doc_id", "label", "text", "seq", "a"};
    for (size_t k = 0; k < sizeof keys / sizeof *keys; k++) {
        sf_tensor t;
        if (sf_msg_get_tensor(m, keys[k], &t) == SF_OK) {
            /* touch every byte the tensor claims: ASan reports any that lie outside the input */
            volatile uint8_t sum = 0;
            for (size_t i = 0; i < t.nbytes; i++) sum += ((const uint8_t *)t.data)[i];
            (void)sum;
            if (t.nbytes <= 1 << 20 && sf_tensor_numel(&t) > 0) {
                float *f = malloc((size_t)sf_tensor_numel(&t) * sizeof *f);
                sf_tensor_to_f32(&t, f, (size_t)sf_tensor_numel(&t));
                free(f);
            }
        }
        int64_t i;
        double d;
        const char *s;
        size_t n, len;
        sf_msg_get_int(m, keys[k], &i);
        sf_msg_get_float(m, keys[k], &d);
        sf_msg_get_str(m, keys[k], &s, &len);
        if (sf_msg_get_strs_count(m, keys[k], &n) == SF_OK)
            for (size_t j = 0; j < n && j < 64; j++) sf_msg_get_strs_at(m, keys[k], j, &s, &len);
    }
    sf_msg *c = sf_msg_clone(m);
    size_t len;
    sf_msg_bytes(c, &len);
    sf_msg_free(c);
    sf_msg_free(m);
    return 0;
}
