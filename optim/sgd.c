/* sgd.c - the SGD kind: its descriptor (optim/kind.h), config fields and check, state
 * layout and update (the optimizer object itself is in optim.c).
 *
 * SGD, as torch/optim/sgd.py (_single_tensor_sgd, PyTorch 1.13), per element:
 *     d = g + weight_decay * p                       (if weight_decay != 0)
 *     if momentum != 0:
 *         buf = d                                    (first step: a copy, not zero)
 *         buf = momentum * buf + (1 - dampening) * d (later steps)
 *         d   = d + momentum * buf  (nesterov)   or   d = buf
 *     p = p - lr * d
 * Reference: Sutskever, Martens, Dahl, Hinton, "On the importance of initialization and
 * momentum in deep learning", ICML 2013 (PyTorch applies lr outside the buffer, which
 * equals their form for a constant lr).
 *
 * Rounding: PyTorch evaluates each line as float32 tensor ops whose Python-float
 * scalars (momentum, 1 - dampening, -lr, weight_decay) are first rounded to float; the
 * loop below performs the same float operations in the same order. (On CPUs with FMA,
 * ATen's vectorised add-with-alpha fuses a*x + y into one rounding while this plain C,
 * compiled with -std=c11 and hence -ffp-contract=off, rounds twice; the difference is
 * at most an ulp per operation.)
 */
#include "optim/optim.h"

#include <math.h>
#include <string.h>

#include "autograd/parallel.h"
#include "optim/kind.h"

/* In the order checkpoints store them; files already written have this order. */
static const qat_optim_field sgd_fields[] = {
    {"lr", QAT_OPTIM_VALUE_NUMBER, offsetof(qat_optim_config, lr)},
    {"momentum", QAT_OPTIM_VALUE_NUMBER, offsetof(qat_optim_config, momentum)},
    {"dampening", QAT_OPTIM_VALUE_NUMBER, offsetof(qat_optim_config, dampening)},
    {"weight_decay", QAT_OPTIM_VALUE_NUMBER, offsetof(qat_optim_config, weight_decay)},
    {"nesterov", QAT_OPTIM_VALUE_BOOL, offsetof(qat_optim_config, nesterov)},
};

static qat_status sgd_check(const qat_optim_config *cfg, qat_error *err) {
    qat_status s;
    if ((s = qat_optim_check_nonneg(cfg, "weight_decay", cfg->weight_decay, err))) return s;
    if ((s = qat_optim_check_unit(cfg, "momentum", cfg->momentum, true, err))) return s;
    if ((s = qat_optim_check_unit(cfg, "dampening", cfg->dampening, false, err))) return s;
    if (cfg->nesterov && cfg->momentum == 0.0)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "optim SGD: nesterov needs momentum > 0, but momentum = 0");
    if (cfg->nesterov && cfg->dampening != 0.0)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "optim SGD: nesterov needs dampening = 0, but dampening = %g",
                             cfg->dampening);
    return QAT_STATUS_OK;
}

/* Indices into o->tensors. */
enum { SGD_MOMENTUM_BUFFER = 0 };

/* momentum_buffer (n floats) when momentum != 0, else no state. */
static int sgd_layout(const qat_optim_config *cfg, size_t n, size_t n_blocks, qat_optim_state_tensor *out) {
    (void)n_blocks;
    if (cfg->momentum == 0.0) return 0;
    out[SGD_MOMENTUM_BUFFER] =
        (qat_optim_state_tensor){.name = "momentum_buffer", .dtype = QAT_ST_DTYPE_F32, .numel = n};
    return 1;
}

typedef struct sgd_job {
    float *p, *buf;
    const float *g;
    float wd, mom, one_minus_damp, neg_lr;
    bool has_wd, first, nesterov;
} sgd_job;

QAT_HOT static void sgd_plain_part(void *ctx, size_t b, size_t e) {
    const sgd_job *j = ctx;
    float *restrict p = j->p;
    const float *restrict g = j->g;
    for (size_t i = b; i < e; i++) {
        float d = j->has_wd ? g[i] + j->wd * p[i] : g[i];
        p[i] = p[i] + j->neg_lr * d;
    }
}

QAT_HOT static void sgd_momentum_part(void *ctx, size_t b, size_t e) {
    const sgd_job *j = ctx;
    float *restrict p = j->p;
    float *restrict buf = j->buf;
    const float *restrict g = j->g;
    const float wd = j->wd, mom = j->mom, one_minus_damp = j->one_minus_damp, neg_lr = j->neg_lr;
    const bool has_wd = j->has_wd, first = j->first, nesterov = j->nesterov;
    for (size_t i = b; i < e; i++) {
        float d = has_wd ? g[i] + wd * p[i] : g[i];
        float bv = first ? d : buf[i] * mom + one_minus_damp * d;
        buf[i] = bv;
        d = nesterov ? d + mom * bv : bv;
        p[i] = p[i] + neg_lr * d;
    }
}

/* Elementwise, so the threads share the parameters out (any split, the same bits). */
static void sgd_update(qat_optim *o, float *params, const float *grads, float lr) {
    QAT_ASSERT(o->cfg.kind == QAT_OPTIM_SGD);
    /* Each scalar rounded to float once, as ATen does when it scales a float tensor;
     * 1 - dampening is computed in double first (a Python float expression). */
    sgd_job j = {.p = params, .g = grads,
                 .wd = (float)o->cfg.weight_decay, .mom = (float)o->cfg.momentum,
                 .one_minus_damp = (float)(1.0 - o->cfg.dampening), .neg_lr = -lr,
                 .has_wd = o->cfg.weight_decay != 0.0,
                 .first = o->step == 0, /* PyTorch: momentum_buffer is None */
                 .nesterov = o->cfg.nesterov};
    if (o->cfg.momentum == 0.0) {
        qat_parallel_for(o->n, QAT_OPTIM_GRAIN, sgd_plain_part, &j);
        return;
    }
    QAT_ASSERT(o->n_tensors == 1 && o->tensors[SGD_MOMENTUM_BUFFER].dtype == QAT_ST_DTYPE_F32 &&
               o->tensors[SGD_MOMENTUM_BUFFER].numel == o->n);
    j.buf = o->tensors[SGD_MOMENTUM_BUFFER].data;
    qat_parallel_for(o->n, QAT_OPTIM_GRAIN, sgd_momentum_part, &j);
}

const qat_optim_desc qat_optim_desc_sgd = {
    .name = "SGD",
    .fields = sgd_fields,
    .n_fields = (int)(sizeof sgd_fields / sizeof sgd_fields[0]),
    .defaults = NULL, /* the common defaults are SGD's */
    .check = sgd_check,
    .layout = sgd_layout,
    .update = sgd_update,
};
