/* lsq.h - LSQ: fake quantization with a learned step size.
 *
 * Reference: S. K. Esser, J. L. McKinstry, D. Bablani, R. Appuswamy, D. S. Modha,
 * "Learned Step Size Quantization", ICLR 2020 (arXiv:1902.08153).
 *
 *     t = x / s                          the float32 division, as ../shared/int8-spec.md
 *     q = clamp(round(t), qmin, qmax)    round half away from zero (C roundf)
 *     y = q * s
 *
 * The step s is a parameter learned with the weights; the zero point is 0. The caller
 * picks the integer range: weights symmetric [-(2^(b-1)-1), 2^(b-1)-1] (the spec's
 * weights; the paper uses [-2^(b-1), 2^(b-1)-1]), signed activations [-2^(b-1), 2^(b-1)-1],
 * unsigned (post-ReLU) activations [0, 2^b - 1].
 *
 * Backward, the straight-through estimator for round (paper, eq. 3 and section 2.1): round
 * has derivative 0 almost everywhere, so it is differentiated as the identity, while
 * the clamp keeps its true derivative:
 *
 *     dy/dx = [qmin < t < qmax]                      (strict: the paper's hardtanh)
 *     dy/ds = d(s * clamp(round(x / s)))/ds
 *           = round(t) + s * (-x / s^2) = round(t) - t    where qmin < t < qmax
 *           = qmin                                          where t <= qmin
 *           = qmax                                          where t >= qmax
 *
 * Inside the range the step's gradient is the rounding error, signed: it grows as x
 * nears a transition point between levels, which is what lets LSQ place the levels (the
 * paper's argument against QIL and PACT, whose step gradient ignores it). The step's
 * gradient is then multiplied by a scale g (paper, section 2.2) to keep its update in
 * proportion to the weights' updates:
 *
 *     ds[c] += g * sum over the elements of channel c of dy * dy/ds
 *     g = 1 / sqrt(N * qmax)   (qat_lsq_grad_scale)
 *
 * where N is the number of elements sharing the step: the paper uses the number of
 * weights of the layer for a weight step and the number of features (per example: C*H*W,
 * not the batch) for an activation step; per channel, the elements of one channel. The
 * caller computes g and may pass another value (0 freezes s).
 *
 * Granularity: s has 1 element (per tensor; x may have any shape, e.g. an activation
 * (N, C, H, W)) or C elements where x is (C, ...) (per output channel of a weight
 * (C_out, C_in, KH, KW) or (C_out, C_in); channel c covers the x->n / C consecutive
 * elements x[c, ...]).
 *
 *     float g = qat_lsq_grad_scale(w->n / w->shape[0], 7);
 *     qat_tensor *wq = qat_lsq(&t, w, w_step, -7, 7, g);        // 4-bit weights, per channel
 *     qat_tensor *aq = qat_lsq(&t, a, a_step, 0, 15, ga);      // 4-bit unsigned activations
 *
 * Valid ranges: -65536 <= qmin < qmax <= 65536; every s[c] finite and > 0; grad_scale
 * finite and >= 0. NaN in x stays NaN in y; +-inf saturate to qmax * s / qmin * s.
 * Initial step (paper, section 2.1): s = 2 mean(|x|) / sqrt(qmax), qat_lsq_init_scale.
 */
#ifndef QAT_LSQ_H
#define QAT_LSQ_H

#include <float.h>

/* The least step size training keeps (qmodel.c projects steps onto it after each
 * optimizer step): float epsilon, as PyTorch's learnable fake quantize. */
#define QAT_LSQ_MIN_STEP FLT_EPSILON

#include <stddef.h>

#include "autograd/tape.h"

/* The largest |qmin|, |qmax| accepted: keeps every t = x / s that is rounded below 2^23,
 * where the float rounding of lsq.c is exact. */
#define QAT_LSQ_QLIMIT 65536

/* The tape op: y = s * clamp(round(x / s), qmin, qmax), the shape of x. s has 1 element
 * or x->shape[0] elements (read at forward and at backward time: do not change it in
 * between). Returns NULL with t->err set: QAT_STATUS_SHAPE if s fits neither,
 * QAT_STATUS_NUMERIC (naming the channel) if a step is not finite and positive,
 * QAT_STATUS_INVALID_ARG for qmin/qmax/grad_scale out of range. */
qat_tensor *qat_lsq(qat_tape *t, qat_tensor *x, qat_tensor *s, int qmin, int qmax,
                    float grad_scale);

/* inp, out are (n_scales, n_per_scale) with n = n_scales * n_per_scale; s is (n_scales),
 * every s[c] > 0 and finite. out may equal inp. */
void qat_lsq_forward(float *out, const float *inp, const float *s, int n_scales,
                     size_t n_per_scale, int qmin, int qmax, size_t n);
/* dout, inp, dinp are (n_scales, n_per_scale); s, ds are (n_scales).
 * dinp += dout * [qmin < t < qmax]; ds[c] += grad_scale * sum_i dout_i * dy_i/ds (above).
 * dinp or ds may be NULL (not needed). */
void qat_lsq_backward(float *dinp, float *ds, const float *dout, const float *inp,
                      const float *s, int n_scales, size_t n_per_scale, int qmin, int qmax,
                      float grad_scale);

/* 1 / sqrt(n_per_scale * qmax): the paper's step-gradient scale. n_per_scale >= 1,
 * qmax >= 1. */
float qat_lsq_grad_scale(size_t n_per_scale, int qmax);

/* s[c] = 2 * mean(|x[c, ...]|) / sqrt(qmax) over the n_per_scale elements of channel c
 * (n_scales = 1: the whole tensor). An all-zero channel gets s = 1 (as the spec's
 * degenerate range); non-finite x gives a non-finite s, which qat_lsq then reports.
 * x is (n_scales, n_per_scale); qmax >= 1. */
void qat_lsq_init_scale(float *s, const float *x, int n_scales, size_t n_per_scale, int qmax);

#endif
