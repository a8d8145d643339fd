/* train_setup.c — unet train's options and data before the training loop (train_setup.h). */
#include "cli/train_setup.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- the data ---- */

/* Page p of file f (ip, its mask mp) into set, as the library adds a file pair under the
 * layout in (unet_dataset_add_file_with); the set takes the channels of its first image, or
 * *channels. */
static bool add_page(unet_ctx *ctx, const struct cli_input *in, const char *ip, const char *mp,
                     int p, int pages, int f, const unet_target_opts *to, int *channels,
                     struct loaded *set) {
    unet_image info = {0};
    int c;
    if (!cli_image_channels(ctx, in, ip, p, &info, &c)) return false;
    if (!*channels) *channels = c;
    if (c != *channels) {
        cli_error("%s has %d channels, the other images %d%s", ip, c, *channels,
                  in->channels ? "" : " (--channels gray or --channels N makes them alike)");
        return false;
    }
    unet_status s = set->ds ? UNET_STATUS_OK : unet_dataset_create(ctx, *channels, &set->ds);
    char name[512];
    if (pages > 1) snprintf(name, sizeof name, "%s[%d]", cli_basename(ip), p);
    else snprintf(name, sizeof name, "%s", cli_basename(ip));
    if (s == UNET_STATUS_OK)
        s = unet_dataset_add_file_with(ctx, set->ds, ip, mp, p, &in->opts, in->channels,
                                       in->norm, to, name);
    if (s != UNET_STATUS_OK) {
        cli_lib_error(ctx, s);
        return false;
    }
    if (set->n == set->cap) {
        int *more = realloc(set->file, sizeof(int) * (size_t)(2 * set->cap + 32));
        if (!more) {
            cli_error("out of memory");
            return false;
        }
        set->file = more, set->cap = 2 * set->cap + 32;
    }
    set->file[set->n++] = f;
    return true;
}

/* Whether some target of ds is a class other than background (0); false for NULL. */
bool train_has_foreground(const unet_dataset *ds) {
    const int32_t *t;
    int h, w;
    for (int i = 0; ds && unet_dataset_get(ds, i, NULL, &t, NULL, &h, &w, NULL) == UNET_STATUS_OK; i++)
        for (size_t k = 0; k < (size_t)h * w; k++)
            if (t[k] > 0) return true;
    return false;
}

/* Loads every image of dir (each page of a stack) with its mask from masks into set. */
bool train_load_pairs(unet_ctx *ctx, const struct cli_input *in, const char *dir,
                      const char *masks, const unet_target_opts *to, int *channels,
                       struct loaded *set) {
    struct cli_files files;
    if (!cli_list_images(dir, &files)) return false;
    bool ok = true;
    for (int f = 0; f < files.count && ok; f++) {
        const char *ip = files.paths[f];
        char *mp = cli_find_mask(masks, ip);
        int pages = 0, mpages = 0;
        ok = mp && cli_image_pages(ctx, in, ip, &pages) && cli_image_pages(ctx, in, mp, &mpages);
        if (ok && pages != mpages) {
            cli_error("%s has %d pages but its mask %s has %d", ip, pages, mp, mpages);
            ok = false;
        }
        for (int p = 0; p < pages && ok; p++)
            ok = add_page(ctx, in, ip, mp, p, pages, f, to, channels, set);
        free(mp);
    }
    cli_files_free(&files);
    return ok;
}

/* --val-split without --val-images: the library's plan (whole images, the last pages of a
 * stack, or a band of each of 1-3 images) moves the held-back images to *val; a warning says
 * when nothing could be held back. */
bool train_hold_back(unet_ctx *ctx, const struct args *a, struct loaded *set,
                     unet_dataset **val) {
    const int n = unet_dataset_count(set->ds);
    int kind = 0;
    unet_status s = unet_dataset_holdout(ctx, set->ds, set->file, a->val_split,
                                         UNET_HOLDOUT_MIN_ROWS, (uint64_t)a->seed, &kind, val);
    if (s != UNET_STATUS_OK) {
        cli_lib_error(ctx, s);
        return false;
    }
    const int held = unet_dataset_count(*val);
    if (kind == 1) {
        bool one_stack = true;
        for (int i = 0; i < n; i++) one_stack &= set->file[i] == set->file[0];
        cli_note("holding back %d of %d images for validation (--val-split %g)%s", held, n,
                 (double)a->val_split, one_stack ? ": the last pages of the stack" : "");
    } else if (kind == 2) {
        cli_note("holding back the bottom %.0f%% of the rows of %s for validation (too few "
                 "images to hold back whole ones)",
                 100.0 * a->val_split,
                 n == 1 ? "the image" : held == n ? "every image" : "some images");
    } else {
        cli_note("warning: no validation data: %s too small to hold back %.0f%% of %s rows "
                 "(at least %d rows each side); %s will be the last model, not the best.  Give "
                 "--val-images and --val-masks for a validation set",
                 n == 1 ? "the image is" : "the images are", 100.0 * a->val_split,
                 n == 1 ? "its" : "their", UNET_HOLDOUT_MIN_ROWS, a->out);
    }
    return true;
}

/* ---- options ---- */

/* The default recipe's choice from the data (docs/training.md, "The default recipe"): with
 * neither --recipe, --loss nor --separate-cells, two classes and masks that label every cell
 * with its own id, touching cells are separated and the loss is the border-weighted cross
 * entropy (Eq. 2 of the paper).  Cross-validated on DIC-C2DH-HeLa (docs/results.md) it raised
 * SEG of the watershed instances over the same steps from 0.46-0.59 to 0.81; binary and class
 * masks (ISBI 2012) keep cross entropy + Dice.  The rule is the library's
 * (unet_plan_from_mask_files, which unet.train calls too); a masks folder that cannot be listed
 * is left to the loading that follows, which names the problem. */
bool train_plan_from_masks(unet_ctx *ctx, struct args *a) {
    if (a->recipe || a->loss || a->separate_cells) return true;
    struct cli_files files;
    if (!cli_list_images_quiet(a->masks, &files)) return true;
    int separate = 0;
    unet_status s = unet_plan_from_mask_files(ctx, (const char *const *)files.paths, files.count,
                                              a->classes, &separate);
    cli_files_free(&files);
    if (s != UNET_STATUS_OK) {
        cli_lib_error(ctx, s);
        return false;
    }
    if (!separate) return true;
    a->loss = "wce";
    a->separate_cells = true;
    cli_note("%s", UNET_PLAN_SEPARATE_NOTE);
    return true;
}

void train_apply_recipe(struct args *a) {
    if (!a->recipe) return;
    if (strcmp(a->recipe, "seed") == 0) return;
    bool sgd = strcmp(a->recipe, "paper-sgd") == 0; /* else "paper" (the table's words) */
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

/* The trainer's options from the command line (recipe and defaults applied); false with the
 * message printed on a usage error.  The values themselves are checked by the library
 * (unet_train_check), which names the option. */
bool train_opts(unet_ctx *ctx, const struct args *a, unet_train_opts *o) {
    *o = unet_train_defaults();
    unet_status s = unet_loss_parse(ctx, a->loss, &o->step.loss);
    if (s == UNET_STATUS_OK) s = unet_optim_parse(ctx, a->optimizer, &o->optim);
    if (s == UNET_STATUS_OK) s = unet_augment_parse(ctx, a->augment, &o->augment);
    if (s == UNET_STATUS_OK && a->schedule)
        s = unet_schedule_parse(ctx, a->schedule, &o->schedule.kind);
    if (s != UNET_STATUS_OK) {
        cli_error("--%s", unet_ctx_errmsg(ctx));
        return false;
    }
    if (a->loss_reduction && strcmp(a->loss_reduction, "sum") == 0)
        o->step.reduction = UNET_REDUCTION_SUM;
    if (a->milestones && !parse_milestones(a->milestones, &o->schedule)) return false;
    /* Given values go to the library, which rejects what is out of range. */
    if (a->precision && !cli_parse_precision(a->precision, &o->precision)) return false;
    if (!isnan(a->lr)) o->optim.lr = a->lr;
    if (!isnan(a->momentum)) o->optim.momentum = a->momentum;
    if (!isnan(a->weight_decay)) o->optim.weight_decay = a->weight_decay;
    o->optim.nesterov = a->nesterov;
    o->step.clip_norm = a->clip;
    o->schedule.warmup = a->warmup;
    o->guard.max_rollbacks = a->max_rollbacks, o->guard.lr_factor = a->rollback_lr;
    o->guard.detect = !a->no_guard;
    o->ema = a->ema, o->batch = a->batch, o->tile = a->tile, o->seed = a->seed;
    o->epochs = a->epochs, o->steps = a->steps, o->minutes = a->minutes;
    o->snapshot_every = a->snapshot_every, o->save_every = a->save_every;
    o->save_minutes = a->save_minutes;
    s = unet_train_check(ctx, o);
    if (s != UNET_STATUS_OK) {
        cli_error("train: %s", unet_ctx_errmsg(ctx));
        return false;
    }
    return true;
}
