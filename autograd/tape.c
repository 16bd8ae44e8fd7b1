#include "tape.h"

#include <stdarg.h>
#include <string.h>

#include "parallel.h"

void qat_tape_init(qat_tape *t, size_t block_size) {
    memset(t, 0, sizeof *t);
    qat_arena_init(&t->arena, block_size ? block_size : ((size_t)16 << 20));
    t->grad_enabled = true;
    t->training = true;
}

void qat_tape_reset(qat_tape *t) {
    qat_arena_reset(&t->arena);
    t->last = NULL;
    t->n_nodes = 0;
    qat_error_clear(&t->err);
}

void qat_tape_free(qat_tape *t) { qat_arena_free(&t->arena); }

qat_tensor *qat_tape_fail(qat_tape *t, qat_status s, const char *fmt, ...) {
    if (t->err.status == QAT_STATUS_OK) {
        t->err.status = s;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(t->err.msg, sizeof t->err.msg, fmt, ap);
        va_end(ap);
    }
    return NULL;
}

void *qat_tape_alloc(qat_tape *t, size_t bytes) {
    void *p = qat_arena_alloc(&t->arena, bytes);
    if (!p) qat_tape_fail(t, QAT_STATUS_NOMEM, "out of memory allocating %zu bytes", bytes);
    return p;
}

/* Large gradient buffers are zeroed by the threads in parts. */
static void zero_part(void *p, size_t b, size_t e) { memset((float *)p + b, 0, (e - b) * sizeof(float)); }

qat_tensor *qat_tape_tensor(qat_tape *t, int ndim, const int *shape, bool with_grad) {
    if (ndim < 1 || ndim > QAT_MAX_DIMS)
        return qat_tape_fail(t, QAT_STATUS_SHAPE, "tensor: %d dimensions (1 to %d allowed)",
                             ndim, QAT_MAX_DIMS);
    for (int i = 0; i < ndim; i++)
        if (shape[i] <= 0)
            return qat_tape_fail(t, QAT_STATUS_SHAPE, "tensor: dimension %d is %d (must be > 0)",
                                 i, shape[i]);
    qat_tensor *x = qat_tape_alloc(t, sizeof *x);
    if (!x) return NULL;
    memset(x, 0, sizeof *x);
    qat_tensor_set_shape(x, ndim, shape);
    x->data = qat_tape_alloc(t, x->n * sizeof(float));
    if (!x->data) return NULL;
    if (with_grad && t->grad_enabled) {
        x->grad = qat_tape_alloc(t, x->n * sizeof(float));
        if (!x->grad) return NULL;
        qat_parallel_for(x->n, 65536, zero_part, x->grad);
    }
    return x;
}

qat_tensor *qat_tape_input(qat_tape *t, int ndim, const int *shape, const float *data) {
    QAT_ASSERT(data != NULL);
    qat_tensor *x = qat_tape_tensor(t, ndim, shape, false);
    if (x) memcpy(x->data, data, x->n * sizeof(float));
    return x;
}

qat_tensor *qat_tape_view(qat_tape *t, qat_tensor *x, int ndim, const int *shape) {
    if (!x) return NULL;
    if (ndim < 1 || ndim > QAT_MAX_DIMS)
        return qat_tape_fail(t, QAT_STATUS_SHAPE, "view: %d dimensions (1 to %d allowed)", ndim,
                             QAT_MAX_DIMS);
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i] > 0 ? (size_t)shape[i] : 0;
    if (n != x->n) {
        char buf[64];
        return qat_tape_fail(t, QAT_STATUS_SHAPE, "view: cannot view %s (%zu elements) as %zu elements",
                             qat_tensor_shape_str(x, buf, sizeof buf), x->n, n);
    }
    qat_tensor *v = qat_tape_alloc(t, sizeof *v);
    if (!v) return NULL;
    *v = *x;
    v->name = NULL;
    qat_tensor_set_shape(v, ndim, shape);
    return v;
}

bool qat_tape_needs_grad(const qat_tape *t, const qat_tensor *a, const qat_tensor *b,
                         const qat_tensor *c) {
    if (!t->grad_enabled) return false;
    return (a && a->grad) || (b && b->grad) || (c && c->grad);
}

void *qat_tape_record(qat_tape *t, qat_backward_fn fn, size_t ctx_bytes, const char *op) {
    /* The node header and the op's context share one allocation: node first. */
    size_t head = (sizeof(qat_node) + QAT_ARENA_ALIGN - 1) & ~(size_t)(QAT_ARENA_ALIGN - 1);
    unsigned char *p = qat_tape_alloc(t, head + ctx_bytes);
    if (!p) return NULL;
    memset(p, 0, head + ctx_bytes);
    qat_node *node = (qat_node *)p;
    node->backward = fn;
    node->op = op;
    node->prev = t->last;
    t->last = node;
    t->n_nodes++;
    return p + head;
}

qat_status qat_tape_backward(qat_tape *t, qat_tensor *loss) {
    if (t->err.status != QAT_STATUS_OK) return t->err.status;
    if (!loss) {
        qat_tape_fail(t, QAT_STATUS_INVALID_ARG, "backward: loss is NULL");
        return t->err.status;
    }
    if (loss->n != 1) {
        char buf[64];
        qat_tape_fail(t, QAT_STATUS_SHAPE, "backward: loss must have one element, got %s",
                      qat_tensor_shape_str(loss, buf, sizeof buf));
        return t->err.status;
    }
    if (!loss->grad) {
        qat_tape_fail(t, QAT_STATUS_INVALID_ARG,
                      "backward: the loss has no gradient (inference mode, or nothing it "
                      "depends on requires a gradient)");
        return t->err.status;
    }
    const float one = 1.0f;
    return qat_tape_backward_seeded(t, loss, &one);
}

qat_status qat_tape_backward_seeded(qat_tape *t, qat_tensor *y, const float *dy) {
    if (t->err.status != QAT_STATUS_OK) return t->err.status;
    if (!y || !dy) {
        qat_tape_fail(t, QAT_STATUS_INVALID_ARG, "backward: output or seed is NULL");
        return t->err.status;
    }
    if (!y->grad) {
        qat_tape_fail(t, QAT_STATUS_INVALID_ARG,
                      "backward: the output has no gradient (inference mode, or nothing it "
                      "depends on requires a gradient)");
        return t->err.status;
    }
    for (size_t i = 0; i < y->n; i++) y->grad[i] += dy[i];
    size_t head = (sizeof(qat_node) + QAT_ARENA_ALIGN - 1) & ~(size_t)(QAT_ARENA_ALIGN - 1);
    for (qat_node *n = t->last; n; n = n->prev) n->backward(t, (unsigned char *)n + head);
    return t->err.status;
}
