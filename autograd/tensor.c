#include "tensor.h"

#include <math.h>
#include <stdio.h>

#include "common.h"

size_t qat_shape_numel(int ndim, const int *shape) {
    QAT_ASSERT(ndim >= 1 && ndim <= QAT_MAX_DIMS);
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        QAT_ASSERT(shape[i] >= 0);
        n *= (size_t)shape[i];
    }
    return n;
}

void qat_tensor_set_shape(qat_tensor *t, int ndim, const int *shape) {
    t->n = qat_shape_numel(ndim, shape);
    t->ndim = ndim;
    for (int i = 0; i < QAT_MAX_DIMS; i++) t->shape[i] = i < ndim ? shape[i] : 1;
}

bool qat_tensor_same_shape(const qat_tensor *a, const qat_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

char *qat_tensor_shape_str(const qat_tensor *t, char *buf, size_t len) {
    size_t off = 0;
    off += (size_t)snprintf(buf + off, len - off, "(");
    for (int i = 0; i < t->ndim && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, i ? ", %d" : "%d", t->shape[i]);
    if (off < len) snprintf(buf + off, len - off, ")");
    return buf;
}

long qat_tensor_first_nonfinite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return (long)i;
    return -1;
}
