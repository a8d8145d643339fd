/* optim.c — SGD (momentum, Nesterov, weight decay) and Adam / AdamW parameter updates.
 *
 * Each step is one flat loop over the parameters (STYLE.md section 4: parameters, gradients and
 * moments share one layout), split over threads by element: every element is updated by one
 * thread with the same operations, so the result does not depend on the thread count.  The loops
 * are not vectorised: built without -mfma, fmaf is a libm call (glibc selects the FMA instruction
 * at run time), and an `omp simd` the compiler cannot honour only makes clang warn.  A step reads
 * and writes each parameter once, so it is bound by memory bandwidth either way.
 *
 * The formulas are PyTorch 1.13's single-tensor (foreach=False) code in torch/optim/sgd.py,
 * adam.py and adamw.py, rounded the way its float32 CPU kernels round them, so that a run in
 * C and a run in PyTorch stay bit-identical step after step (checked by tests/test_loss_optim.c
 * against tools/golden/loss_optim.py).  What that takes:
 *   - Tensor ops round after each op.  `a.add_(b, alpha=s)` is one fused multiply-add
 *     (ATen's add is vec::fmadd(b, alpha, a)), and so is `addcmul_` (GCC contracts
 *     self + s*t1*t2 into fma(s*t1, t2, self)); `mul_` and `addcdiv_` round every product and
 *     quotient.  Hence the explicit fmaf calls below, and one rounding per statement elsewhere:
 *     C11 keeps separate statements from being contracted.  Dropping the fma changes the
 *     parameters by 1e-6 to 1e-5 relative within ten steps (cancellation in p - lr d).
 *   - Python scalars are doubles: 1 - beta1 ** step, lr / bias_correction1, sqrt(bias_correction2)
 *     and 1 - lr * weight_decay are computed in double from the hyperparameters as the user typed
 *     them (0.9, not the float 0.899999976) and rounded to float once, when the kernel takes them;
 *     the structs in ops.h hold doubles for that reason.  With the float values instead the bias correction is off by 2.4e-7 and the parameters drift
 *     by up to 2e-6 relative in ten Adam steps.
 *
 * Contract (ops.h): p, g and the moments are n floats in the parameter block's layout; p and
 * the moments are updated in place, g only read.  Tested (tests/test_loss_optim.c) against ten
 * PyTorch steps of each optimizer (golden loss_optim), the first step's closed form, and for
 * the same bits on 1 and 2 threads.
 */
#include "ops/ops.h"

#include <math.h>
#include <stddef.h>

/* torch/optim/sgd.py, _single_tensor_sgd, dampening 0:
 *     d_p = d_p.add(param, alpha=weight_decay)                    if weight_decay != 0
 *     buf.mul_(momentum).add_(d_p)                                 if momentum != 0
 *     d_p = d_p.add(buf, alpha=momentum) if nesterov else buf
 *     param.add_(d_p, alpha=-lr)
 * PyTorch starts the buffer as a clone of d_p; ours starts at zero and 0 * momentum + d_p = d_p
 * exactly, so the first step is the same. */
void unet__sgd_step(float *p, const float *g, float *buf, size_t n, const struct unet__sgd *o) {
    const float lr  = (float)o->lr;
    const float mom = (float)o->momentum;
    const float wd  = (float)o->weight_decay;
    const bool  nesterov = o->nesterov;
    const ptrdiff_t len = (ptrdiff_t)n;
    UNET_ASSERT(mom == 0.0f || buf);
#pragma omp parallel for schedule(static)
    for (ptrdiff_t i = 0; i < len; i++) {
        float d = g[i];
        if (wd != 0.0f) d = fmaf(wd, p[i], d);
        if (mom != 0.0f) {
            float b = buf[i] * mom;
            b = b + d;
            buf[i] = b;
            d = nesterov ? fmaf(mom, b, d) : b;
        }
        p[i] = fmaf(-lr, d, p[i]);
    }
}

/* torch/optim/adam.py and adamw.py, _single_tensor_adam(w), amsgrad off:
 *     param.mul_(1 - lr * weight_decay)                            AdamW
 *     grad = grad.add(param, alpha=weight_decay)                   Adam, if weight_decay != 0
 *     exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
 *     exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
 *     bias_correction1 = 1 - beta1 ** step;  bias_correction2 = 1 - beta2 ** step
 *     step_size = lr / bias_correction1
 *     denom = (exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(eps)
 *     param.addcdiv_(exp_avg, denom, value=-step_size)
 * The scalars are Python doubles, rounded to float where a kernel receives them. */
void unet__adam_step(float *p, const float *g, float *m, float *v, size_t n,
                     const struct unet__adam *o, long step) {
    UNET_ASSERT(step >= 1);
    const double lr = o->lr, beta1 = o->beta1, beta2 = o->beta2;
    const double wd = o->weight_decay;
    const double bc1 = 1.0 - pow(beta1, (double)step);
    const double bc2 = 1.0 - pow(beta2, (double)step);
    const float  b1 = (float)beta1, one_b1 = (float)(1.0 - beta1);
    const float  b2 = (float)beta2, one_b2 = (float)(1.0 - beta2);
    const float  bc2_sqrt = (float)sqrt(bc2);
    const float  eps = (float)o->eps;
    const float  neg_step_size = (float)-(lr / bc1);
    const float  decay = (float)(1.0 - lr * wd);    /* AdamW's factor */
    const float  l2 = (float)wd;                    /* Adam's L2 coefficient */
    const bool   decoupled = o->decoupled;
    const ptrdiff_t len = (ptrdiff_t)n;
#pragma omp parallel for schedule(static)
    for (ptrdiff_t i = 0; i < len; i++) {
        float pi = p[i];
        float gi = g[i];
        if (decoupled) pi = pi * decay;
        else if (l2 != 0.0f) gi = fmaf(l2, pi, gi);
        float mi = m[i] * b1;
        mi = fmaf(one_b1, gi, mi);
        float vi = v[i] * b2;
        float t = one_b2 * gi;
        vi = fmaf(t, gi, vi);
        float denom = sqrtf(vi) / bc2_sqrt;
        denom = denom + eps;
        float u = neg_step_size * mi;
        u = u / denom;
        p[i] = pi + u;
        m[i] = mi;
        v[i] = vi;
    }
}

/* ---- gradient-norm clipping ---- */

#define NORM_BLOCK 8192
#define NORM_MAX_BLOCKS 1024

double unet__l2_norm(const float *g, size_t n) {
    /* Blocks of at least NORM_BLOCK elements, at most NORM_MAX_BLOCKS of them. */
    size_t nb = (n + NORM_BLOCK - 1) / NORM_BLOCK;
    if (nb > NORM_MAX_BLOCKS) nb = NORM_MAX_BLOCKS;
    if (nb < 1) nb = 1;
    double part[NORM_MAX_BLOCKS];
    const ptrdiff_t nblocks = (ptrdiff_t)nb;
#pragma omp parallel for schedule(static)
    for (ptrdiff_t b = 0; b < nblocks; b++) {
        size_t lo = (size_t)((unsigned long long)n * (size_t)b / nb);
        size_t hi = (size_t)((unsigned long long)n * (size_t)(b + 1) / nb);
        double s = 0.0;
        for (size_t i = lo; i < hi; i++) s += (double)g[i] * (double)g[i];
        part[b] = s;
    }
    double total = 0.0;
    for (size_t b = 0; b < nb; b++) total += part[b];
    return sqrt(total);
}

/* torch 1.13, torch/nn/utils/clip_grad.py:
 *     total_norm = torch.norm(torch.stack([torch.norm(g, 2) for g in grads]), 2)
 *     clip_coef = max_norm / (total_norm + 1e-6)
 *     clip_coef_clamped = torch.clamp(clip_coef, max=1.0)
 *     for g in grads: g.mul_(clip_coef_clamped)
 * total_norm is a float32 tensor, so the coefficient is float32 arithmetic, and Tensor.__rdiv__
 * is reciprocal(self) * other: 1 / (norm + 1e-6) rounded, then times max_norm rounded. */
double unet__clip_grad_norm(float *g, size_t n, double max_norm, bool *clipped) {
    const double norm = unet__l2_norm(g, n);
    if (clipped) *clipped = false;
    if (!isfinite(norm)) return norm;
    const float nf = (float)norm;
    const float denom = nf + 1e-6f;
    const float inv = 1.0f / denom;
    const float coef = inv * (float)max_norm;
    if (!(coef < 1.0f)) return norm;
    const ptrdiff_t len = (ptrdiff_t)n;
#pragma omp parallel for schedule(static)
    for (ptrdiff_t i = 0; i < len; i++) g[i] = g[i] * coef;
    if (clipped) *clipped = true;
    return norm;
}
