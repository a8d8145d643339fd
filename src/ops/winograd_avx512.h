/* winograd_avx512.h — what the two AVX-512 copies of the Winograd kernels share: the row kernels
 * that move 16 tiles of a tile row as runs of a row (masked loads and stores at the image border,
 * permutes to and from the transforms' lanes), the 16 x 16 register transpose of the weight
 * gradient, and the register-blocked GEMM micro-kernel written once over its operand type.
 *
 * Not a normal header: winograd_avx512.c (float32) and winograd_avx512_bf16.c (bf16 products)
 * include it once each, the latter compiled for AVX512_BF16, so each gets its own copy of these
 * static functions.  Before including it, define for the micro-kernel:
 *     Z_TARGET        its target attribute
 *     Z_AVEC, Z_BVEC  the vector types of a broadcast A element and of a B load
 *     Z_BCAST(p)      a Z_AVEC holding the 32-bit word at p in every lane
 *     Z_LOADB(p)      the Z_BVEC of 16 words at p
 *     Z_MADD(c, a, b) c + a * b, accumulated in float32 (__m512)
 * A and B are arrays of 32-bit words (winograd.h): floats, or bf16 pairs.
 */
#ifndef UNET_OPS_WINOGRAD_AVX512_H
#define UNET_OPS_WINOGRAD_AVX512_H

#include "ops/winograd.h"

#include <immintrin.h>

/* Permute indices of the row kernels below.  A run of 64 floats in two pairs of vectors holds
 * 16 tiles of 4 columns: ROW_LO[c] picks column c of tiles 0-7 from the first pair, ROW_HI[c]
 * that of tiles 8-15 from the second (into lanes 8-15).  PAIR_LO / PAIR_HI interleave two
 * vectors (a0 b0 a1 b1 ...), low and high halves. */
static const int ROW_LO[4][16] = {{0, 4, 8, 12, 16, 20, 24, 28}, {1, 5, 9, 13, 17, 21, 25, 29},
                                  {2, 6, 10, 14, 18, 22, 26, 30}, {3, 7, 11, 15, 19, 23, 27, 31}};
static const int ROW_HI[4][16] = {{0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 8, 12, 16, 20, 24, 28},
                                  {0, 0, 0, 0, 0, 0, 0, 0, 1, 5, 9, 13, 17, 21, 25, 29},
                                  {0, 0, 0, 0, 0, 0, 0, 0, 2, 6, 10, 14, 18, 22, 26, 30},
                                  {0, 0, 0, 0, 0, 0, 0, 0, 3, 7, 11, 15, 19, 23, 27, 31}};
static const int PAIR_LO[16] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23};
static const int PAIR_HI[16] = {8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};

/* Lanes [0, last) of 16: a masked load or store that stops at the image border. */
static inline __mmask16 tail_mask16(int last) {
    return last >= 16 ? (__mmask16)0xFFFF : last > 0 ? (__mmask16)((1u << last) - 1u) : 0;
}

/* Column c of 16 tiles from a run of 64 floats in r0 .. r3: lo = ROW_LO[c], hi = ROW_HI[c]. */
UNET__TARGET_AVX512 static inline __m512 tile_column(__m512 r0, __m512 r1, __m512 r2, __m512 r3,
                                                     __m512i lo, __m512i hi) {
    return _mm512_mask_blend_ps(0xFF00, _mm512_permutex2var_ps(r0, lo, r1),
                                _mm512_permutex2var_ps(r2, hi, r3));
}

/* gather_patches for 16 consecutive tiles of one tile row (the usual case): each patch row of
 * the 16 tiles is one run of 66 input floats, loaded as 5 vectors (masked: the zero padding and
 * the image border) and de-interleaved with permutes instead of 576 scalar loads. */
UNET__TARGET_AVX512 static void gather_row16_avx512(float dd[36][LANES], const float *xc, int ih0,
                                                    int iw0, int H, int W, size_t next) {
    __mmask16 mask[5];
    for (int v = 0; v < 5; v++) {
        int first = -iw0 - 16 * v, last = W - iw0 - 16 * v; /* lanes [first, last) are inside */
        if (v == 4 && last > 2) last = 2;
        if (first < 0) first = 0;
        if (last > 16) last = 16;
        mask[v] = last > first ? (__mmask16)(((1u << last) - 1u) & ~((1u << first) - 1u)) : 0;
    }
    /* Named rather than arrays, and the permute indices loaded once: with arrays the compiler
     * kept the row's five vectors on the stack. */
    const __mmask16 m0 = mask[0], m1 = mask[1], m2 = mask[2], m3 = mask[3], m4 = mask[4];
    const __m512i lo0 = _mm512_loadu_si512(ROW_LO[0]), hi0 = _mm512_loadu_si512(ROW_HI[0]);
    const __m512i lo1 = _mm512_loadu_si512(ROW_LO[1]), hi1 = _mm512_loadu_si512(ROW_HI[1]);
    const __m512i lo2 = _mm512_loadu_si512(ROW_LO[2]), hi2 = _mm512_loadu_si512(ROW_HI[2]);
    const __m512i lo3 = _mm512_loadu_si512(ROW_LO[3]), hi3 = _mm512_loadu_si512(ROW_HI[3]);
    for (int ri = 0; ri < 6; ri++) {
        const int ih = ih0 + ri;
        float(*out)[LANES] = dd + ri * 6;
        if (ih < 0 || ih >= H) {
            for (int c = 0; c < 6; c++) _mm512_storeu_ps(out[c], _mm512_setzero_ps());
            continue;
        }
        const float *row = xc + (ptrdiff_t)ih * W + iw0;
        /* The same run `next` floats on (the channel the caller gathers next at this place,
         * a few groups later) is fetched now: the layer's input is usually far larger than
         * the caches, and without these prefetches the bf16 forward at 512x512 took 15% longer.
         * A prefetch never faults. */
        const char *ahead = (const char *)(row + next);
        _mm_prefetch(ahead, _MM_HINT_T0);
        _mm_prefetch(ahead + 64, _MM_HINT_T0);
        _mm_prefetch(ahead + 128, _MM_HINT_T0);
        _mm_prefetch(ahead + 192, _MM_HINT_T0);
        _mm_prefetch(ahead + 256, _MM_HINT_T0);
        const __m512 r0 = _mm512_maskz_loadu_ps(m0, row), r1 = _mm512_maskz_loadu_ps(m1, row + 16);
        const __m512 r2 = _mm512_maskz_loadu_ps(m2, row + 32);
        const __m512 r3 = _mm512_maskz_loadu_ps(m3, row + 48);
        const __m512 r4 = _mm512_maskz_loadu_ps(m4, row + 64);
        const __m512 d0 = tile_column(r0, r1, r2, r3, lo0, hi0);
        const __m512 d1 = tile_column(r0, r1, r2, r3, lo1, hi1);
        _mm512_storeu_ps(out[0], d0);
        _mm512_storeu_ps(out[1], d1);
        _mm512_storeu_ps(out[2], tile_column(r0, r1, r2, r3, lo2, hi2));
        _mm512_storeu_ps(out[3], tile_column(r0, r1, r2, r3, lo3, hi3));
        /* Columns 4 and 5 of tile j are columns 0 and 1 of tile j + 1. */
        const __m512i r4i = _mm512_castps_si512(r4);
        const __m512i c4 = _mm512_alignr_epi32(r4i, _mm512_castps_si512(d0), 1);
        const __m512i r4s = _mm512_alignr_epi32(r4i, r4i, 1); /* lane 0: column 65 */
        const __m512i c5 = _mm512_alignr_epi32(r4s, _mm512_castps_si512(d1), 1);
        _mm512_storeu_ps(out[4], _mm512_castsi512_ps(c4));
        _mm512_storeu_ps(out[5], _mm512_castsi512_ps(c5));
    }
}

/* The inverse for the outputs: the 4x4 results o (16, LANES) of 16 consecutive tiles of one
 * tile row are, per output row, one run of 64 floats: interleaved with permutes and stored
 * (masked at the right border; added when acc) instead of 256 scalar stores. */
UNET__TARGET_AVX512 static void scatter_row16_avx512(float *yc, float o[16][LANES], int oh0,
                                                     int ow0, int H, int W, bool acc,
                                                     bool stream) {
    static const int q0[16] = {0, 1, 16, 17, 2, 3, 18, 19, 4, 5, 20, 21, 6, 7, 22, 23};
    static const int q1[16] = {8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31};
    const __m512i ilo = _mm512_loadu_si512(PAIR_LO), ihi = _mm512_loadu_si512(PAIR_HI);
    const __m512i iq0 = _mm512_loadu_si512(q0), iq1 = _mm512_loadu_si512(q1);
    __mmask16 mask[4];
    for (int v = 0; v < 4; v++) {
        mask[v] = tail_mask16(W - ow0 - 16 * v);
    }
    const int nh = H - oh0 < 4 ? H - oh0 : 4;
    for (int ri = 0; ri < nh; ri++) {
        const __m512 c0 = _mm512_loadu_ps(o[ri * 4]), c1 = _mm512_loadu_ps(o[ri * 4 + 1]);
        const __m512 c2 = _mm512_loadu_ps(o[ri * 4 + 2]), c3 = _mm512_loadu_ps(o[ri * 4 + 3]);
        /* (c0 c1) and (c2 c3) interleaved, then pairs of pairs: tile j's 4 values together. */
        const __m512 a0 = _mm512_permutex2var_ps(c0, ilo, c1);
        const __m512 a1 = _mm512_permutex2var_ps(c0, ihi, c1);
        const __m512 b0 = _mm512_permutex2var_ps(c2, ilo, c3);
        const __m512 b1 = _mm512_permutex2var_ps(c2, ihi, c3);
        __m512 out[4];
        out[0] = _mm512_permutex2var_ps(a0, iq0, b0);
        out[1] = _mm512_permutex2var_ps(a0, iq1, b0);
        out[2] = _mm512_permutex2var_ps(a1, iq0, b1);
        out[3] = _mm512_permutex2var_ps(a1, iq1, b1);
        float *row = yc + (size_t)(oh0 + ri) * W + ow0;
        for (int v = 0; v < 4; v++) {
            if (!mask[v]) continue;
            __m512 val = out[v];
            if (acc) val = _mm512_add_ps(val, _mm512_maskz_loadu_ps(mask[v], row + 16 * v));
            if (stream && mask[v] == 0xFFFF && ((uintptr_t)(row + 16 * v) & 63) == 0)
                _mm512_stream_ps(row + 16 * v, val);
            else
                _mm512_mask_storeu_ps(row + 16 * v, mask[v], val);
        }
    }
}

/* The pooled 2x2 of 16 consecutive tiles of one tile row: per pooled row, windows (pr, 0) and
 * (pr, 1) of tile j go to columns 2j and 2j + 1, one run of 32 floats (masked at the border).
 * stream: when the convolution's output is (scatter_row16_avx512), whole aligned runs go by
 * non-temporal stores too: the pooled map, a quarter of a map far larger than the caches, is
 * read only by the next layer (bench_precision infer 512 1 2 7, 3 alternated pairs: float32
 * 0.467-0.483 -> 0.459-0.472 s, bf16 0.300-0.313 -> 0.288-0.299 s). */
UNET__TARGET_AVX512 static void pool_row16_avx512(float *pc, float pm[4][LANES], int ph0, int pw0,
                                                  int Hp, int Wp, bool stream) {
    __mmask16 mask[2];
    for (int v = 0; v < 2; v++) {
        mask[v] = tail_mask16(Wp - pw0 - 16 * v);
    }
    for (int pr = 0; pr < 2 && ph0 + pr < Hp; pr++) {
        const __m512 c0 = _mm512_loadu_ps(pm[2 * pr]), c1 = _mm512_loadu_ps(pm[2 * pr + 1]);
        float *row = pc + (size_t)(ph0 + pr) * Wp + pw0;
        const __m512 lo = _mm512_permutex2var_ps(c0, _mm512_loadu_si512(PAIR_LO), c1);
        const __m512 hi = _mm512_permutex2var_ps(c0, _mm512_loadu_si512(PAIR_HI), c1);
        if (stream && (mask[0] & mask[1]) == 0xFFFF && ((uintptr_t)row & 63) == 0) {
            _mm512_stream_ps(row, lo);
            _mm512_stream_ps(row + 16, hi);
        } else {
            _mm512_mask_storeu_ps(row, mask[0], lo);
            _mm512_mask_storeu_ps(row + 16, mask[1], hi);
        }
    }
}

/* The 4x4 output-gradient tiles of 16 consecutive tiles of one tile row: per tile row, one run
 * of 64 floats (masked at the border; rows past H are zero), de-interleaved into the 4 columns
 * with the same permutes as gather_row16_avx512. */
UNET__TARGET_AVX512 static void dy_row16_avx512(float yy[16][LANES], const float *yc, int oh0,
                                                int ow0, int H, int W) {
    __mmask16 mask[4];
    for (int v = 0; v < 4; v++) {
        mask[v] = tail_mask16(W - ow0 - 16 * v);
    }
    /* Named vectors, as in gather_row16_avx512. */
    const __mmask16 m0 = mask[0], m1 = mask[1], m2 = mask[2], m3 = mask[3];
    const __m512i lo0 = _mm512_loadu_si512(ROW_LO[0]), hi0 = _mm512_loadu_si512(ROW_HI[0]);
    const __m512i lo1 = _mm512_loadu_si512(ROW_LO[1]), hi1 = _mm512_loadu_si512(ROW_HI[1]);
    const __m512i lo2 = _mm512_loadu_si512(ROW_LO[2]), hi2 = _mm512_loadu_si512(ROW_HI[2]);
    const __m512i lo3 = _mm512_loadu_si512(ROW_LO[3]), hi3 = _mm512_loadu_si512(ROW_HI[3]);
    for (int ri = 0; ri < 4; ri++) {
        float(*out)[LANES] = yy + ri * 4;
        if (oh0 + ri >= H) {
            for (int c = 0; c < 4; c++) _mm512_storeu_ps(out[c], _mm512_setzero_ps());
            continue;
        }
        const float *row = yc + (size_t)(oh0 + ri) * W + ow0;
        const __m512 r0 = _mm512_maskz_loadu_ps(m0, row), r1 = _mm512_maskz_loadu_ps(m1, row + 16);
        const __m512 r2 = _mm512_maskz_loadu_ps(m2, row + 32);
        const __m512 r3 = _mm512_maskz_loadu_ps(m3, row + 48);
        _mm512_storeu_ps(out[0], tile_column(r0, r1, r2, r3, lo0, hi0));
        _mm512_storeu_ps(out[1], tile_column(r0, r1, r2, r3, lo1, hi1));
        _mm512_storeu_ps(out[2], tile_column(r0, r1, r2, r3, lo2, hi2));
        _mm512_storeu_ps(out[3], tile_column(r0, r1, r2, r3, lo3, hi3));
    }
}

/* t[j] = the 16 floats src[c stride + j], c = 0..15 (zero for c >= nc): a 16 x 16 register
 * transpose of nc rows of stride `stride`. */
UNET__TARGET_AVX512 static inline void transpose16_avx512(__m512 t[16], const float *src,
                                                          size_t stride, int nc) {
    __m512 r[16];
    for (int i = 0; i < 16; i++)
        r[i] = i < nc ? _mm512_loadu_ps(src + (size_t)i * stride) : _mm512_setzero_ps();
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        const __m512d a0 = _mm512_castps_pd(t[i]), a1 = _mm512_castps_pd(t[i + 1]);
        const __m512d a2 = _mm512_castps_pd(t[i + 2]), a3 = _mm512_castps_pd(t[i + 3]);
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, a2));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, a2));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, a3));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, a3));
    }
    /* r[4 b + c] now holds, in its 128-bit lane L, column 4 L + c of rows 4 b .. 4 b + 3. */
    for (int c = 0; c < 4; c++) {
        const __m512 a0 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88);
        const __m512 a1 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xDD);
        const __m512 b0 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88);
        const __m512 b1 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xDD);
        t[c] = _mm512_shuffle_f32x4(a0, b0, 0x88);
        t[8 + c] = _mm512_shuffle_f32x4(a0, b0, 0xDD);
        t[4 + c] = _mm512_shuffle_f32x4(a1, b1, 0x88);
        t[12 + c] = _mm512_shuffle_f32x4(a1, b1, 0xDD);
    }
}

/* dst[j ld + c] = src[c stride + j] for the 16 tiles j and the nc channels c. */
__attribute__((unused)) UNET__TARGET_AVX512 static void
transpose_store_avx512(float *dst, size_t ld, const float *src, size_t stride, int nc) {
    __m512 t[16];
    transpose16_avx512(t, src, stride, nc);
    const __mmask16 m = tail_mask16(nc);
    for (int j = 0; j < 16; j++) _mm512_mask_storeu_ps(dst + (size_t)j * ld, m, t[j]);
}

/* ---- the GEMM micro-kernel ---- */

/* 8 rows x NV zmm columns: per k (a word of K), NV loads of B, 8 broadcasts of A, 8 NV
 * multiply-adds (24 accumulators for the full 48-wide panel).  Written out with macros: with arrays and loops the
 * compiler keeps the accumulators in memory. */
#define ROWS8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
#define Z_DECL1(r) __m512 c##r##0 = _mm512_setzero_ps();
#define Z_DECL2(r) Z_DECL1(r) __m512 c##r##1 = c##r##0;
#define Z_DECL3(r) Z_DECL2(r) __m512 c##r##2 = c##r##0;
#define Z_FMA1(r)                                                                               \
    { const Z_AVEC ar = Z_BCAST(A + (r)); c##r##0 = Z_MADD(c##r##0, ar, b0); }
#define Z_FMA2(r)                                                                               \
    {                                                                                           \
        const Z_AVEC ar = Z_BCAST(A + (r));                                                     \
        c##r##0 = Z_MADD(c##r##0, ar, b0);                                                      \
        c##r##1 = Z_MADD(c##r##1, ar, b1);                                                      \
    }
#define Z_FMA3(r)                                                                               \
    {                                                                                           \
        const Z_AVEC ar = Z_BCAST(A + (r));                                                     \
        c##r##0 = Z_MADD(c##r##0, ar, b0);                                                      \
        c##r##1 = Z_MADD(c##r##1, ar, b1);                                                      \
        c##r##2 = Z_MADD(c##r##2, ar, b2);                                                      \
    }
#define Z_PUT(P, v) _mm512_storeu_ps((P), acc ? _mm512_add_ps(_mm512_loadu_ps(P), (v)) : (v));
#define Z_ST1(r) Z_PUT(C + (size_t)(r) * ldc, c##r##0)
#define Z_ST2(r) Z_ST1(r) Z_PUT(C + (size_t)(r) * ldc + 16, c##r##1)
#define Z_ST3(r) Z_ST2(r) Z_PUT(C + (size_t)(r) * ldc + 32, c##r##2)
#define Z_LOAD1 const Z_BVEC b0 = Z_LOADB(B);
#define Z_LOAD2 Z_LOAD1 const Z_BVEC b1 = Z_LOADB(B + 16);
#define Z_LOAD3 Z_LOAD2 const Z_BVEC b2 = Z_LOADB(B + 32);
#define AVX512_KERNEL(NV)                                                                       \
    Z_TARGET static void gemm_avx512_##NV(const uint32_t *A, const uint32_t *B, int K, float *C,  \
                                          int ldc, bool acc) {                                  \
        ROWS8(Z_DECL##NV)                                                                       \
        for (int k = 0; k < K; k++, A += MR, B += 16 * NV) {                                    \
            Z_LOAD##NV                                                                          \
            ROWS8(Z_FMA##NV)                                                                    \
        }                                                                                       \
        ROWS8(Z_ST##NV)                                                                         \
    }
AVX512_KERNEL(1)
AVX512_KERNEL(2)
AVX512_KERNEL(3)

/* C (8 x width) (+)= A^T B over K words: the micro-kernel of winograd.h for width 16, 32, 48. */
Z_TARGET static inline void micro_gemm_avx512(const void *A, const void *B, int K, int width,
                                              float *C, int ldc, bool acc) {
    if (width == 48) gemm_avx512_3(A, B, K, C, ldc, acc);
    else if (width == 32) gemm_avx512_2(A, B, K, C, ldc, acc);
    else gemm_avx512_1(A, B, K, C, ldc, acc);
}

#endif /* UNET_OPS_WINOGRAD_AVX512_H */
