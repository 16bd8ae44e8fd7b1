/* test_smooth.c - SmoothQuant and per-token dynamic activation quantization (quant/smooth.h).
 *
 *  - The smoothing factors of the paper's formula, and a whole calibration of a small MLP
 *    (12 features with an outlier channel, a tiny one and a dead one -> 16 -> ReLU -> 3)
 *    at alpha 0, 0.5, 0.85 and 1: the input divisor and every folded weight and bias equal
 *    tests/fixtures/smoothquant.bin (gen_smoothquant.py, the authors' smooth.py in torch).
 *  - The smoothed float model computes the same outputs.
 *  - smooth=auto smooths the outlier layer and lowers its output error.
 *  - Per-row dynamic fake quantization equals the fixture bit for bit at 8 and 4 bits; in a
 *    model with "token", the points feeding linear layers ignore their calibrated range
 *    (the scale comes from each row at run time) and the logits keep theirs; export
 *    refuses such a model.
 *  - The spec's options parse, print and refuse bad values.
 */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/tape.h"
#include "data/loader.h"
#include "layers/model_file.h"
#include "quant/lower.h"
#include "quant/quant.h"
#include "quant/smooth.h"
#include "train/calibrate.h"
#include "train/open.h"

enum { N = 64, D = 12, H = 16, C = 3 };

static qat_fixture *fx;

static int setup(void **state) {
    (void)state;
    fx = fixture_load("smoothquant.bin");
    return fx ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    fixture_free(fx);
    return 0;
}

/* The fixture's MLP with its weights, quantized with `spec`. */
static qat_model *make_model(const char *spec) {
    qat_model *m = NULL;
    qat_error err = {0};
    if (qat_model_parse("input 12\nlinear out=16\nrelu\nlinear out=3\n", "test", &m, &err)) fail_msg("%s", err.msg);
    qat_rng r;
    qat_rng_init(&r, 1);
    if (qat_model_finalize(m, &r)) fail_msg("%s", m->err.msg);
    qat_layer *l1 = &m->root.layers[0], *l2 = &m->root.layers[2];
    memcpy(l1->weight.data, fixture_get(fx, "w1", H * D), sizeof(float) * H * D);
    memcpy(l1->bias.data, fixture_get(fx, "b1", H), sizeof(float) * H);
    memcpy(l2->weight.data, fixture_get(fx, "w2", C * H), sizeof(float) * C * H);
    memcpy(l2->bias.data, fixture_get(fx, "b2", C), sizeof(float) * C);
    if (spec && qat_model_quantize(m, spec, NULL, &err)) fail_msg("%s", err.msg);
    return m;
}

/* The fixture's x as a features data set (labels 0), in a loader of 16 in order. */
static void make_loader(qat_dataset *ds, qat_loader *l) {
    memset(ds, 0, sizeof *ds);
    ds->kind = QAT_DATASET_KIND_FEATURES;
    ds->n = N;
    ds->dim = D;
    ds->n_classes = C;
    ds->features = malloc(sizeof(float) * N * D);
    ds->labels = calloc(N, sizeof(int32_t));
    memcpy(ds->features, fixture_get(fx, "x", N * D), sizeof(float) * N * D);
    qat_loader_config cfg = qat_loader_config_default();
    cfg.batch_size = 16;
    cfg.shuffle = false;
    qat_error err = {0};
    if (qat_loader_init(l, ds, &cfg, &err)) fail_msg("%s", err.msg);
}

static void calibrate(qat_model *m) {
    qat_dataset ds;
    qat_loader l;
    make_loader(&ds, &l);
    qat_error err = {0};
    if (qat_calibrate(m, &l, N, &err)) fail_msg("%s", err.msg);
    qat_loader_free(&l);
    qat_dataset_free(&ds);
}

/* The model's outputs on the fixture's x (fake quant as set), into y (N x C). */
static void outputs(qat_model *m, float *y) {
    qat_tape t;
    qat_tape_init(&t, 0);
    t.grad_enabled = false;
    t.training = false;
    qat_tensor *x = qat_tape_input(&t, 2, (int[]){N, D}, fixture_get(fx, "x", N * D));
    qat_tensor *o = qat_model_forward(m, &t, x);
    if (!o) fail_msg("%s", t.err.msg);
    memcpy(y, o->data, sizeof(float) * N * C);
    qat_tape_free(&t);
}

static void expect_close(const float *got, const float *want, size_t n, double rel, const char *what) {
    for (size_t i = 0; i < n; i++) {
        double tol = rel * fabs((double)want[i]) + 1e-7;
        if (!(fabs((double)got[i] - want[i]) <= tol))
            fail_msg("%s[%zu]: %.9g, want %.9g", what, i, (double)got[i], (double)want[i]);
    }
}

static const float ALPHAS[] = {0.0f, 0.5f, 0.85f, 1.0f};

static void test_factors(void **state) {
    (void)state;
    const float *x = fixture_get(fx, "x", N * D), *w1 = fixture_get(fx, "w1", H * D);
    float xmax[D] = {0}, s[D];
    for (int r = 0; r < N; r++)
        for (int j = 0; j < D; j++) xmax[j] = fmaxf(xmax[j], fabsf(x[r * D + j]));
    assert_true(xmax[11] == 0.0f); /* the dead channel */
    for (size_t k = 0; k < sizeof ALPHAS / sizeof *ALPHAS; k++) {
        char name[32];
        snprintf(name, sizeof name, "a%g/s1", (double)ALPHAS[k]);
        qat_smooth_factors(s, xmax, w1, H, D, ALPHAS[k]);
        expect_close(s, fixture_get(fx, name, D), D, 2e-6, name);
        assert_true(s[11] == 1.0f);
    }
}

/* A whole calibration with smooth=ALPHA folds what the fixture folds. */
static void test_calibration_folds(void **state) {
    (void)state;
    for (size_t k = 0; k < sizeof ALPHAS / sizeof *ALPHAS; k++) {
        char spec[64], name[64];
        snprintf(spec, sizeof spec, "w8a8,smooth=%g", (double)ALPHAS[k]);
        qat_model *m = make_model(spec);
        assert_non_null(m->quant->in_smooth.data);
        assert_int_equal(m->quant->in_smooth.n, D);
        calibrate(m);
        const qat_layer *l1 = &m->root.layers[0], *l2 = &m->root.layers[2];
#define CHECK(ptr, entry, n)                                             \
    snprintf(name, sizeof name, "a%g/" entry, (double)ALPHAS[k]);        \
    expect_close(ptr, fixture_get(fx, name, n), n, 2e-5, name)
        CHECK(m->quant->in_smooth.data, "s1", D);
        CHECK(l1->weight.data, "w1", H * D);
        CHECK(l1->bias.data, "b1", H);
        CHECK(l2->weight.data, "w2", C * H);
#undef CHECK
        qat_model_free(m);
    }
}

/* The float model (fake quant off) computes the same function after smoothing. */
static void test_function_preserved(void **state) {
    (void)state;
    qat_model *plain = make_model(NULL), *m = make_model("w8a8,smooth=0.5");
    calibrate(m);
    float y0[N * C], y1[N * C];
    outputs(plain, y0);
    m->quant->fake_quant = false;
    outputs(m, y1);
    for (int i = 0; i < N * C; i++) assert_true(fabsf(y1[i] - y0[i]) <= 1e-4f * fmaxf(1.0f, fabsf(y0[i])));
    qat_model_free(plain);
    qat_model_free(m);
}

/* smooth=auto: the outlier layer is smoothed, with a smaller output error than unsmoothed;
 * and the quantized model is closer to the float one than without smoothing. */
static void test_auto(void **state) {
    (void)state;
    qat_model *m = make_model("w8a8,smooth=auto");
    qat_smooth sm;
    qat_error err = {0};
    assert_int_equal(qat_smooth_begin(&sm, m, &err), QAT_STATUS_OK);
    assert_int_equal(sm.n, 2);
    assert_null(sm.sites[0].prev);
    assert_ptr_equal(sm.sites[1].prev, &m->root.layers[0]);
    qat_tape t;
    qat_tape_init(&t, 0);
    t.grad_enabled = false;
    qat_tensor *x = qat_tape_input(&t, 2, (int[]){N, D}, fixture_get(fx, "x", N * D));
    assert_int_equal(qat_smooth_observe(&sm, m, &t, x, &err), QAT_STATUS_OK);
    assert_int_equal(qat_smooth_end(&sm, m, &err), QAT_STATUS_OK);
    assert_int_equal(sm.sites[0].n_rows, N);
    assert_true(sm.sites[0].alpha >= 0.0f);
    assert_true(sm.sites[0].err_best < 0.5 * sm.sites[0].err_none);
    qat_smooth_free(&sm);
    qat_tape_free(&t);
    qat_model_free(m);

    /* end to end: the quantized outputs' error with and without smoothing */
    qat_model *f = make_model(NULL), *a = make_model("w8a8"), *b = make_model("w8a8,smooth=auto");
    calibrate(a);
    calibrate(b);
    float yf[N * C], ya[N * C], yb[N * C];
    outputs(f, yf);
    outputs(a, ya);
    outputs(b, yb);
    double ea = 0, eb = 0;
    for (int i = 0; i < N * C; i++) {
        ea += (ya[i] - yf[i]) * (double)(ya[i] - yf[i]);
        eb += (yb[i] - yf[i]) * (double)(yb[i] - yf[i]);
    }
    print_message("output MSE: w8a8 %.3g, w8a8,smooth=auto %.3g\n", ea / (N * C), eb / (N * C));
    assert_true(eb < 0.25 * ea);
    qat_model_free(f);
    qat_model_free(a);
    qat_model_free(b);
}

static void test_per_token_fixture(void **state) {
    (void)state;
    enum { R = 5, K = 40 };
    const float *x = fixture_get(fx, "tok/x", R * K);
    for (int bits = 8; bits >= 4; bits -= 4) {
        char name[32];
        snprintf(name, sizeof name, "tok/b%d/y", bits);
        const float *want = fixture_get(fx, name, R * K);
        float y[R * K], s[R];
        int32_t z[R];
        qat_fq_rows_dynamic(y, x, R, K, -(1 << (bits - 1)), (1 << (bits - 1)) - 1, s, z);
        for (int i = 0; i < R * K; i++)
            if (y[i] != want[i]) fail_msg("%s[%d]: %.9g, want %.9g", name, i, (double)y[i], (double)want[i]);
        for (int k = 0; k < K; k++) assert_true(y[3 * K + k] == 0.0f); /* the zero row */
    }
}

/* With "token" the points feeding linear layers take their scale from each row: a wrong
 * calibrated range changes nothing there, while the logits' range still counts. */
static void test_token_model(void **state) {
    (void)state;
    qat_model *m = make_model("w8a8,token");
    calibrate(m);
    qat_quant *q = m->quant;
    qat_layer_quant *u1 = m->root.layers[0].quant, *u2 = m->root.layers[2].quant;
    assert_true(q->input.dynamic);
    assert_true(u1->out.dynamic);
    assert_false(u2->out.dynamic);
    float y0[N * C], y1[N * C];
    outputs(m, y0);
    q->input.range.data[0] = 0.0f, q->input.range.data[1] = 1e-3f;
    u1->out.range.data[0] = 0.0f, u1->out.range.data[1] = 1e-3f;
    outputs(m, y1);
    assert_memory_equal(y0, y1, sizeof y0);
    u2->out.range.data[1] *= 0.5f;
    outputs(m, y1);
    assert_memory_not_equal(y0, y1, sizeof y0);
    qat_model_free(m);

    /* the integer model has no per-row requantization: export refuses, naming the layer */
    qat_model *im = NULL;
    qat_error err = {0};
    if (qat_model_parse("input 1 4 4\nflatten\nlinear out=8\nrelu\nlinear out=3\n", "test", &im, &err))
        fail_msg("%s", err.msg);
    qat_rng r;
    qat_rng_init(&r, 1);
    assert_int_equal(qat_model_finalize(im, &r), QAT_STATUS_OK);
    qat_normalization norm = qat_normalization_identity();
    assert_int_equal(qat_model_quantize(im, "w8a8,token", &norm, &err), QAT_STATUS_OK);
    assert_false(im->quant->input.dynamic); /* uint8 pixels keep the spec's fixed mapping */
    assert_null(im->quant->in_smooth.data);
    qat_int_model lm;
    assert_int_equal(qat_lower(im, &lm, &err), QAT_STATUS_INVALID_ARG);
    assert_non_null(strstr(err.msg, "layer 1"));
    assert_non_null(strstr(err.msg, "per token"));
    qat_model_free(im);
}

static void test_spec(void **state) {
    (void)state;
    qat_quant_spec s;
    qat_error err = {0};
    char buf[256];
    assert_int_equal(qat_quant_spec_parse(&s, "w8a8,smooth", &err), QAT_STATUS_OK);
    assert_true(s.smooth && s.smooth_alpha == 0.5f && !s.token);
    qat_quant_spec_format(&s, buf, sizeof buf);
    assert_string_equal(buf, "w8a8,smooth=0.5,sim=exact");
    assert_int_equal(qat_quant_spec_parse(&s, "w8a8,smooth=auto,token", &err), QAT_STATUS_OK);
    assert_true(s.smooth && s.smooth_alpha < 0 && s.token);
    qat_quant_spec_format(&s, buf, sizeof buf);
    assert_string_equal(buf, "w8a8,smooth=auto,token,sim=exact");
    assert_int_equal(qat_quant_spec_parse(&s, buf, &err), QAT_STATUS_OK);
    assert_int_equal(qat_quant_spec_parse(&s, "w8a8,smooth=0.85", &err), QAT_STATUS_OK);
    assert_true(s.smooth_alpha == 0.85f);
    const char *bad[] = {"w8a8,smooth=1.5", "w8a8,smooth=-0.1", "w8a8,smooth=x", "w8a8,token=1"};
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        err = (qat_error){0};
        assert_int_equal(qat_quant_spec_parse(&s, bad[k], &err), QAT_STATUS_INVALID_ARG);
        assert_non_null(strstr(err.msg, bad[k]));
    }
}

/* A model without a linear layer fed by the inputs smooths nothing there; an image model
 * gets no input divisor. */
static void test_sites(void **state) {
    (void)state;
    qat_model *m = NULL;
    qat_error err = {0};
    if (qat_model_parse("input 12\nlinear out=16\nrelu6\nlinear out=3\n", "test", &m, &err)) fail_msg("%s", err.msg);
    qat_rng r;
    qat_rng_init(&r, 1);
    assert_int_equal(qat_model_finalize(m, &r), QAT_STATUS_OK);
    assert_int_equal(qat_model_quantize(m, "w8a8,smooth", NULL, &err), QAT_STATUS_OK);
    qat_smooth sm;
    assert_int_equal(qat_smooth_begin(&sm, m, &err), QAT_STATUS_OK);
    assert_int_equal(sm.n, 1); /* ReLU6 is no ReLU: relu6(z) / s != relu6(z / s) */
    assert_null(sm.sites[0].prev);
    qat_smooth_free(&sm);
    qat_model_free(m);

    if (qat_model_parse("input 1 4 4\nflatten\nlinear out=8\nrelu\nlinear out=3\n", "test", &m, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(qat_model_finalize(m, &r), QAT_STATUS_OK);
    qat_normalization norm = qat_normalization_identity();
    assert_int_equal(qat_model_quantize(m, "w8a8,smooth", &norm, &err), QAT_STATUS_OK);
    assert_null(m->quant->in_smooth.data); /* uint8 pixels: no divisor, only hidden layers */
    assert_int_equal(qat_smooth_begin(&sm, m, &err), QAT_STATUS_OK);
    assert_int_equal(sm.n, 1);
    assert_ptr_equal(sm.sites[0].layer, &m->root.layers[3]);
    assert_ptr_equal(sm.sites[0].prev, &m->root.layers[1]);
    qat_smooth_free(&sm);
    qat_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_factors),         cmocka_unit_test(test_calibration_folds),
        cmocka_unit_test(test_function_preserved), cmocka_unit_test(test_auto),
        cmocka_unit_test(test_per_token_fixture), cmocka_unit_test(test_token_model),
        cmocka_unit_test(test_spec),            cmocka_unit_test(test_sites),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
