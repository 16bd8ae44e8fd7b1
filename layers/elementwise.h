/* elementwise.h - shape-preserving and shape-only ops: add, flatten, dropout.
 *
 *   add:     out = a + b (same shapes); da += dout, db += dout. Residual connections
 *            use it; the input of a residual block feeds two consumers, and the tape's
 *            += accumulation sums their gradients.
 *   flatten: (N, ...) -> (N, prod ...), a view sharing data and gradient: no node.
 *   dropout: in training, each element is kept with probability 1 - p and scaled by
 *            1 / (1 - p) (inverted dropout), so eval is the identity; the mask comes
 *            from t->rng and is saved for backward.
 */
#ifndef QAT_ELEMENTWISE_H
#define QAT_ELEMENTWISE_H

#include "autograd/tape.h"

qat_tensor *qat_add(qat_tape *t, qat_tensor *a, qat_tensor *b);
qat_tensor *qat_flatten(qat_tape *t, qat_tensor *x);
/* 0 <= p < 1. Needs t->rng in training mode. */
qat_tensor *qat_dropout(qat_tape *t, qat_tensor *x, float p);

#endif
