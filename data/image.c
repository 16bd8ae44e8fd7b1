/* image.c - image decoding (stb_image) and resizing; the method is in image.h.
 *
 * stb_image is compiled here, and only here, with its functions static so they cannot
 * clash with another copy of stb_image linked into the same program (Debian also ships
 * it as libstb.so). Only the PNG, JPEG and BMP decoders are built. Files are read into
 * memory by us (size-capped, plain or gzip as everything in data/), so stb's stdio
 * layer is left out. stb_image keeps its last failure reason in a thread-local
 * variable; it is read right after the failing call.
 */
#include "image.h"

#include <math.h>
#include <string.h>

#include "dataset.h"
#include "fileio.h"

#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_ONLY_BMP
#define STBI_NO_STDIO
/* Third-party code: its warnings are not ours to fix. -Wunused-function stays off for
 * the whole file: GCC reports stb's declared-but-undefined static functions (the GIF
 * loader we left out) at the end of the file, after a pop would have restored it. */
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wall"
#pragma GCC diagnostic ignored "-Wextra"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#include <stb_image.h>
#pragma GCC diagnostic pop

/* One axis of a separable resize: output o = sum_k w[o*taps + k] * input[first[o] + k],
 * k < count[o]. */
typedef struct axis_weights {
    int taps;
    int *first, *count;
    double *w;
} axis_weights;

static void axis_free(axis_weights *a) {
    free(a->first);
    free(a->count);
    free(a->w);
}

static bool axis_init(axis_weights *a, int in, int out) {
    double scale = (double)in / (double)out;
    /* area: an output covers `scale` inputs, touching at most ceil(scale) + 1 of them */
    a->taps = out < in ? (int)ceil(scale) + 1 : 2;
    a->first = malloc(sizeof(int) * (size_t)out);
    a->count = malloc(sizeof(int) * (size_t)out);
    a->w = calloc((size_t)out * (size_t)a->taps, sizeof(double));
    if (!a->first || !a->count || !a->w) {
        axis_free(a);
        return false;
    }
    for (int o = 0; o < out; o++) {
        double *w = a->w + (size_t)o * (size_t)a->taps;
        if (out >= in) { /* bilinear, half-pixel centres */
            double src = ((double)o + 0.5) * scale - 0.5;
            if (src < 0) src = 0;
            if (src > in - 1) src = in - 1;
            int i0 = (int)floor(src);
            double t = src - i0;
            a->first[o] = i0;
            a->count[o] = i0 + 1 < in ? 2 : 1;
            w[0] = 1.0 - t;
            if (a->count[o] == 2) w[1] = t;
        } else { /* area: coverage of [lo, hi) over each input pixel, / scale */
            double lo = o * scale, hi = (o + 1) * scale;
            int i0 = (int)floor(lo), i1 = QAT_MIN((int)ceil(hi), in);
            a->first[o] = i0;
            a->count[o] = 0;
            for (int i = i0; i < i1 && a->count[o] < a->taps; i++) {
                double cover = fmin(hi, i + 1.0) - fmax(lo, (double)i);
                w[a->count[o]++] = cover > 0 ? cover / scale : 0.0;
            }
        }
    }
    return true;
}

qat_status qat_image_resize(uint8_t *out, int out_h, int out_w, const uint8_t *in, int in_h,
                            int in_w, int channels, qat_error *err) {
    QAT_ASSERT(out && in && out_h >= 1 && out_w >= 1 && in_h >= 1 && in_w >= 1 && channels >= 1);
    if (out_h == in_h && out_w == in_w) {
        memcpy(out, in, (size_t)channels * (size_t)in_h * (size_t)in_w);
        return QAT_STATUS_OK;
    }
    axis_weights ay = {0}, ax = {0};
    double *row = malloc(sizeof(double) * (size_t)in_w);
    bool ok = row && axis_init(&ay, in_h, out_h);
    ok = ok && axis_init(&ax, in_w, out_w);
    if (!ok) {
        free(row);
        axis_free(&ay);
        axis_free(&ax);
        return qat_error_set(err, QAT_STATUS_NOMEM, "qat_image_resize: out of memory");
    }
    for (int c = 0; c < channels; c++) {
        const uint8_t *src = in + (size_t)c * (size_t)in_h * (size_t)in_w;
        uint8_t *dst = out + (size_t)c * (size_t)out_h * (size_t)out_w;
        for (int oy = 0; oy < out_h; oy++) {
            /* vertical pass into one input-width row, then the horizontal pass */
            const double *wy = ay.w + (size_t)oy * (size_t)ay.taps;
            for (int x = 0; x < in_w; x++) row[x] = 0;
            for (int k = 0; k < ay.count[oy]; k++) {
                const uint8_t *s = src + (size_t)(ay.first[oy] + k) * (size_t)in_w;
                for (int x = 0; x < in_w; x++) row[x] += wy[k] * s[x];
            }
            for (int ox = 0; ox < out_w; ox++) {
                const double *wx = ax.w + (size_t)ox * (size_t)ax.taps;
                double v = 0;
                for (int k = 0; k < ax.count[ox]; k++) v += wx[k] * row[ax.first[ox] + k];
                /* the weights sum to 1 up to rounding: keep 25.5 - 1e-12 from becoming 25 */
                v = floor(v + 0.5 + 1e-9);
                dst[(size_t)oy * (size_t)out_w + (size_t)ox] =
                    (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
    }
    free(row);
    axis_free(&ay);
    axis_free(&ax);
    return QAT_STATUS_OK;
}

/* Removes the zero-length IDAT chunks of a PNG in place (valid PNG, but stb_image's
 * inflater then forms a pointer offset from NULL, undefined behaviour that clang's UBSan
 * reports) and returns the new length. The chunk walk stops at the first chunk that runs
 * past the end and keeps the rest as it is, for stb_image to reject. Not a PNG: len. */
static size_t png_drop_empty_idat(unsigned char *b, size_t len) {
    static const unsigned char SIG[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (len < 8 || memcmp(b, SIG, 8) != 0) return len;
    size_t in = 8, out = 8;
    while (len - in >= 12) {
        const size_t n = (size_t)b[in] << 24 | (size_t)b[in + 1] << 16 | (size_t)b[in + 2] << 8 | b[in + 3];
        if (n > len - in - 12) break;
        if (!(n == 0 && memcmp(b + in + 4, "IDAT", 4) == 0)) {
            memmove(b + out, b + in, 12 + n);
            out += 12 + n;
        }
        in += 12 + n;
    }
    memmove(b + out, b + in, len - in);
    return out + (len - in);
}

/* Whether every Huffman table of a JPEG's DHT segments has at most 256 codes. The
 * stb_image of Debian 12 (2022-09) sums a table's 16 code counts without checking the
 * total and writes that many entries into a 257-byte array (found by tests/fuzz,
 * crashes/image/jpeg_dht_overflow.jpg). The walk follows stb's reading: segments by their
 * length, each DHT's tables read on while its length lasts, bytes past the end as 0;
 * entropy-coded data skipped to the next marker. A JPEG is what stb takes for one: 0xFF,
 * any number of 0xFF fill bytes, then SOI (0xD8) (fuzz_image found a file with fill bytes
 * before SOI that the check let through, crashes/image/jpeg_dht_overflow_fill_bytes.jpg).
 * Not a JPEG: true. */
static bool jpeg_huffman_ok(const unsigned char *b, size_t len) {
    if (len < 2 || b[0] != 0xFF) return true;
    size_t p = 1;
    while (p < len && b[p] == 0xFF) p++;
    if (p >= len || b[p] != 0xD8) return true;
    p++;
    while (p + 1 < len) {
        if (b[p] != 0xFF) { /* entropy-coded data */
            p++;
            continue;
        }
        const unsigned m = b[p + 1];
        if (m == 0xFF || m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD9)) { /* fill, stuffing, no length */
            p += m == 0xFF ? 1 : 2;
            continue;
        }
        if (len - p < 4) break;
        const size_t seg = (size_t)b[p + 2] << 8 | b[p + 3];
        if (m == 0xC4)
            for (size_t q = p + 4; q < p + 2 + seg;) {
                size_t n = 0;
                for (size_t i = 1; i <= 16; i++) n += q + i < len ? b[q + i] : 0;
                if (n > 256) return false;
                q += 17 + n;
            }
        p += 2 + seg;
    }
    return true;
}

qat_status qat_image_load(uint8_t *out, const char *path, int channels, int height,
                          int width, qat_error *err) {
    QAT_ASSERT(out && path);
    if ((channels != 1 && channels != 3) || height < 1 || width < 1 ||
        height > QAT_DATA_MAX_IMAGE_SIDE || width > QAT_DATA_MAX_IMAGE_SIDE)
        return qat_error_set(err, QAT_STATUS_INVALID_ARG,
                             "qat_image_load: channels %d, size %dx%d: expected 1 or 3 "
                             "channels and 1..%d pixels per side",
                             channels, height, width, QAT_DATA_MAX_IMAGE_SIDE);
    char *file = NULL;
    size_t len = 0;
    qat_status s = qat_data_slurp(path, QAT_DATA_MAX_IMAGE_FILE, &file, &len, err);
    if (s) return s;
    len = png_drop_empty_idat((unsigned char *)file, len);
    if (!jpeg_huffman_ok((const unsigned char *)file, len)) {
        free(file);
        return qat_error_set(err, QAT_STATUS_FORMAT,
                             "%s: cannot decode: corrupt JPEG (a Huffman table with more than 256 codes)", path);
    }
    const stbi_uc *bytes = (const stbi_uc *)file;
    int w = 0, h = 0, comp = 0;
    if (!stbi_info_from_memory(bytes, (int)len, &w, &h, &comp)) {
        s = qat_error_set(err, QAT_STATUS_FORMAT,
                          "%s: cannot decode: not a PNG, JPEG or BMP image (stb_image: %s)",
                          path, stbi_failure_reason());
        free(file);
        return s;
    }
    if (w > QAT_DATA_MAX_IMAGE_SIDE || h > QAT_DATA_MAX_IMAGE_SIDE || w < 1 || h < 1) {
        s = qat_error_set(err, QAT_STATUS_FORMAT,
                          "%s: image too large: %dx%d (width x height), the limit is %d "
                          "pixels per side (QAT_DATA_MAX_IMAGE_SIDE)",
                          path, w, h, QAT_DATA_MAX_IMAGE_SIDE);
        free(file);
        return s;
    }
    stbi_uc *hwc = stbi_load_from_memory(bytes, (int)len, &w, &h, &comp, channels);
    free(file);
    if (!hwc)
        return qat_error_set(err, QAT_STATUS_FORMAT,
                             "%s: cannot decode: corrupt or truncated image data (stb_image: "
                             "%s)",
                             path, stbi_failure_reason());
    /* interleaved (H, W, C) -> planes (C, H, W), then to the wanted size */
    size_t plane = (size_t)w * (size_t)h;
    uint8_t *chw = (h == height && w == width) ? out : malloc(plane * (size_t)channels);
    if (!chw) {
        stbi_image_free(hwc);
        return qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
    }
    for (int c = 0; c < channels; c++)
        for (size_t p = 0; p < plane; p++) chw[(size_t)c * plane + p] = hwc[p * (size_t)channels + (size_t)c];
    stbi_image_free(hwc);
    if (chw != out) {
        s = qat_image_resize(out, height, width, chw, h, w, channels, err);
        free(chw);
    }
    return s;
}
