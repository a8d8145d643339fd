/* winograd_avx512.c — the Winograd kernels for AVX-512F in float32: the micro-kernel and the
 * row kernels of winograd_avx512.h with float operands, and winograd_groups.h compiled for that
 * target with them.  Contract: winograd.h (the micro-kernel's: winograd_portable.c); tested
 * against the _ref convolution in tests/test_winograd.c, which also covers rows of 16 tiles cut
 * by the border.
 */
#include "ops/winograd.h"

#ifdef UNET__X86
#define Z_TARGET         UNET__TARGET_AVX512
#define Z_AVEC           __m512
#define Z_BVEC           __m512
#define Z_BCAST(p)       _mm512_set1_ps(*(const float *)(const void *)(p))
#define Z_LOADB(p)       _mm512_loadu_ps(p)
#define Z_MADD(c, a, b)  _mm512_fmadd_ps(a, b, c)
#include "ops/winograd_avx512.h"

UNET__TARGET_AVX512 void unet__micro_gemm_avx512(const void *A, const void *B, int K, int width,
                                                  float *C, int ldc, bool acc) {
    micro_gemm_avx512(A, B, K, width, C, ldc, acc);
}

#define WINO_TARGET  UNET__TARGET_AVX512
#define WINO_KERNELS unet__wino_avx512
#define WINO_AVX512  1
#define WINO_BF16    0
#include "ops/winograd_groups.h"

#else
typedef int unet__winograd_avx512_unused; /* ISO C: a translation unit is not empty */
#endif
