/* trainer.h - the training loop: epochs of batches, evaluation after each epoch, a
 * metrics log, a checkpoint after each epoch, progress on stderr.
 *
 * Reproducibility: the batch order and augmentation are a pure function of the loader's
 * seed and the epoch (data/loader.h), dropout draws from `rng`, whose state is saved in
 * every checkpoint, and the kernels split their work across threads in fixed ways
 * (autograd/parallel.h: reductions do not even depend on the thread count). So the same
 * seed and thread count give bit-identical runs, and a run resumed from the
 * checkpoint of epoch k (start_epoch = k, start_step, rng, model and optimizer restored)
 * continues exactly as if it had never stopped.
 *
 * A NaN or Inf loss or gradient stops the run before the optimizer step, with
 * QAT_STATUS_NUMERIC and a message naming the epoch and batch; the checkpoint on disk
 * is the last good one (it is only ever replaced atomically, at the end of an epoch).
 */
#ifndef QAT_TRAINER_H
#define QAT_TRAINER_H

#include "data/loader.h"
#include "optim/schedule.h"
#include "train/checkpoint.h"
#include "train/step.h"

typedef struct qat_train_config {
    int epochs;              /* total, counting those done before a resume */
    qat_lr_schedule sched;   /* drives the optimizer's lr (o->cfg.lr is the base) */
    float clip_norm;         /* 0: no gradient clipping */
    const char *checkpoint;  /* saved after every epoch; NULL: none */
    const char *log;         /* metrics appended after every epoch (.csv or JSON lines) */
    bool progress;           /* progress bar / lines on stderr */
    const char *model_text;  /* the model description stored in checkpoints */
    const qat_st_kv *extra;  /* more checkpoint metadata (normalisation, data, seed) */
    size_t n_extra;
    const qat_distill *distill; /* a teacher (train/step.h), or NULL */
    const char *history;     /* the resumed checkpoint's "history", continued; or NULL */
} qat_train_config;

/* Every checkpoint the trainer writes carries the run's curve as metadata "history": CSV
 * text, a header line "epoch,step,lr,train_loss,train_acc,test_loss,test_acc"
 * followed by the model's learned quantization parameters (each PACT alpha and LSQ
 * activation step by its state name; the mean of each layer's LSQ weight steps as
 * "<layer>.weight_step"), then one line per epoch (test values -1 when not evaluated).
 * No timings, so that a resumed run's checkpoint stays byte-identical to an uninterrupted
 * one's. A resumed run continues the history it is given when the header matches. qat report
 * draws it (docs/report.md). */
#define QAT_HISTORY_KEY "history"

typedef struct qat_train_result {
    int epochs_done;
    long steps;
    double train_loss, train_acc; /* of the last epoch */
    double test_loss, test_acc;   /* of the last evaluation; -1 without a test loader */
    double seconds;               /* training time of all epochs run here */
    double samples_per_s;
} qat_train_result;

/* Trains epochs start_epoch .. cfg->epochs-1. `test` may be NULL. `rng` drives dropout
 * and is saved in checkpoints. */
qat_status qat_train_run(qat_model *m, qat_optim *o, qat_loader *train, qat_loader *test,
                         const qat_train_config *cfg, int start_epoch, long start_step,
                         qat_rng *rng, qat_train_result *r, qat_error *err);

/* Mean loss and accuracy over every batch of `l` (its epoch 0 order), inference mode. */
qat_status qat_evaluate(qat_model *m, qat_tape *t, qat_loader *l, double *loss, double *acc,
                        qat_error *err);

#endif
