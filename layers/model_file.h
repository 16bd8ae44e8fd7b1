/* model_file.h - models as human-readable text, and back.
 *
 * One layer per line, `#` starts a comment, blank lines are ignored. The first
 * statement gives the per-sample input shape; each layer takes key=value options:
 *
 *     # the reference CNN
 *     input 1 28 28                      # C H W, or a single number of features
 *     conv2d out=32 kernel=3 pad=1       # stride=1 pad=0 groups=1 bias=true by default
 *     batchnorm
 *     relu
 *     maxpool kernel=2                   # stride defaults to kernel, pad to 0
 *     flatten
 *     linear out=10                      # bias=true by default
 *
 * Other layers: relu6, sigmoid, tanh, hardswish, leaky_relu alpha=0.01, avgpool (like
 * maxpool), global_avgpool, dropout p=0.5. A residual block, out = body(x) + shortcut(x):
 *
 *     residual
 *       conv2d out=16 kernel=3 pad=1
 *       batchnorm
 *     shortcut                           # optional; without it the shortcut is x
 *       conv2d out=16 kernel=1 bias=false
 *     end
 *
 * Indentation is free. Every mistake (an unknown layer or option, a missing or
 * malformed value, a layer that does not fit the shape before it) is reported as
 * "FILE:LINE: what is wrong". The same text is stored inside checkpoints, so a
 * checkpoint carries the model it belongs to; qat_model_to_text writes it back from any
 * model (also one built in C), and parse(to_text(m)) rebuilds an identical graph.
 */
#ifndef QAT_MODEL_FILE_H
#define QAT_MODEL_FILE_H

#include "layers/model.h"

/* Parses `text` (NUL-terminated); `source` names it in messages (a path, or
 * "<checkpoint>"). On success *out is a new model, not yet finalized (finalize it with
 * an RNG to initialise, or load weights into it after finalizing). */
qat_status qat_model_parse(const char *text, const char *source, qat_model **out, qat_error *err);
/* The text of a reference model: "cnn" or "mlp" (layers/model.h's qat_model_cnn and
 * qat_model_mlp, as model files); NULL for any other name. */
const char *qat_model_builtin_text(const char *name);
/* Reads and parses a file (at most 1 MiB). */
qat_status qat_model_load_file(const char *path, qat_model **out, qat_error *err);
/* The model as text in the format above; malloc'd, the caller frees. NULL if out of
 * memory. */
char *qat_model_to_text(const qat_model *m);

#endif
