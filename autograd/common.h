/* common.h - what every qat module shares: status codes, the error record, asserts.
 *
 * Two kinds of failure, two mechanisms (house style, point 6):
 *  - A programmer error (a NULL where the API forbids it, an index out of range that
 *    the caller computed) is a bug: QAT_ASSERT prints the expression and file:line and
 *    aborts. These are never reachable from user input.
 *  - Everything a user can cause (a wrong shape, a bad file, a bad flag) returns a
 *    qat_status and leaves a human-readable message in a qat_error. Library code never
 *    calls exit(); only the command-line tool does.
 */
#ifndef QAT_COMMON_H
#define QAT_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

typedef enum qat_status {
    QAT_STATUS_OK = 0,
    QAT_STATUS_INVALID_ARG, /* a NULL, a negative size, an option out of range */
    QAT_STATUS_SHAPE,       /* tensor shapes that do not fit together */
    QAT_STATUS_NOMEM,       /* an allocation failed */
    QAT_STATUS_IO,          /* a file could not be opened, read or written */
    QAT_STATUS_FORMAT,      /* a file was read but its contents are wrong */
    QAT_STATUS_NUMERIC,     /* a NaN or Inf where a finite number is required */
} qat_status;

/* A short, fixed name for a status ("shape mismatch", ...). */
const char *qat_status_str(qat_status s);

/* An error record: the first failure wins, later ones are ignored so the message
 * names the root cause, not its consequences. */
#define QAT_ERROR_MSG_LEN 512
typedef struct qat_error {
    qat_status status;
    char msg[QAT_ERROR_MSG_LEN];
} qat_error;

/* Records a failure (if none is recorded yet) and returns `s`, so callers can write
 * `return qat_error_set(err, QAT_STATUS_SHAPE, "linear: ...", ...);`. `err` may be NULL. */
qat_status qat_error_set(qat_error *err, qat_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void qat_error_clear(qat_error *err);

#define QAT_ASSERT(cond)                                                              \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "qat: assertion failed: %s (%s:%d)\n", #cond, __FILE__,   \
                    __LINE__);                                                        \
            abort();                                                                  \
        }                                                                             \
    } while (0)

/* QAT_HOT marks a hot elementwise or reduction loop: gcc compiles it for AVX-512
 * (x86-64-v4), AVX2 (x86-64-v3) and the baseline, and the loader picks the best the CPU
 * has (target_clones, an ifunc). All give the same bits: the build never contracts
 * a * b + c into an FMA (-ffp-contract=off) and does not reassociate (no -ffast-math),
 * and the reductions spell out their lanes, so only the vector width changes. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define QAT_HOT __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define QAT_HOT
#endif

#define QAT_MAX(a, b) ((a) > (b) ? (a) : (b))
#define QAT_MIN(a, b) ((a) < (b) ? (a) : (b))

#endif
