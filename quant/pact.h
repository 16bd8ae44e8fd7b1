/* pact.h - PACT: a learnable clipping level for activations, with fake quantization.
 *
 * Reference: J. Choi, Z. Wang, S. Venkataramani, P. Chuang, V. Srinivasan,
 * K. Gopalakrishnan, "PACT: Parameterized Clipping Activation for Quantized Neural
 * Networks", arXiv:1805.06085, 2018. PACT replaces the ReLU in front of a quantized layer:
 *
 *     v = clip(x, 0, alpha)                                   (paper, eq. 1)
 *     y = q * scale,  scale = alpha / (2^bits - 1),
 *                     q = clamp(round(v / scale), 0, 2^bits - 1)   (paper, eq. 2)
 *
 * alpha is a learned parameter, one per layer. This is the affine mapping of
 * ../shared/int8-spec.md with zero point 0, qmin 0, qmax 2^bits - 1: round is round half
 * away from zero (C roundf) and v / scale is the float32 division, not a multiply by
 * 1 / scale, so the exporter (act_max = min(127, z_out + round(alpha / s_out))) gets
 * the integers training saw. bits = 0 turns quantization off: y = v, a learnable clip.
 *
 * Backward, the straight-through estimator (STE; Bengio et al. 2013, as the paper does,
 * eq. 3). round() has derivative 0 almost everywhere, which would stop all learning; the
 * STE takes the derivative of the quantizer as 1, so the gradient is that of the clip:
 *
 *     dL/dx_i   = dL/dy_i * [0 < x_i < alpha]
 *     dL/dalpha = sum_i dL/dy_i * [x_i >= alpha]   + decay * alpha
 *
 * With quantization on, y also moves with alpha through the scale (y = q alpha / L for
 * x < alpha); the paper ignores that path (its dy/dalpha is 1 for x >= alpha, 0
 * otherwise) and so do we. LSQ (lsq.h) is the method that differentiates a learned step.
 * At the kinks: x == 0 gives no gradient to x (as PyTorch's relu); x == alpha sends its
 * gradient to alpha, not to x (as torch.where(x < alpha, relu(x), alpha)).
 *
 * decay >= 0 is the paper's L2 regularisation of alpha (lambda_alpha; the paper shrinks
 * alpha with it so that clipping trades against rounding error): d(decay/2 alpha^2)/dalpha
 * is added to alpha's gradient once per call of qat_pact, so an alpha used by two calls
 * gets it twice. Optimizer weight decay, if any, is separate.
 *
 *     qat_tensor *a = qat_pact(&t, conv_out, layer->alpha, 4, 1e-4f);   // 4-bit activations
 *
 * Valid ranges: bits in 0..16 (0: no quantization); alpha a one-element tensor whose value
 * is a positive normal float (>= FLT_MIN) and finite; decay finite and >= 0.
 * NaN in x stays NaN in y (so the trainer's NaN check sees it), and +-inf clip to alpha/0.
 */
#ifndef QAT_PACT_H
#define QAT_PACT_H

#include <stddef.h>

#include "autograd/tape.h"

/* The tape op. x: any shape; alpha: one element (its data[0] is read at forward time and
 * saved for backward; its grad, if any, accumulates). Returns y with x's shape, or NULL:
 * QAT_STATUS_NUMERIC if alpha is not positive and finite, QAT_STATUS_INVALID_ARG for bits
 * or decay out of range, QAT_STATUS_SHAPE if alpha has more than one element. */
qat_tensor *qat_pact(qat_tape *t, qat_tensor *x, qat_tensor *alpha, int bits, float decay);

/* inp, out are (n); out = fq(clip(inp, 0, alpha)). alpha > 0 finite, bits 0..16 (asserted).
 * out may equal inp. */
void qat_pact_forward(float *out, const float *inp, float alpha, int bits, size_t n);
/* dout, inp are (n). dinp (n) += dout where 0 < inp < alpha; *dalpha (one float) += sum of
 * dout where inp >= alpha. Either output may be NULL. No decay term (the tape op adds it).
 * The same for every bits: the STE makes the quantizer transparent. */
void qat_pact_backward(float *dinp, float *dalpha, const float *dout, const float *inp,
                       float alpha, size_t n);

#endif
