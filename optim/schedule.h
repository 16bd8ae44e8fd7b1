/* schedule.h - learning-rate schedules as pure closed forms of the step number.
 *
 * A schedule maps (base_lr, step) to the rate of that optimizer step; it keeps no state,
 * so resuming a run needs only the step count (qat_optim.step).
 *
 *     qat_lr_schedule s = {.kind = QAT_LR_COSINE, .t_max = 9000, .eta_min = 1e-5,
 *                          .warmup_steps = 1000, .warmup_start_factor = 0.01};
 *     if (qat_lr_schedule_check(&s, &err) != QAT_STATUS_OK) { report err.msg }
 *     ... qat_optim_step(&opt, params, grads, qat_lr_schedule_at(&s, base_lr, opt.step));
 *
 * `step` counts from 0: step 0 is the first optimizer step. This equals PyTorch's
 * scheduler.last_epoch in the usual loop `optimizer.step(); scheduler.step()`, i.e. the
 * rate PyTorch uses for its k-th optimizer step (k from 0) is qat_lr_schedule_at(.., k).
 * A zero-initialised struct is a constant rate without warm-up.
 *
 * Main schedules, with u the step counted from the end of warm-up (u = step - W):
 *   QAT_LR_CONSTANT  lr = base_lr
 *   QAT_LR_STEP      lr = base_lr * gamma^floor(u / step_size)          (StepLR)
 *   QAT_LR_COSINE    lr = eta_min + (base_lr - eta_min) (1 + cos(pi u / t_max)) / 2
 *                    (CosineAnnealingLR's closed form; Loshchilov & Hutter, "SGDR:
 *                    Stochastic Gradient Descent with Warm Restarts", ICLR 2017, eq. 5
 *                    without restarts). Like PyTorch's, it is periodic: past u = t_max
 *                    the rate climbs back towards base_lr, reaching it at u = 2 t_max.
 *                    Set t_max to the number of steps after warm-up to end at eta_min.
 *
 * Linear warm-up (Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet in 1
 * Hour", 2017, sec. 2.2), off when warmup_steps W == 0. For step < W the rate is
 *     lr = base_lr * (s + (1 - s) * step / W),      s = warmup_start_factor,
 * which is PyTorch's LinearLR(start_factor=s, end_factor=1, total_iters=W) multiplied
 * onto the main schedule at u = 0 (where every main schedule equals base_lr). From step W
 * on, the main schedule runs with u = step - W: it starts where warm-up ends, and t_max
 * and step_size count only the steps after warm-up. This is what PyTorch's
 * SequentialLR([LinearLR(..., total_iters=W), main], milestones=[W]) produces, so a
 * run with W warm-up steps and N in all uses t_max = N - W.
 *
 * Computation is in double (as PyTorch's Python floats); the result is rounded to float
 * once.
 */
#ifndef QAT_SCHEDULE_H
#define QAT_SCHEDULE_H

#include "autograd/common.h"

typedef enum qat_lr_kind {
    QAT_LR_CONSTANT = 0,
    QAT_LR_STEP,
    QAT_LR_COSINE,
    QAT_LR_COUNT
} qat_lr_kind;

/* Valid ranges (qat_lr_schedule_check):
 *   step_size            QAT_LR_STEP: >= 1
 *   gamma                QAT_LR_STEP: > 0, finite (> 1 grows the rate, allowed)
 *   t_max                QAT_LR_COSINE: >= 1
 *   eta_min              QAT_LR_COSINE: >= 0, finite (an absolute rate, not a factor)
 *   warmup_steps         >= 0 (0: no warm-up)
 *   warmup_start_factor  [0, 1] when warmup_steps > 0. PyTorch's LinearLR refuses 0;
 *                        here 0 is allowed (the first step then has rate 0).
 * Fields the kind does not use are ignored. */
typedef struct qat_lr_schedule {
    qat_lr_kind kind;
    long step_size;
    double gamma;
    long t_max;
    double eta_min;
    long warmup_steps;
    double warmup_start_factor;
} qat_lr_schedule;

/* On a bad field returns QAT_STATUS_INVALID_ARG with a message naming it and its value. */
qat_status qat_lr_schedule_check(const qat_lr_schedule *s, qat_error *err);

/* The rate of optimizer step `step` (>= 0, asserted) for a schedule that passes
 * qat_lr_schedule_check (asserted for the kind). Pure: no state, any order of calls. */
float qat_lr_schedule_at(const qat_lr_schedule *s, float base_lr, long step);

/* "constant", "step", "cosine"; "unknown" otherwise. */
const char *qat_lr_kind_str(qat_lr_kind kind);

#endif
