/* fixedpoint.h - the three fixed-point primitives of the int8 runtime, exactly as
 * ../shared/int8-spec.md ("Fixed-point multiplier") defines them, after gemmlowp
 * (fixedpoint/fixedpoint.h) and TFLite (kernels/internal/common.h).
 *
 * A real multiplier m > 0 is stored as (M0, shift): m ~= M0 * 2^(shift - 31), with M0 in
 * [2^30, 2^31) (or M0 = 0: the output is the zero point) and shift in [-31, 30]. The
 * exporter computes them once; these functions apply them to int32 accumulators with
 * integer arithmetic only, identically on every platform:
 *
 *   y = qrt_multiply_by_quantized_multiplier(acc, M0, shift)
 *     = RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(acc * 2^max(shift,0), M0),
 *                           max(-shift, 0))
 *
 * The definitions are C99 `inline` so that kernels inline them; fixedpoint.c holds the
 * one external definition of each. Every SIMD version must equal these to the bit.
 */
#ifndef QRT_FIXEDPOINT_H
#define QRT_FIXEDPOINT_H

#include <stdint.h>

/* SaturatingRoundingDoublingHighMul(a, b): round(a * b / 2^31), saturated.
 *
 * Read a and b as Q0.31 fixed-point fractions (a / 2^31, b / 2^31). Their product is
 * a*b / 2^62; expressed again in Q0.31 it is a*b / 2^31, the high 32 bits of the
 * doubled 64-bit product 2ab - hence the name. The product p = (int64)a * b is exact
 * (|p| <= 2^62).
 *
 * Rounding. The spec writes the rounding with a sign-dependent nudge and C's
 * truncating division:
 *   p >= 0: (p + 2^30) / 2^31 truncated = floor((p + 2^30) / 2^31), the numerator
 *           being >= 0.
 *   p <  0: q = p + 1 - 2^30 < 0, and truncation of a negative quotient is the ceiling:
 *           ceil(q / 2^31) = floor((q + 2^31 - 1) / 2^31) = floor((p + 2^30) / 2^31).
 * So both branches compute floor(p / 2^31 + 1/2): round to nearest, ties toward
 * +infinity (2.5 -> 3, -2.5 -> -2), which is what ARM's VQRDMULH does. gemmlowp writes it
 * with the nudge because `>>` of a negative number was implementation-defined.
 *
 * Saturation. The result fits in int32 except for a = b = INT32_MIN: p = 2^62 gives
 * 2^31. Every other product is at most INT32_MIN * -INT32_MAX = 2^62 - 2^31, which
 * rounds to 2^31 - 1, and at least INT32_MIN * INT32_MAX = -2^62 + 2^31, which rounds
 * to -2^31 + 1; so that one case is clamped to INT32_MAX and no other can overflow. */
inline int32_t qrt_saturating_rounding_doubling_high_mul(int32_t a, int32_t b) {
    if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
    int64_t p = (int64_t)a * (int64_t)b;
    int64_t nudge = p >= 0 ? ((int64_t)1 << 30) : 1 - ((int64_t)1 << 30);
    return (int32_t)((p + nudge) / ((int64_t)1 << 31));
}

/* RoundingDivideByPOT(x, e): x / 2^e rounded to nearest, ties away from zero; e in
 * [0, 31].
 *
 * Write x = q * 2^e + r with q = floor(x / 2^e) (the arithmetic shift x >> e) and
 * r = x & (2^e - 1) in [0, 2^e) (the low e bits, also for negative x in two's
 * complement). Then x / 2^e = q + r / 2^e, and the result is q or q + 1:
 *   x >= 0: away from zero is up, so a tie (r = 2^(e-1)) rounds up:
 *           q + 1 iff r >= 2^(e-1), i.e. r > 2^(e-1) - 1 = mask >> 1.
 *   x <  0: away from zero is down, so a tie stays at q:
 *           q + 1 iff r > 2^(e-1) = (mask >> 1) + 1.
 * Hence threshold = (mask >> 1) + (x < 0) and the result (x >> e) + (r > threshold).
 * e = 0: mask = 0, r = 0 never exceeds the threshold, the result is x.
 * The result never overflows: |result| <= |x| / 2^e + 1/2 and for e = 0 it is x.
 *
 * The arithmetic shift of a negative x is written ~(~x >> e): for x < 0, ~x = -x - 1 >= 0
 * is shifted without implementation-defined behaviour, and ~(floor((-x-1) / 2^e)) =
 * -floor((-x-1) / 2^e) - 1 = floor(x / 2^e). Compilers emit a single `sar`. */
inline int32_t qrt_rounding_divide_by_pot(int32_t x, int e) {
    const int32_t mask = (int32_t)(((uint32_t)1 << e) - 1u);
    const int32_t rem = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    const int32_t q = x >= 0 ? x >> e : ~(~x >> e);
    return q + (rem > threshold ? 1 : 0);
}

/* MultiplyByQuantizedMultiplier(x, M0, shift) = x * M0 * 2^(shift - 31), rounded:
 *   left = max(shift, 0), right = max(-shift, 0)
 *   RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x * 2^left, M0), right)
 * M0 in [2^30, 2^31) or 0; shift in [-31, 30].
 *
 * SaturatingRoundingDoublingHighMul multiplies by M0 / 2^31 in [1/2, 1) with one
 * rounding (ties up); the power of two is split so that precision is never lost before
 * that multiplication: a multiplier >= 1 (shift > 0) shifts x left first, exactly; a
 * multiplier < 1/2 (shift < 0) divides afterwards with a second rounding (ties away from
 * zero). The two roundings are the spec's definition: the result can differ by one from
 * a single rounding of the exact product, and every implementation must reproduce
 * exactly this two-step value.
 *
 * Precondition: x * 2^left fits in int32. The loader refuses any file where an
 * accumulator bound times 2^left could exceed 2^31 - 1 (runtime.h), so kernels never
 * break it; were it broken, the product would wrap modulo 2^32 (as TFLite and CMSIS-NN
 * behave on two's-complement hardware) rather than be undefined behaviour. */
inline int32_t qrt_multiply_by_quantized_multiplier(int32_t x, int32_t M0, int shift) {
    const int left = shift > 0 ? shift : 0;
    const int right = shift > 0 ? 0 : -shift;
    const int32_t xs = (int32_t)((uint32_t)x << left);
    return qrt_rounding_divide_by_pot(qrt_saturating_rounding_doubling_high_mul(xs, M0), right);
}

#endif
