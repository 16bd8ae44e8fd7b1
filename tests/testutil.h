/* testutil.h - what the cmocka test programs share.
 *
 * Fixture files are written once by the Python generators in tests/fixtures/ (PyTorch
 * on the same inputs) and committed. Layout, all little-endian:
 *
 *     uint32 magic = 0x46544151 ("QATF")   uint32 version = 1   uint32 count
 *     count times:
 *         uint32 name_len, name bytes (no NUL)
 *         uint32 ndim, uint32 dims[ndim]
 *         float32 data[product of dims]
 *
 * Comparisons print the position, got and expected of the first mismatch and fail the
 * test (cmocka's fail_msg), so a red test says where it went wrong.
 */
#ifndef QAT_TESTUTIL_H
#define QAT_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka.h needs the three headers above first. */
#include <cmocka.h>

#include "autograd/tape.h"

#define QAT_FIXTURE_MAGIC 0x46544151u
#define QAT_FIXTURE_VERSION 1u

typedef struct qat_fixture_entry {
    char name[128];
    int ndim;
    int shape[8];
    size_t n;
    float *data;
} qat_fixture_entry;

typedef struct qat_fixture {
    qat_fixture_entry *entries;
    int count;
} qat_fixture;

/* Loads QAT_FIXTURE_DIR/<file>; fails the test with a message if it cannot. */
qat_fixture *fixture_load(const char *file);
void fixture_free(qat_fixture *f);
/* The entry's data; fails the test if absent or if its size differs from n (n = 0: any
 * size). */
const float *fixture_get(const qat_fixture *f, const char *name, size_t n);
const qat_fixture_entry *fixture_entry(const qat_fixture *f, const char *name);

/* Fails unless |got - want| <= atol + rtol * |want| everywhere. */
void assert_close(const float *got, const float *want, size_t n, double rtol, double atol,
                  const char *what);

/* Central finite-difference check of one tensor's gradient.
 * `forward` builds the graph from scratch on the (reset) tape and returns its output y
 * (any shape). The check uses the scalar L = sum_i w_i * y_i with fixed pseudo-random
 * weights w, summed in double; it seeds dL/dy = w, runs backward once, then perturbs
 * elements of `x->data` (all, or max_points of them evenly spread) by +-eps and compares
 * (L+ - L-) / (2 eps) with x->grad. `x` must outlive tape resets (allocate it with
 * test_tensor_new), and is restored exactly after each perturbation.
 * Points where the analytic and numeric slopes disagree only because a kink (ReLU at 0,
 * a max-pool tie) lies within eps are masked by `on_kink` (may be NULL). */
typedef qat_tensor *(*fd_forward_fn)(qat_tape *t, void *user);
typedef bool (*fd_kink_fn)(void *user, const qat_tensor *x, size_t i, float eps);
void fd_check(qat_tape *t, fd_forward_fn forward, void *user, qat_tensor *x, float eps,
              double rtol, double atol, size_t max_points, fd_kink_fn on_kink, const char *what);

/* A heap tensor with data and zeroed grad (survives tape resets); free with
 * test_tensor_free. */
qat_tensor *test_tensor_new(int ndim, const int *shape);
void test_tensor_free(qat_tensor *x);

/* A heap tensor filled from U(lo, hi) with a seeded generator (zeroed grad). */
qat_tensor *test_tensor_filled(int ndim, const int *shape, float lo, float hi, uint64_t seed);

/* Fixture entries are named "<case>.<field>" ("conv_s2.x"). */
/* The entry as a heap tensor (zeroed grad); free with test_tensor_free. */
qat_tensor *fixture_tensor(const qat_fixture *f, const char *c, const char *field);
const float *fixture_field(const qat_fixture *f, const char *c, const char *field, size_t n);
/* Compares got (n floats) with the entry to FIXTURE_RTOL relative, FIXTURE_ATOL absolute
 * (the 1e-4 relative; the small absolute term covers values near 0). */
#define FIXTURE_RTOL 1e-4
#define FIXTURE_ATOL 1e-5
void fixture_check(const qat_fixture *f, const char *c, const char *field, const float *got,
                   size_t n);

/* Fails unless y has exactly this shape. */
void assert_shape(const qat_tensor *y, int ndim, const int *shape, const char *what);
/* A failed op: y must be NULL, t->err set, and its message must mention one of the
 * '|'-separated spellings in `ops` ("maxpool|max_pool"), case-insensitively. */
void assert_op_failed(const qat_tape *t, const qat_tensor *y, const char *ops, const char *what);

/* A heap tensor holding a copy of `v` (zeroed grad); free with test_tensor_free. */
qat_tensor *test_tensor_from(int ndim, const int *shape, const float *v);

/* Fails unless got == want exactly everywhere (NaN equals NaN); the message gives the
 * first mismatch with its input inp[i]. */
void assert_same(const float *got, const float *want, const float *inp, size_t n, const char *what);

/* Runs `cli ARGS` in directory `dir` with stdout and stderr captured into out (n bytes);
 * returns the exit status (-1 if it did not exit). For tests of the qat command. */
int test_run_cli(const char *dir, const char *cli, char *out, size_t n, const char *args);
/* The number after "key": in a JSON text; fails the test if the key is absent. */
double test_json_number(const char *json, const char *key);

/* Fill with uniform values in [lo, hi) from a seeded generator. */
void fill_uniform(float *x, size_t n, float lo, float hi, uint64_t seed);

/* Integer test data (the runtime's tests): a splitmix64 stream, uniform integers in
 * [lo, hi], int8 buffers filled from it, and a malloc that fails the test when out of
 * memory. */
typedef struct trng {
    uint64_t s;
} trng;
uint64_t rnext(trng *r);
int64_t rint_in(trng *r, int64_t lo, int64_t hi);
void fill_s8(trng *r, int8_t *x, size_t n, int lo, int hi);
void *xmalloc(size_t n);

#endif
