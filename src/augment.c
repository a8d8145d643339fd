/* augment.c — the geometric and gray-value transforms of one training sample, and the elastic
 * deformation of Ronneberger et al. (2015, §3.1).
 *
 * All geometry is composed into one map of source coordinates for the input window, then every
 * array is sampled once through it (unet__aug_coords, then unet__aug_bicubic / _nearest /
 * _bilinear).  A pixel u of the window frame (relative to the output window's centre) comes
 * from the source position
 *     s = (cy, cx) + D R (u + e(u))
 * e: the elastic displacement field; R: a rotation; D: one of the 8 dihedral elements (flips and
 * 90-degree rotations, as a 2x2 matrix of 0 and +-1); (cy, cx): the crop position plus a shift.
 * Sampling once avoids the blur of resampling after each step, keeps image, target and weight
 * aligned by construction (the target window is a sub-rectangle of the same map) and costs one
 * pass whatever the recipe.  Rejected: applying flips with memcpy-style permutations and the
 * warp separately (faster for flips alone, but two code paths and two interpolations when both
 * are on).
 *
 * Elastic field, as the paper describes it: displacements (dy, dx) drawn from N(0, sigma^2) on a
 * coarse grid x grid lattice whose corner points sit on the input window's corner pixels; the
 * per-pixel field is the bicubic interpolation of the lattice (separable cubic convolution,
 * Keys a = -0.5, beyond the lattice's edge the edge values repeat).  The displacement is added in
 * the window frame, before the rotation, so it deforms the tile the network sees.
 *
 * Resampling (the paper does not say): the image bicubically with the same kernel (Keys,
 * a = -0.5, the Catmull-Rom spline; PyTorch's and OpenCV's bicubic use a = -0.75), mirrored
 * beyond its border without repeating the edge pixel (numpy 'reflect'), as the overlap-tile
 * strategy mirrors; the target by nearest neighbour, so labels are never blended, and -1 outside
 * the image, so the loss ignores mirrored context; the weight map bilinearly (non-negative
 * weights stay non-negative, which a cubic kernel's overshoot would not guarantee).
 *
 * Exactness: integer source coordinates copy the pixel instead of interpolating, and the
 * geometry is computed in double with exact 0/+-1 matrix entries, so flips, 90-degree rotations,
 * integer crops and a zero elastic field reproduce pixels bit for bit.
 */
#include "augment.h"

#include <math.h>
#include <string.h>

unet_augment unet_augment_none(void) {
    unet_augment a;
    memset(&a, 0, sizeof a);
    a.elastic_sigma = 10.0f;    /* used only when elastic is turned on */
    a.elastic_grid = 3;
    return a;
}

unet_augment unet_augment_default(void) {
    unet_augment a = unet_augment_none();
    a.flips = 1;
    return a;
}

/* The elastic numbers are the paper's; the paper names shifts, rotations and gray-value
 * variation without numbers, so those are ours: mild enough not to change what a cell looks
 * like on percentile-normalised ([0, 1]-ish) data. */
unet_augment unet_augment_paper(void) {
    unet_augment a = unet_augment_default();
    a.elastic = 1;
    a.elastic_sigma = 10.0f;
    a.elastic_grid = 3;
    a.rotate = 10.0f;
    a.shift = 10.0f;
    a.brightness = 0.1f;
    a.contrast = 0.1f;
    a.gamma = 0.1f;
    return a;
}

static bool in_range(float v, float lo, float hi) {
    return isfinite(v) && v >= lo && v <= hi;
}

unet_status unet__augment_check(unet_ctx *ctx, const unet_augment *a) {
    if (a->flips != 0 && a->flips != 1)
        return unet__fail(ctx, UNET_STATUS_ARG, "augment: flips must be 0 or 1, got %d", a->flips);
    if (a->elastic != 0 && a->elastic != 1)
        return unet__fail(ctx, UNET_STATUS_ARG, "augment: elastic must be 0 or 1, got %d",
                          a->elastic);
    if (a->elastic) {
        if (!in_range(a->elastic_sigma, 0.0f, 1000.0f))
            return unet__fail(ctx, UNET_STATUS_ARG, "augment: elastic_sigma must be in [0, 1000] "
                                                    "pixels, got %g", (double)a->elastic_sigma);
        if (a->elastic_grid < 2 || a->elastic_grid > 64)
            return unet__fail(ctx, UNET_STATUS_ARG, "augment: elastic_grid must be 2..64, got %d",
                              a->elastic_grid);
    }
    if (!in_range(a->rotate, 0.0f, 180.0f))
        return unet__fail(ctx, UNET_STATUS_ARG, "augment: rotate must be in [0, 180] degrees, got "
                                                "%g", (double)a->rotate);
    if (!in_range(a->shift, 0.0f, 10000.0f))
        return unet__fail(ctx, UNET_STATUS_ARG, "augment: shift must be in [0, 10000] pixels, got "
                                                "%g", (double)a->shift);
    if (!in_range(a->brightness, 0.0f, 1e6f))
        return unet__fail(ctx, UNET_STATUS_ARG, "augment: brightness must be finite and >= 0, got "
                                                "%g", (double)a->brightness);
    if (!(in_range(a->contrast, 0.0f, 1.0f) && a->contrast < 1.0f))
        return unet__fail(ctx, UNET_STATUS_ARG, "augment: contrast must be in [0, 1) (factor in "
                                                "[1 - c, 1 + c]), got %g", (double)a->contrast);
    if (!(in_range(a->gamma, 0.0f, 1.0f) && a->gamma < 1.0f))
        return unet__fail(ctx, UNET_STATUS_ARG, "augment: gamma must be in [0, 1) (exponent in "
                                                "[1 - g, 1 + g]), got %g", (double)a->gamma);
    return UNET_STATUS_OK;
}

/* ---- the coordinate map ---- */

size_t unet__aug_coords_scratch(int in_w, int grid) {
    return grid > 0 ? 2 * (size_t)grid * (size_t)in_w : 0;
}

/* Cubic taps along one axis of the elastic lattice for pixel i of n: lattice position
 * t = i (grid - 1) / (n - 1), taps floor(t) - 1 .. floor(t) + 2 clamped to the lattice. */
static void lattice_taps(int i, int n, int grid, int tap[4], float w[4]) {
    double t = n > 1 ? (double)i * (grid - 1) / (n - 1) : 0.0;
    int i0 = (int)floor(t);
    if (i0 > grid - 1) i0 = grid - 1;
    unet__cubic_weights((float)(t - i0), w);
    for (int k = 0; k < 4; k++) {
        int j = i0 - 1 + k;
        tap[k] = j < 0 ? 0 : (j > grid - 1 ? grid - 1 : j);
    }
}

void unet__aug_coords(const struct unet__aug_geom *g, float *sy, float *sx, float *scratch) {
    const int H = g->in_h, W = g->in_w, G = g->grid;
    /* Window frame: u = (r, c) - (off_y, off_x), the output window's centre. */
    const double off_y = (double)((H - g->out_h) / 2) + 0.5 * (g->out_h - 1);
    const double off_x = (double)((W - g->out_w) / 2) + 0.5 * (g->out_w - 1);

    /* M = F T R: rotation, then the optional transpose, then the flips. */
    double ca = 1.0, sa = 0.0;
    if (g->angle != 0.0) {
        ca = cos(g->angle);
        sa = sin(g->angle);
    }
    double m[2][2] = {{ca, -sa}, {sa, ca}};
    if (g->dihedral & UNET__AUG_TRANSPOSE) {
        double t0 = m[0][0], t1 = m[0][1];
        m[0][0] = m[1][0];
        m[0][1] = m[1][1];
        m[1][0] = t0;
        m[1][1] = t1;
    }
    if (g->dihedral & UNET__AUG_FLIP_Y) {
        m[0][0] = -m[0][0];
        m[0][1] = -m[0][1];
    }
    if (g->dihedral & UNET__AUG_FLIP_X) {
        m[1][0] = -m[1][0];
        m[1][1] = -m[1][1];
    }

    /* The lattice interpolated along x first: ly, lx (G, W) hold dy and dx on each lattice row
     * at every window column; each pixel then needs 4 taps along y. */
    float *ly = NULL, *lx = NULL;
    if (G > 0) {
        ly = scratch;
        lx = scratch + (size_t)G * W;
        const float *dy = g->disp, *dx = g->disp + (size_t)G * G;
        for (int c = 0; c < W; c++) {
            int tap[4];
            float w[4];
            lattice_taps(c, W, G, tap, w);
            for (int i = 0; i < G; i++) {
                const float *ry = dy + (size_t)i * G, *rx = dx + (size_t)i * G;
                ly[(size_t)i * W + c] =
                    w[0] * ry[tap[0]] + w[1] * ry[tap[1]] + w[2] * ry[tap[2]] + w[3] * ry[tap[3]];
                lx[(size_t)i * W + c] =
                    w[0] * rx[tap[0]] + w[1] * rx[tap[1]] + w[2] * rx[tap[2]] + w[3] * rx[tap[3]];
            }
        }
    }

    for (int r = 0; r < H; r++) {
        const float *y0 = NULL, *y1 = NULL, *y2 = NULL, *y3 = NULL;
        const float *x0 = NULL, *x1 = NULL, *x2 = NULL, *x3 = NULL;
        float w[4] = {0, 0, 0, 0};
        if (G > 0) {
            int tap[4];
            lattice_taps(r, H, G, tap, w);
            y0 = ly + (size_t)tap[0] * W, y1 = ly + (size_t)tap[1] * W;
            y2 = ly + (size_t)tap[2] * W, y3 = ly + (size_t)tap[3] * W;
            x0 = lx + (size_t)tap[0] * W, x1 = lx + (size_t)tap[1] * W;
            x2 = lx + (size_t)tap[2] * W, x3 = lx + (size_t)tap[3] * W;
        }
        const double vy0 = r - off_y;
        float *oy = sy + (size_t)r * W, *ox = sx + (size_t)r * W;
        for (int c = 0; c < W; c++) {
            double vy = vy0, vx = c - off_x;
            if (G > 0) {
                vy += w[0] * y0[c] + w[1] * y1[c] + w[2] * y2[c] + w[3] * y3[c];
                vx += w[0] * x0[c] + w[1] * x1[c] + w[2] * x2[c] + w[3] * x3[c];
            }
            oy[c] = (float)(g->cy + (m[0][0] * vy + m[0][1] * vx));
            ox[c] = (float)(g->cx + (m[1][0] * vy + m[1][1] * vx));
        }
    }
}

/* ---- sampling ---- */

/* Splits a coordinate into floor(s) and the fraction s - floor(s), both exact.  Truncation and
 * a correction instead of floorf, which compiles to a libm call or a long bit-twiddling sequence
 * without SSE4.1.  Coordinates are bounded far below 2^63 (window <= 65536, validated shifts
 * and displacements), and every integer below 2^24 is a float, so (float)i is exact wherever s
 * has a fraction at all. */
static inline int64_t split(float s, float *t) {
    int64_t i = (int64_t)s;
    float f = (float)i;
    if (f > s) {
        i--;
        f -= 1.0f;
    }
    *t = s - f;
    return i;
}

void unet__aug_bicubic(float *out, const float *img, int C, int H, int W, const float *sy,
                       const float *sx, int rows, int cols, size_t stride) {
    const size_t plane = (size_t)H * W, out_plane = (size_t)rows * cols;
    for (int r = 0; r < rows; r++) {
        const float *my = sy + (size_t)r * stride, *mx = sx + (size_t)r * stride;
        for (int c = 0; c < cols; c++) {
            const size_t o = (size_t)r * cols + c;
            float ty, tx;
            const int64_t iy = split(my[c], &ty), ix = split(mx[c], &tx);
            if (ty == 0.0f && tx == 0.0f) {
                const size_t src = (size_t)unet__reflect(iy, H) * W + (size_t)unet__reflect(ix, W);
                for (int ch = 0; ch < C; ch++) out[ch * out_plane + o] = img[ch * plane + src];
                continue;
            }
            float wy[4], wx[4];
            size_t ry[4], rx[4];
            unet__cubic_weights(ty, wy);
            unet__cubic_weights(tx, wx);
            if (iy >= 1 && iy + 2 < H) {
                for (int k = 0; k < 4; k++) ry[k] = (size_t)(iy - 1 + k) * W;
            } else {
                for (int k = 0; k < 4; k++) ry[k] = (size_t)unet__reflect(iy - 1 + k, H) * W;
            }
            if (ix >= 1 && ix + 2 < W) {
                for (int k = 0; k < 4; k++) rx[k] = (size_t)(ix - 1 + k);
            } else {
                for (int k = 0; k < 4; k++) rx[k] = (size_t)unet__reflect(ix - 1 + k, W);
            }
            for (int ch = 0; ch < C; ch++) {
                const float *p = img + ch * plane;
                float acc = 0.0f;
                for (int k = 0; k < 4; k++) {
                    const float *q = p + ry[k];
                    acc += wy[k] * (wx[0] * q[rx[0]] + wx[1] * q[rx[1]] + wx[2] * q[rx[2]] +
                                    wx[3] * q[rx[3]]);
                }
                out[ch * out_plane + o] = acc;
            }
        }
    }
}

/* The nearest pixel's row or column, halves rounded up; -1 when outside [0, n). */
static inline int64_t nearest(float s, int64_t n) {
    float t;
    int64_t i = split(s, &t);
    if (t >= 0.5f) i++;
    return i >= 0 && i < n ? i : -1;
}

/* Bilinear value of wt (H x W, mirrored beyond the border) at (y, x). */
static float bilinear(const float *wt, int H, int W, float y, float x) {
    float ty, tx;
    const int64_t iy = split(y, &ty), ix = split(x, &tx);
    const size_t r0 = (size_t)unet__reflect(iy, H) * W;
    const size_t r1 = (size_t)unet__reflect(iy + 1, H) * W;
    const size_t c0 = (size_t)unet__reflect(ix, W), c1 = (size_t)unet__reflect(ix + 1, W);
    return (1.0f - ty) * ((1.0f - tx) * wt[r0 + c0] + tx * wt[r0 + c1]) +
           ty * ((1.0f - tx) * wt[r1 + c0] + tx * wt[r1 + c1]);
}

/* Both resamplings at once: out pixel (r, c) from the source coordinate at sy, sx + r stride + c
 * of an H x W map; where its nearest pixel lies outside the map, -1 (labels) and 0 (weights).
 * Labels take the nearest pixel, weights are bilinear.  lab or wt may be NULL. */
static void resample(int32_t *out_lab, const int32_t *lab, float *out_wt, const float *wt, int H,
                     int W, const float *sy, const float *sx, int rows, int cols, size_t stride) {
    for (int r = 0; r < rows; r++) {
        const float *my = sy + (size_t)r * stride, *mx = sx + (size_t)r * stride;
        for (int c = 0; c < cols; c++) {
            const int64_t iy = nearest(my[c], H), ix = nearest(mx[c], W);
            const bool    inside = iy >= 0 && ix >= 0;
            const size_t  o = (size_t)r * cols + c;
            if (lab) out_lab[o] = inside ? lab[(size_t)iy * W + (size_t)ix] : -1;
            if (wt) out_wt[o] = inside ? bilinear(wt, H, W, my[c], mx[c]) : 0.0f;
        }
    }
}

void unet__aug_nearest(int32_t *out, const int32_t *lab, int H, int W, const float *sy,
                       const float *sx, int rows, int cols, size_t stride) {
    resample(out, lab, NULL, NULL, H, W, sy, sx, rows, cols, stride);
}

void unet__aug_bilinear(float *out, const float *wt, int H, int W, const float *sy,
                        const float *sx, int rows, int cols, size_t stride) {
    resample(NULL, NULL, out, wt, H, W, sy, sx, rows, cols, stride);
}

/* ---- gray values ---- */

void unet__aug_gray(float *x, int C, size_t n, float brightness, float contrast, float gamma) {
    const bool do_gamma = gamma != 1.0f, do_affine = contrast != 1.0f || brightness != 0.0f;
    if (!do_gamma && !do_affine) return;
    for (int ch = 0; ch < C; ch++) {
        float *p = x + (size_t)ch * n;
        if (do_gamma) {
            float lo = p[0], hi = p[0];
            for (size_t i = 1; i < n; i++) {
                if (p[i] < lo) lo = p[i];
                if (p[i] > hi) hi = p[i];
            }
            if (hi > lo) {
                const float range = hi - lo;
                for (size_t i = 0; i < n; i++) {
                    /* x >= lo, so the base is in [0, 1] and powf is defined. */
                    float v = lo + range * powf((p[i] - lo) / range, gamma);
                    p[i] = v > hi ? hi : v;
                }
            }
        }
        if (do_affine) {
            double sum = 0.0;
            for (size_t i = 0; i < n; i++) sum += p[i];
            const float mean = (float)(sum / (double)n);
            for (size_t i = 0; i < n; i++) p[i] = (p[i] - mean) * contrast + mean + brightness;
        }
    }
}
