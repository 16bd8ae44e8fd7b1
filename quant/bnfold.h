/* bnfold.h - batch-norm folding for quantization-aware training, as autograd ops.
 *
 * Inference folds a batch norm that follows a conv or linear layer into it:
 *
 *     BN(conv(x, w) + b) = conv(x, w * f) + beta + (b - mu) * f,   f = gamma / sqrt(var + eps)
 *
 * so the integer model has one weight tensor and one bias per layer. QAT must
 * fake-quantize exactly these folded weights (Jacob et al. 2018, section 3.2;
 * Krishnamoorthi 2018, section 3.2 and figure 12). Two phases:
 *
 * - Before BN statistics freeze (training): weights are folded with the *running*
 *   variance, so the quantized weights do not jitter with each batch; the conv output is
 *   then scaled back by 1 / f and goes through ordinary training-mode batch norm (batch
 *   statistics, running statistics updated). The net effect is the float BN computed
 *   on quantized folded weights: the whitepaper's correction factor sigma / sigma_B,
 *   written the way PyTorch's ConvBn modules do it:
 *
 *       y = BN_train( qat_bnfold_unscale( conv(x, fq(qat_bnfold_weight(w))), b ) )
 *
 * - After the freeze, and always in evaluation: the folded conv, as the integer model
 *   computes it, with running statistics only:
 *
 *       y = conv(x, fq(qat_bnfold_weight(w)), fq(qat_bnfold_bias(b)))
 *
 * Shapes: w is (C, ...) (conv (C, C_in/groups, k, k), linear (C, F)); gamma, beta,
 * mean, var, b are (C); y for unscale is (N, C, ...) (channels on axis 1).
 * Gradients flow to w, b, gamma and beta (the running statistics are not parameters).
 * A gamma of exactly 0 makes 1 / f infinite in the unscale step (as in PyTorch); the
 * training loop's NaN check then stops the run.
 */
#ifndef QAT_BNFOLD_H
#define QAT_BNFOLD_H

#include "autograd/tape.h"

/* w * gamma / sqrt(var + eps), per output channel (axis 0). */
qat_tensor *qat_bnfold_weight(qat_tape *t, qat_tensor *w, qat_tensor *gamma, const float *var, float eps);
/* beta + (b - mean) * gamma / sqrt(var + eps); b may be NULL (no conv bias). Shape (C). */
qat_tensor *qat_bnfold_bias(qat_tape *t, qat_tensor *b, qat_tensor *gamma, qat_tensor *beta,
                            const float *mean, const float *var, float eps);
/* y * sqrt(var + eps) / gamma + b per channel on axis 1; b may be NULL. */
qat_tensor *qat_bnfold_unscale(qat_tape *t, qat_tensor *y, qat_tensor *gamma, const float *var, float eps,
                               qat_tensor *b);
/* The training phase's two steps in one op, without storing the unscaled tensor:
 * qat_batchnorm(qat_bnfold_unscale(x, gamma, var, eps, b), gamma, beta, running_mean,
 * running_var, momentum, eps) in training mode, with the same gradients. reuse_grad: the
 * caller promises x feeds nothing else; y then shares x's gradient buffer
 * (layers/batchnorm.h). */
qat_tensor *qat_bnfold_batchnorm(qat_tape *t, qat_tensor *x, qat_tensor *gamma, qat_tensor *beta,
                                 float *running_mean, float *running_var, float momentum,
                                 float eps, qat_tensor *b, bool reuse_grad);

#endif
