/* fuzz_checkpoint.c - the training side's safetensors reader and checkpoints: the input
 * as a .safetensors file, read by the container reader (every tensor converted to f32
 * when it is a float dtype), then opened as a model the way every command opens a
 * checkpoint (qat_model_open: the checkpoint's model text parsed, the model built and
 * quantized as recorded, its state restored). Promise: a file the container reader
 * accepts keeps every tensor inside the data buffer. */
#include "fuzz_util.h"

#include "io/safetensors.h"
#include "train/open.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = fuzz_write("in.safetensors", data, size);
    qat_st_file f;
    qat_error err = {0};
    if (qat_safetensors_read(&f, p, &err) == QAT_STATUS_OK) {
        for (size_t i = 0; i < f.n_tensors; i++) {
            const qat_st_tensor *t = &f.tensors[i];
            const uint8_t *base = f.data_buf;
            FUZZ_CHECK(t->nbytes == 0 || ((const uint8_t *)t->data >= base &&
                                          (const uint8_t *)t->data + t->nbytes <= base + f.data_len),
                       "tensor %s outside the data buffer", t->name);
            if (qat_st_dtype_is_float(t->dtype) && t->numel <= (1u << 20)) {
                float *x = malloc(t->numel ? t->numel * sizeof *x : 1);
                if (x) qat_safetensors_to_f32(x, t, &err);
                free(x);
            }
        }
        qat_safetensors_free(&f);
    }
    qat_opened o;
    if (qat_model_open(&o, p, 0, &err) == QAT_STATUS_OK) qat_opened_free(&o);
    return 0;
}
