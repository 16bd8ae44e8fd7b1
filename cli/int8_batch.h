/* int8_batch.h - an int8 model (runtime/) over many images, on several threads.
 *
 * The runtime runs one image at a time with no state but its arena, so images are
 * independent: each thread takes a contiguous slice of the batch with an arena of its
 * own. Results do not depend on the thread count.
 *
 *     cli_int8_runner r;
 *     cli_int8_runner_init(&r, &model, 0);          // 0: one thread per online CPU
 *     cli_int8_runner_run(&r, pixels, n, labels, NULL);
 *     cli_int8_runner_free(&r);
 */
#ifndef QAT_CLI_INT8_BATCH_H
#define QAT_CLI_INT8_BATCH_H

#include <stdint.h>

#include "runtime/runtime.h"

enum { CLI_INT8_MAX_THREADS = 64 };

typedef struct cli_int8_runner {
    const qrt_model *m;
    int threads;
    void *arenas[CLI_INT8_MAX_THREADS];
} cli_int8_runner;

/* threads <= 0: the number of online CPUs. Returns 0, or -1 if out of memory. */
int cli_int8_runner_init(cli_int8_runner *r, const qrt_model *m, int threads);
void cli_int8_runner_free(cli_int8_runner *r);

/* pixels: n images of qrt_model_input(m)->numel uint8 each. labels (n) and logits
 * (n * qrt_model_n_outputs(m)) may each be NULL. */
void cli_int8_runner_run(cli_int8_runner *r, const uint8_t *pixels, int n, int *labels,
                         int8_t *logits);

#endif
