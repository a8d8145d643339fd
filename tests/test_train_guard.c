/* test_train_guard.c — training that cannot silently fail, in the library: learning-rate
 * schedules and gradient-norm clipping against PyTorch (tools/golden/train_guard.py) and by
 * hand, the summed loss, the uniform-prediction baseline, the moving average of the weights
 * (arithmetic, swap, resumable checkpoint), the divergence guard (spike, blow-up, collapse,
 * rollback, its state as text), the held-back set and the `selected` metadata. */
#include "harness.h"
#include "model.h"

static char key_buf[64];
static const char *key(int i, const char *name) {
    snprintf(key_buf, sizeof key_buf, "case%d.%s", i, name);
    return key_buf;
}

/* ---- a tiny U-Net and a batch ---- */

enum { N = 2, S = 16 };

static unet_model *tiny_model(int classes, uint64_t seed) {
    unet_config c = unet_config_default(UNET_ARCH_UNET);
    c.base = 4;
    c.depth = 2;
    c.classes = classes;
    unet_model *m = NULL;
    CHECK_STATUS(unet_model_create(NULL, &c, seed, &m), UNET_STATUS_OK);
    return m;
}

struct batch {
    float   x[N * S * S];
    int32_t t[N * S * S];
    float   w[N * S * S];
};

/* Bright disks on noise; a few unlabeled pixels; weights in [0.5, 3). */
static void make_batch(struct batch *b, uint64_t seed) {
    struct unet__rng r;
    unet__rng_seed(&r, seed);
    for (int i = 0; i < N * S * S; i++) {
        int y = (i / S) % S, x = i % S;
        bool in = (x - 8) * (x - 8) + (y - 7) * (y - 7) < 20;
        b->x[i] = (in ? 0.8f : 0.2f) + 0.1f * unet__rng_uniform(&r);
        b->t[i] = unet__rng_uniform(&r) < 0.05f ? -1 : in;
        b->w[i] = 0.5f + 2.5f * unet__rng_uniform(&r);
    }
}

static unet_optim sgd(double lr) {
    unet_optim o = unet_optim_default(UNET_OPTIM_SGD);
    o.lr = lr;
    return o;
}

/* ---- schedules ---- */

TEST(schedule_golden) {
    struct unet__safetensors *st = golden_open("train_guard");
    if (!st) return;
    int cases = 0;
    double worst = 0;
    for (int i = 0; unet__st_find(st, key(i, "cfg")); i++) {
        long long c[5];
        golden_ints(st, key(i, "cfg"), c, 5);
        if (c[0] != 0) continue;
        double hyper[2 + UNET_MAX_MILESTONES], ref[64];
        golden_doubles(st, key(i, "hyper"), hyper, 2 + UNET_MAX_MILESTONES);
        int T = golden_doubles(st, key(i, "factor"), ref, 64);
        unet_schedule s = unet_schedule_default((unet_schedule_kind)c[1], (long)c[2]);
        s.warmup = (long)c[3];
        s.power = hyper[0], s.gamma = hyper[1];
        s.n_milestones = (int)c[4];
        for (int k = 0; k < s.n_milestones; k++) s.milestones[k] = hyper[2 + k];
        if (s.n_milestones == 0) s.n_milestones = 2; /* the defaults: unused but valid */
        CHECK_STATUS(unet_schedule_check(NULL, &s), UNET_STATUS_OK);
        CHECK_EQ(T, c[2]);
        for (int t = 0; t < T; t++) {
            double got = unet_schedule_factor(&s, t), e = fabs(got - ref[t]);
            if (e > worst) worst = e;
            if (!(e <= 1e-15 + 1e-12 * fabs(ref[t])))
                HARNESS_FAIL_AT(__FILE__, __LINE__, "case %d (%s, T %d, W %ld) t %d: %.17g, torch %.17g",
                                i, unet_schedule_name(s.kind), T, s.warmup, t, got, ref[t]);
        }
        cases++;
    }
    /* torch chains the factors recursively, unet uses the closed form: a few ulps apart. */
    printf("       %d schedules against torch.optim.lr_scheduler: max abs err %.3g\n", cases, worst);
    CHECK(cases >= 9);
    unet__st_close(st);
}

TEST(schedule_by_hand) {
    unet_schedule s = unet_schedule_default(UNET_SCHEDULE_COSINE, 4);
    CHECK_CLOSE(unet_schedule_factor(&s, 0), 1.0, 0, 0);
    CHECK_CLOSE(unet_schedule_factor(&s, 2), 0.5, 1e-16, 0);
    CHECK_CLOSE(unet_schedule_factor(&s, 4), 0.0, 1e-16, 0);
    CHECK_CLOSE(unet_schedule_factor(&s, 99), 0.0, 1e-16, 0); /* clamped to T */
    s = unet_schedule_default(UNET_SCHEDULE_POLY, 10);
    CHECK_CLOSE(unet_schedule_factor(&s, 5), pow(0.5, 0.9), 1e-16, 0);
    s = unet_schedule_default(UNET_SCHEDULE_STEP, 10); /* milestones floor(5), floor(7.5) */
    CHECK_CLOSE(unet_schedule_factor(&s, 4), 1.0, 0, 0);
    CHECK_CLOSE(unet_schedule_factor(&s, 5), 0.1, 1e-17, 0);
    CHECK_CLOSE(unet_schedule_factor(&s, 6), 0.1, 1e-17, 0);
    CHECK_CLOSE(unet_schedule_factor(&s, 7), 0.01, 1e-17, 0);
    s = unet_schedule_default(UNET_SCHEDULE_CONSTANT, 10);
    s.warmup = 4;
    CHECK_CLOSE(unet_schedule_factor(&s, 0), 0.25, 0, 0);
    CHECK_CLOSE(unet_schedule_factor(&s, 2), 0.75, 0, 0);
    CHECK_CLOSE(unet_schedule_factor(&s, 3), 1.0, 0, 0);
    CHECK_CLOSE(unet_schedule_factor(&s, 9), 1.0, 0, 0);
    /* Checks name the field. */
    unet_ctx *ctx = unet_ctx_create();
    s.warmup = 11;
    CHECK_STATUS(unet_schedule_check(ctx, &s), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "warm-up");
    s = unet_schedule_default(UNET_SCHEDULE_STEP, 10);
    s.milestones[1] = 0.4;
    CHECK_STATUS(unet_schedule_check(ctx, &s), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "increasing");
    s.total = 0;
    CHECK_STATUS(unet_schedule_check(ctx, &s), UNET_STATUS_ARG);
    unet_schedule_kind k;
    CHECK_STATUS(unet_schedule_parse(ctx, "poly", &k), UNET_STATUS_OK);
    CHECK_EQ(k, UNET_SCHEDULE_POLY);
    CHECK_STATUS(unet_schedule_parse(ctx, "linear", &k), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "'linear'");
    unet_ctx_free(ctx);
}

/* ---- clipping ---- */

TEST(clip_golden) {
    struct unet__safetensors *st = golden_open("train_guard");
    if (!st) return;
    int cases = 0;
    for (int i = 0; unet__st_find(st, key(i, "cfg")); i++) {
        long long c[3];
        golden_ints(st, key(i, "cfg"), c, 3);
        if (c[0] != 1) continue;
        size_t n;
        double max_norm;
        golden_doubles(st, key(i, "max_norm"), &max_norm, 1);
        float *g = golden_get(st, key(i, "grads"), &n);
        float *ref = golden_get(st, key(i, "clipped"), NULL);
        float *norm = golden_get(st, key(i, "norm"), NULL);
        if (!g || !ref || !norm) break;
        bool clipped;
        double got = unet__clip_grad_norm(g, n, max_norm, &clipped);
        /* torch sums the squares in float (per tensor, then over tensors), unet in double:
         * the norms agree to float rounding, and so do the coefficient and the products. */
        CHECK_CLOSE(got, norm[0], 0, 1e-6);
        CHECK_EQ(clipped, got > max_norm);
        char what[128];
        snprintf(what, sizeof what, "case %d clipped (max_norm %g, norm %.4g)", i, max_norm, got);
        CHECK_TENSOR(what, g, ref, n, 0, 2e-7);
        free(g), free(ref), free(norm);
        cases++;
    }
    CHECK_EQ(cases, 4);
    unet__st_close(st);
}

TEST(clip_by_hand) {
    float g[2] = {3, 4};
    bool clipped;
    CHECK_CLOSE(unet__clip_grad_norm(g, 2, 1.0, &clipped), 5.0, 0, 0);
    CHECK(clipped);
    const float coef = (1.0f / (5.0f + 1e-6f)) * 1.0f; /* torch's float arithmetic */
    CHECK(g[0] == 3.0f * coef && g[1] == 4.0f * coef);
    CHECK_CLOSE(g[0], 0.6, 2e-7, 0);
    float h[2] = {3, 4};
    CHECK_CLOSE(unet__clip_grad_norm(h, 2, 10.0, &clipped), 5.0, 0, 0);
    CHECK(!clipped && h[0] == 3.0f && h[1] == 4.0f); /* untouched, bit for bit */
    float bad[3] = {1, NAN, 2};
    CHECK(isnan(unet__clip_grad_norm(bad, 3, 1.0, &clipped)));
    CHECK(!clipped && bad[0] == 1.0f && bad[2] == 2.0f);
    /* The norm does not depend on the thread count (fixed blocks summed in order). */
    size_t n = 100003;
    float *a = test_alloc(n);
    struct unet__rng r;
    unet__rng_seed(&r, 7);
    fill_uniform(&r, a, n, -1, 1);
    unet__use_threads(1);
    double n1 = unet__l2_norm(a, n);
    unet__use_threads(2);
    double n2 = unet__l2_norm(a, n);
    unet__use_threads(unet__default_threads());
    CHECK(n1 == n2);
    double ref = 0;
    for (size_t i = 0; i < n; i++) ref += (double)a[i] * a[i];
    CHECK_CLOSE(n1, sqrt(ref), 0, 1e-12);
    free(a);
}

/* A training step clips: the norm is reported before clipping, and the SGD update is the
 * clipped gradient's. */
TEST(step_clips_the_update) {
    static struct batch b;
    make_batch(&b, 3);
    unet_model *m1 = tiny_model(2, 11), *m2 = tiny_model(2, 11);
    if (!m1 || !m2) return;
    unet_optim o = sgd(0.1);
    unet_step_opts so = unet_step_defaults(UNET_LOSS_CE);
    unet_step_stats s1, s2;
    float *p0 = test_alloc(m1->n_weights);
    memcpy(p0, m1->weights, m1->n_weights * sizeof(float));
    CHECK_STATUS(unet_train_step_ex(NULL, m1, &o, &so, b.x, b.t, NULL, N, S, S, &s1), UNET_STATUS_OK);
    so.clip_norm = 0.25 * s1.grad_norm;
    CHECK_STATUS(unet_train_step_ex(NULL, m2, &o, &so, b.x, b.t, NULL, N, S, S, &s2), UNET_STATUS_OK);
    CHECK(!s1.clipped && s2.clipped);
    CHECK(s1.grad_norm == s2.grad_norm && s1.loss == s2.loss);
    double coef = so.clip_norm / (s1.grad_norm + 1e-6), worst = 0;
    for (size_t i = 0; i < m1->n_weights; i++) {
        double d1 = (double)m1->weights[i] - p0[i], d2 = (double)m2->weights[i] - p0[i];
        double e = fabs(d2 - coef * d1);
        if (e > worst) worst = e;
    }
    printf("       clip to a quarter of the norm %.4g: update error %.3g\n", s1.grad_norm, worst);
    CHECK(worst < 1e-6);
    unet_ctx *ctx = unet_ctx_create();
    so.clip_norm = -1;
    CHECK_STATUS(unet_train_step_ex(ctx, m2, &o, &so, b.x, b.t, NULL, N, S, S, &s2), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "clip");
    unet_ctx_free(ctx);
    free(p0);
    unet_model_free(m1);
    unet_model_free(m2);
}

/* ---- the summed loss and the uniform baseline ---- */

TEST(sum_reduction_scales_the_mean) {
    static struct batch b;
    make_batch(&b, 5);
    size_t labeled = 0;
    for (int i = 0; i < N * S * S; i++) labeled += b.t[i] >= 0;
    const double scale = (double)labeled / N;
    const unet_loss_kind kinds[] = {UNET_LOSS_CE, UNET_LOSS_WCE};
    for (int k = 0; k < 2; k++) {
        unet_model *a = tiny_model(2, 2), *c = tiny_model(2, 2);
        if (!a || !c) return;
        unet_optim o = sgd(0.0); /* no update: the two calls see the same weights */
        unet_step_opts so = unet_step_defaults(kinds[k]);
        unet_step_stats mean, sum;
        const float *w = kinds[k] == UNET_LOSS_WCE ? b.w : NULL;
        CHECK_STATUS(unet_train_step_ex(NULL, a, &o, &so, b.x, b.t, w, N, S, S, &mean), UNET_STATUS_OK);
        so.reduction = UNET_REDUCTION_SUM;
        CHECK_STATUS(unet_train_step_ex(NULL, c, &o, &so, b.x, b.t, w, N, S, S, &sum), UNET_STATUS_OK);
        CHECK_CLOSE(sum.loss, mean.loss * scale, 0, 1e-6);
        CHECK_CLOSE(sum.grad_norm, mean.grad_norm * scale, 0, 1e-5);
        CHECK_CLOSE(sum.baseline, mean.baseline * scale, 0, 1e-12);
        unet_model_free(a);
        unet_model_free(c);
    }
    /* Dice is a ratio: no sum. */
    unet_model *m = tiny_model(2, 2);
    unet_ctx *ctx = unet_ctx_create();
    unet_optim o = sgd(0.0);
    unet_step_opts so = unet_step_defaults(UNET_LOSS_CE_DICE);
    so.reduction = UNET_REDUCTION_SUM;
    CHECK_STATUS(unet_train_step_ex(ctx, m, &o, &so, b.x, b.t, NULL, N, S, S, NULL), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "sum");
    unet_ctx_free(ctx);
    unet_model_free(m);
}

/* With the output layer zeroed every logit is equal: the loss is the baseline exactly, for
 * each loss and reduction, one and two classes; the class counts add up. */
TEST(baseline_is_the_uniform_loss) {
    static struct batch b;
    make_batch(&b, 9);
    const unet_loss_kind kinds[] = {UNET_LOSS_CE, UNET_LOSS_WCE, UNET_LOSS_CE_DICE, UNET_LOSS_DICE};
    int64_t labeled = 0, fg = 0;
    for (int i = 0; i < N * S * S; i++) labeled += b.t[i] >= 0, fg += b.t[i] == 1;
    for (int classes = 1; classes <= 2; classes++)
        for (int k = 0; k < 4; k++)
            for (int red = 0; red < 2; red++) {
                if (red && (kinds[k] == UNET_LOSS_CE_DICE || kinds[k] == UNET_LOSS_DICE)) continue;
                unet_model *m = tiny_model(classes, 4);
                if (!m) return;
                const struct unet__param *w = unet__model_find_param(m, "outc.conv.weight");
                const struct unet__param *bias = unet__model_find_param(m, "outc.conv.bias");
                memset(unet__model_param_data(m, w), 0, w->numel * sizeof(float));
                memset(unet__model_param_data(m, bias), 0, bias->numel * sizeof(float));
                unet_optim o = sgd(0.0);
                unet_step_opts so = unet_step_defaults(kinds[k]);
                so.reduction = (unet_reduction)red;
                unet_step_stats st;
                CHECK_STATUS(unet_train_step_ex(NULL, m, &o, &so, b.x, b.t,
                                                kinds[k] == UNET_LOSS_WCE ? b.w : NULL, N, S, S, &st),
                             UNET_STATUS_OK);
                if (fabs(st.loss - st.baseline) > 1e-6 * st.baseline)
                    HARNESS_FAIL_AT(__FILE__, __LINE__, "classes %d loss %d reduction %d: loss %.9g, "
                                    "baseline %.9g", classes, (int)kinds[k], red, st.loss, st.baseline);
                CHECK_EQ(st.classes, 2);
                CHECK_EQ(st.truth[0] + st.truth[1], labeled);
                CHECK_EQ(st.truth[1], fg);
                CHECK_EQ(st.pred[0] + st.pred[1], labeled);
                unet_model_free(m);
            }
}

/* ---- the moving average ---- */

TEST(ema_arithmetic_swap_and_resume) {
    static struct batch b;
    make_batch(&b, 13);
    unet_model *m = tiny_model(2, 21);
    if (!m) return;
    unet_ctx *ctx = unet_ctx_create();
    CHECK_STATUS(unet_model_ema_enable(ctx, m, 1.5), UNET_STATUS_ARG);
    CHECK_STATUS(unet_model_ema_swap(ctx, m), UNET_STATUS_ARG);
    const double decay = 0.8;
    CHECK_STATUS(unet_model_ema_enable(ctx, m, decay), UNET_STATUS_OK);
    const size_t nw = m->n_weights, nb = m->n_buffers;
    double *ew = malloc(sizeof(double) * nw), *eb = malloc(sizeof(double) * nb);
    for (size_t i = 0; i < nw; i++) ew[i] = m->weights[i];
    for (size_t i = 0; i < nb; i++) eb[i] = m->buffers[i];
    unet_optim o = unet_optim_default(UNET_OPTIM_ADAM);
    unet_step_opts so = unet_step_defaults(UNET_LOSS_CE);
    for (int u = 0; u < 12; u++) {
        CHECK_STATUS(unet_train_step_ex(ctx, m, &o, &so, b.x, b.t, NULL, N, S, S, NULL), UNET_STATUS_OK);
        double d = fmin(decay, (1.0 + u) / (10.0 + u)); /* 0.1, 0.18, ... then 0.8 */
        for (size_t i = 0; i < nw; i++) ew[i] += (1 - d) * (m->weights[i] - ew[i]);
        for (size_t i = 0; i < nb; i++) eb[i] += (1 - d) * (m->buffers[i] - eb[i]);
    }
    CHECK_EQ(unet_model_ema_updates(m), 12);
    float *live = test_alloc(nw), *avg = test_alloc(nw), *ref = test_alloc(nw);
    memcpy(live, m->weights, nw * sizeof(float));
    CHECK_STATUS(unet_model_ema_swap(ctx, m), UNET_STATUS_OK);
    memcpy(avg, m->weights, nw * sizeof(float));
    for (size_t i = 0; i < nw; i++) ref[i] = (float)ew[i];
    /* float32 updates against a double reference: a few roundings per step. */
    CHECK_TENSOR("ema weights after 12 steps", avg, ref, nw, 1e-6, 1e-5);
    float *bref = test_alloc(nb);
    for (size_t i = 0; i < nb; i++) bref[i] = (float)eb[i];
    CHECK_TENSOR("ema running statistics", m->buffers, bref, nb, 1e-6, 1e-5);
    CHECK_STATUS(unet_model_ema_swap(ctx, m), UNET_STATUS_OK);
    CHECK(memcmp(m->weights, live, nw * sizeof(float)) == 0);
    /* The resumable checkpoint carries the average; a plain model file does not. */
    char path[512];
    tmp_path(path, sizeof path, "ema.resume.safetensors");
    CHECK_STATUS(unet_model_save_training(ctx, m, path, NULL, 0), UNET_STATUS_OK);
    unet_model *r = NULL;
    CHECK_STATUS(unet_model_load_training(ctx, path, &r, NULL, NULL), UNET_STATUS_OK);
    if (r) {
        CHECK(unet_model_ema_decay(r) == decay);
        CHECK_EQ(unet_model_ema_updates(r), 12);
        CHECK(memcmp(r->ema_w, m->ema_w, nw * sizeof(float)) == 0);
        CHECK(memcmp(r->ema_b, m->ema_b, nb * sizeof(float)) == 0);
        /* One more step on each: identical. */
        CHECK_STATUS(unet_train_step_ex(ctx, m, &o, &so, b.x, b.t, NULL, N, S, S, NULL), UNET_STATUS_OK);
        CHECK_STATUS(unet_train_step_ex(ctx, r, &o, &so, b.x, b.t, NULL, N, S, S, NULL), UNET_STATUS_OK);
        CHECK(memcmp(r->ema_w, m->ema_w, nw * sizeof(float)) == 0);
    }
    unet_model_free(r);
    tmp_path(path, sizeof path, "ema.safetensors");
    CHECK_STATUS(unet_model_save(ctx, m, path), UNET_STATUS_OK);
    CHECK_STATUS(unet_model_load(ctx, path, &r), UNET_STATUS_OK);
    CHECK(unet_model_ema_decay(r) == 0);
    unet_model_free(r);
    CHECK_STATUS(unet_model_ema_enable(ctx, m, 0), UNET_STATUS_OK);
    CHECK(m->ema_w == NULL);
    free(ew), free(eb), free(live), free(avg), free(ref), free(bref);
    unet_model_free(m);
    unet_ctx_free(ctx);
}

/* ---- the guard ---- */

/* A step's statistics: loss, baseline 1, two balanced classes predicted with accuracy acc and
 * a share p1 of class 1. */
static unet_step_stats stats(double loss, double acc, double p1) {
    unet_step_stats s = {.loss = loss, .baseline = 1.0, .grad_norm = 1, .classes = 2};
    s.truth[0] = s.truth[1] = 500;
    s.pred[1] = (int64_t)(1000 * p1);
    s.pred[0] = 1000 - s.pred[1];
    s.correct = (int64_t)(1000 * acc);
    return s;
}

static unet_guard *new_guard(void) {
    unet_guard_opts o = unet_guard_defaults();
    unet_guard *g = NULL;
    CHECK_STATUS(unet_guard_create(NULL, &o, &g), UNET_STATUS_OK);
    return g;
}

/* 40 steps of loss 1 +- 0.1, then 2.5: caught at the sixth high step (the median of the last
 * 10 passes 1 + 3 MAD and 2 x the reference); unhealthy one step before. */
TEST(guard_catches_a_spike) {
    unet_guard *g = new_guard();
    if (!g) return;
    for (int i = 0; i < 40; i++) {
        unet_step_stats s = stats(1.0 + 0.1 * ((i * 7) % 5 - 2) / 2.0, 0.6, 0.5);
        CHECK_EQ(unet_guard_observe(g, UNET_STATUS_OK, &s), UNET_GUARD_NONE);
    }
    CHECK(unet_guard_healthy(g));
    int caught = 0;
    for (int k = 1; k <= 10 && !caught; k++) {
        unet_step_stats s = stats(2.5, 0.6, 0.5);
        unet_guard_event e = unet_guard_observe(g, UNET_STATUS_OK, &s);
        if (e != UNET_GUARD_NONE) {
            CHECK_EQ(e, UNET_GUARD_SPIKE);
            caught = k;
        } else if (k == 5) {
            CHECK(!unet_guard_healthy(g));
        }
    }
    CHECK_EQ(caught, 6);
    CHECK_STR_CONTAINS(unet_guard_detail(g), "loss spike: median of the last 10 steps 2.5");
    printf("       %s\n", unet_guard_detail(g));
    unet_guard_free(g);
    /* A plateau (MAD 0): +20 % is noise, x2.4 is a spike. */
    g = new_guard();
    for (int i = 0; i < 100; i++) {
        unet_step_stats s = stats(0.5, 0.6, 0.5);
        unet_guard_observe(g, UNET_STATUS_OK, &s);
    }
    for (int i = 0; i < 10; i++) {
        unet_step_stats s = stats(0.6, 0.6, 0.5);
        CHECK_EQ(unet_guard_observe(g, UNET_STATUS_OK, &s), UNET_GUARD_NONE);
    }
    unet_guard_event e = UNET_GUARD_NONE;
    for (int i = 0; i < 10 && e == UNET_GUARD_NONE; i++) {
        unet_step_stats s = stats(1.2, 0.6, 0.5);
        e = unet_guard_observe(g, UNET_STATUS_OK, &s);
    }
    CHECK_EQ(e, UNET_GUARD_SPIKE);
    unet_guard_free(g);
}

/* A run that diverges from its second step: the spike test has no history, the blow-up test
 * (loss over 5 x the uniform prediction's) needs none.  Non-finite steps are reported at once. */
TEST(guard_catches_a_blowup_and_nonfinite) {
    unet_guard *g = new_guard();
    if (!g) return;
    unet_step_stats s = stats(1.0, 0.5, 0.5);
    CHECK_EQ(unet_guard_observe(g, UNET_STATUS_OK, &s), UNET_GUARD_NONE);
    int caught = 0;
    for (int k = 1; k <= 12 && !caught; k++) {
        s = stats(40.0 + k, 0.5, 0.5);
        if (unet_guard_observe(g, UNET_STATUS_OK, &s) == UNET_GUARD_BLOWUP) caught = k;
    }
    CHECK_EQ(caught, 9); /* the window of 10 needs 10 ratios: 1 good + 9 bad */
    CHECK_STR_CONTAINS(unet_guard_detail(g), "loss blow-up");
    s = stats(NAN, 0.5, 0.5);
    CHECK_EQ(unet_guard_observe(g, UNET_STATUS_NUMERIC, &s), UNET_GUARD_NONFINITE);
    CHECK_STR_CONTAINS(unet_guard_detail(g), "the loss is NaN");
    /* Other failures are not the guard's business. */
    CHECK_EQ(unet_guard_observe(g, UNET_STATUS_IO, &s), UNET_GUARD_NONE);
    unet_guard_free(g);
    /* detect = 0: only non-finite values. */
    unet_guard_opts o = unet_guard_defaults();
    o.detect = 0;
    CHECK_STATUS(unet_guard_create(NULL, &o, &g), UNET_STATUS_OK);
    for (int k = 0; k < 30; k++) {
        s = stats(1000.0, 0.5, 0.5);
        CHECK_EQ(unet_guard_observe(g, UNET_STATUS_OK, &s), UNET_GUARD_NONE);
    }
    CHECK_EQ(unet_guard_observe(g, UNET_STATUS_NUMERIC, &s), UNET_GUARD_NONFINITE);
    unet_guard_free(g);
}

/* One class everywhere is a collapse only once the model has shown it learned: not in the
 * all-background start of a run, yes after it. */
TEST(guard_catches_a_collapse) {
    unet_guard *g = new_guard();
    if (!g) return;
    for (int i = 0; i < 30; i++) {
        unet_step_stats s = stats(0.7, 0.5, 0.0); /* untrained: all class 0 */
        CHECK_EQ(unet_guard_observe(g, UNET_STATUS_OK, &s), UNET_GUARD_NONE);
    }
    for (int i = 0; i < 30; i++) {
        unet_step_stats s = stats(0.3, 0.9, 0.5); /* learned: 90 % right */
        CHECK_EQ(unet_guard_observe(g, UNET_STATUS_OK, &s), UNET_GUARD_NONE);
    }
    int caught = 0;
    for (int k = 1; k <= 60 && !caught; k++) {
        unet_step_stats s = stats(0.3, 0.5, 0.99); /* collapsed to class 1, loss unchanged */
        if (unet_guard_observe(g, UNET_STATUS_OK, &s) == UNET_GUARD_COLLAPSE) caught = k;
    }
    printf("       training collapse caught after %d steps: %s\n", caught, unet_guard_detail(g));
    CHECK(caught > 0 && caught < 40);
    CHECK_STR_CONTAINS(unet_guard_detail(g), "predicted as class 1");
    unet_guard_free(g);
    /* Validation: the first collapsed validation is the untrained model's, then one that
     * learned arms the test, and a collapsed one after it is caught; so is a loss blow-up. */
    g = new_guard();
    unet_step_stats v = stats(0.69, 0.5, 1.0);
    v.baseline = log(2.0);
    CHECK_EQ(unet_guard_observe_validation(g, &v), UNET_GUARD_NONE);
    v = stats(0.2, 0.95, 0.5);
    v.baseline = log(2.0);
    CHECK_EQ(unet_guard_observe_validation(g, &v), UNET_GUARD_NONE);
    v = stats(0.5, 0.5, 0.97);
    v.baseline = log(2.0);
    CHECK_EQ(unet_guard_observe_validation(g, &v), UNET_GUARD_COLLAPSE);
    v = stats(4.0, 0.5, 0.5);
    v.baseline = log(2.0);
    CHECK_EQ(unet_guard_observe_validation(g, &v), UNET_GUARD_BLOWUP);
    unet_guard_free(g);
}

/* A rollback returns the model's whole training state bit for bit and halves the scale; past
 * the limit it still restores and says the run diverged. */
TEST(guard_rollback_restores_everything) {
    static struct batch b;
    make_batch(&b, 17);
    unet_ctx *ctx = unet_ctx_create();
    unet_config c = unet_config_default(UNET_ARCH_UNET);
    c.base = 4, c.depth = 2, c.dropout = 0.3f;
    unet_model *m = NULL;
    CHECK_STATUS(unet_model_create(ctx, &c, 3, &m), UNET_STATUS_OK);
    if (!m) return;
    unet_guard_opts go = unet_guard_defaults();
    go.max_rollbacks = 1;
    unet_guard *g = NULL;
    CHECK_STATUS(unet_guard_create(ctx, &go, &g), UNET_STATUS_OK);
    CHECK_STATUS(unet_guard_rollback(ctx, g, m), UNET_STATUS_ARG); /* no snapshot yet */
    CHECK_STATUS(unet_model_ema_enable(ctx, m, 0.9), UNET_STATUS_OK);
    unet_optim o = unet_optim_default(UNET_OPTIM_ADAM);
    unet_step_opts so = unet_step_defaults(UNET_LOSS_CE);
    unet_step_stats st;
    CHECK_STATUS(unet_train_step_ex(ctx, m, &o, &so, b.x, b.t, NULL, N, S, S, &st), UNET_STATUS_OK);
    unet_guard_observe(g, UNET_STATUS_OK, &st);
    CHECK_STATUS(unet_guard_snapshot(ctx, g, m, 1), UNET_STATUS_OK);
    char *state0 = unet_guard_state(g);
    unet_model *copy = NULL; /* the state at the snapshot, through a resumable checkpoint */
    char path[512];
    tmp_path(path, sizeof path, "guard.resume.safetensors");
    CHECK_STATUS(unet_model_save_training(ctx, m, path, NULL, 0), UNET_STATUS_OK);
    CHECK_STATUS(unet_model_load_training(ctx, path, &copy, NULL, NULL), UNET_STATUS_OK);
    for (int i = 0; i < 3; i++) {
        CHECK_STATUS(unet_train_step_ex(ctx, m, &o, &so, b.x, b.t, NULL, N, S, S, &st), UNET_STATUS_OK);
        unet_guard_observe(g, UNET_STATUS_OK, &st);
    }
    CHECK_STATUS(unet_guard_rollback(ctx, g, m), UNET_STATUS_OK);
    CHECK_EQ(unet_guard_rollbacks(g), 1);
    CHECK(unet_guard_lr_scale(g) == 0.5);
    CHECK_EQ(unet_guard_snapshot_step(g), 1);
    if (copy) {
        CHECK(memcmp(m->weights, copy->weights, m->n_weights * sizeof(float)) == 0);
        CHECK(memcmp(m->buffers, copy->buffers, m->n_buffers * sizeof(float)) == 0);
        CHECK(memcmp(m->counters, copy->counters, (size_t)m->n_counters * sizeof(int64_t)) == 0);
        CHECK(memcmp(m->opt_m, copy->opt_m, m->n_weights * sizeof(float)) == 0);
        CHECK(memcmp(m->opt_v, copy->opt_v, m->n_weights * sizeof(float)) == 0);
        CHECK(memcmp(m->ema_w, copy->ema_w, m->n_weights * sizeof(float)) == 0);
        CHECK(memcmp(&m->rng, &copy->rng, sizeof m->rng) == 0);
        CHECK_EQ(m->opt_step, copy->opt_step);
        CHECK_EQ(m->ema_updates, copy->ema_updates);
    }
    /* The guard's statistics are the snapshot's again (apart from the scale, the count and
     * the steps since the rollback). */
    char *state1 = unet_guard_state(g);
    CHECK(state0 && state1 && strcmp(strstr(state0, " acc="), strstr(state1, " acc=")) == 0);
    CHECK(state1 && strstr(state1, " fresh=0 "));
    CHECK(!unet_guard_trusted(g)); /* nothing seen since the rollback */
    CHECK_STATUS(unet_train_step_ex(ctx, m, &o, &so, b.x, b.t, NULL, N, S, S, &st), UNET_STATUS_OK);
    CHECK_STATUS(unet_guard_rollback(ctx, g, m), UNET_STATUS_NUMERIC);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "training diverged");
    if (copy) CHECK(memcmp(m->weights, copy->weights, m->n_weights * sizeof(float)) == 0);
    free(state0), free(state1);
    unet_model_free(copy);
    unet_model_free(m);
    unet_guard_free(g);
    unet_ctx_free(ctx);
}

/* The statistics survive a round trip through text exactly: a resumed guard decides as the
 * uninterrupted one. */
TEST(guard_state_round_trip) {
    unet_guard *a = new_guard(), *b = new_guard();
    if (!a || !b) return;
    for (int i = 0; i < 45; i++) {
        unet_step_stats s = stats(1.0 / (1 + 0.01 * i) + 0.013 * (i % 3), 0.9, 0.5);
        unet_guard_observe(a, UNET_STATUS_OK, &s);
    }
    char *text = unet_guard_state(a);
    CHECK(text != NULL);
    if (!text) return;
    CHECK_STATUS(unet_guard_set_state(NULL, b, text), UNET_STATUS_OK);
    char *again = unet_guard_state(b);
    CHECK(again && strcmp(text, again) == 0);
    int same = 0;
    for (int i = 0; i < 30; i++) {
        unet_step_stats s = stats(i < 10 ? 0.9 : 3.0, 0.9, i < 20 ? 0.5 : 1.0);
        same += unet_guard_observe(a, UNET_STATUS_OK, &s) == unet_guard_observe(b, UNET_STATUS_OK, &s);
    }
    CHECK_EQ(same, 30);
    unet_ctx *ctx = unet_ctx_create();
    CHECK_STATUS(unet_guard_set_state(ctx, b, "v1 scale=2"), UNET_STATUS_FORMAT);
    text[strlen(text) / 2] = 'x';
    CHECK_STATUS(unet_guard_set_state(ctx, b, text), UNET_STATUS_FORMAT);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "guard state: malformed");
    unet_ctx_free(ctx);
    free(text), free(again);
    unet_guard_free(a);
    unet_guard_free(b);
}

/* ---- the held-back set ---- */

TEST(holdout_plan_cases) {
    int held[8], band[8], kind, rows[8] = {100, 100, 100, 100, 100, 100, 100, 100};
    int files[8] = {0, 1, 2, 3, 4, 5, 6, 7}, stack[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    /* 8 images: ceil(0.1 * 8) = 1 by the seeded shuffle; the same seed, the same image. */
    CHECK_STATUS(unet_holdout_plan(NULL, 8, files, rows, 0.1, 16, 1, &kind, held, band), UNET_STATUS_OK);
    int n = 0, which = -1;
    for (int i = 0; i < 8; i++) n += held[i], which = held[i] ? i : which;
    CHECK_EQ(kind, 1);
    CHECK_EQ(n, 1);
    int held2[8];
    CHECK_STATUS(unet_holdout_plan(NULL, 8, files, rows, 0.1, 16, 1, &kind, held2, band), UNET_STATUS_OK);
    CHECK(memcmp(held, held2, sizeof held) == 0);
    /* 8 pages of one stack: the last page. */
    CHECK_STATUS(unet_holdout_plan(NULL, 8, stack, rows, 0.25, 16, 1, &kind, held, band), UNET_STATUS_OK);
    CHECK(held[6] && held[7] && !held[5] && !held[0]);
    /* 4 images, a large fraction: never all of them. */
    CHECK_STATUS(unet_holdout_plan(NULL, 4, files, rows, 0.9, 16, 1, &kind, held, band), UNET_STATUS_OK);
    CHECK_EQ(held[0] + held[1] + held[2] + held[3], 3);
    /* 1 to 3 images: a band of each; too small: none. */
    for (int k = 1; k <= 3; k++) {
        CHECK_STATUS(unet_holdout_plan(NULL, k, files, rows, 0.2, 16, 1, &kind, held, band), UNET_STATUS_OK);
        CHECK_EQ(kind, 2);
        for (int i = 0; i < k; i++) CHECK_EQ(band[i], 20);
    }
    int small[2] = {100, 40};
    CHECK_STATUS(unet_holdout_plan(NULL, 2, files, small, 0.2, 16, 1, &kind, held, band), UNET_STATUS_OK);
    CHECK(kind == 2 && band[0] == 20 && band[1] == 0);
    small[0] = 50;
    CHECK_STATUS(unet_holdout_plan(NULL, 2, files, small, 0.2, 16, 1, &kind, held, band), UNET_STATUS_OK);
    CHECK_EQ(kind, 0);
    CHECK_STATUS(unet_holdout_plan(NULL, 2, files, small, 1.0, 16, 1, &kind, held, band), UNET_STATUS_ARG);
    (void)which;
}

/* ---- the selected metadata ---- */

TEST(selected_metadata) {
    unet_model *m = tiny_model(2, 1);
    if (!m) return;
    unet_ctx *ctx = unet_ctx_create();
    char path[512];
    tmp_path(path, sizeof path, "selected.safetensors");
    const char *meta[] = {"selected", "best val_dice=0.9310 step=1200"};
    CHECK_STATUS(unet_model_save_meta(ctx, m, path, meta, 1), UNET_STATUS_OK);
    CHECK(unet_model_meta(m, "selected") == NULL);
    unet_model *r = NULL;
    CHECK_STATUS(unet_model_load(ctx, path, &r), UNET_STATUS_OK);
    CHECK_STR_CONTAINS(unet_model_meta(r, "selected"), "best val_dice=0.9310 step=1200");
    CHECK_STR_CONTAINS(unet_model_meta(r, "arch"), "unet");
    CHECK(unet_model_meta(r, "nothing") == NULL);
    unet_model_free(r);
    const char *bad[] = {"classes", "3"};
    CHECK_STATUS(unet_model_save_meta(ctx, m, path, bad, 1), UNET_STATUS_ARG);
    const char *bad2[] = {"ema_decay", "0.5"};
    CHECK_STATUS(unet_model_save_meta(ctx, m, path, bad2, 1), UNET_STATUS_ARG);
    unet_model_free(m);
    unet_ctx_free(ctx);
}

int main(void) {
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/unet_test_train_guard_%d", (int)getpid());
    mkdir(tmp_dir, 0755);
    RUN(schedule_golden);
    RUN(schedule_by_hand);
    RUN(clip_golden);
    RUN(clip_by_hand);
    RUN(step_clips_the_update);
    RUN(sum_reduction_scales_the_mean);
    RUN(baseline_is_the_uniform_loss);
    RUN(ema_arithmetic_swap_and_resume);
    RUN(guard_catches_a_spike);
    RUN(guard_catches_a_blowup_and_nonfinite);
    RUN(guard_catches_a_collapse);
    RUN(guard_rollback_restores_everything);
    RUN(guard_state_round_trip);
    RUN(holdout_plan_cases);
    RUN(selected_metadata);
    remove_tree(tmp_dir);
    return harness_finish();
}
