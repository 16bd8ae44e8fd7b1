/* test_lsq.c - LSQ, fake quantization with a learned step (quant/lsq.h).
 *
 *  - forward values computed by hand: ties rounding away from zero on both signs,
 *    clamping at qmin and qmax, unsigned 4-bit, signed 8-bit, per channel, infinities,
 *    NaN and the sign of a zero;
 *  - the fast kernel equals the spec's formula clamp(roundf(x / s), qmin, qmax) * s on
 *    every tie (and its float neighbours) for many (s, qmin, qmax);
 *  - backward by hand: the strict STE mask, the step gradient (round(t) - t inside, qmin
 *    or qmax outside, times grad_scale), per tensor and per channel, accumulation;
 *  - the step gradient against finite differences of the true function: s * round(x / s)
 *    is piecewise constant in t, so away from the transitions its derivative in s is
 *    q = clamp(round(t)); the STE differs from it by exactly -t on the unclamped elements,
 *    and the test checks ds = FD - sum(dout * t over unclamped) (the STE itself, the
 *    derivative of round taken as 1, is a choice that no finite difference can check);
 *  - PyTorch, the paper's reference code (tests/fixtures/quant_ops.bin: unsigned 4-bit and
 *    signed 8-bit activations per tensor, 4-bit symmetric weights per channel), with the
 *    step-gradient scale and the initial step;
 *  - errors: a step <= 0 or non-finite (QAT_STATUS_NUMERIC naming lsq and the channel),
 *    a step that fits neither per tensor nor per channel (QAT_STATUS_SHAPE naming lsq and
 *    both shapes), a bad range or gradient scale; inference mode; partial gradients.
 */
#include <math.h>
#include <string.h>

#include "quant/lsq.h"
#include "testutil.h"

static float ref_lsq(float x, float s, int qmin, int qmax) {
    float q = roundf(x / s);
    q = q < (float)qmin ? (float)qmin : q > (float)qmax ? (float)qmax : q;
    return q * s;
}

/* ---- forward values ----------------------------------------------------------------- */

/* x is (n_scales, n / n_scales); checks the kernel and the tape op. */
static void check_forward(const float *x, const float *want, int n, const float *s,
                          int n_scales, int qmin, int qmax, const char *what) {
    float out[32];
    QAT_ASSERT(n <= 32 && n % n_scales == 0);
    qat_lsq_forward(out, x, s, n_scales, (size_t)(n / n_scales), qmin, qmax, (size_t)n);
    assert_same(out, want, x, (size_t)n, what);
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    qat_tensor *xt = test_tensor_from(2, (int[]){n_scales, n / n_scales}, x);
    qat_tensor *st = test_tensor_from(1, (int[]){n_scales}, s);
    qat_tensor *y = qat_lsq(&t, xt, st, qmin, qmax, 1.0f);
    if (!y) fail_msg("%s: qat_lsq failed: %s", what, t.err.msg);
    assert_shape(y, 2, xt->shape, what);
    assert_same(y->data, want, x, (size_t)n, what);
    test_tensor_free(xt);
    test_tensor_free(st);
    qat_tape_free(&t);
}

static void test_lsq_forward_values(void **state) {
    (void)state;
    const float inf = INFINITY, nan = NAN;
    {
        /* s = 0.5, [-4, 3]: ties +-0.5, -1.5, +-2.5 go away from zero (half to even would
         * give 0, -2, +-2); -4.5 rounds to -5 and clamps to -4, 3.5 to 4 and clamps to 3. */
        const float s = 0.5f;
        const float x[] = {0.25f, -0.25f, -0.75f, 1.25f, -1.25f, 10, -10, 1.75f, -2.25f,
                           0.1f, inf, -inf, nan};
        const float y[] = {0.5f, -0.5f, -1.0f, 1.5f, -1.5f, 1.5f, -2.0f, 1.5f, -2.0f,
                           0, 1.5f, -2.0f, nan};
        check_forward(x, y, 13, &s, 1, -4, 3, "lsq s 0.5 [-4, 3]");
    }
    {
        /* Unsigned 4 bits, s = 0.25: negatives clamp to 0; 15.5 -> 16 -> 15; 14.5 -> 15. */
        const float s = 0.25f;
        const float x[] = {-1, 0.125f, 3.875f, 3.625f, 100, 0.37f};
        const float y[] = {0, 0.25f, 3.75f, 3.75f, 3.75f, 0.25f};
        check_forward(x, y, 6, &s, 1, 0, 15, "lsq unsigned 4 bits");
    }
    {
        /* Signed 8 bits, s = 1/64: -128.5 -> -129 -> -128; 127.5 -> 128 -> 127. */
        const float s = 1.0f / 64;
        const float x[] = {-2, -128.5f / 64, 127.5f / 64, -127.5f / 64, 0.5f / 64, -0.5f / 64};
        const float y[] = {-2, -2, 127.0f / 64, -2, 1.0f / 64, -1.0f / 64};
        check_forward(x, y, 6, &s, 1, -128, 127, "lsq signed 8 bits");
    }
    {
        /* Per channel: (2, 3) with s = {0.5, 2}, [-4, 3]. */
        const float s[2] = {0.5f, 2.0f};
        const float x[] = {0.25f, 0.75f, 5, 1, 3, -100};
        const float y[] = {0.5f, 1.0f, 1.5f, 2, 4, -8};
        check_forward(x, y, 6, s, 2, -4, 3, "lsq per channel");
    }
    {
        /* roundf(-0.3) is -0.0: the kernel keeps the sign of that zero. */
        const float s = 1.0f, x = -0.3f;
        float y;
        qat_lsq_forward(&y, &x, &s, 1, 1, -8, 7, 1);
        assert_true(y == 0.0f && signbit(y));
    }
}

/* Every tie k + 0.5 from below qmin to above qmax (every 13th for wide ranges), each
 * approached by 4 ulps of x from both sides; counts the exact ties met. */
static void test_lsq_forward_matches_formula(void **state) {
    (void)state;
    const float steps[] = {0.1f, 0.025f, 1.0f / 64, 3.7f, 1e-3f, 0.3333f, 1.0f};
    const int ranges[][2] = {{-128, 127}, {-7, 7}, {0, 15}, {-8, 7}, {0, 255}, {-1, 1},
                             {-32768, 32767}, {0, 65535}, {-65536, 65536}};
    enum { CAP = 1 << 16 };
    float *x = malloc(CAP * sizeof(float)), *got = malloc(CAP * sizeof(float));
    long exact_ties = 0;
    for (size_t si = 0; si < sizeof steps / sizeof *steps; si++)
        for (size_t ri = 0; ri < sizeof ranges / sizeof *ranges; ri++) {
            const float s = steps[si];
            const int qmin = ranges[ri][0], qmax = ranges[ri][1];
            const int kstep = qmax - qmin > 2048 ? 13 : 1;
            size_t n = 0;
            for (long k = (long)qmin - 2; k <= (long)qmax + 1 && n + 9 <= CAP; k += kstep) {
                float v = (float)(((double)k + 0.5) * (double)s);
                for (int u = 0; u < 4; u++) v = nextafterf(v, -INFINITY);
                for (int u = 0; u < 9; u++, v = nextafterf(v, INFINITY)) {
                    x[n++] = v;
                    if (v / s == (float)k + 0.5f) exact_ties++;
                }
            }
            qat_lsq_forward(got, x, &s, 1, n, qmin, qmax, n);
            for (size_t i = 0; i < n; i++) {
                float want = ref_lsq(x[i], s, qmin, qmax);
                if (!(got[i] == want))
                    fail_msg("lsq s %.9g [%d, %d]: x = %a (%.9g): got %.9g, the formula "
                             "gives %.9g",
                             (double)s, qmin, qmax, (double)x[i], (double)x[i], (double)got[i],
                             (double)want);
            }
        }
    if (exact_ties < 1000) fail_msg("only %ld exact ties: rounding not covered", exact_ties);
    free(x);
    free(got);
}

/* ---- backward by hand --------------------------------------------------------------- */

static void test_lsq_backward_per_tensor(void **state) {
    (void)state;
    enum { N = 8 };
    /* s = 0.5, [-4, 3], grad_scale 0.5. t = x / s:
     *   1.5 -> 3 (at qmax: outside, ds term 3)      -2 -> -4 (at qmin: outside, -4)
     *   0.375 -> 0.75 (round 1: +0.25)              -0.625 -> -1.25 (round -1: +0.25)
     *   0.3 -> 0.6 (round 1: 1 - 0.6)               5 -> 10 (clamped: 3)
     *   -7 -> -14 (clamped: -4)                     0.25 -> 0.5 (a tie, round 1: +0.5) */
    const float x[N] = {1.5f, -2, 0.375f, -0.625f, 0.3f, 5, -7, 0.25f};
    const float dout[N] = {1, 2, 4, 8, 16, 32, 64, 128};
    const float want_dx[N] = {0, 0, 4, 8, 16, 0, 0, 128};
    const double t4 = (double)(0.3f / 0.5f);
    const double want_ds =
        0.5 * (1 * 3.0 + 2 * -4.0 + 4 * 0.25 + 8 * 0.25 + 16 * (1 - t4) + 32 * 3.0 + 64 * -4.0 +
               128 * 0.5);
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    qat_tensor *xt = test_tensor_from(1, (int[]){N}, x), *st = test_tensor_from(1, (int[]){1}, (float[]){0.5f});
    qat_tensor *y = qat_lsq(&t, xt, st, -4, 3, 0.5f);
    assert_non_null(y);
    assert_int_equal(t.n_nodes, 1);
    assert_int_equal(qat_tape_backward_seeded(&t, y, dout), QAT_STATUS_OK);
    assert_close(xt->grad, want_dx, N, 0, 0, "lsq dx (strict STE mask)");
    if (fabs(st->grad[0] - want_ds) > 1e-6 * fabs(want_ds))
        fail_msg("lsq ds = %.9g, expected %.9g", (double)st->grad[0], want_ds);
    /* A second backward accumulates. */
    qat_tape_reset(&t);
    y = qat_lsq(&t, xt, st, -4, 3, 0.5f);
    assert_int_equal(qat_tape_backward_seeded(&t, y, dout), QAT_STATUS_OK);
    float twice[N];
    for (int i = 0; i < N; i++) twice[i] = 2 * want_dx[i];
    assert_close(xt->grad, twice, N, 0, 0, "lsq dx accumulates");
    if (fabs(st->grad[0] - 2 * want_ds) > 2e-6 * fabs(want_ds))
        fail_msg("lsq ds after two backwards = %.9g, expected %.9g", (double)st->grad[0],
                 2 * want_ds);
    qat_tape_free(&t);
    test_tensor_free(xt);
    test_tensor_free(st);
}

static void test_lsq_backward_per_channel(void **state) {
    (void)state;
    /* (2, 4), s = {0.5, 2}, [-4, 3], grad_scale 0.5.
     * channel 0: t = 0.75 (+0.25), 3 (qmax), -6 (qmin), 0.5 (+0.5):
     *            ds = 0.5 (1 * 0.25 + 2 * 3 + 3 * -4 + 4 * 0.5) = -1.875, dx = 1 0 0 4
     * channel 1: t = 0.5 (+0.5), -1.25 (+0.25), 50 (qmax), -4 (qmin):
     *            ds = 0.5 (1 * 0.5 + 2 * 0.25 + 3 * 3 + 4 * -4) = -3, dx = 1 2 0 0 */
    const float x[8] = {0.375f, 1.5f, -3, 0.25f, 1, -2.5f, 100, -8};
    const float dout[8] = {1, 2, 3, 4, 1, 2, 3, 4};
    const float want_dx[8] = {1, 0, 0, 4, 1, 2, 0, 0};
    const float want_ds[2] = {-1.875f, -3.0f};
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    qat_tensor *xt = test_tensor_from(2, (int[]){2, 4}, x);
    qat_tensor *st = test_tensor_from(1, (int[]){2}, (float[]){0.5f, 2.0f});
    qat_tensor *y = qat_lsq(&t, xt, st, -4, 3, 0.5f);
    assert_non_null(y);
    assert_int_equal(qat_tape_backward_seeded(&t, y, dout), QAT_STATUS_OK);
    assert_close(xt->grad, want_dx, 8, 0, 0, "lsq per channel dx");
    assert_close(st->grad, want_ds, 2, 0, 0, "lsq per channel ds");
    /* The raw kernel: NULL outputs are skipped, given ones accumulate. */
    float ds[2] = {1, 1};
    qat_lsq_backward(NULL, ds, dout, x, st->data, 2, 4, -4, 3, 0.5f);
    assert_true(ds[0] == 1 + want_ds[0] && ds[1] == 1 + want_ds[1]);
    float dx[8] = {0};
    qat_lsq_backward(dx, NULL, dout, x, st->data, 2, 4, -4, 3, 0.5f);
    assert_close(dx, want_dx, 8, 0, 0, "lsq_backward dx only");
    qat_tape_free(&t);
    test_tensor_free(xt);
    test_tensor_free(st);
}

/* ---- the step gradient against the true function ------------------------------------ */

static void test_lsq_ds_against_fd(void **state) {
    (void)state;
    enum { C = 3, NP = 60, N = C * NP };
    const int qmin = -8, qmax = 7;
    const float s0[C] = {0.3f, 0.11f, 0.5f};
    const float eps_rel = 1e-3f, gap = 0.1f;
    qat_tensor *x = test_tensor_filled(2, (int[]){C, NP}, -4, 4, 61);
    qat_tensor *s = test_tensor_from(1, (int[]){C}, s0);
    /* Keep every t = x / s at least `gap` from the ties and from qmin and qmax; a relative
     * change eps_rel of s moves t by at most |t| eps_rel <= 0.04 < gap (|t| <= 40). */
    for (int c = 0; c < C; c++)
        for (int i = 0; i < NP; i++) {
            float *v = &x->data[c * NP + i];
            for (int it = 0; it < 10; it++) {
                double t = (double)(*v / s0[c]);
                double tie = fabs(t - floor(t) - 0.5), edge = fmin(fabs(t - qmin), fabs(t - qmax));
                if (tie >= gap && edge >= gap) break;
                *v += 3 * gap * s0[c];
            }
        }
    float w[N];
    fill_uniform(w, N, -1, 1, 62);
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    qat_tensor *y = qat_lsq(&t, x, s, qmin, qmax, 1.0f);
    assert_int_equal(qat_tape_backward_seeded(&t, y, w), QAT_STATUS_OK);
    int inside = 0, outside = 0;
    for (int c = 0; c < C; c++) {
        /* The STE's extra term: -sum dout * t over the unclamped elements. */
        double ste_extra = 0;
        for (int i = 0; i < NP; i++) {
            float tt = x->data[c * NP + i] / s0[c];
            if (tt > qmin && tt < qmax)
                ste_extra -= (double)w[c * NP + i] * (double)tt, inside++;
            else
                outside++;
        }
        double l[2];
        float sp = s0[c] * (1 + eps_rel), sm = s0[c] * (1 - eps_rel);
        for (int k = 0; k < 2; k++) {
            s->data[c] = k ? sm : sp;
            qat_tape_reset(&t);
            qat_tensor *yk = qat_lsq(&t, x, s, qmin, qmax, 1.0f);
            l[k] = 0;
            for (int i = 0; i < N; i++) l[k] += (double)w[i] * (double)yk->data[i];
        }
        s->data[c] = s0[c];
        double fd = (l[0] - l[1]) / ((double)sp - (double)sm);
        double want = fd + ste_extra;
        if (!(fabs(s->grad[c] - want) <= 1e-3 * (1 + fabs(want))))
            fail_msg("lsq ds[%d] = %.7g; finite difference of the true function %.7g, plus "
                     "the STE term %.7g, gives %.7g",
                     c, (double)s->grad[c], fd, ste_extra, want);
    }
    assert_true(inside > 30 && outside > 10);
    /* grad_scale scales ds and nothing else. */
    float ds1[C], dx1[N];
    memcpy(ds1, s->grad, sizeof ds1);
    memcpy(dx1, x->grad, sizeof dx1);
    memset(s->grad, 0, sizeof ds1);
    memset(x->grad, 0, sizeof dx1);
    qat_tape_reset(&t);
    y = qat_lsq(&t, x, s, qmin, qmax, 0.25f);
    assert_int_equal(qat_tape_backward_seeded(&t, y, w), QAT_STATUS_OK);
    assert_close(x->grad, dx1, N, 0, 0, "lsq dx does not depend on grad_scale");
    for (int c = 0; c < C; c++) ds1[c] *= 0.25f;
    assert_close(s->grad, ds1, C, 1e-6, 1e-7, "lsq ds scales with grad_scale");
    qat_tape_free(&t);
    test_tensor_free(x);
    test_tensor_free(s);
}

/* ---- grad scale and initial step ---------------------------------------------------- */

static void test_lsq_grad_scale_and_init(void **state) {
    (void)state;
    assert_true(fabsf(qat_lsq_grad_scale(36, 7) - (float)(1 / sqrt(252.0))) <= 1e-7f);
    assert_true(qat_lsq_grad_scale(1, 1) == 1.0f);
    assert_true(qat_lsq_grad_scale(100, 4) == 0.05f);

    /* 2 mean|x| / sqrt(qmax): per tensor mean 2, qmax 4 -> 2; per channel 1 and 3; an
     * all-zero channel gets 1. */
    const float x[6] = {1, -1, 3, -3, 0, 0};
    float s[3];
    qat_lsq_init_scale(s, x, 1, 4, 4);
    assert_true(s[0] == 2.0f);
    qat_lsq_init_scale(s, x, 3, 2, 4);
    assert_true(s[0] == 1.0f && s[1] == 3.0f && s[2] == 1.0f);
    qat_lsq_init_scale(s, x, 1, 2, 1);
    assert_true(s[0] == 2.0f);
}

/* ---- PyTorch ------------------------------------------------------------------------ */

static void check_fixture_case(const qat_fixture *fx, const char *c) {
    qat_tensor *x = fixture_tensor(fx, c, "x");
    qat_tensor *s = fixture_tensor(fx, c, "s");
    const float *cfg = fixture_field(fx, c, "cfg", 4);
    const int qmin = (int)cfg[0], qmax = (int)cfg[1];
    const float g = cfg[2];
    char what[96];
    snprintf(what, sizeof what, "%s grad_scale(%d, %d)", c, (int)cfg[3], qmax);
    float g_ours = qat_lsq_grad_scale((size_t)cfg[3], qmax);
    assert_close(&g_ours, &g, 1, 1e-6, 0, what);

    qat_tape t;
    qat_tape_init(&t, 0);
    qat_tensor *y = qat_lsq(&t, x, s, qmin, qmax, g);
    if (!y) fail_msg("%s: lsq failed: %s", c, t.err.msg);
    assert_shape(y, x->ndim, x->shape, c);
    fixture_check(fx, c, "y", y->data, y->n);
    if (qat_tape_backward_seeded(&t, y, fixture_field(fx, c, "dout", y->n)) != QAT_STATUS_OK)
        fail_msg("%s: backward failed: %s", c, t.err.msg);
    fixture_check(fx, c, "dx", x->grad, x->n);
    fixture_check(fx, c, "ds", s->grad, s->n);

    float init[16];
    QAT_ASSERT(s->n <= 16);
    qat_lsq_init_scale(init, x->data, (int)s->n, x->n / s->n, qmax);
    fixture_check(fx, c, "init_s", init, s->n);
    qat_tape_free(&t);
    test_tensor_free(x);
    test_tensor_free(s);
}

static void test_lsq_fixture(void **state) {
    (void)state;
    qat_fixture *fx = fixture_load("quant_ops.bin");
    check_fixture_case(fx, "lsq_act_u4");
    check_fixture_case(fx, "lsq_act_s8");
    check_fixture_case(fx, "lsq_w4_pc");
    /* The per-channel case really is per channel. */
    assert_int_equal((int)fixture_entry(fx, "lsq_w4_pc.s")->n, 8);
    fixture_free(fx);
}

/* ---- errors, inference, partial gradients ------------------------------------------- */

static void expect_error(qat_tensor *x, qat_tensor *s, int qmin, int qmax, float g,
                         qat_status status, const char *must_mention, const char *what) {
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    qat_tensor *y = qat_lsq(&t, x, s, qmin, qmax, g);
    assert_op_failed(&t, y, "lsq", what);
    if (t.err.status != status)
        fail_msg("%s: status %s, expected %s (%s)", what, qat_status_str(t.err.status),
                 qat_status_str(status), t.err.msg);
    if (must_mention) {
        char buf[128];
        snprintf(buf, sizeof buf, "%s", must_mention);
        char *save = NULL;
        for (char *tok = strtok_r(buf, "|", &save); tok; tok = strtok_r(NULL, "|", &save))
            if (!strstr(t.err.msg, tok))
                fail_msg("%s: message \"%s\" does not mention \"%s\"", what, t.err.msg, tok);
    }
    assert_int_equal(t.n_nodes, 0);
    qat_tape_free(&t);
}

static void test_lsq_errors(void **state) {
    (void)state;
    qat_tensor *x = test_tensor_filled(2, (int[]){4, 3}, -1, 1, 71);
    qat_tensor *s = test_tensor_from(1, (int[]){4}, (float[]){0.1f, 0.1f, -0.2f, 0.1f});
    expect_error(x, s, -7, 7, 1, QAT_STATUS_NUMERIC, "channel 2|-0.2", "lsq, negative step");
    s->data[2] = 0.0f;
    expect_error(x, s, -7, 7, 1, QAT_STATUS_NUMERIC, "channel 2", "lsq, zero step");
    s->data[2] = 0.1f;
    s->data[0] = NAN;
    expect_error(x, s, -7, 7, 1, QAT_STATUS_NUMERIC, "channel 0|nan", "lsq, NaN step");
    s->data[0] = 0.1f;
    s->data[3] = INFINITY;
    expect_error(x, s, -7, 7, 1, QAT_STATUS_NUMERIC, "channel 3|inf", "lsq, infinite step");
    s->data[3] = 0.1f;

    qat_tensor *s3 = test_tensor_from(1, (int[]){3}, (float[]){0.1f, 0.1f, 0.1f});
    expect_error(x, s3, -7, 7, 1, QAT_STATUS_SHAPE, "(3)|(4, 3)",
                 "lsq, step per column instead of per channel");
    expect_error(x, s, 7, 7, 1, QAT_STATUS_INVALID_ARG, NULL, "lsq, qmin == qmax");
    expect_error(x, s, 0, 100000, 1, QAT_STATUS_INVALID_ARG, NULL, "lsq, qmax too large");
    expect_error(x, s, -7, 7, -1, QAT_STATUS_INVALID_ARG, NULL, "lsq, negative grad_scale");
    expect_error(x, s, -7, 7, NAN, QAT_STATUS_INVALID_ARG, NULL, "lsq, NaN grad_scale");

    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    assert_null(qat_lsq(&t, NULL, s, -7, 7, 1));
    assert_null(qat_lsq(&t, x, NULL, -7, 7, 1));
    assert_int_equal(t.err.status, QAT_STATUS_OK);
    qat_tape_free(&t);
    test_tensor_free(x);
    test_tensor_free(s);
    test_tensor_free(s3);
}

static void test_lsq_inference_and_partial_grads(void **state) {
    (void)state;
    const float xv[6] = {-1, 0.3f, 0.7f, 2, -0.2f, 5};
    const float dout[6] = {1, 2, 4, 8, 16, 32};
    const float one = 1;
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    qat_tensor *x = test_tensor_from(2, (int[]){2, 3}, xv), *s = test_tensor_from(1, (int[]){1}, &one);

    t.grad_enabled = false;
    qat_tensor *y = qat_lsq(&t, x, s, 0, 3, 1);
    assert_non_null(y);
    assert_null(y->grad);
    assert_int_equal(t.n_nodes, 0);
    t.grad_enabled = true;

    /* An activation without gradient (the model input): the step still learns.
     * t = x: -1 (qmin 0), 0.3 (-0.3), 0.7 (+0.3), 2 (inside, 0), -0.2 (qmin 0), 5 (qmax 3). */
    qat_tape_reset(&t);
    qat_tensor *xin = qat_tape_input(&t, 2, (int[]){2, 3}, xv);
    y = qat_lsq(&t, xin, s, 0, 3, 1);
    assert_non_null(y->grad);
    assert_int_equal(qat_tape_backward_seeded(&t, y, dout), QAT_STATUS_OK);
    double want = 2 * (0 - (double)0.3f) + 4 * (1 - (double)0.7f) + 32 * 3.0;
    if (fabs(s->grad[0] - want) > 1e-5) fail_msg("lsq ds = %g, expected %g", (double)s->grad[0], want);

    /* A frozen step (no gradient): x still gets its gradient. */
    qat_tape_reset(&t);
    float *saved = s->grad;
    s->grad = NULL;
    y = qat_lsq(&t, x, s, 0, 3, 1);
    assert_int_equal(qat_tape_backward_seeded(&t, y, dout), QAT_STATUS_OK);
    const float want_dx[6] = {0, 2, 4, 8, 0, 0};
    assert_close(x->grad, want_dx, 6, 0, 0, "lsq dx with the step frozen");
    s->grad = saved;

    qat_tape_free(&t);
    test_tensor_free(x);
    test_tensor_free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lsq_forward_values),
        cmocka_unit_test(test_lsq_forward_matches_formula),
        cmocka_unit_test(test_lsq_backward_per_tensor),
        cmocka_unit_test(test_lsq_backward_per_channel),
        cmocka_unit_test(test_lsq_ds_against_fd),
        cmocka_unit_test(test_lsq_grad_scale_and_init),
        cmocka_unit_test(test_lsq_fixture),
        cmocka_unit_test(test_lsq_errors),
        cmocka_unit_test(test_lsq_inference_and_partial_grads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
