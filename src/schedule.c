/* schedule.c — learning-rate schedules: a linear warm-up times a decay over the run.
 *
 * The factor at step t (0-based) is the closed form of what torch.optim.lr_scheduler gives
 * after t calls of scheduler.step() (tests/test_train_guard.c checks it against
 * tools/golden/schedule.py, which records torch's values):
 *     warm-up   (t + 1) / W  while t < W       LinearLR(start_factor 1/W, total_iters W - 1)
 *     cosine    (1 + cos(pi t / T)) / 2        CosineAnnealingLR(T_max T, eta_min 0)
 *     poly      (1 - t / T)^power              PolynomialLR(total_iters T, power): nnU-Net's
 *     step      gamma^#{i : floor(f_i T) <= t} MultiStepLR(milestones, gamma)
 * The warm-up multiplies the decay (ChainedScheduler), so the decay runs over the whole run
 * and is not shifted by the warm-up.  torch computes the chain recursively; the closed form
 * agrees to about 1e-15 relative.  A closed form rather than a stateful object: the factor
 * depends on t alone, so a resumed run continues the schedule exactly.
 */
#include "internal.h"

#include <math.h>
#include <string.h>

static const char *const names[] = {"constant", "cosine", "poly", "step"};

const char *unet_schedule_name(unet_schedule_kind kind) {
    return (int)kind >= 0 && (int)kind < 4 ? names[kind] : "?";
}

unet_status unet_schedule_parse(unet_ctx *ctx, const char *name, unet_schedule_kind *out) {
    for (int i = 0; name && i < 4; i++)
        if (strcmp(name, names[i]) == 0) {
            *out = (unet_schedule_kind)i;
            return UNET_STATUS_OK;
        }
    return unet__fail(ctx, UNET_STATUS_ARG,
                      "schedule: '%s' (expected constant, cosine, poly or step)",
                      name ? name : "(null)");
}

unet_schedule unet_schedule_default(unet_schedule_kind kind, long total) {
    unet_schedule s = {.kind = kind, .total = total, .warmup = 0, .power = 0.9, .gamma = 0.1,
                       .n_milestones = 2, .milestones = {0.5, 0.75}};
    return s;
}

unet_status unet_schedule_check(unet_ctx *ctx, const unet_schedule *s) {
    if (!s) return unet__fail(ctx, UNET_STATUS_ARG, "schedule: NULL");
    if ((int)s->kind < 0 || (int)s->kind > UNET_SCHEDULE_STEP)
        return unet__fail(ctx, UNET_STATUS_ARG, "schedule: unknown kind %d", (int)s->kind);
    if (s->total < 1) return unet__fail(ctx, UNET_STATUS_ARG, "schedule: total steps %ld < 1", s->total);
    if (s->warmup < 0 || s->warmup > s->total)
        return unet__fail(ctx, UNET_STATUS_ARG, "schedule: warm-up of %ld steps, expected 0..%ld",
                          s->warmup, s->total);
    if (s->kind == UNET_SCHEDULE_POLY && !(s->power > 0 && s->power <= 100))
        return unet__fail(ctx, UNET_STATUS_ARG, "schedule: poly power %g, expected (0, 100]", s->power);
    if (s->kind == UNET_SCHEDULE_STEP) {
        if (!(s->gamma > 0 && s->gamma <= 1))
            return unet__fail(ctx, UNET_STATUS_ARG, "schedule: step gamma %g, expected (0, 1]", s->gamma);
        if (s->n_milestones < 1 || s->n_milestones > UNET_MAX_MILESTONES)
            return unet__fail(ctx, UNET_STATUS_ARG, "schedule: %d milestones, expected 1..%d",
                              s->n_milestones, UNET_MAX_MILESTONES);
        for (int i = 0; i < s->n_milestones; i++)
            if (!(s->milestones[i] > 0 && s->milestones[i] < 1) ||
                (i > 0 && !(s->milestones[i] > s->milestones[i - 1])))
                return unet__fail(ctx, UNET_STATUS_ARG,
                                  "schedule: milestone %g: expected increasing fractions in (0, 1)",
                                  s->milestones[i]);
    }
    return UNET_STATUS_OK;
}

double unet_schedule_factor(const unet_schedule *s, long t) {
    if (!s || s->total < 1) return 1.0;
    const long T = s->total;
    if (t < 0) t = 0;
    if (t > T) t = T;
    double f = 1.0;
    switch (s->kind) {
    case UNET_SCHEDULE_COSINE: f = 0.5 * (1.0 + cos(M_PI * (double)t / (double)T)); break;
    case UNET_SCHEDULE_POLY: f = pow(1.0 - (double)t / (double)T, s->power); break;
    case UNET_SCHEDULE_STEP:
        for (int i = 0; i < s->n_milestones && i < UNET_MAX_MILESTONES; i++)
            if ((long)floor(s->milestones[i] * (double)T) <= t) f *= s->gamma;
        break;
    default: break;
    }
    if (s->warmup > 0 && t < s->warmup) f *= (double)(t + 1) / (double)s->warmup;
    return f;
}
