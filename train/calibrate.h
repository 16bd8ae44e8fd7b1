/* calibrate.h - post-training calibration of a quantized model on data: the observers see
 * the float activations of the first samples of a loader, then every range, PACT alpha
 * and LSQ step is set from them (quant/quant.h); if the spec asks for bias correction,
 * a second pass over the same samples corrects each layer's bias.
 *
 *     qat_model_quantize(m, "w8a8", &norm, &err);     // train/open.h
 *     qat_calibrate(m, &train_loader, 2048, &err);
 */
#ifndef QAT_CALIBRATE_H
#define QAT_CALIBRATE_H

#include "data/loader.h"
#include "layers/model.h"

/* Runs the first `samples` (>= 1) samples of l, in its epoch-0 order, in inference mode.
 * INVALID_ARG for samples < 1 or a model that is not quantized; NUMERIC when a point saw
 * no finite value. */
qat_status qat_calibrate(qat_model *m, qat_loader *l, int samples, qat_error *err);

#endif
