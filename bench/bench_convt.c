/* bench_convt.c — the backward (input and weight gradients) of the seed U-Net's four 2x2
 * stride-2 up-convolutions alone, at a training size: the float32 GEMMs of gemm.c (OpenBLAS:
 * im2col, then the convolution's forward and weight gradient, what unet__convt2d_backward ran
 * for every precision before issue 14's scatter backward) against the scatter backward on the
 * packed micro-kernel of the best float32 row and of the bf16 row.  The three alternate call by
 * call in one process, so that the load of a shared machine hits them alike.
 *
 *     bench_convt SIZE BATCH THREADS ROUNDS
 *
 * SIZE is the network's input (the up-convolutions run at SIZE/16 .. SIZE/2 with 1024 .. 128
 * input channels, as in bench_unet's model).  One warm-up round, then ROUNDS timed ones; per
 * layer and in total, prints the median CPU milliseconds of each and the median over rounds of
 * the per-round ratios:
 *
 *     CONVT pass=bwd layer=1024->512 in=16x16 batch=4 blas_ms=... f32_ms=... bf16_ms=...
 *           blas/f32=... blas/bf16=...
 *
 * f32 and bf16 are unet__convt2d_backward_scatter on the row unet__kernels_for gives (bf16:
 * float32's when this CPU, or UNET_CPU, has no AVX512_BF16; the first line says which rows ran);
 * unet__convt2d_backward runs it for bf16 rows only, and blas, what it runs for float32: the
 * convolution kernels of ops.h on the transposed convolution's adjoint (unet__convt2d_as_conv).
 *
 *     bench_convt SIZE BATCH THREADS ROUNDS fwd
 *
 * times the forward instead (lines CONVT pass=fwd ...): f32 and bf16 are unet__convt2d_forward
 * on those rows (the scatter GEMM, both precisions), blas the convolution's input gradient
 * through gemm.c (OpenBLAS), as the forward ran before the scatter.
 */
#include "ops/kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

enum { MAX_ROUNDS = 64, LAYERS = 4, WAYS = 3 };

static int usage(void) {
    fprintf(stderr, "usage: bench_convt SIZE BATCH THREADS ROUNDS [fwd] (SIZE a multiple of 16, "
                    "ROUNDS <= %d)\n", MAX_ROUNDS);
    return 2;
}

/* The backward of d the way `way` names: 0 the float32 GEMMs, 1 the scatter backward on the
 * float32 row, 2 on bf16's. */
static void backward(int way, float *dx, float *dw, const float *dy, const float *x,
                     const float *w, const struct unet__convt2d_dims *d, float *scratch) {
    if (way == 0) {
        const struct unet__conv2d_dims  c = unet__convt2d_as_conv(d);
        const struct unet__conv_epilogue acc = {.accumulate = true};
        unet__conv2d_backward(NULL, dw, NULL, x, dy, w, &c, NULL, scratch);
        unet__conv2d_forward_ep(dx, dy, w, &c, &acc, NULL, scratch);
        return;
    }
    const struct unet__kernels *k =
        unet__kernels_for(way == 2 ? UNET__PRECISION_BF16 : UNET__PRECISION_F32);
    unet__convt2d_backward_scatter(dx, dw, dy, x, w, d, k, scratch);
}

/* The forward y = A^T x of d the way `way` names (as backward's). */
static void forward(int way, float *y, const float *x, const float *w,
                    const struct unet__convt2d_dims *d, float *scratch) {
    if (way == 0) {
        const struct unet__conv2d_dims c = unet__convt2d_as_conv(d);
        unet__conv2d_backward_set(y, true, NULL, NULL, x, NULL, w, &c, NULL, scratch);
        return;
    }
    const struct unet__conv_how how = {
        .k = unet__kernels_for(way == 2 ? UNET__PRECISION_BF16 : UNET__PRECISION_F32)};
    unet__convt2d_forward(y, x, w, NULL, d, &how, scratch);
}

int main(int argc, char **argv) {
    if (argc != 5 && argc != 6) return usage();
    const bool fwd = argc == 6;
    if (fwd && strcmp(argv[5], "fwd") != 0) return usage();
    const int size = atoi(argv[1]), batch = atoi(argv[2]), threads = atoi(argv[3]);
    const int rounds = atoi(argv[4]);
    if (size < 16 || size % 16 || batch < 1 || threads < 1 || rounds < 1 || rounds > MAX_ROUNDS)
        return usage();
    unet__use_threads(threads);
    const struct unet__kernels *bf = unet__kernels_for(UNET__PRECISION_BF16);
    const struct unet__kernels *f32 = unet__kernels_for(UNET__PRECISION_F32);
    printf("# rows: f32 %s, bf16 %s; threads %d\n", f32->name, bf->name, threads);
    static double ms[LAYERS + 1][WAYS][MAX_ROUNDS];
    memset(ms, 0, sizeof ms);
    struct unet__rng rng;
    unet__rng_seed(&rng, 7);
    for (int l = 0; l < LAYERS; l++) {
        const int c_in = 1024 >> l, hw = size / 16 << l;
        struct unet__convt2d_dims d = {.N = batch, .C_in = c_in, .H_in = hw, .W_in = hw,
                                       .C_out = c_in / 2, .K_h = 2, .K_w = 2, .stride_h = 2,
                                       .stride_w = 2};
        if (unet__convt2d_dims_init(NULL, &d, "bench") != UNET_STATUS_OK) return 1;
        const struct unet__conv2d_dims c = unet__convt2d_as_conv(&d);
        const size_t nx = (size_t)batch * c_in * hw * hw, nw = (size_t)c_in * d.C_out * 4;
        const size_t ny = (size_t)batch * d.C_out * d.H_out * d.W_out;
        size_t ns = unet__convt2d_scratch_floats(&d);
        if (unet__conv2d_scratch_floats(&c) > ns) ns = unet__conv2d_scratch_floats(&c);
        float *x = malloc(nx * sizeof *x), *dx = calloc(nx, sizeof *dx);
        float *w = malloc(nw * sizeof *w), *dw = calloc(nw, sizeof *dw);
        float *dy = malloc(ny * sizeof *dy), *scratch = malloc(ns * sizeof *scratch);
        if (!x || !dx || !w || !dw || !dy || !scratch) return 1;
        for (size_t i = 0; i < nx; i++) x[i] = 2.0f * unet__rng_uniform(&rng) - 1.0f;
        for (size_t i = 0; i < nw; i++) w[i] = 0.05f * (2.0f * unet__rng_uniform(&rng) - 1.0f);
        for (size_t i = 0; i < ny; i++) dy[i] = 2.0f * unet__rng_uniform(&rng) - 1.0f;
        for (int r = -1; r < rounds; r++)
            for (int way = 0; way < WAYS; way++) {
                const double c0 = bench_cpu_now();
                if (fwd)
                    forward(way, dy, x, w, &d, scratch);
                else
                    backward(way, dx, dw, dy, x, w, &d, scratch);
                if (r >= 0) ms[l][way][r] = (bench_cpu_now() - c0) * 1e3;
            }
        for (int way = 0; way < WAYS; way++)
            for (int r = 0; r < rounds; r++) ms[LAYERS][way][r] += ms[l][way][r];
        free(x), free(dx), free(w), free(dw), free(dy), free(scratch);
    }
    for (int l = 0; l <= LAYERS; l++) {
        double ratio[2][MAX_ROUNDS], med[WAYS];
        for (int r = 0; r < rounds; r++)
            for (int k = 0; k < 2; k++) ratio[k][r] = ms[l][0][r] / ms[l][k + 1][r];
        for (int way = 0; way < WAYS; way++) med[way] = bench_median(ms[l][way], rounds);
        char what[48] = "all";
        if (l < LAYERS)
            snprintf(what, sizeof what, "%d->%d in=%dx%d", 1024 >> l, 512 >> l, size / 16 << l,
                     size / 16 << l);
        printf("CONVT pass=%s layer=%s batch=%d blas_ms=%.1f f32_ms=%.1f bf16_ms=%.1f "
               "blas/f32=%.2f blas/bf16=%.2f\n", fwd ? "fwd" : "bwd", what, batch, med[0], med[1],
               med[2], bench_median(ratio[0], rounds), bench_median(ratio[1], rounds));
    }
    return 0;
}
