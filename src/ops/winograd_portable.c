/* winograd_portable.c — the Winograd kernels for the compiler's baseline instruction set (any
 * CPU): the GEMM micro-kernel in plain C and winograd_groups.h compiled without a target
 * attribute.  Contract: winograd.h; tested against the _ref convolution in
 * tests/test_winograd.c (unet__cpu_limit(UNET__CPU_PORTABLE) selects it on any machine).
 *
 * Micro-kernel: C (MR x width, leading dimension ldc) = (or += when acc) A^T B summed over K,
 * A a U panel (K, MR), B a V panel (K, width), width 16, 32 or 48, both contiguous; the sums run
 * over K in order, as in the vector variants (which fuse each multiply-add).
 */
#include "ops/winograd.h"

void unet__micro_gemm_portable(const void *Aw, const void *Bw, int K, int width, float *C,
                               int ldc, bool acc) {
    const float *A = Aw, *B = Bw;
    float sum[MR][NR];
    memset(sum, 0, sizeof sum);
    for (int k = 0; k < K; k++, A += MR, B += width)
        for (int r = 0; r < MR; r++)
            for (int j = 0; j < width; j++) sum[r][j] += A[r] * B[j];
    for (int r = 0; r < MR; r++)
        for (int j = 0; j < width; j++) {
            float *c = &C[(size_t)r * ldc + j];
            *c = (acc ? *c : 0.0f) + sum[r][j];
        }
}

#define WINO_TARGET
#define WINO_KERNELS unet__wino_portable
#define WINO_AVX512  0
#define WINO_BF16    0
#include "ops/winograd_groups.h"
