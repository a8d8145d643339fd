/* trainer_io.c — what the training loop (trainer.c) reads and writes: validation, the saved
 * models with their `selected` metadata, the resumable checkpoint's train.* metadata, the log.
 *
 * The formats are unet train's and stay byte for byte what they were when this code lived in
 * the CLI: the metadata keys and their printf formats (docs/checkpoints.md), and the log's
 * columns (docs/training.md), which readers take by name (unet report).
 */
#include "trainer.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- validation ---- */

/* The foreground mean of per-class scores (NaN: class absent from both, counts 1). */
static double foreground_mean(const double *score, int K) {
    if (K <= 2) return isnan(score[1]) ? 1.0 : score[1];
    double sum = 0;
    for (int c = 1; c < K; c++) sum += isnan(score[c]) ? 1.0 : score[c];
    return sum / (K - 1);
}

/* One image's share of r; prob (K, h, w) and pred, truth (h, w) are scratch. */
static unet_status validate_image(unet_ctx *ctx, unet_model *m, const float *image,
                                  const int32_t *target, int h, int w, const char *name,
                                  float *prob, int32_t *pred, int32_t *truth,
                                  struct unet__val_result *r, int *rand_n) {
    const int K = m->cfg.classes;
    const size_t P = (size_t)h * w;
    unet_predict_opts po = unet_predict_defaults();
    unet_status s = unet_predict(ctx, m, image, h, w, &po, prob, NULL, NULL);
    if (s != UNET_STATUS_OK)
        return unet__fail(ctx, s, "validation image %s: %s", name, unet_ctx_errmsg(ctx));
    /* Cross entropy of the predicted probabilities on the labeled pixels. */
    double L = 0;
    size_t counted = 0;
    for (size_t p = 0; p < P; p++) {
        int t = target[p];
        if (t < 0) continue;
        double q = K == 1 ? (t ? prob[p] : 1.0 - prob[p]) : prob[(size_t)t * P + p];
        L -= log(q > 1e-12 ? q : 1e-12);
        counted++;
    }
    r->loss += counted ? L / counted : 0;
    unet_argmax(prob, K, h, w, UNET_OUTPUT_PROBABILITIES, pred);
    for (size_t p = 0; p < P; p++) {
        truth[p] = target[p] < 0 ? 0 : target[p];
        if (target[p] < 0) continue;
        r->pred[pred[p]]++;
        r->truth[truth[p]]++;
        r->correct += pred[p] == truth[p];
    }
    unet_metrics mt;
    s = unet_evaluate(ctx, pred, truth, NULL, NULL, h, w, K < 2 ? 2 : K, &mt);
    if (s != UNET_STATUS_OK) return s;
    r->dice += foreground_mean(mt.dice, K < 2 ? 2 : K);
    r->iou += foreground_mean(mt.iou, K < 2 ? 2 : K);
    r->pixel_error += mt.pixel_error;
    if (!isnan(mt.rand_error)) r->rand_error += mt.rand_error, (*rand_n)++;
    return UNET_STATUS_OK;
}

static unet_status validate(unet_ctx *ctx, unet_model *m, const unet_dataset *val,
                            struct unet__val_result *r) {
    memset(r, 0, sizeof *r);
    const int n = unet_dataset_count(val), K = m->cfg.classes;
    int rand_n = 0;
    unet_status s = UNET_STATUS_OK;
    for (int i = 0; i < n && s == UNET_STATUS_OK; i++) {
        const float *image;
        const int32_t *target;
        const char *name;
        int h, w;
        unet_dataset_get(val, i, &image, &target, NULL, &h, &w, &name);
        size_t P = (size_t)h * w;
        float *prob = malloc(sizeof(float) * P * (size_t)K);
        int32_t *pred = malloc(sizeof(int32_t) * P);
        int32_t *truth = malloc(sizeof(int32_t) * P);
        s = prob && pred && truth ? validate_image(ctx, m, image, target, h, w, name, prob, pred,
                                                   truth, r, &rand_n)
                                  : unet__fail(ctx, UNET_STATUS_NOMEM,
                                               "out of memory validating %s", name);
        free(prob), free(pred), free(truth);
    }
    if (s != UNET_STATUS_OK) return s;
    r->loss /= n, r->dice /= n, r->iou /= n, r->pixel_error /= n;
    r->rand_error = rand_n ? r->rand_error / rand_n : NAN;
    return UNET_STATUS_OK;
}

unet_status unet__trainer_validate(unet_ctx *ctx, unet_model *m, const unet_dataset *val,
                                   struct unet__val_result *r) {
    bool ema = unet_model_ema_decay(m) > 0;
    unet_status s = ema ? unet_model_ema_swap(ctx, m) : UNET_STATUS_OK;
    if (s != UNET_STATUS_OK) return s;
    s = validate(ctx, m, val, r);
    if (ema) unet_model_ema_swap(ctx, m);
    return s;
}

/* ---- the models written ---- */

const char *unet__ema_note(const unet_model *m, char *buf, size_t size) {
    double d = unet_model_ema_decay(m);
    if (d > 0) snprintf(buf, size, " ema=%g", d);
    else buf[0] = 0;
    return buf;
}

unet_status unet__trainer_save_selected(unet_ctx *ctx, unet_model *m, const char *path,
                                        const char *selected) {
    if (!path) return UNET_STATUS_OK;
    const char *meta[] = {"selected", selected};
    bool ema = unet_model_ema_decay(m) > 0;
    unet_status s = ema ? unet_model_ema_swap(ctx, m) : UNET_STATUS_OK;
    if (s != UNET_STATUS_OK) return s;
    s = unet_model_save_meta(ctx, m, path, meta, 1);
    if (ema) unet_model_ema_swap(ctx, m);
    return s;
}

/* ---- the resumable checkpoint's metadata ---- */

unet_status unet__trainer_save_resume(unet_ctx *ctx, const struct unet_trainer *t) {
    if (!t->o.resume_out) return UNET_STATUS_OK;
    char v[8][32];
    snprintf(v[0], sizeof v[0], "%ld", t->info.step);
    snprintf(v[1], sizeof v[1], "%ld", unet_sampler_position(t->sampler));
    snprintf(v[2], sizeof v[2], "%.17g", t->info.best);
    snprintf(v[3], sizeof v[3], "%d", t->o.seed);
    snprintf(v[4], sizeof v[4], "%d", t->o.tile);
    snprintf(v[5], sizeof v[5], "%d", t->o.batch);
    snprintf(v[6], sizeof v[6], "%.17g", t->epoch_loss);
    snprintf(v[7], sizeof v[7], "%ld", t->epoch_steps);
    char *guard = unet_guard_state(t->guard);
    if (!guard)
        return unet__fail(ctx, UNET_STATUS_NOMEM, "out of memory writing %s", t->o.resume_out);
    const char *meta[] = {"train.step", v[0], "train.sampler", v[1], "train.best", v[2],
                          "train.seed", v[3], "train.tile", v[4], "train.batch", v[5],
                          "train.epoch_loss", v[6], "train.epoch_steps", v[7],
                          "train.guard", guard};
    unet_status s = unet_model_save_training(ctx, t->m, t->o.resume_out, meta, 9);
    free(guard);
    return s;
}

/* A whole-string integer in [lo, hi]. */
static bool meta_long(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi) return false;
    *out = v;
    return true;
}

/* One train.* pair into r; false when its value is malformed.  found gets a bit per required
 * key. */
static bool resume_pair(const char *key, const char *value, struct unet__resume *r, int *found) {
    static const struct {
        const char *key;
        long        lo, hi;
    } keys[] = {{"train.step", 0, UNET_MAX_STEPS}, {"train.sampler", 0, UNET_MAX_STEPS},
                {"train.seed", INT_MIN, INT_MAX}, {"train.tile", 1, 65536},
                {"train.batch", 1, 65536}};
    if (strcmp(key, "train.best") == 0 || strcmp(key, "train.epoch_loss") == 0) {
        char *end;
        double v = strtod(value, &end);
        if (end == value || *end || !isfinite(v)) return false;
        if (strcmp(key, "train.best") == 0) r->best = v;
        else r->epoch_loss = v;
        return true;
    }
    if (strcmp(key, "train.epoch_steps") == 0)
        return meta_long(value, 0, UNET_MAX_STEPS, &r->epoch_steps);
    if (strcmp(key, "train.guard") == 0) {
        r->guard = value;
        return true;
    }
    for (int i = 0; i < (int)(sizeof keys / sizeof keys[0]); i++) {
        if (strcmp(key, keys[i].key) != 0) continue;
        long v;
        if (!meta_long(value, keys[i].lo, keys[i].hi, &v)) return false;
        *found |= 1 << i;
        switch (i) {
        case 0: r->step = v; break;
        case 1: r->sampler = v; break;
        case 2: r->seed = (int)v; break;
        case 3: r->tile = (int)v; break;
        case 4: r->batch = (int)v; break;
        }
        return true;
    }
    return true;
}

/* Each value is checked: a corrupt or edited file must not size the batch buffers or seek the
 * sampler with garbage.  The first malformed key in the file's order is the one named. */
unet_status unet__resume_read(unet_ctx *ctx, const unet_model *m, const char *name,
                              struct unet__resume *r) {
    *r = (struct unet__resume){.best = -1};
    if (!name) name = "the model";
    int found = 0;
    for (int i = 0; i < m->n_meta; i++) {
        const char *key = m->meta[2 * i], *value = m->meta[2 * i + 1];
        if (!resume_pair(key, value, r, &found))
            return unet__fail(ctx, UNET_STATUS_FORMAT,
                              "%s: metadata %.31s='%.63s' is not valid (a damaged resumable "
                              "checkpoint?)", name, key, value);
    }
    if (!(found & 1))
        return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: not a resumable checkpoint (no "
                                                   "train.step); start from its weights instead",
                          name);
    if (found != 0x1f)
        return unet__fail(ctx, UNET_STATUS_FORMAT, "%s: resumable checkpoint without "
                                                   "train.sampler, train.seed, train.tile or "
                                                   "train.batch", name);
    return UNET_STATUS_OK;
}

unet_status unet_train_resume(unet_ctx *ctx, const unet_model *m, const char *name,
                              unet_train_opts *o) {
    if (!m || !o) return unet__fail(ctx, UNET_STATUS_ARG, "train_resume: NULL argument");
    struct unet__resume r;
    unet_status s = unet__resume_read(ctx, m, name, &r);
    if (s != UNET_STATUS_OK) return s;
    if (r.guard) {
        /* The statistics are read by a guard of the run's options. */
        unet_guard *g = NULL;
        s = unet_guard_create(ctx, &o->guard, &g);
        if (s == UNET_STATUS_OK && (s = unet_guard_set_state(ctx, g, r.guard)) != UNET_STATUS_OK)
            s = unet__fail(ctx, UNET_STATUS_FORMAT,
                           "%s: metadata train.guard is not valid (a damaged resumable "
                           "checkpoint?): %s", name ? name : "the model", unet_ctx_errmsg(ctx));
        unet_guard_free(g);
        if (s != UNET_STATUS_OK) return s;
    }
    o->seed = r.seed;
    o->batch = r.batch;
    o->tile = r.tile;
    o->resume = 1;
    return UNET_STATUS_OK;
}

/* ---- the log ---- */

const char *unet_train_log_header(void) {
    return "step,epoch,loss,lr,val_loss,val_dice,val_iou,val_pixel_error,val_rand_error,seconds,"
           "grad_norm,event\n";
}

int unet_train_log_row(const unet_train_event *e, char *buf, size_t size) {
    if (size) buf[0] = 0;
    if (!e) return 0;
    /* NaN as "nan", never "-nan" (the sign of a NaN is noise). */
    if (e->kind == UNET_TRAIN_STEP)
        return snprintf(buf, size, "%ld,%ld,%.6f,%g,,,,,,%.1f,%.6g,%s\n", e->step, e->epoch,
                        isnan(e->loss) ? NAN : e->loss, e->lr, e->elapsed,
                        isnan(e->grad_norm) ? NAN : e->grad_norm, e->event ? e->event : "");
    if (e->kind == UNET_TRAIN_EPOCH && e->validated)
        return snprintf(buf, size, "%ld,%ld,%.6f,%g,%.6f,%.6f,%.6f,%.6f,%.6f,%.1f,,%s\n", e->step,
                        e->epoch, e->loss, e->lr, e->val_loss, e->val_dice, e->val_iou,
                        e->val_pixel_error, e->val_rand_error, e->elapsed,
                        e->event ? e->event : "");
    return 0;
}
