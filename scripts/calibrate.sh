#!/bin/sh
# Training speed of the configurations that scripts/results.sh uses, in steps per minute, so a
# budget in minutes can be given as a (reproducible) number of steps.  Usage:
#   scripts/calibrate.sh [DATA_DIR] "NAME: TRAIN FLAGS" ...
#   e.g. scripts/calibrate.sh /work/shared/data "b32: --base 32 --tile 256 --batch 2"
# Each configuration trains STEPS (40) steps on isbi2012 (2 threads, OMP_WAIT_POLICY=passive,
# as results.sh runs) REPEAT (2) times.  The machine is shared, so wall time says little; the
# budget rule of results.sh is CPU time: a minute of 2 cores is 120 CPU seconds, and the rate
# is 120 / (CPU seconds per step), the smallest of the repeats (the whole run, loading
# included).  Under load that CPU time is inflated (caches, migrations), so the rate is
# conservative: a quiet machine does more steps per minute.  Also printed: the wall seconds per
# step between step 10 and the last step of the log, of the same repeat.
set -eu
DATA=${1:-/work/shared/data}
shift
UNET=${UNET:-./unet}
STEPS=${STEPS:-40}
REPEAT=${REPEAT:-2}
OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
export OMP_WAIT_POLICY
tmp=runs/calibrate
mkdir -p "$tmp"
for cfg in "$@"; do
    name=${cfg%%:*}
    flags=${cfg#*:}
    best=
    for r in $(seq "$REPEAT"); do
        rm -f "$tmp/m".*
        # shellcheck disable=SC2086
        /usr/bin/time -f "%U %S" -o "$tmp/cpu.txt" "$UNET" train \
            --images "$DATA/isbi2012/train/images" --masks "$DATA/isbi2012/train/masks" \
            --out "$tmp/m.safetensors" --val-split 0 --steps "$STEPS" --threads 2 --quiet \
            $flags > "$tmp/train.txt" 2>&1
        # seconds per step between step 10 and the last one, CPU seconds per step overall
        line=$(awk -F, -v n="$STEPS" 'NR == 1 { for (i = 1; i <= NF; i++) c[$i] = i; next }
            $c["step"] == 10 { t10 = $c["seconds"] } $c["step"] == n { tn = $c["seconds"] }
            END { printf "%.4f", (tn - t10) / (n - 10) }' "$tmp/m.log.csv")
        cpu=$(awk -v n="$STEPS" '{ printf "%.3f", ($1 + $2) / n }' "$tmp/cpu.txt")
        if [ -z "$best" ] || [ "$(echo "$cpu < $best" | bc)" = 1 ]; then best=$cpu; wall=$line; fi
    done
    echo "$name $(echo "120 / $best" | bc -l | xargs printf '%.0f') steps per 2-core minute" \
         "($best CPU s/step; wall $wall s/step; $flags; load $(cut -d' ' -f1 /proc/loadavg))"
done
