/* onnx_import.c - a float ONNX model into a qat model and its weights (onnx_import.h).
 *
 * Three passes over the graph:
 *   1. values: every initializer and Constant is a constant (float32 or int64 data, copied
 *      out of the protobuf); the graph input and every node output is an activation; each
 *      activation knows the nodes that read it.
 *   2. the walk from the input: a value read by one node continues the chain through it;
 *      a value read by two nodes opens a residual block, whose branches are first walked
 *      dry (nothing built) to find the Add where they meet and which is longer; the walk
 *      ends at the graph output. Each node becomes a builder call (layers/model.h) and its
 *      weights are kept, transformed to qat's layout, under the new layer's state names.
 *   3. finalize, then copy the weights in by name.
 */
#include "onnx_import.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "onnx.pb-c.h"

#include "data/loader.h"

/* ---- values ------------------------------------------------------------------------ */

typedef enum value_kind {
    VALUE_CONST_F32,
    VALUE_CONST_I64,
    VALUE_CONST_OTHER, /* an initializer of another dtype: an error if read as a weight */
    VALUE_ACT,         /* the graph input or a node's main output */
    VALUE_UNUSABLE,    /* a node's secondary output (BN statistics, a dropout mask) */
    VALUE_KIND_COUNT
} value_kind;

typedef struct value {
    const char *name; /* points into the protobuf */
    value_kind kind;
    int ndim;
    int64_t dims[8];
    size_t numel;
    float *f;    /* VALUE_CONST_F32 (owned) */
    int64_t *i;  /* VALUE_CONST_I64 (owned) */
    int dtype;   /* ONNX data type of a constant */
    int alias;   /* >= 0: this name is another value (Identity) */
    int *readers; /* VALUE_ACT: the nodes that read it */
    int n_readers, cap_readers;
} value;

/* A layer's weights, in qat's layout, copied in after finalize. */
typedef struct weight_rec {
    char state[QAT_NAME_LEN + 24]; /* "3.weight" */
    char source[128];              /* the ONNX tensor's name, for the log */
    float *data;                   /* owned */
    size_t numel;
} weight_rec;

typedef struct ctx {
    const char *path;
    Onnx__ModelProto *proto;
    Onnx__GraphProto *g;
    value *vals;
    int n_vals, cap_vals;
    int *slots;     /* a hash of names: the index of the latest value of each name, -1 empty */
    size_t n_slots; /* a power of two, at least twice n_vals */
    int input;  /* value index */
    int64_t batch; /* the input's declared batch size, or -1 when it is symbolic */
    const char *output_name;
    int *node_out; /* node -> value index of its main output, -1 for Constant/const Identity */
    bool *done;    /* node emitted */
    qat_model *m;
    weight_rec *w;
    int n_w, cap_w;
    int opset;
    qat_error *err;
    qat_status status; /* the first failure */
} ctx;

static qat_status fail(ctx *c, qat_status s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static qat_status fail(ctx *c, qat_status s, const char *fmt, ...) {
    if (c->status) return c->status; /* keep the first message */
    char msg[QAT_ERROR_MSG_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->status = s;
    return qat_error_set(c->err, s, "%s: %s", c->path, msg);
}

#define NOMEM(c) fail(c, QAT_STATUS_NOMEM, "out of memory")

static const char *node_name(const Onnx__NodeProto *n) {
    return n->name && n->name[0] ? n->name : (n->n_output ? n->output[0] : "?");
}

/* "node '/conv1/Conv' (Conv): " */
#define NODEF "node '%.80s' (%.40s): "
#define NODEA(n) node_name(n), (n)->op_type

static size_t name_hash(const char *s) { /* FNV-1a */
    size_t h = (size_t)14695981039346656037u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * (size_t)1099511628211u;
    return h;
}

/* The slot of `name`: the one holding its latest value, or the empty one where it goes. */
static size_t slot_of(const ctx *c, const char *name) {
    size_t i = name_hash(name) & (c->n_slots - 1);
    while (c->slots[i] >= 0 && strcmp(c->vals[c->slots[i]].name, name) != 0) i = (i + 1) & (c->n_slots - 1);
    return i;
}

/* The latest value named `name` (or the one it aliases), -1 if none. Hashed: a graph of
 * many thousand nodes imports in linear time. */
static int value_find(const ctx *c, const char *name) {
    if (!c->n_slots) return -1;
    int i = c->slots[slot_of(c, name)];
    return i < 0 ? -1 : c->vals[i].alias >= 0 ? c->vals[i].alias : i;
}

static int value_add(ctx *c, const char *name, value_kind kind) {
    if (c->n_vals == c->cap_vals) {
        int cap = c->cap_vals ? 2 * c->cap_vals : 64;
        value *p = realloc(c->vals, (size_t)cap * sizeof *p);
        if (!p) return -1;
        c->vals = p;
        c->cap_vals = cap;
    }
    if (2 * ((size_t)c->n_vals + 1) > c->n_slots) { /* rehash into twice the slots */
        size_t n = c->n_slots ? 2 * c->n_slots : 128;
        int *slots = malloc(n * sizeof *slots);
        if (!slots) return -1;
        for (size_t i = 0; i < n; i++) slots[i] = -1;
        free(c->slots);
        c->slots = slots;
        c->n_slots = n;
        for (int i = 0; i < c->n_vals; i++) c->slots[slot_of(c, c->vals[i].name)] = i; /* later ones win */
    }
    value *v = &c->vals[c->n_vals];
    memset(v, 0, sizeof *v);
    v->name = name;
    v->kind = kind;
    v->alias = -1;
    c->slots[slot_of(c, name)] = c->n_vals;
    return c->n_vals++;
}

static bool add_reader(value *v, int node) {
    if (v->n_readers == v->cap_readers) {
        int cap = v->cap_readers ? 2 * v->cap_readers : 2;
        int *p = realloc(v->readers, (size_t)cap * sizeof *p);
        if (!p) return false;
        v->readers = p;
        v->cap_readers = cap;
    }
    v->readers[v->n_readers++] = node;
    return true;
}

static const char *dtype_str(int t) {
    static const char *const names[] = {"UNDEFINED", "FLOAT", "UINT8", "INT8", "UINT16", "INT16",
                                        "INT32", "INT64", "STRING", "BOOL", "FLOAT16", "DOUBLE",
                                        "UINT32", "UINT64", "COMPLEX64", "COMPLEX128", "BFLOAT16"};
    return t >= 0 && t < (int)(sizeof names / sizeof *names) ? names[t] : "an unknown dtype";
}

/* A TensorProto (an initializer or a Constant's value) as a constant value. */
static qat_status tensor_value(ctx *c, const Onnx__TensorProto *t, const char *name, const char *what) {
    if (t->has_data_location && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL)
        return fail(c, QAT_STATUS_FORMAT,
                    "%s '%.80s' is stored as external data (a separate file); qat reads models "
                    "whose weights are inside the .onnx file (re-export without external data)",
                    what, name);
    if (t->segment) return fail(c, QAT_STATUS_FORMAT, "%s '%.80s' is segmented; qat does not read segments", what, name);
    if (t->n_dims > 8) return fail(c, QAT_STATUS_FORMAT, "%s '%.80s' has %zu dimensions", what, name, t->n_dims);
    size_t numel = 1;
    for (size_t d = 0; d < t->n_dims; d++) {
        if (t->dims[d] < 0 || t->dims[d] > (1 << 30) || (t->dims[d] && numel > ((size_t)1 << 32) / (size_t)t->dims[d]))
            return fail(c, QAT_STATUS_FORMAT, "%s '%.80s' has a bad dimension %lld", what, name,
                        (long long)t->dims[d]);
        numel *= (size_t)t->dims[d];
    }
    int dtype = t->has_data_type ? t->data_type : 0;
    value_kind kind = dtype == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT   ? VALUE_CONST_F32
                      : dtype == ONNX__TENSOR_PROTO__DATA_TYPE__INT64 ? VALUE_CONST_I64
                                                                       : VALUE_CONST_OTHER;
    int vi = value_add(c, name, kind);
    if (vi < 0) return NOMEM(c);
    value *v = &c->vals[vi];
    v->ndim = (int)t->n_dims;
    for (size_t d = 0; d < t->n_dims; d++) v->dims[d] = t->dims[d];
    v->numel = numel;
    v->dtype = dtype;
    if (kind == VALUE_CONST_OTHER) return QAT_STATUS_OK;
    size_t esz = kind == VALUE_CONST_F32 ? 4 : 8;
    /* The data must be there, all of it, before anything is allocated for it (the dims
     * alone could ask for gigabytes). */
    const void *src;
    if (t->has_raw_data && t->raw_data.len) {
        if (t->raw_data.len != numel * esz)
            return fail(c, QAT_STATUS_FORMAT, "%s '%.80s': %zu bytes of data for %zu %s values", what,
                        name, t->raw_data.len, numel, dtype_str(dtype));
        src = t->raw_data.data; /* little-endian, as the host */
    } else if (kind == VALUE_CONST_F32 && t->n_float_data == numel) {
        src = t->float_data;
    } else if (kind == VALUE_CONST_I64 && t->n_int64_data == numel) {
        src = t->int64_data;
    } else {
        return fail(c, QAT_STATUS_FORMAT, "%s '%.80s': holds no data (or not %zu values) for its %zu %s values",
                    what, name, numel, numel, dtype_str(dtype));
    }
    void *dst = malloc(numel ? numel * esz : 1);
    if (!dst) return NOMEM(c);
    if (kind == VALUE_CONST_F32) v->f = dst;
    else v->i = dst;
    if (numel) memcpy(dst, src, numel * esz);
    if (kind == VALUE_CONST_F32)
        for (size_t k = 0; k < numel; k++)
            if (!isfinite(v->f[k]))
                return fail(c, QAT_STATUS_FORMAT, "%s '%.80s' holds NaN or Inf (element %zu)", what, name, k);
    return QAT_STATUS_OK;
}

/* ---- attributes -------------------------------------------------------------------- */

static const Onnx__AttributeProto *attr(const Onnx__NodeProto *n, const char *name) {
    for (size_t i = 0; i < n->n_attribute; i++)
        if (n->attribute[i]->name && strcmp(n->attribute[i]->name, name) == 0) return n->attribute[i];
    return NULL;
}

static int64_t attr_int(const Onnx__NodeProto *n, const char *name, int64_t def) {
    const Onnx__AttributeProto *a = attr(n, name);
    return a && a->has_i ? a->i : def;
}

static float attr_float(const Onnx__NodeProto *n, const char *name, float def) {
    const Onnx__AttributeProto *a = attr(n, name);
    return a && a->has_f ? a->f : def;
}

/* An INTS attribute: its count, or -1 when absent. */
static int attr_ints(const Onnx__NodeProto *n, const char *name, const int64_t **v) {
    const Onnx__AttributeProto *a = attr(n, name);
    if (!a) return -1;
    *v = a->ints;
    return (int)a->n_ints;
}

static bool attr_string_is(const Onnx__NodeProto *n, const char *name, const char *want) {
    const Onnx__AttributeProto *a = attr(n, name);
    if (!a || !a->has_s) return true; /* absent: the default */
    return a->s.len == strlen(want) && memcmp(a->s.data, want, a->s.len) == 0;
}

/* ---- pass 1: values ---------------------------------------------------------------- */

static bool is_const(const value *v) {
    return v->kind == VALUE_CONST_F32 || v->kind == VALUE_CONST_I64 || v->kind == VALUE_CONST_OTHER;
}

/* A Constant node's value attribute as a tensor value named `out`. */
static qat_status constant_node(ctx *c, const Onnx__NodeProto *n) {
    if (n->n_output < 1 || n->n_attribute != 1)
        return fail(c, QAT_STATUS_FORMAT, NODEF "needs one output and one value attribute", NODEA(n));
    const Onnx__AttributeProto *a = n->attribute[0];
    const char *out = n->output[0];
    if (a->t && strcmp(a->name, "value") == 0) return tensor_value(c, a->t, out, "constant");
    int kind = strcmp(a->name, "value_float") == 0 || strcmp(a->name, "value_floats") == 0 ? 1
               : strcmp(a->name, "value_int") == 0 || strcmp(a->name, "value_ints") == 0   ? 2
                                                                                            : 0;
    if (!kind)
        return fail(c, QAT_STATUS_FORMAT, NODEF "attribute '%.40s' is not supported (value, value_float(s), value_int(s))",
                    NODEA(n), a->name);
    bool scalar = strcmp(a->name, "value_float") == 0 || strcmp(a->name, "value_int") == 0;
    size_t numel = scalar ? 1 : kind == 1 ? a->n_floats : a->n_ints;
    int vi = value_add(c, out, kind == 1 ? VALUE_CONST_F32 : VALUE_CONST_I64);
    if (vi < 0) return NOMEM(c);
    value *v = &c->vals[vi];
    v->ndim = scalar ? 0 : 1;
    v->dims[0] = (int64_t)numel;
    v->numel = numel;
    v->dtype = kind == 1 ? ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT : ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
    if (kind == 1) {
        if (!(v->f = malloc(numel * 4 + 4))) return NOMEM(c);
        if (scalar) v->f[0] = a->f;
        else memcpy(v->f, a->floats, numel * 4);
    } else {
        if (!(v->i = malloc(numel * 8 + 8))) return NOMEM(c);
        if (scalar) v->i[0] = a->i;
        else memcpy(v->i, a->ints, numel * 8);
    }
    return QAT_STATUS_OK;
}

/* How many leading inputs the op must have named: the data input always; the weights
 * of Conv, Gemm and MatMul; both terms of an Add; the shape of a Reshape; the four
 * statistics of BatchNormalization. Later passes index these without checking. */
static size_t required_inputs(const char *op) {
    static const struct {
        const char *op;
        size_t n;
    } REQUIRED[] = {{"Conv", 2}, {"Gemm", 2}, {"MatMul", 2}, {"Add", 2}, {"Reshape", 2}, {"BatchNormalization", 5}};
    for (size_t i = 0; i < sizeof REQUIRED / sizeof *REQUIRED; i++)
        if (strcmp(op, REQUIRED[i].op) == 0) return REQUIRED[i].n;
    return 1;
}

/* The strings every later pass reads: a node's op type, its inputs and outputs, its
 * attributes' names. proto2 leaves an absent one NULL; ONNX requires them all. */
static qat_status check_strings(ctx *c) {
    const Onnx__GraphProto *g = c->g;
    for (size_t k = 0; k < g->n_node; k++) {
        const Onnx__NodeProto *n = g->node[k];
        if (!n->op_type || !n->op_type[0]) return fail(c, QAT_STATUS_FORMAT, "node %zu has no op_type", k);
        for (size_t i = 0; i < n->n_input; i++)
            if (!n->input[i]) return fail(c, QAT_STATUS_FORMAT, "node %zu (%.40s): input %zu has no name", k, n->op_type, i);
        for (size_t i = 0; i < n->n_output; i++)
            if (!n->output[i]) return fail(c, QAT_STATUS_FORMAT, "node %zu (%.40s): output %zu has no name", k, n->op_type, i);
        for (size_t i = 0; i < n->n_attribute; i++)
            if (!n->attribute[i]->name)
                return fail(c, QAT_STATUS_FORMAT, "node %zu (%.40s): attribute %zu has no name", k, n->op_type, i);
    }
    return QAT_STATUS_OK;
}

static qat_status read_values(ctx *c) {
    Onnx__GraphProto *g = c->g;
    qat_status s;
    if ((s = check_strings(c))) return s;
    for (size_t i = 0; i < g->n_initializer; i++) {
        const Onnx__TensorProto *t = g->initializer[i];
        if (!t->name || !t->name[0]) return fail(c, QAT_STATUS_FORMAT, "initializer %zu has no name", i);
        if ((s = tensor_value(c, t, t->name, "initializer"))) return s;
    }
    if (g->n_sparse_initializer)
        return fail(c, QAT_STATUS_FORMAT, "sparse initializers are not supported");
    /* The input: the one graph input that is not an initializer (old exporters list the
     * initializers as inputs too). */
    c->input = -1;
    for (size_t i = 0; i < g->n_input; i++) {
        const Onnx__ValueInfoProto *in = g->input[i];
        if (!in->name) return fail(c, QAT_STATUS_FORMAT, "graph input %zu has no name", i);
        if (value_find(c, in->name) >= 0) continue;
        if (c->input >= 0)
            return fail(c, QAT_STATUS_FORMAT, "the graph has more than one input ('%.60s', '%.60s'); qat models have one",
                        c->vals[c->input].name, in->name);
        const Onnx__TypeProto *tp = in->type;
        if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !tp->tensor_type)
            return fail(c, QAT_STATUS_FORMAT, "input '%.60s' is not a tensor", in->name);
        const Onnx__TypeProto__Tensor *tt = tp->tensor_type;
        if (!tt->has_elem_type || tt->elem_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT)
            return fail(c, QAT_STATUS_FORMAT, "input '%.60s' is %s; qat imports float32 models", in->name,
                        dtype_str(tt->has_elem_type ? tt->elem_type : 0));
        const Onnx__TensorShapeProto *sh = tt->shape;
        if (!sh || (sh->n_dim != 4 && sh->n_dim != 2))
            return fail(c, QAT_STATUS_FORMAT, "input '%.60s' has rank %d; qat imports (N, C, H, W) or (N, F) inputs",
                        in->name, sh ? (int)sh->n_dim : -1);
        int vi = value_add(c, in->name, VALUE_ACT);
        if (vi < 0) return NOMEM(c);
        value *v = &c->vals[vi];
        v->ndim = (int)sh->n_dim;
        const Onnx__TensorShapeProto__Dimension *b0 = sh->dim[0];
        c->batch = b0->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE && b0->dim_value > 0
                       ? b0->dim_value
                       : -1;
        for (size_t d = 1; d < sh->n_dim; d++) {
            const Onnx__TensorShapeProto__Dimension *dm = sh->dim[d];
            if (dm->value_case != ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE || dm->dim_value < 1 ||
                dm->dim_value > 65536)
                return fail(c, QAT_STATUS_FORMAT,
                            "input '%.60s': dimension %zu is not a fixed size; qat needs the sample shape",
                            in->name, d);
            v->dims[d] = dm->dim_value;
        }
        /* A sample of at most 2^24 values (a 4096 x 4096 image), and as many input
         * channels as qat's data normalisation has (data/loader.h). */
        int64_t sample = 1;
        for (size_t d = 1; d < sh->n_dim; d++) sample *= v->dims[d];
        if (sample > ((int64_t)1 << 24))
            return fail(c, QAT_STATUS_FORMAT, "input '%.60s': a sample of %lld values; qat imports at most 2^24",
                        in->name, (long long)sample);
        if (sh->n_dim == 4 && v->dims[1] > QAT_DATA_MAX_CHANNELS)
            return fail(c, QAT_STATUS_FORMAT, "input '%.60s' has %lld channels; qat's images have 1 to %d", in->name,
                        (long long)v->dims[1], QAT_DATA_MAX_CHANNELS);
        c->input = vi;
    }
    if (c->input < 0) return fail(c, QAT_STATUS_FORMAT, "the graph has no input");
    if (g->n_output != 1 || !g->output[0]->name)
        return fail(c, QAT_STATUS_FORMAT, "the graph has %zu outputs; qat models have one", g->n_output);
    c->output_name = g->output[0]->name;

    c->node_out = malloc((g->n_node ? g->n_node : 1) * sizeof *c->node_out);
    c->done = calloc(g->n_node ? g->n_node : 1, sizeof *c->done);
    if (!c->node_out || !c->done) return NOMEM(c);
    for (size_t k = 0; k < g->n_node; k++) {
        const Onnx__NodeProto *n = g->node[k];
        c->node_out[k] = -1;
        if (!n->op_type) return fail(c, QAT_STATUS_FORMAT, "node %zu has no op type", k);
        if (n->domain && n->domain[0] && strcmp(n->domain, "ai.onnx") != 0)
            return fail(c, QAT_STATUS_FORMAT, NODEF "is in domain '%.40s'; qat imports the standard ONNX ops: " ONNX_IMPORT_SUPPORTED,
                        NODEA(n), n->domain);
        if (n->n_output < 1 || !n->output[0][0]) return fail(c, QAT_STATUS_FORMAT, NODEF "has no output", NODEA(n));
        if (strcmp(n->op_type, "Constant") == 0) {
            c->done[k] = true;
            if ((s = constant_node(c, n))) return s;
            continue;
        }
        /* Inputs an op cannot do without ("" leaves an optional one out). */
        const size_t required = required_inputs(n->op_type);
        for (size_t j = 0; j < required; j++)
            if (j >= n->n_input || !n->input[j][0])
                return fail(c, QAT_STATUS_FORMAT, NODEF "has no input %zu, which %s needs", NODEA(n), j, n->op_type);
        bool any_act = false;
        for (size_t j = 0; j < n->n_input; j++) {
            if (!n->input[j][0]) continue; /* an optional input left out */
            int vi = value_find(c, n->input[j]);
            if (vi < 0)
                return fail(c, QAT_STATUS_FORMAT,
                            NODEF "reads '%.80s', which no node, initializer or input defines "
                            "(a missing initializer, or nodes out of order)",
                            NODEA(n), n->input[j]);
            if (c->vals[vi].kind == VALUE_UNUSABLE)
                return fail(c, QAT_STATUS_FORMAT,
                            NODEF "reads '%.80s', a secondary output of another node, which qat does not compute",
                            NODEA(n), n->input[j]);
            if (c->vals[vi].kind == VALUE_ACT) {
                any_act = true;
                /* a node reading one value twice (x + x) counts once; refused below */
                value *v = &c->vals[vi];
                if ((v->n_readers == 0 || v->readers[v->n_readers - 1] != (int)k) && !add_reader(v, (int)k))
                    return NOMEM(c);
            }
        }
        if (!any_act && strcmp(n->op_type, "Identity") == 0 && n->n_input == 1) {
            /* Identity of a constant: another name for it. */
            int vi = value_find(c, n->input[0]);
            int a = value_add(c, n->output[0], c->vals[vi].kind);
            if (a < 0) return NOMEM(c);
            c->vals[a].alias = vi;
            c->done[k] = true;
            continue;
        }
        if (!any_act)
            return fail(c, QAT_STATUS_FORMAT,
                        NODEF "computes on constants only, which qat does not evaluate; export with "
                        "constant folding (do_constant_folding=True). qat imports: " ONNX_IMPORT_SUPPORTED,
                        NODEA(n));
        int vo = value_add(c, n->output[0], VALUE_ACT);
        if (vo < 0) return NOMEM(c);
        c->node_out[k] = vo;
        for (size_t j = 1; j < n->n_output; j++)
            if (n->output[j][0] && value_add(c, n->output[j], VALUE_UNUSABLE) < 0) return NOMEM(c);
    }
    if (value_find(c, c->output_name) < 0)
        return fail(c, QAT_STATUS_FORMAT, "no node computes the graph output '%.80s'", c->output_name);
    return QAT_STATUS_OK;
}

/* ---- weights ------------------------------------------------------------------------ */

/* The constant a node reads at input j: float32, with `ndim` dimensions (-1: any), or an
 * error naming the node. */
static const value *weight_in(ctx *c, const Onnx__NodeProto *n, size_t j, int ndim, const char *what) {
    if (j >= n->n_input || !n->input[j][0]) {
        fail(c, QAT_STATUS_FORMAT, NODEF "has no %s input", NODEA(n), what);
        return NULL;
    }
    int vi = value_find(c, n->input[j]);
    const value *v = &c->vals[vi];
    if (!is_const(v)) {
        fail(c, QAT_STATUS_FORMAT, NODEF "its %s '%.80s' is computed by the graph; qat needs it constant (an initializer)",
             NODEA(n), what, n->input[j]);
        return NULL;
    }
    if (v->kind != VALUE_CONST_F32) {
        fail(c, QAT_STATUS_FORMAT, NODEF "its %s '%.80s' is %s; qat imports float32 weights", NODEA(n), what,
             n->input[j], dtype_str(v->dtype));
        return NULL;
    }
    if (ndim >= 0 && v->ndim != ndim) {
        fail(c, QAT_STATUS_FORMAT, NODEF "its %s '%.80s' has %d dimensions, not %d", NODEA(n), what, n->input[j],
             v->ndim, ndim);
        return NULL;
    }
    return v;
}

/* The activation a node reads (its first input). */
static int act_in(ctx *c, const Onnx__NodeProto *n) {
    return n->n_input ? value_find(c, n->input[0]) : -1;
}

/* The layer the last builder call appended. */
static const qat_layer *last_layer(const qat_model *m) {
    const qat_seq *s = m->stack[m->depth - 1];
    return &s->layers[s->n - 1];
}

/* Keeps `numel` floats (copied, scaled by `scale`, transposed from (cols, rows) when
 * `transpose_rows` > 0) for the state tensor "<layer>.<field>". */
static qat_status keep(ctx *c, const char *field, const value *src, size_t numel, float scale, int transpose_rows) {
    if (src->numel != numel)
        return fail(c, QAT_STATUS_FORMAT, "tensor '%.80s' has %zu values where layer %s.%s needs %zu", src->name,
                    src->numel, last_layer(c->m)->name, field, numel);
    if (c->n_w == c->cap_w) {
        int cap = c->cap_w ? 2 * c->cap_w : 16;
        weight_rec *p = realloc(c->w, (size_t)cap * sizeof *p);
        if (!p) return NOMEM(c);
        c->w = p;
        c->cap_w = cap;
    }
    weight_rec *r = &c->w[c->n_w];
    memset(r, 0, sizeof *r);
    if (!(r->data = malloc(numel * sizeof *r->data + 1))) return NOMEM(c);
    c->n_w++;
    snprintf(r->state, sizeof r->state, "%s.%s", last_layer(c->m)->name, field);
    snprintf(r->source, sizeof r->source, "%s", src->name);
    r->numel = numel;
    if (transpose_rows > 0) {
        size_t rows = (size_t)transpose_rows, cols = numel / rows; /* src (cols, rows) -> (rows, cols) */
        for (size_t i = 0; i < rows; i++)
            for (size_t j = 0; j < cols; j++) r->data[i * cols + j] = src->f[j * rows + i] * scale;
    } else {
        for (size_t i = 0; i < numel; i++) r->data[i] = src->f[i] * scale;
    }
    return QAT_STATUS_OK;
}

/* After a builder call: its error as the node's. */
static qat_status built(ctx *c, const Onnx__NodeProto *n, qat_status s) {
    if (!s) return QAT_STATUS_OK;
    return fail(c, QAT_STATUS_FORMAT, NODEF "does not fit the model: %s", NODEA(n), c->m->err.msg);
}

/* ---- pass 2: nodes into layers ----------------------------------------------------- */

static qat_status unsupported(ctx *c, const Onnx__NodeProto *n) {
    return fail(c, QAT_STATUS_FORMAT, NODEF "is not supported. qat imports: " ONNX_IMPORT_SUPPORTED, NODEA(n));
}

/* The only reader of the value node k outputs, if there is exactly one. */
static int sole_reader(const ctx *c, int k) {
    int vo = c->node_out[k];
    return vo >= 0 && c->vals[vo].n_readers == 1 ? c->vals[vo].readers[0] : -1;
}

/* Square kernel, equal strides, symmetric pads, no dilation: kernel, stride, pad. */
static qat_status window(ctx *c, const Onnx__NodeProto *n, int ksize_default, int *k, int *stride, int *pad) {
    const int64_t *ks = NULL, *st = NULL, *pd = NULL, *dl = NULL;
    int nk = attr_ints(n, "kernel_shape", &ks), ns = attr_ints(n, "strides", &st), np = attr_ints(n, "pads", &pd),
        nd = attr_ints(n, "dilations", &dl);
    if (!attr_string_is(n, "auto_pad", "NOTSET"))
        return fail(c, QAT_STATUS_FORMAT, NODEF "auto_pad is not supported; export with explicit pads", NODEA(n));
    if (nk < 0 && ksize_default < 0) return fail(c, QAT_STATUS_FORMAT, NODEF "has no kernel_shape", NODEA(n));
    if (nk >= 0 && (nk != 2 || ks[0] != ks[1] || ks[0] < 1 || ks[0] > 64))
        return fail(c, QAT_STATUS_FORMAT, NODEF "needs a square 2-D kernel (qat's layers are square)", NODEA(n));
    *k = nk >= 0 ? (int)ks[0] : ksize_default;
    if (ns >= 0 && (ns != 2 || st[0] != st[1] || st[0] < 1 || st[0] > 64))
        return fail(c, QAT_STATUS_FORMAT, NODEF "needs equal strides along H and W", NODEA(n));
    *stride = ns >= 0 ? (int)st[0] : 1;
    if (np >= 0 && (np != 4 || pd[0] != pd[1] || pd[0] != pd[2] || pd[0] != pd[3] || pd[0] < 0 || pd[0] > 64))
        return fail(c, QAT_STATUS_FORMAT, NODEF "needs the same padding on every side", NODEA(n));
    *pad = np >= 0 ? (int)pd[0] : 0;
    for (int i = 0; i < nd; i++)
        if (dl[i] != 1) return fail(c, QAT_STATUS_FORMAT, NODEF "dilation is not supported", NODEA(n));
    return QAT_STATUS_OK;
}

static qat_status pool_node(ctx *c, const Onnx__NodeProto *n, bool avg, int extra_pad) {
    int k, s, p;
    qat_status st = window(c, n, -1, &k, &s, &p);
    if (st) return st;
    if (avg && p > 0 && attr_int(n, "count_include_pad", 0) == 0)
        return fail(c, QAT_STATUS_FORMAT,
                    NODEF "averages without counting the padding (count_include_pad=0); qat's avgpool counts it",
                    NODEA(n));
    if (extra_pad && p) return fail(c, QAT_STATUS_FORMAT, NODEF "is padded twice (a Pad and its own pads)", NODEA(n));
    p += extra_pad;
    if (c->m->cur_ndim != 3) return fail(c, QAT_STATUS_FORMAT, NODEF "needs a (C, H, W) input", NODEA(n));
    if (attr_int(n, "ceil_mode", 0)) {
        int H = c->m->cur_shape[1], W = c->m->cur_shape[2];
        if ((H + 2 * p - k) % s || (W + 2 * p - k) % s)
            return fail(c, QAT_STATUS_FORMAT, NODEF "ceil_mode=1 changes the output size here; qat pools round down",
                        NODEA(n));
    }
    return built(c, n, avg ? qat_model_avgpool(c->m, k, s, p) : qat_model_maxpool(c->m, k, s, p));
}

static qat_status conv_node(ctx *c, const Onnx__NodeProto *n) {
    const value *w = weight_in(c, n, 1, 4, "weight");
    if (!w) return c->status;
    const value *b = n->n_input > 2 && n->input[2][0] ? weight_in(c, n, 2, 1, "bias") : NULL;
    if (n->n_input > 2 && n->input[2][0] && !b) return c->status;
    int k, s, p;
    qat_status st = window(c, n, (int)w->dims[2], &k, &s, &p);
    if (st) return st;
    int64_t groups = attr_int(n, "group", 1);
    const qat_model *m = c->m;
    if (m->cur_ndim != 3) return fail(c, QAT_STATUS_FORMAT, NODEF "needs a (C, H, W) input", NODEA(n));
    int64_t oc = w->dims[0], cin = m->cur_shape[0];
    if (groups < 1 || cin % groups || oc % groups || w->dims[1] * groups != cin || w->dims[2] != k ||
        w->dims[3] != k || oc < 1 || oc > 65536)
        return fail(c, QAT_STATUS_FORMAT,
                    NODEF "weight '%.80s' of shape (%lld, %lld, %lld, %lld) does not fit %lld input channels "
                    "in %lld groups with a %dx%d kernel",
                    NODEA(n), w->name, (long long)w->dims[0], (long long)w->dims[1], (long long)w->dims[2],
                    (long long)w->dims[3], (long long)cin, (long long)groups, k, k);
    if (b && b->dims[0] != oc)
        return fail(c, QAT_STATUS_FORMAT, NODEF "bias '%.80s' has %lld values for %lld channels", NODEA(n), b->name,
                    (long long)b->dims[0], (long long)oc);
    if ((st = built(c, n, qat_model_conv2d(c->m, (int)oc, k, s, p, (int)groups, b != NULL)))) return st;
    if ((st = keep(c, "weight", w, w->numel, 1.0f, 0))) return st;
    return b ? keep(c, "bias", b, b->numel, 1.0f, 0) : QAT_STATUS_OK;
}

static qat_status bn_node(ctx *c, const Onnx__NodeProto *n) {
    const value *p[4];
    static const char *const what[4] = {"scale", "bias", "mean", "variance"};
    for (int i = 0; i < 4; i++)
        if (!(p[i] = weight_in(c, n, (size_t)i + 1, 1, what[i]))) return c->status;
    float eps = attr_float(n, "epsilon", 1e-5f);
    if (fabsf(eps - 1e-5f) > 1e-9f)
        return fail(c, QAT_STATUS_FORMAT, NODEF "epsilon %g; qat's batch norm uses PyTorch's default 1e-5", NODEA(n),
                    (double)eps);
    int ch = c->m->cur_shape[0];
    for (int i = 0; i < 4; i++)
        if (p[i]->dims[0] != ch)
            return fail(c, QAT_STATUS_FORMAT, NODEF "%s '%.80s' has %lld values for %d channels", NODEA(n), what[i],
                        p[i]->name, (long long)p[i]->dims[0], ch);
    for (size_t i = 0; i < p[3]->numel; i++)
        if (p[3]->f[i] < 0)
            return fail(c, QAT_STATUS_FORMAT, NODEF "variance '%.80s' is negative", NODEA(n), p[3]->name);
    qat_status st = built(c, n, qat_model_batchnorm(c->m));
    static const char *const field[4] = {"weight", "bias", "running_mean", "running_var"};
    for (int i = 0; !st && i < 4; i++) st = keep(c, field[i], p[i], (size_t)ch, 1.0f, 0);
    return st;
}

/* A scalar constant input (Clip's min and max, Dropout's ratio), or `def` when absent. */
static bool scalar_in(ctx *c, const Onnx__NodeProto *n, size_t j, float def, float *out) {
    if (j >= n->n_input || !n->input[j][0]) {
        *out = def;
        return true;
    }
    const value *v = &c->vals[value_find(c, n->input[j])];
    if (v->kind != VALUE_CONST_F32 || v->numel != 1) return false;
    *out = v->f[0];
    return true;
}

static qat_status clip_node(ctx *c, const Onnx__NodeProto *n) {
    float lo, hi;
    if (c->opset < 11 || attr(n, "min") || attr(n, "max")) {
        lo = attr_float(n, "min", -INFINITY);
        hi = attr_float(n, "max", INFINITY);
    } else if (!scalar_in(c, n, 1, -INFINITY, &lo) || !scalar_in(c, n, 2, INFINITY, &hi)) {
        return fail(c, QAT_STATUS_FORMAT, NODEF "min and max must be float32 constants", NODEA(n));
    }
    if (lo == 0.0f && hi == 6.0f) return built(c, n, qat_model_relu6(c->m));
    if (lo == 0.0f && isinf(hi) && hi > 0) return built(c, n, qat_model_relu(c->m));
    return fail(c, QAT_STATUS_FORMAT, NODEF "Clip(%g, %g) is neither ReLU6 (0, 6) nor ReLU (0, inf)", NODEA(n),
                (double)lo, (double)hi);
}

static qat_status gemm_node(ctx *c, const Onnx__NodeProto *n) {
    const value *w = weight_in(c, n, 1, 2, "weight (B)");
    if (!w) return c->status;
    const value *b = n->n_input > 2 && n->input[2][0] ? weight_in(c, n, 2, -1, "bias (C)") : NULL;
    if (n->n_input > 2 && n->input[2][0] && !b) return c->status;
    if (attr_int(n, "transA", 0)) return fail(c, QAT_STATUS_FORMAT, NODEF "transA=1 is not supported", NODEA(n));
    bool tb = attr_int(n, "transB", 0) != 0;
    float alpha = attr_float(n, "alpha", 1.0f), beta = attr_float(n, "beta", 1.0f);
    if (c->m->cur_ndim != 1)
        return fail(c, QAT_STATUS_FORMAT, NODEF "needs a flat (N, F) input; add a Flatten before it", NODEA(n));
    int64_t in = tb ? w->dims[1] : w->dims[0], out = tb ? w->dims[0] : w->dims[1];
    if (in != c->m->cur_shape[0] || out < 1 || out > (1 << 24))
        return fail(c, QAT_STATUS_FORMAT, NODEF "weight '%.80s' of shape (%lld, %lld) does not fit %d input features",
                    NODEA(n), w->name, (long long)w->dims[0], (long long)w->dims[1], c->m->cur_shape[0]);
    if (b && b->numel != (size_t)out)
        return fail(c, QAT_STATUS_FORMAT, NODEF "bias '%.80s' has %zu values for %lld outputs", NODEA(n), b->name,
                    b->numel, (long long)out);
    qat_status st = built(c, n, qat_model_linear(c->m, (int)out, b != NULL));
    if (!st) st = keep(c, "weight", w, w->numel, alpha, tb ? 0 : (int)out);
    if (!st && b) st = keep(c, "bias", b, b->numel, beta, 0);
    return st;
}

/* MatMul by a constant (in, out), and the Add of a constant bias that may follow it:
 * one linear layer. *next is the node whose output continues the chain. */
static qat_status matmul_node(ctx *c, int k, int *next) {
    const Onnx__NodeProto *n = c->g->node[k];
    const value *w = weight_in(c, n, 1, 2, "weight (B)");
    if (!w) return c->status;
    if (c->m->cur_ndim != 1)
        return fail(c, QAT_STATUS_FORMAT, NODEF "needs a flat (N, F) input; add a Flatten before it", NODEA(n));
    int64_t out = w->dims[1];
    if (w->dims[0] != c->m->cur_shape[0] || out < 1 || out > (1 << 24))
        return fail(c, QAT_STATUS_FORMAT, NODEF "weight '%.80s' of shape (%lld, %lld) does not fit %d input features",
                    NODEA(n), w->name, (long long)w->dims[0], (long long)w->dims[1], c->m->cur_shape[0]);
    /* A bias: the only reader is an Add whose other input is a constant of `out` values. */
    const value *b = NULL;
    int r = sole_reader(c, k);
    *next = k;
    if (r >= 0 && strcmp(c->g->node[r]->op_type, "Add") == 0 && c->g->node[r]->n_input == 2) {
        const Onnx__NodeProto *a = c->g->node[r];
        int other = strcmp(a->input[0], n->output[0]) == 0 ? 1 : 0;
        const value *v = &c->vals[value_find(c, a->input[other])];
        if (is_const(v)) {
            if (!(b = weight_in(c, a, (size_t)other, -1, "bias"))) return c->status;
            if (b->numel != (size_t)out || (b->ndim == 2 && b->dims[0] != 1) || b->ndim > 2)
                return fail(c, QAT_STATUS_FORMAT, NODEF "bias '%.80s' does not have %lld values", NODEA(a), b->name,
                            (long long)out);
            *next = r;
        }
    }
    qat_status st = built(c, n, qat_model_linear(c->m, (int)out, b != NULL));
    if (!st) st = keep(c, "weight", w, w->numel, 1.0f, (int)out);
    if (!st && b) st = keep(c, "bias", b, b->numel, 1.0f, 0);
    return st;
}

/* Flatten (axis 1) or Reshape to (N, -1): a flatten layer (nothing on a flat input). */
static qat_status flatten_node(ctx *c, const Onnx__NodeProto *n) {
    const qat_model *m = c->m;
    int64_t total = m->cur_ndim == 3 ? (int64_t)m->cur_shape[0] * m->cur_shape[1] * m->cur_shape[2] : m->cur_shape[0];
    if (strcmp(n->op_type, "Flatten") == 0) {
        if (attr_int(n, "axis", 1) != 1)
            return fail(c, QAT_STATUS_FORMAT, NODEF "axis %lld; qat flattens everything after the batch (axis 1)",
                        NODEA(n), (long long)attr_int(n, "axis", 1));
    } else {
        const value *sv = n->n_input > 1 ? &c->vals[value_find(c, n->input[1])] : NULL;
        if (!sv || sv->kind != VALUE_CONST_I64)
            return fail(c, QAT_STATUS_FORMAT, NODEF "its shape must be an int64 constant", NODEA(n));
        /* (N, total): the batch kept (0, or the input's declared batch size) with the
         * rest inferred (-1) or given, or the batch inferred with the rest given. */
        bool ok = sv->numel == 2 &&
                  (((sv->i[0] == 0 || (c->batch > 0 && sv->i[0] == c->batch)) && (sv->i[1] == -1 || sv->i[1] == total)) ||
                   (sv->i[0] == -1 && sv->i[1] == total));
        if (!ok)
            return fail(c, QAT_STATUS_FORMAT,
                        NODEF "reshapes to something other than (N, %lld); qat imports Reshape only as a flatten",
                        NODEA(n), (long long)total);
    }
    if (m->cur_ndim == 1) return QAT_STATUS_OK;
    return built(c, n, qat_model_flatten(c->m));
}

/* A Pad: nothing if it pads nothing; folded into the AveragePool that alone reads it when
 * it pads H and W alike with zeros. *next is the node whose output continues the chain. */
static qat_status pad_node(ctx *c, int k, int *next) {
    const Onnx__NodeProto *n = c->g->node[k];
    *next = k;
    if (!attr_string_is(n, "mode", "constant"))
        return fail(c, QAT_STATUS_FORMAT, NODEF "only constant padding is supported", NODEA(n));
    const int64_t *pads = NULL;
    int np;
    if (c->opset < 11) {
        np = attr_ints(n, "pads", &pads);
        if (attr_float(n, "value", 0.0f) != 0.0f)
            return fail(c, QAT_STATUS_FORMAT, NODEF "pads with a value other than 0", NODEA(n));
    } else {
        const value *pv = n->n_input > 1 && n->input[1][0] ? &c->vals[value_find(c, n->input[1])] : NULL;
        if (!pv || pv->kind != VALUE_CONST_I64)
            return fail(c, QAT_STATUS_FORMAT, NODEF "its pads must be an int64 constant", NODEA(n));
        pads = pv->i;
        np = (int)pv->numel;
        float cv;
        if (!scalar_in(c, n, 2, 0.0f, &cv) || cv != 0.0f)
            return fail(c, QAT_STATUS_FORMAT, NODEF "pads with a value other than 0", NODEA(n));
    }
    if (np != 8 && np != 4) return fail(c, QAT_STATUS_FORMAT, NODEF "needs pads for 4-D input", NODEA(n));
    bool zero = true;
    for (int i = 0; i < np; i++) zero = zero && pads[i] == 0;
    if (zero) return QAT_STATUS_OK;
    int r = sole_reader(c, k);
    bool hw = np == 8 && pads[0] == 0 && pads[1] == 0 && pads[4] == 0 && pads[5] == 0 && pads[2] == pads[3] &&
              pads[2] == pads[6] && pads[2] == pads[7] && pads[2] > 0 && pads[2] <= 64;
    if (!hw || r < 0 || strcmp(c->g->node[r]->op_type, "AveragePool") != 0)
        return fail(c, QAT_STATUS_FORMAT,
                    NODEF "pads the data; qat imports a Pad only when it pads nothing or when an AveragePool "
                    "reads it and it pads H and W alike",
                    NODEA(n));
    *next = r;
    return pool_node(c, c->g->node[r], true, (int)pads[2]);
}

/* ReduceMean over H and W (x.mean([2, 3]) in PyTorch): a global average pool, flattened
 * unless keepdims. */
static qat_status reduce_mean_node(ctx *c, const Onnx__NodeProto *n) {
    const int64_t *ax = NULL;
    int na = attr_ints(n, "axes", &ax);
    if (na < 0 && n->n_input > 1 && n->input[1][0]) {
        const value *v = &c->vals[value_find(c, n->input[1])];
        if (v->kind == VALUE_CONST_I64) {
            ax = v->i;
            na = (int)v->numel;
        }
    }
    bool hw = na == 2 && c->m->cur_ndim == 3 && ((ax[0] == 2 || ax[0] == -2) && (ax[1] == 3 || ax[1] == -1));
    if (!hw)
        return fail(c, QAT_STATUS_FORMAT, NODEF "qat imports ReduceMean only over H and W (axes 2, 3) of a (C, H, W) value",
                    NODEA(n));
    qat_status st = built(c, n, qat_model_global_avgpool(c->m));
    if (!st && !attr_int(n, "keepdims", 1)) st = built(c, n, qat_model_flatten(c->m));
    return st;
}

/* One node into layers; *next: the node whose output continues the chain (the node
 * itself, or one it absorbed). With `emit` false nothing is built (a dry walk). */
static qat_status emit_node(ctx *c, int k, bool emit, int *next) {
    const Onnx__NodeProto *n = c->g->node[k];
    const char *op = n->op_type;
    *next = k;
    if (!emit) {
        /* The dry walk needs only where the chain goes: nodes that absorb the next one. */
        int r = sole_reader(c, k);
        if (strcmp(op, "MatMul") == 0 && r >= 0 && strcmp(c->g->node[r]->op_type, "Add") == 0) {
            const Onnx__NodeProto *a = c->g->node[r];
            for (size_t j = 0; j < a->n_input; j++)
                if (is_const(&c->vals[value_find(c, a->input[j])])) *next = r;
        }
        if (strcmp(op, "Pad") == 0 && r >= 0 && strcmp(c->g->node[r]->op_type, "AveragePool") == 0) *next = r;
        return QAT_STATUS_OK;
    }
    if (act_in(c, n) < 0 || c->vals[act_in(c, n)].kind != VALUE_ACT)
        return fail(c, QAT_STATUS_FORMAT, NODEF "its first input must be the data flowing through the model",
                    NODEA(n));
    for (size_t j = 1; j < n->n_input; j++)
        if (n->input[j][0] && c->vals[value_find(c, n->input[j])].kind == VALUE_ACT && strcmp(op, "Add") != 0)
            return fail(c, QAT_STATUS_FORMAT,
                        NODEF "reads two computed values; qat imports only Add of two values (a residual block)",
                        NODEA(n));
    if (strcmp(op, "Conv") == 0) return conv_node(c, n);
    if (strcmp(op, "BatchNormalization") == 0) return bn_node(c, n);
    if (strcmp(op, "Relu") == 0) return built(c, n, qat_model_relu(c->m));
    if (strcmp(op, "Clip") == 0) return clip_node(c, n);
    if (strcmp(op, "Sigmoid") == 0) return built(c, n, qat_model_sigmoid(c->m));
    if (strcmp(op, "Tanh") == 0) return built(c, n, qat_model_tanh(c->m));
    if (strcmp(op, "HardSwish") == 0) return built(c, n, qat_model_hardswish(c->m));
    if (strcmp(op, "LeakyRelu") == 0) return built(c, n, qat_model_leaky_relu(c->m, attr_float(n, "alpha", 0.01f)));
    if (strcmp(op, "MaxPool") == 0) {
        if (attr_int(n, "storage_order", 0))
            return fail(c, QAT_STATUS_FORMAT, NODEF "storage_order=1 is not supported", NODEA(n));
        return pool_node(c, n, false, 0);
    }
    if (strcmp(op, "AveragePool") == 0) return pool_node(c, n, true, 0);
    if (strcmp(op, "Pad") == 0) return pad_node(c, k, next);
    if (strcmp(op, "GlobalAveragePool") == 0) return built(c, n, qat_model_global_avgpool(c->m));
    if (strcmp(op, "ReduceMean") == 0) return reduce_mean_node(c, n);
    if (strcmp(op, "Flatten") == 0 || strcmp(op, "Reshape") == 0) return flatten_node(c, n);
    if (strcmp(op, "Gemm") == 0) return gemm_node(c, n);
    if (strcmp(op, "MatMul") == 0) return matmul_node(c, k, next);
    if (strcmp(op, "Dropout") == 0) {
        float ratio;
        if (c->opset < 12) ratio = attr_float(n, "ratio", 0.5f);
        else if (!scalar_in(c, n, 1, 0.5f, &ratio))
            return fail(c, QAT_STATUS_FORMAT, NODEF "its ratio must be a float32 constant", NODEA(n));
        return built(c, n, qat_model_dropout(c->m, ratio));
    }
    if (strcmp(op, "Identity") == 0) return QAT_STATUS_OK;
    if (strcmp(op, "Add") == 0)
        return fail(c, QAT_STATUS_FORMAT,
                    NODEF "adds a constant; qat imports an Add of a constant only as the bias of the MatMul before it",
                    NODEA(n));
    return unsupported(c, n);
}

/* An Add of two distinct computed values: where a residual block's branches meet. */
static bool is_join(const ctx *c, int k) {
    const Onnx__NodeProto *n = c->g->node[k];
    if (strcmp(n->op_type, "Add") != 0 || n->n_input != 2) return false;
    int a = value_find(c, n->input[0]), b = value_find(c, n->input[1]);
    return a >= 0 && b >= 0 && c->vals[a].kind == VALUE_ACT && c->vals[b].kind == VALUE_ACT;
}

typedef struct walk_end {
    int join;   /* the Add that ended the walk, or -1 at the graph output */
    int length; /* nodes walked */
} walk_end;

/* Walks the chain from value v (through node `first` first, if >= 0) until an Add of two
 * values (a join, returned, not emitted) or the graph output. */
static qat_status walk(ctx *c, int v, int first, bool emit, int depth, walk_end *end) {
    end->join = -1;
    end->length = 0;
    for (int guard = 0; guard <= (int)c->g->n_node + 1; guard++) {
        const value *cv = &c->vals[v];
        int k;
        if (first >= 0) {
            k = first;
            first = -1;
        } else if (cv->n_readers == 0) {
            if (strcmp(cv->name, c->output_name) == 0 || value_find(c, c->output_name) == v) return QAT_STATUS_OK;
            if (depth > 0) return QAT_STATUS_OK; /* a branch that ends: the fork reports it */
            return fail(c, QAT_STATUS_FORMAT, "value '%.80s' is read by no node and is not the graph output", cv->name);
        } else if (cv->n_readers == 1) {
            k = cv->readers[0];
        } else if (cv->n_readers == 2) {
            /* A residual block: both branches dry first, to find their join and lengths. */
            walk_end a, b;
            qat_status s;
            /* before the dry walks recurse: a hostile file's nesting must not exhaust the stack */
            if (depth + 1 >= QAT_MODEL_MAX_DEPTH)
                return fail(c, QAT_STATUS_FORMAT, "residual blocks nest deeper than %d", QAT_MODEL_MAX_DEPTH - 1);
            if ((s = walk(c, v, cv->readers[0], false, depth + 1, &a)) ||
                (s = walk(c, v, cv->readers[1], false, depth + 1, &b)))
                return s;
            if (a.join < 0 || a.join != b.join)
                return fail(c, QAT_STATUS_FORMAT,
                            "value '%.80s' is read by two nodes whose branches do not meet again in one Add; "
                            "qat imports forks only as residual blocks (out = body(x) + shortcut(x))",
                            cv->name);
            int body = a.length >= b.length ? cv->readers[0] : cv->readers[1];
            int shortcut = body == cv->readers[0] ? cv->readers[1] : cv->readers[0];
            int short_len = a.length >= b.length ? b.length : a.length;
            if (emit) {
                walk_end e;
                if (built(c, c->g->node[a.join], qat_model_residual_begin(c->m)) ||
                    (s = walk(c, v, body, true, depth + 1, &e)))
                    return c->status;
                if (short_len > 0 &&
                    (built(c, c->g->node[a.join], qat_model_residual_shortcut(c->m)) ||
                     (s = walk(c, v, shortcut, true, depth + 1, &e))))
                    return c->status;
                if (built(c, c->g->node[a.join], qat_model_residual_end(c->m))) return c->status;
            }
            c->done[a.join] = emit || c->done[a.join];
            end->length += a.length + b.length + 1;
            v = c->node_out[a.join];
            continue;
        } else {
            return fail(c, QAT_STATUS_FORMAT,
                        "value '%.80s' is read by %d nodes; qat imports forks only as residual blocks of two branches",
                        cv->name, cv->n_readers);
        }
        if (is_join(c, k)) {
            const Onnx__NodeProto *n = c->g->node[k];
            if (strcmp(n->input[0], n->input[1]) == 0 || value_find(c, n->input[0]) == value_find(c, n->input[1]))
                return fail(c, QAT_STATUS_FORMAT, NODEF "adds a value to itself; qat does not import that", NODEA(n));
            if (depth == 0)
                return fail(c, QAT_STATUS_FORMAT, NODEF "adds two values that do not branch from one", NODEA(n));
            end->join = k;
            return QAT_STATUS_OK;
        }
        /* A node other than Add that reads two computed values (x * sigmoid(x), a
         * concatenation) has no qat layer: name it, rather than the fork before it. */
        int acts = 0;
        for (size_t j = 0; j < c->g->node[k]->n_input; j++) {
            const char *in = c->g->node[k]->input[j];
            acts += in[0] && c->vals[value_find(c, in)].kind == VALUE_ACT;
        }
        if (acts > 1 && strcmp(c->g->node[k]->op_type, "Add") != 0) return unsupported(c, c->g->node[k]);
        int next;
        qat_status s = emit_node(c, k, emit, &next);
        if (s) return s;
        if (emit) {
            c->done[k] = true;
            c->done[next] = true;
        }
        end->length++;
        v = c->node_out[next];
        if (v < 0) return fail(c, QAT_STATUS_FORMAT, NODEF "has no output value", NODEA(c->g->node[next]));
    }
    return fail(c, QAT_STATUS_FORMAT, "the graph has a cycle");
}

/* ---- the whole import -------------------------------------------------------------- */

bool qat_onnx_path(const char *path) {
    size_t n = strlen(path);
    return n > 5 && strcasecmp(path + n - 5, ".onnx") == 0;
}

static qat_status read_file(const char *path, uint8_t **buf, size_t *len, qat_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return qat_error_set(err, QAT_STATUS_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return qat_error_set(err, QAT_STATUS_IO, "%s: not a regular file", path);
    }
    if (st.st_size == 0) {
        fclose(f);
        return qat_error_set(err, QAT_STATUS_FORMAT, "%s: empty file, not an ONNX model", path);
    }
    if ((uint64_t)st.st_size > QAT_ONNX_MAX_BYTES) {
        fclose(f);
        return qat_error_set(err, QAT_STATUS_FORMAT, "%s: %lld bytes, more than qat imports (%zu)", path,
                             (long long)st.st_size, QAT_ONNX_MAX_BYTES);
    }
    *len = (size_t)st.st_size;
    *buf = malloc(*len);
    if (!*buf) {
        fclose(f);
        return qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
    }
    size_t got = fread(*buf, 1, *len, f);
    fclose(f);
    if (got != *len) {
        free(*buf);
        *buf = NULL;
        return qat_error_set(err, QAT_STATUS_IO, "%s: read error", path);
    }
    return QAT_STATUS_OK;
}

qat_status qat_onnx_import(const char *path, qat_model **out, FILE *log, qat_error *err) {
    QAT_ASSERT(path != NULL && out != NULL);
    *out = NULL;
    uint8_t *buf = NULL;
    size_t len = 0;
    qat_status s = read_file(path, &buf, &len, err);
    if (s) return s;
    ctx c = {.path = path, .err = err, .input = -1};
    c.proto = onnx__model_proto__unpack(NULL, len, buf);
    free(buf);
    if (!c.proto)
        return qat_error_set(err, QAT_STATUS_FORMAT,
                             "%s: not an ONNX model: the protobuf does not parse (truncated or corrupt file?)", path);
    c.g = c.proto->graph;
    for (size_t i = 0; i < c.proto->n_opset_import; i++) {
        const Onnx__OperatorSetIdProto *o = c.proto->opset_import[i];
        if ((!o->domain || !o->domain[0] || strcmp(o->domain, "ai.onnx") == 0) && o->has_version)
            c.opset = (int)o->version;
    }
    if (!c.g || c.g->n_node == 0) {
        s = qat_error_set(err, QAT_STATUS_FORMAT, "%s: not an ONNX model: it has no graph (truncated or corrupt file?)",
                          path);
        goto done;
    }
    if (c.opset == 0) {
        s = qat_error_set(err, QAT_STATUS_FORMAT, "%s: the model names no ONNX opset version", path);
        goto done;
    }
    if ((s = read_values(&c))) goto done;
    const value *in = &c.vals[c.input];
    int shape[3] = {(int)in->dims[1], in->ndim == 4 ? (int)in->dims[2] : 1, in->ndim == 4 ? (int)in->dims[3] : 1};
    if (!(c.m = qat_model_new(in->ndim == 4 ? 3 : 1, shape))) {
        s = NOMEM(&c);
        goto done;
    }
    walk_end e;
    if ((s = walk(&c, c.input, -1, true, 0, &e))) goto done;
    for (size_t k = 0; k < c.g->n_node; k++)
        if (!c.done[k]) {
            s = fail(&c, QAT_STATUS_FORMAT, NODEF "is off the path from the input to the output; qat does not import it",
                     NODEA(c.g->node[k]));
            goto done;
        }
    qat_rng rng;
    qat_rng_init(&rng, 0);
    if (qat_model_finalize(c.m, &rng)) {
        s = fail(&c, c.m->err.status, "%s", c.m->err.msg);
        goto done;
    }
    /* Every weight by its state name; every layer tensor must be filled. */
    int filled = 0;
    for (int i = 0; i < c.n_w; i++) {
        qat_tensor *t = qat_model_state_find(c.m, c.w[i].state);
        if (!t || qat_shape_numel(t->ndim, t->shape) != c.w[i].numel) {
            s = fail(&c, QAT_STATUS_FORMAT, "tensor '%.80s' does not fit %s", c.w[i].source, c.w[i].state);
            goto done;
        }
        memcpy(t->data, c.w[i].data, c.w[i].numel * sizeof(float));
        filled++;
        if (log) fprintf(log, "  %-40s -> %s\n", c.w[i].source, c.w[i].state);
    }
    if (filled != c.m->n_layer_state) {
        s = fail(&c, QAT_STATUS_FORMAT, "%d of the model's %d tensors came from the file", filled,
                 c.m->n_layer_state);
        goto done;
    }
    *out = c.m;
    c.m = NULL;
done:
    qat_model_free(c.m);
    for (int i = 0; i < c.n_vals; i++) {
        if (c.vals[i].alias >= 0) continue;
        free(c.vals[i].f);
        free(c.vals[i].i);
        free(c.vals[i].readers);
    }
    free(c.vals);
    free(c.slots);
    for (int i = 0; i < c.n_w; i++) free(c.w[i].data);
    free(c.w);
    free(c.node_out);
    free(c.done);
    onnx__model_proto__free_unpacked(c.proto, NULL);
    return s;
}
