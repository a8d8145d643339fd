#!/bin/sh
# Cross-validated results behind docs/results.md.  Usage:
#   scripts/results.sh DATA_DIR
#   RECIPES="seed paper" DATASETS=isbi2012 FOLDS="1 2" SEEDS="1 2" MINUTES=15 scripts/results.sh DATA_DIR
# DATA_DIR holds isbi2012/, dic-c2dh-hela/, fluo-n2dl-hela/ and fluo-n2dh-gowt1/ (each with
# train/images and train/masks).  Needs a built ./unet.  Then:
#   python3 tools/results_table.py runs/cv              (mean ± sd over folds and seeds)
#
# Every training image of a data set is predicted exactly once per seed, by the model of the
# fold that held it out; nothing is selected on it (--val-split 0: the model scored is the one
# after the last step).  Folds (fixed; neighbours in time or depth stay in one fold):
#   isbi2012         5 folds of 5 consecutive slices: 00-04, 05-09, 10-14, 15-19, 20-24
#                    (adjacent slices correlate, slices 10 apart do not)
#   dic-c2dh-hela    4 folds of temporally close frames: {01_t002 01_t005 02_t006 02_t007},
#                    {01_t031 01_t033 01_t034}, {01_t039 02_t014 02_t027}, {02_t034 02_t038 02_t042}
#   fluo-n2dl-hela   3 folds, one image each: 01_t013, 02_t075, 02_t079 (02_t075 and 02_t079 are
#                    4 frames apart: those two folds train on a near neighbour of the test image)
#   fluo-n2dh-gowt1  5 folds, one image each: t01, t21, t31, t39, t52
#
# Environment (defaults in brackets):
#   RECIPES   recipe names [the default recipe, see recipe() below]: a base recipe and modifiers
#             joined by '+', e.g. seed+cos+ema+b32 (recipe() lists them)
#   DATASETS  [isbi2012 dic-c2dh-hela fluo-n2dl-hela fluo-n2dh-gowt1]
#   FOLDS     fold numbers [all folds of each data set]
#   SEEDS     training seeds [1]
#   MINUTES   training budget [15]: steps = MINUTES x the configuration's measured rate on this
#             machine's 2 cores (rate() below, from scripts/calibrate.sh); the run is budgeted
#             by steps, so it is reproducible, and its wall and CPU time are recorded
#   STEPS     a number of steps instead of MINUTES
#   VARIANTS  prediction variants scored besides the plain one [none]: '+'-joined of
#             plain (the plain prediction, predicted and scored again: e.g. with a newer
#             unet eval), tta (8 flips/rotations averaged), inst (unet predict --instances), cc or ws
#             (--instances by connected components grown back over the separation, or by the
#             seeded watershed); e.g. VARIANTS="tta ws tta+ws"
#   EVAL_FLAGS  more unet eval options, e.g. --prob (V_rand/V_info of the probability maps)
#   EVAL_ONLY   1: train and predict nothing; score every finished fold's predictions (pred/,
#               pred-V/) again with this unet eval, rewriting eval.json (e.g. after a new metric)
#   OUT       [runs/cv]; runs go to OUT/<dataset>/<recipe>_<budget>/seed<k>/fold<f>/
#   THREADS   [2]
# A fold whose eval.json exists is skipped, an interrupted training is resumed from its
# checkpoint, so the script can be rerun after an interruption.  Each fold directory holds
# model.safetensors, model.log.csv, train.txt (stderr), time.txt (wall, user and system seconds
# of each training invocation), train.rc, pred/ (masks, NAME_prob.tif, instances when the
# recipe separates cells), eval.json, and per variant V pred-V/ and eval-V.json.
#
# OMP_WAIT_POLICY=passive: on a shared machine a waiting OpenMP thread that spins takes the core
# from the one it waits for; measured here under load, 2 spinning threads ran 3-4x slower than
# passive ones (15 steps of base 16: 34-52 s against 9-15 s).
set -eu
DATA=${1:?usage: scripts/results.sh DATA_DIR (see the comments for the environment)}
UNET=${UNET:-./unet}
OUT=${OUT:-runs/cv}
THREADS=${THREADS:-2}
SEEDS=${SEEDS:-1}
MINUTES=${MINUTES:-15}
STEPS=${STEPS:-}
VARIANTS=${VARIANTS:-}
EVAL_FLAGS=${EVAL_FLAGS:-}
EVAL_ONLY=${EVAL_ONLY:-}
DATASETS=${DATASETS:-isbi2012 dic-c2dh-hela fluo-n2dl-hela fluo-n2dh-gowt1}
RECIPES=${RECIPES:-seed}
FOLDS=${FOLDS:-}
OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
export OMP_WAIT_POLICY

# The images of fold $2 of data set $1 (names without extension).
fold_images() {
    case "$1:$2" in
        isbi2012:[1-5]) i=$(( ($2 - 1) * 5 )); for k in 0 1 2 3 4; do printf '%02d ' $((i + k)); done ;;
        dic-c2dh-hela:1) echo 01_t002 01_t005 02_t006 02_t007 ;;
        dic-c2dh-hela:2) echo 01_t031 01_t033 01_t034 ;;
        dic-c2dh-hela:3) echo 01_t039 02_t014 02_t027 ;;
        dic-c2dh-hela:4) echo 02_t034 02_t038 02_t042 ;;
        fluo-n2dl-hela:1) echo 01_t013 ;;
        fluo-n2dl-hela:2) echo 02_t075 ;;
        fluo-n2dl-hela:3) echo 02_t079 ;;
        fluo-n2dh-gowt1:1) echo t01 ;;
        fluo-n2dh-gowt1:2) echo t21 ;;
        fluo-n2dh-gowt1:3) echo t31 ;;
        fluo-n2dh-gowt1:4) echo t39 ;;
        fluo-n2dh-gowt1:5) echo t52 ;;
        *) echo "results.sh: no fold $2 for data set $1" >&2; exit 2 ;;
    esac
}
n_folds() {
    case "$1" in
        isbi2012 | fluo-n2dh-gowt1) echo 5 ;;
        dic-c2dh-hela) echo 4 ;;
        fluo-n2dl-hela) echo 3 ;;
        *) echo "results.sh: unknown data set $1" >&2; exit 2 ;;
    esac
}

# runs/cv/splits/<dataset>/fold<f>/{train,test}/{images,masks}: symlinks to DATA, never copies.
# A split that is there with the right test images is kept, so that two queues (THREADS=1
# each) can share OUT without one removing a split the other is reading.
split() {
    sd=$OUT/splits/$1/fold$2
    held=$(fold_images "$1" "$2")
    if [ -d "$sd/train/masks" ] && [ -d "$sd/test/masks" ]; then
        have=$(ls "$sd/test/images" | sed 's/\.[^.]*$//')
        # shellcheck disable=SC2086,SC2116  # split into words on purpose: compared as lists
        [ "$(echo $have)" = "$(echo $held)" ] && return 0
    fi
    rm -rf "$sd"
    mkdir -p "$sd/train/images" "$sd/train/masks" "$sd/test/images" "$sd/test/masks"
    n_test=0
    for img in "$DATA/$1/train/images"/*; do
        n=$(basename "$img")
        part=train
        for h in $held; do [ "${n%.*}" = "$h" ] && part=test && n_test=$((n_test + 1)); done
        ln -s "$(realpath "$img")" "$sd/$part/images/$n"
        ln -s "$(realpath "$DATA/$1/train/masks/$n")" "$sd/$part/masks/$n"
    done
    [ "$n_test" = "$(echo $held | wc -w)" ] || { echo "results.sh: $1 fold $2: expected $held" >&2; exit 1; }
}

# Training rate of a configuration arch:base:tile:batch in steps per minute of 2 cores (120 CPU
# seconds), measured by scripts/calibrate.sh (docs/results.md, "Training budgets").
rate() {
    case "$1" in
        unet:16:256:2) echo 280 ;;
        unet:16:256:4) echo 136 ;;
        unet:16:128:8) echo 265 ;;      # 0.946x unet:16:256:2 in the same calibrate.sh run (244 / 258, loaded)
        unet:32:256:2) echo 100 ;;
        unet:64:256:4) echo 15 ;;       # unet train's default width and batch without --minutes
        unet-paper:16:412:1) echo 350 ;;
        unet-paper:32:412:1) echo 125 ;;
        *) echo "" ;;
    esac
}

# recipe NAME: sets TRAIN (unet train flags), PRED (unet predict flags) and SIG (the rate key).
recipe() {
    arch=unet base=16 tile=256 batch=2 TRAIN= PRED=
    IFS=+
    set -- $1
    unset IFS
    case "$1" in
        # Pytorch-UNet's network (same padding, BatchNorm), CE + soft Dice, flips and 90-degree
        # turns, Adam 1e-3, two 256x256 tiles per step
        seed) TRAIN="--optimizer adam --lr 1e-3 --loss ce+dice --augment flips" ;;
        # Ronneberger et al.: valid convolutions, no BatchNorm, dropout 0.5, elastic deformation,
        # weighted CE (w0 10, sigma 5) with separated cells, Adam 5e-4, one 412 -> 228 tile
        paper) arch=unet-paper tile=412 batch=1 TRAIN="--recipe paper"; PRED="--instances" ;;
        *) echo "results.sh: unknown base recipe '$1' (seed, paper)" >&2; exit 2 ;;
    esac
    shift
    for m in "$@"; do
        case "$m" in
            cos) TRAIN="$TRAIN --schedule cosine --warmup 100" ;;     # cosine decay, warm-up
            poly) TRAIN="$TRAIN --schedule poly --warmup 100" ;;      # nnU-Net's poly decay
            ema) TRAIN="$TRAIN --ema 0.999" ;;                        # moving average of weights
            clip) TRAIN="$TRAIN --clip 1" ;;                          # gradient norm <= 1
            b[0-9]*) base=${m#b} ;;                                   # width of the first level
            t[0-9]*) tile=${m#t} ;;                                   # training tile side
            bs[0-9]*) batch=${m#bs} ;;                                # tiles per step
            lr*) TRAIN="$TRAIN --lr ${m#lr}" ;;                       # learning rate
            paug) TRAIN="$TRAIN --augment paper" ;;                   # elastic + rotation + gray
            flips) TRAIN="$TRAIN --augment flips" ;;                  # flips and 90-degree turns
            wce) TRAIN="$TRAIN --loss wce" ;;                         # border-weighted CE (Eq. 2)
            ce) TRAIN="$TRAIN --loss ce" ;;
            cedice) TRAIN="$TRAIN --loss ce+dice" ;;
            sep) TRAIN="$TRAIN --separate-cells"; PRED="--instances" ;;  # strip between cells
            c3) TRAIN="$TRAIN --classes 3 --separate-cells"; PRED="--instances" ;;  # border class
            *) echo "results.sh: unknown recipe modifier '$m'" >&2; exit 2 ;;
        esac
    done
    TRAIN="$TRAIN --base $base --depth 4 --tile $tile --batch $batch"
    [ "$arch" = unet-paper ] || TRAIN="--arch $arch $TRAIN"
    SIG=$arch:$base:$tile:$batch
}

variant_flags() {
    vf=
    IFS=+
    for v in $1; do
        case "$v" in
            plain) ;;                                                 # scored again
            tta) vf="$vf --tta" ;;
            inst) vf="$vf --instances" ;;
            cc) vf="$vf --instances --instance-method cc" ;;
            ws) vf="$vf --instances --instance-method watershed" ;;
            *) echo "results.sh: unknown variant '$v' (tta, inst, cc, ws)" >&2; exit 2 ;;
        esac
    done
    unset IFS
    echo "$vf"
}

# predict_eval DIR SPLIT NAME FLAGS: DIR/pred[-NAME] and DIR/eval[-NAME].json
predict_eval() {
    pr=$1 ps=$2 sfx=${3:+-$3} flags=$4
    if [ "$EVAL_ONLY" = 1 ]; then   # score the predictions there again, nothing else
        [ -d "$pr/pred$sfx" ] || return 0
    else
        [ -s "$pr/eval$sfx.json" ] && return 0
        rm -rf "$pr/pred$sfx"
        # shellcheck disable=SC2086
        "$UNET" predict --model "$pr/model.safetensors" --input "$ps/test/images" \
            --output "$pr/pred$sfx" --probabilities --threads "$THREADS" --quiet $flags
    fi
    # shellcheck disable=SC2086
    "$UNET" eval --pred "$pr/pred$sfx" --truth "$ps/test/masks" --json $EVAL_FLAGS \
        > "$pr/eval$sfx.json.tmp"
    mv "$pr/eval$sfx.json.tmp" "$pr/eval$sfx.json"
}

for d in $DATASETS; do
    folds=$FOLDS
    [ -n "$folds" ] || folds=$(seq 1 "$(n_folds "$d")")
    for rec in $RECIPES; do
        recipe "$rec"
        if [ -n "$STEPS" ]; then
            steps=$STEPS budget=s$STEPS
        else
            spm=$(rate "$SIG")
            [ -n "$spm" ] || { echo "results.sh: no measured rate for $SIG ($rec): give STEPS or add it to rate()" >&2; exit 2; }
            steps=$(( MINUTES * spm )) budget=${MINUTES}m
        fi
        for seed in $SEEDS; do
            for fold in $folds; do
                [ "$fold" -le "$(n_folds "$d")" ] || continue
                r=$OUT/$d/${rec}_$budget/seed$seed/fold$fold
                s=$OUT/splits/$d/fold$fold
                if [ "$EVAL_ONLY" = 1 ]; then   # the fold's split is there since its training
                    [ -s "$r/model.safetensors" ] && [ -d "$s/test/masks" ] || continue
                else
                    mkdir -p "$r"
                    split "$d" "$fold"
                fi
                if [ "$EVAL_ONLY" != 1 ] && { [ ! -s "$r/time.txt" ] || [ -e "$r/model.resume.safetensors" ]; }; then
                    resume=
                    [ -e "$r/model.resume.safetensors" ] && resume="--resume $r/model.resume.safetensors"
                    echo "== $d $rec $budget seed $seed fold $fold: $steps steps (test: $(ls "$s/test/images" | tr '\n' ' '))"
                    rc=0
                    # shellcheck disable=SC2086
                    /usr/bin/time -f "%e %U %S" -a -o "$r/time.txt" "$UNET" train \
                        --images "$s/train/images" --masks "$s/train/masks" --val-split 0 \
                        --out "$r/model.safetensors" --steps "$steps" --seed "$seed" \
                        --threads "$THREADS" --quiet $TRAIN $resume >> "$r/train.txt" 2>&1 || rc=$?
                    echo "$rc" > "$r/train.rc"
                    if [ "$rc" != 0 ]; then
                        echo "results.sh: $r: unet train exited $rc (see $r/train.txt)" >&2
                        [ "$rc" = 3 ] || exit 1
                    fi
                    # The model is OUT (STEM.last is the same file without validation); after a
                    # divergence (exit 3) the last good state, scored and marked failed.
                    rm -f "$r/model.resume.safetensors" "$r/model.last.safetensors"
                fi
                predict_eval "$r" "$s" "" "$PRED"
                for v in $VARIANTS; do
                    predict_eval "$r" "$s" "$v" "$PRED $(variant_flags "$v")"
                done
                grep -q ',rollback' "$r/model.log.csv" && echo "results.sh: $r: rollbacks in the log" >&2
                :
            done
        done
    done
done
echo "results in $OUT (python3 tools/results_table.py $OUT)"
