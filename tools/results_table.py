#!/usr/bin/env python3
"""Tables for docs/results.md from scripts/results.sh's output (runs/results/<set>/<recipe>/).

    python3 tools/results_table.py [runs/results]
Standard library only.
"""
import json
import os
import re
import sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else "runs/results"
NAMES = {"seed-unet": "seed recipe, unet", "seed-pytorch": "seed recipe, PyTorch",
         "paper-unet": "paper recipe, unet", "fcn8s-unet": "FCN-8s, unet"}


def row(d):
    with open(os.path.join(d, "eval.json")) as f:
        m = json.load(f)["mean"]
    secs = int(open(os.path.join(d, "time.txt")).read())
    waited = ""
    try:
        t = open(os.path.join(d, "train.txt")).read()
        w = re.search(r"waited ([0-9.]+) s", t)
        if w:
            waited = f"{100 * float(w.group(1)) / secs:.1f}%"
    except OSError:
        pass
    return m, secs, waited


def fmt(v):
    return "–" if v is None else f"{v:.4f}"


for ds in sorted(os.listdir(ROOT)):
    print(f"\n### {ds}\n")
    print("| run | pixel error | Rand error | IoU | Dice | SEG | AP50 | training time | data wait |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in ("seed-unet", "seed-pytorch", "paper-unet", "fcn8s-unet"):
        d = os.path.join(ROOT, ds, r)
        if not os.path.exists(os.path.join(d, "eval.json")):
            continue
        m, secs, waited = row(d)
        print(f"| {NAMES[r]} | {fmt(m['pixel_error'])} | {fmt(m['rand_error'])} | {fmt(m['iou'])} | "
              f"{fmt(m['dice'])} | {fmt(m['seg'])} | {fmt(m['ap50'])} | {secs // 60}m{secs % 60:02d}s | "
              f"{waited or '–'} |")
