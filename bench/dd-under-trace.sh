#!/usr/bin/env bash
# bench/dd-under-trace.sh OLD NEW: the machine-wide cost of tracing one pid.
# A syscall-heavy program nobody traces (`dd if=/dev/zero of=/dev/null bs=1
# count=5M`, 10 M syscalls) is timed with no tracer, and while OLD or NEW runs
# `snapshot trace --pid` on an idle `sleep`; ROUNDS rounds, interleaved.
# Prints each time and the medians. Needs root.
set -euo pipefail
OLD=$1 NEW=$2 ROUNDS=${ROUNDS:-5}
TMP=$(mktemp -d /tmp/dd-under-trace.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
sleep 1000 & idle=$!
trap 'kill $idle; rm -rf "$TMP"' EXIT
run_dd() { /usr/bin/time -f %e -o "$TMP/t" dd if=/dev/zero of=/dev/null bs=1 count=5M 2>/dev/null; cat "$TMP/t"; }
for round in $(seq "$ROUNDS"); do
  for which in none old new; do
    if [[ $which == none ]]; then
      t=$(run_dd)
    else
      bin=$OLD; [[ $which == new ]] && bin=$NEW
      "$bin" trace --pid "$idle" 2> "$TMP/err" > /dev/null &
      tracer=$!
      until grep -q "snapshot: tracing" "$TMP/err"; do sleep 0.05; done
      t=$(run_dd)
      kill -INT "$tracer"; wait "$tracer" || true
    fi
    echo "$which $t" | tee -a "$TMP/all"
  done
done
for which in none old new; do
  echo "median $which $(awk -v w=$which '$1==w {print $2}' "$TMP/all" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') s"
done
