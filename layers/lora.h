/* lora.h - low-rank adapters over a frozen base (Hu et al., "LoRA: Low-Rank Adaptation of
 * Large Language Models", ICLR 2022), on the conv and linear layers of a model.
 *
 * Each adapted layer's weight W (out x K, K = in for a linear layer, C * kh * kw for a
 * convolution) is used as
 *     W' = W + (alpha / r) * B A,      A: (r, K), B: (out, r)
 * with W frozen. For a convolution A is a k x k convolution to r channels and B a 1x1
 * convolution from them, so W' is a convolution of the same shape (PEFT's Conv2d LoRA);
 * it is computed once per step (out * r * K multiply-adds) and the layer runs as usual,
 * so an adapter costs no activation memory. Initialisation as the paper: B = 0 (training
 * starts from the base model exactly), A as PyTorch initialises a layer's weight
 * (Kaiming-uniform with a = sqrt 5: bound 1 / sqrt K).
 *
 * qat_lora_attach adapts every linear layer and every convolution with one group;
 * depthwise and other grouped convolutions get no adapter. Every conv and linear weight
 * is frozen (layers/model.h); biases and batch norm stay trainable, as do the adapters:
 * parameters "<layer>.lora_A" (r, K) and "<layer>.lora_B" (out, r), added at the end of
 * the model's parameters. qat_lora_merge folds B A into W: the model then computes the
 * same function with no adapter. A model with adapters trains in float; quantize the
 * merged model (qat merge, then QAT or PTQ as any float model).
 */
#ifndef QAT_LORA_H
#define QAT_LORA_H

#include "layers/model.h"

#define QAT_LORA_MAX_RANK 1024

typedef struct qat_lora_spec {
    int rank;    /* r: 1..QAT_LORA_MAX_RANK */
    float alpha; /* > 0; the adapter is scaled by alpha / r */
} qat_lora_spec;

/* "r=8" or "r=8,alpha=16" (alpha defaults to 2 r). INVALID_ARG naming the text. */
qat_status qat_lora_spec_parse(qat_lora_spec *s, const char *text, qat_error *err);
/* "r=8,alpha=16" (alpha with %g). */
void qat_lora_spec_format(const qat_lora_spec *s, char *buf, size_t len);

typedef struct qat_lora_adapter {
    qat_layer *layer;
    int out, k;          /* W as (out, k) */
    float scale;         /* alpha / r */
    qat_tensor A, B;     /* parameters of the model */
    char a_name[QAT_NAME_LEN + 16], b_name[QAT_NAME_LEN + 16];
} qat_lora_adapter;

typedef struct qat_lora {
    qat_lora_spec spec;
    float scale; /* alpha / r */
    int n;
    qat_lora_adapter *adapters;
    /* The frozen base in another form (a 4-bit one: train/qlora.h), owned here, freed
     * with base_free; NULL when the base is plain float. */
    void *base;
    void (*base_free)(void *base);
} qat_lora;

/* Adds adapters to a finalized model without any (INVALID_ARG if it has some, or is
 * quantized, or has no layer to adapt), initialised from rng, and freezes every conv and
 * linear weight. */
qat_status qat_lora_attach(qat_model *m, const qat_lora_spec *s, qat_rng *rng, qat_error *err);
/* The weight a layer runs with in a forward pass: W' above, a step tensor whose backward
 * gives A and B (and W, if it is not frozen) their gradients; the layer's own weight when
 * it has no adapter. NULL (t->err set) if memory runs out. */
qat_tensor *qat_lora_layer_weight(qat_tape *t, qat_layer *l);
/* W += (alpha / r) B A for every adapter, and B = 0 (the adapted model computes the same
 * function; W holds it all). Nothing else changes: the adapters stay, frozen flags too. */
void qat_lora_merge(qat_model *m);
/* Adapter parameters and the others that train (biases, batch norm) in *trainable;
 * frozen ones in *frozen (floats). */
void qat_lora_counts(const qat_model *m, size_t *adapter, size_t *trainable, size_t *frozen);
/* Called by qat_model_free. */
void qat_lora_free(qat_model *m);

#endif
