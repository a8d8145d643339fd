/* cpu.c — CPU features and the cap on them (cpu.h).
 *
 * The cap starts unset (-1) and is settled at the first query from UNET_CPU; an atomic, so
 * that threads querying at the same time (tests/test_threads.c) agree without a lock.
 */
#include "cpu.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#ifdef UNET__X86
#include <immintrin.h>
#endif

static const char *const level_names[UNET__CPU_LEVELS] = {"portable", "avx2", "avx512",
                                                           "avx512bf16"};

static _Atomic int cpu_cap = -1;

void unet__store_fence(void) {
#ifdef UNET__X86
    _mm_sfence();
#endif
}

const char *unet__cpu_level_name(enum unet__cpu_level level) {
    return (int)level >= 0 && (int)level < UNET__CPU_LEVELS ? level_names[level] : "?";
}

bool unet__cpu_level_parse(const char *name, enum unet__cpu_level *out) {
    for (int i = 0; name && i < UNET__CPU_LEVELS; i++)
        if (strcmp(name, level_names[i]) == 0) {
            *out = (enum unet__cpu_level)i;
            return true;
        }
    return false;
}

static int cap(void) {
    int c = atomic_load_explicit(&cpu_cap, memory_order_relaxed);
    if (c < 0) {
        enum unet__cpu_level level = UNET__CPU_TOP;
        unet__cpu_level_parse(getenv("UNET_CPU"), &level);
        int expected = -1;
        c = (int)level;
        if (!atomic_compare_exchange_strong(&cpu_cap, &expected, c)) c = expected;
    }
    return c;
}

bool unet__cpu_has(enum unet__cpu_level level) {
    if ((int)level > cap()) return false;
#ifdef UNET__X86
    __builtin_cpu_init();
    switch (level) {
    case UNET__CPU_PORTABLE: return true;
    case UNET__CPU_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case UNET__CPU_AVX512: return __builtin_cpu_supports("avx512f");
    case UNET__CPU_AVX512_BF16:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
    }
    return false;
#else
    return level == UNET__CPU_PORTABLE;
#endif
}

enum unet__cpu_level unet__cpu_best(void) {
    int l = UNET__CPU_LEVELS - 1;
    while (l > 0 && !unet__cpu_has((enum unet__cpu_level)l)) l--;
    return (enum unet__cpu_level)l;
}

enum unet__cpu_level unet__cpu_limit(enum unet__cpu_level level) {
    int old = cap();
    atomic_store(&cpu_cap, (int)level);
    return (enum unet__cpu_level)old;
}
