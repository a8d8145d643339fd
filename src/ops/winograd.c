/* winograd.c — the 3x3, stride-1 convolution as Winograd's minimal filtering F(4x4, 3x3).
 *
 * im2col + GEMM spends 9 multiplications per input channel on every output pixel.  Winograd's
 * F(4x4, 3x3) (Lavin & Gray 2016) computes a 4x4 block of outputs from a 6x6 input patch d and
 * the 3x3 kernel g as
 *     Y = A^T [ (G g G^T) ⊙ (B^T d B) ] A
 * whose element-wise product has 36 terms instead of 16 * 9 = 144: summed over input channels,
 * it becomes 36 independent GEMMs, each 1/4 of the multiplications of the direct method, plus
 * transforms that cost O(channels * pixels) instead of O(channels^2 * pixels).  The matrices
 * (interpolation points 0, 1, -1, 2, -2, infinity) are written out in winograd_groups.h.
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
 * one thread in one order whatever the thread count.  The passes and the GEMM micro-kernel are
 * compiled for AVX-512, AVX2+FMA and the compiler's baseline (winograd_<isa>.c, from
 * winograd_groups.h) and chosen at run time by the kernel table (ops/kernels.h); this file is
 * the blocking and the parallel schedule around them.
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
 *
 * Contract (ops.h): y (N, C_out, H_out, W_out) (=|+=) epilogue(conv(x, w)) for x (N, C_in, H_in,
 * W_in) and w (C_out, C_in, 3, 3), stride 1, padding 0..2, C_out >= 16; dw += the weight
 * gradient.  Tested against unet__conv2d_forward_ref / _backward_ref for every instruction set,
 * odd sizes, small blocks and every epilogue (tests/test_winograd.c).
 */
#include "ops/winograd.h"
#include "ops/kernels.h"

enum { KC_DEFAULT = 128 /* input channels per chunk of transformed weights (chunked_products) */ };

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

/* Below this many multiply-adds (about 0.1 ms of work) a convolution runs on the calling
 * thread: starting and synchronising a team costs more (tiny test networks run thousands). */
#define PARALLEL_MIN_MACS ((double)(1 << 22))

static bool small_work(const struct unet__conv2d_dims *d, const struct wino_plan *p) {
    return 36.0 * p->cop * d->C_in * (double)p->tiles < PARALLEL_MIN_MACS;
}

/* The products of one tile block (V, M of nt tiles) for output-channel panel cp and input
 * channels [ci0, ci0 + kc): M[k] rows [cp MR, cp MR + MR) (+)= U[k] V[k] over the block's tile
 * panels, U (36, kc, MR); the first chunk (ci0 = 0) overwrites M. */
static void products(const struct unet__kernels *K, const struct wino_args *a, const float *U,
                     int ci0, int kc, const float *V, float *M, int cp, int nt) {
    const int C_in = a->d->C_in;
    for (int k = 0; k < 36; k++) {
        const float *Uk = U + (size_t)k * kc * MR;
        float *Mk = M + ((size_t)k * a->p.cop + (size_t)cp * MR) * nt;
        for (int tile = 0; tile < nt; tile += NR) {
            int width;
            const float *Vp = V + (size_t)k * C_in * nt + panel_offset(C_in, nt, tile, &width);
            K->micro_gemm(Uk, Vp + (size_t)ci0 * width, kc, width, Mk + tile, nt, ci0 > 0);
        }
    }
}

/* The products for weights too large to keep: the panel's weights are transformed KC input
 * channels at a time into the thread's buffer (36 x KC x MR floats, cache-resident) and each
 * chunk's products are accumulated into M right away, so the 4x larger transformed weights
 * never go through memory. */
static void chunked_products(const struct unet__kernels *K, const struct wino_args *a, float *Uc,
                             const float *w, bool flip, const float *V, float *M, int cp, int nt) {
    const int C_in = a->d->C_in;
    for (int ci0 = 0; ci0 < C_in; ci0 += kc_chunk) {
        const int kc = C_in - ci0 < kc_chunk ? C_in - ci0 : kc_chunk;
        for (int g = ci0; g < ci0 + kc; g += WCI)
            K->winograd->weights(Uc, w, flip, a, cp, g, kc, ci0);
        products(K, a, Uc, ci0, kc, V, M, cp, nt);
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
    const struct unet__kernels      *K = unet__kernels_pick(UNET__PRECISION_F32);
    const struct unet__wino_kernels *W = K->winograd;
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
                    W->weights(Ubuf + (size_t)cp * 36 * C_in * MR, w, flip, &a, cp, ci0, C_in, 0);
            float *Vme = V + (size_t)me * vm_own, *Mme = Vme + (size_t)36 * C_in * a.p.tb_own;
#pragma omp for schedule(dynamic, 1)
            for (size_t b = 0; b < own_blocks; b++) {
                const size_t t0 = b * (size_t)a.p.tb_own;
                const int nt = block_tiles(&a.p, t0, a.p.tb_own), groups = nt / LANES;
                for (int q = 0; q < C_in * groups; q++) W->input(Vme, x, &a, t0, nt, q);
                for (int cp = 0; cp < panels_co; cp++)
                    products(K, &a, Ubuf + (size_t)cp * 36 * C_in * MR, 0, C_in, Vme, Mme, cp, nt);
                for (int q = 0; q < d->C_out * groups; q++) W->output(y, Mme, &a, t0, nt, q);
            }
        } else {
            float *M = V + (size_t)36 * C_in * a.p.tb;
            for (size_t t0 = 0; t0 < a.p.tiles; t0 += (size_t)a.p.tb) {
                const int nt = block_tiles(&a.p, t0, a.p.tb), groups = nt / LANES;
#pragma omp for schedule(dynamic, 8)
                for (int q = 0; q < C_in * groups; q++) W->input(V, x, &a, t0, nt, q);
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
                            W->weights(U, w, flip, &a, cp, ci0, C_in, 0);
                    products(K, &a, U, 0, C_in, V, M, cp, nt);
                }
#pragma omp for schedule(dynamic, 8)
                for (int q = 0; q < d->C_out * groups; q++) W->output(y, M, &a, t0, nt, q);
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
    const struct unet__kernels      *K = unet__kernels_pick(UNET__PRECISION_F32);
    const struct unet__wino_kernels *W = K->winograd;
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
            for (int q = 0; q < ci16 / LANES * groups; q++) W->wx(Xt, x, &a, t0, nt, q);
#pragma omp for schedule(dynamic, 8)
            for (int q = 0; q < cobp / MR * groups; q++) W->wdy(Dt, dy, &a, co0, cob, t0, nt, q);
            /* M[k] (+)= Dt[k]^T Xt[k] over this block's tiles, by MR x NR micro-tiles. */
#pragma omp for schedule(dynamic, 1)
            for (int u = 0; u < micro; u++) {
                const int cp = u / cpanels, xp = u % cpanels;
                const int width = ci16 - xp * NR < NR ? ci16 - xp * NR : NR;
                for (int k = 0; k < 36; k++)
                    K->micro_gemm(Dt + ((size_t)k * cobp + (size_t)cp * MR) * nt,
                                  Xt + (size_t)k * ci16 * nt + (size_t)xp * NR * nt, nt, width,
                                  M + ((size_t)k * cobp + (size_t)cp * MR) * ci16 +
                                      (size_t)xp * NR,
                                  ci16, t0 > 0);
            }
        }
#pragma omp for schedule(dynamic, 8)
        for (int q = 0; q < cob * (ci16 / LANES); q++) W->wout(dw, M, &a, co0, cob, q);
    }
}
