/* The OpenBLAS kernel decision: a fallback kernel is replaced, a right one is kept. */
#include <stdio.h>
#include <string.h>

#include "blas.h"

int main(void) {
    int bad = 0;
    struct { const char *detected, *best, *want; } cases[] = {
        {"Prescott", "SKYLAKEX", "SKYLAKEX"}, /* Debian 0.3.21 on some AVX-512 Xeons */
        {"Core2", "HASWELL", "HASWELL"},
        {"SkylakeX", "SKYLAKEX", "SkylakeX"}, /* detected right: keep it */
        {"Cooperlake", "SKYLAKEX", "Cooperlake"},
        {"Haswell", "SKYLAKEX", "SKYLAKEX"},
        {"Zen", "HASWELL", "Zen"},
        {"Prescott", NULL, "Prescott"}, /* unknown CPU: leave OpenBLAS alone */
        {"ARMV8", "SKYLAKEX", "ARMV8"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *got = sf_blas_pick(cases[i].detected, cases[i].best);
        if (strcmp(got, cases[i].want) != 0) {
            fprintf(stderr, "FAIL: detected %s, best %s: picked %s, want %s\n", cases[i].detected,
                    cases[i].best ? cases[i].best : "(none)", got, cases[i].want);
            bad++;
        }
    }
    if (!bad) printf("kernel choice ok\n");
    return bad != 0;
}
