#!/bin/sh
# Runs each test program given on the command line, adds up their "N passed, N failed" lines
# and prints the total as the last line.  A program that crashes or prints no summary counts as
# one failed test.  Exit status: 0 only when nothing failed.
# Tests run many tiny parallel regions: on a loaded machine spinning OpenMP threads steal the
# cores they wait for, so wait passively unless told otherwise.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
passed=0
failed=0
for t in "$@"; do
    echo "== $t"
    out=$("$t" 2>&1)
    rc=$?
    printf '%s\n' "$out"
    line=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -n 1)
    if [ -z "$line" ]; then
        echo "FAIL $t: exit status $rc and no summary line (crash?)"
        failed=$((failed + 1))
        continue
    fi
    p=$(echo "$line" | cut -d' ' -f1)
    f=$(echo "$line" | cut -d' ' -f3)
    passed=$((passed + p))
    failed=$((failed + f))
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "FAIL $t: exit status $rc"
        failed=$((failed + 1))
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
