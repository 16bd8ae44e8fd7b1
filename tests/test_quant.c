/* test_quant.c - preparing a model for quantization (quant/quant.h, spec.c, qmodel.c) and
 * batch-norm folding (quant/bnfold.h).
 *
 *  - spec strings: parsing, defaults, the canonical form round trip, clear errors;
 *  - BN folding: conv(x, fold(w), fold(b)) equals conv + BN in eval; the fold ops'
 *    gradients match finite differences;
 *  - with fake quant off, the prepared model computes the float model; at 8 bits after
 *    calibration it stays close; the graph places quantization points where the runtime
 *    requantizes (fused conv+BN+ReLU, 8-bit first layer and logits below 8 bits);
 *  - BN statistics and activation ranges freeze at the configured steps;
 *  - on a tiny problem PTQ beats an uncalibrated quantizer, and QAT lowers PTQ's loss;
 *  - a quantized checkpoint saves and restores its ranges and PACT alphas.
 */
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "layers/batchnorm.h"
#include "layers/conv2d.h"
#include "layers/loss.h"
#include "optim/optim.h"
#include "quant/bnfold.h"
#include "quant/lsq.h"
#include "quant/mixed.h"
#include "quant/quant.h"
#include "testutil.h"
#include "train/checkpoint.h"

/* ---- spec ---- */

static void test_spec_parse(void **state) {
    (void)state;
    qat_quant_spec s;
    qat_error err = {0};
    assert_int_equal(qat_quant_spec_parse(&s, "w8a8", &err), QAT_STATUS_OK);
    assert_int_equal(s.wbits, 8);
    assert_int_equal(s.abits, 8);
    assert_int_equal(s.wgran, QAT_GRANULARITY_CHANNEL);
    assert_int_equal(s.act, QAT_ACT_METHOD_OBSERVER);
    assert_int_equal(qat_quant_spec_parse(&s, "w4a4,pact,freeze-bn=100,observer=kl,pact-decay=0.0001", &err),
                     QAT_STATUS_OK);
    assert_int_equal(s.act, QAT_ACT_METHOD_PACT);
    assert_int_equal(s.freeze_bn, 100);
    assert_int_equal(s.observer.kind, QAT_OBSERVER_KL);
    assert_int_equal(qat_quant_spec_parse(&s, "w4a8,group=32,all,bias-correction", &err), QAT_STATUS_OK);
    assert_int_equal(s.wgran, QAT_GRANULARITY_GROUP);
    assert_int_equal(s.group, 32);
    assert_true(s.all_layers && s.bias_correction);
    assert_int_equal(qat_quant_spec_parse(&s, "w2a2,lsq,per-tensor", &err), QAT_STATUS_OK);
    assert_true(s.weight_lsq && s.act == QAT_ACT_METHOD_LSQ && s.wgran == QAT_GRANULARITY_TENSOR);
    /* 2 bits default to LSQ (weights and activations); range, pact and group=G opt out */
    assert_int_equal(qat_quant_spec_parse(&s, "w2a2", &err), QAT_STATUS_OK);
    assert_true(s.act == QAT_ACT_METHOD_LSQ && s.weight_lsq);
    assert_int_equal(qat_quant_spec_parse(&s, "w2a2,range", &err), QAT_STATUS_OK);
    assert_true(s.act == QAT_ACT_METHOD_OBSERVER && !s.weight_lsq);
    assert_int_equal(qat_quant_spec_parse(&s, "w2a2,pact", &err), QAT_STATUS_OK);
    assert_true(s.act == QAT_ACT_METHOD_PACT && !s.weight_lsq);
    assert_int_equal(qat_quant_spec_parse(&s, "w2a2,group=32", &err), QAT_STATUS_OK);
    assert_true(s.act == QAT_ACT_METHOD_OBSERVER && !s.weight_lsq);
    assert_int_equal(qat_quant_spec_parse(&s, "w3a3", &err), QAT_STATUS_OK);
    assert_true(s.act == QAT_ACT_METHOD_OBSERVER);
    /* canonical form round trip */
    const char *texts[] = {"w8a8", "w4a4,pact,freeze-bn=100,freeze-observer=200",
                           "w4a8,group=16,observer=percentile,percentile=99.9", "w2a2,lsq,all",
                           "w8a8,per-tensor,observer=mse,momentum=0.1,bias-correction", "w2a2", "w2a2,range",
                           "w2a2,pact,group=8", "w2a4,lsq"};
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        char buf[256];
        qat_quant_spec a, b;
        assert_int_equal(qat_quant_spec_parse(&a, texts[i], &err), QAT_STATUS_OK);
        qat_quant_spec_format(&a, buf, sizeof buf);
        assert_int_equal(qat_quant_spec_parse(&b, buf, &err), QAT_STATUS_OK);
        if (memcmp(&a, &b, sizeof a) != 0) fail_msg("'%s' -> '%s' does not round trip", texts[i], buf);
    }
    /* errors name the problem */
    const char *bad[] = {"", "w9a8", "w8a1", "8a8", "w8a8,pact=1", "w8a8,bogus", "w8a8,group=0",
                         "w8a8,freeze-bn=x", "w4a4,lsq,group=8", "w8a8,observer=median", "w8a8x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err = (qat_error){0};
        if (qat_quant_spec_parse(&s, bad[i], &err) != QAT_STATUS_INVALID_ARG)
            fail_msg("'%s' was accepted", bad[i]);
        assert_non_null(strstr(err.msg, "quant spec"));
    }
}

/* ---- batch-norm folding ---- */

static void test_bnfold_equals_conv_bn(void **state) {
    (void)state;
    qat_tape t;
    qat_tape_init(&t, 0);
    t.training = false;
    t.grad_enabled = false;
    qat_tensor *x = test_tensor_filled(4, (int[]){2, 3, 6, 6}, -1, 1, 1);
    qat_tensor *w = test_tensor_filled(4, (int[]){4, 3, 3, 3}, -0.5f, 0.5f, 2);
    qat_tensor *b = test_tensor_filled(1, (int[]){4}, -0.5f, 0.5f, 3);
    qat_tensor *g = test_tensor_filled(1, (int[]){4}, 0.5f, 1.5f, 4);
    qat_tensor *be = test_tensor_filled(1, (int[]){4}, -0.5f, 0.5f, 5);
    float mean[4] = {0.1f, -0.2f, 0.3f, 0.0f}, var[4] = {0.5f, 2.0f, 1.0f, 0.1f};
    qat_tensor *ref = qat_batchnorm(&t, qat_conv2d(&t, x, w, b, 1, 1, 1), g, be, mean, var, 0.1f, 1e-5f);
    qat_tensor *wf = qat_bnfold_weight(&t, w, g, var, 1e-5f);
    qat_tensor *bf = qat_bnfold_bias(&t, b, g, be, mean, var, 1e-5f);
    qat_tensor *y = qat_conv2d(&t, x, wf, bf, 1, 1, 1);
    assert_non_null(ref);
    assert_non_null(y);
    assert_close(y->data, ref->data, y->n, 1e-5, 1e-5, "folded conv vs conv + BN (eval)");
    /* training-path algebra: unscale(conv(x, fold(w))) + b == conv(x, w, b) */
    qat_tensor *u = qat_bnfold_unscale(&t, qat_conv2d(&t, x, wf, NULL, 1, 1, 1), g, var, 1e-5f, b);
    qat_tensor *c = qat_conv2d(&t, x, w, b, 1, 1, 1);
    assert_close(u->data, c->data, u->n, 1e-5, 1e-5, "unscale of the folded conv");
    test_tensor_free(x);
    test_tensor_free(w);
    test_tensor_free(b);
    test_tensor_free(g);
    test_tensor_free(be);
    qat_tape_free(&t);
}

typedef struct fold_args {
    qat_tensor *x, *w, *b, *g, *be;
    float mean[3], var[3];
    int which; /* 0 weight, 1 bias, 2 unscale */
} fold_args;

static qat_tensor *fold_forward(qat_tape *t, void *user) {
    fold_args *a = user;
    if (a->which == 0) return qat_bnfold_weight(t, a->w, a->g, a->var, 1e-5f);
    if (a->which == 1) return qat_bnfold_bias(t, a->b, a->g, a->be, a->mean, a->var, 1e-5f);
    return qat_bnfold_unscale(t, a->x, a->g, a->var, 1e-5f, a->b);
}

static void test_bnfold_gradients(void **state) {
    (void)state;
    qat_tape t;
    qat_tape_init(&t, 0);
    fold_args a = {.x = test_tensor_filled(4, (int[]){2, 3, 2, 2}, -1, 1, 11),
                   .w = test_tensor_filled(2, (int[]){3, 5}, -1, 1, 12),
                   .b = test_tensor_filled(1, (int[]){3}, -1, 1, 13),
                   .g = test_tensor_filled(1, (int[]){3}, 0.5f, 1.5f, 14),
                   .be = test_tensor_filled(1, (int[]){3}, -1, 1, 15),
                   .mean = {0.3f, -0.1f, 0.2f},
                   .var = {0.7f, 1.3f, 0.2f}};
    a.which = 0;
    fd_check(&t, fold_forward, &a, a.w, 1e-2f, 1e-2, 1e-3, 0, NULL, "bnfold_weight dw");
    fd_check(&t, fold_forward, &a, a.g, 1e-2f, 1e-2, 1e-3, 0, NULL, "bnfold_weight dgamma");
    a.which = 1;
    fd_check(&t, fold_forward, &a, a.b, 1e-2f, 1e-2, 1e-3, 0, NULL, "bnfold_bias db");
    fd_check(&t, fold_forward, &a, a.g, 1e-2f, 1e-2, 1e-3, 0, NULL, "bnfold_bias dgamma");
    fd_check(&t, fold_forward, &a, a.be, 1e-2f, 1e-2, 1e-3, 0, NULL, "bnfold_bias dbeta");
    a.which = 2;
    fd_check(&t, fold_forward, &a, a.x, 1e-2f, 1e-2, 1e-3, 0, NULL, "bnfold_unscale dx");
    fd_check(&t, fold_forward, &a, a.g, 1e-3f, 1e-2, 1e-3, 0, NULL, "bnfold_unscale dgamma");
    fd_check(&t, fold_forward, &a, a.b, 1e-2f, 1e-2, 1e-3, 0, NULL, "bnfold_unscale db");
    test_tensor_free(a.x);
    test_tensor_free(a.w);
    test_tensor_free(a.b);
    test_tensor_free(a.g);
    test_tensor_free(a.be);
    qat_tape_free(&t);
}

/* ---- the prepared model ---- */

/* conv(8) BN ReLU maxpool; conv(8) BN ReLU6; global avg pool; linear 10. Trained-looking
 * BN statistics so folding is not the identity. */
static qat_model *small_cnn(uint64_t seed) {
    qat_rng rng;
    qat_rng_init(&rng, seed);
    qat_model *m = qat_model_new(3, (int[]){1, 8, 8});
    qat_model_conv2d(m, 8, 3, 1, 1, 1, true);
    qat_model_batchnorm(m);
    qat_model_relu(m);
    qat_model_maxpool(m, 2, 2, 0);
    qat_model_conv2d(m, 8, 3, 1, 1, 8, false);
    qat_model_batchnorm(m);
    qat_model_relu6(m);
    qat_model_global_avgpool(m);
    qat_model_linear(m, 4, true);
    assert_int_equal(qat_model_finalize(m, &rng), QAT_STATUS_OK);
    for (size_t i = 0; i < m->n_buffers; i++) m->buffers[i] = (i / 8) % 2 ? 0.5f + 0.1f * (i % 8) : 0.05f * (i % 8);
    for (int i = 0; i < m->n_param_tensors; i++)
        if (strstr(m->param_tensors[i]->name, "1.weight") || strstr(m->param_tensors[i]->name, "5.weight"))
            for (size_t k = 0; k < m->param_tensors[i]->n; k++) m->param_tensors[i]->data[k] = 0.8f + 0.05f * k;
    return m;
}

static qat_tensor *forward_eval(qat_model *m, qat_tape *t, const float *x, int n) {
    qat_tape_reset(t);
    t->training = false;
    t->grad_enabled = false;
    return qat_model_forward(m, t, qat_tape_input(t, 4, (int[]){n, 1, 8, 8}, x));
}

static void test_prepared_model_matches_float(void **state) {
    (void)state;
    qat_model *f = small_cnn(1), *q = small_cnn(1);
    qat_error err = {0};
    qat_quant_spec spec;
    qat_quant_spec_parse(&spec, "w8a8", &err);
    qat_quant_input in = {true, 0.3f, 0.35f};
    assert_int_equal(qat_quant_prepare(q, &spec, &in, &err), QAT_STATUS_OK);
    /* one unit per conv/linear, with BN and the activation fused */
    const qat_layer *l0 = &q->root.layers[0], *l4 = &q->root.layers[4];
    assert_non_null(l0->quant);
    assert_ptr_equal(l0->quant->bn, &q->root.layers[1]);
    assert_int_equal(l0->quant->n_fused, 2);
    assert_non_null(l4->quant->out.act);
    assert_int_equal(l4->quant->out.act->kind, QAT_LAYER_RELU6);
    assert_null(q->root.layers[1].quant);
    assert_null(q->root.layers[3].quant); /* max pool: no requantization */
    assert_int_equal(q->root.layers[7].quant->out.method, QAT_ACT_METHOD_SAME);
    /* input mapping of the spec: s = 1/(255 std), z = round(255 mean) - 128 */
    assert_true(fabsf(q->quant->input.scale - 1.0f / (255 * 0.35f)) < 1e-9f);
    assert_int_equal(q->quant->input.zp, (int)roundf(255 * 0.3f) - 128);

    float x[3 * 64];
    fill_uniform(x, 3 * 64, -0.8f, 2.0f, 3);
    /* pixels: x = (p/255 - mean)/std for integer p, as real inputs are */
    for (int i = 0; i < 3 * 64; i++) {
        float p = roundf((x[i] * 0.35f + 0.3f) * 255.0f);
        p = p < 0 ? 0 : p > 255 ? 255 : p;
        x[i] = (p / 255.0f - 0.3f) / 0.35f;
    }
    qat_tape t;
    qat_tape_init(&t, 0);
    qat_tensor *yf = forward_eval(f, &t, x, 3);
    float ref[12];
    memcpy(ref, yf->data, sizeof ref);
    /* fake quant off: exactly the float computation (up to the fold's rounding) */
    assert_int_equal(qat_quant_calibrate_begin(q, &err), QAT_STATUS_OK);
    qat_tensor *yq = forward_eval(q, &t, x, 3);
    assert_close(yq->data, ref, 12, 1e-4, 1e-5, "prepared model, fake quant off");
    assert_int_equal(qat_quant_calibrate_end(q, &err), QAT_STATUS_OK);
    /* 8 bits after calibration on the same data: close to float */
    yq = forward_eval(q, &t, x, 3);
    double diff = 0, mag = 0;
    for (int i = 0; i < 12; i++) {
        diff = fmax(diff, fabs(yq->data[i] - ref[i]));
        mag = fmax(mag, fabs(ref[i]));
    }
    if (diff > 0.03 * mag) fail_msg("w8a8 output differs by %g (max |y| %g)", diff, mag);
    /* the logits' point is 8-bit with its own observer range */
    const qat_qpoint *lp = &q->root.layers[8].quant->out;
    assert_int_equal(lp->bits, 8);
    assert_true(lp->range.data[0] < 0 || lp->range.data[1] > 0);
    qat_tape_free(&t);
    qat_model_free(f);
    qat_model_free(q);
}

static void test_low_bit_ends_stay_8bit(void **state) {
    (void)state;
    qat_error err = {0};
    qat_quant_spec spec;
    qat_model *m = small_cnn(2);
    qat_quant_spec_parse(&spec, "w4a4,pact", &err);
    assert_int_equal(qat_quant_prepare(m, &spec, NULL, &err), QAT_STATUS_OK);
    assert_int_equal(m->root.layers[0].quant->wbits, 8);
    assert_int_equal(m->root.layers[4].quant->wbits, 4);
    assert_int_equal(m->root.layers[8].quant->wbits, 4);
    assert_int_equal(m->root.layers[0].quant->out.bits, 4);
    assert_int_equal(m->root.layers[0].quant->out.method, QAT_ACT_METHOD_PACT);
    assert_int_equal(m->root.layers[8].quant->out.bits, 8);
    assert_int_equal(m->root.layers[8].quant->out.method, QAT_ACT_METHOD_OBSERVER);
    assert_non_null(qat_model_param(m, "0.pact_alpha"));
    assert_non_null(qat_model_param(m, "4.pact_alpha"));
    qat_model_free(m);
    m = small_cnn(2);
    qat_quant_spec_parse(&spec, "w4a4,lsq,all", &err);
    assert_int_equal(qat_quant_prepare(m, &spec, NULL, &err), QAT_STATUS_OK);
    assert_int_equal(m->root.layers[0].quant->wbits, 4);
    assert_int_equal(m->root.layers[8].quant->out.bits, 4);
    assert_non_null(qat_model_param(m, "0.weight_step"));
    assert_non_null(qat_model_param(m, "8.act_step"));
    qat_model_free(m);
}

/* ---- training: freezing, PTQ and QAT on a tiny problem ---- */

#define TN 64
/* A learnable 4-class problem on 8x8 images: the class is which quadrant is bright. */
static void tiny_data(float *x, int32_t *y, int n, uint64_t seed) {
    qat_rng rng;
    qat_rng_init(&rng, seed);
    for (int i = 0; i < n; i++) {
        int c = (int)qat_rng_below(&rng, 4);
        y[i] = c;
        for (int p = 0; p < 64; p++) {
            int q = (p / 8 >= 4) * 2 + (p % 8 >= 4);
            x[i * 64 + p] = (q == c ? 1.0f : -0.5f) + 0.6f * qat_rng_normal(&rng);
        }
    }
}

static double loss_of(qat_model *m, qat_tape *t, const float *x, const int32_t *y, int n) {
    qat_tensor *out = forward_eval(m, t, x, n);
    qat_tensor *l = qat_cross_entropy(t, out, y);
    assert_non_null(l);
    return l->data[0];
}

static void train_steps(qat_model *m, qat_optim *o, qat_tape *t, const float *x, const int32_t *y, int n,
                        int steps) {
    for (int s = 0; s < steps; s++) {
        qat_tape_reset(t);
        t->training = true;
        t->grad_enabled = true;
        qat_tensor *l = qat_cross_entropy(t, qat_model_forward(m, t, qat_tape_input(t, 4, (int[]){n, 1, 8, 8}, x)), y);
        assert_non_null(l);
        qat_model_zero_grad(m);
        assert_int_equal(qat_tape_backward(t, l), QAT_STATUS_OK);
        qat_optim_step(o, m->params, m->grads, o->cfg.lr);
        m->step++; /* what the trainer does after every optimizer step */
    }
}

/* small_cnn(seed) quantized with `spec_text` and calibrated on x (TN samples). */
static qat_model *calibrated_cnn(uint64_t seed, const char *spec_text, qat_tape *t, const float *x) {
    qat_error err = {0};
    qat_quant_spec spec;
    qat_model *m = small_cnn(seed);
    assert_int_equal(qat_quant_spec_parse(&spec, spec_text, &err), QAT_STATUS_OK);
    assert_int_equal(qat_quant_prepare(m, &spec, NULL, &err), QAT_STATUS_OK);
    assert_int_equal(qat_quant_calibrate_begin(m, &err), QAT_STATUS_OK);
    forward_eval(m, t, x, TN);
    assert_int_equal(qat_quant_calibrate_end(m, &err), QAT_STATUS_OK);
    return m;
}

/* Mixed precision: w@NAME=B and auto=BYTES in the spec, the per-layer widths prepare
 * gives, and the byte-budget choice against brute force (quant/mixed.h). */
static void test_mixed_precision(void **state) {
    (void)state;
    qat_error err = {0};
    qat_quant_spec s, b;
    assert_int_equal(qat_quant_spec_parse(&s, "w4a4,pact,w@0=2,w@8=8,auto=1000", &err), QAT_STATUS_OK);
    assert_int_equal(s.n_layer_bits, 2);
    assert_string_equal(s.layer_bits[0].layer, "0");
    assert_int_equal(s.layer_bits[1].wbits, 8);
    assert_int_equal(s.auto_bytes, 1000);
    char buf[512];
    qat_quant_spec_format(&s, buf, sizeof buf);
    assert_int_equal(qat_quant_spec_parse(&b, buf, &err), QAT_STATUS_OK);
    if (memcmp(&s, &b, sizeof s)) fail_msg("'%s' does not round trip", buf);
    const char *bad[] = {"w4a4,w@0=1", "w4a4,w@0=9", "w4a4,w@0=4,w@0=2", "w4a4,w@=4", "w4a4,auto=0", "w4a4,auto=x"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (qat_quant_spec_parse(&b, bad[i], &err) == QAT_STATUS_OK) fail_msg("'%s' was accepted", bad[i]);
    /* prepare: the override wins over the spec's width and over the first layer's 8 */
    err = (qat_error){0};
    qat_model *m = small_cnn(4);
    assert_int_equal(qat_quant_spec_parse(&s, "w4a4,w@0=2,w@8=8", &err), QAT_STATUS_OK);
    assert_int_equal(qat_quant_prepare(m, &s, NULL, &err), QAT_STATUS_OK);
    assert_int_equal(m->root.layers[0].quant->wbits, 2);
    assert_int_equal(m->root.layers[4].quant->wbits, 4);
    assert_int_equal(m->root.layers[8].quant->wbits, 8);
    qat_model_free(m);
    /* LSQ steps are projected back to positive after an optimizer step (lsq.h) */
    m = small_cnn(4);
    assert_int_equal(qat_quant_spec_parse(&s, "w2a2", &err), QAT_STATUS_OK);
    assert_int_equal(qat_quant_prepare(m, &s, NULL, &err), QAT_STATUS_OK);
    qat_layer_quant *u4 = m->root.layers[4].quant;
    assert_non_null(u4->wstep.data);
    assert_true(u4->out.method == QAT_ACT_METHOD_LSQ);
    u4->wstep.data[3] = -1e-4f;
    u4->out.param.data[0] = 0.0f;
    u4->wstep.data[2] = 0.25f;
    assert_non_null(m->quant_after_step);
    m->quant_after_step(m);
    assert_true(u4->wstep.data[3] == QAT_LSQ_MIN_STEP && u4->out.param.data[0] == QAT_LSQ_MIN_STEP);
    assert_true(u4->wstep.data[2] == 0.25f);
    qat_model_free(m);
    /* a name that is no conv or linear layer; auto= unresolved */
    const char *refused[] = {"w4a4,w@3=2", "w4a4,w@99=2", "w4a4,auto=5000"};
    for (int i = 0; i < 3; i++) {
        m = small_cnn(4);
        assert_int_equal(qat_quant_spec_parse(&s, refused[i], &err), QAT_STATUS_OK);
        err = (qat_error){0};
        if (qat_quant_prepare(m, &s, NULL, &err) == QAT_STATUS_OK) fail_msg("prepare took '%s'", refused[i]);
        if (!strstr(err.msg, i < 2 ? "w@" : "auto")) fail_msg("%s: %s", refused[i], err.msg);
        qat_model_free(m);
    }
    /* the choice: exact against every assignment of 5 layers x 4 widths */
    const int bits[4] = {2, 3, 4, 8};
    uint64_t r = 12345;
    for (int trial = 0; trial < 200; trial++) {
        size_t nw[5];
        double cost[20];
        for (int l = 0; l < 5; l++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            nw[l] = 1 + (r >> 33) % 300;
            for (int k = 0; k < 4; k++) {
                r = r * 6364136223846793005ull + 1442695040888963407ull;
                cost[l * 4 + k] = k == 3 ? 0.0 : (double)((r >> 40) % 1000) / 100.0 / (k + 1);
            }
        }
        size_t lo = 0, hi = 0;
        for (int l = 0; l < 5; l++) lo += (nw[l] + 1) / 2, hi += nw[l];
        const size_t budget = lo + (size_t)(trial * 7919) % (hi - lo + 50);
        double best = INFINITY;
        for (int a = 0; a < 1024; a++) {
            size_t bytes = 0;
            double c = 0;
            for (int l = 0; l < 5; l++) {
                const int k = (a >> (2 * l)) & 3;
                bytes += qat_weight_bytes(nw[l], bits[k]);
                c += cost[l * 4 + k];
            }
            if (bytes <= budget && c < best) best = c;
        }
        int choice[5];
        assert_true(qat_mixed_choose(5, nw, 4, bits, cost, budget, choice));
        size_t bytes = 0;
        double c = 0;
        for (int l = 0; l < 5; l++) {
            bytes += qat_weight_bytes(nw[l], bits[choice[l]]);
            c += cost[l * 4 + choice[l]];
        }
        if (bytes > budget || fabs(c - best) > 1e-9)
            fail_msg("trial %d: chose %zu bytes (budget %zu), cost %g; brute force %g", trial, bytes, budget, c, best);
        int none[5];
        assert_false(qat_mixed_choose(5, nw, 4, bits, cost, lo - 1, none));
    }
    assert_int_equal(qat_weight_bytes(7, 4), 4);
    assert_int_equal(qat_weight_bytes(7, 2), 4);
    assert_int_equal(qat_weight_bytes(7, 5), 7);
}

static void test_freezing(void **state) {
    (void)state;
    qat_error err = {0};
    float x[TN * 64];
    int32_t y[TN];
    tiny_data(x, y, TN, 5);
    qat_tape t;
    qat_tape_init(&t, 0);
    qat_model *m = calibrated_cnn(3, "w8a8,freeze-bn=2,freeze-observer=3,momentum=0.5", &t, x);
    qat_optim_config oc = qat_optim_config_default(QAT_OPTIM_SGD);
    oc.lr = 0.01f;
    qat_optim o;
    assert_int_equal(qat_optim_init(&o, &oc, m->n_params, &err), QAT_STATUS_OK);
    float *rm = m->root.layers[1].running_mean.data, *range = m->root.layers[0].quant->out.range.data;
    float rm0 = rm[0], r0 = range[1];
    train_steps(m, &o, &t, x, y, TN, 2); /* steps 0, 1: BN and observers update */
    float rm2 = rm[0], r2 = range[1];
    assert_true(rm2 != rm0);
    assert_true(r2 != r0);
    train_steps(m, &o, &t, x, y, TN, 1); /* step 2: BN frozen, observer still moving */
    assert_true(rm[0] == rm2);
    float r3 = range[1];
    assert_true(r3 != r2);
    train_steps(m, &o, &t, x, y, TN, 2); /* steps 3, 4: both frozen */
    assert_true(rm[0] == rm2);
    assert_true(range[1] == r3);
    assert_int_equal(m->step, 5);
    qat_optim_free(&o);
    qat_tape_free(&t);
    qat_model_free(m);
}

static void test_ptq_and_qat_improve(void **state) {
    (void)state;
    qat_error err = {0};
    float x[TN * 64], xt[TN * 64];
    int32_t y[TN], yt[TN];
    tiny_data(x, y, TN, 7);
    tiny_data(xt, yt, TN, 8);
    qat_model *m = small_cnn(4);
    qat_tape t;
    qat_tape_init(&t, 0);
    qat_optim_config oc = qat_optim_config_default(QAT_OPTIM_SGD);
    oc.lr = 0.05f;
    oc.momentum = 0.9f;
    qat_optim o;
    assert_int_equal(qat_optim_init(&o, &oc, m->n_params, &err), QAT_STATUS_OK);
    train_steps(m, &o, &t, x, y, TN, 60);
    qat_optim_free(&o);
    double float_loss = loss_of(m, &t, xt, yt, TN);
    qat_quant_spec spec;
    qat_quant_spec_parse(&spec, "w4a4,pact", &err);
    assert_int_equal(qat_quant_prepare(m, &spec, NULL, &err), QAT_STATUS_OK);
    double uncalibrated = loss_of(m, &t, xt, yt, TN); /* every range at its initial scale 1 */
    qat_quant_calibrate_begin(m, &err);
    forward_eval(m, &t, x, TN);
    assert_int_equal(qat_quant_calibrate_end(m, &err), QAT_STATUS_OK);
    double ptq = loss_of(m, &t, xt, yt, TN);
    oc.lr = 0.01f;
    assert_int_equal(qat_optim_init(&o, &oc, m->n_params, &err), QAT_STATUS_OK);
    train_steps(m, &o, &t, x, y, TN, 40);
    double qat = loss_of(m, &t, xt, yt, TN);
    print_message("tiny problem test loss: float %.4f, w4a4 uncalibrated %.4f, PTQ %.4f, QAT %.4f\n",
                  float_loss, uncalibrated, ptq, qat);
    if (!(ptq < uncalibrated)) fail_msg("PTQ loss %g is not below the uncalibrated %g", ptq, uncalibrated);
    if (!(qat < ptq)) fail_msg("QAT loss %g is not below PTQ's %g", qat, ptq);
    qat_optim_free(&o);
    qat_tape_free(&t);
    qat_model_free(m);
}

static void test_checkpoint_round_trip(void **state) {
    (void)state;
    qat_error err = {0};
    qat_quant_spec spec;
    qat_quant_spec_parse(&spec, "w4a4,pact", &err);
    float x[TN * 64];
    int32_t y[TN];
    tiny_data(x, y, TN, 9);
    qat_tape t;
    qat_tape_init(&t, 0);
    qat_model *m = calibrated_cnn(5, "w4a4,pact", &t, x);
    m->step = 17;
    float want[TN * 4];
    memcpy(want, forward_eval(m, &t, x, TN)->data, sizeof want);
    char dir[] = "/tmp/qat-test-quant-XXXXXX", path[64];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/q.safetensors", dir);
    qat_rng rng;
    qat_rng_init(&rng, 1);
    qat_checkpoint_meta meta = {.model = "", .step = m->step, .rng = rng};
    assert_int_equal(qat_checkpoint_save(path, m, NULL, &meta, &err), QAT_STATUS_OK);

    qat_model *r = small_cnn(6); /* other weights */
    assert_int_equal(qat_quant_prepare(r, &spec, NULL, &err), QAT_STATUS_OK);
    qat_checkpoint c;
    assert_int_equal(qat_checkpoint_load(&c, path, &err), QAT_STATUS_OK);
    assert_non_null(qat_safetensors_find(&c.file, "0.pact_alpha"));
    assert_non_null(qat_safetensors_find(&c.file, "8.act_range"));
    assert_int_equal(qat_checkpoint_restore(&c, r, NULL, &err), QAT_STATUS_OK);
    qat_quant_refresh(r);
    assert_int_equal(r->step, 17);
    qat_tensor *got = forward_eval(r, &t, x, TN);
    assert_close(got->data, want, TN * 4, 0, 0, "restored quantized model");
    /* a float model does not take a quantized checkpoint */
    qat_model *fl = small_cnn(6);
    assert_int_not_equal(qat_checkpoint_restore(&c, fl, NULL, &err), QAT_STATUS_OK);
    if (!strstr(err.msg, "pact_alpha") && !strstr(err.msg, "act_range")) fail_msg("message: %s", err.msg);
    qat_checkpoint_free(&c);
    unlink(path);
    rmdir(dir);
    qat_model_free(m);
    qat_model_free(r);
    qat_model_free(fl);
    qat_tape_free(&t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_parse),
        cmocka_unit_test(test_mixed_precision),
        cmocka_unit_test(test_bnfold_equals_conv_bn),
        cmocka_unit_test(test_bnfold_gradients),
        cmocka_unit_test(test_prepared_model_matches_float),
        cmocka_unit_test(test_low_bit_ends_stay_8bit),
        cmocka_unit_test(test_freezing),
        cmocka_unit_test(test_ptq_and_qat_improve),
        cmocka_unit_test(test_checkpoint_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
