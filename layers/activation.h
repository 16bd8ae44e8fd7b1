/* activation.h - elementwise nonlinearities.
 *
 *   relu(x)    = max(x, 0)            d/dx = [x > 0]
 *   relu6(x)   = min(max(x, 0), 6)    d/dx = [0 < x < 6]
 *   sigmoid(x) = 1 / (1 + e^-x)       d/dx = y (1 - y)
 *   tanh(x)                           d/dx = 1 - y^2
 *   hardswish(x) = x relu6(x + 3) / 6  d/dx = 0 (x < -3), x/3 + 1/2 (-3 <= x < 3), 1 (x >= 3)
 *   leaky_relu(x) = x > 0 ? x : a x    d/dx = x > 0 ? 1 : a
 * At a kink (x exactly 0 or 6) the gradient of relu/relu6 is 0, as in PyTorch. Hard-swish
 * and leaky ReLU take PyTorch's one-sided choices (aten hardswish_backward and
 * leaky_relu_backward, as its vectorized kernels compute them): hardswish'(-3) = -1/2,
 * hardswish'(3) = 1, leaky_relu'(0) = a. (PyTorch 1.13's scalar loop, which handles only
 * tensors shorter than a vector and the tails of others, gives 3/2 at x = 3 instead.)
 * Hard-swish is computed in PyTorch's order, x * min(max(x + 3, 0), 6) / 6 in float, so
 * the values agree to the bit.
 */
#ifndef QAT_ACTIVATION_H
#define QAT_ACTIVATION_H

#include "autograd/tape.h"

void qat_relu_forward(float *out, const float *inp, size_t n);
void qat_relu_backward(float *dinp, const float *dout, const float *inp, size_t n);
void qat_relu6_forward(float *out, const float *inp, size_t n);
void qat_relu6_backward(float *dinp, const float *dout, const float *inp, size_t n);
void qat_sigmoid_forward(float *out, const float *inp, size_t n);
void qat_sigmoid_backward(float *dinp, const float *dout, const float *out, size_t n);
void qat_tanh_forward(float *out, const float *inp, size_t n);
void qat_tanh_backward(float *dinp, const float *dout, const float *out, size_t n);
void qat_hardswish_forward(float *out, const float *inp, size_t n);
void qat_hardswish_backward(float *dinp, const float *dout, const float *inp, size_t n);
void qat_leaky_relu_forward(float *out, const float *inp, size_t n, float alpha);
void qat_leaky_relu_backward(float *dinp, const float *dout, const float *inp, size_t n, float alpha);

qat_tensor *qat_relu(qat_tape *t, qat_tensor *x);
qat_tensor *qat_relu6(qat_tape *t, qat_tensor *x);
/* In place: x's data becomes relu(x) and the result shares x's data and gradient, so no
 * new memory is used. The caller promises that x feeds nothing else and that its
 * producer's backward does not read x's data (true after conv, linear, batch norm,
 * pooling, add; not after sigmoid or tanh, which read their output). */
qat_tensor *qat_relu_inplace(qat_tape *t, qat_tensor *x);
qat_tensor *qat_relu6_inplace(qat_tape *t, qat_tensor *x);
qat_tensor *qat_sigmoid(qat_tape *t, qat_tensor *x);
qat_tensor *qat_tanh(qat_tape *t, qat_tensor *x);
qat_tensor *qat_hardswish(qat_tape *t, qat_tensor *x);
/* alpha: the slope for x <= 0 (PyTorch's negative_slope), any finite value. */
qat_tensor *qat_leaky_relu(qat_tape *t, qat_tensor *x, float alpha);

#endif
