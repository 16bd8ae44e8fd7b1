/* kernels.c - the int8 kernels (kernels.h): direct loops, no im2col, no scratch.
 *
 * Convolution walks output channel, output row, output column, then input channel and
 * the kernel window; the window is clipped to the input once per output position, so the
 * innermost loop runs over contiguous input and weight bytes with no bounds test and the
 * padding (which reads z_in and so contributes (z_in - z_in) * w = 0) is simply skipped.
 * Requantization is the spec's MultiplyByQuantizedMultiplier (fixedpoint.h).
 */
#include "kernels.h"

#include "fixedpoint.h"

/* acc -> q_out: MBQM, add the zero point, clamp. MBQM's result is at most |acc| *
 * 2^max(shift,0) in magnitude (M0 < 2^31), which the loader keeps within int32, so adding a
 * zero point in [-128, 127] could only overflow for results beyond +-(2^31 - 129); those
 * are clamped anyway, so the sum is done in int64. */
static inline int8_t requantize(int32_t acc, int32_t M0, int32_t shift, int32_t z_out,
                                int32_t act_min, int32_t act_max) {
    int64_t v = (int64_t)qrt_multiply_by_quantized_multiplier(acc, M0, (int)shift) + z_out;
    return (int8_t)(v < act_min ? act_min : v > act_max ? act_max : v);
}

int32_t qrt_div_round_s32(int32_t x, int32_t n) {
    /* Half away from zero: add half the divisor to |x| and truncate. For odd n there is
     * no tie and n / 2 = (n - 1) / 2 rounds the remainders (n-1)/2 down and (n+1)/2 up. */
    return x >= 0 ? (x + n / 2) / n : -((-x + n / 2) / n);
}

/* The spec's average (int8-spec.md, "Other ops"), literally:
 *     q_out = z + sign(d) * floor((2|d| + n) / (2n)),
 * that is d / n rounded half away from zero, put back on the zero point. In int64: |d|
 * may be up to 255 n (the loader's bound n * 255 <= 2^31 - 1 keeps d itself in int32),
 * and 2|d| + n would not fit in int32. Both operands are >= 0, so C's truncating
 * division is the floor. The result needs no clamp: d / n is the mean of n values of
 * q - z in [-128 - z, 127 - z] (padding adds 0, also in that range), so its rounding
 * lies in that range too, and z plus it in [-128, 127]. */
int8_t qrt_centred_mean_s8(int32_t d, int32_t n, int32_t z) {
    const int64_t a = d < 0 ? -(int64_t)d : d;
    const int64_t r = (2 * a + n) / (2 * (int64_t)n);
    return (int8_t)(z + (d < 0 ? -r : r));
}

/* in is (C, H, W), w is (OC, C/groups, k, k), out is (OC, OH, OW). */
void qrt_conv2d_s8(int8_t *out, const int8_t *in, const int8_t *w, const int32_t *bias,
                   const int32_t *mult, const int32_t *shift, const qrt_conv_params *p) {
    const int H = p->H, W = p->W, k = p->k, S = p->stride, P = p->pad;
    const int Cg = p->C / p->groups, OCg = p->OC / p->groups;
    const int32_t z_in = p->z_in;
    const size_t plane = (size_t)H * W, K = (size_t)Cg * k * k;
    if (k == 1 && P == 0) {
        /* A 1x1 conv (pointwise): no window to clip, one product per input channel. The
         * same sum in the same order as below, without the per-position window set-up,
         * which costs more than the one product on a microcontroller. */
        for (int oc = 0; oc < p->OC; oc++) {
            const int8_t *wc = w + (size_t)oc * K;
            const int8_t *ing = in + (size_t)(oc / OCg) * Cg * plane;
            int8_t *outc = out + (size_t)oc * p->OH * p->OW;
            for (int oy = 0; oy < p->OH; oy++)
                for (int ox = 0; ox < p->OW; ox++) {
                    const int8_t *x = ing + (size_t)oy * S * W + (size_t)ox * S;
                    int32_t acc = bias[oc];
                    for (int ic = 0; ic < Cg; ic++) acc += ((int32_t)x[(size_t)ic * plane] - z_in) * wc[ic];
                    outc[oy * p->OW + ox] =
                        requantize(acc, mult[oc], shift[oc], p->z_out, p->act_min, p->act_max);
                }
        }
        return;
    }
    for (int oc = 0; oc < p->OC; oc++) {
        const int8_t *wc = w + (size_t)oc * K;
        const int8_t *ing = in + (size_t)(oc / OCg) * Cg * plane;
        int8_t *outc = out + (size_t)oc * p->OH * p->OW;
        for (int oy = 0; oy < p->OH; oy++) {
            const int iy0 = oy * S - P;                      /* window top, may be < 0 */
            const int ky0 = iy0 < 0 ? -iy0 : 0;              /* first row inside */
            const int ky1 = iy0 + k > H ? H - iy0 : k;       /* one past the last */
            for (int ox = 0; ox < p->OW; ox++) {
                const int ix0 = ox * S - P;
                const int kx0 = ix0 < 0 ? -ix0 : 0;
                const int kx1 = ix0 + k > W ? W - ix0 : k;
                int32_t acc = bias[oc];
                if (k == 3 && kx0 == 0 && kx1 == 3) {
                    /* 3x3, the window's rows whole: each row unrolled (the same products,
                     * summed in another order: exact, the loader bounds every partial sum) */
                    for (int ic = 0; ic < Cg; ic++) {
                        const int8_t *x = ing + (size_t)ic * plane;
                        const int8_t *wk = wc + (size_t)ic * 9;
                        for (int ky = ky0; ky < ky1; ky++) {
                            const int8_t *xr = x + (ptrdiff_t)(iy0 + ky) * W + ix0, *wr = wk + ky * 3;
                            acc += ((int32_t)xr[0] - z_in) * wr[0] + ((int32_t)xr[1] - z_in) * wr[1] +
                                   ((int32_t)xr[2] - z_in) * wr[2];
                        }
                    }
                    outc[oy * p->OW + ox] =
                        requantize(acc, mult[oc], shift[oc], p->z_out, p->act_min, p->act_max);
                    continue;
                }
                for (int ic = 0; ic < Cg; ic++) {
                    const int8_t *x = ing + (size_t)ic * plane;
                    const int8_t *wk = wc + (size_t)ic * k * k;
                    for (int ky = ky0; ky < ky1; ky++) {
                        /* base + kx >= 0 for kx >= kx0: the index of input (iy0+ky, ix0+kx) */
                        const ptrdiff_t base = (ptrdiff_t)(iy0 + ky) * W + ix0;
                        const int8_t *wr = wk + ky * k;
                        for (int kx = kx0; kx < kx1; kx++)
                            acc += ((int32_t)x[base + kx] - z_in) * wr[kx];
                    }
                }
                outc[oy * p->OW + ox] =
                    requantize(acc, mult[oc], shift[oc], p->z_out, p->act_min, p->act_max);
            }
        }
    }
}

/* in is (F_in), w is (F_out, F_in), out is (F_out). */
void qrt_linear_s8(int8_t *out, const int8_t *in, const int8_t *w, const int32_t *bias,
                   const int32_t *mult, const int32_t *shift, const qrt_linear_params *p) {
    const int32_t z_in = p->z_in;
    for (int o = 0; o < p->F_out; o++) {
        const int8_t *wo = w + (size_t)o * p->F_in;
        int32_t acc = bias[o];
        for (int i = 0; i < p->F_in; i++) acc += ((int32_t)in[i] - z_in) * wo[i];
        out[o] = requantize(acc, mult[o], shift[o], p->z_out, p->act_min, p->act_max);
    }
}

/* The reference of every batch linear kernel: one sample at a time. */
void qrt_linear_batch_s8(int8_t *out, size_t out_stride, const int8_t *in, size_t in_stride, int n,
                         const int8_t *w, const int32_t *bias, const int32_t *mult,
                         const int32_t *shift, const qrt_linear_params *p) {
    for (int s = 0; s < n; s++)
        qrt_linear_s8(out + (size_t)s * out_stride, in + (size_t)s * in_stride, w, bias, mult, shift, p);
}

/* in is (C, H, W), out is (C, OH, OW). Starting from -128, the least int8, gives the
 * maximum of the real elements of the window (there is at least one, pad <= k/2): padding
 * never wins. */
void qrt_maxpool_s8(int8_t *out, const int8_t *in, const qrt_pool_params *p) {
    const int H = p->H, W = p->W, k = p->k;
    for (int c = 0; c < p->C; c++) {
        const int8_t *x = in + (size_t)c * H * W;
        int8_t *y = out + (size_t)c * p->OH * p->OW;
        for (int oy = 0; oy < p->OH; oy++) {
            const int iy0 = oy * p->stride - p->pad;
            const int ky0 = iy0 < 0 ? -iy0 : 0, ky1 = iy0 + k > H ? H - iy0 : k;
            for (int ox = 0; ox < p->OW; ox++) {
                const int ix0 = ox * p->stride - p->pad;
                const int kx0 = ix0 < 0 ? -ix0 : 0, kx1 = ix0 + k > W ? W - ix0 : k;
                int8_t m = INT8_MIN;
                for (int ky = ky0; ky < ky1; ky++) {
                    const ptrdiff_t base = (ptrdiff_t)(iy0 + ky) * W + ix0;
                    for (int kx = kx0; kx < kx1; kx++)
                        if (x[base + kx] > m) m = x[base + kx];
                }
                y[oy * p->OW + ox] = m;
            }
        }
    }
}

/* in is (C, H, W), out is (C, OH, OW). Padded positions hold z_in: they add 0 to the sum
 * d of (q - z_in) but count in the divisor n = k*k. |d| <= k*k*255 fits in int32. */
void qrt_avgpool_s8(int8_t *out, const int8_t *in, const qrt_pool_params *p) {
    const int H = p->H, W = p->W, k = p->k;
    const int32_t n = (int32_t)k * k, z = p->z_in;
    for (int c = 0; c < p->C; c++) {
        const int8_t *x = in + (size_t)c * H * W;
        int8_t *y = out + (size_t)c * p->OH * p->OW;
        for (int oy = 0; oy < p->OH; oy++) {
            const int iy0 = oy * p->stride - p->pad;
            const int ky0 = iy0 < 0 ? -iy0 : 0, ky1 = iy0 + k > H ? H - iy0 : k;
            for (int ox = 0; ox < p->OW; ox++) {
                const int ix0 = ox * p->stride - p->pad;
                const int kx0 = ix0 < 0 ? -ix0 : 0, kx1 = ix0 + k > W ? W - ix0 : k;
                int32_t sum = 0;
                for (int ky = ky0; ky < ky1; ky++) {
                    const ptrdiff_t base = (ptrdiff_t)(iy0 + ky) * W + ix0;
                    for (int kx = kx0; kx < kx1; kx++) sum += (int32_t)x[base + kx] - z;
                }
                y[oy * p->OW + ox] = qrt_centred_mean_s8(sum, n, z);
            }
        }
    }
}

/* in is (C, HW), out is (C): the average pool's formula with one window of n = HW
 * positions. |d| <= HW * 255 fits in int32 (the loader's bound). */
void qrt_global_avgpool_s8(int8_t *out, const int8_t *in, int C, int HW, int32_t z) {
    for (int c = 0; c < C; c++) {
        const int8_t *x = in + (size_t)c * HW;
        int32_t d = 0;
        for (int i = 0; i < HW; i++) d += (int32_t)x[i] - z;
        out[c] = qrt_centred_mean_s8(d, HW, z);
    }
}

/* (q - z) * 2^20 is written as a multiplication: a left shift of a negative int is
 * undefined in C. |q - z| <= 255, so it is at most 255 * 2^20 < 2^28. */
void qrt_add_s8(int8_t *out, const int8_t *a, const int8_t *b, size_t n,
                const qrt_add_params *p) {
    const int32_t one = (int32_t)1 << QRT_ADD_LEFT_SHIFT;
    for (size_t i = 0; i < n; i++) {
        int32_t xa = qrt_multiply_by_quantized_multiplier(((int32_t)a[i] - p->z_a) * one,
                                                          p->mult_a, (int)p->shift_a);
        int32_t xb = qrt_multiply_by_quantized_multiplier(((int32_t)b[i] - p->z_b) * one,
                                                          p->mult_b, (int)p->shift_b);
        out[i] = requantize(xa + xb, p->mult_out, p->shift_out, p->z_out, p->act_min,
                            p->act_max);
    }
}

/* p - 128 maps [0, 255] onto [-128, 127]. */
void qrt_input_u8(int8_t *out, const uint8_t *pixels, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = (int8_t)((int32_t)pixels[i] - 128);
}

int qrt_argmax_s8(const int8_t *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

void qrt_lut_s8(int8_t *out, const int8_t *in, const int8_t table[256], size_t n) {
    /* in + 128 is in [0, 255]: every int8 has its entry. */
    for (size_t i = 0; i < n; i++) out[i] = table[in[i] + 128];
}
