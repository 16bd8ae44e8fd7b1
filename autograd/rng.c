#include "rng.h"

#include <math.h>

void qat_rng_init(qat_rng *r, uint64_t seed) {
    r->state = 0;
    r->inc = (seed << 1u) | 1u;
    qat_rng_u32(r);
    r->state += 0x853c49e6748fea9bULL ^ seed;
    qat_rng_u32(r);
}

uint32_t qat_rng_u32(qat_rng *r) {
    uint64_t old = r->state;
    r->state = old * 6364136223846793005ULL + r->inc;
    uint32_t xorshifted = (uint32_t)(((old >> 18u) ^ old) >> 27u);
    uint32_t rot = (uint32_t)(old >> 59u);
    return (xorshifted >> rot) | (xorshifted << ((-rot) & 31));
}

float qat_rng_uniform(qat_rng *r) {
    return (float)(qat_rng_u32(r) >> 8) * (1.0f / 16777216.0f);
}

float qat_rng_range(qat_rng *r, float lo, float hi) {
    return lo + (hi - lo) * qat_rng_uniform(r);
}

float qat_rng_normal(qat_rng *r) {
    /* u1 in (0, 1] so that log(u1) is finite. */
    double u1 = ((double)(qat_rng_u32(r) >> 8) + 1.0) / 16777216.0;
    double u2 = (double)(qat_rng_u32(r) >> 8) / 16777216.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

uint32_t qat_rng_below(qat_rng *r, uint32_t n) {
    uint32_t threshold = (uint32_t)(-n) % n; /* 2^32 mod n */
    for (;;) {
        uint32_t x = qat_rng_u32(r);
        if (x >= threshold) return x % n;
    }
}
