/* fuzz_checkpoint.c — libFuzzer target for model loading (src/io/checkpoint.c): the
 * architecture from metadata or inferred from tensor names, every tensor checked against it,
 * as a plain model and as a resumable training checkpoint.  A model that loads runs one
 * forward pass on a small input, so a loaded model is also a usable one. */
#include "fuzz_common.h"
#include "io/checkpoint.h"

static void run_model(unet_ctx *ctx, unet_model *m) {
    const unet_config *c = unet_model_config(m);
    int size = 0, oh = 0, ow = 0;
    if (unet_model_round_size(ctx, m, 8, &size) != UNET_STATUS_OK || size > 64) return;
    if (unet_model_output_size(ctx, m, size, size, &oh, &ow) != UNET_STATUS_OK) return;
    float *x = calloc((size_t)c->in_channels * size * size, sizeof *x);
    float *y = calloc((size_t)c->classes * oh * ow + 1, sizeof *y);
    if (x && y) (void)unet_model_forward(ctx, m, x, 1, size, size, y);
    free(x);
    free(y);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    unet_ctx *ctx = fuzz_ctx();
    for (int training = 0; training < 2; training++) {
        unet_model *m = NULL;
        unet_status s =
            unet__model_load_mem(ctx, "fuzz.safetensors", data, size, training, NULL, NULL, &m);
        if (s != UNET_STATUS_OK) {
            fuzz_check_failure(ctx, s, "fuzz.safetensors");
            if (m) abort();
            continue;
        }
        if (!training) run_model(ctx, m);
        unet_model_free(m);
    }
    return 0;
}
