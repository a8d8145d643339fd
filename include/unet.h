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
 * Example: segment one image with a trained model (examples/segment.c is this example as a
 * complete program; `make` builds it and a test checks its mask against `unet predict`'s)
 *
 *     unet_ctx *ctx = unet_ctx_create();
 *     unet_model *m = NULL;
 *     unet_image img = {0};
 *     if (unet_model_load(ctx, "model.safetensors", &m) != UNET_STATUS_OK ||
 *         unet_image_load(ctx, "cells.tif", 0, &img) != UNET_STATUS_OK) {
 *         fprintf(stderr, "error: %s\n", unet_ctx_errmsg(ctx));
 *         return 1;
 *     }
 *     int K = unet_model_config(m)->classes;
 *     float *x = malloc(sizeof(float) * img.c * img.h * img.w);
 *     float *prob = malloc(sizeof(float) * K * img.h * img.w);
 *     int32_t *mask = malloc(sizeof(int32_t) * img.h * img.w);
 *     unet_predict_opts po = unet_predict_defaults();      // whole image, tiles when large
 *     if (unet_image_to_float(ctx, &img, UNET_NORM_AUTO, x) != UNET_STATUS_OK ||
 *         unet_predict(ctx, m, x, img.h, img.w, &po, prob, NULL, NULL) != UNET_STATUS_OK) ...
 *     unet_argmax(prob, K, img.h, img.w, po.output, mask);  // class id per pixel
 *     free(x), free(prob), free(mask);
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
/* Largest decoded image (width * height * channels * bytes per sample) a loader allocates;
 * default 2^32 bytes (4 GiB).  Besides this budget, a loader refuses an image that its file
 * cannot hold: uncompressed TIFF strips and .npy data must be there byte for byte, deflate,
 * LZW and PackBits data cannot expand beyond their codec's largest ratio; only codecs without
 * such a bound (JPEG, ZSTD, LZMA, ...) rely on the budget alone. */
void unet_ctx_set_max_image_bytes(unet_ctx *ctx, uint64_t bytes);
uint64_t unet_ctx_max_image_bytes(const unet_ctx *ctx);

/* ---------------------------------------------------------------------------------------
 * Models
 * ------------------------------------------------------------------------------------- */

typedef enum unet_arch {
    UNET_ARCH_UNET = 0,     /* the seed's U-Net: milesial/Pytorch-UNet (same padding + BatchNorm) */
    UNET_ARCH_UNET_PAPER,   /* Ronneberger et al. 2015: valid convs, no BatchNorm, crop + concat */
    UNET_ARCH_FCN32S,       /* Long et al. 2015 on a VGG-style backbone */
    UNET_ARCH_FCN16S,
    UNET_ARCH_FCN8S
} unet_arch;

typedef enum unet_up {
    UNET_UP_TRANSPOSE = 0,  /* ConvTranspose2d(k2, s2), halving channels */
    UNET_UP_BILINEAR        /* bilinear x2 (align_corners) with the halving moved into the convs */
} unet_up;

typedef enum unet_init {
    UNET_INIT_PYTORCH = 0,  /* PyTorch's defaults: kaiming_uniform(a=sqrt(5)), BN weight 1 bias 0 */
    UNET_INIT_HE            /* the paper's: N(0, sqrt(2 / (k*k*C_in))), biases 0 */
} unet_init;

typedef struct unet_config {
    unet_arch arch;
    int       in_channels;  /* 1 */
    int       classes;      /* 2 (1 = a single sigmoid output) */
    int       base;         /* channels of the first level: 64 */
    int       depth;        /* pooling steps: 4 */
    unet_up   up;
    int       conv_bias;    /* 1: 3x3 convs have a bias (0 before BatchNorm, as milesial) */
    int       batchnorm;    /* 1: conv -> BN -> ReLU; 0: conv -> ReLU */
    int       padding;      /* 3x3 conv padding: 1 = same, 0 = valid (the paper's); FCN: conv1_1's
                             * padding (100, the reference's; 1 = plain VGG) */
    float     dropout;      /* p of the dropout at the end of the contracting path (0 = none);
                             * FCN: after fc6 and fc7 (0.5) */
    unet_init init;
    /* FCN only (U-Net ignores them): */
    int       fc_channels;  /* width of fc6 and fc7; 0 = 64 * base (4096 for base 64, VGG16's) */
    int       learn_final_up; /* 0: the last upsampling is fixed bilinear (the paper, a buffer in
                               * the checkpoint); 1: initialised bilinear and learned */
} unet_config;

typedef struct unet_model unet_model;

/* "unet", "unet-paper", "fcn32s", "fcn16s", "fcn8s" and back. */
const char *unet_arch_name(unet_arch arch);
unet_status unet_arch_parse(unet_ctx *ctx, const char *name, unet_arch *out);

/* The defaults of an architecture: UNET = milesial (base 64, depth 4, transposed up-conv,
 * no conv bias, BatchNorm, same padding); UNET_PAPER = valid convs with bias, no BatchNorm,
 * dropout 0.5, He init; FCN32S/16S/8S = the reference's VGG16 FCN (base 64, fc 4096, conv1_1
 * padding 100, dropout 0.5, fixed final upsampling; docs/fcn.md). */
unet_config unet_config_default(unet_arch arch);
/* Checks a configuration; the message names the bad field. */
unet_status unet_config_check(unet_ctx *ctx, const unet_config *cfg);

/* Creates a model with freshly initialised parameters (deterministic for a seed). */
unet_status unet_model_create(unet_ctx *ctx, const unet_config *cfg, uint64_t seed, unet_model **out);
/* Loads a safetensors checkpoint.  The architecture comes from the file's __metadata__, or, for
 * a checkpoint converted from PyTorch, is inferred from the tensor names and shapes.  Every
 * tensor is checked against the architecture (names, shapes, dtypes), so a wrong or truncated
 * file fails with a message naming the tensor. */
unet_status unet_model_load(unet_ctx *ctx, const char *path, unet_model **out);
/* Writes the parameters (PyTorch state_dict names) and the architecture metadata, atomically. */
unet_status unet_model_save(unet_ctx *ctx, const unet_model *m, const char *path);
void unet_model_free(unet_model *m);

const unet_config *unet_model_config(const unet_model *m);
/* The checkpoint's tensors in PyTorch's state_dict order: their number, and tensor i's name,
 * dimensions and shape; *trainable is 0 for running statistics, counters and frozen weights. */
int unet_model_tensors(const unet_model *m);
unet_status unet_model_tensor(const unet_model *m, int i, const char **name, int *ndim,
                              int64_t shape[4], int *trainable);
size_t unet_model_param_count(const unet_model *m);      /* trainable parameters */
/* Output size for an input of h x w (smaller than the input for valid convolutions). */
unet_status unet_model_output_size(unet_ctx *ctx, const unet_model *m, int h, int w, int *out_h,
                                   int *out_w);
/* Multiply-adds x 2 of one forward pass at n x h x w (convolutions only), and the bytes of
 * the arena an inference plan at that size allocates (unet_model_prepare with training 0:
 * the activations alive at once, each convolution's scratch, the pools' argmax buffer), for
 * the thread count set now. */
unet_status unet_model_cost(unet_ctx *ctx, const unet_model *m, int n, int h, int w,
                            double *flops, size_t *act_bytes);

/* Plans memory for batches of n images of h x w, for inference or training.  Called by the
 * functions below when the size changes; call it once up front to fail early. */
unet_status unet_model_prepare(unet_ctx *ctx, unet_model *m, int n, int h, int w, int training);

/* Logits (n, classes, out_h, out_w) of x (n, in_channels, h, w), inference mode. */
unet_status unet_model_forward(unet_ctx *ctx, unet_model *m, const float *x, int n, int h, int w,
                               float *logits);

/* The precision of the convolutions' products, for inference and training alike.  FP32 (the
 * default): float32 throughout.  BF16: the products of the 3x3 convolutions (by Winograd:
 * forward, input and weight gradient) and of the 2x2 up-convolutions take operands rounded to
 * bfloat16 (8 significant bits) and sum them in float32, with the AVX512_BF16 dot-product
 * instructions; everything else stays float32: the transforms around the products, batch-norm,
 * the losses, the weights (master copy), gradients and optimizer state.  On a CPU without
 * AVX512_BF16 (or with UNET_CPU set below avx512bf16) a BF16 model runs FP32.  Accuracy and
 * speed on this project's data: docs/performance.md. */
typedef enum unet_precision {
    UNET_PRECISION_FP32 = 0,
    UNET_PRECISION_BF16
} unet_precision;

unet_status unet_model_set_precision(unet_ctx *ctx, unet_model *m, unet_precision p);
unet_precision unet_model_precision(const unet_model *m);  /* as set */
/* 1 when this CPU runs p as asked (FP32 always; BF16 with AVX512_BF16), 0 when p falls back. */
int unet_precision_native(unet_precision p);
/* "fp32", "bf16" and back (UNET_STATUS_ARG naming the word otherwise). */
const char *unet_precision_name(unet_precision p);
unet_status unet_precision_parse(unet_ctx *ctx, const char *name, unet_precision *out);

/* The inference cache, on by default: each Winograd convolution's transformed weights and
 * each folded batch-norm, made by the first inference forward and kept while the weights and
 * the precision do not change (inference about 1.13x faster at 512x512).  Its price is memory:
 * unet_model_cache_bytes, about 4x the 3x3 convolutions' weights in FP32 and 2x in BF16 (the
 * seed U-Net: 430 MB beside its 124 MB of weights).  unet_model_set_cache(m, 0) frees it and
 * every forward transforms the weights in the call, as training always does; 1 turns it back
 * on.  The results are the same bits either way.  Not thread-safe with a forward on m. */
void unet_model_set_cache(unet_model *m, int on);
int unet_model_cache(const unet_model *m);            /* 1 when on */
/* The bytes the cache holds once every entry is made, at m's precision on this CPU (an upper
 * bound: 0 for a NULL model). */
uint64_t unet_model_cache_bytes(const unet_model *m);

/* Convolutionalization (FCN, Long et al. 2015, section 3.1; docs/fcn.md): turns a VGG-style
 * classifier checkpoint into an FCN checkpoint.  The classifier (safetensors) holds
 * conv1_1 .. conv5_3 (weight and bias, with the FCN's names and shapes) and the Linear layers
 * fc6 (F, 8 base * 7 * 7) on the flattened (C, 7, 7) pool5 features, fc7 (F, F) and fc8 (K, F),
 * each with a bias.  fc6 becomes a 7x7 convolution (F, 8 base, 7, 7), fc7 and fc8 1x1
 * convolutions, fc8 as score_fr: the same numbers in a new shape, so the FCN computes the
 * classifier's head at every 7x7 window of pool5 (a 32-pixel stride).  in_channels, base and
 * fc_channels come from the classifier; from cfg the arch, padding (1 = the classifier's own:
 * a 224x224 image then gives its logits as a 1x1 score_fr map), dropout and learn_final_up.
 * cfg->classes 0 or K: fc8 becomes score_fr; any other count discards fc8 and starts score_fr
 * at zero (the paper's new class-score layer).  The score_pool layers of 16s/8s start at zero,
 * the deconvolutions bilinear.  Writes fcn_path atomically; a classifier tensor that is
 * missing, misshapen or unexpected is UNET_STATUS_FORMAT naming it. */
unet_status unet_convolutionalize(unet_ctx *ctx, const char *classifier_path,
                                  const unet_config *cfg, const char *fcn_path);

/* The smallest input size >= size that the network accepts as a tile side: a multiple of
 * 2^depth for the seed U-Net; for valid convolutions every max-pool must see an even size and
 * the output must not vanish (16k + 60 at depth 4: 188, 204, ..., 572); any size for FCN. */
unet_status unet_model_round_size(unet_ctx *ctx, const unet_model *m, int size, int *rounded);

/* ---------------------------------------------------------------------------------------
 * Prediction: images of any size, the overlap-tile strategy
 * ------------------------------------------------------------------------------------- */

typedef enum unet_output {
    UNET_OUTPUT_PROBABILITIES = 0,  /* softmax over classes (sigmoid for 1 class) */
    UNET_OUTPUT_LOGITS
} unet_output;

typedef struct unet_predict_opts {
    int         tile;       /* input tile side; 0 = one tile for the whole image up to max_tile.
                             * An image that fits in one tile is always one pass (of the
                             * smallest valid size that holds it), whatever tile says. */
    int         max_tile;   /* largest automatic tile side (default 1024) */
    int         overlap;    /* output pixels shared by neighbouring tiles (same-padding nets; the
                             * tile's outer overlap/2 pixels are discarded). Default 64. */
    int         tta;        /* 0, or average over the 8 flips/rotations of the image */
    int         batch;      /* tiles per forward pass (default 1) */
    unet_output output;
} unet_predict_opts;

unet_predict_opts unet_predict_defaults(void);

/* Segments one image (channels, h, w) of any size into out (classes, h, w): probabilities or
 * logits.  The paper's overlap-tile strategy: the image is covered by output tiles, each
 * computed from an input window that carries the context border, and context beyond the image
 * edge is the mirrored image.  With valid convolutions tiles join without seams (the result
 * equals one pass over the mirrored image); with same padding each tile's outer overlap/2 pixels
 * are discarded.  `progress` (may be NULL) is called after each batch of tiles with (done,
 * total, user); a non-zero return stops with UNET_STATUS_INTERRUPTED.  A NaN or Inf in image
 * is UNET_STATUS_NUMERIC naming the channel and pixel (it would spread silently through every
 * convolution that sees it); so is an output with no finite value at all (the network
 * overflowed).  Some non-finite outputs are not an error: count them with
 * unet_count_nonfinite. */
typedef int (*unet_progress_fn)(int done, int total, void *user);
unet_status unet_predict(unet_ctx *ctx, unet_model *m, const float *image, int h, int w,
                         const unet_predict_opts *opts, float *out, unet_progress_fn progress,
                         void *user);
/* The number of NaN and infinite values among x[0..n). */
size_t unet_count_nonfinite(const float *x, size_t n);

/* Logits (classes, h, w) to probabilities in place: softmax over classes (sigmoid for 1). */
unet_status unet_probabilities(unet_ctx *ctx, float *out, int classes, int h, int w);

/* The most probable class per pixel of out (classes, h, w) from unet_predict (for 1 class:
 * probability or logit above the 0.5 / 0 threshold). */
void unet_argmax(const float *out, int classes, int h, int w, unet_output kind, int32_t *labels);

/* An RGB picture (3, h, w) of a gray image (h, w, values in [0, 1]) with the outline of every
 * predicted region drawn in colour (class 1 yellow, 2 cyan, 3 magenta, ...). */
unet_status unet_overlay(unet_ctx *ctx, const float *gray, const int32_t *labels, int h, int w,
                         uint8_t *rgb);

/* ---------------------------------------------------------------------------------------
 * Training
 * ------------------------------------------------------------------------------------- */

typedef enum unet_loss_kind {
    UNET_LOSS_CE = 0,       /* softmax cross entropy (sigmoid BCE for 1 class) */
    UNET_LOSS_CE_DICE,      /* CE + soft Dice, as milesial's trainer */
    UNET_LOSS_DICE,
    UNET_LOSS_WCE           /* CE weighted per pixel by a weight map (the paper's Eq. 1) */
} unet_loss_kind;

typedef enum unet_optim_kind {
    UNET_OPTIM_SGD = 0,
    UNET_OPTIM_ADAM,
    UNET_OPTIM_ADAMW
} unet_optim_kind;

/* Hyperparameters are doubles, like the Python numbers PyTorch computes its updates from (0.9,
 * not the float 0.899999976), so runs agree with PyTorch to the bit. */
typedef struct unet_optim {
    unet_optim_kind kind;
    double          lr;
    double          momentum;       /* SGD */
    int             nesterov;       /* SGD */
    double          weight_decay;
    double          beta1, beta2;   /* Adam */
    double          eps;            /* Adam */
} unet_optim;

/* PyTorch's defaults for each optimizer (lr 0.01 SGD, 0.001 Adam). */
unet_optim unet_optim_default(unet_optim_kind kind);

/* One training step on a batch: forward in training mode (batch statistics, dropout), loss,
 * backward, optimizer update.  x (n, in_channels, h, w); target (n, out_h, out_w) class ids
 * 0..classes-1 (0/1 for one class; anything else is UNET_STATUS_ARG), -1 = ignored; weight (n, out_h, out_w) per-pixel loss weights or NULL.  *loss_out gets the
 * loss before the update.  A non-finite loss or gradient returns UNET_STATUS_NUMERIC and leaves
 * the parameters unchanged. */
unet_status unet_train_step(unet_ctx *ctx, unet_model *m, const unet_optim *opt,
                            unet_loss_kind loss, const float *x, const int32_t *target,
                            const float *weight, int n, int h, int w, double *loss_out);
/* Loss of a batch in inference mode (validation), no update. */
unet_status unet_eval_loss(unet_ctx *ctx, unet_model *m, unet_loss_kind loss, const float *x,
                           const int32_t *target, const float *weight, int n, int h, int w,
                           double *loss_out);
/* Optimizer steps taken with the current optimizer state.  A resumable checkpoint restores it
 * with the moments; the first step after a plain load starts fresh moments at step 1. */
long unet_train_steps(const unet_model *m);
/* The most steps a model's counter (and a checkpoint's train_steps) may hold: 2^40, decades of
 * training at any speed, far from where step arithmetic could overflow.  A checkpoint beyond
 * it is UNET_STATUS_FORMAT; a step past it UNET_STATUS_ARG. */
#define UNET_MAX_STEPS ((long)1 << 40)

/* A resumable training checkpoint: the model exactly as unet_model_save writes it, plus the
 * optimizer state over the flat parameter block ("optimizer.exp_avg", "optimizer.exp_avg_sq";
 * SGD's momentum buffer is exp_avg), the dropout generator, and the caller's metadata pairs
 * (meta: key, value, key, value; n_meta pairs), e.g. the data position.  One file, written
 * atomically, so a crash never leaves a model and a state that do not belong together.
 * unet_model_load reads such a file as a plain model (the optimizer tensors are skipped). */
unet_status unet_model_save_training(unet_ctx *ctx, const unet_model *m, const char *path,
                                     const char *const *meta, int n_meta);
/* Loads a resumable checkpoint; meta_fn (may be NULL) receives every metadata pair. */
typedef void (*unet_meta_fn)(const char *key, const char *value, void *user);
unet_status unet_model_load_training(unet_ctx *ctx, const char *path, unet_model **out,
                                     unet_meta_fn meta_fn, void *user);
/* Whether path is a checkpoint unet wrote (a safetensors file whose metadata says format=unet),
 * reading only its header: *is_unet = 1 or 0.  A file that cannot be opened or is not a
 * regular file is UNET_STATUS_IO; anything else that is not such a checkpoint is OK with 0. */
unet_status unet_model_probe(unet_ctx *ctx, const char *path, int *is_unet);

/* ---------------------------------------------------------------------------------------
 * Images and masks: PNG (libpng), TIFF (libtiff, multi-page stacks) and NumPy .npy
 * ------------------------------------------------------------------------------------- */

typedef enum unet_dtype {
    UNET_DTYPE_U8 = 1,
    UNET_DTYPE_U16,
    UNET_DTYPE_I32,
    UNET_DTYPE_F32
} unet_dtype;

/* Samples as stored in the file, planar: c planes of h rows of w samples. */
typedef struct unet_image {
    int        w, h, c;    /* width, height, channels (1 gray, 3 RGB; .npy: any) */
    unet_dtype dtype;
    void      *data;       /* owned; free with unet_image_free */
} unet_image;

/* Size in bytes of one sample of dtype. */
size_t unet_dtype_size(unet_dtype dtype);

/* Allocates a zeroed image.  *img is overwritten (not freed) first; on failure it is zeroed.
 * w, h, c < 1 or an unknown dtype is UNET_STATUS_ARG; a size overflow or failed allocation is
 * UNET_STATUS_NOMEM.  (unet_ctx_max_pixels applies to loaders only.) */
unet_status unet_image_alloc(unet_ctx *ctx, unet_image *img, int w, int h, int c, unet_dtype dtype);
void unet_image_free(unet_image *img);   /* frees data and zeroes *img; NULL-safe */

/* Loads one image.  The format is recognised by content (PNG signature, TIFF header, .npy magic),
 * not by extension.
 *   PNG: 8/16-bit gray, gray+alpha (alpha dropped), RGB(A) (alpha dropped), palette (expanded
 *     to its colours: one gray channel when every entry is gray, else RGB; tRNS ignored),
 *     1/2/4-bit gray (expanded to 0..255), interlaced.
 *   TIFF: 8/16-bit unsigned samples (U8/U16), 32-bit float (F32), 8/16/32-bit signed and 32-bit
 *     unsigned (I32; a value over INT32_MAX is UNET_STATUS_FORMAT); photometric MinIsBlack or
 *     RGB; any samples per pixel up to 16 with trailing alpha extra samples dropped (so 1 or 3
 *     channels for gray(+alpha) and RGB(A)); contiguous or separate planes; strips or tiles;
 *     any compression libtiff decodes; big- or little-endian, BigTIFF.  page selects the
 *     directory of a multi-page stack (0 = first).
 *   .npy (versions 1.0-3.0, C order): '<f4' '<f8' -> F32 (a finite float64 outside the float32
 *     range is UNET_STATUS_FORMAT); '|u1' '|b1' -> U8; '<u2' -> U16; '|i1' '<i2' '<i4' -> I32;
 *     '<u4' '<i8' '<u8' -> I32 when every value fits, else UNET_STATUS_FORMAT; shape (H, W),
 *     (C, H, W) or (H, W, C) by the channel rule below; Fortran order, big-endian and other
 *     dtypes are UNET_STATUS_FORMAT.
 * page < 0, or page beyond the file's images (.npy and PNG have one), is UNET_STATUS_ARG.
 * Images whose w * h is over unet_ctx_max_pixels are refused (UNET_STATUS_FORMAT) before
 * allocating.  A file that cannot be opened or read is UNET_STATUS_IO, bad content
 * UNET_STATUS_FORMAT; messages name the file.  On failure *out is zeroed.  Nothing is printed
 * (libpng and libtiff messages go into the context's message). */
unet_status unet_image_load(unet_ctx *ctx, const char *path, int page, unet_image *out);
/* Number of images in the file (TIFF directories; 1 for PNG and .npy). */
unet_status unet_image_pages(unet_ctx *ctx, const char *path, int *pages);
/* Width, height, channels and dtype of one image, from its header only (info->data is NULL,
 * nothing to free): every check unet_image_load makes before it allocates (the pixel and byte
 * limits, whether the file can hold the image), so a caller can refuse an image, or budget its
 * memory, before decoding it. */
unet_status unet_image_info(unet_ctx *ctx, const char *path, int page, unet_image *info);
/* Saves by extension (case-insensitive): .png (U8 or U16, 1 or 3 channels), .tif/.tiff (any
 * dtype, deflate-compressed; 1 or 3 channels as one gray or RGB page, any other channel count
 * as one gray page per channel), .npy (any dtype: '|u1' '<u2' '<i4' '<f4'; shape (H, W) when
 * c == 1 else (C, H, W)).  Another extension, or a dtype/channel count the format cannot hold,
 * is UNET_STATUS_ARG and writes nothing; a failed write is UNET_STATUS_IO.
 * Atomic: the previous file at path stays intact until the new one is complete. */
unet_status unet_image_save(unet_ctx *ctx, const char *path, const unet_image *img);
/* Every file unet writes (images, models, checkpoints) goes to a temporary TARGET.tmp.PID.XXXXXX
 * beside it, which is renamed over TARGET once complete; the writer holds a flock on it.  A
 * process killed mid-write (kill -9) leaves its temporary.  This removes the temporaries of
 * path (a file name), or all temporaries in path (a directory), whose writer is gone: no
 * process with that id exists and the lock is free.  Returns the number removed. */
int unet_remove_stale_temporaries(const char *path);

/* Channel layouts (docs/images.md#channels).  Where an image's channels are:
 *   PNG: its colour type declares them (gray 1, RGB 3, a palette as its colours, above).
 *   TIFF: samples per pixel are the channels; each page is one image of a stack.
 *   .npy (H, W): one channel.  (A, B, C): channels last, (H, W, C), when C <= 4 and A > C and
 *     B > C (numpy, scikit-image, PIL and tifffile keep colour last); otherwise channels first,
 *     (C, H, W) (unet_image_save's layout, PyTorch's).  A 4-D .npy is refused.
 * channel_axis overrides the rule for the axes a file leaves open:
 *   UNET_CHANNEL_AXIS_AUTO   the rule above;
 *   UNET_CHANNEL_AXIS_NONE   no channel axis: a 3-D .npy (N, H, W) is a stack of N one-channel
 *                            images (pages, as a TIFF's);
 *   0 (-3), 1 (-2), 2 (-1)   the channel axis of a 3-D .npy, counted as numpy does: 0 = first
 *                            (C, H, W), 2 or -1 = last (H, W, C).  For a TIFF, 0 makes its
 *                            pages the channels of one image (their samples in page order; all
 *                            pages of one size and sample type, at most 4096 channels), -1 or 2
 *                            is the default (samples), and 1 is UNET_STATUS_ARG.
 * A 2-D .npy and a PNG have no open axis: any channel_axis reads them as above.
 * palette_indices: a palette PNG gives its indices instead of its colours (one U8 channel):
 * the classes of a mask drawn with a colour table (PASCAL VOC's masks, PIL mode "P"). */
#define UNET_CHANNEL_AXIS_AUTO (-100)
#define UNET_CHANNEL_AXIS_NONE (-101)
typedef struct unet_image_opts {
    int channel_axis;      /* UNET_CHANNEL_AXIS_AUTO */
    int palette_indices;   /* 0 */
} unet_image_opts;
unet_image_opts unet_image_defaults(void);
/* unet_image_load, unet_image_info and unet_image_pages under opts (NULL: the defaults, which
 * those three use); the page count depends on the layout (NONE splits a 3-D .npy, 0 joins a
 * TIFF's pages). */
unet_status unet_image_load_with(unet_ctx *ctx, const char *path, int page,
                                 const unet_image_opts *opts, unet_image *out);
unet_status unet_image_info_with(unet_ctx *ctx, const char *path, int page,
                                 const unet_image_opts *opts, unet_image *info);
unet_status unet_image_pages_with(unet_ctx *ctx, const char *path, const unet_image_opts *opts,
                                  int *pages);
/* The rule on its own, for arrays in memory (the Python package): the channel axis (0..ndim-1)
 * of an array of ndim (2 or 3) dimensions under channel_axis, or -1 when it has none (2-D, or
 * NONE).  An axis outside -ndim..ndim-1 is UNET_STATUS_ARG. */
unet_status unet_channel_axis_of(unet_ctx *ctx, int ndim, const int64_t *shape, int channel_axis,
                                 int *axis);
/* "auto", "none", "first" (0), "last" (-1) or an integer -3..2, and back ("first", "last",
 * "none", "auto" or the integer; buf of 8 bytes). */
unet_status unet_channel_axis_parse(unet_ctx *ctx, const char *text, int *channel_axis);
const char *unet_channel_axis_name(int channel_axis, char buf[8]);

/* Chooses or converts an image's channels, in place, by spec:
 *   "gray"      one channel: the luminance 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601, as PIL's
 *               convert("L"), OpenCV and MATLAB's rgb2gray) of 3 channels; the mean of any
 *               other count; a one-channel image as it is;
 *   "0", "1,2"  these channels (0-based) in this order, at most 64 (repeats allowed);
 *   NULL, "all" every channel as stored.
 * Integer samples are rounded to the nearest (halves away from zero) and stay in their dtype,
 * so an 8-bit image is still normalised as 8-bit; float samples are computed in double.  A
 * malformed spec is UNET_STATUS_ARG; a channel index the image lacks is UNET_STATUS_SHAPE
 * naming `name` (the file) and its channels; on failure img is unchanged. */
unet_status unet_image_select_channels(unet_ctx *ctx, unet_image *img, const char *spec,
                                       const char *name);
/* The channels spec gives an image of c channels (from unet_image_info, before decoding), with
 * the same errors; c 0 checks the spec's syntax only (*out is then the count it fixes, or 0
 * for NULL and "all"). */
unet_status unet_channels_count(unet_ctx *ctx, const char *spec, int c, const char *name,
                                int *out);

/* The input layout a model was trained on: its channel axis (UNET_CHANNEL_AXIS_AUTO when none
 * was given) and channel spec (NULL: all channels as stored).  Saved with every checkpoint
 * (metadata channel_axis and channels, written only when set) and loaded with it; unet predict
 * and the Python package apply it unless told otherwise.  set checks the axis, the spec and
 * that a spec gives the model's in_channels (UNET_STATUS_ARG). */
unet_status unet_model_set_input(unet_ctx *ctx, unet_model *m, int channel_axis,
                                 const char *channels);
void unet_model_input(const unet_model *m, int *channel_axis, const char **channels);

typedef enum unet_norm {
    UNET_NORM_AUTO = 0,    /* 8-bit /255, 16-bit by percentiles, float and int as they are */
    UNET_NORM_PERCENTILE,  /* per channel: (x - p1) / (p99.8 - p1), Cellpose's convention */
    UNET_NORM_MAX,         /* 8-bit /255, 16-bit /65535, float and int as they are */
    UNET_NORM_NONE         /* the stored values as floats */
} unet_norm;

/* Converts img to float32 planar (c, h, w) in out (img->c * h * w floats).
 * Percentiles are numpy.percentile's default (linear interpolation): with the channel's values
 * sorted as v[0..n-1], pos = (n - 1) * q / 100 and p = v[floor(pos)] + frac(pos) *
 * (v[floor(pos) + 1] - v[floor(pos)]).  Float channels use only their finite values for the
 * percentiles (NaN stays NaN).  A flat channel (p99.8 == p1) becomes 0.  Values are not
 * clipped to [0, 1]. */
unet_status unet_image_to_float(unet_ctx *ctx, const unet_image *img, unet_norm norm, float *out);

/* Converts a mask image (1 channel, else UNET_STATUS_FORMAT) to class ids (h * w int32).
 * classes <= 2: every non-zero value is foreground 1 (binary 0/255 masks and instance label
 * images both work); classes > 2: values are class ids and a value >= classes (or < 0) is
 * UNET_STATUS_FORMAT naming `name`, the value and its pixel.  Float masks must hold integers
 * (NaN and 0.5 are UNET_STATUS_FORMAT).  classes outside 1..UNET_MAX_CLASSES is
 * UNET_STATUS_ARG.  On failure out is partly written. */
unet_status unet_mask_to_classes(unet_ctx *ctx, const unet_image *mask, int classes,
                                 const char *name, int32_t *out);

/* The raw values of a one-channel mask as int32 labels (0 = background, other values as
 * stored: instance ids or class ids).  Values must be integers in 0..2^31-1, else
 * UNET_STATUS_FORMAT naming `name`, the pixel and the value.  *instances (may be NULL) is set
 * to 1 when the mask holds more than one distinct non-zero value (an instance label image),
 * else 0 (a binary mask, or empty). */
unet_status unet_mask_labels(unet_ctx *ctx, const unet_image *mask, const char *name,
                             int32_t *labels, int *instances);

/* ---------------------------------------------------------------------------------------
 * Labels and metrics
 * ------------------------------------------------------------------------------------- */

/* Connected components of the pixels where mask[i] == value (4- or 8-connectivity), labelled
 * 1..n in raster order of their first pixel, 0 elsewhere.  *count gets n.  O(h * w) (two raster
 * passes with union-find).  labels may be mask itself (in place).  h, w > 0 and h * w <= INT32_MAX,
 * connectivity 4 or 8, else UNET_STATUS_ARG; on failure labels and *count are untouched. */
unet_status unet_connected_components(unet_ctx *ctx, const int32_t *mask, int h, int w,
                                      int32_t value, int connectivity, int32_t *labels,
                                      int *count);

#define UNET_MAX_CLASSES 64

typedef struct unet_metrics {
    int    classes;
    double pixel_error;                 /* fraction of pixels with the wrong class */
    double iou[UNET_MAX_CLASSES];       /* per class; NaN when the class is absent in both */
    double dice[UNET_MAX_CLASSES];      /*   (and at every index >= classes) */
    double mean_iou, mean_dice;         /* over classes present in truth or prediction */
    double rand_error;                  /* ISBI 2012: 1 - foreground-restricted Rand F-score
                                         * (NaN: no truth foreground) */
    double seg;                         /* Cell Tracking Challenge SEG (NaN: no reference object) */
    double ap50;                        /* TP / (TP + FP + FN) at IoU >= 0.5, one-to-one matching;
                                         * 0 when TP = 0, even with no objects at all (StarDist) */
    int    n_true, n_pred;              /* objects in truth and prediction */
} unet_metrics;

/* Scores a predicted class map against the truth (both h * w class ids in [0, classes)).
 * Instances: truth_inst and pred_inst are instance label images (0 = background, any other
 * value >= 0 is an object; labels need not be consecutive); when NULL they are made from the
 * connected components (4-connectivity) of the foreground class 1 (or every class > 0 merged
 * when classes > 2).  rand_error, seg, ap50 use the instances.  The Rand error is the ISBI 2012
 * challenge's (its Fiji script, at the one threshold the prediction already has): only pixels
 * where the truth is foreground count, each predicted-background pixel among them counts as an
 * object of its own, and pixel pairs are ordered with self-pairs included; it is not
 * skimage.metrics.adapted_rand_error (SNEMI3D), which differs in both points.  SEG: a truth
 * object R scores IoU(R, S) with the predicted object S that covers more than half of R (at
 * most one can), else 0; mean over truth objects.  Per image: averaging over a stack is the caller's choice.
 * Errors: UNET_STATUS_ARG for NULL pred/truth/out, h or w <= 0, h * w > INT32_MAX, classes
 * outside [2, UNET_MAX_CLASSES], a class id outside [0, classes) or a negative instance label
 * (the message names the array and the pixel); UNET_STATUS_NOMEM.  Uses about 42 bytes of
 * scratch per pixel, freed before returning.  *out is written only on success. */
unet_status unet_evaluate(unet_ctx *ctx, const int32_t *pred, const int32_t *truth,
                          const int32_t *pred_inst, const int32_t *truth_inst, int h, int w,
                          int classes, unet_metrics *out);

/* The ISBI 2012 challenge's final scores (Arganda-Carreras et al. 2015, Front. Neuroanat.
 * 9:142), as its Fiji script computes them, of a probability map against the truth; 1 is
 * perfect, the challenge's errors are 1 - V.  At each threshold t the proposal's objects are
 * the 4-connected components of {prob > t} ("cells"; for ISBI prob is the probability of
 * non-membrane, the masks' 255); with thin != 0 (the challenge's "after thinning", its final
 * version) the proposal background is first flooded from the cells by Fiji's watershed
 * (Vincent-Soille, 4-connectivity, its exact visiting order), leaving one-pixel lines where two
 * floods meet.  The truth's objects are the 4-connected components of truth != 0, or with
 * truth_instances != 0 its labels (any ids, a label of several blobs being one object).  Only
 * pixels where the truth is foreground count, and a proposal background pixel among them is an
 * object of its own.  Rand: split = sum c_ij^2 / sum a_i^2 (the truth's pairs kept together),
 * merge = sum c_ij^2 / sum b_j^2 (the proposal's pairs that are right), V_rand their harmonic
 * mean; Info: split = I(T;P) / H(P), merge = I(T;P) / H(T), V_info their harmonic mean
 * (src/metrics.c has the formulas, the edge cases and Fiji's code they follow).  Without
 * thinning V_rand is the foreground-restricted Rand F-score: 1 - unet_evaluate's rand_error
 * when prob is the class map (0/1) and t = 0.  One unet_vscore per threshold, in the order
 * given; the challenge's are unet_vscore_thresholds' (it took the best over them, for the mean
 * over a stack's slices).  No truth foreground: every score NaN.  UNET_STATUS_ARG: NULL
 * pointers, h or w <= 0, h * w > INT32_MAX, n_thresholds < 1, a threshold or prob value not
 * finite, a negative truth label (the message names the pixel); UNET_STATUS_NOMEM.  About 45
 * bytes of scratch per pixel; O(pixels) per threshold. */
#define UNET_VSCORE_THRESHOLDS 11

typedef struct unet_vscore {
    double threshold;
    double v_rand, v_rand_split, v_rand_merge;
    double v_info, v_info_split, v_info_merge;
    int    n_pred;                      /* objects of the proposal (after thinning) */
    /* The challenge's pixel similarity (Fiji's PixelError): over all pixels, positives are
     * truth != 0 and prob > threshold (no thinning); pixel_f = 2 tp / (2 tp + fp + fn), its
     * F-score (0 when tp = 0).  The challenge's pixel error is 1 - the best pixel_f over the
     * thresholds, with tp, fp, fn summed over a stack's slices first. */
    double tp, fp, fn, pixel_f;
} unet_vscore;

/* The challenge's thresholds 0.0, 0.1, ..., 1.0, made as Fiji's loop makes them (t += 0.1, so
 * the fourth is 0.30000000000000004 and the last 0.9999999999999999). */
void unet_vscore_thresholds(double t[UNET_VSCORE_THRESHOLDS]);
unet_status unet_vscores(unet_ctx *ctx, const float *prob, const int32_t *truth,
                         int truth_instances, int h, int w, int thin, const double *thresholds,
                         int n_thresholds, unet_vscore *out);
/* The F-score 2 tp / (2 tp + fp + fn) of pixel counts (0 when tp is 0): unet_vscore.pixel_f,
 * and of counts summed over images (the challenge's stack). */
double unet_pixel_f(double tp, double fp, double fn);

/* ---------------------------------------------------------------------------------------
 * The paper's border weight map and separated-cell targets (Ronneberger et al., Eq. 2, Fig. 3)
 * ------------------------------------------------------------------------------------- */

typedef enum unet_wc {
    UNET_WC_BALANCE = 0,    /* w_c(x) = 1 / (K freq(class of x)), K = classes present (1 or 2):
                             * mean 1 over the image, >= 1/2; 1 when only one class is present */
    UNET_WC_NONE            /* w_c == 1 */
} unet_wc;

/* w(x) = w_c(x) + w0 exp(-(d1(x) + d2(x))^2 / (2 sigma^2)) for a label image (h * w) into
 * weight (h * w); the paper uses w0 = 10, sigma = 5.  instances != 0: labels are instance ids
 * (0 = background, any positive int32 a cell; ids need not be consecutive, and an id made of
 * several blobs is one cell); a negative id is UNET_STATUS_ARG.  instances == 0: labels is a
 * mask, every non-zero pixel is foreground and each 4-connected component is a cell.  Classes
 * for w_c: foreground (a cell) and background (0).  d1, d2: Euclidean distances (between pixel
 * centres) from a background pixel to the nearest pixel of the nearest and of the
 * second-nearest cell, by exact distance transforms in windows around each cell (not brute
 * force).  The border term applies to background pixels only, and is 0 with fewer than two
 * cells.  It is dropped where it is below 2^-26 (d1 + d2 > sigma sqrt(2 ln(w0 2^26)), 31.9 px
 * for the paper's values), which changes no float32 result because w_c >= 1/2: the output is the
 * exact map rounded to float32.  Touching cells have no background between them: to weight the
 * border between them, zero the pixels unet_separate_cells marks in labels first.  Cost about
 * the sum of the cells' windows (bounding box + that cutoff distance on each side), so
 * O(cells x pixels) at worst for a large sigma; results do not depend on the thread count.
 * Scratch: 4 to 8 bytes per pixel plus 1.5 KB per image column per thread.  UNET_STATUS_ARG:
 * NULL labels or weight, h or w <= 0, h * w > INT32_MAX, w0 < 0 or not finite, sigma <= 0 or
 * not finite, an unknown wc; UNET_STATUS_NOMEM.  On failure weight is untouched. */
unet_status unet_weightmap(unet_ctx *ctx, const int32_t *labels, int h, int w, int instances,
                           float w0, float sigma, unet_wc wc, float *weight);

/* Training targets with separated cells from an instance label image (0 = background, any
 * positive int32 id a cell): background 0, cell pixels 1, and a cell pixel with a pixel of a
 * different cell within `gap` pixels (the (2 gap + 1)^2 square around it: Chebyshev distance,
 * gap steps of 8-neighbourhood) becomes background 0 (classes == 2) or the border class 2
 * (classes == 3), as the paper's Fig. 3c.  gap = 0 separates nothing.  O(pixels) for any gap.
 * target may be labels itself.  UNET_STATUS_ARG: NULL pointers, h or w <= 0,
 * h * w > INT32_MAX, gap < 0, classes not 2 or 3, a negative label; then target is untouched.
 * UNET_STATUS_NOMEM. */
unet_status unet_separate_cells(unet_ctx *ctx, const int32_t *labels, int h, int w, int gap,
                                int classes, int32_t *target);

/* A predicted class map -> an instance label image: the connected components (4-connectivity)
 * of class 1, labelled 1..n in raster order of their first pixel, then grown by up to `grow`
 * steps (0: none) through the 8-neighbourhood over pixels of class 0 or 2 (other classes are
 * never taken), giving back a border removed by unet_separate_cells with gap = grow.  In each
 * step an unlabelled pixel next to a labelled one takes the smallest label among its labelled
 * 4-neighbours, else among its diagonal neighbours, deciding from the previous step's labels
 * only: two cells never merge and the result does not depend on any visiting order.  Cells also
 * grow into real background by up to `grow` pixels where no other cell is near.  *count gets n.
 * labels may be classes_map itself.  UNET_STATUS_ARG: NULL pointers, h or w <= 0,
 * h * w > INT32_MAX, grow < 0 (labels and *count untouched); UNET_STATUS_NOMEM. */
unet_status unet_instances(unet_ctx *ctx, const int32_t *classes_map, int h, int w, int grow,
                           int32_t *labels, int *count);

/* Seeded (marker-controlled) watershed: labels = markers (0 = none, any positive id), then the
 * unlabelled pixels inside mask (NULL: everywhere) are flooded from the markers through
 * 4-neighbours in the order of elevation (NULL: all equal), as skimage.segmentation.watershed
 * does with connectivity 1; markers outside the mask are dropped.  Deterministic: the marker pixels enter a priority queue in raster
 * order; the pixel with the lowest (elevation, time it entered the queue) leaves it, and its
 * unlabelled neighbours in the mask (up, left, right, down) take its label then and enter the
 * queue; so ties go to the pixel queued first and a plateau is shared by distance from the
 * seeds.  Pixels the floods cannot reach stay 0.  O(n log n), 16 bytes of scratch per pixel.
 * labels may be markers itself.  UNET_STATUS_ARG: NULL markers or labels, h or w <= 0,
 * h * w > INT32_MAX, a negative marker or a non-finite elevation (the message names the pixel);
 * UNET_STATUS_NOMEM. */
unet_status unet_watershed(unet_ctx *ctx, const float *elevation, const int32_t *markers,
                           const unsigned char *mask, int h, int w, int32_t *labels);

typedef enum unet_instance_method {
    UNET_INSTANCES_CC = 0,      /* unet_instances: components of class 1, grown back */
    UNET_INSTANCES_WATERSHED    /* seeds from the eroded class-1 interiors, then a watershed */
} unet_instance_method;

typedef struct unet_instance_opts {
    unet_instance_method method;
    int grow;       /* steps the cells take back over class 0 or 2 (the separation strip): 2 */
    int erode;      /* watershed: seeds are sure cell pixels more than this many pixels
                     * (chessboard distance) from any other pixel: 8 */
    int min_size;   /* objects of fewer pixels are removed (0 keeps all): 256 */
    float seed_threshold; /* watershed with prob: sure cell pixels have prob > this: 0.8 */
} unet_instance_opts;

/* The defaults above, method watershed. */
unet_instance_opts unet_instance_defaults(void);

/* A predicted class map (class 1 = cell, 0 background, 2 the border class of a 3-class model)
 * -> instance labels 1..n (*count = n).  Method CC: unet_instances(grow) (its numbering).
 * Method watershed: seeds are the sure cell pixels (class 1 with prob > seed_threshold; every
 * class-1 pixel when prob is NULL) deeper than `erode` among them (chessboard distance), each
 * 4-connected piece one seed.  In a class-1 component without such a deep pixel, each piece of
 * sure pixels of at least min_size pixels seeds its deepest pixels instead (so small touching
 * cells still get a seed each), and a component left without any seed is a seed as a whole.
 * The seeds flood (unet_watershed) the class-1 pixels and those within `grow` 4-neighbour steps
 * of them through class 0 or 2, in the order of 1 - prob (prob: the cells' probability, h * w,
 * e.g. plane 1 of unet_predict's probabilities; NULL: the negative chessboard depth in the
 * cells, the step count outside), so touching cells that the network joined by a bridge are
 * split where it is least sure; objects numbered in raster order of their first pixel.  Both
 * methods then remove objects of fewer than min_size pixels (and renumber, keeping the order).
 * Deterministic, O(n log n).  labels may be classes_map itself.  UNET_STATUS_ARG: NULL
 * classes_map, opts, labels or count, h or w <= 0, h * w > INT32_MAX, an unknown method,
 * negative grow, erode or min_size, seed_threshold outside [0, 1), a non-finite prob;
 * UNET_STATUS_NOMEM. */
unet_status unet_segment_instances(unet_ctx *ctx, const int32_t *classes_map, const float *prob,
                                   int h, int w, const unet_instance_opts *opts, int32_t *labels,
                                   int *count);

/* ---------------------------------------------------------------------------------------
 * Training data: images in memory, random tiles, augmentation
 * ------------------------------------------------------------------------------------- */

typedef struct unet_dataset unet_dataset;

/* An empty set of images with `channels` channels (1..4096). */
unet_status unet_dataset_create(unet_ctx *ctx, int channels, unet_dataset **out);
/* Copies one image (channels, h, w) float, its target (h, w) class ids (-1 = unlabeled) and an
 * optional per-pixel loss weight (h, w) into the set.  name is kept for messages (NULL:
 * "image <i>").  Weights go with every image or with none.  Checked before anything is copied,
 * the message naming the image and the pixel (UNET_STATUS_ARG): image values finite, targets
 * >= -1, weights finite and >= 0, h * w within unet_ctx_max_pixels.  On failure the set is
 * unchanged.  Adding while a sampler exists is allowed; that sampler keeps its images. */
unet_status unet_dataset_add(unet_ctx *ctx, unet_dataset *ds, const float *image,
                             const int32_t *target, const float *weight, int h, int w,
                             const char *name);
int unet_dataset_count(const unet_dataset *ds);
/* Image i's size and data (owned by the set, valid until unet_dataset_free); any output
 * pointer may be NULL.  UNET_STATUS_ARG when i is out of range. */
unet_status unet_dataset_get(const unet_dataset *ds, int i, const float **image,
                             const int32_t **target, const float **weight, int *h, int *w,
                             const char **name);
void unet_dataset_free(unet_dataset *ds);

typedef struct unet_augment {
    int   flips;            /* 0/1: one of the 8 flips and 90-degree rotations, uniformly */
    int   elastic;          /* 0/1: the paper's elastic deformation */
    float elastic_sigma;    /* std of the coarse displacements, pixels (10); 0..1000 */
    int   elastic_grid;     /* coarse grid points per side (3), 2..64; the corner points sit on
                             * the input window's corner pixels, the field between is bicubic */
    float rotate;           /* max rotation, degrees (uniform in [-rotate, rotate]); 0..180 */
    float shift;            /* max shift, pixels (uniform in [-shift, shift] per axis) */
    float brightness;       /* max additive change, in normalised intensity units */
    float contrast;         /* max relative change of contrast: factor in [1-c, 1+c] about the
                             * sample's mean; 0 <= c < 1 */
    float gamma;            /* max relative change of gamma: exponent in [1-g, 1+g], applied
                             * within each channel's own [min, max]; 0 <= g < 1 */
} unet_augment;

/* Flips/rotations only (the seed recipe); the paper's recipe (flips, elastic 3x3 grid with
 * 10 px, and, in amounts the paper does not give: rotations up to 10 degrees, shifts up to 10 px,
 * brightness 0.1, contrast 0.1, gamma 0.1); nothing.  Amounts of 0 are exact identities. */
unet_augment unet_augment_default(void);
unet_augment unet_augment_paper(void);
unet_augment unet_augment_none(void);

typedef struct unet_sampler unet_sampler;

/* Batches of random crops from ds: each sample an input window of in_h x in_w and the target
 * (and weight) of the centred out_h x out_w window (out == in for same-padding networks; for
 * valid convolutions the input carries the context border, in - out pixels).  The image is
 * chosen uniformly, then the output window uniformly among the positions inside the image; a
 * window larger than the image is centred on it (whole-image training).  Pixels outside the
 * image are mirrored in the input and unlabeled (-1) in the target.  Augmentation (aug, may be
 * NULL) transforms image, target and weight together (targets and weights by nearest neighbour
 * and bilinear sampling, never blending labels).  Batch k depends only on (seed, k): `workers`
 * threads prepare batches ahead, in order, so the same seed gives the same batches whatever
 * the timing or thread count.  workers = 0 prepares each batch in unet_sampler_next.
 * Details: all geometry (crop, flips, rotation, shift, elastic field) is composed into one map
 * of source coordinates and sampled once: the image bicubically (Keys' cubic convolution,
 * a = -0.5), mirrored beyond its border without repeating the edge pixel (numpy 'reflect'),
 * several times over if need be; the target by nearest neighbour, -1 outside the image; the
 * weight bilinearly, 0 outside the image.  Gray values change the image after resampling.
 * A transposing flip swaps the output window's extent in the image, and "inside" is judged on
 * that extent.  A centred window that does not fit rounds towards the top left.  aug NULL is
 * unet_augment_none().  ds must outlive the sampler.  One caller thread at a time.  Windows are
 * 1..65536 per side with out <= in; workers 0..64 (workers + 2 batches are buffered). */
unet_status unet_sampler_create(unet_ctx *ctx, const unet_dataset *ds, int batch, int in_h,
                                int in_w, int out_h, int out_w, const unet_augment *aug,
                                uint64_t seed, int workers, unet_sampler **out);
/* Fills the next batch: x (batch, channels, in_h, in_w), target (batch, out_h, out_w),
 * weight (batch, out_h, out_w) when the set has weights (else left alone; may be NULL). */
unet_status unet_sampler_next(unet_ctx *ctx, unet_sampler *s, float *x, int32_t *target,
                              float *weight);
/* Batches handed out so far; seek makes the next batch number k (for resuming a run). */
long unet_sampler_position(const unet_sampler *s);
unet_status unet_sampler_seek(unet_ctx *ctx, unet_sampler *s, long k);
/* From the next batch on, unet_sampler_next fills only samples first .. first + count - 1 of
 * each batch (x, target and weight then hold count samples): sample j of batch k is the same
 * whoever makes it, so process r of N making its share of every batch (a data-parallel run)
 * sees exactly the tiles a single process would.  0 <= first, 1 <= count, first + count <=
 * batch, else UNET_STATUS_ARG.  (first 0, count batch: the whole batch, the default.) */
unet_status unet_sampler_shard(unet_ctx *ctx, unet_sampler *s, int first, int count);
/* Seconds the workers spent preparing batches (summed over workers), and seconds the caller
 * spent in unet_sampler_next (waiting plus copying out).  With workers = 0 both are the time
 * spent preparing batches. */
void unet_sampler_times(const unet_sampler *s, double *work_seconds, double *wait_seconds);
void unet_sampler_free(unet_sampler *s);

/* ---------------------------------------------------------------------------------------
 * Export (docs/export.md)
 * ------------------------------------------------------------------------------------- */

/* Writes the model as an ONNX file (IR 7, opset 13) for inference, atomically: input "input"
 * (N, in_channels, H, W) float32 normalised as unet predict normalises, output "logits" or,
 * with UNET_OUTPUT_PROBABILITIES, "probabilities" (softmax over the classes; sigmoid for one
 * class), (N, classes, H_out, W_out).  N, H and W are dynamic: pads and crops that depend on
 * the size are computed in the graph, so the file runs at every size unet_model_forward
 * accepts.  Batch-norm is kept as BatchNormalization with the running statistics (not folded),
 * dropout is left out, initializers carry the checkpoint's tensor names.  One forward pass: the
 * overlap-tile strategy and test-time augmentation of unet_predict are not in the graph. */
unet_status unet_export_onnx(unet_ctx *ctx, const unet_model *m, const char *path,
                             unet_output output);

/* A bioimage.io model package (model spec 0.5.3): what goes into its description. */
typedef struct unet_bioimageio_opts {
    const char *sample;           /* an image file (PNG, TIFF, .npy) with the model's channels:
                                   * a centre crop of it is the test input and the cover */
    const char *name;             /* 5..128 letters, digits, spaces and _-(); NULL: generated */
    const char *description;      /* up to 1024 characters; NULL: generated */
    const char *authors;          /* names separated by ';' */
    const char *license;          /* an SPDX identifier */
    const char *training_data;    /* free text for the README (NULL: "not stated") */
    const char *training_command; /* the command that trained the model, for the README */
    int         checkpoint;       /* 1: attach model.safetensors, the model as unet loads it */
} unet_bioimageio_opts;

/* Authors "unknown", license CC-BY-4.0, the checkpoint attached, nothing else set. */
unet_bioimageio_opts unet_bioimageio_defaults(void);

/* Writes a bioimage.io model package to path: a new folder, or a zip file when path ends in
 * .zip (written atomically; an existing folder is never replaced).  It holds rdf.yaml (inputs
 * and outputs with their axes and valid sizes, the preprocessing that matches unet's
 * normalisation of the sample's dtype: scale_linear 1/255 for 8-bit, scale_range 1..99.8 %
 * for 16-bit, none for float and int32), weights.onnx (unet_export_onnx with probabilities),
 * test_input.npy (a centre crop of the sample as stored, (1, C, H, W), at most 512 pixels a
 * side), test_output.npy (unet's probabilities for it), cover.png, README.md (the model, the
 * training data and command given, validation, limits) and, when asked, model.safetensors.
 * docs/export.md lists what the description cannot express. */
unet_status unet_export_bioimageio(unet_ctx *ctx, unet_model *m, const char *path,
                                   const unet_bioimageio_opts *opts);

/* ---------------------------------------------------------------------------------------
 * Training that cannot silently fail: learning-rate schedules, gradient clipping, the summed
 * loss, a moving average of the weights, the divergence guard and the held-back set
 * (docs/training.md).  The training loop of `unet train` is these calls in order:
 *     lr = lr0 * unet_schedule_factor(&sched, step) * unet_guard_lr_scale(guard);
 *     unet_train_step_ex(...)  ->  unet_guard_observe(...)  ->  on an event unet_guard_rollback,
 *     at validation unet_guard_observe_validation, and unet_guard_snapshot at good moments.
 * ------------------------------------------------------------------------------------- */

typedef enum unet_schedule_kind {
    UNET_SCHEDULE_CONSTANT = 0,
    UNET_SCHEDULE_COSINE,   /* (1 + cos(pi t / T)) / 2: CosineAnnealingLR(T_max = T, eta_min = 0) */
    UNET_SCHEDULE_POLY,     /* (1 - t / T)^power: nnU-Net's poly_lr; PolynomialLR(T, power) */
    UNET_SCHEDULE_STEP      /* gamma^(milestones reached): MultiStepLR(floor(f_i T), gamma) */
} unet_schedule_kind;

#define UNET_MAX_MILESTONES 8

typedef struct unet_schedule {
    unet_schedule_kind kind;
    long   total;           /* T: the run's steps (>= 1) */
    long   warmup;          /* W >= 0: the factor is multiplied by (t + 1) / W while t < W (torch's
                             * LinearLR(start_factor 1/W, total_iters W - 1) chained with the
                             * decay, as ChainedScheduler does) */
    double power;           /* poly: 0.9 */
    double gamma;           /* step: 0.1 */
    int    n_milestones;    /* step: 1..UNET_MAX_MILESTONES fractions of T, increasing, in (0, 1) */
    double milestones[UNET_MAX_MILESTONES];
} unet_schedule;

/* kind over total steps, no warm-up, power 0.9, gamma 0.1, milestones 0.5 and 0.75. */
unet_schedule unet_schedule_default(unet_schedule_kind kind, long total);
/* "constant", "cosine", "poly", "step" -> kind; UNET_STATUS_ARG naming the word otherwise. */
unet_status unet_schedule_parse(unet_ctx *ctx, const char *name, unet_schedule_kind *out);
const char *unet_schedule_name(unet_schedule_kind kind);
/* UNET_STATUS_ARG naming the bad field. */
unet_status unet_schedule_check(unet_ctx *ctx, const unet_schedule *s);
/* The factor multiplying the base learning rate at step t (0-based: the (t+1)-th update), the
 * value torch.optim.lr_scheduler gives after t scheduler steps; t is clamped to [0, T]. */
double unet_schedule_factor(const unet_schedule *s, long t);

typedef enum unet_reduction {
    UNET_REDUCTION_MEAN = 0,    /* cross entropy averaged over the labeled pixels of the batch */
    UNET_REDUCTION_SUM          /* summed over each output tile's labeled pixels and averaged over
                                 * the batch: Caffe's SoftmaxWithLoss with normalize: false, the
                                 * loss the paper's SGD (momentum 0.99) was tuned for.  Equal to
                                 * the mean times (labeled pixels / batch).  CE and WCE only. */
} unet_reduction;

typedef struct unet_step_stats unet_step_stats;

/* The seam for data-parallel training (one process per machine, e.g. MPI ranks, each stepping
 * on its share of the batch): unet_train_step_ex calls it between the backward pass and the
 * update with the model's flat gradient block (n floats, the layout of
 * unet_model_block(UNET_BLOCK_WEIGHTS)) and the step's statistics so far (loss, baseline, class
 * counts; grad_norm and clipped come after it).  It may change both: sum the gradients of all
 * processes and make the statistics global, so that every process clips, updates and judges
 * (unet_guard_observe) alike.  The gradient is that of this process's loss: a mean over its
 * labeled pixels (the summed reduction: over its tiles), so weighting each process's gradient by
 * its labeled pixels (truth counts; tiles for the sum) before summing, and dividing by the
 * total, gives the single-process gradient of the whole batch.  The Dice loss is a ratio over
 * the batch and does not decompose so.  With a hook the step always reaches it, even when the
 * local loss is not finite (the gradients are then NaN), so no process waits for one that gave
 * up; a loss still not finite after it fails the step as usual.  A non-OK return fails the step
 * with that status and its message on ctx, the parameters unchanged. */
typedef unet_status (*unet_grad_fn)(unet_ctx *ctx, float *grads, size_t n, unet_step_stats *st,
                                    void *user);

/* The seam before the backward pass (data-parallel training): called after the loss with the
 * step's statistics (loss, baseline, class counts of this process's share) and *scale = 1.  It
 * may make the statistics global, and sets *scale, the factor by which this process's loss
 * gradient is multiplied before the backward pass: e.g. its labeled pixels over all processes'
 * (mean reduction; its tiles over the batch for the summed one), so that the gradients summed
 * by grad_fn are the single-process gradient of the whole batch, also through synchronised
 * batch-norm (unet_model_set_bn_sum), whose backward pass couples the processes.  The step
 * then goes on with the loss it returns: when that is not finite, every process skips the
 * backward pass alike.  A non-OK return fails the step as grad_fn's does. */
typedef unet_status (*unet_loss_fn)(unet_ctx *ctx, unet_step_stats *st, double *scale,
                                    void *user);

typedef struct unet_step_opts {
    unet_loss_kind loss;
    unet_reduction reduction;
    double         clip_norm;   /* > 0: PyTorch's clip_grad_norm_(max_norm = clip_norm): with n the
                                 * global L2 norm of all gradients, each is multiplied by
                                 * min(1, clip_norm / (n + 1e-6)) before the update; 0: off */
    unet_grad_fn   grad_fn;     /* NULL: none */
    void          *grad_user;   /* for grad_fn and loss_fn */
    unet_loss_fn   loss_fn;     /* NULL: none */
} unet_step_opts;

/* What one step did.  The class counts are over the labeled output pixels of the batch
 * (target >= 0), the prediction the argmax of the logits (one class: logit > 0). */
struct unet_step_stats {
    double  loss;               /* the loss before the update */
    double  grad_norm;          /* global L2 norm of the gradients before clipping (NaN when the
                                 * step stopped before the gradient) */
    double  lr;                 /* the learning rate of the update */
    double  baseline;           /* the loss a uniform prediction (all logits equal) would get on
                                 * the same batch: log(K) (log 2 for one class) times the mean
                                 * weight, plus the soft Dice of probabilities 1/K (1/2) */
    int     clipped;            /* 1 when clipping scaled the gradients down */
    int     classes;            /* entries used in pred and truth (2 for a one-class model) */
    int64_t pred[UNET_MAX_CLASSES], truth[UNET_MAX_CLASSES];
    int64_t correct;            /* labeled pixels predicted right */
};

unet_step_opts unet_step_defaults(unet_loss_kind loss);    /* mean, no clipping */

/* unet_train_step with the options above and the step's statistics (stats may be NULL).
 * unet_train_step(..., loss, ...) is this with unet_step_defaults(loss).  A non-finite loss or
 * gradient (before clipping) is UNET_STATUS_NUMERIC and leaves the parameters unchanged;
 * stats->loss and grad_norm then tell which. */
unet_status unet_train_step_ex(unet_ctx *ctx, unet_model *m, const unet_optim *opt,
                               const unet_step_opts *so, const float *x, const int32_t *target,
                               const float *weight, int n, int h, int w, unet_step_stats *stats);

/* An exponential moving average of the weights, updated after every training step:
 *     d = min(decay, (1 + u) / (10 + u))        (u = updates so far; TensorFlow's num_updates)
 *     avg = avg + (1 - d) (weight - avg)         (float32, one fused multiply-add)
 * The batch-norm running means and variances are averaged the same way (as timm's ModelEmaV3);
 * num_batches_tracked is not averaged.  Enabling copies the current weights into the average;
 * decay 0 turns it off and frees it; otherwise 0 < decay < 1 (UNET_STATUS_ARG).  A resumable
 * checkpoint carries the average (optimizer.ema, optimizer.ema_buffers; metadata ema_decay and
 * ema_updates) and unet_model_load_training restores it. */
unet_status unet_model_ema_enable(unet_ctx *ctx, unet_model *m, double decay);
double unet_model_ema_decay(const unet_model *m);      /* 0 when off */
long unet_model_ema_updates(const unet_model *m);
/* Exchanges the weights and running statistics with the average's (call again to swap back):
 * validate or save the averaged model between two calls.  UNET_STATUS_ARG when it is off. */
unet_status unet_model_ema_swap(unet_ctx *ctx, unet_model *m);

/* unet_model_save with extra metadata pairs (meta: key, value, ...; keys the architecture uses
 * are refused), e.g. "selected" = "best val_dice=0.9310 step=1200". */
unet_status unet_model_save_meta(unet_ctx *ctx, const unet_model *m, const char *path,
                                 const char *const *meta, int n_meta);
/* A metadata value of the file the model was loaded from; NULL when absent or not loaded. */
const char *unet_model_meta(const unet_model *m, const char *key);

/* The divergence guard.  It watches each step and each validation and reports
 *   NONFINITE  the step's loss or gradient was NaN or Inf;
 *   SPIKE      the median loss of the last `window` steps is above both
 *              ref + spike_mads * MAD and spike_ratio * ref, where ref and MAD (scaled by 1.4826)
 *              are the median and median absolute deviation of up to `history` steps before
 *              them (armed once 20 such steps exist);
 *   BLOWUP     over the last `window` steps the median of loss / baseline (the loss of a
 *              uniform prediction on the same batch) is above blowup: a model far worse than
 *              knowing nothing, at any loss scale;
 *   COLLAPSE   the prediction is nearly one class while the truth is not: that class takes
 *              >= collapse_share of the predicted pixels but <= collapse_truth of the true
 *              ones, once the model has shown it learned (an accuracy at least halfway from
 *              always predicting the commonest true class to perfect).  Training: moving
 *              averages of the step statistics (weight 1/window); validation: its totals.
 * It keeps the last good state in memory (unet_guard_snapshot: weights, batch-norm statistics,
 * optimizer moments and step, dropout generator, moving average, and its own statistics) and
 * unet_guard_rollback returns the model to it and multiplies the learning-rate scale by
 * lr_factor. */
typedef enum unet_guard_event {
    UNET_GUARD_NONE = 0,
    UNET_GUARD_NONFINITE,
    UNET_GUARD_SPIKE,
    UNET_GUARD_BLOWUP,
    UNET_GUARD_COLLAPSE
} unet_guard_event;

typedef struct unet_guard_opts {
    int    detect;          /* 1: all of the above; 0: non-finite values only */
    int    max_rollbacks;   /* rollbacks allowed (3); the next detection ends the run */
    double lr_factor;       /* learning-rate scale factor per rollback (0.5), in (0, 1] */
    int    window;          /* recent steps (10), 1..100 */
    int    history;         /* reference steps (200), 20..1000 */
    double spike_mads;      /* 3 */
    double spike_ratio;     /* 2 */
    double blowup;          /* 5 */
    double collapse_share;  /* 0.95 */
    double collapse_truth;  /* 0.8 */
} unet_guard_opts;

typedef struct unet_guard unet_guard;

unet_guard_opts unet_guard_defaults(void);
/* "nonfinite", "spike", "blowup", "collapse" ("none"). */
const char *unet_guard_event_name(unet_guard_event e);
unet_status unet_guard_create(unet_ctx *ctx, const unet_guard_opts *o, unet_guard **out);
void unet_guard_free(unet_guard *g);
/* One step: its status (UNET_STATUS_NUMERIC is NONFINITE; other failures are not the guard's
 * business and give NONE) and statistics.  The event's explanation is unet_guard_detail. */
unet_guard_event unet_guard_observe(unet_guard *g, unet_status s, const unet_step_stats *st);
/* One validation, its totals in a unet_step_stats: loss and baseline (BLOWUP when the loss is
 * over blowup times the baseline), classes, pred, truth and correct (COLLAPSE). */
unet_guard_event unet_guard_observe_validation(unet_guard *g, const unet_step_stats *val);
/* "loss spike: median of the last 10 steps 0.73 > 0.28 + 3 x MAD 0.05 and > 2 x 0.28"; "" when
 * nothing was detected.  Valid until the next call on g. */
const char *unet_guard_detail(const unet_guard *g);
/* 1 when nothing says the run is going wrong: the recent steps are below half the spike and
 * blow-up thresholds (the blow-up judged on the steps since the last rollback) and no
 * collapse is under way.  A model may be saved as the last one. */
int unet_guard_healthy(const unet_guard *g);
/* 1 when healthy with evidence: also at least `window` steps since the start or the last
 * rollback.  A state to snapshot as the rollback target. */
int unet_guard_trusted(const unet_guard *g);
/* Copies m's training state as the last good state, reached at `step` (the caller's count). */
unet_status unet_guard_snapshot(unet_ctx *ctx, unet_guard *g, const unet_model *m, long step);
/* Returns m (and the guard's statistics) to the last good state, multiplies the learning-rate
 * scale by lr_factor and counts the rollback.  When that count exceeds max_rollbacks the model
 * is still restored and the result is UNET_STATUS_NUMERIC ("diverged ..."): stop training.
 * UNET_STATUS_ARG when no snapshot was taken. */
unet_status unet_guard_rollback(unet_ctx *ctx, unet_guard *g, unet_model *m);
double unet_guard_lr_scale(const unet_guard *g);
int unet_guard_rollbacks(const unet_guard *g);
long unet_guard_snapshot_step(const unet_guard *g);     /* -1: none */
/* The guard's statistics, scale and count as one line of text (for a resumable checkpoint's
 * metadata; malloc'd, NULL when out of memory), and back.  A malformed line is
 * UNET_STATUS_FORMAT and leaves g unchanged. */
char *unet_guard_state(const unet_guard *g);
unet_status unet_guard_set_state(unet_ctx *ctx, unet_guard *g, const char *state);

/* The held-back validation set when no validation images are given: of n images (pages of a
 * stack count as images; file[i] numbers the file image i comes from, or NULL), with
 * 0 < fraction < 1:
 *   n >= 4: ceil(fraction n) whole images, at most n - 1: the last pages when all images are
 *           pages of one stack (adjacent slices are near copies: one contiguous block leaks
 *           least), else a seeded shuffle;
 *   n 1..3: a band of every image: its bottom max(1, round(fraction h)) rows, when the image
 *           keeps at least min_rows rows for training and gives at least min_rows (else none).
 * held[i] = 1 for a held-back image (n >= 4); *band_rows = rows of image i to hold back
 * (n <= 3; 0 when too small).  rows[i] is image i's height.  *kind says which: 0 nothing,
 * 1 images, 2 bands. */
unet_status unet_holdout_plan(unet_ctx *ctx, int n, const int *file, const int *rows,
                              double fraction, int min_rows, uint64_t seed, int *kind, int *held,
                              int *band_rows);
/* ---------------------------------------------------------------------------------------
 * The training loop: `unet train` as one library call (docs/training.md)
 *
 * A unet_trainer runs the whole loop that `unet train` runs between loading the data and
 * writing its log: batches of random augmented tiles (unet_sampler), the learning-rate
 * schedule, clipping, the moving average, the divergence guard with its rollbacks, validation
 * at every epoch end with the best and the last model, resumable checkpoints and the time
 * budget.  An epoch is as many steps as it takes to draw about as many output pixels as the
 * training images hold.  The caller hears of every step and every epoch end through a
 * callback, which can stop the run cleanly by returning non-zero: the step in flight is
 * finished and the resumable checkpoint written, so a resumed run continues it exactly.
 * Files are written only where the options name them, each atomically.  The same seed and
 * thread count give the same losses, bit for bit, also across an interruption and a resume.
 *
 *     unet_train_opts o = unet_train_defaults();          // 10 epochs of batches of 4 ...
 *     o.steps = 1000;
 *     o.out = "model.safetensors";                         // the best model by validation Dice
 *     unet_trainer *t = NULL;
 *     unet_status s = unet_trainer_create(ctx, m, train, val, &o, &t);
 *     if (s == UNET_STATUS_OK) s = unet_trainer_run(ctx, t, on_event, user);
 *     if (s != UNET_STATUS_OK) fprintf(stderr, "%s\n", unet_ctx_errmsg(ctx));
 *     unet_trainer_free(t);
 * ------------------------------------------------------------------------------------- */

/* Names of the command line: "ce", "ce+dice", "dice", "wce"; "adam", "adamw", "sgd" (the
 * optimizer's unet_optim_default, with momentum 0.9 for SGD); "flips", "paper", "none"
 * (unet_augment_default, _paper, _none).  Another name is UNET_STATUS_ARG listing the names. */
unet_status unet_loss_parse(unet_ctx *ctx, const char *name, unet_loss_kind *out);
unet_status unet_optim_parse(unet_ctx *ctx, const char *name, unet_optim *out);
unet_status unet_augment_parse(unet_ctx *ctx, const char *name, unet_augment *out);

/* How a mask becomes a training target. */
typedef struct unet_target_opts {
    int   classes;          /* the model's classes (2) */
    int   separate_cells;   /* 1: touching cells get a background strip between them (the
                             * paper's Fig. 3c; the border class 2 with 3 classes) */
    int   gap;              /* the strip's half width (1) */
    int   weights;          /* 1: also the paper's weight map (UNET_LOSS_WCE) */
    float w0, sigma;        /* its border weight and width (10, 5) */
} unet_target_opts;

unet_target_opts unet_target_defaults(void);
/* A mask (1 channel) as `unet train` reads it into target (h * w class ids,
 * unet_mask_to_classes) and, with o->weights, weight (h * w): the cells are the mask's labels
 * (an instance label image) or the connected components of a binary mask; with separate_cells
 * the target is unet_separate_cells' (gap, 2 or 3 classes); the weight map is unet_weightmap's
 * (w0, sigma, class balance) on the cells with the separating strip removed, whose border term
 * lives on the background between cells.  name is for messages.  Errors as the functions named;
 * on failure target and weight are partly written. */
unet_status unet_mask_to_target(unet_ctx *ctx, const unet_image *mask, const unet_target_opts *o,
                                const char *name, int32_t *target, float *weight);

/* The default recipe's choice from the masks (docs/training.md, "The default recipe"), for a
 * run whose caller chose neither the loss nor the separation of cells (nor a recipe), as
 * `unet train` and unet.train make it: *separate = 1 when classes is 2, the masks label each
 * cell with its own id (two or more different non-zero values in one mask, as the Cell
 * Tracking Challenge's masks do: unet_mask_labels' flag) and at least 2 in 5 of those cells,
 * counted over all the masks, touch another cell (an 8-neighbour pixel holding another
 * non-zero id).  Such a run separates touching cells and trains with the border-weighted cross
 * entropy (unet_target_opts .separate_cells and .weights, UNET_LOSS_WCE); UNET_PLAN_SEPARATE_NOTE
 * is the note its caller shows (the library prints nothing).  Else *separate = 0: cells that
 * mostly stand apart (fluorescent nuclei), binary masks (one non-zero value, 0/1 or 0/255)
 * and, with classes != 2, any masks (class masks, whose values are class ids: none is read).
 * With classes 2 a mask of the values 0, 1, 2 cannot be told from two cells labelled 1 and 2,
 * and counts as two cells.  A mask that is not one channel or holds a value that is not an
 * integer 0..2^31-1 counts as labelling no cells, and so does (_files: page 0 of each) a file
 * that cannot be read: the loading that follows names the problem.  UNET_STATUS_ARG: NULL
 * separate, NULL masks or paths with n > 0, n < 0; UNET_STATUS_NOMEM. */
unet_status unet_plan_from_masks(unet_ctx *ctx, const unet_image *masks, int n, int classes,
                                 int *separate);
unet_status unet_plan_from_mask_files(unet_ctx *ctx, const char *const *paths, int n,
                                      int classes, int *separate);
#define UNET_PLAN_SEPARATE_NOTE                                                                \
    "the masks label each cell with its own id and many cells touch: training with "          \
    "--separate-cells --loss wce "                                                             \
    "(--loss ce+dice or --recipe seed: without)"

/* The default recipe's sizes and length (docs/training.md, "The default recipe"): what the
 * caller left 0, planned from the time budget and the training images.  A time budget
 * (minutes > 0) plans the run that docs/results.md measured for short budgets on 2 cores:
 *   base   16 (else 64: the seed's Pytorch-UNet width);
 *   batch  2 (else 4), and 8 where the tile is planned (below) with the batch;
 *   steps  with neither steps nor epochs: UNET_MAX_STEPS, so the budget alone ends the run
 *          (epochs 1); else epochs 10 when 0;
 *   tile   (train not NULL and depth > 0, for a U-Net with same-padded convolutions) the largest
 *          image side rounded up to a multiple of 2^depth, at most 128 (8 tiles of 128x128
 *          are the pixels of 2 of 256x256) (else 256): images smaller than the tile are
 *          not padded out to it.  depth 0 leaves the tile 0 (the
 *          trainer's default: 256, 316 for the paper's valid U-Net).
 * Given values are kept, so a second call (with the images, for the tile) plans only what is
 * still 0.  planned (the caller's 0 at first) gains a bit per field planned:
 * UNET_PLANNED_BASE, _BATCH, _STEPS (steps or epochs), _TILE.  Other values (negative ones)
 * are kept for the trainer and the model to refuse by name.  UNET_STATUS_ARG: NULL p. */
typedef struct unet_plan {
    int    base, batch, tile, epochs;
    long   steps;
    int    depth;     /* the U-Net's pooling steps (in); 0: no tile is planned */
    double minutes;   /* the time budget (in); 0: none */
    int    planned;   /* in/out: UNET_PLANNED_* bits */
} unet_plan;
enum { UNET_PLANNED_BASE = 1, UNET_PLANNED_BATCH = 2, UNET_PLANNED_STEPS = 4, UNET_PLANNED_TILE = 8 };
unet_status unet_plan_run(unet_ctx *ctx, const unet_dataset *train, unet_plan *p);

/* An image (as stored, c = the set's channels) and its mask (1 channel, the same size) into ds
 * as unet train adds them: the image normalised by unet_image_to_float (norm), the mask made
 * a target (and weight map) by unet_mask_to_target (o); then unet_dataset_add (name: NULL is
 * "image <i>").  Another channel count or mask size is UNET_STATUS_FORMAT ("a.png is 64x64 but
 * its mask b.png is 63x64"); a NaN or Inf in the image is refused naming the first one and the
 * count (UNET_STATUS_ARG; _file: UNET_STATUS_FORMAT).  _file loads page `page` of both files
 * first (name NULL: the image file's path), a palette mask as its indices; its messages name
 * the files.  _file_with reads both under opts' channel axis (NULL: the defaults) and chooses
 * the image's channels by `channels` (unet_image_select_channels; NULL: all), as unet train
 * --channel-axis --channels do (docs/images.md). */
unet_status unet_dataset_add_image(unet_ctx *ctx, unet_dataset *ds, const unet_image *image,
                                   const unet_image *mask, unet_norm norm,
                                   const unet_target_opts *o, const char *name);
unet_status unet_dataset_add_file(unet_ctx *ctx, unet_dataset *ds, const char *image,
                                  const char *mask, int page, unet_norm norm,
                                  const unet_target_opts *o, const char *name);
unet_status unet_dataset_add_file_with(unet_ctx *ctx, unet_dataset *ds, const char *image,
                                       const char *mask, int page, const unet_image_opts *opts,
                                       const char *channels, unet_norm norm,
                                       const unet_target_opts *o, const char *name);

/* The rows a held-back band and the training part it is cut from each keep at least (unet
 * train's min_rows). */
#define UNET_HOLDOUT_MIN_ROWS 16
/* The plan applied to a dataset: of ds's images (file[i]: the file image i came from, or NULL),
 * the held-back images (kind 1) or the bottom bands of them (kind 2, named "NAME[rows a-b]",
 * without weight maps) move to a new set *val, in their order; an image that gives a band keeps
 * the rows above it.  *val is NULL when nothing is held back (kind 0).  No sampler of ds may
 * exist (the images move).  On failure ds is unchanged and *val NULL. */
unet_status unet_dataset_holdout(unet_ctx *ctx, unet_dataset *ds, const int *file,
                                 double fraction, int min_rows, uint64_t seed, int *kind,
                                 unet_dataset **val);

/* The model's flat blocks, for data-parallel training: the parameters (the block the optimizer
 * updates), their gradients (NULL before the first training step) and the batch-norm running
 * statistics (means and variances, which every process updates from its own share of the
 * batch: average or broadcast them to keep the processes' models alike).  *n gets the floats
 * (may be NULL).  The pointers stay valid as long as the model.  NULL for another `which`. */
typedef enum unet_block {
    UNET_BLOCK_WEIGHTS = 0,
    UNET_BLOCK_GRADS,
    UNET_BLOCK_BUFFERS
} unet_block;
float *unet_model_block(unet_model *m, unet_block which, size_t *n);
/* Synchronised batch-norm for data-parallel training: with fn set, every batch-norm layer in
 * training mode takes its batch statistics over all processes' shares, as one process with the
 * whole batch would (PyTorch's SyncBatchNorm).  fn(v, n, user) must replace the n doubles of v
 * by their sums over the processes (MPI_Allreduce); every process calls it alike, twice per
 * layer forward and once backward.  The step's loss_fn must then scale each process's loss
 * gradient to its share of the global loss.  fn NULL: per-process statistics (the default).
 * UNET_STATUS_NOMEM when the buffer for the sums cannot be allocated. */
typedef void (*unet_sum_fn)(double *v, size_t n, void *user);
unet_status unet_model_set_bn_sum(unet_ctx *ctx, unet_model *m, unet_sum_fn fn, void *user);

/* A process group for data-parallel training (docs/scaling.md), seen through two functions
 * that replace v by its sums over the processes (MPI_Allreduce with MPI_SUM), which every
 * process calls alike: doubles (the step's statistics, synchronised batch-norm) and floats
 * (the gradients).  unet_dp_attach sets this process's shard of every batch (o->batch is the
 * global batch: samples [rank B / P, (rank + 1) B / P)), and the step's loss_fn and grad_fn:
 * the statistics and loss of the whole batch, this process's loss gradient weighted by its
 * share (labeled pixels for the mean cross entropy, tiles for the summed one and the losses
 * with Dice, which is a ratio over each process's tiles as in PyTorch's DDP), the gradients
 * summed, and the batch-norm running statistics averaged, or with sync_bn the batch
 * statistics taken over all processes (unet_model_set_bn_sum).  Call it after
 * unet_train_resume, before unet_trainer_create; dp must outlive the trainer.  Every process
 * then takes the same steps; a P-process run equals the one-process run to float rounding
 * (cross entropy; with batch-norm only with sync_bn).  UNET_STATUS_ARG: a batch smaller than
 * P, a time budget (per process) with P > 1. */
typedef void (*unet_sum_f32_fn)(float *v, size_t n, void *user);
typedef struct unet_dp {
    int             rank, processes;
    unet_sum_fn     sum;
    unet_sum_f32_fn sum_f32;
    void           *user;
    /* Set by unet_dp_attach. */
    unet_model     *m;
    unet_loss_kind  loss;
    unet_reduction  reduction;
    int             share, batch, sync_bn;
} unet_dp;
typedef struct unet_train_opts unet_train_opts;
unet_status unet_dp_attach(unet_ctx *ctx, unet_dp *dp, unet_model *m, unet_train_opts *o,
                           int sync_bn);

struct unet_train_opts {
    unet_optim      optim;          /* optimizer and base learning rate: adam 1e-3 */
    unet_step_opts  step;           /* loss (ce+dice), reduction, clip_norm, grad_fn */
    unet_schedule   schedule;       /* kind, warmup, power, gamma, milestones (total: the run) */
    unet_guard_opts guard;          /* unet_guard_defaults() */
    unet_augment    augment;        /* unet_augment_default(): flips and turns */
    double          ema;            /* moving average of the weights, decay in (0, 1); 0: off */
    int             batch;          /* tiles per step (4) */
    int             tile;           /* input tile side, rounded up to a valid one; 0: 256, 316 for
                                     * unet-paper's valid convolutions */
    int             epochs;         /* 10 */
    long            steps;          /* the run's steps; 0: epochs x steps per epoch */
    int             seed;           /* the tiles' (1) */
    int             workers;        /* threads preparing batches ahead (1; 0: none) */
    double          minutes;        /* time budget: after the step during which it ran out, the
                                     * run validates, writes and ends (OK); 0: none */
    int             snapshot_every; /* keep the last good state every N steps and at validation
                                     * (100) */
    long            save_every;     /* the resumable checkpoint: at every epoch end and stop,
                                     * every N steps (0: not by steps) ... */
    double          save_minutes;   /* ... and at least every M minutes (10; 0: not by time) */
    int             resume;         /* 1: continue the run in m's metadata (unet_train_resume) */
    /* Files, each written atomically; NULL: not written. */
    const char     *out;            /* the best model by validation Dice (the first of equals),
                                     * without validation data the last */
    const char     *last;           /* the model after the latest epoch the guard trusted */
    const char     *resume_out;     /* model + optimizer + moving average + data position +
                                     * epoch sums + guard statistics, for resume */
    /* Data-parallel runs: this process's share of each batch (unet_sampler_shard); 0, 0: all. */
    int             shard_first, shard_count;
    /* The products' precision for the run (unet_model_set_precision on m at
     * unet_trainer_create; validation runs at it too): FP32 (default) or BF16, mixed precision
     * with float32 master weights, gradients and optimizer state. */
    unet_precision  precision;
};

/* The defaults above (unet train's). */
unet_train_opts unet_train_defaults(void);
/* Checks every option, as unet_trainer_create does first: UNET_STATUS_ARG naming the option
 * ("batch: expected 1..65536, got 0", "ema: ...", "lr: ..."; the guard's and the schedule's as
 * their own checks name them).  The warm-up against the run's length waits for the length. */
unet_status unet_train_check(unet_ctx *ctx, const unet_train_opts *o);

/* To continue a run: m loaded from its resumable checkpoint with unet_model_load_training.
 * Checks the checkpoint's train.* metadata (a value that is not a number in range, a missing
 * key, guard statistics that o->guard cannot read: UNET_STATUS_FORMAT naming name, the key
 * and the value) and sets o->seed, o->batch and o->tile to the run's and o->resume to 1. */
unet_status unet_train_resume(unet_ctx *ctx, const unet_model *m, const char *name,
                              unet_train_opts *o);

typedef enum unet_train_event_kind {
    UNET_TRAIN_START = 0,   /* before the first step; step is where the run starts */
    UNET_TRAIN_STEP,        /* after every step */
    UNET_TRAIN_EPOCH        /* at every epoch end, at the run's last step and when the time
                             * budget ends the run: with validation data, a validation */
} unet_train_event_kind;

/* One event.  The strings live until the callback returns. */
typedef struct unet_train_event {
    unet_train_event_kind kind;
    long        step;           /* steps done, counted from the run's start (resumed: the
                                 * checkpoint's steps included) */
    long        epoch;          /* 1-based epoch of that step */
    long        total;          /* steps of the run */
    double      loss;           /* STEP: the step's loss (NaN when not finite); EPOCH: the mean
                                 * over the epoch's steps with a finite loss */
    double      lr;             /* the learning rate of the step */
    double      grad_norm;      /* STEP: the global L2 norm of the gradients before clipping
                                 * (NaN when not finite or not computed); EPOCH: NaN */
    double      elapsed;        /* seconds since unet_trainer_run began */
    const char *event;          /* "" or what happened, as the log's `event` column writes it:
                                 * "clip:norm=3.2", "best:val_dice=0.9310",
                                 * "rollback:spike;to=400;lr=0.0005", "diverged:nonfinite;to=4" */
    const char *warning;        /* "" or a sentence for the user ("step 5: the loss is NaN;
                                 * rolled back to step 4 with the learning rate x0.5 (now
                                 * 0.0005), rollback 1") */
    int         validated;      /* EPOCH: 1 when the val_ fields hold a validation */
    /* Means over the validation images of the model validated and saved (the moving average
     * when kept): cross entropy of the probabilities on the labeled pixels, Dice and IoU of
     * the foreground (the mean over classes 1..K-1; a class absent from truth and prediction
     * counts 1), pixel error, ISBI Rand error (the images with foreground). */
    double      val_loss, val_dice, val_iou, val_pixel_error, val_rand_error;
} unet_train_event;

/* Called on the caller's thread; a non-zero return asks the run to stop. */
typedef int (*unet_train_fn)(const unet_train_event *e, void *user);

/* The training log (unet train's STEM.log.csv): the header line and an event's row, both
 * ending in a newline.  A STEP event has a row, an EPOCH event one when it holds a validation
 * (columns step, epoch, loss, lr, val_loss, val_dice, val_iou, val_pixel_error,
 * val_rand_error, seconds, grad_norm, event).  Returns snprintf's count (0 and "": no row). */
const char *unet_train_log_header(void);
int unet_train_log_row(const unet_train_event *e, char *buf, size_t size);

typedef struct unet_trainer unet_trainer;

/* What the run is and has done (unet_trainer_info): set by create, updated by run. */
typedef struct unet_train_info {
    int    tile, out_h, out_w;      /* the input tile used and its output */
    long   per_epoch, total;        /* steps of an epoch and of the run */
    long   first_step;              /* where this run starts (a resumed run: > 0) */
    int    n_train, n_val;          /* images */
    long   step;                    /* steps done */
    long   saved_step;              /* the latest resumable checkpoint's step (-1: none) */
    long   good_step;               /* the guard's last good state (-1: none) */
    int    rollbacks;               /* so far (a resumed run's included) */
    int    budget_over;             /* 1: the time budget ended the run */
    int    diverged;                /* 1: the run stopped diverged (UNET_STATUS_NUMERIC) */
    int    last_good_written;       /* diverged: 1 when last and resume_out hold the last good
                                     * state */
    double best;                    /* the best validation Dice so far (-1: none) */
    char   selected[128];           /* what this run last wrote to out ("best val_dice=0.9310
                                     * step=1200", "last step=4000"); "": nothing */
    double data_seconds;            /* spent waiting for batches */
} unet_train_info;

/* Plans a run of m on the images of train (and validation on val, which may be NULL or
 * empty): the tile, the steps, the sampler, the guard, the moving average (enabled on m when
 * o->ema is set and m has none; a resumed m keeps its own).  m, train and val are borrowed and
 * must outlive the trainer; m must be trained by nobody else meanwhile.  Every option is
 * checked: UNET_STATUS_ARG naming it ("batch: expected >= 1, got 0").  A resumed run already
 * at its last step is planned (info.first_step >= info.total) and run does nothing. */
unet_status unet_trainer_create(unet_ctx *ctx, unet_model *m, const unet_dataset *train,
                                const unet_dataset *val, const unet_train_opts *o,
                                unet_trainer **out);
const unet_train_info *unet_trainer_info(const unet_trainer *t);
/* Runs to the end (OK, also when the time budget ended it), to a stop the callback asked for
 * (UNET_STATUS_INTERRUPTED, after writing resume_out), to a divergence beyond the guard's
 * rollbacks (UNET_STATUS_NUMERIC with the guard's message: m is back at the last good state,
 * written as last and resume_out), or to a failure (a write, a validation image; the latest
 * resumable checkpoint on disk is info.saved_step's).  fn may be NULL.  Call it once. */
unet_status unet_trainer_run(unet_ctx *ctx, unet_trainer *t, unet_train_fn fn, void *user);
void unet_trainer_free(unet_trainer *t);

#ifdef __cplusplus
}
#endif
#endif /* UNET_H */
