#!/usr/bin/env bash
# scripts/stacks-screenshots.sh [store] [python]: the two flame graphs in the
# README, made again (both when no argument names one):
#   store:  `snapshot serve` under a SET load while BGSAVE forks (the store's
#           copies) -> docs/flame-store-bgsave.png;
#   python: a forked Python worker that only reads a big object graph
#           (scripts/fork-worker.py) -> docs/flame-python-fork.png.
# Each SVG is drawn by `snapshot trace --stacks --flamegraph` and screenshotted
# with headless chromium into docs/. Needs root, redis-tools, python3, chromium.
# Environment: SNAP (default target/release/snapshot), PORT (7301).
set -euo pipefail
[[ $(id -u) -eq 0 ]] || { echo "stacks-screenshots.sh: needs root (eBPF)" >&2; exit 1; }
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SNAP=${SNAP:-$HERE/target/release/snapshot}
PORT=${PORT:-7301}
TMP=$(mktemp -d)
server="" tracer=""
# A step that fails leaves no tracer attached and no server behind.
cleanup() {
    [[ -n $tracer ]] && kill -INT "$tracer" 2>/dev/null && wait "$tracer"
    [[ -n $server ]] && kill "$server" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT

shot() { # shot SVG PNG: the whole graph (its height grows with the deepest stack), at most 1400 px
    local height
    height=$(grep -o 'height="[0-9]*"' "$1" | head -1 | tr -dc 0-9)
    height=$(( ${height:-700} > 1400 ? 1400 : ${height:-700} ))
    chromium --headless --no-sandbox --disable-gpu --no-first-run --hide-scrollbars \
        --user-data-dir="$TMP/profile" --window-size="1200,$height" --screenshot="$2" "file://$1" 2>/dev/null
}

graph_store() { # 400k keys, a SET load, a BGSAVE while it runs
    "$SNAP" serve --port "$PORT" --dir "$TMP" --save "" >"$TMP/serve.log" 2>&1 &
    server=$!
    for _ in $(seq 100); do
        redis-cli -p "$PORT" ping >/dev/null 2>&1 && break
        kill -0 "$server" 2>/dev/null || { echo "stacks-screenshots.sh: serve failed:" >&2; cat "$TMP/serve.log" >&2; exit 1; }
        sleep 0.1
    done
    redis-cli -p "$PORT" ping >/dev/null || { echo "stacks-screenshots.sh: no answer on port $PORT" >&2; exit 1; }
    redis-cli -p "$PORT" debug populate 400000 key 256 >/dev/null
    "$SNAP" trace --pid "$server" --stacks --flamegraph "$TMP/store.svg" -o "$TMP/store.txt" &
    tracer=$!
    sleep 1
    redis-benchmark -p "$PORT" -t set -r 400000 -n 400000 -P 16 -q >/dev/null &
    load=$!
    sleep 0.3
    redis-cli -p "$PORT" bgsave >/dev/null
    wait "$load"
    sleep 1
    kill -INT "$tracer"
    wait "$tracer" || true
    tracer=""
    shot "$TMP/store.svg" "$HERE/docs/flame-store-bgsave.png"
}

graph_python() { # a forked Python worker that only reads; prints its copies by mapping
    # The interpreter itself, not a wrapper script in front of it (pyenv's shim is bash).
    PYTHON=$(python3 -c 'import sys; print(sys.executable)')
    "$SNAP" trace --stacks --flamegraph "$TMP/python.svg" --by-mapping -o "$TMP/python.txt" \
        --json "$TMP/python.json" -- "$PYTHON" "$HERE/scripts/fork-worker.py"
    sed -n '/copies by mapping:/,$p' "$TMP/python.txt"
    # The figure the README quotes: the forked child's copies.
    python3 - "$TMP/python.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
fork = report["forks"][0]
child = next(p for p in report["processes"] if p["pid"] == fork["child"])
print(f"fork-worker.py's child copied {child['cow_copies']} pages, {child['cow_bytes'] / 2**20:.1f} MiB")
PY
    shot "$TMP/python.svg" "$HERE/docs/flame-python-fork.png"
}

[[ $# -gt 0 ]] || set -- store python
for what in "$@"; do
    case $what in
    store | python) "graph_$what" ;;
    *) echo "stacks-screenshots.sh: no graph named '$what' (store, python)" >&2; exit 2 ;;
    esac
done
ls -l "$HERE"/docs/flame-*.png
