/* test_batchnorm.c - batch normalization (layers/batchnorm.h).
 *
 *  - forward, backward and the running-statistics update match PyTorch
 *    (tests/fixtures/layers.bin, cases bn1d_train, bn2d_train, bn1d_eval, bn2d_eval) to
 *    1e-4 relative;
 *  - the gradient of x, gamma and beta matches central finite differences in training
 *    mode (where the batch mean and variance depend on x: the check that matters) and in
 *    eval mode, for (N, C) and (N, C, H, W);
 *  - running statistics compound over steps and are what eval mode then uses;
 *  - an input without gradient (batch norm as the first layer) still trains gamma/beta;
 *  - bad shapes return NULL with a message naming the op; a NULL input propagates.
 */
#include <ctype.h>
#include <math.h>
#include <string.h>

#include "layers/activation.h"
#include "layers/batchnorm.h"
#include "layers/pool.h"
#include "testutil.h"

#define FD_EPS 1e-2f
#define FD_RTOL 1e-2
#define FD_ATOL 2e-3

#define BN_NAMES "batchnorm|batch norm|batch_norm"

/* ---- forward/backward against PyTorch ---------------------------------------------- */

/* state: the case name; cfg = [momentum, eps, training]. */
static void test_batchnorm_fixture(void **state) {
    const char *c = *state;
    qat_fixture *fx = fixture_load("layers.bin");
    const float *cfg = fixture_field(fx, c, "cfg", 3);
    float momentum = cfg[0], eps = cfg[1];
    bool training = cfg[2] != 0;
    qat_tensor *x = fixture_tensor(fx, c, "x");
    qat_tensor *g = fixture_tensor(fx, c, "gamma");
    qat_tensor *b = fixture_tensor(fx, c, "beta");
    int C = x->shape[1];
    float rm[8], rv[8];
    assert_true(C <= 8);
    memcpy(rm, fixture_field(fx, c, "running_mean", (size_t)C), (size_t)C * sizeof(float));
    memcpy(rv, fixture_field(fx, c, "running_var", (size_t)C), (size_t)C * sizeof(float));

    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    t.training = training;
    qat_tensor *y = qat_batchnorm(&t, x, g, b, rm, rv, momentum, eps);
    if (!y) fail_msg("%s: batchnorm failed: %s", c, t.err.msg);
    assert_true(qat_tensor_same_shape(y, x));
    fixture_check(fx, c, "y", y->data, y->n);
    if (training) {
        fixture_check(fx, c, "running_mean_after", rm, (size_t)C);
        fixture_check(fx, c, "running_var_after", rv, (size_t)C);
    } else {
        assert_close(rm, fixture_field(fx, c, "running_mean", (size_t)C), (size_t)C, 0, 0,
                     "eval leaves running_mean alone");
        assert_close(rv, fixture_field(fx, c, "running_var", (size_t)C), (size_t)C, 0, 0,
                     "eval leaves running_var alone");
    }
    if (qat_tape_backward_seeded(&t, y, fixture_field(fx, c, "dout", y->n)) != QAT_STATUS_OK)
        fail_msg("%s: backward failed: %s", c, t.err.msg);
    fixture_check(fx, c, "dx", x->grad, x->n);
    fixture_check(fx, c, "dgamma", g->grad, g->n);
    fixture_check(fx, c, "dbeta", b->grad, b->n);
    qat_tape_free(&t);
    test_tensor_free(x);
    test_tensor_free(g);
    test_tensor_free(b);
    fixture_free(fx);
}

/* ---- finite differences ------------------------------------------------------------- */

typedef struct bn_args {
    qat_tensor *x, *g, *b;
    float rm[4], rv[4];
    bool training;
} bn_args;

static qat_tensor *bn_forward(qat_tape *t, void *user) {
    bn_args *a = user;
    t->training = a->training;
    return qat_batchnorm(t, a->x, a->g, a->b, a->rm, a->rv, 0.1f, 1e-5f);
}

typedef struct bn_fd_case {
    int ndim;
    int shape[4];
    bool training;
} bn_fd_case;

static bn_fd_case FD_CASES[] = {
    {2, {5, 3}, true},
    {4, {2, 3, 2, 3}, true},
    {2, {5, 3}, false},
    {4, {2, 3, 2, 3}, false},
};

static void test_batchnorm_fd(void **state) {
    const bn_fd_case *c = *state;
    bn_args a = {.training = c->training};
    int C = c->shape[1];
    a.x = test_tensor_filled(c->ndim, c->shape, -1, 1, 11);
    /* A per-channel offset, so the mean matters. */
    for (size_t i = 0; i < a.x->n; i++) {
        size_t hw = c->ndim == 4 ? (size_t)c->shape[2] * c->shape[3] : 1;
        a.x->data[i] += 0.5f * (float)((i / hw) % (size_t)C);
    }
    a.g = test_tensor_filled(1, (int[]){C}, 0.5f, 1.5f, 12);
    a.b = test_tensor_filled(1, (int[]){C}, -0.5f, 0.5f, 13);
    fill_uniform(a.rm, (size_t)C, -0.3f, 0.3f, 14);
    fill_uniform(a.rv, (size_t)C, 0.5f, 1.5f, 15);
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    const char *mode = c->training ? "train" : "eval";
    char what[64];
    snprintf(what, sizeof what, "batchnorm %dd %s dx", c->ndim == 2 ? 1 : 2, mode);
    fd_check(&t, bn_forward, &a, a.x, FD_EPS, FD_RTOL, FD_ATOL, 0, NULL, what);
    snprintf(what, sizeof what, "batchnorm %dd %s dgamma", c->ndim == 2 ? 1 : 2, mode);
    fd_check(&t, bn_forward, &a, a.g, FD_EPS, FD_RTOL, FD_ATOL, 0, NULL, what);
    snprintf(what, sizeof what, "batchnorm %dd %s dbeta", c->ndim == 2 ? 1 : 2, mode);
    fd_check(&t, bn_forward, &a, a.b, FD_EPS, FD_RTOL, FD_ATOL, 0, NULL, what);
    qat_tape_free(&t);
    test_tensor_free(a.x);
    test_tensor_free(a.g);
    test_tensor_free(a.b);
}

/* ---- batch norm + ReLU + 2x2 max pool, fused --------------------------------------- */

typedef struct brp_args {
    qat_tensor *x, *g, *b;
    float rm[8], rv[8];
    bool fused;
    bool priv; /* fused: x feeds nothing else, so backward writes dx instead of adding it */
} brp_args;

static qat_tensor *brp_forward(qat_tape *t, void *user) {
    brp_args *a = user;
    t->training = true;
    if (a->fused) return qat_bn_relu_maxpool(t, a->x, a->g, a->b, a->rm, a->rv, 0.1f, 1e-5f, a->priv);
    qat_tensor *y = qat_batchnorm(t, a->x, a->g, a->b, a->rm, a->rv, 0.1f, 1e-5f);
    return qat_maxpool2d(t, qat_relu(t, y), 2, 2, 0);
}

/* The fused op's output and argmax with x[i] moved by d. */
static void brp_at(const brp_args *a, size_t i, float d, float *out, int32_t *am) {
    const int *sh = a->x->shape;
    float *x = malloc(a->x->n * sizeof(float)), mean[8], rstd[8];
    float *scratch = malloc(qat_bn_relu_maxpool_scratch_floats(sh[2], sh[3]) * sizeof(float));
    memcpy(x, a->x->data, a->x->n * sizeof(float));
    x[i] += d;
    qat_bn_relu_maxpool_forward(out, am, mean, rstd, NULL, NULL, scratch, x, a->g->data,
                                a->b->data, sh[0], sh[1], sh[2], sh[3], 0.1f, 1e-5f);
    free(x);
    free(scratch);
}

/* A kink: moving x[i] by -eps and by +eps picks a different window maximum somewhere, or
 * clamps a different set of them to 0 (the statistics move every value of the channel). */
static bool brp_kink(void *user, const qat_tensor *x, size_t i, float eps) {
    const brp_args *a = user;
    const size_t n = (size_t)x->shape[0] * x->shape[1] * (x->shape[2] / 2) * (x->shape[3] / 2);
    float *lo = malloc(n * sizeof(float)), *hi = malloc(n * sizeof(float));
    int32_t *alo = malloc(n * sizeof(int32_t)), *ahi = malloc(n * sizeof(int32_t));
    brp_at(a, i, -eps, lo, alo);
    brp_at(a, i, eps, hi, ahi);
    bool kink = false;
    for (size_t k = 0; k < n && !kink; k++) kink = alo[k] != ahi[k] || (lo[k] > 0) != (hi[k] > 0);
    free(lo);
    free(hi);
    free(alo);
    free(ahi);
    return kink;
}

/* The fused op against batch norm, ReLU and max pool run one after the other: the same
 * output bits, the same running statistics, the same gradients up to rounding (its sums
 * of dgamma and dbeta visit only the windows' maxima); and finite differences. Odd sizes:
 * the pool drops the last row and column. */
static void test_bn_relu_maxpool(void **state) {
    (void)state;
    const int shapes[2][4] = {{3, 2, 4, 6}, {2, 3, 5, 7}};
    for (int sc = 0; sc < 2; sc++) {
        const int *sh = shapes[sc];
        const int C = sh[1];
        brp_args a[2];
        qat_tape t[2];
        qat_tensor *y[2];
        for (int f = 0; f < 2; f++) {
            a[f] = (brp_args){.fused = f == 1};
            a[f].x = test_tensor_filled(4, sh, -1, 1, 21 + (uint64_t)sc);
            a[f].g = test_tensor_filled(1, (int[]){C}, 0.5f, 1.5f, 22);
            a[f].b = test_tensor_filled(1, (int[]){C}, -0.5f, 0.5f, 23);
            fill_uniform(a[f].rm, (size_t)C, -0.3f, 0.3f, 24);
            fill_uniform(a[f].rv, (size_t)C, 0.5f, 1.5f, 25);
            qat_tape_init(&t[f], 1 << 16);
            y[f] = brp_forward(&t[f], &a[f]);
            assert_non_null(y[f]);
        }
        assert_int_equal(y[1]->n, y[0]->n);
        assert_same(y[1]->data, y[0]->data, y[0]->data, y[0]->n, "fused output");
        assert_same(a[1].rm, a[0].rm, a[0].rm, (size_t)C, "fused running mean");
        assert_same(a[1].rv, a[0].rv, a[0].rv, (size_t)C, "fused running var");
        float *dy = malloc(y[0]->n * sizeof(float));
        fill_uniform(dy, y[0]->n, -1, 1, 26);
        for (int f = 0; f < 2; f++)
            assert_int_equal(qat_tape_backward_seeded(&t[f], y[f], dy), QAT_STATUS_OK);
        assert_close(a[1].x->grad, a[0].x->grad, a[0].x->n, 1e-5, 1e-6, "fused dx");
        assert_close(a[1].g->grad, a[0].g->grad, (size_t)C, 1e-5, 1e-6, "fused dgamma");
        assert_close(a[1].b->grad, a[0].b->grad, (size_t)C, 1e-5, 1e-6, "fused dbeta");
        {
            /* x private (backward writes dx, its own pass): the same values as adding dx
             * to a zeroed gradient */
            brp_args p = {.fused = true, .priv = true};
            p.x = test_tensor_filled(4, sh, -1, 1, 21 + (uint64_t)sc);
            p.g = test_tensor_filled(1, (int[]){C}, 0.5f, 1.5f, 22);
            p.b = test_tensor_filled(1, (int[]){C}, -0.5f, 0.5f, 23);
            fill_uniform(p.rm, (size_t)C, -0.3f, 0.3f, 24);
            fill_uniform(p.rv, (size_t)C, 0.5f, 1.5f, 25);
            for (size_t i = 0; i < p.x->n; i++) p.x->grad[i] = 1e30f; /* overwritten, not added to */
            qat_tape tp;
            qat_tape_init(&tp, 1 << 16);
            qat_tensor *yp = brp_forward(&tp, &p);
            assert_non_null(yp);
            assert_int_equal(qat_tape_backward_seeded(&tp, yp, dy), QAT_STATUS_OK);
            for (size_t i = 0; i < p.x->n; i++)
                if (!(p.x->grad[i] == a[1].x->grad[i]))
                    fail_msg("fused dx, x private: [%zu] %.9g, added: %.9g", i, p.x->grad[i], a[1].x->grad[i]);
            for (int c = 0; c < C; c++)
                if (!(p.g->grad[c] == a[1].g->grad[c] && p.b->grad[c] == a[1].b->grad[c]))
                    fail_msg("fused dgamma/dbeta, x private: channel %d differs", c);
            qat_tape_free(&tp);
            test_tensor_free(p.x);
            test_tensor_free(p.g);
            test_tensor_free(p.b);
        }
        free(dy);
        fd_check(&t[1], brp_forward, &a[1], a[1].x, FD_EPS, FD_RTOL, FD_ATOL, 0, brp_kink,
                 "batchnorm+relu+maxpool dx");
        fd_check(&t[1], brp_forward, &a[1], a[1].g, FD_EPS, FD_RTOL, FD_ATOL, 0, NULL,
                 "batchnorm+relu+maxpool dgamma");
        fd_check(&t[1], brp_forward, &a[1], a[1].b, FD_EPS, FD_RTOL, FD_ATOL, 0, NULL,
                 "batchnorm+relu+maxpool dbeta");
        for (int f = 0; f < 2; f++) {
            qat_tape_free(&t[f]);
            test_tensor_free(a[f].x);
            test_tensor_free(a[f].g);
            test_tensor_free(a[f].b);
        }
    }
}

/* ---- running statistics ------------------------------------------------------------- */

/* Two training steps on the same batch compound the update; eval then normalises with
 * the running statistics, not the batch's. */
static void test_batchnorm_running_stats(void **state) {
    (void)state;
    enum { N = 4, C = 2, HW = 3 };
    qat_tensor *x = test_tensor_filled(4, (int[]){N, C, 1, HW}, -1, 2, 21);
    qat_tensor *g = test_tensor_filled(1, (int[]){C}, 0.5f, 1.5f, 22);
    qat_tensor *b = test_tensor_filled(1, (int[]){C}, -0.5f, 0.5f, 23);
    float rm[C] = {0.25f, -0.5f}, rv[C] = {1.0f, 2.0f};
    const float m = 0.2f, eps = 1e-3f;
    double mean[C], var[C], want_rm[C], want_rv[C];
    const int M = N * HW;
    for (int c = 0; c < C; c++) {
        double s = 0, ss = 0;
        for (int n = 0; n < N; n++)
            for (int i = 0; i < HW; i++) s += x->data[(n * C + c) * HW + i];
        mean[c] = s / M;
        for (int n = 0; n < N; n++)
            for (int i = 0; i < HW; i++) {
                double d = x->data[(n * C + c) * HW + i] - mean[c];
                ss += d * d;
            }
        var[c] = ss / M;
        want_rm[c] = rm[c];
        want_rv[c] = rv[c];
        for (int step = 0; step < 2; step++) {
            want_rm[c] = (1 - m) * want_rm[c] + m * mean[c];
            want_rv[c] = (1 - m) * want_rv[c] + m * var[c] * M / (M - 1);
        }
    }
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    for (int step = 0; step < 2; step++) {
        qat_tape_reset(&t);
        if (!qat_batchnorm(&t, x, g, b, rm, rv, m, eps)) fail_msg("%s", t.err.msg);
    }
    float frm[C], frv[C];
    for (int c = 0; c < C; c++) {
        frm[c] = (float)want_rm[c];
        frv[c] = (float)want_rv[c];
    }
    assert_close(rm, frm, C, 1e-5, 1e-6, "running_mean after two steps");
    assert_close(rv, frv, C, 1e-5, 1e-6, "running_var after two steps (unbiased)");

    float rm_before[C];
    memcpy(rm_before, rm, sizeof rm);
    qat_tape_reset(&t);
    t.training = false;
    qat_tensor *y = qat_batchnorm(&t, x, g, b, rm, rv, m, eps);
    if (!y) fail_msg("%s", t.err.msg);
    float want[N * C * HW];
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (int i = 0; i < HW; i++) {
                int k = (n * C + c) * HW + i;
                want[k] = (float)((x->data[k] - (double)rm[c]) / sqrt((double)rv[c] + eps) *
                                      g->data[c] +
                                  b->data[c]);
            }
    assert_close(y->data, want, N * C * HW, 1e-5, 1e-6, "eval output uses running stats");
    assert_close(rm, rm_before, C, 0, 0, "eval does not touch running_mean");
    qat_tape_free(&t);
    test_tensor_free(x);
    test_tensor_free(g);
    test_tensor_free(b);
}

/* Batch norm as the first layer: its input has no gradient; gamma and beta still learn. */
static void test_batchnorm_input_without_grad(void **state) {
    (void)state;
    for (int training = 0; training <= 1; training++) {
        qat_tensor *g = test_tensor_filled(1, (int[]){2}, 0.5f, 1.5f, 31);
        qat_tensor *b = test_tensor_filled(1, (int[]){2}, -0.5f, 0.5f, 32);
        qat_tensor *gx = test_tensor_filled(2, (int[]){3, 2}, -1, 1, 33);
        qat_tensor *g2 = test_tensor_filled(1, (int[]){2}, 0.5f, 1.5f, 31);
        qat_tensor *b2 = test_tensor_filled(1, (int[]){2}, -0.5f, 0.5f, 32);
        float rm[2] = {0, 0}, rv[2] = {1, 1}, rm2[2] = {0, 0}, rv2[2] = {1, 1};
        const float dy[6] = {1, -1, 0.5f, 2, -0.25f, 0.75f};
        qat_tape t;
        qat_tape_init(&t, 1 << 16);
        t.training = training;
        qat_tensor *x = qat_tape_input(&t, 2, (int[]){3, 2}, gx->data);
        qat_tensor *y = qat_batchnorm(&t, x, g, b, rm, rv, 0.1f, 1e-5f);
        if (!y) fail_msg("%s", t.err.msg);
        assert_int_equal(qat_tape_backward_seeded(&t, y, dy), QAT_STATUS_OK);
        /* The same with an input that has a gradient: gamma/beta grads must agree. */
        qat_tape_reset(&t);
        y = qat_batchnorm(&t, gx, g2, b2, rm2, rv2, 0.1f, 1e-5f);
        if (!y) fail_msg("%s", t.err.msg);
        assert_int_equal(qat_tape_backward_seeded(&t, y, dy), QAT_STATUS_OK);
        assert_close(g->grad, g2->grad, 2, 1e-6, 1e-7, "dgamma without input gradient");
        assert_close(b->grad, b2->grad, 2, 1e-6, 1e-7, "dbeta without input gradient");
        qat_tape_free(&t);
        test_tensor_free(g);
        test_tensor_free(b);
        test_tensor_free(gx);
        test_tensor_free(g2);
        test_tensor_free(b2);
    }
}

/* ---- inference mode ----------------------------------------------------------------- */

static void test_batchnorm_inference(void **state) {
    (void)state;
    qat_tensor *x = test_tensor_filled(4, (int[]){2, 2, 2, 2}, -1, 1, 41);
    qat_tensor *g = test_tensor_filled(1, (int[]){2}, 0.5f, 1.5f, 42);
    qat_tensor *b = test_tensor_filled(1, (int[]){2}, -0.5f, 0.5f, 43);
    float rm[2] = {0.1f, -0.2f}, rv[2] = {0.9f, 1.1f};
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    t.grad_enabled = false;
    t.training = false;
    qat_tensor *y = qat_batchnorm(&t, x, g, b, rm, rv, 0.1f, 1e-5f);
    if (!y) fail_msg("%s", t.err.msg);
    assert_null(y->grad);
    assert_int_equal(t.n_nodes, 0);
    assert_true(rm[0] == 0.1f && rm[1] == -0.2f && rv[0] == 0.9f && rv[1] == 1.1f);
    qat_tape_free(&t);
    test_tensor_free(x);
    test_tensor_free(g);
    test_tensor_free(b);
}

/* ---- bad arguments ------------------------------------------------------------------ */

static void test_batchnorm_bad_args(void **state) {
    (void)state;
    qat_tensor *x = test_tensor_filled(4, (int[]){2, 3, 2, 2}, -1, 1, 51);
    qat_tensor *x1 = test_tensor_filled(2, (int[]){1, 3}, -1, 1, 52);
    qat_tensor *g3 = test_tensor_filled(1, (int[]){3}, 0.5f, 1.5f, 53);
    qat_tensor *b3 = test_tensor_filled(1, (int[]){3}, -0.5f, 0.5f, 54);
    qat_tensor *g4 = test_tensor_filled(1, (int[]){4}, 0.5f, 1.5f, 55);
    qat_tensor *b2 = test_tensor_filled(1, (int[]){2}, -0.5f, 0.5f, 56);
    float rm[4] = {0}, rv[4] = {1, 1, 1, 1};
    qat_tape t;
    qat_tape_init(&t, 1 << 16);

    assert_op_failed(&t, qat_batchnorm(&t, x, g4, b3, rm, rv, 0.1f, 1e-5f), BN_NAMES,
                  "gamma of 4 for 3 channels");
    qat_tape_reset(&t);
    assert_op_failed(&t, qat_batchnorm(&t, x, g3, b2, rm, rv, 0.1f, 1e-5f), BN_NAMES,
                  "beta of 2 for 3 channels");
    qat_tape_reset(&t);
    /* One value per channel has no variance to normalise by (PyTorch refuses too). */
    assert_op_failed(&t, qat_batchnorm(&t, x1, g3, b3, rm, rv, 0.1f, 1e-5f), BN_NAMES,
                  "training on one value per channel");
    qat_tape_reset(&t);

    assert_null(qat_batchnorm(&t, NULL, g3, b3, rm, rv, 0.1f, 1e-5f));
    assert_int_equal(t.err.status, QAT_STATUS_OK);
    assert_int_equal(t.n_nodes, 0);

    qat_tape_free(&t);
    test_tensor_free(x);
    test_tensor_free(x1);
    test_tensor_free(g3);
    test_tensor_free(b3);
    test_tensor_free(g4);
    test_tensor_free(b2);
}

#define FIXTURE_TEST(c) \
    {"test_batchnorm_fixture " c, test_batchnorm_fixture, NULL, NULL, (void *)(c)}
#define FD_TEST(i, label) {"test_batchnorm_fd " label, test_batchnorm_fd, NULL, NULL, &FD_CASES[i]}

int main(void) {
    const struct CMUnitTest tests[] = {
        FIXTURE_TEST("bn1d_train"),
        FIXTURE_TEST("bn2d_train"),
        FIXTURE_TEST("bn1d_eval"),
        FIXTURE_TEST("bn2d_eval"),
        FD_TEST(0, "1d train"),
        FD_TEST(1, "2d train"),
        FD_TEST(2, "1d eval"),
        FD_TEST(3, "2d eval"),
        cmocka_unit_test(test_batchnorm_running_stats),
        cmocka_unit_test(test_bn_relu_maxpool),
        cmocka_unit_test(test_batchnorm_input_without_grad),
        cmocka_unit_test(test_batchnorm_inference),
        cmocka_unit_test(test_batchnorm_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
