/* loss.h - losses, reduced to a scalar mean over the batch.
 *
 * Softmax cross-entropy, numerically stable: with m = max_j z_j,
 *   log p_y = z_y - m - log sum_j exp(z_j - m)
 *   loss = -(1/B) sum_b log p_{b, y_b}
 *   dz_j = (p_j - [j == y]) / B * dloss
 * Subtracting m keeps every exp() in (0, 1], so large logits cannot overflow.
 *
 * Mean squared error: loss = (1/n) sum (pred - target)^2, dpred = 2 (pred - target) / n.
 */
#ifndef QAT_LOSS_H
#define QAT_LOSS_H

#include <stdint.h>

#include "autograd/tape.h"

/* logits (B, C); labels[b] in [0, C). Writes the mean loss and probs (B, C). */
void qat_cross_entropy_forward(float *loss, float *probs, const float *logits,
                               const int32_t *labels, int B, int C);
void qat_cross_entropy_backward(float *dlogits, float dloss, const float *probs,
                                const int32_t *labels, int B, int C);

/* logits (B, C); labels: B class indices (copied). A label outside [0, C) is an error. */
qat_tensor *qat_cross_entropy(qat_tape *t, qat_tensor *logits, const int32_t *labels);
/* pred and target of the same shape; target gets no gradient. */
qat_tensor *qat_mse(qat_tape *t, qat_tensor *pred, qat_tensor *target);

#endif
