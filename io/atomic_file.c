/* atomic_file.c - write to a temporary file, fsync, rename over the target (atomic_file.h). */
#include "atomic_file.h"

#include "file_check.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

/* "dir" and "base" of a path: "a/b/c" -> "a/b", "c"; "c" -> ".", "c"; "/c" -> "/", "c". */
static char *path_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return strdup(".");
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, path, n);
        d[n] = '\0';
    }
    return d;
}

static const char *path_base(const char *path) {
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

/* Parses "<digits>" at s up to `stop` (a char or '\0'), into *v; returns the position
 * after the digits, or NULL. */
static const char *parse_digits(const char *s, char stop, long *v) {
    if (!isdigit((unsigned char)*s)) return NULL;
    long x = 0;
    for (; isdigit((unsigned char)*s); s++) {
        if (x > 100000000L) return NULL; /* no pid or counter is that long */
        x = x * 10 + (*s - '0');
    }
    if (*s != stop) return NULL;
    *v = x;
    return s;
}

/* Deletes "<base>.tmp-<pid>-<k>" files in dir whose writer process no longer exists:
 * kill(pid, 0) failing with ESRCH. A live process (or one we may not signal, EPERM) keeps
 * its file, so a save in progress is never disturbed on this machine. Best effort: any
 * failure here is ignored, since the checkpoint itself is already safely in place. */
static void sweep_stale_temps(const char *dir, const char *base) {
    DIR *d = opendir(dir);
    if (!d) return;
    size_t bl = strlen(base);
    pid_t self = getpid();
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *nm = e->d_name;
        if (strncmp(nm, base, bl) != 0 || strncmp(nm + bl, ".tmp-", 5) != 0) continue;
        long pid, k;
        const char *p = parse_digits(nm + bl + 5, '-', &pid);
        if (!p || !parse_digits(p + 1, '\0', &k)) continue;
        if (pid <= 0 || (pid_t)pid == self) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        size_t len = strlen(dir) + strlen(nm) + 2;
        char *full = malloc(len);
        if (!full) break;
        snprintf(full, len, "%s/%s", dir, nm);
        unlink(full);
        free(full);
    }
    closedir(d);
}

/* Writes the chunks to a temporary file next to `path`, makes it durable and renames it
 * over `path`:
 *  1. open "<path>.tmp-<pid>-<k>" with O_EXCL (k counts up past names that exist, so
 *     this process never writes into a file someone else created);
 *  2. fwrite everything, fflush, fsync: the bytes are on disk before the name points
 *     at them;
 *  3. rename(2) over `path`: atomic in POSIX, so a reader (or a crash) sees the old
 *     file or the new one;
 *  4. fsync the directory, so the rename itself survives a power cut.
 * A kill between 1 and 3 leaves the temporary file; sweep_stale_temps removes it later. */
qat_status qat_file_write_atomic(const char *path, const qat_chunk *chunks, size_t n_chunks,
                                 qat_error *err) {
    QAT_ASSERT(path != NULL && (chunks != NULL || n_chunks == 0));
    size_t tlen = strlen(path) + 48;
    char *tmp = malloc(tlen);
    char *dir = path_dir(path);
    if (!tmp || !dir) {
        free(tmp);
        free(dir);
        return qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
    }
    /* A device, FIFO, socket or directory at path is refused, not replaced; a regular
     * file's permission bits (and, for root, its owner) carry over to the new file. */
    qat_status st = qat_file_check_target(path, err);
    if (st) goto done;
    struct stat old;
    const bool had = lstat(path, &old) == 0 && S_ISREG(old.st_mode);
    int fd = -1;
    for (int k = 0; k < 1000 && fd < 0; k++) {
        snprintf(tmp, tlen, "%s.tmp-%ld-%d", path, (long)getpid(), k);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST) break;
    }
    if (fd < 0) {
        st = qat_error_set(err, QAT_STATUS_IO, "%s: cannot create the temporary file %s: %s",
                           path, tmp, strerror(errno));
        goto done;
    }
    if (had && (fchmod(fd, old.st_mode & 07777) != 0 ||
                (geteuid() == 0 && fchown(fd, old.st_uid, old.st_gid) != 0))) {
        st = qat_error_set(err, QAT_STATUS_IO, "%s: cannot give the temporary file %s the old file's mode: %s", path,
                           tmp, strerror(errno));
        close(fd);
        unlink(tmp);
        goto done;
    }
    FILE *fp = fdopen(fd, "wb");
    if (!fp) {
        st = qat_error_set(err, QAT_STATUS_IO, "%s: fdopen: %s", path, strerror(errno));
        close(fd);
        unlink(tmp);
        goto done;
    }
    bool ok = true;
    for (size_t i = 0; ok && i < n_chunks; i++) {
        QAT_ASSERT(chunks[i].data != NULL || chunks[i].len == 0);
        ok = chunks[i].len == 0 || fwrite(chunks[i].data, 1, chunks[i].len, fp) == chunks[i].len;
    }
    const char *stage = "write";
    if (ok && fflush(fp) != 0) ok = false, stage = "flush";
    if (ok && fsync(fileno(fp)) != 0) ok = false, stage = "fsync";
    int saved = errno;
    if (fclose(fp) != 0 && ok) ok = false, stage = "close", saved = errno;
    if (!ok) {
        unlink(tmp);
        st = qat_error_set(err, QAT_STATUS_IO, "%s: %s of the temporary file %s failed: %s", path,
                           stage, tmp, strerror(saved));
        goto done;
    }
    if (rename(tmp, path) != 0) {
        saved = errno;
        unlink(tmp);
        st = qat_error_set(err, QAT_STATUS_IO, "%s: cannot rename %s over it: %s", path, tmp,
                           strerror(saved));
        goto done;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        /* Some file systems cannot sync a directory (EINVAL); the file is complete
         * either way, so only a real I/O error is reported. */
        if (fsync(dfd) != 0 && errno != EINVAL)
            st = qat_error_set(err, QAT_STATUS_IO, "%s: fsync of the directory %s failed: %s",
                               path, dir, strerror(errno));
        close(dfd);
    }
    sweep_stale_temps(dir, path_base(path));
done:
    free(tmp);
    free(dir);
    return st;
}
