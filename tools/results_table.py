#!/usr/bin/env python3
"""Tables for docs/results.md from scripts/results.sh's cross-validation runs.

    python3 tools/results_table.py [runs/cv] [--dataset D] [--recipe SUBSTRING] [--folds] [--metrics a,b]
                                   [--against RECIPE]

runs/cv/<dataset>/<recipe>_<budget>/seed<k>/fold<f>/ holds eval.json (and eval-<variant>.json for
prediction variants: test-time augmentation, instance methods), time.txt (wall, user, system
seconds per training invocation), train.txt, train.rc and model.log.csv.  For each data set,
recipe and variant the table gives, per metric, the mean over all folds and seeds ± the standard
deviation over folds (of the fold's mean over its seeds), and with several seeds [± the standard
deviation over seeds of the cross-validated mean].  A fold's value is the mean over its test
images (as `unet eval` reports it).  n = folds x seeds.  Also: the steps, the median wall time
of one training and its CPU time, rollbacks and failed trainings (train.rc != 0).  --folds
prints every fold's values instead; --against RECIPE the differences from RECIPE fold by fold
(the same variant, the folds both have), mean ± sd, and on how many folds each was better.

The older single-split layout of scripts/results_holdout.sh (<root>/<dataset>/<recipe>/eval.json)
is read with --holdout.  Standard library only.
"""
import argparse
import csv
import json
import math
import os
import re
import statistics
import sys

# Metrics: (key, column title, how to read it from unet eval's "mean" object), in display order;
# columns that no run has are left out.  V_rand and V_info (ISBI 2012, after thinning) are
# printed as errors, 1 - V: of the probability map at its best threshold (the threshold that is
# best for the mean over the fold's images, as the challenge ranked a stack), at 0.5, and of the
# predicted mask.  SEG: the mean over images, and seg_ctc pooled over the reference objects as
# the Cell Tracking Challenge computes it.
def _prob(k):
    return lambda m: 1 - m["prob"][k] if isinstance(m.get("prob"), dict) and \
        isinstance(m["prob"].get(k), (int, float)) else None


def _plain(k):
    return lambda m: m.get(k)


def _prob_raw(k):
    return lambda m: m["prob"][k] if isinstance(m.get("prob"), dict) and \
        isinstance(m["prob"].get(k), (int, float)) else None


# pixel error: the fraction of pixels of the mask in the wrong class; pixel error (ISBI): the
# challenge's, 1 - the best F-score of pixel similarity of the probability map over thresholds,
# the fold's images counted together.
METRICS = [("pixel_error", "pixel error", _plain("pixel_error")),
           ("pixel_isbi", "pixel error (ISBI, best t)", _prob_raw("best_pixel_error")),
           ("vrand", "V_rand error (best t)", _prob("best_v_rand")),
           ("vinfo", "V_info error (best t)", _prob("best_v_info")),
           ("vrand05", "V_rand error (t 0.5)", _prob("v_rand_at_05")),
           ("rand_error", "Rand error", _plain("rand_error")),
           ("iou", "IoU", _plain("iou")),
           ("dice", "Dice", _plain("dice")),
           ("seg", "SEG", _plain("seg")),
           ("seg_ctc", "SEG (CTC)", _plain("seg_ctc")),
           ("ap50", "AP50", _plain("ap50"))]
READ = {k: f for k, _, f in METRICS}
DEFAULT = ["pixel_error", "pixel_isbi", "vrand", "vinfo", "vrand05", "rand_error", "iou", "seg", "seg_ctc",
           "ap50"]


def load_run(fold_dir, variant):
    name = "eval.json" if not variant else f"eval-{variant}.json"
    try:
        with open(os.path.join(fold_dir, name)) as f:
            mean = json.load(f)["mean"]
    except (OSError, ValueError, KeyError):
        return None
    run = {"mean": mean, "wall": None, "cpu": None, "steps": None, "rollbacks": 0, "rc": 0}
    try:
        wall = cpu = 0.0
        for line in open(os.path.join(fold_dir, "time.txt")):
            p = line.split()
            if len(p) >= 3 and re.match(r"^[0-9.]+$", p[0]):
                wall += float(p[0])
                cpu += float(p[1]) + float(p[2])
        run["wall"], run["cpu"] = wall, cpu
    except OSError:
        pass
    try:
        t = open(os.path.join(fold_dir, "train.txt")).read()
        m = re.search(r"unet: ([0-9]+) steps of", t)
        if m:
            run["steps"] = int(m.group(1))
    except OSError:
        pass
    try:
        run["rc"] = int(open(os.path.join(fold_dir, "train.rc")).read().strip() or 0)
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(fold_dir, "model.log.csv")) as f:
            for row in csv.DictReader(f):
                ev = row.get("event") or ""
                if ev.startswith("rollback") or ev.startswith("diverged"):
                    run["rollbacks"] += 1
    except OSError:
        pass
    return run


def scan(root):
    """{(dataset, recipe, variant): {seed: {fold: run}}}"""
    out = {}
    for ds in sorted(os.listdir(root)):
        dsd = os.path.join(root, ds)
        if ds == "splits" or not os.path.isdir(dsd):
            continue
        for rec in sorted(os.listdir(dsd)):
            for sd in sorted(os.listdir(os.path.join(dsd, rec))):
                m = re.match(r"^seed([0-9]+)$", sd)
                if not m:
                    continue
                for fd in sorted(os.listdir(os.path.join(dsd, rec, sd))):
                    fm = re.match(r"^fold([0-9]+)$", fd)
                    if not fm:
                        continue
                    d = os.path.join(dsd, rec, sd, fd)
                    variants = [""] + sorted(
                        f[5:-5] for f in os.listdir(d) if f.startswith("eval-") and f.endswith(".json"))
                    for v in variants:
                        run = load_run(d, v)
                        if run:
                            out.setdefault((ds, rec, v), {}).setdefault(int(m.group(1)), {})[
                                int(fm.group(1))] = run
    return out


def value(run, key):
    try:
        v = READ[key](run["mean"]) if key in READ else run["mean"].get(key)
    except (TypeError, KeyError):
        return None
    return v if isinstance(v, (int, float)) and not math.isnan(v) else None


def cell(runs, key, digits):
    """runs: {seed: {fold: run}} -> 'mean ± sd over folds [± sd over seeds]'."""
    by_fold = {}
    for seed, folds in runs.items():
        for f, r in folds.items():
            v = value(r, key)
            if v is not None:
                by_fold.setdefault(f, []).append(v)
    if not by_fold:
        return "–"
    allv = [v for vs in by_fold.values() for v in vs]
    fold_means = [statistics.mean(vs) for vs in by_fold.values()]
    s = f"{statistics.mean(allv):.{digits}f}"
    if len(fold_means) > 1:
        s += f" ± {statistics.stdev(fold_means):.{digits}f}"
    seed_means = []
    for seed, folds in runs.items():
        vs = [value(r, key) for r in folds.values()]
        if vs and None not in vs and len(vs) == len(by_fold):
            seed_means.append(statistics.mean(vs))
    if len(seed_means) > 1:
        s += f" [± {statistics.stdev(seed_means):.{digits}f}]"
    return s


def mmss(secs):
    return f"{int(secs) // 60}m{int(secs) % 60:02d}s"


def cv_tables(args):
    data = scan(args.root)
    keys_all = DEFAULT
    if args.metrics:
        keys_all = args.metrics.split(",")
    for ds in sorted({k[0] for k in data}):
        if args.dataset and ds not in args.dataset.split(","):
            continue
        rows = [(k, v) for k, v in data.items() if k[0] == ds and
                (not args.recipe or re.search(args.recipe, k[1] + ("/" + k[2] if k[2] else "")))]
        if not rows:
            continue
        keys = [k for k in keys_all if any(value(r, k) is not None for _, runs in rows
                                           for folds in runs.values() for r in folds.values())]
        titles = {k: t for k, t, _ in METRICS}
        print(f"\n### {ds}\n")
        if args.folds:
            print("| recipe | variant | seed | fold | " + " | ".join(titles.get(k, k) for k in keys)
                  + " | steps | wall | CPU | rollbacks |")
            print("|---" * (len(keys) + 8) + "|")
            for (d, rec, var), runs in sorted(rows):
                for seed in sorted(runs):
                    for f in sorted(runs[seed]):
                        r = runs[seed][f]
                        vals = [value(r, k) for k in keys]
                        print(f"| {rec} | {var or 'base'} | {seed} | {f} | " + " | ".join(
                            "–" if v is None else f"{v:.4f}" for v in vals) +
                            f" | {r['steps'] or '–'} | {mmss(r['wall']) if r['wall'] else '–'} "
                            f"| {mmss(r['cpu']) if r['cpu'] else '–'} | {r['rollbacks']}"
                            f"{' rc=' + str(r['rc']) if r['rc'] else ''} |")
            continue
        print("| recipe | variant | n | " + " | ".join(titles.get(k, k) for k in keys) +
              " | steps | wall (median) | CPU (median) | rollbacks |")
        print("|---" * (len(keys) + 7) + "|")
        for (d, rec, var), runs in sorted(rows):
            flat = [r for folds in runs.values() for r in folds.values()]
            nf = len({f for folds in runs.values() for f in folds})
            n = f"{nf}x{len(runs)}" if len(runs) > 1 else f"{nf}"
            steps = sorted({r["steps"] for r in flat if r["steps"]})
            walls = [r["wall"] for r in flat if r["wall"]]
            cpus = [r["cpu"] for r in flat if r["cpu"]]
            rb = sum(r["rollbacks"] for r in flat)
            bad = sum(1 for r in flat if r["rc"])
            print(f"| {rec} | {var or 'base'} | {n} | " +
                  " | ".join(cell(runs, k, 4) for k in keys) +
                  f" | {'/'.join(map(str, steps)) or '–'}"
                  f" | {mmss(statistics.median(walls)) if walls else '–'}"
                  f" | {mmss(statistics.median(cpus)) if cpus else '–'}"
                  f" | {rb}{' (' + str(bad) + ' failed)' if bad else ''} |")


def paired_tables(args):
    """Per metric, each recipe/variant minus the --against recipe with the same variant, fold by
    fold on the folds (and seeds) both have: mean ± sd of the differences, and how many folds
    the difference favoured each (a lower error, a higher score)."""
    data = scan(args.root)
    keys = args.metrics.split(",") if args.metrics else DEFAULT
    titles = {k: t for k, t, _ in METRICS}
    lower_better = {"pixel_error", "pixel_isbi", "vrand", "vinfo", "vrand05", "rand_error"}
    for ds in sorted({k[0] for k in data}):
        if args.dataset and ds not in args.dataset.split(","):
            continue
        rows = []
        for (d, rec, var), runs in sorted(data.items()):
            base = data.get((d, args.against, var))
            if d != ds or rec == args.against or not base:
                continue
            if args.recipe and not re.search(args.recipe, rec + ("/" + var if var else "")):
                continue
            cells = []
            npair = 0
            for k in keys:
                diffs = [value(r, k) - value(base[sd][f], k)
                         for sd, folds in runs.items() for f, r in folds.items()
                         if f in base.get(sd, {}) and value(r, k) is not None
                         and value(base[sd][f], k) is not None]
                npair = max(npair, len(diffs))
                if not diffs:
                    cells.append("–")
                    continue
                better = sum(1 for x in diffs if (x < 0) == (k in lower_better) and x != 0)
                c = f"{statistics.mean(diffs):+.4f}"
                if len(diffs) > 1:
                    c += f" ± {statistics.stdev(diffs):.4f}"
                cells.append(c + f" ({better}/{len(diffs)})")
            rows.append(f"| {rec} | {var or 'base'} | {npair} | " + " | ".join(cells) + " |")
        if rows:
            print(f"\n### {ds}: minus {args.against}, fold by fold (folds where better)\n")
            print("| recipe | variant | n | " + " | ".join(titles.get(k, k) for k in keys) + " |")
            print("|---" * (len(keys) + 3) + "|")
            print("\n".join(rows))


# ---- the superseded single-split layout (scripts/results_holdout.sh) ----

NAMES = {"seed-unet": "seed recipe, unet", "seed-pytorch": "seed recipe, PyTorch",
         "paper-unet": "paper recipe, unet", "fcn8s-unet": "FCN-8s, unet"}
HKEYS = ["pixel_error", "rand_error", "iou", "dice", "seg", "ap50"]


def holdout_tables(roots):
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

    def hcell(vals):
        vals = [v for v in vals if v is not None]
        if not vals:
            return "–"
        if len(vals) == 1:
            return f"{vals[0]:.4f}"
        return f"{statistics.mean(vals):.4f} ± {statistics.stdev(vals):.4f}"

    sets = sorted({ds for r in roots if os.path.isdir(r) for ds in os.listdir(r)})
    for ds in sets:
        print(f"\n### {ds}\n")
        print("| run | n | pixel error | Rand error | IoU | Dice | SEG | AP50 | parameters "
              "| training time | data wait |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        seed_params = None
        for rec in NAMES:
            runs = [one(os.path.join(r, ds, rec)) for r in roots
                    if os.path.exists(os.path.join(r, ds, rec, "eval.json"))]
            if not runs:
                continue
            cols = [hcell([m[k] for m, _, _, _ in runs]) for k in HKEYS]
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


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("root", nargs="*", default=["runs/cv"])
    p.add_argument("--dataset", help="comma-separated data sets")
    p.add_argument("--recipe", help="regular expression on recipe[/variant]")
    p.add_argument("--folds", action="store_true", help="one row per fold and seed")
    p.add_argument("--metrics", help="comma-separated metric keys of eval's mean object")
    p.add_argument("--holdout", action="store_true", help="the old single-split layout")
    p.add_argument("--against", metavar="RECIPE",
                   help="paired differences against RECIPE (e.g. seed_5m), fold by fold")
    args = p.parse_args()
    if args.holdout:
        holdout_tables(args.root)
        return
    for root in args.root:
        args.root = root
        if args.against:
            paired_tables(args)
        else:
            cv_tables(args)


if __name__ == "__main__":
    sys.exit(main())
