#include "pact.h"

#include <float.h>
#include <math.h>
#include <stdint.h>

#include "round.h"

/* inp, out are (n)
 *
 * Speed: one pass, no branches, no calls; gcc -O3 vectorises the loop (checked with
 * -fopt-info-vec; the NaN handling below is shaped by that). It keeps the division
 * v / scale of the spec: a multiply by a precomputed 1 / scale is not bit-exact. fl(v * fl(1/s)) differs from fl(v / s) by an
 * ulp for many v, and where v / s lies within an ulp of k + 0.5 that flips q. Example
 * (alpha = 1.7, 4 bits, scale = fl(1.7f / 15)): v = 0x1.ed3a06p-1 (0.963333309) gives
 * v / scale = 8.49999905 (q = 8) but v * (1 / scale) = 8.5 (q = 9). The division costs
 * little here: divps is pipelined (measured on the 2-core dev machine, gcc 12 -O3, SSE2,
 * n = 16K and 1M: about 0.5 ns per element with the division, 0.43 ns with a reciprocal,
 * and 4 to 10 ns for the same loop with roundf, which stays scalar). */
void qat_pact_forward(float *out, const float *inp, float alpha, int bits, size_t n) {
    QAT_ASSERT(alpha > 0.0f && alpha <= FLT_MAX);
    QAT_ASSERT(bits >= 0 && bits <= 16);
    if (bits == 0) {
        /* Written so that NaN passes both comparisons unchanged (NaN in, NaN out). */
        for (size_t i = 0; i < n; i++) {
            float x = inp[i];
            float v = x < 0.0f ? 0.0f : x;
            out[i] = v > alpha ? alpha : v;
        }
        return;
    }
    const float levels = (float)((1 << bits) - 1);
    const float scale = alpha / levels;
    for (size_t i = 0; i < n; i++) {
        /* v = clip(x, 0, alpha): +-inf clip, NaN passes through. */
        float x = inp[i];
        float v = x < 0.0f ? 0.0f : x;
        v = v > alpha ? alpha : v;
        /* clamp(round(t), 0, L) == round(clamp(t, 0, L)) for integer bounds, as round is
         * monotone and fixes integers. Clamping first keeps t in the rounding helper's
         * domain (t >= 0 already; fl(alpha / scale) may exceed L by an ulp), and the
         * comparison sends a NaN to L, so the int conversion stays defined. */
        float t = v / scale;
        t = t < levels ? t : levels;
        /* (v - v) is +0 for finite v and NaN for NaN: it puts the NaN back. A select
         * (isnan(x) ? x : ...) would do the same, but gcc will not if-convert it under
         * -ftrapping-math and the loop would stay scalar. q * scale >= +0, so adding +0
         * changes no bit. */
        out[i] = qat_round_half_away(t) * scale + (v - v);
    }
}

/* dout, inp, dinp are (n); dalpha is one float */
void qat_pact_backward(float *dinp, float *dalpha, const float *dout, const float *inp,
                       float alpha, size_t n) {
    /* STE: the quantizer passes the gradient unchanged, so this is the clip's gradient. */
    if (dinp)
        for (size_t i = 0; i < n; i++) {
            float g = dout[i], x = inp[i];
            dinp[i] += ((x > 0.0f) & (x < alpha)) ? g : 0.0f;
        }
    if (dalpha) {
        /* A sum over a whole activation tensor: in double, so the order does not matter
         * at float precision. */
        double s = 0.0;
        for (size_t i = 0; i < n; i++) s += inp[i] >= alpha ? (double)dout[i] : 0.0;
        *dalpha += (float)s;
    }
}

typedef struct pact_ctx {
    qat_tensor *x, *alpha, *y;
    float a; /* alpha's value at forward time */
    float decay;
} pact_ctx;

static void pact_backward(qat_tape *t, void *p) {
    pact_ctx *c = p;
    float *da = c->alpha->grad;
    qat_pact_backward(c->x->grad, da, c->y->grad, c->x->data, c->a, c->x->n);
    /* d(decay / 2 * alpha^2) / dalpha, once per use of alpha. */
    if (da) da[0] += c->decay * c->a;
}

qat_tensor *qat_pact(qat_tape *t, qat_tensor *x, qat_tensor *alpha, int bits, float decay) {
    if (!x || !alpha) return NULL;
    if (alpha->n != 1) {
        char buf[64];
        return qat_tape_fail(t, QAT_STATUS_SHAPE,
                             "pact: alpha must have one element (one clipping level per "
                             "layer), got %s",
                             qat_tensor_shape_str(alpha, buf, sizeof buf));
    }
    if (bits < 0 || bits > 16)
        return qat_tape_fail(t, QAT_STATUS_INVALID_ARG,
                             "pact: bits is %d; use 1 to 16, or 0 for no quantization", bits);
    if (!(decay >= 0.0f) || !(decay <= FLT_MAX))
        return qat_tape_fail(t, QAT_STATUS_INVALID_ARG,
                             "pact: alpha decay is %g; it must be finite and >= 0", (double)decay);
    float a = alpha->data[0];
    /* Normal floats only: a subnormal alpha would make alpha / (2^bits - 1) round to 0. */
    if (!(a >= FLT_MIN) || !(a <= FLT_MAX))
        return qat_tape_fail(t, QAT_STATUS_NUMERIC,
                             "pact: clipping level alpha%s%s%s is %g; it must be finite and "
                             "positive (training diverged? try a lower learning rate or "
                             "alpha decay)",
                             alpha->name ? " (" : "", alpha->name ? alpha->name : "",
                             alpha->name ? ")" : "", (double)a);
    bool grad = qat_tape_needs_grad(t, x, alpha, NULL);
    qat_tensor *y = qat_tape_tensor(t, x->ndim, x->shape, grad);
    if (!y) return NULL;
    qat_pact_forward(y->data, x->data, a, bits, x->n);
    if (grad) {
        pact_ctx *c = qat_tape_record(t, pact_backward, sizeof *c, "pact");
        if (!c) return NULL;
        *c = (pact_ctx){x, alpha, y, a, decay};
    }
    return y;
}
