#!/bin/sh
# scripts/bf16_accuracy.sh — what --precision bf16 costs in accuracy on real images
# (docs/performance.md, "bf16").  Not a test: minutes of CPU.
#
#     scripts/bf16_accuracy.sh [DATA [OUT]]
#
# DATA: the ISBI 2012 training set (default /work/shared/data/isbi2012/train, images/ and
# masks/).  Images 10-14 are held back; the other 20 train, STEPS (default 300) steps of 2
# tiles TILE x TILE (default 128) each (the same steps, so that the two runs differ only in precision):
#   1. a float32 model (unet train --base 16, the seed recipe otherwise),
#   2. the same run with --precision bf16 (mixed precision: bf16 products, float32 weights);
# then the held-back images are predicted by model 1 at fp32 and at bf16 and by model 2 at
# bf16 and fp32, and each set of masks is scored by unet eval (Dice, IoU, pixel and Rand error,
# SEG; --prob: the challenge's V_rand and V_info).  MODEL=file skips the training and scores that
# model's fp32 and bf16 predictions only.  Prints one line per prediction and the changes.
# UNET (default build/unet), THREADS (default 2), STEPS, TILE.
set -eu
cd "$(dirname "$0")/.."
DATA=${1:-/work/shared/data/isbi2012/train}
OUT=${2:-runs/bf16}
UNET=${UNET:-build/unet}
THREADS=${THREADS:-2}
STEPS=${STEPS:-300}
TILE=${TILE:-128}
HELD="10 11 12 13 14"

mkdir -p "$OUT/train/images" "$OUT/train/masks" "$OUT/val/images" "$OUT/val/masks"
for f in "$DATA"/images/*.png; do
    n=$(basename "$f" .png)
    set="train"
    for h in $HELD; do [ "$n" = "$h" ] && set="val"; done
    ln -sf "$(readlink -f "$f")" "$OUT/$set/images/$n.png"
    ln -sf "$(readlink -f "$DATA/masks/$n.png")" "$OUT/$set/masks/$n.png"
done

train() { # precision model
    [ -f "$2" ] && return 0
    "$UNET" train --images "$OUT/train/images" --masks "$OUT/train/masks" --out "$2" \
        --base 16 --batch 2 --tile "$TILE" --val-split 0 --steps "$STEPS" \
        --precision "$1" --threads "$THREADS" 2>"$OUT/$1.train.txt"
    grep "done in" "$OUT/$1.train.txt" | sed "s/^/$1 training: /"
}

score() { # model precision label
    d="$OUT/pred-$3"
    rm -rf "$d"
    "$UNET" predict --model "$1" --input "$OUT/val/images" --output "$d" --probabilities \
        --precision "$2" --threads "$THREADS" --quiet
    "$UNET" eval --pred "$d" --truth "$OUT/val/masks" --prob --json >"$d.json"
    tr -d '\n' <"$d.json" | sed 's/.*"mean": *{\([^}]*\)}.*/\1/; s/, "prob".*//; s/"//g' |
        awk -v l="$3" '{ printf "%-16s %s\n", l, $0 }'
}

if [ -n "${MODEL:-}" ]; then
    score "$MODEL" fp32 model-fp32
    score "$MODEL" bf16 model-bf16
else
    train fp32 "$OUT/fp32.safetensors"
    train bf16 "$OUT/bf16.safetensors"
    score "$OUT/fp32.safetensors" fp32 fp32train-fp32
    score "$OUT/fp32.safetensors" bf16 fp32train-bf16
    score "$OUT/bf16.safetensors" bf16 bf16train-bf16
    score "$OUT/bf16.safetensors" fp32 bf16train-fp32
fi
