/* test_activation.c - relu, relu6, sigmoid, tanh, hardswish, leaky_relu
 * (layers/activation.h).
 *
 *  - forward values equal the definitions (relu/relu6 exactly; sigmoid and tanh to
 *    float rounding, and without overflow at large |x|);
 *  - the gradient matches central finite differences, on inputs kept away from the
 *    kinks (relu at 0, relu6 at 0 and 6) and with the kinks masked as well;
 *  - at a kink the gradient is 0, as in PyTorch;
 *  - a tensor feeding two activations receives the sum of both gradients;
 *  - inference mode records nothing; a NULL input propagates;
 *  - against PyTorch (tests/fixtures/gen_activations.py): forward and backward of all
 *    four table functions, including hard-swish's kinks at -3 and 3 and leaky ReLU's at
 *    0, where the gradient is PyTorch's one-sided choice; hard-swish's forward equals
 *    PyTorch's float32 result to the bit.
 */
#include <math.h>
#include <string.h>

#include "layers/activation.h"
#include "layers/elementwise.h"
#include "testutil.h"

#define FD_EPS 1e-2f
#define FD_RTOL 1e-2
#define FD_ATOL 1e-3

typedef qat_tensor *(*act_op)(qat_tape *t, qat_tensor *x);

typedef struct act_args {
    act_op op;
    qat_tensor *x;
} act_args;

static qat_tensor *act_forward(qat_tape *t, void *user) {
    act_args *a = user;
    return a->op(t, a->x);
}

/* Kinks within reach of a +-eps perturbation (the inputs avoid them; this is the belt to
 * those braces). */
static bool relu_kink(void *user, const qat_tensor *x, size_t i, float eps) {
    (void)user;
    return fabsf(x->data[i]) < 2 * eps;
}

static bool relu6_kink(void *user, const qat_tensor *x, size_t i, float eps) {
    (void)user;
    return fabsf(x->data[i]) < 2 * eps || fabsf(x->data[i] - 6.0f) < 2 * eps;
}

/* n values in [lo, hi), each at least `gap` away from every point in kinks[0..nk). */
static qat_tensor *new_away_from(size_t n, float lo, float hi, const float *kinks, int nk,
                                 float gap, uint64_t seed) {
    qat_tensor *x = test_tensor_new(1, (int[]){(int)n});
    fill_uniform(x->data, n, lo, hi, seed);
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < nk; k++)
            if (fabsf(x->data[i] - kinks[k]) < gap)
                x->data[i] = kinks[k] + (x->data[i] >= kinks[k] ? gap : -gap);
    return x;
}

static void run_fd(act_op op, qat_tensor *x, fd_kink_fn kink, const char *what) {
    act_args a = {op, x};
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    fd_check(&t, act_forward, &a, x, FD_EPS, FD_RTOL, FD_ATOL, 0, kink, what);
    qat_tape_free(&t);
}

/* ---- finite differences ------------------------------------------------------------- */

static void test_relu_fd(void **state) {
    (void)state;
    const float kinks[] = {0};
    qat_tensor *x = new_away_from(64, -3, 3, kinks, 1, 0.05f, 1);
    run_fd(qat_relu, x, relu_kink, "relu dx");
    test_tensor_free(x);
}

static void test_relu6_fd(void **state) {
    (void)state;
    const float kinks[] = {0, 6};
    qat_tensor *x = new_away_from(80, -2, 8, kinks, 2, 0.05f, 2);
    run_fd(qat_relu6, x, relu6_kink, "relu6 dx");
    test_tensor_free(x);
}

static void test_sigmoid_fd(void **state) {
    (void)state;
    qat_tensor *x = new_away_from(64, -5, 5, NULL, 0, 0, 3);
    run_fd(qat_sigmoid, x, NULL, "sigmoid dx");
    test_tensor_free(x);
}

static bool hardswish_kink(void *user, const qat_tensor *x, size_t i, float eps) {
    (void)user;
    return fabsf(x->data[i] + 3.0f) < 2 * eps || fabsf(x->data[i] - 3.0f) < 2 * eps;
}

static qat_tensor *leaky_op(qat_tape *t, qat_tensor *x) { return qat_leaky_relu(t, x, 0.1f); }
static qat_tensor *leaky_neg_op(qat_tape *t, qat_tensor *x) { return qat_leaky_relu(t, x, -0.5f); }

static void test_hardswish_fd(void **state) {
    (void)state;
    const float kinks[] = {-3, 3};
    qat_tensor *x = new_away_from(96, -6, 6, kinks, 2, 0.05f, 7);
    run_fd(qat_hardswish, x, hardswish_kink, "hardswish dx");
    test_tensor_free(x);
}

static void test_leaky_relu_fd(void **state) {
    (void)state;
    const float kinks[] = {0};
    qat_tensor *x = new_away_from(64, -3, 3, kinks, 1, 0.05f, 8);
    run_fd(leaky_op, x, relu_kink, "leaky_relu(0.1) dx");
    run_fd(leaky_neg_op, x, relu_kink, "leaky_relu(-0.5) dx");
    test_tensor_free(x);
}

/* Forward and backward against PyTorch, kinks included. */
static void check_torch(const qat_fixture *f, const char *c, float alpha, bool leaky) {
    qat_tensor *x = fixture_tensor(f, c, "x");
    const float *dout = fixture_field(f, c, "dout", x->n);
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    qat_tensor *y = NULL;
    if (leaky) y = qat_leaky_relu(&t, x, alpha);
    else if (!strcmp(c, "sigmoid")) y = qat_sigmoid(&t, x);
    else if (!strcmp(c, "tanh")) y = qat_tanh(&t, x);
    else y = qat_hardswish(&t, x);
    assert_non_null(y);
    char what[64];
    snprintf(what, sizeof what, "%s forward", c);
    fixture_check(f, c, "y", y->data, y->n);
    if (!strcmp(c, "hardswish") || leaky)
        assert_same(y->data, fixture_field(f, c, "y32", x->n), x->data, x->n, what);
    assert_int_equal(qat_tape_backward_seeded(&t, y, dout), QAT_STATUS_OK);
    fixture_check(f, c, "dx", x->grad, x->n);
    qat_tape_free(&t);
    test_tensor_free(x);
}

static void test_activation_torch(void **state) {
    (void)state;
    qat_fixture *f = fixture_load("activations.bin");
    check_torch(f, "sigmoid", 0, false);
    check_torch(f, "tanh", 0, false);
    check_torch(f, "hardswish", 0, false);
    const char *leaky[] = {"leaky_relu", "leaky_relu2", "leaky_relu_neg"};
    for (int i = 0; i < 3; i++) {
        const float alpha = fixture_field(f, leaky[i], "cfg", 1)[0];
        check_torch(f, leaky[i], alpha, true);
    }
    fixture_free(f);
}

/* The kinks exactly: PyTorch's gradient there (aten hardswish_backward, leaky_relu_backward). */
static void test_activation_new_kinks(void **state) {
    (void)state;
    enum { N = 7 };
    const float x[N] = {-3.0f, 3.0f, -3.0001f, 3.0001f, 0.0f, -0.0f, 1.5f};
    const float dout[N] = {1, 1, 1, 1, 2, 2, 2};
    const float want_hs[N] = {-0.5f, 1.0f, 0, 1, 1.0f, 1.0f, 2.0f};
    const float want_lk[N] = {0.25f, 1, 0.25f, 1, 0.5f, 0.5f, 2};
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    qat_tensor *xt = test_tensor_new(1, (int[]){N});
    memcpy(xt->data, x, sizeof x);
    qat_tensor *y = qat_hardswish(&t, xt);
    assert_non_null(y);
    assert_int_equal(qat_tape_backward_seeded(&t, y, dout), QAT_STATUS_OK);
    assert_close(xt->grad, want_hs, N, 1e-6, 0, "hardswish gradient at -3, 3 and around");
    memset(xt->grad, 0, sizeof x);
    qat_tape_reset(&t);
    y = qat_leaky_relu(&t, xt, 0.25f);
    assert_non_null(y);
    assert_int_equal(qat_tape_backward_seeded(&t, y, dout), QAT_STATUS_OK);
    assert_close(xt->grad, want_lk, N, 0, 0, "leaky_relu gradient at 0 and around");
    qat_tape_free(&t);
    test_tensor_free(xt);
}

static void test_tanh_fd(void **state) {
    (void)state;
    qat_tensor *x = new_away_from(64, -3, 3, NULL, 0, 0, 4);
    run_fd(qat_tanh, x, NULL, "tanh dx");
    test_tensor_free(x);
}

/* ---- forward values and kinks ------------------------------------------------------- */

static void test_activation_forward_values(void **state) {
    (void)state;
    enum { N = 12 };
    const float x[N] = {-1e30f, -100, -7, -1, -1e-3f, -0.0f, 0, 1e-3f, 1, 5.999f, 6.5f, 100};
    float out[N], want[N];

    qat_relu_forward(out, x, N);
    for (int i = 0; i < N; i++) want[i] = x[i] > 0 ? x[i] : 0;
    assert_close(out, want, N, 0, 0, "relu");

    qat_relu6_forward(out, x, N);
    for (int i = 0; i < N; i++) want[i] = x[i] <= 0 ? 0 : x[i] >= 6 ? 6 : x[i];
    assert_close(out, want, N, 0, 0, "relu6");

    qat_sigmoid_forward(out, x, N);
    for (int i = 0; i < N; i++) {
        want[i] = (float)(1.0 / (1.0 + exp(-(double)x[i])));
        if (!isfinite(out[i]) || out[i] < 0 || out[i] > 1)
            fail_msg("sigmoid(%g) = %g: not in [0, 1]", (double)x[i], (double)out[i]);
    }
    assert_close(out, want, N, 1e-6, 1e-7, "sigmoid");

    qat_tanh_forward(out, x, N);
    for (int i = 0; i < N; i++) want[i] = (float)tanh((double)x[i]);
    assert_close(out, want, N, 1e-6, 1e-7, "tanh");
}

/* At exactly 0 (and 6 for relu6) the gradient is 0; just inside it is dout. */
static void test_activation_kink_gradient(void **state) {
    (void)state;
    enum { N = 8 };
    const float x[N] = {0.0f, -0.0f, 1e-30f, -1e-30f, 6.0f, 5.9999f, 6.0001f, 3};
    const float dout[N] = {1, 2, 3, 4, 5, 6, 7, 8};
    const float want_relu[N] = {0, 0, 3, 0, 5, 6, 7, 8};
    const float want_relu6[N] = {0, 0, 3, 0, 0, 6, 0, 8};
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    qat_tensor *xt = test_tensor_new(1, (int[]){N});
    memcpy(xt->data, x, sizeof x);

    qat_tensor *y = qat_relu(&t, xt);
    assert_non_null(y);
    assert_int_equal(qat_tape_backward_seeded(&t, y, dout), QAT_STATUS_OK);
    assert_close(xt->grad, want_relu, N, 0, 0, "relu gradient at and around 0");

    memset(xt->grad, 0, sizeof x);
    qat_tape_reset(&t);
    y = qat_relu6(&t, xt);
    assert_non_null(y);
    assert_int_equal(qat_tape_backward_seeded(&t, y, dout), QAT_STATUS_OK);
    assert_close(xt->grad, want_relu6, N, 0, 0, "relu6 gradient at and around 0 and 6");

    qat_tape_free(&t);
    test_tensor_free(xt);
}

/* sigmoid and tanh backward read the saved output: check their derivative directly at
 * values where a wrong formula (y instead of y(1-y), 1-y instead of 1-y^2) differs. */
static void test_activation_smooth_gradient(void **state) {
    (void)state;
    enum { N = 5 };
    const float x[N] = {-3, -0.5f, 0, 0.7f, 2.5f};
    const float dout[N] = {1, -1, 2, 0.5f, -2};
    float ws[N], wt[N];
    for (int i = 0; i < N; i++) {
        double s = 1.0 / (1.0 + exp(-(double)x[i])), th = tanh((double)x[i]);
        ws[i] = (float)(dout[i] * s * (1 - s));
        wt[i] = (float)(dout[i] * (1 - th * th));
    }
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    qat_tensor *xt = test_tensor_new(1, (int[]){N});
    memcpy(xt->data, x, sizeof x);
    qat_tensor *y = qat_sigmoid(&t, xt);
    assert_non_null(y);
    assert_int_equal(qat_tape_backward_seeded(&t, y, dout), QAT_STATUS_OK);
    assert_close(xt->grad, ws, N, 1e-5, 1e-7, "sigmoid gradient");
    memset(xt->grad, 0, sizeof x);
    qat_tape_reset(&t);
    y = qat_tanh(&t, xt);
    assert_non_null(y);
    assert_int_equal(qat_tape_backward_seeded(&t, y, dout), QAT_STATUS_OK);
    assert_close(xt->grad, wt, N, 1e-5, 1e-7, "tanh gradient");
    qat_tape_free(&t);
    test_tensor_free(xt);
}

/* ---- two consumers ------------------------------------------------------------------ */

typedef struct two_args {
    qat_tensor *x;
} two_args;

/* relu(x) + tanh(x) + sigmoid(relu6(x)): x feeds three consumers. */
static qat_tensor *two_forward(qat_tape *t, void *user) {
    two_args *a = user;
    qat_tensor *s = qat_add(t, qat_relu(t, a->x), qat_tanh(t, a->x));
    return qat_add(t, s, qat_sigmoid(t, qat_relu6(t, a->x)));
}

static void test_activation_shared_input(void **state) {
    (void)state;
    const float kinks[] = {0, 6};
    two_args a = {new_away_from(40, -2, 8, kinks, 2, 0.05f, 5)};
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    fd_check(&t, two_forward, &a, a.x, FD_EPS, FD_RTOL, FD_ATOL, 0, relu6_kink,
             "relu(x) + tanh(x) + sigmoid(relu6(x)) dx");
    qat_tape_free(&t);
    test_tensor_free(a.x);
}

/* ---- inference mode and NULL -------------------------------------------------------- */

static void test_activation_inference_and_null(void **state) {
    (void)state;
    const act_op ops[] = {qat_relu, qat_relu6, qat_sigmoid, qat_tanh, qat_hardswish, leaky_op};
    qat_tensor *x = test_tensor_new(2, (int[]){2, 3});
    fill_uniform(x->data, x->n, -2, 2, 6);
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    for (size_t k = 0; k < sizeof ops / sizeof *ops; k++) {
        qat_tape_reset(&t);
        t.grad_enabled = false;
        qat_tensor *y = ops[k](&t, x);
        assert_non_null(y);
        assert_null(y->grad);
        assert_int_equal(t.n_nodes, 0);
        assert_int_equal(y->ndim, 2);
        assert_int_equal(y->shape[0], 2);
        assert_int_equal(y->shape[1], 3);
        t.grad_enabled = true;
        assert_null(ops[k](&t, NULL));
        assert_int_equal(t.err.status, QAT_STATUS_OK);
        assert_int_equal(t.n_nodes, 0);
    }
    qat_tape_free(&t);
    test_tensor_free(x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_relu_fd),
        cmocka_unit_test(test_relu6_fd),
        cmocka_unit_test(test_sigmoid_fd),
        cmocka_unit_test(test_tanh_fd),
        cmocka_unit_test(test_hardswish_fd),
        cmocka_unit_test(test_leaky_relu_fd),
        cmocka_unit_test(test_activation_torch),
        cmocka_unit_test(test_activation_new_kinks),
        cmocka_unit_test(test_activation_forward_values),
        cmocka_unit_test(test_activation_kink_gradient),
        cmocka_unit_test(test_activation_smooth_gradient),
        cmocka_unit_test(test_activation_shared_input),
        cmocka_unit_test(test_activation_inference_and_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
