/* gemm.h — the matrix product everything heavy goes through (gemm.c: OpenBLAS, or a portable
 * loop with NO_BLAS=1).
 *
 * C (M x N) = alpha * op(A) (M x K) * op(B) (K x N) + beta * C, row-major, like cblas_sgemm.
 */
#ifndef UNET_GEMM_H
#define UNET_GEMM_H

#include "internal.h"

/* Splits the work over the current OpenMP team size (unet__use_threads) by row or column
 * blocks of C that the shape alone fixes, each block a single-threaded BLAS call, so every
 * element of C is computed by the same call in one fixed order: the result does not depend on
 * the number of threads.
 * Must not be called from inside a parallel region. */
void unet__sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                 const float *A, int lda, const float *B, int ldb, float beta,
                 float *C, int ldc);
/* The same product, single-threaded, safe inside a parallel region. */
void unet__sgemm_serial(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                        const float *A, int lda, const float *B, int ldb, float beta,
                        float *C, int ldc);
/* Naive triple loop: the definition the fast paths are tested against. */
void unet__sgemm_ref(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                     const float *A, int lda, const float *B, int ldb, float beta,
                     float *C, int ldc);

#endif /* UNET_GEMM_H */
