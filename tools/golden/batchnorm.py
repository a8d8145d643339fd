"""BatchNorm2d: training forward and backward, eval forward, running-statistics updates.

batchnorm.safetensors, case<i>.cfg = [N, C, H, W, affine, mode]
  mode 0, one training step: x, gamma, beta (when affine), rm0, rv0 (running stats before),
          r (the upstream gradient dy), y, dx, dgamma, dbeta (when affine), rm, rv (running
          stats after), mean, rstd (batch mean and 1/sqrt(biased var + eps)).
  mode 1, eval: x, gamma, beta (when affine), rm0, rv0, y.
  mode 2, two training steps on x then x2: x, x2, gamma, beta, rm0, rv0, y, y2, and rm, rv
          after both steps.
eps = 1e-5, momentum = 0.1 (nn.BatchNorm2d's defaults).  Computed in float64 from
float32-representable inputs, so the reference is exact for the values C sees.
"""
import torch

from st import save


def rnd(*shape, grad=True):
    """Float32 values held in float64: the reference is exact for the inputs C sees."""
    return torch.randn(*shape).double().requires_grad_(grad)


CASES = [
    # N C  H  W affine mode  offset scale   (x = offset + scale * randn)
    (2, 3, 5, 4, 1, 0, 0.0, 1.0),    # plain
    (1, 4, 3, 7, 1, 0, 0.0, 1.0),    # N = 1, plane size 21 (not a multiple of 4)
    (3, 2, 1, 1, 1, 0, 0.0, 1.0),    # 1x1 planes: the statistics run over the batch only
    (2, 3, 4, 5, 0, 0, 0.0, 1.0),    # affine off
    (2, 5, 6, 3, 1, 0, 10.0, 2.0),   # mean far from 0 (two-pass variance)
    (2, 3, 9, 11, 1, 0, 0.0, 0.1),   # small variance, larger planes
    (2, 3, 5, 5, 1, 1, 0.0, 1.0),    # eval
    (1, 3, 3, 3, 0, 1, 0.5, 2.0),    # eval, affine off
    (2, 3, 4, 3, 1, 2, 0.0, 1.0),    # two training steps
    (1, 2, 5, 3, 0, 2, 1.0, 3.0),    # two training steps, N = 1, affine off
]


def make(out):
    t = {}
    for i, (N, C, H, W, affine, mode, offset, scale) in enumerate(CASES):
        bn = torch.nn.BatchNorm2d(C, eps=1e-5, momentum=0.1, affine=bool(affine)).double()
        k = f"case{i}."
        t[k + "cfg"] = torch.tensor([N, C, H, W, affine, mode], dtype=torch.int64)
        x = (offset + scale * torch.randn(N, C, H, W)).double().requires_grad_(True)
        rm0 = torch.randn(C).double() * 0.5
        rv0 = (torch.rand(C) + 0.5).double()
        with torch.no_grad():
            bn.running_mean.copy_(rm0)
            bn.running_var.copy_(rv0)
            if affine:
                bn.weight.copy_(rnd(C, grad=False))
                bn.bias.copy_(rnd(C, grad=False))
        t[k + "x"] = x.float()
        if affine:
            t[k + "gamma"], t[k + "beta"] = bn.weight.float(), bn.bias.float()
        t[k + "rm0"], t[k + "rv0"] = rm0.float(), rv0.float()
        if mode == 1:
            bn.eval()
            t[k + "y"] = bn(x).float()
            continue
        bn.train()
        y = bn(x)
        t[k + "y"] = y.float()
        if mode == 0:
            r = rnd(*y.shape, grad=False)
            (y * r).sum().backward()
            t[k + "r"], t[k + "dx"] = r.float(), x.grad.float()
            if affine:
                t[k + "dgamma"], t[k + "dbeta"] = bn.weight.grad.float(), bn.bias.grad.float()
            xd = x.detach()
            var = xd.var(dim=(0, 2, 3), unbiased=False)
            t[k + "mean"] = xd.mean(dim=(0, 2, 3)).float()
            t[k + "rstd"] = (1.0 / torch.sqrt(var + 1e-5)).float()
        else:
            x2 = (offset + scale * torch.randn(N, C, H, W)).double()
            t[k + "x2"], t[k + "y2"] = x2.float(), bn(x2).float()
        t[k + "rm"], t[k + "rv"] = bn.running_mean.float(), bn.running_var.float()
    save(f"{out}/batchnorm.safetensors", t)
