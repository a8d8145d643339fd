/* predict.c — segmenting whole images of any size: the overlap-tile strategy (Ronneberger et al.
 * 2015, Fig. 2), test-time augmentation, argmax and an overlay picture.
 *
 * Geometry.  A network maps an input tile of T_in pixels to an output of T_out; the output
 * covers the input's centre, off = (T_in - T_out) / 2 pixels in from each side (0 for same
 * padding, 92 for the paper's U-Net at depth 4).  Each tile keeps its core: the output minus a
 * margin of overlap/2 on every side (same padding only: there the outer pixels saw zero padding
 * instead of image; valid convolutions never read padding, so their margin is 0).  Cores are
 * laid edge to edge from the image origin; the last ones may reach past the image edge.  The
 * input window of a core at image position (y0, x0) starts at (y0 - off - margin, x0 - off -
 * margin); where it leaves the image it reads the mirrored image (reflection without repeating
 * the edge pixel, numpy's 'reflect'), which is also how the paper fills the missing context.
 *
 * Alignment.  A network with max-pools is equivariant only to shifts by a multiple of the total
 * pooling factor q (2^depth; 32 for FCN): shifted by anything else, every pooling window would
 * see other pixels.  So core sizes and margins are multiples of q.  Then, with valid
 * convolutions, every output pixel is computed from the same input values in the same pooling
 * phase whatever the tiling: tiled and untiled results agree to float rounding.  (The paper's
 * 388-pixel output tiles are not multiples of 16, so its tiles met the pooling grid in
 * different phases; rounding the core down to 384 costs 1% of the tile.)
 */
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

unet_predict_opts unet_predict_defaults(void) {
    unet_predict_opts o = {.tile = 0, .max_tile = 1024, .overlap = 64, .tta = 0, .batch = 1,
                           .output = UNET_OUTPUT_PROBABILITIES};
    return o;
}

/* Index i reflected into [0, n): ... 2 1 | 0 1 2 ... n-1 | n-2 ... (period 2n - 2). */
static int reflect(long i, int n) {
    if (n == 1) return 0;
    long period = 2L * n - 2;
    long r = i % period;
    if (r < 0) r += period;
    return (int)(r < n ? r : period - r);
}

/* Copies the window [y0, y0 + T) x [x0, x0 + T) of image (c, h, w), mirrored where it leaves
 * the image, into dst (c, T, T). */
static void read_window(float *dst, const float *image, int c, int h, int w, long y0, long x0,
                        int T) {
    for (int ch = 0; ch < c; ch++)
        for (int y = 0; y < T; y++) {
            const float *src = image + ((size_t)ch * h + (size_t)reflect(y0 + y, h)) * w;
            float *d = dst + ((size_t)ch * T + y) * T;
            if (x0 >= 0 && x0 + T <= w) {
                memcpy(d, src + x0, sizeof(float) * (size_t)T);
            } else {
                for (int x = 0; x < T; x++) d[x] = src[reflect(x0 + x, w)];
            }
        }
}

/* Softmax over classes (sigmoid for one) of each pixel of a (classes, P) block, in place. */
static void to_probabilities(float *v, int classes, size_t P) {
#pragma omp parallel for schedule(static)
    for (size_t p = 0; p < P; p++) {
        if (classes == 1) {
            float x = v[p];
            v[p] = x >= 0 ? 1.0f / (1.0f + expf(-x)) : expf(x) / (1.0f + expf(x));
            continue;
        }
        float mx = v[p];
        for (int c = 1; c < classes; c++)
            if (v[(size_t)c * P + p] > mx) mx = v[(size_t)c * P + p];
        float s = 0.0f;
        for (int c = 0; c < classes; c++) {
            float e = expf(v[(size_t)c * P + p] - mx);
            v[(size_t)c * P + p] = e;
            s += e;
        }
        for (int c = 0; c < classes; c++) v[(size_t)c * P + p] /= s;
    }
}

/* The total down-sampling of the network: shifts by multiples of it keep pooling aligned. */
static int pool_factor(const unet_model *m) {
    int q = 1;
    for (int i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].op == UNET__NODE_POOL) q *= 2;
    return q;
}

struct tiling {
    int T_in, T_out, off, margin, core;
    int ny, nx;
};

/* The smallest valid tile whose output core (a multiple of q) covers an h x w image: one pass. */
static unet_status one_pass_tile(unet_ctx *ctx, const unet_model *m, int h, int w, int shrink,
                                 int q, int *T) {
    const int side = h > w ? h : w;
    int oh, ow;
    unet_status s = unet_model_round_size(ctx, m, side + shrink, T);
    while (s == UNET_STATUS_OK &&
           (s = unet_model_output_size(ctx, m, *T, *T, &oh, &ow)) == UNET_STATUS_OK &&
           oh / q * q < side)
        s = unet_model_round_size(ctx, m, *T + 1, T);
    return s;
}

static unet_status plan_tiles(unet_ctx *ctx, const unet_model *m, int h, int w,
                              const unet_predict_opts *o, struct tiling *t) {
    int oh, ow;
    unet_status s;
    bool same = true;
    int probe_in;
    s = unet_model_round_size(ctx, m, 64, &probe_in);
    if (s != UNET_STATUS_OK) return s;
    s = unet_model_output_size(ctx, m, probe_in, probe_in, &oh, &ow);
    if (s != UNET_STATUS_OK) return s;
    same = oh == probe_in;
    int shrink = probe_in - oh; /* context lost by valid convolutions */
    const int q = pool_factor(m);
    int margin = same ? (o->overlap / 2 + q - 1) / q * q : 0;
    /* One tile for the whole image when it fits under max_tile (no tile given) or in the given
     * tile: overlapping tiles would only compute its pixels again (a 512x512 image in 512-pixel
     * tiles with the default overlap took four passes). */
    int one;
    s = one_pass_tile(ctx, m, h, w, shrink, q, &one);
    if (s != UNET_STATUS_OK) return s;
    int T = o->tile;
    if (T > 0) {
        int r;
        s = unet_model_round_size(ctx, m, T, &r);
        if (s != UNET_STATUS_OK) return s;
        if (r != T)
            return unet__fail(ctx, UNET_STATUS_ARG,
                              "tile %d is not a valid input size for this network (next valid: %d)",
                              T, r);
    } else {
        T = o->max_tile;
        /* Rounding may go over max_tile by less than one period. */
        s = unet_model_round_size(ctx, m, T, &T);
        if (s != UNET_STATUS_OK) return s;
    }
    if (one <= T) T = one, margin = 0; /* a single tile: nothing to discard */
    s = unet_model_output_size(ctx, m, T, T, &oh, &ow);
    if (s != UNET_STATUS_OK) return s;
    t->T_in = T;
    t->T_out = oh;
    t->off = (T - oh) / 2;
    t->margin = margin;
    t->core = (oh - 2 * margin) / q * q;
    if (t->core < 1)
        return unet__fail(ctx, UNET_STATUS_ARG,
                          "overlap %d leaves no output in a %d-pixel tile (output %d)", o->overlap,
                          T, oh);
    t->ny = (h + t->core - 1) / t->core;
    t->nx = (w + t->core - 1) / t->core;
    return UNET_STATUS_OK;
}

static long core_start(int i, int core) {
    return (long)i * core;
}

/* Plain (no TTA) prediction of image into out (classes, h, w). */
static unet_status predict_plain(unet_ctx *ctx, unet_model *m, const float *image, int h, int w,
                                 const unet_predict_opts *o, float *out, unet_progress_fn progress,
                                 void *user, int *done, int total_all) {
    struct tiling t;
    unet_status s = plan_tiles(ctx, m, h, w, o, &t);
    if (s != UNET_STATUS_OK) return s;
    const int C = m->cfg.in_channels, K = m->cfg.classes;
    const int total = t.ny * t.nx;
    const int B = o->batch < total ? o->batch : total; /* buffers for the tiles there are */
    if ((uint64_t)t.T_in * (uint64_t)t.T_in > unet_ctx_max_pixels(ctx))
        return unet__fail(ctx, UNET_STATUS_ARG,
                          "predict: a %dx%d tile exceeds the %llu-pixel limit (use a smaller --tile)",
                          t.T_in, t.T_in, (unsigned long long)unet_ctx_max_pixels(ctx));
    size_t in_tile = (size_t)C * t.T_in * t.T_in, out_tile = (size_t)K * t.T_out * t.T_out;
    size_t fx[3] = {sizeof(float), in_tile, (size_t)B}, fy[3] = {sizeof(float), out_tile, (size_t)B};
    size_t bx, by;
    if (!unet__prod_size(fx, 3, &bx) || !unet__prod_size(fy, 3, &by))
        return unet__fail(ctx, UNET_STATUS_NOMEM, "predict: %d tiles of %d pixels overflow", B, t.T_in);
    float *x = unet__alloc(bx);
    float *y = unet__alloc(by);
    if (!x || !y) {
        unet__free(x);
        unet__free(y);
        return unet__fail(ctx, UNET_STATUS_NOMEM, "predict: cannot allocate %d tiles of %d pixels",
                          B, t.T_in);
    }
    for (int first = 0; first < total && s == UNET_STATUS_OK; first += B) {
        int nb = total - first < B ? total - first : B;
        for (int b = 0; b < nb; b++) {
            int i = (first + b) / t.nx, j = (first + b) % t.nx;
            long y0 = core_start(i, t.core), x0 = core_start(j, t.core);
            read_window(x + in_tile * b, image, C, h, w, y0 - t.off - t.margin,
                        x0 - t.off - t.margin, t.T_in);
        }
        s = unet_model_forward(ctx, m, x, nb, t.T_in, t.T_in, y);
        if (s != UNET_STATUS_OK) break;
        for (int b = 0; b < nb; b++) {
            int i = (first + b) / t.nx, j = (first + b) % t.nx;
            long y0 = core_start(i, t.core), x0 = core_start(j, t.core);
            int ch = (int)(h - y0 < t.core ? h - y0 : t.core);
            int cw = (int)(w - x0 < t.core ? w - x0 : t.core);
            const float *yt = y + out_tile * b;
            for (int k = 0; k < K; k++)
                for (int r = 0; r < ch; r++)
                    memcpy(out + ((size_t)k * h + (size_t)(y0 + r)) * w + x0,
                           yt + ((size_t)k * t.T_out + t.margin + r) * t.T_out + t.margin,
                           sizeof(float) * (size_t)cw);
        }
        *done += nb;
        if (progress && progress(*done, total_all, user)) {
            s = unet__fail(ctx, UNET_STATUS_INTERRUPTED, "predict: stopped after %d of %d tiles",
                           *done, total_all);
        }
    }
    unet__free(x);
    unet__free(y);
    return s;
}

/* Dihedral transform t (0..7) of a (c, h, w) image: bit 0 flips columns, bit 1 flips rows,
 * bit 2 transposes (applied last).  Output is (c, w, h) when transposed.  inverse_add: the
 * inverse instead, of a (c, oh, ow) map src, added into dst (c, h, w). */
static void dihedral(float *dst, const float *src, int c, int h, int w, int t, bool inverse_add) {
    bool fx = t & 1, fy = t & 2, tr = t & 4;
    int oh = tr ? w : h, ow = tr ? h : w;
    for (int ch = 0; ch < c; ch++)
        for (int y = 0; y < oh; y++)
            for (int x = 0; x < ow; x++) {
                int sy = tr ? x : y, sx = tr ? y : x;
                if (fy) sy = h - 1 - sy;
                if (fx) sx = w - 1 - sx;
                const size_t o = ((size_t)ch * oh + y) * ow + x, i = ((size_t)ch * h + sy) * w + sx;
                if (inverse_add) dst[i] += src[o];
                else dst[o] = src[i];
            }
}

static int count_tiles(unet_ctx *ctx, const unet_model *m, int h, int w, const unet_predict_opts *o) {
    struct tiling t;
    if (plan_tiles(ctx, m, h, w, o, &t) != UNET_STATUS_OK) return 1;
    return t.ny * t.nx;
}

/* An output with no finite value at all is a failure (the model overflowed on this input: huge
 * input values, or weights that overflow); some non-finite values are the caller's to report
 * (unet_count_nonfinite). */
static unet_status check_output(unet_ctx *ctx, const float *out, size_t n) {
    if (unet_count_nonfinite(out, n) < n) return UNET_STATUS_OK;
    return unet__fail(ctx, UNET_STATUS_NUMERIC,
                      "predict: every output value is NaN or infinite (the network overflows on "
                      "this input: are its values far beyond the range the model was trained "
                      "on?)");
}

size_t unet_count_nonfinite(const float *x, size_t n) {
    size_t k = 0;
    for (size_t i = 0; x && i < n; i++) k += !(x[i] - x[i] == 0.0f);
    return k;
}

unet_status unet_predict(unet_ctx *ctx, unet_model *m, const float *image, int h, int w,
                         const unet_predict_opts *opts, float *out, unet_progress_fn progress,
                         void *user) {
    if (!m || !image || !out) return unet__fail(ctx, UNET_STATUS_ARG, "predict: NULL argument");
    if (h < 1 || w < 1) return unet__fail(ctx, UNET_STATUS_ARG, "predict: image size %dx%d", h, w);
    unet_predict_opts o = opts ? *opts : unet_predict_defaults();
    if (o.overlap < 0) return unet__fail(ctx, UNET_STATUS_ARG, "overlap: %d < 0", o.overlap);
    if (o.tile < 0 || o.batch < 1 || o.max_tile < 1 ||
        (o.output != UNET_OUTPUT_PROBABILITIES && o.output != UNET_OUTPUT_LOGITS))
        return unet__fail(ctx, UNET_STATUS_ARG,
                          "predict: tile %d (>= 0), max_tile %d (>= 1), batch %d (>= 1), output %d",
                          o.tile, o.max_tile, o.batch, (int)o.output);
    const int C = m->cfg.in_channels, K = m->cfg.classes;
    const size_t P = (size_t)h * w;
    /* A NaN pixel spreads through every convolution that sees it (half the logits of a small
     * image, a mask of background) without any error: refuse it, saying where. */
    size_t bad = unet__first_nonfinite(image, (size_t)C * P, false);
    if (bad < (size_t)C * P)
        return unet__fail(ctx, UNET_STATUS_NUMERIC,
                          "predict: the image holds %g at channel %zu, pixel (y %zu, x %zu); "
                          "replace non-finite values before predicting",
                          (double)image[bad], bad / P, bad % P / (size_t)w, bad % (size_t)w);
    int done = 0;
    if (!o.tta) {
        int total = count_tiles(ctx, m, h, w, &o);
        unet_status s = predict_plain(ctx, m, image, h, w, &o, out, progress, user, &done, total);
        if (s == UNET_STATUS_OK && o.output == UNET_OUTPUT_PROBABILITIES) to_probabilities(out, K, P);
        return s == UNET_STATUS_OK ? check_output(ctx, out, (size_t)K * P) : s;
    }
    /* Test-time augmentation: the 8 flips/rotations, each predicted and mapped back; the
     * probabilities (or logits) are averaged. */
    float *img_t = unet__alloc(sizeof(float) * (size_t)C * P);
    float *out_t = unet__alloc(sizeof(float) * (size_t)K * P);
    if (!img_t || !out_t) {
        unet__free(img_t);
        unet__free(out_t);
        return unet__fail(ctx, UNET_STATUS_NOMEM, "predict: out of memory for test-time augmentation");
    }
    memset(out, 0, sizeof(float) * (size_t)K * P);
    int total = 8 * count_tiles(ctx, m, h, w, &o);
    unet_status s = UNET_STATUS_OK;
    for (int t = 0; t < 8 && s == UNET_STATUS_OK; t++) {
        int th = (t & 4) ? w : h, tw = (t & 4) ? h : w;
        dihedral(img_t, image, C, h, w, t, false);
        s = predict_plain(ctx, m, img_t, th, tw, &o, out_t, progress, user, &done, total);
        if (s != UNET_STATUS_OK) break;
        if (o.output == UNET_OUTPUT_PROBABILITIES) to_probabilities(out_t, K, P);
        dihedral(out, out_t, K, h, w, t, true);
    }
    for (size_t i = 0; i < (size_t)K * P; i++) out[i] *= 0.125f;
    unet__free(img_t);
    unet__free(out_t);
    return s == UNET_STATUS_OK ? check_output(ctx, out, (size_t)K * P) : s;
}

unet_status unet_probabilities(unet_ctx *ctx, float *out, int classes, int h, int w) {
    if (!out || classes < 1 || classes > UNET_MAX_CLASSES || h < 1 || w < 1)
        return unet__fail(ctx, UNET_STATUS_ARG, "probabilities: bad arguments");
    unet__use_threads(unet__threads(ctx));
    to_probabilities(out, classes, (size_t)h * w);
    return UNET_STATUS_OK;
}

void unet_argmax(const float *out, int classes, int h, int w, unet_output kind, int32_t *labels) {
    const size_t P = (size_t)h * w;
    const float threshold = kind == UNET_OUTPUT_PROBABILITIES ? 0.5f : 0.0f;
#pragma omp parallel for schedule(static)
    for (size_t p = 0; p < P; p++) {
        if (classes == 1) {
            labels[p] = out[p] > threshold;
            continue;
        }
        int best = 0;
        for (int c = 1; c < classes; c++)
            if (out[(size_t)c * P + p] > out[(size_t)best * P + p]) best = c;
        labels[p] = best;
    }
}

unet_status unet_overlay(unet_ctx *ctx, const float *gray, const int32_t *labels, int h, int w,
                         uint8_t *rgb) {
    if (!gray || !labels || !rgb || h < 1 || w < 1)
        return unet__fail(ctx, UNET_STATUS_ARG, "overlay: bad arguments");
    static const uint8_t colors[][3] = {{255, 220, 0}, {0, 220, 255}, {255, 0, 220},
                                        {80, 255, 80}, {255, 120, 0}, {120, 120, 255}};
    const size_t P = (size_t)h * w;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            size_t i = (size_t)y * w + x;
            float g = gray[i];
            uint8_t v = (uint8_t)(g <= 0.0f ? 0 : g >= 1.0f ? 255 : (int)lrintf(g * 255.0f));
            int32_t l = labels[i];
            /* An outline pixel: labelled (> 0) with a 4-neighbour of another label. */
            bool edge = false;
            if (l > 0) {
                edge = (y > 0 && labels[i - w] != l) || (y + 1 < h && labels[i + w] != l) ||
                       (x > 0 && labels[i - 1] != l) || (x + 1 < w && labels[i + 1] != l);
            }
            if (edge) {
                const uint8_t *c = colors[(l - 1) % 6];
                rgb[i] = c[0], rgb[P + i] = c[1], rgb[2 * P + i] = c[2];
            } else {
                rgb[i] = rgb[P + i] = rgb[2 * P + i] = v;
            }
        }
    return UNET_STATUS_OK;
}
