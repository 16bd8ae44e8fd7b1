/* model.h - a model as a static graph of layers: a sequence, where a residual block is
 * one layer holding two sub-sequences, out = body(x) + shortcut(x) (an empty shortcut is
 * the identity). This covers MLPs, plain CNNs, ResNet- and MobileNet-style networks.
 *
 * Build a model layer by layer; each call infers its input from the previous layer's
 * output, so only what cannot be inferred is given:
 *
 *     qat_model *m = qat_model_new(3, (int[]){1, 28, 28});   // per-sample input shape
 *     qat_model_conv2d(m, 32, 3, 1, 1, 1, true);             // out, kernel, stride, pad, groups, bias
 *     qat_model_batchnorm(m);
 *     qat_model_relu(m);
 *     qat_model_maxpool(m, 2, 2, 0);
 *     qat_model_flatten(m);
 *     qat_model_linear(m, 10, true);
 *     if (qat_model_finalize(m, &rng) != QAT_STATUS_OK) puts(m->err.msg);
 *
 * A builder call that does not fit (a linear layer after an unflattened conv, a residual
 * whose branches end in different shapes) records the first error in m->err; later calls
 * do nothing and finalize returns it. Finalize allocates all parameters in one flat
 * array (and their gradients in another, of the same layout) so optimizers are flat
 * loops, and initialises them as PyTorch does (init.h).
 *
 * Names follow PyTorch's nn.Sequential state_dict: the layer at index 3 owns "3.weight"
 * and "3.bias"; inside a residual block at index 4, "4.body.0.weight",
 * "4.shortcut.0.weight". Batch norm owns "i.weight" (gamma), "i.bias" (beta) and the
 * buffers "i.running_mean", "i.running_var".
 */
#ifndef QAT_MODEL_H
#define QAT_MODEL_H

#include "autograd/tape.h"

typedef enum qat_layer_kind {
    QAT_LAYER_LINEAR,
    QAT_LAYER_CONV2D,
    QAT_LAYER_BATCHNORM,
    QAT_LAYER_RELU,
    QAT_LAYER_RELU6,
    QAT_LAYER_SIGMOID,
    QAT_LAYER_TANH,
    QAT_LAYER_MAXPOOL,
    QAT_LAYER_AVGPOOL,
    QAT_LAYER_GLOBAL_AVGPOOL,
    QAT_LAYER_FLATTEN,
    QAT_LAYER_DROPOUT,
    QAT_LAYER_RESIDUAL,
} qat_layer_kind;

const char *qat_layer_kind_str(qat_layer_kind k);

struct qat_layer;
typedef struct qat_seq {
    struct qat_layer *layers;
    int n, cap;
} qat_seq;

#define QAT_NAME_LEN 64

typedef struct qat_layer {
    qat_layer_kind kind;
    char name[QAT_NAME_LEN]; /* "3", "4.body.0" */
    /* Per-sample shapes: (C, H, W) or (F). */
    int in_ndim, in_shape[3];
    int out_ndim, out_shape[3];
    union {
        struct { int in, out; bool bias; } linear;
        struct { int in, out, kernel, stride, pad, groups; bool bias; } conv;
        struct { int channels; float eps, momentum; } bn;
        struct { int kernel, stride, pad; } pool;
        struct { float p; } dropout;
    } cfg;
    /* Parameters: linear/conv weight and bias; batch norm gamma (weight) and beta (bias).
     * data/grad point into the model's flat buffers after finalize. */
    qat_tensor weight, bias;
    char weight_name[QAT_NAME_LEN + 16], bias_name[QAT_NAME_LEN + 16];
    float *running_mean, *running_var; /* batch norm, in the model's buffer array */
    qat_seq body, shortcut;            /* residual */
    struct qat_layer_quant *quant;     /* quantization settings (quant/quant.h), or NULL */
} qat_layer;

#define QAT_MODEL_MAX_DEPTH 8

typedef struct qat_model {
    int in_ndim, in_shape[3]; /* per sample */
    qat_seq root;
    /* After finalize: */
    float *params, *grads; /* n_params floats each, every parameter contiguous */
    size_t n_params;
    float *buffers; /* batch-norm running statistics */
    size_t n_buffers;
    qat_tensor **param_tensors; /* in graph order */
    int n_param_tensors;
    bool finalized;
    qat_error err;
    /* Tensors added after finalize, saved in checkpoints after the layers' own:
     * quantization parameters (also in param_tensors) and buffers (quant/quant.h). */
    qat_tensor **extra_tensors;
    int n_extra_tensors;
    /* Quantization (quant/quant.h): when set, qat_model_forward runs the fake-quant
     * graph through quant_forward; quant_free releases it with the model. */
    struct qat_quant *quant;
    qat_tensor *(*quant_forward)(struct qat_model *m, qat_tape *t, qat_tensor *x);
    void (*quant_free)(struct qat_model *m);
    /* Builder state: the sequence being appended to, innermost last. */
    qat_seq *stack[QAT_MODEL_MAX_DEPTH];
    qat_layer *block[QAT_MODEL_MAX_DEPTH]; /* the residual layer of each open level */
    bool in_shortcut[QAT_MODEL_MAX_DEPTH];
    int depth;
    int cur_ndim, cur_shape[3];
} qat_model;

/* sample_shape: (C, H, W) with ndim 3, or (F) with ndim 1. NULL only if out of memory. */
qat_model *qat_model_new(int ndim, const int *sample_shape);
void qat_model_free(qat_model *m);

qat_status qat_model_linear(qat_model *m, int out_features, bool bias);
qat_status qat_model_conv2d(qat_model *m, int out_channels, int kernel, int stride, int pad,
                            int groups, bool bias);
qat_status qat_model_batchnorm(qat_model *m); /* eps 1e-5, momentum 0.1 as in PyTorch */
qat_status qat_model_relu(qat_model *m);
qat_status qat_model_relu6(qat_model *m);
qat_status qat_model_sigmoid(qat_model *m);
qat_status qat_model_tanh(qat_model *m);
qat_status qat_model_maxpool(qat_model *m, int kernel, int stride, int pad);
qat_status qat_model_avgpool(qat_model *m, int kernel, int stride, int pad);
qat_status qat_model_global_avgpool(qat_model *m);
qat_status qat_model_flatten(qat_model *m);
qat_status qat_model_dropout(qat_model *m, float p);
/* Opens a residual block: layers added next form its body. */
qat_status qat_model_residual_begin(qat_model *m);
/* Optional: layers added next form the shortcut (e.g. a 1x1 conv that changes shape). */
qat_status qat_model_residual_shortcut(qat_model *m);
/* Closes the block; body and shortcut must end in the same shape. */
qat_status qat_model_residual_end(qat_model *m);
/* Allocates and initialises the parameters from rng. */
qat_status qat_model_finalize(qat_model *m, qat_rng *rng);

/* x: (N, sample shape...). Builds the tape; returns the output (N, ...) or NULL with
 * t->err set. t->training selects batch statistics and active dropout. */
qat_tensor *qat_model_forward(qat_model *m, qat_tape *t, qat_tensor *x);
void qat_model_zero_grad(qat_model *m);
/* Whether a layer's forward output is a tensor of its own whose data its backward does
 * not read (conv, linear, batch norm, pools, residual add), so that the next layer of
 * the same sequence, its only consumer, may overwrite it or reuse its gradient. */
bool qat_layer_output_private(const qat_layer *l);
/* One layer of the float model (not a residual block), as qat_model_forward runs it. */
qat_tensor *qat_layer_forward(qat_layer *l, qat_tape *t, qat_tensor *x);

/* The reference models of the project, finalized and initialised from rng:
 * MLP: 784-256-ReLU-128-ReLU-10 (input (1, 28, 28) flattened first, so the same data
 *      feed both models).
 * CNN: conv 1->32 3x3 pad 1, BN, ReLU, maxpool 2; conv 32->64 3x3 pad 1, BN, ReLU,
 *      maxpool 2; flatten 3136 -> linear 128, ReLU -> linear 10. */
qat_model *qat_model_mlp(qat_rng *rng);
qat_model *qat_model_cnn(qat_rng *rng);

/* After finalize: adds a parameter `x` (caller-owned struct; shape and name set by the
 * caller, name kept as a pointer) of x->n floats, zero-initialised, at the end of the
 * flat arrays, which grow: every parameter's data and grad pointers are re-pointed.
 * Optimizers must be created after the last call. */
qat_status qat_model_add_param(qat_model *m, qat_tensor *x);
/* After finalize: registers a buffer `x` (caller-owned data, saved and restored with the
 * model, not optimized). */
qat_status qat_model_add_buffer(qat_model *m, qat_tensor *x);

/* The parameter named `name` ("3.weight"), or NULL. */
qat_tensor *qat_model_param(qat_model *m, const char *name);
/* A batch-norm running statistic named "i.running_mean" or "i.running_var" (n set to its
 * length), or NULL. */
float *qat_model_buffer(qat_model *m, const char *name, size_t *n);

/* Multiply-accumulates per sample of one layer (0 for layers without them; a residual
 * counts its branches). */
size_t qat_layer_macs(const qat_layer *l);
/* Prints one line per layer: name, kind, output shape, parameters, MACs. */
void qat_model_print(const qat_model *m, FILE *f);

#endif
