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
 * (train_setup.c: the recipe, the library's loaders, unet_dataset_holdout), then the library's
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
#include "cli/train_setup.h"
#include "cli/dist.h"
#include "cli/report.h"

#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop_signal = 0;

static void on_signal(int sig) {
    stop_signal = sig;
}

static void on_sigpipe(int sig) {
    if (!stop_signal) stop_signal = sig;
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

/* " of N" steps (epochs), or nothing for a run that only its time budget ends. */
static const char *of_total(long total, char *buf, size_t size) {
    if (total == UNET_MAX_STEPS) return "";
    snprintf(buf, size, " of %ld", total);
    return buf;
}

/* What a time budget planned (unet_plan_run), said once; not the base of a model read from
 * --init. */
static void plan_note(const struct args *a, const unet_plan *p, bool has_model) {
    if (a->quiet || a->minutes <= 0) return;
    char text[160] = "";
    size_t n = 0;
    if ((p->planned & UNET_PLANNED_BASE) && !has_model)
        n += (size_t)snprintf(text + n, sizeof text - n, ", --base %d", p->base);
    if (p->planned & UNET_PLANNED_BATCH)
        n += (size_t)snprintf(text + n, sizeof text - n, ", --batch %d", p->batch);
    if ((p->planned & UNET_PLANNED_STEPS) && p->steps == UNET_MAX_STEPS)
        n += (size_t)snprintf(text + n, sizeof text - n, ", until the budget");
    if (n)
        cli_note("the time budget of %g minutes plans the run (docs/training.md): %s", a->minutes,
                 text + 2);
}

static const char *SYNOPSIS = "--images DIR --masks DIR --out MODEL.safetensors [options]";

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
    if (e->total == UNET_MAX_STEPS) /* only the time budget ends the run */
        cli_duration(fmax(0, 60 * r->a->minutes - e->elapsed), eta, sizeof eta);
    else
        cli_duration((double)(e->total - e->step) * r->a->batch / rate, eta, sizeof eta);
    if (r->a->quiet) return;
    char steps[32] = "", epochs[32] = "";   /* "/N", or nothing when the budget ends the run */
    if (e->total != UNET_MAX_STEPS) {
        snprintf(steps, sizeof steps, "/%ld", e->total);
        snprintf(epochs, sizeof epochs, "/%ld", (e->total + in->per_epoch - 1) / in->per_epoch);
    }
    if (r->prog.tty)
        cli_progress_line(&r->prog, "epoch %ld%s  step %ld%s  loss %.4f  %.2f img/s  ETA %s",
                          e->epoch, epochs, e->step, steps, e->loss, rate, eta);
    /* Not a terminal (a log file): a plain line every tenth of an epoch. */
    long every = in->per_epoch >= 20 ? in->per_epoch / 10 : in->per_epoch;
    if (!r->prog.tty && e->step % every == 0 && e->step % in->per_epoch != 0)
        fprintf(stderr, "step %ld%s  epoch %ld  loss %.4f  %.2f img/s  ETA %s\n", e->step, steps,
                e->epoch, e->loss, rate, eta);
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
    char of[32];
    if (s == UNET_STATUS_OK) {
        char took[32];
        cli_duration(cli_now() - t0, took, sizeof took);
        if (in->budget_over)
            fprintf(stderr, "unet: the time budget of %g minutes ended the run at step %ld%s\n",
                    a->minutes, in->step, of_total(in->total, of, sizeof of));
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
        cli_error("%s; stopped at step %ld%s", unet_ctx_errmsg(ctx), in->step,
                  of_total(in->total, of, sizeof of));
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
        cli_note("interrupted at step %ld%s; continue with the same command plus --resume %s",
                 in->step, of_total(in->total, of, sizeof of), resume_path);
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
    if (dist_size() == 1) return 0; /* nobody to agree with: no pass over the weights */
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
    struct args a = {.classes = 2, .steps = 0, .batch = 0, .tile = 0, .threads = 0, .lr = NAN,
                     .momentum = NAN, .weight_decay = NAN, .val_split = 0.1f, .dropout = NAN,
                     .save_every = 0, .separate_gap = 1, .clip = 0, .ema = 0, .minutes = 0};
    const double none = HUGE_VAL; /* no upper bound */
    const struct cli_option opts[] = {
        {"--images", CLI_STR, &a.images, "DIR",
         .help = "training images (.png .tif .npy; stacks: each page)"},
        {"--masks", CLI_STR, &a.masks, "DIR", .help = "masks with the same file names"},
        {"--out", CLI_STR, &a.out, "FILE",
         .help = "the model to write (.safetensors): the best by validation Dice (without "
                 "validation the last); STEM.last.safetensors beside it"},
        {"--val-images", CLI_STR, &a.val_images, "DIR",
         .help = "validation images (else --val-split)"},
        {"--val-masks", CLI_STR, &a.val_masks, "DIR", .help = "validation masks"},
        {"--val-split", CLI_FLOAT, &a.val_split, "F",
         .help = "fraction held out for validation (0.1; 1-3 images: a band of each; 0: none)"},
        {"--recipe", CLI_WORD, &a.recipe, "seed|paper|paper-sgd",
         .help = "seed, paper = --arch unet-paper --augment paper --loss wce --separate-cells "
                 "--batch 1 --optimizer adam --lr 5e-4; paper-sgd = the same with --optimizer "
                 "sgd --momentum 0.99 --loss-reduction sum --lr " PAPER_SGD_LR_TEXT},
        {"--arch", CLI_WORD, &a.arch, "unet|unet-paper|fcn32s|fcn16s|fcn8s",
         .help = "unet (default), unet-paper, fcn32s, fcn16s, fcn8s"},
        {"--base", CLI_INT, &a.base, "N",
         .help = "channels of the first level (64; 16 with --minutes)", .lo = 1, .hi = 4096},
        {"--depth", CLI_INT, &a.depth, "N", .help = "pooling steps", .def = "4"},
        {"--classes", CLI_INT, &a.classes, "K",
         .help = "classes (2; 1 = sigmoid; >2: mask values are ids)", .lo = 1, .hi = none},
        {"--bilinear", CLI_FLAG, &a.bilinear, NULL,
         .help = "bilinear upsampling instead of up-convolution"},
        {"--conv-bias", CLI_FLAG, &a.conv_bias, NULL, .help = "biases in the 3x3 convolutions"},
        {"--no-batchnorm", CLI_FLAG, &a.no_batchnorm, NULL,
         .help = "conv -> ReLU without BatchNorm"},
        {"--sync-bn", CLI_FLAG, &a.sync_bn, NULL,
         .help = "mpirun: batch-norm statistics over all ranks' tiles (docs/scaling.md)"},
        {"--valid", CLI_FLAG, &a.valid, NULL, .help = "unpadded (valid) 3x3 convolutions"},
        {"--dropout", CLI_FLOAT, &a.dropout, "P",
         .help = "dropout at the end of the contracting path", .lo = 0, .hi = none},
        {"--init", CLI_STR, &a.init, "MODEL", .help = "start from this model's weights"},
        {"--resume", CLI_STR, &a.resume, "FILE",
         .help = "continue an interrupted run (STEM.resume.safetensors)"},
        {"--epochs", CLI_INT, &a.epochs, "N",
         .help = "epochs (10; with --minutes and no --steps: until the budget)", .lo = 1,
         .hi = none},
        {"--steps", CLI_INT, &a.steps, "N", .help = "optimizer steps (instead of --epochs)"},
        {"--batch", CLI_INT, &a.batch, "B", .help = "tiles per step (4; 8 of at most 128x128 with --minutes; paper recipe 1)", .lo = 0,
         .hi = none},
        {"--tile", CLI_INT, &a.tile, "T",
         .help = "input tile side (256 or the images' largest side; rounded up to a valid size)",
         .lo = 0, .hi = none},
        {"--lr", CLI_DOUBLE, &a.lr, "LR", .help = "learning rate (adam 1e-3, sgd 1e-2)"},
        {"--optimizer", CLI_WORD, &a.optimizer, "adam|adamw|sgd",
         .help = "adam (default), adamw or sgd"},
        {"--momentum", CLI_DOUBLE, &a.momentum, "M", .help = "SGD momentum (0.9)"},
        {"--nesterov", CLI_FLAG, &a.nesterov, NULL, .help = "Nesterov momentum"},
        {"--weight-decay", CLI_DOUBLE, &a.weight_decay, "W", .help = "weight decay (0; adamw 0.01)"},
        {"--schedule", CLI_WORD, &a.schedule, "constant|cosine|poly|step",
         .help = "learning rate over the run: constant (default), cosine, poly ((1-t/T)^0.9), "
                 "step (x0.1 at --milestones)"},
        {"--warmup", CLI_INT, &a.warmup, "N",
         .help = "linear learning-rate warm-up over N steps", .def = "0"},
        {"--milestones", CLI_STR, &a.milestones, "F,F",
         .help = "--schedule step: fractions of the run (0.5,0.75)"},
        {"--clip", CLI_DOUBLE, &a.clip, "N",
         .help = "clip the gradients' global L2 norm to N (0: off)"},
        {"--ema", CLI_DOUBLE, &a.ema, "DECAY",
         .help = "validate and save a moving average of the weights (e.g. 0.999; 0: off)"},
        {"--loss", CLI_WORD, &a.loss, "ce|ce+dice|dice|wce",
         .help = "ce, ce+dice (default), dice, wce (weight map; the default with --separate-cells "
                 "for masks of cell ids)"},
        {"--loss-reduction", CLI_WORD, &a.loss_reduction, "mean|sum",
         .help = "mean (default) or sum over each output tile (ce, wce)"},
        {"--w0", CLI_FLOAT, &a.w0, "W", .help = "weight map border weight w0", .def = "10"},
        {"--sigma", CLI_FLOAT, &a.sigma, "S", .help = "weight map border width sigma in pixels",
         .def = "5"},
        {"--separate-cells", CLI_FLAG, &a.separate_cells, NULL,
         .help = "background between touching cells (border class with --classes 3)"},
        {"--augment", CLI_WORD, &a.augment, "flips|paper|none",
         .help = "flips (default: flips and 90-degree turns), paper (+ elastic, rotation, shift, "
                 "gray), none"},
        {"--no-augment", CLI_FLAG, &a.no_augment, NULL, .help = "same as --augment none"},
        {"--norm", CLI_WORD, &a.norm, "auto|percentile|max|none",
         .help = "auto (default), percentile, max, none"},
        {"--channel-axis", CLI_STR, &a.channel_axis, "AXIS", .help = CLI_CHANNEL_AXIS_HELP},
        {"--channels", CLI_STR, &a.channels, "SPEC",
         .help = CLI_CHANNELS_HELP " (saved with the model)"},
        {"--seed", CLI_INT, &a.seed, "S", .help = "random seed", .def = "1"},
        {"--precision", CLI_WORD, &a.precision, "fp32|bf16",
         .help = "fp32 (default) or bf16: bf16 products, float32 weights and optimizer "
                 "(AVX512_BF16)"},
        {"--threads", CLI_INT, &a.threads, "T", .help = "threads (all cores)"},
        {"--max-pixels", CLI_STR, &a.max_pixels, "N", .help = CLI_MAX_PIXELS_HELP},
        {"--max-memory", CLI_STR, &a.max_memory, "SIZE", .help = CLI_MAX_MEMORY_HELP},
        {"--minutes", CLI_DOUBLE, &a.minutes, "M",
         .help = "time budget: stop after M minutes with the best and last models (exit 0)"},
        {"--max-rollbacks", CLI_INT, &a.max_rollbacks, "N",
         .help = "divergence: roll back to the last good state up to N times, then stop with "
                 "exit 3", .def = "3"},
        {"--rollback-lr", CLI_DOUBLE, &a.rollback_lr, "F",
         .help = "learning-rate factor per rollback", .def = "0.5"},
        {"--snapshot-every", CLI_INT, &a.snapshot_every, "N",
         .help = "keep the last good state every N steps and at validation", .def = "100"},
        {"--no-guard", CLI_FLAG, &a.no_guard, NULL,
         .help = "no spike, blow-up or collapse detection (NaN and Inf still roll back)"},
        {"--save-every", CLI_INT, &a.save_every, "N",
         .help = "write the resumable checkpoint every N steps"},
        {"--save-minutes", CLI_FLOAT, &a.save_minutes, "M",
         .help = "... and at least every M minutes", .def = "10"},
        {"--log", CLI_STR, &a.log, "FILE", .help = "CSV log (STEM.log.csv)"},
        {"--report", CLI_STR, &a.report, "FILE",
         .help = "write an HTML report at the end (docs/report.md)"},
        {"--quiet", CLI_FLAG, &a.quiet, NULL, .help = "no progress lines"},
        {"--force", CLI_FLAG, &a.force, NULL,
         .help = "replace an existing --out or --log that unet did not write"},
    };
    const struct cli_command cmd = {"train", SYNOPSIS, opts, CLI_COUNT(opts)};
    if (!cli_options_parse(&cmd, argc, argv, NULL, 0, NULL)) return CLI_EXIT_USAGE;
    train_apply_recipe(&a);
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
    if (!a.optimizer) a.optimizer = "adam";
    /* The default recipe's sizes and length (unet_plan_run): what the command line and the
     * recipe left 0; the tile once the images are loaded. */
    unet_plan plan = {.base = a.base, .batch = a.batch, .epochs = a.epochs, .steps = a.steps,
                      .minutes = a.minutes};
    unet_plan_run(NULL, NULL, &plan);
    a.base = plan.base, a.batch = plan.batch, a.epochs = plan.epochs;
    struct cli_input input;
    if (!cli_input_parse(&input, a.channel_axis, a.channels, a.norm)) return CLI_EXIT_USAGE;
    uint64_t max_pixels = 0;
    if (a.max_pixels && !cli_parse_max_pixels(a.max_pixels, &max_pixels)) return CLI_EXIT_USAGE;
    uint64_t budget = cli_memory_default();
    if (a.max_memory && !cli_parse_bytes("--max-memory", a.max_memory, &budget))
        return CLI_EXIT_USAGE;
    if (!(a.val_split >= 0 && a.val_split < 1)) { /* [0, 1): not a table range */
        cli_error("train: 0 <= --val-split < 1");
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
    if (!train_plan_from_masks(ctx, &a)) {
        unet_ctx_free(ctx);
        return CLI_EXIT_FAIL;
    }
    if (!a.loss) a.loss = "ce+dice";
    unet_train_opts o;
    if (!train_opts(ctx, &a, &o)) {
        unet_ctx_free(ctx);
        return CLI_EXIT_USAGE;
    }
    o.steps = plan.steps;
    if (unet_train_check(ctx, &o) != UNET_STATUS_OK) {
        cli_error("train: %s (--schedule with --minutes alone)", unet_ctx_errmsg(ctx));
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
    if (!train_load_pairs(ctx, &input, a.images, a.masks, &to, &channels, &train)) goto done;
    if (!train_has_foreground(train.ds))
        cli_note("warning: every mask in %s is all background (0): the model can only learn to "
                 "predict background; check the masks (or --masks)", a.masks);
    to.weights = 0;     /* validation does not use weight maps */
    if (a.val_images) {
        if (!train_load_pairs(ctx, &input, a.val_images, a.val_masks, &to, &channels, &vset))
            goto done;
    } else if (a.val_split > 0) {
        if (!train_hold_back(ctx, &a, &train, &held)) goto done;
    } else if (!a.quiet) {
        cli_note("no validation (--val-split 0): %s will be the last model", a.out);
    }
    const unet_dataset *val = a.val_images ? vset.ds : held;
    if (!a.resume) {
        /* The tile of a U-Net with same-padded convolutions, from the images' sizes. */
        const unet_config *mc = m ? unet_model_config(m) : NULL;
        const bool same = mc ? mc->arch == UNET_ARCH_UNET && mc->padding != 0
                             : (!a.arch || strcmp(a.arch, "unet") == 0) && !a.valid;
        plan.tile = a.tile, plan.depth = same ? (mc ? mc->depth : a.depth) : 0;
        unet_plan_run(NULL, train.ds, &plan);
        a.tile = o.tile = plan.tile, a.batch = o.batch = plan.batch; /* the tile's batch */
        plan_note(&a, &plan, m != NULL);
    }
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
        char steps[32] = "steps", until[64] = "";
        if (in->total == UNET_MAX_STEPS)
            snprintf(until, sizeof until, " until the time budget of %g minutes", a.minutes);
        else
            snprintf(steps, sizeof steps, "%ld steps", in->total);
        fprintf(stderr,
                "unet: training %s (%s, %zu parameters) on %d images, validating on %d\n"
                "unet: %s of %d tiles %dx%d -> %dx%d (%ld per epoch)%s, %s lr %g (%s%s), "
                "loss %s%s, augment %s, %d threads\n",
                unet_arch_name(cfg->arch), shape, unet_model_param_count(m), in->n_train,
                in->n_val, steps, a.batch, in->tile, in->tile, in->out_h, in->out_w,
                in->per_epoch, until, a.optimizer, o.optim.lr, unet_schedule_name(o.schedule.kind),
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
