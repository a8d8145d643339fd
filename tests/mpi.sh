#!/bin/sh
# The MPI tests (docs/scaling.md): `mpirun -np 2` of the MPI build ($UNET_MPI_BIN, default
# build/unet-mpi) against one process of the plain build ($UNET_BIN) on data/sample, with a tiny
# network (base 4, depth 2, tile 64, batch 4, a few steps of cross entropy, one thread each):
#   train_nobn / train_syncbn   2 ranks == 1 process: every log row's loss and grad_norm within
#                               1e-5 (relative) -- float summation order only; in practice equal
#                               to the 6 printed digits
#   train_bn_per_rank           per-rank batch statistics: losses and norms within 5% (not
#                               equal: each rank normalises its own 2 tiles)
#   resume_across_n             4 steps on 2 ranks + 4 resumed on 1 == 8 on 1, and 1 + 2 too
#   predict_sharded             2 ranks' outputs == 1 process's, byte for byte
#   mismatched_args             ranks with different --seed: refused at the start, one message
#   unreadable_file             a rank whose image is damaged: one message naming the rank and
#                               the host, exit non-zero within seconds, nothing written
#   killed_rank                 kill -9 of one rank mid-run: the job ends within seconds,
#                               non-zero, and the last resumable checkpoint loads
#   rank0_write_fails           rank 0's checkpoint write fails (ulimit -f on it alone): its
#                               message, then MPI_Abort ends the job
#   sigterm_to_one_rank_stops_all  SIGTERM to rank 1 alone: every rank stops after the same
#                               step, rank 0 writes the resumable checkpoint and says so
# tests/run.sh runs it like a test program: "N passed, N failed" last.
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
ONE=$(realpath "${UNET_BIN:-build/unet}")
MPI=$(realpath "${UNET_MPI_BIN:-build/unet-mpi}")
T=$(mktemp -d /tmp/unet_mpi_test.XXXXXX)
trap 'rm -rf "$T"' EXIT
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
RUN="timeout 60 mpirun --oversubscribe --allow-run-as-root"
D=$ROOT/data/sample/train
COMMON="--images $D/images --masks $D/masks --base 4 --depth 2 --tile 64 --batch 4 --loss ce
        --val-split 0 --seed 3 --quiet"
passed=0
failed=0
ok() { echo "ok   $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1: $2"; failed=$((failed + 1)); }

# col FILE NAME: the column NAME of a log CSV (by its header), one value a line.
col() {
    awk -F, -v name="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == name) c = i; next }
                          c { print $c }' "$1"
}

# close A.csv B.csv REL: every row's loss and grad_norm within REL (relative, + 2e-6).
close() {
    for column in loss grad_norm; do
        col "$1" $column >"$T/a" && col "$2" $column >"$T/b" || return 1
        [ -s "$T/a" ] && [ "$(wc -l <"$T/a")" = "$(wc -l <"$T/b")" ] || return 1
        paste "$T/a" "$T/b" | awk -v rel="$3" -v col=$column '{ d = $1 - $2; if (d < 0) d = -d; m = $1 < 0 ? -$1 : $1
            if (d > rel * m + 2e-6) { print "  row " NR " " col ": " $1 " vs " $2; bad = 1 } }
            END { exit bad }' || return 1
    done
}

# parity NAME REL OPTIONS: 6 steps on 1 process and on 2 ranks.
parity() {
    name=$1 rel=$2
    shift 2
    $ONE train $COMMON --steps 6 --out "$T/$name.1.safetensors" "$@" 2>"$T/err" &&
        $RUN -np 2 $MPI train $COMMON --steps 6 --out "$T/$name.2.safetensors" "$@" 2>"$T/err" ||
        { fail "$name" "a run failed: $(tail -3 "$T/err")"; return; }
    if close "$T/$name.1.log.csv" "$T/$name.2.log.csv" "$rel"; then ok "$name"
    else fail "$name" "the log rows differ beyond $rel"; fi
}

parity train_nobn 1e-5 --no-batchnorm
parity train_syncbn 1e-5 --sync-bn
parity train_bn_per_rank 5e-2
# Per-rank statistics do differ from one process's (else the --sync-bn test proves nothing).
if close "$T/train_bn_per_rank.1.log.csv" "$T/train_bn_per_rank.2.log.csv" 1e-5 >/dev/null; then
    fail train_bn_per_rank_differs "per-rank batch-norm equals one process: the tests cannot tell"
else ok train_bn_per_rank_differs; fi

# Resume across N: 4 steps on N ranks, then 4 more on M, against 8 steps on one process.
$ONE train $COMMON --no-batchnorm --steps 8 --out "$T/r.safetensors" 2>"$T/err" ||
    fail resume_across_n "the reference run failed"
for nm in "2 1" "1 2"; do
    set -- $nm
    run_n() { if [ "$1" = 1 ]; then shift; $ONE "$@"; else shift; $RUN -np 2 $MPI "$@"; fi; }
    out="$T/r$1$2.safetensors"
    if run_n "$1" train $COMMON --no-batchnorm --steps 4 --out "$out" 2>"$T/err" &&
        run_n "$2" train $COMMON --no-batchnorm --steps 8 --out "$out" \
            --resume "$T/r$1$2.resume.safetensors" 2>"$T/err" &&
        close "$T/r.log.csv" "$T/r$1$2.log.csv" 1e-5; then
        ok "resume_across_n ($1 then $2 ranks)"
    else fail "resume_across_n ($1 then $2 ranks)" "$(tail -2 "$T/err")"; fi
done

# Sharded predict: 8 images over 2 ranks, masks and probabilities byte for byte.
if $ONE predict --model "$T/train_syncbn.1.safetensors" --input "$D/images" --output "$T/p1" \
        --probabilities --quiet 2>"$T/err" &&
    $RUN -np 2 $MPI predict --model "$T/train_syncbn.1.safetensors" --input "$D/images" \
        --output "$T/p2" --probabilities --quiet 2>"$T/err" &&
    [ "$(ls "$T/p1" | wc -l)" = 16 ] && diff -r "$T/p1" "$T/p2" >/dev/null; then
    ok predict_sharded
else fail predict_sharded "$(tail -2 "$T/err")"; fi

# Ranks that do not run the same thing are refused before any work, rank 0 saying so once.
$RUN -np 1 $MPI train $COMMON --steps 2 --out "$T/mm.safetensors" : \
    -np 1 $MPI train $COMMON --steps 2 --out "$T/mm.safetensors" --seed 4 >"$T/out" 2>&1
rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ "$(grep -c 'unet: error' "$T/out")" = 1 ] &&
    grep -q "rank 1 on .* differs from rank 0" "$T/out" && [ ! -e "$T/mm.safetensors" ]; then
    ok mismatched_args
else fail mismatched_args "exit $rc: $(grep unet: "$T/out" | head -3)"; fi

# A rank that cannot read its copy of an image (same arguments, another working directory).
for w in a b; do
    mkdir -p "$T/w$w/images" "$T/w$w/masks"
    cp "$D"/images/*.png "$T/w$w/images/" && cp "$D"/masks/*.png "$T/w$w/masks/"
done
head -c 300 "$D/images/06.png" >"$T/wb/images/06.png"
start=$(date +%s)
$RUN -np 1 --wdir "$T/wa" $MPI train $COMMON --images images --masks masks --steps 2 \
    --out "$T/uf.safetensors" : -np 1 --wdir "$T/wb" $MPI train $COMMON --images images \
    --masks masks --steps 2 --out "$T/uf.safetensors" >"$T/out" 2>&1
rc=$?
took=$(($(date +%s) - start))
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $took -le 20 ] &&
    [ "$(grep -c 'unet: error' "$T/out")" = 1 ] &&
    grep -q "unet: error: rank 1 on .*06.png" "$T/out" && [ ! -e "$T/uf.safetensors" ]; then
    ok "unreadable_file ($took s)"
else fail unreadable_file "exit $rc after $took s: $(grep unet: "$T/out" | head -3)"; fi

# A rank killed mid-run: the job ends, non-zero, within seconds; the checkpoint loads.
$RUN -np 2 $MPI train $COMMON --steps 100000 --save-every 2 --out "$T/k.safetensors" \
    >"$T/out" 2>&1 &
job=$!
i=0
while [ ! -e "$T/k.resume.safetensors" ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
sleep 0.5
# children PID: the processes whose parent is PID (from /proc: no procps needed).
children() { cat /proc/[0-9]*/stat 2>/dev/null | awk -v p="$1" '$4 == p { print $1 }'; }
victim=$(children "$(children $job | head -1)" | tail -1)
start=$(date +%s)
[ -n "$victim" ] && kill -9 "$victim"
wait $job
rc=$?
took=$(($(date +%s) - start))
if [ -n "$victim" ] && [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $took -le 20 ] &&
    $ONE info "$T/k.resume.safetensors" >/dev/null 2>&1; then
    ok "killed_rank ($took s)"
else fail killed_rank "victim '$victim', exit $rc after $took s: $(grep -v '^$' "$T/out" | head -3)"; fi

# Rank 0 alone fails during the run (its checkpoint write hits a file-size limit that only it
# has): its message, then MPI_Abort ends every rank at once (Open MPI's banner about it may or
# may not make it to the output, so it is not checked).
start=$(date +%s)
$RUN -np 1 sh -c "ulimit -f 100; exec $MPI train $(echo $COMMON) --steps 100000 --save-every 4 \
    --out $T/w.safetensors" : -np 1 $MPI train $COMMON --steps 100000 --save-every 4 \
    --out "$T/w.safetensors" >"$T/out" 2>&1
rc=$?
took=$(($(date +%s) - start))
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $took -le 30 ] &&
    grep -q "unet: error: rank 0 on .*w.resume.safetensors: write failed" "$T/out"; then
    ok "rank0_write_fails ($took s)"
else fail rank0_write_fails "exit $rc after $took s: $(grep unet: "$T/out" | tail -2)"; fi

# SIGTERM to one rank (rank 1, which prints nothing): every rank stops after the same step,
# rank 0 writes the resumable checkpoint and says where to continue, all exit 143.  (A SIGTERM
# to mpirun instead makes Open MPI abort the job, killing the ranks a second later:
# docs/scaling.md.)
$RUN -np 2 $MPI train $COMMON --steps 100000 --out "$T/s.safetensors" >"$T/out" 2>&1 &
job=$!
i=0
while [ ! -s "$T/s.log.csv" ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
sleep 1
victim=
for p in $(children "$(children $job | head -1)"); do
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx OMPI_COMM_WORLD_RANK=1 && victim=$p
done
[ -n "$victim" ] && kill -TERM "$victim"
wait $job
rc=$?
if [ -n "$victim" ] && [ $rc -ne 0 ] && [ $rc -ne 124 ] &&
    grep -q "unet: interrupted at step" "$T/out" &&
    $ONE info "$T/s.resume.safetensors" >/dev/null 2>&1; then
    ok sigterm_to_one_rank_stops_all
else fail sigterm_to_one_rank_stops_all "exit $rc: $(grep unet: "$T/out" | tail -2)"; fi

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
