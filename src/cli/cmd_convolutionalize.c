/* cmd_convolutionalize.c — unet convolutionalize: a VGG classifier becomes an FCN.
 *
 * The fully connected layers are rewritten as convolutions with the same numbers (fc6 as a 7x7
 * convolution, fc7 and fc8 as 1x1), so the network takes any image size and returns a map of
 * class scores (Long et al. 2015, section 3.1).  See unet_convolutionalize in include/unet.h.
 */
#include "cli/cli.h"

#include <string.h>

int cmd_convolutionalize(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *arch_name;
    int classes, padding, learn_final_up = 0;
    bool learn = false;
    const struct cli_option opts[] = {
        {"--in", CLI_STR, &in, "CLASSIFIER",
         .help = "VGG classifier (.safetensors: conv1_1..conv5_3, fc6-8)"},
        {"--out", CLI_STR, &out, "FCN", .help = "the FCN checkpoint to write"},
        {"--arch", CLI_STR, &arch_name, "NAME", .help = "fcn32s, fcn16s or fcn8s", .def = "fcn32s"},
        {"--classes", CLI_INT, &classes, "K",
         .help = "classes: 0 = the classifier's, other: a new score layer", .def = "0"},
        {"--padding", CLI_INT, &padding, "P",
         .help = "conv1_1 padding: 100 (any size, the reference) or 1", .def = "100"},
        {"--learn-final-up", CLI_FLAG, &learn, NULL,
         .help = "make the last deconvolution trainable"},
    };
    const struct cli_command cmd = {"convolutionalize", "--in CLASSIFIER --out FCN [options]", opts,
                                    CLI_COUNT(opts)};
    if (!cli_options_parse(&cmd, argc, argv, NULL, 0, NULL)) return CLI_EXIT_USAGE;
    if (!in || !out) {
        cli_error("convolutionalize: --in and --out are required");
        return CLI_EXIT_USAGE;
    }
    learn_final_up = learn;
    const char *const outs[2] = {out, NULL}, *const roles[2] = {"--out", NULL};
    int grc = cli_guard_io(in, "--in", outs, roles);
    if (grc) return grc;
    unet_ctx *ctx = unet_ctx_create();
    unet_arch arch;
    unet_status s = unet_arch_parse(ctx, arch_name, &arch);
    if (s == UNET_STATUS_OK && arch < UNET_ARCH_FCN32S) {
        cli_error("--arch: convolutionalize makes an FCN (fcn32s, fcn16s or fcn8s), not %s",
                  arch_name);
        unet_ctx_free(ctx);
        return CLI_EXIT_USAGE;
    }
    int rc = 0;
    if (s == UNET_STATUS_OK) {
        unet_config c = unet_config_default(arch);
        c.classes = classes;
        c.padding = padding;
        c.learn_final_up = learn_final_up;
        s = unet_convolutionalize(ctx, in, &c, out);
    }
    if (s != UNET_STATUS_OK) {
        cli_lib_error(ctx, s);
        rc = s == UNET_STATUS_ARG ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
    } else {
        fprintf(stderr, "unet: wrote %s (%s)\n", out, arch_name);
    }
    unet_ctx_free(ctx);
    return rc;
}
