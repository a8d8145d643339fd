#!/usr/bin/python3
"""The seed recipe trained in PyTorch, for docs/results.md: the same split, model, loss, optimizer,
tiles and augmentation as `unet train`, so the two can be compared on the same data.

    /usr/bin/python3 tools/train_torch.py --images DIR --masks DIR --val-images DIR \\
        --val-masks DIR --out DIR [--base 32 --depth 4 --steps 1000 --batch 2 --tile 256 \\
        --lr 1e-3 --seed 1 --threads 2]

It writes DIR/model.safetensors (unet can load it), DIR/pred/NAME.png masks (0/255) for the
validation images predicted by PyTorch itself, and DIR/log.csv; score them with
`unet eval --pred DIR/pred --truth VAL_MASKS`, the same metric code as unet's own runs.

Recipe (as cmd_train.c): images 8-bit /255, 16-bit by per-image 1 / 99.8 percentiles; masks: any
non-zero value is foreground; random tiles inside the image with random flips and 90-degree
rotations; UNet (tools/unet_torch.py, milesial's layout); Adam; loss = CE + soft Dice (the same
formula as unet's); constant learning rate.  Validation: whole images, reflect-padded to a
multiple of 2^depth and cropped back (unet mirrors the same way).
"""
import argparse
import csv
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402
from unet_torch import UNet, meta_of  # noqa: E402
from golden.unet_model import dice_loss  # noqa: E402


def read(path):
    """An image as a numpy array, with PIL (PNG, TIFF) or numpy (.npy)."""
    if path.endswith(".npy"):
        return np.load(path)
    from PIL import Image
    return np.array(Image.open(path))


def normalise(a):
    """unet's --norm auto: 8-bit / 255, 16-bit by the 1 / 99.8 percentiles, float as it is."""
    if a.dtype == np.uint8:
        return (a / 255.0).astype(np.float32)
    if a.dtype == np.uint16:
        lo, hi = np.percentile(a.astype(np.float64), [1, 99.8])
        return ((a - lo) / (hi - lo if hi > lo else 1)).astype(np.float32)
    return a.astype(np.float32)


def load(images, masks):
    out = []
    for name in sorted(os.listdir(images)):
        if name.startswith("."):
            continue
        img = read(os.path.join(images, name))
        img = normalise(img)
        m = read(os.path.join(masks, name))
        out.append((name, img, (m > 0).astype(np.int64)))
    return out


def batch(data, rng, b, tile):
    xs, ys = [], []
    for _ in range(b):
        name, img, m = data[rng.integers(len(data))]
        h, w = img.shape
        y0 = rng.integers(h - tile + 1) if h >= tile else 0
        x0 = rng.integers(w - tile + 1) if w >= tile else 0
        xi, mi = img[y0:y0 + tile, x0:x0 + tile], m[y0:y0 + tile, x0:x0 + tile]
        k = rng.integers(8)
        if k & 1:
            xi, mi = xi[:, ::-1], mi[:, ::-1]
        if k & 2:
            xi, mi = xi[::-1], mi[::-1]
        if k & 4:
            xi, mi = xi.T, mi.T
        xs.append(np.ascontiguousarray(xi))
        ys.append(np.ascontiguousarray(mi))
    return torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ys))


def predict(model, img, depth):
    q = 1 << depth
    h, w = img.shape
    ph, pw = (q - h % q) % q, (q - w % q) % q
    x = torch.from_numpy(img)[None, None]
    x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2], mode="reflect")
    with torch.no_grad():
        y = model(x)[0]
    y = y[:, ph // 2:ph // 2 + h, pw // 2:pw // 2 + w]
    return y.argmax(0).numpy()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True)
    ap.add_argument("--masks", required=True)
    ap.add_argument("--val-images", required=True)
    ap.add_argument("--val-masks", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--base", type=int, default=32)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(a.seed)
    train, val = load(a.images, a.masks), load(a.val_images, a.val_masks)
    model = UNet(1, 2, base=a.base, depth=a.depth)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    os.makedirs(os.path.join(a.out, "pred"), exist_ok=True)
    t0 = time.time()
    with open(os.path.join(a.out, "log.csv"), "w", newline="") as f:
        log = csv.writer(f)
        log.writerow(["step", "loss", "seconds"])
        for step in range(1, a.steps + 1):
            x, y = batch(train, rng, a.batch, a.tile)
            model.train()
            opt.zero_grad()
            logits = model(x)
            loss = F.cross_entropy(logits, y) + dice_loss(logits, y)
            loss.backward()
            opt.step()
            log.writerow([step, f"{loss.item():.6f}", f"{time.time() - t0:.1f}"])
            if step % 50 == 0 or step == a.steps:
                print(f"step {step}/{a.steps} loss {loss.item():.4f} {time.time() - t0:.0f}s", flush=True)
    train_seconds = time.time() - t0
    model.eval()
    from PIL import Image
    for name, img, _ in val:
        pred = predict(model, img, a.depth)
        stem = os.path.splitext(name)[0]
        Image.fromarray((pred * 255).astype(np.uint8)).save(os.path.join(a.out, "pred", stem + ".png"))
    st.save(os.path.join(a.out, "model.safetensors"), model.state_dict(), meta_of(model))
    print(f"trained {a.steps} steps in {train_seconds:.0f} s; predictions in {a.out}/pred")


if __name__ == "__main__":
    main()
