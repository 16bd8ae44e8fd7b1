/* test_runtime.c - the int8 runtime (runtime/), zero tolerance, against references
 * written here from ../shared/int8-spec.md alone:
 *
 *  - fixed point: hand-computed values and edges (INT32_MIN * INT32_MIN saturation,
 *    INT32_MAX, +-2^i+-{0,1,2}, ties of RoundingDivideByPOT on both signs, every shift
 *    from -31 to 30, M0 = 2^30 and 2^31 - 1) and seeded random values, against
 *    references in int64/__int128 written with floor division (not the nudge trick);
 *  - each kernel against a naive loop on random shapes (padding, stride, groups,
 *    depthwise, 1x1, odd sizes, windows entirely in the padding), memcmp equality;
 *  - a whole model file built here (safetensors bytes + graph text): conv, maxpool,
 *    depthwise 4-bit packed conv (and an odd count of packed weights), add, avgpool,
 *    grouped conv, flatten, global average pool, linear (3-bit unpacked too), run on
 *    several images and compared with a reference forward pass; the arena plan never
 *    overlaps two live values; the inspection API;
 *  - loader refusals: every truncation point, header lengths, malformed JSON, container
 *    rules, metadata, and every graph rule of docs/int8-format.md, each with a check of
 *    the message (the tensor, field or line it names); random damage to a valid file is
 *    refused with a message or loads and runs (memory safety under the sanitizers).
 * A mismatch prints its position, got and expected.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "runtime/fixedpoint.h"
#include "runtime/kernels.h"
#include "runtime/runtime.h"

/* ---- helpers ------------------------------------------------------------------------ */

static void expect_s8(const int8_t *got, const int8_t *want, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i])
            fail_msg("%s: first mismatch at element %zu of %zu: got %d, expected %d", what, i, n,
                     got[i], want[i]);
}

/* (C, H, W) outputs report the position as c, y, x. */
static void expect_s8_chw(const int8_t *got, const int8_t *want, int C, int H, int W, const char *what) {
    for (int c = 0; c < C; c++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                size_t i = ((size_t)c * H + y) * W + x;
                if (got[i] != want[i])
                    fail_msg("%s: first mismatch at (c=%d, y=%d, x=%d) of (%d, %d, %d): got %d, "
                             "expected %d", what, c, y, x, C, H, W, got[i], want[i]);
            }
}

/* ---- reference fixed point: floor division in wide integers ------------------------- */

static __int128 floor_div128(__int128 a, __int128 b) { /* b > 0 */
    __int128 q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

/* round(a*b / 2^31) with ties toward +infinity, saturated: floor((ab + 2^30) / 2^31). */
static int32_t ref_srdhm(int32_t a, int32_t b) {
    __int128 q = floor_div128((__int128)a * b + ((__int128)1 << 30), (__int128)1 << 31);
    return q > INT32_MAX ? INT32_MAX : (int32_t)q;
}

/* x / 2^e rounded to nearest, ties away from zero, on |x|. */
static int32_t ref_rdbpot(int32_t x, int e) {
    int64_t ax = x < 0 ? -(int64_t)x : x, d = (int64_t)1 << e;
    int64_t q = ax / d, r = ax % d;
    if (2 * r >= d && r) q++;
    return (int32_t)(x < 0 ? -q : q);
}

static int32_t ref_mbqm(int32_t x, int32_t M0, int shift) {
    int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    int64_t xs = (int64_t)x * ((int64_t)1 << left);
    if (xs > INT32_MAX || xs < INT32_MIN)
        fail_msg("test bug: x=%d * 2^%d does not fit in int32", x, left);
    return ref_rdbpot(ref_srdhm((int32_t)xs, M0), right);
}

/* Both average pools (int8-spec.md, "Other ops"), the formula as the spec writes it:
 * d = sum over the window of (q - z), q_out = z + sign(d) * floor((2|d| + n) / (2n)). */
static int ref_centred_mean(int64_t d, int64_t n, int z) {
    const int64_t a = d < 0 ? -d : d, f = (2 * a + n) / (2 * n); /* operands >= 0: the floor */
    return (int)(z + (d > 0 ? f : d < 0 ? -f : 0));
}

/* ---- fixed point tests -------------------------------------------------------------- */

static void test_fixedpoint_hand(void **state) {
    (void)state;
    const int32_t M = INT32_MIN, X = INT32_MAX;
    struct { int32_t a, b, want; } h[] = {
        {M, M, X},                 /* the one saturating case */
        {X, X, X - 1},             /* (2^31-1)^2 / 2^31 = 2^31 - 2 + 2^-31 */
        {M, X, M + 1},             /* exactly -(2^31 - 1) */
        {X, M, M + 1},
        {M, 1, -1},                /* -2^31 / 2^31 */
        {M, -1, 1},
        {3, 1 << 30, 2},           /* 1.5 -> 2 (ties up) */
        {-3, 1 << 30, -1},         /* -1.5 -> -1 (ties up, toward +inf) */
        {1, 1 << 30, 1},           /* 0.5 -> 1 */
        {-1, 1 << 30, 0},          /* -0.5 -> 0 */
        {5, 1 << 29, 1},           /* 1.25 -> 1 */
        {-5, 1 << 29, -1},         /* -1.25 -> -1 */
        {0, M, 0},
        {1000, 0, 0},
    };
    for (size_t i = 0; i < sizeof h / sizeof h[0]; i++) {
        int32_t got = qrt_saturating_rounding_doubling_high_mul(h[i].a, h[i].b);
        if (got != h[i].want)
            fail_msg("SRDHM(%d, %d) = %d, expected %d", h[i].a, h[i].b, got, h[i].want);
    }
    struct { int32_t x; int e; int32_t want; } d[] = {
        {5, 1, 3},   {-5, 1, -3},  /* 2.5 ties away from zero */
        {3, 1, 2},   {-3, 1, -2},  {1, 1, 1},  {-1, 1, -1},
        {6, 2, 2},   {-6, 2, -2},  /* 1.5 */
        {5, 2, 1},   {-5, 2, -1},  /* 1.25 */
        {7, 2, 2},   {-7, 2, -2},  /* 1.75 */
        {2, 2, 1},   {-2, 2, -1},  /* 0.5 */
        {1, 2, 0},   {-1, 2, 0},   /* 0.25 */
        {12345, 0, 12345}, {-12345, 0, -12345}, {M, 0, M}, {X, 0, X},
        {X, 31, 1},  {M, 31, -1},  {1 << 30, 31, 1}, {-(1 << 30), 31, -1},
        {(1 << 30) - 1, 31, 0}, {-(1 << 30) + 1, 31, 0}, {X, 30, 2}, {M, 30, -2},
        {M, 1, -(1 << 30)}, {X, 1, 1 << 30},
    };
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++) {
        int32_t got = qrt_rounding_divide_by_pot(d[i].x, d[i].e);
        if (got != d[i].want)
            fail_msg("RoundingDivideByPOT(%d, %d) = %d, expected %d", d[i].x, d[i].e, got, d[i].want);
    }
    struct { int32_t x, M0; int shift; int32_t want; } q[] = {
        {3, 1 << 30, 0, 2},         /* 0.5 * 3 = 1.5, SRDHM ties up */
        {-3, 1 << 30, 0, -1},       /* -1.5 -> -1 */
        {7, 1 << 30, 1, 7},         /* exactly 1.0 */
        {-7, 1 << 30, 1, -7},
        {7, 1 << 30, -1, 2},        /* 7/4: SRDHM 3.5 -> 4, then 4/2 = 2 */
        {-7, 1 << 30, -1, -2},      /* SRDHM -3.5 -> -3, then -1.5 -> -2 */
        {100, X, 0, 100},           /* (1 - 2^-31) * 100 */
        {X, X, 0, X - 1},
        {X, X, -31, 1},
        {M, X, -31, -1},
        {1, 1 << 30, 30, 1 << 29},  /* 0.5 * 2^30 */
        {1, X, 30, 1 << 30},        /* (2^30 - 2^-1) -> 2^30 (tie up) */
        {-1, X, 30, -(1 << 30) + 1},/* -(2^30 - 1/2) -> ties up */
        {123456, 0, 0, 0},          /* M0 = 0: the output is the zero point */
        {123456, 0, -31, 0},
        {1000, 1518500250, -4, 44}, /* 1000 * 0.7071/16 = 44.19 */
    };
    for (size_t i = 0; i < sizeof q / sizeof q[0]; i++) {
        int32_t got = qrt_multiply_by_quantized_multiplier(q[i].x, q[i].M0, q[i].shift);
        if (got != q[i].want)
            fail_msg("MBQM(%d, %d, %d) = %d, expected %d", q[i].x, q[i].M0, q[i].shift, got, q[i].want);
    }
}

/* 0, +-1, +-2, INT32_MIN, INT32_MAX and +-2^i+-{0,1,2} clipped to int32. */
static int edge_values(int32_t *v) {
    int n = 0;
    v[n++] = INT32_MIN;
    v[n++] = INT32_MAX;
    for (int i = 0; i <= 31; i++)
        for (int d = -2; d <= 2; d++)
            for (int s = -1; s <= 1; s += 2) {
                int64_t x = s * (((int64_t)1 << i) + d);
                if (x >= INT32_MIN && x <= INT32_MAX) v[n++] = (int32_t)x;
            }
    return n;
}

static void test_fixedpoint_edges(void **state) {
    (void)state;
    int32_t v[400];
    int n = edge_values(v);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            int32_t got = qrt_saturating_rounding_doubling_high_mul(v[i], v[j]), want = ref_srdhm(v[i], v[j]);
            if (got != want) fail_msg("SRDHM(%d, %d) = %d, expected %d", v[i], v[j], got, want);
        }
    for (int i = 0; i < n; i++)
        for (int e = 0; e <= 31; e++) {
            int32_t got = qrt_rounding_divide_by_pot(v[i], e), want = ref_rdbpot(v[i], e);
            if (got != want) fail_msg("RoundingDivideByPOT(%d, %d) = %d, expected %d", v[i], e, got, want);
        }
    /* Every exact tie x = (2k+1) * 2^(e-1) rounds away from zero. */
    for (int e = 1; e <= 30; e++)
        for (int k = 0; k < 3; k++) {
            int64_t x = (2 * (int64_t)k + 1) << (e - 1);
            if (x > INT32_MAX) continue;
            int32_t up = qrt_rounding_divide_by_pot((int32_t)x, e),
                    dn = qrt_rounding_divide_by_pot((int32_t)-x, e);
            if (up != k + 1 || dn != -(k + 1))
                fail_msg("tie (2*%d+1)*2^%d / 2^%d: got %d and %d, expected %d and %d", k, e - 1, e,
                         up, dn, k + 1, -(k + 1));
        }
    const int32_t M0s[] = {0, 1 << 30, (1 << 30) + 1, (1 << 30) + (1 << 29), INT32_MAX - 1, INT32_MAX};
    for (int i = 0; i < n; i++)
        for (size_t m = 0; m < sizeof M0s / sizeof M0s[0]; m++)
            for (int sh = -31; sh <= 30; sh++) {
                int left = sh > 0 ? sh : 0;
                int64_t xs = (int64_t)v[i] * ((int64_t)1 << left);
                if (xs > INT32_MAX || xs < INT32_MIN) continue; /* outside the precondition */
                int32_t got = qrt_multiply_by_quantized_multiplier(v[i], M0s[m], sh),
                        want = ref_mbqm(v[i], M0s[m], sh);
                if (got != want)
                    fail_msg("MBQM(%d, %d, %d) = %d, expected %d", v[i], M0s[m], sh, got, want);
            }
}

static void test_fixedpoint_random(void **state) {
    (void)state;
    trng r = {12345};
    for (int it = 0; it < 300000; it++) {
        int32_t a = (int32_t)(uint32_t)rnext(&r), b = (int32_t)(uint32_t)rnext(&r);
        if (it % 3 == 1) a >>= rint_in(&r, 0, 31); /* small magnitudes too */
        int32_t got = qrt_saturating_rounding_doubling_high_mul(a, b), want = ref_srdhm(a, b);
        if (got != want) fail_msg("SRDHM(%d, %d) = %d, expected %d (iteration %d)", a, b, got, want, it);
        int e = (int)rint_in(&r, 0, 31);
        got = qrt_rounding_divide_by_pot(a, e);
        want = ref_rdbpot(a, e);
        if (got != want) fail_msg("RoundingDivideByPOT(%d, %d) = %d, expected %d", a, e, got, want);
        int sh = (int)rint_in(&r, -31, 30);
        int32_t M0 = (int32_t)rint_in(&r, (int64_t)1 << 30, INT32_MAX);
        int32_t x = a;
        if (sh > 0) x = (int32_t)(a / ((int64_t)1 << sh)); /* keep x * 2^shift in int32 */
        got = qrt_multiply_by_quantized_multiplier(x, M0, sh);
        want = ref_mbqm(x, M0, sh);
        if (got != want) fail_msg("MBQM(%d, %d, %d) = %d, expected %d", x, M0, sh, got, want);
    }
}

/* ---- naive reference kernels --------------------------------------------------------- */

static int8_t ref_requant(int32_t acc, int32_t M0, int32_t sh, int32_t z, int32_t lo, int32_t hi) {
    int64_t v = (int64_t)ref_mbqm(acc, M0, sh) + z;
    return (int8_t)(v < lo ? lo : v > hi ? hi : v);
}

static void ref_conv(int8_t *out, const int8_t *in, const int8_t *w, const int32_t *b,
                     const int32_t *m, const int32_t *s, const qrt_conv_params *p) {
    const int Cg = p->C / p->groups, OCg = p->OC / p->groups, k = p->k;
    for (int oc = 0; oc < p->OC; oc++)
        for (int oy = 0; oy < p->OH; oy++)
            for (int ox = 0; ox < p->OW; ox++) {
                int64_t acc = b[oc];
                int g = oc / OCg;
                for (int c = 0; c < Cg; c++)
                    for (int i = 0; i < k; i++)
                        for (int j = 0; j < k; j++) {
                            int iy = oy * p->stride - p->pad + i, ix = ox * p->stride - p->pad + j;
                            int v = (iy >= 0 && iy < p->H && ix >= 0 && ix < p->W)
                                        ? in[((size_t)(g * Cg + c) * p->H + iy) * p->W + ix]
                                        : p->z_in; /* padding reads the zero point */
                            acc += (int64_t)(v - p->z_in) * w[(((size_t)oc * Cg + c) * k + i) * k + j];
                        }
                if (acc > INT32_MAX || acc < INT32_MIN) fail_msg("test bug: accumulator overflow");
                out[((size_t)oc * p->OH + oy) * p->OW + ox] =
                    ref_requant((int32_t)acc, m[oc], s[oc], p->z_out, p->act_min, p->act_max);
            }
}

static void ref_linear(int8_t *out, const int8_t *in, const int8_t *w, const int32_t *b,
                       const int32_t *m, const int32_t *s, const qrt_linear_params *p) {
    for (int o = 0; o < p->F_out; o++) {
        int64_t acc = b[o];
        for (int i = 0; i < p->F_in; i++) acc += (int64_t)(in[i] - p->z_in) * w[(size_t)o * p->F_in + i];
        out[o] = ref_requant((int32_t)acc, m[o], s[o], p->z_out, p->act_min, p->act_max);
    }
}

static void ref_pool(int8_t *out, const int8_t *in, const qrt_pool_params *p, bool max) {
    for (int c = 0; c < p->C; c++)
        for (int oy = 0; oy < p->OH; oy++)
            for (int ox = 0; ox < p->OW; ox++) {
                int best = 1000;
                int64_t sum = 0;
                for (int i = 0; i < p->k; i++)
                    for (int j = 0; j < p->k; j++) {
                        int iy = oy * p->stride - p->pad + i, ix = ox * p->stride - p->pad + j;
                        bool inside = iy >= 0 && iy < p->H && ix >= 0 && ix < p->W;
                        int v = inside ? in[((size_t)c * p->H + iy) * p->W + ix] : p->z_in;
                        if (inside && (best == 1000 || v > best)) best = v;
                        sum += v - p->z_in;
                    }
                if (max && best == 1000) fail_msg("test bug: a max-pool window of padding only");
                out[((size_t)c * p->OH + oy) * p->OW + ox] =
                    (int8_t)(max ? best : ref_centred_mean(sum, (int64_t)p->k * p->k, p->z_in));
            }
}

static void ref_gap(int8_t *out, const int8_t *in, int C, int HW, int z) {
    for (int c = 0; c < C; c++) {
        int64_t d = 0;
        for (int i = 0; i < HW; i++) d += in[(size_t)c * HW + i] - z;
        out[c] = (int8_t)ref_centred_mean(d, HW, z);
    }
}

static void ref_add(int8_t *out, const int8_t *a, const int8_t *b, size_t n, const qrt_add_params *p) {
    for (size_t i = 0; i < n; i++) {
        int32_t xa = ref_mbqm((a[i] - p->z_a) * (1 << 20), p->mult_a, p->shift_a);
        int32_t xb = ref_mbqm((b[i] - p->z_b) * (1 << 20), p->mult_b, p->shift_b);
        out[i] = ref_requant(xa + xb, p->mult_out, p->shift_out, p->z_out, p->act_min, p->act_max);
    }
}

/* ---- kernel tests --------------------------------------------------------------------- */

static void run_conv_case(trng *r, qrt_conv_params p, const char *tag) {
    p.OH = (p.H + 2 * p.pad - p.k) / p.stride + 1;
    p.OW = (p.W + 2 * p.pad - p.k) / p.stride + 1;
    size_t K = (size_t)(p.C / p.groups) * p.k * p.k, nin = (size_t)p.C * p.H * p.W,
           nout = (size_t)p.OC * p.OH * p.OW;
    int8_t *in = xmalloc(nin), *w = xmalloc((size_t)p.OC * K), *got = xmalloc(nout), *want = xmalloc(nout);
    int32_t *b = xmalloc(p.OC * 4), *m = xmalloc(p.OC * 4), *s = xmalloc(p.OC * 4);
    fill_s8(r, in, nin, -128, 127);
    gen_channel_params(r, p.OC, K, 8, w, b, m, s);
    memset(got, 0x55, nout);
    qrt_conv2d_s8(got, in, w, b, m, s, &p);
    ref_conv(want, in, w, b, m, s, &p);
    char what[160];
    snprintf(what, sizeof what, "conv2d %s C=%d H=%d W=%d OC=%d k=%d stride=%d pad=%d groups=%d z_in=%d",
             tag, p.C, p.H, p.W, p.OC, p.k, p.stride, p.pad, p.groups, p.z_in);
    expect_s8_chw(got, want, p.OC, p.OH, p.OW, what);
    free(in), free(w), free(got), free(want), free(b), free(m), free(s);
}

static qrt_conv_params conv_p(int C, int H, int W, int OC, int k, int S, int P, int G, int z_in,
                              int z_out, int lo, int hi) {
    return (qrt_conv_params){.C = C, .H = H, .W = W, .OC = OC, .k = k, .stride = S, .pad = P,
                             .groups = G, .z_in = z_in, .z_out = z_out, .act_min = lo, .act_max = hi};
}

static void test_conv2d_s8(void **state) {
    (void)state;
    trng r = {7};
    /* Named shapes first: 1x1, depthwise, grouped, stride and padding, odd sizes, a
     * window larger than the input, padding wider than the kernel (border windows of
     * padding only: the output is requantized bias). */
    run_conv_case(&r, conv_p(3, 5, 7, 4, 1, 1, 0, 1, -3, 10, -128, 127), "1x1");
    run_conv_case(&r, conv_p(6, 7, 5, 6, 3, 1, 1, 6, 20, -5, -5, 127), "depthwise");
    run_conv_case(&r, conv_p(4, 9, 9, 8, 3, 2, 1, 4, -128, 0, -128, 127), "depthwise x2");
    run_conv_case(&r, conv_p(6, 8, 6, 9, 3, 2, 1, 3, 5, -20, -128, 100), "grouped");
    run_conv_case(&r, conv_p(2, 3, 3, 3, 5, 1, 1, 1, 0, 0, -128, 127), "k > H");
    run_conv_case(&r, conv_p(2, 4, 3, 3, 2, 1, 3, 1, 7, 1, -128, 127), "pad > k");
    run_conv_case(&r, conv_p(1, 28, 28, 4, 3, 1, 1, 1, -55, -128, -128, 127), "mnist-like");
    for (int it = 0; it < 300; it++) {
        int G = (int)rint_in(&r, 1, 3), Cg = (int)rint_in(&r, 1, 4), OCg = (int)rint_in(&r, 1, 3);
        int k = (int)rint_in(&r, 1, 4), S = (int)rint_in(&r, 1, 3), P = (int)rint_in(&r, 0, k);
        int H = (int)rint_in(&r, 1, 10), W = (int)rint_in(&r, 1, 10);
        if (H + 2 * P < k) H = k;
        if (W + 2 * P < k) W = k;
        int lo = (int)rint_in(&r, -128, 127), hi = (int)rint_in(&r, -128, 127);
        if (it % 2) lo = -128, hi = 127;
        if (lo > hi) { int t = lo; lo = hi; hi = t; }
        run_conv_case(&r, conv_p(G * Cg, H, W, G * OCg, k, S, P, G, (int)rint_in(&r, -128, 127),
                                 (int)rint_in(&r, -128, 127), lo, hi), "random");
    }
}

static void test_linear_s8(void **state) {
    (void)state;
    trng r = {8};
    for (int it = 0; it < 200; it++) {
        qrt_linear_params p = {.F_in = (int)rint_in(&r, 1, 300), .F_out = (int)rint_in(&r, 1, 20),
                               .z_in = (int32_t)rint_in(&r, -128, 127), .z_out = (int32_t)rint_in(&r, -128, 127),
                               .act_min = -128, .act_max = 127};
        if (it % 3 == 0) p.act_min = p.z_out; /* fused ReLU */
        int8_t *in = xmalloc(p.F_in), *w = xmalloc((size_t)p.F_in * p.F_out), *got = xmalloc(p.F_out),
               *want = xmalloc(p.F_out);
        int32_t *b = xmalloc(p.F_out * 4), *m = xmalloc(p.F_out * 4), *s = xmalloc(p.F_out * 4);
        fill_s8(&r, in, p.F_in, -128, 127);
        gen_channel_params(&r, p.F_out, p.F_in, (int)rint_in(&r, 2, 8), w, b, m, s);
        qrt_linear_s8(got, in, w, b, m, s, &p);
        ref_linear(want, in, w, b, m, s, &p);
        char what[96];
        snprintf(what, sizeof what, "linear F_in=%d F_out=%d z_in=%d", p.F_in, p.F_out, p.z_in);
        expect_s8(got, want, p.F_out, what);
        free(in), free(w), free(got), free(want), free(b), free(m), free(s);
    }
}

static void test_pool_s8(void **state) {
    (void)state;
    trng r = {9};
    for (int it = 0; it < 400; it++) {
        qrt_pool_params p = {.C = (int)rint_in(&r, 1, 4), .k = (int)rint_in(&r, 1, 4),
                             .stride = (int)rint_in(&r, 1, 3), .z_in = (int32_t)rint_in(&r, -128, 127)};
        p.pad = (int)rint_in(&r, 0, p.k / 2);
        p.H = (int)rint_in(&r, 1, 9);
        p.W = (int)rint_in(&r, 1, 9);
        if (p.H + 2 * p.pad < p.k) p.H = p.k;
        if (p.W + 2 * p.pad < p.k) p.W = p.k;
        p.OH = (p.H + 2 * p.pad - p.k) / p.stride + 1;
        p.OW = (p.W + 2 * p.pad - p.k) / p.stride + 1;
        size_t nin = (size_t)p.C * p.H * p.W, nout = (size_t)p.C * p.OH * p.OW;
        int8_t *in = xmalloc(nin), *got = xmalloc(nout), *want = xmalloc(nout);
        /* Negative inputs half the time: padding counted as 0 would win a max. */
        fill_s8(&r, in, nin, -128, it % 2 ? -1 : 127);
        char what[128];
        snprintf(what, sizeof what, "maxpool C=%d H=%d W=%d k=%d stride=%d pad=%d", p.C, p.H, p.W,
                 p.k, p.stride, p.pad);
        qrt_maxpool_s8(got, in, &p);
        ref_pool(want, in, &p, true);
        expect_s8_chw(got, want, p.C, p.OH, p.OW, what);
        snprintf(what, sizeof what, "avgpool C=%d H=%d W=%d k=%d stride=%d pad=%d z_in=%d", p.C, p.H,
                 p.W, p.k, p.stride, p.pad, p.z_in);
        qrt_avgpool_s8(got, in, &p);
        ref_pool(want, in, &p, false);
        expect_s8_chw(got, want, p.C, p.OH, p.OW, what);
        free(in), free(got), free(want);
    }
    /* Ties of the average: 2x2 windows of sum (q - z) = +-2 and +-6 round away from 0. */
    const int8_t in[8] = {1, 1, 0, 0, -1, -1, 0, 0};
    int8_t out[2];
    qrt_pool_params p = {.C = 2, .H = 2, .W = 2, .OH = 1, .OW = 1, .k = 2, .stride = 2, .pad = 0, .z_in = 0};
    qrt_avgpool_s8(out, in, &p);
    if (out[0] != 1 || out[1] != -1) fail_msg("avgpool ties: got %d %d, expected 1 -1", out[0], out[1]);
    /* Ties whose halves straddle zero: z = -3, sum (q - z) = 2 over 4 (mean +0.5 -> z + 1 =
     * -2) while sum q = -10 (-2.5, which round(sum q / n) would take to -3); and z = 3,
     * sum (q - z) = -2 (-0.5 -> 2) while sum q = 10 (2.5 -> 3). */
    const int8_t st[8] = {-2, -2, -3, -3, 2, 2, 3, 3};
    qrt_pool_params pz = p;
    pz.C = 1, pz.z_in = -3;
    qrt_avgpool_s8(out, st, &pz);
    pz.z_in = 3;
    qrt_avgpool_s8(out + 1, st + 4, &pz);
    if (out[0] != -2 || out[1] != 2) fail_msg("avgpool ties across zero: got %d %d, expected -2 2", out[0], out[1]);
    for (int it = 0; it < 100; it++) {
        int C = (int)rint_in(&r, 1, 5), HW = (int)rint_in(&r, 1, 64), z = (int)rint_in(&r, -128, 127);
        int8_t *x = xmalloc((size_t)C * HW), got[5], want[5];
        fill_s8(&r, x, (size_t)C * HW, -128, it % 2 ? 127 : -100);
        qrt_global_avgpool_s8(got, x, C, HW, z);
        ref_gap(want, x, C, HW, z);
        char what[64];
        snprintf(what, sizeof what, "global_avgpool C=%d HW=%d z=%d", C, HW, z);
        expect_s8(got, want, C, what);
        free(x);
    }
    int8_t x4[4] = {1, 0, 0, 1}, x4n[4] = {-1, 0, 0, -1}, g;
    qrt_global_avgpool_s8(&g, x4, 1, 4, 0);
    if (g != 1) fail_msg("global_avgpool of 0.5: got %d, expected 1", g);
    qrt_global_avgpool_s8(&g, x4n, 1, 4, 0);
    if (g != -1) fail_msg("global_avgpool of -0.5: got %d, expected -1", g);
    /* The case (residual CNN w8a8, Fashion-MNIST test image 4, channel 25): sum q =
     * -21070 over 196 positions, z = -128. d = -21070 + 128 * 196 = 4018 = 20.5 * 196, so
     * q_out = -128 + 21 = -107 (round(sum q / n) = round(-107.5) gave -108). */
    int8_t x196[196];
    for (int i = 0; i < 196; i++) x196[i] = (int8_t)(i % 2 ? -107 : -108);
    qrt_global_avgpool_s8(&g, x196, 1, 196, -128);
    if (g != -107) fail_msg("global_avgpool, sum q = -21070 over 196, z = -128: got %d, expected -107", g);
}

static void test_add_s8(void **state) {
    (void)state;
    trng r = {10};
    for (int it = 0; it < 200; it++) {
        size_t n = (size_t)rint_in(&r, 1, 200);
        qrt_add_params p = {
            .z_a = (int32_t)rint_in(&r, -128, 127), .z_b = (int32_t)rint_in(&r, -128, 127),
            .z_out = (int32_t)rint_in(&r, -128, 127),
            .mult_a = (int32_t)rint_in(&r, (int64_t)1 << 30, INT32_MAX), .shift_a = (int32_t)rint_in(&r, -3, 0),
            .mult_b = (int32_t)rint_in(&r, (int64_t)1 << 30, INT32_MAX), .shift_b = (int32_t)rint_in(&r, -3, 0),
            .mult_out = (int32_t)rint_in(&r, (int64_t)1 << 30, INT32_MAX),
            .shift_out = (int32_t)rint_in(&r, -22, -17), .act_min = -128, .act_max = 127,
        };
        if (it % 4 == 0) p.act_min = p.z_out;
        if (it % 7 == 0) p.mult_b = 0;
        int8_t *a = xmalloc(n), *b = xmalloc(n), *got = xmalloc(n), *want = xmalloc(n);
        fill_s8(&r, a, n, -128, 127);
        fill_s8(&r, b, n, -128, 127);
        qrt_add_s8(got, a, b, n, &p);
        ref_add(want, a, b, n, &p);
        char what[96];
        snprintf(what, sizeof what, "add n=%zu shift_out=%d", n, p.shift_out);
        expect_s8(got, want, n, what);
        qrt_add_s8(got, a, a, n, &p); /* the same value twice */
        ref_add(want, a, a, n, &p);
        expect_s8(got, want, n, "add of a value to itself");
        free(a), free(b), free(got), free(want);
    }
}

static void test_small_kernels(void **state) {
    (void)state;
    const uint8_t px[4] = {0, 127, 128, 255};
    int8_t q[4];
    qrt_input_u8(q, px, 4);
    if (q[0] != -128 || q[1] != -1 || q[2] != 0 || q[3] != 127)
        fail_msg("input: got %d %d %d %d, expected -128 -1 0 127", q[0], q[1], q[2], q[3]);
    const int8_t x[6] = {3, 7, 7, -1, 7, 2};
    if (qrt_argmax_s8(x, 6) != 1) fail_msg("argmax tie: got %d, expected 1 (the lowest)", qrt_argmax_s8(x, 6));
    const int8_t y[3] = {-128, -128, -128};
    if (qrt_argmax_s8(y, 3) != 0) fail_msg("argmax of equal values: expected 0");
    struct { int32_t x, n, want; } d[] = {{5, 2, 3}, {-5, 2, -3}, {4, 3, 1}, {5, 3, 2}, {-4, 3, -1},
                                          {-5, 3, -2}, {0, 7, 0}, {9, 9, 1}, {-9, 9, -1}, {13, 4, 3},
                                          {14, 4, 4}, {-14, 4, -4}};
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
        if (qrt_div_round_s32(d[i].x, d[i].n) != d[i].want)
            fail_msg("div_round(%d, %d) = %d, expected %d", d[i].x, d[i].n,
                     qrt_div_round_s32(d[i].x, d[i].n), d[i].want);
}

/* ---- loading model files (built with testutil.h's tfile and tmodel) ------------------ */

/* A loaded model with its memory (free with loaded_free). */
typedef struct loaded {
    qrt_model m;
    void *mem;
    qrt_error err;
    qrt_status st;
} loaded;

static void load_bytes(loaded *l, const uint8_t *f, size_t len) {
    size_t need = qrt_model_mem_size(f, len);
    l->mem = xmalloc(need ? need : 1);
    l->st = qrt_model_load(&l->m, f, len, l->mem, need, &l->err);
}

static void loaded_free(loaded *l) { free(l->mem); }

/* ---- the model of the whole-file tests (testutil.c's tmodel) ---------------------------- */

/* The reference forward pass, with this file's naive kernels. */
static void tmodel_ref(const tmodel *tm, const uint8_t *px, int8_t logits[10]) {
    int8_t v0[243], v1[648], v2[200], v3[200], v4[200], v5[72], v6[80], v7[24], v9[5], v10[10], v12[10];
    for (int i = 0; i < 243; i++) v0[i] = (int8_t)(px[i] - 128);
#define L(x) tm->x.w, tm->x.b, tm->x.m, tm->x.s
    ref_conv(v1, v0, L(c1), &P_C1);
    ref_pool(v2, v1, &P_MP, true);
    ref_conv(v3, v2, L(dw), &P_DW);
    ref_add(v4, v2, v3, 200, &ADD4);
    ref_pool(v5, v4, &P_AP, false);
    ref_conv(v6, v0, L(c2), &P_C2);
    ref_conv(v7, v5, L(g), &P_G);
    ref_gap(v9, v6, 5, 16, P_C2.z_out);
    ref_linear(v10, v7, L(fc1), &P_FC1);
    ref_linear(v12, v9, L(fc2), &P_FC2);
#undef L
    ref_add(logits, v10, v12, 10, &ADD13);
}

static void test_model_run(void **state) {
    (void)state;
    tmodel tm;
    tmodel_init(&tm, 42);
    size_t len;
    uint8_t *f = tmodel_bytes(&tm, &len);
    loaded l;
    load_bytes(&l, f, len);
    if (l.st != QRT_STATUS_OK) fail_msg("load failed (%s): %s", qrt_status_str(l.st), l.err.msg);
    const qrt_model *m = &l.m;
    if (qrt_model_n_outputs(m) != 10) fail_msg("n_outputs = %d, expected 10", qrt_model_n_outputs(m));
    const qrt_value *in = qrt_model_input(m);
    if (in->ndim != 3 || in->shape[0] != 3 || in->shape[1] != 9 || in->shape[2] != 9 || in->z != -5)
        fail_msg("input value: ndim %d shape %d,%d,%d z %d", in->ndim, in->shape[0], in->shape[1],
                 in->shape[2], in->z);
    size_t arena_len = qrt_arena_size(m);
    uint8_t *arena = xmalloc(arena_len);
    trng r = {99};
    uint8_t px[243];
    int8_t first[10];
    int differ = 0, clamped = 0;
    for (int it = 0; it < 40; it++) {
        for (int i = 0; i < 243; i++)
            px[i] = it == 0 ? 0 : it == 1 ? 255 : (uint8_t)rint_in(&r, 0, 255);
        int8_t got[10], want[10];
        int arg = -1;
        memset(arena, it & 1 ? 0x7f : 0x80, arena_len); /* stale activations must not matter */
        if (qrt_run(m, px, arena, got, &arg) != QRT_STATUS_OK) fail_msg("qrt_run failed");
        tmodel_ref(&tm, px, want);
        char what[48];
        snprintf(what, sizeof what, "logits of image %d", it);
        expect_s8(got, want, 10, what);
        int warg = 0;
        for (int i = 1; i < 10; i++)
            if (want[i] > want[warg]) warg = i;
        if (arg != warg) fail_msg("image %d: argmax %d, expected %d", it, arg, warg);
        if (it == 2) memcpy(first, got, 10);
        if (it > 2) differ += memcmp(first, got, 10) != 0;
        for (int i = 0; i < 10; i++) clamped += got[i] == -128 || got[i] == 127;
    }
    /* The logits follow the input and are mostly inside the clamp: the test would be weak
     * if the layers saturated. */
    if (differ < 30 || clamped > 40)
        fail_msg("degenerate test model: %d of 37 images differ from image 2, %d of 400 logits clamped",
                 differ, clamped);
    if (qrt_run(NULL, px, arena, NULL, NULL) != QRT_STATUS_INVALID_ARG ||
        qrt_run(m, NULL, arena, NULL, NULL) != QRT_STATUS_INVALID_ARG ||
        qrt_run(m, px, NULL, NULL, NULL) != QRT_STATUS_INVALID_ARG)
        fail_msg("qrt_run accepted a NULL argument");
    free(arena);

    /* The model memory may be unaligned: mem_size covers the alignment. */
    size_t need = qrt_model_mem_size(f, len);
    uint8_t *mem2 = xmalloc(need + 1);
    qrt_model m2;
    qrt_error err;
    if (qrt_model_load(&m2, f, len, mem2 + 1, need, &err) != QRT_STATUS_OK)
        fail_msg("load into unaligned memory failed: %s", err.msg);
    free(mem2);
    loaded_free(&l);
    free(f);
    tmodel_free(&tm);
}

/* The arena plan: values alive at the same time never share bytes (flatten excepted,
 * which shares its source's), every value fits in the arena, and reuse happens. */
static void test_model_arena_plan(void **state) {
    (void)state;
    tmodel tm;
    tmodel_init(&tm, 43);
    size_t len;
    uint8_t *f = tmodel_bytes(&tm, &len);
    loaded l;
    load_bytes(&l, f, len);
    if (l.st != QRT_STATUS_OK) fail_msg("load failed: %s", l.err.msg);
    const qrt_model *m = &l.m;
    size_t total = 0;
    for (int i = 0; i < m->n_values; i++) {
        const qrt_value *a = &m->values[i];
        if (a->offset + (size_t)a->numel > m->arena_size)
            fail_msg("value %d [%zu, +%d) exceeds the arena of %zu", i, a->offset, a->numel, m->arena_size);
        if (a->alias != i) {
            if (a->offset != m->values[a->alias].offset) fail_msg("flatten value %d does not share its source", i);
            continue;
        }
        total += (size_t)a->numel;
        for (int j = 0; j < i; j++) {
            const qrt_value *b = &m->values[j];
            if (b->alias != j) continue;
            bool live_together = a->producer <= b->last_use && b->producer <= a->last_use;
            bool overlap = a->offset < b->offset + (size_t)b->numel && b->offset < a->offset + (size_t)a->numel;
            if (live_together && overlap)
                fail_msg("values %d [ops %d..%d, bytes %zu+%d] and %d [ops %d..%d, bytes %zu+%d] overlap",
                         j, b->producer, b->last_use, b->offset, b->numel, i, a->producer, a->last_use,
                         a->offset, a->numel);
        }
    }
    if (m->arena_size >= total) fail_msg("arena %zu bytes: no reuse (values total %zu)", m->arena_size, total);
    /* Value 0 is read by op 6 (c2): it must stay alive until then. */
    if (m->values[0].last_use != 6) fail_msg("value 0 last_use %d, expected 6", m->values[0].last_use);
    loaded_free(&l);
    free(f);
    tmodel_free(&tm);
}

static void test_model_inspect(void **state) {
    (void)state;
    tmodel tm;
    tmodel_init(&tm, 44);
    size_t len;
    uint8_t *f = tmodel_bytes(&tm, &len);
    loaded l;
    load_bytes(&l, f, len);
    if (l.st != QRT_STATUS_OK) fail_msg("load failed: %s", l.err.msg);
    const qrt_model *m = &l.m;
    const qrt_op_kind kinds[] = {QRT_OP_INPUT, QRT_OP_CONV2D, QRT_OP_MAXPOOL, QRT_OP_CONV2D, QRT_OP_ADD,
                                 QRT_OP_AVGPOOL, QRT_OP_CONV2D, QRT_OP_CONV2D, QRT_OP_FLATTEN,
                                 QRT_OP_GLOBAL_AVGPOOL, QRT_OP_LINEAR, QRT_OP_FLATTEN, QRT_OP_LINEAR,
                                 QRT_OP_ADD, QRT_OP_OUTPUT};
    if (qrt_model_n_ops(m) != 15) fail_msg("%d ops, expected 15", qrt_model_n_ops(m));
    for (int i = 0; i < 15; i++) {
        const qrt_op *op = qrt_model_op(m, i);
        if (op->kind != kinds[i] || op->line != i + 1)
            fail_msg("op %d: %s on line %d, expected %s on line %d", i, qrt_op_kind_str(op->kind),
                     op->line, qrt_op_kind_str(kinds[i]), i + 1);
    }
    if (qrt_model_op(m, 15) || qrt_model_op(m, -1) || qrt_model_value(m, 14)) fail_msg("out-of-range access");
    const qrt_op *dw = qrt_model_op(m, 3);
    if (strcmp(dw->weight->name, "dw.weight") || dw->weight->dtype != QRT_DTYPE_U8 || dw->wbits != 4 ||
        dw->groups != 8 || dw->z_in != -100 || dw->z_out != 7 || dw->act_min != 7 || dw->act_max != 100 ||
        !dw->s || strcmp(dw->s, "0.02") || strcmp(dw->bias->name, "dw.bias"))
        fail_msg("op 3 (dw) fields: weight %s wbits %d groups %d z %d/%d clamp [%d, %d] s %s",
                 dw->weight->name, dw->wbits, dw->groups, dw->z_in, dw->z_out, dw->act_min,
                 dw->act_max, dw->s ? dw->s : "(null)");
    const qrt_value *v5 = qrt_model_value(m, 5), *v9 = qrt_model_value(m, 9);
    if (v5->ndim != 3 || v5->shape[0] != 8 || v5->shape[1] != 3 || v5->z != -20 || strcmp(v5->s, "0.2"))
        fail_msg("value 5 (avgpool of the add): ndim %d C %d H %d z %d s %s", v5->ndim, v5->shape[0],
                 v5->shape[1], v5->z, v5->s);
    if (v9->ndim != 3 || v9->shape[0] != 5 || v9->shape[1] != 1 || v9->z != 0)
        fail_msg("value 9 (global_avgpool 5,1,1): ndim %d shape %d,%d z %d", v9->ndim, v9->shape[0],
                 v9->shape[1], v9->z);
    const qrt_op *add = qrt_model_op(m, 4);
    if (add->n_in != 2 || add->in[0] != 2 || add->in[1] != 3 || add->mult_b != ADD_B_M0 || add->shift_b != -1)
        fail_msg("op 4 (add) fields");
    const qrt_tensor *t = qrt_model_tensor(m, "g.weight");
    if (!t || t->ndim != 4 || t->shape[0] != 6 || t->shape[1] != 4 || t->dtype != QRT_DTYPE_I8)
        fail_msg("tensor g.weight");
    if (qrt_model_tensor(m, "nope")) fail_msg("found a tensor that does not exist");
    if (strcmp(qrt_status_str(QRT_STATUS_GRAPH), "bad model graph") || !strcmp(qrt_dtype_str(QRT_DTYPE_I32), "?"))
        fail_msg("status/dtype strings");
    loaded_free(&l);
    free(f);
    tmodel_free(&tm);
}

/* ---- refusals --------------------------------------------------------------------------- */

/* Every substring of `want` ('|'-separated: all must appear) in the message. */
static void expect_refused(const loaded *l, qrt_status st, const char *want, int line, const char *what) {
    if (l->st == QRT_STATUS_OK) fail_msg("%s: the file was accepted", what);
    if (l->st != st)
        fail_msg("%s: status %s, expected %s (message: %s)", what, qrt_status_str(l->st), qrt_status_str(st),
                 l->err.msg);
    char buf[256];
    snprintf(buf, sizeof buf, "%s", want);
    for (char *save = NULL, *tok = strtok_r(buf, "|", &save); tok; tok = strtok_r(NULL, "|", &save))
        if (!strstr(l->err.msg, tok)) fail_msg("%s: the message does not mention '%s': %s", what, tok, l->err.msg);
    if (line && l->err.line != line)
        fail_msg("%s: error line %d, expected %d (message: %s)", what, l->err.line, line, l->err.msg);
    if (l->m.ops || l->m.n_ops) fail_msg("%s: the model was left half-filled", what);
}

static void test_refuse_truncated(void **state) {
    (void)state;
    tmodel tm;
    tmodel_init(&tm, 45);
    size_t len;
    uint8_t *f = tmodel_bytes(&tm, &len);
    for (size_t cut = 0; cut < len; cut++) {
        loaded l;
        load_bytes(&l, f, cut);
        char what[64];
        snprintf(what, sizeof what, "file cut at %zu of %zu bytes", cut, len);
        expect_refused(&l, QRT_STATUS_FORMAT, "truncated", 0, what);
        loaded_free(&l);
    }
    /* And one byte too many: a hole after the last tensor. */
    uint8_t *g = xmalloc(len + 1);
    memcpy(g, f, len);
    g[len] = 0;
    loaded l;
    load_bytes(&l, g, len + 1);
    expect_refused(&l, QRT_STATUS_FORMAT, "belong to no tensor", 0, "one extra byte");
    loaded_free(&l);
    free(g);
    free(f);
    tmodel_free(&tm);
}

static void test_refuse_header_length(void **state) {
    (void)state;
    const struct { uint64_t N; size_t file_len; const char *want; } c[] = {
        {1000, 100, "exceeds the 92 bytes|truncated"},
        {(uint64_t)1 << 40, 100, "exceeds the limit|oversized"},
        {100000001, 100, "exceeds the limit"},
        {1, 100, "too short"},
        {0, 100, "too short"},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        uint8_t f[100];
        memset(f, ' ', sizeof f);
        for (int k = 0; k < 8; k++) f[k] = (uint8_t)(c[i].N >> (8 * k));
        loaded l;
        load_bytes(&l, f, c[i].file_len);
        char what[64];
        snprintf(what, sizeof what, "header length %llu", (unsigned long long)c[i].N);
        expect_refused(&l, QRT_STATUS_FORMAT, c[i].want, 0, what);
        loaded_free(&l);
    }
}

/* Hand-made headers over a small data buffer: JSON syntax and container rules
 * (testutil.c's runtime_bad_headers, shared with test_container). */
static void test_refuse_bad_container(void **state) {
    (void)state;
    const uint8_t zeros[8] = {0};
    for (size_t i = 0; i < n_runtime_bad_headers; i++) {
        const runtime_bad_header *c = &runtime_bad_headers[i];
        size_t len;
        uint8_t *f = pack_file(c->header, zeros, c->data, &len);
        loaded l;
        load_bytes(&l, f, len);
        char what[300];
        snprintf(what, sizeof what, "header %s", c->header);
        bool graph = strstr(c->want, "first op") != NULL || strstr(c->want, "empty") != NULL;
        expect_refused(&l, graph ? QRT_STATUS_GRAPH : QRT_STATUS_FORMAT, c->want, 0, what);
        loaded_free(&l);
        free(f);
    }
    /* A NUL byte inside the header. */
    char h[] = "{\"a\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]}}";
    size_t len;
    uint8_t *f = pack_file(h, zeros, 1, &len);
    f[8 + 3] = 0;
    loaded l;
    load_bytes(&l, f, len);
    expect_refused(&l, QRT_STATUS_FORMAT, "NUL", 0, "a NUL byte in a name");
    loaded_free(&l);
    free(f);
}

/* The test model with one change: in the graph text, in the header text, or in a
 * tensor's bytes. */
typedef struct mutation {
    const char *what;
    const char *graph_from, *graph_to;   /* NULL: graph unchanged */
    const char *header_from, *header_to; /* NULL: header unchanged */
    const char *tensor;                  /* NULL, or patch this tensor's bytes: */
    size_t byte;                         /*   at this byte offset */
    int32_t i32;                         /*   with this int32 (I32 tensors) or byte value */
    qrt_status status;
    const char *want;                    /* '|'-separated substrings of the message */
    int line;                            /* expected error line, 0: not checked */
} mutation;

static const mutation MUTATIONS[] = {
    {"unknown op", "maxpool in=1", "softmax in=1", NULL, NULL, NULL, 0, 0, QRT_STATUS_GRAPH,
     "line 3|unknown op 'softmax'", 3},
    {"missing field", " z_out=-100", "", NULL, NULL, NULL, 0, 0, QRT_STATUS_GRAPH,
     "line 2 (conv2d)|missing field 'z_out'", 2},
    {"missing tensor field", " bias=c1.bias", "", NULL, NULL, NULL, 0, 0, QRT_STATUS_GRAPH,
     "missing field 'bias'", 2},
    {"value read before written", "conv2d in=0 out=6", "conv2d in=9 out=6", NULL, NULL, NULL, 0, 0,
     QRT_STATUS_GRAPH, "line 7|in=9 is read before it is written", 7},
    {"add reads a future value", "add in=2,3", "add in=2,4", NULL, NULL, NULL, 0, 0, QRT_STATUS_GRAPH,
     "line 5|in=4 is read before it is written", 5},
    {"output reads nothing written", "output in=13", "output in=14", NULL, NULL, NULL, 0, 0,
     QRT_STATUS_GRAPH, "line 15|in=14", 15},
    {"out not the next value", "maxpool in=1 out=2", "maxpool in=1 out=3", NULL, NULL, NULL, 0, 0,
     QRT_STATUS_GRAPH, "out=3, expected 2", 3},
    {"unknown field", "flatten in=7 out=8 shape=24", "flatten in=7 out=8 shape=24 foo=1", NULL, NULL,
     NULL, 0, 0, QRT_STATUS_GRAPH, "line 9 (flatten)|unknown field 'foo'", 9},
    {"field twice", "flatten in=7 out=8 shape=24", "flatten in=7 out=8 shape=24 in=7", NULL, NULL,
     NULL, 0, 0, QRT_STATUS_GRAPH, "'in' appears twice", 9},
    {"double space", "flatten in=7 out=8", "flatten in=7  out=8", NULL, NULL, NULL, 0, 0,
     QRT_STATUS_GRAPH, "empty field", 9},
    {"not key=value", "flatten in=7 out=8", "flatten in=7 out8", NULL, NULL, NULL, 0, 0,
     QRT_STATUS_GRAPH, "'out8' is not key=value", 9},
    {"not an integer", "shape=8,5,5 k=3 stride", "shape=8,5,5 k=3x stride", NULL, NULL, NULL, 0, 0,
     QRT_STATUS_GRAPH, "line 3|k=3x is not an integer", 3},
    {"bad list", "shape=8,9,9", "shape=8,,9", NULL, NULL, NULL, 0, 0, QRT_STATUS_GRAPH,
     "shape=8,,9 is not a list", 2},
    {"2-D shape", "shape=8,9,9", "shape=72,9", NULL, NULL, NULL, 0, 0, QRT_STATUS_GRAPH,
     "2 dimensions", 2},
    {"declared shape wrong", "shape=8,9,9", "shape=8,9,8", NULL, NULL, NULL, 0, 0, QRT_STATUS_GRAPH,
     "line 2|shape=8,9,8, but conv2d of 3,9,9|gives 8,9,9", 2},
    {"first op not input", "input out=0 shape=3,9,9 s=0.011109 z=-5\n", "", NULL, NULL, NULL, 0, 0,
     QRT_STATUS_GRAPH, "the first op must be 'input'", 1},
    {"second input", "flatten in=9 out=11 shape=5", "input out=11 shape=5 z=0", NULL, NULL, NULL, 0, 0,
     QRT_STATUS_GRAPH, "a second input", 12},
    {"no output", "output in=13\n", "", NULL, NULL, NULL, 0, 0, QRT_STATUS_GRAPH, "no output line", 0},
    {"op after output", "output in=13\n", "output in=13\nflatten in=13 out=14 shape=10\n", NULL, NULL,
     NULL, 0, 0, QRT_STATUS_GRAPH, "after the output line", 16},
    {"z_in mismatch", "z_in=-5 z_out=-100", "z_in=-6 z_out=-100", NULL, NULL, NULL, 0, 0,
     QRT_STATUS_GRAPH, "z_in=-6, but value 0 has zero point -5", 2},
    {"z_b mismatch", "z_b=7", "z_b=8", NULL, NULL, NULL, 0, 0, QRT_STATUS_GRAPH,
     "z_b=8, but value 3 has zero point 7", 5},
    {"zero point out of range", "z_in=-5 z_out=-100", "z_in=-5 z_out=128", NULL, NULL, NULL, 0, 0,
     QRT_STATUS_GRAPH, "z_out=128 is out of range [-128, 127]", 2},
    {"act_min > act_max", "act_min=-100 act_max=127", "act_min=10 act_max=-10", NULL, NULL, NULL, 0, 0,
     QRT_STATUS_GRAPH, "line 2|act_min=10 > act_max=-10", 2},
    {"act_max out of range", "act_min=-100 act_max=127", "act_min=-100 act_max=200", NULL, NULL, NULL,
     0, 0, QRT_STATUS_GRAPH, "act_max=200 is out of range", 2},
    {"add M0 out of range", "mult_a=1073741824", "mult_a=5", NULL, NULL, NULL, 0, 0, QRT_STATUS_GRAPH,
     "line 5|mult_a = 5: M0 must be 0 or in [2^30, 2^31)", 5},
    {"add shift out of range", "shift_out=-19", "shift_out=-32", NULL, NULL, NULL, 0, 0,
     QRT_STATUS_GRAPH, "shift_out = -32: shift is out of range [-31, 30]", 5},
    {"add shift could overflow", "shift_a=0", "shift_a=4", NULL, NULL, NULL, 0, 0, QRT_STATUS_GRAPH,
     "could overflow", 5},
    {"add shape mismatch", "add in=10,12", "add in=10,9", NULL, NULL, NULL, 0, 0, QRT_STATUS_GRAPH,
     "line 14|values 10 (10) and 9 (5,1,1) differ in shape", 14},
    {"groups do not divide", "groups=2", "groups=3", NULL, NULL, NULL, 0, 0, QRT_STATUS_GRAPH,
     "line 8|groups=3 does not divide the 8 input channels", 8},
    {"pool padding above k/2", "maxpool in=1 out=2 shape=8,5,5 k=3 stride=2 pad=1",
     "maxpool in=1 out=2 shape=8,5,5 k=3 stride=2 pad=2", NULL, NULL, NULL, 0, 0, QRT_STATUS_GRAPH,
     "pad=2 is out of range [0, 1]", 3},
    {"pool of a 1-D value", "global_avgpool in=6", "global_avgpool in=8", NULL, NULL, NULL, 0, 0,
     QRT_STATUS_GRAPH, "line 10 (global_avgpool)|in=8 has shape 24; global_avgpool needs C,H,W", 10},
    {"missing tensor", "weight=c1.weight", "weight=nope.weight", NULL, NULL, NULL, 0, 0,
     QRT_STATUS_GRAPH, "line 2|weight=nope.weight: no tensor of that name", 2},
    {"wrong dtype (tensor swap)", "bias=c1.bias", "bias=c1.weight", NULL, NULL, NULL, 0, 0,
     QRT_STATUS_GRAPH, "bias=c1.weight is I8, expected I32", 2},
    {"wrong dtype (header)", NULL, NULL, "\"c1.mult\":{\"dtype\":\"I32\"", "\"c1.mult\":{\"dtype\":\"U32\"",
     NULL, 0, 0, QRT_STATUS_GRAPH, "mult=c1.mult is U32, expected I32", 2},
    {"shape mismatch (header)", NULL, NULL, "\"c1.bias\":{\"dtype\":\"I32\",\"shape\":[8]",
     "\"c1.bias\":{\"dtype\":\"I32\",\"shape\":[2,4]", NULL, 0, 0, QRT_STATUS_GRAPH,
     "bias=c1.bias has shape (2, 4), expected (8)", 2},
    {"weight shape mismatch", "weight=g.weight", "weight=c1.weight", NULL, NULL, NULL, 0, 0,
     QRT_STATUS_GRAPH, "line 8|weight=c1.weight has shape (8, 3, 3, 3), expected (6, 4, 3, 3)", 8},
    {"packed weights with wbits 8", "wbits=4 z_in=-100", "wbits=8 z_in=-100", NULL, NULL, NULL, 0, 0,
     QRT_STATUS_GRAPH, "weight=dw.weight is U8 (packed 4-bit), but wbits=8", 4},
    {"packed weight count", "weight=dw.weight", "weight=c2.weight", NULL, NULL, NULL, 0, 0,
     QRT_STATUS_GRAPH, "weight=c2.weight has shape (68), expected (36)", 4},
    {"wbits out of range", "wbits=3", "wbits=9", NULL, NULL, NULL, 0, 0, QRT_STATUS_GRAPH,
     "line 13|wbits=9 is out of range [2, 8]", 13},
    {"M0 out of range", NULL, NULL, NULL, NULL, "c1.mult", 12, 5, QRT_STATUS_GRAPH,
     "line 2|mult=c1.mult[3] = 5: M0 must be 0 or in [2^30, 2^31)", 2},
    {"M0 negative", NULL, NULL, NULL, NULL, "fc1.mult", 0, -1073741824, QRT_STATUS_GRAPH,
     "mult=fc1.mult[0] = -1073741824", 11},
    {"shift out of range", NULL, NULL, NULL, NULL, "c1.shift", 0, 31, QRT_STATUS_GRAPH,
     "shift=c1.shift[0] = 31: shift is out of range [-31, 30]", 2},
    {"shift could overflow", NULL, NULL, NULL, NULL, "c1.shift", 4, 16, QRT_STATUS_GRAPH,
     "channel 1: shift=c1.shift[1] = 16 could overflow", 2},
    {"accumulator bound", NULL, NULL, NULL, NULL, "c1.bias", 8, 2147483000, QRT_STATUS_GRAPH,
     "line 2|accumulator bound exceeded|27*255*", 2},
    {"weight outside its bits (I8)", NULL, NULL, NULL, NULL, "fc2.weight", 7, -4, QRT_STATUS_GRAPH,
     "weight=fc2.weight[7] = -4 is outside the wbits=3 range [-3, 3]", 13},
    {"weight outside its bits (-128)", NULL, NULL, NULL, NULL, "c1.weight", 0, -128, QRT_STATUS_GRAPH,
     "weight=c1.weight[0] = -128 is outside the wbits=8 range [-127, 127]", 2},
    {"packed weight -8", NULL, NULL, NULL, NULL, "dw.weight", 5, 0x80, QRT_STATUS_GRAPH,
     "weight=dw.weight[11] = -8 is outside the wbits=4 range [-7, 7]", 4},
    {"packed padding nibble", NULL, NULL, NULL, NULL, "c2.weight", 67, 0x30, QRT_STATUS_GRAPH,
     "weight=c2.weight: the unused high nibble of its last byte is 3", 7},
    {"format", NULL, NULL, "\"format\":\"qat-int8\"", "\"format\":\"qat-float\"", NULL, 0, 0,
     QRT_STATUS_FORMAT, "format is 'qat-float', expected 'qat-int8'", 0},
    {"format version", NULL, NULL, "\"format_version\":\"1\"", "\"format_version\":\"1.0\"", NULL, 0, 0,
     QRT_STATUS_FORMAT, "format_version '1.0' is not supported", 0},
};

static void test_refuse_graph(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof MUTATIONS / sizeof MUTATIONS[0]; i++) {
        const mutation *mu = &MUTATIONS[i];
        tmodel tm;
        tmodel_init(&tm, 46);
        tfile *tf = &tm.tf;
        if (mu->graph_from) {
            char *g = replace1(tf->graph, mu->graph_from, mu->graph_to);
            snprintf(tf->graph, sizeof tf->graph, "%s", g);
            free(g);
        }
        if (mu->tensor) {
            ttensor *t = NULL;
            for (int k = 0; k < tf->n; k++)
                if (!strcmp(tf->t[k].name, mu->tensor)) t = &tf->t[k];
            if (!t || mu->byte >= t->nbytes) fail_msg("test bug: tensor %s byte %zu", mu->tensor, mu->byte);
            if (!strcmp(t->dtype, "I32"))
                for (int k = 0; k < 4; k++) t->data[mu->byte + k] = (uint8_t)((uint32_t)mu->i32 >> (8 * k));
            else if (!strcmp(t->dtype, "U8"))
                t->data[mu->byte] = (uint8_t)((t->data[mu->byte] & 0x0F) | mu->i32);
            else
                t->data[mu->byte] = (uint8_t)(int8_t)mu->i32;
        }
        char *h = tf_header(tf, "qat-int8", "1");
        if (mu->header_from) {
            char *h2 = replace1(h, mu->header_from, mu->header_to);
            free(h);
            h = h2;
        }
        size_t len;
        uint8_t *f = tf_bytes_with(tf, h, &len);
        loaded l;
        load_bytes(&l, f, len);
        expect_refused(&l, mu->status, mu->want, mu->line, mu->what);
        loaded_free(&l);
        free(f);
        free(h);
        tmodel_free(&tm);
    }
}

static void test_refuse_small_memory(void **state) {
    (void)state;
    tmodel tm;
    tmodel_init(&tm, 47);
    size_t len;
    uint8_t *f = tmodel_bytes(&tm, &len);
    size_t need = qrt_model_mem_size(f, len);
    char want[64];
    snprintf(want, sizeof want, "needs %zu", need);
    loaded l = {0};
    l.mem = xmalloc(need);
    l.st = qrt_model_load(&l.m, f, len, l.mem, need / 2, &l.err);
    expect_refused(&l, QRT_STATUS_NO_MEMORY, want, 0, "half the model memory");
    l.st = qrt_model_load(&l.m, f, len, NULL, 0, &l.err);
    expect_refused(&l, QRT_STATUS_NO_MEMORY, want, 0, "no model memory");
    if (qrt_model_load(&l.m, f, len, l.mem, need, NULL) != QRT_STATUS_OK) fail_msg("load with err NULL failed");
    if (qrt_model_load(NULL, f, len, l.mem, need, &l.err) != QRT_STATUS_INVALID_ARG) fail_msg("NULL model accepted");
    loaded_free(&l);
    free(f);
    tmodel_free(&tm);
}

/* Random damage (1 to 3 bytes, mostly in the header): every file is either refused with
 * a message or loads and runs (its weights were validated, whatever they are). Under
 * the sanitizer build this checks that no damage makes the loader read out of bounds. */
static void test_refuse_random_damage(void **state) {
    (void)state;
    tmodel tm;
    tmodel_init(&tm, 48);
    size_t len;
    uint8_t *f = tmodel_bytes(&tm, &len), *g = xmalloc(len);
    size_t header_end = 8;
    for (int k = 0; k < 8; k++) header_end += (size_t)f[k] << (8 * k);
    trng r = {2024};
    int loaded_ok = 0;
    for (int it = 0; it < 3000; it++) {
        memcpy(g, f, len);
        for (int n = (int)rint_in(&r, 1, 3); n > 0; n--) {
            size_t at = it % 2 ? (size_t)rint_in(&r, 8, (int64_t)header_end - 1) : (size_t)rint_in(&r, 0, (int64_t)len - 1);
            g[at] = it % 3 ? (uint8_t)rnext(&r) : (uint8_t)(g[at] ^ (1u << rint_in(&r, 0, 7)));
        }
        loaded l;
        load_bytes(&l, g, len);
        if (l.st == QRT_STATUS_OK) {
            loaded_ok++;
            /* The damage may have changed the input or output shape: size from the model. */
            size_t npx = (size_t)qrt_model_input(&l.m)->numel;
            uint8_t *arena = xmalloc(qrt_arena_size(&l.m)), *px = xmalloc(npx);
            for (size_t i = 0; i < npx; i++) px[i] = (uint8_t)rnext(&r);
            int8_t *logits = xmalloc((size_t)qrt_model_n_outputs(&l.m));
            int arg;
            if (qrt_run(&l.m, px, arena, logits, &arg) != QRT_STATUS_OK) fail_msg("damage %d: run failed", it);
            free(logits);
            free(px);
            free(arena);
        } else if ((l.st != QRT_STATUS_FORMAT && l.st != QRT_STATUS_GRAPH) || !l.err.msg[0]) {
            fail_msg("damage %d: status %s, message '%s'", it, qrt_status_str(l.st), l.err.msg);
        }
        loaded_free(&l);
    }
    if (loaded_ok == 0) fail_msg("no damaged file loaded: the damage never hit the weights");
    free(g);
    free(f);
    tmodel_free(&tm);
}

/* A graph with escapes in the JSON string (\u000a newlines, \/ in a name) and blank
 * lines loads: the loader decodes before it parses. */
static void test_escaped_graph(void **state) {
    (void)state;
    const char *h = "{\"__metadata__\":{\"format\":\"qat-int8\",\"format_version\":\"1\",\"graph\":"
                    "\"input out=0 shape=4 z=3\\u000a\\nlinear in=0 out=1 shape=2 weight=w\\/x bias=b "
                    "mult=m shift=s wbits=8 z_in=3 z_out=-1 act_min=-128 act_max=127\\noutput in=1\\n\"},"
                    "\"w/x\":{\"dtype\":\"I8\",\"shape\":[2,4],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[8,16]},"
                    "\"m\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[16,24]},"
                    "\"s\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[24,32]}}";
    uint8_t data[32] = {1, 2, 3, 4, 0xFF, 0xFE, 0, 0}; /* w = [[1,2,3,4],[-1,-2,0,0]] */
    const int32_t b[2] = {10, -7}, m[2] = {1 << 30, 1 << 30}, s[2] = {1, 0};
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 4; k++) {
            data[8 + 4 * i + k] = (uint8_t)((uint32_t)b[i] >> (8 * k));
            data[16 + 4 * i + k] = (uint8_t)((uint32_t)m[i] >> (8 * k));
            data[24 + 4 * i + k] = (uint8_t)((uint32_t)s[i] >> (8 * k));
        }
    size_t len;
    uint8_t *f = pack_file(h, data, 32, &len);
    loaded l;
    load_bytes(&l, f, len);
    if (l.st != QRT_STATUS_OK) fail_msg("escaped graph: %s", l.err.msg);
    uint8_t *arena = xmalloc(qrt_arena_size(&l.m));
    const uint8_t px[4] = {131, 140, 120, 128}; /* q = 3, 12, -8, 0; q - z = 0, 9, -11, -3 */
    int8_t logits[2];
    int arg;
    qrt_run(&l.m, px, arena, logits, &arg);
    /* acc0 = 10 + 0 + 18 - 33 - 12 = -17 -> *1 = -17 - 1 = -18; acc1 = -7 - 0 - 18 + 0 + 0 = -25
     * -> *0.5 = -12.5 -> -12 (ties up) - 1 = -13 */
    if (logits[0] != -18 || logits[1] != -13 || arg != 1)
        fail_msg("escaped graph: logits %d %d argmax %d, expected -18 -13 1", logits[0], logits[1], arg);
    free(arena);
    loaded_free(&l);
    free(f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixedpoint_hand),
        cmocka_unit_test(test_fixedpoint_edges),
        cmocka_unit_test(test_fixedpoint_random),
        cmocka_unit_test(test_conv2d_s8),
        cmocka_unit_test(test_linear_s8),
        cmocka_unit_test(test_pool_s8),
        cmocka_unit_test(test_add_s8),
        cmocka_unit_test(test_small_kernels),
        cmocka_unit_test(test_model_run),
        cmocka_unit_test(test_model_arena_plan),
        cmocka_unit_test(test_model_inspect),
        cmocka_unit_test(test_escaped_graph),
        cmocka_unit_test(test_refuse_truncated),
        cmocka_unit_test(test_refuse_header_length),
        cmocka_unit_test(test_refuse_bad_container),
        cmocka_unit_test(test_refuse_graph),
        cmocka_unit_test(test_refuse_small_memory),
        cmocka_unit_test(test_refuse_random_damage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
