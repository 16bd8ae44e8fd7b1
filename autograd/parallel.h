/* parallel.h - a small thread pool for the project's own loops (elementwise ops, im2col,
 * pooling, batch norm, fake quantization, optimizers) and for splitting GEMMs.
 *
 * One pool per process, like OpenBLAS's own threads: the thread count is a property of
 * the machine a run uses, set by the program with qat_set_num_threads (default: the
 * number of online CPUs), not state that travels with a model. The library reads no
 * environment variable: the qat command maps QAT_NUM_THREADS and its --threads option to
 * qat_set_num_threads. This is the one piece of process-wide mutable state in the
 * library, and it holds no numbers a result depends on (see "Determinism" below).
 *
 *     qat_set_num_threads(2);                      // pool and OpenBLAS, once
 *     qat_parallel_for(n, 4096, kernel, &ctx);     // kernel(&ctx, begin, end) on parts
 *     qat_parallel_tasks(8, task, &ctx);           // task(&ctx, i) for i = 0..7
 *
 * The calling thread works too: with T threads, T - 1 workers are started. Workers sleep
 * on a condition variable between jobs (no spinning: OpenBLAS and other processes share
 * the cores). A job started from inside a job runs on the calling worker alone, so
 * kernels can call each other freely.
 *
 * GEMMs: the kernels split their matrix products into parts and call single-threaded
 * OpenBLAS from the workers, so qat_set_num_threads sets OpenBLAS to one thread; the two
 * kinds of parallelism never oversubscribe the cores.
 *
 * Determinism: a job's parts are fixed by (n, grain, thread count) alone, never by
 * timing, so the same thread count always gives the same bits. Reductions in the kernels
 * go further and split their work in ways that do not depend on the thread count at all
 * (each channel owned by one task, or partial sums over fixed-size chunks added in
 * order), so results are also the same for any thread count.
 */
#ifndef QAT_PARALLEL_H
#define QAT_PARALLEL_H

#include <stddef.h>

/* The most threads the pool will run. */
#define QAT_PARALLEL_MAX_THREADS 64

/* kernel(ctx, begin, end) handles [begin, end). */
typedef void (*qat_range_fn)(void *ctx, size_t begin, size_t end);
/* task(ctx, i) handles task i. */
typedef void (*qat_task_fn)(void *ctx, size_t i);

/* Sets the pool's thread count (n >= 1; clamped to QAT_PARALLEL_MAX_THREADS) and
 * OpenBLAS's (to 1: see above). Must not be called from inside a job. */
void qat_set_num_threads(int n);
/* The pool's thread count. Before any qat_set_num_threads: the number of online CPUs
 * (clamped to QAT_PARALLEL_MAX_THREADS). */
int qat_num_threads(void);

/* Splits [0, n) into at most T contiguous parts of at least `grain` elements (fewer when
 * n is small: n < 2 grain runs inline on the caller) and runs kernel on each. Part k is
 * [n k / P, n (k + 1) / P) for P parts. Returns when all parts are done. */
void qat_parallel_for(size_t n, size_t grain, qat_range_fn kernel, void *ctx);
/* Runs task(ctx, i) for i in [0, n_tasks), task i on thread i mod T (in increasing i on
 * each thread). Returns when all are done. */
void qat_parallel_tasks(size_t n_tasks, qat_task_fn task, void *ctx);
/* The index of the calling thread in the current job: 0 on the caller, 1..T-1 on
 * workers; 0 outside jobs. For per-thread scratch. */
int qat_parallel_thread_id(void);

/* Stops the workers (tests, and leak checkers at exit). The pool restarts on next use. */
void qat_parallel_shutdown(void);

#endif
