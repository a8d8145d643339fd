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

/* One block of scratch for the contingency tables of n pixels: keys, tmp (n uint64, sort
 * keys); tl, pl (n int32, dense truth / predicted ids); fifo (n int32, the thinning's queue);
 * t_size, p_size, p_size_fg (n + 1 uint32; ids are <= n); p_matched (n + 1 bytes, AP). */
struct scratch {
    unsigned char *block;
    uint64_t      *keys, *tmp;
    int32_t       *tl, *pl, *fifo;
    uint32_t      *t_size, *p_size, *p_size_fg;
    unsigned char *p_matched;
};

static unet_status scratch_alloc(unet_ctx *ctx, const char *fn, size_t n, int h, int w,
                                 struct scratch *s) {
    size_t       n1 = n + 1, bytes = 0;
    const size_t parts[][2] = {{n, 8},  {n, 8},  {n, 4},  {n, 4}, {n, 4},
                               {n1, 4}, {n1, 4}, {n1, 4}, {n1, 1}};
    for (size_t k = 0; k < sizeof parts / sizeof parts[0]; k++) {
        size_t b;
        if (!unet__mul_size(parts[k][0], parts[k][1], &b) || !unet__add_size(bytes, b, &bytes))
            return unet__fail(ctx, UNET_STATUS_NOMEM, "%s: scratch size overflows", fn);
    }
    s->block = malloc(bytes);
    if (!s->block)
        return unet__fail(ctx, UNET_STATUS_NOMEM, "%s: %zu bytes of scratch for %dx%d", fn,
                          bytes, h, w);
    s->keys = (uint64_t *)s->block;
    s->tmp = s->keys + n;
    s->tl = (int32_t *)(s->tmp + n);
    s->pl = s->tl + n;
    s->fifo = s->pl + n;
    s->t_size = (uint32_t *)(s->fifo + n);
    s->p_size = s->t_size + n1;
    s->p_size_fg = s->p_size + n1;
    s->p_matched = (unsigned char *)(s->p_size_fg + n1);
    return UNET_STATUS_OK;
}

/* The contingency table of truth ids tl against predicted ids pl (n pixels): adds the object
 * sizes to t_size and p_size (all pixels) and p_size_fg (truth-foreground pixels only), and
 * returns one key (truth id << 32 | predicted id) per truth-foreground pixel, sorted, so each
 * run of equal keys is one cell c_ij; *n_fg gets their count.  keys and tmp hold n keys. */
static const uint64_t *contingency(const int32_t *tl, const int32_t *pl, size_t n,
                                   uint32_t *t_size, uint32_t *p_size, uint32_t *p_size_fg,
                                   uint64_t *keys, uint64_t *tmp, size_t *n_fg) {
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        t_size[tl[i]]++;
        p_size[pl[i]]++;
        if (tl[i]) {
            p_size_fg[pl[i]]++;
            keys[m++] = (uint64_t)(uint32_t)tl[i] << 32 | (uint32_t)pl[i];
        }
    }
    *n_fg = m;
    return radix_sort_u64(keys, tmp, m);
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
    size_t      n = 0;
    unet_status size_st = unet__check_label_args(ctx, "evaluate", pred && truth && out,
                                                 "pred, truth and out", h, w, &n);
    if (size_st != UNET_STATUS_OK) return size_st;
    if (classes < 2 || classes > UNET_MAX_CLASSES)
        return unet__fail(ctx, UNET_STATUS_ARG, "evaluate: classes must be in [2, %d], got %d",
                          UNET_MAX_CLASSES, classes);

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

    struct scratch sc;
    unet_status    st = scratch_alloc(ctx, "evaluate", n, h, w, &sc);
    if (st != UNET_STATUS_OK) return st;
    uint64_t *keys = sc.keys, *tmp = sc.tmp;
    int32_t  *tl = sc.tl, *pl = sc.pl;
    uint32_t *t_size = sc.t_size, *p_size = sc.p_size, *p_size_fg = sc.p_size_fg;
    unsigned char *p_matched = sc.p_matched;

    int32_t k_true = 0, k_pred = 0;
    st = make_instances(ctx, truth, truth_inst, h, w, tl, keys, tmp, &k_true);
    if (st == UNET_STATUS_OK)
        st = make_instances(ctx, pred, pred_inst, h, w, pl, keys, tmp, &k_pred);
    if (st != UNET_STATUS_OK) goto done;
    m.n_true = k_true;
    m.n_pred = k_pred;

    memset(t_size, 0, (size_t)(k_true + 1) * sizeof *t_size);
    memset(p_size, 0, (size_t)(k_pred + 1) * sizeof *p_size);
    memset(p_size_fg, 0, (size_t)(k_pred + 1) * sizeof *p_size_fg);
    memset(p_matched, 0, (size_t)k_pred + 1);

    /* Every metric below only looks at cells with a truth object (predicted objects over truth
     * background only enter through p_size). */
    size_t n_fg = 0;
    const uint64_t *cell = contingency(tl, pl, n, t_size, p_size, p_size_fg, keys, tmp, &n_fg);

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
    free(sc.block);
    return st;
}

/* ---- ISBI 2012: V_rand and V_info of a probability map (unet_vscores) ----
 *
 * The challenge's final scores, as its Fiji script computes them (Trainable Weka Segmentation:
 * RandError.getMaximalVRandAfterThinning, VariationOfInformation.getMaximalVInfoAfterThinning,
 * called with thresholds 0.0 to 1.0 in steps of 0.1).  At each threshold the proposal's cells
 * are the pixels with prob > threshold, its objects their 4-connected components.  "After
 * thinning" (the challenge's final version): the proposal's background is then flooded from
 * the cells by the classic watershed of Vincent and Soille (Fiji's WatershedTransform2D, 4-
 * connectivity, on the binary image: cells 0, background 255), so the background shrinks to
 * one-pixel watershed lines where two cells' floods meet.  Fiji's flooding order is kept:
 * pixels enter the queue column by column (x outer, y inner: ImageJ's pixel list), neighbours in
 * the order left, up, right, down, and its `flag` is one variable for the whole flood, as there.
 * Truth objects: 4-connected components of the truth's foreground (or the caller's instance
 * labels).  Only truth-foreground pixels count; among them c_ij lie in truth object i and
 * proposal object j, and a proposal background (or watershed line) pixel is an object of its own.
 * With a_i = sum_j c_ij, b_j = sum_i c_ij (j >= 1), S = sum_i c_i0 and n = sum_i a_i:
 *   Rand: A = sum a_i^2, B = sum b_j^2 + S, AB = sum c_ij^2 + S (the N^2 normalisation of
 *         RandError.foregroundRestrictedStatsN2); split = AB / A (recall), merge = AB / B
 *         (precision), V_rand = 2 AB / (A + B), their harmonic mean.
 *   Info: with p = count / n, H(T) = -sum p(a_i) ln p(a_i), H(P) = -sum p(b_j) ln p(b_j) +
 *         (S / n) ln n, H(T, P) = -sum p(c_ij) ln p(c_ij) + (S / n) ln n, the mutual information
 *         I = H(T) + H(P) - H(T, P); split = I / H(P), merge = I / H(T), V_info = their
 *         harmonic mean 2 I / (H(T) + H(P)).  As in Fiji: H(T) == 0 (one truth object) gives
 *         merge 0, split 1; H(P) == 0 (one proposal object) merge 1, split 0 (so V_info 0, even
 *         for a perfect single object); Fiji's NaN for I == 0 is 0 here.
 * The unthinned variant (thin = 0) is the earlier foreground-restricted Rand F-score; for a
 * class map as the proposal it is 1 - unet_evaluate's rand_error. */

void unet_vscore_thresholds(double t[UNET_VSCORE_THRESHOLDS]) {
    double th = 0.0; /* Fiji's loop: th += 0.1, so 0.30000000000000004, ..., 0.9999999999999999 */
    for (int k = 0; k < UNET_VSCORE_THRESHOLDS; k++, th += 0.1) t[k] = th;
}

enum { WS_LINE = 0, WS_MASK = -2, WS_INQUEUE = -3 };

/* Fiji's watershed thinning of the proposal background.  lab: the cells' components (> 0), the
 * background WS_MASK; on return background pixels hold the label of the cell that flooded them
 * or WS_LINE.  At least one cell exists (every background component then touches one, so no
 * pixel stays masked).  fifo holds n indices. */
static void thin_background(int32_t *lab, int h, int w, int32_t *fifo) {
    size_t head = 0, tail = 0;
    for (int x = 0; x < w; x++)
        for (int y = 0; y < h; y++) {
            const size_t i = (size_t)y * w + x;
            if (lab[i] != WS_MASK) continue;
            if ((x > 0 && lab[i - 1] > 0) || (y > 0 && lab[i - w] > 0) ||
                (x + 1 < w && lab[i + 1] > 0) || (y + 1 < h && lab[i + w] > 0)) {
                lab[i] = WS_INQUEUE;
                fifo[tail++] = (int32_t)i;
            }
        }
    bool flag = false;
    while (head < tail) {
        const size_t p = (size_t)fifo[head++];
        const int    y = (int)(p / (size_t)w), x = (int)(p % (size_t)w);
        const bool   in[4] = {x > 0, y > 0, x + 1 < w, y + 1 < h};
        const size_t nb[4] = {p - 1, p - (size_t)w, p + 1, p + (size_t)w};
        for (int k = 0; k < 4; k++) {
            if (!in[k]) continue;
            const size_t q = nb[k];
            if (lab[q] > 0) {
                if (lab[p] == WS_INQUEUE || (lab[p] == WS_LINE && flag)) {
                    lab[p] = lab[q];
                } else if (lab[p] > 0 && lab[p] != lab[q]) {
                    lab[p] = WS_LINE;
                    flag = false;
                }
            } else if (lab[q] == WS_LINE) {
                if (lab[p] == WS_INQUEUE) {
                    lab[p] = WS_LINE;
                    flag = true;
                }
            } else if (lab[q] == WS_MASK) {
                lab[q] = WS_INQUEUE;
                fifo[tail++] = (int32_t)q;
            }
        }
    }
}

/* The proposal's objects at threshold th: 4-connected components of prob > th, 0 elsewhere;
 * with thin, the background flooded as Fiji floods it (an image without cells becomes one
 * basin per background component).  *k gets the number of objects; fifo holds h * w ints. */
static unet_status proposal_labels(unet_ctx *ctx, const float *prob, int h, int w, double th,
                                   int thin, int32_t *pl, int32_t *fifo, int32_t *k) {
    const size_t n = (size_t)h * w;
    int          cells = 0;
    for (size_t i = 0; i < n; i++) pl[i] = prob[i] > th;
    unet_status st = unet_connected_components(ctx, pl, h, w, 1, 4, pl, &cells);
    if (st == UNET_STATUS_OK && thin && cells == 0) {
        st = unet_connected_components(ctx, pl, h, w, 0, 4, pl, &cells);
    } else if (st == UNET_STATUS_OK && thin) {
        for (size_t i = 0; i < n; i++)
            if (pl[i] == 0) pl[i] = WS_MASK;
        thin_background(pl, h, w, fifo);
    }
    *k = cells;
    return st;
}

unet_status unet__thin_proposal(unet_ctx *ctx, const float *prob, int h, int w, double th,
                                int32_t *labels) {
    int32_t *fifo = malloc((size_t)h * w * sizeof *fifo);
    if (!fifo) return unet__fail(ctx, UNET_STATUS_NOMEM, "thin_proposal: %dx%d", h, w);
    int32_t     k;
    unet_status st = proposal_labels(ctx, prob, h, w, th, 1, labels, fifo, &k);
    free(fifo);
    return st;
}

/* p ln p for p = count / n (0 for an empty count). */
static double plogp(uint64_t count, double n) {
    if (count == 0) return 0.0;
    const double p = (double)count / n;
    return p * log(p);
}

/* The scores from the sorted contingency keys (cell, n_fg of them), the truth object sizes
 * (ids 1..k_true) and the proposal sizes on truth foreground (ids 1..k_pred). */
static void vscore_from_table(const uint64_t *cell, size_t n_fg, const uint32_t *t_size,
                              int32_t k_true, const uint32_t *p_size_fg, int32_t k_pred,
                              unet_vscore *v) {
    if (n_fg == 0) { /* no truth foreground: no pairs (Fiji divides 0 by 0) */
        v->v_rand = v->v_rand_split = v->v_rand_merge = NAN;
        v->v_info = v->v_info_split = v->v_info_merge = NAN;
        return;
    }
    const double n = (double)n_fg;
    uint64_t     same_t = 0, same_p = 0, same_both = 0, singles = 0;
    double       sum_t = 0.0, sum_p = 0.0, sum_tp = 0.0; /* sums of p ln p */
    for (size_t r = 0, e; r < n_fg; r = e) {
        for (e = r + 1; e < n_fg && cell[e] == cell[r]; e++) {}
        const uint64_t c = e - r;
        if ((cell[r] & 0xffffffffu) == 0) {
            singles += c;
            continue;
        }
        same_both += c * c;
        sum_tp += plogp(c, n);
    }
    for (int32_t i = 1; i <= k_true; i++) {
        same_t += (uint64_t)t_size[i] * t_size[i];
        sum_t += plogp(t_size[i], n);
    }
    for (int32_t j = 1; j <= k_pred; j++) {
        same_p += (uint64_t)p_size_fg[j] * p_size_fg[j];
        sum_p += plogp(p_size_fg[j], n);
    }
    same_p += singles;
    same_both += singles;
    v->v_rand_split = (double)same_both / (double)same_t;
    v->v_rand_merge = (double)same_both / (double)same_p;
    v->v_rand = 2.0 * (double)same_both / ((double)same_t + (double)same_p);

    /* Fiji's arithmetic: each singleton is p ln p with p = 1 / n. */
    const double s_log = (double)singles / n * log(n);
    sum_p -= s_log;
    sum_tp -= s_log;
    const double h_t = -sum_t, h_p = -sum_p;
    const double h_t_given_p = sum_p - sum_tp, h_p_given_t = sum_t - sum_tp;
    double merge = (h_t - h_t_given_p) / h_t, split = (h_p - h_p_given_t) / h_p;
    if (h_t == 0) merge = 0.0, split = 1.0;
    if (h_p == 0) merge = 1.0, split = 0.0;
    v->v_info_merge = merge;
    v->v_info_split = split;
    v->v_info = merge + split > 0 ? 2.0 * merge * split / (merge + split) : 0.0;
}

/* The challenge's pixel similarity at th (Fiji's PixelError.precisionRecallStats): every pixel
 * counts, positive where truth != 0 and where prob > th. */
static void pixel_similarity(const float *prob, const int32_t *truth, size_t n, double th,
                             unet_vscore *v) {
    uint64_t tp = 0, fp = 0, fn = 0;
    for (size_t i = 0; i < n; i++) {
        const bool t = truth[i] != 0, p = prob[i] > th;
        tp += t && p, fp += !t && p, fn += t && !p;
    }
    v->tp = (double)tp, v->fp = (double)fp, v->fn = (double)fn;
    v->pixel_f = unet_pixel_f(v->tp, v->fp, v->fn);
}

double unet_pixel_f(double tp, double fp, double fn) {
    return tp > 0 ? 2.0 * tp / (2.0 * tp + fp + fn) : 0.0;
}

unet_status unet_vscores(unet_ctx *ctx, const float *prob, const int32_t *truth,
                         int truth_instances, int h, int w, int thin, const double *thresholds,
                         int n_thresholds, unet_vscore *out) {
    size_t      n = 0;
    unet_status size_st =
        unet__check_label_args(ctx, "vscores", prob && truth && thresholds && out,
                               "prob, truth, thresholds and out", h, w, &n);
    if (size_st != UNET_STATUS_OK) return size_st;
    if (n_thresholds < 1)
        return unet__fail(ctx, UNET_STATUS_ARG, "vscores: n_thresholds must be >= 1, got %d",
                          n_thresholds);
    for (int k = 0; k < n_thresholds; k++)
        if (!isfinite(thresholds[k]))
            return unet__fail(ctx, UNET_STATUS_ARG, "vscores: thresholds[%d] is not finite", k);
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(prob[i]))
            return unet__fail(ctx, UNET_STATUS_ARG, "vscores: prob[%zu] (y %zu, x %zu) is not "
                              "finite", i, i / (size_t)w, i % (size_t)w);
        if (truth[i] < 0)
            return unet__fail(ctx, UNET_STATUS_ARG, "vscores: truth[%zu] (y %zu, x %zu) = %d: "
                              "labels must be >= 0", i, i / (size_t)w, i % (size_t)w,
                              (int)truth[i]);
    }

    struct scratch sc;
    unet_status    st = scratch_alloc(ctx, "vscores", n, h, w, &sc);
    if (st != UNET_STATUS_OK) return st;
    uint64_t *keys = sc.keys, *tmp = sc.tmp;
    int32_t  *tl = sc.tl, *pl = sc.pl, *fifo = sc.fifo;
    uint32_t *t_size = sc.t_size, *p_size = sc.p_size, *p_size_fg = sc.p_size_fg;

    int32_t k_true = 0;
    st = make_instances(ctx, truth_instances ? NULL : truth,
                                    truth_instances ? truth : NULL, h, w, tl, keys, tmp, &k_true);
    for (int k = 0; k < n_thresholds && st == UNET_STATUS_OK; k++) {
        const double th = thresholds[k];
        int32_t      k_pred = 0;
        st = proposal_labels(ctx, prob, h, w, th, thin, pl, fifo, &k_pred);
        if (st != UNET_STATUS_OK) break;
        memset(t_size, 0, (size_t)(k_true + 1) * sizeof *t_size);
        memset(p_size, 0, (size_t)(k_pred + 1) * sizeof *p_size);
        memset(p_size_fg, 0, (size_t)(k_pred + 1) * sizeof *p_size_fg);
        size_t          n_fg = 0;
        const uint64_t *cell = contingency(tl, pl, n, t_size, p_size, p_size_fg, keys, tmp,
                                           &n_fg);
        unet_vscore v = {.threshold = th, .n_pred = k_pred};
        vscore_from_table(cell, n_fg, t_size, k_true, p_size_fg, k_pred, &v);
        pixel_similarity(prob, truth, n, th, &v);
        out[k] = v;
    }
    free(sc.block);
    return st;
}
