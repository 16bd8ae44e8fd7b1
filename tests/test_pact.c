/* test_pact.c - PACT, the learned clipping level with fake quantization (quant/pact.h).
 *
 *  - forward values computed by hand: the clip at both ends, exact ties rounding away
 *    from zero (where half-to-even would differ), bits = 0, 1, 2, 8 and 16, infinities
 *    and NaN;
 *  - the fast kernel equals the spec's formula clamp(roundf(v / scale), 0, 2^b - 1)
 *    exactly, on every rounding tie (and its float neighbours) of many (alpha, bits),
 *    and a multiply by 1 / scale would not (a known counterexample);
 *  - backward: the STE mask (0 < x < alpha), alpha's gradient (x >= alpha), the same for
 *    every bits, accumulation with +=, and the decay term;
 *  - finite differences, with quantization off (bits = 0, a plain clip): on x with the
 *    kinks masked, and on alpha (in double, written here) with and without decay. With
 *    quantization on, the true derivative is 0 or infinite and the STE is a choice, not a
 *    derivative: it is checked against its formula instead (and against PyTorch);
 *  - PyTorch (tests/fixtures/quant_ops.bin, cases "pact", 4 bits, and "pact_clip");
 *  - errors: alpha <= 0, subnormal, NaN or inf (QAT_STATUS_NUMERIC, message naming pact
 *    and the value), bits and decay out of range, alpha with two elements; inference
 *    mode; only x or only alpha needing a gradient; NULL input.
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "quant/pact.h"
#include "testutil.h"

#define FD_EPS 1e-2f
#define FD_RTOL 1e-2
#define FD_ATOL 1e-3

/* The spec's formula, written as literally as possible: the reference the fast kernel
 * must equal. */
static float ref_pact(float x, float alpha, int bits) {
    float v = x < 0.0f ? 0.0f : x > alpha ? alpha : x;
    if (bits == 0) return v;
    float levels = (float)((1 << bits) - 1);
    float scale = alpha / levels;
    float q = roundf(v / scale);
    q = q < 0.0f ? 0.0f : q > levels ? levels : q;
    return q * scale;
}

static qat_tensor *new_alpha(float a) {
    qat_tensor *t = test_tensor_new(1, (int[]){1});
    t->data[0] = a;
    return t;
}

static qat_tensor *new_from(const float *v, int n) {
    qat_tensor *t = test_tensor_new(1, (int[]){n});
    memcpy(t->data, v, (size_t)n * sizeof(float));
    return t;
}


/* ---- forward values ----------------------------------------------------------------- */

static void check_forward(const float *x, const float *want, int n, float alpha, int bits,
                          const char *what) {
    float out[32];
    QAT_ASSERT(n <= 32);
    qat_pact_forward(out, x, alpha, bits, (size_t)n);
    assert_same(out, want, x, (size_t)n, what);
    /* The tape op gives the same. */
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    qat_tensor *xt = new_from(x, n), *at = new_alpha(alpha);
    qat_tensor *y = qat_pact(&t, xt, at, bits, 0.0f);
    if (!y) fail_msg("%s: qat_pact failed: %s", what, t.err.msg);
    assert_shape(y, 1, (int[]){n}, what);
    assert_same(y->data, want, x, (size_t)n, what);
    test_tensor_free(xt);
    test_tensor_free(at);
    qat_tape_free(&t);
}

static void test_pact_forward_values(void **state) {
    (void)state;
    const float inf = INFINITY, nan = NAN;
    {
        /* 2 bits, alpha 1.5: scale 0.5 exactly, levels 0, 0.5, 1, 1.5. 0.25 and 1.25 are
         * the ties 0.5 and 2.5: away from zero gives 1 and 3 (half to even: 0 and 2). */
        const float x[] = {-1, -0.0f, 0, 0.1f, 0.25f, 0.5f, 0.75f, 1.0f, 1.25f, 1.4f, 1.5f,
                           2, 1e30f, -inf, inf, nan};
        const float y[] = {0, 0, 0, 0, 0.5f, 0.5f, 1.0f, 1.0f, 1.5f, 1.5f, 1.5f,
                           1.5f, 1.5f, 0, 1.5f, nan};
        check_forward(x, y, 16, 1.5f, 2, "pact 2 bits, alpha 1.5");
    }
    {
        /* 8 bits, alpha 255/128: scale 1/128 exactly. Ties at 0.5, 2.5 and 254.5 steps. */
        const float x[] = {0.5f / 128, 2.5f / 128, 254.5f / 128, 0.49f / 128, 100.2f / 128,
                           -3, 3, 1.9921875f};
        const float y[] = {1.0f / 128, 3.0f / 128, 1.9921875f, 0, 100.0f / 128,
                           0, 1.9921875f, 1.9921875f};
        check_forward(x, y, 8, 1.9921875f, 8, "pact 8 bits, alpha 255/128");
    }
    {
        /* 1 bit, alpha 2: two levels, 0 and 2; the tie is x = 1. */
        const float x[] = {0.999f, 1.0f, 1.5f, 3, -2};
        const float y[] = {0, 2, 2, 2, 0};
        check_forward(x, y, 5, 2.0f, 1, "pact 1 bit, alpha 2");
    }
    {
        /* 16 bits, alpha 65535/1024: scale 1/1024 exactly. */
        const float a = 65535.0f / 1024;
        const float x[] = {0.5f / 1024, 1.5f / 1024, 65534.5f / 1024, 70, 12345.25f / 1024};
        const float y[] = {1.0f / 1024, 2.0f / 1024, a, a, 12345.0f / 1024};
        check_forward(x, y, 5, a, 16, "pact 16 bits, alpha 65535/1024");
    }
    {
        /* bits = 0: the clip alone, no rounding. */
        const float x[] = {-1, 0.3f, 1.7f, 2.5f, 1.69999f, 1e-30f, -inf, inf, nan};
        const float y[] = {0, 0.3f, 1.7f, 1.7f, 1.69999f, 1e-30f, 0, 1.7f, nan};
        check_forward(x, y, 9, 1.7f, 0, "pact bits 0 (plain clip)");
    }
}

/* ---- the fast kernel is the formula ------------------------------------------------- */

/* For each (alpha, bits): every tie k + 0.5 (all k up to 4096 levels, every 7th above)
 * approached from both sides by 4 ulps of v, plus values from below 0 to above alpha.
 * Counts the exact ties v / scale == k + 0.5 met, so the test proves it covered them. */
static void test_pact_forward_matches_formula(void **state) {
    (void)state;
    const float alphas[] = {1.7f, 0.37f, 6.0f, 1e-3f, 123.4f, 1.9921875f, 1.0f, 3.0f};
    const int bits_list[] = {1, 2, 3, 4, 5, 7, 8, 12, 16};
    enum { CAP = 1 << 16 };
    float *x = malloc(CAP * sizeof(float)), *got = malloc(CAP * sizeof(float));
    long exact_ties = 0, total = 0;
    for (size_t ai = 0; ai < sizeof alphas / sizeof *alphas; ai++)
        for (size_t bi = 0; bi < sizeof bits_list / sizeof *bits_list; bi++) {
            float alpha = alphas[ai];
            int bits = bits_list[bi], levels = (1 << bits) - 1;
            float scale = alpha / (float)levels;
            int kstep = levels > 4096 ? 7 : 1;
            size_t n = 0;
            for (int k = 0; k < levels && n + 9 <= CAP - 64; k += kstep) {
                float v = (float)(((double)k + 0.5) * (double)scale);
                for (int u = 0; u < 4; u++) v = nextafterf(v, 0.0f);
                for (int u = 0; u < 9; u++, v = nextafterf(v, INFINITY)) {
                    x[n++] = v;
                    if (v / scale == (float)k + 0.5f) exact_ties++;
                }
            }
            for (int j = 0; j < 64; j++) x[n++] = alpha * ((float)j / 32.0f - 0.5f);
            qat_pact_forward(got, x, alpha, bits, n);
            for (size_t i = 0; i < n; i++) {
                float want = ref_pact(x[i], alpha, bits);
                if (!(got[i] == want))
                    fail_msg("pact alpha %.9g bits %d: x = %a (%.9g): got %.9g, the formula "
                             "gives %.9g",
                             (double)alpha, bits, (double)x[i], (double)x[i], (double)got[i],
                             (double)want);
            }
            total += (long)n;
        }
    if (exact_ties < 1000)
        fail_msg("only %ld exact ties among %ld values: the test does not cover rounding",
                 exact_ties, total);
    free(x);
    free(got);
}

/* Why the kernel divides: a value where v * (1 / scale) and v / scale round apart. */
static void test_pact_reciprocal_would_differ(void **state) {
    (void)state;
    const float alpha = 1.7f, scale = alpha / 15.0f;
    const float v = 0x1.ed3a06p-1f;
    assert_true(roundf(v / scale) == 8.0f);
    assert_true(roundf(v * (1.0f / scale)) == 9.0f);
    float y;
    qat_pact_forward(&y, &v, alpha, 4, 1);
    assert_true(y == 8.0f * scale);
}

/* ---- backward: the STE -------------------------------------------------------------- */

static void test_pact_ste_mask(void **state) {
    (void)state;
    enum { N = 9 };
    /* alpha = 1.7: x == 0 and x == alpha are the kinks (0 gets nothing; alpha's goes to
     * alpha); NaN gets nothing. */
    const float x[N] = {-1, 0, 0.3f, 1.0f, 1.7f, 2.0f, -0.0f, 1.69f, NAN};
    const float dout[N] = {1, 2, 4, 8, 16, 32, 64, 128, 256};
    const float want_dx[N] = {0, 0, 4, 8, 0, 0, 0, 128, 0};
    const float want_dalpha = 16 + 32;
    const int bits_list[] = {0, 1, 4, 8, 16};
    for (size_t b = 0; b < sizeof bits_list / sizeof *bits_list; b++) {
        qat_tape t;
        qat_tape_init(&t, 1 << 16);
        qat_tensor *xt = new_from(x, N), *at = new_alpha(1.7f);
        qat_tensor *y = qat_pact(&t, xt, at, bits_list[b], 0.0f);
        assert_non_null(y);
        assert_non_null(y->grad);
        assert_int_equal(t.n_nodes, 1);
        assert_int_equal(qat_tape_backward_seeded(&t, y, dout), QAT_STATUS_OK);
        char what[64];
        snprintf(what, sizeof what, "pact dx, %d bits", bits_list[b]);
        assert_close(xt->grad, want_dx, N, 0, 0, what);
        snprintf(what, sizeof what, "pact dalpha, %d bits", bits_list[b]);
        assert_close(at->grad, &want_dalpha, 1, 0, 0, what);
        /* A second backward accumulates. */
        qat_tape_reset(&t);
        y = qat_pact(&t, xt, at, bits_list[b], 0.0f);
        assert_int_equal(qat_tape_backward_seeded(&t, y, dout), QAT_STATUS_OK);
        float twice[N], twice_a = 2 * want_dalpha;
        for (int i = 0; i < N; i++) twice[i] = 2 * want_dx[i];
        assert_close(xt->grad, twice, N, 0, 0, "pact dx accumulates");
        assert_close(at->grad, &twice_a, 1, 0, 0, "pact dalpha accumulates");
        test_tensor_free(xt);
        test_tensor_free(at);
        qat_tape_free(&t);
    }
    /* The raw kernel: += into given outputs, NULL skips. */
    float dx[N], da = 5.0f;
    for (int i = 0; i < N; i++) dx[i] = 1.0f;
    qat_pact_backward(dx, &da, dout, x, 1.7f, N);
    for (int i = 0; i < N; i++)
        if (dx[i] != 1.0f + want_dx[i]) fail_msg("pact_backward dx[%d] = %g", i, (double)dx[i]);
    assert_true(da == 5.0f + want_dalpha);
    qat_pact_backward(NULL, &da, dout, x, 1.7f, N);
    assert_true(da == 5.0f + 2 * want_dalpha);
    qat_pact_backward(dx, NULL, dout, x, 1.7f, N);
    for (int i = 0; i < N; i++) assert_true(dx[i] == 1.0f + 2 * want_dx[i]);
}

/* bits > 0 on random data: dx and dalpha equal the STE formula, computed here. */
static void test_pact_ste_formula_random(void **state) {
    (void)state;
    enum { N = 500 };
    qat_tensor *x = test_tensor_filled(2, (int[]){20, 25}, -2, 4, 31);
    qat_tensor *a = new_alpha(1.3f);
    float w[N];
    fill_uniform(w, N, -1, 1, 32);
    const int bits_list[] = {2, 4, 8};
    for (size_t b = 0; b < 3; b++) {
        memset(x->grad, 0, N * sizeof(float));
        a->grad[0] = 0;
        qat_tape t;
        qat_tape_init(&t, 1 << 16);
        qat_tensor *y = qat_pact(&t, x, a, bits_list[b], 0.0f);
        assert_non_null(y);
        assert_int_equal(qat_tape_backward_seeded(&t, y, w), QAT_STATUS_OK);
        double sa = 0;
        int above = 0;
        for (int i = 0; i < N; i++) {
            float xi = x->data[i];
            float want = xi > 0 && xi < 1.3f ? w[i] : 0.0f;
            if (x->grad[i] != want)
                fail_msg("pact %d bits: dx[%d] = %g, expected %g (x = %g)", bits_list[b], i,
                         (double)x->grad[i], (double)want, (double)xi);
            if (xi >= 1.3f) sa += w[i], above++;
        }
        assert_true(above > 50);
        if (fabs(a->grad[0] - sa) > 1e-5 * (1 + fabs(sa)))
            fail_msg("pact %d bits: dalpha = %.9g, expected %.9g", bits_list[b],
                     (double)a->grad[0], sa);
        qat_tape_free(&t);
    }
    test_tensor_free(x);
    test_tensor_free(a);
}

static void test_pact_decay(void **state) {
    (void)state;
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    const float x[4] = {-1, 0.5f, 1.5f, 3};
    const float dout[4] = {1, 1, 1, 1};
    qat_tensor *xt = new_from(x, 4), *at = new_alpha(2.0f);
    /* x = 3 is above alpha: dalpha = 1 + 0.25 * 2. */
    qat_tensor *y = qat_pact(&t, xt, at, 4, 0.25f);
    assert_int_equal(qat_tape_backward_seeded(&t, y, dout), QAT_STATUS_OK);
    assert_true(at->grad[0] == 1.5f);
    /* Two uses of alpha in one graph: the decay term twice. */
    at->grad[0] = 0;
    qat_tape_reset(&t);
    y = qat_pact(&t, xt, at, 4, 0.25f);
    qat_tensor *y2 = qat_pact(&t, y, at, 0, 0.25f);
    assert_int_equal(qat_tape_backward_seeded(&t, y2, dout), QAT_STATUS_OK);
    /* x = 3 gives y[3] = 15 * fl(2 / 15), at alpha or within an ulp of it: its dout
     * reaches alpha once, through the second pact (y[3] >= alpha) or through the first
     * (y[3] < alpha passes it back to x = 3 >= alpha). The decay term twice: 0.5 + 0.5. */
    assert_true(at->grad[0] == 2.0f);
    test_tensor_free(xt);
    test_tensor_free(at);
    qat_tape_free(&t);
}

/* ---- finite differences (bits = 0) -------------------------------------------------- */

typedef struct pact_args {
    qat_tensor *x, *alpha;
    int bits;
    float decay;
} pact_args;

static qat_tensor *pact_fd_forward(qat_tape *t, void *user) {
    pact_args *a = user;
    return qat_pact(t, a->x, a->alpha, a->bits, a->decay);
}

static bool pact_kink(void *user, const qat_tensor *x, size_t i, float eps) {
    pact_args *a = user;
    float v = x->data[i];
    return fabsf(v) < 2 * eps || fabsf(v - a->alpha->data[0]) < 2 * eps;
}

/* n values in [lo, hi), each at least `gap` from 0 and from alpha. */
static qat_tensor *new_away(int n, float lo, float hi, float alpha, float gap, uint64_t seed) {
    qat_tensor *x = test_tensor_new(1, (int[]){n});
    fill_uniform(x->data, (size_t)n, lo, hi, seed);
    const float kinks[2] = {0, alpha};
    for (int i = 0; i < n; i++)
        for (int k = 0; k < 2; k++)
            if (fabsf(x->data[i] - kinks[k]) < gap)
                x->data[i] = kinks[k] + (x->data[i] >= kinks[k] ? gap : -gap);
    return x;
}

static void test_pact_fd_x(void **state) {
    (void)state;
    pact_args a = {new_away(80, -1, 3, 1.7f, 0.05f, 41), new_alpha(1.7f), 0, 0.0f};
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    fd_check(&t, pact_fd_forward, &a, a.x, FD_EPS, FD_RTOL, FD_ATOL, 0, pact_kink,
             "pact (bits 0) dx");
    qat_tape_free(&t);
    test_tensor_free(a.x);
    test_tensor_free(a.alpha);
}

/* L(alpha) = sum_i w_i y_i + decay / 2 alpha^2, in double. */
static double pact_loss(qat_tape *t, pact_args *a, const float *w) {
    qat_tape_reset(t);
    qat_tensor *y = pact_fd_forward(t, a);
    if (!y) fail_msg("pact forward failed: %s", t->err.msg);
    double s = 0;
    for (size_t i = 0; i < y->n; i++) s += (double)w[i] * (double)y->data[i];
    double al = a->alpha->data[0];
    return s + 0.5 * (double)a->decay * al * al;
}

static void run_alpha_fd(float decay) {
    enum { N = 120 };
    pact_args a = {new_away(N, -1, 3, 1.7f, 0.05f, 42), new_alpha(1.7f), 0, decay};
    float w[N];
    fill_uniform(w, N, -1, 1, 43);
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    qat_tape_reset(&t);
    qat_tensor *y = pact_fd_forward(&t, &a);
    assert_int_equal(qat_tape_backward_seeded(&t, y, w), QAT_STATUS_OK);
    double analytic = a.alpha->grad[0];
    const float orig = a.alpha->data[0];
    a.alpha->data[0] = orig + FD_EPS;
    double lp = pact_loss(&t, &a, w);
    a.alpha->data[0] = orig - FD_EPS;
    double lm = pact_loss(&t, &a, w);
    a.alpha->data[0] = orig;
    double numeric = (lp - lm) / ((double)(orig + FD_EPS) - (double)(orig - FD_EPS));
    if (!(fabs(analytic - numeric) <= 1e-3 + 1e-3 * fabs(numeric)))
        fail_msg("pact (bits 0, decay %g) dalpha: analytic %.7g, finite difference %.7g",
                 (double)decay, analytic, numeric);
    if (fabs(numeric) < 0.1) fail_msg("pact dalpha FD: degenerate data (%g)", numeric);
    qat_tape_free(&t);
    test_tensor_free(a.x);
    test_tensor_free(a.alpha);
}

static void test_pact_fd_alpha(void **state) {
    (void)state;
    run_alpha_fd(0.0f);
    run_alpha_fd(0.3f);
}

/* ---- PyTorch ------------------------------------------------------------------------ */

static void check_fixture_case(const qat_fixture *fx, const char *c) {
    qat_tensor *x = fixture_tensor(fx, c, "x");
    qat_tensor *alpha = fixture_tensor(fx, c, "alpha");
    const float *cfg = fixture_field(fx, c, "cfg", 2);
    qat_tape t;
    qat_tape_init(&t, 0);
    qat_tensor *y = qat_pact(&t, x, alpha, (int)cfg[0], cfg[1]);
    if (!y) fail_msg("%s: pact failed: %s", c, t.err.msg);
    assert_shape(y, x->ndim, x->shape, c);
    fixture_check(fx, c, "y", y->data, y->n);
    if (qat_tape_backward_seeded(&t, y, fixture_field(fx, c, "dout", y->n)) != QAT_STATUS_OK)
        fail_msg("%s: backward failed: %s", c, t.err.msg);
    fixture_check(fx, c, "dx", x->grad, x->n);
    fixture_check(fx, c, "dalpha", alpha->grad, 1);
    qat_tape_free(&t);
    test_tensor_free(x);
    test_tensor_free(alpha);
}

static void test_pact_fixture(void **state) {
    (void)state;
    qat_fixture *fx = fixture_load("quant_ops.bin");
    assert_int_equal((int)fixture_field(fx, "pact", "cfg", 2)[0], 4);
    check_fixture_case(fx, "pact");
    check_fixture_case(fx, "pact_clip");
    fixture_free(fx);
}

/* ---- errors, inference, partial gradients ------------------------------------------- */

static void expect_alpha_error(float a) {
    char value_text[32];
    snprintf(value_text, sizeof value_text, "%g", (double)a);
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    qat_tensor *x = test_tensor_filled(2, (int[]){2, 3}, -1, 1, 51), *at = new_alpha(a);
    qat_tensor *y = qat_pact(&t, x, at, 4, 0.0f);
    char what[64];
    snprintf(what, sizeof what, "pact with alpha %s", value_text);
    assert_op_failed(&t, y, "pact", what);
    assert_int_equal(t.err.status, QAT_STATUS_NUMERIC);
    if (!strstr(t.err.msg, value_text))
        fail_msg("%s: message \"%s\" does not show the value %s", what, t.err.msg, value_text);
    assert_int_equal(t.n_nodes, 0);
    qat_tape_free(&t);
    test_tensor_free(x);
    test_tensor_free(at);
}

static void expect_error(qat_tensor *x, qat_tensor *a, int bits, float decay, qat_status s,
                         const char *what) {
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    qat_tensor *y = qat_pact(&t, x, a, bits, decay);
    assert_op_failed(&t, y, "pact", what);
    if (t.err.status != s)
        fail_msg("%s: status %s, expected %s (%s)", what, qat_status_str(t.err.status),
                 qat_status_str(s), t.err.msg);
    qat_tape_free(&t);
}

static void test_pact_errors(void **state) {
    (void)state;
    expect_alpha_error(0.0f);
    expect_alpha_error(-1.5f);
    expect_alpha_error(NAN);
    expect_alpha_error(INFINITY);
    expect_alpha_error(1e-40f); /* subnormal: alpha / (2^bits - 1) could round to 0 */

    qat_tensor *x = test_tensor_filled(2, (int[]){2, 3}, -1, 1, 52), *a = new_alpha(1.0f);
    expect_error(x, a, 17, 0.0f, QAT_STATUS_INVALID_ARG, "pact with 17 bits");
    expect_error(x, a, -1, 0.0f, QAT_STATUS_INVALID_ARG, "pact with -1 bits");
    expect_error(x, a, 4, -0.1f, QAT_STATUS_INVALID_ARG, "pact with decay -0.1");
    expect_error(x, a, 4, NAN, QAT_STATUS_INVALID_ARG, "pact with decay NaN");
    qat_tensor *a2 = test_tensor_new(1, (int[]){2});
    a2->data[0] = a2->data[1] = 1.0f;
    expect_error(x, a2, 4, 0.0f, QAT_STATUS_SHAPE, "pact with a two-element alpha");

    /* NULL propagates without a new message. */
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    assert_null(qat_pact(&t, NULL, a, 4, 0.0f));
    assert_int_equal(t.err.status, QAT_STATUS_OK);
    qat_tape_free(&t);
    test_tensor_free(x);
    test_tensor_free(a);
    test_tensor_free(a2);
}

static void test_pact_inference_and_partial_grads(void **state) {
    (void)state;
    const float xv[4] = {-1, 0.5f, 1.5f, 3};
    const float dout[4] = {1, 2, 4, 8};
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    qat_tensor *x = new_from(xv, 4), *a = new_alpha(2.0f);

    t.grad_enabled = false;
    qat_tensor *y = qat_pact(&t, x, a, 4, 0.1f);
    assert_non_null(y);
    assert_null(y->grad);
    assert_int_equal(t.n_nodes, 0);
    t.grad_enabled = true;

    /* x is an input without gradient (the first layer's): alpha still learns. */
    qat_tape_reset(&t);
    qat_tensor *xin = qat_tape_input(&t, 1, (int[]){4}, xv);
    y = qat_pact(&t, xin, a, 4, 0.0f);
    assert_non_null(y->grad);
    assert_int_equal(qat_tape_backward_seeded(&t, y, dout), QAT_STATUS_OK);
    assert_true(a->grad[0] == 8.0f);

    /* alpha frozen (no gradient): x still gets its gradient, and no decay is added. */
    qat_tape_reset(&t);
    float *saved = a->grad;
    a->grad = NULL;
    y = qat_pact(&t, x, a, 4, 0.1f);
    assert_int_equal(qat_tape_backward_seeded(&t, y, dout), QAT_STATUS_OK);
    const float want_dx[4] = {0, 2, 4, 0};
    assert_close(x->grad, want_dx, 4, 0, 0, "pact dx with alpha frozen");
    a->grad = saved;

    qat_tape_free(&t);
    test_tensor_free(x);
    test_tensor_free(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pact_forward_values),
        cmocka_unit_test(test_pact_forward_matches_formula),
        cmocka_unit_test(test_pact_reciprocal_would_differ),
        cmocka_unit_test(test_pact_ste_mask),
        cmocka_unit_test(test_pact_ste_formula_random),
        cmocka_unit_test(test_pact_decay),
        cmocka_unit_test(test_pact_fd_x),
        cmocka_unit_test(test_pact_fd_alpha),
        cmocka_unit_test(test_pact_fixture),
        cmocka_unit_test(test_pact_errors),
        cmocka_unit_test(test_pact_inference_and_partial_grads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
