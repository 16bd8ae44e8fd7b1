/* test_elementwise.c - add, flatten, dropout (layers/elementwise.h).
 *
 *  - add: the gradient of both inputs matches central finite differences; add(x, x)
 *    gives x the gradient 2 dout; a residual block relu(linear(x)) + x sends x the sum of
 *    both paths (finite differences over x, W and b); an input without gradient is
 *    skipped;
 *  - flatten: a view sharing data and gradient with its input, no node; gradients flow
 *    through it (finite differences of linear(flatten(x)));
 *  - dropout: with the generator reseeded in the forward callback the mask is fixed and
 *    finite differences apply; kept values are scaled by 1/(1-p), the drop rate is p,
 *    and eval (or p = 0) is the identity;
 *  - bad shapes and probabilities return NULL with a message naming the op; NULL
 *    inputs propagate.
 */
#include <ctype.h>
#include <math.h>
#include <string.h>

#include "autograd/rng.h"
#include "layers/activation.h"
#include "layers/elementwise.h"
#include "layers/linear.h"
#include "testutil.h"

#define FD_EPS 1e-2f
#define FD_RTOL 1e-2
#define FD_ATOL 1e-3

/* ---- add ---------------------------------------------------------------------------- */

typedef struct add_args {
    qat_tensor *a, *b;
} add_args;

static qat_tensor *add_forward(qat_tape *t, void *user) {
    add_args *a = user;
    return qat_add(t, a->a, a->b);
}

static void test_add_fd(void **state) {
    (void)state;
    add_args a = {test_tensor_filled(3, (int[]){2, 3, 2}, -1, 1, 1),
                  test_tensor_filled(3, (int[]){2, 3, 2}, -1, 1, 2)};
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    fd_check(&t, add_forward, &a, a.a, FD_EPS, FD_RTOL, FD_ATOL, 0, NULL, "add da");
    fd_check(&t, add_forward, &a, a.b, FD_EPS, FD_RTOL, FD_ATOL, 0, NULL, "add db");
    qat_tape_free(&t);
    test_tensor_free(a.a);
    test_tensor_free(a.b);
}

/* add(x, x) = 2x: x is both operands and must receive dout twice. */
static void test_add_same_tensor_twice(void **state) {
    (void)state;
    add_args a;
    a.a = a.b = test_tensor_filled(2, (int[]){3, 4}, -1, 1, 3);
    const float dy[12] = {1, -2, 3, -4, 0.5f, 0.25f, -0.125f, 8, 0, 1, 2, 3};
    float want[12];
    for (int i = 0; i < 12; i++) want[i] = 2 * dy[i];
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    qat_tensor *y = qat_add(&t, a.a, a.a);
    if (!y) fail_msg("%s", t.err.msg);
    for (int i = 0; i < 12; i++)
        if (y->data[i] != 2 * a.a->data[i]) fail_msg("add(x, x)[%d] != 2 x", i);
    assert_int_equal(qat_tape_backward_seeded(&t, y, dy), QAT_STATUS_OK);
    assert_close(a.a->grad, want, 12, 0, 0, "add(x, x) gradient is 2 dout");
    fd_check(&t, add_forward, &a, a.a, FD_EPS, FD_RTOL, FD_ATOL, 0, NULL, "add(x, x) dx");
    qat_tape_free(&t);
    test_tensor_free(a.a);
}

/* One operand without gradient (a batch from qat_tape_input): only the other learns. */
static void test_add_one_side_without_grad(void **state) {
    (void)state;
    qat_tensor *x = test_tensor_filled(1, (int[]){4}, -1, 1, 4);
    const float in[4] = {1, 2, 3, 4}, dy[4] = {0.5f, -1, 2, 0};
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    qat_tensor *c = qat_tape_input(&t, 1, (int[]){4}, in);
    qat_tensor *y = qat_add(&t, c, x);
    if (!y) fail_msg("%s", t.err.msg);
    assert_int_equal(qat_tape_backward_seeded(&t, y, dy), QAT_STATUS_OK);
    assert_close(x->grad, dy, 4, 0, 0, "add: gradient of the operand that has one");
    assert_null(c->grad);
    qat_tape_free(&t);
    test_tensor_free(x);
}

/* ---- residual ----------------------------------------------------------------------- */

typedef struct res_args {
    qat_tensor *x, *w, *b;
} res_args;

/* relu(x W^T + b) + x: x feeds the linear layer and the shortcut. */
static qat_tensor *res_forward(qat_tape *t, void *user) {
    res_args *a = user;
    return qat_add(t, qat_relu(t, qat_linear(t, a->x, a->w, a->b)), a->x);
}

/* The smallest |pre-activation|; while it exceeds 2 eps (inputs and weights are within
 * [-1, 1], so a +-eps step moves a pre-activation by at most eps) no relu kink is
 * crossed. */
static double res_min_abs_z(const res_args *a) {
    int B = a->x->shape[0], C = a->x->shape[1], OC = a->w->shape[0];
    double m = INFINITY;
    for (int i = 0; i < B; i++)
        for (int o = 0; o < OC; o++) {
            double z = a->b->data[o];
            for (int c = 0; c < C; c++) z += (double)a->x->data[i * C + c] * a->w->data[o * C + c];
            m = fmin(m, fabs(z));
        }
    return m;
}

static bool res_kink(void *user, const qat_tensor *x, size_t i, float eps) {
    (void)x;
    (void)i;
    return res_min_abs_z(user) < 2 * eps;
}

static void test_residual_fd(void **state) {
    (void)state;
    res_args a = {test_tensor_filled(2, (int[]){3, 4}, -1, 1, 0), test_tensor_filled(2, (int[]){4, 4}, -1, 1, 0),
                  test_tensor_filled(1, (int[]){4}, -1, 1, 0)};
    /* Reseed until every pre-activation is well away from the relu kink (deterministic:
     * the seeds are fixed). */
    for (uint64_t seed = 10; res_min_abs_z(&a) < 0.05; seed += 3) {
        fill_uniform(a.x->data, a.x->n, -1, 1, seed);
        fill_uniform(a.w->data, a.w->n, -1, 1, seed + 1);
        fill_uniform(a.b->data, a.b->n, -1, 1, seed + 2);
    }
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    fd_check(&t, res_forward, &a, a.x, FD_EPS, FD_RTOL, FD_ATOL, 0, res_kink,
             "relu(linear(x)) + x: dx");
    fd_check(&t, res_forward, &a, a.w, FD_EPS, FD_RTOL, FD_ATOL, 0, res_kink,
             "relu(linear(x)) + x: dW");
    fd_check(&t, res_forward, &a, a.b, FD_EPS, FD_RTOL, FD_ATOL, 0, res_kink,
             "relu(linear(x)) + x: db");

    /* The shortcut's share: with W = 0 and b = -1 the relu is off, so dx = dout exactly. */
    qat_tensor *w0 = test_tensor_new(2, (int[]){4, 4});
    qat_tensor *bneg = test_tensor_new(1, (int[]){4});
    for (int o = 0; o < 4; o++) bneg->data[o] = -1;
    res_args off = {a.x, w0, bneg};
    memset(a.x->grad, 0, a.x->n * sizeof(float));
    qat_tape_reset(&t);
    qat_tensor *y = res_forward(&t, &off);
    float dy[12];
    fill_uniform(dy, 12, -1, 1, 99);
    assert_int_equal(qat_tape_backward_seeded(&t, y, dy), QAT_STATUS_OK);
    assert_close(a.x->grad, dy, 12, 0, 0, "residual with the body off: dx = dout");

    qat_tape_free(&t);
    test_tensor_free(a.x);
    test_tensor_free(a.w);
    test_tensor_free(a.b);
    test_tensor_free(w0);
    test_tensor_free(bneg);
}

/* ---- flatten ------------------------------------------------------------------------ */

static void test_flatten_is_a_view(void **state) {
    (void)state;
    qat_tensor *x = test_tensor_filled(4, (int[]){2, 3, 2, 2}, -1, 1, 20);
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    qat_tensor *y = qat_flatten(&t, x);
    if (!y) fail_msg("%s", t.err.msg);
    assert_int_equal(y->ndim, 2);
    assert_int_equal(y->shape[0], 2);
    assert_int_equal(y->shape[1], 12);
    assert_int_equal(y->n, 24);
    assert_ptr_equal(y->data, x->data);
    assert_ptr_equal(y->grad, x->grad);
    assert_int_equal(t.n_nodes, 0);

    /* Already (N, C): unchanged shape. */
    qat_tensor *x2 = test_tensor_filled(2, (int[]){3, 5}, -1, 1, 21);
    qat_tensor *y2 = qat_flatten(&t, x2);
    assert_non_null(y2);
    assert_int_equal(y2->ndim, 2);
    assert_int_equal(y2->shape[0], 3);
    assert_int_equal(y2->shape[1], 5);

    /* An input without gradient gives a view without gradient. */
    qat_tensor *in = qat_tape_input(&t, 3, (int[]){2, 2, 2}, x->data);
    qat_tensor *y3 = qat_flatten(&t, in);
    assert_non_null(y3);
    assert_null(y3->grad);
    assert_int_equal(y3->shape[1], 4);
    qat_tape_free(&t);
    test_tensor_free(x);
    test_tensor_free(x2);
}

typedef struct flat_args {
    qat_tensor *x, *w, *b;
} flat_args;

static qat_tensor *flat_forward(qat_tape *t, void *user) {
    flat_args *a = user;
    return qat_linear(t, qat_flatten(t, a->x), a->w, a->b);
}

static void test_flatten_fd(void **state) {
    (void)state;
    flat_args a = {test_tensor_filled(4, (int[]){2, 2, 2, 3}, -1, 1, 22),
                   test_tensor_filled(2, (int[]){3, 12}, -1, 1, 23), test_tensor_filled(1, (int[]){3}, -1, 1, 24)};
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    fd_check(&t, flat_forward, &a, a.x, FD_EPS, FD_RTOL, FD_ATOL, 0, NULL, "linear(flatten(x)) dx");
    fd_check(&t, flat_forward, &a, a.w, FD_EPS, FD_RTOL, FD_ATOL, 0, NULL, "linear(flatten(x)) dW");
    qat_tape_free(&t);
    test_tensor_free(a.x);
    test_tensor_free(a.w);
    test_tensor_free(a.b);
}

/* ---- dropout ------------------------------------------------------------------------ */

typedef struct drop_args {
    qat_tensor *x;
    float p;
    qat_rng rng;
} drop_args;

/* Reseeds the generator on every call, so every forward draws the same mask. */
static qat_tensor *drop_forward(qat_tape *t, void *user) {
    drop_args *a = user;
    qat_rng_init(&a->rng, 77);
    t->rng = &a->rng;
    t->training = true;
    return qat_dropout(t, a->x, a->p);
}

static void test_dropout_fd(void **state) {
    (void)state;
    drop_args a = {.x = test_tensor_filled(2, (int[]){4, 8}, -1, 1, 30), .p = 0.4f};
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    qat_tensor *y = drop_forward(&t, &a);
    if (!y) fail_msg("%s", t.err.msg);
    size_t dropped = 0;
    for (size_t i = 0; i < y->n; i++) dropped += y->data[i] == 0;
    if (dropped == 0 || dropped == y->n)
        fail_msg("degenerate mask: %zu of %zu dropped", dropped, y->n);
    fd_check(&t, drop_forward, &a, a.x, FD_EPS, FD_RTOL, FD_ATOL, 0, NULL, "dropout dx");
    qat_tape_free(&t);
    test_tensor_free(a.x);
}

/* Kept values are x / (1 - p); about p of them are dropped; backward uses the same mask. */
static void test_dropout_mask(void **state) {
    (void)state;
    enum { N = 20000 };
    const float p = 0.3f;
    qat_tensor *x = test_tensor_filled(1, (int[]){N}, 0.5f, 1.5f, 31); /* no zeros */
    qat_rng rng;
    qat_rng_init(&rng, 5);
    qat_tape t;
    qat_tape_init(&t, 1 << 20);
    t.rng = &rng;
    qat_tensor *y = qat_dropout(&t, x, p);
    if (!y) fail_msg("%s", t.err.msg);
    assert_true(y != x);
    float *dy = malloc(N * sizeof(float));
    fill_uniform(dy, N, -1, 1, 32);
    assert_int_equal(qat_tape_backward_seeded(&t, y, dy), QAT_STATUS_OK);
    const float scale = 1.0f / (1.0f - p);
    size_t dropped = 0;
    for (size_t i = 0; i < N; i++) {
        if (y->data[i] == 0) {
            dropped++;
            if (x->grad[i] != 0)
                fail_msg("dropped element %zu has gradient %g", i, (double)x->grad[i]);
        } else {
            float want = x->data[i] * scale;
            if (fabsf(y->data[i] - want) > 1e-6f * fabsf(want))
                fail_msg("kept element %zu: got %.9g, expected x/(1-p) = %.9g", i,
                         (double)y->data[i], (double)want);
            float gwant = dy[i] * scale;
            if (fabsf(x->grad[i] - gwant) > 1e-6f * fabsf(gwant) + 1e-12f)
                fail_msg("kept element %zu: gradient %.9g, expected dout/(1-p) = %.9g", i,
                         (double)x->grad[i], (double)gwant);
        }
    }
    double rate = (double)dropped / N;
    /* Binomial sd is sqrt(p(1-p)/N) = 0.0032; 0.02 is over 6 sd. */
    if (fabs(rate - p) > 0.02) fail_msg("drop rate %.4f, expected %.2f", rate, (double)p);

    /* A second call continues the stream: a different mask. */
    qat_tensor *y2 = qat_dropout(&t, x, p);
    assert_non_null(y2);
    size_t differ = 0;
    for (size_t i = 0; i < N; i++) differ += (y->data[i] == 0) != (y2->data[i] == 0);
    assert_true(differ > N / 10);
    free(dy);
    qat_tape_free(&t);
    test_tensor_free(x);
}

/* Eval mode, and p = 0 in training, pass x through unchanged (gradient included). */
static void test_dropout_identity(void **state) {
    (void)state;
    qat_tensor *x = test_tensor_filled(2, (int[]){3, 4}, -1, 1, 40);
    float dy[12];
    fill_uniform(dy, 12, -1, 1, 41);
    qat_rng rng;
    qat_rng_init(&rng, 6);
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    t.rng = &rng;
    for (int k = 0; k < 2; k++) {
        qat_tape_reset(&t);
        memset(x->grad, 0, x->n * sizeof(float));
        t.training = k == 1;
        qat_tensor *y = qat_dropout(&t, x, k == 1 ? 0.0f : 0.5f);
        if (!y) fail_msg("%s", t.err.msg);
        assert_true(qat_tensor_same_shape(y, x));
        assert_close(y->data, x->data, 12, 0, 0, k ? "dropout p = 0" : "dropout in eval");
        assert_int_equal(qat_tape_backward_seeded(&t, y, dy), QAT_STATUS_OK);
        assert_close(x->grad, dy, 12, 0, 0, k ? "dropout p = 0 gradient" : "dropout eval gradient");
    }
    qat_tape_free(&t);
    test_tensor_free(x);
}

/* ---- bad arguments and NULL --------------------------------------------------------- */

static void test_elementwise_bad_args(void **state) {
    (void)state;
    qat_tensor *a = test_tensor_filled(2, (int[]){2, 3}, -1, 1, 50);
    qat_tensor *b = test_tensor_filled(2, (int[]){3, 2}, -1, 1, 51);
    qat_tensor *c = test_tensor_filled(1, (int[]){6}, -1, 1, 52);
    qat_rng rng;
    qat_rng_init(&rng, 7);
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    t.rng = &rng;

    assert_op_failed(&t, qat_add(&t, a, b), "add", "add (2, 3) + (3, 2)");
    qat_tape_reset(&t);
    assert_op_failed(&t, qat_add(&t, a, c), "add", "add (2, 3) + (6)");
    qat_tape_reset(&t);
    assert_op_failed(&t, qat_dropout(&t, a, 1.0f), "dropout", "dropout p = 1");
    qat_tape_reset(&t);
    assert_op_failed(&t, qat_dropout(&t, a, -0.1f), "dropout", "dropout p = -0.1");
    qat_tape_reset(&t);

    assert_null(qat_add(&t, NULL, a));
    assert_null(qat_add(&t, a, NULL));
    assert_null(qat_flatten(&t, NULL));
    assert_null(qat_dropout(&t, NULL, 0.5f));
    assert_int_equal(t.err.status, QAT_STATUS_OK);
    assert_int_equal(t.n_nodes, 0);

    /* Inference mode: no nodes. */
    t.grad_enabled = false;
    qat_tensor *y = qat_add(&t, a, a);
    assert_non_null(y);
    assert_null(y->grad);
    y = qat_dropout(&t, a, 0.5f);
    assert_non_null(y);
    assert_int_equal(t.n_nodes, 0);

    qat_tape_free(&t);
    test_tensor_free(a);
    test_tensor_free(b);
    test_tensor_free(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_fd),
        cmocka_unit_test(test_add_same_tensor_twice),
        cmocka_unit_test(test_add_one_side_without_grad),
        cmocka_unit_test(test_residual_fd),
        cmocka_unit_test(test_flatten_is_a_view),
        cmocka_unit_test(test_flatten_fd),
        cmocka_unit_test(test_dropout_fd),
        cmocka_unit_test(test_dropout_mask),
        cmocka_unit_test(test_dropout_identity),
        cmocka_unit_test(test_elementwise_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
