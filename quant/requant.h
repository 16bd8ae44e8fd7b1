/* requant.h - the spec's requantization in integers, for the training side
 * (../shared/int8-spec.md, "Fixed-point multiplier").
 *
 * The runtime has its own copy (runtime/fixedpoint.h): the runtime includes nothing of
 * the library and the library nothing of the runtime, and the spec asks that an
 * independent checker can recompute any layer from the formulas alone. This is that
 * second implementation; tests/test_exact.c checks it against the runtime's on every
 * shift and on the rounding boundaries.
 *
 * qat_requant_exact is the spec: SaturatingRoundingDoublingHighMul, then
 * RoundingDivideByPOT, two roundings. qat_requant_single rounds the exact product
 * x * M0 * 2^(shift - 31) once, half away from zero: the same multiplier without the
 * double rounding, which QAT's "sim=fixed" uses to measure what the second rounding
 * costs (docs/quant.md). */
#ifndef QAT_REQUANT_H
#define QAT_REQUANT_H

#include <stdint.h>

/* round(a * b / 2^31), ties toward +infinity; saturates the one overflow a = b = INT32_MIN. */
static inline int32_t qat_srdhm(int32_t a, int32_t b) {
    if (a == INT32_MIN && b == INT32_MIN) return INT32_MAX;
    const int64_t p = (int64_t)a * b;
    const int64_t nudge = p >= 0 ? ((int64_t)1 << 30) : 1 - ((int64_t)1 << 30);
    return (int32_t)((p + nudge) / ((int64_t)1 << 31));
}

/* x / 2^e rounded half away from zero, e in [0, 31]. Written on the int64 value with
 * floor division so that it reads as the definition; the runtime's bit form must agree. */
static inline int32_t qat_rdbp(int32_t x, int e) {
    if (e == 0) return x;
    const int64_t d = (int64_t)1 << e, a = x < 0 ? -(int64_t)x : x;
    const int64_t q = (2 * a + d) / (2 * d); /* floor(|x| / d + 1/2) */
    return (int32_t)(x < 0 ? -q : q);
}

/* The spec's MultiplyByQuantizedMultiplier; x * 2^max(shift, 0) must fit int32 (the
 * lowering refuses a model where it might not; it wraps here as on the device). */
static inline int32_t qat_requant_exact(int32_t x, int32_t M0, int shift) {
    const int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    const int32_t xs = (int32_t)((uint32_t)x << left);
    return qat_rdbp(qat_srdhm(xs, M0), right);
}

/* One rounding of x * 2^left * M0 / 2^(31 + right), half away from zero. */
static inline int32_t qat_requant_single(int32_t x, int32_t M0, int shift) {
    const int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    const int64_t p = (int64_t)(int32_t)((uint32_t)x << left) * M0;
    const int64_t a = p < 0 ? -p : p, half = (int64_t)1 << (30 + right);
    const int64_t q = (a + half) >> (31 + right);
    return (int32_t)(p < 0 ? -q : q);
}

#endif
