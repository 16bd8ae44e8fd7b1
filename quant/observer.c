#include "observer.h"

#include "autograd/comm.h"

#include "fake_quant.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* ---- names and configuration --------------------------------------------------------- */

static const char *const KIND_NAMES[] = {
    [QAT_OBSERVER_MINMAX] = "minmax", [QAT_OBSERVER_EMA] = "ema",
    [QAT_OBSERVER_PERCENTILE] = "percentile", [QAT_OBSERVER_KL] = "kl",
    [QAT_OBSERVER_MSE] = "mse",
};
_Static_assert(sizeof KIND_NAMES / sizeof KIND_NAMES[0] == QAT_OBSERVER_COUNT, "one name per observer kind");
#define N_KINDS QAT_OBSERVER_COUNT

const char *qat_observer_kind_str(qat_observer_kind k) {
    return (int)k >= 0 && (int)k < N_KINDS ? KIND_NAMES[k] : "unknown";
}

bool qat_observer_kind_from_str(const char *s, qat_observer_kind *k) {
    QAT_ASSERT(k);
    if (!s) return false;
    for (int i = 0; i < N_KINDS; i++)
        if (strcmp(s, KIND_NAMES[i]) == 0) {
            *k = (qat_observer_kind)i;
            return true;
        }
    return false;
}

static bool uses_histogram(qat_observer_kind k) {
    return k == QAT_OBSERVER_PERCENTILE || k == QAT_OBSERVER_KL || k == QAT_OBSERVER_MSE;
}

qat_status qat_observer_init(qat_observer *o, const qat_observer_config *cfg, qat_error *err) {
    QAT_ASSERT(o && cfg);
    memset(o, 0, sizeof *o);
    qat_observer_config c = *cfg;
    if ((int)c.kind < 0 || (int)c.kind >= N_KINDS)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "observer: unknown kind %d (expected minmax, ema, percentile, kl "
                             "or mse)",
                             (int)c.kind);
    /* The negated comparisons also reject NaN. */
    if (c.momentum == 0.0f)
        c.momentum = QAT_OBSERVER_DEFAULT_MOMENTUM;
    else if (!(c.momentum > 0.0f && c.momentum <= 1.0f))
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "observer: EMA momentum %g is outside (0, 1]; it is the weight of "
                             "each new batch (PyTorch's averaging_constant, e.g. 0.01), or 0 for "
                             "the default %g",
                             (double)c.momentum, (double)QAT_OBSERVER_DEFAULT_MOMENTUM);
    if (c.percentile == 0.0f)
        c.percentile = QAT_OBSERVER_DEFAULT_PERCENTILE;
    else if (!(c.percentile > 0.0f && c.percentile <= 100.0f))
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "observer: percentile %g is outside (0, 100]; it is in percent "
                             "(e.g. 99.99), or 0 for the default %g",
                             (double)c.percentile, (double)QAT_OBSERVER_DEFAULT_PERCENTILE);
    if (c.bins == 0)
        c.bins = QAT_OBSERVER_DEFAULT_BINS;
    else if (c.bins < QAT_OBSERVER_MIN_BINS || c.bins > QAT_OBSERVER_MAX_BINS)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "observer: %d histogram bins is outside [%d, %d]; 0 selects the "
                             "default %d",
                             c.bins, QAT_OBSERVER_MIN_BINS, QAT_OBSERVER_MAX_BINS,
                             QAT_OBSERVER_DEFAULT_BINS);
    o->cfg = c;
    if (uses_histogram(c.kind)) {
        o->pos = calloc(2 * (size_t)c.bins, sizeof *o->pos);
        if (c.kind == QAT_OBSERVER_KL) o->scratch = malloc((size_t)c.bins * sizeof *o->scratch);
        if (!o->pos || (c.kind == QAT_OBSERVER_KL && !o->scratch)) {
            qat_observer_free(o);
            return qat_error_set(err, QAT_STATUS_NOMEM,
                                 "observer: cannot allocate a %s histogram of %d bins",
                                 KIND_NAMES[c.kind], c.bins);
        }
        o->neg = o->pos + c.bins;
    }
    return QAT_STATUS_OK;
}

void qat_observer_free(qat_observer *o) {
    if (!o) return;
    free(o->pos); /* neg lives in the same block */
    free(o->scratch);
    o->pos = o->neg = NULL;
    o->scratch = NULL;
}

void qat_observer_reset(qat_observer *o) {
    QAT_ASSERT(o);
    o->min = o->max = 0.0f;
    o->seen = false;
    o->count = o->n_nonfinite = 0;
    o->hist_range = 0.0;
    if (o->pos) memset(o->pos, 0, 2 * (size_t)o->cfg.bins * sizeof *o->pos);
}

double qat_observer_bin_width(const qat_observer *o) {
    return o->pos && o->hist_range > 0.0 ? o->hist_range / o->cfg.bins : 0.0;
}

/* ---- update --------------------------------------------------------------------------- */

/* fabsf(v) <= FLT_MAX is false exactly for NaN (every comparison with NaN is false) and
 * +-Inf. It compiles to an and-mask and a compare, no branch, unlike a call that
 * classifies the value; -fno-fast-math keeps it honest. */
static inline bool is_finite(float v) { return fabsf(v) <= FLT_MAX; }

/* x (n) -> min and max of its finite values, and how many were finite. */
static size_t batch_minmax(const float *x, size_t n, float *mn, float *mx) {
    float lo = INFINITY, hi = -INFINITY;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        const float v = x[i];
        const bool ok = is_finite(v);
        bad += !ok;
        lo = ok && v < lo ? v : lo;
        hi = ok && v > hi ? v : hi;
    }
    *mn = lo;
    *mx = hi;
    return n - bad;
}

/* Merges every 2^k adjacent bins into one (k doublings of R): new bin j = old bins
 * [j 2^k, (j+1) 2^k). In place: bin j is written after its sources (indices >= j) are
 * read, and every later source index is above j. */
static void hist_merge(uint64_t *h, int bins, int k) {
    if (k >= 30 || (1 << k) >= bins) { /* everything lands in bin 0 */
        uint64_t total = 0;
        for (int j = 0; j < bins; j++) total += h[j];
        memset(h, 0, (size_t)bins * sizeof *h);
        h[0] = total;
        return;
    }
    const int step = 1 << k;
    int jn = 0;
    for (int j0 = 0; j0 < bins; j0 += step, jn++) {
        uint64_t s = 0;
        for (int j = j0; j < j0 + step && j < bins; j++) s += h[j];
        h[jn] = s;
    }
    memset(h + jn, 0, (size_t)(bins - jn) * sizeof *h);
}

/* Doubles R until it exceeds the magnitude m (finite), merging bins accordingly. R stays
 * a power of two in double, which holds any float magnitude (< 2^128) exactly. */
static void hist_grow(qat_observer *o, float m) {
    int k = 0;
    double R = o->hist_range;
    while (R <= (double)m) {
        R *= 2.0;
        k++;
    }
    hist_merge(o->pos, o->cfg.bins, k);
    hist_merge(o->neg, o->cfg.bins, k);
    o->hist_range = R;
}

/* x (n) -> bins, with growth, and (in the same pass) the min and max of the finite
 * values. Returns how many were finite. */
static size_t hist_update(qat_observer *o, const float *x, size_t n, float *mn, float *mx) {
    const int bins = o->cfg.bins;
    if (o->hist_range == 0.0) {
        /* Only zeros so far: R comes from this batch's largest magnitude m, as the
         * smallest power of two above it. frexp(m) = f 2^e with f in [0.5, 1), so 2^e > m
         * >= 2^(e-1). */
        float m = 0.0f;
        for (size_t i = 0; i < n; i++) {
            const float a = fabsf(x[i]);
            m = is_finite(a) && a > m ? a : m;
        }
        if (m > 0.0f) {
            int e;
            frexp((double)m, &e);
            o->hist_range = ldexp(1.0, e);
        }
    }
    /* R = 0 still means the batch holds only zeros (and non-finite values): they all go
     * to bin 0 (inv_w = 0) and nothing can trigger growth (R taken as infinite). */
    double R = o->hist_range > 0.0 ? o->hist_range : INFINITY;
    double inv_w = o->hist_range > 0.0 ? bins / o->hist_range : 0.0;
    uint64_t *pos = o->pos, *neg = o->neg;
    float lo = INFINITY, hi = -INFINITY;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        const float v = x[i], m = fabsf(v);
        if (!is_finite(v)) {
            bad++;
            continue;
        }
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
        if ((double)m >= R) { /* rare: at most a few times per observer */
            hist_grow(o, m);
            R = o->hist_range;
            inv_w = bins / R;
        }
        /* m < R, so m * inv_w < bins in exact arithmetic; the clamp covers the rounding
         * of the product when bins is not a power of two (with a power of two, inv_w is a
         * power of two and the product, hence the bin, is exact). */
        size_t j = (size_t)((double)m * inv_w);
        j = j < (size_t)bins ? j : (size_t)bins - 1;
        (v < 0.0f ? neg : pos)[j]++; /* -0 and +0 go to pos */
    }
    *mn = lo;
    *mx = hi;
    return n - bad;
}

void qat_observer_update(qat_observer *o, const float *x, size_t n) {
    QAT_ASSERT(o && (x || n == 0));
    float mn, mx;
    const size_t finite = uses_histogram(o->cfg.kind) ? hist_update(o, x, n, &mn, &mx)
                                                      : batch_minmax(x, n, &mn, &mx);
    o->n_nonfinite += n - finite;
    if (finite == 0) return; /* an empty or all-NaN batch moves nothing */
    o->count += finite;
    if (!o->seen) {
        o->min = mn;
        o->max = mx;
        o->seen = true;
        return;
    }
    if (o->cfg.kind == QAT_OBSERVER_EMA) {
        /* PyTorch: min_val + averaging_constant * (min_cur - min_val). */
        const float c = o->cfg.momentum;
        o->min = o->min + c * (mn - o->min);
        o->max = o->max + c * (mx - o->max);
    } else {
        o->min = mn < o->min ? mn : o->min;
        o->max = mx > o->max ? mx : o->max;
    }
}

/* ---- percentile ---------------------------------------------------------------------- */

/* Index + 1 of the last non-empty bin of a (and b, if not NULL); 0 if all are empty. */
static int hist_used(const uint64_t *a, const uint64_t *b, int bins) {
    int used = bins;
    while (used > 0 && a[used - 1] == 0 && (!b || b[used - 1] == 0)) used--;
    return used;
}

/* The magnitude below which p % of the counts of a (+ b) lie: with cumulative count C_j
 * before bin j and target t = p/100 * total, the first bin j with C_j + h_j >= t, at
 * (j + (t - C_j) / h_j) w (values uniform within the bin). 0 for an empty histogram. */
static double hist_percentile(const uint64_t *a, const uint64_t *b, int bins, double w, double p) {
    uint64_t total = 0;
    for (int j = 0; j < bins; j++) total += a[j] + (b ? b[j] : 0);
    if (total == 0) return 0.0;
    const double target = p / 100.0 * (double)total;
    double cum = 0.0;
    for (int j = 0; j < bins; j++) {
        const double c = (double)(a[j] + (b ? b[j] : 0));
        if (c > 0.0 && cum + c >= target) return ((double)j + (target - cum) / c) * w;
        cum += c;
    }
    return bins * w; /* not reached: the last non-empty bin reaches the target */
}

static void range_percentile(const qat_observer *o, bool symmetric, float *lo, float *hi) {
    const int bins = o->cfg.bins;
    const double w = qat_observer_bin_width(o), p = o->cfg.percentile;
    const double pmax = fmax(o->max, 0.0), nmax = fmax(-(double)o->min, 0.0);
    if (symmetric) {
        *hi = (float)fmin(hist_percentile(o->pos, o->neg, bins, w, p), fmax(pmax, nmax));
        *lo = -*hi;
    } else {
        *hi = (float)fmin(hist_percentile(o->pos, NULL, bins, w, p), pmax);
        *lo = o->min < 0.0f ? -(float)fmin(hist_percentile(o->neg, NULL, bins, w, p), nmax) : 0.0f;
    }
}

/* ---- KL (entropy) calibration ----------------------------------------------------------
 *
 * A direct transcription of the definition in observer.h, without building P and Q:
 *   kept = sum h[0:i], outliers = sum h[i:bins]; sum P = kept + outliers, sum Q = kept
 *   (spreading a group's total over its bins keeps the total).
 *   P_j = (h_j + [j == i-1] outliers) / (kept + outliers)
 *   Q_j = (group total / non-empty bins in the group) / kept   if h_j > 0,
 *         QAT_OBSERVER_KL_EPS / kept                           if h_j = 0 < P_j (j = i-1),
 *         0                                                    otherwise (no term: P_j = 0).
 * The numpy reference in tests/fixtures/gen_observer.py builds P and Q as arrays.
 */
double qat_observer_kl_divergence(const double *hist, int bins, int nq, int i) {
    QAT_ASSERT(hist && nq >= 1 && nq <= i && i <= bins);
    double kept = 0.0, outliers = 0.0;
    for (int j = 0; j < i; j++) kept += hist[j];
    for (int j = i; j < bins; j++) outliers += hist[j];
    if (!(kept > 0.0)) return INFINITY;
    const double psum = kept + outliers;
    double kl = 0.0;
    for (int g = 0; g < nq; g++) {
        const int j0 = (int)((int64_t)g * i / nq), j1 = (int)((int64_t)(g + 1) * i / nq);
        double gsum = 0.0;
        int nz = 0;
        for (int j = j0; j < j1; j++)
            if (hist[j] > 0.0) {
                gsum += hist[j];
                nz++;
            }
        for (int j = j0; j < j1; j++) {
            const double p = hist[j] + (j == i - 1 ? outliers : 0.0);
            if (!(p > 0.0)) continue;
            const double q = hist[j] > 0.0 ? gsum / nz : QAT_OBSERVER_KL_EPS;
            const double P = p / psum, Q = q / kept;
            kl += P * log(P / Q);
        }
    }
    return kl;
}

int qat_observer_kl_threshold_bin(const double *hist, int bins, int nq, double *best_kl) {
    QAT_ASSERT(hist && bins >= 0 && nq >= 1);
    if (bins <= nq) {
        if (best_kl) *best_kl = 0.0;
        return bins;
    }
    int best = bins;
    double best_d = INFINITY;
    for (int i = nq; i <= bins; i++) {
        const double d = qat_observer_kl_divergence(hist, bins, nq, i);
        /* Candidates that differ only in how empty bins are grouped (thresholds inside a
         * gap of the data) have equal divergences in exact arithmetic; rounding must not
         * pick among them, so a wider candidate has to win by more than that. */
        const bool better = best_d == INFINITY
                                ? d < INFINITY
                                : d < best_d - QAT_OBSERVER_KL_TIE_REL * fabs(best_d);
        if (better) {
            best_d = d;
            best = i;
        }
    }
    if (best_kl) *best_kl = best_d;
    return best;
}

static void range_kl(const qat_observer *o, int qmin, int qmax, bool symmetric, float *lo,
                     float *hi) {
    const double maxabs = fmax(fmax(o->max, 0.0), -(double)o->min);
    const bool two_sided = symmetric || o->min < 0.0f;
    const int nq = two_sided ? qmax : qmax - qmin + 1;
    /* Candidates run up to the last non-empty bin, as TensorRT's histogram ends at the
     * largest |x| (ours ends at R, up to twice that). */
    const int used = hist_used(o->pos, o->neg, o->cfg.bins);
    for (int j = 0; j < used; j++) o->scratch[j] = (double)o->pos[j] + (double)o->neg[j];
    /* The zero spike: after a ReLU about half of all values sit in bin 0, and then the
     * divergence is smallest for the narrowest candidate, whose groups are single bins
     * that reproduce the spike exactly, whatever it clips (measured: 10% accuracy on the
     * reference CNN at w4a4, 89.6% at w8a8). NVIDIA's pytorch-quantization entropy
     * calibrator replaces bin 0 by bin 1 for the same reason; so do we. */
    if (used > 1) o->scratch[0] = o->scratch[1];
    const int i = qat_observer_kl_threshold_bin(o->scratch, used, nq, NULL);
    const float T = (float)fmin(i * qat_observer_bin_width(o), maxabs);
    *hi = T;
    *lo = two_sided ? -T : 0.0f;
}

/* ---- MSE ------------------------------------------------------------------------------ */

static inline double cube(double v) { return v * v * v; }

/* The integral over [a, b] (a < b) of (x - fq(x))^2 dx for the staircase
 *     fq(x) = s (clamp(round(x / s) + zp, qmin, qmax) - zp).
 * Level q is output for x in its cell [s (q - zp - 1/2), s (q - zp + 1/2)), except that
 * qmin's cell reaches down to -inf and qmax's up to +inf (the clamp: that part is the
 * clipping error). Walk the cells overlapping [a, b]; on each piece [x0, x1] the output
 * is the constant c = s (q - zp) and the integral is ((x1 - c)^3 - (x0 - c)^3) / 3.
 * Rounding ties (half away from zero vs this floor(t + 1/2)) are a set of measure zero. */
static double stair_sq_integral(double a, double b, double s, int zp, int qmin, int qmax) {
    const double t = floor(a / s + 0.5) + zp;
    int q = t < qmin ? qmin : t > qmax ? qmax : (int)t;
    double acc = 0.0, x0 = a;
    for (;;) {
        const double c = s * (q - zp);
        double x1 = q == qmax ? b : fmin(b, s * (q - zp + 0.5));
        x1 = fmax(x1, x0); /* a cell edge rounded below a */
        acc += (cube(x1 - c) - cube(x0 - c)) / 3.0;
        if (x1 >= b) break;
        x0 = x1;
        q++;
    }
    return acc;
}

double qat_observer_mse_error(const qat_observer *o, float lo, float hi, int qmin, int qmax,
                              bool symmetric) {
    QAT_ASSERT(o && qmin < qmax && qmax >= 1);
    const double w = qat_observer_bin_width(o);
    /* No histogram, nothing seen, or only zeros (which every quantizer keeps exact). */
    if (!o->pos || o->count == 0 || w == 0.0) return 0.0;
    float scale;
    int32_t zp;
    qat_qparams_from_range(lo, hi, qmin, qmax, symmetric, &scale, &zp);
    const double s = scale;
    const int bins = o->cfg.bins;
    const int np = hist_used(o->pos, NULL, bins), nn = hist_used(o->neg, NULL, bins);
    /* A bin of count c spread uniformly over width w has density c / w. */
    double acc = 0.0;
    for (int j = 0; j < np; j++)
        if (o->pos[j])
            acc += (double)o->pos[j] * stair_sq_integral(j * w, (j + 1) * w, s, zp, qmin, qmax);
    for (int j = 0; j < nn; j++)
        if (o->neg[j])
            acc += (double)o->neg[j] * stair_sq_integral(-(j + 1) * w, -j * w, s, zp, qmin, qmax);
    return acc / w / (double)o->count;
}

static void range_mse(const qat_observer *o, int qmin, int qmax, bool symmetric, float *lo,
                      float *hi) {
    const float mn = fminf(o->min, 0.0f), mx = fmaxf(o->max, 0.0f), m = fmaxf(-mn, mx);
    *lo = *hi = 0.0f;
    if (m == 0.0f) return;
    double best = INFINITY;
    /* From the widest candidate down, replacing only on a strictly smaller error: ties
     * go to the wider range. */
    for (int k = QAT_OBSERVER_MSE_GRID; k >= 1; k--) {
        const double f = (double)k / QAT_OBSERVER_MSE_GRID;
        const float l = symmetric ? -(float)(f * m) : (float)(f * mn);
        const float h = symmetric ? (float)(f * m) : (float)(f * mx);
        const double e = qat_observer_mse_error(o, l, h, qmin, qmax, symmetric);
        if (e < best) {
            best = e;
            *lo = l;
            *hi = h;
        }
    }
}

/* ---- range ---------------------------------------------------------------------------- */

void qat_observer_range(const qat_observer *o, int qmin, int qmax, bool symmetric, float *lo,
                        float *hi) {
    QAT_ASSERT(o && lo && hi && qmin < qmax && qmax >= 1);
    float l = 0.0f, h = 0.0f;
    if (o->seen) {
        switch (o->cfg.kind) {
        case QAT_OBSERVER_MINMAX:
        case QAT_OBSERVER_EMA:
            l = fminf(o->min, 0.0f);
            h = fmaxf(o->max, 0.0f);
            break;
        case QAT_OBSERVER_PERCENTILE: range_percentile(o, symmetric, &l, &h); break;
        case QAT_OBSERVER_KL: range_kl(o, qmin, qmax, symmetric, &l, &h); break;
        case QAT_OBSERVER_MSE: range_mse(o, qmin, qmax, symmetric, &l, &h); break;
        case QAT_OBSERVER_COUNT: break;
        }
    }
    if (symmetric) {
        h = fmaxf(-l, h);
        l = -h;
    }
    /* lo <= 0 <= hi always, and no -0 (it would print as "-0"). */
    l = fminf(l, 0.0f);
    h = fmaxf(h, 0.0f);
    *lo = l == 0.0f ? 0.0f : l;
    *hi = h == 0.0f ? 0.0f : h;
}

/* ---- data-parallel runs ---------------------------------------------------------------- */

qat_status qat_observer_merge_across(qat_observer *o) {
    if (qat_comm_get()->size == 1) return QAT_STATUS_OK;
    uint64_t c[3] = {o->count, o->n_nonfinite, o->seen ? 1u : 0u};
    float lo = o->seen ? o->min : INFINITY, hi = o->seen ? o->max : -INFINITY;
    if (qat_comm_sum_u64(c, 3) || qat_comm_minmax(&lo, &hi)) return QAT_STATUS_IO;
    o->count = c[0];
    o->n_nonfinite = c[1];
    o->seen = c[2] > 0;
    if (o->cfg.kind != QAT_OBSERVER_EMA && o->seen) { /* EMA: fed the whole batch's extremes already */
        o->min = lo;
        o->max = hi;
    }
    if (!uses_histogram(o->cfg.kind)) return QAT_STATUS_OK;
    /* the largest range, as an exponent (R = 2^e exactly; -1e6 for a histogram of zeros) */
    int e = 0;
    if (o->hist_range > 0.0) frexp(o->hist_range, &e), e -= 1;
    float ef = o->hist_range > 0.0 ? (float)e : -1e6f;
    if (qat_comm_max(&ef, 1)) return QAT_STATUS_IO;
    if (ef > -1e6f) {
        const int em = (int)ef;
        if (o->hist_range > 0.0 && em > e) { /* fold this process's bins onto the largest range */
            hist_merge(o->pos, o->cfg.bins, em - e);
            hist_merge(o->neg, o->cfg.bins, em - e);
        }
        o->hist_range = ldexp(1.0, em); /* zeros alone sit in bin 0 at any range */
    }
    if (qat_comm_sum_u64(o->pos, (size_t)o->cfg.bins) || qat_comm_sum_u64(o->neg, (size_t)o->cfg.bins))
        return QAT_STATUS_IO;
    return QAT_STATUS_OK;
}
