/* ema.c — an exponential moving average of the weights, for validation and the saved models.
 *
 * The average lives beside the parameter block with its layout (ema_w), and the batch-norm
 * running statistics have their own average (ema_b): a network validated with averaged weights
 * but the live statistics would normalise with statistics of other weights.  timm's ModelEmaV3
 * averages the buffers the same way; torch.optim.swa_utils.AveragedModel (use_buffers=True)
 * too.  The counters (num_batches_tracked) are left alone: unet's batch-norm does not read them.
 *
 * The decay warms up as TensorFlow's ExponentialMovingAverage(num_updates) does,
 * d = min(decay, (1 + u) / (10 + u)), so a short run's average is not dominated by the
 * initial weights (with decay 0.999 and no warm-up, 1000 steps still carry 37 % of them).
 *
 * Swapping exchanges the contents, element by element, rather than the pointers: nothing that
 * caches a pointer into the parameter block can then see the wrong weights.
 */
#include "model.h"

#include <math.h>
#include <string.h>

void unet__ema_update(float *avg, const float *x, size_t n, double decay) {
    const float a = (float)(1.0 - decay);
    const ptrdiff_t len = (ptrdiff_t)n;
#pragma omp parallel for schedule(static)
    for (ptrdiff_t i = 0; i < len; i++) {
        float d = x[i] - avg[i];
        avg[i] = fmaf(a, d, avg[i]);
    }
}

unet_status unet_model_ema_enable(unet_ctx *ctx, unet_model *m, double decay) {
    if (!m) return unet__fail(ctx, UNET_STATUS_ARG, "ema: model is NULL");
    if (decay == 0.0) {
        unet__free(m->ema_w), unet__free(m->ema_b);
        m->ema_w = m->ema_b = NULL;
        m->ema_decay = 0.0;
        m->ema_updates = 0;
        return UNET_STATUS_OK;
    }
    if (!(decay > 0.0 && decay < 1.0))
        return unet__fail(ctx, UNET_STATUS_ARG, "ema: decay %g, expected 0 < decay < 1 (or 0: off)",
                          decay);
    if (!m->ema_w) {
        m->ema_w = unet__alloc(m->n_weights * sizeof(float));
        m->ema_b = unet__alloc((m->n_buffers ? m->n_buffers : 1) * sizeof(float));
        if (!m->ema_w || !m->ema_b) {
            unet__free(m->ema_w), unet__free(m->ema_b);
            m->ema_w = m->ema_b = NULL;
            return unet__fail(ctx, UNET_STATUS_NOMEM, "ema: cannot allocate %zu MiB",
                              m->n_weights * sizeof(float) >> 20);
        }
    }
    memcpy(m->ema_w, m->weights, m->n_weights * sizeof(float));
    memcpy(m->ema_b, m->buffers, m->n_buffers * sizeof(float));
    m->ema_decay = decay;
    m->ema_updates = 0;
    return UNET_STATUS_OK;
}

double unet_model_ema_decay(const unet_model *m) {
    return m && m->ema_w ? m->ema_decay : 0.0;
}

long unet_model_ema_updates(const unet_model *m) {
    return m && m->ema_w ? m->ema_updates : 0;
}

/* One update after an optimizer step (train.c). */
void unet__model_ema_step(unet_model *m) {
    if (!m->ema_w) return;
    const double u = (double)m->ema_updates;
    double d = (1.0 + u) / (10.0 + u);
    if (d > m->ema_decay) d = m->ema_decay;
    unet__ema_update(m->ema_w, m->weights, m->n_weights, d);
    unet__ema_update(m->ema_b, m->buffers, m->n_buffers, d);
    m->ema_updates++;
}

static void swap_floats(float *a, float *b, size_t n) {
    const ptrdiff_t len = (ptrdiff_t)n;
#pragma omp parallel for schedule(static)
    for (ptrdiff_t i = 0; i < len; i++) {
        float t = a[i];
        a[i] = b[i];
        b[i] = t;
    }
}

unet_status unet_model_ema_swap(unet_ctx *ctx, unet_model *m) {
    if (!m || !m->ema_w) return unet__fail(ctx, UNET_STATUS_ARG, "ema: no moving average is kept");
    unet__use_threads(unet__threads(ctx));
    swap_floats(m->weights, m->ema_w, m->n_weights);
    swap_floats(m->buffers, m->ema_b, m->n_buffers);
    unet__model_weights_changed(m);
    return UNET_STATUS_OK;
}
