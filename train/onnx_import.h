/* onnx_import.h - a float ONNX model, as torch.onnx.export writes it for small CNNs and
 * MLPs, read into a qat model and its weights.
 *
 *     qat_model *m;
 *     if (qat_onnx_import("net.onnx", &m, stderr, &err)) { ... err.msg ... }
 *     ... m is finalized and holds the file's weights; qat_model_to_text(m) describes it ...
 *
 * The file is parsed with protobuf-c against the official onnx.proto (the qat_onnx_pb
 * library). The graph must be a chain from its one float input (N, C, H, W) or (N, F) to
 * its one output, where a value read by two nodes opens a residual block whose two
 * branches meet again in an Add (layers/model.h: out = body(x) + shortcut(x); the longer
 * branch becomes the body, an empty one the identity shortcut). Supported nodes
 * (ONNX_IMPORT_SUPPORTED below):
 *   Conv (any groups; square kernel, equal strides, symmetric pads, dilation 1) ->
 *   conv2d; BatchNormalization (epsilon 1e-5, as PyTorch's default; a training-mode export's
 *   extra outputs must be unused) -> batchnorm with its running statistics; Relu; Clip(0, 6)
 *   -> relu6 (Clip(0, inf) -> relu); Sigmoid; Tanh; HardSwish; LeakyRelu (its alpha); MaxPool and AveragePool (square,
 *   ceil_mode 0 or without effect; AveragePool with padding counts the pad, as qat does);
 *   a zero Pad, or a Pad of H and W that an AveragePool reads (torch writes one);
 *   GlobalAveragePool; ReduceMean over H and W -> global_avgpool (+ flatten); Flatten (axis 1) and Reshape to (N, -1) -> flatten; Gemm (alpha and
 *   beta folded, transB 0 or 1) and MatMul by a constant [+ Add of a constant] -> linear;
 *   Add of two values -> the end of a residual block; Dropout -> dropout with its ratio;
 *   Identity; Constant and initializers as weights and attributes.
 *
 * Everything else is refused before a model is returned, with the file's path and, for a
 * node, its name and op type: an unsupported op (and the list above), a protobuf that
 * does not parse (truncated, not ONNX), a value no node or initializer defines (a missing
 * initializer), weights of the wrong shape, dtype (not float32) or with NaN/Inf, tensors
 * stored as external data, a graph that is not a chain of residual blocks.
 *
 * `log` (may be NULL) receives one line per weight: ONNX tensor -> qat state name.
 */
#ifndef QAT_ONNX_IMPORT_H
#define QAT_ONNX_IMPORT_H

#include <stdio.h>

#include "layers/model.h"

/* The ops qat imports, for messages. */
#define ONNX_IMPORT_SUPPORTED                                                                      \
    "Conv, BatchNormalization, Relu, Clip (as ReLU6 or ReLU), Sigmoid, Tanh, HardSwish, "          \
    "LeakyRelu, MaxPool, "                                                                      \
    "AveragePool, Pad (before AveragePool), GlobalAveragePool, ReduceMean (over H, W), Flatten, " \
    "Reshape (to flatten), "                                                                     \
    "Gemm, MatMul, Add (bias or residual), Dropout, Identity, Constant"

/* Files larger than this are refused (a small CNN is kilobytes to a few megabytes). */
#define QAT_ONNX_MAX_BYTES ((size_t)1 << 30)

/* Reads `path`; on success *out is a new finalized model holding the file's weights.
 * Failure: IO (cannot read), FORMAT (everything above), NOMEM; *out NULL and the message
 * starts with the path. */
qat_status qat_onnx_import(const char *path, qat_model **out, FILE *log, qat_error *err);

/* Whether `path` names an ONNX file by its extension (".onnx"). */
bool qat_onnx_path(const char *path);

#endif
