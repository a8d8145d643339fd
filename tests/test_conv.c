/* test_conv.c — Conv2d and ConvTranspose2d: PyTorch golden cases, finite-difference gradient
 * checks, the GEMM path against the naive _ref loops (odd sizes, several im2col tiles; the
 * direct convolution and the up-convolution's micro-kernel in every instruction set's copy this
 * CPU has), and the adjoint identity <A x, y> = <x, A^T y> that makes the transposed
 * convolution what it is. */
#include "harness.h"
#include "ops/ops.h"

/* Golden tolerance: float32 GEMM sums of up to ~300 products against an exact reference. */
#define GOLD_ATOL 1e-4
#define GOLD_RTOL 1e-4

static char key_buf[64];
static const char *key(int i, const char *name) {
    snprintf(key_buf, sizeof key_buf, "case%d.%s", i, name);
    return key_buf;
}

TEST(conv2d_golden) {
    struct unet__safetensors *st = golden_open("conv");
    if (!st) return;
    int cases = 0;
    for (int i = 0; unet__st_find(st, key(i, "cfg")); i++, cases++) {
        long long c[9];
        golden_ints(st, key(i, "cfg"), c, 9);
        struct unet__conv2d_dims d = {.N = (int)c[0], .C_in = (int)c[1], .H_in = (int)c[2],
                                      .W_in = (int)c[3], .C_out = (int)c[4], .K_h = (int)c[5],
                                      .K_w = (int)c[5], .stride_h = (int)c[6], .stride_w = (int)c[6],
                                      .pad_h = (int)c[7], .pad_w = (int)c[7]};
        CHECK_STATUS(unet__conv2d_dims_init(NULL, &d, "golden"), UNET_STATUS_OK);
        printf("     case %d: N=%d C_in=%d %dx%d C_out=%d K=%d s=%d p=%d bias=%lld\n", i, d.N,
               d.C_in, d.H_in, d.W_in, d.C_out, d.K_h, d.stride_h, d.pad_h, c[8]);
        size_t nx, nw, ny, nb = 0;
        float *x = golden_get(st, key(i, "x"), &nx), *w = golden_get(st, key(i, "w"), &nw);
        float *r = golden_get(st, key(i, "r"), &ny), *y_ref = golden_get(st, key(i, "y"), NULL);
        float *dx_ref = golden_get(st, key(i, "dx"), NULL), *dw_ref = golden_get(st, key(i, "dw"), NULL);
        float *b = c[8] ? golden_get(st, key(i, "b"), &nb) : NULL;
        float *db_ref = c[8] ? golden_get(st, key(i, "db"), NULL) : NULL;
        CHECK_EQ(ny, (size_t)d.N * d.C_out * d.H_out * d.W_out);
        float *y = test_alloc(ny), *dx = test_alloc(nx), *dw = test_alloc(nw), *db = test_alloc(nb);
        float *scratch = test_alloc(unet__conv2d_scratch_floats(&d));
        unet__conv2d_forward(y, x, w, b, &d, scratch);
        unet__conv2d_backward(dx, dw, b ? db : NULL, r, x, w, &d, NULL, scratch);
        CHECK_TENSOR("y", y, y_ref, ny, GOLD_ATOL, GOLD_RTOL);
        CHECK_TENSOR("dx", dx, dx_ref, nx, GOLD_ATOL, GOLD_RTOL);
        CHECK_TENSOR("dw", dw, dw_ref, nw, GOLD_ATOL, GOLD_RTOL);
        if (b) CHECK_TENSOR("db", db, db_ref, nb, GOLD_ATOL, GOLD_RTOL);
        free(x), free(w), free(r), free(y_ref), free(dx_ref), free(dw_ref), free(b), free(db_ref);
        free(y), free(dx), free(dw), free(db), free(scratch);
    }
    CHECK(cases >= 5);
    unet__st_close(st);
}

TEST(convt2d_golden) {
    struct unet__safetensors *st = golden_open("convt");
    if (!st) return;
    int cases = 0;
    for (int i = 0; unet__st_find(st, key(i, "cfg")); i++, cases++) {
        long long c[10];
        golden_ints(st, key(i, "cfg"), c, 10);
        struct unet__convt2d_dims d = {.N = (int)c[0], .C_in = (int)c[1], .H_in = (int)c[2],
                                       .W_in = (int)c[3], .C_out = (int)c[4], .K_h = (int)c[5],
                                       .K_w = (int)c[5], .stride_h = (int)c[6], .stride_w = (int)c[6],
                                       .pad_h = (int)c[7], .pad_w = (int)c[7],
                                       .outpad_h = (int)c[9], .outpad_w = (int)c[9]};
        CHECK_STATUS(unet__convt2d_dims_init(NULL, &d, "golden"), UNET_STATUS_OK);
        printf("     case %d: N=%d C_in=%d %dx%d C_out=%d K=%d s=%d p=%d op=%d -> %dx%d\n", i, d.N,
               d.C_in, d.H_in, d.W_in, d.C_out, d.K_h, d.stride_h, d.pad_h, d.outpad_h, d.H_out,
               d.W_out);
        size_t nx, nw, ny, nb = 0;
        float *x = golden_get(st, key(i, "x"), &nx), *w = golden_get(st, key(i, "w"), &nw);
        float *r = golden_get(st, key(i, "r"), &ny), *y_ref = golden_get(st, key(i, "y"), NULL);
        float *dx_ref = golden_get(st, key(i, "dx"), NULL), *dw_ref = golden_get(st, key(i, "dw"), NULL);
        float *b = c[8] ? golden_get(st, key(i, "b"), &nb) : NULL;
        float *db_ref = c[8] ? golden_get(st, key(i, "db"), NULL) : NULL;
        CHECK_EQ(ny, (size_t)d.N * d.C_out * d.H_out * d.W_out);
        float *y = test_alloc(ny), *dx = test_alloc(nx), *dw = test_alloc(nw), *db = test_alloc(nb);
        float *scratch = test_alloc(unet__convt2d_scratch_floats(&d));
        unet__convt2d_forward(y, x, w, b, &d, NULL, scratch);
        unet__convt2d_backward(dx, dw, b ? db : NULL, r, x, w, &d, NULL, scratch);
        CHECK_TENSOR("y", y, y_ref, ny, GOLD_ATOL, GOLD_RTOL);
        CHECK_TENSOR("dx", dx, dx_ref, nx, GOLD_ATOL, GOLD_RTOL);
        CHECK_TENSOR("dw", dw, dw_ref, nw, GOLD_ATOL, GOLD_RTOL);
        if (b) CHECK_TENSOR("db", db, db_ref, nb, GOLD_ATOL, GOLD_RTOL);
        free(x), free(w), free(r), free(y_ref), free(dx_ref), free(dw_ref), free(b), free(db_ref);
        free(y), free(dx), free(dw), free(db), free(scratch);
    }
    CHECK(cases >= 5);
    unet__st_close(st);
}

/* ---- gradient checks: L = sum(y * r) ---- */

struct conv_case {
    bool   transpose;
    struct unet__conv2d_dims  c;
    struct unet__convt2d_dims t;
    float *x, *w, *b, *r, *y, *scratch;
    size_t nx, nw, nb, ny;
};

static void cc_forward(struct conv_case *k) {
    if (k->transpose) unet__convt2d_forward(k->y, k->x, k->w, k->b, &k->t, NULL, k->scratch);
    else unet__conv2d_forward(k->y, k->x, k->w, k->b, &k->c, k->scratch);
}

static double cc_loss(void *ud) {
    struct conv_case *k = ud;
    cc_forward(k);
    return dot_double(k->y, k->r, k->ny);
}

static void cc_setup(struct conv_case *k, struct unet__rng *rng) {
    if (k->transpose) {
        UNET_ASSERT(unet__convt2d_dims_init(NULL, &k->t, "t") == UNET_STATUS_OK);
        k->nx = (size_t)k->t.N * k->t.C_in * k->t.H_in * k->t.W_in;
        k->nw = (size_t)k->t.C_in * k->t.C_out * k->t.K_h * k->t.K_w;
        k->nb = (size_t)k->t.C_out;
        k->ny = (size_t)k->t.N * k->t.C_out * k->t.H_out * k->t.W_out;
        k->scratch = test_alloc(unet__convt2d_scratch_floats(&k->t));
    } else {
        UNET_ASSERT(unet__conv2d_dims_init(NULL, &k->c, "c") == UNET_STATUS_OK);
        k->nx = (size_t)k->c.N * k->c.C_in * k->c.H_in * k->c.W_in;
        k->nw = (size_t)k->c.C_out * k->c.C_in * k->c.K_h * k->c.K_w;
        k->nb = (size_t)k->c.C_out;
        k->ny = (size_t)k->c.N * k->c.C_out * k->c.H_out * k->c.W_out;
        k->scratch = test_alloc(unet__conv2d_scratch_floats(&k->c));
    }
    k->x = test_alloc(k->nx), k->w = test_alloc(k->nw), k->b = test_alloc(k->nb);
    k->r = test_alloc(k->ny), k->y = test_alloc(k->ny);
    fill_uniform(rng, k->x, k->nx, -1, 1);
    fill_uniform(rng, k->w, k->nw, -1, 1);
    fill_uniform(rng, k->b, k->nb, -1, 1);
    fill_uniform(rng, k->r, k->ny, -1, 1);
}

static void cc_free(struct conv_case *k) {
    free(k->x), free(k->w), free(k->b), free(k->r), free(k->y), free(k->scratch);
}

static void gradcheck_case(struct conv_case *k, const char *label) {
    float *dx = test_alloc(k->nx), *dw = test_alloc(k->nw), *db = test_alloc(k->nb);
    if (k->transpose) unet__convt2d_backward(dx, dw, db, k->r, k->x, k->w, &k->t, NULL, k->scratch);
    else unet__conv2d_backward(dx, dw, db, k->r, k->x, k->w, &k->c, NULL, k->scratch);
    char what[96];
    /* The loss is linear in each input, so central differences are exact up to float32
     * rounding of the sums: h = 1e-2, tolerance 2e-3 absolute. */
    snprintf(what, sizeof what, "%s dx", label);
    GRADCHECK(what, k->x, dx, k->nx, cc_loss, k, 1e-2f, 2e-3, 1e-3);
    snprintf(what, sizeof what, "%s dw", label);
    GRADCHECK(what, k->w, dw, k->nw, cc_loss, k, 1e-2f, 2e-3, 1e-3);
    snprintf(what, sizeof what, "%s db", label);
    GRADCHECK(what, k->b, db, k->nb, cc_loss, k, 1e-2f, 2e-3, 1e-3);
    free(dx), free(dw), free(db);
}

TEST(conv2d_gradcheck) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 1);
    struct unet__conv2d_dims shapes[] = {
        {.N = 2, .C_in = 3, .H_in = 5, .W_in = 5, .C_out = 2, .K_h = 3, .K_w = 3, .stride_h = 1, .stride_w = 1, .pad_h = 1, .pad_w = 1},
        {.N = 2, .C_in = 3, .H_in = 5, .W_in = 4, .C_out = 2, .K_h = 3, .K_w = 2, .stride_h = 2, .stride_w = 1, .pad_h = 0, .pad_w = 1},
        {.N = 2, .C_in = 3, .H_in = 5, .W_in = 5, .C_out = 4, .K_h = 1, .K_w = 1, .stride_h = 1, .stride_w = 1, .pad_h = 0, .pad_w = 0},
    };
    const char *labels[] = {"conv 3x3 pad1", "conv 3x2 s2x1 p0x1", "conv 1x1"};
    for (int i = 0; i < 3; i++) {
        struct conv_case k = {.transpose = false, .c = shapes[i]};
        cc_setup(&k, &rng);
        gradcheck_case(&k, labels[i]);
        cc_free(&k);
    }
}

TEST(convt2d_gradcheck) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 2);
    struct unet__convt2d_dims shapes[] = {
        {.N = 2, .C_in = 3, .H_in = 5, .W_in = 5, .C_out = 2, .K_h = 2, .K_w = 2, .stride_h = 2, .stride_w = 2},
        {.N = 2, .C_in = 3, .H_in = 3, .W_in = 4, .C_out = 2, .K_h = 4, .K_w = 3, .stride_h = 2, .stride_w = 1, .pad_h = 1, .pad_w = 1, .outpad_h = 1},
    };
    const char *labels[] = {"convT 2x2 s2", "convT 4x3 s2x1 p1 op1"};
    for (int i = 0; i < 2; i++) {
        struct conv_case k = {.transpose = true, .t = shapes[i]};
        cc_setup(&k, &rng);
        gradcheck_case(&k, labels[i]);
        cc_free(&k);
    }
}

/* ---- fast path against the naive loops ---- */

static void fast_vs_ref(struct conv_case *k, const char *label) {
    float *y_ref = test_alloc(k->ny);
    float *dx = test_alloc(k->nx), *dw = test_alloc(k->nw), *db = test_alloc(k->nb);
    float *dx_ref = test_alloc(k->nx), *dw_ref = test_alloc(k->nw), *db_ref = test_alloc(k->nb);
    /* Backward accumulates: start from the same non-zero values on both paths. */
    for (size_t i = 0; i < k->nx; i++) dx[i] = dx_ref[i] = 0.5f;
    for (size_t i = 0; i < k->nw; i++) dw[i] = dw_ref[i] = -0.25f;
    cc_forward(k);
    if (k->transpose) {
        unet__convt2d_forward_ref(y_ref, k->x, k->w, k->b, &k->t);
        unet__convt2d_backward(dx, dw, db, k->r, k->x, k->w, &k->t, NULL, k->scratch);
        unet__convt2d_backward_ref(dx_ref, dw_ref, db_ref, k->r, k->x, k->w, &k->t);
    } else {
        unet__conv2d_forward_ref(y_ref, k->x, k->w, k->b, &k->c);
        unet__conv2d_backward(dx, dw, db, k->r, k->x, k->w, &k->c, NULL, k->scratch);
        unet__conv2d_backward_ref(dx_ref, dw_ref, db_ref, k->r, k->x, k->w, &k->c);
    }
    printf("     %s\n", label);
    /* Sums of up to ~10^4 float32 products in different orders. */
    CHECK_TENSOR("y", k->y, y_ref, k->ny, 1e-3, 1e-3);
    CHECK_TENSOR("dx", dx, dx_ref, k->nx, 1e-3, 1e-3);
    CHECK_TENSOR("dw", dw, dw_ref, k->nw, 2e-3, 1e-3);
    CHECK_TENSOR("db", db, db_ref, k->nb, 2e-3, 1e-3);
    free(y_ref), free(dx), free(dw), free(db), free(dx_ref), free(dw_ref), free(db_ref);
}

TEST(conv2d_fast_vs_ref) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 3);
    for (int trial = 0; trial < 12; trial++) {
        struct conv_case k = {.transpose = false};
        k.c.N = 1 + (int)unet__rng_below(&rng, 3);
        k.c.C_in = 1 + (int)unet__rng_below(&rng, 7);
        k.c.C_out = 1 + (int)unet__rng_below(&rng, 9);
        k.c.K_h = 1 + (int)unet__rng_below(&rng, 4);
        k.c.K_w = 1 + (int)unet__rng_below(&rng, 4);
        k.c.stride_h = 1 + (int)unet__rng_below(&rng, 2);
        k.c.stride_w = 1 + (int)unet__rng_below(&rng, 3);
        k.c.pad_h = (int)unet__rng_below(&rng, 3);
        k.c.pad_w = (int)unet__rng_below(&rng, 3);
        k.c.H_in = k.c.K_h + (int)unet__rng_below(&rng, 20);
        k.c.W_in = k.c.K_w + (int)unet__rng_below(&rng, 20);
        cc_setup(&k, &rng);
        char label[160];
        snprintf(label, sizeof label, "conv N=%d C_in=%d %dx%d C_out=%d K=%dx%d s=%dx%d p=%dx%d",
                 k.c.N, k.c.C_in, k.c.H_in, k.c.W_in, k.c.C_out, k.c.K_h, k.c.K_w, k.c.stride_h,
                 k.c.stride_w, k.c.pad_h, k.c.pad_w);
        fast_vs_ref(&k, label);
        cc_free(&k);
    }
    /* Few input channels, many outputs, stride 1: the direct path (U-Net's first layer), in
     * each instruction set's copy. */
    enum unet__cpu_level       levels[UNET__CPU_LEVELS];
    const int                  n_levels = harness_f32_levels(levels);
    const enum unet__cpu_level cap = unet__cpu_limit(UNET__CPU_TOP);
    for (int trial = 0; trial < 4 * n_levels; trial++) {
        const enum unet__cpu_level level = levels[trial / 4];
        const int                  t = trial % 4;
        unet__cpu_limit(level);
        struct conv_case k = {.transpose = false};
        k.c = (struct unet__conv2d_dims){.N = 1 + t % 2, .C_in = 1 + t, .C_out = 16 + t,
                                         .K_h = 3, .K_w = t == 3 ? 2 : 3, .stride_h = 1,
                                         .stride_w = 1, .pad_h = t % 3, .pad_w = (t + 1) % 3};
        k.c.H_in = 5 + 3 * t, k.c.W_in = 21 - 2 * t;
        cc_setup(&k, &rng);
        char label[160];
        snprintf(label, sizeof label,
                 "conv N=%d C_in=%d %dx%d C_out=%d K=3x%d p=%dx%d (direct, %s)", k.c.N, k.c.C_in,
                 k.c.H_in, k.c.W_in, k.c.C_out, k.c.K_w, k.c.pad_h, k.c.pad_w,
                 unet__cpu_level_name(level));
        fast_vs_ref(&k, label);
        cc_free(&k);
    }
    unet__cpu_limit(cap);
    /* Large enough that im2col runs in several tiles (C_in*9*P > 4M floats), with a tile
     * boundary in the middle of an output row. */
    struct conv_case k = {.transpose = false,
                          .c = {.N = 1, .C_in = 64, .H_in = 97, .W_in = 101, .C_out = 3, .K_h = 3,
                                .K_w = 3, .stride_h = 1, .stride_w = 1, .pad_h = 1, .pad_w = 1}};
    cc_setup(&k, &rng);
    CHECK(unet__conv2d_scratch_floats(&k.c) < (size_t)64 * 9 * 97 * 101);
    fast_vs_ref(&k, "conv 64->3 97x101 (tiled im2col)");
    cc_free(&k);
}

TEST(convt2d_fast_vs_ref) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 4);
    for (int trial = 0; trial < 10; trial++) {
        struct conv_case k = {.transpose = true};
        k.t.N = 1 + (int)unet__rng_below(&rng, 3);
        k.t.C_in = 1 + (int)unet__rng_below(&rng, 7);
        k.t.C_out = 1 + (int)unet__rng_below(&rng, 9);
        k.t.K_h = 1 + (int)unet__rng_below(&rng, 4);
        k.t.K_w = 1 + (int)unet__rng_below(&rng, 4);
        k.t.stride_h = 1 + (int)unet__rng_below(&rng, 3);
        k.t.stride_w = 1 + (int)unet__rng_below(&rng, 3);
        k.t.pad_h = (int)unet__rng_below(&rng, (uint64_t)k.t.K_h);
        k.t.pad_w = (int)unet__rng_below(&rng, (uint64_t)k.t.K_w);
        k.t.outpad_h = (int)unet__rng_below(&rng, (uint64_t)k.t.stride_h);
        k.t.outpad_w = (int)unet__rng_below(&rng, (uint64_t)k.t.stride_w);
        k.t.H_in = 1 + (int)unet__rng_below(&rng, 12);
        k.t.W_in = 1 + (int)unet__rng_below(&rng, 12);
        if (unet__convt2d_dims_init(NULL, &k.t, "t") != UNET_STATUS_OK) {
            trial--;
            continue;
        }
        cc_setup(&k, &rng);
        char label[160];
        snprintf(label, sizeof label,
                 "convT N=%d C_in=%d %dx%d C_out=%d K=%dx%d s=%dx%d p=%dx%d op=%dx%d", k.t.N,
                 k.t.C_in, k.t.H_in, k.t.W_in, k.t.C_out, k.t.K_h, k.t.K_w, k.t.stride_h,
                 k.t.stride_w, k.t.pad_h, k.t.pad_w, k.t.outpad_h, k.t.outpad_w);
        fast_vs_ref(&k, label);
        cc_free(&k);
    }
    /* Kernel == stride without padding: the one-GEMM scatter path (U-Net's up-convolution),
     * with rows that leave a partial last panel of 48 and rows of several panels (101 wide),
     * rows of more panels than a chunk takes (500 wide: 11 panels, chunks of 8 and 3), and a
     * 3x3 / stride-3 and a 2x3 / stride 2x3 kernel. */
    enum { N_SHAPES = 6 };
    const int shapes[N_SHAPES][6] = {{2, 5, 7, 9, 3, 2},   {1, 20, 13, 11, 17, 2},
                                     {1, 4, 5, 6, 6, 3},   {2, 3, 4, 3, 2, 0},
                                     {2, 3, 3, 101, 2, 2}, {1, 3, 2, 500, 2, 2}};
    /* On each instruction set's GEMM micro-kernel. */
    enum unet__cpu_level       levels[UNET__CPU_LEVELS];
    const int                  n_levels = harness_f32_levels(levels);
    const enum unet__cpu_level cap = unet__cpu_limit(UNET__CPU_TOP);
    for (int j = 0; j < N_SHAPES * n_levels; j++) {
        const int i = j % N_SHAPES;
        unet__cpu_limit(levels[j / N_SHAPES]);
        struct conv_case k = {.transpose = true};
        k.t = (struct unet__convt2d_dims){.N = shapes[i][0], .C_in = shapes[i][1],
                                          .H_in = shapes[i][2], .W_in = shapes[i][3],
                                          .C_out = shapes[i][4],
                                          .K_h = shapes[i][5] ? shapes[i][5] : 2,
                                          .K_w = shapes[i][5] ? shapes[i][5] : 3};
        k.t.stride_h = k.t.K_h, k.t.stride_w = k.t.K_w;
        CHECK_STATUS(unet__convt2d_dims_init(NULL, &k.t, "t"), UNET_STATUS_OK);
        cc_setup(&k, &rng);
        char label[160];
        snprintf(label, sizeof label, "convT N=%d C_in=%d %dx%d C_out=%d K=s=%dx%d (scatter, %s)",
                 k.t.N, k.t.C_in, k.t.H_in, k.t.W_in, k.t.C_out, k.t.K_h, k.t.K_w,
                 unet__cpu_level_name(levels[j / N_SHAPES]));
        fast_vs_ref(&k, label);
        cc_free(&k);
    }
    unet__cpu_limit(cap);
}

/* <A x, y> == <x, A^T y>: conv2d's forward and convT's forward are adjoint for the same weight
 * (the identity the code is built on), checked in double precision sums. */
TEST(conv_transpose_is_adjoint) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 5);
    struct unet__convt2d_dims t = {.N = 2, .C_in = 5, .H_in = 6, .W_in = 7, .C_out = 3, .K_h = 3,
                                   .K_w = 3, .stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1,
                                   .outpad_h = 1, .outpad_w = 0};
    CHECK_STATUS(unet__convt2d_dims_init(NULL, &t, "t"), UNET_STATUS_OK);
    struct unet__conv2d_dims c = unet__convt2d_as_conv(&t);
    struct unet__conv2d_dims c2 = c;
    CHECK_STATUS(unet__conv2d_dims_init(NULL, &c2, "c"), UNET_STATUS_OK);
    CHECK_EQ(c2.H_out, t.H_in);
    CHECK_EQ(c2.W_out, t.W_in);
    size_t nu = (size_t)t.N * t.C_out * t.H_out * t.W_out; /* conv input space */
    size_t nv = (size_t)t.N * t.C_in * t.H_in * t.W_in;    /* conv output space */
    size_t nw = (size_t)t.C_in * t.C_out * 9;
    float *u = test_alloc(nu), *v = test_alloc(nv), *w = test_alloc(nw);
    float *Au = test_alloc(nv), *ATv = test_alloc(nu);
    float *scratch = test_alloc(unet__conv2d_scratch_floats(&c) + unet__convt2d_scratch_floats(&t));
    fill_uniform(&rng, u, nu, -1, 1);
    fill_uniform(&rng, v, nv, -1, 1);
    fill_uniform(&rng, w, nw, -1, 1);
    unet__conv2d_forward(Au, u, w, NULL, &c, scratch);
    unet__convt2d_forward(ATv, v, w, NULL, &t, NULL, scratch);
    double lhs = dot_double(Au, v, nv), rhs = dot_double(u, ATv, nu);
    printf("       <Au, v> = %.9g, <u, A^T v> = %.9g\n", lhs, rhs);
    CHECK_CLOSE(lhs, rhs, 1e-3, 1e-5);
    free(u), free(v), free(w), free(Au), free(ATv), free(scratch);
}

TEST(conv2d_bad_dims) {
    unet_ctx *ctx = unet_ctx_create();
    struct unet__conv2d_dims d = {.N = 1, .C_in = 3, .H_in = 2, .W_in = 2, .C_out = 1, .K_h = 3,
                                  .K_w = 3, .stride_h = 1, .stride_w = 1};
    CHECK_STATUS(unet__conv2d_dims_init(ctx, &d, "enc1"), UNET_STATUS_SHAPE);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "enc1");
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "smaller than the 3x3 kernel");
    d.H_in = d.W_in = 5;
    d.stride_h = 0;
    CHECK_STATUS(unet__conv2d_dims_init(ctx, &d, "enc1"), UNET_STATUS_ARG);
    d.stride_h = 1;
    d.H_in = 1 << 20;
    d.W_in = 1 << 20;
    CHECK_STATUS(unet__conv2d_dims_init(ctx, &d, "huge"), UNET_STATUS_ARG);
    struct unet__convt2d_dims t = {.N = 1, .C_in = 1, .H_in = 4, .W_in = 4, .C_out = 1, .K_h = 2,
                                   .K_w = 2, .stride_h = 2, .stride_w = 2, .outpad_h = 2};
    CHECK_STATUS(unet__convt2d_dims_init(ctx, &t, "up1"), UNET_STATUS_ARG);
    unet_ctx_free(ctx);
}

/* The operands of a set-against-accumulate check: x, w, dy random, acc zeros, set NaN. */
struct set_case {
    float *x, *w, *dy, *acc, *set, *scratch;
    size_t nx;
};

static struct set_case set_case_new(struct unet__rng *rng, size_t nx, size_t nw, size_t ny,
                                    size_t scratch) {
    struct set_case c = {.x = test_alloc(nx), .w = test_alloc(nw), .dy = test_alloc(ny),
                         .acc = test_alloc(nx), .set = test_alloc(nx),
                         .scratch = test_alloc(scratch), .nx = nx};
    fill_uniform(rng, c.x, nx, -1.0f, 1.0f);
    fill_uniform(rng, c.w, nw, -0.5f, 0.5f);
    fill_uniform(rng, c.dy, ny, -1.0f, 1.0f);
    for (size_t j = 0; j < nx; j++) c.acc[j] = 0.0f, c.set[j] = NAN;
    return c;
}

/* Elements of set that differ from acc (a NaN never equals). */
static size_t set_case_differ(struct set_case *c) {
    size_t bad = 0;
    for (size_t j = 0; j < c->nx; j++) bad += !(c->set[j] == c->acc[j]);
    free(c->x), free(c->w), free(c->dy), free(c->acc), free(c->set), free(c->scratch);
    return bad;
}

/* unet__conv2d_backward_set: dx set from garbage (NaN, which would show through any read or
 * gap) equals dx accumulated onto zeros, on the Winograd input gradient (each row: float32,
 * and bf16 where the CPU has it; odd sizes, a border) and on the GEMM one (stride 2, and a
 * 3-channel input whose input gradient has too few output channels for Winograd). */
TEST(conv2d_backward_set) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 11);
    const int shapes[3][7] = {/* N, C_in, H, W, C_out, stride, pad */
                              {2, 17, 13, 11, 19, 1, 1},
                              {1, 5, 9, 7, 6, 2, 1},
                              {2, 3, 10, 9, 16, 1, 0}};
    const enum unet__precision precs[2] = {UNET__PRECISION_F32, UNET__PRECISION_BF16};
    for (int i = 0; i < 3; i++)
        for (int p = 0; p < 2; p++) {
            struct unet__conv2d_dims d = {.N = shapes[i][0], .C_in = shapes[i][1],
                                          .H_in = shapes[i][2], .W_in = shapes[i][3],
                                          .C_out = shapes[i][4], .K_h = 3, .K_w = 3,
                                          .stride_h = shapes[i][5], .stride_w = shapes[i][5],
                                          .pad_h = shapes[i][6], .pad_w = shapes[i][6]};
            CHECK_STATUS(unet__conv2d_dims_init(NULL, &d, "set"), UNET_STATUS_OK);
            const size_t nx = (size_t)d.N * d.C_in * d.H_in * d.W_in;
            struct set_case c =
                set_case_new(&rng, nx, (size_t)d.C_out * d.C_in * 9,
                             (size_t)d.N * d.C_out * d.H_out * d.W_out,
                             unet__conv2d_scratch_floats(&d));
            const struct unet__conv_how how = {.k = unet__kernels_for(precs[p])};
            unet__conv2d_backward(c.acc, NULL, NULL, c.dy, c.x, c.w, &d, &how, c.scratch);
            unet__conv2d_backward_set(c.set, true, NULL, NULL, c.dy, c.x, c.w, &d, &how,
                                      c.scratch);
            const size_t bad = set_case_differ(&c);
            printf("     N=%d C_in=%d %dx%d C_out=%d stride %d, %s: %zu of %zu differ\n", d.N,
                   d.C_in, d.H_in, d.W_in, d.C_out, d.stride_h, how.k->name, bad, nx);
            CHECK_EQ(bad, 0);
        }
}

/* unet__convt2d_backward_set: the same for the up-convolution's input gradient, on the scatter
 * case (2x2 stride 2: the micro-kernel's panels on a bf16 row, OpenBLAS on float32; odd sizes,
 * a last panel of a few pixels) and on a 4x4 stride-2 padded one (the GEMMs of gemm.c). */
TEST(convt2d_backward_set) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 12);
    const int shapes[3][6] = {/* N, C_in, H, W, C_out, K (= 2 stride; 4: stride 2, pad 1) */
                              {2, 19, 7, 9, 5, 2},
                              {3, 40, 5, 11, 24, 2},
                              {2, 6, 5, 7, 4, 4}};
    const enum unet__precision precs[2] = {UNET__PRECISION_F32, UNET__PRECISION_BF16};
    for (int i = 0; i < 3; i++)
        for (int p = 0; p < 2; p++) {
            const int *s = shapes[i];
            struct unet__convt2d_dims d = {.N = s[0], .C_in = s[1], .H_in = s[2], .W_in = s[3],
                                           .C_out = s[4], .K_h = s[5], .K_w = s[5],
                                           .stride_h = 2, .stride_w = 2,
                                           .pad_h = s[5] == 4, .pad_w = s[5] == 4};
            CHECK_STATUS(unet__convt2d_dims_init(NULL, &d, "set"), UNET_STATUS_OK);
            const size_t nx = (size_t)d.N * d.C_in * d.H_in * d.W_in;
            struct set_case c =
                set_case_new(&rng, nx, (size_t)d.C_in * d.C_out * d.K_h * d.K_w,
                             (size_t)d.N * d.C_out * d.H_out * d.W_out,
                             unet__convt2d_scratch_floats(&d));
            const struct unet__conv_how how = {.k = unet__kernels_for(precs[p])};
            unet__convt2d_backward(c.acc, NULL, NULL, c.dy, c.x, c.w, &d, &how, c.scratch);
            unet__convt2d_backward_set(c.set, true, NULL, NULL, c.dy, c.x, c.w, &d, &how,
                                       c.scratch);
            const size_t bad = set_case_differ(&c);
            printf("     convT N=%d C_in=%d %dx%d C_out=%d K=%d, %s%s: %zu of %zu differ\n", d.N,
                   d.C_in, d.H_in, d.W_in, d.C_out, d.K_h, how.k->name,
                   unet__convt2d_backward_packed(&d, how.k) ? " (scatter)" : "", bad, nx);
            CHECK_EQ(bad, 0);
        }
}

TEST(gemm_vs_ref) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 6);
    for (int trial = 0; trial < 16; trial++) {
        int M = 1 + (int)unet__rng_below(&rng, 70), N = 1 + (int)unet__rng_below(&rng, 300);
        int K = 1 + (int)unet__rng_below(&rng, 90);
        bool ta = unet__rng_below(&rng, 2), tb = unet__rng_below(&rng, 2);
        if (trial == 15) M = 257, N = 1031, K = 67; /* big enough to split over threads */
        float beta = (trial % 3) ? 1.0f : 0.0f;
        int lda = ta ? M : K, ldb = tb ? K : N;
        float *A = test_alloc((size_t)M * K), *B = test_alloc((size_t)K * N);
        float *C = test_alloc((size_t)M * N), *C_ref = test_alloc((size_t)M * N);
        fill_uniform(&rng, A, (size_t)M * K, -1, 1);
        fill_uniform(&rng, B, (size_t)K * N, -1, 1);
        fill_uniform(&rng, C, (size_t)M * N, -1, 1);
        memcpy(C_ref, C, sizeof(float) * (size_t)M * N);
        unet__sgemm(ta, tb, M, N, K, 0.5f, A, lda, B, ldb, beta, C, N);
        unet__sgemm_ref(ta, tb, M, N, K, 0.5f, A, lda, B, ldb, beta, C_ref, N);
        char label[96];
        snprintf(label, sizeof label, "gemm %c%c M=%d N=%d K=%d beta=%g", ta ? 'T' : 'N',
                 tb ? 'T' : 'N', M, N, K, beta);
        CHECK_TENSOR(label, C, C_ref, (size_t)M * N, 1e-4, 1e-4);
        free(A), free(B), free(C), free(C_ref);
    }
}

/* The same bits for 1 and 2 threads (and the serial call below the split), whatever kernel
 * OpenBLAS picks: its AVX2 sgemm (OPENBLAS_CORETYPE=Haswell) sums edge columns in another
 * order, so blocks that start where the thread count puts them changed the last bits.  Odd
 * sizes, both split directions, both transposes. */
TEST(gemm_thread_count_invariant) {
#ifdef _OPENMP
    struct unet__rng rng;
    unet__rng_seed(&rng, 7);
    const int team = omp_get_max_threads();
    const int sizes[4][3] = {{257, 1031, 67}, {5, 4099, 37}, {1031, 70, 129}, {33, 2000, 200}};
    for (int i = 0; i < 4; i++) {
        const int M = sizes[i][0], N = sizes[i][1], K = sizes[i][2];
        const bool ta = i % 2, tb = i / 2;
        const int lda = ta ? M : K, ldb = tb ? K : N;
        float *A = test_alloc((size_t)M * K), *B = test_alloc((size_t)K * N), *C[3];
        fill_uniform(&rng, A, (size_t)M * K, -1, 1);
        fill_uniform(&rng, B, (size_t)K * N, -1, 1);
        for (int t = 0; t < 3; t++) {
            C[t] = test_alloc((size_t)M * N);
            unet__use_threads(t == 2 ? 3 : t + 1);
            unet__sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C[t], N);
        }
        unet__use_threads(team);
        printf("     gemm %c%c M=%d N=%d K=%d: 1, 2 and 3 threads\n", ta ? 'T' : 'N',
               tb ? 'T' : 'N', M, N, K);
        CHECK(memcmp(C[0], C[1], sizeof(float) * (size_t)M * N) == 0);
        CHECK(memcmp(C[0], C[2], sizeof(float) * (size_t)M * N) == 0);
        free(A), free(B), free(C[0]), free(C[1]), free(C[2]);
    }
#endif
}

/* The 2x2 up-convolution's GEMM on the bf16 row: each output is b + sum over ci of x w with both
 * rounded to bf16, each product within 2^-7 (1 + 2^-8) of its value (test_winograd.c derives
 * it), summed in float32: |y - ref| <= 2^-7 (1 + 2^-8) S + float32 slack, S = the same
 * transposed convolution of |x| and |w|.  Odd channel counts leave half-empty words; a 101-wide
 * row runs several panels.  With the bf16 row off (UNET_CPU cap), the float32 bits. */
TEST(convt_scatter_bf16) {
    const struct unet__kernels *bf = unet__kernels_pick(UNET__PRECISION_BF16);
    if (!bf) {
        printf("     this CPU has no AVX512_BF16: nothing to run here\n");
        return;
    }
    struct unet__rng rng;
    unet__rng_seed(&rng, 8);
    const int shapes[4][5] = {{2, 5, 7, 9, 3}, {1, 20, 13, 11, 17}, {2, 64, 6, 101, 32},
                              {1, 33, 4, 5, 8}};
    for (int i = 0; i < 4; i++) {
        struct conv_case k = {.transpose = true};
        k.t = (struct unet__convt2d_dims){.N = shapes[i][0], .C_in = shapes[i][1],
                                          .H_in = shapes[i][2], .W_in = shapes[i][3],
                                          .C_out = shapes[i][4], .K_h = 2, .K_w = 2,
                                          .stride_h = 2, .stride_w = 2};
        cc_setup(&k, &rng);
        float *ref = test_alloc(k.ny), *S = test_alloc(k.ny), *f32 = test_alloc(k.ny);
        float *ax = test_alloc(k.nx), *aw = test_alloc(k.nw);
        for (size_t j = 0; j < k.nx; j++) ax[j] = fabsf(k.x[j]);
        for (size_t j = 0; j < k.nw; j++) aw[j] = fabsf(k.w[j]);
        const struct unet__conv_how how = {.k = bf};
        unet__convt2d_forward(k.y, k.x, k.w, k.b, &k.t, &how, k.scratch);
        unet__convt2d_forward(f32, k.x, k.w, k.b, &k.t, NULL, k.scratch);
        unet__convt2d_forward_ref(ref, k.x, k.w, k.b, &k.t);
        unet__convt2d_forward_ref(S, ax, aw, NULL, &k.t);
        double used = 0.0, err = 0.0;
        size_t bad = 0;
        for (size_t j = 0; j < k.ny; j++) {
            const double e = fabs((double)k.y[j] - ref[j]);
            const double bound = ldexp(1.0, -7) * (1.0 + ldexp(1.0, -8)) * S[j] + 1e-5 * (S[j] + 1);
            bad += e > bound;
            used = fmax(used, e / bound);
            err = fmax(err, fabs((double)f32[j] - ref[j]));
        }
        printf("     convT N=%d C_in=%d %dx%d C_out=%d: bf16 within %.0f%% of its bound; float32 "
               "error %.1e\n", k.t.N, k.t.C_in, k.t.H_in, k.t.W_in, k.t.C_out, 100 * used, err);
        CHECK_EQ(bad, 0);
        CHECK(used > 0.01); /* rounded to bf16, not float32 */
        /* Capped below AVX512_BF16, a bf16 request runs the float32 row: the same bits. */
        const enum unet__cpu_level cap = unet__cpu_limit(UNET__CPU_AVX512);
        const struct unet__conv_how fallback = {.k = unet__kernels_for(UNET__PRECISION_BF16)};
        unet__convt2d_forward(k.y, k.x, k.w, k.b, &k.t, &fallback, k.scratch);
        unet__cpu_limit(cap);
        CHECK(memcmp(k.y, f32, k.ny * sizeof(float)) == 0);
        free(ref), free(S), free(f32), free(ax), free(aw);
        cc_free(&k);
    }
}

/* ---- the scatter case's backward on the micro-kernel (unet__convt2d_backward_scatter) ---- */

/* How far got is from ref within e <= rel S + slack (S + 1), S the same gradient of |x|, |w|,
 * |dy|: counts the elements outside, returns the largest e / bound. */
static double within(const char *what, const float *got, const float *ref, const float *S,
                     size_t n, double rel, double slack, size_t *bad) {
    double used = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double e = fabs((double)got[i] - ref[i]);
        const double bound = rel * S[i] + slack * (S[i] + 1.0);
        if (!(e <= bound) && (*bad)++ < 3)
            printf("  %s[%zu]: got %.9g, want %.9g (bound %.3g)\n", what, i, got[i], ref[i], bound);
        used = fmax(used, e / bound);
    }
    return used;
}

/* One backward of k's case: dx, dw from the same non-zero start (backward accumulates). */
static void scatter_backward(float *dx, float *dw, const struct conv_case *k,
                             const struct unet__kernels *row, const float *x, const float *w,
                             const float *dy) {
    for (size_t i = 0; i < k->nx; i++) dx[i] = 0.5f;
    for (size_t i = 0; i < k->nw; i++) dw[i] = -0.25f;
    if (row) unet__convt2d_backward_scatter(dx, dw, dy, x, w, &k->t, row, k->scratch);
    else unet__convt2d_backward_ref(dx, dw, NULL, dy, x, w, &k->t);
}

static float bf16_round(float v) {
    return unet__bf16_float(unet__bf16_bits(v));
}

/* Against the naive loops: every float32 row's copy to float32 sums' accuracy (e <= 1e-5 (S +
 * 1)), the bf16 row to the naive loops on the inputs rounded to bf16 with that same float32
 * bound (bf16 products are exact in float32) and to the unrounded ones within the bound of
 * convt_scatter_bf16, 2^-7 (1 + 2^-8) S.  Odd channel counts (a lone last value in a bf16
 * pair of input channels or of R), R past one 48-wide panel, images of several pixel chunks
 * with an odd last one, 3x3 and 2x1 kernels.  unet__convt2d_backward takes this path for a bf16
 * row (the same bits), for any thread count (the same bits), and keeps the float32 GEMMs for
 * float32 rows, a capped-off bf16 request included (the float32 bits). */
TEST(convt_scatter_backward) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 9);
    const int shapes[5][7] = {{2, 5, 7, 9, 3, 2, 2},      {3, 33, 5, 13, 17, 2, 2},
                              {2, 37, 11, 101, 13, 2, 2}, {1, 9, 4, 5, 5, 3, 3},
                              {2, 7, 6, 10, 3, 2, 1}};
    const struct unet__kernels *bf = unet__kernels_pick(UNET__PRECISION_BF16);
    enum unet__cpu_level        levels[UNET__CPU_LEVELS];
    const int                   n_levels = harness_f32_levels(levels);
    for (int i = 0; i < 5; i++) {
        const int *s = shapes[i];
        struct conv_case k = {.transpose = true};
        k.t = (struct unet__convt2d_dims){.N = s[0], .C_in = s[1], .H_in = s[2], .W_in = s[3],
                                          .C_out = s[4], .K_h = s[5], .K_w = s[6],
                                          .stride_h = s[5], .stride_w = s[6]};
        cc_setup(&k, &rng);
        printf("     convT N=%d C_in=%d %dx%d C_out=%d K=s=%dx%d\n", s[0], s[1], s[2], s[3], s[4],
               s[5], s[6]);
        float *dx = test_alloc(k.nx), *dw = test_alloc(k.nw);
        float *dx_ref = test_alloc(k.nx), *dw_ref = test_alloc(k.nw);
        float *dx_S = test_alloc(k.nx), *dw_S = test_alloc(k.nw);
        float *ax = test_alloc(k.nx), *aw = test_alloc(k.nw), *ady = test_alloc(k.ny);
        for (size_t j = 0; j < k.nx; j++) ax[j] = fabsf(k.x[j]);
        for (size_t j = 0; j < k.nw; j++) aw[j] = fabsf(k.w[j]);
        for (size_t j = 0; j < k.ny; j++) ady[j] = fabsf(k.r[j]);
        unet__convt2d_backward_ref(dx_S, dw_S, NULL, ady, ax, aw, &k.t);
        scatter_backward(dx_ref, dw_ref, &k, NULL, k.x, k.w, k.r);
        size_t bad = 0;
        const enum unet__cpu_level cap = unet__cpu_limit(UNET__CPU_TOP);
        for (int l = 0; l < n_levels; l++) {
            unet__cpu_limit(levels[l]);
            const struct unet__kernels *f32 = unet__kernels_pick(UNET__PRECISION_F32);
            scatter_backward(dx, dw, &k, f32, k.x, k.w, k.r);
            const double ux = within("dx", dx, dx_ref, dx_S, k.nx, 0.0, 1e-5, &bad);
            const double uw = within("dw", dw, dw_ref, dw_S, k.nw, 0.0, 1e-5, &bad);
            printf("       %-15s dx, dw within %.0f%%, %.0f%% of the float32 bound\n", f32->name,
                   100 * ux, 100 * uw);
            CHECK(!unet__convt2d_backward_packed(&k.t, f32));
        }
        unet__cpu_limit(cap);
        CHECK_EQ(bad, 0);
        if (bf) {
            /* The naive loops on the inputs rounded to bf16. */
            float *rx = test_alloc(k.nx), *rw = test_alloc(k.nw), *rdy = test_alloc(k.ny);
            float *dx_r = test_alloc(k.nx), *dw_r = test_alloc(k.nw);
            for (size_t j = 0; j < k.nx; j++) rx[j] = bf16_round(k.x[j]);
            for (size_t j = 0; j < k.nw; j++) rw[j] = bf16_round(k.w[j]);
            for (size_t j = 0; j < k.ny; j++) rdy[j] = bf16_round(k.r[j]);
            scatter_backward(dx_r, dw_r, &k, NULL, rx, rw, rdy);
            unet__use_threads(1);
            scatter_backward(dx, dw, &k, bf, k.x, k.w, k.r);
            const double rx_u = within("dx", dx, dx_r, dx_S, k.nx, 0.0, 1e-5, &bad);
            const double rw_u = within("dw", dw, dw_r, dw_S, k.nw, 0.0, 1e-5, &bad);
            const double bound = ldexp(1.0, -7) * (1.0 + ldexp(1.0, -8));
            const double ux = within("dx", dx, dx_ref, dx_S, k.nx, bound, 1e-5, &bad);
            const double uw = within("dw", dw, dw_ref, dw_S, k.nw, bound, 1e-5, &bad);
            printf("       %-15s dx, dw within %.0f%%, %.0f%% of the float32 bound on bf16 inputs, "
                   "%.0f%%, %.0f%% of the bf16 bound\n", bf->name, 100 * rx_u, 100 * rw_u,
                   100 * ux, 100 * uw);
            CHECK_EQ(bad, 0);
            /* Rounded to bf16 (far from the float32 result), not float32. */
            CHECK(ux > 0.01 && uw > 0.01);
            /* Two threads, and unet__convt2d_backward with the bf16 row: the same bits. */
            float *dx2 = test_alloc(k.nx), *dw2 = test_alloc(k.nw);
            unet__use_threads(2);
            scatter_backward(dx2, dw2, &k, bf, k.x, k.w, k.r);
            CHECK(memcmp(dx, dx2, k.nx * sizeof(float)) == 0);
            CHECK(memcmp(dw, dw2, k.nw * sizeof(float)) == 0);
            unet__use_threads(unet__default_threads());
            CHECK(unet__convt2d_backward_packed(&k.t, bf));
            const struct unet__conv_how how = {.k = bf};
            for (size_t j = 0; j < k.nx; j++) dx2[j] = 0.5f;
            for (size_t j = 0; j < k.nw; j++) dw2[j] = -0.25f;
            unet__convt2d_backward(dx2, dw2, NULL, k.r, k.x, k.w, &k.t, &how, k.scratch);
            CHECK(memcmp(dx, dx2, k.nx * sizeof(float)) == 0);
            CHECK(memcmp(dw, dw2, k.nw * sizeof(float)) == 0);
            /* Capped below AVX512_BF16, a bf16 request runs the float32 GEMMs: their bits. */
            const enum unet__cpu_level top = unet__cpu_limit(UNET__CPU_AVX512);
            const struct unet__conv_how fallback = {.k = unet__kernels_for(UNET__PRECISION_BF16)};
            CHECK(!unet__convt2d_backward_packed(&k.t, fallback.k));
            for (size_t j = 0; j < k.nx; j++) dx[j] = dx2[j] = 0.5f;
            for (size_t j = 0; j < k.nw; j++) dw[j] = dw2[j] = -0.25f;
            unet__convt2d_backward(dx, dw, NULL, k.r, k.x, k.w, &k.t, &fallback, k.scratch);
            unet__convt2d_backward(dx2, dw2, NULL, k.r, k.x, k.w, &k.t, NULL, k.scratch);
            unet__cpu_limit(top);
            CHECK(memcmp(dx, dx2, k.nx * sizeof(float)) == 0);
            CHECK(memcmp(dw, dw2, k.nw * sizeof(float)) == 0);
            free(rx), free(rw), free(rdy), free(dx_r), free(dw_r), free(dx2), free(dw2);
        }
        free(dx), free(dw), free(dx_ref), free(dw_ref), free(dx_S), free(dw_S);
        free(ax), free(aw), free(ady);
        cc_free(&k);
    }
    if (!bf) printf("     this CPU has no AVX512_BF16: the float32 rows only\n");
}

int main(void) {
    RUN(gemm_vs_ref);
    RUN(gemm_thread_count_invariant);
    RUN(conv2d_golden);
    RUN(convt2d_golden);
    RUN(conv2d_gradcheck);
    RUN(convt2d_gradcheck);
    RUN(conv2d_fast_vs_ref);
    RUN(convt2d_fast_vs_ref);
    RUN(convt_scatter_bf16);
    RUN(convt_scatter_backward);
    RUN(conv2d_backward_set);
    RUN(convt2d_backward_set);
    RUN(conv_transpose_is_adjoint);
    RUN(conv2d_bad_dims);
    return harness_finish();
}
