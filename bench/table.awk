#!/usr/bin/awk -f
# table.awk — bench/run's raw lines (PEAK ..., RESULT impl=... key=value ...) to markdown tables.
#
# Speed ratios are peer median / unet median (> 1: unet is faster); the RSS ratio is unet's peak
# RSS / the peer's (< 1: unet uses less).  Effective GFLOP/s counts the convolutions' direct
# multiply-adds x 2 (a training step: 3x the forward) per second, whatever algorithm ran, so a
# method that does fewer multiplications can exceed the FMA peak.

function kv(line, arr,    n, i, f, p) {
    delete arr
    n = split(line, f, " ")
    for (i = 2; i <= n; i++) {
        p = index(f[i], "=")
        if (p > 0) arr[substr(f[i], 1, p - 1)] = substr(f[i], p + 1)
    }
}

function ratio(a, b) { return (a > 0 && b > 0) ? sprintf("%.2fx", a / b) : "–" }
function secs(k) {
    return (k in med) ? sprintf("%.3f (%.3f–%.3f)", med[k], mn[k], mx[k]) : "–"
}
function mb(k) { return (k in rss) ? sprintf("%.0f", rss[k]) : "–" }

/^PEAK/ {
    kv($0, a)
    peak[a["isa"], a["threads"]] = a["gflops"]
    next
}
/^RESULT/ {
    kv($0, a)
    cfg = a["mode"] " " a["size"] "x" a["size"] " b" a["batch"]
    if (!(cfg in seen)) { seen[cfg] = 1; order[++ncfg] = cfg }
    if (!(a["threads"] in seent)) { seent[a["threads"]] = 1; thr[++nthr] = a["threads"] }
    k = a["impl"] SUBSEP cfg SUBSEP a["threads"]
    med[k] = a["median_s"]; mn[k] = a["min_s"]; mx[k] = a["max_s"]; rss[k] = a["rss_mb"]
    if ("cpu_s" in a) cpu[k] = a["cpu_s"]
    if ("gflop" in a) gflop[cfg] = a["gflop"]
    next
}
END {
    print "| configuration | threads | unet s: median (min–max) | PyTorch s | ONNX Runtime s | vs PyTorch | vs ORT | unet GFLOP/s (% AVX2 / AVX-512 peak) | peak RSS MB: unet / PyTorch / ORT | RSS unet/PyTorch |"
    print "|---|---|---|---|---|---|---|---|---|---|"
    for (i = 1; i <= ncfg; i++) {
        c = order[i]
        for (j = 1; j <= nthr; j++) {
            t = thr[j]
            u = "unet" SUBSEP c SUBSEP t; p = "torch" SUBSEP c SUBSEP t; o = "ort" SUBSEP c SUBSEP t
            eff = "–"
            if ((u in med) && med[u] > 0 && (c in gflop)) {
                g = gflop[c] / med[u]
                eff = sprintf("%.0f", g)
                if (("avx2", t) in peak) eff = eff sprintf(" (%.0f%% / ", 100 * g / peak["avx2", t])
                if (("avx512", t) in peak) eff = eff sprintf("%.0f%%)", 100 * g / peak["avx512", t])
                else if (("avx2", t) in peak) eff = eff "–)"
            }
            printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s / %s / %s | %s |\n", c, t, secs(u),
                   secs(p), secs(o), ratio(med[p], med[u]), ratio(med[o], med[u]), eff,
                   mb(u), mb(p), mb(o), ratio(rss[u], rss[p])
        }
    }
    if (nthr >= 2) {
        t1 = thr[1]; t2 = thr[nthr]
        print ""
        printf "| configuration | speed-up %s → %s threads: unet | PyTorch | ONNX Runtime |\n", t1, t2
        print "|---|---|---|---|"
        for (i = 1; i <= ncfg; i++) {
            c = order[i]
            printf "| %s | %s | %s | %s |\n", c,
                   ratio(med["unet" SUBSEP c SUBSEP t1], med["unet" SUBSEP c SUBSEP t2]),
                   ratio(med["torch" SUBSEP c SUBSEP t1], med["torch" SUBSEP c SUBSEP t2]),
                   ratio(med["ort" SUBSEP c SUBSEP t1], med["ort" SUBSEP c SUBSEP t2])
        }
    }
    np = 0
    for (k in peak) np++
    if (np > 0) {
        print ""
        line = "Measured FMA peak (bench_peak), GFLOP/s:"
        for (j = 1; j <= nthr; j++) {
            t = thr[j]
            if (("avx2", t) in peak) line = line sprintf(" AVX2 %s thr %s;", t, peak["avx2", t])
            if (("avx512", t) in peak) line = line sprintf(" AVX-512 %s thr %s;", t, peak["avx512", t])
        }
        print line
        line = ""
        for (j = 1; j <= nthr; j++)
            if (("avx512bf16", thr[j]) in peak)
                line = line sprintf(" AVX512_BF16 dot products %s thr %s;", thr[j], peak["avx512bf16", thr[j]])
        if (line != "") print "Measured bf16 peak (vdpbf16ps, float32 sums), GFLOP/s:" line
    }
    nb = 0
    for (k in med) if (index(k, "unet-bf16" SUBSEP) == 1) nb++
    if (nb > 0) {
        print ""
        print "| configuration | threads | unet fp32 s | unet bf16 s: median (min–max) | bf16 speed-up | in CPU time | bf16 vs ORT | bf16 vs PyTorch |"
        print "|---|---|---|---|---|---|---|---|"
        for (i = 1; i <= ncfg; i++)
            for (j = 1; j <= nthr; j++) {
                c = order[i]; t = thr[j]
                u = "unet" SUBSEP c SUBSEP t; b = "unet-bf16" SUBSEP c SUBSEP t
                if (!(b in med)) continue
                printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", c, t, secs(u), secs(b),
                       ratio(med[u], med[b]), ratio(cpu[u], cpu[b]),
                       ratio(med["ort" SUBSEP c SUBSEP t], med[b]),
                       ratio(med["torch" SUBSEP c SUBSEP t], med[b])
            }
    }
}
