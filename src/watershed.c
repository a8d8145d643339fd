/* watershed.c — instance labels that separate touching cells: a seeded watershed.
 *
 * unet_watershed: marker-controlled flooding by a priority queue (Meyer's algorithm, as
 * skimage.segmentation.watershed runs it with connectivity 1).  The marker pixels enter the
 * queue in raster order; the pixel with the lowest (elevation, queue order) leaves it, and each
 * of its unlabelled 4-neighbours inside the mask (up, left, right, down) takes its label at
 * once and enters the queue.  The queue order breaks ties: on a plateau of equal elevation the
 * labels advance breadth-first, so two seeds share a plateau by (city-block) distance, and the
 * result depends on nothing but the inputs.  Each pixel enters the queue once: O(n log n) with
 * a binary heap of 16-byte entries (the key packs the elevation's order-preserving bits above
 * the 32-bit queue order, so one integer comparison decides).  unet__watershed_ref is the same
 * flood with the queue's minimum found by a linear scan: O(n^2), the definition the heap is
 * tested against.
 *
 * unet_segment_instances, method watershed: seeds are the class-1 interiors (the cells as the
 * paper's recipe predicts them, with the separation strip between touching cells) eroded by
 * `erode` pixels (a square of side 2 erode + 1: the chessboard distance to the nearest
 * non-cell pixel of the image must exceed erode), which cuts the thin bridges the network left
 * between touching cells; each 4-connected piece is a seed.  In a cell component that erosion
 * would leave without a seed, each piece of sure pixels keeps its deepest pixels instead
 * (depth > D - 1, D its greatest depth: the erosion adapts to small cells, and two small
 * touching cells still get a seed each; a piece under min_size pixels gives none there), and a
 * cell component without any seed is a seed as a whole, so small cells are not lost.  The seeds then flood the
 * cells and the pixels within `grow` steps of them (4-neighbour steps through class 0 or 2, as
 * unet_instances gives back the separation strip) in the order of the elevation 1 - p(cell):
 * the strip between two cells, where the network is least sure, is flooded last and split
 * where the two floods meet.  Without probabilities the elevation is the negative chessboard
 * depth in the cells (their centres first) and the step count outside them.  Finally objects of
 * fewer than min_size pixels are removed and the rest numbered 1..n in raster order of their
 * first pixel (method cc keeps unet_instances' order, so min_size 0 gives its labels).
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct heap_entry {
    uint64_t key; /* elevation bits << 32 | queue order */
    int32_t  pixel;
};

/* Order-preserving bits of a finite float (-0 as +0): a < b exactly when bits(a) < bits(b). */
static uint32_t order_bits(float f) {
    if (f == 0.0f) f = 0.0f;
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (u & 0x80000000u) ? ~u : u | 0x80000000u;
}

static void heap_push(struct heap_entry *h, size_t *n, uint64_t key, int32_t pixel) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h[parent].key <= key) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i].key = key;
    h[i].pixel = pixel;
}

static struct heap_entry heap_pop(struct heap_entry *h, size_t *n) {
    struct heap_entry top = h[0], last = h[--*n];
    size_t            i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && h[c + 1].key < h[c].key) c++;
        if (last.key <= h[c].key) break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0) h[i] = last;
    return top;
}

static unet_status check_flood_args(unet_ctx *ctx, const char *fn, const float *elevation,
                                    const int32_t *markers, int h, int w, int32_t *labels,
                                    size_t *n_out) {
    size_t      n = 0;
    unet_status size_st =
        unet__check_label_args(ctx, fn, markers && labels, "markers and labels", h, w, &n);
    if (size_st != UNET_STATUS_OK) return size_st;
    for (size_t i = 0; i < n; i++) {
        if (markers[i] < 0)
            return unet__fail(ctx, UNET_STATUS_ARG, "%s: markers[%zu] (y %zu, x %zu) = %d must "
                              "be >= 0", fn, i, i / (size_t)w, i % (size_t)w, (int)markers[i]);
        if (elevation && !isfinite(elevation[i]))
            return unet__fail(ctx, UNET_STATUS_ARG, "%s: elevation[%zu] (y %zu, x %zu) is not "
                              "finite", fn, i, i / (size_t)w, i % (size_t)w);
    }
    *n_out = n;
    return UNET_STATUS_OK;
}

/* The 4-neighbours of p in the flood's order (up, left, right, down); returns their count. */
static int neighbours4(size_t p, int h, int w, size_t nb[4]) {
    const int y = (int)(p / (size_t)w), x = (int)(p % (size_t)w);
    int       k = 0;
    if (y > 0) nb[k++] = p - (size_t)w;
    if (x > 0) nb[k++] = p - 1;
    if (x + 1 < w) nb[k++] = p + 1;
    if (y + 1 < h) nb[k++] = p + (size_t)w;
    return k;
}

static uint64_t flood_key(const float *elevation, size_t p, uint32_t order) {
    return (uint64_t)(elevation ? order_bits(elevation[p]) : 0u) << 32 | order;
}

unet_status unet_watershed(unet_ctx *ctx, const float *elevation, const int32_t *markers,
                           const unsigned char *mask, int h, int w, int32_t *labels) {
    size_t      n = 0;
    unet_status st = check_flood_args(ctx, "watershed", elevation, markers, h, w, labels, &n);
    if (st != UNET_STATUS_OK) return st;
    struct heap_entry *heap = malloc(n * sizeof *heap);
    if (!heap) return unet__fail(ctx, UNET_STATUS_NOMEM, "watershed: %dx%d pixels", h, w);
    for (size_t i = 0; i < n; i++) labels[i] = mask && !mask[i] ? 0 : markers[i];
    size_t   size = 0;
    uint32_t order = 0;
    for (size_t i = 0; i < n; i++)
        if (labels[i] > 0) heap_push(heap, &size, flood_key(elevation, i, order++), (int32_t)i);
    while (size > 0) {
        const size_t p = (size_t)heap_pop(heap, &size).pixel;
        size_t       nb[4];
        for (int j = 0, m = neighbours4(p, h, w, nb); j < m; j++) {
            const size_t q = nb[j];
            if (labels[q] != 0 || (mask && !mask[q])) continue;
            labels[q] = labels[p];
            heap_push(heap, &size, flood_key(elevation, q, order++), (int32_t)q);
        }
    }
    free(heap);
    return UNET_STATUS_OK;
}

unet_status unet__watershed_ref(unet_ctx *ctx, const float *elevation, const int32_t *markers,
                                const unsigned char *mask, int h, int w, int32_t *labels) {
    size_t      n = 0;
    unet_status st = check_flood_args(ctx, "watershed_ref", elevation, markers, h, w, labels, &n);
    if (st != UNET_STATUS_OK) return st;
    uint64_t *key = malloc(n * sizeof *key); /* UINT64_MAX: not in the queue */
    if (!key) return unet__fail(ctx, UNET_STATUS_NOMEM, "watershed_ref: %dx%d pixels", h, w);
    uint32_t order = 0;
    for (size_t i = 0; i < n; i++) {
        labels[i] = mask && !mask[i] ? 0 : markers[i];
        key[i] = labels[i] > 0 ? flood_key(elevation, i, order++) : UINT64_MAX;
    }
    for (;;) {
        size_t p = n;
        for (size_t i = 0; i < n; i++)
            if (key[i] != UINT64_MAX && (p == n || key[i] < key[p])) p = i;
        if (p == n) break;
        key[p] = UINT64_MAX;
        size_t nb[4];
        for (int j = 0, m = neighbours4(p, h, w, nb); j < m; j++) {
            if (labels[nb[j]] != 0 || (mask && !mask[nb[j]])) continue;
            labels[nb[j]] = labels[p];
            key[nb[j]] = flood_key(elevation, nb[j], order++);
        }
    }
    free(key);
    return UNET_STATUS_OK;
}

unet_instance_opts unet_instance_defaults(void) {
    unet_instance_opts o = {.method = UNET_INSTANCES_WATERSHED, .grow = 2, .erode = 8,
                            .min_size = 256, .seed_threshold = 0.8f};
    return o;
}

/* Removes objects of fewer than min_size pixels and numbers the rest 1..n, in raster order of
 * their first pixel (raster) or keeping the labels' order; *count gets n.  Labels are 0..k;
 * size and id hold k + 1 entries. */
static void keep_large(int32_t *labels, size_t n, int32_t k, int min_size, bool raster,
                       uint32_t *size, int32_t *id, int *count) {
    memset(size, 0, (size_t)(k + 1) * sizeof *size);
    for (size_t i = 0; i < n; i++) size[labels[i]]++;
    int32_t next = 0;
    id[0] = 0;
    for (int32_t j = 1; j <= k; j++) id[j] = raster ? -1 : size[j] < (uint32_t)min_size ? 0 : ++next;
    for (size_t i = 0; i < n; i++) {
        const int32_t l = labels[i];
        if (id[l] < 0) id[l] = size[l] < (uint32_t)min_size ? 0 : ++next;
        labels[i] = id[l];
    }
    *count = next;
}

/* Chessboard distance of each pixel of the set (in[i] == 1) to the nearest pixel of the image
 * outside it (0 outside; INT32_MAX / 2 when there is none): two raster passes. */
static void chessboard_depth(const int32_t *in, int h, int w, int32_t *d) {
    const int32_t far = INT32_MAX / 2;
    for (int pass = 0; pass < 2; pass++) {
        const int step = pass ? -1 : 1;
        for (int yi = 0; yi < h; yi++) {
            const int y = pass ? h - 1 - yi : yi;
            for (int xi = 0; xi < w; xi++) {
                const int    x = pass ? w - 1 - xi : xi;
                const size_t i = (size_t)y * w + x;
                if (in[i] != 1) {
                    d[i] = 0;
                    continue;
                }
                int32_t best = pass ? d[i] : far;
                /* the already visited half of the 8-neighbourhood */
                const int dy[4] = {0, -step, -step, -step}, dx[4] = {-step, -1, 0, 1};
                for (int k = 0; k < 4; k++) {
                    const int yy = y + dy[k], xx = x + dx[k];
                    if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
                    const int32_t v = d[(size_t)yy * w + xx] + 1;
                    if (v < best) best = v;
                }
                d[i] = best;
            }
        }
    }
}

unet_status unet_segment_instances(unet_ctx *ctx, const int32_t *classes_map, const float *prob,
                                   int h, int w, const unet_instance_opts *opts, int32_t *labels,
                                   int *count) {
    size_t      n = 0;
    unet_status size_st =
        unet__check_label_args(ctx, "segment_instances", classes_map && opts && labels && count,
                               "classes_map, opts, labels and count", h, w, &n);
    if (size_st != UNET_STATUS_OK) return size_st;
    if (opts->method != UNET_INSTANCES_CC && opts->method != UNET_INSTANCES_WATERSHED)
        return unet__fail(ctx, UNET_STATUS_ARG, "segment_instances: unknown method %d",
                          (int)opts->method);
    if (opts->grow < 0 || opts->erode < 0 || opts->min_size < 0 ||
        !(opts->seed_threshold >= 0 && opts->seed_threshold < 1))
        return unet__fail(ctx, UNET_STATUS_ARG, "segment_instances: grow (%d), erode (%d) and "
                          "min_size (%d) must be >= 0, seed_threshold (%g) in [0, 1)",
                          opts->grow, opts->erode, opts->min_size,
                          (double)opts->seed_threshold);
    if (prob) {
        size_t i = unet__first_nonfinite(prob, n, false);
        if (i < n)
            return unet__fail(ctx, UNET_STATUS_ARG, "segment_instances: prob[%zu] (y %zu, x %zu) "
                              "is not finite", i, i / (size_t)w, i % (size_t)w);
    }

    /* Scratch: a (n int32): depth, then steps; b (n int32): markers; c (n int32): cell
     * components; elev (n float); region (n bytes); queue (n int32); size, id (n + 2 each). */
    int32_t       *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b),
                  *c = malloc(n * sizeof *c);
    float         *elev = malloc(n * sizeof *elev);
    unsigned char *region = malloc(n);
    int32_t       *queue = malloc(n * sizeof *queue);
    uint32_t      *size = malloc((n + 2) * sizeof *size), *area = malloc((n + 2) * sizeof *area);
    int32_t       *id = malloc((n + 2) * sizeof *id);
    int            k = 0;
    unet_status    st = UNET_STATUS_OK;
    if (!a || !b || !c || !elev || !region || !queue || !size || !area || !id) {
        st = unet__fail(ctx, UNET_STATUS_NOMEM, "segment_instances: %dx%d pixels", h, w);
        goto done;
    }
    if (opts->method == UNET_INSTANCES_CC) {
        st = unet_instances(ctx, classes_map, h, w, opts->grow, a, &k);
        if (st != UNET_STATUS_OK) goto done;
        memcpy(labels, a, n * sizeof *labels);
        keep_large(labels, n, k, opts->min_size, false, size, id, count);
        goto done;
    }

    /* Seeds: the sure cell pixels (class 1, prob > seed_threshold) deeper than erode in them;
     * in a cell component where none is that deep, the deepest pixels of each of its pieces of
     * sure pixels (depth > D - 1, D the piece's greatest depth), so small touching cells joined
     * by a bridge shallower than their centres still get a seed each; a cell component without
     * sure pixels is a seed as a whole.  Each 4-connected piece of seed pixels is a seed. */
    int sure = 0, cells = 0, seeds = 0;
    for (size_t i = 0; i < n; i++)
        b[i] = classes_map[i] == 1 && (!prob || prob[i] > opts->seed_threshold);
    chessboard_depth(b, h, w, a);
    st = unet_connected_components(ctx, b, h, w, 1, 4, queue, &sure);
    if (st == UNET_STATUS_OK) st = unet_connected_components(ctx, classes_map, h, w, 1, 4, c, &cells);
    if (st != UNET_STATUS_OK) goto done;
    memset(size, 0, (size_t)(sure + 1) * sizeof *size); /* greatest depth per piece */
    memset(id, 0, (size_t)(cells + 1) * sizeof *id);    /* 1: the component has a deep pixel */
    for (size_t i = 0; i < n; i++) {
        elev[i] = prob ? 1.0f - prob[i] : (float)-a[i];
        if (queue[i] && (uint32_t)a[i] > size[queue[i]]) size[queue[i]] = (uint32_t)a[i];
        if (a[i] > opts->erode) id[c[i]] = 1;
    }
    /* Pieces under min_size pixels give no seed of their own (noise in the probabilities). */
    memset(area, 0, (size_t)(sure + 1) * sizeof *area);
    for (size_t i = 0; i < n; i++) area[queue[i]]++;
    for (size_t i = 0; i < n; i++)
        b[i] = queue[i] && a[i] > (id[c[i]] ? opts->erode : (int32_t)size[queue[i]] - 1) &&
               (id[c[i]] || area[queue[i]] >= (uint32_t)opts->min_size);
    st = unet_connected_components(ctx, b, h, w, 1, 4, b, &seeds);
    if (st != UNET_STATUS_OK) goto done;
    /* A cell component without a seed is a seed of its own (labels after the seeds'). */
    memset(id, 0, (size_t)(cells + 1) * sizeof *id);
    for (size_t i = 0; i < n; i++)
        if (b[i]) id[c[i]] = 1;
    int32_t next = seeds;
    for (int32_t k2 = 1; k2 <= cells; k2++) id[k2] = id[k2] ? 0 : ++next;
    for (size_t i = 0; i < n; i++)
        if (c[i] && id[c[i]]) b[i] = id[c[i]];

    /* The region: the cells and up to grow 4-neighbour steps from them through class 0 or 2. */
    size_t head = 0, tail = 0;
    for (size_t i = 0; i < n; i++) {
        region[i] = classes_map[i] == 1;
        a[i] = region[i] ? 0 : -1; /* steps from the cells */
        if (region[i]) queue[tail++] = (int32_t)i;
    }
    while (head < tail) {
        const size_t p = (size_t)queue[head++];
        if (a[p] >= opts->grow) continue;
        size_t nb[4];
        for (int j = 0, m = neighbours4(p, h, w, nb); j < m; j++) {
            const size_t q = nb[j];
            if (a[q] >= 0 || (classes_map[q] != 0 && classes_map[q] != 2)) continue;
            a[q] = a[p] + 1;
            region[q] = 1;
            if (!prob) elev[q] = (float)a[q];
            queue[tail++] = (int32_t)q;
        }
    }
    st = unet_watershed(ctx, elev, b, region, h, w, labels);
    if (st == UNET_STATUS_OK) keep_large(labels, n, next, opts->min_size, true, size, id, count);

done:
    free(a), free(b), free(c), free(elev), free(region), free(queue), free(size), free(area), free(id);
    return st;
}
