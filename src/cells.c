/* cells.c — separated-cell training targets (the paper's Fig. 3c) and their inverse, predicted
 * class map -> instance labels.
 *
 * unet_separate_cells: a cell pixel becomes border when a pixel of a different cell lies within
 * `gap` pixels in the Chebyshev sense (the (2 gap + 1)^2 square around it, i.e. `gap` steps of
 * 8-neighbourhood dilation).  Ids are compared, never used as indices, so any positive int32 id
 * works.  With background ignored, the square around a pixel of cell a holds another cell
 * exactly when its smallest id is below a or its largest id is above a (a itself is in the
 * square).  Square minima and maxima are separable: a sliding-window min/max along each row,
 * then along each column of the row results, each O(1) per pixel with a monotonic deque (the
 * window keeps the indices whose values could still be the extreme, in increasing order of
 * value).  So the cost is O(pixels) for any gap.  Rows, then columns, are split over threads;
 * each thread owns the pixels it writes.  Rejected: `gap` rounds of 3x3 min/max (O(pixels x
 * gap)), and a dense id -> index table (ids go up to 2^31 - 1).
 *
 * unet_instances: connected components (4-connectivity) of class 1, numbered 1..n in raster
 * order of their first pixel (unet_connected_components), then grown breadth-first in `grow`
 * synchronous steps over pixels of class 0 or 2 through the 8-neighbourhood, so `grow` steps
 * give back a border removed with gap = grow.  In step s every unlabelled growable pixel with a
 * labelled 8-neighbour takes a label decided from the labels of steps < s only: the smallest
 * label among its 4-neighbours, or when none is labelled, the smallest among its diagonal
 * neighbours.  A pixel reached by two cells in the same step therefore gets one of them, two
 * labels never merge, and the result does not depend on the order of the queue.  Growing also
 * widens a cell's outer edge into real background by up to `grow` pixels where no other cell
 * is near: a two-class map cannot tell that background from a removed border.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* out[i] = the smallest non-zero value (INT32_MAX when none) in in[j], |j - i| <= r, or with
 * `max` the largest (0 when none); n elements at stride `stride` in and out.  Values are
 * non-negative; 0 means "no cell" and is ignored by the minimum.  dq_i, dq_v (n each): the
 * deque of one pass. */
static void sliding_extreme(bool max, const int32_t *in, size_t stride, int n, int r,
                            int32_t *out, size_t out_stride, int32_t *dq_i, int32_t *dq_v) {
    int head = 0, tail = 0, next_in = 0;
    for (int i = 0; i < n; i++) {
        const int hi = n - 1 - i > r ? i + r : n - 1;
        for (; next_in <= hi; next_in++) {
            int32_t v = in[(size_t)next_in * stride];
            if (!max && v == 0) v = INT32_MAX;
            while (tail > head && (max ? dq_v[tail - 1] <= v : dq_v[tail - 1] >= v)) tail--;
            dq_i[tail] = next_in;
            dq_v[tail++] = v;
        }
        while (i - dq_i[head] > r) head++;
        out[(size_t)i * out_stride] = dq_v[head];
    }
}

/* The checks both entry points start with: the pointers (`pointers`, false when one named in
 * `names` is NULL), the h x w size (*n = h * w) and a radius that must not be negative. */
static unet_status check_args(unet_ctx *ctx, const char *what, bool pointers, const char *names,
                              int h, int w, const char *radius_name, int radius, size_t *n) {
    unet_status s = unet__check_label_args(ctx, what, pointers, names, h, w, n);
    if (s == UNET_STATUS_OK && radius < 0)
        s = unet__fail(ctx, UNET_STATUS_ARG, "%s: %s must be >= 0, got %d", what, radius_name,
                       radius);
    return s;
}

unet_status unet_separate_cells(unet_ctx *ctx, const int32_t *labels, int h, int w, int gap,
                                int classes, int32_t *target) {
    size_t n = 0;
    if (check_args(ctx, "separate_cells", labels && target, "labels and target", h, w, "gap", gap,
                   &n) != UNET_STATUS_OK)
        return UNET_STATUS_ARG;
    if (classes != 2 && classes != 3)
        return unet__fail(ctx, UNET_STATUS_ARG, "separate_cells: classes must be 2 or 3, got %d",
                          classes);
    for (size_t i = 0; i < n; i++)
        if (labels[i] < 0)
            return unet__fail(ctx, UNET_STATUS_ARG, "separate_cells: negative label %d at pixel "
                                                    "(y %zu, x %zu)",
                              (int)labels[i], i / (size_t)w, i % (size_t)w);
    const int32_t border = classes == 3 ? 2 : 0;
    if (gap == 0) {
        for (size_t i = 0; i < n; i++) target[i] = labels[i] != 0;
        return UNET_STATUS_OK;
    }

    /* Row minima and maxima (n each), then per thread: a column of minima and of maxima (h
     * each) and a deque of max(h, w) indices and values. */
    int          nt = unet__threads(ctx);
    const size_t line = (size_t)(h > w ? h : w);
    if (nt < 1) nt = 1;
    const size_t per_thread = 2 * (size_t)h + 2 * line;
    int32_t     *row_min = malloc(n * sizeof *row_min);
    int32_t     *row_max = malloc(n * sizeof *row_max);
    int32_t     *tmp = malloc(per_thread * (size_t)nt * sizeof *tmp);
    if (!row_min || !row_max || !tmp) {
        free(row_min), free(row_max), free(tmp);
        return unet__fail(ctx, UNET_STATUS_NOMEM, "separate_cells: %zu pixels", n);
    }

#pragma omp parallel num_threads(nt)
    {
#ifdef _OPENMP
        int32_t *t = tmp + (size_t)omp_get_thread_num() * per_thread;
#else
        int32_t *t = tmp;
#endif
        int32_t *col_min = t, *col_max = t + h, *dq_i = t + 2 * (size_t)h, *dq_v = dq_i + line;
#pragma omp for schedule(static)
        for (int y = 0; y < h; y++) {
            const size_t row = (size_t)y * w;
            sliding_extreme(false, labels + row, 1, w, gap, row_min + row, 1, dq_i, dq_v);
            sliding_extreme(true, labels + row, 1, w, gap, row_max + row, 1, dq_i, dq_v);
        }
        /* Implicit barrier: all rows are done before any column starts.  target may be labels
         * itself: from here on labels[i] is read once, just before target[i] is written. */
#pragma omp for schedule(static)
        for (int x = 0; x < w; x++) {
            sliding_extreme(false, row_min + x, (size_t)w, h, gap, col_min, 1, dq_i, dq_v);
            sliding_extreme(true, row_max + x, (size_t)w, h, gap, col_max, 1, dq_i, dq_v);
            for (int y = 0; y < h; y++) {
                const size_t  i = (size_t)y * w + x;
                const int32_t a = labels[i];
                target[i] = a == 0 ? 0 : (col_min[y] < a || col_max[y] > a) ? border : 1;
            }
        }
    }
    free(row_min);
    free(row_max);
    free(tmp);
    return UNET_STATUS_OK;
}

/* Label for a pixel reached in this growing step: the smallest positive label among the
 * 4-neighbours, else among the diagonal neighbours.  Pending pixels (-1) and unlabelled ones
 * (0) do not count, so only labels of earlier steps decide. */
static int32_t grown_label(const int32_t *labels, int h, int w, size_t i) {
    const int y = (int)(i / (size_t)w), x = (int)(i % (size_t)w);
    static const int d4[4][2] = {{-1, 0}, {0, -1}, {0, 1}, {1, 0}};
    static const int dd[4][2] = {{-1, -1}, {-1, 1}, {1, -1}, {1, 1}};
    for (int pass = 0; pass < 2; pass++) {
        const int(*d)[2] = pass == 0 ? d4 : dd;
        int32_t best = 0;
        for (int k = 0; k < 4; k++) {
            const int yy = y + d[k][0], xx = x + d[k][1];
            if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
            const int32_t l = labels[(size_t)yy * w + xx];
            if (l > 0 && (best == 0 || l < best)) best = l;
        }
        if (best > 0) return best;
    }
    UNET_ASSERT(0);
    return 0;
}

unet_status unet_instances(unet_ctx *ctx, const int32_t *classes_map, int h, int w, int grow,
                           int32_t *labels, int *count) {
    size_t n = 0;
    if (check_args(ctx, "instances", classes_map && labels && count,
                   "classes_map, labels and count", h, w, "grow", grow, &n) != UNET_STATUS_OK)
        return UNET_STATUS_ARG;

    /* Which pixels may be grown into, taken before labels (possibly classes_map itself) is
     * overwritten. */
    unsigned char *growable = NULL;
    int32_t       *queue = NULL;
    if (grow > 0) {
        growable = malloc(n);
        queue = malloc(3 * n * sizeof *queue);
        if (!growable || !queue) {
            free(growable), free(queue);
            return unet__fail(ctx, UNET_STATUS_NOMEM, "instances: %zu pixels", n);
        }
        for (size_t i = 0; i < n; i++) growable[i] = classes_map[i] == 0 || classes_map[i] == 2;
    }

    int         cells = 0;
    unet_status st = unet_connected_components(ctx, classes_map, h, w, 1, 4, labels, &cells);
    if (st != UNET_STATUS_OK || grow == 0) goto done;

    /* cur: pixels labelled in the previous step (at first: labelled pixels next to a growable
     * one); nxt: pixels reached in this step; lab: their decided labels. */
    int32_t *cur = queue, *nxt = queue + n, *lab = queue + 2 * n;
    size_t   n_cur = 0;
    for (size_t i = 0; i < n; i++) {
        if (labels[i] == 0) continue;
        const int y = (int)(i / (size_t)w), x = (int)(i % (size_t)w);
        bool      edge = false;
        for (int yy = y - 1; yy <= y + 1 && !edge; yy++)
            for (int xx = x - 1; xx <= x + 1 && !edge; xx++) {
                if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
                const size_t j = (size_t)yy * w + xx;
                edge = labels[j] == 0 && growable[j];
            }
        if (edge) cur[n_cur++] = (int32_t)i;
    }
    for (int step = 0; step < grow && n_cur > 0; step++) {
        size_t n_nxt = 0;
        for (size_t k = 0; k < n_cur; k++) {
            const size_t i = (size_t)cur[k];
            const int    y = (int)(i / (size_t)w), x = (int)(i % (size_t)w);
            for (int yy = y - 1; yy <= y + 1; yy++)
                for (int xx = x - 1; xx <= x + 1; xx++) {
                    if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
                    const size_t j = (size_t)yy * w + xx;
                    if (labels[j] != 0 || !growable[j]) continue;
                    labels[j] = -1;   /* pending: queued once */
                    nxt[n_nxt++] = (int32_t)j;
                }
        }
        for (size_t k = 0; k < n_nxt; k++) lab[k] = grown_label(labels, h, w, (size_t)nxt[k]);
        for (size_t k = 0; k < n_nxt; k++) labels[nxt[k]] = lab[k];
        int32_t *t = cur;
        cur = nxt;
        nxt = t;
        n_cur = n_nxt;
    }

done:
    free(growable);
    free(queue);
    if (st == UNET_STATUS_OK) *count = cells;
    return st;
}
