/* fuzz_checkpoint.c - the training side's safetensors reader and checkpoints: the input
 * as a .safetensors file, read by the container reader (every tensor converted to f32
 * when it is a float dtype), then opened as a model the way every command opens a
 * checkpoint (qat_model_open: the checkpoint's model text parsed, the model built and
 * quantized as recorded, its state restored). Promises: a file the container reader
 * accepts keeps every tensor inside the data buffer; a quantized checkpoint that lowers
 * gives an int8 file (the bytes qat export would write) that the runtime accepts. */
#include "fuzz_util.h"

#include "export/int8.h"
#include "io/safetensors.h"
#include "runtime/runtime.h"
#include "train/open.h"

/* Export never writes a file the runtime refuses. */
static void check_export(const qat_model *m) {
    qat_int_model im;
    qat_error err = {0};
    if (qat_lower(m, &im, &err)) return; /* no integer form: a refusal with a message */
    uint8_t *file = NULL;
    size_t len = 0;
    if (qat_int8_encode(&im, "fuzz", NULL, 0, &file, &len, NULL, &err) == QAT_STATUS_OK) {
        size_t ms = qrt_model_mem_size(file, len);
        void *mem = malloc(ms ? ms : 1);
        qrt_model rm;
        qrt_error re = {0};
        FUZZ_CHECK(ms && mem && qrt_model_load(&rm, file, len, mem, ms, &re) == QRT_STATUS_OK,
                   "the runtime refuses an exported model: %s", re.msg);
        free(mem);
    }
    free(file);
    qat_int_model_free(&im);
}

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
    if (qat_model_open(&o, p, 0, &err) == QAT_STATUS_OK) {
        if (o.m->quant) check_export(o.m);
        qat_opened_free(&o);
    }
    return 0;
}
