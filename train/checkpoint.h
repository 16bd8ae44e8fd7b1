/* checkpoint.h - training checkpoints and weight import, in the safetensors container
 * (io/safetensors.h).
 *
 * A qat training checkpoint is a safetensors file holding every tensor of the model's
 * state under its name (qat_model_state: parameters "0.weight", batch-norm buffers
 * "1.running_mean", quantization parameters and buffers "3.pact_alpha", "3.act_range"),
 * the optimizer's state tensors under "optim.<name>" ("optim.momentum_buffer",
 * "optim.exp_avg", ...: qat_optim's state list), and metadata: format, format_version,
 * the model description text, epoch, step, the optimizer's kind and config (JSON, from
 * its field table) and step count, the RNG state and the caller's own key/value pairs.
 * Saving, loading and restoring are loops over those two lists: they know no layer and
 * no optimizer kind. docs/checkpoint.md lists every name and key.
 *
 *     qat_checkpoint_meta meta = {.model = model_file_text, .epoch = e, .step = s,
 *                                 .rng = rng, .extra = kv, .n_extra = 1};
 *     if (qat_checkpoint_save("run/last.safetensors", m, &opt, &meta, &err)) ...
 *
 *     qat_checkpoint c;
 *     if (qat_checkpoint_load(&c, "run/last.safetensors", &err)) ...
 *     ... build the model from c.model, qat_optim_init(&opt, &c.optim_cfg, ...) ...
 *     if (qat_checkpoint_restore(&c, m, &opt, &err)) ...
 *     rng = c.rng; epoch = c.epoch; ...
 *     qat_checkpoint_free(&c);
 *
 * Weights trained elsewhere (a PyTorch state_dict written as safetensors, see
 * docs/checkpoint.md) load by name with qat_checkpoint_import.
 *
 * Writing is atomic (io/atomic_file.h): a process killed at any moment leaves either the
 * previous checkpoint or the new one.
 */
#ifndef QAT_CHECKPOINT_H
#define QAT_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "autograd/common.h"
#include "autograd/rng.h"
#include "io/safetensors.h"
#include "layers/model.h"
#include "optim/optim.h"

/* ---- qat training checkpoints ------------------------------------------------------- */

#define QAT_CHECKPOINT_FORMAT "qat-checkpoint"
#define QAT_CHECKPOINT_VERSION 1

/* What qat_checkpoint_save stores besides tensors. */
typedef struct qat_checkpoint_meta {
    const char *model; /* the model description (text of the model file), stored as is
                        * under "model"; NULL stores "" */
    long epoch;        /* >= 0; the caller's convention (e.g. epochs completed) */
    long step;         /* >= 0; e.g. global training steps taken */
    qat_rng rng;       /* the training RNG, to resume the same random stream (inc odd) */
    const qat_st_kv *extra; /* the caller's key/value pairs (normalisation mean/std, data */
    size_t n_extra;         /* set, metrics...), stored as metadata under their own keys;
                             * keys must not be one of the reserved keys below */
} qat_checkpoint_meta;

/* The metadata keys qat_checkpoint_save writes itself (extra keys may not use them):
 * "format", "format_version", "model", "epoch", "step", "rng_state", "rng_inc",
 * "optim", "optim_step". */
bool qat_checkpoint_key_reserved(const char *key);

/* Saves the model's parameters and batch-norm buffers, the optimizer state (`opt` may be
 * NULL: no optimizer is stored) and `meta` to `path`, atomically. `m` must be finalized
 * and `opt`, if given, sized for m->n_params. Returns INVALID_ARG (a reserved or
 * duplicate extra key, a negative epoch/step, an uninitialised rng, an optimizer of
 * another size), IO or NOMEM with a message in err. */
qat_status qat_checkpoint_save(const char *path, const qat_model *m, const qat_optim *opt,
                               const qat_checkpoint_meta *meta, qat_error *err);

/* A loaded checkpoint. Strings point into `file` and live until qat_checkpoint_free. */
typedef struct qat_checkpoint {
    qat_st_file file; /* every tensor and metadata entry, for anything not parsed below */
    const char *model; /* the model description, to rebuild the model from */
    long epoch, step;
    qat_rng rng;
    bool has_optim;              /* an optimizer was saved; then: */
    qat_optim_config optim_cfg;  /* its config (fields its kind does not use: defaults) */
    long optim_step;             /* its step count */
    qat_st_kv *extra;            /* the metadata entries that are not reserved keys, */
    size_t n_extra;              /* in header order */
} qat_checkpoint;

/* Reads `path` (qat_safetensors_read's rules), then checks it is a qat checkpoint:
 * format "qat-checkpoint", format_version "1", every reserved key present and well
 * formed (decimal integers >= 0, rng_inc odd, optim a JSON object with exactly the
 * fields its kind uses and a config qat_optim_config_check accepts), every tensor F32,
 * and the optimizer tensors exactly those of the saved config, 1-D and equally long.
 * It does not need the model. Failure: IO, FORMAT or NOMEM, message "<path>: ...",
 * and `c` zeroed (qat_checkpoint_free is safe). */
qat_status qat_checkpoint_load(qat_checkpoint *c, const char *path, qat_error *err);
void qat_checkpoint_free(qat_checkpoint *c);

/* The value of an extra key, or NULL. */
const char *qat_checkpoint_extra(const qat_checkpoint *c, const char *key);

/* Copies the checkpoint into an existing model (and optimizer, unless opt is NULL). The
 * model must have exactly the checkpoint's parameters and buffers, by name and shape.
 * The optimizer must be of the saved kind, sized for the model, and have the same state
 * buffers (an SGD without momentum has none); its config may differ (e.g. a new lr):
 * only `step` and the state are restored. Everything is checked before anything is
 * copied, so on failure model and optimizer are untouched. Failure: FORMAT when the
 * file does not fit the model or optimizer, with a message listing the missing,
 * unexpected and mismatched names (count and first few of each); INVALID_ARG when the
 * model is not finalized or the optimizer is sized for another model; NOMEM. */
qat_status qat_checkpoint_restore(const qat_checkpoint *c, qat_model *m, qat_optim *opt,
                                  qat_error *err);

/* ---- importing weights ------------------------------------------------------------ */

typedef struct qat_import_options {
    /* Removed from the start of file tensor names before matching ("model." for a
     * state_dict of a wrapped module); NULL or "" for none. File tensors that do not
     * start with it count as unexpected. */
    const char *strip_prefix;
    bool allow_missing;    /* model tensors absent from the file keep their values */
    bool allow_unexpected; /* file tensors the model does not have are skipped */
} qat_import_options;

typedef struct qat_import_report {
    int n_loaded;     /* model tensors filled from the file */
    int n_missing;    /* model tensors not in the file (only with allow_missing) */
    int n_unexpected; /* file tensors not in the model (only with allow_unexpected) */
    int n_ignored;    /* num_batches_tracked and, in a qat checkpoint, optim.* tensors */
} qat_import_report;

/* Loads weights from any safetensors file (a PyTorch state_dict, a qat checkpoint) into
 * the model's parameters and batch-norm buffers by name. F32, F64, F16 and BF16 tensors
 * are converted to float; shapes must match exactly. Tensors named "num_batches_tracked"
 * or ending in ".num_batches_tracked" (PyTorch's batch-norm counters, which qat does not
 * keep) are ignored, as are "optim.*" tensors of a qat checkpoint. `opts` NULL means
 * strict: every model tensor must be in the file and every other file tensor in the
 * model. All checks run before anything is copied; on failure (IO, FORMAT, NOMEM) the
 * model is untouched and the message lists the offending names. `report` may be NULL. */
qat_status qat_checkpoint_import(qat_model *m, const char *path, const qat_import_options *opts,
                                 qat_import_report *report, qat_error *err);

/* Like qat_checkpoint_import (strict), but when the file's names are not the model's
 * (a state_dict of named modules: "conv1.weight", "bn1.running_mean", "fc.bias"), maps
 * them by order and shape (train/state_dict.c): the file's tensors are grouped into
 * modules by the name before the last dot, each module is a convolution (4-D weight), a
 * linear layer (2-D weight) or a batch norm (running_mean and running_var), and the
 * modules of each kind are paired in order with the model's layers of that kind, first
 * in the file's order, then in natural name order ("layer2" < "layer10"; the safetensors
 * library writes names sorted), then in natural order within top-level groups ("stem",
 * "b1", "fc") placed where their convolutions and linear layers fit the model by shape;
 * every pair must have the same tensors of the same shapes. Layers of the same kind and shapes cannot be told apart, so check the mapping:
 * `log` (may be NULL) receives one line per tensor, file name -> model name. Failure
 * (IO, FORMAT, NOMEM) leaves the model untouched, with a message naming the first
 * module that fits nothing. */
qat_status qat_checkpoint_import_mapped(qat_model *m, const char *path, FILE *log, qat_import_report *report,
                                        qat_error *err);

#endif
