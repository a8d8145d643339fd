/* test_metrics.c — connected components and unet_evaluate.
 *
 * Connected components against a breadth-first flood fill on random masks (both connectivities,
 * odd sizes, in place); every metric on tiny hand-computed examples (the arithmetic is in the
 * comments); the Rand error, SEG and AP on random label images against brute-force definitions
 * (O(n^2) ordered pixel pairs for Rand, a dense overlap matrix and an exhaustive augmenting-path
 * matching for AP); a perfect prediction; split and merged cells (large Rand error, small pixel
 * error: why the ISBI challenge used the metric); argument errors.
 */
/* harness.h defines static helpers (golden files, gradient checks) this program does not use. */
#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wunused-function"
#endif
#include "harness.h"

/* Exact results are rational numbers computed in double: a few ulps. */
#define EXACT 1e-12

/* ---- references ---- */

/* Labels components in raster order of their first pixel by construction: a BFS starts at every
 * unlabelled pixel of the set, in raster order.  queue holds h * w ints. */
static int flood_fill_ref(const int32_t *mask, int h, int w, int32_t value, int connectivity,
                          int32_t *lab, int *queue) {
    static const int dy[8] = {0, 0, -1, 1, -1, -1, 1, 1}, dx[8] = {-1, 1, 0, 0, -1, 1, -1, 1};
    int n = 0;
    for (int i = 0; i < h * w; i++) lab[i] = 0;
    for (int s = 0; s < h * w; s++) {
        if (mask[s] != value || lab[s]) continue;
        int head = 0, tail = 0;
        lab[s] = ++n;
        queue[tail++] = s;
        while (head < tail) {
            int q = queue[head++], y = q / w, x = q % w;
            for (int k = 0; k < connectivity; k++) {
                int yy = y + dy[k], xx = x + dx[k];
                if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
                int r = yy * w + xx;
                if (mask[r] == value && !lab[r]) {
                    lab[r] = n;
                    queue[tail++] = r;
                }
            }
        }
    }
    return n;
}

/* Foreground-restricted Rand error by counting ordered pixel pairs (a, b) over the pixels where
 * the truth is non-zero, a == b included: "same predicted object" means a == b, or both carry
 * the same non-zero predicted label (a predicted-background pixel is an object of its own). */
static double rand_error_ref(const int32_t *t, const int32_t *p, int n) {
    double same_t = 0, same_p = 0, both = 0;
    int fg = 0;
    for (int a = 0; a < n; a++) {
        if (!t[a]) continue;
        fg++;
        for (int b = 0; b < n; b++) {
            if (!t[b]) continue;
            bool st = t[a] == t[b], sp = a == b || (p[a] && p[a] == p[b]);
            same_t += st;
            same_p += sp;
            both += st && sp;
        }
    }
    if (!fg) return NAN;
    double prec = both / same_p, rec = both / same_t;
    return 1.0 - 2.0 * prec * rec / (prec + rec);
}

#define MAX_OBJ 100

/* Distinct non-zero labels of lab in ids[]; returns the count.  n <= MAX_OBJ. */
static int distinct_labels(const int32_t *lab, int n, int32_t *ids) {
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (!lab[i]) continue;
        int j = 0;
        while (j < k && ids[j] != lab[i]) j++;
        if (j == k) ids[k++] = lab[i];
    }
    return k;
}

static int kuhn_try(int r, int n_pred, bool adj[MAX_OBJ][MAX_OBJ], bool *seen, int *match_of_pred) {
    for (int s = 0; s < n_pred; s++) {
        if (!adj[r][s] || seen[s]) continue;
        seen[s] = true;
        if (match_of_pred[s] < 0 || kuhn_try(match_of_pred[s], n_pred, adj, seen, match_of_pred)) {
            match_of_pred[s] = r;
            return 1;
        }
    }
    return 0;
}

/* SEG and AP50 from a dense overlap matrix; AP's matching is a maximum bipartite matching by
 * augmenting paths (Kuhn), not the greedy one unet uses. */
static void objects_ref(const int32_t *t, const int32_t *p, int n, double *seg, double *ap,
                        int *n_true, int *n_pred) {
    int32_t tid[MAX_OBJ], pid[MAX_OBJ];
    UNET_ASSERT(n <= MAX_OBJ);
    int kt = distinct_labels(t, n, tid), kp = distinct_labels(p, n, pid);
    double inter[MAX_OBJ][MAX_OBJ] = {{0}}, ts[MAX_OBJ] = {0}, ps[MAX_OBJ] = {0};
    for (int i = 0; i < n; i++) {
        int a = -1, b = -1;
        for (int k = 0; k < kt; k++)
            if (t[i] && tid[k] == t[i]) a = k;
        for (int k = 0; k < kp; k++)
            if (p[i] && pid[k] == p[i]) b = k;
        if (a >= 0) ts[a]++;
        if (b >= 0) ps[b]++;
        if (a >= 0 && b >= 0) inter[a][b]++;
    }
    bool adj[MAX_OBJ][MAX_OBJ] = {{false}};
    double seg_sum = 0;
    for (int a = 0; a < kt; a++)
        for (int b = 0; b < kp; b++) {
            double iou = inter[a][b] / (ts[a] + ps[b] - inter[a][b]);
            if (inter[a][b] > 0.5 * ts[a]) seg_sum += iou;
            adj[a][b] = iou >= 0.5;
        }
    int match_of_pred[MAX_OBJ], tp = 0;
    for (int b = 0; b < kp; b++) match_of_pred[b] = -1;
    for (int a = 0; a < kt; a++) {
        bool seen[MAX_OBJ] = {false};
        tp += kuhn_try(a, kp, adj, seen, match_of_pred);
    }
    *seg = kt ? seg_sum / kt : NAN;
    *ap = tp ? (double)tp / (kt + kp - tp) : 0.0;
    *n_true = kt;
    *n_pred = kp;
}

/* NaN-aware closeness: both NaN passes. */
#define CHECK_METRIC(got, want)                                                                \
    do {                                                                                       \
        double gm_ = (got), wm_ = (want);                                                      \
        if (isnan(wm_)) {                                                                      \
            if (!isnan(gm_))                                                                   \
                HARNESS_FAIL_AT(__FILE__, __LINE__, "%s: got %.9g, want NaN", #got, gm_);      \
        } else {                                                                               \
            CHECK_CLOSE(gm_, wm_, EXACT, EXACT);                                               \
        }                                                                                      \
    } while (0)

static unet_metrics evaluate_ok(const int32_t *pred, const int32_t *truth, const int32_t *pred_inst,
                                const int32_t *truth_inst, int h, int w, int classes) {
    unet_metrics m;
    memset(&m, 0, sizeof m);
    unet_ctx *ctx = unet_ctx_create();
    unet_status s = unet_evaluate(ctx, pred, truth, pred_inst, truth_inst, h, w, classes, &m);
    if (s != UNET_STATUS_OK)
        HARNESS_FAIL_AT(__FILE__, __LINE__, "unet_evaluate: %s: %s", unet_status_str(s),
                        unet_ctx_errmsg(ctx));
    unet_ctx_free(ctx);
    return m;
}

/* ---- connected components ---- */

TEST(cc_hand) {
    /* 4-connectivity: three components; 8-connectivity: (1,0)-(2,1) and (3,2)-(2,3) touch
     * diagonally, so all one. */
    const int32_t mask[4 * 5] = {1, 0, 1, 1, 0,
                                 1, 0, 0, 1, 0,
                                 0, 1, 0, 1, 1,
                                 0, 1, 1, 0, 1};
    const int32_t want4[4 * 5] = {1, 0, 2, 2, 0,
                                  1, 0, 0, 2, 0,
                                  0, 3, 0, 2, 2,
                                  0, 3, 3, 0, 2};
    int32_t lab[4 * 5];
    int count = -1;
    CHECK_STATUS(unet_connected_components(NULL, mask, 4, 5, 1, 4, lab, &count), UNET_STATUS_OK);
    CHECK_EQ(count, 3);
    for (int i = 0; i < 20; i++) CHECK_EQ(lab[i], want4[i]);
    CHECK_STATUS(unet_connected_components(NULL, mask, 4, 5, 1, 8, lab, &count), UNET_STATUS_OK);
    CHECK_EQ(count, 1);
    for (int i = 0; i < 20; i++) CHECK_EQ(lab[i], mask[i]);
    /* The background value as the set, 4-connectivity: {(0,1),(1,1),(1,2),(2,2)} = 1,
     * {(0,4),(1,4)} = 2, {(2,0),(3,0)} = 3, {(3,3)} = 4. */
    CHECK_STATUS(unet_connected_components(NULL, mask, 4, 5, 0, 4, lab, &count), UNET_STATUS_OK);
    CHECK_EQ(count, 4);
    const int32_t want0[4 * 5] = {0, 1, 0, 0, 2,
                                  0, 1, 1, 0, 2,
                                  3, 0, 1, 0, 0,
                                  3, 0, 0, 4, 0};
    for (int i = 0; i < 20; i++) CHECK_EQ(lab[i], want0[i]);

    /* A U: two provisional labels (left and right arm) joined by the bottom row; the right arm's
     * label must be merged into the left one.  And a "W" whose later arm is met first. */
    const int32_t u[3 * 3] = {1, 0, 1, 1, 0, 1, 1, 1, 1};
    CHECK_STATUS(unet_connected_components(NULL, u, 3, 3, 1, 4, lab, &count), UNET_STATUS_OK);
    CHECK_EQ(count, 1);
    for (int i = 0; i < 9; i++) CHECK_EQ(lab[i], u[i]);
    const int32_t v[3 * 5] = {0, 0, 0, 0, 1,
                              2, 0, 1, 0, 1,
                              1, 1, 1, 1, 1};
    const int32_t want_v[3 * 5] = {0, 0, 0, 0, 1,
                                   0, 0, 1, 0, 1,
                                   1, 1, 1, 1, 1};
    CHECK_STATUS(unet_connected_components(NULL, v, 3, 5, 1, 4, lab, &count), UNET_STATUS_OK);
    CHECK_EQ(count, 1);
    for (int i = 0; i < 15; i++) CHECK_EQ(lab[i], want_v[i]);
}

TEST(cc_vs_flood_fill) {
    static const int sizes[][2] = {{1, 1}, {1, 9}, {9, 1}, {2, 2}, {5, 7}, {13, 17}, {31, 29},
                                   {64, 3}, {3, 64}, {47, 53}};
    struct unet__rng rng;
    unet__rng_seed(&rng, 12345);
    int cases = 0, max_count = 0;
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        int h = sizes[si][0], w = sizes[si][1], n = h * w;
        int32_t *mask = calloc(n, sizeof *mask), *lab = calloc(n, sizeof *lab);
        int32_t *ref = calloc(n, sizeof *ref), *inplace = calloc(n, sizeof *inplace);
        int *queue = calloc(n, sizeof *queue);
        for (int density = 1; density <= 4; density++) {   /* P(value) = 0.2 .. 0.8 */
            for (int rep = 0; rep < 4; rep++) {
                for (int i = 0; i < n; i++)
                    mask[i] = unet__rng_uniform(&rng) < 0.2f * density
                                  ? 7 : (int32_t)unet__rng_below(&rng, 3) - 1;
                for (int conn = 4; conn <= 8; conn += 4) {
                    int want = flood_fill_ref(mask, h, w, 7, conn, ref, queue), got = -1;
                    CHECK_STATUS(unet_connected_components(NULL, mask, h, w, 7, conn, lab, &got),
                                 UNET_STATUS_OK);
                    CHECK_EQ(got, want);
                    int bad = 0;
                    for (int i = 0; i < n; i++) bad += lab[i] != ref[i];
                    if (bad)
                        HARNESS_FAIL_AT(__FILE__, __LINE__, "%dx%d conn %d density %d: %d labels "
                                        "differ", h, w, conn, density, bad);
                    /* In place: labels == mask. */
                    memcpy(inplace, mask, n * sizeof *mask);
                    CHECK_STATUS(unet_connected_components(NULL, inplace, h, w, 7, conn, inplace,
                                                           &got), UNET_STATUS_OK);
                    CHECK_EQ(got, want);
                    CHECK(memcmp(inplace, ref, n * sizeof *ref) == 0);
                    if (want > max_count) max_count = want;
                    cases++;
                }
            }
        }
        free(mask), free(lab), free(ref), free(inplace), free(queue);
    }
    printf("       %d random masks, up to %d components, all labels equal\n", cases, max_count);
}

/* Worst cases for the provisional-label bound and the union-find: a checkerboard (8-connected:
 * one component; 4-connected: every pixel alone) and a spiral (one long path). */
TEST(cc_checkerboard_spiral) {
    enum { H = 33, W = 35, N = H * W };
    static int32_t mask[N], lab[N], ref[N];
    static int queue[N];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) mask[y * W + x] = (x + y) % 2 == 0;
    int count = -1;
    CHECK_STATUS(unet_connected_components(NULL, mask, H, W, 1, 4, lab, &count), UNET_STATUS_OK);
    CHECK_EQ(count, (N + 1) / 2);
    CHECK_STATUS(unet_connected_components(NULL, mask, H, W, 1, 8, lab, &count), UNET_STATUS_OK);
    CHECK_EQ(count, 1);
    /* Square spiral of 1s with a gap of 0s. */
    memset(mask, 0, sizeof mask);
    int top = 0, bottom = H - 1, left = 0, right = W - 1;
    while (top <= bottom && left <= right) {
        for (int x = left; x <= right; x++) mask[top * W + x] = 1;
        for (int y = top; y <= bottom; y++) mask[y * W + right] = 1;
        if (top + 2 <= bottom)
            for (int x = left; x <= right; x++) mask[bottom * W + x] = 1;
        if (left + 2 <= right)
            for (int y = top + 2; y <= bottom; y++) mask[y * W + left] = 1;
        top += 2, bottom -= 2, left += 2, right -= 2;
    }
    for (int conn = 4; conn <= 8; conn += 4) {
        int want = flood_fill_ref(mask, H, W, 1, conn, ref, queue);
        CHECK_STATUS(unet_connected_components(NULL, mask, H, W, 1, conn, lab, &count),
                     UNET_STATUS_OK);
        CHECK_EQ(count, want);
        CHECK(memcmp(lab, ref, sizeof lab) == 0);
    }
}

/* ---- metrics on hand-computed examples ---- */

TEST(metrics_hand_binary) {
    /* truth        pred
     * 0 1 1 0      0 1 1 1
     * 0 1 1 0      0 0 1 0
     * Wrong: (0,3) and (1,1): pixel error 2/8.
     * Class 1: truth 4, pred 4, both 3 -> IoU 3/(4+4-3) = 0.6, Dice 2*3/8 = 0.75.
     * Class 0: truth 4, pred 4, both 3 ((0,0), (1,0), (1,3)) -> the same.
     * Objects: truth R (4 px), pred S = {(0,1),(0,2),(0,3),(1,2)} (4 px, 4-connected);
     * |R & S| = 3 > 4/2 -> SEG = 3/5; IoU 3/5 >= 1/2 -> TP 1, AP 1/(1+0+0) = 1.
     * Rand over the 4 truth-foreground pixels: A = 4^2 = 16; S holds 3 of them and (1,1) is
     * predicted background, a singleton: B = 3^2 + 1 = 10, AB = 3^2 + 1 = 10;
     * F = 2*10/(16+10) = 10/13, error 3/13. */
    const int32_t truth[8] = {0, 1, 1, 0, 0, 1, 1, 0};
    const int32_t pred[8] = {0, 1, 1, 1, 0, 0, 1, 0};
    unet_metrics m = evaluate_ok(pred, truth, NULL, NULL, 2, 4, 2);
    CHECK_EQ(m.classes, 2);
    CHECK_METRIC(m.pixel_error, 0.25);
    CHECK_METRIC(m.iou[0], 0.6);
    CHECK_METRIC(m.iou[1], 0.6);
    CHECK_METRIC(m.dice[0], 0.75);
    CHECK_METRIC(m.dice[1], 0.75);
    CHECK_METRIC(m.iou[2], NAN);
    CHECK_METRIC(m.mean_iou, 0.6);
    CHECK_METRIC(m.mean_dice, 0.75);
    CHECK_METRIC(m.seg, 0.6);
    CHECK_METRIC(m.ap50, 1.0);
    CHECK_METRIC(m.rand_error, 3.0 / 13.0);
    CHECK_EQ(m.n_true, 1);
    CHECK_EQ(m.n_pred, 1);
}

TEST(metrics_hand_multiclass) {
    /* classes = 4, class 3 absent from both.
     * truth 0 1 2 2     pred 0 2 2 1
     * Wrong: positions 1 and 3 -> pixel error 2/4.
     * Class 0: t 1, p 1, both 1 -> IoU 1, Dice 1.
     * Class 1: t 1 (pos 1), p 1 (pos 3), both 0 -> IoU 0/2 = 0, Dice 0.
     * Class 2: t 2 (pos 2, 3), p 2 (pos 1, 2), both 1 -> IoU 1/3, Dice 2/4.
     * Means over classes 0..2: IoU (1 + 0 + 1/3)/3 = 4/9, Dice (1 + 0 + 1/2)/3 = 1/2.
     * Objects: foreground = class > 0 merged: pixels 1..3 in both -> one object each, equal:
     * SEG 1, AP 1, Rand error 0 (A = B = AB = 9). */
    const int32_t truth[4] = {0, 1, 2, 2}, pred[4] = {0, 2, 2, 1};
    unet_metrics m = evaluate_ok(pred, truth, NULL, NULL, 1, 4, 4);
    CHECK_METRIC(m.pixel_error, 0.5);
    CHECK_METRIC(m.iou[0], 1.0);
    CHECK_METRIC(m.iou[1], 0.0);
    CHECK_METRIC(m.iou[2], 1.0 / 3.0);
    CHECK_METRIC(m.iou[3], NAN);
    CHECK_METRIC(m.dice[0], 1.0);
    CHECK_METRIC(m.dice[1], 0.0);
    CHECK_METRIC(m.dice[2], 0.5);
    CHECK_METRIC(m.dice[3], NAN);
    CHECK_METRIC(m.mean_iou, 4.0 / 9.0);
    CHECK_METRIC(m.mean_dice, 0.5);
    CHECK_METRIC(m.seg, 1.0);
    CHECK_METRIC(m.ap50, 1.0);
    CHECK_METRIC(m.rand_error, 0.0);
    CHECK_EQ(m.n_true, 1);
    CHECK_EQ(m.n_pred, 1);
}

TEST(metrics_hand_split_merge) {
    /* Split: truth 1 1 1 1 1, pred 1 1 0 1 1.  Pixel error 1/5.
     * Rand: A = 5^2 = 25; pred objects {0,1}, {3,4} and the singleton 2: B = 4 + 4 + 1 = 9,
     * AB = 4 + 4 + 1 = 9; F = 18/34 = 9/17, error 8/17.
     * SEG: |R & S1| = 2 is not > 5/2 -> 0.  AP: IoU 2/5 < 1/2 -> TP 0 -> 0; 1 and 2 objects. */
    const int32_t one[5] = {1, 1, 1, 1, 1}, cut[5] = {1, 1, 0, 1, 1};
    unet_metrics m = evaluate_ok(cut, one, NULL, NULL, 1, 5, 2);
    CHECK_METRIC(m.pixel_error, 0.2);
    CHECK_METRIC(m.rand_error, 8.0 / 17.0);
    CHECK_METRIC(m.seg, 0.0);
    CHECK_METRIC(m.ap50, 0.0);
    CHECK_EQ(m.n_true, 1);
    CHECK_EQ(m.n_pred, 2);
    /* Merge: truth 1 1 0 1 1, pred 1 1 1 1 1.  Pixel error 1/5.
     * Rand over the 4 truth-foreground pixels: A = 2^2 + 2^2 = 8, B = 4^2 = 16, AB = 4 + 4 = 8;
     * F = 16/24 = 2/3, error 1/3.
     * SEG: each R (2 px) has |R & S| = 2 > 1, J = 2/5 -> SEG 2/5.  AP: IoU 2/5 -> 0. */
    m = evaluate_ok(one, cut, NULL, NULL, 1, 5, 2);
    CHECK_METRIC(m.pixel_error, 0.2);
    CHECK_METRIC(m.rand_error, 1.0 / 3.0);
    CHECK_METRIC(m.seg, 0.4);
    CHECK_METRIC(m.ap50, 0.0);
    CHECK_EQ(m.n_true, 2);
    CHECK_EQ(m.n_pred, 1);
}

TEST(metrics_hand_half_iou) {
    /* IoU exactly 1/2 counts (StarDist: >= thresh), and one object with two half-size partners
     * gives one match, not two.  Caller-given labels, not consecutive.
     * truth 5 5 5 5, pred 9 9 4 4: IoU(R, S) = 2/4 for both S -> TP 1, FP 1, FN 0 -> AP 1/2.
     * SEG: |R & S| = 2 is not > 4/2 -> 0.
     * Rand: A = 16, B = 2^2 + 2^2 = 8, AB = 8 -> F = 16/24, error 1/3. */
    const int32_t cls[4] = {1, 1, 1, 1};
    const int32_t t_inst[4] = {5, 5, 5, 5}, p_inst[4] = {9, 9, 4, 4};
    unet_metrics m = evaluate_ok(cls, cls, p_inst, t_inst, 2, 2, 2);
    CHECK_METRIC(m.ap50, 0.5);
    CHECK_METRIC(m.seg, 0.0);
    CHECK_METRIC(m.rand_error, 1.0 / 3.0);
    CHECK_EQ(m.n_true, 1);
    CHECK_EQ(m.n_pred, 2);
    /* The other way round: truth 9 9 4 4, pred 5 5 5 5 -> TP 1, FN 1 -> AP 1/2; each R (2 px)
     * has |R & S| = 2 > 1, J = 2/4 -> SEG 1/2.  Rand: A = 8, B = 16, AB = 8 -> error 1/3. */
    m = evaluate_ok(cls, cls, t_inst, p_inst, 2, 2, 2);
    CHECK_METRIC(m.ap50, 0.5);
    CHECK_METRIC(m.seg, 0.5);
    CHECK_METRIC(m.rand_error, 1.0 / 3.0);
}

TEST(metrics_empty) {
    /* No truth foreground: Rand error and SEG undefined (NaN); AP 0 by StarDist's convention,
     * also when the prediction is empty too.  Class 1 absent from both: IoU NaN, means over
     * class 0 only. */
    const int32_t zero[6] = {0};
    const int32_t some[6] = {0, 1, 1, 0, 0, 0};
    unet_metrics m = evaluate_ok(zero, zero, NULL, NULL, 2, 3, 2);
    CHECK_METRIC(m.pixel_error, 0.0);
    CHECK_METRIC(m.iou[0], 1.0);
    CHECK_METRIC(m.iou[1], NAN);
    CHECK_METRIC(m.mean_iou, 1.0);
    CHECK_METRIC(m.mean_dice, 1.0);
    CHECK_METRIC(m.rand_error, NAN);
    CHECK_METRIC(m.seg, NAN);
    CHECK_METRIC(m.ap50, 0.0);
    CHECK_EQ(m.n_true, 0);
    CHECK_EQ(m.n_pred, 0);
    /* A false positive on an empty truth: class 1 IoU 0/2 = 0; class 0 IoU 4/6; AP 0. */
    m = evaluate_ok(some, zero, NULL, NULL, 2, 3, 2);
    CHECK_METRIC(m.pixel_error, 2.0 / 6.0);
    CHECK_METRIC(m.iou[0], 4.0 / 6.0);
    CHECK_METRIC(m.iou[1], 0.0);
    CHECK_METRIC(m.rand_error, NAN);
    CHECK_METRIC(m.ap50, 0.0);
    CHECK_EQ(m.n_pred, 1);
    /* Nothing predicted on a non-empty truth: every truth pixel a singleton.
     * Rand: A = 2^2 = 4, B = 1 + 1 = 2, AB = 2 -> F = 4/6, error 1/3.  SEG 0. */
    m = evaluate_ok(zero, some, NULL, NULL, 2, 3, 2);
    CHECK_METRIC(m.rand_error, 1.0 / 3.0);
    CHECK_METRIC(m.seg, 0.0);
    CHECK_METRIC(m.ap50, 0.0);
}

/* ---- random images against the brute-force definitions ---- */

/* Blobs: each pixel copies its left or upper neighbour's label with probability 0.8, so labels
 * form runs and patches (random pixels would almost never reach IoU 1/2). */
static void random_labels(struct unet__rng *rng, int32_t *lab, int h, int w, int k) {
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            float u = unet__rng_uniform(rng);
            int32_t v = (int32_t)unet__rng_below(rng, (uint64_t)k + 1);
            if (u < 0.4f && x > 0) v = lab[y * w + x - 1];
            else if (u < 0.8f && y > 0) v = lab[(y - 1) * w + x];
            lab[y * w + x] = v;
        }
}

TEST(metrics_vs_bruteforce) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 777);
    enum { H = 9, W = 11, N = H * W };
    int32_t t[N], p[N], t_cls[N], p_cls[N], cc_t[N], cc_p[N];
    double max_err_rand = 0, max_err_seg = 0, max_err_ap = 0;
    int cases = 0, ap_nonzero = 0, seg_nonzero = 0;
    for (int rep = 0; rep < 300; rep++) {
        random_labels(&rng, t, H, W, 1 + rep % 6);
        if (rep % 3 == 0) {
            /* Prediction close to the truth: relabelled (x3 + 2 keeps 0 at 0 only when t == 0)
             * and 15% of the pixels changed. */
            for (int i = 0; i < N; i++) {
                p[i] = t[i] ? 3 * t[i] + 2 : 0;
                if (unet__rng_uniform(&rng) < 0.15f) p[i] = (int32_t)unet__rng_below(&rng, 8);
            }
        } else {
            random_labels(&rng, p, H, W, 1 + rep % 5);
            for (int i = 0; i < N; i++) p[i] *= 1000;   /* sparse label values */
        }
        for (int i = 0; i < N; i++) t_cls[i] = t[i] > 0, p_cls[i] = p[i] > 0;

        /* With caller-given instances. */
        unet_metrics m = evaluate_ok(p_cls, t_cls, p, t, H, W, 2);
        double rand_ref = rand_error_ref(t, p, N), seg_ref, ap_ref;
        int nt, np;
        objects_ref(t, p, N, &seg_ref, &ap_ref, &nt, &np);
        CHECK_METRIC(m.rand_error, rand_ref);
        CHECK_METRIC(m.seg, seg_ref);
        CHECK_METRIC(m.ap50, ap_ref);
        CHECK_EQ(m.n_true, nt);
        CHECK_EQ(m.n_pred, np);
        if (!isnan(rand_ref) && fabs(m.rand_error - rand_ref) > max_err_rand)
            max_err_rand = fabs(m.rand_error - rand_ref);
        if (!isnan(seg_ref) && fabs(m.seg - seg_ref) > max_err_seg)
            max_err_seg = fabs(m.seg - seg_ref);
        if (fabs(m.ap50 - ap_ref) > max_err_ap) max_err_ap = fabs(m.ap50 - ap_ref);
        ap_nonzero += ap_ref > 0;
        seg_nonzero += seg_ref > 0;

        /* Without: instances are the 4-connected components of the class maps. */
        int ct, cp;
        CHECK_STATUS(unet_connected_components(NULL, t_cls, H, W, 1, 4, cc_t, &ct), UNET_STATUS_OK);
        CHECK_STATUS(unet_connected_components(NULL, p_cls, H, W, 1, 4, cc_p, &cp), UNET_STATUS_OK);
        m = evaluate_ok(p_cls, t_cls, NULL, NULL, H, W, 2);
        objects_ref(cc_t, cc_p, N, &seg_ref, &ap_ref, &nt, &np);
        CHECK_METRIC(m.rand_error, rand_error_ref(cc_t, cc_p, N));
        CHECK_METRIC(m.seg, seg_ref);
        CHECK_METRIC(m.ap50, ap_ref);
        CHECK_EQ(m.n_true, ct);
        CHECK_EQ(m.n_pred, cp);
        cases++;
    }
    /* The random cases must exercise the matching, not only the AP = 0 path. */
    CHECK(ap_nonzero > 30);
    CHECK(seg_nonzero > 30);
    printf("       %d random %dx%d pairs (AP > 0 in %d, SEG > 0 in %d): max abs err rand %.3g, "
           "seg %.3g, ap %.3g\n", cases, H, W, ap_nonzero, seg_nonzero, max_err_rand, max_err_seg,
           max_err_ap);
}

TEST(metrics_perfect) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 4242);
    enum { H = 37, W = 41, N = H * W };
    static int32_t cls[N], inst[N];
    random_labels(&rng, cls, H, W, 3);   /* classes 0..3 */
    unet_metrics m = evaluate_ok(cls, cls, NULL, NULL, H, W, 5);
    CHECK_METRIC(m.pixel_error, 0.0);
    for (int c = 0; c < 4; c++) CHECK_METRIC(m.iou[c], 1.0);
    for (int c = 0; c < 4; c++) CHECK_METRIC(m.dice[c], 1.0);
    CHECK_METRIC(m.iou[4], NAN);
    CHECK_METRIC(m.mean_iou, 1.0);
    CHECK_METRIC(m.mean_dice, 1.0);
    CHECK_METRIC(m.rand_error, 0.0);
    CHECK_METRIC(m.seg, 1.0);
    CHECK_METRIC(m.ap50, 1.0);
    CHECK(m.n_true > 1);
    CHECK_EQ(m.n_true, m.n_pred);
    /* Instances that touch (no background between them), given by the caller. */
    random_labels(&rng, inst, H, W, 40);
    for (int i = 0; i < N; i++) cls[i] = inst[i] > 0;
    m = evaluate_ok(cls, cls, inst, inst, H, W, 2);
    CHECK_METRIC(m.rand_error, 0.0);
    CHECK_METRIC(m.seg, 1.0);
    CHECK_METRIC(m.ap50, 1.0);
    CHECK_EQ(m.n_true, 40);
}

/* Two 12x12 cells side by side, one pixel of membrane between them, in a 16x29 image.  Cutting
 * a cell in two with one line of membrane, or filling the membrane between the cells, changes
 * about 12 of 464 pixels but the segmentation's topology: the Rand error sees it, the pixel
 * error barely does.  Shaving a line off a cell changes as many pixels and no topology. */
TEST(metrics_split_merge_cells) {
    enum { H = 16, W = 29, N = H * W };
    static int32_t truth[N], split[N], merged[N], shaved[N];
    for (int y = 2; y < 14; y++)
        for (int x = 2; x < 27; x++) truth[y * W + x] = x != 14;
    memcpy(split, truth, sizeof truth);
    memcpy(merged, truth, sizeof truth);
    memcpy(shaved, truth, sizeof truth);
    for (int y = 2; y < 14; y++) {
        split[y * W + 8] = 0;     /* a membrane through the left cell */
        merged[y * W + 14] = 1;   /* no membrane between the cells */
        shaved[y * W + 2] = 0;    /* the left cell one column thinner */
    }
    unet_metrics ms = evaluate_ok(split, truth, NULL, NULL, H, W, 2);
    unet_metrics mm = evaluate_ok(merged, truth, NULL, NULL, H, W, 2);
    unet_metrics m0 = evaluate_ok(shaved, truth, NULL, NULL, H, W, 2);
    printf("       split: pixel %.4f rand %.4f | merged: pixel %.4f rand %.4f | shaved: pixel "
           "%.4f rand %.4f\n", ms.pixel_error, ms.rand_error, mm.pixel_error, mm.rand_error,
           m0.pixel_error, m0.rand_error);
    CHECK_METRIC(ms.pixel_error, 12.0 / N);
    CHECK_METRIC(mm.pixel_error, 12.0 / N);
    CHECK_METRIC(m0.pixel_error, 12.0 / N);
    /* Split: the left cell (144 px) becomes 6x12 + 5x12 + 12 singletons; the right one stays.
     * A = 2 * 144^2 = 41472, B = 72^2 + 60^2 + 12 + 144^2 = 5184 + 3600 + 12 + 20736 = 29532,
     * AB = B (no predicted object spans two cells).  Error = 1 - 2 AB / (A + B)
     * = (A - B) / (A + B) = 11940 / 71004. */
    CHECK_METRIC(ms.rand_error, 11940.0 / 71004.0);
    /* Merged: the 288 truth-foreground pixels are all in one predicted object.
     * A = 41472, B = 288^2 = 82944, AB = 41472; F = 82944 / 124416 = 2/3, error 1/3. */
    CHECK_METRIC(mm.rand_error, 1.0 / 3.0);
    /* Shaved: 12 singletons in the left cell, the rest intact.
     * A = 41472, B = 132^2 + 12 + 144^2 = 38172, AB = B; error = 3300 / 79644. */
    CHECK_METRIC(m0.rand_error, 3300.0 / 79644.0);
    CHECK(ms.rand_error > 3 * m0.rand_error && ms.rand_error > 5 * ms.pixel_error);
    CHECK(mm.rand_error > 6 * m0.rand_error && mm.rand_error > 10 * mm.pixel_error);
    CHECK_EQ(ms.n_pred, 3);
    CHECK_EQ(mm.n_pred, 1);
    /* Merged: the predicted object has 288 + 12 = 300 px; IoU 144/300 < 1/2 for both cells:
     * AP 0; each cell has |R & S| = 144 > 72: SEG = 144/300. */
    CHECK_METRIC(mm.ap50, 0.0);
    CHECK_METRIC(mm.seg, 144.0 / 300.0);
    /* Split: the 72-px part is exactly half the left cell: IoU 72/144 = 1/2 matches (>=), but
     * |R & S| = 72 is not > 144/2 for SEG.  AP: TP 2 (both cells), FP 1 (the 60-px part), FN 0
     * -> 2/3.  SEG: (0 + 1) / 2. */
    CHECK_METRIC(ms.ap50, 2.0 / 3.0);
    CHECK_METRIC(ms.seg, 0.5);
}

/* A 512x512 image with thousands of objects: the sort-based table has no n_true x n_pred
 * matrix.  Checks the result against the perfect-prediction values and stays fast. */
TEST(metrics_many_objects) {
    enum { H = 512, W = 512, N = H * W };
    int32_t *cls = calloc(N, sizeof *cls);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) cls[y * W + x] = (y % 4 != 0) && (x % 4 != 0);
    unet_metrics m = evaluate_ok(cls, cls, NULL, NULL, H, W, 2);
    CHECK_EQ(m.n_true, 128 * 128);
    CHECK_METRIC(m.rand_error, 0.0);
    CHECK_METRIC(m.seg, 1.0);
    CHECK_METRIC(m.ap50, 1.0);
    free(cls);
}

/* ---- arguments ---- */

TEST(bad_arguments) {
    unet_ctx *ctx = unet_ctx_create();
    const int32_t ok[4] = {0, 1, 1, 0}, bad_cls[4] = {0, 1, 2, 0}, neg[4] = {0, 1, -3, 0};
    int32_t lab[4];
    int count = 77;
    unet_metrics m;
    memset(&m, 0, sizeof m);
    m.n_true = 12345;

    CHECK_STATUS(unet_connected_components(ctx, ok, 2, 2, 1, 6, lab, &count), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "connectivity");
    CHECK_STATUS(unet_connected_components(ctx, ok, 0, 2, 1, 4, lab, &count), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "positive");
    CHECK_STATUS(unet_connected_components(ctx, ok, 2, -1, 1, 4, lab, &count), UNET_STATUS_ARG);
    CHECK_STATUS(unet_connected_components(ctx, NULL, 2, 2, 1, 4, lab, &count), UNET_STATUS_ARG);
    CHECK_STATUS(unet_connected_components(ctx, ok, 2, 2, 1, 4, NULL, &count), UNET_STATUS_ARG);
    CHECK_STATUS(unet_connected_components(ctx, ok, 2, 2, 1, 4, lab, NULL), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "NULL");
    CHECK_STATUS(unet_connected_components(ctx, ok, 65536, 65536, 1, 4, lab, &count),
                 UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "int32");
    CHECK_STATUS(unet_connected_components(NULL, ok, 2, 2, 1, 5, lab, &count), UNET_STATUS_ARG);
    CHECK_EQ(count, 77);   /* untouched on failure */

    CHECK_STATUS(unet_evaluate(ctx, NULL, ok, NULL, NULL, 2, 2, 2, &m), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "NULL");
    CHECK_STATUS(unet_evaluate(ctx, ok, ok, NULL, NULL, 2, 2, 2, NULL), UNET_STATUS_ARG);
    CHECK_STATUS(unet_evaluate(ctx, ok, ok, NULL, NULL, 0, 2, 2, &m), UNET_STATUS_ARG);
    CHECK_STATUS(unet_evaluate(ctx, ok, ok, NULL, NULL, 2, 2, 1, &m), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "classes");
    CHECK_STATUS(unet_evaluate(ctx, ok, ok, NULL, NULL, 2, 2, UNET_MAX_CLASSES + 1, &m),
                 UNET_STATUS_ARG);
    CHECK_STATUS(unet_evaluate(ctx, ok, ok, NULL, NULL, 65536, 65536, 2, &m), UNET_STATUS_ARG);
    CHECK_STATUS(unet_evaluate(ctx, bad_cls, ok, NULL, NULL, 2, 2, 2, &m), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "pred[2] (y 1, x 0) = 2");
    CHECK_STATUS(unet_evaluate(ctx, ok, neg, NULL, NULL, 2, 2, 2, &m), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "truth[2]");
    CHECK_STATUS(unet_evaluate(ctx, ok, ok, NULL, neg, 2, 2, 2, &m), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "truth_inst[2] (y 1, x 0) = -3");
    CHECK_STATUS(unet_evaluate(ctx, ok, ok, neg, NULL, 2, 2, 2, &m), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "pred_inst[2]");
    /* 3 classes: class 2 is valid there. */
    CHECK_STATUS(unet_evaluate(ctx, bad_cls, ok, NULL, NULL, 2, 2, 3, &m), UNET_STATUS_OK);
    unet_metrics m2 = m;
    m2.n_true = 12345;
    CHECK_STATUS(unet_evaluate(NULL, bad_cls, ok, NULL, NULL, 2, 2, 2, &m2), UNET_STATUS_ARG);
    CHECK_EQ(m2.n_true, 12345);   /* *out untouched on failure */
    unet_ctx_free(ctx);
}

/* ---- ISBI 2012 V_rand and V_info (unet_vscores) ---- */

/* unet_vscores at the given thresholds, failing the test on an error status. */
static void vscores_ok(const float *prob, const int32_t *truth, int inst, int h, int w, int thin,
                       const double *thr, int n_thr, unet_vscore *v) {
    unet_ctx   *ctx = unet_ctx_create();
    unet_status s = unet_vscores(ctx, prob, truth, inst, h, w, thin, thr, n_thr, v);
    if (s != UNET_STATUS_OK)
        HARNESS_FAIL_AT(__FILE__, __LINE__, "unet_vscores: %s: %s", unet_status_str(s),
                        unet_ctx_errmsg(ctx));
    unet_ctx_free(ctx);
}

TEST(vscores_thresholds) {
    /* Fiji's loop th += 0.1 from 0: eleven values, the fourth not 0.3, the last below 1. */
    double t[UNET_VSCORE_THRESHOLDS];
    unet_vscore_thresholds(t);
    CHECK(t[0] == 0.0);
    CHECK(t[3] == 0.1 + 0.1 + 0.1);
    CHECK(t[3] != 0.3);
    CHECK(t[5] == 0.5);
    CHECK(t[10] < 1.0 && t[10] > 0.9999999);
}

/* The challenge's pixel similarity (Fiji's PixelError), by hand on 2x3 pixels:
 *   truth  2 2 0      prob  .9 .2 .6
 *          0 3 0            .05 .8 .4    (instance ids count as positives: truth != 0)
 *   t = 0.5: positives {0, 2, 4}: tp 2 (0, 4), fp 1 (2), fn 1 (1): F = 4 / 6 = 2/3.
 *   t = 0.1: positives {0, 1, 2, 4, 5}: tp 3, fp 2, fn 0: F = 6 / 8 = 3/4.
 *   t = 0.0: all six: tp 3, fp 3: F = 6 / 9 = 2/3.   t = 0.9: none: tp 0, F = 0.
 * The best is 3/4 (t = 0.1): pixel error 1/4, whatever the thinning (it reads prob only).  Two
 * such images as a stack: the counts add, F at t = 0.5 stays 2/3. */
TEST(vscores_pixel_error_hand) {
    const int32_t truth[6] = {2, 2, 0, 0, 3, 0};
    const float   prob[6] = {.9f, .2f, .6f, .05f, .8f, .4f};
    const double  thr[4] = {0.5, 0.1, 0.0, 0.9};
    const double  want[4] = {2.0 / 3, 3.0 / 4, 2.0 / 3, 0.0};
    for (int thin = 0; thin < 2; thin++) {
        unet_vscore v[4];
        vscores_ok(prob, truth, 1, 2, 3, thin, thr, 4, v);
        for (int k = 0; k < 4; k++) CHECK_CLOSE(v[k].pixel_f, want[k], 1e-12, 0);
        CHECK(v[0].tp == 2 && v[0].fp == 1 && v[0].fn == 1);
        CHECK(v[1].tp == 3 && v[1].fp == 2 && v[1].fn == 0);
        CHECK(v[3].tp == 0 && v[3].fn == 3);
        CHECK_CLOSE(unet_pixel_f(2 * v[0].tp, 2 * v[0].fp, 2 * v[0].fn), 2.0 / 3, 1e-12, 0);
    }
    CHECK_EQ(unet_pixel_f(0, 5, 5), 0.0);
}

TEST(vscores_hand) {
    /* One row: truth 1 1 1 0 1 1 1 (objects T1 = {0,1,2}, T2 = {4,5,6}; n = 6 foreground
     * pixels, H(T) = ln 2), prob .9 .9 .2 .2 .9 .9 .9.
     *
     * t = 0.5, no thinning: cells {0,1} = P1 and {4,5,6} = P2; pixel 2 (truth T1) is proposal
     * background, a singleton; pixel 3 is truth background and does not count.
     *   Rand: A = 3^2 + 3^2 = 18, B = 2^2 + 3^2 + 1 = 14, AB = 2^2 + 3^2 + 1 = 14:
     *   split 14/18 = 7/9, merge 14/14 = 1, V_rand 2*14/32 = 7/8.
     *   Info: every proposal group lies in one truth object, so H(T|P) = 0 and I = H(T) = ln 2;
     *   H(P) = -(2/6 ln 2/6 + 1/6 ln 1/6 + 3/6 ln 3/6) = 1/2 ln 3 + 2/3 ln 2.
     *   merge I/H(T) = 1, split I/H(P), V_info = 2 split / (1 + split).
     * t = 0.5, thinned: Fiji's flood of the background {2, 3}: both enter the queue (2 next to
     *   P1, 3 next to P2; column order 2 then 3).  Pop 2: left P1 -> 2 takes P1; right 3 is
     *   queued: nothing.  Pop 3: left 2 is P1 -> 3 takes P1; right P2 differs -> 3 becomes a
     *   watershed line.  P1 = {0,1,2} = T1 and P2 = T2 (3 is truth background): all scores 1.
     * t = 0.1: every pixel is a cell, one object over all of it: Rand A = 18, B = 36, AB = 18:
     *   split 1, merge 1/2, V_rand 36/54 = 2/3; H(P) = 0: Fiji's merge 1, split 0, V_info 0.
     *   Thinning changes nothing (no background).
     * t = 0.95: no cell.  Unthinned: six singletons, A = 18, B = AB = 6: split 1/3, merge 1,
     *   V_rand 12/24 = 1/2; H(P) = H(T,P) = ln 6, I = ln 2: merge 1, split ln 2/ln 6,
     *   V_info = 2 ln 2 / (ln 6 + ln 2) = 2 ln 2 / ln 12.  Thinned: Fiji floods an image without
     *   cells as one basin: the same as t = 0.1. */
    const int32_t truth[7] = {1, 1, 1, 0, 1, 1, 1};
    const float   prob[7] = {.9f, .9f, .2f, .2f, .9f, .9f, .9f};
    const double  thr[3] = {0.5, 0.1, 0.95};
    unet_vscore   v[3], u[3];
    vscores_ok(prob, truth, 0, 1, 7, 1, thr, 3, v);
    vscores_ok(prob, truth, 0, 1, 7, 0, thr, 3, u);
    const double h_p = 0.5 * log(3.0) + 2.0 / 3.0 * log(2.0), split = log(2.0) / h_p;
    CHECK_METRIC(u[0].v_rand_split, 7.0 / 9.0);
    CHECK_METRIC(u[0].v_rand_merge, 1.0);
    CHECK_METRIC(u[0].v_rand, 7.0 / 8.0);
    CHECK_METRIC(u[0].v_info_merge, 1.0);
    CHECK_METRIC(u[0].v_info_split, split);
    CHECK_METRIC(u[0].v_info, 2.0 * split / (1.0 + split));
    CHECK_EQ(u[0].n_pred, 2);
    CHECK(u[0].threshold == 0.5);
    CHECK_METRIC(v[0].v_rand, 1.0);
    CHECK_METRIC(v[0].v_info, 1.0);
    CHECK_EQ(v[0].n_pred, 2);
    for (int k = 0; k < 2; k++) {
        const unet_vscore *x = k ? &u[1] : &v[1];
        CHECK_METRIC(x->v_rand_split, 1.0);
        CHECK_METRIC(x->v_rand_merge, 0.5);
        CHECK_METRIC(x->v_rand, 2.0 / 3.0);
        CHECK_METRIC(x->v_info_merge, 1.0);
        CHECK_METRIC(x->v_info_split, 0.0);
        CHECK_METRIC(x->v_info, 0.0);
    }
    CHECK_METRIC(v[2].v_rand, 2.0 / 3.0);
    CHECK_METRIC(v[2].v_info, 0.0);
    CHECK_EQ(v[2].n_pred, 1);
    CHECK_METRIC(u[2].v_rand_split, 1.0 / 3.0);
    CHECK_METRIC(u[2].v_rand, 0.5);
    CHECK_METRIC(u[2].v_info_split, log(2.0) / log(6.0));
    CHECK_METRIC(u[2].v_info, 2.0 * log(2.0) / log(12.0));
    CHECK_EQ(u[2].n_pred, 0);

    /* No truth foreground: NaN.  One truth object matched exactly: V_rand 1, and Fiji's V_info
     * 0 (H(T) = H(P) = 0). */
    const int32_t none[7] = {0};
    vscores_ok(prob, none, 0, 1, 7, 1, thr, 1, v);
    CHECK_METRIC(v[0].v_rand, NAN);
    CHECK_METRIC(v[0].v_info, NAN);
    const int32_t one[3] = {7, 7, 7};
    const float   p1[3] = {1, 1, 1};
    vscores_ok(p1, one, 1, 1, 3, 1, thr, 1, v);
    CHECK_METRIC(v[0].v_rand, 1.0);
    CHECK_METRIC(v[0].v_info, 0.0);
}

TEST(vscores_thinning_2d) {
    /* 4 x 5 (x across, y down); cells (prob 1) A top left, B bottom right; truth instances:
     *   prob 1 1 0 0 0      truth 1 1 1 2 2
     *        1 1 0 0 0            1 1 1 2 2
     *        0 0 0 1 1            1 1 2 2 2
     *        0 0 0 1 1            1 1 2 2 2
     * Fiji's queue, column by column, takes the background pixels next to a cell:
     * (0,2) (1,2) (2,0) (2,1) (2,2) (2,3) (3,1) (4,1).  Flooding (neighbours left, up, right,
     * down; `flag` one variable):
     *   (0,2): up A -> A, queues (0,3).  (1,2): left A -> A, queues (1,3).
     *   (2,0): left A -> A, queues (3,0).  (2,1): left A -> A.
     *   (2,2): left A -> A; right B differs -> line, flag = 0.
     *   (2,3): up (2,2) is a line -> line, flag = 1; right B and flag -> B.
     *   (3,1): left A -> A; down B differs -> line, flag = 0.
     *   (4,1): left (3,1) a line -> line, flag = 1, queues (4,0); down B and flag -> B.
     *   (0,3): up A -> A.  (1,3): left A -> A; right (2,3) is B -> line.
     *   (3,0): left A -> A.  (4,0): left A -> A; down (4,1) is B -> line.
     * Thinned:  A A A A .     truth 1 (10 px): A 9, one line pixel (1,3);
     *           A A A . B     truth 2 (10 px): A 1 ((3,0)), B 6, lines 3.
     *           A A . B B
     *           A . B B B
     * Rand: A_sum = 10^2 + 10^2 = 200; B_sum = (9 + 1)^2 + 6^2 + 4 singletons = 140;
     * AB = 9^2 + 1^2 + 6^2 + 4 = 122: split 122/200, merge 122/140, V_rand 244/340 = 61/85. */
    const float prob[20] = {1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 1};
    const int32_t truth[20] = {1, 1, 1, 2, 2, 1, 1, 1, 2, 2, 1, 1, 2, 2, 2, 1, 1, 2, 2, 2};
    const double thr = 0.5;
    unet_vscore v;
    vscores_ok(prob, truth, 1, 4, 5, 1, &thr, 1, &v);
    CHECK_METRIC(v.v_rand, 61.0 / 85.0);
    CHECK_METRIC(v.v_rand_split, 122.0 / 200.0);
    CHECK_METRIC(v.v_rand_merge, 122.0 / 140.0);
    CHECK_EQ(v.n_pred, 2);
}

/* The configuration of golden case c (up to 5 values) into cfg; false past the last case. */
static bool golden_case(const struct unet__safetensors *st, int c, long long cfg[5]) {
    char key[64];
    snprintf(key, sizeof key, "case%d.cfg", c);
    if (!unet__st_find(st, key)) return false;
    golden_ints(st, key, cfg, 5);
    return true;
}

/* The same partition: a bijection between the labels of a and b, 0 only with 0. */
static bool same_partition(const int32_t *a, const int32_t *b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if ((a[i] == 0) != (b[i] == 0)) return false;
        for (size_t j = 0; j < i; j++)
            if ((a[i] == a[j]) != (b[i] == b[j])) return false;
    }
    return true;
}

TEST(vscores_vs_numpy) {
    /* tests/golden/metrics_ref.safetensors (tools/metrics_ref.py): Fiji's thresholds, thinned
     * and not, and the thinned labels at one threshold, from a NumPy port of Fiji's code. */
    struct unet__safetensors *st = golden_open("metrics_ref");
    if (!st) return;
    double max_err = 0;
    int    v_cases = 0, seg_cases = 0;
    double seg_sum = 0, seg_sum_ref = 0, seg_objects = 0;
    long long cfg[5];
    for (int c = 0; golden_case(st, c, cfg); c++) {
        char key[64];
        const int h = (int)cfg[1], w = (int)cfg[2], inst = (int)cfg[3];
        const size_t n = (size_t)h * w;
        snprintf(key, sizeof key, "case%d.truth", c);
        float   *tf = golden_get(st, key, NULL);
        int32_t *truth = malloc(n * sizeof *truth);
        for (size_t i = 0; i < n; i++) truth[i] = (int32_t)tf[i];
        if (cfg[0] == 0) {
            snprintf(key, sizeof key, "case%d.prob", c);
            float *prob = golden_get(st, key, NULL);
            double thr[UNET_VSCORE_THRESHOLDS], want[UNET_VSCORE_THRESHOLDS * 7];
            unet_vscore_thresholds(thr);
            snprintf(key, sizeof key, "case%d.thr", c);
            double gthr[UNET_VSCORE_THRESHOLDS];
            CHECK_EQ(golden_doubles(st, key, gthr, UNET_VSCORE_THRESHOLDS),
                     UNET_VSCORE_THRESHOLDS);
            for (int k = 0; k < UNET_VSCORE_THRESHOLDS; k++) CHECK(gthr[k] == thr[k]);
            for (int thin = 0; thin < 2; thin++) {
                unet_vscore v[UNET_VSCORE_THRESHOLDS];
                vscores_ok(prob, truth, inst, h, w, thin, thr, UNET_VSCORE_THRESHOLDS, v);
                snprintf(key, sizeof key, "case%d.%s", c, thin ? "thin" : "nothin");
                golden_doubles(st, key, want, UNET_VSCORE_THRESHOLDS * 7);
                for (int k = 0; k < UNET_VSCORE_THRESHOLDS; k++) {
                    const double got[7] = {v[k].v_rand, v[k].v_rand_split, v[k].v_rand_merge,
                                           v[k].v_info, v[k].v_info_split, v[k].v_info_merge,
                                           v[k].n_pred};
                    for (int q = 0; q < 7; q++) {
                        CHECK_CLOSE(got[q], want[k * 7 + q], 1e-12, 1e-12);
                        if (fabs(got[q] - want[k * 7 + q]) > max_err)
                            max_err = fabs(got[q] - want[k * 7 + q]);
                    }
                }
            }
            free(prob);
            v_cases++;
        } else {
            snprintf(key, sizeof key, "case%d.pred", c);
            float   *pf = golden_get(st, key, NULL);
            int32_t *pred = malloc(n * sizeof *pred), *pc = malloc(n * sizeof *pc),
                    *tc = malloc(n * sizeof *tc);
            for (size_t i = 0; i < n; i++) {
                pred[i] = (int32_t)pf[i];
                pc[i] = pred[i] > 0;
                tc[i] = truth[i] > 0;
            }
            double want[3];
            snprintf(key, sizeof key, "case%d.seg", c);
            golden_doubles(st, key, want, 3);
            unet_metrics m = evaluate_ok(pc, tc, pred, truth, h, w, 2);
            CHECK_METRIC(m.seg, want[0]);
            CHECK_EQ(m.n_true, (int)want[2]);
            /* The CTC's SEG over several images: the mean over all their reference objects. */
            seg_sum += m.seg * m.n_true;
            seg_objects += m.n_true;
            seg_sum_ref += want[1];
            free(pf), free(pred), free(pc), free(tc);
            seg_cases++;
        }
        free(tf);
        free(truth);
    }
    CHECK(v_cases >= 5);
    CHECK(seg_cases >= 3);
    CHECK_CLOSE(seg_sum / seg_objects, seg_sum_ref / seg_objects, EXACT, EXACT);
    printf("       %d V-score cases x %d thresholds x 2, %d SEG cases: max abs diff %.3g\n",
           v_cases, UNET_VSCORE_THRESHOLDS, seg_cases, max_err);
    unet__st_close(st);
}

TEST(vscores_thinned_labels_vs_numpy) {
    /* The thinned proposal is the NumPy port's partition, pixel for pixel (label values
     * aside: Fiji numbers basins in its own order). */
    struct unet__safetensors *st = golden_open("metrics_ref");
    if (!st) return;
    int checked = 0;
    long long cfg[5];
    for (int c = 0; golden_case(st, c, cfg); c++) {
        char key[64];
        if (cfg[0] != 0) continue;
        const int h = (int)cfg[1], w = (int)cfg[2];
        const size_t n = (size_t)h * w;
        double thr[UNET_VSCORE_THRESHOLDS];
        unet_vscore_thresholds(thr);
        snprintf(key, sizeof key, "case%d.prob", c);
        float *prob = golden_get(st, key, NULL);
        snprintf(key, sizeof key, "case%d.thinned", c);
        float   *want_f = golden_get(st, key, NULL);
        int32_t *want = malloc(n * sizeof *want), *got = malloc(n * sizeof *got);
        for (size_t i = 0; i < n; i++) want[i] = (int32_t)want_f[i];
        CHECK_STATUS(unet__thin_proposal(NULL, prob, h, w, thr[cfg[4]], got), UNET_STATUS_OK);
        CHECK(same_partition(got, want, n));
        free(prob), free(want_f), free(want), free(got);
        checked++;
    }
    CHECK(checked >= 5);
    unet__st_close(st);
}

TEST(vscores_match_rand_error) {
    /* Without thinning, a class map as the proposal at threshold 0: V_rand = 1 - rand_error. */
    struct unet__rng rng;
    unet__rng_seed(&rng, 99);
    enum { H = 13, W = 17, N = H * W };
    int32_t t[N], p[N], tc[N], pc[N];
    float   pf[N];
    const double zero = 0.0;
    for (int rep = 0; rep < 100; rep++) {
        random_labels(&rng, t, H, W, 1 + rep % 4);
        random_labels(&rng, p, H, W, 1 + rep % 3);
        for (int i = 0; i < N; i++) tc[i] = t[i] > 0, pc[i] = p[i] > 0, pf[i] = (float)pc[i];
        unet_metrics m = evaluate_ok(pc, tc, NULL, NULL, H, W, 2);
        unet_vscore  v;
        vscores_ok(pf, tc, 0, H, W, 0, &zero, 1, &v);
        CHECK_METRIC(v.v_rand, 1.0 - m.rand_error);
        /* With the truth's instance labels as well. */
        m = evaluate_ok(pc, tc, NULL, t, H, W, 2);
        vscores_ok(pf, t, 1, H, W, 0, &zero, 1, &v);
        CHECK_METRIC(v.v_rand, 1.0 - m.rand_error);
    }
}

TEST(vscores_bad_arguments) {
    unet_ctx     *ctx = unet_ctx_create();
    const float   prob[4] = {0, 1, NAN, 0}, ok[4] = {0, 1, 1, 0};
    const int32_t truth[4] = {0, 1, 1, 0}, neg[4] = {0, -1, 1, 0};
    double        thr = 0.5, bad_thr = INFINITY;
    unet_vscore   v = {.threshold = 42};
    CHECK_STATUS(unet_vscores(ctx, NULL, truth, 0, 2, 2, 1, &thr, 1, &v), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "NULL");
    CHECK_STATUS(unet_vscores(ctx, ok, truth, 0, 2, 0, 1, &thr, 1, &v), UNET_STATUS_ARG);
    CHECK_STATUS(unet_vscores(ctx, ok, truth, 0, 65536, 65536, 1, &thr, 1, &v), UNET_STATUS_ARG);
    CHECK_STATUS(unet_vscores(ctx, ok, truth, 0, 2, 2, 1, &thr, 0, &v), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "n_thresholds");
    CHECK_STATUS(unet_vscores(ctx, ok, truth, 0, 2, 2, 1, &bad_thr, 1, &v), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "thresholds[0]");
    CHECK_STATUS(unet_vscores(ctx, prob, truth, 0, 2, 2, 1, &thr, 1, &v), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "prob[2] (y 1, x 0)");
    CHECK_STATUS(unet_vscores(ctx, ok, neg, 1, 2, 2, 1, &thr, 1, &v), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "truth[1]");
    CHECK(v.threshold == 42);   /* untouched on failure */
    unet_ctx_free(ctx);
}

int main(void) {
    RUN(cc_hand);
    RUN(cc_vs_flood_fill);
    RUN(cc_checkerboard_spiral);
    RUN(metrics_hand_binary);
    RUN(metrics_hand_multiclass);
    RUN(metrics_hand_split_merge);
    RUN(metrics_hand_half_iou);
    RUN(metrics_empty);
    RUN(metrics_vs_bruteforce);
    RUN(metrics_perfect);
    RUN(metrics_split_merge_cells);
    RUN(metrics_many_objects);
    RUN(bad_arguments);
    RUN(vscores_thresholds);
    RUN(vscores_hand);
    RUN(vscores_thinning_2d);
    RUN(vscores_vs_numpy);
    RUN(vscores_thinned_labels_vs_numpy);
    RUN(vscores_match_rand_error);
    RUN(vscores_bad_arguments);
    RUN(vscores_pixel_error_hand);
    return harness_finish();
}
