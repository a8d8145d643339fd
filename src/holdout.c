/* holdout.c — which training data to hold back for validation when none is given.
 *
 * Whole images are the honest hold-out (validation then measures images the network never
 * saw), but with one to three images a whole image is a third or more of the data, or all of
 * it.  Those runs hold back a band at the bottom of every image instead: the network trains on
 * the rest of each image and never sees the band (the sampler mirrors the training part at the
 * cut, it does not read past it).  Pages of one stack are adjacent sections or frames, near
 * copies of their neighbours: holding back the last pages as one block leaves one neighbour
 * pair across the cut instead of two per held-back page.  Everything else is a seeded shuffle
 * (the same permutation `unet train` has always used, so its held-back images are unchanged).
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

unet_status unet_holdout_plan(unet_ctx *ctx, int n, const int *file, const int *rows,
                              double fraction, int min_rows, uint64_t seed, int *kind, int *held,
                              int *band_rows) {
    if (!kind || (n > 0 && (!held || !band_rows || !rows)))
        return unet__fail(ctx, UNET_STATUS_ARG, "holdout_plan: NULL argument");
    if (n < 0 || !(fraction > 0 && fraction < 1) || min_rows < 1)
        return unet__fail(ctx, UNET_STATUS_ARG,
                          "holdout_plan: n %d, fraction %g, min_rows %d: expected n >= 0, "
                          "0 < fraction < 1, min_rows >= 1",
                          n, fraction, min_rows);
    *kind = 0;
    if (n == 0) return UNET_STATUS_OK;
    memset(held, 0, sizeof(int) * (size_t)n);
    memset(band_rows, 0, sizeof(int) * (size_t)n);
    if (n >= 4) {
        int k = (int)ceil(fraction * n);
        if (k < 1) k = 1;
        if (k > n - 1) k = n - 1;
        bool one_stack = file != NULL;
        for (int i = 1; one_stack && i < n; i++) one_stack = file[i] == file[0];
        if (one_stack) {
            for (int i = n - k; i < n; i++) held[i] = 1;
        } else {
            int *perm = malloc(sizeof(int) * (size_t)n);
            if (!perm) return unet__fail(ctx, UNET_STATUS_NOMEM, "holdout_plan: out of memory");
            for (int i = 0; i < n; i++) perm[i] = i;
            uint64_t r = seed * 0x9e3779b97f4a7c15ULL + 12345;
            for (int i = n - 1; i > 0; i--) {
                r = r * 6364136223846793005ULL + 1442695040888963407ULL;
                int j = (int)((r >> 33) % (uint64_t)(i + 1));
                int t = perm[i];
                perm[i] = perm[j];
                perm[j] = t;
            }
            for (int i = n - k; i < n; i++) held[perm[i]] = 1;
            free(perm);
        }
        *kind = 1;
        return UNET_STATUS_OK;
    }
    for (int i = 0; i < n; i++) {
        if (rows[i] < 1) return unet__fail(ctx, UNET_STATUS_ARG, "holdout_plan: image %d has %d rows", i, rows[i]);
        int b = (int)floor(fraction * rows[i] + 0.5);
        if (b < 1) b = 1;
        if (b >= min_rows && rows[i] - b >= min_rows) {
            band_rows[i] = b;
            *kind = 2;
        }
    }
    return UNET_STATUS_OK;
}
