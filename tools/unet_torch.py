"""The PyTorch reference for unet's architectures: same modules, same names, same concat order.

UNet is milesial/Pytorch-UNet's UNet (unet/unet_model.py, unet/unet_parts.py) generalised to
any depth and base width; with depth=4, base=64 its state_dict is milesial's, key for key.
paper=True gives Ronneberger et al.'s network: valid 3x3 convs with bias, no BatchNorm,
the skip centre-cropped, dropout after the last two contracting levels.

Used by make_golden.py (tests), convert.py (checkpoints) and the training/benchmark comparisons.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class DoubleConv(nn.Module):
    def __init__(self, cin, cout, mid=None, bias=False, bn=True, padding=1):
        super().__init__()
        mid = mid or cout
        layers = [nn.Conv2d(cin, mid, 3, padding=padding, bias=bias)]
        if bn:
            layers.append(nn.BatchNorm2d(mid))
        layers += [nn.ReLU(inplace=True), nn.Conv2d(mid, cout, 3, padding=padding, bias=bias)]
        if bn:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU(inplace=True))
        self.double_conv = nn.Sequential(*layers)

    def forward(self, x):
        return self.double_conv(x)


class Down(nn.Module):
    def __init__(self, cin, cout, **kw):
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(cin, cout, **kw))

    def forward(self, x):
        return self.maxpool_conv(x)


class Up(nn.Module):
    def __init__(self, cin, cout, bilinear, pad_mode=True, **kw):
        super().__init__()
        self.pad_mode = pad_mode
        if bilinear:
            self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
            self.conv = DoubleConv(cin, cout, cin // 2, **kw)
        else:
            self.up = nn.ConvTranspose2d(cin, cin // 2, kernel_size=2, stride=2)
            self.conv = DoubleConv(cin, cout, **kw)

    def forward(self, x1, x2):
        x1 = self.up(x1)
        if self.pad_mode:
            # milesial: pad the upsampled map to the skip's size
            dy = x2.size(2) - x1.size(2)
            dx = x2.size(3) - x1.size(3)
            x1 = F.pad(x1, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
        else:
            # the paper: centre-crop the skip to the upsampled map's size
            dy = (x2.size(2) - x1.size(2)) // 2
            dx = (x2.size(3) - x1.size(3)) // 2
            x2 = x2[:, :, dy:dy + x1.size(2), dx:dx + x1.size(3)]
        return self.conv(torch.cat([x2, x1], dim=1))


class OutConv(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=1)

    def forward(self, x):
        return self.conv(x)


class UNet(nn.Module):
    def __init__(self, n_channels=1, n_classes=2, base=64, depth=4, bilinear=False,
                 bias=False, paper=False, dropout=0.5):
        super().__init__()
        kw = dict(bias=True, bn=False, padding=0) if paper else dict(bias=bias, bn=True, padding=1)
        factor = 2 if bilinear else 1
        self.depth = depth
        self.paper = paper
        self.inc = DoubleConv(n_channels, base, **kw)
        for k in range(1, depth + 1):
            cout = (base << k) // (factor if k == depth else 1)
            setattr(self, f"down{k}", Down(base << (k - 1), cout, **kw))
        for k in range(1, depth + 1):
            cin = base << (depth - k + 1)
            cout = base if k == depth else (base << (depth - k)) // factor
            setattr(self, f"up{k}", Up(cin, cout, bilinear, pad_mode=not paper, **kw))
        self.outc = OutConv(base, n_classes)
        self.drop = nn.Dropout(dropout) if paper and dropout > 0 else None

    def forward(self, x):
        x = self.inc(x)
        skips = [x]
        for k in range(1, self.depth + 1):
            x = getattr(self, f"down{k}")(x)
            if self.drop is not None and k >= self.depth - 1:
                x = self.drop(x)
            skips.append(x)
        x = skips.pop()
        for k in range(1, self.depth + 1):
            x = getattr(self, f"up{k}")(x, skips.pop())
        return self.outc(x)


def from_meta(meta):
    """A UNet from unet's safetensors __metadata__ (see src/checkpoint.c)."""
    return UNet(n_channels=int(meta.get("in_channels", 1)), n_classes=int(meta.get("classes", 2)),
                base=int(meta.get("base", 64)), depth=int(meta.get("depth", 4)),
                bilinear=meta.get("up", "transpose") == "bilinear",
                bias=meta.get("conv_bias", "0") == "1", paper=meta.get("arch") == "unet-paper",
                dropout=float(meta.get("dropout", 0.5)))


def meta_of(model, arch=None):
    """unet's __metadata__ for a UNet built here."""
    up = "bilinear" if isinstance(model.up1.up, nn.Upsample) else "transpose"
    first = model.inc.double_conv[0]
    return {
        "format": "unet", "arch": arch or ("unet-paper" if model.paper else "unet"),
        "in_channels": str(first.in_channels), "classes": str(model.outc.conv.out_channels),
        "base": str(first.out_channels), "depth": str(model.depth), "up": up,
        "conv_bias": "1" if first.bias is not None else "0",
        "batchnorm": "0" if model.paper else "1", "padding": "0" if model.paper else "1",
        "dropout": str(model.drop.p if model.drop is not None else 0.0),
    }
