/* fuzz_npy.c — libFuzzer target for the .npy reader (src/io/npy.c): the whole loader on the
 * input as a file, and the header parser on the raw bytes. */
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
    unet_image info, img;
    unet_status si = unet__npy_load(ctx, path, false, &info);
    unet_status sl = unet__npy_load(ctx, path, true, &img);
    fuzz_check_info_load(ctx, si, &info, sl, &img, path);
    return 0;
}
