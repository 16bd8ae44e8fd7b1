/* comm.h - the processes of a data-parallel run, as the library sees them: this one's rank,
 * how many there are, and sums across them (docs/scaling.md).
 *
 * The default is one process: rank 0 of 1, every collective the identity, so the library
 * works unchanged without MPI. The qat command installs Open MPI's (train/mpi.h) when it
 * runs under mpirun; the library includes nothing of MPI. Like the thread pool
 * (parallel.h) this is process-wide state set once by the program.
 *
 * Every process must call each collective, in the same order, with the same n: the
 * trainer does (one gradient sum per step, an observer's range per quantized forward, the
 * epoch's totals). The sums are computed in an order fixed by (n, size) alone, so the same
 * run repeats bit for bit, and every process gets the same bits.
 */
#ifndef QAT_COMM_H
#define QAT_COMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"

typedef struct qat_comm {
    int rank, size;
    /* x (n floats) becomes the element-wise sum over the processes. */
    qat_status (*sum)(float *x, size_t n, void *impl);
    /* lo becomes the minimum and hi the maximum over the processes. */
    qat_status (*minmax)(float *lo, float *hi, void *impl);
    /* Element-wise: the sum of doubles (the same fixed order), the exact sum of counts,
     * the maximum of floats. */
    qat_status (*sum_f64)(double *x, size_t n, void *impl);
    qat_status (*sum_u64)(uint64_t *x, size_t n, void *impl);
    qat_status (*max)(float *x, size_t n, void *impl);
    void *impl;
} qat_comm;

/* The processes this one runs with (never NULL; one process unless set). */
const qat_comm *qat_comm_get(void);
/* Installs c (which must outlive its use), or the single process for NULL. */
void qat_comm_set(const qat_comm *c);

/* Synchronised batch norm (opt-in; off: each process normalises its share with its own
 * statistics): the batch statistics of training-mode batch norm, and the sums its backward
 * needs, are taken over the whole batch across the processes (layers/batchnorm.c). True
 * only when set and running with more than one process. */
void qat_comm_set_sync_bn(bool on);
bool qat_comm_sync_bn(void);
/* This process's share of the current batch, n / global_n (the trainer sets it before each
 * step, train/step.c): synchronised batch norm weights its backward sums with it, so that
 * uneven shares give the whole batch's gradient. */
void qat_comm_set_share(float w);
float qat_comm_share(void);

/* Shorthands: the collectives of qat_comm_get(); no-ops for one process. */
qat_status qat_comm_sum(float *x, size_t n);
qat_status qat_comm_minmax(float *lo, float *hi);
qat_status qat_comm_sum_f64(double *x, size_t n);
qat_status qat_comm_sum_u64(uint64_t *x, size_t n);
qat_status qat_comm_max(float *x, size_t n);

#endif
