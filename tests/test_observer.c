/* test_observer.c - range observers (quant/observer.h).
 *
 *  - names round-trip; invalid configurations are rejected with a message naming the
 *    field; zeros select the defaults;
 *  - MINMAX on known data: mixed signs, all positive / all negative (widened to 0), empty;
 *  - EMA over three batches with momentum 0.1, against hand-computed values;
 *  - NaN/Inf are skipped and counted by every kind;
 *  - histograms: zero goes to the positive bin 0; growth keeps every count and equals,
 *    bin for bin, the histogram built from all the data at the final range; percentiles
 *    stay within a bin width of the exact ones after growth;
 *  - PERCENTILE on 0..9999: 99 % -> 9900 within a bin width, per side and symmetric;
 *  - KL on the numpy reference's histograms (tests/fixtures/observer.bin): every
 *    candidate's divergence, and the chosen bin exactly; on a Gaussian with far outliers
 *    it clips well below the max, and post-ReLU data get [0, T];
 *  - MSE: the integrated error agrees with a brute-force average of the spec's fake-quant
 *    over densely spread data; a Laplacian with a far outlier gets a range far narrower
 *    than the max; uniform data keep about the full range.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/rng.h"
#include "quant/observer.h"
#include "testutil.h"

static void observer_new(qat_observer *o, qat_observer_kind kind, int bins) {
    qat_observer_config cfg = {.kind = kind, .bins = bins};
    qat_error err = {0};
    if (qat_observer_init(o, &cfg, &err) != QAT_STATUS_OK)
        fail_msg("init %s: %s", qat_observer_kind_str(kind), err.msg);
}

/* Fails unless the observer's range is [want_lo, want_hi] within tol. */
static void check_range(const qat_observer *o, int qmin, int qmax, bool sym, float want_lo,
                        float want_hi, float tol, const char *what) {
    float lo, hi;
    qat_observer_range(o, qmin, qmax, sym, &lo, &hi);
    if (!(fabsf(lo - want_lo) <= tol && fabsf(hi - want_hi) <= tol))
        fail_msg("%s (%s, [%d, %d]%s): got [%.9g, %.9g], expected [%.9g, %.9g] (tol %g)", what,
                 qat_observer_kind_str(o->cfg.kind), qmin, qmax, sym ? " symmetric" : "",
                 (double)lo, (double)hi, (double)want_lo, (double)want_hi, (double)tol);
}

static uint64_t hist_total(const qat_observer *o) {
    uint64_t t = 0;
    for (int j = 0; j < o->cfg.bins; j++) t += o->pos[j] + o->neg[j];
    return t;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* The exact p-th percentile (in the sense the observer uses: the value below which p %
 * lie) of the magnitudes of the values of x that `keep` selects: 1 those >= 0, -1 those
 * < 0, 0 all. */
static double exact_percentile(const float *x, size_t n, double p, int keep) {
    float *m = malloc(n * sizeof *m);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (keep == 0 || (keep > 0 && x[i] >= 0) || (keep < 0 && x[i] < 0)) m[k++] = fabsf(x[i]);
    qsort(m, k, sizeof *m, cmp_float);
    size_t r = (size_t)ceil(p / 100.0 * (double)k);
    double v = m[r > 0 ? r - 1 : 0];
    free(m);
    return v;
}

static float laplace(qat_rng *r, float b) {
    float u = qat_rng_uniform(r) - 0.5f; /* [-0.5, 0.5) */
    float a = fminf(fabsf(u), 0.5f - 1e-7f);
    return (u < 0 ? 1.0f : -1.0f) * b * logf(1.0f - 2.0f * a);
}

/* ---- names, configuration ------------------------------------------------------------ */

static void test_kind_names(void **state) {
    (void)state;
    const char *names[] = {"minmax", "ema", "percentile", "kl", "mse"};
    for (int i = 0; i < 5; i++) {
        qat_observer_kind k;
        assert_string_equal(qat_observer_kind_str((qat_observer_kind)i), names[i]);
        if (!qat_observer_kind_from_str(names[i], &k) || (int)k != i)
            fail_msg("kind_from_str(\"%s\") did not give %d", names[i], i);
    }
    qat_observer_kind k = QAT_OBSERVER_EMA;
    assert_false(qat_observer_kind_from_str("entropy", &k));
    assert_false(qat_observer_kind_from_str("", &k));
    assert_false(qat_observer_kind_from_str(NULL, &k));
    assert_int_equal(k, QAT_OBSERVER_EMA);
    assert_string_equal(qat_observer_kind_str((qat_observer_kind)42), "unknown");
}

static void test_defaults(void **state) {
    (void)state;
    qat_observer o;
    observer_new(&o, QAT_OBSERVER_KL, 0);
    assert_true(o.cfg.momentum == 0.01f);
    assert_true(o.cfg.percentile == 99.99f);
    assert_int_equal(o.cfg.bins, 2048);
    assert_non_null(o.pos);
    assert_non_null(o.neg);
    assert_non_null(o.scratch);
    qat_observer_free(&o);
    qat_observer_free(&o); /* harmless twice */
    observer_new(&o, QAT_OBSERVER_EMA, 0);
    assert_null(o.pos); /* no histogram for MINMAX/EMA */
    qat_observer_free(&o);
}

static void test_invalid_config(void **state) {
    (void)state;
    const struct {
        qat_observer_config cfg;
        const char *word;
    } bad[] = {
        {{.kind = QAT_OBSERVER_PERCENTILE, .percentile = 150.0f}, "percentile"},
        {{.kind = QAT_OBSERVER_PERCENTILE, .percentile = -1.0f}, "percentile"},
        {{.kind = QAT_OBSERVER_PERCENTILE, .percentile = NAN}, "percentile"},
        {{.kind = QAT_OBSERVER_KL, .bins = 8}, "bins"},
        {{.kind = QAT_OBSERVER_KL, .bins = -5}, "bins"},
        {{.kind = QAT_OBSERVER_MSE, .bins = QAT_OBSERVER_MAX_BINS + 1}, "bins"},
        {{.kind = QAT_OBSERVER_EMA, .momentum = 1.5f}, "momentum"},
        {{.kind = QAT_OBSERVER_EMA, .momentum = -0.1f}, "momentum"},
        {{.kind = QAT_OBSERVER_EMA, .momentum = INFINITY}, "momentum"},
        {{.kind = (qat_observer_kind)7}, "kind"},
        {{.kind = (qat_observer_kind)-1}, "kind"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        qat_observer o;
        qat_error err = {0};
        qat_status s = qat_observer_init(&o, &bad[i].cfg, &err);
        if (s != QAT_STATUS_INVALID_ARG)
            fail_msg("config %zu: status %s, expected invalid argument", i, qat_status_str(s));
        if (!strstr(err.msg, bad[i].word))
            fail_msg("config %zu: message \"%s\" does not mention \"%s\"", i, err.msg,
                     bad[i].word);
        assert_null(o.pos);
        qat_observer_free(&o);
    }
    /* Edges that are valid. */
    qat_observer o;
    qat_error err = {0};
    qat_observer_config ok = {.kind = QAT_OBSERVER_PERCENTILE, .percentile = 100.0f, .bins = 16,
                              .momentum = 1.0f};
    assert_int_equal(qat_observer_init(&o, &ok, &err), QAT_STATUS_OK);
    qat_observer_free(&o);
}

/* ---- MINMAX, EMA, non-finite values ---------------------------------------------------- */

static void test_minmax(void **state) {
    (void)state;
    qat_observer o;
    observer_new(&o, QAT_OBSERVER_MINMAX, 0);
    check_range(&o, -128, 127, false, 0, 0, 0, "nothing seen");
    qat_observer_update(&o, NULL, 0);
    check_range(&o, -128, 127, true, 0, 0, 0, "only an empty batch");
    assert_false(o.seen);

    const float a[] = {0.5f, -1.0f, 3.0f, 2.0f};
    const float b[] = {-1.5f, 0.25f};
    qat_observer_update(&o, a, 4);
    qat_observer_update(&o, b, 2);
    check_range(&o, -128, 127, false, -1.5f, 3.0f, 0, "mixed signs over two batches");
    check_range(&o, -128, 127, true, -3.0f, 3.0f, 0, "mixed signs over two batches");
    assert_true(o.count == 6 && o.n_nonfinite == 0);

    const float pos[] = {1.0f, 2.0f, 1.5f};
    qat_observer_reset(&o);
    check_range(&o, -128, 127, false, 0, 0, 0, "after reset");
    qat_observer_update(&o, pos, 3);
    check_range(&o, -128, 127, false, 0.0f, 2.0f, 0, "all positive (widened to 0)");
    check_range(&o, -8, 7, true, -2.0f, 2.0f, 0, "all positive");

    const float neg[] = {-2.0f, -1.0f, -0.5f};
    qat_observer_reset(&o);
    qat_observer_update(&o, neg, 3);
    check_range(&o, -128, 127, false, -2.0f, 0.0f, 0, "all negative (widened to 0)");
    check_range(&o, -128, 127, true, -2.0f, 2.0f, 0, "all negative");
    qat_observer_free(&o);
}

static void test_ema(void **state) {
    (void)state;
    qat_observer o;
    qat_observer_config cfg = {.kind = QAT_OBSERVER_EMA, .momentum = 0.1f};
    assert_int_equal(qat_observer_init(&o, &cfg, NULL), QAT_STATUS_OK);
    const float b1[] = {-1.0f, 0.0f, 2.0f}, b2[] = {4.0f, -3.0f}, b3[] = {0.5f, 1.0f, 0.75f};
    const float nan_batch[] = {NAN, INFINITY};
    qat_observer_update(&o, b1, 3); /* the first batch sets the range: [-1, 2] */
    check_range(&o, -128, 127, false, -1.0f, 2.0f, 0, "EMA after batch 1");
    qat_observer_update(&o, nan_batch, 2); /* no finite value: no change */
    qat_observer_update(&o, NULL, 0);
    check_range(&o, -128, 127, false, -1.0f, 2.0f, 0, "EMA after empty/NaN batches");
    qat_observer_update(&o, b2, 2);
    /* min = 0.9 * -1 + 0.1 * -3 = -1.2, max = 0.9 * 2 + 0.1 * 4 = 2.2 */
    check_range(&o, -128, 127, false, -1.2f, 2.2f, 1e-6f, "EMA after batch 2");
    qat_observer_update(&o, b3, 3);
    /* min = 0.9 * -1.2 + 0.1 * 0.5 = -1.03, max = 0.9 * 2.2 + 0.1 * 1 = 2.08; the averaged
     * min stays negative although this batch had none. */
    check_range(&o, -128, 127, false, -1.03f, 2.08f, 1e-6f, "EMA after batch 3");
    check_range(&o, -128, 127, true, -2.08f, 2.08f, 1e-6f, "EMA after batch 3");
    assert_true(o.count == 8 && o.n_nonfinite == 2);
    qat_observer_free(&o);
}

static void test_nonfinite(void **state) {
    (void)state;
    const float x[] = {1.0f, NAN, -2.0f, INFINITY, -INFINITY, 3.0f, -NAN};
    const float only_bad[] = {NAN, INFINITY};
    for (int k = 0; k < 5; k++) {
        qat_observer o;
        observer_new(&o, (qat_observer_kind)k, 64);
        qat_observer_update(&o, only_bad, 2);
        assert_false(o.seen);
        check_range(&o, -128, 127, false, 0, 0, 0, "only NaN/Inf seen");
        qat_observer_update(&o, x, 7);
        if (o.count != 3 || o.n_nonfinite != 6)
            fail_msg("%s: count %llu, n_nonfinite %llu; expected 3 and 6",
                     qat_observer_kind_str(o.cfg.kind), (unsigned long long)o.count,
                     (unsigned long long)o.n_nonfinite);
        if (o.min != -2.0f || o.max != 3.0f)
            fail_msg("%s: min %g max %g; expected -2 and 3", qat_observer_kind_str(o.cfg.kind),
                     (double)o.min, (double)o.max);
        if (o.pos) {
            assert_int_equal(hist_total(&o), 3);
            assert_true(o.hist_range == 4.0); /* the smallest power of two above 3 */
        }
        float lo, hi;
        qat_observer_range(&o, -128, 127, false, &lo, &hi);
        /* (KL with negatives returns [-T, T], T <= max |x| = 3.) */
        if (!(isfinite(lo) && isfinite(hi) && lo <= 0 && hi >= 0 && lo >= -3.0f && hi <= 3.0f))
            fail_msg("%s: range [%g, %g] should be finite, within [-3, 3], around 0",
                     qat_observer_kind_str(o.cfg.kind), (double)lo, (double)hi);
        qat_observer_free(&o);
    }
}

/* ---- histograms ------------------------------------------------------------------------ */

static void test_hist_zero_and_first_range(void **state) {
    (void)state;
    qat_observer o;
    observer_new(&o, QAT_OBSERVER_PERCENTILE, 16);
    const float zeros[] = {0.0f, -0.0f, 0.0f};
    qat_observer_update(&o, zeros, 3);
    assert_true(o.hist_range == 0.0); /* not set by zeros alone */
    assert_int_equal(o.pos[0], 3);    /* -0 counts as x >= 0 */
    check_range(&o, -128, 127, false, 0, 0, 0, "only zeros");
    const float x[] = {1.5f, -0.25f, 1.0f};
    qat_observer_update(&o, x, 3);
    assert_true(o.hist_range == 2.0); /* 2^1 > 1.5 >= 2^0 */
    assert_int_equal(o.pos[0], 3);
    assert_int_equal(o.pos[12], 1); /* 1.5 * 16 / 2 = 12 */
    assert_int_equal(o.pos[8], 1);  /* 1.0 -> 8 */
    assert_int_equal(o.neg[2], 1);  /* 0.25 -> 2 */
    assert_int_equal(hist_total(&o), 6);
    /* Exactly a power of two goes one up: 2 -> R = 4. */
    qat_observer_reset(&o);
    const float two[] = {2.0f};
    qat_observer_update(&o, two, 1);
    assert_true(o.hist_range == 4.0);
    assert_int_equal(o.pos[8], 1);
    qat_observer_free(&o);
}

static void test_hist_growth(void **state) {
    (void)state;
    enum { N1 = 4000, N2 = 4000, N3 = 2000, N = N1 + N2 + N3 };
    float *x = malloc(N * sizeof *x);
    fill_uniform(x, N1, -1.0f, 1.0f, 11);      /* R = 1 */
    fill_uniform(x + N1, N2, -3.0f, 2.5f, 12); /* R = 4 */
    fill_uniform(x + N1 + N2, N3, -1.0f, 1.0f, 13);
    x[N1 + N2 + 7] = 100.0f; /* R = 128, mid-batch */
    qat_observer grown, direct;
    observer_new(&grown, QAT_OBSERVER_PERCENTILE, 0);
    observer_new(&direct, QAT_OBSERVER_PERCENTILE, 0);

    qat_observer_update(&grown, x, N1);
    assert_true(grown.hist_range == 1.0);
    qat_observer_update(&grown, x + N1, N2);
    assert_true(grown.hist_range == 4.0);
    assert_int_equal(hist_total(&grown), N1 + N2);
    /* Percentiles after one growth stay within a bin width (4/2048) of the exact ones. */
    const double w4 = 4.0 / 2048;
    double want_hi = exact_percentile(x, N1 + N2, 99.99, 1);
    double want_lo = -exact_percentile(x, N1 + N2, 99.99, -1);
    check_range(&grown, -128, 127, false, (float)want_lo, (float)want_hi, (float)w4,
                "99.99 % after growth to R = 4");

    qat_observer_update(&grown, x + N1 + N2, N3);
    assert_true(grown.hist_range == 128.0);
    assert_int_equal(hist_total(&grown), N);
    assert_true(grown.count == N);
    /* Growth only merges bins whose edges line up: the result is the histogram of all
     * the data at R = 128, bin for bin. */
    qat_observer_update(&direct, x, N);
    assert_true(direct.hist_range == 128.0);
    for (int j = 0; j < 2048; j++)
        if (grown.pos[j] != direct.pos[j] || grown.neg[j] != direct.neg[j])
            fail_msg("bin %d: grown pos %llu neg %llu, direct pos %llu neg %llu", j,
                     (unsigned long long)grown.pos[j], (unsigned long long)grown.neg[j],
                     (unsigned long long)direct.pos[j], (unsigned long long)direct.neg[j]);
    const double w128 = 128.0 / 2048;
    for (int p = 0; p < 3; p++) {
        const double pct[] = {50.0, 90.0, 99.0};
        grown.cfg.percentile = (float)pct[p];
        char what[64];
        snprintf(what, sizeof what, "%g %% after growth to R = 128", pct[p]);
        check_range(&grown, -128, 127, false, (float)-exact_percentile(x, N, pct[p], -1),
                    (float)exact_percentile(x, N, pct[p], 1), (float)w128, what);
        check_range(&grown, -128, 127, true, (float)-exact_percentile(x, N, pct[p], 0),
                    (float)exact_percentile(x, N, pct[p], 0), (float)w128, what);
    }

    /* Extreme growth: from 1e-30 to 1e30 everything old ends in bin 0. */
    qat_observer_reset(&grown);
    const float tiny[] = {1e-30f, -1e-30f}, huge[] = {1e30f, 3.4e38f};
    qat_observer_update(&grown, tiny, 2);
    qat_observer_update(&grown, huge, 2);
    assert_true(grown.hist_range == 0x1p128);
    assert_int_equal(grown.pos[0], 2); /* 1e-30 and 1e30 < 2^128 / 2048 */
    assert_int_equal(grown.neg[0], 1);
    assert_int_equal(grown.pos[2046], 1); /* 3.4e38 / 2^128 * 2048 = 2046.2 */
    assert_int_equal(hist_total(&grown), 4);
    float lo, hi;
    qat_observer_range(&grown, -128, 127, false, &lo, &hi);
    assert_true(isfinite(lo) && isfinite(hi) && hi <= 3.4e38f);

    qat_observer_free(&grown);
    qat_observer_free(&direct);
    free(x);
}

/* ---- PERCENTILE ----------------------------------------------------------------------- */

static void test_percentile_uniform(void **state) {
    (void)state;
    enum { N = 10000 };
    float *x = malloc(N * sizeof *x);
    for (int i = 0; i < N; i++) x[i] = (float)((i * 7919) % N); /* 0..9999, shuffled */
    qat_observer o;
    qat_observer_config cfg = {.kind = QAT_OBSERVER_PERCENTILE, .percentile = 99.0f};
    assert_int_equal(qat_observer_init(&o, &cfg, NULL), QAT_STATUS_OK);
    qat_observer_update(&o, x, N);
    const float w = (float)qat_observer_bin_width(&o); /* 16384 / 2048 = 8 */
    assert_true(w == 8.0f);
    check_range(&o, -128, 127, false, 0.0f, 9900.0f, w, "99 % of 0..9999 (no negatives)");
    check_range(&o, -128, 127, true, -9900.0f, 9900.0f, w, "99 % of 0..9999");
    o.cfg.percentile = 100.0f;
    check_range(&o, -128, 127, false, 0.0f, 9999.0f, 0, "100 % is the max seen");

    /* The same values negated: the lower end. */
    for (int i = 0; i < N; i++) x[i] = -x[i] - 1.0f; /* -1..-10000 */
    qat_observer_reset(&o);
    o.cfg.percentile = 99.0f;
    qat_observer_update(&o, x, N);
    check_range(&o, -128, 127, false, -9901.0f, 0.0f, w, "99 % of -1..-10000");
    qat_observer_free(&o);
    free(x);
}

/* ---- KL --------------------------------------------------------------------------------- */

static void test_kl_fixture(void **state) {
    const char *c = *state;
    qat_fixture *fx = fixture_load("observer.bin");
    char name[128];
    snprintf(name, sizeof name, "%s.hist", c);
    const qat_fixture_entry *e = fixture_entry(fx, name);
    const int bins = (int)e->n;
    const int nq = (int)fixture_field(fx, c, "nq", 1)[0];
    const float *want_kl = fixture_field(fx, c, "kl", (size_t)(bins - nq + 1));
    const int want_best = (int)fixture_field(fx, c, "best", 1)[0];
    const double want_best_kl = fixture_field(fx, c, "best_kl", 1)[0];
    double *hist = malloc((size_t)bins * sizeof *hist);
    for (int j = 0; j < bins; j++) hist[j] = e->data[j];

    for (int i = nq; i <= bins; i++) {
        const double got = qat_observer_kl_divergence(hist, bins, nq, i), want = want_kl[i - nq];
        const bool ok = isinf(want) ? isinf(got) && got > 0
                                    : fabs(got - want) <= 1e-6 * fabs(want) + 1e-12;
        if (!ok)
            fail_msg("%s: KL of candidate i = %d: got %.9g, expected %.9g (numpy)", c, i, got,
                     want);
    }
    double best_kl;
    const int best = qat_observer_kl_threshold_bin(hist, bins, nq, &best_kl);
    if (best != want_best || fabs(best_kl - want_best_kl) > 1e-6 * want_best_kl)
        fail_msg("%s: threshold bin %d (KL %.9g), expected %d (KL %.9g)", c, best, best_kl,
                 want_best, want_best_kl);
    free(hist);
    fixture_free(fx);
}

static void test_kl_edges(void **state) {
    (void)state;
    /* Fewer bins than levels: nothing to clip. */
    const double h[] = {1, 2, 3, 4};
    double kl = -1;
    assert_int_equal(qat_observer_kl_threshold_bin(h, 4, 7, &kl), 4);
    assert_true(kl == 0.0);
    /* One bin per level: Q = P, KL = 0, no clipping. */
    assert_int_equal(qat_observer_kl_threshold_bin(h, 4, 4, &kl), 4);
    assert_true(kl == 0.0);
    assert_true(qat_observer_kl_divergence(h, 4, 4, 4) == 0.0);
    /* An empty last bin with outliers beyond: Q there is QAT_OBSERVER_KL_EPS counts.
     * P = (3, 5) / 8, Q = (3, 1e-4) / 3. */
    const double gap[] = {3, 0, 0, 5};
    const double want = 3.0 / 8 * log(3.0 / 8) + 5.0 / 8 * log(5.0 / 8 / (1e-4 / 3));
    const double got = qat_observer_kl_divergence(gap, 4, 1, 2);
    if (!(fabs(got - want) <= 1e-12 * want))
        fail_msg("KL with an empty last bin under outliers: got %.17g, expected %.17g", got, want);
    /* Nothing kept at all: infinite, never chosen. */
    const double empty_head[] = {0, 0, 0, 5};
    assert_true(isinf(qat_observer_kl_divergence(empty_head, 4, 2, 2)));
    assert_int_equal(qat_observer_kl_threshold_bin(empty_head, 4, 2, &kl), 4);
    /* Thresholds inside a gap tie in exact arithmetic (i = 16, 17, 18 here: their extra
     * bins are empty, grouped differently): the smallest one wins. */
    double sparse[64] = {0};
    for (int j = 0; j < 8; j++) sparse[j] = 1000 >> j;
    sparse[60] = 1;
    const double d16 = qat_observer_kl_divergence(sparse, 64, 16, 16);
    const double d18 = qat_observer_kl_divergence(sparse, 64, 16, 18);
    if (!(fabs(d16 - d18) <= 1e-12 * d16)) fail_msg("KL i = 16: %.17g, i = 18: %.17g", d16, d18);
    assert_int_equal(qat_observer_kl_threshold_bin(sparse, 64, 16, &kl), 16);
}

static void test_kl_gaussian_outliers(void **state) {
    (void)state;
    enum { N = 20000, NOUT = 8 };
    float *x = malloc((N + NOUT) * sizeof *x);
    qat_rng r;
    qat_rng_init(&r, 2024);
    for (int i = 0; i < N; i++) x[i] = qat_rng_normal(&r);
    for (int i = 0; i < NOUT; i++) x[N + i] = (i % 2 ? -1.0f : 1.0f) * (30.0f + (float)i);
    qat_observer o;
    observer_new(&o, QAT_OBSERVER_KL, 0);
    qat_observer_update(&o, x, N + NOUT);
    const float maxabs = 37.0f, w = (float)qat_observer_bin_width(&o);
    float lo, hi, lo4, hi4;
    qat_observer_range(&o, -128, 127, true, &lo, &hi);
    if (!(hi < 0.25f * maxabs && hi >= 127 * w && lo == -hi))
        fail_msg("KL int8 symmetric: [%g, %g]; expected -lo = hi in [%g, %g) (clipping the "
                 "outliers at +-30..37, at least 127 bins)",
                 (double)lo, (double)hi, (double)(127 * w), (double)(0.25f * maxabs));
    /* Negatives present: asymmetric is [-T, T] too. */
    check_range(&o, -128, 127, false, lo, hi, 0, "KL asymmetric with negatives");
    /* 4 bits: fewer levels, no wider range. */
    qat_observer_range(&o, -8, 7, true, &lo4, &hi4);
    if (!(hi4 <= hi && hi4 > 0))
        fail_msg("KL 4-bit: hi %g, expected in (0, %g] (the 8-bit threshold)", (double)hi4,
                 (double)hi);

    /* Post-ReLU data: half the values are 0. That spike in bin 0 must not decide the
     * threshold (it made the narrowest candidate win whatever it clipped), so without
     * outliers the range keeps nearly all of the data. */
    for (int i = 0; i < N + NOUT; i++) x[i] = i < N ? fmaxf(x[i], 0.0f) : 0.0f;
    float relu_max = 0;
    for (int i = 0; i < N; i++) relu_max = fmaxf(relu_max, x[i]);
    qat_observer_reset(&o);
    qat_observer_update(&o, x, N + NOUT);
    qat_observer_range(&o, -128, 127, false, &lo, &hi);
    if (!(lo == 0.0f && hi > 0.75f * relu_max && hi <= relu_max))
        fail_msg("KL post-ReLU: [%g, %g]; expected [0, T] with %g < T <= %g", (double)lo, (double)hi,
                 (double)(0.75f * relu_max), (double)relu_max);
    /* 4 bits (16 levels) on the same data clips more, but not down to the spike. */
    qat_observer_range(&o, -8, 7, false, &lo4, &hi4);
    if (!(lo4 == 0.0f && hi4 <= hi && hi4 > 0.25f * relu_max))
        fail_msg("KL post-ReLU 4-bit: [%g, %g]; expected (%g, %g]", (double)lo4, (double)hi4,
                 (double)(0.25f * relu_max), (double)hi);
    qat_observer_free(&o);
    free(x);
}

/* ---- MSE ------------------------------------------------------------------------------ */

/* The spec's fake-quant, written out here independently of the observer. */
static float spec_fake_quant(float x, float lo, float hi, int qmin, int qmax, bool sym) {
    float scale;
    int zp = 0;
    if (sym) {
        scale = fmaxf(-lo, hi) / (float)qmax;
    } else {
        scale = (hi - lo) / (float)(qmax - qmin);
        long z = qmin - lroundf(lo / scale);
        zp = (int)(z < qmin ? qmin : z > qmax ? qmax : z);
    }
    float q = roundf(x / scale) + (float)zp;
    q = fminf(fmaxf(q, (float)qmin), (float)qmax);
    return scale * (q - (float)zp);
}

/* Data spread evenly (32 points per bin, symmetric in each bin), so the histogram's
 * "uniform within a bin" is nearly exact: the integrated error must match the average of
 * (x - fq(x))^2 over the data, with clipping and without. */
static void test_mse_error_integral(void **state) {
    (void)state;
    enum { N = 1 << 16 };
    float *x = malloc(N * sizeof *x);
    for (int i = 0; i < N; i++) x[i] = -0.75f + 1.5f * ((float)i + 0.5f) / N; /* (-0.75, 0.75) */
    qat_observer o;
    observer_new(&o, QAT_OBSERVER_MSE, 0);
    qat_observer_update(&o, x, N);
    const struct {
        float lo, hi;
        int qmin, qmax;
        bool sym;
    } cases[] = {
        {-0.75f, 0.75f, -128, 127, true},  {-0.2f, 0.2f, -128, 127, true},
        {-0.5f, 0.6f, -8, 7, false},       {-0.1f, 0.7f, -128, 127, false},
        {0.0f, 0.3f, -2, 1, false},        {-0.0375f, 0.0375f, -128, 127, true},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        double brute = 0.0;
        for (int i = 0; i < N; i++) {
            double d = (double)x[i] - spec_fake_quant(x[i], cases[k].lo, cases[k].hi,
                                                      cases[k].qmin, cases[k].qmax, cases[k].sym);
            brute += d * d;
        }
        brute /= N;
        double got = qat_observer_mse_error(&o, cases[k].lo, cases[k].hi, cases[k].qmin,
                                            cases[k].qmax, cases[k].sym);
        if (!(fabs(got - brute) <= 0.01 * brute))
            fail_msg("MSE of [%g, %g] in [%d, %d]%s: integrated %.9g, brute force %.9g",
                     (double)cases[k].lo, (double)cases[k].hi, cases[k].qmin, cases[k].qmax,
                     cases[k].sym ? " symmetric" : "", got, brute);
    }
    qat_observer_free(&o);
    free(x);
}

/* A single outlier M among N values: keeping it costs about (M / qmax)^2 / 12 per value
 * in rounding error (M sets the step), clipping it costs about M^2 / N, so the MSE
 * optimum clips only when N > 12 qmax^2 (about 194k for 8 bits, 588 for 4). Hence
 * 400k values: a far outlier in a smaller sample is, by this criterion, worth keeping. */
static void test_mse_laplace_outlier(void **state) {
    (void)state;
    enum { N = 400000 };
    float *x = malloc((N + 1) * sizeof *x);
    qat_rng r;
    qat_rng_init(&r, 77);
    for (int i = 0; i < N; i++) x[i] = laplace(&r, 1.0f);
    x[N] = 100.0f;
    qat_observer o;
    observer_new(&o, QAT_OBSERVER_MSE, 0);
    qat_observer_update(&o, x, N + 1);
    /* Asymmetric candidates shrink both ends by the same factor, so the outlier's end is
     * cut less there; 4 bits clip hardest. */
    const struct {
        int qmin, qmax;
        bool sym;
        float hi_below;
    } q[] = {{-128, 127, true, 50.0f}, {-128, 127, false, 80.0f}, {-8, 7, true, 20.0f}};
    for (int k = 0; k < 3; k++) {
        float lo, hi;
        qat_observer_range(&o, q[k].qmin, q[k].qmax, q[k].sym, &lo, &hi);
        const double e = qat_observer_mse_error(&o, lo, hi, q[k].qmin, q[k].qmax, q[k].sym);
        const double e_full = qat_observer_mse_error(&o, q[k].sym ? -100.0f : o.min, 100.0f,
                                                     q[k].qmin, q[k].qmax, q[k].sym);
        if (!(hi > 1.0f && hi < q[k].hi_below && lo < 0.0f && e < e_full))
            fail_msg("MSE Laplace + outlier, [%d, %d]%s: [%g, %g] (error %g, full range %g); "
                     "expected 1 < hi < %g, below the outlier at 100",
                     q[k].qmin, q[k].qmax, q[k].sym ? " symmetric" : "", (double)lo, (double)hi,
                     e, e_full, (double)q[k].hi_below);
        if (q[k].sym && lo != -hi) fail_msg("symmetric range [%g, %g]", (double)lo, (double)hi);
    }
    qat_observer_free(&o);
    free(x);
}

static void test_mse_uniform(void **state) {
    (void)state;
    enum { N = 20000 };
    float *x = malloc(N * sizeof *x);
    fill_uniform(x, N, -1.0f, 1.0f, 5);
    qat_observer o;
    observer_new(&o, QAT_OBSERVER_MSE, 0);
    qat_observer_update(&o, x, N);
    const float maxabs = fmaxf(-o.min, o.max);
    float lo, hi;
    qat_observer_range(&o, -128, 127, true, &lo, &hi);
    if (!(hi >= 0.97f * maxabs && hi <= maxabs))
        fail_msg("MSE uniform [-1, 1) symmetric: hi %g, expected about the max %g", (double)hi,
                 (double)maxabs);
    qat_observer_range(&o, -128, 127, false, &lo, &hi);
    if (!(hi >= 0.97f * o.max && lo <= 0.97f * o.min))
        fail_msg("MSE uniform [-1, 1): [%g, %g], expected about [%g, %g]", (double)lo, (double)hi,
                 (double)o.min, (double)o.max);
    /* All positive: lo stays 0. */
    fill_uniform(x, N, 0.0f, 1.0f, 6);
    qat_observer_reset(&o);
    qat_observer_update(&o, x, N);
    qat_observer_range(&o, -128, 127, false, &lo, &hi);
    if (!(lo == 0.0f && hi >= 0.97f * o.max))
        fail_msg("MSE uniform [0, 1): [%g, %g], expected about [0, %g]", (double)lo, (double)hi,
                 (double)o.max);
    qat_observer_free(&o);
    free(x);
}

#define KL_FIXTURE(c) {"test_kl_fixture " c, test_kl_fixture, NULL, NULL, (void *)(c)}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kind_names),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_invalid_config),
        cmocka_unit_test(test_minmax),
        cmocka_unit_test(test_ema),
        cmocka_unit_test(test_nonfinite),
        cmocka_unit_test(test_hist_zero_and_first_range),
        cmocka_unit_test(test_hist_growth),
        cmocka_unit_test(test_percentile_uniform),
        KL_FIXTURE("kl_sym"),
        KL_FIXTURE("kl_relu"),
        KL_FIXTURE("kl_4bit"),
        KL_FIXTURE("kl_gap"),
        KL_FIXTURE("kl_tiny"),
        cmocka_unit_test(test_kl_edges),
        cmocka_unit_test(test_kl_gaussian_outliers),
        cmocka_unit_test(test_mse_error_integral),
        cmocka_unit_test(test_mse_laplace_outlier),
        cmocka_unit_test(test_mse_uniform),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
