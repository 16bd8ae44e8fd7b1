/* mixed.c - choosing per-layer weight bits under a byte budget (mixed.h). */
#include "mixed.h"

#include <math.h>
#include <stdlib.h>

size_t qat_weight_bytes(size_t n, int bits) { return bits <= 4 ? (n + 1) / 2 : n; }

bool qat_mixed_choose(int n_layers, const size_t *n_weights, int n_bits, const int *bits, const double *cost,
                      size_t budget, int *choice) {
    /* best[b]: the least cost of the layers so far within b bytes; pick[l][b] the choice
     * that reached it (n_layers x (budget + 1) bytes: a few MB for the models here). */
    size_t min_total = 0;
    for (int l = 0; l < n_layers; l++) {
        size_t m = (size_t)-1;
        for (int k = 0; k < n_bits; k++) {
            size_t c = qat_weight_bytes(n_weights[l], bits[k]);
            m = c < m ? c : m;
        }
        min_total += m;
    }
    if (min_total > budget) return false;
    const size_t W = budget + 1;
    double *best = malloc(W * sizeof(double)), *next = malloc(W * sizeof(double));
    signed char *pick = malloc((size_t)n_layers * W);
    if (!best || !next || !pick || n_bits > 127) {
        free(best);
        free(next);
        free(pick);
        return false;
    }
    for (size_t b = 0; b < W; b++) best[b] = 0.0;
    for (int l = 0; l < n_layers; l++) {
        for (size_t b = 0; b < W; b++) {
            next[b] = INFINITY;
            pick[(size_t)l * W + b] = -1;
            for (int k = 0; k < n_bits; k++) {
                const size_t c = qat_weight_bytes(n_weights[l], bits[k]);
                if (c > b || !isfinite(best[b - c])) continue;
                const double v = best[b - c] + cost[(size_t)l * n_bits + k];
                /* ties: the wider choice (listed later or earlier, whichever has more bits) */
                const int p = pick[(size_t)l * W + b];
                if (v < next[b] || (v == next[b] && p >= 0 && bits[k] > bits[p])) {
                    next[b] = v;
                    pick[(size_t)l * W + b] = (signed char)k;
                }
            }
        }
        double *tmp = best;
        best = next;
        next = tmp;
    }
    /* walk back from the full budget */
    size_t b = budget;
    for (int l = n_layers - 1; l >= 0; l--) {
        const int k = pick[(size_t)l * W + b];
        choice[l] = k;
        b -= qat_weight_bytes(n_weights[l], bits[k]);
    }
    free(best);
    free(next);
    free(pick);
    return true;
}
