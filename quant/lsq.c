#include "lsq.h"

#include <math.h>
#include <stdint.h>

#include "round.h"

static void check_range(int qmin, int qmax) {
    QAT_ASSERT(qmin < qmax);
    QAT_ASSERT(qmin >= -QAT_LSQ_QLIMIT && qmax <= QAT_LSQ_QLIMIT);
}

/* inp, out are (n_scales, n_per_scale); s is (n_scales) */
void qat_lsq_forward(float *out, const float *inp, const float *s, int n_scales,
                     size_t n_per_scale, int qmin, int qmax, size_t n) {
    check_range(qmin, qmax);
    QAT_ASSERT(n_scales >= 1 && (size_t)n_scales * n_per_scale == n);
    const float lo = (float)qmin, hi = (float)qmax;
    for (int c = 0; c < n_scales; c++) {
        const float sc = s[c];
        QAT_ASSERT(sc > 0.0f && isfinite(sc));
        const float *x = inp + (size_t)c * n_per_scale;
        float *y = out + (size_t)c * n_per_scale;
        /* One pass, no branches or calls: gcc -O3 vectorises it. The division is the
         * spec's (a multiply by 1 / s is not bit-exact; see qat_pact_forward). */
        for (size_t i = 0; i < n_per_scale; i++) {
            float t = x[i] / sc;
            /* clamp(round(t), qmin, qmax) == round(clamp(t, qmin, qmax)) for integer
             * bounds (round is monotone and fixes integers). tc, the clamp that sends
             * NaN to qmin, keeps the rounding helper's int conversion defined; tn, the
             * clamp that lets NaN through, puts it back: 1 + (tn - tn) is exactly 1 for
             * finite tn (so y keeps every bit, -0 included) and NaN for NaN. (A select,
             * isnan(x) ? x : ..., is not if-converted under -ftrapping-math and would
             * leave the loop scalar.) */
            float tc = t > lo ? t : lo;
            tc = tc < hi ? tc : hi;
            float tn = t < lo ? lo : t;
            tn = tn > hi ? hi : tn;
            y[i] = qat_round_half_away(tc) * sc * (1.0f + (tn - tn));
        }
    }
}

/* dout, inp, dinp are (n_scales, n_per_scale); s, ds are (n_scales) */
void qat_lsq_backward(float *dinp, float *ds, const float *dout, const float *inp,
                      const float *s, int n_scales, size_t n_per_scale, int qmin, int qmax,
                      float grad_scale) {
    check_range(qmin, qmax);
    QAT_ASSERT(n_scales >= 1);
    const float lo = (float)qmin, hi = (float)qmax;
    for (int c = 0; c < n_scales; c++) {
        const float sc = s[c];
        const size_t off = (size_t)c * n_per_scale;
        const float *x = inp + off, *dy = dout + off;
        /* t is recomputed with the forward's division, so the mask and the rounding
         * error belong to the very integer the forward produced. */
        if (dinp) {
            float *dx = dinp + off;
            for (size_t i = 0; i < n_per_scale; i++) {
                float t = x[i] / sc, g = dy[i];
                dx[i] += ((t > lo) & (t < hi)) ? g : 0.0f;
            }
        }
        if (ds) {
            /* dy/ds: round(t) - t inside (exact: |round(t) - t| <= 0.5 and Sterbenz),
             * the clamped level outside. Summed in double: a channel can hold a whole
             * activation tensor. */
            double acc = 0.0;
            for (size_t i = 0; i < n_per_scale; i++) {
                float t = x[i] / sc;
                float tc = t > lo ? t : lo;
                tc = tc < hi ? tc : hi;
                float d = ((t > lo) & (t < hi)) ? qat_round_half_away(tc) - t : tc;
                acc += (double)dy[i] * (double)d;
            }
            ds[c] += (float)((double)grad_scale * acc);
        }
    }
}

float qat_lsq_grad_scale(size_t n_per_scale, int qmax) {
    QAT_ASSERT(n_per_scale >= 1 && qmax >= 1);
    return (float)(1.0 / sqrt((double)n_per_scale * (double)qmax));
}

/* x is (n_scales, n_per_scale); s is (n_scales) */
void qat_lsq_init_scale(float *s, const float *x, int n_scales, size_t n_per_scale, int qmax) {
    QAT_ASSERT(n_scales >= 1 && n_per_scale >= 1 && qmax >= 1);
    for (int c = 0; c < n_scales; c++) {
        const float *xc = x + (size_t)c * n_per_scale;
        double sum = 0.0;
        for (size_t i = 0; i < n_per_scale; i++) sum += fabs((double)xc[i]);
        float v = (float)(2.0 * (sum / (double)n_per_scale) / sqrt((double)qmax));
        /* All zeros (or so small that the step underflows): any positive step will do,
         * and the spec says 1. A NaN stays, for qat_lsq to report. */
        s[c] = v == 0.0f ? 1.0f : v;
    }
}

typedef struct lsq_ctx {
    qat_tensor *x, *s, *y;
    int n_scales, qmin, qmax;
    float grad_scale;
} lsq_ctx;

static void lsq_backward(qat_tape *t, void *p) {
    lsq_ctx *c = p;
    qat_lsq_backward(c->x->grad, c->s->grad, c->y->grad, c->x->data, c->s->data, c->n_scales,
                     c->x->n / (size_t)c->n_scales, c->qmin, c->qmax, c->grad_scale);
}

qat_tensor *qat_lsq(qat_tape *t, qat_tensor *x, qat_tensor *s, int qmin, int qmax,
                    float grad_scale) {
    if (!x || !s) return NULL;
    int n_scales;
    if (s->n == 1) {
        n_scales = 1;
    } else if (s->n == (size_t)x->shape[0]) {
        n_scales = x->shape[0];
    } else {
        char sx[64], ss[64];
        return qat_tape_fail(t, QAT_STATUS_SHAPE,
                             "lsq: step size %s does not fit input %s: it needs 1 element "
                             "(per tensor) or %d (one per channel, the input's first dimension)",
                             qat_tensor_shape_str(s, ss, sizeof ss),
                             qat_tensor_shape_str(x, sx, sizeof sx), x->shape[0]);
    }
    if (qmin >= qmax || qmin < -QAT_LSQ_QLIMIT || qmax > QAT_LSQ_QLIMIT)
        return qat_tape_fail(t, QAT_STATUS_INVALID_ARG,
                             "lsq: integer range [%d, %d] is invalid; it needs qmin < qmax, "
                             "both within [-%d, %d]",
                             qmin, qmax, QAT_LSQ_QLIMIT, QAT_LSQ_QLIMIT);
    if (!(grad_scale >= 0.0f) || !isfinite(grad_scale))
        return qat_tape_fail(t, QAT_STATUS_INVALID_ARG,
                             "lsq: step gradient scale is %g; it must be finite and >= 0",
                             (double)grad_scale);
    for (int c = 0; c < n_scales; c++) {
        float v = s->data[c];
        if (!(v > 0.0f) || !isfinite(v))
            return qat_tape_fail(t, QAT_STATUS_NUMERIC,
                                 "lsq: step size of channel %d%s%s%s is %g; it must be finite "
                                 "and > 0 (training diverged? try a lower learning rate)",
                                 c, s->name ? " (" : "", s->name ? s->name : "",
                                 s->name ? ")" : "", (double)v);
    }
    bool grad = qat_tape_needs_grad(t, x, s, NULL);
    qat_tensor *y = qat_tape_tensor(t, x->ndim, x->shape, grad);
    if (!y) return NULL;
    qat_lsq_forward(y->data, x->data, s->data, n_scales, x->n / (size_t)n_scales, qmin, qmax,
                    x->n);
    if (grad) {
        lsq_ctx *c = qat_tape_record(t, lsq_backward, sizeof *c, "lsq");
        if (!c) return NULL;
        *c = (lsq_ctx){x, s, y, n_scales, qmin, qmax, grad_scale};
    }
    return y;
}
