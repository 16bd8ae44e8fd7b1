/* kernels.h - the int8 kernels of the runtime, plain loops in the tflite-micro /
 * CMSIS-NN style: int32 accumulate, requantize with the fixed-point multiplier, add the
 * output zero point, clamp. The arithmetic is ../shared/int8-spec.md; the model file
 * (docs/int8-format.md) supplies every parameter. qrt_run calls them; they are public so
 * that tests and SIMD versions can be checked against them bit for bit.
 *
 * Layouts: activations are int8, one sample, C-contiguous (C, H, W) or (F); conv weights
 * (OC, C/groups, k, k) and linear weights (F_out, F_in), int8, row-major (packed 4-bit
 * weights are unpacked by the loader); bias, mult (M0) and shift are int32 per output
 * channel. No kernel allocates or keeps state; `out` never aliases an input (add may
 * have a == b).
 *
 * Ranges the caller (the loader) guarantees and the kernels rely on:
 *   - zero points and act_min <= act_max in [-128, 127]; M0 0 or in [2^30, 2^31);
 *     shift in [-31, 30];
 *   - conv/linear: K * 255 * max|w| + max|bias| <= 2^31 - 1 (K = C/groups*k*k or F_in),
 *     so the int32 accumulator cannot overflow, and that bound times 2^max(shift,0)
 *     still fits in int32 (fixedpoint.h's precondition);
 *   - conv: groups divides C and OC; OH = (H + 2 pad - k) / stride + 1 >= 1 (likewise OW);
 *   - pools: pad <= k / 2, so every window holds at least one real element;
 *     OH = (H + 2 pad - k) / stride + 1 >= 1; k * k * 255 and H * W * 255 <= 2^31 - 1;
 *   - add: (q - z) * 2^20 * 2^max(shift_a,0) fits in int32 (likewise b), as do the sum
 *     a' + b' and the sum times 2^max(shift_out,0).
 */
#ifndef QRT_KERNELS_H
#define QRT_KERNELS_H

#include <stddef.h>
#include <stdint.h>

typedef struct qrt_conv_params {
    int C, H, W;              /* input (C, H, W) */
    int OC, OH, OW;           /* output (OC, OH, OW) */
    int k, stride, pad;       /* square kernel; padded positions read z_in */
    int groups;               /* 1: dense; C == OC == groups: depthwise */
    int32_t z_in, z_out;      /* zero points of input and output */
    int32_t act_min, act_max; /* output clamp (fused ReLU/ReLU6/PACT) */
} qrt_conv_params;

typedef struct qrt_linear_params {
    int F_in, F_out;
    int32_t z_in, z_out, act_min, act_max;
} qrt_linear_params;

typedef struct qrt_pool_params {
    int C, H, W;        /* input (C, H, W) */
    int OH, OW;         /* output (C, OH, OW) */
    int k, stride, pad; /* square window */
    int32_t z_in;       /* average pool: the zero point the mean is centred on (the value of
                           padded positions); the output keeps it. Max pool ignores it. */
} qrt_pool_params;

typedef struct qrt_add_params {
    int32_t z_a, z_b, z_out;
    int32_t mult_a, shift_a, mult_b, shift_b, mult_out, shift_out;
    int32_t act_min, act_max;
} qrt_add_params;

/* The headroom shift of the TFLite ADD scheme: inputs are rescaled after << 20. */
#define QRT_ADD_LEFT_SHIFT 20

/* out (OC, OH, OW) from in (C, H, W), w (OC, C/groups, k, k):
 *   acc = bias[o] + sum_{c in group(o), i, j} (in[c][y*s - p + i][x*s - p + j] - z_in) * w[o][c'][i][j]
 *   out = clamp(MBQM(acc, mult[o], shift[o]) + z_out, act_min, act_max)
 * Padded positions read z_in, so they add nothing to the sum (they are skipped). */
void qrt_conv2d_s8(int8_t *out, const int8_t *in, const int8_t *w, const int32_t *bias,
                   const int32_t *mult, const int32_t *shift, const qrt_conv_params *p);

/* out (F_out) from in (F_in), w (F_out, F_in): the conv formula with K = F_in. */
void qrt_linear_s8(int8_t *out, const int8_t *in, const int8_t *w, const int32_t *bias,
                   const int32_t *mult, const int32_t *shift, const qrt_linear_params *p);

/* The linear over n samples (the batch reference): sample s reads in + s * in_stride
 * and writes out + s * out_stride; exactly qrt_linear_s8 on each sample. */
void qrt_linear_batch_s8(int8_t *out, size_t out_stride, const int8_t *in, size_t in_stride, int n,
                         const int8_t *w, const int32_t *bias, const int32_t *mult,
                         const int32_t *shift, const qrt_linear_params *p);

/* out (C, OH, OW) = max over each window of in (C, H, W); padding never wins. */
void qrt_maxpool_s8(int8_t *out, const int8_t *in, const qrt_pool_params *p);

/* out (C, OH, OW) = qrt_centred_mean_s8(d, k*k, z_in) with d = sum_window (in - z_in):
 * z_in + d / (k*k) rounded half away from zero; padded positions hold z_in and count in
 * the divisor (count_include_pad). No clamp is needed (see qrt_centred_mean_s8). */
void qrt_avgpool_s8(int8_t *out, const int8_t *in, const qrt_pool_params *p);

/* out (C) = qrt_centred_mean_s8(d, HW, z) with d = sum_{HW} (in[c] - z), z the input's
 * zero point (the output keeps it): the spec's one formula for both average pools.
 * (Not round(sum in[c] / HW), which differs at exact ties whose halves fall on opposite
 * sides of zero: sum q = -21070 over HW = 196 with z = -128 gives -107 here, -108 there.)
 * HW >= 1, HW * 255 <= 2^31 - 1, z in [-128, 127]. */
void qrt_global_avgpool_s8(int8_t *out, const int8_t *in, int C, int HW, int32_t z);

/* TFLite ADD, elementwise over n values:
 *   a' = MBQM((a - z_a) * 2^20, mult_a, shift_a), b' likewise,
 *   out = clamp(MBQM(a' + b', mult_out, shift_out) + z_out, act_min, act_max) */
void qrt_add_s8(int8_t *out, const int8_t *a, const int8_t *b, size_t n,
                const qrt_add_params *p);

/* A lookup table, elementwise over n values: out[i] = table[in[i] + 128] (int8-spec.md,
 * "Other ops": sigmoid, tanh, hard-swish, leaky ReLU, ...). out may equal in. */
void qrt_lut_s8(int8_t *out, const int8_t *in, const int8_t table[256], size_t n);

/* The model input: raw uint8 pixels p become q = p - 128 (int8-spec.md, "model input"). */
void qrt_input_u8(int8_t *out, const uint8_t *pixels, size_t n);

/* Index of the largest of n >= 1 values; ties go to the lowest index. */
int qrt_argmax_s8(const int8_t *x, int n);

/* x / n rounded to nearest, ties away from zero; n >= 1, |x| + n / 2 <= INT32_MAX. */
int32_t qrt_div_round_s32(int32_t x, int32_t n);

/* The average pools' rounding (int8-spec.md, "Other ops"): d is the sum over a window of
 * n >= 1 positions of (q - z), |d| <= 255 n;
 *     returns z + sign(d) * floor((2|d| + n) / (2n)),
 * that is z + d / n rounded half away from zero, always within [-128, 127]. Every
 * average-pool kernel (portable and SIMD, windowed and global) ends in this function. */
int8_t qrt_centred_mean_s8(int32_t d, int32_t n, int32_t z);

#endif
