/* test_predict.c — whole-image prediction: the overlap-tile strategy (tiled equals untiled for
 * valid convolutions), any image size for same padding, test-time augmentation, tile sizes,
 * argmax and the overlay. */
#include "harness.h"
#include "model.h"

static unet_model *tiny(unet_arch arch, int depth) {
    unet_ctx *ctx = unet_ctx_create();
    unet_config c = unet_config_default(arch);
    c.base = 4;
    c.depth = depth;
    unet_model *m = NULL;
    if (unet_model_create(ctx, &c, 21, &m) != UNET_STATUS_OK) printf("  %s\n", unet_ctx_errmsg(ctx));
    unet_ctx_free(ctx);
    return m;
}

static float *random_image(int c, int h, int w, uint64_t seed) {
    struct unet__rng rng;
    unet__rng_seed(&rng, seed);
    float *x = test_alloc((size_t)c * h * w);
    fill_uniform(&rng, x, (size_t)c * h * w, 0, 1);
    return x;
}

TEST(round_sizes) {
    unet_ctx *ctx = unet_ctx_create();
    unet_model *m = tiny(UNET_ARCH_UNET_PAPER, 4);
    int r = 0;
    /* The paper's rule at depth 4: 16k + 60 for k >= 8 (188, 204, ..., 572). */
    CHECK_STATUS(unet_model_round_size(ctx, m, 1, &r), UNET_STATUS_OK);
    CHECK_EQ(r, 188);
    CHECK_STATUS(unet_model_round_size(ctx, m, 560, &r), UNET_STATUS_OK);
    CHECK_EQ(r, 572);
    CHECK_STATUS(unet_model_round_size(ctx, m, 572, &r), UNET_STATUS_OK);
    CHECK_EQ(r, 572);
    unet_model_free(m);
    m = tiny(UNET_ARCH_UNET, 3);
    CHECK_STATUS(unet_model_round_size(ctx, m, 100, &r), UNET_STATUS_OK);
    CHECK_EQ(r, 104);
    unet_model_free(m);
    unet_ctx_free(ctx);
}

/* The paper's Fig. 2: output tiles cover the image, each input tile carries the context border
 * and the context beyond the edge is mirrored.  Valid convolutions never read padding, so the
 * tiled result equals one pass over the mirrored image. */
TEST(overlap_tile_is_seamless) {
    unet_ctx *ctx = unet_ctx_create();
    unet_model *m = tiny(UNET_ARCH_UNET_PAPER, 2);
    if (!m) return;
    const int H = 83, W = 61;
    float *img = random_image(1, H, W, 3);
    float *whole = test_alloc((size_t)2 * H * W), *tiled = test_alloc((size_t)2 * H * W);
    unet_predict_opts o = unet_predict_defaults();
    o.output = UNET_OUTPUT_LOGITS;
    CHECK_STATUS(unet_predict(ctx, m, img, H, W, &o, whole, NULL, NULL), UNET_STATUS_OK);
    int r = 0;
    CHECK_STATUS(unet_model_round_size(ctx, m, 50, &r), UNET_STATUS_OK);
    int oh = 0, ow = 0;
    CHECK_STATUS(unet_model_output_size(ctx, m, r, r, &oh, &ow), UNET_STATUS_OK);
    int core = oh / 4 * 4; /* depth 2: cores are multiples of 4 */
    printf("       tiles of %d -> %d pixels (core %d) over an %dx%d image (%dx%d tiles)\n", r, oh,
           core, H, W, (H + core - 1) / core, (W + core - 1) / core);
    o.tile = r;
    o.batch = 3;
    CHECK_STATUS(unet_predict(ctx, m, img, H, W, &o, tiled, NULL, NULL), UNET_STATUS_OK);
    /* Float rounding only: the GEMMs block differently for different tile sizes. */
    CHECK_TENSOR("tiled vs untiled logits", tiled, whole, (size_t)2 * H * W, 1e-5, 1e-5);
    /* An invalid tile is refused with the next valid size in the message. */
    o.tile = r + 1;
    CHECK_STATUS(unet_predict(ctx, m, img, H, W, &o, tiled, NULL, NULL), UNET_STATUS_ARG);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "not a valid input size");
    printf("       %s\n", unet_ctx_errmsg(ctx));
    free(img), free(whole), free(tiled);
    unet_model_free(m);
    unet_ctx_free(ctx);
}

/* Same padding: any size (mirror-padded to a multiple of 2^depth and cropped back); tiles with
 * overlap agree with the single pass away from nothing but the tile borders' context. */
TEST(same_padding_any_size) {
    unet_ctx *ctx = unet_ctx_create();
    unet_model *m = tiny(UNET_ARCH_UNET, 3);
    if (!m) return;
    const int H = 77, W = 93;
    float *img = random_image(1, H, W, 4);
    float *whole = test_alloc((size_t)2 * H * W), *tiled = test_alloc((size_t)2 * H * W);
    unet_predict_opts o = unet_predict_defaults();
    CHECK_STATUS(unet_predict(ctx, m, img, H, W, &o, whole, NULL, NULL), UNET_STATUS_OK);
    double sum = 0;
    for (size_t i = 0; i < (size_t)H * W; i++) sum += whole[i] + whole[(size_t)H * W + i];
    CHECK_CLOSE(sum, (double)H * W, 1e-2, 1e-6); /* probabilities sum to 1 per pixel */
    o.tile = 48;
    o.overlap = 16;
    CHECK_STATUS(unet_predict(ctx, m, img, H, W, &o, tiled, NULL, NULL), UNET_STATUS_OK);
    double max_diff = 0;
    for (size_t i = 0; i < (size_t)2 * H * W; i++)
        if (fabs(tiled[i] - whole[i]) > max_diff) max_diff = fabs(tiled[i] - whole[i]);
    printf("       48-pixel tiles, overlap 16 vs one pass: max probability difference %.3g\n",
           max_diff);
    CHECK(max_diff < 0.05);
    o.overlap = 48; /* nothing left of a 48-pixel output */
    CHECK_STATUS(unet_predict(ctx, m, img, H, W, &o, tiled, NULL, NULL), UNET_STATUS_ARG);
    free(img), free(whole), free(tiled);
    unet_model_free(m);
    unet_ctx_free(ctx);
}

static int count_tiles(int done, int total, void *user) {
    int *seen = user;
    seen[0]++;
    seen[1] = total;
    (void)done;
    return 0;
}

/* An image that fits in one tile is one pass, whatever the tile size: the same numbers as
 * without a tile, and one call of the progress callback (four overlapping tiles before). */
TEST(one_tile_when_the_image_fits) {
    unet_ctx *ctx = unet_ctx_create();
    const unet_arch arch[2] = {UNET_ARCH_UNET, UNET_ARCH_UNET_PAPER};
    for (int a = 0; a < 2; a++) {
        unet_model *m = tiny(arch[a], 3);
        if (!m) continue;
        const int sizes[2][2] = {{64, 64}, {37, 50}};
        for (int k = 0; k < 2; k++) {
            const int H = sizes[k][0], W = sizes[k][1];
            float *img = random_image(1, H, W, 7 + k);
            float *whole = test_alloc((size_t)2 * H * W), *tiled = test_alloc((size_t)2 * H * W);
            unet_predict_opts o = unet_predict_defaults();
            int seen[2] = {0, 0};
            CHECK_STATUS(unet_predict(ctx, m, img, H, W, &o, whole, count_tiles, seen),
                         UNET_STATUS_OK);
            CHECK_EQ(seen[1], 1);
            /* The smallest valid tile whose output, in whole pooling periods (8 at depth 3),
             * covers the image; a larger one; the largest valid one below it. */
            int oh = 0, ow = 0, fit = 1, big = 0, small = 0;
            for (;; fit++) {
                CHECK_STATUS(unet_model_round_size(ctx, m, fit, &fit), UNET_STATUS_OK);
                CHECK_STATUS(unet_model_output_size(ctx, m, fit, fit, &oh, &ow), UNET_STATUS_OK);
                if (oh / 8 * 8 >= (H > W ? H : W)) break;
            }
            CHECK_STATUS(unet_model_round_size(ctx, m, fit + 40, &big), UNET_STATUS_OK);
            for (int r = 0, c = 1; c < fit; c = r + 1) {
                CHECK_STATUS(unet_model_round_size(ctx, m, c, &r), UNET_STATUS_OK);
                if (r < fit) small = r;
            }
            const int tiles[2] = {fit, big};
            for (int t = 0; t < 2; t++) {
                o.tile = tiles[t];
                seen[0] = seen[1] = 0;
                CHECK_STATUS(unet_predict(ctx, m, img, H, W, &o, tiled, count_tiles, seen),
                             UNET_STATUS_OK);
                CHECK_EQ(seen[0], 1);
                CHECK_EQ(seen[1], 1);
                CHECK(memcmp(tiled, whole, sizeof(float) * 2 * H * W) == 0);
            }
            /* One valid size smaller: tiles again. */
            o.tile = small;
            o.overlap = arch[a] == UNET_ARCH_UNET ? 8 : 0;
            seen[0] = seen[1] = 0;
            CHECK_STATUS(unet_predict(ctx, m, img, H, W, &o, tiled, count_tiles, seen),
                         UNET_STATUS_OK);
            CHECK(seen[1] > 1);
            printf("       %s %dx%d: tile %d and %d run one pass; tile %d runs %d tiles\n",
                   unet_arch_name(arch[a]), H, W, fit, big, small, seen[1]);
            free(img), free(whole), free(tiled);
        }
        unet_model_free(m);
    }
    unet_ctx_free(ctx);
}

static int count_calls(int done, int total, void *user) {
    int *calls = user;
    (*calls)++;
    return done >= total / 2 && calls[1]; /* stop half way when asked */
}

TEST(tta_and_progress) {
    unet_ctx *ctx = unet_ctx_create();
    unet_model *m = tiny(UNET_ARCH_UNET, 2);
    if (!m) return;
    const int H = 20, W = 28;
    float *img = random_image(1, H, W, 5);
    float *plain = test_alloc((size_t)2 * H * W), *tta = test_alloc((size_t)2 * H * W);
    unet_predict_opts o = unet_predict_defaults();
    CHECK_STATUS(unet_predict(ctx, m, img, H, W, &o, plain, NULL, NULL), UNET_STATUS_OK);
    o.tta = 1;
    int calls[2] = {0, 0};
    CHECK_STATUS(unet_predict(ctx, m, img, H, W, &o, tta, count_calls, calls), UNET_STATUS_OK);
    CHECK_EQ(calls[0], 8);
    double diff = 0;
    for (size_t i = 0; i < (size_t)2 * H * W; i++) diff += fabs(tta[i] - plain[i]);
    CHECK(diff > 0); /* an untrained net is not flip-invariant: the average differs */
    /* A constant image is invariant under flips: TTA changes nothing but rounding (away from
     * the borders, where mirror padding of a constant is exact anyway). */
    for (size_t i = 0; i < (size_t)H * W; i++) img[i] = 0.3f;
    o.tta = 0;
    CHECK_STATUS(unet_predict(ctx, m, img, H, W, &o, plain, NULL, NULL), UNET_STATUS_OK);
    o.tta = 1;
    CHECK_STATUS(unet_predict(ctx, m, img, H, W, &o, tta, NULL, NULL), UNET_STATUS_OK);
    /* Not exactly equal: a flipped input meets the same zero padding of the convolutions. */
    CHECK_TENSOR("tta of a constant image", tta, plain, (size_t)2 * H * W, 0.05, 0);
    calls[0] = 0, calls[1] = 1;
    CHECK_STATUS(unet_predict(ctx, m, img, H, W, &o, tta, count_calls, calls),
                 UNET_STATUS_INTERRUPTED);
    free(img), free(plain), free(tta);
    unet_model_free(m);
    unet_ctx_free(ctx);
}

TEST(argmax_and_overlay) {
    float out[2 * 6] = {0.9f, 0.2f, 0.6f, 0.1f, 0.5f, 0.3f, 0.1f, 0.8f, 0.4f, 0.9f, 0.5f, 0.7f};
    int32_t labels[6];
    unet_argmax(out, 2, 2, 3, UNET_OUTPUT_PROBABILITIES, labels);
    int32_t want[6] = {0, 1, 0, 1, 0, 1};
    for (int i = 0; i < 6; i++) CHECK_EQ(labels[i], want[i]);
    unet_argmax(out, 1, 2, 3, UNET_OUTPUT_PROBABILITIES, labels);
    CHECK_EQ(labels[0], 1);
    CHECK_EQ(labels[1], 0);
    unet_ctx *ctx = unet_ctx_create();
    float gray[16];
    int32_t lab[16] = {0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 0};
    for (int i = 0; i < 16; i++) gray[i] = 0.5f;
    uint8_t rgb[3 * 16];
    CHECK_STATUS(unet_overlay(ctx, gray, lab, 4, 4, rgb), UNET_STATUS_OK);
    CHECK_EQ(rgb[0], 128);                       /* background: the gray value */
    CHECK_EQ(rgb[5], 255);                       /* an outline pixel of class 1: yellow */
    CHECK_EQ(rgb[32 + 5], 0);
    CHECK_STATUS(unet_overlay(ctx, NULL, lab, 4, 4, rgb), UNET_STATUS_ARG);
    unet_ctx_free(ctx);
}

/* A NaN or Inf in the image is refused with its place (it would spread silently through every
 * convolution that sees it); an output with no finite value (an image of 3e38: the network
 * overflows) is refused too, with and without TTA; unet_count_nonfinite counts. */
TEST(nonfinite_input_and_output) {
    unet_ctx *ctx = unet_ctx_create();
    unet_model *m = tiny(UNET_ARCH_UNET, 2);
    const int H = 30, W = 40;
    float *x = random_image(1, H, W, 3), *out = test_alloc(2 * H * W);
    unet_predict_opts po = unet_predict_defaults();
    CHECK_STATUS(unet_predict(ctx, m, x, H, W, &po, out, NULL, NULL), UNET_STATUS_OK);
    CHECK_EQ(unet_count_nonfinite(out, 2 * H * W), 0);
    x[5 * W + 7] = NAN;
    CHECK_STATUS(unet_predict(ctx, m, x, H, W, &po, out, NULL, NULL), UNET_STATUS_NUMERIC);
    CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "the image holds nan at channel 0, pixel (y 5, x 7)");
    x[5 * W + 7] = -INFINITY;
    CHECK_STATUS(unet_predict(ctx, m, x, H, W, &po, out, NULL, NULL), UNET_STATUS_NUMERIC);
    CHECK_EQ(unet_count_nonfinite(x, H * W), 1);
    /* 3e38 through a first convolution with weights of 100: Inf, then Inf - Inf downstream. */
    for (int i = 0; i < H * W; i++) x[i] = 3e38f;
    const struct unet__param *w0 = unet__model_find_param(m, "inc.double_conv.0.weight");
    for (size_t i = 0; w0 && i < w0->numel; i++) unet__model_param_data(m, w0)[i] = 100.0f;
    for (int tta = 0; tta < 2; tta++) {
        po.tta = tta;
        CHECK_STATUS(unet_predict(ctx, m, x, H, W, &po, out, NULL, NULL), UNET_STATUS_NUMERIC);
        CHECK_STR_CONTAINS(unet_ctx_errmsg(ctx), "every output value is NaN or infinite");
    }
    free(x);
    free(out);
    unet_model_free(m);
    unet_ctx_free(ctx);
}

/* unet__first_nonfinite (blocks of 256 without an early exit, then the exact element) against
 * its element-by-element definition: bad values at block edges and in the tail, each kind. */
static size_t first_nonfinite_ref(const float *a, size_t n, bool nonneg) {
    for (size_t i = 0; i < n; i++)
        if (isnan(a[i]) || isinf(a[i]) || (nonneg && a[i] < 0.0f)) return i;
    return n;
}

TEST(first_nonfinite_matches_ref) {
    static const size_t sizes[] = {0, 1, 255, 256, 257, 511, 512, 513, 1000};
    const float kinds[] = {NAN, INFINITY, -INFINITY, -1.0f, -0.0f, 3e38f};
    float a[1024];
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        size_t n = sizes[si];
        for (size_t i = 0; i < n; i++) a[i] = 0.5f + (float)(i % 7);
        for (int nonneg = 0; nonneg < 2; nonneg++) {
            CHECK_EQ(unet__first_nonfinite(a, n, nonneg), n);
            const size_t at[] = {0, 1, 254, 255, 256, 257, 300, 511, 512, n - 1};
            for (size_t k = 0; k < sizeof at / sizeof at[0]; k++) {
                if (n == 0 || at[k] >= n) continue;
                for (size_t v = 0; v < sizeof kinds / sizeof kinds[0]; v++) {
                    float keep = a[at[k]];
                    a[at[k]] = kinds[v];
                    if (at[k] + 3 < n) a[at[k] + 3] = NAN; /* a later one must not win */
                    CHECK_EQ(unet__first_nonfinite(a, n, nonneg), first_nonfinite_ref(a, n, nonneg));
                    a[at[k]] = keep;
                    if (at[k] + 3 < n) a[at[k] + 3] = 0.5f + (float)((at[k] + 3) % 7);
                }
            }
        }
    }
}

int main(void) {
    RUN(round_sizes);
    RUN(overlap_tile_is_seamless);
    RUN(same_padding_any_size);
    RUN(one_tile_when_the_image_fits);
    RUN(tta_and_progress);
    RUN(argmax_and_overlay);
    RUN(nonfinite_input_and_output);
    RUN(first_nonfinite_matches_ref);
    return harness_finish();
}
