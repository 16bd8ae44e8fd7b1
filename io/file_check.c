/* file_check.c - checks on the paths qat reads and writes (file_check.h). */
#include "file_check.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *qat_file_kind(unsigned mode) {
    switch (mode & S_IFMT) {
    case S_IFREG: return "a regular file";
    case S_IFDIR: return "a directory";
    case S_IFCHR: return "a character device";
    case S_IFBLK: return "a block device";
    case S_IFIFO: return "a FIFO";
    case S_IFSOCK: return "a socket";
    case S_IFLNK: return "a symbolic link";
    default: return "not a regular file";
    }
}

qat_status qat_file_check_input(const char *path, qat_error *err) {
    QAT_ASSERT(path != NULL);
    struct stat st;
    if (stat(path, &st) != 0) return qat_error_set(err, QAT_STATUS_IO, "%s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode))
        return qat_error_set(err, QAT_STATUS_IO, "%s: is a directory, not a model, checkpoint or data file", path);
    if (S_ISREG(st.st_mode) && st.st_size == 0)
        return qat_error_set(err, QAT_STATUS_FORMAT, "%s: empty file (0 bytes): not a model, checkpoint or data file",
                             path);
    return QAT_STATUS_OK;
}

qat_status qat_file_check_target(const char *path, qat_error *err) {
    QAT_ASSERT(path != NULL);
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT) return QAT_STATUS_OK;
        return qat_error_set(err, QAT_STATUS_IO, "%s: %s", path, strerror(errno));
    }
    if (S_ISREG(st.st_mode) || S_ISLNK(st.st_mode)) return QAT_STATUS_OK;
    return qat_error_set(err, QAT_STATUS_IO, "%s: exists and is %s; qat replaces only regular files: give a file path",
                         path, qat_file_kind((unsigned)st.st_mode));
}

qat_status qat_file_check_output(const char *path, qat_error *err) {
    qat_status s = qat_file_check_target(path, err);
    if (s) return s;
    if (!*path || path[strlen(path) - 1] == '/')
        return qat_error_set(err, QAT_STATUS_IO, "%s: names a directory, not a file", path);
    /* The directory must take a new file: try one, as the atomic write will. */
    size_t n = strlen(path) + 48;
    char *probe = malloc(n);
    if (!probe) return qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
    int fd = -1;
    for (int k = 0; k < 1000 && fd < 0; k++) {
        snprintf(probe, n, "%s.tmp-%ld-%d", path, (long)getpid(), 1000 + k);
        fd = open(probe, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0) s = qat_error_set(err, QAT_STATUS_IO, "%s: cannot create a file in its directory: %s", path, strerror(errno));
    else {
        close(fd);
        unlink(probe);
    }
    free(probe);
    return s;
}
