/* winograd_groups.h — Winograd F(4x4, 3x3)'s transforms and the passes built from them, one
 * group of LANES columns at a time: the body of every instruction set's kernels.
 *
 * Not a normal header: each winograd_<isa>.c includes it once, after defining
 *     WINO_TARGET    the target attribute its copy is compiled with (empty: the baseline)
 *     WINO_KERNELS   the name of the struct unet__wino_kernels it exports
 *     WINO_AVX512    1 when it has defined the AVX-512 row kernels gather_row16_avx512,
 *                    scatter_row16_avx512, pool_row16_avx512, dy_row16_avx512 and
 *                    transpose_store_avx512 (winograd_avx512.h), else 0
 *     WINO_BF16      1 when the GEMM operands it writes are bf16 pairs (winograd.h's words), with
 *                    pack_lanes_bf16, pack_weights_bf16 and transpose_pairs_bf16 defined
 *                    (winograd_avx512_bf16.c), else 0: float32
 * and the functions below, always inlined into the exported wrappers at the end, are compiled
 * for that instruction set.  The transforms run in float32 either way; only what they store for
 * the products (U, V, and the weight gradient's Xt and Dt) changes format, in one place each
 * (store_weights, store_lanes, transpose_words).  The math is in winograd.c's opening comment;
 * the tests run every copy against unet__conv2d_forward_ref / _backward_ref
 * (tests/test_winograd.c).
 */
#ifndef UNET_OPS_WINOGRAD_GROUPS_H
#define UNET_OPS_WINOGRAD_GROUPS_H

#include "ops/winograd.h"

#if !defined(WINO_TARGET) || !defined(WINO_KERNELS) || !defined(WINO_AVX512) || !defined(WINO_BF16)
#error "define WINO_TARGET, WINO_KERNELS, WINO_AVX512 and WINO_BF16 before winograd_groups.h"
#endif

/* A word of the GEMM operands and the K values it holds (winograd.h). */
#if WINO_BF16
typedef uint32_t word;
enum { PACK = 2 };
#else
typedef float word;
enum { PACK = 1 };
#endif

/* ---- the transforms, each on `lanes` independent columns ----
 * Each 2-D transform X -> T X T^T is its 1-D transform T applied twice (TWO_SIDED): down the
 * columns of X (n_in x n_in, row-major) into t = T X (n_out x n_in), then along the rows of t.
 * A 1-D transform reads its n_in inputs at x, x + sx, ... and writes its n_out outputs at y,
 * y + sy, ..., each a run of `lanes` floats. */

#define TWO_SIDED(T, n_in, n_out, lanes, out, in)                                              \
    TWO_SIDED_AT(T, n_in, n_out, lanes, out, in, lanes)

/* The same with element (r, c) of X at in + (r n_in + c) step (step >= lanes): read where
 * it lies (the output transform's sums, in M) instead of copied first. */
#define TWO_SIDED_AT(T, n_in, n_out, lanes, out, in, step)                                     \
    do {                                                                                       \
        float t_[(n_out) * (n_in) * (lanes)];                                                  \
        for (int c_ = 0; c_ < (n_in); c_++)                                                    \
            T(t_ + c_ * (lanes), (n_in) * (lanes), (in) + c_ * (size_t)(step),                 \
              (n_in) * (size_t)(step));                                                        \
        for (int r_ = 0; r_ < (n_out); r_++)                                                   \
            T((out) + r_ * (n_out) * (lanes), (lanes), t_ + r_ * (n_in) * (lanes), (lanes));   \
    } while (0)

/* G (6x3), on the WL (input channel, output channel) lanes of the weight transform. */
static ALWAYS_INLINE void g_1d(float *y, size_t sy, const float *x, size_t sx) {
    for (int j = 0; j < WL; j++) {
        float g0 = x[j], g1 = x[sx + j], g2 = x[2 * sx + j];
        y[j] = g0 * (1.0f / 4);
        y[sy + j] = (g0 + g1 + g2) * (-1.0f / 6);
        y[2 * sy + j] = (g0 - g1 + g2) * (-1.0f / 6);
        y[3 * sy + j] = g0 * (1.0f / 24) + g1 * (1.0f / 12) + g2 * (1.0f / 6);
        y[4 * sy + j] = g0 * (1.0f / 24) - g1 * (1.0f / 12) + g2 * (1.0f / 6);
        y[5 * sy + j] = g2;
    }
}

/* B^T (6x6). */
static ALWAYS_INLINE void bt_1d(float *y, size_t sy, const float *x, size_t sx) {
    for (int j = 0; j < LANES; j++) {
        float d0 = x[j], d1 = x[sx + j], d2 = x[2 * sx + j];
        float d3 = x[3 * sx + j], d4 = x[4 * sx + j], d5 = x[5 * sx + j];
        y[j] = 4.0f * d0 - 5.0f * d2 + d4;
        y[sy + j] = -4.0f * (d1 + d2) + (d3 + d4);
        y[2 * sy + j] = 4.0f * (d1 - d2) + (d4 - d3);
        y[3 * sy + j] = 2.0f * (d3 - d1) + (d4 - d2);
        y[4 * sy + j] = 2.0f * (d1 - d3) + (d4 - d2);
        y[5 * sy + j] = 4.0f * d1 - 5.0f * d3 + d5;
    }
}

/* A^T (4x6). */
static ALWAYS_INLINE void at_1d(float *y, size_t sy, const float *x, size_t sx) {
    for (int j = 0; j < LANES; j++) {
        float m0 = x[j], m1 = x[sx + j], m2 = x[2 * sx + j];
        float m3 = x[3 * sx + j], m4 = x[4 * sx + j], m5 = x[5 * sx + j];
        float s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4;
        y[j] = m0 + s12 + s34;
        y[sy + j] = d12 + 2.0f * d34;
        y[2 * sy + j] = s12 + 4.0f * s34;
        y[3 * sy + j] = d12 + 8.0f * d34 + m5;
    }
}

/* A (6x4), the adjoint of A^T: the weight gradient's transform of the output gradient. */
static ALWAYS_INLINE void a_1d(float *y, size_t sy, const float *x, size_t sx) {
    for (int j = 0; j < LANES; j++) {
        float y0 = x[j], y1 = x[sx + j], y2 = x[2 * sx + j], y3 = x[3 * sx + j];
        float s02 = y0 + y2, s13 = y1 + y3, q = y0 + 4.0f * y2, r = 2.0f * y1 + 8.0f * y3;
        y[j] = y0;
        y[sy + j] = s02 + s13;
        y[2 * sy + j] = s02 - s13;
        y[3 * sy + j] = q + r;
        y[4 * sy + j] = q - r;
        y[5 * sy + j] = y3;
    }
}

/* G^T (3x6), the adjoint of G: the weight gradient from the 6x6 sums. */
static ALWAYS_INLINE void gt_1d(float *y, size_t sy, const float *x, size_t sx) {
    for (int j = 0; j < LANES; j++) {
        float m0 = x[j], m1 = x[sx + j], m2 = x[2 * sx + j];
        float m3 = x[3 * sx + j], m4 = x[4 * sx + j], m5 = x[5 * sx + j];
        y[j] = m0 * (1.0f / 4) - (m1 + m2) * (1.0f / 6) + (m3 + m4) * (1.0f / 24);
        y[sy + j] = (m2 - m1) * (1.0f / 6) + (m3 - m4) * (1.0f / 12);
        y[2 * sy + j] = (m3 + m4 - m1 - m2) * (1.0f / 6) + m5;
    }
}

/* u (36, WL) = G g G^T for g (9, WL). */
static ALWAYS_INLINE void kernel_transform(float u[36][WL], float g[9][WL]) {
    TWO_SIDED(g_1d, 3, 6, WL, &u[0][0], &g[0][0]);
}

/* v (36, LANES) = B^T d B for d (36, LANES), both row-major 6x6. */
static ALWAYS_INLINE void input_transform(float v[36][LANES], float d[36][LANES]) {
    TWO_SIDED(bt_1d, 6, 6, LANES, &v[0][0], &d[0][0]);
}

/* z (36, LANES) = A y A^T for a 4x4 output-gradient tile y (16, LANES). */
static ALWAYS_INLINE void grad_transform(float z[36][LANES], float y[16][LANES]) {
    TWO_SIDED(a_1d, 4, 6, LANES, &z[0][0], &y[0][0]);
}

/* o (9, LANES) = G^T m G for m (36, LANES): the 3x3 weight gradient from the 6x6 sums. */
static ALWAYS_INLINE void wgrad_transform(float o[9][LANES], float m[36][LANES]) {
    TWO_SIDED(gt_1d, 6, 3, LANES, &o[0][0], &m[0][0]);
}

/* ---- one group of LANES columns of each pass ---- */

/* u[k] (WL lanes: nci input channels of MR) into U's words: a float per lane, or bf16 pairs of
 * input channels (2i, 2i + 1) per output channel. */
static ALWAYS_INLINE void store_weights(word *dst, const float u[WL], int nci) {
#if WINO_BF16
    pack_weights_bf16(dst, u, nci);
#else
    memcpy(dst, u, sizeof(float) * (size_t)nci * MR);
#endif
}

/* The run of n floats at p into the cache ahead of its use (a prefetch never faults). */
static ALWAYS_INLINE void prefetch_run(const float *p, int n) {
    for (int l = 0; l < n; l += 16) __builtin_prefetch(p + l);
    __builtin_prefetch(p + n - 1);
}

/* Input channels ahead of the current group whose weights weights_group fetches (below). */
#define W_AHEAD 8

/* Input channels [ci0, ci0 + WCI) of the transformed weights of output-channel panel cp, into
 * U (36, words of C_in, MR): lanes are (input channel, output channel), so each k's results are
 * one contiguous run.  ldu counts words (k planes of U are ldu MR words apart) and U starts at
 * input channel cibase (a multiple of WCI).  Output channels past C_out are zero.  flip: the input-gradient kernel
 * w'[co][ci][kh][kw] = w[ci][co][2 - kh][2 - kw] of a weight stored as (C_in, C_out, 3, 3)
 * (the forward convolution's (C_out, C_in, 3, 3), whose C_in is this convolution's C_out).
 * The runs of w that a group W_AHEAD input channels on reads are fetched now: weights too large
 * to keep (training's 256- to 1024-channel layers) are transformed again at each tile block,
 * from memory, and these scattered runs stalled on it (perf of a bf16 training step, 256x256
 * batch 4, 2 threads: the weight transform 9.4% of the samples against the GEMM's 23%, with
 * the prefetch 5.0-5.8% against 20-25%). */
static ALWAYS_INLINE void weights_group(word *U, const float *w, bool flip,
                                        const struct wino_args *a, int cp, int ci0, int ldu,
                                        int cibase) {
    const int C_in = a->d->C_in, C_out = a->d->C_out;
    const int nci = C_in - ci0 < WCI ? C_in - ci0 : WCI;
    float g[9][WL], u[36][WL];
    if (nci < WCI || (cp + 1) * MR > C_out) memset(g, 0, sizeof g);
    const int nco = C_out - cp * MR < MR ? C_out - cp * MR : MR;
    if (flip) { /* input channel by input channel: each one's nco kernels are one run of w */
        for (int i = 0; i < nci; i++) {
            const float *src = w + ((size_t)(ci0 + i) * C_out + (size_t)cp * MR) * 9;
            if (ci0 + i + W_AHEAD < C_in) prefetch_run(src + (size_t)W_AHEAD * C_out * 9, nco * 9);
            for (int r = 0; r < nco; r++)
                for (int k = 0; k < 9; k++) g[k][i * MR + r] = src[r * 9 + 8 - k];
        }
    } else {
        for (int r = 0; r < nco; r++) {
            const float *src = w + ((size_t)(cp * MR + r) * C_in + ci0) * 9;
            if (ci0 + nci + W_AHEAD <= C_in) prefetch_run(src + W_AHEAD * 9, nci * 9);
            for (int i = 0; i < nci; i++)
                for (int k = 0; k < 9; k++) g[k][i * MR + r] = src[i * 9 + k];
        }
    }
    kernel_transform(u, g);
    for (int k = 0; k < 36; k++)
        store_weights(U + ((size_t)k * ldu + (size_t)(ci0 - cibase) / PACK) * MR, u[k], nci);
}

/* dd (36, LANES): the 6x6 input patches of channel ci for the tiles t0.. t0 + LANES (zero
 * past the last tile), with the zero padding applied on the fly. */
static ALWAYS_INLINE void gather_patches(float dd[36][LANES], const float *x,
                                         const struct wino_args *a, int ci, size_t t0) {
    const struct unet__conv2d_dims *d = a->d;
    const int H = d->H_in, W = d->W_in;
    for (int j = 0; j < LANES; j++) {
        size_t t = t0 + j;
        if (t >= a->p.tiles) {
            for (int k = 0; k < 36; k++) dd[k][j] = 0.0f;
            continue;
        }
        const struct wino_tile tl = tile_at(&a->p, t);
        const int ih0 = tl.oh0 - d->pad_h, iw0 = tl.ow0 - d->pad_w;
        const float *xc = in_plane(a, x, tl.n, ci);
        if (ih0 >= 0 && iw0 >= 0 && ih0 + 6 <= H && iw0 + 6 <= W) {
            for (int ri = 0; ri < 6; ri++) {
                const float *row = xc + (size_t)(ih0 + ri) * W + iw0;
                for (int c = 0; c < 6; c++) dd[ri * 6 + c][j] = row[c];
            }
        } else {
            for (int ri = 0; ri < 6; ri++) {
                int ih = ih0 + ri;
                for (int c = 0; c < 6; c++) {
                    int iw = iw0 + c;
                    dd[ri * 6 + c][j] =
                        ih >= 0 && ih < H && iw >= 0 && iw < W ? xc[(size_t)ih * W + iw] : 0.0f;
                }
            }
        }
    }
}

/* The patches of 16 tiles: by rows (AVX-512) when they are consecutive in one tile row. */
static ALWAYS_INLINE void gather_group(float dd[36][LANES], const float *x,
                                       const struct wino_args *a, int ci, size_t t0) {
#if WINO_AVX512
    if (row_of_lanes(&a->p, t0)) {
        /* The row kernel prefetches the same rows PACK channels on: input_group gathers the
         * PACK channels of a word together, so the next channel of a bf16 pair is read right
         * after this one, and the next word's channels groups later (a prefetch of the very
         * next channel came too late to help half of the bf16 gathers). */
        const struct unet__conv2d_dims *d = a->d;
        const struct wino_tile tl = tile_at(&a->p, t0);
        gather_row16_avx512(dd, in_plane(a, x, tl.n, ci), tl.oh0 - d->pad_h, tl.ow0 - d->pad_w,
                            d->H_in, d->W_in, (size_t)PACK * d->H_in * d->W_in);
        return;
    }
#endif
    gather_patches(dd, x, a, ci, t0);
}

/* The transformed patches of PACK channels (one, or the two of a bf16 pair: lo, hi) of 16 tiles
 * into one run of V's words. */
static ALWAYS_INLINE void store_lanes(word *dst, const float lo[LANES], const float hi[LANES]) {
#if WINO_BF16
    pack_lanes_bf16(dst, lo, hi);
#else
    (void)hi;
    memcpy(dst, lo, sizeof(float) * LANES);
#endif
}

/* Group q of V for the tiles [t0, t0 + nt), nt a multiple of LANES: the word of input channels
 * [PACK i, PACK i + PACK) with i = q / groups (zero past C_in), tiles from q % groups * LANES
 * (those past the last tile are zero).  V[k] (words of C_in, nt) is stored in panels of NR tiles
 * (panel_offset), the order the GEMM micro-kernel reads it.  Patches are gathered with the zero
 * padding applied on the fly. */
static ALWAYS_INLINE void input_group(word *V, const float *x, const struct wino_args *a,
                                      size_t t0, int nt, int q) {
    const int C_in = a->d->C_in, kw = (C_in + PACK - 1) / PACK, groups = nt / LANES;
    const int i = q / groups, g0 = q % groups * LANES;
    float v[PACK][36][LANES];
    for (int c = 0; c < PACK; c++) {
        if (i * PACK + c >= C_in) {
            memset(v[c], 0, sizeof v[c]);
            continue;
        }
        float dd[36][LANES];
        gather_group(dd, x, a, i * PACK + c, t0 + (size_t)g0);
        input_transform(v[c], dd);
    }
    int width;
    word *dst = V + panel_offset(kw, nt, g0, &width) + (size_t)i * width + g0 % NR;
    for (int k = 0; k < 36; k++) store_lanes(dst + (size_t)k * kw * nt, v[0][k], v[PACK - 1][k]);
}

/* The epilogue's pooled copy of 16 tiles of channel co: each 4x4 tile holds whole 2x2 windows
 * (tiles start at multiples of 4); windows past H_out / 2, W_out / 2 (floor mode) are dropped.
 * maxpool.c's window (unet__maxpool_window), over the 16 lanes. */
static ALWAYS_INLINE void pool_tiles(float *pool, float o[16][LANES], const struct wino_args *a,
                                     size_t t0, int co) {
    const struct unet__conv2d_dims *d = a->d;
    const int Hp = d->H_out / 2, Wp = d->W_out / 2;
    float pm[4][LANES]; /* window (pr, q) = 2 pr + q of each tile */
    for (int w = 0; w < 4; w++) {
        const int k = 8 * (w / 2) + 2 * (w % 2);
        for (int j = 0; j < LANES; j++) {
            uint8_t arg; /* unused */
            pm[w][j] = unet__maxpool_window(o[k][j], o[k + 1][j], o[k + 4][j], o[k + 5][j], &arg);
        }
    }
#if WINO_AVX512
    if (row_of_lanes(&a->p, t0)) {
        const struct wino_tile tl = tile_at(&a->p, t0);
        pool_row16_avx512(pool + ((size_t)tl.n * d->C_out + co) * Hp * Wp, pm, tl.oh0 / 2,
                          tl.ow0 / 2, Hp, Wp, a->stream);
        return;
    }
#endif
    for (int j = 0; j < LANES; j++) {
        size_t t = t0 + j;
        if (t >= a->p.tiles) break;
        const struct wino_tile tl = tile_at(&a->p, t);
        const int ph0 = tl.oh0 / 2, pw0 = tl.ow0 / 2;
        float *pc = pool + ((size_t)tl.n * d->C_out + co) * Hp * Wp;
        for (int pr = 0; pr < 2 && ph0 + pr < Hp; pr++)
            for (int q = 0; q < 2 && pw0 + q < Wp; q++)
                pc[(size_t)(ph0 + pr) * Wp + pw0 + q] = pm[2 * pr + q][j];
    }
}

/* Group q of the outputs: y[:, q / groups] (=|+=) epilogue(A^T M A) for the tiles from
 * t0 + q % groups * LANES.  M[k] is row-major (cop, nt). */
static ALWAYS_INLINE void output_group(float *y, const float *M, const struct wino_args *a,
                                       size_t t0, int nt, int q) {
    const struct unet__conv2d_dims   *d = a->d;
    const struct unet__conv_epilogue *ep = a->ep;
    const int C_out = d->C_out, H = d->H_out, W = d->W_out;
    const int groups = nt / LANES;
    const int co = q / groups, g0 = q % groups * LANES;
    float o[16][LANES];
    /* o = A^T m A for the 36 rows m[k] = M[k][co][g0 ..] (M[k] is (cop, nt)). */
    TWO_SIDED_AT(at_1d, 6, 4, LANES, &o[0][0], M + (size_t)co * nt + g0, (size_t)a->p.cop * nt);
    const bool acc = ep && ep->accumulate;
    unet__epilogue_apply(&o[0][0], 16 * LANES, ep, co);
    if (ep && ep->pool) pool_tiles(ep->pool, o, a, t0 + (size_t)g0, co);
#if WINO_AVX512
    if (row_of_lanes(&a->p, t0 + (size_t)g0)) {
        const struct wino_tile tl = tile_at(&a->p, t0 + (size_t)g0);
        scatter_row16_avx512(y + ((size_t)tl.n * C_out + co) * H * W, o, tl.oh0, tl.ow0, H, W,
                             acc, a->stream && !acc);
        return;
    }
#endif
    for (int j = 0; j < LANES; j++) {
        size_t t = t0 + (size_t)g0 + j;
        if (t >= a->p.tiles) break;
        const struct wino_tile tl = tile_at(&a->p, t);
        int nh = H - tl.oh0 < 4 ? H - tl.oh0 : 4, nw = W - tl.ow0 < 4 ? W - tl.ow0 : 4;
        float *yc = y + ((size_t)tl.n * C_out + co) * H * W;
        for (int ri = 0; ri < nh; ri++) {
            float *row = yc + (size_t)(tl.oh0 + ri) * W + tl.ow0;
            if (acc)
                for (int cj = 0; cj < nw; cj++) row[cj] += o[ri * 4 + cj][j];
            else
                for (int cj = 0; cj < nw; cj++) row[cj] = o[ri * 4 + cj][j];
        }
    }
}

/* ---- weight gradient: the groups ----
 * Xt[k] holds the transformed input patches of a tile block in panels of NR input channels,
 * (ci16 / NR panels, nt, width) with C_in rounded up to 16 (ci16; zero channels past C_in);
 * Dt[k] the transformed output-gradient tiles of a block of output channels in panels of MR,
 * (cobp / MR, nt, MR); the GEMM micro-kernel then reduces over the tiles, so their words hold
 * PACK consecutive tiles: panels (nt / PACK, width) and (nt / PACK, MR). */

/* dst[j ld + c] = src[c stride + j] for the 16 tiles j and the nc (8 or 16) channels c: the
 * transposition from the transforms' lanes (tiles) to the micro-kernel's rows (tiles of
 * channels); with bf16 words, row j / 2 holds tiles j and j + 1 as pairs.  AVX-512: a 16 x 16
 * register transpose; otherwise element by element. */
static ALWAYS_INLINE void transpose_words(word *dst, size_t ld, const float *src, size_t stride,
                                          int nc) {
#if WINO_BF16
    transpose_pairs_bf16(dst, ld, src, stride, nc);
#elif WINO_AVX512
    transpose_store_avx512(dst, ld, src, stride, nc);
#else
    for (int j = 0; j < LANES; j++)
        for (int c = 0; c < nc; c++) dst[(size_t)j * ld + c] = src[(size_t)c * stride + j];
#endif
}

/* Group q: input channels [16 (q / groups), + 16) (zero past C_in), tiles from
 * q % groups * LANES: 16 channels at a time so that the transposition is one 16 x 16 block. */
static ALWAYS_INLINE void wgrad_x_group(word *Xt, const float *x, const struct wino_args *a,
                                        size_t t0, int nt, int q) {
    const int ci16 = ci16_of(a->d), groups = nt / LANES;
    const int ci0 = q / groups * LANES, g0 = q % groups * LANES;
    const int width = ci16 - ci0 / NR * NR < NR ? ci16 - ci0 / NR * NR : NR;
    float v[LANES][36][LANES]; /* (channel, k, tile) */
    for (int c = 0; c < LANES; c++) {
        if (ci0 + c < a->d->C_in) {
            float dd[36][LANES];
            gather_group(dd, x, a, ci0 + c, t0 + (size_t)g0);
            input_transform(v[c], dd);
        } else {
            memset(v[c], 0, sizeof v[c]);
        }
    }
    word *dst = Xt + (size_t)(ci0 / NR) * NR * (nt / PACK) + (size_t)(g0 / PACK) * width + ci0 % NR;
    for (int k = 0; k < 36; k++)
        transpose_words(dst + (size_t)k * ci16 * (nt / PACK), (size_t)width, v[0][k], 36 * LANES,
                        LANES);
}

/* Group q: the MR output channels co0 + MR (q / groups) .. (zero past co0 + cob), tiles from
 * q % groups * LANES: each 4x4 tile of dy (zero outside the output) transformed to A dy A^T. */
static ALWAYS_INLINE void wgrad_dy_group(word *Dt, const float *dy, const struct wino_args *a,
                                         int co0, int cob, size_t t0, int nt, int q) {
    const struct unet__conv2d_dims *d = a->d;
    const int H = d->H_out, W = d->W_out, groups = nt / LANES, cobp = round_up(cob, MR);
    const int c0 = q / groups * MR, g0 = q % groups * LANES;
    float z[MR][36][LANES]; /* (channel, k, tile) */
    for (int c = 0; c < MR; c++) {
        float yy[16][LANES];
#if WINO_AVX512
        if (c0 + c < cob && row_of_lanes(&a->p, t0 + (size_t)g0)) {
            const struct wino_tile tl = tile_at(&a->p, t0 + (size_t)g0);
            dy_row16_avx512(yy, dy + ((size_t)tl.n * d->C_out + co0 + c0 + c) * H * W, tl.oh0,
                            tl.ow0, H, W);
            grad_transform(z[c], yy);
            continue;
        }
#endif
        memset(yy, 0, sizeof yy);
        for (int j = 0; j < LANES && c0 + c < cob; j++) {
            size_t t = t0 + (size_t)g0 + j;
            if (t >= a->p.tiles) break;
            const struct wino_tile tl = tile_at(&a->p, t);
            int nh = H - tl.oh0 < 4 ? H - tl.oh0 : 4, nw = W - tl.ow0 < 4 ? W - tl.ow0 : 4;
            const float *yc = dy + ((size_t)tl.n * d->C_out + co0 + c0 + c) * H * W;
            for (int ri = 0; ri < nh; ri++)
                for (int cj = 0; cj < nw; cj++)
                    yy[ri * 4 + cj][j] = yc[(size_t)(tl.oh0 + ri) * W + tl.ow0 + cj];
        }
        grad_transform(z[c], yy);
    }
    word *dst = Dt + (size_t)(c0 / MR) * MR * (nt / PACK) + (size_t)(g0 / PACK) * MR;
    for (int k = 0; k < 36; k++)
        transpose_words(dst + (size_t)k * cobp * (nt / PACK), MR, z[0][k], 36 * LANES, MR);
}

/* Group q: dw[co0 + q / groups][ci..ci + LANES] += G^T M G, M (36, cobp, ci16) the sum of the
 * parts' partial sums in part order. */
static ALWAYS_INLINE void wgrad_out_group(float *dw, const float *M, const struct wino_args *a,
                                          int co0, int cob, int q) {
    const int C_in = a->d->C_in, ci16 = ci16_of(a->d), groups = ci16 / LANES;
    const int cobp = round_up(cob, MR);
    const int c = q / groups, ci0 = q % groups * LANES, co = co0 + c;
    const int nl = C_in - ci0 < LANES ? C_in - ci0 : LANES;
    float m[36][LANES], o[9][LANES];
    for (int k = 0; k < 36; k++) {
        const float *src = M + ((size_t)k * cobp + c) * ci16 + ci0;
        memcpy(m[k], src, sizeof m[k]);
        for (int j = 1; j < a->parts; j++)
            for (int l = 0; l < LANES; l++) m[k][l] += src[(size_t)j * a->part_floats + l];
    }
    wgrad_transform(o, m);
    float *dst = dw + ((size_t)co * C_in + ci0) * 9;
    for (int j = 0; j < nl; j++)
        for (int k = 0; k < 9; k++) dst[(size_t)j * 9 + k] += o[k][j];
}

/* ---- the exported set: the groups compiled for WINO_TARGET ---- */

WINO_TARGET static void weights_pass(void *U, const float *w, bool flip,
                                     const struct wino_args *a, int cp, int ci0, int ldu,
                                     int cibase) {
    weights_group(U, w, flip, a, cp, ci0, ldu, cibase);
}
WINO_TARGET static void input_pass(void *V, const float *x, const struct wino_args *a,
                                   size_t t0, int nt, int q) {
    input_group(V, x, a, t0, nt, q);
}
WINO_TARGET static void output_pass(float *y, const float *M, const struct wino_args *a,
                                    size_t t0, int nt, int q) {
    output_group(y, M, a, t0, nt, q);
}
WINO_TARGET static void wx_pass(void *Xt, const float *x, const struct wino_args *a, size_t t0,
                                int nt, int q) {
    wgrad_x_group(Xt, x, a, t0, nt, q);
}
WINO_TARGET static void wdy_pass(void *Dt, const float *dy, const struct wino_args *a, int co0,
                                 int cob, size_t t0, int nt, int q) {
    wgrad_dy_group(Dt, dy, a, co0, cob, t0, nt, q);
}
WINO_TARGET static void wout_pass(float *dw, const float *M, const struct wino_args *a, int co0,
                                  int cob, int q) {
    wgrad_out_group(dw, M, a, co0, cob, q);
}

const struct unet__wino_kernels WINO_KERNELS = {weights_pass, input_pass, output_pass,
                                                wx_pass,      wdy_pass,   wout_pass};

#endif /* UNET_OPS_WINOGRAD_GROUPS_H */
