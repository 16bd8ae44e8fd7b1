/* simd_impl.h - what simd.c (packing, dispatch; plain C) shares with the SIMD kernel
 * files simd_avx2.c and simd_avx512.c. Not part of the API: include simd.h instead.
 *
 * Packed forms (docs/runtime-simd.md has the derivations):
 *
 *   pointwise conv2d (1x1, stride 1, pad 0, groups 1) also has the linear's second copy
 *   [ob][kp][16][2] (below): on AVX2 it runs as the batch GEMM over positions.
 *   dense and grouped conv2d (everything but depthwise):
 *     weights [g][ob][ky][j][16][4] int8: group g, block ob of 16 output channels of the
 *     group, kernel row ky, dword j of the row's k*Cg input bytes taken in HWC order
 *     (t = 4j + b -> kx = t / Cg, channel t % Cg); zero beyond k*Cg and beyond OCg.
 *   depthwise conv2d (groups == C == OC):
 *     weights [ky*k + kx][Cp] int32, Cp = C rounded up to 16, zero-padded (AVX-512);
 *     and [pair][Cp][2] int16 for AVX2: taps 2 pair and 2 pair + 1 of each channel side
 *     by side (zero for the odd last tap and past C), ceil(k*k / 2) pairs.
 *   linear:
 *     weights [ob][j][16][4] int8: block ob of 16 outputs, dword j of the input (the
 *     batch-1 GEMV of both paths);
 *     and a second copy [ob][kp][16][2] int8: block ob, input pair kp (inputs 2kp and
 *     2kp + 1; zero past F_in and past F_out), read by the AVX2 batch GEMM, where 16
 *     bytes sign-extended to int16 are 8 outputs x one pair: vpmaddwd against a
 *     broadcast pair (u_2kp, u_2kp+1) leaves output l's pair sum in int32 lane l.
 *
 *   each 16-channel block ob (of group g) also has a requantization record of 6 x 16
 *   int32: bias' = bias - (128 + z_in) * sum(w) (mod 2^32), M0, left = max(shift, 0),
 *   right = max(-shift, 0), mask = 2^right - 1, half = mask >> 1; padded channels have
 *   all 0 (their outputs are computed and dropped).
 */
#ifndef QRT_SIMD_IMPL_H
#define QRT_SIMD_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "simd.h"

#define QRT_SIMD_ALIGN 64
#define QRT_RQ_WORDS 96 /* int32 per requantization record: 6 x 16 */
enum { QRT_RQ_BIAS = 0, QRT_RQ_M0 = 16, QRT_RQ_LEFT = 32, QRT_RQ_RIGHT = 48, QRT_RQ_MASK = 64,
       QRT_RQ_HALF = 80 };

#define QRT_PACKED_CONV 0x564e4f43u   /* "CONV" */
#define QRT_PACKED_LINEAR 0x4e4e494cu /* "LINN" */

static inline size_t qrt_round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

typedef struct qrt_packed_conv {
    uint32_t magic;
    int depthwise;                            /* groups == C == OC */
    const int8_t *w;                          /* the originals, for the portable path */
    const int32_t *bias, *mult, *shift;
    int Cg, OCg;                              /* channels per group */
    int nj;                                   /* dense: dwords per kernel row, ceil(k*Cg/4) */
    int nob;                                  /* 16-channel blocks per group (depthwise: of C) */
    int ocs;                                  /* dense: row stride of the HWC output scratch */
    size_t wgroup;                            /* dense: weight bytes per group */
    const int32_t *rq;                        /* [G][nob] records of QRT_RQ_WORDS */
    const int8_t *wp;                         /* dense weights */
    const int32_t *wd;                        /* depthwise weights */
    const int16_t *wdp;                       /* depthwise, AVX2: [pair][Cp][2] int16 */
    int nkp;                                  /* pointwise: ceil(C / 2) */
    const int8_t *wg;                         /* pointwise (1x1, stride 1, pad 0, 1 group),
                                                 AVX2: the linear GEMM's [nob][nkp][16][2];
                                                 NULL for other convs */
    int nob8;                                 /* dense: 8-channel blocks per group */
    const int16_t *wp16;                      /* dense, AVX2: [g][ob8][ky][j][8][4] int16
                                                 (the dense weights widened, 8 channels to a
                                                 block); NULL for depthwise */
} qrt_packed_conv;

/* The requantization record of output channel j of group g (channel g * OCg + j) and its
 * lane in it. */
static inline const int32_t *qrt_conv_record(const qrt_packed_conv *pk, int g, int j, int *lane) {
    const int oc = g * pk->OCg + j;
    if (pk->depthwise) return *lane = oc % 16, pk->rq + (size_t)(oc / 16) * QRT_RQ_WORDS;
    return *lane = j % 16, pk->rq + ((size_t)g * pk->nob + (size_t)(j / 16)) * QRT_RQ_WORDS;
}

typedef struct qrt_packed_linear {
    uint32_t magic;
    const int8_t *w;
    const int32_t *bias, *mult, *shift;
    int nj, nob;                              /* ceil(F_in / 4), ceil(F_out / 16) */
    int nkp;                                  /* ceil(F_in / 2) */
    const int32_t *rq;                        /* [nob] records */
    const int8_t *wp;                         /* [nob][nj][16][4] */
    const int8_t *wg;                         /* [nob][nkp][16][2]: the batch GEMM's */
} qrt_packed_linear;

/* The AVX2 batch GEMM's scratch: n rows of the inputs as int16 u = q + 128, each row
 * ceil(F_in / 16) * 16 values (zero past F_in), 32-byte aligned. */
static inline size_t qrt_linear_batch_row(const qrt_linear_params *p) {
    return qrt_round_up((size_t)p->F_in, 16) * 2;
}

/* Scratch of the conv kernels: the padded HWC input (xb) then the HWC output (ob), each
 * with QRT_SIMD_ALIGN bytes of slack that dword reads past a row's end may touch. */
typedef struct qrt_conv_scratch {
    int Hp, Wp;           /* padded input plane */
    size_t xb_bytes;      /* at 0 */
    size_t u16_off;       /* pointwise: the int16 rows of the AVX2 GEMM (H*W rows of
                             ceil(C/16)*32 bytes); = ob_off otherwise (none) */
    size_t ob_off;        /* the output's offset */
    size_t x16_off;       /* not depthwise: one group's padded HWC input widened to int16
                             for AVX2's dense kernel (Hp*Wp*Cg values and slack) */
    size_t total;
} qrt_conv_scratch;

void qrt_conv_scratch_layout(const qrt_conv_params *p, qrt_conv_scratch *s);

/* qrt_conv2d_dw_pw_s8_isa with the block's input and/or output as HWC rows of C bytes
 * per position instead of (C, H, W): on the AVX2 path only (run.c passes a separable
 * block's output to the next block that way). */
void qrt_conv2d_dw_pw_layout(qrt_isa isa, int8_t *out, const int8_t *in, const void *packed_dw,
                             const qrt_conv_params *p_dw, const void *packed_pw, const qrt_conv_params *p_pw,
                             void *scratch, bool in_hwc, bool out_hwc);

static inline void *qrt_align_ptr(void *p) {
    uintptr_t u = (uintptr_t)p;
    return (void *)(u + ((QRT_SIMD_ALIGN - u % QRT_SIMD_ALIGN) % QRT_SIMD_ALIGN));
}

#if defined(QRT_SIMD_X86)
/* The kernels of each path. The pool kernel returns 0 if it has no fast path for p. */
void qrt_avx512_conv2d(int8_t *out, const int8_t *in, const qrt_packed_conv *pk,
                       const qrt_conv_params *p, uint8_t *scratch);
void qrt_avx512_linear(int8_t *out, const int8_t *in, const qrt_packed_linear *pk,
                       const qrt_linear_params *p, uint8_t *scratch);
/* Convs whose every output channel reads one input plane (groups == C), with VBMI:
 * qrt_avx512_planar_ok says which shapes the kernel takes. */
int qrt_avx512_planar_ok(const qrt_conv_params *p);
void qrt_avx512_conv_planar(int8_t *out, const int8_t *in, const qrt_packed_conv *pk,
                            const qrt_conv_params *p);
void qrt_avx512_linear_batch(int8_t *out, size_t out_stride, const int8_t *in, size_t in_stride, int n,
                             const qrt_packed_linear *pk, const qrt_linear_params *p, uint8_t *scratch);
void qrt_avx512_conv2d_maxpool(int8_t *out, const int8_t *in, const qrt_packed_conv *pk,
                               const qrt_conv_params *p, uint8_t *scratch);
int qrt_avx512_maxpool(int8_t *out, const int8_t *in, const qrt_pool_params *p);
void qrt_avx512_add(int8_t *out, const int8_t *a, const int8_t *b, size_t n, const qrt_add_params *p);
void qrt_avx512_input(int8_t *out, const uint8_t *pixels, size_t n);

void qrt_avx2_conv2d(int8_t *out, const int8_t *in, const qrt_packed_conv *pk,
                     const qrt_conv_params *p, uint8_t *scratch);
void qrt_avx2_linear(int8_t *out, const int8_t *in, const qrt_packed_linear *pk,
                     const qrt_linear_params *p, uint8_t *scratch);
void qrt_avx2_linear_batch(int8_t *out, size_t out_stride, const int8_t *in, size_t in_stride, int n,
                           const qrt_packed_linear *pk, const qrt_linear_params *p, uint8_t *scratch);
void qrt_avx2_conv2d_maxpool(int8_t *out, const int8_t *in, const qrt_packed_conv *pk,
                             const qrt_conv_params *p, uint8_t *scratch);
void qrt_avx2_conv2d_dw_pw(int8_t *out, const int8_t *in, const qrt_packed_conv *pk_dw,
                           const qrt_conv_params *p_dw, const qrt_packed_conv *pk_pw,
                           const qrt_conv_params *p_pw, uint8_t *scratch, bool in_hwc, bool out_hwc);
int qrt_avx2_maxpool(int8_t *out, const int8_t *in, const qrt_pool_params *p);
void qrt_avx2_add(int8_t *out, const int8_t *a, const int8_t *b, size_t n, const qrt_add_params *p);
void qrt_avx2_input(int8_t *out, const uint8_t *pixels, size_t n);
void qrt_avx2_global_avgpool(int8_t *out, const int8_t *in, int C, int HW, int32_t z);
/* The lookup table with AVX-512 VBMI (simd_vbmi.c): only where the CPU has VBMI. */
void qrt_vbmi_lut(int8_t *out, const int8_t *in, const int8_t table[256], size_t n);
#endif

/* Model integration (model.c, run.c). */
/* Bytes of model memory the packed forms of a graph need: the graph text is read as it
 * stands in the JSON header (at its opening quote), without storing it. 0 without SIMD. */
size_t qrt_simd_mem_bound(const uint8_t *graph_json, const uint8_t *header_end);

#endif
