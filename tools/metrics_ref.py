#!/usr/bin/python3
"""Writes tests/golden/metrics_ref.safetensors: an independent NumPy reference for the challenge
scores of src/metrics.c (unet_vscores, and the CTC SEG of unet_evaluate).

    /usr/bin/python3 tools/metrics_ref.py tests/golden        (NumPy only; CI never runs it)

Written from the definitions, not from the C code:
  - the proposal is thresholded like Fiji (prob > t, t from Fiji's loop t += 0.1) and labelled
    by a breadth-first 4-connected flood;
  - "thinning" is a line-by-line port of Fiji's WatershedTransform2D.apply (Vincent-Soille on
    the 0/255 image with its sorted pixel list, created column by column, stable sort, levels,
    FIFO, the one `flag` variable), run as Fiji runs it: cells 0, background 255;
  - V_rand and V_info follow RandError.foregroundRestrictedStatsN2 / ClassificationStatistics
    and VariationOfInformation.foregroundRestrictedFscore: probabilities p = count / n first,
    then the sums, as Fiji adds them;
  - SEG follows the Cell Tracking Challenge's SEG.java: labels are objects (a label of several
    blobs is one object), R matches S when |R & S| > 0.5 |R|, J = |R & S| / |R | S|, and the
    measure over several images is the mean over all their reference objects.

Cases (case<i>.cfg = [kind, h, w, truth_instances]):
  kind 0: V scores.  case<i>.prob (h, w) F32, case<i>.truth (h, w) I32, case<i>.thr (T) F64,
          case<i>.thin (T, 7) F64 and case<i>.nothin (T, 7) F64: per threshold
          [v_rand, v_rand_split, v_rand_merge, v_info, v_info_split, v_info_merge, n_pred];
          case<i>.thinned (h, w) I32: the thinned labels at the threshold case<i>.cfg[4].
  kind 1: SEG.  case<i>.pred, case<i>.truth (I32 instance labels, any ids), case<i>.seg (F64:
          [SEG of the image, sum of J, reference objects]).
"""
import collections
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from st import save  # noqa: E402

WSHED, INIT, MASK, INQUEUE = 0, -1, -2, -3


def fiji_thresholds():
    t, th = [], 0.0
    while th <= 1.0:
        t.append(th)
        th += 0.1
    return t


def label4(mask):
    """4-connected components of a boolean image, numbered in raster order (BFS)."""
    h, w = mask.shape
    lab = np.zeros((h, w), np.int32)
    n = 0
    for y0 in range(h):
        for x0 in range(w):
            if not mask[y0, x0] or lab[y0, x0]:
                continue
            n += 1
            lab[y0, x0] = n
            q = collections.deque([(y0, x0)])
            while q:
                y, x = q.popleft()
                for yy, xx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                    if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not lab[yy, xx]:
                        lab[yy, xx] = n
                        q.append((yy, xx))
    return lab, n


def fiji_watershed(img):
    """WatershedTransform2D.apply(hMin = min, hMax = max), connectivity 4; img[y, x] values."""
    h, w = img.shape
    tab = np.full((w, h), INIT, np.int64)  # Fiji indexes [x][y]
    # extractPixelValues: for x, for y; Collections.sort by (value, creation order)
    plist = [(float(img[y, x]), x, y) for x in range(w) for y in range(h)]
    order = sorted(range(len(plist)), key=lambda k: (plist[k][0], k))
    plist = [plist[k] for k in order]
    hmin, hmax = float(img.min()), float(img.max())

    def neighbours(x, y):  # Neighborhood2DC4: (x-1, y), (x, y-1), (x+1, y), (x, y+1)
        return ((x - 1, y), (x, y - 1), (x + 1, y), (x, y + 1))

    current_label = 0
    flag = False
    fifo = collections.deque()
    h_cur = hmin
    current = 0
    i1 = i2 = current
    while current < len(plist) and h_cur <= hmax:
        h_cur = plist[current][0]
        for k in range(i1, len(plist)):
            v, x, y = plist[k]
            if v != h_cur:
                i1 = k
                break
            tab[x, y] = MASK
            for u, vv in neighbours(x, y):
                if 0 <= u < w and 0 <= vv < h and tab[u, vv] >= WSHED:
                    fifo.append((x, y))
                    tab[x, y] = INQUEUE
                    break
        while fifo:
            x, y = fifo.popleft()
            for u, vv in neighbours(x, y):
                if not (0 <= u < w and 0 <= vv < h):
                    continue
                if tab[u, vv] > 0:
                    if tab[x, y] == INQUEUE or (tab[x, y] == WSHED and flag):
                        tab[x, y] = tab[u, vv]
                    elif tab[x, y] > 0 and tab[x, y] != tab[u, vv]:
                        tab[x, y] = WSHED
                        flag = False
                elif tab[u, vv] == WSHED:
                    if tab[x, y] == INQUEUE:
                        tab[x, y] = WSHED
                        flag = True
                elif tab[u, vv] == MASK:
                    tab[u, vv] = INQUEUE
                    fifo.append((u, vv))
        for k in range(i2, len(plist)):
            v, x, y = plist[k]
            if v != h_cur:
                i2 = k
                break
            current += 1  # Fiji's for-update (pixelIndex++, currentIndex++)
            if tab[x, y] == MASK:
                current_label += 1
                fifo.append((x, y))
                tab[x, y] = current_label
                while fifo:
                    px, py = fifo.popleft()
                    for u, vv in neighbours(px, py):
                        if 0 <= u < w and 0 <= vv < h and tab[u, vv] == MASK:
                            fifo.append((u, vv))
                            tab[u, vv] = current_label
    out = np.where(tab == INIT, 0, tab).T.astype(np.int32)
    return out


def scores(truth_lab, prop_lab):
    """Fiji's foreground-restricted Rand and information scores of two label images."""
    fg = truth_lab != 0
    n = float(fg.sum())
    if n == 0:
        return [math.nan] * 6
    pairs = collections.Counter(zip(truth_lab[fg].tolist(), prop_lab[fg].tolist()))
    p = {k: c / n for k, c in pairs.items()}
    # Marginals from integer counts (Fiji adds the p_ij; the sums are the same up to rounding,
    # which with one truth object can swap Fiji's merge/split in the last digit: V_info ~ 0).
    a_cnt, b_cnt = collections.Counter(), collections.Counter()
    s_cnt = 0
    for (i, j), c in pairs.items():
        a_cnt[i] += c
        if j != 0:
            b_cnt[j] += c
        else:
            s_cnt += c
    ai = {i: c / n for i, c in a_cnt.items()}
    bj = {j: c / n for j, c in b_cnt.items()}
    aux = s_cnt / n
    sum_a2 = sum(v * v for v in ai.values())
    sum_b2 = sum(v * v for v in bj.values()) + aux / n
    sum_ab2 = sum(v * v for (i, j), v in p.items() if j != 0) + aux / n
    n2 = n * n
    tp = n2 * sum_ab2
    fp = n2 * sum_b2 - tp
    fn = n2 * sum_a2 - tp
    prec = 1.0 if fp == 0 else tp / (tp + fp)
    rec = 1.0 if fn == 0 else tp / (tp + fn)
    v_rand = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
    sum_a = sum(v * math.log(v) for v in ai.values() if v != 0)
    sum_b = sum(v * math.log(v) for v in bj.values() if v != 0) - aux * math.log(n)
    sum_ab = sum(v * math.log(v) for (i, j), v in p.items() if j != 0 and v != 0) \
        - aux * math.log(n)
    ha, hb = -sum_a, -sum_b
    hab, hba = sum_b - sum_ab, sum_a - sum_ab
    iprec = (ha - hab) / ha if ha != 0 else 0.0
    irec = (hb - hba) / hb if hb != 0 else 1.0
    if ha == 0:
        iprec, irec = 0.0, 1.0
    if hb == 0:
        iprec, irec = 1.0, 0.0
    v_info = 2 * iprec * irec / (iprec + irec) if iprec + irec > 0 else 0.0
    # unet's order: [v_rand, split (recall), merge (precision), v_info, split, merge]
    return [v_rand, rec, prec, v_info, irec, iprec]


def proposal(prob, th, thin):
    cells = prob.astype(np.float64) > th  # Java: the float pixel promoted to double
    if thin:
        img = np.where(cells, 0, 255).astype(np.float64)
        lab = fiji_watershed(img)
        return lab, len(set(lab[lab > 0].tolist()))
    return label4(cells)


def vcase(prob, truth, truth_instances, thr_index):
    thr = fiji_thresholds()
    tl = truth if truth_instances else label4(truth != 0)[0]
    out = {}
    for thin in (1, 0):
        rows = []
        for th in thr:
            lab, k = proposal(prob, th, thin)
            rows.append(scores(tl, lab) + [float(k)])
        out["thin" if thin else "nothin"] = np.array(rows, np.float64)
    out["thinned"] = proposal(prob, thr[thr_index], 1)[0]
    out["thr"] = np.array(thr, np.float64)
    return out


def seg(pred, truth):
    """CTC SEG of one image: (SEG, sum of J, number of reference objects)."""
    total, count = 0.0, 0
    for r in sorted(set(truth[truth > 0].tolist())):
        rm = truth == r
        size_r = int(rm.sum())
        inside = collections.Counter(pred[rm].tolist())
        j = 0.0
        for s, c in inside.items():
            if s != 0 and c > 0.5 * size_r:
                union = size_r + int((pred == s).sum()) - c
                j = c / union
        total += j
        count += 1
    return [total / count if count else math.nan, total, float(count)]


def blobs(rng, h, w, k, rmin, rmax):
    """k random discs (later ones overwrite earlier ones): an instance label image."""
    lab = np.zeros((h, w), np.int32)
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(k):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = rng.uniform(rmin, rmax)
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i + 1
    return lab


def membrane_truth(rng, h, w, k):
    """Cells with a one-pixel membrane between touching ones (truth 0 = membrane)."""
    lab = blobs(rng, h, w, k, 3, 8)
    edge = np.zeros_like(lab, bool)
    edge[:-1, :] |= (lab[:-1, :] != lab[1:, :])
    edge[:, :-1] |= (lab[:, :-1] != lab[:, 1:])
    return np.where(edge | (lab == 0), 0, 255).astype(np.int32), lab


def make(out_dir):
    rng = np.random.default_rng(2012)
    t = {}
    cases = []
    # V scores: (h, w, cells, truth_instances, noise, threshold index of the stored thinning)
    vcfg = [(23, 31, 9, 0, 0.25, 5), (32, 32, 14, 0, 0.4, 3), (17, 40, 6, 1, 0.3, 5),
            (12, 9, 3, 0, 0.6, 8), (20, 20, 1, 0, 0.2, 5)]
    for h, w, k, inst, noise, ti in vcfg:
        tmask, tlab = membrane_truth(rng, h, w, k)
        truth = tlab if inst else tmask
        base = (tmask > 0).astype(np.float64)
        prob = np.clip(base * 0.8 + 0.1 + rng.normal(0, noise, (h, w)), 0, 1).astype(np.float32)
        prob[0, 0], prob[1, 0] = 0.5, 0.3  # values at Fiji's thresholds
        cases.append(("v", h, w, inst, ti, prob, truth))
    # a constant proposal (one threshold sees no cell, another only cells)
    tmask, _ = membrane_truth(rng, 10, 13, 4)
    cases.append(("v", 10, 13, 0, 10, np.full((10, 13), 0.55, np.float32), tmask))
    for c, (kind, h, w, inst, ti, prob, truth) in enumerate(cases):
        r = vcase(prob, truth, inst, ti)
        t[f"case{c}.cfg"] = np.array([0, h, w, inst, ti], np.int64)
        t[f"case{c}.prob"] = prob
        t[f"case{c}.truth"] = truth.astype(np.int32)
        for key in ("thr", "thin", "nothin", "thinned"):
            t[f"case{c}.{key}"] = r[key]
    c = len(cases)
    # SEG: instance images with shuffled, non-consecutive ids and multi-blob labels
    for h, w, k in ((30, 40, 8), (25, 25, 5), (40, 31, 12)):
        truth = blobs(rng, h, w, k, 3, 9)
        pred = blobs(rng, h, w, k + 2, 3, 9)
        pred = np.where(rng.uniform(size=(h, w)) < 0.05, 0, pred)
        truth = np.where(truth > 0, truth * 7 + 100, 0).astype(np.int32)
        truth[0:2, 0:2] = truth.max() + 7       # a detached second blob of one label
        truth[h - 2:, w - 2:] = truth.max()
        pred = np.where(pred > 0, 1000 - pred * 3, 0).astype(np.int32)
        t[f"case{c}.cfg"] = np.array([1, h, w, 1], np.int64)
        t[f"case{c}.pred"] = pred
        t[f"case{c}.truth"] = truth
        t[f"case{c}.seg"] = np.array(seg(pred, truth), np.float64)
        c += 1
    save(os.path.join(out_dir, "metrics_ref.safetensors"), t,
         {"source": "tools/metrics_ref.py", "cases": str(c)})


if __name__ == "__main__":
    make(sys.argv[1] if len(sys.argv) > 1 else "tests/golden")
