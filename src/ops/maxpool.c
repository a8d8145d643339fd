/* maxpool.c — MaxPool2d(kernel 2, stride 2), forward and backward.
 *
 * y[n, c, i, j] = max of the 2x2 window x[n, c, 2i..2i+1, 2j..2j+1]; an odd last row or
 * column is dropped (floor mode, H_out = H_in / 2) or pooled on its own (ceil mode, H_out =
 * (H_in + 1) / 2, PyTorch's ceil_mode=True: FCN's reference pools that way).  The window is scanned row-major, k = 2 u + v for window row
 * u and column v, and k replaces the current best when
 *     x_k > best || isnan(x_k)
 * which is PyTorch's CPU kernel (cpu_max_pool): the first maximum wins a tie, a NaN wins over
 * everything and the last NaN wins over an earlier one, and a window of -inf picks k = 0.
 * argmax keeps k, one byte per output, for backward, which adds dy to that one input.  (PyTorch
 * keeps a flat int64 index per output: eight times the memory for the same information.)  The
 * windows do not overlap, so backward writes every input at most once.
 *
 * Threads: both directions split the N*C planes; each thread owns its planes of y, argmax
 * and dx.  The forward's loop over a row's whole windows is a vector loop (omp simd: the window
 * is written with selects): a training step's pools at 256x256 batch 4, 2 threads, took 52-59
 * ms as a scalar loop, whose branches on the data mispredicted, 7.2-7.6 ms as a vector one.
 *
 * Contract (ops.h): x (N, C, H_in, W_in) -> y, argmax (N, C, H_out, W_out), float32 NCHW and one
 * byte per output; forward overwrites y and argmax, backward accumulates into dx.  The window
 * rule is unet__maxpool_window (ops.h), which Winograd's fused pool also applies.  Tested
 * (tests/test_pool_relu_dropout.c) against unet__maxpool2_forward_ref on odd sizes, ties, NaN and
 * -inf, against PyTorch (golden pool_relu) and by finite differences away from ties.
 */
#include "ops/ops.h"

#include <math.h>

/* A window cut by the image edge (ceil mode): the same scan over its pixels inside. */
static float edge_max(const float *xp, int H, int W, int i, int j, uint8_t *k) {
    float   m = 0.0f;
    uint8_t best = 0;
    bool    first = true;
    for (int q = 0; q < 4; q++) {
        int ih = 2 * i + q / 2, iw = 2 * j + q % 2;
        if (ih >= H || iw >= W) continue;
        float v = xp[(size_t)ih * W + iw];
        if (first || v > m || isnan(v)) m = v, best = (uint8_t)q;
        first = false;
    }
    *k = best;
    return m;
}

void unet__maxpool2_forward(float *y, uint8_t *argmax, const float *x,
                            const struct unet__pool_dims *d) {
    const long long planes = (long long)d->N * d->C;
    const size_t    in_plane = (size_t)d->H_in * d->W_in, out_plane = (size_t)d->H_out * d->W_out;
    UNET_ASSERT((d->H_out == d->H_in / 2 || d->H_out == (d->H_in + 1) / 2) &&
                (d->W_out == d->W_in / 2 || d->W_out == (d->W_in + 1) / 2));
    const int full_h = d->H_in / 2, full_w = d->W_in / 2; /* windows wholly inside */
#pragma omp parallel for schedule(static)
    for (long long p = 0; p < planes; p++) {
        const float *xp = x + (size_t)p * in_plane;
        float       *yp = y + (size_t)p * out_plane;
        uint8_t     *ap = argmax + (size_t)p * out_plane;
        for (int i = 0; i < d->H_out; i++) {
            float   *yr = yp + (size_t)i * d->W_out;
            uint8_t *ar = ap + (size_t)i * d->W_out;
            if (i >= full_h) {
                for (int j = 0; j < d->W_out; j++) yr[j] = edge_max(xp, d->H_in, d->W_in, i, j, &ar[j]);
                continue;
            }
            const float *r0 = xp + (size_t)(2 * i) * d->W_in, *r1 = r0 + d->W_in;
#pragma omp simd
            for (int j = 0; j < full_w; j++)
                yr[j] = unet__maxpool_window(r0[2 * j], r0[2 * j + 1], r1[2 * j], r1[2 * j + 1],
                                             &ar[j]);
            for (int j = full_w; j < d->W_out; j++)
                yr[j] = edge_max(xp, d->H_in, d->W_in, i, j, &ar[j]);
        }
    }
}

void unet__maxpool2_backward(float *dx, const float *dy, const uint8_t *argmax,
                             const struct unet__pool_dims *d) {
    /* Inverts y[i, j] = x[2i + k / 2, 2j + k % 2] with k = argmax[i, j]. */
    const long long planes = (long long)d->N * d->C;
    const size_t    in_plane = (size_t)d->H_in * d->W_in, out_plane = (size_t)d->H_out * d->W_out;
#pragma omp parallel for schedule(static)
    for (long long p = 0; p < planes; p++) {
        float         *dxp = dx + (size_t)p * in_plane;
        const float   *dyp = dy + (size_t)p * out_plane;
        const uint8_t *ap = argmax + (size_t)p * out_plane;
        for (int i = 0; i < d->H_out; i++)
            for (int j = 0; j < d->W_out; j++) {
                size_t o = (size_t)i * d->W_out + j;
                int    k = ap[o];
                dxp[(size_t)(2 * i + k / 2) * d->W_in + 2 * j + k % 2] += dyp[o];
            }
    }
}

void unet__maxpool2_forward_ref(float *y, uint8_t *argmax, const float *x,
                                const struct unet__pool_dims *d) {
    for (int n = 0; n < d->N; n++)
        for (int c = 0; c < d->C; c++)
            for (int i = 0; i < d->H_out; i++)
                for (int j = 0; j < d->W_out; j++) {
                    float best = -INFINITY;
                    int   arg = 0;
                    for (int k = 0; k < 4; k++) {
                        int ih = 2 * i + k / 2, iw = 2 * j + k % 2;
                        if (ih >= d->H_in || iw >= d->W_in) continue; /* ceil mode's edge */
                        float v = x[(((size_t)n * d->C + c) * d->H_in + ih) * d->W_in + iw];
                        if (v > best || isnan(v)) {
                            best = v;
                            arg = k;
                        }
                    }
                    size_t o = (((size_t)n * d->C + c) * d->H_out + i) * d->W_out + j;
                    y[o] = best;
                    argmax[o] = (uint8_t)arg;
                }
}
