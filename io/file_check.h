/* file_check.h - what qat checks about a path before it reads or writes a file there, so
 * that a wrong path fails at once with a message that says what the path is, and never
 * after an epoch of training or by replacing something that is not a file.
 *
 *     if (qat_file_check_output("run/model.safetensors", &err)) ... err.msg ...
 *
 * Outputs are written by qat_file_write_atomic (atomic_file.h), which makes the same
 * target check again at write time.
 */
#ifndef QAT_FILE_CHECK_H
#define QAT_FILE_CHECK_H

#include "autograd/common.h"

/* A file qat is about to read: refuses a path that does not exist, a directory and an
 * empty regular file (IO or FORMAT, the message naming the path and what it is). FIFOs
 * and devices are let through (a loader that needs a regular file says so itself). */
qat_status qat_file_check_input(const char *path, qat_error *err);

/* A file qat will write at the end of a long job: the target must be absent, a regular
 * file or a symbolic link (the link itself is replaced); a directory, a device, a FIFO or
 * a socket there is refused. Its directory must exist and take a new file, which this
 * checks by creating and deleting a temporary file there (the name pattern of
 * atomic_file.h). IO with the path and the reason. */
qat_status qat_file_check_output(const char *path, qat_error *err);

/* The target check alone (no probe): OK when `path` is absent, a regular file or a
 * symbolic link; IO naming what it is otherwise. */
qat_status qat_file_check_target(const char *path, qat_error *err);

/* "a directory", "a character device", "a FIFO", ... for a stat mode. */
const char *qat_file_kind(unsigned mode);

#endif
