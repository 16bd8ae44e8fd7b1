/* kind.h - what an optimizer kind provides: its descriptor. For the files of optim/
 * only; users include optim/optim.h, which says how to add a kind (top of the file).
 *
 * Each kind's file (sgd.c, adam.c) defines one qat_optim_desc with everything about the
 * kind: name, config fields, defaults, config check, state layout and update kernel.
 * optim.c indexes them by qat_optim_kind in one table and implements the public API as
 * loops over that table, so nothing outside the kind's file and that table line knows
 * the kind. The state layout and the kernel live in the same file and agree on the
 * order of o->tensors (an enum of indices beside the layout function).
 */
#ifndef QAT_OPTIM_KIND_H
#define QAT_OPTIM_KIND_H

#include "optim/optim.h"

typedef struct qat_optim_desc {
    /* As checkpoints store it and qat_optim_kind_str returns it: "SGD". */
    const char *name;
    /* The config fields the kind uses, in checkpoint order, "lr" first. */
    const qat_optim_field *fields;
    int n_fields;
    /* Changes the common defaults (qat_optim_config_default) where this kind's differ;
     * NULL if it has no change. */
    void (*defaults)(qat_optim_config *cfg);
    /* Checks the kind's fields other than lr (optim.c checks lr for every kind), with
     * messages "optim <name>: <field> = <value> ..." (the helpers below). */
    qat_status (*check)(const qat_optim_config *cfg, qat_error *err);
    /* Fills out[0..k) with the state tensors of a checked config for n parameters in
     * n_blocks blocks (the 8-bit kinds' unit, qat_optim_init_tensors) (name, dtype, numel;
     * data NULL) and returns k <= QAT_OPTIM_MAX_STATE. */
    int (*layout)(const qat_optim_config *cfg, size_t n, size_t n_blocks, qat_optim_state_tensor *out);
    /* One update of params from grads at rate lr, reading and writing o->tensors; it
     * does not change o->step, which qat_optim_step increments after it. The step number
     * of this update is o->step + 1. */
    void (*update)(qat_optim *o, float *params, const float *grads, float lr);
} qat_optim_desc;

extern const qat_optim_desc qat_optim_desc_sgd;   /* sgd.c */
extern const qat_optim_desc qat_optim_desc_adam;  /* adam.c */
extern const qat_optim_desc qat_optim_desc_adamw; /* adam.c */
extern const qat_optim_desc qat_optim_desc_sgd8;   /* optim8.c */
extern const qat_optim_desc qat_optim_desc_adam8;  /* optim8.c */
extern const qat_optim_desc qat_optim_desc_adamw8; /* optim8.c */

/* Range checks for the kinds' check functions (optim.c). On failure they return
 * INVALID_ARG with "optim <kind>: <field> = <v> ..." in err; NaN always fails. */
/* v finite and >= 0. */
qat_status qat_optim_check_nonneg(const qat_optim_config *cfg, const char *field, double v,
                                  qat_error *err);
/* v finite and > 0. */
qat_status qat_optim_check_positive(const qat_optim_config *cfg, const char *field, double v,
                                    qat_error *err);
/* v in [0, 1) (hi_open) or [0, 1]. */
qat_status qat_optim_check_unit(const qat_optim_config *cfg, const char *field, double v,
                                bool hi_open, qat_error *err);

#endif
