/* fuzz_png.c — libFuzzer target for the PNG reader (src/io/png.c, libpng underneath): a
 * palette image as its colours and as its indices (masks). */
#include "fuzz_common.h"
#include "io/image_formats.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    unet_ctx *ctx = fuzz_ctx();
    char path[64];
    fuzz_file(data, size, path);
    for (int indices = 0; indices < 2; indices++) {
        unet_image info, img;
        unet_status si = unet__png_load(ctx, path, indices, false, &info);
        unet_status sl = unet__png_load(ctx, path, indices, true, &img);
        fuzz_check_info_load(ctx, si, &info, sl, &img, path);
    }
    return 0;
}
