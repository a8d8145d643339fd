/* winograd_avx512_bf16.c — the Winograd kernels with bf16 products (AVX512_BF16): the
 * micro-kernel of winograd_avx512.h on bf16 pairs, C += A^T B by vdpbf16ps (two products per
 * float32 lane, accumulated in float32), and winograd_groups.h compiled for that target with
 * WINO_BF16: the transforms run in float32 as in every copy, and only what they store for the
 * products (U, V, Xt, Dt) is rounded to bf16 (round to nearest even, vcvtne2ps2bf16) and packed
 * two values of K per 32-bit word (winograd.h).  The output transform, the epilogue and the
 * weight gradient's final transform read float32 sums as in the float32 copies.
 *
 * Numerics: a bf16 operand carries 8 significant bits, so each product has a relative error up
 * to about 2^-8 (both operands rounded: |e| <= 2 * 2^-9), and sums of n such products an error
 * of about 2^-8 sqrt(n) of the sum of |terms| for independent roundings; the sums themselves
 * are float32.  tests/test_winograd.c states and checks the bounds against the float32 path.
 */
#include "ops/winograd.h"

#ifdef UNET__X86
#define Z_TARGET         UNET__TARGET_AVX512_BF16
#define Z_AVEC           __m512bh
#define Z_BVEC           __m512bh
#define Z_BCAST(p)       ((__m512bh)_mm512_set1_epi32((int)*(p)))
#define Z_LOADB(p)       ((__m512bh)_mm512_loadu_si512(p))
#define Z_MADD(c, a, b)  _mm512_dpbf16_ps(c, a, b)
#include "ops/winograd_avx512.h"

UNET__TARGET_AVX512_BF16 void unet__micro_gemm_avx512_bf16(const void *A, const void *B, int K,
                                                            int width, float *C, int ldc,
                                                            bool acc) {
    micro_gemm_avx512(A, B, K, width, C, ldc, acc);
}

/* Interleaves the 16 bf16 of lo (elements 0-15 of x) with the 16 of hi (16-31): word j holds
 * lo[j] in its low half and hi[j] in its high half. */
static const short PAIRS[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};

/* 16 words: (bf16(lo[j]), bf16(hi[j])). */
UNET__TARGET_AVX512_BF16 static inline __m512i pairs_of(__m512 lo, __m512 hi) {
    const __m512i x = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
    return _mm512_permutexvar_epi16(_mm512_loadu_si512(PAIRS), x);
}

/* V's run for a pair of input channels: words j = (lo[j], hi[j]) for the 16 tiles j. */
UNET__TARGET_AVX512_BF16 static void pack_lanes_bf16(uint32_t *dst, const float lo[LANES],
                                                     const float hi[LANES]) {
    _mm512_storeu_si512(dst, pairs_of(_mm512_loadu_ps(lo), _mm512_loadu_ps(hi)));
}

/* U's run of one k: u holds WL = WCI x MR lanes (input channel i, output channel r) at i MR + r;
 * word (p, r) = (u[2p MR + r], u[(2p + 1) MR + r]) for the ceil(nci / 2) pairs p (a missing odd
 * channel is zero in u).  Each zmm of u holds two input channels, so one conversion of two zmm
 * gives two pairs of them, and a permute puts each output channel's two values side by side. */
UNET__TARGET_AVX512_BF16 static void pack_weights_bf16(uint32_t *dst, const float u[WL], int nci) {
    static const short IDX[32] = {0,  8,  1,  9,  2,  10, 3,  11, 4,  12, 5,  13, 6,  14, 7,  15,
                                  16, 24, 17, 25, 18, 26, 19, 27, 20, 28, 21, 29, 22, 30, 23, 31};
    const __m512i idx = _mm512_loadu_si512(IDX);
    const int words = (nci + 1) / 2 * MR;
    for (int h = 0; h < 2 && 16 * h < words; h++) {
        const __m512i x = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(u + 32 * h + 16),
                                                        _mm512_loadu_ps(u + 32 * h));
        _mm512_mask_storeu_epi32(dst + 16 * h, tail_mask16(words - 16 * h),
                                 _mm512_permutexvar_epi16(idx, x));
    }
}

/* unet__pack_words_fn for bf16 words (ops.h): (bf16(lo[j]), bf16(hi[j]) or 0), 16 at a time. */
UNET__TARGET_AVX512_BF16 void unet__pack_words_bf16(void *dst, const float *lo, const float *hi,
                                                    int n) {
    uint32_t *u = dst;
    for (int j = 0; j < n; j += 16) {
        const __mmask16 m = tail_mask16(n - j);
        const __m512 l = _mm512_maskz_loadu_ps(m, lo + j);
        const __m512 h = hi ? _mm512_maskz_loadu_ps(m, hi + j) : _mm512_setzero_ps();
        _mm512_mask_storeu_epi32(u + j, m, pairs_of(l, h));
    }
}

/* The weight gradient's transposition (winograd_groups.h, transpose_words) into bf16 words that
 * pair consecutive tiles: dst[i ld + c] = (src[c stride + 2i], src[c stride + 2i + 1]) for the
 * 8 pairs of the 16 tiles and the nc channels c. */
UNET__TARGET_AVX512_BF16 static void transpose_pairs_bf16(uint32_t *dst, size_t ld,
                                                          const float *src, size_t stride,
                                                          int nc) {
    __m512 t[16];
    transpose16_avx512(t, src, stride, nc);
    const __mmask16 m = tail_mask16(nc);
    for (int i = 0; i < 8; i++)
        _mm512_mask_storeu_epi32(dst + (size_t)i * ld, m, pairs_of(t[2 * i], t[2 * i + 1]));
}

#define WINO_TARGET  UNET__TARGET_AVX512_BF16
#define WINO_KERNELS unet__wino_avx512_bf16
#define WINO_AVX512  1
#define WINO_BF16    1
#include "ops/winograd_groups.h"

#else
typedef int unet__winograd_avx512_bf16_unused; /* ISO C: a translation unit is not empty */
#endif
