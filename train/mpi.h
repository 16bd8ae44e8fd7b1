/* mpi.h - Open MPI as the library's processes (autograd/comm.h), for `mpirun -np N qat
 * train` (docs/scaling.md). Built only with MPI (CMake QAT_MPI, on when MPI is found);
 * without it, qat_mpi_init says MPI is missing and the rest do nothing (one process).
 *
 * Sums are a ring all-reduce written here on MPI_Sendrecv (reduce-scatter, then
 * all-gather; each process sends and receives 2 (N - 1) / N of the buffer), not
 * MPI_Allreduce, whose summation order MPI leaves to the implementation: here each element
 * is summed in an order fixed by (n, N), so runs repeat bit for bit. A process that dies
 * makes mpirun stop the others (its default); no collective waits forever on a dead
 * peer. */
#ifndef QAT_MPI_H
#define QAT_MPI_H

#include <stdbool.h>

#include "autograd/comm.h"

/* Whether this process was started by mpirun (Open MPI's or PMIx's environment). */
bool qat_mpi_launched(void);
/* MPI_Init and qat_comm_set; FORMAT-free: NOMEM or IO with MPI's message on failure. */
qat_status qat_mpi_init(int *argc, char ***argv, qat_error *err);
/* MPI_Finalize (after the last collective); a no-op when not initialised. */
void qat_mpi_finalize(void);
/* Stops every process of the run with `code` (MPI_Abort): what a process that fails
 * does, so that the others, waiting in a collective for it, never hang. */
void qat_mpi_abort(int code);
/* Whether this build has MPI. */
bool qat_mpi_available(void);

#endif
