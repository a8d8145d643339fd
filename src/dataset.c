/* dataset.c — training images held in memory: image (C, H, W) float, target (H, W) int32 and an
 * optional weight map (H, W) float per item, each a private copy.
 *
 * Copies, not borrowed pointers: the caller can free or reuse its buffers right after
 * unet_dataset_add, and sampler workers read the set from other threads without depending on
 * the caller's lifetime rules.  Every item's buffers are allocated once and never move (only the
 * table of items grows), so a sampler can hold pointers to them while more images are added.
 *
 * Values are checked once on entry, where the message can name the image and the pixel, rather
 * than surfacing later as a NaN loss in the middle of training: images and weights must be
 * finite, weights >= 0, targets >= -1 (-1 = unlabeled; the upper bound, the class count, is the
 * model's business and checked by the loss).
 */
#include "augment.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CHANNELS 4096

/* map_bytes below sizes both the target and the weight maps. */
_Static_assert(sizeof(int32_t) == sizeof(float), "int32 and float maps share a size");

unet_status unet_dataset_create(unet_ctx *ctx, int channels, unet_dataset **out) {
    if (!out) return unet__fail(ctx, UNET_STATUS_ARG, "dataset_create: out must not be NULL");
    *out = NULL;
    if (channels < 1 || channels > MAX_CHANNELS)
        return unet__fail(ctx, UNET_STATUS_ARG, "dataset_create: channels must be 1..%d, got %d",
                          MAX_CHANNELS, channels);
    unet_dataset *ds = calloc(1, sizeof *ds);
    if (!ds) return unet__fail(ctx, UNET_STATUS_NOMEM, "dataset_create: out of memory");
    ds->channels = channels;
    ds->has_weight = -1;
    *out = ds;
    return UNET_STATUS_OK;
}

static void item_free(struct unet__item *it) {
    unet__free(it->image);
    unet__free(it->target);
    unet__free(it->weight);
    free(it->name);
    memset(it, 0, sizeof *it);
}

void unet_dataset_free(unet_dataset *ds) {
    if (!ds) return;
    for (int i = 0; i < ds->count; i++) item_free(&ds->items[i]);
    free(ds->items);
    free(ds);
}

int unet_dataset_count(const unet_dataset *ds) {
    return ds ? ds->count : 0;
}

unet_status unet_dataset_get(const unet_dataset *ds, int i, const float **image,
                             const int32_t **target, const float **weight, int *h, int *w,
                             const char **name) {
    if (!ds || i < 0 || i >= ds->count) return UNET_STATUS_ARG;
    const struct unet__item *it = &ds->items[i];
    if (image) *image = it->image;
    if (target) *target = it->target;
    if (weight) *weight = it->weight;
    if (h) *h = it->h;
    if (w) *w = it->w;
    if (name) *name = it->name;
    return UNET_STATUS_OK;
}

/* Checks the values of one image before anything is copied.  n = h * w. */
static unet_status check_values(unet_ctx *ctx, const unet_dataset *ds, const float *image,
                                const int32_t *target, const float *weight, int w, size_t n,
                                const char *name) {
    for (int c = 0; c < ds->channels; c++) {
        const float *p = image + (size_t)c * n;
        for (size_t i = 0; i < n; i++)
            if (!isfinite(p[i]))
                return unet__fail(ctx, UNET_STATUS_ARG,
                                  "dataset: image '%s': non-finite value %g at channel %d, pixel "
                                  "(y %zu, x %zu)", name, (double)p[i], c, i / (size_t)w,
                                  i % (size_t)w);
    }
    for (size_t i = 0; i < n; i++)
        if (target[i] < -1)
            return unet__fail(ctx, UNET_STATUS_ARG,
                              "dataset: image '%s': target %d at pixel (y %zu, x %zu); class ids "
                              "must be >= 0 (-1 = unlabeled)", name, (int)target[i],
                              i / (size_t)w, i % (size_t)w);
    if (weight)
        for (size_t i = 0; i < n; i++)
            if (!isfinite(weight[i]) || weight[i] < 0.0f)
                return unet__fail(ctx, UNET_STATUS_ARG,
                                  "dataset: image '%s': weight %g at pixel (y %zu, x %zu); "
                                  "weights must be finite and >= 0", name, (double)weight[i],
                                  i / (size_t)w, i % (size_t)w);
    return UNET_STATUS_OK;
}

static char *copy_name(const char *name, int index) {
    char buf[32];
    if (!name) {
        snprintf(buf, sizeof buf, "image %d", index);
        name = buf;
    }
    size_t len = strlen(name);
    char *s = malloc(len + 1);
    if (s) memcpy(s, name, len + 1);
    return s;
}

unet_status unet_dataset_add(unet_ctx *ctx, unet_dataset *ds, const float *image,
                             const int32_t *target, const float *weight, int h, int w,
                             const char *name) {
    if (!ds || !image || !target)
        return unet__fail(ctx, UNET_STATUS_ARG, "dataset_add: ds, image and target must not be "
                                                "NULL");
    char fallback[32];
    if (!name) {
        snprintf(fallback, sizeof fallback, "image %d", ds->count);
        name = fallback;
    }
    if (h < 1 || w < 1)
        return unet__fail(ctx, UNET_STATUS_ARG, "dataset: image '%s': size %dx%d (h x w) must be "
                                                "positive", name, h, w);
    if (ds->count == INT_MAX)
        return unet__fail(ctx, UNET_STATUS_ARG, "dataset: image '%s': the set is full", name);
    const int with_weight = weight != NULL;
    if (ds->has_weight >= 0 && ds->has_weight != with_weight)
        return unet__fail(ctx, UNET_STATUS_ARG,
                          "dataset: image '%s' %s a weight map but the images before it %s; "
                          "weights are for every image or none", name,
                          with_weight ? "has" : "has no", ds->has_weight ? "have one" : "do not");
    size_t n, image_bytes, map_bytes;
    const size_t f[] = {(size_t)ds->channels, (size_t)h, (size_t)w, sizeof(float)};
    if (!unet__prod_size(f + 1, 2, &n) || !unet__prod_size(f, 4, &image_bytes) ||
        !unet__mul_size(n, sizeof(float), &map_bytes))
        return unet__fail(ctx, UNET_STATUS_NOMEM, "dataset: image '%s': %dx%dx%d overflows size_t",
                          name, ds->channels, h, w);
    /* The caller's buffers are read before anything else: a size beyond the loaders' limit is
     * far more likely a swapped or garbage argument than a real image. */
    if ((uint64_t)n > unet_ctx_max_pixels(ctx))
        return unet__fail(ctx, UNET_STATUS_ARG, "dataset: image '%s': %dx%d (h x w) is over the "
                                                "limit of %llu pixels (unet_ctx_set_max_pixels)",
                          name, h, w, (unsigned long long)unet_ctx_max_pixels(ctx));
    unet_status st = check_values(ctx, ds, image, target, weight, w, n, name);
    if (st != UNET_STATUS_OK) return st;

    if (ds->count == ds->cap) {
        int cap = ds->cap < 16 ? 16 : (ds->cap > INT_MAX / 2 ? INT_MAX : ds->cap * 2);
        struct unet__item *items = realloc(ds->items, (size_t)cap * sizeof *items);
        if (!items)
            return unet__fail(ctx, UNET_STATUS_NOMEM, "dataset: image '%s': cannot grow the table "
                                                      "to %d images", name, cap);
        ds->items = items;
        ds->cap = cap;
    }
    struct unet__item it = {0};
    it.h = h;
    it.w = w;
    it.image = unet__alloc(image_bytes);
    it.target = unet__alloc(map_bytes);
    it.weight = with_weight ? unet__alloc(map_bytes) : NULL;
    it.name = copy_name(name, ds->count);
    if (!it.image || !it.target || (with_weight && !it.weight) || !it.name) {
        item_free(&it);
        return unet__fail(ctx, UNET_STATUS_NOMEM,
                          "dataset: image '%s': cannot allocate its copy (%zu + %zu bytes)", name,
                          image_bytes, map_bytes);
    }
    memcpy(it.image, image, image_bytes);
    memcpy(it.target, target, map_bytes);
    if (with_weight) memcpy(it.weight, weight, map_bytes);
    ds->items[ds->count++] = it;
    ds->has_weight = with_weight;
    return UNET_STATUS_OK;
}
