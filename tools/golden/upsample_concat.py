"""Bilinear upsampling, skip concatenation with crop or pad, FCN's crop-and-add, and crop alone.

upsample_concat.safetensors.  Every case's cfg starts with its kind:
  kind 0, bilinear upsampling, F.interpolate(x, size=(H_out, W_out), mode='bilinear'):
      cfg = [0, N, C, H_in, W_in, H_out, W_out, align_corners]        tensors x, r, y, dx
  kind 1, channel concatenation y = cat([place(a), place(b)], 1) as the U-Net ports write it:
      cfg = [1, N, C_a, H_a, W_a, C_b, H_b, W_b, H, W,
             off_a_h, off_a_w, off_b_h, off_b_w, style]                 tensors a, b, r, y, da, db
      style 0: milesial/Pytorch-UNet's Up.forward (a = skip x2, b = upsampled x1, F.pad on x1);
      style 1: the paper's crop_and_concat (a = skip, centre-cropped to b's size).
  kind 2, FCN's skip fusion y = a + crop(b) (Caffe Crop layer at a fixed offset, then Eltwise SUM),
      or with a smaller b, a + F.pad(b):
      cfg = [2, N, C, H, W, H_b, W_b, off_h, off_w]                    tensors a, b, r, y, da, db
  kind 3, a crop or zero pad alone, y = place(x) (FCN's final Crop of upscore to the image):
      cfg = [3, N, C, H_in, W_in, H, W, off_h, off_w]                  tensors x, r, y, dx
place(x)[c, i, j] = x[c, i + off_h, j + off_w], zero outside x; the offsets are computed here from
the PyTorch code being matched, and the C test checks unet__place_center reproduces them.
r is the upstream gradient: the backward pass is of L = sum(y * r).  Computed in float64 from
float32-representable inputs, so the reference is exact for the values C sees.
"""
import torch
import torch.nn.functional as F

from st import save


def rnd(*shape, grad=True):
    """Float32 values held in float64: the reference is exact for the inputs C sees."""
    return torch.randn(*shape).double().requires_grad_(grad)


UPSAMPLE_CASES = [
    # N C H_in W_in H_out W_out align_corners
    (2, 3, 5, 3, 10, 6, 1),   # 2x, odd input (U-Net's bilinear Up: align_corners=True)
    (2, 3, 5, 3, 10, 6, 0),   # 2x, align_corners=False (F.interpolate's default)
    (1, 2, 4, 5, 7, 9, 1),    # not a multiple of the input
    (1, 2, 4, 5, 7, 9, 0),
    (1, 2, 4, 5, 1, 1, 1),    # output 1x1: scale 0, the first pixel
    (1, 2, 4, 5, 1, 3, 0),    # output 1 in one dimension: the centre, (in - 1) / 2
    (1, 2, 1, 3, 4, 6, 1),    # input 1 in one dimension: in - 1 == 0
    (1, 2, 1, 3, 4, 6, 0),
    (1, 2, 9, 7, 4, 5, 0),    # downsampling
    (1, 2, 5, 4, 5, 8, 1),    # H unchanged (PyTorch's copy branch), W 2x
]

# U-Net skip connections: (N, C_a, H_a, W_a, C_b, H_b, W_b, style)
CONCAT_CASES = [
    (2, 3, 9, 7, 2, 6, 4, 0),    # milesial, odd differences 3 and 3: 1 zero before, 2 after
    (1, 2, 8, 9, 3, 5, 8, 0),    # milesial, differences 3 and 1
    (1, 2, 6, 5, 2, 6, 5, 0),    # milesial, equal sizes (the usual case: no padding)
    (2, 3, 11, 9, 2, 6, 4, 1),   # paper, differences 5 and 5: crop 2 before, 3 after
    (1, 2, 10, 13, 3, 7, 8, 1),  # paper, differences 3 and 5
]

# FCN fusion: (N, C, H, W, H_b, W_b, off_h, off_w)
ADD_CASES = [
    (1, 3, 4, 5, 10, 11, 5, 5),  # FCN-16s: score_pool4c = crop(score_pool4, upscore2, offset 5)
    (2, 2, 5, 4, 15, 9, 9, 4),   # FCN-8s pool3 offset 9, a different offset per dimension
    (1, 2, 6, 7, 4, 4, -1, -2),  # b smaller: zero padded (F.pad)
]

# Crop or pad alone: (N, C, H_in, W_in, H, W, off_h, off_w)
CROP_CASES = [
    (1, 2, 13, 14, 5, 6, 3, 4),  # FCN's final crop of upscore to the image
    (2, 2, 4, 6, 7, 4, -2, 1),   # pad rows, crop columns
]


def place(x, H, W, off_h, off_w):
    """place(x)[..., i, j] = x[..., i + off_h, j + off_w], zero outside: F.pad with negative
    pads cropping."""
    return F.pad(x, [-off_w, W - x.shape[3] + off_w, -off_h, H - x.shape[2] + off_h])


def milesial_up_cat(x2, x1):
    """milesial/Pytorch-UNet unet_parts.py Up.forward after self.up: pad x1 to x2, cat."""
    diffY = x2.size()[2] - x1.size()[2]
    diffX = x2.size()[3] - x1.size()[3]
    x1 = F.pad(x1, [diffX // 2, diffX - diffX // 2, diffY // 2, diffY - diffY // 2])
    return torch.cat([x2, x1], dim=1), (0, 0, -(diffY // 2), -(diffX // 2))


def paper_crop_and_concat(skip, up):
    """The paper's copy and crop: centre crop of the skip map to the upsampled size, then cat."""
    H, W = up.size(2), up.size(3)
    dy = (skip.size(2) - H) // 2
    dx = (skip.size(3) - W) // 2
    return torch.cat([skip[:, :, dy:dy + H, dx:dx + W], up], 1), (dy, dx, 0, 0)


def make(out):
    t = {}
    i = 0

    def put(cfg, **tensors):
        t[f"case{i}.cfg"] = torch.tensor(cfg, dtype=torch.int64)
        for name, v in tensors.items():
            t[f"case{i}.{name}"] = v.detach().float()

    for (N, C, hi, wi, ho, wo, ac) in UPSAMPLE_CASES:
        x = rnd(N, C, hi, wi)
        y = F.interpolate(x, size=(ho, wo), mode="bilinear", align_corners=bool(ac))
        r = rnd(*y.shape, grad=False)
        (y * r).sum().backward()
        put([0, N, C, hi, wi, ho, wo, ac], x=x, r=r, y=y, dx=x.grad)
        i += 1

    for (N, ca, ha, wa, cb, hb, wb, style) in CONCAT_CASES:
        a, b = rnd(N, ca, ha, wa), rnd(N, cb, hb, wb)
        y, offs = milesial_up_cat(a, b) if style == 0 else paper_crop_and_concat(a, b)
        H, W = y.shape[2], y.shape[3]
        r = rnd(*y.shape, grad=False)
        (y * r).sum().backward()
        put([1, N, ca, ha, wa, cb, hb, wb, H, W, *offs, style],
            a=a, b=b, r=r, y=y, da=a.grad, db=b.grad)
        i += 1

    for (N, C, H, W, hb, wb, oh, ow) in ADD_CASES:
        a, b = rnd(N, C, H, W), rnd(N, C, hb, wb)
        if oh >= 0 and ow >= 0:
            y = a + b[:, :, oh:oh + H, ow:ow + W]   # Caffe's Crop layer, then Eltwise SUM
        else:
            y = a + place(b, H, W, oh, ow)
        r = rnd(*y.shape, grad=False)
        (y * r).sum().backward()
        put([2, N, C, H, W, hb, wb, oh, ow], a=a, b=b, r=r, y=y, da=a.grad, db=b.grad)
        i += 1

    for (N, C, hi, wi, H, W, oh, ow) in CROP_CASES:
        x = rnd(N, C, hi, wi)
        y = place(x, H, W, oh, ow)
        r = rnd(*y.shape, grad=False)
        (y * r).sum().backward()
        put([3, N, C, hi, wi, H, W, oh, ow], x=x, r=r, y=y, dx=x.grad)
        i += 1

    save(f"{out}/upsample_concat.safetensors", t)
