/* lower.c - a quantized model to the integer model (lower.h; arithmetic:
 * ../shared/int8-spec.md). The walk follows the fake-quant forward (qmodel.c), so each
 * integer below is the one QAT simulated. */
#include "lower.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "fake_quant.h"

void qat_quantize_multiplier(double m, int32_t *M0, int *shift) {
    /* int8-spec.md, "Fixed-point multiplier": frexp(m) = f * 2^e, f in [0.5, 1);
     * M0 = round(f * 2^31), which can round up to 2^31 (f just below 1): then halve it
     * and bump the exponent, so M0 stays in [2^30, 2^31). */
    if (!(m > 0.0) || !isfinite(m)) {
        *M0 = 0;
        *shift = 0;
        return;
    }
    int e;
    double f = frexp(m, &e);
    int64_t q = (int64_t)llround(f * 2147483648.0);
    if (q == (int64_t)1 << 31) {
        q /= 2;
        e += 1;
    }
    if (e < -31) { /* the output is the zero point */
        q = 0;
        e = 0;
    }
    *M0 = (int32_t)q;
    *shift = e;
}

static const char *const OP_NAMES[] = {
    [QAT_INT_OP_CONV2D] = "conv2d",   [QAT_INT_OP_LINEAR] = "linear",
    [QAT_INT_OP_MAXPOOL] = "maxpool", [QAT_INT_OP_AVGPOOL] = "avgpool",
    [QAT_INT_OP_GLOBAL_AVGPOOL] = "global_avgpool", [QAT_INT_OP_ADD] = "add",
    [QAT_INT_OP_FLATTEN] = "flatten", [QAT_INT_OP_LUT] = "lut",
};
_Static_assert(sizeof OP_NAMES / sizeof OP_NAMES[0] == QAT_INT_OP_COUNT, "one name per op kind");

const char *qat_int_op_kind_str(qat_int_op_kind k) {
    return (unsigned)k < QAT_INT_OP_COUNT ? OP_NAMES[k] : "unknown";
}

static const char *const LUT_NAMES[] = {
    [QAT_LUT_SIGMOID] = "sigmoid", [QAT_LUT_TANH] = "tanh",
    [QAT_LUT_HARDSWISH] = "hardswish", [QAT_LUT_LEAKY_RELU] = "leaky_relu",
};
_Static_assert(sizeof LUT_NAMES / sizeof LUT_NAMES[0] == QAT_LUT_FN_COUNT, "one name per table function");

const char *qat_lut_fn_str(qat_lut_fn fn) {
    return (unsigned)fn < QAT_LUT_FN_COUNT ? LUT_NAMES[fn] : "unknown";
}

double qat_lut_fn_eval(qat_lut_fn fn, double alpha, double x) {
    switch (fn) {
    case QAT_LUT_SIGMOID: return x >= 0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x));
    case QAT_LUT_TANH: return tanh(x);
    case QAT_LUT_HARDSWISH: return x * fmin(fmax(x + 3.0, 0.0), 6.0) / 6.0;
    case QAT_LUT_LEAKY_RELU: return x > 0 ? x : alpha * x;
    case QAT_LUT_FN_COUNT: break;
    }
    QAT_ASSERT(!"qat_lut_fn_eval: not a table function");
    return 0.0;
}

void qat_lut_make(int8_t table[256], qat_lut_fn fn, double alpha, double s_in, int32_t z_in,
                  double s_out, int32_t z_out, int32_t qmin, int32_t qmax) {
    QAT_ASSERT(s_out > 0 && qmin >= -128 && qmin <= qmax && qmax <= 127);
    for (int i = 0; i < 256; i++) {
        /* int8-spec.md, "Other ops": the entry for q_in = i - 128. round() is half away
         * from zero, the spec's one rounding rule. f of a finite x is finite or, for a
         * huge slope, +-inf (|f(x)| <= max(1, |alpha|) |x| + 1), and so is the quotient
         * for a tiny s_out: never NaN, and the clamp takes the infinities. */
        double y = qat_lut_fn_eval(fn, alpha, s_in * (double)(i - 128 - z_in));
        double q = round(y / s_out) + (double)z_out;
        q = q < qmin ? qmin : q > qmax ? qmax : q;
        table[i] = (int8_t)q;
    }
}

bool qat_lut_fn_of(const qat_layer *l, qat_lut_fn *fn, float *alpha) {
    *alpha = 0.0f;
    switch (l->kind) {
    case QAT_LAYER_SIGMOID: *fn = QAT_LUT_SIGMOID; return true;
    case QAT_LAYER_TANH: *fn = QAT_LUT_TANH; return true;
    case QAT_LAYER_HARDSWISH: *fn = QAT_LUT_HARDSWISH; return true;
    case QAT_LAYER_LEAKY_RELU:
        *fn = QAT_LUT_LEAKY_RELU;
        *alpha = l->cfg.leaky.alpha;
        return true;
    case QAT_LAYER_LINEAR:
    case QAT_LAYER_CONV2D:
    case QAT_LAYER_RESIDUAL:
    case QAT_LAYER_MAXPOOL:
    case QAT_LAYER_AVGPOOL:
    case QAT_LAYER_GLOBAL_AVGPOOL:
    case QAT_LAYER_FLATTEN:
    case QAT_LAYER_DROPOUT:
    case QAT_LAYER_BATCHNORM:
    case QAT_LAYER_RELU:
    case QAT_LAYER_RELU6:
    case QAT_LAYER_COUNT: break;
    }
    return false;
}

/* ---- the builder ---- */

typedef struct lower {
    qat_int_model *im;
    int cap_values, cap_ops;
    qat_error *err;
    qat_status st;
} lower;

static void fail(lower *L, qat_status s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(lower *L, qat_status s, const char *fmt, ...) {
    if (L->st) return;
    va_list ap;
    va_start(ap, fmt);
    char msg[480];
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    L->st = qat_error_set(L->err, s, "no integer model: %s", msg);
}

/* qat_quantize_multiplier of m for layer l, refusing what int8-spec.md refuses: a
 * multiplier of 2^30 or more (shift above 30), which the runtime would reject, and one
 * that is negative or not finite. */
static bool multiplier(lower *L, const qat_layer *l, double m, int32_t *M0, int32_t *shift) {
    int sh;
    if (!(m >= 0.0) || !isfinite(m)) { /* 0 (a dead channel) gives M0 = 0: the zero point */
        fail(L, QAT_STATUS_NUMERIC, "layer %s: a requantization multiplier is %g (scales out of range)", l->name, m);
        return false;
    }
    qat_quantize_multiplier(m, M0, &sh);
    if (sh > 30) {
        fail(L, QAT_STATUS_NUMERIC,
             "layer %s: a requantization multiplier is %g, 2^30 or more (the output's scale is far below the "
             "input's times the weights'): int8-spec.md refuses it",
             l->name, m);
        return false;
    }
    *shift = sh;
    return true;
}

/* A new value (its index), or -1 after a failure. */
static int add_value(lower *L, int ndim, const int *shape, float scale, int32_t zp) {
    if (L->st) return -1;
    qat_int_model *im = L->im;
    if (im->n_values == L->cap_values) {
        int cap = L->cap_values ? 2 * L->cap_values : 16;
        qat_int_value *v = realloc(im->values, (size_t)cap * sizeof *v);
        if (!v) {
            fail(L, QAT_STATUS_NOMEM, "out of memory");
            return -1;
        }
        im->values = v;
        L->cap_values = cap;
    }
    qat_int_value *v = &im->values[im->n_values];
    *v = (qat_int_value){.ndim = ndim, .scale = scale, .zero_point = zp};
    memcpy(v->shape, shape, (size_t)ndim * sizeof(int));
    return im->n_values++;
}

/* A new op reading `in` and writing a new value of the layer's output shape with the
 * given quantization; NULL after a failure. */
static qat_int_op *add_op(lower *L, qat_int_op_kind kind, const qat_layer *l, int in, float scale,
                          int32_t zp) {
    int out = add_value(L, l->out_ndim, l->out_shape, scale, zp);
    if (out < 0) return NULL;
    qat_int_model *im = L->im;
    if (im->n_ops == L->cap_ops) {
        int cap = L->cap_ops ? 2 * L->cap_ops : 16;
        qat_int_op *o = realloc(im->ops, (size_t)cap * sizeof *o);
        if (!o) {
            fail(L, QAT_STATUS_NOMEM, "out of memory");
            return NULL;
        }
        im->ops = o;
        L->cap_ops = cap;
    }
    qat_int_op *op = &im->ops[im->n_ops++];
    memset(op, 0, sizeof *op);
    op->kind = kind;
    snprintf(op->name, sizeof op->name, "%s", l->name);
    op->n_in = 1;
    op->in[0] = in;
    op->out = out;
    return op;
}

/* ---- conv / linear units ---- */

static int lower_unit(lower *L, const qat_layer_quant *u, int in) {
    const qat_layer *l = u->layer;
    const qat_qpoint *p = &u->out;
    if (u->wgroup > 0) {
        fail(L, QAT_STATUS_INVALID_ARG,
             "layer %s: per-group weight scales (group=%d) have no integer form in the runtime, which "
             "uses one scale per output channel; quantize with per-channel weights",
             l->name, u->wgroup);
        return -1;
    }
    float s_out;
    int32_t z_out;
    qat_qpoint_qparams(p, &s_out, &z_out);
    const float s_in = L->im->values[in].scale;
    qat_int_op *op = add_op(L, l->kind == QAT_LAYER_CONV2D ? QAT_INT_OP_CONV2D : QAT_INT_OP_LINEAR, l, in,
                            s_out, z_out);
    if (!op) return -1;
    if (l->kind == QAT_LAYER_CONV2D) {
        op->kernel = l->cfg.conv.kernel;
        op->stride = l->cfg.conv.stride;
        op->pad = l->cfg.conv.pad;
        op->groups = l->cfg.conv.groups;
    }
    const int C = l->weight.shape[0];
    const size_t n = l->weight.n, K = n / (size_t)C;
    const int qmax = qat_qmax_weight(u->wbits);
    op->wbits = u->wbits;
    op->w_ndim = l->weight.ndim;
    for (int d = 0; d < l->weight.ndim; d++) op->w_shape[d] = l->weight.shape[d];
    op->weight = malloc(n);
    op->bias = malloc((size_t)C * sizeof(int32_t));
    op->mult = malloc((size_t)C * sizeof(int32_t));
    op->shift = malloc((size_t)C * sizeof(int32_t));
    float *wf = qat_quant_folded_weights(u), *bf = malloc((size_t)C * sizeof(float));
    float *sw = malloc(u->n_wscales * sizeof(float));
    if (!op->weight || !op->bias || !op->mult || !op->shift || !wf || !bf || !sw ||
        !qat_quant_weight_scales(u, sw)) {
        fail(L, QAT_STATUS_NOMEM, "out of memory");
        goto done;
    }
    qat_quant_folded_bias(u, bf);
    for (int c = 0; c < C; c++) {
        const float swc = sw[u->wrows == 1 ? 0 : c];
        int32_t wmax = 0;
        for (size_t k = 0; k < K; k++) {
            size_t i = (size_t)c * K + k;
            if (!isfinite(wf[i])) {
                fail(L, QAT_STATUS_NUMERIC, "layer %s: weight %zu is %g", l->name, i, (double)wf[i]);
                goto done;
            }
            int32_t q = qat_quantize(wf[i], swc, 0, -qmax, qmax);
            wmax = abs(q) > wmax ? abs(q) : wmax;
            op->weight[i] = (int8_t)q;
        }
        /* The bias on the grid s_in * s_w[c], as the fake-quant forward rounds it. */
        const float sb = s_in * swc;
        double qb = (double)roundf(bf[c] / sb);
        if (!isfinite(qb) || fabs(qb) > 2147483647.0) {
            fail(L, QAT_STATUS_NUMERIC, "layer %s: channel %d's bias %g does not fit int32 at scale %g",
                 l->name, c, (double)bf[c], (double)sb);
            goto done;
        }
        op->bias[c] = (int32_t)qb;
        /* int8-spec.md: refuse what could overflow the int32 accumulator. */
        double bound = (double)K * 255.0 * wmax + fabs(qb);
        if (bound > 2147483647.0) {
            fail(L, QAT_STATUS_NUMERIC,
                 "layer %s: the accumulator of channel %d could overflow int32 (%zu inputs x 255 x "
                 "max|w| %d + |bias| %.0f = %.0f)",
                 l->name, c, K, wmax, fabs(qb), bound);
            goto done;
        }
        if (!multiplier(L, l, (double)sb / (double)s_out, &op->mult[c], &op->shift[c])) goto done;
        /* int8-spec.md: x * 2^left must fit int32 in the requantization (the runtime
         * refuses a file where it might not). */
        const int left = op->shift[c] > 0 ? op->shift[c] : 0;
        if (left && bound * ldexp(1.0, left) > 2147483647.0) {
            fail(L, QAT_STATUS_NUMERIC,
                 "layer %s: channel %d's requantization could overflow int32 (accumulator bound %.0f times "
                 "2^%d): the output's scale is far below the input's times the weights'",
                 l->name, c, bound, left);
            goto done;
        }
    }
    int amin, amax;
    qat_qpoint_clamp(p, &amin, &amax);
    op->act_min = amin;
    op->act_max = amax;
done:
    free(wf);
    free(bf);
    free(sw);
    return L->st ? -1 : op->out;
}

/* ---- the walk ---- */

static int lower_seq(lower *L, const qat_seq *s, int in);

/* TFLite's ADD: both inputs to a common scale 2 max(s_a, s_b) with 20 bits of headroom,
 * then to the output scale (int8-spec.md, "Other ops"). */
static int lower_residual(lower *L, const qat_layer *l, int in) {
    const qat_layer_quant *u = l->quant;
    int a = lower_seq(L, &l->body, in);
    int b = l->shortcut.n ? lower_seq(L, &l->shortcut, in) : in;
    if (a < 0 || b < 0) return -1;
    float s_out;
    int32_t z_out;
    qat_qpoint_qparams(&u->out, &s_out, &z_out);
    const double sa = L->im->values[a].scale, sb = L->im->values[b].scale;
    qat_int_op *op = add_op(L, QAT_INT_OP_ADD, l, a, s_out, z_out);
    if (!op) return -1;
    op->n_in = 2;
    op->in[1] = b;
    double twice = 2.0 * fmax(sa, sb);
    if (!multiplier(L, l, sa / twice, &op->mult_a, &op->shift_a) ||
        !multiplier(L, l, sb / twice, &op->mult_b, &op->shift_b) ||
        !multiplier(L, l, twice / ((double)(1 << 20) * s_out), &op->mult_out, &op->shift_out))
        return -1;
    /* (q - z) 2^20 for each input, at most 255 2^20, then their sum times 2^left_out must
     * fit int32 (the runtime's bound; shift_a and shift_b are <= 0 here). */
    const int lo = op->shift_out > 0 ? op->shift_out : 0;
    if (ldexp(2.0 * 255.0 * (double)(1 << 20), lo) > 2147483647.0) {
        fail(L, QAT_STATUS_NUMERIC,
             "layer %s: the add's output requantization could overflow int32 (shift %d): its output scale is far "
             "below its inputs'",
             l->name, (int)op->shift_out);
        return -1;
    }
    int amin, amax;
    qat_qpoint_clamp(&u->out, &amin, &amax);
    op->act_min = amin;
    op->act_max = amax;
    return op->out;
}

/* An elementwise nonlinearity as a lookup table: the input is the current value (the
 * point before it, as in the fake-quant forward), the output the layer's own point. */
static int lower_lut(lower *L, const qat_layer *l, int in) {
    qat_lut_fn fn;
    float alpha;
    const bool is_table = qat_lut_fn_of(l, &fn, &alpha);
    QAT_ASSERT(is_table);
    const qat_qpoint *p = &l->quant->out;
    float s_out;
    int32_t z_out;
    qat_qpoint_qparams(p, &s_out, &z_out);
    int qmin, qmax;
    qat_qpoint_clamp(p, &qmin, &qmax);
    const qat_int_value v = L->im->values[in];
    if (!(s_out > 0.0f) || !isfinite(s_out) || !(v.scale > 0.0f) || !isfinite(v.scale)) {
        fail(L, QAT_STATUS_NUMERIC, "layer %s (%s): scale in %g, out %g: not positive and finite",
             l->name, qat_layer_kind_str(l->kind), (double)v.scale, (double)s_out);
        return -1;
    }
    qat_int_op *op = add_op(L, QAT_INT_OP_LUT, l, in, s_out, z_out);
    if (!op) return -1;
    op->lut_fn = fn;
    op->lut_alpha = alpha;
    op->act_min = qmin;
    op->act_max = qmax;
    if (!(op->table = malloc(256))) {
        fail(L, QAT_STATUS_NOMEM, "out of memory");
        return -1;
    }
    qat_lut_make(op->table, fn, alpha, v.scale, v.zero_point, s_out, z_out, qmin, qmax);
    return op->out;
}

/* An op that keeps its input's scale and zero point. */
static int lower_same(lower *L, qat_int_op_kind kind, const qat_layer *l, int in) {
    const qat_int_value v = L->im->values[in];
    qat_int_op *op = add_op(L, kind, l, in, v.scale, v.zero_point);
    if (!op) return -1;
    if (kind == QAT_INT_OP_MAXPOOL || kind == QAT_INT_OP_AVGPOOL) {
        op->kernel = l->cfg.pool.kernel;
        op->stride = l->cfg.pool.stride;
        op->pad = l->cfg.pool.pad;
    }
    return op->out;
}

static int lower_seq(lower *L, const qat_seq *s, int in) {
    int v = in;
    for (int i = 0; i < s->n && v >= 0; i++) {
        const qat_layer *l = &s->layers[i];
        switch (l->kind) {
        case QAT_LAYER_LINEAR:
        case QAT_LAYER_CONV2D:
            v = lower_unit(L, l->quant, v);
            i += l->quant->n_fused;
            break;
        case QAT_LAYER_RESIDUAL:
            v = lower_residual(L, l, v);
            i += l->quant->n_fused;
            break;
        case QAT_LAYER_MAXPOOL: v = lower_same(L, QAT_INT_OP_MAXPOOL, l, v); break;
        case QAT_LAYER_AVGPOOL: v = lower_same(L, QAT_INT_OP_AVGPOOL, l, v); break;
        case QAT_LAYER_GLOBAL_AVGPOOL: v = lower_same(L, QAT_INT_OP_GLOBAL_AVGPOOL, l, v); break;
        case QAT_LAYER_FLATTEN: v = lower_same(L, QAT_INT_OP_FLATTEN, l, v); break;
        case QAT_LAYER_DROPOUT: break; /* the identity at inference */
        case QAT_LAYER_SIGMOID:
        case QAT_LAYER_TANH:
        case QAT_LAYER_HARDSWISH:
        case QAT_LAYER_LEAKY_RELU: v = lower_lut(L, l, v); break;
        case QAT_LAYER_BATCHNORM:
        case QAT_LAYER_RELU:
        case QAT_LAYER_RELU6:
        case QAT_LAYER_COUNT:
            fail(L, QAT_STATUS_INVALID_ARG,
                 "layer %s (%s): the int8 runtime has no such op here (it runs conv2d and linear with "
                 "their batch norm and ReLU/ReLU6 fused, pools, residual adds, flatten and lookup tables for "
                 "sigmoid, tanh, hardswish and leaky_relu)",
                 l->name, qat_layer_kind_str(l->kind));
            v = -1;
            break;
        }
    }
    return L->st ? -1 : v;
}

qat_status qat_lower(const qat_model *m, qat_int_model *im, qat_error *err) {
    QAT_ASSERT(m != NULL && im != NULL);
    memset(im, 0, sizeof *im);
    const qat_quant *q = m->quant;
    if (!q)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "no integer model: the model is not quantized (qat calibrate or qat train --quant first)");
    if (q->input.method != QAT_ACT_METHOD_FIXED || m->in_ndim != 3)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "no integer model: the runtime takes uint8 images with one normalisation mean and "
                             "std; this model's input has none");
    for (int k = 0; k < q->n_units; k++)
        if (q->units[k].layer && q->units[k].out.dynamic)
            return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                                 "no integer model: layer %s's output is quantized per token at run time "
                                 "(\"token\"), which the runtime does not do (docs/quant.md, \"SmoothQuant and "
                                 "per-token quantization\"); quantize without token",
                                 q->units[k].layer->name);
    lower L = {.im = im, .err = err};
    float s_in;
    int32_t z_in;
    qat_qpoint_qparams(&q->input, &s_in, &z_in);
    /* int8-spec.md, "model input": z = round(255 mean) - 128 must be an int8, so the mean
     * must lie within about [0, 1] of x / 255. qat_quant_prepare refuses other means (found
     * by fuzz_checkpoint: normalize_mean 6.85 exported a file the runtime refuses); this
     * keeps the lowering from writing one whatever the point holds. */
    if (z_in < -128 || z_in > 127 || !(s_in > 0.0f) || !isfinite(s_in))
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "no integer model: the input normalisation (mean %g, std %g of x / 255) maps raw "
                             "pixels to zero point %d and scale %g; the runtime needs a zero point in [-128, 127] "
                             "(a mean in [0, 1]) and a positive scale",
                             (double)m->quant->in_mean, (double)m->quant->in_std, (int)z_in, (double)s_in);
    int in = add_value(&L, 3, m->in_shape, s_in, z_in);
    int out = in >= 0 ? lower_seq(&L, &m->root, in) : -1;
    if (!L.st && im->values[out].ndim != 1)
        fail(&L, QAT_STATUS_INVALID_ARG, "the model's output is not a vector of logits");
    if (L.st) {
        qat_int_model_free(im);
        return L.st;
    }
    im->output = out;
    return QAT_STATUS_OK;
}

void qat_int_model_free(qat_int_model *im) {
    if (!im) return;
    for (int i = 0; i < im->n_ops; i++) {
        free(im->ops[i].weight);
        free(im->ops[i].bias);
        free(im->ops[i].mult);
        free(im->ops[i].shift);
        free(im->ops[i].table);
    }
    free(im->ops);
    free(im->values);
    memset(im, 0, sizeof *im);
}
