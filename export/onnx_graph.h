/* onnx_graph.h - private to export/: building an ONNX graph with the protobuf-c structs
 * generated from the official onnx.proto (onnx.pb-c.h, target qat_onnx_pb), and writing
 * it through io/atomic_file.h. The two ONNX writers (onnx.c for the integer model,
 * onnx_float.c for the float graph) share it.
 *
 *     onnx_b b;
 *     onnx_b_init(&b);
 *     onnx_init_f32(&b, "w", 2, (int64_t[]){4, 3}, w);           // an initializer
 *     Onnx__NodeProto *n = onnx_node(&b, "Gemm", NULL, "fc", 3, (const char *[]){"x", "w", "b"}, "y");
 *     onnx_attr_int(&b, n, "transB", 1);
 *     onnx_input(&b, "x", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 2, (int64_t[]){-1, 3});  // -1: "N"
 *     onnx_output(&b, "y", ...);
 *     st = onnx_b_write(&b, path, "graph", "doc", own, n_own, meta, n_meta, &rep, err);
 *     onnx_b_free(&b);
 *
 * Every string and array the messages point to is allocated by the builder and freed by
 * onnx_b_free; an allocation failure sets b.oom, later calls do nothing, and
 * onnx_b_write reports NOMEM. The model is IR version 8 with the ai.onnx opset 17 (what
 * onnx 1.12's checker and ONNX Runtime both accept), plus com.microsoft version 1 when a
 * node uses that domain.
 */
#ifndef QAT_ONNX_GRAPH_H
#define QAT_ONNX_GRAPH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "autograd/common.h"
#include "io/safetensors.h"
#include "onnx.h"
#include "onnx.pb-c.h"

#define QAT_ONNX_IR_VERSION 8
#define QAT_ONNX_OPSET 17
#define QAT_ONNX_MS_DOMAIN "com.microsoft"

typedef struct onnx_b {
    void **allocs;
    size_t n_allocs, cap_allocs;
    Onnx__NodeProto **nodes;
    size_t n_nodes, cap_nodes;
    Onnx__TensorProto **inits;
    size_t n_inits, cap_inits;
    Onnx__ValueInfoProto *io[2][4]; /* graph inputs, outputs */
    size_t n_io[2];
    bool uses_ms;                   /* a com.microsoft node */
    bool oom;
} onnx_b;

void onnx_b_init(onnx_b *b);
void onnx_b_free(onnx_b *b);

/* A builder-owned printf'ed string ("" after a failure). */
char *onnx_str(onnx_b *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Initializers: raw little-endian data copied in; ndim 0 is a scalar. */
Onnx__TensorProto *onnx_init(onnx_b *b, const char *name, int32_t data_type, size_t elem_size, int ndim,
                             const int64_t *dims, const void *data);
void onnx_init_f32(onnx_b *b, const char *name, int ndim, const int64_t *dims, const float *data);
void onnx_init_scalar_f32(onnx_b *b, const char *name, float v);
void onnx_init_scalar_u8(onnx_b *b, const char *name, uint8_t v);

/* A node of op_type in `domain` (NULL: ai.onnx) with one output; inputs "" are absent
 * optional inputs. Returns NULL after a failure (the attr calls accept it). */
Onnx__NodeProto *onnx_node(onnx_b *b, const char *op_type, const char *domain, const char *name, int n_in,
                           const char *const *inputs, const char *output);
void onnx_attr_int(onnx_b *b, Onnx__NodeProto *n, const char *name, int64_t v);
void onnx_attr_float(onnx_b *b, Onnx__NodeProto *n, const char *name, float v);
void onnx_attr_ints(onnx_b *b, Onnx__NodeProto *n, const char *name, int n_v, const int64_t *v);

/* A graph input or output: a tensor of elem_type; a dim of -1 is the batch, "N". */
void onnx_input(onnx_b *b, const char *name, int32_t elem_type, int ndim, const int64_t *dims);
void onnx_output(onnx_b *b, const char *name, int32_t elem_type, int ndim, const int64_t *dims);

/* Serialises the model (graph `graph_name`, `doc` as its doc_string) to `path`
 * atomically. Its metadata_props: the writer's own pairs (`own`), then the caller's
 * `meta` but for keys `own` already has. *rep (may be NULL) gets the file size and the
 * node count. IO, NOMEM with the path named. */
qat_status onnx_b_write(onnx_b *b, const char *path, const char *graph_name, const char *doc, const qat_st_kv *own,
                        size_t n_own, const qat_st_kv *meta, size_t n_meta, qat_onnx_report *rep, qat_error *err);

#endif
