/* fuzz_csv.c - CSV tables. Promise: an accepted table has finite features and labels in
 * [0, n_classes). */
#include "fuzz_util.h"

#include <math.h>

#include "data/dataset.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = fuzz_write("in.csv", data, size);
    qat_dataset ds = {0};
    qat_error err = {0};
    if (qat_dataset_load_csv(&ds, p, 0, &err) == QAT_STATUS_OK) {
        for (size_t i = 0; i < (size_t)ds.n * (size_t)ds.dim; i++) FUZZ_CHECK(isfinite(ds.features[i]), "csv: not finite");
        for (int i = 0; i < ds.n; i++) FUZZ_CHECK(ds.labels[i] >= 0 && ds.labels[i] < ds.n_classes, "csv: label");
    }
    qat_dataset_free(&ds);
    return 0;
}
