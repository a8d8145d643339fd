/* test_weightmap.c — the border weight map (unet_weightmap), separated-cell targets
 * (unet_separate_cells) and instances from a class map (unet_instances).
 *
 * The weight map is checked against a brute-force reference written here from the definition:
 * cells found independently (distinct ids by linear search, or a 4-connected flood fill), d1 and
 * d2 by trying every cell pixel for every background pixel (O(pixels^2)), and the border term
 * without any cutoff.  The library drops the term where it is below 2^-26 and promises that
 * this changes no float32 output, so the comparison is at float rounding (rtol 1e-6, about 8
 * ulps; a distance off by one pixel changes the term by percents).  Small sigmas make the
 * library's per-cell windows smaller than the image, so the cutoff logic is exercised.
 */
#include "harness.h"

#include <limits.h>
#include <time.h>

/* Float rounding only: w = (float)(w_c + term) in both, term computed in a different order. */
#define WMAP_RTOL 1e-6

static int32_t *ints(size_t n) {
    int32_t *p = calloc(n ? n : 1, sizeof *p);
    if (!p) exit(2);
    return p;
}

/* ---- synthetic label images ---- */

/* Paints a disc of id at (cy, cx), radius r; overwrite = 0 keeps pixels already painted. */
static void paint_disc(int32_t *lab, int h, int w, double cy, double cx, double r, int32_t id,
                       int overwrite) {
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            double dy = y - cy, dx = x - cx;
            int32_t *p = &lab[(size_t)y * w + x];
            if (dy * dy + dx * dx <= r * r && (overwrite || *p == 0)) *p = id;
        }
}

/* Random cells: discs with random non-consecutive ids (some near INT32_MAX), overlapping ones
 * touch, some ids reused for a second blob, and a few one-pixel fragments. */
static void random_cells(struct unet__rng *rng, int32_t *lab, int h, int w, int discs,
                         double rmin, double rmax) {
    memset(lab, 0, (size_t)h * w * sizeof *lab);
    int32_t ids[64];
    for (int k = 0; k < discs && k < 64; k++) {
        int32_t id = (int32_t)(1 + unet__rng_below(rng, 1000)) * 7 + k;
        if (k % 5 == 4) id = INT32_MAX - k;
        if (k % 4 == 3) id = ids[unet__rng_below(rng, (uint64_t)k)];   /* a second blob */
        ids[k] = id;
        double r = rmin + (rmax - rmin) * unet__rng_uniform(rng);
        paint_disc(lab, h, w, unet__rng_uniform(rng) * h, unet__rng_uniform(rng) * w, r, id,
                   (int)unet__rng_below(rng, 2));
    }
    for (int k = 0; k < 3; k++) {
        size_t i = unet__rng_below(rng, (uint64_t)h * w);
        if (lab[i] == 0) lab[i] = ids[unet__rng_below(rng, (uint64_t)(discs < 64 ? discs : 64))];
    }
}

/* ---- the reference ---- */

/* Dense cell index per pixel (-1 background) from instance ids (linear search over the ids
 * seen so far) or from 4-connected components of the non-zero pixels (flood fill). */
static int ref_cells(const int32_t *lab, int h, int w, int instances, int32_t *cell) {
    const size_t n = (size_t)h * w;
    int          K = 0;
    if (instances) {
        int32_t *ids = malloc(n * sizeof *ids);
        for (size_t i = 0; i < n; i++) {
            cell[i] = -1;
            if (lab[i] == 0) continue;
            int c = 0;
            while (c < K && ids[c] != lab[i]) c++;
            if (c == K) ids[K++] = lab[i];
            cell[i] = c;
        }
        free(ids);
        return K;
    }
    int32_t *stack = malloc(n * sizeof *stack);
    for (size_t i = 0; i < n; i++) cell[i] = -1;
    for (size_t s = 0; s < n; s++) {
        if (lab[s] == 0 || cell[s] >= 0) continue;
        size_t top = 0;
        stack[top++] = (int32_t)s;
        cell[s] = K;
        while (top) {
            size_t i = (size_t)stack[--top];
            int    y = (int)(i / w), x = (int)(i % w);
            const int nb[4][2] = {{y - 1, x}, {y + 1, x}, {y, x - 1}, {y, x + 1}};
            for (int k = 0; k < 4; k++) {
                int yy = nb[k][0], xx = nb[k][1];
                if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
                size_t j = (size_t)yy * w + xx;
                if (lab[j] != 0 && cell[j] < 0) {
                    cell[j] = K;
                    stack[top++] = (int32_t)j;
                }
            }
        }
        K++;
    }
    free(stack);
    return K;
}

/* Brute force: for every background pixel the squared distances to its nearest and second
 * nearest cell (INFINITY when there is none), trying every cell pixel. */
static void ref_d12(const int32_t *cell, int h, int w, int K, double *d1sq, double *d2sq) {
    const size_t n = (size_t)h * w;
    double      *best = malloc((size_t)(K > 0 ? K : 1) * sizeof *best);
    int32_t     *fg = malloc(n * sizeof *fg);
    size_t       n_fg = 0;
    for (size_t i = 0; i < n; i++)
        if (cell[i] >= 0) fg[n_fg++] = (int32_t)i;
    for (size_t p = 0; p < n; p++) {
        d1sq[p] = d2sq[p] = INFINITY;
        if (cell[p] >= 0) continue;
        for (int c = 0; c < K; c++) best[c] = INFINITY;
        const double py = (double)(p / w), px = (double)(p % w);
        for (size_t k = 0; k < n_fg; k++) {
            const size_t q = (size_t)fg[k];
            const double dy = py - (double)(q / w), dx = px - (double)(q % w);
            const double d = dy * dy + dx * dx;
            if (d < best[cell[q]]) best[cell[q]] = d;
        }
        for (int c = 0; c < K; c++) {
            if (best[c] < d1sq[p]) {
                d2sq[p] = d1sq[p];
                d1sq[p] = best[c];
            } else if (best[c] < d2sq[p]) {
                d2sq[p] = best[c];
            }
        }
    }
    free(best);
    free(fg);
}

/* w = w_c + w0 exp(-(d1 + d2)^2 / (2 sigma^2)) on background pixels, no cutoff. */
static void ref_compose(const int32_t *cell, const double *d1sq, const double *d2sq, size_t n,
                        float w0, float sigma, unet_wc wc, float *out) {
    size_t n_fg = 0;
    for (size_t i = 0; i < n; i++) n_fg += cell[i] >= 0;
    float wc_fg = 1.0f, wc_bg = 1.0f;
    if (wc == UNET_WC_BALANCE && n_fg > 0 && n_fg < n) {   /* K = 2 classes present */
        wc_fg = (float)(1.0 / (2.0 * ((double)n_fg / (double)n)));
        wc_bg = (float)(1.0 / (2.0 * ((double)(n - n_fg) / (double)n)));
    }
    for (size_t i = 0; i < n; i++) {
        if (cell[i] >= 0) {
            out[i] = wc_fg;
            continue;
        }
        double term = 0.0;
        if (isfinite(d2sq[i])) {
            double s = sqrt(d1sq[i]) + sqrt(d2sq[i]);
            term = (double)w0 * exp(-(s * s) / (2.0 * (double)sigma * (double)sigma));
        }
        out[i] = (float)((double)wc_bg + term);
    }
}

struct ref {
    int      K;
    int32_t *cell;
    double  *d1sq, *d2sq;
};

static struct ref ref_make(const int32_t *lab, int h, int w, int instances) {
    const size_t n = (size_t)h * w;
    struct ref   r;
    r.cell = malloc(n * sizeof *r.cell);
    r.d1sq = malloc(n * sizeof *r.d1sq);
    r.d2sq = malloc(n * sizeof *r.d2sq);
    r.K = ref_cells(lab, h, w, instances, r.cell);
    ref_d12(r.cell, h, w, r.K, r.d1sq, r.d2sq);
    return r;
}

static void ref_free(struct ref *r) {
    free(r->cell), free(r->d1sq), free(r->d2sq);
}

/* unet_weightmap with a fresh context of `threads` threads; returns the status. */
static unet_status weightmap_threads(const int32_t *lab, int h, int w, int instances, float w0,
                                     float sigma, unet_wc wc, int threads, float *out) {
    unet_ctx *ctx = unet_ctx_create();
    unet_ctx_set_threads(ctx, threads);
    unet_status s = unet_weightmap(ctx, lab, h, w, instances, w0, sigma, wc, out);
    if (s != UNET_STATUS_OK) printf("  weightmap: %s\n", unet_ctx_errmsg(ctx));
    unet_ctx_free(ctx);
    return s;
}

/* Like CHECK_TENSOR with atol 0 but silent when everything matches: prints the first
 * mismatches (at most 5 over the whole test, counted in *shown) and raises *max_rel. */
static size_t compare_rel(const char *what, const float *got, const float *want, size_t n,
                          double rtol, double *max_rel, int *shown) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - want[i]), rel = want[i] ? e / fabs(want[i]) : e;
        if (!(rel <= *max_rel)) *max_rel = rel;
        if (rel <= rtol) continue;
        if ((*shown)++ < 5)
            printf("  %s [%zu]: got %.9g, want %.9g\n", what, i, (double)got[i], (double)want[i]);
        bad++;
    }
    return bad;
}

static size_t count_diff(const float *a, const float *b, size_t n) {
    size_t d = 0;
    for (size_t i = 0; i < n; i++) d += memcmp(&a[i], &b[i], sizeof *a) != 0;
    return d;
}

/* ---- weight map ---- */

TEST(two_discs_vs_bruteforce) {
    const int h = 41, w = 67;
    int32_t  *lab = calloc((size_t)h * w, sizeof *lab);
    paint_disc(lab, h, w, 20, 20, 9, 1, 1);
    paint_disc(lab, h, w, 21, 43, 11, 2, 1);   /* about 3 px of background between them */
    float *got = test_alloc((size_t)h * w), *want = test_alloc((size_t)h * w);
    struct ref r = ref_make(lab, h, w, 1);
    CHECK_EQ(r.K, 2);
    for (int wc = 0; wc < 2; wc++) {
        CHECK_STATUS(weightmap_threads(lab, h, w, 1, 10.0f, 5.0f, (unet_wc)wc, 2, got),
                     UNET_STATUS_OK);
        ref_compose(r.cell, r.d1sq, r.d2sq, (size_t)h * w, 10.0f, 5.0f, (unet_wc)wc, want);
        CHECK_TENSOR(wc ? "two discs, w_c = 1" : "two discs, balanced", got, want,
                     (size_t)h * w, 0.0, WMAP_RTOL);
    }
    /* The term is really exercised: between the discs it is close to w0 exp(-(2+2)^2/50). */
    float top = 0.0f;
    for (size_t i = 0; i < (size_t)h * w; i++)
        if (lab[i] == 0 && got[i] - 1.0f > top) top = got[i] - 1.0f;
    printf("       largest border term %.4f\n", (double)top);
    CHECK(top > 5.0f && top < 10.0f);
    ref_free(&r);
    free(lab), free(got), free(want);
}

TEST(random_cells_vs_bruteforce) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 42);
    /* h, w, discs, radius range: dense (touching) cells, a single row, and sparse small cells
     * whose second-nearest cell is far (d2 near the cutoff T). */
    const int   sizes[5][5] = {{37, 53, 9, 2, 7}, {48, 64, 9, 2, 7}, {1, 70, 6, 0, 2},
                               {64, 29, 9, 2, 7}, {60, 75, 4, 1, 3}};
    const float params[5][2] = {{10, 5}, {10, 1.5f}, {1, 3}, {100, 12}, {1e-7f, 2}};
    size_t      bad = 0;
    int         cases = 0, shown = 0;
    double      max_rel = 0.0;
    for (int s = 0; s < 5; s++) {
        const int h = sizes[s][0], w = sizes[s][1];
        const size_t n = (size_t)h * w;
        int32_t *lab = malloc(n * sizeof *lab);
        float *got = test_alloc(n), *want = test_alloc(n), *got1 = test_alloc(n);
        for (int rep = 0; rep < 2; rep++) {
            random_cells(&rng, lab, h, w, sizes[s][2], sizes[s][3] + 0.4, sizes[s][4]);
            for (int instances = 0; instances < 2; instances++) {
                struct ref r = ref_make(lab, h, w, instances);
                for (int p = 0; p < 5; p++) {
                    unet_wc wc = (unet_wc)((p + rep) % 2);
                    ref_compose(r.cell, r.d1sq, r.d2sq, n, params[p][0], params[p][1], wc,
                                want);
                    CHECK_STATUS(weightmap_threads(lab, h, w, instances, params[p][0],
                                                   params[p][1], wc, 3, got),
                                 UNET_STATUS_OK);
                    CHECK_STATUS(weightmap_threads(lab, h, w, instances, params[p][0],
                                                   params[p][1], wc, 1, got1),
                                 UNET_STATUS_OK);
                    char what[96];
                    snprintf(what, sizeof what, "%dx%d K=%d inst=%d w0=%g sigma=%g", h, w, r.K,
                             instances, (double)params[p][0], (double)params[p][1]);
                    bad += compare_rel(what, got, want, n, WMAP_RTOL, &max_rel, &shown);
                    CHECK_EQ(count_diff(got, got1, n), 0);   /* 1 and 3 threads: same bits */
                    cases++;
                }
                ref_free(&r);
            }
        }
        free(lab), free(got), free(want), free(got1);
    }
    printf("       %d cases (5 sizes, dense and sparse cells, 5 (w0, sigma), ids and mask): "
           "max rel err %.3g, %zu pixels outside rtol %g\n",
           cases, max_rel, bad, WMAP_RTOL);
    CHECK_EQ(bad, 0);
    CHECK_EQ(cases, 100);
}

/* Two one-pixel cells s pixels apart, along a row and off-axis, for s up to beyond the cutoff
 * T: pixels whose d1 + d2 is just inside T carry a term that is still visible in float32 when
 * w_c = 1 (T has under 2 px of slack for these sigmas), so a window even a few pixels too
 * small shows up here. */
TEST(cutoff_edge) {
    const float params[4][2] = {{10, 1}, {10, 1.5f}, {1000, 2}, {10, 5}};
    size_t      bad = 0, checked = 0;
    for (int p = 0; p < 4; p++)
        for (int s = 2; s <= 45; s++)
            for (int dy = 0; dy <= 4; dy += 2) {
                const int    h = 7, w = s + 4;
                const size_t n = (size_t)h * w;
                int32_t     *lab = ints(n);
                float       *got = test_alloc(n), *want = test_alloc(n);
                lab[(size_t)3 * w + 1] = 17;
                lab[(size_t)(3 + (dy == 2 ? -2 : dy == 4 ? 3 : 0)) * w + 1 + s] = 4;
                struct ref r = ref_make(lab, h, w, 1);
                ref_compose(r.cell, r.d1sq, r.d2sq, n, params[p][0], params[p][1], UNET_WC_NONE,
                            want);
                CHECK_STATUS(weightmap_threads(lab, h, w, 1, params[p][0], params[p][1],
                                               UNET_WC_NONE, 1, got),
                             UNET_STATUS_OK);
                for (size_t i = 0; i < n; i++) {
                    if (got[i] == want[i]) continue;
                    if (bad++ < 5)
                        printf("  w0 %g sigma %g, cells %d px apart (dy %d), pixel %zu: got "
                               "%.9g, want %.9g\n",
                               (double)params[p][0], (double)params[p][1], s, dy, i,
                               (double)got[i], (double)want[i]);
                }
                checked += n;
                ref_free(&r);
                free(lab), free(got), free(want);
            }
    printf("       %zu pixels, %zu differ\n", checked, bad);
    CHECK_EQ(bad, 0);
}

/* A dividing cell annotated as one id: distances go to its nearest pixel, and a pixel between
 * its two blobs finds its second cell elsewhere. */
TEST(multi_blob_id) {
    const int h = 1, w = 20;
    int32_t   lab[20] = {0};
    lab[0] = lab[3] = 700;
    lab[19] = 12;
    float got[20], blobs[20];
    CHECK_STATUS(weightmap_threads(lab, h, w, 1, 10.0f, 5.0f, UNET_WC_NONE, 1, got),
                 UNET_STATUS_OK);
    /* Pixel 1: d1 = 1 (id 700), d2 = 18 (id 12). */
    CHECK_CLOSE(got[1], 1.0 + 10.0 * exp(-19.0 * 19.0 / 50.0), 0.0, WMAP_RTOL);
    /* Pixel 10: d1 = 7 (700, at 3), d2 = 9 (12). */
    CHECK_CLOSE(got[10], 1.0 + 10.0 * exp(-16.0 * 16.0 / 50.0), 0.0, WMAP_RTOL);
    /* As a binary mask the two blobs are two cells: pixel 1 then has d1 = 1, d2 = 2. */
    CHECK_STATUS(weightmap_threads(lab, h, w, 0, 10.0f, 5.0f, UNET_WC_NONE, 1, blobs),
                 UNET_STATUS_OK);
    CHECK_CLOSE(blobs[1], 1.0 + 10.0 * exp(-9.0 / 50.0), 0.0, WMAP_RTOL);
    CHECK_CLOSE(got[0], 1.0, 0.0, 0.0);   /* cell pixels: w_c only */
}

TEST(binary_equals_instances_when_apart) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 7);
    const int h = 90, w = 110;
    const size_t n = (size_t)h * w;
    int32_t *lab = calloc(n, sizeof *lab);
    float *a = test_alloc(n), *b = test_alloc(n);
    /* Discs on a grid with at least 2 px between them: one 4-connected blob per id. */
    int id = 5;
    for (int gy = 0; gy < 4; gy++)
        for (int gx = 0; gx < 5; gx++, id += 3)
            paint_disc(lab, h, w, 11 + 22 * gy + 2 * unet__rng_uniform(&rng),
                       11 + 22 * gx + 2 * unet__rng_uniform(&rng),
                       5 + 4 * unet__rng_uniform(&rng), id, 0);
    CHECK_STATUS(weightmap_threads(lab, h, w, 1, 10.0f, 5.0f, UNET_WC_BALANCE, 2, a),
                 UNET_STATUS_OK);
    CHECK_STATUS(weightmap_threads(lab, h, w, 0, 10.0f, 5.0f, UNET_WC_BALANCE, 2, b),
                 UNET_STATUS_OK);
    CHECK_EQ(count_diff(a, b, n), 0);
    /* Touching cells: the binary path sees one cell, so no border term, unlike the ids. */
    int32_t two[4 * 6] = {0};
    for (int y = 1; y < 3; y++) two[y * 6 + 1] = two[y * 6 + 2] = 1, two[y * 6 + 3] = 2;
    float wi[24], wb[24];
    CHECK_STATUS(weightmap_threads(two, 4, 6, 1, 10.0f, 5.0f, UNET_WC_NONE, 1, wi),
                 UNET_STATUS_OK);
    CHECK_STATUS(weightmap_threads(two, 4, 6, 0, 10.0f, 5.0f, UNET_WC_NONE, 1, wb),
                 UNET_STATUS_OK);
    CHECK(wi[0] > 2.0f);
    CHECK_EQ(wb[0] == 1.0f, 1);
    free(lab), free(a), free(b);
}

/* Touching cells have no background between them; the documented recipe (zero the pixels
 * unet_separate_cells marks) gives the separation border its weight. */
TEST(touching_cells_recipe) {
    enum { H = 9, W = 12 };
    int32_t lab[H * W] = {0}, sep[H * W];
    for (int y = 2; y < 7; y++)
        for (int x = 2; x < 10; x++) lab[y * W + x] = x < 6 ? 8 : 3;
    float before[H * W], after[H * W];
    CHECK_STATUS(weightmap_threads(lab, H, W, 1, 10.0f, 5.0f, UNET_WC_NONE, 1, before),
                 UNET_STATUS_OK);
    CHECK_STATUS(unet_separate_cells(NULL, lab, H, W, 1, 3, sep), UNET_STATUS_OK);
    for (int i = 0; i < H * W; i++)
        if (sep[i] != 1) sep[i] = 0;
        else sep[i] = lab[i];
    CHECK_STATUS(weightmap_threads(sep, H, W, 1, 10.0f, 5.0f, UNET_WC_NONE, 1, after),
                 UNET_STATUS_OK);
    /* Pixel (4, 5) was inside cell 8 (w_c only); now it is border background with d1 = 1
     * (cell 8 at x = 4) and d2 = 2 (cell 3 at x = 7). */
    CHECK_EQ(before[4 * W + 5] == 1.0f, 1);
    CHECK_CLOSE(after[4 * W + 5], 1.0 + 10.0 * exp(-9.0 / 50.0), 0.0, WMAP_RTOL);
    CHECK_CLOSE(after[4 * W + 6], 1.0 + 10.0 * exp(-9.0 / 50.0), 0.0, WMAP_RTOL);
}

TEST(wc_modes) {
    const int h = 10, w = 10;
    int32_t   lab[100] = {0};
    for (int y = 2; y < 5; y++)
        for (int x = 1; x < 5; x++) lab[y * w + x] = 3;   /* 12 px */
    for (int y = 7; y < 9; y++)
        for (int x = 7; x < 9; x++) lab[y * w + x] = 9;   /* 4 px */
    float got[100];
    /* w0 = 0: w is w_c alone.  16 of 100 pixels are foreground, K = 2. */
    CHECK_STATUS(weightmap_threads(lab, h, w, 1, 0.0f, 5.0f, UNET_WC_BALANCE, 1, got),
                 UNET_STATUS_OK);
    double mean = 0.0;
    for (int i = 0; i < 100; i++) {
        CHECK_CLOSE(got[i], lab[i] ? 100.0 / (2 * 16) : 100.0 / (2 * 84), 0.0, 1e-7);
        mean += got[i] / 100.0;
    }
    CHECK_CLOSE(mean, 1.0, 1e-6, 0.0);
    CHECK_STATUS(weightmap_threads(lab, h, w, 1, 0.0f, 5.0f, UNET_WC_NONE, 1, got),
                 UNET_STATUS_OK);
    for (int i = 0; i < 100; i++) CHECK_EQ(got[i] == 1.0f, 1);
    /* One class present (all background, all foreground): K = 1, w_c = 1, no border term. */
    int32_t empty[100] = {0}, full[100];
    for (int i = 0; i < 100; i++) full[i] = 1 + i % 7;
    for (int mode = 0; mode < 2; mode++) {
        CHECK_STATUS(weightmap_threads(empty, h, w, mode, 10.0f, 5.0f, UNET_WC_BALANCE, 1, got),
                     UNET_STATUS_OK);
        for (int i = 0; i < 100; i++) CHECK_EQ(got[i] == 1.0f, 1);
        CHECK_STATUS(weightmap_threads(full, h, w, mode, 10.0f, 5.0f, UNET_WC_BALANCE, 1, got),
                     UNET_STATUS_OK);
        for (int i = 0; i < 100; i++) CHECK_EQ(got[i] == 1.0f, 1);
    }
}

/* Inside cells the weight is w_c; with one cell there is no second cell and no border term;
 * two cells farther apart than the cutoff get none either. */
TEST(border_term_only_between_cells) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 3);
    const int h = 60, w = 70;
    const size_t n = (size_t)h * w;
    int32_t *lab = malloc(n * sizeof *lab);
    float *got = test_alloc(n);
    random_cells(&rng, lab, h, w, 10, 3, 8);
    CHECK_STATUS(weightmap_threads(lab, h, w, 1, 10.0f, 5.0f, UNET_WC_NONE, 2, got),
                 UNET_STATUS_OK);
    size_t inside = 0, raised = 0;
    for (size_t i = 0; i < n; i++) {
        if (lab[i]) inside += got[i] != 1.0f;
        else raised += got[i] > 1.0f;
    }
    CHECK_EQ(inside, 0);
    CHECK(raised > n / 4);

    memset(lab, 0, n * sizeof *lab);
    paint_disc(lab, h, w, 30, 30, 10, 4, 1);
    CHECK_STATUS(weightmap_threads(lab, h, w, 1, 10.0f, 5.0f, UNET_WC_NONE, 2, got),
                 UNET_STATUS_OK);
    for (size_t i = 0; i < n; i++) CHECK_EQ(got[i] == 1.0f, 1);

    /* sigma = 1: T = 6.4 px.  Discs 20 px apart: every border term is below 2^-26. */
    memset(lab, 0, n * sizeof *lab);
    paint_disc(lab, h, w, 30, 15, 5, 1, 1);
    paint_disc(lab, h, w, 30, 45, 5, 2, 1);
    CHECK_STATUS(weightmap_threads(lab, h, w, 1, 10.0f, 1.0f, UNET_WC_NONE, 2, got),
                 UNET_STATUS_OK);
    for (size_t i = 0; i < n; i++) CHECK_EQ(got[i] == 1.0f, 1);
    free(lab), free(got);
}

TEST(transpose_symmetry) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 11);
    const int h = 45, w = 71;
    const size_t n = (size_t)h * w;
    int32_t *lab = malloc(n * sizeof *lab), *labt = malloc(n * sizeof *labt);
    float *a = test_alloc(n), *b = test_alloc(n), *bt = test_alloc(n);
    random_cells(&rng, lab, h, w, 12, 2, 8);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) labt[(size_t)x * h + y] = lab[(size_t)y * w + x];
    CHECK_STATUS(weightmap_threads(lab, h, w, 1, 10.0f, 3.0f, UNET_WC_BALANCE, 2, a),
                 UNET_STATUS_OK);
    CHECK_STATUS(weightmap_threads(labt, w, h, 1, 10.0f, 3.0f, UNET_WC_BALANCE, 2, b),
                 UNET_STATUS_OK);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) bt[(size_t)y * w + x] = b[(size_t)x * h + y];
    CHECK_EQ(count_diff(a, bt, n), 0);
    free(lab), free(labt), free(a), free(b), free(bt);
}

TEST(weightmap_bad_args) {
    unet_ctx *ctx = unet_ctx_create();
    int32_t   lab[4] = {0, 1, 0, 2};
    float     out[4];
    CHECK_STATUS(unet_weightmap(ctx, NULL, 2, 2, 1, 10, 5, UNET_WC_BALANCE, out), UNET_STATUS_ARG);
    CHECK_STATUS(unet_weightmap(ctx, lab, 2, 2, 1, 10, 5, UNET_WC_BALANCE, NULL), UNET_STATUS_ARG);
    CHECK_STATUS(unet_weightmap(ctx, lab, 0, 2, 1, 10, 5, UNET_WC_BALANCE, out), UNET_STATUS_ARG);
    CHECK_STATUS(unet_weightmap(ctx, lab, 2, -1, 1, 10, 5, UNET_WC_BALANCE, out), UNET_STATUS_ARG);
    CHECK_STATUS(unet_weightmap(ctx, lab, 2, 2, 1, -1, 5, UNET_WC_BALANCE, out), UNET_STATUS_ARG);
    CHECK_STATUS(unet_weightmap(ctx, lab, 2, 2, 1, NAN, 5, UNET_WC_BALANCE, out), UNET_STATUS_ARG);
    CHECK_STATUS(unet_weightmap(ctx, lab, 2, 2, 1, 10, 0, UNET_WC_BALANCE, out), UNET_STATUS_ARG);
    CHECK_STATUS(unet_weightmap(ctx, lab, 2, 2, 1, 10, -2, UNET_WC_BALANCE, out), UNET_STATUS_ARG);
    CHECK_STATUS(unet_weightmap(ctx, lab, 2, 2, 1, 10, INFINITY, UNET_WC_BALANCE, out),
                 UNET_STATUS_ARG);
    CHECK_STATUS(unet_weightmap(ctx, lab, 2, 2, 1, 10, 5, (unet_wc)7, out), UNET_STATUS_ARG);
    CHECK_STATUS(unet_weightmap(ctx, lab, 65536, 65536, 1, 10, 5, UNET_WC_BALANCE, out),
                 UNET_STATUS_ARG);
    lab[2] = -3;   /* negative ids: an error for instance labels, foreground for a mask */
    CHECK_STATUS(unet_weightmap(ctx, lab, 2, 2, 1, 10, 5, UNET_WC_BALANCE, out), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "-3");
    CHECK_STATUS(unet_weightmap(ctx, lab, 2, 2, 0, 10, 5, UNET_WC_BALANCE, out), UNET_STATUS_OK);
    unet_ctx_free(ctx);
}

/* A real instance mask (DIC-HeLa, touching cells): sanity of the full map and the brute-force
 * reference on the crop with the most cells.  Skipped when the data is not there. */
TEST(real_mask) {
    const char *path = "/work/shared/data/dic-c2dh-hela/train/masks/01_t002.tif";
    unet_ctx   *ctx = unet_ctx_create();
    unet_image  img = {0};
    if (unet_image_load(ctx, path, 0, &img) != UNET_STATUS_OK || img.c != 1 ||
        img.dtype != UNET_DTYPE_U16) {
        printf("       skipped: %s not loadable (%s)\n", path, unet_ctx_errmsg(ctx));
        unet_image_free(&img);
        unet_ctx_free(ctx);
        return;
    }
    const int h = img.h, w = img.w;
    const size_t n = (size_t)h * w;
    int32_t *lab = malloc(n * sizeof *lab);
    for (size_t i = 0; i < n; i++) lab[i] = ((const uint16_t *)img.data)[i];
    float *got = test_alloc(n);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_STATUS(unet_weightmap(ctx, lab, h, w, 1, 10.0f, 5.0f, UNET_WC_BALANCE, got),
                 UNET_STATUS_OK);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    size_t n_fg = 0;
    for (size_t i = 0; i < n; i++) n_fg += lab[i] != 0;
    const float wc_fg = (float)(n / (2.0 * n_fg)), wc_bg = (float)(n / (2.0 * (n - n_fg)));
    float top = 0.0f;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (lab[i]) bad += got[i] != wc_fg;
        else bad += !(got[i] >= wc_bg && got[i] <= wc_bg + 10.0f);
        if (got[i] > top) top = got[i];
    }
    printf("       %s: %dx%d, %.1f%% foreground, max weight %.3f, %.1f ms\n", path, w, h,
           100.0 * n_fg / n, (double)top,
           (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) * 1e-6);
    CHECK_EQ(bad, 0);
    CHECK(top > wc_bg + 5.0f);

    /* The 64x64 crop (on a 32 px grid) with the most distinct ids. */
    enum { C = 64 };
    int best_y = 0, best_x = 0, best_k = -1;
    for (int y = 0; y + C <= h; y += 32)
        for (int x = 0; x + C <= w; x += 32) {
            int32_t ids[64];
            int     k = 0;
            for (int yy = y; yy < y + C; yy++)
                for (int xx = x; xx < x + C; xx++) {
                    int32_t v = lab[(size_t)yy * w + xx], j = 0;
                    while (j < k && ids[j] != v) j++;
                    if (j == k && k < 64) ids[k++] = v;
                }
            if (k > best_k) best_k = k, best_y = y, best_x = x;
        }
    int32_t crop[C * C];
    for (int y = 0; y < C; y++)
        for (int x = 0; x < C; x++) crop[y * C + x] = lab[(size_t)(best_y + y) * w + best_x + x];
    float      cg[C * C], cw[C * C];
    struct ref r = ref_make(crop, C, C, 1);
    ref_compose(r.cell, r.d1sq, r.d2sq, C * C, 10.0f, 5.0f, UNET_WC_BALANCE, cw);
    CHECK_STATUS(unet_weightmap(ctx, crop, C, C, 1, 10.0f, 5.0f, UNET_WC_BALANCE, cg),
                 UNET_STATUS_OK);
    printf("       crop at (y %d, x %d): %d cells\n", best_y, best_x, r.K);
    CHECK(r.K >= 3);
    CHECK_TENSOR("real crop vs brute force", cg, cw, C * C, 0.0, WMAP_RTOL);
    ref_free(&r);
    free(lab), free(got);
    unet_image_free(&img);
    unet_ctx_free(ctx);
}

/* ---- separated cells ---- */

/* Brute force: a cell pixel with another cell within the (2 gap + 1)^2 square is border. */
static void ref_separate(const int32_t *lab, int h, int w, int gap, int classes, int32_t *out) {
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int32_t a = lab[(size_t)y * w + x];
            int     border = 0;
            for (int yy = y - gap; yy <= y + gap && a; yy++)
                for (int xx = x - gap; xx <= x + gap; xx++) {
                    if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
                    int32_t b = lab[(size_t)yy * w + xx];
                    border |= b != 0 && b != a;
                }
            out[(size_t)y * w + x] = a == 0 ? 0 : border ? (classes == 3 ? 2 : 0) : 1;
        }
}

static size_t count_diff_i32(const int32_t *a, const int32_t *b, size_t n) {
    size_t d = 0;
    for (size_t i = 0; i < n; i++) d += a[i] != b[i];
    return d;
}

TEST(separate_touching_squares) {
    /* 4 x 8: cell 5 in columns 0-3, cell 9 in columns 4-7. */
    int32_t lab[32], t[32];
    for (int i = 0; i < 32; i++) lab[i] = i % 8 < 4 ? 5 : 9;
    CHECK_STATUS(unet_separate_cells(NULL, lab, 4, 8, 1, 3, t), UNET_STATUS_OK);
    for (int i = 0; i < 32; i++) CHECK_EQ(t[i], i % 8 == 3 || i % 8 == 4 ? 2 : 1);
    CHECK_STATUS(unet_separate_cells(NULL, lab, 4, 8, 2, 2, t), UNET_STATUS_OK);
    for (int i = 0; i < 32; i++) CHECK_EQ(t[i], i % 8 >= 2 && i % 8 <= 5 ? 0 : 1);
    CHECK_STATUS(unet_separate_cells(NULL, lab, 4, 8, 0, 3, t), UNET_STATUS_OK);
    for (int i = 0; i < 32; i++) CHECK_EQ(t[i], 1);
    /* Diagonal contact counts (8-neighbourhood); background stays 0. */
    int32_t diag[9] = {4, 0, 0, 0, 6, 0, 0, 0, 0};
    CHECK_STATUS(unet_separate_cells(NULL, diag, 3, 3, 1, 3, t), UNET_STATUS_OK);
    const int32_t want[9] = {2, 0, 0, 0, 2, 0, 0, 0, 0};
    CHECK_EQ(count_diff_i32(t, want, 9), 0);
}

TEST(separate_random_vs_bruteforce) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 5);
    const int sizes[3][2] = {{33, 47}, {1, 40}, {50, 3}};
    for (int s = 0; s < 3; s++) {
        const int    h = sizes[s][0], w = sizes[s][1];
        const size_t n = (size_t)h * w;
        int32_t *lab = ints(n), *got = ints(n), *want = ints(n), *inplace = ints(n);
        random_cells(&rng, lab, h, w, 12, 1, 6);
        for (int gap = 0; gap <= 5; gap++)
            for (int classes = 2; classes <= 3; classes++) {
                ref_separate(lab, h, w, gap, classes, want);
                unet_ctx *ctx = unet_ctx_create();
                unet_ctx_set_threads(ctx, 1 + gap % 3);
                CHECK_STATUS(unet_separate_cells(ctx, lab, h, w, gap, classes, got),
                             UNET_STATUS_OK);
                memcpy(inplace, lab, n * sizeof *lab);
                CHECK_STATUS(unet_separate_cells(ctx, inplace, h, w, gap, classes, inplace),
                             UNET_STATUS_OK);
                unet_ctx_free(ctx);
                size_t d = count_diff_i32(got, want, n);
                if (d) printf("  %dx%d gap %d classes %d: %zu pixels differ\n", h, w, gap,
                              classes, d);
                CHECK_EQ(d, 0);
                CHECK_EQ(count_diff_i32(inplace, want, n), 0);
            }
        /* A gap larger than the image. */
        ref_separate(lab, h, w, 100, 3, want);
        CHECK_STATUS(unet_separate_cells(NULL, lab, h, w, INT_MAX, 3, got), UNET_STATUS_OK);
        CHECK_EQ(count_diff_i32(got, want, n), 0);
        free(lab), free(got), free(want), free(inplace);
    }
}

TEST(separate_bad_args) {
    unet_ctx *ctx = unet_ctx_create();
    int32_t   lab[4] = {0, 1, 0, 2}, t[4];
    CHECK_STATUS(unet_separate_cells(ctx, NULL, 2, 2, 1, 2, t), UNET_STATUS_ARG);
    CHECK_STATUS(unet_separate_cells(ctx, lab, 2, 2, 1, 2, NULL), UNET_STATUS_ARG);
    CHECK_STATUS(unet_separate_cells(ctx, lab, 0, 2, 1, 2, t), UNET_STATUS_ARG);
    CHECK_STATUS(unet_separate_cells(ctx, lab, 2, 2, -1, 2, t), UNET_STATUS_ARG);
    CHECK_STATUS(unet_separate_cells(ctx, lab, 2, 2, 1, 4, t), UNET_STATUS_ARG);
    lab[0] = -1;
    CHECK_STATUS(unet_separate_cells(ctx, lab, 2, 2, 1, 2, t), UNET_STATUS_ARG);
    unet_ctx_free(ctx);
}

/* ---- instances ---- */

/* The rule, one full-image sweep per step: an unlabelled pixel of class 0 or 2 with a labelled
 * 8-neighbour (labels of earlier steps) takes the smallest 4-neighbour label, else the smallest
 * diagonal one.  Starts from `labels` (the components). */
static void ref_grow(const int32_t *cls, int h, int w, int grow, int32_t *labels) {
    const size_t n = (size_t)h * w;
    int32_t     *prev = ints(n);
    for (int step = 0; step < grow; step++) {
        memcpy(prev, labels, n * sizeof *labels);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                size_t i = (size_t)y * w + x;
                if (prev[i] || (cls[i] != 0 && cls[i] != 2)) continue;
                int32_t b4 = 0, bd = 0;
                for (int dy = -1; dy <= 1; dy++)
                    for (int dx = -1; dx <= 1; dx++) {
                        int yy = y + dy, xx = x + dx;
                        if ((!dy && !dx) || yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
                        int32_t l = prev[(size_t)yy * w + xx];
                        if (!l) continue;
                        int32_t *b = dy && dx ? &bd : &b4;
                        if (!*b || l < *b) *b = l;
                    }
                labels[i] = b4 ? b4 : bd;
            }
    }
    free(prev);
}

TEST(instances_regrow_separated) {
    /* Touching squares fill the image: separate (gap 1, border class) then grow 1 = original. */
    int32_t lab[32], t[32], inst[32];
    int     count = 0;
    for (int i = 0; i < 32; i++) lab[i] = i % 8 < 4 ? 5 : 9;
    CHECK_STATUS(unet_separate_cells(NULL, lab, 4, 8, 1, 3, t), UNET_STATUS_OK);
    CHECK_STATUS(unet_instances(NULL, t, 4, 8, 0, inst, &count), UNET_STATUS_OK);
    CHECK_EQ(count, 2);
    for (int i = 0; i < 32; i++) CHECK_EQ(inst[i], i % 8 < 3 ? 1 : i % 8 > 4 ? 2 : 0);
    CHECK_STATUS(unet_instances(NULL, t, 4, 8, 1, inst, &count), UNET_STATUS_OK);
    CHECK_EQ(count, 2);
    for (int i = 0; i < 32; i++) CHECK_EQ(inst[i], i % 8 < 4 ? 1 : 2);

    /* With background around (two classes, gap 2): the original pixels come back with one
     * label per cell, and the cells grow by 2 px into the background as well. */
    enum { H = 12, W = 16 };
    int32_t big[H * W] = {0}, sep[H * W], out[H * W];
    for (int y = 3; y < 9; y++)
        for (int x = 2; x < 14; x++) big[y * W + x] = x < 8 ? 40 : 1000000;
    CHECK_STATUS(unet_separate_cells(NULL, big, H, W, 2, 2, sep), UNET_STATUS_OK);
    CHECK_STATUS(unet_instances(NULL, sep, H, W, 2, out, &count), UNET_STATUS_OK);
    CHECK_EQ(count, 2);
    for (int i = 0; i < H * W; i++) {
        if (big[i]) CHECK_EQ(out[i], big[i] == 40 ? 1 : 2);
        int y = i / W, x = i % W;   /* grown ring: Chebyshev distance <= 2 from the cells */
        int near = y >= 1 && y < 11 && x >= 0 && x < 16;
        CHECK_EQ(out[i] != 0, near);
    }
}

TEST(instances_ties_and_classes) {
    /* 1 0 1: the middle pixel is reached by both cells in step 1 and takes the smaller label. */
    int32_t row[3] = {1, 0, 1}, out[9];
    int     count;
    CHECK_STATUS(unet_instances(NULL, row, 1, 3, 1, out, &count), UNET_STATUS_OK);
    CHECK_EQ(count, 2);
    CHECK_EQ(out[0], 1);
    CHECK_EQ(out[1], 1);
    CHECK_EQ(out[2], 2);
    /* A 4-neighbour wins over a smaller diagonal label. */
    int32_t m[9] = {1, 0, 0, 0, 0, 1, 0, 0, 0};
    CHECK_STATUS(unet_instances(NULL, m, 3, 3, 1, out, &count), UNET_STATUS_OK);
    CHECK_EQ(out[4], 2);   /* (1,1): 4-neighbour (1,2) = 2, diagonal (0,0) = 1 */
    CHECK_EQ(out[1], 1);   /* (0,1): 4-neighbour (0,0) */
    CHECK_EQ(out[2], 2);   /* (0,2): 4-neighbour (1,2) */
    CHECK_EQ(out[3], 1);   /* (1,0): 4-neighbour (0,0) */
    CHECK_EQ(out[7], 2);   /* (2,1): only diagonal (1,2) */
    CHECK_EQ(out[6], 0);   /* (2,0): nothing labelled next to it before step 1 */
    /* Class 3 (another class) is never grown into, class 2 is; grow stops after `grow` steps. */
    int32_t strip[8] = {1, 2, 2, 3, 0, 0, 0, 0};
    CHECK_STATUS(unet_instances(NULL, strip, 1, 8, 100, out, &count), UNET_STATUS_OK);
    CHECK_EQ(out[1], 1);
    CHECK_EQ(out[2], 1);
    CHECK_EQ(out[3], 0);
    CHECK_EQ(out[4], 0);
    int32_t line[8] = {1, 0, 0, 0, 0, 0, 0, 0};
    CHECK_STATUS(unet_instances(NULL, line, 1, 8, 3, out, &count), UNET_STATUS_OK);
    for (int i = 0; i < 8; i++) CHECK_EQ(out[i], i <= 3 ? 1 : 0);
    /* In place. */
    CHECK_STATUS(unet_instances(NULL, line, 1, 8, 3, line, &count), UNET_STATUS_OK);
    for (int i = 0; i < 8; i++) CHECK_EQ(line[i], i <= 3 ? 1 : 0);
}

TEST(instances_random_vs_reference) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 9);
    const int    h = 40, w = 57;
    const size_t n = (size_t)h * w;
    int32_t *cls = ints(n), *got = ints(n), *want = ints(n);
    for (int rep = 0; rep < 6; rep++) {
        for (size_t i = 0; i < n; i++) {   /* blobs of class 1 in a sea of 0, 2 and a few 3 */
            uint64_t r = unet__rng_below(&rng, 100);
            cls[i] = r < 45 ? 1 : r < 75 ? 0 : r < 97 ? 2 : 3;
        }
        int grow = rep;
        int count = -1, want_count = 0;
        CHECK_STATUS(unet_instances(NULL, cls, h, w, grow, got, &count), UNET_STATUS_OK);
        CHECK_STATUS(unet_connected_components(NULL, cls, h, w, 1, 4, want, &want_count),
                     UNET_STATUS_OK);
        ref_grow(cls, h, w, grow, want);
        CHECK_EQ(count, want_count);
        size_t d = count_diff_i32(got, want, n);
        if (d) printf("  grow %d: %zu pixels differ\n", grow, d);
        CHECK_EQ(d, 0);
    }
    free(cls), free(got), free(want);
}

TEST(instances_bad_args) {
    int32_t c[4] = {0, 1, 0, 1}, l[4];
    int     count = 7;
    CHECK_STATUS(unet_instances(NULL, NULL, 2, 2, 1, l, &count), UNET_STATUS_ARG);
    CHECK_STATUS(unet_instances(NULL, c, 2, 2, 1, NULL, &count), UNET_STATUS_ARG);
    CHECK_STATUS(unet_instances(NULL, c, 2, 2, 1, l, NULL), UNET_STATUS_ARG);
    CHECK_STATUS(unet_instances(NULL, c, 2, 0, 1, l, &count), UNET_STATUS_ARG);
    CHECK_STATUS(unet_instances(NULL, c, 2, 2, -1, l, &count), UNET_STATUS_ARG);
    CHECK_EQ(count, 7);
}

int main(void) {
    RUN(two_discs_vs_bruteforce);
    RUN(random_cells_vs_bruteforce);
    RUN(cutoff_edge);
    RUN(multi_blob_id);
    RUN(binary_equals_instances_when_apart);
    RUN(touching_cells_recipe);
    RUN(wc_modes);
    RUN(border_term_only_between_cells);
    RUN(transpose_symmetry);
    RUN(weightmap_bad_args);
    RUN(real_mask);
    RUN(separate_touching_squares);
    RUN(separate_random_vs_bruteforce);
    RUN(separate_bad_args);
    RUN(instances_regrow_separated);
    RUN(instances_ties_and_classes);
    RUN(instances_random_vs_reference);
    RUN(instances_bad_args);
    return harness_finish();
}
