/* test_pool_relu_dropout.c — MaxPool2d(2, 2), ReLU, Dropout and Dropout2d: PyTorch golden
 * cases (odd sizes, ties, NaN and infinities, PyTorch's own dropout masks), finite-difference
 * gradient checks, max-pool's fast path against _ref, and the dropout mask's statistics and
 * reproducibility. */
#include "harness.h"
#include "ops/ops.h"

static char        key_buf[64];
static const char *key(int i, const char *name) {
    snprintf(key_buf, sizeof key_buf, "case%d.%s", i, name);
    return key_buf;
}

/* Byte tensors (argmax, mask) from the golden file. */
static uint8_t *golden_u8(const struct unet__safetensors *st, const char *k, size_t *n) {
    size_t   count = 0;
    float   *f = golden_get(st, k, &count);
    uint8_t *b = malloc(count ? count : 1);
    if (!b) exit(2);
    for (size_t i = 0; f && i < count; i++)
        b[i] = (uint8_t)f[i];
    free(f);
    if (n) *n = count;
    return b;
}

/* CHECK_TENSOR for tensors holding NaN and infinities: a non-finite reference value must be
 * matched exactly (NaN by NaN, inf by the same inf); the finite rest goes through
 * check_tensor_at.  (check_tensor_at itself counts NaN == NaN and inf == inf as mismatches:
 * its tolerance atol + rtol |ref| is NaN or the difference inf - inf is NaN.) */
static void check_tensor_nonfinite_at(const char *file, int line, const char *what,
                                      const float *got, const float *ref, size_t n, double atol,
                                      double rtol) {
    float *g = test_alloc(n), *r = test_alloc(n);
    size_t nonfinite = 0, bad = 0;
    for (size_t i = 0; i < n; i++) {
        g[i] = got[i], r[i] = ref[i];
        if (isfinite(ref[i])) continue;
        nonfinite++;
        bool same = isnan(ref[i]) ? isnan(got[i]) : got[i] == ref[i];
        if (!same && bad++ < 5)
            printf("  %s:%d: %s[%zu]: got %.9g, want %.9g\n", file, line, what, i, got[i], ref[i]);
        g[i] = r[i] = 0.0f;
    }
    if (nonfinite)
        printf("       %-40s %zu non-finite reference values, %zu mismatched\n", what, nonfinite,
               bad);
    if (bad) harness_cur_failed++;
    check_tensor_at(file, line, what, g, r, n, atol, rtol);
    free(g), free(r);
}
#define CHECK_TENSOR_NONFINITE(what, got, ref, n, atol, rtol)                                      \
    check_tensor_nonfinite_at(__FILE__, __LINE__, what, got, ref, n, atol, rtol)

static size_t count_mismatched_bytes(const uint8_t *a, const uint8_t *b, size_t n) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += a[i] != b[i];
    return bad;
}

/* ---- golden ---- */

static void golden_maxpool(const struct unet__safetensors *st, int i, const long long *c) {
    struct unet__pool_dims d = {
        .N = (int)c[1], .C = (int)c[2], .H_in = (int)c[3], .W_in = (int)c[4]};
    d.H_out = d.H_in / 2, d.W_out = d.W_in / 2;
    const char *kinds[] = {"random", "ties", "NaN and inf"};
    printf("     case %d: maxpool N=%d C=%d %dx%d -> %dx%d, %s\n", i, d.N, d.C, d.H_in, d.W_in,
           d.H_out, d.W_out, kinds[c[5]]);
    size_t   nx, ny, na;
    float   *x = golden_get(st, key(i, "x"), &nx), *y_ref = golden_get(st, key(i, "y"), &ny);
    float   *r = golden_get(st, key(i, "r"), NULL), *dx_ref = golden_get(st, key(i, "dx"), NULL);
    uint8_t *arg_ref = golden_u8(st, key(i, "argmax"), &na);
    CHECK_EQ(ny, (size_t)d.N * d.C * d.H_out * d.W_out);
    CHECK_EQ(na, ny);
    float   *y = test_alloc(ny), *dx = test_alloc(nx);
    uint8_t *arg = calloc(ny, 1), *arg2 = calloc(ny, 1);
    if (!arg || !arg2) exit(2);
    unet__maxpool2_forward(y, arg, x, &d);
    unet__maxpool2_backward(dx, r, arg, &d);
    /* Selection and a scatter into zeros: exact, NaN positions included. */
    CHECK_TENSOR_NONFINITE("y", y, y_ref, ny, 0, 0);
    CHECK_EQ(count_mismatched_bytes(arg, arg_ref, ny), 0);
    CHECK_TENSOR("dx", dx, dx_ref, nx, 0, 0);
    unet__maxpool2_forward_ref(y, arg2, x, &d);
    CHECK_TENSOR_NONFINITE("y (_ref)", y, y_ref, ny, 0, 0);
    CHECK_EQ(count_mismatched_bytes(arg2, arg_ref, ny), 0);
    free(x), free(y_ref), free(r), free(dx_ref), free(arg_ref), free(y), free(dx), free(arg),
        free(arg2);
}

static void golden_relu(const struct unet__safetensors *st, int i) {
    size_t n;
    float *x = golden_get(st, key(i, "x"), &n), *y_ref = golden_get(st, key(i, "y"), NULL);
    float *r = golden_get(st, key(i, "r"), NULL), *dx_ref = golden_get(st, key(i, "dx"), NULL);
    printf("     case %d: relu n=%zu with NaN, +-0, +-inf and an infinite dy\n", i, n);
    float *y = test_alloc(n), *dx = test_alloc(n);
    unet__relu_forward(y, x, n);
    unet__relu_backward(dx, r, y, n);
    /* A select: exact, NaN passes through forward and lets the gradient through backward. */
    CHECK_TENSOR_NONFINITE("y", y, y_ref, n, 0, 0);
    CHECK_TENSOR("dx", dx, dx_ref, n, 0, 0);
    /* -0 stays -0, as torch.relu. */
    for (size_t k = 0; k < n; k++)
        if (y_ref[k] == 0.0f) CHECK(signbit(y[k]) == signbit(y_ref[k]));
    unet__relu_forward(x, x, n); /* in place */
    CHECK_TENSOR_NONFINITE("y (in place)", x, y_ref, n, 0, 0);
    /* The in-place backward of a fused ReLU: dy masked where it stands. */
    unet__relu_mask_grad(r, y, n);
    CHECK_TENSOR("dy (masked in place)", r, dx_ref, n, 0, 0);
    free(x), free(y_ref), free(r), free(dx_ref), free(y), free(dx);
}

static void golden_dropout(const struct unet__safetensors *st, int i, const long long *c) {
    struct unet__dropout_dims d = {
        .N = (int)c[1], .C = (int)c[2], .H = (int)c[3], .W = (int)c[4], .channelwise = c[0] == 3};
    float *p = golden_get(st, key(i, "p"), NULL);
    d.p = p ? p[0] : 0.5f;
    printf("     case %d: %s N=%d C=%d %dx%d p=%g%s\n", i, d.channelwise ? "dropout2d" : "dropout",
           d.N, d.C, d.H, d.W, d.p, c[5] ? ", NaN at a dropped position" : "");
    size_t   n, nm;
    float   *x = golden_get(st, key(i, "x"), &n), *y_ref = golden_get(st, key(i, "y"), NULL);
    float   *r = golden_get(st, key(i, "r"), NULL), *dx_ref = golden_get(st, key(i, "dx"), NULL);
    uint8_t *mask = golden_u8(st, key(i, "mask"), &nm);
    CHECK_EQ(nm, d.channelwise ? (size_t)d.N * d.C : n);
    float *y = test_alloc(n), *dx = test_alloc(n);
    unet__dropout_apply(y, mask, x, &d);
    unet__dropout_backward(dx, r, mask, &d);
    /* PyTorch scales by 1 / (1 - p) with p a double; unet's p is float32, so the scale differs
     * by up to ulp(p) / (1 - p) ~ 3e-7 relative at p = 0.9. */
    CHECK_TENSOR_NONFINITE("y", y, y_ref, n, 0, 1e-6);
    CHECK_TENSOR("dx", dx, dx_ref, n, 0, 1e-6);
    free(p), free(x), free(y_ref), free(r), free(dx_ref), free(mask), free(y), free(dx);
}

TEST(pool_relu_dropout_golden) {
    struct unet__safetensors *st = golden_open("pool_relu");
    if (!st) return;
    int per_op[4] = {0, 0, 0, 0};
    for (int i = 0; unet__st_find(st, key(i, "cfg")); i++) {
        long long c[6];
        golden_ints(st, key(i, "cfg"), c, 6);
        if (c[0] < 0 || c[0] > 3) {
            CHECK(!"unknown op in pool_relu.safetensors");
            continue;
        }
        per_op[c[0]]++;
        if (c[0] == 0)
            golden_maxpool(st, i, c);
        else if (c[0] == 1)
            golden_relu(st, i);
        else
            golden_dropout(st, i, c);
    }
    CHECK(per_op[0] >= 3 && per_op[1] >= 1 && per_op[2] >= 3 && per_op[3] >= 2);
    unet__st_close(st);
}

/* ---- gradient checks: L = sum(y * r) ---- */

enum op_kind { OP_MAXPOOL, OP_RELU, OP_DROPOUT };

struct op_case {
    enum op_kind              kind;
    struct unet__pool_dims    pool;
    struct unet__dropout_dims drop;
    float                    *x, *y, *r;
    uint8_t                  *bytes; /* argmax or the fixed dropout mask */
    size_t                    nx, ny;
};

static double op_loss(void *ud) {
    struct op_case *k = ud;
    switch (k->kind) {
    case OP_MAXPOOL:
        unet__maxpool2_forward(k->y, k->bytes, k->x, &k->pool);
        break;
    case OP_RELU:
        unet__relu_forward(k->y, k->x, k->nx);
        break;
    case OP_DROPOUT:
        unet__dropout_apply(k->y, k->bytes, k->x, &k->drop);
        break;
    }
    return dot_double(k->y, k->r, k->ny);
}

static void op_gradcheck(struct op_case *k, const char *what, struct unet__rng *rng) {
    k->x = test_alloc(k->nx), k->y = test_alloc(k->ny), k->r = test_alloc(k->ny);
    fill_uniform(rng, k->x, k->nx, -1, 1);
    fill_uniform(rng, k->r, k->ny, -1, 1);
    float *dx = test_alloc(k->nx);
    op_loss(k);
    switch (k->kind) {
    case OP_MAXPOOL:
        unet__maxpool2_backward(dx, k->r, k->bytes, &k->pool);
        break;
    case OP_RELU:
        unet__relu_backward(dx, k->r, k->y, k->nx);
        break;
    case OP_DROPOUT:
        unet__dropout_backward(dx, k->r, k->bytes, &k->drop);
        break;
    }
    /* Piecewise linear: away from kinks (skipped by the harness) the differences are exact up
     * to float32 rounding of y (~1e-7) over 2h = 2e-3. */
    GRADCHECK(what, k->x, dx, k->nx, op_loss, k, 1e-3f, 1e-3, 1e-3);
    free(k->x), free(k->y), free(k->r), free(dx);
}

TEST(pool_relu_dropout_gradcheck) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 21);
    struct op_case pool = {.kind = OP_MAXPOOL, .pool = {.N = 2, .C = 3, .H_in = 5, .W_in = 5}};
    pool.pool.H_out = 2, pool.pool.W_out = 2;
    pool.nx = 2 * 3 * 5 * 5, pool.ny = 2 * 3 * 2 * 2;
    pool.bytes = calloc(pool.ny, 1);
    op_gradcheck(&pool, "maxpool dx (5x5, floor)", &rng);

    struct op_case relu = {.kind = OP_RELU, .nx = 2 * 3 * 5 * 5, .ny = 2 * 3 * 5 * 5};
    op_gradcheck(&relu, "relu dx", &rng);

    for (int cw = 0; cw < 2; cw++) {
        struct op_case drop = {
            .kind = OP_DROPOUT,
            .drop = {.N = 2, .C = 3, .H = 5, .W = 5, .p = 0.4f, .channelwise = cw},
            .nx = 2 * 3 * 5 * 5,
            .ny = 2 * 3 * 5 * 5};
        drop.bytes = calloc(drop.nx, 1);
        struct unet__rng mrng;
        unet__rng_seed(&mrng, 22 + (uint64_t)cw);
        float *tmp_x = test_alloc(drop.nx), *tmp_y = test_alloc(drop.nx);
        unet__dropout_forward(tmp_y, drop.bytes, tmp_x, &drop.drop, &mrng); /* draws the mask */
        op_gradcheck(&drop, cw ? "dropout2d dx" : "dropout dx", &rng);
        free(tmp_x), free(tmp_y), free(drop.bytes);
    }
    free(pool.bytes);
}

/* ---- max-pool fast path against _ref, odd sizes, ties and NaN ---- */

TEST(maxpool_fast_vs_ref) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 23);
    for (int trial = 0; trial < 24; trial++) {
        struct unet__pool_dims d;
        d.N = 1 + (int)unet__rng_below(&rng, 3);
        d.C = 1 + (int)unet__rng_below(&rng, 5);
        d.H_in = 2 + (int)unet__rng_below(&rng, 20);
        d.W_in = 2 + (int)unet__rng_below(&rng, 20);
        /* Trials 16.. use ceil mode (FCN's pooling): odd edges pooled on their own. */
        bool ceil_mode = trial >= 16;
        if (ceil_mode) d.H_in |= 1;
        d.H_out = ceil_mode ? (d.H_in + 1) / 2 : d.H_in / 2;
        d.W_out = ceil_mode ? (d.W_in + 1) / 2 : d.W_in / 2;
        const size_t nx = (size_t)d.N * d.C * d.H_in * d.W_in,
                     ny = (size_t)d.N * d.C * d.H_out * d.W_out;
        float   *x = test_alloc(nx), *y = test_alloc(ny), *y_ref = test_alloc(ny);
        uint8_t *a = calloc(ny, 1), *a_ref = calloc(ny, 1);
        if (!a || !a_ref) exit(2);
        /* Every third trial draws from 3 values (ties); every fourth sprinkles NaN and inf. */
        for (size_t i = 0; i < nx; i++) {
            x[i] =
                trial % 3 == 0 ? (float)unet__rng_below(&rng, 3) : 2 * unet__rng_uniform(&rng) - 1;
            if (trial % 4 == 1) {
                uint64_t u = unet__rng_below(&rng, 10);
                if (u == 0)
                    x[i] = NAN;
                else if (u == 1)
                    x[i] = -INFINITY;
                else if (u == 2)
                    x[i] = INFINITY;
            }
        }
        unet__maxpool2_forward(y, a, x, &d);
        unet__maxpool2_forward_ref(y_ref, a_ref, x, &d);
        char label[96];
        snprintf(label, sizeof label, "maxpool N=%d C=%d %dx%d%s%s", d.N, d.C, d.H_in, d.W_in,
                 trial % 3 == 0   ? " ties"
                 : trial % 4 == 1 ? " NaN/inf"
                                  : "",
                 ceil_mode ? " ceil" : "");
        CHECK_TENSOR_NONFINITE(label, y, y_ref, ny, 0, 0);
        CHECK_EQ(count_mismatched_bytes(a, a_ref, ny), 0);
        /* Backward adds dy at the argmax position and nothing elsewhere: against a direct
         * scatter, starting from non-zero dx. */
        float *dy = test_alloc(ny), *dx = test_alloc(nx), *dx_ref = test_alloc(nx);
        fill_uniform(&rng, dy, ny, -1, 1);
        for (size_t i = 0; i < nx; i++)
            dx[i] = dx_ref[i] = 0.5f;
        unet__maxpool2_backward(dx, dy, a, &d);
        for (int p = 0; p < d.N * d.C; p++)
            for (int i = 0; i < d.H_out; i++)
                for (int j = 0; j < d.W_out; j++) {
                    size_t o = ((size_t)p * d.H_out + i) * d.W_out + j;
                    int    ih = 2 * i + a_ref[o] / 2, iw = 2 * j + a_ref[o] % 2;
                    dx_ref[((size_t)p * d.H_in + ih) * d.W_in + iw] += dy[o];
                }
        CHECK_TENSOR("dx", dx, dx_ref, nx, 0, 0);
        free(x), free(y), free(y_ref), free(a), free(a_ref), free(dy), free(dx), free(dx_ref);
    }
}

/* ---- dropout mask: statistics, reproducibility, scale, p = 0 ---- */

static double dropped_fraction(const uint8_t *mask, size_t n) {
    size_t dropped = 0;
    for (size_t i = 0; i < n; i++)
        dropped += mask[i] == 0;
    return (double)dropped / (double)n;
}

TEST(dropout_mask) {
    struct unet__dropout_dims d = {.N = 4, .C = 16, .H = 128, .W = 128, .p = 0.3f};
    const size_t              n = (size_t)d.N * d.C * d.H * d.W;
    float   *x = test_alloc(n), *y = test_alloc(n), *y2 = test_alloc(n), *dy = test_alloc(n);
    float   *dx = test_alloc(n);
    uint8_t *m = malloc(n), *m2 = malloc(n);
    if (!m || !m2) exit(2);
    struct unet__rng rng;
    unet__rng_seed(&rng, 31);
    fill_uniform(&rng, x, n, -1, 1);
    fill_uniform(&rng, dy, n, -1, 1);
    const float scale = 1.0f / (1.0f - d.p);

    /* 2^20 draws: the fraction's standard deviation is sqrt(p (1 - p) / n) = 4.5e-4, so 3e-3
     * is more than six of them. */
    struct unet__rng a, b;
    unet__rng_seed(&a, 7);
    unet__dropout_forward(y, m, x, &d, &a);
    double f = dropped_fraction(m, n);
    printf("       dropout p=%.2f on %zu elements: dropped %.5f\n", d.p, n, f);
    CHECK_CLOSE(f, d.p, 3e-3, 0);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += m[i] ? y[i] != x[i] * scale : y[i] != 0.0f;
    CHECK_EQ(bad, 0);

    unet__rng_seed(&b, 7);
    unet__dropout_forward(y2, m2, x, &d, &b);
    CHECK(memcmp(m, m2, n) == 0);
    CHECK(memcmp(y, y2, sizeof(float) * n) == 0);
    unet__rng_seed(&b, 8);
    unet__dropout_forward(y2, m2, x, &d, &b);
    size_t differ = count_mismatched_bytes(m, m2, n);
    printf("       seeds 7 and 8: %zu of %zu mask bytes differ\n", differ, n);
    CHECK(differ > n / 4); /* independent masks differ in 2 p (1 - p) = 42% of the places */

    /* Backward: dx += dy * scale where kept, unchanged where dropped. */
    for (size_t i = 0; i < n; i++)
        dx[i] = 0.5f;
    unet__dropout_backward(dx, dy, m, &d);
    bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += dx[i] != (m[i] ? 0.5f + dy[i] * scale : 0.5f);
    CHECK_EQ(bad, 0);

    /* Dropout2d: one mask byte per (n, c), whole planes dropped or scaled. */
    struct unet__dropout_dims d2 = {
        .N = 64, .C = 256, .H = 2, .W = 3, .p = 0.5f, .channelwise = true};
    const size_t n2 = (size_t)d2.N * d2.C * d2.H * d2.W, planes = (size_t)d2.N * d2.C;
    unet__dropout_forward(y, m, x, &d2, &a);
    f = dropped_fraction(m, planes);
    printf("       dropout2d p=%.2f on %zu channels: dropped %.5f\n", d2.p, planes, f);
    CHECK_CLOSE(f, d2.p, 0.025, 0); /* sd sqrt(0.25 / 16384) = 3.9e-3 */
    bad = 0;
    for (size_t i = 0; i < n2; i++)
        bad += m[i / 6] ? y[i] != x[i] * 2.0f : y[i] != 0.0f;
    CHECK_EQ(bad, 0);
    for (size_t i = 0; i < n2; i++)
        dx[i] = 0.0f;
    unet__dropout_backward(dx, dy, m, &d2);
    bad = 0;
    for (size_t i = 0; i < n2; i++)
        bad += dx[i] != (m[i / 6] ? dy[i] * 2.0f : 0.0f);
    CHECK_EQ(bad, 0);

    /* p = 0: everything kept, y == x bit for bit, for both kinds. */
    d.p = 0.0f;
    unet__dropout_forward(y, m, x, &d, &a);
    CHECK(dropped_fraction(m, n) == 0.0);
    CHECK(memcmp(y, x, sizeof(float) * n) == 0);
    d2.p = 0.0f;
    unet__dropout_forward(y, m, x, &d2, &a);
    CHECK(dropped_fraction(m, planes) == 0.0);
    CHECK(memcmp(y, x, sizeof(float) * n2) == 0);
    free(x), free(y), free(y2), free(dy), free(dx), free(m), free(m2);
}

int main(void) {
    RUN(pool_relu_dropout_golden);
    RUN(pool_relu_dropout_gradcheck);
    RUN(maxpool_fast_vs_ref);
    RUN(dropout_mask);
    return harness_finish();
}
