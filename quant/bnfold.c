#include "bnfold.h"

#include <math.h>
#include <string.h>

#include "layers/batchnorm.h"

/* The running statistics change later in the same step (training-mode batch norm updates
 * them in its forward), so each backward works from a copy taken at forward time. */
static const float *saved(qat_tape *t, const float *v, int n) {
    float *c = qat_tape_alloc(t, (size_t)n * sizeof(float));
    if (c) memcpy(c, v, (size_t)n * sizeof(float));
    return c;
}

/* false (the tape's error set) when a per-channel tensor does not have c channels. */
static bool check_channels(qat_tape *t, const char *op, const qat_tensor *gamma, int c) {
    if (gamma->n == (size_t)c) return true;
    qat_tape_fail(t, QAT_STATUS_SHAPE, "%s: %zu batch-norm channels for %d output channels", op,
                  gamma->n, c);
    return false;
}

/* ---- weight: (C, K) -> (C, K) ---- */

typedef struct wctx {
    qat_tensor *w, *gamma, *y;
    const float *var;
    float eps;
} wctx;

static void weight_backward(qat_tape *t, void *p) {
    wctx *c = p;
    int C = c->w->shape[0];
    size_t K = c->w->n / (size_t)C;
    for (int o = 0; o < C; o++) {
        float inv_std = 1.0f / sqrtf(c->var[o] + c->eps), f = c->gamma->data[o] * inv_std;
        const float *dy = c->y->grad + (size_t)o * K, *w = c->w->data + (size_t)o * K;
        double dg = 0;
        if (c->w->grad) {
            float *dw = c->w->grad + (size_t)o * K;
            for (size_t k = 0; k < K; k++) dw[k] += dy[k] * f;
        }
        for (size_t k = 0; k < K; k++) dg += (double)dy[k] * w[k];
        if (c->gamma->grad) c->gamma->grad[o] += (float)dg * inv_std;
    }
}

qat_tensor *qat_bnfold_weight(qat_tape *t, qat_tensor *w, qat_tensor *gamma, const float *var, float eps) {
    if (!w || !gamma) return NULL;
    int C = w->shape[0];
    if (!check_channels(t, "bnfold_weight", gamma, C)) return NULL;
    bool grad = qat_tape_needs_grad(t, w, gamma, NULL);
    qat_tensor *y = qat_tape_tensor(t, w->ndim, w->shape, grad);
    if (!y) return NULL;
    size_t K = w->n / (size_t)C;
    for (int o = 0; o < C; o++) {
        float f = gamma->data[o] / sqrtf(var[o] + eps);
        for (size_t k = 0; k < K; k++) y->data[(size_t)o * K + k] = w->data[(size_t)o * K + k] * f;
    }
    if (grad) {
        wctx *c = qat_tape_record(t, weight_backward, sizeof *c, "bnfold_weight");
        if (!c) return NULL;
        *c = (wctx){w, gamma, y, saved(t, var, C), eps};
        if (!c->var) return NULL;
    }
    return y;
}

/* ---- bias: (C) ---- */

typedef struct bctx {
    qat_tensor *b, *gamma, *beta, *y;
    const float *mean, *var;
    float eps;
} bctx;

static void bias_backward(qat_tape *t, void *p) {
    bctx *c = p;
    for (size_t o = 0; o < c->y->n; o++) {
        float inv_std = 1.0f / sqrtf(c->var[o] + c->eps), dy = c->y->grad[o];
        float b = c->b ? c->b->data[o] : 0.0f;
        if (c->beta->grad) c->beta->grad[o] += dy;
        if (c->gamma->grad) c->gamma->grad[o] += dy * (b - c->mean[o]) * inv_std;
        if (c->b && c->b->grad) c->b->grad[o] += dy * c->gamma->data[o] * inv_std;
    }
}

qat_tensor *qat_bnfold_bias(qat_tape *t, qat_tensor *b, qat_tensor *gamma, qat_tensor *beta,
                            const float *mean, const float *var, float eps) {
    if (!gamma || !beta) return NULL;
    int C = (int)gamma->n;
    if (!check_channels(t, "bnfold_bias", beta, C)) return NULL;
    if (b && !check_channels(t, "bnfold_bias", b, C)) return NULL;
    bool grad = qat_tape_needs_grad(t, b, gamma, beta);
    qat_tensor *y = qat_tape_tensor(t, 1, (int[]){C}, grad);
    if (!y) return NULL;
    for (int o = 0; o < C; o++)
        y->data[o] = beta->data[o] + ((b ? b->data[o] : 0.0f) - mean[o]) * (gamma->data[o] / sqrtf(var[o] + eps));
    if (grad) {
        bctx *c = qat_tape_record(t, bias_backward, sizeof *c, "bnfold_bias");
        if (!c) return NULL;
        *c = (bctx){b, gamma, beta, y, saved(t, mean, C), saved(t, var, C), eps};
        if (!c->mean || !c->var) return NULL;
    }
    return y;
}

/* ---- unscale: y (N, C, S) -> y * std / gamma + b ---- */

typedef struct uctx {
    qat_tensor *x, *gamma, *b, *y;
    const float *var;
    float eps;
} uctx;

static void unscale_backward(qat_tape *t, void *p) {
    uctx *c = p;
    int N = c->x->shape[0], C = c->x->shape[1];
    size_t S = c->x->n / ((size_t)N * C);
    for (int o = 0; o < C; o++) {
        float std = sqrtf(c->var[o] + c->eps), g = c->gamma->data[o], r = std / g;
        double dr = 0, db = 0;
        for (int n = 0; n < N; n++) {
            size_t off = ((size_t)n * C + o) * S;
            const float *dy = c->y->grad + off, *x = c->x->data + off;
            if (c->x->grad) {
                float *dx = c->x->grad + off;
                for (size_t s = 0; s < S; s++) dx[s] += dy[s] * r;
            }
            for (size_t s = 0; s < S; s++) {
                dr += (double)dy[s] * x[s];
                db += dy[s];
            }
        }
        /* d(std / gamma) / d gamma = -std / gamma^2 */
        if (c->gamma->grad) c->gamma->grad[o] += (float)(dr * (-r / g));
        if (c->b && c->b->grad) c->b->grad[o] += (float)db;
    }
}

qat_tensor *qat_bnfold_unscale(qat_tape *t, qat_tensor *x, qat_tensor *gamma, const float *var, float eps,
                               qat_tensor *b) {
    if (!x || !gamma) return NULL;
    if (x->ndim < 2) return qat_tape_fail(t, QAT_STATUS_SHAPE, "bnfold_unscale: input needs (N, C, ...)");
    int N = x->shape[0], C = x->shape[1];
    if (!check_channels(t, "bnfold_unscale", gamma, C)) return NULL;
    if (b && !check_channels(t, "bnfold_unscale", b, C)) return NULL;
    bool grad = qat_tape_needs_grad(t, x, gamma, b);
    qat_tensor *y = qat_tape_tensor(t, x->ndim, x->shape, grad);
    if (!y) return NULL;
    size_t S = x->n / ((size_t)N * C);
    for (int o = 0; o < C; o++) {
        float r = sqrtf(var[o] + eps) / gamma->data[o], bb = b ? b->data[o] : 0.0f;
        for (int n = 0; n < N; n++) {
            size_t off = ((size_t)n * C + o) * S;
            for (size_t s = 0; s < S; s++) y->data[off + s] = x->data[off + s] * r + bb;
        }
    }
    if (grad) {
        uctx *c = qat_tape_record(t, unscale_backward, sizeof *c, "bnfold_unscale");
        if (!c) return NULL;
        *c = (uctx){x, gamma, b, y, saved(t, var, C), eps};
        if (!c->var) return NULL;
    }
    return y;
}

/* ---- unscale + training batch norm in one op: y (N, C, S) ---- */

typedef struct ubctx {
    qat_tensor *x, *gamma, *beta, *b, *y;
    float *r, *bb;      /* the unscale's per-channel factor and shift, at forward time */
    float *mean, *rstd; /* batch statistics of x * r + bb */
    float *da, *db;     /* scratch (C): sum dx' x and sum dx' */
    int N, C, S;
    bool shared;
} ubctx;

static void unscale_bn_backward(qat_tape *t, void *p) {
    ubctx *c = p;
    qat_batchnorm_backward_train_pre(c->x->grad, c->da, c->db, c->gamma->grad, c->beta->grad,
                                     c->y->grad, c->x->data, c->r, c->bb, c->gamma->data, c->mean,
                                     c->rstd, c->N, c->C, c->S, c->shared);
    for (int o = 0; o < c->C; o++) {
        /* The unscale's own terms, as unscale_backward: d(std / gamma) / d gamma =
         * -std / gamma^2 = -r / gamma. */
        float g = c->gamma->data[o];
        if (c->gamma->grad) c->gamma->grad[o] += (float)((double)c->da[o] * (-c->r[o] / g));
        if (c->b && c->b->grad) c->b->grad[o] += c->db[o];
    }
}

qat_tensor *qat_bnfold_batchnorm(qat_tape *t, qat_tensor *x, qat_tensor *gamma, qat_tensor *beta,
                                 float *running_mean, float *running_var, float momentum,
                                 float eps, qat_tensor *b, bool reuse_grad) {
    if (!x || !gamma || !beta) return NULL;
    if (x->ndim < 2) return qat_tape_fail(t, QAT_STATUS_SHAPE, "bnfold_batchnorm: input needs (N, C, ...)");
    int N = x->shape[0], C = x->shape[1];
    if (!check_channels(t, "bnfold_batchnorm", gamma, C) || !check_channels(t, "bnfold_batchnorm", beta, C))
        return NULL;
    if (b && !check_channels(t, "bnfold_batchnorm", b, C)) return NULL;
    size_t S = x->n / ((size_t)N * C);
    if ((size_t)N * S < 2)
        return qat_tape_fail(t, QAT_STATUS_SHAPE,
                             "bnfold_batchnorm: training needs more than one value per channel");
    bool grad = qat_tape_needs_grad(t, x, gamma, b) || (beta->grad && t->grad_enabled);
    bool shared = grad && reuse_grad && x->grad;
    qat_tensor *y = qat_tape_tensor(t, x->ndim, x->shape, grad && !shared);
    float *buf = qat_tape_alloc(t, 6 * (size_t)C * sizeof(float));
    if (!y || !buf) return NULL;
    if (shared) y->grad = x->grad;
    float *r = buf, *bb = buf + C, *mean = buf + 2 * C, *rstd = buf + 3 * C;
    for (int o = 0; o < C; o++) {
        r[o] = sqrtf(running_var[o] + eps) / gamma->data[o];
        bb[o] = b ? b->data[o] : 0.0f;
    }
    qat_batchnorm_forward_train_pre(y->data, mean, rstd, running_mean, running_var, x->data, r, bb,
                                    gamma->data, beta->data, N, C, (int)S, momentum, eps);
    if (grad) {
        ubctx *c = qat_tape_record(t, unscale_bn_backward, sizeof *c, "bnfold_batchnorm");
        if (!c) return NULL;
        *c = (ubctx){x, gamma, beta, b, y, r, bb, mean, rstd, buf + 4 * C, buf + 5 * C,
                     N, C, (int)S, shared};
    }
    return y;
}
