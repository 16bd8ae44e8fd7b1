/* progress.h - training progress on stderr.
 *
 * On a terminal, one line redrawn in place (at most ten times a second):
 *     epoch 2/3 [#########...........] 412/938  3,150 samples/s  ETA 0:17  loss 0.3121  acc 88.7%
 * When stderr is not a terminal (a log file, CI), nothing is drawn during the epoch and
 * one plain line is printed at its end, so logs stay readable.
 */
#ifndef QAT_PROGRESS_H
#define QAT_PROGRESS_H

#include <stdbool.h>
#include <stdio.h>

typedef struct qat_progress {
    FILE *f;
    bool tty;
    int epoch, epochs;
    long batches, batch;
    long samples, correct;
    double loss_sum; /* sum of per-sample losses */
    double t_start, t_drawn;
} qat_progress;

/* `f` is usually stderr; tty is detected with isatty(). */
void qat_progress_init(qat_progress *p, FILE *f);
void qat_progress_begin_epoch(qat_progress *p, int epoch, int epochs, long batches);
/* After each batch: its size, mean loss and number of correct predictions. */
void qat_progress_update(qat_progress *p, int batch_size, float loss, long correct);
/* Ends the epoch's line; `extra` (may be NULL) is appended, e.g. test accuracy. */
void qat_progress_end_epoch(qat_progress *p, const char *extra);
double qat_progress_seconds(const qat_progress *p);
/* Seconds since an arbitrary fixed point (CLOCK_MONOTONIC). */
double qat_now(void);

#endif
