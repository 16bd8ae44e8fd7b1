/* fuzz_onnx.c - ONNX import (train/onnx_import.h): the input as a .onnx file. */
#include "fuzz_util.h"

#include "layers/model.h"
#include "train/onnx_import.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = fuzz_write("in.onnx", data, size);
    qat_model *m = NULL;
    qat_error err = {0};
    if (qat_onnx_import(p, &m, NULL, &err) == QAT_STATUS_OK) qat_model_free(m);
    return 0;
}
