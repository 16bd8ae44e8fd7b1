/* test_loss.c - softmax cross-entropy and mean squared error (layers/loss.h).
 *
 *  - loss and gradient match PyTorch (tests/fixtures/layers.bin, cases ce, ce_big with
 *    logits of magnitude ~100, mse) to 1e-4 relative, with an upstream gradient other
 *    than 1;
 *  - the gradient matches central finite differences;
 *  - large logits neither overflow nor lose the answer; probabilities sum to 1;
 *  - labels are copied; the MSE target receives no gradient;
 *  - bad labels and shapes return NULL with a message naming the op; NULL propagates.
 */
#include <ctype.h>
#include <math.h>
#include <string.h>

#include "layers/loss.h"
#include "testutil.h"

#define FD_EPS 1e-2f
#define FD_RTOL 1e-2
/* A scalar loss: fd_check weighs it by a fixed w ~ 0.25, so gradients are ~1e-2 and the
 * absolute tolerance must be well below that. */
#define FD_ATOL 2e-5

#define CE_NAMES "cross_entropy|cross-entropy|cross entropy|crossentropy"

/* ---- against PyTorch ---------------------------------------------------------------- */

/* state: "ce" or "ce_big"; labels are stored as floats. */
static void test_cross_entropy_fixture(void **state) {
    const char *c = *state;
    qat_fixture *fx = fixture_load("layers.bin");
    qat_tensor *z = fixture_tensor(fx, c, "x");
    int B = z->shape[0];
    const float *flabels = fixture_field(fx, c, "labels", (size_t)B);
    int32_t labels[16];
    assert_true(B <= 16);
    for (int b = 0; b < B; b++) labels[b] = (int32_t)lrintf(flabels[b]);
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    qat_tensor *loss = qat_cross_entropy(&t, z, labels);
    if (!loss) fail_msg("%s: cross_entropy failed: %s", c, t.err.msg);
    assert_int_equal(loss->n, 1);
    fixture_check(fx, c, "y", loss->data, 1);
    if (qat_tape_backward_seeded(&t, loss, fixture_field(fx, c, "dout", 1)) != QAT_STATUS_OK)
        fail_msg("%s: backward failed: %s", c, t.err.msg);
    fixture_check(fx, c, "dx", z->grad, z->n);
    qat_tape_free(&t);
    test_tensor_free(z);
    fixture_free(fx);
}

static void test_mse_fixture(void **state) {
    (void)state;
    qat_fixture *fx = fixture_load("layers.bin");
    qat_tensor *pred = fixture_tensor(fx, "mse", "x");
    qat_tensor *target = fixture_tensor(fx, "mse", "target");
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    qat_tensor *loss = qat_mse(&t, pred, target);
    if (!loss) fail_msg("mse failed: %s", t.err.msg);
    assert_int_equal(loss->n, 1);
    fixture_check(fx, "mse", "y", loss->data, 1);
    if (qat_tape_backward_seeded(&t, loss, fixture_field(fx, "mse", "dout", 1)) != QAT_STATUS_OK)
        fail_msg("mse backward failed: %s", t.err.msg);
    fixture_check(fx, "mse", "dx", pred->grad, pred->n);
    /* The target is data, not a parameter: its gradient buffer stays untouched. */
    for (size_t i = 0; i < target->n; i++)
        if (target->grad[i] != 0) fail_msg("mse target received gradient at [%zu]", i);
    qat_tape_free(&t);
    test_tensor_free(pred);
    test_tensor_free(target);
    fixture_free(fx);
}

/* ---- finite differences ------------------------------------------------------------- */

typedef struct ce_args {
    qat_tensor *z;
    const int32_t *labels;
} ce_args;

static qat_tensor *ce_forward(qat_tape *t, void *user) {
    ce_args *a = user;
    return qat_cross_entropy(t, a->z, a->labels);
}

static void test_cross_entropy_fd(void **state) {
    (void)state;
    const int32_t labels[3] = {2, 0, 4};
    ce_args a = {test_tensor_filled(2, (int[]){3, 5}, -2, 2, 1), labels};
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    fd_check(&t, ce_forward, &a, a.z, FD_EPS, FD_RTOL, FD_ATOL, 0, NULL, "cross_entropy dlogits");
    qat_tape_free(&t);
    test_tensor_free(a.z);
}

typedef struct mse_args {
    qat_tensor *pred, *target;
} mse_args;

static qat_tensor *mse_forward(qat_tape *t, void *user) {
    mse_args *a = user;
    return qat_mse(t, a->pred, a->target);
}

static void test_mse_fd(void **state) {
    (void)state;
    mse_args a = {test_tensor_filled(3, (int[]){2, 3, 2}, -1, 1, 2),
                  test_tensor_filled(3, (int[]){2, 3, 2}, -1, 1, 3)};
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    fd_check(&t, mse_forward, &a, a.pred, FD_EPS, FD_RTOL, FD_ATOL, 0, NULL, "mse dpred");
    qat_tape_free(&t);
    test_tensor_free(a.pred);
    test_tensor_free(a.target);
}

/* ---- numerics ----------------------------------------------------------------------- */

/* Logits of 1e4 would overflow exp() without the max subtraction. */
static void test_cross_entropy_large_logits(void **state) {
    (void)state;
    enum { B = 2, C = 3 };
    const float z[B * C] = {1e4f, 0, -1e4f, 3000, 3001, 2999};
    const int32_t labels[B] = {1, 2};
    float loss, probs[B * C];
    qat_cross_entropy_forward(&loss, probs, z, labels, B, C);
    /* The reference, in double with the same max subtraction. */
    double l = 0;
    for (int b = 0; b < B; b++) {
        double m = -INFINITY, s = 0;
        for (int j = 0; j < C; j++) m = fmax(m, z[b * C + j]);
        for (int j = 0; j < C; j++) s += exp(z[b * C + j] - m);
        l -= z[b * C + labels[b]] - m - log(s);
    }
    float want = (float)(l / B);
    if (!isfinite(loss)) fail_msg("loss is %g for large logits", (double)loss);
    assert_close(&loss, &want, 1, 1e-5, 0, "cross-entropy loss with logits of 1e4");
    for (int b = 0; b < B; b++) {
        double s = 0;
        for (int j = 0; j < C; j++) {
            if (!isfinite(probs[b * C + j])) fail_msg("probs[%d][%d] not finite", b, j);
            s += probs[b * C + j];
        }
        if (fabs(s - 1) > 1e-6) fail_msg("probs of sample %d sum to %.9g", b, s);
    }
    /* Equal logits: loss = log C. */
    const float zeq[C] = {7, 7, 7};
    const int32_t l0 = 1;
    qat_cross_entropy_forward(&loss, probs, zeq, &l0, 1, C);
    want = (float)log(3.0);
    assert_close(&loss, &want, 1, 1e-6, 0, "loss of equal logits is log C");
}

/* The op keeps its own copy of the labels: changing the caller's array after the
 * forward pass does not change the gradient. */
static void test_cross_entropy_copies_labels(void **state) {
    (void)state;
    qat_tensor *z1 = test_tensor_filled(2, (int[]){2, 4}, -1, 1, 4);
    qat_tensor *z2 = test_tensor_filled(2, (int[]){2, 4}, -1, 1, 4);
    int32_t labels[2] = {3, 1};
    const float one = 1.0f;
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    qat_tensor *l1 = qat_cross_entropy(&t, z1, labels);
    assert_non_null(l1);
    labels[0] = 0;
    labels[1] = 0;
    assert_int_equal(qat_tape_backward_seeded(&t, l1, &one), QAT_STATUS_OK);
    qat_tape_reset(&t);
    labels[0] = 3;
    labels[1] = 1;
    qat_tensor *l2 = qat_cross_entropy(&t, z2, labels);
    assert_non_null(l2);
    assert_int_equal(qat_tape_backward(&t, l2), QAT_STATUS_OK);
    assert_close(z1->grad, z2->grad, 8, 0, 0, "gradient with the labels changed after forward");
    qat_tape_free(&t);
    test_tensor_free(z1);
    test_tensor_free(z2);
}

/* ---- bad arguments, NULL, inference ------------------------------------------------- */

/* ---- distillation ------------------------------------------------------------------ */

/* The paper's definition, in double: (1 - a) CE + a T^2 mean_b KL(softmax(t/T) || softmax(z/T)). */
static double distill_ref(const float *z, const float *tz, const int32_t *y, int B, int C, double T, double a) {
    double ce = 0, kl = 0;
    for (int b = 0; b < B; b++) {
        double p[16], q[16], sp = 0, sq = 0, s1 = 0;
        for (int j = 0; j < C; j++) {
            p[j] = exp(tz[b * C + j] / T);
            q[j] = exp(z[b * C + j] / T);
            sp += p[j];
            sq += q[j];
            s1 += exp(z[b * C + j]);
        }
        ce -= z[b * C + y[b]] - log(s1);
        for (int j = 0; j < C; j++) kl += p[j] / sp * (log(p[j] / sp) - log(q[j] / sq));
    }
    return (1 - a) * ce / B + a * T * T * kl / B;
}

typedef struct kd_args {
    qat_tensor *z;
    const float *teacher;
    const int32_t *labels;
    float T, alpha;
} kd_args;

static qat_tensor *kd_forward(qat_tape *t, void *u) {
    kd_args *a = u;
    return qat_distill_loss(t, a->z, a->teacher, a->labels, a->T, a->alpha);
}

static void test_distill(void **state) {
    (void)state;
    enum { B = 5, C = 7 };
    qat_tensor *z = test_tensor_filled(2, (int[]){B, C}, -3.0f, 3.0f, 41);
    float teacher[B * C];
    fill_uniform(teacher, B * C, -4.0f, 4.0f, 43);
    const int32_t labels[B] = {0, 6, 3, 3, 1};
    const float Ts[] = {1.0f, 2.0f, 4.0f}, alphas[] = {0.0f, 0.5f, 1.0f};
    qat_tape t;
    qat_tape_init(&t, 1 << 16);
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 3; k++) {
            qat_tape_reset(&t);
            qat_tensor *loss = qat_distill_loss(&t, z, teacher, labels, Ts[i], alphas[k]);
            if (!loss) fail_msg("distill: %s", t.err.msg);
            const double want = distill_ref(z->data, teacher, labels, B, C, Ts[i], alphas[k]);
            if (fabs(loss->data[0] - want) > 1e-5 * fabs(want) + 1e-6)
                fail_msg("T %g alpha %g: loss %.8g, the definition gives %.8g", (double)Ts[i], (double)alphas[k],
                         (double)loss->data[0], want);
            kd_args a = {z, teacher, labels, Ts[i], alphas[k]};
            fd_check(&t, kd_forward, &a, z, FD_EPS, FD_RTOL, FD_ATOL, 0, NULL, "distill dlogits");
        }
    /* alpha 0 is the cross-entropy, bit for bit */
    qat_tape_reset(&t);
    qat_tensor *a0 = qat_distill_loss(&t, z, teacher, labels, 3.0f, 0.0f);
    qat_tensor *ce = qat_cross_entropy(&t, z, labels);
    assert_non_null(a0);
    assert_non_null(ce);
    assert_true(a0->data[0] == ce->data[0]);
    /* a teacher equal to the student: the soft term is 0 */
    qat_tape_reset(&t);
    qat_tensor *same = qat_distill_loss(&t, z, z->data, labels, 2.0f, 1.0f);
    assert_non_null(same);
    assert_true(fabsf(same->data[0]) < 1e-6f);
    /* bad arguments */
    qat_tape_reset(&t);
    assert_null(qat_distill_loss(&t, z, teacher, labels, 0.0f, 0.5f));
    assert_non_null(strstr(t.err.msg, "distill"));
    qat_tape_reset(&t);
    assert_null(qat_distill_loss(&t, z, teacher, labels, 2.0f, 1.5f));
    qat_tape_reset(&t);
    assert_null(qat_distill_loss(&t, z, NULL, labels, 2.0f, 0.5f));
    qat_tape_free(&t);
    test_tensor_free(z);
}

static void test_loss_bad_args(void **state) {
    (void)state;
    qat_tensor *z = test_tensor_filled(2, (int[]){2, 3}, -1, 1, 5);
    qat_tensor *z1d = test_tensor_filled(1, (int[]){3}, -1, 1, 6);
    qat_tensor *p = test_tensor_filled(2, (int[]){2, 3}, -1, 1, 7);
    qat_tensor *q = test_tensor_filled(2, (int[]){3, 2}, -1, 1, 8);
    const int32_t too_big[2] = {0, 3}, negative[2] = {-1, 0}, ok[2] = {0, 2};
    qat_tape t;
    qat_tape_init(&t, 1 << 16);

    assert_op_failed(&t, qat_cross_entropy(&t, z, too_big), CE_NAMES, "label 3 with 3 classes");
    qat_tape_reset(&t);
    assert_op_failed(&t, qat_cross_entropy(&t, z, negative), CE_NAMES, "label -1");
    qat_tape_reset(&t);
    assert_op_failed(&t, qat_cross_entropy(&t, z1d, ok), CE_NAMES, "1-D logits");
    qat_tape_reset(&t);
    assert_op_failed(&t, qat_mse(&t, p, q), "mse", "mse (2, 3) vs (3, 2)");
    qat_tape_reset(&t);

    assert_null(qat_cross_entropy(&t, NULL, ok));
    assert_null(qat_mse(&t, NULL, p));
    assert_int_equal(t.err.status, QAT_STATUS_OK);
    assert_int_equal(t.n_nodes, 0);

    t.grad_enabled = false;
    qat_tensor *l = qat_cross_entropy(&t, z, ok);
    assert_non_null(l);
    assert_null(l->grad);
    l = qat_mse(&t, p, p);
    assert_non_null(l);
    assert_null(l->grad);
    assert_true(l->data[0] == 0.0f);
    assert_int_equal(t.n_nodes, 0);

    qat_tape_free(&t);
    test_tensor_free(z);
    test_tensor_free(z1d);
    test_tensor_free(p);
    test_tensor_free(q);
}

#define CE_FIXTURE_TEST(c) \
    {"test_cross_entropy_fixture " c, test_cross_entropy_fixture, NULL, NULL, (void *)(c)}

int main(void) {
    const struct CMUnitTest tests[] = {
        CE_FIXTURE_TEST("ce"),
        CE_FIXTURE_TEST("ce_big"),
        cmocka_unit_test(test_mse_fixture),
        cmocka_unit_test(test_cross_entropy_fd),
        cmocka_unit_test(test_mse_fd),
        cmocka_unit_test(test_cross_entropy_large_logits),
        cmocka_unit_test(test_cross_entropy_copies_labels),
        cmocka_unit_test(test_loss_bad_args),
        cmocka_unit_test(test_distill),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
