#include "fileio.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

qat_status qat_data_open(qat_data_file *f, const char *path, qat_error *err) {
    QAT_ASSERT(f && path);
    f->gz = NULL;
    f->path = path;
    f->pos = 0;
    struct stat st;
    if (stat(path, &st) != 0)
        return qat_error_set(err, QAT_STATUS_IO, "%s: cannot open: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return qat_error_set(err, QAT_STATUS_IO, "%s: cannot open: not a regular file", path);
    errno = 0;
    f->gz = gzopen(path, "rb");
    if (!f->gz)
        return qat_error_set(err, QAT_STATUS_IO, "%s: cannot open: %s", path,
                             errno ? strerror(errno) : "out of memory");
    gzbuffer(f->gz, 128u << 10); /* fewer, larger reads than the default 8 KiB */
    return QAT_STATUS_OK;
}

void qat_data_close(qat_data_file *f) {
    if (f && f->gz) gzclose_r(f->gz);
    if (f) f->gz = NULL;
}

uint32_t qat_data_be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* zlib's last error for f, without the "<path>: " prefix gzerror puts on it. */
static const char *zlib_msg(const qat_data_file *f, int *errnum) {
    const char *m = gzerror(f->gz, errnum);
    size_t lp = strlen(f->path);
    if (strncmp(m, f->path, lp) == 0 && m[lp] == ':' && m[lp + 1] == ' ') m += lp + 2;
    return m;
}

qat_status qat_data_read_upto(qat_data_file *f, void *buf, size_t n, size_t *got,
                              qat_error *err) {
    unsigned char *p = buf;
    *got = 0;
    while (*got < n) {
        /* gzread takes an unsigned and returns an int: stay well below INT_MAX. */
        size_t want = QAT_MIN(n - *got, (size_t)1 << 30);
        int r = gzread(f->gz, p + *got, (unsigned)want);
        int errnum = Z_OK;
        const char *zmsg = zlib_msg(f, &errnum);
        if (r < 0) {
            if (errnum == Z_ERRNO)
                return qat_error_set(err, QAT_STATUS_IO, "%s: read failed: %s", f->path,
                                     strerror(errno));
            return qat_error_set(err, QAT_STATUS_FORMAT,
                                 "%s: corrupt gzip data (zlib: %s); the file is damaged, "
                                 "download or copy it again",
                                 f->path, zmsg);
        }
        *got += (size_t)r;
        f->pos += (size_t)r;
        if ((size_t)r < want) {
            /* Short read: the end of the data, or a gzip stream that stops early
             * (zlib reports that as Z_BUF_ERROR and still returns the bytes it had). */
            if (errnum == Z_BUF_ERROR)
                return qat_error_set(err, QAT_STATUS_FORMAT,
                                     "%s: truncated gzip stream: it ends after %zu "
                                     "uncompressed bytes, before its end marker (zlib: %s); "
                                     "the file is incomplete, download or copy it again",
                                     f->path, f->pos, zmsg);
            if (errnum != Z_OK)
                return qat_error_set(err, QAT_STATUS_FORMAT, "%s: corrupt gzip data (zlib: %s)",
                                     f->path, zmsg);
            break;
        }
    }
    return QAT_STATUS_OK;
}

qat_status qat_data_read(qat_data_file *f, void *buf, size_t n, const char *what,
                         qat_error *err) {
    size_t start = f->pos, got = 0;
    qat_status s = qat_data_read_upto(f, buf, n, &got, err);
    if (s) return s;
    if (got < n)
        return qat_error_set(err, QAT_STATUS_FORMAT,
                             "%s: truncated: expected %zu bytes of %s at byte %zu, but "
                             "the data ends at byte %zu",
                             f->path, n, what, start, f->pos);
    return QAT_STATUS_OK;
}

qat_status qat_data_read_alloc(qat_data_file *f, size_t n, void **out, const char *what,
                               qat_error *err) {
    *out = NULL;
    size_t start = f->pos, have = 0;
    size_t cap = QAT_MIN(n, (size_t)1 << 20);
    unsigned char *buf = malloc(cap ? cap : 1);
    if (!buf) return qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", f->path);
    while (have < n) {
        if (have == cap) {
            cap = cap > n / 2 ? n : 2 * cap;
            unsigned char *bigger = realloc(buf, cap);
            if (!bigger) {
                free(buf);
                return qat_error_set(err, QAT_STATUS_NOMEM,
                                     "%s: out of memory reading %zu bytes of %s", f->path, n,
                                     what);
            }
            buf = bigger;
        }
        size_t want = cap - have, got = 0;
        qat_status s = qat_data_read_upto(f, buf + have, want, &got, err);
        if (s) {
            free(buf);
            return s;
        }
        have += got;
        if (got < want) { /* short read: the data ended */
            free(buf);
            return qat_error_set(err, QAT_STATUS_FORMAT,
                                 "%s: truncated: expected %zu bytes of %s at byte %zu, but "
                                 "the data ends at byte %zu",
                                 f->path, n, what, start, f->pos);
        }
    }
    *out = buf;
    return QAT_STATUS_OK;
}

qat_status qat_data_expect_end(qat_data_file *f, qat_error *err) {
    size_t end = f->pos;
    unsigned char scratch[4096];
    size_t got = 0, extra = 0;
    do { /* count the extra bytes (up to 1 MiB) for the message */
        qat_status s = qat_data_read_upto(f, scratch, sizeof scratch, &got, err);
        if (s) return s;
        extra += got;
    } while (got == sizeof scratch && extra < ((size_t)1 << 20));
    if (extra)
        return qat_error_set(err, QAT_STATUS_FORMAT,
                             "%s: %s%zu unexpected bytes after byte %zu, where the header "
                             "says the data ends",
                             f->path, got == sizeof scratch ? "at least " : "", extra, end);
    return QAT_STATUS_OK;
}

qat_status qat_data_slurp(const char *path, size_t max_bytes, char **out, size_t *len,
                          qat_error *err) {
    *out = NULL;
    *len = 0;
    qat_data_file f;
    qat_status s = qat_data_open(&f, path, err);
    if (s) return s;
    size_t cap = 1 << 16, have = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        qat_data_close(&f);
        return qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
    }
    for (;;) {
        size_t got = 0;
        s = qat_data_read_upto(&f, buf + have, cap - have, &got, err);
        if (s) break;
        have += got;
        if (have > max_bytes) {
            s = qat_error_set(err, QAT_STATUS_FORMAT,
                              "%s: larger than the limit of %zu bytes", path, max_bytes);
            break;
        }
        if (have < cap) break; /* end of data */
        size_t bigger_cap = cap > max_bytes / 2 ? max_bytes + 1 : 2 * cap;
        char *bigger = realloc(buf, bigger_cap + 1);
        if (!bigger) {
            s = qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
            break;
        }
        buf = bigger;
        cap = bigger_cap;
    }
    qat_data_close(&f);
    if (s) {
        free(buf);
        return s;
    }
    buf[have] = '\0';
    *out = buf;
    *len = have;
    return QAT_STATUS_OK;
}
