/* test_tape.c - the step arena and the autograd tape (autograd/arena.h, autograd/tape.h).
 *
 *  - arena: every allocation is QAT_ARENA_ALIGN-aligned and distinct, calloc zeroes,
 *    allocations larger than a block work, and after reset the same steps reuse the same
 *    memory: n_system_allocs stops growing after the first step (also for a real
 *    forward/backward step on a tape);
 *  - tape: backward runs nodes last to first; a tensor feeding two consumers receives
 *    the sum of both gradients, complete before its own producer's backward runs;
 *    parameter gradients accumulate across backward calls;
 *  - inference mode records no node and allocates no gradient;
 *  - backward refuses a NULL, non-scalar or gradient-less loss, and a tape that already
 *    failed, with a message; views share memory; the first error wins until reset.
 * The ops here (scale, sum2, a logger) are defined in this file, so the tape is tested
 * apart from the layers; one test runs real layers for the arena-reuse check.
 */
#include <stdint.h>
#include <string.h>

#include "autograd/arena.h"
#include "autograd/tape.h"
#include "layers/activation.h"
#include "layers/linear.h"
#include "layers/loss.h"
#include "testutil.h"

/* ---- test ops ----------------------------------------------------------------------- */

/* y = a x */
typedef struct scale_ctx {
    qat_tensor *x, *y;
    float a;
} scale_ctx;

static void scale_backward(qat_tape *t, void *p) {
    scale_ctx *c = p;
    if (c->x->grad)
        for (size_t i = 0; i < c->x->n; i++) c->x->grad[i] += c->a * c->y->grad[i];
}

static qat_tensor *op_scale(qat_tape *t, qat_tensor *x, float a) {
    if (!x) return NULL;
    bool g = qat_tape_needs_grad(t, x, NULL, NULL);
    qat_tensor *y = qat_tape_tensor(t, x->ndim, x->shape, g);
    if (!y) return NULL;
    for (size_t i = 0; i < x->n; i++) y->data[i] = a * x->data[i];
    if (g) {
        scale_ctx *c = qat_tape_record(t, scale_backward, sizeof *c, "scale");
        if (!c) return NULL;
        *c = (scale_ctx){x, y, a};
    }
    return y;
}

/* y = sum(a) + sum(b), one element. */
typedef struct sum2_ctx {
    qat_tensor *a, *b, *y;
} sum2_ctx;

static void sum2_backward(qat_tape *t, void *p) {
    sum2_ctx *c = p;
    if (c->a->grad)
        for (size_t i = 0; i < c->a->n; i++) c->a->grad[i] += c->y->grad[0];
    if (c->b->grad)
        for (size_t i = 0; i < c->b->n; i++) c->b->grad[i] += c->y->grad[0];
}

static qat_tensor *op_sum2(qat_tape *t, qat_tensor *a, qat_tensor *b) {
    if (!a || !b) return NULL;
    bool g = qat_tape_needs_grad(t, a, b, NULL);
    qat_tensor *y = qat_tape_tensor(t, 1, (int[]){1}, g);
    if (!y) return NULL;
    double s = 0;
    for (size_t i = 0; i < a->n; i++) s += a->data[i];
    for (size_t i = 0; i < b->n; i++) s += b->data[i];
    y->data[0] = (float)s;
    if (g) {
        sum2_ctx *c = qat_tape_record(t, sum2_backward, sizeof *c, "sum2");
        if (!c) return NULL;
        *c = (sum2_ctx){a, b, y};
    }
    return y;
}

/* A node that only logs its id when its backward runs. */
typedef struct order_log {
    int ids[16];
    int n;
} order_log;

typedef struct log_ctx {
    order_log *log;
    int id;
} log_ctx;

static void log_backward(qat_tape *t, void *p) {
    log_ctx *c = p;
    c->log->ids[c->log->n++] = c->id;
}

static void record_log_node(qat_tape *t, order_log *log, int id, const char *name) {
    log_ctx *c = qat_tape_record(t, log_backward, sizeof *c, name);
    assert_non_null(c);
    /* The context comes back zeroed. */
    for (size_t i = 0; i < sizeof *c; i++) assert_int_equal(((unsigned char *)c)[i], 0);
    c->log = log;
    c->id = id;
}

static bool contains(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

/* ---- arena -------------------------------------------------------------------------- */

static void test_arena_alignment(void **state) {
    (void)state;
    qat_arena a;
    qat_arena_init(&a, 4096);
    const size_t sizes[] = {1, 3, 17, 64, 65, 0, 1000, 5000, 2, 4095, 4096, 4097, 7};
    enum { K = sizeof sizes / sizeof sizes[0] };
    unsigned char *p[K];
    for (int i = 0; i < K; i++) {
        p[i] = qat_arena_alloc(&a, sizes[i]);
        assert_non_null(p[i]);
        if ((uintptr_t)p[i] % QAT_ARENA_ALIGN != 0)
            fail_msg("allocation %d (%zu bytes) at %p is not %d-aligned", i, sizes[i],
                     (void *)p[i], QAT_ARENA_ALIGN);
        memset(p[i], 0xA0 + i, sizes[i]); /* writable; ASan checks the extent */
    }
    /* No two allocations overlap: each still holds its own fill. */
    for (int i = 0; i < K; i++)
        for (size_t j = 0; j < sizes[i]; j++)
            if (p[i][j] != (unsigned char)(0xA0 + i))
                fail_msg("allocation %d byte %zu was overwritten by another allocation", i, j);
    /* calloc zeroes memory that held data before the reset. */
    qat_arena_reset(&a);
    assert_int_equal(a.in_use, 0);
    unsigned char *z = qat_arena_calloc(&a, 1000);
    assert_non_null(z);
    assert_int_equal((uintptr_t)z % QAT_ARENA_ALIGN, 0);
    for (int j = 0; j < 1000; j++)
        if (z[j] != 0) fail_msg("calloc byte %d is %d", j, z[j]);
    qat_arena_free(&a);
}

/* One "step": a fixed pattern of allocations, some larger than the block size. */
static void arena_step(qat_arena *a, void **ptrs) {
    const size_t sizes[] = {100, 3000, 2000, 9000, 64, 4000, 1, 20000, 500, 3500};
    for (int i = 0; i < 10; i++) {
        ptrs[i] = qat_arena_alloc(a, sizes[i]);
        assert_non_null(ptrs[i]);
        memset(ptrs[i], i, sizes[i]);
    }
}

static void test_arena_reuse_after_reset(void **state) {
    (void)state;
    qat_arena a;
    qat_arena_init(&a, 4096);
    void *first[10], *again[10];
    arena_step(&a, first);
    size_t allocs = a.n_system_allocs, peak = a.peak;
    assert_true(allocs > 1); /* the pattern needs several blocks */
    for (int step = 0; step < 20; step++) {
        qat_arena_reset(&a);
        arena_step(&a, again);
        if (a.n_system_allocs != allocs)
            fail_msg("step %d: n_system_allocs grew from %zu to %zu", step + 2, allocs,
                     a.n_system_allocs);
        for (int i = 0; i < 10; i++)
            if (again[i] != first[i])
                fail_msg("step %d: allocation %d moved from %p to %p", step + 2, i, first[i],
                         again[i]);
        assert_int_equal(a.peak, peak);
    }
    qat_arena_free(&a);
}

/* The same for a real training step: forward, loss, backward on a tape reset each time. */
static void test_tape_steps_reuse_memory(void **state) {
    (void)state;
    qat_tensor *w1 = test_tensor_new(2, (int[]){16, 8});
    qat_tensor *b1 = test_tensor_new(1, (int[]){16});
    qat_tensor *w2 = test_tensor_new(2, (int[]){4, 16});
    fill_uniform(w1->data, w1->n, -0.3f, 0.3f, 1);
    fill_uniform(b1->data, b1->n, -0.3f, 0.3f, 2);
    fill_uniform(w2->data, w2->n, -0.3f, 0.3f, 3);
    float batch[5 * 8];
    fill_uniform(batch, 40, -1, 1, 4);
    const int32_t labels[5] = {0, 3, 1, 2, 3};
    qat_tape t;
    qat_tape_init(&t, 1024); /* small blocks: the step spans several */
    size_t allocs = 0;
    for (int step = 0; step < 10; step++) {
        qat_tape_reset(&t);
        assert_int_equal(t.n_nodes, 0);
        assert_null(t.last);
        qat_tensor *x = qat_tape_input(&t, 2, (int[]){5, 8}, batch);
        qat_tensor *h = qat_relu(&t, qat_linear(&t, x, w1, b1));
        qat_tensor *loss = qat_cross_entropy(&t, qat_linear(&t, h, w2, NULL), labels);
        if (!loss) fail_msg("step %d: %s", step, t.err.msg);
        assert_int_equal(t.n_nodes, 4);
        if (qat_tape_backward(&t, loss) != QAT_STATUS_OK) fail_msg("%s", t.err.msg);
        if (step == 0) {
            allocs = t.arena.n_system_allocs;
            assert_true(allocs > 1);
        } else if (t.arena.n_system_allocs != allocs) {
            fail_msg("step %d: n_system_allocs grew from %zu to %zu", step,
                     allocs, t.arena.n_system_allocs);
        }
    }
    qat_tape_free(&t);
    test_tensor_free(w1);
    test_tensor_free(b1);
    test_tensor_free(w2);
}

/* ---- backward ----------------------------------------------------------------------- */

static void test_backward_runs_last_to_first(void **state) {
    (void)state;
    order_log log = {.n = 0};
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    qat_tensor *y = qat_tape_tensor(&t, 1, (int[]){1}, true);
    assert_non_null(y);
    assert_non_null(y->grad);
    assert_true(y->grad[0] == 0.0f);
    record_log_node(&t, &log, 1, "first");
    record_log_node(&t, &log, 2, "second");
    record_log_node(&t, &log, 3, "third");
    assert_int_equal(t.n_nodes, 3);
    assert_string_equal(t.last->op, "third");
    assert_string_equal(t.last->prev->op, "second");
    assert_int_equal(qat_tape_backward(&t, y), QAT_STATUS_OK);
    assert_int_equal(log.n, 3);
    assert_int_equal(log.ids[0], 3);
    assert_int_equal(log.ids[1], 2);
    assert_int_equal(log.ids[2], 1);
    assert_true(y->grad[0] == 1.0f); /* seeded with 1 */
    qat_tape_free(&t);
}

/* x feeds two consumers; a feeds sum2 directly and through b = 3a, so a's gradient must be
 * complete (1 + 3) before a's own backward passes it on to x. */
static void test_grad_accumulates_over_consumers(void **state) {
    (void)state;
    qat_tensor *x = test_tensor_new(1, (int[]){3});
    fill_uniform(x->data, 3, -1, 1, 5);
    qat_tape t;
    qat_tape_init(&t, 1 << 16);

    qat_tensor *loss = op_sum2(&t, op_scale(&t, x, 2), op_scale(&t, x, 3));
    assert_non_null(loss);
    assert_int_equal(qat_tape_backward(&t, loss), QAT_STATUS_OK);
    const float five[3] = {5, 5, 5};
    assert_close(x->grad, five, 3, 0, 0, "d(sum 2x + sum 3x)/dx");

    /* Parameter gradients accumulate across backward calls until zeroed. */
    qat_tape_reset(&t);
    loss = op_sum2(&t, op_scale(&t, x, 2), op_scale(&t, x, 3));
    assert_int_equal(qat_tape_backward(&t, loss), QAT_STATUS_OK);
    const float ten[3] = {10, 10, 10};
    assert_close(x->grad, ten, 3, 0, 0, "second backward without zeroing");

    memset(x->grad, 0, sizeof(float) * 3);
    qat_tape_reset(&t);
    qat_tensor *a = op_scale(&t, x, 2);
    qat_tensor *b = op_scale(&t, a, 3);
    loss = op_sum2(&t, a, b);
    assert_int_equal(qat_tape_backward(&t, loss), QAT_STATUS_OK);
    const float four[3] = {4, 4, 4}, eight[3] = {8, 8, 8};
    assert_close(a->grad, four, 3, 0, 0, "d loss / d a = 1 + 3");
    assert_close(x->grad, eight, 3, 0, 0, "d loss / d x = 2 (1 + 3)");

    /* A seeded backward adds the seed to y's gradient: the vector-Jacobian product. */
    memset(x->grad, 0, sizeof(float) * 3);
    qat_tape_reset(&t);
    qat_tensor *y = op_scale(&t, x, -2);
    const float dy[3] = {1, 0.5f, -3};
    assert_int_equal(qat_tape_backward_seeded(&t, y, dy), QAT_STATUS_OK);
    const float want[3] = {-2, -1, 6};
    assert_close(x->grad, want, 3, 0, 0, "seeded backward");
    /* The seed is added to what y's gradient already holds, not written over it (an
     * empty tape: only the seed acts). */
    qat_tape_reset(&t);
    assert_int_equal(qat_tape_backward_seeded(&t, x, dy), QAT_STATUS_OK);
    const float want2[3] = {-1, -0.5f, 3};
    assert_close(x->grad, want2, 3, 0, 0, "seed added to an existing gradient");
    qat_tape_free(&t);
    test_tensor_free(x);
}

/* ---- inference mode ----------------------------------------------------------------- */

static void test_inference_mode(void **state) {
    (void)state;
    qat_tensor *x = test_tensor_new(2, (int[]){4, 6});
    qat_tensor *w = test_tensor_new(2, (int[]){5, 6});
    fill_uniform(x->data, x->n, -1, 1, 6);
    fill_uniform(w->data, w->n, -1, 1, 7);
    qat_tape t;
    qat_tape_init(&t, 1 << 16);

    /* The same graph in training mode, for the arena usage. */
    qat_tensor *y = qat_relu(&t, qat_linear(&t, x, w, NULL));
    assert_non_null(y);
    assert_non_null(y->grad);
    size_t train_use = t.arena.in_use;

    qat_tape_reset(&t);
    t.grad_enabled = false;
    qat_tensor *g = qat_tape_tensor(&t, 2, (int[]){3, 3}, true);
    assert_non_null(g);
    assert_null(g->grad);
    qat_tape_reset(&t);
    qat_tensor *s = op_scale(&t, x, 2);
    assert_non_null(s);
    assert_null(s->grad);
    y = qat_relu(&t, qat_linear(&t, x, w, NULL));
    assert_non_null(y);
    assert_null(y->grad);
    assert_int_equal(t.n_nodes, 0);
    assert_null(t.last);
    assert_false(qat_tape_needs_grad(&t, x, w, NULL));
    /* Fewer bytes than training: no gradients and no saved state. */
    qat_tape_reset(&t);
    y = qat_relu(&t, qat_linear(&t, x, w, NULL));
    if (!(t.arena.in_use < train_use))
        fail_msg("inference used %zu arena bytes, training %zu", t.arena.in_use, train_use);
    /* Nothing to differentiate. */
    assert_int_not_equal(qat_tape_backward_seeded(&t, y, x->data), QAT_STATUS_OK);
    assert_true(t.err.msg[0] != '\0');
    qat_tape_free(&t);
    test_tensor_free(x);
    test_tensor_free(w);
}

/* ---- failures ----------------------------------------------------------------------- */

static void test_backward_refuses_bad_loss(void **state) {
    (void)state;
    order_log log = {.n = 0};
    qat_tape t;
    qat_tape_init(&t, 1 << 16);

    assert_int_equal(qat_tape_backward(&t, NULL), QAT_STATUS_INVALID_ARG);
    assert_true(contains(t.err.msg, "backward"));

    qat_tape_reset(&t);
    assert_int_equal(t.err.status, QAT_STATUS_OK);
    assert_string_equal(t.err.msg, "");
    qat_tensor *v = qat_tape_tensor(&t, 2, (int[]){2, 3}, true);
    record_log_node(&t, &log, 1, "n");
    assert_int_equal(qat_tape_backward(&t, v), QAT_STATUS_SHAPE);
    assert_true(contains(t.err.msg, "backward"));
    assert_true(contains(t.err.msg, "(2, 3)"));
    assert_int_equal(log.n, 0); /* nothing ran */

    qat_tape_reset(&t);
    const float one = 1;
    qat_tensor *c = qat_tape_input(&t, 1, (int[]){1}, &one);
    assert_null(c->grad);
    assert_int_not_equal(qat_tape_backward(&t, c), QAT_STATUS_OK);
    assert_true(contains(t.err.msg, "backward"));

    qat_tape_reset(&t);
    assert_int_not_equal(qat_tape_backward_seeded(&t, NULL, &one), QAT_STATUS_OK);
    assert_true(t.err.msg[0] != '\0');

    /* A tape that already failed does not run backward: it returns the first error. */
    qat_tape_reset(&t);
    qat_tensor *y = qat_tape_tensor(&t, 1, (int[]){1}, true);
    record_log_node(&t, &log, 2, "n");
    qat_tape_fail(&t, QAT_STATUS_SHAPE, "op: first failure");
    qat_tape_fail(&t, QAT_STATUS_NOMEM, "op: second failure");
    assert_int_equal(t.err.status, QAT_STATUS_SHAPE);
    assert_string_equal(t.err.msg, "op: first failure");
    assert_int_equal(qat_tape_backward(&t, y), QAT_STATUS_SHAPE);
    assert_int_equal(log.n, 0);
    assert_string_equal(t.err.msg, "op: first failure");
    qat_tape_free(&t);
}

static void test_tape_tensor_and_view(void **state) {
    (void)state;
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    assert_null(qat_tape_tensor(&t, 0, (int[]){1}, false));
    assert_true(contains(t.err.msg, "tensor"));
    qat_tape_reset(&t);
    assert_null(qat_tape_tensor(&t, 5, (int[]){1, 1, 1, 1, 1}, false));
    assert_true(t.err.msg[0] != '\0');
    qat_tape_reset(&t);
    assert_null(qat_tape_tensor(&t, 2, (int[]){3, 0}, false));
    assert_true(t.err.msg[0] != '\0');
    qat_tape_reset(&t);

    const float data[6] = {1, 2, 3, 4, 5, 6};
    qat_tensor *x = qat_tape_tensor(&t, 2, (int[]){2, 3}, true);
    memcpy(x->data, data, sizeof data);
    qat_tensor *v = qat_tape_view(&t, x, 3, (int[]){3, 1, 2});
    assert_non_null(v);
    assert_ptr_equal(v->data, x->data);
    assert_ptr_equal(v->grad, x->grad);
    assert_int_equal(v->n, 6);
    assert_int_equal(v->ndim, 3);
    assert_int_equal(t.n_nodes, 0);
    assert_null(qat_tape_view(&t, x, 2, (int[]){4, 2}));
    assert_true(contains(t.err.msg, "view"));
    qat_tape_reset(&t);
    assert_null(qat_tape_view(&t, NULL, 1, (int[]){6}));
    assert_int_equal(t.err.status, QAT_STATUS_OK);

    /* needs_grad: any input with a gradient, in grad mode. */
    qat_tensor *p = qat_tape_tensor(&t, 1, (int[]){2}, true);
    qat_tensor *q = qat_tape_input(&t, 1, (int[]){2}, data);
    assert_true(qat_tape_needs_grad(&t, q, NULL, p));
    assert_false(qat_tape_needs_grad(&t, q, NULL, NULL));
    assert_false(qat_tape_needs_grad(&t, NULL, NULL, NULL));
    qat_tape_free(&t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arena_alignment),
        cmocka_unit_test(test_arena_reuse_after_reset),
        cmocka_unit_test(test_tape_steps_reuse_memory),
        cmocka_unit_test(test_backward_runs_last_to_first),
        cmocka_unit_test(test_grad_accumulates_over_consumers),
        cmocka_unit_test(test_inference_mode),
        cmocka_unit_test(test_backward_refuses_bad_loss),
        cmocka_unit_test(test_tape_tensor_and_view),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
