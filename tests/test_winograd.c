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
}

static void wcase_free(struct wcase *k) {
    free(k->x), free(k->w), free(k->y), free(k->y_ref), free(k->scale), free(k->shift);
    free(k->scratch);
}

/* Forward with scale, shift and ReLU against ref + the same epilogue in double; then the input
 * gradient (accumulating onto non-zero values) against the naive backward. */
static void check_case(struct wcase *k, const char *label) {
    const struct unet__conv2d_dims *d = &k->d;
    CHECK(unet__winograd_applies(d));
    struct unet__conv_epilogue ep = {.scale = k->scale, .shift = k->shift, .relu = true};
    unet__conv2d_forward_ep(k->y, k->x, k->w, d, &ep, k->scratch);
    unet__conv2d_forward_ref(k->y_ref, k->x, k->w, NULL, d);
    const size_t P = (size_t)d->H_out * d->W_out;
    for (size_t i = 0; i < k->ny; i++) {
        int co = (int)(i / P % (size_t)d->C_out);
        double v = (double)k->y_ref[i] * k->scale[co] + k->shift[co];
        k->y_ref[i] = (float)(v > 0.0 ? v : 0.0);
    }
    /* dx += A^T dy, from the same non-zero start on both paths. */
    float *dy = test_alloc(k->ny), *dx = test_alloc(k->nx), *dx_ref = test_alloc(k->nx);
    struct unet__rng rng;
    unet__rng_seed(&rng, 99);
    fill_uniform(&rng, dy, k->ny, -1.0f, 1.0f);
    for (size_t i = 0; i < k->nx; i++) dx[i] = dx_ref[i] = 0.25f;
    unet__conv2d_backward(dx, NULL, NULL, dy, k->x, k->w, d, k->scratch);
    unet__conv2d_backward_ref(dx_ref, NULL, NULL, dy, k->x, k->w, d);
    /* dw += dL/dw (Winograd's adjoint transforms, reducing over all tiles). */
    float *dw = test_alloc(k->nw), *dw_ref = test_alloc(k->nw);
    for (size_t i = 0; i < k->nw; i++) dw[i] = dw_ref[i] = -0.5f;
    unet__conv2d_backward(NULL, dw, NULL, dy, k->x, k->w, d, k->scratch);
    unet__conv2d_backward_ref(NULL, dw_ref, NULL, dy, k->x, k->w, d);
    for (size_t i = 0; i < k->nw; i++) dw[i] += 0.5f, dw_ref[i] += 0.5f;
    printf("     %s: error / max|ref|: y %.2e, dx %.2e, dw %.2e\n", label,
           scaled_err(k->y, k->y_ref, k->ny), scaled_err(dx, dx_ref, k->nx),
           scaled_err(dw, dw_ref, k->nw));
    CHECK_TENSOR("y (scale, shift, relu)", k->y, k->y_ref, k->ny,
                 WINO_TOL * max_abs(k->y_ref, k->ny), 0.0);
    CHECK_TENSOR("dx", dx, dx_ref, k->nx, WINO_TOL * max_abs(dx_ref, k->nx), 0.0);
    CHECK_TENSOR("dw", dw, dw_ref, k->nw, WINO_TOL * max_abs(dw_ref, k->nw), 0.0);
    free(dy), free(dx), free(dx_ref), free(dw), free(dw_ref);
}

TEST(winograd_vs_ref) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 11);
    enum unet__cpu_level       levels[UNET__CPU_LEVELS];
    const int                  n_levels = harness_cpu_levels(levels);
    const enum unet__cpu_level cap = unet__cpu_limit(UNET__CPU_AVX512);
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
     * run (pad 1, 2), at its end (W_out 62: a partial last tile) and none (pad 0). */
    const int rows[4][3] = {{9, 64, 1}, {7, 62, 1}, {6, 66, 0}, {5, 60, 2}};
    for (int i = 0; i < 4; i++) {
        struct wcase k = {.d = {.N = 2, .C_in = 17, .H_in = rows[i][0], .W_in = rows[i][1],
                                .C_out = 16, .K_h = 3, .K_w = 3, .stride_h = 1, .stride_w = 1,
                                .pad_h = rows[i][2], .pad_w = rows[i][2]}};
        wcase_setup(&k, &rng);
        char label[96];
        snprintf(label, sizeof label, "N=2 C_in=17 %dx%d C_out=16 pad=%d (rows of 16 tiles)",
                 rows[i][0], rows[i][1], rows[i][2]);
        check_case(&k, label);
        wcase_free(&k);
    }
    /* The U-Net's shape: C_in 40 -> 24, a 4-aligned and an odd size. */
    for (int s = 0; s < 2; s++) {
        struct wcase k = {.d = {.N = 1, .C_in = 40, .H_in = 16 + 3 * s, .W_in = 20 + 5 * s,
                                .C_out = 24, .K_h = 3, .K_w = 3, .stride_h = 1, .stride_w = 1,
                                .pad_h = 1, .pad_w = 1}};
        wcase_setup(&k, &rng);
        check_case(&k, s ? "C_in=40 19x25 C_out=24 pad=1" : "C_in=40 16x20 C_out=24 pad=1");
        wcase_free(&k);
    }
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
        unet__conv2d_backward(dx[t], dw[t], NULL, dy, k.x, k.w, &k.d, k.scratch);
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
 * bilinear upsampling. */
TEST(inference_fusions_match_unfused) {
    /* H, W, concats fused, bilinear upsampling */
    const int sizes[4][4] = {{36, 44, 2, 0}, {34, 42, 1, 0}, {24, 70, 1, 0}, {20, 28, 2, 1}};
    /* At every instruction-set level: each has its own epilogue, pool and concat code paths. */
    enum unet__cpu_level       levels[UNET__CPU_LEVELS];
    const int                  n_levels = harness_cpu_levels(levels);
    const enum unet__cpu_level cap = unet__cpu_limit(UNET__CPU_AVX512);
    for (int li = 0; li < n_levels; li++) {
        unet__cpu_limit(levels[li]);
        for (int sz = 0; sz < 4; sz++) {
            unet_ctx   *ctx = unet_ctx_create();
            unet_model *m = NULL;
            unet_config c = unet_config_default(UNET_ARCH_UNET);
            c.base = 16, c.depth = 2, c.classes = 3;
            if (sizes[sz][3]) c.up = UNET_UP_BILINEAR;
            CHECK_STATUS(unet_model_create(ctx, &c, 5, &m), UNET_STATUS_OK);
            if (!m) return;
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
            printf("     %s %dx%d%s: fused inference vs training plan in eval mode: error / "
                   "max|ref| %.2e\n", unet__cpu_level_name(levels[li]), H, W,
                   sizes[sz][3] ? " bilinear" : "", scaled_err(y, ref, ny));
            /* Folding rounds scale and shift once more than the separate batch-norm. */
            CHECK_TENSOR("logits", y, ref, ny, 1e-5 * mx, 0.0);
            free(x), free(y);
            unet_model_free(m);
            unet_ctx_free(ctx);
        }
    }
    unet__cpu_limit(cap);
}

int main(void) {
    RUN(winograd_vs_ref);
    RUN(winograd_thread_count_invariant);
    RUN(inference_fusions_match_unfused);
    return harness_finish();
}
