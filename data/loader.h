/* loader.h - batches from a dataset: seeded shuffling, normalization, augmentation.
 *
 * A qat_loader walks a qat_dataset (data/dataset.h) in batches of batch_size samples,
 * turning uint8 pixels into normalized float inputs:
 *
 *     x[c] = (p / 255 - mean[c]) / std[c]            p the pixel, c its channel
 *
 * (CSV features are passed through unchanged: mean/std apply to images only.)
 *
 * Determinism. Everything a batch contains is a pure function of (seed, epoch, batch
 * index) and the dataset: the order of an epoch is a Fisher-Yates shuffle driven by a
 * PCG32 generator seeded from a hash of (seed, epoch), and the augmentation of the
 * sample at position i of the epoch by a generator seeded from (seed, epoch, i). No
 * state carries over from one batch or epoch to the next, so
 *   - the same seed and epoch give the same order and the same augmentations, on any
 *     machine and whatever happened before;
 *   - a run resumes exactly mid-epoch: save (seed, epoch, l.batch) with the checkpoint
 *     and call qat_loader_seek(&l, epoch, batch) after restarting.
 * Every sample appears exactly once per epoch (the last batch holds the remainder,
 * unless drop_last, which then skips those samples for that epoch).
 *
 * Augmentation (images, training only; each sample draws independently):
 *   random crop: pad the image by crop_padding pixels of value 0 on every side (in pixel
 *     space, so the padding normalizes to (0 - mean) / std, like torchvision's
 *     RandomCrop(padding) before Normalize), then cut an H x W window at a uniformly
 *     drawn offset in [0, 2 * crop_padding] along each axis;
 *   horizontal flip: with probability 1/2, after the crop (RandomHorizontalFlip).
 * Draw order per sample: crop dy, crop dx (when crop_padding > 0), flip (when hflip).
 *
 *     qat_loader_config cfg = qat_loader_config_default();
 *     cfg.batch_size = 64;
 *     cfg.seed = 42;
 *     cfg.mean[0] = QAT_FASHION_MNIST_MEAN;
 *     cfg.std[0] = QAT_FASHION_MNIST_STD;
 *     qat_loader l;
 *     if (qat_loader_init(&l, &train, &cfg, &err)) { ...err.msg... }
 *     for (int epoch = 0; epoch < epochs; epoch++) {
 *         qat_loader_seek(&l, epoch, 0, &err);
 *         qat_batch b;
 *         while (qat_loader_next(&l, &b)) {
 *             qat_tensor *x = qat_tape_input(&t, b.ndim, b.shape, b.x);
 *             qat_tensor *loss = qat_cross_entropy(&t, qat_model_forward(m, &t, x), b.y);
 *             ...
 *         }
 *     }
 *     qat_loader_free(&l);
 *
 * The loader borrows the dataset (which must outlive it) and owns one batch of output:
 * a qat_batch's pointers stay valid until the next qat_loader_next or seek.
 */
#ifndef QAT_LOADER_H
#define QAT_LOADER_H

#include <stdbool.h>
#include <stdint.h>

#include "autograd/common.h"
#include "data/dataset.h"

/* The normalisation of a data set's images, x = (p / 255 - mean[c]) / std[c] for channel
 * c: one typed value where the recipe, checkpoints and the CLI meet. As text (the
 * checkpoint keys "normalize_mean" and "normalize_std", the --mean/--std flags) it is a
 * comma-separated list of one value per channel, "0.286" or "0.4914,0.4822,0.4465"; a
 * single value stands for every channel. */
typedef struct qat_normalization {
    int channels;                       /* values given: 1..QAT_DATA_MAX_CHANNELS */
    float mean[QAT_DATA_MAX_CHANNELS];  /* finite; every channel filled (repeating the first) */
    float std[QAT_DATA_MAX_CHANNELS];   /* finite and > 0 */
} qat_normalization;

/* mean 0, std 1: x = p / 255. */
qat_normalization qat_normalization_identity(void);
/* Parses the two lists (std NULL: 1 for every channel). INVALID_ARG naming the text when
 * a value is not a finite number, a std is not > 0, the lists are longer than
 * QAT_DATA_MAX_CHANNELS or of different lengths (one may be a single value). */
qat_status qat_normalization_parse(qat_normalization *n, const char *mean, const char *std,
                                   qat_error *err);
/* The lists for `channels` channels (1..QAT_DATA_MAX_CHANNELS), "%.7g" each, into mean
 * and std (len bytes each; 64 always suffice). */
void qat_normalization_format(const qat_normalization *n, int channels, char *mean, char *std,
                              size_t len);
/* Whether every channel has the same mean and std: the int8 input mapping needs one. */
bool qat_normalization_uniform(const qat_normalization *n, int channels);

typedef struct qat_loader_config {
    int batch_size;  /* >= 1 */
    bool shuffle;    /* false: dataset order every epoch (evaluation) */
    bool drop_last;  /* skip a final batch smaller than batch_size */
    uint64_t seed;   /* of the order and the augmentation */
    float mean[QAT_DATA_MAX_CHANNELS]; /* per channel, in p/255 units; finite */
    float std[QAT_DATA_MAX_CHANNELS];  /* per channel, finite and > 0 */
    int crop_padding; /* random crop after padding by this much; 0 = off; <= max(H, W) */
    bool hflip;       /* random horizontal flip */
} qat_loader_config;

/* batch_size 64, shuffle, keep the last batch, seed 0, mean 0, std 1 (x = p / 255), no
 * augmentation. */
qat_loader_config qat_loader_config_default(void);
/* Sets the config's mean and std per channel. */
void qat_loader_config_normalize(qat_loader_config *c, const qat_normalization *n);

typedef struct qat_batch {
    const float *x;      /* (n, C, H, W) for images, (n, D) for features; normalized */
    const int32_t *y;    /* (n) labels */
    const uint32_t *idx; /* (n) the dataset index of each sample */
    int n;               /* samples: batch_size, fewer in a final partial batch */
    int ndim;            /* 4 for images, 2 for features */
    int shape[4];        /* (n, C, H, W) or (n, D): ready for qat_tape_input */
    int epoch, index;    /* which batch this is */
    int global_n;        /* data-parallel runs: the samples of the whole batch across the
                            processes, of which these n are this one's share (0: n) */
} qat_batch;

typedef struct qat_loader {
    const qat_dataset *ds; /* borrowed */
    qat_loader_config cfg;
    int n_batches; /* per epoch */
    int epoch;     /* the current epoch */
    int batch;     /* index of the batch the next qat_loader_next returns */
    uint32_t *order; /* (ds->n) this epoch's sample order */
    float *x;        /* (batch_size, dim) */
    int32_t *y;      /* (batch_size) */
    uint32_t *idx;   /* (batch_size) */
    float lut[QAT_DATA_MAX_CHANNELS][256]; /* normalized value of each pixel value */
} qat_loader;

/* Checks the config against the dataset (a message names the offending field) and
 * positions the loader at epoch 0, batch 0. */
qat_status qat_loader_init(qat_loader *l, const qat_dataset *ds, const qat_loader_config *cfg,
                           qat_error *err);
void qat_loader_free(qat_loader *l);

/* Positions the loader so that the next batch is `batch` of `epoch` (0 <= batch <=
 * n_batches; epoch >= 0): the start of an epoch, or the resume point of a run. */
qat_status qat_loader_seek(qat_loader *l, int epoch, int batch, qat_error *err);

/* Fills *b with the next batch of the current epoch and returns true; returns false
 * (b untouched) once the epoch's batches are exhausted: seek to the next epoch. */
bool qat_loader_next(qat_loader *l, qat_batch *b);

/* The sample order of an epoch, a permutation of 0..n-1 that depends only on (n, seed,
 * epoch): what a shuffling loader uses. */
void qat_loader_epoch_order(uint32_t *order, int n, uint64_t seed, int epoch);

#endif
