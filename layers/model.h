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
    QAT_LAYER_HARDSWISH,
    QAT_LAYER_LEAKY_RELU,
    QAT_LAYER_COUNT
} qat_layer_kind;

const char *qat_layer_kind_str(qat_layer_kind k);

/* What a layer kind does, in the terms later stages need: quantization places its
 * requantization points by role (quant/quant.h), so it never names a layer kind; only
 * layers/ and the lowering to the integer model (quant/lower.c) do. A new kind gets a
 * role in the table in model.c. */
typedef enum qat_layer_role {
    QAT_LAYER_ROLE_WEIGHTED,  /* conv2d, linear: a weighted sum, the head of a quantized unit */
    QAT_LAYER_ROLE_NORM,      /* batchnorm: folded into the weighted layer before it */
    QAT_LAYER_ROLE_CLAMP,     /* relu, relu6: a clamp, fused into the requantization before it */
    QAT_LAYER_ROLE_NONLINEAR, /* sigmoid, tanh, hardswish, leaky_relu: an elementwise
                               * function, requantized after (a lookup table in the int8
                               * model) */
    QAT_LAYER_ROLE_AVERAGE,   /* avgpool, global_avgpool: the input's scale and zero point */
    QAT_LAYER_ROLE_SELECT,    /* maxpool, flatten, dropout: outputs are input values (dropout
                               * is the identity at inference) */
    QAT_LAYER_ROLE_BLOCK,     /* residual: body(x) + shortcut(x) */
    QAT_LAYER_ROLE_COUNT
} qat_layer_role;

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
        struct { float alpha; } leaky;    /* leaky_relu: the slope for x <= 0 */
    } cfg;
    /* Parameters: linear/conv weight and bias; batch norm gamma (weight) and beta (bias).
     * data/grad point into the model's flat buffers after finalize. */
    qat_tensor weight, bias;
    char weight_name[QAT_NAME_LEN + 16], bias_name[QAT_NAME_LEN + 16];
    /* Batch norm's running statistics (C), in the model's buffer array; no gradient. */
    qat_tensor running_mean, running_var;
    char running_mean_name[QAT_NAME_LEN + 16], running_var_name[QAT_NAME_LEN + 16];
    qat_seq body, shortcut;            /* residual */
    struct qat_layer_quant *quant;     /* quantization settings (quant/quant.h), or NULL */
    struct qat_lora_adapter *lora;     /* a low-rank adapter (layers/lora.h), or NULL */
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
    /* The model's state: every tensor a checkpoint saves, in the order it saves them
     * (PyTorch's state_dict order for the layers: per layer weight, bias, running_mean,
     * running_var; a residual block's body, then its shortcut), then what was added
     * after finalize with qat_model_add_param / qat_model_add_buffer (quantization
     * parameters and buffers, quant/quant.h). The first n_layer_state belong to the
     * layers. A tensor with a gradient is a parameter, one without a buffer. */
    qat_tensor **state;
    int n_state, n_layer_state;
    /* Training steps taken: the trainer advances it after every optimizer step and
     * checkpoints keep it ("step"); schedules that depend on training progress (QAT's
     * freeze-bn and freeze-observer) read it. Forward passes never change it. */
    long step;
    /* Quantization (quant/quant.h): when set, qat_model_forward runs the fake-quant
     * graph through quant_forward; quant_free releases it with the model. */
    struct qat_quant *quant;
    qat_tensor *(*quant_forward)(struct qat_model *m, qat_tape *t, qat_tensor *x);
    void (*quant_free)(struct qat_model *m);
    /* Called by the trainer after every optimizer step (NULL: nothing): quantization
     * projects learned step sizes back to positive values there (quant/lsq.h). */
    void (*quant_after_step)(struct qat_model *m);
    /* The trainer's packed copy of the trainable parameters and their gradients when some
     * are frozen (2 x packed_n floats; qat_model_pack), freed with the model. */
    float *packed;
    size_t packed_n;
    /* LoRA adapters (layers/lora.h): freed with the model; NULL without. */
    struct qat_lora *lora;
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
qat_status qat_model_hardswish(qat_model *m);
/* alpha: the slope for x <= 0 (PyTorch's negative_slope; model files default to 0.01),
 * finite. */
qat_status qat_model_leaky_relu(qat_model *m, float alpha);
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
/* The float model's forward, quantization ignored, calling seen(l, x, user) with every
 * layer's input before the layer runs (the layers of residual blocks included, the block
 * itself first): for passes that need activations, such as SmoothQuant's statistics
 * (quant/smooth.h). In training mode the fused batch norm + ReLU + pool is not used. */
typedef void (*qat_layer_seen)(const qat_layer *l, const qat_tensor *x, void *user);
qat_tensor *qat_model_forward_float(qat_model *m, qat_tape *t, qat_tensor *x, qat_layer_seen seen, void *user);
void qat_model_zero_grad(qat_model *m);
/* Whether a layer's forward output is a tensor of its own whose data its backward does
 * not read (conv, linear, batch norm, pools, residual add), so that the next layer of
 * the same sequence, its only consumer, may overwrite it or reuse its gradient. */
bool qat_layer_output_private(const qat_layer *l);
/* One layer of the float model (not a residual block), as qat_model_forward runs it.
 * priv: x is private to this layer (qat_layer_output_private of its producer), so a
 * clamp may work in place and batch norm may reuse x's gradient buffer. */
qat_tensor *qat_layer_forward(qat_layer *l, qat_tape *t, qat_tensor *x, bool priv);
/* A weighted layer (role WEIGHTED) run with the given weight and bias (b may be NULL)
 * instead of its own: how fake quantization runs it with quantized weights. */
qat_tensor *qat_layer_forward_with(const qat_layer *l, qat_tape *t, qat_tensor *x, qat_tensor *w,
                                   qat_tensor *b);

qat_layer_role qat_layer_role_of(const qat_layer *l);
/* A nonlinear layer's output range when the function fixes it (sigmoid [0, 1], tanh
 * [-1, 1]): true and *lo, *hi set; false for the others (hardswish, leaky_relu), whose
 * range is observed. Quantization gives the fixed ranges fixed output scales
 * (int8-spec.md, "Other ops"). */
bool qat_layer_fixed_range(const qat_layer *l, float *lo, float *hi);
/* A clamp layer's upper bound: 6 for relu6, INFINITY for relu. */
float qat_layer_clamp_max(const qat_layer *l);
/* Output channels of a weighted layer, channels of a batch norm. */
int qat_layer_channels(const qat_layer *l);
/* An averaging layer's window over its (C, H, W) input: kernel kh x kw, stride, pad
 * (a global average pool: H x W, 1, 0). */
void qat_layer_average_window(const qat_layer *l, int *kh, int *kw, int *stride, int *pad);

/* The reference models of the project, finalized and initialised from rng:
 * MLP: 784-256-ReLU-128-ReLU-10 (input (1, 28, 28) flattened first, so the same data
 *      feed both models).
 * CNN: conv 1->32 3x3 pad 1, BN, ReLU, maxpool 2; conv 32->64 3x3 pad 1, BN, ReLU,
 *      maxpool 2; flatten 3136 -> linear 128, ReLU -> linear 10. */
qat_model *qat_model_mlp(qat_rng *rng);
qat_model *qat_model_cnn(qat_rng *rng);

/* After finalize: adds a parameter `x` (caller-owned struct; shape and name set by the
 * caller, name kept as a pointer) of x->n floats, zero-initialised, at the end of the
 * flat arrays, which grow: every parameter's data and grad pointers are re-pointed, and
 * the model's state lists it last. An optimizer covers the parameters that exist when it
 * is created (qat_train_step refuses one that does not cover them all), so create it
 * after the last call. */
qat_status qat_model_add_param(qat_model *m, qat_tensor *x);
/* After finalize: registers a buffer `x` (caller-owned data, saved and restored with the
 * model, not optimized) at the end of the model's state. */
qat_status qat_model_add_buffer(qat_model *m, qat_tensor *x);

/* Freezing (LoRA's frozen base, layers/lora.h): a frozen parameter keeps its value in
 * training. The optimizer covers the trainable parameters only: qat_model_n_trainable
 * floats, packed in param_tensors order. qat_model_pack copies the trainable part of a
 * params- or grads-shaped array (m->n_params floats) into n_trainable floats;
 * qat_model_unpack copies it back. With nothing frozen both are plain copies. */
void qat_model_set_frozen(qat_model *m, qat_tensor *p, bool frozen);
size_t qat_model_n_trainable(const qat_model *m);
/* The lengths of the trainable parameter tensors, in packed order, into out (room for
 * m->n_param_tensors); returns their number. For qat_optim_init_tensors. */
int qat_model_trainable_lengths(const qat_model *m, size_t *out);
void qat_model_pack(const qat_model *m, const float *full, float *packed);
void qat_model_unpack(const qat_model *m, const float *packed, float *full);

/* The parameter named `name` ("3.weight"), or NULL. */
qat_tensor *qat_model_param(qat_model *m, const char *name);
/* The state tensor (parameter or buffer) named `name`, or NULL. */
qat_tensor *qat_model_state_find(qat_model *m, const char *name);
/* A buffer of the state named `name` ("1.running_mean", "3.act_range"), its length in
 * *n, or NULL (also for a parameter's name). */
float *qat_model_buffer(qat_model *m, const char *name, size_t *n);

/* Multiply-accumulates per sample of one layer (0 for layers without them; a residual
 * counts its branches). */
size_t qat_layer_macs(const qat_layer *l);
/* Prints one line per layer: name, kind, output shape, parameters, MACs. */
void qat_model_print(const qat_model *m, FILE *f);

#endif
