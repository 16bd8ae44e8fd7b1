/* blockwise.h - block-wise 8-bit quantization with the dynamic (tree) map: how the 8-bit
 * optimizers (optim8.c) store their state.
 *
 * Dettmers, Lewis, Shleifer, Zettlemoyer, "8-bit Optimizers via Block-wise Quantization",
 * ICLR 2022, after Dettmers, "8-Bit Approximations for Parallelism in Deep Learning",
 * ICLR 2016 (dynamic tree quantization).
 *
 * The dynamic map: 256 values in [-1, 1] (signed) or [0, 1] (unsigned). A signed code is
 * a sign bit, then E zero bits (the exponent: the value is scaled by 10^-E), then a 1
 * (the indicator), then 6 - E bits of linear fraction; an unsigned code uses the sign bit
 * as one more fraction bit. For E = 0..6 the fraction bits F (6 - E, or 7 - E unsigned)
 * give 2^F values: the midpoints of 2^F equal bins of [0.1, 1], times 10^-E,
 *     v(E, k) = 10^-E * (b_k + b_{k+1}) / 2,   b_k = 0.1 + 0.9 * k / 2^F,  k < 2^F,
 * (and their negatives, signed), plus 0 and 1: 127 * 2 + 2 = 254 + 2 = 256 values, sorted
 * ascending; codes are indices into the sorted map. Each value is computed in double and
 * rounded to float once. These are the values of bitsandbytes' create_dynamic_map(signed,
 * 7, 8), which computes them in float arithmetic (so its floats may differ in the last bit).
 *
 * Block-wise: a state tensor is cut into blocks of QAT_BLOCKQ_SIZE consecutive values
 * (the last may be shorter); each block keeps one float, its absolute maximum A (the
 * largest |x|), and one code per value: the map value nearest x / A (float division,
 * distances |map[k] - x / A| in float, a tie to the lower code). A block of zeros has
 * A = 0 and the code of 0. Dequantized: map[code] * A. A value equal to +-A maps to
 * exactly +-1 when the map has it (the signed map's lowest value is -0.99296875, the
 * midpoint of its last bin: a negative block maximum comes back 0.7% smaller).
 *
 * tests/test_optim8.c checks the maps and the quantizer against
 * tests/fixtures/gen_optim8.py, a second implementation (numpy) of the same definitions.
 */
#ifndef QAT_OPTIM_BLOCKWISE_H
#define QAT_OPTIM_BLOCKWISE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Values per block: the paper's 2048. */
#ifndef QAT_BLOCKQ_SIZE
#define QAT_BLOCKQ_SIZE 2048
#endif

/* The signed (is_signed) or unsigned dynamic map: 256 floats, ascending. Static, built
 * on the first call (thread-safe). */
const float *qat_dynamic_map(bool is_signed);

/* The code of the map value nearest x (map: 256 ascending floats; ties to the lower
 * code; x below map[0] gives 0, above map[255] gives 255; NaN gives 0). */
uint8_t qat_dynamic_code(const float *map, float x);

/* Blocks of x[0..n) (block values each, the last shorter): absmax[(n + block - 1) /
 * block] and codes[n]. */
void qat_blockq_quantize(uint8_t *codes, float *absmax, const float *x, size_t n, size_t block,
                         const float *map);
/* x[i] = map[codes[i]] * absmax[i / block]. */
void qat_blockq_dequantize(float *x, const uint8_t *codes, const float *absmax, size_t n,
                           size_t block, const float *map);

/* The number of blocks of n values. */
static inline size_t qat_blockq_count(size_t n, size_t block) { return (n + block - 1) / block; }

#endif
