/* test_precision.c — the model's precision (unet_model_set_precision) and its inference cache
 * (model.h, model_cache.c): the cache follows every change of the weights (a training step, a
 * failed step, an EMA swap, a rollback, a change of precision or of the CPU cap) and training
 * never reads it; a bf16 model runs float32 exactly when the CPU (cap) has no AVX512_BF16, and
 * bf16 when it has; a bf16 training step keeps float32 master weights and its gradients stay
 * close to float32's.  The kernels themselves are tested against their definitions in
 * test_kernels.c, test_winograd.c and test_conv.c. */
#include "harness.h"
#include "model.h"

enum { N = 2, H = 24, W = 28, PIX = N * H * W };

/* A small U-Net whose 3x3 convolutions all run by Winograd (16+ output channels), with
 * batch-norm statistics and affine parameters away from the identity, so that folding and the
 * transformed weights both matter. */
static unet_model *small_unet(unet_ctx *ctx, uint64_t seed) {
    unet_config c = unet_config_default(UNET_ARCH_UNET);
    c.base = 16, c.depth = 2;
    unet_model *m = NULL;
    CHECK_STATUS(unet_model_create(ctx, &c, seed, &m), UNET_STATUS_OK);
    if (!m) exit(1);
    struct unet__rng rng;
    unet__rng_seed(&rng, seed + 1);
    for (int i = 0; i < m->n_nodes; i++) {
        const struct unet__node *nd = &m->nodes[i];
        if (nd->op != UNET__NODE_BN) continue;
        const struct unet__param *g = &m->params[nd->w];
        fill_uniform(&rng, m->weights + g->offset, g->numel, 0.5f, 1.5f);
        fill_uniform(&rng, m->buffers + m->params[nd->rmean].offset, g->numel, -0.3f, 0.3f);
        fill_uniform(&rng, m->buffers + m->params[nd->rvar].offset, g->numel, 0.5f, 2.0f);
    }
    unet__model_weights_changed(m);
    return m;
}

static void batch(float *x, int32_t *t, uint64_t seed) {
    struct unet__rng rng;
    unet__rng_seed(&rng, seed);
    fill_uniform(&rng, x, PIX, -1.0f, 1.0f);
    for (int i = 0; i < PIX; i++) t[i] = x[i] > 0.2f;
}

/* Logits of an inference forward, with the cache on (as always) or off (every convolution
 * transforms its weights in the call: the reference for "not stale"). */
static void logits(unet_ctx *ctx, unet_model *m, const float *x, float *y, bool cache) {
    const int was = unet_model_cache(m);
    unet_model_set_cache(m, cache);
    /* The first forward of a generation transforms in the call; the second makes the entries
     * and reads them. */
    CHECK_STATUS(unet_model_forward(ctx, m, x, N, H, W, y), UNET_STATUS_OK);
    if (cache) CHECK_STATUS(unet_model_forward(ctx, m, x, N, H, W, y), UNET_STATUS_OK);
    unet_model_set_cache(m, was);
}

/* y from the cache equals y without it, bit for bit (the cached transform is the same
 * arithmetic as the in-call one; every layer here keeps its weights whole, so the products run
 * in the same order too). */
static void check_fresh(unet_ctx *ctx, unet_model *m, const float *x, const char *after) {
    float *y = test_alloc((size_t)PIX * 2), *ref = test_alloc((size_t)PIX * 2);
    logits(ctx, m, x, y, true);
    CHECK(unet__wcache_bytes(m) > 0);
    logits(ctx, m, x, ref, false); /* frees the entries */
    const bool same = memcmp(y, ref, sizeof(float) * PIX * 2) == 0;
    printf("     after %s: cached logits %s the fresh ones\n", after, same ? "equal" : "DIFFER from");
    CHECK(same);
    logits(ctx, m, x, ref, true); /* made again: the next change must invalidate them */
    CHECK(unet__wcache_bytes(m) > 0);
    free(y), free(ref);
}

/* Each way the weights or statistics change, at each precision this CPU runs: the next
 * inference uses transformed weights and folds of the new state.  (Without the generation bump
 * in any one of these places this test fails: the stale cache gives the old logits.) */
TEST(weight_cache_follows_the_weights) {
    unet_ctx *ctx = unet_ctx_create();
    float x[PIX], xbad[PIX], y0[PIX * 2], y1[PIX * 2];
    int32_t t[PIX];
    batch(x, t, 3);
    memcpy(xbad, x, sizeof x);
    xbad[7] = NAN;
    const int precisions = unet_precision_native(UNET_PRECISION_BF16) ? 2 : 1;
    for (int p = 0; p < precisions; p++) {
        printf("     %s:\n", p ? "bf16" : "fp32");
        unet_model *m = small_unet(ctx, 7);
        CHECK_STATUS(unet_model_set_precision(ctx, m, p ? UNET_PRECISION_BF16 : UNET_PRECISION_FP32),
                     UNET_STATUS_OK);
        check_fresh(ctx, m, x, "the first forward");
        /* Nothing changed: the same entries, the same logits. */
        const float *u = NULL;
        for (int i = 0; i < m->n_nodes && !u; i++)
            u = unet__wcache_weights(m, i, unet__kernels_for(m->precision));
        logits(ctx, m, x, y0, true);
        const float *u2 = NULL;
        for (int i = 0; i < m->n_nodes && !u2; i++)
            u2 = unet__wcache_weights(m, i, unet__kernels_for(m->precision));
        CHECK(u && u == u2);
        unet_optim o = unet_optim_default(UNET_OPTIM_ADAM);
        double L;
        CHECK_STATUS(unet_train_step(ctx, m, &o, UNET_LOSS_CE, x, t, NULL, N, H, W, &L),
                     UNET_STATUS_OK);
        logits(ctx, m, x, y1, true);
        CHECK(memcmp(y0, y1, sizeof y0) != 0); /* the step changed the logits */
        check_fresh(ctx, m, x, "a training step");
        /* A failed step restores the running statistics (its forward changed them). */
        CHECK_STATUS(unet_train_step(ctx, m, &o, UNET_LOSS_CE, xbad, t, NULL, N, H, W, &L),
                     UNET_STATUS_NUMERIC);
        check_fresh(ctx, m, x, "a failed step");
        CHECK_STATUS(unet_model_ema_enable(ctx, m, 0.5), UNET_STATUS_OK);
        unet_guard *g = NULL;
        unet_guard_opts go = unet_guard_defaults();
        CHECK_STATUS(unet_guard_create(ctx, &go, &g), UNET_STATUS_OK);
        CHECK_STATUS(unet_guard_snapshot(ctx, g, m, 1), UNET_STATUS_OK);
        for (int k = 0; k < 2; k++)
            CHECK_STATUS(unet_train_step(ctx, m, &o, UNET_LOSS_CE, x, t, NULL, N, H, W, &L),
                         UNET_STATUS_OK);
        check_fresh(ctx, m, x, "two more steps");
        CHECK_STATUS(unet_model_ema_swap(ctx, m), UNET_STATUS_OK);
        check_fresh(ctx, m, x, "an EMA swap");
        CHECK_STATUS(unet_model_ema_swap(ctx, m), UNET_STATUS_OK);
        check_fresh(ctx, m, x, "the swap back");
        CHECK_STATUS(unet_guard_rollback(ctx, g, m), UNET_STATUS_OK);
        check_fresh(ctx, m, x, "a rollback");
        unet_guard_free(g);
        /* Another kernel row: another word format (a bf16 model capped to float32, or the
         * float32 model's AVX2 row). */
        const enum unet__cpu_level cap =
            unet__cpu_limit(p ? UNET__CPU_AVX512 : UNET__CPU_AVX2);
        check_fresh(ctx, m, x, p ? "a cap to avx512 (bf16 off)" : "a cap to avx2");
        unet__cpu_limit(cap);
        check_fresh(ctx, m, x, "lifting the cap");
        CHECK_STATUS(unet_model_set_precision(ctx, m, p ? UNET_PRECISION_FP32 : UNET_PRECISION_BF16),
                     UNET_STATUS_OK);
        check_fresh(ctx, m, x, "a change of precision");
        unet_model_free(m);
    }
    unet_ctx_free(ctx);
}

/* Training never reads the cache: a step on a model that has one (built by an inference just
 * before) gives the same weights, bit for bit, as the step on a copy that never had one. */
TEST(training_never_reads_the_cache) {
    unet_ctx *ctx = unet_ctx_create();
    float x[PIX], y[PIX * 2];
    int32_t t[PIX];
    batch(x, t, 4);
    for (int p = 0; p < (unet_precision_native(UNET_PRECISION_BF16) ? 2 : 1); p++) {
        unet_model *a = small_unet(ctx, 9), *b = small_unet(ctx, 9);
        const unet_precision prec = p ? UNET_PRECISION_BF16 : UNET_PRECISION_FP32;
        unet_model_set_precision(ctx, a, prec);
        unet_model_set_precision(ctx, b, prec);
        unet_optim o = unet_optim_default(UNET_OPTIM_ADAM);
        double La, Lb;
        for (int k = 0; k < 3; k++) {
            logits(ctx, a, x, y, true); /* a builds its cache before each step */
            CHECK(unet__wcache_bytes(a) > 0);
            CHECK_STATUS(unet_train_step(ctx, a, &o, UNET_LOSS_CE, x, t, NULL, N, H, W, &La),
                         UNET_STATUS_OK);
            CHECK_STATUS(unet_train_step(ctx, b, &o, UNET_LOSS_CE, x, t, NULL, N, H, W, &Lb),
                         UNET_STATUS_OK);
            CHECK_EQ(La, Lb);
        }
        CHECK_EQ(unet__wcache_bytes(b), 0);
        CHECK(memcmp(a->weights, b->weights, a->n_weights * sizeof(float)) == 0);
        CHECK(memcmp(a->buffers, b->buffers, a->n_buffers * sizeof(float)) == 0);
        printf("     %s: 3 steps with and without a cache: the same weights\n",
               unet_precision_name(prec));
        unet_model_free(a);
        unet_model_free(b);
    }
    unet_ctx_free(ctx);
}

/* Under UNET_CPU (here unet__cpu_limit) below avx512bf16 a bf16 model runs the float32 row: the
 * same logits and the same training step as a float32 model, bit for bit.  Above it, bf16
 * really runs: the logits differ from float32's by bf16's rounding, not more. */
/* The cache's entries are made at the second forward of a generation, never at the first (one
 * image in one tile holds no memory for them); they stay within unet_model_cache_bytes; and
 * unet_model_set_cache(m, 0) frees them, with the same logits bit for bit. */
TEST(weight_cache_made_at_second_use_and_switched_off) {
    unet_ctx *ctx = unet_ctx_create();
    float x[PIX], y1[PIX * 2], y2[PIX * 2], y3[PIX * 2];
    int32_t t[PIX];
    batch(x, t, 5);
    unet_model *m = small_unet(ctx, 11);
    CHECK_EQ(unet_model_cache(m), 1);
    const uint64_t all = unet_model_cache_bytes(m);
    CHECK_STATUS(unet_model_forward(ctx, m, x, N, H, W, y1), UNET_STATUS_OK);
    const size_t first = unet__wcache_bytes(m); /* the folds alone: 2 C_out floats each */
    CHECK_STATUS(unet_model_forward(ctx, m, x, N, H, W, y2), UNET_STATUS_OK);
    const size_t second = unet__wcache_bytes(m);
    printf("     after one forward %zu bytes, after two %zu, bound %llu\n", first, second,
           (unsigned long long)all);
    CHECK(first < 4096);
    CHECK(second > 8 * first && second <= all);
    unet_model_set_cache(m, 0);
    CHECK_EQ(unet_model_cache(m), 0);
    CHECK_EQ(unet__wcache_bytes(m), 0);
    CHECK_STATUS(unet_model_forward(ctx, m, x, N, H, W, y3), UNET_STATUS_OK);
    CHECK_STATUS(unet_model_forward(ctx, m, x, N, H, W, y3), UNET_STATUS_OK);
    CHECK_EQ(unet__wcache_bytes(m), 0);
    CHECK(memcmp(y1, y2, sizeof y1) == 0 && memcmp(y2, y3, sizeof y2) == 0);
    unet_model_set_cache(m, 1);
    CHECK_EQ(unet_model_cache_bytes(NULL), 0);
    unet_model_free(m);
    unet_ctx_free(ctx);
}

TEST(bf16_capped_off_runs_float32) {
    unet_ctx *ctx = unet_ctx_create();
    float x[PIX], yf[PIX * 2], yb[PIX * 2];
    int32_t t[PIX];
    batch(x, t, 5);
    unet_model *f = small_unet(ctx, 11), *b = small_unet(ctx, 11);
    CHECK_STATUS(unet_model_set_precision(ctx, b, UNET_PRECISION_BF16), UNET_STATUS_OK);
    CHECK_EQ(unet_model_precision(b), UNET_PRECISION_BF16);
    CHECK_STATUS(unet_model_set_precision(ctx, b, (unet_precision)7), UNET_STATUS_ARG);
    const enum unet__cpu_level cap = unet__cpu_limit(UNET__CPU_AVX512);
    CHECK_EQ(unet_precision_native(UNET_PRECISION_BF16), 0);
    CHECK_STATUS(unet_model_forward(ctx, f, x, N, H, W, yf), UNET_STATUS_OK);
    CHECK_STATUS(unet_model_forward(ctx, b, x, N, H, W, yb), UNET_STATUS_OK);
    CHECK(memcmp(yf, yb, sizeof yf) == 0);
    unet_optim o = unet_optim_default(UNET_OPTIM_ADAM);
    double Lf, Lb;
    CHECK_STATUS(unet_train_step(ctx, f, &o, UNET_LOSS_CE, x, t, NULL, N, H, W, &Lf), UNET_STATUS_OK);
    CHECK_STATUS(unet_train_step(ctx, b, &o, UNET_LOSS_CE, x, t, NULL, N, H, W, &Lb), UNET_STATUS_OK);
    CHECK_EQ(Lf, Lb);
    CHECK(memcmp(f->weights, b->weights, f->n_weights * sizeof(float)) == 0);
    printf("     capped at avx512: the bf16 model ran float32 (same logits, same step)\n");
    unet__cpu_limit(cap);
    if (unet_precision_native(UNET_PRECISION_BF16)) {
        CHECK_STATUS(unet_model_forward(ctx, f, x, N, H, W, yf), UNET_STATUS_OK);
        CHECK_STATUS(unet_model_forward(ctx, b, x, N, H, W, yb), UNET_STATUS_OK);
        double e = 0, mx = 0;
        for (int i = 0; i < PIX * 2; i++) {
            e = fmax(e, fabs((double)yb[i] - yf[i]));
            mx = fmax(mx, fabs((double)yf[i]));
        }
        printf("     not capped: bf16 logits differ from float32 by %.2e of the largest\n", e / mx);
        /* Rounded (far above float32's ~1e-6), and not garbage: a few bf16 Winograd layers deep
         * (each up to ~7% of its max|y| on random data, test_winograd.c; batch-norm and the
         * last 1x1 convolution average much of it out), measured 2.2e-2 here. */
        CHECK(e / mx > 1e-5 && e / mx < 5e-2);
    }
    unet_model_free(f);
    unet_model_free(b);
    unet_ctx_free(ctx);
}

/* Mixed precision: a bf16 step's products are bf16, but the weights, gradients and Adam moments
 * stay float32 (a step moves a weight by about lr, far below bf16's resolution of 2^-8 of it,
 * and the update must not be lost).  Its gradient points where float32's does: cosine > 0.95
 * and norms within 5% (measured: cosine 0.978-0.981, norms within 1.1%; per layer the cosine
 * falls to ~0.85 in the deepest layers of this tiny batch, where batch-norm's backward cancels
 * most of the gradient and each bf16 Winograd product carries up to ~7% of max|y| of error,
 * test_winograd.c's winograd_bf16_vs_ref; rounding only the weights to bf16 gives 0.998), and
 * the weights move by amounts a bf16 copy could not hold. */
TEST(bf16_training_keeps_float32_master_weights) {
    if (!unet_precision_native(UNET_PRECISION_BF16)) {
        printf("     this CPU has no AVX512_BF16: nothing to run here\n");
        return;
    }
    unet_ctx *ctx = unet_ctx_create();
    float x[PIX];
    int32_t t[PIX];
    batch(x, t, 6);
    unet_model *f = small_unet(ctx, 12), *b = small_unet(ctx, 12);
    unet_model_set_precision(ctx, b, UNET_PRECISION_BF16);
    const size_t nw = f->n_weights;
    float *w0 = test_alloc(nw);
    memcpy(w0, b->weights, nw * sizeof(float));
    unet_optim o = unet_optim_default(UNET_OPTIM_ADAM);
    o.lr = 1e-5; /* far below bf16's resolution of most weights */
    double Lf, Lb;
    CHECK_STATUS(unet_train_step(ctx, f, &o, UNET_LOSS_CE, x, t, NULL, N, H, W, &Lf), UNET_STATUS_OK);
    CHECK_STATUS(unet_train_step(ctx, b, &o, UNET_LOSS_CE, x, t, NULL, N, H, W, &Lb), UNET_STATUS_OK);
    double dot = 0, nf = 0, nb = 0;
    size_t moved = 0;
    for (size_t i = 0; i < nw; i++) {
        dot += (double)f->grads[i] * b->grads[i];
        nf += (double)f->grads[i] * f->grads[i];
        nb += (double)b->grads[i] * b->grads[i];
        moved += b->weights[i] != w0[i];
    }
    const double cosine = dot / sqrt(nf * nb), ratio = sqrt(nb / nf);
    printf("     loss fp32 %.6f bf16 %.6f; gradient cosine %.6f, norm ratio %.4f; %zu of %zu "
           "weights moved by ~1e-5\n", Lf, Lb, cosine, ratio, moved, nw);
    CHECK(fabs(Lb - Lf) < 1e-2 * Lf);
    CHECK(cosine > 0.95 && fabs(ratio - 1.0) < 0.05);
    CHECK(moved > nw / 2);
    free(w0);
    unet_model_free(f);
    unet_model_free(b);
    unet_ctx_free(ctx);
}

/* The trainer runs at unet_train_opts.precision: it sets it on the model (fp32 by default, so a
 * bf16 model trained with the defaults runs float32), rejects a value that is neither, and a
 * bf16 run (where the CPU has it) ends with other weights than a float32 run of the same
 * steps. */
TEST(trainer_runs_at_its_precision) {
    unet_ctx *ctx = unet_ctx_create();
    float x[PIX];
    int32_t t[PIX];
    batch(x, t, 8);
    unet_dataset *ds = NULL;
    CHECK_STATUS(unet_dataset_create(ctx, 1, &ds), UNET_STATUS_OK);
    for (int k = 0; k < N; k++)
        CHECK_STATUS(unet_dataset_add(ctx, ds, x + k * H * W, t + k * H * W, NULL, H, W, NULL),
                     UNET_STATUS_OK);
    unet_train_opts o = unet_train_defaults();
    CHECK_EQ(o.precision, UNET_PRECISION_FP32);
    o.precision = (unet_precision)5;
    CHECK_STATUS(unet_train_check(ctx, &o), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "precision");
    o = unet_train_defaults();
    o.batch = 2, o.tile = 16, o.steps = 2, o.workers = 0;
    unet_model *m[2];
    for (int p = 0; p < 2; p++) {
        m[p] = small_unet(ctx, 21);
        unet_model_set_precision(ctx, m[p], p ? UNET_PRECISION_FP32 : UNET_PRECISION_BF16);
        o.precision = p ? UNET_PRECISION_BF16 : UNET_PRECISION_FP32;
        unet_trainer *tr = NULL;
        CHECK_STATUS(unet_trainer_create(ctx, m[p], ds, NULL, &o, &tr), UNET_STATUS_OK);
        CHECK_EQ(unet_model_precision(m[p]), o.precision);
        CHECK_STATUS(unet_trainer_run(ctx, tr, NULL, NULL), UNET_STATUS_OK);
        unet_trainer_free(tr);
    }
    const bool same = memcmp(m[0]->weights, m[1]->weights, m[0]->n_weights * sizeof(float)) == 0;
    printf("     2 trainer steps fp32 vs bf16: weights %s\n", same ? "equal" : "differ");
    CHECK(same == !unet_precision_native(UNET_PRECISION_BF16));
    unet_model_free(m[0]);
    unet_model_free(m[1]);
    unet_dataset_free(ds);
    unet_ctx_free(ctx);
}

int main(void) {
    RUN(weight_cache_follows_the_weights);
    RUN(training_never_reads_the_cache);
    RUN(weight_cache_made_at_second_use_and_switched_off);
    RUN(bf16_capped_off_runs_float32);
    RUN(bf16_training_keeps_float32_master_weights);
    RUN(trainer_runs_at_its_precision);
    return harness_finish();
}
