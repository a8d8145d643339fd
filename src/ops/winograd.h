/* winograd.h — what the Winograd driver (winograd.c) and its kernels share.
 *
 * The kernels are compiled once per instruction set and precision: winograd_portable.c,
 * winograd_avx2.c, winograd_avx512.c (float32) and winograd_avx512_bf16.c (bf16 products) each
 * define that set's GEMM micro-kernel and include winograd_groups.h, the transforms and the
 * per-group passes, under their own target attribute, so that the lane loops are vectorized
 * for that CPU; the two AVX-512 copies share the masked row loads and stores, the register
 * transpose and the micro-kernel's code (winograd_avx512.h).  Each exports one struct
 * unet__wino_kernels; ops/kernels.c puts it in a row of the kernel table with the matching
 * micro-kernel and winograd.c's parallel loops call the row they are given.  winograd.c's
 * opening comment holds the algorithm, the layouts and the numerics.
 *
 * Words.  The GEMM operands (the transformed weights U, the transformed inputs V, the weight
 * gradient's Xt and Dt) are arrays of 32-bit words, each holding `pack` (the row's, kernels.h)
 * consecutive values of the reduction index K: one float (float32 rows), or two bf16 (bf16
 * rows: value 2i in the low half, 2i + 1 in the high half, as vdpbf16ps pairs them).  A
 * dimension of K values takes (K + pack - 1) / pack words, zero-padded; the driver counts its
 * buffers in words and never reads them, so it sizes them as floats.
 */
#ifndef UNET_OPS_WINOGRAD_H
#define UNET_OPS_WINOGRAD_H

#include "cpu.h"
#include "ops/ops.h"

#include <string.h>

enum {
    LANES = 16,          /* tiles per input/output-transform step */
    MR = UNET__MICRO_MR, /* output channels per GEMM micro-tile (rows of a U panel) */
    NR = UNET__MICRO_NR, /* tiles per GEMM micro-tile (V panel columns; the last may be 16, 32) */
    WCI = 8,             /* input channels per weight-transform step */
    WL = WCI * MR        /* weight-transform lanes: (input channel, output channel) pairs */
};

#define ALWAYS_INLINE inline __attribute__((always_inline))

/* The blocking of one convolution (winograd.c's plan_of). */
struct wino_plan {
    int    tiles_h, tiles_w;    /* 4x4 output tiles per image */
    size_t tiles;               /* all images */
    int    cop;                 /* C_out rounded up to MR: M's rows */
    int    tb;                  /* tiles per block, a multiple of NR (or all, a multiple of 16) */
    bool   keep_u;              /* all panels of U kept for the call (U_KEEP) */
    int    tb_own;              /* tiles per block when each thread runs whole blocks (keep_u) */
};

static inline int round_up(int x, int m) {
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

/* What every pass of one convolution reads. */
struct wino_args {
    const struct unet__conv2d_dims   *d;
    struct wino_plan                  p;
    const struct unet__conv_epilogue *ep;
    const float                      *x2;      /* channels from c_split on (a fused concat) */
    int                               c_split; /* C_in when there is no x2 */
    bool                              stream;  /* y by non-temporal stores (plan_of) */
    int    parts;       /* weight gradient: partial sums M, part_floats apart, added in order */
    size_t part_floats;
};

/* Input plane (image n, channel ci): channel ci of x, or of x2 past c_split. */
static inline const float *in_plane(const struct wino_args *a, const float *x, int n, int ci) {
    const struct unet__conv2d_dims *d = a->d;
    const size_t HW = (size_t)d->H_in * d->W_in;
    if (ci >= a->c_split)
        return a->x2 + ((size_t)n * (d->C_in - a->c_split) + (ci - a->c_split)) * HW;
    return x + ((size_t)n * a->c_split + ci) * HW;
}

/* Panel p of V[k] (C_in, nt): tiles [p NR, p NR + width), stored (C_in, width). */
static inline size_t panel_offset(int C_in, int nt, int tile, int *width) {
    const int p = tile / NR;
    *width = nt - p * NR < NR ? nt - p * NR : NR;
    return (size_t)p * NR * C_in;
}

static inline int ci16_of(const struct unet__conv2d_dims *d) {
    return round_up(d->C_in, LANES);
}

/* One instruction set's passes, each over one group q of LANES columns (winograd_groups.h says
 * what each computes); winograd.c calls them from its parallel loops. */
struct unet__wino_kernels {
    void (*weights)(void *U, const float *w, bool flip, const struct wino_args *a, int cp,
                    int ci0, int ldu, int cibase);
    void (*input)(void *V, const float *x, const struct wino_args *a, size_t t0, int nt, int q);
    void (*output)(float *y, const float *M, const struct wino_args *a, size_t t0, int nt, int q);
    void (*wx)(void *Xt, const float *x, const struct wino_args *a, size_t t0, int nt, int q);
    void (*wdy)(void *Dt, const float *dy, const struct wino_args *a, int co0, int cob,
                size_t t0, int nt, int q);
    void (*wout)(float *dw, const float *M, const struct wino_args *a, int co0, int cob, int q);
};

/* The copies: winograd_portable.c, winograd_avx2.c, winograd_avx512.c (float32) and
 * winograd_avx512_bf16.c (bf16 words). */
extern const struct unet__wino_kernels unet__wino_portable;
void unet__micro_gemm_portable(const void *A, const void *B, int K, int width, float *C,
                               int ldc, bool acc);
#ifdef UNET__X86
extern const struct unet__wino_kernels unet__wino_avx2, unet__wino_avx512, unet__wino_avx512_bf16;
void unet__micro_gemm_avx2(const void *A, const void *B, int K, int width, float *C, int ldc,
                           bool acc);
void unet__micro_gemm_avx512(const void *A, const void *B, int K, int width, float *C, int ldc,
                             bool acc);
void unet__micro_gemm_avx512_bf16(const void *A, const void *B, int K, int width, float *C,
                                  int ldc, bool acc);
void unet__pack_words_bf16(void *dst, const float *lo, const float *hi, int n);
#endif

#endif /* UNET_OPS_WINOGRAD_H */
