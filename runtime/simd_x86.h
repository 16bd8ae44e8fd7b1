/* simd_x86.h - helpers shared by simd_avx2.c and simd_avx512.c (each includes it after
 * setting its target with #pragma GCC target, so the same source compiles to VEX or
 * EVEX code): unaligned scalar loads, the 16x16 byte transpose that moves activations
 * between the runtime's (C, H, W) and the kernels' HWC scratch, and the HWC fill of a
 * padded input plane. SSE2-level intrinsics only. */
#ifndef QRT_SIMD_X86_H
#define QRT_SIMD_X86_H

#include <immintrin.h>
#include <string.h>

#include "simd_impl.h"

static inline int32_t ld32(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* In-register transpose of 16 rows of 16 bytes, XORed with x. */
static inline void tr16_regs(__m128i r[16]) {
    __m128i a[16], b[16];
    for (int i = 0; i < 8; i++) {
        a[2 * i] = _mm_unpacklo_epi8(r[2 * i], r[2 * i + 1]);
        a[2 * i + 1] = _mm_unpackhi_epi8(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        b[4 * i + 0] = _mm_unpacklo_epi16(a[4 * i + 0], a[4 * i + 2]);
        b[4 * i + 1] = _mm_unpackhi_epi16(a[4 * i + 0], a[4 * i + 2]);
        b[4 * i + 2] = _mm_unpacklo_epi16(a[4 * i + 1], a[4 * i + 3]);
        b[4 * i + 3] = _mm_unpackhi_epi16(a[4 * i + 1], a[4 * i + 3]);
    }
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++) {
            a[8 * i + 2 * j] = _mm_unpacklo_epi32(b[8 * i + j], b[8 * i + 4 + j]);
            a[8 * i + 2 * j + 1] = _mm_unpackhi_epi32(b[8 * i + j], b[8 * i + 4 + j]);
        }
    for (int j = 0; j < 8; j++) {
        r[2 * j] = _mm_unpacklo_epi64(a[j], a[8 + j]);
        r[2 * j + 1] = _mm_unpackhi_epi64(a[j], a[8 + j]);
    }
}

/* dst[c * ds + r] = src[r * ss + c] ^ x for r < rows, c < cols: 16x16 tiles in
 * registers, partial tiles through a small buffer. */
static inline void transpose_u8(uint8_t *dst, size_t ds, const uint8_t *src, size_t ss, int rows,
                                int cols, uint8_t x) {
    const __m128i vx = _mm_set1_epi8((char)x);
    for (int r0 = 0; r0 < rows; r0 += 16)
        for (int c0 = 0; c0 < cols; c0 += 16) {
            const int nr = rows - r0 < 16 ? rows - r0 : 16, nc = cols - c0 < 16 ? cols - c0 : 16;
            __m128i t[16];
            const uint8_t *s = src + (size_t)r0 * ss + c0;
            uint8_t *d = dst + (size_t)c0 * ds + r0;
            if (nr == 16 && nc == 16) {
                for (int i = 0; i < 16; i++) t[i] = _mm_loadu_si128((const __m128i *)(s + i * ss));
                tr16_regs(t);
                for (int i = 0; i < 16; i++)
                    _mm_storeu_si128((__m128i *)(d + i * ds), _mm_xor_si128(t[i], vx));
            } else {
                uint8_t buf[16][16];
                memset(buf, 0, sizeof buf);
                for (int i = 0; i < nr; i++) memcpy(buf[i], s + i * ss, (size_t)nc);
                for (int i = 0; i < 16; i++) t[i] = _mm_loadu_si128((const __m128i *)buf[i]);
                tr16_regs(t);
                for (int i = 0; i < nc; i++) {
                    _mm_storeu_si128((__m128i *)buf[i], _mm_xor_si128(t[i], vx));
                    memcpy(d + i * ds, buf[i], (size_t)nr);
                }
            }
        }
}

/* dst[i] = src[i] ^ x (int8 q -> uint8 u = q + 128 with x = 0x80). */
static inline void xor_copy(uint8_t *dst, const uint8_t *src, size_t n, uint8_t x) {
    const __m128i vx = _mm_set1_epi8((char)x);
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm_storeu_si128((__m128i *)(dst + i), _mm_xor_si128(_mm_loadu_si128((const __m128i *)(src + i)), vx));
    for (; i < n; i++) dst[i] = src[i] ^ x;
}

/* The padding of a padded HWC plane (H x W inside, pad P, cs bytes per position): its
 * border rows and columns set to zu; the interior is the caller's. */
static inline void hwc_border(uint8_t *xb, int cs, int H, int W, int P, uint8_t zu) {
    const int Wp = W + 2 * P, Hp = H + 2 * P;
    memset(xb, zu, (size_t)P * Wp * cs);
    memset(xb + (size_t)(P + H) * Wp * cs, zu, (size_t)(Hp - P - H) * Wp * cs);
    for (int y = 0; y < H; y++) {
        uint8_t *row = xb + (size_t)(y + P) * Wp * cs;
        memset(row, zu, (size_t)P * cs);
        memset(row + (size_t)(P + W) * cs, zu, (size_t)P * cs);
    }
}

/* The padded HWC plane of channels [c0, c0 + n) of in (C, H, W): xb[(y*Wp + x)*n + c]
 * = u = q + 128 inside, z_in + 128 in the padding (so that padding contributes 0).
 * cs is the channel stride of xb (n, or Cp for depthwise). */
static inline void fill_hwc(uint8_t *xb, int cs, const int8_t *in, int c0, int n, int H, int W,
                            int P, int32_t z_in) {
    const int Wp = W + 2 * P;
    const size_t plane = (size_t)H * W;
    const uint8_t zu = (uint8_t)(z_in + 128);
    hwc_border(xb, cs, H, W, P, zu);
    for (int y = 0; y < H; y++) {
        uint8_t *row = xb + (size_t)(y + P) * Wp * cs;
        if (cs != n) /* depthwise padding channels: any finite value (weights are 0) */
            for (int x = 0; x < W; x++) memset(row + (size_t)(P + x) * cs + n, zu, (size_t)(cs - n));
        if (n == 1 && cs == 1)
            xor_copy(row + (size_t)P, (const uint8_t *)in + (size_t)c0 * plane + (size_t)y * W, (size_t)W, 0x80);
    }
    if (n == 1 && cs == 1) return;
    /* The interior: the (n, H*W) block of channels transposed in 16x16 tiles that run
     * along the flattened plane, so small planes (7x7, 14x14) still fill whole tiles; each
     * transposed row (one position's 16 channels) goes to that position's padded place. */
    const uint8_t *src = (const uint8_t *)in + (size_t)c0 * plane;
    const __m128i vx = _mm_set1_epi8((char)0x80);
    for (int r0 = 0; r0 < n; r0 += 16) {
        const int nr = n - r0 < 16 ? n - r0 : 16;
        for (size_t q0 = 0; q0 < plane; q0 += 16) {
            const int nq = plane - q0 < 16 ? (int)(plane - q0) : 16;
            __m128i t[16];
            const uint8_t *s = src + (size_t)r0 * plane + q0;
            if (nr == 16 && nq == 16) {
                for (int i = 0; i < 16; i++) t[i] = _mm_loadu_si128((const __m128i *)(s + i * plane));
            } else {
                uint8_t buf[16][16];
                memset(buf, 0, sizeof buf);
                for (int i = 0; i < nr; i++) memcpy(buf[i], s + i * plane, (size_t)nq);
                for (int i = 0; i < 16; i++) t[i] = _mm_loadu_si128((const __m128i *)buf[i]);
            }
            tr16_regs(t);
            for (int i = 0; i < nq; i++) {
                const size_t q = q0 + (size_t)i, y = q / (size_t)W, x = q % (size_t)W;
                uint8_t *d = xb + ((y + (size_t)P) * (size_t)Wp + x + (size_t)P) * (size_t)cs + r0;
                const __m128i v = _mm_xor_si128(t[i], vx);
                if (nr == 16) {
                    _mm_storeu_si128((__m128i *)d, v);
                } else {
                    uint8_t b16[16];
                    _mm_storeu_si128((__m128i *)b16, v);
                    memcpy(d, b16, (size_t)nr);
                }
            }
        }
    }
}

#endif
