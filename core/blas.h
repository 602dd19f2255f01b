/* blas.h — choosing OpenBLAS's kernel before any plugin loads OpenBLAS. */
#ifndef SF_BLAS_H
#define SF_BLAS_H

/* Probes which kernel OpenBLAS would pick, in a child process so this process has not loaded it
 * yet. If it falls back to a generic kernel on a CPU that has better ones (Debian's 0.3.21 picks
 * Prescott on AVX-512 Xeons), sets OPENBLAS_CORETYPE to the right one. An OPENBLAS_CORETYPE the
 * user set is left alone. Returns the core name in use (NULL if OpenBLAS is absent). */
const char *sf_blas_choose_core(void);
/* After OpenBLAS is loaded: checks that the kernel in use is the one chosen and that a small
 * sgemm agrees with a plain loop. SF_ERR with a message if not. With verbose, logs the choice
 * sf_blas_choose_core made and the check's result: every command that computes calls it so. */
int sf_blas_verify(int verbose);

/* The decision itself: the kernel to use when OpenBLAS detected `detected` on a CPU whose best
 * kernel is `best` (NULL if unknown). Returns detected unless it is a weaker fallback. */
const char *sf_blas_pick(const char *detected, const char *best);

#endif
