/* fuzz_tiff.c — libFuzzer target for the TIFF reader (src/io/tiff.c, libtiff underneath):
 * the page count, the first page and, for stacks, a later page. */
#include "fuzz_common.h"
#include "io/image_formats.h"

static void load_page(unet_ctx *ctx, const char *path, int page) {
    unet_image info, img;
    unet_status si = unet__tiff_load(ctx, path, page, false, &info);
    unet_status sl = unet__tiff_load(ctx, path, page, true, &img);
    fuzz_check_info_load(ctx, si, &info, sl, &img, path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    unet_ctx *ctx = fuzz_ctx();
    char path[64];
    fuzz_file(data, size, path);
    int pages = 0;
    unet_status s = unet__tiff_pages(ctx, path, &pages);
    if (s != UNET_STATUS_OK) fuzz_check_failure(ctx, s, path);
    else if (pages < 1) abort();
    load_page(ctx, path, 0);
    if (s == UNET_STATUS_OK && pages > 1) load_page(ctx, path, pages < 4 ? pages - 1 : 3);
    return 0;
}
