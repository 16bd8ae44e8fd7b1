/* sensitivity.h - per-layer sensitivity to weight width and the mixed-precision choice
 * (qat sensitivity; the "auto=BYTES" option of a quant spec; quant/mixed.h).
 *
 * For every conv/linear layer L and width b, post-training quantization of the float
 * checkpoint with the base spec plus "w@L=b" (only L changes), calibrated on the same
 * training samples and evaluated on the test loader: accuracy[l][k]. The choice under a
 * weight-byte budget then minimises the summed accuracy losses (mixed.h). */
#ifndef QAT_SENSITIVITY_H
#define QAT_SENSITIVITY_H

#include "data/loader.h"
#include "layers/model.h"

#define QAT_SENS_MAX_LAYERS 64
#define QAT_SENS_MAX_BITS 7

typedef struct qat_sensitivity {
    char base[2048]; /* the base spec, canonical */
    double base_accuracy;
    int n_layers, n_bits;
    int bits[QAT_SENS_MAX_BITS];
    char layer[QAT_SENS_MAX_LAYERS][QAT_NAME_LEN];
    size_t weights[QAT_SENS_MAX_LAYERS];
    int base_bits[QAT_SENS_MAX_LAYERS];
    double accuracy[QAT_SENS_MAX_LAYERS][QAT_SENS_MAX_BITS];
} qat_sensitivity;

/* progress: called after each measurement (may be NULL). */
typedef void (*qat_sens_progress)(void *user, const char *layer, int bits, double accuracy);

/* ckpt: a float checkpoint; base: a quant spec without auto=; bits: n_bits distinct widths
 * 2..8. The loaders must normalise as the checkpoint does. */
qat_status qat_sensitivity_measure(qat_sensitivity *s, const char *ckpt, const char *base, const int *bits,
                                   int n_bits, qat_loader *train, qat_loader *test, int samples,
                                   qat_sens_progress progress, void *user, qat_error *err);

/* The spec (base plus w@ overrides) that loses least within `budget` weight bytes, its
 * weight bytes and the accuracy the table predicts. INVALID_ARG if the budget is below
 * every layer at its narrowest width. */
qat_status qat_sensitivity_choose(const qat_sensitivity *s, size_t budget, char *spec, size_t len, size_t *bytes,
                                  double *predicted, qat_error *err);

/* PTQ of ckpt with spec, calibrated on `samples` training samples: its test accuracy. */
qat_status qat_ptq_accuracy(const char *ckpt, const char *spec, qat_loader *train, qat_loader *test, int samples,
                            double *accuracy, qat_error *err);

#endif
