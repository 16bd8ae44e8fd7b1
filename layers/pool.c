#include "pool.h"

#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "autograd/parallel.h"

bool qat_pool_shape_init(qat_pool_shape *s) {
    if (s->K < 1 || s->stride < 1 || s->pad < 0 || s->pad > s->K / 2) return false;
    if (s->H + 2 * s->pad < s->K || s->W + 2 * s->pad < s->K) return false;
    s->OH = (s->H + 2 * s->pad - s->K) / s->stride + 1;
    s->OW = (s->W + 2 * s->pad - s->K) / s->stride + 1;
    return true;
}

/* inp (N, C, H, W) -> out, argmax (N, C, OH, OW).
 * NaN handling: `v > best || v != v` takes a NaN, and once best is NaN no number
 * replaces it (v > NaN is false), so a NaN in the window propagates, as in PyTorch.
 * Planes are independent: threads share them out. */
typedef struct pool_job {
    float *out, *dinp;
    int32_t *argmax;
    const float *inp, *dout;
    const int32_t *cargmax;
    const qat_pool_shape *s;
} pool_job;

/* The common 2x2, stride 2, no padding case: four candidates, compared in a fixed
 * order (first maximum wins, a NaN wins), no bounds to check. With SSE2, four outputs
 * at a time: the same compares and selects on four lanes, so the same bits. */
void qat_maxpool_2x2_row(float *y, int32_t *am, const float *r0, const float *r1, int32_t base,
                         int W, int OW) {
    int ox = 0;
#ifdef __SSE2__
    const __m128i step = _mm_set1_epi32(8), one = _mm_set1_epi32(1), wv = _mm_set1_epi32(W);
    __m128i ia = _mm_add_epi32(_mm_set1_epi32(base), _mm_setr_epi32(0, 2, 4, 6));
    for (; ox + 4 <= OW; ox += 4) {
        __m128 p0 = _mm_loadu_ps(r0 + 2 * ox), p1 = _mm_loadu_ps(r0 + 2 * ox + 4);
        __m128 q0 = _mm_loadu_ps(r1 + 2 * ox), q1 = _mm_loadu_ps(r1 + 2 * ox + 4);
        __m128 a = _mm_shuffle_ps(p0, p1, _MM_SHUFFLE(2, 0, 2, 0));
        __m128 b = _mm_shuffle_ps(p0, p1, _MM_SHUFFLE(3, 1, 3, 1));
        __m128 c = _mm_shuffle_ps(q0, q1, _MM_SHUFFLE(2, 0, 2, 0));
        __m128 d = _mm_shuffle_ps(q0, q1, _MM_SHUFFLE(3, 1, 3, 1));
        __m128 best = a;
        __m128i where = ia;
        __m128 m = _mm_or_ps(_mm_cmpgt_ps(b, best), _mm_cmpunord_ps(b, b));
        best = _mm_or_ps(_mm_andnot_ps(m, best), _mm_and_ps(m, b));
        __m128i mi = _mm_castps_si128(m), ib = _mm_add_epi32(ia, one);
        where = _mm_or_si128(_mm_andnot_si128(mi, where), _mm_and_si128(mi, ib));
        m = _mm_or_ps(_mm_cmpgt_ps(c, best), _mm_cmpunord_ps(c, c));
        best = _mm_or_ps(_mm_andnot_ps(m, best), _mm_and_ps(m, c));
        mi = _mm_castps_si128(m);
        __m128i ic = _mm_add_epi32(ia, wv);
        where = _mm_or_si128(_mm_andnot_si128(mi, where), _mm_and_si128(mi, ic));
        m = _mm_or_ps(_mm_cmpgt_ps(d, best), _mm_cmpunord_ps(d, d));
        best = _mm_or_ps(_mm_andnot_ps(m, best), _mm_and_ps(m, d));
        mi = _mm_castps_si128(m);
        __m128i id = _mm_add_epi32(ic, one);
        where = _mm_or_si128(_mm_andnot_si128(mi, where), _mm_and_si128(mi, id));
        _mm_storeu_ps(y + ox, best);
        _mm_storeu_si128((__m128i *)(am + ox), where);
        ia = _mm_add_epi32(ia, step);
    }
#endif
    for (; ox < OW; ox++) {
        float best = r0[2 * ox];
        int32_t where = base + 2 * ox;
        float v = r0[2 * ox + 1];
        bool take = (v > best) | (v != v);
        best = take ? v : best;
        where = take ? base + 2 * ox + 1 : where;
        v = r1[2 * ox];
        take = (v > best) | (v != v);
        best = take ? v : best;
        where = take ? base + W + 2 * ox : where;
        v = r1[2 * ox + 1];
        take = (v > best) | (v != v);
        best = take ? v : best;
        where = take ? base + W + 2 * ox + 1 : where;
        y[ox] = best;
        am[ox] = where;
    }
}

static void maxpool_2x2(void *p, size_t pl0, size_t pl1) {
    const pool_job *j = p;
    const qat_pool_shape *s = j->s;
    for (size_t pl = pl0; pl < pl1; pl++) {
        const float *x = j->inp + pl * s->H * s->W;
        float *y = j->out + pl * s->OH * s->OW;
        int32_t *am = j->argmax + pl * s->OH * s->OW;
        for (int oy = 0; oy < s->OH; oy++) {
            const float *r0 = x + 2 * oy * s->W, *r1 = r0 + s->W;
            qat_maxpool_2x2_row(y + oy * s->OW, am + oy * s->OW, r0, r1, 2 * oy * s->W, s->W, s->OW);
        }
    }
}

static void maxpool_general(void *p, size_t pl0, size_t pl1) {
    const pool_job *j = p;
    const qat_pool_shape *s = j->s;
    for (size_t pl = pl0; pl < pl1; pl++) {
        const float *x = j->inp + pl * s->H * s->W;
        float *y = j->out + pl * s->OH * s->OW;
        int32_t *am = j->argmax + pl * s->OH * s->OW;
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
                    for (int jj = j0; jj < j1; jj++) {
                        /* Selects, not a branch: which element wins is data-dependent
                         * and a branch on it mispredicts often. */
                        float v = row[jj];
                        bool take = (v > best) | (v != v);
                        best = take ? v : best;
                        where = take ? (y0 + i) * s->W + x0 + jj : where;
                    }
                }
                y[oy * s->OW + ox] = best;
                am[oy * s->OW + ox] = where;
            }
        }
    }
}

/* Planes per part: about 16K input values at least. */
static size_t plane_grain(const qat_pool_shape *s) {
    size_t per = (size_t)s->H * s->W;
    return per >= 16384 ? 1 : (16384 + per - 1) / per;
}

void qat_maxpool_forward(float *out, int32_t *argmax, const float *inp, const qat_pool_shape *s) {
    pool_job j = {.out = out, .argmax = argmax, .inp = inp, .s = s};
    const size_t planes = (size_t)s->N * s->C;
    bool fast = s->K == 2 && s->stride == 2 && s->pad == 0;
    qat_parallel_for(planes, plane_grain(s), fast ? maxpool_2x2 : maxpool_general, &j);
}

QAT_HOT static void maxpool_backward_planes(void *p, size_t pl0, size_t pl1) {
    const pool_job *j = p;
    const qat_pool_shape *s = j->s;
    const size_t osz = (size_t)s->OH * s->OW;
    for (size_t pl = pl0; pl < pl1; pl++) {
        float *dx = j->dinp + pl * s->H * s->W;
        const int32_t *am = j->cargmax + pl * osz;
        const float *dy = j->dout + pl * osz;
        for (size_t o = 0; o < osz; o++) dx[am[o]] += dy[o];
    }
}

void qat_maxpool_backward(float *dinp, const float *dout, const int32_t *argmax,
                          const qat_pool_shape *s) {
    pool_job j = {.dinp = dinp, .dout = dout, .cargmax = argmax, .s = s};
    qat_parallel_for((size_t)s->N * s->C, plane_grain(s), maxpool_backward_planes, &j);
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
