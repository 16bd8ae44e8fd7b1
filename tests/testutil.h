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

/* Fails unless got and want hold the same bits everywhere (-0 differs from 0); the
 * message gives the first mismatch. */
void assert_bits_equal(const float *got, const float *want, size_t n, const char *what);

/* Runs `cli ARGS` in directory `dir` with stdout and stderr captured into out (n bytes);
 * returns the exit status (-1 if it did not exit). For tests of the qat command. */
int test_run_cli(const char *dir, const char *cli, char *out, size_t n, const char *args);
/* The whole file at `path`, NUL-terminated (one byte more than *len, which may be NULL);
 * fails the test if it cannot be read. Free with free(). */
void *test_read_file(const char *path, size_t *len);
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

/* ---- safetensors files built by hand (test_runtime, test_runtime_batch, test_container) ----
 *
 * A file is a list of tensors (raw bytes, contiguous in the data buffer in list order)
 * and a graph text; tf_header writes the JSON header (metadata first: format,
 * format_version, a "source" with escaped quotes, the graph JSON-escaped), pack_file
 * the 8-byte length, the header padded with spaces to a multiple of 8, and the data.
 * tmodel is the runtime's whole-file test model (its graph is in testutil.c). */

#include <stdbool.h>

#include "runtime/kernels.h"

typedef struct ttensor {
    char name[48];
    char dtype[8];
    int ndim;
    int64_t shape[4];
    uint8_t *data;
    size_t nbytes;
    size_t offset; /* in the data buffer */
} ttensor;

typedef struct tfile {
    ttensor t[32];
    int n;
    char graph[8192];
} tfile;

ttensor *tf_add(tfile *tf, const char *name, const char *dtype, int ndim, const int64_t *shape,
               const void *data, size_t nbytes);
void tf_free(tfile *tf);
void tf_add_i32(tfile *tf, const char *name, const int32_t *v, int n);
/* Two 4-bit two's-complement weights per byte, weight 2i in the low nibble. */
void tf_add_packed(tfile *tf, const char *name, const int8_t *w, size_t n);
/* Appends printf-formatted text to the graph. */
void gappend(tfile *tf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The header JSON (malloc'ed): metadata (format, version, the graph JSON-escaped), then
 * the tensors with contiguous offsets in their order. */
char *tf_header(tfile *tf, const char *format, const char *version);
/* uint64 N | header padded with spaces to a multiple of 8 | data (malloc'ed, *len bytes). */
uint8_t *pack_file(const char *header, const uint8_t *data, size_t data_len, size_t *len);
/* pack_file of the header and the tensors' bytes. */
uint8_t *tf_bytes_with(tfile *tf, const char *header, size_t *len);
/* A copy of s with the first occurrence of a replaced by b; fails the test if absent. */
char *replace1(const char *s, const char *a, const char *b);

/* A shift that maps a typical accumulator of K products with weights up to maxw to tens
 * of levels, +-1; random per-channel integers: weights within wbits, bias, M0, shift. */
int typical_shift(trng *r, size_t K, int maxw);
void gen_channel_params(trng *r, int OC, size_t K, int wbits, int8_t *w, int32_t *b,
                        int32_t *m, int32_t *s);

/* A conv2d or linear layer: the reference's integers. */
typedef struct tlayer {
    int OC;
    size_t K;
    int wbits;
    int8_t *w;
    int32_t *b, *m, *s;
} tlayer;

void tlayer_init(tlayer *L, trng *r, int OC, size_t K, int wbits);
void tlayer_free(tlayer *L);
/* Adds <name>.weight (I8 with wshape, or packed U8), .bias, .mult, .shift. */
void tf_add_layer(tfile *tf, const char *name, const tlayer *L, bool packed, int wndim,
                  const int64_t *wshape);

#define ADD_A_M0 (1 << 30)
#define ADD_B_M0 1518500250
#define ADD_OUT_M0 1800000000

extern const qrt_add_params ADD4, ADD13;
extern const qrt_conv_params P_C1, P_DW, P_C2, P_G;
extern const qrt_pool_params P_MP, P_AP;
extern const qrt_linear_params P_FC1, P_FC2;

/* The test model (values numbered as in the graph; line = op index + 1):
 *   0 input 3,9,9 z=-5
 *   1 conv2d c1 in=0 8,9,9 k3 s1 p1, 8-bit, ReLU (act_min = z_out)
 *   2 maxpool in=1 8,5,5 k3 s2 p1
 *   3 conv2d dw in=2 8,5,5 k3 s1 p1 groups=8 (depthwise), 4-bit packed, clamp [7, 100]
 *   4 add in=2,3 8,5,5
 *   5 avgpool in=4 8,3,3 k3 s2 p1
 *   6 conv2d c2 in=0 5,4,4 k3 s2 p0, 4-bit packed, 135 weights (odd: a padding nibble)
 *   7 conv2d g in=5 6,2,2 k3 s2 p1 groups=2
 *   8 flatten in=7 24
 *   9 global_avgpool in=6 5,1,1
 *  10 linear fc1 in=8 10
 *  11 flatten in=9 5
 *  12 linear fc2 in=11 10, 3-bit weights stored as I8
 *  13 add in=10,12 10
 *     output in=13 */
typedef struct tmodel {
    tlayer c1, dw, c2, g, fc1, fc2;
    tfile tf;
} tmodel;

/* Builds the model's integers (seeded) and its tensors and graph. */
void tmodel_init(tmodel *tm, uint64_t seed);
void tmodel_free(tmodel *tm);
/* The whole file: format "qat-int8", version "1" (malloc'ed, *len bytes). */
uint8_t *tmodel_bytes(tmodel *tm, size_t *len);

/* ---- damaged safetensors headers (test_runtime, test_checkpoint, test_container) ------ */

/* A header (over data_len bytes of data) the runtime's loader refuses, and '|'-separated
 * words its message contains. Some are model-level refusals (the metadata a model file
 * needs), which the container alone accepts. */
typedef struct runtime_bad_header {
    const char *header;
    size_t data;
    const char *want;
} runtime_bad_header;
extern const runtime_bad_header runtime_bad_headers[];
extern const size_t n_runtime_bad_headers;

/* A header (over data_len bytes: 0, 1, 2, ... mod 251) qat_safetensors_read refuses,
 * and words its message contains. */
typedef struct st_bad_header {
    const char *what, *header;
    size_t data_len;
    const char *needle;
} st_bad_header;
extern const st_bad_header st_bad_headers[];
extern const size_t n_st_bad_headers;

/* A safetensors file by hand (malloc'ed, *len bytes): the 8-byte length n (normally the
 * header's length), the header bytes, then data_len bytes of data (0, 1, 2, ... mod 251),
 * as test_checkpoint writes them. */
uint8_t *st_raw_bytes(uint64_t n, const char *header, size_t header_len, size_t data_len, size_t *len);

#endif
