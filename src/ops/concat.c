/* concat.c — skip connections: channel concatenation with crop or pad, FCN's crop-and-add,
 * and a crop alone.
 *
 * All of them are built on one map, place: an input plane moved by an offset into an output
 * plane of another size,
 *     place(x)[i, j] = x[i + off_h, j + off_w],  zero where that falls outside x,
 * so a positive offset crops (the paper's crop_and_concat, FCN's Crop layer) and a negative one
 * pads (F.pad in the PyTorch ports).  place is a copy of the overlapping rectangle plus zero
 * fill, and its adjoint adds the overlapping rectangle of the output gradient back into the
 * input gradient; each input element meets at most one output element, so the backward passes
 * are plain sums with nothing to order.
 *
 * Threads split the output planes (n, c); every input plane belongs to exactly one output
 * plane, so in backward the same split also gives each thread its own gradient planes.
 * The alternative, materialising the padded or cropped map and then copying it, costs a buffer
 * per skip connection and a second pass for no gain.
 *
 * Contract (ops.h): float32 NCHW planes; concat y (N, C_a + C_b, H, W) from a, b (N, C, H_a/b,
 * W_a/b) placed by struct unet__place; add_place y (N, C, H, W) = a + place(b), y may alias a;
 * crop y (N, C, H, W) = place(x).  Forward overwrites, backward accumulates (the concatenation's
 * may set instead: unet__concat_backward_set).  Tested
 * (tests/test_upsample_concat.c) against unet__concat_forward_ref and element-wise
 * definitions, against PyTorch (golden upsample_concat: centre crop, F.pad, FCN's crop-and-add)
 * and by finite differences.
 */
#include "ops/ops.h"

#include <string.h>

/* PyTorch ports pad the smaller map with diff // 2 zeros first; the paper crops the larger
 * one starting at diff // 2.  Both round the leading margin down. */
static int center_offset(int in, int out) {
    return in >= out ? (in - out) / 2 : -((out - in) / 2);
}

void unet__place_center(struct unet__place *p, int C, int H_in, int W_in, int H_out, int W_out) {
    p->C = C;
    p->H = H_in;
    p->W = W_in;
    p->off_h = center_offset(H_in, H_out);
    p->off_w = center_offset(W_in, W_out);
}

/* The output columns [*j0, *j1) of a W-wide row that read the input (j + off in [0, W_in)). */
static void overlap(int W, int W_in, int off, int *j0, int *j1) {
    long long lo = -(long long)off, hi = (long long)W_in - off;
    if (lo < 0) lo = 0;
    if (lo > W) lo = W;
    if (hi > W) hi = W;
    if (hi < lo) hi = lo;
    *j0 = (int)lo;
    *j1 = (int)hi;
}

/* The input row for output row i, or NULL when it falls outside the input. */
static const float *src_row(const float *x, int i, const struct unet__place *p) {
    long long si = (long long)i + p->off_h;
    return si >= 0 && si < p->H ? x + (size_t)si * p->W : NULL;
}

/* y (H, W) = place(x); x is one (p->H, p->W) plane. */
static void place_plane(float *y, const float *x, int H, int W, const struct unet__place *p) {
    int j0, j1;
    overlap(W, p->W, p->off_w, &j0, &j1);
    for (int i = 0; i < H; i++) {
        float *yr = y + (size_t)i * W;
        const float *xr = src_row(x, i, p);
        if (!xr || j0 == j1) {
            memset(yr, 0, sizeof(float) * (size_t)W);
            continue;
        }
        memset(yr, 0, sizeof(float) * (size_t)j0);
        memcpy(yr + j0, xr + (j0 + p->off_w), sizeof(float) * (size_t)(j1 - j0));
        memset(yr + j1, 0, sizeof(float) * (size_t)(W - j1));
    }
}

/* dx (p->H, p->W) += the window of dy (H, W) that place(x) read: the adjoint of place_plane. */
static void unplace_plane_add(float *dx, const float *dy, int H, int W, const struct unet__place *p) {
    int j0, j1;
    overlap(W, p->W, p->off_w, &j0, &j1);
    if (j0 == j1) return;
    for (int i = 0; i < H; i++) {
        long long si = (long long)i + p->off_h;
        if (si < 0 || si >= p->H) continue;
        float *dr = dx + (size_t)si * p->W + (j0 + p->off_w);
        const float *g = dy + (size_t)i * W;
        for (int j = j0; j < j1; j++) dr[j - j0] += g[j];
    }
}

/* What place_channels does: the forward, or the adjoint added to dx or setting it. */
enum place_way { PLACE, UNPLACE_ADD, UNPLACE_SET };

/* The planes of x (N, p->C, p->H, p->W) placed into channels [c0, c0 + p->C) of y (N, C, H, W)
 * (PLACE: out = y, in = x), or the adjoint, dx += the windows of those channels of dy
 * (UNPLACE_ADD: out = dx, in = dy), or dx = them, zero outside (UNPLACE_SET: dx's old contents
 * never read, for a gradient this is the first to write).  The set adjoint is itself a
 * placement: dy's plane placed into dx's by the opposite offset.  Each thread owns the planes it
 * writes. */
static void place_channels(enum place_way way, float *out, const float *in, int N, int C, int c0,
                           int H, int W, const struct unet__place *p) {
    const size_t plane = (size_t)H * W, x_plane = (size_t)p->H * p->W;
    const struct unet__place back = {.C = p->C, .H = H, .W = W, .off_h = -p->off_h,
                                     .off_w = -p->off_w};
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++)
        for (int c = 0; c < p->C; c++) {
            const size_t yk = ((size_t)n * C + c0 + c) * plane;
            const size_t xk = ((size_t)n * p->C + c) * x_plane;
            if (way == PLACE) place_plane(out + yk, in + xk, H, W, p);
            else if (way == UNPLACE_SET) place_plane(out + xk, in + yk, p->H, p->W, &back);
            else unplace_plane_add(out + xk, in + yk, H, W, p);
        }
}

/* ---- concatenation ---- */

void unet__concat_forward(float *y, const float *a, const float *b, const struct unet__concat_dims *d) {
    const int C = d->a.C + d->b.C;
    place_channels(PLACE, y, a, d->N, C, 0, d->H, d->W, &d->a);
    place_channels(PLACE, y, b, d->N, C, d->a.C, d->H, d->W, &d->b);
}

void unet__concat_backward(float *da, float *db, const float *dy, const struct unet__concat_dims *d) {
    unet__concat_backward_set(da, false, db, false, dy, d);
}

void unet__concat_backward_set(float *da, bool set_a, float *db, bool set_b, const float *dy,
                               const struct unet__concat_dims *d) {
    /* Inverts y[n, c] = place(a[n, c]) for c < C_a, place(b[n, c - C_a]) after. */
    const int C = d->a.C + d->b.C;
    if (da)
        place_channels(set_a ? UNPLACE_SET : UNPLACE_ADD, da, dy, d->N, C, 0, d->H, d->W, &d->a);
    if (db)
        place_channels(set_b ? UNPLACE_SET : UNPLACE_ADD, db, dy, d->N, C, d->a.C, d->H, d->W,
                       &d->b);
}

/* The definition, one element at a time. */
void unet__concat_forward_ref(float *y, const float *a, const float *b,
                              const struct unet__concat_dims *d) {
    const int C = d->a.C + d->b.C;
    for (int n = 0; n < d->N; n++)
        for (int c = 0; c < C; c++)
            for (int i = 0; i < d->H; i++)
                for (int j = 0; j < d->W; j++) {
                    const bool first = c < d->a.C;
                    const struct unet__place *p = first ? &d->a : &d->b;
                    const float *x = first ? a : b;
                    const int cx = first ? c : c - d->a.C;
                    const int si = i + p->off_h, sj = j + p->off_w;
                    float v = 0.0f;
                    if (si >= 0 && si < p->H && sj >= 0 && sj < p->W)
                        v = x[(((size_t)n * p->C + cx) * p->H + si) * p->W + sj];
                    y[(((size_t)n * C + c) * d->H + i) * d->W + j] = v;
                }
}

/* ---- FCN's crop-and-add ---- */

/* y may alias a: every element is read before it is written, by the same thread. */
void unet__add_place_forward(float *y, const float *a, const float *b, const struct unet__add_dims *d) {
    const size_t plane = (size_t)d->H * d->W, b_plane = (size_t)d->b.H * d->b.W;
    int j0, j1;
    overlap(d->W, d->b.W, d->b.off_w, &j0, &j1);
    UNET_ASSERT(d->b.C == d->C);
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < d->N; n++)
        for (int c = 0; c < d->C; c++) {
            const size_t off = ((size_t)n * d->C + c) * plane;
            const float *bp = b + ((size_t)n * d->C + c) * b_plane;
            for (int i = 0; i < d->H; i++) {
                float *yr = y + off + (size_t)i * d->W;
                const float *ar = a + off + (size_t)i * d->W;
                const float *br = src_row(bp, i, &d->b);
                if (!br) {
                    for (int j = 0; j < d->W; j++) yr[j] = ar[j];
                    continue;
                }
                for (int j = 0; j < j0; j++) yr[j] = ar[j];
                for (int j = j0; j < j1; j++) yr[j] = ar[j] + br[j + d->b.off_w];
                for (int j = j1; j < d->W; j++) yr[j] = ar[j];
            }
        }
}

void unet__add_place_backward(float *da, float *db, const float *dy, const struct unet__add_dims *d) {
    const size_t plane = (size_t)d->H * d->W, b_plane = (size_t)d->b.H * d->b.W;
    /* Inverts y = a + place(b): da += dy, db += the window of dy. */
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < d->N; n++)
        for (int c = 0; c < d->C; c++) {
            const size_t off = ((size_t)n * d->C + c) * plane;
            if (da)
                for (size_t k = 0; k < plane; k++) da[off + k] += dy[off + k];
            if (db)
                unplace_plane_add(db + ((size_t)n * d->C + c) * b_plane, dy + off, d->H, d->W, &d->b);
        }
}

/* ---- crop or pad alone ---- */

void unet__crop_forward(float *y, const float *x, int N, int H, int W, const struct unet__place *p) {
    place_channels(PLACE, y, x, N, p->C, 0, H, W, p);
}

void unet__crop_backward(float *dx, const float *dy, int N, int H, int W, const struct unet__place *p) {
    /* Inverts y = place(x). */
    if (dx) place_channels(UNPLACE_ADD, dx, dy, N, p->C, 0, H, W, p);
}
