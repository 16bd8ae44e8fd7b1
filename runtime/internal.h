/* internal.h - what the loader's source files share (json.c, safetensors.c, container.c,
 * graph.c, model.c). Not part of the API: include runtime.h instead. */
#ifndef QRT_INTERNAL_H
#define QRT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime.h"

#if defined(__GNUC__)
#define QRT_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define QRT_PRINTF(f, a)
#endif

/* A compile-time check in C99 (which has no _Static_assert): an array of negative size
 * when cond is false. At file scope. */
#define QRT_STATIC_ASSERT(cond, name) typedef char qrt_static_assert_##name[(cond) ? 1 : -1]

/* Fills *err (status, line, formatted message) and returns st. */
qrt_status qrt_fail(qrt_error *err, qrt_status st, int line, const char *fmt, ...)
    QRT_PRINTF(4, 5);

/* Returns the status of x if it is not QRT_STATUS_OK. */
#define TRY(x)                                                                           \
    do {                                                                                 \
        qrt_status st_ = (x);                                                            \
        if (st_ != QRT_STATUS_OK) return st_;                                            \
    } while (0)

/* Limits: refuse what cannot be a sensible model before it costs time or memory. */
#define QRT_MAX_HEADER 100000000u /* the safetensors reference implementation's limit */
#define QRT_MAX_LINES 10000       /* graph lines; keeps load time bounded */
#define QRT_MAX_DIM (1 << 24)     /* one dimension of a graph value */
#define QRT_MAX_NUMEL (1 << 28)   /* elements of one graph value */
#define QRT_MAX_KERNEL 1024       /* k, stride, pad */
#define QRT_ALIGN 16              /* model memory blocks and arena offsets */

static inline size_t qrt_align_up(size_t n) { return (n + (QRT_ALIGN - 1)) & ~(size_t)(QRT_ALIGN - 1); }

/* Weights of 4 bits or fewer (U8, two per byte). With SIMD kernels (x86-64) the loader
 * unpacks them into model memory once, as the kernels' packing reads int8. Without (every
 * other build, a microcontroller's), they stay packed in the file buffer, and qrt_run
 * unpacks one output channel at a time into the arena's end before the int8 kernel runs
 * on it (run.c): the model memory holds no copy, the arena K bytes more. */
#if defined(QRT_SIMD_X86)
#define QRT_UNPACK_AT_LOAD 1
#else
#define QRT_UNPACK_AT_LOAD 0
#endif

/* Packed weight i: the low nibble of byte i/2 for even i, the high one for odd i, 4-bit
 * two's complement (v >= 8 stands for v - 16). */
static inline int qrt_nibble(const uint8_t *packed, uint64_t i) {
    const int v = (packed[i / 2] >> (i % 2 ? 4 : 0)) & 0xF;
    return (v ^ 8) - 8;
}

/* ---- JSON reader (json.c): a cursor over the header bytes, no allocation ---------- */

typedef struct qrt_json {
    const uint8_t *begin, *p, *end; /* the header; p is the cursor */
    qrt_error *err;
} qrt_json;

/* Skips JSON whitespace (space, tab, CR, LF). */
void qrt_json_ws(qrt_json *j);
/* True if the next byte is c (no whitespace skipping). */
bool qrt_json_peek(const qrt_json *j, char c);
/* Consumes c or fails with "expected <what>". */
qrt_status qrt_json_expect(qrt_json *j, char c, const char *what);
/* At an opening quote: decodes the string (escapes, \uXXXX with surrogate pairs, UTF-8
 * validated; NUL and raw control characters refused). If out is not NULL, writes up to
 * cap - 1 bytes of it and a NUL. *len gets the full decoded length, *newlines (may be
 * NULL) the number of decoded '\n'. */
qrt_status qrt_json_string(qrt_json *j, char *out, size_t cap, size_t *len, size_t *newlines);
/* An integer: -?(0|[1-9][0-9]*), |v| <= 2^53; fractions and exponents are refused. */
qrt_status qrt_json_int(qrt_json *j, int64_t *v);
/* Fails with "header byte <offset>: <message>". */
qrt_status qrt_json_fail(qrt_json *j, const char *fmt, ...) QRT_PRINTF(2, 3);

/* ---- the container (safetensors.c) ------------------------------------------------- */

typedef struct qrt_header_scan {
    size_t header_len;          /* N */
    const uint8_t *data;        /* the data buffer, file + 8 + N */
    size_t data_len;
    size_t n_tensors;
    size_t n_meta;              /* __metadata__ entries */
    uint64_t i32_bytes, u8_bytes; /* totals over the I32 and U8 tensors */
    /* the first __metadata__ values of these keys, at their opening quote, or NULL */
    const uint8_t *format, *format_version, *graph;
    size_t graph_lines;         /* decoded '\n' in the graph + 1 */
    size_t strings_used;        /* storing pass: bytes of the string pool used */
} qrt_header_scan;

/* A string pool in caller memory. */
typedef struct qrt_pool {
    char *p;
    size_t cap, used;
} qrt_pool;

/* Parses and checks the header (all container rules but coverage and duplicate names
 * and keys, which need the table). With tensors != NULL (and meta != NULL) also stores
 * each tensor entry and metadata entry, names, keys and values decoded into names
 * (names_cap bytes; header_len + 1 always suffice). */
qrt_status qrt_st_parse(const uint8_t *file, size_t len, qrt_header_scan *scan,
                        qrt_tensor *tensors, qrt_meta *meta, char *names, size_t names_cap,
                        qrt_error *err);

/* ---- the container checked whole (container.c) -------------------------------------- */

/* Bytes of container memory for a scanned header, each block aligned to QRT_ALIGN (the
 * caller aligns the base): the tensor table, the metadata table, the string pool. */
uint64_t qrt_container_bytes(const qrt_header_scan *s);

/* The container's blocks in memory, writable by the model loader that owns them. */
typedef struct qrt_container_mem {
    qrt_tensor *tensors;
    qrt_meta *meta;
    char *strings;      /* the pool: names, keys, values, then strings_used bytes used */
    size_t strings_cap, strings_used;
} qrt_container_mem;

/* From a measuring scan *s of file, stores and checks the container into mem (aligned to
 * QRT_ALIGN, qrt_container_bytes(s) bytes): the tables, then coverage of the data buffer,
 * duplicate tensor names and duplicate metadata keys. Fills *c (tensors sorted by name,
 * metadata by key) and *cm. */
qrt_status qrt_container_fill(qrt_container *c, qrt_container_mem *cm, const uint8_t *file,
                              size_t len, const qrt_header_scan *s, uint8_t *mem, qrt_error *err);

/* Element size of a dtype in bytes. */
int qrt_dtype_size(qrt_dtype d);

/* ---- the graph (graph.c) ----------------------------------------------------------- */

typedef struct qrt_graph_mem {
    qrt_op *ops;         /* max_lines entries */
    qrt_value *values;   /* max_lines entries */
    int *live;           /* max_lines entries: the arena planner's live list */
    size_t max_lines;
    int8_t *unpacked;    /* room for unpacked 4-bit weights */
    size_t unpacked_cap;
} qrt_graph_mem;

/* Parses the decoded graph text (modified in place: fields are NUL-terminated), checks
 * it against the tensors (sorted by name) and fills m's ops, values, output and arena. */
qrt_status qrt_graph_load(qrt_model *m, qrt_tensor *tensors, int n_tensors, char *text,
                          qrt_graph_mem *gm, qrt_error *err);

/* The kernel parameters of a conv2d op (run.c). */
qrt_conv_params qrt_op_conv_params(const qrt_model *m, const qrt_op *op);

/* Ops i and i + 1 are a depthwise conv and a pointwise conv that alone reads its output,
 * both packed (m->packed set for them): the pair qrt_run gives the fused AVX2 kernel
 * (simd.h, qrt_conv2d_dw_pw_s8_isa); their parameters in *p_dw and *p_pw. (run.c) */
bool qrt_dw_pw_pair(const qrt_model *m, int i, qrt_conv_params *p_dw, qrt_conv_params *p_pw);

#endif
