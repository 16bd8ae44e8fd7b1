/* fuzz_util.h - shared by the fuzz harnesses (tests/fuzz/README.md): the input as a file,
 * since qat's loaders read paths. The file lives in a directory of its own per process
 * (on tmpfs when /dev/shm exists) and is rewritten for every input. */
#ifndef QAT_FUZZ_UTIL_H
#define QAT_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char fuzz_dir_[64];

/* Removes the scratch directory at exit (its files are flat). */
static inline void fuzz_cleanup_(void) {
    char cmd[96];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", fuzz_dir_);
    if (system(cmd) != 0) fprintf(stderr, "fuzz: could not remove %s\n", fuzz_dir_);
}

/* A path "<dir>/<name>" in this process's scratch directory, made on first use. */
static inline const char *fuzz_path(const char *name) {
    static char path[160];
    if (!fuzz_dir_[0]) {
        snprintf(fuzz_dir_, sizeof fuzz_dir_, "%s/qat-fuzz-XXXXXX", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
        if (!mkdtemp(fuzz_dir_)) abort();
        atexit(fuzz_cleanup_);
    }
    const char *dir = fuzz_dir_;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return path;
}

/* Writes n bytes to the scratch file `name` and returns its path. */
static inline const char *fuzz_write(const char *name, const void *data, size_t n) {
    const char *p = fuzz_path(name);
    FILE *f = fopen(p, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) abort();
    return p;
}

/* A broken promise: print it and abort, so the fuzzer keeps the input. */
#define FUZZ_CHECK(cond, ...)                                                                                        \
    do {                                                                                                             \
        if (!(cond)) {                                                                                               \
            fprintf(stderr, "fuzz: promise broken: " __VA_ARGS__);                                                   \
            fputc('\n', stderr);                                                                                     \
            abort();                                                                                                 \
        }                                                                                                            \
    } while (0)

#endif
