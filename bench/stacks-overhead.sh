#!/usr/bin/env bash
# bench/stacks-overhead.sh: what `--stacks` adds per copy. bench/forkrewrite.c
# (fork, the parent rewrites PAGES pages = PAGES copies, timed inside) under
# `snapshot trace -- ...` and `snapshot trace --stacks -- ...`, interleaved
# (the order alternates every round), ROUNDS rounds; prints each run's rewrite
# time per copy and the medians. Each run starts its own tracer, whose startup
# is outside the timed rewrite. Needs root.
# Environment: SNAP (default target/release/snapshot of this checkout, copied
# to the temp dir), ROUNDS (5), PAGES (131072 = 512 MiB).
set -euo pipefail
[[ $(id -u) -eq 0 ]] || { echo "stacks-overhead.sh: needs root (eBPF)" >&2; exit 1; }
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROUNDS=${ROUNDS:-5}
PAGES=${PAGES:-131072}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
cp "${SNAP:-$HERE/../target/release/snapshot}" "$TMP/snapshot"
cc -O2 -o "$TMP/cowbench" "$HERE/forkrewrite.c"
echo "snapshot $(sha256sum "$TMP/snapshot" | cut -c1-12), $PAGES pages, $ROUNDS rounds"

run() { # run CONDITION: prints the rewrite's microseconds per copy
    local flags=()
    [[ $1 == stacks ]] && flags=(--stacks --folded "$TMP/folded")
    "$TMP/snapshot" trace "${flags[@]}" -o /dev/null -- "$TMP/cowbench" "$PAGES" |
        awk -v n="$PAGES" '{ printf "%.4f\n", $2 / n }'
}

declare -A all=([plain]="" [stacks]="")
for ((r = 0; r < ROUNDS; r++)); do
    order=(plain stacks)
    ((r % 2)) && order=(stacks plain)
    for c in "${order[@]}"; do
        v=$(run "$c")
        all[$c]+="$v "
        echo "round $r $c ${v} us/copy"
    done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
p=$(echo "${all[plain]}" | median)
s=$(echo "${all[stacks]}" | median)
echo "median us/copy: plain $p, --stacks $s, ratio $(awk -v p="$p" -v s="$s" 'BEGIN { printf "%.2f", s / p }')"
