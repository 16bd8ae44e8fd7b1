/* mixed.h - mixed precision: choosing each layer's weight bits under a size budget from a
 * measured sensitivity table (qat sensitivity; docs/quant.md "Mixed precision").
 *
 * The size that counts is the int8 file's weight bytes: n weights at b bits take n bytes
 * for b > 4 and ceil(n / 2) for b <= 4 (int8-spec.md packs 4 bits or fewer two per byte,
 * and nothing tighter), so 2, 3 and 4 bits cost the same bytes.
 *
 * The choice assumes that the accuracy costs of the layers add up (each measured with the
 * other layers at the base spec), the usual first-order model of HAWQ-style methods:
 * minimise sum_l cost[l][choice_l] subject to sum_l bytes(n_l, bits[choice_l]) <= budget,
 * solved exactly by dynamic programming over the budget in bytes. */
#ifndef QAT_MIXED_H
#define QAT_MIXED_H

#include <stdbool.h>
#include <stddef.h>

/* The weight bytes of n weights at b bits in the int8 file. */
size_t qat_weight_bytes(size_t n, int bits);

/* n_layers layers of n_weights[l] weights; n_bits candidate widths bits[k]; cost[l * n_bits
 * + k] the accuracy lost (any unit, lower is better) with layer l at bits[k]. Writes the
 * chosen index per layer into choice and returns true; false when even the smallest
 * choice of every layer exceeds the budget, or on out-of-memory. */
bool qat_mixed_choose(int n_layers, const size_t *n_weights, int n_bits, const int *bits, const double *cost,
                      size_t budget, int *choice);

#endif
