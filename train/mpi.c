/* mpi.c - Open MPI behind autograd/comm.h (mpi.h). */
#include "mpi.h"

#include <stdlib.h>
#include <string.h>

bool qat_mpi_launched(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK");
}

#ifdef QAT_HAVE_MPI
#include <mpi.h>

static qat_comm world;
static bool initialised;
static void *scratch;
static size_t scratch_bytes;

/* Ring all-reduce (sum) of x over the processes: chunk k of x is summed along the ring
 * starting at process k + 1, so every element's order is fixed by (n, size). One body for
 * floats and doubles. */
#define RING_SUM(NAME, T, MPI_T)                                                                              \
    static qat_status NAME(T *x, size_t n, void *impl) {                                                      \
        (void)impl;                                                                                           \
        const int P = world.size, r = world.rank;                                                             \
        if (P < 2 || n == 0) return QAT_STATUS_OK;                                                            \
        const size_t chunk = (n + (size_t)P - 1) / (size_t)P;                                                 \
        if (scratch_bytes < chunk * sizeof(T)) {                                                              \
            void *s = realloc(scratch, chunk * sizeof(T));                                                    \
            if (!s) return QAT_STATUS_NOMEM;                                                                  \
            scratch = s;                                                                                      \
            scratch_bytes = chunk * sizeof(T);                                                                \
        }                                                                                                     \
        T *tmp = scratch;                                                                                     \
        const int right = (r + 1) % P, left = (r + P - 1) % P;                                                \
        /* reduce-scatter: after P - 1 steps process r holds chunk (r + 1) % P summed */                     \
        for (int s = 0; s < P - 1; s++) {                                                                     \
            const int send = (r - s + P) % P, recv = (r - s - 1 + 2 * P) % P;                                 \
            if (MPI_Sendrecv(x + LO(send), (int)LEN(send), MPI_T, right, 0, tmp, (int)LEN(recv), MPI_T, left, \
                             0, MPI_COMM_WORLD, MPI_STATUS_IGNORE) != MPI_SUCCESS)                            \
                return QAT_STATUS_IO;                                                                         \
            T *d = x + LO(recv);                                                                              \
            for (size_t i = 0; i < LEN(recv); i++) d[i] = tmp[i] + d[i];                                      \
        }                                                                                                     \
        /* all-gather: pass the finished chunks around */                                                    \
        for (int s = 0; s < P - 1; s++) {                                                                     \
            const int send = (r + 1 - s + P) % P, recv = (r - s + P) % P;                                     \
            if (MPI_Sendrecv(x + LO(send), (int)LEN(send), MPI_T, right, 1, x + LO(recv), (int)LEN(recv),     \
                             MPI_T, left, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE) != MPI_SUCCESS)               \
                return QAT_STATUS_IO;                                                                         \
        }                                                                                                     \
        return QAT_STATUS_OK;                                                                                 \
    }
#define LO(k) ((size_t)(k) * chunk < n ? (size_t)(k) * chunk : n)
#define LEN(k) (LO((k) + 1) - LO(k))
RING_SUM(ring_sum, float, MPI_FLOAT)
RING_SUM(ring_sum_f64, double, MPI_DOUBLE)
#undef LO
#undef LEN

/* Integers add exactly in any order, and MPI's maximum is exact: its own collectives. */
static qat_status sum_u64(uint64_t *x, size_t n, void *impl) {
    (void)impl;
    return n == 0 || MPI_Allreduce(MPI_IN_PLACE, x, (int)n, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD) == MPI_SUCCESS
               ? QAT_STATUS_OK
               : QAT_STATUS_IO;
}

static qat_status max_f32(float *x, size_t n, void *impl) {
    (void)impl;
    return n == 0 || MPI_Allreduce(MPI_IN_PLACE, x, (int)n, MPI_FLOAT, MPI_MAX, MPI_COMM_WORLD) == MPI_SUCCESS
               ? QAT_STATUS_OK
               : QAT_STATUS_IO;
}

static qat_status minmax(float *lo, float *hi, void *impl) {
    (void)impl;
    float l = *lo, h = *hi;
    if (MPI_Allreduce(&l, lo, 1, MPI_FLOAT, MPI_MIN, MPI_COMM_WORLD) != MPI_SUCCESS ||
        MPI_Allreduce(&h, hi, 1, MPI_FLOAT, MPI_MAX, MPI_COMM_WORLD) != MPI_SUCCESS)
        return QAT_STATUS_IO;
    return QAT_STATUS_OK;
}

qat_status qat_mpi_init(int *argc, char ***argv, qat_error *err) {
    if (MPI_Init(argc, argv) != MPI_SUCCESS) return qat_error_set(err, QAT_STATUS_IO, "MPI_Init failed");
    initialised = true;
    MPI_Comm_rank(MPI_COMM_WORLD, &world.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world.size);
    world.sum = ring_sum;
    world.minmax = minmax;
    world.sum_f64 = ring_sum_f64;
    world.sum_u64 = sum_u64;
    world.max = max_f32;
    qat_comm_set(&world);
    return QAT_STATUS_OK;
}

void qat_mpi_finalize(void) {
    if (!initialised) return;
    qat_comm_set(NULL);
    free(scratch);
    scratch = NULL;
    scratch_bytes = 0;
    MPI_Finalize();
    initialised = false;
}

void qat_mpi_abort(int code) {
    if (initialised) MPI_Abort(MPI_COMM_WORLD, code);
}

bool qat_mpi_available(void) { return true; }

#else

qat_status qat_mpi_init(int *argc, char ***argv, qat_error *err) {
    (void)argc, (void)argv;
    return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                         "this qat was built without MPI (install libopenmpi-dev and rebuild: CMake finds it)");
}

void qat_mpi_finalize(void) {}

void qat_mpi_abort(int code) { (void)code; }

bool qat_mpi_available(void) { return false; }

#endif
