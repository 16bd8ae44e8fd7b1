/* onnx_graph.c - the ONNX graph builder shared by the ONNX writers (onnx_graph.h). */
#include "onnx_graph.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/atomic_file.h"

void onnx_b_init(onnx_b *b) { memset(b, 0, sizeof *b); }

void onnx_b_free(onnx_b *b) {
    for (size_t i = 0; i < b->n_allocs; i++) free(b->allocs[i]);
    free(b->allocs);
    free(b->nodes);
    free(b->inits);
    memset(b, 0, sizeof *b);
}

/* Appends p to a growable array of pointers; false (and b->oom) when out of memory. */
static bool push(onnx_b *b, void ***arr, size_t *n, size_t *cap, void *p) {
    if (b->oom || !p) {
        b->oom = true;
        return false;
    }
    if (*n == *cap) {
        size_t c = *cap ? 2 * *cap : 64;
        void **a = realloc(*arr, c * sizeof *a);
        if (!a) {
            b->oom = true;
            return false;
        }
        *arr = a;
        *cap = c;
    }
    (*arr)[(*n)++] = p;
    return true;
}

/* Zeroed, owned by the builder; NULL after a failure. */
static void *alloc(onnx_b *b, size_t n) {
    if (b->oom) return NULL;
    void *p = calloc(1, n ? n : 1);
    if (!push(b, &b->allocs, &b->n_allocs, &b->cap_allocs, p)) {
        free(p);
        return NULL;
    }
    return p;
}

char *onnx_str(onnx_b *b, const char *fmt, ...) {
    static char empty[1];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = n >= 0 ? alloc(b, (size_t)n + 1) : NULL;
    if (!s) return empty;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

Onnx__TensorProto *onnx_init(onnx_b *b, const char *name, int32_t data_type, size_t elem_size, int ndim,
                             const int64_t *dims, const void *data) {
    Onnx__TensorProto *t = alloc(b, sizeof *t);
    size_t n = 1;
    for (int d = 0; d < ndim; d++) n *= (size_t)dims[d];
    int64_t *dd = alloc(b, (size_t)(ndim ? ndim : 1) * sizeof *dd);
    uint8_t *raw = alloc(b, n * elem_size);
    if (!t || !dd || !raw) return NULL;
    onnx__tensor_proto__init(t);
    t->name = onnx_str(b, "%s", name);
    t->has_data_type = 1;
    t->data_type = data_type;
    t->n_dims = (size_t)ndim;
    if (ndim) memcpy(dd, dims, (size_t)ndim * sizeof *dd);
    t->dims = dd;
    /* raw_data is little-endian; so is every machine qat builds on (x86-64, Arm). */
    memcpy(raw, data, n * elem_size);
    t->has_raw_data = 1;
    t->raw_data.len = n * elem_size;
    t->raw_data.data = raw;
    if (!push(b, (void ***)&b->inits, &b->n_inits, &b->cap_inits, t)) return NULL;
    return t;
}

void onnx_init_f32(onnx_b *b, const char *name, int ndim, const int64_t *dims, const float *data) {
    onnx_init(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 4, ndim, dims, data);
}

void onnx_init_scalar_f32(onnx_b *b, const char *name, float v) { onnx_init_f32(b, name, 0, NULL, &v); }

void onnx_init_scalar_u8(onnx_b *b, const char *name, uint8_t v) {
    onnx_init(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__UINT8, 1, 0, NULL, &v);
}

Onnx__NodeProto *onnx_node(onnx_b *b, const char *op_type, const char *domain, const char *name, int n_in,
                           const char *const *inputs, const char *output) {
    Onnx__NodeProto *n = alloc(b, sizeof *n);
    char **in = alloc(b, (size_t)(n_in ? n_in : 1) * sizeof *in);
    char **out = alloc(b, sizeof *out);
    if (!n || !in || !out) return NULL;
    onnx__node_proto__init(n);
    for (int i = 0; i < n_in; i++) in[i] = onnx_str(b, "%s", inputs[i]);
    out[0] = onnx_str(b, "%s", output);
    n->n_input = (size_t)n_in;
    n->input = in;
    n->n_output = 1;
    n->output = out;
    n->op_type = onnx_str(b, "%s", op_type);
    n->name = onnx_str(b, "%s", name);
    if (domain) {
        n->domain = onnx_str(b, "%s", domain);
        if (!strcmp(domain, QAT_ONNX_MS_DOMAIN)) b->uses_ms = true;
    }
    if (!push(b, (void ***)&b->nodes, &b->n_nodes, &b->cap_nodes, n)) return NULL;
    return n;
}

/* A new attribute of `type` appended to node n (at most 8 per node). */
static Onnx__AttributeProto *attr(onnx_b *b, Onnx__NodeProto *n, const char *name,
                                  Onnx__AttributeProto__AttributeType type) {
    if (!n || b->oom) return NULL;
    enum { MAX_ATTRS = 8 };
    if (!n->attribute && !(n->attribute = alloc(b, MAX_ATTRS * sizeof *n->attribute))) return NULL;
    QAT_ASSERT(n->n_attribute < MAX_ATTRS);
    Onnx__AttributeProto *a = alloc(b, sizeof *a);
    if (!a) return NULL;
    onnx__attribute_proto__init(a);
    a->name = onnx_str(b, "%s", name);
    a->has_type = 1;
    a->type = type;
    n->attribute[n->n_attribute++] = a;
    return a;
}

void onnx_attr_int(onnx_b *b, Onnx__NodeProto *n, const char *name, int64_t v) {
    Onnx__AttributeProto *a = attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    if (!a) return;
    a->has_i = 1;
    a->i = v;
}

void onnx_attr_float(onnx_b *b, Onnx__NodeProto *n, const char *name, float v) {
    Onnx__AttributeProto *a = attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    if (!a) return;
    a->has_f = 1;
    a->f = v;
}

void onnx_attr_ints(onnx_b *b, Onnx__NodeProto *n, const char *name, int n_v, const int64_t *v) {
    Onnx__AttributeProto *a = attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    int64_t *vv = alloc(b, (size_t)n_v * sizeof *vv);
    if (!a || !vv) return;
    memcpy(vv, v, (size_t)n_v * sizeof *vv);
    a->n_ints = (size_t)n_v;
    a->ints = vv;
}

static void io_value(onnx_b *b, int which, const char *name, int32_t elem_type, int ndim, const int64_t *dims) {
    Onnx__ValueInfoProto *vi = alloc(b, sizeof *vi);
    Onnx__TypeProto *tp = alloc(b, sizeof *tp);
    Onnx__TypeProto__Tensor *tt = alloc(b, sizeof *tt);
    Onnx__TensorShapeProto *sh = alloc(b, sizeof *sh);
    Onnx__TensorShapeProto__Dimension **dd = alloc(b, (size_t)(ndim ? ndim : 1) * sizeof *dd);
    if (!vi || !tp || !tt || !sh || !dd) return;
    QAT_ASSERT(b->n_io[which] < 4);
    onnx__value_info_proto__init(vi);
    onnx__type_proto__init(tp);
    onnx__type_proto__tensor__init(tt);
    onnx__tensor_shape_proto__init(sh);
    for (int d = 0; d < ndim; d++) {
        Onnx__TensorShapeProto__Dimension *x = alloc(b, sizeof *x);
        if (!x) return;
        onnx__tensor_shape_proto__dimension__init(x);
        if (dims[d] < 0) {
            x->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            x->dim_param = onnx_str(b, "N");
        } else {
            x->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            x->dim_value = dims[d];
        }
        dd[d] = x;
    }
    sh->n_dim = (size_t)ndim;
    sh->dim = dd;
    tt->has_elem_type = 1;
    tt->elem_type = elem_type;
    tt->shape = sh;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    vi->name = onnx_str(b, "%s", name);
    vi->type = tp;
    b->io[which][b->n_io[which]++] = vi;
}

void onnx_input(onnx_b *b, const char *name, int32_t elem_type, int ndim, const int64_t *dims) {
    io_value(b, 0, name, elem_type, ndim, dims);
}

void onnx_output(onnx_b *b, const char *name, int32_t elem_type, int ndim, const int64_t *dims) {
    io_value(b, 1, name, elem_type, ndim, dims);
}

qat_status onnx_b_write(onnx_b *b, const char *path, const char *graph_name, const char *doc, const qat_st_kv *own,
                        size_t n_own, const qat_st_kv *meta, size_t n_meta, qat_onnx_report *rep, qat_error *err) {
    Onnx__ModelProto model;
    Onnx__GraphProto graph;
    Onnx__OperatorSetIdProto ops[2], *opp[2] = {&ops[0], &ops[1]};
    onnx__model_proto__init(&model);
    onnx__graph_proto__init(&graph);
    onnx__operator_set_id_proto__init(&ops[0]);
    onnx__operator_set_id_proto__init(&ops[1]);
    ops[0].domain = "";
    ops[0].has_version = 1;
    ops[0].version = QAT_ONNX_OPSET;
    ops[1].domain = QAT_ONNX_MS_DOMAIN;
    ops[1].has_version = 1;
    ops[1].version = 1;
    const size_t cap = n_own + n_meta ? n_own + n_meta : 1;
    Onnx__StringStringEntryProto *kv = alloc(b, cap * sizeof *kv);
    Onnx__StringStringEntryProto **kvp = alloc(b, cap * sizeof *kvp);
    if (b->oom) return qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
    size_t n_kv = 0;
    for (size_t i = 0; i < n_own + n_meta; i++) {
        const qat_st_kv *p = i < n_own ? &own[i] : &meta[i - n_own];
        bool repeated = false;
        for (size_t j = 0; i >= n_own && j < n_own; j++) repeated |= strcmp(p->key, own[j].key) == 0;
        if (repeated) continue;
        onnx__string_string_entry_proto__init(&kv[n_kv]);
        kv[n_kv].key = (char *)p->key;
        kv[n_kv].value = (char *)p->value;
        kvp[n_kv] = &kv[n_kv];
        n_kv++;
    }
    graph.name = (char *)graph_name;
    graph.doc_string = (char *)doc;
    graph.n_node = b->n_nodes;
    graph.node = b->nodes;
    graph.n_initializer = b->n_inits;
    graph.initializer = b->inits;
    graph.n_input = b->n_io[0];
    graph.input = b->io[0];
    graph.n_output = b->n_io[1];
    graph.output = b->io[1];
    model.has_ir_version = 1;
    model.ir_version = QAT_ONNX_IR_VERSION;
    model.n_opset_import = b->uses_ms ? 2 : 1;
    model.opset_import = opp;
    model.producer_name = "qat";
    model.producer_version = "0.1.0";
    model.graph = &graph;
    model.n_metadata_props = n_kv;
    model.metadata_props = kvp;
    size_t len = onnx__model_proto__get_packed_size(&model);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory (%zu bytes)", path, len);
    size_t packed = onnx__model_proto__pack(&model, buf);
    QAT_ASSERT(packed == len);
    qat_chunk c = {buf, len};
    qat_status st = qat_file_write_atomic(path, &c, 1, err);
    free(buf);
    if (!st && rep) {
        rep->file_bytes = len;
        rep->n_nodes = (int)b->n_nodes;
    }
    return st;
}
