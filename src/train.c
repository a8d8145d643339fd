/* train.c — one training step: forward (batch statistics, dropout), loss, backward, update.
 *
 * Gradients and optimizer moments live in blocks with the parameter block's layout, so the
 * optimizer is one flat loop over all parameters (PyTorch's update formulas, ops/optim.c).
 * They are allocated on the first step, outside forward and backward.  A step whose loss or
 * gradients are not finite is undone: the parameters are untouched and the batch-norm running
 * statistics are restored from a snapshot, so the last good state can still be saved.  An
 * optional hook (unet_step_opts.grad_fn) sees the gradients between backward and update: the
 * seam where data-parallel training sums them over processes.
 */
#include "trainer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

unet_optim unet_optim_default(unet_optim_kind kind) {
    unet_optim o = {.kind = kind, .lr = 0.01, .momentum = 0.0, .nesterov = 0,
                    .weight_decay = 0.0, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
    if (kind == UNET_OPTIM_ADAM || kind == UNET_OPTIM_ADAMW) o.lr = 0.001;
    if (kind == UNET_OPTIM_ADAMW) o.weight_decay = 0.01;
    return o;
}

unet_status unet__check_optim(unet_ctx *ctx, const unet_optim *o) {
    if (!o) return unet__fail(ctx, UNET_STATUS_ARG, "optimizer: NULL");
    if (o->kind < UNET_OPTIM_SGD || o->kind > UNET_OPTIM_ADAMW)
        return unet__fail(ctx, UNET_STATUS_ARG, "optimizer: unknown kind %d", (int)o->kind);
    if (!(o->lr >= 0.0f && o->lr < 1e3f))
        return unet__fail(ctx, UNET_STATUS_ARG, "lr: expected 0 <= lr < 1000, got %g", (double)o->lr);
    if (!(o->momentum >= 0.0f && o->momentum < 1.0f))
        return unet__fail(ctx, UNET_STATUS_ARG, "momentum: expected 0 <= m < 1, got %g",
                          (double)o->momentum);
    if (o->nesterov && o->momentum <= 0.0f)
        return unet__fail(ctx, UNET_STATUS_ARG, "nesterov momentum requires momentum > 0");
    if (!(o->weight_decay >= 0.0f))
        return unet__fail(ctx, UNET_STATUS_ARG, "weight_decay: expected >= 0, got %g",
                          (double)o->weight_decay);
    if (!(o->beta1 >= 0.0f && o->beta1 < 1.0f && o->beta2 >= 0.0f && o->beta2 < 1.0f && o->eps > 0.0f))
        return unet__fail(ctx, UNET_STATUS_ARG, "adam: expected 0 <= beta < 1 and eps > 0");
    return UNET_STATUS_OK;
}

/* Gradients, moments and the snapshot block, allocated on the first step.  Fresh moments
 * start a fresh optimizer: its step count restarts at 0 (Adam's bias correction), whatever the
 * checkpoint's train_steps said; a resumable checkpoint restores moments and step together. */
static unet_status alloc_state(unet_ctx *ctx, unet_model *m) {
    unet_status s = unet__model_own_weights(ctx, m); /* not page by page as the steps write */
    if (s != UNET_STATUS_OK) return s;
    if (!m->snapshot) {
        size_t bytes = m->n_buffers * sizeof(float) + (size_t)m->n_counters * sizeof(int64_t);
        m->snapshot = unet__alloc(bytes + 64);
        if (!m->snapshot) return unet__fail(ctx, UNET_STATUS_NOMEM, "training: out of memory");
    }
    if (m->grads) return UNET_STATUS_OK;
    m->grads = unet__calloc(m->n_weights, sizeof(float));
    m->opt_m = unet__calloc(m->n_weights, sizeof(float));
    m->opt_v = unet__calloc(m->n_weights, sizeof(float));
    if (!m->grads || !m->opt_m || !m->opt_v) {
        unet__free(m->grads), unet__free(m->opt_m), unet__free(m->opt_v);
        m->grads = m->opt_m = m->opt_v = NULL;
        return unet__fail(ctx, UNET_STATUS_NOMEM, "training: cannot allocate %zu MiB of optimizer state",
                          3 * m->n_weights * sizeof(float) >> 20);
    }
    m->opt_step = 0;
    return UNET_STATUS_OK;
}

/* The loss of the output value against target; when dlogits is non-NULL it receives the
 * gradient (overwritten).  Pixels with target < 0 are ignored by the cross-entropy terms.  The
 * summed reduction scales the mean (and its gradient) by labeled pixels / batch. */
static double loss_of(const unet_model *m, unet_loss_kind kind, unet_reduction red,
                      const int32_t *target, const float *weight, float *dlogits) {
    const struct unet__value *o = unet__model_output(m);
    struct unet__loss_dims d = {.N = m->plan_n, .C = o->c, .H = o->h, .W = o->w};
    if (dlogits) memset(dlogits, 0, sizeof(float) * (size_t)d.N * d.C * d.H * d.W);
    float scale = 1.0f;
    if (red == UNET_REDUCTION_SUM) {
        const size_t count = (size_t)d.N * d.H * d.W;
        size_t labeled = 0;
        for (size_t i = 0; i < count; i++) labeled += target[i] >= 0;
        scale = (float)((double)labeled / d.N);
    }
    double L = 0.0;
    if (kind != UNET_LOSS_DICE) {
        const float *wmap = weight;
        L += d.C == 1 ? unet__bce_logits(dlogits, scale, o->data, target, wmap, &d)
                      : unet__softmax_ce(dlogits, scale, o->data, target, wmap, -1, &d);
        L *= scale;
    }
    if (kind == UNET_LOSS_CE_DICE || kind == UNET_LOSS_DICE)
        L += unet__dice_loss(dlogits, 1.0f, o->data, target, 1e-6f, &d);
    return L;
}

/* Class counts of the prediction (argmax of the logits; one class: logit > 0) and of the truth
 * over the labeled pixels, for the divergence guard's collapse test, and the loss a uniform
 * prediction would get on the batch (its blow-up test): with probabilities 1/K everywhere
 * (1/2 for one class) the cross entropy is log K times each pixel's weight, and the soft Dice
 * has I_c = Y_c / K and S_c = labeled / K (loss.c's sums). */
static void class_counts(const unet_model *m, unet_loss_kind kind, unet_reduction red,
                         const int32_t *target, const float *weight, unet_step_stats *st) {
    const struct unet__value *o = unet__model_output(m);
    const int C = o->c, K = C == 1 ? 2 : C;
    const size_t HW = (size_t)o->h * o->w;
    double wsum = 0;
    st->classes = K;
    for (int n = 0; n < m->plan_n; n++) {
        const float *x = o->data + (size_t)n * C * HW;
        const int32_t *t = target + (size_t)n * HW;
        for (size_t p = 0; p < HW; p++) {
            if (t[p] < 0) continue;
            wsum += weight && kind != UNET_LOSS_DICE ? weight[(size_t)n * HW + p] : 1.0;
            int best = 0;
            if (C == 1) best = x[p] > 0.0f;
            else
                for (int c = 1; c < C; c++)
                    if (x[(size_t)c * HW + p] > x[(size_t)best * HW + p]) best = c;
            st->pred[best]++;
            st->truth[t[p]]++;
            st->correct += best == t[p];
        }
    }
    int64_t labeled = 0;
    for (int c = 0; c < K; c++) labeled += st->truth[c];
    double L = 0;
    if (kind != UNET_LOSS_DICE && labeled > 0)
        L += log((double)K) * wsum / (red == UNET_REDUCTION_SUM ? m->plan_n : (double)labeled);
    if (kind == UNET_LOSS_CE_DICE || kind == UNET_LOSS_DICE) {
        const double eps = 1e-6f, q = 1.0 / K;
        double dice = 0;
        if (C == 1) {
            dice = (2 * q * st->truth[1] + eps) / (q * labeled + st->truth[1] + eps);
        } else {
            for (int c = 0; c < C; c++)
                dice += (2 * q * st->truth[c] + eps) / (q * labeled + st->truth[c] + eps);
            dice /= C;
        }
        L += 1.0 - dice;
    }
    st->baseline = L;
}

/* Arguments, the plan, and every target value: class ids 0..classes-1 (0/1 for one class) or
 * -1 for unlabeled; the losses rely on it. */
static unet_status check_batch(unet_ctx *ctx, unet_model *m, unet_loss_kind loss, const float *x,
                               const int32_t *target, const float *weight, int n, int h, int w,
                               bool training) {
    if (!m || !x || !target)
        return unet__fail(ctx, UNET_STATUS_ARG, "training: model, images and targets are required");
    if (loss < UNET_LOSS_CE || loss > UNET_LOSS_WCE)
        return unet__fail(ctx, UNET_STATUS_ARG, "loss: unknown kind %d", (int)loss);
    if (loss == UNET_LOSS_WCE && !weight)
        return unet__fail(ctx, UNET_STATUS_ARG, "loss wce: needs a weight map");
    unet_status s = unet_model_prepare(ctx, m, n, h, w, training);
    if (s != UNET_STATUS_OK) return s;
    const struct unet__value *o = unet__model_output(m);
    const int32_t top = m->cfg.classes == 1 ? 1 : m->cfg.classes - 1;
    const size_t count = (size_t)n * o->h * o->w;
    for (size_t i = 0; i < count; i++)
        if (target[i] < -1 || target[i] > top)
            return unet__fail(ctx, UNET_STATUS_ARG,
                              "target: image %zu, pixel %zu holds %d; expected -1 (unlabeled) or a "
                              "class id 0..%d",
                              i / ((size_t)o->h * o->w), i % ((size_t)o->h * o->w), target[i], top);
    return UNET_STATUS_OK;
}

/* Index of the parameter that holds weight index i (for messages). */
static const char *param_at(const unet_model *m, size_t i) {
    for (int j = 0; j < m->n_params; j++) {
        const struct unet__param *p = &m->params[j];
        if (p->kind == UNET__PARAM_WEIGHT && i >= p->offset && i < p->offset + p->numel)
            return p->name;
    }
    return "?";
}

unet_step_opts unet_step_defaults(unet_loss_kind loss) {
    unet_step_opts o = {.loss = loss, .reduction = UNET_REDUCTION_MEAN, .clip_norm = 0.0};
    return o;
}

unet_status unet__check_step_opts(unet_ctx *ctx, const unet_step_opts *so) {
    if (!so) return unet__fail(ctx, UNET_STATUS_ARG, "training: step options are NULL");
    if (so->reduction != UNET_REDUCTION_MEAN && so->reduction != UNET_REDUCTION_SUM)
        return unet__fail(ctx, UNET_STATUS_ARG, "loss reduction: unknown kind %d", (int)so->reduction);
    if (so->reduction == UNET_REDUCTION_SUM && so->loss != UNET_LOSS_CE && so->loss != UNET_LOSS_WCE)
        return unet__fail(ctx, UNET_STATUS_ARG,
                          "loss reduction sum: only for the cross-entropy losses (ce, wce); Dice is "
                          "a ratio over the batch");
    if (!(so->clip_norm >= 0.0 && so->clip_norm < 1e30))
        return unet__fail(ctx, UNET_STATUS_ARG, "clip: expected a finite norm >= 0, got %g",
                          so->clip_norm);
    return UNET_STATUS_OK;
}

unet_status unet_train_step_ex(unet_ctx *ctx, unet_model *m, const unet_optim *opt,
                               const unet_step_opts *so, const float *x, const int32_t *target,
                               const float *weight, int n, int h, int w, unet_step_stats *stats) {
    unet_step_stats local;
    unet_step_stats *st = stats ? stats : &local;
    memset(st, 0, sizeof *st);
    st->loss = st->grad_norm = NAN;
    unet_status s = unet__check_optim(ctx, opt);
    if (s == UNET_STATUS_OK && m && m->opt_step >= UNET_MAX_STEPS)
        return unet__fail(ctx, UNET_STATUS_ARG, "the step counter is at its limit (%ld steps)",
                          UNET_MAX_STEPS);
    if (s == UNET_STATUS_OK) s = unet__check_step_opts(ctx, so);
    if (s == UNET_STATUS_OK) s = check_batch(ctx, m, so->loss, x, target, weight, n, h, w, true);
    if (s == UNET_STATUS_OK) s = alloc_state(ctx, m);
    if (s != UNET_STATUS_OK) return s;
    unet__use_threads(unet__threads(ctx));
    st->lr = opt->lr;

    /* Snapshot of what forward changes besides activations: running statistics, counters and
     * the dropout generator.  Small (a few floats per channel). */
    size_t nb = m->n_buffers * sizeof(float), nc = (size_t)m->n_counters * sizeof(int64_t);
    unsigned char *snap = m->snapshot;
    memcpy(snap, m->buffers, nb);
    memcpy(snap + nb, m->counters, nc);
    struct unet__rng rng0 = m->rng;

    m->training_mode = true;
    unet__model_forward(m, x);
    struct unet__value *out = &m->values[m->out_value];
    double L = loss_of(m, so->loss, so->reduction, target, weight, out->grad);
    st->loss = L;
    class_counts(m, so->loss, so->reduction, target, weight, st);
    double scale = 1.0;
    if (so->loss_fn) {
        if ((s = so->loss_fn(ctx, st, &scale, so->grad_user)) != UNET_STATUS_OK) goto undo;
        L = st->loss;
    }
    if (isfinite(L)) {
        if (scale != 1.0) {
            const size_t k = (size_t)m->plan_n * out->c * out->h * out->w;
            for (size_t i = 0; i < k; i++) out->grad[i] = (float)(out->grad[i] * scale);
        }
        memset(m->grads, 0, m->n_weights * sizeof(float));
        unet__model_backward(m, out->grad);
    } else if (so->grad_fn) {
        /* The other processes wait in the hook for this one: it goes there with NaN. */
        for (size_t i = 0; i < m->n_weights; i++) m->grads[i] = NAN;
    }
    if (so->grad_fn && (s = so->grad_fn(ctx, m->grads, m->n_weights, st, so->grad_user)) !=
                           UNET_STATUS_OK)
        goto undo;
    if (!isfinite(st->loss)) {
        s = unet__fail(ctx, UNET_STATUS_NUMERIC, "step %ld: the loss is %g; the step was undone",
                       m->opt_step + 1, st->loss);
        goto undo;
    }
    /* The norm before clipping; not finite exactly when some gradient is not (the squares of
     * finite floats cannot overflow a double sum). */
    bool clipped = false;
    st->grad_norm = so->clip_norm > 0.0
                        ? unet__clip_grad_norm(m->grads, m->n_weights, so->clip_norm, &clipped)
                        : unet__l2_norm(m->grads, m->n_weights);
    st->clipped = clipped;
    if (!isfinite(st->grad_norm)) {
        size_t bad = unet__first_nonfinite(m->grads, m->n_weights, false);
        s = unet__fail(ctx, UNET_STATUS_NUMERIC,
                       "step %ld: the gradient of %s is not finite; the step was undone",
                       m->opt_step + 1, param_at(m, bad < m->n_weights ? bad : 0));
        goto undo;
    }
    /* Batch statistics of huge (finite) activations can overflow the running variance while
     * the loss stays finite; a checkpoint with such statistics would be refused on load. */
    if (unet__first_nonfinite(m->buffers, m->n_buffers, false) < m->n_buffers) {
        s = unet__fail(ctx, UNET_STATUS_NUMERIC,
                       "step %ld: batch-norm running statistics overflowed (activations too "
                       "large); the step was undone",
                       m->opt_step + 1);
        goto undo;
    }
    long step = ++m->opt_step;
    if (opt->kind == UNET_OPTIM_SGD) {
        struct unet__sgd o = {.lr = opt->lr, .momentum = opt->momentum,
                              .weight_decay = opt->weight_decay, .nesterov = opt->nesterov != 0};
        unet__sgd_step(m->weights, m->grads, m->opt_m, m->n_weights, &o);
    } else {
        struct unet__adam o = {.lr = opt->lr, .beta1 = opt->beta1, .beta2 = opt->beta2,
                               .eps = opt->eps, .weight_decay = opt->weight_decay,
                               .decoupled = opt->kind == UNET_OPTIM_ADAMW};
        unet__adam_step(m->weights, m->grads, m->opt_m, m->opt_v, m->n_weights, &o, step);
    }
    unet__model_ema_step(m);
    unet__model_weights_changed(m);
    return UNET_STATUS_OK;
undo:
    memcpy(m->buffers, snap, nb);
    memcpy(m->counters, snap + nb, nc);
    m->rng = rng0;
    unet__model_weights_changed(m);
    return s;
}

unet_status unet_train_step(unet_ctx *ctx, unet_model *m, const unet_optim *opt,
                            unet_loss_kind loss, const float *x, const int32_t *target,
                            const float *weight, int n, int h, int w, double *loss_out) {
    unet_step_opts so = unet_step_defaults(loss);
    unet_step_stats st;
    unet_status s = unet_train_step_ex(ctx, m, opt, &so, x, target, weight, n, h, w, &st);
    if (loss_out) *loss_out = st.loss;
    return s;
}

unet_status unet_eval_loss(unet_ctx *ctx, unet_model *m, unet_loss_kind loss, const float *x,
                           const int32_t *target, const float *weight, int n, int h, int w,
                           double *loss_out) {
    unet_status s = check_batch(ctx, m, loss, x, target, weight, n, h, w, false);
    if (s != UNET_STATUS_OK) return s;
    unet__use_threads(unet__threads(ctx));
    m->training_mode = false;
    unet__model_forward(m, x);
    double L = loss_of(m, loss, UNET_REDUCTION_MEAN, target, weight, NULL);
    if (loss_out) *loss_out = L;
    return UNET_STATUS_OK;
}
