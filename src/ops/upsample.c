/* upsample.c — bilinear upsampling, PyTorch's F.interpolate(mode='bilinear') to a given size.
 *
 * Each output pixel mixes the 2x2 input pixels around its source coordinate.  Per dimension
 * (aten/src/ATen/native/UpSample.h, area_pixel_compute_scale / _source_index and
 * compute_source_index_and_lambda, as in PyTorch 1.13's CPU kernel):
 *     align_corners:  scale = (in - 1) / (out - 1)  (0 when out == 1),  src = scale * dst
 *     otherwise:      scale = in / out,  src = max(scale * (dst + 0.5) - 0.5, 0)
 *     i0 = min(floor(src), in - 1),  i1 = min(i0 + 1, in - 1),
 *     lambda1 = clamp(src - i0, 0, 1),  lambda0 = 1 - lambda1
 * and in == out is a plain copy (i1 = i0, lambda1 = 0).  scale, src and the lambdas are float
 * (PyTorch's opmath for float tensors; src = scale * (dst + 0.5) - 0.5 is evaluated in double
 * and rounded once, as the C++ expression does).  Then, in PyTorch's order,
 *     y = h0 (w0 x[i0, j0] + w1 x[i0, j1]) + h1 (w0 x[i1, j0] + w1 x[i1, j1]).
 * Backward scatters dy back with the products (h * w) * dy, output pixels in row-major order.
 *
 * The fast path computes the column taps (j0, j1, w0, w1) once per tile of up to TAP_TILE
 * output columns in a stack array instead of once per pixel; the alternative, a per-plan table
 * of taps, would need memory from the caller for a saving that is only the last few percent.
 * Threads split the N*C planes: each owns its output plane (forward) or its dx plane
 * (backward's scatter-add), so no atomics are needed and the sums do not depend on the thread
 * count.  The backward keeps PyTorch's accumulation order exactly (rows outer), so fast, ref and
 * PyTorch agree up to its FMA contractions.
 *
 * Contract (ops.h): x (N, C, H_in, W_in) -> y (N, C, H_out, W_out) float32 NCHW; forward
 * overwrites y, backward accumulates into dx.  Tested (tests/test_upsample_concat.c) against
 * unet__upsample_bilinear_forward_ref / _backward_ref, PyTorch (golden upsample_concat, both
 * align_corners), known values, finite differences, and for the same bits on 1 and 2 threads.
 */
#include "ops/ops.h"

#include <math.h>

/* Output columns whose taps are kept on the stack at once (16 bytes each). */
#define TAP_TILE 512

/* Source taps of one output index along one dimension. */
struct tap {
    int   i0, i1;
    float l0, l1;
};

static float source_scale(int in, int out, bool align_corners) {
    if (align_corners) return out > 1 ? (float)(in - 1) / (float)(out - 1) : 0.0f;
    return (float)in / (float)out;
}

/* The definition shared by the fast path and _ref (see the top comment). */
static struct tap source_tap(float scale, int dst, int in, int out, bool align_corners) {
    struct tap t;
    if (in == out) {
        t.i0 = t.i1 = dst;
        t.l0 = 1.0f;
        t.l1 = 0.0f;
        return t;
    }
    float src;
    if (align_corners) {
        src = scale * (float)dst;
    } else {
        src = (float)((double)scale * ((double)dst + 0.5) - 0.5);
        if (src < 0.0f) src = 0.0f;   /* OpenCV's rule: the first half pixel repeats x[0] */
    }
    int i0 = (int)floorf(src);
    if (i0 > in - 1) i0 = in - 1;     /* float rounding of src past the last pixel */
    float l1 = src - (float)i0;
    if (l1 < 0.0f) l1 = 0.0f;
    if (l1 > 1.0f) l1 = 1.0f;
    t.i0 = i0;
    t.i1 = i0 < in - 1 ? i0 + 1 : i0;
    t.l1 = l1;
    t.l0 = 1.0f - l1;
    return t;
}

static void fill_taps(struct tap *taps, int j0, int count, float scale, int in, int out,
                      bool align_corners) {
    for (int j = 0; j < count; j++) taps[j] = source_tap(scale, j0 + j, in, out, align_corners);
}

/* One plane's geometry, the same for every plane of a call. */
struct plane {
    int   H_in, W_in, H_out, W_out;
    bool  ac;          /* align_corners */
    float sh, sw;      /* source scales */
};

static struct plane plane_of(const struct unet__upsample_dims *d) {
    UNET_ASSERT(d->H_in > 0 && d->W_in > 0 && d->H_out > 0 && d->W_out > 0);
    return (struct plane){d->H_in, d->W_in, d->H_out, d->W_out, d->align_corners,
                          source_scale(d->H_in, d->H_out, d->align_corners),
                          source_scale(d->W_in, d->W_out, d->align_corners)};
}

static void forward_plane(float *yp, const float *xp, const struct plane *g) {
    struct tap cols[TAP_TILE];
    /* Column tiles outer: each output pixel is written once, so the order is free and the taps
     * are computed once per tile. */
    for (int j0 = 0; j0 < g->W_out; j0 += TAP_TILE) {
        const int nj = g->W_out - j0 < TAP_TILE ? g->W_out - j0 : TAP_TILE;
        fill_taps(cols, j0, nj, g->sw, g->W_in, g->W_out, g->ac);
        for (int oh = 0; oh < g->H_out; oh++) {
            const struct tap r = source_tap(g->sh, oh, g->H_in, g->H_out, g->ac);
            const float *x0 = xp + (size_t)r.i0 * g->W_in, *x1 = xp + (size_t)r.i1 * g->W_in;
            float *yr = yp + (size_t)oh * g->W_out + j0;
            for (int j = 0; j < nj; j++) {
                const struct tap t = cols[j];
                const float t0 = x0[t.i0] * t.l0 + x0[t.i1] * t.l1;
                const float t1 = x1[t.i0] * t.l0 + x1[t.i1] * t.l1;
                yr[j] = t0 * r.l0 + t1 * r.l1;
            }
        }
    }
}

static void backward_plane(float *dxp, const float *dyp, const struct plane *g) {
    struct tap cols[TAP_TILE];
    int cached = -1;   /* first column of the tile in cols; computed once when W_out fits */
    /* Rows outer, as PyTorch, so each dx element sums its terms in the same order. */
    for (int oh = 0; oh < g->H_out; oh++) {
        const struct tap r = source_tap(g->sh, oh, g->H_in, g->H_out, g->ac);
        float *d0 = dxp + (size_t)r.i0 * g->W_in, *d1 = dxp + (size_t)r.i1 * g->W_in;
        for (int j0 = 0; j0 < g->W_out; j0 += TAP_TILE) {
            const int nj = g->W_out - j0 < TAP_TILE ? g->W_out - j0 : TAP_TILE;
            if (j0 != cached) {
                fill_taps(cols, j0, nj, g->sw, g->W_in, g->W_out, g->ac);
                cached = j0;
            }
            const float *gr = dyp + (size_t)oh * g->W_out + j0;
            /* Inverts y = h0 (w0 x00 + w1 x01) + h1 (w0 x10 + w1 x11). */
            for (int j = 0; j < nj; j++) {
                const struct tap t = cols[j];
                d0[t.i0] += r.l0 * t.l0 * gr[j];
                d0[t.i1] += r.l0 * t.l1 * gr[j];
                d1[t.i0] += r.l1 * t.l0 * gr[j];
                d1[t.i1] += r.l1 * t.l1 * gr[j];
            }
        }
    }
}

/* The forward (out = y, in = x) or the backward (out = dx, in = dy) of every plane, the N*C
 * planes split over the threads. */
static void run_planes(float *out, const float *in, const struct unet__upsample_dims *d,
                       bool forward) {
    const struct plane g = plane_of(d);
    const size_t       x_plane = (size_t)g.H_in * g.W_in, y_plane = (size_t)g.H_out * g.W_out;
    const long long    planes = (long long)d->N * d->C;
#pragma omp parallel for schedule(static)
    for (long long p = 0; p < planes; p++) {
        if (forward) forward_plane(out + (size_t)p * y_plane, in + (size_t)p * x_plane, &g);
        else backward_plane(out + (size_t)p * x_plane, in + (size_t)p * y_plane, &g);
    }
}

void unet__upsample_bilinear_forward(float *y, const float *x, const struct unet__upsample_dims *d) {
    run_planes(y, x, d, true);
}

void unet__upsample_bilinear_backward(float *dx, const float *dy,
                                      const struct unet__upsample_dims *d) {
    if (dx) run_planes(dx, dy, d, false);
}

void unet__upsample_bilinear_forward_ref(float *y, const float *x,
                                         const struct unet__upsample_dims *d) {
    const bool  ac = d->align_corners;
    const float sh = source_scale(d->H_in, d->H_out, ac), sw = source_scale(d->W_in, d->W_out, ac);
    for (int n = 0; n < d->N; n++)
        for (int c = 0; c < d->C; c++) {
            const float *xp = x + ((size_t)n * d->C + c) * d->H_in * d->W_in;
            float *yp = y + ((size_t)n * d->C + c) * d->H_out * d->W_out;
            for (int oh = 0; oh < d->H_out; oh++)
                for (int ow = 0; ow < d->W_out; ow++) {
                    struct tap h = source_tap(sh, oh, d->H_in, d->H_out, ac);
                    struct tap w = source_tap(sw, ow, d->W_in, d->W_out, ac);
#define X(i, j) xp[(size_t)(i) * d->W_in + (j)]
                    float t0 = X(h.i0, w.i0) * w.l0 + X(h.i0, w.i1) * w.l1;
                    float t1 = X(h.i1, w.i0) * w.l0 + X(h.i1, w.i1) * w.l1;
#undef X
                    yp[(size_t)oh * d->W_out + ow] = t0 * h.l0 + t1 * h.l1;
                }
        }
}

void unet__upsample_bilinear_backward_ref(float *dx, const float *dy,
                                          const struct unet__upsample_dims *d) {
    if (!dx) return;
    const bool  ac = d->align_corners;
    const float sh = source_scale(d->H_in, d->H_out, ac), sw = source_scale(d->W_in, d->W_out, ac);
    for (int n = 0; n < d->N; n++)
        for (int c = 0; c < d->C; c++) {
            float *dxp = dx + ((size_t)n * d->C + c) * d->H_in * d->W_in;
            const float *dyp = dy + ((size_t)n * d->C + c) * d->H_out * d->W_out;
            for (int oh = 0; oh < d->H_out; oh++)
                for (int ow = 0; ow < d->W_out; ow++) {
                    struct tap h = source_tap(sh, oh, d->H_in, d->H_out, ac);
                    struct tap w = source_tap(sw, ow, d->W_in, d->W_out, ac);
                    float g = dyp[(size_t)oh * d->W_out + ow];
#define DX(i, j) dxp[(size_t)(i) * d->W_in + (j)]
                    DX(h.i0, w.i0) += h.l0 * w.l0 * g;
                    DX(h.i0, w.i1) += h.l0 * w.l1 * g;
                    DX(h.i1, w.i0) += h.l1 * w.l0 * g;
                    DX(h.i1, w.i1) += h.l1 * w.l1 * g;
#undef DX
                }
        }
}
