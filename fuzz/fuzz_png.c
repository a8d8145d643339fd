/* fuzz_png.c — libFuzzer target for the PNG reader (src/io/png.c, libpng underneath). */
#include "fuzz_common.h"
#include "io/image_formats.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    unet_ctx *ctx = fuzz_ctx();
    char path[64];
    fuzz_file(data, size, path);
    unet_image img;
    unet_status s = unet__png_load(ctx, path, &img);
    if (s == UNET_STATUS_OK) {
        fuzz_use_image(ctx, &img);
        unet_image_free(&img);
    } else {
        fuzz_check_failure(ctx, s, path);
        if (img.data) abort(); /* *out is zeroed on failure */
    }
    return 0;
}
