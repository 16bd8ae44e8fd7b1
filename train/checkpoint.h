/* checkpoint.h - training checkpoints and weight import in the safetensors layout.
 *
 * Two layers, both in train/checkpoint.c:
 *
 * 1. safetensors files (the format of Hugging Face's `safetensors`, spec in its README,
 *    "Format" section). A file is
 *
 *        uint64 N (little-endian) | N bytes of JSON header | data buffer
 *
 *    The header is one JSON object: for each tensor, "name": {"dtype": "F32", "shape":
 *    [2, 3], "data_offsets": [begin, end]} with offsets relative to the start of the data
 *    buffer; optionally "__metadata__": {"key": "value", ...} whose values are strings.
 *    Tensors are contiguous, row-major, little-endian, and together cover the data
 *    buffer exactly. The header is padded with spaces so that N is a multiple of 8 (as
 *    the reference writer does), which puts the data buffer at an 8-aligned offset.
 *
 *        qat_st_tensor t[] = {{.name = "w", .dtype = QAT_ST_DTYPE_F32, .ndim = 2,
 *                              .shape = {3, 4}, .data = w}};
 *        qat_st_kv kv[] = {{"note", "hello"}};
 *        qat_safetensors_write("w.safetensors", t, 1, kv, 1, &err);
 *
 *        qat_st_file f;
 *        if (qat_safetensors_read(&f, "w.safetensors", &err)) { report err.msg }
 *        const qat_st_tensor *w = qat_safetensors_find(&f, "w");   // NULL if absent
 *        const char *note = qat_safetensors_meta(&f, "note");      // NULL if absent
 *        qat_safetensors_free(&f);
 *
 *    qat_safetensors_read validates the whole file before returning it (the rules are
 *    listed above the function and in docs/checkpoint.md); a bad file yields
 *    QAT_STATUS_FORMAT (or IO when it cannot be read) and a message that names the file
 *    and the problem.
 *
 * 2. qat training checkpoints: a safetensors file holding every parameter under its
 *    model name ("0.weight"), the batch-norm running statistics ("1.running_mean",
 *    "1.running_var"), the optimizer state as flat F32 arrays in the model's flat
 *    parameter order ("optim.momentum_buffer", "optim.exp_avg", "optim.exp_avg_sq"), and
 *    metadata: format, format_version, the model description text, epoch, step, the
 *    optimizer config (JSON) and step count, the RNG state and the caller's own
 *    key/value pairs. docs/checkpoint.md lists every name and key.
 *
 *        qat_checkpoint_meta meta = {.model = model_file_text, .epoch = e, .step = s,
 *                                    .rng = rng, .extra = kv, .n_extra = 1};
 *        if (qat_checkpoint_save("run/last.safetensors", m, &opt, &meta, &err)) ...
 *
 *        qat_checkpoint c;
 *        if (qat_checkpoint_load(&c, "run/last.safetensors", &err)) ...
 *        ... build the model from c.model, qat_optim_init(&opt, &c.optim_cfg, ...) ...
 *        if (qat_checkpoint_restore(&c, m, &opt, &err)) ...
 *        rng = c.rng; epoch = c.epoch; ...
 *        qat_checkpoint_free(&c);
 *
 *    Weights trained elsewhere (a PyTorch state_dict written as safetensors, see
 *    docs/checkpoint.md) load by name with qat_checkpoint_import.
 *
 * Writing is atomic: the file is written to "<path>.tmp-<pid>-<k>" in the same
 * directory, flushed and fsync'ed, renamed over <path>, and the directory is fsync'ed.
 * A process killed at any moment leaves either the previous file or the new one at
 * <path>, never a mixture (tests/test_checkpoint.c kills a writer 20 times to check).
 * A kill can leave a temporary file behind; readers never look at them, and the next
 * successful write to the same path deletes those whose writer process no longer exists.
 * One writer per path at a time: two processes saving the same path concurrently each
 * produce a complete file, but which one ends up at <path> is unspecified.
 *
 * Only little-endian hosts are supported (checked at compile time): tensors are
 * written and read as they lie in memory.
 */
#ifndef QAT_CHECKPOINT_H
#define QAT_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "autograd/common.h"
#include "autograd/rng.h"
#include "layers/model.h"
#include "optim/optim.h"

/* ---- safetensors -------------------------------------------------------------------- */

/* The element types of the safetensors spec (sub-byte types excluded). The reader and
 * writer handle all of them; qat_safetensors_to_f32 converts the float ones. */
typedef enum qat_st_dtype {
    QAT_ST_DTYPE_BOOL = 0,
    QAT_ST_DTYPE_U8,
    QAT_ST_DTYPE_I8,
    QAT_ST_DTYPE_F8_E5M2,
    QAT_ST_DTYPE_F8_E4M3,
    QAT_ST_DTYPE_I16,
    QAT_ST_DTYPE_U16,
    QAT_ST_DTYPE_F16,
    QAT_ST_DTYPE_BF16,
    QAT_ST_DTYPE_I32,
    QAT_ST_DTYPE_U32,
    QAT_ST_DTYPE_F32,
    QAT_ST_DTYPE_I64,
    QAT_ST_DTYPE_U64,
    QAT_ST_DTYPE_F64,
    QAT_ST_DTYPE_COUNT
} qat_st_dtype;

/* The spec's spelling ("F32", "I8", ...); "unknown" for anything else. */
const char *qat_st_dtype_str(qat_st_dtype d);
/* Bytes per element (1, 2, 4 or 8). d must be a qat_st_dtype (asserted). */
size_t qat_st_dtype_size(qat_st_dtype d);
/* Parses the spec's spelling (case-sensitive, as the spec is). false if unknown. */
bool qat_st_dtype_from_str(const char *s, qat_st_dtype *d);

#define QAT_ST_MAX_DIMS 8
/* The reference implementation's limit on N, the header length. */
#define QAT_ST_MAX_HEADER 100000000u

/* One tensor. For qat_safetensors_write the caller sets name, dtype, ndim (0 for a
 * scalar, up to QAT_ST_MAX_DIMS), shape and data (numel * dtype size bytes, host
 * order); numel and nbytes are ignored. The reader sets every field. */
typedef struct qat_st_tensor {
    const char *name;
    qat_st_dtype dtype;
    int ndim;
    int64_t shape[QAT_ST_MAX_DIMS];
    size_t numel;     /* product of shape (1 for a scalar, 0 if a dim is 0) */
    size_t nbytes;    /* numel * qat_st_dtype_size(dtype) */
    const void *data; /* reader: inside the file's data buffer, see qat_st_file */
} qat_st_tensor;

/* A metadata entry (safetensors metadata values are strings). */
typedef struct qat_st_kv {
    const char *key;
    const char *value;
} qat_st_kv;

/* Writes tensors and metadata (n_meta may be 0, meta then NULL) to `path`, atomically
 * (see the top of this file). Tensors are laid out in the data buffer in decreasing
 * order of element size and, within a size, in the order given, so that every tensor
 * starts at a multiple of its element size (the reference writer does the same); the
 * header lists them in that order. Names and metadata must be valid UTF-8; names must
 * be unique and not "__metadata__", metadata keys unique, dims >= 0.
 * Returns INVALID_ARG for arguments that break those rules (nothing is written), IO when
 * the file cannot be written (the previous file at `path`, if any, is left as it was;
 * the one exception is a failed fsync of the directory after the rename, reported
 * although the new file is in place), NOMEM. A NULL data pointer for a non-empty tensor
 * is a programmer error (asserted). If `path` is a symbolic link, the link itself is
 * replaced by the new file (rename semantics). */
qat_status qat_safetensors_write(const char *path, const qat_st_tensor *tensors, size_t n_tensors,
                                 const qat_st_kv *meta, size_t n_meta, qat_error *err);

/* A file read into memory. Everything is owned by the structure and valid until
 * qat_safetensors_free. Tensor data pointers are into one malloc'ed buffer (aligned for
 * any type), so in files written by qat (or the reference writer) every tensor is
 * aligned for its dtype; a file from another writer may place a tensor at any offset,
 * so code that must work on any file reads through memcpy (qat_safetensors_to_f32
 * does). */
typedef struct qat_st_file {
    char *path;
    qat_st_tensor *tensors; /* in the order of their data offsets */
    size_t n_tensors;
    qat_st_kv *meta; /* in header order */
    size_t n_meta;
    size_t header_len; /* N */
    size_t data_len;   /* bytes of the data buffer */
    /* Private: */
    void *data_buf;
    void *json;         /* the parsed header (cJSON), owns names and metadata strings */
    const qat_st_tensor **by_name; /* sorted by name, for lookups */
    const qat_st_kv **meta_by_key;
} qat_st_file;

/* Reads and validates `path` into `f`. On failure returns IO (cannot open or read),
 * FORMAT (the contents break a rule below) or NOMEM, with a message "<path>: <problem>"
 * in err (may be NULL), and leaves `f` zeroed so that qat_safetensors_free is safe.
 * Rules (docs/checkpoint.md, "Validation"):
 *  - at least 8 bytes; N >= 2, N <= QAT_ST_MAX_HEADER, N <= file size - 8;
 *  - the header is valid UTF-8 without NUL bytes, starts with '{', and is one JSON
 *    object (trailing whitespace allowed, no raw control characters inside strings)
 *    with no duplicate keys at any level;
 *  - every member except "__metadata__" is a tensor entry: an object with exactly the
 *    fields "dtype" (a known dtype string), "shape" (an array of at most QAT_ST_MAX_DIMS
 *    integers >= 0 whose product does not overflow) and "data_offsets" (two integers,
 *    begin <= end <= data buffer length) with end - begin == numel * dtype size;
 *  - "__metadata__", if present, is an object whose values are all strings;
 *  - sorted by offset, the tensors neither overlap nor leave a gap, and the last one
 *    ends where the file ends (the spec's "no holes" rule). */
qat_status qat_safetensors_read(qat_st_file *f, const char *path, qat_error *err);
void qat_safetensors_free(qat_st_file *f);

/* The tensor named `name`, or NULL. O(log n). */
const qat_st_tensor *qat_safetensors_find(const qat_st_file *f, const char *name);
/* The metadata value of `key`, or NULL. O(log n). */
const char *qat_safetensors_meta(const qat_st_file *f, const char *key);

/* Converts t's numel elements to float into out: F32 is copied, F64 rounded to nearest
 * (FORMAT error if a finite value does not fit a float), F16 and BF16 widened exactly.
 * Other dtypes: FORMAT error. Works for unaligned data. */
qat_status qat_safetensors_to_f32(float *out, const qat_st_tensor *t, qat_error *err);

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

#endif
