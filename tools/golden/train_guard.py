"""Learning-rate schedules and gradient-norm clipping, as torch computes them.

train_guard.safetensors; case<i>.cfg[0] is the kind:
  schedules  cfg = [0, schedule, T, W, n_milestones]   schedule 0 constant, 1 cosine, 2 poly,
             3 step (unet_schedule_kind's order)
             tensors: hyper float64 = [power, gamma, milestone fractions...];
             factor float64 (T,): param_groups[0]["lr"] / lr0 before the optimizer step of each
             step t = 0..T-1, from torch.optim.lr_scheduler (ChainedScheduler of
             LinearLR(start_factor 1/W, total_iters W - 1) and the decay when W > 1).
  clipping   cfg = [1, n_tensors, n]                    (n elements in all)
             tensors: sizes int64 (n_tensors,); max_norm float64 (1,); grads float32 (n,) the
             gradients concatenated; clipped float32 (n,) after
             torch.nn.utils.clip_grad_norm_(params, max_norm); norm float32 (1,) its return value.
"""
import math

import torch

from st import save

# kind, T, W, milestones (fractions)
SCHEDULES = [
    (0, 30, 0, []),               # constant
    (0, 30, 7, []),               # constant with a warm-up
    (1, 50, 0, []),               # cosine
    (1, 50, 5, []),               # cosine with a warm-up
    (2, 40, 0, []),               # poly 0.9
    (2, 40, 4, []),               # poly with a warm-up
    (3, 40, 0, [0.5, 0.75]),      # step at floor(0.5 T), floor(0.75 T)
    (3, 17, 3, [0.3, 0.31, 0.9]), # step: two milestones on one step (gamma^2), warm-up
    (1, 1, 0, []),                # a one-step run
]
POWER, GAMMA, LR0 = 0.9, 0.1, 0.25


def schedule_factors(kind, T, W, ms):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=LR0)
    S = torch.optim.lr_scheduler
    parts = []
    if W > 1:
        parts.append(S.LinearLR(opt, start_factor=1.0 / W, end_factor=1.0, total_iters=W - 1))
    if kind == 1:
        parts.append(S.CosineAnnealingLR(opt, T_max=T, eta_min=0.0))
    elif kind == 2:
        parts.append(S.PolynomialLR(opt, total_iters=T, power=POWER))
    elif kind == 3:
        parts.append(S.MultiStepLR(opt, milestones=[math.floor(f * T) for f in ms], gamma=GAMMA))
    sched = S.ChainedScheduler(parts) if parts else None
    out = []
    for _ in range(T):
        out.append(opt.param_groups[0]["lr"] / LR0)
        opt.step()
        if sched:
            sched.step()
    return out


# tensor sizes, max_norm, gradient scale
CLIPS = [
    ([7, 3, 40], 1.0, 1.0),          # clipped
    ([7, 3, 40], 100.0, 1.0),        # below the bound: untouched
    ([1000, 64, 2500, 1], 0.5, 3.0), # several blocks of the C sum
    ([5], 2.0, 1e-3),                # tiny gradients, no clipping
]


def make(out):
    t = {}
    i = 0
    for kind, T, W, ms in SCHEDULES:
        k = f"case{i}."
        t[k + "cfg"] = torch.tensor([0, kind, T, W, len(ms)], dtype=torch.int64)
        t[k + "hyper"] = torch.tensor([POWER, GAMMA] + ms, dtype=torch.float64)
        t[k + "factor"] = torch.tensor(schedule_factors(kind, T, W, ms), dtype=torch.float64)
        i += 1
    for sizes, max_norm, scale in CLIPS:
        k = f"case{i}."
        params = [torch.nn.Parameter(torch.zeros(s)) for s in sizes]
        for p in params:
            p.grad = torch.randn(p.shape) * scale
        grads = torch.cat([p.grad.clone() for p in params])
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        t[k + "cfg"] = torch.tensor([1, len(sizes), grads.numel()], dtype=torch.int64)
        t[k + "sizes"] = torch.tensor(sizes, dtype=torch.int64)
        t[k + "max_norm"] = torch.tensor([max_norm], dtype=torch.float64)
        t[k + "grads"] = grads
        t[k + "clipped"] = torch.cat([p.grad for p in params])
        t[k + "norm"] = norm.reshape(1).float()
        i += 1
    save(f"{out}/train_guard.safetensors", t)
