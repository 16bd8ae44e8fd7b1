/* optim.h - optimizers over one flat parameter array: SGD (momentum, dampening,
 * Nesterov, L2 weight decay), Adam (L2 weight decay) and AdamW (decoupled weight decay).
 *
 * A model keeps all of its parameters in one contiguous float array and all of their
 * gradients in a second array of the same length n, so an optimizer step is a flat loop
 * over n floats; it does not know about tensors or layers.
 *
 *     qat_optim_config cfg = qat_optim_config_default(QAT_OPTIM_ADAMW);
 *     cfg.lr = 3e-4;
 *     qat_optim opt;
 *     qat_error err = {0};
 *     if (qat_optim_init(&opt, &cfg, n, &err) != QAT_STATUS_OK) { report err.msg }
 *     for (long t = 0; t < steps; t++) {
 *         ... forward, backward: grads[0..n) ...
 *         float lr = qat_lr_schedule_at(&sched, (float)cfg.lr, t);   // optim/schedule.h
 *         qat_optim_step(&opt, params, grads, lr);
 *     }
 *     qat_optim_free(&opt);
 *
 * The update formulas are PyTorch 1.13's (torch/optim/sgd.py, adam.py, adamw.py, the
 * single-tensor code path, maximize=False, amsgrad=False), operation by operation in
 * float32, so that a step matches torch.optim to float rounding. With g the gradient,
 * p the parameter, t the step number counted from 1 and lr the rate passed to the step:
 *
 *   SGD     (Sutskever et al., "On the importance of initialization and momentum in
 *            deep learning", ICML 2013, in PyTorch's formulation)
 *     g <- g + weight_decay * p                      (if weight_decay != 0)
 *     if momentum != 0:
 *         buf <- g                                   (t = 1: a copy of g, not zero)
 *         buf <- momentum * buf + (1 - dampening) * g   (t > 1)
 *         g   <- g + momentum * buf  if nesterov, else  g <- buf
 *     p <- p - lr * g
 *
 *   Adam    (Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015)
 *     g <- g + weight_decay * p                      (L2 penalty, if weight_decay != 0)
 *     m <- beta1 * m + (1 - beta1) * g
 *     v <- beta2 * v + (1 - beta2) * g * g
 *     step_size = lr / (1 - beta1^t)                 (double, as Python floats are)
 *     denom     = sqrt(v) / sqrt(1 - beta2^t) + eps
 *     p <- p - step_size * m / denom
 *
 *   AdamW   (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019)
 *     p <- p * (1 - lr * weight_decay)               (first, and with the current lr)
 *     then the Adam update above without the L2 term.
 *
 * Optimizer state (for checkpoints): everything a resumed run needs is `step` and the
 * `n_state` floats at `state`, one allocation made by qat_optim_init and laid out as
 *     SGD, momentum != 0:  state = [ momentum_buffer (n) ]
 *     SGD, momentum == 0:  no state (state == NULL, n_state == 0)
 *     Adam, AdamW:         state = [ exp_avg (n) | exp_avg_sq (n) ]
 * (the names are PyTorch's state_dict keys). To restore: qat_optim_init with the same
 * config and n, then copy `step` and the n_state floats back; continuing is then
 * bit-identical to a run that was never interrupted (tests/test_optim.c checks this).
 * The config is not part of the state; save it separately if it can change.
 */
#ifndef QAT_OPTIM_H
#define QAT_OPTIM_H

#include <stdbool.h>
#include <stddef.h>

#include "autograd/common.h"

/* Parameters per thread's part of an update, at least (autograd/parallel.h). */
#define QAT_OPTIM_GRAIN 16384

typedef enum qat_optim_kind {
    QAT_OPTIM_SGD = 0,
    QAT_OPTIM_ADAM,
    QAT_OPTIM_ADAMW,
} qat_optim_kind;

/* Hyper-parameters. Scalars are double, as they are Python floats in PyTorch; each is
 * rounded to float where PyTorch rounds it (when it scales a float32 tensor). Fields
 * that `kind` does not use are ignored and not validated. Valid ranges:
 *   lr            >= 0, finite. The base rate: qat_optim_step takes the rate of each
 *                 step as an argument (from a schedule, or simply cfg.lr); this field
 *                 is checked once at init so that a bad flag fails early.
 *   weight_decay  >= 0, finite. SGD and Adam: L2 term added to the gradient; AdamW:
 *                 decoupled decay p *= 1 - lr * weight_decay.
 *   momentum      SGD: [0, 1); 0 disables the momentum buffer.
 *   dampening     SGD: [0, 1].
 *   nesterov      SGD: requires momentum > 0 and dampening == 0 (as PyTorch).
 *   beta1, beta2  Adam/AdamW: [0, 1).
 *   eps           Adam/AdamW: > 0, finite. */
typedef struct qat_optim_config {
    qat_optim_kind kind;
    double lr;
    double momentum;
    double dampening;
    bool nesterov;
    double weight_decay;
    double beta1;
    double beta2;
    double eps;
} qat_optim_config;

/* PyTorch's defaults for `kind`: momentum 0, dampening 0, nesterov off; betas
 * (0.9, 0.999), eps 1e-8; weight_decay 0 (SGD, Adam) or 0.01 (AdamW); lr 1e-3 (Adam and
 * AdamW's default; PyTorch 1.13's SGD has no default lr, 2.x uses 1e-3). All fields are
 * filled whatever the kind. `kind` must be a qat_optim_kind (asserted). */
qat_optim_config qat_optim_config_default(qat_optim_kind kind);

/* "SGD", "Adam", "AdamW"; "unknown" for anything else. */
const char *qat_optim_kind_str(qat_optim_kind kind);

/* Checks every field `cfg->kind` uses against the ranges above. On failure returns
 * QAT_STATUS_INVALID_ARG with a message naming the field and its value. */
qat_status qat_optim_config_check(const qat_optim_config *cfg, qat_error *err);

typedef struct qat_optim {
    qat_optim_config cfg; /* a copy, checked */
    size_t n;             /* number of parameters */
    long step;            /* steps taken so far; the next step is number step + 1 */
    float *state;         /* the single allocation, n_state floats (NULL if none) */
    size_t n_state;       /* 0, n or 2n, see the layout above */
    /* Views into `state` (NULL when the kind or config has no such buffer): */
    float *momentum_buffer; /* SGD with momentum != 0 */
    float *exp_avg;         /* Adam/AdamW: first moment m */
    float *exp_avg_sq;      /* Adam/AdamW: second moment v */
} qat_optim;

/* Checks `cfg` (qat_optim_config_check), then allocates the zeroed state for n > 0
 * parameters and sets step = 0. On failure returns INVALID_ARG (bad config, n == 0) or
 * NOMEM, leaves a message in `err` (may be NULL) and leaves `o` zeroed, so that
 * qat_optim_free(o) is always safe. */
qat_status qat_optim_init(qat_optim *o, const qat_optim_config *cfg, size_t n, qat_error *err);
void qat_optim_free(qat_optim *o);

/* One update of params[0..n) from grads[0..n) with learning rate lr (>= 0 and finite;
 * asserted), then step += 1. params and grads must not overlap. Non-finite gradients
 * are not checked here; they propagate as in PyTorch. */
void qat_optim_step(qat_optim *o, float *params, const float *grads, float lr);

/* The per-kind kernels qat_optim_step dispatches to (sgd.c, adam.c); they do not
 * change `step`, which qat_optim_step increments after them. */
void qat_optim_sgd_update(qat_optim *o, float *params, const float *grads, float lr);
void qat_optim_adam_update(qat_optim *o, float *params, const float *grads, float lr);

#endif
