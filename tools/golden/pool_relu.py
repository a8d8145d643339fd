"""MaxPool2d(2, 2), ReLU, Dropout and Dropout2d, forward and backward.

pool_relu.safetensors, case<i>.cfg = [op, N, C, H, W, kind]
  op 0, max_pool2d(kernel 2, stride 2): x, y, argmax (U8: the window index 0..3, row-major,
        from PyTorch's flat indices), r (dy), dx.  kind: 0 random, 1 many ties, 2 NaN, +-inf and
        an all -inf window.
  op 1, relu on x (N, C, H, W) with special values (NaN, +-0, +-inf): x, y, r, dx.
  op 2, dropout; op 3, dropout2d: x, p (F32, one value), mask (U8 1 = keep; (N, C, H, W) or
        (N, C)), y, r, dx.  kind 1: a NaN sits in a dropped position (x * 0 keeps it NaN).
These ops select or scale, so they run in float32 (the dtype C uses); the reference is exact.
The dropout mask is PyTorch's own: the same seed runs F.dropout on x and on ones.
"""
import torch
import torch.nn.functional as F

from st import save

NAN, INF = float("nan"), float("inf")

POOL_CASES = [
    # N C H W kind
    (2, 3, 7, 5, 0),   # odd H and W: the last row and column are dropped
    (1, 2, 6, 8, 1),   # integer values in -2..2: ties everywhere, the first maximum wins
    (2, 2, 5, 7, 2),   # NaN (one, two in a window), +inf, -inf, a window of -inf
    (1, 3, 3, 3, 0),   # 3x3 -> 1x1
]
DROPOUT_CASES = [
    # op N C H W kind p
    (2, 2, 3, 5, 7, 0, 0.3),
    (2, 2, 3, 4, 4, 1, 0.5),   # NaN at a dropped position
    (2, 1, 2, 3, 3, 0, 0.0),   # p = 0: the identity
    (2, 1, 1, 6, 5, 0, 0.9),   # large scale 1 / (1 - p) = 10
    (3, 2, 6, 5, 3, 0, 0.5),   # Dropout2d
    (3, 3, 4, 2, 5, 0, 0.25),  # Dropout2d
]


def pool_input(N, C, H, W, kind):
    if kind == 1:
        return torch.randint(-2, 3, (N, C, H, W)).float()
    x = torch.randn(N, C, H, W)
    if kind == 2:
        x[0, 0, 0, 1] = NAN                    # window (0, 0): NaN after a number
        x[0, 0, 2, 2] = NAN                    # window (1, 1): two NaNs, the last one wins
        x[0, 0, 3, 3] = NAN
        x[0, 1, 0:2, 0:2] = -INF               # window of -inf: index 0
        x[1, 0, 1, 1] = INF                    # +inf beats everything
        x[1, 1, 2, 2] = INF                    # +inf then NaN: NaN wins
        x[1, 1, 3, 2] = NAN
        x[1, 1, 4, 0] = NAN                    # NaN in the dropped last row: no effect
    return x


def make(out):
    t = {}
    i = 0
    for N, C, H, W, kind in POOL_CASES:
        x = pool_input(N, C, H, W, kind).requires_grad_(True)
        y, idx = F.max_pool2d(x, 2, 2, return_indices=True)
        r = torch.randn(*y.shape)
        y.backward(r)
        Ho, Wo = y.shape[2], y.shape[3]
        ih, iw = idx // W, idx % W
        oh = torch.arange(Ho).view(1, 1, Ho, 1)
        ow = torch.arange(Wo).view(1, 1, 1, Wo)
        win = (ih - 2 * oh) * 2 + (iw - 2 * ow)
        assert int(win.min()) >= 0 and int(win.max()) <= 3
        k = f"case{i}."
        t[k + "cfg"] = torch.tensor([0, N, C, H, W, kind], dtype=torch.int64)
        t[k + "x"], t[k + "y"], t[k + "argmax"] = x.detach(), y.detach(), win.to(torch.uint8)
        t[k + "r"], t[k + "dx"] = r, x.grad
        i += 1

    x = torch.randn(2, 3, 4, 5)
    x.view(-1)[:8] = torch.tensor([NAN, 0.0, -0.0, INF, -INF, 1e-30, -1e-30, 3.0])
    x.requires_grad_(True)
    y = torch.relu(x)
    r = torch.randn(*y.shape)
    r.view(-1)[1] = INF                        # an infinite gradient at a clipped point
    y.backward(r)
    k = f"case{i}."
    t[k + "cfg"] = torch.tensor([1, 2, 3, 4, 5, 0], dtype=torch.int64)
    t[k + "x"], t[k + "y"], t[k + "r"], t[k + "dx"] = x.detach(), y.detach(), r, x.grad
    i += 1

    for op, N, C, H, W, kind, p in DROPOUT_CASES:
        drop = F.dropout if op == 2 else F.dropout2d
        seed = 100 + i
        x = torch.randn(N, C, H, W)
        torch.manual_seed(seed)
        keep = drop(torch.ones(N, C, H, W), p, training=True) != 0
        if kind == 1:
            x[~keep] = torch.where(torch.arange(int((~keep).sum())) == 0, NAN, x[~keep])
        x.requires_grad_(True)
        torch.manual_seed(seed)
        y = drop(x, p, training=True)
        r = torch.randn(*y.shape)
        y.backward(r)
        mask = keep if op == 2 else keep[:, :, 0, 0]
        k = f"case{i}."
        t[k + "cfg"] = torch.tensor([op, N, C, H, W, kind], dtype=torch.int64)
        t[k + "x"], t[k + "p"] = x.detach(), torch.tensor([p], dtype=torch.float32)
        t[k + "mask"], t[k + "y"] = mask.to(torch.uint8), y.detach()
        t[k + "r"], t[k + "dx"] = r, x.grad
        i += 1
    save(f"{out}/pool_relu.safetensors", t)
