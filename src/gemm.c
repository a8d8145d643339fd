/* gemm.c — the one matrix product everything heavy goes through.
 *
 * Convolution forward, its input gradient (which is the transposed convolution's forward), its
 * weight gradient and the 1x1 convolutions are all C = op(A) op(B) products; this file is where
 * they meet the hardware.  By default that is OpenBLAS's sgemm, called single-threaded once per
 * block of C from an OpenMP loop: unet owns the threads (one pool, a thread count per context,
 * no oversubscription with our own parallel loops) and every element of C is produced by one
 * call over the same block, whatever the thread count, so results are identical for any thread
 * count (unet__sgemm's blocks).  OpenBLAS's OpenMP build runs single-threaded inside a
 * parallel region; outside one, the calling thread's team size is set to 1 around the call, in
 * unet's OpenMP runtime and, where OpenBLAS is bound to another one, in that one too
 * (blas_runtime below).  (Debian's serial build is not safe to call from several threads: it is
 * built without USE_LOCKING and its buffer pool races, which showed as wrong results.)  With
 * NO_BLAS=1 the same blocks go to a portable cache-blocked loop.  unet__sgemm_ref is the
 * definition both are tested against.
 *
 * Contract (internal.h): row-major C (M x N) = alpha op(A) op(B) + beta C, like cblas_sgemm.
 * Tested (tests/test_conv.c, gemm_vs_ref) against unet__sgemm_ref with random transposes, beta
 * 0 and 1 and odd sizes (one large enough to split over threads), in the BLAS build and in the
 * NO_BLAS build (CI runs both).
 */
#define _GNU_SOURCE /* dladdr */
#include "gemm.h"

#include <string.h>

#ifndef UNET_NO_BLAS
#include <cblas.h>
#ifdef _OPENMP
#include <dlfcn.h>
#include <pthread.h>
#endif
#endif

/* Element (i, j) of op(X) for a row-major X with leading dimension ld. */
#define AT(X, trans, i, j, ld) ((trans) ? (X)[(size_t)(j) * (ld) + (i)] : (X)[(size_t)(i) * (ld) + (j)])

void unet__sgemm_ref(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                     const float *A, int lda, const float *B, int ldb, float beta,
                     float *C, int ldc) {
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double acc = 0.0;
            for (int p = 0; p < K; p++)
                acc += (double)AT(A, trans_a, i, p, lda) * (double)AT(B, trans_b, p, j, ldb);
            float *c = &C[(size_t)i * ldc + j];
            *c = (float)(alpha * acc + (beta == 0.0f ? 0.0 : (double)beta * *c));
        }
    }
}

#ifdef UNET_NO_BLAS
/* Portable path: C rows scaled by beta, then rank-1 updates over k in blocks so that a block of
 * op(B) stays in cache; the innermost loop runs over contiguous columns of C and vectorizes. */
enum { KB = 128, NB = 512 };

static void gemm_portable(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                          const float *A, int lda, const float *B, int ldb, float beta,
                          float *C, int ldc) {
    float bpack[KB * NB];
    for (int i = 0; i < M; i++) {
        float *c = C + (size_t)i * ldc;
        if (beta == 0.0f) memset(c, 0, sizeof(float) * (size_t)N);
        else if (beta != 1.0f)
            for (int j = 0; j < N; j++) c[j] *= beta;
    }
    for (int j0 = 0; j0 < N; j0 += NB) {
        int nb = N - j0 < NB ? N - j0 : NB;
        for (int p0 = 0; p0 < K; p0 += KB) {
            int kb = K - p0 < KB ? K - p0 : KB;
            for (int p = 0; p < kb; p++)
                for (int j = 0; j < nb; j++)
                    bpack[p * nb + j] = AT(B, trans_b, p0 + p, j0 + j, ldb);
            for (int i = 0; i < M; i++) {
                float *c = C + (size_t)i * ldc + j0;
                for (int p = 0; p < kb; p++) {
                    float a = alpha * AT(A, trans_a, i, p0 + p, lda);
                    if (a == 0.0f) continue;
                    const float *b = bpack + p * nb;
                    for (int j = 0; j < nb; j++) c[j] += a * b[j];
                }
            }
        }
    }
}
#endif

#if !defined(UNET_NO_BLAS) && defined(_OPENMP)
/* OpenBLAS's OpenMP build splits a product over a team of its own unless its OpenMP runtime
 * reports, on the calling thread, a parallel region or a team size of 1.  That runtime need not
 * be unet's: Debian's OpenBLAS links GCC's libgomp, a clang build of unet uses LLVM's libomp,
 * and which one OpenBLAS's calls reach depends on the order the process loaded them.  In a
 * Python process numpy loads OpenBLAS first, bound to libgomp, so unet's parallel regions and
 * omp_set_num_threads(1) were invisible to it: OpenBLAS split unet's single-threaded calls over
 * its own threads (more threads than cores) and summed in another order, so the clang build's
 * Python predictions differed from its CLI's in the last bits under OpenBLAS's Haswell
 * kernels.  The runtime OpenBLAS links is found once through the dynamic linker (its own
 * dependencies: dlsym on its handle), and when it is not unet's, the calling thread's team size
 * there is also 1 for the call.  Team sizes are per-thread settings in both runtimes, so
 * threads calling at once do not disturb each other. */
static struct {
    void (*set_threads)(int);
    int (*max_threads)(void);
} blas_runtime;
static pthread_once_t blas_runtime_once = PTHREAD_ONCE_INIT;

static void blas_runtime_find(void) {
    void (*sgemm)(void) = (void (*)(void))cblas_sgemm;
    void *addr;
    memcpy(&addr, &sgemm, sizeof addr); /* ISO C has no cast from a function to void * */
    Dl_info info;
    if (!dladdr(addr, &info) || !info.dli_fname) return;
    void *lib = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
    if (!lib) return;
    void *set = dlsym(lib, "omp_set_num_threads"), *max = dlsym(lib, "omp_get_max_threads");
    void (*ours)(int) = omp_set_num_threads;
    void *ours_addr;
    memcpy(&ours_addr, &ours, sizeof ours_addr);
    if (set && max && set != ours_addr) {
        memcpy(&blas_runtime.set_threads, &set, sizeof set);
        memcpy(&blas_runtime.max_threads, &max, sizeof max);
    }
    dlclose(lib); /* still loaded: unet links it */
}
#endif

void unet__sgemm_serial(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                        const float *A, int lda, const float *B, int ldb, float beta,
                        float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
#ifdef UNET_NO_BLAS
    gemm_portable(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#else
    if (K <= 0) {
        /* BLAS would still scale by beta; keep that meaning without passing K = 0. */
        for (int i = 0; i < M; i++) {
            float *c = C + (size_t)i * ldc;
            for (int j = 0; j < N; j++) c[j] = beta == 0.0f ? 0.0f : beta * c[j];
        }
        return;
    }
#ifdef _OPENMP
    int team = omp_in_parallel() ? 1 : omp_get_max_threads();
    if (team > 1) omp_set_num_threads(1);
    pthread_once(&blas_runtime_once, blas_runtime_find);
    const int blas_team = blas_runtime.set_threads ? blas_runtime.max_threads() : 1;
    if (blas_team > 1) blas_runtime.set_threads(1);
#endif
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
#ifdef _OPENMP
    if (blas_team > 1) blas_runtime.set_threads(blas_team);
    if (team > 1) omp_set_num_threads(team);
#endif
#endif
}

/* Below this many multiply-adds a product is one call: forking costs more. */
#define GEMM_PARALLEL_MIN (1 << 18)

/* Above it, the wider output dimension is cut into GEMM_BLOCKS blocks (fewer when narrow),
 * fixed by the product's shape alone: a thread count decides only who runs a block, never
 * where the blocks start.  OpenBLAS's kernels sum an element of C in an order that can depend
 * on where it falls in the call (its AVX2 "Haswell" sgemm does: edge columns go through
 * narrower kernels), so blocks that moved with the thread count changed the last bits. */
#define GEMM_BLOCKS 8

void unet__sgemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                 const float *A, int lda, const float *B, int ldb, float beta,
                 float *C, int ldc) {
    if ((double)M * N * K < GEMM_PARALLEL_MIN) {
        unet__sgemm_serial(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    /* Columns in multiples of 16 (vector and cache-line aligned), rows of 4.  Each block is an
     * independent product of a slice of op(A) or op(B). */
    const bool by_cols = N >= M;
    const int  extent = by_cols ? N : M, align = by_cols ? 16 : 4;
    int chunk = (extent + GEMM_BLOCKS - 1) / GEMM_BLOCKS;
    chunk = (chunk + align - 1) / align * align;
    const int blocks = (extent + chunk - 1) / chunk;
    int nt = 1;
#ifdef _OPENMP
    nt = omp_get_max_threads();
#endif
    if (nt > blocks) nt = blocks;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int t = 0; t < blocks; t++) {
        int s = t * chunk;
        int e = s + chunk < extent ? s + chunk : extent;
        if (by_cols) {
            const float *b = trans_b ? B + (size_t)s * ldb : B + s;
            unet__sgemm_serial(trans_a, trans_b, M, e - s, K, alpha, A, lda, b, ldb, beta, C + s, ldc);
        } else {
            const float *a = trans_a ? A + s : A + (size_t)s * lda;
            unet__sgemm_serial(trans_a, trans_b, e - s, N, K, alpha, a, lda, B, ldb, beta,
                               C + (size_t)s * ldc, ldc);
        }
    }
}
