/* test_lut.c - lookup-table activations, the independent-checker standard
 * (../shared/int8-spec.md, "Other ops", elementwise nonlinearities):
 *
 *  - the table equals the spec's formula, computed here in double from the spec alone
 *    (T[i] = clamp(round(f(s_in (i - 128 - z_in)) / s_out) + z_out, -128, 127), round
 *    half away from zero), for sigmoid, tanh, hard-swish and leaky ReLU (three slopes),
 *    over ordinary and extreme (s_in, z_in) and output parameters, and a 4-bit sub-range;
 *  - the runtime's kernel, on every path, equals the table lookup on every int8 input
 *    (all 256, a long odd-length buffer, and in place);
 *  - end to end, per function: a model input -> f -> flatten, quantized w8a8 with several
 *    input mappings (z_in = -128 and 127, s_in tiny and huge), exported to an int8 file
 *    and run by the runtime on all 256 pixel values: its output equals the spec's table
 *    made here from the file's own scales, and the fake-quant forward equals the table's
 *    dequantized values, s_out (T[q] - z_out), exactly; sigmoid and tanh have the spec's
 *    fixed output parameters (1/256, -128) and (1/128, 0); also with LSQ's learned steps
 *    and at 4 bits (tables within the sub-range -8..7);
 *  - a conv followed by hard-swish keeps its own requantization (no fused clamp), and the
 *    lut reads the conv's zero point;
 *  - bad files are refused with the field or tensor named: a table of the wrong size or
 *    dtype, absent, an unknown fn, alpha where it does not belong or missing, a z_in that
 *    is not the input's, a shape that is not the input's.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "export/int8.h"
#include "layers/model_file.h"
#include "runtime/kernels.h"
#include "runtime/runtime.h"
#include "runtime/simd.h"
#include "testutil.h"

/* ---- the spec's table, written here from the spec alone --------------------------- */

enum { F_SIGMOID, F_TANH, F_HARDSWISH, F_LEAKY };

static double ref_f(int fn, double alpha, double x) {
    switch (fn) {
    case F_SIGMOID: return 1.0 / (1.0 + exp(-x));
    case F_TANH: return tanh(x);
    case F_HARDSWISH: return x <= -3.0 ? 0.0 : x >= 3.0 ? x : x * (x + 3.0) / 6.0;
    default: return x > 0.0 ? x : alpha * x;
    }
}

/* Round half away from zero, written without round(). */
static double ref_round(double v) { return v >= 0 ? floor(v + 0.5) : -floor(-v + 0.5); }

static void ref_table(int8_t T[256], int fn, double alpha, double s_in, int z_in, double s_out, int z_out,
                      int qmin, int qmax) {
    for (int i = 0; i < 256; i++) {
        double q = ref_round(ref_f(fn, alpha, s_in * (double)(i - 128 - z_in)) / s_out) + z_out;
        T[i] = (int8_t)(q < qmin ? qmin : q > qmax ? qmax : q);
    }
}

static void expect_table(const int8_t *got, const int8_t *want, const char *what) {
    for (int i = 0; i < 256; i++)
        if (got[i] != want[i])
            fail_msg("%s: entry %d (q_in %d): got %d, expected %d", what, i, i - 128, got[i], want[i]);
}

static const qat_lut_fn LIB_FN[] = {QAT_LUT_SIGMOID, QAT_LUT_TANH, QAT_LUT_HARDSWISH, QAT_LUT_LEAKY_RELU};

static void test_table_formula(void **state) {
    (void)state;
    const struct {
        double s_in;
        int z_in;
    } ins[] = {{1.0 / (255 * 0.353), -55}, {0.05, 0}, {0.05, -128}, {0.05, 127}, {1e-4, 3},
               {10.0, -7}, {0.0237, 100}, {1e-7, -128}, {1000.0, 127}};
    const struct {
        int fn;
        double alpha, s_out;
        int z_out, qmin, qmax;
    } outs[] = {
        {F_SIGMOID, 0, 1.0 / 256, -128, -128, 127},
        {F_TANH, 0, 1.0 / 128, 0, -128, 127},
        {F_HARDSWISH, 0, 6.375 / 255, -113, -128, 127},
        {F_HARDSWISH, 0, 0.001, 0, -128, 127},   /* saturates both ways */
        {F_HARDSWISH, 0, 0.3, -128, -128, 127},  /* the negative lobe clamps at qmin */
        {F_LEAKY, 0.01, 0.02, -30, -128, 127},
        {F_LEAKY, 0.2, 0.05, 10, -128, 127},
        {F_LEAKY, -0.5, 0.04, -100, -128, 127},  /* a negative slope */
        {F_SIGMOID, 0, 1.0 / 16, -8, -8, 7},     /* 4 bits: the sub-range */
        {F_HARDSWISH, 0, 0.4, -5, -8, 7},
    };
    const char *names[] = {"sigmoid", "tanh", "hardswish", "leaky_relu"};
    int n_cases = 0;
    for (size_t a = 0; a < sizeof ins / sizeof *ins; a++)
        for (size_t b = 0; b < sizeof outs / sizeof *outs; b++) {
            int8_t got[256], want[256];
            qat_lut_make(got, LIB_FN[outs[b].fn], outs[b].alpha, ins[a].s_in, ins[a].z_in, outs[b].s_out,
                         outs[b].z_out, outs[b].qmin, outs[b].qmax);
            ref_table(want, outs[b].fn, outs[b].alpha, ins[a].s_in, ins[a].z_in, outs[b].s_out, outs[b].z_out,
                      outs[b].qmin, outs[b].qmax);
            char what[160];
            snprintf(what, sizeof what, "%s alpha %g, s_in %g z_in %d, s_out %g z_out %d", names[outs[b].fn],
                     outs[b].alpha, ins[a].s_in, ins[a].z_in, outs[b].s_out, outs[b].z_out);
            expect_table(got, want, what);
            n_cases++;
        }
    assert_int_equal(n_cases, 90);
    /* Hand values: sigmoid(0) = 1/2 is q = 0 on (1/256, -128); tanh(0) = 0 on (1/128, 0);
     * sigmoid of a large input clamps to 127 (1 is just outside the range). */
    int8_t T[256];
    qat_lut_make(T, QAT_LUT_SIGMOID, 0, 0.1, 0, 1.0 / 256, -128, -128, 127);
    assert_int_equal(T[128], 0);
    assert_int_equal(T[255], 127);
    assert_int_equal(T[0], -128);
    qat_lut_make(T, QAT_LUT_TANH, 0, 0.1, 0, 1.0 / 128, 0, -128, 127);
    assert_int_equal(T[128], 0);
    assert_int_equal(T[255], 127);
    assert_int_equal(T[0], -128);
    /* names of the functions */
    assert_string_equal(qat_lut_fn_str(QAT_LUT_HARDSWISH), "hardswish");
    assert_string_equal(qat_lut_fn_str(QAT_LUT_LEAKY_RELU), "leaky_relu");
    assert_string_equal(qat_int_op_kind_str(QAT_INT_OP_LUT), "lut");
}

/* ---- the runtime's kernel on every path --------------------------------------------- */

static void test_runtime_kernel(void **state) {
    (void)state;
    trng r = {77};
    int8_t T[256], all[256], out[256];
    fill_s8(&r, T, 256, -128, 127);
    for (int i = 0; i < 256; i++) all[i] = (int8_t)(i - 128);
    enum { N = 4099 };
    int8_t *in = xmalloc(N), *o = xmalloc(N), *want = xmalloc(N);
    fill_s8(&r, in, N, -128, 127);
    for (int i = 0; i < N; i++) want[i] = T[in[i] + 128];
    for (int isa = 0; isa < QRT_ISA_COUNT; isa++) {
        memset(out, 0x55, sizeof out);
        qrt_lut_s8_isa((qrt_isa)isa, out, all, T, 256);
        expect_table(out, T, qrt_isa_str((qrt_isa)isa));
        qrt_lut_s8_isa((qrt_isa)isa, o, in, T, N);
        for (int i = 0; i < N; i++)
            if (o[i] != want[i]) fail_msg("%s: [%d] in %d: got %d, expected %d", qrt_isa_str((qrt_isa)isa), i, in[i], o[i], want[i]);
        memcpy(o, in, N); /* in place */
        qrt_lut_s8_isa((qrt_isa)isa, o, o, T, N);
        if (memcmp(o, want, N)) fail_msg("%s: in place differs", qrt_isa_str((qrt_isa)isa));
    }
    qrt_lut_s8(out, all, T, 256);
    expect_table(out, T, "portable kernel");
    free(in);
    free(o);
    free(want);
}

/* ---- end to end: model -> fake quant, lowering, int8 file, runtime ------------------ */

static char dir[64];

typedef struct loaded {
    qrt_model m;
    void *mem, *arena;
    uint8_t *file;
    qrt_error err;
    qrt_status st;
} loaded;

static uint8_t *read_all(const char *path, size_t *len) { return test_read_file(path, len); }

static void load_bytes(loaded *l, uint8_t *f, size_t len) {
    size_t need = qrt_model_mem_size(f, len);
    l->file = f;
    l->mem = xmalloc(need ? need : 1);
    l->st = qrt_model_load(&l->m, f, len, l->mem, need, &l->err);
    l->arena = l->st ? NULL : xmalloc(qrt_arena_size(&l->m));
}

static void loaded_free(loaded *l) {
    free(l->mem);
    free(l->arena);
    free(l->file);
}

/* input 1 16 16 (256 pixels) -> body -> flatten; quantized w8a8 with input mapping
 * (mean, std), calibrated on the 256 pixel values. */
static qat_model *act_model_spec(const char *body, float mean, float std, const char *spec_text) {
    char text[256];
    snprintf(text, sizeof text, "input 1 16 16\n%s\nflatten\n", body);
    qat_model *m = NULL;
    qat_error err = {0};
    if (qat_model_parse(text, "t", &m, &err)) fail_msg("%s", err.msg);
    qat_rng rng;
    qat_rng_init(&rng, 5);
    assert_int_equal(qat_model_finalize(m, &rng), QAT_STATUS_OK);
    qat_quant_spec spec;
    if (qat_quant_spec_parse(&spec, spec_text, &err)) fail_msg("%s", err.msg);
    qat_quant_input in = {true, mean, std};
    if (qat_quant_prepare(m, &spec, &in, &err)) fail_msg("%s", err.msg);
    return m;
}

static qat_model *act_model(const char *body, float mean, float std) {
    return act_model_spec(body, mean, std, "w8a8");
}

/* The 256 pixel values as the loader normalises them. */
static void pixels_norm(float *x, uint8_t *px, float mean, float std) {
    for (int p = 0; p < 256; p++) {
        px[p] = (uint8_t)p;
        x[p] = ((float)p / 255.0f - mean) / std;
    }
}

/* spec: "w8a8", or "w4a4..." (the function's output is not the last layer, so it gets
 * the activation bits: qmin..qmax = -8..7) */
static void run_spec(const char *body, int fn, double alpha, float mean, float std, const char *spec) {
    char what[160];
    snprintf(what, sizeof what, "%s (mean %g std %g, %s)", body, (double)mean, (double)std, spec);
    const bool four = !strncmp(spec, "w4a4", 4);
    const int qmin = four ? -8 : -128, qmax = four ? 7 : 127;
    qat_model *m = act_model_spec(body, mean, std, spec);
    float x[256];
    uint8_t px[256];
    pixels_norm(x, px, mean, std);
    qat_error err = {0};
    qat_tape t;
    qat_tape_init(&t, 0);
    t.training = false;
    t.grad_enabled = false;
    assert_int_equal(qat_quant_calibrate_begin(m, &err), QAT_STATUS_OK);
    assert_non_null(qat_model_forward(m, &t, qat_tape_input(&t, 4, (int[]){1, 1, 16, 16}, x)));
    if (qat_quant_calibrate_end(m, &err)) fail_msg("%s: %s", what, err.msg);
    qat_tape_reset(&t);
    qat_tensor *y = qat_model_forward(m, &t, qat_tape_input(&t, 4, (int[]){1, 1, 16, 16}, x));
    assert_non_null(y);

    /* The lowered model: one lut, the spec's fixed parameters for sigmoid and tanh. */
    qat_int_model im;
    if (qat_lower(m, &im, &err)) fail_msg("%s: %s", what, err.msg);
    assert_int_equal(im.n_ops, 2);
    const qat_int_op *op = &im.ops[0];
    assert_int_equal(op->kind, QAT_INT_OP_LUT);
    assert_int_equal(op->lut_fn, LIB_FN[fn]);
    assert_true(op->lut_alpha == (float)alpha);
    const qat_int_value *vin = &im.values[op->in[0]], *vout = &im.values[op->out];
    if (fn == F_SIGMOID) {
        assert_true(vout->scale == (four ? 1.0f / 16 : 1.0f / 256) && vout->zero_point == qmin);
    } else if (fn == F_TANH) {
        assert_true(vout->scale == (four ? 1.0f / 8 : 1.0f / 128) && vout->zero_point == 0);
    }
    int8_t T[256];
    ref_table(T, fn, alpha, vin->scale, vin->zero_point, vout->scale, vout->zero_point, qmin, qmax);
    expect_table(op->table, T, what);

    /* Fake quant on the grid equals the table's dequantized values, exactly. The input
     * point maps pixel p to q = p - 128 (the spec's input mapping), so entry p. */
    for (int p = 0; p < 256; p++) {
        float want = vout->scale * (float)(T[p] - vout->zero_point);
        if (y->data[p] != want)
            fail_msg("%s: pixel %d: fake quant %.9g, table %d -> %.9g", what, p, (double)y->data[p], T[p],
                     (double)want);
    }

    /* The int8 file through the runtime: output = table lookup. */
    char path[128];
    snprintf(path, sizeof path, "%s/lut.int8", dir);
    if (qat_int8_write(&im, path, NULL, 0, NULL, &err)) fail_msg("%s: %s", what, err.msg);
    size_t len;
    loaded l;
    uint8_t *bytes = read_all(path, &len);
    load_bytes(&l, bytes, len);
    if (l.st) fail_msg("%s: load: %s", what, l.err.msg);
    const qrt_op *rop = &l.m.ops[1];
    assert_int_equal(rop->kind, QRT_OP_LUT);
    assert_string_equal(rop->fn, qat_lut_fn_str(LIB_FN[fn]));
    assert_true((rop->alpha != NULL) == (fn == F_LEAKY));
    for (int isa = 0; isa < QRT_ISA_COUNT; isa++) {
        int8_t logits[256];
        assert_int_equal(qrt_run_isa(&l.m, (qrt_isa)isa, px, l.arena, logits, NULL), QRT_STATUS_OK);
        char w2[200];
        snprintf(w2, sizeof w2, "%s, runtime %s", what, qrt_isa_str((qrt_isa)isa));
        expect_table(logits, T, w2);
    }
    loaded_free(&l);
    unlink(path);
    qat_int_model_free(&im);
    qat_tape_free(&t);
    qat_model_free(m);
}

static void run_one(const char *body, int fn, double alpha, float mean, float std) {
    run_spec(body, fn, alpha, mean, std, "w8a8");
}

static void test_end_to_end(void **state) {
    (void)state;
    /* (mean, std): the Fashion-MNIST mapping, z_in = -128, z_in = 127, s_in huge (the
     * functions saturate), s_in tiny (a few steps near f(0)). No mean with 255 mean a
     * half-integer: there the float input quantization of training rounds p - 255 mean
     * half away from zero, one level off the spec's p - 128 - z_in on one side (an input
     * mapping matter, not the tables'). */
    const float maps[][2] = {{0.2860f, 0.3530f}, {0.0f, 0.5f}, {1.0f, 0.25f}, {0.45f, 0.004f}, {0.31f, 40.0f}};
    for (size_t k = 0; k < sizeof maps / sizeof *maps; k++) {
        run_one("sigmoid", F_SIGMOID, 0, maps[k][0], maps[k][1]);
        run_one("tanh", F_TANH, 0, maps[k][0], maps[k][1]);
        run_one("hardswish", F_HARDSWISH, 0, maps[k][0], maps[k][1]);
        run_one("leaky_relu", F_LEAKY, 0.01f, maps[k][0], maps[k][1]);
        run_one("leaky_relu alpha=0.3", F_LEAKY, 0.3f, maps[k][0], maps[k][1]);
    }
    /* Learned ranges (LSQ's step) and 4-bit outputs (the table clamps to the sub-range;
     * sigmoid s = 1/16, z = -8; tanh s = 1/8, z = 0). */
    const char *specs[] = {"w8a8,lsq", "w4a4", "w4a4,lsq"};
    for (int k = 0; k < 3; k++) {
        run_spec("sigmoid", F_SIGMOID, 0, 0.2860f, 0.3530f, specs[k]);
        run_spec("tanh", F_TANH, 0, 0.2860f, 0.3530f, specs[k]);
        run_spec("hardswish", F_HARDSWISH, 0, 0.2860f, 0.3530f, specs[k]);
        run_spec("leaky_relu alpha=0.1", F_LEAKY, 0.1f, 0.0f, 0.5f, specs[k]);
    }
}

/* conv -> hard-swish: the conv requantizes on its own (full clamp), the lut reads it. */
static void test_conv_then_lut(void **state) {
    (void)state;
    qat_model *m = act_model("conv2d out=2 kernel=3 pad=1\nbatchnorm\nhardswish\nconv2d out=2 kernel=1\n"
                             "leaky_relu alpha=0.1\nmaxpool kernel=2\ntanh",
                             0.2860f, 0.3530f);
    float x[4 * 256];
    fill_uniform(x, 4 * 256, -0.8f, 2.0f, 9);
    qat_error err = {0};
    qat_tape t;
    qat_tape_init(&t, 0);
    t.training = false;
    t.grad_enabled = false;
    qat_quant_calibrate_begin(m, &err);
    assert_non_null(qat_model_forward(m, &t, qat_tape_input(&t, 4, (int[]){4, 1, 16, 16}, x)));
    assert_int_equal(qat_quant_calibrate_end(m, &err), QAT_STATUS_OK);
    qat_int_model im;
    if (qat_lower(m, &im, &err)) fail_msg("%s", err.msg);
    const qat_int_op_kind want[] = {QAT_INT_OP_CONV2D, QAT_INT_OP_LUT, QAT_INT_OP_CONV2D, QAT_INT_OP_LUT,
                                    QAT_INT_OP_MAXPOOL, QAT_INT_OP_LUT, QAT_INT_OP_FLATTEN};
    assert_int_equal(im.n_ops, 7);
    for (int i = 0; i < 7; i++) assert_int_equal(im.ops[i].kind, want[i]);
    for (int i = 0; i < 7; i += 2) {
        if (im.ops[i].kind != QAT_INT_OP_CONV2D) continue;
        assert_int_equal(im.ops[i].act_min, -128); /* no clamp fused: the lut follows */
        assert_int_equal(im.ops[i].act_max, 127);
        const qat_int_value *c = &im.values[im.ops[i].out], *lin = &im.values[im.ops[i + 1].in[0]];
        assert_int_equal(im.ops[i + 1].in[0], im.ops[i].out);
        assert_true(c->scale == lin->scale);
    }
    /* Each table is the spec's, from the values' own parameters. */
    for (int i = 0; i < im.n_ops; i++) {
        const qat_int_op *op = &im.ops[i];
        if (op->kind != QAT_INT_OP_LUT) continue;
        const qat_int_value *a = &im.values[op->in[0]], *b = &im.values[op->out];
        int fn = op->lut_fn == QAT_LUT_HARDSWISH ? F_HARDSWISH : op->lut_fn == QAT_LUT_TANH ? F_TANH : F_LEAKY;
        int8_t T[256];
        ref_table(T, fn, op->lut_alpha, a->scale, a->zero_point, b->scale, b->zero_point, -128, 127);
        expect_table(op->table, T, op->name);
    }
    assert_true(im.ops[5].lut_fn == QAT_LUT_TANH && im.values[im.ops[5].out].scale == 1.0f / 128);
    qat_int_model_free(&im);
    qat_tape_free(&t);
    qat_model_free(m);
}

/* ---- bad files ------------------------------------------------------------------------ */

static void refuse(const char *graph, const char *tdtype, int tn, const char *want, const char *what) {
    tfile tf;
    memset(&tf, 0, sizeof tf);
    uint8_t data[1024] = {0};
    int64_t shape[1] = {tn};
    int esize = !strcmp(tdtype, "I32") ? 4 : 1;
    if (tn >= 0) tf_add(&tf, "1.table", tdtype, 1, shape, data, (size_t)tn * (size_t)esize);
    snprintf(tf.graph, sizeof tf.graph, "%s", graph);
    char *h = tf_header(&tf, "qat-int8", "1");
    size_t len;
    uint8_t *f = tf_bytes_with(&tf, h, &len);
    loaded l;
    load_bytes(&l, f, len);
    if (l.st == QRT_STATUS_OK) fail_msg("%s: accepted", what);
    if (!strstr(l.err.msg, want)) fail_msg("%s: message '%s' does not mention '%s'", what, l.err.msg, want);
    loaded_free(&l);
    free(h);
    tf_free(&tf);
}

static void test_refuse_bad_files(void **state) {
    (void)state;
    const char *ok = "input out=0 shape=4 s=1 z=-3\n"
                     "lut in=0 out=1 shape=4 table=1.table fn=sigmoid z_in=-3 z_out=-128 s=0.00390625\n"
                     "output in=1\n";
    /* the good file loads and runs */
    {
        tfile tf;
        memset(&tf, 0, sizeof tf);
        int8_t T[256];
        for (int i = 0; i < 256; i++) T[i] = (int8_t)(127 - i);
        tf_add(&tf, "1.table", "I8", 1, (int64_t[]){256}, T, 256);
        snprintf(tf.graph, sizeof tf.graph, "%s", ok);
        char *h = tf_header(&tf, "qat-int8", "1");
        size_t len;
        loaded l;
        uint8_t *bytes = tf_bytes_with(&tf, h, &len);
        load_bytes(&l, bytes, len);
        if (l.st) fail_msg("good file: %s", l.err.msg);
        const uint8_t px[4] = {0, 1, 128, 255};
        int8_t out[4];
        assert_int_equal(qrt_run(&l.m, px, l.arena, out, NULL), QRT_STATUS_OK);
        for (int i = 0; i < 4; i++) assert_int_equal(out[i], T[px[i]]);
        loaded_free(&l);
        free(h);
        tf_free(&tf);
    }
    refuse(ok, "I8", 255, "table=1.table has shape (255), expected (256)", "table of 255");
    refuse(ok, "I8", 512, "expected (256)", "table of 512");
    refuse(ok, "U8", 256, "table=1.table is U8, expected I8", "U8 table");
    refuse(ok, "I32", 256, "is I32, expected I8", "I32 table");
    refuse(ok, "I8", -1, "table=1.table: no tensor of that name", "no table");
    char *g;
    g = replace1(ok, "fn=sigmoid", "fn=gelu");
    refuse(g, "I8", 256, "fn=gelu: unknown function", "unknown fn");
    free(g);
    g = replace1(ok, " fn=sigmoid", "");
    refuse(g, "I8", 256, "missing field 'fn'", "no fn");
    free(g);
    g = replace1(ok, "fn=sigmoid", "fn=sigmoid alpha=0.1");
    refuse(g, "I8", 256, "alpha= is leaky_relu's slope", "alpha on sigmoid");
    free(g);
    g = replace1(ok, "fn=sigmoid", "fn=leaky_relu");
    refuse(g, "I8", 256, "missing field 'alpha'", "leaky without alpha");
    free(g);
    g = replace1(ok, "z_in=-3", "z_in=4");
    refuse(g, "I8", 256, "z_in=4, but value 0 has zero point -3", "z_in mismatch");
    free(g);
    g = replace1(ok, "lut in=0 out=1 shape=4", "lut in=0 out=1 shape=5");
    refuse(g, "I8", 256, "shape=5, but lut", "shape mismatch");
    free(g);
    g = replace1(ok, " z_out=-128", "");
    refuse(g, "I8", 256, "missing field 'z_out'", "no z_out");
    free(g);
    g = replace1(ok, "z_out=-128", "z_out=-129");
    refuse(g, "I8", 256, "z_out=-129 is out of range", "z_out out of range");
    free(g);
}

static int setup(void **state) {
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/qat_test_lut_XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    return rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_formula),
        cmocka_unit_test(test_runtime_kernel),
        cmocka_unit_test(test_end_to_end),
        cmocka_unit_test(test_conv_then_lut),
        cmocka_unit_test(test_refuse_bad_files),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
