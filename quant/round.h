/* round.h - round half away from zero (C roundf, the spec's one rounding rule), written
 * so that gcc vectorises the loops that use it: on the x86-64 baseline roundf is a
 * scalar library call (measured: 4 to 10 ns per element against 0.5 ns), and SSE4.1's
 * roundps has no half-away mode.
 *
 * Derivation, for a = |t| < 2^23. i = (int32_t)a truncates toward zero (C11 6.3.1.4),
 * defined as a < 2^31; r = (float)i is exact as i < 2^24. d = a - r is exact: for a < 1,
 * r = 0 and d = a; for a >= 1, r = floor(a) > a - 1 >= a / 2, so r <= a <= 2r and
 * Sterbenz's lemma makes the subtraction exact. d is the true fractional part, in
 * [0, 1), and roundf(a) = r + 1 exactly when d >= 0.5 (a tie goes up, away from zero);
 * r + 1 <= 2^23 is exact. copysignf restores the sign, and gives a zero result t's sign,
 * as roundf(-0.3f) is -0.0f. Precondition: |t| < 2^23 and not NaN (callers clamp first;
 * a conversion out of int32 range would be undefined behaviour).
 * The naive trunc(t + 0.5) is wrong: 0.49999997f + 0.5f rounds to 1.0f in float.
 * test_pact.c and test_lsq.c check this against roundf on every tie and its neighbours.
 */
#ifndef QAT_ROUND_H
#define QAT_ROUND_H

#include <math.h>
#include <stdint.h>

static inline float qat_round_half_away(float t) {
    float a = fabsf(t);
    float r = (float)(int32_t)a;
    r += a - r >= 0.5f ? 1.0f : 0.0f;
    return copysignf(r, t);
}

/* d / n rounded half away from zero, in integers (n > 0): sign(d) * floor((2|d| + n) / (2n)),
 * the average pools' division of ../shared/int8-spec.md ("Other ops"). In int64 so that
 * 2|d| + n cannot overflow for any int32 d. */
static inline int32_t qat_div_round_s32(int32_t d, int32_t n) {
    int64_t a = d < 0 ? -(int64_t)d : d;
    int64_t q = (2 * a + n) / (2 * (int64_t)n);
    return (int32_t)(d < 0 ? -q : q);
}

#endif
