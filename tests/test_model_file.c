/* test_model_file.c - the text model format: the example files, the round trip through
 * qat_model_to_text, and an error naming FILE:LINE for every kind of mistake. */
#include <stdio.h>
#include <string.h>

#include "layers/model_file.h"
#include "testutil.h"

#define EXAMPLES_DIR QAT_FIXTURE_DIR "/../../examples"

static qat_model *load_example(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", EXAMPLES_DIR, name);
    qat_model *m = NULL;
    qat_error err = {0};
    if (qat_model_load_file(path, &m, &err) != QAT_STATUS_OK) fail_msg("%s", err.msg);
    qat_rng rng;
    qat_rng_init(&rng, 1);
    if (qat_model_finalize(m, &rng) != QAT_STATUS_OK) fail_msg("%s: %s", name, m->err.msg);
    return m;
}

static void assert_same_text(const qat_model *a, const qat_model *b) {
    char *ta = qat_model_to_text(a), *tb = qat_model_to_text(b);
    assert_non_null(ta);
    assert_non_null(tb);
    assert_string_equal(ta, tb);
    free(ta);
    free(tb);
}

static void test_examples_match_reference_models(void **state) {
    (void)state;
    qat_rng rng;
    qat_rng_init(&rng, 2);
    qat_model *cnn = load_example("cnn.model"), *ref = qat_model_cnn(&rng);
    assert_int_equal(cnn->n_params, ref->n_params);
    assert_int_equal(cnn->n_params, 421834);
    assert_same_text(cnn, ref);
    qat_model_free(cnn);
    qat_model_free(ref);
    qat_model *mlp = load_example("mlp.model");
    ref = qat_model_mlp(&rng);
    assert_int_equal(mlp->n_params, 235146);
    assert_same_text(mlp, ref);
    qat_model_free(mlp);
    qat_model_free(ref);
    qat_model *res = load_example("resnet_small.model");
    assert_non_null(qat_model_param(res, "5.shortcut.0.weight"));
    assert_non_null(qat_model_param(res, "5.shortcut.1.weight"));
    assert_int_equal(res->root.layers[8].out_shape[0], 10);
    qat_model_free(res);
}

static void test_round_trip(void **state) {
    (void)state;
    const char *text =
        "input 3 16 16   # comment after a statement\n"
        "\n"
        "   conv2d out=8 kernel=3 stride=2 pad=1 groups=1 bias=false\n"
        "batchnorm\n"
        "relu6\n"
        "residual\n"
        "  conv2d out=8 kernel=3 pad=1 groups=8\n"
        "  sigmoid\n"
        "  residual\n"
        "    conv2d out=8 kernel=1\n"
        "    tanh\n"
        "    hardswish\n"
        "    leaky_relu alpha=0.2\n"
        "    leaky_relu\n"
        "  end\n"
        "shortcut\n"
        "  avgpool kernel=3 stride=1 pad=1\n"
        "end\n"
        "maxpool kernel=3 stride=2 pad=1\n"
        "dropout p=0.25\n"
        "global_avgpool\n"
        "linear out=5 bias=false\n";
    qat_model *m = NULL;
    qat_error err = {0};
    if (qat_model_parse(text, "t", &m, &err)) fail_msg("%s", err.msg);
    char *t1 = qat_model_to_text(m);
    qat_model *m2 = NULL;
    if (qat_model_parse(t1, "t1", &m2, &err)) fail_msg("%s", err.msg);
    char *t2 = qat_model_to_text(m2);
    assert_string_equal(t1, t2);
    assert_non_null(strstr(t1, "dropout p=0.25"));
    assert_non_null(strstr(t1, "    hardswish\n    leaky_relu alpha=0.200000003\n    leaky_relu alpha=0.00999999978\n"));
    const qat_layer *blk = &m->root.layers[3].body.layers[2];
    assert_int_equal(blk->body.layers[2].kind, QAT_LAYER_HARDSWISH);
    assert_int_equal(blk->body.layers[3].kind, QAT_LAYER_LEAKY_RELU);
    assert_true(blk->body.layers[3].cfg.leaky.alpha == 0.2f);
    assert_true(blk->body.layers[4].cfg.leaky.alpha == 0.01f); /* the default */
    assert_int_equal(qat_layer_role_of(&blk->body.layers[2]), QAT_LAYER_ROLE_NONLINEAR);
    assert_int_equal(qat_layer_role_of(&blk->body.layers[3]), QAT_LAYER_ROLE_NONLINEAR);
    assert_non_null(strstr(t1, "    conv2d out=8 kernel=1\n"));
    qat_rng rng;
    qat_rng_init(&rng, 3);
    assert_int_equal(qat_model_finalize(m, &rng), QAT_STATUS_OK);
    assert_int_equal(qat_model_finalize(m2, &rng), QAT_STATUS_OK);
    assert_int_equal(m->n_params, m2->n_params);
    assert_non_null(qat_model_param(m, "3.body.2.body.0.weight"));
    free(t1);
    free(t2);
    qat_model_free(m);
    qat_model_free(m2);
}

/* Each bad text must fail with "src:LINE: ..." containing `needle`. */
static void expect_parse_error(const char *text, int line, const char *needle) {
    qat_model *m = NULL;
    qat_error err = {0};
    qat_status s = qat_model_parse(text, "bad.model", &m, &err);
    if (s == QAT_STATUS_OK) fail_msg("accepted: %s", text);
    assert_null(m);
    char prefix[64];
    if (line > 0) snprintf(prefix, sizeof prefix, "bad.model:%d: ", line);
    else snprintf(prefix, sizeof prefix, "bad.model: ");
    if (strncmp(err.msg, prefix, strlen(prefix)) != 0)
        fail_msg("message '%s' does not start with '%s'", err.msg, prefix);
    if (!strstr(err.msg, needle)) fail_msg("message '%s' does not mention '%s'", err.msg, needle);
}

static void test_errors_name_file_and_line(void **state) {
    (void)state;
    expect_parse_error("input 1 28 28\nconvolution out=3\n", 2, "unknown layer 'convolution'");
    expect_parse_error("input 1 28 28\nconv2d kernel=3\n", 2, "needs out=N");
    expect_parse_error("input 1 28 28\nleaky_relu alpha=x\n", 2, "alpha=x");
    expect_parse_error("input 1 28 28\nleaky_relu alpha=inf\n", 2, "finite");
    expect_parse_error("input 1 28 28\nleaky_relu slope=0.1\n", 2, "slope");
    expect_parse_error("input 1 28 28\nhardswish alpha=0.1\n", 2, "alpha");
    expect_parse_error("input 1 28 28\nconv2d out=4 kernel=3 strid=2\n", 2, "no option 'strid'");
    expect_parse_error("input 1 28 28\nconv2d out=four kernel=3\n", 2, "out=four");
    expect_parse_error("input 1 28 28\nconv2d out=-4 kernel=3\n", 2, "out=-4");
    expect_parse_error("input 1 28 28\nconv2d out=4 kernel=3 out=5\n", 2, "given twice");
    expect_parse_error("input 1 28 28\nlinear out=10 bias=maybe\n", 2, "true or false");
    expect_parse_error("input 1 28 28\nrelu\nlinear out=10\n", 3, "flatten");
    expect_parse_error("input 1 28 28\nrelu 5\n", 2, "unexpected value");
    expect_parse_error("input 1 28 28\nconv2d out=4 kernel=3 =3\n", 2, "key=value");
    expect_parse_error("# nothing\nrelu\n", 2, "first statement");
    expect_parse_error("input 1 28\n", 1, "C H W");
    expect_parse_error("input 1 0 28\n", 1, "not a dimension");
    expect_parse_error("input 4\ninput 4\n", 2, "twice");
    expect_parse_error("input 4 4 4\nresidual\nconv2d out=8 kernel=1\nend\n", 4, "shortcut in (4, 4, 4)");
    expect_parse_error("input 4 4 4\nresidual\nrelu\n", 0, "not closed");
    expect_parse_error("input 4 4 4\nend\n", 2, "without begin");
    expect_parse_error("input 4 4 4\n", 0, "no layers");
    expect_parse_error("", 0, "no 'input'");
    expect_parse_error("input 8\ndropout p=1.5\n", 2, "[0, 1)");
    expect_parse_error("input 8\ndropout p=nan\n", 2, "expected a number");
    expect_parse_error("input 1 8 8\nmaxpool kernel=9\n", 2, "pooling window");
    char long_line[2000];
    memset(long_line, 'x', sizeof long_line - 1);
    long_line[sizeof long_line - 1] = '\0';
    expect_parse_error(long_line, 1, "longer than");
}

static void test_load_file_errors(void **state) {
    (void)state;
    qat_model *m = NULL;
    qat_error err = {0};
    assert_int_equal(qat_model_load_file("/nonexistent/x.model", &m, &err), QAT_STATUS_IO);
    assert_non_null(strstr(err.msg, "/nonexistent/x.model"));
    char path[] = "/tmp/qat_model_file_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "wb");
    fwrite("input 4\n\0linear out=3\n", 1, 22, f);
    fclose(f);
    qat_error_clear(&err);
    assert_int_equal(qat_model_load_file(path, &m, &err), QAT_STATUS_FORMAT);
    assert_non_null(strstr(err.msg, "NUL"));
    /* A good file in the same place loads, and errors name the path and line. */
    f = fopen(path, "wb");
    fputs("input 4\nlinear out=3\nlinear\n", f);
    fclose(f);
    qat_error_clear(&err);
    assert_int_equal(qat_model_load_file(path, &m, &err), QAT_STATUS_FORMAT);
    char want[128];
    snprintf(want, sizeof want, "%s:3:", path);
    assert_non_null(strstr(err.msg, want));
    remove(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_examples_match_reference_models),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_errors_name_file_and_line),
        cmocka_unit_test(test_load_file_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
