#!/bin/sh
# The SUPERSEDED 3- and 5-image hold-out runs of docs/results.md (sections "Superseded"); the
# cross-validated results come from scripts/results.sh.  Usage:
#   scripts/results_holdout.sh DATA_DIR [DATASET ...]      (DATA_DIR holds isbi2012/ and dic-c2dh-hela/)
# Needs a built ./unet; the PyTorch rows need /usr/bin/python3 with python3-torch.
# Writes runs/results/<dataset>/<recipe>/ (model, log, predictions, eval.json, time.txt).
#
# Splits (fixed, so every recipe sees the same images):
#   isbi2012       train 00..19, validate 20..24 (slices 10 apart are uncorrelated)
#   dic-c2dh-hela  validate 01_t039, 02_t038, 02_t042 (the last frames of each sequence), train
#                  on the other 10
# Recipes (2 threads, same number of steps; the model evaluated is the last one, no selection
# on the validation images):
#   seed        U-Net base 16, depth 4, same padding + BatchNorm, 256x256 tiles, batch 2,
#               flips/rot90, Adam 1e-3, CE + Dice, 1000 steps                    (unet and PyTorch)
#   paper       U-Net base 16, depth 4, valid convs, no BatchNorm, dropout 0.5, He init,
#               412 -> 228 tiles, batch 1, elastic deformation + rotation/shift/gray values,
#               border-weighted CE (w0 10, sigma 5) with separated cells, Adam 5e-4, 4000 steps
#               (STEPS_PAPER; one 412 tile costs about a quarter of the seed's two 256 tiles, so
#               4000 steps take about the seed recipe's training time).
#               (The paper's SGD with momentum 0.99 was tuned for Caffe's summed loss: with a
#               mean loss, lr 0.005 oscillated here: validation Dice 0.86, 0.88, 0.79, 0.08 at
#               steps 101..404 on isbi2012.)
#   fcn8s       FCN-8s base 16 (VGG widths 16..128, fc 1024), 256x256 tiles, batch 2, flips,
#               Adam 1e-3, CE + Dice, 1000 steps
set -eu
DATA=${1:?usage: scripts/results_holdout.sh DATA_DIR [DATASET ...]}
shift
SETS=${*:-isbi2012 dic-c2dh-hela}
RECIPES=${RECIPES:-seed-unet seed-pytorch paper-unet fcn8s-unet}
want() { case " $RECIPES " in *" $1 "*) return 0 ;; esac; return 1; }
UNET=${UNET:-./unet}
PY=${PY:-/usr/bin/python3}
STEPS=${STEPS:-1000}
STEPS_PAPER=${STEPS_PAPER:-4000}
OUT=${OUT:-runs/results}
THREADS=${THREADS:-2}
SEED=${SEED:-1}

split() { # dataset -> runs/splits/<dataset>/{train,val}/{images,masks} (symlinks)
    d=$1
    s=runs/splits/$d
    rm -rf "$s"
    mkdir -p "$s/train/images" "$s/train/masks" "$s/val/images" "$s/val/masks"
    for f in "$DATA/$d/train/images"/*; do
        n=$(basename "$f")
        case "$d:$n" in
            isbi2012:2[0-4].png | dic-c2dh-hela:01_t039.tif | dic-c2dh-hela:02_t038.tif | \
            dic-c2dh-hela:02_t042.tif) part=val ;;
            *) part=train ;;
        esac
        ln -s "$(realpath "$f")" "$s/$part/images/$n"
        ln -s "$(realpath "$DATA/$d/train/masks/$n")" "$s/$part/masks/$n"
    done
}

timed() { # dir command... : runs it, records wall seconds in dir/time.txt
    dir=$1
    shift
    t0=$(date +%s)
    "$@" > "$dir/train.txt" 2>&1
    echo $(( $(date +%s) - t0 )) > "$dir/time.txt"
}

evaluate() { # dir split
    "$UNET" eval --pred "$1/pred" --truth "$2/val/masks" --json > "$1/eval.json"
    "$UNET" eval --pred "$1/pred" --truth "$2/val/masks" > "$1/eval.txt"
}

for d in $SETS; do
    split "$d"
    s=runs/splits/$d
    common="--images $s/train/images --masks $s/train/masks --val-images $s/val/images \
            --val-masks $s/val/masks --steps $STEPS --seed $SEED --threads $THREADS --quiet"

    r=$OUT/$d/seed-unet; mkdir -p "$r"
    if want seed-unet; then
    echo "== $d: seed recipe, unet"
    timed "$r" "$UNET" train $common --out "$r/model.safetensors" --base 16 --depth 4 \
        --tile 256 --batch 2 --optimizer adam --lr 1e-3 --loss ce+dice --augment flips
    "$UNET" predict --model "$r/model.last.safetensors" --input "$s/val/images" \
        --output "$r/pred" --overlay --quiet
    evaluate "$r" "$s"
    fi

    if want seed-pytorch && $PY -c "import torch" 2>/dev/null; then
        r=$OUT/$d/seed-pytorch; mkdir -p "$r"
        echo "== $d: seed recipe, PyTorch"
        timed "$r" $PY tools/train_torch.py --images "$s/train/images" --masks "$s/train/masks" \
            --val-images "$s/val/images" --val-masks "$s/val/masks" --out "$r" --base 16 \
            --depth 4 --tile 256 --batch 2 --steps "$STEPS" --lr 1e-3 --seed "$SEED" --threads "$THREADS"
        evaluate "$r" "$s"
    fi

    r=$OUT/$d/paper-unet; mkdir -p "$r"
    if want paper-unet; then
    echo "== $d: the paper's recipe, unet"
    timed "$r" "$UNET" train $common --out "$r/model.safetensors" --recipe paper --base 16 \
        --depth 4 --tile 412 --optimizer adam --lr 5e-4 --steps "$STEPS_PAPER"
    "$UNET" predict --model "$r/model.last.safetensors" --input "$s/val/images" \
        --output "$r/pred" --overlay --instances --quiet
    evaluate "$r" "$s"
    fi

    r=$OUT/$d/fcn8s-unet; mkdir -p "$r"
    if want fcn8s-unet; then
    echo "== $d: FCN-8s, unet"
    timed "$r" "$UNET" train $common --out "$r/model.safetensors" --arch fcn8s --base 16 \
        --tile 256 --batch 2 --optimizer adam --lr 1e-3 --loss ce+dice --augment flips
    "$UNET" predict --model "$r/model.last.safetensors" --input "$s/val/images" \
        --output "$r/pred" --overlay --quiet
    evaluate "$r" "$s"
    fi
done
echo "results in $OUT"
