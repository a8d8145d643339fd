/* bench_peak.c — the machine's measured float32 FMA peak, the yardstick for bench/run's
 * "effective GFLOP/s" column, and the bf16 dot-product peak (vdpbf16ps, AVX512_BF16: 32
 * multiply-adds of bf16 pairs summed in float32 per instruction) of the bf16 kernels.
 *
 *     bench_peak [THREADS]      (default: 1 and 2)
 *
 * Each thread runs 12 independent FMA chains (enough to cover latency x pipes on current x86
 * cores) on 256-bit (AVX2+FMA) and, where the CPU has it, 512-bit (AVX-512F) vectors, chosen at
 * run time by the library's CPU-feature module (src/cpu.h; UNET_CPU=avx2 leaves AVX-512 out).
 * Prints one line per ISA and thread count:
 *
 *     PEAK isa=avx2 threads=2 gflops=...     (isa: avx2, avx512, avx512bf16)
 *
 * Not x86: prints nothing (bench/run then leaves the column out).
 */
#include "cpu.h"

#include <stdio.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "bench.h"

#ifdef UNET__X86
#include <immintrin.h>

#define CHAINS(OP) OP(0) OP(1) OP(2) OP(3) OP(4) OP(5) OP(6) OP(7) OP(8) OP(9) OP(10) OP(11)

UNET__TARGET_AVX2 static float fma256(long iters) {
    const __m256 m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
#define DECL(i) __m256 a##i = _mm256_set1_ps((float)(i));
    CHAINS(DECL)
#undef DECL
    for (long k = 0; k < iters; k++) {
#define STEP(i) a##i = _mm256_fmadd_ps(a##i, m, c);
        CHAINS(STEP)
#undef STEP
    }
    __m256 s = _mm256_setzero_ps();
#define SUM(i) s = _mm256_add_ps(s, a##i);
    CHAINS(SUM)
#undef SUM
    float o[8];
    _mm256_storeu_ps(o, s);
    return o[0];
}

/* The 512-bit chains: float32 FMAs, and vdpbf16ps (each adds the products of 16 pairs of bf16
 * to 16 floats). */
#define DECL512(i) __m512 a##i = _mm512_set1_ps((float)(i));
#define SUM512(i)  s = _mm512_add_ps(s, a##i);
#define FMA512(i)  a##i = _mm512_fmadd_ps(a##i, m, c);
#define DPBF16(i)  a##i = _mm512_dpbf16_ps(a##i, m, c);
#define PEAK512(NAME, TARGET, MTYPE, M, C, STEP)                                                  \
    TARGET static float NAME(long iters) {                                                      \
        const MTYPE m = M, c = C;                                                               \
        CHAINS(DECL512)                                                                         \
        for (long k = 0; k < iters; k++) {                                                      \
            CHAINS(STEP)                                                                        \
        }                                                                                       \
        __m512 s = _mm512_setzero_ps();                                                         \
        CHAINS(SUM512)                                                                          \
        return _mm512_reduce_add_ps(s);                                                         \
    }
PEAK512(fma512, UNET__TARGET_AVX512, __m512, _mm512_set1_ps(0.999999f), _mm512_set1_ps(1e-7f),
        FMA512)
/* m ~0.996 and c ~1e-7 in bf16 pairs. */
PEAK512(dpbf16, UNET__TARGET_AVX512_BF16, __m512bh, (__m512bh)_mm512_set1_epi32(0x3f7f3f7f),
        (__m512bh)_mm512_set1_epi32(0x33d633d6), DPBF16)

/* GFLOP/s of `threads` threads each running fn for iters iterations (12 FMAs of `lanes`; a
 * bf16 dot product of 16 pairs counts as 32 lanes). */
static double measure(float (*fn)(long), int lanes, int threads) {
    const long iters = 20000000;
    volatile float sink = 0.0f;
    double best = 0.0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = bench_now();
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
#endif
        {
            float r = fn(iters);
#ifdef _OPENMP
#pragma omp critical
#endif
            sink += r;
        }
        double g = (double)threads * iters * 12.0 * lanes * 2.0 / (bench_now() - t0) * 1e-9;
        if (g > best) best = g;
    }
    (void)sink;
    return best;
}

int main(int argc, char **argv) {
    int lo = 1, hi = 2;
    if (argc > 1) lo = hi = atoi(argv[1]);
    if (lo < 1) return 2;
    for (int t = lo; t <= hi; t++) {
        if (unet__cpu_has(UNET__CPU_AVX2))
            printf("PEAK isa=avx2 threads=%d gflops=%.1f\n", t, measure(fma256, 8, t));
        if (unet__cpu_has(UNET__CPU_AVX512))
            printf("PEAK isa=avx512 threads=%d gflops=%.1f\n", t, measure(fma512, 16, t));
        if (unet__cpu_has(UNET__CPU_AVX512_BF16))
            printf("PEAK isa=avx512bf16 threads=%d gflops=%.1f\n", t, measure(dpbf16, 32, t));
    }
    return 0;
}
#else
int main(void) {
    return 0;
}
#endif
