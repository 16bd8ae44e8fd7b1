/* init.h - parameter initialisation matching PyTorch's defaults.
 *
 * nn.Linear and nn.Conv2d call kaiming_uniform_(w, a=sqrt(5)):
 *   gain = sqrt(2 / (1 + a^2)) = sqrt(1/3), bound = gain * sqrt(3 / fan_in) = 1/sqrt(fan_in)
 * and draw the bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in)). fan_in is C for linear and
 * (C/groups) KH KW for conv. Batch norm starts at gamma = 1, beta = 0, running mean 0,
 * running variance 1.
 */
#ifndef QAT_INIT_H
#define QAT_INIT_H

#include <stddef.h>

#include "autograd/rng.h"

/* U(-bound, bound) with bound = gain * sqrt(3 / fan_in), gain = sqrt(2 / (1 + a^2)). */
void qat_init_kaiming_uniform(float *w, size_t n, int fan_in, float a, qat_rng *rng);
/* U(-1/sqrt(fan_in), 1/sqrt(fan_in)). */
void qat_init_bias_uniform(float *b, size_t n, int fan_in, qat_rng *rng);
void qat_init_fill(float *x, size_t n, float value);

#endif
