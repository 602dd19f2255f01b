/* memcpy bandwidth of this machine (the ceiling for moving tensors), MB/s, copying buffers of SIZE
 * bytes (default 64 MiB) back and forth: small sizes stay in cache, as a small message does.
 * usage: memcpy_bw [SIZE] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int main(int argc, char **argv) {
    size_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 64u << 20;
    if (n == 0) {
        fprintf(stderr, "usage: memcpy_bw [SIZE]\n");
        return 2;
    }
    char *a = malloc(n), *b = malloc(n);
    if (!a || !b) return 1;
    memset(a, 1, n);
    memset(b, 2, n);
    long rounds = (long)((2ull << 30) / n); /* 2 GiB copied in all */
    if (rounds < 20) rounds = 20;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < rounds; i++) {
        memcpy(i % 2 ? a : b, i % 2 ? b : a, n);
        __asm__ volatile("" ::: "memory"); /* each copy is observable: not merged away */
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    printf("%.0f\n", (double)rounds * (double)n / s / 1e6);
    return a[0] == 7;
}
