/* unet.h — U-Net and FCN image segmentation in C11: the whole public API.
 *
 * unet trains and runs segmentation networks (U-Net, Ronneberger et al. 2015, and its parent
 * FCN, Long et al. 2015) on a CPU with a C compiler, OpenBLAS, libpng, libtiff and cJSON.
 * Checkpoints are safetensors files with PyTorch's parameter names, so models move both ways
 * with PyTorch (milesial/Pytorch-UNet's state_dict for the seed architecture).
 *
 * Conventions
 *   - Every function that can fail returns a unet_status; on failure the detail is in
 *     unet_ctx_errmsg(ctx) ("down2.conv1.weight: expected (128, 64, 3, 3), got ...").
 *     The library never exits, aborts or prints; progress goes to a callback you set.
 *   - Whoever creates frees: unet_*_create / unet_*_load pair with unet_*_free (NULL-safe).
 *   - Tensors are float32 NCHW, contiguous.  Weights use PyTorch layouts:
 *     Conv2d (C_out, C_in, kH, kW), ConvTranspose2d (C_in, C_out, kH, kW).
 *   - A unet_ctx carries the thread count and the last error.  It is not shared between
 *     threads; two threads with two contexts and two models share no mutable state.
 *
 * Example: segment one image with a trained model
 *
 *     unet_ctx *ctx = unet_ctx_create();
 *     unet_model *m = NULL;
 *     unet_image img = {0};
 *     if (unet_model_load(ctx, "model.safetensors", &m) != UNET_STATUS_OK ||
 *         unet_image_load(ctx, "cells.tif", 0, &img) != UNET_STATUS_OK) {
 *         fprintf(stderr, "error: %s\n", unet_ctx_errmsg(ctx));
 *         return 1;
 *     }
 *     unsigned char *mask = malloc((size_t)img.h * img.w);
 *     unet_predict_opts po = unet_predict_defaults();
 *     if (unet_predict(ctx, m, &img, &po, mask, NULL) != UNET_STATUS_OK) ...
 *     unet_image_free(&img);
 *     unet_model_free(m);
 *     unet_ctx_free(ctx);
 */
#ifndef UNET_H
#define UNET_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define UNET_VERSION "0.1.0"

/* ---------------------------------------------------------------------------------------
 * Status and context
 * ------------------------------------------------------------------------------------- */

typedef enum unet_status {
    UNET_STATUS_OK = 0,
    UNET_STATUS_NOMEM,      /* an allocation failed or a size overflowed */
    UNET_STATUS_IO,         /* a file could not be opened, read or written */
    UNET_STATUS_FORMAT,     /* file content does not match its header or specification */
    UNET_STATUS_SHAPE,      /* tensor shapes do not fit together */
    UNET_STATUS_ARG,        /* an argument is out of range or NULL */
    UNET_STATUS_NUMERIC,    /* NaN or Inf in a loss, gradient or weight */
    UNET_STATUS_INTERRUPTED /* stopped on request (a callback returned non-zero) */
} unet_status;

typedef struct unet_ctx unet_ctx;

/* Static description of a status ("shape mismatch"), never NULL. */
const char *unet_status_str(unet_status s);

/* Creates a context with the default thread count (OpenMP's, or UNET_THREADS).
 * Returns NULL only when out of memory. */
unet_ctx *unet_ctx_create(void);
void unet_ctx_free(unet_ctx *ctx);

/* Detail of the last failure on this context; "" when none.  Valid until the next call. */
const char *unet_ctx_errmsg(const unet_ctx *ctx);

/* Threads used by calls made with this context (>= 1).  Results do not depend on it. */
unet_status unet_ctx_set_threads(unet_ctx *ctx, int threads);
int unet_ctx_threads(const unet_ctx *ctx);

/* Largest image (width * height) a loader accepts before allocating; default 2^28 pixels.
 * Protects against absurd header sizes in corrupt files. */
void unet_ctx_set_max_pixels(unet_ctx *ctx, uint64_t max_pixels);
uint64_t unet_ctx_max_pixels(const unet_ctx *ctx);

#ifdef __cplusplus
}
#endif
#endif /* UNET_H */
