/* atomic_file.h - writing a file so that a crash never leaves half of it: every writer of
 * a file format (safetensors checkpoints and int8 models, later ONNX and C source) goes
 * through here.
 *
 *     qat_chunk parts[] = {{header, header_len}, {data, data_len}};
 *     if (qat_file_write_atomic("run/model.safetensors", parts, 2, &err)) ... err.msg ...
 *
 * The bytes go to "<path>.tmp-<pid>-<k>" in the same directory, are flushed and fsync'ed,
 * and the temporary file is renamed over <path>; then the directory is fsync'ed. A process
 * killed at any moment leaves either the previous file or the new one at <path>, never a
 * mixture (tests/test_checkpoint.c kills a writer 20 times to check). A kill can leave a
 * temporary file behind; the next successful write to the same path deletes those whose
 * writer process no longer exists. One writer per path at a time: two processes writing
 * the same path concurrently each produce a complete file, but which one ends up at
 * <path> is unspecified. If <path> is a symbolic link, the link itself is replaced; if it
 * is a regular file, the new file keeps its permission bits (and, when qat runs as root,
 * its owner); anything else there (a directory, a device such as /dev/null, a FIFO, a
 * socket) is refused and left alone (file_check.h).
 */
#ifndef QAT_ATOMIC_FILE_H
#define QAT_ATOMIC_FILE_H

#include <stddef.h>

#include "autograd/common.h"

/* A piece of the file: len bytes at data (data may be NULL when len is 0). */
typedef struct qat_chunk {
    const void *data;
    size_t len;
} qat_chunk;

/* Writes the chunks, in order, to `path` atomically. IO when the file cannot be written
 * (the previous file at `path`, if any, is left as it was; the one exception is a failed
 * fsync of the directory after the rename, reported although the new file is in place),
 * NOMEM; the message names the path and what failed. */
qat_status qat_file_write_atomic(const char *path, const qat_chunk *chunks, size_t n_chunks,
                                 qat_error *err);

#endif
