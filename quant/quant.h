/* quant.h - quantizing a model: the settings (a readable spec such as "w4a4,pact"), the
 * fake-quant graph that QAT trains and PTQ calibrates, and what the exporter reads.
 *
 * Preparing a model hangs a qat_layer_quant on every layer where the integer runtime
 * (../shared/int8-spec.md) will requantize, and nowhere else:
 *
 *   - at the input: the spec's fixed mapping of raw uint8 pixels, s = 1/(255 sigma),
 *     z = round(255 mu) - 128, when the model has one normalisation (mean, std);
 *   - on every conv and linear layer, a "unit": the layer, the batch norm that follows it
 *     (folded, quant/bnfold.h) and the ReLU or ReLU6 after that (fused: the runtime's
 *     clamp). Its weights are fake-quantized (per tensor, per output channel or per group
 *     of G weights; min/max or LSQ) after folding, its bias is rounded to the int32 grid
 *     s_in * s_w[c], and its output is fake-quantized at the activation bits;
 *   - on a residual block (with the ReLU that follows it, if any): the add's output;
 *   - after an average pool with the input's own scale and zero point (the runtime
 *     divides in integers and rounds; the scale does not change), and after a
 *     nonlinear layer (sigmoid and tanh with the spec's fixed output parameters, the
 *     function's range [lo, hi] in 2^b steps with lo on qmin; hard-swish and leaky ReLU
 *     observed or learned like any activation) or a batch norm that no conv precedes;
 *   - max pool, flatten, dropout and a ReLU on quantized values need nothing.
 * Below 8 bits, the first layer's weights and the logits stay 8-bit unless the spec
 * says "all" (the spec's "Below 8 bits").
 *
 * Activation quantization points choose their range by one of three methods:
 *   observer - a range from calibration (quant/observer.h), then, during QAT, an EMA of
 *              each batch's min/max (PyTorch's FakeQuantize does the same) until the
 *              observers freeze;
 *   pact     - PACT's learnable clip alpha replaces the ReLU/ReLU6 (quant/pact.h); alpha
 *              starts at the calibrated upper bound. Points with no ReLU (logits, adds
 *              without ReLU) fall back to the observer method;
 *   lsq      - LSQ's learnable step (quant/lsq.h), started from the calibrated range.
 *
 * The spec string: "w<bits>a<bits>" then comma-separated options:
 *     per-tensor | per-channel (default) | group=G     weight granularity
 *     pact | lsq | range                              activation method (lsq: weights too;
 *                                                     default lsq at 2 bits, range above)
 *     observer=minmax|ema|percentile|kl|mse           calibration observer (default minmax at
 *                                                     8-bit activations, mse below)
 *     momentum=X  percentile=P                        observer settings
 *     freeze-bn=N  freeze-observer=N                  steps of QAT after which BN statistics
 *                                                     / activation ranges freeze (-1: never)
 *     pact-decay=X                                    L2 decay on PACT alphas
 *     all                                             first layer and logits at b bits too
 *     bias-correction                                 PTQ: empirical bias correction
 *     sim=float|fixed|exact                           how the forward requantizes (exact.h;
 *                                                     default exact: the runtime's integers)
 *     w@NAME=B                                        layer NAME's weights at B bits (mixed
 *                                                     precision; qat sensitivity measures)
 *     smooth[=ALPHA|auto]                             SmoothQuant (quant/smooth.h) before
 *                                                     calibration: alpha 0.5 unless given,
 *                                                     auto chooses it per layer
 *     token                                           per-token dynamic activation
 *                                                     quantization of linear inputs (simulated)
 *     auto=BYTES                                      choose the w@ widths within BYTES of
 *                                                     weights (train/sensitivity.h), in
 *                                                     qat train and qat calibrate
 * e.g. "w8a8", "w4a4,pact", "w4a8,group=32", "w8a8,observer=kl".
 *
 * Use:
 *     qat_quant_spec spec;
 *     qat_quant_spec_parse(&spec, "w4a4,pact", &err);
 *     qat_quant_prepare(m, &spec, &norm, &err);     // m: a finalized float model
 *     qat_quant_calibrate_begin(m, &err);           // observers on, fake quant off
 *     ... qat_model_forward on calibration batches, t.training = false ...
 *     qat_quant_calibrate_end(m, &err);             // ranges, PACT alphas, LSQ steps
 *     ... train (t.training = true) or evaluate: qat_model_forward is now fake-quant ...
 * Learnable quantization parameters join the model's flat parameters, and ranges join
 * its buffers: both are in the model's state (qat_model_add_param/_buffer), so
 * checkpoints save them (names "<layer>.act_range", "<layer>.pact_alpha",
 * "<layer>.act_step", "<layer>.weight_step", "<layer>.bias_correction").
 * freeze-bn and freeze-observer count the model's training steps (m->step, which the
 * trainer advances; qat train --from starts a QAT run at step 0).
 *
 * Where the roles come from: quantization never names a layer kind. It asks the layer
 * for its role (layers/model.h: weighted, norm, clamp, nonlinear, average, select,
 * block) and runs layers through their own forward functions, so a new layer kind with
 * an existing role needs no change here.
 */
#ifndef QAT_QUANT_H
#define QAT_QUANT_H

#include <stdio.h>

#include "layers/model.h"
#include "observer.h"

typedef enum qat_granularity {
    QAT_GRANULARITY_TENSOR,
    QAT_GRANULARITY_CHANNEL,
    QAT_GRANULARITY_GROUP,
    QAT_GRANULARITY_COUNT
} qat_granularity;

/* How QAT's forward computes a requantized value (quant/exact.h; docs/quant.md):
 *   float - in float: the real ratio s_in s_w / s_out, one rounding (the classic fake quant);
 *   fixed - the integer model's accumulator and (M0, shift) multiplier, one rounding of the
 *           exact product (what the spec's double rounding costs, measured apart);
 *   exact - the integer model's arithmetic itself (int8-spec.md): the default. */
typedef enum qat_sim {
    QAT_SIM_FLOAT,
    QAT_SIM_FIXED,
    QAT_SIM_EXACT,
    QAT_SIM_COUNT
} qat_sim;

const char *qat_sim_str(qat_sim s);

typedef enum qat_act_method {
    QAT_ACT_METHOD_OBSERVER,
    QAT_ACT_METHOD_PACT,
    QAT_ACT_METHOD_LSQ,
    QAT_ACT_METHOD_FIXED, /* the model input's spec mapping */
    QAT_ACT_METHOD_SAME,  /* average pools: the input's scale and zero point */
    QAT_ACT_METHOD_COUNT
} qat_act_method;

/* Per-layer weight bits (mixed precision): "w@NAME=B" in the spec. */
#define QAT_MAX_LAYER_BITS 32
typedef struct qat_layer_bits {
    char layer[QAT_NAME_LEN]; /* a conv or linear layer's name: "3", "4.body.0" */
    int wbits;
} qat_layer_bits;

typedef struct qat_quant_spec {
    int wbits, abits;         /* 2..8 */
    qat_granularity wgran;
    int group;                /* QAT_GRANULARITY_GROUP: weights per group */
    qat_act_method act;       /* OBSERVER, PACT or LSQ */
    bool weight_lsq;          /* LSQ steps for weights (set by "lsq") */
    bool nf4;                 /* "nf4": 4-bit weights on NF4's levels per group (quant/q4.h) */
    bool dq;                  /* "dq": a group's constant double-quantized (quant/q4.h) */
    bool smooth;              /* "smooth[=ALPHA|auto]": SmoothQuant before calibration (smooth.h) */
    float smooth_alpha;       /* its migration strength in [0, 1]; < 0: chosen per layer */
    bool token;               /* "token": per-token (per-row) dynamic activation quantization
                                 at the inputs of linear layers (simulated) */
    qat_observer_config observer;
    float momentum;           /* QAT's EMA of activation ranges */
    long freeze_bn, freeze_observer; /* QAT steps; -1: never */
    float pact_decay;
    bool all_layers;
    bool bias_correction;
    qat_sim sim;
    long auto_bytes;          /* "auto=BYTES": choose w@ widths under this many weight bytes
                                 (train/sensitivity.h; resolved before prepare) */
    int n_layer_bits;         /* overrides of wbits (and of the first layer's 8) by layer */
    qat_layer_bits layer_bits[QAT_MAX_LAYER_BITS];
} qat_quant_spec;

/* Defaults: w8a8, per channel, observer minmax, EMA momentum 0.01, no freezing. */
qat_quant_spec qat_quant_spec_default(void);
/* Parses a spec string; INVALID_ARG with a message naming the bad part. */
qat_status qat_quant_spec_parse(qat_quant_spec *s, const char *text, qat_error *err);
/* The canonical spec string (parses back to the same spec). */
void qat_quant_spec_format(const qat_quant_spec *s, char *buf, size_t len);

/* An activation quantization point. */
typedef struct qat_qpoint {
    qat_act_method method;
    int bits, qmin, qmax;
    qat_layer *act;           /* the fused clamp (a relu or relu6 layer), or NULL */
    const struct qat_qpoint *same; /* QAT_ACT_METHOD_SAME: whose parameters */
    bool dynamic;             /* "token": each row quantized with its own range at run time
                                 (the point feeds a linear layer; the range stays for people) */
    qat_tensor range;         /* buffer [lo, hi] */
    qat_tensor param;         /* PACT alpha or LSQ step (one element), a model parameter */
    float scale;              /* current scale and zero point */
    int32_t zp;
    qat_observer *obs;        /* during calibration */
    char range_name[QAT_NAME_LEN + 16], param_name[QAT_NAME_LEN + 16];
} qat_qpoint;

/* What quantization hangs on a layer: a unit head (conv/linear), a residual block, an
 * average pool, or a lone nonlinear layer or batch norm. */
typedef struct qat_layer_quant {
    qat_layer *layer;
    qat_layer *bn;            /* folded batch norm, or NULL */
    int n_fused;              /* layers after this one that the unit consumed */
    /* Weights (conv/linear): */
    int wbits, wrows, wgroup; /* fake-quant layout, quant/fake_quant.h */
    size_t n_wscales;
    float *wscale;            /* current weight scales (n_wscales) */
    int32_t *wzp;
    qat_tensor wstep;         /* LSQ weight steps, a model parameter */
    qat_tensor bias_corr;     /* buffer (C): PTQ bias correction, added to the bias */
    double *bc_sum;           /* bias correction accumulator (C), during calibration */
    double bc_count;
    char wstep_name[QAT_NAME_LEN + 16], bc_name[QAT_NAME_LEN + 24];
    qat_qpoint out;
} qat_layer_quant;

typedef struct qat_quant {
    qat_quant_spec spec;
    qat_qpoint input;
    qat_layer_quant *units;   /* one slot per layer of the model, in walk order */
    int n_units;
    bool observing;           /* calibration: observers see float activations */
    bool fake_quant;          /* quantization on (off during calibration) */
    bool bias_correcting;     /* PTQ: accumulate float - quantized output means */
    float in_mean, in_std;    /* the input normalisation, when the input point is FIXED */
    /* SmoothQuant's divisor of the model input, per input value (buffer "input.smooth"),
     * when the spec smooths and the first layer is a linear fed by non-image inputs: the
     * quantized forward computes x / s before the input point. data NULL otherwise. */
    qat_tensor in_smooth;
    char in_smooth_name[32];
} qat_quant;

/* Input normalisation of the model's data ((x/255 - mean)/std); have = false when the
 * inputs are not uint8 images with one mean and std (the input then gets an observer). */
typedef struct qat_quant_input {
    bool have;
    float mean, std;
} qat_quant_input;

/* Quantizes a finalized float model in place: adds quantization parameters and buffers
 * (create the optimizer afterwards) and routes qat_model_forward through fake quant.
 * Ranges start empty (scale 1): calibrate, or restore a quantized checkpoint. */
qat_status qat_quant_prepare(qat_model *m, const qat_quant_spec *spec, const qat_quant_input *in,
                             qat_error *err);

/* Calibration: observers record float activations (fake quant off); end computes every
 * range, sets PACT alphas and LSQ steps from them, and turns fake quant on. */
qat_status qat_quant_calibrate_begin(qat_model *m, qat_error *err);
qat_status qat_quant_calibrate_end(qat_model *m, qat_error *err);
/* Empirical bias correction (Nagel et al. 2019, section 4.2): between begin and end,
 * evaluation forwards record each unit's mean output per channel with float and with
 * quantized weights (same quantized input); end adds the difference to the bias. */
void qat_quant_bias_correction_begin(qat_model *m);
void qat_quant_bias_correction_end(qat_model *m);

/* Recomputes every cached scale and zero point from the current ranges, parameters and
 * weights (after a checkpoint restore, before qat_quant_print). */
void qat_quant_refresh(qat_model *m);

/* What the integer model takes from a quantization point and a unit, computed from the
 * current ranges, parameters and weights without touching the model (quant/lower.c):
 * the point's scale and zero point; */
void qat_qpoint_qparams(const qat_qpoint *p, float *scale, int32_t *zero_point);
/* its clamp: the integer range, narrowed by a fused ReLU (real 0 is the zero point),
 * ReLU6 (6) or PACT (alpha) (int8-spec.md, "Conv2d / Linear"); */
void qat_qpoint_clamp(const qat_qpoint *p, int *lo, int *hi);
/* a unit's weight scales (u->n_wscales floats): LSQ's steps, or max|w| / qmax of the
 * folded weights. false if out of memory. */
bool qat_quant_weight_scales(const qat_layer_quant *u, float *scale);

/* A unit's weights and bias as the integer model holds them (BN folded with the running
 * statistics, PTQ bias correction added): weights malloc'ed (layer->weight.n floats,
 * NULL if out of memory), bias into out (C floats). */
float *qat_quant_folded_weights(const qat_layer_quant *u);
void qat_quant_folded_bias(const qat_layer_quant *u, float *out);

/* Per-layer summary: bits, scales, zero points, PACT alphas. */
void qat_quant_print(const qat_model *m, FILE *f);

#endif
