#!/usr/bin/env bash
# bench/rewrite-cost.sh OLD NEW: what tracing adds to each COW copy, per
# snapshot binary. bench/forkrewrite.c (named cowbench) maps PAGES private
# pages, populates them, forks, and times the parent's rewrite of every page
# (PAGES COW copies) from inside. Conditions none, OLD and NEW (`trace --comm
# cowbench`, or `--all` with MODE=all), ROUNDS rounds, the starting condition
# rotating each round. Prints every run and, per condition, the median rewrite
# time and the added µs per copy against none (median, min–max of the paired
# per-round differences). kernel.bpf_stats_enabled is left as it is (off).
# Needs root and gcc.
set -euo pipefail
OLD=$1 NEW=$2
ROUNDS=${ROUNDS:-5} PAGES=${PAGES:-131072} MODE=${MODE:-comm}
HERE=$(cd "$(dirname "$0")" && pwd)
TMP=$(mktemp -d /tmp/rewrite-cost.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
cp "$OLD" "$TMP/old"; cp "$NEW" "$TMP/new"
gcc -O2 -Wall -o "$TMP/cowbench" "$HERE/forkrewrite.c"
select=(--comm cowbench); [[ $MODE == all ]] && select=(--all)
conds=(none old new)
for round in $(seq "$ROUNDS"); do
  for i in 0 1 2; do
    which=${conds[$(( (i + round) % 3 ))]}
    tracer=
    if [[ $which != none ]]; then
      "$TMP/$which" trace "${select[@]}" 2> "$TMP/err" > /dev/null &
      tracer=$!
      until grep -q "snapshot: tracing" "$TMP/err"; do sleep 0.05; done
    fi
    read -r _ rewrite _ < <("$TMP/cowbench" "$PAGES")
    if [[ -n $tracer ]]; then kill -INT "$tracer"; wait "$tracer" || true; fi
    echo "$round $which $rewrite" | tee -a "$TMP/all"
  done
done
python3 - "$TMP/all" "$PAGES" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
pages = int(sys.argv[2])
by = {}
for rnd, which, us in rows:
    by.setdefault(which, {})[rnd] = float(us)
for which in ("none", "old", "new"):
    t = by[which]
    line = f"{which}: rewrite median {statistics.median(t.values()) / 1e3:.1f} ms"
    if which != "none":
        added = sorted((t[r] - by["none"][r]) * 1e3 / pages for r in t)
        ratio = sorted(t[r] / by["none"][r] for r in t)
        line += (f", added per copy {statistics.median(added):.0f} ns ({added[0]:.0f}–{added[-1]:.0f}),"
                 f" ratio {statistics.median(ratio):.3f} ({ratio[0]:.3f}–{ratio[-1]:.3f})")
    print(line)
PY
