/* pool.h - max pooling, average pooling and global average pooling over (N, C, H, W).
 *
 *   OH = (H + 2 pad - K) / stride + 1 (likewise OW)
 *   max pool: out = max over the window (padding is -inf: never chosen); backward
 *             routes dout to the position of the first maximum (saved as an index).
 *   avg pool: out = sum over the window / (K*K); padded positions count as zeros and
 *             are counted in the divisor (PyTorch's count_include_pad=True).
 *   global average pool: (N, C, H, W) -> (N, C), out = mean over H*W.
 */
#ifndef QAT_POOL_H
#define QAT_POOL_H

#include <stdint.h>

#include "autograd/tape.h"

typedef struct qat_pool_shape {
    int N, C, H, W;
    int K, stride, pad;
    int OH, OW; /* filled in by qat_pool_shape_init */
} qat_pool_shape;

/* Fills OH/OW; false if impossible (K < 1, stride < 1, pad < 0, pad > K/2, window larger
 * than the padded input). */
bool qat_pool_shape_init(qat_pool_shape *s);

/* argmax (N, C, OH, OW): the flat index h*W + w of the chosen input in its plane. */
void qat_maxpool_forward(float *out, int32_t *argmax, const float *inp, const qat_pool_shape *s);
void qat_maxpool_backward(float *dinp, const float *dout, const int32_t *argmax,
                          const qat_pool_shape *s);
void qat_avgpool_forward(float *out, const float *inp, const qat_pool_shape *s);
void qat_avgpool_backward(float *dinp, const float *dout, const qat_pool_shape *s);
void qat_global_avgpool_forward(float *out, const float *inp, int N, int C, int HW);
void qat_global_avgpool_backward(float *dinp, const float *dout, int N, int C, int HW);

qat_tensor *qat_maxpool2d(qat_tape *t, qat_tensor *x, int kernel, int stride, int pad);
qat_tensor *qat_avgpool2d(qat_tape *t, qat_tensor *x, int kernel, int stride, int pad);
/* (N, C, H, W) -> (N, C). */
qat_tensor *qat_global_avgpool(qat_tape *t, qat_tensor *x);

/* One output row of the 2x2, stride 2, unpadded max pool: y, am (OW) from input rows r0,
 * r1 (W floats each) whose first element has plane index `base` (argmax = plane index).
 * For fused kernels that produce the two input rows themselves (batchnorm.h). */
void qat_maxpool_2x2_row(float *y, int32_t *am, const float *r0, const float *r1, int32_t base,
                         int W, int OW);

#endif
