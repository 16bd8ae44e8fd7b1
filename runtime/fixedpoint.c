/* fixedpoint.c - the external definitions of fixedpoint.h's inline primitives (C99
 * 6.7.4: an inline definition in the header plus one `extern` declaration in exactly one
 * translation unit). The math and the rounding proofs are in fixedpoint.h. */
#include "fixedpoint.h"

extern inline int32_t qrt_saturating_rounding_doubling_high_mul(int32_t a, int32_t b);
extern inline int32_t qrt_rounding_divide_by_pot(int32_t x, int e);
extern inline int32_t qrt_multiply_by_quantized_multiplier(int32_t x, int32_t M0, int shift);
