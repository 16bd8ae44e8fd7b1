#include "model.h"

#include <math.h>
#include <string.h>

#include "autograd/comm.h"

#include "activation.h"
#include "batchnorm.h"
#include "conv2d.h"
#include "elementwise.h"
#include "init.h"
#include "linear.h"
#include "lora.h"
#include "pool.h"

void qat_layer_average_window(const qat_layer *l, int *kh, int *kw, int *stride, int *pad) {
    QAT_ASSERT(qat_layer_role_of(l) == QAT_LAYER_ROLE_AVERAGE && l->in_ndim == 3);
    if (l->kind == QAT_LAYER_GLOBAL_AVGPOOL) {
        *kh = l->in_shape[1], *kw = l->in_shape[2], *stride = 1, *pad = 0;
    } else {
        *kh = *kw = l->cfg.pool.kernel, *stride = l->cfg.pool.stride, *pad = l->cfg.pool.pad;
    }
}

/* Every layer kind: its name (model files, messages), its role (model.h), and whether
 * its output is a tensor of its own that its backward does not read
 * (qat_layer_output_private). */
static const struct {
    const char *name;
    qat_layer_role role;
    bool private_output;
} KINDS[] = {
    [QAT_LAYER_LINEAR] = {"linear", QAT_LAYER_ROLE_WEIGHTED, true},
    [QAT_LAYER_CONV2D] = {"conv2d", QAT_LAYER_ROLE_WEIGHTED, true},
    [QAT_LAYER_BATCHNORM] = {"batchnorm", QAT_LAYER_ROLE_NORM, true},
    [QAT_LAYER_RELU] = {"relu", QAT_LAYER_ROLE_CLAMP, false},
    [QAT_LAYER_RELU6] = {"relu6", QAT_LAYER_ROLE_CLAMP, false},
    [QAT_LAYER_SIGMOID] = {"sigmoid", QAT_LAYER_ROLE_NONLINEAR, false},
    [QAT_LAYER_TANH] = {"tanh", QAT_LAYER_ROLE_NONLINEAR, false},
    [QAT_LAYER_MAXPOOL] = {"maxpool", QAT_LAYER_ROLE_SELECT, true},
    [QAT_LAYER_AVGPOOL] = {"avgpool", QAT_LAYER_ROLE_AVERAGE, true},
    [QAT_LAYER_GLOBAL_AVGPOOL] = {"global_avgpool", QAT_LAYER_ROLE_AVERAGE, true},
    [QAT_LAYER_FLATTEN] = {"flatten", QAT_LAYER_ROLE_SELECT, false},
    [QAT_LAYER_DROPOUT] = {"dropout", QAT_LAYER_ROLE_SELECT, false},
    [QAT_LAYER_RESIDUAL] = {"residual", QAT_LAYER_ROLE_BLOCK, true},
    /* Their backward reads their input, not their output: the output is private. */
    [QAT_LAYER_HARDSWISH] = {"hardswish", QAT_LAYER_ROLE_NONLINEAR, true},
    [QAT_LAYER_LEAKY_RELU] = {"leaky_relu", QAT_LAYER_ROLE_NONLINEAR, true},
};
_Static_assert(sizeof KINDS / sizeof KINDS[0] == QAT_LAYER_COUNT, "one KINDS entry per layer kind");

const char *qat_layer_kind_str(qat_layer_kind k) {
    return (unsigned)k < QAT_LAYER_COUNT ? KINDS[k].name : "unknown";
}

qat_layer_role qat_layer_role_of(const qat_layer *l) {
    QAT_ASSERT((unsigned)l->kind < QAT_LAYER_COUNT);
    return KINDS[l->kind].role;
}

bool qat_layer_fixed_range(const qat_layer *l, float *lo, float *hi) {
    QAT_ASSERT(qat_layer_role_of(l) == QAT_LAYER_ROLE_NONLINEAR);
    switch (l->kind) {
    case QAT_LAYER_SIGMOID: *lo = 0.0f, *hi = 1.0f; return true;
    case QAT_LAYER_TANH: *lo = -1.0f, *hi = 1.0f; return true;
    case QAT_LAYER_HARDSWISH:
    case QAT_LAYER_LEAKY_RELU: return false;
    case QAT_LAYER_LINEAR:
    case QAT_LAYER_CONV2D:
    case QAT_LAYER_BATCHNORM:
    case QAT_LAYER_RELU:
    case QAT_LAYER_RELU6:
    case QAT_LAYER_MAXPOOL:
    case QAT_LAYER_AVGPOOL:
    case QAT_LAYER_GLOBAL_AVGPOOL:
    case QAT_LAYER_FLATTEN:
    case QAT_LAYER_DROPOUT:
    case QAT_LAYER_RESIDUAL:
    case QAT_LAYER_COUNT: break;
    }
    return false;
}

float qat_layer_clamp_max(const qat_layer *l) {
    QAT_ASSERT(qat_layer_role_of(l) == QAT_LAYER_ROLE_CLAMP);
    return l->kind == QAT_LAYER_RELU6 ? 6.0f : INFINITY;
}

int qat_layer_channels(const qat_layer *l) {
    switch (l->kind) {
    case QAT_LAYER_LINEAR: return l->cfg.linear.out;
    case QAT_LAYER_CONV2D: return l->cfg.conv.out;
    case QAT_LAYER_BATCHNORM: return l->cfg.bn.channels;
    case QAT_LAYER_RELU:
    case QAT_LAYER_RELU6:
    case QAT_LAYER_SIGMOID:
    case QAT_LAYER_TANH:
    case QAT_LAYER_HARDSWISH:
    case QAT_LAYER_LEAKY_RELU:
    case QAT_LAYER_MAXPOOL:
    case QAT_LAYER_AVGPOOL:
    case QAT_LAYER_GLOBAL_AVGPOOL:
    case QAT_LAYER_FLATTEN:
    case QAT_LAYER_DROPOUT:
    case QAT_LAYER_RESIDUAL:
    case QAT_LAYER_COUNT: break;
    }
    QAT_ASSERT(!"qat_layer_channels: a layer without channels of its own");
    return 0;
}

qat_model *qat_model_new(int ndim, const int *sample_shape) {
    QAT_ASSERT(sample_shape != NULL);
    qat_model *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    if (ndim != 1 && ndim != 3) {
        qat_error_set(&m->err, QAT_STATUS_SHAPE,
                      "model: input shape must be (C, H, W) or (features), got %d dims", ndim);
        return m;
    }
    for (int i = 0; i < ndim; i++)
        if (sample_shape[i] <= 0) {
            qat_error_set(&m->err, QAT_STATUS_SHAPE, "model: input dimension %d is %d", i,
                          sample_shape[i]);
            return m;
        }
    m->in_ndim = m->cur_ndim = ndim;
    memcpy(m->in_shape, sample_shape, (size_t)ndim * sizeof(int));
    memcpy(m->cur_shape, sample_shape, (size_t)ndim * sizeof(int));
    m->stack[0] = &m->root;
    m->depth = 1;
    return m;
}

static void seq_free(qat_seq *s) {
    for (int i = 0; i < s->n; i++) {
        seq_free(&s->layers[i].body);
        seq_free(&s->layers[i].shortcut);
    }
    free(s->layers);
}

void qat_model_free(qat_model *m) {
    if (!m) return;
    if (m->quant_free) m->quant_free(m);
    qat_lora_free(m); /* before the layers it points into */
    free(m->state);
    seq_free(&m->root);
    free(m->params);
    free(m->grads);
    free(m->buffers);
    free(m->param_tensors);
    free(m->packed);
    free(m);
}

static void shape_str(char *buf, size_t len, int ndim, const int *shape) {
    if (ndim == 1) snprintf(buf, len, "(%d)", shape[0]);
    else snprintf(buf, len, "(%d, %d, %d)", shape[0], shape[1], shape[2]);
}

/* Appends a layer to the innermost open sequence, with the current shape as input.
 * NULL if the model already failed or is finalized (error recorded). */
static qat_layer *add_layer(qat_model *m, qat_layer_kind kind) {
    if (m->err.status) return NULL;
    if (m->finalized) {
        qat_error_set(&m->err, QAT_STATUS_INVALID_ARG, "model: cannot add a %s layer after finalize",
                      qat_layer_kind_str(kind));
        return NULL;
    }
    qat_seq *s = m->stack[m->depth - 1];
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 8;
        qat_layer *p = realloc(s->layers, (size_t)cap * sizeof *p);
        if (!p) {
            qat_error_set(&m->err, QAT_STATUS_NOMEM, "model: out of memory");
            return NULL;
        }
        s->layers = p;
        s->cap = cap;
    }
    qat_layer *l = &s->layers[s->n];
    memset(l, 0, sizeof *l);
    l->kind = kind;
    /* Name: the index path, PyTorch style. The enclosing block's name is already a full
     * path, so only the innermost level is needed. */
    int d = m->depth - 1;
    int len = d == 0 ? snprintf(l->name, sizeof l->name, "%d", s->n)
                     : snprintf(l->name, sizeof l->name, "%.40s.%s.%d", m->block[d]->name,
                                m->in_shortcut[d] ? "shortcut" : "body", s->n);
    QAT_ASSERT(len > 0 && len < (int)sizeof l->name);
    s->n++;
    l->in_ndim = m->cur_ndim;
    memcpy(l->in_shape, m->cur_shape, sizeof l->in_shape);
    l->out_ndim = m->cur_ndim;
    memcpy(l->out_shape, m->cur_shape, sizeof l->out_shape);
    return l;
}

/* The layer's output becomes the current shape. */
static qat_status set_out(qat_model *m, qat_layer *l, int ndim, int a, int b, int c) {
    l->out_ndim = m->cur_ndim = ndim;
    l->out_shape[0] = m->cur_shape[0] = a;
    l->out_shape[1] = m->cur_shape[1] = b;
    l->out_shape[2] = m->cur_shape[2] = c;
    return QAT_STATUS_OK;
}

static qat_status fail_layer(qat_model *m, qat_layer *l, const char *fmt, const char *detail) {
    char in[64];
    shape_str(in, sizeof in, l->in_ndim, l->in_shape);
    return qat_error_set(&m->err, QAT_STATUS_SHAPE, "layer %s (%s): %s; its input is %s", l->name,
                         qat_layer_kind_str(l->kind), detail, in);
}

qat_status qat_model_linear(qat_model *m, int out_features, bool bias) {
    qat_layer *l = add_layer(m, QAT_LAYER_LINEAR);
    if (!l) return m->err.status;
    if (l->in_ndim != 1)
        return fail_layer(m, l, "", "a linear layer needs a flat input (add flatten before it)");
    if (out_features <= 0) return fail_layer(m, l, "", "out_features must be positive");
    l->cfg.linear.in = l->in_shape[0];
    l->cfg.linear.out = out_features;
    l->cfg.linear.bias = bias;
    return set_out(m, l, 1, out_features, 1, 1);
}

qat_status qat_model_conv2d(qat_model *m, int out_channels, int kernel, int stride, int pad,
                            int groups, bool bias) {
    qat_layer *l = add_layer(m, QAT_LAYER_CONV2D);
    if (!l) return m->err.status;
    if (l->in_ndim != 3) return fail_layer(m, l, "", "conv2d needs a (C, H, W) input");
    qat_conv2d_shape s = {.N = 1, .C = l->in_shape[0], .H = l->in_shape[1], .W = l->in_shape[2],
                          .OC = out_channels, .KH = kernel, .KW = kernel, .stride = stride,
                          .pad = pad, .groups = groups};
    if (out_channels <= 0 || !qat_conv2d_shape_init(&s))
        return fail_layer(m, l, "",
                          "impossible convolution (need channels divisible by groups, kernel "
                          "within the padded input, stride >= 1, padding >= 0)");
    l->cfg.conv.in = s.C;
    l->cfg.conv.out = out_channels;
    l->cfg.conv.kernel = kernel;
    l->cfg.conv.stride = stride;
    l->cfg.conv.pad = pad;
    l->cfg.conv.groups = groups;
    l->cfg.conv.bias = bias;
    return set_out(m, l, 3, out_channels, s.OH, s.OW);
}

qat_status qat_model_batchnorm(qat_model *m) {
    qat_layer *l = add_layer(m, QAT_LAYER_BATCHNORM);
    if (!l) return m->err.status;
    l->cfg.bn.channels = l->in_shape[0];
    l->cfg.bn.eps = 1e-5f;
    l->cfg.bn.momentum = 0.1f;
    return QAT_STATUS_OK;
}

static qat_status simple(qat_model *m, qat_layer_kind k) {
    return add_layer(m, k) ? QAT_STATUS_OK : m->err.status;
}
qat_status qat_model_relu(qat_model *m) { return simple(m, QAT_LAYER_RELU); }
qat_status qat_model_relu6(qat_model *m) { return simple(m, QAT_LAYER_RELU6); }
qat_status qat_model_sigmoid(qat_model *m) { return simple(m, QAT_LAYER_SIGMOID); }
qat_status qat_model_tanh(qat_model *m) { return simple(m, QAT_LAYER_TANH); }
qat_status qat_model_hardswish(qat_model *m) { return simple(m, QAT_LAYER_HARDSWISH); }
qat_status qat_model_leaky_relu(qat_model *m, float alpha) {
    qat_layer *l = add_layer(m, QAT_LAYER_LEAKY_RELU);
    if (!l) return m->err.status;
    if (!isfinite(alpha)) return fail_layer(m, l, "", "the leaky ReLU slope alpha must be finite");
    l->cfg.leaky.alpha = alpha;
    return QAT_STATUS_OK;
}

static qat_status pool(qat_model *m, qat_layer_kind k, int kernel, int stride, int pad) {
    qat_layer *l = add_layer(m, k);
    if (!l) return m->err.status;
    if (l->in_ndim != 3) return fail_layer(m, l, "", "pooling needs a (C, H, W) input");
    qat_pool_shape s = {.N = 1, .C = l->in_shape[0], .H = l->in_shape[1], .W = l->in_shape[2],
                        .K = kernel, .stride = stride, .pad = pad};
    if (!qat_pool_shape_init(&s))
        return fail_layer(m, l, "",
                          "impossible pooling window (need kernel >= 1, stride >= 1, "
                          "0 <= padding <= kernel/2, window within the padded input)");
    l->cfg.pool.kernel = kernel;
    l->cfg.pool.stride = stride;
    l->cfg.pool.pad = pad;
    return set_out(m, l, 3, s.C, s.OH, s.OW);
}
qat_status qat_model_maxpool(qat_model *m, int kernel, int stride, int pad) {
    return pool(m, QAT_LAYER_MAXPOOL, kernel, stride, pad);
}
qat_status qat_model_avgpool(qat_model *m, int kernel, int stride, int pad) {
    return pool(m, QAT_LAYER_AVGPOOL, kernel, stride, pad);
}

qat_status qat_model_global_avgpool(qat_model *m) {
    qat_layer *l = add_layer(m, QAT_LAYER_GLOBAL_AVGPOOL);
    if (!l) return m->err.status;
    if (l->in_ndim != 3) return fail_layer(m, l, "", "global_avgpool needs a (C, H, W) input");
    return set_out(m, l, 1, l->in_shape[0], 1, 1);
}

qat_status qat_model_flatten(qat_model *m) {
    qat_layer *l = add_layer(m, QAT_LAYER_FLATTEN);
    if (!l) return m->err.status;
    int n = l->in_ndim == 3 ? l->in_shape[0] * l->in_shape[1] * l->in_shape[2] : l->in_shape[0];
    return set_out(m, l, 1, n, 1, 1);
}

qat_status qat_model_dropout(qat_model *m, float p) {
    qat_layer *l = add_layer(m, QAT_LAYER_DROPOUT);
    if (!l) return m->err.status;
    if (!(p >= 0.0f && p < 1.0f)) return fail_layer(m, l, "", "dropout probability must be in [0, 1)");
    l->cfg.dropout.p = p;
    return QAT_STATUS_OK;
}

qat_status qat_model_residual_begin(qat_model *m) {
    qat_layer *l = add_layer(m, QAT_LAYER_RESIDUAL);
    if (!l) return m->err.status;
    if (m->depth == QAT_MODEL_MAX_DEPTH)
        return fail_layer(m, l, "", "residual blocks nested too deeply");
    m->block[m->depth] = l;
    m->in_shortcut[m->depth] = false;
    m->stack[m->depth] = &l->body;
    m->depth++;
    return QAT_STATUS_OK;
}

qat_status qat_model_residual_shortcut(qat_model *m) {
    if (m->err.status) return m->err.status;
    if (m->depth < 2 || m->in_shortcut[m->depth - 1])
        return qat_error_set(&m->err, QAT_STATUS_INVALID_ARG,
                             "model: shortcut without an open residual block body");
    qat_layer *l = m->block[m->depth - 1];
    /* The body's end shape is recorded; the shortcut starts again from the block input. */
    l->out_ndim = m->cur_ndim;
    memcpy(l->out_shape, m->cur_shape, sizeof l->out_shape);
    m->cur_ndim = l->in_ndim;
    memcpy(m->cur_shape, l->in_shape, sizeof m->cur_shape);
    m->in_shortcut[m->depth - 1] = true;
    m->stack[m->depth - 1] = &l->shortcut;
    return QAT_STATUS_OK;
}

qat_status qat_model_residual_end(qat_model *m) {
    if (m->err.status) return m->err.status;
    if (m->depth < 2)
        return qat_error_set(&m->err, QAT_STATUS_INVALID_ARG, "model: residual end without begin");
    qat_layer *l = m->block[m->depth - 1];
    int body_ndim = m->in_shortcut[m->depth - 1] ? l->out_ndim : m->cur_ndim;
    int body_shape[3];
    memcpy(body_shape, m->in_shortcut[m->depth - 1] ? l->out_shape : m->cur_shape, sizeof body_shape);
    /* Without layers in the shortcut, cur is the body's end and the shortcut is the input. */
    int sc_ndim = m->in_shortcut[m->depth - 1] ? m->cur_ndim : l->in_ndim;
    const int *sc_shape = m->in_shortcut[m->depth - 1] ? m->cur_shape : l->in_shape;
    m->depth--;
    if (l->body.n == 0) return fail_layer(m, l, "", "a residual block needs a body");
    bool same = body_ndim == sc_ndim;
    for (int i = 0; same && i < body_ndim; i++) same = body_shape[i] == sc_shape[i];
    if (!same) {
        char a[64], b[64], msg[200];
        shape_str(a, sizeof a, body_ndim, body_shape);
        shape_str(b, sizeof b, sc_ndim, sc_shape);
        snprintf(msg, sizeof msg, "body ends in %s but the shortcut in %s", a, b);
        return fail_layer(m, l, "", msg);
    }
    return set_out(m, l, body_ndim, body_shape[0], body_shape[1], body_shape[2]);
}

/* ---- finalize: count, allocate, assign, initialise ---- */

/* Parameter floats, buffer floats, parameter tensors and buffer tensors of a sequence
 * (each tensor is one entry of the model's state). */
static void count_seq(const qat_seq *s, size_t *np, size_t *nb, int *nt, int *nbt) {
    for (int i = 0; i < s->n; i++) {
        const qat_layer *l = &s->layers[i];
        switch (l->kind) {
        case QAT_LAYER_LINEAR:
            *np += (size_t)l->cfg.linear.in * l->cfg.linear.out + (l->cfg.linear.bias ? l->cfg.linear.out : 0);
            *nt += l->cfg.linear.bias ? 2 : 1;
            break;
        case QAT_LAYER_CONV2D: {
            const int k = l->cfg.conv.kernel;
            *np += (size_t)l->cfg.conv.out * (l->cfg.conv.in / l->cfg.conv.groups) * k * k +
                   (l->cfg.conv.bias ? l->cfg.conv.out : 0);
            *nt += l->cfg.conv.bias ? 2 : 1;
            break;
        }
        case QAT_LAYER_BATCHNORM:
            *np += 2 * (size_t)l->cfg.bn.channels;
            *nb += 2 * (size_t)l->cfg.bn.channels;
            *nt += 2;
            *nbt += 2;
            break;
        case QAT_LAYER_RESIDUAL:
            count_seq(&l->body, np, nb, nt, nbt);
            count_seq(&l->shortcut, np, nb, nt, nbt);
            break;
        case QAT_LAYER_RELU:
        case QAT_LAYER_RELU6:
        case QAT_LAYER_SIGMOID:
        case QAT_LAYER_TANH:
        case QAT_LAYER_HARDSWISH:
        case QAT_LAYER_LEAKY_RELU:
        case QAT_LAYER_MAXPOOL:
        case QAT_LAYER_AVGPOOL:
        case QAT_LAYER_GLOBAL_AVGPOOL:
        case QAT_LAYER_FLATTEN:
        case QAT_LAYER_DROPOUT:
        case QAT_LAYER_COUNT: break;
        }
    }
}

typedef struct assign_state {
    qat_model *m;
    size_t p, b;
    int t;
    qat_rng *rng;
} assign_state;

static void assign_param(assign_state *st, qat_tensor *x, char *name_buf, size_t name_len,
                         const char *layer, const char *suffix, int ndim, const int *shape) {
    qat_tensor_set_shape(x, ndim, shape);
    x->data = st->m->params + st->p;
    x->grad = st->m->grads + st->p;
    snprintf(name_buf, name_len, "%s.%s", layer, suffix);
    x->name = name_buf;
    st->p += x->n;
    st->m->param_tensors[st->t++] = x;
    st->m->state[st->m->n_state++] = x;
}

/* A batch-norm running statistic: c floats of the buffer array, filled with v. */
static void assign_buffer(assign_state *st, qat_tensor *x, char *name_buf, size_t name_len,
                          const char *layer, const char *suffix, int c, float v) {
    qat_tensor_set_shape(x, 1, (int[]){c});
    x->data = st->m->buffers + st->b;
    x->grad = NULL;
    snprintf(name_buf, name_len, "%s.%s", layer, suffix);
    x->name = name_buf;
    st->b += (size_t)c;
    qat_init_fill(x->data, (size_t)c, v);
    st->m->state[st->m->n_state++] = x;
}

static void assign_seq(assign_state *st, qat_seq *s) {
    for (int i = 0; i < s->n; i++) {
        qat_layer *l = &s->layers[i];
        switch (l->kind) {
        case QAT_LAYER_LINEAR: {
            int in = l->cfg.linear.in, out = l->cfg.linear.out;
            assign_param(st, &l->weight, l->weight_name, sizeof l->weight_name, l->name, "weight", 2,
                         (int[]){out, in});
            qat_init_kaiming_uniform(l->weight.data, l->weight.n, in, sqrtf(5.0f), st->rng);
            if (l->cfg.linear.bias) {
                assign_param(st, &l->bias, l->bias_name, sizeof l->bias_name, l->name, "bias", 1,
                             (int[]){out});
                qat_init_bias_uniform(l->bias.data, l->bias.n, in, st->rng);
            }
            break;
        }
        case QAT_LAYER_CONV2D: {
            int cg = l->cfg.conv.in / l->cfg.conv.groups, k = l->cfg.conv.kernel;
            int fan_in = cg * k * k;
            assign_param(st, &l->weight, l->weight_name, sizeof l->weight_name, l->name, "weight", 4,
                         (int[]){l->cfg.conv.out, cg, k, k});
            qat_init_kaiming_uniform(l->weight.data, l->weight.n, fan_in, sqrtf(5.0f), st->rng);
            if (l->cfg.conv.bias) {
                assign_param(st, &l->bias, l->bias_name, sizeof l->bias_name, l->name, "bias", 1,
                             (int[]){l->cfg.conv.out});
                qat_init_bias_uniform(l->bias.data, l->bias.n, fan_in, st->rng);
            }
            break;
        }
        case QAT_LAYER_BATCHNORM: {
            int c = l->cfg.bn.channels;
            assign_param(st, &l->weight, l->weight_name, sizeof l->weight_name, l->name, "weight", 1,
                         (int[]){c});
            assign_param(st, &l->bias, l->bias_name, sizeof l->bias_name, l->name, "bias", 1,
                         (int[]){c});
            qat_init_fill(l->weight.data, (size_t)c, 1.0f);
            qat_init_fill(l->bias.data, (size_t)c, 0.0f);
            assign_buffer(st, &l->running_mean, l->running_mean_name, sizeof l->running_mean_name,
                          l->name, "running_mean", c, 0.0f);
            assign_buffer(st, &l->running_var, l->running_var_name, sizeof l->running_var_name,
                          l->name, "running_var", c, 1.0f);
            break;
        }
        case QAT_LAYER_RESIDUAL:
            assign_seq(st, &l->body);
            assign_seq(st, &l->shortcut);
            break;
        case QAT_LAYER_RELU:
        case QAT_LAYER_RELU6:
        case QAT_LAYER_SIGMOID:
        case QAT_LAYER_TANH:
        case QAT_LAYER_HARDSWISH:
        case QAT_LAYER_LEAKY_RELU:
        case QAT_LAYER_MAXPOOL:
        case QAT_LAYER_AVGPOOL:
        case QAT_LAYER_GLOBAL_AVGPOOL:
        case QAT_LAYER_FLATTEN:
        case QAT_LAYER_DROPOUT:
        case QAT_LAYER_COUNT: break;
        }
    }
}

qat_status qat_model_finalize(qat_model *m, qat_rng *rng) {
    QAT_ASSERT(m != NULL && rng != NULL);
    if (m->err.status) return m->err.status;
    if (m->finalized)
        return qat_error_set(&m->err, QAT_STATUS_INVALID_ARG, "model: finalized twice");
    if (m->depth != 1)
        return qat_error_set(&m->err, QAT_STATUS_INVALID_ARG,
                             "model: a residual block was opened but not closed");
    if (m->root.n == 0) return qat_error_set(&m->err, QAT_STATUS_INVALID_ARG, "model: no layers");
    size_t np = 0, nb = 0;
    int nt = 0, nbt = 0;
    count_seq(&m->root, &np, &nb, &nt, &nbt);
    m->params = calloc(np ? np : 1, sizeof(float));
    m->grads = calloc(np ? np : 1, sizeof(float));
    m->buffers = calloc(nb ? nb : 1, sizeof(float));
    m->param_tensors = calloc(nt ? (size_t)nt : 1, sizeof *m->param_tensors);
    const int ns = nt + nbt;
    m->state = calloc(ns ? (size_t)ns : 1, sizeof *m->state);
    if (!m->params || !m->grads || !m->buffers || !m->param_tensors || !m->state)
        return qat_error_set(&m->err, QAT_STATUS_NOMEM, "model: out of memory for %zu parameters", np);
    m->n_params = np;
    m->n_buffers = nb;
    m->n_param_tensors = nt;
    assign_state st = {m, 0, 0, 0, rng};
    assign_seq(&st, &m->root);
    QAT_ASSERT(st.p == np && st.b == nb && st.t == nt && m->n_state == ns);
    m->n_layer_state = m->n_state;
    m->finalized = true;
    return QAT_STATUS_OK;
}

/* ---- forward ---- */

qat_tensor *qat_layer_forward_with(const qat_layer *l, qat_tape *t, qat_tensor *x, qat_tensor *w,
                                   qat_tensor *b) {
    switch (l->kind) {
    case QAT_LAYER_LINEAR: return qat_linear(t, x, w, b);
    case QAT_LAYER_CONV2D:
        return qat_conv2d(t, x, w, b, l->cfg.conv.stride, l->cfg.conv.pad, l->cfg.conv.groups);
    case QAT_LAYER_BATCHNORM:
    case QAT_LAYER_RELU:
    case QAT_LAYER_RELU6:
    case QAT_LAYER_SIGMOID:
    case QAT_LAYER_TANH:
    case QAT_LAYER_HARDSWISH:
    case QAT_LAYER_LEAKY_RELU:
    case QAT_LAYER_MAXPOOL:
    case QAT_LAYER_AVGPOOL:
    case QAT_LAYER_GLOBAL_AVGPOOL:
    case QAT_LAYER_FLATTEN:
    case QAT_LAYER_DROPOUT:
    case QAT_LAYER_RESIDUAL:
    case QAT_LAYER_COUNT: break;
    }
    QAT_ASSERT(!"qat_layer_forward_with: not a weighted layer");
    return NULL;
}

qat_tensor *qat_layer_forward(qat_layer *l, qat_tape *t, qat_tensor *x, bool priv) {
    /* priv: x is the previous layer's own output, feeding only this layer, so ReLUs may
     * work in place and batch norm may reuse its gradient buffer (memory, not math). */
    qat_tensor *b = l->bias.data ? &l->bias : NULL;
    switch (l->kind) {
    case QAT_LAYER_LINEAR:
    case QAT_LAYER_CONV2D: return qat_layer_forward_with(l, t, x, l->lora ? qat_lora_layer_weight(t, l) : &l->weight, b);
    case QAT_LAYER_BATCHNORM:
        return qat_batchnorm_ex(t, x, &l->weight, &l->bias, l->running_mean.data, l->running_var.data,
                                l->cfg.bn.momentum, l->cfg.bn.eps, priv);
    case QAT_LAYER_RELU: return priv ? qat_relu_inplace(t, x) : qat_relu(t, x);
    case QAT_LAYER_RELU6: return priv ? qat_relu6_inplace(t, x) : qat_relu6(t, x);
    case QAT_LAYER_SIGMOID: return qat_sigmoid(t, x);
    case QAT_LAYER_TANH: return qat_tanh(t, x);
    case QAT_LAYER_HARDSWISH: return qat_hardswish(t, x);
    case QAT_LAYER_LEAKY_RELU: return qat_leaky_relu(t, x, l->cfg.leaky.alpha);
    case QAT_LAYER_MAXPOOL:
        return qat_maxpool2d(t, x, l->cfg.pool.kernel, l->cfg.pool.stride, l->cfg.pool.pad);
    case QAT_LAYER_AVGPOOL:
        return qat_avgpool2d(t, x, l->cfg.pool.kernel, l->cfg.pool.stride, l->cfg.pool.pad);
    case QAT_LAYER_GLOBAL_AVGPOOL: return qat_global_avgpool(t, x);
    case QAT_LAYER_FLATTEN: return qat_flatten(t, x);
    case QAT_LAYER_DROPOUT: return qat_dropout(t, x, l->cfg.dropout.p);
    case QAT_LAYER_RESIDUAL:
    case QAT_LAYER_COUNT: break;
    }
    QAT_ASSERT(!"qat_layer_forward: a residual block is run by its sequence");
    return NULL;
}

bool qat_layer_output_private(const qat_layer *l) {
    QAT_ASSERT((unsigned)l->kind < QAT_LAYER_COUNT);
    return KINDS[l->kind].private_output;
}

/* Whether layers i, i+1, i+2 of s are batch norm, ReLU and a 2x2 stride-2 unpadded max
 * pool on a 4-D input of at least 2x2, in a training step: then one fused op
 * (qat_bn_relu_maxpool) runs all three, storing neither intermediate tensor. Its results
 * are the three layers' (batchnorm.h). */
static bool fuses_bn_relu_pool(const qat_seq *s, int i, const qat_tape *t, const qat_tensor *x) {
    /* synchronised batch norm (autograd/comm.h) runs the plain layers */
    if (!t->training || qat_comm_sync_bn() || i + 2 >= s->n || x->ndim != 4 || x->shape[2] < 2 || x->shape[3] < 2)
        return false;
    const qat_layer *p = &s->layers[i + 2];
    return s->layers[i].kind == QAT_LAYER_BATCHNORM && s->layers[i + 1].kind == QAT_LAYER_RELU &&
           p->kind == QAT_LAYER_MAXPOOL && p->cfg.pool.kernel == 2 && p->cfg.pool.stride == 2 &&
           p->cfg.pool.pad == 0;
}

/* seen: called with each layer's input before it runs (qat_model_forward_float), or NULL. */
static qat_tensor *forward_seq(qat_seq *s, qat_tape *t, qat_tensor *x, qat_layer_seen seen, void *user) {
    for (int i = 0; i < s->n && x; i++) {
        qat_layer *l = &s->layers[i];
        if (seen) seen(l, x, user);
        if (!seen && fuses_bn_relu_pool(s, i, t, x)) {
            x = qat_bn_relu_maxpool(t, x, &l->weight, &l->bias, l->running_mean.data,
                                    l->running_var.data, l->cfg.bn.momentum, l->cfg.bn.eps,
                                    i > 0 && qat_layer_output_private(&s->layers[i - 1]));
            i += 2;
        } else if (l->kind == QAT_LAYER_RESIDUAL) {
            qat_tensor *body = forward_seq(&l->body, t, x, seen, user);
            qat_tensor *sc = l->shortcut.n ? forward_seq(&l->shortcut, t, x, seen, user) : x;
            x = qat_add(t, body, sc);
        } else {
            x = qat_layer_forward(l, t, x, i > 0 && qat_layer_output_private(&s->layers[i - 1]));
        }
    }
    return x;
}

static bool input_fits(qat_model *m, qat_tape *t, qat_tensor *x) {
    bool ok = x->ndim == m->in_ndim + 1;
    for (int i = 0; ok && i < m->in_ndim; i++) ok = x->shape[i + 1] == m->in_shape[i];
    if (!ok) {
        char sx[64], want[64];
        shape_str(want, sizeof want, m->in_ndim, m->in_shape);
        qat_tape_fail(t, QAT_STATUS_SHAPE,
                      "model: input %s does not match the model's sample shape %s (expected (batch, ...))",
                      qat_tensor_shape_str(x, sx, sizeof sx), want);
    }
    return ok;
}

qat_tensor *qat_model_forward_float(qat_model *m, qat_tape *t, qat_tensor *x, qat_layer_seen seen, void *user) {
    QAT_ASSERT(m != NULL && t != NULL);
    if (!x) return NULL;
    if (!m->finalized) return qat_tape_fail(t, QAT_STATUS_INVALID_ARG, "model: forward before finalize");
    return input_fits(m, t, x) ? forward_seq(&m->root, t, x, seen, user) : NULL;
}

qat_tensor *qat_model_forward(qat_model *m, qat_tape *t, qat_tensor *x) {
    QAT_ASSERT(m != NULL && t != NULL);
    if (!x) return NULL;
    if (!m->finalized)
        return qat_tape_fail(t, QAT_STATUS_INVALID_ARG, "model: forward before finalize");
    if (!input_fits(m, t, x)) return NULL;
    if (m->quant) return m->quant_forward(m, t, x);
    return forward_seq(&m->root, t, x, NULL, NULL);
}

/* Appends x to the model's state. */
static qat_status add_state(qat_model *m, qat_tensor *x) {
    qat_tensor **e = realloc(m->state, (size_t)(m->n_state + 1) * sizeof *e);
    if (!e) return qat_error_set(&m->err, QAT_STATUS_NOMEM, "model: out of memory");
    m->state = e;
    e[m->n_state++] = x;
    return QAT_STATUS_OK;
}

qat_status qat_model_add_param(qat_model *m, qat_tensor *x) {
    QAT_ASSERT(m != NULL && m->finalized && x != NULL && x->n > 0);
    size_t np = m->n_params + x->n;
    float *p = malloc(np * sizeof(float)), *g = calloc(np, sizeof(float));
    qat_tensor **pt = realloc(m->param_tensors, (size_t)(m->n_param_tensors + 1) * sizeof *pt);
    if (pt) m->param_tensors = pt;
    if (!p || !g || !pt || add_state(m, x)) {
        free(p);
        free(g);
        return qat_error_set(&m->err, QAT_STATUS_NOMEM, "model: out of memory adding %s", x->name);
    }
    memcpy(p, m->params, m->n_params * sizeof(float));
    memcpy(g, m->grads, m->n_params * sizeof(float));
    for (int i = 0; i < m->n_param_tensors; i++) {
        qat_tensor *q = m->param_tensors[i];
        size_t off = (size_t)(q->data - m->params);
        q->data = p + off;
        q->grad = g + off;
    }
    free(m->params);
    free(m->grads);
    m->params = p;
    m->grads = g;
    x->data = p + m->n_params;
    x->grad = g + m->n_params;
    memset(x->data, 0, x->n * sizeof(float));
    m->param_tensors[m->n_param_tensors++] = x;
    m->n_params = np;
    return QAT_STATUS_OK;
}

qat_status qat_model_add_buffer(qat_model *m, qat_tensor *x) {
    QAT_ASSERT(m != NULL && m->finalized && x != NULL && x->data != NULL);
    x->grad = NULL;
    return add_state(m, x);
}

void qat_model_zero_grad(qat_model *m) { memset(m->grads, 0, m->n_params * sizeof(float)); }

void qat_model_set_frozen(qat_model *m, qat_tensor *p, bool frozen) {
    QAT_ASSERT(m && p && p->data >= m->params && p->data < m->params + m->n_params);
    p->frozen = frozen;
}

size_t qat_model_n_trainable(const qat_model *m) {
    size_t n = 0;
    for (int i = 0; i < m->n_param_tensors; i++)
        if (!m->param_tensors[i]->frozen) n += m->param_tensors[i]->n;
    return n;
}

int qat_model_trainable_lengths(const qat_model *m, size_t *out) {
    int k = 0;
    for (int i = 0; i < m->n_param_tensors; i++)
        if (!m->param_tensors[i]->frozen) out[k++] = m->param_tensors[i]->n;
    return k;
}

void qat_model_pack(const qat_model *m, const float *full, float *packed) {
    size_t k = 0;
    for (int i = 0; i < m->n_param_tensors; i++) {
        const qat_tensor *p = m->param_tensors[i];
        if (p->frozen) continue;
        memcpy(packed + k, full + (p->data - m->params), p->n * sizeof(float));
        k += p->n;
    }
}

void qat_model_unpack(const qat_model *m, const float *packed, float *full) {
    size_t k = 0;
    for (int i = 0; i < m->n_param_tensors; i++) {
        const qat_tensor *p = m->param_tensors[i];
        if (p->frozen) continue;
        memcpy(full + (p->data - m->params), packed + k, p->n * sizeof(float));
        k += p->n;
    }
}

/* ---- lookup by name ---- */

qat_tensor *qat_model_param(qat_model *m, const char *name) {
    for (int i = 0; i < m->n_param_tensors; i++)
        if (strcmp(m->param_tensors[i]->name, name) == 0) return m->param_tensors[i];
    return NULL;
}

qat_tensor *qat_model_state_find(qat_model *m, const char *name) {
    for (int i = 0; i < m->n_state; i++)
        if (strcmp(m->state[i]->name, name) == 0) return m->state[i];
    return NULL;
}

float *qat_model_buffer(qat_model *m, const char *name, size_t *n) {
    qat_tensor *x = qat_model_state_find(m, name);
    if (!x || x->grad) return NULL;
    *n = x->n;
    return x->data;
}

/* ---- reference models ---- */

static qat_model *finish(qat_model *m, qat_rng *rng) {
    if (!m) return NULL;
    if (qat_model_finalize(m, rng) != QAT_STATUS_OK) {
        fprintf(stderr, "qat: reference model: %s\n", m->err.msg);
        qat_model_free(m);
        return NULL;
    }
    return m;
}

qat_model *qat_model_mlp(qat_rng *rng) {
    qat_model *m = qat_model_new(3, (int[]){1, 28, 28});
    if (!m) return NULL;
    qat_model_flatten(m);
    qat_model_linear(m, 256, true);
    qat_model_relu(m);
    qat_model_linear(m, 128, true);
    qat_model_relu(m);
    qat_model_linear(m, 10, true);
    return finish(m, rng);
}

qat_model *qat_model_cnn(qat_rng *rng) {
    qat_model *m = qat_model_new(3, (int[]){1, 28, 28});
    if (!m) return NULL;
    qat_model_conv2d(m, 32, 3, 1, 1, 1, true);
    qat_model_batchnorm(m);
    qat_model_relu(m);
    qat_model_maxpool(m, 2, 2, 0);
    qat_model_conv2d(m, 64, 3, 1, 1, 1, true);
    qat_model_batchnorm(m);
    qat_model_relu(m);
    qat_model_maxpool(m, 2, 2, 0);
    qat_model_flatten(m);
    qat_model_linear(m, 128, true);
    qat_model_relu(m);
    qat_model_linear(m, 10, true);
    return finish(m, rng);
}

/* ---- inspection ---- */

static size_t shape_numel(int ndim, const int *s) {
    return ndim == 1 ? (size_t)s[0] : (size_t)s[0] * s[1] * s[2];
}

size_t qat_layer_macs(const qat_layer *l) {
    switch (l->kind) {
    case QAT_LAYER_LINEAR: return (size_t)l->cfg.linear.in * l->cfg.linear.out;
    case QAT_LAYER_CONV2D: {
        const int k = l->cfg.conv.kernel;
        return shape_numel(l->out_ndim, l->out_shape) * (size_t)(l->cfg.conv.in / l->cfg.conv.groups) * k * k;
    }
    case QAT_LAYER_RESIDUAL: {
        size_t s = 0;
        for (int i = 0; i < l->body.n; i++) s += qat_layer_macs(&l->body.layers[i]);
        for (int i = 0; i < l->shortcut.n; i++) s += qat_layer_macs(&l->shortcut.layers[i]);
        return s;
    }
    case QAT_LAYER_BATCHNORM:
    case QAT_LAYER_RELU:
    case QAT_LAYER_RELU6:
    case QAT_LAYER_SIGMOID:
    case QAT_LAYER_TANH:
    case QAT_LAYER_HARDSWISH:
    case QAT_LAYER_LEAKY_RELU:
    case QAT_LAYER_MAXPOOL:
    case QAT_LAYER_AVGPOOL:
    case QAT_LAYER_GLOBAL_AVGPOOL:
    case QAT_LAYER_FLATTEN:
    case QAT_LAYER_DROPOUT:
    case QAT_LAYER_COUNT: break;
    }
    return 0;
}

static void print_seq(const qat_seq *s, FILE *f, int indent) {
    for (int i = 0; i < s->n; i++) {
        const qat_layer *l = &s->layers[i];
        char out[64];
        shape_str(out, sizeof out, l->out_ndim, l->out_shape);
        size_t np = l->weight.n + l->bias.n;
        fprintf(f, "%*s%-14s %-15s %-16s %10zu %12zu\n", indent, "", l->name,
                qat_layer_kind_str(l->kind), out, np, qat_layer_macs(l));
        if (l->kind == QAT_LAYER_RESIDUAL) {
            print_seq(&l->body, f, indent + 2);
            if (l->shortcut.n) print_seq(&l->shortcut, f, indent + 2);
        }
    }
}

void qat_model_print(const qat_model *m, FILE *f) {
    fprintf(f, "%-14s %-15s %-16s %10s %12s\n", "layer", "kind", "output", "params", "MACs");
    print_seq(&m->root, f, 0);
    size_t macs = 0;
    for (int i = 0; i < m->root.n; i++) macs += qat_layer_macs(&m->root.layers[i]);
    fprintf(f, "total: %zu parameters (%.1f KiB fp32), %zu MACs per sample\n", m->n_params,
            (double)m->n_params * 4 / 1024.0, macs);
}
