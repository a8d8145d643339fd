"""Conv2d and ConvTranspose2d, forward and backward.

conv.safetensors, case<i>.cfg = [N, C_in, H, W, C_out, K, stride, pad, bias]
convt.safetensors, case<i>.cfg = [N, C_in, H, W, C_out, K, stride, pad, bias, output_padding]
Tensors: x, w, b (when bias), r (the upstream gradient dy), y, dx, dw, db.
"""
import torch
import torch.nn.functional as F

from st import save


def rnd(*shape, grad=True):
    """Float32 values held in float64: the reference is exact for the inputs C sees."""
    return torch.randn(*shape).double().requires_grad_(grad)

CONV_CASES = [
    # N C_in H  W  C_out K s p bias
    (2, 3, 7, 6, 4, 3, 1, 1, 1),   # same padding, odd sizes
    (1, 2, 9, 9, 3, 3, 1, 0, 0),   # valid convolution (the paper's)
    (2, 3, 8, 7, 2, 3, 2, 1, 1),   # stride 2
    (2, 5, 5, 4, 3, 1, 1, 0, 1),   # 1x1 (U-Net's head)
    (1, 2, 11, 10, 2, 7, 1, 3, 0), # large kernel (FCN's fc6 as 7x7)
    (1, 4, 6, 5, 2, 2, 2, 0, 1),   # k2 s2
]
CONVT_CASES = [
    # N C_in H W C_out K s p bias outpad
    (2, 4, 5, 4, 3, 2, 2, 0, 1, 0),  # U-Net's 2x2 up-convolution
    (1, 3, 4, 5, 2, 4, 2, 1, 0, 0),  # FCN's upscore2 (k4 s2)
    (1, 2, 3, 3, 2, 3, 1, 1, 1, 0),  # stride 1
    (2, 2, 3, 4, 3, 3, 2, 1, 1, 1),  # output padding
    (1, 2, 3, 3, 2, 16, 8, 0, 0, 0), # FCN-8s final upsampling (k16 s8)
]


def make(out):
    t = {}
    for i, (N, ci, H, W, co, K, s, p, bias) in enumerate(CONV_CASES):
        x = rnd(N, ci, H, W)
        w = rnd(co, ci, K, K)
        b = rnd(co) if bias else None
        y = F.conv2d(x, w, b, stride=s, padding=p)
        r = rnd(*y.shape, grad=False)
        (y * r).sum().backward()
        k = f"case{i}."
        t[k + "cfg"] = torch.tensor([N, ci, H, W, co, K, s, p, bias], dtype=torch.int64)
        t[k + "x"], t[k + "w"], t[k + "r"], t[k + "y"] = x.float(), w.float(), r.float(), y.float()
        t[k + "dx"], t[k + "dw"] = x.grad.float(), w.grad.float()
        if bias:
            t[k + "b"], t[k + "db"] = b.float(), b.grad.float()
    save(f"{out}/conv.safetensors", t)

    t = {}
    for i, (N, ci, H, W, co, K, s, p, bias, op) in enumerate(CONVT_CASES):
        x = rnd(N, ci, H, W)
        w = rnd(ci, co, K, K)
        b = rnd(co) if bias else None
        y = F.conv_transpose2d(x, w, b, stride=s, padding=p, output_padding=op)
        r = rnd(*y.shape, grad=False)
        (y * r).sum().backward()
        k = f"case{i}."
        t[k + "cfg"] = torch.tensor([N, ci, H, W, co, K, s, p, bias, op], dtype=torch.int64)
        t[k + "x"], t[k + "w"], t[k + "r"], t[k + "y"] = x.float(), w.float(), r.float(), y.float()
        t[k + "dx"], t[k + "dw"] = x.grad.float(), w.grad.float()
        if bias:
            t[k + "b"], t[k + "db"] = b.float(), b.grad.float()
    save(f"{out}/convt.safetensors", t)
