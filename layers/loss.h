/* loss.h - losses, reduced to a scalar mean over the batch.
 *
 * Softmax cross-entropy, numerically stable: with m = max_j z_j,
 *   log p_y = z_y - m - log sum_j exp(z_j - m)
 *   loss = -(1/B) sum_b log p_{b, y_b}
 *   dz_j = (p_j - [j == y]) / B * dloss
 * Subtracting m keeps every exp() in (0, 1], so large logits cannot overflow.
 *
 * Mean squared error: loss = (1/n) sum (pred - target)^2, dpred = 2 (pred - target) / n.
 *
 * Knowledge distillation (Hinton, Vinyals and Dean 2015, "Distilling the Knowledge in a
 * Neural Network"): with the teacher's logits t, temperature T and weight alpha,
 *   p = softmax(t / T), q = softmax(z / T)
 *   loss = (1 - alpha) CE(z, y) + alpha T^2 (1/B) sum_b KL(p_b || q_b)
 *   dz   = (1 - alpha) (softmax(z) - onehot(y)) / B + alpha T (q - p) / B
 * The T^2 keeps the soft term's gradients at the scale of the hard term's as T changes
 * (the paper, section 2). KL(p || q) = sum_j p_j (log p_j - log q_j), 0 log 0 = 0.
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
/* logits (B, C), teacher (B*C floats, copied; no gradient), labels as above; T > 0,
 * alpha in [0, 1]. */
void qat_distill_forward(float *loss, float *probs, float *q, float *p, const float *logits, const float *teacher,
                         const int32_t *labels, int B, int C, float T, float alpha);
void qat_distill_backward(float *dlogits, float dloss, const float *probs, const float *q, const float *p,
                          const int32_t *labels, int B, int C, float T, float alpha);
qat_tensor *qat_distill_loss(qat_tape *t, qat_tensor *logits, const float *teacher, const int32_t *labels, float T,
                             float alpha);
/* pred and target of the same shape; target gets no gradient. */
qat_tensor *qat_mse(qat_tape *t, qat_tensor *pred, qat_tensor *target);

#endif
