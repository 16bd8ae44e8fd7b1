/* exact.c - a quantization point's values from the integer model's arithmetic (exact.h). */
#include "exact.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "autograd/parallel.h"
#include "fake_quant.h"
#include "lower.h"
#include "round.h"
#include "requant.h"

/* Float GEMMs add exact integers exactly while every partial sum stays below 2^24. */
#define EXACT_FLOAT_INT 16777216.0

/* dst = round(src / s), the integers q - z of values on the grid of s. false if a value
 * is off the grid (by more than float rounding could explain), not finite, or beyond
 * 2^16 in magnitude. *maxabs: the largest |q - z|. Written to vectorise (round.h). */
QAT_HOT static bool to_grid(float *dst, const float *src, size_t n, float s, float *maxabs) {
    /* An int flag and no float reduction, so that gcc vectorises without -ffast-math. */
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        float t = src[i] / s;
        const int b = fabsf(t) <= 65536.0f ? 0 : 1; /* NaN, Inf, huge */
        t = b ? 0.0f : t;
        const float r = qat_round_half_away(t);
        bad |= b | (fabsf(t - r) <= 1e-3f ? 0 : 1);
        dst[i] = r;
    }
    *maxabs = qat_max_abs(dst, n);
    return !bad;
}

/* Whether no x is NaN or infinite; lanes spelled out (as fake_quant.c's qat_max_abs) so
 * that it vectorises. */
QAT_HOT static bool all_finite(const float *x, size_t n) {
    enum { L = 16 };
    int bad[L] = {0};
    size_t i = 0;
    for (; i + L <= n; i += L)
        for (int l = 0; l < L; l++) bad[l] |= fabsf(x[i + l]) <= FLT_MAX ? 0 : 1;
    for (; i < n; i++) bad[0] |= fabsf(x[i]) <= FLT_MAX ? 0 : 1;
    int b = 0;
    for (int l = 0; l < L; l++) b |= bad[l];
    return !b;
}

/* q = clamp(round(w / s), -qmax, qmax): fake_quant.h's qat_quantize with zero point 0 bit
 * for bit (the same division; clamping before rounding is the same for integer bounds,
 * and round.h's rounding equals roundf below 2^23), in fake_quant.c's vectorising form. */
QAT_HOT static void quantize_row(float *dst, const float *w, size_t n, float s, int qmax) {
    const float hi = (float)qmax, lo = -hi;
    for (size_t i = 0; i < n; i++) {
        const float t = w[i] / s;
        float c = t < hi ? t : hi;
        c = c > lo ? c : lo;
        dst[i] = qat_round_half_away(c);
    }
}

/* w = 16 h + r with r in [-8, 7], h in [-8, 8]: hi gets h, w becomes r. */
QAT_HOT static void split16(float *w, float *hi, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const float h = floorf((w[i] + 8.0f) * 0.0625f);
        hi[i] = h;
        w[i] -= 16.0f * h;
    }
}

static int32_t requant(qat_sim sim, int32_t x, int32_t M0, int shift) {
    return sim == QAT_SIM_EXACT ? qat_requant_exact(x, M0, shift) : qat_requant_single(x, M0, shift);
}

static float dequant(int32_t q, int lo, int hi, float s_out, int32_t z_out) {
    q = q < lo ? lo : q > hi ? hi : q;
    return s_out * (float)(q - z_out);
}

/* ---- conv / linear ---- */

typedef struct unit_job {
    qat_sim sim;
    const float *acc, *acc_hi; /* integer-valued GEMM results; acc_hi: the high part (x 16) or NULL */
    const int32_t *bias, *M0, *shift;
    int C;
    size_t S;
    int32_t z_out;
    int lo, hi;
    float s_out;
    float *y;
} unit_job;

/* Planes p = n C + c of S values each. */
static void unit_part(void *p, size_t b, size_t e) {
    const unit_job *j = p;
    for (size_t pl = b; pl < e; pl++) {
        const int c = (int)(pl % (size_t)j->C);
        const int32_t bias = j->bias[c], M0 = j->M0[c];
        const int shift = j->shift[c];
        const size_t i0 = pl * j->S;
        for (size_t i = i0; i < i0 + j->S; i++) {
            int64_t a = (int64_t)j->acc[i] + bias;
            if (j->acc_hi) a += 16 * (int64_t)j->acc_hi[i];
            const int32_t q = requant(j->sim, (int32_t)a, M0, shift) + j->z_out;
            j->y[i] = dequant(q, j->lo, j->hi, j->s_out, j->z_out);
        }
    }
}

/* The layer's own forward on integer-valued tensors, no bias, no tape nodes. */
static qat_tensor *int_forward(qat_tape *t, const qat_layer *l, qat_tensor *xi, const qat_tensor *w,
                               const float *wdata) {
    qat_tensor *wi = qat_tape_tensor(t, w->ndim, w->shape, false);
    if (!wi) return NULL;
    memcpy(wi->data, wdata, w->n * sizeof(float));
    return qat_layer_forward_with(l, t, xi, wi, NULL);
}

bool qat_exact_unit(qat_tape *t, qat_sim sim, const qat_exact_unit_args *a, qat_tensor *y) {
    if (sim == QAT_SIM_FLOAT || !y || !a->x) return false;
    const qat_layer *l = a->layer;
    const qat_tensor *w = &l->weight;
    const int C = w->shape[0];
    const size_t K = w->n / (size_t)C;
    const int qmax = qat_qmax_weight(a->wbits);
    if (y->ndim < 2 || y->shape[1] != C) return false;
    const bool g = t->grad_enabled;
    t->grad_enabled = false;
    bool done = false;
    float *wq = qat_tape_alloc(t, w->n * sizeof(float)), *wlo = qat_tape_alloc(t, w->n * sizeof(float));
    int32_t *bias = qat_tape_alloc(t, (size_t)C * 3 * sizeof(int32_t));
    qat_tensor *xi = qat_tape_tensor(t, a->x->ndim, a->x->shape, false);
    if (!wq || !wlo || !bias || !xi) goto out;
    int32_t *M0 = bias + C, *shift = bias + 2 * C;
    float xmax;
    if (!to_grid(xi->data, a->x->data, a->x->n, a->s_in, &xmax)) goto out;
    /* The lowering's integers (quant/lower.c, lower_unit), from the same floats. */
    if (!all_finite(a->wf, w->n)) goto out; /* as lower.c refuses */
    double bmax = 0.0;
    for (int c = 0; c < C; c++) {
        const float swc = a->wscale[a->wrows == 1 ? 0 : c];
        quantize_row(wq + (size_t)c * K, a->wf + (size_t)c * K, K, swc, qmax);
        const float sb = a->s_in * swc;
        const double qb = a->bf ? (double)roundf(a->bf[c] / sb) : 0.0;
        if (!isfinite(qb) || fabs(qb) > 2147483647.0) goto out;
        bias[c] = (int32_t)qb;
        bmax = fabs(qb) > bmax ? fabs(qb) : bmax;
        int sh;
        qat_quantize_multiplier((double)sb / (double)a->s_out, &M0[c], &sh);
        if (sh > 30) goto out;
        shift[c] = sh;
    }
    /* The accumulator of this batch, bounded as the lowering bounds it (with this batch's
     * largest input): it and x 2^left must fit int32. */
    const double wmax = qat_max_abs(wq, w->n), bound = (double)K * xmax * wmax + bmax;
    for (int c = 0; c < C; c++)
        if (bound * ldexp(1.0, shift[c] > 0 ? shift[c] : 0) > 2147483647.0) goto out;
    qat_tensor *acc, *acc_hi = NULL;
    bool split = false;
    /* Every partial sum of an output is at most max|w| times the sum of |x| over its
     * inputs: K max|x| in general, and for a linear layer (a row is all K inputs) the
     * largest row sum, far below it for images (the MLP's first layer: 70,000 against
     * 784 x 182 = 142,688), which spares the split below. */
    double xsum = (double)K * xmax;
    const size_t N = (size_t)a->x->shape[0];
    if (a->x->n / N == K) {
        xsum = 0.0;
        for (size_t r = 0; r < N; r++) {
            double rs = 0.0;
            for (size_t k = 0; k < K; k++) rs += fabsf(xi->data[r * K + k]);
            xsum = rs > xsum ? rs : xsum;
        }
    }
    if (xsum * wmax < EXACT_FLOAT_INT) {
        acc = int_forward(t, l, xi, w, wq);
    } else if (xsum * 8.0 < EXACT_FLOAT_INT) {
        /* w = 16 h + r with r in [-8, 7], h in [-8, 8]: two GEMMs whose partial sums stay
         * exact, combined in integers. */
        split16(wq, wlo, w->n); /* wq: the low parts, wlo: the high */
        acc_hi = int_forward(t, l, xi, w, wlo);
        acc = int_forward(t, l, xi, w, wq);
        split = true;
    } else {
        goto out;
    }
    if (!acc || (split && (!acc_hi || acc_hi->n != y->n)) || acc->n != y->n) goto out;
    const size_t S = y->n / ((size_t)y->shape[0] * C);
    unit_job j = {sim, acc->data, acc_hi ? acc_hi->data : NULL, bias, M0, shift, C, S, a->z_out, a->lo, a->hi,
                  a->s_out, y->data};
    qat_parallel_for(y->n / S, 16384 / S + 1, unit_part, &j);
    done = true;
out:
    t->grad_enabled = g;
    return done;
}

/* ---- the residual add ---- */

bool qat_exact_add(qat_sim sim, const qat_tensor *a, float sa, const qat_tensor *b, float sb, float s_out,
                   int32_t z_out, int lo, int hi, qat_tensor *y) {
    if (sim == QAT_SIM_FLOAT || !a || !b || !y || a->n != y->n || b->n != y->n) return false;
    /* quant/lower.c, lower_residual. */
    const double da = sa, db = sb, twice = 2.0 * fmax(da, db);
    int32_t Ma, Mb, Mo;
    int sha, shb, sho;
    qat_quantize_multiplier(da / twice, &Ma, &sha);
    qat_quantize_multiplier(db / twice, &Mb, &shb);
    qat_quantize_multiplier(twice / ((double)(1 << 20) * s_out), &Mo, &sho);
    if (sha > 30 || shb > 30 || sho > 30) return false;
    if (ldexp(2.0 * 255.0 * (double)(1 << 20), sho > 0 ? sho : 0) > 2147483647.0) return false;
    for (size_t i = 0; i < y->n; i++) { /* all on their grids first: y changes only if all are */
        const float ta = a->data[i] / sa, tb = b->data[i] / sb;
        if (!(fabsf(ta - roundf(ta)) <= 1e-3f && fabsf(roundf(ta)) <= 255.0f)) return false;
        if (!(fabsf(tb - roundf(tb)) <= 1e-3f && fabsf(roundf(tb)) <= 255.0f)) return false;
    }
    for (size_t i = 0; i < y->n; i++) {
        const int32_t qa = (int32_t)roundf(a->data[i] / sa), qb = (int32_t)roundf(b->data[i] / sb);
        const int32_t ra = requant(sim, qa * (1 << 20), Ma, sha), rb = requant(sim, qb * (1 << 20), Mb, shb);
        y->data[i] = dequant(requant(sim, ra + rb, Mo, sho) + z_out, lo, hi, s_out, z_out);
    }
    return true;
}

/* ---- lookup tables ---- */

bool qat_exact_lut(const qat_tensor *x, float s_in, int32_t z_in, const int8_t table[256], float s_out,
                   int32_t z_out, qat_tensor *y) {
    if (!x || !y || x->n != y->n) return false;
    for (size_t i = 0; i < x->n; i++) {
        const float t = x->data[i] / s_in;
        const float r = roundf(t) + (float)z_in;
        if (!(fabsf(t - roundf(t)) <= 1e-3f && r >= -128.0f && r <= 127.0f)) return false;
    }
    for (size_t i = 0; i < x->n; i++) {
        const int q = (int)(roundf(x->data[i] / s_in) + (float)z_in);
        y->data[i] = s_out * (float)(table[q + 128] - z_out);
    }
    return true;
}

/* ---- the model input ---- */

/* Whether every x is a normalised pixel (within float error of an integer in [0, 255]). */
QAT_HOT static bool pixels_ok(const float *x, size_t n, float mean, float std) {
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        float v = (x[i] * std + mean) * 255.0f;
        const int b = v > -0.5f && v < 255.5f ? 0 : 1; /* NaN too */
        v = b ? 0.0f : v;
        bad |= b | (fabsf(v - qat_round_half_away(v)) <= 1e-2f ? 0 : 1);
    }
    return !bad;
}

QAT_HOT static void input_values(float *y, const float *x, size_t n, float mean, float std, float s_in,
                                 int32_t z_in) {
    const float z = (float)(128 + z_in);
    for (size_t i = 0; i < n; i++) {
        const float p = qat_round_half_away((x[i] * std + mean) * 255.0f);
        y[i] = s_in * (p - z); /* p - 128 - z_in: exact small integers */
    }
}

bool qat_exact_input(const qat_tensor *x, float mean, float std, float s_in, int32_t z_in, qat_tensor *y) {
    if (!x || !y || x->n != y->n) return false;
    if (!pixels_ok(x->data, x->n, mean, std)) return false;
    input_values(y->data, x->data, x->n, mean, std, s_in, z_in);
    return true;
}
