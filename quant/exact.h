/* exact.h - QAT's forward values from the integer model's arithmetic ("sim=exact").
 *
 * The fake-quant forward (qmodel.c) simulates the runtime in float: the real ratio
 * s_in s_w / s_out instead of the (M0, shift) multiplier, one rounding instead of the
 * spec's two, float accumulation. Those differences flip decisions at low bit widths
 * (issue 15). These functions recompute a quantization point's output from integers
 * exactly as the lowered model and the runtime will (../shared/int8-spec.md): the caller
 * runs the float path first (its tape nodes give the straight-through gradients) and
 * then hands its output y here, whose values are replaced. Backward never reads y's
 * values (the fake-quant, PACT and LSQ nodes use their inputs), so the gradients stay
 * those of the float simulation, evaluated at the integer model's activations.
 *
 * Each function returns false, leaving y untouched, where the integers cannot be had:
 * an input off its quantization grid (a dropout scale in training), a value that would
 * overflow the accumulator bound, a multiplier the lowering refuses. The float value then
 * stands, as before. */
#ifndef QAT_EXACT_H
#define QAT_EXACT_H

#include <stdbool.h>
#include <stdint.h>

#include "autograd/tape.h"
#include "layers/model.h"
#include "quant.h"

/* What the unit's integer op needs: its input's grid, its folded float weights and bias
 * (as the lowering takes them), the weight scales (wrows = 1: one per tensor), its output
 * point's scale, zero point and clamp. */
typedef struct qat_exact_unit_args {
    const qat_layer *layer;
    const qat_tensor *x;      /* the unit's input, on the grid s_in (q - z_in) */
    float s_in;
    const float *wf;          /* folded weights, layer->weight.n */
    const float *wscale;
    int wrows, wbits;
    const float *bf;          /* folded bias (C) or NULL */
    float s_out;
    int32_t z_out;
    int lo, hi;               /* the clamp (qat_qpoint_clamp) */
} qat_exact_unit_args;

bool qat_exact_unit(qat_tape *t, qat_sim sim, const qat_exact_unit_args *a, qat_tensor *y);

/* The residual add (TFLite's scheme, int8-spec.md "Other ops") of a on grid (sa, za) and
 * b on (sb, zb), into y (same shape). */
bool qat_exact_add(qat_sim sim, const qat_tensor *a, float sa, const qat_tensor *b, float sb, float s_out,
                   int32_t z_out, int lo, int hi, qat_tensor *y);

/* The model input: x = (p / 255 - mean) / std of raw pixels p, which the runtime reads
 * as q = p - 128 (int8-spec.md, "model input"); y = s_in (p - 128 - z_in). Rounding
 * x / s_in instead, as fake quant does, gives p - 128 too unless 255 mean is (nearly) a
 * half, as for the common mean 0.5: then the pixel is recovered exactly here. false if
 * x is not such an image. */
bool qat_exact_input(const qat_tensor *x, float mean, float std, float s_in, int32_t z_in, qat_tensor *y);

/* A lookup-table layer: y = s_out (T[q_in + 128] - z_out), x on grid (s_in, z_in). */
bool qat_exact_lut(const qat_tensor *x, float s_in, int32_t z_in, const int8_t table[256], float s_out,
                   int32_t z_out, qat_tensor *y);

#endif
