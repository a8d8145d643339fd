"""Losses (softmax cross entropy, BCE with logits, soft Dice) and optimizers (SGD, Adam, AdamW).

loss_optim.safetensors; case<i>.cfg[0] is the kind:
  losses     cfg = [kind, N, C, H, W, has_weight, ignore_index]   kind 0 CE, 1 BCE, 2 Dice
             tensors: logits (N, C, H, W), target (N, H, W) int64, weight (N, H, W) when
             has_weight, eps (1,) for Dice, loss (1,) float64, dlogits = dloss/dlogits.
  optimizers cfg = [kind, n, steps, flag]   kind 10 SGD (flag nesterov), 11 Adam (flag decoupled,
             i.e. AdamW)
             tensors: hyper float64 = [lr, momentum, weight_decay] (SGD) or
             [lr, beta1, beta2, eps, weight_decay] (Adam); p0 (n); grads (steps, n), the gradient
             fed to each step; params (steps, n), the parameters after each step.

The losses are computed in float64 from float32-representable inputs, so the reference is exact
for the values C sees.  The optimizers run in float32 with torch's single-tensor implementation
(foreach=False), the code path whose float32 rounding unet reproduces.
"""
import torch
import torch.nn.functional as F

from st import save

IGNORE_NONE = -1

LOSS_CASES = [
    # kind N  C  H  W  weight ignore_index  logit scale
    (0, 2, 3, 5, 7, 0, IGNORE_NONE, 3.0),   # CE plain, odd sizes: F.cross_entropy
    (0, 2, 4, 3, 5, 1, IGNORE_NONE, 3.0),   # CE with a weight map
    (0, 2, 3, 4, 5, 0, 255, 3.0),           # CE, some pixels ignore_index 255
    (0, 1, 2, 6, 5, 1, 1, 3.0),             # CE, weight and an in-range ignore_index (class 1)
    (0, 1, 3, 3, 3, 0, 255, 3.0),           # CE, every pixel ignored: loss 0, gradient 0
    (0, 1, 5, 3, 4, 0, IGNORE_NONE, 40.0),  # CE with huge logits: exp must not overflow
    (1, 2, 1, 5, 6, 0, IGNORE_NONE, 3.0),   # BCE
    (1, 1, 1, 7, 3, 1, IGNORE_NONE, 3.0),   # BCE with a weight map
    (1, 1, 1, 4, 5, 0, IGNORE_NONE, 40.0),  # BCE with huge logits
    (2, 2, 3, 5, 4, 0, IGNORE_NONE, 2.0),   # Dice, softmax over 3 classes
    (2, 2, 1, 4, 5, 0, IGNORE_NONE, 2.0),   # Dice, sigmoid (C == 1)
    (2, 1, 4, 3, 5, 0, IGNORE_NONE, 2.0),   # Dice, class 3 absent from the target
]
DICE_EPS = 1e-6


def rnd(*shape, scale=1.0):
    """Float32 values held in float64: the reference is exact for the inputs C sees."""
    return (torch.randn(*shape) * scale).float().double().requires_grad_(True)


def ce_ref(x, t, w, ii):
    """Mean over non-ignored pixels of w * -log softmax(x)[t]; 0 when all are ignored."""
    if w is None and ii == IGNORE_NONE:
        return F.cross_entropy(x, t)
    keep = torch.ones_like(t, dtype=torch.bool) if ii == IGNORE_NONE else t != ii
    l = F.cross_entropy(x, t, reduction="none", ignore_index=ii if ii >= 0 else -100)
    if w is not None:
        l = l * w
    return l.sum() / max(int(keep.sum()), 1)


def dice_ref(x, t, eps):
    """ops.h's formula: 1 - mean_c (2 sum p_c y_c + eps) / (sum p_c + sum y_c + eps)."""
    C = x.shape[1]
    if C == 1:
        p = torch.sigmoid(x)
        y = t.unsqueeze(1).double()
    else:
        p = torch.softmax(x, dim=1)
        y = F.one_hot(t, C).permute(0, 3, 1, 2).double()
    inter = (p * y).sum(dim=(0, 2, 3))
    sets = p.sum(dim=(0, 2, 3)) + y.sum(dim=(0, 2, 3))
    return 1 - ((2 * inter + eps) / (sets + eps)).mean()


def make_losses(t):
    for i, (kind, N, C, H, W, has_w, ii, scale) in enumerate(LOSS_CASES):
        k = f"case{i}."
        x = rnd(N, C, H, W, scale=scale)
        ncls = 2 if C == 1 else C   # BCE and Dice with C == 1: background / foreground
        tgt = torch.randint(0, ncls, (N, H, W))
        if kind == 2 and i == len(LOSS_CASES) - 1:
            tgt = torch.randint(0, C - 1, (N, H, W))
        if ii >= 0:
            if i == 4:
                tgt[:] = ii
            else:
                tgt[torch.rand(N, H, W) < 0.3] = ii
        w = torch.rand(N, H, W).float().double() * 2 if has_w else None
        if kind == 0:
            loss = ce_ref(x, tgt, w, ii)
        elif kind == 1:
            loss = F.binary_cross_entropy_with_logits(x[:, 0], tgt.double(), weight=w)
        else:
            loss = dice_ref(x, tgt, DICE_EPS)
            t[k + "eps"] = torch.tensor([DICE_EPS], dtype=torch.float32)
        loss.backward()
        t[k + "cfg"] = torch.tensor([kind, N, C, H, W, has_w, ii], dtype=torch.int64)
        t[k + "logits"], t[k + "target"] = x.float(), tgt
        if w is not None:
            t[k + "weight"] = w.float()
        t[k + "loss"] = loss.detach().reshape(1)
        t[k + "dlogits"] = x.grad.float()
    return len(LOSS_CASES)


OPTIM_CASES = [
    # kind flag  hyper
    (10, 0, [0.1, 0.0, 0.0]),                   # SGD
    (10, 0, [0.01, 0.9, 0.0]),                  # SGD with momentum
    (10, 1, [0.1, 0.9, 1e-2]),                  # SGD, Nesterov momentum and weight decay
    (11, 0, [1e-3, 0.9, 0.999, 1e-8, 0.0]),     # Adam
    (11, 0, [3e-3, 0.8, 0.99, 1e-6, 1e-2]),     # Adam with (L2) weight decay
    (11, 1, [1e-3, 0.9, 0.999, 1e-8, 1e-2]),    # AdamW
]
OPTIM_N = 40      # 32 through torch's AVX2 loop (2 x 8 lanes), 8 through its scalar tail
OPTIM_STEPS = 10


def make_optims(t, first):
    for j, (kind, flag, hyper) in enumerate(OPTIM_CASES):
        k = f"case{first + j}."
        p = torch.randn(OPTIM_N).requires_grad_(True)
        p0 = p.detach().clone()
        if kind == 10:
            lr, mom, wd = hyper
            opt = torch.optim.SGD([p], lr=lr, momentum=mom, weight_decay=wd, nesterov=bool(flag),
                                  foreach=False)
        else:
            lr, b1, b2, eps, wd = hyper
            cls = torch.optim.AdamW if flag else torch.optim.Adam
            opt = cls([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, foreach=False)
        # Gradients of mixed magnitude, a few exact zeros and tiny ones (Adam's eps matters).
        mag = torch.tensor([10.0 ** e for e in range(-7, 2)])[torch.randint(0, 9, (OPTIM_N,))]
        grads = torch.randn(OPTIM_STEPS, OPTIM_N) * mag
        grads[:, :3] = 0
        params = torch.empty(OPTIM_STEPS, OPTIM_N)
        for s in range(OPTIM_STEPS):
            p.grad = grads[s].clone()
            opt.step()
            params[s] = p.detach()
        t[k + "cfg"] = torch.tensor([kind, OPTIM_N, OPTIM_STEPS, flag], dtype=torch.int64)
        t[k + "hyper"] = torch.tensor(hyper, dtype=torch.float64)
        t[k + "p0"], t[k + "grads"], t[k + "params"] = p0, grads, params


def make(out):
    t = {}
    n = make_losses(t)
    make_optims(t, n)
    save(f"{out}/loss_optim.safetensors", t)
