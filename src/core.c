/* core.c — the context, status strings, error messages, aligned allocation, the arena,
 * thread counts and the random number generator.
 *
 * The arena is planned by replay: a layer table is walked once with an empty arena to count
 * bytes, the block is allocated once, and the same walk hands out pointers.  Nothing in
 * forward or backward allocates.  (The alternative, one malloc per tensor, scatters tensors,
 * makes failure handling per tensor and leaks on error paths, as darknet shows.)
 */
#include "internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Big blocks are mapped (allocation below), except under AddressSanitizer, which checks only
 * malloc'd memory. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNET__ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define UNET__ASAN 1
#endif
#if defined(__linux__) && !defined(UNET__ASAN)
#define UNET__HAVE_MMAP 1
#include <pthread.h>
#include <sys/mman.h>
#endif

#define UNET_ALIGN 64

const char *unet_status_str(unet_status s) {
    switch (s) {
    case UNET_STATUS_OK:          return "ok";
    case UNET_STATUS_NOMEM:       return "out of memory";
    case UNET_STATUS_IO:          return "i/o error";
    case UNET_STATUS_FORMAT:      return "bad file format";
    case UNET_STATUS_SHAPE:       return "shape mismatch";
    case UNET_STATUS_ARG:         return "invalid argument";
    case UNET_STATUS_NUMERIC:     return "non-finite value";
    case UNET_STATUS_INTERRUPTED: return "interrupted";
    }
    return "unknown status";
}

unet_ctx *unet_ctx_create(void) {
    unet_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) return NULL;
    ctx->threads = unet__default_threads();
    ctx->max_pixels = (uint64_t)1 << 28;
    ctx->max_image_bytes = (uint64_t)1 << 32;
    return ctx;
}

void unet_ctx_free(unet_ctx *ctx) {
    free(ctx);
}

const char *unet_ctx_errmsg(const unet_ctx *ctx) {
    return ctx ? ctx->errmsg : "";
}

unet_status unet_ctx_set_threads(unet_ctx *ctx, int threads) {
    if (!ctx) return UNET_STATUS_ARG;
    if (threads < 1 || threads > 1024)
        return unet__fail(ctx, UNET_STATUS_ARG, "threads: expected 1..1024, got %d", threads);
    ctx->threads = threads;
    return UNET_STATUS_OK;
}

int unet_ctx_threads(const unet_ctx *ctx) {
    return unet__threads(ctx);
}

void unet_ctx_set_max_pixels(unet_ctx *ctx, uint64_t max_pixels) {
    if (ctx) ctx->max_pixels = max_pixels ? max_pixels : 1;
}

uint64_t unet_ctx_max_pixels(const unet_ctx *ctx) {
    return ctx ? ctx->max_pixels : (uint64_t)1 << 28;
}

void unet_ctx_set_max_image_bytes(unet_ctx *ctx, uint64_t bytes) {
    if (ctx) ctx->max_image_bytes = bytes ? bytes : 1;
}

uint64_t unet_ctx_max_image_bytes(const unet_ctx *ctx) {
    return ctx ? ctx->max_image_bytes : (uint64_t)1 << 32;
}

unet_status unet__fail(unet_ctx *ctx, unet_status s, const char *fmt, ...) {
    if (ctx) {
        /* Format into a local buffer first: callers often wrap the previous message
         * ("%s: %s", path, unet_ctx_errmsg(ctx)), which would otherwise be overwritten while
         * it is read. */
        char buf[sizeof ctx->errmsg];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        memcpy(ctx->errmsg, buf, sizeof buf);
    }
    return s;
}

bool unet__prod_size(const size_t *factors, int count, size_t *out) {
    size_t p = 1;
    for (int i = 0; i < count; i++)
        if (!unet__mul_size(p, factors[i], &p)) return false;
    *out = p;
    return true;
}

/* ---- allocation ----
 * Blocks of UNET__BIG_BYTES or more (parameters, moments, the activation arena, scratch) are
 * mapped directly: 2 MiB aligned and advised as transparent huge pages, so touching 124 MB of
 * weights takes ~60 page faults instead of ~30000, and they arrive zeroed from the kernel, so
 * unet__calloc need not write them.  Their sizes are kept in a small table that unet__free
 * looks up; smaller blocks come from aligned_alloc. */

#define UNET__BIG_BYTES ((size_t)4 << 20)
#define UNET__HUGE_PAGE ((size_t)2 << 20)

#ifdef UNET__HAVE_MMAP

static struct big_block {
    void  *p;
    size_t bytes;
} *big_blocks;
static int             n_big, cap_big;
static pthread_mutex_t big_lock = PTHREAD_MUTEX_INITIALIZER;

/* A zeroed mapping of bytes (a multiple of UNET__HUGE_PAGE) aligned to UNET__HUGE_PAGE, or NULL. */
static void *map_big(size_t bytes) {
    size_t span;
    if (!unet__add_size(bytes, UNET__HUGE_PAGE, &span)) return NULL;
    unsigned char *raw = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return NULL;
    uintptr_t start = ((uintptr_t)raw + UNET__HUGE_PAGE - 1) & ~(uintptr_t)(UNET__HUGE_PAGE - 1);
    unsigned char *p = (unsigned char *)start;
    size_t head = (size_t)(p - raw), tail = span - head - bytes;
    if (head) munmap(raw, head);
    if (tail) munmap(p + bytes, tail);
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, MADV_HUGEPAGE); /* advice only: without it the block still works */
#endif
    return p;
}

static bool big_register(void *p, size_t bytes) {
    pthread_mutex_lock(&big_lock);
    bool ok = true;
    if (n_big == cap_big) {
        int cap = cap_big ? 2 * cap_big : 32;
        struct big_block *nb = realloc(big_blocks, sizeof *nb * (size_t)cap);
        if (nb) big_blocks = nb, cap_big = cap;
        else ok = false;
    }
    if (ok) big_blocks[n_big++] = (struct big_block){p, bytes};
    pthread_mutex_unlock(&big_lock);
    return ok;
}

/* The size of big block p, removed from the table; 0 when p is not one. */
static size_t big_unregister(void *p) {
    size_t bytes = 0;
    pthread_mutex_lock(&big_lock);
    for (int i = n_big - 1; i >= 0; i--)
        if (big_blocks[i].p == p) {
            bytes = big_blocks[i].bytes;
            big_blocks[i] = big_blocks[--n_big];
            break;
        }
    pthread_mutex_unlock(&big_lock);
    return bytes;
}

/* A zeroed big block, or NULL (then the caller falls back to aligned_alloc). */
static void *alloc_big(size_t bytes) {
    size_t rounded;
    if (!unet__add_size(bytes, UNET__HUGE_PAGE - 1, &rounded)) return NULL;
    rounded &= ~(UNET__HUGE_PAGE - 1);
    void *p = map_big(rounded);
    if (p && !big_register(p, rounded)) {
        munmap(p, rounded);
        p = NULL;
    }
    return p;
}
#endif

static void *alloc(size_t bytes, bool *zeroed) {
    *zeroed = false;
    if (bytes == 0) return NULL;
#ifdef UNET__HAVE_MMAP
    if (bytes >= UNET__BIG_BYTES) {
        void *p = alloc_big(bytes);
        if (p) {
            *zeroed = true;
            return p;
        }
    }
#endif
    size_t rounded;
    if (!unet__add_size(bytes, UNET_ALIGN - 1, &rounded)) return NULL;
    rounded &= ~(size_t)(UNET_ALIGN - 1);
    return aligned_alloc(UNET_ALIGN, rounded);
}

void *unet__alloc(size_t bytes) {
    bool zeroed;
    return alloc(bytes, &zeroed);
}

void *unet__calloc(size_t count, size_t size) {
    size_t bytes;
    bool zeroed;
    if (!unet__mul_size(count, size, &bytes)) return NULL;
    void *p = alloc(bytes, &zeroed);
    if (p && !zeroed) memset(p, 0, bytes);
    return p;
}

void unet__free(void *p) {
    if (!p) return;
#ifdef UNET__HAVE_MMAP
    size_t bytes = big_unregister(p);
    if (bytes) {
        munmap(p, bytes);
        return;
    }
#endif
    free(p);
}

char *unet__strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* ---- arena ---- */

void unet__arena_init(struct unet__arena *a) {
    memset(a, 0, sizeof *a);
}

void *unet__arena_bytes(struct unet__arena *a, size_t bytes) {
    size_t start = a->used;
    size_t end;
    if (!unet__add_size(start, bytes, &end) || !unet__add_size(end, UNET_ALIGN - 1, &end)) {
        a->overflow = true;
        return NULL;
    }
    end &= ~(size_t)(UNET_ALIGN - 1);
    a->used = end;
    if (!a->base) {
        if (end > a->size) a->size = end;
        return NULL;
    }
    UNET_ASSERT(end <= a->size);
    return a->base + start;
}

float *unet__arena_floats(struct unet__arena *a, size_t count) {
    size_t bytes;
    if (!unet__mul_size(count, sizeof(float), &bytes)) {
        a->overflow = true;
        return NULL;
    }
    return unet__arena_bytes(a, bytes);
}

unet_status unet__arena_commit(unet_ctx *ctx, struct unet__arena *a, const char *name) {
    if (a->overflow)
        return unet__fail(ctx, UNET_STATUS_NOMEM, "%s: size overflows size_t", name);
    unet__free(a->base);
    a->base = NULL;
    if (a->size > 0) {
        a->base = unet__alloc(a->size);
        if (!a->base)
            return unet__fail(ctx, UNET_STATUS_NOMEM, "%s: cannot allocate %zu bytes (%.1f MiB)",
                              name, a->size, (double)a->size / (1024.0 * 1024.0));
#ifdef UNET__ASAN
        /* Not zeroed: every op writes its whole output before anything reads it.  Sanitizer
         * builds (make asan) fill the block with NaN bytes so that a read of memory nothing
         * wrote turns a test's numbers into NaN instead of passing on zeros. */
        memset(a->base, 0xff, a->size);
#endif
    }
    a->used = 0;
    return UNET_STATUS_OK;
}

void unet__arena_deinit(struct unet__arena *a) {
    unet__free(a->base);
    memset(a, 0, sizeof *a);
}

/* ---- threads ---- */

int unet__default_threads(void) {
    const char *env = getenv("UNET_THREADS");
    if (env && *env) {
        long n = strtol(env, NULL, 10);
        if (n >= 1 && n <= 1024) return (int)n;
    }
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int unet__threads(const unet_ctx *ctx) {
    return ctx ? ctx->threads : unet__default_threads();
}

void unet__use_threads(int n) {
#ifdef _OPENMP
    /* omp_set_num_threads sets the calling thread's ICV only, so two threads that use two
     * contexts with different counts do not disturb each other. */
    omp_set_num_threads(n < 1 ? 1 : n);
#else
    (void)n;
#endif
}

int unet__thread_slots(void) {
    static _Atomic int slots;
    int n = atomic_load(&slots);
    if (n == 0) {
#ifdef _OPENMP
        n = omp_get_num_procs();
#else
        n = 1;
#endif
        n = n < 1 ? 1 : n > 64 ? 64 : n;
        int expected = 0;
        if (!atomic_compare_exchange_strong(&slots, &expected, n)) n = expected;
    }
    return n;
}

/* ---- random numbers: xoshiro256** seeded by splitmix64 (Blackman & Vigna) ---- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void unet__rng_seed(struct unet__rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

uint64_t unet__rng_u64(struct unet__rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float unet__rng_uniform(struct unet__rng *r) {
    return (float)(unet__rng_u64(r) >> 40) * (1.0f / 16777216.0f);
}

double unet__rng_normal(struct unet__rng *r) {
    /* Box-Muller; u1 in (0, 1] so log never sees 0. */
    double u1 = ((double)(unet__rng_u64(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(unet__rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

uint64_t unet__rng_below(struct unet__rng *r, uint64_t n) {
    if (n <= 1) return 0;
    /* Rejection sampling removes the modulo bias. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = unet__rng_u64(r);
    while (x >= limit);
    return x % n;
}
