/* fake_quant.h - the affine quantizer of ../shared/int8-spec.md in float, and fake
 * quantization as an autograd op with a straight-through-estimator backward.
 *
 * The spec ("Affine mapping"):
 *
 *     q     = clamp(round(x / scale) + zero_point, qmin, qmax)     round half away from zero
 *     x_hat = scale * (q - zero_point)                             the fake-quant output
 *
 * Scale and zero point come from a range [lo, hi] widened to include 0:
 *     asymmetric: scale = (hi - lo) / (qmax - qmin), zp = clamp(qmin - round(lo / scale), qmin, qmax)
 *     symmetric:  scale = max(|lo|, |hi|) / qmax,    zp = 0
 *     a degenerate range (lo == hi == 0) gets scale 1.
 *
 * The division x / scale (not a multiply by 1/scale) is part of the contract: the exporter
 * quantizes weights with qat_quantize() below and must get the integers QAT trained with.
 *
 * Backward (Bengio et al. 2013; the "clipped" STE of Jacob et al. 2018 and PyTorch's
 * fake_quantize_per_tensor_affine): round() has derivative 0 almost everywhere, so the
 * gradient is taken as if rounding were the identity, dx = dy, but only where the value
 * was not clamped, round(x / scale) + zp in [qmin, qmax]; outside, the output does not
 * move with x and dx = 0.
 *
 * Granularity. A tensor x of shape (C, ...) (weights: C output channels) is split into
 * C rows of inner = n / C consecutive elements; each row into groups of `group`
 * consecutive elements (the last may be shorter); every group has its own scale and zero
 * point, stored row by row: index c * groups_per_row + j / group. Per tensor: C = 1,
 * group = 0 (0 means "the whole row"). Per output channel: C = shape[0], group = 0.
 */
#ifndef QAT_FAKE_QUANT_H
#define QAT_FAKE_QUANT_H

#include <math.h>
#include <stdint.h>

#include "autograd/tape.h"

/* Integer range of a b-bit quantizer. Weights: symmetric [-(2^(b-1)-1), 2^(b-1)-1].
 * Activations: [-2^(b-1), 2^(b-1)-1] (a sub-range of int8 for b < 8). */
static inline int qat_qmax_weight(int bits) { return (1 << (bits - 1)) - 1; }
static inline int qat_qmin_act(int bits) { return -(1 << (bits - 1)); }
static inline int qat_qmax_act(int bits) { return (1 << (bits - 1)) - 1; }

/* Scale and zero point from [lo, hi] as the spec says (lo > 0 or hi < 0 are widened to
 * include 0; NaN bounds are treated as 0). Always scale > 0 and finite. */
void qat_qparams_from_range(float lo, float hi, int qmin, int qmax, bool symmetric, float *scale,
                            int32_t *zero_point);

/* q = clamp(round(x / scale) + zp, qmin, qmax). x must be finite (asserted callers
 * check); the clamp happens in float, so huge ratios saturate instead of overflowing. */
static inline int32_t qat_quantize(float x, float scale, int32_t zp, int qmin, int qmax) {
    float r = roundf(x / scale) + (float)zp;
    r = r < (float)qmin ? (float)qmin : r;
    r = r > (float)qmax ? (float)qmax : r;
    return (int32_t)r;
}

/* x_hat = scale * (clamp(round(x / scale) + zp, qmin, qmax) - zp). A NaN or infinite x
 * gives NaN, never a quietly saturated value, so the training loop's NaN check sees it. */
static inline float qat_fake_quantize(float x, float scale, float zp, float qmin, float qmax) {
    float t = x / scale, r = roundf(t) + zp;
    r = r < qmin ? qmin : r;
    r = r > qmax ? qmax : r;
    return scale * (r - zp) + (t - t);
}

/* max |x[i]| over n values, NaN ignored; vectorised, the plain loop's result bit for bit. */
float qat_max_abs(const float *x, size_t n);

/* Number of scales for C rows of `inner` elements in groups of `group` (0: whole row). */
size_t qat_fq_n_scales(int rows, size_t inner, int group);

/* out = fake_quantize(inp) with the layout above. inp, out: rows * inner floats;
 * scale, zp: qat_fq_n_scales(rows, inner, group) each. out may equal inp. */
void qat_fake_quant_forward(float *out, const float *inp, const float *scale, const int32_t *zp,
                            int rows, size_t inner, int group, int qmin, int qmax);
/* dinp += dout where round(inp / scale) + zp lies in [qmin, qmax]. */
void qat_fake_quant_backward(float *dinp, const float *dout, const float *inp, const float *scale,
                             const int32_t *zp, int rows, size_t inner, int group, int qmin, int qmax);

/* The tape op. rows = 1 (per tensor) or x->shape[0]; scale and zp are copied (the
 * caller's arrays may change after the call). Fails with a message naming the op if
 * rows does not divide x, or a scale is not positive and finite. */
qat_tensor *qat_fake_quant(qat_tape *t, qat_tensor *x, const float *scale, const int32_t *zp,
                           int rows, int group, int qmin, int qmax);
/* The same; with reuse_grad the caller promises x feeds nothing else, and y shares x's
 * gradient buffer (backward masks it in place: one buffer, not two). */
qat_tensor *qat_fake_quant_ex(qat_tape *t, qat_tensor *x, const float *scale, const int32_t *zp,
                              int rows, int group, int qmin, int qmax, bool reuse_grad);

/* The requantization of an average pool's output, as the integer runtime computes it
 * (int8-spec.md, "Other ops"): the output keeps the input's scale s and zero point z, and
 *     q_out = z + round_half_away(d / n),  d = sum over the window of (q - z)
 * with padded positions counted in n (count_include_pad). `x` is the pool's input, on the
 * grid of s (it was fake-quantized with s, so round(x / s) recovers q - z exactly), `y`
 * the float pool's output (N, C, OH, OW) of x (N, C, H, W) with window kh x kw, stride and
 * pad (a global pool: kh = H, kw = W, stride 1, pad 0). The output is s * (q_out - z),
 * computed from integers, so an exact tie (d / n = -20.5) rounds as the runtime rounds it,
 * which the float average would leave to rounding error. Backward: straight through to y
 * (the values are never clamped: an average of in-range values is in range). */
qat_tensor *qat_fake_quant_avgpool(qat_tape *t, qat_tensor *y, const qat_tensor *x, float scale,
                                   int kh, int kw, int stride, int pad);

/* Symmetric scales from the max |x| of each group (weights): scale = max|x| / qmax, 1
 * for an all-zero group; zp = 0. */
void qat_fq_weight_scales(float *scale, int32_t *zp, const float *x, int rows, size_t inner, int group,
                          int qmax);

#endif
