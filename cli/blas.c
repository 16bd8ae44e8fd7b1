/* blas.c - OpenBLAS core selection (blas.h). */
#include "blas.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* In OpenBLAS's cblas.h of 0.3.21 but not in every BLAS header: declared here. */
char *openblas_get_corename(void);

const char *cli_blas_core(void) {
    const char *c = openblas_get_corename();
    return c ? c : "unknown";
}

static int cpu_has_avx512(void) {
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

void cli_blas_select_core(char **argv) {
    if (getenv("OPENBLAS_CORETYPE")) return;
    const char *keep = getenv("QAT_BLAS_CORE");
    if (keep && strcmp(keep, "keep") == 0) return;
    const char *core = cli_blas_core();
    if (strcasecmp(core, "Haswell") != 0 && strncasecmp(core, "Zen", 3) != 0) return;
    if (!cpu_has_avx512()) return;
    /* Setting the variable first also stops a second round: the new process sees it. */
    if (setenv("OPENBLAS_CORETYPE", "SkylakeX", 1) != 0) return;
    execv("/proc/self/exe", argv);
    /* exec failed (no /proc, say): carry on with the kernels already loaded. */
    unsetenv("OPENBLAS_CORETYPE");
}
