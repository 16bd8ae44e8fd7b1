/* simd.h - SIMD versions of the int8 kernels (x86-64: AVX2 and AVX-512 VNNI), chosen at
 * run time, each equal to the portable kernel of kernels.h byte for byte. The design,
 * the layouts and the exactness argument are in docs/runtime-simd.md.
 *
 * The portable kernels stay the reference (and the path of every non-x86 build and of a
 * build with -DQRT_SIMD=OFF, where everything here still links: qrt_isa_best() is then
 * QRT_ISA_PORTABLE, the pack sizes are 0 and the _isa kernels call the portable ones).
 *
 * qrt_run picks its path from the model: qrt_model_load stores the best the CPU has
 * (qrt_isa_default()), and qrt_model_set_isa (runtime.h) chooses another, lowered to what
 * the CPU has. The library reads no environment variable: the qat command maps QRT_ISA
 * (portable | avx2 | avx512vnni) to qrt_model_set_isa for the models it loads.
 * qrt_run_isa runs one image on a given path, so that tests and benchmarks can compare
 * paths in one process.
 *
 * Kernel use, outside a model (tests, benchmarks):
 *
 *     size_t n = qrt_conv2d_pack_size(&p);                    // 0: no SIMD in this build
 *     void *mem = malloc(n ? n : 1);
 *     const void *packed = qrt_conv2d_pack(mem, w, bias, mult, shift, &p);
 *     void *scratch = malloc(qrt_conv2d_scratch_size(&p));
 *     qrt_conv2d_s8_isa(QRT_ISA_AVX512VNNI, out, in, packed, &p, scratch);
 *
 * In a build without SIMD kernels pack() returns NULL and the conv/linear _isa entry
 * points must not be called (qrt_run never does). pack() keeps pointers to w, bias,
 * mult and shift (the portable path reads them), so they must outlive the packed form;
 * `p` given to the kernel must be the `p` given to pack() (the packed bias folds in
 * z_in). Memory of any alignment; the kernels never allocate. A packed form is
 * read-only: threads may share it, each with its scratch.
 */
#ifndef QRT_SIMD_H
#define QRT_SIMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

typedef enum qrt_isa {
    QRT_ISA_PORTABLE = 0, /* kernels.h, plain C */
    QRT_ISA_AVX2,         /* int16 products with vpmaddwd */
    QRT_ISA_AVX512VNNI,   /* u8 x s8 dot products with vpdpbusd */
    QRT_ISA_COUNT,
} qrt_isa;

/* "portable", "avx2", "avx512vnni" (the spellings the qat command's QRT_ISA accepts). */
const char *qrt_isa_str(qrt_isa isa);
/* Parses one of those spellings (NULL: false); false if unknown. */
bool qrt_isa_parse(const char *s, qrt_isa *isa);
/* Compiled in and supported by this CPU (and OS). QRT_ISA_PORTABLE always is. */
bool qrt_isa_supported(qrt_isa isa);
/* The best supported path at or below isa: what asking for isa gets on this CPU (and
 * build). Every _isa entry point and qrt_model_set_isa lower their argument with it. */
qrt_isa qrt_isa_resolve(qrt_isa isa);
/* The fastest supported path. */
qrt_isa qrt_isa_best(void);
/* The path qrt_model_load gives a model: qrt_isa_best(). (It read QRT_ISA from the
 * environment once; the library takes its settings as arguments now: qrt_model_set_isa.) */
qrt_isa qrt_isa_default(void);
/* qrt_isa_str(qrt_isa_default()): the path a model loaded now runs on. */
const char *qrt_isa_name(void);

/* ---- conv2d: dense, grouped and depthwise, any k/stride/pad kernels.h allows ------- */

/* Bytes pack() needs (0 when this build has no SIMD kernels). */
size_t qrt_conv2d_pack_size(const qrt_conv_params *p);
/* Packs weights (OC, C/groups, k, k) and the per-channel integers into mem (pack_size
 * bytes, any alignment); returns the packed form (inside mem), NULL if pack_size is 0. */
const void *qrt_conv2d_pack(void *mem, const int8_t *w, const int32_t *bias, const int32_t *mult,
                            const int32_t *shift, const qrt_conv_params *p);
/* Bytes of scratch the SIMD conv needs (any alignment): the padded HWC input and the HWC
 * output. 0 when this build has no SIMD kernels. */
size_t qrt_conv2d_scratch_size(const qrt_conv_params *p);
/* out = qrt_conv2d_s8(in, ...) on the given path (an unsupported one falls back to the
 * best supported below it). scratch may be NULL for QRT_ISA_PORTABLE. */
void qrt_conv2d_s8_isa(qrt_isa isa, int8_t *out, const int8_t *in, const void *packed,
                       const qrt_conv_params *p, void *scratch);

/* conv2d followed by a 2x2 stride-2 max pool (pad 0) of its output, without writing
 * the conv output: out is (OC, OH/2, OW/2), equal to qrt_maxpool_s8 of qrt_conv2d_s8's
 * output. Exact because requantization is non-decreasing, so the max of requantized
 * outputs is the requantized max of the accumulators: one requantization per pooled
 * output. Needs scratch (qrt_conv2d_scratch_size) on every path, the portable one too
 * (it holds the conv output there). */
void qrt_conv2d_maxpool_s8_isa(qrt_isa isa, int8_t *out, const int8_t *in, const void *packed,
                               const qrt_conv_params *p, void *scratch);

/* A depthwise conv (groups == C == OC) and a pointwise conv (1x1, stride 1, pad 0, one
 * group) that reads its output, in one call: out = pointwise(depthwise(in)), the same
 * bytes as the two qrt_conv2d_s8_isa calls. On AVX2 the depthwise result stays in the
 * scratch in the kernels' HWC layout (two transposes saved); the other paths run the two
 * kernels, the intermediate in the scratch. Scratch: qrt_conv2d_dw_pw_scratch_size bytes
 * (any alignment); 0 in a build without SIMD kernels, where this must not be called. */
size_t qrt_conv2d_dw_pw_scratch_size(const qrt_conv_params *p_dw, const qrt_conv_params *p_pw);
void qrt_conv2d_dw_pw_s8_isa(qrt_isa isa, int8_t *out, const int8_t *in, const void *packed_dw,
                             const qrt_conv_params *p_dw, const void *packed_pw, const qrt_conv_params *p_pw,
                             void *scratch);
/* The pair qrt_conv2d_dw_pw_s8_isa takes: p_dw depthwise, p_pw pointwise, reading p_dw's
 * output shape. */
bool qrt_conv2d_dw_pw_ok(const qrt_conv_params *p_dw, const qrt_conv_params *p_pw);

/* ---- linear ------------------------------------------------------------------------ */

size_t qrt_linear_pack_size(const qrt_linear_params *p);
const void *qrt_linear_pack(void *mem, const int8_t *w, const int32_t *bias, const int32_t *mult,
                            const int32_t *shift, const qrt_linear_params *p);
size_t qrt_linear_scratch_size(const qrt_linear_params *p);
void qrt_linear_s8_isa(qrt_isa isa, int8_t *out, const int8_t *in, const void *packed,
                       const qrt_linear_params *p, void *scratch);

/* The linear over a batch of n >= 1 samples: sample s reads F_in int8 at in + s *
 * in_stride and writes F_out at out + s * out_stride (out never overlaps an input), each
 * equal to qrt_linear_s8 on it alone (kernels.h: qrt_linear_batch_s8, the reference).
 * AVX2: a blocked GEMM (tiles of 5 samples x 16 outputs, int16 products with vpmaddwd,
 * the weights' second packed copy); AVX-512 VNNI: a GEMM too (tiles of 6 samples x 64
 * outputs, vpdpbusd on the GEMV's packed weights). scratch holds
 * qrt_linear_batch_scratch_size(p, n) bytes (any alignment; NULL for the portable path). */
size_t qrt_linear_batch_scratch_size(const qrt_linear_params *p, int n);
void qrt_linear_batch_s8_isa(qrt_isa isa, int8_t *out, size_t out_stride, const int8_t *in,
                             size_t in_stride, int n, const void *packed, const qrt_linear_params *p,
                             void *scratch);

/* ---- elementwise and pooling: no packing, no scratch ------------------------------- */

void qrt_maxpool_s8_isa(qrt_isa isa, int8_t *out, const int8_t *in, const qrt_pool_params *p);
/* The average pools (kernels.h): z the input's zero point (p->z_in for the windowed one).
 * Both end in qrt_centred_mean_s8 on every path; the windowed one is portable code on
 * every path, the global one sums with vpsadbw on AVX2 and AVX-512 VNNI. */
void qrt_avgpool_s8_isa(qrt_isa isa, int8_t *out, const int8_t *in, const qrt_pool_params *p);
void qrt_global_avgpool_s8_isa(qrt_isa isa, int8_t *out, const int8_t *in, int C, int HW, int32_t z);
void qrt_add_s8_isa(qrt_isa isa, int8_t *out, const int8_t *a, const int8_t *b, size_t n,
                    const qrt_add_params *p);
void qrt_input_u8_isa(qrt_isa isa, int8_t *out, const uint8_t *pixels, size_t n);
/* The lookup table (kernels.h's qrt_lut_s8): on the AVX-512 path, VBMI byte permutes
 * when the CPU has VBMI (it is checked apart); the portable loop otherwise. */
void qrt_lut_s8_isa(qrt_isa isa, int8_t *out, const int8_t *in, const int8_t table[256], size_t n);

#endif
