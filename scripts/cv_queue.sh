#!/bin/sh
# Runs the lines of a queue file one after another, so only one training uses the machine at a
# time:   nohup scripts/cv_queue.sh runs/cv/queue.txt > runs/cv/queue.log 2>&1 &
# Each line is a shell command, typically
#   RECIPES=seed+cos DATASETS=isbi2012 FOLDS=1 MINUTES=15 scripts/results.sh /work/shared/data
# Lines may be appended while it runs (the file is read again after every job); '#' lines are
# skipped.  A finished line is recorded in QUEUE.done (with its exit status) and not run again;
# after an interruption the queue starts again at the first unfinished line, and results.sh
# itself skips finished folds and resumes an interrupted training.  Touch QUEUE.stop to stop
# after the current job; with nothing left the queue waits for new lines (POLL seconds, 60).
set -u
Q=${1:?usage: scripts/cv_queue.sh QUEUE_FILE}
POLL=${POLL:-60}
touch "$Q.done"
while [ ! -e "$Q.stop" ]; do
    next=$(awk -v done="$Q.done" 'BEGIN { while ((getline l < done) > 0) { sub(/^[0-9]+\t/, "", l); d[l] = 1 } }
        /^[ \t]*(#|$)/ { next } !($0 in d) { print; exit }' "$Q")
    if [ -z "$next" ]; then
        sleep "$POLL"
        continue
    fi
    echo "== $(date '+%F %T') start: $next"
    sh -c "$next"
    rc=$?
    printf '%s\t%s\n' "$rc" "$next" >> "$Q.done"
    echo "== $(date '+%F %T') end (exit $rc): $next"
done
echo "== $(date '+%F %T') stopped ($Q.stop)"
