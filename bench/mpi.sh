#!/bin/sh
# bench/mpi.sh — a data-parallel training step on this machine (docs/scaling.md):
#     bench/mpi.sh [BUILD]          (needs $BUILD/unet-mpi: make BUILD/unet-mpi; and mpicc)
# The seed U-Net (base 64, depth 4, batch-norm) on 256x256 tiles of data/sample, global batch 4,
# Adam, cross entropy, as
#   1x2  one process with 2 OpenMP threads            ($BUILD/unet, --threads 2)
#   2x1  mpirun -np 2, one thread each, 2 tiles each   ($BUILD/unet-mpi, --threads 1)
# ROUNDS (3) rounds, the two interleaved so that machine noise hits both alike; each run takes
# STEPS (4) steps and its step time is the median of the log's per-step times without the
# first (warm-up).  Prints each run, the medians over the rounds and the ratio 2x1 / 1x2 of the
# step times, and the 2x1 runs' time in the gradient allreduce (unet's own count: the
# MPI_Allreduce calls, waiting for the other rank included).  Then the allreduce alone of the
# 124 MB gradient block (bench/bench_allreduce.c).
set -u
cd "$(dirname "$0")/.."
BUILD=${1:-build}
ROUNDS=${ROUNDS:-3}
STEPS=${STEPS:-4}
OUT=$(mktemp -d /tmp/unet_bench_mpi.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
D=data/sample/train
COMMON="--images $D/images --masks $D/masks --base 64 --depth 4 --tile 256 --batch 4 --loss ce
        --val-split 0 --steps $STEPS --seed 1 --quiet"
MPIRUN="mpirun --oversubscribe --allow-run-as-root --bind-to none"
export OMP_WAIT_POLICY=passive

# step_time LOG: median of the per-step seconds (differences of the log's `seconds`), step 1
# left out.
step_time() {
    awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == "seconds") c = i; next }
             { if (NR > 2) print $c - prev; prev = $c }' "$1" | sort -g |
        awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

: >"$OUT/a" && : >"$OUT/b" && : >"$OUT/share"
for r in $(seq 1 "$ROUNDS"); do
    "$BUILD/unet" train $COMMON --threads 2 --out "$OUT/a$r.safetensors" 2>/dev/null ||
        { echo "the 1x2 run failed"; exit 1; }
    a=$(step_time "$OUT/a$r.log.csv")
    $MPIRUN -np 2 "$BUILD/unet-mpi" train $COMMON --threads 1 --out "$OUT/b$r.safetensors" \
        2>"$OUT/err" || { cat "$OUT/err"; echo "the 2x1 run failed"; exit 1; }
    b=$(step_time "$OUT/b$r.log.csv")
    share=$(sed -n 's/.*gradient allreduce: \([0-9.]*\) s of \([0-9.]*\) s.*/\1 \2/p' "$OUT/err")
    echo "round $r: 1x2 $a s/step, 2x1 $b s/step, allreduce $share (s, of the run's s)"
    echo "$a" >>"$OUT/a" && echo "$b" >>"$OUT/b"
    echo "$share" | awk '{ print 100 * $1 / $2 }' >>"$OUT/share"
done
a=$(median <"$OUT/a") b=$(median <"$OUT/b") s=$(median <"$OUT/share")
echo "median step: 1x2 $a s, 2x1 $b s; speed 2x1 / 1x2 = $(echo "$a $b" | awk '{ printf "%.3f", $1 / $2 }'); allreduce $s% of the 2x1 runs"
if command -v mpicc >/dev/null; then
    mpicc -O2 bench/bench_allreduce.c -o "$OUT/bench_allreduce" &&
        $MPIRUN -np 2 "$OUT/bench_allreduce" 31037698 5
fi
