#include "pool.h"

#include <string.h>

bool qat_pool_shape_init(qat_pool_shape *s) {
    if (s->K < 1 || s->stride < 1 || s->pad < 0 || s->pad > s->K / 2) return false;
    if (s->H + 2 * s->pad < s->K || s->W + 2 * s->pad < s->K) return false;
    s->OH = (s->H + 2 * s->pad - s->K) / s->stride + 1;
    s->OW = (s->W + 2 * s->pad - s->K) / s->stride + 1;
    return true;
}

/* inp (N, C, H, W) -> out, argmax (N, C, OH, OW).
 * NaN handling: `v > best || v != v` takes a NaN, and once best is NaN no number
 * replaces it (v > NaN is false), so a NaN in the window propagates, as in PyTorch. */
/* The common 2x2, stride 2, no padding case: four candidates, compared in a fixed
 * order (first maximum wins, a NaN wins), no bounds to check. */
static void maxpool_2x2(float *out, int32_t *argmax, const float *inp, const qat_pool_shape *s) {
    const size_t planes = (size_t)s->N * s->C;
    for (size_t pl = 0; pl < planes; pl++) {
        const float *x = inp + pl * s->H * s->W;
        float *y = out + pl * s->OH * s->OW;
        int32_t *am = argmax + pl * s->OH * s->OW;
        for (int oy = 0; oy < s->OH; oy++) {
            const float *r0 = x + 2 * oy * s->W, *r1 = r0 + s->W;
            const int32_t base = 2 * oy * s->W;
            for (int ox = 0; ox < s->OW; ox++) {
                float best = r0[2 * ox];
                int32_t where = base + 2 * ox;
                float v = r0[2 * ox + 1];
                bool take = (v > best) | (v != v);
                best = take ? v : best;
                where = take ? base + 2 * ox + 1 : where;
                v = r1[2 * ox];
                take = (v > best) | (v != v);
                best = take ? v : best;
                where = take ? base + s->W + 2 * ox : where;
                v = r1[2 * ox + 1];
                take = (v > best) | (v != v);
                best = take ? v : best;
                where = take ? base + s->W + 2 * ox + 1 : where;
                y[oy * s->OW + ox] = best;
                am[oy * s->OW + ox] = where;
            }
        }
    }
}

void qat_maxpool_forward(float *out, int32_t *argmax, const float *inp, const qat_pool_shape *s) {
    if (s->K == 2 && s->stride == 2 && s->pad == 0) {
        maxpool_2x2(out, argmax, inp, s);
        return;
    }
    const size_t planes = (size_t)s->N * s->C;
    for (size_t pl = 0; pl < planes; pl++) {
        const float *x = inp + pl * s->H * s->W;
        float *y = out + pl * s->OH * s->OW;
        int32_t *am = argmax + pl * s->OH * s->OW;
        for (int oy = 0; oy < s->OH; oy++) {
            /* The window rows and columns that fall inside the input. */
            const int y0 = oy * s->stride - s->pad;
            const int i0 = y0 < 0 ? -y0 : 0, i1 = QAT_MIN(s->K, s->H - y0);
            for (int ox = 0; ox < s->OW; ox++) {
                const int x0 = ox * s->stride - s->pad;
                const int j0 = x0 < 0 ? -x0 : 0, j1 = QAT_MIN(s->K, s->W - x0);
                int32_t where = (y0 + i0) * s->W + x0 + j0;
                float best = x[where];
                for (int i = i0; i < i1; i++) {
                    const float *row = x + (y0 + i) * s->W + x0;
                    for (int j = j0; j < j1; j++) {
                        /* Selects, not a branch: which element wins is data-dependent
                         * and a branch on it mispredicts often. */
                        float v = row[j];
                        bool take = (v > best) | (v != v);
                        best = take ? v : best;
                        where = take ? (y0 + i) * s->W + x0 + j : where;
                    }
                }
                y[oy * s->OW + ox] = best;
                am[oy * s->OW + ox] = where;
            }
        }
    }
}

void qat_maxpool_backward(float *dinp, const float *dout, const int32_t *argmax,
                          const qat_pool_shape *s) {
    const size_t planes = (size_t)s->N * s->C;
    const size_t osz = (size_t)s->OH * s->OW;
    for (size_t pl = 0; pl < planes; pl++) {
        float *dx = dinp + pl * s->H * s->W;
        for (size_t o = 0; o < osz; o++) dx[argmax[pl * osz + o]] += dout[pl * osz + o];
    }
}

void qat_avgpool_forward(float *out, const float *inp, const qat_pool_shape *s) {
    const size_t planes = (size_t)s->N * s->C;
    const float inv = 1.0f / (float)(s->K * s->K);
    for (size_t pl = 0; pl < planes; pl++) {
        const float *x = inp + pl * s->H * s->W;
        float *y = out + pl * s->OH * s->OW;
        for (int oy = 0; oy < s->OH; oy++)
            for (int ox = 0; ox < s->OW; ox++) {
                float sum = 0.0f;
                for (int i = 0; i < s->K; i++) {
                    int iy = oy * s->stride - s->pad + i;
                    if (iy < 0 || iy >= s->H) continue;
                    for (int j = 0; j < s->K; j++) {
                        int ix = ox * s->stride - s->pad + j;
                        if (ix >= 0 && ix < s->W) sum += x[iy * s->W + ix];
                    }
                }
                y[oy * s->OW + ox] = sum * inv;
            }
    }
}

void qat_avgpool_backward(float *dinp, const float *dout, const qat_pool_shape *s) {
    const size_t planes = (size_t)s->N * s->C;
    const float inv = 1.0f / (float)(s->K * s->K);
    for (size_t pl = 0; pl < planes; pl++) {
        float *dx = dinp + pl * s->H * s->W;
        const float *dy = dout + pl * s->OH * s->OW;
        for (int oy = 0; oy < s->OH; oy++)
            for (int ox = 0; ox < s->OW; ox++) {
                float g = dy[oy * s->OW + ox] * inv;
                for (int i = 0; i < s->K; i++) {
                    int iy = oy * s->stride - s->pad + i;
                    if (iy < 0 || iy >= s->H) continue;
                    for (int j = 0; j < s->K; j++) {
                        int ix = ox * s->stride - s->pad + j;
                        if (ix >= 0 && ix < s->W) dx[iy * s->W + ix] += g;
                    }
                }
            }
    }
}

void qat_global_avgpool_forward(float *out, const float *inp, int N, int C, int HW) {
    for (size_t pl = 0; pl < (size_t)N * C; pl++) {
        const float *x = inp + pl * HW;
        float sum = 0.0f;
        for (int i = 0; i < HW; i++) sum += x[i];
        out[pl] = sum / (float)HW;
    }
}

void qat_global_avgpool_backward(float *dinp, const float *dout, int N, int C, int HW) {
    for (size_t pl = 0; pl < (size_t)N * C; pl++) {
        float g = dout[pl] / (float)HW;
        float *dx = dinp + pl * HW;
        for (int i = 0; i < HW; i++) dx[i] += g;
    }
}

typedef struct pool_ctx {
    qat_tensor *x, *y;
    qat_pool_shape s;
    int32_t *argmax; /* max pool only */
} pool_ctx;

static void maxpool_backward(qat_tape *t, void *p) {
    pool_ctx *c = p;
    qat_maxpool_backward(c->x->grad, c->y->grad, c->argmax, &c->s);
}

static void avgpool_backward(qat_tape *t, void *p) {
    pool_ctx *c = p;
    qat_avgpool_backward(c->x->grad, c->y->grad, &c->s);
}

static void global_avgpool_backward(qat_tape *t, void *p) {
    pool_ctx *c = p;
    qat_global_avgpool_backward(c->x->grad, c->y->grad, c->s.N, c->s.C, c->s.H * c->s.W);
}

/* Shared checks and output allocation of the three pools. */
static qat_tensor *pool_begin(qat_tape *t, qat_tensor *x, qat_pool_shape *s, const char *op) {
    char sx[64];
    if (x->ndim != 4)
        return qat_tape_fail(t, QAT_STATUS_SHAPE, "%s: input must be (N, C, H, W), got %s", op,
                             qat_tensor_shape_str(x, sx, sizeof sx));
    s->N = x->shape[0];
    s->C = x->shape[1];
    s->H = x->shape[2];
    s->W = x->shape[3];
    if (!qat_pool_shape_init(s))
        return qat_tape_fail(t, QAT_STATUS_SHAPE,
                             "%s: window %d, stride %d, padding %d do not fit input %s "
                             "(need kernel >= 1, stride >= 1, 0 <= padding <= kernel/2, "
                             "window within the padded input)",
                             op, s->K, s->stride, s->pad, qat_tensor_shape_str(x, sx, sizeof sx));
    return qat_tape_tensor(t, 4, (int[]){s->N, s->C, s->OH, s->OW},
                           qat_tape_needs_grad(t, x, NULL, NULL));
}

qat_tensor *qat_maxpool2d(qat_tape *t, qat_tensor *x, int kernel, int stride, int pad) {
    if (!x) return NULL;
    qat_pool_shape s = {.K = kernel, .stride = stride, .pad = pad};
    qat_tensor *y = pool_begin(t, x, &s, "maxpool2d");
    if (!y) return NULL;
    int32_t *argmax = qat_tape_alloc(t, y->n * sizeof(int32_t));
    if (!argmax) return NULL;
    qat_maxpool_forward(y->data, argmax, x->data, &s);
    if (y->grad) {
        pool_ctx *c = qat_tape_record(t, maxpool_backward, sizeof *c, "maxpool2d");
        if (!c) return NULL;
        *c = (pool_ctx){x, y, s, argmax};
    }
    return y;
}

qat_tensor *qat_avgpool2d(qat_tape *t, qat_tensor *x, int kernel, int stride, int pad) {
    if (!x) return NULL;
    qat_pool_shape s = {.K = kernel, .stride = stride, .pad = pad};
    qat_tensor *y = pool_begin(t, x, &s, "avgpool2d");
    if (!y) return NULL;
    qat_avgpool_forward(y->data, x->data, &s);
    if (y->grad) {
        pool_ctx *c = qat_tape_record(t, avgpool_backward, sizeof *c, "avgpool2d");
        if (!c) return NULL;
        *c = (pool_ctx){x, y, s, NULL};
    }
    return y;
}

qat_tensor *qat_global_avgpool(qat_tape *t, qat_tensor *x) {
    if (!x) return NULL;
    char sx[64];
    if (x->ndim != 4)
        return qat_tape_fail(t, QAT_STATUS_SHAPE,
                             "global_avgpool: input must be (N, C, H, W), got %s",
                             qat_tensor_shape_str(x, sx, sizeof sx));
    qat_pool_shape s = {.N = x->shape[0], .C = x->shape[1], .H = x->shape[2], .W = x->shape[3]};
    bool grad = qat_tape_needs_grad(t, x, NULL, NULL);
    qat_tensor *y = qat_tape_tensor(t, 2, (int[]){s.N, s.C}, grad);
    if (!y) return NULL;
    qat_global_avgpool_forward(y->data, x->data, s.N, s.C, s.H * s.W);
    if (grad) {
        pool_ctx *c = qat_tape_record(t, global_avgpool_backward, sizeof *c, "global_avgpool");
        if (!c) return NULL;
        *c = (pool_ctx){x, y, s, NULL};
    }
    return y;
}
