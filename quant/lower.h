/* lower.h - a quantized model (QAT or PTQ, quant/quant.h) lowered to an integer model in
 * memory: ops over int8 values, with int8 weights, int32 biases, fixed-point multipliers,
 * zero points and clamps, exactly the integers ../shared/int8-spec.md computes with.
 * Lowering decides every number once; writers only serialise (export/int8.h writes qat's
 * int8 file; an ONNX or C-source writer takes the same structure).
 *
 *     qat_int_model im;
 *     if (qat_lower(m, &im, &err)) { ... err.msg names the layer ... }
 *     ... im.ops[i], im.values[im.ops[i].out], ...
 *     qat_int_model_free(&im);
 *
 * Per conv/linear unit (quant.h: the layer, its folded batch norm and fused ReLU/ReLU6/
 * PACT): weights folded with the running BN statistics and quantized with qat_quantize
 * (the division and rounding fake quant uses), biases on the int32 grid s_in * s_w[c],
 * the multiplier s_in * s_w[c] / s_out as (M0, shift), the clamp of the fused
 * activation. A residual add gets the TFLite ADD multipliers; pools and flatten keep
 * their input's scale and zero point; dropout disappears (the identity at inference). A
 * sigmoid, tanh, hard-swish or leaky ReLU becomes a lookup table of 256 int8 entries
 * (int8-spec.md, "Other ops"), made here in double precision by qat_lut_make, with the
 * function named (lut_fn, lut_alpha) so that writers of other formats can emit the real
 * function instead of the table.
 *
 * Refused, with the layer named: a model without the spec's fixed input mapping (raw
 * uint8 pixels), per-group weight scales, ops the integer model lacks (a batch norm or
 * ReLU that no conv precedes), a non-finite weight, a bias beyond int32,
 * and any layer whose accumulator could overflow (K * 255 * max|w| + max|bias| >= 2^31).
 * The model is only read: lowering computes scales from the current ranges, parameters
 * and weights (qat_qpoint_qparams, qat_quant_weight_scales) and caches nothing.
 *
 * This file and quant/lower.c are, with layers/ and the float ONNX writer
 * (export/onnx_float.c), the only places that switch on layer kinds: a new layer kind the
 * integer model should run gets its case here.
 */
#ifndef QAT_LOWER_H
#define QAT_LOWER_H

#include <stdint.h>

#include "quant.h"

/* The spec's fixed-point multiplier: m ~= M0 * 2^(shift - 31), M0 in [2^30, 2^31);
 * M0 = 0, shift = 0 when m is too small (shift < -31) or m <= 0. m must be < 2^31. */
void qat_quantize_multiplier(double m, int32_t *M0, int *shift);

typedef enum qat_int_op_kind {
    QAT_INT_OP_CONV2D,
    QAT_INT_OP_LINEAR,
    QAT_INT_OP_MAXPOOL,
    QAT_INT_OP_AVGPOOL,
    QAT_INT_OP_GLOBAL_AVGPOOL,
    QAT_INT_OP_ADD,
    QAT_INT_OP_FLATTEN,
    QAT_INT_OP_LUT,
    QAT_INT_OP_COUNT
} qat_int_op_kind;

/* "conv2d", "linear", "maxpool", "avgpool", "global_avgpool", "add", "flatten", "lut":
 * the names of docs/int8-format.md's graph. */
const char *qat_int_op_kind_str(qat_int_op_kind k);

/* The real function a lookup table stands for. */
typedef enum qat_lut_fn {
    QAT_LUT_SIGMOID,    /* 1 / (1 + e^-x) */
    QAT_LUT_TANH,       /* tanh x */
    QAT_LUT_HARDSWISH,  /* x * min(max(x + 3, 0), 6) / 6 */
    QAT_LUT_LEAKY_RELU, /* x > 0 ? x : alpha x */
    QAT_LUT_FN_COUNT
} qat_lut_fn;

/* "sigmoid", "tanh", "hardswish", "leaky_relu" (the graph's fn= field, the model-file
 * keywords). */
const char *qat_lut_fn_str(qat_lut_fn fn);
/* f(x) in double precision (alpha: leaky ReLU's slope, ignored by the others). */
/* The table function of a layer (sigmoid, tanh, hard-swish, leaky ReLU with its slope);
 * false for a layer the runtime does not run as a table. */
bool qat_lut_fn_of(const qat_layer *l, qat_lut_fn *fn, float *alpha);
double qat_lut_fn_eval(qat_lut_fn fn, double alpha, double x);
/* The spec's table: T[i] = clamp(round(f(s_in (i - 128 - z_in)) / s_out) + z_out, qmin,
 * qmax) for i = 0..255, in double, round half away from zero; [qmin, qmax] is [-128, 127]
 * at 8 bits (a sub-range below, the output point's levels). */
void qat_lut_make(int8_t table[256], qat_lut_fn fn, double alpha, double s_in, int32_t z_in,
                  double s_out, int32_t z_out, int32_t qmin, int32_t qmax);

/* An int8 tensor of the graph, per sample: real = scale * (q - zero_point). */
typedef struct qat_int_value {
    int ndim, shape[3]; /* (C, H, W) or (F) */
    float scale;
    int32_t zero_point;
} qat_int_value;

/* One op. Fields a kind does not use are 0 / NULL. */
typedef struct qat_int_op {
    qat_int_op_kind kind;
    char name[QAT_NAME_LEN]; /* the layer it lowers ("3", "4.body.0"): names its tensors */
    int n_in, in[2], out;    /* value indices: add reads two, the others one */
    int kernel, stride, pad, groups; /* conv2d (groups), maxpool, avgpool */
    /* conv2d, linear: */
    int wbits;                        /* 2..8: weights in [-(2^(wbits-1) - 1), 2^(wbits-1) - 1] */
    int w_ndim;
    int64_t w_shape[4];               /* (OC, C / groups, k, k) or (OC, F) */
    int8_t *weight;                   /* the product of w_shape, row-major */
    int32_t *bias, *mult, *shift;     /* (OC) each */
    /* conv2d, linear, add: the output clamp, within [-128, 127] */
    int32_t act_min, act_max;
    /* add (int8-spec.md, "Other ops"): each input to the common scale, then the output's */
    int32_t mult_a, shift_a, mult_b, shift_b, mult_out, shift_out;
    /* lut: q_out = table[q_in + 128] (256 entries, owned by the int model); the function
     * it tabulates and leaky ReLU's slope (0 for the others) */
    int8_t *table;
    qat_lut_fn lut_fn;
    float lut_alpha;
} qat_int_op;

typedef struct qat_int_model {
    qat_int_value *values; /* values[0] is the input: raw pixels p as q = p - 128 */
    int n_values;
    qat_int_op *ops;       /* in execution order; each op writes the next value */
    int n_ops;
    int output;            /* the logits: a vector value */
} qat_int_model;

/* Lowers `m` (prepared with qat_quant_prepare, calibrated or trained) into *im. On
 * failure returns INVALID_ARG (not lowerable), NUMERIC (a value out of range) or NOMEM
 * with the layer named in err, and leaves *im empty (qat_int_model_free is safe). */
qat_status qat_lower(const qat_model *m, qat_int_model *im, qat_error *err);
void qat_int_model_free(qat_int_model *im);

#endif
