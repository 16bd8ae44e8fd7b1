#include "dataset.h"

#include <math.h>
#include <string.h>

void qat_dataset_free(qat_dataset *ds) {
    if (!ds) return;
    free(ds->pixels);
    free(ds->features);
    free(ds->labels);
    if (ds->class_names)
        for (int i = 0; i < ds->n_classes; i++) free(ds->class_names[i]);
    free(ds->class_names);
    memset(ds, 0, sizeof *ds);
}

qat_status qat_dataset_keep_classes(qat_dataset *ds, const bool *keep, const char *path, qat_error *err) {
    QAT_ASSERT(ds && keep && ds->n >= 1);
    const size_t dim = (size_t)ds->dim;
    int k = 0;
    for (int i = 0; i < ds->n; i++) {
        if (!keep[ds->labels[i]]) continue;
        if (k != i) {
            ds->labels[k] = ds->labels[i];
            if (ds->pixels) memmove(ds->pixels + (size_t)k * dim, ds->pixels + (size_t)i * dim, dim);
            if (ds->features)
                memmove(ds->features + (size_t)k * dim, ds->features + (size_t)i * dim, dim * sizeof(float));
        }
        k++;
    }
    if (k == 0) return qat_error_set(err, QAT_STATUS_FORMAT, "%s: no sample has one of the classes asked for", path);
    ds->n = k;
    return QAT_STATUS_OK;
}

/* A histogram of the 256 pixel values per channel gives exact integer sums: mean and
 * variance then follow in double from sum_v count[v] v and sum_v count[v] v^2, with no
 * rounding error accumulated over the (up to 2^31) pixels. */
qat_status qat_dataset_channel_stats(const qat_dataset *ds, float *mean, float *std,
                                     qat_error *err) {
    QAT_ASSERT(ds && mean && std);
    if (ds->kind != QAT_DATASET_KIND_IMAGES || !ds->pixels || ds->n < 1)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "qat_dataset_channel_stats: needs a non-empty image data set");
    size_t plane = (size_t)ds->h * (size_t)ds->w;
    for (int c = 0; c < ds->c; c++) {
        uint64_t hist[256] = {0};
        for (int i = 0; i < ds->n; i++) {
            const uint8_t *p = ds->pixels + ((size_t)i * (size_t)ds->c + (size_t)c) * plane;
            for (size_t k = 0; k < plane; k++) hist[p[k]]++;
        }
        double count = (double)ds->n * (double)plane, s1 = 0, s2 = 0;
        for (int v = 0; v < 256; v++) {
            s1 += (double)hist[v] * v;
            s2 += (double)hist[v] * v * v;
        }
        double m = s1 / count, var = s2 / count - m * m;
        mean[c] = (float)(m / 255.0);
        std[c] = (float)(sqrt(var > 0 ? var : 0) / 255.0);
    }
    return QAT_STATUS_OK;
}
