/* test_lora.c - low-rank adapters over a frozen base (layers/lora.h) and frozen
 * parameters in training (layers/model.h, train/step.c).
 *
 *  - Attaching adapts every linear layer and ungrouped convolution (a depthwise one is
 *    frozen without an adapter), with B = 0: the model's outputs are the base model's, to
 *    the bit.
 *  - Gradients of A, B and the trainable biases by central finite differences through a
 *    CNN with batch norm, a depthwise conv and a linear layer.
 *  - Training steps (SGD with momentum and weight decay; AdamW): the frozen weights keep
 *    their bits, the optimizer covers the trainable parameters only, and the adapters and
 *    biases move; an optimizer sized for all parameters is refused.
 *  - Merging: W + (alpha / r) B A; the merged outputs equal the adapted ones to float
 *    rounding; B is zero after.
 *  - Spec parsing and refusals.
 */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/safetensors.h"
#include "layers/lora.h"
#include "optim/optim.h"
#include "train/checkpoint.h"
#include "train/qlora.h"
#include "train/step.h"

#define NB 3

typedef struct fd_model {
    qat_model *m;
    float x[NB * 2 * 6 * 6];
} fd_model;

static qat_tensor *fd_forward(qat_tape *t, void *user) {
    fd_model *u = user;
    return qat_model_forward(u->m, t, qat_tape_input(t, 4, (int[]){NB, 2, 6, 6}, u->x));
}

static qat_model *small_cnn(uint64_t seed) {
    qat_rng rng;
    qat_rng_init(&rng, seed);
    qat_model *m = qat_model_new(3, (int[]){2, 6, 6});
    qat_model_conv2d(m, 4, 3, 1, 1, 1, true);
    qat_model_batchnorm(m);
    qat_model_tanh(m);
    qat_model_conv2d(m, 4, 3, 1, 1, 4, true); /* depthwise: frozen, no adapter */
    qat_model_conv2d(m, 5, 1, 1, 0, 1, false);
    qat_model_flatten(m);
    qat_model_linear(m, 3, true);
    assert_int_equal(qat_model_finalize(m, &rng), QAT_STATUS_OK);
    return m;
}

static void forward_copy(qat_model *m, const float *x, float *y, size_t n) {
    qat_tape t;
    qat_tape_init(&t, 0);
    t.training = false;
    t.grad_enabled = false;
    qat_tensor *z = qat_model_forward(m, &t, qat_tape_input(&t, 4, (int[]){NB, 2, 6, 6}, x));
    assert_non_null(z);
    assert_int_equal(z->n, n);
    memcpy(y, z->data, n * sizeof(float));
    qat_tape_free(&t);
}

static void attach(qat_model *m, int r, float alpha) {
    qat_rng rng;
    qat_rng_init(&rng, 99);
    qat_error err = {0};
    if (qat_lora_attach(m, &(qat_lora_spec){r, alpha}, &rng, &err)) fail_msg("attach: %s", err.msg);
}

static void test_attach_starts_at_the_base(void **state) {
    (void)state;
    qat_model *m = small_cnn(1);
    float x[NB * 72], y0[NB * 3], y1[NB * 3];
    fill_uniform(x, NB * 72, -2, 2, 2);
    forward_copy(m, x, y0, NB * 3);
    const size_t n_before = m->n_params;
    attach(m, 2, 3.0f);
    assert_int_equal(m->lora->n, 3); /* conv 0, the pointwise conv, the linear layer */
    assert_null(m->root.layers[3].lora);
    assert_true(m->root.layers[3].weight.frozen); /* depthwise: frozen anyway */
    assert_non_null(qat_model_param(m, "0.lora_A"));
    assert_non_null(qat_model_param(m, "6.lora_B"));
    /* 0: A (2, 18), B (4, 2); 4: A (2, 4), B (5, 2); 6: A (2, 180), B (3, 2) */
    const size_t adapters = 36 + 8 + 8 + 10 + 360 + 6;
    assert_int_equal(m->n_params, n_before + adapters);
    size_t ad, tr, fr;
    qat_lora_counts(m, &ad, &tr, &fr);
    assert_int_equal(ad, adapters);
    /* frozen: the weights of 0 (72), 3 (36), 4 (20), 6 (540) */
    assert_int_equal(fr, 72 + 36 + 20 + 540);
    assert_int_equal(tr, m->n_params - fr);
    forward_copy(m, x, y1, NB * 3);
    assert_memory_equal(y0, y1, sizeof y0);
    qat_model_free(m);
}

static void test_gradients_fd(void **state) {
    (void)state;
    fd_model u;
    u.m = small_cnn(3);
    attach(u.m, 2, 3.0f);
    /* B nonzero so that A has a gradient */
    for (int i = 0; i < u.m->lora->n; i++) fill_uniform(u.m->lora->adapters[i].B.data, u.m->lora->adapters[i].B.n, -0.5f, 0.5f, 10 + (uint64_t)i);
    fill_uniform(u.x, sizeof u.x / sizeof *u.x, -2, 2, 4);
    qat_tape t;
    qat_tape_init(&t, 0);
    for (int i = 0; i < u.m->n_param_tensors; i++) {
        qat_tensor *p = u.m->param_tensors[i];
        if (p->frozen) continue;
        fd_check(&t, fd_forward, &u, p, 1e-2f, 2e-2, 2e-4, 24, NULL, p->name);
    }
    qat_tape_free(&t);
    qat_model_free(u.m);
}

static void test_training_keeps_the_base(void **state) {
    (void)state;
    for (int kind = 0; kind < 2; kind++) {
        qat_model *m = small_cnn(5);
        attach(m, 2, 4.0f);
        float *before = malloc(m->n_params * sizeof(float));
        memcpy(before, m->params, m->n_params * sizeof(float));
        qat_optim_config oc = qat_optim_config_default(kind ? QAT_OPTIM_ADAMW : QAT_OPTIM_SGD);
        oc.momentum = kind ? oc.momentum : 0.9;
        oc.weight_decay = 0.01;
        qat_optim o;
        qat_error err = {0};
        qat_tape t;
        qat_tape_init(&t, 0);
        float x[NB * 72];
        int32_t y[NB] = {0, 1, 2};
        fill_uniform(x, NB * 72, -2, 2, 6);
        qat_batch b = {.x = x, .y = y, .n = NB, .ndim = 4, .shape = {NB, 2, 6, 6}};
        qat_step_result r;
        /* an optimizer over every parameter is refused, with both counts named */
        assert_int_equal(qat_optim_init(&o, &oc, m->n_params, NULL), QAT_STATUS_OK);
        assert_int_equal(qat_train_step(m, &t, &o, 0.1f, 0, &b, &r, &err), QAT_STATUS_INVALID_ARG);
        assert_non_null(strstr(err.msg, "trains"));
        qat_optim_free(&o);
        assert_int_equal(qat_optim_init(&o, &oc, qat_model_n_trainable(m), NULL), QAT_STATUS_OK);
        for (int s = 0; s < 4; s++)
            if (qat_train_step(m, &t, &o, 0.1f, 0, &b, &r, &err)) fail_msg("step: %s", err.msg);
        for (int i = 0; i < m->n_param_tensors; i++) {
            const qat_tensor *p = m->param_tensors[i];
            const bool same = memcmp(p->data, before + (p->data - m->params), p->n * sizeof(float)) == 0;
            if (p->frozen && !same) fail_msg("frozen %s changed", p->name);
            if (!p->frozen && same) fail_msg("trainable %s did not change", p->name);
        }
        qat_optim_free(&o);
        qat_tape_free(&t);
        free(before);
        qat_model_free(m);
    }
}

static void test_merge(void **state) {
    (void)state;
    qat_model *m = small_cnn(7);
    attach(m, 3, 1.5f);
    for (int i = 0; i < m->lora->n; i++) fill_uniform(m->lora->adapters[i].B.data, m->lora->adapters[i].B.n, -0.3f, 0.3f, 20 + (uint64_t)i);
    float x[NB * 72], ya[NB * 3], ym[NB * 3];
    fill_uniform(x, NB * 72, -2, 2, 8);
    forward_copy(m, x, ya, NB * 3);
    /* by hand for the linear layer: W'[o][k] = W + 0.5 sum_j B[o][j] A[j][k] */
    const qat_lora_adapter *a = &m->lora->adapters[2];
    float want = a->layer->weight.data[7]; /* W[0][7] */
    double d = 0;
    for (int j = 0; j < 3; j++) d += (double)a->B.data[0 * 3 + j] * a->A.data[j * 180 + 7];
    want += (float)(0.5 * d);
    qat_lora_merge(m);
    assert_true(fabsf(a->layer->weight.data[7] - want) < 1e-6f);
    for (size_t i = 0; i < a->B.n; i++) assert_true(a->B.data[i] == 0.0f);
    forward_copy(m, x, ym, NB * 3);
    assert_close(ym, ya, NB * 3, 1e-5, 1e-6, "merged outputs");
    qat_model_free(m);
}

static void test_spec_and_refusals(void **state) {
    (void)state;
    qat_lora_spec s;
    qat_error err = {0};
    assert_int_equal(qat_lora_spec_parse(&s, "r=8", &err), QAT_STATUS_OK);
    assert_true(s.rank == 8 && s.alpha == 16.0f);
    assert_int_equal(qat_lora_spec_parse(&s, "r=4,alpha=1.5", &err), QAT_STATUS_OK);
    assert_true(s.rank == 4 && s.alpha == 1.5f);
    char buf[64];
    qat_lora_spec_format(&s, buf, sizeof buf);
    assert_string_equal(buf, "r=4,alpha=1.5");
    const char *bad[] = {"", "r=0", "r=-1", "r=x", "alpha=4", "r=4,alpha=0", "r=4,alpha=nan", "r=4,beta=1", "r=2000"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err = (qat_error){0};
        if (qat_lora_spec_parse(&s, bad[i], &err) == QAT_STATUS_OK) fail_msg("'%s' accepted", bad[i]);
        assert_non_null(strstr(err.msg, "--lora"));
    }
    qat_model *m = small_cnn(9);
    attach(m, 2, 2.0f);
    qat_rng rng;
    qat_rng_init(&rng, 1);
    err = (qat_error){0};
    assert_int_equal(qat_lora_attach(m, &(qat_lora_spec){2, 2.0f}, &rng, &err), QAT_STATUS_INVALID_ARG);
    assert_non_null(strstr(err.msg, "already"));
    qat_model_free(m);
    /* a model with nothing to adapt */
    m = qat_model_new(3, (int[]){2, 6, 6});
    qat_model_flatten(m);
    assert_int_equal(qat_model_finalize(m, &rng), QAT_STATUS_OK);
    err = (qat_error){0};
    assert_int_equal(qat_lora_attach(m, &(qat_lora_spec){2, 2.0f}, &rng, &err), QAT_STATUS_INVALID_ARG);
    qat_model_free(m);
}

/* A 4-bit base (QLoRA): the frozen weights become their NF4 values; a checkpoint holds
 * the 4-bit form (U8 codes, U8 constant codes, F32 block scales and mean) and restores
 * the same bits into a fresh model; a damaged 4-bit tensor is refused by name. */
static void test_four_bit_base_checkpoint(void **state) {
    (void)state;
    for (int f = 0; f < 2; f++) {
        const char *text = f ? "r=2,alpha=2,base=int4" : "r=2,base=nf4";
        qat_model *m = small_cnn(11);
        qat_rng rng;
        qat_rng_init(&rng, 1);
        qat_error err = {0};
        if (qat_lora_setup(m, text, true, &rng, &err)) fail_msg("setup %s: %s", text, err.msg);
        const qat_lora_base *b = qat_lora_base_of(m);
        assert_non_null(b);
        assert_int_equal(b->n, 4); /* four frozen weights, the depthwise one included */
        char back[96];
        qat_lora_text_format(m, back, sizeof back);
        assert_string_equal(back, f ? "r=2,alpha=2,base=int4" : "r=2,alpha=4,base=nf4");
        /* every frozen weight is level * constant of its group */
        for (int i = 0; i < b->n; i++) {
            float *deq = malloc(b->w[i]->n * sizeof(float));
            qat_q4_dequantize(&b->q[i], deq);
            assert_memory_equal(deq, b->w[i]->data, b->w[i]->n * sizeof(float));
            free(deq);
        }
        for (int i = 0; i < m->lora->n; i++)
            fill_uniform(m->lora->adapters[i].B.data, m->lora->adapters[i].B.n, -0.3f, 0.3f, 30 + (uint64_t)i);
        char path[64], bad[64];
        snprintf(path, sizeof path, "/tmp/qat_test_lora_%d.safetensors", (int)getpid());
        snprintf(bad, sizeof bad, "/tmp/qat_test_lora_bad_%d.safetensors", (int)getpid());
        qat_st_kv kv[] = {{"lora", back}};
        qat_checkpoint_meta meta = {.model = "x", .extra = kv, .n_extra = 1};
        qat_rng_init(&meta.rng, 3);
        if (qat_checkpoint_save(path, m, NULL, &meta, &err)) fail_msg("save: %s", err.msg);
        qat_checkpoint c;
        if (qat_checkpoint_load(&c, path, &err)) fail_msg("load: %s", err.msg);
        assert_null(qat_safetensors_find(&c.file, "0.weight")); /* no F32 copy */
        const qat_st_tensor *codes = qat_safetensors_find(&c.file, "6.weight.q4");
        assert_non_null(codes);
        assert_int_equal(codes->dtype, QAT_ST_DTYPE_U8);
        assert_int_equal(codes->numel, 270);
        /* a fresh model with the same adapters, its base left for the restore */
        qat_model *m2 = small_cnn(12);
        assert_int_equal(qat_lora_setup(m2, text, false, &rng, &err), QAT_STATUS_OK);
        if (qat_checkpoint_restore(&c, m2, NULL, &err)) fail_msg("restore: %s", err.msg);
        assert_memory_equal(m2->params, m->params, m->n_params * sizeof(float));
        /* damage: a NaN block scale, then a constant-code tensor of the wrong length */
        for (int d = 0; d < 2; d++) {
            qat_st_tensor ts[64];
            size_t nt = c.file.n_tensors;
            assert_true(nt <= 64);
            memcpy(ts, c.file.tensors, nt * sizeof *ts);
            const float nan = NAN;
            for (size_t i = 0; i < nt; i++) {
                if (d == 0 && strcmp(ts[i].name, "4.weight.q4_scale") == 0) ts[i].data = &nan;
                if (d == 1 && strcmp(ts[i].name, "0.weight.q4_absmax") == 0) ts[i].shape[0] = ts[i].numel = 1;
            }
            if (qat_safetensors_write(bad, ts, nt, c.file.meta, c.file.n_meta, &err)) fail_msg("write: %s", err.msg);
            qat_checkpoint cb;
            err = (qat_error){0};
            qat_status st = qat_checkpoint_load(&cb, bad, &err);
            if (!st) st = qat_checkpoint_restore(&cb, m2, NULL, &err);
            if (st == QAT_STATUS_OK) fail_msg("a damaged 4-bit base was accepted (case %d)", d);
            if (!strstr(err.msg, d ? "0.weight" : "4.weight")) fail_msg("case %d: %s", d, err.msg);
            qat_checkpoint_free(&cb);
        }
        qat_checkpoint_free(&c);
        remove(path);
        remove(bad);
        qat_model_free(m2);
        qat_model_free(m);
    }
}

/* Against tests/fixtures/lora.bin (gen_lora.py): PyTorch computing the paper's two paths,
 * h = W0 x + (alpha / r) B A x, a convolution's A a k x k conv and B a 1x1 conv, with
 * autograd: outputs and the gradients of every adapter and bias. */
static void test_matches_pytorch(void **state) {
    (void)state;
    qat_fixture *fx = fixture_load("lora.bin");
    qat_rng rng;
    qat_rng_init(&rng, 1);
    qat_model *m = qat_model_new(3, (int[]){2, 4, 4});
    qat_model_conv2d(m, 3, 3, 1, 1, 1, true);
    qat_model_relu(m);
    qat_model_flatten(m);
    qat_model_linear(m, 4, true);
    assert_int_equal(qat_model_finalize(m, &rng), QAT_STATUS_OK);
    attach(m, 2, 3.0f);
    qat_layer *conv = &m->root.layers[0], *lin = &m->root.layers[3];
    const struct {
        qat_tensor *t;
        const char *name;
    } set[] = {{&conv->weight, "conv.w"}, {&conv->bias, "conv.b"}, {&conv->lora->A, "conv.A"},
               {&conv->lora->B, "conv.B"}, {&lin->weight, "lin.w"}, {&lin->bias, "lin.b"},
               {&lin->lora->A, "lin.A"}, {&lin->lora->B, "lin.B"}};
    for (size_t i = 0; i < sizeof set / sizeof *set; i++)
        memcpy(set[i].t->data, fixture_get(fx, set[i].name, set[i].t->n), set[i].t->n * sizeof(float));
    qat_tape t;
    qat_tape_init(&t, 0);
    qat_model_zero_grad(m);
    qat_tensor *y = qat_model_forward(m, &t, qat_tape_input(&t, 4, (int[]){2, 2, 4, 4}, fixture_get(fx, "x", 64)));
    assert_non_null(y);
    assert_close(y->data, fixture_get(fx, "y", 8), 8, 1e-5, 1e-6, "outputs");
    assert_int_equal(qat_tape_backward_seeded(&t, y, fixture_get(fx, "g", 8)), QAT_STATUS_OK);
    for (size_t i = 0; i < sizeof set / sizeof *set; i++) {
        if (set[i].t->frozen) continue;
        char name[32];
        snprintf(name, sizeof name, "d.%s", set[i].name);
        assert_close(set[i].t->grad, fixture_get(fx, name, set[i].t->n), set[i].t->n, 1e-4, 1e-6, name);
    }
    qat_tape_free(&t);
    qat_model_free(m);
    fixture_free(fx);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attach_starts_at_the_base),
        cmocka_unit_test(test_gradients_fd),
        cmocka_unit_test(test_training_keeps_the_base),
        cmocka_unit_test(test_merge),
        cmocka_unit_test(test_spec_and_refusals),
        cmocka_unit_test(test_four_bit_base_checkpoint),
        cmocka_unit_test(test_matches_pytorch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
