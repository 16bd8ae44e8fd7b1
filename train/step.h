/* step.h - one training step and batch evaluation, the pieces every training loop
 * repeats.
 *
 * A training step: reset the tape, forward the batch in training mode, softmax
 * cross-entropy, zero the gradients, backward, optionally clip the global gradient
 * norm, and take an optimizer step. A non-finite loss or gradient stops before the
 * optimizer touches the weights, so the model still holds the last good weights and
 * the caller can keep the last good checkpoint; the status is QAT_STATUS_NUMERIC with
 * a message saying what went wrong.
 */
#ifndef QAT_STEP_H
#define QAT_STEP_H

#include <stdint.h>

#include "data/loader.h"
#include "layers/model.h"
#include "optim/optim.h"

typedef struct qat_step_result {
    float loss;          /* mean over the batch */
    long correct;        /* argmax == label */
    double grad_norm;    /* global L2 norm before clipping */
} qat_step_result;

/* clip_norm > 0 rescales the gradients so that their global L2 norm is at most
 * clip_norm (torch.nn.utils.clip_grad_norm_), 0 disables clipping. After the optimizer
 * step, m->step advances by one. An optimizer that does not cover every parameter of the
 * model (created before qat_quant_prepare added some, say) is refused: INVALID_ARG. */
qat_status qat_train_step(qat_model *m, qat_tape *t, qat_optim *o, float lr, float clip_norm,
                          const qat_batch *b, qat_step_result *r, qat_error *err);

/* Knowledge distillation (layers/loss.h): the teacher, a float model of the same classes,
 * runs each batch in inference mode, and the loss mixes its softened predictions with
 * the labels. The usual teacher of QAT is the float checkpoint it starts from. */
typedef struct qat_distill {
    qat_model *teacher;
    float temperature; /* T > 0 */
    float alpha;       /* weight of the soft term, in [0, 1] */
} qat_distill;

/* qat_train_step with a teacher (kd NULL: the same as qat_train_step). The reported loss
 * is the mixed one; correct counts the student's argmax against the labels. */
qat_status qat_train_step_distill(qat_model *m, qat_tape *t, qat_optim *o, float lr, float clip_norm,
                                  const qat_batch *b, const qat_distill *kd, qat_step_result *r, qat_error *err);

/* Forward in inference mode (no tape nodes, running batch-norm statistics); adds the
 * batch's summed loss and correct count to *loss_sum and *correct. */
qat_status qat_eval_batch(qat_model *m, qat_tape *t, const qat_batch *b, double *loss_sum,
                          long *correct, qat_error *err);

/* Number of rows of logits (n, C) whose argmax equals the label. */
long qat_count_correct(const float *logits, const int32_t *y, int n, int C);

#endif
