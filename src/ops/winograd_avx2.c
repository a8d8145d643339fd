/* winograd_avx2.c — the Winograd kernels for AVX2 + FMA: the GEMM micro-kernel in 256-bit
 * registers and winograd_groups.h compiled for that target.  Contract: winograd.h (the
 * micro-kernel's: winograd_portable.c); tested against the _ref convolution in
 * tests/test_winograd.c under unet__cpu_limit(UNET__CPU_AVX2).
 */
#include "ops/winograd.h"

#ifdef UNET__X86
#include <immintrin.h>

/* AVX2 has 16 registers: 4 rows x NV ymm columns (12 accumulators for 24 columns), called for
 * each half of the 8 rows and each 24- or 16-column strip of the panel (row stride ldb). */
#define ROWS4(X) X(0) X(1) X(2) X(3)
#define Y_DECL2(r) __m256 c##r##0 = _mm256_setzero_ps(), c##r##1 = c##r##0;
#define Y_DECL3(r) Y_DECL2(r) __m256 c##r##2 = c##r##0;
#define Y_FMA2(r)                                                                               \
    {                                                                                           \
        const __m256 ar = _mm256_broadcast_ss(A + (r));                                         \
        c##r##0 = _mm256_fmadd_ps(ar, b0, c##r##0);                                             \
        c##r##1 = _mm256_fmadd_ps(ar, b1, c##r##1);                                             \
    }
#define Y_FMA3(r)                                                                               \
    {                                                                                           \
        const __m256 ar = _mm256_broadcast_ss(A + (r));                                         \
        c##r##0 = _mm256_fmadd_ps(ar, b0, c##r##0);                                             \
        c##r##1 = _mm256_fmadd_ps(ar, b1, c##r##1);                                             \
        c##r##2 = _mm256_fmadd_ps(ar, b2, c##r##2);                                             \
    }
#define Y_PUT(P, v) _mm256_storeu_ps((P), acc ? _mm256_add_ps(_mm256_loadu_ps(P), (v)) : (v));
#define Y_ST2(r) Y_PUT(C + (size_t)(r) * ldc, c##r##0) Y_PUT(C + (size_t)(r) * ldc + 8, c##r##1)
#define Y_ST3(r) Y_ST2(r) Y_PUT(C + (size_t)(r) * ldc + 16, c##r##2)
#define Y_LOAD2 const __m256 b0 = _mm256_loadu_ps(B), b1 = _mm256_loadu_ps(B + 8);
#define Y_LOAD3 Y_LOAD2 const __m256 b2 = _mm256_loadu_ps(B + 16);
#define AVX2_KERNEL(NV)                                                                         \
    UNET__TARGET_AVX2 static void gemm_avx2_##NV(                                              \
        const float *A, const float *B, int K, int ldb, float *C, int ldc, bool acc) {          \
        ROWS4(Y_DECL##NV)                                                                       \
        for (int k = 0; k < K; k++, A += MR, B += ldb) {                                        \
            Y_LOAD##NV                                                                          \
            ROWS4(Y_FMA##NV)                                                                    \
        }                                                                                       \
        ROWS4(Y_ST##NV)                                                                         \
    }
AVX2_KERNEL(2)
AVX2_KERNEL(3)

UNET__TARGET_AVX2 void unet__micro_gemm_avx2(const void *Aw, const void *Bw, int K, int width,
                                              float *C, int ldc, bool acc) {
    const float *A = Aw, *B = Bw;
    const int step = width == 48 ? 24 : 16;
    for (int r = 0; r < MR; r += 4)
        for (int j = 0; j < width; j += step) {
            if (step == 24) gemm_avx2_3(A + r, B + j, K, width, C + (size_t)r * ldc + j, ldc, acc);
            else gemm_avx2_2(A + r, B + j, K, width, C + (size_t)r * ldc + j, ldc, acc);
        }
}

#define WINO_TARGET  UNET__TARGET_AVX2
#define WINO_KERNELS unet__wino_avx2
#define WINO_AVX512  0
#define WINO_BF16    0
#include "ops/winograd_groups.h"

#else
typedef int unet__winograd_avx2_unused; /* ISO C: a translation unit is not empty */
#endif
