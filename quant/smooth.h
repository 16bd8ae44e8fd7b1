/* smooth.h - SmoothQuant (Xiao et al., "SmoothQuant: Accurate and Efficient Post-Training
 * Quantization for Large Language Models", ICML 2023) for linear layers, and per-token
 * dynamic activation quantization (Yao et al., ZeroQuant, 2022) as a building block.
 *
 * A linear layer y = X W^T whose input has a few channels far larger than the rest
 * quantizes badly per tensor: the large channels set the scale and the small ones round
 * to 0. SmoothQuant moves that range into the weights, which are quantized per output
 * channel and absorb it better:
 *
 *     s_j  = max(max|X_j|^alpha / max(max_i |W_ij|, 1e-5)^(1 - alpha), 1e-5)
 *     X'   = X diag(s)^-1,   W' = W diag(s),   X' W'^T = X W^T
 *
 * with max|X_j| over calibration data (the paper's smooth.py, clamps included). alpha = 0
 * leaves the activations' range alone, 1 flattens it completely. X / s is folded into what
 * produces X: the rows (and bias) of the linear layer before, when only ReLU, dropout or
 * flatten stand between them (ReLU(z) / s = ReLU(z / s) for s > 0), or the model input's
 * divisor (qat_quant.in_smooth) when the layer is fed by the model's inputs and those are
 * not uint8 images (CSV features: the integer runtime has no per-value input mapping,
 * so image models smooth their hidden layers only). One deviation from the paper: a
 * channel that is 0 on every calibration sample (a dead ReLU) keeps s_j = 1, where the
 * clamp would multiply its producer's row by 1e5.
 *
 * alpha < 0 ("smooth=auto") chooses alpha per layer from 0, 0.1, ..., 1 and "none" by the
 * output error of that layer alone, quantized as the spec will quantize it (input per
 * tensor on its min/max range, or per row with "token"; weights per output channel or per
 * tensor at the layer's bits), on up to QAT_SMOOTH_ROWS calibration rows:
 *     err(alpha) = mean over rows and outputs of (Q(X') Q(W')^T - X W^T)^2.
 *
 * Use (train/calibrate.c does this when the spec says "smooth"):
 *     qat_smooth sm;
 *     qat_smooth_begin(&sm, m, &err);        // m quantized (prepare), not calibrated
 *     for each calibration batch: qat_smooth_observe(&sm, m, &t, x);
 *     qat_smooth_end(&sm, m, &err);          // factors chosen, folded into the model
 *     qat_smooth_free(&sm);
 * The float model computes the same function afterwards, up to float rounding.
 */
#ifndef QAT_SMOOTH_H
#define QAT_SMOOTH_H

#include <stdbool.h>

#include "quant.h"

#define QAT_SMOOTH_ROWS 2048 /* calibration rows kept per layer for alpha = auto */

typedef struct qat_smooth_site {
    qat_layer *layer; /* the linear layer whose input is smoothed */
    qat_layer *prev;  /* the linear layer whose output rows absorb 1 / s; NULL: the model input */
    int d;            /* input features */
    float *xmax;      /* (d) max |X_j| seen */
    float *rows;      /* (n_rows x d) kept inputs, for alpha = auto; NULL otherwise */
    int n_rows;
    float alpha;      /* chosen; < 0: not smoothed (auto found nothing better) */
    double err_none, err_best; /* auto: the layer's output error without and with smoothing */
} qat_smooth_site;

typedef struct qat_smooth {
    qat_smooth_site *sites;
    int n;
    bool failed;                  /* out of memory while observing */
} qat_smooth;

/* The linear layer of the model's top level that the model input reaches through ReLU,
 * dropout and flatten only (the one whose smoothing folds into qat_quant.in_smooth), or
 * NULL. */
const qat_layer *qat_smooth_input_layer(const qat_model *m);
/* Finds the linear layers that can be smoothed (see above); none is not an error. */
qat_status qat_smooth_begin(qat_smooth *sm, qat_model *m, qat_error *err);
/* One calibration batch through the float model, recording every site's input. */
qat_status qat_smooth_observe(qat_smooth *sm, qat_model *m, qat_tape *t, qat_tensor *x, qat_error *err);
/* Chooses the factors and folds them into the model. NUMERIC if a site saw no finite
 * value. */
qat_status qat_smooth_end(qat_smooth *sm, qat_model *m, qat_error *err);
void qat_smooth_free(qat_smooth *sm);

/* The paper's factors (above) for a layer with weight w (rows x d) and input maxima
 * xmax (d); a channel with xmax 0 gets 1. Computed in double, rounded to float. */
void qat_smooth_factors(float *s, const float *xmax, const float *w, int rows, int d, float alpha);

/* The per-row scale and zero point of the above, without quantizing (NaN ignored). */
void qat_fq_row_qparams(float *scale, int32_t *zp, const float *x, int rows, size_t cols, int qmin, int qmax);
/* Per-row dynamic fake quantization: each of `rows` rows of `cols` values quantized on the
 * grid of its own range [min(0, min), max(0, max)] with qmin..qmax (the observer's
 * affine rule, qat_qparams_from_range); scale and zp (rows each) receive the parameters.
 * out may equal x. */
void qat_fq_rows_dynamic(float *out, const float *x, int rows, size_t cols, int qmin, int qmax, float *scale,
                         int32_t *zp);

#endif
