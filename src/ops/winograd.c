/* winograd.c — the 3x3, stride-1 convolution as Winograd's minimal filtering F(4x4, 3x3).
 *
 * im2col + GEMM spends 9 multiplications per input channel on every output pixel.  Winograd's
 * F(4x4, 3x3) (Lavin & Gray 2016) computes a 4x4 block of outputs from a 6x6 input patch d and
 * the 3x3 kernel g as
 *     Y = A^T [ (G g G^T) ⊙ (B^T d B) ] A
 * whose element-wise product has 36 terms instead of 16 * 9 = 144: summed over input channels,
 * it becomes 36 independent GEMMs, each 1/4 of the multiplications of the direct method, plus
 * transforms that cost O(channels * pixels) instead of O(channels^2 * pixels).  The matrices
 * (interpolation points 0, 1, -1, 2, -2, infinity) are in B^T, G and A^T below.
 *
 * Layout, for a block of TB tiles (the tiles of all images are one index):
 *     V[k][ci][t]    the transformed input patches        (36, C_in, TB)
 *     U[k][ci][r]    the transformed weights of one panel of MR output channels (36, C_in, MR)
 *     M[k][co][t]  = U[k] V[k]                            (36, C_out rounded up to MR, TB)
 * then each tile's 6x6 column M[:][co][t] is transformed back to 4x4 outputs.  V is stored in
 * panels of NR tiles and U per panel of MR output channels, the order the GEMM micro-kernel
 * (MR x NR accumulators in registers) reads them, so the transforms pack for free.  Small
 * layers keep all of U for the call; for large ones a thread transforms a panel's weights
 * KC input channels at a time into its own cache-resident buffer right before the products
 * that use them, so the 4x larger transformed weights never go through memory in full.
 *
 * The input and output transforms run on 16 tiles at once, one per vector lane (on AVX-512, 16
 * consecutive tiles of a row are loaded and stored as runs of a row with masked vector moves and
 * permutes); the weight transform on (input, output channel) pairs.  Each output is computed by
 * one thread in one order whatever the thread count.  Kernels are compiled for AVX-512,
 * AVX2+FMA and the compiler's baseline and chosen at run time (unet__cpu_has).
 *
 * Numerics: the transforms add float32 roundings of values up to ~100x the inputs (the +-4,
 * +-5, +-8 coefficients on both sides); measured against the double-precision _ref
 * (tests/test_winograd.c) the error stays within 5e-6 of the output scale, against ~1e-7 for
 * im2col + GEMM, well inside the whole-model parity tolerance (1e-4).  F(6x6, 3x3) was
 * rejected: its larger coefficients lose about one more decimal digit.  F(2x2, 3x3) would save
 * only 2.25x, not enough to pass a library that already runs its GEMMs at ~90% of the peak.
 *
 * The same routine computes the 3x3 convolution's input gradient: dx = conv(dy, w') with
 * w'[ci][co] = w[co][ci] rotated by 180 degrees and padding 2 - pad (unet__winograd_dims_data);
 * the weight gradient uses the adjoint transforms (unet__conv2d_winograd_wgrad, at the end).
 */
#include "cpu.h"
#include "ops/ops.h"

#include <string.h>

enum {
    LANES = 16,     /* tiles per input/output-transform step */
    MR = UNET__MICRO_MR, /* output channels per GEMM micro-tile (rows of a U panel) */
    NR = UNET__MICRO_NR, /* tiles per GEMM micro-tile (V panel columns; the last may be 16, 32) */
    WCI = 8,        /* input channels per weight-transform step */
    WL = WCI * MR,  /* weight-transform lanes: (input channel, output channel) pairs */
    KC_DEFAULT = 128 /* input channels per chunk of transformed weights (chunked_products) */
};

/* Floats of V + M per tile block: 4 MiB, so that a block stays in the caches between the
 * passes.  unet__winograd_set_budget lowers it (and U_KEEP, KC below) so that small tests
 * cover several blocks, unkept weights and several weight chunks. */
#define VM_BUDGET_DEFAULT ((size_t)1 << 20)
static size_t vm_budget = VM_BUDGET_DEFAULT;

/* Transformed weights of all output channels up to this many floats (8 MiB) are kept for the
 * whole call, transformed once; larger ones (the 512- and 1024-channel layers, which have few
 * tile blocks) are transformed per tile block into per-thread panel buffers. */
#define U_KEEP_DEFAULT ((size_t)1 << 21)
static size_t u_keep = U_KEEP_DEFAULT;
static int    kc_chunk = KC_DEFAULT;

void unet__winograd_set_budget(size_t floats) {
    vm_budget = floats ? floats : VM_BUDGET_DEFAULT;
    u_keep = floats ? floats : U_KEEP_DEFAULT;
    kc_chunk = floats ? 16 : KC_DEFAULT;
}

/* Below 16 output channels the per-channel transforms cost more than the 4x cheaper products
 * save (and such narrow layers are where whole-network finite-difference checks have the least
 * margin for Winograd's extra rounding). */
bool unet__winograd_applies(const struct unet__conv2d_dims *d) {
    return d->K_h == 3 && d->K_w == 3 && d->stride_h == 1 && d->stride_w == 1 && d->pad_h <= 2 &&
           d->pad_w <= 2 && d->C_out >= 16;
}

/* Threads that get their own buffers: unet__thread_slots() (the processors OpenMP sees, fixed
 * for the process).  The same number sizes the scratch and caps the team. */

struct wino_plan {
    int    tiles_h, tiles_w;    /* 4x4 output tiles per image */
    size_t tiles;               /* all images */
    int    cop;                 /* C_out rounded up to MR: M's rows */
    int    tb;                  /* tiles per block, a multiple of NR (or all, a multiple of 16) */
    bool   keep_u;              /* all panels of U kept for the call (U_KEEP) */
    int    tb_own;              /* tiles per block when each thread runs whole blocks (keep_u) */
};

static int round_up(int x, int m) {
    return (x + m - 1) / m * m;
}

/* The tile geometry, in one place.  Tiles are numbered image by image, row by row: tile t is
 * in image n at tile row r / tiles_w, tile column r % tiles_w (r = t mod tiles per image); its
 * 4x4 outputs start at (oh0, ow0) = 4 (tile row, tile column), its 6x6 input patch at
 * (oh0 - pad_h, ow0 - pad_w), and its 2x2 pooled outputs (a fused max-pool) at
 * (oh0 / 2, ow0 / 2). */
struct wino_tile {
    int n, oh0, ow0;
};

static inline struct wino_tile tile_at(const struct wino_plan *p, size_t t) {
    const size_t per_image = (size_t)p->tiles_h * p->tiles_w;
    const int    r = (int)(t % per_image);
    return (struct wino_tile){(int)(t / per_image), r / p->tiles_w * 4, r % p->tiles_w * 4};
}

/* Whether the LANES tiles from t0 all exist and lie in one tile row: their outputs are then
 * runs of 4 LANES consecutive pixels (the AVX-512 row kernels). */
static inline bool row_of_lanes(const struct wino_plan *p, size_t t0) {
    const size_t per_image = (size_t)p->tiles_h * p->tiles_w;
    return t0 + LANES <= p->tiles &&
           (int)(t0 % per_image % (size_t)p->tiles_w) + LANES <= p->tiles_w;
}

static struct wino_plan plan_of(const struct unet__conv2d_dims *d) {
    struct wino_plan p;
    p.tiles_h = (d->H_out + 3) / 4;
    p.tiles_w = (d->W_out + 3) / 4;
    p.tiles = (size_t)d->N * p.tiles_h * p.tiles_w;
    p.cop = round_up(d->C_out, MR);
    size_t tb = vm_budget / (36 * ((size_t)d->C_in + (size_t)p.cop));
    tb = tb < NR ? NR : tb / NR * NR;
    size_t all = (p.tiles + LANES - 1) / LANES * LANES;
    p.tb = (int)(tb < all ? tb : all);
    p.keep_u = 36 * (size_t)p.cop * d->C_in <= u_keep;
    /* A thread's own block: V + M in a quarter of the budget (about its share of L2). */
    size_t to = vm_budget / 4 / (36 * ((size_t)d->C_in + (size_t)p.cop));
    to = to < NR ? NR : to / NR * NR;
    p.tb_own = (int)(to < all ? to : all);
    return p;
}

size_t unet__winograd_scratch_floats(const struct unet__conv2d_dims *d) {
    if (!unet__winograd_applies(d)) return 0;
    struct wino_plan p = plan_of(d);
    size_t u = p.keep_u ? (size_t)p.cop * d->C_in : (size_t)unet__thread_slots() * kc_chunk * MR;
    size_t vm = ((size_t)d->C_in + (size_t)p.cop) * p.tb;
    size_t vm_own = (size_t)unet__thread_slots() * ((size_t)d->C_in + (size_t)p.cop) * p.tb_own;
    return 36 * (u + (vm > vm_own ? vm : vm_own));
}

struct unet__conv2d_dims unet__winograd_dims_data(const struct unet__conv2d_dims *d) {
    struct unet__conv2d_dims a = *d;
    a.C_in = d->C_out, a.H_in = d->H_out, a.W_in = d->W_out;
    a.C_out = d->C_in, a.H_out = d->H_in, a.W_out = d->W_in;
    a.pad_h = d->K_h - 1 - d->pad_h, a.pad_w = d->K_w - 1 - d->pad_w;
    return a;
}

#define ALWAYS_INLINE inline __attribute__((always_inline))

/* ---- the three transforms, each on LANES independent columns ---- */

/* u (36, WL) = G g G^T for g (9, WL). */
static ALWAYS_INLINE void kernel_transform(float u[36][WL], float g[9][WL]) {
    float t[6][3][WL];      /* G g: (6, 3) */
    for (int c = 0; c < 3; c++)
        for (int j = 0; j < WL; j++) {
            float g0 = g[c][j], g1 = g[3 + c][j], g2 = g[6 + c][j];
            t[0][c][j] = g0 * (1.0f / 4);
            t[1][c][j] = (g0 + g1 + g2) * (-1.0f / 6);
            t[2][c][j] = (g0 - g1 + g2) * (-1.0f / 6);
            t[3][c][j] = g0 * (1.0f / 24) + g1 * (1.0f / 12) + g2 * (1.0f / 6);
            t[4][c][j] = g0 * (1.0f / 24) - g1 * (1.0f / 12) + g2 * (1.0f / 6);
            t[5][c][j] = g2;
        }
    for (int r = 0; r < 6; r++)
        for (int j = 0; j < WL; j++) {
            float g0 = t[r][0][j], g1 = t[r][1][j], g2 = t[r][2][j];
            u[r * 6 + 0][j] = g0 * (1.0f / 4);
            u[r * 6 + 1][j] = (g0 + g1 + g2) * (-1.0f / 6);
            u[r * 6 + 2][j] = (g0 - g1 + g2) * (-1.0f / 6);
            u[r * 6 + 3][j] = g0 * (1.0f / 24) + g1 * (1.0f / 12) + g2 * (1.0f / 6);
            u[r * 6 + 4][j] = g0 * (1.0f / 24) - g1 * (1.0f / 12) + g2 * (1.0f / 6);
            u[r * 6 + 5][j] = g2;
        }
}

/* v (36, LANES) = B^T d B for d (36, LANES), both row-major 6x6. */
static ALWAYS_INLINE void input_transform(float v[36][LANES], float d[36][LANES]) {
    float t[36][LANES];     /* B^T d */
    for (int c = 0; c < 6; c++)
        for (int j = 0; j < LANES; j++) {
            float d0 = d[c][j], d1 = d[6 + c][j], d2 = d[12 + c][j];
            float d3 = d[18 + c][j], d4 = d[24 + c][j], d5 = d[30 + c][j];
            t[c][j] = 4.0f * d0 - 5.0f * d2 + d4;
            t[6 + c][j] = -4.0f * (d1 + d2) + (d3 + d4);
            t[12 + c][j] = 4.0f * (d1 - d2) + (d4 - d3);
            t[18 + c][j] = 2.0f * (d3 - d1) + (d4 - d2);
            t[24 + c][j] = 2.0f * (d1 - d3) + (d4 - d2);
            t[30 + c][j] = 4.0f * d1 - 5.0f * d3 + d5;
        }
    for (int r = 0; r < 6; r++)
        for (int j = 0; j < LANES; j++) {
            float d0 = t[r * 6][j], d1 = t[r * 6 + 1][j], d2 = t[r * 6 + 2][j];
            float d3 = t[r * 6 + 3][j], d4 = t[r * 6 + 4][j], d5 = t[r * 6 + 5][j];
            v[r * 6 + 0][j] = 4.0f * d0 - 5.0f * d2 + d4;
            v[r * 6 + 1][j] = -4.0f * (d1 + d2) + (d3 + d4);
            v[r * 6 + 2][j] = 4.0f * (d1 - d2) + (d4 - d3);
            v[r * 6 + 3][j] = 2.0f * (d3 - d1) + (d4 - d2);
            v[r * 6 + 4][j] = 2.0f * (d1 - d3) + (d4 - d2);
            v[r * 6 + 5][j] = 4.0f * d1 - 5.0f * d3 + d5;
        }
}

/* o (16, LANES) = A^T m A for m (36, LANES): row-major 4x4 from 6x6. */
static ALWAYS_INLINE void output_transform(float o[16][LANES], float m[36][LANES]) {
    float t[4][6][LANES];   /* A^T m */
    for (int c = 0; c < 6; c++)
        for (int j = 0; j < LANES; j++) {
            float m0 = m[c][j], m1 = m[6 + c][j], m2 = m[12 + c][j];
            float m3 = m[18 + c][j], m4 = m[24 + c][j], m5 = m[30 + c][j];
            float s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4;
            t[0][c][j] = m0 + s12 + s34;
            t[1][c][j] = d12 + 2.0f * d34;
            t[2][c][j] = s12 + 4.0f * s34;
            t[3][c][j] = d12 + 8.0f * d34 + m5;
        }
    for (int r = 0; r < 4; r++)
        for (int j = 0; j < LANES; j++) {
            float m0 = t[r][0][j], m1 = t[r][1][j], m2 = t[r][2][j];
            float m3 = t[r][3][j], m4 = t[r][4][j], m5 = t[r][5][j];
            float s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4;
            o[r * 4 + 0][j] = m0 + s12 + s34;
            o[r * 4 + 1][j] = d12 + 2.0f * d34;
            o[r * 4 + 2][j] = s12 + 4.0f * s34;
            o[r * 4 + 3][j] = d12 + 8.0f * d34 + m5;
        }
}

/* The weight gradient's transforms (see "Weight gradient" below). */

/* z (36, LANES) = A y A^T for a 4x4 output-gradient tile y (16, LANES); A = (A^T)^T is 6x4. */
static ALWAYS_INLINE void grad_transform(float z[36][LANES], float y[16][LANES]) {
    float t[6][4][LANES];   /* A y */
    for (int c = 0; c < 4; c++)
        for (int j = 0; j < LANES; j++) {
            float y0 = y[c][j], y1 = y[4 + c][j], y2 = y[8 + c][j], y3 = y[12 + c][j];
            float s02 = y0 + y2, s13 = y1 + y3, q = y0 + 4.0f * y2, r = 2.0f * y1 + 8.0f * y3;
            t[0][c][j] = y0;
            t[1][c][j] = s02 + s13;
            t[2][c][j] = s02 - s13;
            t[3][c][j] = q + r;
            t[4][c][j] = q - r;
            t[5][c][j] = y3;
        }
    for (int r6 = 0; r6 < 6; r6++)
        for (int j = 0; j < LANES; j++) {
            float y0 = t[r6][0][j], y1 = t[r6][1][j], y2 = t[r6][2][j], y3 = t[r6][3][j];
            float s02 = y0 + y2, s13 = y1 + y3, q = y0 + 4.0f * y2, r = 2.0f * y1 + 8.0f * y3;
            z[r6 * 6 + 0][j] = y0;
            z[r6 * 6 + 1][j] = s02 + s13;
            z[r6 * 6 + 2][j] = s02 - s13;
            z[r6 * 6 + 3][j] = q + r;
            z[r6 * 6 + 4][j] = q - r;
            z[r6 * 6 + 5][j] = y3;
        }
}

/* o (9, LANES) = G^T m G for m (36, LANES): the 3x3 weight gradient from the 6x6 sums. */
static ALWAYS_INLINE void wgrad_transform(float o[9][LANES], float m[36][LANES]) {
    float t[3][6][LANES];   /* G^T m */
    for (int c = 0; c < 6; c++)
        for (int j = 0; j < LANES; j++) {
            float m0 = m[c][j], m1 = m[6 + c][j], m2 = m[12 + c][j];
            float m3 = m[18 + c][j], m4 = m[24 + c][j], m5 = m[30 + c][j];
            t[0][c][j] = m0 * (1.0f / 4) - (m1 + m2) * (1.0f / 6) + (m3 + m4) * (1.0f / 24);
            t[1][c][j] = (m2 - m1) * (1.0f / 6) + (m3 - m4) * (1.0f / 12);
            t[2][c][j] = (m3 + m4 - m1 - m2) * (1.0f / 6) + m5;
        }
    for (int r = 0; r < 3; r++)
        for (int j = 0; j < LANES; j++) {
            float m0 = t[r][0][j], m1 = t[r][1][j], m2 = t[r][2][j];
            float m3 = t[r][3][j], m4 = t[r][4][j], m5 = t[r][5][j];
            o[r * 3 + 0][j] = m0 * (1.0f / 4) - (m1 + m2) * (1.0f / 6) + (m3 + m4) * (1.0f / 24);
            o[r * 3 + 1][j] = (m2 - m1) * (1.0f / 6) + (m3 - m4) * (1.0f / 12);
            o[r * 3 + 2][j] = (m3 + m4 - m1 - m2) * (1.0f / 6) + m5;
        }
}

/* ---- one group of LANES columns of each pass ---- */

struct wino_args {
    const struct unet__conv2d_dims   *d;
    struct wino_plan                  p;
    const struct unet__conv_epilogue *ep;
    const float                      *x2;      /* channels from c_split on (a fused concat) */
    int                               c_split; /* C_in when there is no x2 */
};

/* Input plane (image n, channel ci): channel ci of x, or of x2 past c_split. */
static inline const float *in_plane(const struct wino_args *a, const float *x, int n, int ci) {
    const struct unet__conv2d_dims *d = a->d;
    const size_t HW = (size_t)d->H_in * d->W_in;
    if (ci >= a->c_split)
        return a->x2 + ((size_t)n * (d->C_in - a->c_split) + (ci - a->c_split)) * HW;
    return x + ((size_t)n * a->c_split + ci) * HW;
}

/* Input channels [ci0, ci0 + WCI) of the transformed weights of output-channel panel cp, into
 * U (36, C_in, MR): lanes are (input channel, output channel), so each k's results are one
 * contiguous run.  Output channels past C_out are zero.  flip: the input-gradient kernel
 * w'[co][ci][kh][kw] = w[ci][co][2 - kh][2 - kw] of a weight stored as (C_in, C_out, 3, 3)
 * (the forward convolution's (C_out, C_in, 3, 3), whose C_in is this convolution's C_out). */
static ALWAYS_INLINE void weights_group(float *U, const float *w, bool flip,
                                        const struct wino_args *a, int cp, int ci0, int ldu,
                                        int cibase) {
    const int C_in = a->d->C_in, C_out = a->d->C_out;
    const int nci = C_in - ci0 < WCI ? C_in - ci0 : WCI;
    float g[9][WL], u[36][WL];
    if (nci < WCI || (cp + 1) * MR > C_out) memset(g, 0, sizeof g);
    for (int r = 0; r < MR && cp * MR + r < C_out; r++) {
        const int co = cp * MR + r;
        if (flip) {
            for (int i = 0; i < nci; i++) {
                const float *src = w + ((size_t)(ci0 + i) * C_out + co) * 9;
                for (int k = 0; k < 9; k++) g[k][i * MR + r] = src[8 - k];
            }
        } else {
            const float *src = w + ((size_t)co * C_in + ci0) * 9;
            for (int i = 0; i < nci; i++)
                for (int k = 0; k < 9; k++) g[k][i * MR + r] = src[i * 9 + k];
        }
    }
    kernel_transform(u, g);
    for (int k = 0; k < 36; k++)
        memcpy(U + ((size_t)k * ldu + (ci0 - cibase)) * MR, u[k], sizeof(float) * (size_t)nci * MR);
}

/* Panel p of V[k] (C_in, nt): tiles [p NR, p NR + width), stored (C_in, width). */
static inline size_t panel_offset(int C_in, int nt, int tile, int *width) {
    const int p = tile / NR;
    *width = nt - p * NR < NR ? nt - p * NR : NR;
    return (size_t)p * NR * C_in;
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

/* Group q of V for the tiles [t0, t0 + nt), nt a multiple of LANES: input channel q / groups,
 * tiles from q % groups * LANES (those past the last tile are zero).  V[k] is stored in panels
 * of NR tiles (panel_offset), the order the GEMM micro-kernel reads it.  Patches are gathered
 * with the zero padding applied on the fly. */
#ifdef UNET__X86
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

/* gather_patches for 16 consecutive tiles of one tile row (the usual case): each patch row of
 * the 16 tiles is one run of 66 input floats, loaded as 5 vectors (masked: the zero padding and
 * the image border) and de-interleaved with permutes instead of 576 scalar loads. */
UNET__TARGET_AVX512 static void gather_row16_avx512(float dd[36][LANES],
                                                                  const float *xc, int ih0,
                                                                  int iw0, int H, int W,
                                                                  size_t next) {
    __mmask16 mask[5];
    for (int v = 0; v < 5; v++) {
        int first = -iw0 - 16 * v, last = W - iw0 - 16 * v; /* lanes [first, last) are inside */
        if (v == 4 && last > 2) last = 2;
        if (first < 0) first = 0;
        if (last > 16) last = 16;
        mask[v] = last > first ? (__mmask16)(((1u << last) - 1u) & ~((1u << first) - 1u)) : 0;
    }
    for (int ri = 0; ri < 6; ri++) {
        const int ih = ih0 + ri;
        if (ih < 0 || ih >= H) {
            for (int c = 0; c < 6; c++) _mm512_storeu_ps(dd[ri * 6 + c], _mm512_setzero_ps());
            continue;
        }
        const float *row = xc + (ptrdiff_t)ih * W + iw0;
        /* The same run of the next channel is read a few groups later: fetch it now (the
         * layer's input is usually far larger than the caches; a prefetch never faults). */
        for (int v = 0; v < 5; v++) _mm_prefetch((const char *)(row + next + 16 * v), _MM_HINT_T0);
        __m512 r[5];
        for (int v = 0; v < 5; v++) r[v] = _mm512_maskz_loadu_ps(mask[v], row + 16 * v);
        __m512 d[4];
        for (int c = 0; c < 4; c++) {
            __m512 a = _mm512_permutex2var_ps(r[0], _mm512_loadu_si512(ROW_LO[c]), r[1]);
            __m512 b = _mm512_permutex2var_ps(r[2], _mm512_loadu_si512(ROW_HI[c]), r[3]);
            d[c] = _mm512_mask_blend_ps(0xFF00, a, b);
            _mm512_storeu_ps(dd[ri * 6 + c], d[c]);
        }
        /* Columns 4 and 5 of tile j are columns 0 and 1 of tile j + 1. */
        __m512i r4 = _mm512_castps_si512(r[4]);
        __m512i c4 = _mm512_alignr_epi32(r4, _mm512_castps_si512(d[0]), 1);
        __m512i r4s = _mm512_alignr_epi32(r4, r4, 1); /* lane 0: column 65 */
        __m512i c5 = _mm512_alignr_epi32(r4s, _mm512_castps_si512(d[1]), 1);
        _mm512_storeu_ps(dd[ri * 6 + 4], _mm512_castsi512_ps(c4));
        _mm512_storeu_ps(dd[ri * 6 + 5], _mm512_castsi512_ps(c5));
    }
}

/* The inverse for the outputs: the 4x4 results o (16, LANES) of 16 consecutive tiles of one
 * tile row are, per output row, one run of 64 floats: interleaved with permutes and stored
 * (masked at the right border; added when acc) instead of 256 scalar stores. */
UNET__TARGET_AVX512 static void scatter_row16_avx512(float *yc,
                                                                   float o[16][LANES], int oh0,
                                                                   int ow0, int H, int W,
                                                                   bool acc) {
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
            _mm512_mask_storeu_ps(row + 16 * v, mask[v], val);
        }
    }
}

/* The pooled 2x2 of 16 consecutive tiles of one tile row: per pooled row, windows (pr, 0) and
 * (pr, 1) of tile j go to columns 2j and 2j + 1, one run of 32 floats (masked at the border). */
UNET__TARGET_AVX512 static void pool_row16_avx512(float *pc, float pm[4][LANES],
                                                                int ph0, int pw0, int Hp, int Wp) {
    __mmask16 mask[2];
    for (int v = 0; v < 2; v++) {
        mask[v] = tail_mask16(Wp - pw0 - 16 * v);
    }
    for (int pr = 0; pr < 2 && ph0 + pr < Hp; pr++) {
        const __m512 c0 = _mm512_loadu_ps(pm[2 * pr]), c1 = _mm512_loadu_ps(pm[2 * pr + 1]);
        float *row = pc + (size_t)(ph0 + pr) * Wp + pw0;
        _mm512_mask_storeu_ps(row, mask[0],
                              _mm512_permutex2var_ps(c0, _mm512_loadu_si512(PAIR_LO), c1));
        _mm512_mask_storeu_ps(row + 16, mask[1],
                              _mm512_permutex2var_ps(c0, _mm512_loadu_si512(PAIR_HI), c1));
    }
}

/* The 4x4 output-gradient tiles of 16 consecutive tiles of one tile row: per tile row, one run
 * of 64 floats (masked at the border; rows past H are zero), de-interleaved into the 4 columns
 * with the same permutes as gather_row16_avx512. */
UNET__TARGET_AVX512 static void dy_row16_avx512(float yy[16][LANES],
                                                              const float *yc, int oh0, int ow0,
                                                              int H, int W) {
    __mmask16 mask[4];
    for (int v = 0; v < 4; v++) {
        mask[v] = tail_mask16(W - ow0 - 16 * v);
    }
    for (int ri = 0; ri < 4; ri++) {
        if (oh0 + ri >= H) {
            for (int c = 0; c < 4; c++) _mm512_storeu_ps(yy[ri * 4 + c], _mm512_setzero_ps());
            continue;
        }
        const float *row = yc + (size_t)(oh0 + ri) * W + ow0;
        __m512 r[4];
        for (int v = 0; v < 4; v++) r[v] = _mm512_maskz_loadu_ps(mask[v], row + 16 * v);
        for (int c = 0; c < 4; c++) {
            __m512 a = _mm512_permutex2var_ps(r[0], _mm512_loadu_si512(ROW_LO[c]), r[1]);
            __m512 b = _mm512_permutex2var_ps(r[2], _mm512_loadu_si512(ROW_HI[c]), r[3]);
            _mm512_storeu_ps(yy[ri * 4 + c], _mm512_mask_blend_ps(0xFF00, a, b));
        }
    }
}
#endif

/* The patches of 16 tiles; fast (AVX-512 copies only) when they are consecutive in one row. */
static ALWAYS_INLINE void gather_group(float dd[36][LANES], const float *x,
                                       const struct wino_args *a, int ci, size_t t0, bool fast) {
#ifdef UNET__X86
    if (fast && row_of_lanes(&a->p, t0)) {
        const struct unet__conv2d_dims *d = a->d;
        const struct wino_tile tl = tile_at(&a->p, t0);
        gather_row16_avx512(dd, in_plane(a, x, tl.n, ci), tl.oh0 - d->pad_h, tl.ow0 - d->pad_w,
                            d->H_in, d->W_in, (size_t)d->H_in * d->W_in);
        return;
    }
#else
    (void)fast;
#endif
    gather_patches(dd, x, a, ci, t0);
}

static ALWAYS_INLINE void input_group(float *V, const float *x, const struct wino_args *a,
                                      size_t t0, int nt, int q, bool fast) {
    const int C_in = a->d->C_in, groups = nt / LANES;
    const int ci = q / groups, g0 = q % groups * LANES;
    float dd[36][LANES], v[36][LANES];
    gather_group(dd, x, a, ci, t0 + (size_t)g0, fast);
    input_transform(v, dd);
    int width;
    float *dst = V + panel_offset(C_in, nt, g0, &width) + (size_t)ci * width + g0 % NR;
    for (int k = 0; k < 36; k++) memcpy(dst + (size_t)k * C_in * nt, v[k], sizeof v[k]);
}

/* The epilogue's pooled copy of 16 tiles of channel co: each 4x4 tile holds whole 2x2 windows
 * (tiles start at multiples of 4); windows past H_out / 2, W_out / 2 (floor mode) are dropped.
 * maxpool.c's window (unet__maxpool_window), over the 16 lanes. */
static ALWAYS_INLINE void pool_tiles(float *pool, float o[16][LANES], const struct wino_args *a,
                                     size_t t0, int co, bool fast) {
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
#ifdef UNET__X86
    if (fast && row_of_lanes(&a->p, t0)) {
        const struct wino_tile tl = tile_at(&a->p, t0);
        pool_row16_avx512(pool + ((size_t)tl.n * d->C_out + co) * Hp * Wp, pm, tl.oh0 / 2,
                          tl.ow0 / 2, Hp, Wp);
        return;
    }
#else
    (void)fast;
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
                                       size_t t0, int nt, int q, bool fast) {
    const struct unet__conv2d_dims   *d = a->d;
    const struct unet__conv_epilogue *ep = a->ep;
    const int C_out = d->C_out, H = d->H_out, W = d->W_out;
    const int groups = nt / LANES;
    const int co = q / groups, g0 = q % groups * LANES;
    float m[36][LANES], o[16][LANES];
    for (int k = 0; k < 36; k++)
        memcpy(m[k], M + ((size_t)k * a->p.cop + co) * nt + g0, sizeof m[k]);
    output_transform(o, m);
    const bool acc = ep && ep->accumulate;
    unet__epilogue_apply(&o[0][0], 16 * LANES, ep, co);
    if (ep && ep->pool) pool_tiles(ep->pool, o, a, t0 + (size_t)g0, co, fast);
#ifdef UNET__X86
    if (fast && row_of_lanes(&a->p, t0 + (size_t)g0)) {
        const struct wino_tile tl = tile_at(&a->p, t0 + (size_t)g0);
        scatter_row16_avx512(y + ((size_t)tl.n * C_out + co) * H * W, o, tl.oh0, tl.ow0, H, W,
                             acc);
        return;
    }
#else
    (void)fast;
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
 * (cobp / MR, nt, MR); the GEMM micro-kernel then reduces over the tiles. */

static inline int ci16_of(const struct unet__conv2d_dims *d) {
    return round_up(d->C_in, LANES);
}

/* dst[j ld + c] = src[c stride + j] for the 16 tiles j and the nc (8 or 16) channels c: the
 * transposition from the transforms' lanes (tiles) to the micro-kernel's rows (tiles of
 * channels).  AVX-512: a 16 x 16 register transpose; otherwise element by element. */
#ifdef UNET__X86
UNET__TARGET_AVX512 static void transpose_store_avx512(float *dst, size_t ld,
                                                                     const float *src,
                                                                     size_t stride, int nc) {
    __m512 r[16], t[16];
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
    const __mmask16 m = tail_mask16(nc);
    for (int j = 0; j < 16; j++) _mm512_mask_storeu_ps(dst + (size_t)j * ld, m, t[j]);
}
#endif

static ALWAYS_INLINE void transpose_store(float *dst, size_t ld, const float *src, size_t stride,
                                          int nc, bool fast) {
#ifdef UNET__X86
    if (fast) {
        transpose_store_avx512(dst, ld, src, stride, nc);
        return;
    }
#else
    (void)fast;
#endif
    for (int j = 0; j < LANES; j++)
        for (int c = 0; c < nc; c++) dst[(size_t)j * ld + c] = src[(size_t)c * stride + j];
}

/* Group q: input channels [16 (q / groups), + 16) (zero past C_in), tiles from
 * q % groups * LANES: 16 channels at a time so that the transposition is one 16 x 16 block. */
static ALWAYS_INLINE void wgrad_x_group(float *Xt, const float *x, const struct wino_args *a,
                                        size_t t0, int nt, int q, bool fast) {
    const int ci16 = ci16_of(a->d), groups = nt / LANES;
    const int ci0 = q / groups * LANES, g0 = q % groups * LANES;
    const int width = ci16 - ci0 / NR * NR < NR ? ci16 - ci0 / NR * NR : NR;
    float v[LANES][36][LANES]; /* (channel, k, tile) */
    for (int c = 0; c < LANES; c++) {
        if (ci0 + c < a->d->C_in) {
            float dd[36][LANES];
            gather_group(dd, x, a, ci0 + c, t0 + (size_t)g0, fast);
            input_transform(v[c], dd);
        } else {
            memset(v[c], 0, sizeof v[c]);
        }
    }
    float *dst = Xt + (size_t)(ci0 / NR) * NR * nt + (size_t)g0 * width + ci0 % NR;
    for (int k = 0; k < 36; k++)
        transpose_store(dst + (size_t)k * ci16 * nt, (size_t)width, v[0][k], 36 * LANES, LANES,
                        fast);
}

/* Group q: the MR output channels co0 + MR (q / groups) .. (zero past co0 + cob), tiles from
 * q % groups * LANES: each 4x4 tile of dy (zero outside the output) transformed to A dy A^T. */
static ALWAYS_INLINE void wgrad_dy_group(float *Dt, const float *dy, const struct wino_args *a,
                                         int co0, int cob, size_t t0, int nt, int q, bool fast) {
    const struct unet__conv2d_dims *d = a->d;
    const int H = d->H_out, W = d->W_out, groups = nt / LANES, cobp = round_up(cob, MR);
    const int c0 = q / groups * MR, g0 = q % groups * LANES;
    float z[MR][36][LANES]; /* (channel, k, tile) */
    for (int c = 0; c < MR; c++) {
        float yy[16][LANES];
#ifdef UNET__X86
        if (fast && c0 + c < cob && row_of_lanes(&a->p, t0 + (size_t)g0)) {
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
    float *dst = Dt + (size_t)(c0 / MR) * MR * nt + (size_t)g0 * MR;
    for (int k = 0; k < 36; k++)
        transpose_store(dst + (size_t)k * cobp * nt, MR, z[0][k], 36 * LANES, MR, fast);
}

/* Group q: dw[co0 + q / groups][ci..ci + LANES] += G^T M G, M (36, cobp, ci16). */
static ALWAYS_INLINE void wgrad_out_group(float *dw, const float *M, const struct wino_args *a,
                                          int co0, int cob, int q) {
    const int C_in = a->d->C_in, ci16 = ci16_of(a->d), groups = ci16 / LANES;
    const int cobp = round_up(cob, MR);
    const int c = q / groups, ci0 = q % groups * LANES, co = co0 + c;
    const int nl = C_in - ci0 < LANES ? C_in - ci0 : LANES;
    float m[36][LANES], o[9][LANES];
    for (int k = 0; k < 36; k++)
        memcpy(m[k], M + ((size_t)k * cobp + c) * ci16 + ci0, sizeof m[k]);
    wgrad_transform(o, m);
    float *dst = dw + ((size_t)co * C_in + ci0) * 9;
    for (int j = 0; j < nl; j++)
        for (int k = 0; k < 9; k++) dst[(size_t)j * 9 + k] += o[k][j];
}

/* ---- the GEMM micro-kernels: C (MR x width, leading dimension ldc) (+)= A B over K ----
 * A is a U panel (K, MR), B a V panel (K, width), width 16, 32 or 48, both contiguous.  The
 * sums run over K in order in every variant; the vector variants fuse each multiply-add. */

static void gemm_portable(const float *A, const float *B, int K, int width, float *C, int ldc,
                          bool acc) {
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

#ifdef UNET__X86
/* 8 rows x NV zmm columns: per k, NV loads of B, 8 broadcasts of A, 8 NV FMAs (24
 * accumulators for the full 48-wide panel).  Written out with macros: with arrays and loops the
 * compiler keeps the accumulators in memory. */
#define ROWS8(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
#define Z_DECL1(r) __m512 c##r##0 = _mm512_setzero_ps();
#define Z_DECL2(r) Z_DECL1(r) __m512 c##r##1 = c##r##0;
#define Z_DECL3(r) Z_DECL2(r) __m512 c##r##2 = c##r##0;
#define Z_FMA1(r)                                                                               \
    { const __m512 ar = _mm512_set1_ps(A[r]); c##r##0 = _mm512_fmadd_ps(ar, b0, c##r##0); }
#define Z_FMA2(r)                                                                               \
    {                                                                                           \
        const __m512 ar = _mm512_set1_ps(A[r]);                                                 \
        c##r##0 = _mm512_fmadd_ps(ar, b0, c##r##0);                                             \
        c##r##1 = _mm512_fmadd_ps(ar, b1, c##r##1);                                             \
    }
#define Z_FMA3(r)                                                                               \
    {                                                                                           \
        const __m512 ar = _mm512_set1_ps(A[r]);                                                 \
        c##r##0 = _mm512_fmadd_ps(ar, b0, c##r##0);                                             \
        c##r##1 = _mm512_fmadd_ps(ar, b1, c##r##1);                                             \
        c##r##2 = _mm512_fmadd_ps(ar, b2, c##r##2);                                             \
    }
#define Z_PUT(P, v) _mm512_storeu_ps((P), acc ? _mm512_add_ps(_mm512_loadu_ps(P), (v)) : (v));
#define Z_ST1(r) Z_PUT(C + (size_t)(r) * ldc, c##r##0)
#define Z_ST2(r) Z_ST1(r) Z_PUT(C + (size_t)(r) * ldc + 16, c##r##1)
#define Z_ST3(r) Z_ST2(r) Z_PUT(C + (size_t)(r) * ldc + 32, c##r##2)
#define Z_LOAD1 const __m512 b0 = _mm512_loadu_ps(B);
#define Z_LOAD2 Z_LOAD1 const __m512 b1 = _mm512_loadu_ps(B + 16);
#define Z_LOAD3 Z_LOAD2 const __m512 b2 = _mm512_loadu_ps(B + 32);
#define AVX512_KERNEL(NV)                                                                       \
    UNET__TARGET_AVX512 static void gemm_avx512_##NV(                           \
        const float *A, const float *B, int K, float *C, int ldc, bool acc) {                   \
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

UNET__TARGET_AVX512 static void gemm_avx512(const float *A, const float *B, int K,
                                                           int width, float *C, int ldc, bool acc) {
    if (width == 48) gemm_avx512_3(A, B, K, C, ldc, acc);
    else if (width == 32) gemm_avx512_2(A, B, K, C, ldc, acc);
    else gemm_avx512_1(A, B, K, C, ldc, acc);
}

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
    UNET__TARGET_AVX2 static void gemm_avx2_##NV(                            \
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

UNET__TARGET_AVX2 static void gemm_avx2(const float *A, const float *B, int K,
                                                          int width, float *C, int ldc, bool acc) {
    const int step = width == 48 ? 24 : 16;
    for (int r = 0; r < MR; r += 4)
        for (int j = 0; j < width; j += step) {
            if (step == 24) gemm_avx2_3(A + r, B + j, K, width, C + (size_t)r * ldc + j, ldc, acc);
            else gemm_avx2_2(A + r, B + j, K, width, C + (size_t)r * ldc + j, ldc, acc);
        }
}
#endif

/* One copy of the group kernels per instruction set, so that the lane loops are vectorized for
 * the CPU the code runs on; the parallel loops below call the copy chosen at run time. */
struct wino_kernels {
    void (*weights)(float *U, const float *w, bool flip, const struct wino_args *a, int cp,
                    int ci0, int ldu, int cibase);
    void (*input)(float *V, const float *x, const struct wino_args *a, size_t t0, int nt, int q);
    void (*gemm)(const float *A, const float *B, int K, int width, float *C, int ldc, bool acc);
    void (*output)(float *y, const float *M, const struct wino_args *a, size_t t0, int nt, int q);
    void (*wx)(float *Xt, const float *x, const struct wino_args *a, size_t t0, int nt, int q);
    void (*wdy)(float *Dt, const float *dy, const struct wino_args *a, int co0, int cob,
                size_t t0, int nt, int q);
    void (*wout)(float *dw, const float *M, const struct wino_args *a, int co0, int cob, int q);
};

#define WINO_KERNELS(SUFFIX, ATTR, FAST)                                                        \
    ATTR static void weights_##SUFFIX(float *U, const float *w, bool flip,                      \
                                      const struct wino_args *a, int cp, int ci0, int ldu,      \
                                      int cibase) {                                             \
        weights_group(U, w, flip, a, cp, ci0, ldu, cibase);                                     \
    }                                                                                           \
    ATTR static void input_##SUFFIX(float *V, const float *x, const struct wino_args *a,        \
                                    size_t t0, int nt, int q) {                                 \
        input_group(V, x, a, t0, nt, q, FAST);                                                  \
    }                                                                                           \
    ATTR static void output_##SUFFIX(float *y, const float *M, const struct wino_args *a,       \
                                     size_t t0, int nt, int q) {                                \
        output_group(y, M, a, t0, nt, q, FAST);                                                 \
    }                                                                                           \
    ATTR static void wx_##SUFFIX(float *Xt, const float *x, const struct wino_args *a,          \
                                 size_t t0, int nt, int q) {                                    \
        wgrad_x_group(Xt, x, a, t0, nt, q, FAST);                                               \
    }                                                                                           \
    ATTR static void wdy_##SUFFIX(float *Dt, const float *dy, const struct wino_args *a,        \
                                  int co0, int cob, size_t t0, int nt, int q) {                 \
        wgrad_dy_group(Dt, dy, a, co0, cob, t0, nt, q, FAST);                                   \
    }                                                                                           \
    ATTR static void wout_##SUFFIX(float *dw, const float *M, const struct wino_args *a,        \
                                   int co0, int cob, int q) {                                   \
        wgrad_out_group(dw, M, a, co0, cob, q);                                                 \
    }                                                                                           \
    static const struct wino_kernels kernels_##SUFFIX = {                                       \
        weights_##SUFFIX, input_##SUFFIX, gemm_##SUFFIX, output_##SUFFIX,                       \
        wx_##SUFFIX,      wdy_##SUFFIX,   wout_##SUFFIX};

WINO_KERNELS(portable, , false)
#ifdef UNET__X86
WINO_KERNELS(avx2, UNET__TARGET_AVX2, false)
WINO_KERNELS(avx512, UNET__TARGET_AVX512, true)
#endif

static const struct wino_kernels *pick_kernels(void) {
#ifdef UNET__X86
    if (unet__cpu_has(UNET__CPU_AVX512)) return &kernels_avx512;
    if (unet__cpu_has(UNET__CPU_AVX2)) return &kernels_avx2;
#endif
    return &kernels_portable;
}

/* Below this many multiply-adds (about 0.1 ms of work) a convolution runs on the calling
 * thread: starting and synchronising a team costs more (tiny test networks run thousands). */
#define PARALLEL_MIN_MACS ((double)(1 << 22))

static bool small_work(const struct unet__conv2d_dims *d, const struct wino_plan *p) {
    return 36.0 * p->cop * d->C_in * (double)p->tiles < PARALLEL_MIN_MACS;
}

/* The products of one tile block (V, M of nt tiles) for output-channel panel cp: M[k] rows
 * [cp MR, cp MR + MR) = U[k] V[k] over the block's tile panels. */
static void block_products(const struct wino_kernels *K, const struct wino_args *a,
                           const float *U, const float *V, float *M, int cp, int nt) {
    const int C_in = a->d->C_in;
    for (int k = 0; k < 36; k++) {
        const float *Uk = U + (size_t)k * C_in * MR;
        float *Mk = M + ((size_t)k * a->p.cop + (size_t)cp * MR) * nt;
        for (int tile = 0; tile < nt; tile += NR) {
            int width;
            const float *Vp = V + (size_t)k * C_in * nt + panel_offset(C_in, nt, tile, &width);
            K->gemm(Uk, Vp, C_in, width, Mk + tile, nt, false);
        }
    }
}

/* block_products for weights too large to keep: the panel's weights are transformed KC input
 * channels at a time into the thread's buffer (36 x KC x MR floats, cache-resident) and each
 * chunk's products are accumulated into M right away, so the 4x larger transformed weights
 * never go through memory. */
static void chunked_products(const struct wino_kernels *K, const struct wino_args *a, float *Uc,
                             const float *w, bool flip, const float *V, float *M, int cp, int nt) {
    const int C_in = a->d->C_in;
    for (int ci0 = 0; ci0 < C_in; ci0 += kc_chunk) {
        const int kc = C_in - ci0 < kc_chunk ? C_in - ci0 : kc_chunk;
        for (int g = ci0; g < ci0 + kc; g += WCI) K->weights(Uc, w, flip, a, cp, g, kc, ci0);
        for (int k = 0; k < 36; k++) {
            const float *Uk = Uc + (size_t)k * kc * MR;
            float *Mk = M + ((size_t)k * a->p.cop + (size_t)cp * MR) * nt;
            for (int tile = 0; tile < nt; tile += NR) {
                int width;
                const float *Vp = V + (size_t)k * C_in * nt + panel_offset(C_in, nt, tile, &width);
                K->gemm(Uk, Vp + (size_t)ci0 * width, kc, width, Mk + tile, nt, ci0 > 0);
            }
        }
    }
}

/* Tiles in the block starting at t0 (a multiple of LANES: missing tiles are zero). */
static int block_tiles(const struct wino_plan *p, size_t t0, int tb) {
    size_t left = (p->tiles - t0 + LANES - 1) / LANES * LANES;
    return left < (size_t)tb ? (int)left : tb;
}

/* One parallel region for the whole convolution, in one of two schedules.
 *   - Own blocks (many tiles, all weights kept): the weights are transformed once, then each
 *     thread takes whole tile blocks (input transform, products, output transform) with its
 *     own V and M, dynamically: no barrier per block, and a thread slowed by other work on
 *     the machine takes fewer blocks.  The early layers, most of the pixels.
 *   - Shared blocks (few tiles or large weights): each pass is an `omp for` whose implicit
 *     barrier orders it before the next; the products are split by output-channel panel, each
 *     thread transforming the panel's weights (unless kept from the first block) into its
 *     buffer.  The deep layers.
 * Either way every output is computed by one thread in one fixed order.  Loops are scheduled
 * dynamically, in small chunks: on a machine shared with other work, a thread that lost its
 * core for a while takes fewer chunks instead of holding up the barrier. */
static void winograd_forward(float *y, const float *x, const float *x2, int c_split,
                             const float *w, bool flip, const struct unet__conv2d_dims *d,
                             const struct unet__conv_epilogue *ep, float *scratch) {
    UNET_ASSERT(unet__winograd_applies(d));
    const struct wino_kernels *K = pick_kernels();
    const struct wino_args a = {.d = d, .p = plan_of(d), .ep = ep, .x2 = x2, .c_split = c_split};
    const int C_in = d->C_in, slots = unet__thread_slots(), panels_co = a.p.cop / MR;
    float *Ubuf = scratch;
    float *V = Ubuf + 36 * (a.p.keep_u ? (size_t)a.p.cop * C_in : (size_t)slots * kc_chunk * MR);
    int team = 1;
#ifdef _OPENMP
    team = omp_get_max_threads();
    if (team > slots) team = slots;
    if (small_work(d, &a.p)) team = 1;
#endif
    const size_t own_blocks = (a.p.tiles + (size_t)a.p.tb_own - 1) / (size_t)a.p.tb_own;
    const bool own = a.p.keep_u && own_blocks >= 4 * (size_t)team;
    const size_t vm_own = 36 * ((size_t)C_in + (size_t)a.p.cop) * a.p.tb_own;
#pragma omp parallel num_threads(team)
    {
        int me = 0;
#ifdef _OPENMP
        me = omp_get_thread_num();
#endif
        if (own) {
#pragma omp for schedule(dynamic, 1)
            for (int cp = 0; cp < panels_co; cp++)
                for (int ci0 = 0; ci0 < C_in; ci0 += WCI)
                    K->weights(Ubuf + (size_t)cp * 36 * C_in * MR, w, flip, &a, cp, ci0, C_in, 0);
            float *Vme = V + (size_t)me * vm_own, *Mme = Vme + (size_t)36 * C_in * a.p.tb_own;
#pragma omp for schedule(dynamic, 1)
            for (size_t b = 0; b < own_blocks; b++) {
                const size_t t0 = b * (size_t)a.p.tb_own;
                const int nt = block_tiles(&a.p, t0, a.p.tb_own), groups = nt / LANES;
                for (int q = 0; q < C_in * groups; q++) K->input(Vme, x, &a, t0, nt, q);
                for (int cp = 0; cp < panels_co; cp++)
                    block_products(K, &a, Ubuf + (size_t)cp * 36 * C_in * MR, Vme, Mme, cp, nt);
                for (int q = 0; q < d->C_out * groups; q++) K->output(y, Mme, &a, t0, nt, q);
            }
        } else {
            float *M = V + (size_t)36 * C_in * a.p.tb;
            for (size_t t0 = 0; t0 < a.p.tiles; t0 += (size_t)a.p.tb) {
                const int nt = block_tiles(&a.p, t0, a.p.tb), groups = nt / LANES;
#pragma omp for schedule(dynamic, 8)
                for (int q = 0; q < C_in * groups; q++) K->input(V, x, &a, t0, nt, q);
#pragma omp for schedule(dynamic, 1)
                for (int cp = 0; cp < panels_co; cp++) {
                    if (!a.p.keep_u) {
                        float *Uc = Ubuf + (size_t)me * 36 * kc_chunk * MR;
                        chunked_products(K, &a, Uc, w, flip, V, M, cp, nt);
                        continue;
                    }
                    float *U = Ubuf + (size_t)cp * 36 * C_in * MR;
                    if (t0 == 0)
                        for (int ci0 = 0; ci0 < C_in; ci0 += WCI)
                            K->weights(U, w, flip, &a, cp, ci0, C_in, 0);
                    block_products(K, &a, U, V, M, cp, nt);
                }
#pragma omp for schedule(dynamic, 8)
                for (int q = 0; q < d->C_out * groups; q++) K->output(y, M, &a, t0, nt, q);
            }
        }
    }
}

void unet__conv2d_winograd(float *y, const float *x, const float *w, bool flip,
                           const struct unet__conv2d_dims *d, const struct unet__conv_epilogue *ep,
                           float *scratch) {
    winograd_forward(y, x, NULL, d->C_in, w, flip, d, ep, scratch);
}

void unet__conv2d_winograd_cat(float *y, const float *a, const float *b, int c_a, const float *w,
                               const struct unet__conv2d_dims *d,
                               const struct unet__conv_epilogue *ep, float *scratch) {
    UNET_ASSERT(c_a > 0 && c_a < d->C_in);
    winograd_forward(y, a, b, c_a, w, false, d, ep, scratch);
}

/* ---- Weight gradient ----
 * y = A^T [U ⊙ V] A with U = G g G^T is linear in g; its adjoint gives, summed over tiles,
 *     dw = G^T [ sum_t (A dy_t A^T) ⊙ (B^T d_t B) ] G
 * i.e. 36 products M[k] (C_out x C_in) = Dt[k] Xt[k]^T reducing over the tiles, then one 6x6 ->
 * 3x3 transform per (output, input channel) pair.  Output channels are blocked so that M
 * (36 x cob x ci16) stays under the budget; each block reads all tile blocks, accumulating M
 * (one thread per micro-tile of M, in tile order), then adds G^T M G into dw. */
struct wgrad_plan {
    int cob, cobp;      /* output channels per block, a multiple of MR (or all); rounded up */
    int tb;             /* tiles per block, a multiple of LANES */
};

static struct wgrad_plan wgrad_plan_of(const struct unet__conv2d_dims *d,
                                       const struct wino_plan        *p) {
    struct wgrad_plan w;
    const size_t ci16 = (size_t)ci16_of(d);
    size_t cob = (vm_budget * 4) / (36 * ci16);
    cob = cob < MR ? MR : cob / MR * MR;
    w.cob = cob >= (size_t)d->C_out ? d->C_out : (int)cob;
    w.cobp = round_up(w.cob, MR);
    size_t tb = vm_budget / (36 * (ci16 + (size_t)w.cobp));
    tb = tb < LANES ? LANES : tb / LANES * LANES;
    size_t all = (p->tiles + LANES - 1) / LANES * LANES;
    w.tb = (int)(tb < all ? tb : all);
    return w;
}

size_t unet__winograd_wgrad_scratch_floats(const struct unet__conv2d_dims *d) {
    if (!unet__winograd_applies(d)) return 0;
    struct wino_plan p = plan_of(d);
    struct wgrad_plan w = wgrad_plan_of(d, &p);
    const size_t ci16 = (size_t)ci16_of(d);
    return 36 * ((size_t)w.cobp * ci16 + ci16 * w.tb + (size_t)w.cobp * w.tb);
}

void unet__conv2d_winograd_wgrad(float *dw, const float *dy, const float *x,
                                 const struct unet__conv2d_dims *d, float *scratch) {
    UNET_ASSERT(unet__winograd_applies(d));
    const struct wino_kernels *K = pick_kernels();
    const struct wino_args a = {.d = d, .p = plan_of(d), .ep = NULL, .c_split = d->C_in};
    const struct wgrad_plan wp = wgrad_plan_of(d, &a.p);
    const int ci16 = ci16_of(d), cpanels = (ci16 + NR - 1) / NR;
    float *M = scratch;
    float *Xt = M + (size_t)36 * wp.cobp * ci16;
    float *Dt = Xt + (size_t)36 * ci16 * wp.tb;
    const bool par = !small_work(d, &a.p);
    (void)par;
#pragma omp parallel if (par)
    for (int co0 = 0; co0 < d->C_out; co0 += wp.cob) {
        const int cob = d->C_out - co0 < wp.cob ? d->C_out - co0 : wp.cob;
        const int cobp = round_up(cob, MR), micro = cobp / MR * cpanels;
        for (size_t t0 = 0; t0 < a.p.tiles; t0 += (size_t)wp.tb) {
            const int nt = block_tiles(&a.p, t0, wp.tb), groups = nt / LANES;
#pragma omp for schedule(dynamic, 8) nowait
            for (int q = 0; q < ci16 / LANES * groups; q++) K->wx(Xt, x, &a, t0, nt, q);
#pragma omp for schedule(dynamic, 8)
            for (int q = 0; q < cobp / MR * groups; q++) K->wdy(Dt, dy, &a, co0, cob, t0, nt, q);
            /* M[k] (+)= Dt[k]^T Xt[k] over this block's tiles, by MR x NR micro-tiles. */
#pragma omp for schedule(dynamic, 1)
            for (int u = 0; u < micro; u++) {
                const int cp = u / cpanels, xp = u % cpanels;
                const int width = ci16 - xp * NR < NR ? ci16 - xp * NR : NR;
                for (int k = 0; k < 36; k++)
                    K->gemm(Dt + ((size_t)k * cobp + (size_t)cp * MR) * nt,
                            Xt + (size_t)k * ci16 * nt + (size_t)xp * NR * nt, nt, width,
                            M + ((size_t)k * cobp + (size_t)cp * MR) * ci16 + (size_t)xp * NR,
                            ci16, t0 > 0);
            }
        }
#pragma omp for schedule(dynamic, 8)
        for (int q = 0; q < cob * (ci16 / LANES); q++) K->wout(dw, M, &a, co0, cob, q);
    }
}

unet__micro_gemm_fn unet__micro_gemm(void) {
    return pick_kernels()->gemm;
}
