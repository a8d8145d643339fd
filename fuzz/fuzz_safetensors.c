/* fuzz_safetensors.c — libFuzzer target for the safetensors parser (src/io/safetensors.c, the
 * JSON header through cJSON): parse from memory, then touch every tensor's data the way the
 * loaders do (conversion to float64, float32 with the stored shape, int64). */
#include "fuzz_common.h"
#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    unet_ctx *ctx = fuzz_ctx();
    unsigned char *buf = malloc(size + 1);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    struct unet__safetensors *st = NULL;
    unet_status s = unet__st_parse(ctx, "fuzz.safetensors", buf, size, &st);
    if (s != UNET_STATUS_OK) {
        fuzz_check_failure(ctx, s, "fuzz.safetensors");
        return 0;
    }
    for (int i = 0; i < st->count; i++) {
        const struct unet__st_tensor *t = &st->tensors[i];
        if (unet__st_find(st, t->name) != t) abort();
        size_t n = unet__st_numel(t);
        if (n * unet__dtype_size(t->dtype) != t->nbytes ||
            t->offset + t->nbytes > st->size - st->data_start)
            abort();
        double *d = malloc((n ? n : 1) * sizeof *d);
        float *f = malloc((n ? n : 1) * sizeof *f);
        int64_t *k = malloc((n ? n : 1) * sizeof *k);
        if (d) unet__st_to_f64(st, t, d);
        if (k) unet__st_to_i64(st, t, k);
        if (f) (void)unet__st_read_f32(ctx, st, t->name, t->shape, t->ndim, f);
        free(d);
        free(f);
        free(k);
    }
    (void)unet__st_meta(st, "arch");
    unet__st_close(st);
    return 0;
}
