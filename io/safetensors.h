/* safetensors.h - the safetensors container: the file format of checkpoints, imported
 * weights and int8 models. It knows tensors, dtypes and string metadata, nothing of
 * models (train/checkpoint.h and quant/ give the files their meaning).
 *
 * Format: Hugging Face's `safetensors` (spec in its README, "Format" section). A file is
 *
 *     uint64 N (little-endian) | N bytes of JSON header | data buffer
 *
 * The header is one JSON object: for each tensor, "name": {"dtype": "F32", "shape":
 * [2, 3], "data_offsets": [begin, end]} with offsets relative to the start of the data
 * buffer; optionally "__metadata__": {"key": "value", ...} whose values are strings.
 * Tensors are contiguous, row-major, little-endian, and together cover the data
 * buffer exactly. The header is padded with spaces so that N is a multiple of 8 (as
 * the reference writer does), which puts the data buffer at an 8-aligned offset.
 *
 *     qat_st_tensor t[] = {{.name = "w", .dtype = QAT_ST_DTYPE_F32, .ndim = 2,
 *                           .shape = {3, 4}, .data = w}};
 *     qat_st_kv kv[] = {{"note", "hello"}};
 *     qat_safetensors_write("w.safetensors", t, 1, kv, 1, &err);
 *
 *     qat_st_file f;
 *     if (qat_safetensors_read(&f, "w.safetensors", &err)) { report err.msg }
 *     const qat_st_tensor *w = qat_safetensors_find(&f, "w");   // NULL if absent
 *     const char *note = qat_safetensors_meta(&f, "note");      // NULL if absent
 *     qat_safetensors_free(&f);
 *
 * qat_safetensors_read validates the whole file before returning it (the rules are
 * listed above the function and in docs/checkpoint.md); a bad file yields
 * QAT_STATUS_FORMAT (or IO when it cannot be read) and a message that names the file
 * and the problem. runtime/ has a reader of its own (no allocation, no libraries);
 * tests/test_container.c feeds both the same files and requires the same verdicts.
 *
 * Writing is atomic (io/atomic_file.h). Only little-endian hosts are supported (checked
 * at compile time): tensors are written and read as they lie in memory.
 */
#ifndef QAT_SAFETENSORS_H
#define QAT_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "autograd/common.h"

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
 * (io/atomic_file.h). Tensors are laid out in the data buffer in decreasing
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

/* The same file as qat_safetensors_write would write, into a new buffer (*out, *len
 * bytes; free it with free()) instead of a file: for a consumer in the same process
 * (qat eval runs the int8 model it would export). `name` only labels messages. The same
 * argument checks and statuses, but no IO. */
qat_status qat_safetensors_encode(const char *name, const qat_st_tensor *tensors, size_t n_tensors,
                                  const qat_st_kv *meta, size_t n_meta, uint8_t **out, size_t *len, qat_error *err);

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
 *  - the header is valid UTF-8 without NUL bytes, its first byte is '{', and it is one
 *    JSON object (whitespace: space, tab, LF, CR only, also after the object; no raw
 *    control characters inside strings; only JSON's escapes, \uXXXX with four hex
 *    digits and never \u0000) with no duplicate keys at any level;
 *  - every number is an unsigned JSON integer written with digits only (no sign,
 *    fraction, exponent or leading zero), at most 2^53;
 *  - every member except "__metadata__" is a tensor entry: an object with exactly the
 *    fields "dtype" (a known dtype string), "shape" (an array of at most QAT_ST_MAX_DIMS
 *    integers >= 0 whose product, taken in dim order, and byte size fit in 64 bits)
 *    and "data_offsets" (two integers, begin <= end <= data buffer length) with
 *    end - begin == numel * dtype size;
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
/* Whether the dtype is F32, F64, F16 or BF16. */
bool qat_st_dtype_is_float(qat_st_dtype d);
/* Whether qat_safetensors_to_f32 accepts t: a float dtype, and for F64 every finite value
 * within float's range. */
bool qat_safetensors_fits_f32(const qat_st_tensor *t);

/* "(4, 1, 3, 3)", "()" for a scalar, cut to len - 1 characters. */
void qat_st_shape_str(char *buf, size_t len, int ndim, const int64_t *shape);
/* "a string", "a number", "an array", ... : what a JSON value of the header is, for
 * messages. */
struct cJSON;
const char *qat_st_json_kind(const struct cJSON *j);

#endif
