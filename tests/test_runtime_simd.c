/* test_runtime_simd.c - the SIMD kernels of the int8 runtime (runtime/simd.h) against
 * the portable ones (runtime/kernels.h), zero tolerance (memcmp), on every path this CPU
 * has (a missing one is skipped with a note):
 *
 *  - conv2d on random shapes: dense, grouped, depthwise (and channel multipliers), odd
 *    C, k*C not a multiple of 4, k 1..5, stride 1..3, pad 0..k, OC not a multiple of 16,
 *    planes from 1x1 to 40x40; and on extremes: inputs and weights all at -128/127 and
 *    +-127, zero points at both ends, M0 = 2^30 and 2^31 - 1, every shift from -31 to 30
 *    with the bias at the loader's overflow bound (K*255*max|w| + |bias| times 2^left
 *    = 2^31 - 1), clamps;
 *  - conv2d with a fused 2x2 max pool against conv2d then max pool;
 *  - linear (GEMV) likewise, F_in up to 3200 and F_out up to 300;
 *  - linear over a batch (the AVX2 and AVX-512 GEMMs) against qrt_linear_s8 per sample: batch sizes
 *    1..13 and up to 40 (whole tiles of 5 and every tail), odd F_in, F_out not a multiple
 *    of 16, strides wider than the rows, per-channel multipliers and shifts, 4-bit
 *    weights, extremes, clamps; and nothing written outside the outputs;
 *  - qrt_run_batch_isa on whole models on every path against qrt_run_isa per image;
 *  - max pool (the 2x2 fast path and the fallback), add (TFLite scheme) and the input
 *    conversion on random data and parameters;
 *  - both average pools against the spec's centred formula written out here (on the
 *    portable path too): exact ties whose halves straddle zero, the issue-11 case
 *    (sum q = -21070 over 196, z = -128 -> -107), random data, and small models of
 *    avgpool and global_avgpool through qrt_run_isa;
 *  - whole models built here (safetensors bytes + graph text): qrt_run_isa on every path
 *    gives the portable logits; every conv/linear got packed; qrt_model_set_isa
 *    chooses the path (lowered to what the CPU has).
 * A mismatch prints its position, got and expected.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "runtime/kernels.h"
#include "runtime/runtime.h"
#include "runtime/simd.h"

/* ---- helpers ------------------------------------------------------------------------ */

/* The SIMD paths this CPU has; prints a note for the others (once). */
static int simd_paths(qrt_isa *out) {
    static bool noted;
    int n = 0;
    for (int i = QRT_ISA_AVX2; i < QRT_ISA_COUNT; i++) {
        if (qrt_isa_supported((qrt_isa)i)) out[n++] = (qrt_isa)i;
        else if (!noted) printf("note: this CPU (or build) has no %s: its tests are skipped\n", qrt_isa_str((qrt_isa)i));
    }
    noted = true;
    return n;
}

static void expect_chw(const int8_t *got, const int8_t *want, int C, int H, int W, const char *what) {
    if (!memcmp(got, want, (size_t)C * H * W)) return;
    for (int c = 0; c < C; c++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                size_t i = ((size_t)c * H + y) * W + x;
                if (got[i] != want[i])
                    fail_msg("%s: first mismatch at (c=%d, y=%d, x=%d) of (%d, %d, %d): got %d, expected %d",
                             what, c, y, x, C, H, W, got[i], want[i]);
            }
}

static void expect_vec(const int8_t *got, const int8_t *want, size_t n, const char *what) {
    if (!memcmp(got, want, n)) return;
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i])
            fail_msg("%s: first mismatch at element %zu of %zu: got %d, expected %d", what, i, n, got[i], want[i]);
}

/* Per-channel integers within the loader's guarantees: |w| <= 127 (wbits 8), M0 in
 * [2^30, 2^31), shift in [-31, 30], B_c = K*255*max|w_c| + |bias_c| <= 2^31 - 1 and
 * B_c * 2^max(shift, 0) <= 2^31 - 1. extreme: weights at +-127, the bias at the bound. */
static void gen_params(trng *r, int OC, size_t K, int8_t *w, int32_t *b, int32_t *m, int32_t *s, bool extreme) {
    if (extreme) {
        for (size_t i = 0; i < (size_t)OC * K; i++) w[i] = rnext(r) & 1 ? 127 : -127;
    } else {
        fill_s8(r, w, (size_t)OC * K, -127, 127);
    }
    for (int c = 0; c < OC; c++) {
        int mw = 0;
        for (size_t i = 0; i < K; i++) {
            int v = w[(size_t)c * K + i] < 0 ? -w[(size_t)c * K + i] : w[(size_t)c * K + i];
            if (v > mw) mw = v;
        }
        const int64_t B = (int64_t)K * 255 * mw;
        int sh;
        /* a shift whose left part keeps B * 2^left within int32 */
        do sh = extreme ? (int)rint_in(r, -31, 30) : -(int)rint_in(r, 4, 18);
        while (sh > 0 && (B << sh) > INT32_MAX);
        const int64_t lim = (int64_t)INT32_MAX >> (sh > 0 ? sh : 0);
        const int64_t room = lim - B; /* >= 0 */
        b[c] = (int32_t)(extreme ? (rnext(r) & 1 ? room : -room) : rint_in(r, -(room < 5000 ? room : 5000), room < 5000 ? room : 5000));
        switch (rnext(r) % 4) {
        case 0: m[c] = 1 << 30; break;
        case 1: m[c] = INT32_MAX; break;
        default: m[c] = (int32_t)rint_in(r, (int64_t)1 << 30, INT32_MAX);
        }
        s[c] = sh;
    }
}

/* ---- conv2d ------------------------------------------------------------------------- */

static void conv_case(trng *r, qrt_conv_params p, int in_mode, bool extreme, const char *tag) {
    qrt_isa paths[QRT_ISA_COUNT];
    const int np = simd_paths(paths);
    p.OH = (p.H + 2 * p.pad - p.k) / p.stride + 1;
    p.OW = (p.W + 2 * p.pad - p.k) / p.stride + 1;
    const size_t K = (size_t)(p.C / p.groups) * p.k * p.k, nin = (size_t)p.C * p.H * p.W,
                 nout = (size_t)p.OC * p.OH * p.OW;
    int8_t *in = xmalloc(nin), *w = xmalloc((size_t)p.OC * K), *want = xmalloc(nout), *got = xmalloc(nout);
    int32_t *b = xmalloc((size_t)p.OC * 4), *m = xmalloc((size_t)p.OC * 4), *s = xmalloc((size_t)p.OC * 4);
    if (in_mode == 0) fill_s8(r, in, nin, -128, 127);
    else memset(in, in_mode < 0 ? -128 : 127, nin);
    gen_params(r, p.OC, K, w, b, m, s, extreme);
    qrt_conv2d_s8(want, in, w, b, m, s, &p);
    /* Unaligned packed memory and scratch: the kernels align them. */
    const size_t psz = qrt_conv2d_pack_size(&p), ssz = qrt_conv2d_scratch_size(&p);
    uint8_t *pmem = xmalloc(psz + 1), *scratch = xmalloc(ssz + 3);
    const void *packed = qrt_conv2d_pack(pmem + 1, w, b, m, s, &p);
    char what[256];
    for (int i = 0; packed && i < np + 1; i++) { /* no packed form: a build without SIMD */
        const qrt_isa isa = i < np ? paths[i] : QRT_ISA_PORTABLE;
        memset(got, 0x5a, nout);
        memset(scratch, 0xa5, ssz + 3); /* stale scratch must not matter */
        qrt_conv2d_s8_isa(isa, got, in, packed, &p, scratch + 3);
        snprintf(what, sizeof what, "conv2d %s [%s] C=%d H=%d W=%d OC=%d k=%d stride=%d pad=%d groups=%d "
                 "z_in=%d z_out=%d clamp [%d, %d]", tag, qrt_isa_str(isa), p.C, p.H, p.W, p.OC, p.k,
                 p.stride, p.pad, p.groups, p.z_in, p.z_out, p.act_min, p.act_max);
        expect_chw(got, want, p.OC, p.OH, p.OW, what);
    }
    free(in), free(w), free(want), free(got), free(b), free(m), free(s), free(pmem), free(scratch);
}

static qrt_conv_params conv_p(int C, int H, int W, int OC, int k, int S, int P, int G, int z_in, int z_out,
                              int lo, int hi) {
    return (qrt_conv_params){.C = C, .H = H, .W = W, .OC = OC, .k = k, .stride = S, .pad = P,
                             .groups = G, .z_in = z_in, .z_out = z_out, .act_min = lo, .act_max = hi};
}

static void test_conv2d_named(void **state) {
    (void)state;
    trng r = {1};
    conv_case(&r, conv_p(1, 28, 28, 32, 3, 1, 1, 1, -55, -128, -128, 127), 0, false, "cnn conv1");
    conv_case(&r, conv_p(32, 14, 14, 64, 3, 1, 1, 1, -128, -128, -128, 127), 0, false, "cnn conv2");
    conv_case(&r, conv_p(16, 28, 28, 16, 3, 2, 1, 16, -128, -128, -128, 127), 0, false, "dw stride 2");
    conv_case(&r, conv_p(64, 7, 7, 128, 1, 1, 0, 1, -128, -128, -128, 127), 0, false, "pointwise");
    conv_case(&r, conv_p(3, 40, 37, 5, 3, 1, 1, 1, 3, 0, -128, 127), 0, false, "rgb large plane");
    conv_case(&r, conv_p(6, 9, 9, 18, 3, 1, 1, 3, 0, 0, -128, 127), 0, false, "grouped");
    conv_case(&r, conv_p(4, 6, 6, 8, 3, 1, 1, 4, 10, 0, -128, 127), 0, false, "channel multiplier 2");
    conv_case(&r, conv_p(2, 3, 3, 3, 5, 1, 1, 1, 0, 0, -128, 127), 0, false, "k > H");
    conv_case(&r, conv_p(2, 4, 3, 3, 2, 1, 3, 1, 7, 1, -128, 127), 0, false, "pad > k");
    conv_case(&r, conv_p(1, 1, 1, 1, 1, 1, 0, 1, 0, 0, -128, 127), 0, false, "1x1x1");
    conv_case(&r, conv_p(33, 5, 5, 33, 3, 1, 1, 33, -7, 9, -20, 50), 0, false, "depthwise 33");
    /* depthwise: the AVX2 tap-pair kernel (k <= 7: odd and even tap counts, edges,
     * strides, C not a multiple of 16) and the int32 one beyond it (k = 8, 9) */
    conv_case(&r, conv_p(32, 14, 14, 32, 3, 2, 1, 32, -128, -128, -128, 127), 0, false, "dw block 2");
    conv_case(&r, conv_p(64, 7, 7, 64, 3, 1, 1, 64, -128, 5, 5, 127), 0, false, "dw block 3");
    conv_case(&r, conv_p(20, 11, 13, 20, 2, 1, 0, 20, 3, -4, -128, 127), 0, false, "depthwise k 2");
    conv_case(&r, conv_p(17, 9, 10, 17, 7, 2, 3, 17, 100, -1, -128, 127), 0, false, "depthwise k 7");
    conv_case(&r, conv_p(18, 12, 12, 18, 8, 1, 4, 18, -9, 2, -128, 127), 0, false, "depthwise k 8");
    conv_case(&r, conv_p(5, 10, 9, 5, 9, 3, 4, 5, 0, 0, -128, 127), 0, false, "depthwise k 9");
    conv_case(&r, conv_p(48, 6, 6, 48, 5, 1, 2, 48, -128, -128, -128, 127), 1, false, "depthwise k 5 in max");
    conv_case(&r, conv_p(48, 6, 6, 48, 3, 1, 1, 48, 127, -128, -128, 127), -1, true, "depthwise extreme");
}

static void test_conv2d_random(void **state) {
    (void)state;
    trng r = {2};
    for (int it = 0; it < 400; it++) {
        int G, Cg, OCg;
        switch (it % 4) {
        case 0: G = 1, Cg = (int)rint_in(&r, 1, 40), OCg = (int)rint_in(&r, 1, 70); break;
        case 1: G = (int)rint_in(&r, 2, 5), Cg = (int)rint_in(&r, 1, 9), OCg = (int)rint_in(&r, 1, 20); break;
        case 2: G = (int)rint_in(&r, 1, 70), Cg = 1, OCg = 1; break; /* depthwise */
        default: G = 1, Cg = 2 * (int)rint_in(&r, 0, 4) + 1, OCg = (int)rint_in(&r, 1, 40); break; /* odd C */
        }
        const int k = (int)rint_in(&r, 1, 5), S = (int)rint_in(&r, 1, 3);
        const int P = it % 8 == 7 ? (int)rint_in(&r, 0, k) : (int)rint_in(&r, 0, k / 2);
        int H = (int)rint_in(&r, 1, it % 10 == 0 ? 40 : 12), W = (int)rint_in(&r, 1, it % 10 == 0 ? 40 : 12);
        if (H + 2 * P < k) H = k;
        if (W + 2 * P < k) W = k;
        int lo = (int)rint_in(&r, -128, 127), hi = (int)rint_in(&r, -128, 127);
        if (it % 2) lo = -128, hi = 127;
        if (lo > hi) { int t = lo; lo = hi; hi = t; }
        conv_case(&r, conv_p(G * Cg, H, W, G * OCg, k, S, P, G, (int)rint_in(&r, -128, 127),
                             (int)rint_in(&r, -128, 127), lo, hi), 0, false, "random");
    }
}

/* One input channel, wide output rows: the AVX2 planar kernel (lanes = 8 positions of a
 * row; k <= 7, stride <= 2, OW >= 9), its padding columns and rows (pad up to k), its
 * last chunk that overlaps the one before (OW not a multiple of 8), rows narrower than 16
 * bytes, and the shapes just outside it (OW = 8, k = 8, stride 3), on every path. */
static void test_conv2d_planar(void **state) {
    (void)state;
    trng r = {12};
    for (int it = 0; it < 160; it++) {
        const int k = it % 16 == 15 ? 8 : (int)rint_in(&r, 1, 7), S = it % 16 == 14 ? 3 : (int)rint_in(&r, 1, 2);
        const int P = it % 4 == 3 ? (int)rint_in(&r, 0, k) : (int)rint_in(&r, 0, k / 2);
        /* OW from 8 (one below the kernel's bound) to about 40 */
        const int OW = it % 8 == 0 ? 8 + it % 3 : (int)rint_in(&r, 9, 40);
        int W = (OW - 1) * S + k - 2 * P, H = (int)rint_in(&r, 1, 30);
        if (W < 1) W = 1;
        if (H + 2 * P < k) H = k;
        const int OC = it % 5 == 0 ? (int)rint_in(&r, 33, 70) : (int)rint_in(&r, 1, 32);
        int lo = (int)rint_in(&r, -128, 127), hi = (int)rint_in(&r, -128, 127);
        if (it % 2) lo = -128, hi = 127;
        if (lo > hi) { int t = lo; lo = hi; hi = t; }
        const int mode = it % 7 == 0 ? -1 : it % 7 == 1 ? 1 : 0;
        conv_case(&r, conv_p(1, H, W, OC, k, S, P, 1, (int)rint_in(&r, -128, 127), (int)rint_in(&r, -128, 127), lo, hi),
                  mode, it % 3 == 0, "planar");
    }
}

/* A depthwise conv and the pointwise conv that reads its output, as one call
 * (qrt_conv2d_dw_pw_s8_isa: on AVX2 the depthwise result stays in the kernels' layout),
 * against the two portable kernels: k 1..9 (both depthwise kernels), strides, padding,
 * C and OC not multiples of 16, extreme weights and inputs. */
static void test_conv2d_dw_pw(void **state) {
    (void)state;
    trng r = {13};
    qrt_isa paths[QRT_ISA_COUNT + 1];
    const int np = simd_paths(paths);
    paths[np] = QRT_ISA_PORTABLE;
    for (int it = 0; it < 120; it++) {
        const int C = it % 9 == 0 ? 16 * (int)rint_in(&r, 1, 4) : (int)rint_in(&r, 1, 70);
        const int k = it % 10 == 9 ? (int)rint_in(&r, 8, 9) : (int)rint_in(&r, 1, 7), S = (int)rint_in(&r, 1, 3);
        const int P = (int)rint_in(&r, 0, k / 2);
        int H = (int)rint_in(&r, 1, it % 8 == 0 ? 30 : 12), W = (int)rint_in(&r, 1, it % 8 == 0 ? 30 : 12);
        if (H + 2 * P < k) H = k;
        if (W + 2 * P < k) W = k;
        const bool extreme = it % 5 == 0;
        qrt_conv_params pd = conv_p(C, H, W, C, k, S, P, C, (int)rint_in(&r, -128, 127), (int)rint_in(&r, -128, 127),
                                    -128, 127);
        if (it % 3 == 0) pd.act_min = pd.z_out; /* a fused ReLU */
        pd.OH = (H + 2 * P - k) / S + 1;
        pd.OW = (W + 2 * P - k) / S + 1;
        const int OC = (int)rint_in(&r, 1, 70);
        qrt_conv_params pp = conv_p(C, pd.OH, pd.OW, OC, 1, 1, 0, 1, pd.z_out, (int)rint_in(&r, -128, 127), -128, 127);
        pp.OH = pd.OH, pp.OW = pd.OW;
        assert_true(qrt_conv2d_dw_pw_ok(&pd, &pp));
        const size_t nin = (size_t)C * H * W, nmid = (size_t)C * pd.OH * pd.OW, nout = (size_t)OC * pd.OH * pd.OW;
        int8_t *in = xmalloc(nin), *wd = xmalloc((size_t)C * k * k), *wp = xmalloc((size_t)OC * C), *mid = xmalloc(nmid),
               *want = xmalloc(nout), *got = xmalloc(nout);
        int32_t *bd = xmalloc((size_t)C * 4), *md = xmalloc((size_t)C * 4), *sd = xmalloc((size_t)C * 4);
        int32_t *bp = xmalloc((size_t)OC * 4), *mp = xmalloc((size_t)OC * 4), *sp = xmalloc((size_t)OC * 4);
        if (it % 7 == 1) memset(in, it % 2 ? 127 : -128, nin);
        else fill_s8(&r, in, nin, -128, 127);
        gen_params(&r, C, (size_t)k * k, wd, bd, md, sd, extreme);
        gen_params(&r, OC, (size_t)C, wp, bp, mp, sp, extreme);
        qrt_conv2d_s8(mid, in, wd, bd, md, sd, &pd);
        qrt_conv2d_s8(want, mid, wp, bp, mp, sp, &pp);
        const size_t szd = qrt_conv2d_pack_size(&pd), szp = qrt_conv2d_pack_size(&pp);
        const size_t ssz = qrt_conv2d_dw_pw_scratch_size(&pd, &pp);
        uint8_t *memd = xmalloc(szd + 1), *memp = xmalloc(szp + 3), *scratch = xmalloc(ssz + 5);
        const void *pkd = qrt_conv2d_pack(memd + 1, wd, bd, md, sd, &pd);
        const void *pkp = qrt_conv2d_pack(memp + 3, wp, bp, mp, sp, &pp);
        for (int i = 0; pkd && pkp && i <= np; i++) {
            char what[220];
            memset(got, 0x5a, nout);
            memset(scratch, 0xa5, ssz + 5);
            qrt_conv2d_dw_pw_s8_isa(paths[i], got, in, pkd, &pd, pkp, &pp, scratch + 5);
            snprintf(what, sizeof what, "depthwise+pointwise [%s] C=%d H=%d W=%d k=%d stride=%d pad=%d OC=%d%s",
                     qrt_isa_str(paths[i]), C, H, W, k, S, P, OC, extreme ? " extreme" : "");
            expect_chw(got, want, OC, pd.OH, pd.OW, what);
        }
        free(in), free(wd), free(wp), free(mid), free(want), free(got), free(bd), free(md), free(sd), free(bp),
            free(mp), free(sp), free(memd), free(memp), free(scratch);
    }
}

static void test_conv2d_extremes(void **state) {
    (void)state;
    trng r = {3};
    const int zs[] = {-128, 127, 0};
    for (int it = 0; it < 60; it++) {
        const int z_in = zs[it % 3], z_out = zs[(it / 3) % 3], mode = it % 3 == 0 ? 0 : it % 3 == 1 ? -1 : 1;
        const int G = it % 5 == 0 ? 24 : it % 5 == 1 ? 3 : 1;
        const int C = G == 24 ? 24 : G * (int)rint_in(&r, 1, 7), OC = G == 24 ? 24 : G * (int)rint_in(&r, 1, 20);
        conv_case(&r, conv_p(C, (int)rint_in(&r, 3, 9), (int)rint_in(&r, 3, 9), OC, 3, (int)rint_in(&r, 1, 2), 1,
                             G, z_in, z_out, -128, 127), mode, true, "extreme");
    }
}

/* conv2d + 2x2 stride-2 max pool in one kernel against the two portable kernels. */
static void test_conv2d_maxpool(void **state) {
    (void)state;
    trng r = {9};
    qrt_isa paths[QRT_ISA_COUNT + 1];
    const int np = simd_paths(paths);
    paths[np] = QRT_ISA_PORTABLE;
    for (int it = 0; it < 180; it++) {
        /* 0-2 dense, 3 grouped, 4 depthwise (the fallback), 5 one input channel with wide
         * rows (AVX2's planar kernel at stride 1, k up to 7, pad up to k) */
        const int kind = it % 6;
        const int G = kind == 3 ? (int)rint_in(&r, 2, 4) : kind == 4 ? (int)rint_in(&r, 1, 40) : 1;
        const int Cg = kind >= 4 ? 1 : (int)rint_in(&r, 1, 35), OCg = kind == 4 ? 1 : (int)rint_in(&r, 1, 70);
        qrt_conv_params p = conv_p(G * Cg, (int)rint_in(&r, kind == 5 ? 12 : 2, 30),
                                   (int)rint_in(&r, kind == 5 ? 17 : 2, kind == 5 ? 45 : 30), G * OCg,
                                   (int)rint_in(&r, 1, kind == 5 ? 7 : 3), kind == 5 ? 1 : (int)rint_in(&r, 1, 2), 0, G,
                                   (int)rint_in(&r, -128, 127), (int)rint_in(&r, -128, 127), -128, 127);
        p.pad = (int)rint_in(&r, 0, kind == 5 && it % 4 == 1 ? p.k : p.k / 2);
        if (it % 3 == 0) p.act_min = p.z_out;
        p.OH = (p.H + 2 * p.pad - p.k) / p.stride + 1;
        p.OW = (p.W + 2 * p.pad - p.k) / p.stride + 1;
        if (p.OH < 2 || p.OW < 2) continue;
        const qrt_pool_params pp = {.C = p.OC, .H = p.OH, .W = p.OW, .OH = p.OH / 2, .OW = p.OW / 2, .k = 2,
                                    .stride = 2, .pad = 0, .z_in = p.z_out};
        const size_t K = (size_t)Cg * p.k * p.k, nin = (size_t)p.C * p.H * p.W, nmid = (size_t)p.OC * p.OH * p.OW,
                     nout = (size_t)p.OC * pp.OH * pp.OW;
        int8_t *in = xmalloc(nin), *w = xmalloc((size_t)p.OC * K), *mid = xmalloc(nmid), *want = xmalloc(nout),
               *got = xmalloc(nout);
        int32_t *b = xmalloc((size_t)p.OC * 4), *m = xmalloc((size_t)p.OC * 4), *s = xmalloc((size_t)p.OC * 4);
        fill_s8(&r, in, nin, -128, 127);
        gen_params(&r, p.OC, K, w, b, m, s, it % 7 == 0);
        qrt_conv2d_s8(mid, in, w, b, m, s, &p);
        qrt_maxpool_s8(want, mid, &pp);
        const size_t psz = qrt_conv2d_pack_size(&p), ssz = qrt_conv2d_scratch_size(&p);
        uint8_t *pmem = xmalloc(psz), *scratch = xmalloc(ssz);
        const void *packed = qrt_conv2d_pack(pmem, w, b, m, s, &p);
        for (int i = 0; packed && i <= np; i++) {
            char what[200];
            memset(got, 0x5a, nout);
            qrt_conv2d_maxpool_s8_isa(paths[i], got, in, packed, &p, scratch);
            snprintf(what, sizeof what, "conv2d+maxpool [%s] C=%d H=%d W=%d OC=%d k=%d stride=%d pad=%d groups=%d",
                     qrt_isa_str(paths[i]), p.C, p.H, p.W, p.OC, p.k, p.stride, p.pad, p.groups);
            expect_chw(got, want, p.OC, pp.OH, pp.OW, what);
        }
        free(in), free(w), free(mid), free(want), free(got), free(b), free(m), free(s), free(pmem), free(scratch);
    }
}

/* ---- linear ------------------------------------------------------------------------- */

static void linear_case(trng *r, qrt_linear_params p, int in_mode, bool extreme) {
    qrt_isa paths[QRT_ISA_COUNT];
    const int np = simd_paths(paths);
    int8_t *in = xmalloc((size_t)p.F_in), *w = xmalloc((size_t)p.F_in * p.F_out), *want = xmalloc((size_t)p.F_out),
           *got = xmalloc((size_t)p.F_out);
    int32_t *b = xmalloc((size_t)p.F_out * 4), *m = xmalloc((size_t)p.F_out * 4), *s = xmalloc((size_t)p.F_out * 4);
    if (in_mode == 0) fill_s8(r, in, (size_t)p.F_in, -128, 127);
    else memset(in, in_mode < 0 ? -128 : 127, (size_t)p.F_in);
    gen_params(r, p.F_out, (size_t)p.F_in, w, b, m, s, extreme);
    qrt_linear_s8(want, in, w, b, m, s, &p);
    const size_t psz = qrt_linear_pack_size(&p), ssz = qrt_linear_scratch_size(&p);
    uint8_t *pmem = xmalloc(psz + 5), *scratch = xmalloc(ssz + 1);
    const void *packed = qrt_linear_pack(pmem + 5, w, b, m, s, &p);
    char what[160];
    for (int i = 0; packed && i < np + 1; i++) {
        const qrt_isa isa = i < np ? paths[i] : QRT_ISA_PORTABLE;
        memset(got, 0x5a, (size_t)p.F_out);
        qrt_linear_s8_isa(isa, got, in, packed, &p, scratch + 1);
        snprintf(what, sizeof what, "linear [%s] F_in=%d F_out=%d z_in=%d z_out=%d clamp [%d, %d]%s",
                 qrt_isa_str(isa), p.F_in, p.F_out, p.z_in, p.z_out, p.act_min, p.act_max,
                 extreme ? " extreme" : "");
        expect_vec(got, want, (size_t)p.F_out, what);
    }
    free(in), free(w), free(want), free(got), free(b), free(m), free(s), free(pmem), free(scratch);
}

static void test_linear(void **state) {
    (void)state;
    trng r = {4};
    const qrt_linear_params named[] = {
        {.F_in = 3136, .F_out = 128, .z_in = -128, .z_out = -128, .act_min = -128, .act_max = 127},
        {.F_in = 128, .F_out = 10, .z_in = -128, .z_out = -53, .act_min = -128, .act_max = 127},
        {.F_in = 784, .F_out = 256, .z_in = -55, .z_out = -128, .act_min = -128, .act_max = 127},
        {.F_in = 1, .F_out = 1, .z_in = 0, .z_out = 0, .act_min = -128, .act_max = 127},
    };
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++) linear_case(&r, named[i], 0, false);
    for (int it = 0; it < 300; it++) {
        qrt_linear_params p = {.F_in = (int)rint_in(&r, 1, it % 20 == 0 ? 3200 : 300),
                               .F_out = (int)rint_in(&r, 1, it % 20 == 0 ? 300 : 70),
                               .z_in = (int32_t)rint_in(&r, -128, 127), .z_out = (int32_t)rint_in(&r, -128, 127),
                               .act_min = -128, .act_max = 127};
        if (it % 3 == 0) p.act_min = p.z_out; /* fused ReLU */
        const bool extreme = it % 4 == 1;
        if (extreme) {
            p.z_in = it % 8 == 1 ? -128 : 127;
            p.z_out = it % 16 == 1 ? -128 : 127;
        }
        linear_case(&r, p, extreme ? (it % 3) - 1 : 0, extreme);
    }
}

/* ---- linear over a batch (the AVX2 and AVX-512 GEMMs) ------------------------------- */

/* n samples at strides is/os >= F_in/F_out: every path's qrt_linear_batch_s8_isa equals
 * qrt_linear_s8 on each sample, and no byte between or after the outputs is written.
 * wbits4: weights in [-7, 7] (what 4-bit packed weights unpack to). */
static void linear_batch_case(trng *r, qrt_linear_params p, int n, size_t is, size_t os, bool extreme,
                              bool wbits4) {
    qrt_isa paths[QRT_ISA_COUNT];
    const int np = simd_paths(paths);
    int8_t *in = xmalloc((size_t)n * is), *w = xmalloc((size_t)p.F_in * p.F_out);
    int8_t *want = xmalloc((size_t)n * os), *got = xmalloc((size_t)n * os + 1);
    int32_t *b = xmalloc((size_t)p.F_out * 4), *m = xmalloc((size_t)p.F_out * 4), *s = xmalloc((size_t)p.F_out * 4);
    if (extreme) for (size_t i = 0; i < (size_t)n * is; i++) in[i] = rnext(r) & 1 ? 127 : -128;
    else fill_s8(r, in, (size_t)n * is, -128, 127);
    gen_params(r, p.F_out, (size_t)p.F_in, w, b, m, s, extreme);
    if (wbits4) /* smaller weights keep the overflow bound gen_params chose */
        for (size_t i = 0; i < (size_t)p.F_in * p.F_out; i++) w[i] = (int8_t)(w[i] % 8);
    memset(want, 0x5a, (size_t)n * os);
    for (int t = 0; t < n; t++) qrt_linear_s8(want + (size_t)t * os, in + (size_t)t * is, w, b, m, s, &p);
    const size_t psz = qrt_linear_pack_size(&p), ssz = qrt_linear_batch_scratch_size(&p, n);
    uint8_t *pmem = xmalloc(psz + 3), *scratch = xmalloc(ssz + 1);
    const void *packed = qrt_linear_pack(pmem + 3, w, b, m, s, &p);
    char what[200];
    for (int i = 0; packed && i < np + 1; i++) {
        const qrt_isa isa = i < np ? paths[i] : QRT_ISA_PORTABLE;
        memset(got, 0x5a, (size_t)n * os + 1);
        qrt_linear_batch_s8_isa(isa, got, os, in, is, n, packed, &p, scratch + 1);
        snprintf(what, sizeof what, "linear batch [%s] n=%d F_in=%d F_out=%d strides %zu/%zu z_in=%d z_out=%d clamp [%d, %d]%s%s",
                 qrt_isa_str(isa), n, p.F_in, p.F_out, is, os, p.z_in, p.z_out, p.act_min, p.act_max,
                 extreme ? " extreme" : "", wbits4 ? " 4-bit" : "");
        expect_vec(got, want, (size_t)n * os, what);
        if (got[(size_t)n * os] != 0x5a) fail_msg("%s: wrote past the last output", what);
    }
    free(in), free(w), free(want), free(got), free(b), free(m), free(s), free(pmem), free(scratch);
}

static void test_linear_batch(void **state) {
    (void)state;
    trng r = {41};
    /* the reference models' layers over every batch size 1..13 (tiles of 5 on AVX2, of 6
     * on AVX-512, and each tail), and a batch of 36 (QRT_BATCH_CHUNK) */
    const qrt_linear_params named[] = {
        {.F_in = 784, .F_out = 256, .z_in = -55, .z_out = -128, .act_min = -128, .act_max = 127},
        {.F_in = 3136, .F_out = 128, .z_in = -128, .z_out = -128, .act_min = -128, .act_max = 127},
        {.F_in = 128, .F_out = 10, .z_in = -128, .z_out = -53, .act_min = -128, .act_max = 127},
        {.F_in = 1, .F_out = 1, .z_in = 0, .z_out = 0, .act_min = -128, .act_max = 127},
    };
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++)
        for (int n = 1; n <= 13; n++) linear_batch_case(&r, named[i], n, (size_t)named[i].F_in, (size_t)named[i].F_out, false, false);
    linear_batch_case(&r, named[0], 36, 1040, 272, false, false);
    for (int it = 0; it < 300; it++) {
        qrt_linear_params p = {.F_in = (int)rint_in(&r, 1, it % 25 == 0 ? 2000 : 150),
                               .F_out = (int)rint_in(&r, 1, it % 25 == 0 ? 200 : 50),
                               .z_in = (int32_t)rint_in(&r, -128, 127), .z_out = (int32_t)rint_in(&r, -128, 127),
                               .act_min = -128, .act_max = 127};
        if (it % 3 == 0) p.act_min = p.z_out; /* fused ReLU */
        if (it % 7 == 0) p.act_max = (int32_t)rint_in(&r, p.act_min, 127); /* ReLU6 / PACT */
        const bool extreme = it % 4 == 1;
        if (extreme) {
            p.z_in = it % 8 == 1 ? -128 : 127;
            p.z_out = it % 16 == 1 ? -128 : 127;
        }
        const int n = (int)rint_in(&r, 1, it % 10 == 0 ? 40 : 14);
        const size_t is = (size_t)p.F_in + (it % 2 ? (size_t)rint_in(&r, 0, 70) : 0);
        const size_t os = (size_t)p.F_out + (it % 5 ? (size_t)rint_in(&r, 0, 40) : 0);
        linear_batch_case(&r, p, n, is, os, extreme, it % 6 == 2);
    }
}

/* ---- pools, add, input -------------------------------------------------------------- */

static void test_maxpool(void **state) {
    (void)state;
    trng r = {5};
    qrt_isa paths[QRT_ISA_COUNT];
    const int np = simd_paths(paths);
    for (int it = 0; it < 200; it++) {
        qrt_pool_params p = {.C = (int)rint_in(&r, 1, 20), .H = (int)rint_in(&r, 2, 70), .W = (int)rint_in(&r, 2, 140),
                             .k = 2, .stride = 2, .pad = 0};
        if (it % 4 == 3) { /* another window: the fallback */
            p.k = (int)rint_in(&r, 1, 3), p.stride = (int)rint_in(&r, 1, 3), p.pad = (int)rint_in(&r, 0, p.k / 2);
            if (p.H < p.k) p.H = p.k;
            if (p.W < p.k) p.W = p.k;
        }
        p.OH = (p.H + 2 * p.pad - p.k) / p.stride + 1;
        p.OW = (p.W + 2 * p.pad - p.k) / p.stride + 1;
        const size_t nin = (size_t)p.C * p.H * p.W, nout = (size_t)p.C * p.OH * p.OW;
        int8_t *in = xmalloc(nin), *want = xmalloc(nout), *got = xmalloc(nout);
        fill_s8(&r, in, nin, -128, 127);
        qrt_maxpool_s8(want, in, &p);
        for (int i = 0; i < np; i++) {
            char what[128];
            memset(got, 0x5a, nout);
            qrt_maxpool_s8_isa(paths[i], got, in, &p);
            snprintf(what, sizeof what, "maxpool [%s] C=%d H=%d W=%d k=%d stride=%d pad=%d", qrt_isa_str(paths[i]),
                     p.C, p.H, p.W, p.k, p.stride, p.pad);
            expect_chw(got, want, p.C, p.OH, p.OW, what);
        }
        free(in), free(want), free(got);
    }
}

/* ---- average pools: the spec's centred formula on every path -------------------------- */

/* Every path: the portable one first, then the SIMD paths this CPU has (a note names the
 * others). */
static int all_paths(qrt_isa *out) {
    out[0] = QRT_ISA_PORTABLE;
    return 1 + simd_paths(out + 1);
}

/* int8-spec.md, "Other ops", as written: d = sum over the window of (q - z), padded
 * positions holding z and counting in n; q_out = z + sign(d) * floor((2|d| + n) / (2n)). */
static int8_t spec_mean(int64_t d, int64_t n, int z) {
    const int64_t a = d < 0 ? -d : d, f = (2 * a + n) / (2 * n); /* operands >= 0: the floor */
    return (int8_t)(z + (d > 0 ? f : d < 0 ? -f : 0));
}

static void spec_global_avgpool(int8_t *out, const int8_t *in, int C, int HW, int z) {
    for (int c = 0; c < C; c++) {
        int64_t d = 0;
        for (int i = 0; i < HW; i++) d += in[(size_t)c * HW + i] - z;
        out[c] = spec_mean(d, HW, z);
    }
}

static void spec_avgpool(int8_t *out, const int8_t *in, const qrt_pool_params *p) {
    for (int c = 0; c < p->C; c++)
        for (int oy = 0; oy < p->OH; oy++)
            for (int ox = 0; ox < p->OW; ox++) {
                int64_t d = 0;
                for (int i = 0; i < p->k; i++)
                    for (int j = 0; j < p->k; j++) {
                        const int iy = oy * p->stride - p->pad + i, ix = ox * p->stride - p->pad + j;
                        if (iy >= 0 && iy < p->H && ix >= 0 && ix < p->W)
                            d += in[((size_t)c * p->H + iy) * p->W + ix] - p->z_in;
                        /* else: padding holds z_in, adds 0, counts in n */
                    }
                out[((size_t)c * p->OH + oy) * p->OW + ox] = spec_mean(d, (int64_t)p->k * p->k, p->z_in);
            }
}

/* One channel (HW values) made an exact tie: half the values v, half v + 1, so that
 * d / HW = v - z + 1/2 for any z (HW even), in a random order. */
static void make_tie(trng *r, int8_t *x, int HW) {
    const int v = (int)rint_in(r, -128, 126);
    for (int i = 0; i < HW; i++) x[i] = (int8_t)(i < HW / 2 ? v : v + 1);
    for (int i = HW - 1; i > 0; i--) { /* Fisher-Yates */
        const int j = (int)rint_in(r, 0, i);
        const int8_t t = x[i];
        x[i] = x[j], x[j] = t;
    }
}

static void test_global_avgpool(void **state) {
    (void)state;
    trng r = {9};
    qrt_isa paths[QRT_ISA_COUNT];
    const int np = all_paths(paths);
    int ties = 0, straddle = 0;
    for (int it = 0; it < 600; it++) {
        const int C = (int)rint_in(&r, 1, 40), z = it % 5 == 0 ? (it % 10 ? -128 : 127) : (int)rint_in(&r, -128, 127);
        int HW = it < 10 ? 1 + it : (int)rint_in(&r, 1, 4000);
        const int kind = it % 4; /* uniform values, all at one end (the largest |d|), or ties */
        if (kind == 3 && HW % 2) HW++;
        int8_t *in = xmalloc((size_t)C * HW), want[40], got[40];
        if (kind == 3) {
            for (int c = 0; c < C; c++) make_tie(&r, in + (size_t)c * HW, HW);
        } else {
            const int lo = kind == 2 ? 127 : -128, hi = kind == 1 ? -128 : 127;
            fill_s8(&r, in, (size_t)C * HW, lo, hi);
        }
        spec_global_avgpool(want, in, C, HW, z);
        for (int c = 0; kind == 3 && c < C; c++) {
            int64_t sq = 0;
            for (int i = 0; i < HW; i++) sq += in[(size_t)c * HW + i];
            ties++;
            /* round(sum q / n), half away from zero: what the runtime computed before */
            const int64_t a = sq < 0 ? -sq : sq, old = (sq < 0 ? -1 : 1) * ((2 * a + HW) / (2 * HW));
            straddle += old != want[c];
        }
        for (int i = 0; i < np; i++) {
            char what[96];
            memset(got, 0x5a, sizeof got);
            qrt_global_avgpool_s8_isa(paths[i], got, in, C, HW, z);
            snprintf(what, sizeof what, "global_avgpool [%s] C=%d HW=%d z=%d", qrt_isa_str(paths[i]), C, HW, z);
            expect_chw(got, want, C, 1, 1, what);
        }
        free(in);
    }
    if (straddle < ties / 10) fail_msg("weak test: only %d of %d ties straddle zero", straddle, ties);
}

/* Hand-picked ties on every path: both average pools, halves on either side of zero. */
static void test_avgpool_ties(void **state) {
    (void)state;
    qrt_isa paths[QRT_ISA_COUNT];
    const int np = all_paths(paths);
    /* Global: {values, their count, z, expected}. */
    static const struct { int v0, n0, v1, n1, z, want; const char *what; } g[] = {
        {-107, 98, -108, 98, -128, -107, "the issue's case: sum q = -21070 over 196, z = -128"},
        {-1, 98, 0, 98, -128, 0, "sum q = -98 over 196 (-0.5), z = -128: d / n = +127.5"},
        {0, 2, 1, 2, 127, 0, "sum q = 2 over 4 (+0.5), z = 127: d / n = -126.5"},
        {-2, 1, -3, 1, -3, -2, "z = -3: sum q = -5 over 2 (-2.5), d / n = +0.5"},
        {2, 1, 3, 1, 3, 2, "z = 3: sum q = 5 over 2 (+2.5), d / n = -0.5"},
        {5, 3, 6, 3, 0, 6, "z = 0: 5.5 (ties away from zero, as the spec says)"},
        {-5, 3, -6, 3, 0, -6, "z = 0: -5.5"},
        {127, 4000, 127, 0, -128, 127, "d = 255 n, the largest"},
        {-128, 4000, -128, 0, 127, -128, "d = -255 n"},
    };
    for (size_t k = 0; k < sizeof g / sizeof g[0]; k++) {
        const int HW = g[k].n0 + g[k].n1;
        int8_t *x = xmalloc((size_t)HW), got;
        for (int i = 0; i < HW; i++) x[i] = (int8_t)(i < g[k].n0 ? g[k].v0 : g[k].v1);
        int64_t d = 0;
        for (int i = 0; i < HW; i++) d += x[i] - g[k].z;
        if (spec_mean(d, HW, g[k].z) != g[k].want) fail_msg("test bug: case %zu (%s)", k, g[k].what);
        for (int i = 0; i < np; i++) {
            qrt_global_avgpool_s8_isa(paths[i], &got, x, 1, HW, g[k].z);
            if (got != g[k].want)
                fail_msg("global_avgpool [%s], %s: got %d, expected %d", qrt_isa_str(paths[i]), g[k].what, got, g[k].want);
        }
        free(x);
    }
    /* Windowed: 2x2 windows, stride 2, of one (2, 2, 4) input; and 3x3 pad 1 windows
     * whose padding (z) counts in n. */
    const int8_t in[16] = {-2, -2, 2, 2,  -3, -3, 3, 3,    /* channel 0: windows {-2,-2,-3,-3}, {2,2,3,3} */
                           0, 1, -1, 0,   0, 1, -1, 0};    /* channel 1: {0,1,0,1}, {-1,0,-1,0} */
    static const struct { int z; int8_t want[4]; } w[] = {
        {-3, {-2, 3, 1, 0}},  /* d/n: +0.5, +5.5, +3.5, +2.5 (sum q / n: -2.5, 2.5, 0.5, -0.5) */
        {3, {-3, 2, 0, -1}},  /* -5.5, -0.5, -2.5, -3.5 */
        {0, {-3, 3, 1, -1}},  /* -2.5, 2.5, 0.5, -0.5 */
    };
    for (size_t k = 0; k < sizeof w / sizeof w[0]; k++) {
        const qrt_pool_params p = {.C = 2, .H = 2, .W = 4, .OH = 1, .OW = 2, .k = 2, .stride = 2, .pad = 0, .z_in = w[k].z};
        int8_t want[4], got[4];
        spec_avgpool(want, in, &p);
        if (memcmp(want, w[k].want, 4)) fail_msg("test bug: windowed case z=%d", w[k].z);
        for (int i = 0; i < np; i++) {
            char what[64];
            memset(got, 0x5a, sizeof got);
            qrt_avgpool_s8_isa(paths[i], got, in, &p);
            snprintf(what, sizeof what, "avgpool ties [%s] z=%d", qrt_isa_str(paths[i]), w[k].z);
            expect_vec(got, w[k].want, 4, what);
        }
    }
    /* Random windows (padding included) against the formula, every path. */
    trng r = {31};
    for (int it = 0; it < 300; it++) {
        qrt_pool_params p = {.C = (int)rint_in(&r, 1, 4), .k = (int)rint_in(&r, 1, 4), .stride = (int)rint_in(&r, 1, 3),
                             .z_in = (int32_t)rint_in(&r, -128, 127)};
        p.pad = (int)rint_in(&r, 0, p.k / 2);
        p.H = (int)rint_in(&r, p.k, 12), p.W = (int)rint_in(&r, p.k, 12);
        p.OH = (p.H + 2 * p.pad - p.k) / p.stride + 1, p.OW = (p.W + 2 * p.pad - p.k) / p.stride + 1;
        const size_t nin = (size_t)p.C * p.H * p.W, nout = (size_t)p.C * p.OH * p.OW;
        int8_t *x = xmalloc(nin), *want = xmalloc(nout), *got = xmalloc(nout);
        if (it % 2) fill_s8(&r, x, nin, -128, 127);
        else fill_s8(&r, x, nin, p.z_in - 1 < -128 ? -128 : p.z_in - 1, p.z_in + 1 > 127 ? 127 : p.z_in + 1); /* many ties */
        spec_avgpool(want, x, &p);
        for (int i = 0; i < np; i++) {
            char what[128];
            memset(got, 0x5a, nout);
            qrt_avgpool_s8_isa(paths[i], got, x, &p);
            snprintf(what, sizeof what, "avgpool [%s] C=%d H=%d W=%d k=%d stride=%d pad=%d z=%d", qrt_isa_str(paths[i]),
                     p.C, p.H, p.W, p.k, p.stride, p.pad, p.z_in);
            expect_chw(got, want, p.C, p.OH, p.OW, what);
        }
        free(x), free(want), free(got);
    }
}

static void test_add_input(void **state) {
    (void)state;
    trng r = {6};
    qrt_isa paths[QRT_ISA_COUNT];
    const int np = simd_paths(paths);
    for (int it = 0; it < 300; it++) {
        qrt_add_params p;
        /* shifts within the loader's add bounds (runtime/graph.c op_add) */
        for (;;) {
            p.shift_a = (int32_t)rint_in(&r, -31, 2), p.shift_b = (int32_t)rint_in(&r, -31, 2);
            p.shift_out = (int32_t)rint_in(&r, -31, 2);
            const int la = p.shift_a > 0 ? p.shift_a : 0, lb = p.shift_b > 0 ? p.shift_b : 0;
            const int lo = p.shift_out > 0 ? p.shift_out : 0;
            const uint64_t x = (uint64_t)255 << QRT_ADD_LEFT_SHIFT, A = x << la, B = x << lb;
            if (A <= INT32_MAX && B <= INT32_MAX && A + B <= INT32_MAX && ((A + B) << lo) <= INT32_MAX) break;
        }
        if (it % 2) p.shift_out = -(int32_t)rint_in(&r, 18, 22); /* a realistic output scale */
        p.mult_a = it % 5 == 0 ? 1 << 30 : it % 5 == 1 ? INT32_MAX : (int32_t)rint_in(&r, 1 << 30, INT32_MAX);
        p.mult_b = (int32_t)rint_in(&r, 1 << 30, INT32_MAX);
        p.mult_out = it % 7 == 0 ? 0 : (int32_t)rint_in(&r, 1 << 30, INT32_MAX);
        p.z_a = (int32_t)rint_in(&r, -128, 127), p.z_b = (int32_t)rint_in(&r, -128, 127);
        p.z_out = (int32_t)rint_in(&r, -128, 127);
        p.act_min = -128, p.act_max = 127;
        if (it % 3 == 0) p.act_min = p.z_out;
        const size_t n = (size_t)rint_in(&r, 1, 1000);
        int8_t *a = xmalloc(n), *b = xmalloc(n), *want = xmalloc(n), *got = xmalloc(n);
        fill_s8(&r, a, n, -128, 127);
        fill_s8(&r, b, n, -128, 127);
        qrt_add_s8(want, a, b, n, &p);
        for (int i = 0; i < np; i++) {
            char what[160];
            qrt_add_s8_isa(paths[i], got, a, b, n, &p);
            snprintf(what, sizeof what, "add [%s] n=%zu shifts %d/%d/%d", qrt_isa_str(paths[i]), n, p.shift_a,
                     p.shift_b, p.shift_out);
            expect_vec(got, want, n, what);
            qrt_add_s8_isa(paths[i], got, a, a, n, &p); /* a == b */
            qrt_add_s8(want, a, a, n, &p);
            expect_vec(got, want, n, what);
            qrt_add_s8(want, a, b, n, &p);
        }
        /* the input conversion */
        qrt_input_u8(want, (const uint8_t *)a, n);
        for (int i = 0; i < np; i++) {
            qrt_input_u8_isa(paths[i], got, (const uint8_t *)a, n);
            expect_vec(got, want, n, qrt_isa_str(paths[i]));
        }
        free(a), free(b), free(want), free(got);
    }
}

/* ---- whole models ------------------------------------------------------------------- */

typedef struct mfile {
    char header[16384];
    char graph[8192];
    uint8_t data[1 << 20];
    size_t data_len;
    char tensors[8192]; /* the header's tensor entries */
} mfile;

static void add_tensor(mfile *f, const char *name, const char *dtype, const char *shape, const void *p, size_t n) {
    size_t used = strlen(f->tensors);
    snprintf(f->tensors + used, sizeof f->tensors - used, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%s],\"data_offsets\":[%zu,%zu]}",
             name, dtype, shape, f->data_len, f->data_len + n);
    if (f->data_len + n > sizeof f->data) fail_msg("test bug: model data too large");
    memcpy(f->data + f->data_len, p, n);
    f->data_len += n;
}

static void gline(mfile *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void gline(mfile *f, const char *fmt, ...) {
    size_t used = strlen(f->graph);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->graph + used, sizeof f->graph - used, fmt, ap);
    va_end(ap);
}

/* A conv2d (C, H, W) -> (OC, ...) or, with k == 0, a linear F_in -> OC: random weights
 * and per-channel integers, the graph line. Returns the output zero point. */
static int layer(mfile *f, trng *r, const char *name, int in, int out, int C, int H, int W, int OC, int k, int S,
                 int P, int G, int z_in, bool relu) {
    const size_t K = k ? (size_t)(C / G) * k * k : (size_t)C * H * W;
    int8_t *w = xmalloc((size_t)OC * K);
    int32_t *b = xmalloc((size_t)OC * 4), *m = xmalloc((size_t)OC * 4), *s = xmalloc((size_t)OC * 4);
    gen_params(r, OC, K, w, b, m, s, false);
    for (int c = 0; c < OC; c++) s[c] = -(int)rint_in(r, 8, 11) - (K > 100) - (K > 1000); /* keep outputs inside */
    char n[64], shape[64];
    const int z_out = (int)rint_in(r, -128, 0);
    if (k) snprintf(shape, sizeof shape, "%d,%d,%d,%d", OC, C / G, k, k);
    else snprintf(shape, sizeof shape, "%d,%zu", OC, K);
    snprintf(n, sizeof n, "%s.weight", name), add_tensor(f, n, "I8", shape, w, (size_t)OC * K);
    snprintf(shape, sizeof shape, "%d", OC);
    snprintf(n, sizeof n, "%s.bias", name), add_tensor(f, n, "I32", shape, b, (size_t)OC * 4);
    snprintf(n, sizeof n, "%s.mult", name), add_tensor(f, n, "I32", shape, m, (size_t)OC * 4);
    snprintf(n, sizeof n, "%s.shift", name), add_tensor(f, n, "I32", shape, s, (size_t)OC * 4);
    if (k)
        gline(f, "conv2d in=%d out=%d shape=%d,%d,%d k=%d stride=%d pad=%d groups=%d weight=%s.weight "
              "bias=%s.bias mult=%s.mult shift=%s.shift wbits=8 z_in=%d z_out=%d act_min=%d act_max=127\n",
              in, out, OC, (H + 2 * P - k) / S + 1, (W + 2 * P - k) / S + 1, k, S, P, G, name, name, name, name,
              z_in, z_out, relu ? z_out : -128);
    else
        gline(f, "linear in=%d out=%d shape=%d weight=%s.weight bias=%s.bias mult=%s.mult shift=%s.shift "
              "wbits=8 z_in=%d z_out=%d act_min=%d act_max=127\n",
              in, out, OC, name, name, name, name, z_in, z_out, relu ? z_out : -128);
    free(w), free(b), free(m), free(s);
    return z_out;
}

static uint8_t *mfile_bytes(mfile *f, size_t *len) {
    size_t used = (size_t)snprintf(f->header, sizeof f->header,
                                   "{\"__metadata__\":{\"format\":\"qat-int8\",\"format_version\":\"1\",\"graph\":\"");
    for (const char *p = f->graph; *p; p++) {
        if (*p == '\n') f->header[used++] = '\\', f->header[used++] = 'n';
        else f->header[used++] = *p;
    }
    used += (size_t)snprintf(f->header + used, sizeof f->header - used, "\"}%s}", f->tensors);
    const size_t N = (used + 7) / 8 * 8;
    uint8_t *b = xmalloc(8 + N + f->data_len);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)N >> (8 * i));
    memcpy(b + 8, f->header, used);
    memset(b + 8 + used, ' ', N - used);
    memcpy(b + 8 + N, f->data, f->data_len);
    *len = 8 + N + f->data_len;
    return b;
}

/* Model 0: the reference CNN's shapes (conv, maxpool, conv, maxpool, flatten, linear x2).
 * Model 1: a DW-CNN with a residual add, avgpool, a grouped conv, global avgpool.
 * Model 2: separable blocks in a chain (below). */
static uint8_t *build_model(int which, uint64_t seed, size_t *len) {
    mfile *f = xmalloc(sizeof *f);
    memset(f, 0, sizeof *f);
    trng r = {seed};
    int z;
    if (which == 0) {
        gline(f, "input out=0 shape=1,28,28 z=-55\n");
        z = layer(f, &r, "c1", 0, 1, 1, 28, 28, 32, 3, 1, 1, 1, -55, true);
        gline(f, "maxpool in=1 out=2 shape=32,14,14 k=2 stride=2 pad=0\n");
        z = layer(f, &r, "c2", 2, 3, 32, 14, 14, 64, 3, 1, 1, 1, z, true);
        gline(f, "maxpool in=3 out=4 shape=64,7,7 k=2 stride=2 pad=0\n");
        gline(f, "flatten in=4 out=5 shape=3136\n");
        z = layer(f, &r, "fc1", 5, 6, 3136, 1, 1, 128, 0, 1, 0, 1, z, true);
        layer(f, &r, "fc2", 6, 7, 128, 1, 1, 10, 0, 1, 0, 1, z, false);
        gline(f, "output in=7\n");
    } else if (which == 2) {
        /* Model 2: a chain of separable blocks (AVX2 fuses each depthwise with its
         * pointwise and passes a block's output to the next as HWC rows): odd channel
         * counts, stride 2, a 5x5 and an 8x8 depthwise (the int32 kernel), and a last
         * block whose input is also read by an add (not passed as HWC). */
        gline(f, "input out=0 shape=3,18,18 z=5\n");
        z = layer(f, &r, "stem", 0, 1, 3, 18, 18, 8, 3, 1, 1, 1, 5, true);
        z = layer(f, &r, "dw1", 1, 2, 8, 18, 18, 8, 3, 1, 1, 8, z, true);
        z = layer(f, &r, "pw1", 2, 3, 8, 18, 18, 20, 1, 1, 0, 1, z, false);
        z = layer(f, &r, "dw2", 3, 4, 20, 18, 18, 20, 5, 2, 2, 20, z, true);
        z = layer(f, &r, "pw2", 4, 5, 20, 9, 9, 33, 1, 1, 0, 1, z, false);
        z = layer(f, &r, "dw3", 5, 6, 33, 9, 9, 33, 8, 1, 4, 33, z, true);
        const int z3 = layer(f, &r, "pw3", 6, 7, 33, 10, 10, 40, 1, 1, 0, 1, z, false);
        z = layer(f, &r, "dw4", 7, 8, 40, 10, 10, 40, 3, 1, 1, 40, z3, true);
        const int z4 = layer(f, &r, "pw4", 8, 9, 40, 10, 10, 40, 1, 1, 0, 1, z, false);
        gline(f, "add in=7,9 out=10 shape=40,10,10 z_a=%d z_b=%d z_out=-3 mult_a=1073741824 shift_a=0 "
              "mult_b=1518500250 shift_b=-1 mult_out=1800000000 shift_out=-18 act_min=-128 act_max=127\n", z3, z4);
        gline(f, "global_avgpool in=10 out=11 shape=40,1,1\n");
        gline(f, "flatten in=11 out=12 shape=40\n");
        layer(f, &r, "fc", 12, 13, 40, 1, 1, 10, 0, 1, 0, 1, -3, false);
        gline(f, "output in=13\n");
    } else {
        gline(f, "input out=0 shape=3,20,20 z=10\n");
        const int z1 = layer(f, &r, "stem", 0, 1, 3, 20, 20, 16, 3, 1, 1, 1, 10, true);
        const int z2 = layer(f, &r, "dw", 1, 2, 16, 20, 20, 16, 3, 1, 1, 16, z1, true);
        gline(f, "add in=1,2 out=3 shape=16,20,20 z_a=%d z_b=%d z_out=-3 mult_a=1073741824 shift_a=0 "
              "mult_b=1518500250 shift_b=-1 mult_out=1800000000 shift_out=-20 act_min=-128 act_max=127\n", z1, z2);
        gline(f, "avgpool in=3 out=4 shape=16,10,10 k=3 stride=2 pad=1\n");
        z = layer(f, &r, "g", 4, 5, 16, 10, 10, 24, 3, 1, 1, 4, -3, true);
        z = layer(f, &r, "dw2", 5, 6, 24, 10, 10, 24, 3, 2, 1, 24, z, true);
        const int zpw = layer(f, &r, "pw", 6, 7, 24, 5, 5, 40, 1, 1, 0, 1, z, true);
        gline(f, "maxpool in=7 out=8 shape=40,3,3 k=3 stride=2 pad=1\n");
        gline(f, "global_avgpool in=7 out=9 shape=40,1,1\n");
        gline(f, "flatten in=9 out=10 shape=40\n");
        z = layer(f, &r, "fc", 10, 11, 40, 1, 1, 10, 0, 1, 0, 1, zpw, false);
        gline(f, "flatten in=8 out=12 shape=360\n");
        layer(f, &r, "fc2", 12, 13, 360, 1, 1, 10, 0, 1, 0, 1, zpw, false);
        (void)z;
        gline(f, "output in=13\n");
        (void)z2;
    }
    uint8_t *b = mfile_bytes(f, len);
    free(f);
    return b;
}

static void test_models(void **state) {
    (void)state;
    qrt_isa paths[QRT_ISA_COUNT];
    const int np = simd_paths(paths);
    for (int which = 0; which < 3; which++) {
        size_t len;
        uint8_t *file = build_model(which, 100 + (uint64_t)which, &len);
        const size_t need = qrt_model_mem_size(file, len);
        uint8_t *mem = xmalloc(need + 1);
        qrt_model m;
        qrt_error err;
        if (qrt_model_load(&m, file, len, mem + 1, need, &err) != QRT_STATUS_OK)
            fail_msg("model %d: load failed: %s", which, err.msg);
        for (int i = 0; np && i < qrt_model_n_ops(&m); i++) {
            const qrt_op *op = qrt_model_op(&m, i);
            if ((op->kind == QRT_OP_CONV2D || op->kind == QRT_OP_LINEAR) && !qrt_model_op_packed(&m, i))
                fail_msg("model %d: op %d (line %d, %s) was not packed", which, i, op->line, qrt_op_kind_str(op->kind));
        }
        const size_t alen = qrt_arena_size(&m);
        uint8_t *arena = xmalloc(alen + 7);
        const int in_n = qrt_model_input(&m)->numel, n_out = qrt_model_n_outputs(&m);
        uint8_t *px = xmalloc((size_t)in_n);
        trng r = {7 + (uint64_t)which};
        int differ = 0;
        int8_t first[16];
        for (int it = 0; it < 20; it++) {
            for (int i = 0; i < in_n; i++) px[i] = it == 0 ? 0 : it == 1 ? 255 : (uint8_t)rint_in(&r, 0, 255);
            int8_t want[16], got[16];
            int warg, garg;
            memset(arena, 0x33, alen + 7);
            if (qrt_run_isa(&m, QRT_ISA_PORTABLE, px, arena, want, &warg) != QRT_STATUS_OK) fail_msg("run failed");
            if (it == 2) memcpy(first, want, (size_t)n_out);
            if (it > 2) differ += memcmp(first, want, (size_t)n_out) != 0;
            for (int i = 0; i < np; i++) {
                char what[96];
                memset(arena, it & 1 ? 0x80 : 0x7f, alen + 7); /* stale arena must not matter */
                if (qrt_run_isa(&m, paths[i], px, arena + 7, got, &garg) != QRT_STATUS_OK) fail_msg("run failed");
                snprintf(what, sizeof what, "model %d image %d [%s] logits", which, it, qrt_isa_str(paths[i]));
                expect_vec(got, want, (size_t)n_out, what);
                if (garg != warg) fail_msg("%s: argmax %d, expected %d", what, garg, warg);
            }
            if (qrt_run(&m, px, arena + 3, got, NULL) != QRT_STATUS_OK) fail_msg("qrt_run failed");
            expect_vec(got, want, (size_t)n_out, "qrt_run (default path)");
        }
        if (differ < 12) fail_msg("model %d: degenerate, only %d of 17 images change the logits", which, differ);
        free(px), free(arena), free(mem), free(file);
    }
}

/* qrt_run_batch_isa on every path (the portable one too) and qrt_run_batch: each
 * image's logits and argmax equal qrt_run_isa's on the portable path, for batch sizes
 * around the GEMM's tile of 5 and an arena at an odd address, exactly
 * qrt_arena_size_batch bytes; logits and argmax may be NULL. */
static void test_models_batch(void **state) {
    (void)state;
    qrt_isa paths[QRT_ISA_COUNT];
    const int np = all_paths(paths);
    for (int which = 0; which < 3; which++) {
        size_t len;
        uint8_t *file = build_model(which, 300 + (uint64_t)which, &len);
        const size_t need = qrt_model_mem_size(file, len);
        uint8_t *mem = xmalloc(need);
        qrt_model m;
        qrt_error err;
        if (qrt_model_load(&m, file, len, mem, need, &err) != QRT_STATUS_OK)
            fail_msg("model %d: load failed: %s", which, err.msg);
        enum { NMAX = 31 };
        const int in_n = qrt_model_input(&m)->numel, K = qrt_model_n_outputs(&m);
        uint8_t *px = xmalloc((size_t)NMAX * in_n), *arena1 = xmalloc(qrt_arena_size(&m));
        int8_t *want = xmalloc((size_t)NMAX * K), *got = xmalloc((size_t)NMAX * K);
        int warg[NMAX], garg[NMAX];
        trng r = {17 + (uint64_t)which};
        for (size_t i = 0; i < (size_t)NMAX * in_n; i++) px[i] = (uint8_t)rint_in(&r, 0, 255);
        for (int t = 0; t < NMAX; t++)
            if (qrt_run_isa(&m, QRT_ISA_PORTABLE, px + (size_t)t * in_n, arena1, want + (size_t)t * K, &warg[t]))
                fail_msg("run failed");
        const int sizes[] = {1, 2, 5, 6, 7, 12, 13, NMAX};
        for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
            const int n = sizes[si];
            const size_t alen = qrt_arena_size_batch(&m, n);
            if (alen < (size_t)n * qrt_arena_size_portable(&m)) fail_msg("n=%d: batch arena too small", n);
            uint8_t *arena = xmalloc(alen + 1);
            for (int i = 0; i <= np; i++) {
                const qrt_isa isa = i < np ? paths[i] : m.isa;
                char what[96];
                memset(arena, i & 1 ? 0x80 : 0x7f, alen + 1);
                memset(got, 0x11, (size_t)n * K);
                for (int t = 0; t < n; t++) garg[t] = -1;
                const qrt_status st = i < np ? qrt_run_batch_isa(&m, isa, px, n, arena + 1, got, garg)
                                             : qrt_run_batch(&m, px, n, arena + 1, got, garg);
                if (st != QRT_STATUS_OK) fail_msg("batch run failed");
                snprintf(what, sizeof what, "model %d batch n=%d [%s]%s", which, n, qrt_isa_str(isa),
                         i < np ? "" : " (qrt_run_batch)");
                expect_vec(got, want, (size_t)n * K, what);
                for (int t = 0; t < n; t++)
                    if (garg[t] != warg[t]) fail_msg("%s: image %d argmax %d, expected %d", what, t, garg[t], warg[t]);
                if (qrt_run_batch_isa(&m, isa, px, n, arena + 1, NULL, garg) || qrt_run_batch_isa(&m, isa, px, n, arena + 1, got, NULL))
                    fail_msg("%s: NULL logits or argmax refused", what);
                expect_vec(got, want, (size_t)n * K, what);
            }
            free(arena);
        }
        if (qrt_run_batch(NULL, px, 1, arena1, got, garg) != QRT_STATUS_INVALID_ARG ||
            qrt_run_batch(&m, NULL, 1, arena1, got, garg) != QRT_STATUS_INVALID_ARG ||
            qrt_run_batch(&m, px, 1, NULL, got, garg) != QRT_STATUS_INVALID_ARG ||
            qrt_run_batch(&m, px, 0, arena1, got, garg) != QRT_STATUS_OK)
            fail_msg("qrt_run_batch: bad arguments not refused");
        free(px), free(arena1), free(want), free(got), free(mem), free(file);
    }
}

/* Both average pools in whole models, through qrt_run_isa on every path: the issue's
 * tie (model 0, channel 0), other ties across zero, and random images near and far from
 * the zero point, against the formula applied to q = p - 128. */
static uint8_t *pool_model(int which, int z, size_t *len) {
    mfile *f = xmalloc(sizeof *f);
    memset(f, 0, sizeof *f);
    if (which == 0) {
        gline(f, "input out=0 shape=3,14,14 z=%d\n", z);
        gline(f, "global_avgpool in=0 out=1 shape=3\n");
        gline(f, "output in=1\n");
    } else if (which == 1) { /* avgpool with padding, then 2x2 stride 2 */
        gline(f, "input out=0 shape=2,4,6 z=%d\n", z);
        gline(f, "avgpool in=0 out=1 shape=2,4,6 k=3 stride=1 pad=1\n");
        gline(f, "avgpool in=1 out=2 shape=2,2,3 k=2 stride=2 pad=0\n");
        gline(f, "flatten in=2 out=3 shape=12\n");
        gline(f, "output in=3\n");
    } else { /* avgpool then global_avgpool (declared C,1,1) */
        gline(f, "input out=0 shape=3,5,5 z=%d\n", z);
        gline(f, "avgpool in=0 out=1 shape=3,5,5 k=3 stride=1 pad=1\n");
        gline(f, "global_avgpool in=1 out=2 shape=3,1,1\n");
        gline(f, "flatten in=2 out=3 shape=3\n");
        gline(f, "output in=3\n");
    }
    uint8_t *b = mfile_bytes(f, len);
    free(f);
    return b;
}

static void pool_model_ref(int which, int z, const uint8_t *px, int8_t *out) {
    int8_t q[3 * 14 * 14], a[3 * 5 * 5];
    const int n = which == 0 ? 3 * 14 * 14 : which == 1 ? 2 * 4 * 6 : 3 * 5 * 5;
    for (int i = 0; i < n; i++) q[i] = (int8_t)(px[i] - 128);
    if (which == 0) {
        spec_global_avgpool(out, q, 3, 196, z);
    } else if (which == 1) {
        const qrt_pool_params p1 = {.C = 2, .H = 4, .W = 6, .OH = 4, .OW = 6, .k = 3, .stride = 1, .pad = 1, .z_in = z};
        const qrt_pool_params p2 = {.C = 2, .H = 4, .W = 6, .OH = 2, .OW = 3, .k = 2, .stride = 2, .pad = 0, .z_in = z};
        spec_avgpool(a, q, &p1);
        spec_avgpool(out, a, &p2);
    } else {
        const qrt_pool_params p1 = {.C = 3, .H = 5, .W = 5, .OH = 5, .OW = 5, .k = 3, .stride = 1, .pad = 1, .z_in = z};
        spec_avgpool(a, q, &p1);
        spec_global_avgpool(out, a, 3, 25, z);
    }
}

static void test_avgpool_models(void **state) {
    (void)state;
    qrt_isa paths[QRT_ISA_COUNT];
    const int np = all_paths(paths);
    static const int zs[] = {-128, -3, 0, 3, 127, -55};
    trng r = {77};
    for (int which = 0; which < 3; which++)
        for (size_t zi = 0; zi < sizeof zs / sizeof zs[0]; zi++) {
            const int z = zs[zi];
            size_t len;
            uint8_t *file = pool_model(which, z, &len);
            const size_t need = qrt_model_mem_size(file, len);
            uint8_t *mem = xmalloc(need ? need : 1);
            qrt_model m;
            qrt_error err;
            if (qrt_model_load(&m, file, len, mem, need, &err) != QRT_STATUS_OK)
                fail_msg("pool model %d z=%d: %s", which, z, err.msg);
            const int in_n = qrt_model_input(&m)->numel, n_out = qrt_model_n_outputs(&m);
            uint8_t *arena = xmalloc(qrt_arena_size(&m) + 1), px[3 * 14 * 14];
            for (int it = 0; it < 40; it++) {
                if (which == 0 && it == 0) { /* the channel, then -0.5 over 196, then random */
                    for (int i = 0; i < 196; i++) px[i] = (uint8_t)(i % 2 ? 21 : 20);        /* q = -107, -108 */
                    for (int i = 0; i < 196; i++) px[196 + i] = (uint8_t)(i % 2 ? 127 : 128); /* q = -1, 0 */
                    for (int i = 392; i < in_n; i++) px[i] = (uint8_t)rint_in(&r, 0, 255);
                } else {
                    /* near the zero point (ties are common) or anywhere */
                    const int c = z + 128, lo = it % 2 ? 0 : (c - 2 < 0 ? 0 : c - 2), hi = it % 2 ? 255 : (c + 2 > 255 ? 255 : c + 2);
                    for (int i = 0; i < in_n; i++) px[i] = (uint8_t)rint_in(&r, lo, hi);
                }
                int8_t want[16], got[16];
                pool_model_ref(which, z, px, want);
                if (which == 0 && it == 0 && z == -128 && (want[0] != -107 || want[1] != 0))
                    fail_msg("test bug: the issue's case gives %d and %d", want[0], want[1]);
                for (int i = 0; i < np; i++) {
                    char what[96];
                    memset(got, 0x5a, sizeof got);
                    if (qrt_run_isa(&m, paths[i], px, arena + 1, got, NULL) != QRT_STATUS_OK) fail_msg("run failed");
                    snprintf(what, sizeof what, "pool model %d z=%d image %d [%s]", which, z, it, qrt_isa_str(paths[i]));
                    expect_vec(got, want, (size_t)n_out, what);
                }
            }
            free(arena), free(mem), free(file);
        }
}

/* The path is an argument (the library reads no environment): qrt_model_load gives the
 * best the CPU has, qrt_model_set_isa chooses another, lowered to what the CPU has, and
 * qrt_run then runs it. */
static void test_isa_selection(void **state) {
    (void)state;
    qrt_isa isa;
    if (!qrt_isa_parse("avx512vnni", &isa) || isa != QRT_ISA_AVX512VNNI || qrt_isa_parse("sse9", &isa) ||
        qrt_isa_parse(NULL, &isa))
        fail_msg("qrt_isa_parse");
    if (!qrt_isa_supported(QRT_ISA_PORTABLE)) fail_msg("portable must always be supported");
    if (qrt_isa_default() != qrt_isa_best() || strcmp(qrt_isa_name(), qrt_isa_str(qrt_isa_best())))
        fail_msg("default %s, best %s", qrt_isa_name(), qrt_isa_str(qrt_isa_best()));
    for (int i = 0; i < QRT_ISA_COUNT; i++) {
        /* the best supported path at or below i */
        int want = i;
        while (want > 0 && !qrt_isa_supported((qrt_isa)want)) want--;
        if (qrt_isa_resolve((qrt_isa)i) != (qrt_isa)want)
            fail_msg("resolve(%s) = %s, expected %s", qrt_isa_str((qrt_isa)i), qrt_isa_str(qrt_isa_resolve((qrt_isa)i)),
                     qrt_isa_str((qrt_isa)want));
    }
    size_t len;
    uint8_t *file = build_model(0, 5, &len);
    const size_t need = qrt_model_mem_size(file, len);
    uint8_t *mem = xmalloc(need);
    qrt_model m;
    if (qrt_model_load(&m, file, len, mem, need, NULL) != QRT_STATUS_OK) fail_msg("load");
    if (m.isa != qrt_isa_best()) fail_msg("a loaded model runs %s, not the best path %s", qrt_isa_str(m.isa),
                                          qrt_isa_str(qrt_isa_best()));
    if (qrt_model_set_isa(&m, QRT_ISA_PORTABLE) != QRT_ISA_PORTABLE || m.isa != QRT_ISA_PORTABLE)
        fail_msg("set_isa(portable): the model runs %s", qrt_isa_str(m.isa));
    const qrt_isa avx2 = qrt_isa_supported(QRT_ISA_AVX2) ? QRT_ISA_AVX2 : QRT_ISA_PORTABLE;
    if (qrt_model_set_isa(&m, QRT_ISA_AVX2) != avx2 || m.isa != avx2)
        fail_msg("set_isa(avx2): the model runs %s", qrt_isa_str(m.isa));
    if (qrt_model_set_isa(&m, QRT_ISA_AVX512VNNI) != qrt_isa_best()) fail_msg("set_isa(avx512vnni)");
    if (qrt_model_set_isa(NULL, QRT_ISA_AVX2) != QRT_ISA_PORTABLE) fail_msg("set_isa(NULL)");
    qrt_model empty = {0};
    if (qrt_model_set_isa(&empty, QRT_ISA_AVX2) != QRT_ISA_PORTABLE || empty.isa != QRT_ISA_PORTABLE)
        fail_msg("set_isa on a model that is not loaded");
    /* qrt_run follows the choice: the same logits on each (any path gives the same bytes,
     * so this checks that the call runs, not which kernels ran). */
    uint8_t *arena = xmalloc(qrt_arena_size(&m)), px[784];
    for (int i = 0; i < 784; i++) px[i] = (uint8_t)(i * 7);
    int8_t want[10], got[10];
    qrt_model_set_isa(&m, QRT_ISA_PORTABLE);
    if (qrt_run(&m, px, arena, want, NULL) != QRT_STATUS_OK) fail_msg("run (portable)");
    qrt_model_set_isa(&m, QRT_ISA_AVX512VNNI);
    if (qrt_run(&m, px, arena, got, NULL) != QRT_STATUS_OK) fail_msg("run (best)");
    expect_vec(got, want, 10, "qrt_run after qrt_model_set_isa");
    printf("note: best path %s\n", qrt_isa_str(qrt_isa_best()));
    free(arena), free(mem), free(file);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_isa_selection),
        cmocka_unit_test(test_conv2d_named),
        cmocka_unit_test(test_conv2d_random),
        cmocka_unit_test(test_conv2d_planar),
        cmocka_unit_test(test_conv2d_dw_pw),
        cmocka_unit_test(test_conv2d_extremes),
        cmocka_unit_test(test_conv2d_maxpool),
        cmocka_unit_test(test_linear),
        cmocka_unit_test(test_linear_batch),
        cmocka_unit_test(test_models_batch),
        cmocka_unit_test(test_maxpool),
        cmocka_unit_test(test_global_avgpool),
        cmocka_unit_test(test_avgpool_ties),
        cmocka_unit_test(test_avgpool_models),
        cmocka_unit_test(test_add_input),
        cmocka_unit_test(test_models),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
