/* c_source.h - the integer model as C source, for firmware (docs/mcu.md): the bytes of
 * qat's int8 model file (docs/int8-format.md, export/int8.h) as an aligned `const`
 * array, and a header stating what the firmware needs to run it with runtime/ without a
 * file system or an allocator: the model memory and activation arena sizes as
 * constants, the input shape, the number of classes and their names.
 *
 *     // DIR/qat_model.h, DIR/qat_model.c
 *     qat_c_model_info info = {...};   // sizes from the runtime (the caller loads the file)
 *     if (qat_c_source_write("fw/model", "qat_model", file, len, &info, &err)) puts(err.msg);
 *     // DIR/qat_images.h, DIR/qat_images.c: test images to embed beside it
 *     qat_c_images_write("fw/model", "qat_images", pixels, labels, n, dim, &err);
 *
 * The sizes come from the caller because export/ does not include runtime/ (docs/design.md:
 * dependencies point down; `qat export --format c` in cli/ loads the file with the runtime
 * and fills them). The header states the model memory as
 * QRT_MODEL_MEM_SIZE_PORTABLE(counts) (runtime/runtime.h), a constant expression that
 * the target's compiler evaluates with the target's structure sizes; the arena is the
 * same on every target (offsets planned from the values' sizes alone).
 */
#ifndef QAT_EXPORT_C_SOURCE_H
#define QAT_EXPORT_C_SOURCE_H

#include <stddef.h>
#include <stdint.h>

#include "autograd/common.h"

/* What the header states besides the bytes. */
typedef struct qat_c_model_info {
    size_t arena_bytes;        /* the activation arena of a build without SIMD kernels */
    /* the file's counts, for QRT_MODEL_MEM_SIZE_PORTABLE (runtime.h) */
    size_t n_tensors, n_meta, header_len, graph_lines, i32_bytes;
    int in_c, in_h, in_w;      /* the input, uint8 (C, H, W) */
    int n_classes;             /* logits */
    const char *class_names;   /* comma-separated, or NULL: the names are "0", "1", ... */
    const char *source;        /* for the comment at the top (may be NULL) */
    const char *quant;         /* ditto */
} qat_c_model_info;

/* True if `name` can name the files and prefix the symbols: a C identifier of at most
 * 72 characters that starts with a letter ([A-Za-z][A-Za-z0-9_]*: a leading '_' is the
 * C implementation's) and not with the runtime's prefix qrt_ (any case: <NAME>_H would
 * be one of runtime/'s include guards). */
bool qat_c_identifier_ok(const char *name);

/* Writes dir/<name>.h and dir/<name>.c (atomically, io/atomic_file.h): the `len` bytes
 * of `file` as `const unsigned char <name>_data[]`, 16-byte aligned under GCC and Clang,
 * and <NAME>_BYTES, <NAME>_ARENA_SIZE, <NAME>_MEM_SIZE, <NAME>_INPUT_{C,H,W,SIZE},
 * <NAME>_N_CLASSES and `<name>_class_names`. INVALID_ARG for a bad name, IO with the
 * path in the message. `dir` must exist. */
qat_status qat_c_source_write(const char *dir, const char *name, const uint8_t *file, size_t len,
                              const qat_c_model_info *info, qat_error *err);

/* Writes dir/<name>.h and dir/<name>.c: n images of dim uint8 pixels each, (C, H, W)
 * row-major as the runtime reads them, as `const unsigned char <name>[n][dim]`, and their
 * labels as `const unsigned short <name>_labels[n]` (<NAME>_N, <NAME>_DIM). n >= 1;
 * labels in [0, 65535]. */
qat_status qat_c_images_write(const char *dir, const char *name, const uint8_t *pixels,
                              const int32_t *labels, int n, int dim, qat_error *err);

#endif
