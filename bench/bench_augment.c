/* bench_augment.c — time to prepare one training batch (crop, augmentation, copy-out).
 *
 * Cases: 4 x 256x256 same-padding tiles (the seed's U-Net) and 1 x 572 -> 388 (the paper's
 * valid-convolution tile), each with no augmentation, the seed recipe (flips and quarter turns)
 * and the paper's (elastic 3x3 grid, 10 px, rotation, shift, gray values).  Synchronous
 * (workers = 0), so the number is the single-thread cost per batch: the median of RUNS batches
 * after WARMUP.  Then the pipeline: 2 workers feed a caller that "trains" for STEP_MS per batch;
 * the caller's wait per batch shows what augmentation costs the training loop once it runs
 * ahead (compare with unet_train_step's time per batch, seconds on a CPU).
 *
 * The data: 8 random 512x512 single-channel images with binary targets and weight maps.
 */
#include "unet.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RUNS    21
#define WARMUP  3
#define STEP_MS 20

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void die(unet_ctx *ctx, const char *what) {
    fprintf(stderr, "bench_augment: %s: %s\n", what, unet_ctx_errmsg(ctx));
    exit(1);
}

static unet_dataset *make_dataset(unet_ctx *ctx) {
    enum { N = 8, S = 512 };
    float *img = malloc(sizeof(float) * S * S), *wt = malloc(sizeof(float) * S * S);
    int32_t *t = malloc(sizeof(int32_t) * S * S);
    if (!img || !wt || !t) {
        fprintf(stderr, "bench_augment: out of memory\n");
        exit(1);
    }
    unet_dataset *ds = NULL;
    if (unet_dataset_create(ctx, 1, &ds) != UNET_STATUS_OK) die(ctx, "dataset");
    unsigned seed = 1;
    for (int i = 0; i < N; i++) {
        for (int p = 0; p < S * S; p++) {
            seed = seed * 1664525u + 1013904223u;
            img[p] = (float)(seed >> 8) / 16777216.0f;
            t[p] = img[p] > 0.5f;
            wt[p] = 1.0f + 9.0f * img[p];
        }
        if (unet_dataset_add(ctx, ds, img, t, wt, S, S, NULL) != UNET_STATUS_OK) die(ctx, "add");
    }
    free(img);
    free(wt);
    free(t);
    return ds;
}

/* Median milliseconds per batch, synchronous. */
static double time_batches(unet_ctx *ctx, const unet_dataset *ds, int batch, int in, int out,
                           const unet_augment *aug) {
    unet_sampler *s = NULL;
    if (unet_sampler_create(ctx, ds, batch, in, in, out, out, aug, 1, 0, &s) != UNET_STATUS_OK)
        die(ctx, "sampler");
    float *x = malloc(sizeof(float) * batch * in * in), *w = malloc(sizeof(float) * batch * out * out);
    int32_t *t = malloc(sizeof(int32_t) * batch * out * out);
    if (!x || !w || !t) {
        fprintf(stderr, "bench_augment: out of memory\n");
        exit(1);
    }
    double ms[RUNS];
    for (int i = 0; i < WARMUP + RUNS; i++) {
        double t0 = now();
        if (unet_sampler_next(ctx, s, x, t, w) != UNET_STATUS_OK) die(ctx, "next");
        if (i >= WARMUP) ms[i - WARMUP] = 1e3 * (now() - t0);
    }
    qsort(ms, RUNS, sizeof ms[0], cmp_double);
    unet_sampler_free(s);
    free(x);
    free(w);
    free(t);
    return ms[RUNS / 2];
}

/* The caller's mean wait per batch with 2 workers ahead and a STEP_MS "training step". */
static void time_pipeline(unet_ctx *ctx, const unet_dataset *ds, int batch, int in, int out,
                          const unet_augment *aug) {
    enum { BATCHES = 20 };
    unet_sampler *s = NULL;
    if (unet_sampler_create(ctx, ds, batch, in, in, out, out, aug, 1, 2, &s) != UNET_STATUS_OK)
        die(ctx, "sampler");
    float *x = malloc(sizeof(float) * batch * in * in), *w = malloc(sizeof(float) * batch * out * out);
    int32_t *t = malloc(sizeof(int32_t) * batch * out * out);
    if (!x || !w || !t) {
        fprintf(stderr, "bench_augment: out of memory\n");
        exit(1);
    }
    /* The first batch cannot be ahead of anything: leave it out of the steady state. */
    if (unet_sampler_next(ctx, s, x, t, w) != UNET_STATUS_OK) die(ctx, "next");
    double work0, wait0, work1, wait1;
    unet_sampler_times(s, &work0, &wait0);
    for (int i = 0; i < BATCHES; i++) {
        struct timespec step = {0, STEP_MS * 1000000L};
        nanosleep(&step, NULL);
        if (unet_sampler_next(ctx, s, x, t, w) != UNET_STATUS_OK) die(ctx, "next");
    }
    unet_sampler_times(s, &work1, &wait1);
    double wait_ms = 1e3 * (wait1 - wait0) / BATCHES;
    printf("  pipelined, 2 workers, %d ms step: caller waits %.3f ms per batch (%.2f%% of the "
           "step)\n", STEP_MS, wait_ms, 100.0 * wait_ms / STEP_MS);
    unet_sampler_free(s);
    free(x);
    free(w);
    free(t);
}

int main(void) {
    unet_ctx *ctx = unet_ctx_create();
    if (!ctx) return 1;
    unet_dataset *ds = make_dataset(ctx);
    const unet_augment none = unet_augment_none(), seed = unet_augment_default(),
                       paper = unet_augment_paper();
    const struct {
        const char *name;
        int         batch, in, out;
    } cases[2] = {{"4 x 256x256 same padding", 4, 256, 256}, {"1 x 572 -> 388 valid", 1, 572, 388}};
    printf("bench_augment: ms per batch, median of %d, one thread (workers = 0)\n", RUNS);
    for (int c = 0; c < 2; c++) {
        double t_none = time_batches(ctx, ds, cases[c].batch, cases[c].in, cases[c].out, &none);
        double t_seed = time_batches(ctx, ds, cases[c].batch, cases[c].in, cases[c].out, &seed);
        double t_paper = time_batches(ctx, ds, cases[c].batch, cases[c].in, cases[c].out, &paper);
        printf("%-26s none %7.3f   flips %7.3f   paper %7.3f ms\n", cases[c].name, t_none,
               t_seed, t_paper);
        time_pipeline(ctx, ds, cases[c].batch, cases[c].in, cases[c].out, &paper);
    }
    unet_dataset_free(ds);
    unet_ctx_free(ctx);
    return 0;
}
