/* cmd_export.c — unet export: a model as ONNX, or as a bioimage.io model package.
 *
 *     unet export --onnx FILE.onnx MODEL [--probabilities]
 *     unet export --bioimageio DIR|FILE.zip MODEL --sample IMAGE [description options]
 *
 * Both may be given at once.  The writers are the library's (unet_export_onnx,
 * unet_export_bioimageio); docs/export.md says what the files hold and what they cannot.
 */
#include "cli/cli.h"

#include <string.h>

int cmd_export(int argc, char **argv) {
    const char *onnx = NULL, *bio = NULL;
    bool probabilities = false, no_checkpoint = false;
    unet_bioimageio_opts bo = unet_bioimageio_defaults();
    const struct cli_option opts[] = {
        {"--onnx", CLI_STR, &onnx, "FILE.onnx", .help = "write the model as ONNX (opset 13)"},
        {"--probabilities", CLI_FLAG, &probabilities, NULL,
         .help = "ONNX output: softmax probabilities instead of logits"},
        {"--bioimageio", CLI_STR, &bio, "PATH",
         .help = "write a bioimage.io package: folder or .zip"},
        {"--sample", CLI_STR, &bo.sample, "IMAGE",
         .help = "bioimage.io: test input and cover (required)"},
        {"--name", CLI_STR, &bo.name, "TEXT", .help = "bioimage.io: model name (5-128 characters)"},
        {"--description", CLI_STR, &bo.description, "TEXT",
         .help = "bioimage.io: one-paragraph summary"},
        /* The library's defaults (unet_bioimageio_defaults), named in the help. */
        {"--authors", CLI_STR, &bo.authors, "'A; B'", .help = "bioimage.io: authors (unknown)"},
        {"--license", CLI_STR, &bo.license, "SPDX", .help = "bioimage.io: license (CC-BY-4.0)"},
        {"--training-data", CLI_STR, &bo.training_data, "TEXT",
         .help = "bioimage.io: README's data"},
        {"--training-command", CLI_STR, &bo.training_command, "CMD",
         .help = "bioimage.io: README's command"},
        {"--no-checkpoint", CLI_FLAG, &no_checkpoint, NULL,
         .help = "bioimage.io: leave model.safetensors out of the package"},
    };
    const struct cli_command cmd = {
        "export", "(--onnx FILE.onnx | --bioimageio DIR|FILE.zip --sample IMAGE) MODEL", opts,
        CLI_COUNT(opts)};
    const char *pos[1];
    int npos = 0;
    if (!cli_options_parse(&cmd, argc, argv, pos, 1, &npos)) return CLI_EXIT_USAGE;
    if (npos != 1 || (!onnx && !bio)) {
        cli_error("export: give the model and --onnx FILE and/or --bioimageio DIR (see unet export "
                  "--help)");
        return CLI_EXIT_USAGE;
    }
    if (bio && !bo.sample) {
        cli_error("export: --bioimageio needs --sample IMAGE (the package's test input and cover)");
        return CLI_EXIT_USAGE;
    }
    bo.checkpoint = !no_checkpoint;
    unet_ctx *ctx = unet_ctx_create();
    if (!ctx) return CLI_EXIT_FAIL;
    unet_model *m = NULL;
    unet_status s = unet_model_load(ctx, pos[0], &m);
    if (s == UNET_STATUS_OK && onnx) {
        s = unet_export_onnx(ctx, m, onnx,
                             probabilities ? UNET_OUTPUT_PROBABILITIES : UNET_OUTPUT_LOGITS);
        if (s == UNET_STATUS_OK) fprintf(stderr, "unet: wrote %s\n", onnx);
    }
    if (s == UNET_STATUS_OK && bio) {
        s = unet_export_bioimageio(ctx, m, bio, &bo);
        if (s == UNET_STATUS_OK) fprintf(stderr, "unet: wrote the bioimage.io package %s\n", bio);
    }
    if (s != UNET_STATUS_OK) cli_lib_error(ctx, s);
    unet_model_free(m);
    unet_ctx_free(ctx);
    return s == UNET_STATUS_OK ? 0 : s == UNET_STATUS_ARG ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
}
