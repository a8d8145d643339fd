/* cmd_train.c — unet train: a folder of images and masks to a trained model.
 *
 * Files written, all atomically (temporary file, fsync, rename):
 *   OUT                       the best model on the validation images (the last one without them)
 *   STEM.last.safetensors     the model after the latest epoch
 *   STEM.resume.safetensors   model + optimizer state + data position, for --resume
 *   STEM.log.csv              one row per step, validation columns at epoch ends
 * where STEM is OUT without ".safetensors".  An epoch is as many steps as it takes to draw about
 * as many output pixels as the training images hold.  SIGINT/SIGTERM finish the current step,
 * write the resumable checkpoint and exit 130/143; a NaN loss stops the run and leaves the
 * checkpoints of the last good step.  The same seed and thread count give the same losses, also
 * across an interruption and --resume.
 */
#include "cli/cli.h"
#include "cli/report.h"

#include <errno.h>
#include <glob.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct sample {
    char    *name;
    float   *image;     /* (c, h, w) normalised */
    int32_t *target;    /* (h, w) class ids */
    float   *weight;    /* (h, w) or NULL */
    int      h, w;
};

struct args {
    const char *images, *masks, *val_images, *val_masks, *out, *init, *resume, *log;
    const char *arch, *optimizer, *loss, *norm, *augment, *recipe, *max_pixels, *report;
    int         base, depth, classes, epochs, steps, batch, tile, seed, threads, save_every;
    int         separate_gap;
    double      lr, momentum, weight_decay;     /* NAN: the optimizer's default */
    float       val_split, dropout, w0, sigma, save_minutes;
    bool        bilinear, no_augment, conv_bias, no_batchnorm, valid, nesterov, separate_cells,
                quiet;
};

static volatile sig_atomic_t stop_signal = 0;

static void on_signal(int sig) {
    stop_signal = sig;
}

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
            struct sample x = {0};
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
            int32_t *labels = malloc(sizeof(int32_t) * P);
            x.target = malloc(sizeof(int32_t) * P);
            if (m.h != x.h || m.w != x.w || m.c != 1) {
                cli_error("%s is %dx%d but its mask %s is %dx%d%s", ip, x.w, x.h, mp, m.w, m.h,
                          m.c != 1 ? " with several channels" : "");
                ok = false;
            } else if (!labels || !x.target) {
                cli_error("out of memory loading %s", ip);
                ok = false;
            } else if ((st = unet_mask_to_classes(ctx, &m, a->classes, mp, x.target)) !=
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

/* ---- validation ---- */

struct val_result {
    double loss, dice, iou, pixel_error, rand_error;
};

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
        for (size_t p = 0; p < P; p++) truth[p] = v->target[p] < 0 ? 0 : v->target[p];
        unet_metrics mt;
        s = unet_evaluate(ctx, pred, truth, NULL, NULL, v->h, v->w, K < 2 ? 2 : K, &mt);
        free(prob), free(pred), free(truth);
        if (s != UNET_STATUS_OK) {
            cli_lib_error(ctx, s);
            return false;
        }
        r->dice += isnan(mt.dice[1]) ? 1.0 : mt.dice[1];
        r->iou += isnan(mt.iou[1]) ? 1.0 : mt.iou[1];
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
    if (strcmp(key, "train.best") == 0) {
        char *end;
        r->best = strtod(value, &end);
        if (end == value || *end || !isfinite(r->best)) goto bad;
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

static bool save_resume(unet_ctx *ctx, unet_model *m, const char *path, long step, long sampler,
                        double best, const struct args *a, int tile) {
    char v[6][32];
    snprintf(v[0], sizeof v[0], "%ld", step);
    snprintf(v[1], sizeof v[1], "%ld", sampler);
    snprintf(v[2], sizeof v[2], "%.17g", best);
    snprintf(v[3], sizeof v[3], "%d", a->seed);
    snprintf(v[4], sizeof v[4], "%d", tile);
    snprintf(v[5], sizeof v[5], "%d", a->batch);
    const char *meta[] = {"train.step", v[0], "train.sampler", v[1], "train.best", v[2],
                          "train.seed", v[3], "train.tile", v[4], "train.batch", v[5]};
    unet_status s = unet_model_save_training(ctx, m, path, meta, 6);
    if (s != UNET_STATUS_OK) {
        cli_lib_error(ctx, s);
        return false;
    }
    return true;
}

/* ---- the CSV log ---- */

static const char *LOG_HEADER = "step,epoch,loss,lr,val_loss,val_dice,val_iou,val_pixel_error,"
                                "val_rand_error,seconds\n";

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
        if (first && !keep) ok = fputs(LOG_HEADER, out) != EOF; /* a log without its header */
        first = false;
        if (keep && fputs(line, out) == EOF) ok = false;
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

static bool apply_recipe(struct args *a) {
    if (!a->recipe) return true;
    if (strcmp(a->recipe, "seed") == 0) return true;
    if (strcmp(a->recipe, "paper") != 0) {
        cli_error("--recipe: '%s' (expected seed or paper)", a->recipe);
        return false;
    }
    /* Ronneberger et al. 2015: valid convolutions without BatchNorm, elastic deformation,
     * the border-weighted loss with separated cells, batch 1.  The paper's optimizer, SGD with
     * momentum 0.99, was tuned for Caffe's summed loss; with unet's mean loss it oscillated on
     * ISBI 2012 (lr 0.005: validation Dice 0.86, 0.88, 0.79, 0.08 over 400 steps), while Adam
     * 5e-4 trained steadily (docs/results.md).  --optimizer sgd --momentum 0.99 gives the
     * paper's. */
    if (!a->arch) a->arch = "unet-paper";
    if (!a->augment) a->augment = "paper";
    if (!a->loss) a->loss = "wce";
    if (!a->optimizer) a->optimizer = "adam";
    if (isnan(a->lr) && strcmp(a->optimizer, "adam") == 0) a->lr = 5e-4;
    if (isnan(a->momentum) && strcmp(a->optimizer, "sgd") == 0) a->momentum = 0.99;
    if (a->batch < 1) a->batch = 1;
    a->separate_cells = true;
    return true;
}

int cmd_train(int argc, char **argv) {
    struct args a = {.base = 64, .depth = 4, .classes = 2, .epochs = 10, .steps = 0, .batch = 0,
                     .tile = 0, .seed = 1, .threads = 0, .lr = NAN, .momentum = NAN,
                     .weight_decay = NAN, .val_split = 0.1f, .dropout = NAN, .w0 = 10, .sigma = 5,
                     .save_every = 0, .save_minutes = 10, .separate_gap = 1};
    const struct cli_opt opts[] = {
        {"--images", CLI_STR, &a.images, "DIR", "training images (.png .tif .npy; stacks: each page)"},
        {"--masks", CLI_STR, &a.masks, "DIR", "masks with the same file names"},
        {"--out", CLI_STR, &a.out, "FILE", "the model to write (.safetensors)"},
        {"--val-images", CLI_STR, &a.val_images, "DIR", "validation images (else --val-split)"},
        {"--val-masks", CLI_STR, &a.val_masks, "DIR", "validation masks"},
        {"--val-split", CLI_FLOAT, &a.val_split, "F", "fraction of images held out (0.1)"},
        {"--recipe", CLI_STR, &a.recipe, "seed|paper", "presets: the paper's = --arch unet-paper "
                                                      "--augment paper --loss wce --separate-cells "
                                                      "--batch 1 --optimizer adam --lr 5e-4"},
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
        {"--loss", CLI_STR, &a.loss, "NAME", "ce, ce+dice (default), dice, wce (weight map)"},
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
        {"--save-every", CLI_INT, &a.save_every, "N", "write the resumable checkpoint every N steps"},
        {"--save-minutes", CLI_FLOAT, &a.save_minutes, "M", "... and at least every M minutes (10)"},
        {"--log", CLI_STR, &a.log, "FILE", "CSV log (STEM.log.csv)"},
        {"--report", CLI_STR, &a.report, "FILE", "write an HTML report at the end (docs/report.md)"},
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

    /* SIGINT/SIGTERM from here on: finish the current step, write the resumable checkpoint,
     * exit 128 + signal.  SA_RESETHAND: a second signal ends the process at once (the files on
     * disk are whole either way: every write is atomic). */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

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
    } else if (a.val_split > 0 && n_all >= 2) {
        /* A seeded shuffle picks the held-out images. */
        n_val = (int)ceil(a.val_split * n_all);
        if (n_val >= n_all) n_val = n_all - 1;
        uint64_t r = (uint64_t)a.seed * 0x9e3779b97f4a7c15ULL + 12345;
        for (int i = n_all - 1; i > 0; i--) {
            r = r * 6364136223846793005ULL + 1442695040888963407ULL;
            int j = (int)((r >> 33) % (uint64_t)(i + 1));
            struct sample t = all[i];
            all[i] = all[j];
            all[j] = t;
        }
        val = all + (n_all - n_val);
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
                "unet: %ld steps of %d tiles %dx%d -> %dx%d (%ld per epoch), %s lr %g, loss %s, "
                "augment %s, %d threads\n",
                unet_arch_name(cfg->arch), shape, unet_model_param_count(m), n_train, n_val, total, a.batch, tile, tile, out_h, out_w, per_epoch, a.optimizer,
                opt.lr, a.loss, a.augment, unet_ctx_threads(ctx));
        if (rs.have) fprintf(stderr, "unet: resuming at step %ld\n", step);
    }
    struct cli_progress prog;
    cli_progress_init(&prog);
    double t0 = cli_now(), last_save = t0, epoch_loss = 0;
    long epoch_steps = 0, first_step = step;
    /* The latest resumable checkpoint: the one resumed from, then each one written. */
    long saved_step = rs.have ? rs.step : -1;
    const char *saved_path = rs.have ? a.resume : NULL;
    if (stop_signal) {
        cli_note("interrupted before the first step; nothing new to save");
        rc = 128 + stop_signal;
        goto done;
    }
    /* STEM.run.json: the settings for unet report (docs/report.md). */
    struct report_run run = {argc, argv, a.out, lp, a.images, a.masks, a.val_images, a.val_masks,
                             a.recipe, a.loss, a.augment, a.val_split, n_train, n_val, a.batch,
                             tile, out_h, a.seed, unet_ctx_threads(ctx), total, per_epoch,
                             rs.have ? rs.step : -1, m, &opt, {0}};
    if (!report_run_begin(&run, a.report)) goto done;
    rc = 0;
    while (step < total) {
        s = unet_sampler_next(ctx, sampler, x, tg, wt);
        if (s != UNET_STATUS_OK) {
            cli_lib_error(ctx, s);
            rc = CLI_EXIT_FAIL;
            break;
        }
        double L;
        s = unet_train_step(ctx, m, &opt, loss, x, tg, wt, a.batch, tile, tile, &L);
        if (s == UNET_STATUS_NUMERIC) {
            cli_lib_error(ctx, s);
            if (saved_step >= 0)
                cli_note("stopped at step %ld; %s (step %ld) is intact: resume from it with a "
                         "lower --lr, or check the data", step + 1, saved_path, saved_step);
            else
                cli_note("stopped at step %ld, before any checkpoint was written; lower --lr or "
                         "check the data", step + 1);
            rc = CLI_EXIT_FAIL;
            break;
        }
        if (s != UNET_STATUS_OK) {
            cli_lib_error(ctx, s);
            rc = CLI_EXIT_FAIL;
            break;
        }
        step++;
        epoch_loss += L;
        epoch_steps++;
        long epoch = (step - 1) / per_epoch + 1;
        double elapsed = cli_now() - t0;
        double rate = (double)(step - first_step) * a.batch / elapsed;
        char eta[32];
        cli_duration((double)(total - step) * a.batch / rate, eta, sizeof eta);
        fprintf(log, "%ld,%ld,%.6f,%g,,,,,,%.1f\n", step, epoch, L, opt.lr, elapsed);
        if (!a.quiet && prog.tty)
            cli_progress_line(&prog, "epoch %ld/%ld  step %ld/%ld  loss %.4f  %.2f img/s  ETA %s",
                              epoch, (total + per_epoch - 1) / per_epoch, step, total, L, rate, eta);
        /* Not a terminal (a log file): a plain line every tenth of an epoch. */
        long every = per_epoch >= 20 ? per_epoch / 10 : per_epoch;
        if (!a.quiet && !prog.tty && step % every == 0 && step % per_epoch != 0)
            fprintf(stderr, "step %ld/%ld  epoch %ld  loss %.4f  %.2f img/s  ETA %s\n", step,
                    total, epoch, L, rate, eta);
        bool epoch_end = step % per_epoch == 0 || step == total;
        if (epoch_end) {
            struct val_result vr = {0};
            bool have_val = n_val > 0;
            if (have_val && !validate(ctx, m, val, n_val, cfg->classes, &vr)) {
                rc = CLI_EXIT_FAIL;
                break;
            }
            cli_progress_done(&prog);
            if (!a.quiet) {
                char took[32];
                if (have_val)
                    fprintf(stderr,
                            "epoch %ld  loss %.4f  val loss %.4f  dice %.4f  iou %.4f  pixel err "
                            "%.4f  rand err %.4f  (%s)\n",
                            epoch, epoch_loss / epoch_steps, vr.loss, vr.dice, vr.iou,
                            vr.pixel_error, vr.rand_error, cli_duration(elapsed, took, sizeof took));
                else
                    fprintf(stderr, "epoch %ld  loss %.4f  (%s)\n", epoch, epoch_loss / epoch_steps,
                            cli_duration(elapsed, took, sizeof took));
            }
            if (have_val)
                fprintf(log, "%ld,%ld,%.6f,%g,%.6f,%.6f,%.6f,%.6f,%.6f,%.1f\n", step, epoch,
                        epoch_loss / epoch_steps, opt.lr, vr.loss, vr.dice, vr.iou,
                        vr.pixel_error, vr.rand_error, elapsed);
            epoch_loss = 0;
            epoch_steps = 0;
            s = unet_model_save(ctx, m, last_path);
            if (s == UNET_STATUS_OK && (!have_val || vr.dice > best)) {
                if (have_val) best = vr.dice;
                s = unet_model_save(ctx, m, a.out);
            }
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
                             tile)) {
                cli_note("stopped at step %ld; %s", step,
                         saved_step >= 0 ? "the previous resumable checkpoint is untouched"
                                         : "no resumable checkpoint was written");
                rc = CLI_EXIT_FAIL;
                break;
            }
            saved_step = step;
            saved_path = resume_path;
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
    }
    cli_progress_done(&prog);
    if (rc == 0) {
        double w = 0, wait = 0;
        unet_sampler_times(sampler, &w, &wait);
        char took[32];
        fprintf(stderr, "unet: done in %s; wrote %s%s (data preparation waited %.1f s)\n",
                cli_duration(cli_now() - t0, took, sizeof took), a.out,
                n_val ? " (best on validation)" : "", wait);
    }
    if (report_run_end(&run, rc, step, a.report) && rc == 0) rc = CLI_EXIT_FAIL;
done:
    if (log) fclose(log);
    unet_sampler_free(sampler);
    unet_dataset_free(ds);
    if (a.val_images) samples_free(val, n_val);
    samples_free(all, n_all);
    free(x), free(tg), free(wt);
    free(stem), free(last_path), free(resume_path), free(log_path);
    unet_model_free(m);
    unet_ctx_free(ctx);
    return rc;
}
