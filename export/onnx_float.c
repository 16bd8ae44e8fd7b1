/* onnx_float.c - a float model (layers/model.h) as a float ONNX model (onnx.h,
 * docs/onnx.md). It walks the layer tree as qat_model_forward does, one ONNX node (or
 * two) per layer, so it names layer kinds: with layers/ and quant/lower.c it is one of
 * the places that may (docs/design.md, "The model graph"), because it serialises the
 * float graph itself, which has no lowered form to take instead. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "onnx.h"
#include "onnx_graph.h"

enum { F32 = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, U8 = ONNX__TENSOR_PROTO__DATA_TYPE__UINT8,
       I32 = ONNX__TENSOR_PROTO__DATA_TYPE__INT32 };

typedef struct fwriter {
    onnx_b b;
} fwriter;

static void attrs_window(fwriter *w, Onnx__NodeProto *n, int k, int s, int p) {
    onnx_attr_ints(&w->b, n, "kernel_shape", 2, (int64_t[]){k, k});
    onnx_attr_ints(&w->b, n, "strides", 2, (int64_t[]){s, s});
    onnx_attr_ints(&w->b, n, "pads", 4, (int64_t[]){p, p, p, p});
}

static void param(fwriter *w, const char *name, const qat_tensor *t) {
    int64_t dims[4];
    for (int d = 0; d < t->ndim; d++) dims[d] = t->shape[d];
    onnx_init_f32(&w->b, name, t->ndim, dims, t->data);
}

/* A node with one input x and output named after the layer; returns the output name. */
static char *unary(fwriter *w, const char *op, const qat_layer *l, const char *x, Onnx__NodeProto **n) {
    char *y = onnx_str(&w->b, "%s.%s", l->name, op);
    Onnx__NodeProto *nn = onnx_node(&w->b, op, NULL, onnx_str(&w->b, "%s_%s", op, l->name), 1, (const char *[]){x}, y);
    if (n) *n = nn;
    return y;
}

static const char *emit_seq(fwriter *w, const qat_seq *s, const char *x);

static const char *emit_layer(fwriter *w, const qat_layer *l, const char *x) {
    Onnx__NodeProto *n;
    switch (l->kind) {
    case QAT_LAYER_LINEAR:
    case QAT_LAYER_CONV2D: {
        const bool conv = l->kind == QAT_LAYER_CONV2D;
        param(w, l->weight_name, &l->weight);
        bool bias = conv ? l->cfg.conv.bias : l->cfg.linear.bias;
        if (bias) param(w, l->bias_name, &l->bias);
        if (!conv && l->in_ndim != 1) { /* a linear layer reads its input flattened */
            char *f = unary(w, "Flatten", l, x, &n);
            onnx_attr_int(&w->b, n, "axis", 1);
            x = f;
        }
        char *y = onnx_str(&w->b, "%s.out", l->name);
        const char *in[3] = {x, l->weight_name, l->bias_name};
        n = onnx_node(&w->b, conv ? "Conv" : "Gemm", NULL, l->name, bias ? 3 : 2, in, y);
        if (conv) {
            attrs_window(w, n, l->cfg.conv.kernel, l->cfg.conv.stride, l->cfg.conv.pad);
            onnx_attr_int(&w->b, n, "group", l->cfg.conv.groups);
        } else {
            onnx_attr_int(&w->b, n, "transB", 1);
        }
        return y;
    }
    case QAT_LAYER_BATCHNORM: {
        param(w, l->weight_name, &l->weight);
        param(w, l->bias_name, &l->bias);
        param(w, l->running_mean_name, &l->running_mean);
        param(w, l->running_var_name, &l->running_var);
        char *y = onnx_str(&w->b, "%s.out", l->name);
        n = onnx_node(&w->b, "BatchNormalization", NULL, l->name, 5,
                      (const char *[]){x, l->weight_name, l->bias_name, l->running_mean_name, l->running_var_name}, y);
        onnx_attr_float(&w->b, n, "epsilon", l->cfg.bn.eps);
        return y;
    }
    case QAT_LAYER_RELU: return unary(w, "Relu", l, x, NULL);
    case QAT_LAYER_RELU6: {
        char *lo = onnx_str(&w->b, "%s.clip_min", l->name), *hi = onnx_str(&w->b, "%s.clip_max", l->name);
        onnx_init_scalar_f32(&w->b, lo, 0.0f);
        onnx_init_scalar_f32(&w->b, hi, 6.0f);
        char *y = onnx_str(&w->b, "%s.Clip", l->name);
        onnx_node(&w->b, "Clip", NULL, onnx_str(&w->b, "Clip_%s", l->name), 3, (const char *[]){x, lo, hi}, y);
        return y;
    }
    case QAT_LAYER_SIGMOID: return unary(w, "Sigmoid", l, x, NULL);
    case QAT_LAYER_TANH: return unary(w, "Tanh", l, x, NULL);
    case QAT_LAYER_HARDSWISH: return unary(w, "HardSwish", l, x, NULL);
    case QAT_LAYER_LEAKY_RELU: {
        char *y = unary(w, "LeakyRelu", l, x, &n);
        onnx_attr_float(&w->b, n, "alpha", l->cfg.leaky.alpha);
        return y;
    }
    case QAT_LAYER_MAXPOOL:
    case QAT_LAYER_AVGPOOL: {
        char *y = unary(w, l->kind == QAT_LAYER_MAXPOOL ? "MaxPool" : "AveragePool", l, x, &n);
        attrs_window(w, n, l->cfg.pool.kernel, l->cfg.pool.stride, l->cfg.pool.pad);
        /* layers/pool.h: padded positions count in the divisor, as PyTorch's default */
        if (l->kind == QAT_LAYER_AVGPOOL) onnx_attr_int(&w->b, n, "count_include_pad", 1);
        return y;
    }
    case QAT_LAYER_GLOBAL_AVGPOOL: {
        char *y = unary(w, "GlobalAveragePool", l, x, NULL);
        if (l->out_ndim == 1) { /* qat's global average pool gives (N, C) */
            y = unary(w, "Flatten", l, y, &n);
            onnx_attr_int(&w->b, n, "axis", 1);
        }
        return y;
    }
    case QAT_LAYER_FLATTEN: {
        char *y = unary(w, "Flatten", l, x, &n);
        onnx_attr_int(&w->b, n, "axis", 1);
        return y;
    }
    case QAT_LAYER_DROPOUT: return x; /* the identity at inference */
    case QAT_LAYER_RESIDUAL: {
        const char *a = emit_seq(w, &l->body, x);
        const char *c = l->shortcut.n ? emit_seq(w, &l->shortcut, x) : x;
        char *y = onnx_str(&w->b, "%s.out", l->name);
        onnx_node(&w->b, "Add", NULL, l->name, 2, (const char *[]){a, c}, y);
        return y;
    }
    case QAT_LAYER_COUNT: break;
    }
    QAT_ASSERT(!"onnx_float: not a layer kind");
    return x;
}

static const char *emit_seq(fwriter *w, const qat_seq *s, const char *x) {
    for (int i = 0; i < s->n; i++) x = emit_layer(w, &s->layers[i], x);
    return x;
}

/* The last layer's output shape, through residual blocks. */
static int out_features(const qat_seq *s, int *ndim) {
    const qat_layer *l = &s->layers[s->n - 1];
    *ndim = l->out_ndim;
    return l->out_shape[0];
}

qat_status qat_onnx_write_float(const qat_model *m, const qat_normalization *norm, const char *path,
                                const qat_st_kv *meta, size_t n_meta, qat_onnx_report *rep, qat_error *err) {
    QAT_ASSERT(m != NULL && path != NULL && (meta != NULL || n_meta == 0) && m->finalized);
    if (m->in_ndim != 3 || m->root.n == 0)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "%s: the ONNX export takes models of uint8 images (C, H, W); this model's input has %d "
                             "dimension(s)",
                             path, m->in_ndim);
    int ondim, K = out_features(&m->root, &ondim);
    if (ondim != 1)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG, "%s: the model's output is not a vector of logits", path);
    const int C = m->in_shape[0];
    if (C > QAT_DATA_MAX_CHANNELS)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG, "%s: %d input channels (at most %d)", path, C,
                             QAT_DATA_MAX_CHANNELS);
    qat_normalization id = qat_normalization_identity();
    if (!norm) norm = &id;
    fwriter w;
    onnx_b_init(&w.b);
    /* The input: the same table qat's loader uses (data/loader.c), per channel c the
     * float of (p / 255 - mean[c]) / std[c] in double, read at index p + 256 c. */
    float *lut = malloc((size_t)C * 256 * sizeof *lut);
    int32_t *off = malloc((size_t)C * sizeof *off);
    if (!lut || !off) {
        free(lut);
        free(off);
        onnx_b_free(&w.b);
        return qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
    }
    for (int c = 0; c < C; c++) {
        off[c] = 256 * c;
        for (int v = 0; v < 256; v++)
            lut[c * 256 + v] = (float)(((double)v / 255.0 - (double)norm->mean[c]) / (double)norm->std[c]);
    }
    onnx_init_f32(&w.b, "input.table", 1, (int64_t[]){(int64_t)C * 256}, lut);
    Onnx__NodeProto *n = onnx_node(&w.b, "Cast", NULL, "input.cast", 1, (const char *[]){"pixels"}, "input.index");
    onnx_attr_int(&w.b, n, "to", I32);
    const char *idx = "input.index";
    if (C > 1) {
        onnx_init(&w.b, "input.channel_offset", I32, 4, 4, (int64_t[]){1, C, 1, 1}, off);
        onnx_node(&w.b, "Add", NULL, "input.offset", 2, (const char *[]){"input.index", "input.channel_offset"},
                  "input.index_c");
        idx = "input.index_c";
    }
    free(lut);
    free(off);
    onnx_node(&w.b, "Gather", NULL, "input.normalize", 2, (const char *[]){"input.table", idx}, "input");
    const char *y = emit_seq(&w, &m->root, "input");
    onnx_node(&w.b, "Identity", NULL, "logits", 1, (const char *[]){y}, "logits");
    onnx_input(&w.b, "pixels", U8, 4, (int64_t[]){-1, C, m->in_shape[1], m->in_shape[2]});
    onnx_output(&w.b, "logits", F32, 2, (int64_t[]){-1, K});
    char mean[64], std[64], input[320];
    qat_normalization_format(norm, C, mean, std, sizeof mean);
    snprintf(input, sizeof input,
             "pixels: uint8 (N, C, H, W), raw pixel values 0..255; normalised by the first ops (a table) to "
             "(p / 255 - mean) / std, mean %s, std %s",
             mean, std);
    const qat_st_kv own[] = {{"qat.format", "float32"},
                             {"qat.input", input},
                             {"qat.output", "logits: float32 (N, classes)"}};
    qat_status st = onnx_b_write(&w.b, path, "qat_float", "float model exported by qat (docs/onnx.md)", own, 3, meta, n_meta,
                                 rep, err);
    onnx_b_free(&w.b);
    return st;
}
