/* qlora.h - LoRA's frozen base in 4 bits (QLoRA, Dettmers et al. 2023, at small scale):
 * every frozen conv and linear weight of a model with adapters (layers/lora.h) held as
 * NF4 or int4 per group of 64 weights with double-quantized constants (quant/q4.h).
 *
 * The model computes with the dequantized weights (exactly level * constant, the values
 * the 4-bit form stands for), and a checkpoint stores the 4-bit form instead of the F32
 * weight: for a weight "X", the tensors "X.q4" (U8, the packed codes, (n + 1) / 2),
 * "X.q4_absmax" (U8, one code per group), "X.q4_scale" (F32, one per 256 groups) and
 * "X.q4_mean" (F32, 1); the metadata "lora" says "r=R,alpha=A,base=nf4". Restoring reads
 * them back, checks every length and value, and dequantizes: the same bits as before.
 */
#ifndef QAT_TRAIN_QLORA_H
#define QAT_TRAIN_QLORA_H

#include "io/safetensors.h"
#include "layers/lora.h"
#include "quant/q4.h"

typedef struct qat_lora_base {
    qat_q4_format format;
    int n;
    qat_tensor **w; /* the frozen weights, in model order */
    qat_q4 *q;      /* their 4-bit form */
} qat_lora_base;

/* "r=8[,alpha=16][,base=nf4|int4|fp32]": the adapters' spec and the base's format
 * (*four_bit false for fp32 or no base=). INVALID_ARG naming the text. */
qat_status qat_lora_text_parse(const char *text, qat_lora_spec *s, bool *four_bit, qat_q4_format *f,
                               qat_error *err);
/* The model's adapters as that text ("r=8,alpha=16,base=nf4"), "" without adapters. */
void qat_lora_text_format(const qat_model *m, char *buf, size_t len);

/* Attaches adapters as the text says (qat_lora_attach); with a 4-bit base, quantizes
 * every frozen conv and linear weight when `quantize` (replacing it by its dequantized
 * values), or leaves the 4-bit form for qat_checkpoint_restore to fill. */
qat_status qat_lora_setup(qat_model *m, const char *text, bool quantize, qat_rng *rng, qat_error *err);

/* The 4-bit base, or NULL. */
const qat_lora_base *qat_lora_base_of(const qat_model *m);
/* The index of x among the base's weights, or -1. */
int qat_lora_base_find(const qat_lora_base *b, const qat_tensor *x);
/* Bytes of the base: its 4-bit form (codes and constants) and, for comparison, F32. */
void qat_lora_base_bytes(const qat_lora_base *b, size_t *four_bit, size_t *f32);

/* The four file tensors of base weight i (names into names[4][...]). */
void qat_lora_base_tensors(const qat_lora_base *b, int i, qat_st_tensor out[4], char names[4][QAT_NAME_LEN + 32]);
/* Reads base weight i from a checkpoint: its four tensors checked against the weight's
 * size and their values (FORMAT error naming the file and the tensor); with `fill`, the
 * 4-bit form filled and the weight dequantized into the model. used[k] (may be NULL) set
 * for each file tensor it names. */
qat_status qat_lora_base_read(qat_lora_base *b, int i, const qat_st_file *f, bool fill, bool *used,
                              qat_error *err);

#endif
