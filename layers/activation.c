#include "activation.h"

#include <math.h>

#include "autograd/parallel.h"

QAT_HOT void qat_relu_forward(float *out, const float *inp, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}
QAT_HOT void qat_relu_backward(float *dinp, const float *dout, const float *inp, size_t n) {
    /* Load first, then select: half the inputs are positive, so a branch mispredicts
     * half the time, and a conditional load keeps gcc from vectorising (measured: 5 ns
     * against 0.25 ns per element). */
    for (size_t i = 0; i < n; i++) {
        float g = dout[i];
        dinp[i] += inp[i] > 0.0f ? g : 0.0f;
    }
}

QAT_HOT void qat_relu6_forward(float *out, const float *inp, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = inp[i] > 0.0f ? inp[i] : 0.0f;
        out[i] = v < 6.0f ? v : 6.0f;
    }
}
QAT_HOT void qat_relu6_backward(float *dinp, const float *dout, const float *inp, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float g = dout[i], x = inp[i];
        dinp[i] += ((x > 0.0f) & (x < 6.0f)) ? g : 0.0f;
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

QAT_HOT void qat_hardswish_forward(float *out, const float *inp, size_t n) {
    /* PyTorch's order of operations (aten hardswish): x * min(max(x + 3, 0), 6) / 6. */
    for (size_t i = 0; i < n; i++) {
        float x = inp[i], r = x + 3.0f;
        r = r > 0.0f ? r : 0.0f;
        r = r < 6.0f ? r : 6.0f;
        out[i] = x * r / 6.0f;
    }
}
QAT_HOT void qat_hardswish_backward(float *dinp, const float *dout, const float *inp, size_t n) {
    /* aten hardswish_backward's vectorized kernel: 0 below -3, x/3 + 1/2 on [-3, 3), 1
     * from 3 on (activation.h: its scalar loop says 3/2 at 3; the vector one is what
     * computes tensors of any size). */
    for (size_t i = 0; i < n; i++) {
        float x = inp[i], g = dout[i];
        dinp[i] += x < -3.0f ? 0.0f : x < 3.0f ? g * (x / 3.0f + 0.5f) : g;
    }
}

QAT_HOT void qat_leaky_relu_forward(float *out, const float *inp, size_t n, float alpha) {
    for (size_t i = 0; i < n; i++) out[i] = inp[i] > 0.0f ? inp[i] : inp[i] * alpha;
}
QAT_HOT void qat_leaky_relu_backward(float *dinp, const float *dout, const float *inp, size_t n,
                                     float alpha) {
    /* aten leaky_relu_backward: x > 0 ? g : g * alpha (so alpha at 0). */
    for (size_t i = 0; i < n; i++) {
        float g = dout[i];
        dinp[i] += inp[i] > 0.0f ? g : g * alpha;
    }
}

/* The four autograd wrappers differ only in their kernels and in what backward reads:
 * relu/relu6 need the input, sigmoid/tanh the output. Large tensors are split across the
 * threads (elementwise: any split gives the same bits). */
typedef void (*act_fwd)(float *, const float *, size_t);
typedef void (*act_bwd)(float *, const float *, const float *, size_t);

#define ACT_GRAIN 16384

typedef struct act_job {
    act_fwd fwd;
    act_bwd bwd;
    float *out;
    const float *inp, *dout;
} act_job;

static void fwd_part(void *p, size_t b, size_t e) {
    const act_job *j = p;
    j->fwd(j->out + b, j->inp + b, e - b);
}
static void bwd_part(void *p, size_t b, size_t e) {
    const act_job *j = p;
    j->bwd(j->out + b, j->dout + b, j->inp + b, e - b);
}

typedef struct act_ctx {
    qat_tensor *x, *y;
    act_bwd bwd;
    bool uses_output;
    bool in_place; /* relu/relu6 in place: x and y share data and gradient */
} act_ctx;

/* In place, y = x (data overwritten, gradient shared): dx = [0 < y (< 6)] dy, written
 * over dy. The masks of relu and relu6 read the same from the output as from the input
 * (y > 0 <=> x > 0; 0 < y < 6 <=> 0 < x < 6). */
QAT_HOT static void relu_mask_inplace(float *g, const float *y, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = g[i];
        g[i] = y[i] > 0.0f ? v : 0.0f;
    }
}
QAT_HOT static void relu6_mask_inplace(float *g, const float *y, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = g[i], x = y[i];
        g[i] = ((x > 0.0f) & (x < 6.0f)) ? v : 0.0f;
    }
}
static void mask_part(void *p, size_t b, size_t e) {
    const act_job *j = p;
    if (j->bwd == qat_relu6_backward) relu6_mask_inplace(j->out + b, j->inp + b, e - b);
    else relu_mask_inplace(j->out + b, j->inp + b, e - b);
}

static void act_backward(qat_tape *t, void *p) {
    act_ctx *c = p;
    act_job j = {.bwd = c->bwd, .out = c->x->grad, .dout = c->y->grad,
                 .inp = c->uses_output ? c->y->data : c->x->data};
    qat_parallel_for(c->x->n, ACT_GRAIN, c->in_place ? mask_part : bwd_part, &j);
}

static qat_tensor *activation(qat_tape *t, qat_tensor *x, act_fwd fwd, act_bwd bwd,
                              bool uses_output, bool in_place, const char *name) {
    if (!x) return NULL;
    bool grad = qat_tape_needs_grad(t, x, NULL, NULL);
    qat_tensor *y;
    if (in_place) {
        y = qat_tape_view(t, x, x->ndim, x->shape); /* same data, same gradient */
        if (!y) return NULL;
    } else {
        y = qat_tape_tensor(t, x->ndim, x->shape, grad);
        if (!y) return NULL;
    }
    act_job j = {.fwd = fwd, .out = y->data, .inp = x->data};
    qat_parallel_for(x->n, ACT_GRAIN, fwd_part, &j);
    if (grad) {
        act_ctx *c = qat_tape_record(t, act_backward, sizeof *c, name);
        if (!c) return NULL;
        *c = (act_ctx){x, y, bwd, uses_output, in_place};
    }
    return y;
}

qat_tensor *qat_relu(qat_tape *t, qat_tensor *x) {
    return activation(t, x, qat_relu_forward, qat_relu_backward, false, false, "relu");
}
qat_tensor *qat_relu6(qat_tape *t, qat_tensor *x) {
    return activation(t, x, qat_relu6_forward, qat_relu6_backward, false, false, "relu6");
}
qat_tensor *qat_relu_inplace(qat_tape *t, qat_tensor *x) {
    return activation(t, x, qat_relu_forward, qat_relu_backward, false, true, "relu_");
}
qat_tensor *qat_relu6_inplace(qat_tape *t, qat_tensor *x) {
    return activation(t, x, qat_relu6_forward, qat_relu6_backward, false, true, "relu6_");
}
qat_tensor *qat_sigmoid(qat_tape *t, qat_tensor *x) {
    return activation(t, x, qat_sigmoid_forward, qat_sigmoid_backward, true, false, "sigmoid");
}
qat_tensor *qat_tanh(qat_tape *t, qat_tensor *x) {
    return activation(t, x, qat_tanh_forward, qat_tanh_backward, true, false, "tanh");
}
qat_tensor *qat_hardswish(qat_tape *t, qat_tensor *x) {
    return activation(t, x, qat_hardswish_forward, qat_hardswish_backward, false, false, "hardswish");
}

/* Leaky ReLU carries its slope, so it has a wrapper of its own (same structure). */
typedef struct leaky_job {
    float *out;
    const float *inp, *dout;
    float alpha;
} leaky_job;

static void leaky_fwd_part(void *p, size_t b, size_t e) {
    const leaky_job *j = p;
    qat_leaky_relu_forward(j->out + b, j->inp + b, e - b, j->alpha);
}
static void leaky_bwd_part(void *p, size_t b, size_t e) {
    const leaky_job *j = p;
    qat_leaky_relu_backward(j->out + b, j->dout + b, j->inp + b, e - b, j->alpha);
}

typedef struct leaky_ctx {
    qat_tensor *x, *y;
    float alpha;
} leaky_ctx;

static void leaky_backward(qat_tape *t, void *p) {
    (void)t;
    leaky_ctx *c = p;
    leaky_job j = {.out = c->x->grad, .dout = c->y->grad, .inp = c->x->data, .alpha = c->alpha};
    qat_parallel_for(c->x->n, ACT_GRAIN, leaky_bwd_part, &j);
}

qat_tensor *qat_leaky_relu(qat_tape *t, qat_tensor *x, float alpha) {
    if (!x) return NULL;
    bool grad = qat_tape_needs_grad(t, x, NULL, NULL);
    qat_tensor *y = qat_tape_tensor(t, x->ndim, x->shape, grad);
    if (!y) return NULL;
    leaky_job j = {.out = y->data, .inp = x->data, .alpha = alpha};
    qat_parallel_for(x->n, ACT_GRAIN, leaky_fwd_part, &j);
    if (grad) {
        leaky_ctx *c = qat_tape_record(t, leaky_backward, sizeof *c, "leaky_relu");
        if (!c) return NULL;
        *c = (leaky_ctx){x, y, alpha};
    }
    return y;
}
