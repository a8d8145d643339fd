#!/bin/sh
# make demo: train a small U-Net on the bundled ISBI 2012 slices (data/sample/train), predict the
# held-out slice (data/sample/test), print its score and write the overlay.
# About two minutes on 2 cores.  Usage: scripts/demo.sh path/to/unet
set -eu
UNET=${1:-build/unet}
OUT=runs/demo
mkdir -p "$OUT"
echo "== training a U-Net (base 16, depth 4) on 8 ISBI 2012 slices, 600 steps"
"$UNET" train --images data/sample/train/images --masks data/sample/train/masks \
    --out "$OUT/model.safetensors" --base 16 --depth 4 --tile 256 --batch 2 --steps 600 \
    --val-split 0 --seed 1
echo "== predicting the held-out slice 24"
"$UNET" predict --model "$OUT/model.safetensors" --input data/sample/test/images \
    --output "$OUT/pred" --overlay
echo "== scoring it against its ground truth"
"$UNET" eval --pred "$OUT/pred" --truth data/sample/test/masks
echo "== overlay: $OUT/pred/24_overlay.png (cell outlines in yellow)"
