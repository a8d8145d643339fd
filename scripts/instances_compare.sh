#!/bin/sh
# instances_compare.sh — connected components against the seeded watershed, by CTC SEG, on
# held-out images of DIC-C2DH-HeLa and Fluo-N2DH-GOWT1 (docs/results.md, "Instances").
#
#   make && scripts/instances_compare.sh /path/to/shared/data        # about 10 minutes, 2 cores
#
# A small held-out measurement, not cross-validation: for each data set one short paper-recipe
# training run on the train folder minus 3 held-out frames, then both instance methods on the
# probabilities that one model predicted for those 3 frames.  Writes $OUT/<set>/ (split of
# symbolic links, model, log, predictions, eval-*.json and eval-*.txt) and prints a summary.
# A model already in $OUT is reused (delete it to retrain).  The images are linked, never copied.
#
# Environment: OUT (runs/instances), STEPS (1500), THREADS (2), SEED (1), UNET (./unet).
set -eu

DATA=${1:?usage: scripts/instances_compare.sh /path/to/shared/data}
OUT=${OUT:-runs/instances}
STEPS=${STEPS:-1500}
THREADS=${THREADS:-2}
SEED=${SEED:-1}
UNET=${UNET:-./unet}

# held-out frames per data set (DIC-HeLa: those of docs/results.md; GOWT1: one field of view
# of the two and one frame of the other are trained on, t01 and t21)
held() {
    case $1 in
    dic-c2dh-hela) echo "01_t039 02_t038 02_t042" ;;
    fluo-n2dh-gowt1) echo "t31 t39 t52" ;;
    esac
}

split() { # set -> $OUT/set/{train,val}/{images,masks} of links
    src=$DATA/$1/train
    dst=$OUT/$1
    rm -rf "$dst/train" "$dst/val"
    mkdir -p "$dst/train/images" "$dst/train/masks" "$dst/val/images" "$dst/val/masks"
    for f in "$src"/images/*; do
        b=$(basename "$f")
        stem=${b%.*}
        part=train
        for h in $(held "$1"); do [ "$h" = "$stem" ] && part=val; done
        ln -s "$(cd "$(dirname "$f")" && pwd)/$b" "$dst/$part/images/$b"
        ln -s "$(cd "$src/masks" && pwd)/$b" "$dst/$part/masks/$b"
    done
}

for d in dic-c2dh-hela fluo-n2dh-gowt1; do
    r=$OUT/$d
    split "$d"
    if [ ! -f "$r/model.safetensors" ]; then
        echo "== $d: training ($STEPS steps, paper recipe, base 16)"
        t0=$(date +%s)
        "$UNET" train --images "$r/train/images" --masks "$r/train/masks" --val-split 0 \
            --out "$r/model.safetensors" --recipe paper --base 16 --depth 4 --tile 412 \
            --steps "$STEPS" --seed "$SEED" --threads "$THREADS" --quiet > "$r/train.txt" 2>&1
        echo $(( $(date +%s) - t0 )) > "$r/time.txt"
    fi
done

# Instances from the same model and the same probabilities: connected components (the previous
# method), the watershed with its defaults (--erode 8 --seed-threshold 0.8), and its two main
# knobs around them.
# name: predict options
configs() {
    echo "cc:--instance-method cc --min-size 0"                # exactly the previous output
    echo "cc-min256:--instance-method cc"                      # plus the fragment removal
    echo "watershed:--instance-method watershed"
    for e in 2 8 16; do
        for t in 0.5 0.8; do
            [ "$e$t" = 80.8 ] && continue # the defaults
            echo "ws-e$e-t$t:--instance-method watershed --erode $e --seed-threshold $t"
        done
    done
}

mean_of() { # key eval.json -> the value in the "mean" object (not in its "prob" part)
    sed -n 's/.*"mean": {\(.*\)/\1/p' "$2" | sed 's/, "prob".*//' |
        sed -n "s/.*\"$1\": \([^,}]*\).*/\1/p"
}

summary=$OUT/summary.txt
: > "$summary"
for d in dic-c2dh-hela fluo-n2dh-gowt1; do
    r=$OUT/$d
    printf '\n%s (held out: %s; model: %s steps, %s s)\n' "$d" "$(held "$d")" "$STEPS" \
        "$(cat "$r/time.txt" 2>/dev/null || echo '?')" >> "$summary"
    printf '%-14s %9s %9s %9s %13s\n' method SEG SEG_ctc AP50 "objects p/t" >> "$summary"
    configs | while IFS=: read -r name opts; do
        # shellcheck disable=SC2086
        "$UNET" predict --model "$r/model.safetensors" --input "$r/val/images" \
            --output "$r/pred-$name" --probabilities --instances $opts --threads "$THREADS" --quiet
        "$UNET" eval --pred "$r/pred-$name" --truth "$r/val/masks" --prob --json > "$r/eval-$name.json"
        "$UNET" eval --pred "$r/pred-$name" --truth "$r/val/masks" --prob > "$r/eval-$name.txt"
        npred=$(grep -o '"objects_pred": [0-9]*' "$r/eval-$name.json" | awk '{s += $2} END {print s}')
        printf '%-14s %9s %9s %9s %13s\n' "$name" "$(mean_of seg "$r/eval-$name.json")" \
            "$(mean_of seg_ctc "$r/eval-$name.json")" "$(mean_of ap50 "$r/eval-$name.json")" \
            "$npred/$(mean_of objects_true "$r/eval-$name.json")" >> "$summary"
    done
done
cat "$summary"
echo "(SEG: mean of the images' SEG; SEG_ctc: over all reference objects, as the CTC; AP50 at IoU 0.5;"
echo " objects p/t: predicted / reference objects; eval-*.txt also hold V_rand/V_info; results in $OUT)"
