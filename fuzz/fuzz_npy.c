/* fuzz_npy.c — libFuzzer target for the .npy reader (src/io/npy.c): the whole loader on the
 * input as a file under every channel axis (the rule, none: a stack, and each index), its
 * page count and last page, and the header parser on the raw bytes. */
#include "fuzz_common.h"
#include "io/image_formats.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    unet_ctx *ctx = fuzz_ctx();
    struct unet__npy_header h;
    char err[128];
    if (unet__npy_parse_header((const char *)data, size, &h, err, sizeof err)) {
        if (h.ndim < 0 || h.ndim > UNET__NPY_MAX_DIMS || strlen(h.descr) >= sizeof h.descr) abort();
        for (int i = 0; i < h.ndim; i++)
            if (h.shape[i] < 0) abort();
    } else if (!err[0]) {
        abort();
    }
    char path[64];
    fuzz_file(data, size, path);
    static const int axes[] = {UNET_CHANNEL_AXIS_AUTO, UNET_CHANNEL_AXIS_NONE, 0, 1, 2, -1};
    for (size_t a = 0; a < sizeof axes / sizeof axes[0]; a++) {
        int pages = 0;
        unet_status s = unet__npy_pages(ctx, path, axes[a], &pages);
        if (s != UNET_STATUS_OK) fuzz_check_failure(ctx, s, path);
        else if (pages < 1) abort();
        int last = s == UNET_STATUS_OK ? pages - 1 : 0;
        for (int page = 0; page <= last; page += last > 0 ? last : 1) {
            unet_image info, img;
            unet_status si = unet__npy_load(ctx, path, page, axes[a], false, &info);
            unet_status sl = unet__npy_load(ctx, path, page, axes[a], true, &img);
            fuzz_check_info_load(ctx, si, &info, sl, &img, path);
        }
        /* A page past the end is an argument error, never a crash. */
        unet_image img;
        if (s == UNET_STATUS_OK && unet__npy_load(ctx, path, pages, axes[a], true, &img) ==
                                       UNET_STATUS_OK)
            abort();
    }
    return 0;
}
