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
 * Self-description (for checkpoints, the CLI and tools): an optimizer describes itself
 * so that saving, loading and resuming are loops that know no optimizer kind.
 *  - Kind: qat_optim_kind_str gives the name checkpoints store ("SGD", "Adam", "AdamW");
 *    qat_optim_kind_parse reads it back (any case); qat_optim_kind_names lists them.
 *  - Config as key/values: qat_optim_fields(kind) lists the config fields the kind uses,
 *    each a name, a type (number or bool) and where it is in qat_optim_config, in the
 *    order checkpoints store them; qat_optim_field_get/set read and write one as a
 *    double. Every kind's first field is "lr".
 *        SGD:          lr, momentum, dampening, weight_decay, nesterov (bool)
 *        Adam, AdamW:  lr, beta1, beta2, eps, weight_decay
 *  - State as named, typed 1-D tensors: o->tensors[0..n_tensors), each a name (PyTorch's
 *    state_dict key), a dtype (io/safetensors.h), an element count and the data, all in
 *    one allocation made by qat_optim_init, in this order:
 *        SGD, momentum != 0:  momentum_buffer (F32, n)
 *        SGD, momentum == 0:  none
 *        Adam, AdamW:         exp_avg (F32, n), exp_avg_sq (F32, n)
 *    qat_optim_state_layout(cfg, n) gives the same list (data NULL) without allocating,
 *    so a reader can check a file's tensors before an optimizer exists; qat_optim_init
 *    builds its tensors from it. A kind may use any dtype (an 8-bit Adam: U8 codes and
 *    F32 block maxima); each tensor starts at a multiple of its element size.
 * Everything a resumed run needs is `step` and the tensors' data. To save: store the kind
 * name, each field, `step`, and each tensor under its name. To restore: parse the kind,
 * start from qat_optim_config_default(kind), set each field, qat_optim_init with the
 * same n, check the file's tensors against o->tensors (name, dtype, numel), copy their
 * data and `step` back; continuing is then bit-identical to a run that was never
 * interrupted (tests/test_optim.c checks this).
 *
 * Adding an optimizer kind (say 8-bit Adam) touches optim/ only:
 *  1. a member before QAT_OPTIM_COUNT in qat_optim_kind, and its hyper-parameters (new
 *     fields in qat_optim_config, with their defaults in qat_optim_config_default and
 *     their ranges in the comment above the struct);
 *  2. a file optim/<kind>.c defining a qat_optim_desc (optim/kind.h): its name, its field
 *     table, optionally a hook for kind-specific defaults, its config check, its state
 *     layout and its update kernel (which reads its state through o->tensors);
 *  3. its line in the descriptor table in optim.c (a _Static_assert counts the lines);
 *  4. its formula, fields and tensors in this comment, and its tests in
 *     tests/test_optim.c (the table-driven tests there list the expected kinds).
 * Code that goes through the functions below (kind names, fields, state tensors) needs
 * no change. optim/ has no switch over qat_optim_kind; elsewhere such switches have no
 * default:, so -Wswitch-enum names any a new kind must extend. The kind names, field
 * names and order, and tensor names and order are stored in checkpoints: changing an
 * existing kind's is a file format change.
 */
#ifndef QAT_OPTIM_H
#define QAT_OPTIM_H

#include <stdbool.h>
#include <stddef.h>

#include "autograd/common.h"
#include "io/safetensors.h"

/* Parameters per thread's part of an update, at least (autograd/parallel.h). */
#define QAT_OPTIM_GRAIN 16384

typedef enum qat_optim_kind {
    QAT_OPTIM_SGD = 0,
    QAT_OPTIM_ADAM,
    QAT_OPTIM_ADAMW,
    QAT_OPTIM_SGD8,   /* SGD with its momentum buffer in 8 bits (optim8.c) */
    QAT_OPTIM_ADAM8,  /* Adam with both moments in 8 bits */
    QAT_OPTIM_ADAMW8, /* AdamW with both moments in 8 bits */
    QAT_OPTIM_COUNT
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

/* "SGD", "Adam", "AdamW" (the names checkpoints store); "unknown" for anything else. */
const char *qat_optim_kind_str(qat_optim_kind kind);

/* The kind whose name is `name`, in any case ("SGD", "sgd", "adamw", ...): true and
 * *kind set, or false (*kind untouched). */
bool qat_optim_kind_parse(const char *name, qat_optim_kind *kind);

/* Writes the kind names for a message, "SGD, Adam or AdamW", to buf (size bytes, always
 * NUL-terminated when size > 0, truncated if too small) and returns the length of the
 * whole text, as snprintf does. 64 bytes is plenty today. */
size_t qat_optim_kind_names(char *buf, size_t size);

/* Checks every field `cfg->kind` uses against the ranges above. On failure returns
 * QAT_STATUS_INVALID_ARG with a message naming the field and its value. */
qat_status qat_optim_config_check(const qat_optim_config *cfg, qat_error *err);

/* ---- the config as key/values ------------------------------------------------------ */

typedef enum qat_optim_value {
    QAT_OPTIM_VALUE_NUMBER = 0, /* a double in qat_optim_config */
    QAT_OPTIM_VALUE_BOOL,       /* a bool in qat_optim_config */
    QAT_OPTIM_VALUE_COUNT
} qat_optim_value;

typedef struct qat_optim_field {
    const char *name;     /* the config member's name: "lr", "nesterov", ... */
    qat_optim_value type;
    size_t offset;        /* of the member in qat_optim_config */
} qat_optim_field;

/* The most fields one kind may have (a reader's table of seen fields). */
#define QAT_OPTIM_MAX_FIELDS 16

/* The fields `kind` uses, in the order checkpoints store them (see the top of this
 * file); *n is set to their number, at most QAT_OPTIM_MAX_FIELDS. `kind` must be a qat_optim_kind (asserted). The
 * array is static. */
const qat_optim_field *qat_optim_fields(qat_optim_kind kind, int *n);
/* The field of `kind` called `name` (case-sensitive), or NULL if the kind has none. */
const qat_optim_field *qat_optim_field_find(qat_optim_kind kind, const char *name);
/* The value of field f in cfg; a bool reads as 0 or 1. */
double qat_optim_field_get(const qat_optim_config *cfg, const qat_optim_field *f);
/* Sets field f of cfg to v; a bool field becomes v != 0. Nothing is checked: call
 * qat_optim_config_check once every field is set. */
void qat_optim_field_set(qat_optim_config *cfg, const qat_optim_field *f, double v);

/* ---- the state as named, typed tensors ---------------------------------------------- */

#define QAT_OPTIM_MAX_STATE 4

typedef struct qat_optim_state_tensor {
    const char *name;   /* "momentum_buffer", "exp_avg", "exp_avg_sq" (PyTorch's
                           state_dict keys); static strings */
    qat_st_dtype dtype; /* F32 today; U8 codes + F32 block maxima for an 8-bit optimizer */
    size_t numel;       /* 1-D */
    void *data;         /* into the optimizer's allocation (NULL in a layout) */
} qat_optim_state_tensor;

/* The state tensors qat_optim_init(cfg, n) makes, in the same order, with data NULL:
 * fills out[0..k) (room for QAT_OPTIM_MAX_STATE) and returns k (0 when the config has
 * no state). cfg->kind must be a qat_optim_kind (asserted); the other fields should have
 * passed qat_optim_config_check (SGD's tensors depend on whether momentum != 0). */
int qat_optim_state_layout(const qat_optim_config *cfg, size_t n, qat_optim_state_tensor *out);

typedef struct qat_optim {
    qat_optim_config cfg; /* a copy, checked */
    size_t n;             /* number of parameters */
    long step;            /* steps taken so far; the next step is number step + 1 */
    qat_optim_state_tensor tensors[QAT_OPTIM_MAX_STATE]; /* the state, see the top */
    int n_tensors;
    void *mem;            /* the single allocation holding every tensor (NULL if none) */
    size_t mem_bytes;
    /* Blocks of the 8-bit kinds (optim8.c): block b covers parameters [blocks[b],
     * blocks[b + 1]); QAT_BLOCKQ_SIZE (2048) long, restarting at every tensor given to
     * qat_optim_init_tensors. */
    size_t n_blocks;
    size_t *blocks;
} qat_optim;

/* Checks `cfg` (qat_optim_config_check), then allocates the zeroed state tensors for
 * n > 0 parameters (qat_optim_state_layout) and sets step = 0. On failure returns
 * INVALID_ARG (bad config, n == 0) or NOMEM, leaves a message in `err` (may be NULL) and
 * leaves `o` zeroed, so that qat_optim_free(o) is always safe. */
qat_status qat_optim_init(qat_optim *o, const qat_optim_config *cfg, size_t n, qat_error *err);
/* The same for parameters that are n_lengths consecutive tensors of these lengths (>= 1
 * each, summing to the parameter count): the 8-bit kinds start a block at each tensor.
 * qat_optim_init(o, cfg, n, err) is this with one tensor of n. */
qat_status qat_optim_init_tensors(qat_optim *o, const qat_optim_config *cfg, const size_t *lengths,
                                  int n_lengths, qat_error *err);
void qat_optim_free(qat_optim *o);

/* One update of params[0..n) from grads[0..n) with learning rate lr (>= 0 and finite;
 * asserted), then step += 1. params and grads must not overlap. Non-finite gradients
 * are not checked here; they propagate as in PyTorch. Dispatches to the kind's kernel
 * (sgd.c, adam.c) through the descriptor table in optim.c. */
void qat_optim_step(qat_optim *o, float *params, const float *grads, float lr);

#endif
