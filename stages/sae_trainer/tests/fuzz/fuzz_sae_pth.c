/* libFuzzer target: untrusted sae.pth bytes through the reader. Input starting with "PK" is a whole
 * torch.save zip (libzip from memory, then the unpickler and every tensor read); anything else goes
 * to the restricted unpickler alone, so most inputs exercise the pickle parser directly. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../sae_pth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2 || data[0] != 'P' || data[1] != 'K') {
        sae_pth_check_pickle(data, size);
        return 0;
    }
    sae_pth *p = sae_pth_open_mem(data, size);
    if (!p) return 0;
    for (size_t i = 0; i < sae_pth_count(p); i++) {
        const sae_pth_tensor *t = sae_pth_at(p, i);
        size_t numel = 1;
        for (int d = 0; d < t->ndim; d++) numel *= (size_t)t->shape[d]; /* within its storage: checked */
        if (numel > (1 << 20)) continue;
        float *f = malloc(numel * sizeof *f + 1);
        if (f) sae_pth_read(p, t, f);
        free(f);
    }
    sae_pth_close(p);
    return 0;
}
