#!/usr/bin/env python3
"""Tables for docs/results.md from scripts/results.sh's output.

    python3 tools/results_table.py runs/results [runs/results-s2 runs/results-s3 ...]

Each directory holds <dataset>/<recipe>/{eval.json,time.txt,train.txt}.  With several
directories (runs with different seeds) a recipe present in more than one gets mean ± standard
deviation over the runs, and the training time is the median (min–max).  Standard library only.
"""
import json
import os
import re
import statistics
import sys

ROOTS = sys.argv[1:] or ["runs/results"]
NAMES = {"seed-unet": "seed recipe, unet", "seed-pytorch": "seed recipe, PyTorch",
         "paper-unet": "paper recipe, unet", "fcn8s-unet": "FCN-8s, unet"}
KEYS = ["pixel_error", "rand_error", "iou", "dice", "seg", "ap50"]


def one(d):
    with open(os.path.join(d, "eval.json")) as f:
        m = json.load(f)["mean"]
    secs = int(open(os.path.join(d, "time.txt")).read())
    waited, params = None, None
    try:
        t = open(os.path.join(d, "train.txt")).read()
        w = re.search(r"waited ([0-9.]+) s", t)
        if w:
            waited = float(w.group(1))
        p = re.search(r"([0-9]+) parameters", t)
        if p:
            params = int(p.group(1))
    except OSError:
        pass
    return m, secs, waited, params


def cell(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.4f}"
    return f"{statistics.mean(vals):.4f} ± {statistics.stdev(vals):.4f}"


def mmss(secs):
    return f"{int(secs) // 60}m{int(secs) % 60:02d}s"


sets = sorted({ds for r in ROOTS if os.path.isdir(r) for ds in os.listdir(r)})
for ds in sets:
    print(f"\n### {ds}\n")
    print("| run | n | pixel error | Rand error | IoU | Dice | SEG | AP50 | parameters "
          "| training time | data wait |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    seed_params = None
    for rec in NAMES:
        runs = [one(os.path.join(r, ds, rec)) for r in ROOTS
                if os.path.exists(os.path.join(r, ds, rec, "eval.json"))]
        if not runs:
            continue
        cols = [cell([m[k] for m, _, _, _ in runs]) for k in KEYS]
        secs = statistics.median([s for _, s, _, _ in runs])
        waits = [w / s for _, s, w, _ in runs if w is not None]
        params = runs[0][3]
        if rec == "seed-unet":
            seed_params = params
        if rec == "seed-pytorch":   # the same model code, so the same count
            params = seed_params
        cols.append(f"{params / 1e6:.2f} M" if params else "–")
        wait = f"{100 * max(waits):.2f}%" if waits else "–"
        t = mmss(secs)
        if len(runs) > 1:
            t += f" ({mmss(min(s for _, s, _, _ in runs))}–{mmss(max(s for _, s, _, _ in runs))})"
        print(f"| {NAMES[rec]} | {len(runs)} | " + " | ".join(cols) + f" | {t} | {wait} |")
