/* batchnorm.h - batch normalization (Ioffe & Szegedy 2015) over (N, C) or (N, C, H, W).
 *
 * Per channel c, over the M = N*H*W values x of that channel:
 *   training: mean = sum x / M, var = sum (x - mean)^2 / M (biased, used to normalise),
 *             running_mean = (1 - momentum) running_mean + momentum mean,
 *             running_var  = (1 - momentum) running_var  + momentum var * M / (M - 1)
 *             (unbiased, as PyTorch does)
 *   eval:     mean, var = running_mean, running_var
 *   xhat = (x - mean) * rstd, rstd = 1 / sqrt(var + eps);  y = gamma xhat + beta
 * Backward in training (mean and var depend on x):
 *   dxhat = dy gamma
 *   dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
 *   dgamma += sum dy xhat,  dbeta += sum dy
 * In eval, dx = dy gamma rstd.
 */
#ifndef QAT_BATCHNORM_H
#define QAT_BATCHNORM_H

#include "autograd/tape.h"

/* inp/out (N, C, HW). mean and rstd (C) receive the batch statistics. running_* may be
 * NULL (no update). */
void qat_batchnorm_forward_train(float *out, float *mean, float *rstd, float *running_mean,
                                 float *running_var, const float *inp, const float *gamma,
                                 const float *beta, int N, int C, int HW, float momentum,
                                 float eps);
void qat_batchnorm_backward_train(float *dinp, float *dgamma, float *dbeta, const float *dout,
                                  const float *inp, const float *gamma, const float *mean,
                                  const float *rstd, int N, int C, int HW);
void qat_batchnorm_forward_eval(float *out, const float *inp, const float *gamma,
                                const float *beta, const float *running_mean,
                                const float *running_var, int N, int C, int HW, float eps);
void qat_batchnorm_backward_eval(float *dinp, float *dgamma, float *dbeta, const float *dout,
                                 const float *inp, const float *gamma,
                                 const float *running_mean, const float *running_var, int N,
                                 int C, int HW, float eps);

/* The training kernels with a per-channel pre-affine: they normalise x' = x * pre_a[c] +
 * pre_b[c] without storing it (pre_a, pre_b both NULL: x' = x). Backward also gives
 * dpre_a[c] = sum dx' x and dpre_b[c] = sum dx' (written, not accumulated; may be NULL)
 * and dinp = dx' * pre_a, accumulated (+=), or written when `overwrite` (then dinp may be
 * the same buffer as dout: each element is read before it is written). */
void qat_batchnorm_forward_train_pre(float *out, float *mean, float *rstd, float *running_mean,
                                     float *running_var, const float *inp, const float *pre_a,
                                     const float *pre_b, const float *gamma, const float *beta,
                                     int N, int C, int HW, float momentum, float eps);
void qat_batchnorm_backward_train_pre(float *dinp, float *dpre_a, float *dpre_b, float *dgamma,
                                      float *dbeta, const float *dout, const float *inp,
                                      const float *pre_a, const float *pre_b,
                                      const float *gamma, const float *mean, const float *rstd,
                                      int N, int C, int HW, bool overwrite);

/* x (N, C) or (N, C, H, W); gamma, beta (C); running_mean, running_var: C floats owned
 * by the caller (the layer), updated in training mode. t->training picks the mode. */
qat_tensor *qat_batchnorm(qat_tape *t, qat_tensor *x, qat_tensor *gamma, qat_tensor *beta,
                          float *running_mean, float *running_var, float momentum, float eps);
/* The same; with reuse_grad, the caller promises that x feeds nothing else, and y shares
 * x's gradient buffer: backward overwrites dy with dx in place (one buffer, not two). */
qat_tensor *qat_batchnorm_ex(qat_tape *t, qat_tensor *x, qat_tensor *gamma, qat_tensor *beta,
                             float *running_mean, float *running_var, float momentum, float eps,
                             bool reuse_grad);

/* Batch norm in training, then ReLU, then a 2x2 max pool of stride 2 (no padding), as one
 * op: the reference CNN's conv block tail. inp (N, C, H, W) with H, W >= 2; out and argmax
 * (N, C, H/2, W/2), argmax the index in its plane (H*W) of each window's maximum, as
 * qat_maxpool_forward gives it. mean, rstd: the batch statistics (C). Neither the
 * normalised nor the clamped tensor is stored; backward recomputes the clamp from inp.
 * It gives the three layers' results (the statistics, running statistics, values and
 * argmax bit for bit; the gradients up to the order of the sums of dgamma and dbeta).
 * Backward: dinp accumulated (+=), or written when `overwrite`. Both directions take a
 * scratch of qat_bn_relu_maxpool_scratch_floats(H, W) floats (one plane per thread). */
void qat_bn_relu_maxpool_forward(float *out, int32_t *argmax, float *mean, float *rstd,
                                 float *running_mean, float *running_var, float *scratch,
                                 const float *inp, const float *gamma, const float *beta, int N,
                                 int C, int H, int W, float momentum, float eps);
size_t qat_bn_relu_maxpool_scratch_floats(int H, int W);
void qat_bn_relu_maxpool_backward(float *dinp, float *dgamma, float *dbeta, float *scratch,
                                  const float *dout, const int32_t *argmax, const float *inp,
                                  const float *gamma, const float *beta, const float *mean,
                                  const float *rstd, int N, int C, int H, int W, bool overwrite);
/* The tape op (training mode only: t->training must be set). priv: x feeds nothing else,
 * so backward may write x's gradient instead of adding to it. */
qat_tensor *qat_bn_relu_maxpool(qat_tape *t, qat_tensor *x, qat_tensor *gamma, qat_tensor *beta,
                                float *running_mean, float *running_var, float momentum,
                                float eps, bool priv);

#endif
