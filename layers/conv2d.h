/* conv2d.h - 2-D convolution (cross-correlation, as in PyTorch) with stride, zero
 * padding and groups (groups == C == OC is depthwise), by im2col + sgemm.
 *
 *   inp (N, C, H, W), weight (OC, C/groups, KH, KW), bias (OC) or NULL,
 *   out (N, OC, OH, OW), OH = (H + 2 pad - KH) / stride + 1 (likewise OW)
 *   out[n][o][y][x] = bias[o] + sum_{c in group(o), i, j}
 *                       inp[n][c][y*stride - pad + i][x*stride - pad + j] * weight[o][c'][i][j]
 *
 * im2col unrolls, for one image and one group, the (C/g)*KH*KW input values under each
 * of the OH*OW output positions into a column matrix col (C/g*KH*KW, OH*OW); then
 * out_g (OC/g, OH*OW) = W_g (OC/g, C/g*KH*KW) * col. Backward:
 *   dW_g += dout_g * col^T;  dcol = W_g^T * dout_g;  dinp += col2im(dcol).
 * A depthwise convolution (groups == C == OC) runs as direct loops instead (a GEMM with
 * one row wastes the kernel), and a 1x1, stride 1, unpadded one needs no im2col.
 *
 * Threads (autograd/parallel.h): forward shares the images out; backward splits the batch
 * into QAT_CONV2D_CHUNKS fixed chunks of consecutive images whose weight and bias
 * gradients are summed separately and then added in chunk order (depthwise: each channel
 * owned by one thread), so results do not depend on the thread count.
 * The scratch buffer holds one col matrix per thread and the chunks' partial sums:
 * qat_conv2d_scratch_floats() floats, for the thread count at the time of the call.
 */
#ifndef QAT_CONV2D_H
#define QAT_CONV2D_H

#include "autograd/tape.h"

#define QAT_CONV2D_CHUNKS 8

typedef struct qat_conv2d_shape {
    int N, C, H, W;   /* input */
    int OC, KH, KW;   /* weight: (OC, C/groups, KH, KW) */
    int stride, pad, groups;
    int OH, OW;       /* output, filled in by qat_conv2d_shape_init */
} qat_conv2d_shape;

/* Fills OH/OW. Returns false if the configuration is impossible (channels not
 * divisible by groups, kernel larger than the padded input, stride < 1, pad < 0). */
bool qat_conv2d_shape_init(qat_conv2d_shape *s);
size_t qat_conv2d_scratch_floats(const qat_conv2d_shape *s);

void qat_conv2d_forward(float *out, float *scratch, const float *inp, const float *weight,
                        const float *bias, const qat_conv2d_shape *s);
/* Any of dinp, dweight, dbias may be NULL. */
void qat_conv2d_backward(float *dinp, float *dweight, float *dbias, float *scratch,
                         const float *dout, const float *inp, const float *weight,
                         const qat_conv2d_shape *s);
/* The naive seven-loop definition, kept beside the fast kernel as its reference. */
void qat_conv2d_forward_ref(float *out, const float *inp, const float *weight,
                            const float *bias, const qat_conv2d_shape *s);

/* x (N, C, H, W); weight (OC, C/groups, KH, KW); bias (OC) or NULL. */
qat_tensor *qat_conv2d(qat_tape *t, qat_tensor *x, qat_tensor *weight, qat_tensor *bias,
                       int stride, int pad, int groups);

#endif
