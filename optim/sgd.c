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

void qat_optim_sgd_update(qat_optim *o, float *params, const float *grads, float lr) {
    QAT_ASSERT(o->cfg.kind == QAT_OPTIM_SGD);
    const size_t n = o->n;
    float *restrict p = params;
    const float *restrict g = grads;
    /* Each scalar rounded to float once, as ATen does when it scales a float tensor;
     * 1 - dampening is computed in double first (a Python float expression). */
    const float wd = (float)o->cfg.weight_decay;
    const float mom = (float)o->cfg.momentum;
    const float one_minus_damp = (float)(1.0 - o->cfg.dampening);
    const float neg_lr = -lr;
    const bool has_wd = o->cfg.weight_decay != 0.0;

    if (o->cfg.momentum == 0.0) {
        for (size_t i = 0; i < n; i++) {
            float d = has_wd ? g[i] + wd * p[i] : g[i];
            p[i] = p[i] + neg_lr * d;
        }
        return;
    }

    float *restrict buf = o->momentum_buffer;
    QAT_ASSERT(buf != NULL);
    const bool first = o->step == 0; /* PyTorch: momentum_buffer is None */
    const bool nesterov = o->cfg.nesterov;
    for (size_t i = 0; i < n; i++) {
        float d = has_wd ? g[i] + wd * p[i] : g[i];
        float b = first ? d : buf[i] * mom + one_minus_damp * d;
        buf[i] = b;
        d = nesterov ? d + mom * b : b;
        p[i] = p[i] + neg_lr * d;
    }
}
