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
 *   STEM.run.json             the settings, data, machine and ending, for unet report
 *                             (--report FILE writes its page at the end; docs/report.md)
 *   STEM.lock                 held (flock) while the run writes; removed at the end
 * where STEM is OUT without ".safetensors".  Before any work, cli_train_guard (guard.c) checks
 * that no output is an input or another output, and that existing outputs are unet's (else
 * --force), takes the lock and estimates the memory the data will take (--max-memory).
 *
 * This file is the command's flow: options to a unet_train_opts, the folders into datasets
 * (the library's loaders, unet_mask_to_target, unet_dataset_holdout), then the library's
 * training loop (unet_trainer, src/trainer.c: schedule, clipping, moving average, divergence
 * guard with rollbacks, validation, best/last/resumable checkpoints, time budget;
 * docs/training.md), whose events become the log's rows and the progress lines.
 * SIGINT/SIGTERM/SIGHUP/SIGPIPE set a flag that the event callback returns: the loop finishes
 * the current step, writes the resumable checkpoint, and the command exits 128 + signal.  A
 * run that diverges beyond its rollbacks exits 3 with the last good state written as the last
 * model.  The same seed and thread count give the same losses, also across an interruption and
 * --resume.
 */
#include "cli/cli.h"
#include "cli/dist.h"
#include "cli/report.h"

#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct args {
    const char *images, *masks, *val_images, *val_masks, *out, *init, *resume, *log;
    const char *arch, *optimizer, *loss, *norm, *augment, *recipe, *max_pixels, *report;
    const char *max_memory, *channel_axis, *channels, *precision;
    const char *schedule, *milestones, *loss_reduction;
    int         base, depth, classes, epochs, steps, batch, tile, seed, threads, save_every;
    int         separate_gap, warmup, max_rollbacks, snapshot_every;
    double      lr, momentum, weight_decay;     /* NAN: the optimizer's default */
    double      clip, ema, rollback_lr, minutes;
    float       val_split, dropout, w0, sigma, save_minutes;
    bool        bilinear, no_augment, conv_bias, no_batchnorm, valid, nesterov, separate_cells,
                quiet, no_guard, force, sync_bn;
};

static volatile sig_atomic_t stop_signal = 0;

static void on_signal(int sig) {
    stop_signal = sig;
}

static void on_sigpipe(int sig) {
    if (!stop_signal) stop_signal = sig;
}

/* ---- the data ---- */

/* A set of images being loaded, and the file each came from (pages of a stack share it). */
struct loaded {
    unet_dataset *ds;
    int          *file;
    int           n, cap;
};

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
static bool has_foreground(const unet_dataset *ds) {
    const int32_t *t;
    int h, w;
    for (int i = 0; ds && unet_dataset_get(ds, i, NULL, &t, NULL, &h, &w, NULL) == UNET_STATUS_OK; i++)
        for (size_t k = 0; k < (size_t)h * w; k++)
            if (t[k] > 0) return true;
    return false;
}

/* Loads every image of dir (each page of a stack) with its mask from masks into set. */
static bool load_pairs(unet_ctx *ctx, const struct cli_input *in, const char *dir,
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
static bool hold_back(unet_ctx *ctx, const struct args *a, struct loaded *set,
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

/* STEM + suffix (malloc'd), where STEM is out without ".safetensors". */
static char *beside(const char *out, const char *suffix) {
    size_t n = strlen(out), k = strlen(".safetensors");
    if (n > k && strcmp(out + n - k, ".safetensors") == 0) n -= k;
    char *p = malloc(n + strlen(suffix) + 1);
    if (p) memcpy(p, out, n), strcpy(p + n, suffix);
    return p;
}

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
static bool train_opts(unet_ctx *ctx, const struct args *a, unet_train_opts *o) {
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
    if (a->loss_reduction && strcmp(a->loss_reduction, "sum") == 0) {
        o->step.reduction = UNET_REDUCTION_SUM;
    } else if (a->loss_reduction && strcmp(a->loss_reduction, "mean") != 0) {
        cli_error("--loss-reduction: '%s' (expected mean or sum)", a->loss_reduction);
        return false;
    }
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

/* ---- the run's events: the log and the progress lines ---- */

struct run_view {
    const struct args     *a;
    const unet_train_info *info;
    unet_model            *m;
    FILE                  *log;
    struct cli_progress    prog;
    bool                   log_failed;     /* a write to the log failed: stop */
};

static void step_progress(struct run_view *r, const unet_train_event *e) {
    const unet_train_info *in = r->info;
    double rate = (double)(e->step - in->first_step) * r->a->batch / e->elapsed;
    char eta[32];
    cli_duration((double)(e->total - e->step) * r->a->batch / rate, eta, sizeof eta);
    if (r->a->quiet) return;
    if (r->prog.tty)
        cli_progress_line(&r->prog, "epoch %ld/%ld  step %ld/%ld  loss %.4f  %.2f img/s  ETA %s",
                          e->epoch, (e->total + in->per_epoch - 1) / in->per_epoch, e->step,
                          e->total, e->loss, rate, eta);
    /* Not a terminal (a log file): a plain line every tenth of an epoch. */
    long every = in->per_epoch >= 20 ? in->per_epoch / 10 : in->per_epoch;
    if (!r->prog.tty && e->step % every == 0 && e->step % in->per_epoch != 0)
        fprintf(stderr, "step %ld/%ld  epoch %ld  loss %.4f  %.2f img/s  ETA %s\n", e->step,
                e->total, e->epoch, e->loss, rate, eta);
}

/* A row of the log, a progress line; non-zero asks the run to stop (a signal came, or the log
 * cannot be written). */
static int show_event(const unet_train_event *e, struct run_view *r) {
    bool diverged = strncmp(e->event, "diverged:", 9) == 0;
    if (e->kind == UNET_TRAIN_STEP) {
        if (e->warning[0] || diverged) cli_progress_done(&r->prog);
        if (e->warning[0]) cli_note("warning: %s", e->warning);
    } else if (e->kind == UNET_TRAIN_EPOCH) {
        cli_progress_done(&r->prog);
        char took[32];
        cli_duration(e->elapsed, took, sizeof took);
        if (!r->a->quiet && e->validated)
            fprintf(stderr,
                    "epoch %ld  loss %.4f  val loss %.4f  dice %.4f  iou %.4f  pixel err %.4f  "
                    "rand err %.4f  (%s)\n",
                    e->epoch, e->loss, e->val_loss, e->val_dice, e->val_iou, e->val_pixel_error,
                    e->val_rand_error, took);
        else if (!r->a->quiet)
            fprintf(stderr, "epoch %ld  loss %.4f  (%s)\n", e->epoch, e->loss, took);
        if (e->warning[0]) cli_note("warning: %s", e->warning);
    }
    char row[512];
    if (unet_train_log_row(e, row, sizeof row) > 0) fputs(row, r->log);
    if (e->kind == UNET_TRAIN_STEP && !diverged) step_progress(r, e);
    /* A failed write sets the stream's error flag, which stays set. */
    r->log_failed |= fflush(r->log) != 0 || ferror(r->log);
    return stop_signal || r->log_failed;
}

/* Under mpirun: are the ranks' weights equal (a hash compared)? */
static bool same_weights(unet_model *m) {
    if (dist_size() < 2) return true;
    size_t n = 0;
    const float *w = unet_model_block(m, UNET_BLOCK_WEIGHTS, &n);
    return dist_same(dist_hash(DIST_HASH0, w, n * sizeof(float)));
}

/* The event callback.  Under mpirun only rank 0 has the log and the progress lines, and every
 * rank stops at the same step when any asks. */
static int on_event(const unet_train_event *e, void *user) {
    struct run_view *r = user;
    if (e->kind == UNET_TRAIN_EPOCH && !same_weights(r->m)) {
        /* Never seen: the ranks' steps are the same sums.  Nothing trustworthy to add to the
         * files on disk, which hold the last agreed state. */
        cli_error("the ranks' weights differ at step %ld (an MPI reduction that is not the same "
                  "on every rank?); stopping", e->step);
        return dist_exit(CLI_EXIT_FAIL);
    }
    /* Any rank's stop stops every rank after this step (one collective per event), and a
     * signal's number comes along for every rank's exit status. */
    int stop = r->log ? show_event(e, r) : stop_signal != 0;
    int all = dist_max(stop_signal * 2 + (stop != 0));
    if (all > 1 && !stop_signal) stop_signal = all / 2;
    return all != 0;
}

/* What the run's end says, and the exit status. */
static int ending(unet_ctx *ctx, unet_status s, const struct run_view *r, const char *out,
                  const char *last_path, const char *resume_path, const char *log_path,
                  double t0) {
    const unet_train_info *in = r->info;
    const struct args *a = r->a;
    if (s == UNET_STATUS_OK) {
        char took[32];
        cli_duration(cli_now() - t0, took, sizeof took);
        if (in->budget_over)
            fprintf(stderr, "unet: the time budget of %g minutes ended the run at step %ld of %ld\n",
                    a->minutes, in->step, in->total);
        if (in->selected[0])
            fprintf(stderr, "unet: done in %s; wrote %s (%s) (data preparation waited %.1f s)\n",
                    took, out, in->selected, in->data_seconds);
        else
            fprintf(stderr, "unet: done in %s; %s was not written by this run (%s)\n", took, out,
                    in->n_val ? "no validation improved on the checkpoint's best"
                              : "no epoch ended in a state the divergence guard trusted");
        return 0;
    }
    if (in->diverged) {
        cli_error("%s; stopped at step %ld of %ld", unet_ctx_errmsg(ctx), in->step, in->total);
        if (in->last_good_written)
            cli_note("%s and the resumable checkpoint %s hold the last good state (step %ld)",
                     last_path, resume_path, in->good_step);
        if (in->selected[0]) cli_note("%s: %s", out, in->selected);
        else if (in->first_step > 0 && access(out, F_OK) == 0)
            cli_note("%s: the best model before the resume", out);
        else
            cli_note("%s was not written: %s", out,
                     in->n_val ? "no validation improved before the divergence"
                               : "no epoch ended before it in a state the divergence guard trusted");
        cli_note("to continue: the same command with --resume %s and a lower --lr, --clip N or "
                 "a higher --max-rollbacks",
                 resume_path);
        return CLI_EXIT_DIVERGED;
    }
    if (s == UNET_STATUS_INTERRUPTED && r->log_failed) {
        cli_error("%s: cannot write the log (disk full?); stopped at step %ld with the resumable "
                  "checkpoint %s written", log_path, in->step, resume_path);
        return CLI_EXIT_FAIL;
    }
    if (s == UNET_STATUS_INTERRUPTED && in->step == in->first_step) {
        cli_note("interrupted before the first step; nothing new to save");
        return 128 + stop_signal;
    }
    if (s == UNET_STATUS_INTERRUPTED) {
        cli_note("interrupted at step %ld of %ld; continue with the same command plus --resume %s",
                 in->step, in->total, resume_path);
        return 128 + stop_signal;
    }
    cli_lib_error(ctx, s);
    if (in->step > in->first_step)
        cli_note("stopped at step %ld; %s", in->step,
                 in->saved_step >= 0 ? "the previous resumable checkpoint is untouched"
                                     : "no resumable checkpoint was written");
    return CLI_EXIT_FAIL;
}

/* What every rank of an mpirun must agree on: the build and arguments, the model's shape and
 * starting weights, the data as loaded and the run's plan. */
static uint64_t train_hash(int argc, char **argv, unet_model *m, const unet_train_info *in) {
    uint64_t h = dist_hash_args(argc, argv);
    size_t n = 0;
    const float *w = unet_model_block(m, UNET_BLOCK_WEIGHTS, &n);
    const long plan[] = {(long)n, in->tile, in->total, in->per_epoch, in->first_step,
                         in->n_train, in->n_val};
    h = dist_hash(h, unet_model_config(m), sizeof(unet_config));
    h = dist_hash(h, w, n * sizeof(float));
    return dist_hash(h, plan, sizeof plan);
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
        {"--sync-bn", CLI_FLAG, &a.sync_bn, NULL, "mpirun: batch-norm statistics over all ranks' "
                                                  "tiles (docs/scaling.md)"},
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
        {"--channel-axis", CLI_STR, &a.channel_axis, "AXIS", CLI_CHANNEL_AXIS_HELP},
        {"--channels", CLI_STR, &a.channels, "SPEC", CLI_CHANNELS_HELP " (saved with the model)"},
        {"--seed", CLI_INT, &a.seed, "S", "random seed (1)"},
        {"--precision", CLI_STR, &a.precision, "NAME",
         "fp32 (default) or bf16: bf16 products, float32 weights and optimizer (AVX512_BF16)"},
        {"--threads", CLI_INT, &a.threads, "T", "threads (all cores)"},
        {"--max-pixels", CLI_STR, &a.max_pixels, "N", CLI_MAX_PIXELS_HELP},
        {"--max-memory", CLI_STR, &a.max_memory, "SIZE", CLI_MAX_MEMORY_HELP},
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
        {"--report", CLI_STR, &a.report, "FILE", "write an HTML report at the end (docs/report.md)"},
        {"--quiet", CLI_FLAG, &a.quiet, NULL, "no progress lines"},
        {"--force", CLI_FLAG, &a.force, NULL, "replace an existing --out or --log that unet did "
                                              "not write"},
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
    struct cli_input input;
    if (!cli_input_parse(&input, a.channel_axis, a.channels, a.norm)) return CLI_EXIT_USAGE;
    uint64_t max_pixels = 0;
    if (a.max_pixels && !cli_parse_max_pixels(a.max_pixels, &max_pixels)) return CLI_EXIT_USAGE;
    uint64_t budget = cli_memory_default();
    if (a.max_memory && !cli_parse_bytes("--max-memory", a.max_memory, &budget))
        return CLI_EXIT_USAGE;
    if (a.classes < 1 || a.val_split < 0 || a.val_split >= 1) {
        cli_error("train: --classes >= 1, 0 <= --val-split < 1");
        return CLI_EXIT_USAGE;
    }
    if (a.init && a.resume) {
        cli_error("train: --init and --resume exclude each other (a resumed run continues its "
                  "own weights)");
        return CLI_EXIT_USAGE;
    }
    unet_ctx *ctx = unet_ctx_create();
    if (!ctx) {
        cli_error("out of memory");
        return CLI_EXIT_FAIL;
    }
    unet_train_opts o;
    if (!train_opts(ctx, &a, &o)) {
        unet_ctx_free(ctx);
        return CLI_EXIT_USAGE;
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
    unet_model *m = NULL;
    struct loaded train = {0}, vset = {0};
    unet_dataset *held = NULL;
    unet_trainer *tr = NULL;
    char *last_path = NULL, *resume_path = NULL, *log_path = NULL, *lock_path = NULL;
    char *run_path = NULL;
    const char *lp = NULL;  /* the log: --log, or STEM.log.csv */
    int lock_fd = -1, channels = 0;
    struct run_view view = {.a = &a};
    if (max_pixels) unet_ctx_set_max_pixels(ctx, max_pixels);
    if (budget < unet_ctx_max_image_bytes(ctx)) unet_ctx_set_max_image_bytes(ctx, budget);
    if (!a.threads) a.threads = dist_threads(unet_ctx_threads(ctx));
    if (dist_rank() > 0) a.quiet = true;
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
        last_path = beside(a.out, ".last.safetensors");
        resume_path = beside(a.out, ".resume.safetensors");
        log_path = beside(a.out, ".log.csv");
        lock_path = beside(a.out, ".lock");
        run_path = beside(a.out, ".run.json");
        if (!last_path || !resume_path || !log_path || !lock_path || !run_path) {
            cli_error("out of memory");
            goto done;
        }
        lp = a.log ? a.log : log_path;
        const struct cli_train_files tf = {a.images, a.masks, a.val_images, a.val_masks, a.init,
                                           a.resume, a.out, last_path, resume_path, lp,
                                           lock_path, run_path, a.report};
        /* Under mpirun rank 0 alone writes, so it alone checks the paths and holds the lock. */
        int grc = dist_rank() == 0 ? cli_train_guard(&tf, a.force, &lock_fd) : 0;
        if (grc) {
            rc = grc;
            goto done;
        }
    }

    /* The model: resumed, initialised from a checkpoint, or new. */
    unet_status s;
    if (a.resume) {
        s = unet_model_load_training(ctx, a.resume, &m, NULL, NULL);
        if (s == UNET_STATUS_OK && unet_train_resume(ctx, m, a.resume, &o) != UNET_STATUS_OK) {
            cli_error("%s", unet_ctx_errmsg(ctx));
            goto done;
        }
        if (s == UNET_STATUS_OK) {
            if (o.seed != a.seed || o.batch != a.batch)
                cli_note("resuming with the checkpoint's seed %d and batch %d", o.seed, o.batch);
            a.seed = o.seed, a.batch = o.batch, a.tile = o.tile;
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
    unet_target_opts to = unet_target_defaults();
    to.classes = a.classes;
    to.separate_cells = a.separate_cells;
    to.gap = a.separate_gap;
    to.weights = o.step.loss == UNET_LOSS_WCE;
    to.w0 = a.w0;
    to.sigma = a.sigma;
    const char *const dirs[4] = {a.images, a.masks, a.val_images, a.val_masks};
    if (!cli_train_memory(ctx, dirs, to.weights, budget)) goto done;
    if (m && !cli_input_from_model(&input, m, a.resume ? a.resume : a.init, a.resume != NULL,
                                   a.quiet))
        goto done;
    if (!load_pairs(ctx, &input, a.images, a.masks, &to, &channels, &train)) goto done;
    if (!has_foreground(train.ds))
        cli_note("warning: every mask in %s is all background (0): the model can only learn to "
                 "predict background; check the masks (or --masks)", a.masks);
    to.weights = 0;     /* validation does not use weight maps */
    if (a.val_images) {
        if (!load_pairs(ctx, &input, a.val_images, a.val_masks, &to, &channels, &vset))
            goto done;
    } else if (a.val_split > 0) {
        if (!hold_back(ctx, &a, &train, &held)) goto done;
    } else if (!a.quiet) {
        cli_note("no validation (--val-split 0): %s will be the last model", a.out);
    }
    const unet_dataset *val = a.val_images ? vset.ds : held;
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
    cli_precision_note(o.precision, a.quiet);
    const unet_config *cfg = unet_model_config(m);
    if (!cli_input_done(ctx, &input, m)) goto done;

    /* The library's training loop: tiles rounded up to a size the network accepts.  Under
     * mpirun each rank trains its share of every batch and rank 0 writes the files. */
    const bool writer = dist_rank() == 0;
    o.out = writer ? a.out : NULL;
    o.last = writer ? last_path : NULL;
    o.resume_out = writer ? resume_path : NULL;
    unet_dp dp = {.rank = dist_rank(), .processes = dist_size(), .sum = dist_sum_f64,
                  .sum_f32 = dist_sum_f32};
    s = dist_size() > 1 ? unet_dp_attach(ctx, &dp, m, &o, a.sync_bn) : UNET_STATUS_OK;
    if (s == UNET_STATUS_OK) s = unet_trainer_create(ctx, m, train.ds, val, &o, &tr);
    if (s != UNET_STATUS_OK) {
        cli_lib_error(ctx, s);
        rc = s == UNET_STATUS_ARG ? CLI_EXIT_USAGE : CLI_EXIT_FAIL;
        goto done;
    }
    const unet_train_info *in = unet_trainer_info(tr);
    view.info = in;
    view.m = m;
    if (!dist_start(true, train_hash(argc, argv, m, in), "train")) goto done;
    if (a.tile > 0 && in->tile != a.tile)
        cli_note("--tile %d is not a valid input size for this network; using %d", a.tile, in->tile);
    if (!cli_train_model_memory(ctx, m, a.batch, in->tile, budget)) goto done;
    if (in->first_step >= in->total) {
        /* Nothing to train: say so, and claim no file. */
        cli_note("%s is at step %ld and the run has %ld steps: nothing to train, nothing written "
                 "(raise --steps or --epochs to continue it)",
                 a.resume, in->first_step, in->total);
        rc = 0;
        goto done;
    }
    if (unet_model_ema_decay(m) != a.ema)
        cli_note("continuing the checkpoint's moving average of the weights (--ema %g)",
                 unet_model_ema_decay(m));
    view.log = writer ? cli_log_open(lp, unet_train_log_header(), a.resume != NULL, in->first_step)
                      : NULL;
    if (!view.log && writer) goto done;

    if (writer) {
        double flops = 0;
        unet_model_cost(ctx, m, a.batch, in->tile, in->tile, &flops, NULL);
        char shape[64];
        if (cfg->arch == UNET_ARCH_UNET || cfg->arch == UNET_ARCH_UNET_PAPER)
            snprintf(shape, sizeof shape, "base %d, depth %d", cfg->base, cfg->depth);
        else
            snprintf(shape, sizeof shape, "VGG base %d", cfg->base);
        fprintf(stderr,
                "unet: training %s (%s, %zu parameters) on %d images, validating on %d\n"
                "unet: %ld steps of %d tiles %dx%d -> %dx%d (%ld per epoch), %s lr %g (%s%s), "
                "loss %s%s, augment %s, %d threads\n",
                unet_arch_name(cfg->arch), shape, unet_model_param_count(m), in->n_train,
                in->n_val, in->total, a.batch, in->tile, in->tile, in->out_h, in->out_w,
                in->per_epoch, a.optimizer, o.optim.lr, unet_schedule_name(o.schedule.kind),
                o.schedule.warmup ? ", warm-up" : "", a.loss,
                o.step.reduction == UNET_REDUCTION_SUM ? " summed" : "", a.augment,
                unet_ctx_threads(ctx));
        if (a.resume)
            fprintf(stderr, "unet: resuming at step %ld%s\n", in->first_step,
                    in->rollbacks ? " (with the learning rate of its rollbacks)" : "");
        if (dist_size() > 1)
            fprintf(stderr, "unet: %d ranks (mpirun) share each batch of %d tiles (%d%s each), "
                    "batch-norm %s\n", dist_size(), a.batch, a.batch / dist_size(),
                    a.batch % dist_size() ? " or 1 more" : "",
                    !cfg->batchnorm ? "off" : a.sync_bn ? "synchronised (--sync-bn)"
                                                         : "statistics per rank");
    }
    if (stop_signal) {
        cli_note("interrupted before the first step; nothing new to save");
        rc = 128 + stop_signal;
        goto done;
    }
    /* STEM.run.json: the settings for unet report (docs/report.md). */
    struct report_run run = {argc, argv, a.out, lp, a.images, a.masks, a.val_images,
                             a.val_masks, a.recipe, a.loss, a.augment, a.val_split, in->n_train,
                             in->n_val, a.batch, in->tile, in->out_h, a.seed,
                             unet_ctx_threads(ctx), in->total, in->per_epoch,
                             a.resume ? in->first_step : -1, m, &o.optim, {0}};
    if (writer && !report_run_begin(&run, a.report)) goto done;
    cli_progress_init(&view.prog);
    double t0 = cli_now();
    s = unet_trainer_run(ctx, tr, on_event, &view);
    cli_progress_done(&view.prog);
    /* These endings come to every rank at the same step; rank 0 tells them. */
    if (s == UNET_STATUS_OK || s == UNET_STATUS_INTERRUPTED || in->diverged) {
        dist_agreed_end();
        if (!writer) cli_silence();
    }
    rc = ending(ctx, s, &view, a.out, last_path, resume_path, lp, t0);
    if (writer && dist_size() > 1)
        cli_note("gradient allreduce: %.2f s of %.2f s (%.1f%%), %d ranks", dist_sum_seconds(),
                 cli_now() - t0, 100.0 * dist_sum_seconds() / (cli_now() - t0), dist_size());
    if (writer && report_run_end(&run, rc, in->step, a.report) && rc == 0) rc = CLI_EXIT_FAIL;
done:
    if (view.log) fclose(view.log);
    unet_trainer_free(tr);
    unet_dataset_free(train.ds), unet_dataset_free(vset.ds), unet_dataset_free(held);
    free(train.file), free(vset.file);
    cli_unlock(lock_fd, lock_path);
    free(last_path), free(resume_path), free(log_path), free(lock_path), free(run_path);
    unet_model_free(m);
    unet_ctx_free(ctx);
    return rc;
}
