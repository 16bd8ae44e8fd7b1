/* fileio.h - (internal to data/) checked reading of plain or gzip files.
 *
 * zlib's gzread reads a gzip file and a plain file alike (it looks at the first bytes),
 * so every loader reads through it and accepts both. What gzread does not do on its own
 * is insist that the gzip stream is complete: a file cut inside the deflate data or
 * inside its 8-byte trailer (CRC-32, length) makes gzread return what it could decode
 * and record Z_BUF_ERROR ("unexpected end of file"). qat_data_read_upto checks for that
 * after every short read, so a truncated .gz is an error, never a shorter data set. A
 * CRC mismatch is Z_DATA_ERROR and gzread returns -1; that is an error too.
 *
 * Every failure is recorded as "<path>: <problem>" in the qat_error.
 */
#ifndef QAT_DATA_FILEIO_H
#define QAT_DATA_FILEIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <zlib.h>

#include "autograd/common.h"

typedef struct qat_data_file {
    gzFile gz;
    const char *path; /* borrowed, for messages */
    size_t pos;       /* uncompressed bytes consumed */
} qat_data_file;

/* Opens a regular file for reading (IO error naming the file if it cannot). */
qat_status qat_data_open(qat_data_file *f, const char *path, qat_error *err);
/* Reads up to n bytes; *got < n only at the end of the data. FORMAT error for a
 * truncated or corrupt gzip stream, IO error for a failed read. */
qat_status qat_data_read_upto(qat_data_file *f, void *buf, size_t n, size_t *got,
                              qat_error *err);
/* Reads exactly n bytes of `what` ("image data", ...); a short file is a FORMAT error
 * saying how many bytes were expected and found. */
qat_status qat_data_read(qat_data_file *f, void *buf, size_t n, const char *what,
                         qat_error *err);
/* Like qat_data_read into a new malloc'd buffer, grown as data arrives so that a header
 * claiming more than the file holds costs at most about twice the file's real size. */
qat_status qat_data_read_alloc(qat_data_file *f, size_t n, void **out, const char *what,
                               qat_error *err);
/* The data must end here: trailing bytes are a FORMAT error (a sign of a wrong header). */
qat_status qat_data_expect_end(qat_data_file *f, qat_error *err);
void qat_data_close(qat_data_file *f);

/* A whole file into memory (plain or gzip), at most max_bytes; NUL-terminated (the
 * terminator is not counted in *len). */
qat_status qat_data_slurp(const char *path, size_t max_bytes, char **out, size_t *len,
                          qat_error *err);

/* big-endian uint32 */
uint32_t qat_data_be32(const unsigned char *p);

#endif
