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

#include "bench.h"

#define RUNS    21
#define WARMUP  3
#define STEP_MS 20

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

/* A sampler with `workers` threads and the buffers of one of its batches. */
struct run {
    unet_sampler *s;
    float        *x, *w;
    int32_t      *t;
};

static struct run run_open(unet_ctx *ctx, const unet_dataset *ds, int batch, int in, int out,
                           const unet_augment *aug, int workers) {
    struct run r = {0};
    if (unet_sampler_create(ctx, ds, batch, in, in, out, out, aug, 1, workers, &r.s) !=
        UNET_STATUS_OK)
        die(ctx, "sampler");
    r.x = malloc(sizeof(float) * batch * in * in);
    r.w = malloc(sizeof(float) * batch * out * out);
    r.t = malloc(sizeof(int32_t) * batch * out * out);
    if (!r.x || !r.w || !r.t) {
        fprintf(stderr, "bench_augment: out of memory\n");
        exit(1);
    }
    return r;
}

static void run_next(unet_ctx *ctx, struct run *r) {
    if (unet_sampler_next(ctx, r->s, r->x, r->t, r->w) != UNET_STATUS_OK) die(ctx, "next");
}

static void run_close(struct run *r) {
    unet_sampler_free(r->s);
    free(r->x);
    free(r->w);
    free(r->t);
}

/* Median milliseconds per batch, synchronous. */
static double time_batches(unet_ctx *ctx, const unet_dataset *ds, int batch, int in, int out,
                           const unet_augment *aug) {
    struct run r = run_open(ctx, ds, batch, in, out, aug, 0);
    double ms[RUNS];
    for (int i = 0; i < WARMUP + RUNS; i++) {
        double t0 = bench_now();
        run_next(ctx, &r);
        if (i >= WARMUP) ms[i - WARMUP] = 1e3 * (bench_now() - t0);
    }
    run_close(&r);
    return bench_median(ms, RUNS);
}

/* The caller's mean wait per batch with 2 workers ahead and a STEP_MS "training step". */
static void time_pipeline(unet_ctx *ctx, const unet_dataset *ds, int batch, int in, int out,
                          const unet_augment *aug) {
    enum { BATCHES = 20 };
    struct run r = run_open(ctx, ds, batch, in, out, aug, 2);
    /* The first batch cannot be ahead of anything: leave it out of the steady state. */
    run_next(ctx, &r);
    double work0, wait0, work1, wait1;
    unet_sampler_times(r.s, &work0, &wait0);
    for (int i = 0; i < BATCHES; i++) {
        struct timespec step = {0, STEP_MS * 1000000L};
        nanosleep(&step, NULL);
        run_next(ctx, &r);
    }
    unet_sampler_times(r.s, &work1, &wait1);
    double wait_ms = 1e3 * (wait1 - wait0) / BATCHES;
    printf("  pipelined, 2 workers, %d ms step: caller waits %.3f ms per batch (%.2f%% of the "
           "step)\n", STEP_MS, wait_ms, 100.0 * wait_ms / STEP_MS);
    run_close(&r);
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
