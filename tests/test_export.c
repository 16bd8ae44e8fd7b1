/* test_export.c - lowering to the integer model (quant/lower.h) and its int8 file (export/int8.h).
 *
 *  - the spec's fixed-point multiplier: hand cases, M0 rounding up to 2^31, tiny and
 *    degenerate multipliers, and M0 * 2^(shift-31) within half an ulp of M0 of m;
 *  - the exported integers are the ones fake quantization trained with: int8 weights
 *    times their scale equal the fake-quant folded weights exactly, packed 4-bit weights
 *    unpack to the same integers, biases sit on the s_in * s_w grid;
 *  - refusals name the layer: per-group weights, an op the runtime lacks (a ReLU no conv
 *    precedes; sigmoid now exports as a lookup table, test_lut.c), an accumulator
 *    that could overflow, a float model.
 */
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "export/int8.h"
#include "quant/fake_quant.h"
#include "testutil.h"

static void test_quantize_multiplier(void **state) {
    (void)state;
    int32_t M0;
    int sh;
    qat_quantize_multiplier(0.5, &M0, &sh); /* 0.5 = 0.5 * 2^0 */
    assert_int_equal(M0, 1 << 30);
    assert_int_equal(sh, 0);
    qat_quantize_multiplier(1.0, &M0, &sh); /* 0.5 * 2^1 */
    assert_int_equal(M0, 1 << 30);
    assert_int_equal(sh, 1);
    qat_quantize_multiplier(0.75, &M0, &sh);
    assert_int_equal(M0, 3 << 29);
    assert_int_equal(sh, 0);
    qat_quantize_multiplier(0.001, &M0, &sh); /* 0.512 * 2^-9 */
    assert_int_equal(sh, -9);
    assert_int_equal(M0, (int32_t)llround(0.512 * 2147483648.0));
    /* f just below 1 rounds to 2^31: halved, exponent up */
    qat_quantize_multiplier(1.0 - ldexp(1.0, -40), &M0, &sh);
    assert_int_equal(M0, 1 << 30);
    assert_int_equal(sh, 1);
    /* shift < -31: the output is the zero point */
    qat_quantize_multiplier(ldexp(1.0, -40), &M0, &sh);
    assert_int_equal(M0, 0);
    assert_int_equal(sh, 0);
    qat_quantize_multiplier(ldexp(0.75, -31), &M0, &sh);
    assert_int_equal(M0, 3 << 29);
    assert_int_equal(sh, -31);
    qat_quantize_multiplier(0.0, &M0, &sh);
    assert_int_equal(M0, 0);
    qat_quantize_multiplier(-1.0, &M0, &sh);
    assert_int_equal(M0, 0);
    qat_quantize_multiplier(NAN, &M0, &sh);
    assert_int_equal(M0, 0);
    qat_rng r;
    qat_rng_init(&r, 3);
    for (int i = 0; i < 10000; i++) {
        double m = ldexp(0.5 + 0.5 * qat_rng_uniform(&r), (int)qat_rng_below(&r, 50) - 30);
        qat_quantize_multiplier(m, &M0, &sh);
        if (M0 < (1 << 30) || sh < -31 || sh > 30) fail_msg("m = %.17g: M0 %d shift %d", m, M0, sh);
        double back = ldexp((double)M0, sh - 31);
        if (fabs(back - m) > ldexp(0.5, sh - 31)) fail_msg("m = %.17g: M0 %d shift %d gives %.17g", m, M0, sh, back);
    }
}

/* conv(4) BN ReLU; depthwise conv BN ReLU6; global avg pool; linear 3. */
static qat_model *small(const char *spec_text, bool sigmoid) {
    qat_rng rng;
    qat_rng_init(&rng, 11);
    qat_model *m = qat_model_new(3, (int[]){1, 6, 6});
    qat_model_conv2d(m, 4, 3, 1, 1, 1, true);
    qat_model_batchnorm(m);
    qat_model_relu(m);
    qat_model_conv2d(m, 4, 3, 2, 1, 4, false);
    qat_model_batchnorm(m);
    if (sigmoid) qat_model_sigmoid(m);
    else qat_model_relu6(m);
    qat_model_global_avgpool(m);
    qat_model_linear(m, 3, true);
    assert_int_equal(qat_model_finalize(m, &rng), QAT_STATUS_OK);
    for (size_t i = 0; i < m->n_buffers; i++) m->buffers[i] = (i / 4) % 2 ? 0.6f + 0.1f * (i % 4) : 0.02f * (i % 4);
    qat_quant_spec spec;
    qat_error err = {0};
    assert_int_equal(qat_quant_spec_parse(&spec, spec_text, &err), QAT_STATUS_OK);
    qat_quant_input in = {true, 0.3f, 0.35f};
    assert_int_equal(qat_quant_prepare(m, &spec, &in, &err), QAT_STATUS_OK);
    float x[8 * 36];
    fill_uniform(x, 8 * 36, -0.8f, 2.0f, 5);
    qat_tape t;
    qat_tape_init(&t, 0);
    t.training = false;
    t.grad_enabled = false;
    qat_quant_calibrate_begin(m, &err);
    assert_non_null(qat_model_forward(m, &t, qat_tape_input(&t, 4, (int[]){8, 1, 6, 6}, x)));
    assert_int_equal(qat_quant_calibrate_end(m, &err), QAT_STATUS_OK);
    qat_tape_free(&t);
    return m;
}

static char dir[64];

static void test_integers_match_fake_quant(void **state) {
    (void)state;
    const char *specs[] = {"w8a8", "w4a4,pact", "w8a8,per-tensor"};
    for (int sidx = 0; sidx < 3; sidx++) {
        qat_model *m = small(specs[sidx], false);
        char path[128];
        snprintf(path, sizeof path, "%s/m%d.safetensors", dir, sidx);
        qat_export_report rep;
        qat_error err = {0};
        if (qat_export_int8(m, path, NULL, 0, &rep, &err)) fail_msg("%s: %s", specs[sidx], err.msg);
        assert_int_equal(rep.n_ops, 4);
        /* In memory (what qat eval of a checkpoint runs): the file's bytes exactly. */
        {
            qat_int_model im;
            uint8_t *mem = NULL;
            size_t len = 0, flen = 0;
            assert_int_equal(qat_lower(m, &im, &err), QAT_STATUS_OK);
            assert_int_equal(qat_int8_encode(&im, "mem", NULL, 0, &mem, &len, NULL, &err), QAT_STATUS_OK);
            unsigned char *file = test_read_file(path, &flen);
            assert_int_equal(len, flen);
            assert_memory_equal(mem, file, len);
            free(file);
            free(mem);
            qat_int_model_free(&im);
        }
        qat_st_file f;
        assert_int_equal(qat_safetensors_read(&f, path, &err), QAT_STATUS_OK);
        assert_string_equal(qat_safetensors_meta(&f, "format"), QAT_INT8_FORMAT);
        const char *graph = qat_safetensors_meta(&f, "graph");
        assert_non_null(strstr(graph, "input out=0 shape=1,6,6"));
        assert_non_null(strstr(graph, "global_avgpool in=2 out=3 shape=4"));
        assert_non_null(strstr(graph, "output in=4"));
        const int layers[3] = {0, 3, 7};
        for (int k = 0; k < 3; k++) {
            const qat_layer_quant *u = m->root.layers[layers[k]].quant;
            char name[64];
            snprintf(name, sizeof name, "%d.weight", layers[k]);
            const qat_st_tensor *w = qat_safetensors_find(&f, name);
            assert_non_null(w);
            float *wf = qat_quant_folded_weights(u);
            size_t n = u->layer->weight.n, K = n / (size_t)u->layer->weight.shape[0];
            float *fq = malloc(n * sizeof(float));
            int qmax = qat_qmax_weight(u->wbits);
            qat_fake_quant_forward(fq, wf, u->wscale, u->wzp, u->wrows, n / (size_t)u->wrows, 0, -qmax, qmax);
            for (size_t i = 0; i < n; i++) {
                int q;
                if (u->wbits <= 4) {
                    assert_int_equal(w->dtype, QAT_ST_DTYPE_U8);
                    int nib = (((const uint8_t *)w->data)[i / 2] >> (i % 2 ? 4 : 0)) & 0xF;
                    q = nib >= 8 ? nib - 16 : nib;
                } else {
                    assert_int_equal(w->dtype, QAT_ST_DTYPE_I8);
                    q = ((const int8_t *)w->data)[i];
                }
                float s = u->wscale[u->wrows == 1 ? 0 : i / K];
                if ((float)q * s != fq[i] || abs(q) > qmax)
                    fail_msg("%s layer %d weight %zu: int %d * %g = %g, fake quant %g", specs[sidx], layers[k], i, q,
                             (double)s, (double)((float)q * s), (double)fq[i]);
            }
            free(wf);
            free(fq);
            snprintf(name, sizeof name, "%d.mult", layers[k]);
            const qat_st_tensor *mt = qat_safetensors_find(&f, name);
            assert_non_null(mt);
            for (size_t c = 0; c < mt->numel; c++) {
                int32_t M0 = ((const int32_t *)mt->data)[c];
                if (M0 != 0 && M0 < (1 << 30)) fail_msg("layer %d channel %zu: M0 %d", layers[k], c, M0);
            }
        }
        /* sub-8-bit: the first layer stays 8-bit, the rest are packed */
        assert_non_null(strstr(graph, sidx == 1 ? "wbits=4" : "wbits=8"));
        qat_safetensors_free(&f);
        unlink(path);
        qat_model_free(m);
    }
}

static void test_refusals(void **state) {
    (void)state;
    char path[128];
    snprintf(path, sizeof path, "%s/bad.safetensors", dir);
    qat_export_report rep;
    qat_error err = {0};
    qat_model *m = small("w4a8,group=4", false);
    assert_int_equal(qat_export_int8(m, path, NULL, 0, &rep, &err), QAT_STATUS_INVALID_ARG);
    assert_non_null(strstr(err.msg, "layer 0"));
    assert_non_null(strstr(err.msg, "per-group"));
    qat_model_free(m);
    /* an input normalisation whose zero point is no int8 (found by fuzz_checkpoint:
     * mean 6.85 of x / 255, z = 1619, exported a file the runtime refuses; mean 5.5e7 made
     * the int32 conversion undefined): refused when quantizing, naming mean and std */
    const float means[] = {6.85f, 5.5e7f, -0.01f, NAN};
    for (int k = 0; k < 4; k++) {
        qat_rng r1;
        qat_rng_init(&r1, 1);
        m = qat_model_new(3, (int[]){1, 4, 4});
        qat_model_flatten(m);
        qat_model_linear(m, 3, true);
        assert_int_equal(qat_model_finalize(m, &r1), QAT_STATUS_OK);
        qat_quant_spec spec;
        assert_int_equal(qat_quant_spec_parse(&spec, "w8a8", &err), QAT_STATUS_OK);
        const qat_quant_input in = {true, means[k], 0.35f};
        err = (qat_error){0};
        assert_int_equal(qat_quant_prepare(m, &spec, &in, &err), QAT_STATUS_INVALID_ARG);
        if (!strstr(err.msg, "mean") || !strstr(err.msg, "[0, 1]")) fail_msg("mean %g: %s", (double)means[k], err.msg);
        qat_model_free(m);
    }
    /* sigmoid is a lookup table now (test_lut.c); a ReLU that no conv precedes is not
     * an op of the integer model */
    m = small("w8a8", true);
    err = (qat_error){0};
    assert_int_equal(qat_export_int8(m, path, NULL, 0, &rep, &err), QAT_STATUS_OK);
    unlink(path);
    qat_model_free(m);
    {
        qat_rng r2;
        qat_rng_init(&r2, 2);
        m = qat_model_new(3, (int[]){1, 4, 4});
        qat_model_maxpool(m, 2, 2, 0);
        qat_model_relu(m);
        qat_model_flatten(m);
        qat_model_linear(m, 2, true);
        assert_int_equal(qat_model_finalize(m, &r2), QAT_STATUS_OK);
        qat_quant_spec sp = qat_quant_spec_default();
        qat_quant_input qi = {true, 0.5f, 0.5f};
        assert_int_equal(qat_quant_prepare(m, &sp, &qi, &err), QAT_STATUS_OK);
        err = (qat_error){0};
        assert_int_equal(qat_export_int8(m, path, NULL, 0, &rep, &err), QAT_STATUS_INVALID_ARG);
        if (!strstr(err.msg, "layer 1 (relu)")) fail_msg("%s", err.msg);
        qat_model_free(m);
    }
    assert_int_equal(access(path, F_OK), -1); /* nothing written */

    /* 70,000 inputs x 255 x 127 > 2^31: the accumulator could overflow */
    qat_rng rng;
    qat_rng_init(&rng, 1);
    m = qat_model_new(3, (int[]){1, 1, 70000});
    qat_model_flatten(m);
    qat_model_linear(m, 2, true);
    assert_int_equal(qat_model_finalize(m, &rng), QAT_STATUS_OK);
    m->root.layers[1].weight.data[5] = 1.0f; /* one weight at qmax */
    qat_quant_spec spec = qat_quant_spec_default();
    qat_quant_input in = {true, 0.5f, 0.5f};
    assert_int_equal(qat_quant_prepare(m, &spec, &in, &err), QAT_STATUS_OK);
    err = (qat_error){0};
    assert_int_equal(qat_export_int8(m, path, NULL, 0, &rep, &err), QAT_STATUS_NUMERIC);
    assert_non_null(strstr(err.msg, "layer 1"));
    assert_non_null(strstr(err.msg, "overflow"));
    qat_model_free(m);

    /* An output scale far below s_in s_w (multiplier >= 2^30): refused, as int8-spec.md
     * says, instead of a file the runtime rejects (shift 76; found by fuzz_checkpoint,
     * tests/fuzz/crashes/checkpoint). */
    m = small("w8a8", false);
    qat_qpoint *o = &m->root.layers[7].quant->out;
    o->range.data[0] = 0.0f;
    o->range.data[1] = 1e-30f;
    qat_quant_refresh(m);
    err = (qat_error){0};
    assert_int_equal(qat_export_int8(m, path, NULL, 0, &rep, &err), QAT_STATUS_NUMERIC);
    if (!strstr(err.msg, "layer 7") || !strstr(err.msg, "2^30 or more")) fail_msg("%s", err.msg);
    assert_int_equal(access(path, F_OK), -1);
    qat_model_free(m);

    qat_model *f = qat_model_new(3, (int[]){1, 4, 4});
    qat_model_flatten(f);
    qat_model_linear(f, 2, true);
    qat_model_finalize(f, &rng);
    err = (qat_error){0};
    assert_int_equal(qat_export_int8(f, path, NULL, 0, &rep, &err), QAT_STATUS_INVALID_ARG);
    assert_non_null(strstr(err.msg, "not quantized"));
    qat_model_free(f);
}

static int setup(void **state) {
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/qat_test_export_XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    return rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quantize_multiplier),
        cmocka_unit_test(test_integers_match_fake_quant),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
