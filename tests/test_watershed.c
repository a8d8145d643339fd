/* test_watershed.c — the seeded watershed (unet_watershed) and instances from a class map
 * (unet_segment_instances).
 *
 * unet_watershed on hand-made floods (elevation order, a plateau shared breadth-first, the mask,
 * unreachable pixels) and against unet__watershed_ref, the same flood with a linear scan for the
 * queue's minimum, on random inputs full of ties, odd sizes; unet_segment_instances on drawn
 * cells: two touching discs split at the network's least sure pixels, with and without
 * probabilities, where connected components keep one object; a single cell stays one; an eroded
 * away small cell is kept; fragments under min_size removed; raster-order numbering; errors.
 */
#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wunused-function"
#endif
#include "harness.h"

static void watershed_ok(const float *elev, const int32_t *markers, const unsigned char *mask,
                         int h, int w, int32_t *labels) {
    unet_ctx   *ctx = unet_ctx_create();
    unet_status s = unet_watershed(ctx, elev, markers, mask, h, w, labels);
    if (s != UNET_STATUS_OK)
        HARNESS_FAIL_AT(__FILE__, __LINE__, "unet_watershed: %s", unet_ctx_errmsg(ctx));
    unet_ctx_free(ctx);
}

static int instances_ok(const int32_t *cls, const float *prob, int h, int w,
                        const unet_instance_opts *o, int32_t *labels) {
    unet_ctx   *ctx = unet_ctx_create();
    int         count = -1;
    unet_status s = unet_segment_instances(ctx, cls, prob, h, w, o, labels, &count);
    if (s != UNET_STATUS_OK)
        HARNESS_FAIL_AT(__FILE__, __LINE__, "unet_segment_instances: %s", unet_ctx_errmsg(ctx));
    unet_ctx_free(ctx);
    return count;
}

TEST(flood_hand_row) {
    /* One row, seeds 1 at x0 and 2 at x7; elevation 0 9 1 1 1 1 9 0.
     * Queue: x0 (e0, order 0), x7 (e0, order 1).  Pop x0: x1 -> 1 (e9, order 2).  Pop x7:
     * x6 -> 2 (e9, 3).  Pop x1 (e9, order 2, before x6): x2 -> 1 (e1, 4).  Pop x2: x3 -> 1
     * (e1, 5).  Pop x3: x4 -> 1.  Pop x4: x5 -> 1.  x5: its neighbour x6 is labelled.  Then x6.
     * So the low basin x2..x5 goes whole to seed 1, which crossed its pass (x1) first: equal
     * passes (9) are taken in queue order. */
    const float   e[8] = {0, 9, 1, 1, 1, 1, 9, 0};
    const int32_t m[8] = {1, 0, 0, 0, 0, 0, 0, 2};
    int32_t       lab[8];
    watershed_ok(e, m, NULL, 1, 8, lab);
    const int32_t want[8] = {1, 1, 1, 1, 1, 1, 2, 2};
    CHECK(memcmp(lab, want, sizeof want) == 0);
    /* A lower pass for seed 2 (x6: 8): it enters the basin first and takes it all. */
    const float e2[8] = {0, 9, 1, 1, 1, 1, 8, 0};
    watershed_ok(e2, m, NULL, 1, 8, lab);
    const int32_t want2[8] = {1, 1, 2, 2, 2, 2, 2, 2};
    CHECK(memcmp(lab, want2, sizeof want2) == 0);
    /* A plateau (no elevation): split by distance, the middle tie to the seed queued first
     * (x0: 1 2 3 4 | x8 .. : the 9 pixels 0..8 with seeds at 0 and 8 give 1 1 1 1 1 2 2 2 2:
     * x4 is 4 steps from both and seed 1's x3 entered the queue before seed 2's x5). */
    const int32_t m9[9] = {1, 0, 0, 0, 0, 0, 0, 0, 2};
    int32_t       lab9[9];
    watershed_ok(NULL, m9, NULL, 1, 9, lab9);
    const int32_t want9[9] = {1, 1, 1, 1, 1, 2, 2, 2, 2};
    CHECK(memcmp(lab9, want9, sizeof want9) == 0);
}

TEST(flood_hand_mask) {
    /* 3 x 4, mask 0 at (1,1) and (1,2) (y, x): a wall.  Seed 5 at (0,0), nothing else.
     *   5 . . .      mask 1 1 1 1      flood   5 5 5 5
     *   . . . .           1 0 0 1              5 0 0 5
     *   . . . .           1 1 1 1              5 5 5 5
     * Everything in the mask is reached around the wall; the wall stays 0.  Labels keep the
     * marker's value (5); a marker outside the mask (7 at (1,2)) is dropped. */
    const unsigned char mask[12] = {1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1};
    int32_t             m[12] = {5, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0};
    int32_t             lab[12];
    watershed_ok(NULL, m, mask, 3, 4, lab);
    const int32_t want[12] = {5, 5, 5, 5, 5, 0, 0, 5, 5, 5, 5, 5};
    CHECK(memcmp(lab, want, sizeof want) == 0);
    /* In place, and no marker at all: nothing changes. */
    watershed_ok(NULL, m, mask, 3, 4, m);
    CHECK(memcmp(m, want, sizeof want) == 0);
    int32_t zero[12] = {0};
    watershed_ok(NULL, zero, NULL, 3, 4, lab);
    for (int i = 0; i < 12; i++) CHECK_EQ(lab[i], 0);
}

TEST(flood_vs_ref) {
    /* Random sizes (odd ones included), elevations with many ties (4 levels, or none), 0-3
     * percent markers with a few ids, random masks: the heap gives the scan's labels. */
    struct unet__rng rng;
    unet__rng_seed(&rng, 31337);
    int cases = 0;
    for (int rep = 0; rep < 120; rep++) {
        const int    h = 1 + (int)unet__rng_below(&rng, 23), w = 1 + (int)unet__rng_below(&rng, 29);
        const size_t n = (size_t)h * w;
        float         *e = malloc(n * sizeof *e);
        int32_t       *m = malloc(n * sizeof *m), *got = malloc(n * sizeof *got),
                *ref = malloc(n * sizeof *ref);
        unsigned char *mask = malloc(n);
        const int      levels = rep % 3 == 0 ? 1 : 4;
        for (size_t i = 0; i < n; i++) {
            e[i] = (float)unet__rng_below(&rng, (uint64_t)levels) - (rep % 5 == 0 ? 1.5f : 0.f);
            m[i] = unet__rng_uniform(&rng) < 0.03f ? 1 + (int32_t)unet__rng_below(&rng, 4) : 0;
            mask[i] = unet__rng_uniform(&rng) < 0.85f;
        }
        const bool use_mask = rep % 2, use_e = rep % 7 != 0;
        watershed_ok(use_e ? e : NULL, m, use_mask ? mask : NULL, h, w, got);
        CHECK_STATUS(unet__watershed_ref(NULL, use_e ? e : NULL, m, use_mask ? mask : NULL, h, w,
                                         ref),
                     UNET_STATUS_OK);
        CHECK(memcmp(got, ref, n * sizeof *got) == 0);
        cases++;
        free(e), free(m), free(got), free(ref), free(mask);
    }
    printf("       %d random floods equal to the linear-scan reference\n", cases);
}

/* ---- drawn cells ---- */

enum { H = 40, W = 52 };

/* Disc of radius r at (cy, cx): (y - cy)^2 + (x - cx)^2 <= r^2. */
static bool in_disc(int y, int x, double cy, double cx, double r) {
    return (y - cy) * (y - cy) + (x - cx) * (x - cx) <= r * r;
}

/* Two discs of radius 10 at (20, 15) and (20, 35): they touch on the column x = 25 (two
 * pixels of it, (19..21, 25) minus the rim: a bridge of 3 pixels) -> class 1.  prob: 1 in the
 * discs except 0.6 on the contact column, 0 outside. */
static void two_discs(int32_t *cls, float *prob) {
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            const bool a = in_disc(y, x, 20, 15, 10), b = in_disc(y, x, 20, 35, 10);
            cls[y * W + x] = a || b;
            prob[y * W + x] = a || b ? (x == 25 ? 0.6f : 1.0f) : 0.0f;
        }
}

TEST(touching_discs_split) {
    static int32_t cls[H * W], lab[H * W];
    static float   prob[H * W];
    two_discs(cls, prob);
    unet_instance_opts o = unet_instance_defaults();
    CHECK_EQ(o.method, UNET_INSTANCES_WATERSHED);
    /* Connected components (the previous method) see one object. */
    unet_instance_opts cc = o;
    cc.method = UNET_INSTANCES_CC;
    CHECK_EQ(instances_ok(cls, prob, H, W, &cc, lab), 1);
    /* The watershed: the discs are no deeper than erode (8 at their centres), so each piece
     * of sure pixels keeps its deepest pixels; the bridge (depth 1) is not among them: two
     * seeds flood their discs, and the contact column, the least sure, is taken last.  Every pixel of disc A left of x = 25 is
     * object 1 (A is first in raster order), of disc B right of it object 2. */
    for (int with_prob = 0; with_prob < 2; with_prob++) {
        CHECK_EQ(instances_ok(cls, with_prob ? prob : NULL, H, W, &o, lab), 2);
        int wrong = 0;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                const int32_t l = lab[y * W + x];
                if (in_disc(y, x, 20, 15, 10) && x < 25) wrong += l != 1;
                else if (in_disc(y, x, 20, 35, 10) && x > 25) wrong += l != 2;
            }
        CHECK_EQ(wrong, 0);
    }
}

TEST(seed_threshold_splits_thick_bridge) {
    /* Discs of radius 14 at (20, 16) and (20, 36): a neck 19 pixels high joins them, deeper
     * than erode 8, but the network is unsure on the columns 25..27 (prob 0.6).
     * seed_threshold 0.5: one seed, one object; 0.8: the unsure band is no seed, the two discs
     * flood from their own seeds and meet in the band: left of it object 1, right object 2. */
    static int32_t cls[H * W], lab[H * W];
    static float   prob[H * W];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            const bool in = in_disc(y, x, 20, 16, 14) || in_disc(y, x, 20, 36, 14);
            cls[y * W + x] = in;
            prob[y * W + x] = !in ? 0.0f : (x >= 25 && x <= 27) ? 0.6f : 0.95f;
        }
    unet_instance_opts o = unet_instance_defaults();
    o.seed_threshold = 0.5f;
    CHECK_EQ(instances_ok(cls, prob, H, W, &o, lab), 1);
    o.seed_threshold = 0.8f;
    CHECK_EQ(instances_ok(cls, prob, H, W, &o, lab), 2);
    int wrong = 0;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            if (!cls[y * W + x] || (x >= 25 && x <= 27)) continue;
            wrong += lab[y * W + x] != (x < 25 ? 1 : 2);
        }
    CHECK_EQ(wrong, 0);
}

TEST(single_cell_stays_one) {
    /* An ellipse with a waist: not convex, yet thicker than 2 erode + 1 everywhere (the waist
     * is 21 pixels high, erode 8): one seed, one object, and it covers the cell plus the grow
     * ring (grow 2 over background).  (A waist thinner than that would split the cell: the
     * price of deep erosion, docs/metrics.md.) */
    static int32_t cls[H * W], lab[H * W];
    static float   prob[H * W];
    int            cell = 0;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            const double dy = (y - 20) / 15.0, dx = (x - 26) / 22.0;
            const bool   in = dy * dy + dx * dx <= 1 && !(abs(x - 26) < 3 && abs(y - 20) > 10);
            cls[y * W + x] = in;
            prob[y * W + x] = in ? 0.9f : 0.1f;
            cell += in;
        }
    unet_instance_opts o = unet_instance_defaults();
    CHECK_EQ(instances_ok(cls, prob, H, W, &o, lab), 1);
    int covered = 0, extra = 0;
    for (int i = 0; i < H * W; i++) {
        covered += cls[i] && lab[i] == 1;
        extra += !cls[i] && lab[i] == 1;
    }
    CHECK_EQ(covered, cell);
    CHECK(extra > 0);
    /* grow 0: exactly the cell. */
    o.grow = 0;
    CHECK_EQ(instances_ok(cls, prob, H, W, &o, lab), 1);
    for (int i = 0; i < H * W; i++) CHECK_EQ(lab[i], cls[i]);
}

TEST(fragments_and_small_cells) {
    /* A disc (r 8, ~200 px), a 3x3 speckle (9 px) and a 4x4 square (16 px; eroded away by
     * erode 2 but kept as a seed of its own) far apart, in raster order: speckle (rows 2-4),
     * square (rows 5-8), disc (centre row 25).
     * min_size 0: 3 objects numbered by their first pixel; min_size 12: the speckle goes (the
     * square has 16 px + its grow ring); min_size 64: only the disc is left, numbered 1. */
    static int32_t cls[H * W], lab[H * W];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            cls[y * W + x] = in_disc(y, x, 25, 26, 8) || (y >= 2 && y <= 4 && x >= 40 && x <= 42) ||
                             (y >= 5 && y <= 8 && x >= 5 && x <= 8);
    unet_instance_opts o = unet_instance_defaults();
    o.grow = 0;
    o.min_size = 0;
    CHECK_EQ(instances_ok(cls, NULL, H, W, &o, lab), 3);
    CHECK_EQ(lab[3 * W + 41], 1);
    CHECK_EQ(lab[6 * W + 6], 2);
    CHECK_EQ(lab[25 * W + 26], 3);
    o.min_size = 12;
    CHECK_EQ(instances_ok(cls, NULL, H, W, &o, lab), 2);
    CHECK_EQ(lab[3 * W + 41], 0);
    CHECK_EQ(lab[6 * W + 6], 1);
    CHECK_EQ(lab[25 * W + 26], 2);
    o.min_size = 64;
    CHECK_EQ(instances_ok(cls, NULL, H, W, &o, lab), 1);
    CHECK_EQ(lab[6 * W + 6], 0);
    CHECK_EQ(lab[25 * W + 26], 1);
    /* The same min_size applies to connected components. */
    o.method = UNET_INSTANCES_CC;
    CHECK_EQ(instances_ok(cls, NULL, H, W, &o, lab), 1);
    o.min_size = 0;
    CHECK_EQ(instances_ok(cls, NULL, H, W, &o, lab), 3);
}

TEST(cc_method_is_unet_instances) {
    /* method cc with min_size 0 is unet_instances exactly (the previous output), also on a
     * 3-class map with a border class. */
    struct unet__rng rng;
    unet__rng_seed(&rng, 5);
    static int32_t cls[H * W], a[H * W], b[H * W];
    for (int i = 0; i < H * W; i++) cls[i] = (int32_t)unet__rng_below(&rng, 3);
    unet_instance_opts o = {UNET_INSTANCES_CC, 2, 2, 0, 0.5f};
    int count = instances_ok(cls, NULL, H, W, &o, a), count2 = 0;
    CHECK_STATUS(unet_instances(NULL, cls, H, W, 2, b, &count2), UNET_STATUS_OK);
    CHECK_EQ(count, count2);
    CHECK(memcmp(a, b, sizeof a) == 0);
}

TEST(bad_arguments) {
    unet_ctx          *ctx = unet_ctx_create();
    const int32_t      cls[4] = {0, 1, 1, 0}, neg[4] = {0, -1, 0, 0};
    const float        nan_e[4] = {0, NAN, 0, 0};
    int32_t            lab[4];
    int                count = 7;
    unet_instance_opts o = unet_instance_defaults();
    CHECK_STATUS(unet_watershed(ctx, NULL, NULL, NULL, 2, 2, lab), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "NULL");
    CHECK_STATUS(unet_watershed(ctx, NULL, cls, NULL, 0, 2, lab), UNET_STATUS_ARG);
    CHECK_STATUS(unet_watershed(ctx, NULL, cls, NULL, 65536, 65536, lab), UNET_STATUS_ARG);
    CHECK_STATUS(unet_watershed(ctx, NULL, neg, NULL, 2, 2, lab), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "markers[1] (y 0, x 1) = -1");
    CHECK_STATUS(unet_watershed(ctx, nan_e, cls, NULL, 2, 2, lab), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "elevation[1]");
    CHECK_STATUS(unet_segment_instances(ctx, cls, NULL, 2, 2, NULL, lab, &count),
                 UNET_STATUS_ARG);
    CHECK_STATUS(unet_segment_instances(ctx, cls, nan_e, 2, 2, &o, lab, &count),
                 UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "prob[1]");
    o.erode = -1;
    CHECK_STATUS(unet_segment_instances(ctx, cls, NULL, 2, 2, &o, lab, &count), UNET_STATUS_ARG);
    o = unet_instance_defaults();
    o.seed_threshold = 1.0f;
    CHECK_STATUS(unet_segment_instances(ctx, cls, NULL, 2, 2, &o, lab, &count), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "seed_threshold");
    o = unet_instance_defaults();
    o.method = (unet_instance_method)9;
    CHECK_STATUS(unet_segment_instances(ctx, cls, NULL, 2, 2, &o, lab, &count), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "method");
    CHECK_EQ(count, 7);
    unet_ctx_free(ctx);
}

int main(void) {
    RUN(flood_hand_row);
    RUN(flood_hand_mask);
    RUN(flood_vs_ref);
    RUN(touching_discs_split);
    RUN(seed_threshold_splits_thick_bridge);
    RUN(single_cell_stays_one);
    RUN(fragments_and_small_cells);
    RUN(cc_method_is_unet_instances);
    RUN(bad_arguments);
    return harness_finish();
}
