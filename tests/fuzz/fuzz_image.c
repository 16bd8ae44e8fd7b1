/* fuzz_image.c - PNG, JPEG and BMP through stb_image and the resize, as the folder
 * loader reads each file: gray 28x28 and colour 32x32. */
#include "fuzz_util.h"

#include "data/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = fuzz_write("in.img", data, size);
    uint8_t out[3 * 32 * 32];
    qat_error err = {0};
    qat_image_load(out, p, 1, 28, 28, &err);
    qat_image_load(out, p, 3, 32, 32, &err);
    return 0;
}
