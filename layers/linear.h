/* linear.h - fully connected layer: y = x W^T + b.
 *
 *   inp (B, C), weight (OC, C) as in PyTorch, bias (OC) or NULL, out (B, OC)
 *   forward:  out[b][o]  = bias[o] + sum_c inp[b][c] * weight[o][c]
 *   backward: dinp[b][c] += sum_o dout[b][o] * weight[o][c]      (dout W)
 *             dweight[o][c] += sum_b dout[b][o] * inp[b][c]      (dout^T inp)
 *             dbias[o] += sum_b dout[b][o]
 * The products are sgemm calls (OpenBLAS), split in fixed column blocks that the thread
 * pool shares out (linear.c).
 */
#ifndef QAT_LINEAR_H
#define QAT_LINEAR_H

#include "autograd/tape.h"

void qat_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                        int B, int C, int OC);
/* Any of dinp, dweight, dbias may be NULL (not needed). */
void qat_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                         const float *inp, const float *weight, int B, int C, int OC);

/* x (B, C); weight (OC, C); bias (OC) or NULL. Returns (B, OC). */
qat_tensor *qat_linear(qat_tape *t, qat_tensor *x, qat_tensor *weight, qat_tensor *bias);

#endif
