#include "linear.h"

#include <cblas.h>
#include <string.h>

/* inp (B, C), weight (OC, C), bias (OC) or NULL, out (B, OC) */
void qat_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                        int B, int C, int OC) {
    float beta = 0.0f;
    if (bias) {
        for (int b = 0; b < B; b++) memcpy(out + (size_t)b * OC, bias, (size_t)OC * sizeof(float));
        beta = 1.0f;
    }
    /* out (B, OC) = inp (B, C) * weight^T (C, OC) + beta * out */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, OC, C, 1.0f, inp, C, weight, C,
                beta, out, OC);
}

/* dout (B, OC); accumulates into dinp (B, C), dweight (OC, C), dbias (OC) */
void qat_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                         const float *inp, const float *weight, int B, int C, int OC) {
    if (dinp) /* dinp (B, C) += dout (B, OC) * weight (OC, C) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, C, OC, 1.0f, dout, OC,
                    weight, C, 1.0f, dinp, C);
    if (dweight) /* dweight (OC, C) += dout^T (OC, B) * inp (B, C) */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OC, C, B, 1.0f, dout, OC, inp, C,
                    1.0f, dweight, C);
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
