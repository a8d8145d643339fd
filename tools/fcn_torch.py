"""The PyTorch reference for unet's FCN-32s/16s/8s (src/fcn.c, docs/fcn.md) and for the VGG
classifier an FCN is convolutionalized from.

Module names are wkentaro/pytorch-fcn's (torchfcn/models/fcn{32,16,8}s.py), themselves the Caffe
reference's (fcn.berkeleyvision.org, voc-fcn*/net.py): conv1_1 .. conv5_3, fc6 (7x7 conv), fc7,
score_fr, upscore2, score_pool4, upscore_pool4, score_pool3, and the final upscore (32s),
upscore16 (16s) or upscore8 (8s); deconvolutions without bias.  Modules are registered in
execution order, which is unet's parameter table order.  Where this differs from pytorch-fcn
(unet does the same):
  - widths scale with base (64 = VGG16) and fc (0 = 64 * base = 4096), any in_channels;
  - dropout is element-wise (Caffe's Dropout layer), not Dropout2d;
  - crop offsets are derived from the layer geometry (coord_* below) instead of written down;
    with conv1_1's padding 100 they are the reference's 5, 9 and 19 / 27 / 31;
  - initialisation: PyTorch's defaults for the convolutions (pytorch-fcn zeroes them),
    score_pool4 and score_pool3 zero (the paper), deconvolutions bilinear (surgery.upsample_filt),
    and the final deconvolution frozen unless learn_final.
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

VGG_BLOCKS = (2, 2, 3, 3, 3)  # VGG16's convs per block


def upsample_filt(c_in, c_out, k):
    """surgery.upsample_filt as a (c_in, c_out, k, k) ConvTranspose2d weight, channel to channel."""
    factor = (k + 1) // 2
    center = factor - 1 if k % 2 == 1 else factor - 0.5
    og = np.ogrid[:k, :k]
    filt = (1 - abs(og[0] - center) / factor) * (1 - abs(og[1] - center) / factor)
    w = np.zeros((c_in, c_out, k, k), dtype=np.float64)
    for c in range(min(c_in, c_out)):
        w[c, c] = filt
    return torch.from_numpy(w).float()


# Pixel i of a map sits at input coordinate a * i + b: coordinates are (a, b).
def coord_conv(c, k, s, p):
    return (c[0] * s, c[1] + c[0] * ((k - 1) / 2 - p))


def coord_deconv(c, k, s):
    return (c[0] / s, c[1] - c[0] * (k - 1) / (2 * s))


def crop_offset(big, small):
    o = (small[1] - big[1]) / big[0]
    assert big[0] == small[0] and o == int(o)
    return int(o)


class FCN(nn.Module):
    def __init__(self, arch="fcn8s", in_channels=1, n_class=2, base=64, fc=0, padding=100,
                 dropout=0.5, learn_final=False):
        super().__init__()
        assert arch in ("fcn32s", "fcn16s", "fcn8s")
        self.arch = arch
        self.padding = padding
        F_ = fc or 64 * base
        at = (1.0, 0.0)
        c_in = in_channels
        pool_at = {}
        for b, n in enumerate(VGG_BLOCKS, 1):
            width = base << min(b - 1, 3)
            for j in range(1, n + 1):
                pad = padding if (b, j) == (1, 1) else 1
                setattr(self, f"conv{b}_{j}", nn.Conv2d(c_in, width, 3, padding=pad))
                at = coord_conv(at, 3, 1, pad)
                c_in = width
            setattr(self, f"pool{b}", nn.MaxPool2d(2, 2, ceil_mode=True))
            at = pool_at[b] = coord_conv(at, 2, 2, 0)
        self.fc6 = nn.Conv2d(c_in, F_, 7)
        self.drop6 = nn.Dropout(dropout)
        self.fc7 = nn.Conv2d(F_, F_, 1)
        self.drop7 = nn.Dropout(dropout)
        self.score_fr = nn.Conv2d(F_, n_class, 1)
        at = coord_conv(at, 7, 1, 0)

        def deconv(k, s):
            return nn.ConvTranspose2d(n_class, n_class, k, stride=s, bias=False)

        if arch == "fcn32s":
            self.upscore = deconv(64, 32)
            at = coord_deconv(at, 64, 32)
            final = self.upscore
        else:
            self.upscore2 = deconv(4, 2)
            at = coord_deconv(at, 4, 2)
            self.score_pool4 = nn.Conv2d(8 * base, n_class, 1)
            self.off_pool4 = crop_offset(pool_at[4], at)
            if arch == "fcn16s":
                self.upscore16 = deconv(32, 16)
                at = coord_deconv(at, 32, 16)
                final = self.upscore16
            else:
                self.upscore_pool4 = deconv(4, 2)
                at = coord_deconv(at, 4, 2)
                self.score_pool3 = nn.Conv2d(4 * base, n_class, 1)
                self.off_pool3 = crop_offset(pool_at[3], at)
                self.upscore8 = deconv(16, 8)
                at = coord_deconv(at, 16, 8)
                final = self.upscore8
        self.off = crop_offset(at, (1.0, 0.0))  # < 0: the upscored map lies inside the input
        for m in self.modules():
            if isinstance(m, nn.ConvTranspose2d):
                with torch.no_grad():
                    m.weight.copy_(upsample_filt(m.in_channels, m.out_channels, m.kernel_size[0]))
        for name in ("score_pool4", "score_pool3"):
            if hasattr(self, name):
                nn.init.zeros_(getattr(self, name).weight)
                nn.init.zeros_(getattr(self, name).bias)
        final.weight.requires_grad_(learn_final)

    def offsets(self):
        """The derived crop offsets: [score_pool4, score_pool3, final] (absent ones omitted)."""
        return [o for o in (getattr(self, "off_pool4", None), getattr(self, "off_pool3", None),
                            self.off) if o is not None]

    def forward(self, x):
        h = x
        pools = {}
        for b, n in enumerate(VGG_BLOCKS, 1):
            for j in range(1, n + 1):
                h = F.relu(getattr(self, f"conv{b}_{j}")(h))
            h = pools[b] = getattr(self, f"pool{b}")(h)
        h = self.drop6(F.relu(self.fc6(h)))
        h = self.drop7(F.relu(self.fc7(h)))
        h = self.score_fr(h)
        if self.arch == "fcn32s":
            h = self.upscore(h)
        else:
            h = self.upscore2(h)
            s, o = self.score_pool4(pools[4]), self.off_pool4
            h = h + s[:, :, o:o + h.size(2), o:o + h.size(3)]
            if self.arch == "fcn16s":
                h = self.upscore16(h)
            else:
                h = self.upscore_pool4(h)
                s, o = self.score_pool3(pools[3]), self.off_pool3
                h = h + s[:, :, o:o + h.size(2), o:o + h.size(3)]
                h = self.upscore8(h)
        if self.off >= 0:
            h = h[:, :, self.off:self.off + x.size(2), self.off:self.off + x.size(3)]
        return h.contiguous()


class VGGClassifier(nn.Module):
    """A VGG16-layout classifier (torchvision's VGG: 3x3 convs with padding 1, floor pools) with
    the FCN's conv names, and Linear fc6 (F, 8 base * 7 * 7) on the flattened (C, 7, 7) pool5
    features, fc7 (F, F), fc8 (classes, F).  Needs 224x224 inputs (pool5 7x7)."""

    def __init__(self, in_channels=3, n_class=1000, base=64, fc=0, dropout=0.5):
        super().__init__()
        F_ = fc or 64 * base
        c_in = in_channels
        for b, n in enumerate(VGG_BLOCKS, 1):
            width = base << min(b - 1, 3)
            for j in range(1, n + 1):
                setattr(self, f"conv{b}_{j}", nn.Conv2d(c_in, width, 3, padding=1))
                c_in = width
        self.fc6 = nn.Linear(c_in * 49, F_)
        self.fc7 = nn.Linear(F_, F_)
        self.fc8 = nn.Linear(F_, n_class)
        self.dropout = dropout

    def features(self, x):
        for b, n in enumerate(VGG_BLOCKS, 1):
            for j in range(1, n + 1):
                x = F.relu(getattr(self, f"conv{b}_{j}")(x))
            x = F.max_pool2d(x, 2, 2)
        return x

    def head(self, f):
        h = F.dropout(F.relu(self.fc6(f.flatten(1))), self.dropout, self.training)
        h = F.dropout(F.relu(self.fc7(h)), self.dropout, self.training)
        return self.fc8(h)

    def forward(self, x):
        return self.head(self.features(x))


def convolutionalize(clf, arch="fcn8s", padding=1):
    """The FCN whose fc6/fc7/score_fr are clf's fc6/fc7/fc8 reshaped (what unet_convolutionalize
    writes); the new layers keep their initialisation (score_pool zero, deconvolutions bilinear)."""
    base = clf.conv1_1.out_channels
    fcn = FCN(arch, clf.conv1_1.in_channels, clf.fc8.out_features, base, clf.fc6.out_features,
              padding=padding, dropout=clf.dropout)
    sd = fcn.state_dict()
    for k, v in clf.state_dict().items():
        name = k.replace("fc8.", "score_fr.")
        sd[name] = v.reshape(sd[name].shape)
    fcn.load_state_dict(sd)
    return fcn


def from_meta(meta):
    """An FCN from unet's safetensors __metadata__ (src/io/checkpoint.c)."""
    return FCN(meta["arch"], int(meta.get("in_channels", 1)), int(meta.get("classes", 2)),
               int(meta.get("base", 64)), int(meta.get("fc_channels", 0)),
               int(meta.get("padding", 100)), float(meta.get("dropout", 0.5)),
               meta.get("learn_final_up", "0") == "1")


def meta_of(model, learn_final=False):
    """unet's __metadata__ for an FCN built here (dropout as given to the constructor)."""
    return {
        "format": "unet", "arch": model.arch,
        "in_channels": str(model.conv1_1.in_channels), "classes": str(model.score_fr.out_channels),
        "base": str(model.conv1_1.out_channels), "depth": "5", "up": "transpose",
        "conv_bias": "1", "batchnorm": "0", "padding": str(model.padding),
        "dropout": str(model.drop6.p), "init": "pytorch",
        "fc_channels": str(model.fc6.out_channels), "learn_final_up": "1" if learn_final else "0",
    }
