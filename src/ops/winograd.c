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

/* Tiles per block of the weight gradient at least (wgrad_plan_of): its products reduce over
 * the block's tiles, and below ~64 words of them each micro-kernel call spends more on loading
 * and storing its sums than on products (the deep layers, whose budgeted blocks were 16-32
 * tiles: 8-16 bf16 words). */
#define WGRAD_MIN_TILES_DEFAULT 128
static int wgrad_min_tiles = WGRAD_MIN_TILES_DEFAULT;

/* The weight gradient's parts (wgrad_plan_of): as many as the processors (unet__thread_slots,
 * fixed for the process), up to PARTS_MAX and this many floats (32 MiB) of their partial sums
 * M, but two at least where there are two tile blocks; parts_want > 0 (the tests) replaces
 * the processors. */
#define PARTS_BUDGET_DEFAULT ((size_t)1 << 23)
#define PARTS_MAX            16
static size_t parts_budget = PARTS_BUDGET_DEFAULT;
static int    parts_want;

/* Outputs of at least this many bytes are written by non-temporal stores (the AVX-512 row
 * kernel, where a run of 16 floats is whole and aligned): such a map is far larger than the
 * caches, so an ordinary store first reads each line it writes, only for the line to leave the
 * cache before the next layer reads it.  The 512x512 64-channel maps of a U-Net (64 MiB) down
 * to the 128x128 256-channel ones.  Measured (bench_unet infer 512, 2 threads, 3 pairs in
 * alternation): float32 forward 2-7% faster, bf16 5-9% (docs/performance.md). */
#define STREAM_MIN_DEFAULT ((double)(16 << 20))
static double stream_min = STREAM_MIN_DEFAULT;

static bool streams(const struct unet__conv2d_dims *d) {
    return (double)d->N * d->C_out * d->H_out * d->W_out * sizeof(float) >= stream_min;
}

void unet__winograd_set_budget(size_t floats) {
    stream_min = floats ? 0.0 : STREAM_MIN_DEFAULT;
    vm_budget = floats ? floats : VM_BUDGET_DEFAULT;
    u_keep = floats ? floats : U_KEEP_DEFAULT;
    kc_chunk = floats ? 16 : KC_DEFAULT;
    wgrad_min_tiles = floats ? LANES : WGRAD_MIN_TILES_DEFAULT;
    parts_budget = floats ? SIZE_MAX : PARTS_BUDGET_DEFAULT;
    parts_want = floats ? 3 : 0;
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

/* Words of K values at pack per word (winograd.h). */
static int words_of(int K, int pack) {
    return (K + pack - 1) / pack;
}

static const struct unet__kernels *row_of(const struct unet__conv_how *how) {
    return how && how->k ? how->k : unet__kernels_pick(UNET__PRECISION_F32);
}

/* The blocking for operands of `pack` values per word: V takes words_of(C_in) per tile and
 * k, M and U float32-sized words. */
static struct wino_plan plan_of(const struct unet__conv2d_dims *d, int pack) {
    struct wino_plan p;
    const size_t kw = (size_t)words_of(d->C_in, pack);
    p.tiles_h = (d->H_out + 3) / 4;
    p.tiles_w = (d->W_out + 3) / 4;
    p.tiles = (size_t)d->N * p.tiles_h * p.tiles_w;
    p.cop = round_up(d->C_out, MR);
    size_t tb = vm_budget / (36 * (kw + (size_t)p.cop));
    tb = tb < NR ? NR : tb / NR * NR;
    size_t all = (p.tiles + LANES - 1) / LANES * LANES;
    p.tb = (int)(tb < all ? tb : all);
    p.keep_u = 36 * (size_t)p.cop * kw <= u_keep;
    /* A thread's own block: V + M in a quarter of the budget (about its share of L2). */
    size_t to = vm_budget / 4 / (36 * (kw + (size_t)p.cop));
    to = to < NR ? NR : to / NR * NR;
    p.tb_own = (int)(to < all ? to : all);
    return p;
}

/* Where thread me's own-block V and M start, for per floats of them a thread: one block's room
 * away from the next thread's.  When this VM's two vCPUs sit on different L3s (bench_pingpong
 * ~450 ns), buffers side by side cost the 512x512 and 256x256 layers 12-14% at 2 threads
 * (64 channels bf16 22 -> 19 ms, 128 channels 15.7 -> 13.8 ms, alternated in one process; no
 * change with the vCPUs on one L3).  The cause is not known (this VM has no cache counters);
 * the gap is what the measurements support (docs/performance.md). */
static size_t own_offset(int me, size_t per) {
    return 2 * (size_t)me * per;
}

/* Scratch words of one pack: the transformed weights (all of them when kept, else a chunk per
 * thread) and the larger of the shared block and the threads' own blocks (own_offset). */
static size_t scratch_words(const struct unet__conv2d_dims *d, int pack) {
    struct wino_plan p = plan_of(d, pack);
    const size_t kw = (size_t)words_of(d->C_in, pack);
    size_t u = p.keep_u ? (size_t)p.cop * kw : (size_t)unet__thread_slots() * kc_chunk / pack * MR;
    size_t vm = (kw + (size_t)p.cop) * p.tb, per = (kw + (size_t)p.cop) * p.tb_own;
    size_t vm_own = own_offset(unet__thread_slots() - 1, per) + per;
    return 36 * (u + (vm > vm_own ? vm : vm_own));
}

size_t unet__winograd_scratch_floats(const struct unet__conv2d_dims *d) {
    if (!unet__winograd_applies(d)) return 0;
    /* Enough for both word formats, so that a plan serves either precision. */
    size_t f = scratch_words(d, 1), b = scratch_words(d, 2);
    return f > b ? f : b;
}

size_t unet__winograd_weights_floats(const struct unet__conv2d_dims *d,
                                     const struct unet__kernels *k) {
    return 36 * (size_t)round_up(d->C_out, MR) * (size_t)words_of(d->C_in, k->pack);
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

/* The products of one tile block (V, M of nt tiles) for output-channel panel cp and the kwc
 * words of input channels from word w0: M[k] rows [cp MR, cp MR + MR) (+)= U[k] V[k] over the
 * block's tile panels, with U[k] at U + k ldk (kwc x MR words); the first words (w0 = 0)
 * overwrite M. */
static void products(const struct unet__kernels *K, const struct wino_args *a, const float *U,
                     size_t ldk, int w0, int kwc, const float *V, float *M, int cp, int nt) {
    const int kw = words_of(a->d->C_in, K->pack);
    for (int k = 0; k < 36; k++) {
        const float *Uk = U + (size_t)k * ldk;
        float *Mk = M + ((size_t)k * a->p.cop + (size_t)cp * MR) * nt;
        for (int tile = 0; tile < nt; tile += NR) {
            int width;
            const float *Vp = V + (size_t)k * kw * nt + panel_offset(kw, nt, tile, &width);
            K->micro_gemm(Uk, Vp + (size_t)w0 * width, kwc, width, Mk + tile, nt, w0 > 0);
        }
    }
}

/* The products for weights too large to keep: the panel's weights are transformed KC input
 * channels at a time into the thread's buffer (36 x KC x MR values, cache-resident) and each
 * chunk's products are accumulated into M right away, so the 4x larger transformed weights
 * never go through memory. */
static void chunked_products(const struct unet__kernels *K, const struct wino_args *a, float *Uc,
                             const float *w, bool flip, const float *V, float *M, int cp, int nt) {
    const int C_in = a->d->C_in;
    for (int ci0 = 0; ci0 < C_in; ci0 += kc_chunk) {
        const int kc = C_in - ci0 < kc_chunk ? C_in - ci0 : kc_chunk;
        const int kwc = words_of(kc, K->pack);
        for (int g = ci0; g < ci0 + kc; g += WCI)
            K->winograd->weights(Uc, w, flip, a, cp, g, kwc, ci0);
        products(K, a, Uc, (size_t)kwc * MR, ci0 / K->pack, kwc, V, M, cp, nt);
    }
}

/* All of U, panel by panel: (cop / MR, 36, words of C_in, MR), the layout products reads. */
static void weights_all(const struct unet__kernels *K, const struct wino_args *a, float *U,
                        const float *w, bool flip) {
    const int kw = words_of(a->d->C_in, K->pack);
#pragma omp for schedule(dynamic, 1)
    for (int cp = 0; cp < a->p.cop / MR; cp++)
        for (int ci0 = 0; ci0 < a->d->C_in; ci0 += WCI)
            K->winograd->weights(U + (size_t)cp * 36 * kw * MR, w, flip, a, cp, ci0, kw, 0);
}

void unet__winograd_weights(float *u, const float *w, const struct unet__conv2d_dims *d,
                            const struct unet__kernels *k) {
    UNET_ASSERT(unet__winograd_applies(d));
    const struct wino_args a = {.d = d, .p = plan_of(d, k->pack), .c_split = d->C_in};
#pragma omp parallel
    weights_all(k, &a, u, w, false);
}

/* The outputs of output-channel panel cp for the block's nt tiles from t0, right after the
 * products that wrote its rows of M: those 36 x MR x nt sums are then still in the cache (read
 * after all panels' products they came from memory, the output pass's main cost). */
static void output_panel(const struct unet__wino_kernels *W, float *y, const float *M,
                         const struct wino_args *a, size_t t0, int nt, int cp) {
    const int groups = nt / LANES, co_end = (cp + 1) * MR < a->d->C_out ? (cp + 1) * MR
                                                                        : a->d->C_out;
    for (int q = cp * MR * groups; q < co_end * groups; q++) W->output(y, M, a, t0, nt, q);
}

/* Tiles in the block starting at t0 (a multiple of LANES: missing tiles are zero). */
static int block_tiles(const struct wino_plan *p, size_t t0, int tb) {
    size_t left = (p->tiles - t0 + LANES - 1) / LANES * LANES;
    return left < (size_t)tb ? (int)left : tb;
}

/* One parallel region for the whole convolution, in one of two schedules.
 *   - Own blocks (at least 3 per thread): each thread takes whole tile blocks (input
 *     transform, products, output transform) with its own V and M, dynamically: no barrier
 *     per block, a thread slowed by other work on the machine takes fewer blocks, and a
 *     thread reads only the V it wrote.  Weights that fit U_KEEP are transformed once before;
 *     larger ones a chunk at a time in each block, into the thread's buffer (one transform per
 *     block, as in the shared schedule).  The early layers, most of the pixels, and the 64x64
 *     ones of a 256x256 batch of 4, whose forward at 2 threads took 20% longer in shared
 *     blocks (V written by both threads and read by both: docs/performance.md).
 *   - Shared blocks (few tiles or large weights): each pass is an `omp for` whose implicit
 *     barrier orders it before the next; the products are split by output-channel panel, each
 *     thread transforming the panel's weights (unless kept from the first block) into its
 *     buffer.  The deep layers.
 * Either way every output is computed by one thread in one fixed order.  Loops are scheduled
 * dynamically, in small chunks: on a machine shared with other work, a thread that lost its
 * core for a while takes fewer chunks instead of holding up the barrier. */
static void winograd_forward(float *y, const float *x, const float *x2, int c_split,
                             const float *w, bool flip, const struct unet__conv2d_dims *d,
                             const struct unet__conv_epilogue *ep,
                             const struct unet__conv_how *how, float *scratch) {
    UNET_ASSERT(unet__winograd_applies(d));
    const struct unet__kernels      *K = row_of(how);
    const struct unet__wino_kernels *W = K->winograd;
    const struct wino_args a = {.d = d, .p = plan_of(d, K->pack), .ep = ep, .x2 = x2,
                                .c_split = c_split, .stream = streams(d)};
    const int C_in = d->C_in, kw = words_of(C_in, K->pack), slots = unet__thread_slots();
    const int panels_co = a.p.cop / MR;
    /* Transformed weights given (the model's cache): every panel is there, as when kept. */
    const float *cached = how ? how->wino_u : NULL;
    const bool keep = cached || a.p.keep_u;
    UNET_ASSERT(!(cached && flip));
    float *Ubuf = scratch;
    float *V = Ubuf + 36 * (a.p.keep_u ? (size_t)a.p.cop * kw
                                       : (size_t)slots * kc_chunk / K->pack * MR);
    const float *U = cached ? cached : Ubuf;
    const size_t u_panel = (size_t)36 * kw * MR;
    int team = 1;
#ifdef _OPENMP
    team = omp_get_max_threads();
    if (team > slots) team = slots;
#endif
    if (small_work(d, &a.p)) team = 1;
    const size_t own_blocks = (a.p.tiles + (size_t)a.p.tb_own - 1) / (size_t)a.p.tb_own;
    const bool own = own_blocks >= 3 * (size_t)team;
    const size_t vm_own = 36 * ((size_t)kw + (size_t)a.p.cop) * a.p.tb_own;
#pragma omp parallel num_threads(team)
    {
        int me = 0;
#ifdef _OPENMP
        me = omp_get_thread_num();
#endif
        if (own) {
            if (keep && !cached) weights_all(K, &a, Ubuf, w, flip);
            float *Vme = V + own_offset(me, vm_own), *Mme = Vme + (size_t)36 * kw * a.p.tb_own;
            float *Uc = Ubuf + (size_t)me * 36 * kc_chunk / K->pack * MR;
#pragma omp for schedule(dynamic, 1)
            for (size_t b = 0; b < own_blocks; b++) {
                const size_t t0 = b * (size_t)a.p.tb_own;
                const int nt = block_tiles(&a.p, t0, a.p.tb_own), groups = nt / LANES;
                for (int q = 0; q < kw * groups; q++) W->input(Vme, x, &a, t0, nt, q);
                for (int cp = 0; cp < panels_co; cp++) {
                    if (keep)
                        products(K, &a, U + cp * u_panel, (size_t)kw * MR, 0, kw, Vme, Mme, cp,
                                 nt);
                    else
                        chunked_products(K, &a, Uc, w, flip, Vme, Mme, cp, nt);
                    output_panel(W, y, Mme, &a, t0, nt, cp);
                }
            }
        } else {
            float *M = V + (size_t)36 * kw * a.p.tb;
            for (size_t t0 = 0; t0 < a.p.tiles; t0 += (size_t)a.p.tb) {
                const int nt = block_tiles(&a.p, t0, a.p.tb), groups = nt / LANES;
#pragma omp for schedule(dynamic, 8)
                for (int q = 0; q < kw * groups; q++) W->input(V, x, &a, t0, nt, q);
#pragma omp for schedule(dynamic, 1)
                for (int cp = 0; cp < panels_co; cp++) {
                    if (!keep) {
                        float *Uc = Ubuf + (size_t)me * 36 * kc_chunk / K->pack * MR;
                        chunked_products(K, &a, Uc, w, flip, V, M, cp, nt);
                    } else {
                        if (!cached && t0 == 0)
                            for (int ci0 = 0; ci0 < C_in; ci0 += WCI)
                                W->weights(Ubuf + cp * u_panel, w, flip, &a, cp, ci0, kw, 0);
                        products(K, &a, U + cp * u_panel, (size_t)kw * MR, 0, kw, V, M, cp, nt);
                    }
                    output_panel(W, y, M, &a, t0, nt, cp);
                }
            }
        }
        /* Non-temporal stores are weakly ordered: each thread's must be visible before the
         * region's closing barrier hands y to the next layer. */
        if (a.stream) unet__store_fence();
    }
}

void unet__conv2d_winograd(float *y, const float *x, const float *w, bool flip,
                           const struct unet__conv2d_dims *d, const struct unet__conv_epilogue *ep,
                           const struct unet__conv_how *how, float *scratch) {
    winograd_forward(y, x, NULL, d->C_in, w, flip, d, ep, how, scratch);
}

void unet__conv2d_winograd_cat(float *y, const float *a, const float *b, int c_a, const float *w,
                               const struct unet__conv2d_dims *d,
                               const struct unet__conv_epilogue *ep,
                               const struct unet__conv_how *how, float *scratch) {
    UNET_ASSERT(c_a > 0 && c_a < d->C_in);
    winograd_forward(y, a, b, c_a, w, false, d, ep, how, scratch);
}

/* ---- Weight gradient ----
 * y = A^T [U ⊙ V] A with U = G g G^T is linear in g; its adjoint gives, summed over tiles,
 *     dw = G^T [ sum_t (A dy_t A^T) ⊙ (B^T d_t B) ] G
 * i.e. 36 products M[k] (C_out x C_in) = Dt[k] Xt[k]^T reducing over the tiles, then one 6x6 ->
 * 3x3 transform per (output, input channel) pair.  Output channels are blocked so that M
 * (36 x cob x ci16) stays under the budget, and tiles so that Xt and Dt do too, but in blocks
 * of at least wgrad_min_tiles (the scratch grows with that floor: 37 MB a part for 1024 input
 * channels at batch 4, against 19 MB without it).
 *
 * Two schedules, chosen by the shape alone (so the sums, and the bits, are the same for any
 * thread count):
 *   - Parts (two tile blocks or more, the early layers): the tiles are cut into `parts`
 *     contiguous ranges, each summed into its own M by one thread, which transforms and
 *     multiplies its blocks in its own Xt and Dt; then M = M_0 + M_1 + ... in part order.  A
 *     thread reads only what it wrote until that last sum: on this project's machines the two
 *     cores' caches are ~240 ns apart (a line's round trip is 470 ns), and the shared schedule,
 *     where the transforms of a block are split over the threads and the products over k, gained
 *     nothing from a second thread at 256x256 (docs/performance.md).
 *   - Shared (one block: the deep layers): each pass is an `omp for`; the transforms split by
 *     group, the products by k (a thread's chunk is every micro-tile of one k, whose Dt[k],
 *     Xt[k] and M[k] stay in its L2), one thread per micro-tile of M, in tile order.
 * Then G^T M G is added into dw. */
struct wgrad_plan {
    int    cob, cobp; /* output channels per block, a multiple of MR (or all); rounded up */
    int    tb;        /* tiles per block, a multiple of LANES */
    int    parts;     /* tile ranges with their own M (1: the shared schedule) */
    size_t groups;    /* groups of LANES tiles in all */
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
    tb = tb < (size_t)wgrad_min_tiles ? (size_t)wgrad_min_tiles : tb / LANES * LANES;
    w.groups = (p->tiles + LANES - 1) / LANES;
    const size_t all = w.groups * LANES, blocks = (all + tb - 1) / tb;
    w.tb = (int)(tb < all ? tb : all);
    size_t parts = (size_t)(parts_want ? parts_want : unet__thread_slots());
    const size_t fit = parts_budget / (36 * (size_t)w.cobp * ci16);
    parts = parts > fit ? fit : parts > PARTS_MAX ? PARTS_MAX : parts;
    parts = parts < 2 ? 2 : parts;
    w.parts = (int)(parts < blocks ? parts : blocks);
    return w;
}

/* Buffers of Xt and Dt: one per thread that sums a part (the processors, at most the parts). */
static int wgrad_buffers(const struct wgrad_plan *w) {
    const int slots = unet__thread_slots();
    return w->parts > 1 && slots < w->parts ? slots : w->parts;
}

/* Scratch words: M in float32 (one per part), Xt and Dt in words of at most one value (the
 * float32 size, an upper bound for bf16 pairs of tiles). */
size_t unet__winograd_wgrad_scratch_floats(const struct unet__conv2d_dims *d) {
    if (!unet__winograd_applies(d)) return 0;
    struct wino_plan p = plan_of(d, 1);
    struct wgrad_plan w = wgrad_plan_of(d, &p);
    const size_t ci16 = (size_t)ci16_of(d);
    return 36 * ((size_t)w.parts * w.cobp * ci16 +
                 (size_t)wgrad_buffers(&w) * (ci16 + (size_t)w.cobp) * w.tb);
}

/* Item v of the 36 x micro products of one block of nt tiles (Xt, Dt transformed by the
 * caller): M[k] (+)= Dt[k]^T Xt[k] on micro-tile v mod micro of k = v / micro. */
static void wgrad_products(const struct unet__kernels *K, float *M, const float *Dt,
                           const float *Xt, int ci16, int cobp, int nt, bool acc, int v) {
    const int cpanels = (ci16 + NR - 1) / NR, micro = cobp / MR * cpanels;
    const int kk = v / micro, u = v % micro;
    const int cp = u / cpanels, xp = u % cpanels;
    const int width = ci16 - xp * NR < NR ? ci16 - xp * NR : NR;
    const size_t ntw = (size_t)(nt / K->pack); /* words of the block's tiles */
    K->micro_gemm(Dt + ((size_t)kk * cobp + (size_t)cp * MR) * ntw,
                  Xt + ((size_t)kk * ci16 + (size_t)xp * NR) * ntw, (int)ntw, width,
                  M + ((size_t)kk * cobp + (size_t)cp * MR) * ci16 + (size_t)xp * NR, ci16, acc);
}

void unet__conv2d_winograd_wgrad(float *dw, const float *dy, const float *x,
                                 const struct unet__conv2d_dims *d,
                                 const struct unet__kernels *k, float *scratch) {
    UNET_ASSERT(unet__winograd_applies(d));
    const struct unet__kernels      *K = k ? k : unet__kernels_pick(UNET__PRECISION_F32);
    const struct unet__wino_kernels *W = K->winograd;
    const struct wino_plan  p = plan_of(d, 1);
    const struct wgrad_plan wp = wgrad_plan_of(d, &p);
    const int ci16 = ci16_of(d), cpanels = (ci16 + NR - 1) / NR, parts = wp.parts;
    const size_t m_floats = (size_t)36 * wp.cobp * ci16;
    const struct wino_args a = {.d = d, .p = p, .c_split = d->C_in, .parts = parts,
                                .part_floats = m_floats};
    const size_t xt_floats = (size_t)36 * ci16 * wp.tb;
    const size_t buf_floats = xt_floats + (size_t)36 * wp.cobp * wp.tb; /* Xt, Dt */
    float *M = scratch, *bufs = M + (size_t)parts * m_floats;
    int team = 1;
#ifdef _OPENMP
    team = omp_get_max_threads();
    if (team > unet__thread_slots()) team = unet__thread_slots();
#endif
    if (small_work(d, &a.p)) team = 1;
    (void)team; /* without OpenMP: only the num_threads below, which is not compiled */
#pragma omp parallel num_threads(team)
    for (int co0 = 0; co0 < d->C_out; co0 += wp.cob) {
        const int cob = d->C_out - co0 < wp.cob ? d->C_out - co0 : wp.cob;
        const int cobp = round_up(cob, MR), micro = cobp / MR * cpanels;
        if (parts > 1) {
            int me = 0;
#ifdef _OPENMP
            me = omp_get_thread_num();
#endif
            /* Part j: groups [j G / parts, (j + 1) G / parts), on thread j mod team, in that
             * thread's buffer (me < parts <= wgrad_buffers when it has a part). */
#pragma omp for schedule(static, 1)
            for (int j = 0; j < parts; j++) {
                float *Xt = bufs + (size_t)me * buf_floats, *Dt = Xt + xt_floats;
                float *Mj = M + (size_t)j * m_floats;
                const size_t end = wp.groups * (size_t)(j + 1) / (size_t)parts * LANES;
                for (size_t t0 = wp.groups * (size_t)j / (size_t)parts * LANES; t0 < end;
                     t0 += (size_t)wp.tb) {
                    const int nt = end - t0 < (size_t)wp.tb ? (int)(end - t0) : wp.tb;
                    const int groups = nt / LANES;
                    for (int q = 0; q < ci16 / LANES * groups; q++) W->wx(Xt, x, &a, t0, nt, q);
                    for (int q = 0; q < cobp / MR * groups; q++)
                        W->wdy(Dt, dy, &a, co0, cob, t0, nt, q);
                    const bool acc = t0 > wp.groups * (size_t)j / (size_t)parts * LANES;
                    for (int v = 0; v < 36 * micro; v++)
                        wgrad_products(K, Mj, Dt, Xt, ci16, cobp, nt, acc, v);
                }
            }
        } else {
            float *Xt = bufs, *Dt = Xt + xt_floats;
            const int nt = block_tiles(&a.p, 0, wp.tb), groups = nt / LANES;
            UNET_ASSERT((size_t)nt >= wp.groups * LANES);
#pragma omp for schedule(dynamic, 8) nowait
            for (int q = 0; q < ci16 / LANES * groups; q++) W->wx(Xt, x, &a, 0, nt, q);
#pragma omp for schedule(dynamic, 8)
            for (int q = 0; q < cobp / MR * groups; q++) W->wdy(Dt, dy, &a, co0, cob, 0, nt, q);
#pragma omp for schedule(dynamic, micro)
            for (int v = 0; v < 36 * micro; v++)
                wgrad_products(K, M, Dt, Xt, ci16, cobp, nt, false, v);
        }
#pragma omp for schedule(dynamic, 8)
        for (int q = 0; q < cob * (ci16 / LANES); q++) W->wout(dw, M, &a, co0, cob, q);
    }
}
