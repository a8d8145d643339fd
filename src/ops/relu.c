/* relu.c — ReLU, forward and backward, elementwise.
 *
 *     y  = x < 0 ? 0 : x           (NaN stays NaN and -0 stays -0, as torch.relu)
 *     dx += y <= 0 ? 0 : dy        (PyTorch's threshold_backward on the output)
 * Backward reads the output rather than the input so the forward may run in place.  It is a
 * select, not dy * (y > 0): the product would turn an infinite dy at a clipped point into NaN,
 * and PyTorch passes the gradient where y is NaN (NaN <= 0 is false), which this matches.
 *
 * Threads: the element range is split statically; small tensors stay on the calling thread
 * because starting a team costs more than the loop.
 *
 * Contract (ops.h): n floats, y may alias x; forward overwrites y, backward accumulates into
 * dx, unet__relu_mask_grad masks dy in place.  Tested (tests/test_pool_relu_dropout.c) against
 * PyTorch (golden pool_relu) and by finite differences away from the kink.
 */
#include "ops/ops.h"

/* Below this many elements one thread is faster than a team. */
#define PARALLEL_MIN ((size_t)1 << 15)

void unet__relu_forward(float *y, const float *x, size_t n) {
#pragma omp parallel for simd schedule(static) if (n >= PARALLEL_MIN)
    for (size_t i = 0; i < n; i++)
        y[i] = x[i] < 0.0f ? 0.0f : x[i];
}

void unet__relu_backward(float *dx, const float *dy, const float *y, size_t n) {
    /* Inverts y = x < 0 ? 0 : x. */
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN)
    for (size_t i = 0; i < n; i++)
        dx[i] += y[i] <= 0.0f ? 0.0f : dy[i];
}

void unet__relu_mask_grad(float *dy, const float *y, size_t n) {
    /* dy = y <= 0 ? 0 : dy: the backward above in place, for a ReLU fused into its producer. */
#pragma omp parallel for simd schedule(static) if (n >= PARALLEL_MIN)
    for (size_t i = 0; i < n; i++)
        dy[i] = y[i] <= 0.0f ? 0.0f : dy[i];
}
