/* test_pool.c - max, average and global average pooling (layers/pool.h).
 *
 *  - forward and backward match PyTorch (tests/fixtures/layers.bin, cases maxpool_*,
 *    avgpool_*, gap) to 1e-4 relative: max pool with stride, padding and overlapping
 *    windows; average pool with padding counted in the divisor and with an odd input
 *    whose last row no window reaches;
 *  - the gradient matches central finite differences (max-pool inputs are distinct and
 *    spaced wider than the perturbation, and points near a tie are masked as well);
 *  - max pool never picks the padding and sends a tie's gradient to the first maximum;
 *  - shape_init rejects impossible windows; bad shapes return NULL with a message
 *    naming the op; a NULL input propagates.
 */
#include <ctype.h>
#include <math.h>
#include <string.h>

#include "autograd/rng.h"
#include "layers/pool.h"
#include "testutil.h"

#define FD_EPS 1e-2f
#define FD_RTOL 1e-2
#define FD_ATOL 1e-3

#define MAXPOOL_NAMES "maxpool|max_pool|max pool|max-pool"
#define AVGPOOL_NAMES "avgpool|avg_pool|avg pool|average pool|avg-pool"
#define GAP_NAMES "global"

/* Distinct values, a shuffled grid with spacing `gap` centred on 0: no two elements are
 * within a finite-difference step of each other, so max pool has no ties to flip. */
static qat_tensor *new_distinct(int ndim, const int *shape, float gap, uint64_t seed) {
    qat_tensor *x = test_tensor_new(ndim, shape);
    for (size_t i = 0; i < x->n; i++) x->data[i] = ((float)i - (float)x->n / 2) * gap;
    qat_rng r;
    qat_rng_init(&r, seed);
    for (size_t i = x->n - 1; i > 0; i--) {
        size_t j = qat_rng_below(&r, (uint32_t)(i + 1));
        float tmp = x->data[i];
        x->data[i] = x->data[j];
        x->data[j] = tmp;
    }
    return x;
}

/* ---- forward/backward against PyTorch ---------------------------------------------- */

typedef enum pool_kind { POOL_MAX, POOL_AVG, POOL_GLOBAL } pool_kind;

typedef struct pool_args {
    pool_kind kind;
    qat_tensor *x;
    int K, stride, pad;
} pool_args;

static qat_tensor *pool_forward(qat_tape *t, void *user) {
    pool_args *a = user;
    switch (a->kind) {
    case POOL_MAX: return qat_maxpool2d(t, a->x, a->K, a->stride, a->pad);
    case POOL_AVG: return qat_avgpool2d(t, a->x, a->K, a->stride, a->pad);
    case POOL_GLOBAL: return qat_global_avgpool(t, a->x);
    }
    return NULL;
}

/* state: the case name; cfg = [kernel, stride, pad] (none for "gap"). */
static void test_pool_fixture(void **state) {
    const char *c = *state;
    qat_fixture *fx = fixture_load("layers.bin");
    pool_args a = {.kind = strncmp(c, "max", 3) == 0   ? POOL_MAX
                           : strncmp(c, "avg", 3) == 0 ? POOL_AVG
                                                       : POOL_GLOBAL};
    if (a.kind != POOL_GLOBAL) {
        const float *cfg = fixture_field(fx, c, "cfg", 3);
        a.K = (int)cfg[0];
        a.stride = (int)cfg[1];
        a.pad = (int)cfg[2];
    }
    a.x = fixture_tensor(fx, c, "x");
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    qat_tensor *y = pool_forward(&t, &a);
    if (!y) fail_msg("%s failed: %s", c, t.err.msg);
    char name[128];
    snprintf(name, sizeof name, "%s.y", c);
    const qat_fixture_entry *ey = fixture_entry(fx, name);
    assert_shape(y, ey->ndim, ey->shape, name);
    fixture_check(fx, c, "y", y->data, y->n);
    if (qat_tape_backward_seeded(&t, y, fixture_field(fx, c, "dout", y->n)) != QAT_STATUS_OK)
        fail_msg("%s: backward failed: %s", c, t.err.msg);
    fixture_check(fx, c, "dx", a.x->grad, a.x->n);
    qat_tape_free(&t);
    test_tensor_free(a.x);
    fixture_free(fx);
}

/* ---- finite differences ------------------------------------------------------------- */

/* A max-pool point is a kink if another element of a window it shares lies within 2 eps:
 * the perturbation could swap which one is the maximum. */
static bool maxpool_kink(void *user, const qat_tensor *x, size_t i, float eps) {
    const pool_args *a = user;
    int H = x->shape[2], W = x->shape[3];
    size_t plane = (size_t)H * W, base = i / plane * plane;
    int h = (int)(i % plane) / W, w = (int)(i % plane) % W;
    for (int dh = -(a->K - 1); dh <= a->K - 1; dh++)
        for (int dw = -(a->K - 1); dw <= a->K - 1; dw++) {
            int hh = h + dh, ww = w + dw;
            if ((dh || dw) && hh >= 0 && hh < H && ww >= 0 && ww < W &&
                fabsf(x->data[base + (size_t)hh * W + ww] - x->data[i]) < 2 * eps)
                return true;
        }
    return false;
}

typedef struct pool_fd_case {
    const char *name;
    pool_kind kind;
    int shape[4];
    int K, stride, pad;
} pool_fd_case;

static pool_fd_case FD_CASES[] = {
    {"maxpool k3 s2 p1", POOL_MAX, {1, 2, 7, 7}, 3, 2, 1},
    {"maxpool k2 s2", POOL_MAX, {2, 2, 4, 5}, 2, 2, 0},
    {"maxpool k3 s1 p1 (overlapping)", POOL_MAX, {1, 1, 5, 5}, 3, 1, 1},
    {"avgpool k3 s2 p1", POOL_AVG, {1, 2, 7, 7}, 3, 2, 1},
    {"avgpool k2 s2 (odd input)", POOL_AVG, {1, 2, 5, 5}, 2, 2, 0},
    {"avgpool k3 s1 p1 (overlapping)", POOL_AVG, {1, 1, 4, 5}, 3, 1, 1},
    {"global avgpool", POOL_GLOBAL, {2, 3, 3, 4}, 0, 0, 0},
};

static void test_pool_fd(void **state) {
    const pool_fd_case *c = *state;
    pool_args a = {.kind = c->kind, .K = c->K, .stride = c->stride, .pad = c->pad};
    a.x = new_distinct(4, c->shape, 0.05f, 7);
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    char what[96];
    snprintf(what, sizeof what, "%s dx", c->name);
    fd_check(&t, pool_forward, &a, a.x, FD_EPS, FD_RTOL, FD_ATOL, 0,
             c->kind == POOL_MAX ? maxpool_kink : NULL, what);
    qat_tape_free(&t);
    test_tensor_free(a.x);
}

/* ---- max-pool specifics ------------------------------------------------------------- */

/* All inputs negative: a padding that counted as 0 would win every border window. */
static void test_maxpool_ignores_padding(void **state) {
    (void)state;
    qat_pool_shape s = {.N = 1, .C = 1, .H = 4, .W = 4, .K = 3, .stride = 2, .pad = 1};
    assert_true(qat_pool_shape_init(&s));
    assert_int_equal(s.OH, 2);
    assert_int_equal(s.OW, 2);
    float x[16];
    for (int i = 0; i < 16; i++) x[i] = -1.0f - 0.1f * (float)((i * 7) % 16);
    float out[4], want[4];
    int32_t argmax[4], want_arg[4];
    for (int oh = 0; oh < 2; oh++)
        for (int ow = 0; ow < 2; ow++) {
            float best = -INFINITY;
            int arg = -1;
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++) {
                    int h = oh * 2 - 1 + i, w = ow * 2 - 1 + j;
                    if (h < 0 || h >= 4 || w < 0 || w >= 4) continue;
                    if (x[h * 4 + w] > best) {
                        best = x[h * 4 + w];
                        arg = h * 4 + w;
                    }
                }
            want[oh * 2 + ow] = best;
            want_arg[oh * 2 + ow] = arg;
        }
    qat_maxpool_forward(out, argmax, x, &s);
    assert_close(out, want, 4, 0, 0, "maxpool of negative inputs with padding");
    for (int i = 0; i < 4; i++)
        if (argmax[i] != want_arg[i])
            fail_msg("argmax[%d] = %d, expected %d (flat h*W + w in the plane)", i, argmax[i],
                     want_arg[i]);
}

/* A window of equal values sends its whole gradient to the first of them in scan order
 * (PyTorch does the same): exactly one element per window receives dout. Checked for the
 * 2x2/stride 2 case and for general windows (with stride, padding and overlap), against a
 * reference loop. */
static void test_maxpool_tie_goes_to_first(void **state) {
    (void)state;
    const int cfg[][3] = {{2, 2, 0}, {3, 3, 0}, {3, 2, 1}, {2, 1, 0}};
    enum { H = 6, W = 6 };
    qat_tensor *x = test_tensor_new(4, (int[]){1, 1, H, W});
    for (size_t i = 0; i < x->n; i++) x->data[i] = -0.5f;
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    for (int k = 0; k < 4; k++) {
        int K = cfg[k][0], S = cfg[k][1], P = cfg[k][2];
        qat_tape_reset(&t);
        memset(x->grad, 0, x->n * sizeof(float));
        qat_tensor *y = qat_maxpool2d(&t, x, K, S, P);
        if (!y) fail_msg("%s", t.err.msg);
        float *dy = malloc(y->n * sizeof(float));
        float want[H * W] = {0};
        for (size_t i = 0; i < y->n; i++) dy[i] = (float)(i + 1);
        int OH = y->shape[2], OW = y->shape[3];
        for (int oy = 0; oy < OH; oy++)
            for (int ox = 0; ox < OW; ox++) {
                int first = -1;
                for (int i = 0; i < K && first < 0; i++)
                    for (int j = 0; j < K && first < 0; j++) {
                        int h = oy * S - P + i, w = ox * S - P + j;
                        if (h >= 0 && h < H && w >= 0 && w < W) first = h * W + w;
                    }
                want[first] += dy[oy * OW + ox];
            }
        assert_int_equal(qat_tape_backward_seeded(&t, y, dy), QAT_STATUS_OK);
        char what[96];
        snprintf(what, sizeof what, "maxpool k%d s%d p%d: tied windows route dout to the first", K,
                 S, P);
        assert_close(x->grad, want, H * W, 0, 0, what);
        free(dy);
    }
    qat_tape_free(&t);
    test_tensor_free(x);
}

/* ---- shapes, inference mode, bad arguments ------------------------------------------ */

static void test_pool_shape_init(void **state) {
    (void)state;
    qat_pool_shape s = {.N = 1, .C = 1, .H = 7, .W = 6, .K = 3, .stride = 2, .pad = 1};
    assert_true(qat_pool_shape_init(&s));
    assert_int_equal(s.OH, 4);
    assert_int_equal(s.OW, 3);
    qat_pool_shape bad = s;
    bad.K = 0;
    assert_false(qat_pool_shape_init(&bad));
    bad = s;
    bad.stride = 0;
    assert_false(qat_pool_shape_init(&bad));
    bad = s;
    bad.pad = -1;
    assert_false(qat_pool_shape_init(&bad));
    bad = s;
    bad.pad = 2; /* > K/2 */
    assert_false(qat_pool_shape_init(&bad));
    bad = s;
    bad.pad = 0;
    bad.K = 7; /* wider than W = 6 */
    assert_false(qat_pool_shape_init(&bad));
}

static void test_pool_inference(void **state) {
    (void)state;
    qat_tensor *x = new_distinct(4, (int[]){1, 2, 4, 4}, 0.1f, 8);
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    t.grad_enabled = false;
    qat_tensor *y1 = qat_maxpool2d(&t, x, 2, 2, 0);
    qat_tensor *y2 = qat_avgpool2d(&t, x, 2, 2, 0);
    qat_tensor *y3 = qat_global_avgpool(&t, x);
    assert_true(y1 && y2 && y3);
    assert_true(!y1->grad && !y2->grad && !y3->grad);
    assert_int_equal(t.n_nodes, 0);
    assert_shape(y3, 2, (int[]){1, 2}, "global avgpool output");
    /* A batch without gradient (pooling right after the input) records nothing either. */
    t.grad_enabled = true;
    qat_tape_reset(&t);
    qat_tensor *in = qat_tape_input(&t, 4, (int[]){1, 2, 4, 4}, x->data);
    assert_non_null(qat_maxpool2d(&t, in, 2, 2, 0));
    assert_non_null(qat_avgpool2d(&t, in, 2, 2, 0));
    assert_non_null(qat_global_avgpool(&t, in));
    assert_int_equal(t.n_nodes, 0);
    qat_tape_free(&t);
    test_tensor_free(x);
}

static void test_pool_bad_args(void **state) {
    (void)state;
    qat_tensor *x = new_distinct(4, (int[]){1, 2, 3, 3}, 0.1f, 9);
    qat_tensor *x2d = new_distinct(2, (int[]){2, 9}, 0.1f, 10);
    qat_tape t;
    qat_tape_init(&t, 1 << 16);

    assert_op_failed(&t, qat_maxpool2d(&t, x, 5, 1, 0), MAXPOOL_NAMES, "maxpool window 5 on 3x3");
    qat_tape_reset(&t);
    assert_op_failed(&t, qat_avgpool2d(&t, x, 5, 1, 0), AVGPOOL_NAMES, "avgpool window 5 on 3x3");
    qat_tape_reset(&t);
    assert_op_failed(&t, qat_maxpool2d(&t, x, 2, 0, 0), MAXPOOL_NAMES, "maxpool stride 0");
    qat_tape_reset(&t);
    assert_op_failed(&t, qat_avgpool2d(&t, x, 2, 2, 2), AVGPOOL_NAMES, "avgpool pad > K/2");
    qat_tape_reset(&t);
    assert_op_failed(&t, qat_maxpool2d(&t, x2d, 2, 2, 0), MAXPOOL_NAMES, "maxpool of a 2-D input");
    qat_tape_reset(&t);
    assert_op_failed(&t, qat_global_avgpool(&t, x2d), GAP_NAMES, "global avgpool of a 2-D input");
    qat_tape_reset(&t);

    assert_null(qat_maxpool2d(&t, NULL, 2, 2, 0));
    assert_null(qat_avgpool2d(&t, NULL, 2, 2, 0));
    assert_null(qat_global_avgpool(&t, NULL));
    assert_int_equal(t.err.status, QAT_STATUS_OK);
    assert_int_equal(t.n_nodes, 0);

    qat_tape_free(&t);
    test_tensor_free(x);
    test_tensor_free(x2d);
}

#define FIXTURE_TEST(c) {"test_pool_fixture " c, test_pool_fixture, NULL, NULL, (void *)(c)}
#define FD_TEST(i, label) {"test_pool_fd " label, test_pool_fd, NULL, NULL, &FD_CASES[i]}

int main(void) {
    const struct CMUnitTest tests[] = {
        FIXTURE_TEST("maxpool_s2p1"),
        FIXTURE_TEST("maxpool_k2"),
        FIXTURE_TEST("maxpool_overlap"),
        FIXTURE_TEST("avgpool_s2p1"),
        FIXTURE_TEST("avgpool_k2_odd"),
        FIXTURE_TEST("avgpool_overlap"),
        FIXTURE_TEST("gap"),
        FD_TEST(0, "maxpool_k3s2p1"),
        FD_TEST(1, "maxpool_k2s2"),
        FD_TEST(2, "maxpool_overlap"),
        FD_TEST(3, "avgpool_k3s2p1"),
        FD_TEST(4, "avgpool_k2s2_odd"),
        FD_TEST(5, "avgpool_overlap"),
        FD_TEST(6, "global_avgpool"),
        cmocka_unit_test(test_maxpool_ignores_padding),
        cmocka_unit_test(test_maxpool_tie_goes_to_first),
        cmocka_unit_test(test_pool_shape_init),
        cmocka_unit_test(test_pool_inference),
        cmocka_unit_test(test_pool_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
