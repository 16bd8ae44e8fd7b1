/* calibrate.c - calibration passes over a loader (calibrate.h). */
#include "calibrate.h"

#include <string.h>

#include "quant/quant.h"

/* Forward passes in inference mode over the first `samples` samples of l. */
static qat_status run_batches(qat_model *m, qat_loader *l, int samples, qat_error *err) {
    qat_tape t;
    qat_tape_init(&t, 0);
    t.grad_enabled = false;
    t.training = false;
    qat_status s = qat_loader_seek(l, 0, 0, err);
    qat_batch b;
    int seen = 0;
    while (!s && seen < samples && qat_loader_next(l, &b)) {
        qat_tape_reset(&t);
        int n = b.n < samples - seen ? b.n : samples - seen;
        int shape[4];
        memcpy(shape, b.shape, sizeof shape);
        shape[0] = n;
        qat_tensor *x = qat_tape_input(&t, b.ndim, shape, b.x);
        if (!qat_model_forward(m, &t, x)) s = qat_error_set(err, t.err.status, "%s", t.err.msg);
        seen += n;
    }
    qat_tape_free(&t);
    return s;
}

qat_status qat_calibrate(qat_model *m, qat_loader *l, int samples, qat_error *err) {
    if (samples < 1) return qat_error_set(err, QAT_STATUS_INVALID_ARG, "calibration needs at least 1 sample");
    qat_status s = qat_quant_calibrate_begin(m, err);
    if (!s) s = run_batches(m, l, samples, err);
    qat_status e = qat_quant_calibrate_end(m, s ? NULL : err);
    if (!s) s = e;
    if (!s && m->quant->spec.bias_correction) {
        qat_quant_bias_correction_begin(m);
        s = run_batches(m, l, samples, err);
        qat_quant_bias_correction_end(m);
    }
    return s;
}
