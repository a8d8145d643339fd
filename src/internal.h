/* internal.h — declarations shared inside the library (prefix unet__), never installed.
 *
 * The context, error reporting, overflow-checked size arithmetic, the arena, the OpenMP
 * helpers and the random numbers (core.c).  Each other module declares its functions in the
 * header beside it: gemm.h, cpu.h, model.h, ops/ops.h, the headers of io/.
 */
#ifndef UNET_INTERNAL_H
#define UNET_INTERNAL_H

#include "unet.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef _OPENMP
#include <omp.h>
#endif

struct unet_ctx {
    char     errmsg[1024];
    int      threads;
    uint64_t max_pixels;
    uint64_t max_image_bytes;
};

/* Records a formatted detail message on ctx (which may be NULL) and returns s, so failures
 * read `return unet__fail(ctx, UNET_STATUS_SHAPE, "x: expected ...", ...);`. */
unet_status unet__fail(unet_ctx *ctx, unet_status s, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Bugs in unet itself, never bad input: every input is checked (and reported as a status)
 * before it reaches an assertion.  Checked in every build unless NDEBUG is defined. */
#ifdef NDEBUG
#define UNET_ASSERT(x) ((void)0)
#else
#include <assert.h>
#define UNET_ASSERT(x) assert(x)
#endif

/* The first element of a[0..n) that is NaN or Inf (or negative when nonneg), or n.
 * x - x == 0 exactly when x is finite.  Whole blocks of 256 are tested without an early exit
 * (a loop the compiler vectorises: a load checks 124 MB of weights), then the first bad
 * element is looked for from the first block that has one. */
static inline size_t unet__first_nonfinite(const float *a, size_t n, bool nonneg) {
    size_t i = 0;
    for (; i + 256 <= n; i += 256) {
        int bad = 0;
        for (int j = 0; j < 256; j++)
            bad |= (a[i + j] - a[i + j] != 0.0f) | (nonneg & (a[i + j] < 0.0f));
        if (bad) break;
    }
    for (; i < n; i++)
        if (!(a[i] - a[i] == 0.0f) || (nonneg && a[i] < 0.0f)) return i;
    return n;
}

/* ---- overflow-checked size arithmetic: false on overflow, *out untouched ---- */
static inline bool unet__mul_size(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return false;
    *out = a * b;
    return true;
}
static inline bool unet__add_size(size_t a, size_t b, size_t *out) {
    if (b > SIZE_MAX - a) return false;
    *out = a + b;
    return true;
}
/* n0 * n1 * ... for `count` factors; false on overflow. */
bool unet__prod_size(const size_t *factors, int count, size_t *out);

/* Aligned allocation for tensors (64 bytes, one cache line / AVX-512 vector; blocks of 4 MiB
 * and more are mapped 2 MiB aligned as transparent huge pages, core.c).  unet__alloc returns
 * NULL on failure or when bytes == 0 is asked; its memory is not zeroed; free with
 * unet__free, never free(). */
void *unet__alloc(size_t bytes);
void *unet__calloc(size_t count, size_t size);
void unet__free(void *p);
/* A malloc'd copy of s (free with free()), NULL when out of memory. */
char *unet__strdup(const char *s);

/* ---- arena: one block per lifetime (parameters, gradients, activations, scratch) ----
 * Planned in two passes: reserve() with base == NULL only counts, then commit() allocates once
 * and the same reserve() calls hand out pointers.  No allocation happens after commit. */
struct unet__arena {
    unsigned char *base;
    size_t         size;   /* bytes planned (before commit) or owned (after) */
    size_t         used;
    bool           overflow;
};
void unet__arena_init(struct unet__arena *a);
/* Reserves count floats (64-byte aligned).  Before commit returns NULL and counts;
 * after commit returns the pointer (not zeroed: its user writes before reading). */
float *unet__arena_floats(struct unet__arena *a, size_t count);
void *unet__arena_bytes(struct unet__arena *a, size_t bytes);
/* Allocates the counted size and rewinds so the same sequence of reservations can be replayed.
 * name is used in the error message. */
unet_status unet__arena_commit(unet_ctx *ctx, struct unet__arena *a, const char *name);
void unet__arena_deinit(struct unet__arena *a);

/* ---- threads ---- */
int unet__threads(const unet_ctx *ctx);      /* ctx may be NULL: the default */
int unet__default_threads(void);
/* Sets the calling thread's OpenMP team size for the following parallel regions. */
void unet__use_threads(int n);
/* Per-thread buffer slots that kernels size their scratch for and cap their teams at: the
 * processors OpenMP reports at the first call (at most 64), fixed for the process's lifetime so
 * that a plan made earlier always has room for the team of a later call. */
int unet__thread_slots(void);

/* ---- random numbers: seeded, reproducible, per-object state (never global) ---- */
struct unet__rng {
    uint64_t s[4];
};
void unet__rng_seed(struct unet__rng *r, uint64_t seed);
uint64_t unet__rng_u64(struct unet__rng *r);
float unet__rng_uniform(struct unet__rng *r);          /* [0, 1) */
double unet__rng_normal(struct unet__rng *r);          /* N(0, 1), Box-Muller */
/* Uniform integer in [0, n). */
uint64_t unet__rng_below(struct unet__rng *r, uint64_t n);

/* ---- metrics and instances (metrics.c, watershed.c, cells.c) ---- */
/* An image size for label work: h, w > 0 (else "<fn>: size HxW (h x w) must be positive") and
 * h * w <= INT32_MAX (else "... exceed the int32 range"), both UNET_STATUS_ARG; *n = h * w. */
static inline unet_status unet__check_label_size(unet_ctx *ctx, const char *fn, int h, int w,
                                                 size_t *n) {
    if (h <= 0 || w <= 0)
        return unet__fail(ctx, UNET_STATUS_ARG, "%s: size %dx%d (h x w) must be positive", fn,
                          h, w);
    if (!unet__mul_size((size_t)h, (size_t)w, n) || *n > (size_t)INT32_MAX)
        return unet__fail(ctx, UNET_STATUS_ARG, "%s: %dx%d pixels exceed the int32 range", fn,
                          h, w);
    return UNET_STATUS_OK;
}
/* The checks a label-map entry point starts with: pointers false (one of the arguments named in
 * `names` is NULL) is "<fn>: <names> must not be NULL"; then unet__check_label_size. */
static inline unet_status unet__check_label_args(unet_ctx *ctx, const char *fn, bool pointers,
                                                 const char *names, int h, int w, size_t *n) {
    if (!pointers) return unet__fail(ctx, UNET_STATUS_ARG, "%s: %s must not be NULL", fn, names);
    return unet__check_label_size(ctx, fn, h, w, n);
}
/* The proposal of unet_vscores at threshold th, thinned as Fiji thins it: objects > 0,
 * watershed lines 0 (for tests). */
unet_status unet__thin_proposal(unet_ctx *ctx, const float *prob, int h, int w, double th,
                                int32_t *labels);
/* unet_watershed with the queue's minimum found by a linear scan, O(n^2): the definition. */
unet_status unet__watershed_ref(unet_ctx *ctx, const float *elevation, const int32_t *markers,
                                const unsigned char *mask, int h, int w, int32_t *labels);

#endif /* UNET_INTERNAL_H */
