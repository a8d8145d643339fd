/* ops.h — the layers U-Net and FCN are made of, each with forward and backward.
 *
 * Conventions (STYLE.md section 5):
 *   - Outputs first, then const inputs, then a dims struct, then scratch.
 *   - Forward overwrites its output.  Backward ACCUMULATES (+=) into every gradient it is
 *     given; the trainer zeroes gradients once per step.  A NULL gradient pointer skips it.
 *   - Tensors are float32 NCHW, contiguous.  Shapes are validated by the model when it is
 *     planned, so ops only assert; they never allocate and never fail.
 *   - Each op file keeps a naive _ref loop nest beside the fast path: the definition.
 *   - Parallel loops split an output dimension, so each thread owns its writes and results
 *     do not depend on the thread count.  Ops run with the calling thread's OpenMP team size
 *     (unet__use_threads).
 */
#ifndef UNET_OPS_H
#define UNET_OPS_H

#include "gemm.h"
#include "internal.h"

/* ---------------------------------------------------------------------------------------
 * Conv2d (conv2d.c): y = w * x + b, PyTorch's nn.Conv2d with dilation 1, groups 1.
 * x (N, C_in, H_in, W_in), w (C_out, C_in, K_h, K_w), b (C_out) or NULL
 *   -> y (N, C_out, H_out, W_out), H_out = (H_in + 2 pad_h - K_h) / stride_h + 1.
 * ------------------------------------------------------------------------------------- */
struct unet__conv2d_dims {
    int N, C_in, H_in, W_in;
    int C_out, K_h, K_w;
    int stride_h, stride_w;
    int pad_h, pad_w;
    int H_out, W_out;       /* derived by unet__conv2d_dims_init */
};

/* How a convolution runs: the kernel row (ops/kernels.h: its precision and instruction set;
 * NULL: the best float32 row this CPU has) and, for a forward by Winograd, the weights already
 * transformed for that row by unet__winograd_weights (NULL: transformed in the call).  The model
 * passes its precision's row, and at inference its cache of transformed weights (model.h);
 * a NULL `how` is float32 with nothing cached.  Only the Winograd products and the 2x2
 * up-convolution's GEMM depend on the row's precision: the other paths are float32 whatever
 * it is (ops/kernels.h). */
struct unet__kernels;
struct unet__conv_how {
    const struct unet__kernels *k;
    const float                *wino_u;
};

/* Checks the fields above H_out and fills H_out, W_out.  name labels the error message. */
unet_status unet__conv2d_dims_init(unet_ctx *ctx, struct unet__conv2d_dims *d, const char *name);
/* Floats of scratch forward and backward need (bounded: im2col is tiled). */
size_t unet__conv2d_scratch_floats(const struct unet__conv2d_dims *d);
/* What the forward alone needs (an inference plan): at most unet__conv2d_scratch_floats. */
size_t unet__conv2d_forward_scratch_floats(const struct unet__conv2d_dims *d);

void unet__conv2d_forward(float *y, const float *x, const float *w, const float *b,
                          const struct unet__conv2d_dims *d, float *scratch);
/* dx += dL/dx, dw += dL/dw, db += dL/db; any may be NULL.  how: as for
 * unet__conv2d_forward_ep (its wino_u is not read: the input gradient needs other transforms). */
void unet__conv2d_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                           const float *w, const struct unet__conv2d_dims *d,
                           const struct unet__conv_how *how, float *scratch);
/* The same, but dx = dL/dx when set_dx (dx's old contents, garbage or not, are not read): a
 * gradient whose only contributor this is needs no zeroing first, and the Winograd input
 * gradient then writes it without reading it (model_run.c). */
void unet__conv2d_backward_set(float *dx, bool set_dx, float *dw, float *db, const float *dy,
                               const float *x, const float *w, const struct unet__conv2d_dims *d,
                               const struct unet__conv_how *how, float *scratch);
void unet__conv2d_forward_ref(float *y, const float *x, const float *w, const float *b,
                              const struct unet__conv2d_dims *d);
void unet__conv2d_backward_ref(float *dx, float *dw, float *db, const float *dy, const float *x,
                               const float *w, const struct unet__conv2d_dims *d);

/* What a convolution does with its result before storing it, per output channel co:
 *     v = conv * scale[co] + shift[co];  v = max(v, 0) if relu;  y = v, or y += v if accumulate
 * scale NULL means 1, shift NULL means 0.  A bias is a shift; an inference-mode batch-norm folds
 * into scale = gamma / sqrt(running_var + eps), shift = beta - running_mean * scale. */
struct unet__conv_epilogue {
    const float *scale, *shift;
    bool         relu;
    bool         accumulate;
    /* When non-NULL (and unet__conv2d_fusable): also the 2x2 stride-2 max-pool of y, floor
     * mode, (N, C_out, H_out / 2, W_out / 2), with maxpool.c's semantics (the first maximum of
     * the row-major window wins, NaN propagates).  Inference's fused conv-BN-ReLU-pool. */
    float       *pool;
};

/* The epilogue's element-wise part on n outputs of channel co, in place: the one routine the
 * direct, GEMM and Winograd paths of conv2d.c and winograd.c apply (compiled into each
 * instruction-set copy of them).  ep NULL: v * 1 + 0 (which turns -0 into +0).  ReLU keeps NaN
 * and maps -0 to -0, as relu.c. */
static inline __attribute__((always_inline)) void
unet__epilogue_apply(float *v, size_t n, const struct unet__conv_epilogue *ep, int co) {
    const float a = ep && ep->scale ? ep->scale[co] : 1.0f;
    const float b = ep && ep->shift ? ep->shift[co] : 0.0f;
    const bool  relu = ep && ep->relu;
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        const float t = v[i] * a + b;
        v[i] = relu && t < 0.0f ? 0.0f : t;
    }
}

/* Conv2d with an epilogue (conv2d.c): the fast path the model uses; unet__conv2d_forward is
 * this with shift = b, float32. */
void unet__conv2d_forward_ep(float *y, const float *x, const float *w,
                             const struct unet__conv2d_dims *d,
                             const struct unet__conv_epilogue *ep,
                             const struct unet__conv_how *how, float *scratch);

/* The direct convolution for few input channels (conv2d.c), one output row q = (n, co, oh) with
 * its epilogue, compiled per instruction set; ops/kernels.h picks the copy. */
typedef void (*unet__conv2d_rows_fn)(float *y, const float *x, const float *w,
                                     const struct unet__conv2d_dims   *d,
                                     const struct unet__conv_epilogue *ep, long long q);
void unet__conv2d_direct_rows_portable(float *y, const float *x, const float *w,
                                       const struct unet__conv2d_dims   *d,
                                       const struct unet__conv_epilogue *ep, long long q);
void unet__conv2d_direct_rows_avx2(float *y, const float *x, const float *w,
                                   const struct unet__conv2d_dims   *d,
                                   const struct unet__conv_epilogue *ep, long long q);
void unet__conv2d_direct_rows_avx512(float *y, const float *x, const float *w,
                                     const struct unet__conv2d_dims   *d,
                                     const struct unet__conv_epilogue *ep, long long q);

/* Whether the forward of d runs by Winograd, which can read a concatenation's two inputs
 * (unet__conv2d_forward_cat) and write a pooled copy (epilogue pool). */
bool unet__conv2d_fusable(const struct unet__conv2d_dims *d);
/* The convolution of the channel concatenation [a, b] (a: channels [0, c_a), b: the rest, both
 * (N, ., H_in, W_in)) without forming it, where unet__conv2d_fusable(d): inference's fused
 * concat + conv (model.c).  Same result as unet__conv2d_forward_ep on the concatenation. */
void unet__conv2d_forward_cat(float *y, const float *a, const float *b, int c_a, const float *w,
                              const struct unet__conv2d_dims *d,
                              const struct unet__conv_epilogue *ep,
                              const struct unet__conv_how *how, float *scratch);

/* ---------------------------------------------------------------------------------------
 * Winograd F(4x4, 3x3) (winograd.c): 3x3 stride-1 convolutions (padding 0..2, C_out >= 16)
 * with 4x fewer multiplications than im2col + GEMM.  conv2d.c uses it for the
 * forward pass and the input gradient when it applies.
 * ------------------------------------------------------------------------------------- */
bool unet__winograd_applies(const struct unet__conv2d_dims *d);
/* Floats of scratch unet__conv2d_winograd needs for d (0 when it does not apply), enough for
 * every kernel row (float32 and bf16 blocks differ). */
size_t unet__winograd_scratch_floats(const struct unet__conv2d_dims *d);
/* y (=|+=) epilogue(conv(x, w)) on how's row (NULL: float32).  flip: w is stored as the
 * (C_out, C_in, 3, 3) weight of the forward convolution whose input gradient this is, i.e. this
 * computes conv(x, w[ci][co] rotated 180 degrees) for d = unet__winograd_dims_data(forward
 * dims).  how->wino_u, when given (never with flip), holds w transformed for the row. */
void unet__conv2d_winograd(float *y, const float *x, const float *w, bool flip,
                           const struct unet__conv2d_dims *d,
                           const struct unet__conv_epilogue *ep,
                           const struct unet__conv_how *how, float *scratch);
/* The forward convolution of the channel concatenation [a, b] without forming it: a holds
 * channels [0, c_a) and b the other C_in - c_a, both (N, ., H_in, W_in).  Inference's fused
 * concat + conv (model.c); only where unet__winograd_applies. */
void unet__conv2d_winograd_cat(float *y, const float *a, const float *b, int c_a, const float *w,
                               const struct unet__conv2d_dims *d,
                               const struct unet__conv_epilogue *ep,
                               const struct unet__conv_how *how, float *scratch);
/* The dims of the convolution that computes the input gradient of d: C_in and C_out swapped,
 * input H_out x W_out, output H_in x W_in, padding K - 1 - pad (stride 1). */
struct unet__conv2d_dims unet__winograd_dims_data(const struct unet__conv2d_dims *d);
/* dw (C_out, C_in, 3, 3) += the weight gradient of conv(x, w) for output gradient dy, by the
 * adjoint of the same transforms (weight gradients of 3x3 stride-1 convolutions where
 * unet__winograd_applies), with the products on row k (NULL: float32). */
void unet__conv2d_winograd_wgrad(float *dw, const float *dy, const float *x,
                                 const struct unet__conv2d_dims *d,
                                 const struct unet__kernels *k, float *scratch);
size_t unet__winograd_wgrad_scratch_floats(const struct unet__conv2d_dims *d);
/* The transformed weights of the forward convolution d (w (C_out, C_in, 3, 3)) as row k's
 * products read them: unet__winograd_weights_floats(d, k) floats, made by
 * unet__winograd_weights; the same for any N, H, W, so a model keeps them from one forward to
 * the next while its weights do not change (model.h, the weight cache). */
size_t unet__winograd_weights_floats(const struct unet__conv2d_dims *d,
                                     const struct unet__kernels *k);
void unet__winograd_weights(float *u, const float *w, const struct unet__conv2d_dims *d,
                            const struct unet__kernels *k);
/* The GEMM micro-kernel (winograd_<isa>.c; ops/kernels.h picks the copy for the CPU): C (8 x
 * width, leading dimension ldc) = (or += when acc) A^T B over K, A (K, 8) and B (K, width)
 * contiguous, width 16, 32 or 48, in 32-bit words (ops/winograd.h: a float, or a pair of bf16
 * whose two products are summed in float32); C is float32.  Winograd's products and the 2x2
 * stride-2 transposed convolution (conv2d.c) run on it. */
enum { UNET__MICRO_MR = 8, UNET__MICRO_NR = 48 }; /* rows of C; the widest width */
typedef void (*unet__micro_gemm_fn)(const void *A, const void *B, int K, int width, float *C,
                                    int ldc, bool acc);
/* n operand words (ops/winograd.h) from float runs: lo (one value of K per word), or lo and hi
 * (the next value of K; NULL: zero) for two-value words.  Part of each kernel row, for the
 * operands packed outside the Winograd passes (the 2x2 up-convolution's GEMM). */
typedef void (*unet__pack_words_fn)(void *dst, const float *lo, const float *hi, int n);
void unet__pack_words_f32(void *dst, const float *lo, const float *hi, int n);
/* The 2x2 (kernel == stride) up-convolution's scatter of one GEMM panel's products, rows r0 ..
 * r0 + UNET__MICRO_MR of (co, kh, kw) for the np pixels j0 .. of input row i, to the output of
 * one image yn (+ bias b, NULL: none) (conv2d.c), compiled per instruction set. */
struct unet__convt2d_dims;
typedef void (*unet__convt_scatter_fn)(float *yn, const float *Cb, const float *b,
                                       const struct unet__convt2d_dims *d, int r0, int i, int j0,
                                       int np);
void unet__convt_scatter_portable(float *yn, const float *Cb, const float *b,
                                  const struct unet__convt2d_dims *d, int r0, int i, int j0,
                                  int np);
void unet__convt_scatter_avx2(float *yn, const float *Cb, const float *b,
                              const struct unet__convt2d_dims *d, int r0, int i, int j0, int np);
void unet__convt_scatter_avx512(float *yn, const float *Cb, const float *b,
                                const struct unet__convt2d_dims *d, int r0, int i, int j0, int np);
/* Tests only (not thread-safe): caps the scratch blocks at about `floats` each so that small
 * cases run in several output-channel and tile blocks, and writes every output with the
 * streaming stores of large maps (winograd.c); 0 restores the default. */
void unet__winograd_set_budget(size_t floats);

/* ---------------------------------------------------------------------------------------
 * ConvTranspose2d (conv2d.c): the adjoint of Conv2d, PyTorch's nn.ConvTranspose2d.
 * x (N, C_in, H_in, W_in), w (C_in, C_out, K_h, K_w), b (C_out) or NULL
 *   -> y (N, C_out, H_out, W_out), H_out = (H_in - 1) stride_h - 2 pad_h + K_h + outpad_h.
 * Its forward is conv2d's input gradient and its input gradient is conv2d's forward: the same
 * GEMM kernels serve both.
 * ------------------------------------------------------------------------------------- */
struct unet__convt2d_dims {
    int N, C_in, H_in, W_in;
    int C_out, K_h, K_w;
    int stride_h, stride_w;
    int pad_h, pad_w;
    int outpad_h, outpad_w;
    int H_out, W_out;       /* derived by unet__convt2d_dims_init */
};

unet_status unet__convt2d_dims_init(unet_ctx *ctx, struct unet__convt2d_dims *d, const char *name);
/* The convolution whose adjoint this is: it maps (C_out, H_out, W_out) to (C_in, H_in, W_in)
 * with weight (C_in, C_out, K_h, K_w) read as a Conv2d weight. */
struct unet__conv2d_dims unet__convt2d_as_conv(const struct unet__convt2d_dims *d);
size_t unet__convt2d_scratch_floats(const struct unet__convt2d_dims *d);

/* how: as for unet__conv2d_forward_ep (the scatter GEMMs of a kernel == stride up-convolution
 * run on its row: the forward on any row, the backward on a bf16 row,
 * unet__convt2d_backward_packed; the rest is float32). */
void unet__convt2d_forward(float *y, const float *x, const float *w, const float *b,
                           const struct unet__convt2d_dims *d, const struct unet__conv_how *how,
                           float *scratch);
void unet__convt2d_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                            const float *w, const struct unet__convt2d_dims *d,
                            const struct unet__conv_how *how, float *scratch);
/* The same, but dx = dL/dx when set_dx (its old contents are not read), as
 * unet__conv2d_backward_set. */
void unet__convt2d_backward_set(float *dx, bool set_dx, float *dw, float *db, const float *dy,
                                const float *x, const float *w,
                                const struct unet__convt2d_dims *d,
                                const struct unet__conv_how *how, float *scratch);
/* Whether unet__convt2d_backward of d on row k (how's) runs unet__convt2d_backward_scatter
 * (the scatter case, kernel == stride without padding, on a bf16 row) rather than the float32
 * GEMMs of gemm.c. */
bool unet__convt2d_backward_packed(const struct unet__convt2d_dims *d,
                                   const struct unet__kernels     *k);
/* The scatter case's input and weight gradients (dx, dw accumulated; either may be NULL) on
 * row k's GEMM micro-kernel, in the scratch of unet__convt2d_scratch_floats; d must be the
 * scatter case.  Tests and bench_convt run it on float32 rows too. */
void unet__convt2d_backward_scatter(float *dx, float *dw, const float *dy, const float *x,
                                    const float *w, const struct unet__convt2d_dims *d,
                                    const struct unet__kernels *k, float *scratch);
void unet__convt2d_forward_ref(float *y, const float *x, const float *w, const float *b,
                               const struct unet__convt2d_dims *d);
void unet__convt2d_backward_ref(float *dx, float *dw, float *db, const float *dy, const float *x,
                                const float *w, const struct unet__convt2d_dims *d);

/* ---------------------------------------------------------------------------------------
 * BatchNorm2d (batchnorm.c), PyTorch semantics: training normalises with the batch mean and
 * the biased variance, and updates running_mean/var (unbiased variance) with momentum;
 * eval uses the running statistics.  gamma/beta NULL = affine off.
 * ------------------------------------------------------------------------------------- */
struct unet__bn_dims {
    int   N, C, H, W;
    float eps;          /* 1e-5 */
    float momentum;     /* 0.1 */
};

/* x, y (N, C, H, W); y may alias x.  save_mean, save_rstd (C) are written for backward
 * (rstd = 1/sqrt(var_biased + eps)).  running_mean/var (C) are updated when non-NULL. */
void unet__batchnorm_forward_train(float *y, float *save_mean, float *save_rstd,
                                   float *running_mean, float *running_var, const float *x,
                                   const float *gamma, const float *beta,
                                   const struct unet__bn_dims *d);
void unet__batchnorm_forward_eval(float *y, const float *x, const float *gamma, const float *beta,
                                  const float *running_mean, const float *running_var,
                                  const struct unet__bn_dims *d);
/* Training-mode backward (batch statistics): dx, dgamma, dbeta accumulate. */
void unet__batchnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                              const float *x, const float *gamma, const float *save_mean,
                              const float *save_rstd, const struct unet__bn_dims *d);
/* The same with dx = its gradient when set_dx (dx's old contents are not read), as
 * unet__conv2d_backward_set. */
void unet__batchnorm_backward_set(float *dx, bool set_dx, float *dgamma, float *dbeta,
                                  const float *dy, const float *x, const float *gamma,
                                  const float *save_mean, const float *save_rstd,
                                  const struct unet__bn_dims *d);
/* Synchronised batch-norm (data-parallel training): fn(v, n, user) replaces the n doubles of v
 * by their sums over all processes (every process calls it alike); buf holds 2 C + 1 doubles.
 * The batch statistics (forward) and the sums of dx (backward) are then over every process's
 * batch; dgamma and dbeta stay this process's share. */
struct unet__bn_sync {
    void  (*fn)(double *v, size_t n, void *user);
    void   *user;
    double *buf;
};
void unet__batchnorm_forward_train_sync(float *y, float *save_mean, float *save_rstd,
                                        float *running_mean, float *running_var, const float *x,
                                        const float *gamma, const float *beta,
                                        const struct unet__bn_dims *d,
                                        const struct unet__bn_sync *sync);
void unet__batchnorm_backward_sync(float *dx, bool set_dx, float *dgamma, float *dbeta,
                                   const float *dy, const float *x, const float *gamma,
                                   const float *save_mean, const float *save_rstd,
                                   const struct unet__bn_dims *d,
                                   const struct unet__bn_sync *sync);
void unet__batchnorm_forward_train_ref(float *y, float *save_mean, float *save_rstd,
                                       float *running_mean, float *running_var, const float *x,
                                       const float *gamma, const float *beta,
                                       const struct unet__bn_dims *d);
void unet__batchnorm_backward_ref(float *dx, float *dgamma, float *dbeta, const float *dy,
                                  const float *x, const float *gamma, const float *save_mean,
                                  const float *save_rstd, const struct unet__bn_dims *d);

/* ---------------------------------------------------------------------------------------
 * ReLU (relu.c).  y may alias x.  Backward reads the output: dx += dy * (y > 0), as PyTorch.
 * ------------------------------------------------------------------------------------- */
void unet__relu_forward(float *y, const float *x, size_t n);
void unet__relu_backward(float *dx, const float *dy, const float *y, size_t n);
/* dy = y <= 0 ? 0 : dy in place (the backward of a ReLU fused into the node that made y). */
void unet__relu_mask_grad(float *dy, const float *y, size_t n);

/* ---------------------------------------------------------------------------------------
 * MaxPool2d(2, stride 2) (maxpool.c): floor on odd sizes (H_out = H_in / 2) or, in ceil mode
 * (H_out = (H_in + 1) / 2), the last odd row/column pooled alone; the first maximum in a window wins
 * and NaN propagates, as PyTorch.  argmax (N, C, H_out, W_out) keeps the window index 0..3
 * (row-major in the 2x2 window) for backward.
 * ------------------------------------------------------------------------------------- */
/* One 2x2 window: the best of a, b (top row), c, e (bottom row), its index 0..3 in *k.  A
 * value replaces the best so far when it is greater or NaN (maxpool.c explains why).  Shared
 * by maxpool.c and the pool in Winograd's epilogue; written with selects so that it vectorizes
 * over the lanes of the latter (whose index is unused and drops out). */
static inline __attribute__((always_inline)) float
unet__maxpool_window(float a, float b, float c, float e, uint8_t *k) {
    const bool take_b = b > a || b != b;
    float      m = take_b ? b : a;
    int        i = take_b ? 1 : 0;
    const bool take_c = c > m || c != c;
    m = take_c ? c : m;
    i = take_c ? 2 : i;
    const bool take_e = e > m || e != e;
    m = take_e ? e : m;
    i = take_e ? 3 : i;
    *k = (uint8_t)i;
    return m;
}
struct unet__pool_dims {
    int N, C, H_in, W_in;
    int H_out, W_out;       /* H_in / 2 (floor) or (H_in + 1) / 2 (ceil), likewise W */
};
void unet__maxpool2_forward(float *y, uint8_t *argmax, const float *x, const struct unet__pool_dims *d);
void unet__maxpool2_backward(float *dx, const float *dy, const uint8_t *argmax,
                             const struct unet__pool_dims *d);
void unet__maxpool2_forward_ref(float *y, uint8_t *argmax, const float *x,
                                const struct unet__pool_dims *d);

/* ---------------------------------------------------------------------------------------
 * Bilinear upsampling (upsample.c), PyTorch's F.interpolate(mode='bilinear') to (H_out, W_out)
 * with align_corners true or false (U-Net: 2x, align_corners true).
 * ------------------------------------------------------------------------------------- */
struct unet__upsample_dims {
    int  N, C, H_in, W_in;
    int  H_out, W_out;
    bool align_corners;
};
void unet__upsample_bilinear_forward(float *y, const float *x, const struct unet__upsample_dims *d);
void unet__upsample_bilinear_backward(float *dx, const float *dy, const struct unet__upsample_dims *d);
void unet__upsample_bilinear_forward_ref(float *y, const float *x, const struct unet__upsample_dims *d);
void unet__upsample_bilinear_backward_ref(float *dx, const float *dy,
                                          const struct unet__upsample_dims *d);

/* ---------------------------------------------------------------------------------------
 * Channel concatenation with crop or pad (concat.c): y = [place(a), place(b)] along channels,
 * where place(x)[c, i, j] = x[c, i + off_h, j + off_w], zero outside x.
 *   - the paper's crop_and_concat: the skip map a is larger and centre-cropped,
 *     off = (H_a - H) / 2 (floor);
 *   - PyTorch ports' F.pad: the upsampled map b is smaller and zero-padded,
 *     off = -((H - H_b) / 2), i.e. diff // 2 zeros before and the rest after.
 * ------------------------------------------------------------------------------------- */
struct unet__place {
    int C, H, W;            /* the input's shape */
    int off_h, off_w;
};
struct unet__concat_dims {
    int N, H, W;            /* output spatial size; output channels = a.C + b.C */
    struct unet__place a, b;
};
/* Centre crop (in >= out) or F.pad-style zero pad (in < out), per dimension. */
void unet__place_center(struct unet__place *p, int C, int H_in, int W_in, int H_out, int W_out);
void unet__concat_forward(float *y, const float *a, const float *b, const struct unet__concat_dims *d);
void unet__concat_backward(float *da, float *db, const float *dy, const struct unet__concat_dims *d);
/* The same, but da = dL/da when set_a (its old contents are not read), db likewise. */
void unet__concat_backward_set(float *da, bool set_a, float *db, bool set_b, const float *dy,
                               const struct unet__concat_dims *d);
void unet__concat_forward_ref(float *y, const float *a, const float *b,
                              const struct unet__concat_dims *d);

/* FCN's skip fusion: y (N, C, H, W) = a + place(b); a has the output's shape (crop.py's
 * Crop layer then Eltwise SUM).  Backward: da += dy, db += the placed window of dy. */
struct unet__add_dims {
    int N, C, H, W;
    struct unet__place b;
};
void unet__add_place_forward(float *y, const float *a, const float *b, const struct unet__add_dims *d);
void unet__add_place_backward(float *da, float *db, const float *dy, const struct unet__add_dims *d);

/* A crop (or pad) alone: y (N, C, H, W) = place(x). */
void unet__crop_forward(float *y, const float *x, int N, int H, int W, const struct unet__place *p);
void unet__crop_backward(float *dx, const float *dy, int N, int H, int W, const struct unet__place *p);

/* ---------------------------------------------------------------------------------------
 * Dropout / Dropout2d (dropout.c), inverted: kept values are scaled by 1/(1-p) in training,
 * eval is the identity (the model skips the op).  mask holds 1 = keep, 0 = drop, one byte per
 * element (Dropout) or per (n, c) channel (Dropout2d), drawn from rng.
 * ------------------------------------------------------------------------------------- */
struct unet__dropout_dims {
    int   N, C, H, W;
    float p;                /* drop probability, 0 <= p < 1 */
    bool  channelwise;      /* Dropout2d */
};
void unet__dropout_forward(float *y, uint8_t *mask, const float *x,
                           const struct unet__dropout_dims *d, struct unet__rng *rng);
/* Applies a given mask (the golden tests pass PyTorch's). */
void unet__dropout_apply(float *y, const uint8_t *mask, const float *x,
                         const struct unet__dropout_dims *d);
void unet__dropout_backward(float *dx, const float *dy, const uint8_t *mask,
                            const struct unet__dropout_dims *d);

/* ---------------------------------------------------------------------------------------
 * Losses (loss.c).  logits (N, C, H, W); target (N, H, W) class ids; weight (N, H, W) or NULL.
 * A target < 0 marks an unlabeled pixel: every loss leaves it out (no loss, no gradient, not
 * counted in a mean or a Dice sum).
 * Each returns the loss (double) and, when dlogits is non-NULL, ACCUMULATES
 * scale * dLoss/dlogits into it, so CE + Dice is two calls on one gradient buffer.
 * ------------------------------------------------------------------------------------- */
struct unet__loss_dims {
    int N, C, H, W;
};
/* Softmax cross entropy over channels:
 *   loss = sum_{x not ignored} w(x) * -log softmax(logits(x))[t(x)] / #{x not ignored}
 * i.e. PyTorch's (F.cross_entropy(..., reduction='none', ignore_index=ii) * w).sum()
 * / (t != ii).sum().  Pixels with t == ignore_index or t < 0 are ignored.  0 when every pixel
 * is ignored. */
double unet__softmax_ce(float *dlogits, float scale, const float *logits, const int32_t *target,
                        const float *weight, int ignore_index, const struct unet__loss_dims *d);
/* Sigmoid binary cross entropy with logits, C == 1, target 0/1:
 *   loss = mean_x w(x) * BCEWithLogits(logit(x), t(x)) over the labeled pixels. */
double unet__bce_logits(float *dlogits, float scale, const float *logits, const int32_t *target,
                        const float *weight, const struct unet__loss_dims *d);
/* Soft Dice loss: p = softmax over channels (sigmoid when C == 1), y = one-hot(target);
 *   loss = 1 - mean_c (2 sum_x p_c y_c + eps) / (sum_x p_c + sum_x y_c + eps)
 * with the sums over the batch and all pixels and every class (background included);
 * eps = 1e-6 as in milesial/Pytorch-UNet.  For C == 1 the one class is the foreground. */
double unet__dice_loss(float *dlogits, float scale, const float *logits, const int32_t *target,
                       float eps, const struct unet__loss_dims *d);

/* ---------------------------------------------------------------------------------------
 * Optimizers (optim.c), PyTorch 1.13's single-tensor update formulas, float32 state.
 * Each updates n parameters p in place from gradients g.  Hyperparameters are doubles, like the
 * Python scalars PyTorch computes its bias corrections with (0.9, not the float 0.899999976).
 * ------------------------------------------------------------------------------------- */
struct unet__sgd {
    double lr, momentum, weight_decay;
    bool  nesterov;         /* dampening is 0 */
};
/* buf (n): the momentum buffer, zero before the first step (then buf = g, as PyTorch's clone). */
void unet__sgd_step(float *p, const float *g, float *buf, size_t n, const struct unet__sgd *o);

struct unet__adam {
    double lr, beta1, beta2, eps, weight_decay;
    bool  decoupled;        /* AdamW: p *= 1 - lr * weight_decay instead of g += weight_decay * p */
};
/* m, v (n): moment estimates, zero before step 1.  step: 1 for the first update. */
void unet__adam_step(float *p, const float *g, float *m, float *v, size_t n,
                     const struct unet__adam *o, long step);

/* One step's float constants, as the update loops take them (optim.c): SGD reads lr, beta1 (the
 * momentum), l2 (weight decay) and nesterov; Adam all but nesterov, lr being lr / (1 - beta1^step). */
struct unet__optim_consts {
    float lr, beta1, one_b1, beta2, one_b2, bc2_sqrt, eps, decay, l2;
    bool  decoupled, nesterov;
};
/* The updates of elements [lo, hi), compiled per instruction set (a kernel row's sgd, adam):
 * the same operations in every copy, so the same bits. */
typedef void (*unet__sgd_fn)(float *p, const float *g, float *buf, size_t lo, size_t hi,
                             const struct unet__optim_consts *c);
typedef void (*unet__adam_fn)(float *p, const float *g, float *m, float *v, size_t lo, size_t hi,
                              const struct unet__optim_consts *c);
void unet__sgd_range_portable(float *p, const float *g, float *buf, size_t lo, size_t hi,
                              const struct unet__optim_consts *c);
void unet__sgd_range_avx2(float *p, const float *g, float *buf, size_t lo, size_t hi,
                          const struct unet__optim_consts *c);
void unet__sgd_range_avx512(float *p, const float *g, float *buf, size_t lo, size_t hi,
                            const struct unet__optim_consts *c);
void unet__adam_range_portable(float *p, const float *g, float *m, float *v, size_t lo,
                               size_t hi, const struct unet__optim_consts *c);
void unet__adam_range_avx2(float *p, const float *g, float *m, float *v, size_t lo, size_t hi,
                           const struct unet__optim_consts *c);
void unet__adam_range_avx512(float *p, const float *g, float *m, float *v, size_t lo, size_t hi,
                             const struct unet__optim_consts *c);

/* Gradient-norm clipping, torch.nn.utils.clip_grad_norm_ (norm_type 2) over one flat block.
 * unet__l2_norm: sqrt(sum g^2), the squares summed in double over fixed blocks of the index range
 * (bounds from n alone) and the block sums added in order, so the result does not depend on the
 * thread count.  unet__clip_grad_norm: coef = max_norm / (norm + 1e-6) in float32, as torch's
 * tensor arithmetic rounds it; when coef < 1 every g[i] *= coef (torch multiplies by
 * min(coef, 1), and by 1.0 exactly otherwise).  Returns the norm before clipping; *clipped
 * (may be NULL) is set to whether g changed.  A non-finite norm changes nothing. */
double unet__l2_norm(const float *g, size_t n);
double unet__clip_grad_norm(float *g, size_t n, double max_norm, bool *clipped);

/* The moving average of the weights (ema.c): avg[i] = fmaf(1 - decay, x[i] - avg[i], avg[i]). */
void unet__ema_update(float *avg, const float *x, size_t n, double decay);

#endif /* UNET_OPS_H */
