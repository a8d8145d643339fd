/* augment.h — internals of the training-data pipeline, shared by dataset.c, augment.c,
 * sampler.c and tests/test_augment.c; never installed.
 *
 * The pipeline for one sample: sampler.c draws the sample's parameters (image, crop position,
 * dihedral element, rotation, shift, elastic grid, gray values) from the sample's own random
 * stream; augment.c turns the geometry into one map of source coordinates for the input window
 * (unet__aug_coords), samples the image bicubically, the target by nearest neighbour and the
 * weight bilinearly through that map (the target and weight windows are a sub-rectangle of the
 * same map, so the three always line up), and finally varies the gray values of the image.
 */
#ifndef UNET_AUGMENT_H
#define UNET_AUGMENT_H

#include "internal.h"

#include <math.h>

/* ---- the dataset (dataset.c); sampler.c reads it directly ---- */

struct unet__item {
    float   *image;     /* (C, H, W) */
    int32_t *target;    /* (H, W) class ids, -1 = unlabeled */
    float   *weight;    /* (H, W) or NULL (then NULL for every item) */
    int      h, w;
    char    *name;
};

struct unet_dataset {
    int                channels;
    int                has_weight;   /* -1 until the first image is added, then 0 or 1 */
    int                count, cap;
    struct unet__item *items;        /* (cap); the pixel buffers never move once added */
};

/* Seconds on the monotonic clock (sampler.c), for the sampler's and the trainer's timings. */
double unet__seconds(void);

/* ---- geometry ---- */

/* The dihedral element: the axes of the window frame are swapped, then negated. */
enum {
    UNET__AUG_TRANSPOSE = 1,
    UNET__AUG_FLIP_Y    = 2,
    UNET__AUG_FLIP_X    = 4
};

/* One sample's geometric transform.  Window-frame coordinates u = (r, c) - centre, where (r, c)
 * is a pixel of the input window and centre the centre of the output window inside it (the
 * output window starts at ((in_h - out_h) / 2, (in_w - out_w) / 2), integer division).
 * A pixel's source position in the image is
 *     s = (cy, cx) + D(R(angle) (u + e(r, c)))
 * with e the elastic displacement field, R the rotation and D the dihedral element. */
struct unet__aug_geom {
    int          in_h, in_w;     /* input window */
    int          out_h, out_w;   /* output window, out <= in */
    int          dihedral;       /* UNET__AUG_* bits */
    double       cy, cx;         /* source position of the output window's centre */
    double       angle;          /* radians */
    int          grid;           /* elastic grid points per side (>= 2); 0: no elastic field */
    const float *disp;           /* (2, grid, grid): dy then dx at the grid points, pixels */
};

/* Floats of scratch unet__aug_coords needs. */
size_t unet__aug_coords_scratch(int in_w, int grid);

/* Fills sy, sx (in_h, in_w) with the source coordinates of every input window pixel.
 * The elastic field: grid point (i, j) sits at window pixel (i (in_h - 1) / (grid - 1),
 * j (in_w - 1) / (grid - 1)), so the corner points sit on the corner pixels; between them the
 * field is interpolated separably with Keys' cubic convolution (a = -0.5), neighbours beyond
 * the grid's edge clamped to the edge point.  Exact arithmetic where it can be: with no
 * rotation, a zero field and integer or half-integer centre, every coordinate is an integer. */
void unet__aug_coords(const struct unet__aug_geom *g, float *sy, float *sx, float *scratch);

/* Keys' cubic convolution kernel, a = -0.5 (the Catmull-Rom spline on unit spacing): the weights
 * of the taps at -1, 0, 1, 2 for a point at fraction t in [0, 1) past tap 0.  They sum to 1,
 * t = 0 gives exactly (0, 1, 0, 0), and polynomials up to degree 2 are reproduced. */
static inline void unet__cubic_weights(float t, float w[4]) {
    w[0] = ((-0.5f * t + 1.0f) * t - 0.5f) * t;
    w[1] = (1.5f * t - 2.5f) * t * t + 1.0f;
    w[2] = ((-1.5f * t + 2.0f) * t + 0.5f) * t;
    w[3] = (0.5f * t - 0.5f) * t * t;
}

/* Mirror index without repeating the edge (numpy.pad 'reflect', PyTorch ReflectionPad):
 * ... 2 1 | 0 1 2 ... n-1 | n-2 n-3 ...; periodic with period 2n - 2, so any distance works. */
static inline int64_t unet__reflect(int64_t i, int64_t n) {
    if (i >= 0 && i < n) return i;
    if (n == 1) return 0;
    int64_t p = 2 * n - 2;
    i %= p;
    if (i < 0) i += p;
    return i < n ? i : p - i;
}

/* ---- sampling through a coordinate map ----
 * The map entries for output pixel (r, c) are sy[r * stride + c], sx[r * stride + c]; the
 * output is dense (rows, cols).  Images are (C, H, W) planes. */

/* Bicubic (unet__cubic_weights), the image mirrored (unet__reflect) beyond its border.  A pixel
 * whose coordinates are both integers is copied, so integer maps are exact.  out is
 * (C, rows, cols). */
void unet__aug_bicubic(float *out, const float *img, int C, int H, int W, const float *sy,
                       const float *sx, int rows, int cols, size_t stride);
/* Nearest neighbour, rounding halves up (floor(s) + (s - floor(s) >= 0.5)); -1 where that pixel
 * lies outside the image.  Never blends: every value written is a label of lab or -1. */
void unet__aug_nearest(int32_t *out, const int32_t *lab, int H, int W, const float *sy,
                       const float *sx, int rows, int cols, size_t stride);
/* Bilinear, mirrored beyond the border like the image; 0 where unet__aug_nearest gives -1
 * (outside the image), so a weight never comes with an unlabeled target from outside. */
void unet__aug_bilinear(float *out, const float *wt, int H, int W, const float *sy,
                        const float *sx, int rows, int cols, size_t stride);

/* ---- gray values ----
 * Per channel of one sample (n pixels each), with lo, hi, mean its minimum, maximum and mean:
 *     gamma:      x <- lo + (hi - lo) ((x - lo) / (hi - lo))^gamma     (when hi > lo)
 *     contrast:   x <- (x - mean) contrast + mean + brightness          (mean after gamma)
 * Gamma bends the values inside the channel's own range, so it needs no assumption about the
 * scale ([0, 1], 0..255, percentile-normalised with values outside [0, 1]); all three are
 * monotone and invertible for contrast > 0.  gamma == 1, contrast == 1, brightness == 0 leave x
 * untouched (the steps are skipped). */
void unet__aug_gray(float *x, int C, size_t n, float brightness, float contrast, float gamma);

/* Checks an augmentation's fields; the message names the bad one. */
unet_status unet__augment_check(unet_ctx *ctx, const unet_augment *a);

#endif /* UNET_AUGMENT_H */
