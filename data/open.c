/* open.c - a data set in any of the formats, detected from what the path holds
 * (dataset.h, "any format"). */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "dataset.h"

static const char *const FORMATS[] = {
    [QAT_DATA_FORMAT_IDX] = "idx",
    [QAT_DATA_FORMAT_CIFAR10] = "cifar10",
    [QAT_DATA_FORMAT_FOLDER] = "folder",
    [QAT_DATA_FORMAT_CSV] = "csv",
};
_Static_assert(sizeof FORMATS / sizeof FORMATS[0] == QAT_DATA_FORMAT_COUNT, "one name per format");

const char *qat_data_format_str(qat_data_format f) {
    return (unsigned)f < QAT_DATA_FORMAT_COUNT ? FORMATS[f] : "unknown";
}

bool qat_data_format_parse(const char *name, qat_data_format *f) {
    for (int i = 0; name && i < QAT_DATA_FORMAT_COUNT; i++)
        if (strcmp(name, FORMATS[i]) == 0) {
            *f = (qat_data_format)i;
            return true;
        }
    return false;
}

static bool is_file(const char *dir, const char *name) {
    char p[4096];
    if (snprintf(p, sizeof p, "%s/%s", dir, name) >= (int)sizeof p) return false;
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static bool has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

qat_status qat_data_format_detect(const char *path, qat_data_format *f, qat_error *err) {
    struct stat st;
    if (stat(path, &st) != 0)
        return qat_error_set(err, QAT_STATUS_IO, "%s: no such file or directory (the data)", path);
    if (S_ISREG(st.st_mode)) {
        if (!has_suffix(path, ".csv"))
            return qat_error_set(err, QAT_STATUS_FORMAT,
                                 "%s: a data file must be .csv (label first, then the features); "
                                 "images go in a directory (IDX, CIFAR-10 batches, or one "
                                 "sub-folder per class)",
                                 path);
        *f = QAT_DATA_FORMAT_CSV;
        return QAT_STATUS_OK;
    }
    if (!S_ISDIR(st.st_mode))
        return qat_error_set(err, QAT_STATUS_IO, "%s: neither a file nor a directory", path);
    if (is_file(path, "data_batch_1.bin") || is_file(path, "test_batch.bin"))
        *f = QAT_DATA_FORMAT_CIFAR10;
    else if (is_file(path, "train-images-idx3-ubyte") || is_file(path, "train-images-idx3-ubyte.gz") ||
             is_file(path, "t10k-images-idx3-ubyte") || is_file(path, "t10k-images-idx3-ubyte.gz"))
        *f = QAT_DATA_FORMAT_IDX;
    else
        *f = QAT_DATA_FORMAT_FOLDER;
    return QAT_STATUS_OK;
}

qat_status qat_dataset_open(qat_dataset *ds, const char *path, const char *format, qat_split split,
                            int in_ndim, const int *in_shape, qat_error *err) {
    QAT_ASSERT(ds != NULL && path != NULL && in_shape != NULL);
    memset(ds, 0, sizeof *ds);
    qat_data_format f;
    if (format && format[0]) {
        if (!qat_data_format_parse(format, &f))
            return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                                 "data format '%s': expected idx, cifar10, folder or csv", format);
    } else {
        qat_status st = qat_data_format_detect(path, &f, err);
        if (st) return st;
    }
    switch (f) {
    case QAT_DATA_FORMAT_IDX: return qat_dataset_load_mnist(ds, path, split, err);
    case QAT_DATA_FORMAT_CIFAR10: return qat_dataset_load_cifar10_dir(ds, path, split, err);
    case QAT_DATA_FORMAT_CSV: return qat_dataset_load_csv(ds, path, 0, err);
    case QAT_DATA_FORMAT_FOLDER:
        if (in_ndim != 3)
            return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                                 "%s: an image folder needs a model with a (C, H, W) input", path);
        return qat_dataset_load_folder(ds, path, in_shape[0], in_shape[1], in_shape[2], err);
    case QAT_DATA_FORMAT_COUNT: break;
    }
    return qat_error_set(err, QAT_STATUS_INVALID_ARG, "data format %d", (int)f);
}

qat_status qat_dataset_check_fit(const qat_dataset *ds, int in_ndim, const int *in_shape,
                                 int n_outputs, const char *path, qat_error *err) {
    int dim = 1;
    for (int i = 0; i < in_ndim; i++) dim *= in_shape[i];
    bool ok = ds->dim == dim;
    if (ok && ds->kind == QAT_DATASET_KIND_IMAGES && in_ndim == 3)
        ok = ds->c == in_shape[0] && ds->h == in_shape[1] && ds->w == in_shape[2];
    if (!ok)
        return qat_error_set(err, QAT_STATUS_SHAPE,
                             "%s: samples of %d values (%dx%dx%d) do not fit the model's input "
                             "of %d values",
                             path, ds->dim, ds->c, ds->h, ds->w, dim);
    if (ds->n_classes > n_outputs)
        return qat_error_set(err, QAT_STATUS_SHAPE,
                             "%s: labels go up to %d but the model has %d outputs", path,
                             ds->n_classes - 1, n_outputs);
    return QAT_STATUS_OK;
}
