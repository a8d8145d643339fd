/* bench_precision.c — the bf16 / float32 speed-up of the seed U-Net (bench_unet's model: base
 * 64, fixed random weights) measured inside one process, calls alternating between the two
 * precisions, so that the load of a shared machine hits both alike.
 *
 *     bench_precision infer|train SIZE BATCH THREADS ROUNDS
 *
 * infer: two models with the same weights, one float32 and one bf16 (each keeps its own
 * transformed-weight cache, which a switch of precision would drop), one forward each per
 * round.  train: one model whose precision is switched before each unet_train_step (Adam, random
 * labels; training keeps no cache).  Warm-up rounds (two for inference: its cache entries are
 * made at the second use), then ROUNDS timed ones.  Prints
 *
 *     PRECISION mode=infer size=512 batch=1 threads=1 rounds=7 fp32_cpu_s=... bf16_cpu_s=...
 *               cpu_ratio=... fp32_s=... bf16_s=... wall_ratio=...
 *
 * cpu_ratio is the median over rounds of fp32 CPU time / bf16 CPU time of the same round (the
 * process's CPU time: the work done, whatever share of the cores it got); the _s columns are
 * medians of wall-clock seconds and wall_ratio their ratio.  Exits 3 when this CPU (or UNET_CPU)
 * has no AVX512_BF16.  bench_unet and bench/run time each precision in its own process; this
 * is the steadier ratio while other jobs share the cores, not a replacement for them.
 */
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

enum { MAX_ROUNDS = 64 };

static int usage(void) {
    fprintf(stderr, "usage: bench_precision infer|train SIZE BATCH THREADS ROUNDS (ROUNDS <= %d)\n",
            MAX_ROUNDS);
    return 2;
}

int main(int argc, char **argv) {
    if (argc != 6) return usage();
    const bool train = strcmp(argv[1], "train") == 0;
    if (!train && strcmp(argv[1], "infer") != 0) return usage();
    const int size = atoi(argv[2]), batch = atoi(argv[3]), threads = atoi(argv[4]);
    const int rounds = atoi(argv[5]);
    if (size < 16 || batch < 1 || threads < 1 || rounds < 1 || rounds > MAX_ROUNDS)
        return usage();
    if (!unet_precision_native(UNET_PRECISION_BF16)) {
        fprintf(stderr, "bench_precision: this CPU (or UNET_CPU) has no AVX512_BF16\n");
        return 3;
    }
    unet_ctx *ctx = unet_ctx_create();
    unet_model *m[2] = {NULL, NULL};
    unet_config cfg = unet_config_default(UNET_ARCH_UNET);
    if (!ctx || unet_ctx_set_threads(ctx, threads) != UNET_STATUS_OK) return 1;
    for (int p = 0; p < (train ? 1 : 2); p++)
        if (unet_model_create(ctx, &cfg, 1234, &m[p]) != UNET_STATUS_OK) {
            fprintf(stderr, "bench_precision: %s\n", unet_ctx_errmsg(ctx));
            return 1;
        }
    if (!train) unet_model_set_precision(ctx, m[1], UNET_PRECISION_BF16);

    const size_t npix = (size_t)batch * size * size;
    float   *x = malloc(npix * sizeof *x);
    float   *logits = malloc(npix * (size_t)cfg.classes * sizeof *logits);
    int32_t *target = malloc(npix * sizeof *target);
    if (!x || !logits || !target) return 1;
    struct unet__rng rng;
    unet__rng_seed(&rng, 42);
    for (size_t i = 0; i < npix; i++) {
        x[i] = 2.0f * unet__rng_uniform(&rng) - 1.0f;
        target[i] = (int32_t)unet__rng_below(&rng, (uint64_t)cfg.classes);
    }
    unet_optim opt = unet_optim_default(UNET_OPTIM_ADAM);
    double cpu[2][MAX_ROUNDS], wall[2][MAX_ROUNDS], ratio[MAX_ROUNDS];
    for (int r = train ? -1 : -2; r < rounds; r++)
        for (int p = 0; p < 2; p++) {
            unet_model *mp = train ? m[0] : m[p];
            if (train)
                unet_model_set_precision(ctx, mp, p ? UNET_PRECISION_BF16 : UNET_PRECISION_FP32);
            const double t0 = bench_now(), c0 = bench_cpu_now();
            double loss;
            unet_status s = train ? unet_train_step(ctx, mp, &opt, UNET_LOSS_CE, x, target, NULL,
                                                    batch, size, size, &loss)
                                  : unet_model_forward(ctx, mp, x, batch, size, size, logits);
            if (s != UNET_STATUS_OK) {
                fprintf(stderr, "bench_precision: %s: %s\n", unet_status_str(s),
                        unet_ctx_errmsg(ctx));
                return 1;
            }
            if (r >= 0) cpu[p][r] = bench_cpu_now() - c0, wall[p][r] = bench_now() - t0;
        }
    for (int r = 0; r < rounds; r++) ratio[r] = cpu[0][r] / cpu[1][r];
    const double f_cpu = bench_median(cpu[0], rounds), b_cpu = bench_median(cpu[1], rounds);
    const double f_s = bench_median(wall[0], rounds), b_s = bench_median(wall[1], rounds);
    printf("PRECISION mode=%s size=%d batch=%d threads=%d rounds=%d fp32_cpu_s=%.4f "
           "bf16_cpu_s=%.4f cpu_ratio=%.3f fp32_s=%.4f bf16_s=%.4f wall_ratio=%.3f\n",
           argv[1], size, batch, threads, rounds, f_cpu, b_cpu, bench_median(ratio, rounds), f_s,
           b_s, f_s / b_s);
    free(x), free(logits), free(target);
    unet_model_free(m[0]);
    unet_model_free(m[1]);
    unet_ctx_free(ctx);
    return 0;
}
