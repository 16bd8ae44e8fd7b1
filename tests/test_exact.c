/* test_exact.c - QAT's exact simulation (quant/exact.h, "sim=exact"): the spec's
 * requantization written twice (quant/requant.h and the runtime's fixedpoint.h) agrees,
 * and the fake-quant forward of a model gives the integer runtime's logits, every one,
 * at 8, 4 and 2 bits, with BN, depthwise and strided convs, a residual add, pools, a
 * lookup-table activation and linear layers. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/rng.h"
#include "export/int8.h"
#include "layers/model_file.h"
#include "quant/lower.h"
#include "quant/quant.h"
#include "layers/loss.h"
#include "quant/requant.h"
#include "runtime/fixedpoint.h"
#include "runtime/runtime.h"
#include "testutil.h"

/* ---- the two implementations of the spec's multiplier ---- */

static uint64_t next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* One rounding of x 2^left M0 / 2^(31 + right), half away from zero, in long double
 * (exact: the product has at most 62 bits, a long double 64). */
static int32_t single_ref(int32_t x, int32_t M0, int shift) {
    const int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    long double p = (long double)((int64_t)x * ((int64_t)1 << left)) * M0;
    return (int32_t)roundl(ldexpl(p, -31 - right));
}

static void test_requant_matches_runtime(void **state) {
    (void)state;
    uint64_t s = 0x9E3779B97F4A7C15ull;
    long n_diff_single = 0, n = 0;
    for (int shift = -31; shift <= 30; shift++) {
        const int left = shift > 0 ? shift : 0;
        for (int k = 0; k < 4000; k++) {
            const int32_t M0 = (int32_t)((1u << 30) + (uint32_t)(next(&s) % (1u << 30)));
            int64_t lim = ((int64_t)1 << (31 - left)) - 1;
            int32_t x = (int32_t)((int64_t)(next(&s) % (uint64_t)(2 * lim + 1)) - lim);
            if (k < 8) x = (int32_t)(k % 2 ? lim : -lim) >> (k / 2); /* the ends of the range */
            const int32_t a = qat_requant_exact(x, M0, shift), b = qrt_multiply_by_quantized_multiplier(x, M0, shift);
            if (a != b) fail_msg("x %d M0 %d shift %d: quant %d, runtime %d", x, M0, shift, a, b);
            const int32_t c = qat_requant_single(x, M0, shift), d = single_ref(x, M0, shift);
            if (c != d) fail_msg("single rounding, x %d M0 %d shift %d: %d, reference %d", x, M0, shift, c, d);
            n_diff_single += a != c;
            n++;
        }
    }
    /* Exact ties of the second rounding, where the two forms part: x M0 / 2^31 = 2.5 + a
     * hair below, at shift -1: the spec gives round(round(2.4999..)/2)... and a case each way. */
    for (int32_t x = -70000; x <= 70000; x += 7) {
        const int32_t M0 = 1518500250; /* sqrt(2)/2 * 2^31 */
        for (int sh = -3; sh <= 0; sh++)
            if (qat_requant_exact(x, M0, sh) != qrt_multiply_by_quantized_multiplier(x, M0, sh))
                fail_msg("x %d shift %d", x, sh);
    }
    assert_int_equal(qat_rdbp(5, 1), 3);   /* 2.5 -> 3 */
    assert_int_equal(qat_rdbp(-5, 1), -3); /* -2.5 -> -3 */
    assert_int_equal(qat_rdbp(-6, 2), -2); /* -1.5 -> -2 */
    assert_int_equal(qat_rdbp(INT32_MIN, 31), -1);
    assert_int_equal(qat_srdhm(INT32_MIN, INT32_MIN), INT32_MAX);
    /* The double rounding does differ from one rounding (a few per cent of these). */
    assert_true(n_diff_single > 0 && n_diff_single < n / 4);
}

/* ---- a model: fake quant (sim=exact) against the runtime ---- */

static const char *MODEL =
    "input 1 12 12\n"
    "conv2d out=8 kernel=3 pad=1 bias=false\nbatchnorm\nrelu\n"
    "residual\n"
    "  conv2d out=8 kernel=3 pad=1 groups=8 bias=false\n  batchnorm\n  relu6\n"
    "  conv2d out=8 kernel=1\n  batchnorm\n"
    "end\nrelu\n"
    "avgpool kernel=2 stride=2\n"
    "conv2d out=12 kernel=3 stride=2 pad=1\nbatchnorm\n"
    "hardswish\n"
    "residual\n"
    "  conv2d out=16 kernel=1\n  relu\n"
    "shortcut\n"
    "  conv2d out=16 kernel=1 bias=false\n"
    "end\n"
    "maxpool kernel=3 stride=1 pad=1\n"
    "flatten\nlinear out=24\nsigmoid\nlinear out=10\n";

/* ... and an MLP on 8 x 12 x 12 inputs, whose first layer (1,152 inputs) accumulates
 * beyond 2^24 and takes exact.c's split path. */
static const char *MLP = "input 8 12 12\nflatten\nlinear out=32\nrelu\nlinear out=10\n";

enum { NIMG = 96, NPIX_MAX = 8 * 144 };
/* 255 MEAN = 127.5: a tie, where rounding x / s_in (fake quant's input) need not give the
 * runtime's p - 128; sim=exact reads the pixel back instead. */
static const float MEAN = 0.5f, STD = 0.35f;

/* Random pixels, half of them smooth blobs so that the activations spread. */
static void images(uint8_t *px, float *x, int npix, uint64_t seed) {
    uint64_t s = seed;
    for (int i = 0; i < NIMG; i++)
        for (int p = 0; p < npix; p++) {
            int v = (int)(next(&s) % 256);
            if (npix > 144) v = v % 2 ? 255 : 0; /* the MLP: extremes, so that its sums pass 2^24 */
            else if (i % 2) v = (int)(127.5 + 127.5 * sin(0.3 * (p % 12) * (1 + i % 5) + 0.2 * (p / 12)));
            px[i * npix + p] = (uint8_t)v;
            x[i * npix + p] = ((float)v / 255.0f - MEAN) / STD;
        }
}

static int n_pixels(const qat_model *m) { return m->in_shape[0] * m->in_shape[1] * m->in_shape[2]; }

static qat_tensor *input(qat_tape *t, const qat_model *m, const float *x) {
    return qat_tape_input(t, 4, (int[]){NIMG, m->in_shape[0], m->in_shape[1], m->in_shape[2]}, (float *)x);
}

/* The prepared and calibrated model; BN statistics set away from the identity. */
static qat_model *model(const char *text, const char *spec_text, const float *x) {
    qat_model *m = NULL;
    qat_error err = {0};
    if (qat_model_parse(text, "exact", &m, &err)) fail_msg("%s", err.msg);
    qat_rng rng;
    qat_rng_init(&rng, 3);
    assert_int_equal(qat_model_finalize(m, &rng), QAT_STATUS_OK);
    for (size_t i = 0; i < m->n_buffers; i++) m->buffers[i] = (i / 3) % 2 ? 0.5f + 0.07f * (float)(i % 5) : 0.03f * (float)(i % 7) + 0.05f;
    for (size_t i = 0; i < m->n_params; i++) m->params[i] *= 1.5f;
    qat_quant_spec spec;
    if (qat_quant_spec_parse(&spec, spec_text, &err)) fail_msg("%s", err.msg);
    qat_quant_input in = {true, MEAN, STD};
    if (qat_quant_prepare(m, &spec, &in, &err)) fail_msg("%s", err.msg);
    qat_tape t;
    qat_tape_init(&t, 0);
    t.training = false;
    t.grad_enabled = false;
    assert_int_equal(qat_quant_calibrate_begin(m, &err), QAT_STATUS_OK);
    assert_non_null(qat_model_forward(m, &t, input(&t, m, x)));
    if (qat_quant_calibrate_end(m, &err)) fail_msg("%s: %s", spec_text, err.msg);
    qat_tape_free(&t);
    return m;
}

/* Logits of the fake-quant forward (as integers on the output's grid) and of the runtime;
 * returns how many of the NIMG * 10 differ. */
static int compare(qat_model *m, const uint8_t *px, const float *x, const char *what) {
    qat_error err = {0};
    qat_int_model im;
    if (qat_lower(m, &im, &err)) fail_msg("%s: %s", what, err.msg);
    const float s = im.values[im.output].scale;
    const int32_t z = im.values[im.output].zero_point;
    uint8_t *file = NULL;
    size_t len = 0;
    if (qat_int8_encode(&im, what, NULL, 0, &file, &len, NULL, &err)) fail_msg("%s: %s", what, err.msg);
    qat_int_model_free(&im);
    const size_t need = qrt_model_mem_size(file, len);
    void *mem = xmalloc(need ? need : 1);
    qrt_model rm;
    qrt_error rerr;
    if (qrt_model_load(&rm, file, len, mem, need, &rerr)) fail_msg("%s: runtime refused the model", what);
    void *arena = xmalloc(qrt_arena_size(&rm));
    qat_tape t;
    qat_tape_init(&t, 0);
    t.training = false;
    t.grad_enabled = false;
    qat_tensor *y = qat_model_forward(m, &t, input(&t, m, x));
    assert_non_null(y);
    const int npix = n_pixels(m);
    int diff = 0;
    for (int i = 0; i < NIMG; i++) {
        int8_t q[10];
        assert_int_equal(qrt_run(&rm, px + i * npix, arena, q, NULL), QRT_STATUS_OK);
        for (int c = 0; c < 10; c++) {
            const float f = y->data[i * 10 + c];
            const float r = roundf(f / s);
            if (fabsf(f / s - r) > 1e-3f) fail_msg("%s: logit %d,%d = %g is off the output grid %g", what, i, c, (double)f, (double)s);
            diff += (int32_t)r + z != q[c];
        }
    }
    qat_tape_free(&t);
    free(arena);
    free(mem);
    free(file);
    return diff;
}

static void test_forward_equals_runtime(void **state) {
    (void)state;
    uint8_t *px = xmalloc(NIMG * NPIX_MAX);
    float *x = xmalloc(NIMG * NPIX_MAX * sizeof(float));
    const char *specs[] = {"w8a8", "w8a8,per-tensor", "w4a4,pact", "w4a4,lsq", "w4a4", "w2a2,pact", "w3a3,all",
                           "w4a4,pact,w@0=2,w@3.body.0=8"}; /* the last: mixed precision */
    int float_diffs = 0;
    for (int net = 0; net < 2; net++) {
        images(px, x, net ? 8 * 144 : 144, 17);
        for (size_t k = 0; k < sizeof specs / sizeof specs[0]; k++) {
            if (net && strchr(specs[k], '@')) specs[k] = "w4a4,pact,w@1=8,w@3=2"; /* the MLP's names */
            qat_model *m = model(net ? MLP : MODEL, specs[k], x);
            const int d = compare(m, px, x, specs[k]);
            if (d) fail_msg("%s %s, sim=exact: %d of %d logits differ from the runtime's", net ? "MLP" : "CNN", specs[k], d, NIMG * 10);
            /* The same model simulated in float: the classic fake quant. */
            m->quant->spec.sim = QAT_SIM_FLOAT;
            float_diffs += compare(m, px, x, specs[k]);
            qat_model_free(m);
        }
    }
    /* ... which the exact simulation exists to fix: it does differ somewhere here. */
    print_message("sim=float: %d logits differ from the runtime's over all specs\n", float_diffs);
    assert_true(float_diffs > 0);
    free(px);
    free(x);
}

/* Training: a step with sim=exact runs, its loss is finite, its gradients reach every
 * parameter, and with a dropout before a layer (values off the grid) the forward falls
 * back to the float simulation instead of failing. */
static void test_training_step(void **state) {
    (void)state;
    uint8_t *px = xmalloc(NIMG * NPIX_MAX);
    float *x = xmalloc(NIMG * NPIX_MAX * sizeof(float));
    images(px, x, 144, 5);
    qat_model *m = model(MODEL, "w4a4,pact,freeze-bn=0", x);
    qat_tape t;
    qat_tape_init(&t, 0);
    t.training = true;
    t.grad_enabled = true;
    memset(m->grads, 0, m->n_params * sizeof(float));
    qat_tensor *y = qat_model_forward(m, &t, input(&t, m, x));
    assert_non_null(y);
    int32_t labels[NIMG];
    for (int i = 0; i < NIMG; i++) labels[i] = i % 10;
    qat_tensor *loss = qat_cross_entropy(&t, y, labels);
    assert_non_null(loss);
    assert_true(isfinite(loss->data[0]));
    qat_tape_backward(&t, loss);
    double g = 0;
    for (size_t i = 0; i < m->n_params; i++) {
        assert_true(isfinite(m->grads[i]));
        g += fabs(m->grads[i]);
    }
    assert_true(g > 0);
    qat_tape_free(&t);
    qat_model_free(m);
    free(px);
    free(x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_requant_matches_runtime),
        cmocka_unit_test(test_forward_equals_runtime),
        cmocka_unit_test(test_training_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
