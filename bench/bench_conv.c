/* bench_conv.c — one 3x3 convolution (stride 1, padding 1, float32) through the library's fast
 * paths (Winograd where it applies), each pass timed with 1 and 2 threads alternated in one
 * process, so that the machine's load hits both alike: where a layer loses the second thread
 * (docs/performance.md, "Issue 14's targets, session 9").
 *
 *     bench_conv N C_IN C_OUT SIZE RUNS [bf16]      e.g. bench_conv 4 64 64 256 7
 *
 * Prints, for the forward, the input gradient (dgrad) and the weight gradient (wgrad), the
 * median milliseconds per call over RUNS (after one warm-up call of each):
 *
 *     CONV pass=wgrad n=4 c_in=64 c_out=64 size=256 t1_ms=... t2_ms=... speedup=...
 *
 * and for "infer", the forward as a model's inference runs it: weights transformed once before
 * the timed calls (the weight cache, model.h), a folded batch-norm and ReLU in the epilogue.
 * bf16: all four passes on the bf16 row (float32's where this CPU has no AVX512_BF16; the
 * line's precision= says which ran).
 */
#include "ops/kernels.h"
#include "ops/ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

enum { MAX_RUNS = 64 };

static float *filled(size_t n, unsigned seed) {
    float *p = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
    for (size_t i = 0; p && i < n; i++) p[i] = (float)((i * 2654435761u + seed) % 1000) * 1e-3f;
    return p;
}

int main(int argc, char **argv) {
    if (argc != 6 && !(argc == 7 && !strcmp(argv[6], "bf16"))) {
        fprintf(stderr, "usage: bench_conv N C_IN C_OUT SIZE RUNS [bf16]\n");
        return 2;
    }
    const int n = atoi(argv[1]), c_in = atoi(argv[2]), c_out = atoi(argv[3]);
    const int size = atoi(argv[4]), runs = atoi(argv[5]);
    if (n < 1 || c_in < 1 || c_out < 1 || size < 1 || runs < 1 || runs > MAX_RUNS ||
        (double)n * (c_in > c_out ? c_in : c_out) * size * size > 1e9) {
        fprintf(stderr, "bench_conv: sizes out of range (RUNS 1..%d, maps up to 1e9 floats)\n",
                MAX_RUNS);
        return 2;
    }
    unet_ctx *ctx = unet_ctx_create();
    struct unet__conv2d_dims d = {.N = n, .C_in = c_in, .H_in = size, .W_in = size,
                                  .C_out = c_out, .K_h = 3, .K_w = 3, .stride_h = 1,
                                  .stride_w = 1, .pad_h = 1, .pad_w = 1};
    if (!ctx || unet__conv2d_dims_init(ctx, &d, "bench_conv") != UNET_STATUS_OK) {
        fprintf(stderr, "bench_conv: %s\n", ctx ? unet_ctx_errmsg(ctx) : "out of memory");
        return 1;
    }
    const size_t nx = (size_t)n * c_in * size * size, ny = (size_t)n * c_out * size * size;
    const size_t nw = (size_t)c_out * c_in * 9;
    float *x = filled(nx, 1), *dx = filled(nx, 2), *y = filled(ny, 3), *dy = filled(ny, 4);
    float *w = filled(nw, 5), *dw = filled(nw, 6), *b = filled((size_t)c_out, 7);
    float *scratch = filled(unet__conv2d_scratch_floats(&d) + 1, 8);
    const struct unet__kernels *row =
        unet__kernels_for(argc == 7 ? UNET__PRECISION_BF16 : UNET__PRECISION_F32);
    const bool wino = unet__winograd_applies(&d);
    float *u = wino ? filled(unet__winograd_weights_floats(&d, row), 9) : NULL;
    float *fold = filled(2 * (size_t)c_out, 10);
    if (!x || !dx || !y || !dy || !w || !dw || !b || !scratch || (wino && !u) || !fold) {
        fprintf(stderr, "bench_conv: out of memory\n");
        return 1;
    }
    if (u) unet__winograd_weights(u, w, &d, row);
    const struct unet__conv_how how = {.k = row}, cached = {.k = row, .wino_u = u};
    const struct unet__conv_epilogue bias = {.shift = b};
    const struct unet__conv_epilogue bn = {.scale = fold, .shift = fold + c_out, .relu = true};
    static const char *const pass_name[4] = {"fwd", "dgrad", "wgrad", "infer"};
    for (int pass = 0; pass < 4; pass++) {
        double t[2][MAX_RUNS];
        for (int r = -1; r < runs; r++) {
            for (int k = 0; k < 2; k++) {
                unet__use_threads(k + 1);
                const double t0 = bench_now();
                if (pass == 0)
                    unet__conv2d_forward_ep(y, x, w, &d, &bias, &how, scratch);
                else if (pass == 3)
                    unet__conv2d_forward_ep(y, x, w, &d, &bn, &cached, scratch);
                else
                    unet__conv2d_backward(pass == 1 ? dx : NULL, pass == 2 ? dw : NULL, NULL, dy,
                                          x, w, &d, &how, scratch);
                if (r >= 0) t[k][r] = bench_now() - t0;
            }
        }
        const double t1 = bench_median(t[0], runs), t2 = bench_median(t[1], runs);
        printf("CONV pass=%s n=%d c_in=%d c_out=%d size=%d precision=%s t1_ms=%.2f t2_ms=%.2f "
               "speedup=%.3f\n", pass_name[pass], n, c_in, c_out, size,
               row->precision == UNET__PRECISION_BF16 ? "bf16" : "fp32", t1 * 1e3, t2 * 1e3,
               t1 / t2);
    }
    free(x), free(dx), free(y), free(dy), free(w), free(dw), free(b), free(scratch), free(u);
    free(fold);
    unet_ctx_free(ctx);
    return 0;
}
