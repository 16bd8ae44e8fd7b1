/* rng.h - an explicit random number generator (PCG32, O'Neill 2014).
 *
 * There is no global RNG: whoever needs randomness (weight init, dropout, shuffling)
 * is handed a qat_rng. Two generators seeded alike produce identical streams, which is
 * what makes runs reproducible and resumable (the state is two integers to save).
 */
#ifndef QAT_RNG_H
#define QAT_RNG_H

#include <stdint.h>

typedef struct qat_rng {
    uint64_t state;
    uint64_t inc; /* odd; selects the stream */
} qat_rng;

void qat_rng_init(qat_rng *r, uint64_t seed);
uint32_t qat_rng_u32(qat_rng *r);
/* Uniform in [0, 1), 24 random bits. */
float qat_rng_uniform(qat_rng *r);
/* Uniform in [lo, hi). */
float qat_rng_range(qat_rng *r, float lo, float hi);
/* Standard normal (Box-Muller). */
float qat_rng_normal(qat_rng *r);
/* Uniform integer in [0, n), unbiased (rejection). n > 0. */
uint32_t qat_rng_below(qat_rng *r, uint32_t n);

#endif
