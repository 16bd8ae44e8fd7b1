/* idx.c - IDX files (the MNIST format, LeCun et al.; http://yann.lecun.com/exdb/mnist/).
 *
 * An IDX file is a 4-byte magic (0x00, 0x00, element type, number of dims), then one
 * big-endian uint32 per dim, then the elements in row-major order. We accept type 0x08
 * (unsigned byte) only: images are (N, H, W) with magic 0x00000803, labels (N) with
 * 0x00000801. gzip-compressed files are read transparently (data/fileio.h).
 */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "dataset.h"
#include "fileio.h"

/* Reads and checks the magic and the dims of an unsigned-byte IDX file with `ndim`
 * dims; `what` names the expected content for messages. Returns the dims and their
 * product (the element count, checked against overflow and QAT_DATA_MAX_BYTES). */
static qat_status idx_header(qat_data_file *f, int ndim, const char *what, uint32_t *dims,
                             size_t *count, qat_error *err) {
    unsigned char magic[4];
    qat_status s = qat_data_read(f, magic, 4, "the IDX magic number", err);
    if (s) return s;
    if (magic[0] != 0 || magic[1] != 0)
        return qat_error_set(err, QAT_STATUS_FORMAT,
                             "%s: not an IDX file: bad magic %02x %02x %02x %02x (an IDX "
                             "file starts with 00 00 <type> <dims>); expected %s",
                             f->path, magic[0], magic[1], magic[2], magic[3], what);
    if (magic[2] != 0x08)
        return qat_error_set(err, QAT_STATUS_FORMAT,
                             "%s: bad magic 0x%02x%02x%02x%02x: IDX element type 0x%02x, "
                             "only 0x08 (unsigned byte) is supported",
                             f->path, magic[0], magic[1], magic[2], magic[3], magic[2]);
    if (magic[3] != ndim)
        return qat_error_set(err, QAT_STATUS_FORMAT,
                             "%s: bad magic 0x%02x%02x%02x%02x: the file has %d dims, "
                             "expected %d for %s (%s)",
                             f->path, magic[0], magic[1], magic[2], magic[3], magic[3], ndim,
                             what,
                             magic[3] == 1   ? "is this a labels file?"
                             : magic[3] == 3 ? "is this an images file?"
                                             : "not an MNIST-style file");
    unsigned char raw[4 * 3];
    s = qat_data_read(f, raw, 4 * (size_t)ndim, "the IDX dims", err);
    if (s) return s;
    /* Each dim < 2^32, so the product of two fits in uint64; the third multiply is
     * checked by division before it can wrap. */
    uint64_t prod = 1;
    for (int d = 0; d < ndim; d++) {
        dims[d] = qat_data_be32(raw + 4 * d);
        if (dims[d] == 0)
            return qat_error_set(err, QAT_STATUS_FORMAT,
                                 "%s: empty: dim %d of the IDX header is 0 (no %s)", f->path,
                                 d, d == 0 ? "samples" : "pixels");
        if (prod > UINT64_MAX / dims[d])
            return qat_error_set(err, QAT_STATUS_FORMAT,
                                 "%s: IDX dims overflow: their product exceeds 2^64 "
                                 "(corrupt header?)",
                                 f->path);
        prod *= dims[d];
    }
    if (dims[0] > INT_MAX || prod > QAT_DATA_MAX_BYTES)
        return qat_error_set(err, QAT_STATUS_FORMAT,
                             "%s: too large: the IDX header declares %llu bytes of %s, over "
                             "the limit of %zu bytes (QAT_DATA_MAX_BYTES; corrupt header?)",
                             f->path, (unsigned long long)prod, what, QAT_DATA_MAX_BYTES);
    *count = (size_t)prod;
    return QAT_STATUS_OK;
}

qat_status qat_dataset_load_idx(qat_dataset *ds, const char *images_path,
                                const char *labels_path, int n_classes, qat_error *err) {
    QAT_ASSERT(ds && images_path && labels_path);
    memset(ds, 0, sizeof *ds);
    if (n_classes < 0 || n_classes > QAT_DATA_MAX_CLASSES)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "qat_dataset_load_idx: n_classes = %d, expected 0 (infer) .. %d",
                             n_classes, QAT_DATA_MAX_CLASSES);
    qat_data_file fi = {0}, fl = {0};
    uint32_t idims[3] = {0}, ldims[1] = {0};
    size_t ibytes = 0, lbytes = 0;
    uint8_t *pixels = NULL, *raw_labels = NULL;
    int32_t *labels = NULL;
    /* Both headers first: a count mismatch is reported before reading 47 MB. */
    qat_status s = qat_data_open(&fi, images_path, err);
    if (!s) s = idx_header(&fi, 3, "images (N, H, W)", idims, &ibytes, err);
    if (!s) s = qat_data_open(&fl, labels_path, err);
    if (!s) s = idx_header(&fl, 1, "labels (N)", ldims, &lbytes, err);
    if (!s && (uint64_t)idims[1] * idims[2] > INT_MAX)
        s = qat_error_set(err, QAT_STATUS_FORMAT,
                          "%s: too large: images of %u x %u pixels, over 2^31 - 1 pixels "
                          "per image (corrupt header?)",
                          images_path, idims[1], idims[2]);
    if (!s && idims[0] != ldims[0])
        s = qat_error_set(err, QAT_STATUS_FORMAT,
                          "count mismatch: %s has %u images but %s has %u labels", images_path,
                          idims[0], labels_path, ldims[0]);
    if (!s) s = qat_data_read_alloc(&fi, ibytes, (void **)&pixels, "the image data", err);
    if (!s) s = qat_data_expect_end(&fi, err);
    if (!s) s = qat_data_read_alloc(&fl, lbytes, (void **)&raw_labels, "the labels", err);
    if (!s) s = qat_data_expect_end(&fl, err);
    qat_data_close(&fi);
    qat_data_close(&fl);
    int n = (int)idims[0], max_label = 0;
    if (!s) {
        labels = malloc(sizeof(int32_t) * (size_t)n);
        if (!labels) s = qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", labels_path);
    }
    for (int i = 0; !s && i < n; i++) {
        labels[i] = raw_labels[i];
        if (n_classes > 0 && labels[i] >= n_classes)
            s = qat_error_set(err, QAT_STATUS_FORMAT,
                              "%s: label %d of sample %d (byte %zu) is out of range: expected "
                              "0..%d for %d classes",
                              labels_path, labels[i], i, (size_t)i + 8, n_classes - 1,
                              n_classes);
        max_label = QAT_MAX(max_label, labels[i]);
    }
    free(raw_labels);
    if (s) {
        free(pixels);
        free(labels);
        return s;
    }
    ds->kind = QAT_DATASET_KIND_IMAGES;
    ds->n = n;
    ds->c = 1;
    ds->h = (int)idims[1];
    ds->w = (int)idims[2];
    ds->dim = ds->h * ds->w;
    ds->n_classes = n_classes > 0 ? n_classes : max_label + 1;
    ds->pixels = pixels;
    ds->labels = labels;
    return QAT_STATUS_OK;
}

/* The first of the candidate names that exists in dir, into out. */
static bool find_file(const char *dir, const char *const *names, int n_names, char *out,
                      size_t len) {
    for (int i = 0; i < n_names; i++) {
        struct stat st;
        int w = snprintf(out, len, "%s/%s", dir, names[i]);
        if (w > 0 && (size_t)w < len && stat(out, &st) == 0 && S_ISREG(st.st_mode)) return true;
    }
    return false;
}

qat_status qat_dataset_load_mnist(qat_dataset *ds, const char *dir, qat_split split,
                                  qat_error *err) {
    QAT_ASSERT(ds && dir);
    memset(ds, 0, sizeof *ds);
    /* The usual names, and the "train-images.idx3-ubyte" spelling some mirrors use;
     * each plain, then gzip. */
    static const char *const images[2][4] = {
        {"train-images-idx3-ubyte", "train-images-idx3-ubyte.gz", "train-images.idx3-ubyte",
         "train-images.idx3-ubyte.gz"},
        {"t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz", "t10k-images.idx3-ubyte",
         "t10k-images.idx3-ubyte.gz"}};
    static const char *const labels[2][4] = {
        {"train-labels-idx1-ubyte", "train-labels-idx1-ubyte.gz", "train-labels.idx1-ubyte",
         "train-labels.idx1-ubyte.gz"},
        {"t10k-labels-idx1-ubyte", "t10k-labels-idx1-ubyte.gz", "t10k-labels.idx1-ubyte",
         "t10k-labels.idx1-ubyte.gz"}};
    int k = split == QAT_SPLIT_TRAIN ? 0 : 1;
    const char *const *img_names = images[k], *const *lbl_names = labels[k];
    char ipath[4096], lpath[4096];
    const char *missing = NULL;
    if (!find_file(dir, img_names, 4, ipath, sizeof ipath)) missing = img_names[0];
    else if (!find_file(dir, lbl_names, 4, lpath, sizeof lpath)) missing = lbl_names[0];
    if (missing)
        return qat_error_set(err, QAT_STATUS_IO,
                             "%s: no %s (or .gz) in this directory: give a directory with "
                             "MNIST-style IDX files (for Fashion-MNIST on Debian: apt-get "
                             "install dataset-fashion-mnist, %s)",
                             dir, missing, QAT_FASHION_MNIST_DIR);
    return qat_dataset_load_idx(ds, ipath, lpath, 10, err);
}
