#include "activation.h"

#include <math.h>

void qat_relu_forward(float *out, const float *inp, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}
void qat_relu_backward(float *dinp, const float *dout, const float *inp, size_t n) {
    /* Load first, then select: half the inputs are positive, so a branch mispredicts
     * half the time, and a conditional load keeps gcc from vectorising (measured: 5 ns
     * against 0.25 ns per element). */
    for (size_t i = 0; i < n; i++) {
        float g = dout[i];
        dinp[i] += inp[i] > 0.0f ? g : 0.0f;
    }
}

void qat_relu6_forward(float *out, const float *inp, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = inp[i] > 0.0f ? inp[i] : 0.0f;
        out[i] = v < 6.0f ? v : 6.0f;
    }
}
void qat_relu6_backward(float *dinp, const float *dout, const float *inp, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float g = dout[i], x = inp[i];
        dinp[i] += (x > 0.0f) & (x < 6.0f) ? g : 0.0f;
    }
}

void qat_sigmoid_forward(float *out, const float *inp, size_t n) {
    /* Two branches so that exp() only sees non-positive arguments: no overflow. */
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        if (x >= 0.0f) {
            out[i] = 1.0f / (1.0f + expf(-x));
        } else {
            float e = expf(x);
            out[i] = e / (1.0f + e);
        }
    }
}
void qat_sigmoid_backward(float *dinp, const float *dout, const float *out, size_t n) {
    for (size_t i = 0; i < n; i++) dinp[i] += dout[i] * out[i] * (1.0f - out[i]);
}

void qat_tanh_forward(float *out, const float *inp, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = tanhf(inp[i]);
}
void qat_tanh_backward(float *dinp, const float *dout, const float *out, size_t n) {
    for (size_t i = 0; i < n; i++) dinp[i] += dout[i] * (1.0f - out[i] * out[i]);
}

/* The four autograd wrappers differ only in their kernels and in what backward reads:
 * relu/relu6 need the input, sigmoid/tanh the output. */
typedef void (*act_fwd)(float *, const float *, size_t);
typedef void (*act_bwd)(float *, const float *, const float *, size_t);

typedef struct act_ctx {
    qat_tensor *x, *y;
    act_bwd bwd;
    bool uses_output;
} act_ctx;

static void act_backward(qat_tape *t, void *p) {
    act_ctx *c = p;
    c->bwd(c->x->grad, c->y->grad, c->uses_output ? c->y->data : c->x->data, c->x->n);
}

static qat_tensor *activation(qat_tape *t, qat_tensor *x, act_fwd fwd, act_bwd bwd,
                              bool uses_output, const char *name) {
    if (!x) return NULL;
    bool grad = qat_tape_needs_grad(t, x, NULL, NULL);
    qat_tensor *y = qat_tape_tensor(t, x->ndim, x->shape, grad);
    if (!y) return NULL;
    fwd(y->data, x->data, x->n);
    if (grad) {
        act_ctx *c = qat_tape_record(t, act_backward, sizeof *c, name);
        if (!c) return NULL;
        *c = (act_ctx){x, y, bwd, uses_output};
    }
    return y;
}

qat_tensor *qat_relu(qat_tape *t, qat_tensor *x) {
    return activation(t, x, qat_relu_forward, qat_relu_backward, false, "relu");
}
qat_tensor *qat_relu6(qat_tape *t, qat_tensor *x) {
    return activation(t, x, qat_relu6_forward, qat_relu6_backward, false, "relu6");
}
qat_tensor *qat_sigmoid(qat_tape *t, qat_tensor *x) {
    return activation(t, x, qat_sigmoid_forward, qat_sigmoid_backward, true, "sigmoid");
}
qat_tensor *qat_tanh(qat_tape *t, qat_tensor *x) {
    return activation(t, x, qat_tanh_forward, qat_tanh_backward, true, "tanh");
}
