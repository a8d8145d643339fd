/* test_batchnorm.c — BatchNorm2d: PyTorch golden cases (training forward and backward, eval,
 * running statistics over two steps, N = 1, affine off, a mean far from zero), finite-
 * difference gradient checks of dx (batch statistics depend on x), dgamma and dbeta, the fast
 * path against the naive _ref loops on odd sizes, in-place forward, and thread-count
 * independence. */
#include "harness.h"
#include "ops/ops.h"

/* Golden tolerances.  PyTorch runs in float64 on the same float32 inputs; C sums the
 * statistics in double and does the per-element work in float32, so y and dx carry a few
 * float32 roundings of values up to ~10 (|x - mean| rstd |gamma| and |dy| rstd |gamma|):
 * 2e-5 absolute.  dgamma, dbeta, the statistics and the running averages are double sums
 * rounded once: 1e-5 relative. */
#define GOLD_Y_ATOL 2e-5
#define GOLD_Y_RTOL 1e-5
#define GOLD_SUM_ATOL 1e-5
#define GOLD_SUM_RTOL 1e-5

static char        key_buf[64];
static const char *key(int i, const char *name) {
    snprintf(key_buf, sizeof key_buf, "case%d.%s", i, name);
    return key_buf;
}

static float *copy_of(const float *x, size_t n) {
    float *p = test_alloc(n);
    memcpy(p, x, sizeof(float) * n);
    return p;
}

/* One training step on golden case i, by the fast path or by _ref. */
static void golden_train_step(const struct unet__safetensors *st, int i,
                              const struct unet__bn_dims *d, bool ref) {
    const size_t C = (size_t)d->C, nx = (size_t)d->N * C * d->H * d->W;
    const bool   affine = unet__st_find(st, key(i, "gamma")) != NULL;
    float       *x = golden_get(st, key(i, "x"), NULL), *r = golden_get(st, key(i, "r"), NULL);
    float *rm = golden_get(st, key(i, "rm0"), NULL), *rv = golden_get(st, key(i, "rv0"), NULL);
    float *gamma = affine ? golden_get(st, key(i, "gamma"), NULL) : NULL;
    float *beta = affine ? golden_get(st, key(i, "beta"), NULL) : NULL;
    float *y_ref = golden_get(st, key(i, "y"), NULL), *dx_ref = golden_get(st, key(i, "dx"), NULL);
    float *rm_ref = golden_get(st, key(i, "rm"), NULL),
          *rv_ref = golden_get(st, key(i, "rv"), NULL);
    float *mean_ref = golden_get(st, key(i, "mean"), NULL);
    float *rstd_ref = golden_get(st, key(i, "rstd"), NULL);
    float *y = test_alloc(nx), *dx = test_alloc(nx), *mean = test_alloc(C), *rstd = test_alloc(C);
    float *dgamma = test_alloc(C), *dbeta = test_alloc(C);
    if (ref) {
        unet__batchnorm_forward_train_ref(y, mean, rstd, rm, rv, x, gamma, beta, d);
        unet__batchnorm_backward_ref(dx, dgamma, dbeta, r, x, gamma, mean, rstd, d);
    } else {
        unet__batchnorm_forward_train(y, mean, rstd, rm, rv, x, gamma, beta, d);
        unet__batchnorm_backward(dx, dgamma, dbeta, r, x, gamma, mean, rstd, d);
    }
    CHECK_TENSOR("y", y, y_ref, nx, GOLD_Y_ATOL, GOLD_Y_RTOL);
    CHECK_TENSOR("save_mean", mean, mean_ref, C, GOLD_SUM_ATOL, GOLD_SUM_RTOL);
    CHECK_TENSOR("save_rstd", rstd, rstd_ref, C, GOLD_SUM_ATOL, GOLD_SUM_RTOL);
    CHECK_TENSOR("running_mean", rm, rm_ref, C, GOLD_SUM_ATOL, GOLD_SUM_RTOL);
    CHECK_TENSOR("running_var", rv, rv_ref, C, GOLD_SUM_ATOL, GOLD_SUM_RTOL);
    CHECK_TENSOR("dx", dx, dx_ref, nx, GOLD_Y_ATOL, GOLD_Y_RTOL);
    if (affine) {
        float *dg_ref = golden_get(st, key(i, "dgamma"), NULL);
        float *db_ref = golden_get(st, key(i, "dbeta"), NULL);
        CHECK_TENSOR("dgamma", dgamma, dg_ref, C, GOLD_SUM_ATOL, GOLD_SUM_RTOL);
        CHECK_TENSOR("dbeta", dbeta, db_ref, C, GOLD_SUM_ATOL, GOLD_SUM_RTOL);
        free(dg_ref), free(db_ref);
    } else {
        /* Affine off: dgamma and dbeta are given but must be left alone. */
        for (size_t c = 0; c < C; c++)
            CHECK(dgamma[c] == 0.0f && dbeta[c] == 0.0f);
    }
    free(x), free(r), free(rm), free(rv), free(gamma), free(beta), free(y_ref), free(dx_ref);
    free(rm_ref), free(rv_ref), free(mean_ref), free(rstd_ref);
    free(y), free(dx), free(mean), free(rstd), free(dgamma), free(dbeta);
}

static void golden_eval(const struct unet__safetensors *st, int i, const struct unet__bn_dims *d) {
    const size_t nx = (size_t)d->N * d->C * d->H * d->W;
    const bool   affine = unet__st_find(st, key(i, "gamma")) != NULL;
    float       *x = golden_get(st, key(i, "x"), NULL), *y_ref = golden_get(st, key(i, "y"), NULL);
    float *rm = golden_get(st, key(i, "rm0"), NULL), *rv = golden_get(st, key(i, "rv0"), NULL);
    float *gamma = affine ? golden_get(st, key(i, "gamma"), NULL) : NULL;
    float *beta = affine ? golden_get(st, key(i, "beta"), NULL) : NULL;
    float *y = test_alloc(nx);
    unet__batchnorm_forward_eval(y, x, gamma, beta, rm, rv, d);
    CHECK_TENSOR("eval y", y, y_ref, nx, GOLD_Y_ATOL, GOLD_Y_RTOL);
    /* In place: y aliasing x. */
    unet__batchnorm_forward_eval(x, x, gamma, beta, rm, rv, d);
    CHECK_TENSOR("eval y (in place)", x, y_ref, nx, GOLD_Y_ATOL, GOLD_Y_RTOL);
    free(x), free(y_ref), free(rm), free(rv), free(gamma), free(beta), free(y);
}

/* Two training steps: the running statistics compound (momentum applied twice). */
static void golden_two_steps(const struct unet__safetensors *st, int i,
                             const struct unet__bn_dims *d) {
    const size_t C = (size_t)d->C, nx = (size_t)d->N * C * d->H * d->W;
    const bool   affine = unet__st_find(st, key(i, "gamma")) != NULL;
    float       *x = golden_get(st, key(i, "x"), NULL), *x2 = golden_get(st, key(i, "x2"), NULL);
    float *rm = golden_get(st, key(i, "rm0"), NULL), *rv = golden_get(st, key(i, "rv0"), NULL);
    float *gamma = affine ? golden_get(st, key(i, "gamma"), NULL) : NULL;
    float *beta = affine ? golden_get(st, key(i, "beta"), NULL) : NULL;
    float *y_ref = golden_get(st, key(i, "y"), NULL), *y2_ref = golden_get(st, key(i, "y2"), NULL);
    float *rm_ref = golden_get(st, key(i, "rm"), NULL),
          *rv_ref = golden_get(st, key(i, "rv"), NULL);
    float *y = test_alloc(nx), *mean = test_alloc(C), *rstd = test_alloc(C);
    unet__batchnorm_forward_train(y, mean, rstd, rm, rv, x, gamma, beta, d);
    CHECK_TENSOR("step 1 y", y, y_ref, nx, GOLD_Y_ATOL, GOLD_Y_RTOL);
    unet__batchnorm_forward_train(y, mean, rstd, rm, rv, x2, gamma, beta, d);
    CHECK_TENSOR("step 2 y", y, y2_ref, nx, GOLD_Y_ATOL, GOLD_Y_RTOL);
    CHECK_TENSOR("running_mean after 2 steps", rm, rm_ref, C, GOLD_SUM_ATOL, GOLD_SUM_RTOL);
    CHECK_TENSOR("running_var after 2 steps", rv, rv_ref, C, GOLD_SUM_ATOL, GOLD_SUM_RTOL);
    free(x), free(x2), free(rm), free(rv), free(gamma), free(beta), free(y_ref), free(y2_ref);
    free(rm_ref), free(rv_ref), free(y), free(mean), free(rstd);
}

TEST(batchnorm_golden) {
    struct unet__safetensors *st = golden_open("batchnorm");
    if (!st) return;
    int cases = 0, modes[3] = {0, 0, 0};
    for (int i = 0; unet__st_find(st, key(i, "cfg")); i++, cases++) {
        long long c[6];
        golden_ints(st, key(i, "cfg"), c, 6);
        struct unet__bn_dims d = {.N = (int)c[0],
                                  .C = (int)c[1],
                                  .H = (int)c[2],
                                  .W = (int)c[3],
                                  .eps = 1e-5f,
                                  .momentum = 0.1f};
        const char          *mode_name[] = {"train", "eval", "two train steps"};
        printf("     case %d: N=%d C=%d %dx%d affine=%lld %s\n", i, d.N, d.C, d.H, d.W, c[4],
               mode_name[c[5]]);
        modes[c[5]]++;
        if (c[5] == 0) {
            golden_train_step(st, i, &d, false);
            printf("     case %d by _ref:\n", i);
            golden_train_step(st, i, &d, true);
        } else if (c[5] == 1) {
            golden_eval(st, i, &d);
        } else {
            golden_two_steps(st, i, &d);
        }
    }
    CHECK(cases >= 8);
    CHECK(modes[0] >= 4 && modes[1] >= 1 && modes[2] >= 1);
    unet__st_close(st);
}

/* ---- gradient checks: L = sum(y * r), forward in training mode ---- */

struct bn_case {
    struct unet__bn_dims d;
    float               *x, *gamma, *beta, *r, *y, *mean, *rstd;
    size_t               nx;
};

static double bn_loss(void *ud) {
    struct bn_case *k = ud;
    unet__batchnorm_forward_train(k->y, k->mean, k->rstd, NULL, NULL, k->x, k->gamma, k->beta,
                                  &k->d);
    return dot_double(k->y, k->r, k->nx);
}

static void bn_gradcheck(bool affine) {
    struct unet__rng rng;
    unet__rng_seed(&rng, affine ? 11 : 12);
    struct bn_case k = {.d = {.N = 2, .C = 3, .H = 5, .W = 5, .eps = 1e-5f, .momentum = 0.1f}};
    const size_t   C = (size_t)k.d.C;
    k.nx = (size_t)k.d.N * C * k.d.H * k.d.W;
    k.x = test_alloc(k.nx), k.r = test_alloc(k.nx), k.y = test_alloc(k.nx);
    k.mean = test_alloc(C), k.rstd = test_alloc(C);
    fill_uniform(&rng, k.x, k.nx, -1, 1);
    fill_uniform(&rng, k.r, k.nx, -1, 1);
    float *gamma = test_alloc(C), *beta = test_alloc(C);
    fill_uniform(&rng, gamma, C, 0.5f, 1.5f);
    fill_uniform(&rng, beta, C, -1, 1);
    if (affine) k.gamma = gamma, k.beta = beta;
    float *dx = test_alloc(k.nx), *dgamma = test_alloc(C), *dbeta = test_alloc(C);
    bn_loss(&k);
    unet__batchnorm_backward(dx, dgamma, dbeta, k.r, k.x, k.gamma, k.mean, k.rstd, &k.d);
    /* The loss is smooth but not linear in x (mean and rstd move with every x): with h = 1e-2
     * the central-difference truncation error is ~h^2 |f'''| < 1e-5, and float32 rounding of
     * y summed over 150 terms then divided by 2h adds ~1e-4: tolerance 5e-4. */
    GRADCHECK(affine ? "bn dx" : "bn dx (affine off)", k.x, dx, k.nx, bn_loss, &k, 1e-2f, 5e-4,
              1e-3);
    if (affine) {
        GRADCHECK("bn dgamma", k.gamma, dgamma, C, bn_loss, &k, 1e-2f, 5e-4, 1e-3);
        GRADCHECK("bn dbeta", k.beta, dbeta, C, bn_loss, &k, 1e-2f, 5e-4, 1e-3);
    }
    free(k.x), free(k.r), free(k.y), free(k.mean), free(k.rstd), free(gamma), free(beta);
    free(dx), free(dgamma), free(dbeta);
}

TEST(batchnorm_gradcheck) {
    bn_gradcheck(true);
    bn_gradcheck(false);
}

/* ---- fast path against the naive loops ---- */

static void bn_fast_vs_ref(const struct unet__bn_dims *d, bool affine, struct unet__rng *rng) {
    const size_t C = (size_t)d->C, nx = (size_t)d->N * C * d->H * d->W;
    float *x = test_alloc(nx), *r = test_alloc(nx), *gamma = test_alloc(C), *beta = test_alloc(C);
    const float offset = 4.0f * unet__rng_uniform(rng) - 2.0f;
    fill_uniform(rng, x, nx, offset - 1.5f, offset + 1.5f);
    fill_uniform(rng, r, nx, -1, 1);
    fill_uniform(rng, gamma, C, -1.5f, 1.5f);
    fill_uniform(rng, beta, C, -1, 1);
    const float *g = affine ? gamma : NULL, *b = affine ? beta : NULL;
    float       *rm = test_alloc(C), *rv = test_alloc(C), *rm_ref = test_alloc(C),
          *rv_ref = test_alloc(C);
    for (size_t c = 0; c < C; c++)
        rm[c] = rm_ref[c] = 0.1f * (float)c, rv[c] = rv_ref[c] = 1.0f;
    float *y = test_alloc(nx), *y_ref = test_alloc(nx);
    float *mean = test_alloc(C), *rstd = test_alloc(C), *mean_ref = test_alloc(C),
          *rstd_ref = test_alloc(C);
    unet__batchnorm_forward_train(y, mean, rstd, rm, rv, x, g, b, d);
    unet__batchnorm_forward_train_ref(y_ref, mean_ref, rstd_ref, rm_ref, rv_ref, x, g, b, d);
    /* Backward accumulates: start both from the same non-zero values. */
    float *dx = test_alloc(nx), *dx_ref = test_alloc(nx);
    float *dg = test_alloc(C), *db = test_alloc(C), *dg_ref = test_alloc(C),
          *db_ref = test_alloc(C);
    for (size_t i = 0; i < nx; i++)
        dx[i] = dx_ref[i] = 0.5f;
    for (size_t c = 0; c < C; c++)
        dg[c] = dg_ref[c] = -0.25f, db[c] = db_ref[c] = 0.75f;
    unet__batchnorm_backward(dx, dg, db, r, x, g, mean, rstd, d);
    unet__batchnorm_backward_ref(dx_ref, dg_ref, db_ref, r, x, g, mean_ref, rstd_ref, d);
    printf("     N=%d C=%d %dx%d affine=%d\n", d->N, d->C, d->H, d->W, affine);
    /* Same double statistics summed in another order; float32 per-element formulas that are
     * algebraically equal (the _ref works in double): a few roundings of values up to ~10. */
    CHECK_TENSOR("y", y, y_ref, nx, 1e-5, 1e-5);
    CHECK_TENSOR("save_mean", mean, mean_ref, C, 1e-6, 1e-6);
    CHECK_TENSOR("save_rstd", rstd, rstd_ref, C, 1e-6, 1e-6);
    CHECK_TENSOR("running_mean", rm, rm_ref, C, 1e-6, 1e-6);
    CHECK_TENSOR("running_var", rv, rv_ref, C, 1e-6, 1e-6);
    CHECK_TENSOR("dx", dx, dx_ref, nx, 1e-5, 1e-5);
    CHECK_TENSOR("dgamma", dg, dg_ref, C, 1e-5, 1e-6);
    CHECK_TENSOR("dbeta", db, db_ref, C, 1e-5, 1e-6);
    /* In place (y aliasing x) gives exactly the out-of-place result. */
    float *xy = copy_of(x, nx);
    unet__batchnorm_forward_train(xy, mean, rstd, NULL, NULL, xy, g, b, d);
    CHECK(memcmp(xy, y, sizeof(float) * nx) == 0);
    /* Set (from NaN garbage, which any read would show) equals accumulated onto zeros; the
     * parameter gradients still accumulate. */
    float *set = test_alloc(nx), *dg_set = copy_of(dg, C), *db_set = copy_of(db, C);
    for (size_t i = 0; i < nx; i++) dx[i] = 0.0f, set[i] = NAN;
    unet__batchnorm_backward(dx, dg, db, r, x, g, mean, rstd, d);
    unet__batchnorm_backward_set(set, true, dg_set, db_set, r, x, g, mean, rstd, d);
    size_t bad = 0;
    for (size_t i = 0; i < nx; i++) bad += !(set[i] == dx[i]);
    CHECK_EQ(bad, 0);
    CHECK(memcmp(dg, dg_set, sizeof(float) * C) == 0 && memcmp(db, db_set, sizeof(float) * C) == 0);
    free(set), free(dg_set), free(db_set);
    free(x), free(r), free(gamma), free(beta), free(rm), free(rv), free(rm_ref), free(rv_ref);
    free(y), free(y_ref), free(mean), free(rstd), free(mean_ref), free(rstd_ref);
    free(dx), free(dx_ref), free(dg), free(db), free(dg_ref), free(db_ref), free(xy);
}

TEST(batchnorm_fast_vs_ref) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 13);
    for (int trial = 0; trial < 12; trial++) {
        struct unet__bn_dims d = {.eps = 1e-5f, .momentum = 0.1f};
        d.N = 1 + (int)unet__rng_below(&rng, 3);
        d.C = 1 + (int)unet__rng_below(&rng, 9);
        d.H = 1 + (int)unet__rng_below(&rng, 13);
        d.W = 1 + (int)unet__rng_below(&rng, 13);
        if (d.N * d.H * d.W < 2) d.W = 2;
        bn_fast_vs_ref(&d, trial % 3 != 2, &rng);
    }
}

static int sum_calls;

/* A group of one process: the sums stay; counts the calls. */
static void count_sums(double *v, size_t n, void *user) {
    (void)v, (void)n;
    (*(int *)user)++;
}

/* Statistics are summed per channel by one thread in a fixed order: 1 thread and 4 threads
 * give the same bits. */
TEST(batchnorm_threads) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 14);
    struct unet__bn_dims d = {.N = 2, .C = 13, .H = 37, .W = 41, .eps = 1e-5f, .momentum = 0.1f};
    const size_t         C = (size_t)d.C, nx = (size_t)d.N * C * d.H * d.W;
    float *x = test_alloc(nx), *r = test_alloc(nx), *gamma = test_alloc(C), *beta = test_alloc(C);
    fill_uniform(&rng, x, nx, -3, 5);
    fill_uniform(&rng, r, nx, -1, 1);
    fill_uniform(&rng, gamma, C, -1, 1);
    fill_uniform(&rng, beta, C, -1, 1);
    float       *out[2];
    const size_t stride = 2 * nx + 6 * C;
    for (int t = 0; t < 2; t++) {
        float *o = out[t] = test_alloc(stride);
        unet__use_threads(t ? 4 : 1);
        unet__batchnorm_forward_train(o, o + nx, o + nx + C, o + nx + 2 * C, o + nx + 3 * C, x,
                                      gamma, beta, &d);
        unet__batchnorm_backward(o + nx + 6 * C, o + nx + 4 * C, o + nx + 5 * C, r, x, gamma,
                                 o + nx, o + nx + C, &d);
    }
    unet__use_threads(unet__default_threads());
    CHECK(memcmp(out[0], out[1], sizeof(float) * stride) == 0);
    /* Synchronised batch-norm in a group of one (its sums are its own): the same bits, and the
     * sums it hands over are the count and the per-channel sums (checked against the mean). */
    double buf[2 * 13 + 1];
    struct unet__bn_sync one = {.fn = count_sums, .user = &sum_calls, .buf = buf};
    float *o = test_alloc(stride);
    sum_calls = 0;
    unet__batchnorm_forward_train_sync(o, o + nx, o + nx + C, o + nx + 2 * C, o + nx + 3 * C, x,
                                       gamma, beta, &d, &one);
    CHECK_EQ(sum_calls, 2);
    unet__batchnorm_backward_sync(o + nx + 6 * C, false, o + nx + 4 * C, o + nx + 5 * C, r, x,
                                  gamma, o + nx, o + nx + C, &d, &one);
    CHECK_EQ(sum_calls, 3);
    CHECK(buf[2 * C] == (double)d.N * d.H * d.W);
    CHECK(memcmp(out[0], o, sizeof(float) * stride) == 0);
    free(x), free(r), free(gamma), free(beta), free(out[0]), free(out[1]), free(o);
}

int main(void) {
    RUN(batchnorm_golden);
    RUN(batchnorm_gradcheck);
    RUN(batchnorm_fast_vs_ref);
    RUN(batchnorm_threads);
    return harness_finish();
}
