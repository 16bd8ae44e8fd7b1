/* activation.h - elementwise nonlinearities.
 *
 *   relu(x)    = max(x, 0)            d/dx = [x > 0]
 *   relu6(x)   = min(max(x, 0), 6)    d/dx = [0 < x < 6]
 *   sigmoid(x) = 1 / (1 + e^-x)       d/dx = y (1 - y)
 *   tanh(x)                           d/dx = 1 - y^2
 * At a kink (x exactly 0 or 6) the gradient is 0, as in PyTorch.
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

#endif
