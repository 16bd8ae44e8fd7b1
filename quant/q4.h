/* q4.h - block-wise 4-bit weight formats: int4 and NF4 (4-bit NormalFloat) with one
 * absolute-maximum constant per group of weights, and double quantization of those
 * constants (Dettmers, Pagnoni, Holtzman, Zettlemoyer, "QLoRA: Efficient Finetuning of
 * Quantized LLMs", NeurIPS 2023, sections 3 and 2).
 *
 * A tensor of n weights is cut into groups of `group` consecutive values (the last may be
 * shorter). Each group keeps its absolute maximum A (the largest |w|) and one 4-bit code
 * per weight: the level nearest w / A (float division and float distances; a tie goes to
 * the level nearer zero). A weight comes back as level[code] * A.
 *  - NF4: 16 levels in [-1, 1] from the standard normal's quantiles, with an exact zero:
 *    8 positive levels Phi^-1(o + (1/2 - o) k / 8), k = 0..7, 7 negative levels
 *    -Phi^-1(o + (1/2 - o) k / 7), k = 0..6, and 0, each divided by Phi^-1(o), where
 *    o = (1 - 1/30 + 1 - 1/32) / 2 (the paper's asymmetric construction: 2^3 + 1 quantiles
 *    on one side, 2^3 on the other, one zero dropped). Computed in double (the quantile
 *    by bisection on erfc to the last bit), rounded to float once. Codes are indices into
 *    the ascending levels, 0..15.
 *  - int4: the 15 levels k / 7, k = -7..7; the code is k as a two's-complement nibble (-8
 *    is never used, so the format is symmetric).
 * Codes are packed two to a byte as int8-spec.md packs 4-bit weights: value 2i in the low
 * nibble of byte i, 2i + 1 in the high one, an odd count's last high nibble 0.
 *
 * Double quantization (dq): the group constants A_g (n_groups floats) are stored in 8
 * bits: their mean c is subtracted, and A_g - c is quantized block-wise with the signed
 * dynamic map (optim/blockwise.h) in blocks of QAT_Q4_DQ_BLOCK: one code per group, one
 * float per block, plus c. The codes are chosen with the exact A_g; dequantizing uses
 * the double-quantized A_g' = map[code] * scale + c. At group 64 that is
 * 4 + 8/64 + 32/(64 * 256) = 4.127 bits per weight (plus 32 bits per tensor for c)
 * against 4 + 32/64 = 4.5 without (qat_q4_bits).
 */
#ifndef QAT_QUANT_Q4_H
#define QAT_QUANT_Q4_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "autograd/common.h"

#define QAT_Q4_GROUP 64      /* the paper's group (block) of weights */
#define QAT_Q4_DQ_BLOCK 256  /* the paper's block of group constants */
#define QAT_Q4_MAX_GROUP 4096

typedef enum qat_q4_format {
    QAT_Q4_INT4 = 0,
    QAT_Q4_NF4,
    QAT_Q4_FORMAT_COUNT
} qat_q4_format;

/* "int4", "nf4"; "unknown" otherwise. */
const char *qat_q4_format_str(qat_q4_format f);
bool qat_q4_format_parse(const char *s, qat_q4_format *f);

/* The 16 levels of a format, ascending (int4: -8/7 unused first, then -1 .. 1; the level
 * of code c is levels[c + 8]). Static. */
const float *qat_q4_levels(qat_q4_format f);

typedef struct qat_q4 {
    qat_q4_format format;
    size_t n;               /* weights */
    int group;              /* weights per group */
    bool dq;                /* constants double-quantized */
    uint8_t *codes;         /* (n + 1) / 2 packed nibbles */
    size_t n_groups;
    float *absmax;          /* n_groups constants (not dq): A_g */
    uint8_t *absmax_codes;  /* dq: n_groups codes of A_g - mean, signed dynamic map */
    float *absmax_scale;    /* dq: one per QAT_Q4_DQ_BLOCK groups */
    size_t n_scales;
    float absmax_mean;      /* dq: c */
} qat_q4;

/* Quantizes x[0..n) (finite; INVALID_ARG naming the index otherwise; n >= 1, 1 <= group
 * <= QAT_Q4_MAX_GROUP). NOMEM if it cannot allocate. q is zeroed on failure. */
qat_status qat_q4_quantize(qat_q4 *q, const float *x, size_t n, qat_q4_format format, int group,
                           bool dq, qat_error *err);
/* The group constants as dequantization uses them: A_g, or A_g' under dq. */
void qat_q4_constants(const qat_q4 *q, float *absmax);
/* x[0..q->n) = level[code] * constant of its group. */
void qat_q4_dequantize(const qat_q4 *q, float *x);
/* The 4-bit code of weight i, unpacked: 0..15 (NF4) or -8..7 (int4). */
int qat_q4_code(const qat_q4 *q, size_t i);
/* Storage in bits per weight: codes, constants (32 bits each, or 8 bits + 32 per block
 * + 32 for the mean under dq), over n. */
double qat_q4_bits(const qat_q4 *q);

/* Quantize-dequantize in one pass, without allocating: out[0..n) = what
 * qat_q4_quantize then qat_q4_dequantize give (the same bits), scratch holding
 * qat_q4_roundtrip_scratch(n, group) bytes (float-aligned). */
size_t qat_q4_roundtrip_scratch(size_t n, int group);
void qat_q4_roundtrip(const float *x, size_t n, qat_q4_format format, int group, bool dq, float *out, void *scratch);

struct qat_tape;
struct qat_tensor;
/* Fake quantization of weights to a 4-bit format (QAT and PTQ, quant/qmodel.c): the
 * round trip forward, the straight-through estimator backward. NULL (t->err) when out
 * of memory or x is NULL. */
struct qat_tensor *qat_q4_fake(struct qat_tape *t, struct qat_tensor *x, qat_q4_format format, int group, bool dq);
void qat_q4_free(qat_q4 *q);

#endif
