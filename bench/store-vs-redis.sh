#!/usr/bin/env bash
# bench/store-vs-redis.sh: `snapshot serve` against redis-server on this machine,
# in one run, interleaved:
#   1. throughput: redis-benchmark -t set,get -P 16 -c 50 -n 2000000 -r 1000000 -q
#      (ROUNDS rounds; the server order alternates each round; FLUSHALL before each)
#   2. a ~1 GiB dataset (DEBUG POPULATE KEYS key VALUE_SIZE) in each server, then
#      SAVES rounds of BGSAVE with no write load (the server order rotates each
#      round): fork time (latest_fork_usec), save wall time (BGSAVE until
#      rdb_bgsave_in_progress:0, polled every 10 ms), snapshot file size, and speed.
#      Both write RDB; each saves with `rdbcompression yes` (the default, LZF) and `no`
#      (variants redis, redis-nocomp, snapshot, snapshot-nocomp, set by CONFIG SET before
#      each save), and the per-round ratio of the store's save time to Redis's is printed
#      for each. The store's last file is checked with redis-check-rdb.
# Needs redis-server and redis-tools (apt-get install redis-server redis-tools).
# Starts both servers on loopback ports, kills only those pids at the end.
# Environment: SNAP (snapshot binary, default target/release/snapshot; copied to the
# temp dir for the run), ROUNDS (3), SAVES (3), KEYS (2000000), VALUE_SIZE (512),
# REDIS_PORT (6402), STORE_PORT (6403), BASE (/tmp: where the servers' directories go; /dev/shm
# takes the disk out of the save times), THROUGHPUT (1; 0 skips part 1), PAUSE (5: seconds to wait after `sync` before each
# BGSAVE, so the previous save's 1 GiB of writeback does not slow the next one).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SNAP=${SNAP:-$HERE/../target/release/snapshot}
ROUNDS=${ROUNDS:-3}
SAVES=${SAVES:-3}
PAUSE=${PAUSE:-5}
KEYS=${KEYS:-2000000}
VALUE_SIZE=${VALUE_SIZE:-512}
REDIS_PORT=${REDIS_PORT:-6402}
STORE_PORT=${STORE_PORT:-6403}
for tool in redis-server redis-cli redis-benchmark python3; do
    command -v "$tool" >/dev/null || { echo "store-vs-redis.sh: $tool not found" >&2; exit 1; }
done
[[ -x $SNAP ]] || { echo "store-vs-redis.sh: no $SNAP (cargo xtask build)" >&2; exit 1; }
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in $REDIS_PORT $STORE_PORT; do
    port_free "$port" || { echo "store-vs-redis.sh: port $port is in use" >&2; exit 1; }
done

BASE=${BASE:-/tmp}
THROUGHPUT=${THROUGHPUT:-1}
TMP=$(mktemp -d "$BASE/store-vs-redis.XXXXXX")
PIDS=()
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SNAP_SRC=$(realpath "$SNAP")
SNAP_SHA=$(sha256sum "$SNAP_SRC" | cut -d' ' -f1)
cp "$SNAP_SRC" "$TMP/snapshot"
mkdir -p "$TMP/redis" "$TMP/store"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP/redis" \
    --enable-debug-command yes --daemonize no --logfile "$TMP/redis.log" &
PIDS+=($!)
"$TMP/snapshot" serve --port "$STORE_PORT" --save '' --dir "$TMP/store" 2>"$TMP/store.log" &
PIDS+=($!)
for port in $REDIS_PORT $STORE_PORT; do
    ok=0
    for _ in $(seq 100); do
        if [[ $(redis-cli -p "$port" PING 2>/dev/null) == PONG ]]; then ok=1; break; fi
        sleep 0.1
    done
    ((ok)) || { echo "store-vs-redis.sh: no server answers on port $port" >&2; cat "$TMP"/*.log >&2; exit 1; }
done

name() { [[ $1 == "$REDIS_PORT" ]] && echo redis || echo snapshot; }
info() { redis-cli -p "$1" INFO "$2" | tr -d '\r' | awk -F: -v k="$3" '$1 == k { print $2 }'; }

echo "# machine: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%dT%H:%MZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# redis: $(redis-server --version | awk '{print $3}')  snapshot: $SNAP_SRC (sha256 $SNAP_SHA)"
echo "# server directories in $TMP ($(df --output=fstype "$TMP" | tail -1))"
if ((THROUGHPUT)); then
echo
echo "## throughput: redis-benchmark -t set,get -P 16 -c 50 -n 2000000 -r 1000000 -q"
TP=$TMP/throughput.csv
echo "round,server,set,get,keys" >"$TP"
for round in $(seq "$ROUNDS"); do
    order=("$REDIS_PORT" "$STORE_PORT")
    ((round % 2 == 0)) && order=("$STORE_PORT" "$REDIS_PORT")
    for port in "${order[@]}"; do
        redis-cli -p "$port" FLUSHALL >/dev/null
        out=$(redis-benchmark -p "$port" -t set,get -P 16 -c 50 -n 2000000 -r 1000000 -q 2>/dev/null | tr '\r' '\n')
        set_rps=$(echo "$out" | awk '/^SET:/ { print $2 }' | tail -1)
        get_rps=$(echo "$out" | awk '/^GET:/ { print $2 }' | tail -1)
        [[ $set_rps =~ ^[0-9.]+$ && $get_rps =~ ^[0-9.]+$ ]] ||
            { echo "store-vs-redis.sh: no result from redis-benchmark on $(name "$port"):" >&2; echo "$out" | tail -5 >&2; exit 1; }
        keys=$(redis-cli -p "$port" DBSIZE)
        echo "$round,$(name "$port"),$set_rps,$get_rps,$keys" >>"$TP"
    done
done
python3 - "$TP" <<'PY'
import csv, statistics as st, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print("| round | server | SET/s | GET/s | keys after (DBSIZE) |")
print("|---|---|---|---|---|")
for r in rows:
    print(f"| {r['round']} | {r['server']} | {float(r['set']):.0f} | {float(r['get']):.0f} | {r['keys']} |")
print()
by = {s: [r for r in rows if r["server"] == s] for s in ("redis", "snapshot")}
print("| server | median SET/s (min–max) | median GET/s (min–max) |")
print("|---|---|---|")
for s, rs in by.items():
    cells = []
    for k in ("set", "get"):
        xs = [float(r[k]) for r in rs]
        cells.append(f"{st.median(xs):.0f} ({min(xs):.0f}–{max(xs):.0f})")
    print(f"| {s} | {cells[0]} | {cells[1]} |")
print()
print("| paired per-round ratio snapshot / redis | median (min–max) |")
print("|---|---|")
for k in ("set", "get"):
    red = {r["round"]: float(r[k]) for r in by["redis"]}
    rs = [float(r[k]) / red[r["round"]] for r in by["snapshot"]]
    print(f"| {k.upper()} | {st.median(rs):.3f} ({min(rs):.3f}–{max(rs):.3f}) |")
PY
fi

echo
echo "## snapshot of a dataset: DEBUG POPULATE $KEYS key $VALUE_SIZE, then BGSAVE (no write load; sync and ${PAUSE} s pause before each)"
for port in $REDIS_PORT $STORE_PORT; do
    redis-cli -p "$port" FLUSHALL >/dev/null
    redis-cli -p "$port" DEBUG POPULATE "$KEYS" key "$VALUE_SIZE" >/dev/null
done
echo "| server | keys | used_memory MiB | used_memory_rss MiB |"
echo "|---|---|---|---|"
for port in $REDIS_PORT $STORE_PORT; do
    keys=$(info "$port" keyspace db0 | sed 's/keys=\([0-9]*\).*/\1/')
    used=$(info "$port" memory used_memory)
    rss=$(info "$port" memory used_memory_rss)
    echo "| $(name "$port") | $keys | $((used / 1048576)) | $((rss / 1048576)) |"
done
echo
SV=$TMP/saves.csv
echo "round,server,keys,fork_usec,start,end,size" >"$SV"
variants=(redis redis-nocomp snapshot snapshot-nocomp)
for round in $(seq "$SAVES"); do
    for ((k = 0; k < ${#variants[@]}; k++)); do
        v=${variants[$(((k + round - 1) % ${#variants[@]}))]}
        case $v in
        redis) port=$REDIS_PORT; redis-cli -p "$port" CONFIG SET rdbcompression yes >/dev/null ;;
        redis-nocomp) port=$REDIS_PORT; redis-cli -p "$port" CONFIG SET rdbcompression no >/dev/null ;;
        snapshot) port=$STORE_PORT; redis-cli -p "$port" CONFIG SET rdbcompression yes >/dev/null ;;
        snapshot-nocomp) port=$STORE_PORT; redis-cli -p "$port" CONFIG SET rdbcompression no >/dev/null ;;
        esac
        sync
        sleep "$PAUSE"
        start=$EPOCHREALTIME
        [[ $(redis-cli -p "$port" BGSAVE) == *"started"* ]] || { echo "$v: BGSAVE refused" >&2; exit 1; }
        sleep 0.01
        while [[ $(info "$port" persistence rdb_bgsave_in_progress) != 0 ]]; do sleep 0.01; done
        end=$EPOCHREALTIME
        [[ $(info "$port" persistence rdb_last_bgsave_status) == ok ]] || { echo "$v: BGSAVE failed" >&2; exit 1; }
        fork_usec=$(info "$port" stats latest_fork_usec)
        dir=$TMP/redis; [[ $v == snapshot* ]] && dir=$TMP/store
        files=("$dir"/*)
        ((${#files[@]} == 1)) || { echo "$v: expected one file in $dir: ${files[*]}" >&2; exit 1; }
        size=$(stat -c %s "${files[0]}")
        keys=$(info "$port" keyspace db0 | sed 's/keys=\([0-9]*\).*/\1/')
        echo "$round,$v,$keys,$fork_usec,$start,$end,$size" >>"$SV"
    done
done
redis-cli -p "$REDIS_PORT" CONFIG SET rdbcompression yes >/dev/null
if command -v redis-check-rdb >/dev/null; then
    redis-check-rdb "$TMP"/store/dump.rdb | grep -q 'RDB looks OK' ||
        { echo "store-vs-redis.sh: redis-check-rdb rejects the store's file" >&2; exit 1; }
    echo "# redis-check-rdb: the store's last file (last variant: $v) looks OK"
fi
python3 - "$SV" <<'PY'
import csv, statistics as st, sys
rows = list(csv.DictReader(open(sys.argv[1])))
for r in rows:
    r["secs"] = float(r["end"]) - float(r["start"])
    r["mib"] = int(r["size"]) / 2**20
print("| round | server | keys | fork µs | save s | file MiB | file MiB/s | keys/s |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['round']} | {r['server']} | {r['keys']} | {r['fork_usec']} | {r['secs']:.2f} | {r['mib']:.0f} | {r['mib'] / r['secs']:.0f} | {int(r['keys']) / r['secs']:.0f} |")
print()
print("| server | saves | median fork µs (min–max) | median save s (min–max) | file MiB | median file MiB/s | median keys/s |")
print("|---|---|---|---|---|---|---|")
for s in dict.fromkeys(r["server"] for r in rows):
    rs = [r for r in rows if r["server"] == s]
    f = [int(r["fork_usec"]) for r in rs]
    t = [r["secs"] for r in rs]
    print(f"| {s} | {len(rs)} | {st.median(f):.0f} ({min(f)}–{max(f)}) | {st.median(t):.2f} ({min(t):.2f}–{max(t):.2f}) "
          f"| {st.median(r['mib'] for r in rs):.0f} | {st.median(r['mib'] / r['secs'] for r in rs):.0f} "
          f"| {st.median(int(r['keys']) / r['secs'] for r in rs):.0f} |")
print()
print("| paired per-round ratio of save times | median (min–max) |")
print("|---|---|")
for mine, theirs in (("snapshot", "redis"), ("snapshot-nocomp", "redis-nocomp")):
    t = {r["round"]: r["secs"] for r in rows if r["server"] == theirs}
    q = [r["secs"] / t[r["round"]] for r in rows if r["server"] == mine]
    print(f"| {mine} / {theirs} | {st.median(q):.3f} ({min(q):.3f}–{max(q):.3f}) |")
PY
echo
echo "# done $(date -u +%H:%MZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
