#!/usr/bin/python3
"""Figures for docs/ from unet's outputs (needs python3-pil and python3-numpy; optional).

    /usr/bin/python3 tools/figures.py weightmap IMAGE MASK WEIGHTS.tif OUT.png
        image | mask | weight map side by side, as the U-Net paper's Fig. 3
    /usr/bin/python3 tools/figures.py compare OUT.png IMAGE TRUTH PRED_A LABEL_A PRED_B LABEL_B
        an image, its ground truth and two predictions side by side, labelled
"""
import sys

import numpy as np
from PIL import Image, ImageDraw


def gray(a):
    a = a.astype(np.float64)
    lo, hi = np.percentile(a, [0.5, 99.5])
    return np.clip((a - lo) / (hi - lo if hi > lo else 1) * 255, 0, 255).astype(np.uint8)


def heat(w):
    """A perceptual-ish colour map (black - purple - orange - yellow) for the weight map."""
    t = np.clip(w / w.max(), 0, 1)
    stops = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], float)
    x = t * (len(stops) - 1)
    i = np.minimum(x.astype(int), len(stops) - 2)
    f = (x - i)[..., None]
    return (stops[i] * (1 - f) + stops[i + 1] * f).astype(np.uint8)


def panel(images, labels, out):
    pad, top = 8, 22
    h, w = images[0].shape[:2]
    canvas = Image.new("RGB", (len(images) * (w + pad) + pad, h + top + pad), "white")
    d = ImageDraw.Draw(canvas)
    for k, (im, lab) in enumerate(zip(images, labels)):
        if im.ndim == 2:
            im = np.stack([im] * 3, -1)
        canvas.paste(Image.fromarray(im), (pad + k * (w + pad), top))
        d.text((pad + k * (w + pad), 5), lab, fill="black")
    canvas.save(out)


def read(p):
    return np.array(Image.open(p))


def main():
    if sys.argv[1] == "weightmap":
        img, mask, wm, out = sys.argv[2:6]
        w = read(wm).astype(np.float64)
        panel([gray(read(img)), ((read(mask) > 0) * 255).astype(np.uint8), heat(w)],
              ["image", "mask (cells white)", f"weight map w(x) (max {w.max():.1f})"], out)
    elif sys.argv[1] == "compare":
        out, img, truth = sys.argv[2:5]
        preds = sys.argv[5:]
        ims = [gray(read(img)), ((read(truth) > 0) * 255).astype(np.uint8)]
        labs = ["image", "ground truth"]
        for p, lab in zip(preds[0::2], preds[1::2]):
            ims.append(((read(p) > 0) * 255).astype(np.uint8))
            labs.append(lab)
        panel(ims, labs, out)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
