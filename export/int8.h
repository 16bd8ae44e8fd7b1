/* int8.h - the writer of qat's integer-only model file (docs/int8-format.md), which
 * runtime/ executes: a safetensors container whose tensors are the lowered model's
 * integers (int8 weights, packed two per byte at 4 bits or fewer; int32 biases,
 * multipliers and shifts) and whose metadata holds the graph as text.
 *
 *     qat_int_model im;
 *     qat_export_report rep;
 *     if (qat_lower(m, &im, &err) || qat_int8_write(&im, "model.int8", meta, n_meta, &rep, &err))
 *         puts(err.msg);
 *     qat_int_model_free(&im);
 *
 * or qat_export_int8(m, ...) for both steps. A writer of another format (ONNX, C source)
 * sits beside this one and takes the same qat_int_model (quant/lower.h).
 */
#ifndef QAT_EXPORT_INT8_H
#define QAT_EXPORT_INT8_H

#include "io/safetensors.h"
#include "quant/lower.h"

#define QAT_INT8_FORMAT "qat-int8"
#define QAT_INT8_VERSION 1

typedef struct qat_export_report {
    size_t weight_bytes; /* int8 / packed weights */
    size_t other_bytes;  /* biases, multipliers, shifts */
    size_t file_bytes;
    int n_ops;
} qat_export_report;

/* Writes the lowered model to `path`, atomically; `meta` (may be NULL) adds metadata for
 * people and tools (keys "format", "format_version" and "graph" are the writer's own and
 * skipped). `rep` may be NULL. IO, NOMEM or INVALID_ARG with the path in the message. */
qat_status qat_int8_write(const qat_int_model *im, const char *path, const qat_st_kv *meta,
                          size_t n_meta, qat_export_report *rep, qat_error *err);

/* The bytes qat_int8_write would write, in a new buffer (*out, *len; free() it): what
 * `qat eval` of a quantized checkpoint runs on the runtime. `name` labels messages. */
qat_status qat_int8_encode(const qat_int_model *im, const char *name, const qat_st_kv *meta, size_t n_meta,
                           uint8_t **out, size_t *len, qat_export_report *rep, qat_error *err);

/* qat_lower, then qat_int8_write. */
qat_status qat_export_int8(const qat_model *m, const char *path, const qat_st_kv *meta,
                           size_t n_meta, qat_export_report *rep, qat_error *err);

#endif
