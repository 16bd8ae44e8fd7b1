/* optim.c - the optimizer object: defaults, config checks, init/free, and the step
 * that dispatches to the per-kind updates (sgd.c, adam.c). The formulas are in optim.h.
 */
#include "optim/optim.h"

#include <math.h>
#include <string.h>

qat_optim_config qat_optim_config_default(qat_optim_kind kind) {
    QAT_ASSERT(kind == QAT_OPTIM_SGD || kind == QAT_OPTIM_ADAM || kind == QAT_OPTIM_ADAMW);
    qat_optim_config c = {
        .kind = kind,
        .lr = 1e-3,
        .momentum = 0.0,
        .dampening = 0.0,
        .nesterov = false,
        .weight_decay = kind == QAT_OPTIM_ADAMW ? 1e-2 : 0.0,
        .beta1 = 0.9,
        .beta2 = 0.999,
        .eps = 1e-8,
    };
    return c;
}

const char *qat_optim_kind_str(qat_optim_kind kind) {
    switch (kind) {
    case QAT_OPTIM_SGD: return "SGD";
    case QAT_OPTIM_ADAM: return "Adam";
    case QAT_OPTIM_ADAMW: return "AdamW";
    }
    return "unknown";
}

/* `lo <= x < hi` (hi_open) or `lo <= x <= hi`; false for NaN. */
static bool in_range(double x, double lo, double hi, bool hi_open) {
    return x >= lo && (hi_open ? x < hi : x <= hi);
}

qat_status qat_optim_config_check(const qat_optim_config *cfg, qat_error *err) {
    QAT_ASSERT(cfg != NULL);
    const qat_optim_kind k = cfg->kind;
    if (k != QAT_OPTIM_SGD && k != QAT_OPTIM_ADAM && k != QAT_OPTIM_ADAMW)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "optim: kind = %d is not an optimizer (use QAT_OPTIM_SGD, "
                             "QAT_OPTIM_ADAM or QAT_OPTIM_ADAMW)",
                             (int)k);
    const char *name = qat_optim_kind_str(k);
    if (!(cfg->lr >= 0.0 && isfinite(cfg->lr)))
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "optim %s: lr = %g is invalid; it must be finite and >= 0", name,
                             cfg->lr);
    if (!(cfg->weight_decay >= 0.0 && isfinite(cfg->weight_decay)))
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "optim %s: weight_decay = %g is invalid; it must be finite and "
                             ">= 0",
                             name, cfg->weight_decay);
    if (k == QAT_OPTIM_SGD) {
        if (!in_range(cfg->momentum, 0.0, 1.0, true))
            return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                                 "optim SGD: momentum = %g is outside [0, 1)", cfg->momentum);
        if (!in_range(cfg->dampening, 0.0, 1.0, false))
            return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                                 "optim SGD: dampening = %g is outside [0, 1]", cfg->dampening);
        if (cfg->nesterov && cfg->momentum == 0.0)
            return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                                 "optim SGD: nesterov needs momentum > 0, but momentum = 0");
        if (cfg->nesterov && cfg->dampening != 0.0)
            return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                                 "optim SGD: nesterov needs dampening = 0, but dampening = %g",
                                 cfg->dampening);
    } else {
        if (!in_range(cfg->beta1, 0.0, 1.0, true))
            return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                                 "optim %s: beta1 = %g is outside [0, 1)", name, cfg->beta1);
        if (!in_range(cfg->beta2, 0.0, 1.0, true))
            return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                                 "optim %s: beta2 = %g is outside [0, 1)", name, cfg->beta2);
        if (!(cfg->eps > 0.0 && isfinite(cfg->eps)))
            return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                                 "optim %s: eps = %g is invalid; it must be finite and > 0",
                                 name, cfg->eps);
    }
    return QAT_STATUS_OK;
}

qat_status qat_optim_init(qat_optim *o, const qat_optim_config *cfg, size_t n, qat_error *err) {
    QAT_ASSERT(o != NULL && cfg != NULL);
    memset(o, 0, sizeof *o);
    qat_status s = qat_optim_config_check(cfg, err);
    if (s != QAT_STATUS_OK) return s;
    if (n == 0)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "optim %s: no parameters to optimize (n = 0)",
                             qat_optim_kind_str(cfg->kind));
    size_t per_param = 0;
    if (cfg->kind == QAT_OPTIM_SGD)
        per_param = cfg->momentum != 0.0 ? 1 : 0;
    else
        per_param = 2;
    if (per_param && n > (size_t)-1 / sizeof(float) / per_param)
        return qat_error_set(err, QAT_STATUS_NOMEM, "optim %s: state for n = %zu is too large",
                             qat_optim_kind_str(cfg->kind), n);
    float *state = NULL;
    if (per_param) {
        state = calloc(per_param * n, sizeof(float));
        if (!state)
            return qat_error_set(err, QAT_STATUS_NOMEM,
                                 "optim %s: cannot allocate %zu bytes of state for n = %zu",
                                 qat_optim_kind_str(cfg->kind), per_param * n * sizeof(float),
                                 n);
    }
    o->cfg = *cfg;
    o->n = n;
    o->step = 0;
    o->state = state;
    o->n_state = per_param * n;
    if (cfg->kind == QAT_OPTIM_SGD) {
        o->momentum_buffer = state;
    } else {
        o->exp_avg = state;
        o->exp_avg_sq = state + n;
    }
    return QAT_STATUS_OK;
}

void qat_optim_free(qat_optim *o) {
    if (!o) return;
    free(o->state);
    memset(o, 0, sizeof *o);
}

void qat_optim_step(qat_optim *o, float *params, const float *grads, float lr) {
    QAT_ASSERT(o != NULL && params != NULL && grads != NULL);
    QAT_ASSERT(lr >= 0.0f && isfinite(lr));
    switch (o->cfg.kind) {
    case QAT_OPTIM_SGD: qat_optim_sgd_update(o, params, grads, lr); break;
    case QAT_OPTIM_ADAM:
    case QAT_OPTIM_ADAMW: qat_optim_adam_update(o, params, grads, lr); break;
    default: QAT_ASSERT(!"qat_optim_step: cfg.kind changed after qat_optim_init");
    }
    o->step++;
}

/* params, grads, momentum_buffer: (n) */
