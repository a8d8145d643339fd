/* dropout.c — Dropout and Dropout2d (inverted), forward with a fresh mask, forward with a given
 * mask, and backward.
 *
 *     keep = !(u < p), u uniform in [0, 1) from rng     (so p = 0 keeps everything)
 *     y    = x * (keep ? 1 / (1 - p) : 0)
 *     dx  += dy * (keep ? 1 / (1 - p) : 0)
 * Dropout draws one u per element, Dropout2d one per (n, c) channel, both in memory order.
 * The factor multiplies rather than selects, as PyTorch's x * noise: a dropped NaN or inf
 * stays NaN, and the model never sees a silently cleaned value.  The scale is computed in
 * float as PyTorch's noise.div_(1 - p) does.
 *
 * Threads: the mask is drawn on the calling thread from the one rng stream, so it depends only
 * on the seed (per-thread streams would tie it to the thread count).  Applying it, the cheap
 * part, splits the element range (or the channels) statically.
 *
 * Contract (ops.h): x, y (N, C, H, W) float32 NCHW, y may alias x; mask one byte per element
 * (Dropout) or per (n, c) (Dropout2d), 1 = keep; forward overwrites y and mask, backward
 * accumulates into dx.  Tested (tests/test_pool_relu_dropout.c) with PyTorch's masks against
 * PyTorch (golden pool_relu, tools/golden/pool_relu.py), by finite differences, and for the
 * keep rate, the scaling, the same mask from the same seed and backward (dropout_mask).
 */
#include "ops/ops.h"

/* Below this many elements one thread is faster than a team. */
#define PARALLEL_MIN ((size_t)1 << 15)

static float keep_scale(const struct unet__dropout_dims *d) {
    UNET_ASSERT(d->p >= 0.0f && d->p < 1.0f);
    return 1.0f / (1.0f - d->p);
}

static size_t mask_count(const struct unet__dropout_dims *d) {
    return d->channelwise ? (size_t)d->N * d->C : (size_t)d->N * d->C * d->H * d->W;
}

/* out = in * (mask ? scale : 0), one mask byte per element or per channel; out may be in. */
static void apply_mask(float *out, const float *in, const uint8_t *mask, float scale,
                       bool accumulate, const struct unet__dropout_dims *d) {
    const float f[2] = {0.0f, scale};
    if (d->channelwise) {
        const long long planes = (long long)d->N * d->C;
        const size_t    P = (size_t)d->H * d->W;
#pragma omp parallel for schedule(static) if ((size_t)planes * P >= PARALLEL_MIN)
        for (long long c = 0; c < planes; c++) {
            const float  s = f[mask[c] != 0];
            float       *o = out + (size_t)c * P;
            const float *v = in + (size_t)c * P;
            if (accumulate)
                for (size_t i = 0; i < P; i++)
                    o[i] += v[i] * s;
            else
                for (size_t i = 0; i < P; i++)
                    o[i] = v[i] * s;
        }
        return;
    }
    const size_t n = mask_count(d);
    if (accumulate) {
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
        for (size_t i = 0; i < n; i++)
            out[i] += in[i] * f[mask[i] != 0];
    } else {
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
        for (size_t i = 0; i < n; i++)
            out[i] = in[i] * f[mask[i] != 0];
    }
}

void unet__dropout_forward(float *y, uint8_t *mask, const float *x,
                           const struct unet__dropout_dims *d, struct unet__rng *rng) {
    const size_t m = mask_count(d);
    for (size_t i = 0; i < m; i++)
        mask[i] = !(unet__rng_uniform(rng) < d->p);
    apply_mask(y, x, mask, keep_scale(d), false, d);
}

void unet__dropout_apply(float *y, const uint8_t *mask, const float *x,
                         const struct unet__dropout_dims *d) {
    apply_mask(y, x, mask, keep_scale(d), false, d);
}

void unet__dropout_backward(float *dx, const float *dy, const uint8_t *mask,
                            const struct unet__dropout_dims *d) {
    /* Inverts y = x * (keep ? 1 / (1 - p) : 0): the same factor, accumulated. */
    apply_mask(dx, dy, mask, keep_scale(d), true, d);
}
