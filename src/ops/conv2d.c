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
 * Memory: im2col is done in tiles of output pixels so the column buffer stays under
 * COL_TILE_FLOATS for any image size.  1x1 convolutions with stride 1 and no padding skip
 * im2col: the input already is the column matrix.  Threads: im2col and col2im split channels,
 * GEMMs split output blocks (gemm.c), bias sums split output channels: each thread owns its
 * writes and the result is the same for any thread count.
 */
#include "ops/ops.h"

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

size_t unet__conv2d_scratch_floats(const struct unet__conv2d_dims *d) {
    if (is_pointwise(d)) return 0;
    return (size_t)ckk(d) * (size_t)tile_pixels(d);
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

static void bias_add(float *y, const float *b, int N, int C, size_t P) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            float *yc = y + ((size_t)n * C + c) * P;
            const float bc = b[c];
            for (size_t p = 0; p < P; p++) yc[p] += bc;
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

void unet__conv2d_forward(float *y, const float *x, const float *w, const float *b,
                          const struct unet__conv2d_dims *d, float *scratch) {
    conv_forward_gemm(y, x, w, d, scratch, 0.0f);
    if (b) bias_add(y, b, d->N, d->C_out, (size_t)d->H_out * d->W_out);
}

void unet__conv2d_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                           const float *w, const struct unet__conv2d_dims *d, float *scratch) {
    if (db) bias_backward(db, dy, d->N, d->C_out, (size_t)d->H_out * d->W_out);
    if (dw) conv_backward_weight_gemm(dw, dy, x, d, scratch);
    if (dx) conv_backward_data_gemm(dx, dy, w, d, scratch);
}

void unet__conv2d_forward_ref(float *y, const float *x, const float *w, const float *b,
                              const struct unet__conv2d_dims *d) {
    for (int n = 0; n < d->N; n++)
        for (int co = 0; co < d->C_out; co++)
            for (int oh = 0; oh < d->H_out; oh++)
                for (int ow = 0; ow < d->W_out; ow++) {
                    double acc = b ? b[co] : 0.0;
                    for (int ci = 0; ci < d->C_in; ci++)
                        for (int kh = 0; kh < d->K_h; kh++)
                            for (int kw = 0; kw < d->K_w; kw++) {
                                int ih = oh * d->stride_h - d->pad_h + kh;
                                int iw = ow * d->stride_w - d->pad_w + kw;
                                if (ih < 0 || ih >= d->H_in || iw < 0 || iw >= d->W_in) continue;
                                acc += (double)x[(((size_t)n * d->C_in + ci) * d->H_in + ih) * d->W_in + iw] *
                                       w[(((size_t)co * d->C_in + ci) * d->K_h + kh) * d->K_w + kw];
                            }
                    y[(((size_t)n * d->C_out + co) * d->H_out + oh) * d->W_out + ow] = (float)acc;
                }
}

void unet__conv2d_backward_ref(float *dx, float *dw, float *db, const float *dy, const float *x,
                               const float *w, const struct unet__conv2d_dims *d) {
    /* Inverts y[n,co,oh,ow] = b[co] + sum x[n,ci,ih,iw] w[co,ci,kh,kw] term by term. */
    for (int n = 0; n < d->N; n++)
        for (int co = 0; co < d->C_out; co++)
            for (int oh = 0; oh < d->H_out; oh++)
                for (int ow = 0; ow < d->W_out; ow++) {
                    float g = dy[(((size_t)n * d->C_out + co) * d->H_out + oh) * d->W_out + ow];
                    if (db) db[co] += g;
                    for (int ci = 0; ci < d->C_in; ci++)
                        for (int kh = 0; kh < d->K_h; kh++)
                            for (int kw = 0; kw < d->K_w; kw++) {
                                int ih = oh * d->stride_h - d->pad_h + kh;
                                int iw = ow * d->stride_w - d->pad_w + kw;
                                if (ih < 0 || ih >= d->H_in || iw < 0 || iw >= d->W_in) continue;
                                size_t xi = (((size_t)n * d->C_in + ci) * d->H_in + ih) * d->W_in + iw;
                                size_t wi = (((size_t)co * d->C_in + ci) * d->K_h + kh) * d->K_w + kw;
                                if (dx) dx[xi] += g * w[wi];
                                if (dw) dw[wi] += g * x[xi];
                            }
                }
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

size_t unet__convt2d_scratch_floats(const struct unet__convt2d_dims *d) {
    struct unet__conv2d_dims c = unet__convt2d_as_conv(d);
    return unet__conv2d_scratch_floats(&c);
}

void unet__convt2d_forward(float *y, const float *x, const float *w, const float *b,
                           const struct unet__convt2d_dims *d, float *scratch) {
    /* y = A^T x: the input gradient of the convolution A, with x in the role of dy. */
    struct unet__conv2d_dims c = unet__convt2d_as_conv(d);
    memset(y, 0, sizeof(float) * (size_t)d->N * d->C_out * d->H_out * d->W_out);
    conv_backward_data_gemm(y, x, w, &c, scratch);
    if (b) bias_add(y, b, d->N, d->C_out, (size_t)d->H_out * d->W_out);
}

void unet__convt2d_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                            const float *w, const struct unet__convt2d_dims *d, float *scratch) {
    /* Inverts y = A^T x + b:  dx = A dy (the convolution's forward), dW = x dy-col^T (the
     * convolution's weight gradient with x as its output gradient and dy as its input). */
    struct unet__conv2d_dims c = unet__convt2d_as_conv(d);
    if (db) bias_backward(db, dy, d->N, d->C_out, (size_t)d->H_out * d->W_out);
    if (dw) conv_backward_weight_gemm(dw, x, dy, &c, scratch);
    if (dx) conv_forward_gemm(dx, dy, w, &c, scratch, 1.0f);
}

void unet__convt2d_forward_ref(float *y, const float *x, const float *w, const float *b,
                               const struct unet__convt2d_dims *d) {
    /* Direct scatter definition: every input pixel spreads its kernel over the output. */
    size_t ny = (size_t)d->N * d->C_out * d->H_out * d->W_out;
    for (size_t i = 0; i < ny; i++) y[i] = 0.0f;
    for (int n = 0; n < d->N; n++)
        for (int ci = 0; ci < d->C_in; ci++)
            for (int ih = 0; ih < d->H_in; ih++)
                for (int iw = 0; iw < d->W_in; iw++) {
                    float v = x[(((size_t)n * d->C_in + ci) * d->H_in + ih) * d->W_in + iw];
                    for (int co = 0; co < d->C_out; co++)
                        for (int kh = 0; kh < d->K_h; kh++)
                            for (int kw = 0; kw < d->K_w; kw++) {
                                int oh = ih * d->stride_h - d->pad_h + kh;
                                int ow = iw * d->stride_w - d->pad_w + kw;
                                if (oh < 0 || oh >= d->H_out || ow < 0 || ow >= d->W_out) continue;
                                y[(((size_t)n * d->C_out + co) * d->H_out + oh) * d->W_out + ow] +=
                                    v * w[(((size_t)ci * d->C_out + co) * d->K_h + kh) * d->K_w + kw];
                            }
                }
    if (b)
        for (int n = 0; n < d->N; n++)
            for (int co = 0; co < d->C_out; co++)
                for (size_t p = 0; p < (size_t)d->H_out * d->W_out; p++)
                    y[((size_t)n * d->C_out + co) * d->H_out * d->W_out + p] += b[co];
}

void unet__convt2d_backward_ref(float *dx, float *dw, float *db, const float *dy, const float *x,
                                const float *w, const struct unet__convt2d_dims *d) {
    for (int n = 0; n < d->N; n++)
        for (int ci = 0; ci < d->C_in; ci++)
            for (int ih = 0; ih < d->H_in; ih++)
                for (int iw = 0; iw < d->W_in; iw++) {
                    size_t xi = (((size_t)n * d->C_in + ci) * d->H_in + ih) * d->W_in + iw;
                    for (int co = 0; co < d->C_out; co++)
                        for (int kh = 0; kh < d->K_h; kh++)
                            for (int kw = 0; kw < d->K_w; kw++) {
                                int oh = ih * d->stride_h - d->pad_h + kh;
                                int ow = iw * d->stride_w - d->pad_w + kw;
                                if (oh < 0 || oh >= d->H_out || ow < 0 || ow >= d->W_out) continue;
                                float g = dy[(((size_t)n * d->C_out + co) * d->H_out + oh) * d->W_out + ow];
                                size_t wi = (((size_t)ci * d->C_out + co) * d->K_h + kh) * d->K_w + kw;
                                if (dx) dx[xi] += g * w[wi];
                                if (dw) dw[wi] += g * x[xi];
                            }
                }
    if (db)
        for (int n = 0; n < d->N; n++)
            for (int co = 0; co < d->C_out; co++)
                for (size_t p = 0; p < (size_t)d->H_out * d->W_out; p++)
                    db[co] += dy[((size_t)n * d->C_out + co) * d->H_out * d->W_out + p];
}
