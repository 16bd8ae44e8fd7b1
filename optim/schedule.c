/* schedule.c - closed-form learning-rate schedules; see schedule.h for the formulas.
 *
 * PyTorch's StepLR, LinearLR and CosineAnnealingLR update the rate recursively (each
 * step multiplies the previous rate by a ratio); their documented closed forms, used
 * here, agree with the recursion to double rounding (tests/test_optim.c compares
 * against the recursive sequences PyTorch produced). A closed form needs no state and
 * cannot drift.
 */
#include "optim/schedule.h"

#include <math.h>

const char *qat_lr_kind_str(qat_lr_kind kind) {
    switch (kind) {
    case QAT_LR_CONSTANT: return "constant";
    case QAT_LR_STEP: return "step";
    case QAT_LR_COSINE: return "cosine";
    case QAT_LR_COUNT: break;
    }
    return "unknown";
}

qat_status qat_lr_schedule_check(const qat_lr_schedule *s, qat_error *err) {
    QAT_ASSERT(s != NULL);
    if ((int)s->kind < 0 || (int)s->kind >= QAT_LR_COUNT)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "lr schedule: kind = %d is not a schedule (use QAT_LR_CONSTANT, "
                             "QAT_LR_STEP or QAT_LR_COSINE)",
                             (int)s->kind);
    switch (s->kind) {
    case QAT_LR_CONSTANT: break;
    case QAT_LR_STEP:
        if (s->step_size <= 0)
            return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                                 "lr schedule step: step_size = %ld is invalid; it must be >= 1",
                                 s->step_size);
        if (!(s->gamma > 0.0 && isfinite(s->gamma)))
            return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                                 "lr schedule step: gamma = %g is invalid; it must be finite "
                                 "and > 0",
                                 s->gamma);
        break;
    case QAT_LR_COSINE:
        if (s->t_max <= 0)
            return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                                 "lr schedule cosine: t_max = %ld is invalid; it must be >= 1",
                                 s->t_max);
        if (!(s->eta_min >= 0.0 && isfinite(s->eta_min)))
            return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                                 "lr schedule cosine: eta_min = %g is invalid; it must be "
                                 "finite and >= 0",
                                 s->eta_min);
        break;
    case QAT_LR_COUNT: break; /* refused above */
    }
    if (s->warmup_steps < 0)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "lr schedule %s: warmup_steps = %ld is invalid; it must be >= 0",
                             qat_lr_kind_str(s->kind), s->warmup_steps);
    if (s->warmup_steps > 0 && !(s->warmup_start_factor >= 0.0 && s->warmup_start_factor <= 1.0))
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "lr schedule %s: warmup_start_factor = %g is outside [0, 1]",
                             qat_lr_kind_str(s->kind), s->warmup_start_factor);
    return QAT_STATUS_OK;
}

float qat_lr_schedule_at(const qat_lr_schedule *s, float base_lr, long step) {
    QAT_ASSERT(s != NULL && step >= 0);
    const double base = base_lr;
    const long w = s->warmup_steps;
    QAT_ASSERT(w >= 0);
    if (step < w) {
        /* LinearLR's closed form with end_factor 1; the main schedule is at u = 0, where
         * it equals base_lr. */
        const double f = s->warmup_start_factor;
        return (float)(base * (f + (1.0 - f) * (double)step / (double)w));
    }
    const long u = step - w;
    switch (s->kind) {
    case QAT_LR_CONSTANT: return base_lr;
    case QAT_LR_STEP:
        QAT_ASSERT(s->step_size > 0);
        return (float)(base * pow(s->gamma, (double)(u / s->step_size)));
    case QAT_LR_COSINE: {
        QAT_ASSERT(s->t_max > 0);
        const double pi = 3.14159265358979323846;
        const double c = cos(pi * (double)u / (double)s->t_max);
        return (float)(s->eta_min + (base - s->eta_min) * (1.0 + c) / 2.0);
    }
    case QAT_LR_COUNT: break;
    }
    QAT_ASSERT(!"qat_lr_schedule_at: unknown schedule kind");
    return 0.0f;
}
