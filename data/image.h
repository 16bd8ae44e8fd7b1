/* image.h - decode one image file to the model's channels and size; resize planes.
 *
 * qat_image_load reads a PNG, JPEG or BMP file (stb_image), converts it to 1 or 3
 * channels and resizes it to height x width, writing uint8 (C, H, W) planes. It is what
 * qat_dataset_load_folder runs on every file; call it directly to prepare one image for
 * a trained model.
 *
 * Channels (stb_image's conversion, done before resizing):
 *   RGB -> gray:  Y = (77 R + 150 G + 29 B) >> 8, the ITU-R BT.601 luma weights 0.299,
 *                 0.587, 0.114 in 8-bit fixed point (a colour JPEG already stores that
 *                 luma as its Y channel, and the decoder returns it directly);
 *   gray -> RGB:  the gray value replicated into R, G and B;
 *   alpha:        dropped (not composited over a background): an RGBA pixel keeps its
 *                 R, G, B as stored, a gray+alpha pixel its gray value.
 * 16-bit PNGs are reduced to 8 bits, palettes expanded.
 *
 * Resizing (qat_image_resize) is separable, one axis at a time, each axis on its own:
 *   enlarging or keeping the size: bilinear interpolation with pixel centres aligned as
 *     in PyTorch's interpolate(mode="bilinear", align_corners=False): output pixel o
 *     samples input coordinate (o + 0.5) * in/out - 0.5, clamped to the edge pixels;
 *     the same size is therefore an exact copy;
 *   shrinking: area averaging (a box filter, OpenCV's INTER_AREA): output pixel o is the
 *     mean of input interval [o, o + 1) * in/out, partial pixels weighted by coverage;
 *     no aliasing, and a whole-number factor is the plain block mean.
 * Sums are in double; the result is rounded to nearest (halves up) and clamped to
 * 0..255.
 *
 * Limits: files of at most QAT_DATA_MAX_IMAGE_FILE bytes, images of at most
 * QAT_DATA_MAX_IMAGE_SIDE pixels per side (checked from the header, before decoding).
 */
#ifndef QAT_IMAGE_H
#define QAT_IMAGE_H

#include <stdint.h>

#include "autograd/common.h"

/* Decodes `path` into out, (channels, height, width) uint8. channels: 1 or 3; height and
 * width: 1..QAT_DATA_MAX_IMAGE_SIDE. A FORMAT error names the file and what is wrong
 * (undecodable, too large), an IO error a file that cannot be read. */
qat_status qat_image_load(uint8_t *out, const char *path, int channels, int height,
                          int width, qat_error *err);

/* Resizes `channels` planes: in is (channels, in_h, in_w), out is (channels, out_h,
 * out_w), both uint8. All sizes >= 1. NOMEM (only) if scratch cannot be allocated. */
qat_status qat_image_resize(uint8_t *out, int out_h, int out_w, const uint8_t *in, int in_h,
                            int in_w, int channels, qat_error *err);

#endif
