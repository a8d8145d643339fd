/* model_run.c — forward and backward over a planned model: the node list in order, then in
 * reverse.
 *
 * Forward runs each node's op into the memory the plan gave its output, the ReLU flag in place
 * after it; in an inference plan a convolution also runs the nodes its fusion record names
 * (conv_forward) and those nodes are skipped.  Backward zeroes a value's gradient just before
 * the first node that accumulates into it, masks a fused ReLU's gradient in place (dy *= y > 0)
 * before the node's own backward, and recomputes batch-norm outputs that training did not keep
 * (recompute_bn_output).  Optionally each node's time is added to m->prof (bench_unet).
 */
#include "model.h"

#include <math.h>
#include <string.h>
#include <time.h>

/* Parameter data by id (NULL for -1): trainable weights live in the parameter block, frozen
 * ones (e.g. FCN's fixed bilinear deconvolution) and running statistics in the buffer block. */
static float *P(const unet_model *m, int id) {
    return id >= 0 ? unet__model_param_data(m, &m->params[id]) : NULL;
}
/* Gradient by id: NULL for -1, for frozen parameters, or when no gradients are allocated. */
static float *G(const unet_model *m, int id) {
    if (id < 0 || !m->grads || m->params[id].kind != UNET__PARAM_WEIGHT) return NULL;
    return m->grads + m->params[id].offset;
}
static float *Bf(const unet_model *m, int id) {
    return m->buffers + m->params[id].offset;
}

static size_t numel(const unet_model *m, int v) {
    return unet__value_floats(m, v, m->plan_n);
}

/* Seconds for the optional per-node profile: monotonic, or the process's CPU time. */
static double prof_now(const unet_model *m) {
    struct timespec t;
    clock_gettime(m->prof_cpu ? CLOCK_PROCESS_CPUTIME_ID : CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* How node i runs: the model's precision's row, and at inference its cached transformed
 * weights (training transforms the weights of the moment in each call). */
static struct unet__conv_how how_of(unet_model *m, int i) {
    struct unet__conv_how h = {.k = unet__kernels_for(m->precision)};
    if (!m->training_mode) h.wino_u = unet__wcache_weights(m, i, h.k);
    return h;
}

/* A node's scratch: its room in an inference plan's arena, else the model's block. */
static float *scratch_of(const unet_model *m, const struct unet__node *nd) {
    return nd->scratch ? nd->scratch : m->scratch;
}

/* Convolution node i, as its fusion record says (inference plans): with a folded batch-norm
 * (+ its ReLU) in the epilogue it writes the batch-norm's output, and with a fused pool the
 * pool's output too; after a fused concat it reads the concat's two inputs.  The fold (scale
 * and shift from the running statistics, unet__model_fold) and the transformed weights come
 * from the inference cache, remade whenever the weights change. */
static void conv_forward(unet_model *m, int i) {
    const struct unet__node    *c = &m->nodes[i];
    struct unet__conv_how       how = how_of(m, i);
    /* No cache entry (yet): the weights transformed once into the plan's room for them. */
    if (!how.wino_u && c->wino_u && !m->training_mode &&
        unet__winograd_weights_floats(&c->d.conv, how.k) <= c->wino_u_floats) {
        unet__winograd_weights(c->wino_u, P(m, c->w), &c->d.conv, how.k);
        how.wino_u = c->wino_u;
    }
    struct unet__conv_epilogue  ep = {.shift = P(m, c->b)};
    float                      *y = m->values[c->out].data;
    if (c->fuse.bn >= 0) {
        const struct unet__node *bn = &m->nodes[c->fuse.bn];
        const int                C = c->d.conv.C_out;
        const float             *fold = unet__wcache_fold(m, i);
        if (!fold) {
            unet__model_fold(m, i, m->fold);
            fold = m->fold;
        }
        ep = (struct unet__conv_epilogue){.scale = fold, .shift = fold + C, .relu = bn->relu};
        if (c->fuse.pool >= 0) ep.pool = m->values[m->nodes[c->fuse.pool].out].data;
        y = m->values[bn->out].data;
    }
    if (c->fuse.cat >= 0) {
        const struct unet__node *cat = &m->nodes[c->fuse.cat];
        unet__conv2d_forward_cat(y, m->values[cat->in].data, m->values[cat->in2].data,
                                 m->values[cat->in].c, P(m, c->w), &c->d.conv, &ep, &how,
                                 scratch_of(m, c));
        return;
    }
    unet__conv2d_forward_ep(y, m->values[c->in].data, P(m, c->w), &c->d.conv, &ep, &how,
                            scratch_of(m, c));
}

const float *unet__model_forward(unet_model *m, const float *x) {
    /* The input is only ever read; values[0].data is not const to keep one value type. */
    memcpy(&m->values[0].data, &x, sizeof x);
    const bool train = m->training_mode;
    /* A training forward changes the running statistics. */
    if (train) unet__model_weights_changed(m);
    for (int i = 0; i < m->n_nodes; i++) {
        struct unet__node *nd = &m->nodes[i];
        /* A folded batch-norm (and its ReLU), a fused pool, a concat read in place: their
         * convolution ran them (conv_forward). */
        if (nd->fuse.into >= 0) continue;
        double t0 = m->prof ? prof_now(m) : 0.0;
        const float *in = m->values[nd->in].data;
        float *y = m->values[nd->out].data;
        switch (nd->op) {
        case UNET__NODE_CONV:
            conv_forward(m, i);
            break;
        case UNET__NODE_CONVT: {
            const struct unet__conv_how how = {.k = unet__kernels_for(m->precision)};
            unet__convt2d_forward(y, in, P(m, nd->w), P(m, nd->b), &nd->d.convt, &how,
                                  scratch_of(m, nd));
            break;
        }
        case UNET__NODE_BN:
            if (train && m->bn_sync.fn) {
                unet__batchnorm_forward_train_sync(y, nd->save_mean, nd->save_rstd,
                                                   Bf(m, nd->rmean), Bf(m, nd->rvar), in,
                                                   P(m, nd->w), P(m, nd->b), &nd->d.bn,
                                                   &m->bn_sync);
                m->counters[m->params[nd->nbt].offset]++;
            } else if (train) {
                unet__batchnorm_forward_train(y, nd->save_mean, nd->save_rstd, Bf(m, nd->rmean),
                                              Bf(m, nd->rvar), in, P(m, nd->w), P(m, nd->b),
                                              &nd->d.bn);
                m->counters[m->params[nd->nbt].offset]++;
            } else {
                unet__batchnorm_forward_eval(y, in, P(m, nd->w), P(m, nd->b), Bf(m, nd->rmean),
                                             Bf(m, nd->rvar), &nd->d.bn);
            }
            break;
        case UNET__NODE_POOL:
            unet__maxpool2_forward(y, nd->mask, in, &nd->d.pool);
            break;
        case UNET__NODE_UPSAMPLE:
            unet__upsample_bilinear_forward(y, in, &nd->d.up);
            break;
        case UNET__NODE_CONCAT:
            unet__concat_forward(y, in, m->values[nd->in2].data, &nd->d.cat);
            break;
        case UNET__NODE_DROPOUT:
            /* Inference: the identity.  An inference plan gives y the input's buffer; a
             * training plan run in inference mode (validation) has its own, so copy. */
            if (train) unet__dropout_forward(y, nd->mask, in, &nd->d.drop, &m->rng);
            else if (y != in) memcpy(y, in, numel(m, nd->out) * sizeof(float));
            break;
        case UNET__NODE_ADD:
            unet__add_place_forward(y, in, m->values[nd->in2].data, &nd->d.add);
            break;
        case UNET__NODE_CROP: {
            struct unet__place p = {.C = m->values[nd->in].c, .H = m->values[nd->in].h,
                                    .W = m->values[nd->in].w, .off_h = nd->crop_h,
                                    .off_w = nd->crop_w};
            unet__crop_forward(y, in, m->plan_n, m->values[nd->out].h, m->values[nd->out].w, &p);
            break;
        }
        }
        if (nd->relu) unet__relu_forward(y, y, numel(m, nd->out));
        if (m->prof) m->prof[2 * i] += prof_now(m) - t0;
    }
    return m->values[m->out_value].data;
}

/* Training: before the backward of node i, the first to need batch-norm output v (its last
 * reader in forward order, or the batch-norm itself when nothing reads it), recompute v from
 * the stored input and the saved statistics: y = (x - mean) * (rstd * gamma) + beta (+ ReLU),
 * the forward's formula with rstd as saved in float (the forward used it before rounding, so
 * values may differ in the last bit). */
static void recompute_bn_output(unet_model *m, int v, int i) {
    struct unet__value *val = &m->values[v];
    if (!val->data_bw || val->bw_ready || (val->last_use != i && val->producer != i)) return;
    const struct unet__node *bn = &m->nodes[val->producer];
    const struct unet__bn_dims *d = &bn->d.bn;
    const float *x = m->values[bn->in].data, *gamma = P(m, bn->w), *beta = P(m, bn->b);
    float *y = val->data_bw;
    const size_t HW = (size_t)d->H * d->W;
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < d->N; n++)
        for (int c = 0; c < d->C; c++) {
            const float mean = bn->save_mean[c];
            const float a = (float)((double)bn->save_rstd[c] * (gamma ? gamma[c] : 1.0f));
            const float b = beta ? beta[c] : 0.0f;
            const size_t o = ((size_t)n * d->C + c) * HW;
            if (bn->relu) {
#pragma omp simd
                for (size_t p = 0; p < HW; p++) {
                    float t = (x[o + p] - mean) * a + b;
                    y[o + p] = t < 0.0f ? 0.0f : t;
                }
            } else {
#pragma omp simd
                for (size_t p = 0; p < HW; p++) y[o + p] = (x[o + p] - mean) * a + b;
            }
        }
    val->data = y;
    val->bw_ready = true;
}

/* dy *= (y > 0): ReLU's backward, in place on a gradient nobody else reads afterwards.  A
 * select rather than a conditional store, so that it vectorizes (`omp simd`) instead of
 * branching on the sign of every element. */
void unet__model_backward(unet_model *m, const float *dlogits) {
    const int NN = m->n_nodes;
    /* Products on the precision's row; weights transformed in the calls (never the cache). */
    const struct unet__conv_how how = {.k = unet__kernels_for(m->precision)};
    struct unet__value *out = &m->values[m->out_value];
    memcpy(out->grad, dlogits, numel(m, m->out_value) * sizeof(float));
    /* A value's gradient is zeroed when the backward of its last consumer (the first to
     * accumulate into it) is about to run; a convolution, up-convolution or batch-norm that is
     * its only reader sets it instead (unet__conv2d_backward_set, unet__convt2d_backward_set,
     * unet__batchnorm_backward_set: no zeroing, and no read of it in the pass that writes
     * it), and so does a concatenation that is its last reader (the first to write it: a skip
     * connection's map, whose pool adds to it later). */
    for (int i = NN - 1; i >= 0; i--) {
        double t0 = m->prof ? prof_now(m) : 0.0;
        struct unet__node *nd = &m->nodes[i];
        const bool only = nd->op == UNET__NODE_CONV || nd->op == UNET__NODE_CONVT ||
                          nd->op == UNET__NODE_BN;
        const bool cat = nd->op == UNET__NODE_CONCAT && nd->in2 != nd->in;
        const bool set_dx = nd->in > 0 && (only ? m->values[nd->in].reads == 1
                                                : cat && m->values[nd->in].last_use == i);
        const bool set_dx2 = cat && nd->in2 > 0 && m->values[nd->in2].last_use == i;
        if (nd->in > 0 && m->values[nd->in].last_use == i && !set_dx)
            memset(m->values[nd->in].grad, 0, numel(m, nd->in) * sizeof(float));
        if (nd->in2 > 0 && nd->in2 != nd->in && m->values[nd->in2].last_use == i && !set_dx2)
            memset(m->values[nd->in2].grad, 0, numel(m, nd->in2) * sizeof(float));
        recompute_bn_output(m, nd->in, i);
        if (nd->in2 > 0) recompute_bn_output(m, nd->in2, i);
        recompute_bn_output(m, nd->out, i);
        float *dy = m->values[nd->out].grad;
        const float *y = m->values[nd->out].data;
        const float *x = m->values[nd->in].data;
        float *dx = nd->in > 0 ? m->values[nd->in].grad : NULL;
        if (nd->relu) unet__relu_mask_grad(dy, y, numel(m, nd->out));
        switch (nd->op) {
        case UNET__NODE_CONV:
            unet__conv2d_backward_set(dx, set_dx, G(m, nd->w), G(m, nd->b), dy, x, P(m, nd->w),
                                      &nd->d.conv, &how, m->scratch);
            break;
        case UNET__NODE_CONVT:
            unet__convt2d_backward_set(dx, set_dx, G(m, nd->w), G(m, nd->b), dy, x, P(m, nd->w),
                                       &nd->d.convt, &how, m->scratch);
            break;
        case UNET__NODE_BN:
            if (m->bn_sync.fn)
                unet__batchnorm_backward_sync(dx, set_dx, G(m, nd->w), G(m, nd->b), dy, x,
                                              P(m, nd->w), nd->save_mean, nd->save_rstd,
                                              &nd->d.bn, &m->bn_sync);
            else if (dx || m->grads)
                unet__batchnorm_backward_set(dx, set_dx, G(m, nd->w), G(m, nd->b), dy, x,
                                             P(m, nd->w), nd->save_mean, nd->save_rstd,
                                             &nd->d.bn);
            break;
        case UNET__NODE_POOL:
            if (dx) unet__maxpool2_backward(dx, dy, nd->mask, &nd->d.pool);
            break;
        case UNET__NODE_UPSAMPLE:
            if (dx) unet__upsample_bilinear_backward(dx, dy, &nd->d.up);
            break;
        case UNET__NODE_CONCAT:
            unet__concat_backward_set(dx, set_dx, nd->in2 > 0 ? m->values[nd->in2].grad : NULL,
                                      set_dx2, dy, &nd->d.cat);
            break;
        case UNET__NODE_DROPOUT:
            if (dx) unet__dropout_backward(dx, dy, nd->mask, &nd->d.drop);
            break;
        case UNET__NODE_ADD:
            unet__add_place_backward(dx, nd->in2 > 0 ? m->values[nd->in2].grad : NULL, dy, &nd->d.add);
            break;
        case UNET__NODE_CROP: {
            struct unet__place p = {.C = m->values[nd->in].c, .H = m->values[nd->in].h,
                                    .W = m->values[nd->in].w, .off_h = nd->crop_h,
                                    .off_w = nd->crop_w};
            if (dx) unet__crop_backward(dx, dy, m->plan_n, m->values[nd->out].h, m->values[nd->out].w, &p);
            break;
        }
        }
        if (m->prof) m->prof[2 * i + 1] += prof_now(m) - t0;
    }
    for (int v = 0; v < m->n_values; v++)
        if (m->values[v].data_bw) {
            m->values[v].data = m->values[v].data_fw;
            m->values[v].bw_ready = false;
        }
}

const struct unet__value *unet__model_output(const unet_model *m) {
    return &m->values[m->out_value];
}

unet_status unet_model_forward(unet_ctx *ctx, unet_model *m, const float *x, int n, int h, int w,
                               float *logits) {
    if (!m || !x || !logits) return unet__fail(ctx, UNET_STATUS_ARG, "forward: NULL argument");
    unet_status s = unet_model_prepare(ctx, m, n, h, w, 0);
    if (s != UNET_STATUS_OK) return s;
    unet__use_threads(unet__threads(ctx));
    m->training_mode = false;
    const float *y = unet__model_forward(m, x);
    memcpy(logits, y, numel(m, m->out_value) * sizeof(float));
    return UNET_STATUS_OK;
}
