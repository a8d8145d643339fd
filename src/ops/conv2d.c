/* conv2d.c — Conv2d and ConvTranspose2d, forward and backward, as GEMMs.
 *
 * A convolution is a matrix product.  Unfold the input into columns (im2col):
 *     col[(c, kh, kw), p] = x[c, oh*s - pad + kh, ow*s - pad + kw]   (0 outside)
 * for every output pixel p = (oh, ow); then y = W col with W viewed as (C_out, C_in*K_h*K_w).
 * Written as one sparse matrix A acting on the flattened image, y = A x.  Then
 *     dx = A^T dy          (conv's input gradient: dcol = W^T dy, folded back by col2im)
 *     dW = dy col^T        (the weight gradient)
 * and the transposed convolution ("deconvolution", FCN's learned upsampling, U-Net's 2x2
 * up-convolution) is nothing but the product with A^T:
 *     convT forward        = conv input gradient      (GEMM W^T x, then col2im)
 *     convT input gradient = conv forward             (im2col, then GEMM W dy)
 *     convT weight grad    = conv weight grad with the roles of input and output swapped.
 * So below there are exactly three kernels (forward, backward-data, backward-weight) and both
 * layers are written with them.  The weight layouts agree: a ConvTranspose2d weight
 * (C_in, C_out, K, K) is read as the Conv2d weight of the convolution it is the adjoint of.
 *
 * Fast paths (each tested against the _ref loops): 3x3 stride-1 convolutions with 16 or more
 * output channels run forward, input gradient and weight gradient by Winograd F(4x4, 3x3)
 * (winograd.c; the input gradient is still "the product with A^T", computed as a convolution
 * with the rotated kernel); convolutions with at most 4 input channels run direct (below); a
 * transposed convolution whose kernel equals its stride (U-Net's 2x2 up-convolution) is A^T x
 * with a col2im that only scatters, so its GEMM writes the output directly, and on a bf16 row
 * its backward gathers dy (the mirror of that scatter) into the same micro-kernel's panels.
 * Each takes an epilogue (scale, shift, ReLU: a folded inference batch-norm) where it applies.
 *
 * Memory: im2col is done in tiles of output pixels so the column buffer stays under
 * COL_TILE_FLOATS for any image size.  1x1 convolutions with stride 1 and no padding skip
 * im2col: the input already is the column matrix.  Threads: im2col and col2im split channels,
 * GEMMs split output blocks (gemm.c), bias sums split output channels: each thread owns its
 * writes and the result is the same for any thread count.
 *
 * Contract (ops.h): Conv2d x (N, C_in, H_in, W_in), w (C_out, C_in, K_h, K_w) -> y (N, C_out,
 * H_out, W_out); ConvTranspose2d w (C_in, C_out, K_h, K_w); float32 NCHW, contiguous; forward
 * overwrites (or applies struct unet__conv_epilogue), backward accumulates.  Tested
 * (tests/test_conv.c) against the one naive loop nest (conv_ref, behind the four _ref
 * functions) on odd sizes, strides and paddings, every instruction set's direct and scatter
 * kernels, PyTorch (golden conv, convt: tools/golden/conv.py), finite differences and the
 * adjoint identity.
 */
#include "ops/kernels.h"

#include <limits.h>
#include <string.h>

/* Column tile: 4M floats (16 MiB) at most, but at least one output row's worth of work. */
#define COL_TILE_FLOATS ((size_t)1 << 22)
#define COL_TILE_MIN_PIXELS 64

static bool is_pointwise(const struct unet__conv2d_dims *d) {
    return d->K_h == 1 && d->K_w == 1 && d->stride_h == 1 && d->stride_w == 1 && d->pad_h == 0 &&
           d->pad_w == 0;
}

static int ckk(const struct unet__conv2d_dims *d) {
    return d->C_in * d->K_h * d->K_w;
}

/* Output pixels per im2col tile. */
static int tile_pixels(const struct unet__conv2d_dims *d) {
    size_t P = (size_t)d->H_out * d->W_out;
    size_t t = COL_TILE_FLOATS / (size_t)ckk(d);
    if (t < COL_TILE_MIN_PIXELS) t = COL_TILE_MIN_PIXELS;
    if (t > P) t = P;
    return (int)t;
}

unet_status unet__conv2d_dims_init(unet_ctx *ctx, struct unet__conv2d_dims *d, const char *name) {
    if (d->N < 1 || d->C_in < 1 || d->H_in < 1 || d->W_in < 1 || d->C_out < 1 || d->K_h < 1 ||
        d->K_w < 1 || d->stride_h < 1 || d->stride_w < 1 || d->pad_h < 0 || d->pad_w < 0)
        return unet__fail(ctx, UNET_STATUS_ARG,
                          "%s: invalid conv2d: N=%d C_in=%d H=%d W=%d C_out=%d K=%dx%d stride=%dx%d "
                          "pad=%dx%d",
                          name, d->N, d->C_in, d->H_in, d->W_in, d->C_out, d->K_h, d->K_w,
                          d->stride_h, d->stride_w, d->pad_h, d->pad_w);
    long long hp = (long long)d->H_in + 2LL * d->pad_h, wp = (long long)d->W_in + 2LL * d->pad_w;
    if (hp < d->K_h || wp < d->K_w)
        return unet__fail(ctx, UNET_STATUS_SHAPE,
                          "%s: input %dx%d (padded %lldx%lld) is smaller than the %dx%d kernel", name,
                          d->H_in, d->W_in, hp, wp, d->K_h, d->K_w);
    long long ho = (hp - d->K_h) / d->stride_h + 1, wo = (wp - d->K_w) / d->stride_w + 1;
    if ((long long)d->C_in * d->K_h * d->K_w > INT_MAX || ho * wo > INT_MAX ||
        (long long)d->H_in * d->W_in > INT_MAX)
        return unet__fail(ctx, UNET_STATUS_ARG, "%s: conv2d sizes exceed the GEMM's int range", name);
    d->H_out = (int)ho;
    d->W_out = (int)wo;
    return UNET_STATUS_OK;
}

/* A forward by Winograd when it applies (or direct, without scratch), else by im2col tiles
 * (unet__conv2d_forward_ep). */
size_t unet__conv2d_forward_scratch_floats(const struct unet__conv2d_dims *d) {
    if (unet__winograd_applies(d)) return unet__winograd_scratch_floats(d);
    return is_pointwise(d) ? 0 : (size_t)ckk(d) * (size_t)tile_pixels(d);
}

size_t unet__conv2d_scratch_floats(const struct unet__conv2d_dims *d) {
    if (is_pointwise(d)) return 0;
    size_t f = (size_t)ckk(d) * (size_t)tile_pixels(d);
    if (unet__winograd_applies(d)) {
        /* Forward, input gradient and weight gradient by Winograd. */
        struct unet__conv2d_dims a = unet__winograd_dims_data(d);
        size_t fw = unet__winograd_scratch_floats(d), bw = unet__winograd_scratch_floats(&a);
        size_t ww = unet__winograd_wgrad_scratch_floats(d);
        if (fw > f) f = fw;
        if (bw > f) f = bw;
        if (ww > f) f = ww;
    }
    return f;
}

/* ---- im2col / col2im over output pixels [p0, p0 + np) of one image ---- */

/* col (CKK, np): row r = (c, kh, kw).  Each row is filled by walking output rows; the inner
 * run over ow is a strided gather with zeros where the window leaves the image. */
static void im2col_tile(float *col, const float *x, const struct unet__conv2d_dims *d, int p0, int np) {
    const int rows = ckk(d);
    const int KK = d->K_h * d->K_w;
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        const int c = r / KK, kh = (r % KK) / d->K_w, kw = r % d->K_w;
        const float *xc = x + (size_t)c * d->H_in * d->W_in;
        float *dst = col + (size_t)r * np;
        int p = p0, end = p0 + np;
        while (p < end) {
            int oh = p / d->W_out, ow = p % d->W_out;
            int run = d->W_out - ow < end - p ? d->W_out - ow : end - p;
            int ih = oh * d->stride_h - d->pad_h + kh;
            if (ih < 0 || ih >= d->H_in) {
                memset(dst, 0, sizeof(float) * (size_t)run);
            } else {
                const float *xr = xc + (size_t)ih * d->W_in;
                int iw = ow * d->stride_w - d->pad_w + kw;
                if (d->stride_w == 1 && iw >= 0 && iw + run <= d->W_in) {
                    memcpy(dst, xr + iw, sizeof(float) * (size_t)run);
                } else {
                    for (int j = 0; j < run; j++, iw += d->stride_w)
                        dst[j] = (iw >= 0 && iw < d->W_in) ? xr[iw] : 0.0f;
                }
            }
            dst += run;
            p += run;
        }
    }
}

/* dx += fold(dcol): the adjoint of im2col_tile.  Split by input channel so that each thread owns
 * the planes it writes; within a channel the (kh, kw) order is fixed. */
static void col2im_tile(float *dx, const float *col, const struct unet__conv2d_dims *d, int p0, int np) {
    const int KK = d->K_h * d->K_w;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < d->C_in; c++) {
        float *dxc = dx + (size_t)c * d->H_in * d->W_in;
        for (int k = 0; k < KK; k++) {
            const int kh = k / d->K_w, kw = k % d->K_w;
            const float *src = col + ((size_t)c * KK + k) * np;
            int p = p0, end = p0 + np;
            while (p < end) {
                int oh = p / d->W_out, ow = p % d->W_out;
                int run = d->W_out - ow < end - p ? d->W_out - ow : end - p;
                int ih = oh * d->stride_h - d->pad_h + kh;
                if (ih >= 0 && ih < d->H_in) {
                    float *dr = dxc + (size_t)ih * d->W_in;
                    int iw = ow * d->stride_w - d->pad_w + kw;
                    if (d->stride_w == 1 && iw >= 0 && iw + run <= d->W_in) {
                        for (int j = 0; j < run; j++) dr[iw + j] += src[j];
                    } else {
                        for (int j = 0; j < run; j++, iw += d->stride_w)
                            if (iw >= 0 && iw < d->W_in) dr[iw] += src[j];
                    }
                }
                src += run;
                p += run;
            }
        }
    }
}

/* ---- the three kernels ---- */

/* y = W x (beta = 0) or y += W x (beta = 1), no bias. */
static void conv_forward_gemm(float *y, const float *x, const float *w,
                              const struct unet__conv2d_dims *d, float *scratch, float beta) {
    const int P = d->H_out * d->W_out, K = ckk(d);
    const size_t x_img = (size_t)d->C_in * d->H_in * d->W_in, y_img = (size_t)d->C_out * P;
    for (int n = 0; n < d->N; n++) {
        const float *xn = x + n * x_img;
        float *yn = y + n * y_img;
        if (is_pointwise(d)) {
            unet__sgemm(false, false, d->C_out, P, K, 1.0f, w, K, xn, P, beta, yn, P);
            continue;
        }
        const int T = tile_pixels(d);
        for (int p0 = 0; p0 < P; p0 += T) {
            int np = P - p0 < T ? P - p0 : T;
            im2col_tile(scratch, xn, d, p0, np);
            unet__sgemm(false, false, d->C_out, np, K, 1.0f, w, K, scratch, np, beta, yn + p0, P);
        }
    }
}

/* dx += W^T dy, folded back to image layout. */
static void conv_backward_data_gemm(float *dx, const float *dy, const float *w,
                                    const struct unet__conv2d_dims *d, float *scratch) {
    const int P = d->H_out * d->W_out, K = ckk(d);
    const size_t x_img = (size_t)d->C_in * d->H_in * d->W_in, y_img = (size_t)d->C_out * P;
    for (int n = 0; n < d->N; n++) {
        float *dxn = dx + n * x_img;
        const float *dyn = dy + n * y_img;
        if (is_pointwise(d)) {
            unet__sgemm(true, false, K, P, d->C_out, 1.0f, w, K, dyn, P, 1.0f, dxn, P);
            continue;
        }
        const int T = tile_pixels(d);
        for (int p0 = 0; p0 < P; p0 += T) {
            int np = P - p0 < T ? P - p0 : T;
            unet__sgemm(true, false, K, np, d->C_out, 1.0f, w, K, dyn + p0, P, 0.0f, scratch, np);
            col2im_tile(dxn, scratch, d, p0, np);
        }
    }
}

/* dw += dy col^T, accumulated over the batch and the tiles in a fixed order. */
static void conv_backward_weight_gemm(float *dw, const float *dy, const float *x,
                                      const struct unet__conv2d_dims *d, float *scratch) {
    const int P = d->H_out * d->W_out, K = ckk(d);
    const size_t x_img = (size_t)d->C_in * d->H_in * d->W_in, y_img = (size_t)d->C_out * P;
    for (int n = 0; n < d->N; n++) {
        const float *xn = x + n * x_img;
        const float *dyn = dy + n * y_img;
        if (is_pointwise(d)) {
            unet__sgemm(false, true, d->C_out, K, P, 1.0f, dyn, P, xn, P, 1.0f, dw, K);
            continue;
        }
        const int T = tile_pixels(d);
        for (int p0 = 0; p0 < P; p0 += T) {
            int np = P - p0 < T ? P - p0 : T;
            im2col_tile(scratch, xn, d, p0, np);
            unet__sgemm(false, true, d->C_out, K, np, 1.0f, dyn + p0, P, scratch, np, 1.0f, dw, K);
        }
    }
}

/* db[c] += sum over the batch and pixels of dy[n, c]; summed in double per channel. */
static void bias_backward(float *db, const float *dy, int N, int C, size_t P) {
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        double s = 0.0;
        for (int n = 0; n < N; n++) {
            const float *g = dy + ((size_t)n * C + c) * P;
            for (size_t p = 0; p < P; p++) s += g[p];
        }
        db[c] += (float)s;
    }
}

/* ---- Conv2d ---- */

/* The epilogue as a separate pass after the GEMM path (the direct path applies it per row,
 * Winograd in its output transform).  After an accumulating GEMM (beta = 1) it can only be a
 * shift: y += conv + shift. */
static void epilogue_pass(float *y, const struct unet__conv_epilogue *ep, int N, int C, size_t P) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) unet__epilogue_apply(y + ((size_t)n * C + c) * P, P, ep, c);
}

/* ---- direct convolution for very few input channels (U-Net's first layer) ----
 * With C_in <= 4 a GEMM has almost no reduction to amortise its packing (im2col + GEMM ran at
 * ~15 GFLOP/s on the 1 -> 64 layer) and Winograd's output transform costs more than the 9
 * multiply-adds it saves.  Direct: each output row is a sum of K_h K_w C_in shifted, scaled
 * input rows, a vector loop along the row; compiled for AVX-512 and AVX2 as well and chosen at
 * run time. */
#define DIRECT_MAX_C_IN 4

static bool is_direct(const struct unet__conv2d_dims *d) {
    return d->C_in <= DIRECT_MAX_C_IN && d->stride_h == 1 && d->stride_w == 1 &&
           d->K_h * d->K_w > 1 && d->C_out >= 16;
}

/* Output row q = (n, co, oh). */
static inline __attribute__((always_inline)) void
direct_rows(float *y, const float *x, const float *w, const struct unet__conv2d_dims *d,
            const struct unet__conv_epilogue *ep, long long q) {
    const int oh = (int)(q % d->H_out), co = (int)(q / d->H_out % d->C_out);
    const int n = (int)(q / d->H_out / d->C_out);
    float *yr = y + (((size_t)n * d->C_out + co) * d->H_out + oh) * d->W_out;
#pragma omp simd
    for (int ow = 0; ow < d->W_out; ow++) yr[ow] = 0.0f;
    for (int ci = 0; ci < d->C_in; ci++)
        for (int kh = 0; kh < d->K_h; kh++) {
            const int ih = oh - d->pad_h + kh;
            if (ih < 0 || ih >= d->H_in) continue;
            const float *xr = x + (((size_t)n * d->C_in + ci) * d->H_in + ih) * d->W_in;
            for (int kw = 0; kw < d->K_w; kw++) {
                const float wv = w[(((size_t)co * d->C_in + ci) * d->K_h + kh) * d->K_w + kw];
                const int shift = kw - d->pad_w;
                const int lo = shift < 0 ? -shift : 0;
                const int hi = d->W_in - shift < d->W_out ? d->W_in - shift : d->W_out;
#pragma omp simd
                for (int ow = lo; ow < hi; ow++) yr[ow] += wv * xr[ow + shift];
            }
        }
    unet__epilogue_apply(yr, (size_t)d->W_out, ep, co);
}

void unet__conv2d_direct_rows_portable(float *y, const float *x, const float *w,
                                       const struct unet__conv2d_dims   *d,
                                       const struct unet__conv_epilogue *ep, long long q) {
    direct_rows(y, x, w, d, ep, q);
}
#ifdef UNET__X86
UNET__TARGET_AVX2 void unet__conv2d_direct_rows_avx2(float *y, const float *x, const float *w,
                                                     const struct unet__conv2d_dims   *d,
                                                     const struct unet__conv_epilogue *ep,
                                                     long long q) {
    direct_rows(y, x, w, d, ep, q);
}
UNET__TARGET_AVX512 void unet__conv2d_direct_rows_avx512(float *y, const float *x, const float *w,
                                                         const struct unet__conv2d_dims   *d,
                                                         const struct unet__conv_epilogue *ep,
                                                         long long q) {
    direct_rows(y, x, w, d, ep, q);
}
#endif

/* The row that runs a convolution: how's, else float32's best. */
static const struct unet__kernels *row_of(const struct unet__conv_how *how) {
    return how && how->k ? how->k : unet__kernels_pick(UNET__PRECISION_F32);
}

static void conv_direct(float *y, const float *x, const float *w, const struct unet__conv2d_dims *d,
                        const struct unet__conv_epilogue *ep, const struct unet__conv_how *how) {
    const unet__conv2d_rows_fn rows_fn = row_of(how)->direct_rows;
    const long long rows = (long long)d->N * d->C_out * d->H_out;
    /* Small layers stay on the calling thread (a team costs more than ~1M multiply-adds). */
    const bool par = (double)rows * d->W_out * d->C_in * d->K_h * d->K_w >= (double)(1 << 20);
    (void)par;
    /* Rows are handed out dynamically (a thread slowed by other work takes fewer) in chunks of
     * about 64K outputs, four chunks per thread at least: taking a chunk is an atomic on a line
     * the other threads take too, ~0.4 us where they do not share a cache (bench_pingpong), and
     * 16 rows of 512 (2 threads, 512x512, 1 -> 64 channels) was 25% of the layer's time. */
    long long chunk = 65536 / d->W_out;
    const long long most = rows / (4LL * unet__thread_slots());
    if (chunk > most) chunk = most;
    if (chunk < 1) chunk = 1;
#pragma omp parallel for schedule(dynamic, chunk) if (par)
    for (long long q = 0; q < rows; q++) rows_fn(y, x, w, d, ep, q);
}

void unet__conv2d_forward_ep(float *y, const float *x, const float *w,
                             const struct unet__conv2d_dims *d,
                             const struct unet__conv_epilogue *ep,
                             const struct unet__conv_how *how, float *scratch) {
    UNET_ASSERT(!(ep && ep->pool) || unet__conv2d_fusable(d));
    if (is_direct(d) && !(ep && ep->accumulate)) {
        conv_direct(y, x, w, d, ep, how);
        return;
    }
    if (unet__winograd_applies(d)) {
        unet__conv2d_winograd(y, x, w, false, d, ep, how, scratch);
        return;
    }
    const bool acc = ep && ep->accumulate;
    UNET_ASSERT(!acc || (!ep->scale && !ep->relu));
    conv_forward_gemm(y, x, w, d, scratch, acc ? 1.0f : 0.0f);
    if (ep && (ep->scale || ep->shift || ep->relu))
        epilogue_pass(y, ep, d->N, d->C_out, (size_t)d->H_out * d->W_out);
}

bool unet__conv2d_fusable(const struct unet__conv2d_dims *d) {
    return unet__winograd_applies(d) && !is_direct(d);
}

void unet__conv2d_forward_cat(float *y, const float *a, const float *b, int c_a, const float *w,
                              const struct unet__conv2d_dims *d,
                              const struct unet__conv_epilogue *ep,
                              const struct unet__conv_how *how, float *scratch) {
    UNET_ASSERT(unet__conv2d_fusable(d) && !(ep && ep->accumulate));
    unet__conv2d_winograd_cat(y, a, b, c_a, w, d, ep, how, scratch);
}

void unet__conv2d_forward(float *y, const float *x, const float *w, const float *b,
                          const struct unet__conv2d_dims *d, float *scratch) {
    struct unet__conv_epilogue ep = {.shift = b};
    unet__conv2d_forward_ep(y, x, w, d, &ep, NULL, scratch);
}

void unet__conv2d_backward_set(float *dx, bool set_dx, float *dw, float *db, const float *dy,
                               const float *x, const float *w, const struct unet__conv2d_dims *d,
                               const struct unet__conv_how *how, float *scratch) {
    const struct unet__kernels *k = row_of(how);
    if (db) bias_backward(db, dy, d->N, d->C_out, (size_t)d->H_out * d->W_out);
    if (dw && unet__winograd_applies(d)) unet__conv2d_winograd_wgrad(dw, dy, x, d, k, scratch);
    else if (dw) conv_backward_weight_gemm(dw, dy, x, d, scratch);
    if (!dx) return;
    struct unet__conv2d_dims a = unet__winograd_dims_data(d);
    if (unet__winograd_applies(d) && unet__winograd_applies(&a)) {
        /* dx (+)= A^T dy is itself a 3x3 convolution of dy (kernel rotated, channels swapped). */
        struct unet__conv_epilogue ep = {.accumulate = !set_dx};
        const struct unet__conv_how flipped = {.k = k};
        unet__conv2d_winograd(dx, dy, w, true, &a, &ep, &flipped, scratch);
        return;
    }
    if (set_dx) memset(dx, 0, sizeof(float) * (size_t)d->N * d->C_in * d->H_in * d->W_in);
    conv_backward_data_gemm(dx, dy, w, d, scratch);
}

void unet__conv2d_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                           const float *w, const struct unet__conv2d_dims *d,
                           const struct unet__conv_how *how, float *scratch) {
    unet__conv2d_backward_set(dx, false, dw, db, dy, x, w, d, how, scratch);
}

/* The definition of the convolution d and its gradients, the one naive loop nest every _ref
 * below runs: output pixel o = (n, co, oh, ow) by output pixel, tap (ci, kh, kw) by tap, leaving
 * out the taps whose input pixel i = (n, ci, oh s - pad + kh, ow s - pad + kw) lies in the zero
 * padding; k = (co, ci, kh, kw) indexes the weight.
 *     y[o]   = (y_acc ? y[o] : 0) + (b ? b[co] : 0) + sum_taps x[i] w[k]   (summed in double)
 *     dx[i] += dy[o] w[k],   dw[k] += dy[o] x[i],   db[co] += dy[o]
 * Any of y, dx, dw, db may be NULL (and x, dy when nothing reads them). */
static void conv_ref(float *y, bool y_acc, float *dx, float *dw, float *db, const float *x,
                     const float *w, const float *b, const float *dy,
                     const struct unet__conv2d_dims *d) {
    for (int n = 0; n < d->N; n++)
        for (int co = 0; co < d->C_out; co++)
            for (int oh = 0; oh < d->H_out; oh++)
                for (int ow = 0; ow < d->W_out; ow++) {
                    const size_t o = (((size_t)n * d->C_out + co) * d->H_out + oh) * d->W_out + ow;
                    const float  g = dy ? dy[o] : 0.0f;
                    double       acc = (y && y_acc ? y[o] : 0.0) + (b ? b[co] : 0.0);
                    if (db) db[co] += g;
                    for (int ci = 0; ci < d->C_in; ci++)
                        for (int kh = 0; kh < d->K_h; kh++)
                            for (int kw = 0; kw < d->K_w; kw++) {
                                int ih = oh * d->stride_h - d->pad_h + kh;
                                int iw = ow * d->stride_w - d->pad_w + kw;
                                if (ih < 0 || ih >= d->H_in || iw < 0 || iw >= d->W_in) continue;
                                size_t i = ((size_t)n * d->C_in + ci) * d->H_in + ih;
                                size_t k = ((size_t)co * d->C_in + ci) * d->K_h + kh;
                                i = i * d->W_in + iw, k = k * d->K_w + kw;
                                if (y) acc += (double)x[i] * w[k];
                                if (dx) dx[i] += g * w[k];
                                if (dw) dw[k] += g * x[i];
                            }
                    if (y) y[o] = (float)acc;
                }
}

void unet__conv2d_forward_ref(float *y, const float *x, const float *w, const float *b,
                              const struct unet__conv2d_dims *d) {
    conv_ref(y, false, NULL, NULL, NULL, x, w, b, NULL, d);
}

void unet__conv2d_backward_ref(float *dx, float *dw, float *db, const float *dy, const float *x,
                               const float *w, const struct unet__conv2d_dims *d) {
    /* Inverts y[n,co,oh,ow] = b[co] + sum x[n,ci,ih,iw] w[co,ci,kh,kw] term by term. */
    conv_ref(NULL, false, dx, dw, db, x, w, NULL, dy, d);
}

/* ---- ConvTranspose2d: the same kernels, transposed ---- */

unet_status unet__convt2d_dims_init(unet_ctx *ctx, struct unet__convt2d_dims *d, const char *name) {
    if (d->N < 1 || d->C_in < 1 || d->H_in < 1 || d->W_in < 1 || d->C_out < 1 || d->K_h < 1 ||
        d->K_w < 1 || d->stride_h < 1 || d->stride_w < 1 || d->pad_h < 0 || d->pad_w < 0 ||
        d->outpad_h < 0 || d->outpad_w < 0 || d->outpad_h >= d->stride_h ||
        d->outpad_w >= d->stride_w)
        return unet__fail(ctx, UNET_STATUS_ARG,
                          "%s: invalid conv_transpose2d: N=%d C_in=%d H=%d W=%d C_out=%d K=%dx%d "
                          "stride=%dx%d pad=%dx%d output_padding=%dx%d",
                          name, d->N, d->C_in, d->H_in, d->W_in, d->C_out, d->K_h, d->K_w,
                          d->stride_h, d->stride_w, d->pad_h, d->pad_w, d->outpad_h, d->outpad_w);
    long long ho = (long long)(d->H_in - 1) * d->stride_h - 2LL * d->pad_h + d->K_h + d->outpad_h;
    long long wo = (long long)(d->W_in - 1) * d->stride_w - 2LL * d->pad_w + d->K_w + d->outpad_w;
    if (ho < 1 || wo < 1)
        return unet__fail(ctx, UNET_STATUS_SHAPE, "%s: conv_transpose2d output would be %lldx%lld",
                          name, ho, wo);
    if (ho * wo > INT_MAX || (long long)d->C_out * d->K_h * d->K_w > INT_MAX)
        return unet__fail(ctx, UNET_STATUS_ARG, "%s: conv_transpose2d sizes exceed the GEMM's int "
                          "range", name);
    d->H_out = (int)ho;
    d->W_out = (int)wo;
    return UNET_STATUS_OK;
}

struct unet__conv2d_dims unet__convt2d_as_conv(const struct unet__convt2d_dims *d) {
    struct unet__conv2d_dims c = {
        .N = d->N, .C_in = d->C_out, .H_in = d->H_out, .W_in = d->W_out,
        .C_out = d->C_in, .K_h = d->K_h, .K_w = d->K_w,
        .stride_h = d->stride_h, .stride_w = d->stride_w, .pad_h = d->pad_h, .pad_w = d->pad_w,
        .H_out = d->H_in, .W_out = d->W_in,
    };
    return c;
}

/* ---- k == stride, no padding: U-Net's 2x2 stride-2 up-convolution as one GEMM ----
 * When the windows do not overlap, col2im is a pure scatter: every output pixel receives
 * exactly one product.  So y = A^T x is one GEMM, Z (C_out K K, P) = W^T (C_out K K, C_in)
 * x (C_in, P), whose rows r = (co, kh, kw) go straight to y[co][i K + kh][j K + kw] (+ bias)
 * with no column buffer, no zeroing and no accumulation.  It runs on the packed micro-kernel
 * of winograd.c: W^T is packed once per call in panels of 8 rows (K_MR), x in panels of up to
 * 48 pixels per thread.  Its backward on a bf16 row: below, after the forward. */
enum { K_MR = UNET__MICRO_MR, K_NR = UNET__MICRO_NR };

static bool convt_is_scatter(const struct unet__convt2d_dims *d) {
    return d->K_h == d->stride_h && d->K_w == d->stride_w && d->pad_h == 0 && d->pad_w == 0 &&
           d->outpad_h == 0 && d->outpad_w == 0;
}

/* A thread's pixel panels of B are packed a chunk at a time: up to CONVT_CHUNK_MAX panels of
 * one input row, within CONVT_B_FLOATS (and at least one panel).  The GEMM then runs each
 * panel of the packed weights over the chunk's panels in turn, so that its scattered outputs
 * (two output rows per kernel row pair) are written along those rows rather than in runs of
 * 96 floats at a time: the 128 -> 64 up-convolution at 512x512 (a 64 MiB output), bf16 at 2
 * threads, 23 -> 20 ms CPU time (bench_convt 512 1 2 7 fwd).  Rows of one panel (W_in <= 48)
 * stay one panel a chunk: chunks across rows were slower (1024 -> 512: 15.8 -> 17 ms). */
#define CONVT_B_FLOATS  ((size_t)96 << 10)
#define CONVT_CHUNK_MAX 8

/* Pixel panels per chunk for a row of per_row panels of kwords words each. */
static int convt_chunk(int kwords, int per_row) {
    int ch = (int)(CONVT_B_FLOATS / ((size_t)kwords * K_NR));
    if (ch > CONVT_CHUNK_MAX) ch = CONVT_CHUNK_MAX;
    if (ch > per_row) ch = per_row;
    return ch < 1 ? 1 : ch;
}

/* A thread's room for packed pixel panels: one panel of C_in input channels, and at least
 * CONVT_B_FLOATS for a chunk of them. */
static size_t convt_b_floats(int C_in) {
    const size_t b = (size_t)C_in * K_NR;
    return b < CONVT_B_FLOATS ? CONVT_B_FLOATS : b;
}

/* Sized in words of one value (float32), an upper bound for bf16 pairs. */
static size_t convt_scatter_floats(const struct unet__convt2d_dims *d) {
    size_t rows = (size_t)(d->C_out * d->K_h * d->K_w + K_MR - 1) / K_MR * K_MR;
    return rows * d->C_in + (size_t)unet__thread_slots() * (convt_b_floats(d->C_in) + K_MR * K_NR);
}

/* Threads for a scatter GEMM of `macs` multiply-adds: the team, at most the slots its scratch
 * is sized for, and no team when tiny. */
static int scatter_team(double macs) {
    int team = 1;
#ifdef _OPENMP
    team = omp_get_max_threads();
    if (team > unet__thread_slots()) team = unet__thread_slots();
    if (macs < (double)(1 << 22)) team = 1;
#endif
    (void)macs;
    return team;
}

static int thread_me(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* A (rows, red) matrix, element (m, k) at a[m row_stride + k red_stride], packed as the
 * micro-kernel's A operand: panels of K_MR rows (rows rounded up, zeros past the end), each
 * (words of `red`, K_MR), a word pairing k and k + 1 on a bf16 row.  The panels are shared by
 * the team: call inside the parallel region. */
static void pack_a_panels(const struct unet__kernels *K, float *A, const float *a, int rows,
                          int red, size_t row_stride, size_t red_stride) {
    const int pack = K->pack, kwords = (red + pack - 1) / pack;
#pragma omp for schedule(static)
    for (int rp = 0; rp < (rows + K_MR - 1) / K_MR; rp++)
        for (int i = 0; i < kwords; i++) {
            float lo[K_MR], hi[K_MR];
            const int k = i * pack;
            for (int r = 0; r < K_MR; r++) {
                const int m = rp * K_MR + r;
                const float *e = m < rows ? a + (size_t)m * row_stride + (size_t)k * red_stride
                                          : NULL;
                lo[r] = e ? e[0] : 0.0f;
                hi[r] = e && k + 1 < red ? e[red_stride] : 0.0f;
            }
            K->pack_words(A + ((size_t)rp * kwords + i) * K_MR, lo, hi, K_MR);
        }
}

/* Pixel panel pp of rows of per_row panels (W_in pixels): its input row *i, first pixel *j0
 * and pixel count. */
static int panel_at(int pp, int per_row, int W_in, int *i, int *j0) {
    *i = pp / per_row;
    *j0 = pp % per_row * K_NR;
    return W_in - *j0 < K_NR ? W_in - *j0 : K_NR;
}

static void convt_scatter_forward(float *y, const float *x, const float *w, const float *b,
                                  const struct unet__convt2d_dims *d,
                                  const struct unet__conv_how *how, float *scratch) {
    const int R = d->C_out * d->K_h * d->K_w, C_in = d->C_in;
    const int rows = (R + K_MR - 1) / K_MR * K_MR, P = d->H_in * d->W_in;
    /* Pixel panels run along input rows (never across one), so that a panel's outputs for
     * one kernel row are a run of one output row. */
    const int per_row = (d->W_in + K_NR - 1) / K_NR;
    const struct unet__kernels *K = row_of(how);
    const unet__micro_gemm_fn gemm = K->micro_gemm;
    const int pack = K->pack, kwords = (C_in + pack - 1) / pack; /* of the reduction */
    float *A = scratch; /* (rows / K_MR, kwords, K_MR) words: W (C_in, R) by panels of rows */
    float *bufs = A + (size_t)rows * C_in;
    const int team = scatter_team((double)rows * C_in * P * d->N);
    const int ch = convt_chunk(kwords, per_row), parts = (per_row + ch - 1) / ch;
    const int chunks = d->H_in * parts; /* chunk (i, part): panels of row i */
    const size_t per = convt_b_floats(C_in); /* a thread's B */
    const size_t slot = (size_t)kwords * K_NR; /* one panel of B */
    (void)team;
#pragma omp parallel num_threads(team)
    {
        float *B = bufs + (size_t)thread_me() * (per + K_MR * K_NR);
        float *Cb = B + per; /* (K_MR, K_NR) products */
        pack_a_panels(K, A, w, R, C_in, 1, (size_t)R); /* W^T: row (co, kh, kw), words of C_in */
        for (int n = 0; n < d->N; n++) {
            const float *xn = x + (size_t)n * C_in * P;
            float *yn = y + (size_t)n * d->C_out * d->H_out * d->W_out;
#pragma omp for schedule(dynamic, 1)
            for (int cc = 0; cc < chunks; cc++) {
                const int row0 = cc / parts * per_row, q0 = cc % parts * ch;
                const int p0 = row0 + q0, p1 = row0 + (q0 + ch < per_row ? q0 + ch : per_row);
                for (int pp = p0; pp < p1; pp++) {
                    int i, j0;
                    const int np = panel_at(pp, per_row, d->W_in, &i, &j0);
                    const int width = (np + 15) / 16 * 16;
                    const float *xp = xn + (size_t)i * d->W_in + j0;
                    for (int ci = 0; ci < C_in; ci += pack) {
                        float *dst = B + (size_t)(pp - p0) * slot + (size_t)(ci / pack) * width;
                        K->pack_words(dst, xp + (size_t)ci * P,
                                      ci + 1 < C_in ? xp + (size_t)(ci + 1) * P : NULL, np);
                        for (int j = np; j < width; j++) dst[j] = 0.0f;
                    }
                }
                for (int rp = 0; rp < rows / K_MR; rp++)
                    for (int pp = p0; pp < p1; pp++) {
                        int i, j0;
                        const int np = panel_at(pp, per_row, d->W_in, &i, &j0);
                        gemm(A + (size_t)rp * kwords * K_MR, B + (size_t)(pp - p0) * slot, kwords,
                             (np + 15) / 16 * 16, Cb, K_NR, false);
                        K->convt_scatter(yn, Cb, b, d, rp * K_MR, i, j0, np);
                    }
            }
        }
    }
}

/* The products of one GEMM panel, rows r0 .. r0 + K_MR of (co, kh, kw) for the np pixels j0 ..
 * of input row i, Cb (K_MR, K_NR), to their outputs (+ bias).  Rows (co, kh, 0 .. K_w - 1) are
 * consecutive and, when K_w divides K_MR, in one panel: their products interleave into one run
 * of an output row, a vector loop for U-Net's 2x2 (was a scalar one: a quarter of the layer).
 * Compiled per instruction set like direct_rows. */
static inline __attribute__((always_inline)) void
convt_scatter(float *yn, const float *Cb, const float *b, const struct unet__convt2d_dims *d,
              int r0, int i, int j0, int np) {
    const int KK = d->K_h * d->K_w, R = d->C_out * KK;
    const int group = K_MR % d->K_w == 0 ? d->K_w : 1;
    for (int r = 0; r < K_MR && r0 + r < R; r += group) {
        const int row = r0 + r, co = row / KK;
        const int kh = row % KK / d->K_w, kw = row % d->K_w;
        const float bias = b ? b[co] : 0.0f;
        const size_t oh = (size_t)i * d->K_h + kh;
        float *yr = yn + ((size_t)co * d->H_out + oh) * d->W_out + (size_t)j0 * d->K_w + kw;
        const float *z = Cb + (size_t)r * K_NR;
        if (group == 2) { /* U-Net's 2x2: two rows interleaved */
#pragma omp simd
            for (int j = 0; j < np; j++) {
                yr[2 * j] = z[j] + bias;
                yr[2 * j + 1] = z[K_NR + j] + bias;
            }
        } else
            for (int j = 0; j < np; j++)
                for (int g = 0; g < group; g++)
                    yr[(size_t)j * d->K_w + g] = z[g * K_NR + j] + bias;
    }
}

void unet__convt_scatter_portable(float *yn, const float *Cb, const float *b,
                                  const struct unet__convt2d_dims *d, int r0, int i, int j0,
                                  int np) {
    convt_scatter(yn, Cb, b, d, r0, i, j0, np);
}
#ifdef UNET__X86
UNET__TARGET_AVX2 void unet__convt_scatter_avx2(float *yn, const float *Cb, const float *b,
                                                const struct unet__convt2d_dims *d, int r0,
                                                int i, int j0, int np) {
    convt_scatter(yn, Cb, b, d, r0, i, j0, np);
}
UNET__TARGET_AVX512 void unet__convt_scatter_avx512(float *yn, const float *Cb, const float *b,
                                                    const struct unet__convt2d_dims *d, int r0,
                                                    int i, int j0, int np) {
    convt_scatter(yn, Cb, b, d, r0, i, j0, np);
}
#endif

/* ---- the scatter case's backward, on the same micro-kernel ----
 * With G (R, P) the gather of dy that mirrors the forward's scatter,
 *     G[r = (co, kh, kw)][p = (i, j)] = dy[co][i K_h + kh][j K_w + kw],
 * the forward y = scatter(W^T x) + b has, per image,
 *     dx += W G     (C_in, P), a reduction over R: one GEMM per image, like the forward's;
 *     dW += x G^T   (C_in, R), a reduction over all N P pixels.
 * Words pair values of the reduction index (pack 2, bf16 rows; pack 1 for float32 rows): dx
 * pairs G's rows r = 2k, 2k + 1 (for a 2x2 kernel, the two kw of one output row); dW pairs, in a
 * chunk of T pixels of one image, pixel t with pixel t + ceil(T / 2), so that both halves of a
 * word come from contiguous runs.  No column buffer: G is gathered into the panels as they are
 * packed.  Both products are float32 sums of the row's products (bf16 products on a bf16 row). */

/* lo[j] = G[r][(i, j0 + j)] for j < n: every K_w-th value of one output row from kw; and, when
 * hi, hi[j] = G[r + 1][(i, j0 + j)], in one pass over the row when r and r + 1 share it (the
 * two kw of a 2x2 kernel). */
static void gather_g(float *restrict lo, float *restrict hi, const float *dyn,
                     const struct unet__convt2d_dims *d, int r, int i, int j0, int n) {
    const int KK = d->K_h * d->K_w, co = r / KK, kh = r % KK / d->K_w, kw = r % d->K_w;
    const float *src = dyn + ((size_t)co * d->H_out + (size_t)i * d->K_h + kh) * d->W_out +
                       (size_t)j0 * d->K_w + kw;
    if (hi && d->K_w == 2 && kw == 0) {
#pragma omp simd
        for (int j = 0; j < n; j++) lo[j] = src[2 * j], hi[j] = src[2 * j + 1];
        return;
    }
    if (d->K_w == 1) memcpy(lo, src, sizeof(float) * (size_t)n);
    else
        for (int j = 0; j < n; j++) lo[j] = src[(size_t)j * d->K_w];
    if (hi) gather_g(hi, NULL, dyn, d, r + 1, i, j0, n);
}

/* gather_g over the pixels [p0, p0 + n) of an image, input row by input row; then asks for the
 * cache lines of the next n pixels of the same rows of G (the caller's next panel or chunk: too
 * many rows for the hardware prefetcher to follow). */
static void gather_run(float *lo, float *hi, const float *dyn, const struct unet__convt2d_dims *d,
                       int r, int p0, int n) {
    const int P = d->H_in * d->W_in, KK = d->K_h * d->K_w;
    const int end = p0 + 2 * n < P ? p0 + 2 * n : P;
    for (int p = p0; p < end;) {
        const int i = p / d->W_in, j = p % d->W_in, stop = p < p0 + n ? p0 + n : end;
        const int run = d->W_in - j < stop - p ? d->W_in - j : stop - p;
        if (p < p0 + n) {
            gather_g(lo + (p - p0), hi ? hi + (p - p0) : NULL, dyn, d, r, i, j, run);
        } else {
            const float *src = dyn + ((size_t)(r / KK) * d->H_out + (size_t)i * d->K_h +
                                      r % KK / d->K_w) * d->W_out + (size_t)j * d->K_w;
            for (int f = 0; f < run * d->K_w; f += 16) __builtin_prefetch(src + f);
        }
        p += run;
    }
}

/* dx: A = W (C_in, R) by panels of K_MR input channels, words of R; per thread a B panel of G
 * (kwords x K_NR words), two gathered rows and the (K_MR, K_NR) products.  The pixel panels of
 * all images are split into one contiguous range a thread, so that gather_run's prefetch of the
 * next panel's rows serves the thread that reads them next (with panels dealt out four at a
 * time, the 128 -> 64 layer at 256x256 b4 took 16.8 ms at 2 threads against 19.3 at 1; in
 * ranges, 11.9).  dx is added to, or set (its old contents never read). */
static size_t convt_dx_floats(const struct unet__convt2d_dims *d) {
    const size_t R = (size_t)d->C_out * d->K_h * d->K_w;
    const size_t cip = (size_t)(d->C_in + K_MR - 1) / K_MR * K_MR;
    return cip * R + (size_t)unet__thread_slots() * (R * K_NR + 2 * K_NR + K_MR * K_NR);
}

static void convt_scatter_dx(float *dx, bool set, const float *dy, const float *w,
                             const struct unet__convt2d_dims *d, const struct unet__kernels *K,
                             float *scratch) {
    const int R = d->C_out * d->K_h * d->K_w, C_in = d->C_in, P = d->H_in * d->W_in;
    const int cps = (C_in + K_MR - 1) / K_MR, pack = K->pack, kwords = (R + pack - 1) / pack;
    const int panels = (P + K_NR - 1) / K_NR; /* of K_NR pixels, across input rows */
    float *A = scratch; /* (cps, kwords, K_MR) words */
    float *bufs = A + (size_t)cps * K_MR * R;
    const size_t per_thread = (size_t)R * K_NR + 2 * K_NR + K_MR * K_NR;
    const int team = scatter_team((double)cps * K_MR * R * P * d->N);
    (void)team;
#pragma omp parallel num_threads(team)
    {
        float *B = bufs + (size_t)thread_me() * per_thread;
        float *lo = B + (size_t)R * K_NR, *hi = lo + K_NR, *Cb = hi + K_NR;
        pack_a_panels(K, A, w, C_in, R, (size_t)R, 1); /* W: row ci, words of R */
#pragma omp for schedule(static)
        for (int t = 0; t < d->N * panels; t++) {
            const int n = t / panels, p0 = t % panels * K_NR, np = P - p0 < K_NR ? P - p0 : K_NR;
            const float *dyn = dy + (size_t)n * d->C_out * d->H_out * d->W_out;
            float *dxn = dx + (size_t)n * C_in * P;
            const int width = (np + 15) / 16 * 16;
            /* Rows r, r + 1 of G, gathered together: one word row (pack 2) or two. */
            for (int r = 0; r < R; r += 2) {
                const bool two = r + 1 < R;
                gather_run(lo, two ? hi : NULL, dyn, d, r, p0, np);
                for (int h = 0; h < 2 / pack && r + h < R; h++) {
                    float *dst = B + (size_t)(r / pack + h) * width;
                    K->pack_words(dst, h ? hi : lo, pack == 2 && two ? hi : NULL, np);
                    for (int j = np; j < width; j++) dst[j] = 0.0f;
                }
            }
            for (int cp = 0; cp < cps; cp++) {
                K->micro_gemm(A + (size_t)cp * kwords * K_MR, B, kwords, width, Cb, K_NR, false);
                for (int m = 0; m < K_MR && cp * K_MR + m < C_in; m++) {
                    float *dxr = dxn + (size_t)(cp * K_MR + m) * P + p0;
                    const float *z = Cb + (size_t)m * K_NR;
                    if (set) {
                        memcpy(dxr, z, sizeof(float) * (size_t)np);
                        continue;
                    }
#pragma omp simd
                    for (int j = 0; j < np; j++) dxr[j] += z[j];
                }
            }
        }
    }
}

/* dW: the pixels of each image in chunks of up to CHUNK_WORDS words.  Per chunk, both operands
 * are packed into words of pixels and transposed into the micro-kernel's panels: A = x (C_in
 * rounded to K_MR, chunk), B = G^T (R rounded to 16, chunk); then the micro-tiles (K_MR input
 * channels x up to K_NR of R) of the float32 sums M add the chunk's products.  Two schedules,
 * as the Winograd weight gradient's (winograd.c), chosen by the shape alone so that the sums,
 * and the bits, are the same for any thread count:
 *   - Parts (two chunks or more): the chunks of all images are cut into `parts` contiguous
 *     ranges, each summed into its own M by one thread, which packs its chunks in its own
 *     panels; then dW += M_0 + M_1 + ... in part order.  A thread reads only what it wrote until
 *     that sum.  With the panels shared, each chunk's were half packed by the other core, and
 *     the 128 -> 64 layer at 256x256 b4 gained nothing from a second thread (27.3-28.3 ms at
 *     1 thread, 26.5-26.7 at 2); in parts, 16.9-17.2 ms at 2.
 *   - Shared (one chunk): the team packs the panels, then splits the micro-tiles.
 * Each micro-tile of an M sums its chunks in chunk order. */
enum { CHUNK_WORDS = 128 };

/* The sums' columns R16 (R = C_out K_h K_w rounded up to 16) and rows cip (C_in rounded up to
 * K_MR). */
static int dw_r16(const struct unet__convt2d_dims *d) {
    return (d->C_out * d->K_h * d->K_w + 15) / 16 * 16;
}
static int dw_cip(const struct unet__convt2d_dims *d) {
    return (d->C_in + K_MR - 1) / K_MR * K_MR;
}

/* Parts of the weight gradient's sums: the processors, within DW_PARTS_FLOATS of sums in all,
 * but two at least (so that any machine's tests run this schedule), and at most the chunks. */
#define DW_PARTS_FLOATS ((size_t)1 << 23)

static int convt_dw_parts(const struct unet__convt2d_dims *d, int chunk) {
    const size_t m = (size_t)dw_cip(d) * (size_t)dw_r16(d);
    const size_t P = (size_t)d->H_in * d->W_in;
    const size_t chunks = (size_t)d->N * ((P + (size_t)chunk - 1) / (size_t)chunk);
    size_t parts = (size_t)unet__thread_slots();
    if (parts > DW_PARTS_FLOATS / m) parts = DW_PARTS_FLOATS / m;
    if (parts < 2) parts = 2;
    return (int)(parts < chunks ? parts : chunks);
}

/* Panels' room (A, B) of a part's thread, and the per-thread staging rows. */
static size_t convt_dw_panels(const struct unet__convt2d_dims *d) {
    return (size_t)(dw_cip(d) + dw_r16(d)) * CHUNK_WORDS;
}
enum { DW_STAGE = K_NR * CHUNK_WORDS + 4 * CHUNK_WORDS };

/* Sized for pack 1 (the most chunks, so the most parts). */
static size_t convt_dw_floats(const struct unet__convt2d_dims *d) {
    const size_t parts = (size_t)convt_dw_parts(d, CHUNK_WORDS);
    const size_t slots = (size_t)unet__thread_slots(), bufs = parts < slots ? parts : slots;
    return parts * (size_t)dw_cip(d) * (size_t)dw_r16(d) + bufs * convt_dw_panels(d) +
           slots * DW_STAGE;
}

/* Words of a chunk of T values v[0 .. T): (v[t], v[t + h]) with pack 2, h = ceil(T / 2) (the
 * last hi zero when T is odd), v[t] with pack 1; returns the number of words. */
static int pack_chunk(const struct unet__kernels *K, float *dst, const float *v, int T) {
    if (K->pack == 1) {
        K->pack_words(dst, v, NULL, T);
        return T;
    }
    const int h = (T + 1) / 2;
    K->pack_words(dst, v, v + h, T / 2);
    if (T % 2) K->pack_words(dst + T / 2, v + T / 2, NULL, 1);
    return h;
}

/* dst[k rows + m] = src[m n + k]: `rows` runs of n words into a panel of n rows of `rows`. */
static void transpose_words(float *dst, const float *src, int rows, int n) {
    const uint32_t *s = (const uint32_t *)src;
    uint32_t *t = (uint32_t *)dst;
    for (int k = 0; k < n; k++)
        for (int m = 0; m < rows; m++) t[(size_t)k * rows + m] = s[(size_t)m * n + k];
}

/* Panel b of R16 (a multiple of 16) columns: its first column, and its width in *width: 48
 * wide, but a last 16 is shared with the panel before as 32 + 32 (a 16-wide micro-tile does a
 * third of the multiply-adds per broadcast of A). */
static int r_panel(int R16, int b, int *width) {
    const int full = R16 / K_NR, rest = R16 % K_NR;
    if (rest == 16 && full > 0 && b >= full - 1) {
        *width = 32;
        return (full - 1) * K_NR + (b - full + 1) * 32;
    }
    *width = R16 - b * K_NR < K_NR ? R16 - b * K_NR : K_NR;
    return b * K_NR;
}

/* One chunk of the weight gradient: image n's pixels [p0, p0 + T), `words` words of them. */
struct dw_chunk {
    const float *xn, *dyn;
    int          p0, T, words;
};

/* Chunk c of all images' chunks of CHUNK_WORDS words at K's pack. */
static struct dw_chunk dw_chunk_at(const struct unet__kernels *K,
                                   const struct unet__convt2d_dims *d, const float *dy,
                                   const float *x, int c) {
    const int chunk = CHUNK_WORDS * K->pack, P = d->H_in * d->W_in;
    const int per_image = (P + chunk - 1) / chunk, n = c / per_image;
    struct dw_chunk k = {.xn = x + (size_t)n * d->C_in * P,
                         .dyn = dy + (size_t)n * d->C_out * d->H_out * d->W_out,
                         .p0 = c % per_image * chunk};
    k.T = P - k.p0 < chunk ? P - k.p0 : chunk;
    k.words = (k.T + K->pack - 1) / K->pack;
    return k;
}

/* Panel q of a chunk (the first cps are x's, then G^T's), packed through a thread's staging
 * rows (stage, then two gathered rows of G) into Ap or Bp. */
static void dw_pack_panel(const struct unet__kernels *K, const struct unet__convt2d_dims *d,
                          const struct dw_chunk *k, int q, float *Ap, float *Bp, float *stage) {
    const int R = d->C_out * d->K_h * d->K_w, R16 = dw_r16(d), C_in = d->C_in;
    const int P = d->H_in * d->W_in, cps = dw_cip(d) / K_MR;
    const int chunk = CHUNK_WORDS * K->pack, words = k->words;
    float *gs = stage + (size_t)K_NR * CHUNK_WORDS;
    int rows = K_MR;
    const int first = q < cps ? q * K_MR : r_panel(R16, q - cps, &rows);
    if (q < cps) /* x's channels first .. first + K_MR - 1 */
        for (int m = 0; m < rows; m++) {
            float *dst = stage + (size_t)m * words;
            if (first + m < C_in) {
                const float *src = k->xn + (size_t)(first + m) * P + k->p0;
                pack_chunk(K, dst, src, k->T);
                /* The same row's next chunk (the part's next; too many rows for the hardware
                 * prefetcher to follow), as gather_run does for G. */
                const int ahead = P - k->p0 - k->T < chunk ? P - k->p0 - k->T : chunk;
                for (int f = 0; f < ahead; f += 16) __builtin_prefetch(src + k->T + f);
            } else
                memset(dst, 0, sizeof(float) * (size_t)words);
        }
    else /* G's rows c, c + 1 together (rows is even), input row by input row */
        for (int m = 0; m < rows; m += 2) {
            float *dst = stage + (size_t)m * words;
            const int c = first + m, n2 = c + 1 < R ? 2 : c < R ? 1 : 0;
            if (n2) gather_run(gs, n2 == 2 ? gs + chunk : NULL, k->dyn, d, c, k->p0, k->T);
            for (int h = 0; h < 2; h++) {
                if (h < n2) pack_chunk(K, dst + (size_t)h * words, gs + h * chunk, k->T);
                else memset(dst + (size_t)h * words, 0, sizeof(float) * (size_t)words);
            }
        }
    transpose_words(q < cps ? Ap + (size_t)first * words : Bp + (size_t)first * words, stage,
                    rows, words);
}

/* Micro-tile u of M (cps x rps of them) += the chunk's products (or = when !acc). */
static void dw_products(const struct unet__kernels *K, const struct unet__convt2d_dims *d,
                        float *M, const float *Ap, const float *Bp, int words, int u, bool acc) {
    const int R16 = dw_r16(d), cps = dw_cip(d) / K_MR;
    int width;
    const int cp = u % cps, r0 = r_panel(R16, u / cps, &width);
    K->micro_gemm(Ap + (size_t)cp * K_MR * words, Bp + (size_t)r0 * words, words, width,
                  M + (size_t)cp * K_MR * R16 + r0, R16, acc);
}

static void convt_scatter_dw(float *dw, const float *dy, const float *x,
                             const struct unet__convt2d_dims *d, const struct unet__kernels *K,
                             float *scratch) {
    const int R = d->C_out * d->K_h * d->K_w, R16 = dw_r16(d), C_in = d->C_in;
    const int P = d->H_in * d->W_in, cps = dw_cip(d) / K_MR;
    const int rps = (R16 + K_NR - 1) / K_NR, chunk = CHUNK_WORDS * K->pack;
    const int chunks = d->N * ((P + chunk - 1) / chunk), parts = convt_dw_parts(d, chunk);
    const int slots = unet__thread_slots(), bufs = parts < slots ? parts : slots;
    const size_t m_floats = (size_t)cps * K_MR * R16, panels = convt_dw_panels(d);
    float *M = scratch; /* parts x (cps K_MR, R16) float32 sums */
    float *pan = M + (size_t)parts * m_floats; /* (Ap, Bp) per buffer */
    float *stages = pan + (size_t)bufs * panels;
    const int team = scatter_team((double)cps * K_MR * R16 * P * d->N);
    (void)team;
#pragma omp parallel num_threads(team)
    {
        const int me = thread_me();
        float *stage = stages + (size_t)me * DW_STAGE;
        if (parts > 1) {
            /* Part j: chunks [j C / parts, (j + 1) C / parts) on thread j mod team, in that
             * thread's panels (me < parts <= bufs when it has a part). */
#pragma omp for schedule(static, 1)
            for (int j = 0; j < parts; j++) {
                float *Ap = pan + (size_t)me * panels, *Mj = M + (size_t)j * m_floats;
                float *Bp = Ap + (size_t)cps * K_MR * CHUNK_WORDS;
                const int c0 = (int)((long)chunks * j / parts);
                const int c1 = (int)((long)chunks * (j + 1) / parts);
                for (int c = c0; c < c1; c++) {
                    const struct dw_chunk k = dw_chunk_at(K, d, dy, x, c);
                    for (int q = 0; q < cps + rps; q++) dw_pack_panel(K, d, &k, q, Ap, Bp, stage);
                    for (int u = 0; u < cps * rps; u++)
                        dw_products(K, d, Mj, Ap, Bp, k.words, u, c > c0);
                }
            }
        } else {
            float *Ap = pan, *Bp = Ap + (size_t)cps * K_MR * CHUNK_WORDS;
            const struct dw_chunk k = dw_chunk_at(K, d, dy, x, 0);
#pragma omp for schedule(dynamic, 1)
            for (int q = 0; q < cps + rps; q++) dw_pack_panel(K, d, &k, q, Ap, Bp, stage);
#pragma omp for schedule(static)
            for (int u = 0; u < cps * rps; u++) dw_products(K, d, M, Ap, Bp, k.words, u, false);
        }
#pragma omp for schedule(static)
        for (int ci = 0; ci < C_in; ci++) {
            float *dwr = dw + (size_t)ci * R;
            for (int r = 0; r < R; r++) {
                float s = M[(size_t)ci * R16 + r];
                for (int j = 1; j < parts; j++) s += M[(size_t)j * m_floats + (size_t)ci * R16 + r];
                dwr[r] += s;
            }
        }
    }
}

size_t unet__convt2d_scratch_floats(const struct unet__convt2d_dims *d) {
    struct unet__conv2d_dims c = unet__convt2d_as_conv(d);
    size_t f = unet__conv2d_scratch_floats(&c);
    if (convt_is_scatter(d)) {
        const size_t g[3] = {convt_scatter_floats(d), convt_dx_floats(d), convt_dw_floats(d)};
        for (int i = 0; i < 3; i++)
            if (g[i] > f) f = g[i];
    }
    return f;
}

/* bf16 rows only: on float32 rows the micro-kernel was no faster than OpenBLAS (AVX-512
 * 1.03-1.06x, its deepest layer 0.95x; AVX2 0.92-0.99x; portable 0.04x: bench_convt,
 * docs/performance.md), so float32 keeps gemm.c and its results. */
bool unet__convt2d_backward_packed(const struct unet__convt2d_dims *d,
                                   const struct unet__kernels     *k) {
    return convt_is_scatter(d) && k->pack == 2;
}

static void scatter_backward(float *dx, bool set_dx, float *dw, const float *dy, const float *x,
                             const float *w, const struct unet__convt2d_dims *d,
                             const struct unet__kernels *k, float *scratch) {
    if (dw) convt_scatter_dw(dw, dy, x, d, k, scratch);
    if (dx) convt_scatter_dx(dx, set_dx, dy, w, d, k, scratch);
}

void unet__convt2d_backward_scatter(float *dx, float *dw, const float *dy, const float *x,
                                    const float *w, const struct unet__convt2d_dims *d,
                                    const struct unet__kernels *k, float *scratch) {
    UNET_ASSERT(convt_is_scatter(d));
    scatter_backward(dx, false, dw, dy, x, w, d, k, scratch);
}

void unet__convt2d_forward(float *y, const float *x, const float *w, const float *b,
                           const struct unet__convt2d_dims *d, const struct unet__conv_how *how,
                           float *scratch) {
    /* y = A^T x: the input gradient of the convolution A, with x in the role of dy. */
    if (convt_is_scatter(d)) {
        convt_scatter_forward(y, x, w, b, d, how, scratch);
        return;
    }
    struct unet__conv2d_dims c = unet__convt2d_as_conv(d);
    memset(y, 0, sizeof(float) * (size_t)d->N * d->C_out * d->H_out * d->W_out);
    conv_backward_data_gemm(y, x, w, &c, scratch);
    struct unet__conv_epilogue ep = {.shift = b};
    if (b) epilogue_pass(y, &ep, d->N, d->C_out, (size_t)d->H_out * d->W_out);
}

void unet__convt2d_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                            const float *w, const struct unet__convt2d_dims *d,
                            const struct unet__conv_how *how, float *scratch) {
    unet__convt2d_backward_set(dx, false, dw, db, dy, x, w, d, how, scratch);
}

void unet__convt2d_backward_set(float *dx, bool set_dx, float *dw, float *db, const float *dy,
                                const float *x, const float *w,
                                const struct unet__convt2d_dims *d,
                                const struct unet__conv_how *how, float *scratch) {
    if (db) bias_backward(db, dy, d->N, d->C_out, (size_t)d->H_out * d->W_out);
    const struct unet__kernels *k = row_of(how);
    if (unet__convt2d_backward_packed(d, k)) {
        scatter_backward(dx, set_dx, dw, dy, x, w, d, k, scratch);
        return;
    }
    /* Inverts y = A^T x + b:  dx = A dy (the convolution's forward), dW = x dy-col^T (the
     * convolution's weight gradient with x as its output gradient and dy as its input). */
    struct unet__conv2d_dims c = unet__convt2d_as_conv(d);
    if (dw) conv_backward_weight_gemm(dw, x, dy, &c, scratch);
    if (dx) conv_forward_gemm(dx, dy, w, &c, scratch, set_dx ? 0.0f : 1.0f);
}

/* The transposed convolution's definitions are the convolution's with input and output
 * swapped (unet__convt2d_as_conv): y = A^T x is the input-gradient sum of A with x in the role
 * of dy, and its input gradient dx = A dy the forward sum of A on dy; only the bias terms run
 * over the transposed convolution's own output channels. */
static void convt_bias_ref(float *y, float *db, const float *b, const float *dy,
                           const struct unet__convt2d_dims *d) {
    const size_t P = (size_t)d->H_out * d->W_out;
    for (int n = 0; n < d->N; n++)
        for (int co = 0; co < d->C_out; co++)
            for (size_t p = 0; p < P; p++) {
                const size_t o = ((size_t)n * d->C_out + co) * P + p;
                if (y) y[o] += b[co];
                if (db) db[co] += dy[o];
            }
}

void unet__convt2d_forward_ref(float *y, const float *x, const float *w, const float *b,
                               const struct unet__convt2d_dims *d) {
    const struct unet__conv2d_dims c = unet__convt2d_as_conv(d);
    memset(y, 0, sizeof(float) * (size_t)d->N * d->C_out * d->H_out * d->W_out);
    conv_ref(NULL, false, y, NULL, NULL, NULL, w, NULL, x, &c);
    if (b) convt_bias_ref(y, NULL, b, NULL, d);
}

void unet__convt2d_backward_ref(float *dx, float *dw, float *db, const float *dy, const float *x,
                                const float *w, const struct unet__convt2d_dims *d) {
    const struct unet__conv2d_dims c = unet__convt2d_as_conv(d);
    conv_ref(dx, true, NULL, dw, NULL, dy, w, NULL, x, &c);
    if (db) convt_bias_ref(NULL, db, NULL, dy, d);
}
