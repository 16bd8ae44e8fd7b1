/* adam.c - the Adam and AdamW kinds: their descriptors (optim/kind.h), config fields
 * and check, state layout and update, shared but for the name, the default
 * weight_decay and where the decay enters.
 *
 * As torch/optim/adam.py and adamw.py (_single_tensor_adam/_adamw, PyTorch 1.13,
 * amsgrad=False, maximize=False, capturable=False), per element, t = step number from 1:
 *     AdamW only:  p = p * (1 - lr * weight_decay)           (decoupled decay, first)
 *     Adam only:   g = g + weight_decay * p                  (L2 term, if wd != 0)
 *     m = beta1 * m + (1 - beta1) * g
 *     v = beta2 * v + (1 - beta2) * g * g
 *     step_size = lr / (1 - beta1^t)
 *     denom     = sqrt(v) / sqrt(1 - beta2^t) + eps
 *     p = p - step_size * m / denom
 * References: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015,
 * Algorithm 1: denom is sqrt(v_hat) + eps with v_hat = v / (1 - beta2^t), so eps is
 * added after the bias correction (not the paper's sec. 2 "efficient" variant with
 * eps_hat added to the uncorrected sqrt(v), which TensorFlow uses; the two differ when
 * |g| is near eps, and tests/test_optim.c has a case that tells them apart);
 * Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019 (AdamW).
 *
 * Rounding, following what PyTorch computes where:
 *  - bias_correction1, bias_correction2, step_size and sqrt(bias_correction2) are Python
 *    floats, i.e. double; pow(beta, t) is Python's `beta ** step` with step a float.
 *  - 1 - beta1, 1 - beta2 and 1 - lr * weight_decay are Python expressions (double),
 *    rounded to float once when they scale a float tensor.
 *  - Tensor ops are float32 and are reproduced one by one, in ATen's operand order:
 *    exp_avg.mul_(b1).add_(g, alpha=1-b1)            m*b1 + (1-b1)*g
 *    exp_avg_sq.mul_(b2).addcmul_(g, g, value=1-b2)  v*b2 + ((1-b2)*g)*g
 *    (exp_avg_sq.sqrt() / bc2_sqrt).add_(eps)        sqrtf(v)/bc2_sqrt + eps
 *    p.addcdiv_(m, denom, value=-step_size)          p + ((-step_size)*m)/denom
 *    where a double scalar that meets a float tensor (bc2_sqrt, eps) is rounded to float.
 * ATen may fuse some of these into FMAs on CPUs that have them; the test tolerance
 * (1e-6) is far above the ulp-level differences that causes.
 */
#include "optim/optim.h"

#include <math.h>

#include "autograd/parallel.h"
#include "optim/kind.h"

/* In the order checkpoints store them; files already written have this order. */
static const qat_optim_field adam_fields[] = {
    {"lr", QAT_OPTIM_VALUE_NUMBER, offsetof(qat_optim_config, lr)},
    {"beta1", QAT_OPTIM_VALUE_NUMBER, offsetof(qat_optim_config, beta1)},
    {"beta2", QAT_OPTIM_VALUE_NUMBER, offsetof(qat_optim_config, beta2)},
    {"eps", QAT_OPTIM_VALUE_NUMBER, offsetof(qat_optim_config, eps)},
    {"weight_decay", QAT_OPTIM_VALUE_NUMBER, offsetof(qat_optim_config, weight_decay)},
};

/* PyTorch's AdamW default; Adam's (0) is the common one. */
static void adamw_defaults(qat_optim_config *cfg) { cfg->weight_decay = 1e-2; }

static qat_status adam_check(const qat_optim_config *cfg, qat_error *err) {
    qat_status s;
    if ((s = qat_optim_check_nonneg(cfg, "weight_decay", cfg->weight_decay, err))) return s;
    if ((s = qat_optim_check_unit(cfg, "beta1", cfg->beta1, true, err))) return s;
    if ((s = qat_optim_check_unit(cfg, "beta2", cfg->beta2, true, err))) return s;
    return qat_optim_check_positive(cfg, "eps", cfg->eps, err);
}

/* Indices into o->tensors. */
enum { ADAM_EXP_AVG = 0, ADAM_EXP_AVG_SQ, ADAM_N_TENSORS };

/* exp_avg (m) and exp_avg_sq (v), n floats each. */
static int adam_layout(const qat_optim_config *cfg, size_t n, size_t n_blocks, qat_optim_state_tensor *out) {
    (void)cfg;
    (void)n_blocks;
    out[ADAM_EXP_AVG] =
        (qat_optim_state_tensor){.name = "exp_avg", .dtype = QAT_ST_DTYPE_F32, .numel = n};
    out[ADAM_EXP_AVG_SQ] =
        (qat_optim_state_tensor){.name = "exp_avg_sq", .dtype = QAT_ST_DTYPE_F32, .numel = n};
    return ADAM_N_TENSORS;
}

typedef struct adam_job {
    float *p, *m, *v;
    const float *g;
    float b1, one_minus_b1, b2, one_minus_b2, bc2_sqrt, eps, neg_step_size, decay, wd;
    bool adamw, l2;
} adam_job;

/* Elementwise, so the threads share the parameters out (any split, the same bits). The
 * AdamW decay comes first for each element, as PyTorch's whole-tensor mul_ comes first. */
QAT_HOT static void adam_part(void *ctx, size_t b, size_t e) {
    const adam_job *j = ctx;
    float *restrict p = j->p;
    const float *restrict g = j->g;
    float *restrict m = j->m;
    float *restrict v = j->v;
    if (j->adamw)
        for (size_t i = b; i < e; i++) p[i] = p[i] * j->decay;
    const float b1 = j->b1, one_minus_b1 = j->one_minus_b1, b2 = j->b2;
    const float one_minus_b2 = j->one_minus_b2, bc2_sqrt = j->bc2_sqrt, eps = j->eps;
    const float neg_step_size = j->neg_step_size, wd = j->wd;
    const bool l2 = j->l2;
    for (size_t i = b; i < e; i++) {
        const float gi = l2 ? g[i] + wd * p[i] : g[i];
        m[i] = m[i] * b1 + one_minus_b1 * gi;
        v[i] = v[i] * b2 + one_minus_b2 * gi * gi;
        const float denom = sqrtf(v[i]) / bc2_sqrt + eps;
        p[i] = p[i] + neg_step_size * m[i] / denom;
    }
}

/* params, grads, exp_avg, exp_avg_sq: (n) */
static void adam_update(qat_optim *o, float *params, const float *grads, float lr) {
    const qat_optim_config *c = &o->cfg;
    QAT_ASSERT(c->kind == QAT_OPTIM_ADAM || c->kind == QAT_OPTIM_ADAMW);
    QAT_ASSERT(o->n_tensors == ADAM_N_TENSORS);
    for (int i = 0; i < ADAM_N_TENSORS; i++)
        QAT_ASSERT(o->tensors[i].dtype == QAT_ST_DTYPE_F32 && o->tensors[i].numel == o->n);
    const size_t n = o->n;
    const double t = (double)(o->step + 1); /* PyTorch increments step_t first */
    const double bias_correction1 = 1.0 - pow(c->beta1, t);
    const double bias_correction2 = 1.0 - pow(c->beta2, t);
    const double step_size = (double)lr / bias_correction1;
    const double bias_correction2_sqrt = sqrt(bias_correction2);

    const float b1 = (float)c->beta1, one_minus_b1 = (float)(1.0 - c->beta1);
    const float b2 = (float)c->beta2, one_minus_b2 = (float)(1.0 - c->beta2);
    const float bc2_sqrt = (float)bias_correction2_sqrt;
    const float eps = (float)c->eps;
    const float neg_step_size = (float)(-step_size);

    adam_job j = {.p = params, .g = grads, .m = o->tensors[ADAM_EXP_AVG].data,
                  .v = o->tensors[ADAM_EXP_AVG_SQ].data, .b1 = b1,
                  .one_minus_b1 = one_minus_b1, .b2 = b2, .one_minus_b2 = one_minus_b2,
                  .bc2_sqrt = bc2_sqrt, .eps = eps, .neg_step_size = neg_step_size,
                  .adamw = c->kind == QAT_OPTIM_ADAMW,
                  /* param.mul_(1 - lr * weight_decay): PyTorch does this even for wd = 0 (a
                   * multiplication by 1, exact), so no special case. */
                  .decay = (float)(1.0 - (double)lr * c->weight_decay),
                  .l2 = c->kind == QAT_OPTIM_ADAM && c->weight_decay != 0.0,
                  .wd = (float)c->weight_decay};
    qat_parallel_for(n, QAT_OPTIM_GRAIN, adam_part, &j);
}

const qat_optim_desc qat_optim_desc_adam = {
    .name = "Adam",
    .fields = adam_fields,
    .n_fields = (int)(sizeof adam_fields / sizeof adam_fields[0]),
    .defaults = NULL, /* the common defaults are Adam's */
    .check = adam_check,
    .layout = adam_layout,
    .update = adam_update,
};

const qat_optim_desc qat_optim_desc_adamw = {
    .name = "AdamW",
    .fields = adam_fields,
    .n_fields = (int)(sizeof adam_fields / sizeof adam_fields[0]),
    .defaults = adamw_defaults,
    .check = adam_check,
    .layout = adam_layout,
    .update = adam_update,
};
