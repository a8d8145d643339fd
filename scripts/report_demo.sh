#!/bin/sh
# The report in the README (docs/images/report.png, docs/report.md).  Usage:
#   scripts/report_demo.sh DATA_DIR          (DATA_DIR holds isbi2012/; needs ./unet, chromium)
# Two short runs on ISBI 2012 slices 00..19 that differ in their recipe (Adam 1e-3 with
# CE + Dice, the seed recipe; SGD 0.05 with momentum 0.9 and plain CE), validated on slices
# 20..24; the first run's model segments the five validation slices, unet eval scores them,
# and one page shows the runs and the evaluation.  2 to 10 minutes on 2 cores (2m17s and 8m31s
# for the two runs of docs/images/report.png, on a machine shared with other jobs).
# Writes runs/report-demo/ and, with SHOT=1, the screenshot docs/images/report.png.
set -eu
DATA=${1:?usage: scripts/report_demo.sh DATA_DIR}
UNET=${UNET:-./unet}
OUT=${OUT:-runs/report-demo}
STEPS=${STEPS:-200}
BASE=${BASE:-8}

mkdir -p "$OUT/adam" "$OUT/sgd" "$OUT/split/train/images" "$OUT/split/train/masks" \
    "$OUT/split/val/images" "$OUT/split/val/masks"
for f in "$DATA"/isbi2012/train/images/*.png; do
    n=$(basename "$f")
    case $n in 2[0-4].png) s=val ;; *) s=train ;; esac
    ln -sf "$(realpath "$f")" "$OUT/split/$s/images/$n"
    ln -sf "$(realpath "$DATA/isbi2012/train/masks/$n")" "$OUT/split/$s/masks/$n"
done
common="--images $OUT/split/train/images --masks $OUT/split/train/masks
        --val-images $OUT/split/val/images --val-masks $OUT/split/val/masks
        --base $BASE --depth 4 --tile 256 --batch 2 --steps $STEPS --seed 1 --threads 2 --quiet"
# shellcheck disable=SC2086
"$UNET" train $common --out "$OUT/adam/model.safetensors"
# shellcheck disable=SC2086
"$UNET" train $common --out "$OUT/sgd/model.safetensors" --optimizer sgd --lr 0.05 \
    --momentum 0.9 --loss ce
"$UNET" predict --model "$OUT/adam/model.safetensors" --input "$OUT/split/val/images" \
    --output "$OUT/pred" --instances --quiet
"$UNET" eval --pred "$OUT/pred" --truth "$OUT/split/val/masks" --images "$OUT/split/val/images" \
    --json > "$OUT/adam/eval.json" || true
"$UNET" report "$OUT/adam" "$OUT/sgd" --out "$OUT/report.html"
if [ "${SHOT:-0}" = 1 ]; then
    profile=$(mktemp -d)
    chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --disable-dev-shm-usage \
        --hide-scrollbars --user-data-dir="$profile" --screenshot=docs/images/report.png \
        --window-size=1280,2300 "file://$(realpath "$OUT/report.html")" 2>/dev/null
    rm -rf "$profile"
fi
echo "report: $OUT/report.html"
