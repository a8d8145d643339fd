/* cpu.h — what the processor offers: the instruction-set levels kernels are compiled for.
 *
 * The default build targets the baseline x86-64 (or whatever the compiler targets).  Kernels
 * that gain from wider vectors are compiled again for AVX2+FMA and for AVX-512 with
 * UNET__TARGET_AVX2 / UNET__TARGET_AVX512 (GCC and clang's __attribute__((target))), and
 * ops/kernels.c picks the copy for the CPU the code runs on, asking unet__cpu_has.  Nothing
 * else tests CPU features: winograd*.c, conv2d.c and optim.c, float32 and bf16, ask here
 * through the kernel table.
 *
 * The level can be capped, so that the AVX2 and portable copies run, and are tested, on an
 * AVX-512 machine:
 *   - the environment variable UNET_CPU=portable|avx2|avx512|avx512bf16, read at the first
 *     query (an unknown value is ignored: the best level the CPU has);
 *   - unet__cpu_limit, for tests (not thread-safe: call it while no kernel runs).
 * Alternative rejected: a -march=native build.  One binary then serves one machine, and the
 * portable path would go untested wherever the tests run.
 */
#ifndef UNET_CPU_H
#define UNET_CPU_H

#include "internal.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define UNET__X86 1
#define UNET__TARGET_AVX2   __attribute__((target("avx2,fma")))
#define UNET__TARGET_AVX512 __attribute__((target("avx512f")))
/* AVX-512 with the bf16 dot products (vdpbf16ps, vcvtne2ps2bf16) and the byte/word and 256-bit
 * forms the bf16 kernels use alongside them (every CPU with AVX512_BF16 has BW and VL). */
#define UNET__TARGET_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#endif

/* Ordered: each level's machines have every level below it.  AVX512_BF16 is AVX-512F with the
 * bf16 dot-product instructions (and AVX512BW/VL): the level of the bf16 kernels, so that
 * UNET_CPU=avx512 turns bf16 off and runs the float32 kernels instead. */
enum unet__cpu_level {
    UNET__CPU_PORTABLE = 0,
    UNET__CPU_AVX2 = 1,
    UNET__CPU_AVX512 = 2,
    UNET__CPU_AVX512_BF16 = 3,
    UNET__CPU_TOP = UNET__CPU_AVX512_BF16 /* the highest level: unet__cpu_limit(TOP) lifts the cap */
};
enum { UNET__CPU_LEVELS = 4 };

/* Whether this CPU runs code compiled for level (and the cap allows it). */
bool unet__cpu_has(enum unet__cpu_level level);
/* The highest level unet__cpu_has allows. */
enum unet__cpu_level unet__cpu_best(void);
/* Caps the level (tests) and returns the previous cap; UNET__CPU_TOP lifts the cap. */
enum unet__cpu_level unet__cpu_limit(enum unet__cpu_level level);
/* "portable", "avx2", "avx512", "avx512bf16"; and back (false for an unknown name). */
const char *unet__cpu_level_name(enum unet__cpu_level level);
bool unet__cpu_level_parse(const char *name, enum unet__cpu_level *out);
/* Makes the calling thread's non-temporal stores (the kernels' streaming stores) visible
 * before its later stores, such as a barrier's: sfence on x86-64, nothing elsewhere (no kernel
 * streams there). */
void unet__store_fence(void);

#endif /* UNET_CPU_H */
