/* bench_unet.c — time of the seed U-Net (1 input channel, 2 classes, base 64, depth 4,
 * BatchNorm, transposed up-convolution) with fixed random weights, one configuration per
 * process so that the peak RSS (getrusage) is that configuration's alone.
 *
 *     bench_unet infer|train SIZE BATCH THREADS RUNS [layers] [bf16] [nocache]
 *     bench_unet scale SIZE BATCH T1:T2 RUNS [bf16] [nocache]
 *
 * infer: unet_model_forward on a BATCH x 1 x SIZE x SIZE input (eval mode, BatchNorm folded
 * with the running statistics).  train: unet_train_step (forward in training mode,
 * cross-entropy loss, backward, Adam update) on random labels.  bf16: the model's precision is
 * UNET_PRECISION_BF16 (float32 where the CPU lacks AVX512_BF16: the line says which ran);
 * nocache: inference transforms its weights in every call, as before the inference cache
 * (model.h).  Warm-up calls first (they plan the memory; inference takes two, as the cache
 * entries are made at the second use: model_cache.c), then RUNS timed calls.  Prints one
 * machine-readable line:
 *
 *     RESULT impl=unet|unet-bf16 mode=infer size=512 batch=1 threads=2 runs=5 median_s=... min_s=...
 *            max_s=... cpu_s=... rss_mb=... gflop=... precision=fp32|bf16 cache=on|off cache_mb=...
 *
 * cpu_s: the median CPU time of the process per call (all threads), the work done whatever
 * share of a shared machine it got.
 *
 * gflop is the work of one call counted as multiply-adds x 2 of the convolutions (forward;
 * a training step counts 3x: forward, input gradient, weight gradient), whatever algorithm
 * computes them.  With "layers", it also prints per-node times (the sum over all timed runs
 * divided by RUNS; wall clock, or the process's CPU time when UNET_PROF_CPU is set, which is
 * steadier on a shared machine) as "LAYER name op size channels fwd_ms ... bwd_ms ..." lines.
 *
 * scale: where a second thread is lost in the training step (issue 14, item 5).  Training
 * steps alternate between T1 and T2 threads in this one process (after one warm-up of each),
 * so that the machine's load hits both alike, each with its own per-node wall-clock profile.
 * Prints, per kind of op and direction, the milliseconds per step with T1 and T2 threads and
 * the speed-up; "step" is what the training step does outside the nodes (loss, zeroing the
 * gradients, their norm, the optimizer).  Then RESULT lines for both thread counts and
 *
 *     SCALE size=256 batch=4 t1=1 t2=2 speedup=... (median of the per-pair ratios)
 */
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bench.h"

static const char *op_name(enum unet__node_op op) {
    switch (op) {
    case UNET__NODE_CONV: return "conv";
    case UNET__NODE_BN: return "bn";
    case UNET__NODE_POOL: return "pool";
    case UNET__NODE_CONVT: return "convt";
    case UNET__NODE_UPSAMPLE: return "upsample";
    case UNET__NODE_CONCAT: return "concat";
    case UNET__NODE_DROPOUT: return "dropout";
    case UNET__NODE_ADD: return "add";
    case UNET__NODE_CROP: return "crop";
    }
    return "?";
}

static int usage(void) {
    fprintf(stderr, "usage: bench_unet infer|train SIZE BATCH THREADS RUNS [layers] [bf16] "
                    "[nocache]\n"
                    "       bench_unet scale SIZE BATCH T1:T2 RUNS [bf16] [nocache]\n");
    return 2;
}

#define N_KINDS 10 /* the ops of op_name, then the step outside the nodes */

/* Milliseconds per step of each (op kind, direction) of prof, and the rest of the step. */
static void by_kind(const unet_model *m, const double *prof, double step_s, int runs,
                    double out[N_KINDS][2]) {
    memset(out, 0, sizeof(double) * N_KINDS * 2);
    double nodes = 0.0;
    for (int i = 0; i < m->n_nodes; i++) {
        out[m->nodes[i].op][0] += prof[2 * i] * 1e3 / runs;
        out[m->nodes[i].op][1] += prof[2 * i + 1] * 1e3 / runs;
        nodes += prof[2 * i] + prof[2 * i + 1];
    }
    out[N_KINDS - 1][0] = (step_s - nodes) * 1e3 / runs;
}

/* bench_unet scale: alternate T1- and T2-thread training steps, one profile each. */
static int scale(unet_ctx *ctx, unet_model *m, const float *x, const int32_t *target, int size,
                 int batch, const int thr[2], int runs) {
    unet_optim opt = unet_optim_default(UNET_OPTIM_ADAM);
    double *prof[2] = {calloc((size_t)m->n_nodes * 2, sizeof(double)),
                       calloc((size_t)m->n_nodes * 2, sizeof(double))};
    double *t[2] = {calloc((size_t)runs, sizeof(double)), calloc((size_t)runs, sizeof(double))};
    double *ratio = calloc((size_t)runs, sizeof(double)), total[2] = {0.0, 0.0};
    if (!prof[0] || !prof[1] || !t[0] || !t[1] || !ratio) return 1;
    for (int r = -1; r < runs; r++)
        for (int k = 0; k < 2; k++) {
            unet_ctx_set_threads(ctx, thr[k]);
            m->prof = r >= 0 ? prof[k] : NULL;
            double loss, t0 = bench_now();
            if (unet_train_step(ctx, m, &opt, UNET_LOSS_CE, x, target, NULL, batch, size, size,
                                &loss) != UNET_STATUS_OK) {
                fprintf(stderr, "bench_unet: %s\n", unet_ctx_errmsg(ctx));
                return 1;
            }
            if (r < 0) continue;
            t[k][r] = bench_now() - t0;
            total[k] += t[k][r];
            if (k == 1) ratio[r] = t[0][r] / t[1][r];
        }
    m->prof = NULL;
    double kinds[2][N_KINDS][2];
    for (int k = 0; k < 2; k++) by_kind(m, prof[k], total[k], runs, kinds[k]);
    printf("OP %-9s %-3s %10s %10s %8s\n", "op", "dir", "ms_t1", "ms_t2", "speedup");
    for (int o = 0; o < N_KINDS; o++)
        for (int d = 0; d < 2; d++) {
            double a = kinds[0][o][d], b = kinds[1][o][d];
            if (a < 0.05 && b < 0.05) continue;
            printf("OP %-9s %-3s %10.1f %10.1f %7.2fx\n",
                   o == N_KINDS - 1 ? "step" : op_name((enum unet__node_op)o),
                   o == N_KINDS - 1 ? "-" : d ? "bwd" : "fwd", a, b, b > 0 ? a / b : 0.0);
        }
    for (int k = 0; k < 2; k++) {
        double med = bench_median(t[k], runs);
        printf("RESULT impl=unet mode=train size=%d batch=%d threads=%d runs=%d median_s=%.4f "
               "min_s=%.4f max_s=%.4f\n",
               size, batch, thr[k], runs, med, t[k][0], t[k][runs - 1]);
    }
    printf("SCALE size=%d batch=%d t1=%d t2=%d speedup=%.3f\n", size, batch, thr[0], thr[1],
           bench_median(ratio, runs));
    for (int k = 0; k < 2; k++) free(prof[k]), free(t[k]);
    free(ratio);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 6) return usage();
    const char *mode = argv[1];
    const bool is_scale = strcmp(mode, "scale") == 0;
    const bool train = is_scale || strcmp(mode, "train") == 0;
    if (!train && strcmp(mode, "infer") != 0) return usage();
    const int size = atoi(argv[2]), batch = atoi(argv[3]), threads = atoi(argv[4]);
    int thr[2] = {threads, 0};
    if (is_scale && (sscanf(argv[4], "%d:%d", &thr[0], &thr[1]) != 2 || thr[1] < 1)) return usage();
    const int runs = atoi(argv[5]);
    bool layers = false, bf16 = false, cache = true;
    for (int i = 6; i < argc; i++) {
        if (strcmp(argv[i], "layers") == 0) layers = true;
        else if (strcmp(argv[i], "bf16") == 0) bf16 = true;
        else if (strcmp(argv[i], "nocache") == 0) cache = false;
        else return usage();
    }
    if (size < 16 || batch < 1 || threads < 1 || runs < 1) return usage();
    unet_ctx *ctx = unet_ctx_create();
    unet_model *m = NULL;
    unet_config cfg = unet_config_default(UNET_ARCH_UNET);
    if (!ctx || unet_ctx_set_threads(ctx, threads) != UNET_STATUS_OK ||
        unet_model_create(ctx, &cfg, 1234, &m) != UNET_STATUS_OK) {
        fprintf(stderr, "bench_unet: %s\n", ctx ? unet_ctx_errmsg(ctx) : "out of memory");
        return 1;
    }
    if (bf16 && !unet_precision_native(UNET_PRECISION_BF16)) {
        fprintf(stderr, "bench_unet: bf16: this CPU (or UNET_CPU) has no AVX512_BF16\n");
        return 3;
    }
    if (bf16) unet_model_set_precision(ctx, m, UNET_PRECISION_BF16);
    unet_model_set_cache(m, cache);
    double flops = 0.0;
    unet_model_cost(ctx, m, batch, size, size, &flops, NULL);
    if (train) flops *= 3.0;

    const size_t npix = (size_t)batch * size * size;
    float   *x = malloc(npix * sizeof *x);
    float   *logits = malloc(npix * (size_t)cfg.classes * sizeof *logits);
    int32_t *target = malloc(npix * sizeof *target);
    double  *t = malloc((size_t)runs * sizeof *t), *cpu = malloc((size_t)runs * sizeof *cpu);
    if (!x || !logits || !target || !t || !cpu) return 1;
    struct unet__rng rng;
    unet__rng_seed(&rng, 42);
    for (size_t i = 0; i < npix; i++) {
        x[i] = 2.0f * unet__rng_uniform(&rng) - 1.0f;
        target[i] = (int32_t)unet__rng_below(&rng, (uint64_t)cfg.classes);
    }
    if (is_scale) {
        int rc = scale(ctx, m, x, target, size, batch, thr, runs);
        free(x), free(logits), free(target), free(t), free(cpu);
        unet_model_free(m);
        unet_ctx_free(ctx);
        return rc;
    }
    unet_optim opt = unet_optim_default(UNET_OPTIM_ADAM);
    double *prof = NULL;

    for (int r = train ? -1 : -2; r < runs; r++) {
        if (r == 0 && layers) {
            /* Per-node timing starts after the warm-up calls (memory planned, cache made). */
            prof = calloc((size_t)m->n_nodes * 2, sizeof *prof);
            m->prof = prof;
            m->prof_cpu = getenv("UNET_PROF_CPU") != NULL;
        }
        double t0 = bench_now(), c0 = bench_cpu_now();
        unet_status s;
        if (train) {
            double loss;
            s = unet_train_step(ctx, m, &opt, UNET_LOSS_CE, x, target, NULL, batch, size, size,
                                &loss);
        } else {
            s = unet_model_forward(ctx, m, x, batch, size, size, logits);
        }
        double dt = bench_now() - t0, dc = bench_cpu_now() - c0;
        if (s != UNET_STATUS_OK) {
            fprintf(stderr, "bench_unet: %s: %s\n", unet_status_str(s), unet_ctx_errmsg(ctx));
            return 1;
        }
        if (r >= 0) t[r] = dt, cpu[r] = dc;
    }
    double sum_t = 0.0;
    for (int r = 0; r < runs; r++) sum_t += t[r];
    double med = bench_median(t, runs), cpu_med = bench_median(cpu, runs);

    if (prof) {
        double total = 0.0;
        for (int i = 0; i < m->n_nodes; i++) total += prof[2 * i] + prof[2 * i + 1];
        for (int i = 0; i < m->n_nodes; i++) {
            const struct unet__node *nd = &m->nodes[i];
            double gf = 0.0;
            if (nd->op == UNET__NODE_CONV) {
                const struct unet__conv2d_dims *d = &nd->d.conv;
                gf = 2.0 * d->N * d->C_out * d->C_in * d->K_h * d->K_w * (double)d->H_out *
                     d->W_out;
            } else if (nd->op == UNET__NODE_CONVT) {
                const struct unet__convt2d_dims *d = &nd->d.convt;
                gf = 2.0 * d->N * d->C_out * d->C_in * d->K_h * d->K_w * (double)d->H_in * d->W_in;
            }
            double fw = prof[2 * i] / runs, bw = prof[2 * i + 1] / runs;
            printf("LAYER %-36s %-8s %5dx%-5d c=%-5d fwd_ms=%9.2f (%6.1f GFLOP/s) bwd_ms=%9.2f "
                   "(%6.1f GFLOP/s) share=%4.1f%%\n",
                   nd->name, op_name(nd->op), m->values[nd->out].h, m->values[nd->out].w,
                   m->values[nd->out].c, fw * 1e3, fw > 0 ? gf / fw * 1e-9 : 0.0, bw * 1e3,
                   bw > 0 ? 2 * gf / bw * 1e-9 : 0.0, 100.0 * (fw + bw) * runs / total);
        }
        printf("LAYER total %.2f ms of %.2f ms per call\n", total / runs * 1e3, sum_t / runs * 1e3);
        m->prof = NULL;
        free(prof);
    }

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("RESULT impl=%s mode=%s size=%d batch=%d threads=%d runs=%d median_s=%.4f "
           "min_s=%.4f max_s=%.4f cpu_s=%.4f rss_mb=%.1f gflop=%.2f precision=%s cache=%s "
           "cache_mb=%.1f\n",
           bf16 ? "unet-bf16" : "unet", mode, size, batch, threads, runs, med, t[0], t[runs - 1],
           cpu_med, ru.ru_maxrss / 1024.0,
           flops * 1e-9, bf16 ? "bf16" : "fp32", cache ? "on" : "off",
           (double)unet__wcache_bytes(m) / (1 << 20));
    free(x);
    free(logits);
    free(target);
    free(t);
    free(cpu);
    unet_model_free(m);
    unet_ctx_free(ctx);
    return 0;
}
