/* sgd.c - the SGD update (the optimizer object itself is in optim.c).
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
void qat_optim_sgd_update(qat_optim *o, float *params, const float *grads, float lr) {
    QAT_ASSERT(o->cfg.kind == QAT_OPTIM_SGD);
    /* Each scalar rounded to float once, as ATen does when it scales a float tensor;
     * 1 - dampening is computed in double first (a Python float expression). */
    sgd_job j = {.p = params, .g = grads, .buf = o->momentum_buffer,
                 .wd = (float)o->cfg.weight_decay, .mom = (float)o->cfg.momentum,
                 .one_minus_damp = (float)(1.0 - o->cfg.dampening), .neg_lr = -lr,
                 .has_wd = o->cfg.weight_decay != 0.0,
                 .first = o->step == 0, /* PyTorch: momentum_buffer is None */
                 .nesterov = o->cfg.nesterov};
    if (o->cfg.momentum == 0.0) {
        qat_parallel_for(o->n, QAT_OPTIM_GRAIN, sgd_plain_part, &j);
        return;
    }
    QAT_ASSERT(j.buf != NULL);
    qat_parallel_for(o->n, QAT_OPTIM_GRAIN, sgd_momentum_part, &j);
}
