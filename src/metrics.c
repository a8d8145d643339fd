/* metrics.c — scoring a predicted segmentation against the truth (unet_evaluate).
 *
 * Pixel metrics (pixel error, per-class IoU and Dice) come from per-class counts in one pass.
 * The object metrics (ISBI 2012 Rand error, Cell Tracking Challenge SEG, AP at IoU 0.5) all come
 * from one contingency table of (truth object, predicted object) pixel counts.  There can be
 * thousands of objects, so the table is never a dense n_true x n_pred matrix: each truth
 * foreground pixel becomes a 64-bit key (truth id << 32 | predicted id), the keys are radix
 * sorted (O(n), 8-bit digits, digits on which all keys agree skipped) and each run of equal keys
 * is one non-zero cell c_ij.  Object sizes are plain arrays indexed by dense ids 1..K: connected
 * components are numbered densely already, and caller-given instance images (any non-negative
 * labels) are renumbered by sorting (label << 32 | pixel index).  Rejected: a hash map of pairs
 * (more code, and an order that depends on the hash, which the greedy AP matching below would
 * inherit); qsort (O(n log n) and a comparator call per comparison).
 *
 * Rand error (ISBI 2012, Arganda-Carreras et al. 2015, Front. Neuroanat. 9:142), as the
 * challenge's Fiji code computes it (Trainable Weka Segmentation, RandError.java,
 * getForegroundRestrictedRandIndexStatsN2): only pixels whose truth is foreground count; of them
 * c_ij lie in truth object i and predicted object j, and c_i0 are predicted background, each of
 * which counts as an object of its own (a singleton).  With t_i = sum_j c_ij (j >= 0),
 * s_j = sum_i c_ij (j >= 1) and S = sum_i c_i0, counting ordered pixel pairs (a pixel paired with
 * itself included, the "N^2 normalisation"):
 *     A  = sum_i t_i^2              pairs in the same truth object
 *     B  = sum_j s_j^2 + S          pairs in the same predicted object
 *     AB = sum_ij c_ij^2 + S        pairs in both
 *     precision = AB / B, recall = AB / A, F = 2PR / (P + R) = 2 AB / (A + B)
 *     rand_error = 1 - F.
 * Fiji takes the best F over thresholds of a probability map; here the prediction is already
 * thresholded, so it is that single F.  skimage.metrics.adapted_rand_error (SNEMI3D) differs: it
 * counts unordered pairs of distinct pixels and treats predicted label 0 as one object.  All
 * sums are exact in uint64 (each is at most n^2 < 2^62).
 *
 * AP at IoU 0.5 (StarDist "accuracy", Cellpose AP): TP / (TP + FP + FN) with a one-to-one
 * matching of pairs with IoU >= 0.5, where StarDist solves an assignment problem.  Greedy matching
 * is exact here: IoU(R, S) >= 1/2 needs |R & S| >= |R|/2 and >= |S|/2, so an object R can have two
 * partners S1, S2 (disjoint) only when both are exactly halves of R (S1, S2 inside R, IoU exactly
 * 1/2); then neither S1 nor S2 can have a second partner (that would need R inside S1).  So every
 * connected piece of the "IoU >= 1/2" graph is one edge or one object with two half-size
 * partners, and every maximal matching, greedy included, takes exactly one edge from each piece:
 * the maximum.  The test is exact in integers: IoU >= 1/2  <=>  3 |R & S| >= |R| + |S|.
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* LSD radix sort of n keys with 8-bit digits; a digit on which all keys agree costs nothing.
 * tmp holds n keys.  Returns the buffer that holds the sorted keys (keys or tmp). */
static uint64_t *radix_sort_u64(uint64_t *keys, uint64_t *tmp, size_t n) {
    size_t count[8][256];
    memset(count, 0, sizeof count);
    for (size_t i = 0; i < n; i++)
        for (int d = 0; d < 8; d++) count[d][(keys[i] >> (8 * d)) & 255]++;
    uint64_t *src = keys, *dst = tmp;
    for (int d = 0; d < 8; d++) {
        size_t *c = count[d];
        if (n == 0 || c[(src[0] >> (8 * d)) & 255] == n) continue;
        size_t sum = 0;
        for (int v = 0; v < 256; v++) {
            size_t cv = c[v];
            c[v] = sum;
            sum += cv;
        }
        for (size_t i = 0; i < n; i++) dst[c[(src[i] >> (8 * d)) & 255]++] = src[i];
        uint64_t *t = src;
        src = dst;
        dst = t;
    }
    return src;
}

/* Renumbers the non-zero labels of lab (n pixels, all >= 0) to 1..K in increasing label order,
 * 0 stays 0; *k gets K.  keys and tmp are scratch for n keys. */
static void relabel_dense(const int32_t *lab, size_t n, int32_t *out, uint64_t *keys,
                          uint64_t *tmp, int32_t *k) {
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        out[i] = 0;
        if (lab[i]) keys[m++] = (uint64_t)(uint32_t)lab[i] << 32 | i;
    }
    const uint64_t *s = radix_sort_u64(keys, tmp, m);
    int32_t id = 0;
    uint64_t prev = 0; /* no label is 0 here, so the first key starts a new id */
    for (size_t j = 0; j < m; j++) {
        if (s[j] >> 32 != prev) {
            prev = s[j] >> 32;
            id++;
        }
        out[s[j] & 0xffffffffu] = id;
    }
    *k = id;
}

/* Dense instance ids for one side: the caller's instance image renumbered, or the 4-connected
 * components of the foreground (class > 0) of the class map cls. */
static unet_status make_instances(unet_ctx *ctx, const int32_t *cls, const int32_t *inst, int h,
                                  int w, int32_t *out, uint64_t *keys, uint64_t *tmp,
                                  int32_t *k) {
    size_t n = (size_t)h * w;
    if (inst) {
        relabel_dense(inst, n, out, keys, tmp, k);
        return UNET_STATUS_OK;
    }
    for (size_t i = 0; i < n; i++) out[i] = cls[i] > 0;
    int count = 0;
    unet_status s = unet_connected_components(ctx, out, h, w, 1, 4, out, &count);
    *k = count;
    return s;
}

/* The first pixel of a class map outside [0, classes), or n when there is none. */
static size_t find_bad_class(const int32_t *cls, size_t n, int classes) {
    for (size_t i = 0; i < n; i++)
        if (cls[i] < 0 || cls[i] >= classes) return i;
    return n;
}

static size_t find_negative(const int32_t *lab, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (lab[i] < 0) return i;
    return n;
}

unet_status unet_evaluate(unet_ctx *ctx, const int32_t *pred, const int32_t *truth,
                          const int32_t *pred_inst, const int32_t *truth_inst, int h, int w,
                          int classes, unet_metrics *out) {
    if (!pred || !truth || !out)
        return unet__fail(ctx, UNET_STATUS_ARG, "evaluate: pred, truth and out must not be NULL");
    if (h <= 0 || w <= 0)
        return unet__fail(ctx, UNET_STATUS_ARG, "evaluate: size %dx%d (h x w) must be positive",
                          h, w);
    if (classes < 2 || classes > UNET_MAX_CLASSES)
        return unet__fail(ctx, UNET_STATUS_ARG, "evaluate: classes must be in [2, %d], got %d",
                          UNET_MAX_CLASSES, classes);
    size_t n;
    if (!unet__mul_size((size_t)h, (size_t)w, &n) || n > (size_t)INT32_MAX)
        return unet__fail(ctx, UNET_STATUS_ARG, "evaluate: %dx%d pixels exceed the int32 label "
                                                "range", h, w);

    const struct {
        const char    *name;
        const int32_t *a;
        bool           is_class;
    } inputs[4] = {{"pred", pred, true}, {"truth", truth, true},
                   {"pred_inst", pred_inst, false}, {"truth_inst", truth_inst, false}};
    for (int k = 0; k < 4; k++) {
        if (!inputs[k].a) continue;
        size_t i = inputs[k].is_class ? find_bad_class(inputs[k].a, n, classes)
                                      : find_negative(inputs[k].a, n);
        if (i == n) continue;
        if (inputs[k].is_class)
            return unet__fail(ctx, UNET_STATUS_ARG, "evaluate: %s[%zu] (y %zu, x %zu) = %d is not "
                              "a class id in [0, %d)", inputs[k].name, i, i / (size_t)w,
                              i % (size_t)w, (int)inputs[k].a[i], classes);
        return unet__fail(ctx, UNET_STATUS_ARG, "evaluate: %s[%zu] (y %zu, x %zu) = %d: instance "
                          "labels must be >= 0", inputs[k].name, i, i / (size_t)w, i % (size_t)w,
                          (int)inputs[k].a[i]);
    }

    unet_metrics m;
    memset(&m, 0, sizeof m);
    m.classes = classes;

    /* ---- pixel metrics ---- */
    uint64_t inter[UNET_MAX_CLASSES] = {0}, n_true[UNET_MAX_CLASSES] = {0},
             n_pred[UNET_MAX_CLASSES] = {0};
    uint64_t wrong = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t p = pred[i], t = truth[i];
        n_pred[p]++;
        n_true[t]++;
        if (p == t) inter[p]++;
        else wrong++;
    }
    m.pixel_error = (double)wrong / (double)n;
    int present = 0;
    double sum_iou = 0.0, sum_dice = 0.0;
    for (int c = 0; c < UNET_MAX_CLASSES; c++) {
        uint64_t both = c < classes ? n_true[c] + n_pred[c] : 0;
        if (both == 0) {
            m.iou[c] = m.dice[c] = NAN;
            continue;
        }
        m.iou[c] = (double)inter[c] / (double)(both - inter[c]);
        m.dice[c] = 2.0 * (double)inter[c] / (double)both;
        sum_iou += m.iou[c];
        sum_dice += m.dice[c];
        present++;
    }
    m.mean_iou = sum_iou / present; /* present >= 1: every pixel has a class */
    m.mean_dice = sum_dice / present;

    /* ---- scratch: one block ----
     * keys, tmp (n uint64): sort keys; tl, pl (n int32): dense truth / predicted instance ids;
     * t_size, p_size, p_size_fg (n + 1 uint32, ids are <= n): object sizes, the last one counted
     * on truth-foreground pixels only; p_matched (n + 1 bytes): AP matching. */
    size_t n1 = n + 1, bytes = 0;
    const size_t parts[][2] = {{n, 8}, {n, 8}, {n, 4}, {n, 4}, {n1, 4}, {n1, 4}, {n1, 4}, {n1, 1}};
    for (size_t k = 0; k < sizeof parts / sizeof parts[0]; k++) {
        size_t b;
        if (!unet__mul_size(parts[k][0], parts[k][1], &b) || !unet__add_size(bytes, b, &bytes))
            return unet__fail(ctx, UNET_STATUS_NOMEM, "evaluate: scratch size overflows");
    }
    unsigned char *block = malloc(bytes);
    if (!block)
        return unet__fail(ctx, UNET_STATUS_NOMEM, "evaluate: %zu bytes of scratch for %dx%d",
                          bytes, h, w);
    uint64_t *keys = (uint64_t *)block;
    uint64_t *tmp = keys + n;
    int32_t *tl = (int32_t *)(tmp + n);
    int32_t *pl = tl + n;
    uint32_t *t_size = (uint32_t *)(pl + n);
    uint32_t *p_size = t_size + n1;
    uint32_t *p_size_fg = p_size + n1;
    unsigned char *p_matched = (unsigned char *)(p_size_fg + n1);

    int32_t k_true = 0, k_pred = 0;
    unet_status st = make_instances(ctx, truth, truth_inst, h, w, tl, keys, tmp, &k_true);
    if (st == UNET_STATUS_OK)
        st = make_instances(ctx, pred, pred_inst, h, w, pl, keys, tmp, &k_pred);
    if (st != UNET_STATUS_OK) goto done;
    m.n_true = k_true;
    m.n_pred = k_pred;

    memset(t_size, 0, (size_t)(k_true + 1) * sizeof *t_size);
    memset(p_size, 0, (size_t)(k_pred + 1) * sizeof *p_size);
    memset(p_size_fg, 0, (size_t)(k_pred + 1) * sizeof *p_size_fg);
    memset(p_matched, 0, (size_t)k_pred + 1);

    /* Sizes, and one key per truth-foreground pixel: every metric below only looks at cells
     * with a truth object (predicted objects over truth background only enter through p_size). */
    size_t n_fg = 0;
    for (size_t i = 0; i < n; i++) {
        t_size[tl[i]]++;
        p_size[pl[i]]++;
        if (tl[i]) {
            p_size_fg[pl[i]]++;
            keys[n_fg++] = (uint64_t)(uint32_t)tl[i] << 32 | (uint32_t)pl[i];
        }
    }
    const uint64_t *cell = radix_sort_u64(keys, tmp, n_fg);

    /* One run of equal keys = one cell (i, j) with count c, in order of i, then j. */
    uint64_t same_both = 0, singles = 0; /* sum_ij c_ij^2 over j >= 1; sum_i c_i0 */
    double seg_sum = 0.0;
    int tp = 0;
    int32_t cur_t = 0;
    bool cur_t_matched = false;
    for (size_t r = 0, e; r < n_fg; r = e) {
        for (e = r + 1; e < n_fg && cell[e] == cell[r]; e++) {}
        uint64_t c = e - r;
        int32_t i = (int32_t)(cell[r] >> 32), j = (int32_t)(cell[r] & 0xffffffffu);
        if (i != cur_t) {
            cur_t = i;
            cur_t_matched = false;
        }
        if (j == 0) {
            singles += c;
            continue;
        }
        same_both += c * c;
        uint64_t ti = t_size[i], sj = p_size[j];
        /* CTC SEG: S matches R when |R & S| > |R| / 2, which at most one S can satisfy. */
        if (2 * c > ti) seg_sum += (double)c / (double)(ti + sj - c);
        /* AP: greedy one-to-one matching at IoU >= 1/2 (exact, see the top comment). */
        if (!cur_t_matched && !p_matched[j] && 3 * c >= ti + sj) {
            cur_t_matched = true;
            p_matched[j] = 1;
            tp++;
        }
    }

    if (n_fg == 0) {
        m.rand_error = NAN; /* no truth foreground: no pairs to score (Fiji divides 0 by 0) */
    } else {
        uint64_t same_true = 0, same_pred = singles;
        for (int32_t i = 1; i <= k_true; i++) same_true += (uint64_t)t_size[i] * t_size[i];
        for (int32_t j = 1; j <= k_pred; j++) same_pred += (uint64_t)p_size_fg[j] * p_size_fg[j];
        same_both += singles;
        m.rand_error = 1.0 - 2.0 * (double)same_both / ((double)same_true + (double)same_pred);
    }
    m.seg = k_true > 0 ? seg_sum / k_true : NAN;
    /* StarDist's accuracy: 0 when nothing matched, including when both images are empty. */
    m.ap50 = tp > 0 ? (double)tp / ((double)k_true + k_pred - tp) : 0.0;
    *out = m;

done:
    free(block);
    return st;
}
