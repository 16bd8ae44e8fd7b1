/* fuzz_cifar.c - CIFAR-10 binary batches (3073-byte records). Promise: an accepted file
 * gives size / 3073 samples of 3x32x32 with labels below 10. */
#include "fuzz_util.h"

#include "data/dataset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = fuzz_write("data_batch_1.bin", data, size);
    qat_dataset ds = {0};
    qat_error err = {0};
    if (qat_dataset_load_cifar10(&ds, &p, 1, &err) == QAT_STATUS_OK) {
        FUZZ_CHECK((size_t)ds.n * 3073 == size && ds.c == 3 && ds.h == 32 && ds.w == 32, "cifar: wrong shape");
        for (int i = 0; i < ds.n; i++) FUZZ_CHECK(ds.labels[i] >= 0 && ds.labels[i] < 10, "cifar: label");
    }
    qat_dataset_free(&ds);
    return 0;
}
