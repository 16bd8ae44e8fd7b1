#include "linear.h"

#include <cblas.h>
#include <string.h>

#include "autograd/parallel.h"

/* The products run as single-threaded OpenBLAS calls (autograd/parallel.h), so they are
 * split here into at most LINEAR_PARTS column blocks: forward by output feature, backward
 * by input feature. Each block's elements are sums over the same index in the same order
 * as one whole call's, and the blocks depend on the sizes alone (never on the thread
 * count), so the bits do not depend on how many threads share them. A block is at least
 * LINEAR_MIN_COLS wide and a multiple of 16 floats wide
 * except for the last. */
#define LINEAR_PARTS 8
#define LINEAR_MIN_COLS 64

#define LINEAR_MIN_MACS (1 << 20)

/* A product of fewer than LINEAR_MIN_MACS multiply-adds stays one call: waking the pool
 * costs more than it saves. */
static int linear_parts(int B, int C, int OC, int cols) {
    if ((size_t)B * C * OC < LINEAR_MIN_MACS) return 1;
    return QAT_MAX(1, QAT_MIN(LINEAR_PARTS, cols / LINEAR_MIN_COLS));
}

/* Block k of [0, cols) split in P: [*c0, *c1). */
static void linear_block(int *c0, int *c1, size_t k, int P, int cols) {
    *c0 = k == 0 ? 0 : QAT_MIN(cols, ((int)(((long)cols * (long)k / P) + 15) & ~15));
    *c1 = (int)k + 1 == P ? cols : QAT_MIN(cols, ((int)(((long)cols * (long)(k + 1) / P) + 15) & ~15));
}

typedef struct linear_job {
    float *out, *dinp, *dweight;
    const float *inp, *weight, *dout;
    int B, C, OC, P;
} linear_job;

/* out[:, o0:o1) = inp * weight[o0:o1)^T + out[:, o0:o1) (the bias, already there) */
static void forward_block(void *p, size_t k) {
    const linear_job *j = p;
    int o0, o1;
    linear_block(&o0, &o1, k, j->P, j->OC);
    if (o1 > o0)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->B, o1 - o0, j->C, 1.0f, j->inp,
                    j->C, j->weight + (size_t)o0 * j->C, j->C, 1.0f, j->out + o0, j->OC);
}

/* inp (B, C), weight (OC, C), bias (OC) or NULL, out (B, OC) */
void qat_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                        int B, int C, int OC) {
    for (int b = 0; b < B; b++)
        if (bias)
            memcpy(out + (size_t)b * OC, bias, (size_t)OC * sizeof(float));
        else
            memset(out + (size_t)b * OC, 0, (size_t)OC * sizeof(float));
    /* out (B, OC) = inp (B, C) * weight^T (C, OC) + out */
    linear_job j = {.out = out, .inp = inp, .weight = weight, .B = B, .C = C, .OC = OC,
                    .P = linear_parts(B, C, OC, OC)};
    qat_parallel_tasks((size_t)j.P, forward_block, &j);
}

/* Input features [c0, c1): dinp[:, c0:c1) and dweight[:, c0:c1). */
static void backward_block(void *p, size_t k) {
    const linear_job *j = p;
    int c0, c1;
    linear_block(&c0, &c1, k, j->P, j->C);
    if (c1 <= c0) return;
    if (j->dinp) /* dinp (B, C) += dout (B, OC) * weight (OC, C) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, j->B, c1 - c0, j->OC, 1.0f,
                    j->dout, j->OC, j->weight + c0, j->C, 1.0f, j->dinp + c0, j->C);
    if (j->dweight) /* dweight (OC, C) += dout^T (OC, B) * inp (B, C) */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, j->OC, c1 - c0, j->B, 1.0f, j->dout,
                    j->OC, j->inp + c0, j->C, 1.0f, j->dweight + c0, j->C);
}

/* dout (B, OC); accumulates into dinp (B, C), dweight (OC, C), dbias (OC) */
void qat_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                         const float *inp, const float *weight, int B, int C, int OC) {
    linear_job j = {.dinp = dinp, .dweight = dweight, .inp = inp, .weight = weight,
                    .dout = dout, .B = B, .C = C, .OC = OC, .P = linear_parts(B, C, OC, C)};
    if (dinp || dweight) qat_parallel_tasks((size_t)j.P, backward_block, &j);
    if (dbias)
        for (int b = 0; b < B; b++) {
            const float *d = dout + (size_t)b * OC;
            for (int o = 0; o < OC; o++) dbias[o] += d[o];
        }
}

typedef struct linear_ctx {
    qat_tensor *x, *w, *b, *y;
} linear_ctx;

static void linear_backward(qat_tape *t, void *p) {
    linear_ctx *c = p;
    qat_linear_backward(c->x->grad, c->w->grad, c->b ? c->b->grad : NULL, c->y->grad,
                        c->x->data, c->w->data, c->x->shape[0], c->x->shape[1], c->w->shape[0]);
}

qat_tensor *qat_linear(qat_tape *t, qat_tensor *x, qat_tensor *weight, qat_tensor *bias) {
    if (!x || !weight) return NULL;
    char sx[64], sw[64];
    if (x->ndim != 2)
        return qat_tape_fail(t, QAT_STATUS_SHAPE,
                             "linear: input must be 2-D (batch, features), got %s "
                             "(flatten it first)",
                             qat_tensor_shape_str(x, sx, sizeof sx));
    if (weight->ndim != 2 || weight->shape[1] != x->shape[1])
        return qat_tape_fail(t, QAT_STATUS_SHAPE,
                             "linear: input %s has %d features but weight %s expects (out, %d)",
                             qat_tensor_shape_str(x, sx, sizeof sx), x->shape[1],
                             qat_tensor_shape_str(weight, sw, sizeof sw),
                             weight->ndim == 2 ? weight->shape[1] : -1);
    if (bias && (bias->ndim != 1 || bias->shape[0] != weight->shape[0]))
        return qat_tape_fail(t, QAT_STATUS_SHAPE, "linear: bias %s does not match %d outputs",
                             qat_tensor_shape_str(bias, sx, sizeof sx), weight->shape[0]);
    int B = x->shape[0], C = x->shape[1], OC = weight->shape[0];
    bool grad = qat_tape_needs_grad(t, x, weight, bias);
    qat_tensor *y = qat_tape_tensor(t, 2, (int[]){B, OC}, grad);
    if (!y) return NULL;
    qat_linear_forward(y->data, x->data, weight->data, bias ? bias->data : NULL, B, C, OC);
    if (grad) {
        linear_ctx *c = qat_tape_record(t, linear_backward, sizeof *c, "linear");
        if (!c) return NULL;
        *c = (linear_ctx){x, weight, bias, y};
    }
    return y;
}
