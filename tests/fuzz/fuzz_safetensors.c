/* libFuzzer target: untrusted safetensors files through the validating reader. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "sf_safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[] = "/tmp/sf-fuzz-st-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return 0;
    if (write(fd, data, size) != (ssize_t)size) size = 0;
    close(fd);
    sf_st_file *f = sf_st_open(path);
    if (f) {
        for (size_t i = 0; i < sf_st_count(f); i++) {
            const sf_st_tensor *t = sf_st_at(f, i);
            volatile uint8_t sum = 0;
            for (size_t b = 0; b < t->t.nbytes; b++) sum += ((const uint8_t *)t->t.data)[b];
            (void)sum;
        }
        sf_st_metadata(f, "format");
        sf_st_close(f);
    }
    unlink(path);
    return 0;
}
