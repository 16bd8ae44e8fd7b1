/* simd_avx512.c - the AVX-512 VNNI kernels (simd.h), compiled with -mavx512f -mavx512bw
 * -mavx512vl -mavx512vnni and called only when the CPU has them. Each equals its
 * portable kernel (kernels.c) byte for byte; docs/runtime-simd.md has the argument.
 *
 * Dense/grouped conv: the input plane, padded, goes to an HWC scratch as u = q + 128
 * (padding: z_in + 128); a tile of 8 output positions x 32 output channels (two zmm per
 * position, 16 int32 lanes = 16 channels each) accumulates vpdpbusd(u dword broadcast,
 * 16 x 4 weights): one dword of a kernel row is 4 consecutive bytes of the HWC row, so
 * a 3x3 conv over C = 1 costs 3 dwords, not 9. The accumulators start at bias', so they
 * hold acc exactly (simd.c); requantization is the spec's MBQM on 16 lanes; the HWC
 * int8 result is transposed back to (C, H, W).
 * Depthwise: lanes are channels, u widened to int32 times int32 weights per tap.
 * Linear: GEMV, 4 blocks of 16 outputs share each broadcast input dword; over a batch,
 * a GEMM whose tiles of 6 samples x 4 blocks share each weight load too.
 */
#include "simd_x86.h"

#define NP 8 /* output positions per conv tile */

/* ---- requantization: MultiplyByQuantizedMultiplier on 16 lanes ---------------------- */

/* x * 2^left, then SaturatingRoundingDoublingHighMul(x, M0) = floor((x*M0 + 2^30) / 2^31)
 * (fixedpoint.h: both of the spec's nudge branches are this floor). M0 >= 0 (0 or in
 * [2^30, 2^31)), so the saturating case INT32_MIN * INT32_MIN cannot occur. vpmuldq forms
 * the exact 64-bit products of the even lanes, and of the odd ones after a 32-bit shift;
 * bits 31..62 of p + 2^30 are the result (|p| < 2^62): a logical right shift by 31 puts
 * them in the low dword of an even lane, a left shift by 1 in the high dword of an odd
 * lane. Then RoundingDivideByPOT(y, right): (y >> right) + (rem > (mask >> 1) + (y < 0)),
 * the spec's formula with an arithmetic per-lane shift. */
static inline __m512i mbqm(__m512i x, __m512i m0, __m512i left, __m512i right, __m512i mask,
                           __m512i half) {
    const __m512i nudge = _mm512_set1_epi64((int64_t)1 << 30);
    x = _mm512_sllv_epi32(x, left);
    const __m512i pe = _mm512_add_epi64(_mm512_mul_epi32(x, m0), nudge);
    const __m512i po = _mm512_add_epi64(
        _mm512_mul_epi32(_mm512_srli_epi64(x, 32), _mm512_srli_epi64(m0, 32)), nudge);
    const __m512i y = _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(pe, 31), _mm512_slli_epi64(po, 1));
    const __m512i rem = _mm512_and_si512(y, mask);
    const __m512i thr = _mm512_sub_epi32(half, _mm512_srai_epi32(y, 31));
    const __m512i q = _mm512_srav_epi32(y, right);
    return _mm512_mask_sub_epi32(q, _mm512_cmpgt_epi32_mask(rem, thr), q, _mm512_set1_epi32(-1));
}

/* clamp(v + z_out, act_min, act_max) = clamp(v, act_min - z_out, act_max - z_out) + z_out,
 * which cannot overflow (the spec adds in int64). */
typedef struct outq {
    __m512i lo, hi, z;
} outq;

static inline outq outq_make(int32_t z_out, int32_t act_min, int32_t act_max) {
    outq o = {_mm512_set1_epi32(act_min - z_out), _mm512_set1_epi32(act_max - z_out), _mm512_set1_epi32(z_out)};
    return o;
}

/* acc (already including bias') -> 16 int8 for the channels of record r. */
static inline __m128i requant(__m512i acc, const int32_t *r, const outq *o) {
    const __m512i v = mbqm(acc, _mm512_loadu_si512(r + QRT_RQ_M0), _mm512_loadu_si512(r + QRT_RQ_LEFT),
                           _mm512_loadu_si512(r + QRT_RQ_RIGHT), _mm512_loadu_si512(r + QRT_RQ_MASK),
                           _mm512_loadu_si512(r + QRT_RQ_HALF));
    return _mm512_cvtepi32_epi8(_mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(v, o->lo), o->hi), o->z));
}

/* A masked store of 16 bytes from a register. Written as the store of a vpmovdb result,
 * gcc fuses the two into vpmovdb to memory, which Zen 4 runs many times slower (measured:
 * a quarter of the planar conv's time on that one instruction); the empty asm keeps the
 * value in a register. */
static inline void store16(void *dst, __mmask16 m, __m128i v) {
    __asm__("" : "+v"(v));
    _mm_mask_storeu_epi8(dst, m, v);
}

/* ---- dense and grouped conv ---------------------------------------------------------- */

/* NB (1 or 2) blocks of 16 channels x NP positions; x[n] is position n's window corner
 * in the HWC plane (rs bytes per row), w the first block's weights (the second follows
 * at wblock), r its requantization record. Writes nvalid outputs to dst (ocs apart):
 * one per position, or with pool one per 4 positions (a 2x2 window), the requantized
 * max of their accumulators. That equals the max of the requantized values because
 * requantization is non-decreasing (x * 2^left, SRDHM with M0 >= 0, RoundingDivideByPOT,
 * + z_out and the clamp each are), and f(max(a, b)) = max(f(a), f(b)) for such f. */
static inline __attribute__((always_inline)) void conv_tile(const int NB, const int pool,
                                                            const uint8_t *const *x, size_t rs,
                                                            const int8_t *w, size_t wblock, int k, int nj,
                                                            const int32_t *r, uint8_t *dst, size_t ocs,
                                                            int nvalid, const outq *o) {
    __m512i acc[NP][2];
    const __m512i b0 = _mm512_loadu_si512(r + QRT_RQ_BIAS);
    const __m512i b1 = NB == 2 ? _mm512_loadu_si512(r + QRT_RQ_WORDS + QRT_RQ_BIAS) : b0;
#pragma GCC unroll 8
    for (int n = 0; n < NP; n++) acc[n][0] = b0, acc[n][1] = b1;
    for (int ky = 0; ky < k; ky++) {
        const int8_t *wa = w + (size_t)ky * nj * 64, *wb = wa + wblock;
        const size_t ro = (size_t)ky * rs;
        for (int j = 0; j < nj; j++) {
            const __m512i w0 = _mm512_loadu_si512(wa + 64 * j);
            const __m512i w1 = NB == 2 ? _mm512_loadu_si512(wb + 64 * j) : w0;
#pragma GCC unroll 8
            for (int n = 0; n < NP; n++) {
                const __m512i xv = _mm512_set1_epi32(ld32(x[n] + ro + 4 * (size_t)j));
                acc[n][0] = _mm512_dpbusd_epi32(acc[n][0], xv, w0);
                if (NB == 2) acc[n][1] = _mm512_dpbusd_epi32(acc[n][1], xv, w1);
            }
        }
    }
    if (pool) {
#pragma GCC unroll 4
        for (int q = 0; q < NP / 4; q++)
#pragma GCC unroll 2
            for (int b = 0; b < NB; b++)
                acc[q][b] = _mm512_max_epi32(_mm512_max_epi32(acc[4 * q][b], acc[4 * q + 1][b]),
                                             _mm512_max_epi32(acc[4 * q + 2][b], acc[4 * q + 3][b]));
    }
    for (int n = 0; n < nvalid; n++) {
        _mm_storeu_si128((__m128i *)(dst + (size_t)n * ocs), requant(acc[n][0], r, o));
        if (NB == 2)
            _mm_storeu_si128((__m128i *)(dst + (size_t)n * ocs + 16), requant(acc[n][1], r + QRT_RQ_WORDS, o));
    }
}

/* pool: 0, or 2 for a fused 2x2 stride-2 max pool (out is then (OC, OH/2, OW/2)). */
static void conv_dense(int8_t *out, const int8_t *in, const qrt_packed_conv *pk, const qrt_conv_params *p,
                       uint8_t *scratch, int pool) {
    qrt_conv_scratch sl;
    qrt_conv_scratch_layout(p, &sl);
    const int G = p->groups, Cg = pk->Cg, OCg = pk->OCg, k = p->k, S = p->stride, nj = pk->nj, nob = pk->nob;
    const int Wp = sl.Wp, OW = pool ? p->OW / 2 : p->OW, npos = pool ? (p->OH / 2) * OW : p->OH * p->OW;
    const int per_tile = pool ? NP / 4 : NP; /* outputs per tile */
    const size_t gplane = (size_t)sl.Hp * Wp * Cg, rs = (size_t)Wp * Cg, wblock = (size_t)k * nj * 64;
    const size_t ocs = (size_t)pk->ocs;
    uint8_t *ob = scratch + sl.ob_off;
    const outq o = outq_make(p->z_out, p->act_min, p->act_max);
    for (int g = 0; g < G; g++) {
        uint8_t *xg = scratch + (size_t)g * gplane;
        fill_hwc(xg, Cg, in, g * Cg, Cg, p->H, p->W, p->pad, p->z_in);
        /* Tiles of positions outside, blocks of channels inside: a tile's windows are
         * found once (the coordinates step along the rows, no division) and stay in L1
         * while every block's weights pass over them. */
        int ty = 0, tx = 0; /* the tile's first output (pooled if pool) */
        for (int p0 = 0; p0 < npos; p0 += per_tile) {
            const uint8_t *x[NP];
            int qy = ty, qx = tx;
            for (int n = 0; n < NP; n++) {
                if (pool && n % 4 == 0 && n > 0 && p0 + n / 4 < npos && ++qx == OW) qx = 0, qy++;
                if (!pool && n > 0 && p0 + n < npos && ++qx == OW) qx = 0, qy++;
                int oy = qy, ox = qx; /* past npos: the last position again (its outputs are dropped) */
                if (pool) oy = 2 * oy + (n / 2) % 2, ox = 2 * ox + n % 2;
                x[n] = xg + ((size_t)oy * S * Wp + (size_t)ox * S) * Cg;
            }
            if (++qx == OW) qx = 0, qy++;
            ty = qy, tx = qx;
            const int nvalid = npos - p0 < per_tile ? npos - p0 : per_tile;
            for (int b = 0; b < nob; b += 2) {
                const int8_t *w = pk->wp + (size_t)g * pk->wgroup + (size_t)b * wblock;
                const int32_t *r = pk->rq + ((size_t)g * nob + b) * QRT_RQ_WORDS;
                uint8_t *d = ob + (size_t)g * OCg + (size_t)b * 16 + (size_t)p0 * ocs;
                if (nob - b >= 2) {
                    if (pool) conv_tile(2, 1, x, rs, w, wblock, k, nj, r, d, ocs, nvalid, &o);
                    else conv_tile(2, 0, x, rs, w, wblock, k, nj, r, d, ocs, nvalid, &o);
                } else {
                    if (pool) conv_tile(1, 1, x, rs, w, wblock, k, nj, r, d, ocs, nvalid, &o);
                    else conv_tile(1, 0, x, rs, w, wblock, k, nj, r, d, ocs, nvalid, &o);
                }
            }
        }
    }
    transpose_u8((uint8_t *)out, (size_t)npos, ob, ocs, npos, p->OC, 0);
}

/* ---- depthwise conv ------------------------------------------------------------------ */

static void conv_depthwise(int8_t *out, const int8_t *in, const qrt_packed_conv *pk,
                           const qrt_conv_params *p, uint8_t *scratch) {
    qrt_conv_scratch sl;
    qrt_conv_scratch_layout(p, &sl);
    const int k = p->k, S = p->stride, nob = pk->nob, Wp = sl.Wp, OW = p->OW, npos = p->OH * p->OW;
    const size_t Cp = (size_t)nob * 16;
    uint8_t *ob = scratch + sl.ob_off;
    const outq o = outq_make(p->z_out, p->act_min, p->act_max);
    fill_hwc(scratch, (int)Cp, in, 0, p->C, p->H, p->W, p->pad, p->z_in);
    for (int b = 0; b < nob; b++) {
        const int32_t *r = pk->rq + (size_t)b * QRT_RQ_WORDS;
        const int32_t *wd = pk->wd + (size_t)b * 16;
        const __m512i bias = _mm512_loadu_si512(r + QRT_RQ_BIAS);
        for (int pos = 0; pos < npos; pos++) {
            const int oy = pos / OW, ox = pos % OW;
            const uint8_t *x = scratch + ((size_t)oy * S * Wp + (size_t)ox * S) * Cp + (size_t)b * 16;
            __m512i acc = bias, acc2 = _mm512_setzero_si512();
            for (int ky = 0; ky < k; ky++) {
                const uint8_t *xr = x + (size_t)ky * Wp * Cp;
                const int32_t *wr = wd + (size_t)ky * k * Cp;
                int kx = 0;
                for (; kx + 2 <= k; kx += 2) {
                    acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(
                        _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(xr + (size_t)kx * Cp))),
                        _mm512_loadu_si512(wr + (size_t)kx * Cp)));
                    acc2 = _mm512_add_epi32(acc2, _mm512_mullo_epi32(
                        _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(xr + (size_t)(kx + 1) * Cp))),
                        _mm512_loadu_si512(wr + (size_t)(kx + 1) * Cp)));
                }
                if (kx < k)
                    acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(
                        _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(xr + (size_t)kx * Cp))),
                        _mm512_loadu_si512(wr + (size_t)kx * Cp)));
            }
            _mm_storeu_si128((__m128i *)(ob + (size_t)pos * Cp + (size_t)b * 16),
                             requant(_mm512_add_epi32(acc, acc2), r, &o));
        }
    }
    transpose_u8((uint8_t *)out, (size_t)npos, ob, Cp, npos, p->C, 0);
}

/* ---- one input plane per output channel, with VBMI: depthwise, and C = 1 ------------
 *
 * When every output channel reads a single input plane (groups == C: depthwise, or a
 * dense conv of one input channel) and the output rows are wide (OW >= 9), the lanes are
 * 16 output positions of one channel instead of 16 channels of one position, and the
 * planes stay (C, H, W): no transpose in or out, no padded copy. For a chunk of 16
 * outputs of a row and a kernel row ky, one masked load takes the input bytes the chunk
 * reads (columns outside the plane, and rows outside it, come as z_in: padding), XOR 0x80
 * makes them u = q + 128, and one vpermb per 4 kernel columns builds the 16 overlapping
 * windows: dword t of lane l = the 4 bytes at l * S + 4t (kx = 4t..4t+3, weights zero
 * past k). The windows serve every output channel of the plane, each a vpdpbusd against
 * its broadcast weight dword; bias' and the requantization are the channel's, broadcast
 * from its record. Narrow rows (7x7 planes) keep the HWC kernels, where lanes are
 * channels and no lane idles. */

enum { PL_KMAX = 7, PL_TMAX = 2, PL_JB = 32 }; /* kernel side, dwords per kernel row, channels per pass */

int qrt_avx512_planar_ok(const qrt_conv_params *p) {
    return p->groups == p->C && p->k <= PL_KMAX && p->OW >= 9 && 15 * p->stride + 4 * ((p->k + 3) / 4) <= 64;
}

__attribute__((target("avx512vbmi"))) void qrt_avx512_conv_planar(int8_t *out, const int8_t *in,
                                                                   const qrt_packed_conv *pk,
                                                                   const qrt_conv_params *p) {
    const int k = p->k, S = p->stride, nt = (k + 3) / 4, OW = p->OW, OH = p->OH, H = p->H, W = p->W, P = p->pad;
    const int OCg = p->OC / p->groups;
    const size_t kk = (size_t)k * k, plane = (size_t)H * W, oplane = (size_t)OH * OW;
    uint8_t idx[64]; /* lane l, byte b <- byte l * S + b */
    for (int l = 0; l < 16; l++)
        for (int b = 0; b < 4; b++) idx[4 * l + b] = (uint8_t)(l * S + b);
    __m512i perm[PL_TMAX];
    for (int t = 0; t < nt; t++) perm[t] = _mm512_add_epi8(_mm512_loadu_si512(idx), _mm512_set1_epi8((char)(4 * t)));
    const __m512i zq = _mm512_set1_epi8((char)p->z_in), flip = _mm512_set1_epi8((char)0x80);
    const outq o = outq_make(p->z_out, p->act_min, p->act_max);
    int32_t wdw[PL_JB][PL_KMAX][PL_TMAX]; /* a pass's weight dwords, zero past k */
    const int32_t *rec[PL_JB];
    int lane[PL_JB];
    for (int g = 0; g < p->groups; g++) {
        const int8_t *pl = in + (size_t)g * plane;
        for (int j0 = 0; j0 < OCg; j0 += PL_JB) {
            const int nj = OCg - j0 < PL_JB ? OCg - j0 : PL_JB;
            for (int jj = 0; jj < nj; jj++) {
                const int j = j0 + jj, oc = g * OCg + j;
                rec[jj] = qrt_conv_record(pk, g, j, &lane[jj]);
                for (int ky = 0; ky < k; ky++)
                    for (int t = 0; t < nt; t++) {
                        uint8_t wd[4] = {0, 0, 0, 0};
                        for (int b = 0; b < 4 && 4 * t + b < k; b++) wd[b] = (uint8_t)pk->w[(size_t)oc * kk + (size_t)ky * k + 4 * t + b];
                        wdw[jj][ky][t] = ld32(wd);
                    }
            }
            for (int oy = 0; oy < OH; oy++)
                for (int x0 = 0; x0 < OW; x0 += 16) {
                    const int nv = OW - x0 < 16 ? OW - x0 : 16;
                    /* input columns ix0 .. ix0 + span - 1: up to the last valid lane's last dword */
                    const int ix0 = x0 * S - P, span = (nv - 1) * S + 4 * nt;
                    const int lo = ix0 < 0 ? -ix0 : 0, hi = W - ix0 < span ? W - ix0 : span;
                    const __mmask64 cm = hi <= lo ? 0 : (~(__mmask64)0 >> (64 - hi)) & (~(__mmask64)0 << lo);
                    __m512i xp[PL_KMAX][PL_TMAX];
                    for (int ky = 0; ky < k; ky++) {
                        const int iy = oy * S + ky - P;
                        __m512i v = zq;
                        /* the row's address plus ix0 as an integer: bytes before the row
                         * (ix0 < 0) are masked off, never read, and no pointer points there */
                        if (iy >= 0 && iy < H)
                            v = _mm512_mask_loadu_epi8(zq, cm, (const void *)((uintptr_t)(pl + (size_t)iy * W) + (uintptr_t)(intptr_t)ix0));
                        v = _mm512_xor_si512(v, flip);
                        for (int t = 0; t < nt; t++) xp[ky][t] = _mm512_permutexvar_epi8(perm[t], v);
                    }
                    const __mmask16 sm = nv >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << nv) - 1);
                    for (int jj = 0; jj < nj; jj++) {
                        const int32_t *r = rec[jj];
                        const int l = lane[jj];
                        __m512i acc = _mm512_set1_epi32(r[QRT_RQ_BIAS + l]);
                        for (int ky = 0; ky < k; ky++)
                            for (int t = 0; t < nt; t++)
                                acc = _mm512_dpbusd_epi32(acc, xp[ky][t], _mm512_set1_epi32(wdw[jj][ky][t]));
                        const __m512i v = mbqm(acc, _mm512_set1_epi32(r[QRT_RQ_M0 + l]), _mm512_set1_epi32(r[QRT_RQ_LEFT + l]),
                                               _mm512_set1_epi32(r[QRT_RQ_RIGHT + l]), _mm512_set1_epi32(r[QRT_RQ_MASK + l]),
                                               _mm512_set1_epi32(r[QRT_RQ_HALF + l]));
                        store16(out + (size_t)(g * OCg + j0 + jj) * oplane + (size_t)oy * OW + x0, sm,
                                             _mm512_cvtepi32_epi8(_mm512_add_epi32(
                                                 _mm512_min_epi32(_mm512_max_epi32(v, o.lo), o.hi), o.z)));
                    }
                }
        }
    }
}

void qrt_avx512_conv2d(int8_t *out, const int8_t *in, const qrt_packed_conv *pk, const qrt_conv_params *p,
                       uint8_t *scratch) {
    if (pk->depthwise) conv_depthwise(out, in, pk, p, scratch);
    else conv_dense(out, in, pk, p, scratch, 0);
}

void qrt_avx512_conv2d_maxpool(int8_t *out, const int8_t *in, const qrt_packed_conv *pk,
                               const qrt_conv_params *p, uint8_t *scratch) {
    conv_dense(out, in, pk, p, scratch, 2);
}

/* ---- linear --------------------------------------------------------------------------- */

/* NB blocks of 16 outputs; two accumulators per block (even and odd dwords) hide the
 * vpdpbusd latency. */
static inline __attribute__((always_inline)) void linear_tile(const int NB, const uint8_t *u, int nj,
                                                              const int8_t *w, const int32_t *r,
                                                              int8_t *dst, int nout, const outq *o) {
    __m512i a[4], c[4];
    const size_t wb = (size_t)nj * 64;
#pragma GCC unroll 4
    for (int i = 0; i < NB; i++) a[i] = _mm512_loadu_si512(r + (size_t)i * QRT_RQ_WORDS + QRT_RQ_BIAS), c[i] = _mm512_setzero_si512();
    int j = 0;
    for (; j + 2 <= nj; j += 2) {
        const __m512i x0 = _mm512_set1_epi32(ld32(u + 4 * (size_t)j)), x1 = _mm512_set1_epi32(ld32(u + 4 * (size_t)j + 4));
#pragma GCC unroll 4
        for (int i = 0; i < NB; i++) {
            a[i] = _mm512_dpbusd_epi32(a[i], x0, _mm512_loadu_si512(w + i * wb + 64 * (size_t)j));
            c[i] = _mm512_dpbusd_epi32(c[i], x1, _mm512_loadu_si512(w + i * wb + 64 * (size_t)j + 64));
        }
    }
    if (j < nj) {
        const __m512i x0 = _mm512_set1_epi32(ld32(u + 4 * (size_t)j));
#pragma GCC unroll 4
        for (int i = 0; i < NB; i++) a[i] = _mm512_dpbusd_epi32(a[i], x0, _mm512_loadu_si512(w + i * wb + 64 * (size_t)j));
    }
#pragma GCC unroll 4
    for (int i = 0; i < NB; i++) {
        const int n = nout - 16 * i;
        if (n <= 0) break;
        const __m128i v = requant(_mm512_add_epi32(a[i], c[i]), r + (size_t)i * QRT_RQ_WORDS, o);
        store16(dst + 16 * i, n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1), v);
    }
}

void qrt_avx512_linear(int8_t *out, const int8_t *in, const qrt_packed_linear *pk, const qrt_linear_params *p,
                       uint8_t *scratch) {
    const int nj = pk->nj, nob = pk->nob;
    xor_copy(scratch, (const uint8_t *)in, (size_t)p->F_in, 0x80);
    memset(scratch + p->F_in, 0, 4); /* the last dword's padding (weights 0 there) */
    const outq o = outq_make(p->z_out, p->act_min, p->act_max);
    const size_t wb = (size_t)nj * 64;
    int b = 0;
    for (; b + 4 <= nob; b += 4)
        linear_tile(4, scratch, nj, pk->wp + (size_t)b * wb, pk->rq + (size_t)b * QRT_RQ_WORDS, out + 16 * b,
                    p->F_out - 16 * b, &o);
    for (; b < nob; b++)
        linear_tile(1, scratch, nj, pk->wp + (size_t)b * wb, pk->rq + (size_t)b * QRT_RQ_WORDS, out + 16 * b,
                    p->F_out - 16 * b, &o);
}

/* ---- linear over a batch: a GEMM ------------------------------------------------------
 *
 * The samples' inputs go once to u8 rows u = q + 128 of 4 * nj bytes (zero past F_in,
 * where the weights are zero too). A tile is NS samples x NB blocks of 16 outputs: per
 * input dword, NB weight vectors are loaded once and serve NS samples, and each sample's
 * broadcast dword serves NB blocks (NS * NB accumulators: 24 of the 32 zmm at 6 x 4).
 * The sums are the GEMV's, added in another order: exact in int32 (mod 2^32) either way. */
#define GS512 6 /* samples per tile */

static inline __attribute__((always_inline)) void gemm_tile(const int NS, const int NB, int8_t *const *y,
                                                            const uint8_t *const *x, int nj, const int8_t *w,
                                                            const int32_t *r, int nout, const outq *o) {
    __m512i acc[GS512][4];
    const size_t wb = (size_t)nj * 64;
#pragma GCC unroll 4
    for (int i = 0; i < NB; i++) {
        const __m512i b = _mm512_loadu_si512(r + (size_t)i * QRT_RQ_WORDS + QRT_RQ_BIAS);
#pragma GCC unroll 6
        for (int s = 0; s < NS; s++) acc[s][i] = b;
    }
    for (int j = 0; j < nj; j++) {
        __m512i wv[4];
#pragma GCC unroll 4
        for (int i = 0; i < NB; i++) wv[i] = _mm512_loadu_si512(w + i * wb + 64 * (size_t)j);
#pragma GCC unroll 6
        for (int s = 0; s < NS; s++) {
            const __m512i xv = _mm512_set1_epi32(ld32(x[s] + 4 * (size_t)j));
#pragma GCC unroll 4
            for (int i = 0; i < NB; i++) acc[s][i] = _mm512_dpbusd_epi32(acc[s][i], xv, wv[i]);
        }
    }
#pragma GCC unroll 4
    for (int i = 0; i < NB; i++) {
        const int n = nout - 16 * i;
        if (n <= 0) break;
        const __mmask16 m = n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1);
#pragma GCC unroll 6
        for (int s = 0; s < NS; s++)
            store16(y[s] + 16 * i, m, requant(acc[s][i], r + (size_t)i * QRT_RQ_WORDS, o));
    }
}

/* One tile of ns (1..GS512) samples and NB blocks, ns made a constant. */
static void gemm_tile_ns(const int NB, int ns, int8_t *const *y, const uint8_t *const *x, int nj,
                         const int8_t *w, const int32_t *r, int nout, const outq *o) {
    switch (ns) {
#define CASE(k)                                                                                                 case k:                                                                                                         if (NB == 4) gemm_tile(k, 4, y, x, nj, w, r, nout, o);                                                      else gemm_tile(k, 1, y, x, nj, w, r, nout, o);                                                              break;
        CASE(6) CASE(5) CASE(4) CASE(3) CASE(2)
#undef CASE
    default:
        if (NB == 4) gemm_tile(1, 4, y, x, nj, w, r, nout, o);
        else gemm_tile(1, 1, y, x, nj, w, r, nout, o);
        break;
    }
}

void qrt_avx512_linear_batch(int8_t *out, size_t out_stride, const int8_t *in, size_t in_stride, int n,
                             const qrt_packed_linear *pk, const qrt_linear_params *p, uint8_t *scratch) {
    const int nj = pk->nj, nob = pk->nob;
    const size_t row = 4 * (size_t)nj; /* <= qrt_linear_batch_row(p): the scratch holds n of them */
    for (int s = 0; s < n; s++) {
        uint8_t *d = scratch + (size_t)s * row;
        xor_copy(d, (const uint8_t *)in + (size_t)s * in_stride, (size_t)p->F_in, 0x80);
        memset(d + p->F_in, 0, row - (size_t)p->F_in);
    }
    const outq o = outq_make(p->z_out, p->act_min, p->act_max);
    const size_t wb = (size_t)nj * 64;
    for (int b = 0; b < nob;) {
        const int NB = nob - b >= 4 ? 4 : 1;
        const int8_t *w = pk->wp + (size_t)b * wb;
        const int32_t *r = pk->rq + (size_t)b * QRT_RQ_WORDS;
        for (int s0 = 0; s0 < n; s0 += GS512) {
            const int ns = n - s0 < GS512 ? n - s0 : GS512;
            const uint8_t *x[GS512];
            int8_t *y[GS512];
            for (int t = 0; t < ns; t++) {
                x[t] = scratch + (size_t)(s0 + t) * row;
                y[t] = out + (size_t)(s0 + t) * out_stride + 16 * (size_t)b;
            }
            if (NB == 4) gemm_tile_ns(4, ns, y, x, nj, w, r, p->F_out - 16 * b, &o);
            else gemm_tile_ns(1, ns, y, x, nj, w, r, p->F_out - 16 * b, &o);
        }
        b += NB;
    }
}

/* ---- max pool 2x2 stride 2, elementwise ---------------------------------------------- */

int qrt_avx512_maxpool(int8_t *out, const int8_t *in, const qrt_pool_params *p) {
    if (p->k != 2 || p->stride != 2 || p->pad != 0) return 0;
    const int H = p->H, W = p->W, OH = p->OH, OW = p->OW;
    for (int c = 0; c < p->C; c++)
        for (int oy = 0; oy < OH; oy++) {
            const int8_t *r0 = in + ((size_t)c * H + 2 * oy) * W, *r1 = r0 + W;
            int8_t *y = out + ((size_t)c * OH + oy) * OW;
            for (int ox = 0; ox < OW; ox += 32) {
                const int n = OW - ox < 32 ? OW - ox : 32;
                const __mmask64 lm = n == 32 ? ~(__mmask64)0 : (((__mmask64)1 << (2 * n)) - 1);
                const __m512i m = _mm512_max_epi8(_mm512_maskz_loadu_epi8(lm, r0 + 2 * ox),
                                                  _mm512_maskz_loadu_epi8(lm, r1 + 2 * ox));
                /* byte 2i of each word: max(x[2i], x[2i+1]) */
                const __m512i m2 = _mm512_max_epi8(m, _mm512_srli_epi16(m, 8));
                _mm256_mask_storeu_epi8(y + ox, n == 32 ? ~(__mmask32)0 : (((__mmask32)1 << n) - 1),
                                        _mm512_cvtepi16_epi8(m2));
            }
        }
    return 1;
}

void qrt_avx512_add(int8_t *out, const int8_t *a, const int8_t *b, size_t n, const qrt_add_params *p) {
#define SHIFT_VECS(s, M)                                                                                \
    const __m512i M##_m0 = _mm512_set1_epi32(p->mult_##s),                                            \
                  M##_l = _mm512_set1_epi32(p->shift_##s > 0 ? p->shift_##s : 0),                     \
                  M##_r = _mm512_set1_epi32(p->shift_##s > 0 ? 0 : -p->shift_##s),                    \
                  M##_mask = _mm512_set1_epi32((int32_t)((1u << (p->shift_##s > 0 ? 0 : -p->shift_##s)) - 1u)), \
                  M##_half = _mm512_srli_epi32(M##_mask, 1)
    SHIFT_VECS(a, A);
    SHIFT_VECS(b, B);
    SHIFT_VECS(out, O);
#undef SHIFT_VECS
    const __m512i za = _mm512_set1_epi32(p->z_a), zb = _mm512_set1_epi32(p->z_b);
    const outq o = outq_make(p->z_out, p->act_min, p->act_max);
    for (size_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        /* (q - z) * 2^20: |q - z| <= 255, no overflow */
        const __m512i xa = _mm512_slli_epi32(_mm512_sub_epi32(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, a + i)), za), QRT_ADD_LEFT_SHIFT);
        const __m512i xb = _mm512_slli_epi32(_mm512_sub_epi32(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, b + i)), zb), QRT_ADD_LEFT_SHIFT);
        const __m512i s = _mm512_add_epi32(mbqm(xa, A_m0, A_l, A_r, A_mask, A_half),
                                           mbqm(xb, B_m0, B_l, B_r, B_mask, B_half));
        const __m512i v = mbqm(s, O_m0, O_l, O_r, O_mask, O_half);
        store16(out + i, m,
                             _mm512_cvtepi32_epi8(_mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(v, o.lo), o.hi), o.z)));
    }
}

void qrt_avx512_input(int8_t *out, const uint8_t *pixels, size_t n) {
    xor_copy((uint8_t *)out, pixels, n, 0x80);
}
