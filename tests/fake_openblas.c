/* A stand-in libopenblas.so.0 that misdetects the CPU the way Debian's OpenBLAS 0.3.21 does on
 * AVX-512 Xeons: its kernel is Prescott unless OPENBLAS_CORETYPE names another, read once when the
 * library loads, as OpenBLAS reads it. Exports what saeflow and its stages use (a plain sgemm). */
#include <stdio.h>
#include <stdlib.h>

#define API __attribute__((visibility("default"))) /* saeflow builds with -fvisibility=hidden */

static char core[64] = "Prescott";

__attribute__((constructor)) static void fake_init(void) {
    const char *env = getenv("OPENBLAS_CORETYPE");
    if (env && *env) snprintf(core, sizeof core, "%s", env);
}

API char *openblas_get_corename(void) { return core; }
API int openblas_get_num_threads(void) { return 1; }
API void openblas_set_num_threads(int n) { (void)n; }

/* Row-major (101) only, with 112 meaning transposed, as cblas spells them. */
API void cblas_sgemm(int order, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                 const float *b, int ldb, float beta, float *c, int ldc) {
    if (order != 101) abort();
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            float s = 0;
            for (int p = 0; p < k; p++)
                s += (ta == 112 ? a[p * lda + i] : a[i * lda + p]) * (tb == 112 ? b[j * ldb + p] : b[p * ldb + j]);
            c[i * ldc + j] = alpha * s + (beta != 0 ? beta * c[i * ldc + j] : 0);
        }
}
