/* observer.h - range observers: watch the values a tensor takes (activations, per tensor)
 * and choose the clipping range [lo, hi] from which a quantizer's scale and zero point
 * are computed (../shared/int8-spec.md, "Choosing scale / zero point from a range").
 *
 * Use:
 *     qat_observer o;
 *     qat_observer_config cfg = {.kind = QAT_OBSERVER_KL};        (0s select the defaults)
 *     if (qat_observer_init(&o, &cfg, &err) != QAT_STATUS_OK) ... err.msg says why
 *     for each batch: qat_observer_update(&o, x, n);             (NaN/Inf skipped, counted)
 *     qat_observer_range(&o, -128, 127, false, &lo, &hi);         (lo <= 0 <= hi)
 *     qat_observer_free(&o);
 *
 * Five kinds. Throughout, the range returned always contains 0 (the spec widens it so
 * that real 0 is exact), an observer that saw no finite value returns [0, 0], and a
 * symmetric range is [-hi, hi] with hi the chosen magnitude.
 *
 * MINMAX (PyTorch MinMaxObserver): the running min and max of everything seen;
 *     [min(min, 0), max(max, 0)], symmetric hi = max(|min|, |max|).
 *
 * EMA (PyTorch MovingAverageMinMaxObserver, the usual choice during QAT): the first batch
 *     sets min/max; each later batch moves them towards its own min/max with
 *     averaging constant c = cfg.momentum:  min <- min + c * (batch_min - min), i.e.
 *     (1 - c) * min + c * batch_min, written as PyTorch writes it so that float32 results
 *     agree. A batch without a finite value leaves the average unchanged.
 *
 * Histogram kinds (PERCENTILE, KL, MSE; for calibration batches): two histograms of
 *     magnitudes, pos for x >= 0 (zero included) and neg for x < 0, each `bins` bins
 *     over the common range [0, R): bin j counts |x| in [j w, (j+1) w), w = R / bins.
 *     R is a power of two: the first batch with a non-zero value sets R to the smallest
 *     power of two strictly above its largest magnitude (so between 1x and 2x headroom:
 *     later batches of the same distribution rarely go beyond it, and at least half the
 *     bins hold data). A later value with |x| >= R doubles R (as often as needed) and
 *     merges adjacent bin pairs: new bin j = old bins 2j and 2j+1. The old bin edges are
 *     all edges of the new bins, so no count changes bin incorrectly: earlier data are
 *     kept exactly, only at the coarser resolution (and with power-of-two `bins` the
 *     result equals the histogram built from all the data at the final R, bit for bit).
 *
 * PERCENTILE: hi = the value below which cfg.percentile % of the non-negative values lie,
 *     interpolated linearly inside its bin (values are taken as uniform within a bin),
 *     and never above the largest value seen; lo = -(the same on the negative
 *     magnitudes), 0 if there were none. Symmetric: the percentile of all |x|.
 *
 * KL (TensorRT entropy calibration: Migacz, "8-bit Inference with TensorRT", GTC 2017):
 *     on h = pos + neg (the histogram of |x|), with nq quantized levels, each candidate
 *     threshold i (in bins, nq <= i <= B, B = the bins up to the last non-empty one):
 *       P = h[0:i] with the outliers sum(h[i:B]) added to P[i-1];
 *       Q = h[0:i] split into nq groups of consecutive bins (group g = bins
 *           [floor(g i / nq), floor((g+1) i / nq)): sizes differ by at most one), each
 *           group's total spread evenly over its non-empty bins (empty bins stay 0);
 *       KL(P || Q) = sum over P_j > 0 of P_j log(P_j / Q_j), P and Q each divided by
 *       its sum (Q's taken before the eps below).
 *     A Q_j = 0 where P_j > 0 happens only at j = i - 1, when the last kept bin is empty
 *     but outliers lie beyond it: the usual case for a threshold in the gap between the
 *     bulk of the data and a few far outliers. Q_j is then taken as QAT_OBSERVER_KL_EPS
 *     = 1e-4 of a count (the smoothing constant of MXNet's port of this algorithm, which
 *     others copied; Q is not renormalised), so the candidate pays P_j log(P_j / eps),
 *     large for much clipped mass and small for a few outliers. Treating it as infinite
 *     (scipy.stats.entropy, NVIDIA's pytorch-quantization) forbids every threshold in
 *     such a gap, and when the smallest candidate (nq bins) already covers the bulk the
 *     outliers can then never be clipped; skipping the term would let a threshold drop
 *     a whole second mode of the data for free. Only an empty h[0:i] is infinite.
 *     The smallest divergence wins; ties go to the smaller i, and a tie is anything within
 *     QAT_OBSERVER_KL_TIE_REL = 1e-9 relative: thresholds inside a gap of the data differ
 *     only in how empty bins are grouped, are equal in exact arithmetic, and rounding
 *     alone must not choose among them. T = i w (the bin's upper edge),
 *     at most the largest |x| seen. nq = qmax (127 for int8: TensorRT's 128 bins) when
 *     symmetric or when negatives were seen, and the range is [-T, T]; for data that are
 *     all >= 0 (after a ReLU) and asymmetric, nq = qmax - qmin + 1 (256 for 8 bits) and
 *     the range is [0, T]. Cost O(B^2) once per calibration, about 2M logs for B = 2048.
 *
 * MSE: the candidate [f min, f max] (symmetric: [-f m, f m], m = max |x|) with the least
 *     expected squared error of the spec's fake-quant (scale and zero point from the
 *     candidate as the spec says, round half away from zero, clamp), over the grid
 *     f = k / QAT_OBSERVER_MSE_GRID, k = 1..QAT_OBSERVER_MSE_GRID (ties: the wider range).
 *     The error is integrated exactly over each bin assuming its values spread uniformly
 *     within it (see qat_observer_mse_error), not sampled at bin centres: with 2048 bins
 *     and 256 levels a clipped range has quantization steps as narrow as one bin, where
 *     the error at a bin centre depends on how the centre happens to fall between two
 *     levels (0 when it sits on one) rather than on the data. The clipping error of
 *     values beyond the range is part of the same integral (the end levels' cells reach
 *     to infinity).
 *
 * Cost of qat_observer_update: one pass over the batch (plus, once, a pass for the first
 * batch's largest magnitude), no allocation; MINMAX/EMA keep two floats, the histogram
 * kinds add one increment per value.
 *
 * Memory: init allocates 2 * bins counts (histogram kinds) and, for KL, bins doubles of
 * scratch that qat_observer_range writes; do not call range on one observer from two
 * threads at once.
 */
#ifndef QAT_OBSERVER_H
#define QAT_OBSERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "autograd/common.h"

typedef enum qat_observer_kind {
    QAT_OBSERVER_MINMAX,     /* running min and max of everything seen */
    QAT_OBSERVER_EMA,        /* exponential moving average of each batch's min/max */
    QAT_OBSERVER_PERCENTILE, /* histogram; lo/hi at a percentile of the negative/positive values */
    QAT_OBSERVER_KL,         /* TensorRT entropy calibration on a histogram of |x| */
    QAT_OBSERVER_MSE,        /* the clipping range minimising quantization MSE on the histogram */
    QAT_OBSERVER_COUNT
} qat_observer_kind;

#define QAT_OBSERVER_DEFAULT_MOMENTUM 0.01f
#define QAT_OBSERVER_DEFAULT_PERCENTILE 99.99f
#define QAT_OBSERVER_DEFAULT_BINS 2048
#define QAT_OBSERVER_MIN_BINS 16
#define QAT_OBSERVER_MAX_BINS (1 << 20)
/* Candidates f = k / GRID, k = 1..GRID, of the MSE search. */
#define QAT_OBSERVER_MSE_GRID 200
/* KL: the count that stands in for an empty last bin under the outliers (see above). */
#define QAT_OBSERVER_KL_EPS 1e-4
/* KL: a wider candidate must beat the best so far by more than this, relative (ties). */
#define QAT_OBSERVER_KL_TIE_REL 1e-9

/* "minmax", "ema", "percentile", "kl", "mse"; "unknown" for a value outside the enum. */
const char *qat_observer_kind_str(qat_observer_kind k);
/* The inverse (exact, lower-case names); false if `s` names no kind (*k untouched). */
bool qat_observer_kind_from_str(const char *s, qat_observer_kind *k);

typedef struct qat_observer_config {
    qat_observer_kind kind;
    float momentum;   /* EMA: averaging constant c in (0, 1]; 0 -> 0.01 */
    float percentile; /* PERCENTILE: percent in (0, 100], e.g. 99.99; 0 -> 99.99 */
    int bins;         /* histogram bins in [16, 2^20]; 0 -> 2048 */
} qat_observer_config;

typedef struct qat_observer {
    /* With the defaults filled in. percentile and momentum may be changed between calls
     * (range/update read them each time); kind and bins may not. */
    qat_observer_config cfg;
    /* MINMAX: running extremes; EMA: averaged; histogram kinds: raw extremes seen.
     * Meaningful only when seen. */
    float min, max;
    bool seen;            /* any finite value seen yet */
    uint64_t count;       /* finite values seen */
    uint64_t n_nonfinite; /* NaN/Inf values skipped */
    /* Histogram kinds only (NULL / 0 otherwise). */
    double hist_range; /* R, a power of two; 0 until a non-zero value has been seen */
    uint64_t *pos;     /* (bins) counts of x >= 0 by |x| in [j w, (j+1) w), w = R / bins */
    uint64_t *neg;     /* (bins) counts of x < 0 by |x|, same bins */
    double *scratch;   /* (bins) KL only: h = pos + neg, written by qat_observer_range */
} qat_observer;

/* Validates cfg (kind, momentum, percentile, bins; QAT_STATUS_INVALID_ARG with a message
 * naming the field and its valid range), fills in defaults, allocates the histograms
 * (QAT_STATUS_NOMEM). On failure `o` holds nothing to free (freeing it is harmless). */
qat_status qat_observer_init(qat_observer *o, const qat_observer_config *cfg, qat_error *err);
/* Frees the histograms; safe on a zeroed or already freed observer. */
void qat_observer_free(qat_observer *o);
/* Forgets everything seen (keeps cfg and the allocation). */
void qat_observer_reset(qat_observer *o);
/* Data-parallel runs (autograd/comm.h): makes every process's observer the one of all
 * their data together: extremes, counts and, for the histogram kinds, the histograms
 * folded onto the largest process's range and summed (exactly what one process would
 * hold with a power-of-two bin count). Every process must call it; one process: no-op.
 * An EMA observer's average depends on the order of batches and is not merged: its caller
 * feeds it each batch's extremes over all processes instead (quant/qmodel.c). */
qat_status qat_observer_merge_across(qat_observer *o);
/* Adds one batch x (n floats, n may be 0). NaN/Inf are skipped and counted in
 * n_nonfinite. */
void qat_observer_update(qat_observer *o, const float *x, size_t n);
/* The clipping range [*lo, *hi] for a quantizer with integer range [qmin, qmax]
 * (qmin < qmax, qmax >= 1: -128..127, or -8..7 for 4 bits), symmetric or not; see the
 * opening comment. Always lo <= 0 <= hi; [0, 0] if nothing finite was seen. */
void qat_observer_range(const qat_observer *o, int qmin, int qmax, bool symmetric, float *lo,
                        float *hi);

/* Histogram bin width w = R / bins (0 before the first non-zero value, and for
 * MINMAX/EMA). */
double qat_observer_bin_width(const qat_observer *o);

/* ---- the calibration math on its own (for tests and tools) ---------------------------- */

/* KL(P || Q) of candidate i (nq <= i <= bins) on the histogram hist (bins counts >= 0),
 * as described above; INFINITY if hist[0:i] is empty. */
double qat_observer_kl_divergence(const double *hist, int bins, int nq, int i);
/* The candidate i in [nq, bins] with the smallest KL(P || Q) (ties, within
 * QAT_OBSERVER_KL_TIE_REL: the smaller i), its divergence in *best_kl (may be NULL).
 * If bins <= nq there is nothing to clip: returns bins with *best_kl = 0. If no
 * candidate is finite (an all-zero histogram) returns bins with *best_kl = INFINITY. */
int qat_observer_kl_threshold_bin(const double *hist, int bins, int nq, double *best_kl);

/* The expected squared fake-quant error per finite value of the observer's histogram
 * (histogram kinds; the values of a bin taken as uniform within it) for the quantizer
 * the spec builds from [lo, hi] (lo <= 0 <= hi, not both 0) and [qmin, qmax]. 0 if
 * nothing was seen. This is what the MSE observer minimises. */
double qat_observer_mse_error(const qat_observer *o, float lo, float hi, int qmin, int qmax,
                              bool symmetric);

#endif
