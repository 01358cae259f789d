#!/usr/bin/env bash
# scripts/stacks-screenshots.sh: the two flame graphs in the README, made again.
#   1. `snapshot serve` under a SET load while BGSAVE forks (the store's copies);
#   2. a forked Python worker that only reads a big object graph.
# Each SVG is drawn by `snapshot trace --stacks --flamegraph` and screenshotted
# with headless chromium into docs/. Needs root, redis-tools, python3, chromium.
# Environment: SNAP (default target/release/snapshot), PORT (7301).
set -euo pipefail
[[ $(id -u) -eq 0 ]] || { echo "stacks-screenshots.sh: needs root (eBPF)" >&2; exit 1; }
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SNAP=${SNAP:-$HERE/target/release/snapshot}
PORT=${PORT:-7301}
TMP=$(mktemp -d)
server=""
cleanup() { [[ -n $server ]] && kill "$server" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT

shot() { # shot SVG PNG
    chromium --headless --no-sandbox --disable-gpu --no-first-run --hide-scrollbars \
        --user-data-dir="$TMP/profile" --window-size=1200,700 --screenshot="$2" "file://$1" 2>/dev/null
}

# 1. The store: 400k keys, a SET load, a BGSAVE while it runs.
"$SNAP" serve --port "$PORT" --dir "$TMP" --save "" >"$TMP/serve.log" 2>&1 &
server=$!
until redis-cli -p "$PORT" ping >/dev/null 2>&1; do sleep 0.1; done
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
shot "$TMP/store.svg" "$HERE/docs/flame-store-bgsave.png"

# 2. A forked Python worker that only reads.
"$SNAP" trace --stacks --flamegraph "$TMP/python.svg" -o "$TMP/python.txt" -- python3 -c '
import os
graph = [{"k": i, "v": [i, str(i)]} for i in range(300000)]
pid = os.fork()
if pid == 0:
    sum(d["k"] + len(d["v"][1]) for d in graph)
    os._exit(0)
os.waitpid(pid, 0)'
shot "$TMP/python.svg" "$HERE/docs/flame-python-worker.png"
ls -l "$HERE"/docs/flame-*.png
