#!/usr/bin/env bash
# bench/redis-cow.sh: `snapshot trace --pid <redis-server>` during a BGSAVE under a
# redis-benchmark write load, compared with Redis's own report of the same save
# (INFO persistence rdb_last_cow_size: the child's Private_Dirty at the end of the save).
#
# For each write load and each of REPEATS repetitions. Loads:
#   none       no writes
#   paced-1k   bench/paced-set.py: 1000 SET/s (redis-benchmark cannot limit its rate)
#   paced-10k  bench/paced-set.py: 10000 SET/s
#   moderate   redis-benchmark -c 5
#   full       redis-benchmark -c 50
# (all SETs: random keys key:%012d from -r KEYS, VALUE_SIZE-byte values, as redis-benchmark makes them)
#   FLUSHALL; DEBUG POPULATE KEYS key VALUE_SIZE     (the same dataset every time)
#   snapshot trace --pid REDIS --json ...            (background, waits until attached)
#   redis-benchmark -t set -r KEYS -d VALUE_SIZE -n N -c C -q   (background, bounded by -n),
#   or paced-set.py PORT KEYS VALUE_SIZE RATE N                   (background, bounded by N)
#   BGSAVE; poll INFO persistence until rdb_bgsave_in_progress:0
#   record rdb_last_cow_size, rdb_last_bgsave_time_sec, latest_fork_usec, SET/s during the save
#   stop redis-benchmark (SIGTERM, by pid: a background job of a script ignores SIGINT) and the tracer (SIGINT); read the tracer's JSON:
#   the fork whose parent is redis (parent_bytes, child_bytes) and redis's cow_bytes.
#
# redis-server listens on 127.0.0.1 only, with --save '' (no automatic saves), in a
# temporary --dir; it, the benchmark and the tracer are stopped by pid on exit, also
# on error or Ctrl-C. Needs root (eBPF).
#
# Environment: SNAP (default target/release/snapshot of this checkout, built by
# `cargo xtask build`; copied to the temp dir for the run),
# PORT (first free port from 6401), KEYS (1000000), VALUE_SIZE (512), REPEATS (3),
# LOADS ("none moderate full"), BENCH_N (2000000 SETs at most per save).
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    echo "redis-cow.sh: needs root (eBPF)" >&2
    exit 1
fi
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SNAP=${SNAP:-$HERE/../target/release/snapshot}
KEYS=${KEYS:-1000000}
VALUE_SIZE=${VALUE_SIZE:-512}
REPEATS=${REPEATS:-3}
BENCH_N=${BENCH_N:-2000000}
read -r -a LOADS <<<"${LOADS:-none paced-1k paced-10k moderate full}"
for tool in redis-server redis-cli redis-benchmark python3; do
    command -v "$tool" >/dev/null || { echo "redis-cow.sh: $tool not found" >&2; exit 1; }
done
[[ -x $SNAP ]] || { echo "redis-cow.sh: no snapshot binary (build: cargo xtask build)" >&2; exit 1; }

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
PORT=${PORT:-}
if [[ -z $PORT ]]; then
    for ((p = 6401; p < 6500; p++)); do
        if port_free "$p"; then PORT=$p; break; fi
    done
fi
[[ -n $PORT ]] || { echo "redis-cow.sh: no free port in 6401..6499" >&2; exit 1; }

TMP=$(mktemp -d /tmp/redis-cow.XXXXXX)
SNAP_SRC=$(realpath "$SNAP")
SNAP_SHA=$(sha256sum "$SNAP_SRC" | cut -d' ' -f1)
cp "$SNAP_SRC" "$TMP/snapshot"
SNAP=$TMP/snapshot
REDIS_PID=
TRACER_PID=
BENCH_PID=

stop_pid() { # stop_pid PID SIGNAL: signal it, wait for it (it is our child)
    local pid=$1 sig=$2
    [[ -n $pid ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill "-$sig" "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
}
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$BENCH_PID" TERM
    stop_pid "$TRACER_PID" INT
    stop_pid "$REDIS_PID" TERM
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cli() { redis-cli -h 127.0.0.1 -p "$PORT" "$@"; }
info_field() { # info_field SECTION FIELD
    cli INFO "$1" | tr -d '\r' | awk -F: -v f="$2" '$1 == f { print $2 }'
}
set_calls() { # SET commands so far
    cli INFO commandstats | tr -d '\r' | awk -F'[:=,]' '$1 == "cmdstat_set" { print $3; f = 1 } END { if (!f) print 0 }'
}

redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP" \
    --daemonize no --enable-debug-command yes --logfile "$TMP/redis.log" &
REDIS_PID=$!
for ((i = 0; i < 100; i++)); do
    [[ $(cli PING 2>/dev/null) == PONG ]] && break
    kill -0 "$REDIS_PID" 2>/dev/null || { echo "redis-server exited:" >&2; cat "$TMP/redis.log" >&2; exit 1; }
    sleep 0.1
done
[[ $(cli PING 2>/dev/null) == PONG ]] || { echo "redis-server did not answer" >&2; exit 1; }

echo "# redis-cow: $(date -u +%FT%TZ)  nproc=$(nproc)  kernel=$(uname -r)  snapshot=$SNAP_SRC (sha256 $SNAP_SHA)"
echo "# $(redis-server --version)"
echo "# port $PORT, pid $REDIS_PID, dataset: DEBUG POPULATE $KEYS key $VALUE_SIZE, repeats $REPEATS"
echo "# THP: $(cat /sys/kernel/mm/transparent_hugepage/enabled); redis disable-thp: $(cli CONFIG GET disable-thp | tail -1)"
echo

CSV=$TMP/saves.csv
echo "load,rep,clients,used_memory_mb,sets_per_s,fork_usec,save_s,rdb_cow_bytes,parent_copies,parent_bytes,child_copies,child_bytes,fork_bytes,redis_cow_bytes,redis_wp_reuse,child_cow_bytes,fork_end,unattributed,vma_misses" >"$CSV"

for load in "${LOADS[@]}"; do
    case $load in
    none) clients=0 ;;
    paced-1k) clients=1 rate=1000 ;;
    paced-10k) clients=1 rate=10000 ;;
    moderate) clients=5 ;;
    full) clients=50 ;;
    *) echo "unknown load $load" >&2; exit 1 ;;
    esac
    for ((rep = 1; rep <= REPEATS; rep++)); do
        cli FLUSHALL >/dev/null
        cli DEBUG POPULATE "$KEYS" key "$VALUE_SIZE" >/dev/null
        used_mb=$(( $(info_field memory used_memory) / 1048576 ))

        rm -f "$TMP/trace.json" "$TMP/tracer.err"
        "$SNAP" trace --pid "$REDIS_PID" --json "$TMP/trace.json" >"$TMP/tracer.out" 2>"$TMP/tracer.err" &
        TRACER_PID=$!
        for ((i = 0; i < 600; i++)); do
            grep -q 'snapshot: tracing' "$TMP/tracer.err" 2>/dev/null && break
            kill -0 "$TRACER_PID" 2>/dev/null || { echo "tracer died:" >&2; cat "$TMP/tracer.err" >&2; exit 1; }
            sleep 0.1
        done
        grep -q 'snapshot: tracing' "$TMP/tracer.err" || { echo "tracer did not attach" >&2; exit 1; }

        if [[ $load == paced-* ]]; then
            python3 "$HERE/paced-set.py" "$PORT" "$KEYS" "$VALUE_SIZE" "$rate" $((rate * 120)) >"$TMP/bench.out" 2>&1 &
            BENCH_PID=$!
            sleep 1
        elif ((clients > 0)); then
            redis-benchmark -h 127.0.0.1 -p "$PORT" -t set -r "$KEYS" -d "$VALUE_SIZE" -n "$BENCH_N" \
                -c "$clients" -q >"$TMP/bench.out" 2>&1 &
            BENCH_PID=$!
            sleep 1 # let the load reach its pace before the fork
        fi
        cmds0=$(set_calls)
        t0=$EPOCHREALTIME
        [[ $(cli BGSAVE) == "Background saving started" ]] || { echo "BGSAVE refused" >&2; exit 1; }
        while [[ $(info_field persistence rdb_bgsave_in_progress) != 0 ]]; do sleep 0.05; done
        t1=$EPOCHREALTIME
        cmds1=$(set_calls)
        status=$(info_field persistence rdb_last_bgsave_status)
        [[ $status == ok ]] || { echo "BGSAVE failed: $status" >&2; tail "$TMP/redis.log" >&2; exit 1; }
        cow=$(info_field persistence rdb_last_cow_size)
        save_s=$(info_field persistence rdb_last_bgsave_time_sec)
        fork_usec=$(info_field stats latest_fork_usec)
        if ((clients > 0)); then
            if kill -0 "$BENCH_PID" 2>/dev/null; then
                stop_pid "$BENCH_PID" TERM
            else
                wait "$BENCH_PID" || true
                echo "# note: redis-benchmark finished before the save did (raise BENCH_N)" >&2
            fi
            BENCH_PID=
        fi
        sleep 0.5 # the exit of the save child reaches the tracer
        stop_pid "$TRACER_PID" INT
        TRACER_PID=
        sets=$(python3 -c "import sys; print(round((int(sys.argv[2]) - int(sys.argv[1])) / (float(sys.argv[4]) - float(sys.argv[3]))))" \
            "$cmds0" "$cmds1" "$t0" "$t1")
        python3 - "$TMP/trace.json" "$REDIS_PID" >"$TMP/row" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
redis = int(sys.argv[2])
forks = [f for f in r["forks"] if f["parent"] == redis]
if len(forks) != 1:
    sys.exit(f"expected one fork of redis in the trace, found {len(forks)}")
f = forks[0]
procs = {p["pid"]: p for p in r["processes"]}
rp, cp = procs[redis], procs.get(f["child"], {})
print(",".join(str(x) for x in [
    f["parent_copies"], f["parent_bytes"], f["child_copies"], f["child_bytes"],
    f["parent_bytes"] + f["child_bytes"], rp["cow_bytes"], rp["wp_reuse"], cp.get("cow_bytes", "-"),
    f["end_reason"], r["health"]["unattributed_copies"],
    rp["vma_misses"] + cp.get("vma_misses", 0)]))
EOF
        echo "$load,$rep,$clients,$used_mb,$sets,$fork_usec,$save_s,$cow,$(cat "$TMP/row")" >>"$CSV"
        echo "# $load $rep: done $(date -u +%T)" >&2
    done
done

echo "## raw saves (CSV; bytes unless named otherwise)"
cat "$CSV"
echo
python3 - "$CSV" <<'EOF'
import csv, statistics as st, sys
rows = list(csv.DictReader(open(sys.argv[1])))
mb = lambda b: f"{int(b) / 1e6:.1f}"
print("## per save (MB = 10^6 bytes)")
print("| load | rep | SET/s during save | fork ms | save s | Redis rdb_last_cow_size MB | tracer parent_bytes MB | tracer child_bytes MB | parent+child MB | (parent+child) / Redis | redis process cow_bytes MB |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    cow, fb = int(r["rdb_cow_bytes"]), int(r["fork_bytes"])
    ratio = f"{fb / cow:.2f}" if cow else "-"
    print(f"| {r['load']} | {r['rep']} | {r['sets_per_s']} | {int(r['fork_usec']) / 1000:.1f} | {r['save_s']} | {mb(cow)} | {mb(r['parent_bytes'])} | {mb(r['child_bytes'])} | {mb(fb)} | {ratio} | {mb(r['redis_cow_bytes'])} |")
print()
print("## medians per load")
print("| load | saves | SET/s | Redis rdb_last_cow_size MB | tracer parent+child MB | tracer parent MB | tracer child MB | median (parent+child) / Redis |")
print("|---|---|---|---|---|---|---|---|")
for load in dict.fromkeys(r["load"] for r in rows):
    rs = [r for r in rows if r["load"] == load]
    m = lambda k: st.median(int(r[k]) for r in rs)
    ratios = [int(r["fork_bytes"]) / int(r["rdb_cow_bytes"]) for r in rs if int(r["rdb_cow_bytes"])]
    rt = f"{st.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})" if ratios else "-"
    print(f"| {load} | {len(rs)} | {m('sets_per_s'):.0f} | {mb(m('rdb_cow_bytes'))} | {mb(m('fork_bytes'))} | {mb(m('parent_bytes'))} | {mb(m('child_bytes'))} | {rt} |")
EOF
echo
echo "## redis log: Redis's own COW lines"
grep -E 'CoW|copy-on-write' "$TMP/redis.log" || true
