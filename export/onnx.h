/* onnx.h - ONNX writers (docs/onnx.md): the lowered integer model (quant/lower.h) as an
 * ONNX model that ONNX Runtime executes in int8, and a float model (layers/model.h) as a
 * float ONNX model. Both are built with the protobuf-c structs generated from the
 * official onnx.proto (onnx.pb-c.h) and written atomically (io/atomic_file.h); IR
 * version 8, ai.onnx opset 17 (+ com.microsoft 1 for the int8 model's QLinear ops).
 *
 *     qat_int_model im;
 *     if (qat_lower(m, &im, &err) ||
 *         qat_onnx_write_int(&im, "model.onnx", QAT_ONNX_FORM_QOPERATOR, meta, n_meta, &rep, &err))
 *         puts(err.msg);
 *     qat_int_model_free(&im);
 *
 * The int8 model. Activations travel as uint8, q_u8 = q + 128 with zero point z + 128:
 * the same affine values as the spec's int8 (real = s (q - z)). So the input is
 * the raw pixels themselves, "pixels" uint8 (N, C, H, W), with scale 1 / (255 sigma) and
 * zero point round(255 mu) (int8-spec.md's input mapping: q_in = p - 128,
 * z_in = round(255 mu) - 128). The output "logits" is float32 (N, classes), the int8
 * logits dequantized: s_out * (q - z_out); their argmax is the int8 argmax.
 * Weights: uint8, w + 128 with zero point 128 (onnx.c's weights_u8 says why; 4-bit and
 * 2-bit weights too, one per byte), per output channel (axis 0) with scale s_w[c] = m[c] s_out / s_in, where m[c] = M0 2^(shift - 31)
 * is the lowered fixed-point multiplier, so ORT's float multiplier s_in s_w[c] / s_out
 * is the spec's to float precision; biases int32 with scale s_in s_w[c], zero point 0.
 * Three forms (QAT_ONNX_FORM_*; docs/onnx.md says which is the default and why):
 *   QOperator: QLinearConv, com.microsoft QGemm, QLinearAdd, QLinearAveragePool,
 *              QLinearGlobalAveragePool; MaxPool and Flatten on uint8; a fused
 *              ReLU/ReLU6 clamp as Clip on uint8; DequantizeLinear for the logits.
 *   QDQ:       QuantizeLinear/DequantizeLinear around float Conv, Gemm, Add, pools (ORT
 *              fuses the patterns into its integer kernels at load).
 *   exact:     the spec's integers in integer ONNX ops: Pad + ConvInteger or
 *              MatMulInteger into int32, the bias, then the fixed-point multiplier and its
 *              two roundings in int64 (Mul, Where, Add, Div, Mod, ...), the add likewise;
 *              pools as in QOperator form (onnx.c's tie-break makes them exact). It
 *              gives qat's runtime's logits bit for bit, at a cost in speed.
 * In the QOperator and QDQ forms ORT requantizes with a float multiplier and rounds once,
 * where the spec uses fixed point and rounds twice: the two agree on most outputs and
 * differ by one step on a few (docs/onnx.md measures it).
 *
 * The float model: input "pixels" uint8 (N, C, H, W) as well, normalised by the first
 * ops (Cast to int32, Gather from the 256-entry table per channel of
 * (p / 255 - mean[c]) / std[c] in double rounded to float, exactly what qat's data
 * loader feeds the model), then Conv, BatchNormalization, Relu, Clip, Sigmoid, Tanh,
 * MaxPool, AveragePool, GlobalAveragePool, Flatten, Gemm and Add layer by layer; the
 * output "logits" float32 (N, classes).
 *
 * Metadata (metadata_props): meta's pairs (the CLI passes source, class_names, the
 * normalisation, the quant spec) plus the writer's own "qat.format" ("int8-qoperator",
 * "int8-qdq" or "float32"), "qat.input" and "qat.output" describing the mappings.
 */
#ifndef QAT_EXPORT_ONNX_H
#define QAT_EXPORT_ONNX_H

#include "data/loader.h"
#include "io/safetensors.h"
#include "layers/model.h"
#include "quant/lower.h"

typedef enum qat_onnx_form {
    QAT_ONNX_FORM_QOPERATOR,
    QAT_ONNX_FORM_QDQ,
    QAT_ONNX_FORM_EXACT,
    QAT_ONNX_FORM_COUNT
} qat_onnx_form;

/* "qoperator", "qdq", "exact". */
const char *qat_onnx_form_str(qat_onnx_form f);

typedef struct qat_onnx_report {
    size_t file_bytes;
    int n_nodes;
} qat_onnx_report;

/* Writes the integer model as ONNX to `path`, atomically. `rep` may be NULL. IO, NOMEM,
 * INVALID_ARG (a scale that is not finite and positive) with the path in the message. */
qat_status qat_onnx_write_int(const qat_int_model *im, const char *path, qat_onnx_form form,
                              const qat_st_kv *meta, size_t n_meta, qat_onnx_report *rep, qat_error *err);

/* Writes a finalized float model (m->quant is ignored: the float graph) as ONNX to
 * `path`, atomically, with `norm` as its input normalisation (NULL: identity, x = p/255).
 * The model's input must be an image (C, H, W). INVALID_ARG for a model that is not,
 * IO, NOMEM, with the path in the message. */
qat_status qat_onnx_write_float(const qat_model *m, const qat_normalization *norm, const char *path,
                                const qat_st_kv *meta, size_t n_meta, qat_onnx_report *rep, qat_error *err);

#endif
