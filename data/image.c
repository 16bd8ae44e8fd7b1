/* image.c - image decoding (libjpeg-turbo for JPEG, stb_image for PNG and BMP) and
 * resizing; the method is in image.h.
 *
 * JPEGs are decoded by libjpeg-turbo (Debian's libjpeg-dev): Debian 12's stb_image (2.27)
 * mishandles corrupt JPEGs in two ways fuzz_image found (a Huffman table of more than 256
 * codes written past its array; a negative bit count shifted by 32), which stb 2.28 fixed
 * but Debian 12 does not ship. A JPEG is what stb would take for one (0xFF, fill bytes,
 * SOI); libjpeg's warnings (corrupt data it would paper over) refuse the file too.
 *
 * stb_image is compiled here, and only here, with its functions static so they cannot
 * clash with another copy of stb_image linked into the same program (Debian also ships
 * it as libstb.so). Only the PNG and BMP decoders are built. Files are read into memory
 * by us (size-capped, plain or gzip as everything in data/), so stb's stdio layer is left
 * out. stb_image keeps its last failure reason in a thread-local variable; it is read
 * right after the failing call.
 */
#include "image.h"

#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>

#include "dataset.h"
#include "fileio.h"

#define STB_IMAGE_IMPLEMENTATION
#define STB_IMAGE_STATIC
#define STBI_ONLY_PNG
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
    /* stb reads a chunk whenever its 8-byte header is there, CRC or not: so does this walk
     * (fuzz_image: crashes/image/png_empty_idat_last_no_crc.png ends in an empty IDAT with
     * a cut CRC, which a walk over whole chunks kept) */
    while (len - in >= 8) {
        const size_t n = (size_t)b[in] << 24 | (size_t)b[in + 1] << 16 | (size_t)b[in + 2] << 8 | b[in + 3];
        if (n > len - in - 8) break;
        const size_t whole = len - in - 8 - n >= 4 ? 12 + n : len - in; /* a short CRC: the rest */
        if (!(n == 0 && memcmp(b + in + 4, "IDAT", 4) == 0)) {
            memmove(b + out, b + in, whole);
            out += whole;
        }
        in += whole;
    }
    memmove(b + out, b + in, len - in);
    return out + (len - in);
}

/* Whether every chunk of a PNG lies inside the file. stb_image allocates a chunk's
 * claimed length before it reads it, so a 700-byte file claiming a 2 GiB IDAT made it
 * allocate 2 GiB (fuzz_image, crashes/image/png_chunk_length_huge.png). Not a PNG: true. */
static bool png_chunks_fit(const unsigned char *b, size_t len) {
    static const unsigned char SIG[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (len < 8 || memcmp(b, SIG, 8) != 0) return true;
    /* stb reads a chunk's 8-byte header whenever 8 bytes remain, and allocates an IDAT's
     * claim before reading it: even the last, CRC-less chunk must fit (fuzz_image:
     * crashes/image/png_last_chunk_header_truncated.png claimed 1.7 GB in 85 bytes). */
    for (size_t in = 8; len - in >= 8;) {
        const size_t n = (size_t)b[in] << 24 | (size_t)b[in + 1] << 16 | (size_t)b[in + 2] << 8 | b[in + 3];
        const size_t room = len - in - 8;
        if (n > room) return false;
        if (room - n < 4) break; /* no CRC: stb reads zeros past the end and stops */
        in += 12 + n;
    }
    return true;
}

/* Whether the file is a JPEG as stb_image reads markers: 0xFF, any number of 0xFF fill
 * bytes, then SOI (0xD8). */
static bool is_jpeg(const unsigned char *b, size_t len) {
    if (len < 2 || b[0] != 0xFF) return false;
    size_t p = 1;
    while (p < len && b[p] == 0xFF) p++;
    return p < len && b[p] == 0xD8;
}

typedef struct jpeg_fail {
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
    int warnings;
} jpeg_fail;

static void jpeg_error_exit(j_common_ptr c) {
    jpeg_fail *f = (jpeg_fail *)c->err;
    (*c->err->format_message)(c, f->msg);
    longjmp(f->jump, 1);
}

/* Warnings (level -1) are corrupt data libjpeg would decode anyway: the first is kept. */
static void jpeg_emit(j_common_ptr c, int level) {
    jpeg_fail *f = (jpeg_fail *)c->err;
    if (level < 0 && f->warnings++ == 0) (*c->err->format_message)(c, f->msg);
}

/* A JPEG into interleaved (H, W, channels) bytes (malloc'ed), gray or RGB. */
static qat_status jpeg_decode(const unsigned char *b, size_t len, int channels, const char *path,
                              unsigned char **out, int *w, int *h, qat_error *err) {
    struct jpeg_decompress_struct d;
    jpeg_fail f = {.warnings = 0};
    unsigned char *volatile img = NULL;
    volatile int refused = 0; /* 1: too large, 2: CMYK, 3: no memory */
    d.err = jpeg_std_error(&f.mgr);
    f.mgr.error_exit = jpeg_error_exit;
    f.mgr.emit_message = jpeg_emit;
    if (setjmp(f.jump)) {
        jpeg_destroy_decompress(&d);
        free(img);
        return qat_error_set(err, QAT_STATUS_FORMAT, "%s: cannot decode: corrupt JPEG (libjpeg: %s)", path, f.msg);
    }
    jpeg_create_decompress(&d);
    jpeg_mem_src(&d, b, (unsigned long)len);
    jpeg_read_header(&d, TRUE);
    if (d.image_width < 1 || d.image_height < 1 || d.image_width > QAT_DATA_MAX_IMAGE_SIDE ||
        d.image_height > QAT_DATA_MAX_IMAGE_SIDE)
        refused = 1;
    else if (d.jpeg_color_space == JCS_CMYK || d.jpeg_color_space == JCS_YCCK)
        refused = 2;
    if (!refused) {
        d.out_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
        jpeg_start_decompress(&d);
        const size_t row = (size_t)d.output_width * (size_t)d.output_components;
        img = malloc(row * d.output_height);
        if (!img) refused = 3;
        while (img && d.output_scanline < d.output_height) {
            JSAMPROW r = img + (size_t)d.output_scanline * row;
            jpeg_read_scanlines(&d, &r, 1);
        }
        if (img) jpeg_finish_decompress(&d);
    }
    *w = (int)d.image_width;
    *h = (int)d.image_height;
    jpeg_destroy_decompress(&d);
    if (refused == 1)
        return qat_error_set(err, QAT_STATUS_FORMAT,
                             "%s: image too large: %dx%d (width x height), the limit is %d pixels per side "
                             "(QAT_DATA_MAX_IMAGE_SIDE)",
                             path, *w, *h, QAT_DATA_MAX_IMAGE_SIDE);
    if (refused == 2)
        return qat_error_set(err, QAT_STATUS_FORMAT, "%s: a CMYK JPEG: only gray and color (YCbCr, RGB) JPEGs are read",
                             path);
    if (refused == 3) return qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
    if (f.warnings) {
        free(img);
        return qat_error_set(err, QAT_STATUS_FORMAT, "%s: cannot decode: corrupt JPEG data (libjpeg: %s)", path, f.msg);
    }
    *out = img;
    return QAT_STATUS_OK;
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
    if (!png_chunks_fit((const unsigned char *)file, len)) {
        free(file);
        return qat_error_set(err, QAT_STATUS_FORMAT,
                             "%s: cannot decode: truncated or corrupt PNG (a chunk claims more bytes than the file holds)",
                             path);
    }
    len = png_drop_empty_idat((unsigned char *)file, len);
    int w = 0, h = 0, comp = 0;
    unsigned char *hwc = NULL;
    if (is_jpeg((const unsigned char *)file, len)) {
        s = jpeg_decode((const unsigned char *)file, len, channels, path, &hwc, &w, &h, err);
        free(file);
        if (s) return s;
    } else {
        const stbi_uc *bytes = (const stbi_uc *)file;
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
        hwc = stbi_load_from_memory(bytes, (int)len, &w, &h, &comp, channels);
        free(file);
        if (!hwc)
            return qat_error_set(err, QAT_STATUS_FORMAT,
                                 "%s: cannot decode: corrupt or truncated image data (stb_image: "
                                 "%s)",
                                 path, stbi_failure_reason());
    }
    /* interleaved (H, W, C) -> planes (C, H, W), then to the wanted size */
    size_t plane = (size_t)w * (size_t)h;
    uint8_t *chw = (h == height && w == width) ? out : malloc(plane * (size_t)channels);
    if (!chw) {
        free(hwc); /* stbi_image_free is free */
        return qat_error_set(err, QAT_STATUS_NOMEM, "%s: out of memory", path);
    }
    for (int c = 0; c < channels; c++)
        for (size_t p = 0; p < plane; p++) chw[(size_t)c * plane + p] = hwc[p * (size_t)channels + (size_t)c];
    free(hwc); /* stbi_image_free is free (STBI_FREE defaults to it) */
    if (chw != out) {
        s = qat_image_resize(out, height, width, chw, h, w, channels, err);
        free(chw);
    }
    return s;
}
