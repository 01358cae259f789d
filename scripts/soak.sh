#!/usr/bin/env bash
# scripts/soak.sh: `snapshot run` for a long time with a snapshot every 10 s,
# sampling what could leak, every SAMPLE seconds:
#   RSS, open fds and threads of `snapshot run` and of the store it started,
#   the store's children alive (snapshot children), the eBPF maps and programs
#   `snapshot run` holds and the entries in each of its hash maps.
# At the end: no process of the run left, no eBPF program or map of it left.
#
# Needs root (the tracer), bpftool and jq. Runs niced. Output: the samples as
# CSV in OUT (default bench/results/soak.csv, also shown on stderr), the run's
# end and what it left behind in OUT.log.
#
# Environment: SNAP (binary, default target/release/snapshot), MINUTES (30),
# KEYS (500000), RATE (5000 SETs/s), EVERY (10 s between snapshots), SAMPLE (30).
set -euo pipefail

SNAP=${SNAP:-target/release/snapshot}
MINUTES=${MINUTES:-30}
KEYS=${KEYS:-500000}
RATE=${RATE:-5000}
EVERY=${EVERY:-10}
SAMPLE=${SAMPLE:-30}
OUT=${OUT:-bench/results/soak.csv}

[ "$(id -u)" = 0 ] || { echo "soak.sh: needs root (the tracer)" >&2; exit 2; }
command -v bpftool >/dev/null || { echo "soak.sh: needs bpftool" >&2; exit 2; }
command -v jq >/dev/null || { echo "soak.sh: needs jq" >&2; exit 2; }

work=$(mktemp -d)
: >"$work/prog_ids"; : >"$work/map_ids"; : >"$work/store_pids"
run_pid=
cleanup() {
    if [ -n "$run_pid" ] && kill -0 "$run_pid" 2>/dev/null; then kill -INT "$run_pid"; wait "$run_pid" || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

kb() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
# bpftool here lists no owner pids, so the ids come from the pid's fds.
ids_of() { # PID KEY: the KEY (map_id, prog_id) of each bpf fd of PID, one a line
    grep -h "^$2:" /proc/"$1"/fdinfo/* 2>/dev/null | awk '{ print $2 }' | sort -un || true
}
# The eBPF maps held by a pid, as "id:type:name" lines.
maps_of() {
    local id
    for id in $(ids_of "$1" map_id); do
        bpftool -j map show id "$id" 2>/dev/null | jq -r '"\(.id):\(.type):\(.name)"' || true
    done
}
progs_of() { ids_of "$1" prog_id | wc -l; }
# Entries in each hash map of the pid: "NAME=N" words.
entries_of() {
    local line id type name
    for line in $(maps_of "$1"); do
        IFS=: read -r id type name <<<"$line"
        case $type in
            hash | lru_hash | percpu_hash | lru_percpu_hash)
                printf '%s=%s ' "$name" "$(bpftool -j map dump id "$id" 2>/dev/null | jq length)" ;;
        esac
    done
}

nice -n 10 "$SNAP" run --keys "$KEYS" --rate "$RATE" --every "$EVERY" --duration "${MINUTES}m" \
    --interval 10 --no-tui --json "$work/run.jsonl" >"$work/run.out" 2>"$work/run.err" &
run_pid=$!
start=$(date +%s)
echo "soak: snapshot run pid $run_pid, keys $KEYS, rate $RATE/s, every ${EVERY}s, ${MINUTES} min" >&2

echo "t_s,run_rss_kb,run_fds,run_threads,store_pid,store_rss_kb,store_fds,store_children,snapshots,bpf_maps,bpf_progs,map_entries" >"$OUT"
while kill -0 "$run_pid" 2>/dev/null; do
    store=$(pgrep -P "$run_pid" -x snapshot | head -1 || true)
    if [ -n "$store" ]; then
        children=$({ pgrep -P "$store" || true; } | wc -l)
        store_rss=$(kb "$store" VmRSS); store_fds=$(fds "$store")
        echo "$store" >>"$work/store_pids"
    else
        children=0; store_rss=0; store_fds=0
    fi
    snaps=$(grep -c '"type":"snapshot"' "$work/run.jsonl" 2>/dev/null || true)
    printf '%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s\n' "$(($(date +%s) - start))" \
        "$(kb "$run_pid" VmRSS)" "$(fds "$run_pid")" "$(kb "$run_pid" Threads)" "${store:-0}" "$store_rss" \
        "$store_fds" "$children" "${snaps:-0}" "$(maps_of "$run_pid" | wc -l)" "$(progs_of "$run_pid")" \
        "$(entries_of "$run_pid")" | tee -a "$OUT" >&2
    ids_of "$run_pid" prog_id >>"$work/prog_ids"
    ids_of "$run_pid" map_id >>"$work/map_ids"
    sleep "$SAMPLE" & wait $! || true
done
status=0
wait "$run_pid" || status=$?
run_pid_done=$run_pid
run_pid=
echo "soak: snapshot run exited with status $status after $(($(date +%s) - start)) s" | tee "$OUT.log" >&2
{
    echo "--- after the run"
    # Its children were re-parented when it exited (pgrep -P of it finds none
    # whatever is left): the stores it was seen with are looked up by pid.
    left=0
    for pid in $(sort -un "$work/store_pids"); do
        state=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null || true)
        [ -n "$state" ] && [ "$state" != Z ] && left=$((left + 1))
    done
    echo "stores of the run still running: $left of $(sort -un "$work/store_pids" | wc -l) (run pid $run_pid_done)"
    # Every id the run held, looked up again: none may still exist.
    left=0
    for id in $(sort -un "$work/prog_ids"); do bpftool prog show id "$id" >/dev/null 2>&1 && left=$((left + 1)); done
    echo "eBPF programs of the run still loaded: $left of $(sort -un "$work/prog_ids" | wc -l)"
    left=0
    for id in $(sort -un "$work/map_ids"); do bpftool map show id "$id" >/dev/null 2>&1 && left=$((left + 1)); done
    echo "eBPF maps of the run still present: $left of $(sort -un "$work/map_ids" | wc -l)"
    echo "--- last lines of its output"
    tail -n 30 "$work/run.out"
    echo "--- its stderr"
    tail -n 20 "$work/run.err"
    echo "--- snapshot records in its JSON Lines: $(grep -c '"type":"snapshot"' "$work/run.jsonl" || true)"
    tail -n 1 "$work/run.jsonl" | head -c 4000
    echo
} >>"$OUT.log"
cat "$OUT.log" >&2
exit "$status"
