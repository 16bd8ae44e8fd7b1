#include "batchnorm.h"

#include <math.h>

/* inp/out (N, C, HW). Statistics in double: sums of 10^5 floats drift otherwise. */
void qat_batchnorm_forward_train(float *out, float *mean, float *rstd, float *running_mean,
                                 float *running_var, const float *inp, const float *gamma,
                                 const float *beta, int N, int C, int HW, float momentum,
                                 float eps) {
    const size_t M = (size_t)N * HW;
    for (int c = 0; c < C; c++) {
        double sum = 0.0;
        for (int n = 0; n < N; n++) {
            const float *x = inp + ((size_t)n * C + c) * HW;
            for (int i = 0; i < HW; i++) sum += x[i];
        }
        double mu = sum / (double)M;
        double sq = 0.0;
        for (int n = 0; n < N; n++) {
            const float *x = inp + ((size_t)n * C + c) * HW;
            for (int i = 0; i < HW; i++) {
                double d = x[i] - mu;
                sq += d * d;
            }
        }
        double var = sq / (double)M;
        float rs = (float)(1.0 / sqrt(var + eps));
        float m = (float)mu;
        mean[c] = m;
        rstd[c] = rs;
        float g = gamma[c] * rs, b = beta[c];
        for (int n = 0; n < N; n++) {
            const float *x = inp + ((size_t)n * C + c) * HW;
            float *y = out + ((size_t)n * C + c) * HW;
            for (int i = 0; i < HW; i++) y[i] = (x[i] - m) * g + b;
        }
        if (running_mean && running_var) {
            double unbiased = M > 1 ? sq / (double)(M - 1) : var;
            running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * m;
            running_var[c] = (1.0f - momentum) * running_var[c] + momentum * (float)unbiased;
        }
    }
}

void qat_batchnorm_backward_train(float *dinp, float *dgamma, float *dbeta, const float *dout,
                                  const float *inp, const float *gamma, const float *mean,
                                  const float *rstd, int N, int C, int HW) {
    const double M = (double)N * HW;
    for (int c = 0; c < C; c++) {
        /* sum dy and sum dy * xhat over the channel */
        double sdy = 0.0, sdyx = 0.0;
        const float m = mean[c], rs = rstd[c];
        for (int n = 0; n < N; n++) {
            const float *x = inp + ((size_t)n * C + c) * HW;
            const float *dy = dout + ((size_t)n * C + c) * HW;
            for (int i = 0; i < HW; i++) {
                sdy += dy[i];
                sdyx += (double)dy[i] * ((x[i] - m) * rs);
            }
        }
        if (dgamma) dgamma[c] += (float)sdyx;
        if (dbeta) dbeta[c] += (float)sdy;
        if (!dinp) continue;
        /* dxhat = dy gamma; dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) */
        const float g = gamma[c];
        const float mdy = (float)(sdy / M) * g, mdyx = (float)(sdyx / M) * g;
        for (int n = 0; n < N; n++) {
            const float *x = inp + ((size_t)n * C + c) * HW;
            const float *dy = dout + ((size_t)n * C + c) * HW;
            float *dx = dinp + ((size_t)n * C + c) * HW;
            for (int i = 0; i < HW; i++) {
                float xhat = (x[i] - m) * rs;
                dx[i] += rs * (dy[i] * g - mdy - xhat * mdyx);
            }
        }
    }
}

void qat_batchnorm_forward_eval(float *out, const float *inp, const float *gamma,
                                const float *beta, const float *running_mean,
                                const float *running_var, int N, int C, int HW, float eps) {
    for (int c = 0; c < C; c++) {
        float rs = 1.0f / sqrtf(running_var[c] + eps);
        float g = gamma[c] * rs, m = running_mean[c], b = beta[c];
        for (int n = 0; n < N; n++) {
            const float *x = inp + ((size_t)n * C + c) * HW;
            float *y = out + ((size_t)n * C + c) * HW;
            for (int i = 0; i < HW; i++) y[i] = (x[i] - m) * g + b;
        }
    }
}

void qat_batchnorm_backward_eval(float *dinp, float *dgamma, float *dbeta, const float *dout,
                                 const float *inp, const float *gamma,
                                 const float *running_mean, const float *running_var, int N,
                                 int C, int HW, float eps) {
    for (int c = 0; c < C; c++) {
        float rs = 1.0f / sqrtf(running_var[c] + eps);
        float m = running_mean[c], g = gamma[c] * rs;
        double sdy = 0.0, sdyx = 0.0;
        for (int n = 0; n < N; n++) {
            const float *x = inp + ((size_t)n * C + c) * HW;
            const float *dy = dout + ((size_t)n * C + c) * HW;
            float *dx = dinp ? dinp + ((size_t)n * C + c) * HW : NULL;
            for (int i = 0; i < HW; i++) {
                sdy += dy[i];
                sdyx += (double)dy[i] * ((x[i] - m) * rs);
                if (dx) dx[i] += dy[i] * g;
            }
        }
        if (dgamma) dgamma[c] += (float)sdyx;
        if (dbeta) dbeta[c] += (float)sdy;
    }
}

typedef struct bn_ctx {
    qat_tensor *x, *gamma, *beta, *y;
    float *mean, *rstd;                       /* training: batch statistics */
    const float *running_mean, *running_var;  /* eval */
    float eps;
    int N, C, HW;
    bool training;
} bn_ctx;

static void bn_backward(qat_tape *t, void *p) {
    bn_ctx *c = p;
    float *dg = c->gamma->grad, *db = c->beta->grad;
    if (c->training)
        qat_batchnorm_backward_train(c->x->grad, dg, db, c->y->grad, c->x->data, c->gamma->data,
                                     c->mean, c->rstd, c->N, c->C, c->HW);
    else
        qat_batchnorm_backward_eval(c->x->grad, dg, db, c->y->grad, c->x->data, c->gamma->data,
                                    c->running_mean, c->running_var, c->N, c->C, c->HW, c->eps);
}

qat_tensor *qat_batchnorm(qat_tape *t, qat_tensor *x, qat_tensor *gamma, qat_tensor *beta,
                          float *running_mean, float *running_var, float momentum, float eps) {
    if (!x || !gamma || !beta) return NULL;
    char sx[64];
    if (x->ndim != 2 && x->ndim != 4)
        return qat_tape_fail(t, QAT_STATUS_SHAPE,
                             "batchnorm: input must be (N, C) or (N, C, H, W), got %s",
                             qat_tensor_shape_str(x, sx, sizeof sx));
    int N = x->shape[0], C = x->shape[1];
    int HW = x->ndim == 4 ? x->shape[2] * x->shape[3] : 1;
    if (gamma->n != (size_t)C || beta->n != (size_t)C)
        return qat_tape_fail(t, QAT_STATUS_SHAPE,
                             "batchnorm: input %s has %d channels but gamma/beta have %zu/%zu",
                             qat_tensor_shape_str(x, sx, sizeof sx), C, gamma->n, beta->n);
    if (!running_mean || !running_var)
        return qat_tape_fail(t, QAT_STATUS_INVALID_ARG, "batchnorm: running statistics are NULL");
    if (t->training && (size_t)N * HW < 2)
        return qat_tape_fail(t, QAT_STATUS_SHAPE,
                             "batchnorm: training needs more than one value per channel, got "
                             "input %s",
                             qat_tensor_shape_str(x, sx, sizeof sx));
    bool grad = qat_tape_needs_grad(t, x, gamma, beta);
    qat_tensor *y = qat_tape_tensor(t, x->ndim, x->shape, grad);
    if (!y) return NULL;
    float *mean = NULL, *rstd = NULL;
    if (t->training) {
        mean = qat_tape_alloc(t, (size_t)C * sizeof(float));
        rstd = qat_tape_alloc(t, (size_t)C * sizeof(float));
        if (!mean || !rstd) return NULL;
        qat_batchnorm_forward_train(y->data, mean, rstd, running_mean, running_var, x->data,
                                    gamma->data, beta->data, N, C, HW, momentum, eps);
    } else {
        qat_batchnorm_forward_eval(y->data, x->data, gamma->data, beta->data, running_mean,
                                   running_var, N, C, HW, eps);
    }
    if (grad) {
        bn_ctx *c = qat_tape_record(t, bn_backward, sizeof *c, "batchnorm");
        if (!c) return NULL;
        *c = (bn_ctx){x, gamma, beta, y, mean, rstd, running_mean, running_var, eps,
                      N, C, HW, t->training};
    }
    return y;
}
