/* bench_allreduce.c - the gradient sum of data-parallel training (train/mpi.h): the ring
 * all-reduce of N floats, timed on every process count mpirun gives (docs/scaling.md).
 *
 *     mpirun --allow-run-as-root -np 2 build/bench/bench_allreduce [N=421834] [ROUNDS=200]
 *
 * Prints, from the first process, the median and the 10th/90th percentile of one sum and
 * the bandwidth that implies (2 (P - 1) / P of the buffer sent and received per process). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/common.h"
#include "train/mpi.h"
#include "train/progress.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    qat_error err = {0};
    if (qat_mpi_init(&argc, &argv, &err)) return printf("%s\n", err.msg), 1;
    const qat_comm *c = qat_comm_get();
    const size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 421834; /* the reference CNN's parameters */
    const int rounds = argc > 2 ? atoi(argv[2]) : 200;
    float *x = malloc(n * sizeof(float));
    double *t = malloc((size_t)rounds * sizeof(double));
    if (!x || !t || rounds < 1) return 1;
    for (size_t i = 0; i < n; i++) x[i] = (float)(i % 7) * 1e-3f;
    for (int r = -10; r < rounds; r++) { /* 10 warm-up rounds */
        double t0 = qat_now();
        if (qat_comm_sum(x, n)) return printf("sum failed\n"), 1;
        if (r >= 0) t[r] = qat_now() - t0;
        for (size_t i = 0; i < n; i++) x[i] *= 0.5f; /* keep the values bounded */
    }
    qsort(t, (size_t)rounds, sizeof *t, cmp_double);
    if (c->rank == 0) {
        const double med = t[rounds / 2], bytes = 2.0 * (c->size - 1) / c->size * (double)n * sizeof(float);
        printf("allreduce of %zu floats (%.2f MB) over %d processes: median %.3f ms (p10 %.3f, p90 %.3f), "
               "%.2f GB/s per process\n",
               n, n * 4e-6, c->size, 1e3 * med, 1e3 * t[rounds / 10], 1e3 * t[rounds * 9 / 10], bytes / med * 1e-9);
    }
    free(x);
    free(t);
    qat_mpi_finalize();
    return 0;
}
