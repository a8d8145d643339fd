/* batchnorm.c — BatchNorm2d forward (training and eval) and training-mode backward.
 *
 * Per channel c, over the M = N*H*W values x[n, c, :, :]:
 *     mean = sum x / M,   var = sum (x - mean)^2 / M   (biased: the one that normalises)
 *     rstd = 1 / sqrt(var + eps)
 *     y    = (x - mean) * rstd * gamma + beta
 *     running_mean = (1 - momentum) running_mean + momentum mean
 *     running_var  = (1 - momentum) running_var  + momentum var * M / (M - 1)   (unbiased)
 * exactly PyTorch's nn.BatchNorm2d.  Eval replaces mean and var by the running statistics.
 *
 * Numerics: the statistics are two passes (mean first, then squared deviations) summed in
 * double, as PyTorch's CPU kernel does; the one-pass E[x^2] - E[x]^2 was rejected because it
 * cancels catastrophically when |mean| >> std.  The sums use four independent accumulators so
 * they are not bound by the latency of one dependency chain; the order is fixed, so results do
 * not depend on the thread count.  Per-element work is float: y = (x - mean) * a + beta with
 * a = rstd * gamma.  PyTorch folds the mean into the shift (y = x * a + (beta - mean * a)),
 * which loses |mean| * a * 2^-24 when |mean| >> std; subtracting first is one more operation
 * on a memory-bound loop.
 *
 * The elementwise loops are `omp simd`: vector code with the scalar loop's exact results (each
 * element is computed alone, with the same operations).  The reductions stay scalar in double.
 *
 * Threads: one `omp parallel for` over channels; a channel's statistics and outputs are
 * computed by one thread, so each thread owns its writes (y, save_*, running_*, dgamma, dbeta
 * and dx of its channels).  y may alias x: a channel is read completely (both passes) before
 * any of its outputs is written.
 *
 * Contract (ops.h): x, y (N, C, H, W) float32 NCHW, contiguous, y may alias x; gamma, beta,
 * running_mean/var and save_mean/rstd (C); forward overwrites y (and the saved statistics),
 * backward accumulates into dx, dgamma, dbeta.  Tested (tests/test_batchnorm.c) against
 * unet__batchnorm_forward_train_ref / _backward_ref, against PyTorch (golden batchnorm, from
 * tools/golden/batchnorm.py), by finite differences, and for the same bits on 1 and 2 threads.
 */
#include "ops/ops.h"

#include <math.h>

static size_t plane_size(const struct unet__bn_dims *d) {
    return (size_t)d->H * d->W;
}

/* Channel c of image n. */
static size_t plane_offset(const struct unet__bn_dims *d, int n, int c) {
    return ((size_t)n * d->C + c) * plane_size(d);
}

/* sum x[i], four lanes in double. */
static double sum_f64(const float *x, size_t n) {
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += x[i];
        s1 += x[i + 1];
        s2 += x[i + 2];
        s3 += x[i + 3];
    }
    for (; i < n; i++)
        s0 += x[i];
    return (s0 + s1) + (s2 + s3);
}

/* sum (x[i] - mean)^2 in double. */
static double sum_sq_dev_f64(const float *x, size_t n, double mean) {
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        double e0 = x[i] - mean, e1 = x[i + 1] - mean, e2 = x[i + 2] - mean, e3 = x[i + 3] - mean;
        s0 += e0 * e0;
        s1 += e1 * e1;
        s2 += e2 * e2;
        s3 += e3 * e3;
    }
    for (; i < n; i++) {
        double e = x[i] - mean;
        s0 += e * e;
    }
    return (s0 + s1) + (s2 + s3);
}

/* sum dy[i] and sum dy[i] (x[i] - mean) in double. */
static void sum_dy_xmu_f64(const float *dy, const float *x, size_t n, double mean, double *s_dy,
                           double *s_dyxmu) {
    double a0 = 0.0, a1 = 0.0, b0 = 0.0, b1 = 0.0;
    size_t i = 0;
    for (; i + 2 <= n; i += 2) {
        a0 += dy[i];
        a1 += dy[i + 1];
        b0 += (double)dy[i] * (x[i] - mean);
        b1 += (double)dy[i + 1] * (x[i + 1] - mean);
    }
    for (; i < n; i++) {
        a0 += dy[i];
        b0 += (double)dy[i] * (x[i] - mean);
    }
    *s_dy += a0 + a1;
    *s_dyxmu += b0 + b1;
}

/* y = (x - mean) * a + b over one plane (y may be x). */
static void plane_affine(float *y, const float *x, size_t n, float mean, float a, float b) {
#pragma omp simd
    for (size_t i = 0; i < n; i++)
        y[i] = (x[i] - mean) * a + b;
}

static void update_running(float *running_mean, float *running_var, int c, double mean,
                           double var_sum, size_t M, float momentum) {
    /* running = (1 - momentum) running + momentum * batch, with the unbiased variance.
     * M >= 2 is the model's check (PyTorch: "Expected more than 1 value per channel"). */
    const double m = momentum;
    if (running_mean) running_mean[c] = (float)((1.0 - m) * running_mean[c] + m * mean);
    if (running_var)
        running_var[c] = (float)((1.0 - m) * running_var[c] + m * var_sum / (double)(M - 1));
}

/* Channel c's sum over the batch and its sum of squared deviations from mean. */
static double channel_sum(const float *x, const struct unet__bn_dims *d, int c) {
    double s = 0.0;
    for (int n = 0; n < d->N; n++)
        s += sum_f64(x + plane_offset(d, n, c), plane_size(d));
    return s;
}

static double channel_ssd(const float *x, const struct unet__bn_dims *d, int c, double mean) {
    double ss = 0.0;
    for (int n = 0; n < d->N; n++)
        ss += sum_sq_dev_f64(x + plane_offset(d, n, c), plane_size(d), mean);
    return ss;
}

/* Channel c normalised with the statistics of M values (mean, squared deviations ss): saved
 * for backward, the running ones updated, y written. */
static void channel_normalize(float *y, float *save_mean, float *save_rstd, float *running_mean,
                              float *running_var, const float *x, const float *gamma,
                              const float *beta, const struct unet__bn_dims *d, int c, double mean,
                              double ss, size_t M) {
    const double rstd = 1.0 / sqrt(ss / (double)M + (double)d->eps);
    save_mean[c] = (float)mean;
    save_rstd[c] = (float)rstd;
    update_running(running_mean, running_var, c, mean, ss, M, d->momentum);
    const float a = (float)(rstd * (gamma ? gamma[c] : 1.0f));
    const float b = beta ? beta[c] : 0.0f;
    for (int n = 0; n < d->N; n++)
        plane_affine(y + plane_offset(d, n, c), x + plane_offset(d, n, c), plane_size(d),
                     (float)mean, a, b);
}

void unet__batchnorm_forward_train(float *y, float *save_mean, float *save_rstd,
                                   float *running_mean, float *running_var, const float *x,
                                   const float *gamma, const float *beta,
                                   const struct unet__bn_dims *d) {
    const size_t M = (size_t)d->N * plane_size(d);
    UNET_ASSERT(M >= 2);
#pragma omp parallel for schedule(static)
    for (int c = 0; c < d->C; c++) {
        const double mean = channel_sum(x, d, c) / (double)M;
        channel_normalize(y, save_mean, save_rstd, running_mean, running_var, x, gamma, beta, d,
                          c, mean, channel_ssd(x, d, c, mean), M);
    }
}

/* Synchronised batch-norm: the same two passes, each channel's sums (and the count) summed
 * over the processes by sync->fn between them; a process's share of the sums is formed as
 * above, so the statistics differ from one process's only by the order of the double sums. */
void unet__batchnorm_forward_train_sync(float *y, float *save_mean, float *save_rstd,
                                        float *running_mean, float *running_var, const float *x,
                                        const float *gamma, const float *beta,
                                        const struct unet__bn_dims *d,
                                        const struct unet__bn_sync *sync) {
    const int C = d->C;
    double *v = sync->buf, *ss = sync->buf + C + 1;  /* sums, count; squared deviations */
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++)
        v[c] = channel_sum(x, d, c);
    v[C] = (double)d->N * plane_size(d);
    sync->fn(v, (size_t)C + 1, sync->user);
    const size_t M = (size_t)v[C];
    UNET_ASSERT(M >= 2);
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++)
        ss[c] = channel_ssd(x, d, c, v[c] / (double)M);
    sync->fn(ss, (size_t)C, sync->user);
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++)
        channel_normalize(y, save_mean, save_rstd, running_mean, running_var, x, gamma, beta, d,
                          c, v[c] / (double)M, ss[c], M);
}

void unet__batchnorm_forward_eval(float *y, const float *x, const float *gamma, const float *beta,
                                  const float *running_mean, const float *running_var,
                                  const struct unet__bn_dims *d) {
    const size_t P = plane_size(d);
#pragma omp parallel for schedule(static)
    for (int c = 0; c < d->C; c++) {
        const double rstd = 1.0 / sqrt((double)running_var[c] + (double)d->eps);
        const float  a = (float)(rstd * (gamma ? gamma[c] : 1.0f));
        const float  b = beta ? beta[c] : 0.0f;
        for (int n = 0; n < d->N; n++)
            plane_affine(y + plane_offset(d, n, c), x + plane_offset(d, n, c), P, running_mean[c],
                         a, b);
    }
}

/* Inverts y = (x - mean) rstd gamma + beta where mean and rstd depend on every x of the
 * channel.  With xhat = (x - mean) rstd and g = dy gamma:
 *     dx = rstd (g - mean(g) - xhat mean(g xhat))
 *        = (dy - sum dy / M - (x - mean) k) rstd gamma,  k = rstd^2 sum dy (x - mean) / M
 *     dgamma = sum dy xhat = rstd sum dy (x - mean),   dbeta = sum dy. */
/* Channel c's sum dy and sum dy (x - mean) over the batch. */
static void channel_dsums(const float *dy, const float *x, const struct unet__bn_dims *d, int c,
                          float mean, double *s_dy, double *s_dyxmu) {
    *s_dy = *s_dyxmu = 0.0;
    for (int n = 0; n < d->N; n++) {
        size_t o = plane_offset(d, n, c);
        sum_dy_xmu_f64(dy + o, x + o, plane_size(d), mean, s_dy, s_dyxmu);
    }
}

/* dx of channel c from the sums over M values. */
static void channel_dx(float *dx, bool set_dx, const float *dy, const float *x,
                       const float *gamma, const struct unet__bn_dims *d, int c, float mean,
                       double rstd, double s_dy, double s_dyxmu, size_t M) {
    const size_t P = plane_size(d);
    const float gm = (float)(s_dy / (double)M);
    const float k = (float)(s_dyxmu * rstd * rstd / (double)M);
    const float s = (float)(rstd * (gamma ? gamma[c] : 1.0f));
    for (int n = 0; n < d->N; n++) {
        size_t       o = plane_offset(d, n, c);
        float       *dxp = dx + o;
        const float *dyp = dy + o, *xp = x + o;
        if (set_dx) {
#pragma omp simd
            for (size_t i = 0; i < P; i++)
                dxp[i] = (dyp[i] - gm - (xp[i] - mean) * k) * s;
        } else {
#pragma omp simd
            for (size_t i = 0; i < P; i++)
                dxp[i] += (dyp[i] - gm - (xp[i] - mean) * k) * s;
        }
    }
}

/* Inverts y = (x - mean) rstd gamma + beta where mean and rstd depend on every x of the
 * channel.  With xhat = (x - mean) rstd and g = dy gamma:
 *     dx = rstd (g - mean(g) - xhat mean(g xhat))
 *        = (dy - sum dy / M - (x - mean) k) rstd gamma,  k = rstd^2 sum dy (x - mean) / M
 *     dgamma = sum dy xhat = rstd sum dy (x - mean),   dbeta = sum dy. */
void unet__batchnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dy,
                              const float *x, const float *gamma, const float *save_mean,
                              const float *save_rstd, const struct unet__bn_dims *d) {
    unet__batchnorm_backward_set(dx, false, dgamma, dbeta, dy, x, gamma, save_mean, save_rstd, d);
}

void unet__batchnorm_backward_set(float *dx, bool set_dx, float *dgamma, float *dbeta,
                                  const float *dy, const float *x, const float *gamma,
                                  const float *save_mean, const float *save_rstd,
                                  const struct unet__bn_dims *d) {
    const size_t M = (size_t)d->N * plane_size(d);
#pragma omp parallel for schedule(static)
    for (int c = 0; c < d->C; c++) {
        double s_dy, s_dyxmu;
        channel_dsums(dy, x, d, c, save_mean[c], &s_dy, &s_dyxmu);
        if (gamma && dgamma) dgamma[c] += (float)(s_dyxmu * save_rstd[c]);
        if (gamma && dbeta) dbeta[c] += (float)s_dy;
        if (dx)
            channel_dx(dx, set_dx, dy, x, gamma, d, c, save_mean[c], save_rstd[c], s_dy, s_dyxmu,
                       M);
    }
}

/* Synchronised: dgamma and dbeta get this process's sums (the processes' parameter gradients
 * are summed afterwards), dx the sums over all processes. */
void unet__batchnorm_backward_sync(float *dx, bool set_dx, float *dgamma, float *dbeta,
                                   const float *dy, const float *x, const float *gamma,
                                   const float *save_mean, const float *save_rstd,
                                   const struct unet__bn_dims *d,
                                   const struct unet__bn_sync *sync) {
    const int C = d->C;
    double *v = sync->buf;  /* (sum dy, sum dy (x - mean)) per channel, then the count */
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++) {
        channel_dsums(dy, x, d, c, save_mean[c], &v[2 * c], &v[2 * c + 1]);
        if (gamma && dgamma) dgamma[c] += (float)(v[2 * c + 1] * save_rstd[c]);
        if (gamma && dbeta) dbeta[c] += (float)v[2 * c];
    }
    v[2 * C] = (double)d->N * plane_size(d);
    sync->fn(v, 2 * (size_t)C + 1, sync->user);
    const size_t M = (size_t)v[2 * C];
    if (!dx) return;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < C; c++)
        channel_dx(dx, set_dx, dy, x, gamma, d, c, save_mean[c], save_rstd[c], v[2 * c],
                   v[2 * c + 1], M);
}

/* ---- naive definitions: one element at a time, all in double ---- */

void unet__batchnorm_forward_train_ref(float *y, float *save_mean, float *save_rstd,
                                       float *running_mean, float *running_var, const float *x,
                                       const float *gamma, const float *beta,
                                       const struct unet__bn_dims *d) {
    const size_t P = plane_size(d), M = (size_t)d->N * P;
    for (int c = 0; c < d->C; c++) {
        double s = 0.0;
        for (int n = 0; n < d->N; n++)
            for (size_t i = 0; i < P; i++)
                s += x[plane_offset(d, n, c) + i];
        const double mean = s / (double)M;
        double       ss = 0.0;
        for (int n = 0; n < d->N; n++)
            for (size_t i = 0; i < P; i++) {
                double e = x[plane_offset(d, n, c) + i] - mean;
                ss += e * e;
            }
        const double var = ss / (double)M;
        const double rstd = 1.0 / sqrt(var + d->eps);
        const double g = gamma ? gamma[c] : 1.0, b = beta ? beta[c] : 0.0;
        for (int n = 0; n < d->N; n++)
            for (size_t i = 0; i < P; i++) {
                size_t k = plane_offset(d, n, c) + i;
                y[k] = (float)((x[k] - mean) * rstd * g + b);
            }
        save_mean[c] = (float)mean;
        save_rstd[c] = (float)rstd;
        if (running_mean)
            running_mean[c] = (float)((1.0 - d->momentum) * running_mean[c] + d->momentum * mean);
        if (running_var)
            running_var[c] = (float)((1.0 - d->momentum) * running_var[c] +
                                     d->momentum * var * (double)M / (double)(M - 1));
    }
}

void unet__batchnorm_backward_ref(float *dx, float *dgamma, float *dbeta, const float *dy,
                                  const float *x, const float *gamma, const float *save_mean,
                                  const float *save_rstd, const struct unet__bn_dims *d) {
    const size_t P = plane_size(d), M = (size_t)d->N * P;
    for (int c = 0; c < d->C; c++) {
        const double mean = save_mean[c], rstd = save_rstd[c], g = gamma ? gamma[c] : 1.0;
        /* Sums of g = dy gamma and g xhat over the channel. */
        double s_g = 0.0, s_gxhat = 0.0, s_dy = 0.0, s_dyxhat = 0.0;
        for (int n = 0; n < d->N; n++)
            for (size_t i = 0; i < P; i++) {
                size_t k = plane_offset(d, n, c) + i;
                double xhat = (x[k] - mean) * rstd;
                s_dy += dy[k];
                s_dyxhat += dy[k] * xhat;
                s_g += dy[k] * g;
                s_gxhat += dy[k] * g * xhat;
            }
        if (gamma && dgamma) dgamma[c] += (float)s_dyxhat;
        if (gamma && dbeta) dbeta[c] += (float)s_dy;
        if (dx)
            for (int n = 0; n < d->N; n++)
                for (size_t i = 0; i < P; i++) {
                    size_t k = plane_offset(d, n, c) + i;
                    double xhat = (x[k] - mean) * rstd;
                    dx[k] +=
                        (float)(rstd * (dy[k] * g - s_g / (double)M - xhat * s_gxhat / (double)M));
                }
    }
}
