/* labels.c — connected components of a label image (4- or 8-connectivity).
 *
 * Two raster passes with union-find (Rosenfeld & Pfaltz).  Pass 1 gives every pixel of the set a
 * provisional label: the label of an already visited neighbour (left, up; with 8-connectivity
 * also up-left and up-right), or a new one when none is in the set, and records in a parent
 * array that two provisional labels touching at this pixel are the same component.  Pass 2
 * replaces each provisional label by its component's final label.
 *
 * Union always links the larger root under the smaller one, so every parent pointer goes to a
 * smaller label and a component's root is its smallest provisional label.  Provisional labels are
 * created in raster order and the first pixel of a component always creates one (none of its
 * earlier neighbours can be in the component), so numbering the roots in increasing order
 * numbers the components in raster order of their first pixel, without a sort.
 *
 * Memory: the parent array, one allocation per call.  A new provisional label needs a pixel whose
 * left neighbour is outside the set, so a row creates at most ceil(w / 2) of them.  find() halves
 * paths in a loop (no recursion, so no stack depth to worry about on a 2^30-pixel spiral).
 * Rejected: flood fill with an explicit stack (a worst case of O(n) stack entries and random
 * memory access); run-based labelling (faster on large blobs, but twice the code for a function
 * that is a small part of evaluating an image).
 */
#include "internal.h"

#include <stdlib.h>

/* Root of x; halves the path on the way.  parent[x] <= x for every x. */
static int32_t find_root(int32_t *parent, int32_t x) {
    while (parent[x] != x) {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    return x;
}

/* Merges the sets of a and b (both non-zero) and returns the root of the union. */
static int32_t unite(int32_t *parent, int32_t a, int32_t b) {
    int32_t ra = find_root(parent, a);
    int32_t rb = find_root(parent, b);
    if (ra < rb) {
        parent[rb] = ra;
        return ra;
    }
    parent[ra] = rb;
    return rb;
}

unet_status unet_connected_components(unet_ctx *ctx, const int32_t *mask, int h, int w,
                                      int32_t value, int connectivity, int32_t *labels,
                                      int *count) {
    if (!mask || !labels || !count)
        return unet__fail(ctx, UNET_STATUS_ARG, "connected_components: mask, labels and count "
                                                "must not be NULL");
    if (h <= 0 || w <= 0)
        return unet__fail(ctx, UNET_STATUS_ARG, "connected_components: size %dx%d (h x w) must be "
                                                "positive", h, w);
    if (connectivity != 4 && connectivity != 8)
        return unet__fail(ctx, UNET_STATUS_ARG, "connected_components: connectivity must be 4 or "
                                                "8, got %d", connectivity);
    size_t n;
    if (!unet__mul_size((size_t)h, (size_t)w, &n) || n > (size_t)INT32_MAX)
        return unet__fail(ctx, UNET_STATUS_ARG, "connected_components: %dx%d pixels exceed the "
                                                "int32 label range", h, w);

    /* At most ceil(w / 2) new labels per row (see the top comment), plus the unused label 0. */
    size_t max_labels = (size_t)h * (((size_t)w + 1) / 2) + 1;
    size_t bytes;
    int32_t *parent = NULL;
    if (unet__mul_size(max_labels, sizeof *parent, &bytes)) parent = malloc(bytes);
    if (!parent)
        return unet__fail(ctx, UNET_STATUS_NOMEM, "connected_components: %zu labels", max_labels);

    /* Pass 1.  Membership of a visited neighbour is read from labels (non-zero = in the set), not
     * from mask, so labels may be the mask buffer itself: mask[i] is read before labels[i] is
     * written and never again. */
    int32_t next = 1;
    parent[0] = 0;
    for (int y = 0; y < h; y++) {
        const size_t row = (size_t)y * w;
        for (int x = 0; x < w; x++) {
            const size_t i = row + x;
            if (mask[i] != value) {
                labels[i] = 0;
                continue;
            }
            int32_t left = x > 0 ? labels[i - 1] : 0;
            int32_t up = y > 0 ? labels[i - w] : 0;
            int32_t l = left ? left : up;
            if (left && up && left != up) l = unite(parent, left, up);
            if (connectivity == 8 && y > 0) {
                int32_t ul = x > 0 ? labels[i - w - 1] : 0;
                int32_t ur = x + 1 < w ? labels[i - w + 1] : 0;
                if (ul) l = l && l != ul ? unite(parent, l, ul) : ul;
                if (ur) l = l && l != ur ? unite(parent, l, ur) : ur;
            }
            if (!l) {
                UNET_ASSERT((size_t)next < max_labels);
                parent[next] = next;
                l = next++;
            }
            labels[i] = l;
        }
    }

    /* Final labels in increasing root order.  parent[l] < l for a non-root l, and parent[l] was
     * already replaced by its final label, which is also l's (same component). */
    int32_t n_comp = 0;
    for (int32_t l = 1; l < next; l++) parent[l] = parent[l] == l ? ++n_comp : parent[parent[l]];

    /* Pass 2. */
    for (size_t i = 0; i < n; i++)
        if (labels[i]) labels[i] = parent[labels[i]];

    free(parent);
    *count = n_comp;
    return UNET_STATUS_OK;
}
