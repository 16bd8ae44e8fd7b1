/* test_conv2d.c - 2-D convolution (layers/conv2d.h).
 *
 *  - forward and backward match PyTorch (tests/fixtures/layers.bin, cases conv_*: plain,
 *    stride 2, padding with a non-square kernel, groups = 2, depthwise, depthwise with
 *    stride 2, 1x1 without bias) to 1e-4 relative;
 *  - the gradient of x, W and b matches central finite differences in each configuration;
 *  - the im2col kernel equals the naive reference loop; shape_init computes OH/OW and
 *    rejects impossible configurations;
 *  - bad shapes return NULL with a message naming the op; a NULL input propagates.
 */
#include <ctype.h>
#include <math.h>
#include <string.h>

#include "layers/conv2d.h"
#include "testutil.h"

#define FD_EPS 1e-2f
#define FD_RTOL 1e-2
#define FD_ATOL 1e-3

/* ---- forward/backward against PyTorch ---------------------------------------------- */

/* state: the case name; cfg = [stride, pad, groups, has_bias]. */
static void test_conv2d_fixture(void **state) {
    const char *c = *state;
    qat_fixture *fx = fixture_load("layers.bin");
    char name[128];
    snprintf(name, sizeof name, "%s.cfg", c);
    const float *cfg = fixture_get(fx, name, 4);
    int stride = (int)cfg[0], pad = (int)cfg[1], groups = (int)cfg[2];
    bool has_bias = cfg[3] != 0;
    qat_tensor *x = fixture_tensor(fx, c, "x");
    qat_tensor *w = fixture_tensor(fx, c, "w");
    qat_tensor *b = has_bias ? fixture_tensor(fx, c, "b") : NULL;
    qat_tape t;
    qat_tape_init(&t, 1 << 20);
    qat_tensor *y = qat_conv2d(&t, x, w, b, stride, pad, groups);
    if (!y) fail_msg("%s: conv2d failed: %s", c, t.err.msg);
    snprintf(name, sizeof name, "%s.y", c);
    const qat_fixture_entry *ey = fixture_entry(fx, name);
    assert_shape(y, ey->ndim, ey->shape, name);
    fixture_check(fx, c, "y", y->data, y->n);
    snprintf(name, sizeof name, "%s.dout", c);
    if (qat_tape_backward_seeded(&t, y, fixture_get(fx, name, y->n)) != QAT_STATUS_OK)
        fail_msg("%s: backward failed: %s", c, t.err.msg);
    fixture_check(fx, c, "dx", x->grad, x->n);
    fixture_check(fx, c, "dw", w->grad, w->n);
    if (has_bias) fixture_check(fx, c, "db", b->grad, b->n);
    qat_tape_free(&t);
    test_tensor_free(x);
    test_tensor_free(w);
    test_tensor_free(b);
    fixture_free(fx);
}

/* ---- finite differences ------------------------------------------------------------- */

typedef struct conv_cfg {
    const char *name;
    int N, C, H, W, OC, KH, KW, stride, pad, groups;
    bool bias;
} conv_cfg;

static conv_cfg FD_CASES[] = {
    {"plain", 2, 3, 5, 5, 2, 3, 3, 1, 0, 1, true},
    {"stride2", 1, 2, 7, 7, 3, 3, 3, 2, 0, 1, true},
    {"padding", 1, 2, 4, 5, 2, 3, 2, 1, 1, 1, true},
    {"stride2_pad1_even", 1, 2, 6, 6, 2, 3, 3, 2, 1, 1, true},
    {"groups2", 1, 4, 4, 4, 4, 3, 3, 1, 1, 2, true},
    {"depthwise", 2, 3, 5, 5, 3, 3, 3, 1, 1, 3, true},
    {"depthwise_multiplier2", 1, 2, 4, 4, 4, 3, 3, 1, 1, 2, true},
    {"nobias", 1, 2, 4, 4, 2, 2, 2, 1, 0, 1, false},
    {"stride3_gaps", 1, 2, 7, 8, 2, 2, 2, 3, 0, 1, true},
    {"pointwise", 2, 3, 3, 3, 2, 1, 1, 1, 0, 1, true},
};

typedef struct conv_args {
    qat_tensor *x, *w, *b;
    int stride, pad, groups;
} conv_args;

static qat_tensor *conv_forward(qat_tape *t, void *user) {
    conv_args *a = user;
    return qat_conv2d(t, a->x, a->w, a->b, a->stride, a->pad, a->groups);
}

static void test_conv2d_fd(void **state) {
    const conv_cfg *c = *state;
    conv_args a = {.stride = c->stride, .pad = c->pad, .groups = c->groups};
    a.x = test_tensor_filled(4, (int[]){c->N, c->C, c->H, c->W}, -1, 1, 101);
    a.w = test_tensor_filled(4, (int[]){c->OC, c->C / c->groups, c->KH, c->KW}, -0.5f, 0.5f, 102);
    a.b = c->bias ? test_tensor_filled(1, (int[]){c->OC}, -0.5f, 0.5f, 103) : NULL;
    qat_tape t;
    qat_tape_init(&t, 1 << 20);
    char what[96];
    snprintf(what, sizeof what, "conv2d %s dx", c->name);
    fd_check(&t, conv_forward, &a, a.x, FD_EPS, FD_RTOL, FD_ATOL, 0, NULL, what);
    snprintf(what, sizeof what, "conv2d %s dW", c->name);
    fd_check(&t, conv_forward, &a, a.w, FD_EPS, FD_RTOL, FD_ATOL, 0, NULL, what);
    if (c->bias) {
        snprintf(what, sizeof what, "conv2d %s db", c->name);
        fd_check(&t, conv_forward, &a, a.b, FD_EPS, FD_RTOL, FD_ATOL, 0, NULL, what);
    }
    qat_tape_free(&t);
    test_tensor_free(a.x);
    test_tensor_free(a.w);
    test_tensor_free(a.b);
}

/* ---- the kernels -------------------------------------------------------------------- */

static void test_conv2d_shape_init(void **state) {
    (void)state;
    qat_conv2d_shape s = {.N = 1, .C = 3, .H = 7, .W = 6, .OC = 4, .KH = 3, .KW = 2,
                          .stride = 2, .pad = 1, .groups = 1};
    assert_true(qat_conv2d_shape_init(&s));
    assert_int_equal(s.OH, (7 + 2 - 3) / 2 + 1);
    assert_int_equal(s.OW, (6 + 2 - 2) / 2 + 1);

    qat_conv2d_shape bad = s;
    bad.groups = 2; /* 3 channels */
    assert_false(qat_conv2d_shape_init(&bad));
    bad = s;
    bad.C = 4;
    bad.OC = 3;
    bad.groups = 2; /* 3 outputs */
    assert_false(qat_conv2d_shape_init(&bad));
    bad = s;
    bad.stride = 0;
    assert_false(qat_conv2d_shape_init(&bad));
    bad = s;
    bad.pad = -1;
    assert_false(qat_conv2d_shape_init(&bad));
    bad = s;
    bad.pad = 0;
    bad.KH = 8; /* taller than the input */
    assert_false(qat_conv2d_shape_init(&bad));
}

/* The im2col + sgemm kernel equals the naive definition on a larger, awkward shape. */
static void test_conv2d_matches_reference(void **state) {
    (void)state;
    const qat_conv2d_shape shapes[] = {
        {.N = 2, .C = 6, .H = 11, .W = 9, .OC = 8, .KH = 3, .KW = 3, .stride = 2, .pad = 1,
         .groups = 2},
        {.N = 1, .C = 5, .H = 8, .W = 8, .OC = 5, .KH = 5, .KW = 5, .stride = 1, .pad = 2,
         .groups = 5},
        {.N = 3, .C = 4, .H = 6, .W = 7, .OC = 7, .KH = 1, .KW = 1, .stride = 1, .pad = 0,
         .groups = 1},
    };
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        qat_conv2d_shape s = shapes[k];
        assert_true(qat_conv2d_shape_init(&s));
        size_t nin = (size_t)s.N * s.C * s.H * s.W;
        size_t nw = (size_t)s.OC * (s.C / s.groups) * s.KH * s.KW;
        size_t nout = (size_t)s.N * s.OC * s.OH * s.OW;
        float *inp = malloc(nin * sizeof(float)), *w = malloc(nw * sizeof(float));
        float *bias = malloc((size_t)s.OC * sizeof(float));
        float *out = malloc(nout * sizeof(float)), *ref = malloc(nout * sizeof(float));
        float *scratch = malloc(qat_conv2d_scratch_floats(&s) * sizeof(float));
        fill_uniform(inp, nin, -1, 1, 201 + k);
        fill_uniform(w, nw, -1, 1, 301 + k);
        fill_uniform(bias, (size_t)s.OC, -1, 1, 401 + k);
        qat_conv2d_forward(out, scratch, inp, w, bias, &s);
        qat_conv2d_forward_ref(ref, inp, w, bias, &s);
        char what[64];
        snprintf(what, sizeof what, "conv2d_forward vs reference, shape %zu", k);
        assert_close(out, ref, nout, 1e-5, 1e-5, what);
        free(inp);
        free(w);
        free(bias);
        free(out);
        free(ref);
        free(scratch);
    }
}

/* The raw backward accumulates (+=) and skips NULL gradients: a 3x3 padded shape (through
 * im2col) and a 1x1 shape (which may skip im2col). */
static void test_conv2d_backward_accumulates(void **state) {
    (void)state;
    const qat_conv2d_shape shapes[] = {
        {.N = 2, .C = 2, .H = 5, .W = 5, .OC = 3, .KH = 3, .KW = 3, .stride = 1, .pad = 1,
         .groups = 1},
        {.N = 2, .C = 4, .H = 3, .W = 4, .OC = 3, .KH = 1, .KW = 1, .stride = 1, .pad = 0,
         .groups = 1},
    };
    for (size_t k = 0; k < 2; k++) {
        qat_conv2d_shape s = shapes[k];
        assert_true(qat_conv2d_shape_init(&s));
        size_t nin = (size_t)s.N * s.C * s.H * s.W, nw = (size_t)s.OC * s.C * s.KH * s.KW;
        size_t nout = (size_t)s.N * s.OC * s.OH * s.OW, nb = (size_t)s.OC;
        float *inp = malloc(nin * sizeof(float)), *w = malloc(nw * sizeof(float));
        float *dout = malloc(nout * sizeof(float));
        float *dx1 = calloc(nin, sizeof(float)), *dw1 = calloc(nw, sizeof(float));
        float *db1 = calloc(nb, sizeof(float)), *dx2 = calloc(nin, sizeof(float));
        float *dw2 = calloc(nw, sizeof(float)), *db2 = calloc(nb, sizeof(float));
        float *dw_only = calloc(nw, sizeof(float));
        size_t nscratch = qat_conv2d_scratch_floats(&s);
        float *scratch = malloc((nscratch ? nscratch : 1) * sizeof(float));
        fill_uniform(inp, nin, -1, 1, 501 + k);
        fill_uniform(w, nw, -1, 1, 502 + k);
        fill_uniform(dout, nout, -1, 1, 503 + k);
        qat_conv2d_backward(dx1, dw1, db1, scratch, dout, inp, w, &s);
        qat_conv2d_backward(dx2, dw2, db2, scratch, dout, inp, w, &s);
        qat_conv2d_backward(dx2, dw2, db2, scratch, dout, inp, w, &s);
        for (size_t i = 0; i < nin; i++) dx1[i] *= 2;
        for (size_t i = 0; i < nw; i++) dw1[i] *= 2;
        for (size_t i = 0; i < nb; i++) db1[i] *= 2;
        char what[64];
        snprintf(what, sizeof what, "shape %zu: dinp accumulated twice", k);
        assert_close(dx2, dx1, nin, 1e-6, 1e-6, what);
        snprintf(what, sizeof what, "shape %zu: dweight accumulated twice", k);
        assert_close(dw2, dw1, nw, 1e-6, 1e-6, what);
        snprintf(what, sizeof what, "shape %zu: dbias accumulated twice", k);
        assert_close(db2, db1, nb, 1e-6, 1e-6, what);
        qat_conv2d_backward(NULL, dw_only, NULL, scratch, dout, inp, w, &s);
        for (size_t i = 0; i < nw; i++) dw1[i] *= 0.5f;
        snprintf(what, sizeof what, "shape %zu: dweight alone", k);
        assert_close(dw_only, dw1, nw, 1e-6, 1e-6, what);
        free(inp);
        free(w);
        free(dout);
        free(dx1);
        free(dw1);
        free(db1);
        free(dx2);
        free(dw2);
        free(db2);
        free(dw_only);
        free(scratch);
    }
}

/* The first layer of a network sees a batch without gradient: backward must still give
 * the weights the same gradient (and not write to the missing input gradient). */
static void test_conv2d_input_without_grad(void **state) {
    (void)state;
    qat_tensor *xh = test_tensor_filled(4, (int[]){2, 2, 5, 5}, -1, 1, 511);
    qat_tensor *w1 = test_tensor_filled(4, (int[]){3, 2, 3, 3}, -1, 1, 512);
    qat_tensor *b1 = test_tensor_filled(1, (int[]){3}, -1, 1, 513);
    qat_tensor *w2 = test_tensor_filled(4, (int[]){3, 2, 3, 3}, -1, 1, 512);
    qat_tensor *b2 = test_tensor_filled(1, (int[]){3}, -1, 1, 513);
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    qat_tensor *x = qat_tape_input(&t, 4, (int[]){2, 2, 5, 5}, xh->data);
    qat_tensor *y = qat_conv2d(&t, x, w1, b1, 2, 1, 1);
    if (!y) fail_msg("%s", t.err.msg);
    float *dy = malloc(y->n * sizeof(float));
    fill_uniform(dy, y->n, -1, 1, 514);
    assert_int_equal(qat_tape_backward_seeded(&t, y, dy), QAT_STATUS_OK);
    qat_tape_reset(&t);
    y = qat_conv2d(&t, xh, w2, b2, 2, 1, 1);
    if (!y) fail_msg("%s", t.err.msg);
    assert_int_equal(qat_tape_backward_seeded(&t, y, dy), QAT_STATUS_OK);
    assert_close(w1->grad, w2->grad, w1->n, 1e-6, 1e-7, "dW with an input without gradient");
    assert_close(b1->grad, b2->grad, b1->n, 1e-6, 1e-7, "db with an input without gradient");
    free(dy);
    qat_tape_free(&t);
    test_tensor_free(xh);
    test_tensor_free(w1);
    test_tensor_free(b1);
    test_tensor_free(w2);
    test_tensor_free(b2);
}

/* ---- inference mode ----------------------------------------------------------------- */

static void test_conv2d_inference(void **state) {
    (void)state;
    qat_tensor *x = test_tensor_filled(4, (int[]){1, 2, 4, 4}, -1, 1, 601);
    qat_tensor *w = test_tensor_filled(4, (int[]){3, 2, 3, 3}, -1, 1, 602);
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    t.grad_enabled = false;
    qat_tensor *y = qat_conv2d(&t, x, w, NULL, 1, 1, 1);
    if (!y) fail_msg("conv2d failed: %s", t.err.msg);
    assert_shape(y, 4, (int[]){1, 3, 4, 4}, "output shape");
    assert_null(y->grad);
    assert_int_equal(t.n_nodes, 0);
    qat_tape_free(&t);
    test_tensor_free(x);
    test_tensor_free(w);
}

/* ---- bad arguments ------------------------------------------------------------------ */

static void test_conv2d_bad_args(void **state) {
    (void)state;
    qat_tensor *x = test_tensor_filled(4, (int[]){1, 3, 5, 5}, -1, 1, 701);
    qat_tensor *x4 = test_tensor_filled(4, (int[]){1, 4, 5, 5}, -1, 1, 702);
    qat_tensor *x2d = test_tensor_filled(2, (int[]){3, 5}, -1, 1, 703);
    qat_tensor *w = test_tensor_filled(4, (int[]){2, 3, 3, 3}, -1, 1, 704);
    qat_tensor *w_c4 = test_tensor_filled(4, (int[]){2, 4, 3, 3}, -1, 1, 705);
    qat_tensor *w_g = test_tensor_filled(4, (int[]){3, 2, 3, 3}, -1, 1, 706);
    qat_tensor *w_big = test_tensor_filled(4, (int[]){2, 3, 7, 7}, -1, 1, 707);
    qat_tensor *b = test_tensor_filled(1, (int[]){2}, -1, 1, 708);
    qat_tensor *b_bad = test_tensor_filled(1, (int[]){5}, -1, 1, 709);
    qat_tape t;
    qat_tape_init(&t, 1 << 16);

    assert_op_failed(&t, qat_conv2d(&t, x, w_c4, b, 1, 0, 1), "conv2d",
                  "3 input channels, weight for 4");
    qat_tape_reset(&t);
    assert_op_failed(&t, qat_conv2d(&t, x, w, b, 1, 0, 2), "conv2d", "groups 2 do not divide 3");
    qat_tape_reset(&t);
    assert_op_failed(&t, qat_conv2d(&t, x4, w_g, NULL, 1, 0, 2), "conv2d",
                  "groups 2 do not divide 3 outputs");
    qat_tape_reset(&t);
    assert_op_failed(&t, qat_conv2d(&t, x, w_big, b, 1, 0, 1), "conv2d", "kernel larger than input");
    qat_tape_reset(&t);
    assert_op_failed(&t, qat_conv2d(&t, x, w, b_bad, 1, 0, 1), "conv2d", "bias of 5 for 2 outputs");
    qat_tape_reset(&t);
    assert_op_failed(&t, qat_conv2d(&t, x2d, w, b, 1, 0, 1), "conv2d", "2-D input");
    qat_tape_reset(&t);
    assert_op_failed(&t, qat_conv2d(&t, x, w, b, 0, 0, 1), "conv2d", "stride 0");
    qat_tape_reset(&t);

    assert_null(qat_conv2d(&t, NULL, w, b, 1, 0, 1));
    assert_int_equal(t.err.status, QAT_STATUS_OK);
    assert_int_equal(t.n_nodes, 0);

    qat_tape_free(&t);
    test_tensor_free(x);
    test_tensor_free(x4);
    test_tensor_free(x2d);
    test_tensor_free(w);
    test_tensor_free(w_c4);
    test_tensor_free(w_g);
    test_tensor_free(w_big);
    test_tensor_free(b);
    test_tensor_free(b_bad);
}

/* cmocka prints a test's name: give each case its own. */
#define FIXTURE_TEST(c) {"test_conv2d_fixture " c, test_conv2d_fixture, NULL, NULL, (void *)(c)}
#define FD_TEST(i, label) {"test_conv2d_fd " label, test_conv2d_fd, NULL, NULL, &FD_CASES[i]}

int main(void) {
    const struct CMUnitTest tests[] = {
        FIXTURE_TEST("conv_plain"),
        FIXTURE_TEST("conv_stride2"),
        FIXTURE_TEST("conv_pad"),
        FIXTURE_TEST("conv_groups2"),
        FIXTURE_TEST("conv_depthwise"),
        FIXTURE_TEST("conv_dw_stride2"),
        FIXTURE_TEST("conv_pointwise_nobias"),
        FD_TEST(0, "plain"),
        FD_TEST(1, "stride2"),
        FD_TEST(2, "padding"),
        FD_TEST(3, "stride2_pad1_even"),
        FD_TEST(4, "groups2"),
        FD_TEST(5, "depthwise"),
        FD_TEST(6, "depthwise_multiplier2"),
        FD_TEST(7, "nobias"),
        FD_TEST(8, "stride3_gaps"),
        FD_TEST(9, "pointwise"),
        cmocka_unit_test(test_conv2d_shape_init),
        cmocka_unit_test(test_conv2d_matches_reference),
        cmocka_unit_test(test_conv2d_backward_accumulates),
        cmocka_unit_test(test_conv2d_input_without_grad),
        cmocka_unit_test(test_conv2d_inference),
        cmocka_unit_test(test_conv2d_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
