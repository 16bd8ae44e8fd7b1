/* optim8.c - the 8-bit kinds: SGD8, Adam8 and AdamW8, whose state is stored block-wise
 * in 8 bits with the dynamic map (optim/blockwise.h), as Dettmers et al., "8-bit
 * Optimizers via Block-wise Quantization" (ICLR 2022) do.
 *
 * Each update, block by block (QAT_BLOCKQ_SIZE parameters of the flat array):
 *   1. dequantize the block's state: s = map[code] * absmax;
 *   2. the update of the 32-bit kind (sgd.c, adam.c), element by element, in float, on
 *      the dequantized state: the same operations in the same order, so that with exact
 *      state the parameters would be the 32-bit kind's to the bit;
 *   3. the new state's block absmax, and its codes: the nearest map value.
 * The first moment (exp_avg, SGD's momentum buffer) uses the signed map, the second
 * (exp_avg_sq, never negative) the unsigned one. Blocks are independent, so the threads
 * share them out and the result does not depend on the thread count.
 *
 * State tensors (bitsandbytes' names): state1 (U8, n) and absmax1 (F32, blocks) for the
 * first moment; Adam8 and AdamW8 also state2 and absmax2 for the second. A fresh state is
 * the zeroed allocation: absmax 0, so every value dequantizes to zero whatever its code.
 *
 * Blocks: QAT_BLOCKQ_SIZE consecutive parameters, restarting at the start of every tensor
 * the optimizer was given (qat_optim_init_tensors; qat train gives it the model's), as
 * bitsandbytes quantizes each tensor on its own. One addition to the paper, for Adam: the
 * dequantized m is held to the bound exact Adam keeps, |m| <= m_bound sqrt(v) (see
 * adam8_update), so that a v rounded to zero cannot make a step of m / eps
 * (docs/memory.md measures why it is needed).
 */
#include "optim/optim.h"

#include <math.h>

#include "autograd/parallel.h"
#include "optim/blockwise.h"
#include "optim/kind.h"

/* Indices into o->tensors. */
enum { S8_STATE1 = 0, S8_ABSMAX1, S8_STATE2, S8_ABSMAX2, S8_MAX_TENSORS };

static int layout8(size_t n, size_t nb, int moments, qat_optim_state_tensor *out) {
    static const char *const names[S8_MAX_TENSORS] = {"state1", "absmax1", "state2", "absmax2"};
    for (int k = 0; k < moments; k++) {
        out[2 * k] = (qat_optim_state_tensor){.name = names[2 * k], .dtype = QAT_ST_DTYPE_U8, .numel = n};
        out[2 * k + 1] =
            (qat_optim_state_tensor){.name = names[2 * k + 1], .dtype = QAT_ST_DTYPE_F32, .numel = nb};
    }
    return 2 * moments;
}

typedef struct opt8_job {
    const qat_optim *o;
    float *p;
    const float *g;
    const float *map1, *map2; /* signed, unsigned */
    uint8_t *c1, *c2;
    float *a1, *a2;
    bool first;
    /* SGD */
    float wd, mom, one_minus_damp, neg_lr;
    bool has_wd, nesterov;
    /* Adam */
    float b1, one_minus_b1, b2, one_minus_b2, bc2_sqrt, eps, neg_step_size, decay, m_bound;
    bool adamw, l2;
} opt8_job;

/* Requantizes one block of new state s[0..len) into codes c and *a. */
static void requantize(uint8_t *c, float *a, const float *s, size_t len, const float *map) {
    qat_blockq_quantize(c, a, s, len, len, map);
}

static void block_range(const opt8_job *j, size_t b, size_t *i0, size_t *len) {
    *i0 = j->o->blocks[b];
    *len = j->o->blocks[b + 1] - *i0;
}

QAT_HOT static void sgd8_blocks(void *ctx, size_t b0, size_t b1) {
    const opt8_job *j = ctx;
    float buf[QAT_BLOCKQ_SIZE];
    for (size_t b = b0; b < b1; b++) {
        size_t i0, len;
        block_range(j, b, &i0, &len);
        float *restrict p = j->p + i0;
        const float *restrict g = j->g + i0;
        const uint8_t *c = j->c1 + i0;
        const float a = j->a1[b];
        for (size_t i = 0; i < len; i++) {
            float d = j->has_wd ? g[i] + j->wd * p[i] : g[i];
            float bv = j->first ? d : (j->map1[c[i]] * a) * j->mom + j->one_minus_damp * d;
            buf[i] = bv;
            d = j->nesterov ? d + j->mom * bv : bv;
            p[i] = p[i] + j->neg_lr * d;
        }
        requantize(j->c1 + i0, &j->a1[b], buf, len, j->map1);
    }
}

QAT_HOT static void adam8_blocks(void *ctx, size_t b0, size_t b1) {
    const opt8_job *j = ctx;
    float m[QAT_BLOCKQ_SIZE], v[QAT_BLOCKQ_SIZE];
    for (size_t b = b0; b < b1; b++) {
        size_t i0, len;
        block_range(j, b, &i0, &len);
        float *restrict p = j->p + i0;
        const float *restrict g = j->g + i0;
        const uint8_t *c1 = j->c1 + i0, *c2 = j->c2 + i0;
        const float a1 = j->a1[b], a2 = j->a2[b];
        if (j->adamw)
            for (size_t i = 0; i < len; i++) p[i] = p[i] * j->decay;
        for (size_t i = 0; i < len; i++) {
            const float gi = j->l2 ? g[i] + j->wd * p[i] : g[i];
            /* Exact Adam keeps |m| <= m_bound sqrt(v); a v that rounded to 0 while its m did
             * not would make the step m / eps: hold the dequantized m to the bound. */
            const float lim = j->m_bound * sqrtf(j->map2[c2[i]] * a2);
            float mo = j->map1[c1[i]] * a1;
            mo = mo > lim ? lim : mo < -lim ? -lim : mo;
            m[i] = mo * j->b1 + j->one_minus_b1 * gi;
            v[i] = (j->map2[c2[i]] * a2) * j->b2 + j->one_minus_b2 * gi * gi;
            const float denom = sqrtf(v[i]) / j->bc2_sqrt + j->eps;
            p[i] = p[i] + j->neg_step_size * m[i] / denom;
        }
        requantize(j->c1 + i0, &j->a1[b], m, len, j->map1);
        requantize(j->c2 + i0, &j->a2[b], v, len, j->map2);
    }
}

static opt8_job job_of(qat_optim *o, float *params, const float *grads, int moments) {
    QAT_ASSERT(o->n_tensors == 2 * moments);
    for (int k = 0; k < moments; k++)
        QAT_ASSERT(o->tensors[2 * k].dtype == QAT_ST_DTYPE_U8 && o->tensors[2 * k].numel == o->n &&
                   o->tensors[2 * k + 1].dtype == QAT_ST_DTYPE_F32 &&
                   o->tensors[2 * k + 1].numel == o->n_blocks);
    opt8_job j = {.o = o, .p = params, .g = grads, .map1 = qat_dynamic_map(true),
                  .map2 = qat_dynamic_map(false), .first = o->step == 0};
    if (moments > 0) j.c1 = o->tensors[S8_STATE1].data, j.a1 = o->tensors[S8_ABSMAX1].data;
    if (moments > 1) j.c2 = o->tensors[S8_STATE2].data, j.a2 = o->tensors[S8_ABSMAX2].data;
    return j;
}

static void run_blocks(const qat_optim *o, void (*fn)(void *, size_t, size_t), opt8_job *j) {
    qat_parallel_for(o->n_blocks, QAT_MAX(1, QAT_OPTIM_GRAIN / QAT_BLOCKQ_SIZE), fn, j);
}

/* ---- SGD8 ---- */

static const qat_optim_field sgd8_fields[] = {
    {"lr", QAT_OPTIM_VALUE_NUMBER, offsetof(qat_optim_config, lr)},
    {"momentum", QAT_OPTIM_VALUE_NUMBER, offsetof(qat_optim_config, momentum)},
    {"dampening", QAT_OPTIM_VALUE_NUMBER, offsetof(qat_optim_config, dampening)},
    {"weight_decay", QAT_OPTIM_VALUE_NUMBER, offsetof(qat_optim_config, weight_decay)},
    {"nesterov", QAT_OPTIM_VALUE_BOOL, offsetof(qat_optim_config, nesterov)},
};

/* An 8-bit SGD without momentum has no state to quantize: it would be SGD. */
static void sgd8_defaults(qat_optim_config *cfg) { cfg->momentum = 0.9; }

static qat_status sgd8_check(const qat_optim_config *cfg, qat_error *err) {
    qat_status s = qat_optim_desc_sgd.check(cfg, err);
    if (s) return s;
    if (cfg->momentum == 0.0)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "optim SGD8: momentum = 0 leaves no state to store in 8 bits; use SGD");
    return QAT_STATUS_OK;
}

static int sgd8_layout(const qat_optim_config *cfg, size_t n, size_t n_blocks, qat_optim_state_tensor *out) {
    (void)cfg;
    return layout8(n, n_blocks, 1, out);
}

static void sgd8_update(qat_optim *o, float *params, const float *grads, float lr) {
    QAT_ASSERT(o->cfg.kind == QAT_OPTIM_SGD8);
    opt8_job j = job_of(o, params, grads, 1);
    /* The scalars exactly as sgd.c rounds them. */
    j.wd = (float)o->cfg.weight_decay;
    j.mom = (float)o->cfg.momentum;
    j.one_minus_damp = (float)(1.0 - o->cfg.dampening);
    j.neg_lr = -lr;
    j.has_wd = o->cfg.weight_decay != 0.0;
    j.nesterov = o->cfg.nesterov;
    run_blocks(o, sgd8_blocks, &j);
}

const qat_optim_desc qat_optim_desc_sgd8 = {
    .name = "SGD8",
    .fields = sgd8_fields,
    .n_fields = (int)(sizeof sgd8_fields / sizeof sgd8_fields[0]),
    .defaults = sgd8_defaults,
    .check = sgd8_check,
    .layout = sgd8_layout,
    .update = sgd8_update,
};

/* ---- Adam8, AdamW8 ---- */

static const qat_optim_field adam8_fields[] = {
    {"lr", QAT_OPTIM_VALUE_NUMBER, offsetof(qat_optim_config, lr)},
    {"beta1", QAT_OPTIM_VALUE_NUMBER, offsetof(qat_optim_config, beta1)},
    {"beta2", QAT_OPTIM_VALUE_NUMBER, offsetof(qat_optim_config, beta2)},
    {"eps", QAT_OPTIM_VALUE_NUMBER, offsetof(qat_optim_config, eps)},
    {"weight_decay", QAT_OPTIM_VALUE_NUMBER, offsetof(qat_optim_config, weight_decay)},
};

static int adam8_layout(const qat_optim_config *cfg, size_t n, size_t n_blocks, qat_optim_state_tensor *out) {
    (void)cfg;
    return layout8(n, n_blocks, 2, out);
}

static void adam8_update(qat_optim *o, float *params, const float *grads, float lr) {
    const qat_optim_config *c = &o->cfg;
    QAT_ASSERT(c->kind == QAT_OPTIM_ADAM8 || c->kind == QAT_OPTIM_ADAMW8);
    opt8_job j = job_of(o, params, grads, 2);
    /* The scalars exactly as adam.c computes and rounds them. */
    const double t = (double)(o->step + 1);
    const double bias_correction1 = 1.0 - pow(c->beta1, t);
    const double bias_correction2 = 1.0 - pow(c->beta2, t);
    j.b1 = (float)c->beta1;
    j.one_minus_b1 = (float)(1.0 - c->beta1);
    j.b2 = (float)c->beta2;
    j.one_minus_b2 = (float)(1.0 - c->beta2);
    j.bc2_sqrt = (float)sqrt(bias_correction2);
    j.eps = (float)c->eps;
    j.neg_step_size = (float)(-((double)lr / bias_correction1));
    j.adamw = c->kind == QAT_OPTIM_ADAMW8;
    j.decay = (float)(1.0 - (double)lr * c->weight_decay);
    j.l2 = c->kind == QAT_OPTIM_ADAM8 && c->weight_decay != 0.0;
    j.wd = (float)c->weight_decay;
    /* |m| <= (1 - b1) / sqrt((1 - b2)(1 - b1^2 / b2)) sqrt(v) by Cauchy-Schwarz over the
     * gradients' weights (b1^2 < b2); 7.27 for the default betas. */
    const double r = c->beta1 * c->beta1 / c->beta2;
    j.m_bound = r < 1.0 ? (float)((1.0 - c->beta1) / sqrt((1.0 - c->beta2) * (1.0 - r))) : INFINITY;
    run_blocks(o, adam8_blocks, &j);
}

static qat_status adam8_check(const qat_optim_config *cfg, qat_error *err) {
    return qat_optim_desc_adam.check(cfg, err);
}

static void adamw8_defaults(qat_optim_config *cfg) { qat_optim_desc_adamw.defaults(cfg); }

const qat_optim_desc qat_optim_desc_adam8 = {
    .name = "Adam8",
    .fields = adam8_fields,
    .n_fields = (int)(sizeof adam8_fields / sizeof adam8_fields[0]),
    .defaults = NULL,
    .check = adam8_check,
    .layout = adam8_layout,
    .update = adam8_update,
};

const qat_optim_desc qat_optim_desc_adamw8 = {
    .name = "AdamW8",
    .fields = adam8_fields,
    .n_fields = (int)(sizeof adam8_fields / sizeof adam8_fields[0]),
    .defaults = adamw8_defaults,
    .check = adam8_check,
    .layout = adam8_layout,
    .update = adam8_update,
};
