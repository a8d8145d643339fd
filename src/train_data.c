/* train_data.c — training data as `unet train` makes it: images with targets (and weight maps)
 * from masks, the default recipe's choice from the masks, the held-back validation set cut from
 * a dataset, and the command line's names of losses, optimizers and augmentations.
 *
 * These were the CLI's until the training loop became a library call (trainer.c): the Python
 * package trains on numpy arrays or folders and must make the same training set and hold back
 * the same images as `unet train` does from files, so both call these.  The held-back images move from one
 * set to the other (pointer moves, no copy): a band is the only new buffer, and the image it is
 * cut from closes up in place.
 */
#include "augment.h"

#include <math.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- names ---- */

unet_status unet_loss_parse(unet_ctx *ctx, const char *name, unet_loss_kind *out) {
    static const char *names[] = {"ce", "ce+dice", "dice", "wce"};
    for (int i = 0; name && i < 4; i++)
        if (strcmp(name, names[i]) == 0) return *out = (unet_loss_kind)i, UNET_STATUS_OK;
    return unet__fail(ctx, UNET_STATUS_ARG, "loss: '%s' (expected ce, ce+dice, dice or wce)",
                      name ? name : "(null)");
}

unet_status unet_optim_parse(unet_ctx *ctx, const char *name, unet_optim *out) {
    static const struct {
        const char     *name;
        unet_optim_kind kind;
    } names[] = {{"adam", UNET_OPTIM_ADAM}, {"adamw", UNET_OPTIM_ADAMW}, {"sgd", UNET_OPTIM_SGD}};
    for (int i = 0; name && i < 3; i++)
        if (strcmp(name, names[i].name) == 0) {
            *out = unet_optim_default(names[i].kind);
            /* unet train's SGD has momentum (PyTorch's default is none). */
            if (names[i].kind == UNET_OPTIM_SGD) out->momentum = 0.9;
            return UNET_STATUS_OK;
        }
    return unet__fail(ctx, UNET_STATUS_ARG, "optimizer: '%s' (expected adam, adamw or sgd)",
                      name ? name : "(null)");
}

unet_status unet_augment_parse(unet_ctx *ctx, const char *name, unet_augment *out) {
    if (name && strcmp(name, "flips") == 0) *out = unet_augment_default();
    else if (name && strcmp(name, "paper") == 0) *out = unet_augment_paper();
    else if (name && strcmp(name, "none") == 0) *out = unet_augment_none();
    else
        return unet__fail(ctx, UNET_STATUS_ARG, "augment: '%s' (expected flips, paper or none)",
                          name ? name : "(null)");
    return UNET_STATUS_OK;
}

/* ---- targets ---- */

unet_target_opts unet_target_defaults(void) {
    unet_target_opts o = {.classes = 2, .separate_cells = 0, .gap = 1, .weights = 0, .w0 = 10,
                          .sigma = 5};
    return o;
}

unet_status unet_mask_to_target(unet_ctx *ctx, const unet_image *mask, const unet_target_opts *o,
                                const char *name, int32_t *target, float *weight) {
    if (!mask || !o || !target || (o->weights && !weight))
        return unet__fail(ctx, UNET_STATUS_ARG, "mask_to_target: NULL argument");
    if (o->gap < 1)
        return unet__fail(ctx, UNET_STATUS_ARG, "separate gap: expected >= 1, got %d", o->gap);
    const int h = mask->h, w = mask->w;
    /* classes 3 with separated cells: the mask says cell or not (an instance label image, ids
     * of any size); the separation makes the border class 2 below. */
    int mask_classes = o->separate_cells && o->classes == 3 ? 2 : o->classes;
    unet_status st = unet_mask_to_classes(ctx, mask, mask_classes, name, target);
    if (st != UNET_STATUS_OK) return st;
    const size_t P = (size_t)h * w;
    int32_t *labels = malloc(sizeof(int32_t) * (P ? P : 1));
    int32_t *sep = NULL;
    if (!labels) return unet__fail(ctx, UNET_STATUS_NOMEM, "%s: out of memory", name);
    int inst = 0;
    st = unet_mask_labels(ctx, mask, name, labels, &inst);
    if (st == UNET_STATUS_OK && (o->separate_cells || o->weights)) {
        if (!inst) {
            /* A binary mask: its connected components are the cells. */
            int count;
            for (size_t i = 0; i < P; i++) labels[i] = labels[i] != 0;
            st = unet_connected_components(ctx, labels, h, w, 1, 4, labels, &count);
        }
        /* Touching cells get a background strip between them (the paper's Fig. 3c): the
         * training target when asked for, and always for the weight map, whose border term
         * lives on background pixels between cells. */
        if (st == UNET_STATUS_OK) {
            sep = malloc(sizeof(int32_t) * P);
            st = sep ? unet_separate_cells(ctx, labels, h, w, o->gap, o->classes >= 3 ? 3 : 2, sep)
                     : unet__fail(ctx, UNET_STATUS_NOMEM, "%s: out of memory", name);
        }
        if (st == UNET_STATUS_OK) {
            if (o->separate_cells) memcpy(target, sep, sizeof(int32_t) * P);
            for (size_t i = 0; i < P; i++)
                if (sep[i] != 1) labels[i] = 0;
        }
        if (st == UNET_STATUS_OK && o->weights)
            st = unet_weightmap(ctx, labels, h, w, 1, o->w0, o->sigma, UNET_WC_BALANCE, weight);
    }
    free(sep);
    free(labels);
    return st;
}

/* ---- the default recipe's choice ---- */

static int cmp_i32(const void *a, const void *b) {
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* The number of distinct values among ids[0..n), sorting them. */
static long distinct(int32_t *ids, size_t n) {
    qsort(ids, n, sizeof *ids, cmp_i32);
    long d = 0;
    for (size_t i = 0; i < n; i++) d += i == 0 || ids[i] != ids[i - 1];
    return d;
}

/* A mask's cells and those of them that touch another cell (an 8-neighbour pixel holding
 * another non-zero id), added to *cells and *touching when the mask labels each cell with its
 * own id (unet_mask_labels' flag); nothing for a binary mask or one unet_mask_labels refuses
 * (its loading names the problem later). */
static unet_status count_touching(unet_ctx *ctx, const unet_image *mask, long *cells,
                                  long *touching) {
    if (!mask->data || mask->c != 1 || mask->h <= 0 || mask->w <= 0) return UNET_STATUS_OK;
    const int h = mask->h, w = mask->w;
    const size_t P = (size_t)h * (size_t)w;
    int32_t *labels = malloc(sizeof(int32_t) * P), *ids = malloc(sizeof(int32_t) * P);
    if (!labels || !ids) {
        free(labels), free(ids);
        return unet__fail(ctx, UNET_STATUS_NOMEM, "plan_from_masks: out of memory");
    }
    int inst = 0;
    if (unet_mask_labels(ctx, mask, NULL, labels, &inst) != UNET_STATUS_OK) inst = 0;
    if (inst) {
        size_t n = 0, t = 0;
        for (size_t i = 0; i < P; i++)
            if (labels[i]) ids[n++] = labels[i];
        *cells += distinct(ids, n);
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                const int32_t v = labels[(size_t)y * w + x];
                bool touch = false;
                for (int dy = -1; dy <= 1 && v && !touch; dy++)
                    for (int dx = -1; dx <= 1 && !touch; dx++) {
                        const int yy = y + dy, xx = x + dx;
                        if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
                        const int32_t u = labels[(size_t)yy * w + xx];
                        touch = u && u != v;
                    }
                if (touch) ids[t++] = v;
            }
        *touching += distinct(ids, t);
    }
    free(labels), free(ids);
    return UNET_STATUS_OK;
}

/* The rule: separate when the cells are labelled one by one and at least 2 in 5 of them touch
 * another (docs/training.md gives the evidence). */
static int plan_separate(long cells, long touching) {
    return cells > 0 && 5 * touching >= 2 * cells;
}

unet_status unet_plan_from_masks(unet_ctx *ctx, const unet_image *masks, int n, int classes,
                                 int *separate) {
    if (!separate || n < 0 || (n > 0 && !masks))
        return unet__fail(ctx, UNET_STATUS_ARG, "plan_from_masks: NULL argument or n < 0");
    *separate = 0;
    long cells = 0, touching = 0;
    unet_status s = UNET_STATUS_OK;
    for (int i = 0; classes == 2 && i < n && s == UNET_STATUS_OK; i++)
        s = count_touching(ctx, &masks[i], &cells, &touching);
    if (s == UNET_STATUS_OK) *separate = plan_separate(cells, touching);
    return s;
}

unet_status unet_plan_from_mask_files(unet_ctx *ctx, const char *const *paths, int n,
                                      int classes, int *separate) {
    if (!separate || n < 0 || (n > 0 && !paths))
        return unet__fail(ctx, UNET_STATUS_ARG, "plan_from_mask_files: NULL argument or n < 0");
    *separate = 0;
    long cells = 0, touching = 0;
    unet_status s = UNET_STATUS_OK;
    for (int i = 0; classes == 2 && i < n && s == UNET_STATUS_OK; i++) {
        unet_image m = {0};
        if (paths[i] && unet_image_load(ctx, paths[i], 0, &m) == UNET_STATUS_OK)
            s = count_touching(ctx, &m, &cells, &touching);
        unet_image_free(&m);
    }
    if (s == UNET_STATUS_OK) *separate = plan_separate(cells, touching);
    return s;
}

unet_status unet_plan_run(unet_ctx *ctx, const unet_dataset *train, unet_plan *p) {
    if (!p) return unet__fail(ctx, UNET_STATUS_ARG, "plan_run: NULL plan");
    const bool budget = p->minutes > 0;
    if (!p->base) p->base = budget ? 16 : 64, p->planned |= UNET_PLANNED_BASE;
    if (!p->batch) p->batch = budget ? 2 : 4, p->planned |= UNET_PLANNED_BATCH;
    if (!p->steps && !p->epochs) {
        p->planned |= UNET_PLANNED_STEPS;
        if (budget) p->steps = UNET_MAX_STEPS, p->epochs = 1;
    }
    if (!p->epochs) p->epochs = 10;
    const int n = train ? unet_dataset_count(train) : 0;
    if (!p->tile && p->depth > 0 && p->depth <= 16 && n > 0) {
        const int m = 1 << p->depth;
        int side = 0;
        for (int i = 0; i < n; i++) {
            int h = 0, w = 0;
            unet_dataset_get(train, i, NULL, NULL, NULL, &h, &w, NULL);
            side = h > side ? h : side, side = w > side ? w : side;
        }
        side = (side + m - 1) / m * m;
        /* A budget trains on 8 tiles of at most 128x128 a step, the pixels of 2 of 256x256
         * (docs/results.md, "Session 6"), when it planned the batch too. */
        const int cap = budget ? 128 : 256;
        p->tile = side < cap ? side : cap;
        p->planned |= UNET_PLANNED_TILE;
        if (budget && (p->planned & UNET_PLANNED_BATCH)) p->batch = 8;
    }
    return UNET_STATUS_OK;
}

/* ---- images with their masks ---- */

/* Training data must be finite: the first NaN or Inf of a float image (c, h, w) as `bad`,
 * naming what, where it is and how many there are. */
static unet_status check_finite(unet_ctx *ctx, const unet_image *image, const char *what,
                                unet_status bad) {
    if (image->dtype != UNET_DTYPE_F32) return UNET_STATUS_OK;
    const float *x = image->data;
    const size_t plane = (size_t)image->h * image->w, n = plane * (size_t)image->c;
    const size_t i = unet__first_nonfinite(x, n, false);
    if (i == n) return UNET_STATUS_OK;
    const size_t p = i % plane;
    return unet__fail(ctx, bad, "%s: non-finite value %s at channel %zu, pixel (y %zu, x %zu); "
                      "%zu of %zu values are NaN or infinite: training data must be finite "
                      "(fix or remove the image)", what,
                      isnan(x[i]) ? "nan" : x[i] > 0 ? "inf" : "-inf", i / plane,
                      p / (size_t)image->w, p % (size_t)image->w, unet_count_nonfinite(x, n), n);
}

/* image (c, h, w, as stored) normalised and mask made a target, added to ds as name; what and
 * mask_what name them in messages (file paths, or "images[3]"); bad is the status of a
 * non-finite value. */
static unet_status add_pair(unet_ctx *ctx, unet_dataset *ds, const unet_image *image,
                            const unet_image *mask, unet_norm norm, const unet_target_opts *o,
                            const char *name, const char *what, const char *mask_what,
                            unet_status bad) {
    if (image->c != ds->channels)
        return unet__fail(ctx, UNET_STATUS_FORMAT, "%s has %d channels, the other images %d", what,
                          image->c, ds->channels);
    if (mask->h != image->h || mask->w != image->w || mask->c != 1)
        return unet__fail(ctx, UNET_STATUS_FORMAT, "%s is %dx%d but its mask %s is %dx%d%s", what,
                          image->w, image->h, mask_what, mask->w, mask->h,
                          mask->c != 1 ? " with several channels" : "");
    unet_status s = check_finite(ctx, image, what, bad);
    if (s != UNET_STATUS_OK) return s;
    const size_t P = (size_t)image->h * image->w;
    float *x = malloc(sizeof(float) * P * (size_t)image->c);
    int32_t *target = malloc(sizeof(int32_t) * P);
    float *weight = o->weights ? malloc(sizeof(float) * P) : NULL;
    s = x && target && (weight || !o->weights)
            ? unet_image_to_float(ctx, image, norm, x)
            : unet__fail(ctx, UNET_STATUS_NOMEM, "out of memory loading %s", what);
    if (s == UNET_STATUS_OK) s = unet_mask_to_target(ctx, mask, o, mask_what, target, weight);
    if (s == UNET_STATUS_OK)
        s = unet_dataset_add(ctx, ds, x, target, weight, image->h, image->w, name);
    free(x), free(target), free(weight);
    return s;
}

unet_status unet_dataset_add_image(unet_ctx *ctx, unet_dataset *ds, const unet_image *image,
                                   const unet_image *mask, unet_norm norm,
                                   const unet_target_opts *o, const char *name) {
    if (!ds || !image || !mask || !o || !image->data || !mask->data)
        return unet__fail(ctx, UNET_STATUS_ARG, "dataset_add_image: NULL argument");
    char what[64], mask_what[80];
    if (!name) snprintf(what, sizeof what, "image %d", ds->count);
    snprintf(mask_what, sizeof mask_what, "the mask of %.60s", name ? name : what);
    return add_pair(ctx, ds, image, mask, norm, o, name ? name : what, name ? name : what,
                    mask_what, UNET_STATUS_ARG);
}

unet_status unet_dataset_add_file(unet_ctx *ctx, unet_dataset *ds, const char *image,
                                  const char *mask, int page, unet_norm norm,
                                  const unet_target_opts *o, const char *name) {
    return unet_dataset_add_file_with(ctx, ds, image, mask, page, NULL, NULL, norm, o, name);
}

unet_status unet_dataset_add_file_with(unet_ctx *ctx, unet_dataset *ds, const char *image,
                                       const char *mask, int page, const unet_image_opts *opts,
                                       const char *channels, unet_norm norm,
                                       const unet_target_opts *o, const char *name) {
    if (!ds || !image || !mask || !o)
        return unet__fail(ctx, UNET_STATUS_ARG, "dataset_add_file: NULL argument");
    unet_image_opts io = opts ? *opts : unet_image_defaults(), mo = io;
    io.palette_indices = 0;
    mo.palette_indices = 1;   /* a mask drawn with a colour table: its indices are the classes */
    unet_image img = {0}, m = {0};
    char what[4200];
    if (page > 0) snprintf(what, sizeof what, "%s (page %d)", image, page);
    else snprintf(what, sizeof what, "%s", image);
    unet_status s = unet_image_load_with(ctx, image, page, &io, &img);
    if (s == UNET_STATUS_OK) s = unet_image_select_channels(ctx, &img, channels, image);
    if (s == UNET_STATUS_OK) s = unet_image_load_with(ctx, mask, page, &mo, &m);
    if (s == UNET_STATUS_OK)
        s = add_pair(ctx, ds, &img, &m, norm, o, name ? name : image, what, mask,
                     UNET_STATUS_FORMAT);
    unet_image_free(&img);
    unet_image_free(&m);
    return s;
}

/* ---- the held-back set ---- */

/* The bottom `rows` rows of it as a new item (no weight map: validation does not use it). */
static bool cut_band(const struct unet__item *it, int channels, int rows, struct unet__item *band) {
    const size_t cut = (size_t)rows * it->w;
    *band = (struct unet__item){.h = rows, .w = it->w};
    band->image = unet__alloc(sizeof(float) * cut * (size_t)channels);
    band->target = unet__alloc(sizeof(int32_t) * cut);
    size_t n = strlen(it->name) + 48;
    band->name = malloc(n);
    if (!band->image || !band->target || !band->name) {
        unet__free(band->image), unet__free(band->target), free(band->name);
        return false;
    }
    const int keep_h = it->h - rows;
    const size_t keep = (size_t)keep_h * it->w;
    snprintf(band->name, n, "%s[rows %d-%d]", it->name, keep_h, it->h - 1);
    for (int c = 0; c < channels; c++)
        memcpy(band->image + (size_t)c * cut, it->image + (size_t)c * it->h * it->w + keep,
               sizeof(float) * cut);
    memcpy(band->target, it->target + keep, sizeof(int32_t) * cut);
    return true;
}

/* it keeps its top h - rows rows: the image planes close up (memmove: they overlap); the
 * target's and weight's first rows are already in place. */
static void keep_top(struct unet__item *it, int channels, int rows) {
    const size_t keep = (size_t)(it->h - rows) * it->w;
    for (int c = 1; c < channels; c++)
        memmove(it->image + (size_t)c * keep, it->image + (size_t)c * it->h * it->w,
                sizeof(float) * keep);
    it->h -= rows;
}

unet_status unet_dataset_holdout(unet_ctx *ctx, unet_dataset *ds, const int *file,
                                 double fraction, int min_rows, uint64_t seed, int *kind,
                                 unet_dataset **val) {
    if (!ds || !kind || !val) return unet__fail(ctx, UNET_STATUS_ARG, "dataset_holdout: NULL argument");
    *val = NULL;
    const int n = ds->count;
    int *buf = malloc(sizeof(int) * (size_t)n * 3 + 1);
    if (!buf) return unet__fail(ctx, UNET_STATUS_NOMEM, "dataset_holdout: out of memory");
    int *rows = buf, *held = buf + n, *band = buf + 2 * n;
    for (int i = 0; i < n; i++) rows[i] = ds->items[i].h;
    unet_status s = unet_holdout_plan(ctx, n, file, rows, fraction, min_rows, seed, kind, held, band);
    unet_dataset *v = NULL;
    if (s == UNET_STATUS_OK && *kind) s = unet_dataset_create(ctx, ds->channels, &v);
    int moved = 0;
    for (int i = 0; s == UNET_STATUS_OK && *kind && i < n; i++) moved += *kind == 1 ? held[i] : band[i] > 0;
    if (s == UNET_STATUS_OK && moved) {
        v->items = malloc(sizeof *v->items * (size_t)moved);
        v->cap = moved;
        if (!v->items) s = unet__fail(ctx, UNET_STATUS_NOMEM, "dataset_holdout: out of memory");
    }
    /* Bands first (the only allocations), so that a failure leaves ds as it was. */
    for (int i = 0; s == UNET_STATUS_OK && *kind == 2 && i < n; i++) {
        if (!band[i]) continue;
        if (!cut_band(&ds->items[i], ds->channels, band[i], &v->items[v->count]))
            s = unet__fail(ctx, UNET_STATUS_NOMEM, "dataset_holdout: out of memory for the band "
                                                   "of '%s'", ds->items[i].name);
        else
            v->count++;
    }
    if (s != UNET_STATUS_OK) {
        unet_dataset_free(v);
        free(buf);
        return s;
    }
    if (*kind == 2) {
        for (int i = 0; i < n; i++)
            if (band[i]) keep_top(&ds->items[i], ds->channels, band[i]);
        v->has_weight = 0;
    } else if (*kind == 1) {
        /* A stable partition: the kept images close up in their order, the held-back ones
         * move to v in theirs. */
        int k = 0;
        for (int i = 0; i < n; i++) {
            if (held[i]) v->items[v->count++] = ds->items[i];
            else ds->items[k++] = ds->items[i];
        }
        ds->count = k;
        v->has_weight = ds->has_weight;
    }
    free(buf);
    *val = v;
    return UNET_STATUS_OK;
}
