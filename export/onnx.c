/* onnx.c - the integer model as an int8 ONNX model (onnx.h, docs/onnx.md): one ONNX
 * pattern per op of quant/lower.h, in QOperator or QDQ form. Values are uint8 tensors
 * "v<i>" (int8 + 128) with initializers "v<i>.scale" and "v<i>.zp". */
#include "onnx.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx_graph.h"

static const char *const FORM_NAMES[] = {[QAT_ONNX_FORM_QOPERATOR] = "qoperator", [QAT_ONNX_FORM_QDQ] = "qdq",
                                         [QAT_ONNX_FORM_EXACT] = "exact"};
_Static_assert(sizeof FORM_NAMES / sizeof FORM_NAMES[0] == QAT_ONNX_FORM_COUNT, "one name per form");

const char *qat_onnx_form_str(qat_onnx_form f) { return (unsigned)f < QAT_ONNX_FORM_COUNT ? FORM_NAMES[f] : "unknown"; }

enum {
    F32 = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT,
    U8 = ONNX__TENSOR_PROTO__DATA_TYPE__UINT8,
    I8 = ONNX__TENSOR_PROTO__DATA_TYPE__INT8,
    I32 = ONNX__TENSOR_PROTO__DATA_TYPE__INT32,
    I64 = ONNX__TENSOR_PROTO__DATA_TYPE__INT64,
};

typedef struct writer {
    onnx_b b;
    const qat_int_model *im;
    qat_onnx_form form;
    bool *scale_used, *zp_used; /* (n_values): an op reads the value's scale, zero point */
} writer;

/* Names of value i's tensor (value 0 is the graph input "pixels"), scale and zero point;
 * the initializers of those a node reads are written at the end (ORT warns of unused
 * ones, such as a flatten's). */
static char *vname(writer *w, int i) { return i ? onnx_str(&w->b, "v%d", i) : onnx_str(&w->b, "pixels"); }
static char *vscale(writer *w, int i) {
    w->scale_used[i] = true;
    return onnx_str(&w->b, "v%d.scale", i);
}
static char *vzp(writer *w, int i) {
    w->zp_used[i] = true;
    return onnx_str(&w->b, "v%d.zp", i);
}

/* The uint8 zero point of an int8 one (within [-128, 127]: lowering guarantees it). */
static uint8_t zp_u8(int32_t z) { return (uint8_t)(z + 128); }

/* A float view of uint8 tensor x with value i's parameters, for the op `user` (QDQ:
 * DequantizeLinear), named "<x>.f.<user>": one per reader, as QDQ tools write them, so
 * each op's pattern is its own. */
static char *dequant_as(writer *w, const char *x, int i, const char *user) {
    char *f = onnx_str(&w->b, "%s.f.%s", x, user);
    onnx_node(&w->b, "DequantizeLinear", NULL, onnx_str(&w->b, "dq_%s_%s", x, user), 3,
              (const char *[]){x, vscale(w, i), vzp(w, i)}, f);
    return f;
}

static char *dequant(writer *w, int i, const char *user) { return dequant_as(w, vname(w, i), i, user); }

/* QDQ: x (float) through the op's clamp, then QuantizeLinear to value `out`. */
static void quant_out(writer *w, const qat_int_op *op, const char *x, int out) {
    const qat_int_value *v = &w->im->values[out];
    const char *y = x;
    if (op->act_min > -128 || op->act_max < 127) {
        /* The clamp in real units: q in [act_min, act_max] is s (q - z) in [lo, hi]. */
        char *lo = onnx_str(&w->b, "%s.clip_min", op->name), *hi = onnx_str(&w->b, "%s.clip_max", op->name);
        onnx_init_scalar_f32(&w->b, lo, v->scale * (float)(op->act_min - v->zero_point));
        onnx_init_scalar_f32(&w->b, hi, v->scale * (float)(op->act_max - v->zero_point));
        y = onnx_str(&w->b, "%s.clipped", op->name);
        onnx_node(&w->b, "Clip", NULL, onnx_str(&w->b, "%s.clip", op->name), 3, (const char *[]){x, lo, hi}, y);
    }
    onnx_node(&w->b, "QuantizeLinear", NULL, onnx_str(&w->b, "q_v%d", out), 3,
              (const char *[]){y, vscale(w, out), vzp(w, out)}, vname(w, out));
}

/* QOperator: x (uint8, value out's parameters) through the op's clamp into value out. */
static void clamp_u8(writer *w, const qat_int_op *op, const char *x, int out) {
    if (op->act_min > -128 || op->act_max < 127) {
        char *lo = onnx_str(&w->b, "%s.clip_min", op->name), *hi = onnx_str(&w->b, "%s.clip_max", op->name);
        onnx_init_scalar_u8(&w->b, lo, zp_u8(op->act_min));
        onnx_init_scalar_u8(&w->b, hi, zp_u8(op->act_max));
        onnx_node(&w->b, "Clip", NULL, onnx_str(&w->b, "%s.clip", op->name), 3, (const char *[]){x, lo, hi},
                  vname(w, out));
    } else {
        onnx_node(&w->b, "Identity", NULL, onnx_str(&w->b, "%s.out", op->name), 1, (const char *[]){x},
                  vname(w, out));
    }
}

/* ---- the exact form: the spec's integer arithmetic in integer ONNX ops ---- */

static Onnx__NodeProto *node2(writer *w, const char *op, const char *name, const char *a, const char *b,
                              const char *y) {
    return onnx_node(&w->b, op, NULL, name, 2, (const char *[]){a, b}, y);
}

/* An int64 constant "<pre>.<what>" of n values (n = 1: a scalar) broadcast over (N, n, 1,
 * 1) when rank4, else (N, n). */
static char *const_i64(writer *w, const char *pre, const char *what, int n, bool rank4, const int64_t *v) {
    char *name = onnx_str(&w->b, "%s.%s", pre, what);
    if (n == 1) onnx_init(&w->b, name, I64, 8, 0, NULL, v);
    else if (rank4) onnx_init(&w->b, name, I64, 8, 4, (int64_t[]){1, n, 1, 1}, v);
    else onnx_init(&w->b, name, I64, 8, 2, (int64_t[]){1, n}, v);
    return name;
}

/* int8-spec.md's MultiplyByQuantizedMultiplier on the int64 tensor x, per channel (n
 * multipliers) or with one; returns the int64 result's name. Each step is the spec's:
 *   SaturatingRoundingDoublingHighMul(x 2^left, M0): p = x (M0 2^left) (< 2^62: the
 *     exporter bounds x 2^left below 2^31), nudge 2^30 or 1 - 2^30 by the sign of p, then
 *     Div by 2^31, which truncates toward zero in ONNX as C does;
 *   RoundingDivideByPOT(h, right): rem = Mod(h, 2^right) (ONNX's integer Mod takes the
 *     divisor's sign, so rem = h & mask), floor = (h - rem) / 2^right (an exact division:
 *     the arithmetic shift), plus 1 where rem > (mask >> 1) + (h < 0). */
static char *requant_i64(writer *w, const char *pre, const char *x, int n, bool rank4, const int32_t *M0,
                         const int32_t *shift) {
    int64_t *mul = calloc((size_t)n, 8), *pw = calloc((size_t)n, 8), *thr = calloc((size_t)n, 8),
            *thr1 = calloc((size_t)n, 8);
    if (!mul || !pw || !thr || !thr1) {
        w->b.oom = true;
        free(mul), free(pw), free(thr), free(thr1);
        return onnx_str(&w->b, "%s", x);
    }
    for (int c = 0; c < n; c++) {
        const int left = shift[c] > 0 ? shift[c] : 0, right = shift[c] < 0 ? -shift[c] : 0;
        mul[c] = (int64_t)M0[c] * ((int64_t)1 << left);
        pw[c] = (int64_t)1 << right;
        thr[c] = (pw[c] - 1) >> 1;
        thr1[c] = thr[c] + 1;
    }
    const int64_t zero = 0, nudge_pos = (int64_t)1 << 30, nudge_neg = 1 - ((int64_t)1 << 30),
                  two31 = (int64_t)1 << 31;
    char *cmul = const_i64(w, pre, "m0_left", n, rank4, mul), *cpw = const_i64(w, pre, "pow_right", n, rank4, pw),
         *cthr = const_i64(w, pre, "threshold", n, rank4, thr), *cthr1 = const_i64(w, pre, "threshold_neg", n, rank4, thr1),
         *c0 = const_i64(w, pre, "zero", 1, false, &zero), *cnp = const_i64(w, pre, "nudge_pos", 1, false, &nudge_pos),
         *cnn = const_i64(w, pre, "nudge_neg", 1, false, &nudge_neg), *c31 = const_i64(w, pre, "two31", 1, false, &two31);
    free(mul), free(pw), free(thr), free(thr1);
#define T(what) onnx_str(&w->b, "%s.%s", pre, what)
    char *p = T("p"), *ge = T("p_ge0"), *nudge = T("nudge"), *pn = T("p_nudged"), *h = T("high"), *rem = T("rem"),
         *hr = T("high_minus_rem"), *fl = T("floor"), *neg = T("high_neg"), *th = T("thr"), *up = T("round_up"),
         *up64 = T("round_up64"), *y = T("requant");
    node2(w, "Mul", p, x, cmul, p);
    node2(w, "GreaterOrEqual", ge, p, c0, ge);
    onnx_node(&w->b, "Where", NULL, nudge, 3, (const char *[]){ge, cnp, cnn}, nudge);
    node2(w, "Add", pn, p, nudge, pn);
    node2(w, "Div", h, pn, c31, h);
    Onnx__NodeProto *md = node2(w, "Mod", rem, h, cpw, rem);
    onnx_attr_int(&w->b, md, "fmod", 0);
    node2(w, "Sub", hr, h, rem, hr);
    node2(w, "Div", fl, hr, cpw, fl);
    node2(w, "Less", neg, h, c0, neg);
    onnx_node(&w->b, "Where", NULL, th, 3, (const char *[]){neg, cthr1, cthr}, th);
    node2(w, "Greater", up, rem, th, up);
    onnx_attr_int(&w->b, onnx_node(&w->b, "Cast", NULL, up64, 1, (const char *[]){up}, up64), "to", I64);
    node2(w, "Add", y, fl, up64, y);
#undef T
    return y;
}

/* q (int64, before the zero point) + z_out, clamped to [act_min, act_max], as the uint8
 * value out. */
static void finish_u8(writer *w, const qat_int_op *op, const char *q, int out) {
    const int64_t zu = w->im->values[out].zero_point + 128, lo = op->act_min + 128, hi = op->act_max + 128;
    char *cz = const_i64(w, op->name, "z_out_u8", 1, false, &zu), *clo = const_i64(w, op->name, "act_min_u8", 1, false, &lo),
         *chi = const_i64(w, op->name, "act_max_u8", 1, false, &hi);
    char *yz = onnx_str(&w->b, "%s.with_zp", op->name), *yc = onnx_str(&w->b, "%s.clamped", op->name);
    node2(w, "Add", yz, q, cz, yz);
    onnx_node(&w->b, "Clip", NULL, yc, 3, (const char *[]){yz, clo, chi}, yc);
    onnx_attr_int(&w->b, onnx_node(&w->b, "Cast", NULL, onnx_str(&w->b, "%s.to_u8", op->name), 1, (const char *[]){yc},
                                   vname(w, out)),
                  "to", U8);
}

/* The weights as uint8 with zero point 128 (w + 128, the same affine values). ONNX
 * Runtime's x86 kernels for uint8 x int8 (u8s8) multiply with VPMADDUBSW, which adds
 * two products in int16 and saturates (255 * 127 * 2 > 32767) on CPUs without VNNI
 * (AVX2, AVX-512 before Cascade Lake): measured on an AVX2 AMD EPYC, the CNN's top-1
 * agreement with qat's runtime fell to 98.9% (26 steps at worst) with int8 weights, and
 * is 99.9% (1 step) with these. Its uint8 x uint8 kernels widen to int16 first, exact
 * everywhere. NULL when out of memory. */
static uint8_t *weights_u8(const qat_int_op *op, size_t *n) {
    size_t nw = 1;
    for (int d = 0; d < op->w_ndim; d++) nw *= (size_t)op->w_shape[d];
    uint8_t *wu = malloc(nw ? nw : 1);
    if (wu)
        for (size_t k = 0; k < nw; k++) wu[k] = (uint8_t)(op->weight[k] + 128);
    *n = nw;
    return wu;
}

/* conv2d / linear, exact: Pad with the input's zero point (the spec's padding), then
 * ConvInteger or MatMulInteger (weights_u8, transposed to (F, OC) for MatMulInteger),
 * the int32 bias, and the requantization in int64. */
static void weighted_exact(writer *w, const qat_int_op *op, const char *x) {
    const int64_t OC = op->w_shape[0];
    const bool conv = op->kind == QAT_INT_OP_CONV2D;
    const int i = op->in[0];
    size_t nw;
    uint8_t *wu = weights_u8(op, &nw), *wt = malloc(nw ? nw : 1);
    if (!wu || !wt) {
        w->b.oom = true;
        free(wu), free(wt);
        return;
    }
    char *xz = onnx_str(&w->b, "%s.x_zp", op->name), *acc = onnx_str(&w->b, "%s.acc", op->name);
    char *wz = onnx_str(&w->b, "%s.weight_zp", op->name);
    onnx_init_scalar_u8(&w->b, xz, zp_u8(w->im->values[i].zero_point));
    onnx_init_scalar_u8(&w->b, wz, 128);
    if (conv) {
        char *wn = onnx_str(&w->b, "%s.weight_u8", op->name);
        onnx_init(&w->b, wn, U8, 1, op->w_ndim, op->w_shape, wu);
        const char *xp = x;
        if (op->pad) {
            const int64_t p = op->pad;
            char *pads = onnx_str(&w->b, "%s.pads", op->name);
            onnx_init(&w->b, pads, I64, 8, 1, (int64_t[]){8}, (int64_t[]){0, 0, p, p, 0, 0, p, p});
            xp = onnx_str(&w->b, "%s.padded", op->name);
            onnx_node(&w->b, "Pad", NULL, xp, 3, (const char *[]){x, pads, xz}, xp);
        }
        Onnx__NodeProto *n = onnx_node(&w->b, "ConvInteger", NULL, op->name, 4, (const char *[]){xp, wn, xz, wz}, acc);
        const int64_t k = op->kernel, s = op->stride;
        onnx_attr_ints(&w->b, n, "kernel_shape", 2, (int64_t[]){k, k});
        onnx_attr_ints(&w->b, n, "strides", 2, (int64_t[]){s, s});
        onnx_attr_int(&w->b, n, "group", op->groups);
    } else {
        const int64_t F = op->w_shape[1];
        for (int64_t c = 0; c < OC; c++)
            for (int64_t f = 0; f < F; f++) wt[f * OC + c] = wu[c * F + f];
        char *wn = onnx_str(&w->b, "%s.weight_t", op->name);
        onnx_init(&w->b, wn, U8, 1, 2, (int64_t[]){F, OC}, wt);
        onnx_node(&w->b, "MatMulInteger", NULL, op->name, 4, (const char *[]){x, wn, xz, wz}, acc);
    }
    free(wu), free(wt);
    char *bn = onnx_str(&w->b, "%s.bias", op->name), *ab = onnx_str(&w->b, "%s.acc_bias", op->name),
         *a64 = onnx_str(&w->b, "%s.acc64", op->name);
    if (conv) onnx_init(&w->b, bn, I32, 4, 4, (int64_t[]){1, OC, 1, 1}, op->bias);
    else onnx_init(&w->b, bn, I32, 4, 2, (int64_t[]){1, OC}, op->bias);
    node2(w, "Add", ab, acc, bn, ab);
    onnx_attr_int(&w->b, onnx_node(&w->b, "Cast", NULL, a64, 1, (const char *[]){ab}, a64), "to", I64);
    finish_u8(w, op, requant_i64(w, op->name, a64, (int)OC, conv, op->mult, op->shift), op->out);
}

/* add, exact: the TFLite scheme of int8-spec.md in int64. */
static void add_exact(writer *w, const qat_int_op *op) {
    const int in[2] = {op->in[0], op->in[1]};
    const int32_t M[2] = {op->mult_a, op->mult_b}, S[2] = {op->shift_a, op->shift_b};
    char *r[2];
    for (int k = 0; k < 2; k++) {
        char *pre = onnx_str(&w->b, "%s.%c", op->name, "ab"[k]);
        const int64_t zu = w->im->values[in[k]].zero_point + 128, two20 = (int64_t)1 << 20;
        char *cz = const_i64(w, pre, "zp_u8", 1, false, &zu), *c20 = const_i64(w, pre, "two20", 1, false, &two20);
        char *x64 = onnx_str(&w->b, "%s.x64", pre), *xc = onnx_str(&w->b, "%s.centred", pre),
             *xs = onnx_str(&w->b, "%s.shifted", pre);
        onnx_attr_int(&w->b, onnx_node(&w->b, "Cast", NULL, x64, 1, (const char *[]){vname(w, in[k])}, x64), "to", I64);
        node2(w, "Sub", xc, x64, cz, xc);
        node2(w, "Mul", xs, xc, c20, xs);
        r[k] = requant_i64(w, pre, xs, 1, false, &M[k], &S[k]);
    }
    char *sum = onnx_str(&w->b, "%s.sum", op->name);
    node2(w, "Add", sum, r[0], r[1], sum);
    char *pre = onnx_str(&w->b, "%s.out", op->name);
    finish_u8(w, op, requant_i64(w, pre, sum, 1, false, &op->mult_out, &op->shift_out), op->out);
}

/* A conv2d or linear op. Weight scales from the lowered multipliers (onnx.h). */
static void weighted(writer *w, const qat_int_op *op) {
    const qat_int_model *im = w->im;
    const qat_int_value *in = &im->values[op->in[0]], *out = &im->values[op->out];
    const int64_t OC = op->w_shape[0];
    const bool conv = op->kind == QAT_INT_OP_CONV2D;
    float *sw = calloc((size_t)OC, sizeof *sw), *sb = calloc((size_t)OC, sizeof *sb);
    uint8_t *zw = malloc((size_t)OC), *wu = NULL;
    int32_t *zb = calloc((size_t)OC, sizeof *zb);
    if (!sw || !sb || !zw || !zb) {
        w->b.oom = true;
        goto done;
    }
    for (int64_t c = 0; c < OC; c++) {
        /* m = M0 2^(shift - 31) exactly; M0 = 0 (m below 2^-32: the output is the zero
         * point) becomes 2^-60, which rounds every accumulator to 0 as well. */
        double m = op->mult[c] ? ldexp((double)op->mult[c], op->shift[c] - 31) : ldexp(1.0, -60);
        sw[c] = (float)(m * (double)out->scale / (double)in->scale);
        sb[c] = in->scale * sw[c];
    }
    const char *x = vname(w, op->in[0]);
    const bool flat = !conv && in->ndim != 1;
    if (flat) { /* linear reads any shape: flatten first */
        char *fl = onnx_str(&w->b, "%s.flat", op->name);
        onnx_attr_int(&w->b, onnx_node(&w->b, "Flatten", NULL, fl, 1, (const char *[]){x}, fl), "axis", 1);
        x = fl;
    }
    if (w->form == QAT_ONNX_FORM_EXACT) {
        weighted_exact(w, op, x);
        goto done;
    }
    size_t nw;
    if (!(wu = weights_u8(op, &nw))) {
        w->b.oom = true;
        goto done;
    }
    memset(zw, 128, (size_t)OC);
    char *wn = onnx_str(&w->b, "%s.weight", op->name), *ws = onnx_str(&w->b, "%s.weight_scale", op->name),
         *wz = onnx_str(&w->b, "%s.weight_zp", op->name), *bn = onnx_str(&w->b, "%s.bias", op->name);
    onnx_init(&w->b, wn, U8, 1, op->w_ndim, op->w_shape, wu);
    onnx_init_f32(&w->b, ws, 1, &OC, sw);
    onnx_init(&w->b, wz, U8, 1, 1, &OC, zw);
    onnx_init(&w->b, bn, I32, 4, 1, &OC, op->bias);
    Onnx__NodeProto *n;
    if (w->form == QAT_ONNX_FORM_QOPERATOR) {
        char *y = onnx_str(&w->b, "%s.y", op->name);
        if (conv)
            n = onnx_node(&w->b, "QLinearConv", NULL, op->name, 9,
                          (const char *[]){x, vscale(w, op->in[0]), vzp(w, op->in[0]), wn, ws, wz,
                                           vscale(w, op->out), vzp(w, op->out), bn},
                          y);
        else {
            n = onnx_node(&w->b, "QGemm", QAT_ONNX_MS_DOMAIN, op->name, 9,
                          (const char *[]){x, vscale(w, op->in[0]), vzp(w, op->in[0]), wn, ws, wz, bn,
                                           vscale(w, op->out), vzp(w, op->out)},
                          y);
            onnx_attr_int(&w->b, n, "transB", 1);
        }
        if (conv) {
            const int64_t k = op->kernel, s = op->stride, p = op->pad;
            onnx_attr_ints(&w->b, n, "kernel_shape", 2, (int64_t[]){k, k});
            onnx_attr_ints(&w->b, n, "strides", 2, (int64_t[]){s, s});
            onnx_attr_ints(&w->b, n, "pads", 4, (int64_t[]){p, p, p, p});
            onnx_attr_int(&w->b, n, "group", op->groups);
        }
        clamp_u8(w, op, y, op->out);
    } else {
        char *bs = onnx_str(&w->b, "%s.bias_scale", op->name), *bz = onnx_str(&w->b, "%s.bias_zp", op->name);
        onnx_init_f32(&w->b, bs, 1, &OC, sb);
        onnx_init(&w->b, bz, I32, 4, 1, &OC, zb);
        char *wf = onnx_str(&w->b, "%s.weight.f", op->name), *bf = onnx_str(&w->b, "%s.bias.f", op->name);
        onnx_attr_int(&w->b,
                      onnx_node(&w->b, "DequantizeLinear", NULL, onnx_str(&w->b, "dq_%s", wn), 3,
                                (const char *[]){wn, ws, wz}, wf),
                      "axis", 0);
        onnx_attr_int(&w->b,
                      onnx_node(&w->b, "DequantizeLinear", NULL, onnx_str(&w->b, "dq_%s", bn), 3,
                                (const char *[]){bn, bs, bz}, bf),
                      "axis", 0);
        char *xf = dequant_as(w, x, op->in[0], op->name);
        char *y = onnx_str(&w->b, "%s.y", op->name);
        n = onnx_node(&w->b, conv ? "Conv" : "Gemm", NULL, op->name, 3, (const char *[]){xf, wf, bf}, y);
        if (conv) {
            const int64_t k = op->kernel, s = op->stride, p = op->pad;
            onnx_attr_ints(&w->b, n, "kernel_shape", 2, (int64_t[]){k, k});
            onnx_attr_ints(&w->b, n, "strides", 2, (int64_t[]){s, s});
            onnx_attr_ints(&w->b, n, "pads", 4, (int64_t[]){p, p, p, p});
            onnx_attr_int(&w->b, n, "group", op->groups);
        } else {
            onnx_attr_int(&w->b, n, "transB", 1);
        }
        quant_out(w, op, y, op->out);
    }
done:
    free(sw);
    free(sb);
    free(zw);
    free(wu);
    free(zb);
}

/* The output scale an average pool is given in ONNX: its value's scale s times
 * (1 - eps). The spec rounds the mean d / n half away from zero, ORT rounds half to
 * even, and a 2x2 pool has a tie on a quarter of its outputs. Dividing by s (1 - eps)
 * instead of s multiplies the mean by 1 + eps (to first order), which moves every tie
 * away from zero, where the spec rounds it, while the other means, at least 1 / (2n)
 * from a rounding boundary and at most 255 in magnitude, stay on their side as long as
 * 255 eps < 1 / (2n): eps = 1 / (1024 n) does, and it is still far above the float error
 * of ORT's own multiplier (~1e-7). The output tensor is the same uint8 value, so the ops
 * that read it use its true scale. */
static char *tie_scale(writer *w, const qat_int_op *op) {
    const qat_int_value *in = &w->im->values[op->in[0]];
    const double n = op->kind == QAT_INT_OP_GLOBAL_AVGPOOL ? (double)in->shape[1] * in->shape[2]
                                                           : (double)op->kernel * op->kernel;
    char *name = onnx_str(&w->b, "%s.y_scale", op->name);
    onnx_init_scalar_f32(&w->b, name, (float)((double)w->im->values[op->out].scale * (1.0 - 1.0 / (1024.0 * n))));
    return name;
}

/* Pools: max pool works on uint8 in both forms (its output is one of its inputs). */
static void pool(writer *w, const qat_int_op *op) {
    const int i = op->in[0], o = op->out;
    const int64_t k = op->kernel, s = op->stride, p = op->pad;
    Onnx__NodeProto *n;
    if (op->kind == QAT_INT_OP_MAXPOOL) {
        n = onnx_node(&w->b, "MaxPool", NULL, op->name, 1, (const char *[]){vname(w, i)}, vname(w, o));
    } else if (w->form != QAT_ONNX_FORM_QDQ) { /* QOperator and exact */
        const bool global = op->kind == QAT_INT_OP_GLOBAL_AVGPOOL;
        char *y = global ? onnx_str(&w->b, "%s.y", op->name) : vname(w, o);
        n = onnx_node(&w->b, global ? "QLinearGlobalAveragePool" : "QLinearAveragePool", QAT_ONNX_MS_DOMAIN,
                      op->name, 5,
                      (const char *[]){vname(w, i), vscale(w, i), vzp(w, i), tie_scale(w, op), vzp(w, o)}, y);
        if (global) {
            onnx_attr_int(&w->b, n, "channels_last", 0);
            /* (N, C, 1, 1) to the (N, C) vector the integer model has */
            onnx_attr_int(&w->b, onnx_node(&w->b, "Flatten", NULL, onnx_str(&w->b, "%s.flatten", op->name), 1,
                                           (const char *[]){y}, vname(w, o)),
                          "axis", 1);
            return;
        }
    } else {
        const bool global = op->kind == QAT_INT_OP_GLOBAL_AVGPOOL;
        char *y = onnx_str(&w->b, "%s.y", op->name);
        n = onnx_node(&w->b, global ? "GlobalAveragePool" : "AveragePool", NULL, op->name, 1,
                      (const char *[]){dequant(w, i, op->name)}, y);
        if (global) {
            /* Quantized before the flatten, so ORT sees DQ -> GlobalAveragePool -> Q and
             * fuses it into QLinearGlobalAveragePool. */
            char *yq = onnx_str(&w->b, "%s.yq", op->name);
            onnx_node(&w->b, "QuantizeLinear", NULL, onnx_str(&w->b, "q_%s", op->name), 3,
                      (const char *[]){y, tie_scale(w, op), vzp(w, o)}, yq);
            onnx_attr_int(&w->b, onnx_node(&w->b, "Flatten", NULL, onnx_str(&w->b, "%s.flatten", op->name), 1,
                                           (const char *[]){yq}, vname(w, o)),
                          "axis", 1);
            return;
        } else {
            onnx_attr_ints(&w->b, n, "kernel_shape", 2, (int64_t[]){k, k});
            onnx_attr_ints(&w->b, n, "strides", 2, (int64_t[]){s, s});
            onnx_attr_ints(&w->b, n, "pads", 4, (int64_t[]){p, p, p, p});
            onnx_attr_int(&w->b, n, "count_include_pad", 1);
        }
        onnx_node(&w->b, "QuantizeLinear", NULL, onnx_str(&w->b, "q_v%d", o), 3,
                  (const char *[]){y, tie_scale(w, op), vzp(w, o)}, vname(w, o));
        return;
    }
    onnx_attr_ints(&w->b, n, "kernel_shape", 2, (int64_t[]){k, k});
    onnx_attr_ints(&w->b, n, "strides", 2, (int64_t[]){s, s});
    onnx_attr_ints(&w->b, n, "pads", 4, (int64_t[]){p, p, p, p});
    /* the spec's average pool counts padded positions in n (count_include_pad) */
    if (op->kind == QAT_INT_OP_AVGPOOL) onnx_attr_int(&w->b, n, "count_include_pad", 1);
}

static void add(writer *w, const qat_int_op *op) {
    const int a = op->in[0], c = op->in[1], o = op->out;
    char *y = onnx_str(&w->b, "%s.y", op->name);
    if (w->form == QAT_ONNX_FORM_EXACT) {
        add_exact(w, op);
    } else if (w->form == QAT_ONNX_FORM_QOPERATOR) {
        onnx_node(&w->b, "QLinearAdd", QAT_ONNX_MS_DOMAIN, op->name, 8,
                  (const char *[]){vname(w, a), vscale(w, a), vzp(w, a), vname(w, c), vscale(w, c), vzp(w, c),
                                   vscale(w, o), vzp(w, o)},
                  y);
        clamp_u8(w, op, y, o);
    } else {
        onnx_node(&w->b, "Add", NULL, op->name, 2, (const char *[]){dequant(w, a, op->name), dequant(w, c, op->name)}, y);
        quant_out(w, op, y, o);
    }
}

/* A lookup table (sigmoid, tanh, hard-swish, leaky ReLU): the spec's 256 entries as they
 * are, in every form: values travel as uint8 u = q + 128, so the output is
 * table_u8[u] with table_u8[i] = T[i] + 128, a Gather by u. Exact in ONNX Runtime (no
 * float requantization of a function that ORT would evaluate differently); the real
 * function is named in the node's doc string for people and tools. */
static void lut(writer *w, const qat_int_op *op) {
    uint8_t table[256];
    for (int i = 0; i < 256; i++) table[i] = (uint8_t)(op->table[i] + 128);
    char *tn = onnx_str(&w->b, "%s.table", op->name), *idx = onnx_str(&w->b, "%s.index", op->name);
    onnx_init(&w->b, tn, U8, 1, 1, (int64_t[]){256}, table);
    onnx_attr_int(&w->b,
                  onnx_node(&w->b, "Cast", NULL, onnx_str(&w->b, "%s.cast", op->name), 1,
                            (const char *[]){vname(w, op->in[0])}, idx),
                  "to", I64);
    Onnx__NodeProto *n = onnx_node(&w->b, "Gather", NULL, op->name, 2, (const char *[]){tn, idx}, vname(w, op->out));
    onnx_attr_int(&w->b, n, "axis", 0);
    if (n) {
        char doc[160];
        if (op->lut_fn == QAT_LUT_LEAKY_RELU)
            snprintf(doc, sizeof doc, "qat lookup table of %s (alpha %.9g), int8-spec.md", qat_lut_fn_str(op->lut_fn),
                     (double)op->lut_alpha);
        else
            snprintf(doc, sizeof doc, "qat lookup table of %s, int8-spec.md", qat_lut_fn_str(op->lut_fn));
        n->doc_string = onnx_str(&w->b, "%s", doc);
    }
}

static void emit_op(writer *w, const qat_int_op *op) {
    switch (op->kind) {
    case QAT_INT_OP_CONV2D:
    case QAT_INT_OP_LINEAR: weighted(w, op); return;
    case QAT_INT_OP_MAXPOOL:
    case QAT_INT_OP_AVGPOOL:
    case QAT_INT_OP_GLOBAL_AVGPOOL: pool(w, op); return;
    case QAT_INT_OP_ADD: add(w, op); return;
    case QAT_INT_OP_FLATTEN:
        onnx_attr_int(&w->b,
                      onnx_node(&w->b, "Flatten", NULL, op->name, 1, (const char *[]){vname(w, op->in[0])},
                                vname(w, op->out)),
                      "axis", 1);
        return;
    case QAT_INT_OP_LUT: lut(w, op); return;
    case QAT_INT_OP_COUNT: break;
    }
    QAT_ASSERT(!"emit_op: not an op kind");
}

qat_status qat_onnx_write_int(const qat_int_model *im, const char *path, qat_onnx_form form,
                              const qat_st_kv *meta, size_t n_meta, qat_onnx_report *rep, qat_error *err) {
    QAT_ASSERT(im != NULL && path != NULL && (meta != NULL || n_meta == 0) && (unsigned)form < QAT_ONNX_FORM_COUNT);
    QAT_ASSERT(im->n_values > 0 && im->values[0].ndim == 3 && im->output >= 0 && im->output < im->n_values);
    for (int i = 0; i < im->n_values; i++)
        if (!(im->values[i].scale > 0.0f) || !isfinite(im->values[i].scale))
            return qat_error_set(err, QAT_STATUS_INVALID_ARG, "%s: value %d has scale %g: not writable as ONNX",
                                 path, i, (double)im->values[i].scale);
    writer w = {.im = im, .form = form, .scale_used = calloc((size_t)im->n_values, sizeof(bool)),
                .zp_used = calloc((size_t)im->n_values, sizeof(bool))};
    if (!w.scale_used || !w.zp_used) {
        free(w.scale_used);
        free(w.zp_used);
        return qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
    }
    onnx_b_init(&w.b);
    for (int i = 0; i < im->n_ops; i++) emit_op(&w, &im->ops[i]);
    const qat_int_value *in = &im->values[0], *out = &im->values[im->output];
    onnx_node(&w.b, "DequantizeLinear", NULL, "logits", 3,
              (const char *[]){vname(&w, im->output), vscale(&w, im->output), vzp(&w, im->output)}, "logits");
    for (int i = 0; i < im->n_values; i++) {
        if (w.scale_used[i]) onnx_init_scalar_f32(&w.b, onnx_str(&w.b, "v%d.scale", i), im->values[i].scale);
        if (w.zp_used[i]) onnx_init_scalar_u8(&w.b, onnx_str(&w.b, "v%d.zp", i), zp_u8(im->values[i].zero_point));
    }
    free(w.scale_used);
    free(w.zp_used);
    onnx_input(&w.b, "pixels", U8, 4, (int64_t[]){-1, in->shape[0], in->shape[1], in->shape[2]});
    onnx_output(&w.b, "logits", F32, 2, (int64_t[]){-1, out->shape[0]});
    /* The writer's own keys first; meta's pairs after them, except keys it repeats. */
    char input[256], output[256];
    snprintf(input, sizeof input,
             "pixels: uint8 (N, C, H, W), raw pixel values 0..255; real input = %.9g * (p - %d) = "
             "(p / 255 - mean) / std (int8-spec.md: q_in = p - 128, z_in = %d)",
             (double)in->scale, zp_u8(in->zero_point), in->zero_point);
    snprintf(output, sizeof output,
             "logits: float32 (N, %d), the int8 logits dequantized: %.9g * (q - %d); argmax = the int8 argmax",
             out->shape[0], (double)out->scale, out->zero_point);
    const char *format = form == QAT_ONNX_FORM_QDQ     ? "int8-qdq"
                         : form == QAT_ONNX_FORM_EXACT ? "int8-exact"
                                                       : "int8-qoperator";
    const qat_st_kv own[] = {{"qat.format", format}, {"qat.input", input}, {"qat.output", output}};
    qat_status st = onnx_b_write(&w.b, path, "qat_int8", "int8 model exported by qat (docs/onnx.md)", own, 3, meta, n_meta,
                                 rep, err);
    onnx_b_free(&w.b);
    return st;
}
