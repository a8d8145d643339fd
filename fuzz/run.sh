#!/bin/sh
# Runs each libFuzzer target for a bounded time and prints one line per target: executions,
# coverage (edges), features, corpus size and crashes.  Usage (make fuzz does this):
#     fuzz/run.sh BUILD_DIR SECONDS TARGET...
# Each target starts from its committed seeds (fuzz/corpus/<target>, read only) plus what
# earlier runs found (BUILD_DIR/corpus/<target>, where new inputs go).  A crash, leak, timeout
# (10 s per input) or out-of-memory (2 GB) writes BUILD_DIR/crash-<target>-* and makes the run
# fail; turn each into a regression file in tests/data/corrupt/ (docs/robustness.md).
# An input may use at most FUZZ_RSS_MB (512) of memory: past it libFuzzer reports out-of-memory
# (a crash); the peak of each run is printed ("peak MB", libFuzzer's stat::peak_rss_mb).
set -u
dir=$1
seconds=$2
shift 2
rss_mb=${FUZZ_RSS_MB:-512}
# ASan keeps freed blocks in a quarantine (256 MB by default) to catch use-after-free; that
# would count against the limit above without being any input's memory: 64 MB is plenty for
# inputs of a few KB.
export ASAN_OPTIONS="${ASAN_OPTIONS:-quarantine_size_mb=64}"
failed=0
summary=""
for t in "$@"; do
    bin="$dir/fuzz_$t"
    corpus="$dir/corpus/$t"
    mkdir -p "$corpus"
    log="$dir/fuzz_$t.log"
    echo "== fuzz_$t for ${seconds}s"
    "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb="$rss_mb" -malloc_limit_mb="$rss_mb" \
        -print_final_stats=1 \
        -artifact_prefix="$dir/crash-$t-" "$corpus" "fuzz/corpus/$t" >"$log" 2>&1
    rc=$?
    # The last status line: "#N DONE cov: C ft: F corp: K/..." (or the last pulse before a crash).
    last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
    execs=$(grep -E '^stat::number_of_executed_units' "$log" | tail -n 1 | awk '{print $2}')
    [ -n "$execs" ] || execs=$(echo "$last" | sed -E 's/^#([0-9]+).*/\1/')
    cov=$(echo "$last" | sed -nE 's/.*cov: ([0-9]+).*/\1/p')
    ft=$(echo "$last" | sed -nE 's/.*ft: ([0-9]+).*/\1/p')
    corp=$(echo "$last" | sed -nE 's/.*corp: ([0-9]+).*/\1/p')
    # Edges instrumented in the target (unet's own code; libpng, libtiff, zlib and cJSON are
    # Debian's uninstrumented builds and do not count).
    total=$(sed -nE 's/.*Loaded 1 modules +\(([0-9]+) inline 8-bit counters.*/\1/p' "$log" | head -n 1)
    peak=$(grep -E '^stat::peak_rss_mb' "$log" | tail -n 1 | awk '{print $2}')
    crashes=$(ls "$dir"/crash-"$t"-* 2>/dev/null | wc -l)
    line=$(printf '%-12s %10s execs  cov %5s of %5s edges  ft %6s  corpus %4s  peak %4s MB  crashes %s' \
        "$t" "${execs:-?}" "${cov:-?}" "${total:-?}" "${ft:-?}" "${corp:-?}" "${peak:-?}" "$crashes")
    echo "$line"
    summary="$summary$line
"
    if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ]; then
        failed=$((failed + 1))
        grep -E 'ERROR|SUMMARY|contract broken|Test unit written' "$log" | head -n 5
    fi
done
echo "== fuzz summary (${seconds}s per target)"
printf '%s' "$summary"
[ "$failed" -eq 0 ] && echo "no crashes" || echo "$failed target(s) crashed: see $dir/crash-*"
[ "$failed" -eq 0 ]
