/* loader.c - batching, shuffling, normalization and augmentation (see loader.h).
 *
 * Seeds: every random stream is a qat_rng (PCG32) seeded by hashing the user's seed
 * with a domain constant and the stream's coordinates (epoch; epoch and position) through
 * SplitMix64's finalizer (Steele, Lea, Flood 2014), so nearby coordinates give unrelated
 * streams and no stream depends on how many numbers another one consumed.
 */
#include "loader.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#include "autograd/rng.h"

#define DOMAIN_ORDER 0x6f72646572000001ULL   /* "order" */
#define DOMAIN_AUGMENT 0x6175676d00000002ULL /* "augm" */

static uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static void derive_rng(qat_rng *r, uint64_t seed, uint64_t domain, uint64_t a, uint64_t b) {
    uint64_t h = splitmix64(seed);
    h = splitmix64(h ^ domain);
    h = splitmix64(h ^ a);
    h = splitmix64(h ^ b);
    qat_rng_init(r, h);
}

qat_loader_config qat_loader_config_default(void) {
    qat_loader_config c = {.batch_size = 64, .shuffle = true, .drop_last = false, .seed = 0};
    for (int i = 0; i < QAT_DATA_MAX_CHANNELS; i++) {
        c.mean[i] = 0.0f;
        c.std[i] = 1.0f;
    }
    return c;
}

void qat_loader_epoch_order(uint32_t *order, int n, uint64_t seed, int epoch) {
    QAT_ASSERT(order && n >= 0 && epoch >= 0);
    for (int i = 0; i < n; i++) order[i] = (uint32_t)i;
    qat_rng r;
    derive_rng(&r, seed, DOMAIN_ORDER, (uint64_t)epoch, 0);
    for (int i = n - 1; i > 0; i--) { /* Fisher-Yates: order[i] uniform among 0..i */
        uint32_t j = qat_rng_below(&r, (uint32_t)i + 1);
        uint32_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
}

qat_status qat_loader_init(qat_loader *l, const qat_dataset *ds, const qat_loader_config *cfg,
                           qat_error *err) {
    QAT_ASSERT(l && ds && cfg);
    memset(l, 0, sizeof *l);
    bool images = ds->kind == QAT_DATASET_KIND_IMAGES;
    if ((ds->kind != QAT_DATASET_KIND_IMAGES && ds->kind != QAT_DATASET_KIND_FEATURES) ||
        ds->n < 1 || ds->dim < 1 || !ds->labels || (images ? !ds->pixels : !ds->features))
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "qat_loader_init: the dataset is empty or not loaded");
    if (images && (ds->c < 1 || ds->c > QAT_DATA_MAX_CHANNELS))
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "qat_loader_init: %d channels, at most %d supported", ds->c,
                             QAT_DATA_MAX_CHANNELS);
    if (cfg->batch_size < 1)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "qat_loader_init: batch_size = %d, must be >= 1", cfg->batch_size);
    int n_batches = cfg->drop_last ? ds->n / cfg->batch_size
                                   : ds->n / cfg->batch_size + (ds->n % cfg->batch_size != 0);
    if (n_batches == 0)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "qat_loader_init: batch_size = %d with drop_last leaves no batch "
                             "of the %d samples",
                             cfg->batch_size, ds->n);
    if (!images && (cfg->crop_padding || cfg->hflip))
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "qat_loader_init: crop_padding and hflip apply to images only, "
                             "not to CSV features");
    if (cfg->crop_padding < 0 || cfg->crop_padding > QAT_MAX(ds->h, ds->w))
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "qat_loader_init: crop_padding = %d, expected 0..%d (the image "
                             "side)",
                             cfg->crop_padding, QAT_MAX(ds->h, ds->w));
    if (images)
        for (int c = 0; c < ds->c; c++) {
            if (!isfinite(cfg->mean[c]))
                return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                                     "qat_loader_init: mean[%d] = %g, must be finite", c,
                                     (double)cfg->mean[c]);
            if (!isfinite(cfg->std[c]) || !(cfg->std[c] > 0))
                return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                                     "qat_loader_init: std[%d] = %g, must be finite and > 0",
                                     c, (double)cfg->std[c]);
            /* in double, rounded once: the value the formula gives, to the float */
            for (int v = 0; v < 256; v++)
                l->lut[c][v] = (float)(((double)v / 255.0 - (double)cfg->mean[c]) /
                                       (double)cfg->std[c]);
        }
    l->ds = ds;
    l->cfg = *cfg;
    l->n_batches = n_batches;
    size_t bs = (size_t)cfg->batch_size;
    l->order = malloc(sizeof(uint32_t) * (size_t)ds->n);
    l->x = malloc(sizeof(float) * bs * (size_t)ds->dim);
    l->y = malloc(sizeof(int32_t) * bs);
    l->idx = malloc(sizeof(uint32_t) * bs);
    if (!l->order || !l->x || !l->y || !l->idx) {
        qat_loader_free(l);
        return qat_error_set(err, QAT_STATUS_NOMEM, "qat_loader_init: out of memory");
    }
    return qat_loader_seek(l, 0, 0, err);
}

void qat_loader_free(qat_loader *l) {
    if (!l) return;
    free(l->order);
    free(l->x);
    free(l->y);
    free(l->idx);
    memset(l, 0, sizeof *l);
}

qat_status qat_loader_seek(qat_loader *l, int epoch, int batch, qat_error *err) {
    QAT_ASSERT(l && l->ds);
    if (epoch < 0 || batch < 0 || batch > l->n_batches)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "qat_loader_seek: epoch %d, batch %d: expected epoch >= 0 and "
                             "batch in 0..%d",
                             epoch, batch, l->n_batches);
    if (l->cfg.shuffle) {
        qat_loader_epoch_order(l->order, l->ds->n, l->cfg.seed, epoch);
    } else {
        for (int i = 0; i < l->ds->n; i++) l->order[i] = (uint32_t)i;
    }
    l->epoch = epoch;
    l->batch = batch;
    return QAT_STATUS_OK;
}

/* One image sample: src (C, H, W) uint8 -> dst (C, H, W) normalized, augmented with the
 * generator of its (seed, epoch, position). Output pixel (y, x) reads source pixel
 * (y + dy - P, x' + dx - P), x' = W - 1 - x when flipped, else x; outside the source it
 * is the padding, pixel value 0. */
static void fill_image(const qat_loader *l, float *dst, const uint8_t *src, size_t pos) {
    const qat_dataset *ds = l->ds;
    int C = ds->c, H = ds->h, W = ds->w, P = l->cfg.crop_padding;
    size_t plane = (size_t)H * (size_t)W;
    if (P == 0 && !l->cfg.hflip) {
        for (int c = 0; c < C; c++) {
            const float *lut = l->lut[c];
            for (size_t k = 0; k < plane; k++) dst[c * plane + k] = lut[src[c * plane + k]];
        }
        return;
    }
    qat_rng r;
    derive_rng(&r, l->cfg.seed, DOMAIN_AUGMENT, (uint64_t)l->epoch, (uint64_t)pos);
    int dy = P, dx = P; /* the centre window: no shift */
    if (P > 0) {
        dy = (int)qat_rng_below(&r, 2u * (uint32_t)P + 1u);
        dx = (int)qat_rng_below(&r, 2u * (uint32_t)P + 1u);
    }
    bool flip = l->cfg.hflip && (qat_rng_u32(&r) >> 31);
    for (int c = 0; c < C; c++) {
        const float *lut = l->lut[c];
        const uint8_t *s = src + c * plane;
        float *d = dst + c * plane;
        for (int y = 0; y < H; y++) {
            int sy = y + dy - P;
            for (int x = 0; x < W; x++) {
                int sx = (flip ? W - 1 - x : x) + dx - P;
                bool inside = sy >= 0 && sy < H && sx >= 0 && sx < W;
                d[(size_t)y * W + x] = lut[inside ? s[(size_t)sy * W + sx] : 0];
            }
        }
    }
}

bool qat_loader_next(qat_loader *l, qat_batch *b) {
    QAT_ASSERT(l && l->ds && b);
    if (l->batch >= l->n_batches) return false;
    const qat_dataset *ds = l->ds;
    size_t bs = (size_t)l->cfg.batch_size, dim = (size_t)ds->dim;
    size_t start = (size_t)l->batch * bs;
    int n = (int)QAT_MIN(bs, (size_t)ds->n - start);
    for (int j = 0; j < n; j++) {
        size_t pos = start + (size_t)j;
        uint32_t i = l->order[pos];
        l->idx[j] = i;
        l->y[j] = ds->labels[i];
        float *dst = l->x + (size_t)j * dim;
        if (ds->kind == QAT_DATASET_KIND_IMAGES)
            fill_image(l, dst, ds->pixels + (size_t)i * dim, pos);
        else
            memcpy(dst, ds->features + (size_t)i * dim, sizeof(float) * dim);
    }
    b->x = l->x;
    b->y = l->y;
    b->idx = l->idx;
    b->n = n;
    if (ds->kind == QAT_DATASET_KIND_IMAGES) {
        b->ndim = 4;
        b->shape[0] = n;
        b->shape[1] = ds->c;
        b->shape[2] = ds->h;
        b->shape[3] = ds->w;
    } else {
        b->ndim = 2;
        b->shape[0] = n;
        b->shape[1] = ds->dim;
        b->shape[2] = b->shape[3] = 0;
    }
    b->epoch = l->epoch;
    b->index = l->batch;
    l->batch++;
    return true;
}

/* ---- normalisation ---- */

qat_normalization qat_normalization_identity(void) {
    qat_normalization n = {.channels = 1};
    for (int c = 0; c < QAT_DATA_MAX_CHANNELS; c++) n.mean[c] = 0.0f, n.std[c] = 1.0f;
    return n;
}

/* Up to QAT_DATA_MAX_CHANNELS comma-separated finite floats; their count, or -1. */
static int parse_list(const char *s, float *out) {
    int k = 0;
    for (;;) {
        if (k == QAT_DATA_MAX_CHANNELS) return -1;
        char *end;
        errno = 0;
        float v = strtof(s, &end);
        if (end == s || errno == ERANGE || !isfinite(v)) return -1;
        out[k++] = v;
        while (*end == ' ') end++;
        if (*end == '\0') return k;
        if (*end != ',') return -1;
        s = end + 1;
    }
}

qat_status qat_normalization_parse(qat_normalization *n, const char *mean, const char *std,
                                   qat_error *err) {
    QAT_ASSERT(n != NULL && mean != NULL);
    *n = qat_normalization_identity();
    float m[QAT_DATA_MAX_CHANNELS], sd[QAT_DATA_MAX_CHANNELS] = {1.0f};
    int km = parse_list(mean, m), ks = std ? parse_list(std, sd) : 1;
    if (km < 0)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "normalisation mean '%.60s': expected 1 to %d finite numbers, "
                             "comma-separated",
                             mean, QAT_DATA_MAX_CHANNELS);
    if (ks < 0)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "normalisation std '%.60s': expected 1 to %d finite numbers, "
                             "comma-separated",
                             std, QAT_DATA_MAX_CHANNELS);
    if (km != ks && km != 1 && ks != 1)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "normalisation: %d means but %d standard deviations", km, ks);
    for (int c = 0; c < ks; c++)
        if (!(sd[c] > 0.0f))
            return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                                 "normalisation std '%.60s': %g is not > 0", std, (double)sd[c]);
    n->channels = km > ks ? km : ks;
    for (int c = 0; c < QAT_DATA_MAX_CHANNELS; c++) {
        n->mean[c] = c < km ? m[c] : m[0];
        n->std[c] = c < ks ? sd[c] : sd[0];
    }
    return QAT_STATUS_OK;
}

void qat_normalization_format(const qat_normalization *n, int channels, char *mean, char *std,
                              size_t len) {
    QAT_ASSERT(channels >= 1 && channels <= QAT_DATA_MAX_CHANNELS && len > 0);
    mean[0] = std[0] = '\0';
    for (int c = 0; c < channels; c++) {
        size_t lm = strlen(mean), ls = strlen(std);
        snprintf(mean + lm, len - lm, "%s%.7g", c ? "," : "", (double)n->mean[c]);
        snprintf(std + ls, len - ls, "%s%.7g", c ? "," : "", (double)n->std[c]);
    }
}

bool qat_normalization_uniform(const qat_normalization *n, int channels) {
    for (int c = 1; c < channels && c < QAT_DATA_MAX_CHANNELS; c++)
        if (n->mean[c] != n->mean[0] || n->std[c] != n->std[0]) return false;
    return true;
}

void qat_loader_config_normalize(qat_loader_config *c, const qat_normalization *n) {
    for (int i = 0; i < QAT_DATA_MAX_CHANNELS; i++) c->mean[i] = n->mean[i], c->std[i] = n->std[i];
}
