#include "init.h"

#include <math.h>

void qat_init_kaiming_uniform(float *w, size_t n, int fan_in, float a, qat_rng *rng) {
    double gain = sqrt(2.0 / (1.0 + (double)a * a));
    float bound = (float)(gain * sqrt(3.0 / (double)fan_in));
    for (size_t i = 0; i < n; i++) w[i] = qat_rng_range(rng, -bound, bound);
}

void qat_init_bias_uniform(float *b, size_t n, int fan_in, qat_rng *rng) {
    float bound = (float)(1.0 / sqrt((double)fan_in));
    for (size_t i = 0; i < n; i++) b[i] = qat_rng_range(rng, -bound, bound);
}

void qat_init_fill(float *x, size_t n, float value) {
    for (size_t i = 0; i < n; i++) x[i] = value;
}
