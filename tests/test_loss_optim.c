/* test_loss_optim.c — losses and optimizers: PyTorch golden cases (tools/golden/loss_optim.py),
 * finite-difference gradient checks of every loss, the scale/accumulate contract, results that
 * do not depend on the thread count, and ten-step optimizer trajectories against torch.optim. */
#include "harness.h"
#include "ops/ops.h"

enum { KIND_CE = 0, KIND_BCE = 1, KIND_DICE = 2, KIND_SGD = 10, KIND_ADAM = 11 };

static char key_buf[64];
static const char *key(int i, const char *name) {
    snprintf(key_buf, sizeof key_buf, "case%d.%s", i, name);
    return key_buf;
}

/* One loss evaluation: the op selected by kind. */
struct loss_case {
    int                    kind;
    struct unet__loss_dims d;
    float                 *logits;
    int32_t               *target;
    float                 *weight;        /* NULL: none */
    int                    ignore_index;  /* CE only */
    float                  eps;           /* Dice only */
};

static size_t lc_pixels(const struct loss_case *k) {
    return (size_t)k->d.N * k->d.H * k->d.W;
}
static size_t lc_numel(const struct loss_case *k) {
    return lc_pixels(k) * (size_t)k->d.C;
}

static double lc_eval(const struct loss_case *k, float *dlogits, float scale) {
    switch (k->kind) {
    case KIND_CE:
        return unet__softmax_ce(dlogits, scale, k->logits, k->target, k->weight, k->ignore_index,
                                &k->d);
    case KIND_BCE:
        return unet__bce_logits(dlogits, scale, k->logits, k->target, k->weight, &k->d);
    default:
        return unet__dice_loss(dlogits, scale, k->logits, k->target, k->eps, &k->d);
    }
}

static const char *kind_name(int kind) {
    return kind == KIND_CE ? "CE" : kind == KIND_BCE ? "BCE" : "Dice";
}

/* ---- golden ---- */

/* The reference is float64 PyTorch on the same float32 inputs, stored as float32: the loss and
 * the gradient are computed in double here and rounded once, so both sides are within a float
 * rounding (6e-8 relative) of the exact value.  1e-6 relative leaves room for the libm exp/log
 * differences and catches any formula slip (a wrong normaliser is off by far more). */
#define LOSS_ATOL 1e-9
#define LOSS_RTOL 1e-6

TEST(loss_golden) {
    struct unet__safetensors *st = golden_open("loss_optim");
    if (!st) return;
    int counts[3] = {0, 0, 0};
    for (int i = 0; unet__st_find(st, key(i, "cfg")); i++) {
        long long c[7];
        golden_ints(st, key(i, "cfg"), c, 7);
        if (c[0] != KIND_CE && c[0] != KIND_BCE && c[0] != KIND_DICE) continue;
        struct loss_case k = {.kind = (int)c[0],
                              .d = {.N = (int)c[1], .C = (int)c[2], .H = (int)c[3], .W = (int)c[4]},
                              .ignore_index = (int)c[6],
                              .eps = 0.0f};
        counts[k.kind]++;
        size_t nx, nt;
        k.logits = golden_get(st, key(i, "logits"), &nx);
        float *tf = golden_get(st, key(i, "target"), &nt);
        float *loss_ref = golden_get(st, key(i, "loss"), NULL);
        float *dx_ref = golden_get(st, key(i, "dlogits"), NULL);
        if (c[5]) k.weight = golden_get(st, key(i, "weight"), NULL);
        if (k.kind == KIND_DICE) {
            float *eps = golden_get(st, key(i, "eps"), NULL);
            if (eps) k.eps = eps[0];
            free(eps);
        }
        if (!k.logits || !tf || !loss_ref || !dx_ref) return;
        CHECK_EQ(nx, lc_numel(&k));
        CHECK_EQ(nt, lc_pixels(&k));
        k.target = malloc(sizeof(int32_t) * nt);
        for (size_t j = 0; j < nt; j++) k.target[j] = (int32_t)tf[j];
        float *dx = test_alloc(nx);
        double loss = lc_eval(&k, dx, 1.0f);
        printf("     case %d: %s N=%d C=%d %dx%d weight=%lld ignore=%d: loss %.9g, torch %.9g\n", i,
               kind_name(k.kind), k.d.N, k.d.C, k.d.H, k.d.W, c[5], k.ignore_index, loss,
               loss_ref[0]);
        CHECK_CLOSE(loss, loss_ref[0], LOSS_ATOL, LOSS_RTOL);
        CHECK_TENSOR("dlogits", dx, dx_ref, nx, LOSS_ATOL, LOSS_RTOL);
        /* Without dlogits the loss is the same and nothing is written. */
        CHECK(lc_eval(&k, NULL, 1.0f) == loss);
        free(k.logits), free(tf), free(loss_ref), free(dx_ref), free(k.weight), free(k.target);
        free(dx);
    }
    CHECK(counts[KIND_CE] >= 5 && counts[KIND_BCE] >= 2 && counts[KIND_DICE] >= 2);
    unet__st_close(st);
}

/* ---- gradient checks ---- */

static double lc_loss(void *ud) {
    return lc_eval(ud, NULL, 1.0f);
}

/* Random case: logits in [-2, 2]; targets with every class; optional weight and ignored pixels. */
static struct loss_case lc_random(struct unet__rng *rng, int kind, int N, int C, int H, int W,
                                  bool weighted, int ignore_index) {
    struct loss_case k = {.kind = kind, .d = {.N = N, .C = C, .H = H, .W = W},
                          .ignore_index = ignore_index, .eps = 1e-6f};
    size_t P = lc_pixels(&k);
    int classes = kind == KIND_BCE || (kind == KIND_DICE && C == 1) ? 2 : C;
    k.logits = test_alloc(lc_numel(&k));
    fill_uniform(rng, k.logits, lc_numel(&k), -2, 2);
    k.target = malloc(sizeof(int32_t) * P);
    for (size_t i = 0; i < P; i++) {
        k.target[i] = (int32_t)unet__rng_below(rng, (uint64_t)classes);
        if (ignore_index >= 0 && unet__rng_below(rng, 4) == 0) k.target[i] = ignore_index;
    }
    if (weighted) {
        k.weight = test_alloc(P);
        fill_uniform(rng, k.weight, P, 0, 2);
    }
    return k;
}

static void lc_free(struct loss_case *k) {
    free(k->logits), free(k->target), free(k->weight);
}

TEST(loss_gradcheck) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 11);
    struct {
        int  kind, C;
        bool weighted;
        int  ignore_index;
    } cases[] = {
        {KIND_CE, 3, false, -1},   {KIND_CE, 3, true, -1}, {KIND_CE, 4, true, 255},
        {KIND_CE, 3, false, 1},    {KIND_BCE, 1, false, -1}, {KIND_BCE, 1, true, -1},
        {KIND_DICE, 3, false, -1}, {KIND_DICE, 1, false, -1}, {KIND_DICE, 2, false, -1},
    };
    for (size_t j = 0; j < sizeof cases / sizeof cases[0]; j++) {
        struct loss_case k = lc_random(&rng, cases[j].kind, 2, cases[j].C, 5, 5, cases[j].weighted,
                                       cases[j].ignore_index);
        float *dx = test_alloc(lc_numel(&k));
        lc_eval(&k, dx, 1.0f);
        char what[96];
        snprintf(what, sizeof what, "%s C=%d weight=%d ignore=%d", kind_name(k.kind), k.d.C,
                 (int)cases[j].weighted, k.ignore_index);
        /* The losses are smooth and evaluated in double, so the central difference with h = 1e-2
         * is off only by its truncation h^2/6 |f'''|, with |f'''| <= ~1/P per logit (P = 50
         * pixels): ~3e-7.  The analytic gradient is rounded to float (6e-8 relative of ~1/P).
         * atol 2e-6 is several times both; a wrong term (e.g. a missing weight or 1/count)
         * is off by 1e-3 or more. */
        GRADCHECK(what, k.logits, dx, lc_numel(&k), lc_loss, &k, 1e-2f, 2e-6, 1e-4);
        free(dx);
        lc_free(&k);
    }
}

/* ---- the scale / accumulate contract ---- */

TEST(loss_scale_accumulates) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 12);
    const int kinds[] = {KIND_CE, KIND_BCE, KIND_DICE};
    for (int j = 0; j < 3; j++) {
        int C = kinds[j] == KIND_BCE ? 1 : 3;
        struct loss_case k = lc_random(&rng, kinds[j], 2, C, 4, 3, kinds[j] != KIND_DICE,
                                       kinds[j] == KIND_CE ? 2 : -1);
        size_t n = lc_numel(&k);
        float *g1 = test_alloc(n), *g2 = test_alloc(n), *gs = test_alloc(n), *want = test_alloc(n);
        double l1 = lc_eval(&k, g1, 1.0f);
        /* Twice into one buffer: g + g, exactly twice the gradient. */
        double l2a = lc_eval(&k, g2, 1.0f), l2b = lc_eval(&k, g2, 1.0f);
        CHECK(l1 == l2a && l1 == l2b);
        for (size_t i = 0; i < n; i++) want[i] = 2.0f * g1[i];
        CHECK_TENSOR("twice = 2 g", g2, want, n, 0, 0);
        /* A scaled call adds scale * g onto what is there; the loss ignores the scale. */
        for (size_t i = 0; i < n; i++) gs[i] = 1.0f;
        double ls = lc_eval(&k, gs, -0.25f);
        CHECK(ls == l1);
        for (size_t i = 0; i < n; i++) want[i] = 1.0f - 0.25f * g1[i];
        CHECK_TENSOR("1 + (-0.25) g", gs, want, n, 1e-7, 1e-6);
        /* The gradient is not all zero (the checks above would pass trivially). */
        double norm = dot_double(g1, g1, n);
        CHECK(norm > 1e-6);
        printf("       %s: loss %.6f, |g|^2 %.3g\n", kind_name(k.kind), l1, norm);
        free(g1), free(g2), free(gs), free(want);
        lc_free(&k);
    }
}

TEST(ce_all_ignored_is_zero) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 13);
    struct loss_case k = lc_random(&rng, KIND_CE, 1, 3, 3, 4, true, 7);
    size_t P = lc_pixels(&k), n = lc_numel(&k);
    for (size_t i = 0; i < P; i++) k.target[i] = 7;
    float *g = test_alloc(n), *want = test_alloc(n);
    for (size_t i = 0; i < n; i++) g[i] = want[i] = 0.5f;
    double l = lc_eval(&k, g, 1.0f);
    CHECK(l == 0.0);
    CHECK_TENSOR("untouched", g, want, n, 0, 0);
    /* An ignored pixel's logits do not matter, even if they are NaN. */
    k.target[0] = 1;
    k.logits[1] = NAN; /* pixel 1, class 0: ignored */
    double l1 = lc_eval(&k, g, 1.0f);
    CHECK(isfinite(l1) && l1 > 0.0);
    free(g), free(want);
    lc_free(&k);
}

/* A NaN logit at a counted pixel makes the loss NaN (the trainer's divergence check sees it). */
TEST(loss_nan_propagates) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 14);
    const int kinds[] = {KIND_CE, KIND_BCE, KIND_DICE};
    for (int j = 0; j < 3; j++) {
        struct loss_case k = lc_random(&rng, kinds[j], 1, kinds[j] == KIND_BCE ? 1 : 2, 3, 3, false,
                                       -1);
        k.logits[lc_numel(&k) - 1] = NAN;
        CHECK(isnan(lc_eval(&k, NULL, 1.0f)));
        lc_free(&k);
    }
}

/* ---- thread count independence ---- */

TEST(loss_same_for_any_thread_count) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 15);
    struct {
        int kind, C;
    } cases[] = {{KIND_CE, 4}, {KIND_CE, UNET_MAX_CLASSES}, {KIND_BCE, 1},
                 {KIND_DICE, 3}, {KIND_DICE, UNET_MAX_CLASSES}, {KIND_DICE, 1}};
    for (size_t j = 0; j < sizeof cases / sizeof cases[0]; j++) {
        /* 2 x 129 x 131 pixels: many blocks, none a multiple of anything. */
        int H = cases[j].C > 8 ? 37 : 129, W = cases[j].C > 8 ? 41 : 131;
        struct loss_case k = lc_random(&rng, cases[j].kind, 2, cases[j].C, H, W,
                                       cases[j].kind != KIND_DICE, cases[j].kind == KIND_CE ? 0 : -1);
        size_t n = lc_numel(&k);
        float *g1 = test_alloc(n), *g4 = test_alloc(n);
        unet__use_threads(1);
        double l1 = lc_eval(&k, g1, 0.5f);
        unet__use_threads(4);
        double l4 = lc_eval(&k, g4, 0.5f);
        unet__use_threads(unet__default_threads());
        char what[64];
        snprintf(what, sizeof what, "%s C=%d 1 vs 4 threads", kind_name(k.kind), k.d.C);
        printf("       %s: loss %.17g vs %.17g\n", what, l1, l4);
        CHECK(l1 == l4);
        CHECK_TENSOR(what, g4, g1, n, 0, 0);
        free(g1), free(g4);
        lc_free(&k);
    }
}

/* ---- optimizers ---- */

/* The C code repeats torch's float32 operations in order and with torch's roundings (see
 * optim.c); on the machine that wrote the golden file (torch's AVX2 kernels, with FMA) all ten
 * steps of every case are bit-identical.  The tolerance is one float ulp (2^-23 relative) of
 * slack for a golden file regenerated where a kernel or libm's pow rounds once differently.  It
 * is this tight because the mistakes worth catching are themselves a few ulps in ten steps: a
 * multiply-add that is not fused (up to 1e-6 relative here), bias corrections from the float
 * hyperparameters instead of the decimal doubles (5e-7), an unfused addcmul (1.6e-7). */
#define OPTIM_ATOL 0.0
#define OPTIM_RTOL 1.2e-7

TEST(optim_golden) {
    struct unet__safetensors *st = golden_open("loss_optim");
    if (!st) return;
    int counts[2] = {0, 0};
    for (int i = 0; unet__st_find(st, key(i, "cfg")); i++) {
        long long c[4];
        golden_ints(st, key(i, "cfg"), c, 4);
        if (c[0] != KIND_SGD && c[0] != KIND_ADAM) continue;
        counts[c[0] == KIND_ADAM]++;
        size_t n = (size_t)c[1], steps = (size_t)c[2], nh, np, ng, nref;
        double hyper[5] = {0};
        nh = (size_t)golden_doubles(st, key(i, "hyper"), hyper, 5);
        float *p = golden_get(st, key(i, "p0"), &np);
        float *grads = golden_get(st, key(i, "grads"), &ng);
        float *ref = golden_get(st, key(i, "params"), &nref);
        if (!nh || !p || !grads || !ref) return;
        CHECK_EQ(np, n);
        CHECK_EQ(ng, n * steps);
        CHECK_EQ(nref, n * steps);
        float *buf = test_alloc(n), *m = test_alloc(n), *v = test_alloc(n);
        struct unet__sgd sgd = {0};
        struct unet__adam adam = {0};
        if (c[0] == KIND_SGD) {
            CHECK_EQ(nh, 3);
            sgd = (struct unet__sgd){.lr = hyper[0], .momentum = hyper[1],
                                     .weight_decay = hyper[2], .nesterov = c[3] != 0};
            printf("     case %d: SGD lr=%g momentum=%g weight_decay=%g nesterov=%d\n", i, sgd.lr,
                   sgd.momentum, sgd.weight_decay, sgd.nesterov);
        } else {
            CHECK_EQ(nh, 5);
            adam = (struct unet__adam){.lr = hyper[0], .beta1 = hyper[1], .beta2 = hyper[2],
                                       .eps = hyper[3], .weight_decay = hyper[4],
                                       .decoupled = c[3] != 0};
            printf("     case %d: %s lr=%g betas=(%g, %g) eps=%g weight_decay=%g\n", i,
                   adam.decoupled ? "AdamW" : "Adam", adam.lr, adam.beta1, adam.beta2, adam.eps,
                   adam.weight_decay);
        }
        /* traj (steps, n): the parameters after each step, compared with torch's at once; by
         * each instruction set's copy of the loop (kernel rows), which must agree bit for bit. */
        float *traj = test_alloc(n * steps), *first = test_alloc(n * steps), *p0 = test_alloc(n);
        memcpy(p0, p, sizeof(float) * n);
        enum unet__cpu_level levels[UNET__CPU_LEVELS];
        const int n_levels = harness_f32_levels(levels);
        const enum unet__cpu_level cap = unet__cpu_limit(UNET__CPU_TOP);
        for (int l = 0; l < n_levels; l++) {
            unet__cpu_limit(levels[l]);
            memcpy(p, p0, sizeof(float) * n);
            memset(buf, 0, sizeof(float) * n);
            memset(m, 0, sizeof(float) * n);
            memset(v, 0, sizeof(float) * n);
            for (size_t s = 0; s < steps; s++) {
                if (c[0] == KIND_SGD) unet__sgd_step(p, grads + s * n, buf, n, &sgd);
                else unet__adam_step(p, grads + s * n, m, v, n, &adam, (long)s + 1);
                memcpy(traj + s * n, p, sizeof(float) * n);
            }
            CHECK_TENSOR("params after each step", traj, ref, n * steps, OPTIM_ATOL, OPTIM_RTOL);
            size_t exact = 0;
            for (size_t j = 0; j < n * steps; j++)
                exact += memcmp(&traj[j], &ref[j], sizeof(float)) == 0;
            printf("       %-8s %zu of %zu values bit-identical to torch\n",
                   unet__cpu_level_name(levels[l]), exact, n * steps);
            if (l == 0) memcpy(first, traj, sizeof(float) * n * steps);
            else CHECK(memcmp(first, traj, sizeof(float) * n * steps) == 0);
        }
        unet__cpu_limit(cap);
        free(p), free(grads), free(ref), free(buf), free(m), free(v), free(traj), free(first);
        free(p0);
    }
    CHECK(counts[0] >= 3 && counts[1] >= 3);
    unet__st_close(st);
}

/* Hand-computed first steps, independent of the golden file. */
TEST(optim_first_step) {
    float p[3] = {1.0f, -2.0f, 0.5f}, g[3] = {0.5f, 0.25f, 0.0f}, buf[3] = {0, 0, 0};
    struct unet__sgd sgd = {.lr = 0.5f, .momentum = 0.9f, .weight_decay = 0.0f, .nesterov = false};
    unet__sgd_step(p, g, buf, 3, &sgd);
    /* buf = g, p -= lr g */
    CHECK(p[0] == 0.75f && p[1] == -2.125f && p[2] == 0.5f);
    CHECK(buf[0] == 0.5f && buf[1] == 0.25f && buf[2] == 0.0f);
    unet__sgd_step(p, g, buf, 3, &sgd);
    /* buf = 0.9 buf + g = 0.95 g (float rounding of 0.9f * 0.5f), p -= lr buf */
    CHECK_CLOSE(p[0], 0.75 - 0.5 * 0.95, 1e-7, 0);
    CHECK_CLOSE(buf[1], 0.475, 1e-7, 0);

    /* Adam's first step moves every parameter with a non-zero gradient by lr (m/sqrt(v) = sign g
     * after bias correction), whatever the gradient's size. */
    float q[3] = {1.0f, -2.0f, 0.5f}, m[3] = {0}, v[3] = {0};
    float gq[3] = {3.0f, -1e-3f, 0.0f};
    struct unet__adam adam = {.lr = 0.01f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
    unet__adam_step(q, gq, m, v, 3, &adam, 1);
    CHECK_CLOSE(q[0], 0.99, 1e-6, 0);
    CHECK_CLOSE(q[1], -1.99, 1e-5, 0);
    CHECK(q[2] == 0.5f);
    /* AdamW without weight decay is Adam. */
    float r[3] = {1.0f, -2.0f, 0.5f}, m2[3] = {0}, v2[3] = {0};
    adam.decoupled = true;
    unet__adam_step(r, gq, m2, v2, 3, &adam, 1);
    CHECK(memcmp(q, r, sizeof q) == 0);
    /* AdamW's decay multiplies the parameter by 1 - lr wd before the update. */
    float z[1] = {2.0f}, gz[1] = {0.0f}, mz[1] = {0}, vz[1] = {0};
    adam.weight_decay = 0.5f;
    unet__adam_step(z, gz, mz, vz, 1, &adam, 1);
    CHECK_CLOSE(z[0], 2.0 * (1 - 0.01 * 0.5), 1e-7, 0);
}

/* A large parameter vector (odd: a vector loop's tail) gives the same result on 1 and 4
 * threads, and by each instruction set's copy of the loops, for each combination of the
 * options (SGD with and without momentum, Nesterov, weight decay; Adam and AdamW, with and
 * without weight decay). */
static void optim_run(float *p, float *m, float *v, const float *g, size_t n, int combo) {
    memset(m, 0, sizeof(float) * n);
    memset(v, 0, sizeof(float) * n);
    const struct unet__adam adam = {.lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                                    .weight_decay = combo & 1 ? 1e-2 : 0.0,
                                    .decoupled = (combo & 2) != 0};
    const struct unet__sgd sgd = {.lr = 0.1, .momentum = combo & 4 ? 0.9 : 0.0,
                                  .weight_decay = combo & 1 ? 1e-4 : 0.0,
                                  .nesterov = (combo & 6) == 6};
    for (long s = 1; s <= 3; s++) unet__adam_step(p, g, m, v, n, &adam, s);
    for (int s = 0; s < 2; s++) unet__sgd_step(p, g, m, n, &sgd);
}

TEST(optim_same_for_any_thread_count_and_level) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 16);
    const size_t n = 100003;
    float *g = test_alloc(n), *p0 = test_alloc(n), *p1 = test_alloc(n), *p4 = test_alloc(n);
    float *m = test_alloc(n), *v = test_alloc(n);
    fill_uniform(&rng, g, n, -1, 1);
    fill_uniform(&rng, p0, n, -1, 1);
    enum unet__cpu_level levels[UNET__CPU_LEVELS];
    const int n_levels = harness_f32_levels(levels);
    for (int combo = 0; combo < 8; combo++) {
        memcpy(p1, p0, sizeof(float) * n);
        unet__use_threads(1);
        optim_run(p1, m, v, g, n, combo);
        size_t moved = 0;
        for (size_t i = 0; i < n; i++) moved += p1[i] != p0[i];
        CHECK(moved > n / 2);
        unet__use_threads(4);
        const enum unet__cpu_level cap = unet__cpu_limit(UNET__CPU_TOP);
        for (int l = 0; l < n_levels; l++) {
            unet__cpu_limit(levels[l]);
            memcpy(p4, p0, sizeof(float) * n);
            optim_run(p4, m, v, g, n, combo);
            if (memcmp(p4, p1, sizeof(float) * n) != 0) {
                printf("     options %d, %s on 4 threads differs\n", combo,
                       unet__cpu_level_name(levels[l]));
                CHECK(false);
            }
        }
        unet__cpu_limit(cap);
        unet__use_threads(unet__default_threads());
    }
    printf("     8 combinations of options x %d instruction sets: the same bits\n", n_levels);
    free(g), free(p0), free(p1), free(p4), free(m), free(v);
}

int main(void) {
    RUN(loss_golden);
    RUN(loss_gradcheck);
    RUN(loss_scale_accumulates);
    RUN(ce_all_ignored_is_zero);
    RUN(loss_nan_propagates);
    RUN(loss_same_for_any_thread_count);
    RUN(optim_golden);
    RUN(optim_first_step);
    RUN(optim_same_for_any_thread_count_and_level);
    return harness_finish();
}
