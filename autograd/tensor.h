/* tensor.h - float32 tensors, up to 4-D, row-major (NCHW for images), contiguous.
 *
 * A qat_tensor is a view: it does not own its memory. Two kinds exist:
 *  - parameters (weights, biases, batch-norm affine terms): data and grad point into the
 *    model's flat parameter and gradient buffers and live as long as the model;
 *  - step tensors (inputs, activations, losses): created by a qat_tape from its arena
 *    and gone at the next qat_tape_reset().
 * `grad` is NULL when no gradient flows into the tensor; otherwise it has the same shape
 * as `data` and backward passes accumulate into it with +=.
 */
#ifndef QAT_TENSOR_H
#define QAT_TENSOR_H

#include <stdbool.h>
#include <stddef.h>

#define QAT_MAX_DIMS 4

typedef struct qat_tensor {
    float *data;
    float *grad;
    int ndim;
    int shape[QAT_MAX_DIMS];
    size_t n;         /* number of elements: the product of shape[0..ndim) */
    const char *name; /* parameters only ("3.weight"); NULL for step tensors */
    bool frozen;      /* parameters only: kept out of training (layers/model.h) */
} qat_tensor;

/* Product of dims; 0 for a zero-sized dim. QAT_ASSERTs 1 <= ndim <= QAT_MAX_DIMS. */
size_t qat_shape_numel(int ndim, const int *shape);
/* Sets ndim/shape/n; data and grad untouched. */
void qat_tensor_set_shape(qat_tensor *t, int ndim, const int *shape);
bool qat_tensor_same_shape(const qat_tensor *a, const qat_tensor *b);
/* Writes "(64, 1, 28, 28)" into buf and returns buf. */
char *qat_tensor_shape_str(const qat_tensor *t, char *buf, size_t len);
/* Index of the first non-finite element, or -1 when all are finite. */
long qat_tensor_first_nonfinite(const float *x, size_t n);

#endif
