/* test_model.c - the model graph: building, shapes and names, errors, the reference
 * models, memory behaviour of a training loop, inference mode, whole-model gradients,
 * and a few SGD steps that must follow PyTorch's loss trajectory (tests/fixtures/
 * gen_model.py). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "layers/loss.h"
#include "layers/model.h"
#include "optim/optim.h"
#include "testutil.h"

/* The model of gen_model.py, built with the qat API. */
static qat_model *small_residual_cnn(qat_rng *rng) {
    qat_model *m = qat_model_new(3, (int[]){1, 28, 28});
    qat_model_conv2d(m, 4, 3, 1, 1, 1, true);
    qat_model_batchnorm(m);
    qat_model_relu(m);
    qat_model_maxpool(m, 2, 2, 0);
    qat_model_residual_begin(m);
    qat_model_conv2d(m, 4, 3, 1, 1, 1, true);
    qat_model_batchnorm(m);
    qat_model_relu(m);
    qat_model_conv2d(m, 4, 3, 1, 1, 2, true);
    qat_model_batchnorm(m);
    qat_model_residual_end(m);
    qat_model_relu(m);
    qat_model_conv2d(m, 8, 3, 2, 1, 1, true);
    qat_model_batchnorm(m);
    qat_model_relu(m);
    qat_model_flatten(m);
    qat_model_linear(m, 16, true);
    qat_model_relu(m);
    qat_model_linear(m, 10, true);
    if (qat_model_finalize(m, rng) != QAT_STATUS_OK) fail_msg("finalize: %s", m->err.msg);
    return m;
}

static void labels_from_fixture(int32_t *y, const float *f, int n) {
    for (int i = 0; i < n; i++) y[i] = (int32_t)lroundf(f[i]);
}

static float train_step(qat_model *m, qat_tape *t, qat_optim *o, const float *x,
                        const int32_t *y, int B, float lr) {
    qat_tape_reset(t);
    qat_tensor *in = qat_tape_input(t, 4, (int[]){B, 1, 28, 28}, x);
    qat_tensor *loss = qat_cross_entropy(t, qat_model_forward(m, t, in), y);
    if (!loss) fail_msg("forward: %s", t->err.msg);
    qat_model_zero_grad(m);
    if (qat_tape_backward(t, loss) != QAT_STATUS_OK) fail_msg("backward: %s", t->err.msg);
    qat_optim_step(o, m->params, m->grads, lr);
    return loss->data[0];
}

static void test_trajectory_matches_pytorch(void **state) {
    (void)state;
    qat_fixture *f = fixture_load("model.bin");
    qat_rng rng;
    qat_rng_init(&rng, 1);
    qat_model *m = small_residual_cnn(&rng);
    /* Every PyTorch parameter has a qat parameter of the same name and size. */
    for (int i = 0; i < m->n_param_tensors; i++) {
        char key[160];
        snprintf(key, sizeof key, "init.%s", m->param_tensors[i]->name);
        memcpy(m->param_tensors[i]->data, fixture_get(f, key, m->param_tensors[i]->n),
               m->param_tensors[i]->n * sizeof(float));
    }
    const float *x = fixture_get(f, "x", 8 * 784);
    int32_t y[8];
    labels_from_fixture(y, fixture_get(f, "y", 8), 8);
    const float *want_losses = fixture_get(f, "losses", 5);

    qat_optim_config cfg = qat_optim_config_default(QAT_OPTIM_SGD);
    cfg.lr = 0.05;
    cfg.momentum = 0.9;
    qat_optim o;
    assert_int_equal(qat_optim_init(&o, &cfg, m->n_params, NULL), QAT_STATUS_OK);
    qat_tape t;
    qat_tape_init(&t, 0);
    float losses[5];
    for (int s = 0; s < 5; s++) losses[s] = train_step(m, &t, &o, x, y, 8, 0.05f);
    assert_close(losses, want_losses, 5, 1e-4, 1e-6, "loss trajectory");

    for (int i = 0; i < m->n_param_tensors; i++) {
        char key[160];
        snprintf(key, sizeof key, "final.%s", m->param_tensors[i]->name);
        assert_close(m->param_tensors[i]->data, fixture_get(f, key, m->param_tensors[i]->n),
                     m->param_tensors[i]->n, 1e-3, 1e-5, key);
    }
    const char *stats[] = {"1.running_mean", "1.running_var", "4.body.1.running_var",
                           "4.body.4.running_mean", "7.running_var"};
    for (size_t i = 0; i < sizeof stats / sizeof *stats; i++) {
        size_t n = 0;
        float *b = qat_model_buffer(m, stats[i], &n);
        assert_non_null(b);
        char key[160];
        snprintf(key, sizeof key, "final.%s", stats[i]);
        assert_close(b, fixture_get(f, key, n), n, 1e-3, 1e-5, key);
    }
    /* Eval mode: running statistics, same logits as PyTorch's model.eval(). */
    t.training = false;
    t.grad_enabled = false;
    qat_tape_reset(&t);
    qat_tensor *logits = qat_model_forward(m, &t, qat_tape_input(&t, 4, (int[]){8, 1, 28, 28}, x));
    assert_non_null(logits);
    assert_close(logits->data, fixture_get(f, "eval_logits", 80), 80, 1e-3, 1e-4, "eval logits");

    qat_tape_free(&t);
    qat_optim_free(&o);
    qat_model_free(m);
    fixture_free(f);
}

static void test_reference_models(void **state) {
    (void)state;
    qat_rng rng;
    qat_rng_init(&rng, 3);
    qat_model *mlp = qat_model_mlp(&rng);
    assert_non_null(mlp);
    /* 784*256+256 + 256*128+128 + 128*10+10 */
    assert_int_equal(mlp->n_params, 235146);
    assert_non_null(qat_model_param(mlp, "1.weight"));
    assert_int_equal(qat_model_param(mlp, "1.weight")->shape[1], 784);
    assert_int_equal(qat_model_param(mlp, "5.bias")->n, 10);
    qat_model *cnn = qat_model_cnn(&rng);
    assert_non_null(cnn);
    /* conv 320, bn 64, conv 18496, bn 128, linear 401536, linear 1290 */
    assert_int_equal(cnn->n_params, 421834);
    assert_int_equal(cnn->n_buffers, 2 * (32 + 64));
    qat_tensor *fc = qat_model_param(cnn, "9.weight");
    assert_non_null(fc);
    assert_int_equal(fc->shape[0], 128);
    assert_int_equal(fc->shape[1], 3136);
    assert_int_equal(qat_model_param(cnn, "4.weight")->shape[1], 32);
    size_t n = 0;
    assert_non_null(qat_model_buffer(cnn, "5.running_var", &n));
    assert_int_equal(n, 64);
    assert_null(qat_model_buffer(cnn, "4.running_var", &n));
    /* PyTorch's default init: conv weights in +-1/sqrt(fan_in), BN gamma 1 beta 0. */
    qat_tensor *w = qat_model_param(cnn, "0.weight");
    for (size_t i = 0; i < w->n; i++) assert_true(fabsf(w->data[i]) <= 1.0f / 3.0f);
    qat_tensor *g = qat_model_param(cnn, "1.weight");
    for (size_t i = 0; i < g->n; i++) assert_true(g->data[i] == 1.0f);
    assert_int_equal(qat_layer_macs(&cnn->root.layers[4]), 64 * 14 * 14 * 32 * 9);
    qat_model_free(mlp);
    qat_model_free(cnn);
}

/* A tiny fixed batch: both reference models drive the loss to near zero. */
static void overfit(qat_model *m, float lr, int steps) {
    enum { B = 16 };
    static float x[B * 784];
    int32_t y[B];
    fill_uniform(x, B * 784, -1.0f, 1.0f, 77);
    for (int i = 0; i < B; i++) y[i] = i % 10;
    qat_optim_config cfg = qat_optim_config_default(QAT_OPTIM_SGD);
    cfg.lr = lr;
    cfg.momentum = 0.9;
    qat_optim o;
    assert_int_equal(qat_optim_init(&o, &cfg, m->n_params, NULL), QAT_STATUS_OK);
    qat_tape t;
    qat_tape_init(&t, 0);
    float first = 0, loss = 0;
    for (int s = 0; s < steps; s++) {
        loss = train_step(m, &t, &o, x, y, B, lr);
        if (s == 0) first = loss;
    }
    if (!(loss < 0.01f)) fail_msg("did not overfit: loss %g after %d steps (first %g)", (double)loss, steps, (double)first);
    assert_true(first > 1.5f);
    qat_tape_free(&t);
    qat_optim_free(&o);
}

static void test_overfit_mlp(void **state) {
    (void)state;
    qat_rng rng;
    qat_rng_init(&rng, 5);
    qat_model *m = qat_model_mlp(&rng);
    overfit(m, 0.05f, 60);
    qat_model_free(m);
}

static void test_overfit_cnn(void **state) {
    (void)state;
    qat_rng rng;
    qat_rng_init(&rng, 6);
    qat_model *m = qat_model_cnn(&rng);
    overfit(m, 0.05f, 60);
    qat_model_free(m);
}

static void expect_error(qat_model *m, qat_status got, const char *needle) {
    assert_int_not_equal(got, QAT_STATUS_OK);
    if (!strstr(m->err.msg, needle))
        fail_msg("error message '%s' does not mention '%s'", m->err.msg, needle);
}

static void test_builder_errors(void **state) {
    (void)state;
    qat_rng rng;
    qat_rng_init(&rng, 8);
    /* A linear layer straight after a conv: needs flatten. */
    qat_model *m = qat_model_new(3, (int[]){1, 8, 8});
    qat_model_conv2d(m, 2, 3, 1, 1, 1, true);
    expect_error(m, qat_model_linear(m, 10, true), "flatten");
    expect_error(m, qat_model_relu(m), "flatten"); /* the first error sticks */
    expect_error(m, qat_model_finalize(m, &rng), "layer 1");
    qat_model_free(m);
    /* Groups that do not divide the channels. */
    m = qat_model_new(3, (int[]){3, 8, 8});
    expect_error(m, qat_model_conv2d(m, 4, 3, 1, 1, 2, true), "groups");
    qat_model_free(m);
    /* A kernel larger than the input. */
    m = qat_model_new(3, (int[]){1, 4, 4});
    expect_error(m, qat_model_conv2d(m, 4, 7, 1, 0, 1, true), "kernel");
    qat_model_free(m);
    /* Residual branches ending in different shapes. */
    m = qat_model_new(3, (int[]){4, 8, 8});
    qat_model_residual_begin(m);
    qat_model_conv2d(m, 8, 3, 1, 1, 1, true);
    expect_error(m, qat_model_residual_end(m), "body ends in (8, 8, 8) but the shortcut in (4, 8, 8)");
    qat_model_free(m);
    /* ...fixed by a projection shortcut. */
    m = qat_model_new(3, (int[]){4, 8, 8});
    qat_model_residual_begin(m);
    qat_model_conv2d(m, 8, 3, 2, 1, 1, true);
    qat_model_residual_shortcut(m);
    qat_model_conv2d(m, 8, 1, 2, 0, 1, false);
    assert_int_equal(qat_model_residual_end(m), QAT_STATUS_OK);
    qat_model_global_avgpool(m);
    qat_model_linear(m, 3, true);
    assert_int_equal(qat_model_finalize(m, &rng), QAT_STATUS_OK);
    assert_non_null(qat_model_param(m, "0.shortcut.0.weight"));
    assert_null(qat_model_param(m, "0.shortcut.0.bias"));
    expect_error(m, qat_model_relu(m), "after finalize");
    qat_model_free(m);
    /* A residual block left open. */
    m = qat_model_new(1, (int[]){4});
    qat_model_residual_begin(m);
    qat_model_linear(m, 4, true);
    expect_error(m, qat_model_finalize(m, &rng), "not closed");
    qat_model_free(m);
    /* Bad input shape. */
    m = qat_model_new(3, (int[]){0, 8, 8});
    expect_error(m, qat_model_relu(m), "input dimension");
    qat_model_free(m);
}

static void test_forward_input_mismatch(void **state) {
    (void)state;
    qat_rng rng;
    qat_rng_init(&rng, 9);
    qat_model *m = qat_model_cnn(&rng);
    qat_tape t;
    qat_tape_init(&t, 0);
    float x[2 * 3 * 28 * 28] = {0};
    qat_tensor *in = qat_tape_input(&t, 4, (int[]){2, 3, 28, 28}, x);
    assert_null(qat_model_forward(m, &t, in));
    assert_int_equal(t.err.status, QAT_STATUS_SHAPE);
    assert_non_null(strstr(t.err.msg, "(1, 28, 28)"));
    /* NULL input propagates without a second message. */
    qat_tape_reset(&t);
    assert_null(qat_model_forward(m, &t, NULL));
    assert_int_equal(t.err.status, QAT_STATUS_OK);
    qat_tape_free(&t);
    qat_model_free(m);
}

/* After the first step, a training loop asks the system for no more memory. */
static void test_no_allocation_after_first_step(void **state) {
    (void)state;
    qat_rng rng;
    qat_rng_init(&rng, 10);
    qat_model *m = small_residual_cnn(&rng);
    enum { B = 4 };
    static float x[B * 784];
    fill_uniform(x, B * 784, -1, 1, 11);
    int32_t y[B] = {1, 2, 3, 4};
    qat_optim_config cfg = qat_optim_config_default(QAT_OPTIM_ADAM);
    qat_optim o;
    assert_int_equal(qat_optim_init(&o, &cfg, m->n_params, NULL), QAT_STATUS_OK);
    qat_tape t;
    qat_tape_init(&t, 64 << 10); /* small blocks: the step needs several */
    train_step(m, &t, &o, x, y, B, 1e-3f);
    size_t allocs = t.arena.n_system_allocs, peak = t.arena.peak;
    assert_true(allocs > 1);
    for (int s = 0; s < 5; s++) train_step(m, &t, &o, x, y, B, 1e-3f);
    assert_int_equal(t.arena.n_system_allocs, allocs);
    assert_int_equal(t.arena.peak, peak);
    qat_tape_free(&t);
    qat_optim_free(&o);
    qat_model_free(m);
}

static void test_inference_mode(void **state) {
    (void)state;
    qat_rng rng;
    qat_rng_init(&rng, 12);
    qat_model *m = small_residual_cnn(&rng);
    static float x[2 * 784];
    fill_uniform(x, 2 * 784, -1, 1, 13);
    size_t nb = m->n_buffers;
    float *before = malloc(nb * sizeof(float));
    memcpy(before, m->buffers, nb * sizeof(float));
    qat_tape t;
    qat_tape_init(&t, 0);
    /* eval with a tape: nodes recorded, running statistics used and untouched */
    t.training = false;
    qat_tensor *a = qat_model_forward(m, &t, qat_tape_input(&t, 4, (int[]){2, 1, 28, 28}, x));
    assert_non_null(a);
    assert_true(t.n_nodes > 0);
    float logits[20];
    memcpy(logits, a->data, sizeof logits);
    /* inference mode: nothing recorded, no gradient memory, same numbers */
    t.grad_enabled = false;
    qat_tape_reset(&t);
    qat_tensor *b = qat_model_forward(m, &t, qat_tape_input(&t, 4, (int[]){2, 1, 28, 28}, x));
    assert_non_null(b);
    assert_int_equal(t.n_nodes, 0);
    assert_null(b->grad);
    assert_memory_equal(b->data, logits, sizeof logits);
    assert_memory_equal(m->buffers, before, nb * sizeof(float));
    assert_int_not_equal(qat_tape_backward(&t, b), QAT_STATUS_OK);
    /* training mode updates the running statistics */
    t.training = true;
    t.grad_enabled = true;
    qat_tape_reset(&t);
    assert_non_null(qat_model_forward(m, &t, qat_tape_input(&t, 4, (int[]){2, 1, 28, 28}, x)));
    assert_true(memcmp(m->buffers, before, nb * sizeof(float)) != 0);
    free(before);
    qat_tape_free(&t);
    qat_model_free(m);
}

/* Whole-model finite differences through a residual block (the block input feeds two
 * consumers) and a projection shortcut, in training mode (batch statistics). */
typedef struct fd_model {
    qat_model *m;
    float x[3 * 2 * 6 * 6];
} fd_model;

static qat_tensor *fd_model_forward(qat_tape *t, void *user) {
    fd_model *u = user;
    return qat_model_forward(u->m, t, qat_tape_input(t, 4, (int[]){3, 2, 6, 6}, u->x));
}

static void test_model_gradients_fd(void **state) {
    (void)state;
    qat_rng rng;
    qat_rng_init(&rng, 14);
    fd_model u;
    u.m = qat_model_new(3, (int[]){2, 6, 6});
    qat_model_conv2d(u.m, 4, 3, 1, 1, 1, true);
    qat_model_batchnorm(u.m);
    qat_model_tanh(u.m);
    qat_model_residual_begin(u.m);
    qat_model_conv2d(u.m, 4, 3, 1, 1, 2, true);
    qat_model_sigmoid(u.m);
    qat_model_residual_end(u.m);
    qat_model_residual_begin(u.m);
    qat_model_conv2d(u.m, 6, 3, 2, 1, 1, true);
    qat_model_residual_shortcut(u.m);
    qat_model_avgpool(u.m, 2, 2, 0);
    qat_model_conv2d(u.m, 6, 1, 1, 0, 1, false);
    qat_model_residual_end(u.m);
    qat_model_global_avgpool(u.m);
    qat_model_linear(u.m, 3, true);
    assert_int_equal(qat_model_finalize(u.m, &rng), QAT_STATUS_OK);
    fill_uniform(u.x, sizeof u.x / sizeof *u.x, -2, 2, 15);
    qat_tape t;
    qat_tape_init(&t, 0);
    for (int i = 0; i < u.m->n_param_tensors; i++) {
        qat_tensor *p = u.m->param_tensors[i];
        fd_check(&t, fd_model_forward, &u, p, 1e-2f, 2e-2, 2e-4, 24, NULL, p->name);
    }
    qat_tape_free(&t);
    qat_model_free(u.m);
}

/* Hard-swish and leaky ReLU in a model, where their outputs are private (a batch norm
 * after hard-swish reuses its gradient buffer, a ReLU after leaky ReLU works in place):
 * finite differences of every parameter, in training mode. eps 1e-3: with 1e-2 a weight
 * moves some of the 3 x 144 pre-activations across a kink (hard-swish at -3 and 3,
 * the ReLUs at 0; batch statistics spread every weight to all of them). A wrong buffer
 * reuse would fail at any eps. */
static void test_model_gradients_fd_lut_acts(void **state) {
    (void)state;
    qat_rng rng;
    qat_rng_init(&rng, 21);
    fd_model u;
    u.m = qat_model_new(3, (int[]){2, 6, 6});
    qat_model_conv2d(u.m, 4, 3, 1, 1, 1, true);
    qat_model_hardswish(u.m);
    qat_model_batchnorm(u.m);
    qat_model_leaky_relu(u.m, 0.1f);
    qat_model_relu(u.m);
    qat_model_conv2d(u.m, 4, 3, 2, 1, 1, true);
    qat_model_leaky_relu(u.m, -0.3f);
    qat_model_hardswish(u.m);
    qat_model_flatten(u.m);
    qat_model_linear(u.m, 3, true);
    assert_int_equal(qat_model_finalize(u.m, &rng), QAT_STATUS_OK);
    fill_uniform(u.x, sizeof u.x / sizeof *u.x, -2, 2, 22);
    qat_tape t;
    qat_tape_init(&t, 0);
    for (int i = 0; i < u.m->n_param_tensors; i++) {
        qat_tensor *p = u.m->param_tensors[i];
        fd_check(&t, fd_model_forward, &u, p, 1e-3f, 2e-2, 2e-4, 24, NULL, p->name);
    }
    qat_tape_free(&t);
    qat_model_free(u.m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_gradients_fd_lut_acts),
        cmocka_unit_test(test_trajectory_matches_pytorch),
        cmocka_unit_test(test_reference_models),
        cmocka_unit_test(test_overfit_mlp),
        cmocka_unit_test(test_overfit_cnn),
        cmocka_unit_test(test_builder_errors),
        cmocka_unit_test(test_forward_input_mismatch),
        cmocka_unit_test(test_no_allocation_after_first_step),
        cmocka_unit_test(test_inference_mode),
        cmocka_unit_test(test_model_gradients_fd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
