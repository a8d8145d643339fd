/* test_upsample_concat.c — bilinear upsampling and the skip-connection ops (concat with crop or
 * pad, FCN's crop-and-add, crop alone): PyTorch golden cases (tools/golden/upsample_concat.py),
 * finite-difference gradient checks, fast paths against the naive definitions on odd sizes, and
 * the centre offsets of unet__place_center against the formulas of the code they port. */
#include "harness.h"
#include "ops/ops.h"

/* Bilinear golden tolerance.  The reference is float64; unet computes the source coordinate and
 * lambda in float32 (as PyTorch's float kernel does).  src < 16 in these cases, so lambda is off
 * by at most ulp(16) = 2^-19 ~ 2e-6, times |x1 - x0| < 8 for randn inputs: 1.5e-5, plus a few
 * float32 roundings of the O(1) products.  The gradients are the same products with dy.
 * (Seen: 1.6e-6; PyTorch's own float32 kernel is 1.2e-6 from this reference.) */
#define UP_ATOL 2e-5
#define UP_RTOL 1e-5
/* Concat, crop and pad copy values; a + place(b) is one float32 addition, which is the float64
 * sum rounded once: all of them are exact. */
#define COPY_ATOL 0.0
#define COPY_RTOL 0.0

enum { KIND_UPSAMPLE = 0, KIND_CONCAT = 1, KIND_ADD = 2, KIND_CROP = 3 };

static char key_buf[64];
static const char *key(int i, const char *name) {
    snprintf(key_buf, sizeof key_buf, "case%d.%s", i, name);
    return key_buf;
}

/* The kind of golden case i, or -1 past the last case. */
static int case_kind(const struct unet__safetensors *st, int i, long long *cfg, int max) {
    if (!unet__st_find(st, key(i, "cfg"))) return -1;
    golden_ints(st, key(i, "cfg"), cfg, max);
    return (int)cfg[0];
}

/* ---------------------------------------------------------------------------------------
 * Bilinear upsampling
 * ------------------------------------------------------------------------------------- */

TEST(upsample_golden) {
    struct unet__safetensors *st = golden_open("upsample_concat");
    if (!st) return;
    int cases = 0;
    long long c[16];
    for (int i = 0, kind; (kind = case_kind(st, i, c, 16)) >= 0; i++) {
        if (kind != KIND_UPSAMPLE) continue;
        cases++;
        struct unet__upsample_dims d = {.N = (int)c[1], .C = (int)c[2], .H_in = (int)c[3],
                                        .W_in = (int)c[4], .H_out = (int)c[5], .W_out = (int)c[6],
                                        .align_corners = c[7] != 0};
        printf("     case %d: N=%d C=%d %dx%d -> %dx%d align_corners=%d\n", i, d.N, d.C, d.H_in,
               d.W_in, d.H_out, d.W_out, (int)d.align_corners);
        size_t nx, ny;
        float *x = golden_get(st, key(i, "x"), &nx), *r = golden_get(st, key(i, "r"), &ny);
        float *y_ref = golden_get(st, key(i, "y"), NULL), *dx_ref = golden_get(st, key(i, "dx"), NULL);
        CHECK_EQ(nx, (size_t)d.N * d.C * d.H_in * d.W_in);
        CHECK_EQ(ny, (size_t)d.N * d.C * d.H_out * d.W_out);
        float *y = test_alloc(ny), *dx = test_alloc(nx), *y2 = test_alloc(ny), *dx2 = test_alloc(nx);
        unet__upsample_bilinear_forward(y, x, &d);
        unet__upsample_bilinear_backward(dx, r, &d);
        unet__upsample_bilinear_forward_ref(y2, x, &d);
        unet__upsample_bilinear_backward_ref(dx2, r, &d);
        CHECK_TENSOR("y", y, y_ref, ny, UP_ATOL, UP_RTOL);
        CHECK_TENSOR("dx", dx, dx_ref, nx, UP_ATOL, UP_RTOL);
        CHECK_TENSOR("y (ref)", y2, y_ref, ny, UP_ATOL, UP_RTOL);
        CHECK_TENSOR("dx (ref)", dx2, dx_ref, nx, UP_ATOL, UP_RTOL);
        free(x), free(r), free(y_ref), free(dx_ref), free(y), free(dx), free(y2), free(dx2);
    }
    CHECK(cases >= 10);
    unet__st_close(st);
}

/* Hand-checked values: 2x with align_corners true maps output j to j * (in - 1) / (out - 1);
 * false maps it to (j + 0.5) / 2 - 0.5, clamped at 0; output 1 takes the first pixel (true)
 * or the centre (false). */
TEST(upsample_known_values) {
    const float x[3] = {0.0f, 1.0f, 4.0f}; /* one 1x3 row */
    float y[6];
    struct unet__upsample_dims d = {.N = 1, .C = 1, .H_in = 1, .W_in = 3, .H_out = 1, .W_out = 6,
                                    .align_corners = true};
    unet__upsample_bilinear_forward(y, x, &d);
    /* src = 0, 0.4, 0.8, 1.2, 1.6, 2 */
    const float want_ac[6] = {0.0f, 0.4f, 0.8f, 1.6f, 2.8f, 4.0f};
    CHECK_TENSOR("1x3 -> 1x6 align_corners", y, want_ac, 6, 1e-6, 1e-6);
    d.align_corners = false;
    unet__upsample_bilinear_forward(y, x, &d);
    /* src = 0 (clamped from -0.25), 0.25, 0.75, 1.25, 1.75, 2.25 (i0 = i1 = the last pixel) */
    const float want[6] = {0.0f, 0.25f, 0.75f, 1.75f, 3.25f, 4.0f};
    CHECK_TENSOR("1x3 -> 1x6", y, want, 6, 1e-6, 1e-6);
    d.W_out = 1;
    unet__upsample_bilinear_forward(y, x, &d);
    CHECK_CLOSE(y[0], 1.0f, 0, 0); /* centre: src = 3 * 0.5 - 0.5 = 1 */
    d.align_corners = true;
    unet__upsample_bilinear_forward(y, x, &d);
    CHECK_CLOSE(y[0], 0.0f, 0, 0); /* scale 0: the first pixel */
}

struct up_case {
    struct unet__upsample_dims d;
    float *x, *r, *y;
    size_t nx, ny;
};

static double up_loss(void *ud) {
    struct up_case *k = ud;
    unet__upsample_bilinear_forward(k->y, k->x, &k->d);
    return dot_double(k->y, k->r, k->ny);
}

static void up_setup(struct up_case *k, struct unet__rng *rng) {
    k->nx = (size_t)k->d.N * k->d.C * k->d.H_in * k->d.W_in;
    k->ny = (size_t)k->d.N * k->d.C * k->d.H_out * k->d.W_out;
    k->x = test_alloc(k->nx), k->r = test_alloc(k->ny), k->y = test_alloc(k->ny);
    fill_uniform(rng, k->x, k->nx, -1, 1);
    fill_uniform(rng, k->r, k->ny, -1, 1);
}

static void up_free(struct up_case *k) {
    free(k->x), free(k->r), free(k->y);
}

TEST(upsample_gradcheck) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 11);
    const int shapes[][5] = {
        /* H_in W_in H_out W_out align_corners */
        {5, 5, 10, 10, 1}, /* U-Net's 2x */
        {5, 3, 10, 6, 0},
        {4, 5, 7, 9, 1},
        {4, 5, 7, 9, 0},
        {5, 4, 1, 3, 0}, /* output 1 */
        {7, 5, 3, 4, 1}, /* downsampling: some inputs get no gradient */
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        struct up_case k = {.d = {.N = 2, .C = 3, .H_in = shapes[s][0], .W_in = shapes[s][1],
                                  .H_out = shapes[s][2], .W_out = shapes[s][3],
                                  .align_corners = shapes[s][4] != 0}};
        up_setup(&k, &rng);
        float *dx = test_alloc(k.nx);
        unet__upsample_bilinear_backward(dx, k.r, &k.d);
        char what[96];
        snprintf(what, sizeof what, "upsample %dx%d->%dx%d ac=%d dx", k.d.H_in, k.d.W_in, k.d.H_out,
                 k.d.W_out, (int)k.d.align_corners);
        /* The loss is linear in x: central differences are exact up to the float32 rounding of
         * y, ~1e-7 per term over ~100 terms, divided by 2h = 2e-2. */
        GRADCHECK(what, k.x, dx, k.nx, up_loss, &k, 1e-2f, 1e-4, 1e-4);
        free(dx);
        up_free(&k);
    }
}

static void up_fast_vs_ref(struct up_case *k) {
    float *y_ref = test_alloc(k->ny), *dx = test_alloc(k->nx), *dx_ref = test_alloc(k->nx);
    /* Backward accumulates: start both from the same non-zero values. */
    for (size_t i = 0; i < k->nx; i++) dx[i] = dx_ref[i] = 0.5f;
    unet__upsample_bilinear_forward(k->y, k->x, &k->d);
    unet__upsample_bilinear_forward_ref(y_ref, k->x, &k->d);
    unet__upsample_bilinear_backward(dx, k->r, &k->d);
    unet__upsample_bilinear_backward_ref(dx_ref, k->r, &k->d);
    printf("     N=%d C=%d %dx%d -> %dx%d align_corners=%d\n", k->d.N, k->d.C, k->d.H_in,
           k->d.W_in, k->d.H_out, k->d.W_out, (int)k->d.align_corners);
    /* The same float32 operations in the same order (backward keeps the row-major scatter
     * order); the slack only allows a compiler to contract them into FMAs differently. */
    CHECK_TENSOR("y", k->y, y_ref, k->ny, 1e-6, 1e-6);
    CHECK_TENSOR("dx", dx, dx_ref, k->nx, 1e-6, 1e-6);
    free(y_ref), free(dx), free(dx_ref);
}

TEST(upsample_fast_vs_ref) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 12);
    for (int trial = 0; trial < 12; trial++) {
        struct up_case k = {.d = {.N = 1 + (int)unet__rng_below(&rng, 2),
                                  .C = 1 + (int)unet__rng_below(&rng, 4),
                                  .H_in = 1 + (int)unet__rng_below(&rng, 13),
                                  .W_in = 1 + (int)unet__rng_below(&rng, 13),
                                  .align_corners = trial % 2 == 0}};
        /* Mostly 2x (+1 for odd sizes), sometimes any size, including smaller. */
        if (trial % 3 == 0) {
            k.d.H_out = 1 + (int)unet__rng_below(&rng, 30);
            k.d.W_out = 1 + (int)unet__rng_below(&rng, 30);
        } else {
            k.d.H_out = 2 * k.d.H_in + (int)unet__rng_below(&rng, 2);
            k.d.W_out = 2 * k.d.W_in + (int)unet__rng_below(&rng, 2);
        }
        up_setup(&k, &rng);
        up_fast_vs_ref(&k);
        up_free(&k);
    }
    /* Wider than the tap tile (512 columns): several tiles, one of them partial. */
    struct up_case k = {.d = {.N = 1, .C = 3, .H_in = 3, .W_in = 301, .H_out = 7, .W_out = 1103,
                              .align_corners = false}};
    up_setup(&k, &rng);
    up_fast_vs_ref(&k);
    up_free(&k);
    k.d.align_corners = true;
    up_setup(&k, &rng);
    up_fast_vs_ref(&k);
    up_free(&k);
}

/* The scatter-add splits planes over threads: the result is bit-identical for any count. */
TEST(upsample_thread_independent) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 13);
    struct up_case k = {.d = {.N = 2, .C = 5, .H_in = 9, .W_in = 7, .H_out = 17, .W_out = 15,
                              .align_corners = true}};
    up_setup(&k, &rng);
    float *dx1 = test_alloc(k.nx), *dx4 = test_alloc(k.nx), *y4 = test_alloc(k.ny);
    unet__use_threads(1);
    unet__upsample_bilinear_forward(k.y, k.x, &k.d);
    unet__upsample_bilinear_backward(dx1, k.r, &k.d);
    unet__use_threads(4);
    unet__upsample_bilinear_forward(y4, k.x, &k.d);
    unet__upsample_bilinear_backward(dx4, k.r, &k.d);
    unet__use_threads(unet__default_threads());
    CHECK(memcmp(k.y, y4, sizeof(float) * k.ny) == 0);
    CHECK(memcmp(dx1, dx4, sizeof(float) * k.nx) == 0);
    unet__upsample_bilinear_backward(NULL, k.r, &k.d); /* a NULL gradient is skipped */
    unet__upsample_bilinear_backward_ref(NULL, k.r, &k.d);
    free(dx1), free(dx4), free(y4);
    up_free(&k);
}

/* ---------------------------------------------------------------------------------------
 * Placement: centre offsets
 * ------------------------------------------------------------------------------------- */

TEST(place_center_offsets) {
    /* in, out, want: crop starts at (in - out) // 2; pad puts (out - in) // 2 zeros first,
     * i.e. F.pad(x, [diff // 2, diff - diff // 2]) in milesial/Pytorch-UNet. */
    const int t[][3] = {{7, 4, 1}, {8, 4, 2}, {9, 4, 2}, {4, 7, -1}, {4, 8, -2}, {4, 9, -2},
                        {5, 5, 0}, {1, 2, 0}, {2, 1, 0}, {572, 388, 92}, {64, 57, 3}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        struct unet__place p;
        unet__place_center(&p, 3, t[i][0], 10, t[i][1], 10);
        CHECK_EQ(p.off_h, t[i][2]);
        CHECK_EQ(p.off_w, 0);
        unet__place_center(&p, 3, 10, t[i][0], 10, t[i][1]);
        CHECK_EQ(p.off_w, t[i][2]);
        CHECK_EQ(p.off_h, 0);
    }
    /* Each dimension on its own: crop rows, pad columns. */
    struct unet__place p;
    unet__place_center(&p, 6, 9, 4, 6, 9);
    CHECK_EQ(p.C, 6);
    CHECK_EQ(p.H, 9);
    CHECK_EQ(p.W, 4);
    CHECK_EQ(p.off_h, 1);
    CHECK_EQ(p.off_w, -2);
}

/* ---------------------------------------------------------------------------------------
 * Concatenation
 * ------------------------------------------------------------------------------------- */

TEST(concat_golden) {
    struct unet__safetensors *st = golden_open("upsample_concat");
    if (!st) return;
    int cases = 0, styles[2] = {0, 0};
    long long c[16];
    for (int i = 0, kind; (kind = case_kind(st, i, c, 16)) >= 0; i++) {
        if (kind != KIND_CONCAT) continue;
        cases++;
        styles[c[14] != 0]++;
        struct unet__concat_dims d = {.N = (int)c[1], .H = (int)c[8], .W = (int)c[9]};
        unet__place_center(&d.a, (int)c[2], (int)c[3], (int)c[4], d.H, d.W);
        unet__place_center(&d.b, (int)c[5], (int)c[6], (int)c[7], d.H, d.W);
        printf("     case %d (%s): a %dx%dx%d at (%d, %d), b %dx%dx%d at (%d, %d) -> %dx%d\n", i,
               c[14] ? "paper crop_and_concat" : "milesial F.pad + cat", d.a.C, d.a.H, d.a.W,
               d.a.off_h, d.a.off_w, d.b.C, d.b.H, d.b.W, d.b.off_h, d.b.off_w, d.H, d.W);
        /* The offsets PyTorch's code used. */
        CHECK_EQ(d.a.off_h, c[10]);
        CHECK_EQ(d.a.off_w, c[11]);
        CHECK_EQ(d.b.off_h, c[12]);
        CHECK_EQ(d.b.off_w, c[13]);
        size_t na, nb, ny;
        float *a = golden_get(st, key(i, "a"), &na), *b = golden_get(st, key(i, "b"), &nb);
        float *r = golden_get(st, key(i, "r"), &ny), *y_ref = golden_get(st, key(i, "y"), NULL);
        float *da_ref = golden_get(st, key(i, "da"), NULL), *db_ref = golden_get(st, key(i, "db"), NULL);
        CHECK_EQ(ny, (size_t)d.N * (d.a.C + d.b.C) * d.H * d.W);
        float *y = test_alloc(ny), *y2 = test_alloc(ny), *da = test_alloc(na), *db = test_alloc(nb);
        unet__concat_forward(y, a, b, &d);
        unet__concat_forward_ref(y2, a, b, &d);
        unet__concat_backward(da, db, r, &d);
        CHECK_TENSOR("y", y, y_ref, ny, COPY_ATOL, COPY_RTOL);
        CHECK_TENSOR("y (ref)", y2, y_ref, ny, COPY_ATOL, COPY_RTOL);
        CHECK_TENSOR("da", da, da_ref, na, COPY_ATOL, COPY_RTOL);
        CHECK_TENSOR("db", db, db_ref, nb, COPY_ATOL, COPY_RTOL);
        free(a), free(b), free(r), free(y_ref), free(da_ref), free(db_ref);
        free(y), free(y2), free(da), free(db);
    }
    CHECK(cases >= 5);
    CHECK(styles[0] >= 2 && styles[1] >= 2);
    unet__st_close(st);
}

/* Either kind of two-input op (concat or add_place) with L = sum(y * r). */
struct two_case {
    bool   add;
    struct unet__concat_dims c;
    struct unet__add_dims    s;
    float *a, *b, *r, *y;
    size_t na, nb, ny;
};

static void two_forward(struct two_case *k) {
    if (k->add) unet__add_place_forward(k->y, k->a, k->b, &k->s);
    else unet__concat_forward(k->y, k->a, k->b, &k->c);
}

static void two_backward(struct two_case *k, float *da, float *db) {
    if (k->add) unet__add_place_backward(da, db, k->r, &k->s);
    else unet__concat_backward(da, db, k->r, &k->c);
}

static double two_loss(void *ud) {
    struct two_case *k = ud;
    two_forward(k);
    return dot_double(k->y, k->r, k->ny);
}

static void two_setup(struct two_case *k, struct unet__rng *rng) {
    if (k->add) {
        k->na = (size_t)k->s.N * k->s.C * k->s.H * k->s.W;
        k->nb = (size_t)k->s.N * k->s.b.C * k->s.b.H * k->s.b.W;
        k->ny = k->na;
    } else {
        k->na = (size_t)k->c.N * k->c.a.C * k->c.a.H * k->c.a.W;
        k->nb = (size_t)k->c.N * k->c.b.C * k->c.b.H * k->c.b.W;
        k->ny = (size_t)k->c.N * (k->c.a.C + k->c.b.C) * k->c.H * k->c.W;
    }
    k->a = test_alloc(k->na), k->b = test_alloc(k->nb);
    k->r = test_alloc(k->ny), k->y = test_alloc(k->ny);
    fill_uniform(rng, k->a, k->na, -1, 1);
    fill_uniform(rng, k->b, k->nb, -1, 1);
    fill_uniform(rng, k->r, k->ny, -1, 1);
}

static void two_free(struct two_case *k) {
    free(k->a), free(k->b), free(k->r), free(k->y);
}

static void two_gradcheck(struct two_case *k, const char *label) {
    float *da = test_alloc(k->na), *db = test_alloc(k->nb);
    two_backward(k, da, db);
    char what[96];
    /* Linear in a and b with coefficients 0 or 1: central differences are exact up to the
     * float32 rounding of y. */
    snprintf(what, sizeof what, "%s da", label);
    GRADCHECK(what, k->a, da, k->na, two_loss, k, 1e-2f, 1e-4, 1e-4);
    snprintf(what, sizeof what, "%s db", label);
    GRADCHECK(what, k->b, db, k->nb, two_loss, k, 1e-2f, 1e-4, 1e-4);
    free(da), free(db);
}

TEST(concat_gradcheck) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 21);
    /* milesial: skip a 5x5 as is, upsampled b 2x3 padded (odd differences 3 and 2). */
    struct two_case k = {.c = {.N = 2, .H = 5, .W = 5}};
    unet__place_center(&k.c.a, 3, 5, 5, 5, 5);
    unet__place_center(&k.c.b, 2, 2, 3, 5, 5);
    two_setup(&k, &rng);
    two_gradcheck(&k, "concat pad b 2x3->5x5");
    two_free(&k);
    /* paper: skip a 7x6 centre-cropped to the upsampled b's 4x3 (differences 3 and 3). */
    k = (struct two_case){.c = {.N = 2, .H = 4, .W = 3}};
    unet__place_center(&k.c.a, 3, 7, 6, 4, 3);
    unet__place_center(&k.c.b, 2, 4, 3, 4, 3);
    two_setup(&k, &rng);
    two_gradcheck(&k, "concat crop a 7x6->4x3");
    two_free(&k);
}

/* dx += place^T(dy), one element at a time: the definition of every backward here. */
static void place_adjoint_ref(float *dx, const float *dy, int N, int C_y, int c0, int H, int W,
                              const struct unet__place *p) {
    for (int n = 0; n < N; n++)
        for (int c = 0; c < p->C; c++)
            for (int i = 0; i < H; i++)
                for (int j = 0; j < W; j++) {
                    int si = i + p->off_h, sj = j + p->off_w;
                    if (si < 0 || si >= p->H || sj < 0 || sj >= p->W) continue;
                    dx[(((size_t)n * p->C + c) * p->H + si) * p->W + sj] +=
                        dy[(((size_t)n * C_y + c0 + c) * H + i) * W + j];
                }
}

/* A random placement of an input of up to 12x12 into H x W: centred, or any offset, including
 * ones that leave no overlap at all. */
static void random_place(struct unet__place *p, struct unet__rng *rng, int C, int H, int W) {
    int h = 1 + (int)unet__rng_below(rng, 12), w = 1 + (int)unet__rng_below(rng, 12);
    unet__place_center(p, C, h, w, H, W);
    if (unet__rng_below(rng, 2)) {
        p->off_h = (int)unet__rng_below(rng, 31) - 15;
        p->off_w = (int)unet__rng_below(rng, 31) - 15;
    }
}

TEST(concat_fast_vs_ref) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 22);
    for (int trial = 0; trial < 20; trial++) {
        struct two_case k = {.c = {.N = 1 + (int)unet__rng_below(&rng, 2),
                                   .H = 1 + (int)unet__rng_below(&rng, 12),
                                   .W = 1 + (int)unet__rng_below(&rng, 12)}};
        random_place(&k.c.a, &rng, 1 + (int)unet__rng_below(&rng, 4), k.c.H, k.c.W);
        random_place(&k.c.b, &rng, 1 + (int)unet__rng_below(&rng, 4), k.c.H, k.c.W);
        two_setup(&k, &rng);
        float *y_ref = test_alloc(k.ny);
        float *da = test_alloc(k.na), *db = test_alloc(k.nb);
        float *da_ref = test_alloc(k.na), *db_ref = test_alloc(k.nb);
        for (size_t i = 0; i < k.na; i++) da[i] = da_ref[i] = 0.5f; /* backward accumulates */
        for (size_t i = 0; i < k.nb; i++) db[i] = db_ref[i] = -0.25f;
        unet__concat_forward(k.y, k.a, k.b, &k.c);
        unet__concat_forward_ref(y_ref, k.a, k.b, &k.c);
        unet__concat_backward(da, db, k.r, &k.c);
        const int C = k.c.a.C + k.c.b.C;
        place_adjoint_ref(da_ref, k.r, k.c.N, C, 0, k.c.H, k.c.W, &k.c.a);
        place_adjoint_ref(db_ref, k.r, k.c.N, C, k.c.a.C, k.c.H, k.c.W, &k.c.b);
        printf("     N=%d a %dx%dx%d at (%d, %d), b %dx%dx%d at (%d, %d) -> %dx%d\n", k.c.N,
               k.c.a.C, k.c.a.H, k.c.a.W, k.c.a.off_h, k.c.a.off_w, k.c.b.C, k.c.b.H, k.c.b.W,
               k.c.b.off_h, k.c.b.off_w, k.c.H, k.c.W);
        /* Copies and single additions in the same order: exact. */
        CHECK_TENSOR("y", k.y, y_ref, k.ny, 0, 0);
        CHECK_TENSOR("da", da, da_ref, k.na, 0, 0);
        CHECK_TENSOR("db", db, db_ref, k.nb, 0, 0);
        /* A NULL gradient is skipped and leaves the other one as it was computed. */
        memcpy(da_ref, da, sizeof(float) * k.na);
        unet__concat_backward(NULL, db, k.r, &k.c);
        unet__concat_backward(da, NULL, k.r, &k.c);
        place_adjoint_ref(da_ref, k.r, k.c.N, C, 0, k.c.H, k.c.W, &k.c.a);
        CHECK_TENSOR("da (db NULL)", da, da_ref, k.na, 0, 0);
        /* Set from NaN (any read or gap would show) equals added onto zeros: the window of dy,
         * zero where the placement crops. */
        for (size_t i = 0; i < k.na; i++) da[i] = NAN, da_ref[i] = 0.0f;
        for (size_t i = 0; i < k.nb; i++) db[i] = NAN, db_ref[i] = 0.0f;
        unet__concat_backward_set(da, true, db, true, k.r, &k.c);
        place_adjoint_ref(da_ref, k.r, k.c.N, C, 0, k.c.H, k.c.W, &k.c.a);
        place_adjoint_ref(db_ref, k.r, k.c.N, C, k.c.a.C, k.c.H, k.c.W, &k.c.b);
        CHECK_TENSOR("da (set)", da, da_ref, k.na, 0, 0);
        CHECK_TENSOR("db (set)", db, db_ref, k.nb, 0, 0);
        free(y_ref), free(da), free(db), free(da_ref), free(db_ref);
        two_free(&k);
    }
}

/* ---------------------------------------------------------------------------------------
 * FCN's crop-and-add
 * ------------------------------------------------------------------------------------- */

TEST(add_place_golden) {
    struct unet__safetensors *st = golden_open("upsample_concat");
    if (!st) return;
    int cases = 0;
    long long c[16];
    for (int i = 0, kind; (kind = case_kind(st, i, c, 16)) >= 0; i++) {
        if (kind != KIND_ADD) continue;
        cases++;
        struct unet__add_dims d = {.N = (int)c[1], .C = (int)c[2], .H = (int)c[3], .W = (int)c[4],
                                   .b = {.C = (int)c[2], .H = (int)c[5], .W = (int)c[6],
                                         .off_h = (int)c[7], .off_w = (int)c[8]}};
        printf("     case %d: a %dx%dx%d + b %dx%d at (%d, %d)\n", i, d.C, d.H, d.W, d.b.H, d.b.W,
               d.b.off_h, d.b.off_w);
        size_t na, nb;
        float *a = golden_get(st, key(i, "a"), &na), *b = golden_get(st, key(i, "b"), &nb);
        float *r = golden_get(st, key(i, "r"), NULL), *y_ref = golden_get(st, key(i, "y"), NULL);
        float *da_ref = golden_get(st, key(i, "da"), NULL), *db_ref = golden_get(st, key(i, "db"), NULL);
        CHECK_EQ(na, (size_t)d.N * d.C * d.H * d.W);
        CHECK_EQ(nb, (size_t)d.N * d.C * d.b.H * d.b.W);
        float *y = test_alloc(na), *da = test_alloc(na), *db = test_alloc(nb);
        unet__add_place_forward(y, a, b, &d);
        unet__add_place_backward(da, db, r, &d);
        CHECK_TENSOR("y", y, y_ref, na, COPY_ATOL, COPY_RTOL);
        CHECK_TENSOR("da", da, da_ref, na, COPY_ATOL, COPY_RTOL);
        CHECK_TENSOR("db", db, db_ref, nb, COPY_ATOL, COPY_RTOL);
        /* In place: y aliasing a gives the same result. */
        unet__add_place_forward(a, a, b, &d);
        CHECK_TENSOR("y (in place)", a, y_ref, na, COPY_ATOL, COPY_RTOL);
        free(a), free(b), free(r), free(y_ref), free(da_ref), free(db_ref);
        free(y), free(da), free(db);
    }
    CHECK(cases >= 3);
    unet__st_close(st);
}

TEST(add_place_gradcheck) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 31);
    /* FCN: score_pool4 (7x8) cropped at offset (2, 3) onto upscore2 (3x5). */
    struct two_case k = {.add = true,
                         .s = {.N = 2, .C = 3, .H = 3, .W = 5,
                               .b = {.C = 3, .H = 7, .W = 8, .off_h = 2, .off_w = 3}}};
    two_setup(&k, &rng);
    two_gradcheck(&k, "add crop b 7x8@(2,3)->3x5");
    two_free(&k);
    /* A smaller b, centred: zero padding. */
    k = (struct two_case){.add = true, .s = {.N = 2, .C = 3, .H = 5, .W = 5}};
    unet__place_center(&k.s.b, 3, 2, 3, 5, 5);
    two_setup(&k, &rng);
    two_gradcheck(&k, "add pad b 2x3->5x5");
    two_free(&k);
}

TEST(add_place_fast_vs_ref) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 32);
    for (int trial = 0; trial < 12; trial++) {
        struct two_case k = {.add = true,
                             .s = {.N = 1 + (int)unet__rng_below(&rng, 2),
                                   .C = 1 + (int)unet__rng_below(&rng, 4),
                                   .H = 1 + (int)unet__rng_below(&rng, 12),
                                   .W = 1 + (int)unet__rng_below(&rng, 12)}};
        random_place(&k.s.b, &rng, k.s.C, k.s.H, k.s.W);
        two_setup(&k, &rng);
        float *y_ref = test_alloc(k.ny), *da = test_alloc(k.na), *db = test_alloc(k.nb);
        float *da_ref = test_alloc(k.na), *db_ref = test_alloc(k.nb);
        /* The definition: a + place(b), with place from concat's reference (b alone). */
        struct unet__concat_dims only_b = {.N = k.s.N, .H = k.s.H, .W = k.s.W,
                                           .a = {.C = 0, .H = 1, .W = 1}, .b = k.s.b};
        unet__concat_forward_ref(y_ref, NULL, k.b, &only_b);
        for (size_t i = 0; i < k.ny; i++) y_ref[i] += k.a[i];
        for (size_t i = 0; i < k.na; i++) da[i] = da_ref[i] = 0.5f;
        for (size_t i = 0; i < k.nb; i++) db[i] = db_ref[i] = -0.25f;
        for (size_t i = 0; i < k.na; i++) da_ref[i] += k.r[i];
        place_adjoint_ref(db_ref, k.r, k.s.N, k.s.C, 0, k.s.H, k.s.W, &k.s.b);
        unet__add_place_forward(k.y, k.a, k.b, &k.s);
        unet__add_place_backward(da, db, k.r, &k.s);
        printf("     N=%d C=%d %dx%d + b %dx%d at (%d, %d)\n", k.s.N, k.s.C, k.s.H, k.s.W, k.s.b.H,
               k.s.b.W, k.s.b.off_h, k.s.b.off_w);
        CHECK_TENSOR("y", k.y, y_ref, k.ny, 0, 0);
        CHECK_TENSOR("da", da, da_ref, k.na, 0, 0);
        CHECK_TENSOR("db", db, db_ref, k.nb, 0, 0);
        unet__add_place_backward(NULL, db, k.r, &k.s); /* NULL gradients are skipped */
        unet__add_place_backward(da, NULL, k.r, &k.s);
        free(y_ref), free(da), free(db), free(da_ref), free(db_ref);
        two_free(&k);
    }
}

/* ---------------------------------------------------------------------------------------
 * Crop or pad alone
 * ------------------------------------------------------------------------------------- */

TEST(crop_golden) {
    struct unet__safetensors *st = golden_open("upsample_concat");
    if (!st) return;
    int cases = 0;
    long long c[16];
    for (int i = 0, kind; (kind = case_kind(st, i, c, 16)) >= 0; i++) {
        if (kind != KIND_CROP) continue;
        cases++;
        const int N = (int)c[1], H = (int)c[5], W = (int)c[6];
        struct unet__place p = {.C = (int)c[2], .H = (int)c[3], .W = (int)c[4], .off_h = (int)c[7],
                                .off_w = (int)c[8]};
        printf("     case %d: %dx%dx%d at (%d, %d) -> %dx%d\n", i, p.C, p.H, p.W, p.off_h, p.off_w,
               H, W);
        size_t nx, ny;
        float *x = golden_get(st, key(i, "x"), &nx), *r = golden_get(st, key(i, "r"), &ny);
        float *y_ref = golden_get(st, key(i, "y"), NULL), *dx_ref = golden_get(st, key(i, "dx"), NULL);
        CHECK_EQ(ny, (size_t)N * p.C * H * W);
        float *y = test_alloc(ny), *dx = test_alloc(nx);
        unet__crop_forward(y, x, N, H, W, &p);
        unet__crop_backward(dx, r, N, H, W, &p);
        CHECK_TENSOR("y", y, y_ref, ny, COPY_ATOL, COPY_RTOL);
        CHECK_TENSOR("dx", dx, dx_ref, nx, COPY_ATOL, COPY_RTOL);
        free(x), free(r), free(y_ref), free(dx_ref), free(y), free(dx);
    }
    CHECK(cases >= 2);
    unet__st_close(st);
}

struct crop_case {
    int    N, H, W;
    struct unet__place p;
    float *x, *r, *y;
    size_t nx, ny;
};

static double crop_loss(void *ud) {
    struct crop_case *k = ud;
    unet__crop_forward(k->y, k->x, k->N, k->H, k->W, &k->p);
    return dot_double(k->y, k->r, k->ny);
}

TEST(crop_gradcheck_and_ref) {
    struct unet__rng rng;
    unet__rng_seed(&rng, 41);
    for (int trial = 0; trial < 12; trial++) {
        struct crop_case k = {.N = 1 + (int)unet__rng_below(&rng, 2),
                              .H = 1 + (int)unet__rng_below(&rng, 9),
                              .W = 1 + (int)unet__rng_below(&rng, 9)};
        random_place(&k.p, &rng, 1 + (int)unet__rng_below(&rng, 3), k.H, k.W);
        if (trial == 0) { /* odd crop */
            k.H = 4, k.W = 3;
            unet__place_center(&k.p, 3, 7, 5, k.H, k.W);
        }
        if (trial == 1) { /* odd pad */
            k.H = 5, k.W = 5;
            unet__place_center(&k.p, 3, 2, 3, k.H, k.W);
        }
        k.nx = (size_t)k.N * k.p.C * k.p.H * k.p.W;
        k.ny = (size_t)k.N * k.p.C * k.H * k.W;
        k.x = test_alloc(k.nx), k.r = test_alloc(k.ny), k.y = test_alloc(k.ny);
        fill_uniform(&rng, k.x, k.nx, -1, 1);
        fill_uniform(&rng, k.r, k.ny, -1, 1);
        float *dx = test_alloc(k.nx), *dx_ref = test_alloc(k.nx), *y_ref = test_alloc(k.ny);
        unet__crop_backward(dx, k.r, k.N, k.H, k.W, &k.p);
        place_adjoint_ref(dx_ref, k.r, k.N, k.p.C, 0, k.H, k.W, &k.p);
        unet__crop_forward(k.y, k.x, k.N, k.H, k.W, &k.p);
        struct unet__concat_dims only_x = {.N = k.N, .H = k.H, .W = k.W,
                                           .a = {.C = 0, .H = 1, .W = 1}, .b = k.p};
        unet__concat_forward_ref(y_ref, NULL, k.x, &only_x);
        char what[96];
        snprintf(what, sizeof what, "crop %dx%d@(%d,%d)->%dx%d", k.p.H, k.p.W, k.p.off_h, k.p.off_w,
                 k.H, k.W);
        printf("     %s\n", what);
        CHECK_TENSOR("y", k.y, y_ref, k.ny, 0, 0);
        CHECK_TENSOR("dx", dx, dx_ref, k.nx, 0, 0);
        if (trial < 4) {
            /* An input the output never reads has gradient 0, which the check also verifies. */
            GRADCHECK(what, k.x, dx, k.nx, crop_loss, &k, 1e-2f, 1e-4, 1e-4);
        }
        unet__crop_backward(NULL, k.r, k.N, k.H, k.W, &k.p);
        free(dx), free(dx_ref), free(y_ref), free(k.x), free(k.r), free(k.y);
    }
}

int main(void) {
    RUN(upsample_golden);
    RUN(upsample_known_values);
    RUN(upsample_gradcheck);
    RUN(upsample_fast_vs_ref);
    RUN(upsample_thread_independent);
    RUN(place_center_offsets);
    RUN(concat_golden);
    RUN(concat_gradcheck);
    RUN(concat_fast_vs_ref);
    RUN(add_place_golden);
    RUN(add_place_gradcheck);
    RUN(add_place_fast_vs_ref);
    RUN(crop_golden);
    RUN(crop_gradcheck_and_ref);
    return harness_finish();
}
