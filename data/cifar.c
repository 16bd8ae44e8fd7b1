/* cifar.c - CIFAR-10 binary batches (https://www.cs.toronto.edu/~kriz/cifar.html).
 *
 * Each file is a sequence of 3073-byte records: one label byte (0..9), then the 32x32
 * image as 1024 red, 1024 green and 1024 blue bytes, each plane row-major. That is
 * already our (C, H, W) layout, so pixels are copied as they are. The files of a split
 * are concatenated in the order given; gzip-compressed copies are read transparently.
 */
#include <stdio.h>
#include <string.h>

#include "dataset.h"
#include "fileio.h"

#define CIFAR_SIDE 32
#define CIFAR_PIXELS (3 * CIFAR_SIDE * CIFAR_SIDE)
#define CIFAR_RECORD (1 + CIFAR_PIXELS)
#define CIFAR_CLASSES 10

/* Appends the records of one file to (pixels, labels), growing them. */
static qat_status cifar_file(const char *path, uint8_t **pixels, int32_t **labels, int *n,
                             int *cap, qat_error *err) {
    qat_data_file f;
    qat_status s = qat_data_open(&f, path, err);
    if (s) return s;
    unsigned char rec[CIFAR_RECORD];
    int records = 0;
    for (;;) {
        size_t got = 0;
        s = qat_data_read_upto(&f, rec, CIFAR_RECORD, &got, err);
        if (s || got == 0) break;
        if (got < CIFAR_RECORD) {
            s = qat_error_set(err, QAT_STATUS_FORMAT,
                              "%s: truncated: record %d has %zu of its %d bytes (the size of "
                              "a CIFAR-10 batch is a multiple of 3073)",
                              path, records, got, CIFAR_RECORD);
            break;
        }
        if (rec[0] >= CIFAR_CLASSES) {
            s = qat_error_set(err, QAT_STATUS_FORMAT,
                              "%s: label %d of record %d (byte %zu) is out of range: CIFAR-10 "
                              "labels are 0..9 (a CIFAR-100 file has two label bytes)",
                              path, rec[0], records, (size_t)records * CIFAR_RECORD);
            break;
        }
        if ((size_t)(*n + 1) * CIFAR_PIXELS > QAT_DATA_MAX_BYTES) {
            s = qat_error_set(err, QAT_STATUS_FORMAT,
                              "%s: too large: the data set passes the limit of %zu bytes "
                              "(QAT_DATA_MAX_BYTES)",
                              path, QAT_DATA_MAX_BYTES);
            break;
        }
        if (*n == *cap) {
            int bigger = *cap ? 2 * *cap : 1024;
            uint8_t *p = realloc(*pixels, (size_t)bigger * CIFAR_PIXELS);
            if (p) *pixels = p;
            int32_t *l = realloc(*labels, (size_t)bigger * sizeof(int32_t));
            if (l) *labels = l;
            if (!p || !l) {
                s = qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
                break;
            }
            *cap = bigger;
        }
        memcpy(*pixels + (size_t)*n * CIFAR_PIXELS, rec + 1, CIFAR_PIXELS);
        (*labels)[*n] = rec[0];
        (*n)++;
        records++;
    }
    qat_data_close(&f);
    if (!s && records == 0)
        s = qat_error_set(err, QAT_STATUS_FORMAT,
                          "%s: empty: no CIFAR-10 records (each is 3073 bytes)", path);
    return s;
}

qat_status qat_dataset_load_cifar10(qat_dataset *ds, const char *const *paths, int n_paths,
                                    qat_error *err) {
    QAT_ASSERT(ds);
    memset(ds, 0, sizeof *ds);
    if (!paths || n_paths < 1)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "qat_dataset_load_cifar10: no files given");
    uint8_t *pixels = NULL;
    int32_t *labels = NULL;
    int n = 0, cap = 0;
    qat_status s = QAT_STATUS_OK;
    for (int i = 0; !s && i < n_paths; i++) {
        QAT_ASSERT(paths[i]);
        s = cifar_file(paths[i], &pixels, &labels, &n, &cap, err);
    }
    if (s) {
        free(pixels);
        free(labels);
        return s;
    }
    /* give back the unused part of the doubling */
    uint8_t *p = realloc(pixels, (size_t)n * CIFAR_PIXELS);
    int32_t *l = realloc(labels, (size_t)n * sizeof(int32_t));
    ds->kind = QAT_DATASET_KIND_IMAGES;
    ds->n = n;
    ds->c = 3;
    ds->h = ds->w = CIFAR_SIDE;
    ds->dim = CIFAR_PIXELS;
    ds->n_classes = CIFAR_CLASSES;
    ds->pixels = p ? p : pixels;
    ds->labels = l ? l : labels;
    return QAT_STATUS_OK;
}

qat_status qat_dataset_load_cifar10_dir(qat_dataset *ds, const char *dir, qat_split split,
                                        qat_error *err) {
    QAT_ASSERT(ds && dir);
    memset(ds, 0, sizeof *ds);
    char buf[5][4096];
    const char *paths[5];
    int n = split == QAT_SPLIT_TRAIN ? 5 : 1;
    for (int i = 0; i < n; i++) {
        int w = split == QAT_SPLIT_TRAIN
                    ? snprintf(buf[i], sizeof buf[i], "%s/data_batch_%d.bin", dir, i + 1)
                    : snprintf(buf[i], sizeof buf[i], "%s/test_batch.bin", dir);
        if (w < 0 || (size_t)w >= sizeof buf[i])
            return qat_error_set(err, QAT_STATUS_INVALID_ARG, "%s: path too long", dir);
        paths[i] = buf[i];
    }
    return qat_dataset_load_cifar10(ds, paths, n, err);
}
