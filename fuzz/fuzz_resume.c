/* fuzz_resume.c — libFuzzer target for resumable checkpoints (docs/robustness.md): a file that
 * loads as one (unet__model_load_mem as a training checkpoint, every metadata pair handed to
 * the caller) must then train.  Two steps from the restored optimizer state on a small batch:
 * the step counter and Adam's bias correction come from the file (a counter near INT64_MAX
 * used to overflow and end in an assertion).  Checked: a step that succeeds has a finite loss,
 * one that fails says why, and the counter stays within 0..UNET_MAX_STEPS and never goes
 * backwards. */
#include "fuzz_common.h"
#include "io/checkpoint.h"

#include <math.h>

static void on_meta(const char *key, const char *value, void *user) {
    /* Both strings are read (ASan checks they are valid) as the CLI's parser would. */
    *(size_t *)user += strlen(key) + strlen(value);
}

static void train(unet_ctx *ctx, unet_model *m) {
    const unet_config *c = unet_model_config(m);
    int tile = 0, oh = 0, ow = 0;
    if (unet_model_round_size(ctx, m, 8, &tile) != UNET_STATUS_OK || tile > 64) return;
    if (unet_model_output_size(ctx, m, tile, tile, &oh, &ow) != UNET_STATUS_OK) return;
    /* Two images: batch-norm needs more than one value per channel. */
    float *x = calloc((size_t)2 * c->in_channels * tile * tile, sizeof *x);
    int32_t *t = calloc((size_t)2 * oh * ow, sizeof *t);
    for (size_t i = 0; x && i < (size_t)2 * c->in_channels * tile * tile; i++)
        x[i] = (float)(i % 7) / 7.0f;
    for (size_t i = 0; t && i < (size_t)2 * oh * ow; i++) t[i] = (int32_t)(i / 3 % 2);
    unet_optim o = unet_optim_default(UNET_OPTIM_ADAM);
    const long before = unet_train_steps(m);
    for (int k = 0; x && t && k < 2; k++) {
        double L = 0;
        unet_status s = unet_train_step(ctx, m, &o, UNET_LOSS_CE, x, t, NULL, 2, tile, tile, &L);
        if (s == UNET_STATUS_OK && !isfinite(L)) abort();
        if (s != UNET_STATUS_OK) {
            if (!unet_ctx_errmsg(ctx)[0]) abort();
            break;
        }
    }
    const long after = unet_train_steps(m);
    if (after < before || after > UNET_MAX_STEPS) abort();
    free(x);
    free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    unet_ctx *ctx = fuzz_ctx();
    unet_model *m = NULL;
    size_t seen = 0;
    unet_status s =
        unet__model_load_mem(ctx, "fuzz.safetensors", data, size, true, on_meta, &seen, &m);
    if (s != UNET_STATUS_OK) {
        fuzz_check_failure(ctx, s, "fuzz.safetensors");
        if (m) abort();
        return 0;
    }
    if (unet_train_steps(m) < 0 || unet_train_steps(m) > UNET_MAX_STEPS) abort();
    train(ctx, m);
    unet_model_free(m);
    return 0;
}
