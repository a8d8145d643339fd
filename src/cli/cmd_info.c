/* cmd_info.c — unet info: what a model (or an architecture) is, and what it costs. */
#include "cli/cli.h"

#include <stdlib.h>
#include <string.h>

int cmd_info(int argc, char **argv) {
    const char *arch_name, *size;
    int base, depth, classes, in_channels;
    bool bilinear = false, valid = false, conv_bias = false, no_bn = false, params = false;
    const struct cli_option opts[] = {
        {"--size", CLI_STR, &size, "HxW", .help = "image size for FLOPs and memory",
         .def = "512x512"},
        {"--arch", CLI_STR, &arch_name, "NAME", .help = "unet, unet-paper, fcn32s, fcn16s, fcn8s",
         .def = "unet"},
        {"--base", CLI_INT, &base, "N", .help = "channels of the first level", .def = "64"},
        {"--depth", CLI_INT, &depth, "N", .help = "pooling steps", .def = "4"},
        {"--classes", CLI_INT, &classes, "K", .help = "classes", .def = "2"},
        {"--in-channels", CLI_INT, &in_channels, "C", .help = "input channels", .def = "1"},
        {"--bilinear", CLI_FLAG, &bilinear, NULL, .help = "bilinear upsampling"},
        {"--valid", CLI_FLAG, &valid, NULL, .help = "valid convolutions"},
        {"--conv-bias", CLI_FLAG, &conv_bias, NULL, .help = "biases in the 3x3 convolutions"},
        {"--no-batchnorm", CLI_FLAG, &no_bn, NULL, .help = "no BatchNorm"},
        {"--params", CLI_FLAG, &params, NULL,
         .help = "list the checkpoint's tensors (names and shapes)"},
    };
    const struct cli_command cmd = {"info", "[MODEL.safetensors] [--size HxW] [architecture "
                                            "options]",
                                    opts, CLI_COUNT(opts)};
    const char *pos[1];
    int npos = 0;
    if (!cli_options_parse(&cmd, argc, argv, pos, 1, &npos)) return CLI_EXIT_USAGE;
    unet_ctx *ctx = unet_ctx_create();
    unet_model *m = NULL;
    unet_status s;
    if (npos == 1) {
        s = unet_model_load(ctx, pos[0], &m);
    } else {
        unet_arch arch = UNET_ARCH_UNET;
        s = unet_arch_parse(ctx, arch_name, &arch);
        if (s == UNET_STATUS_OK) {
            unet_config c = unet_config_default(arch);
            c.base = base, c.classes = classes, c.in_channels = in_channels;
            if (arch == UNET_ARCH_UNET || arch == UNET_ARCH_UNET_PAPER) c.depth = depth;
            if (bilinear) c.up = UNET_UP_BILINEAR;
            if (valid) c.padding = 0;
            if (conv_bias) c.conv_bias = 1;
            if (no_bn) c.batchnorm = 0;
            s = unet_model_create(ctx, &c, 1, &m);
        }
    }
    if (s != UNET_STATUS_OK) {
        cli_lib_error(ctx, s);
        unet_ctx_free(ctx);
        return s == UNET_STATUS_ARG ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
    }
    const unet_config *c = unet_model_config(m);
    int h, w;
    if (!cli_parse_size(size, &h, &w)) {
        unet_model_free(m);
        unet_ctx_free(ctx);
        return CLI_EXIT_USAGE;
    }
    bool unet = c->arch == UNET_ARCH_UNET || c->arch == UNET_ARCH_UNET_PAPER;
    printf("architecture   %s%s\n", unet_arch_name(c->arch),
           c->arch == UNET_ARCH_UNET ? " (milesial/Pytorch-UNet layout)" : "");
    printf("channels       in %d, classes %d, base %d%s\n", c->in_channels, c->classes, c->base,
           unet ? "" : " (VGG blocks)");
    if (unet) {
        printf("depth          %d (%d pooling step%s, %d channels at the bottom)\n", c->depth,
               c->depth, c->depth == 1 ? "" : "s", c->base << c->depth);
        printf("layers         3x3 convs %s padding%s%s, %s upsampling%s\n",
               c->padding ? "same" : "valid (no)", c->batchnorm ? " + BatchNorm" : "",
               c->conv_bias ? " with bias" : "",
               c->up == UNET_UP_BILINEAR ? "bilinear" : "2x2 transposed-conv",
               c->dropout > 0 ? ", dropout at the end of the contracting path" : "");
    }
    printf("parameters     %zu\n", unet_model_param_count(m));
    const char *selected = unet_model_meta(m, "selected");
    if (selected) printf("selected       %s (the model unet train kept)\n", selected);
    int axis;
    const char *channels;
    char an[8];
    unet_model_input(m, &axis, &channels);
    if (axis != UNET_CHANNEL_AXIS_AUTO || channels)   /* docs/images.md */
        printf("layout         --channel-axis %s --channels %s (predict applies them)\n",
               unet_channel_axis_name(axis, an), channels ? channels : "all");
    int r = h;
    int oh, ow;
    if (unet_model_round_size(ctx, m, h, &r) == UNET_STATUS_OK && r != h)
        printf("note           %dx%d is not a valid input; using the next valid size %d\n", h, w, r);
    int rw = w;
    unet_model_round_size(ctx, m, w, &rw);
    h = r, w = rw;
    s = unet_model_output_size(ctx, m, h, w, &oh, &ow);
    if (s == UNET_STATUS_OK) {
        double flops = 0;
        size_t act = 0;
        unet_model_cost(ctx, m, 1, h, w, &flops, &act);
        printf("input          %dx%d -> output %dx%d\n", h, w, oh, ow);
        printf("forward        %.1f GFLOP (multiply-adds x 2) at %dx%d\n", flops / 1e9, h, w);
        printf("memory         %.0f MiB of activations and scratch planned for inference at %dx%d\n",
               (double)act / (1 << 20), h, w);
    } else {
        cli_lib_error(ctx, s); /* the rest is still printed; the exit status says it failed */
    }
    if (c->padding == 0 && unet) {
        int first = 0, sizes[8], k = 0;
        unet_model_round_size(ctx, m, 1, &first);
        int next = first;
        while (k < 6 && unet_model_round_size(ctx, m, next, &sizes[k]) == UNET_STATUS_OK) {
            next = sizes[k] + 1;
            k++;
        }
        if (k >= 3) {
            int step = sizes[1] - sizes[0], o0 = 0, tmp;
            unet_model_output_size(ctx, m, sizes[0], sizes[0], &o0, &tmp);
            printf("valid tiles    %d, %d, %d, ... (every %d; output = input - %d)\n", sizes[0],
                   sizes[1], sizes[2], step, sizes[0] - o0);
        }
    }
    if (params) {
        printf("\ntensors (PyTorch state_dict order; * = not trained)\n");
        for (int i = 0; i < unet_model_tensors(m); i++) {
            const char *name;
            int nd, tr;
            int64_t sh[4];
            unet_model_tensor(m, i, &name, &nd, sh, &tr);
            char shape[96] = "()";
            int k = 0;
            for (int d = 0; d < nd; d++)
                k += snprintf(shape + k, sizeof shape - (size_t)k, "%s%lld", d ? ", " : "(",
                              (long long)sh[d]);
            if (nd) snprintf(shape + k, sizeof shape - (size_t)k, nd == 1 ? ",)" : ")");
            printf("  %-52s %-22s%s\n", name, shape, tr ? "" : " *");
        }
    }
    unet_model_free(m);
    unet_ctx_free(ctx);
    return s == UNET_STATUS_OK ? 0 : CLI_EXIT_FAIL;
}
