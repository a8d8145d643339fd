/* test_winograd.c — the Winograd F(4x4, 3x3) fast path against the naive convolution: forward
 * with every epilogue (bias, folded batch-norm scale, ReLU, accumulation), the input gradient
 * and the weight gradient, on odd sizes (H, W not multiples of the 4x4 tile, smaller than one
 * tile, rows of 16 tiles for the AVX-512 row gather and scatter), padding
 * 0, 1 and 2, with the scratch blocks made small so that several output-channel and tile blocks
 * run, for each instruction-set copy this CPU has (portable, AVX2, AVX-512), and the same bits
 * for one and two threads; and the model's fused inference (folded batch-norm, pool in the
 * epilogue, concat read in place) against its unfused training plan at each level. */
#include "harness.h"
#include "model.h"
#include "ops/ops.h"

/* Error bound, relative to the largest |output| of the case: Winograd's transforms round
 * values up to ~100x an input (coefficients up to 8 on each side, 36-term sums) in float32, so
 * the error is some 2^-24 of the output scale growing like sqrt(C_in); measured here at most
 * 6e-6 of max|y| (C_in = 40), against about 1e-7 for im2col + GEMM.  2e-5 keeps a 3x margin. */
#define WINO_TOL 2e-5

static double max_abs(const float *x, size_t n) {
    double m = 0.0;
    for (size_t i = 0; i < n; i++)
        if (fabs(x[i]) > m) m = fabs(x[i]);
    return m;
}

/* max |got - ref| / max |ref|: the error measure the tolerance is written in. */
static double scaled_err(const float *got, const float *ref, size_t n) {
    double e = 0.0;
    for (size_t i = 0; i < n; i++)
        if (fabs((double)got[i] - ref[i]) > e) e = fabs((double)got[i] - ref[i]);
    double m = max_abs(ref, n);
    return m > 0.0 ? e / m : e;
}

struct wcase {
    struct unet__conv2d_dims d;
    float *x, *w, *scale, *shift, *y, *y_ref, *scratch;
    float *dy, *dx, *dx_ref, *dw, *dw_ref; /* the gradients of run_case */
    size_t nx, ny, nw;
};

static void wcase_setup(struct wcase *k, struct unet__rng *rng) {
    CHECK_STATUS(unet__conv2d_dims_init(NULL, &k->d, "wino"), UNET_STATUS_OK);
    const struct unet__conv2d_dims *d = &k->d;
    k->nx = (size_t)d->N * d->C_in * d->H_in * d->W_in;
    k->ny = (size_t)d->N * d->C_out * d->H_out * d->W_out;
    k->nw = (size_t)d->C_out * d->C_in * 9;
    k->x = test_alloc(k->nx), k->w = test_alloc(k->nw), k->y = test_alloc(k->ny);
    k->y_ref = test_alloc(k->ny);
    k->scale = test_alloc((size_t)d->C_out), k->shift = test_alloc((size_t)d->C_out);
    fill_uniform(rng, k->x, k->nx, -1.0f, 1.0f);
    fill_uniform(rng, k->w, k->nw, -0.5f, 0.5f);
    fill_uniform(rng, k->scale, (size_t)d->C_out, 0.5f, 2.0f);
    fill_uniform(rng, k->shift, (size_t)d->C_out, -0.5f, 0.5f);
    size_t s = unet__conv2d_scratch_floats(d);
    k->scratch = test_alloc(s);
    k->dy = test_alloc(k->ny), k->dx = test_alloc(k->nx), k->dx_ref = test_alloc(k->nx);
    k->dw = test_alloc(k->nw), k->dw_ref = test_alloc(k->nw);
}

static void wcase_free(struct wcase *k) {
    free(k->x), free(k->w), free(k->y), free(k->y_ref), free(k->scale), free(k->shift);
    free(k->scratch), free(k->dy), free(k->dx), free(k->dx_ref), free(k->dw), free(k->dw_ref);
}

/* The errors of one case on a kernel row, each max |got - ref| / max |ref|. */
struct werr {
    double y, dx, dw;
};

/* Forward with scale, shift and ReLU against ref + the same epilogue in double; then the input
 * gradient (accumulating onto non-zero values) against the naive backward; on how's row (NULL:
 * float32), each checked against tol. */
static struct werr run_case(struct wcase *k, const char *label,
                            const struct unet__conv_how *how, double tol) {
    const struct unet__conv2d_dims *d = &k->d;
    CHECK(unet__winograd_applies(d));
    struct unet__conv_epilogue ep = {.scale = k->scale, .shift = k->shift, .relu = true};
    unet__conv2d_forward_ep(k->y, k->x, k->w, d, &ep, how, k->scratch);
    unet__conv2d_forward_ref(k->y_ref, k->x, k->w, NULL, d);
    const size_t P = (size_t)d->H_out * d->W_out;
    for (size_t i = 0; i < k->ny; i++) {
        int co = (int)(i / P % (size_t)d->C_out);
        double v = (double)k->y_ref[i] * k->scale[co] + k->shift[co];
        k->y_ref[i] = (float)(v > 0.0 ? v : 0.0);
    }
    /* dx += A^T dy, from the same non-zero start on both paths. */
    float *dy = k->dy, *dx = k->dx, *dx_ref = k->dx_ref, *dw = k->dw, *dw_ref = k->dw_ref;
    struct unet__rng rng;
    unet__rng_seed(&rng, 99);
    fill_uniform(&rng, dy, k->ny, -1.0f, 1.0f);
    for (size_t i = 0; i < k->nx; i++) dx[i] = dx_ref[i] = 0.25f;
    unet__conv2d_backward(dx, NULL, NULL, dy, k->x, k->w, d, how, k->scratch);
    unet__conv2d_backward_ref(dx_ref, NULL, NULL, dy, k->x, k->w, d);
    /* dw += dL/dw (Winograd's adjoint transforms, reducing over all tiles). */
    for (size_t i = 0; i < k->nw; i++) dw[i] = dw_ref[i] = -0.5f;
    unet__conv2d_backward(NULL, dw, NULL, dy, k->x, k->w, d, how, k->scratch);
    unet__conv2d_backward_ref(NULL, dw_ref, NULL, dy, k->x, k->w, d);
    for (size_t i = 0; i < k->nw; i++) dw[i] += 0.5f, dw_ref[i] += 0.5f;
    const struct werr e = {scaled_err(k->y, k->y_ref, k->ny), scaled_err(dx, dx_ref, k->nx),
                           scaled_err(dw, dw_ref, k->nw)};
    printf("     %s: error / max|ref|: y %.2e, dx %.2e, dw %.2e\n", label, e.y, e.dx, e.dw);
    CHECK_TENSOR("y (scale, shift, relu)", k->y, k->y_ref, k->ny,
                 tol * max_abs(k->y_ref, k->ny), 0.0);
    CHECK_TENSOR("dx", dx, dx_ref, k->nx, tol * max_abs(dx_ref, k->nx), 0.0);
    CHECK_TENSOR("dw", dw, dw_ref, k->nw, tol * max_abs(dw_ref, k->nw), 0.0);
    return e;
}

static void check_case(struct wcase *k, const char *label) {
    run_case(k, label, NULL, WINO_TOL);
}

TEST(winograd_vs_ref) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 11);
    enum unet__cpu_level       levels[UNET__CPU_LEVELS];
    const int                  n_levels = harness_f32_levels(levels);
    const enum unet__cpu_level cap = unet__cpu_limit(UNET__CPU_TOP);
    for (int li = 0; li < n_levels; li++) {
        const enum unet__cpu_level level = levels[li];
        unet__cpu_limit(level);
        for (int trial = 0; trial < 6; trial++) {
            struct wcase k = {0};
            int pad = trial % 3;
            k.d = (struct unet__conv2d_dims){
                .N = 1 + (int)unet__rng_below(&rng, 2), .C_in = 16 + (int)unet__rng_below(&rng, 13),
                .C_out = 16 + (int)unet__rng_below(&rng, 21), .K_h = 3, .K_w = 3, .stride_h = 1,
                .stride_w = 1, .pad_h = pad, .pad_w = pad};
            if (trial == 5) k.d.C_in = 1; /* the first layer's shape */
            k.d.H_in = (pad ? 1 : 3) + (int)unet__rng_below(&rng, 18);
            k.d.W_in = (pad ? 1 : 3) + (int)unet__rng_below(&rng, 22);
            /* Small blocks on every other trial: several output-channel and tile blocks. */
            unet__winograd_set_budget(trial % 2 ? 36 * 40 : 0);
            wcase_setup(&k, &rng);
            char label[160];
            snprintf(label, sizeof label, "%s N=%d C_in=%d %dx%d C_out=%d pad=%d%s",
                     unet__cpu_level_name(level), k.d.N, k.d.C_in, k.d.H_in, k.d.W_in, k.d.C_out,
                     pad, trial % 2 ? " (small blocks)" : "");
            check_case(&k, label);
            wcase_free(&k);
        }
    }
    unet__winograd_set_budget(0);
    unet__cpu_limit(cap);
    /* Rows of 16 or more tiles: the AVX-512 row gather, with the image border inside the loaded
     * run (pad 1, 2), at its end (W_out 62: a partial last tile) and none (pad 0).  The last
     * three again with streaming stores (every output at the test budget; on their own only
     * for maps of 16 MiB and more): whole aligned runs of 16 written by them, a partial last
     * tile and the border by ordinary stores; the input gradient's output (dx) too. */
    const int rows[7][4] = {{5, 60, 2, 0}, {9, 64, 1, 0}, {7, 62, 1, 0}, {6, 66, 0, 0},
                            {9, 64, 1, 1}, {7, 62, 1, 1}, {6, 66, 0, 1}};
    for (int i = 0; i < 7; i++) {
        struct wcase k = {.d = {.N = 2, .C_in = 17, .H_in = rows[i][0], .W_in = rows[i][1],
                                .C_out = 16, .K_h = 3, .K_w = 3, .stride_h = 1, .stride_w = 1,
                                .pad_h = rows[i][2], .pad_w = rows[i][2]}};
        unet__winograd_set_budget(rows[i][3] ? 36 * 40 : 0);
        wcase_setup(&k, &rng);
        char label[96];
        snprintf(label, sizeof label, "N=2 C_in=17 %dx%d C_out=16 pad=%d (rows of 16 tiles%s)",
                 rows[i][0], rows[i][1], rows[i][2], rows[i][3] ? ", streaming stores" : "");
        check_case(&k, label);
        wcase_free(&k);
    }
    unet__winograd_set_budget(0);
    /* The U-Net's shape: C_in 40 -> 24, a 4-aligned and an odd size. */
    for (int s = 0; s < 2; s++) {
        struct wcase k = {.d = {.N = 1, .C_in = 40, .H_in = 16 + 3 * s, .W_in = 20 + 5 * s,
                                .C_out = 24, .K_h = 3, .K_w = 3, .stride_h = 1, .stride_w = 1,
                                .pad_h = 1, .pad_w = 1}};
        wcase_setup(&k, &rng);
        check_case(&k, s ? "C_in=40 19x25 C_out=24 pad=1" : "C_in=40 16x20 C_out=24 pad=1");
        wcase_free(&k);
    }
    /* 384 tiles at the test budget: the threads' own blocks (8 of 48 tiles) with weights too
     * large to keep, transformed a chunk at a time in each block. */
    {
        struct wcase k = {.d = {.N = 2, .C_in = 17, .H_in = 48, .W_in = 64, .C_out = 16,
                                .K_h = 3, .K_w = 3, .stride_h = 1, .stride_w = 1, .pad_h = 1,
                                .pad_w = 1}};
        unet__winograd_set_budget(36 * 40);
        wcase_setup(&k, &rng);
        check_case(&k, "N=2 C_in=17 48x64 C_out=16 pad=1 (own blocks, chunked weights)");
        unet__winograd_set_budget(0);
        wcase_free(&k);
    }
    /* 220 tiles at the default budget: the weight gradient in blocks of its tile floor (128)
     * and a partial last one. */
    struct wcase k = {.d = {.N = 2, .C_in = 40, .H_in = 37, .W_in = 41, .C_out = 24, .K_h = 3,
                            .K_w = 3, .stride_h = 1, .stride_w = 1, .pad_h = 1, .pad_w = 1}};
    wcase_setup(&k, &rng);
    check_case(&k, "N=2 C_in=40 37x41 C_out=24 pad=1 (two weight-gradient tile blocks)");
    wcase_free(&k);
}

/* Every output is computed by one thread in one fixed order: the same bits for 1 and 2 threads,
 * forward, input gradient and weight gradient (large enough that a team is used, with small
 * blocks so that the dynamically scheduled loops have many chunks). */
TEST(winograd_thread_count_invariant) {
#ifdef _OPENMP
    struct unet__rng rng;
    unet__rng_seed(&rng, 12);
    struct wcase k = {.d = {.N = 2, .C_in = 32, .H_in = 41, .W_in = 38, .C_out = 33, .K_h = 3,
                            .K_w = 3, .stride_h = 1, .stride_w = 1, .pad_h = 1, .pad_w = 1}};
    wcase_setup(&k, &rng);
    float *dy = test_alloc(k.ny), *dx[2], *dw[2];
    fill_uniform(&rng, dy, k.ny, -1.0f, 1.0f);
    unet__winograd_set_budget(36 * 24 * 48);
    for (int t = 0; t < 2; t++) {
        dx[t] = test_alloc(k.nx), dw[t] = test_alloc(k.nw);
        unet__use_threads(t + 1);
        unet__conv2d_forward(t ? k.y : k.y_ref, k.x, k.w, k.shift, &k.d, k.scratch);
        unet__conv2d_backward(dx[t], dw[t], NULL, dy, k.x, k.w, &k.d, NULL, k.scratch);
    }
    CHECK(memcmp(k.y, k.y_ref, k.ny * sizeof(float)) == 0);
    CHECK(memcmp(dx[0], dx[1], k.nx * sizeof(float)) == 0);
    CHECK(memcmp(dw[0], dw[1], k.nw * sizeof(float)) == 0);
    unet__winograd_set_budget(0);
    free(dy), free(dx[0]), free(dx[1]), free(dw[0]), free(dw[1]);
    wcase_free(&k);
#endif
}

/* The model's inference fast paths together: with 16+ channels every 3x3 convolution runs by
 * Winograd, folds its batch-norm (+ ReLU), writes the max-pool that follows as part of its
 * epilogue and, after a concat, reads the two concat inputs directly.  The same network
 * evaluated through a training plan in eval mode (separate batch-norm and pool nodes,
 * concatenation formed) must give the same logits.  36 x 44 fuses both concats; 34 x 42 pools
 * odd maps (floor) and pads the deeper upsampled map (F.pad), so that concat is formed; 24 x 70
 * has rows of 16+ tiles (the AVX-512 row paths, pooled rows cut by the border); 20 x 28 with
 * bilinear upsampling; 16 x 128 with the non-temporal stores of large maps forced, the pooled
 * map's included (whole aligned rows of 32 pooled floats). */
TEST(inference_fusions_match_unfused) {
    /* H, W, concats fused, bilinear upsampling, non-temporal stores (as for large maps) */
    enum { N_SIZES = 5 };
    const int sizes[N_SIZES][5] = {{36, 44, 2, 0, 0}, {34, 42, 1, 0, 0}, {24, 70, 1, 0, 0},
                             {20, 28, 2, 1, 0}, {16, 128, 2, 0, 1}};
    /* At every instruction-set level: each has its own epilogue, pool and concat code paths. */
    enum unet__cpu_level       levels[UNET__CPU_LEVELS];
    const int                  n_levels = harness_cpu_levels(levels);
    const enum unet__cpu_level cap = unet__cpu_limit(UNET__CPU_TOP);
    for (int li = 0; li < n_levels; li++) {
        unet__cpu_limit(levels[li]);
        for (int sz = 0; sz < N_SIZES; sz++) {
            /* Small blocks and non-temporal stores for every output. */
            unet__winograd_set_budget(sizes[sz][4] ? 36 * 40 * 16 : 0);
            unet_ctx   *ctx = unet_ctx_create();
            unet_model *m = NULL;
            unet_config c = unet_config_default(UNET_ARCH_UNET);
            c.base = 16, c.depth = 2, c.classes = 3;
            if (sizes[sz][3]) c.up = UNET_UP_BILINEAR;
            CHECK_STATUS(unet_model_create(ctx, &c, 5, &m), UNET_STATUS_OK);
            if (!m) return;
            /* At the bf16 level, the bf16 row: both plans round the same operands. */
            const bool bf16 = levels[li] >= UNET__CPU_AVX512_BF16;
            if (bf16) CHECK_STATUS(unet_model_set_precision(ctx, m, UNET_PRECISION_BF16),
                                   UNET_STATUS_OK);
            struct unet__rng rng;
            unet__rng_seed(&rng, 21);
            /* Running statistics and affine parameters away from the identity. */
            for (int i = 0; i < m->n_nodes; i++) {
                const struct unet__node *nd = &m->nodes[i];
                if (nd->op != UNET__NODE_BN) continue;
                const struct unet__param *g = &m->params[nd->w], *b = &m->params[nd->b];
                fill_uniform(&rng, m->weights + g->offset, g->numel, 0.5f, 1.5f);
                fill_uniform(&rng, m->weights + b->offset, b->numel, -0.2f, 0.2f);
                float *rmean = m->buffers + m->params[nd->rmean].offset;
                float *rvar = m->buffers + m->params[nd->rvar].offset;
                fill_uniform(&rng, rmean, g->numel, -0.3f, 0.3f);
                fill_uniform(&rng, rvar, g->numel, 0.5f, 2.0f);
            }
            const int N = 2, H = sizes[sz][0], W = sizes[sz][1];
            const size_t ny = (size_t)N * 3 * H * W;
            float *x = test_alloc((size_t)N * H * W), *y = test_alloc(ny);
            fill_uniform(&rng, x, (size_t)N * H * W, -1.0f, 1.0f);
            CHECK_STATUS(unet_model_forward(ctx, m, x, N, H, W, y), UNET_STATUS_OK);
            /* Fused concat and pool outputs got no memory or were written by the convolution;
             * in a first plan a fused concat's pointer is still NULL. */
            int fused = 0, pools = 0;
            for (int i = 0; i < m->n_nodes; i++) {
                fused += m->nodes[i].op == UNET__NODE_CONCAT && !m->values[m->nodes[i].out].data;
                pools += m->nodes[i].op == UNET__NODE_POOL;
            }
            CHECK_EQ(fused, sizes[sz][2]);
            CHECK_EQ(pools, 2);
            CHECK_STATUS(unet_model_prepare(ctx, m, N, H, W, 1), UNET_STATUS_OK);
            m->training_mode = false;
            const float *ref = unet__model_forward(m, x);
            double mx = 0.0;
            for (size_t i = 0; i < ny; i++) mx = fabs(ref[i]) > mx ? fabs(ref[i]) : mx;
            printf("     %s%s %dx%d%s: fused inference vs training plan in eval mode: error / "
                   "max|ref| %.2e\n", unet__cpu_level_name(levels[li]), bf16 ? " (bf16)" : "",
                   H, W, sizes[sz][3] ? " bilinear" : "", scaled_err(y, ref, ny));
            /* Folding rounds scale and shift once more than the separate batch-norm.  In bf16
             * that last-bit difference can move a later layer's operand to the neighbouring
             * bf16 value (2^-7 apart), so the plans agree to bf16's precision only: measured
             * up to 2.4e-3 of the largest logit; a fusion that read the wrong data would be off
             * by the logits' own size. */
            CHECK_TENSOR("logits", y, ref, ny, (bf16 ? 2e-2 : 1e-5) * mx, 0.0);
            free(x), free(y);
            unet_model_free(m);
            unet_ctx_free(ctx);
        }
    }
    unet__winograd_set_budget(0);
    unet__cpu_limit(cap);
}

/* ---- bf16: the error bound ----
 * The bf16 row rounds the two operands of every Winograd-domain product, U = G g G^T and
 * V = B^T d B (for the weight gradient Dt = A dy A^T and Xt = B^T d B), to 8 significant bits:
 * each has a relative error of at most 2^-8 (test_kernels.c), so each product U V one of at most
 * 2^-7 + 2^-16.  The products are summed in float32 (an error of the float32 path's size) and
 * transformed back linearly, so, to first order, an output's error is at most
 *     2^-7 (1 + 2^-8) S,   S = sum over the 36 terms k of |a_k| sum over the reduction of |U_k V_k|
 * with a_k the output transform's weight of term k (A^T x A^T, or G^T x G^T for dw), plus the
 * float32 path's error.  S is what the error scales with: up to ~100x an output's own
 * magnitude, since the transforms amplify and the outputs cancel (Winograd F(4x4, 3x3) with
 * bf16 operands has about 10x the error of a direct bf16 convolution, measured and discussed in
 * docs/performance.md).  The checks below compute S in double from the matrices (written out
 * again here, independently of winograd_groups.h) and hold every output to that bound. */
static const double W_BT[6][6] = {{4, 0, -5, 0, 1, 0}, {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                                  {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
static const double W_G[6][3] = {{0.25, 0, 0},
                                 {-1 / 6.0, -1 / 6.0, -1 / 6.0},
                                 {-1 / 6.0, 1 / 6.0, -1 / 6.0},
                                 {1 / 24.0, 1 / 12.0, 1 / 6.0},
                                 {1 / 24.0, -1 / 12.0, 1 / 6.0},
                                 {0, 0, 1}};
static const double W_AT[4][6] = {
    {1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
#define BF16_PRODUCT_ERR (ldexp(1.0, -7) * (1.0 + ldexp(1.0, -8)))

/* |L X R^T| for X (nx x nx), L and R (n x nx): the absolute values of a two-sided transform. */
static void abs_two_sided(double *out, const double *L, const double *X, int n, int nx) {
    double t[6][6];
    for (int i = 0; i < n; i++)
        for (int j = 0; j < nx; j++) {
            t[i][j] = 0;
            for (int a = 0; a < nx; a++) t[i][j] += L[i * nx + a] * X[a * nx + j];
        }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double v = 0;
            for (int b = 0; b < nx; b++) v += t[i][b] * L[j * nx + b];
            out[i * n + j] = fabs(v);
        }
}

/* |V| (36) of the 6x6 input patch of channel ci at tile (n, th, tw) of d (zero padding). */
static void abs_patch(double v[36], const float *x, const struct unet__conv2d_dims *d, int n,
                      int ci, int th, int tw) {
    double p[36];
    for (int r = 0; r < 6; r++)
        for (int c = 0; c < 6; c++) {
            const int ih = 4 * th - d->pad_h + r, iw = 4 * tw - d->pad_w + c;
            p[r * 6 + c] = ih >= 0 && ih < d->H_in && iw >= 0 && iw < d->W_in
                               ? x[(((size_t)n * d->C_in + ci) * d->H_in + ih) * d->W_in + iw]
                               : 0.0;
        }
    abs_two_sided(v, &W_BT[0][0], p, 6, 6);
}

/* S (above) of every output of the Winograd convolution d of x with w (C_out, C_in, 3, 3). */
static double *forward_bound(const float *x, const float *w, const struct unet__conv2d_dims *d) {
    const int th = (d->H_out + 3) / 4, tw = (d->W_out + 3) / 4;
    double *S = calloc((size_t)d->N * d->C_out * d->H_out * d->W_out, sizeof *S);
    double *U = malloc(sizeof *U * 36 * (size_t)d->C_out * d->C_in);
    double *V = malloc(sizeof *V * 36 * (size_t)d->C_in);
    if (!S || !U || !V) exit(2);
    for (int co = 0; co < d->C_out; co++)
        for (int ci = 0; ci < d->C_in; ci++) {
            double g[9];
            for (int k = 0; k < 9; k++) g[k] = w[((size_t)co * d->C_in + ci) * 9 + k];
            /* G g G^T: G is 6x3, so the two-sided product with a 3x3 g. */
            double t[6][3], *u = U + 36 * ((size_t)co * d->C_in + ci);
            for (int i = 0; i < 6; i++)
                for (int j = 0; j < 3; j++)
                    t[i][j] = W_G[i][0] * g[j] + W_G[i][1] * g[3 + j] + W_G[i][2] * g[6 + j];
            for (int i = 0; i < 6; i++)
                for (int j = 0; j < 6; j++)
                    u[i * 6 + j] = fabs(t[i][0] * W_G[j][0] + t[i][1] * W_G[j][1] +
                                        t[i][2] * W_G[j][2]);
        }
    for (int n = 0; n < d->N; n++)
        for (int a = 0; a < th; a++)
            for (int b = 0; b < tw; b++) {
                for (int ci = 0; ci < d->C_in; ci++) abs_patch(V + 36 * ci, x, d, n, ci, a, b);
                for (int co = 0; co < d->C_out; co++) {
                    double m[36] = {0};
                    for (int ci = 0; ci < d->C_in; ci++)
                        for (int k = 0; k < 36; k++)
                            m[k] += U[36 * ((size_t)co * d->C_in + ci) + k] * V[36 * ci + k];
                    for (int i = 0; i < 4 && 4 * a + i < d->H_out; i++)
                        for (int j = 0; j < 4 && 4 * b + j < d->W_out; j++) {
                            double sum = 0;
                            for (int k = 0; k < 36; k++)
                                sum += fabs(W_AT[i][k / 6] * W_AT[j][k % 6]) * m[k];
                            S[(((size_t)n * d->C_out + co) * d->H_out + 4 * a + i) * d->W_out +
                              4 * b + j] = sum;
                        }
                }
            }
    free(U), free(V);
    return S;
}

/* S of every weight-gradient entry (C_out, C_in, 3, 3): dw = G^T [sum over tiles Dt Xt] G. */
static double *wgrad_bound(const float *dy, const float *x, const struct unet__conv2d_dims *d) {
    const int th = (d->H_out + 3) / 4, tw = (d->W_out + 3) / 4;
    double *S = calloc((size_t)d->C_out * d->C_in * 9, sizeof *S);
    double *M = calloc(36 * (size_t)d->C_out * d->C_in, sizeof *M);
    double *V = malloc(sizeof *V * 36 * (size_t)d->C_in);
    double *D = malloc(sizeof *D * 36 * (size_t)d->C_out);
    if (!S || !M || !V || !D) exit(2);
    double A[6][4]; /* A = (A^T)^T */
    for (int i = 0; i < 6; i++)
        for (int j = 0; j < 4; j++) A[i][j] = W_AT[j][i];
    for (int n = 0; n < d->N; n++)
        for (int a = 0; a < th; a++)
            for (int b = 0; b < tw; b++) {
                for (int ci = 0; ci < d->C_in; ci++) abs_patch(V + 36 * ci, x, d, n, ci, a, b);
                for (int co = 0; co < d->C_out; co++) {
                    double y[16] = {0}, t[6][4];
                    for (int i = 0; i < 4 && 4 * a + i < d->H_out; i++)
                        for (int j = 0; j < 4 && 4 * b + j < d->W_out; j++)
                            y[i * 4 + j] = dy[(((size_t)n * d->C_out + co) * d->H_out + 4 * a +
                                               i) * d->W_out + 4 * b + j];
                    for (int i = 0; i < 6; i++)
                        for (int j = 0; j < 4; j++)
                            t[i][j] = A[i][0] * y[j] + A[i][1] * y[4 + j] + A[i][2] * y[8 + j] +
                                      A[i][3] * y[12 + j];
                    for (int i = 0; i < 6; i++)
                        for (int j = 0; j < 6; j++)
                            D[36 * co + i * 6 + j] = fabs(t[i][0] * A[j][0] + t[i][1] * A[j][1] +
                                                          t[i][2] * A[j][2] + t[i][3] * A[j][3]);
                }
                for (int co = 0; co < d->C_out; co++)
                    for (int ci = 0; ci < d->C_in; ci++)
                        for (int k = 0; k < 36; k++)
                            M[36 * ((size_t)co * d->C_in + ci) + k] += D[36 * co + k] * V[36 * ci + k];
            }
    for (size_t p = 0; p < (size_t)d->C_out * d->C_in; p++)
        for (int kh = 0; kh < 3; kh++)
            for (int kw = 0; kw < 3; kw++)
                for (int k = 0; k < 36; k++)
                    S[p * 9 + kh * 3 + kw] += fabs(W_G[k / 6][kh] * W_G[k % 6][kw]) * M[36 * p + k];
    free(M), free(V), free(D);
    return S;
}

/* |got - ref| <= |scale of i's channel| BF16_PRODUCT_ERR S_i + slack for every i of n values
 * (N, C, plane) (scale NULL: 1); prints the largest fraction of the bound used. */
static void check_bound(const char *what, const float *got, const float *ref, const double *S,
                        const float *scale, int C, size_t plane, size_t n, double slack) {
    double used = 0.0;
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        const double sc = scale ? fabs(scale[i / plane % (size_t)C]) : 1.0;
        const double bound = sc * BF16_PRODUCT_ERR * S[i] + slack;
        const double e = fabs((double)got[i] - ref[i]);
        if (e > bound) bad++;
        if (e / bound > used) used = e / bound;
    }
    printf("       %s: error within %.0f%% of the bound%s\n", what, 100 * used, bad ? " (NOT)" : "");
    CHECK_EQ(bad, 0);
}

/* The bf16 row (AVX512_BF16) against the double _ref, every output within its bound (above):
 * odd sizes and channel counts (an odd C_in leaves a half-empty last word, an odd C_out a
 * half-empty input-gradient word), padding 0-2, rows of 16 tiles, small blocks (chunked
 * weights, several tile and channel blocks).  And the bf16 rounding did happen: the errors are
 * far above float32's. */
TEST(winograd_bf16_vs_ref) {
    const struct unet__kernels *bf = unet__kernels_pick(UNET__PRECISION_BF16);
    if (!bf) {
        printf("     this CPU has no AVX512_BF16: nothing to run here (the fall-back to float32 "
               "is tested by bf16_capped_off_runs_float32)\n");
        return;
    }
    struct unet__rng rng;
    unet__rng_seed(&rng, 13);
    const struct unet__conv_how how = {.k = bf};
    const int shapes[][5] = {/* C_in, C_out, H, W, pad */
                             {16, 16, 9, 13, 1},  {17, 21, 7, 66, 1},  {33, 40, 19, 25, 0},
                             {40, 23, 16, 20, 2}, {1, 16, 11, 9, 1},   {64, 48, 12, 70, 1},
                             {129, 32, 6, 9, 1},   {24, 16, 37, 41, 1}};
    double worst_y = 0.0;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int small = 0; small < 2; small++) {
            struct wcase k = {.d = {.N = 2, .C_in = shapes[i][0], .H_in = shapes[i][2],
                                    .W_in = shapes[i][3], .C_out = shapes[i][1], .K_h = 3,
                                    .K_w = 3, .stride_h = 1, .stride_w = 1,
                                    .pad_h = shapes[i][4], .pad_w = shapes[i][4]}};
            unet__winograd_set_budget(small ? 36 * 40 : 0);
            wcase_setup(&k, &rng);
            const struct unet__conv2d_dims *d = &k.d;
            char label[128];
            snprintf(label, sizeof label, "bf16 C_in=%d C_out=%d %dx%d pad=%d%s", d->C_in,
                     d->C_out, d->H_in, d->W_in, d->pad_h, small ? " (small blocks)" : "");
            /* run_case's own check is loose (the bounds below are the test); it returns the
             * outputs and gradients in k and its buffers. */
            const struct werr e = run_case(&k, label, &how, 1.0);
            worst_y = fmax(worst_y, e.y);
            double *S = forward_bound(k.x, k.w, d);
            check_bound("y", k.y, k.y_ref, S, k.scale, d->C_out, (size_t)d->H_out * d->W_out,
                        k.ny, WINO_TOL * max_abs(k.y_ref, k.ny));
            free(S);
            /* The input gradient is the Winograd convolution of dy with the flipped weights. */
            const struct unet__conv2d_dims a = unet__winograd_dims_data(d);
            if (unet__winograd_applies(&a)) {
                float *wf = test_alloc(k.nw);
                for (int co = 0; co < d->C_out; co++)
                    for (int ci = 0; ci < d->C_in; ci++)
                        for (int t = 0; t < 9; t++)
                            wf[((size_t)ci * d->C_out + co) * 9 + t] =
                                k.w[((size_t)co * d->C_in + ci) * 9 + 8 - t];
                S = forward_bound(k.dy, wf, &a);
                check_bound("dx", k.dx, k.dx_ref, S, NULL, 1, 1, k.nx,
                            WINO_TOL * max_abs(k.dx_ref, k.nx));
                free(S), free(wf);
            }
            S = wgrad_bound(k.dy, k.x, d);
            check_bound("dw", k.dw, k.dw_ref, S, NULL, 1, 1, k.nw,
                        WINO_TOL * max_abs(k.dw_ref, k.nw));
            free(S);
            wcase_free(&k);
        }
    unet__winograd_set_budget(0);
    /* float32 Winograd stays below 5e-6 of max|y| (winograd_vs_ref); bf16 is far above it. */
    CHECK(worst_y > 1e-4);
}

int main(void) {
    RUN(winograd_bf16_vs_ref);
    RUN(winograd_vs_ref);
    RUN(winograd_thread_count_invariant);
    RUN(inference_fusions_match_unfused);
    return harness_finish();
}
