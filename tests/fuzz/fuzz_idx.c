/* fuzz_idx.c - IDX images and labels, plain and gzip. The input holds both files: a
 * 2-byte little-endian length L, then L bytes of the images file, then the labels file.
 * Promise: the same two files gzip-compressed load to the same result (both refused, or
 * the same samples, labels and classes), unless a file is gzip already (the loader
 * decompresses once). */
#include "fuzz_util.h"

#include <stdbool.h>
#include <zlib.h>

#include "data/dataset.h"

/* gzip of n bytes into a new buffer (*out_len bytes); NULL on failure. */
static uint8_t *gzip(const uint8_t *x, size_t n, size_t *out_len) {
    z_stream z = {0};
    if (deflateInit2(&z, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK) return NULL;
    size_t cap = deflateBound(&z, (uLong)n) + 32;
    uint8_t *out = malloc(cap);
    if (!out) {
        deflateEnd(&z);
        return NULL;
    }
    z.next_in = (Bytef *)(uintptr_t)x;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    int r = deflate(&z, Z_FINISH);
    *out_len = cap - z.avail_out;
    deflateEnd(&z);
    if (r != Z_STREAM_END) {
        free(out);
        return NULL;
    }
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    size_t L = (size_t)data[0] | (size_t)data[1] << 8;
    data += 2, size -= 2;
    if (L > size) L = size;
    const char *img = strdup(fuzz_write("images.idx", data, L));
    const char *lab = strdup(fuzz_write("labels.idx", data + L, size - L));
    qat_dataset a = {0}, b = {0};
    qat_error err = {0};
    qat_status sa = qat_dataset_load_idx(&a, img, lab, 0, &err);
    size_t gi_n = 0, gl_n = 0;
    uint8_t *gi = gzip(data, L, &gi_n), *gl = gzip(data + L, size - L, &gl_n);
    const bool gz_already = (L >= 2 && data[0] == 0x1f && data[1] == 0x8b) ||
                            (size - L >= 2 && data[L] == 0x1f && data[L + 1] == 0x8b);
    if (gi && gl && !gz_already) {
        char *gimg = strdup(fuzz_write("images.idx.gz", gi, gi_n));
        const char *glab = fuzz_write("labels.idx.gz", gl, gl_n);
        qat_status sb = qat_dataset_load_idx(&b, gimg, glab, 0, &err);
        FUZZ_CHECK((sa == QAT_STATUS_OK) == (sb == QAT_STATUS_OK), "plain %d, gzip %d: %s", (int)sa, (int)sb, err.msg);
        if (sa == QAT_STATUS_OK) {
            FUZZ_CHECK(a.n == b.n && a.h == b.h && a.w == b.w && a.n_classes == b.n_classes, "gzip: other shape");
            FUZZ_CHECK(!memcmp(a.pixels, b.pixels, (size_t)a.n * (size_t)a.dim) &&
                           !memcmp(a.labels, b.labels, (size_t)a.n * sizeof *a.labels),
                       "gzip: other samples");
        }
        free(gimg);
    }
    free(gi);
    free(gl);
    qat_dataset_free(&a);
    qat_dataset_free(&b);
    free((void *)img);
    free((void *)lab);
    return 0;
}
