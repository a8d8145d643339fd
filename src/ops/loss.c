/* loss.c — segmentation losses on logits (N, C, H, W): softmax cross entropy, sigmoid binary
 * cross entropy and soft Dice, each returning the loss and accumulating its gradient.
 *
 * Each pixel's C logits lie H*W floats apart (NCHW).  Per pixel, the softmax is computed in
 * double with the maximum subtracted first, so exp cannot overflow, and the C exponentials are
 * kept in a stack array (C <= UNET_MAX_CLASSES) for the gradient: CE is log-sum-exp minus the
 * target logit, its gradient softmax - one_hot.  Doing the per-pixel work in double costs little
 * next to the convolutions and keeps the loss accurate to ~1e-15 relative before the final
 * float rounding of the gradient.
 *
 * Threads: the pixels are cut into at most MAX_BLOCKS blocks whose bounds depend only on the
 * pixel count (never on the thread count).  Each block sums its pixels serially into its own
 * slot of a stack array of partials; the partials are then added in block order.  So the loss
 * is the same for any number of threads, and nothing is allocated.  Gradient writes are per
 * pixel, owned by the block's thread.  The alternative, an OpenMP reduction(+) on a double,
 * adds in an order that changes with the team size.
 *
 * Dice needs the per-class sums over the whole batch before any gradient can be formed, so it
 * makes two passes: sums (block partials per class), then the gradient.
 *
 * Contract (ops.h): logits and dlogits (N, C, H, W) float32 NCHW, target and weight (N, H, W);
 * each returns the loss and accumulates scale * dLoss/dlogits into dlogits (when non-NULL).
 * Tested (tests/test_loss_optim.c) against PyTorch (golden loss_optim: CE with ignore_index and
 * weights, BCE, Dice), by finite differences, for accumulation, all-ignored batches, NaN, and
 * the same value on 1 and 2 threads.
 */
#include "ops/ops.h"

#include <math.h>
#include <stddef.h>

#define MAX_BLOCKS 256
#define MIN_BLOCK_PIXELS 1024
/* Dice keeps 3 sums per class per block; this many doubles (48 KiB) bound its stack array. */
#define DICE_PARTIAL_DOUBLES 6144

/* Blocks for `pixels` pixels: about MIN_BLOCK_PIXELS each, between 1 and max_blocks. */
static int block_count(size_t pixels, int max_blocks) {
    size_t nb = (pixels + MIN_BLOCK_PIXELS - 1) / MIN_BLOCK_PIXELS;
    if (nb < 1) nb = 1;
    if (nb > (size_t)max_blocks) nb = (size_t)max_blocks;
    return (int)nb;
}

/* First pixel of block b of nb (block nb is the end). */
static size_t block_start(size_t pixels, int nb, int b) {
    return (size_t)((uint64_t)pixels * (uint64_t)b / (uint64_t)nb);
}

/* e[c] = exp(x[c * stride] - max_c x), in double; returns sum_c e[c] (>= 1) and the max in
 * *mx.  A NaN logit makes the sum NaN. */
static double exp_shifted(double *e, const float *x, size_t stride, int C, double *mx) {
    float m = x[0];
    for (int c = 1; c < C; c++)
        if (x[(size_t)c * stride] > m) m = x[(size_t)c * stride];
    double s = 0.0;
    for (int c = 0; c < C; c++) {
        e[c] = exp((double)x[(size_t)c * stride] - m);
        s += e[c];
    }
    *mx = m;
    return s;
}

/* Pixels that count: labeled (t >= 0) and not ignore_index.  Integer sums: any order is exact. */
static size_t count_kept(const int32_t *target, size_t pixels, int ignore_index) {
    const ptrdiff_t P = (ptrdiff_t)pixels;
    size_t count = 0;
#pragma omp parallel for reduction(+ : count) schedule(static)
    for (ptrdiff_t i = 0; i < P; i++) count += target[i] >= 0 && target[i] != ignore_index;
    return count;
}

/* What a per-pixel loss term reads; gscale = scale / (pixels that count). */
struct pixel_loss {
    float         *dlogits;
    const float   *logits, *weight;
    const int32_t *target;
    int            C, ignore_index;
    size_t         HW;
    double         gscale;
};

/* The mean of term(a, i) over the `count` pixels that count of [0, P) (term is 0 for the
 * others), summed by fixed blocks as the opening comment says. */
static double block_mean(const struct pixel_loss *a, size_t P, size_t count,
                         double (*term)(const struct pixel_loss *a, size_t i)) {
    const int nb = block_count(P, MAX_BLOCKS);
    double    partial[MAX_BLOCKS];
#pragma omp parallel for schedule(static)
    for (int b = 0; b < nb; b++) {
        const size_t i0 = block_start(P, nb, b), i1 = block_start(P, nb, b + 1);
        double sum = 0.0;
        for (size_t i = i0; i < i1; i++) sum += term(a, i);
        partial[b] = sum;
    }
    double total = 0.0;
    for (int b = 0; b < nb; b++) total += partial[b];
    return total / (double)count;
}

/* ---- softmax cross entropy ---- */

static double ce_term(const struct pixel_loss *a, size_t i) {
    const int t = a->target[i];
    if (t < 0 || t == a->ignore_index) return 0.0;
    UNET_ASSERT(t >= 0 && t < a->C);
    const size_t off = (i / a->HW) * (size_t)a->C * a->HW + i % a->HW;   /* (n, 0, h, w) */
    const float *x = a->logits + off;
    double e[UNET_MAX_CLASSES];
    double mx;
    const double s = exp_shifted(e, x, a->HW, a->C, &mx);
    const double w = a->weight ? (double)a->weight[i] : 1.0;
    if (a->dlogits) {
        /* d/dx_c = w (softmax_c - [c == t]) / count */
        float *dx = a->dlogits + off;
        const double g = a->gscale * w, inv_s = 1.0 / s;
        for (int c = 0; c < a->C; c++)
            dx[(size_t)c * a->HW] += (float)(g * (e[c] * inv_s - (c == t ? 1.0 : 0.0)));
    }
    /* -log softmax(x)[t] = log sum exp(x - max) - (x[t] - max) */
    return w * (log(s) - ((double)x[(size_t)t * a->HW] - mx));
}

double unet__softmax_ce(float *dlogits, float scale, const float *logits, const int32_t *target,
                        const float *weight, int ignore_index, const struct unet__loss_dims *d) {
    UNET_ASSERT(d->C >= 1 && d->C <= UNET_MAX_CLASSES);
    const size_t HW = (size_t)d->H * d->W, P = (size_t)d->N * HW;
    /* The mean is over the pixels that count, so their number comes first. */
    const size_t count = count_kept(target, P, ignore_index);
    if (count == 0) return 0.0;
    const struct pixel_loss a = {dlogits, logits, weight, target, d->C, ignore_index, HW,
                                 (double)scale / (double)count};
    return block_mean(&a, P, count, ce_term);
}

/* ---- binary cross entropy with logits ---- */

static double bce_term(const struct pixel_loss *a, size_t i) {
    if (a->target[i] < 0) return 0.0;
    UNET_ASSERT(a->target[i] == 0 || a->target[i] == 1);
    const double x = a->logits[i], t = a->target[i];
    const double w = a->weight ? (double)a->weight[i] : 1.0;
    /* log(1 + exp(x)) - x t in the form that neither overflows nor cancels:
     * max(x, 0) - x t + log1p(exp(-|x|)) */
    const double e = exp(-fabs(x));
    if (a->dlogits) {
        /* d/dx = w (sigmoid(x) - t) / P, sigmoid from the same exp(-|x|) */
        const double sig = x >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
        a->dlogits[i] += (float)(a->gscale * w * (sig - t));
    }
    return w * ((x > 0.0 ? x : 0.0) - x * t + log1p(e));
}

double unet__bce_logits(float *dlogits, float scale, const float *logits, const int32_t *target,
                        const float *weight, const struct unet__loss_dims *d) {
    UNET_ASSERT(d->C == 1);
    const size_t P = (size_t)d->N * d->H * d->W;
    const size_t count = count_kept(target, P, -1);
    if (count == 0) return 0.0;
    const struct pixel_loss a = {dlogits, logits, weight, target, 1, -1, P,
                                 (double)scale / (double)count};
    return block_mean(&a, P, count, bce_term);
}

/* ---- soft Dice ---- */

/* Class probabilities of one pixel: softmax over C channels, or the sigmoid when C == 1. */
static void pixel_probs(double *p, const float *x, size_t stride, int C) {
    if (C == 1) {
        const double e = exp(-fabs((double)x[0]));
        p[0] = x[0] >= 0.0f ? 1.0 / (1.0 + e) : e / (1.0 + e);
        return;
    }
    double mx;
    const double inv_s = 1.0 / exp_shifted(p, x, stride, C, &mx);
    for (int c = 0; c < C; c++) p[c] *= inv_s;
}

/* The one-hot target's class at a pixel: t itself, or (C == 1) class 0 when t is foreground. */
static int pixel_class(int32_t t, int C) {
    if (C == 1) {
        UNET_ASSERT(t == 0 || t == 1);
        return t == 1 ? 0 : -1;
    }
    UNET_ASSERT(t >= 0 && t < C);
    return t;
}

double unet__dice_loss(float *dlogits, float scale, const float *logits, const int32_t *target,
                       float eps, const struct unet__loss_dims *d) {
    const int    C  = d->C;
    const size_t HW = (size_t)d->H * d->W;
    const size_t P  = (size_t)d->N * HW;
    UNET_ASSERT(C >= 1 && C <= UNET_MAX_CLASSES);
    int max_blocks = DICE_PARTIAL_DOUBLES / (3 * C);   /* 32 at C = 64 */
    if (max_blocks > MAX_BLOCKS) max_blocks = MAX_BLOCKS;
    const int nb = block_count(P, max_blocks);
    /* partial[b * 3C + ...]: sum p_c y_c, sum p_c, sum y_c over block b (the last exact). */
    double partial[DICE_PARTIAL_DOUBLES];
    UNET_ASSERT((size_t)nb * 3 * (size_t)C <= DICE_PARTIAL_DOUBLES);
#pragma omp parallel for schedule(static)
    for (int b = 0; b < nb; b++) {
        double *inter = partial + (size_t)b * 3 * C, *psum = inter + C, *ysum = psum + C;
        for (int c = 0; c < 3 * C; c++) inter[c] = 0.0;
        const size_t i0 = block_start(P, nb, b), i1 = block_start(P, nb, b + 1);
        for (size_t i = i0; i < i1; i++) {
            if (target[i] < 0) continue;
            const float *x = logits + (i / HW) * (size_t)C * HW + i % HW;
            double p[UNET_MAX_CLASSES];
            pixel_probs(p, x, HW, C);
            for (int c = 0; c < C; c++) psum[c] += p[c];
            const int y = pixel_class(target[i], C);
            if (y >= 0) {
                inter[y] += p[y];
                ysum[y] += 1.0;
            }
        }
    }
    /* loss = 1 - (1/C) sum_c (2 I_c + eps) / D_c,  D_c = S_c + Y_c + eps.
     * dloss/dp_c(x) = -(1/C) (2 y_c(x) D_c - (2 I_c + eps)) / D_c^2 = ga_c y_c(x) + gb_c. */
    double ga[UNET_MAX_CLASSES], gb[UNET_MAX_CLASSES];
    double dice_sum = 0.0;
    for (int c = 0; c < C; c++) {
        double I = 0.0, S = 0.0, Y = 0.0;
        for (int b = 0; b < nb; b++) {
            const double *part = partial + (size_t)b * 3 * C;
            I += part[c], S += part[C + c], Y += part[2 * C + c];
        }
        const double num = 2.0 * I + eps, den = S + Y + eps;
        dice_sum += num / den;
        ga[c] = -2.0 / (C * den) * scale;
        gb[c] = num / (C * den * den) * scale;
    }
    if (dlogits) {
#pragma omp parallel for schedule(static)
        for (int b = 0; b < nb; b++) {
            const size_t i0 = block_start(P, nb, b), i1 = block_start(P, nb, b + 1);
            for (size_t i = i0; i < i1; i++) {
                if (target[i] < 0) continue;
                const size_t off = (i / HW) * (size_t)C * HW + i % HW;
                float *dx = dlogits + off;
                double p[UNET_MAX_CLASSES];
                pixel_probs(p, logits + off, HW, C);
                const int y = pixel_class(target[i], C);
                if (C == 1) {
                    /* sigmoid' = p (1 - p) */
                    const double g = gb[0] + (y == 0 ? ga[0] : 0.0);
                    dx[0] += (float)(g * p[0] * (1.0 - p[0]));
                    continue;
                }
                /* softmax backward: dz_k = p_k (g_k - sum_c p_c g_c) */
                double pg = 0.0;
                for (int c = 0; c < C; c++) pg += p[c] * gb[c];
                if (y >= 0) pg += p[y] * ga[y];
                for (int c = 0; c < C; c++) {
                    const double g = gb[c] + (c == y ? ga[c] : 0.0);
                    dx[(size_t)c * HW] += (float)(p[c] * (g - pg));
                }
            }
        }
    }
    return 1.0 - dice_sum / C;
}
