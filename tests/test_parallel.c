/* test_parallel.c - the thread pool (autograd/parallel.h) and what it promises the
 * training step.
 *
 *  - qat_parallel_for visits every index exactly once in contiguous parts, for sizes
 *    around the grain and thread counts 1 to 5; small jobs run inline on the caller;
 *  - qat_parallel_tasks runs every task once, task i on thread i mod T;
 *  - a job started inside a job runs inline on that thread (no deadlock);
 *  - the pool restarts after a shutdown and after a change of thread count;
 *  - determinism: a few training steps of the reference CNN, in float and with QAT w8a8,
 *    end in bit-identical parameters with 1, 2 and 3 threads (the kernels split their
 *    reductions in ways that do not depend on the thread count), and two runs with the
 *    same thread count agree.
 */
#include <stdatomic.h>
#include <string.h>

#include "autograd/parallel.h"
#include "layers/loss.h"
#include "layers/model.h"
#include "optim/optim.h"
#include "quant/quant.h"
#include "testutil.h"

/* ---- the pool ---------------------------------------------------------------------- */

typedef struct visit_job {
    _Atomic int *hits;
    _Atomic int parts;
    _Atomic int max_thread;
} visit_job;

static void visit(void *p, size_t b, size_t e) {
    visit_job *j = p;
    atomic_fetch_add(&j->parts, 1);
    int id = qat_parallel_thread_id();
    int m = atomic_load(&j->max_thread);
    while (id > m && !atomic_compare_exchange_weak(&j->max_thread, &m, id)) {
    }
    for (size_t i = b; i < e; i++) atomic_fetch_add(&j->hits[i], 1);
}

static void test_parallel_for_covers(void **state) {
    (void)state;
    const size_t sizes[] = {0, 1, 7, 63, 64, 65, 127, 128, 129, 1000, 4096};
    for (int T = 1; T <= 5; T++) {
        qat_set_num_threads(T);
        assert_int_equal(qat_num_threads(), T);
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            size_t n = sizes[k];
            _Atomic int *hits = calloc(n ? n : 1, sizeof *hits);
            visit_job j = {.hits = hits};
            qat_parallel_for(n, 64, visit, &j);
            for (size_t i = 0; i < n; i++)
                if (atomic_load(&hits[i]) != 1)
                    fail_msg("threads %d, n %zu: index %zu visited %d times", T, n, i,
                             atomic_load(&hits[i]));
            size_t want_parts = n / 64 < 2 ? (n ? 1 : 0) : QAT_MIN(n / 64, (size_t)T);
            if ((size_t)atomic_load(&j.parts) != want_parts)
                fail_msg("threads %d, n %zu: %d parts, expected %zu", T, n, atomic_load(&j.parts),
                         want_parts);
            assert_true(atomic_load(&j.max_thread) < T);
            free(hits);
        }
    }
}

typedef struct task_job {
    _Atomic int count[64];
    int thread_of[64];
} task_job;

static void task(void *p, size_t i) {
    task_job *j = p;
    atomic_fetch_add(&j->count[i], 1);
    j->thread_of[i] = qat_parallel_thread_id();
}

static void test_parallel_tasks(void **state) {
    (void)state;
    for (int T = 1; T <= 4; T++) {
        qat_set_num_threads(T);
        for (size_t n = 0; n <= 64; n += 9) {
            task_job j;
            memset(&j, 0, sizeof j);
            qat_parallel_tasks(n, task, &j);
            for (size_t i = 0; i < n; i++) {
                assert_int_equal(atomic_load(&j.count[i]), 1);
                if (n > 1) assert_int_equal(j.thread_of[i], (int)(i % (size_t)T));
            }
        }
    }
}

static void inner(void *p, size_t b, size_t e) {
    _Atomic int *sum = p;
    for (size_t i = b; i < e; i++) atomic_fetch_add(sum, 1);
}

static void outer(void *p, size_t i) {
    _Atomic int *sum = p;
    (void)i;
    int id = qat_parallel_thread_id();
    qat_parallel_for(1000, 10, inner, sum); /* nested: runs inline */
    assert_int_equal(qat_parallel_thread_id(), id);
}

static void test_parallel_nested_and_restart(void **state) {
    (void)state;
    qat_set_num_threads(3);
    _Atomic int sum = 0;
    qat_parallel_tasks(6, outer, &sum);
    assert_int_equal(atomic_load(&sum), 6000);
    qat_parallel_shutdown();
    atomic_store(&sum, 0);
    qat_parallel_tasks(6, outer, &sum); /* restarts */
    assert_int_equal(atomic_load(&sum), 6000);
    qat_set_num_threads(2);
    atomic_store(&sum, 0);
    qat_parallel_for(5000, 10, inner, &sum);
    assert_int_equal(atomic_load(&sum), 5000);
    qat_parallel_shutdown();
}

/* ---- determinism of training steps --------------------------------------------------- */

enum { DB = 16 };

/* Trains the reference CNN (QAT w8a8 when qat) for `steps` SGD-momentum steps with T
 * threads from fixed seeds; returns a copy of the parameters. */
static float *train_cnn(int T, bool qat, int steps, size_t *n) {
    qat_set_num_threads(T);
    qat_rng rng;
    qat_rng_init(&rng, 11);
    qat_model *m = qat_model_cnn(&rng);
    assert_non_null(m);
    float *x = malloc(sizeof(float) * DB * 784);
    int32_t y[DB];
    for (int i = 0; i < DB * 784; i++) x[i] = qat_rng_normal(&rng);
    for (int i = 0; i < DB; i++) y[i] = (int32_t)qat_rng_below(&rng, 10);
    qat_tape t;
    qat_tape_init(&t, 0);
    qat_error err = {0};
    if (qat) {
        qat_quant_spec spec = qat_quant_spec_default();
        qat_quant_input in = {true, 0.286f, 0.353f};
        assert_int_equal(qat_quant_prepare(m, &spec, &in, &err), QAT_STATUS_OK);
        assert_int_equal(qat_quant_calibrate_begin(m, &err), QAT_STATUS_OK);
        t.training = false;
        assert_non_null(qat_model_forward(m, &t, qat_tape_input(&t, 4, (int[]){DB, 1, 28, 28}, x)));
        assert_int_equal(qat_quant_calibrate_end(m, &err), QAT_STATUS_OK);
        t.training = true;
    }
    qat_optim o;
    qat_optim_config cfg = qat_optim_config_default(QAT_OPTIM_SGD);
    cfg.momentum = 0.9;
    assert_int_equal(qat_optim_init(&o, &cfg, m->n_params, &err), QAT_STATUS_OK);
    for (int s = 0; s < steps; s++) {
        qat_tape_reset(&t);
        qat_tensor *in = qat_tape_input(&t, 4, (int[]){DB, 1, 28, 28}, x);
        qat_tensor *loss = qat_cross_entropy(&t, qat_model_forward(m, &t, in), y);
        assert_non_null(loss);
        qat_model_zero_grad(m);
        assert_int_equal(qat_tape_backward(&t, loss), QAT_STATUS_OK);
        qat_optim_step(&o, m->params, m->grads, 0.05f);
    }
    *n = m->n_params;
    float *p = malloc(*n * sizeof(float));
    memcpy(p, m->params, *n * sizeof(float));
    qat_optim_free(&o);
    qat_tape_free(&t);
    qat_model_free(m);
    free(x);
    return p;
}

static void test_training_same_bits_any_thread_count(void **state) {
    (void)state;
    for (int qat = 0; qat <= 1; qat++) {
        size_t n1, n;
        float *ref = train_cnn(1, qat, 3, &n1);
        for (int T = 1; T <= 3; T++) {
            float *p = train_cnn(T, qat, 3, &n);
            assert_int_equal(n, n1);
            char what[64];
            snprintf(what, sizeof what, "%s parameters, %d threads vs 1", qat ? "QAT" : "float", T);
            assert_same(p, ref, ref, n, what);
            free(p);
        }
        free(ref);
    }
    qat_parallel_shutdown();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parallel_for_covers),
        cmocka_unit_test(test_parallel_tasks),
        cmocka_unit_test(test_parallel_nested_and_restart),
        cmocka_unit_test(test_training_same_bits_any_thread_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
