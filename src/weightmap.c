/* weightmap.c — the U-Net paper's border weight map (Ronneberger et al. 2015, Eq. 2):
 *
 *     w(x) = w_c(x) + w0 exp(-(d1(x) + d2(x))^2 / (2 sigma^2))
 *
 * d1, d2 are the Euclidean distances from a background pixel x to the nearest pixel of the
 * nearest and of the second-nearest cell (pixel centres; a pixel next to a cell has d1 = 1).
 * Cell pixels get w_c alone, and so does every pixel of an image with fewer than two cells.
 *
 * Distances.  With D_c(x) the distance from x to cell c, d1 and d2 are the two smallest D_c(x)
 * over all cells.  One exact distance transform of all cell pixels gives d1 but not d2, and one
 * transform per cell over the whole image is O(cells x pixels).  The term is only worth
 * computing near cells, though: it is below EPS = 2^-26 once d1 + d2 > T, where
 *     T = sigma sqrt(2 ln(w0 / EPS)),    (31.9 px for w0 = 10, sigma = 5)
 * and w_c >= 1/2 always (see below), so a term under 2^-26 is less than half a float32 ulp of
 * w_c: dropping it leaves the float32 result (float)(w_c + term) unchanged.  A pixel with
 * d1 + d2 <= T has D_c <= T for both of its cells, so each cell's transform is needed only in
 * its window: its bounding box grown by R = ceil(T) pixels.  Per pixel the two smallest D_c^2
 * <= T^2 are kept; every cell visits a pixel at most once, so the two come from two different
 * cells.  Where both exist the term is computed from them (exact); elsewhere it is dropped
 * (below EPS).  The output therefore equals the no-cutoff map in float32, which the tests
 * check against a brute-force O(pixels^2) reference.  Cost: the sum of the window areas, about
 * 3 million pixel visits for 300 cells of radius 20 with sigma = 5; a large sigma makes the
 * windows cover the image and the cost O(cells x pixels).
 *
 * Exact distance transform of one cell in its window (Felzenszwalb & Huttenlocher 2012,
 * "Distance transforms of sampled functions", separable, O(pixels)): per column the distance g
 * to the nearest cell pixel in that column (a forward and a backward scan), then per row the
 * lower envelope of the parabolas g(v)^2 + (x - v)^2 over the columns v that hold cell pixels,
 * evaluated at every column of the window.  Every value is an integer squared distance held in
 * a double, exact below 2^53 (images up to 94 million pixels on a side).  Envelope
 * breakpoints are rounded, but two parabolas that cross at an integer column give the same
 * value there, and a breakpoint that is not an integer is at least 1/(2w) away from one, far
 * more than the rounding error: the minimum at every pixel is exact.
 *
 * Threads: the image is cut into bands of BAND_ROWS rows; a band visits every cell whose window
 * meets it, keeps its own two smallest distances per pixel and writes its own rows of the
 * output, so the result does not depend on the thread count.  A cell's column scans cover the
 * band's rows plus R above and below (a cell pixel farther away cannot be within T).
 *
 * Cells: instance ids (any positive int32, not necessarily consecutive; an id with several
 * blobs is one cell, distances go to its nearest pixel) are renumbered 0..K-1 by sorting the
 * distinct ids, so no table indexed by id is needed.  A binary mask (instances = 0) is split
 * into 4-connected components first.
 *
 * w_c (UNET_WC_BALANCE): with K classes present (foreground = non-zero label, background = 0;
 * K = 1 or 2), w_c(x) = 1 / (K freq(class of x)) where freq is the class's fraction of the
 * image's pixels.  The mean of w_c over the image is 1, and w_c >= 1/K >= 1/2.
 *
 * Rejected: brute force over cell pixels (O(pixels^2)); a per-cell transform over the whole
 * image (300 full transforms of a megapixel image); propagating the two nearest labels between
 * neighbours (vector propagation), which is fast but not exact in every configuration.
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BAND_ROWS 64
/* The border term is dropped where it is below EPS (see the top comment). */
#define BORDER_EPS 0x1p-26

/* Inclusive bounding box of one cell. */
struct cell_box {
    int y0, y1, x0, x1;
};

/* Per-thread buffers for one band (bh <= BAND_ROWS rows of w pixels). */
struct band_scratch {
    double  *g;      /* (bh, box width): squared distance to the cell within the column */
    double  *b1;     /* (bh, w): smallest D_c^2 <= T^2 over the cells visited, else INFINITY */
    double  *b2;     /* (bh, w): second smallest */
    int32_t *last;   /* (w): row of the last cell pixel seen per column in the forward scan */
    int32_t *next;   /* (w): the same in the backward scan */
    int32_t *v;      /* (w): parabola sites of the lower envelope */
    double  *z;      /* (w + 1): envelope breakpoints */
};

static long long min_ll(long long a, long long b) {
    return a < b ? a : b;
}
static long long max_ll(long long a, long long b) {
    return a > b ? a : b;
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Instance ids -> dense cell indices 0..K-1 in increasing id order (-1 = background).
 * The distinct ids are found by sorting the id of every run of equal pixels in raster order
 * (a few thousand runs for a typical mask, not one entry per pixel). */
static unet_status dense_from_ids(unet_ctx *ctx, const int32_t *labels, size_t n, int w,
                                  int32_t *dense, int32_t *count) {
    size_t runs = 0;
    for (size_t i = 0; i < n; i++) {
        if (labels[i] < 0)
            return unet__fail(ctx, UNET_STATUS_ARG, "weightmap: negative instance label %d at "
                                                    "pixel (y %zu, x %zu)",
                              (int)labels[i], i / (size_t)w, i % (size_t)w);
        if (labels[i] != 0 && (i == 0 || labels[i] != labels[i - 1])) runs++;
    }
    *count = 0;
    if (runs == 0) {
        for (size_t i = 0; i < n; i++) dense[i] = -1;
        return UNET_STATUS_OK;
    }
    int32_t *ids = malloc(runs * sizeof *ids);
    if (!ids) return unet__fail(ctx, UNET_STATUS_NOMEM, "weightmap: %zu label runs", runs);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (labels[i] != 0 && (i == 0 || labels[i] != labels[i - 1])) ids[m++] = labels[i];
    qsort(ids, m, sizeof *ids, cmp_i32);
    size_t k = 0;
    for (size_t i = 0; i < m; i++)
        if (k == 0 || ids[i] != ids[k - 1]) ids[k++] = ids[i];

    /* Binary search per run; consecutive pixels of one run reuse the last answer. */
    int32_t prev_id = 0, prev_dense = -1;
    for (size_t i = 0; i < n; i++) {
        int32_t id = labels[i];
        if (id == 0) {
            dense[i] = -1;
            continue;
        }
        if (id != prev_id) {
            size_t lo = 0, hi = k;
            while (hi - lo > 1) {
                size_t mid = lo + (hi - lo) / 2;
                if (ids[mid] <= id) lo = mid;
                else hi = mid;
            }
            UNET_ASSERT(ids[lo] == id);
            prev_id = id;
            prev_dense = (int32_t)lo;
        }
        dense[i] = prev_dense;
    }
    free(ids);
    *count = (int32_t)k;
    return UNET_STATUS_OK;
}

/* Binary mask -> 4-connected components as dense cell indices (-1 = background). */
static unet_status dense_from_mask(unet_ctx *ctx, const int32_t *labels, size_t n, int h, int w,
                                   int32_t *dense, int32_t *count) {
    for (size_t i = 0; i < n; i++) dense[i] = labels[i] != 0;
    int comps = 0;
    unet_status s = unet_connected_components(ctx, dense, h, w, 1, 4, dense, &comps);
    if (s != UNET_STATUS_OK) return s;
    for (size_t i = 0; i < n; i++) dense[i] -= 1;
    *count = comps;
    return UNET_STATUS_OK;
}

/* Inserts d into the two smallest values (*b1 <= *b2) seen at one pixel. */
static inline void keep_two_smallest(double *b1, double *b2, double d) {
    if (d < *b1) {
        *b2 = *b1;
        *b1 = d;
    } else if (d < *b2) {
        *b2 = d;
    }
}

/* Squared distances from rows [oy0, oy1) of the cell's box columns to cell c within each
 * column, into s->g (row-major, box-width wide); INFINITY where no cell pixel within R rows. */
static void column_pass(const int32_t *dense, int w, int32_t c, const struct cell_box *b,
                        int oy0, int oy1, int R, struct band_scratch *s) {
    const int bw = b->x1 - b->x0 + 1;
    /* Cell rows within R of some output row: only those can matter. */
    const int sy0 = (int)max_ll(b->y0, (long long)oy0 - R);
    const int sy1 = (int)min_ll((long long)b->y1 + 1, (long long)oy1 + R);
    for (int x = 0; x < bw; x++) s->last[x] = -1;
    for (int y = sy0 < oy0 ? sy0 : oy0; y < oy1; y++) {
        if (y >= sy0 && y < sy1) {
            const int32_t *row = dense + (size_t)y * w + b->x0;
            for (int x = 0; x < bw; x++)
                if (row[x] == c) s->last[x] = y;
        }
        if (y >= oy0) {
            double *gr = s->g + (size_t)(y - oy0) * bw;
            for (int x = 0; x < bw; x++) {
                double d = (double)y - s->last[x];
                gr[x] = s->last[x] >= 0 ? d * d : INFINITY;
            }
        }
    }
    for (int x = 0; x < bw; x++) s->next[x] = -1;
    for (int y = (sy1 > oy1 ? sy1 : oy1) - 1; y >= oy0; y--) {
        if (y >= sy0 && y < sy1) {
            const int32_t *row = dense + (size_t)y * w + b->x0;
            for (int x = 0; x < bw; x++)
                if (row[x] == c) s->next[x] = y;
        }
        if (y < oy1) {
            double *gr = s->g + (size_t)(y - oy0) * bw;
            for (int x = 0; x < bw; x++) {
                if (s->next[x] < 0) continue;
                double d = (double)s->next[x] - y;
                if (d * d < gr[x]) gr[x] = d * d;
            }
        }
    }
}

/* For each row y in [oy0, oy1): the exact squared distance D_c^2 from every window column
 * [wx0, wx1) to cell c, as the lower envelope of the parabolas g(v)^2 + (x - v)^2 (Felzenszwalb
 * & Huttenlocher, Algorithm 1, with sites only where g is finite).  Coordinates are relative
 * to the box's first column, so the products stay small.  Background pixels with D_c^2 <= T2
 * update the band's two smallest values (rows relative to by0). */
static void row_pass(const int32_t *dense, int w, const struct cell_box *b, int oy0, int oy1,
                     int wx0, int wx1, int by0, double T2, struct band_scratch *s) {
    const int bw = b->x1 - b->x0 + 1;
    int32_t  *v = s->v;
    double   *z = s->z;
    for (int y = oy0; y < oy1; y++) {
        const double *f = s->g + (size_t)(y - oy0) * bw;
        int k = -1;
        for (int q = 0; q < bw; q++) {
            if (f[q] == INFINITY) continue;
            const double fq = f[q] + (double)q * q;
            if (k < 0) {
                k = 0;
                v[0] = q;
                z[0] = -INFINITY;
                continue;
            }
            double sx;
            for (;;) {   /* z[0] = -inf ends the loop with k >= 0 */
                const int p = v[k];
                sx = (fq - (f[p] + (double)p * p)) / (2.0 * (q - p));
                if (sx > z[k]) break;
                k--;
            }
            k++;
            v[k] = q;
            z[k] = sx;
        }
        if (k < 0) continue;
        z[k + 1] = INFINITY;

        const int32_t *drow = dense + (size_t)y * w;
        double        *b1 = s->b1 + (size_t)(y - by0) * w;
        double        *b2 = s->b2 + (size_t)(y - by0) * w;
        int            j = 0;
        for (int x = wx0; x < wx1; x++) {
            const double xq = (double)(x - b->x0);
            while (z[j + 1] < xq) j++;
            const double dx = xq - v[j];
            const double d = dx * dx + f[v[j]];
            if (d <= T2 && drow[x] < 0) keep_two_smallest(&b1[x], &b2[x], d);
        }
    }
}

/* Weights of rows [by0, by1): visits every cell whose window meets the band. */
static void weight_band(const int32_t *dense, int w, int by0, int by1,
                        const struct cell_box *box, int32_t K, int R, double T2, double w0,
                        double sigma, float wc_bg, float wc_fg, struct band_scratch *s,
                        float *weight) {
    const size_t bn = (size_t)(by1 - by0) * w;
    for (size_t i = 0; i < bn; i++) s->b1[i] = s->b2[i] = INFINITY;
    for (int32_t c = 0; c < K; c++) {
        const struct cell_box *b = &box[c];
        const int oy0 = (int)max_ll(by0, (long long)b->y0 - R);
        const int oy1 = (int)min_ll(by1, (long long)b->y1 + 1 + R);
        if (oy0 >= oy1) continue;
        const int wx0 = (int)max_ll(0, (long long)b->x0 - R);
        const int wx1 = (int)min_ll(w, (long long)b->x1 + 1 + R);
        column_pass(dense, w, c, b, oy0, oy1, R, s);
        row_pass(dense, w, b, oy0, oy1, wx0, wx1, by0, T2, s);
    }
    const double inv_2s2 = 1.0 / (2.0 * sigma * sigma);
    for (size_t i = 0; i < bn; i++) {
        const size_t p = (size_t)by0 * w + i;
        if (dense[p] >= 0) {
            weight[p] = wc_fg;
        } else if (s->b2[i] <= T2) {
            const double d = sqrt(s->b1[i]) + sqrt(s->b2[i]);
            weight[p] = (float)((double)wc_bg + w0 * exp(-d * d * inv_2s2));
        } else {
            weight[p] = wc_bg;
        }
    }
}

unet_status unet_weightmap(unet_ctx *ctx, const int32_t *labels, int h, int w, int instances,
                           float w0, float sigma, unet_wc wc, float *weight) {
    size_t n = 0;
    if (unet__check_label_args(ctx, "weightmap", labels && weight, "labels and weight", h, w, &n) !=
        UNET_STATUS_OK)
        return UNET_STATUS_ARG;
    if (!(w0 >= 0.0f) || !isfinite(w0))
        return unet__fail(ctx, UNET_STATUS_ARG, "weightmap: w0 must be finite and >= 0, got %g",
                          (double)w0);
    if (!(sigma > 0.0f) || !isfinite(sigma))
        return unet__fail(ctx, UNET_STATUS_ARG, "weightmap: sigma must be finite and > 0, got %g",
                          (double)sigma);
    if (wc != UNET_WC_BALANCE && wc != UNET_WC_NONE)
        return unet__fail(ctx, UNET_STATUS_ARG, "weightmap: unknown w_c mode %d", (int)wc);

    unet_status          st = UNET_STATUS_OK;
    struct cell_box     *box = NULL;
    struct band_scratch *scr = NULL;
    unsigned char       *scr_mem = NULL;
    /* calloc, not malloc: gcc -O1 cannot see that dense is written before it is read. */
    int32_t             *dense = calloc(n, sizeof *dense);
    if (!dense) return unet__fail(ctx, UNET_STATUS_NOMEM, "weightmap: %zu pixels", n);

    int32_t K = 0;
    st = instances ? dense_from_ids(ctx, labels, n, w, dense, &K)
                   : dense_from_mask(ctx, labels, n, h, w, dense, &K);
    if (st != UNET_STATUS_OK) goto fail;

    /* w_c: see the top comment.  Rounded to float first, so that a dropped term below
     * BORDER_EPS provably changes nothing. */
    size_t n_fg = 0;
    for (size_t i = 0; i < n; i++) n_fg += dense[i] >= 0;
    float wc_bg = 1.0f, wc_fg = 1.0f;
    if (wc == UNET_WC_BALANCE && n_fg > 0 && n_fg < n) {
        wc_bg = (float)((double)n / (2.0 * (double)(n - n_fg)));
        wc_fg = (float)((double)n / (2.0 * (double)n_fg));
    }

    /* Cutoff distance T (clamped to the image diagonal: no distance is longer) and window
     * radius R.  R < 0 means no border term anywhere. */
    const double diag = sqrt((double)(h - 1) * (h - 1) + (double)(w - 1) * (w - 1));
    double       T = 0.0;
    int          R = -1;
    if (K >= 2 && (double)w0 > BORDER_EPS) {
        T = (double)sigma * sqrt(2.0 * log((double)w0 / BORDER_EPS));
        if (!(T <= diag)) T = diag;
        R = (int)ceil(T);
    }
    const double T2 = T * T;

    if (R >= 0) {
        box = malloc((size_t)K * sizeof *box);
        if (!box) {
            st = unet__fail(ctx, UNET_STATUS_NOMEM, "weightmap: %d cells", (int)K);
            goto fail;
        }
        for (int32_t c = 0; c < K; c++) box[c] = (struct cell_box){h, -1, w, -1};
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                const int32_t c = dense[(size_t)y * w + x];
                if (c < 0) continue;
                struct cell_box *b = &box[c];
                if (y < b->y0) b->y0 = y;
                b->y1 = y;
                if (x < b->x0) b->x0 = x;
                if (x > b->x1) b->x1 = x;
            }
    }

    const int bands = (h + BAND_ROWS - 1) / BAND_ROWS;
    const int bh = h < BAND_ROWS ? h : BAND_ROWS;
    int       nt = unet__threads(ctx);
    if (nt > bands) nt = bands;
    if (nt < 1) nt = 1;

    /* Scratch per thread: g, b1, b2 (bh * w doubles each) and z (w + 1 doubles), then last,
     * next, v (w int32 each); one block for all threads.  bh * w <= 64 n, so no overflow. */
    const size_t bhw = (size_t)bh * w;
    const size_t per_thread = ((3 * bhw + (size_t)w + 1) * sizeof(double) +
                               3 * (size_t)w * sizeof(int32_t) + 7) & ~(size_t)7;
    if (R >= 0) {
        scr_mem = malloc(per_thread * (size_t)nt);
        scr = malloc((size_t)nt * sizeof *scr);
        if (!scr_mem || !scr) {
            st = unet__fail(ctx, UNET_STATUS_NOMEM, "weightmap: scratch for %d threads of %zu "
                                                    "bytes", nt, per_thread);
            goto fail;
        }
        for (int t = 0; t < nt; t++) {
            unsigned char *p = scr_mem + (size_t)t * per_thread;
            scr[t].g = (double *)p;
            scr[t].b1 = scr[t].g + bhw;
            scr[t].b2 = scr[t].b1 + bhw;
            scr[t].z = scr[t].b2 + bhw;
            scr[t].last = (int32_t *)(scr[t].z + (size_t)w + 1);
            scr[t].next = scr[t].last + w;
            scr[t].v = scr[t].next + w;
        }
    }

    if (R < 0) {
        for (size_t i = 0; i < n; i++) weight[i] = dense[i] >= 0 ? wc_fg : wc_bg;
    } else {
#pragma omp parallel num_threads(nt)
        {
#ifdef _OPENMP
            struct band_scratch *s = &scr[omp_get_thread_num()];
#else
            struct band_scratch *s = &scr[0];
#endif
#pragma omp for schedule(dynamic, 1)
            for (int band = 0; band < bands; band++) {
                const int by0 = band * BAND_ROWS;
                const int by1 = by0 + BAND_ROWS < h ? by0 + BAND_ROWS : h;
                weight_band(dense, w, by0, by1, box, K, R, T2, (double)w0, (double)sigma,
                            wc_bg, wc_fg, s, weight);
            }
        }
    }

fail:
    free(scr);
    free(scr_mem);
    free(box);
    free(dense);
    return st;
}
