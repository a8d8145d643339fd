/* test_augment.c — the dataset, the augmentation transforms and the sampler.
 *
 * Most checks use a "coordinate image": channel 0 holds each pixel's row y, channel 1 its column
 * x, the target y * W + x and the weight x.  Whatever the sampler does, a sample then says where
 * every output pixel came from: without augmentation the crop must be a contiguous block inside
 * the image (or the mirrored continuation of the image); with rotations and elastic deformation
 * the bicubic image still equals the source coordinate (Keys' kernel reproduces linear
 * functions) away from the border, so the nearest-neighbour target must equal that coordinate
 * rounded, and the bilinear weight must equal the column.
 *
 * Exact transforms are checked for bitwise equality: the 8 flips/90-degree rotations compose as a
 * group (4 x rot90 = identity, flip twice = identity, flip y + flip x = rot180), a zero elastic
 * field is the identity, and a recipe with every amount 0 equals no augmentation.  Determinism:
 * the same seed gives the same batches bit for bit with 0, 1 and 3 workers, seek(k) reproduces
 * batch k, and a different seed changes them.  Statistical checks (fixed seeds, so they are
 * deterministic too): crops are spread over the image, images are chosen evenly, and where the
 * deformed mask is 1 the deformed image (255 * mask) is bright.
 */
#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wunused-function"
#endif
#include "harness.h"
#include "augment.h"

#include <time.h>

static unet_ctx *ctx;

/* ---- helpers ---- */

/* The coordinate image: (2, H, W) image with y and x, target y * W + x, weight x. */
static unet_dataset *coord_dataset(int H, int W, bool weights) {
    float *img = test_alloc((size_t)2 * H * W), *wt = test_alloc((size_t)H * W);
    int32_t *t = calloc((size_t)H * W, sizeof *t);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            size_t i = (size_t)y * W + x;
            img[i] = (float)y;
            img[(size_t)H * W + i] = (float)x;
            t[i] = (int32_t)i;
            wt[i] = (float)x;
        }
    unet_dataset *ds = NULL;
    CHECK_STATUS(unet_dataset_create(ctx, 2, &ds), UNET_STATUS_OK);
    CHECK_STATUS(unet_dataset_add(ctx, ds, img, t, weights ? wt : NULL, H, W, "coords"),
                 UNET_STATUS_OK);
    free(img);
    free(wt);
    free(t);
    return ds;
}

/* One batch's buffers. */
struct batch {
    float   *x;
    int32_t *t;
    float   *w;
    size_t   nx, nm;
};

static struct batch batch_alloc(int n, int C, int in_h, int in_w, int out_h, int out_w) {
    struct batch b;
    b.nx = (size_t)n * C * in_h * in_w;
    b.nm = (size_t)n * out_h * out_w;
    b.x = test_alloc(b.nx);
    b.w = test_alloc(b.nm);
    b.t = calloc(b.nm, sizeof *b.t);
    return b;
}

static void batch_free(struct batch *b) {
    free(b->x);
    free(b->t);
    free(b->w);
}

static bool batch_equal(const struct batch *a, const struct batch *b) {
    return !memcmp(a->x, b->x, a->nx * sizeof *a->x) && !memcmp(a->t, b->t, a->nm * sizeof *a->t) &&
           !memcmp(a->w, b->w, a->nm * sizeof *a->w);
}

/* A paper recipe without gray values, so the coordinate image keeps its coordinates. */
static unet_augment paper_geometry(void) {
    unet_augment a = unet_augment_paper();
    a.brightness = 0.0f;
    a.contrast = 0.0f;
    a.gamma = 0.0f;
    return a;
}

/* Round halves up, the sampler's rule. */
static long round_half_up(float s) {
    float f = floorf(s);
    return (long)f + (s - f >= 0.5f);
}

/* Warps a whole (H, W) image by dihedral element d about its centre into out (oh, ow), with
 * (oh, ow) = (W, H) for transposing elements.  Float image bicubic, labels nearest. */
static void warp_whole(float *out, int32_t *lout, const float *in, const int32_t *lin, int H,
                       int W, int d) {
    struct unet__aug_geom g = {0};
    const bool tr = d & UNET__AUG_TRANSPOSE;
    g.in_h = g.out_h = tr ? W : H;
    g.in_w = g.out_w = tr ? H : W;
    g.dihedral = d;
    g.cy = 0.5 * (H - 1);
    g.cx = 0.5 * (W - 1);
    size_t n = (size_t)H * W;
    float *sy = test_alloc(n), *sx = test_alloc(n);
    unet__aug_coords(&g, sy, sx, NULL);
    unet__aug_bicubic(out, in, 1, H, W, sy, sx, g.in_h, g.in_w, (size_t)g.in_w);
    unet__aug_nearest(lout, lin, H, W, sy, sx, g.in_h, g.in_w, (size_t)g.in_w);
    free(sy);
    free(sx);
}

/* ---- presets ---- */

TEST(augment_presets) {
    unet_augment n = unet_augment_none(), d = unet_augment_default(), p = unet_augment_paper();
    CHECK_EQ(n.flips, 0);
    CHECK_EQ(n.elastic, 0);
    CHECK(n.rotate == 0 && n.shift == 0 && n.brightness == 0 && n.contrast == 0 && n.gamma == 0);
    CHECK_EQ(d.flips, 1);
    CHECK_EQ(d.elastic, 0);
    CHECK(d.rotate == 0 && d.shift == 0 && d.brightness == 0);
    /* The paper: elastic deformation on a 3x3 grid with 10 px standard deviation. */
    CHECK_EQ(p.flips, 1);
    CHECK_EQ(p.elastic, 1);
    CHECK_EQ(p.elastic_grid, 3);
    CHECK_CLOSE(p.elastic_sigma, 10.0, 0, 0);
    CHECK(p.rotate > 0 && p.shift > 0 && p.brightness > 0 && p.contrast > 0 && p.gamma > 0);
    CHECK_STATUS(unet__augment_check(ctx, &n), UNET_STATUS_OK);
    CHECK_STATUS(unet__augment_check(ctx, &d), UNET_STATUS_OK);
    CHECK_STATUS(unet__augment_check(ctx, &p), UNET_STATUS_OK);
}

/* ---- exact transforms ---- */

TEST(dihedral_group) {
    const int H = 5, W = 7;
    const size_t n = (size_t)H * W;
    float in[35], a[35], b[35];
    int32_t lin[35], la[35], lb[35];
    for (size_t i = 0; i < n; i++) {
        in[i] = 0.25f + (float)i;
        lin[i] = (int32_t)i;
    }
    /* rot90 = transpose then flip x: out(r, c) = in(c, W - 1 - r), numpy.rot90's direction. */
    const int rot90 = UNET__AUG_TRANSPOSE | UNET__AUG_FLIP_X;
    warp_whole(a, la, in, lin, H, W, rot90);
    int bad = 0;
    for (int r = 0; r < W; r++)
        for (int c = 0; c < H; c++) {
            bad += a[r * H + c] != in[c * W + (W - 1 - r)];
            bad += la[r * H + c] != lin[c * W + (W - 1 - r)];
        }
    CHECK_EQ(bad, 0);
    /* Four quarter turns (the shape alternates 7x5, 5x7) give back the image bit for bit. */
    warp_whole(b, lb, a, la, W, H, rot90);
    warp_whole(a, la, b, lb, H, W, rot90);
    warp_whole(b, lb, a, la, W, H, rot90);
    CHECK(!memcmp(b, in, sizeof in));
    CHECK(!memcmp(lb, lin, sizeof lin));
    /* Each flip is its own inverse; the two flips together are rot90 twice. */
    for (int d = 1; d <= 7; d++) {
        if (d & UNET__AUG_TRANSPOSE) continue;
        warp_whole(a, la, in, lin, H, W, d);
        CHECK(memcmp(a, in, sizeof in) != 0);
        warp_whole(b, lb, a, la, H, W, d);
        CHECK(!memcmp(b, in, sizeof in));
        CHECK(!memcmp(lb, lin, sizeof lin));
    }
    float c2[35];
    int32_t lc2[35];
    warp_whole(a, la, in, lin, H, W, UNET__AUG_FLIP_Y | UNET__AUG_FLIP_X);
    warp_whole(b, lb, in, lin, H, W, rot90);
    warp_whole(c2, lc2, b, lb, W, H, rot90);
    CHECK(!memcmp(a, c2, sizeof a));
    CHECK(!memcmp(la, lc2, sizeof la));
    /* The 8 elements are 8 different permutations of the pixels (a square image, so all of them
     * have the same shape): each keeps the multiset of values and no two agree. */
    enum { S = 4 };
    float sq[S * S], out[8][S * S];
    int32_t lsq[S * S], lout[S * S];
    for (int i = 0; i < S * S; i++) {
        sq[i] = (float)(i * i);
        lsq[i] = i;
    }
    for (int d = 0; d < 8; d++) {
        warp_whole(out[d], lout, sq, lsq, S, S, d);
        int seen[S * S] = {0};
        for (int i = 0; i < S * S; i++) seen[lout[i]]++;
        for (int i = 0; i < S * S; i++) CHECK_EQ(seen[i], 1);
        for (int i = 0; i < S * S; i++) CHECK(out[d][i] == sq[lout[i]]);
        for (int e = 0; e < d; e++) CHECK(memcmp(out[d], out[e], sizeof out[d]) != 0);
    }
}

TEST(elastic_zero_is_identity) {
    /* Internal: the coordinate map with a zero 3x3 lattice equals the map without a field, bit
     * for bit, for a rotated, transposed window; a non-zero lattice moves the corners by exactly
     * the corner displacements (the lattice's corner points sit on the corner pixels). */
    enum { IH = 21, IW = 25, G = 3 };
    struct unet__aug_geom g = {0};
    g.in_h = IH;
    g.in_w = IW;
    g.out_h = 13;
    g.out_w = 16;
    g.dihedral = UNET__AUG_TRANSPOSE | UNET__AUG_FLIP_Y;
    g.cy = 40.0;
    g.cx = 33.5;
    g.angle = 0.3;
    float sy0[IH * IW], sx0[IH * IW], sy1[IH * IW], sx1[IH * IW];
    float lattice[2 * G * IW], disp[2 * G * G] = {0};
    CHECK_EQ(unet__aug_coords_scratch(IW, G), 2 * G * IW);
    unet__aug_coords(&g, sy0, sx0, NULL);
    g.grid = G;
    g.disp = disp;
    unet__aug_coords(&g, sy1, sx1, lattice);
    CHECK(!memcmp(sy0, sy1, sizeof sy0));
    CHECK(!memcmp(sx0, sx1, sizeof sx0));

    /* Without rotation, the displacement of a pixel is the field itself; check the corners and
     * the centre (grid point (1, 1) sits on pixel (10, 12) of a 21 x 25 window). */
    g.angle = 0.0;
    g.dihedral = 0;
    g.grid = 0;
    unet__aug_coords(&g, sy0, sx0, NULL);
    struct unet__rng r;
    unet__rng_seed(&r, 7);
    for (int i = 0; i < 2 * G * G; i++) disp[i] = (float)(10.0 * unet__rng_normal(&r));
    g.grid = G;
    unet__aug_coords(&g, sy1, sx1, lattice);
    const int pix[3][2] = {{0, 0}, {IH - 1, IW - 1}, {10, 12}};
    const int pt[3][2] = {{0, 0}, {G - 1, G - 1}, {1, 1}};
    for (int k = 0; k < 3; k++) {
        size_t i = (size_t)pix[k][0] * IW + pix[k][1];
        CHECK_CLOSE(sy1[i] - sy0[i], disp[pt[k][0] * G + pt[k][1]], 1e-4, 0);
        CHECK_CLOSE(sx1[i] - sx0[i], disp[G * G + pt[k][0] * G + pt[k][1]], 1e-4, 0);
    }
    /* The field is smooth: neighbours move by much less than sigma. */
    double max_step = 0.0;
    for (int y = 0; y < IH; y++)
        for (int x = 0; x + 1 < IW; x++) {
            size_t i = (size_t)y * IW + x;
            double d = fabs((sx1[i + 1] - sx0[i + 1]) - (sx1[i] - sx0[i]));
            if (d > max_step) max_step = d;
        }
    printf("       elastic field: max change between neighbours %.3g px (sigma 10)\n", max_step);
    CHECK(max_step < 4.0);

    /* Public: elastic on with sigma 0 (the elastic code runs on zeros) equals no augmentation. */
    unet_dataset *ds = coord_dataset(30, 34, true);
    unet_augment none = unet_augment_none(), zero = unet_augment_none();
    zero.elastic = 1;
    zero.elastic_sigma = 0.0f;
    unet_sampler *a = NULL, *b = NULL;
    CHECK_STATUS(unet_sampler_create(ctx, ds, 2, 20, 22, 12, 14, &none, 5, 0, &a), UNET_STATUS_OK);
    CHECK_STATUS(unet_sampler_create(ctx, ds, 2, 20, 22, 12, 14, &zero, 5, 0, &b), UNET_STATUS_OK);
    struct batch ba = batch_alloc(2, 2, 20, 22, 12, 14), bb = batch_alloc(2, 2, 20, 22, 12, 14);
    for (int k = 0; k < 3; k++) {
        CHECK_STATUS(unet_sampler_next(ctx, a, ba.x, ba.t, ba.w), UNET_STATUS_OK);
        CHECK_STATUS(unet_sampler_next(ctx, b, bb.x, bb.t, bb.w), UNET_STATUS_OK);
        CHECK(batch_equal(&ba, &bb));
    }
    batch_free(&ba);
    batch_free(&bb);
    unet_sampler_free(a);
    unet_sampler_free(b);
    unet_dataset_free(ds);
}

/* ---- crops ---- */

TEST(crops_without_augmentation) {
    /* Same-padding windows inside a 40 x 50 image: every sample is the contiguous block at some
     * (y0, x0) with 0 <= y0 <= 40 - 16 and 0 <= x0 <= 50 - 20, identical in image, target and
     * weight; over 64 samples the positions reach both ends of the range. */
    enum { H = 40, W = 50, IN_H = 16, IN_W = 20, N = 4 };
    unet_dataset *ds = coord_dataset(H, W, true);
    unet_sampler *s = NULL;
    CHECK_STATUS(unet_sampler_create(ctx, ds, N, IN_H, IN_W, IN_H, IN_W, NULL, 11, 0, &s),
                 UNET_STATUS_OK);
    struct batch b = batch_alloc(N, 2, IN_H, IN_W, IN_H, IN_W);
    int bad = 0, min_y = H, max_y = -1, min_x = W, max_x = -1;
    for (int k = 0; k < 16; k++) {
        CHECK_STATUS(unet_sampler_next(ctx, s, b.x, b.t, b.w), UNET_STATUS_OK);
        for (int j = 0; j < N; j++) {
            const float *cy = b.x + (size_t)j * 2 * IN_H * IN_W, *cx = cy + IN_H * IN_W;
            const int32_t *t = b.t + (size_t)j * IN_H * IN_W;
            const float *w = b.w + (size_t)j * IN_H * IN_W;
            int y0 = (int)cy[0], x0 = (int)cx[0];
            bad += y0 < 0 || y0 > H - IN_H || x0 < 0 || x0 > W - IN_W;
            for (int r = 0; r < IN_H; r++)
                for (int c = 0; c < IN_W; c++) {
                    int i = r * IN_W + c;
                    bad += cy[i] != (float)(y0 + r) || cx[i] != (float)(x0 + c);
                    bad += t[i] != (y0 + r) * W + x0 + c || w[i] != (float)(x0 + c);
                }
            if (y0 < min_y) min_y = y0;
            if (y0 > max_y) max_y = y0;
            if (x0 < min_x) min_x = x0;
            if (x0 > max_x) max_x = x0;
        }
    }
    CHECK_EQ(bad, 0);
    printf("       crop origins: y in [%d, %d] of [0, %d], x in [%d, %d] of [0, %d]\n", min_y,
           max_y, H - IN_H, min_x, max_x, W - IN_W);
    CHECK(min_y <= 3 && max_y >= H - IN_H - 3 && min_x <= 3 && max_x >= W - IN_W - 3);
    CHECK_EQ(unet_sampler_position(s), 16);
    batch_free(&b);
    unet_sampler_free(s);
    unet_dataset_free(ds);
}

TEST(images_chosen_evenly) {
    /* Two images of different sizes, told apart by an offset of 1000 in the image. */
    unet_dataset *ds = NULL;
    CHECK_STATUS(unet_dataset_create(ctx, 1, &ds), UNET_STATUS_OK);
    for (int i = 0; i < 2; i++) {
        int H = 20 + 10 * i, W = 30 - 5 * i;
        float *img = test_alloc((size_t)H * W);
        int32_t *t = calloc((size_t)H * W, sizeof *t);
        for (int p = 0; p < H * W; p++) img[p] = 1000.0f * i;
        CHECK_STATUS(unet_dataset_add(ctx, ds, img, t, NULL, H, W, NULL), UNET_STATUS_OK);
        free(img);
        free(t);
    }
    unet_sampler *s = NULL;
    unet_augment aug = unet_augment_default();
    CHECK_STATUS(unet_sampler_create(ctx, ds, 8, 8, 8, 8, 8, &aug, 3, 0, &s), UNET_STATUS_OK);
    struct batch b = batch_alloc(8, 1, 8, 8, 8, 8);
    int second = 0;
    for (int k = 0; k < 50; k++) {
        CHECK_STATUS(unet_sampler_next(ctx, s, b.x, b.t, NULL), UNET_STATUS_OK);
        for (int j = 0; j < 8; j++) second += b.x[(size_t)j * 64] == 1000.0f;
    }
    printf("       image 1 chosen %d of 400 times\n", second);
    CHECK(second > 160 && second < 240);   /* binomial(400, 0.5): mean 200, sd 10 */
    batch_free(&b);
    unet_sampler_free(s);
    unet_dataset_free(ds);
}

/* Checks one sample of the coordinate image whose input window should start at (iy, ix) in the
 * image, mirrored beyond it, and whose output window starts at (iy + dy, ix + dx).  Returns the
 * number of wrong pixels. */
static int check_mirrored(const float *x, const int32_t *t, const float *w, int H, int W,
                          int in_h, int in_w, int out_h, int out_w, int iy, int ix) {
    int bad = 0;
    const int dy = (in_h - out_h) / 2, dx = (in_w - out_w) / 2;
    for (int r = 0; r < in_h; r++)
        for (int c = 0; c < in_w; c++) {
            size_t i = (size_t)r * in_w + c;
            bad += x[i] != (float)unet__reflect(iy + r, H);
            bad += x[(size_t)in_h * in_w + i] != (float)unet__reflect(ix + c, W);
        }
    for (int r = 0; r < out_h; r++)
        for (int c = 0; c < out_w; c++) {
            int y = iy + dy + r, xx = ix + dx + c;
            bool inside = y >= 0 && y < H && xx >= 0 && xx < W;
            size_t i = (size_t)r * out_w + c;
            bad += t[i] != (inside ? y * W + xx : -1);
            bad += w[i] != (inside ? (float)xx : 0.0f);
        }
    return bad;
}

TEST(windows_larger_than_the_image) {
    struct batch b;
    unet_sampler *s = NULL;
    /* Whole-image training: a 12 x 16 window on a 5 x 7 image is centred (origin (-4, -5),
     * rounded towards the top left), mirrored several times over in the input, -1 outside the
     * image in the target, weight 0 there. */
    unet_dataset *ds = coord_dataset(5, 7, true);
    CHECK_STATUS(unet_sampler_create(ctx, ds, 2, 12, 16, 12, 16, NULL, 1, 0, &s), UNET_STATUS_OK);
    b = batch_alloc(2, 2, 12, 16, 12, 16);
    CHECK_STATUS(unet_sampler_next(ctx, s, b.x, b.t, b.w), UNET_STATUS_OK);
    CHECK_EQ(check_mirrored(b.x, b.t, b.w, 5, 7, 12, 16, 12, 16, -4, -5), 0);
    batch_free(&b);
    unet_sampler_free(s);

    /* Valid convolutions, output window 10 x 10 larger than the 5 x 7 image: the output window is
     * centred (origin (-3, -2)), the input window 20 x 20 around it (origin (-8, -7)). */
    CHECK_STATUS(unet_sampler_create(ctx, ds, 1, 20, 20, 10, 10, NULL, 1, 0, &s), UNET_STATUS_OK);
    b = batch_alloc(1, 2, 20, 20, 10, 10);
    CHECK_STATUS(unet_sampler_next(ctx, s, b.x, b.t, b.w), UNET_STATUS_OK);
    CHECK_EQ(check_mirrored(b.x, b.t, b.w, 5, 7, 20, 20, 10, 10, -8, -7), 0);
    batch_free(&b);
    unet_sampler_free(s);
    unet_dataset_free(ds);

    /* Valid convolutions, the output window fits (random position, every pixel labelled), the
     * context does not: mirrored context around it, as the overlap-tile strategy does. */
    ds = coord_dataset(12, 13, true);
    CHECK_STATUS(unet_sampler_create(ctx, ds, 3, 21, 22, 8, 9, NULL, 2, 0, &s), UNET_STATUS_OK);
    b = batch_alloc(3, 2, 21, 22, 8, 9);
    for (int k = 0; k < 4; k++) {
        CHECK_STATUS(unet_sampler_next(ctx, s, b.x, b.t, b.w), UNET_STATUS_OK);
        for (int j = 0; j < 3; j++) {
            const int32_t *t = b.t + (size_t)j * 8 * 9;
            int oy = t[0] / 13, ox = t[0] % 13;
            CHECK(t[0] >= 0 && oy <= 12 - 8 && ox <= 13 - 9);
            CHECK_EQ(check_mirrored(b.x + (size_t)j * 2 * 21 * 22, t, b.w + (size_t)j * 8 * 9, 12,
                                    13, 21, 22, 8, 9, oy - 6, ox - 6), 0);
        }
    }
    batch_free(&b);
    unet_sampler_free(s);
    unet_dataset_free(ds);
}

/* ---- labels and weights under deformation ---- */

TEST(labels_preserved) {
    /* A label image with the values {-1, 0, 2, 5}: after the paper's deformation no new value
     * appears (no blending, no rounding of blends). */
    enum { H = 48, W = 52 };
    float *img = test_alloc((size_t)H * W);
    int32_t *lab = calloc((size_t)H * W, sizeof *lab);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            size_t i = (size_t)y * W + x;
            int v = ((y / 7) * 3 + (x / 9)) % 4;
            lab[i] = v == 0 ? -1 : (v == 1 ? 0 : (v == 2 ? 2 : 5));
            img[i] = (float)lab[i];
        }
    unet_dataset *ds = NULL;
    CHECK_STATUS(unet_dataset_create(ctx, 1, &ds), UNET_STATUS_OK);
    CHECK_STATUS(unet_dataset_add(ctx, ds, img, lab, NULL, H, W, "labels"), UNET_STATUS_OK);
    unet_augment aug = unet_augment_paper();
    aug.elastic_sigma = 20.0f;   /* harder than the paper */
    unet_sampler *s = NULL;
    CHECK_STATUS(unet_sampler_create(ctx, ds, 4, 40, 40, 24, 24, &aug, 9, 0, &s), UNET_STATUS_OK);
    struct batch b = batch_alloc(4, 1, 40, 40, 24, 24);
    int counts[4] = {0}, bad = 0;
    for (int k = 0; k < 5; k++) {
        CHECK_STATUS(unet_sampler_next(ctx, s, b.x, b.t, NULL), UNET_STATUS_OK);
        for (size_t i = 0; i < b.nm; i++) {
            int32_t v = b.t[i];
            if (v == -1) counts[0]++;
            else if (v == 0) counts[1]++;
            else if (v == 2) counts[2]++;
            else if (v == 5) counts[3]++;
            else bad++;
        }
    }
    CHECK_EQ(bad, 0);
    CHECK(counts[1] > 0 && counts[2] > 0 && counts[3] > 0);
    batch_free(&b);
    unet_sampler_free(s);
    unet_dataset_free(ds);
    free(img);
    free(lab);

    /* Internal: nearest-neighbour sampling of the index map equals the coordinate map rounded. */
    enum { N = 30 };
    int32_t idx[N * N], out[N * N];
    float sy[N * N], sx[N * N], lattice[2 * 3 * N], disp[18];
    for (int i = 0; i < N * N; i++) idx[i] = i;
    struct unet__rng r;
    unet__rng_seed(&r, 3);
    for (int i = 0; i < 18; i++) disp[i] = (float)(10.0 * unet__rng_normal(&r));
    struct unet__aug_geom g = {0};
    g.in_h = g.in_w = g.out_h = g.out_w = N;
    g.cy = g.cx = 14.5;
    g.angle = 0.2;
    g.dihedral = UNET__AUG_FLIP_X;
    g.grid = 3;
    g.disp = disp;
    unet__aug_coords(&g, sy, sx, lattice);
    unet__aug_nearest(out, idx, N, N, sy, sx, N, N, N);
    int mism = 0, outside = 0;
    for (int i = 0; i < N * N; i++) {
        long y = round_half_up(sy[i]), x = round_half_up(sx[i]);
        bool in = y >= 0 && y < N && x >= 0 && x < N;
        outside += !in;
        mism += out[i] != (in ? (int32_t)(y * N + x) : -1);
    }
    CHECK_EQ(mism, 0);
    CHECK(outside > 0 && outside < N * N / 2);
}

TEST(target_follows_image) {
    /* The coordinate image under the paper's geometry: where the 4 x 4 bicubic neighbourhood is
     * inside the image, the image holds the source coordinate (to float rounding), the target
     * must be that coordinate rounded, and the bilinear weight the column. */
    enum { H = 64, W = 60, IN = 44, OUT = 28, N = 3 };
    unet_dataset *ds = coord_dataset(H, W, true);
    unet_augment aug = paper_geometry();
    unet_sampler *s = NULL;
    CHECK_STATUS(unet_sampler_create(ctx, ds, N, IN, IN, OUT, OUT, &aug, 21, 0, &s),
                 UNET_STATUS_OK);
    struct batch b = batch_alloc(N, 2, IN, IN, OUT, OUT);
    long checked = 0, total = 0, bad_t = 0, bad_w = 0, bad_outside = 0;
    double max_w_err = 0.0;
    const int dd = (IN - OUT) / 2;
    for (int k = 0; k < 4; k++) {
        CHECK_STATUS(unet_sampler_next(ctx, s, b.x, b.t, b.w), UNET_STATUS_OK);
        for (int j = 0; j < N; j++) {
            const float *cy = b.x + (size_t)j * 2 * IN * IN, *cx = cy + IN * IN;
            const int32_t *t = b.t + (size_t)j * OUT * OUT;
            const float *w = b.w + (size_t)j * OUT * OUT;
            for (int r = 0; r < OUT; r++)
                for (int c = 0; c < OUT; c++) {
                    size_t o = (size_t)r * OUT + c, i = (size_t)(r + dd) * IN + (c + dd);
                    total++;
                    if (t[o] == -1) {
                        bad_outside += w[o] != 0.0f;
                        continue;
                    }
                    float y = cy[i], x = cx[i];
                    if (y < 2 || y > H - 3 || x < 2 || x > W - 3) continue;
                    if (fabsf(y - floorf(y) - 0.5f) < 1e-3f || fabsf(x - floorf(x) - 0.5f) < 1e-3f)
                        continue;   /* too close to a tie to call */
                    checked++;
                    bad_t += t[o] != round_half_up(y) * W + round_half_up(x);
                    double e = fabs(w[o] - x);
                    if (e > max_w_err) max_w_err = e;
                    bad_w += e > 1e-3;
                }
        }
    }
    printf("       %ld of %ld target pixels checked; weight vs image max err %.3g\n", checked,
           total, max_w_err);
    CHECK(checked > total / 2);
    CHECK_EQ(bad_t, 0);
    CHECK_EQ(bad_w, 0);
    CHECK_EQ(bad_outside, 0);
    batch_free(&b);
    unet_sampler_free(s);
    unet_dataset_free(ds);
}

TEST(mask_and_image_agree) {
    /* image = 255 * mask (discs).  After the paper's deformation, the bicubic image is bright
     * where the nearest-neighbour mask is 1 and dark where it is 0, except along edges. */
    enum { H = 64, W = 64 };
    float *img = test_alloc((size_t)H * W);
    int32_t *lab = calloc((size_t)H * W, sizeof *lab);
    const int cy[4] = {15, 20, 45, 48}, cx[4] = {16, 47, 18, 45}, rad[4] = {9, 7, 11, 8};
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            for (int d = 0; d < 4; d++)
                if ((y - cy[d]) * (y - cy[d]) + (x - cx[d]) * (x - cx[d]) <= rad[d] * rad[d]) {
                    lab[y * W + x] = 1;
                    img[y * W + x] = 255.0f;
                }
    unet_dataset *ds = NULL;
    CHECK_STATUS(unet_dataset_create(ctx, 1, &ds), UNET_STATUS_OK);
    CHECK_STATUS(unet_dataset_add(ctx, ds, img, lab, NULL, H, W, "discs"), UNET_STATUS_OK);
    unet_augment aug = paper_geometry();
    unet_sampler *s = NULL;
    CHECK_STATUS(unet_sampler_create(ctx, ds, 4, 48, 48, 48, 48, &aug, 4, 0, &s), UNET_STATUS_OK);
    struct batch b = batch_alloc(4, 1, 48, 48, 48, 48);
    long fg = 0, fg_bright = 0, bg = 0, bg_dark = 0;
    for (int k = 0; k < 4; k++) {
        CHECK_STATUS(unet_sampler_next(ctx, s, b.x, b.t, NULL), UNET_STATUS_OK);
        for (size_t i = 0; i < b.nm; i++) {
            if (b.t[i] == 1) {
                fg++;
                fg_bright += b.x[i] > 127.5f;
            } else if (b.t[i] == 0) {
                bg++;
                bg_dark += b.x[i] < 127.5f;
            }
        }
    }
    printf("       mask 1: %.4f bright; mask 0: %.4f dark\n", (double)fg_bright / fg,
           (double)bg_dark / bg);
    CHECK(fg > 1000 && bg > 1000);
    CHECK(fg_bright >= 0.98 * fg);
    CHECK(bg_dark >= 0.98 * bg);
    batch_free(&b);
    unet_sampler_free(s);
    unet_dataset_free(ds);
    free(img);
    free(lab);
}

TEST(weights_follow_geometry) {
    /* Flips and quarter turns move pixels exactly: with weight = target, they stay equal. */
    enum { H = 23, W = 31 };
    float *img = test_alloc((size_t)H * W), *wt = test_alloc((size_t)H * W);
    int32_t *lab = calloc((size_t)H * W, sizeof *lab);
    struct unet__rng r;
    unet__rng_seed(&r, 5);
    for (int i = 0; i < H * W; i++) {
        lab[i] = (int32_t)unet__rng_below(&r, 10);
        wt[i] = (float)lab[i];
        img[i] = unet__rng_uniform(&r);
    }
    unet_dataset *ds = NULL;
    CHECK_STATUS(unet_dataset_create(ctx, 1, &ds), UNET_STATUS_OK);
    CHECK_STATUS(unet_dataset_add(ctx, ds, img, lab, wt, H, W, "w"), UNET_STATUS_OK);
    unet_augment aug = unet_augment_default();
    unet_sampler *s = NULL;
    CHECK_STATUS(unet_sampler_create(ctx, ds, 4, 24, 16, 20, 12, &aug, 8, 0, &s), UNET_STATUS_OK);
    struct batch b = batch_alloc(4, 1, 24, 16, 20, 12);
    int bad = 0, unlabeled = 0;
    for (int k = 0; k < 4; k++) {
        CHECK_STATUS(unet_sampler_next(ctx, s, b.x, b.t, b.w), UNET_STATUS_OK);
        for (size_t i = 0; i < b.nm; i++) {
            unlabeled += b.t[i] == -1;
            bad += b.w[i] != (b.t[i] == -1 ? 0.0f : (float)b.t[i]);
        }
    }
    CHECK_EQ(bad, 0);
    CHECK_EQ(unlabeled, 0);   /* the output window always fits, flips keep it inside */
    batch_free(&b);
    unet_sampler_free(s);
    unet_dataset_free(ds);
    free(img);
    free(wt);
    free(lab);
    /* Continuous transforms: target_follows_image checks the bilinear weight against the image. */
}

/* ---- gray values ---- */

TEST(gray_values) {
    /* Same seed, same geometry (the draws happen in a fixed order whatever the recipe), so each
     * augmented sample can be compared with the plain one: contrast alone is an increasing affine
     * map that keeps the mean; brightness alone adds one constant in [-b, b]; gamma alone is an
     * increasing map that keeps the sample's minimum and maximum. */
    enum { H = 40, W = 40, IN = 24, N = 4, NP = IN * IN };
    float *img = test_alloc((size_t)H * W);
    int32_t *lab = calloc((size_t)H * W, sizeof *lab);
    struct unet__rng r;
    unet__rng_seed(&r, 6);
    fill_uniform(&r, img, (size_t)H * W, -0.2f, 1.3f);
    unet_dataset *ds = NULL;
    CHECK_STATUS(unet_dataset_create(ctx, 1, &ds), UNET_STATUS_OK);
    CHECK_STATUS(unet_dataset_add(ctx, ds, img, lab, NULL, H, W, NULL), UNET_STATUS_OK);
    unet_augment aug[4];
    aug[0] = aug[1] = aug[2] = aug[3] = unet_augment_default();
    aug[1].contrast = 0.2f;
    aug[2].brightness = 0.1f;
    aug[3].gamma = 0.3f;
    struct batch b[4];
    for (int i = 0; i < 4; i++) {
        unet_sampler *s = NULL;
        b[i] = batch_alloc(N, 1, IN, IN, IN, IN);
        CHECK_STATUS(unet_sampler_create(ctx, ds, N, IN, IN, IN, IN, &aug[i], 2, 0, &s),
                     UNET_STATUS_OK);
        CHECK_STATUS(unet_sampler_next(ctx, s, b[i].x, b[i].t, NULL), UNET_STATUS_OK);
        CHECK(!memcmp(b[0].t, b[i].t, b[0].nm * sizeof *b[0].t));
        unet_sampler_free(s);
    }
    int changed[4] = {0}, bad[4] = {0};
    for (int j = 0; j < N; j++) {
        const float *p = b[0].x + (size_t)j * NP, *q = b[1].x + (size_t)j * NP;
        const float *u = b[2].x + (size_t)j * NP, *g = b[3].x + (size_t)j * NP;
        int lo = 0, hi = 0;
        double mean_p = 0.0, mean_q = 0.0;
        for (int i = 0; i < NP; i++) {
            if (p[i] < p[lo]) lo = i;
            if (p[i] > p[hi]) hi = i;
            mean_p += p[i];
            mean_q += q[i];
        }
        mean_p /= NP;
        mean_q /= NP;
        /* Contrast. */
        double a = (q[hi] - q[lo]) / (double)(p[hi] - p[lo]), c = q[lo] - a * p[lo];
        CHECK(a >= 0.8 - 1e-6 && a <= 1.2 + 1e-6);
        CHECK_CLOSE(mean_q, mean_p, 1e-5, 0);
        changed[1] += fabs(a - 1) > 1e-3;
        for (int i = 0; i < NP; i++) bad[1] += fabs(q[i] - (a * p[i] + c)) > 1e-5;
        /* Brightness. */
        double d = u[0] - p[0];
        CHECK(fabs(d) <= 0.1 + 1e-6);
        changed[2] += fabs(d) > 1e-3;
        for (int i = 0; i < NP; i++) bad[2] += fabs(u[i] - p[i] - d) > 1e-5;
        /* Gamma. */
        CHECK_CLOSE(g[lo], p[lo], 1e-6, 0);
        CHECK_CLOSE(g[hi], p[hi], 1e-6, 1e-6);
        for (int i = 0; i < NP; i++) {
            changed[3] += fabsf(g[i] - p[i]) > 1e-3f;
            for (int k = 0; k < NP; k += 37) bad[3] += p[i] < p[k] && g[i] > g[k];
        }
    }
    CHECK_EQ(bad[1], 0);
    CHECK_EQ(bad[2], 0);
    CHECK_EQ(bad[3], 0);
    CHECK(changed[1] >= N - 1 && changed[2] >= N - 1);
    CHECK(changed[3] > N * NP / 4);
    for (int i = 0; i < 4; i++) batch_free(&b[i]);
    unet_dataset_free(ds);
    free(img);
    free(lab);

    /* Identity settings leave the values untouched, bit for bit. */
    float v[5] = {-3.0f, 0.1f, 0.7f, 1.0f, 250.0f}, u[5];
    memcpy(u, v, sizeof v);
    unet__aug_gray(u, 1, 5, 0.0f, 1.0f, 1.0f);
    CHECK(!memcmp(u, v, sizeof v));
    /* A flat channel stays flat under gamma. */
    float f[3] = {0.5f, 0.5f, 0.5f};
    unet__aug_gray(f, 1, 3, 0.0f, 1.0f, 0.7f);
    CHECK(f[0] == 0.5f && f[1] == 0.5f && f[2] == 0.5f);
}

/* ---- determinism, workers, seek ---- */

/* Three images of different sizes with weights. */
static unet_dataset *random_dataset(int C) {
    unet_dataset *ds = NULL;
    CHECK_STATUS(unet_dataset_create(ctx, C, &ds), UNET_STATUS_OK);
    struct unet__rng r;
    unet__rng_seed(&r, 99);
    const int hs[3] = {40, 33, 52}, ws[3] = {37, 48, 29};
    for (int i = 0; i < 3; i++) {
        size_t n = (size_t)hs[i] * ws[i];
        float *img = test_alloc((size_t)C * n), *wt = test_alloc(n);
        int32_t *t = calloc(n, sizeof *t);
        fill_uniform(&r, img, (size_t)C * n, 0.0f, 1.0f);
        fill_uniform(&r, wt, n, 0.5f, 5.0f);
        for (size_t p = 0; p < n; p++) t[p] = (int32_t)unet__rng_below(&r, 4) - 1;
        CHECK_STATUS(unet_dataset_add(ctx, ds, img, t, wt, hs[i], ws[i], NULL), UNET_STATUS_OK);
        free(img);
        free(wt);
        free(t);
    }
    return ds;
}

enum { DB = 3, DC = 2, DIN = 36, DOUT = 20, DK = 6 };

/* Batches 0..DK-1 of a paper-recipe sampler with `workers`, seed `seed`. */
static void draw_batches(const unet_dataset *ds, int workers, uint64_t seed, struct batch *out) {
    unet_augment aug = unet_augment_paper();
    unet_sampler *s = NULL;
    CHECK_STATUS(unet_sampler_create(ctx, ds, DB, DIN, DIN, DOUT, DOUT, &aug, seed, workers, &s),
                 UNET_STATUS_OK);
    for (int k = 0; k < DK; k++) {
        out[k] = batch_alloc(DB, DC, DIN, DIN, DOUT, DOUT);
        CHECK_STATUS(unet_sampler_next(ctx, s, out[k].x, out[k].t, out[k].w), UNET_STATUS_OK);
    }
    unet_sampler_free(s);
}

TEST(determinism) {
    unet_dataset *ds = random_dataset(DC);
    struct batch ref[DK], got[DK];
    draw_batches(ds, 0, 42, ref);
    for (int workers = 1; workers <= 3; workers += 2) {
        draw_batches(ds, workers, 42, got);
        int diff = 0;
        for (int k = 0; k < DK; k++) {
            diff += !batch_equal(&ref[k], &got[k]);
            batch_free(&got[k]);
        }
        CHECK_EQ(diff, 0);
    }
    /* Another seed: other batches; consecutive batches differ. */
    draw_batches(ds, 2, 43, got);
    for (int k = 0; k < DK; k++) {
        CHECK(memcmp(ref[k].x, got[k].x, ref[k].nx * sizeof(float)) != 0);
        if (k) CHECK(memcmp(ref[k].x, ref[k - 1].x, ref[k].nx * sizeof(float)) != 0);
        batch_free(&got[k]);
    }
    for (int k = 0; k < DK; k++) batch_free(&ref[k]);
    unet_dataset_free(ds);
}

TEST(seek_reproduces_batches) {
    unet_dataset *ds = random_dataset(DC);
    struct batch ref[DK];
    draw_batches(ds, 0, 7, ref);
    unet_augment aug = unet_augment_paper();
    struct batch b = batch_alloc(DB, DC, DIN, DIN, DOUT, DOUT);
    for (int workers = 0; workers <= 2; workers += 2) {
        unet_sampler *s = NULL;
        CHECK_STATUS(unet_sampler_create(ctx, ds, DB, DIN, DIN, DOUT, DOUT, &aug, 7, workers, &s),
                     UNET_STATUS_OK);
        /* Seek right away, while workers are making batches 0, 1, ... */
        CHECK_STATUS(unet_sampler_seek(ctx, s, 4), UNET_STATUS_OK);
        CHECK_EQ(unet_sampler_position(s), 4);
        CHECK_STATUS(unet_sampler_next(ctx, s, b.x, b.t, b.w), UNET_STATUS_OK);
        CHECK(batch_equal(&b, &ref[4]));
        CHECK_EQ(unet_sampler_position(s), 5);
        CHECK_STATUS(unet_sampler_seek(ctx, s, 1), UNET_STATUS_OK);
        for (int k = 1; k < DK; k++) {
            CHECK_STATUS(unet_sampler_next(ctx, s, b.x, b.t, b.w), UNET_STATUS_OK);
            CHECK(batch_equal(&b, &ref[k]));
        }
        /* Seek to where it already is, and back to the start. */
        CHECK_STATUS(unet_sampler_seek(ctx, s, DK), UNET_STATUS_OK);
        CHECK_STATUS(unet_sampler_seek(ctx, s, 0), UNET_STATUS_OK);
        CHECK_STATUS(unet_sampler_next(ctx, s, b.x, b.t, b.w), UNET_STATUS_OK);
        CHECK(batch_equal(&b, &ref[0]));
        CHECK_STATUS(unet_sampler_seek(ctx, s, -1), UNET_STATUS_ARG);
        CHECK_EQ(unet_sampler_position(s), 1);
        /* Random seeks, some while the workers are busy (a stress test for the ring under
         * ThreadSanitizer). */
        struct unet__rng r;
        unet__rng_seed(&r, 12);
        int wrong = 0;
        for (int i = 0; i < 40; i++) {
            long k = (long)unet__rng_below(&r, DK);
            CHECK_STATUS(unet_sampler_seek(ctx, s, k), UNET_STATUS_OK);
            int m = (int)unet__rng_below(&r, 3);
            for (int n = 0; n < m && k + n < DK; n++) {
                CHECK_STATUS(unet_sampler_next(ctx, s, b.x, b.t, b.w), UNET_STATUS_OK);
                wrong += !batch_equal(&b, &ref[k + n]);
            }
        }
        CHECK_EQ(wrong, 0);
        unet_sampler_free(s);
    }
    batch_free(&b);
    for (int k = 0; k < DK; k++) batch_free(&ref[k]);
    unet_dataset_free(ds);
}

TEST(workers_times_and_shutdown) {
    unet_dataset *ds = random_dataset(1);
    unet_augment aug = unet_augment_paper();
    unet_sampler *s = NULL;
    struct batch b = batch_alloc(2, 1, 32, 32, 32, 32);
    /* Caller slower than the workers: after the first batch it should hardly wait. */
    CHECK_STATUS(unet_sampler_create(ctx, ds, 2, 32, 32, 32, 32, &aug, 1, 2, &s), UNET_STATUS_OK);
    for (int k = 0; k < 6; k++) {
        CHECK_STATUS(unet_sampler_next(ctx, s, b.x, b.t, NULL), UNET_STATUS_OK);
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    double work = -1, wait = -1;
    unet_sampler_times(s, &work, &wait);
    printf("       2 workers: %.3f ms of work, caller waited %.3f ms for 6 batches\n", 1e3 * work,
           1e3 * wait);
    CHECK(work > 0.0 && wait >= 0.0);
    unet_sampler_times(s, NULL, NULL);
    unet_sampler_free(s);
    /* Free while workers are busy or blocked on a full ring. */
    for (int workers = 1; workers <= 4; workers++) {
        CHECK_STATUS(unet_sampler_create(ctx, ds, 2, 32, 32, 32, 32, &aug, 1, workers, &s),
                     UNET_STATUS_OK);
        if (workers % 2) CHECK_STATUS(unet_sampler_next(ctx, s, b.x, b.t, NULL), UNET_STATUS_OK);
        unet_sampler_free(s);
    }
    /* Synchronous: work and wait are the same time. */
    CHECK_STATUS(unet_sampler_create(ctx, ds, 2, 32, 32, 32, 32, &aug, 1, 0, &s), UNET_STATUS_OK);
    CHECK_STATUS(unet_sampler_next(ctx, s, b.x, b.t, NULL), UNET_STATUS_OK);
    unet_sampler_times(s, &work, &wait);
    CHECK(work > 0.0 && work == wait);
    unet_sampler_free(s);
    unet_sampler_free(NULL);
    batch_free(&b);
    unet_dataset_free(ds);
}

/* ---- the dataset and argument errors ---- */

TEST(dataset_copies) {
    float img[2 * 6] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    int32_t t[6] = {0, 1, -1, 1, 0, 1};
    float w[6] = {1, 1, 2, 2, 3, 3};
    unet_dataset *ds = NULL;
    CHECK_STATUS(unet_dataset_create(ctx, 2, &ds), UNET_STATUS_OK);
    CHECK_EQ(unet_dataset_count(ds), 0);
    CHECK_STATUS(unet_dataset_add(ctx, ds, img, t, w, 2, 3, "a.tif"), UNET_STATUS_OK);
    CHECK_STATUS(unet_dataset_add(ctx, ds, img, t, w, 3, 2, NULL), UNET_STATUS_OK);
    img[0] = 100.0f;
    t[0] = 7;
    w[0] = 9.0f;
    CHECK_EQ(unet_dataset_count(ds), 2);
    const float *gi = NULL, *gw = NULL;
    const int32_t *gt = NULL;
    const char *name = NULL;
    int h = 0, ww = 0;
    CHECK_STATUS(unet_dataset_get(ds, 0, &gi, &gt, &gw, &h, &ww, &name), UNET_STATUS_OK);
    CHECK(gi && gt && gw && gi != img);
    CHECK_EQ(h, 2);
    CHECK_EQ(ww, 3);
    CHECK(gi[0] == 1.0f && gi[11] == 12.0f && gt[0] == 0 && gt[2] == -1 && gw[0] == 1.0f);
    CHECK_STR_CONTAINS(name, "a.tif");
    CHECK_STATUS(unet_dataset_get(ds, 1, NULL, NULL, NULL, &h, &ww, &name), UNET_STATUS_OK);
    CHECK_EQ(h, 3);
    CHECK_EQ(ww, 2);
    CHECK_STR_CONTAINS(name, "image 1");
    CHECK_STATUS(unet_dataset_get(ds, 2, &gi, NULL, NULL, NULL, NULL, NULL), UNET_STATUS_ARG);
    CHECK_STATUS(unet_dataset_get(ds, -1, &gi, NULL, NULL, NULL, NULL, NULL), UNET_STATUS_ARG);
    CHECK_STATUS(unet_dataset_get(NULL, 0, &gi, NULL, NULL, NULL, NULL, NULL), UNET_STATUS_ARG);
    CHECK_EQ(unet_dataset_count(NULL), 0);
    unet_dataset_free(ds);
    unet_dataset_free(NULL);

    /* Many images: the table grows, earlier pixels stay where they were. */
    CHECK_STATUS(unet_dataset_create(ctx, 1, &ds), UNET_STATUS_OK);
    t[0] = 0;
    CHECK_STATUS(unet_dataset_add(ctx, ds, img, t, NULL, 2, 3, NULL), UNET_STATUS_OK);
    CHECK_STATUS(unet_dataset_get(ds, 0, &gi, NULL, NULL, NULL, NULL, NULL), UNET_STATUS_OK);
    for (int i = 0; i < 40; i++)
        CHECK_STATUS(unet_dataset_add(ctx, ds, img, t, NULL, 2, 3, NULL), UNET_STATUS_OK);
    const float *gi2 = NULL;
    CHECK_STATUS(unet_dataset_get(ds, 0, &gi2, NULL, NULL, NULL, NULL, NULL), UNET_STATUS_OK);
    CHECK(gi == gi2);
    CHECK_EQ(unet_dataset_count(ds), 41);
    unet_dataset_free(ds);
}

TEST(bad_arguments) {
    float img[4] = {0, 1, 2, 3};
    int32_t t[4] = {0, 1, 0, 1};
    float w[4] = {1, 1, 1, 1};
    unet_dataset *ds = NULL;
    CHECK_STATUS(unet_dataset_create(ctx, 0, &ds), UNET_STATUS_ARG);
    CHECK(ds == NULL);
    CHECK_STATUS(unet_dataset_create(ctx, 1, NULL), UNET_STATUS_ARG);
    CHECK_STATUS(unet_dataset_create(ctx, 1, &ds), UNET_STATUS_OK);
    CHECK_STATUS(unet_dataset_add(ctx, ds, NULL, t, NULL, 2, 2, "x"), UNET_STATUS_ARG);
    CHECK_STATUS(unet_dataset_add(ctx, ds, img, NULL, NULL, 2, 2, "x"), UNET_STATUS_ARG);
    CHECK_STATUS(unet_dataset_add(ctx, ds, img, t, NULL, 0, 2, "x"), UNET_STATUS_ARG);
    CHECK_STATUS(unet_dataset_add(ctx, ds, img, t, NULL, 2, INT32_MAX, "huge"), UNET_STATUS_ARG);
    /* An empty set has nothing to sample. */
    unet_sampler *s = NULL;
    CHECK_STATUS(unet_sampler_create(ctx, ds, 1, 2, 2, 2, 2, NULL, 0, 0, &s), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "no images");
    /* Bad values name the image and the pixel. */
    t[3] = -2;
    CHECK_STATUS(unet_dataset_add(ctx, ds, img, t, NULL, 2, 2, "bad.png"), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "bad.png");
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "y 1, x 1");
    t[3] = 1;
    img[1] = NAN;
    CHECK_STATUS(unet_dataset_add(ctx, ds, img, t, NULL, 2, 2, "nan.tif"), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "nan.tif");
    img[1] = 1;
    w[2] = -1.0f;
    CHECK_STATUS(unet_dataset_add(ctx, ds, img, t, w, 2, 2, "neg"), UNET_STATUS_ARG);
    w[2] = 1.0f;
    CHECK_EQ(unet_dataset_count(ds), 0);
    /* Weights for all images or none. */
    CHECK_STATUS(unet_dataset_add(ctx, ds, img, t, w, 2, 2, "first"), UNET_STATUS_OK);
    CHECK_STATUS(unet_dataset_add(ctx, ds, img, t, NULL, 2, 2, "second.png"), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "second.png");
    CHECK_EQ(unet_dataset_count(ds), 1);

    /* Sampler arguments. */
    float x[16];
    int32_t tt[16];
    CHECK_STATUS(unet_sampler_create(ctx, NULL, 1, 2, 2, 2, 2, NULL, 0, 0, &s), UNET_STATUS_ARG);
    CHECK_STATUS(unet_sampler_create(ctx, ds, 0, 2, 2, 2, 2, NULL, 0, 0, &s), UNET_STATUS_ARG);
    CHECK_STATUS(unet_sampler_create(ctx, ds, 1, 0, 2, 0, 2, NULL, 0, 0, &s), UNET_STATUS_ARG);
    CHECK_STATUS(unet_sampler_create(ctx, ds, 1, 2, 2, 3, 2, NULL, 0, 0, &s), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "output window");
    CHECK_STATUS(unet_sampler_create(ctx, ds, 1, 2, 2, 2, 2, NULL, 0, -1, &s), UNET_STATUS_ARG);
    CHECK_STATUS(unet_sampler_create(ctx, ds, 1, 2, 2, 2, 2, NULL, 0, 1000, &s), UNET_STATUS_ARG);
    CHECK_STATUS(unet_sampler_create(ctx, ds, 1, 1 << 20, 2, 2, 2, NULL, 0, 0, &s),
                 UNET_STATUS_ARG);
    CHECK_STATUS(unet_sampler_create(ctx, ds, 1, 2, 2, 2, 2, NULL, 0, 0, NULL), UNET_STATUS_ARG);
    unet_augment a = unet_augment_paper();
    a.elastic_grid = 1;
    CHECK_STATUS(unet_sampler_create(ctx, ds, 1, 2, 2, 2, 2, &a, 0, 0, &s), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "elastic_grid");
    a = unet_augment_paper();
    a.elastic_sigma = -1.0f;
    CHECK_STATUS(unet_sampler_create(ctx, ds, 1, 2, 2, 2, 2, &a, 0, 0, &s), UNET_STATUS_ARG);
    a = unet_augment_paper();
    a.rotate = NAN;
    CHECK_STATUS(unet_sampler_create(ctx, ds, 1, 2, 2, 2, 2, &a, 0, 0, &s), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "rotate");
    a = unet_augment_paper();
    a.contrast = 1.0f;
    CHECK_STATUS(unet_sampler_create(ctx, ds, 1, 2, 2, 2, 2, &a, 0, 0, &s), UNET_STATUS_ARG);
    a = unet_augment_paper();
    a.gamma = -0.1f;
    CHECK_STATUS(unet_sampler_create(ctx, ds, 1, 2, 2, 2, 2, &a, 0, 0, &s), UNET_STATUS_ARG);
    a = unet_augment_paper();
    a.flips = 2;
    CHECK_STATUS(unet_sampler_create(ctx, ds, 1, 2, 2, 2, 2, &a, 0, 0, &s), UNET_STATUS_ARG);
    a = unet_augment_paper();
    a.elastic = 0;
    a.elastic_grid = 0;   /* ignored while elastic is off */
    CHECK_STATUS(unet_sampler_create(ctx, ds, 1, 2, 2, 2, 2, &a, 0, 0, &s), UNET_STATUS_OK);
    CHECK_STATUS(unet_sampler_next(ctx, s, NULL, tt, NULL), UNET_STATUS_ARG);
    CHECK_STATUS(unet_sampler_next(ctx, s, x, NULL, NULL), UNET_STATUS_ARG);
    CHECK_STATUS(unet_sampler_next(ctx, NULL, x, tt, NULL), UNET_STATUS_ARG);
    /* A set with weights, weight buffer NULL: the weights are skipped. */
    CHECK_STATUS(unet_sampler_next(ctx, s, x, tt, NULL), UNET_STATUS_OK);
    CHECK_STATUS(unet_sampler_seek(ctx, NULL, 0), UNET_STATUS_ARG);
    CHECK_EQ(unet_sampler_position(NULL), 0);
    unet_sampler_free(s);
    unet_dataset_free(ds);
}

int main(void) {
    ctx = unet_ctx_create();
    RUN(augment_presets);
    RUN(dihedral_group);
    RUN(elastic_zero_is_identity);
    RUN(crops_without_augmentation);
    RUN(images_chosen_evenly);
    RUN(windows_larger_than_the_image);
    RUN(labels_preserved);
    RUN(target_follows_image);
    RUN(mask_and_image_agree);
    RUN(weights_follow_geometry);
    RUN(gray_values);
    RUN(determinism);
    RUN(seek_reproduces_batches);
    RUN(workers_times_and_shutdown);
    RUN(dataset_copies);
    RUN(bad_arguments);
    unet_ctx_free(ctx);
    return harness_finish();
}
