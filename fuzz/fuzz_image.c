/* fuzz_image.c — libFuzzer target for unet_image_load and unet_image_pages: the format
 * dispatch by content over all three readers, as the CLI calls them, with the default layout
 * and with the other channel axes (TIFF pages as channels, .npy stacks) and palette indices;
 * then the channel choices of unet_image_select_channels on what loads. */
#include "fuzz_common.h"

static void channel_choices(unet_ctx *ctx, const unet_image *img, const char *path) {
    static const char *const specs[] = {"gray", "0", "1,0", "2"};
    for (size_t i = 0; i < sizeof specs / sizeof specs[0]; i++) {
        unet_image copy;
        if (unet_image_alloc(ctx, &copy, img->w, img->h, img->c, img->dtype) != UNET_STATUS_OK)
            return;
        memcpy(copy.data, img->data, (size_t)img->w * img->h * img->c * unet_dtype_size(img->dtype));
        int want = 0;
        unet_status sc = unet_channels_count(ctx, specs[i], img->c, path, &want);
        unet_status s = unet_image_select_channels(ctx, &copy, specs[i], path);
        if (s != sc || (s == UNET_STATUS_OK && copy.c != want) ||
            (s != UNET_STATUS_OK && copy.c != img->c))
            abort();
        unet_image_free(&copy);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    unet_ctx *ctx = fuzz_ctx();
    char path[64];
    fuzz_file(data, size, path);
    const unet_image_opts layouts[] = {{UNET_CHANNEL_AXIS_AUTO, 0}, {0, 1},
                                       {UNET_CHANNEL_AXIS_NONE, 0}};
    for (size_t l = 0; l < sizeof layouts / sizeof layouts[0]; l++) {
        const unet_image_opts *o = &layouts[l];
        int pages = 0;
        unet_status s = unet_image_pages_with(ctx, path, o, &pages);
        if (s != UNET_STATUS_OK) fuzz_check_failure(ctx, s, path);
        unet_image info, img;
        unet_status si = unet_image_info_with(ctx, path, 0, o, &info);
        s = unet_image_load_with(ctx, path, 0, o, &img);
        if (s == UNET_STATUS_OK && l == 0) channel_choices(ctx, &img, path);
        fuzz_check_info_load(ctx, si, &info, s, &img, path);
        /* A page past the end is an argument error, never a crash.  (When the count fails, as
         * for a TIFF whose directory chain breaks after its last readable page, the pages
         * before the break may still load one by one: no page is known to be past the end.) */
        s = unet_image_load_with(ctx, path, pages > 0 ? pages : 1, o, &img);
        if (s == UNET_STATUS_OK && pages > 0) abort();
        if (s == UNET_STATUS_OK) unet_image_free(&img);
    }
    return 0;
}
