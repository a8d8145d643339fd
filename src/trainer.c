/* trainer.c — the training loop: `unet train` between loading the data and writing the log
 * (docs/training.md).
 *
 * One iteration: the learning rate (base x schedule x the guard's scale), the next batch
 * (unet_sampler), unet_train_step_ex (clipping, the summed loss, the moving average), the
 * divergence guard's look at the step; at an epoch end a validation, the guard's look at it, the
 * best model and the last one; the guard's snapshot of a trusted state; the resumable
 * checkpoint at epoch ends, every save_every steps, every save_minutes and on a stop.  A
 * detection rolls the model back to the last good state with a lower learning rate; past
 * max_rollbacks the run ends with the last good state written as the last model.  Every
 * decision is a function of the steps' statistics, so the same seed and thread count give the
 * same run, and the resumable checkpoint carries all the loop's state (the data position, the
 * epoch's partial sums, the guard's statistics) so that a resumed run continues it exactly.
 *
 * The caller sees the run through one callback per step and per epoch end (unet_train_event):
 * the CLI writes its log and progress lines from them, the Python package calls a Python
 * function.  Rejected: a step-at-a-time API (create / step / free) with the epoch logic left to
 * the caller, which is the loop the CLI used to hold and every caller would write again.
 *
 * Data-parallel runs (issue 13) build on three seams: the sampler's shard (each process makes
 * its samples of every global batch, unet_sampler_shard), the gradient hook of the step
 * options (sum the gradients between backward and update), and files and events only where
 * the caller asks for them.
 */
#include "augment.h"
#include "trainer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WORKERS 64
#define MAX_BATCH   65536

/* ---- options ---- */

unet_train_opts unet_train_defaults(void) {
    return (unet_train_opts){.optim = unet_optim_default(UNET_OPTIM_ADAM),
                             .step = unet_step_defaults(UNET_LOSS_CE_DICE),
                             .schedule = unet_schedule_default(UNET_SCHEDULE_CONSTANT, 1),
                             .guard = unet_guard_defaults(), .augment = unet_augment_default(),
                             .batch = 4, .epochs = 10, .seed = 1, .workers = 1,
                             .snapshot_every = 100, .save_minutes = 10};
}

unet_status unet_train_check(unet_ctx *ctx, const unet_train_opts *o) {
    if (!o) return unet__fail(ctx, UNET_STATUS_ARG, "train: options are NULL");
    if (o->batch < 1 || o->batch > MAX_BATCH)
        return unet__fail(ctx, UNET_STATUS_ARG, "batch: expected 1..%d, got %d", MAX_BATCH, o->batch);
    if (o->tile < 0 || o->tile > 65536)
        return unet__fail(ctx, UNET_STATUS_ARG, "tile: expected 0 (automatic) or up to 65536, "
                                                "got %d", o->tile);
    if (o->epochs < 1)
        return unet__fail(ctx, UNET_STATUS_ARG, "epochs: expected >= 1, got %d", o->epochs);
    if (o->steps < 0 || o->steps > UNET_MAX_STEPS)
        return unet__fail(ctx, UNET_STATUS_ARG, "steps: expected 0..%ld, got %ld", UNET_MAX_STEPS,
                          o->steps);
    if (o->steps == UNET_MAX_STEPS && o->schedule.kind != UNET_SCHEDULE_CONSTANT)
        return unet__fail(ctx, UNET_STATUS_ARG, "schedule %s decays over the run's length, and a "
                          "run that only its time budget ends has none: give steps or epochs",
                          unet_schedule_name(o->schedule.kind));
    if (o->workers < 0 || o->workers > MAX_WORKERS)
        return unet__fail(ctx, UNET_STATUS_ARG, "workers: expected 0..%d, got %d", MAX_WORKERS,
                          o->workers);
    if (!(o->minutes >= 0 && o->minutes < 1e12))
        return unet__fail(ctx, UNET_STATUS_ARG, "minutes: expected >= 0, got %g", o->minutes);
    if (o->snapshot_every < 1)
        return unet__fail(ctx, UNET_STATUS_ARG, "snapshot_every: expected >= 1, got %d",
                          o->snapshot_every);
    if (o->save_every < 0)
        return unet__fail(ctx, UNET_STATUS_ARG, "save_every: expected >= 0, got %ld", o->save_every);
    if (!(o->save_minutes >= 0 && o->save_minutes < 1e12))
        return unet__fail(ctx, UNET_STATUS_ARG, "save_minutes: expected >= 0, got %g",
                          o->save_minutes);
    if (o->precision != UNET_PRECISION_FP32 && o->precision != UNET_PRECISION_BF16)
        return unet__fail(ctx, UNET_STATUS_ARG, "precision: expected fp32 or bf16, got %d",
                          (int)o->precision);
    if (!(o->ema == 0 || (o->ema > 0 && o->ema < 1)))
        return unet__fail(ctx, UNET_STATUS_ARG, "ema: expected 0 (off) or a decay in (0, 1), got %g",
                          o->ema);
    if ((o->shard_first || o->shard_count) &&
        (o->shard_first < 0 || o->shard_count < 1 || o->shard_first > o->batch - o->shard_count))
        return unet__fail(ctx, UNET_STATUS_ARG, "shard: samples %d..%d of a batch of %d",
                          o->shard_first, o->shard_first + o->shard_count - 1, o->batch);
    if (o->step.loss < UNET_LOSS_CE || o->step.loss > UNET_LOSS_WCE)
        return unet__fail(ctx, UNET_STATUS_ARG, "loss: unknown kind %d", (int)o->step.loss);
    unet_status s = unet__check_step_opts(ctx, &o->step);
    if (s == UNET_STATUS_OK) s = unet__check_optim(ctx, &o->optim);
    if (s == UNET_STATUS_OK) s = unet__augment_check(ctx, &o->augment);
    if (s == UNET_STATUS_OK) {
        /* The warm-up against the run's length is checked once the length is known. */
        unet_schedule sc = o->schedule;
        sc.total = UNET_MAX_STEPS;
        s = unet_schedule_check(ctx, &sc);
    }
    if (s == UNET_STATUS_OK) {
        unet_guard *g = NULL;
        s = unet_guard_create(ctx, &o->guard, &g);
        unet_guard_free(g);
    }
    return s;
}

/* ---- create ---- */

void unet_trainer_free(unet_trainer *t) {
    if (!t) return;
    unet_sampler_free(t->sampler);
    unet_guard_free(t->guard);
    free(t->x), free(t->tg), free(t->wt);
    free(t);
}

const unet_train_info *unet_trainer_info(const unet_trainer *t) {
    return t ? &t->info : NULL;
}

/* The info fields that live in the guard and the sampler. */
static void sync_info(unet_trainer *t) {
    if (t->guard) {
        t->info.rollbacks = unet_guard_rollbacks(t->guard);
        t->info.good_step = unet_guard_snapshot_step(t->guard);
    }
    if (t->sampler) unet_sampler_times(t->sampler, NULL, &t->info.data_seconds);
}

/* Checks the data against the model and the options. */
static unet_status check_data(unet_ctx *ctx, const unet_model *m, const unet_dataset *train,
                              const unet_dataset *val, const unet_train_opts *o) {
    const int C = m->cfg.in_channels;
    if (unet_dataset_count(train) < 1)
        return unet__fail(ctx, UNET_STATUS_ARG, "train: no training images");
    if (train->channels != C)
        return unet__fail(ctx, UNET_STATUS_ARG, "the images have %d channels but the model takes %d",
                          train->channels, C);
    if (val && unet_dataset_count(val) > 0 && val->channels != C)
        return unet__fail(ctx, UNET_STATUS_ARG, "the validation images have %d channels but the "
                                                "model takes %d", val->channels, C);
    if (o->step.loss == UNET_LOSS_WCE && train->has_weight != 1)
        return unet__fail(ctx, UNET_STATUS_ARG, "loss wce: the training images have no weight maps "
                                                "(unet_target_opts.weights)");
    return UNET_STATUS_OK;
}

/* The input tile: the given or default side rounded up to one the network accepts, and its
 * output. */
static unet_status plan_tile(unet_ctx *ctx, unet_trainer *t) {
    const unet_config *c = &t->m->cfg;
    int tile = t->o.tile;
    if (tile <= 0) tile = c->padding == 0 && c->arch == UNET_ARCH_UNET_PAPER ? 316 : 256;
    unet_status s = unet_model_round_size(ctx, t->m, tile, &t->o.tile);
    if (s == UNET_STATUS_OK)
        s = unet_model_output_size(ctx, t->m, t->o.tile, t->o.tile, &t->info.out_h,
                                   &t->info.out_w);
    t->info.tile = t->o.tile;
    return s;
}

/* Steps per epoch (about as many output pixels as the training images hold) and of the run. */
static unet_status plan_steps(unet_ctx *ctx, unet_trainer *t) {
    double pixels = 0;
    for (int i = 0; i < t->train->count; i++)
        pixels += (double)t->train->items[i].h * t->train->items[i].w;
    long per_epoch = (long)ceil(pixels / ((double)t->o.batch * t->info.out_h * t->info.out_w));
    if (per_epoch < 1) per_epoch = 1;
    if (per_epoch > UNET_MAX_STEPS / t->o.epochs)
        return unet__fail(ctx, UNET_STATUS_ARG, "train: %d epochs of %ld steps are over %ld steps",
                          t->o.epochs, per_epoch, UNET_MAX_STEPS);
    t->info.per_epoch = per_epoch;
    t->info.total = t->o.steps ? t->o.steps : (long)t->o.epochs * per_epoch;
    return UNET_STATUS_OK;
}

/* The batch buffers of this process's share. */
static unet_status alloc_batch(unet_ctx *ctx, unet_trainer *t) {
    const size_t fx[] = {(size_t)t->n, (size_t)t->m->cfg.in_channels, (size_t)t->o.tile,
                         (size_t)t->o.tile, sizeof(float)};
    const size_t fm[] = {(size_t)t->n, (size_t)t->info.out_h, (size_t)t->info.out_w,
                         sizeof(float)};
    size_t nx, nm;
    bool fits = unet__prod_size(fx, 5, &nx) && unet__prod_size(fm, 4, &nm);
    bool weights = t->o.step.loss == UNET_LOSS_WCE;
    t->x = fits ? malloc(nx) : NULL;
    t->tg = fits ? malloc(nm) : NULL;
    t->wt = fits && weights ? malloc(nm) : NULL;
    if (!t->x || !t->tg || (weights && !t->wt))
        return unet__fail(ctx, UNET_STATUS_NOMEM, "out of memory for a batch of %d tiles of %d "
                                                  "pixels", t->n, t->o.tile);
    return UNET_STATUS_OK;
}

unet_status unet_trainer_create(unet_ctx *ctx, unet_model *m, const unet_dataset *train,
                                const unet_dataset *val, const unet_train_opts *o,
                                unet_trainer **out) {
    if (!out) return unet__fail(ctx, UNET_STATUS_ARG, "trainer_create: out is NULL");
    *out = NULL;
    if (!m || !train) return unet__fail(ctx, UNET_STATUS_ARG, "trainer_create: NULL argument");
    unet_status s = unet_train_check(ctx, o);
    if (s == UNET_STATUS_OK) s = check_data(ctx, m, train, val, o);
    if (s == UNET_STATUS_OK) s = unet_model_set_precision(ctx, m, o->precision);
    if (s != UNET_STATUS_OK) return s;
    struct unet__resume rs = {.best = -1};
    if (o->resume && (s = unet__resume_read(ctx, m, NULL, &rs)) != UNET_STATUS_OK) return s;
    unet_trainer *t = calloc(1, sizeof *t);
    if (!t) return unet__fail(ctx, UNET_STATUS_NOMEM, "trainer: out of memory");
    t->m = m;
    t->train = train;
    t->val = val;
    t->o = *o;
    if (o->resume) t->o.seed = rs.seed, t->o.batch = rs.batch, t->o.tile = rs.tile;
    t->n = t->o.shard_count ? t->o.shard_count : t->o.batch;
    t->lr0 = t->o.optim.lr;
    t->info.n_train = unet_dataset_count(train);
    t->info.n_val = unet_dataset_count(val);
    t->info.first_step = t->info.step = rs.step;
    t->info.saved_step = o->resume ? rs.step : -1;
    t->info.good_step = -1;
    t->info.best = rs.best;
    t->epoch_loss = rs.epoch_loss;
    t->epoch_steps = rs.epoch_steps;
    s = plan_tile(ctx, t);
    if (s == UNET_STATUS_OK)
        s = unet_sampler_create(ctx, train, t->o.batch, t->o.tile, t->o.tile, t->info.out_h,
                                t->info.out_w, &t->o.augment, (uint64_t)t->o.seed, t->o.workers,
                                &t->sampler);
    if (s == UNET_STATUS_OK && t->o.shard_count)
        s = unet_sampler_shard(ctx, t->sampler, t->o.shard_first, t->o.shard_count);
    if (s == UNET_STATUS_OK && o->resume) s = unet_sampler_seek(ctx, t->sampler, rs.sampler);
    if (s == UNET_STATUS_OK) s = plan_steps(ctx, t);
    if (s != UNET_STATUS_OK || t->info.step >= t->info.total) goto done; /* nothing to train */
    t->o.schedule.total = t->info.total;
    s = unet_schedule_check(ctx, &t->o.schedule);
    if (s == UNET_STATUS_OK && t->o.ema > 0 && unet_model_ema_decay(m) == 0)
        s = unet_model_ema_enable(ctx, m, t->o.ema);
    if (s == UNET_STATUS_OK) s = unet_guard_create(ctx, &t->o.guard, &t->guard);
    if (s == UNET_STATUS_OK && rs.guard && (s = unet_guard_set_state(ctx, t->guard, rs.guard)) !=
                                               UNET_STATUS_OK)
        s = unet__fail(ctx, UNET_STATUS_FORMAT, "metadata train.guard is not valid (a damaged "
                                                "resumable checkpoint?): %s", unet_ctx_errmsg(ctx));
    /* The first rollback target: the state training starts from. */
    if (s == UNET_STATUS_OK) s = unet_guard_snapshot(ctx, t->guard, m, t->info.step);
    if (s == UNET_STATUS_OK) s = alloc_batch(ctx, t);
done:
    if (s != UNET_STATUS_OK) {
        unet_trainer_free(t);
        return s;
    }
    sync_info(t);
    *out = t;
    return UNET_STATUS_OK;
}

/* ---- run ---- */

/* The event strings of one iteration. */
struct texts {
    char event[192];
    char warning[512];
};

/* A detected divergence at `step`: back to the last good state with a lower learning rate,
 * said in the event and the warning.  False when the rollbacks are used up (the model is back
 * at the last good state all the same; the run stops). */
static bool recover(unet_ctx *ctx, unet_trainer *t, long step, double lr_sched,
                    unet_guard_event ev, struct texts *tx) {
    unet_guard *g = t->guard;
    const char *what = unet_guard_event_name(ev);
    char detail[400];
    snprintf(detail, sizeof detail, "%s", unet_guard_detail(g));
    unet_status s = unet_guard_rollback(ctx, g, t->m);
    double lr = lr_sched * unet_guard_lr_scale(g);
    if (s != UNET_STATUS_OK) {
        snprintf(tx->event, sizeof tx->event, "diverged:%s;to=%ld", what,
                 unet_guard_snapshot_step(g));
        return false;
    }
    snprintf(tx->event, sizeof tx->event, "rollback:%s;to=%ld;lr=%.3g", what,
             unet_guard_snapshot_step(g), lr);
    snprintf(tx->warning, sizeof tx->warning,
             "step %ld: %s; rolled back to step %ld with the learning rate x%g (now %.3g), "
             "rollback %d",
             step, detail, unet_guard_snapshot_step(g), unet_guard_lr_scale(g), lr,
             unet_guard_rollbacks(g));
    return true;
}

static int emit(unet_train_fn fn, void *user, const unet_train_event *e) {
    return fn ? fn(e, user) != 0 : 0;
}

/* An epoch's end: validation, the guard's look at it, the best model, the EPOCH event (*stop
 * when its callback asks), the last model.  *diverged when the rollbacks are used up. */
static unet_status epoch_end(unet_ctx *ctx, unet_trainer *t, unet_train_event *e,
                             struct texts *tx, unet_train_fn fn, void *user, bool *stop,
                             bool *rolled_back, bool *diverged) {
    unet_train_info *in = &t->info;
    const bool have_val = in->n_val > 0;
    struct unet__val_result vr;
    memset(&vr, 0, sizeof vr);
    unet_status s = have_val ? unet__trainer_validate(ctx, t->m, t->val, &vr) : UNET_STATUS_OK;
    if (s != UNET_STATUS_OK) return s;
    unet_guard_event ev = UNET_GUARD_NONE;
    if (have_val) {
        /* The validation's loss is the plain cross entropy: log K for a uniform prediction. */
        const int K = t->m->cfg.classes < 2 ? 2 : t->m->cfg.classes;
        unet_step_stats vs = {.loss = vr.loss, .classes = K, .correct = vr.correct,
                              .baseline = log((double)K)};
        memcpy(vs.pred, vr.pred, sizeof vs.pred);
        memcpy(vs.truth, vr.truth, sizeof vs.truth);
        ev = unet_guard_observe_validation(t->guard, &vs);
    }
    tx->event[0] = tx->warning[0] = 0;
    const bool good = ev == UNET_GUARD_NONE && unet_guard_healthy(t->guard);
    char note[40];
    if (ev != UNET_GUARD_NONE) {
        *rolled_back = true;
        *diverged = !recover(ctx, t, e->step, t->lr0 * unet_schedule_factor(&t->o.schedule, e->step),
                             ev, tx);
    } else if (have_val && vr.dice > in->best) {
        in->best = vr.dice;
        snprintf(in->selected, sizeof in->selected, "best val_dice=%.4f step=%ld%s", vr.dice,
                 e->step, unet__ema_note(t->m, note, sizeof note));
        snprintf(tx->event, sizeof tx->event, "best:val_dice=%.4f", vr.dice);
        s = unet__trainer_save_selected(ctx, t->m, t->o.out, in->selected);
    }
    e->kind = UNET_TRAIN_EPOCH;
    e->loss = t->epoch_steps ? t->epoch_loss / t->epoch_steps : NAN;
    e->grad_norm = NAN;
    e->validated = have_val;
    e->val_loss = vr.loss, e->val_dice = vr.dice, e->val_iou = vr.iou;
    e->val_pixel_error = vr.pixel_error, e->val_rand_error = vr.rand_error;
    *stop |= emit(fn, user, e);
    if (e->step % in->per_epoch == 0) { /* not at a --steps end: a resume continues the epoch */
        t->epoch_loss = 0;
        t->epoch_steps = 0;
    }
    if (*diverged || s != UNET_STATUS_OK || !good) return s;
    /* The last model (and OUT without validation): only a state the guard trusts. */
    char last[96];
    snprintf(last, sizeof last, "last step=%ld%s", e->step, unet__ema_note(t->m, note, sizeof note));
    s = unet__trainer_save_selected(ctx, t->m, t->o.last, last);
    if (s == UNET_STATUS_OK && !have_val) {
        snprintf(in->selected, sizeof in->selected, "%s", last);
        s = unet__trainer_save_selected(ctx, t->m, t->o.out, last);
    }
    return s;
}

/* The loop until the end, a stop, a divergence or a failure. */
static unet_status run_loop(unet_ctx *ctx, unet_trainer *t, unet_train_fn fn, void *user,
                            bool *diverged) {
    unet_train_info *in = &t->info;
    const long total = in->total, per_epoch = in->per_epoch;
    const unet_schedule *sched = &t->o.schedule;
    const double t0 = unet__seconds();
    double last_save = t0;
    unet_optim opt = t->o.optim;
    struct texts tx = {"", ""};
    unet_train_event e = {.kind = UNET_TRAIN_START, .step = in->step,
                          .epoch = in->step / per_epoch + 1, .total = total, .loss = NAN,
                          .lr = t->lr0 * unet_schedule_factor(sched, in->step) *
                                unet_guard_lr_scale(t->guard),
                          .grad_norm = NAN, .event = tx.event, .warning = tx.warning};
    if (emit(fn, user, &e))
        return unet__fail(ctx, UNET_STATUS_INTERRUPTED, "stopped before the first step");
    while (in->step < total) {
        opt.lr = t->lr0 * unet_schedule_factor(sched, in->step) * unet_guard_lr_scale(t->guard);
        unet_status s = unet_sampler_next(ctx, t->sampler, t->x, t->tg, t->wt);
        if (s != UNET_STATUS_OK) return s;
        unet_step_stats st;
        s = unet_train_step_ex(ctx, t->m, &opt, &t->o.step, t->x, t->tg, t->wt, t->n, t->o.tile,
                               t->o.tile, &st);
        if (s != UNET_STATUS_OK && s != UNET_STATUS_NUMERIC) return s;
        const long step = ++in->step;
        tx.event[0] = tx.warning[0] = 0;
        bool rolled_back = false;
        unet_guard_event ev = unet_guard_observe(t->guard, s, &st);
        if (ev != UNET_GUARD_NONE) {
            rolled_back = true;
            *diverged = !recover(ctx, t, step, t->lr0 * unet_schedule_factor(sched, step), ev, &tx);
        } else if (st.clipped) {
            snprintf(tx.event, sizeof tx.event, "clip:norm=%.4g", st.grad_norm);
        }
        if (isfinite(st.loss)) t->epoch_loss += st.loss;
        t->epoch_steps++;
        e = (unet_train_event){.kind = UNET_TRAIN_STEP, .step = step,
                               .epoch = (step - 1) / per_epoch + 1, .total = total,
                               .loss = st.loss, .lr = opt.lr, .grad_norm = st.grad_norm,
                               .elapsed = unet__seconds() - t0, .event = tx.event,
                               .warning = tx.warning};
        bool stop = emit(fn, user, &e);
        if (*diverged) return UNET_STATUS_NUMERIC;
        const bool budget_over = t->o.minutes > 0 && e.elapsed >= 60.0 * t->o.minutes &&
                                 step < total;
        const bool at_end = step % per_epoch == 0 || step == total || budget_over;
        if (at_end) {
            s = epoch_end(ctx, t, &e, &tx, fn, user, &stop, &rolled_back, diverged);
            if (*diverged) return UNET_STATUS_NUMERIC;
            if (s != UNET_STATUS_OK) return s;
        }
        /* The last good state: at validation and every snapshot_every steps. */
        if (!rolled_back && (at_end || step % t->o.snapshot_every == 0) &&
            unet_guard_trusted(t->guard) &&
            (s = unet_guard_snapshot(ctx, t->guard, t->m, step)) != UNET_STATUS_OK)
            return s;
        const bool timed = t->o.save_minutes > 0 &&
                           unet__seconds() - last_save > 60.0 * t->o.save_minutes;
        if (at_end || timed || (t->o.save_every && step % t->o.save_every == 0) || stop) {
            if ((s = unet__trainer_save_resume(ctx, t)) != UNET_STATUS_OK) return s;
            if (t->o.resume_out) in->saved_step = step;
            last_save = unet__seconds();
        }
        if (stop)
            return unet__fail(ctx, UNET_STATUS_INTERRUPTED, "stopped on request at step %ld of %ld",
                              step, total);
        if (budget_over) {
            in->budget_over = 1;
            break;
        }
    }
    return UNET_STATUS_OK;
}

unet_status unet_trainer_run(unet_ctx *ctx, unet_trainer *t, unet_train_fn fn, void *user) {
    if (!t) return unet__fail(ctx, UNET_STATUS_ARG, "trainer_run: t is NULL");
    if (t->ran) return unet__fail(ctx, UNET_STATUS_ARG, "trainer_run: the run is over");
    t->ran = true;
    if (t->info.step >= t->info.total) return UNET_STATUS_OK;
    bool diverged = false;
    unet_status s = run_loop(ctx, t, fn, user, &diverged);
    sync_info(t);
    if (!diverged) return s;
    /* The model is back at the last good state: keep it as the last model and as the
     * resumable checkpoint, so nothing diverged is left as a result. */
    unet_train_info *in = &t->info;
    in->diverged = 1;
    char why[700], last[96], note[40];
    snprintf(why, sizeof why, "%s", unet_ctx_errmsg(ctx));
    snprintf(last, sizeof last, "last good step=%ld%s", in->good_step,
             unet__ema_note(t->m, note, sizeof note));
    s = unet__trainer_save_selected(ctx, t->m, t->o.last, last);
    if (s == UNET_STATUS_OK) s = unet__trainer_save_resume(ctx, t);
    if (s == UNET_STATUS_OK && t->o.resume_out) in->saved_step = in->step;
    in->last_good_written = s == UNET_STATUS_OK;
    if (s != UNET_STATUS_OK)
        return unet__fail(ctx, UNET_STATUS_NUMERIC, "%s; writing the last good state failed: %s",
                          why, unet_ctx_errmsg(ctx));
    return unet__fail(ctx, UNET_STATUS_NUMERIC, "%s", why);
}

/* ---- the model's blocks (data-parallel seams) ---- */

float *unet_model_block(unet_model *m, unet_block which, size_t *n) {
    float *p = NULL;
    size_t count = 0;
    if (m && which == UNET_BLOCK_WEIGHTS) p = m->weights, count = m->n_weights;
    else if (m && which == UNET_BLOCK_GRADS) p = m->grads, count = m->grads ? m->n_weights : 0;
    else if (m && which == UNET_BLOCK_BUFFERS) p = m->buffers, count = m->n_buffers;
    if (n) *n = count;
    return p;
}
