#!/bin/sh
# make valgrind (and CI): a tiny train + resume + predict + eval + report under valgrind memcheck.
# Fails on any invalid read or write, use of uninitialised memory, bad free, or definitely lost
# block (--errors-for-leak-kinds=definite).  "Still reachable" blocks (the OpenMP runtime's and
# OpenBLAS's buffers, which live until exit by design) and "possibly lost" ones (thread stacks)
# are not errors; scripts/valgrind.supp names the few library-internal reports that are not
# unet's (see docs/robustness.md).
# Usage: scripts/valgrind.sh path/to/unet
set -eu
UNET=${1:-build/unet}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/unet_valgrind.XXXXXX)
trap 'rm -rf "$work"' EXIT
VG="valgrind --tool=memcheck --error-exitcode=99 --leak-check=full \
    --errors-for-leak-kinds=definite --show-leak-kinds=definite --num-callers=30 \
    --suppressions=$here/valgrind.supp --quiet"
export OMP_NUM_THREADS=2 OMP_WAIT_POLICY=passive

# A .npy of H x W bytes: values from a seeded generator (awk), so the run is reproducible.
npy() { # file h w seed kind(image|mask)
    hdr="{'descr': '|u1', 'fortran_order': False, 'shape': ($2, $3), }"
    pad=$(( (64 - (10 + ${#hdr} + 1) % 64) % 64 ))
    len=$(( ${#hdr} + pad + 1 ))
    { printf '\223NUMPY\001\000'; printf "\\$(printf %03o $((len % 256)))\\$(printf %03o $((len / 256)))"
      printf '%s%*s\n' "$hdr" "$pad" ""
      awk -v n=$(($2 * $3)) -v w="$3" -v s="$4" -v k="$5" 'BEGIN {
          srand(s); for (i = 0; i < n; i++) {
              x = i % w; y = int(i / w); d = (x - 16) * (x - 16) + (y - 16) * (y - 16);
              inside = d < 60 + 40 * sin(s);
              v = k == "mask" ? (inside ? 255 : 0) : (inside ? 180 : 30) + int(rand() * 40);
              printf "%c", v } }' ; } > "$1"
}
mkdir -p "$work/img" "$work/msk" "$work/in"
for i in 1 2 3; do
    npy "$work/img/s$i.npy" 32 32 "$i" image
    npy "$work/msk/s$i.npy" 32 32 "$i" mask
done
mkdir -p "$work/truth"
cp "$work/img/s1.npy" "$work/in/good.npy"
cp "$work/msk/s1.npy" "$work/truth/good.npy"
printf 'not an image' > "$work/in/bad.png"

run() { # expected-exit-status command...
    want=$1
    shift
    echo "== valgrind unet $1 (expecting exit $want)"
    set +e
    $VG "$UNET" "$@"
    rc=$?
    set -e
    if [ "$rc" -eq 99 ]; then echo "valgrind: memory errors or definite leaks (above)"; exit 1; fi
    if [ "$rc" -ne "$want" ]; then echo "valgrind: unet exited $rc, expected $want"; exit 1; fi
}
T="--images $work/img --masks $work/msk --base 4 --depth 2 --tile 32 --batch 2 --val-split 0.3 --seed 1 --threads 2 --quiet"
run 0 train $T --out "$work/m.safetensors" --steps 4 --save-every 2
run 0 train $T --out "$work/m.safetensors" --steps 6 --resume "$work/m.resume.safetensors"
run 1 predict --model "$work/m.safetensors" --input "$work/in" --output "$work/out" --threads 2 \
    --probabilities --instances --overlay --quiet
run 0 eval --pred "$work/out" --truth "$work/truth" --prob
run 0 eval --pred "$work/out" --truth "$work/truth" --images "$work/in" --report "$work/eval.html"
run 0 report "$work" --out "$work/report.html"
run 1 train $T --out "$work/x.safetensors" --init tests/data/corrupt/model_truncated.safetensors
echo "valgrind: no invalid accesses, no definite leaks"
