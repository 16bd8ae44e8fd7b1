/* calibrate.c - calibration passes over a loader (calibrate.h). */
#include "calibrate.h"

#include <string.h>

#include "autograd/comm.h"
#include "quant/quant.h"
#include "quant/smooth.h"

/* Forward passes in inference mode over the first `samples` samples of l; sm: the float
 * model's, for SmoothQuant's statistics, instead of qat_model_forward. */
static qat_status run_batches(qat_model *m, qat_loader *l, int samples, qat_smooth *sm, qat_error *err) {
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
        seen += n;
        /* data-parallel (autograd/comm.h): this process's slice of the n samples; every
         * process needs one, so fewer samples than processes are skipped by all */
        const qat_comm *c = qat_comm_get();
        if (n < c->size) continue;
        const int lo = (int)((long)n * c->rank / c->size), hi = (int)((long)n * (c->rank + 1) / c->size);
        size_t per = 1;
        for (int k = 1; k < b.ndim; k++) per *= (size_t)b.shape[k];
        int shape[4];
        memcpy(shape, b.shape, sizeof shape);
        shape[0] = hi - lo;
        qat_tensor *x = qat_tape_input(&t, b.ndim, shape, b.x + (size_t)lo * per);
        if (sm) s = qat_smooth_observe(sm, m, &t, x, err);
        else if (!qat_model_forward(m, &t, x)) s = qat_error_set(err, t.err.status, "%s", t.err.msg);
    }
    qat_tape_free(&t);
    return s;
}

qat_status qat_calibrate(qat_model *m, qat_loader *l, int samples, qat_error *err) {
    if (samples < 1) return qat_error_set(err, QAT_STATUS_INVALID_ARG, "calibration needs at least 1 sample");
    if (!m->quant) return qat_error_set(err, QAT_STATUS_INVALID_ARG, "calibration needs a quantized model");
    qat_status s = QAT_STATUS_OK;
    if (m->quant->spec.smooth) { /* SmoothQuant first: the ranges are those of the smoothed model */
        qat_smooth sm;
        s = qat_smooth_begin(&sm, m, err);
        if (!s) s = run_batches(m, l, samples, &sm, err);
        if (!s) s = qat_smooth_end(&sm, m, err);
        qat_smooth_free(&sm);
        if (s) return s;
    }
    s = qat_quant_calibrate_begin(m, err);
    if (!s) s = run_batches(m, l, samples, NULL, err);
    qat_status e = qat_quant_calibrate_end(m, s ? NULL : err);
    if (!s) s = e;
    if (!s && m->quant->spec.bias_correction) {
        qat_quant_bias_correction_begin(m);
        s = run_batches(m, l, samples, NULL, err);
        qat_quant_bias_correction_end(m);
    }
    return s;
}
