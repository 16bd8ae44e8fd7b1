/* simd_vbmi.c - the lookup table (kernels.h's qrt_lut_s8) with AVX-512 VBMI, compiled with
 * -mavx512f -mavx512bw -mavx512vbmi and called only on the AVX-512 path of a CPU that has
 * VBMI (simd.c checks it apart: AVX-512 VNNI CPUs without VBMI exist, Cascade Lake).
 * A file of its own so that no other kernel can pick up VBMI instructions.
 *
 * The 256 entries sit in four zmm registers t0..t3 (entries 0-63, 64-127, 128-191,
 * 192-255). The entry of q is T[q + 128]; as a byte, q + 128 is q ^ 0x80, so:
 *   q < 0  (sign bit set):   q + 128 = q & 0x7F, an index into t0:t1;
 *   q >= 0 (sign bit clear): q + 128 = 128 + (q & 0x7F), the same index into t2:t3.
 * vpermt2b (_mm512_permutex2var_epi8) looks up 64 bytes in a 128-byte table by the low 7
 * bits of each index byte, so one lookup in t0:t1 and one in t2:t3, blended by the sign
 * bit (vpmovb2m), give T[q + 128] for 64 values: the portable loop's bytes exactly.
 * Measured on the cnn_act example's 37,824 table bytes per image: 1.3-1.6 us against
 * 11-14 us for the portable loop (docs/runtime-simd.md).
 */
#include <immintrin.h>

#include "simd_impl.h"

void qrt_vbmi_lut(int8_t *out, const int8_t *in, const int8_t table[256], size_t n) {
    const __m512i t0 = _mm512_loadu_si512((const void *)table), t1 = _mm512_loadu_si512((const void *)(table + 64));
    const __m512i t2 = _mm512_loadu_si512((const void *)(table + 128)),
                  t3 = _mm512_loadu_si512((const void *)(table + 192));
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        const __m512i q = _mm512_loadu_si512((const void *)(in + i));
        const __mmask64 neg = _mm512_movepi8_mask(q);
        const __m512i lo = _mm512_permutex2var_epi8(t0, q, t1), hi = _mm512_permutex2var_epi8(t2, q, t3);
        _mm512_storeu_si512((void *)(out + i), _mm512_mask_blend_epi8(neg, hi, lo));
    }
    for (; i < n; i++) out[i] = table[in[i] + 128];
}
