/* test_trainer.c - the training loop: bit-identical resume, determinism, a NaN stopping
 * the run with the last good checkpoint kept, the metrics log, gradient clipping. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "layers/model_file.h"
#include "quant/quant.h"
#include "testutil.h"
#include "train/trainer.h"

enum { N = 100, D = 8, K = 3 };

static const char *MODEL = "input 8\nlinear out=16\nrelu\ndropout p=0.2\nlinear out=3\n";

/* A feature data set held in memory: three Gaussian-ish blobs. */
static void make_data(qat_dataset *ds) {
    memset(ds, 0, sizeof *ds);
    ds->kind = QAT_DATASET_KIND_FEATURES;
    ds->n = N;
    ds->dim = D;
    ds->n_classes = K;
    ds->features = malloc(sizeof(float) * N * D);
    ds->labels = malloc(sizeof(int32_t) * N);
    qat_rng r;
    qat_rng_init(&r, 99);
    for (int i = 0; i < N; i++) {
        ds->labels[i] = i % K;
        for (int d = 0; d < D; d++)
            ds->features[i * D + d] = (d % K == i % K ? 1.5f : 0.0f) + qat_rng_normal(&r);
    }
}

typedef struct run {
    qat_model *m;
    qat_optim opt;
    qat_loader loader;
    qat_rng rng;
} run;

static void run_init(run *r, const qat_dataset *ds) {
    qat_error err = {0};
    if (qat_model_parse(MODEL, "test", &r->m, &err)) fail_msg("%s", err.msg);
    qat_rng init;
    qat_rng_init(&init, 5);
    assert_int_equal(qat_model_finalize(r->m, &init), QAT_STATUS_OK);
    qat_optim_config oc = qat_optim_config_default(QAT_OPTIM_SGD);
    oc.lr = 0.1;
    oc.momentum = 0.9;
    assert_int_equal(qat_optim_init(&r->opt, &oc, r->m->n_params, &err), QAT_STATUS_OK);
    qat_loader_config lc = qat_loader_config_default();
    lc.batch_size = 16;
    lc.seed = 7;
    if (qat_loader_init(&r->loader, ds, &lc, &err)) fail_msg("%s", err.msg);
    qat_rng_init(&r->rng, 11);
}

static void run_free(run *r) {
    qat_model_free(r->m);
    qat_optim_free(&r->opt);
    qat_loader_free(&r->loader);
}

static qat_train_config config(const char *ckpt, int epochs, int total_epochs, int batches) {
    qat_train_config c = {.epochs = epochs, .checkpoint = ckpt, .model_text = MODEL};
    c.sched = (qat_lr_schedule){.kind = QAT_LR_COSINE, .t_max = (long)total_epochs * batches};
    return c;
}

static void tmp_path(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "/tmp/qat_test_trainer_%d_%s", (int)getpid(), name);
}

/* 3 epochs in one run == 1 epoch, a checkpoint, a new process-like restart, 2 more. */
static void test_resume_is_bit_identical(void **state) {
    (void)state;
    qat_dataset ds;
    make_data(&ds);
    char pa[256], pb[256];
    tmp_path(pa, sizeof pa, "a.safetensors");
    tmp_path(pb, sizeof pb, "b.safetensors");
    qat_error err = {0};
    qat_train_result res;

    run a;
    run_init(&a, &ds);
    qat_train_config ca = config(pa, 3, 3, a.loader.n_batches);
    if (qat_train_run(a.m, &a.opt, &a.loader, NULL, &ca, 0, 0, &a.rng, &res, &err)) fail_msg("%s", err.msg);
    assert_int_equal(res.epochs_done, 3);

    run b;
    run_init(&b, &ds);
    qat_train_config cb = config(pb, 1, 3, b.loader.n_batches);
    if (qat_train_run(b.m, &b.opt, &b.loader, NULL, &cb, 0, 0, &b.rng, &res, &err)) fail_msg("%s", err.msg);
    run_free(&b);

    /* Restart from the file alone. */
    qat_checkpoint ck;
    if (qat_checkpoint_load(&ck, pb, &err)) fail_msg("%s", err.msg);
    assert_int_equal(ck.epoch, 1);
    run c;
    run_init(&c, &ds);
    if (qat_checkpoint_restore(&ck, c.m, &c.opt, &err)) fail_msg("%s", err.msg);
    c.rng = ck.rng;
    qat_train_config cc = config(pb, 3, 3, c.loader.n_batches);
    if (qat_train_run(c.m, &c.opt, &c.loader, NULL, &cc, (int)ck.epoch, ck.step, &c.rng, &res, &err))
        fail_msg("%s", err.msg);
    qat_checkpoint_free(&ck);

    assert_memory_equal(a.m->params, c.m->params, a.m->n_params * sizeof(float));
    assert_int_equal(a.opt.mem_bytes, c.opt.mem_bytes);
    assert_memory_equal(a.opt.mem, c.opt.mem, a.opt.mem_bytes);
    assert_int_equal(a.opt.step, c.opt.step);
    assert_memory_equal(&a.rng, &c.rng, sizeof a.rng);
    run_free(&a);
    run_free(&c);
    remove(pa);
    remove(pb);
    qat_dataset_free(&ds);
}

/* Distillation (train/step.h): a student with the soft targets alone (alpha 1) learns
 * the teacher's decisions; and a distilled run resumes to the same bits. */
static void test_distillation(void **state) {
    (void)state;
    qat_dataset ds;
    make_data(&ds);
    qat_error err = {0};
    qat_train_result res;
    run teach;
    run_init(&teach, &ds);
    qat_train_config ct = config(NULL, 4, 4, teach.loader.n_batches);
    if (qat_train_run(teach.m, &teach.opt, &teach.loader, NULL, &ct, 0, 0, &teach.rng, &res, &err)) fail_msg("%s", err.msg);
    qat_distill kd = {teach.m, 2.0f, 1.0f};
    char pa[256], pb[256];
    tmp_path(pa, sizeof pa, "kd_a.safetensors");
    tmp_path(pb, sizeof pb, "kd_b.safetensors");
    /* 3 epochs at once */
    run a;
    run_init(&a, &ds);
    qat_train_config ca = config(pa, 3, 3, a.loader.n_batches);
    ca.distill = &kd;
    if (qat_train_run(a.m, &a.opt, &a.loader, NULL, &ca, 0, 0, &a.rng, &res, &err)) fail_msg("%s", err.msg);
    /* the student agrees with the teacher on the training points it never saw labels of */
    qat_tape t;
    qat_tape_init(&t, 0);
    t.training = false;
    t.grad_enabled = false;
    qat_tensor *yt = qat_model_forward(teach.m, &t, qat_tape_input(&t, 2, (int[]){N, D}, ds.features));
    float *tl = malloc(sizeof(float) * N * K);
    memcpy(tl, yt->data, sizeof(float) * N * K);
    qat_tape_reset(&t);
    qat_tensor *ys = qat_model_forward(a.m, &t, qat_tape_input(&t, 2, (int[]){N, D}, ds.features));
    int agree = 0;
    for (int i = 0; i < N; i++) {
        int bt = 0, bs = 0;
        for (int k = 1; k < K; k++) {
            bt = tl[i * K + k] > tl[i * K + bt] ? k : bt;
            bs = ys->data[i * K + k] > ys->data[i * K + bs] ? k : bs;
        }
        agree += bt == bs;
    }
    if (agree < 90) fail_msg("the distilled student agrees with its teacher on %d of %d points", agree, N);
    free(tl);
    qat_tape_free(&t);
    /* 1 epoch, then 2 more from the checkpoint */
    run b;
    run_init(&b, &ds);
    qat_train_config cb = config(pb, 1, 3, b.loader.n_batches);
    cb.distill = &kd;
    if (qat_train_run(b.m, &b.opt, &b.loader, NULL, &cb, 0, 0, &b.rng, &res, &err)) fail_msg("%s", err.msg);
    run_free(&b);
    qat_checkpoint ck;
    if (qat_checkpoint_load(&ck, pb, &err)) fail_msg("%s", err.msg);
    run c;
    run_init(&c, &ds);
    if (qat_checkpoint_restore(&ck, c.m, &c.opt, &err)) fail_msg("%s", err.msg);
    c.rng = ck.rng;
    qat_train_config cc = config(pb, 3, 3, c.loader.n_batches);
    cc.distill = &kd;
    if (qat_train_run(c.m, &c.opt, &c.loader, NULL, &cc, (int)ck.epoch, ck.step, &c.rng, &res, &err))
        fail_msg("%s", err.msg);
    qat_checkpoint_free(&ck);
    assert_memory_equal(a.m->params, c.m->params, a.m->n_params * sizeof(float));
    run_free(&a);
    run_free(&c);
    run_free(&teach);
    remove(pa);
    remove(pb);
    qat_dataset_free(&ds);
}

static void test_same_seed_same_run(void **state) {
    (void)state;
    qat_dataset ds;
    make_data(&ds);
    qat_error err = {0};
    qat_train_result r1, r2;
    run a, b;
    run_init(&a, &ds);
    run_init(&b, &ds);
    qat_train_config c = config(NULL, 2, 2, a.loader.n_batches);
    assert_int_equal(qat_train_run(a.m, &a.opt, &a.loader, NULL, &c, 0, 0, &a.rng, &r1, &err), QAT_STATUS_OK);
    assert_int_equal(qat_train_run(b.m, &b.opt, &b.loader, NULL, &c, 0, 0, &b.rng, &r2, &err), QAT_STATUS_OK);
    assert_memory_equal(a.m->params, b.m->params, a.m->n_params * sizeof(float));
    assert_true(r1.train_loss == r2.train_loss);
    /* It learned something: accuracy well above chance (1/3). */
    assert_true(r1.train_acc > 0.6);
    run_free(&a);
    run_free(&b);
    qat_dataset_free(&ds);
}

/* A NaN in the second epoch stops the run; the checkpoint on disk is epoch 1's. */
static void test_nan_keeps_last_good_checkpoint(void **state) {
    (void)state;
    qat_dataset ds;
    make_data(&ds);
    char path[256];
    tmp_path(path, sizeof path, "nan.safetensors");
    qat_error err = {0};
    qat_train_result res;
    run a;
    run_init(&a, &ds);
    qat_train_config c = config(path, 1, 2, a.loader.n_batches);
    assert_int_equal(qat_train_run(a.m, &a.opt, &a.loader, NULL, &c, 0, 0, &a.rng, &res, &err), QAT_STATUS_OK);
    float *good = malloc(a.m->n_params * sizeof(float));
    memcpy(good, a.m->params, a.m->n_params * sizeof(float));
    ds.features[17 * D + 3] = NAN; /* bad data arrives */
    c.epochs = 2;
    qat_status s = qat_train_run(a.m, &a.opt, &a.loader, NULL, &c, 1, res.steps, &a.rng, &res, &err);
    assert_int_equal(s, QAT_STATUS_NUMERIC);
    if (!strstr(err.msg, "epoch 2") || !strstr(err.msg, "last good checkpoint"))
        fail_msg("unclear message: %s", err.msg);
    qat_checkpoint ck;
    if (qat_checkpoint_load(&ck, path, &err)) fail_msg("%s", err.msg);
    assert_int_equal(ck.epoch, 1);
    run b;
    run_init(&b, &ds);
    if (qat_checkpoint_restore(&ck, b.m, NULL, &err)) fail_msg("%s", err.msg);
    assert_memory_equal(b.m->params, good, b.m->n_params * sizeof(float));
    qat_checkpoint_free(&ck);
    free(good);
    run_free(&a);
    run_free(&b);
    remove(path);
    qat_dataset_free(&ds);
}

static int count_lines(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    int n = 0, ch;
    while ((ch = fgetc(f)) != EOF) n += ch == '\n';
    fclose(f);
    return n;
}

static void test_metrics_log(void **state) {
    (void)state;
    qat_dataset ds;
    make_data(&ds);
    char csv[256], jsonl[256];
    tmp_path(csv, sizeof csv, "log.csv");
    tmp_path(jsonl, sizeof jsonl, "log.jsonl");
    remove(csv);
    remove(jsonl);
    qat_error err = {0};
    qat_train_result res;
    run a;
    run_init(&a, &ds);
    qat_loader_config tc = a.loader.cfg;
    tc.shuffle = false;
    qat_loader test;
    assert_int_equal(qat_loader_init(&test, &ds, &tc, &err), QAT_STATUS_OK);
    qat_train_config c = config(NULL, 2, 2, a.loader.n_batches);
    c.log = csv;
    assert_int_equal(qat_train_run(a.m, &a.opt, &a.loader, &test, &c, 0, 0, &a.rng, &res, &err), QAT_STATUS_OK);
    assert_int_equal(count_lines(csv), 3); /* header + 2 epochs */
    assert_true(res.test_acc >= 0 && res.test_acc <= 1);
    c.log = jsonl;
    c.epochs = 3;
    assert_int_equal(qat_train_run(a.m, &a.opt, &a.loader, &test, &c, 2, res.steps, &a.rng, &res, &err), QAT_STATUS_OK);
    assert_int_equal(count_lines(jsonl), 1);
    FILE *f = fopen(jsonl, "r");
    char line[512];
    assert_non_null(fgets(line, sizeof line, f));
    fclose(f);
    assert_non_null(strstr(line, "{\"epoch\": 3, "));
    assert_non_null(strstr(line, "\"test_acc\": "));
    /* An unwritable log is an error naming the file. */
    c.log = "/nonexistent-dir/log.csv";
    c.epochs = 4;
    assert_int_equal(qat_train_run(a.m, &a.opt, &a.loader, &test, &c, 3, res.steps, &a.rng, &res, &err), QAT_STATUS_IO);
    assert_non_null(strstr(err.msg, "/nonexistent-dir/log.csv"));
    qat_loader_free(&test);
    run_free(&a);
    remove(csv);
    remove(jsonl);
    qat_dataset_free(&ds);
}

static void test_gradient_clipping(void **state) {
    (void)state;
    qat_dataset ds;
    make_data(&ds);
    run a;
    run_init(&a, &ds);
    qat_optim_free(&a.opt); /* plain SGD (no momentum): the update is -lr * clipped gradient */
    qat_optim_config oc = qat_optim_config_default(QAT_OPTIM_SGD);
    qat_error err = {0};
    assert_int_equal(qat_optim_init(&a.opt, &oc, a.m->n_params, &err), QAT_STATUS_OK);
    float *before = malloc(a.m->n_params * sizeof(float));
    memcpy(before, a.m->params, a.m->n_params * sizeof(float));
    qat_tape t;
    qat_tape_init(&t, 0);
    t.rng = &a.rng;
    qat_batch b;
    assert_true(qat_loader_next(&a.loader, &b));
    qat_step_result r;
    const float clip = 1e-3f, lr = 1.0f;
    assert_int_equal(qat_train_step(a.m, &t, &a.opt, lr, clip, &b, &r, &err), QAT_STATUS_OK);
    assert_true(r.grad_norm > clip);
    double moved = 0;
    for (size_t i = 0; i < a.m->n_params; i++) {
        double d = (double)a.m->params[i] - before[i];
        moved += d * d;
    }
    moved = sqrt(moved);
    if (!(fabs(moved - lr * clip) < 1e-5)) fail_msg("update norm %g, expected %g", moved, (double)(lr * clip));
    qat_tape_free(&t);
    free(before);
    run_free(&a);
    qat_dataset_free(&ds);
}

/* An optimizer created before the model gained parameters (quantization adds PACT
 * alphas) would leave them untouched: qat_train_step refuses it, changes nothing, and a
 * step with a fitting optimizer advances the model's step count. */
static void test_step_refuses_a_partial_optimizer(void **state) {
    (void)state;
    qat_dataset ds;
    make_data(&ds);
    run a;
    run_init(&a, &ds); /* the optimizer covers the float model's parameters */
    qat_error err = {0};
    qat_quant_spec spec;
    assert_int_equal(qat_quant_spec_parse(&spec, "w8a8,pact", &err), QAT_STATUS_OK);
    assert_int_equal(qat_quant_prepare(a.m, &spec, NULL, &err), QAT_STATUS_OK);
    assert_true(a.m->n_params > a.opt.n);
    float *before = malloc(a.m->n_params * sizeof(float));
    memcpy(before, a.m->params, a.m->n_params * sizeof(float));
    qat_tape t;
    qat_tape_init(&t, 0);
    t.rng = &a.rng;
    qat_batch b;
    assert_true(qat_loader_next(&a.loader, &b));
    qat_step_result r;
    assert_int_equal(qat_train_step(a.m, &t, &a.opt, 0.1f, 0, &b, &r, &err), QAT_STATUS_INVALID_ARG);
    if (!strstr(err.msg, "covers") || !strstr(err.msg, "qat_quant_prepare")) fail_msg("message: %s", err.msg);
    assert_memory_equal(before, a.m->params, a.m->n_params * sizeof(float));
    assert_int_equal(a.m->step, 0);
    assert_int_equal(a.opt.step, 0);
    qat_optim_config oc = a.opt.cfg;
    qat_optim_free(&a.opt);
    assert_int_equal(qat_optim_init(&a.opt, &oc, a.m->n_params, &err), QAT_STATUS_OK);
    assert_int_equal(qat_train_step(a.m, &t, &a.opt, 0.1f, 0, &b, &r, &err), QAT_STATUS_OK);
    assert_int_equal(a.m->step, 1);
    qat_tape_free(&t);
    free(before);
    run_free(&a);
    qat_dataset_free(&ds);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resume_is_bit_identical),
        cmocka_unit_test(test_same_seed_same_run),
        cmocka_unit_test(test_distillation),
        cmocka_unit_test(test_nan_keeps_last_good_checkpoint),
        cmocka_unit_test(test_metrics_log),
        cmocka_unit_test(test_gradient_clipping),
        cmocka_unit_test(test_step_refuses_a_partial_optimizer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
