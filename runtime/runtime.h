/* runtime.h - the integer-only inference runtime: loads a model file written by
 * `qat export` (docs/int8-format.md) and runs it with int8/int32 arithmetic alone
 * (../shared/int8-spec.md), bit-exactly as training modelled it.
 *
 * Dependency-free: C99 and libc (string.h, stdio.h's vsnprintf for error messages), no
 * other file of this tree. The inference path has no float or double at all: on x86-64
 * the library is compiled with -mgeneral-regs-only, so a float that sneaks in breaks the
 * build. The `s=` scales of the graph are kept as text, never parsed.
 *
 * Use:
 *
 *     #include "runtime/runtime.h"
 *
 *     // file: the whole model file in memory (read or mmap it); it must outlive the model
 *     size_t mem_len = qrt_model_mem_size(file, file_len);    // 0: unreadable file
 *     void *mem = malloc(mem_len ? mem_len : 1);              // or a static buffer
 *     qrt_model m;
 *     qrt_error err;
 *     if (qrt_model_load(&m, file, file_len, mem, mem_len, &err) != QRT_STATUS_OK) {
 *         fprintf(stderr, "%s: %s\n", path, err.msg);          // names line/field/tensor
 *         ...
 *     }
 *     qrt_model_set_isa(&m, QRT_ISA_PORTABLE);   // optional: the kernels (default: the
 *                                                //   best this CPU has; simd.h)
 *     void *arena = malloc(qrt_arena_size(&m));               // activations, reused
 *     int8_t *logits = malloc(qrt_model_n_outputs(&m));
 *     int label;
 *     qrt_run(&m, pixels, arena, logits, &label);             // pixels: uint8, C*H*W
 *
 *     // qat inspect: qrt_model_input(&m)->shape, and for each i < qrt_model_n_ops(&m)
 *     // the op qrt_model_op(&m, i): kind, line, values read/written (qrt_model_value
 *     // gives shape, z, s text), k/stride/pad/groups, wbits, weight->name/shape,
 *     // z_in/z_out, act_min/act_max, the raw s= text
 *
 * Many images on several threads: runtime/batch.h (CMake target qat_runtime_batch, a
 * library of its own because it needs POSIX threads; this one stays libc only).
 *
 * Memory. The runtime never allocates. Two caller buffers:
 *   - model memory (`mem`, qrt_model_mem_size() bytes, any alignment): the container's
 *     tables (tensors, metadata) and its decoded names, keys and values (the graph text
 *     among them), the op and value tables, int32 tensors
 *     converted to native int32, and, with SIMD kernels, 4-bit packed weights unpacked to
 *     int8 (without SIMD kernels they stay packed in the file buffer and qrt_run unpacks
 *     one output channel at a time into the arena). int8 weights stay in the file
 *     buffer: the model points into both, so both must outlive it.
 *     qrt_model_mem_size() is computed from a scan of the header alone (counts and byte
 *     totals): an upper bound (strings are sized by the header length, the op tables by
 *     the graph's line count, unpacking by all U8 bytes). A smaller mem_len is refused
 *     with QRT_STATUS_NO_MEMORY and a message giving the size needed. With SIMD kernels
 *     (x86-64, QRT_SIMD=ON) it also holds each conv2d/linear's packed weights and
 *     requantization records (simd.h), sized from the graph text in the header: about
 *     the weight bytes again plus padding to 16 channels (docs/runtime-simd.md).
 *   - the activation arena (qrt_arena_size() bytes, any alignment): every value of the
 *     graph at an offset planned at load time from value lifetimes (a value is freed
 *     after its last reader, flatten shares its input's bytes; the smaller of a first-fit
 *     plan in op order and a greedy plan by size, graph.c), then, with SIMD
 *     kernels, the largest scratch of an op (the padded HWC input and output of a conv,
 *     the u8 input of a linear), or without them room for one output channel of 4-bit
 *     weights (the largest K of such an op). One arena per
 *     concurrent qrt_run; the model itself is read-only during inference, so threads can
 *     share it.
 *
 * What qrt_model_load validates (and refuses with a message naming the problem), before
 * anything runs:
 *   - the container (safetensors; the rules of docs/checkpoint.md "Validation", which
 *     the training side's reader applies too, and qrt_container_load alone below): at
 *     least 8 bytes; header length N in [2, 10^8] and within the file ("truncated
 *     file?"); the header is exactly one JSON object starting at its first byte
 *     (objects, strings with JSON's escapes and valid UTF-8, unsigned integers written
 *     with digits only, up to 2^53; no floats, no NUL, no duplicate keys at any level),
 *     followed only by whitespace (space, tab, LF, CR); each tensor entry has exactly
 *     dtype (a safetensors dtype), shape (at most 8 dims >= 0, their product in order
 *     and the byte size within 64 bits) and data_offsets [begin, end] with end - begin =
 *     element size * numel and end within the data buffer; the tensors cover the data
 *     buffer without holes or overlaps; __metadata__ is an object of strings; then, for
 *     a model, with format "qat-int8", format_version "1" and a graph;
 *   - the graph: one op per line, known op kinds, every field present, none unknown or
 *     repeated, each integer in range; value 0 written by the first line (`input`), each
 *     op writing the next value and reading only values already written; one `output`,
 *     the last line; declared shapes equal to the shapes the op computes; zero points
 *     z_in/z_a/z_b equal to those of the values read; act_min <= act_max in [-128, 127];
 *   - tensors named by the graph: present, of the right dtype (I8 weights, or U8 packed
 *     with wbits <= 4; I32 bias/mult/shift; a lut's table I8 of shape (256)) and shape; weights within
 *     [-(2^(wbits-1) - 1), 2^(wbits-1) - 1]; M0 0 or in [2^30, 2^31); shift in [-31, 30];
 *   - overflow: the accumulator bound K * 255 * max|w| + max|bias| <= 2^31 - 1 for each
 *     conv2d/linear, and for every requantization the bound of its int32 input times
 *     2^max(shift, 0) <= 2^31 - 1 (so the spec's x * 2^left never wraps), likewise for
 *     add's rescaled inputs and their sum. A file that passes runs without overflow;
 *   - limits: header <= 10^8 bytes, graph <= 10000 lines, a value <= 2^28 elements with
 *     dimensions <= 2^24, k, stride and pad <= 1024.
 *
 * How this runtime reads the places where docs/int8-format.md leaves a choice:
 *   - a lut declares its input's shape; its fn= is one of the four names and alpha=
 *     appears with leaky_relu only (as text, not checked as a number);
 *   - every op that writes a value has `shape=`; `s=` is optional everywhere (kept as
 *     text); pools, global_avgpool and flatten pass their input's zero point on;
 *   - global_avgpool may declare C or C,1,1; linear reads any shape (K = its elements);
 *   - a U8 weight is packed (and needs wbits <= 4); an I8 weight may have any wbits;
 *     with an odd count of packed weights the unused high nibble must be 0;
 *   - pools need pad <= k/2 (PyTorch's rule: no window is padding only); conv padding
 *     only needs H + 2 pad >= k;
 *   - blank lines are skipped (and counted in line numbers); unknown or repeated
 *     fields are refused; unknown tensors and other metadata keys are ignored.
 */
#ifndef QRT_RUNTIME_H
#define QRT_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"
#include "simd.h"

typedef enum qrt_status {
    QRT_STATUS_OK = 0,
    QRT_STATUS_INVALID_ARG, /* a NULL pointer where one is required */
    QRT_STATUS_FORMAT,      /* the container: lengths, JSON header, tensor table, metadata */
    QRT_STATUS_GRAPH,       /* the graph text, or a tensor it names */
    QRT_STATUS_NO_MEMORY,   /* mem_len below qrt_model_mem_size() */
} qrt_status;

const char *qrt_status_str(qrt_status s);

typedef struct qrt_error {
    qrt_status status;
    int line;      /* 1-based graph line of a QRT_STATUS_GRAPH error, else 0 */
    char msg[320]; /* what is wrong, naming the line, field, tensor or header byte */
} qrt_error;

/* The safetensors dtypes (the container accepts them all; the graph uses I8, U8, I32). */
typedef enum qrt_dtype {
    QRT_DTYPE_BOOL, QRT_DTYPE_U8, QRT_DTYPE_I8, QRT_DTYPE_F8_E5M2, QRT_DTYPE_F8_E4M3,
    QRT_DTYPE_I16, QRT_DTYPE_U16, QRT_DTYPE_F16, QRT_DTYPE_BF16, QRT_DTYPE_I32,
    QRT_DTYPE_U32, QRT_DTYPE_F32, QRT_DTYPE_I64, QRT_DTYPE_U64, QRT_DTYPE_F64,
    QRT_DTYPE_COUNT
} qrt_dtype;

const char *qrt_dtype_str(qrt_dtype d);

#define QRT_MAX_DIMS 8

typedef struct qrt_tensor {
    const char *name;              /* decoded, NUL-terminated (model memory) */
    qrt_dtype dtype;
    int ndim;
    uint64_t shape[QRT_MAX_DIMS];
    const uint8_t *data;           /* the raw little-endian bytes, in the file buffer */
    size_t nbytes;
    size_t begin;                  /* data_offsets[0], relative to the data buffer */
    const int32_t *s32;            /* I32: the values as native int32 (model memory) */
    const int8_t *s8;              /* a weight: int8 values (the file's I8 bytes, or the
                                      U8 packed nibbles unpacked into model memory) */
} qrt_tensor;

/* A metadata entry: key and value decoded (UTF-8, NUL-terminated; neither can contain a
 * NUL, the header may not). */
typedef struct qrt_meta {
    const char *key;
    const char *value;
} qrt_meta;

/* ---- the container alone ------------------------------------------------------------
 *
 * The safetensors checks of qrt_model_load (the first list at the top of this header,
 * "the container"), exactly those and nothing of the model: any safetensors file that
 * passes them loads here, a checkpoint as well as an int8 model. qrt_model_load calls
 * this code; tests/test_container.c feeds the same files to it and to the training
 * side's reader (io/safetensors.h) and requires the same verdicts and tensors.
 *
 *     size_t n = qrt_container_mem_size(file, len);   // 0: the container is unreadable
 *     qrt_container c;
 *     if (qrt_container_load(&c, file, len, mem, n, &err) == QRT_STATUS_OK)
 *         for (size_t i = 0; i < c.n_tensors; i++) c.tensors[i].name, .dtype, .shape, .data
 */
typedef struct qrt_container {
    const qrt_tensor *tensors; /* sorted by name (s32 and s8 are NULL: no model here) */
    size_t n_tensors;
    const qrt_meta *meta;      /* __metadata__, sorted by key (no key twice) */
    size_t n_meta;
    size_t header_len;         /* N */
    const uint8_t *data;       /* the data buffer, in the file buffer */
    size_t data_len;
} qrt_container;

/* Bytes of memory qrt_container_load needs (any alignment): the tensor and metadata
 * tables and a string pool of header_len + 1 bytes for the decoded names, keys and
 * values. 0 if the container is unreadable (qrt_container_load then says why). */
size_t qrt_container_mem_size(const uint8_t *file, size_t len);

/* Validates the container (the list at the top, "the container", without the metadata's
 * format, format_version and graph) and fills *c, whose pointers go into file and mem
 * (both must outlive it). On failure returns QRT_STATUS_FORMAT (the file),
 * QRT_STATUS_NO_MEMORY (mem_len too small; the message gives the size) or
 * QRT_STATUS_INVALID_ARG (NULL c or file), fills *err (may be NULL) and leaves *c zeroed. */
qrt_status qrt_container_load(qrt_container *c, const uint8_t *file, size_t len, void *mem,
                              size_t mem_len, qrt_error *err);

/* The tensor of that name, or NULL; the value of a metadata key, or NULL (binary search). */
const qrt_tensor *qrt_container_tensor(const qrt_container *c, const char *name);
const char *qrt_container_meta(const qrt_container *c, const char *key);

typedef enum qrt_op_kind {
    QRT_OP_INPUT,
    QRT_OP_CONV2D,
    QRT_OP_LINEAR,
    QRT_OP_MAXPOOL,
    QRT_OP_AVGPOOL,
    QRT_OP_GLOBAL_AVGPOOL,
    QRT_OP_ADD,
    QRT_OP_FLATTEN,
    QRT_OP_OUTPUT,
    QRT_OP_LUT,
    QRT_OP_COUNT
} qrt_op_kind;

/* The graph spelling: "input", "conv2d", "linear", "maxpool", "avgpool",
 * "global_avgpool", "add", "flatten", "output", "lut". */
const char *qrt_op_kind_str(qrt_op_kind k);

/* A value: one int8 tensor of the graph (per sample). */
typedef struct qrt_value {
    int ndim;         /* 1: (F) or 3: (C, H, W) */
    int shape[3];
    int32_t numel;    /* = its size in bytes */
    int32_t z;        /* zero point */
    const char *s;    /* the `s=` text of the op that wrote it (pools and flatten: their
                         input's), or NULL; for people, never parsed */
    int producer;     /* index of the op that writes it */
    int last_use;     /* index of the last op that reads it (its producer if none); for
                         a value a flatten shares, also its flattens' readers */
    int alias;        /* the value whose bytes it shares (flatten), else itself */
    size_t offset;    /* its place in the activation arena */
} qrt_value;

/* One graph line. Fields an op kind does not have are 0 (tensors NULL). */
typedef struct qrt_op {
    qrt_op_kind kind;
    int line;                  /* 1-based line in the graph text */
    int n_in, in[2];           /* values read (add: 2; input: 0) */
    int out;                   /* value written, -1 for output */
    int k, stride, pad, groups;            /* conv2d (groups), maxpool, avgpool */
    int wbits;                             /* conv2d, linear: weight bits, 2..8 */
    const qrt_tensor *weight, *bias, *mult, *shift; /* conv2d, linear */
    int32_t z_in, z_out, act_min, act_max; /* conv2d, linear; add: z_out, act_*;
                                              input: z_out is its `z=` */
    int32_t z_a, z_b, mult_a, shift_a, mult_b, shift_b, mult_out, shift_out; /* add */
    const qrt_tensor *table;               /* lut: I8 (256), q_out = table[q_in + 128]; also
                                              z_in, z_out */
    const char *fn, *alpha;                /* lut: the function's name ("sigmoid", "tanh",
                                              "hardswish", "leaky_relu") and leaky_relu's
                                              `alpha=` text; for people and tools, never
                                              parsed as numbers */
    const char *s;                         /* the op's `s=` text, or NULL */
} qrt_op;

/* A loaded model. All pointers are into the caller's file buffer and model memory;
 * read-only after qrt_model_load. */
typedef struct qrt_model {
    const uint8_t *file;
    size_t file_len;
    const qrt_tensor *tensors; /* sorted by name */
    int n_tensors;
    const qrt_op *ops;         /* in graph order: ops[0] is input, the last is output */
    int n_ops;
    const qrt_value *values;   /* values[0] is the input */
    int n_values;
    int output;                /* the value the output op reads: the logits */
    size_t arena_size;         /* the activations' part of the arena */
    size_t scratch_size;       /* the SIMD kernels' scratch after it (0 without SIMD) */
    size_t unpack_size;        /* the largest K (rounded up to 16) of a conv2d/linear with
                                  packed 4-bit weights, 0 if none: a build without SIMD
                                  kernels unpacks one output channel's weights after the
                                  activations (qrt_arena_size_portable) */
    const void *const *packed; /* per op: the SIMD packed form of a conv2d/linear in model
                                  memory (simd.h), or NULL (portable kernel); NULL without
                                  SIMD kernels */
    qrt_isa isa;               /* the path qrt_run takes: qrt_isa_best() after loading,
                                  then what qrt_model_set_isa chose */
} qrt_model;

/* Bytes of model memory qrt_model_load needs for this file: an upper bound computed
 * from a scan of the container. 0 if the container is unreadable (qrt_model_load then
 * says why). */
size_t qrt_model_mem_size(const uint8_t *file, size_t len);

/* The same bound as a constant expression, for a build without SIMD kernels (every
 * non-x86 build, such as a microcontroller's): what qrt_model_mem_size returns there for
 * a file whose header has n_tensors tensors, n_meta metadata entries, header_len bytes, a
 * graph of graph_lines lines (its '\n' + 1) and i32_bytes of I32 tensor data (4-bit
 * weights stay packed in the file there, so they take no model memory). The table
 * entries are sized by the compiler that evaluates it, so a static buffer of this size
 * fits the target's own structures. `qat export --format c` writes a file's counts into
 * its header (docs/mcu.md). The layout is model.c's: each block rounded up to 16 bytes
 * (QRT_ALIGN), plus 15 to align the caller's base. */
#define QRT_MEM_ROUND16_(n) ((((size_t)(n)) + 15u) / 16u * 16u)
#define QRT_MODEL_MEM_SIZE_PORTABLE(n_tensors, n_meta, header_len, graph_lines, i32_bytes) \
    (15u + QRT_MEM_ROUND16_((size_t)(n_tensors) * sizeof(qrt_tensor)) +                  \
     QRT_MEM_ROUND16_((size_t)(n_meta) * sizeof(qrt_meta)) +                              \
     QRT_MEM_ROUND16_((size_t)(header_len) + 1u) +                                        \
     QRT_MEM_ROUND16_((size_t)(graph_lines) * sizeof(qrt_op)) +                           \
     QRT_MEM_ROUND16_((size_t)(graph_lines) * sizeof(qrt_value)) +                        \
     QRT_MEM_ROUND16_((size_t)(graph_lines) * sizeof(int)) + QRT_MEM_ROUND16_(i32_bytes))

/* Validates the file (see the top of this header) and fills *m. On failure returns the
 * status, fills *err (may be NULL) and leaves *m zeroed. */
qrt_status qrt_model_load(qrt_model *m, const uint8_t *file, size_t len, void *mem,
                          size_t mem_len, qrt_error *err);

/* Bytes of activation arena qrt_run needs (the activations, plus the SIMD kernels'
 * scratch when the build has them, or else the room to unpack one output channel of
 * 4-bit weights). */
size_t qrt_arena_size(const qrt_model *m);

/* What qrt_arena_size returns in a build without SIMD kernels (any non-x86 target), on
 * any build: the activations and the 4-bit unpacking room, arena_size + unpack_size. */
size_t qrt_arena_size_portable(const qrt_model *m);

/* Runs one image: pixels are raw uint8, qrt_model_input(m)->numel of them, (C, H, W).
 * Writes qrt_model_n_outputs(m) int8 logits (logits may be NULL) and the index of the
 * largest, ties to the lowest (argmax may be NULL). No allocation, no floating point.
 * QRT_STATUS_INVALID_ARG if m, pixels or arena is NULL or m is not loaded. */
qrt_status qrt_run(const qrt_model *m, const uint8_t *pixels, void *arena, int8_t *logits,
                   int *argmax);

/* qrt_run on a given path (simd.h; one the CPU lacks falls back to the best below it):
 * every path gives the same logits, byte for byte. */
qrt_status qrt_run_isa(const qrt_model *m, qrt_isa isa, const uint8_t *pixels, void *arena,
                       int8_t *logits, int *argmax);

/* n >= 1 images in one thread: pixels holds n images of qrt_model_input(m)->numel
 * bytes; writes logits[s * K ...] (K = qrt_model_n_outputs(m)) and argmax[s] (each may
 * be NULL), image s's exactly as qrt_run gives them. arena: qrt_arena_size_batch(m, n)
 * bytes (any alignment), holding each image's activations and one shared scratch. On a
 * SIMD path each packed linear runs once over the n images as an int8 GEMM (simd.h:
 * qrt_linear_batch_s8_isa); the other ops run image after image. n <= 0 does nothing.
 * QRT_STATUS_INVALID_ARG as qrt_run. */
size_t qrt_arena_size_batch(const qrt_model *m, int n);
qrt_status qrt_run_batch(const qrt_model *m, const uint8_t *pixels, int n, void *arena, int8_t *logits,
                         int *argmax);
qrt_status qrt_run_batch_isa(const qrt_model *m, qrt_isa isa, const uint8_t *pixels, int n, void *arena,
                             int8_t *logits, int *argmax);

/* Chooses the path qrt_run takes for this model (qrt_model_load picks the best the CPU
 * has): isa lowered to the best supported path at or below it (qrt_isa_resolve), so a
 * request for AVX-512 VNNI on an AVX2 machine runs AVX2. Returns the path set
 * (QRT_ISA_PORTABLE, and nothing set, if m is NULL or not loaded). Every path gives the
 * same bytes; this only changes the speed. Call it before threads share the model: it
 * writes m->isa, which qrt_run reads. */
qrt_isa qrt_model_set_isa(qrt_model *m, qrt_isa isa);

/* Inspection (`qat inspect`). */
const qrt_value *qrt_model_input(const qrt_model *m);  /* shape, z, s of the input */
const qrt_value *qrt_model_output(const qrt_model *m); /* the logits value */
int qrt_model_n_outputs(const qrt_model *m);           /* number of logits */
int qrt_model_n_ops(const qrt_model *m);
const qrt_op *qrt_model_op(const qrt_model *m, int i);       /* NULL if out of range */
const qrt_value *qrt_model_value(const qrt_model *m, int i); /* NULL if out of range */
/* Op i's SIMD packed form (simd.h), or NULL: it runs the portable kernel. */
const void *qrt_model_op_packed(const qrt_model *m, int i);
/* The tensor of that name, or NULL (binary search). */
const qrt_tensor *qrt_model_tensor(const qrt_model *m, const char *name);

#endif
