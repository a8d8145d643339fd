/* bench_weightmap.c — time of unet_weightmap on a synthetic 1024x1024 instance mask with 300
 * cells (discs of radius 10-25 px at random places, random non-consecutive ids, overlapping
 * discs touch), w0 = 10, sigma = 5, balanced w_c.  Prints the median of 5 runs.
 *
 *     make BUILD=build build/bench/bench_weightmap && ./build/bench/bench_weightmap [threads]
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

enum { H = 1024, W = 1024, CELLS = 300, RUNS = 5 };

int main(int argc, char **argv) {
    unet_ctx *ctx = unet_ctx_create();
    if (!ctx) return 1;
    if (argc > 1 && unet_ctx_set_threads(ctx, atoi(argv[1])) != UNET_STATUS_OK) {
        fprintf(stderr, "bench_weightmap: %s\n", unet_ctx_errmsg(ctx));
        return 2;
    }
    int32_t *lab = calloc((size_t)H * W, sizeof *lab);
    float   *weight = malloc((size_t)H * W * sizeof *weight);
    if (!lab || !weight) return 1;

    struct unet__rng rng;
    unet__rng_seed(&rng, 1);
    for (int c = 0; c < CELLS; c++) {
        const int32_t id = 3 + 7 * c + (int32_t)unet__rng_below(&rng, 5);
        const double  cy = unet__rng_uniform(&rng) * H, cx = unet__rng_uniform(&rng) * W;
        const double  r = 10 + 15 * unet__rng_uniform(&rng);
        for (int y = (int)(cy - r); y <= (int)(cy + r) + 1; y++)
            for (int x = (int)(cx - r); x <= (int)(cx + r) + 1; x++) {
                if (y < 0 || y >= H || x < 0 || x >= W) continue;
                if ((y - cy) * (y - cy) + (x - cx) * (x - cx) <= r * r) lab[(size_t)y * W + x] = id;
            }
    }
    size_t fg = 0;
    for (size_t i = 0; i < (size_t)H * W; i++) fg += lab[i] != 0;

    double t[RUNS];
    for (int k = 0; k < RUNS; k++) {
        double t0 = bench_now();
        if (unet_weightmap(ctx, lab, H, W, 1, 10.0f, 5.0f, UNET_WC_BALANCE, weight) !=
            UNET_STATUS_OK) {
            fprintf(stderr, "bench_weightmap: %s\n", unet_ctx_errmsg(ctx));
            return 1;
        }
        t[k] = bench_now() - t0;
    }
    const double med = bench_median(t, RUNS);
    printf("weightmap %dx%d, %d cells (%.1f%% foreground), w0 10, sigma 5, %d threads: "
           "median %.1f ms (min %.1f, max %.1f) over %d runs\n",
           W, H, CELLS, 100.0 * fg / ((double)H * W), unet_ctx_threads(ctx), med * 1e3,
           t[0] * 1e3, t[RUNS - 1] * 1e3, RUNS);
    free(lab);
    free(weight);
    unet_ctx_free(ctx);
    return 0;
}
