/* cmd_train.c — unet train: a folder of images and masks to a trained model.
 *
 * Files written, all atomically (temporary file, fsync, rename), each model with its
 * `selected` metadata ("best val_dice=0.9310 step=1200", "last step=4000"):
 *   OUT                       the model with the best validation Dice (mean over the foreground
 *                             classes; the first of equals); without validation data the last
 *   STEM.last.safetensors     the model after the latest epoch where the divergence guard saw
 *                             nothing wrong
 *   STEM.resume.safetensors   model + optimizer state + moving average + data position + the
 *                             epoch's partial sums + the guard's statistics, for --resume
 *   STEM.log.csv              one row per step (lr, grad_norm, event), validation rows at epoch
 *                             ends
 * where STEM is OUT without ".safetensors".  An epoch is as many steps as it takes to draw about
 * as many output pixels as the training images hold.  The loop is the library's guarded
 * training (docs/training.md): learning rate = base * schedule * the guard's scale;
 * unet_train_step_ex (clipping, summed loss, moving average); unet_guard_observe on every
 * step and validation; on a NaN, a loss spike or blow-up or a collapse to one class, a rollback
 * to the last good state in memory with half the learning rate, up to --max-rollbacks, then
 * exit 3 with the last good state written as the last model.  --minutes ends the run cleanly.
 * SIGINT/SIGTERM/SIGHUP/SIGPIPE finish the current step, write the resumable checkpoint and
 * exit 128 + signal.  The same seed and thread count give the same losses, also across an
 * interruption and --resume.
 */
#include "cli/cli.h"

#include <errno.h>
#include <glob.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct sample {
    char    *name;
    float   *image;     /* (c, h, w) normalised */
    int32_t *target;    /* (h, w) class ids */
    float   *weight;    /* (h, w) or NULL */
    int      h, w;
    int      file;      /* index of the file it came from (pages of a stack share it) */
};

struct args {
    const char *images, *masks, *val_images, *val_masks, *out, *init, *resume, *log;
    const char *arch, *optimizer, *loss, *norm, *augment, *recipe, *max_pixels;
    const char *schedule, *milestones, *loss_reduction;
    int         base, depth, classes, epochs, steps, batch, tile, seed, threads, save_every;
    int         separate_gap, warmup, max_rollbacks, snapshot_every;
    double      lr, momentum, weight_decay;     /* NAN: the optimizer's default */
    double      clip, ema, rollback_lr, minutes;
    float       val_split, dropout, w0, sigma, save_minutes;
    bool        bilinear, no_augment, conv_bias, no_batchnorm, valid, nesterov, separate_cells,
                quiet, no_guard;
};

static volatile sig_atomic_t stop_signal = 0;

static void on_signal(int sig) {
    stop_signal = sig;
}

static void on_sigpipe(int sig) {
    if (!stop_signal) stop_signal = sig;
}

/* Exit status of a run that diverged beyond its rollbacks (docs/training.md). */
#define CLI_EXIT_DIVERGED 3

/* Rows a validation band and the training part it is cut from must each keep at least. */
#define MIN_BAND_ROWS 16

/* ---- masks ---- */

static void samples_free(struct sample *s, int n) {
    for (int i = 0; i < n; i++) {
        free(s[i].name);
        free(s[i].image);
        free(s[i].target);
        free(s[i].weight);
    }
    free(s);
}

/* Loads every image of dir (each page of a stack) with its mask from masks. */
static bool load_pairs(unet_ctx *ctx, const struct args *a, const char *dir, const char *masks,
                       unet_norm norm, bool want_weights, struct sample **out, int *n_out,
                       int *channels) {
    struct cli_files files;
    if (!cli_list_images(dir, &files)) return false;
    struct sample *s = NULL;
    int n = 0, cap = 0;
    bool ok = true;
    for (int f = 0; f < files.count && ok; f++) {
        const char *ip = files.paths[f];
        char *mp = cli_find_match(masks, ip);
        if (!mp) {
            cli_error("%s: no mask with the same name in %s", ip, masks);
            ok = false;
            break;
        }
        int pages = 0, mpages = 0;
        unet_status st = unet_image_pages(ctx, ip, &pages);
        if (st == UNET_STATUS_OK) st = unet_image_pages(ctx, mp, &mpages);
        if (st != UNET_STATUS_OK) {
            cli_lib_error(ctx, st);
            free(mp);
            ok = false;
            break;
        }
        if (pages != mpages) {
            cli_error("%s has %d pages but its mask %s has %d", ip, pages, mp, mpages);
            free(mp);
            ok = false;
            break;
        }
        for (int p = 0; p < pages && ok; p++) {
            struct sample x = {.file = f};
            int c;
            if (!cli_load_image(ctx, ip, p, norm, &x.image, &c, &x.h, &x.w)) {
                ok = false;
                break;
            }
            if (*channels == 0) *channels = c;
            if (c != *channels) {
                cli_error("%s has %d channels, the other images %d", ip, c, *channels);
                free(x.image);
                ok = false;
                break;
            }
            unet_image m = {0};
            st = unet_image_load(ctx, mp, p, &m);
            if (st != UNET_STATUS_OK) {
                cli_lib_error(ctx, st);
                free(x.image);
                ok = false;
                break;
            }
            size_t P = (size_t)x.h * x.w;
            /* --classes 3 --separate-cells: the mask says cell or not (an instance label image,
             * ids of any size); the separation makes the border class 2 below. */
            int mask_classes = a->separate_cells && a->classes == 3 ? 2 : a->classes;
            int32_t *labels = malloc(sizeof(int32_t) * P);
            x.target = malloc(sizeof(int32_t) * P);
            if (m.h != x.h || m.w != x.w || m.c != 1) {
                cli_error("%s is %dx%d but its mask %s is %dx%d%s", ip, x.w, x.h, mp, m.w, m.h,
                          m.c != 1 ? " with several channels" : "");
                ok = false;
            } else if (!labels || !x.target) {
                cli_error("out of memory loading %s", ip);
                ok = false;
            } else if ((st = unet_mask_to_classes(ctx, &m, mask_classes, mp, x.target)) !=
                       UNET_STATUS_OK) {
                cli_lib_error(ctx, st);
                ok = false;
            }
            int inst = 0;
            if (ok && (st = unet_mask_labels(ctx, &m, mp, labels, &inst)) != UNET_STATUS_OK) {
                cli_lib_error(ctx, st);
                ok = false;
            }
            if (ok && (a->separate_cells || want_weights)) {
                if (!inst) {
                    /* A binary mask: its connected components are the cells. */
                    int count;
                    for (size_t i = 0; i < P; i++) labels[i] = labels[i] != 0;
                    st = unet_connected_components(ctx, labels, x.h, x.w, 1, 4, labels, &count);
                    if (st != UNET_STATUS_OK) cli_lib_error(ctx, st), ok = false;
                }
                if (ok) {
                    /* Touching cells get a background strip between them (the paper's Fig. 3c):
                     * the training target when asked for, and always for the weight map, whose
                     * border term lives on background pixels between cells. */
                    int32_t *sep = malloc(sizeof(int32_t) * P);
                    int kc = a->classes >= 3 ? 3 : 2;
                    st = sep ? unet_separate_cells(ctx, labels, x.h, x.w, a->separate_gap, kc, sep)
                             : UNET_STATUS_NOMEM;
                    if (st != UNET_STATUS_OK) {
                        cli_lib_error(ctx, st);
                        ok = false;
                    } else {
                        if (a->separate_cells) memcpy(x.target, sep, sizeof(int32_t) * P);
                        for (size_t i = 0; i < P; i++)
                            if (sep[i] != 1) labels[i] = 0;
                    }
                    free(sep);
                }
                if (ok && want_weights) {
                    x.weight = malloc(sizeof(float) * P);
                    st = x.weight ? unet_weightmap(ctx, labels, x.h, x.w, 1, a->w0, a->sigma,
                                                   UNET_WC_BALANCE, x.weight)
                                  : UNET_STATUS_NOMEM;
                    if (st != UNET_STATUS_OK) cli_lib_error(ctx, st), ok = false;
                }
            }
            free(labels);
            unet_image_free(&m);
            char name[512];
            if (pages > 1) snprintf(name, sizeof name, "%s[%d]", cli_basename(ip), p);
            else snprintf(name, sizeof name, "%s", cli_basename(ip));
            x.name = strdup(name);
            if (ok && n == cap) {
                cap = cap ? 2 * cap : 32;
                struct sample *ns = realloc(s, sizeof *s * (size_t)cap);
                if (!ns) cli_error("out of memory"), ok = false;
                else s = ns;
            }
            if (!ok) {
                free(x.name), free(x.image), free(x.target), free(x.weight);
                break;
            }
            s[n++] = x;
        }
        free(mp);
    }
    cli_files_free(&files);
    if (!ok) {
        samples_free(s, n);
        return false;
    }
    *out = s;
    *n_out = n;
    return true;
}

/* ---- the held-back set ---- */

/* The bottom `rows` rows of s as a new sample (no weight map: validation does not use it), and
 * s cut to the rows above them. */
static bool split_band(struct sample *s, int channels, int rows, struct sample *band) {
    const int h = s->h - rows, w = s->w;
    const size_t keep = (size_t)h * w, cut = (size_t)rows * w;
    *band = (struct sample){.h = rows, .w = w, .file = s->file};
    band->image = malloc(sizeof(float) * cut * (size_t)channels);
    band->target = malloc(sizeof(int32_t) * cut);
    size_t n = strlen(s->name) + 48;
    band->name = malloc(n);
    if (!band->image || !band->target || !band->name) {
        free(band->image), free(band->target), free(band->name);
        return false;
    }
    snprintf(band->name, n, "%s[rows %d-%d]", s->name, h, s->h - 1);
    for (int c = 0; c < channels; c++) {
        const float *plane = s->image + (size_t)c * s->h * w;
        memcpy(band->image + (size_t)c * cut, plane + keep, sizeof(float) * cut);
        /* The kept planes close up: plane c moves to c * keep (memmove: they overlap). */
        memmove(s->image + (size_t)c * keep, plane, sizeof(float) * keep);
    }
    memcpy(band->target, s->target + keep, sizeof(int32_t) * cut);
    s->h = h;
    return true;
}

/* --val-split without --val-images: the library's plan (whole images, the last pages of a
 * stack, or a band of each of 1-3 images), applied to the loaded samples.  The held-back
 * samples end up at the end of *all (in their order), *n_val of them; a warning says when
 * nothing could be held back. */
static bool hold_back(unet_ctx *ctx, const struct args *a, int channels, struct sample **all,
                      int *n_all, int *n_val) {
    const int n = *n_all;
    *n_val = 0;
    int *file = malloc(sizeof(int) * (size_t)n * 4 + 1);
    if (!file) {
        cli_error("out of memory");
        return false;
    }
    int *rows = file + n, *held = file + 2 * n, *band = file + 3 * n, kind = 0;
    for (int i = 0; i < n; i++) file[i] = (*all)[i].file, rows[i] = (*all)[i].h;
    unet_status s = unet_holdout_plan(ctx, n, file, rows, a->val_split, MIN_BAND_ROWS,
                                      (uint64_t)a->seed, &kind, held, band);
    bool ok = s == UNET_STATUS_OK;
    if (!ok) cli_lib_error(ctx, s);
    if (ok && kind == 1) {
        /* Stable partition: training images first, held-back ones last. */
        struct sample *t = malloc(sizeof *t * (size_t)n);
        ok = t != NULL;
        int k = 0;
        for (int pass = 0; ok && pass < 2; pass++)
            for (int i = 0; i < n; i++)
                if (held[i] == pass) t[k++] = (*all)[i];
        if (ok) memcpy(*all, t, sizeof *t * (size_t)n);
        free(t);
        bool one_stack = true;
        for (int i = 0; i < n; i++) *n_val += held[i], one_stack &= file[i] == file[0];
        if (!ok) cli_error("out of memory");
        else
            cli_note("holding back %d of %d images for validation (--val-split %g)%s", *n_val, n,
                     (double)a->val_split, one_stack ? ": the last pages of the stack" : "");
    } else if (ok && kind == 2) {
        int bands = 0;
        for (int i = 0; i < n; i++) bands += band[i] > 0;
        struct sample *grown = realloc(*all, sizeof **all * (size_t)(n + bands));
        ok = grown != NULL;
        if (ok) *all = grown;
        for (int i = 0; ok && i < n; i++) {
            if (!band[i]) continue;
            ok = split_band(&(*all)[i], channels, band[i], &(*all)[*n_all]);
            if (ok) (*n_all)++, (*n_val)++;
        }
        if (!ok) cli_error("out of memory");
        else
            cli_note("holding back the bottom %.0f%% of the rows of %s for validation (too few "
                     "images to hold back whole ones)",
                     100.0 * a->val_split,
                     n == 1 ? "the image" : bands == n ? "every image" : "some images");
    } else if (ok) {
        cli_note("warning: no validation data: %s too small to hold back %.0f%% of %s rows "
                 "(at least %d rows each side); %s will be the last model, not the best.  Give "
                 "--val-images and --val-masks for a validation set",
                 n == 1 ? "the image is" : "the images are", 100.0 * a->val_split,
                 n == 1 ? "its" : "their", MIN_BAND_ROWS, a->out);
    }
    free(file);
    return ok;
}

/* ---- validation ---- */

/* Means over the validation images; dice and iou are the foreground's (the mean over classes
 * 1..K-1 when K > 2; an image where a class is absent from truth and prediction counts 1 for
 * it).  The counts, over the labeled pixels, are for the divergence guard's collapse test. */
struct val_result {
    double  loss, dice, iou, pixel_error, rand_error;
    int64_t pred[UNET_MAX_CLASSES], truth[UNET_MAX_CLASSES], correct;
};

/* The foreground mean of per-class scores (NaN: class absent from both, counts 1). */
static double foreground_mean(const double *score, int K) {
    if (K <= 2) return isnan(score[1]) ? 1.0 : score[1];
    double sum = 0;
    for (int c = 1; c < K; c++) sum += isnan(score[c]) ? 1.0 : score[c];
    return sum / (K - 1);
}

static bool validate(unet_ctx *ctx, unet_model *m, const struct sample *val, int n, int classes,
                     struct val_result *r) {
    memset(r, 0, sizeof *r);
    int K = classes;
    unet_predict_opts po = unet_predict_defaults();
    int rand_n = 0;
    for (int i = 0; i < n; i++) {
        const struct sample *v = &val[i];
        size_t P = (size_t)v->h * v->w;
        float *prob = malloc(sizeof(float) * P * (size_t)K);
        int32_t *pred = malloc(sizeof(int32_t) * P);
        int32_t *truth = malloc(sizeof(int32_t) * P);
        if (!prob || !pred || !truth) {
            free(prob), free(pred), free(truth);
            cli_error("out of memory validating %s", v->name);
            return false;
        }
        unet_status s = unet_predict(ctx, m, v->image, v->h, v->w, &po, prob, NULL, NULL);
        if (s != UNET_STATUS_OK) {
            cli_lib_error(ctx, s);
            free(prob), free(pred), free(truth);
            return false;
        }
        /* Cross entropy of the predicted probabilities on the labeled pixels. */
        double L = 0;
        size_t counted = 0;
        for (size_t p = 0; p < P; p++) {
            int t = v->target[p];
            if (t < 0) continue;
            double q = K == 1 ? (t ? prob[p] : 1.0 - prob[p]) : prob[(size_t)t * P + p];
            L -= log(q > 1e-12 ? q : 1e-12);
            counted++;
        }
        r->loss += counted ? L / counted : 0;
        unet_argmax(prob, K, v->h, v->w, UNET_OUTPUT_PROBABILITIES, pred);
        for (size_t p = 0; p < P; p++) {
            truth[p] = v->target[p] < 0 ? 0 : v->target[p];
            if (v->target[p] < 0) continue;
            r->pred[pred[p]]++;
            r->truth[truth[p]]++;
            r->correct += pred[p] == truth[p];
        }
        unet_metrics mt;
        s = unet_evaluate(ctx, pred, truth, NULL, NULL, v->h, v->w, K < 2 ? 2 : K, &mt);
        free(prob), free(pred), free(truth);
        if (s != UNET_STATUS_OK) {
            cli_lib_error(ctx, s);
            return false;
        }
        r->dice += foreground_mean(mt.dice, K < 2 ? 2 : K);
        r->iou += foreground_mean(mt.iou, K < 2 ? 2 : K);
        r->pixel_error += mt.pixel_error;
        if (!isnan(mt.rand_error)) r->rand_error += mt.rand_error, rand_n++;
    }
    r->loss /= n, r->dice /= n, r->iou /= n, r->pixel_error /= n;
    r->rand_error = rand_n ? r->rand_error / rand_n : NAN;
    return true;
}

/* ---- resume metadata ---- */

struct resume_state {
    long        step, sampler;
    double      best;
    int         seed, tile, batch;
    bool        have;
    int         found;          /* bit per key below */
    char        bad_key[32];    /* the first key whose value is malformed, and its value */
    char        bad_value[64];
    /* Optional (older checkpoints lack them): the epoch's partial loss sum and step count, and
     * the divergence guard's statistics (malloc'd). */
    double      epoch_loss;
    long        epoch_steps;
    char       *guard;
};

/* A whole-string integer in [lo, hi]. */
static bool meta_long(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno || v < lo || v > hi) return false;
    *out = v;
    return true;
}

/* The train.* metadata of a resumable checkpoint, each value checked: a corrupt or edited file
 * must not size the batch buffers or seek the sampler with garbage. */
static void on_meta(const char *key, const char *value, void *user) {
    static const struct {
        const char *key;
        long        lo, hi;
    } keys[] = {{"train.step", 0, LONG_MAX / 2}, {"train.sampler", 0, LONG_MAX / 2},
                {"train.seed", INT_MIN, INT_MAX}, {"train.tile", 1, 65536},
                {"train.batch", 1, 65536}};
    struct resume_state *r = user;
    if (strcmp(key, "train.best") == 0 || strcmp(key, "train.epoch_loss") == 0) {
        char *end;
        double v = strtod(value, &end);
        if (end == value || *end || !isfinite(v)) goto bad;
        if (strcmp(key, "train.best") == 0) r->best = v;
        else r->epoch_loss = v;
        return;
    }
    if (strcmp(key, "train.epoch_steps") == 0) {
        if (!meta_long(value, 0, LONG_MAX / 2, &r->epoch_steps)) goto bad;
        return;
    }
    if (strcmp(key, "train.guard") == 0) {
        free(r->guard);
        r->guard = strdup(value);
        return;
    }
    for (int i = 0; i < (int)(sizeof keys / sizeof keys[0]); i++) {
        if (strcmp(key, keys[i].key) != 0) continue;
        long v;
        if (!meta_long(value, keys[i].lo, keys[i].hi, &v)) goto bad;
        r->found |= 1 << i;
        switch (i) {
        case 0: r->step = v, r->have = true; break;
        case 1: r->sampler = v; break;
        case 2: r->seed = (int)v; break;
        case 3: r->tile = (int)v; break;
        case 4: r->batch = (int)v; break;
        }
        return;
    }
    return;
bad:
    if (!r->bad_key[0]) {
        snprintf(r->bad_key, sizeof r->bad_key, "%s", key);
        snprintf(r->bad_value, sizeof r->bad_value, "%s", value);
    }
}

/* The loop's state that a resumed run needs besides the model: the epoch's partial sums and
 * the divergence guard's statistics. */
struct loop_state {
    double            epoch_loss;
    long              epoch_steps;
    const unet_guard *guard;
};

static bool save_resume(unet_ctx *ctx, unet_model *m, const char *path, long step, long sampler,
                        double best, const struct args *a, int tile, const struct loop_state *ls) {
    char v[8][32];
    snprintf(v[0], sizeof v[0], "%ld", step);
    snprintf(v[1], sizeof v[1], "%ld", sampler);
    snprintf(v[2], sizeof v[2], "%.17g", best);
    snprintf(v[3], sizeof v[3], "%d", a->seed);
    snprintf(v[4], sizeof v[4], "%d", tile);
    snprintf(v[5], sizeof v[5], "%d", a->batch);
    snprintf(v[6], sizeof v[6], "%.17g", ls->epoch_loss);
    snprintf(v[7], sizeof v[7], "%ld", ls->epoch_steps);
    char *guard = unet_guard_state(ls->guard);
    if (!guard) {
        cli_error("out of memory writing %s", path);
        return false;
    }
    const char *meta[] = {"train.step", v[0], "train.sampler", v[1], "train.best", v[2],
                          "train.seed", v[3], "train.tile", v[4], "train.batch", v[5],
                          "train.epoch_loss", v[6], "train.epoch_steps", v[7],
                          "train.guard", guard};
    unet_status s = unet_model_save_training(ctx, m, path, meta, 9);
    free(guard);
    if (s != UNET_STATUS_OK) {
        cli_lib_error(ctx, s);
        return false;
    }
    return true;
}

/* ---- the CSV log ---- */

static const char *LOG_HEADER = "step,epoch,loss,lr,val_loss,val_dice,val_iou,val_pixel_error,"
                                "val_rand_error,seconds,grad_norm,event\n";

/* Opens the log for a run: a new file with the header, or, when resuming from `step`, the
 * existing file cut back to the rows of steps <= step.  Rows after the checkpoint were written
 * by the interrupted run (kill -9 between two checkpoints) and are written again by the resumed
 * one; a torn last line is dropped too.  The cut goes through a temporary file and rename, so
 * a crash here leaves the old log or the new one.  Line-buffered: each row reaches the file
 * when it is printed.  NULL with a message on failure. */
static FILE *open_log(const char *path, bool resume, long step) {
    FILE *f = NULL;
    if (resume) f = fopen(path, "r");
    if (!f) {
        if (resume && errno != ENOENT) {
            cli_error("%s: cannot read the log: %s", path, strerror(errno));
            return NULL;
        }
        f = fopen(path, "w");
        if (!f || fputs(LOG_HEADER, f) == EOF || fflush(f) != 0) {
            cli_error("%s: cannot write the log: %s", path, strerror(errno));
            if (f) fclose(f);
            return NULL;
        }
        setvbuf(f, NULL, _IOLBF, 0);
        return f;
    }
    size_t n = strlen(path) + 8;
    char *tmp = malloc(n);
    FILE *out = NULL;
    char *line = NULL;
    size_t cap = 0;
    bool ok = tmp != NULL;
    if (ok) {
        snprintf(tmp, n, "%s.tmp", path);
        out = fopen(tmp, "w");
        ok = out != NULL;
    }
    ssize_t len;
    bool first = true;
    while (ok && (len = getline(&line, &cap, f)) > 0) {
        if (line[len - 1] != '\n') break; /* torn by a crash */
        char *end;
        long k = strtol(line, &end, 10);
        bool keep = first ? strncmp(line, "step,", 5) == 0 : end != line && *end == ',' && k <= step;
        /* The header is always today's (an older one may lack columns); a log without one gets
         * it too. */
        bool header = first && keep;
        if (first) ok = fputs(LOG_HEADER, out) != EOF;
        first = false;
        if (keep && !header && fputs(line, out) == EOF) ok = false;
    }
    if (ok && first) ok = fputs(LOG_HEADER, out) != EOF; /* an empty log */
    free(line);
    fclose(f);
    if (out && fclose(out) != 0) ok = false;
    if (ok && rename(tmp, path) != 0) ok = false;
    if (!ok) {
        cli_error("%s: cannot rewrite the log for resuming: %s", path, strerror(errno));
        if (tmp) remove(tmp);
        free(tmp);
        return NULL;
    }
    free(tmp);
    f = fopen(path, "a");
    if (!f) {
        cli_error("%s: cannot write the log: %s", path, strerror(errno));
        return NULL;
    }
    setvbuf(f, NULL, _IOLBF, 0);
    return f;
}

/* Removes the temporaries "PATH.tmp.XXXXXX" that an earlier run killed in the middle of an
 * atomic write of PATH left behind (they are never read; the file PATH itself is whole). */
static void remove_stale_temps(const char *path) {
    size_t n = strlen(path);
    char *pattern = malloc(2 * n + 16);
    if (!pattern) return;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (strchr("*?[\\", path[i])) pattern[k++] = '\\';
        pattern[k++] = path[i];
    }
    memcpy(pattern + k, ".tmp.??????", 12);
    glob_t g;
    if (glob(pattern, GLOB_NOSORT, NULL, &g) == 0) {
        for (size_t i = 0; i < g.gl_pathc; i++) remove(g.gl_pathv[i]);
        globfree(&g);
    }
    free(pattern);
}

/* a * b into *acc (element counts of the batch buffers); false on overflow. */
static bool count_mul(size_t *acc, size_t b) {
    if (b != 0 && *acc > SIZE_MAX / b) return false;
    *acc *= b;
    return true;
}

/* ---- options ---- */

static const char *SYNOPSIS = "--images DIR --masks DIR --out MODEL.safetensors [options]";

/* --recipe paper-sgd's learning rate for the loss summed over the output tile
 * (docs/training.md, "The paper's SGD", has the measurements). */
#define PAPER_SGD_LR_TEXT "1e-7"

static bool apply_recipe(struct args *a) {
    if (!a->recipe) return true;
    if (strcmp(a->recipe, "seed") == 0) return true;
    bool sgd = strcmp(a->recipe, "paper-sgd") == 0;
    if (strcmp(a->recipe, "paper") != 0 && !sgd) {
        cli_error("--recipe: '%s' (expected seed, paper or paper-sgd)", a->recipe);
        return false;
    }
    /* Ronneberger et al. 2015: valid convolutions without BatchNorm, elastic deformation,
     * the border-weighted loss with separated cells, batch 1.  The paper's optimizer, SGD with
     * momentum 0.99, was tuned for Caffe's summed loss; with unet's mean loss it oscillated on
     * ISBI 2012 (lr 0.005: validation Dice 0.86, 0.88, 0.79, 0.08 over 400 steps), while Adam
     * 5e-4 trained steadily (docs/results.md).  paper-sgd is the paper's optimizer as the paper
     * ran it: SGD, momentum 0.99, the loss summed over the output tile, and a learning rate for
     * that sum (docs/training.md, "The paper's SGD"). */
    if (!a->arch) a->arch = "unet-paper";
    if (!a->augment) a->augment = "paper";
    if (!a->loss) a->loss = "wce";
    if (!a->optimizer) a->optimizer = sgd ? "sgd" : "adam";
    if (isnan(a->lr) && strcmp(a->optimizer, "adam") == 0) a->lr = 5e-4;
    if (isnan(a->momentum) && strcmp(a->optimizer, "sgd") == 0) a->momentum = 0.99;
    if (sgd && !a->loss_reduction) a->loss_reduction = "sum";
    if (sgd && isnan(a->lr)) a->lr = strtod(PAPER_SGD_LR_TEXT, NULL);
    if (a->batch < 1) a->batch = 1;
    a->separate_cells = true;
    return true;
}

/* ---- guarded training ---- */

/* The cross entropy of a uniform prediction over K classes. */
static double uniform_ce(int K) {
    return log((double)K);
}

/* " ema=0.999" when the saved and validated weights are the moving average, else "". */
static const char *ema_note(const unet_model *m) {
    static char buf[40];
    double d = unet_model_ema_decay(m);
    if (d > 0) snprintf(buf, sizeof buf, " ema=%g", d);
    else buf[0] = 0;
    return buf;
}

/* Writes the model that validation sees (the moving average when kept) with its `selected`
 * metadata, which predict and info print. */
static unet_status save_selected(unet_ctx *ctx, unet_model *m, const char *path,
                                 const char *selected) {
    const char *meta[] = {"selected", selected};
    bool ema = unet_model_ema_decay(m) > 0;
    unet_status s = ema ? unet_model_ema_swap(ctx, m) : UNET_STATUS_OK;
    if (s != UNET_STATUS_OK) return s;
    s = unet_model_save_meta(ctx, m, path, meta, 1);
    if (ema) unet_model_ema_swap(ctx, m);
    return s;
}

/* Validation of the model that would be saved (the moving average when kept). */
static bool validate_model(unet_ctx *ctx, unet_model *m, const struct sample *val, int n,
                           int classes, struct val_result *r) {
    bool ema = unet_model_ema_decay(m) > 0;
    if (ema && unet_model_ema_swap(ctx, m) != UNET_STATUS_OK) return false;
    bool ok = validate(ctx, m, val, n, classes, r);
    if (ema) unet_model_ema_swap(ctx, m);
    return ok;
}

/* A detected divergence at `step`: back to the last good state with a lower learning rate,
 * said on stderr and in the log's event column.  False when the rollbacks are used up (the
 * model is back at the last good state all the same; the caller stops). */
static bool recover(unet_ctx *ctx, unet_guard *g, unet_model *m, long step, double lr_sched,
                    const char *what, char *event, size_t size) {
    char detail[400];
    snprintf(detail, sizeof detail, "%s", unet_guard_detail(g));
    unet_status s = unet_guard_rollback(ctx, g, m);
    double lr = lr_sched * unet_guard_lr_scale(g);
    if (s != UNET_STATUS_OK) {
        snprintf(event, size, "diverged:%s;to=%ld", what, unet_guard_snapshot_step(g));
        return false;
    }
    snprintf(event, size, "rollback:%s;to=%ld;lr=%.3g", what, unet_guard_snapshot_step(g), lr);
    cli_note("warning: step %ld: %s; rolled back to step %ld with the learning rate x%g (now "
             "%.3g), rollback %d",
             step, detail, unet_guard_snapshot_step(g), unet_guard_lr_scale(g), lr,
             unet_guard_rollbacks(g));
    return true;
}

/* "0.5,0.75" -> fractions; false with a message when malformed. */
static bool parse_milestones(const char *text, unet_schedule *s) {
    s->n_milestones = 0;
    const char *p = text;
    for (;;) {
        char *end;
        double v = strtod(p, &end);
        if (end == p || s->n_milestones == UNET_MAX_MILESTONES) break;
        s->milestones[s->n_milestones++] = v;
        if (*end == 0) return true;
        if (*end != ',') break;
        p = end + 1;
    }
    cli_error("--milestones: '%s' (expected up to %d fractions of the run, e.g. 0.5,0.75)", text,
              UNET_MAX_MILESTONES);
    return false;
}

int cmd_train(int argc, char **argv) {
    struct args a = {.base = 64, .depth = 4, .classes = 2, .epochs = 10, .steps = 0, .batch = 0,
                     .tile = 0, .seed = 1, .threads = 0, .lr = NAN, .momentum = NAN,
                     .weight_decay = NAN, .val_split = 0.1f, .dropout = NAN, .w0 = 10, .sigma = 5,
                     .save_every = 0, .save_minutes = 10, .separate_gap = 1, .clip = 0,
                     .ema = 0, .rollback_lr = 0.5, .minutes = 0, .max_rollbacks = 3,
                     .snapshot_every = 100};
    const struct cli_opt opts[] = {
        {"--images", CLI_STR, &a.images, "DIR", "training images (.png .tif .npy; stacks: each page)"},
        {"--masks", CLI_STR, &a.masks, "DIR", "masks with the same file names"},
        {"--out", CLI_STR, &a.out, "FILE", "the model to write (.safetensors): the best by "
                                          "validation Dice (without validation the last); "
                                          "STEM.last.safetensors beside it"},
        {"--val-images", CLI_STR, &a.val_images, "DIR", "validation images (else --val-split)"},
        {"--val-masks", CLI_STR, &a.val_masks, "DIR", "validation masks"},
        {"--val-split", CLI_FLOAT, &a.val_split, "F", "fraction held out for validation (0.1; "
                                                      "1-3 images: a band of each; 0: none)"},
        {"--recipe", CLI_STR, &a.recipe, "NAME", "seed, paper = --arch unet-paper --augment paper "
                                               "--loss wce --separate-cells --batch 1 --optimizer "
                                               "adam --lr 5e-4; paper-sgd = the same with "
                                               "--optimizer sgd --momentum 0.99 --loss-reduction "
                                               "sum --lr " PAPER_SGD_LR_TEXT},
        {"--arch", CLI_STR, &a.arch, "NAME", "unet (default), unet-paper, fcn32s, fcn16s, fcn8s"},
        {"--base", CLI_INT, &a.base, "N", "channels of the first level (64)"},
        {"--depth", CLI_INT, &a.depth, "N", "pooling steps (4)"},
        {"--classes", CLI_INT, &a.classes, "K", "classes (2; 1 = sigmoid; >2: mask values are ids)"},
        {"--bilinear", CLI_FLAG, &a.bilinear, NULL, "bilinear upsampling instead of up-convolution"},
        {"--conv-bias", CLI_FLAG, &a.conv_bias, NULL, "biases in the 3x3 convolutions"},
        {"--no-batchnorm", CLI_FLAG, &a.no_batchnorm, NULL, "conv -> ReLU without BatchNorm"},
        {"--valid", CLI_FLAG, &a.valid, NULL, "unpadded (valid) 3x3 convolutions"},
        {"--dropout", CLI_FLOAT, &a.dropout, "P", "dropout at the end of the contracting path"},
        {"--init", CLI_STR, &a.init, "MODEL", "start from this model's weights"},
        {"--resume", CLI_STR, &a.resume, "FILE", "continue an interrupted run (STEM.resume.safetensors)"},
        {"--epochs", CLI_INT, &a.epochs, "N", "epochs (10)"},
        {"--steps", CLI_INT, &a.steps, "N", "optimizer steps (instead of --epochs)"},
        {"--batch", CLI_INT, &a.batch, "B", "tiles per step (4; paper recipe 1)"},
        {"--tile", CLI_INT, &a.tile, "T", "input tile side (256; rounded up to a valid size)"},
        {"--lr", CLI_DOUBLE, &a.lr, "LR", "learning rate (adam 1e-3, sgd 1e-2)"},
        {"--optimizer", CLI_STR, &a.optimizer, "NAME", "adam (default), adamw or sgd"},
        {"--momentum", CLI_DOUBLE, &a.momentum, "M", "SGD momentum (0.9)"},
        {"--nesterov", CLI_FLAG, &a.nesterov, NULL, "Nesterov momentum"},
        {"--weight-decay", CLI_DOUBLE, &a.weight_decay, "W", "weight decay (0; adamw 0.01)"},
        {"--schedule", CLI_STR, &a.schedule, "NAME", "learning rate over the run: constant "
                                                     "(default), cosine, poly ((1-t/T)^0.9), step "
                                                     "(x0.1 at --milestones)"},
        {"--warmup", CLI_INT, &a.warmup, "N", "linear learning-rate warm-up over N steps (0)"},
        {"--milestones", CLI_STR, &a.milestones, "F,F", "--schedule step: fractions of the run "
                                                        "(0.5,0.75)"},
        {"--clip", CLI_DOUBLE, &a.clip, "N", "clip the gradients' global L2 norm to N (0: off)"},
        {"--ema", CLI_DOUBLE, &a.ema, "DECAY", "validate and save a moving average of the weights "
                                               "(e.g. 0.999; 0: off)"},
        {"--loss", CLI_STR, &a.loss, "NAME", "ce, ce+dice (default), dice, wce (weight map)"},
        {"--loss-reduction", CLI_STR, &a.loss_reduction, "NAME", "mean (default) or sum over each "
                                                                 "output tile (ce, wce)"},
        {"--w0", CLI_FLOAT, &a.w0, "W", "weight map border weight w0 (10)"},
        {"--sigma", CLI_FLOAT, &a.sigma, "S", "weight map border width sigma in pixels (5)"},
        {"--separate-cells", CLI_FLAG, &a.separate_cells, NULL,
         "background between touching cells (border class with --classes 3)"},
        {"--augment", CLI_STR, &a.augment, "NAME", "flips (default: flips and 90-degree turns), "
                                                   "paper (+ elastic, rotation, shift, gray), none"},
        {"--no-augment", CLI_FLAG, &a.no_augment, NULL, "same as --augment none"},
        {"--norm", CLI_STR, &a.norm, "NAME", "auto (default), percentile, max, none"},
        {"--seed", CLI_INT, &a.seed, "S", "random seed (1)"},
        {"--threads", CLI_INT, &a.threads, "T", "threads (all cores)"},
        {"--max-pixels", CLI_STR, &a.max_pixels, "N", CLI_MAX_PIXELS_HELP},
        {"--minutes", CLI_DOUBLE, &a.minutes, "M", "time budget: stop after M minutes with the "
                                                   "best and last models (exit 0)"},
        {"--max-rollbacks", CLI_INT, &a.max_rollbacks, "N", "divergence: roll back to the last "
                                                            "good state up to N times, then stop "
                                                            "with exit 3 (3)"},
        {"--rollback-lr", CLI_DOUBLE, &a.rollback_lr, "F", "learning-rate factor per rollback (0.5)"},
        {"--snapshot-every", CLI_INT, &a.snapshot_every, "N", "keep the last good state every N "
                                                             "steps and at validation (100)"},
        {"--no-guard", CLI_FLAG, &a.no_guard, NULL, "no spike, blow-up or collapse detection (NaN "
                                                    "and Inf still roll back)"},
        {"--save-every", CLI_INT, &a.save_every, "N", "write the resumable checkpoint every N steps"},
        {"--save-minutes", CLI_FLOAT, &a.save_minutes, "M", "... and at least every M minutes (10)"},
        {"--log", CLI_STR, &a.log, "FILE", "CSV log (STEM.log.csv)"},
        {"--quiet", CLI_FLAG, &a.quiet, NULL, "no progress lines"},
    };
    const int n_opts = (int)(sizeof opts / sizeof opts[0]);
    if (!cli_parse("train", SYNOPSIS, argc, argv, 2, opts, n_opts, NULL, 0, NULL))
        return CLI_EXIT_USAGE;
    if (!apply_recipe(&a)) return CLI_EXIT_USAGE;
    if (!a.images || !a.masks || !a.out) {
        cli_error("train: --images, --masks and --out are required (see unet train --help)");
        return CLI_EXIT_USAGE;
    }
    if (!!a.val_images != !!a.val_masks) {
        cli_error("train: --val-images and --val-masks go together");
        return CLI_EXIT_USAGE;
    }
    if (a.no_augment) a.augment = "none";
    if (!a.augment) a.augment = "flips";
    if (!a.loss) a.loss = "ce+dice";
    if (!a.optimizer) a.optimizer = "adam";
    if (a.batch < 0 || a.tile < 0 || (!isnan(a.dropout) && a.dropout < 0)) {
        cli_error("train: --batch, --tile and --dropout cannot be negative");
        return CLI_EXIT_USAGE;
    }
    if (a.batch == 0) a.batch = 4;
    unet_loss_kind loss;
    if (strcmp(a.loss, "ce") == 0) loss = UNET_LOSS_CE;
    else if (strcmp(a.loss, "ce+dice") == 0) loss = UNET_LOSS_CE_DICE;
    else if (strcmp(a.loss, "dice") == 0) loss = UNET_LOSS_DICE;
    else if (strcmp(a.loss, "wce") == 0) loss = UNET_LOSS_WCE;
    else {
        cli_error("--loss: '%s' (expected ce, ce+dice, dice or wce)", a.loss);
        return CLI_EXIT_USAGE;
    }
    unet_optim opt;
    if (strcmp(a.optimizer, "adam") == 0) opt = unet_optim_default(UNET_OPTIM_ADAM);
    else if (strcmp(a.optimizer, "adamw") == 0) opt = unet_optim_default(UNET_OPTIM_ADAMW);
    else if (strcmp(a.optimizer, "sgd") == 0) opt = unet_optim_default(UNET_OPTIM_SGD), opt.momentum = 0.9;
    else {
        cli_error("--optimizer: '%s' (expected adam, adamw or sgd)", a.optimizer);
        return CLI_EXIT_USAGE;
    }
    /* Given values go to the library, which rejects what is out of range. */
    if (!isnan(a.lr)) opt.lr = a.lr;
    if (!isnan(a.momentum)) opt.momentum = a.momentum;
    if (!isnan(a.weight_decay)) opt.weight_decay = a.weight_decay;
    opt.nesterov = a.nesterov;
    unet_augment aug;
    if (strcmp(a.augment, "flips") == 0) aug = unet_augment_default();
    else if (strcmp(a.augment, "paper") == 0) aug = unet_augment_paper();
    else if (strcmp(a.augment, "none") == 0) aug = unet_augment_none();
    else {
        cli_error("--augment: '%s' (expected flips, paper or none)", a.augment);
        return CLI_EXIT_USAGE;
    }
    unet_norm norm = UNET_NORM_AUTO;
    if (a.norm && !cli_parse_norm(a.norm, &norm)) return CLI_EXIT_USAGE;
    uint64_t max_pixels = 0;
    if (a.max_pixels && !cli_parse_max_pixels(a.max_pixels, &max_pixels)) return CLI_EXIT_USAGE;
    if (a.epochs < 1 || a.steps < 0 || a.classes < 1 || a.val_split < 0 || a.val_split >= 1 ||
        a.save_every < 0 || a.separate_gap < 1) {
        cli_error("train: --epochs >= 1, --steps >= 0, --classes >= 1, 0 <= --val-split < 1");
        return CLI_EXIT_USAGE;
    }
    if (a.init && a.resume) {
        cli_error("train: --init and --resume exclude each other (a resumed run continues its "
                  "own weights)");
        return CLI_EXIT_USAGE;
    }
    /* The guarded-training options, checked by the library's own rules. */
    unet_step_opts step_opts = unet_step_defaults(loss);
    if (a.loss_reduction && strcmp(a.loss_reduction, "sum") == 0) {
        step_opts.reduction = UNET_REDUCTION_SUM;
    } else if (a.loss_reduction && strcmp(a.loss_reduction, "mean") != 0) {
        cli_error("--loss-reduction: '%s' (expected mean or sum)", a.loss_reduction);
        return CLI_EXIT_USAGE;
    }
    unet_schedule sched = unet_schedule_default(UNET_SCHEDULE_CONSTANT, 1);
    unet_guard_opts guard_opts = unet_guard_defaults();
    {
        unet_ctx *pc = unet_ctx_create();
        unet_status ps = UNET_STATUS_OK;
        if (a.schedule) ps = unet_schedule_parse(pc, a.schedule, &sched.kind);
        step_opts.clip_norm = a.clip;
        sched.warmup = a.warmup;
        guard_opts.max_rollbacks = a.max_rollbacks;
        guard_opts.lr_factor = a.rollback_lr;
        guard_opts.detect = !a.no_guard;
        unet_guard *probe = NULL;
        if (ps == UNET_STATUS_OK) ps = unet_guard_create(pc, &guard_opts, &probe);
        unet_guard_free(probe);
        bool ok = ps == UNET_STATUS_OK;
        if (!ok) cli_error("train: %s", pc ? unet_ctx_errmsg(pc) : "out of memory");
        unet_ctx_free(pc);
        if (!ok || (a.milestones && !parse_milestones(a.milestones, &sched))) return CLI_EXIT_USAGE;
        if (!(a.clip >= 0) || !(a.ema == 0 || (a.ema > 0 && a.ema < 1)) || !(a.minutes >= 0) ||
            a.warmup < 0 || a.snapshot_every < 1) {
            cli_error("train: --clip >= 0, 0 <= --ema < 1, --minutes >= 0, --warmup >= 0, "
                      "--snapshot-every >= 1");
            return CLI_EXIT_USAGE;
        }
        if (step_opts.reduction == UNET_REDUCTION_SUM && loss != UNET_LOSS_CE &&
            loss != UNET_LOSS_WCE) {
            cli_error("train: --loss-reduction sum is for --loss ce or wce (Dice is a ratio over "
                      "the batch)");
            return CLI_EXIT_USAGE;
        }
    }

    /* SIGINT/SIGTERM/SIGHUP from here on: finish the current step, write the resumable
     * checkpoint, exit 128 + signal.  SA_RESETHAND: a second signal ends the process at once
     * (the files on disk are whole either way: every write is atomic).  SIGPIPE (stderr into a
     * pipe whose reader left, `unet train ... 2>&1 | head`) does the same, but stays caught:
     * every later message raises it again, and those must not kill the run before the
     * checkpoint is written (the writes fail with EPIPE instead). */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_handler = on_sigpipe;
    sa.sa_flags = 0;
    sigaction(SIGPIPE, &sa, NULL);

    int rc = CLI_EXIT_FAIL;
    unet_ctx *ctx = unet_ctx_create();
    unet_model *m = NULL;
    unet_dataset *ds = NULL;
    unet_sampler *sampler = NULL;
    struct sample *all = NULL, *val = NULL;
    int n_all = 0, n_val = 0, channels = 0;
    float *x = NULL, *wt = NULL;
    int32_t *tg = NULL;
    FILE *log = NULL;
    char *stem = NULL, *last_path = NULL, *resume_path = NULL, *log_path = NULL;
    struct resume_state rs = {.best = -1};
    unet_guard *guard = NULL;
    if (!ctx) {
        cli_error("out of memory");
        return CLI_EXIT_FAIL;
    }
    if (max_pixels) unet_ctx_set_max_pixels(ctx, max_pixels);
    if (a.threads) {
        unet_status s = unet_ctx_set_threads(ctx, a.threads);
        if (s != UNET_STATUS_OK) {
            cli_lib_error(ctx, s);
            rc = CLI_EXIT_USAGE;
            goto done;
        }
    }

    /* Output names. */
    {
        size_t n = strlen(a.out);
        const char *suf = ".safetensors";
        size_t k = strlen(suf);
        stem = strndup(a.out, n > k && strcmp(a.out + n - k, suf) == 0 ? n - k : n);
        last_path = malloc(strlen(stem) + 32);
        resume_path = malloc(strlen(stem) + 32);
        log_path = malloc(strlen(stem) + 32);
        if (!stem || !last_path || !resume_path || !log_path) {
            cli_error("out of memory");
            goto done;
        }
        sprintf(last_path, "%s.last.safetensors", stem);
        sprintf(resume_path, "%s.resume.safetensors", stem);
        sprintf(log_path, "%s.log.csv", stem);
        remove_stale_temps(a.out);
        remove_stale_temps(last_path);
        remove_stale_temps(resume_path);
    }

    /* The model: resumed, initialised from a checkpoint, or new. */
    unet_status s;
    if (a.resume) {
        s = unet_model_load_training(ctx, a.resume, &m, on_meta, &rs);
        if (s == UNET_STATUS_OK && rs.bad_key[0]) {
            cli_error("%s: metadata %s='%s' is not valid (a damaged resumable checkpoint?)",
                      a.resume, rs.bad_key, rs.bad_value);
            goto done;
        }
        if (s == UNET_STATUS_OK && !rs.have) {
            cli_error("%s: not a resumable checkpoint (no train.step); use --init for weights",
                      a.resume);
            goto done;
        }
        if (s == UNET_STATUS_OK && rs.found != 0x1f) {
            cli_error("%s: resumable checkpoint without train.sampler, train.seed, train.tile or "
                      "train.batch", a.resume);
            goto done;
        }
        if (s == UNET_STATUS_OK) {
            if (rs.seed != a.seed || rs.batch != a.batch)
                cli_note("resuming with the checkpoint's seed %d and batch %d", rs.seed, rs.batch);
            a.seed = rs.seed, a.batch = rs.batch, a.tile = rs.tile;
        }
    } else if (a.init) {
        s = unet_model_load(ctx, a.init, &m);
    } else {
        /* A new model is created once the data tells the number of input channels. */
        unet_arch arch;
        s = a.arch ? unet_arch_parse(ctx, a.arch, &arch) : UNET_STATUS_OK;
        if (s != UNET_STATUS_OK) {
            cli_lib_error(ctx, s);
            rc = CLI_EXIT_USAGE;
            goto done;
        }
    }
    if (s != UNET_STATUS_OK) {
        cli_lib_error(ctx, s);
        goto done;
    }
    if (m && (a.arch || a.bilinear || a.valid || a.conv_bias || a.no_batchnorm || !isnan(a.dropout)))
        cli_note("the architecture comes from %s; architecture options are ignored",
                 a.resume ? a.resume : a.init);
    if (m && unet_model_config(m)->classes != a.classes && !a.resume && a.init)
        cli_note("using the %d classes of %s", unet_model_config(m)->classes, a.init);
    if (m) a.classes = unet_model_config(m)->classes;

    /* The data. */
    bool weights = loss == UNET_LOSS_WCE;
    if (!load_pairs(ctx, &a, a.images, a.masks, norm, weights, &all, &n_all, &channels)) goto done;
    if (a.val_images) {
        if (!load_pairs(ctx, &a, a.val_images, a.val_masks, norm, false, &val, &n_val, &channels))
            goto done;
    } else if (a.val_split > 0) {
        if (!hold_back(ctx, &a, channels, &all, &n_all, &n_val)) goto done;
        val = all + (n_all - n_val);
    } else if (!a.quiet) {
        cli_note("no validation (--val-split 0): %s will be the last model", a.out);
    }
    int n_train = a.val_images ? n_all : n_all - n_val;
    if (!m) {
        unet_arch arch = UNET_ARCH_UNET;
        if (a.arch) unet_arch_parse(ctx, a.arch, &arch);
        unet_config c = unet_config_default(arch);
        c.base = a.base;
        if (arch == UNET_ARCH_UNET || arch == UNET_ARCH_UNET_PAPER) c.depth = a.depth;
        c.classes = a.classes;
        c.in_channels = channels;
        if (a.bilinear) c.up = UNET_UP_BILINEAR;
        if (a.conv_bias) c.conv_bias = 1;
        if (a.no_batchnorm) c.batchnorm = 0;
        if (a.valid) c.padding = 0;
        if (!isnan(a.dropout)) c.dropout = a.dropout;
        s = unet_model_create(ctx, &c, (uint64_t)a.seed, &m);
        if (s != UNET_STATUS_OK) {
            cli_lib_error(ctx, s);
            rc = s == UNET_STATUS_ARG ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
            goto done;
        }
    }
    const unet_config *cfg = unet_model_config(m);
    if (cfg->in_channels != channels) {
        cli_error("the images have %d channels but the model takes %d", channels, cfg->in_channels);
        goto done;
    }

    /* Tiles: rounded up to a size the network accepts. */
    int tile = a.tile;
    if (tile <= 0) tile = cfg->padding == 0 && cfg->arch == UNET_ARCH_UNET_PAPER ? 316 : 256;
    int rounded, out_h, out_w;
    s = unet_model_round_size(ctx, m, tile, &rounded);
    if (s == UNET_STATUS_OK && rounded != tile) {
        cli_note("--tile %d is not a valid input size for this network; using %d", tile, rounded);
        tile = rounded;
    }
    if (s == UNET_STATUS_OK) s = unet_model_output_size(ctx, m, tile, tile, &out_h, &out_w);
    if (s == UNET_STATUS_OK) s = unet_dataset_create(ctx, channels, &ds);
    for (int i = 0; s == UNET_STATUS_OK && i < n_train; i++)
        s = unet_dataset_add(ctx, ds, all[i].image, all[i].target, all[i].weight, all[i].h,
                             all[i].w, all[i].name);
    if (s == UNET_STATUS_OK)
        s = unet_sampler_create(ctx, ds, a.batch, tile, tile, out_h, out_w, &aug,
                                (uint64_t)a.seed, 1, &sampler);
    if (s == UNET_STATUS_OK && rs.have) s = unet_sampler_seek(ctx, sampler, rs.sampler);
    if (s != UNET_STATUS_OK) {
        cli_lib_error(ctx, s);
        goto done;
    }
    double train_pixels = 0;
    for (int i = 0; i < n_train; i++) train_pixels += (double)all[i].h * all[i].w;
    long per_epoch = (long)ceil(train_pixels / ((double)a.batch * out_h * out_w));
    if (per_epoch < 1) per_epoch = 1;
    long total = a.steps ? a.steps : (long)a.epochs * per_epoch;
    long step = rs.have ? rs.step : 0;
    double best = rs.have ? rs.best : -1;
    if (step >= total) {
        /* Nothing to train: say so, and claim no file. */
        cli_note("%s is at step %ld and the run has %ld steps: nothing to train, nothing written "
                 "(raise --steps or --epochs to continue it)",
                 a.resume, step, total);
        rc = 0;
        goto done;
    }
    sched.total = total;
    s = unet_schedule_check(ctx, &sched);
    if (s == UNET_STATUS_OK && a.ema > 0 && unet_model_ema_decay(m) == 0)
        s = unet_model_ema_enable(ctx, m, a.ema);
    else if (s == UNET_STATUS_OK && unet_model_ema_decay(m) != a.ema)
        cli_note("continuing the checkpoint's moving average of the weights (--ema %g)",
                 unet_model_ema_decay(m));
    if (s == UNET_STATUS_OK) s = unet_guard_create(ctx, &guard_opts, &guard);
    if (s == UNET_STATUS_OK && rs.guard &&
        (s = unet_guard_set_state(ctx, guard, rs.guard)) != UNET_STATUS_OK) {
        cli_error("%s: metadata train.guard is not valid (a damaged resumable checkpoint?): %s",
                  a.resume, unet_ctx_errmsg(ctx));
        goto done;
    }
    /* The first rollback target: the state training starts from. */
    if (s == UNET_STATUS_OK) s = unet_guard_snapshot(ctx, guard, m, step);
    if (s != UNET_STATUS_OK) {
        cli_lib_error(ctx, s);
        rc = s == UNET_STATUS_ARG ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
        goto done;
    }

    size_t nx = (size_t)a.batch, nt = (size_t)a.batch;
    bool fits = count_mul(&nx, (size_t)channels) && count_mul(&nx, (size_t)tile) &&
                count_mul(&nx, (size_t)tile) && count_mul(&nx, sizeof(float)) &&
                count_mul(&nt, (size_t)out_h) && count_mul(&nt, (size_t)out_w) &&
                count_mul(&nt, sizeof(float));
    x = fits ? malloc(nx) : NULL;
    tg = fits ? malloc(nt) : NULL;
    wt = fits && weights ? malloc(nt) : NULL;
    if (!x || !tg || (weights && !wt)) {
        cli_error("out of memory for a batch of %d tiles of %d pixels", a.batch, tile);
        goto done;
    }
    const char *lp = a.log ? a.log : log_path;
    log = open_log(lp, rs.have, rs.step);
    if (!log) goto done;

    const double lr0 = opt.lr;
    {
        double flops = 0;
        unet_model_cost(ctx, m, a.batch, tile, tile, &flops, NULL);
        char shape[64];
        if (cfg->arch == UNET_ARCH_UNET || cfg->arch == UNET_ARCH_UNET_PAPER)
            snprintf(shape, sizeof shape, "base %d, depth %d", cfg->base, cfg->depth);
        else
            snprintf(shape, sizeof shape, "VGG base %d", cfg->base);
        fprintf(stderr,
                "unet: training %s (%s, %zu parameters) on %d images, validating on %d\n"
                "unet: %ld steps of %d tiles %dx%d -> %dx%d (%ld per epoch), %s lr %g (%s%s), "
                "loss %s%s, augment %s, %d threads\n",
                unet_arch_name(cfg->arch), shape, unet_model_param_count(m), n_train, n_val,
                total, a.batch, tile, tile, out_h, out_w, per_epoch, a.optimizer, lr0,
                unet_schedule_name(sched.kind), sched.warmup ? ", warm-up" : "", a.loss,
                step_opts.reduction == UNET_REDUCTION_SUM ? " summed" : "", a.augment,
                unet_ctx_threads(ctx));
        if (rs.have)
            fprintf(stderr, "unet: resuming at step %ld%s\n", step,
                    unet_guard_rollbacks(guard) ? " (with the learning rate of its rollbacks)" : "");
    }
    struct cli_progress prog;
    cli_progress_init(&prog);
    double t0 = cli_now(), last_save = t0;
    /* The epoch's loss sum and step count (a resumed run continues its checkpoint's). */
    struct loop_state ls = {.epoch_loss = rs.epoch_loss, .epoch_steps = rs.epoch_steps,
                            .guard = guard};
    long first_step = step;
    /* The latest resumable checkpoint: the one resumed from, then each one written. */
    long saved_step = rs.have ? rs.step : -1;
    char selected[128] = "";    /* what this run last wrote to OUT */
    if (stop_signal) {
        cli_note("interrupted before the first step; nothing new to save");
        rc = 128 + stop_signal;
        goto done;
    }
    rc = 0;
    bool diverged = false, budget_over = false;
    while (step < total) {
        opt.lr = lr0 * unet_schedule_factor(&sched, step) * unet_guard_lr_scale(guard);
        s = unet_sampler_next(ctx, sampler, x, tg, wt);
        if (s != UNET_STATUS_OK) {
            cli_lib_error(ctx, s);
            rc = CLI_EXIT_FAIL;
            break;
        }
        unet_step_stats st;
        s = unet_train_step_ex(ctx, m, &opt, &step_opts, x, tg, wt, a.batch, tile, tile, &st);
        if (s != UNET_STATUS_OK && s != UNET_STATUS_NUMERIC) {
            cli_lib_error(ctx, s);
            rc = CLI_EXIT_FAIL;
            break;
        }
        step++;
        char event[192] = "";
        bool rolled_back = false;
        unet_guard_event ev = unet_guard_observe(guard, s, &st);
        if (ev != UNET_GUARD_NONE) {
            rolled_back = true;
            cli_progress_done(&prog);
            diverged = !recover(ctx, guard, m, step, lr0 * unet_schedule_factor(&sched, step),
                                unet_guard_event_name(ev), event, sizeof event);
        } else if (st.clipped) {
            snprintf(event, sizeof event, "clip:norm=%.4g", st.grad_norm);
        }
        if (isfinite(st.loss)) ls.epoch_loss += st.loss;
        ls.epoch_steps++;
        long epoch = (step - 1) / per_epoch + 1;
        double elapsed = cli_now() - t0;
        double rate = (double)(step - first_step) * a.batch / elapsed;
        char eta[32];
        cli_duration((double)(total - step) * a.batch / rate, eta, sizeof eta);
        /* NaN as "nan", never "-nan" (the sign of a NaN is noise). */
        fprintf(log, "%ld,%ld,%.6f,%g,,,,,,%.1f,%.6g,%s\n", step, epoch,
                isnan(st.loss) ? NAN : st.loss, opt.lr, elapsed,
                isnan(st.grad_norm) ? NAN : st.grad_norm, event);
        if (diverged) {
            rc = CLI_EXIT_DIVERGED;
            break;
        }
        if (!a.quiet && prog.tty)
            cli_progress_line(&prog, "epoch %ld/%ld  step %ld/%ld  loss %.4f  %.2f img/s  ETA %s",
                              epoch, (total + per_epoch - 1) / per_epoch, step, total, st.loss,
                              rate, eta);
        /* Not a terminal (a log file): a plain line every tenth of an epoch. */
        long every = per_epoch >= 20 ? per_epoch / 10 : per_epoch;
        if (!a.quiet && !prog.tty && step % every == 0 && step % per_epoch != 0)
            fprintf(stderr, "step %ld/%ld  epoch %ld  loss %.4f  %.2f img/s  ETA %s\n", step,
                    total, epoch, st.loss, rate, eta);
        budget_over = a.minutes > 0 && elapsed >= 60.0 * a.minutes && step < total;
        bool epoch_end = step % per_epoch == 0 || step == total || budget_over;
        if (epoch_end) {
            s = UNET_STATUS_OK;
            struct val_result vr = {0};
            bool have_val = n_val > 0;
            if (have_val && !validate_model(ctx, m, val, n_val, cfg->classes, &vr)) {
                rc = CLI_EXIT_FAIL;
                break;
            }
            if (have_val) {
                /* The validation's loss is the plain cross entropy: log K for a uniform
                 * prediction. */
                unet_step_stats vs = {.loss = vr.loss, .classes = cfg->classes < 2 ? 2 : cfg->classes,
                                      .correct = vr.correct};
                vs.baseline = uniform_ce(vs.classes);
                memcpy(vs.pred, vr.pred, sizeof vs.pred);
                memcpy(vs.truth, vr.truth, sizeof vs.truth);
                ev = unet_guard_observe_validation(guard, &vs);
            } else {
                ev = UNET_GUARD_NONE;
            }
            cli_progress_done(&prog);
            double mean_loss = ls.epoch_steps ? ls.epoch_loss / ls.epoch_steps : NAN;
            if (!a.quiet) {
                char took[32];
                if (have_val)
                    fprintf(stderr,
                            "epoch %ld  loss %.4f  val loss %.4f  dice %.4f  iou %.4f  pixel err "
                            "%.4f  rand err %.4f  (%s)\n",
                            epoch, mean_loss, vr.loss, vr.dice, vr.iou, vr.pixel_error,
                            vr.rand_error, cli_duration(elapsed, took, sizeof took));
                else
                    fprintf(stderr, "epoch %ld  loss %.4f  (%s)\n", epoch, mean_loss,
                            cli_duration(elapsed, took, sizeof took));
            }
            event[0] = 0;
            bool good = ev == UNET_GUARD_NONE && unet_guard_healthy(guard);
            if (ev != UNET_GUARD_NONE) {
                rolled_back = true;
                diverged = !recover(ctx, guard, m, step, lr0 * unet_schedule_factor(&sched, step),
                                    unet_guard_event_name(ev), event, sizeof event);
            } else if (have_val && vr.dice > best) {
                best = vr.dice;
                snprintf(selected, sizeof selected, "best val_dice=%.4f step=%ld%s", vr.dice, step,
                         ema_note(m));
                snprintf(event, sizeof event, "best:val_dice=%.4f", vr.dice);
                s = save_selected(ctx, m, a.out, selected);
            }
            if (have_val)
                fprintf(log, "%ld,%ld,%.6f,%g,%.6f,%.6f,%.6f,%.6f,%.6f,%.1f,,%s\n", step, epoch,
                        mean_loss, opt.lr, vr.loss, vr.dice, vr.iou, vr.pixel_error,
                        vr.rand_error, elapsed, event);
            ls.epoch_loss = 0;
            ls.epoch_steps = 0;
            if (diverged) {
                rc = CLI_EXIT_DIVERGED;
                break;
            }
            /* The last model (and OUT without validation): only a state the guard trusts. */
            if (s == UNET_STATUS_OK && good) {
                char last[96];
                snprintf(last, sizeof last, "last step=%ld%s", step, ema_note(m));
                s = save_selected(ctx, m, last_path, last);
                if (s == UNET_STATUS_OK && !have_val) {
                    snprintf(selected, sizeof selected, "%s", last);
                    s = save_selected(ctx, m, a.out, last);
                }
            }
            if (s != UNET_STATUS_OK) {
                cli_lib_error(ctx, s);
                rc = CLI_EXIT_FAIL;
                break;
            }
        }
        /* The last good state: at validation and every --snapshot-every steps. */
        if (!rolled_back && (epoch_end || step % a.snapshot_every == 0) &&
            unet_guard_trusted(guard)) {
            s = unet_guard_snapshot(ctx, guard, m, step);
            if (s != UNET_STATUS_OK) {
                cli_lib_error(ctx, s);
                rc = CLI_EXIT_FAIL;
                break;
            }
        }
        bool timed = a.save_minutes > 0 && cli_now() - last_save > 60.0 * a.save_minutes;
        /* A failed write sets the stream's error flag, which stays set. */
        const bool log_failed = fflush(log) != 0 || ferror(log);
        if (epoch_end || timed || (a.save_every && step % a.save_every == 0) || stop_signal ||
            log_failed) {
            if (!save_resume(ctx, m, resume_path, step, unet_sampler_position(sampler), best, &a,
                             tile, &ls)) {
                cli_note("stopped at step %ld; %s", step,
                         saved_step >= 0 ? "the previous resumable checkpoint is untouched"
                                         : "no resumable checkpoint was written");
                rc = CLI_EXIT_FAIL;
                break;
            }
            saved_step = step;
            last_save = cli_now();
        }
        if (log_failed) {
            cli_error("%s: cannot write the log (disk full?); stopped at step %ld with the "
                      "resumable checkpoint %s written", lp, step, resume_path);
            rc = CLI_EXIT_FAIL;
            break;
        }
        if (stop_signal) {
            cli_progress_done(&prog);
            cli_note("interrupted at step %ld of %ld; continue with the same command plus "
                     "--resume %s", step, total, resume_path);
            rc = 128 + stop_signal;
            break;
        }
        if (budget_over) break;
    }
    cli_progress_done(&prog);
    if (diverged) {
        /* The model is back at the last good state: keep it as the last model and as the
         * resumable checkpoint, so nothing diverged is left as a result. */
        char why[600], last[96];
        snprintf(why, sizeof why, "%s", unet_ctx_errmsg(ctx));
        snprintf(last, sizeof last, "last good step=%ld%s", unet_guard_snapshot_step(guard),
                 ema_note(m));
        s = save_selected(ctx, m, last_path, last);
        if (s == UNET_STATUS_OK)
            s = save_resume(ctx, m, resume_path, step, unet_sampler_position(sampler), best, &a,
                            tile, &ls) ? UNET_STATUS_OK : UNET_STATUS_IO;
        cli_error("%s; stopped at step %ld of %ld", why, step, total);
        if (s == UNET_STATUS_OK)
            cli_note("%s and the resumable checkpoint %s hold the last good state (step %ld)",
                     last_path, resume_path, unet_guard_snapshot_step(guard));
        else if (s != UNET_STATUS_IO)
            cli_lib_error(ctx, s);
        if (selected[0]) cli_note("%s: %s", a.out, selected);
        else if (rs.have && access(a.out, F_OK) == 0)
            cli_note("%s: the best model before the resume", a.out);
        else
            cli_note("%s was not written: %s", a.out,
                     n_val ? "no validation improved before the divergence"
                           : "no epoch ended before it in a state the divergence guard trusted");
        cli_note("to continue: the same command with --resume %s and a lower --lr, --clip N or "
                 "a higher --max-rollbacks",
                 resume_path);
    }
    if (rc == 0) {
        double w = 0, wait = 0;
        unet_sampler_times(sampler, &w, &wait);
        char took[32];
        if (budget_over)
            fprintf(stderr, "unet: the time budget of %g minutes ended the run at step %ld of %ld\n",
                    a.minutes, step, total);
        if (selected[0])
            fprintf(stderr, "unet: done in %s; wrote %s (%s) (data preparation waited %.1f s)\n",
                    cli_duration(cli_now() - t0, took, sizeof took), a.out, selected, wait);
        else
            fprintf(stderr, "unet: done in %s; %s was not written by this run (%s)\n",
                    cli_duration(cli_now() - t0, took, sizeof took), a.out,
                    n_val ? "no validation improved on the checkpoint's best"
                          : "no epoch ended in a state the divergence guard trusted");
    }
done:
    if (log) fclose(log);
    unet_sampler_free(sampler);
    unet_dataset_free(ds);
    if (a.val_images) samples_free(val, n_val);
    samples_free(all, n_all);
    free(x), free(tg), free(wt);
    free(stem), free(last_path), free(resume_path), free(log_path);
    unet_model_free(m);
    unet_guard_free(guard);
    free(rs.guard);
    unet_ctx_free(ctx);
    return rc;
}
