/* dataparallel.c — data-parallel training over a process group (issue 13, docs/scaling.md).
 *
 * The group is two functions that sum over the processes (MPI_Allreduce in the CLI, a barrier
 * between threads in tests/test_trainer.c); unet_dp_attach fills the trainer's seams with them:
 *   - the shard: process r of P makes samples [r B / P, (r + 1) B / P) of every batch of B,
 *     exactly the tiles one process would put there (unet_sampler_shard);
 *   - before the backward pass (loss_fn): the step's statistics summed over the group, each
 *     process's loss weighted by its share of the loss's normaliser (labeled pixels for the
 *     mean cross entropy; tiles for the summed one and for the losses with Dice, which is a
 *     ratio over each process's tiles as in PyTorch's DDP), and this process's loss gradient
 *     scaled by that share;
 *   - after it (grad_fn): the gradients summed, which is then the gradient of the global loss;
 *     without synchronised batch-norm the running statistics averaged (each process computed
 *     them from its own share);
 *   - synchronised batch-norm (unet_model_set_bn_sum): the batch statistics over every share.
 * Every process then sees the same loss and gradient and takes the same update, clipping and
 * guard decisions.  The sums are in a different order than one process's, so a run on P
 * processes equals the one-process run to float rounding (tests: within 1e-5 of the weights
 * after 8 Adam steps).
 */
#include "model.h"

#include <stdlib.h>

unet_status unet_model_set_bn_sum(unet_ctx *ctx, unet_model *m, unet_sum_fn fn, void *user) {
    if (!m) return unet__fail(ctx, UNET_STATUS_ARG, "set_bn_sum: m is NULL");
    size_t C = 0;   /* the widest batch-norm: its running mean's length */
    for (int i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].op == UNET__NODE_BN && m->params[m->nodes[i].rmean].numel > C)
            C = m->params[m->nodes[i].rmean].numel;
    if (fn && !m->bn_sync.buf) {
        m->bn_sync.buf = malloc(sizeof(double) * (2 * C + 1));
        if (!m->bn_sync.buf) return unet__fail(ctx, UNET_STATUS_NOMEM, "set_bn_sum: out of memory");
    }
    m->bn_sync.fn = fn;
    m->bn_sync.user = user;
    return UNET_STATUS_OK;
}

/* loss_fn: the statistics of the whole batch and this share's weight in its loss. */
static unet_status dp_loss(unet_ctx *ctx, unet_step_stats *st, double *scale, void *user) {
    (void)ctx;
    unet_dp *dp = user;
    const int K = st->classes;
    double labeled = 0;
    for (int c = 0; c < K; c++) labeled += (double)st->truth[c];
    const bool by_pixels = dp->reduction == UNET_REDUCTION_MEAN &&
                           (dp->loss == UNET_LOSS_CE || dp->loss == UNET_LOSS_WCE);
    const double w = by_pixels ? labeled : (double)dp->share;
    double v[4 + 2 * UNET_MAX_CLASSES];
    v[0] = w, v[1] = st->loss * w, v[2] = st->baseline * w, v[3] = (double)st->correct;
    for (int c = 0; c < K; c++) v[4 + c] = (double)st->pred[c], v[4 + K + c] = (double)st->truth[c];
    dp->sum(v, 4 + 2 * (size_t)K, dp->user);
    /* No labeled pixel anywhere: every loss is 0 (a NaN still shows through v[1]). */
    const double W = v[0] > 0 ? v[0] : 1;
    *scale = w / W;
    st->loss = v[1] / W, st->baseline = v[2] / W, st->correct = (int64_t)v[3];
    for (int c = 0; c < K; c++) st->pred[c] = (int64_t)v[4 + c], st->truth[c] = (int64_t)v[4 + K + c];
    return UNET_STATUS_OK;
}

/* grad_fn: the gradients summed; the running statistics averaged unless synchronised. */
static unet_status dp_grads(unet_ctx *ctx, float *g, size_t n, unet_step_stats *st, void *user) {
    (void)ctx, (void)st;
    unet_dp *dp = user;
    dp->sum_f32(g, n, dp->user);
    if (!dp->sync_bn && dp->m->n_buffers) {
        float *b = dp->m->buffers;
        dp->sum_f32(b, dp->m->n_buffers, dp->user);
        for (size_t i = 0; i < dp->m->n_buffers; i++) b[i] /= (float)dp->processes;
    }
    return UNET_STATUS_OK;
}

unet_status unet_dp_attach(unet_ctx *ctx, unet_dp *dp, unet_model *m, unet_train_opts *o,
                           int sync_bn) {
    if (!dp || !m || !o || !dp->sum || !dp->sum_f32)
        return unet__fail(ctx, UNET_STATUS_ARG, "dp_attach: NULL argument");
    const int P = dp->processes, r = dp->rank;
    if (P < 1 || r < 0 || r >= P)
        return unet__fail(ctx, UNET_STATUS_ARG, "dp_attach: rank %d of %d processes", r, P);
    if (o->batch < P)
        return unet__fail(ctx, UNET_STATUS_ARG, "batch: %d tiles cannot be shared by %d processes "
                                                "(the batch is the global one: at least one tile "
                                                "each)", o->batch, P);
    if (o->minutes > 0 && P > 1)
        return unet__fail(ctx, UNET_STATUS_ARG, "minutes: the time budget is per process and "
                                                "would end the processes at different steps; "
                                                "not with %d processes", P);
    const int first = (int)((long)r * o->batch / P), next = (int)((long)(r + 1) * o->batch / P);
    dp->m = m;
    dp->loss = o->step.loss, dp->reduction = o->step.reduction;
    dp->share = next - first, dp->batch = o->batch;
    dp->sync_bn = sync_bn != 0;
    unet_status s = unet_model_set_bn_sum(ctx, m, dp->sync_bn ? dp->sum : NULL, dp->user);
    if (s != UNET_STATUS_OK) return s;
    o->shard_first = first, o->shard_count = dp->share;
    o->step.loss_fn = dp_loss, o->step.grad_fn = dp_grads, o->step.grad_user = dp;
    return UNET_STATUS_OK;
}
