/* blas.h - OpenBLAS core selection for the command-line tool and the benchmarks.
 *
 * Debian's OpenBLAS 0.3.21 is built with DYNAMIC_ARCH: at load time it picks a kernel set
 * from CPUID, or from the environment variable OPENBLAS_CORETYPE. On some AMD CPUs with
 * AVX-512 (Zen 4) it picks its Haswell (or Zen) kernels, which use AVX2 only; its SkylakeX
 * kernels were measured 1.5x faster on large sgemm on such a machine. The choice is made
 * before main() runs, so the only way to change it is to set the variable and start the
 * program again: cli_blas_select_core() does that, once, when
 *   - OPENBLAS_CORETYPE is not set (a user's explicit choice always wins),
 *   - OpenBLAS reports Haswell or Zen, and
 *   - the CPU has AVX-512 F, BW, DQ and VL (what the SkylakeX kernels use).
 * QAT_BLAS_CORE=keep turns it off. bench/qat_bench measures the kernel sets side by side.
 */
#ifndef QAT_CLI_BLAS_H
#define QAT_CLI_BLAS_H

/* May not return: re-executes /proc/self/exe with argv and OPENBLAS_CORETYPE=SkylakeX.
 * Returns if nothing needs changing or the exec fails (the program then runs as is). */
void cli_blas_select_core(char **argv);

/* The kernel set OpenBLAS is using ("Cooperlake", "Haswell", ...). */
const char *cli_blas_core(void);

#endif
