/* optim.c — SGD (momentum, Nesterov, weight decay) and Adam / AdamW parameter updates.
 *
 * Each step is one flat loop over the parameters (STYLE.md section 4: parameters, gradients and
 * moments share one layout), split over threads in blocks of elements: every element is updated
 * by one thread with the same operations, so the result does not depend on the thread count.
 * The loop is compiled per instruction set (a kernel row's sgd and adam, ops/kernels.h) as an
 * `omp simd` loop: the baseline build has no FMA instruction, so there fmaf is a libm call per
 * element and the loop stays scalar.  The scalar Adam step took 135 ms on one thread for the
 * seed U-Net's 31M parameters, the AVX-512 loop 24 (it was not bound by memory bandwidth); a
 * bf16 training step at 256x256 b4, 2 threads, spends 30-34 ms outside its layers instead of
 * 92-129 (bench_unet scale).  The vector instructions round as the scalar ones (fma, sqrt and
 * division are correctly rounded), so every copy gives the same bits; optim.c is built with
 * -fno-math-errno (Makefile), without which neither compiler vectorizes sqrtf.
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
 * the same bits on 1 and 4 threads and by every instruction set's copy.
 */
#include "ops/kernels.h"

#include <math.h>
#include <stddef.h>

/* torch/optim/sgd.py, _single_tensor_sgd, dampening 0:
 *     d_p = d_p.add(param, alpha=weight_decay)                    if weight_decay != 0
 *     buf.mul_(momentum).add_(d_p)                                 if momentum != 0
 *     d_p = d_p.add(buf, alpha=momentum) if nesterov else buf
 *     param.add_(d_p, alpha=-lr)
 * PyTorch starts the buffer as a clone of d_p; ours starts at zero and 0 * momentum + d_p = d_p
 * exactly, so the first step is the same. */
/* The update loop for one combination of the options, each a constant where it is inlined
 * (sgd_range), so that the loop has no branch and no select: both keep GCC from vectorizing. */
static inline __attribute__((always_inline)) void
sgd_loop(float *restrict p, const float *restrict g, float *restrict buf, size_t lo, size_t hi,
         float lr, float mom, float wd, bool decay, bool momentum, bool nesterov) {
#pragma omp simd
    for (size_t i = lo; i < hi; i++) {
        float d = g[i];
        if (decay) d = fmaf(wd, p[i], d);
        if (momentum) {
            float b = buf[i] * mom;
            b = b + d;
            buf[i] = b;
            d = nesterov ? fmaf(mom, b, d) : b;
        }
        p[i] = fmaf(-lr, d, p[i]);
    }
}

static inline __attribute__((always_inline)) void
sgd_range(float *p, const float *g, float *buf, size_t lo, size_t hi,
          const struct unet__optim_consts *c) {
    const float lr = c->lr, mom = c->beta1, wd = c->l2;
    if (mom == 0.0f) {
        if (wd != 0.0f) sgd_loop(p, g, buf, lo, hi, lr, mom, wd, true, false, false);
        else sgd_loop(p, g, buf, lo, hi, lr, mom, wd, false, false, false);
    } else if (c->nesterov) {
        if (wd != 0.0f) sgd_loop(p, g, buf, lo, hi, lr, mom, wd, true, true, true);
        else sgd_loop(p, g, buf, lo, hi, lr, mom, wd, false, true, true);
    } else {
        if (wd != 0.0f) sgd_loop(p, g, buf, lo, hi, lr, mom, wd, true, true, false);
        else sgd_loop(p, g, buf, lo, hi, lr, mom, wd, false, true, false);
    }
}

/* Blocks of elements that the threads share out (a multiple of any vector width). */
enum { OPTIM_BLOCK = 1 << 16 };

void unet__sgd_step(float *p, const float *g, float *buf, size_t n, const struct unet__sgd *o) {
    const struct unet__optim_consts c = {.lr = (float)o->lr, .beta1 = (float)o->momentum,
                                         .l2 = (float)o->weight_decay, .nesterov = o->nesterov};
    UNET_ASSERT(c.beta1 == 0.0f || buf);
    const unet__sgd_fn step = unet__kernels_pick(UNET__PRECISION_F32)->sgd;
    const ptrdiff_t blocks = (ptrdiff_t)((n + OPTIM_BLOCK - 1) / OPTIM_BLOCK);
#pragma omp parallel for schedule(static)
    for (ptrdiff_t b = 0; b < blocks; b++) {
        const size_t lo = (size_t)b * OPTIM_BLOCK, hi = n - lo < OPTIM_BLOCK ? n : lo + OPTIM_BLOCK;
        step(p, g, buf, lo, hi, &c);
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
/* As sgd_loop: decoupled (AdamW: p decays) and l2 (Adam: g += l2 p) constants where inlined. */
static inline __attribute__((always_inline)) void
adam_loop(float *restrict p, const float *restrict g, float *restrict m, float *restrict v,
          size_t lo, size_t hi, const struct unet__optim_consts *c, bool decoupled, bool add_l2) {
    const float b1 = c->beta1, one_b1 = c->one_b1, b2 = c->beta2, one_b2 = c->one_b2;
    const float bc2_sqrt = c->bc2_sqrt, eps = c->eps, neg_step_size = -c->lr;
    const float decay = c->decay, l2 = c->l2;
#pragma omp simd
    for (size_t i = lo; i < hi; i++) {
        float pi = p[i];
        float gi = g[i];
        if (decoupled) pi = pi * decay;
        else if (add_l2) gi = fmaf(l2, pi, gi);
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

static inline __attribute__((always_inline)) void
adam_range(float *p, const float *g, float *m, float *v, size_t lo, size_t hi,
           const struct unet__optim_consts *c) {
    if (c->decoupled) adam_loop(p, g, m, v, lo, hi, c, true, false);
    else if (c->l2 != 0.0f) adam_loop(p, g, m, v, lo, hi, c, false, true);
    else adam_loop(p, g, m, v, lo, hi, c, false, false);
}

void unet__adam_step(float *p, const float *g, float *m, float *v, size_t n,
                     const struct unet__adam *o, long step) {
    UNET_ASSERT(step >= 1);
    const double lr = o->lr, beta1 = o->beta1, beta2 = o->beta2;
    const double wd = o->weight_decay;
    const double bc1 = 1.0 - pow(beta1, (double)step);
    const double bc2 = 1.0 - pow(beta2, (double)step);
    const struct unet__optim_consts c = {
        .lr = (float)(lr / bc1), /* the step size */
        .beta1 = (float)beta1, .one_b1 = (float)(1.0 - beta1),
        .beta2 = (float)beta2, .one_b2 = (float)(1.0 - beta2),
        .bc2_sqrt = (float)sqrt(bc2), .eps = (float)o->eps,
        .decay = (float)(1.0 - lr * wd), /* AdamW's factor */
        .l2 = (float)wd,                 /* Adam's L2 coefficient */
        .decoupled = o->decoupled};
    const unet__adam_fn update = unet__kernels_pick(UNET__PRECISION_F32)->adam;
    const ptrdiff_t blocks = (ptrdiff_t)((n + OPTIM_BLOCK - 1) / OPTIM_BLOCK);
#pragma omp parallel for schedule(static)
    for (ptrdiff_t b = 0; b < blocks; b++) {
        const size_t lo = (size_t)b * OPTIM_BLOCK, hi = n - lo < OPTIM_BLOCK ? n : lo + OPTIM_BLOCK;
        update(p, g, m, v, lo, hi, &c);
    }
}

/* The copies of the kernel rows (ops/kernels.c): sgd_range and adam_range compiled for one
 * instruction set each. */
#define OPTIM_COPIES(level, target)                                                            \
    target void unet__sgd_range_##level(float *p, const float *g, float *buf, size_t lo,       \
                                        size_t hi, const struct unet__optim_consts *c) {       \
        sgd_range(p, g, buf, lo, hi, c);                                                       \
    }                                                                                          \
    target void unet__adam_range_##level(float *p, const float *g, float *m, float *v,         \
                                         size_t lo, size_t hi,                                 \
                                         const struct unet__optim_consts *c) {                 \
        adam_range(p, g, m, v, lo, hi, c);                                                     \
    }

OPTIM_COPIES(portable, )
#ifdef UNET__X86
OPTIM_COPIES(avx2, UNET__TARGET_AVX2)
OPTIM_COPIES(avx512, UNET__TARGET_AVX512)
#endif

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
