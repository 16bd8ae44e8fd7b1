/* test_fake_quant.c - the spec's affine quantizer and fake quantization (quant/fake_quant.h).
 *
 *  - scale and zero point from ranges, computed by hand from int8-spec.md (widening to
 *    include 0, negative and positive-only ranges, symmetric, degenerate);
 *  - quantize: ties round half away from zero, clamps at both ends, negative zero points;
 *  - fake quant per tensor, per output channel and per group (a short last group);
 *  - the clipped STE: the gradient passes where round(x/s)+zp lies in [qmin, qmax] and
 *    is 0 where the value was clamped;
 *  - the average pools' requantization (qat_fake_quant_avgpool) equals the spec's centred
 *    formula computed in integers, at exact ties whose halves straddle zero (the issue's
 *    -21070 / 196 with z = -128 among them), for pools with padding and global pools, and
 *    its gradient is the float pool's;
 *  - bad scales and layouts fail with a message naming the op.
 */
#include <math.h>
#include <string.h>

#include "layers/pool.h"
#include "quant/fake_quant.h"
#include "testutil.h"

static void test_qparams_by_hand(void **state) {
    (void)state;
    float s;
    int32_t z;
    /* [-1, 3] on int8: scale 4/255, zp = -128 - round(-1 / (4/255)) = -128 - round(-63.75) = -64 */
    qat_qparams_from_range(-1.0f, 3.0f, -128, 127, false, &s, &z);
    assert_true(fabsf(s - 4.0f / 255.0f) < 1e-9f);
    assert_int_equal(z, -64);
    /* symmetric: max(|lo|, |hi|) / qmax */
    qat_qparams_from_range(-1.0f, 3.0f, -127, 127, true, &s, &z);
    assert_true(fabsf(s - 3.0f / 127.0f) < 1e-9f);
    assert_int_equal(z, 0);
    /* positive only: widened to [0, 5], real 0 at qmin */
    qat_qparams_from_range(2.0f, 5.0f, -128, 127, false, &s, &z);
    assert_true(fabsf(s - 5.0f / 255.0f) < 1e-9f);
    assert_int_equal(z, -128);
    /* negative only: widened to [-4, 0], real 0 at qmax: -128 - round(-255) = 127 */
    qat_qparams_from_range(-4.0f, -1.0f, -128, 127, false, &s, &z);
    assert_true(fabsf(s - 4.0f / 255.0f) < 1e-9f);
    assert_int_equal(z, 127);
    /* 4 bits: [-8, 7]; [0, 1.5] -> scale 0.1, zp -8 */
    qat_qparams_from_range(0.0f, 1.5f, -8, 7, false, &s, &z);
    assert_true(fabsf(s - 0.1f) < 1e-7f);
    assert_int_equal(z, -8);
    /* degenerate and NaN ranges: scale 1, never 0 or NaN */
    qat_qparams_from_range(0.0f, 0.0f, -128, 127, false, &s, &z);
    assert_true(s == 1.0f);
    assert_int_equal(z, -128);
    qat_qparams_from_range(NAN, NAN, -127, 127, true, &s, &z);
    assert_true(s == 1.0f);
    assert_int_equal(z, 0);
    /* the real 0 is exactly representable: x = 0 quantizes to zp and back to 0 */
    qat_qparams_from_range(-0.37f, 2.9f, -128, 127, false, &s, &z);
    assert_int_equal(qat_quantize(0.0f, s, z, -128, 127), z);
    assert_true(qat_fake_quantize(0.0f, s, (float)z, -128, 127) == 0.0f);
}

static void test_quantize_ties_and_clamps(void **state) {
    (void)state;
    /* scale 0.5: x/s = 2.5 -> 3, -2.5 -> -3 (half away from zero, not to even) */
    assert_int_equal(qat_quantize(1.25f, 0.5f, 0, -128, 127), 3);
    assert_int_equal(qat_quantize(-1.25f, 0.5f, 0, -128, 127), -3);
    assert_int_equal(qat_quantize(0.25f, 0.5f, 0, -128, 127), 1);   /* 0.5 -> 1 */
    assert_int_equal(qat_quantize(-0.25f, 0.5f, 0, -128, 127), -1); /* -0.5 -> -1 */
    assert_int_equal(qat_quantize(0.24f, 0.5f, 0, -128, 127), 0);
    /* negative zero point: round(x/s) + zp */
    assert_int_equal(qat_quantize(1.0f, 0.5f, -5, -128, 127), -3);
    assert_int_equal(qat_quantize(-1.25f, 0.5f, -5, -128, 127), -8);
    /* clamps, including ratios far beyond int range */
    assert_int_equal(qat_quantize(100.0f, 0.5f, 0, -128, 127), 127);
    assert_int_equal(qat_quantize(-100.0f, 0.5f, 0, -128, 127), -128);
    assert_int_equal(qat_quantize(3e38f, 1e-6f, 0, -128, 127), 127);
    assert_int_equal(qat_quantize(-3e38f, 1e-6f, 10, -128, 127), -128);
    assert_int_equal(qat_quantize(1.0f, 0.1f, -8, -8, 7), 2);
    assert_int_equal(qat_quantize(2.0f, 0.1f, -8, -8, 7), 7);
    /* fake quant: scale * (q - zp) */
    assert_true(qat_fake_quantize(1.25f, 0.5f, 0, -128, 127) == 1.5f);
    assert_true(qat_fake_quantize(-1.25f, 0.5f, -5, -128, 127) == -1.5f);
    assert_true(qat_fake_quantize(100.0f, 0.5f, -5, -128, 127) == 66.0f);
    assert_true(isnan(qat_fake_quantize(NAN, 0.5f, 0, -128, 127)));
}

static void test_per_channel_and_group(void **state) {
    (void)state;
    /* 2 rows of 5; groups of 2 -> 3 groups per row (the last has 1 element) */
    const float x[10] = {0.1f, -0.3f, 0.74f, 0.5f, -2.0f, 1.0f, 1.0f, 0.26f, -0.24f, 9.0f};
    assert_int_equal(qat_fq_n_scales(2, 5, 2), 6);
    assert_int_equal(qat_fq_n_scales(2, 5, 0), 2);
    assert_int_equal(qat_fq_n_scales(1, 10, 0), 1);
    float s[6], y[10];
    int32_t z[6];
    qat_fq_weight_scales(s, z, x, 2, 5, 2, 7); /* 4-bit weights: qmax 7 */
    const float want_s[6] = {0.3f / 7, 0.74f / 7, 2.0f / 7, 1.0f / 7, 0.26f / 7, 9.0f / 7};
    for (int k = 0; k < 6; k++) {
        assert_true(fabsf(s[k] - want_s[k]) < 1e-7f);
        assert_int_equal(z[k], 0);
    }
    qat_fake_quant_forward(y, x, s, z, 2, 5, 2, -7, 7);
    /* each group's extreme is exact; the others round to its grid */
    for (int i = 0; i < 10; i++) {
        int k = (i / 5) * 3 + (i % 5) / 2;
        float want = want_s[k] * roundf(x[i] / want_s[k]);
        if (fabsf(y[i] - want) > 1e-6f) fail_msg("group element %d: got %g want %g", i, y[i], want);
    }
    assert_true(fabsf(y[1] + 0.3f) < 1e-6f && fabsf(y[4] + 2.0f) < 1e-6f && fabsf(y[9] - 9.0f) < 1e-6f);
    /* per channel: one scale per row */
    float sc[2];
    int32_t zc[2];
    qat_fq_weight_scales(sc, zc, x, 2, 5, 0, 127);
    assert_true(fabsf(sc[0] - 2.0f / 127) < 1e-8f && fabsf(sc[1] - 9.0f / 127) < 1e-8f);
    /* an all-zero row keeps scale 1 */
    const float zero[4] = {0};
    qat_fq_weight_scales(sc, zc, zero, 2, 2, 0, 127);
    assert_true(sc[0] == 1.0f && sc[1] == 1.0f);
}

static void test_ste_mask(void **state) {
    (void)state;
    qat_tape t;
    qat_tape_init(&t, 0);
    /* scale 0.5, zp -2, 3-bit range [-4, 3]: representable reals [-1, 2.5] */
    qat_tensor *x = test_tensor_new(1, (int[]){8});
    const float xs[8] = {-3.0f, -1.2f, -1.0f, -0.3f, 0.0f, 2.5f, 2.74f, 2.76f};
    memcpy(x->data, xs, sizeof xs);
    float s = 0.5f;
    int32_t z = -2;
    qat_tensor *y = qat_fake_quant(&t, x, &s, &z, 1, 0, -4, 3);
    assert_non_null(y);
    const float want_y[8] = {-1.0f, -1.0f, -1.0f, -0.5f, 0.0f, 2.5f, 2.5f, 2.5f};
    assert_close(y->data, want_y, 8, 0, 0, "fake quant values");
    float dy[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    assert_int_equal(qat_tape_backward_seeded(&t, y, dy), QAT_STATUS_OK);
    /* -3 and -1.2 clamp (round(-2.4) - 2 = -4 is inside: -1.2 passes); 2.74 -> round(5.48)=5-2=3
     * inside; 2.76 -> round(5.52) = 6 - 2 = 4 > 3: clamped */
    const float want_dx[8] = {0, 2, 3, 4, 5, 6, 7, 0};
    assert_close(x->grad, want_dx, 8, 0, 0, "STE mask");
    test_tensor_free(x);
    qat_tape_free(&t);
}

static void test_per_channel_op_backward(void **state) {
    (void)state;
    qat_tape t;
    qat_tape_init(&t, 0);
    qat_tensor *w = test_tensor_filled(2, (int[]){3, 4}, -1, 1, 7);
    float s[3] = {0.1f, 0.05f, 0.2f};
    int32_t z[3] = {0, 0, 0};
    qat_tensor *y = qat_fake_quant(&t, w, s, z, 3, 0, -7, 7);
    assert_non_null(y);
    float dy[12];
    for (int i = 0; i < 12; i++) dy[i] = 1.0f + i;
    qat_tape_backward_seeded(&t, y, dy);
    for (int i = 0; i < 12; i++) {
        float r = roundf(w->data[i] / s[i / 4]);
        float want = fabsf(r) <= 7 ? dy[i] : 0.0f;
        if (w->grad[i] != want) fail_msg("dw[%d] = %g, want %g (x/s = %g)", i, w->grad[i], want, w->data[i] / s[i / 4]);
        float wy = s[i / 4] * fminf(fmaxf(r, -7), 7);
        if (y->data[i] != wy) fail_msg("y[%d] = %g, want %g", i, y->data[i], wy);
    }
    test_tensor_free(w);
    qat_tape_free(&t);
}

/* The vectorised kernel against the spec's formula with roundf, bit for bit: random
 * values, exact ties k + 0.5 and their float neighbours, clamped values, NaN. */
static void test_kernel_matches_formula(void **state) {
    (void)state;
    enum { N = 4096 };
    static float x[N], y[N];
    const float scales[3] = {0.1f, 0.037f, 1.7f / 15};
    const int32_t zps[3] = {0, -128, 5};
    for (int c = 0; c < 3; c++) {
        float s = scales[c];
        fill_uniform(x, N, -200 * s, 200 * s, 40 + (uint64_t)c);
        for (int i = 0; i < 1024; i++) { /* ties of x / s and the floats around them */
            float tie = ((float)(i % 300) - 150.0f + 0.5f) * s;
            x[i] = i % 3 == 0 ? tie : i % 3 == 1 ? nextafterf(tie, INFINITY) : nextafterf(tie, -INFINITY);
        }
        x[N - 1] = NAN;
        x[N - 2] = INFINITY;
        x[N - 3] = -INFINITY;
        x[N - 4] = -0.0f;
        qat_fake_quant_forward(y, x, &s, &zps[c], 1, N, 0, -128, 127);
        for (int i = 0; i < N; i++) {
            float want = qat_fake_quantize(x[i], s, (float)zps[c], -128, 127);
            if (memcmp(&y[i], &want, sizeof want) != 0 && !(isnan(y[i]) && isnan(want)) &&
                !(y[i] == 0 && want == 0))
                fail_msg("scale %g zp %d: x = %a gives %a, the formula %a", s, zps[c], x[i], y[i], want);
        }
    }
}

/* int8-spec.md, "Other ops", written out: z + sign(d) * floor((2|d| + n) / (2n)). */
static int spec_mean(long d, long n, int z) {
    long a = d < 0 ? -d : d, r = (2 * a + n) / (2 * n);
    return z + (int)(d < 0 ? -r : r);
}

/* Pools q (C, H, W) on the grid (s, z) with window kh x kw (global: H x W), and checks every
 * output of the fake-quant pool against the spec; returns how many outputs were exact ties
 * (d / n ending in .5) whose rounding the old formula round(sum q / n) gets wrong. */
static int check_pool(int C, int H, int W, int k, int stride, int pad, bool global, const int8_t *q,
                      int z, float s) {
    qat_tape t;
    qat_tape_init(&t, 0);
    qat_tensor *x = qat_tape_tensor(&t, 4, (int[]){1, C, H, W}, true);
    for (int i = 0; i < C * H * W; i++) x->data[i] = s * (float)(q[i] - z); /* as fake quant writes it */
    qat_tensor *y = global ? qat_global_avgpool(&t, x) : qat_avgpool2d(&t, x, k, stride, pad);
    int kh = global ? H : k, kw = global ? W : k;
    if (global) stride = 1, pad = 0;
    qat_tensor *out = qat_fake_quant_avgpool(&t, y, x, s, kh, kw, stride, pad);
    assert_non_null(out);
    const int OH = global ? 1 : (H + 2 * pad - k) / stride + 1, OW = global ? 1 : (W + 2 * pad - k) / stride + 1;
    int flips = 0;
    for (int c = 0; c < C; c++)
        for (int oy = 0; oy < OH; oy++)
            for (int ox = 0; ox < OW; ox++) {
                long d = 0, sum_q = 0, n = (long)kh * kw;
                for (int ky = 0; ky < kh; ky++)
                    for (int kx = 0; kx < kw; kx++) {
                        int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
                        int v = iy >= 0 && iy < H && ix >= 0 && ix < W ? q[(c * H + iy) * W + ix] : z;
                        d += v - z;
                        sum_q += v;
                    }
                int want = spec_mean(d, n, z);
                float got = out->data[(c * OH + oy) * OW + ox];
                if (got != s * (float)(want - z))
                    fail_msg("pool %dx%d at (%d, %d, %d): d = %ld, n = %ld, z = %d: got %.9g = %g steps, the "
                             "spec gives %d",
                             kh, kw, c, oy, ox, d, n, z, (double)got, (double)(got / s), want);
                double old = (double)sum_q / (double)n; /* round(sum q / n), half away from zero */
                int old_q = (int)(old < 0 ? -floor(-old + 0.5) : floor(old + 0.5));
                flips += 2 * labs(d) % n == 0 && d % n != 0 && old_q != want;
            }
    /* The gradient is the float pool's: straight through the requantization. */
    float *dy = malloc(out->n * sizeof(float));
    for (size_t i = 0; i < out->n; i++) dy[i] = 1.0f + 0.25f * (float)(i % 4);
    assert_int_equal(qat_tape_backward_seeded(&t, out, dy), QAT_STATUS_OK);
    qat_tape tf;
    qat_tape_init(&tf, 0);
    qat_tensor *xf = qat_tape_tensor(&tf, 4, (int[]){1, C, H, W}, true);
    memcpy(xf->data, x->data, x->n * sizeof(float));
    qat_tensor *yf = global ? qat_global_avgpool(&tf, xf) : qat_avgpool2d(&tf, xf, k, stride, pad);
    assert_int_equal(qat_tape_backward_seeded(&tf, yf, dy), QAT_STATUS_OK);
    assert_memory_equal(x->grad, xf->grad, x->n * sizeof(float));
    free(dy);
    qat_tape_free(&tf);
    qat_tape_free(&t);
    return flips;
}

static void test_avgpool_requantization(void **state) {
    (void)state;
    /* The case: 196 values summing to -21070 with z = -128: d = 4018, d / n = 20.5,
     * so q = -128 + 21 = -107 (round(-21070 / 196) = round(-107.5) would give -108). */
    int8_t q[196 * 8];
    for (int i = 0; i < 196; i++) q[i] = (int8_t)(i % 2 ? -107 : -108);
    assert_int_equal(check_pool(1, 14, 14, 0, 0, 0, true, q, -128, 0.0754867345f), 1);
    /* A small one: (q - z) = -1, 0, 0, -1 around z = 3: d / n = -0.5 -> q = 2 (not 3). */
    const int8_t small[4] = {2, 3, 3, 2};
    assert_int_equal(check_pool(1, 2, 2, 0, 0, 0, true, small, 3, 0.5f), 1);
    /* Seeded random grids: windows 2x2 (n = 4: ties are common) and 3x3 with padding, and
     * global pools of even size, over zero points across the whole range. */
    trng r = {42};
    int flips = 0;
    for (int rep = 0; rep < 40; rep++) {
        int C = (int)rint_in(&r, 1, 4), H = (int)rint_in(&r, 2, 9), W = (int)rint_in(&r, 2, 9);
        int z = (int)rint_in(&r, -128, 127), spread = (int)rint_in(&r, 1, 6);
        float s = (float)rint_in(&r, 1, 1000) / 997.0f;
        for (int i = 0; i < C * H * W; i++) {
            int v = z + (int)rint_in(&r, -spread, spread);
            q[i] = (int8_t)(v < -128 ? -128 : v > 127 ? 127 : v);
        }
        flips += check_pool(C, H, W, 2, 2, 0, false, q, z, s);
        if (H >= 3 && W >= 3) flips += check_pool(C, H, W, 3, 1, 1, false, q, z, s);
        flips += check_pool(C, H, W, 0, 0, 0, true, q, z, s);
    }
    print_message("average pools: %d exact ties on which the old formula rounds the other way\n", flips);
    assert_true(flips > 10);
}

static void test_errors(void **state) {
    (void)state;
    qat_tape t;
    qat_tape_init(&t, 0);
    qat_tensor *x = test_tensor_new(2, (int[]){3, 4});
    float s[3] = {1, 0, 1};
    int32_t z[3] = {0};
    assert_op_failed(&t, qat_fake_quant(&t, x, s, z, 3, 0, -128, 127), "fake_quant", "zero scale");
    qat_tape_reset(&t);
    s[1] = NAN;
    assert_op_failed(&t, qat_fake_quant(&t, x, s, z, 3, 0, -128, 127), "fake_quant", "NaN scale");
    qat_tape_reset(&t);
    assert_op_failed(&t, qat_fake_quant(&t, x, s, z, 5, 0, -128, 127), "fake_quant", "rows not dividing");
    qat_tape_reset(&t);
    assert_null(qat_fake_quant(&t, NULL, s, z, 1, 0, -128, 127));
    test_tensor_free(x);
    qat_tape_free(&t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qparams_by_hand),       cmocka_unit_test(test_quantize_ties_and_clamps),
        cmocka_unit_test(test_per_channel_and_group), cmocka_unit_test(test_ste_mask),
        cmocka_unit_test(test_per_channel_op_backward), cmocka_unit_test(test_kernel_matches_formula),
        cmocka_unit_test(test_avgpool_requantization), cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
