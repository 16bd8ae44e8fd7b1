/* open.h - a model ready to use, from whatever names it: a reference model ("cnn",
 * "mlp"), a model file (layers/model_file.h), an ONNX model (a path ending in ".onnx",
 * onnx_import.h: its graph and weights), or a checkpoint (checkpoint.h), which is
 * rebuilt from the model text it carries, quantized as it was when saved (its "quant"
 * spec and normalisation), and restored.
 *
 *     qat_opened o;
 *     if (qat_model_open(&o, "run/q.safetensors", 0, &err)) { ... err.msg ... }
 *     ... o.m (finalized; quantized if the checkpoint was), o.text, o.ckpt, o.norm ...
 *     qat_opened_free(&o);
 *
 * A model that is neither a checkpoint nor ONNX is initialised from `seed`. A safetensors file that is
 * not a qat checkpoint (PyTorch weights) has no model text: the error says to give the
 * model and import the weights (qat_checkpoint_import) instead.
 */
#ifndef QAT_OPEN_H
#define QAT_OPEN_H

#include <stdbool.h>
#include <stdint.h>

#include "data/loader.h"
#include "layers/model.h"
#include "train/checkpoint.h"

typedef struct qat_opened {
    qat_model *m;
    char *text;             /* the model description (model-file text), malloc'ed */
    bool from_checkpoint;
    qat_checkpoint ckpt;    /* when from_checkpoint: its metadata and extras */
    bool have_norm;         /* the checkpoint recorded a normalisation; then: */
    qat_normalization norm; /* its "normalize_mean" / "normalize_std" */
} qat_opened;

/* Opens `spec`; on failure returns the status with the message naming spec and leaves
 * *o zeroed (qat_opened_free is safe). */
qat_status qat_model_open(qat_opened *o, const char *spec, uint64_t seed, qat_error *err);
void qat_opened_free(qat_opened *o);

/* Quantizes a finalized float model with a spec string (quant/quant.h), the input
 * mapped from `norm` (NULL: no normalisation known, the input gets an observer), as
 * int8-spec.md requires: one mean and std for uint8 image inputs. */
qat_status qat_model_quantize(qat_model *m, const char *spec, const qat_normalization *norm,
                              qat_error *err);

#endif
