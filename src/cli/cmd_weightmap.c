/* cmd_weightmap.c — unet weightmap: the paper's border weight map of one mask. */
#include "cli/cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int cmd_weightmap(int argc, char **argv) {
    const char *mask_path = NULL, *out_path = NULL, *png = NULL;
    float w0, sigma;
    int wc_index;
    static const unet_wc wcs[] = {UNET_WC_BALANCE, UNET_WC_NONE}; /* --wc's words */
    const struct cli_option opts[] = {
        {"--mask", CLI_STR, &mask_path, "FILE", .help = "instance label image or binary mask"},
        {"--output", CLI_STR, &out_path, "FILE", .help = "the weight map (.tif or .npy, float32)"},
        {"--w0", CLI_FLOAT, &w0, "W", .help = "border weight", .def = "10"},
        {"--sigma", CLI_FLOAT, &sigma, "S", .help = "border width in pixels", .def = "5"},
        {"--wc", CLI_CHOICE, &wc_index, "balance|none", .help = "class-balancing term",
         .def = "balance"},
        {"--png", CLI_STR, &png, "FILE",
         .help = "also an 8-bit picture of the map (scaled to its max)"},
    };
    const struct cli_command cmd = {"weightmap", "--mask FILE --output FILE.tif|FILE.npy [options]",
                                    opts, CLI_COUNT(opts)};
    if (!cli_options_parse(&cmd, argc, argv, NULL, 0, NULL)) return CLI_EXIT_USAGE;
    if (!mask_path || !out_path) {
        cli_error("weightmap: --mask and --output are required");
        return CLI_EXIT_USAGE;
    }
    unet_wc wc = wcs[wc_index];
    const char *const outs[2] = {out_path, png}, *const roles[2] = {"--output", "--png"};
    int grc = cli_guard_io(mask_path, "--mask", outs, roles);
    if (grc) return grc;
    unet_ctx *ctx = unet_ctx_create();
    unet_image m = {0}, out = {0}, pic = {0};
    int32_t *labels = NULL;
    int rc = CLI_EXIT_FAIL;
    const unet_image_opts mask = {UNET_CHANNEL_AXIS_AUTO, 1}; /* palette PNGs: their indices */
    unet_status s = unet_image_load_with(ctx, mask_path, 0, &mask, &m);
    if (s != UNET_STATUS_OK) goto fail;
    if (m.c != 1) {
        cli_error("%s: a mask has one channel, this image has %d", mask_path, m.c);
        goto done;
    }
    size_t P = (size_t)m.h * m.w;
    labels = malloc(sizeof(int32_t) * P);
    s = labels ? unet_image_alloc(ctx, &out, m.w, m.h, 1, UNET_DTYPE_F32) : UNET_STATUS_NOMEM;
    if (s != UNET_STATUS_OK) goto fail;
    int instances = 0;
    s = unet_mask_labels(ctx, &m, mask_path, labels, &instances);
    if (s != UNET_STATUS_OK) goto fail;
    s = unet_weightmap(ctx, labels, m.h, m.w, instances, w0, sigma, wc, out.data);
    if (s != UNET_STATUS_OK) goto fail;
    s = unet_image_save(ctx, out_path, &out);
    if (s != UNET_STATUS_OK) goto fail;
    if (png) {
        const float *wm = out.data;
        float mx = 0;
        for (size_t i = 0; i < P; i++) mx = wm[i] > mx ? wm[i] : mx;
        s = unet_image_alloc(ctx, &pic, m.w, m.h, 1, UNET_DTYPE_U8);
        if (s != UNET_STATUS_OK) goto fail;
        for (size_t i = 0; i < P; i++)
            ((uint8_t *)pic.data)[i] = (uint8_t)lrintf(mx > 0 ? 255.0f * wm[i] / mx : 0.0f);
        s = unet_image_save(ctx, png, &pic);
        if (s != UNET_STATUS_OK) goto fail;
    }
    fprintf(stderr, "unet: wrote %s (%dx%d, %s, w0 %g, sigma %g)\n", out_path, m.w, m.h,
            instances ? "instance labels" : "binary mask split into components", (double)w0,
            (double)sigma);
    rc = 0;
    goto done;
fail:
    cli_lib_error(ctx, s);
    if (s == UNET_STATUS_ARG) rc = CLI_EXIT_USAGE;
done:
    free(labels);
    unet_image_free(&m);
    unet_image_free(&out);
    unet_image_free(&pic);
    unet_ctx_free(ctx);
    return rc;
}
