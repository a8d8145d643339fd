/* segment.c — the smallest complete program on libunet: load a trained model, segment one
 * image of any size, write its mask.  It is the example at the top of include/unet.h, made to
 * compile and run (`make` builds it as build/examples/segment; tests/test_cli.c checks that its
 * mask equals `unet predict`'s).  Only the public header is used.
 *
 *     build/examples/segment MODEL.safetensors IMAGE OUT.png
 *
 * The mask is 0/255 for a two-class model (foreground white) and class ids for more classes,
 * as `unet predict` writes it.  Build your own the same way:
 *
 *     cc -Iinclude my.c build/libunet.a -fopenmp -lopenblas -lpng -ltiff -lcjson -lm -lpthread
 */
#include <stdio.h>
#include <stdlib.h>

#include "unet.h"

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODEL.safetensors IMAGE OUT.png\n", argv[0]);
        return 2;
    }
    const char *model_path = argv[1], *image_path = argv[2], *out_path = argv[3];
    int rc = 1;
    unet_ctx *ctx = unet_ctx_create();
    unet_model *m = NULL;
    unet_image img = {0}, mask = {0};
    float *x = NULL, *prob = NULL;
    int32_t *labels = NULL;
    if (!ctx) {
        fprintf(stderr, "segment: out of memory\n");
        return 1;
    }
    if (unet_model_load(ctx, model_path, &m) != UNET_STATUS_OK ||
        unet_image_load(ctx, image_path, 0, &img) != UNET_STATUS_OK)
        goto fail; /* the message names the file and the problem */

    const unet_config *cfg = unet_model_config(m);
    const int K = cfg->classes;
    if (img.c != cfg->in_channels) {
        fprintf(stderr, "segment: %s has %d channels; the model takes %d\n", image_path, img.c,
                cfg->in_channels);
        goto done;
    }
    const size_t P = (size_t)img.h * (size_t)img.w;
    x = malloc(sizeof(float) * (size_t)img.c * P);
    prob = malloc(sizeof(float) * (size_t)K * P);
    labels = malloc(sizeof(int32_t) * P);
    if (!x || !prob || !labels) {
        fprintf(stderr, "segment: out of memory for a %dx%d image\n", img.w, img.h);
        goto done;
    }

    /* 8-bit /255, 16-bit by percentiles; then overlapping tiles with mirrored borders when the
     * image is large, one pass otherwise. */
    unet_predict_opts po = unet_predict_defaults();
    if (unet_image_to_float(ctx, &img, UNET_NORM_AUTO, x) != UNET_STATUS_OK ||
        unet_predict(ctx, m, x, img.h, img.w, &po, prob, NULL, NULL) != UNET_STATUS_OK)
        goto fail;
    unet_argmax(prob, K, img.h, img.w, po.output, labels); /* class id per pixel */

    if (unet_image_alloc(ctx, &mask, img.w, img.h, 1, UNET_DTYPE_U8) != UNET_STATUS_OK) goto fail;
    uint8_t *out = mask.data;
    for (size_t i = 0; i < P; i++)
        out[i] = (uint8_t)(K <= 2 ? (labels[i] ? 255 : 0) : labels[i]);
    if (unet_image_save(ctx, out_path, &mask) != UNET_STATUS_OK) goto fail;
    printf("%s: %dx%d, %d classes -> %s\n", image_path, img.w, img.h, K, out_path);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "segment: %s\n", unet_ctx_errmsg(ctx));
done:
    free(x);
    free(prob);
    free(labels);
    unet_image_free(&mask);
    unet_image_free(&img);
    unet_model_free(m);
    unet_ctx_free(ctx);
    return rc;
}
