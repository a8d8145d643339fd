/* train_setup.h — unet train's options and data, before the training loop (train_setup.c):
 * the recipe and the default recipe's choice from the masks, the options to a unet_train_opts,
 * the folders into datasets and the held-back validation set.  cmd_train.c is the flow. */
#ifndef UNET_CLI_TRAIN_SETUP_H
#define UNET_CLI_TRAIN_SETUP_H

#include "cli/cli.h"

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

/* A set of images being loaded, and the file each came from (pages of a stack share it). */
struct loaded {
    unet_dataset *ds;
    int          *file;
    int           n, cap;
};

/* --recipe paper-sgd's learning rate for the loss summed over the output tile
 * (docs/training.md, "The paper's SGD", has the measurements). */
#define PAPER_SGD_LR_TEXT "1e-7"

/* --recipe's settings into a (what it leaves unset). */
void train_apply_recipe(struct args *a);
/* The default recipe's choice from the masks (docs/training.md, "The default recipe");
 * false with the message printed when the library fails (out of memory). */
bool train_plan_from_masks(unet_ctx *ctx, struct args *a);
/* The trainer's options from a; false with the message printed on a usage error. */
bool train_opts(unet_ctx *ctx, const struct args *a, unet_train_opts *o);
/* Every image of dir (each page of a stack) with its mask from masks into set. */
bool train_load_pairs(unet_ctx *ctx, const struct cli_input *in, const char *dir,
                      const char *masks, const unet_target_opts *to, int *channels,
                      struct loaded *set);
/* Whether some target of ds is a class other than background; false for NULL. */
bool train_has_foreground(const unet_dataset *ds);
/* --val-split without --val-images: the held-back images into *val, with a note. */
bool train_hold_back(unet_ctx *ctx, const struct args *a, struct loaded *set,
                     unet_dataset **val);

#endif
