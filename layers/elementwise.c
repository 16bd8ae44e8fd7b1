#include "elementwise.h"

#include <string.h>

typedef struct add_ctx {
    qat_tensor *a, *b, *y;
} add_ctx;

static void add_backward(qat_tape *t, void *p) {
    add_ctx *c = p;
    const float *dy = c->y->grad;
    /* If a == b both lines run and the tensor receives 2 dy, as it should. */
    if (c->a->grad)
        for (size_t i = 0; i < c->y->n; i++) c->a->grad[i] += dy[i];
    if (c->b->grad)
        for (size_t i = 0; i < c->y->n; i++) c->b->grad[i] += dy[i];
}

qat_tensor *qat_add(qat_tape *t, qat_tensor *a, qat_tensor *b) {
    if (!a || !b) return NULL;
    if (!qat_tensor_same_shape(a, b)) {
        char sa[64], sb[64];
        return qat_tape_fail(t, QAT_STATUS_SHAPE, "add: shapes %s and %s differ",
                             qat_tensor_shape_str(a, sa, sizeof sa),
                             qat_tensor_shape_str(b, sb, sizeof sb));
    }
    bool grad = qat_tape_needs_grad(t, a, b, NULL);
    qat_tensor *y = qat_tape_tensor(t, a->ndim, a->shape, grad);
    if (!y) return NULL;
    for (size_t i = 0; i < y->n; i++) y->data[i] = a->data[i] + b->data[i];
    if (grad) {
        add_ctx *c = qat_tape_record(t, add_backward, sizeof *c, "add");
        if (!c) return NULL;
        *c = (add_ctx){a, b, y};
    }
    return y;
}

qat_tensor *qat_flatten(qat_tape *t, qat_tensor *x) {
    if (!x) return NULL;
    int rest = (int)(x->n / (size_t)x->shape[0]);
    return qat_tape_view(t, x, 2, (int[]){x->shape[0], rest});
}

typedef struct dropout_ctx {
    qat_tensor *x, *y;
    float *mask; /* 0 or 1/(1-p) per element */
} dropout_ctx;

static void dropout_backward(qat_tape *t, void *p) {
    dropout_ctx *c = p;
    for (size_t i = 0; i < c->x->n; i++) c->x->grad[i] += c->y->grad[i] * c->mask[i];
}

qat_tensor *qat_dropout(qat_tape *t, qat_tensor *x, float p) {
    if (!x) return NULL;
    if (!(p >= 0.0f && p < 1.0f))
        return qat_tape_fail(t, QAT_STATUS_INVALID_ARG,
                             "dropout: probability %g is outside [0, 1)", (double)p);
    if (!t->training || p == 0.0f) return x; /* the identity: no copy, no node */
    if (!t->rng)
        return qat_tape_fail(t, QAT_STATUS_INVALID_ARG,
                             "dropout: training mode needs a random generator (tape.rng)");
    bool grad = qat_tape_needs_grad(t, x, NULL, NULL);
    qat_tensor *y = qat_tape_tensor(t, x->ndim, x->shape, grad);
    if (!y) return NULL;
    float *mask = qat_tape_alloc(t, x->n * sizeof(float));
    if (!mask) return NULL;
    const float scale = 1.0f / (1.0f - p);
    for (size_t i = 0; i < x->n; i++) {
        mask[i] = qat_rng_uniform(t->rng) < p ? 0.0f : scale;
        y->data[i] = x->data[i] * mask[i];
    }
    if (grad) {
        dropout_ctx *c = qat_tape_record(t, dropout_backward, sizeof *c, "dropout");
        if (!c) return NULL;
        *c = (dropout_ctx){x, y, mask};
    }
    return y;
}
