/* fuzz_image.c — libFuzzer target for unet_image_load and unet_image_pages: the format
 * dispatch by content over all three readers, as the CLI calls them. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    unet_ctx *ctx = fuzz_ctx();
    char path[64];
    fuzz_file(data, size, path);
    int pages = 0;
    unet_status s = unet_image_pages(ctx, path, &pages);
    if (s != UNET_STATUS_OK) fuzz_check_failure(ctx, s, path);
    unet_image info, img;
    unet_status si = unet_image_info(ctx, path, 0, &info);
    s = unet_image_load(ctx, path, 0, &img);
    fuzz_check_info_load(ctx, si, &info, s, &img, path);
    /* A page past the end is an argument error, never a crash. */
    s = unet_image_load(ctx, path, pages > 0 ? pages : 1, &img);
    if (s == UNET_STATUS_OK) abort();
    return 0;
}
