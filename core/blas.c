/* OpenBLAS kernel choice. OpenBLAS reads OPENBLAS_CORETYPE once, in a constructor that runs when
 * the library is loaded, so the variable must be set before the first plugin linking it is
 * dlopen'ed; saeflow itself does not link OpenBLAS for that reason. */
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

#include "blas.h"
#include "saeflow.h"

#define OPENBLAS_SONAME "libopenblas.so.0"

static char chosen[64], choice[192]; /* the kernel, and how it was chosen (logged by sf_blas_verify) */

/* The kernel this CPU deserves, from its features (names as OpenBLAS's DYNAMIC_ARCH spells them). */
static const char *best_core_for_cpu(void) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
        return "SKYLAKEX";
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "HASWELL";
    if (__builtin_cpu_supports("avx")) return "SANDYBRIDGE";
    return NULL;
}

/* Kernels grouped by the vector width they use; a kernel in a lower tier than the CPU's best
 * is a detection fallback. Unknown names (other vendors' kernels) count as fine. */
static int core_tier(const char *name) {
    static const struct { const char *name; int tier; } tiers[] = {
        {"prescott", 0}, {"core2", 0}, {"penryn", 0}, {"dunnington", 0}, {"nehalem", 0}, {"atom", 0}, {"katmai", 0},
        {"sandybridge", 1}, {"bulldozer", 1}, {"piledriver", 1},
        {"haswell", 2}, {"zen", 2}, {"excavator", 2}, {"steamroller", 2},
        {"skylakex", 3}, {"cooperlake", 3}, {"sapphirerapids", 3},
    };
    for (size_t i = 0; i < sizeof tiers / sizeof *tiers; i++)
        if (strcasecmp(name, tiers[i].name) == 0) return tiers[i].tier;
    return 99;
}

const char *sf_blas_pick(const char *detected, const char *best) {
    if (!best || core_tier(detected) >= core_tier(best)) return detected;
    return best;
}

/* Asks OpenBLAS, loaded in a child, which kernel it picks with the current environment. */
static int probe_core(char *out, size_t cap) {
    int fds[2];
    if (pipe(fds) != 0) return SF_ERR;
    pid_t pid = fork();
    if (pid < 0) return SF_ERR;
    if (pid == 0) {
        close(fds[0]);
        void *h = dlopen(OPENBLAS_SONAME, RTLD_NOW);
        char *(*corename)(void) = h ? (char *(*)(void))dlsym(h, "openblas_get_corename") : NULL;
        const char *name = corename ? corename() : "";
        ssize_t rc = write(fds[1], name, strlen(name));
        (void)rc;
        _exit(0);
    }
    close(fds[1]);
    ssize_t n = read(fds[0], out, cap - 1);
    close(fds[0]);
    waitpid(pid, NULL, 0);
    if (n <= 0) return SF_ERR;
    out[n] = 0;
    return SF_OK;
}

const char *sf_blas_choose_core(void) {
    const char *user = getenv("OPENBLAS_CORETYPE");
    if (user && *user) {
        snprintf(chosen, sizeof chosen, "%s", user);
        snprintf(choice, sizeof choice, "using OPENBLAS_CORETYPE=%s as set", user);
        return chosen;
    }
    char detected[64] = "";
    if (probe_core(detected, sizeof detected) != SF_OK) return NULL;
    const char *best = sf_blas_pick(detected, best_core_for_cpu());
    snprintf(chosen, sizeof chosen, "%s", best);
    if (best != detected) {
        setenv("OPENBLAS_CORETYPE", best, 1);
        snprintf(choice, sizeof choice, "detected kernel %s on a CPU with %s features; using %s (set OPENBLAS_CORETYPE to override)",
                 detected, best, best);
    } else {
        snprintf(choice, sizeof choice, "kernel %s, as detected for this CPU", detected);
    }
    return chosen;
}

int sf_blas_verify(int verbose) {
    void *h = dlopen(OPENBLAS_SONAME, RTLD_NOW | RTLD_NOLOAD);
    if (!h) { /* no stage loaded OpenBLAS */
        if (verbose) sf_log(SF_LOG_DEBUG, "openblas: %s not loaded; stages needing BLAS are unavailable", OPENBLAS_SONAME);
        return SF_OK;
    }
    char *(*corename)(void) = (char *(*)(void))dlsym(h, "openblas_get_corename");
    typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *, int, float, float *, int);
    sgemm_fn sgemm = (sgemm_fn)dlsym(h, "cblas_sgemm");
    if (!corename || !sgemm) return SF_OK;
    const char *core = corename();
    if (chosen[0] && strcasecmp(core, chosen) != 0)
        sf_log(SF_LOG_WARN, "openblas: asked for kernel %s but OpenBLAS runs %s", chosen, core);
    /* A 67x53 by 53x71 product against a plain loop: odd sizes exercise the kernels' edges. */
    enum { M = 67, K = 53, N = 71 };
    static float a[M * K], b[K * N], c[M * N];
    for (int i = 0; i < M * K; i++) a[i] = (float)((i * 37) % 101) / 101.0f - 0.5f;
    for (int i = 0; i < K * N; i++) b[i] = (float)((i * 53) % 97) / 97.0f - 0.5f;
    sgemm(101 /*RowMajor*/, 111 /*NoTrans*/, 111, M, N, K, 1.0f, a, K, b, N, 0.0f, c, N);
    double maxerr = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++) s += (double)a[i * K + k] * b[k * N + j];
            maxerr = fmax(maxerr, fabs(s - c[i * N + j]));
        }
    if (maxerr > 1e-3)
        return sf_fail("openblas kernel %s computes wrong results (sgemm error %.3g): set OPENBLAS_CORETYPE to another kernel (e.g. HASWELL)", core, maxerr);
    if (verbose)
        sf_log(SF_LOG_INFO, "openblas: %s%skernel %s verified (sgemm max error %.2g)", choice, choice[0] ? "; " : "", core, maxerr);
    return SF_OK;
}
