/* trainer.h — what the training loop's files share (trainer.c, trainer_io.c); never installed.
 *
 * trainer.c plans and runs the loop; trainer_io.c holds what the loop reads and writes:
 * validation, the models it saves with their `selected` metadata, the resumable checkpoint's
 * train.* metadata (both directions) and the log's rows.
 */
#ifndef UNET_TRAINER_H
#define UNET_TRAINER_H

#include "model.h"

#include <stdbool.h>

struct unet_trainer {
    unet_model         *m;
    const unet_dataset *train, *val;
    unet_train_opts     o;          /* as given, schedule.total and tile the run's */
    unet_sampler       *sampler;
    unet_guard         *guard;
    int                 n;          /* tiles per step in this process (the shard's) */
    float              *x, *wt;     /* (n, C, tile, tile), (n, out_h, out_w) */
    int32_t            *tg;         /* (n, out_h, out_w) */
    double              lr0;
    /* The epoch's loss sum and step count (a resumed run continues its checkpoint's). */
    double              epoch_loss;
    long                epoch_steps;
    unet_train_info     info;
    bool                ran;
};

/* The train.* metadata of a resumable checkpoint. */
struct unet__resume {
    long        step, sampler;
    double      best;
    int         seed, tile, batch;
    double      epoch_loss;     /* optional (older checkpoints lack them): 0 */
    long        epoch_steps;
    const char *guard;          /* the guard's statistics, or NULL; borrowed from the model */
};

/* Reads and checks m's train.* metadata; FORMAT naming name, the key and the value. */
unet_status unet__resume_read(unet_ctx *ctx, const unet_model *m, const char *name,
                              struct unet__resume *r);
/* Writes the model, its training state and the loop's position to o.resume_out. */
unet_status unet__trainer_save_resume(unet_ctx *ctx, const struct unet_trainer *t);
/* Writes the model that validation sees (the moving average when kept) to path with its
 * `selected` metadata, which predict and info print. */
unet_status unet__trainer_save_selected(unet_ctx *ctx, unet_model *m, const char *path,
                                        const char *selected);
/* " ema=0.999" when the saved and validated weights are the moving average, else "". */
const char *unet__ema_note(const unet_model *m, char *buf, size_t size);

/* Means over the validation images (unet_train_event's val_ fields); the class counts, over
 * the labeled pixels, are for the divergence guard's collapse test. */
struct unet__val_result {
    double  loss, dice, iou, pixel_error, rand_error;
    int64_t pred[UNET_MAX_CLASSES], truth[UNET_MAX_CLASSES], correct;
};
/* Validates the model that would be saved (the moving average when kept). */
unet_status unet__trainer_validate(unet_ctx *ctx, unet_model *m, const unet_dataset *val,
                                   struct unet__val_result *r);

/* train.c's checks of the optimizer and of the step options (reduction and clipping). */
unet_status unet__check_optim(unet_ctx *ctx, const unet_optim *o);
unet_status unet__check_step_opts(unet_ctx *ctx, const unet_step_opts *so);

#endif /* UNET_TRAINER_H */
