"""Whole-model cases: a tiny U-Net in PyTorch (tools/unet_torch.py, milesial's modules) against
unet: forward, loss, every parameter gradient, ten SGD steps and ten Adam steps.

For each variant V in {unet_t (transposed up-conv), unet_b (bilinear)}:
  V.model.safetensors  the initial state_dict WITHOUT metadata (so C infers the architecture)
  V_trained.model.safetensors  the state_dict after the ten SGD steps (PyTorch-trained)
  V.safetensors        x (2, 1, 21, 19), target (2, 21, 19) int64,
                       logits_train, loss, grad.<param>         first training-mode pass, CE
                       sgd.losses (10,), sgd1.<p>, sgd.<p>       SGD lr 0.02 momentum 0.9 wd 1e-4,
                       sgd.logits_eval                           CE: after 1 and 10 steps, then
                                                                 eval-mode logits
                       adam.losses (10,), adam1.<p>, adam.<p>    Adam lr 1e-2 eps 1e-4, CE + Dice
                       trained.x (1, 1, 40, 36), trained.logits_eval   V_trained in eval mode
Odd sizes (21x19) exercise max-pool flooring and F.pad of the upsampled maps.

Adam's eps: with the default 1e-8, parameters whose gradient is at the level of float rounding
(biases before BatchNorm, border-only effects) move by about +-lr whatever the sign of that noise,
and ten steps of this amplify rounding differences to ~0.5% of the loss: PyTorch itself, run
with 1 and then 2 threads, ends 0.1% apart.  eps = 1e-4 keeps those updates proportional to the
gradient; the formula is still Adam's (and tests/test_loss_optim.c checks it bit for bit).
SGD's lr 0.02 for the same reason: at 0.05 the bilinear net hits a discrete event (a max-pool or
ReLU flip) at step 8, where scaling one weight by 1 + 1e-7 in PyTorch moves the loss by 1e-5.
"""
import torch
import torch.nn.functional as F

from st import save
from unet_torch import UNet


def dice_loss(logits, target, eps=1e-6):
    """unet's soft Dice (ops.h): softmax, one-hot, per-class sums over batch and pixels."""
    C = logits.shape[1]
    p = F.softmax(logits, dim=1)
    y = F.one_hot(target, C).permute(0, 3, 1, 2).to(p.dtype)
    inter = (p * y).sum(dim=(0, 2, 3))
    den = p.sum(dim=(0, 2, 3)) + y.sum(dim=(0, 2, 3))
    return 1 - ((2 * inter + eps) / (den + eps)).mean()


def run(model, x, t, opt, dice, g, prefix):
    losses = []
    for step in range(10):
        model.train()
        opt.zero_grad()
        logits = model(x)
        loss = F.cross_entropy(logits, t)
        if dice:
            loss = loss + dice_loss(logits, t)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step == 0:
            for k, v in model.state_dict().items():
                if not k.endswith("num_batches_tracked"):
                    g[prefix + "1." + k] = v.clone()
    return torch.tensor(losses, dtype=torch.float64)


def make(out):
    for name, bilinear in (("unet_t", False), ("unet_b", True)):
        torch.manual_seed(7)
        model = UNet(n_channels=1, n_classes=2, base=4, depth=2, bilinear=bilinear)
        init = {k: v.clone() for k, v in model.state_dict().items()}
        save(f"{out}/{name}.model.safetensors", init)
        x = torch.randn(2, 1, 21, 19)
        t = (torch.rand(2, 21, 19) > 0.6).long()
        g = {"x": x, "target": t}

        model.train()
        logits = model(x)
        loss = F.cross_entropy(logits, t)
        loss.backward()
        g["logits_train"] = logits.detach()
        g["loss"] = torch.tensor([loss.item()], dtype=torch.float64)
        for k, p in model.named_parameters():
            g["grad." + k] = p.grad.clone()

        model.load_state_dict(init)
        opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)
        g["sgd.losses"] = run(model, x, t, opt, False, g, "sgd")
        for k, v in model.state_dict().items():
            if not k.endswith("num_batches_tracked"):
                g["sgd." + k] = v.clone()
        model.eval()
        with torch.no_grad():
            g["sgd.logits_eval"] = model(x)
            # A checkpoint trained in PyTorch (non-trivial running statistics), and its eval-mode
            # logits on another image: unet must reproduce them from the file alone.
            save(f"{out}/{name}_trained.model.safetensors", model.state_dict())
            x2 = torch.randn(1, 1, 40, 36)
            g["trained.x"], g["trained.logits_eval"] = x2, model(x2)

        model.load_state_dict(init)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2, eps=1e-4)
        g["adam.losses"] = run(model, x, t, opt, True, g, "adam")
        for k, v in model.state_dict().items():
            if not k.endswith("num_batches_tracked"):
                g["adam." + k] = v.clone()
        save(f"{out}/{name}.safetensors", g)
