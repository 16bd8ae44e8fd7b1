/* export.h - from a quantized model (QAT or PTQ, quant/quant.h) to the integer-only model
 * file that runtime/ executes (docs/int8-format.md; arithmetic: ../shared/int8-spec.md).
 *
 * The exporter walks the graph as the fake-quant forward does and writes, per unit,
 * exactly the integers QAT simulated: weights folded with the running BN statistics and
 * quantized with qat_quantize (the same division and rounding), biases on the int32 grid
 * s_in * s_w[c], the multiplier s_in * s_w[c] / s_out as (M0, shift), zero points and
 * the clamp of the fused ReLU / ReLU6 / PACT. Weights of 4 bits or fewer are packed two
 * per byte.
 *
 *     qat_export_report rep;
 *     if (qat_export(m, "model.qat8", meta, n_meta, &rep, &err)) puts(err.msg);
 *
 * Refused, with the layer named: a model without the spec's fixed input mapping, per-group
 * weights, ops the runtime lacks (sigmoid, tanh, a batch norm or ReLU no conv precedes),
 * and any layer whose accumulator could overflow (K * 255 * max|w| + max|bias| >= 2^31).
 */
#ifndef QAT_EXPORT_H
#define QAT_EXPORT_H

#include <stdint.h>

#include "quant.h"
#include "io/safetensors.h"

#define QAT_INT8_FORMAT "qat-int8"
#define QAT_INT8_VERSION 1

/* The spec's fixed-point multiplier: m ~= M0 * 2^(shift - 31), M0 in [2^30, 2^31);
 * M0 = 0, shift = 0 when m is too small (shift < -31) or m <= 0. m must be < 2^31. */
void qat_quantize_multiplier(double m, int32_t *M0, int *shift);

typedef struct qat_export_report {
    size_t weight_bytes; /* int8 / packed weights */
    size_t other_bytes;  /* biases, multipliers, shifts */
    size_t file_bytes;
    int n_ops;
} qat_export_report;

/* Writes the model (prepared with qat_quant_prepare, calibrated or trained) to `path`,
 * atomically; `meta` (may be NULL) adds metadata for people and tools. */
qat_status qat_export(const qat_model *m, const char *path, const qat_st_kv *meta, size_t n_meta,
                      qat_export_report *rep, qat_error *err);

#endif
