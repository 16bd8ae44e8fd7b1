/* simd_avx2.c - the AVX2 kernels (simd.h), compiled with -mavx2 and called only when
 * the CPU has AVX2. Same packed layouts and scratch as the AVX-512 VNNI path
 * (simd_impl.h), so a model packed once runs on either; each kernel equals its portable
 * one byte for byte (docs/runtime-simd.md).
 *
 * AVX2 has no exact u8 x s8 dot product (vpmaddubsw saturates its int16 pair sums:
 * 2 * 255 * 127 > 32767), so products are formed in int16 with vpmaddwd, which is exact
 * (|u * w| <= 255 * 127; a pair sum fits int32): one dword of 4 input bytes u0..u3,
 * as int16, is broadcast as (u0,u1),(u2,u3) pairs against 4 channels x 4 weights in
 * int16, so vpmaddwd leaves u0w0 + u1w1 and u2w2 + u3w3 of each channel in two adjacent
 * lanes; a final vphaddd joins them. (The dense conv widens its input and weights once,
 * the GEMV per use.) The accumulators start at
 * 0 and get bias' at the end: the same int32 sum modulo 2^32.
 */
#include "simd_x86.h"

/* ---- requantization on 8 lanes (the AVX-512 file has the derivation) ---------------- */

static inline __m256i mbqm(__m256i x, __m256i m0, __m256i left, __m256i right, __m256i mask, __m256i half) {
    const __m256i nudge = _mm256_set1_epi64x((int64_t)1 << 30);
    x = _mm256_sllv_epi32(x, left);
    const __m256i pe = _mm256_add_epi64(_mm256_mul_epi32(x, m0), nudge);
    const __m256i po = _mm256_add_epi64(
        _mm256_mul_epi32(_mm256_srli_epi64(x, 32), _mm256_srli_epi64(m0, 32)), nudge);
    const __m256i y = _mm256_blend_epi32(_mm256_srli_epi64(pe, 31), _mm256_slli_epi64(po, 1), 0xAA);
    const __m256i rem = _mm256_and_si256(y, mask);
    const __m256i thr = _mm256_sub_epi32(half, _mm256_srai_epi32(y, 31));
    const __m256i q = _mm256_srav_epi32(y, right);
    return _mm256_sub_epi32(q, _mm256_cmpgt_epi32(rem, thr));
}

typedef struct outq {
    __m256i lo, hi, z;
} outq;

static inline outq outq_make(int32_t z_out, int32_t act_min, int32_t act_max) {
    outq o = {_mm256_set1_epi32(act_min - z_out), _mm256_set1_epi32(act_max - z_out), _mm256_set1_epi32(z_out)};
    return o;
}

/* acc (including bias') of the 8 channels at r (a record pointer offset by 0 or 8) -> 8
 * int8 in the low half. */
static inline __m128i requant(__m256i acc, const int32_t *r, const outq *o) {
#define L(f) _mm256_loadu_si256((const __m256i *)(r + (f)))
    __m256i v = mbqm(acc, L(QRT_RQ_M0), L(QRT_RQ_LEFT), L(QRT_RQ_RIGHT), L(QRT_RQ_MASK), L(QRT_RQ_HALF));
#undef L
    v = _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(v, o->lo), o->hi), o->z);
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    return _mm_packs_epi16(w, w); /* in [-128, 127]: the packs do not saturate */
}

/* Four accumulators of (channel, pair) lanes for 16 channels -> 16 int32 channel sums
 * (lo: channels 0..7, hi: 8..15). vphaddd works within 128-bit halves: [c0 c1 c4 c5 |
 * c2 c3 c6 c7], put in order by a qword permute. */
static inline void join16(const __m256i a[4], __m256i *lo, __m256i *hi) {
    *lo = _mm256_permute4x64_epi64(_mm256_hadd_epi32(a[0], a[1]), _MM_SHUFFLE(3, 1, 2, 0));
    *hi = _mm256_permute4x64_epi64(_mm256_hadd_epi32(a[2], a[3]), _MM_SHUFFLE(3, 1, 2, 0));
}

/* 4 bytes u0..u3 -> (u0,u1),(u2,u3) as int16 pairs in every qword. */
static inline __m256i bcast_u4(const uint8_t *p) {
    return _mm256_broadcastq_epi64(_mm_cvtepu8_epi16(_mm_cvtsi32_si128(ld32(p))));
}

/* 16 weight bytes (4 channels x 4) -> int16. */
static inline __m256i w16(const int8_t *p) { return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)p)); }

/* ---- dense and grouped conv ---------------------------------------------------------- */

static inline void store16(uint8_t *dst, __m256i lo, __m256i hi, const int32_t *r, const outq *o) {
    _mm_storeu_si128((__m128i *)dst, _mm_unpacklo_epi64(requant(lo, r, o), requant(hi, r + 8, o)));
}

/* ---- dense and grouped conv on int16 inputs ------------------------------------------
 *
 * The padded HWC input widened once to int16 (x16) and the weights widened at pack time
 * (wp16, 8 channels to a block): per kernel-row dword j of a position, one vpbroadcastq
 * loads its 4 u values as the int16 pairs (u0,u1),(u2,u3), and two vpmaddwd against the
 * block's weights (channels 0..3 and 4..7, 4 taps each) leave each channel's two pair sums
 * in adjacent lanes (vphaddd joins them at the end). 4 positions at a time (8
 * accumulators, the 2 weight vectors, the broadcast): what a 2x2 pool window needs, and
 * per dword of 4 positions 8 vpmaddwd against 4 broadcasts and 2 weight loads, so that
 * vpmaddwd, not the widening of bytes, sets the pace. */
#define NP16 4

/* Sums (bias' included) of one 8-channel block at 4 positions: s[n], lanes = channels. */
static inline __attribute__((always_inline)) void conv_sums16(const uint16_t *const *x, size_t rs, const int16_t *w,
                                                              int k, int nj, const int32_t *r, __m256i s[NP16]) {
    __m256i a[NP16][2];
#pragma GCC unroll 4
    for (int n = 0; n < NP16; n++) a[n][0] = a[n][1] = _mm256_setzero_si256();
    for (int ky = 0; ky < k; ky++) {
        const int16_t *wr = w + (size_t)ky * nj * 32;
        const size_t ro = (size_t)ky * rs;
        for (int j = 0; j < nj; j++) {
            const __m256i w0 = _mm256_loadu_si256((const __m256i *)(wr + 32 * (size_t)j));
            const __m256i w1 = _mm256_loadu_si256((const __m256i *)(wr + 32 * (size_t)j + 16));
#pragma GCC unroll 4
            for (int n = 0; n < NP16; n++) {
                int64_t q;
                memcpy(&q, x[n] + ro + 4 * (size_t)j, 8);
                const __m256i xv = _mm256_set1_epi64x(q);
                a[n][0] = _mm256_add_epi32(a[n][0], _mm256_madd_epi16(xv, w0));
                a[n][1] = _mm256_add_epi32(a[n][1], _mm256_madd_epi16(xv, w1));
            }
        }
    }
    const __m256i bias = _mm256_loadu_si256((const __m256i *)(r + QRT_RQ_BIAS));
#pragma GCC unroll 4
    for (int n = 0; n < NP16; n++)
        s[n] = _mm256_add_epi32(
            _mm256_permute4x64_epi64(_mm256_hadd_epi32(a[n][0], a[n][1]), _MM_SHUFFLE(3, 1, 2, 0)), bias);
}

/* n bytes at src -> uint16 at dst (16 at a time; reads and writes up to 15 past n: the
 * scratch has the slack). */
static void widen_u8(uint16_t *dst, const uint8_t *src, size_t n) {
    for (size_t i = 0; i < n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i), _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(src + i))));
}

/* pool: 0, or 2 for a fused 2x2 stride-2 max pool: the 4 positions are the pool's
 * window, and the max of their sums is requantized once (exact because requantization is
 * non-decreasing; the AVX-512 file has the argument). */
static void conv_dense16(int8_t *out, const int8_t *in, const qrt_packed_conv *pk, const qrt_conv_params *p,
                         uint8_t *scratch, int pool) {
    qrt_conv_scratch sl;
    qrt_conv_scratch_layout(p, &sl);
    const int G = p->groups, Cg = pk->Cg, OCg = pk->OCg, k = p->k, S = p->stride, nj = pk->nj, nob8 = pk->nob8;
    const int Wp = sl.Wp, OW = pool ? p->OW / 2 : p->OW, npos = pool ? (p->OH / 2) * OW : p->OH * p->OW;
    const size_t gplane = (size_t)sl.Hp * Wp * Cg, rs = (size_t)Wp * Cg, wblock = (size_t)k * nj * 32;
    const size_t ocs = (size_t)pk->ocs;
    uint8_t *ob = scratch + sl.ob_off;
    uint16_t *x16 = (uint16_t *)(void *)(scratch + sl.x16_off);
    const outq o = outq_make(p->z_out, p->act_min, p->act_max);
    for (int g = 0; g < G; g++) {
        uint8_t *xg = scratch + (size_t)g * gplane;
        fill_hwc(xg, Cg, in, g * Cg, Cg, p->H, p->W, p->pad, p->z_in);
        widen_u8(x16, xg, gplane);
        for (int b = 0; b < nob8; b++) {
            const int16_t *w = pk->wp16 + ((size_t)g * nob8 + b) * wblock;
            const int32_t *r = pk->rq + ((size_t)g * pk->nob + b / 2) * QRT_RQ_WORDS + (b % 2) * 8;
            uint8_t *dst = ob + (size_t)g * OCg + (size_t)b * 8;
            for (int p0 = 0; p0 < npos; p0 += pool ? 1 : NP16) {
                const uint16_t *x[NP16];
                for (int n = 0; n < NP16; n++) {
                    int oy, ox;
                    if (pool) oy = 2 * (p0 / OW) + n / 2, ox = 2 * (p0 % OW) + n % 2;
                    else {
                        const int pos = p0 + n < npos ? p0 + n : npos - 1;
                        oy = pos / OW, ox = pos % OW;
                    }
                    x[n] = x16 + ((size_t)oy * S * Wp + (size_t)ox * S) * Cg;
                }
                __m256i sum[NP16];
                conv_sums16(x, rs, w, k, nj, r, sum);
                if (pool)
                    _mm_storel_epi64((__m128i *)(dst + (size_t)p0 * ocs),
                                     requant(_mm256_max_epi32(_mm256_max_epi32(sum[0], sum[1]),
                                                              _mm256_max_epi32(sum[2], sum[3])), r, &o));
                else
                    for (int n = 0; n < NP16 && p0 + n < npos; n++)
                        _mm_storel_epi64((__m128i *)(dst + (size_t)(p0 + n) * ocs), requant(sum[n], r, &o));
            }
        }
    }
    transpose_u8((uint8_t *)out, (size_t)npos, ob, ocs, npos, p->OC, 0);
}

static void conv_pointwise(int8_t *out, const int8_t *in, const qrt_packed_conv *pk, const qrt_conv_params *p,
                           uint8_t *scratch);

/* ---- depthwise conv ------------------------------------------------------------------ */

#define DW_MAX_TAPS 49 /* the tap-pair kernel's k <= 7; larger kernels take the int32 one */

/* Tap pairs with vpmaddwd, 16 channels at a time: the bytes of taps a and b of 16
 * channels (two 16-byte loads from the HWC scratch) are interleaved by vpunpckl/hbw into
 * (u_a, u_b) pairs of channels 0..7 and 8..15, widened to int16, and vpmaddwd against
 * the int16 weight pairs [pair][Cp][2] leaves u_a w_a + u_b w_b per channel in int32:
 * exact (|u w| <= 255 * 127), and the int32 sums wrap to acc like the GEMV's. An odd
 * last tap pairs with itself against a zero weight. The 16 channels' accumulators stay
 * in registers over the taps; the weights (5 pairs for 3x3: 10 vectors) come from L1. */
/* The padded HWC scratch of a depthwise conv (channel stride Cp), from in as (C, H, W),
 * or, with hwc, as rows of C bytes per position (H*W of them): the layout the fused
 * separable block below leaves its output in. */
static void dw_fill(uint8_t *xb, size_t Cp, const int8_t *in, const qrt_conv_params *p, bool hwc) {
    if (!hwc) {
        fill_hwc(xb, (int)Cp, in, 0, p->C, p->H, p->W, p->pad, p->z_in);
        return;
    }
    const int C = p->C, H = p->H, W = p->W, P = p->pad, Wp = W + 2 * P;
    const uint8_t zu = (uint8_t)(p->z_in + 128);
    const __m128i flip = _mm_set1_epi8((char)0x80);
    hwc_border(xb, (int)Cp, H, W, P, zu);
    for (int y = 0; y < H; y++) {
        uint8_t *row = xb + (size_t)(y + P) * Wp * Cp;
        for (int x = 0; x < W; x++) {
            const uint8_t *s = (const uint8_t *)in + ((size_t)y * W + x) * C;
            uint8_t *d = row + (size_t)(P + x) * Cp;
            int c = 0;
            for (; c + 16 <= C; c += 16)
                _mm_storeu_si128((__m128i *)(d + c), _mm_xor_si128(_mm_loadu_si128((const __m128i *)(s + c)), flip));
            for (; c < C; c++) d[c] = (uint8_t)(s[c] ^ 0x80);
            for (; c < (int)Cp; c++) d[c] = zu; /* padding channels: any finite value (weights 0) */
        }
    }
}

/* out NULL: the result stays in the HWC output scratch (rows of Cp bytes), for
 * qrt_avx2_conv2d_dw_pw; in_hwc: in is HWC rows (dw_fill). */
static void conv_depthwise_pairs(int8_t *out, const int8_t *in, const qrt_packed_conv *pk,
                                 const qrt_conv_params *p, uint8_t *scratch, bool in_hwc) {
    qrt_conv_scratch sl;
    qrt_conv_scratch_layout(p, &sl);
    const int k = p->k, T = k * k, npair = (T + 1) / 2, S = p->stride, nob = pk->nob, Wp = sl.Wp, OW = p->OW,
              npos = p->OH * p->OW;
    const size_t Cp = (size_t)nob * 16;
    uint8_t *ob = scratch + sl.ob_off;
    const outq o = outq_make(p->z_out, p->act_min, p->act_max);
    size_t off[DW_MAX_TAPS + 1];
    for (int t = 0; t < T; t++) off[t] = ((size_t)(t / k) * Wp + (size_t)(t % k)) * Cp;
    off[T] = off[T - 1];
    dw_fill(scratch, Cp, in, p, in_hwc);
    for (int b = 0; b < nob; b++) {
        const int32_t *r = pk->rq + (size_t)b * QRT_RQ_WORDS;
        const int16_t *wp = pk->wdp + (size_t)b * 32;
        const __m256i b0 = _mm256_loadu_si256((const __m256i *)(r + QRT_RQ_BIAS));
        const __m256i b1 = _mm256_loadu_si256((const __m256i *)(r + QRT_RQ_BIAS + 8));
        for (int pos = 0; pos < npos; pos++) {
            const int oy = pos / OW, ox = pos % OW;
            const uint8_t *x = scratch + ((size_t)oy * S * Wp + (size_t)ox * S) * Cp + (size_t)b * 16;
            __m256i lo = b0, hi = b1;
            for (int q = 0; q < npair; q++) {
                const __m128i va = _mm_loadu_si128((const __m128i *)(x + off[2 * q]));
                const __m128i vb = _mm_loadu_si128((const __m128i *)(x + off[2 * q + 1]));
                const int16_t *wq = wp + (size_t)q * Cp * 2;
                lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_unpacklo_epi8(va, vb)),
                                                             _mm256_loadu_si256((const __m256i *)wq)));
                hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_cvtepu8_epi16(_mm_unpackhi_epi8(va, vb)),
                                                             _mm256_loadu_si256((const __m256i *)(wq + 16))));
            }
            store16(ob + (size_t)pos * Cp + (size_t)b * 16, lo, hi, r, &o);
        }
    }
    if (out) transpose_u8((uint8_t *)out, (size_t)npos, ob, Cp, npos, p->C, 0);
}

/* out NULL, in_hwc: as conv_depthwise_pairs. */
static void conv_depthwise(int8_t *out, const int8_t *in, const qrt_packed_conv *pk,
                           const qrt_conv_params *p, uint8_t *scratch, bool in_hwc) {
    if (p->k * p->k <= DW_MAX_TAPS) {
        conv_depthwise_pairs(out, in, pk, p, scratch, in_hwc);
        return;
    }
    qrt_conv_scratch sl;
    qrt_conv_scratch_layout(p, &sl);
    const int k = p->k, S = p->stride, nob = pk->nob, Wp = sl.Wp, OW = p->OW, npos = p->OH * p->OW;
    const size_t Cp = (size_t)nob * 16;
    uint8_t *ob = scratch + sl.ob_off;
    const outq o = outq_make(p->z_out, p->act_min, p->act_max);
    dw_fill(scratch, Cp, in, p, in_hwc);
    for (int b = 0; b < 2 * nob; b++) { /* 8 channels at a time */
        const int32_t *r = pk->rq + (size_t)(b / 2) * QRT_RQ_WORDS + (b % 2) * 8;
        const int32_t *wd = pk->wd + (size_t)b * 8;
        const __m256i bias = _mm256_loadu_si256((const __m256i *)(r + QRT_RQ_BIAS));
        for (int pos = 0; pos < npos; pos++) {
            const int oy = pos / OW, ox = pos % OW;
            const uint8_t *x = scratch + ((size_t)oy * S * Wp + (size_t)ox * S) * Cp + (size_t)b * 8;
            __m256i acc = bias;
            for (int ky = 0; ky < k; ky++) {
                const uint8_t *xr = x + (size_t)ky * Wp * Cp;
                const int32_t *wr = wd + (size_t)ky * k * Cp;
                for (int kx = 0; kx < k; kx++)
                    acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(
                        _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(xr + (size_t)kx * Cp))),
                        _mm256_loadu_si256((const __m256i *)(wr + (size_t)kx * Cp))));
            }
            _mm_storel_epi64((__m128i *)(ob + (size_t)pos * Cp + (size_t)b * 8), requant(acc, r, &o));
        }
    }
    if (out) transpose_u8((uint8_t *)out, (size_t)npos, ob, Cp, npos, p->C, 0);
}

/* ---- convs of a 1-channel input with wide rows -----------------------------------------
 *
 * When the input has one channel (C = 1, the first layer on grayscale images) and the
 * output rows are wide (OW >= 9), the lanes are 8 output positions of one channel (the
 * AVX-512 file's planar kernel, without VBMI), not 16 channels of one position: no
 * transposes and no HWC copy. (Depthwise convs, which the AVX-512 planar kernel also
 * takes, stay on the HWC tap-pair kernel here: with one output channel per plane the
 * padded copy and the requantization are not shared, and it measured slower.) The plane is copied once, padded and XORed to u = q + 128, into rows of at most
 * Wp + 32 bytes of the scratch (qrt_conv_scratch_layout reserves them). For a chunk of 8 outputs
 * of a row, kernel row ky and tap pair m (columns 2m, 2m + 1), one 16-byte load at the
 * chunk's first input column + 2m and one vpshufb put lane l's two bytes (l * D, l * D +
 * 1) side by side, D the lanes' spacing in input columns; vpmovzxbw widens them to the
 * int16 pair of the lane's dword, and vpmaddwd against the broadcast pair (w[2m],
 * w[2m + 1]) adds u0 w0 + u1 w1 to it: exact, as in the tap-pair kernel above. An odd k's
 * last pair has a zero weight. The windows serve every output channel of the plane.
 *
 * With a fused 2x2 max pool, lane l of four accumulators is the conv at output (2py + dy,
 * 2(x0 + l) + dx): D = 2S, and the max of the four is taken before the requantization
 * (exact: see conv_dense16's pool). D <= 2 keeps a lane's bytes in the 16-byte load. */

enum { PL_KMAX = 7, PL_NP = (PL_KMAX + 1) / 2, PL_JB = 32, PL_RB = 4 };

static int planar_ok(const qrt_conv_params *p, int pool) {
    const int ow = pool ? p->OW / 2 : p->OW;
    return p->C == 1 && p->k <= PL_KMAX && p->stride * (pool ? 2 : 1) <= 2 && ow >= 9;
}

/* acc of one channel (record r, lane l) -> 8 int8 in the low half. */
static inline __m128i requant_lane(__m256i acc, const int32_t *r, int l, const outq *o) {
    __m256i v = mbqm(acc, _mm256_set1_epi32(r[QRT_RQ_M0 + l]), _mm256_set1_epi32(r[QRT_RQ_LEFT + l]),
                     _mm256_set1_epi32(r[QRT_RQ_RIGHT + l]), _mm256_set1_epi32(r[QRT_RQ_MASK + l]),
                     _mm256_set1_epi32(r[QRT_RQ_HALF + l]));
    v = _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(v, o->lo), o->hi), o->z);
    const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    return _mm_packs_epi16(w, w);
}

/* The padded plane of `in` (H x W) with u = q + 128, rows of Wr bytes (a multiple of 16,
 * >= W + 2P + 16): pad columns and rows, and the slack the 16-byte window loads read past
 * the last column, hold z_in + 128. */
static void planar_fill(uint8_t *dst, size_t Wr, const int8_t *in, int H, int W, int P, int32_t z_in) {
    const __m128i zu = _mm_set1_epi8((char)(z_in ^ 0x80)), flip = _mm_set1_epi8((char)0x80);
    for (int y = 0; y < H + 2 * P; y++) {
        uint8_t *row = dst + (size_t)y * Wr;
        for (size_t x = 0; x < Wr; x += 16) _mm_storeu_si128((__m128i *)(row + x), zu);
        if (y < P || y >= P + H) continue;
        const uint8_t *sr = (const uint8_t *)in + (size_t)(y - P) * W;
        if (W >= 16) { /* 16-byte copies, the last one overlapping */
            for (int x = 0;; x += 16) {
                const int xs = x + 16 <= W ? x : W - 16;
                _mm_storeu_si128((__m128i *)(row + P + xs), _mm_xor_si128(_mm_loadu_si128((const __m128i *)(sr + xs)), flip));
                if (xs + 16 >= W) break;
            }
        } else
            for (int x = 0; x < W; x++) row[P + x] = (uint8_t)(sr[x] ^ 0x80);
    }
}

static inline __attribute__((always_inline)) void conv_planar_k(int8_t *out, const int8_t *in,
                                                                const qrt_packed_conv *pk,
                                                                const qrt_conv_params *p, uint8_t *scratch,
                                                                const int k, const int pool) {
    const int S = p->stride, H = p->H, W = p->W, P = p->pad, G = p->groups, OCg = p->OC / G;
    const int np = (k + 1) / 2, nq = pool ? 4 : 1, D = pool ? 2 * S : S;
    const int OH = pool ? p->OH / 2 : p->OH, OW = pool ? p->OW / 2 : p->OW;
    const size_t Wr = qrt_round_up((size_t)W + 2 * (size_t)P + 16, 16), plane = (size_t)H * W;
    const size_t oplane = (size_t)OH * OW, kk = (size_t)k * k;
    uint8_t idx[16];
    for (int l = 0; l < 8; l++) idx[2 * l] = (uint8_t)(l * D), idx[2 * l + 1] = (uint8_t)(l * D + 1);
    const __m128i shuf = _mm_loadu_si128((const __m128i *)idx);
    const outq o = outq_make(p->z_out, p->act_min, p->act_max);
    int32_t wpair[PL_JB][PL_KMAX * PL_NP]; /* a pass's weight pairs (int16, int16), zero past k */
    const int32_t *rec[PL_JB];
    int lane[PL_JB];
    __m256i win[PL_RB][4][PL_KMAX * PL_NP]; /* the windows of PL_RB chunks of a row */
    for (int g = 0; g < G; g++) {
        planar_fill(scratch, Wr, in + (size_t)g * plane, H, W, P, p->z_in);
        for (int j0 = 0; j0 < OCg; j0 += PL_JB) {
            const int nj = OCg - j0 < PL_JB ? OCg - j0 : PL_JB;
            for (int jj = 0; jj < nj; jj++) {
                const int j = j0 + jj, oc = g * OCg + j;
                rec[jj] = qrt_conv_record(pk, g, j, &lane[jj]);
                const int8_t *wo = pk->w + (size_t)oc * kk;
                for (int ky = 0; ky < k; ky++)
                    for (int m = 0; m < np; m++) {
                        const int16_t w0 = wo[ky * k + 2 * m], w1 = 2 * m + 1 < k ? wo[ky * k + 2 * m + 1] : 0;
                        wpair[jj][ky * np + m] = (int32_t)((uint32_t)(uint16_t)w0 | (uint32_t)(uint16_t)w1 << 16);
                    }
            }
            for (int oy = 0; oy < OH; oy++)
                for (int xb = 0; xb < OW; xb += 8 * PL_RB) { /* up to PL_RB chunks of 8 outputs */
                    const int nc = (OW - xb + 7) / 8 < PL_RB ? (OW - xb + 7) / 8 : PL_RB;
                    for (int c = 0; c < nc; c++)
#pragma GCC unroll 4
                        for (int q = 0; q < nq; q++) {
                            /* quarter q's conv output row and first column, in padded input coordinates */
                            const int x0 = xb + 8 * c < OW - 8 ? xb + 8 * c : OW - 8;
                            const int cy = pool ? 2 * oy + q / 2 : oy, cx0 = pool ? 2 * x0 + q % 2 : x0;
#pragma GCC unroll 7
                            for (int ky = 0; ky < k; ky++) {
                                const uint8_t *row = scratch + (size_t)(cy * S + ky) * Wr + (size_t)cx0 * S;
#pragma GCC unroll 4
                                for (int m = 0; m < np; m++)
                                    win[c][q][ky * np + m] = _mm256_cvtepu8_epi16(
                                        _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(row + 2 * m)), shuf));
                            }
                        }
                    for (int jj = 0; jj < nj; jj++) {
                        const int32_t *r = rec[jj];
                        const int l = lane[jj];
                        const __m256i bias = _mm256_set1_epi32(r[QRT_RQ_BIAS + l]);
                        __m256i wv[PL_KMAX * PL_NP] = {0};
#pragma GCC unroll 28
                        for (int t = 0; t < k * np; t++) wv[t] = _mm256_set1_epi32(wpair[jj][t]);
                        int8_t *dst = out + (size_t)(g * OCg + j0 + jj) * oplane + (size_t)oy * OW;
                        for (int c = 0; c < nc; c++) {
                            __m256i acc[4];
#pragma GCC unroll 4
                            for (int q = 0; q < nq; q++) {
                                __m256i a = bias;
#pragma GCC unroll 28
                                for (int t = 0; t < k * np; t++) a = _mm256_add_epi32(a, _mm256_madd_epi16(win[c][q][t], wv[t]));
                                acc[q] = a;
                            }
                            if (pool) acc[0] = _mm256_max_epi32(_mm256_max_epi32(acc[0], acc[1]), _mm256_max_epi32(acc[2], acc[3]));
                            const int x0 = xb + 8 * c < OW - 8 ? xb + 8 * c : OW - 8;
                            _mm_storel_epi64((__m128i *)(dst + x0), requant_lane(acc[0], r, l, &o));
                        }
                    }
                }
        }
    }
}

/* k = 3 (with and without the pool) compiled apart, with the loops unrolled. */
static void conv_planar(int8_t *out, const int8_t *in, const qrt_packed_conv *pk, const qrt_conv_params *p,
                        uint8_t *scratch, int pool) {
    if (p->k == 3) {
        if (pool) conv_planar_k(out, in, pk, p, scratch, 3, 2);
        else conv_planar_k(out, in, pk, p, scratch, 3, 0);
    } else if (pool)
        conv_planar_k(out, in, pk, p, scratch, p->k, 2);
    else
        conv_planar_k(out, in, pk, p, scratch, p->k, 0);
}

void qrt_avx2_conv2d(int8_t *out, const int8_t *in, const qrt_packed_conv *pk, const qrt_conv_params *p,
                     uint8_t *scratch) {
    if (planar_ok(p, 0)) conv_planar(out, in, pk, p, scratch, 0);
    else if (pk->depthwise) conv_depthwise(out, in, pk, p, scratch, false);
    else if (pk->wg) conv_pointwise(out, in, pk, p, scratch);
    else conv_dense16(out, in, pk, p, scratch, 0);
}

void qrt_avx2_conv2d_maxpool(int8_t *out, const int8_t *in, const qrt_packed_conv *pk,
                             const qrt_conv_params *p, uint8_t *scratch) {
    if (planar_ok(p, 2)) conv_planar(out, in, pk, p, scratch, 2);
    else conv_dense16(out, in, pk, p, scratch, 2);
}

/* ---- linear --------------------------------------------------------------------------- */

void qrt_avx2_linear(int8_t *out, const int8_t *in, const qrt_packed_linear *pk, const qrt_linear_params *p,
                     uint8_t *scratch) {
    const int nj = pk->nj, nob = pk->nob;
    xor_copy(scratch, (const uint8_t *)in, (size_t)p->F_in, 0x80);
    memset(scratch + p->F_in, 0, 4);
    const outq o = outq_make(p->z_out, p->act_min, p->act_max);
    for (int b = 0; b < nob; b++) {
        const int8_t *w = pk->wp + (size_t)b * nj * 64;
        const int32_t *r = pk->rq + (size_t)b * QRT_RQ_WORDS;
        __m256i a[4], c[4];
        for (int q = 0; q < 4; q++) a[q] = c[q] = _mm256_setzero_si256();
        int j = 0;
        for (; j + 2 <= nj; j += 2) {
            const __m256i x0 = bcast_u4(scratch + 4 * (size_t)j), x1 = bcast_u4(scratch + 4 * (size_t)j + 4);
#pragma GCC unroll 4
            for (int q = 0; q < 4; q++) {
                a[q] = _mm256_add_epi32(a[q], _mm256_madd_epi16(x0, w16(w + 64 * (size_t)j + 16 * q)));
                c[q] = _mm256_add_epi32(c[q], _mm256_madd_epi16(x1, w16(w + 64 * (size_t)j + 64 + 16 * q)));
            }
        }
        if (j < nj) {
            const __m256i x0 = bcast_u4(scratch + 4 * (size_t)j);
            for (int q = 0; q < 4; q++)
                a[q] = _mm256_add_epi32(a[q], _mm256_madd_epi16(x0, w16(w + 64 * (size_t)j + 16 * q)));
        }
        for (int q = 0; q < 4; q++) a[q] = _mm256_add_epi32(a[q], c[q]);
        __m256i lo, hi;
        join16(a, &lo, &hi);
        const __m128i v = _mm_unpacklo_epi64(
            requant(_mm256_add_epi32(lo, _mm256_loadu_si256((const __m256i *)(r + QRT_RQ_BIAS))), r, &o),
            requant(_mm256_add_epi32(hi, _mm256_loadu_si256((const __m256i *)(r + QRT_RQ_BIAS + 8))), r + 8, &o));
        const int n = p->F_out - 16 * b;
        if (n >= 16) _mm_storeu_si128((__m128i *)(out + 16 * b), v);
        else {
            int8_t buf[16];
            _mm_storeu_si128((__m128i *)buf, v);
            memcpy(out + 16 * b, buf, (size_t)n);
        }
    }
}

/* ---- linear over a batch: a GEMM ------------------------------------------------------- */

/* Samples per GEMM tile: 10 accumulators, 2 weight registers, the broadcast input and a
 * product: 14 of the 16 ymm registers. 6 samples (12 accumulators) measured 300k MLP
 * images/s per core when gcc kept all in registers, but one unrelated change made it
 * spill an accumulator (a store and reload per step: 200k); 5 leaves room (275-290k). */
#define GS 5

/* One tile: NS samples (rows x[0..NS)) x 16 outputs (the block's weights w, records r).
 * Per input pair kp: 16 weight bytes -> int16 (8 outputs x the pair) twice, each
 * sample's pair (u_2kp, u_2kp+1) broadcast as one dword, 2 vpmaddwd per sample: lane l
 * of acc[t][h] gains u_2kp w[8h+l][2kp] + u_2kp+1 w[8h+l][2kp+1], exact in int32 (the
 * products are at most 255 * 127), the sums wrap like the portable int32 sum and end at
 * acc (simd.c; bias' is added last). */
static inline __attribute__((always_inline)) void gemm_tile(const int NS, int8_t *const *y, const uint16_t *const *x,
                                                            int nkp, const int8_t *w, const int32_t *r,
                                                            const outq *o, int nout) {
    __m256i acc[GS][2];
#pragma GCC unroll 5
    for (int t = 0; t < NS; t++) acc[t][0] = acc[t][1] = _mm256_setzero_si256();
    for (int kp = 0; kp < nkp; kp++) {
        const __m256i w0 = w16(w + 32 * (size_t)kp), w1 = w16(w + 32 * (size_t)kp + 16);
#pragma GCC unroll 5
        for (int t = 0; t < NS; t++) {
            const __m256i xv = _mm256_set1_epi32(ld32(x[t] + 2 * (size_t)kp));
            acc[t][0] = _mm256_add_epi32(acc[t][0], _mm256_madd_epi16(xv, w0));
            acc[t][1] = _mm256_add_epi32(acc[t][1], _mm256_madd_epi16(xv, w1));
            /* An empty asm that "changes" this sample's accumulators: it keeps each
             * sample's load, products and sums together, so that gcc does not load all
             * the broadcasts first and spill accumulators to the stack (measured: 12%). */
            __asm__ volatile("" : "+x"(acc[t][0]), "+x"(acc[t][1]));
        }
    }
    const __m256i b0 = _mm256_loadu_si256((const __m256i *)(r + QRT_RQ_BIAS));
    const __m256i b1 = _mm256_loadu_si256((const __m256i *)(r + QRT_RQ_BIAS + 8));
#pragma GCC unroll 5
    for (int t = 0; t < NS; t++) {
        const __m128i v = _mm_unpacklo_epi64(requant(_mm256_add_epi32(acc[t][0], b0), r, o),
                                             requant(_mm256_add_epi32(acc[t][1], b1), r + 8, o));
        if (nout >= 16) _mm_storeu_si128((__m128i *)y[t], v);
        else {
            int8_t buf[16];
            _mm_storeu_si128((__m128i *)buf, v);
            memcpy(y[t], buf, (size_t)nout);
        }
    }
}

/* out[s] = linear(in[s]) for s < n. The inputs are first widened once into the scratch
 * as int16 u = q + 128 (rows of qrt_linear_batch_row bytes, zero past F_in, so an odd
 * F_in's last pair reads u = 0 against a zero weight). Loops: block of 16 outputs
 * outside (its F_in * 16 weight bytes stay in L1 across the batch), tiles of GS samples
 * inside; a last partial tile runs a narrower instance of the same code. */
/* n rows of F bytes at src (stride ss), each XORed with x, to int16 rows of `row` bytes
 * at dst (32-byte aligned), zero past F up to the next multiple of 16. */
static void widen_rows(uint8_t *dst, size_t row, const uint8_t *src, size_t ss, int n, int F, uint8_t x) {
    const __m128i vx = _mm_set1_epi8((char)x);
    for (int s = 0; s < n; s++) {
        const uint8_t *q = src + (size_t)s * ss;
        uint8_t *d = dst + (size_t)s * row;
        int i = 0;
        for (; i + 16 <= F; i += 16)
            _mm256_store_si256((__m256i *)(d + 2 * (size_t)i),
                               _mm256_cvtepu8_epi16(_mm_xor_si128(_mm_loadu_si128((const __m128i *)(q + i)), vx)));
        if (i < F) {
            uint8_t buf[16] = {0};
            for (int k = 0; k < F - i; k++) buf[k] = (uint8_t)(q[i + k] ^ x);
            _mm256_store_si256((__m256i *)(d + 2 * (size_t)i), _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)buf)));
        }
    }
}

/* The GEMM over n int16 rows u (row bytes apart) -> out rows (out_stride apart), F_out
 * outputs, weights wg [nob][nkp][16][2], records rq. */
static void gemm_rows(int8_t *out, size_t out_stride, const uint8_t *u, size_t row, int n, int nkp, int nob,
                      const int8_t *wg, const int32_t *rq, int F_out, const outq *o) {
    /* o stays in memory (read after the int8 stores of each tile): held in registers
     * across the loops it pushed an accumulator onto the stack (measured: MLP 300k ->
     * 208k images/s per core) */
    for (int b = 0; b < nob; b++) {
        const int8_t *w = wg + (size_t)b * nkp * 32;
        const int32_t *r = rq + (size_t)b * QRT_RQ_WORDS;
        const int nout = F_out - 16 * b;
        for (int s0 = 0; s0 < n; s0 += GS) {
            const int ns = n - s0 < GS ? n - s0 : GS;
            const uint16_t *x[GS];
            int8_t *y[GS];
            for (int t = 0; t < ns; t++) {
                x[t] = (const uint16_t *)(const void *)(u + (size_t)(s0 + t) * row);
                y[t] = out + (size_t)(s0 + t) * out_stride + 16 * (size_t)b;
            }
            switch (ns) {
            case 5: gemm_tile(5, y, x, nkp, w, r, o, nout); break;
            case 4: gemm_tile(4, y, x, nkp, w, r, o, nout); break;
            case 3: gemm_tile(3, y, x, nkp, w, r, o, nout); break;
            case 2: gemm_tile(2, y, x, nkp, w, r, o, nout); break;
            default: gemm_tile(1, y, x, nkp, w, r, o, nout); break;
            }
        }
    }
}

void qrt_avx2_linear_batch(int8_t *out, size_t out_stride, const int8_t *in, size_t in_stride, int n,
                           const qrt_packed_linear *pk, const qrt_linear_params *p, uint8_t *scratch) {
    const size_t row = qrt_linear_batch_row(p);
    widen_rows(scratch, row, (const uint8_t *)in, in_stride, n, p->F_in, 0x80);
    const outq o = outq_make(p->z_out, p->act_min, p->act_max);
    gemm_rows(out, out_stride, scratch, row, n, pk->nkp, pk->nob, pk->wg, pk->rq, p->F_out, &o);
}

/* The pointwise GEMM from the int16 rows u16 (u = q + 128, one row per position) into
 * the HWC output scratch ob, then to out as (C, H, W), or with out_hwc as rows of OC
 * bytes per position (for the next separable block's dw_fill). */
static void pointwise_gemm(int8_t *out, const uint8_t *u16, const qrt_packed_conv *pk, const qrt_conv_params *p,
                           uint8_t *ob, bool out_hwc) {
    const int npos = p->H * p->W;
    const size_t row = qrt_round_up((size_t)p->C, 16) * 2;
    const outq o = outq_make(p->z_out, p->act_min, p->act_max);
    gemm_rows((int8_t *)ob, (size_t)pk->ocs, u16, row, npos, pk->nkp, pk->nob, pk->wg, pk->rq, p->OC, &o);
    if (!out_hwc) transpose_u8((uint8_t *)out, (size_t)npos, ob, (size_t)pk->ocs, npos, p->OC, 0);
    else
        for (int q = 0; q < npos; q++) memcpy(out + (size_t)q * p->OC, ob + (size_t)q * pk->ocs, (size_t)p->OC);
}

/* A pointwise conv (1x1, stride 1, pad 0, one group) is the GEMM with positions as
 * samples: the input goes to HWC bytes u (the 16x16 transposes), then to int16 rows,
 * the GEMM writes the HWC output scratch, transposed back to (C, H, W). */
static void conv_pointwise(int8_t *out, const int8_t *in, const qrt_packed_conv *pk, const qrt_conv_params *p,
                           uint8_t *scratch) {
    qrt_conv_scratch sl;
    qrt_conv_scratch_layout(p, &sl);
    const int npos = p->H * p->W;
    const size_t row = qrt_round_up((size_t)p->C, 16) * 2;
    uint8_t *u16 = scratch + sl.u16_off;
    transpose_u8(scratch, (size_t)p->C, (const uint8_t *)in, (size_t)npos, p->C, npos, 0x80);
    widen_rows(u16, row, scratch, (size_t)p->C, npos, p->C, 0);
    pointwise_gemm(out, u16, pk, p, scratch + sl.ob_off, false);
}

/* A depthwise conv whose output only a pointwise conv reads, in one call: the depthwise
 * result stays in its HWC scratch (q bytes, rows of Cp), the pointwise widens those rows
 * to u = q + 128 int16 directly, and only its own output is transposed back to (C, H, W):
 * two 16x16-tile transposes fewer than the two kernels apart, the same bytes. The
 * pointwise part uses the scratch after the depthwise's (qrt_dw_pw_scratch_size).
 * in_hwc / out_hwc: the block's input / output are HWC rows of C bytes instead of
 * (C, H, W), for a value passed from one such block to the next (run.c). */
void qrt_avx2_conv2d_dw_pw(int8_t *out, const int8_t *in, const qrt_packed_conv *pk_dw,
                           const qrt_conv_params *p_dw, const qrt_packed_conv *pk_pw,
                           const qrt_conv_params *p_pw, uint8_t *scratch, bool in_hwc, bool out_hwc) {
    qrt_conv_scratch sd, sp;
    qrt_conv_scratch_layout(p_dw, &sd);
    qrt_conv_scratch_layout(p_pw, &sp);
    conv_depthwise(NULL, in, pk_dw, p_dw, scratch, in_hwc);
    uint8_t *pw = scratch + qrt_round_up(sd.total, QRT_SIMD_ALIGN);
    const size_t Cp = qrt_round_up((size_t)p_dw->C, 16), row = qrt_round_up((size_t)p_pw->C, 16) * 2;
    widen_rows(pw + sp.u16_off, row, scratch + sd.ob_off, Cp, p_pw->H * p_pw->W, p_pw->C, 0x80);
    pointwise_gemm(out, pw + sp.u16_off, pk_pw, p_pw, pw + sp.ob_off, out_hwc);
}

/* ---- max pool 2x2 stride 2, elementwise ---------------------------------------------- */

int qrt_avx2_maxpool(int8_t *out, const int8_t *in, const qrt_pool_params *p) {
    if (p->k != 2 || p->stride != 2 || p->pad != 0) return 0;
    const int H = p->H, W = p->W, OH = p->OH, OW = p->OW;
    const __m256i lowbytes = _mm256_set1_epi16(0x00FF);
    for (int c = 0; c < p->C; c++)
        for (int oy = 0; oy < OH; oy++) {
            const int8_t *r0 = in + ((size_t)c * H + 2 * oy) * W, *r1 = r0 + W;
            int8_t *y = out + ((size_t)c * OH + oy) * OW;
            int ox = 0;
            for (; ox + 16 <= OW; ox += 16) {
                const __m256i m = _mm256_max_epi8(_mm256_loadu_si256((const __m256i *)(r0 + 2 * ox)),
                                                  _mm256_loadu_si256((const __m256i *)(r1 + 2 * ox)));
                /* byte 2i of each word: max(x[2i], x[2i+1]); packus of 0..255 keeps the bits */
                const __m256i m2 = _mm256_and_si256(_mm256_max_epi8(m, _mm256_srli_epi16(m, 8)), lowbytes);
                const __m256i pk = _mm256_permute4x64_epi64(_mm256_packus_epi16(m2, m2), _MM_SHUFFLE(3, 1, 2, 0));
                _mm_storeu_si128((__m128i *)(y + ox), _mm256_castsi256_si128(pk));
            }
            for (; ox < OW; ox++) {
                int8_t a = r0[2 * ox] > r0[2 * ox + 1] ? r0[2 * ox] : r0[2 * ox + 1];
                int8_t b = r1[2 * ox] > r1[2 * ox + 1] ? r1[2 * ox] : r1[2 * ox + 1];
                y[ox] = a > b ? a : b;
            }
        }
    return 1;
}

void qrt_avx2_add(int8_t *out, const int8_t *a, const int8_t *b, size_t n, const qrt_add_params *p) {
#define SHIFT_VECS(s, M)                                                                                \
    const __m256i M##_m0 = _mm256_set1_epi32(p->mult_##s),                                            \
                  M##_l = _mm256_set1_epi32(p->shift_##s > 0 ? p->shift_##s : 0),                     \
                  M##_r = _mm256_set1_epi32(p->shift_##s > 0 ? 0 : -p->shift_##s),                    \
                  M##_mask = _mm256_set1_epi32((int32_t)((1u << (p->shift_##s > 0 ? 0 : -p->shift_##s)) - 1u)), \
                  M##_half = _mm256_srli_epi32(M##_mask, 1)
    SHIFT_VECS(a, A);
    SHIFT_VECS(b, B);
    SHIFT_VECS(out, O);
#undef SHIFT_VECS
    const __m256i za = _mm256_set1_epi32(p->z_a), zb = _mm256_set1_epi32(p->z_b);
    const outq o = outq_make(p->z_out, p->act_min, p->act_max);
    for (size_t i = 0; i < n; i += 8) {
        int8_t ba[8] = {0}, bb[8] = {0}, bo[8];
        const size_t m = n - i < 8 ? n - i : 8;
        memcpy(ba, a + i, m);
        memcpy(bb, b + i, m);
        const __m256i xa = _mm256_slli_epi32(_mm256_sub_epi32(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)ba)), za), QRT_ADD_LEFT_SHIFT);
        const __m256i xb = _mm256_slli_epi32(_mm256_sub_epi32(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)bb)), zb), QRT_ADD_LEFT_SHIFT);
        const __m256i s = _mm256_add_epi32(mbqm(xa, A_m0, A_l, A_r, A_mask, A_half),
                                           mbqm(xb, B_m0, B_l, B_r, B_mask, B_half));
        __m256i v = mbqm(s, O_m0, O_l, O_r, O_mask, O_half);
        v = _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(v, o.lo), o.hi), o.z);
        const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        _mm_storel_epi64((__m128i *)bo, _mm_packs_epi16(w, w));
        memcpy(out + i, bo, m);
    }
}

void qrt_avx2_input(int8_t *out, const uint8_t *pixels, size_t n) {
    xor_copy((uint8_t *)out, pixels, n, 0x80);
}

/* Global average pool: per channel, the spec's centred mean (int8-spec.md, "Other ops"),
 * q_out = z + sign(d) floor((2|d| + n) / (2n)) with d = sum (q - z) and n = HW, computed
 * exactly as the portable kernel does once d is known:
 *
 *   1. u = q ^ 0x80 is q + 128 as an unsigned byte, in [0, 255] (two's complement: flipping
 *      the sign bit adds 128 modulo 256, and q + 128 is already in [0, 255]).
 *   2. vpsadbw against zero sums |u - 0| = u over each 8 bytes into a 64-bit lane, exactly;
 *      the lanes are added in 64 bits, so su = sum u = sum (q + 128) with no wrap
 *      (su <= 255 HW < 2^31).
 *   3. d = su - (128 + z) HW = sum (q + 128) - sum (128 + z) = sum (q - z), in int64; the
 *      loader's bound HW * 255 <= 2^31 - 1 and |q - z| <= 255 put d in int32.
 *   4. qrt_centred_mean_s8(d, HW, z) is the formula itself (kernels.c): the same function,
 *      on the same integer d, as qrt_global_avgpool_s8, so the byte is the same.
 *
 * The AVX-512 path uses this one too: the reduction is memory-bound at these sizes. */
void qrt_avx2_global_avgpool(int8_t *out, const int8_t *in, int C, int HW, int32_t z) {
    const __m256i flip = _mm256_set1_epi8((char)0x80), zero = _mm256_setzero_si256();
    for (int c = 0; c < C; c++) {
        const uint8_t *x = (const uint8_t *)in + (size_t)c * HW;
        __m256i acc = zero;
        int i = 0;
        for (; i + 32 <= HW; i += 32) {
            const __m256i u = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(x + i)), flip);
            acc = _mm256_add_epi64(acc, _mm256_sad_epu8(u, zero));
        }
        int64_t lanes[4];
        _mm256_storeu_si256((__m256i *)lanes, acc);
        int64_t su = lanes[0] + lanes[1] + lanes[2] + lanes[3];
        for (; i < HW; i++) su += (uint8_t)(x[i] ^ 0x80u);
        const int64_t d = su - (128 + (int64_t)z) * HW;
        out[c] = qrt_centred_mean_s8((int32_t)d, HW, z);
    }
}
