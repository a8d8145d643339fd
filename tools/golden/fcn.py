"""FCN-32s/16s/8s (tools/fcn_torch.py) against unet (tests/test_fcn.c), and convolutionalization.

fcn8s.model.safetensors  the state_dict of a small FCN-8s WITHOUT metadata (C infers the
                         architecture): in 1, base 2, fc 8, classes 3, conv1_1 padding 100.
                         score_pool4/3 (zero by default) and upscore2/upscore_pool4 (bilinear)
                         get random values and fc6's bias a positive shift, so that every path
                         carries signal and gradient.
fcn.safetensors
  x (2, 1, 37, 45), target (2, 37, 45) uint8 class ids
  offsets                 int64 [score_pool4, score_pool3, final] of 8s, then final of 16s, 32s
  fcn8s.logits, fcn8s.loss, fcn8s.grad.<param>   one training-mode pass with cross entropy;
                          dropout 0 (our dropout masks cannot be PyTorch's), so training mode and
                          eval mode agree; grad.upscore8.weight is the learned-final variant's
  fcn16s.logits           16s = the 8s model's conv1_1..score_fr, upscore2, score_pool4
  fcn32s.logits           32s = the 8s model's conv1_1..score_fr
                          (their final deconvolutions are the bilinear init: C makes its own)
  vgg16.params            int64 [all parameters, trainable] of FCN-8s at base 64, fc 4096,
                          3 channels, 21 classes (the final deconvolution frozen)
37x45 is odd (max-pools floor) and a size all three nets accept (docs/fcn.md).

classifier.safetensors   a tiny VGGClassifier's state_dict: in 1, base 2, fc 8, classes 3
convolutionalize.safetensors
  x_u8 (256, 256) uint8   the image is x_u8 / 64 - 2 (exact in float32)
  logits224 (1, 3)        the classifier on the top-left 224x224 crop
  map256 (1, 3, 2, 2)     the classifier's head (fc6, fc7, fc8) at every 7x7 window of the
                          pool5 features of the whole 256x256 image: what score_fr computes
All values are computed in float64 from float32 parameters and inputs.
"""
import torch
import torch.nn.functional as F

from fcn_torch import FCN, VGGClassifier, convolutionalize
from st import save


def fp32(t):
    return t.float().contiguous()


def make(out):
    torch.manual_seed(11)
    cfg = dict(in_channels=1, n_class=3, base=2, fc=8, padding=100, dropout=0.0)
    m8 = FCN("fcn8s", **cfg)
    with torch.no_grad():
        for name in ("score_pool4", "score_pool3"):
            getattr(m8, name).weight.normal_(0, 0.5)
            getattr(m8, name).bias.normal_(0, 0.1)
        # Tiny widths leave fc6's 2 x 8 pre-activations all negative at this seed: shift them
        # so that some pass the ReLU and the backbone below fc6 gets a gradient.
        m8.fc6.bias.uniform_(0.0, 0.06)
        for name in ("upscore2", "upscore_pool4"):
            getattr(m8, name).weight.add_(0.1 * torch.randn_like(getattr(m8, name).weight))
    sd = {k: fp32(v) for k, v in m8.state_dict().items()}
    save(f"{out}/fcn8s.model.safetensors", sd)

    N, H, W = 2, 37, 45
    x = torch.randn(N, 1, H, W)
    t = torch.randint(0, 3, (N, H, W))
    g = {"x": x, "target": t.to(torch.uint8)}
    offs = m8.offsets()
    assert offs == [5, 9, 31], offs

    m8 = m8.double()
    m8.upscore8.weight.requires_grad_(True)  # the learned-final variant's gradient, same pass
    m8.train()
    logits = m8(x.double())
    loss = F.cross_entropy(logits, t)
    loss.backward()
    g["fcn8s.logits"] = fp32(logits.detach())
    g["fcn8s.loss"] = torch.tensor([loss.item()], dtype=torch.float64)
    for k, p in m8.named_parameters():
        g["fcn8s.grad." + k] = fp32(p.grad)

    for arch in ("fcn16s", "fcn32s"):
        m = FCN(arch, **cfg)
        offs.append(m.offsets()[-1])
        own = m.state_dict()
        m.load_state_dict({k: sd.get(k, own[k]) for k in own})
        m = m.double().eval()
        with torch.no_grad():
            g[f"{arch}.logits"] = fp32(m(x.double()))
    assert offs == [5, 9, 31, 27, 19], offs
    g["offsets"] = torch.tensor(offs, dtype=torch.int64)

    vgg = FCN("fcn8s", in_channels=3, n_class=21, base=64)
    total = sum(p.numel() for p in vgg.parameters())
    trainable = sum(p.numel() for p in vgg.parameters() if p.requires_grad)
    g["vgg16.params"] = torch.tensor([total, trainable], dtype=torch.int64)
    save(f"{out}/fcn.safetensors", g)

    # Convolutionalization: a tiny classifier, its logits and its sliding head.
    torch.manual_seed(12)
    clf = VGGClassifier(in_channels=1, n_class=3, base=2, fc=8)
    with torch.no_grad():  # torchvision's VGG init for the convs: the signal survives 13 layers
        for name, mod in clf.named_children():
            if name.startswith("conv"):
                torch.nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
                mod.bias.uniform_(-0.1, 0.1)
        clf.fc6.bias.uniform_(0.0, 0.4)  # some of fc6's units alive in every window
    save(f"{out}/classifier.safetensors", {k: fp32(v) for k, v in clf.state_dict().items()})
    x_u8 = torch.randint(0, 256, (256, 256), dtype=torch.uint8)
    img = (x_u8.double() / 64 - 2)[None, None]
    clf = clf.double().eval()
    with torch.no_grad():
        logits224 = clf(img[:, :, :224, :224])
        feats = clf.features(img)                               # (1, 16, 8, 8)
        rows = []
        for i in range(feats.size(2) - 6):
            rows.append(torch.stack([clf.head(feats[:, :, i:i + 7, j:j + 7])
                                     for j in range(feats.size(3) - 6)], dim=-1))
        map256 = torch.stack(rows, dim=-2)                      # (1, 3, 2, 2)
        # The PyTorch FCN made from it computes the same (a check of the reference itself).
        fcn = convolutionalize(clf, "fcn8s", padding=1).double().eval()
        feats_fcn = {}
        fcn.score_fr.register_forward_hook(lambda mod, i, o: feats_fcn.update(score=o))
        fcn(img)
        assert torch.allclose(feats_fcn["score"], map256, atol=1e-12), "convolutionalization"
        fcn(img[:, :, :224, :224])
        assert torch.allclose(feats_fcn["score"].flatten(), logits224.flatten(), atol=1e-12)
    save(f"{out}/convolutionalize.safetensors",
         {"x_u8": x_u8, "logits224": fp32(logits224), "map256": fp32(map256)})
