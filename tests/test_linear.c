/* test_linear.c - the fully connected layer (layers/linear.h).
 *
 *  - forward and backward match PyTorch (tests/fixtures/layers.bin, case "linear") to
 *    1e-4 relative;
 *  - the gradient of x, W and b matches central finite differences, with and without
 *    a bias;
 *  - the raw kernels accumulate (+=) and accept NULL for gradients not needed;
 *  - bad shapes return NULL with a message naming the op; a NULL input propagates.
 */
#include <ctype.h>
#include <math.h>
#include <string.h>

#include "layers/linear.h"
#include "testutil.h"

#define FD_EPS 1e-2f
#define FD_RTOL 1e-2
#define FD_ATOL 1e-3

/* ---- forward/backward against PyTorch ---------------------------------------------- */

static void test_linear_fixture(void **state) {
    (void)state;
    qat_fixture *fx = fixture_load("layers.bin");
    qat_tensor *x = fixture_tensor(fx, "linear", "x");
    qat_tensor *w = fixture_tensor(fx, "linear", "w");
    qat_tensor *b = fixture_tensor(fx, "linear", "b");
    qat_tape t;
    qat_tape_init(&t, 0);
    qat_tensor *y = qat_linear(&t, x, w, b);
    if (!y) fail_msg("linear failed: %s", t.err.msg);
    const qat_fixture_entry *ey = fixture_entry(fx, "linear.y");
    assert_shape(y, ey->ndim, ey->shape, "linear.y shape");
    fixture_check(fx, "linear", "y", y->data, y->n);
    if (qat_tape_backward_seeded(&t, y, fixture_get(fx, "linear.dout", y->n)) != QAT_STATUS_OK)
        fail_msg("backward failed: %s", t.err.msg);
    fixture_check(fx, "linear", "dx", x->grad, x->n);
    fixture_check(fx, "linear", "dw", w->grad, w->n);
    fixture_check(fx, "linear", "db", b->grad, b->n);
    qat_tape_free(&t);
    test_tensor_free(x);
    test_tensor_free(w);
    test_tensor_free(b);
    fixture_free(fx);
}

/* ---- finite differences ------------------------------------------------------------- */

typedef struct lin_args {
    qat_tensor *x, *w, *b;
} lin_args;

static qat_tensor *lin_forward(qat_tape *t, void *user) {
    lin_args *a = user;
    return qat_linear(t, a->x, a->w, a->b);
}

static void run_linear_fd(bool with_bias) {
    lin_args a;
    a.x = test_tensor_filled(2, (int[]){3, 4}, -1, 1, 11);
    a.w = test_tensor_filled(2, (int[]){5, 4}, -0.5f, 0.5f, 12);
    a.b = with_bias ? test_tensor_filled(1, (int[]){5}, -0.5f, 0.5f, 13) : NULL;
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    fd_check(&t, lin_forward, &a, a.x, FD_EPS, FD_RTOL, FD_ATOL, 0, NULL, "linear dx");
    fd_check(&t, lin_forward, &a, a.w, FD_EPS, FD_RTOL, FD_ATOL, 0, NULL, "linear dW");
    if (with_bias)
        fd_check(&t, lin_forward, &a, a.b, FD_EPS, FD_RTOL, FD_ATOL, 0, NULL, "linear db");
    qat_tape_free(&t);
    test_tensor_free(a.x);
    test_tensor_free(a.w);
    test_tensor_free(a.b);
}

static void test_linear_fd(void **state) {
    (void)state;
    run_linear_fd(true);
}

static void test_linear_fd_nobias(void **state) {
    (void)state;
    run_linear_fd(false);
}

/* An input without a gradient (a batch from qat_tape_input) still lets W and b learn. */
static void test_linear_input_without_grad(void **state) {
    (void)state;
    qat_tensor *w = test_tensor_filled(2, (int[]){2, 3}, -1, 1, 21);
    qat_tensor *b = test_tensor_filled(1, (int[]){2}, -1, 1, 22);
    const float xin[6] = {1, 2, 3, -1, 0.5f, 0};
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    qat_tensor *x = qat_tape_input(&t, 2, (int[]){2, 3}, xin);
    qat_tensor *y = qat_linear(&t, x, w, b);
    if (!y) fail_msg("linear failed: %s", t.err.msg);
    const float dy[4] = {1, -2, 0.5f, 3};
    assert_int_equal(qat_tape_backward_seeded(&t, y, dy), QAT_STATUS_OK);
    /* dW = dy^T x, db = sum_b dy */
    float dw[6], db[2];
    for (int o = 0; o < 2; o++) {
        db[o] = dy[o] + dy[2 + o];
        for (int c = 0; c < 3; c++) dw[o * 3 + c] = dy[o] * xin[c] + dy[2 + o] * xin[3 + c];
    }
    assert_close(w->grad, dw, 6, 1e-6, 1e-6, "dW");
    assert_close(b->grad, db, 2, 1e-6, 1e-6, "db");
    qat_tape_free(&t);
    test_tensor_free(w);
    test_tensor_free(b);
}

/* ---- the raw kernels ---------------------------------------------------------------- */

/* Forward against the definition; backward twice accumulates twice; NULL gradients are
 * skipped. */
static void test_linear_kernels(void **state) {
    (void)state;
    enum { B = 3, C = 6, OC = 4 };
    float x[B * C], w[OC * C], bias[OC], dout[B * OC], out[B * OC], ref[B * OC];
    fill_uniform(x, B * C, -1, 1, 31);
    fill_uniform(w, OC * C, -1, 1, 32);
    fill_uniform(bias, OC, -1, 1, 33);
    fill_uniform(dout, B * OC, -1, 1, 34);
    qat_linear_forward(out, x, w, bias, B, C, OC);
    for (int b = 0; b < B; b++)
        for (int o = 0; o < OC; o++) {
            double s = bias[o];
            for (int c = 0; c < C; c++) s += (double)x[b * C + c] * w[o * C + c];
            ref[b * OC + o] = (float)s;
        }
    assert_close(out, ref, B * OC, 1e-5, 1e-6, "linear_forward");
    qat_linear_forward(out, x, w, NULL, B, C, OC);
    for (int b = 0; b < B; b++)
        for (int o = 0; o < OC; o++) ref[b * OC + o] -= bias[o];
    assert_close(out, ref, B * OC, 1e-5, 1e-5, "linear_forward without bias");

    float dx[B * C] = {0}, dw[OC * C] = {0}, db[OC] = {0};
    float rdx[B * C], rdw[OC * C], rdb[OC];
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++) {
            double s = 0;
            for (int o = 0; o < OC; o++) s += (double)dout[b * OC + o] * w[o * C + c];
            rdx[b * C + c] = (float)(2 * s);
        }
    for (int o = 0; o < OC; o++) {
        double sb = 0;
        for (int b = 0; b < B; b++) sb += dout[b * OC + o];
        rdb[o] = (float)(2 * sb);
        for (int c = 0; c < C; c++) {
            double s = 0;
            for (int b = 0; b < B; b++) s += (double)dout[b * OC + o] * x[b * C + c];
            rdw[o * C + c] = (float)(2 * s);
        }
    }
    qat_linear_backward(dx, dw, db, dout, x, w, B, C, OC);
    qat_linear_backward(dx, dw, db, dout, x, w, B, C, OC);
    assert_close(dx, rdx, B * C, 1e-5, 1e-5, "linear_backward dinp (accumulated twice)");
    assert_close(dw, rdw, OC * C, 1e-5, 1e-5, "linear_backward dweight (accumulated twice)");
    assert_close(db, rdb, OC, 1e-5, 1e-5, "linear_backward dbias (accumulated twice)");

    float dw2[OC * C] = {0};
    qat_linear_backward(NULL, dw2, NULL, dout, x, w, B, C, OC);
    for (int i = 0; i < OC * C; i++) rdw[i] *= 0.5f;
    assert_close(dw2, rdw, OC * C, 1e-5, 1e-5, "linear_backward dweight only");
}

/* ---- inference mode ----------------------------------------------------------------- */

static void test_linear_inference(void **state) {
    (void)state;
    qat_tensor *x = test_tensor_filled(2, (int[]){2, 3}, -1, 1, 41);
    qat_tensor *w = test_tensor_filled(2, (int[]){4, 3}, -1, 1, 42);
    qat_tensor *b = test_tensor_filled(1, (int[]){4}, -1, 1, 43);
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    qat_tensor *y1 = qat_linear(&t, x, w, b);
    assert_non_null(y1);
    float train_out[8];
    memcpy(train_out, y1->data, sizeof train_out);
    qat_tape_reset(&t);
    t.grad_enabled = false;
    qat_tensor *y = qat_linear(&t, x, w, b);
    assert_non_null(y);
    assert_null(y->grad);
    assert_int_equal(t.n_nodes, 0);
    assert_close(y->data, train_out, 8, 0, 0, "inference output equals training output");
    qat_tape_free(&t);
    test_tensor_free(x);
    test_tensor_free(w);
    test_tensor_free(b);
}

/* ---- bad arguments ------------------------------------------------------------------ */

static void test_linear_bad_args(void **state) {
    (void)state;
    qat_tensor *x = test_tensor_filled(2, (int[]){2, 3}, -1, 1, 51);
    qat_tensor *w = test_tensor_filled(2, (int[]){4, 3}, -1, 1, 52);
    qat_tensor *w_bad = test_tensor_filled(2, (int[]){4, 5}, -1, 1, 53);
    qat_tensor *b = test_tensor_filled(1, (int[]){4}, -1, 1, 54);
    qat_tensor *b_bad = test_tensor_filled(1, (int[]){3}, -1, 1, 55);
    qat_tape t;
    qat_tape_init(&t, 1 << 16);

    assert_op_failed(&t, qat_linear(&t, x, w_bad, b), "linear", "in-features 3 vs weight (4, 5)");
    qat_tape_reset(&t);
    assert_op_failed(&t, qat_linear(&t, x, w, b_bad), "linear", "bias of 3 for 4 outputs");
    qat_tape_reset(&t);
    /* A conv output not flattened first: (2, 3, 1, 1) has the right count but is 4-D. */
    qat_tensor *x4 = test_tensor_new(4, (int[]){2, 3, 1, 1});
    assert_op_failed(&t, qat_linear(&t, x4, w, b), "linear", "4-D input");
    test_tensor_free(x4);
    qat_tape_reset(&t);

    /* A NULL input (a failed op upstream) gives NULL and no new message. */
    assert_null(qat_linear(&t, NULL, w, b));
    assert_int_equal(t.err.status, QAT_STATUS_OK);
    assert_int_equal(t.n_nodes, 0);

    /* In a chain, the first failure is the one reported. */
    qat_tensor *h = qat_linear(&t, x, w_bad, b);
    qat_tensor *y = qat_linear(&t, h, w, b);
    assert_op_failed(&t, y, "linear", "chain");

    qat_tape_free(&t);
    test_tensor_free(x);
    test_tensor_free(w);
    test_tensor_free(w_bad);
    test_tensor_free(b);
    test_tensor_free(b_bad);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear_fixture),
        cmocka_unit_test(test_linear_fd),
        cmocka_unit_test(test_linear_fd_nobias),
        cmocka_unit_test(test_linear_input_without_grad),
        cmocka_unit_test(test_linear_kernels),
        cmocka_unit_test(test_linear_inference),
        cmocka_unit_test(test_linear_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
