#include "fake_quant.h"

#include <string.h>

#include "autograd/parallel.h"
#include "round.h"


void qat_qparams_from_range(float lo, float hi, int qmin, int qmax, bool symmetric, float *scale,
                            int32_t *zero_point) {
    QAT_ASSERT(qmin < qmax);
    /* Widen to include 0, so that real 0 (padding, ReLU's floor) is exactly a level.
     * `!(lo < 0)` also maps a NaN bound to 0. */
    if (!(lo < 0.0f)) lo = 0.0f;
    if (!(hi > 0.0f)) hi = 0.0f;
    float s;
    int32_t z = 0;
    if (symmetric) {
        float m = -lo > hi ? -lo : hi;
        s = m / (float)qmax;
    } else {
        s = (hi - lo) / (float)(qmax - qmin);
    }
    /* Degenerate (or overflowing) ranges: any positive scale will do, the spec says 1. */
    if (!(s > 0.0f) || !isfinite(s)) s = 1.0f;
    if (!symmetric) {
        float zf = (float)qmin - roundf(lo / s);
        zf = zf < (float)qmin ? (float)qmin : zf;
        zf = zf > (float)qmax ? (float)qmax : zf;
        z = (int32_t)zf;
    }
    *scale = s;
    *zero_point = z;
}

size_t qat_fq_n_scales(int rows, size_t inner, int group) {
    size_t per_row = group > 0 ? (inner + (size_t)group - 1) / (size_t)group : 1;
    return (size_t)rows * per_row;
}

/* Visits each group: [begin, begin + len) of the flat array uses scale index k. */
#define FOR_EACH_GROUP(rows, inner, group, ...)                                     \
    do {                                                                             \
        size_t g_len_ = (group) > 0 ? (size_t)(group) : (inner);                     \
        size_t k = 0;                                                                \
        for (int r_ = 0; r_ < (rows); r_++)                                          \
            for (size_t j_ = 0; j_ < (inner); j_ += g_len_, k++) {                   \
                size_t begin = (size_t)r_ * (inner) + j_;                            \
                size_t len = (inner) - j_ < g_len_ ? (inner) - j_ : g_len_;          \
                __VA_ARGS__                                                          \
            }                                                                        \
    } while (0)

/* One group, y = s * round(clamp(x / s, lo, hi)) with lo = qmin - zp <= 0 <= hi = qmax - zp:
 * clamp(round(t) + zp, qmin, qmax) - zp == round(clamp(t, lo, hi)) because the bounds are
 * integers and rounding is monotone and fixes integers. The compares are written as
 * minps/maxps behave (a NaN t becomes hi), so the loop has no calls or branches and
 * vectorises; "+ (t - t)" then makes the result NaN for a NaN or infinite input, as
 * qat_fake_quantize does (round.h needs |t| < 2^23 for its conversion; the caller checks
 * the bounds). */
static void fq_group(float *y, const float *x, size_t n, float s, float lo, float hi) {
    for (size_t i = 0; i < n; i++) {
        float t = x[i] / s;
        float c = t < hi ? t : hi;
        c = c > lo ? c : lo;
        y[i] = s * qat_round_half_away(c) + (t - t);
    }
}

/* The STE mask: round(t) in [lo, hi] <=> lo - 0.5 < t < hi + 0.5 for integer bounds
 * lo <= 0 <= hi under rounding half away from zero (t = hi + 0.5 > 0 rounds up to
 * hi + 1, t = lo - 0.5 < 0 down to lo - 1); a NaN fails both compares. */
static void fq_group_backward(float *dx, const float *dy, const float *x, size_t n, float s, float lo, float hi) {
    const float a = lo - 0.5f, b = hi + 0.5f;
    for (size_t i = 0; i < n; i++) {
        float t = x[i] / s, g = dy[i];
        dx[i] += ((t > a) & (t < b)) ? g : 0.0f;
    }
}
/* The same mask, written over dy (dx may be dy). */
static void fq_group_mask(float *dx, const float *dy, const float *x, size_t n, float s, float lo, float hi) {
    const float a = lo - 0.5f, b = hi + 0.5f;
    for (size_t i = 0; i < n; i++) {
        float t = x[i] / s, g = dy[i];
        dx[i] = ((t > a) & (t < b)) ? g : 0.0f;
    }
}

/* The groups are walked in parts of the flat array, so large tensors (activations: one
 * group of the whole batch) are split across threads; elementwise, so any split gives
 * the same bits. */
typedef struct fq_job {
    float *out;
    const float *inp, *dout, *scale;
    const int32_t *zp;
    size_t inner, glen, gpr; /* elements per row, per group, groups per row */
    int qmin, qmax;
    bool overwrite; /* backward: dinp = masked dout (dinp may equal dout) */
} fq_job;

QAT_HOT static void fq_forward_span(const fq_job *j, size_t begin, size_t len, size_t k) {
    const float s = j->scale[k], z = (float)j->zp[k];
    const float lo = (float)j->qmin - z, hi = (float)j->qmax - z;
    if (hi < 8388608.0f && lo > -8388608.0f) {
        fq_group(j->out + begin, j->inp + begin, len, s, lo, hi);
    } else { /* int32 biases: the plain formula */
        for (size_t i = 0; i < len; i++)
            j->out[begin + i] =
                qat_fake_quantize(j->inp[begin + i], s, z, (float)j->qmin, (float)j->qmax);
    }
}

/* Visits the groups that meet [b, e): span [i, stop) of group k. */
QAT_HOT static void fq_walk(const fq_job *j, size_t b, size_t e, bool backward) {
    size_t i = b;
    while (i < e) {
        size_t r = i / j->inner, in = i % j->inner, g = in / j->glen;
        size_t gend = r * j->inner + QAT_MIN((g + 1) * j->glen, j->inner);
        size_t stop = QAT_MIN(gend, e), k = r * j->gpr + g;
        if (backward) {
            const float z = (float)j->zp[k];
            if (j->overwrite)
                fq_group_mask(j->out + i, j->dout + i, j->inp + i, stop - i, j->scale[k],
                              (float)j->qmin - z, (float)j->qmax - z);
            else
                fq_group_backward(j->out + i, j->dout + i, j->inp + i, stop - i, j->scale[k],
                                  (float)j->qmin - z, (float)j->qmax - z);
        } else {
            fq_forward_span(j, i, stop - i, k);
        }
        i = stop;
    }
}

static void fq_forward_part(void *p, size_t b, size_t e) { fq_walk(p, b, e, false); }
static void fq_backward_part(void *p, size_t b, size_t e) { fq_walk(p, b, e, true); }

#define FQ_GRAIN 16384

/* inp, out are (rows, inner); scale, zp are (rows, groups per row) */
void qat_fake_quant_forward(float *out, const float *inp, const float *scale, const int32_t *zp,
                            int rows, size_t inner, int group, int qmin, int qmax) {
    if (rows < 1 || inner == 0) return;
    size_t glen = group > 0 ? (size_t)group : inner;
    fq_job j = {.out = out, .inp = inp, .scale = scale, .zp = zp, .inner = inner, .glen = glen,
                .gpr = qat_fq_n_scales(1, inner, group), .qmin = qmin, .qmax = qmax};
    qat_parallel_for((size_t)rows * inner, FQ_GRAIN, fq_forward_part, &j);
}

static void fake_quant_backward(float *dinp, const float *dout, const float *inp,
                                const float *scale, const int32_t *zp, int rows, size_t inner,
                                int group, int qmin, int qmax, bool overwrite) {
    if (rows < 1 || inner == 0) return;
    size_t glen = group > 0 ? (size_t)group : inner;
    fq_job j = {.out = dinp, .dout = dout, .inp = inp, .scale = scale, .zp = zp, .inner = inner,
                .glen = glen, .gpr = qat_fq_n_scales(1, inner, group), .qmin = qmin,
                .qmax = qmax, .overwrite = overwrite};
    qat_parallel_for((size_t)rows * inner, FQ_GRAIN, fq_backward_part, &j);
}

void qat_fake_quant_backward(float *dinp, const float *dout, const float *inp, const float *scale,
                             const int32_t *zp, int rows, size_t inner, int group, int qmin, int qmax) {
    fake_quant_backward(dinp, dout, inp, scale, zp, rows, inner, group, qmin, qmax, false);
}

/* qat_max_abs: max |x[i]| over n values, NaN ignored (a > m is false for it). In 16 explicit lanes
 * so that it vectorises without -ffast-math; the maximum of exact values does not depend
 * on the order it is taken in, so the result is the plain loop's, bit for bit. */
QAT_HOT float qat_max_abs(const float *x, size_t n) {
    enum { L = 16 };
    float m[L] = {0};
    size_t i = 0;
    for (; i + L <= n; i += L)
        for (int l = 0; l < L; l++) {
            float a = fabsf(x[i + l]);
            m[l] = a > m[l] ? a : m[l];
        }
    for (; i < n; i++) {
        float a = fabsf(x[i]);
        m[0] = a > m[0] ? a : m[0];
    }
    float r = 0.0f;
    for (int l = 0; l < L; l++) r = m[l] > r ? m[l] : r;
    return r;
}

void qat_fq_weight_scales(float *scale, int32_t *zp, const float *x, int rows, size_t inner, int group,
                          int qmax) {
    FOR_EACH_GROUP(rows, inner, group, {
        float m = qat_max_abs(x + begin, len);
        qat_qparams_from_range(-m, m, -qmax, qmax, true, &scale[k], &zp[k]);
    });
}

typedef struct fq_ctx {
    qat_tensor *x, *y;
    float *scale;
    int32_t *zp;
    int rows, group, qmin, qmax;
    bool shared; /* y->grad is x->grad: backward masks it in place */
} fq_ctx;

static void fq_backward(qat_tape *t, void *p) {
    fq_ctx *c = p;
    if (!c->x->grad) return;
    fake_quant_backward(c->x->grad, c->y->grad, c->x->data, c->scale, c->zp, c->rows,
                        c->x->n / (size_t)c->rows, c->group, c->qmin, c->qmax, c->shared);
}

qat_tensor *qat_fake_quant(qat_tape *t, qat_tensor *x, const float *scale, const int32_t *zp,
                           int rows, int group, int qmin, int qmax) {
    return qat_fake_quant_ex(t, x, scale, zp, rows, group, qmin, qmax, false);
}

qat_tensor *qat_fake_quant_ex(qat_tape *t, qat_tensor *x, const float *scale, const int32_t *zp,
                              int rows, int group, int qmin, int qmax, bool reuse_grad) {
    if (!x) return NULL;
    QAT_ASSERT(scale != NULL && zp != NULL && qmin < qmax);
    if (rows < 1 || x->n % (size_t)rows != 0 || group < 0)
        return qat_tape_fail(t, QAT_STATUS_SHAPE,
                             "fake_quant: %d rows (group %d) do not divide a tensor of %zu elements",
                             rows, group, x->n);
    size_t inner = x->n / (size_t)rows, ns = qat_fq_n_scales(rows, inner, group);
    for (size_t k = 0; k < ns; k++)
        if (!(scale[k] > 0.0f) || !isfinite(scale[k]))
            return qat_tape_fail(t, QAT_STATUS_NUMERIC,
                                 "fake_quant: scale %zu of %s is %g (must be positive and finite)", k,
                                 x->name ? x->name : "a tensor", (double)scale[k]);
    bool grad = qat_tape_needs_grad(t, x, NULL, NULL);
    bool shared = grad && reuse_grad;
    qat_tensor *y = qat_tape_tensor(t, x->ndim, x->shape, grad && !shared);
    if (!y) return NULL;
    if (shared) y->grad = x->grad;
    qat_fake_quant_forward(y->data, x->data, scale, zp, rows, inner, group, qmin, qmax);
    if (!grad) return y;
    fq_ctx *c = qat_tape_record(t, fq_backward, sizeof *c, "fake_quant");
    if (!c) return NULL;
    c->scale = qat_tape_alloc(t, ns * sizeof(float));
    c->zp = qat_tape_alloc(t, ns * sizeof(int32_t));
    if (!c->scale || !c->zp) return NULL;
    memcpy(c->scale, scale, ns * sizeof(float));
    memcpy(c->zp, zp, ns * sizeof(int32_t));
    *c = (fq_ctx){x, y, c->scale, c->zp, rows, group, qmin, qmax, shared};
    return y;
}

/* ---- average pools ---- */

typedef struct fq_pool_ctx {
    qat_tensor *y, *out;
} fq_pool_ctx;

static void fq_pool_backward(qat_tape *t, void *p) {
    fq_pool_ctx *c = p;
    if (!c->y->grad) return;
    for (size_t i = 0; i < c->y->n; i++) c->y->grad[i] += c->out->grad[i];
}

/* y, out: (N, C, OH, OW); x: (N, C, H, W). */
qat_tensor *qat_fake_quant_avgpool(qat_tape *t, qat_tensor *y, const qat_tensor *x, float scale,
                                   int kh, int kw, int stride, int pad) {
    if (!y || !x) return NULL;
    QAT_ASSERT(x->ndim == 4 && x->shape[0] == y->shape[0] && x->shape[1] == y->shape[1]);
    QAT_ASSERT(kh >= 1 && kw >= 1 && stride >= 1 && pad >= 0);
    if (!(scale > 0.0f) || !isfinite(scale))
        return qat_tape_fail(t, QAT_STATUS_NUMERIC, "fake_quant_avgpool: scale %g", (double)scale);
    const int NC = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    const size_t OHW = y->n / (size_t)NC;
    const int OW = y->ndim == 4 ? y->shape[3] : 1, OH = (int)(OHW / (size_t)OW);
    const int32_t n = kh * kw;
    bool grad = qat_tape_needs_grad(t, y, NULL, NULL);
    qat_tensor *out = qat_tape_tensor(t, y->ndim, y->shape, grad);
    if (!out) return NULL;
    for (int p = 0; p < NC; p++) {
        const float *xp = x->data + (size_t)p * H * W;
        float *op = out->data + (size_t)p * OHW;
        for (int oy = 0; oy < OH; oy++)
            for (int ox = 0; ox < OW; ox++) {
                int32_t d = 0; /* sum of q - z over the window; padding adds 0 */
                bool finite = true;
                for (int ky = 0; ky < kh; ky++) {
                    const int iy = oy * stride - pad + ky;
                    if (iy < 0 || iy >= H) continue;
                    for (int kx = 0; kx < kw; kx++) {
                        const int ix = ox * stride - pad + kx;
                        if (ix < 0 || ix >= W) continue;
                        /* |q - z| <= 255 on the grid; anything far off it (a NaN, an
                         * Inf) makes the output NaN, which the training loop's check
                         * sees, rather than an undefined conversion. */
                        const float v = roundf(xp[iy * W + ix] / scale);
                        if (!(fabsf(v) <= 65536.0f)) finite = false;
                        else d += (int32_t)v;
                    }
                }
                op[oy * OW + ox] = finite ? scale * (float)qat_div_round_s32(d, n) : NAN;
            }
    }
    if (!grad) return out;
    fq_pool_ctx *c = qat_tape_record(t, fq_pool_backward, sizeof *c, "fake_quant_avgpool");
    if (!c) return NULL;
    *c = (fq_pool_ctx){y, out};
    return out;
}
