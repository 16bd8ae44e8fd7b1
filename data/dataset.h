/* dataset.h - labelled data sets held in memory: images as uint8, CSV rows as float.
 *
 * A qat_dataset is N samples with an int32 label each. Images are kept as raw uint8
 * pixels, (N, C, H, W) row-major: a quarter of the memory of float, and exactly what the
 * int8 runtime consumes. Rows of a CSV file (MLP inputs) are kept as float, (N, D).
 * Normalization, shuffling and augmentation happen later, batch by batch, in the loader
 * (data/loader.h).
 *
 * Sources (formats and limits in docs/data.md):
 *  - IDX (MNIST, Fashion-MNIST), plain or gzip:  qat_dataset_load_idx, and
 *    qat_dataset_load_mnist for a directory holding the four standard files (the
 *    default is Debian's dataset-fashion-mnist in QAT_FASHION_MNIST_DIR);
 *  - CIFAR-10 binary batches (1 label byte + 3072 pixel bytes, CHW per record):
 *    qat_dataset_load_cifar10 (list of files), qat_dataset_load_cifar10_dir;
 *  - a folder of images, one sub-folder per class (PNG, JPEG, BMP through stb_image),
 *    converted to the model's channels and size: qat_dataset_load_folder;
 *  - a CSV file of numbers, label first then the features: qat_dataset_load_csv.
 *
 *     qat_dataset train;
 *     qat_error err = {0};
 *     if (qat_dataset_load_mnist(&train, QAT_FASHION_MNIST_DIR, QAT_SPLIT_TRAIN, &err)) {
 *         fprintf(stderr, "%s\n", err.msg);   // names the file and the problem
 *         return 1;
 *     }
 *     ... qat_loader_init(&loader, &train, &cfg, &err) ...
 *     qat_dataset_free(&train);
 *
 * Every loader validates what it reads: bad magic numbers, truncated files (including a
 * gzip stream cut short), counts that disagree, labels out of range, undecodable or
 * oversized images, ragged or non-numeric CSV rows, NaN/Inf, empty data sets. Each is a
 * qat_status with a message naming the file (and the line, for CSV) and the problem;
 * nothing reads out of bounds and nothing exits. On failure the dataset is left zeroed
 * (nothing to free; qat_dataset_free on it is harmless).
 */
#ifndef QAT_DATASET_H
#define QAT_DATASET_H

#include <stdbool.h>
#include <stdint.h>

#include "autograd/common.h"

/* Limits on what a loader accepts (docs/data.md). */
#define QAT_DATA_MAX_BYTES ((size_t)1 << 31)  /* pixels or features of one data set: 2 GiB */
#ifndef QAT_DATA_MAX_IMAGE_SIDE /* the fuzz build lowers it (CMakeLists.txt, QAT_FUZZ) */
#define QAT_DATA_MAX_IMAGE_SIDE 4096 /* decoded width and height of one image */
#endif
#define QAT_DATA_MAX_IMAGE_FILE ((size_t)64 << 20) /* one encoded image file: 64 MiB */
#define QAT_DATA_MAX_CLASSES 10000
#define QAT_DATA_MAX_CHANNELS 3

/* Debian's dataset-fashion-mnist package; statistics of its training split. */
#define QAT_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"
#define QAT_FASHION_MNIST_MEAN 0.2860f
#define QAT_FASHION_MNIST_STD 0.3530f

typedef enum qat_dataset_kind {
    QAT_DATASET_KIND_NONE = 0, /* zeroed or freed */
    QAT_DATASET_KIND_IMAGES,   /* pixels (N, C, H, W) uint8 */
    QAT_DATASET_KIND_FEATURES, /* features (N, D) float */
    QAT_DATASET_KIND_COUNT
} qat_dataset_kind;

typedef enum qat_split {
    QAT_SPLIT_TRAIN,
    QAT_SPLIT_TEST,
    QAT_SPLIT_COUNT
} qat_split;

typedef struct qat_dataset {
    qat_dataset_kind kind;
    int n;            /* samples, >= 1 */
    int c, h, w;      /* images: channels (1 or 3), height, width; 0 for features */
    int dim;          /* values per sample: C*H*W for images, D for features */
    int n_classes;    /* every label is in [0, n_classes) */
    uint8_t *pixels;  /* images: (N, C, H, W); NULL for features */
    float *features;  /* features: (N, D); NULL for images */
    int32_t *labels;  /* (N) */
    char **class_names; /* folder data sets: n_classes sub-folder names; NULL otherwise */
} qat_dataset;

/* IDX files: images are unsigned-byte IDX with 3 dims (N, H, W), magic 0x00000803;
 * labels unsigned-byte IDX with 1 dim (N), magic 0x00000801. Either file may be gzip-
 * compressed (detected from its content, not its name). n_classes > 0: every label must
 * be below it; n_classes = 0: n_classes = max label + 1. Result: C = 1. */
qat_status qat_dataset_load_idx(qat_dataset *ds, const char *images_path,
                                const char *labels_path, int n_classes, qat_error *err);

/* The train or test split of an MNIST-style directory: {train,t10k}-{images-idx3,
 * labels-idx1}-ubyte, each plain or with .gz (the '.idx3-ubyte' spelling is accepted
 * too; a plain file is preferred when both exist). 10 classes. */
qat_status qat_dataset_load_mnist(qat_dataset *ds, const char *dir, qat_split split,
                                  qat_error *err);

/* CIFAR-10 binary batches: each file is a sequence of 3073-byte records (a label in
 * 0..9, then 1024 red, 1024 green, 1024 blue bytes, rows top to bottom). The records of
 * all files are concatenated in order. Result: 10 classes, C = 3, H = W = 32. */
qat_status qat_dataset_load_cifar10(qat_dataset *ds, const char *const *paths, int n_paths,
                                    qat_error *err);
/* data_batch_1.bin .. data_batch_5.bin (train) or test_batch.bin (test) from `dir`
 * (the layout of cifar-10-batches-bin/). */
qat_status qat_dataset_load_cifar10_dir(qat_dataset *ds, const char *dir, qat_split split,
                                        qat_error *err);

/* A folder with one sub-folder per class; classes are the sub-folder names sorted
 * bytewise (strcmp), label i = i-th name; files within a class are taken in sorted
 * order. Hidden entries (starting with '.') and plain files at the top level are
 * ignored; every other entry of a class folder must be a PNG, JPEG or BMP image.
 * Each image is converted to `channels` (1 or 3; see qat_image_load in data/image.h)
 * and resized to height x width (1..QAT_DATA_MAX_IMAGE_SIDE). */
qat_status qat_dataset_load_folder(qat_dataset *ds, const char *dir, int channels,
                                   int height, int width, qat_error *err);

/* A CSV file: one sample per line, the label first, then D >= 1 features, separated by
 * commas (spaces around fields allowed, CRLF accepted, blank lines skipped). The first
 * line is a header, and skipped, when its first field is not a number. Every row must
 * have the header's (or first row's) number of columns. Features must be finite floats;
 * labels integers in [0, n_classes) (n_classes = 0: max label + 1). */
qat_status qat_dataset_load_csv(qat_dataset *ds, const char *path, int n_classes,
                                qat_error *err);

/* ---- any format (data/open.c) ---- */

typedef enum qat_data_format {
    QAT_DATA_FORMAT_IDX,     /* an MNIST-style directory */
    QAT_DATA_FORMAT_CIFAR10, /* a cifar-10-batches-bin directory */
    QAT_DATA_FORMAT_FOLDER,  /* a folder of class sub-folders of images */
    QAT_DATA_FORMAT_CSV,     /* a .csv file */
    QAT_DATA_FORMAT_COUNT
} qat_data_format;

/* "idx", "cifar10", "folder", "csv"; "unknown" for anything else. */
const char *qat_data_format_str(qat_data_format f);
/* The format named (as qat_data_format_str spells it); false if unknown. */
bool qat_data_format_parse(const char *name, qat_data_format *f);
/* What `path` holds: a file ending in .csv is CSV; a directory with data_batch_1.bin or
 * test_batch.bin is CIFAR-10, one with {train,t10k}-images-idx3-ubyte[.gz] is IDX, any
 * other directory an image folder. IO with the path named if it is neither a file nor a
 * directory, FORMAT for a file that is not .csv. */
qat_status qat_data_format_detect(const char *path, qat_data_format *f, qat_error *err);

/* One split of the data at `path`, in `format` ("idx", "cifar10", "folder", "csv"; NULL
 * or "": detected). An image folder is converted to the model's input (in_ndim must be
 * 3, in_shape its (C, H, W)); a CSV file has no splits (the same file either way). */
qat_status qat_dataset_open(qat_dataset *ds, const char *path, const char *format, qat_split split,
                            int in_ndim, const int *in_shape, qat_error *err);

/* Whether the samples fit a model's per-sample input (in_ndim, in_shape) and its
 * n_outputs classes: SHAPE with the path and both shapes otherwise. */
qat_status qat_dataset_check_fit(const qat_dataset *ds, int in_ndim, const int *in_shape,
                                 int n_outputs, const char *path, qat_error *err);

/* Keeps the samples whose label l has keep[l] (keep: n_classes flags), in their order;
 * n_classes is unchanged (labels keep their values). FORMAT error naming `path` when no
 * sample remains. */
qat_status qat_dataset_keep_classes(qat_dataset *ds, const bool *keep, const char *path, qat_error *err);

/* Frees what the dataset owns and zeroes it. NULL or a zeroed dataset is fine. */
void qat_dataset_free(qat_dataset *ds);

/* Per-channel mean and (population) standard deviation of p/255 over every pixel of an
 * image data set: what to give the loader's normalization. mean and std receive ds->c
 * values. Fails (INVALID_ARG) for a features data set. */
qat_status qat_dataset_channel_stats(const qat_dataset *ds, float *mean, float *std,
                                     qat_error *err);

#endif
