/* test_data.c - data sets and the batch loader (data/).
 *
 * Every file is written by the test into a fresh mkdtemp directory under /tmp (removed
 * at the end); nothing is downloaded. For each format:
 *  - good files: shapes, every pixel/feature and every label checked exactly (IDX plain
 *    and gzip, CIFAR-10 batches, PNG/BMP/JPEG folders with channel conversion and
 *    resizing (PNG and BMP written with stb_image_write, JPEG by a minimal encoder
 *    here), CSV with and without a header);
 *  - each kind of bad file: the status, and a message naming the file (and the line for
 *    CSV) and the problem (bad magic, truncation incl. a cut .gz, count mismatch, label
 *    out of range, dims overflow, undecodable/oversized image, ragged/non-numeric/NaN
 *    CSV rows, empty data, missing files, empty class folders).
 * The loader: the epoch order is a deterministic permutation of (seed, epoch); every
 * sample once per epoch; the partial last batch and drop_last; resuming mid-epoch with
 * seek; normalization values; crop/flip checked against an independent reference on a
 * small image, and their determinism.
 * Finally the real Fashion-MNIST from Debian's dataset-fashion-mnist package: it must be
 * installed (CI installs it); its absence fails the test.
 */
#include "testutil.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "data/dataset.h"
#include "data/image.h"
#include "data/loader.h"

/* stb_image_write, only to create test images (static: no clash with anything). */
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STB_IMAGE_WRITE_STATIC
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wall"
#pragma GCC diagnostic ignored "-Wextra"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#pragma GCC diagnostic ignored "-Wsign-compare"
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

/* ---- files ------------------------------------------------------------------------- */

typedef struct env {
    char dir[64];
} env;

static int group_setup(void **state) {
    env *e = calloc(1, sizeof *e);
    snprintf(e->dir, sizeof e->dir, "/tmp/qat_test_data_XXXXXX");
    if (!mkdtemp(e->dir)) {
        fprintf(stderr, "mkdtemp failed\n");
        free(e);
        return -1;
    }
    *state = e;
    return 0;
}

static void remove_tree(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *de;
        while (d && (de = readdir(d)) != NULL) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            char sub[1024];
            snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
            remove_tree(sub);
        }
        if (d) closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static int group_teardown(void **state) {
    env *e = *state;
    remove_tree(e->dir);
    free(e);
    return 0;
}

/* A path in the test directory: P(buf, state, "name"). */
static const char *tpath(char *buf, size_t len, void **state, const char *name) {
    env *e = *state;
    snprintf(buf, len, "%s/%s", e->dir, name);
    return buf;
}
#define P(buf, name) tpath(buf, sizeof buf, state, name)

static void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) fail_msg("cannot create %s", path);
    if (n && fwrite(data, 1, n, f) != n) fail_msg("cannot write %s", path);
    fclose(f);
}

static void write_text(const char *path, const char *text) {
    write_bytes(path, text, strlen(text));
}

static void write_gz(const char *path, const void *data, size_t n) {
    gzFile g = gzopen(path, "wb");
    if (!g) fail_msg("cannot create %s", path);
    if (n && gzwrite(g, data, (unsigned)n) != (int)n) fail_msg("cannot write %s", path);
    if (gzclose(g) != Z_OK) fail_msg("cannot close %s", path);
}

static unsigned char *read_whole(const char *path, size_t *n) { return test_read_file(path, n); }

static void make_dir(const char *path) {
    if (mkdir(path, 0755) != 0) fail_msg("cannot mkdir %s", path);
}

/* ---- error checks ------------------------------------------------------------------ */

static bool contains_ci(const char *hay, const char *needle) {
    size_t n = strlen(needle);
    for (const char *p = hay; *p; p++)
        if (strncasecmp(p, needle, n) == 0) return true;
    return n == 0;
}

/* The call failed with `want`, err holds the same status, and the message contains
 * every non-NULL needle (case-insensitive). Clears err. QAT_TEST_VERBOSE=1 in the
 * environment prints each message, to read them. */
static void expect_fail(qat_status got, qat_error *err, qat_status want, const char *what,
                        const char *n1, const char *n2, const char *n3) {
    if (got != want)
        fail_msg("%s: status %s, expected %s (message: \"%s\")", what, qat_status_str(got),
                 qat_status_str(want), err->msg);
    if (err->status != want) fail_msg("%s: err.status %s", what, qat_status_str(err->status));
    if (getenv("QAT_TEST_VERBOSE")) printf("    %-22s %s\n", what, err->msg);
    const char *needles[3] = {n1, n2, n3};
    for (int i = 0; i < 3; i++)
        if (needles[i] && !contains_ci(err->msg, needles[i]))
            fail_msg("%s: message \"%s\" does not mention \"%s\"", what, err->msg, needles[i]);
    qat_error_clear(err);
}

static void expect_ok(qat_status s, const qat_error *err, const char *what) {
    if (s != QAT_STATUS_OK) fail_msg("%s failed: %s", what, err->msg);
}

static void expect_zeroed(const qat_dataset *ds, const char *what) {
    if (ds->n || ds->pixels || ds->features || ds->labels || ds->class_names)
        fail_msg("%s: dataset not left zeroed after a failure", what);
}

static void expect_bytes(const uint8_t *got, const uint8_t *want, size_t n, const char *what) {
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i])
            fail_msg("%s: byte %zu is %u, expected %u", what, i, got[i], want[i]);
}

/* ---- IDX --------------------------------------------------------------------------- */

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* An IDX images file image in memory: header (N, H, W) and the pixels. */
static unsigned char *idx_images(uint32_t n, uint32_t h, uint32_t w, const uint8_t *px,
                                 size_t *len) {
    size_t data = (size_t)n * h * w;
    unsigned char *b = malloc(16 + data);
    put_be32(b, 0x00000803);
    put_be32(b + 4, n);
    put_be32(b + 8, h);
    put_be32(b + 12, w);
    if (data) memcpy(b + 16, px, data);
    *len = 16 + data;
    return b;
}

static unsigned char *idx_labels(uint32_t n, const uint8_t *lab, size_t *len) {
    unsigned char *b = malloc(8 + n);
    put_be32(b, 0x00000801);
    put_be32(b + 4, n);
    if (n) memcpy(b + 8, lab, n);
    *len = 8 + n;
    return b;
}

enum { IN = 5, IH = 3, IW = 4 };
static const uint8_t idx_lab[IN] = {3, 0, 7, 1, 3};

static void idx_pixels(uint8_t *px) {
    for (int i = 0; i < IN * IH * IW; i++) px[i] = (uint8_t)(i * 37 % 256);
}

/* Writes good images/labels files (gz or plain) named <stem>-img, <stem>-lab. */
static void write_idx_pair(void **state, const char *img, const char *lab, bool gz) {
    uint8_t px[IN * IH * IW];
    idx_pixels(px);
    size_t li, ll;
    unsigned char *bi = idx_images(IN, IH, IW, px, &li), *bl = idx_labels(IN, idx_lab, &ll);
    char a[512], b[512];
    if (gz) {
        write_gz(P(a, img), bi, li);
        write_gz(P(b, lab), bl, ll);
    } else {
        write_bytes(P(a, img), bi, li);
        write_bytes(P(b, lab), bl, ll);
    }
    free(bi);
    free(bl);
}

static void check_idx_dataset(const qat_dataset *ds, int n_classes, const char *what) {
    uint8_t px[IN * IH * IW];
    idx_pixels(px);
    assert_int_equal(ds->kind, QAT_DATASET_KIND_IMAGES);
    assert_int_equal(ds->n, IN);
    assert_int_equal(ds->c, 1);
    assert_int_equal(ds->h, IH);
    assert_int_equal(ds->w, IW);
    assert_int_equal(ds->dim, IH * IW);
    assert_int_equal(ds->n_classes, n_classes);
    assert_null(ds->features);
    expect_bytes(ds->pixels, px, sizeof px, what);
    for (int i = 0; i < IN; i++) assert_int_equal(ds->labels[i], idx_lab[i]);
}

static void test_idx_plain_and_gz(void **state) {
    char a[512], b[512];
    qat_error err = {0};
    qat_dataset ds;
    write_idx_pair(state, "plain-img", "plain-lab", false);
    write_idx_pair(state, "gz-img.gz", "gz-lab.gz", true);
    expect_ok(qat_dataset_load_idx(&ds, P(a, "plain-img"), P(b, "plain-lab"), 10, &err), &err,
              "plain");
    check_idx_dataset(&ds, 10, "plain IDX");
    qat_dataset_free(&ds);
    expect_ok(qat_dataset_load_idx(&ds, P(a, "gz-img.gz"), P(b, "gz-lab.gz"), 0, &err), &err,
              "gz");
    check_idx_dataset(&ds, 8, "gz IDX, classes inferred"); /* max label 7 */
    qat_dataset_free(&ds);
    qat_dataset_free(&ds); /* freeing twice is harmless: free zeroes */
}

static void test_idx_bad_magic(void **state) {
    char a[512], b[512];
    qat_error err = {0};
    qat_dataset ds;
    write_idx_pair(state, "m-img", "m-lab", false);
    /* labels given as images and images as labels */
    expect_fail(qat_dataset_load_idx(&ds, P(a, "m-lab"), P(b, "m-img"), 10, &err), &err,
                QAT_STATUS_FORMAT, "swapped", a, "magic", "dims");
    expect_zeroed(&ds, "swapped");
    expect_fail(qat_dataset_load_idx(&ds, P(a, "m-img"), P(b, "m-img"), 10, &err), &err,
                QAT_STATUS_FORMAT, "images as labels", b, "magic", NULL);
    /* not IDX at all */
    write_text(P(a, "m-png"), "\x89PNG\r\n\x1a\n........");
    expect_fail(qat_dataset_load_idx(&ds, a, P(b, "m-lab"), 10, &err), &err, QAT_STATUS_FORMAT,
                "png", a, "not an IDX file", "magic");
    /* float elements (type 0x0D) */
    size_t len;
    unsigned char *img = idx_images(1, 1, 1, (const uint8_t *)"x", &len);
    img[2] = 0x0D;
    write_bytes(P(a, "m-float"), img, len);
    free(img);
    expect_fail(qat_dataset_load_idx(&ds, a, P(b, "m-lab"), 10, &err), &err, QAT_STATUS_FORMAT,
                "float IDX", a, "element type 0x0d", NULL);
}

static void test_idx_truncated(void **state) {
    char a[512], b[512], c[512];
    qat_error err = {0};
    qat_dataset ds;
    uint8_t px[IN * IH * IW];
    idx_pixels(px);
    size_t li, ll;
    unsigned char *bi = idx_images(IN, IH, IW, px, &li), *bl = idx_labels(IN, idx_lab, &ll);
    write_bytes(P(b, "t-lab"), bl, ll);
    /* header cut short */
    write_bytes(P(a, "t-head"), bi, 10);
    expect_fail(qat_dataset_load_idx(&ds, a, b, 10, &err), &err, QAT_STATUS_FORMAT,
                "cut header", a, "truncated", NULL);
    /* one pixel missing */
    write_bytes(P(a, "t-data"), bi, li - 1);
    expect_fail(qat_dataset_load_idx(&ds, a, b, 10, &err), &err, QAT_STATUS_FORMAT,
                "cut data", a, "truncated", "60 bytes");
    expect_zeroed(&ds, "cut data");
    /* labels one short */
    write_bytes(P(c, "t-lab-short"), bl, ll - 1);
    write_bytes(P(a, "t-img"), bi, li);
    expect_fail(qat_dataset_load_idx(&ds, a, c, 10, &err), &err, QAT_STATUS_FORMAT,
                "cut labels", c, "truncated", NULL);
    /* one byte too many: the header does not describe the file */
    unsigned char *longer = malloc(li + 3);
    memcpy(longer, bi, li);
    memset(longer + li, 0, 3);
    write_bytes(P(a, "t-long"), longer, li + 3);
    free(longer);
    expect_fail(qat_dataset_load_idx(&ds, a, b, 10, &err), &err, QAT_STATUS_FORMAT,
                "trailing bytes", a, "3 unexpected bytes", NULL);

    /* gzip cut in the middle of the deflate data, and cut inside the 8-byte trailer
     * (all the pixels decode, but the stream has no end): both are errors. */
    write_gz(P(c, "t-full.gz"), bi, li);
    size_t gzlen;
    unsigned char *gz = read_whole(c, &gzlen);
    write_bytes(P(a, "t-half.gz"), gz, gzlen / 2);
    expect_fail(qat_dataset_load_idx(&ds, a, b, 10, &err), &err, QAT_STATUS_FORMAT, "half gz",
                a, "truncated", NULL);
    write_bytes(P(a, "t-notrailer.gz"), gz, gzlen - 4);
    expect_fail(qat_dataset_load_idx(&ds, a, b, 10, &err), &err, QAT_STATUS_FORMAT,
                "gz without trailer", a, "truncated gzip stream", NULL);
    /* a flipped bit in the stored CRC-32 */
    gz[gzlen - 8] ^= 1;
    write_bytes(P(a, "t-crc.gz"), gz, gzlen);
    expect_fail(qat_dataset_load_idx(&ds, a, b, 10, &err), &err, QAT_STATUS_FORMAT, "bad crc",
                a, "corrupt gzip", NULL);
    expect_zeroed(&ds, "bad crc");
    free(gz);
    free(bi);
    free(bl);
}

static void test_idx_counts_labels_dims(void **state) {
    char a[512], b[512];
    qat_error err = {0};
    qat_dataset ds;
    uint8_t px[IN * IH * IW];
    idx_pixels(px);
    size_t li, ll;
    unsigned char *bi = idx_images(IN, IH, IW, px, &li);
    write_bytes(P(a, "c-img"), bi, li);
    free(bi);
    /* 4 labels for 5 images */
    unsigned char *bl = idx_labels(IN - 1, idx_lab, &ll);
    write_bytes(P(b, "c-lab4"), bl, ll);
    free(bl);
    expect_fail(qat_dataset_load_idx(&ds, a, b, 10, &err), &err, QAT_STATUS_FORMAT, "count",
                "count mismatch", a, b);
    /* a label of 10 with 10 classes; 200 is fine when inferring */
    uint8_t lab[IN] = {1, 2, 10, 3, 4};
    bl = idx_labels(IN, lab, &ll);
    write_bytes(P(b, "c-lab10"), bl, ll);
    free(bl);
    expect_fail(qat_dataset_load_idx(&ds, a, b, 10, &err), &err, QAT_STATUS_FORMAT, "label 10",
                b, "label 10 of sample 2", "out of range");
    expect_zeroed(&ds, "label 10");
    expect_ok(qat_dataset_load_idx(&ds, a, b, 0, &err), &err, "inferred classes");
    assert_int_equal(ds.n_classes, 11);
    qat_dataset_free(&ds);
    expect_fail(qat_dataset_load_idx(&ds, a, b, -1, &err), &err, QAT_STATUS_INVALID_ARG,
                "n_classes -1", "n_classes", NULL, NULL);

    /* dims whose product overflows 64 bits; too large for the limit; zero */
    unsigned char hdr[16];
    put_be32(hdr, 0x00000803);
    put_be32(hdr + 4, 0xFFFFFFFFu);
    put_be32(hdr + 8, 0xFFFFFFFFu);
    put_be32(hdr + 12, 0xFFFFFFFFu);
    write_bytes(P(a, "c-overflow"), hdr, 16);
    expect_fail(qat_dataset_load_idx(&ds, a, b, 10, &err), &err, QAT_STATUS_FORMAT, "overflow",
                a, "overflow", NULL);
    put_be32(hdr + 4, 100000);
    put_be32(hdr + 8, 1000);
    put_be32(hdr + 12, 1000);
    write_bytes(P(a, "c-huge"), hdr, 16);
    expect_fail(qat_dataset_load_idx(&ds, a, b, 10, &err), &err, QAT_STATUS_FORMAT, "huge", a,
                "too large", "limit");
    put_be32(hdr + 4, 1); /* 2^31 bytes: within the limit, but H x W overflows an int */
    put_be32(hdr + 8, 65536);
    put_be32(hdr + 12, 32768);
    write_bytes(P(a, "c-one-huge"), hdr, 16);
    expect_fail(qat_dataset_load_idx(&ds, a, b, 10, &err), &err, QAT_STATUS_FORMAT,
                "65536 x 32768", a, "too large", NULL);
    put_be32(hdr + 4, 0);
    put_be32(hdr + 8, 28);
    put_be32(hdr + 12, 28);
    write_bytes(P(a, "c-empty"), hdr, 16);
    expect_fail(qat_dataset_load_idx(&ds, a, b, 10, &err), &err, QAT_STATUS_FORMAT, "N = 0", a,
                "empty", NULL);
    put_be32(hdr + 4, 5);
    put_be32(hdr + 8, 0);
    write_bytes(P(a, "c-zero-h"), hdr, 16);
    expect_fail(qat_dataset_load_idx(&ds, a, b, 10, &err), &err, QAT_STATUS_FORMAT, "H = 0", a,
                "empty", NULL);
    /* missing files */
    expect_fail(qat_dataset_load_idx(&ds, P(a, "no-such-file"), b, 10, &err), &err,
                QAT_STATUS_IO, "missing", a, "cannot open", "No such file");
    expect_fail(qat_dataset_load_idx(&ds, P(a, ""), b, 10, &err), &err, QAT_STATUS_IO,
                "a directory", "not a regular file", NULL, NULL);
}

static void test_mnist_dir(void **state) {
    char d[512], sub[600];
    qat_error err = {0};
    qat_dataset ds;
    make_dir(P(d, "mnist"));
    write_idx_pair(state, "mnist/train-images-idx3-ubyte.gz", "mnist/train-labels-idx1-ubyte",
                   true);
    /* the gz labels file was written gzipped under a plain name: content decides */
    write_idx_pair(state, "mnist/t10k-images.idx3-ubyte", "mnist/t10k-labels.idx1-ubyte.gz",
                   false);
    expect_ok(qat_dataset_load_mnist(&ds, d, QAT_SPLIT_TRAIN, &err), &err, "mnist train");
    check_idx_dataset(&ds, 10, "mnist train");
    qat_dataset_free(&ds);
    expect_ok(qat_dataset_load_mnist(&ds, d, QAT_SPLIT_TEST, &err), &err, "mnist test");
    check_idx_dataset(&ds, 10, "mnist test");
    qat_dataset_free(&ds);
    snprintf(sub, sizeof sub, "%s/nothing-here", d);
    expect_fail(qat_dataset_load_mnist(&ds, sub, QAT_SPLIT_TRAIN, &err), &err, QAT_STATUS_IO,
                "empty dir", sub, "train-images-idx3-ubyte", "dataset-fashion-mnist");
}

/* ---- CIFAR-10 ---------------------------------------------------------------------- */

enum { CREC = 3073 };

static unsigned char *cifar_records(int n, int first, size_t *len) {
    unsigned char *b = malloc((size_t)n * CREC);
    for (int r = 0; r < n; r++) {
        b[(size_t)r * CREC] = (unsigned char)((first + r) * 3 % 10);
        for (int k = 0; k < 3072; k++)
            b[(size_t)r * CREC + 1 + k] = (unsigned char)(((first + r) * 7 + k * 13) % 251);
    }
    *len = (size_t)n * CREC;
    return b;
}

static void test_cifar_good(void **state) {
    char a[512], b[512];
    qat_error err = {0};
    qat_dataset ds;
    size_t la, lb;
    unsigned char *ra = cifar_records(2, 0, &la), *rb = cifar_records(3, 2, &lb);
    write_bytes(P(a, "cifar-a.bin"), ra, la);
    write_gz(P(b, "cifar-b.bin.gz"), rb, lb);
    const char *paths[2] = {a, b};
    expect_ok(qat_dataset_load_cifar10(&ds, paths, 2, &err), &err, "cifar");
    assert_int_equal(ds.n, 5);
    assert_int_equal(ds.c, 3);
    assert_int_equal(ds.h, 32);
    assert_int_equal(ds.w, 32);
    assert_int_equal(ds.dim, 3072);
    assert_int_equal(ds.n_classes, 10);
    for (int r = 0; r < 5; r++) {
        const unsigned char *rec = r < 2 ? ra + (size_t)r * CREC : rb + (size_t)(r - 2) * CREC;
        assert_int_equal(ds.labels[r], rec[0]);
        expect_bytes(ds.pixels + (size_t)r * 3072, rec + 1, 3072, "cifar record");
    }
    qat_dataset_free(&ds);

    /* the directory layout */
    char d[512], f[700];
    make_dir(P(d, "cifar-10-batches-bin"));
    for (int i = 1; i <= 5; i++) {
        snprintf(f, sizeof f, "%s/data_batch_%d.bin", d, i);
        write_bytes(f, ra, la);
    }
    snprintf(f, sizeof f, "%s/test_batch.bin", d);
    write_bytes(f, rb, lb);
    expect_ok(qat_dataset_load_cifar10_dir(&ds, d, QAT_SPLIT_TRAIN, &err), &err, "cifar dir");
    assert_int_equal(ds.n, 10);
    qat_dataset_free(&ds);
    expect_ok(qat_dataset_load_cifar10_dir(&ds, d, QAT_SPLIT_TEST, &err), &err, "cifar test");
    assert_int_equal(ds.n, 3);
    assert_int_equal(ds.labels[2], rb[2 * CREC]);
    qat_dataset_free(&ds);
    free(ra);
    free(rb);
}

static void test_cifar_bad(void **state) {
    char a[512], b[512];
    qat_error err = {0};
    qat_dataset ds;
    size_t len;
    unsigned char *r = cifar_records(3, 0, &len);
    write_bytes(P(a, "cifar-ok.bin"), r, len);
    write_bytes(P(b, "cifar-cut.bin"), r, len - 5);
    const char *paths[2] = {a, b};
    expect_fail(qat_dataset_load_cifar10(&ds, paths, 2, &err), &err, QAT_STATUS_FORMAT, "cut",
                b, "truncated", "record 2");
    expect_zeroed(&ds, "cifar cut");
    r[CREC] = 10; /* record 1 */
    write_bytes(P(b, "cifar-label.bin"), r, len);
    expect_fail(qat_dataset_load_cifar10(&ds, paths, 2, &err), &err, QAT_STATUS_FORMAT, "label",
                b, "label 10 of record 1", "0..9");
    write_bytes(P(b, "cifar-empty.bin"), r, 0);
    expect_fail(qat_dataset_load_cifar10(&ds, paths, 2, &err), &err, QAT_STATUS_FORMAT, "empty",
                b, "empty", NULL);
    P(b, "cifar-missing.bin");
    expect_fail(qat_dataset_load_cifar10(&ds, paths, 2, &err), &err, QAT_STATUS_IO, "missing", b,
                "cannot open", NULL);
    expect_fail(qat_dataset_load_cifar10_dir(&ds, P(b, "no-cifar"), QAT_SPLIT_TRAIN, &err), &err,
                QAT_STATUS_IO, "missing dir", "data_batch_1.bin", NULL, NULL);
    free(r);
}

/* ---- image folders ----------------------------------------------------------------- */

enum { FH = 3, FW = 4 };

/* A test image, interleaved (H, W, comp): distinct values per pixel and channel. */
static void make_hwc(uint8_t *px, int h, int w, int comp, int salt) {
    for (int i = 0; i < h * w * comp; i++) px[i] = (uint8_t)((i * 29 + salt * 61 + 5) % 256);
}

/* Our (C, H, W) from interleaved (H, W, comp) with stb's conversions to `channels`. */
static void expect_chw(const uint8_t *got, const uint8_t *hwc, int h, int w, int comp,
                       int channels, const char *what) {
    for (int c = 0; c < channels; c++)
        for (int p = 0; p < h * w; p++) {
            const uint8_t *s = hwc + p * comp;
            int want;
            int color = comp >= 3; /* comp 1, 2: gray (+alpha); 3, 4: RGB (+alpha) */
            if (channels == 3)
                want = color ? s[c] : s[0];
            else
                want = color ? (77 * s[0] + 150 * s[1] + 29 * s[2]) >> 8 : s[0];
            if (got[c * h * w + p] != want)
                fail_msg("%s: channel %d pixel %d is %u, expected %d", what, c, p,
                         got[c * h * w + p], want);
        }
}

static void write_png(const char *path, int h, int w, int comp, const uint8_t *px) {
    if (!stbi_write_png(path, w, h, comp, px, w * comp)) fail_msg("cannot write %s", path);
}

static void test_folder_good(void **state) {
    char d[512], f[700];
    qat_error err = {0};
    qat_dataset ds;
    make_dir(P(d, "folder"));
    /* created out of order: classes are sorted by name */
    const char *classes[3] = {"zebra", "apple", "mango"};
    for (int k = 0; k < 3; k++) {
        snprintf(f, sizeof f, "%s/%s", d, classes[k]);
        make_dir(f);
    }
    uint8_t rgb[FH * FW * 3], bmp[FH * FW * 3], gray[FH * FW], ga[FH * FW * 2],
        rgba[FH * FW * 4];
    make_hwc(rgb, FH, FW, 3, 1);
    make_hwc(bmp, FH, FW, 3, 2);
    make_hwc(gray, FH, FW, 1, 3);
    make_hwc(ga, FH, FW, 2, 4);
    make_hwc(rgba, FH, FW, 4, 5);
    snprintf(f, sizeof f, "%s/apple/b.bmp", d);
    if (!stbi_write_bmp(f, FW, FH, 3, bmp)) fail_msg("cannot write %s", f);
    snprintf(f, sizeof f, "%s/apple/a.png", d);
    write_png(f, FH, FW, 3, rgb);
    snprintf(f, sizeof f, "%s/mango/ga.png", d);
    write_png(f, FH, FW, 2, ga);
    snprintf(f, sizeof f, "%s/mango/g.png", d);
    write_png(f, FH, FW, 1, gray);
    snprintf(f, sizeof f, "%s/zebra/rgba.png", d);
    write_png(f, FH, FW, 4, rgba);
    /* ignored: hidden files, plain files at the top level */
    snprintf(f, sizeof f, "%s/zebra/.DS_Store", d);
    write_text(f, "junk");
    snprintf(f, sizeof f, "%s/README.txt", d);
    write_text(f, "not a class");

    const uint8_t *srcs[5] = {rgb, bmp, gray, ga, rgba};
    const int comps[5] = {3, 3, 1, 2, 4};
    const int32_t labels[5] = {0, 0, 1, 1, 2};
    for (int channels = 1; channels <= 3; channels += 2) {
        expect_ok(qat_dataset_load_folder(&ds, d, channels, FH, FW, &err), &err, "folder");
        assert_int_equal(ds.n, 5);
        assert_int_equal(ds.c, channels);
        assert_int_equal(ds.h, FH);
        assert_int_equal(ds.w, FW);
        assert_int_equal(ds.n_classes, 3);
        assert_string_equal(ds.class_names[0], "apple");
        assert_string_equal(ds.class_names[1], "mango");
        assert_string_equal(ds.class_names[2], "zebra");
        for (int i = 0; i < 5; i++) {
            char what[64];
            snprintf(what, sizeof what, "folder image %d, %d channels", i, channels);
            assert_int_equal(ds.labels[i], labels[i]);
            expect_chw(ds.pixels + (size_t)i * ds.dim, srcs[i], FH, FW, comps[i], channels,
                       what);
        }
        qat_dataset_free(&ds);
    }
}

/* A minimal baseline JPEG of one flat 8x8 block per component (no subsampling), written
 * by hand (stb_image_write's JPEG encoder shifts signed ints into UB, which the sanitizer
 * build rejects). Quantization is all 1s, so a flat block is its DC coefficient alone,
 * DC = 8 (v - 128) (ITU T.81 A.3.3, level shift 128); the decoder must give v back
 * exactly. Huffman tables: DC has the 12 categories 0..11 as 4-bit codes (code =
 * category, canonical order), AC has only end-of-block, code "0". Entropy data: per
 * component, the DC category, its extra bits (T.81 F.1.2.1: negative values as
 * v + 2^cat - 1), EOB; padded with 1 bits, 0xFF stuffed with 0x00. */
typedef struct bitwriter {
    uint8_t *out;
    size_t n;
    uint32_t acc;
    int bits;
} bitwriter;

static void put_bits(bitwriter *w, uint32_t v, int n) {
    for (int i = n - 1; i >= 0; i--) {
        w->acc = w->acc << 1 | ((v >> i) & 1);
        if (++w->bits == 8) {
            w->out[w->n++] = (uint8_t)w->acc;
            if ((uint8_t)w->acc == 0xFF) w->out[w->n++] = 0x00;
            w->acc = 0;
            w->bits = 0;
        }
    }
}

static size_t flat_jpeg(uint8_t *out, int nc, const int *comp_values) {
    size_t n = 0;
    const uint8_t soi[2] = {0xFF, 0xD8};
    memcpy(out + n, soi, 2), n += 2;
    const uint8_t dqt[5] = {0xFF, 0xDB, 0, 67, 0x00};
    memcpy(out + n, dqt, 5), n += 5;
    memset(out + n, 1, 64), n += 64;
    const uint8_t sof[10] = {0xFF, 0xC0, 0, (uint8_t)(8 + 3 * nc), 8, 0, 8, 0, 8, (uint8_t)nc};
    memcpy(out + n, sof, 10), n += 10;
    for (int c = 0; c < nc; c++) out[n++] = (uint8_t)(c + 1), out[n++] = 0x11, out[n++] = 0;
    uint8_t dht_dc[5 + 16 + 12] = {0xFF, 0xC4, 0, 2 + 1 + 16 + 12, 0x00};
    dht_dc[5 + 3] = 12; /* twelve codes of length 4 */
    for (int k = 0; k < 12; k++) dht_dc[5 + 16 + k] = (uint8_t)k;
    memcpy(out + n, dht_dc, sizeof dht_dc), n += sizeof dht_dc;
    uint8_t dht_ac[5 + 16 + 1] = {0xFF, 0xC4, 0, 2 + 1 + 16 + 1, 0x10};
    dht_ac[5] = 1; /* one code of length 1: EOB (0x00) */
    memcpy(out + n, dht_ac, sizeof dht_ac), n += sizeof dht_ac;
    const uint8_t sos[5] = {0xFF, 0xDA, 0, (uint8_t)(6 + 2 * nc), (uint8_t)nc};
    memcpy(out + n, sos, 5), n += 5;
    for (int c = 0; c < nc; c++) out[n++] = (uint8_t)(c + 1), out[n++] = 0x00;
    out[n++] = 0, out[n++] = 63, out[n++] = 0;
    bitwriter w = {out, n, 0, 0};
    for (int c = 0; c < nc; c++) {
        int dc = 8 * (comp_values[c] - 128), mag = abs(dc), cat = 0;
        while (mag >> cat) cat++;
        put_bits(&w, (uint32_t)cat, 4);
        if (cat) put_bits(&w, (uint32_t)(dc >= 0 ? dc : dc + (1 << cat) - 1), cat);
        put_bits(&w, 0, 1); /* EOB */
    }
    if (w.bits) put_bits(&w, 0xFF, 8 - w.bits);
    n = w.n;
    out[n++] = 0xFF, out[n++] = 0xD9;
    return n;
}

static void test_folder_jpeg(void **state) {
    char d[512], f[700];
    qat_error err = {0};
    qat_dataset ds;
    make_dir(P(d, "jpeg"));
    snprintf(f, sizeof f, "%s/color", d);
    make_dir(f);
    snprintf(f, sizeof f, "%s/gray", d);
    make_dir(f);
    /* (200, 100, 50) as JFIF YCbCr (rounded): Y 124, Cb 86, Cr 182 */
    const double r = 200, g = 100, b = 50;
    const int ycc[3] = {(int)lround(0.299 * r + 0.587 * g + 0.114 * b),
                        (int)lround(128 - 0.168736 * r - 0.331264 * g + 0.5 * b),
                        (int)lround(128 + 0.5 * r - 0.418688 * g - 0.081312 * b)};
    uint8_t jpg[512];
    snprintf(f, sizeof f, "%s/color/c.jpg", d);
    write_bytes(f, jpg, flat_jpeg(jpg, 3, ycc));
    const int y77 = 77;
    snprintf(f, sizeof f, "%s/gray/g.jpeg", d);
    write_bytes(f, jpg, flat_jpeg(jpg, 1, &y77));
    /* at 8x8 and shrunk to 4x4 (flat stays flat) */
    for (int side = 8; side >= 4; side -= 4)
        for (int channels = 1; channels <= 3; channels += 2) {
            expect_ok(qat_dataset_load_folder(&ds, d, channels, side, side, &err), &err,
                      "jpeg folder");
            assert_int_equal(ds.n, 2);
            const int color_rgb[3] = {200, 100, 50};
            for (int i = 0; i < 2; i++)
                for (int c = 0; c < channels; c++) {
                    /* color JPEG: RGB within 1 (fixed-point YCbCr conversion), its luma
                     * channel exactly; gray JPEG: exact, replicated */
                    int want = i == 1 ? 77 : channels == 1 ? ycc[0] : color_rgb[c];
                    int tol = i == 0 && channels == 3 ? 1 : 0;
                    for (int p = 0; p < side * side; p++) {
                        int got = ds.pixels[(size_t)i * ds.dim + (size_t)c * side * side + p];
                        if (abs(got - want) > tol)
                            fail_msg("jpeg %d (%dx%d, %d channels) channel %d pixel %d: %d, "
                                     "expected %d",
                                     i, side, side, channels, c, p, got, want);
                    }
                }
            qat_dataset_free(&ds);
        }
}

static void test_image_resize(void **state) {
    qat_error err = {0};
    /* shrinking by 2: the mean of each 2x2 block, rounded to nearest */
    const uint8_t in4[16] = {10, 20, 0, 0, 30, 41, 0, 2, 255, 255, 1, 2, 255, 254, 3, 4};
    uint8_t out2[4];
    expect_ok(qat_image_resize(out2, 2, 2, in4, 4, 4, 1, &err), &err, "area 4->2");
    const uint8_t want2[4] = {25 /* 25.25 */, 1 /* 0.5 -> 1 */, 255 /* 254.75 */, 3 /* 2.5 */};
    expect_bytes(out2, want2, 4, "area 4x4 -> 2x2");
    /* shrinking 3 -> 2: [0,1.5) and [1.5,3) weighted by coverage */
    const uint8_t in3[3] = {0, 90, 180};
    uint8_t o[4];
    expect_ok(qat_image_resize(o, 1, 2, in3, 1, 3, 1, &err), &err, "area 3->2");
    const uint8_t want3[2] = {30, 150};
    expect_bytes(o, want3, 2, "area 3 -> 2");
    /* enlarging 2 -> 4: bilinear at (o + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25,
     * clamped to the edges */
    const uint8_t in2[2] = {0, 100};
    expect_ok(qat_image_resize(o, 1, 4, in2, 1, 2, 1, &err), &err, "bilinear 2->4");
    const uint8_t want4[4] = {0, 25, 75, 100};
    expect_bytes(o, want4, 4, "bilinear 2 -> 4");
    /* the same along the other axis, two channels */
    const uint8_t col[4] = {0, 100, 40, 40};
    uint8_t oc[8];
    expect_ok(qat_image_resize(oc, 4, 1, col, 2, 1, 2, &err), &err, "bilinear column");
    const uint8_t wantc[8] = {0, 25, 75, 100, 40, 40, 40, 40};
    expect_bytes(oc, wantc, 8, "bilinear column, 2 channels");

    /* through a file: an 8x8 gray PNG loaded at 4x4 gives its 2x2 block means */
    char f[512];
    uint8_t img[64], got[16];
    for (int i = 0; i < 64; i++) img[i] = (uint8_t)(i * 4);
    write_png(P(f, "resize.png"), 8, 8, 1, img);
    expect_ok(qat_image_load(got, f, 1, 4, 4, &err), &err, "load 8x8 at 4x4");
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 4; x++) {
            int s = img[16 * y + 2 * x] + img[16 * y + 2 * x + 1] + img[16 * y + 8 + 2 * x] +
                    img[16 * y + 8 + 2 * x + 1];
            assert_int_equal(got[4 * y + x], (s + 2) / 4);
        }

    /* A zero-length IDAT chunk before the data (valid PNG): the same pixels. stb_image
     * formed a pointer offset from NULL on it (clang's UBSan, issue 14); image.c drops
     * such chunks before decoding. */
    size_t n;
    unsigned char *png = read_whole(f, &n), *with = malloc(n + 12);
    size_t at = 8;
    while (at + 8 <= n && memcmp(png + at + 4, "IDAT", 4) != 0)
        at += 12 + ((size_t)png[at] << 24 | (size_t)png[at + 1] << 16 | (size_t)png[at + 2] << 8 | png[at + 3]);
    assert_true(at + 8 <= n);
    static const unsigned char EMPTY_IDAT[12] = {0, 0, 0, 0, 'I', 'D', 'A', 'T', 0x35, 0xaf, 0x06, 0x1e};
    memcpy(with, png, at);
    memcpy(with + at, EMPTY_IDAT, 12);
    memcpy(with + at + 12, png + at, n - at);
    char g[512];
    write_bytes(P(g, "empty_idat.png"), with, n + 12);
    uint8_t got2[16];
    expect_ok(qat_image_load(got2, g, 1, 4, 4, &err), &err, "a PNG with an empty IDAT chunk first");
    expect_bytes(got2, got, 16, "empty IDAT chunk");
    /* JPEGs that broke Debian 12's stb_image (fuzz_image found them): a Huffman table
     * claiming more than 256 codes (written past stb's table), the same behind 0xFF fill
     * bytes before SOI, and corrupt entropy data that drove stb's bit count negative (a
     * shift by 32). libjpeg-turbo decodes JPEGs now: each is refused as corrupt, and the
     * sanitizer build sees nothing undefined. */
    const char *const bad_jpegs[] = {"jpeg_dht_overflow.jpg", "jpeg_dht_overflow_fill_bytes.jpg",
                                     "jpeg_code_bits_negative_shift.jpg"};
    for (int i = 0; i < 3; i++) {
        char jpg[512];
        snprintf(jpg, sizeof jpg, "%s/%s", QAT_FUZZ_CRASH_DIR, bad_jpegs[i]);
        qat_error_clear(&err);
        assert_int_equal(qat_image_load(got2, jpg, 1, 4, 4, &err), QAT_STATUS_FORMAT);
        if (!strstr(err.msg, "corrupt JPEG") || !strstr(err.msg, bad_jpegs[i])) fail_msg("%s", err.msg);
    }
    /* A 135-byte PNG whose chunk claims about 2 GiB: stb_image allocated the claim before
     * reading (fuzz_image); refused before stb sees it. */
    char big[512];
    snprintf(big, sizeof big, "%s/png_chunk_length_huge.png", QAT_FUZZ_CRASH_DIR);
    qat_error_clear(&err);
    assert_int_equal(qat_image_load(got2, big, 1, 4, 4, &err), QAT_STATUS_FORMAT);
    if (!strstr(err.msg, "a chunk claims more bytes than the file holds")) fail_msg("%s", err.msg);
    /* The same claim in a last chunk whose CRC is missing (85 bytes claiming 1.7 GB): stb
     * reads the header and allocates; the check stopped at chunks with a CRC (fuzz_image). */
    snprintf(big, sizeof big, "%s/png_empty_idat_last_no_crc.png", QAT_FUZZ_CRASH_DIR);
    qat_error_clear(&err);
    /* an empty IDAT last, its CRC cut: dropped before stb_image (whose inflater formed
     * NULL + 0 from it: UBSan under clang, fuzz_image); the file is then just corrupt */
    assert_int_equal(qat_image_load(got2, big, 1, 4, 4, &err), QAT_STATUS_FORMAT);
    assert_non_null(strstr(err.msg, "png_empty_idat_last_no_crc.png"));
    snprintf(big, sizeof big, "%s/png_last_chunk_header_truncated.png", QAT_FUZZ_CRASH_DIR);
    qat_error_clear(&err);
    assert_int_equal(qat_image_load(got2, big, 1, 4, 4, &err), QAT_STATUS_FORMAT);
    if (!strstr(err.msg, "a chunk claims more bytes than the file holds")) fail_msg("%s", err.msg);
    free(png);
    free(with);
}

static void test_folder_bad(void **state) {
    char d[512], f[700];
    qat_error err = {0};
    qat_dataset ds;
    /* no classes: an empty folder, then one with only a plain file */
    make_dir(P(d, "bad-none"));
    expect_fail(qat_dataset_load_folder(&ds, d, 1, 4, 4, &err), &err, QAT_STATUS_FORMAT,
                "no classes", d, "no classes", NULL);
    snprintf(f, sizeof f, "%s/labels.txt", d);
    write_text(f, "a\nb\n");
    expect_fail(qat_dataset_load_folder(&ds, d, 1, 4, 4, &err), &err, QAT_STATUS_FORMAT,
                "only a file", d, "no classes", NULL);
    /* an empty class */
    uint8_t px[16] = {0};
    make_dir(P(d, "bad-empty"));
    snprintf(f, sizeof f, "%s/a", d);
    make_dir(f);
    snprintf(f, sizeof f, "%s/a/x.png", d);
    write_png(f, 4, 4, 1, px);
    snprintf(f, sizeof f, "%s/b", d);
    make_dir(f);
    expect_fail(qat_dataset_load_folder(&ds, d, 1, 4, 4, &err), &err, QAT_STATUS_FORMAT,
                "empty class", f, "empty class 'b'", NULL);
    expect_zeroed(&ds, "empty class");
    /* undecodable: garbage, and a PNG cut in half */
    snprintf(f, sizeof f, "%s/b/junk.png", d);
    write_text(f, "this is not an image at all");
    expect_fail(qat_dataset_load_folder(&ds, d, 1, 4, 4, &err), &err, QAT_STATUS_FORMAT, "junk",
                f, "cannot decode", NULL);
    unlink(f);
    uint8_t noisy[32 * 32];
    for (int i = 0; i < 32 * 32; i++) noisy[i] = (uint8_t)(i * 7919 % 251);
    char full[512];
    write_png(P(full, "full.png"), 32, 32, 1, noisy);
    size_t n;
    unsigned char *bytes = read_whole(full, &n);
    snprintf(f, sizeof f, "%s/b/cut.png", d);
    write_bytes(f, bytes, n / 2); /* the file ends inside the IDAT chunk */
    free(bytes);
    expect_fail(qat_dataset_load_folder(&ds, d, 1, 4, 4, &err), &err, QAT_STATUS_FORMAT,
                "cut png", f, "cannot decode", NULL);
    unlink(f);
    /* too large: 4097 x 1 */
    uint8_t *wide = calloc(4097, 1);
    snprintf(f, sizeof f, "%s/b/wide.png", d);
    write_png(f, 1, 4097, 1, wide);
    free(wide);
    expect_fail(qat_dataset_load_folder(&ds, d, 1, 4, 4, &err), &err, QAT_STATUS_FORMAT, "wide",
                f, "too large", "4097x1");
    unlink(f);
    /* a nested folder inside a class */
    snprintf(f, sizeof f, "%s/b/nested", d);
    make_dir(f);
    expect_fail(qat_dataset_load_folder(&ds, d, 1, 4, 4, &err), &err, QAT_STATUS_FORMAT,
                "nested", f, "not an image file", NULL);
    /* missing folder, bad arguments */
    expect_fail(qat_dataset_load_folder(&ds, P(d, "no-folder"), 1, 4, 4, &err), &err,
                QAT_STATUS_IO, "missing", d, "cannot open", NULL);
    expect_fail(qat_dataset_load_folder(&ds, d, 2, 4, 4, &err), &err, QAT_STATUS_INVALID_ARG,
                "2 channels", "channels 2", NULL, NULL);
    expect_fail(qat_dataset_load_folder(&ds, d, 1, 0, 4, &err), &err, QAT_STATUS_INVALID_ARG,
                "height 0", "0x4", NULL, NULL);
}

/* ---- CSV --------------------------------------------------------------------------- */

static void test_csv_good(void **state) {
    char f[512];
    qat_error err = {0};
    qat_dataset ds;
    write_text(P(f, "good.csv"),
               "label, x1, x2, x3\r\n"
               "2, 0.5, -1, 3e2\r\n"
               "\r\n"
               "0,1.25,  2  ,-0.0\r\n"
               " 1 ,1e-3,0x10,7\r\n");
    expect_ok(qat_dataset_load_csv(&ds, f, 0, &err), &err, "csv with header");
    assert_int_equal(ds.kind, QAT_DATASET_KIND_FEATURES);
    assert_int_equal(ds.n, 3);
    assert_int_equal(ds.dim, 3);
    assert_int_equal(ds.c, 0);
    assert_int_equal(ds.n_classes, 3);
    assert_null(ds.pixels);
    const float want[9] = {0.5f, -1.0f, 300.0f, 1.25f, 2.0f, -0.0f, 1e-3f, 16.0f, 7.0f};
    const int32_t labels[3] = {2, 0, 1};
    for (int i = 0; i < 9; i++)
        if (ds.features[i] != want[i])
            fail_msg("csv feature %d: %g, expected %g", i, (double)ds.features[i], (double)want[i]);
    for (int i = 0; i < 3; i++) assert_int_equal(ds.labels[i], labels[i]);
    qat_dataset_free(&ds);

    /* no header, no final newline, classes given, gzip */
    const char *text = "4,1,2\n9,3,4";
    write_gz(P(f, "nohead.csv.gz"), text, strlen(text));
    expect_ok(qat_dataset_load_csv(&ds, f, 10, &err), &err, "csv without header");
    assert_int_equal(ds.n, 2);
    assert_int_equal(ds.dim, 2);
    assert_int_equal(ds.n_classes, 10);
    assert_int_equal(ds.labels[1], 9);
    assert_true(ds.features[3] == 4.0f);
    qat_dataset_free(&ds);
}

static void csv_case(void **state, const char *name, const char *text, int n_classes,
                     qat_status want, const char *n1, const char *n2) {
    char f[512];
    qat_error err = {0};
    qat_dataset ds;
    write_text(P(f, name), text);
    expect_fail(qat_dataset_load_csv(&ds, f, n_classes, &err), &err, want, name, f, n1, n2);
    expect_zeroed(&ds, name);
}

static void test_csv_bad(void **state) {
    csv_case(state, "ragged.csv", "l,a,b\n1,2,3\n1,2\n", 0, QAT_STATUS_FORMAT,
             "ragged.csv:3:", "2 columns, expected 3");
    csv_case(state, "ragged-long.csv", "1,2,3\n\n1,2,3,4\n", 0, QAT_STATUS_FORMAT,
             "ragged-long.csv:3:", "4 columns");
    csv_case(state, "text.csv", "1,2,3\n0,1,abc\n", 0, QAT_STATUS_FORMAT, "text.csv:2:",
             "column 3: 'abc' is not a number");
    csv_case(state, "partial.csv", "1,2,3\n0,1,2.5x\n", 0, QAT_STATUS_FORMAT, "partial.csv:2:",
             "not a number");
    csv_case(state, "emptyfield.csv", "1,2,3\n0,,2\n", 0, QAT_STATUS_FORMAT,
             "emptyfield.csv:2:", "column 2 is empty");
    csv_case(state, "nan.csv", "1,2,3\n0,nan,2\n", 0, QAT_STATUS_NUMERIC, "nan.csv:2:",
             "not a finite");
    csv_case(state, "inf.csv", "1,2,3\n0,1,-inf\n", 0, QAT_STATUS_NUMERIC, "inf.csv:2:",
             "column 3");
    csv_case(state, "big.csv", "1,2,1e39\n", 0, QAT_STATUS_NUMERIC, "big.csv:1:", "finite");
    csv_case(state, "label-range.csv", "1,2,3\n10,1,2\n", 10, QAT_STATUS_FORMAT,
             "label-range.csv:2:", "label 10 is out of range");
    csv_case(state, "label-frac.csv", "1.5,2,3\n", 0, QAT_STATUS_FORMAT, "label-frac.csv:1:",
             "not a whole number");
    csv_case(state, "label-neg.csv", "x,y\n-1,2\n", 0, QAT_STATUS_FORMAT, "label-neg.csv:2:",
             "not a whole number");
    csv_case(state, "label-huge.csv", "1e9,2\n", 0, QAT_STATUS_FORMAT, "label-huge.csv:1:",
             "out of range");
    csv_case(state, "header-only.csv", "label,a,b\n\n", 0, QAT_STATUS_FORMAT, "empty",
             "no data rows");
    csv_case(state, "nothing.csv", "", 0, QAT_STATUS_FORMAT, "empty", NULL);
    csv_case(state, "one-col.csv", "1\n2\n", 0, QAT_STATUS_FORMAT, "one-col.csv:1:",
             "at least one feature");
    char f[512];
    qat_error err = {0};
    qat_dataset ds;
    expect_fail(qat_dataset_load_csv(&ds, P(f, "missing.csv"), 0, &err), &err, QAT_STATUS_IO,
                "missing csv", f, "cannot open", NULL);
}

/* ---- loader ------------------------------------------------------------------------ */

static bool is_permutation(const uint32_t *o, int n) {
    char *seen = calloc((size_t)n + 1, 1);
    bool ok = true;
    for (int i = 0; i < n && ok; i++) {
        ok = o[i] < (uint32_t)n && !seen[o[i]];
        if (ok) seen[o[i]] = 1;
    }
    free(seen);
    return ok;
}

static void test_loader_order(void **state) {
    enum { N = 1000 };
    uint32_t a[N], b[N], c[N], d[N];
    qat_loader_epoch_order(a, N, 7, 3);
    qat_loader_epoch_order(b, N, 7, 3);
    qat_loader_epoch_order(c, N, 7, 4);
    qat_loader_epoch_order(d, N, 8, 3);
    assert_true(is_permutation(a, N));
    assert_true(is_permutation(c, N));
    assert_memory_equal(a, b, sizeof a);
    int same_epoch = 0, same_seed = 0, fixed = 0;
    for (int i = 0; i < N; i++) {
        same_epoch += a[i] == c[i];
        same_seed += a[i] == d[i];
        fixed += a[i] == (uint32_t)i;
    }
    /* a random permutation keeps about 1 position of 1000 */
    if (same_epoch > 10 || same_seed > 10 || fixed > 10)
        fail_msg("orders too alike: %d equal across epochs, %d across seeds, %d fixed points",
                 same_epoch, same_seed, fixed);
    qat_loader_epoch_order(a, 1, 7, 0);
    assert_int_equal(a[0], 0);
    qat_loader_epoch_order(a, 0, 7, 0); /* nothing to do, no crash */
}

/* n images of 1 x 2 x 3 whose pixels encode the sample index; labels i % 3. */
static void make_images(qat_dataset *ds, int n, int c, int h, int w) {
    memset(ds, 0, sizeof *ds);
    ds->kind = QAT_DATASET_KIND_IMAGES;
    ds->n = n;
    ds->c = c;
    ds->h = h;
    ds->w = w;
    ds->dim = c * h * w;
    ds->n_classes = 3;
    ds->pixels = malloc((size_t)n * ds->dim);
    ds->labels = malloc(sizeof(int32_t) * n);
    for (int i = 0; i < n; i++) {
        ds->labels[i] = i % 3;
        for (int k = 0; k < ds->dim; k++) ds->pixels[i * ds->dim + k] = (uint8_t)(i * 10 + k);
    }
}

static void init_ok(qat_loader *l, const qat_dataset *ds, const qat_loader_config *cfg) {
    qat_error err = {0};
    expect_ok(qat_loader_init(l, ds, cfg, &err), &err, "qat_loader_init");
}

static void test_loader_epochs(void **state) {
    qat_dataset ds;
    make_images(&ds, 10, 1, 2, 3);
    qat_loader_config cfg = qat_loader_config_default();
    cfg.batch_size = 4;
    cfg.seed = 99;
    qat_loader l;
    init_ok(&l, &ds, &cfg);
    assert_int_equal(l.n_batches, 3);
    qat_error err = {0};
    uint32_t epoch0[10], epoch1[10];
    float batch1[4 * 6];
    for (int e = 0; e < 2; e++) {
        expect_ok(qat_loader_seek(&l, e, 0, &err), &err, "seek");
        qat_batch b;
        int got = 0, sizes[3] = {0};
        uint32_t *seen = e ? epoch1 : epoch0;
        while (qat_loader_next(&l, &b)) {
            assert_int_equal(b.epoch, e);
            sizes[b.index] = b.n;
            assert_int_equal(b.ndim, 4);
            assert_int_equal(b.shape[0], b.n);
            assert_int_equal(b.shape[1], 1);
            assert_int_equal(b.shape[2], 2);
            assert_int_equal(b.shape[3], 3);
            for (int j = 0; j < b.n; j++) {
                uint32_t i = b.idx[j];
                seen[got++] = i;
                assert_int_equal(b.y[j], ds.labels[i]);
                for (int k = 0; k < 6; k++) /* default normalization: p / 255 */
                    assert_true(b.x[j * 6 + k] == (float)(ds.pixels[i * 6 + k] / 255.0));
            }
            if (e == 0 && b.index == 1) memcpy(batch1, b.x, sizeof batch1);
        }
        assert_false(qat_loader_next(&l, &b)); /* stays exhausted */
        assert_int_equal(got, 10);
        assert_int_equal(sizes[0], 4);
        assert_int_equal(sizes[1], 4);
        assert_int_equal(sizes[2], 2); /* the partial last batch */
        assert_true(is_permutation(seen, 10));
    }
    /* the loader's order is qat_loader_epoch_order's; epochs differ */
    uint32_t want[10];
    qat_loader_epoch_order(want, 10, 99, 1);
    assert_memory_equal(epoch1, want, sizeof want);
    assert_true(memcmp(epoch0, epoch1, sizeof epoch0) != 0);

    /* resume: a fresh loader seeking to (0, 1) returns the same batch 1 */
    qat_loader l2;
    init_ok(&l2, &ds, &cfg);
    expect_ok(qat_loader_seek(&l2, 0, 1, &err), &err, "seek mid-epoch");
    qat_batch b;
    assert_true(qat_loader_next(&l2, &b));
    assert_int_equal(b.index, 1);
    assert_memory_equal(b.idx, epoch0 + 4, 4 * sizeof(uint32_t));
    assert_memory_equal(b.x, batch1, sizeof batch1);
    expect_fail(qat_loader_seek(&l2, 0, 4, &err), &err, QAT_STATUS_INVALID_ARG, "seek past end",
                "batch 4", "0..3", NULL);
    expect_fail(qat_loader_seek(&l2, -1, 0, &err), &err, QAT_STATUS_INVALID_ARG, "seek epoch -1",
                "epoch -1", NULL, NULL);
    qat_loader_free(&l2);
    qat_loader_free(&l);

    /* drop_last: two full batches, 8 distinct samples; no shuffle: dataset order */
    cfg.drop_last = true;
    cfg.shuffle = false;
    init_ok(&l, &ds, &cfg);
    assert_int_equal(l.n_batches, 2);
    int total = 0;
    while (qat_loader_next(&l, &b)) {
        assert_int_equal(b.n, 4);
        for (int j = 0; j < 4; j++) assert_int_equal(b.idx[j], total + j);
        total += b.n;
    }
    assert_int_equal(total, 8);
    qat_loader_free(&l);
    qat_dataset_free(&ds);
}

static void test_loader_normalize(void **state) {
    qat_dataset ds;
    make_images(&ds, 2, 3, 2, 2);
    ds.pixels[0] = 0;
    ds.pixels[1] = 255;
    qat_loader_config cfg = qat_loader_config_default();
    cfg.batch_size = 2;
    cfg.shuffle = false;
    const float mean[3] = {0.1f, 0.2f, 0.3f}, std[3] = {0.5f, 0.25f, 2.0f};
    memcpy(cfg.mean, mean, sizeof mean);
    memcpy(cfg.std, std, sizeof std);
    qat_loader l;
    init_ok(&l, &ds, &cfg);
    qat_batch b;
    assert_true(qat_loader_next(&l, &b));
    for (int i = 0; i < 2; i++)
        for (int c = 0; c < 3; c++)
            for (int p = 0; p < 4; p++) {
                int k = i * 12 + c * 4 + p;
                double want = (ds.pixels[k] / 255.0 - mean[c]) / std[c];
                if (fabs(b.x[k] - want) > 1e-6 * (1 + fabs(want)))
                    fail_msg("x[%d] (channel %d, pixel %u) = %.8f, expected %.8f", k, c,
                             ds.pixels[k], (double)b.x[k], want);
            }
    assert_float_equal(b.x[0], -0.2, 1e-6); /* (0 - 0.1) / 0.5 */
    assert_float_equal(b.x[1], 1.8, 1e-6);  /* (1 - 0.1) / 0.5 */
    qat_loader_free(&l);

    /* the per-channel statistics of a data set, against a direct double computation */
    float m[3], s[3];
    qat_error err = {0};
    expect_ok(qat_dataset_channel_stats(&ds, m, s, &err), &err, "channel stats");
    for (int c = 0; c < 3; c++) {
        double s1 = 0, s2 = 0;
        for (int i = 0; i < 2; i++)
            for (int p = 0; p < 4; p++) {
                double v = ds.pixels[i * 12 + c * 4 + p] / 255.0;
                s1 += v;
                s2 += v * v;
            }
        double mu = s1 / 8, sd = sqrt(s2 / 8 - mu * mu);
        assert_float_equal(m[c], mu, 1e-6);
        assert_float_equal(s[c], sd, 1e-6);
    }
    qat_dataset_free(&ds);
}

/* Reference augmentation, written from the definition: pad by P with pixel 0, take the
 * window at (dy, dx), flip it if asked; then normalize. */
static void reference_aug(float *out, const uint8_t *src, int H, int W, int P, int dy, int dx,
                          bool flip, float mean, float std) {
    int PH = H + 2 * P, PW = W + 2 * P;
    uint8_t *padded = calloc((size_t)PH * PW, 1);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) padded[(y + P) * PW + x + P] = src[y * W + x];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            uint8_t v = padded[(y + dy) * PW + x + dx];
            int ox = flip ? W - 1 - x : x;
            out[y * W + ox] = (float)((v / 255.0 - mean) / std);
        }
    free(padded);
}

static void test_loader_augment(void **state) {
    enum { H = 4, W = 5, PAD = 2, EPOCHS = 600 };
    qat_dataset ds;
    make_images(&ds, 1, 1, H, W);
    for (int k = 0; k < H * W; k++) ds.pixels[k] = (uint8_t)(10 + 11 * k); /* distinct, > 0 */
    qat_loader_config cfg = qat_loader_config_default();
    cfg.batch_size = 1;
    cfg.seed = 5;
    cfg.mean[0] = 0.5f;
    cfg.std[0] = 0.5f; /* the padding normalizes to -1 */
    cfg.crop_padding = PAD;
    cfg.hflip = true;
    qat_loader l, l2;
    init_ok(&l, &ds, &cfg);
    init_ok(&l2, &ds, &cfg);
    qat_error err = {0};
    int hits[2 * PAD + 1][2 * PAD + 1][2] = {{{0}}};
    float ref[H * W];
    for (int e = 0; e < EPOCHS; e++) {
        qat_batch b, b2;
        expect_ok(qat_loader_seek(&l, e, 0, &err), &err, "seek");
        assert_true(qat_loader_next(&l, &b));
        /* exactly one (dy, dx, flip) reproduces the output */
        int matches = 0;
        for (int dy = 0; dy <= 2 * PAD; dy++)
            for (int dx = 0; dx <= 2 * PAD; dx++)
                for (int flip = 0; flip < 2; flip++) {
                    reference_aug(ref, ds.pixels, H, W, PAD, dy, dx, flip, 0.5f, 0.5f);
                    bool same = true;
                    for (int k = 0; k < H * W && same; k++) same = fabsf(ref[k] - b.x[k]) < 1e-6f;
                    if (same) {
                        matches++;
                        hits[dy][dx][flip]++;
                    }
                }
        if (matches != 1)
            fail_msg("epoch %d: the augmented image matches %d crop/flip candidates, expected "
                     "1",
                     e, matches);
        /* a second loader, visiting epochs backwards, agrees: a pure function of
         * (seed, epoch) */
        if (e % 50 == 0) {
            expect_ok(qat_loader_seek(&l2, EPOCHS - 1 - e, 0, &err), &err, "seek");
            assert_true(qat_loader_next(&l2, &b2));
            expect_ok(qat_loader_seek(&l2, e, 0, &err), &err, "seek");
            assert_true(qat_loader_next(&l2, &b2));
            assert_memory_equal(b.x, b2.x, sizeof(float) * H * W);
        }
    }
    /* every offset and both flips occur (50 outcomes, 600 draws) */
    for (int dy = 0; dy <= 2 * PAD; dy++)
        for (int dx = 0; dx <= 2 * PAD; dx++)
            for (int flip = 0; flip < 2; flip++)
                if (hits[dy][dx][flip] == 0)
                    fail_msg("crop (%d, %d) flip %d never drawn in %d epochs", dy, dx, flip,
                             EPOCHS);
    /* a known case by hand: the padding value is the normalized pixel 0 */
    float corner[H * W];
    reference_aug(corner, ds.pixels, H, W, PAD, 0, 0, false, 0.5f, 0.5f);
    assert_float_equal(corner[0], -1.0, 1e-7);              /* padding */
    assert_float_equal(corner[2 * W + 2], (10 / 255.0 - 0.5) / 0.5, 1e-6); /* pixel (0,0) */
    /* the seed matters */
    qat_loader_free(&l2);
    cfg.seed = 6;
    init_ok(&l2, &ds, &cfg);
    int differ = 0;
    for (int e = 0; e < 20; e++) {
        qat_batch b, b2;
        qat_loader_seek(&l, e, 0, &err);
        qat_loader_seek(&l2, e, 0, &err);
        qat_loader_next(&l, &b);
        qat_loader_next(&l2, &b2);
        differ += memcmp(b.x, b2.x, sizeof(float) * H * W) != 0;
    }
    assert_true(differ > 10);
    qat_loader_free(&l);
    qat_loader_free(&l2);

    /* flip only: each output is the image or its mirror, and both occur */
    cfg.crop_padding = 0;
    init_ok(&l, &ds, &cfg);
    int mirrored = 0;
    for (int e = 0; e < 40; e++) {
        qat_batch b;
        qat_loader_seek(&l, e, 0, &err);
        assert_true(qat_loader_next(&l, &b));
        reference_aug(ref, ds.pixels, H, W, 0, 0, 0, false, 0.5f, 0.5f);
        bool plain = memcmp(ref, b.x, sizeof ref) == 0;
        reference_aug(ref, ds.pixels, H, W, 0, 0, 0, true, 0.5f, 0.5f);
        bool flipped = memcmp(ref, b.x, sizeof ref) == 0;
        assert_true(plain != flipped);
        mirrored += flipped;
    }
    assert_true(mirrored > 5 && mirrored < 35);
    qat_loader_free(&l);
    qat_dataset_free(&ds);
}

static void test_loader_features_and_bad_config(void **state) {
    char f[512];
    qat_error err = {0};
    qat_dataset ds;
    write_text(P(f, "loader.csv"), "0,1,2\n1,3,4\n2,5,6\n");
    expect_ok(qat_dataset_load_csv(&ds, f, 0, &err), &err, "csv");
    qat_loader_config cfg = qat_loader_config_default();
    cfg.batch_size = 2;
    cfg.shuffle = false;
    cfg.mean[0] = 100.0f; /* not applied to features */
    qat_loader l;
    init_ok(&l, &ds, &cfg);
    qat_batch b;
    assert_true(qat_loader_next(&l, &b));
    assert_int_equal(b.ndim, 2);
    assert_int_equal(b.shape[0], 2);
    assert_int_equal(b.shape[1], 2);
    const float want[4] = {1, 2, 3, 4};
    assert_memory_equal(b.x, want, sizeof want);
    assert_true(qat_loader_next(&l, &b));
    assert_int_equal(b.n, 1);
    assert_true(b.x[0] == 5.0f && b.x[1] == 6.0f && b.y[0] == 2);
    qat_loader_free(&l);
    cfg.hflip = true;
    expect_fail(qat_loader_init(&l, &ds, &cfg, &err), &err, QAT_STATUS_INVALID_ARG,
                "hflip on features", "images only", NULL, NULL);
    cfg.hflip = false;
    cfg.crop_padding = 2;
    expect_fail(qat_loader_init(&l, &ds, &cfg, &err), &err, QAT_STATUS_INVALID_ARG,
                "crop on features", "images only", NULL, NULL);
    qat_dataset_free(&ds);

    make_images(&ds, 5, 1, 4, 4);
    struct {
        const char *what, *needle;
        qat_loader_config cfg;
    } bad[7];
    for (int i = 0; i < 7; i++) bad[i].cfg = qat_loader_config_default();
    bad[0].what = "batch 0", bad[0].needle = "batch_size = 0", bad[0].cfg.batch_size = 0;
    bad[1].what = "std 0", bad[1].needle = "std[0]", bad[1].cfg.std[0] = 0.0f;
    bad[2].what = "std nan", bad[2].needle = "std[0]", bad[2].cfg.std[0] = NAN;
    bad[3].what = "mean inf", bad[3].needle = "mean[0]", bad[3].cfg.mean[0] = INFINITY;
    bad[4].what = "crop -1", bad[4].needle = "crop_padding = -1", bad[4].cfg.crop_padding = -1;
    bad[5].what = "drop all", bad[5].needle = "drop_last", bad[5].cfg.drop_last = true;
    bad[5].cfg.batch_size = 6;
    bad[6].what = "crop 5", bad[6].needle = "crop_padding = 5", bad[6].cfg.crop_padding = 5;
    for (int i = 0; i < 7; i++) {
        expect_fail(qat_loader_init(&l, &ds, &bad[i].cfg, &err), &err, QAT_STATUS_INVALID_ARG,
                    bad[i].what, bad[i].needle, NULL, NULL);
        assert_null(l.order);
    }
    qat_dataset_free(&ds);
    expect_fail(qat_loader_init(&l, &ds, &cfg, &err), &err, QAT_STATUS_INVALID_ARG,
                "empty dataset", "empty", NULL, NULL);
    float m, s;
    expect_fail(qat_dataset_channel_stats(&ds, &m, &s, &err), &err, QAT_STATUS_INVALID_ARG,
                "stats of nothing", "image data set", NULL, NULL);
}

/* ---- the real Fashion-MNIST -------------------------------------------------------- */

/* ---- any format, and the normalisation ----------------------------------------------- */

static void test_open_any_format(void **state) {
    char d[512], f[512], bad[512], none[512];
    qat_error err = {0};
    qat_dataset ds;
    qat_data_format fmt;
    make_dir(P(d, "any"));
    write_idx_pair(state, "any/train-images-idx3-ubyte", "any/train-labels-idx1-ubyte", false);
    write_text(P(f, "any.csv"), "label,a,b\n0,1,2\n1,3,4\n");
    write_text(P(bad, "any.txt"), "0,1,2\n");
    expect_ok(qat_data_format_detect(d, &fmt, &err), &err, "detect idx");
    assert_int_equal(fmt, QAT_DATA_FORMAT_IDX);
    expect_ok(qat_data_format_detect(f, &fmt, &err), &err, "detect csv");
    assert_int_equal(fmt, QAT_DATA_FORMAT_CSV);
    expect_ok(qat_data_format_detect(P(none, "."), &fmt, &err), &err, "detect folder");
    assert_int_equal(fmt, QAT_DATA_FORMAT_FOLDER);
    for (int k = 0; k < QAT_DATA_FORMAT_COUNT; k++) {
        qat_data_format back;
        assert_true(qat_data_format_parse(qat_data_format_str((qat_data_format)k), &back));
        assert_int_equal(back, k);
    }
    assert_false(qat_data_format_parse("IDX", &fmt));

    const int img[3] = {1, IH, IW}, feat[1] = {2};
    expect_ok(qat_dataset_open(&ds, d, NULL, QAT_SPLIT_TRAIN, 3, img, &err), &err, "open idx");
    assert_int_equal(ds.n, IN);
    expect_ok(qat_dataset_check_fit(&ds, 3, img, 10, d, &err), &err, "idx fits");
    expect_fail(qat_dataset_check_fit(&ds, 3, (int[]){1, IH + 1, IW}, 10, d, &err), &err, QAT_STATUS_SHAPE,
                "idx shape", d, "do not fit", NULL);
    qat_error_clear(&err);
    expect_fail(qat_dataset_check_fit(&ds, 3, img, 3, d, &err), &err, QAT_STATUS_SHAPE, "idx classes", d,
                "outputs", NULL);
    qat_dataset_free(&ds);
    expect_ok(qat_dataset_open(&ds, f, "csv", QAT_SPLIT_TEST, 1, feat, &err), &err, "open csv");
    assert_int_equal(ds.dim, 2);
    qat_dataset_free(&ds);
    qat_error_clear(&err);
    expect_fail(qat_dataset_open(&ds, bad, NULL, QAT_SPLIT_TRAIN, 1, feat, &err), &err, QAT_STATUS_FORMAT,
                "not csv", bad, ".csv", NULL);
    qat_error_clear(&err);
    expect_fail(qat_dataset_open(&ds, P(none, "nowhere"), NULL, QAT_SPLIT_TRAIN, 1, feat, &err), &err,
                QAT_STATUS_IO, "missing path", none, "no such", NULL);
    qat_error_clear(&err);
    expect_fail(qat_dataset_open(&ds, d, "mnist", QAT_SPLIT_TRAIN, 3, img, &err), &err,
                QAT_STATUS_INVALID_ARG, "unknown format", "mnist", "idx, cifar10", NULL);
    qat_error_clear(&err);
    expect_fail(qat_dataset_open(&ds, P(none, "."), "folder", QAT_SPLIT_TRAIN, 1, feat, &err), &err,
                QAT_STATUS_INVALID_ARG, "folder, flat model", "(C, H, W)", NULL, NULL);
    expect_zeroed(&ds, "failed open");
}

static void test_normalization(void **state) {
    (void)state;
    qat_error err = {0};
    qat_normalization n;
    expect_ok(qat_normalization_parse(&n, "0.286", "0.353", &err), &err, "one channel");
    assert_int_equal(n.channels, 1);
    for (int c = 0; c < 3; c++) assert_true(n.mean[c] == 0.286f && n.std[c] == 0.353f);
    assert_true(qat_normalization_uniform(&n, 3));
    expect_ok(qat_normalization_parse(&n, "0.4914, 0.4822,0.4465", "0.247", &err), &err, "three means");
    assert_int_equal(n.channels, 3);
    assert_true(n.mean[1] == 0.4822f && n.std[2] == 0.247f);
    assert_false(qat_normalization_uniform(&n, 3));
    assert_true(qat_normalization_uniform(&n, 1));
    expect_ok(qat_normalization_parse(&n, "0.5", NULL, &err), &err, "no std");
    assert_true(n.std[0] == 1.0f && n.std[2] == 1.0f);
    /* format then parse gives the same floats; %.7g of the old checkpoints */
    char m[64], s[64];
    expect_ok(qat_normalization_parse(&n, "0.2860", "0.3530", &err), &err, "fashion");
    qat_normalization_format(&n, 1, m, s, sizeof m);
    assert_string_equal(m, "0.286");
    assert_string_equal(s, "0.353");
    n.mean[0] = 0.12345678f, n.mean[1] = 1e-9f, n.mean[2] = -3.0f;
    qat_normalization_format(&n, 3, m, s, sizeof m);
    assert_string_equal(m, "0.1234568,1e-09,-3");
    const struct {
        const char *mean, *std, *needle;
    } bad[] = {
        {"", "1", "mean ''"},           {"0.1,", "1", "mean '0.1,'"},
        {"0.1 0.2", "1", "mean"},       {"nan", "1", "mean 'nan'"},
        {"0.1,0.2,0.3,0.4", "1", "1 to 3"}, {"0.1", "0", "is not > 0"},
        {"0.1", "-1", "is not > 0"},    {"0.1", "inf", "std 'inf'"},
        {"0.1,0.2", "0.3,0.4,0.5", "2 means but 3"}, {"1e99", "1", "mean '1e99'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        qat_error_clear(&err);
        char what[64];
        snprintf(what, sizeof what, "bad normalisation %zu", i);
        expect_fail(qat_normalization_parse(&n, bad[i].mean, bad[i].std, &err), &err, QAT_STATUS_INVALID_ARG,
                    what, bad[i].needle, NULL, NULL);
    }
}

static void test_fashion_mnist(void **state) {
    (void)state;
    struct stat st;
    if (stat(QAT_FASHION_MNIST_DIR, &st) != 0)
        fail_msg("Fashion-MNIST is not installed in %s: apt-get install dataset-fashion-mnist "
                 "(scripts/bootstrap.sh installs it for the tests)",
                 QAT_FASHION_MNIST_DIR);
    qat_error err = {0};
    qat_dataset tr, te;
    expect_ok(qat_dataset_load_mnist(&tr, QAT_FASHION_MNIST_DIR, QAT_SPLIT_TRAIN, &err), &err,
              "Fashion-MNIST train");
    expect_ok(qat_dataset_load_mnist(&te, QAT_FASHION_MNIST_DIR, QAT_SPLIT_TEST, &err), &err,
              "Fashion-MNIST test");
    const qat_dataset *sets[2] = {&tr, &te};
    const int sizes[2] = {60000, 10000};
    for (int s = 0; s < 2; s++) {
        const qat_dataset *ds = sets[s];
        assert_int_equal(ds->n, sizes[s]);
        assert_int_equal(ds->c, 1);
        assert_int_equal(ds->h, 28);
        assert_int_equal(ds->w, 28);
        assert_int_equal(ds->n_classes, 10);
        int count[10] = {0};
        for (int i = 0; i < ds->n; i++) {
            if (ds->labels[i] < 0 || ds->labels[i] > 9)
                fail_msg("label %d of sample %d", ds->labels[i], i);
            count[ds->labels[i]]++;
        }
        for (int k = 0; k < 10; k++) assert_int_equal(count[k], sizes[s] / 10); /* balanced */
        /* the files' first labels (ankle boot, T-shirt, ...; zcat | xxd) */
        static const int32_t first[2][10] = {{9, 0, 0, 3, 0, 2, 7, 2, 5, 5},
                                             {9, 2, 1, 1, 6, 1, 4, 6, 5, 7}};
        assert_memory_equal(ds->labels, first[s], sizeof first[s]);
    }
    float mean, std;
    expect_ok(qat_dataset_channel_stats(&tr, &mean, &std, &err), &err, "stats");
    if (fabsf(mean - QAT_FASHION_MNIST_MEAN) > 5e-4f || fabsf(std - QAT_FASHION_MNIST_STD) > 5e-4f)
        fail_msg("Fashion-MNIST train: mean %.4f (%.1f of 255), std %.4f; expected 0.2860 and "
                 "0.3530",
                 (double)mean, (double)mean * 255, (double)std);
    /* one normalized batch: its mean is near 0 */
    qat_loader_config cfg = qat_loader_config_default();
    cfg.batch_size = 1000;
    cfg.mean[0] = QAT_FASHION_MNIST_MEAN;
    cfg.std[0] = QAT_FASHION_MNIST_STD;
    qat_loader l;
    init_ok(&l, &tr, &cfg);
    assert_int_equal(l.n_batches, 60);
    qat_batch b;
    assert_true(qat_loader_next(&l, &b));
    double sum = 0;
    for (size_t k = 0; k < (size_t)b.n * 784; k++) sum += b.x[k];
    assert_true(fabs(sum / (b.n * 784.0)) < 0.1);
    qat_loader_free(&l);
    qat_dataset_free(&tr);
    qat_dataset_free(&te);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idx_plain_and_gz),
        cmocka_unit_test(test_idx_bad_magic),
        cmocka_unit_test(test_idx_truncated),
        cmocka_unit_test(test_idx_counts_labels_dims),
        cmocka_unit_test(test_mnist_dir),
        cmocka_unit_test(test_cifar_good),
        cmocka_unit_test(test_cifar_bad),
        cmocka_unit_test(test_folder_good),
        cmocka_unit_test(test_folder_jpeg),
        cmocka_unit_test(test_image_resize),
        cmocka_unit_test(test_folder_bad),
        cmocka_unit_test(test_csv_good),
        cmocka_unit_test(test_csv_bad),
        cmocka_unit_test(test_loader_order),
        cmocka_unit_test(test_loader_epochs),
        cmocka_unit_test(test_loader_normalize),
        cmocka_unit_test(test_loader_augment),
        cmocka_unit_test(test_loader_features_and_bad_config),
        cmocka_unit_test(test_open_any_format),
        cmocka_unit_test(test_normalization),
        cmocka_unit_test(test_fashion_mnist),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
