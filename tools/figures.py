#!/usr/bin/python3
"""Figures for docs/ from unet's outputs (needs python3-pil and python3-numpy; optional).

    /usr/bin/python3 tools/figures.py weightmap IMAGE MASK WEIGHTS.tif OUT.png
        image | mask | weight map side by side, as the U-Net paper's Fig. 3
    /usr/bin/python3 tools/figures.py compare OUT.png IMAGE TRUTH PRED_A LABEL_A PRED_B LABEL_B
        an image, its ground truth and two predictions side by side, labelled
    /usr/bin/python3 tools/figures.py unet OUT.png [valid|same]
        the U-Net's shape (depth 4, base 64, 572 or 512 input), in the style of the paper's Fig. 1
    /usr/bin/python3 tools/figures.py adjoint OUT.png
        a 1-D convolution as a sparse matrix and the transposed convolution as its transpose
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


def unet_figure(out, mode):
    """Boxes = feature maps (height ~ log size, width ~ channels), arrows = operations."""
    valid = mode == "valid"
    size, base, depth = (572, 64, 4) if valid else (512, 64, 4)
    k = 2 if valid else 0  # pixels lost per 3x3 conv
    # contracting path: per level the sizes after each conv
    levels, s = [], size
    for lv in range(depth + 1):
        c = base << lv
        a = s - k
        b = a - k
        levels.append((c, s, a, b))
        s = b // 2
    W, H = 1180, 640
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    col = {"conv": (40, 80, 200), "pool": (200, 40, 40), "up": (40, 150, 60), "copy": (150, 150, 150),
           "out": (0, 160, 160)}
    def box(x, y, w, h, label, sub):
        d.rectangle([x, y, x + w, y + h], outline="black", fill=(200, 215, 240))
        d.text((x, y - 12), label, fill="black")
        d.text((x - 2, y + h + 2), sub, fill="black")
    def arrow(x0, y0, x1, y1, c):
        d.line([x0, y0, x1, y1], fill=c, width=3)
        d.polygon([(x1, y1), (x1 - 6, y1 - 4), (x1 - 6, y1 + 4)] if x1 > x0 else
                  [(x1, y1), (x1 - 4, y1 - 6 if y1 > y0 else y1 + 6), (x1 + 4, y1 - 6 if y1 > y0 else y1 + 6)],
                  fill=c)
    ys = [40 + lv * 110 for lv in range(depth + 1)]
    hs = [80 - lv * 12 for lv in range(depth + 1)]
    bw = lambda c: max(6, min(30, c // 24))
    right = {}
    x_end = []
    for lv, (c, s0, a, b) in enumerate(levels):
        x = 20 + lv * 60
        y, h = ys[lv], hs[lv]
        box(x, y, 4, h, str(c if lv else 1), f"{s0}")
        box(x + 40, y, bw(c), h, str(c), f"{a}")
        arrow(x + 8, y + h // 2, x + 38, y + h // 2, col["conv"])
        box(x + 80, y, bw(c), h, str(c), f"{b}")
        arrow(x + 42 + bw(c), y + h // 2, x + 78, y + h // 2, col["conv"])
        x_end.append(x + 80 + bw(c))
        if lv < depth:
            arrow(x + 85, y + h + 14, x + 85, ys[lv + 1] - 2, col["pool"])
    # expanding path: deeper levels further left, mirroring the contracting path
    s_up = levels[depth][3]
    prev_x = x_end[depth] - 10
    for lv in range(depth - 1, -1, -1):
        c = base << lv
        skip = levels[lv][3]
        s_up = s_up * 2
        crop = (skip - s_up) // 2
        y, h = ys[lv], hs[lv]
        x = 540 + (depth - 1 - lv) * 60
        box(x, y, bw(c), h, str(c), f"{s_up}")  # up-conv output
        d.line([x_end[lv] + 4, y + h // 2, x - 4, y + h // 2], fill=col["copy"], width=2)
        d.text(((x_end[lv] + x) // 2 - 40, y + h // 2 - 14),
               f"copy and crop {crop}/side" if valid and crop else "copy (concat)", fill=col["copy"])
        a = s_up - k
        b = a - k
        box(x + 50, y, bw(2 * c), h, str(c), f"{a}")
        arrow(x + 4 + bw(c), y + h // 2, x + 48, y + h // 2, col["conv"])
        box(x + 100, y, bw(c), h, str(c), f"{b}")
        arrow(x + 52 + bw(2 * c), y + h // 2, x + 98, y + h // 2, col["conv"])
        d.line([prev_x, ys[lv + 1] - 2, x + 3, y + h + 14], fill=col["up"], width=3)
        d.polygon([(x + 3, y + h + 4), (x - 1, y + h + 14), (x + 7, y + h + 14)], fill=col["up"])
        prev_x = x + 103
        s_up = b
        if lv == 0:
            box(x + 160, y, 4, h, "2", f"{b}")
            arrow(x + 104 + bw(c), y + h // 2, x + 158, y + h // 2, col["out"])
    legend = [("conv 3x3 (+BN) + ReLU", "conv"), ("max-pool 2x2", "pool"),
              ("up-conv 2x2 (transposed conv)", "up"), ("skip connection", "copy"), ("conv 1x1", "out")]
    for i, (t, key) in enumerate(legend):
        d.line([30, H - 90 + i * 16, 60, H - 90 + i * 16], fill=col[key], width=3)
        d.text((66, H - 96 + i * 16), t, fill="black")
    title = ("The paper's U-Net: valid 3x3 convolutions, 572x572 in, 388x388 out" if valid else
             "The seed U-Net: same padding + BatchNorm, any size (here 512x512)")
    d.text((W - 470, H - 30), title, fill="black")
    img.save(out)


def adjoint_figure(out):
    """y = A x for a 1-D convolution (kernel 3, stride 2, pad 1) and x' = A^T y."""
    w = [1, 2, 3]
    n_in, stride, pad = 8, 2, 1
    n_out = (n_in + 2 * pad - 3) // stride + 1
    A = np.zeros((n_out, n_in))
    for o in range(n_out):
        for t in range(3):
            i = o * stride - pad + t
            if 0 <= i < n_in:
                A[o, i] = w[t]
    cell = 34
    W, H = 2 * (n_in * cell) + 260, n_in * cell + 120
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    def grid(M, x0, y0, title):
        d.text((x0, y0 - 30), title, fill="black")
        for r in range(M.shape[0]):
            for c in range(M.shape[1]):
                v = M[r, c]
                d.rectangle([x0 + c * cell, y0 + r * cell, x0 + (c + 1) * cell, y0 + (r + 1) * cell],
                            outline=(180, 180, 180), fill=(255, 255, 255) if v == 0 else (200, 215, 240))
                if v:
                    d.text((x0 + c * cell + 12, y0 + r * cell + 10), f"w{int(v) - 1}", fill="black")
    grid(A, 20, 60, f"convolution: y = A x  (A is {n_out}x{n_in}, kernel w0 w1 w2, stride 2)")
    grid(A.T, 60 + n_in * cell + 100, 60, f"transposed convolution: x' = A^T y  ({n_in}x{n_out})")
    d.text((20, H - 40), "conv backward-data = A^T dy = transposed-conv forward;  "
                         "transposed-conv backward-data = A dx' = conv forward", fill="black")
    img.save(out)


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
    elif sys.argv[1] == "unet":
        unet_figure(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "valid")
    elif sys.argv[1] == "adjoint":
        adjoint_figure(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
