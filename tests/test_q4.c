/* test_q4.c - block-wise 4-bit weights: int4 and NF4 per group, double quantization
 * (quant/q4.h).
 *
 *  - NF4's 16 levels equal tests/fixtures/q4.bin (gen_q4.py: scipy's normal quantiles) to
 *    the bit, and the published QLoRA table to 1e-6; int4's are k / 7.
 *  - Codes, group constants, double-quantized constants (codes, block scales, mean) and
 *    the dequantized weights equal the fixture's for two tensors (1,000 weights, a short
 *    last group; 16,960 weights with a zero group, an outlier and a 30x group: 265 groups,
 *    two blocks of constants), in both formats.
 *  - Packing: value 2i in the low nibble, 2i + 1 in the high one, int4 two's complement.
 *  - Bits per weight: 4.5 at group 64, 4.127 with double quantization (the paper's
 *    numbers), and the error of each format on normal weights.
 *  - Bad input: NaN, group 0, n 0.
 */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/tape.h"
#include "optim/blockwise.h"
#include "quant/q4.h"
#include "quant/quant.h"

static qat_fixture *fx;

static int setup(void **state) {
    (void)state;
    fx = fixture_load("q4.bin");
    return fx ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    fixture_free(fx);
    return 0;
}

static void test_levels(void **state) {
    (void)state;
    const float *nf4 = qat_q4_levels(QAT_Q4_NF4), *i4 = qat_q4_levels(QAT_Q4_INT4);
    assert_bits_equal(nf4, fixture_get(fx, "levels_nf4", 16), 16, "NF4 levels");
    assert_bits_equal(i4 + 1, fixture_get(fx, "levels_int4", 15), 15, "int4 levels");
    /* QLoRA's published table (bitsandbytes, from float32 quantiles) */
    static const double paper[16] = {-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                                     -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                                     0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
                                     0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                                     0.7229568362236023, 1.0};
    for (int k = 0; k < 16; k++)
        if (fabs(nf4[k] - paper[k]) > 1e-6) fail_msg("NF4 level %d: %.9g, the paper's %.9g", k, (double)nf4[k], paper[k]);
    assert_true(nf4[7] == 0.0f && nf4[0] == -1.0f && nf4[15] == 1.0f);
    assert_string_equal(qat_q4_format_str(QAT_Q4_NF4), "nf4");
    qat_q4_format f;
    assert_true(qat_q4_format_parse("int4", &f) && f == QAT_Q4_INT4);
    assert_false(qat_q4_format_parse("fp4", &f));
}

static void check_tensor(const char *name, size_t n) {
    char key[64];
    snprintf(key, sizeof key, "w/%s", name);
    const float *w = fixture_get(fx, key, n);
    float *back = malloc(n * sizeof(float)), *a = malloc(((n + 63) / 64) * sizeof(float));
    for (int f = 0; f < 2; f++) {
        const char *fmt = f ? "int4" : "nf4";
        for (int dq = 0; dq < 2; dq++) {
            qat_q4 q;
            qat_error err = {0};
            if (qat_q4_quantize(&q, w, n, f ? QAT_Q4_INT4 : QAT_Q4_NF4, QAT_Q4_GROUP, dq, &err))
                fail_msg("%s: %s", name, err.msg);
            assert_int_equal(q.n_groups, (n + 63) / 64);
            snprintf(key, sizeof key, "%s/%s/codes", name, fmt);
            const float *codes = fixture_get(fx, key, n);
            for (size_t i = 0; i < n; i++)
                if (qat_q4_code(&q, i) != (int)codes[i])
                    fail_msg("%s %s dq=%d: weight %zu has code %d, expected %g", name, fmt, dq, i, qat_q4_code(&q, i),
                             (double)codes[i]);
            snprintf(key, sizeof key, "%s/%s/absmax", name, fmt);
            if (!dq) assert_bits_equal(q.absmax, fixture_get(fx, key, q.n_groups), q.n_groups, key);
            if (dq) {
                snprintf(key, sizeof key, "%s/%s/dq_codes", name, fmt);
                const float *dc = fixture_get(fx, key, q.n_groups);
                for (size_t g = 0; g < q.n_groups; g++)
                    if (q.absmax_codes[g] != (int)dc[g]) fail_msg("%s: group %zu constant code %d, expected %g", key, g,
                                                                  q.absmax_codes[g], (double)dc[g]);
                snprintf(key, sizeof key, "%s/%s/dq_scale", name, fmt);
                assert_bits_equal(q.absmax_scale, fixture_get(fx, key, q.n_scales), q.n_scales, key);
                snprintf(key, sizeof key, "%s/%s/dq_mean", name, fmt);
                assert_bits_equal(&q.absmax_mean, fixture_get(fx, key, 1), 1, key);
            }
            qat_q4_dequantize(&q, back);
            snprintf(key, sizeof key, "%s/%s/%s", name, fmt, dq ? "deq_dq" : "deq");
            if (strcmp(name, "a") == 0) assert_bits_equal(back, fixture_get(fx, key, n), n, key);
            /* every weight is its level times its group's constant */
            qat_q4_constants(&q, a);
            const float *lv = qat_q4_levels(q.format);
            for (size_t i = 0; i < n; i++)
                assert_true(back[i] == lv[qat_q4_code(&q, i) + (f ? 8 : 0)] * a[i / 64]);
            qat_q4_free(&q);
        }
    }
    free(back);
    free(a);
}

static void test_matches_reference(void **state) {
    (void)state;
    check_tensor("a", 1000);
    check_tensor("b", 16960);
}

static void test_packing(void **state) {
    (void)state;
    const float w[5] = {1.0f, -1.0f, 0.0f, 3.0f / 7, -2.0f / 7};
    qat_q4 q;
    assert_int_equal(qat_q4_quantize(&q, w, 5, QAT_Q4_INT4, 64, false, NULL), QAT_STATUS_OK);
    /* codes 7, -7, 0, 3, -2: bytes 0x97 (7 low, -7 = 0x9 high), 0x30, 0x0e */
    assert_int_equal(q.codes[0], 0x97);
    assert_int_equal(q.codes[1], 0x30);
    assert_int_equal(q.codes[2], 0x0e);
    qat_q4_free(&q);
    assert_int_equal(qat_q4_quantize(&q, w, 5, QAT_Q4_NF4, 64, false, NULL), QAT_STATUS_OK);
    /* NF4 indices: 15, 0, 7, ... */
    assert_int_equal(q.codes[0], 0x0f);
    assert_int_equal(q.codes[1] & 15, 7);
    assert_int_equal(q.codes[2] >> 4, 0); /* odd count: last high nibble 0 */
    qat_q4_free(&q);
}

static void test_bits_and_error(void **state) {
    (void)state;
    enum { N = 64 * 1024 };
    float *w = malloc(N * sizeof(float)), *back = malloc(N * sizeof(float));
    qat_rng r;
    qat_rng_init(&r, 5);
    for (int i = 0; i < N; i++) w[i] = 0.02f * qat_rng_normal(&r);
    for (int f = 0; f < 2; f++)
        for (int dq = 0; dq < 2; dq++) {
            qat_q4 q;
            assert_int_equal(qat_q4_quantize(&q, w, N, (qat_q4_format)f, QAT_Q4_GROUP, dq, NULL), QAT_STATUS_OK);
            const double bits = qat_q4_bits(&q);
            /* 4 + 32/64 = 4.5; 4 + 8/64 + 32/(64*256) = 4.127 (+ 32 bits for the mean) */
            if (dq) assert_true(fabs(bits - (4.0 + 0.125 + 32.0 / (64 * 256) + 32.0 / N)) < 1e-9);
            else assert_true(fabs(bits - 4.5) < 1e-9);
            qat_q4_dequantize(&q, back);
            double se = 0, ss = 0;
            for (int i = 0; i < N; i++) se += (double)(back[i] - w[i]) * (back[i] - w[i]), ss += (double)w[i] * w[i];
            printf("%s%s: %.3f bits per weight, relative RMS error %.4f\n", qat_q4_format_str((qat_q4_format)f),
                   dq ? "+dq" : "", bits, sqrt(se / ss));
            assert_true(sqrt(se / ss) < (f == QAT_Q4_NF4 ? 0.11 : 0.14));
            qat_q4_free(&q);
        }
    free(w);
    free(back);
}

static void test_bad_input(void **state) {
    (void)state;
    qat_q4 q;
    qat_error err = {0};
    float w[3] = {0.1f, NAN, 0.2f};
    assert_int_equal(qat_q4_quantize(&q, w, 3, QAT_Q4_NF4, 64, true, &err), QAT_STATUS_INVALID_ARG);
    assert_non_null(strstr(err.msg, "weight 1"));
    assert_null(q.codes);
    qat_q4_free(&q);
    err = (qat_error){0};
    assert_int_equal(qat_q4_quantize(&q, w, 1, QAT_Q4_NF4, 0, false, &err), QAT_STATUS_INVALID_ARG);
    assert_int_equal(qat_q4_quantize(&q, w, 0, QAT_Q4_NF4, 64, false, NULL), QAT_STATUS_INVALID_ARG);
    /* all zeros: constants 0, codes of 0, everything comes back 0 */
    float z[70] = {0}, back[70];
    assert_int_equal(qat_q4_quantize(&q, z, 70, QAT_Q4_NF4, 64, true, NULL), QAT_STATUS_OK);
    qat_q4_dequantize(&q, back);
    for (int i = 0; i < 70; i++) assert_true(back[i] == 0.0f && qat_q4_code(&q, i) == 7);
    qat_q4_free(&q);
}

/* The one-pass round trip (what fake quantization runs) gives the bits of quantize then
 * dequantize; the tape op passes gradients straight through; the quant spec's nf4 and dq. */
static void test_roundtrip_fake_and_spec(void **state) {
    (void)state;
    const size_t n = 16960;
    const float *w = fixture_get(fx, "w/b", n);
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    void *scratch = malloc(qat_q4_roundtrip_scratch(n, 64));
    for (int f = 0; f < 2; f++)
        for (int dq = 0; dq < 2; dq++) {
            qat_q4 q;
            assert_int_equal(qat_q4_quantize(&q, w, n, (qat_q4_format)f, 64, dq, NULL), QAT_STATUS_OK);
            qat_q4_dequantize(&q, a);
            qat_q4_roundtrip(w, n, (qat_q4_format)f, 64, dq, b, scratch);
            assert_bits_equal(b, a, n, "round trip");
            qat_q4_free(&q);
        }
    qat_tape t;
    qat_tape_init(&t, 0);
    qat_tensor *x = test_tensor_from(1, (int[]){(int)n}, w);
    qat_tensor *y = qat_q4_fake(&t, x, QAT_Q4_NF4, 64, true);
    assert_non_null(y);
    qat_q4_roundtrip(w, n, QAT_Q4_NF4, 64, true, b, scratch);
    assert_bits_equal(y->data, b, n, "fake forward");
    float *dy = malloc(n * sizeof(float));
    fill_uniform(dy, n, -1, 1, 3);
    assert_int_equal(qat_tape_backward_seeded(&t, y, dy), QAT_STATUS_OK);
    assert_bits_equal(x->grad, dy, n, "straight-through gradient");
    test_tensor_free(x);
    qat_tape_free(&t);
    free(dy);
    free(a);
    free(b);
    free(scratch);

    qat_quant_spec sp;
    qat_error err = {0};
    char buf[256];
    assert_int_equal(qat_quant_spec_parse(&sp, "w4a8,nf4,dq", &err), QAT_STATUS_OK);
    assert_true(sp.nf4 && sp.dq && sp.wgran == QAT_GRANULARITY_GROUP && sp.group == 64);
    qat_quant_spec_format(&sp, buf, sizeof buf);
    assert_non_null(strstr(buf, "group=64"));
    assert_non_null(strstr(buf, ",nf4,dq"));
    assert_int_equal(qat_quant_spec_parse(&sp, "w4a8,group=128,dq", &err), QAT_STATUS_OK);
    assert_true(!sp.nf4 && sp.dq && sp.group == 128);
    const char *bad[] = {"w8a8,nf4", "w4a4,nf4,per-tensor", "w2a2,dq"};
    for (int i = 0; i < 3; i++) {
        err = (qat_error){0};
        if (qat_quant_spec_parse(&sp, bad[i], &err) == QAT_STATUS_OK) fail_msg("'%s' accepted", bad[i]);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_levels),
        cmocka_unit_test(test_matches_reference),
        cmocka_unit_test(test_packing),
        cmocka_unit_test(test_bits_and_error),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_roundtrip_fake_and_spec),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
