/* batch.h - an int8 model (runtime.h) over many images, on several threads.
 *
 * qrt_run needs no state but its arena, so images are independent: each thread, with an
 * arena of its own, claims chunks of the batch (at most QRT_BATCH_CHUNK images, fewer
 * when the batch is small, so that each thread gets several) and runs each through
 * qrt_run_batch (a linear layer is one GEMM over the chunk); every image's logits and
 * label are those of qrt_run on it alone. Results therefore depend neither on the thread
 * count nor on which thread ran which chunk (test_runtime_batch checks 1, 2 and 3
 * threads against qrt_run image by image).
 *
 * A library of its own (CMake target qat_runtime_batch: this file and POSIX threads), so
 * that qat_runtime stays C99 and libc only and a microcontroller build never needs it.
 * Like the runtime it never allocates: the caller passes one buffer for the arenas,
 * sized by qrt_batch_mem_size, and the thread count (the library reads no environment).
 *
 *     size_t n = qrt_batch_mem_size(&model, threads);   // threads >= 1
 *     void *mem = malloc(n);                            // any alignment
 *     qrt_batch b;
 *     if (qrt_batch_init(&b, &model, threads, mem, n) != QRT_STATUS_OK) ...
 *     qrt_batch_run(&b, pixels, n_images, labels, NULL); // labels and/or logits
 *     ...                                                // as many runs as wanted
 *     qrt_batch_free(&b);                                // stops its threads
 *     free(mem);
 *
 * The threads (threads - 1 of them: the caller's thread runs a slice too) start in
 * qrt_batch_init and sleep between runs, so a run of a small model (a few hundred
 * microseconds for 256 images) pays no thread start and finds its threads on the CPUs
 * they ran on last. Their state lives in the caller's buffer too.
 * The model must outlive the batch and is only read (its path: qrt_model_set_isa, before
 * the run). A qrt_batch may be run many times but not from two threads at once (the
 * arenas are its scratch); two qrt_batch over one model may run concurrently.
 */
#ifndef QRT_BATCH_H
#define QRT_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "runtime.h"

/* The most threads a batch runs (larger counts are clamped to it). */
#define QRT_BATCH_MAX_THREADS 64

/* Images a thread runs at once through qrt_run_batch (runtime.h) when the model has a
 * linear layer on a SIMD path: the linear is then one int8 GEMM over them. Each thread's
 * arena holds that many images' activations (qrt_arena_size_batch). */
#define QRT_BATCH_CHUNK 36

typedef struct qrt_batch {
    const qrt_model *m;
    int threads;           /* threads a run uses at most (fewer when n is smaller) */
    int chunk;             /* images a thread runs together: QRT_BATCH_CHUNK, or 1 when
                              the model has no packed linear to share across them */
    uint8_t *arenas;       /* `threads` arenas of `stride` bytes, in the caller's buffer */
    size_t stride;         /* qrt_arena_size_batch(m, chunk) rounded up to 64 (no two threads share
                              a cache line) */
    struct qrt_batch_pool *pool; /* the worker threads, in the caller's buffer; NULL when
                                    none could be started (the caller's thread runs all) */
} qrt_batch;

/* Bytes of the caller's buffer for `threads` threads (clamped to [1,
 * QRT_BATCH_MAX_THREADS]): one arena per thread and the threads' state. 0 if m is NULL. */
size_t qrt_batch_mem_size(const qrt_model *m, int threads);

/* Sets up b over the loaded model m, with `threads` >= 1 threads (clamped to
 * QRT_BATCH_MAX_THREADS) and the caller's buffer mem of mem_len bytes (any alignment;
 * keep it until qrt_batch_free: the threads read their state there), and starts
 * threads - 1 threads. INVALID_ARG for a NULL pointer, a
 * model that is not loaded or threads < 1; NO_MEMORY if mem_len < qrt_batch_mem_size(m,
 * threads). A thread that cannot be started is not an error: its slices run on the
 * caller's thread. Every successful init needs a qrt_batch_free. */
qrt_status qrt_batch_init(qrt_batch *b, const qrt_model *m, int threads, void *mem, size_t mem_len);

/* Stops and joins b's threads; b can no longer run. Does nothing on a NULL b, a b whose
 * init failed, or a second call. */
void qrt_batch_free(qrt_batch *b);

/* Runs n images: pixels holds n images of qrt_model_input(m)->numel uint8 each, (C, H, W)
 * per image. Writes labels[i] (argmax, ties to the lowest class) and logits[i * K ...
 * (i + 1) * K) with K = qrt_model_n_outputs(m); labels and logits may each be NULL.
 * Image i's results are qrt_run's on it alone, whatever the thread count. The threads
 * (the calling one among them) claim chunks of consecutive images until all are taken,
 * so a thread slowed by other work on its CPU takes fewer; the calling thread alone runs
 * everything if no worker could be started. Returns when all are done; n <= 0
 * does nothing. INVALID_ARG if b or pixels is NULL or b is not set up. */
qrt_status qrt_batch_run(const qrt_batch *b, const uint8_t *pixels, int n, int *labels, int8_t *logits);

#endif
