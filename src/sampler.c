/* sampler.c — batches of random, augmented crops from a dataset, prepared ahead by worker
 * threads, reproducible from (seed, batch index) alone.
 *
 * Randomness is counter-based: sample j of batch k draws everything (image, crop position,
 * dihedral element, rotation, shift, gray values, elastic lattice) from its own xoshiro stream
 * seeded with a hash of (seed, k, j).  No state carries from one batch to the next, so batch k is
 * the same whichever thread makes it, in whatever order, with any number of workers, and seek(k)
 * needs no replay.  The draws happen in a fixed order whatever the recipe (the elastic lattice
 * last), so turning gray values on does not move the crops.  Because sample j needs nothing
 * but (seed, k, j), a shard (samples first .. first + count - 1 of every batch) is exactly a
 * slice of the whole batch: a data-parallel process makes its share of the single-process
 * batch without making the rest (unet_sampler_shard).
 *
 * Threads: `workers` pthreads fill a ring of workers + 2 batch slots.  A worker claims the next
 * batch number under the mutex when its slot (k mod slots) is empty and k is less than `slots`
 * ahead of the caller, makes it outside the lock into the slot's own buffers, and marks it ready.
 * unet_sampler_next waits for slot (pos mod slots) to hold batch pos, copies it out and empties
 * the slot.  Each slot is written only by the worker that claimed it (state WORKING) and read only
 * by the caller once it is READY; the mutex orders the two.  seek bumps a generation number and
 * empties the ready slots; a worker still busy with a batch of the old generation drops it when
 * done (the slot stays WORKING until then, so no one else writes it meanwhile).  Workers never
 * fail: everything is allocated in unet_sampler_create.  Rejected: OpenMP tasks (the training
 * step's own parallel regions would share the pool and the ordering would need the same
 * bookkeeping); one worker per sample of a batch (the paper's batch is 1).
 */
#include "augment.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_WORKERS 64
#define MAX_WINDOW  65536
#define PI          3.14159265358979323846

enum { SLOT_EMPTY = 0, SLOT_WORKING, SLOT_READY };

struct slot {
    float    *x;        /* (batch, C, in_h, in_w) */
    int32_t  *target;   /* (batch, out_h, out_w) */
    float    *weight;   /* (batch, out_h, out_w) or NULL */
    long      batch;    /* the batch held or being made */
    unsigned  gen;      /* the generation it was claimed in */
    int       state;
};

/* Per-thread buffers for one sample. */
struct scratch {
    struct unet__arena block;  /* the buffers below, one allocation */
    float *sy, *sx;     /* (in_h, in_w) source coordinates */
    float *lattice;     /* unet__aug_coords_scratch floats */
    float *disp;        /* (2, grid, grid) elastic displacements */
};

struct worker {
    struct unet_sampler *s;
    pthread_t            thread;
    struct scratch       sc;
};

/* Everything the workers and the caller share, behind the mutex. */
struct shared {
    pthread_mutex_t mu;
    pthread_cond_t  ready;     /* a slot became READY */
    pthread_cond_t  space;     /* a slot became EMPTY, pos moved or stop was set */
    long            pos;       /* next batch handed to the caller */
    long            next_make; /* next batch a worker claims */
    unsigned        gen;
    bool            stop;
    double          work_s, wait_s;
    int             first, count;  /* the samples of each batch made (unet_sampler_shard) */
};

struct unet_sampler {
    /* Fixed after create; read by every thread. */
    struct unet__item *items;   /* a copy of the dataset's table (the pixels stay in the set) */
    int                n_items, channels;
    bool               has_weight;
    int                batch, in_h, in_w, out_h, out_w;
    unet_augment       aug;
    uint64_t           seed;
    size_t             x_floats, map_floats;   /* per batch */

    int                workers, n_slots, started;
    struct slot       *slots;
    struct worker     *threads;
    struct scratch     sync;                   /* workers == 0 */
    struct shared     *sh;
    bool               sh_init;
};

double unet__seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- one sample ---- */

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* The stream of sample j of batch k: a hash of (seed, k, j), splitmix64's finaliser per word. */
static uint64_t sample_seed(uint64_t seed, long k, int j) {
    uint64_t h = mix64(seed + 0x9e3779b97f4a7c15ULL);
    h = mix64(h ^ ((uint64_t)k * 0xd1b54a32d192ed03ULL + 0x8cb92ba72f3d8dd7ULL));
    return mix64(h ^ ((uint64_t)j * 0xaef17502108ef2d9ULL + 0x2545f4914f6cdd1dULL));
}

/* First row (or column) of a window of `size` in an image of n: uniform among the positions
 * inside the image, or centred (rounded towards the top/left) when it does not fit. */
static long window_origin(struct unet__rng *r, int n, int size) {
    if (size <= n) return (long)unet__rng_below(r, (uint64_t)(n - size) + 1);
    return -(long)((size - n + 1) / 2);
}

static float symmetric(struct unet__rng *r, float max) {
    return (2.0f * unet__rng_uniform(r) - 1.0f) * max;
}

/* Makes sample j of batch k into x (C, in_h, in_w), t (out_h, out_w) and wt (out_h, out_w; NULL
 * to skip). */
static void make_sample(const struct unet_sampler *s, long k, int j, float *x, int32_t *t,
                        float *wt, struct scratch *sc) {
    const unet_augment *a = &s->aug;
    struct unet__rng r;
    unet__rng_seed(&r, sample_seed(s->seed, k, j));

    const struct unet__item *it = &s->items[unet__rng_below(&r, (uint64_t)s->n_items)];
    const uint64_t bits = unet__rng_u64(&r);
    const int dihedral = a->flips ? (int)(bits >> 61) : 0;
    /* The output window's extent in the image: transposed windows swap it. */
    const bool swap = dihedral & UNET__AUG_TRANSPOSE;
    const int sh = swap ? s->out_w : s->out_h, sw = swap ? s->out_h : s->out_w;
    const long oy = window_origin(&r, it->h, sh);
    const long ox = window_origin(&r, it->w, sw);
    const float angle = symmetric(&r, a->rotate);
    const float shift_y = symmetric(&r, a->shift);
    const float shift_x = symmetric(&r, a->shift);
    const float brightness = symmetric(&r, a->brightness);
    const float contrast = 1.0f + symmetric(&r, a->contrast);
    const float gamma = 1.0f + symmetric(&r, a->gamma);

    struct unet__aug_geom g = {0};
    g.in_h = s->in_h;
    g.in_w = s->in_w;
    g.out_h = s->out_h;
    g.out_w = s->out_w;
    g.dihedral = dihedral;
    g.cy = (double)oy + 0.5 * (sh - 1) + shift_y;
    g.cx = (double)ox + 0.5 * (sw - 1) + shift_x;
    g.angle = angle * (PI / 180.0);
    if (a->elastic) {
        const int n = 2 * a->elastic_grid * a->elastic_grid;
        for (int i = 0; i < n; i++)
            sc->disp[i] = (float)(a->elastic_sigma * unet__rng_normal(&r));
        g.grid = a->elastic_grid;
        g.disp = sc->disp;
    }
    unet__aug_coords(&g, sc->sy, sc->sx, sc->lattice);

    const size_t stride = (size_t)s->in_w;
    const size_t off =
        (size_t)((s->in_h - s->out_h) / 2) * stride + (size_t)((s->in_w - s->out_w) / 2);
    unet__aug_bicubic(x, it->image, s->channels, it->h, it->w, sc->sy, sc->sx, s->in_h, s->in_w,
                      stride);
    unet__aug_nearest(t, it->target, it->h, it->w, sc->sy + off, sc->sx + off, s->out_h,
                      s->out_w, stride);
    if (wt && it->weight)
        unet__aug_bilinear(wt, it->weight, it->h, it->w, sc->sy + off, sc->sx + off, s->out_h,
                           s->out_w, stride);
    unet__aug_gray(x, s->channels, (size_t)s->in_h * s->in_w, brightness, contrast, gamma);
}

/* Samples first .. first + count - 1 of batch k, packed from the start of x, t and wt. */
static void make_batch(const struct unet_sampler *s, long k, int first, int count, float *x,
                       int32_t *t, float *wt, struct scratch *sc) {
    const size_t xs = s->x_floats / (size_t)s->batch, ms = s->map_floats / (size_t)s->batch;
    for (int j = 0; j < count; j++)
        make_sample(s, k, first + j, x + (size_t)j * xs, t + (size_t)j * ms,
                    wt ? wt + (size_t)j * ms : NULL, sc);
}

/* ---- workers ---- */

static void *worker_main(void *arg) {
    struct worker *wk = arg;
    struct unet_sampler *s = wk->s;
    struct shared *sh = s->sh;
    pthread_mutex_lock(&sh->mu);
    for (;;) {
        struct slot *sl = &s->slots[sh->next_make % s->n_slots];
        while (!sh->stop && !(sh->next_make < sh->pos + s->n_slots && sl->state == SLOT_EMPTY)) {
            pthread_cond_wait(&sh->space, &sh->mu);
            sl = &s->slots[sh->next_make % s->n_slots];
        }
        if (sh->stop) break;
        const long k = sh->next_make++;
        const unsigned gen = sh->gen;
        const int first = sh->first, count = sh->count;
        sl->state = SLOT_WORKING;
        sl->batch = k;
        sl->gen = gen;
        pthread_mutex_unlock(&sh->mu);

        const double t0 = unet__seconds();
        make_batch(s, k, first, count, sl->x, sl->target, sl->weight, &wk->sc);
        const double dt = unet__seconds() - t0;

        pthread_mutex_lock(&sh->mu);
        sh->work_s += dt;
        if (gen == sh->gen) {
            sl->state = SLOT_READY;
            pthread_cond_broadcast(&sh->ready);
        } else {
            sl->state = SLOT_EMPTY;     /* made before a seek: nobody wants it */
            pthread_cond_broadcast(&sh->space);
        }
    }
    pthread_mutex_unlock(&sh->mu);
    return NULL;
}

/* ---- create / free ---- */

static void scratch_free(struct scratch *sc) {
    unet__arena_deinit(&sc->block);
    memset(sc, 0, sizeof *sc);
}

static bool scratch_init(struct scratch *sc, const struct unet_sampler *s) {
    const size_t n = (size_t)s->in_h * s->in_w;   /* <= MAX_WINDOW^2: no overflow */
    const int G = s->aug.elastic ? s->aug.elastic_grid : 0;
    unet__arena_init(&sc->block);
    for (int pass = 0; pass < 2; pass++) {  /* count, allocate once, then hand out */
        sc->sy = unet__arena_floats(&sc->block, n);
        sc->sx = unet__arena_floats(&sc->block, n);
        const size_t lattice = G ? unet__aug_coords_scratch(s->in_w, G) : 0;
        sc->lattice = G ? unet__arena_floats(&sc->block, lattice) : NULL;
        sc->disp = G ? unet__arena_floats(&sc->block, 2 * (size_t)G * G) : NULL;
        if (pass == 0 && unet__arena_commit(NULL, &sc->block, "sampler scratch") != UNET_STATUS_OK)
            return false;
    }
    return true;
}

void unet_sampler_free(unet_sampler *s) {
    if (!s) return;
    if (s->started > 0) {
        pthread_mutex_lock(&s->sh->mu);
        s->sh->stop = true;
        pthread_cond_broadcast(&s->sh->space);
        pthread_cond_broadcast(&s->sh->ready);
        pthread_mutex_unlock(&s->sh->mu);
        for (int i = 0; i < s->started; i++) pthread_join(s->threads[i].thread, NULL);
    }
    if (s->threads)
        for (int i = 0; i < s->workers; i++) scratch_free(&s->threads[i].sc);
    free(s->threads);
    if (s->slots)
        for (int i = 0; i < s->n_slots; i++) {
            unet__free(s->slots[i].x);
            unet__free(s->slots[i].target);
            unet__free(s->slots[i].weight);
        }
    free(s->slots);
    scratch_free(&s->sync);
    if (s->sh_init) {
        pthread_cond_destroy(&s->sh->space);
        pthread_cond_destroy(&s->sh->ready);
        pthread_mutex_destroy(&s->sh->mu);
    }
    free(s->sh);
    free(s->items);
    free(s);
}

static unet_status check_args(unet_ctx *ctx, const unet_dataset *ds, int batch, int in_h,
                              int in_w, int out_h, int out_w, int workers) {
    if (!ds) return unet__fail(ctx, UNET_STATUS_ARG, "sampler: ds must not be NULL");
    if (ds->count < 1)
        return unet__fail(ctx, UNET_STATUS_ARG, "sampler: the dataset has no images");
    if (batch < 1)
        return unet__fail(ctx, UNET_STATUS_ARG, "sampler: batch must be >= 1, got %d", batch);
    if (in_h < 1 || in_w < 1 || in_h > MAX_WINDOW || in_w > MAX_WINDOW)
        return unet__fail(ctx, UNET_STATUS_ARG, "sampler: input window %dx%d (h x w) must be "
                                                "1..%d per side", in_h, in_w, MAX_WINDOW);
    if (out_h < 1 || out_w < 1 || out_h > in_h || out_w > in_w)
        return unet__fail(ctx, UNET_STATUS_ARG, "sampler: output window %dx%d (h x w) must be at "
                                                "least 1x1 and fit in the input window %dx%d",
                          out_h, out_w, in_h, in_w);
    if (workers < 0 || workers > MAX_WORKERS)
        return unet__fail(ctx, UNET_STATUS_ARG, "sampler: workers must be 0..%d, got %d",
                          MAX_WORKERS, workers);
    return UNET_STATUS_OK;
}

unet_status unet_sampler_create(unet_ctx *ctx, const unet_dataset *ds, int batch, int in_h,
                                int in_w, int out_h, int out_w, const unet_augment *aug,
                                uint64_t seed, int workers, unet_sampler **out) {
    if (!out) return unet__fail(ctx, UNET_STATUS_ARG, "sampler: out must not be NULL");
    *out = NULL;
    unet_status st = check_args(ctx, ds, batch, in_h, in_w, out_h, out_w, workers);
    if (st != UNET_STATUS_OK) return st;
    const unet_augment none = unet_augment_none();
    if (!aug) aug = &none;
    if ((st = unet__augment_check(ctx, aug)) != UNET_STATUS_OK) return st;

    size_t x_floats, map_floats;
    const size_t fx[] = {(size_t)batch, (size_t)ds->channels, (size_t)in_h, (size_t)in_w};
    const size_t fm[] = {(size_t)batch, (size_t)out_h, (size_t)out_w, sizeof(float)};
    size_t check;
    if (!unet__prod_size(fx, 4, &x_floats) || !unet__mul_size(x_floats, sizeof(float), &check) ||
        !unet__prod_size(fm, 3, &map_floats) || !unet__prod_size(fm, 4, &check))
        return unet__fail(ctx, UNET_STATUS_NOMEM, "sampler: a batch of %d x %d x %d x %d "
                                                  "overflows size_t", batch, ds->channels, in_h,
                          in_w);

    unet_sampler *s = calloc(1, sizeof *s);
    if (!s) return unet__fail(ctx, UNET_STATUS_NOMEM, "sampler: out of memory");
    s->n_items = ds->count;
    s->channels = ds->channels;
    s->has_weight = ds->has_weight == 1;
    s->batch = batch;
    s->in_h = in_h;
    s->in_w = in_w;
    s->out_h = out_h;
    s->out_w = out_w;
    s->aug = *aug;
    s->seed = seed;
    s->x_floats = x_floats;
    s->map_floats = map_floats;
    s->workers = workers;
    s->n_slots = workers ? workers + 2 : 0;
    s->items = malloc((size_t)ds->count * sizeof *s->items);
    s->sh = calloc(1, sizeof *s->sh);
    if (!s->items || !s->sh) goto nomem;
    s->sh->count = batch;
    memcpy(s->items, ds->items, (size_t)ds->count * sizeof *s->items);
    if (pthread_mutex_init(&s->sh->mu, NULL) != 0) goto nomem;
    if (pthread_cond_init(&s->sh->ready, NULL) != 0) {
        pthread_mutex_destroy(&s->sh->mu);
        goto nomem;
    }
    if (pthread_cond_init(&s->sh->space, NULL) != 0) {
        pthread_cond_destroy(&s->sh->ready);
        pthread_mutex_destroy(&s->sh->mu);
        goto nomem;
    }
    s->sh_init = true;

    if (workers == 0) {
        if (!scratch_init(&s->sync, s)) goto nomem;
        *out = s;
        return UNET_STATUS_OK;
    }

    s->slots = calloc((size_t)s->n_slots, sizeof *s->slots);
    s->threads = calloc((size_t)workers, sizeof *s->threads);
    if (!s->slots || !s->threads) goto nomem;
    for (int i = 0; i < s->n_slots; i++) {
        struct slot *sl = &s->slots[i];
        sl->x = unet__alloc(x_floats * sizeof(float));
        sl->target = unet__alloc(map_floats * sizeof(int32_t));
        sl->weight = s->has_weight ? unet__alloc(map_floats * sizeof(float)) : NULL;
        if (!sl->x || !sl->target || (s->has_weight && !sl->weight)) goto nomem;
    }
    for (int i = 0; i < workers; i++) {
        s->threads[i].s = s;
        if (!scratch_init(&s->threads[i].sc, s)) goto nomem;
    }
    for (int i = 0; i < workers; i++) {
        int rc = pthread_create(&s->threads[i].thread, NULL, worker_main, &s->threads[i]);
        if (rc != 0) {
            unet_sampler_free(s);
            return unet__fail(ctx, UNET_STATUS_NOMEM, "sampler: cannot start worker thread %d of "
                                                      "%d: %s", i + 1, workers,
                              rc == EAGAIN ? "out of resources (EAGAIN)" : "pthread_create failed");
        }
        s->started++;
    }
    *out = s;
    return UNET_STATUS_OK;

nomem:
    unet_sampler_free(s);
    return unet__fail(ctx, UNET_STATUS_NOMEM, "sampler: cannot allocate %d batch buffers of %zu "
                                              "floats and the scratch of %d threads",
                      workers ? workers + 2 : 0, x_floats, workers ? workers : 1);
}

/* ---- batches ---- */

unet_status unet_sampler_next(unet_ctx *ctx, unet_sampler *s, float *x, int32_t *target,
                              float *weight) {
    if (!s || !x || !target)
        return unet__fail(ctx, UNET_STATUS_ARG, "sampler_next: s, x and target must not be NULL");
    if (!s->has_weight) weight = NULL;
    struct shared *sh = s->sh;
    const double t0 = unet__seconds();
    const size_t xs = s->x_floats / (size_t)s->batch, ms = s->map_floats / (size_t)s->batch;
    const size_t nx = xs * (size_t)sh->count, nm = ms * (size_t)sh->count;
    if (s->workers == 0) {
        make_batch(s, sh->pos, sh->first, sh->count, x, target, weight, &s->sync);
        const double dt = unet__seconds() - t0;
        sh->work_s += dt;
        sh->wait_s += dt;
        sh->pos++;
        return UNET_STATUS_OK;
    }
    pthread_mutex_lock(&sh->mu);
    struct slot *sl = &s->slots[sh->pos % s->n_slots];
    while (!(sl->state == SLOT_READY && sl->batch == sh->pos))
        pthread_cond_wait(&sh->ready, &sh->mu);
    pthread_mutex_unlock(&sh->mu);

    /* The slot is READY: no worker touches it until it is EMPTY again. */
    memcpy(x, sl->x, nx * sizeof(float));
    memcpy(target, sl->target, nm * sizeof(int32_t));
    if (weight) memcpy(weight, sl->weight, nm * sizeof(float));

    pthread_mutex_lock(&sh->mu);
    sl->state = SLOT_EMPTY;
    sh->pos++;
    sh->wait_s += unet__seconds() - t0;
    pthread_cond_broadcast(&sh->space);
    pthread_mutex_unlock(&sh->mu);
    return UNET_STATUS_OK;
}

long unet_sampler_position(const unet_sampler *s) {
    /* pos is written only by the caller's thread (next, seek), so reading it here needs no lock. */
    return s ? s->sh->pos : 0;
}

/* Drops the batches made ahead (a worker busy with one drops it when done: its generation is
 * old) and restarts making at batch k with samples first .. first + count - 1. */
static void restart(struct unet_sampler *s, long k, int first, int count) {
    struct shared *sh = s->sh;
    pthread_mutex_lock(&sh->mu);
    sh->gen++;
    for (int i = 0; i < s->n_slots; i++)
        if (s->slots[i].state == SLOT_READY) s->slots[i].state = SLOT_EMPTY;
    sh->pos = k;
    sh->next_make = k;
    sh->first = first;
    sh->count = count;
    pthread_cond_broadcast(&sh->space);
    pthread_mutex_unlock(&sh->mu);
}

unet_status unet_sampler_seek(unet_ctx *ctx, unet_sampler *s, long k) {
    if (!s) return unet__fail(ctx, UNET_STATUS_ARG, "sampler_seek: s must not be NULL");
    if (k < 0 || k > LONG_MAX / 2)
        return unet__fail(ctx, UNET_STATUS_ARG, "sampler_seek: batch %ld out of range 0..%ld", k,
                          LONG_MAX / 2);
    restart(s, k, s->sh->first, s->sh->count);
    return UNET_STATUS_OK;
}

unet_status unet_sampler_shard(unet_ctx *ctx, unet_sampler *s, int first, int count) {
    if (!s) return unet__fail(ctx, UNET_STATUS_ARG, "sampler_shard: s must not be NULL");
    if (first < 0 || count < 1 || first > s->batch - count)
        return unet__fail(ctx, UNET_STATUS_ARG, "sampler_shard: samples %d..%d of a batch of %d "
                                                "(expected first >= 0, count >= 1, within the "
                                                "batch)", first, first + count - 1, s->batch);
    restart(s, s->sh->pos, first, count);
    return UNET_STATUS_OK;
}

void unet_sampler_times(const unet_sampler *s, double *work_seconds, double *wait_seconds) {
    double work = 0.0, wait = 0.0;
    if (s) {
        pthread_mutex_lock(&s->sh->mu);
        work = s->sh->work_s;
        wait = s->sh->wait_s;
        pthread_mutex_unlock(&s->sh->mu);
    }
    if (work_seconds) *work_seconds = work;
    if (wait_seconds) *wait_seconds = wait;
}
