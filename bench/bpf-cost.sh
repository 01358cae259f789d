#!/usr/bin/env bash
# bench/bpf-cost.sh OLD NEW: what each eBPF program costs per COW copy, per
# snapshot binary, from the kernel's own accounting (kernel.bpf_stats_enabled,
# switched on for the run and restored; bpftool's run_cnt and run_time_ns).
# Workload: `snapshot workload --memory private --pages PAGES --no-pagemap`
# (map, populate, fork, the parent rewrites every page) under the name
# cowbench, traced with `snapshot trace --comm cowbench` (MODE=comm) or
# `--all` (MODE=all). ROUNDS rounds, OLD and NEW interleaved. Needs root and bpftool.
# HUGETLB=1: the workload is bench/forkrewrite.c with one 2 MiB hugetlb page
# mapped beside the 4 KiB pages it rewrites (vm.nr_hugepages is raised to 2
# if lower, and restored); needs gcc.
set -euo pipefail
OLD=$1 NEW=$2
ROUNDS=${ROUNDS:-5} PAGES=${PAGES:-131072} MODE=${MODE:-comm}
TMP=$(mktemp -d /tmp/bpf-cost.XXXXXX)
STATS=$(cat /proc/sys/kernel/bpf_stats_enabled)
HUGEPAGES=$(cat /proc/sys/vm/nr_hugepages)
cleanup() {
  echo "$STATS" > /proc/sys/kernel/bpf_stats_enabled
  echo "$HUGEPAGES" > /proc/sys/vm/nr_hugepages
  rm -rf "$TMP"
}
trap cleanup EXIT
cp "$OLD" "$TMP/old"; cp "$NEW" "$TMP/new"; cp "$NEW" "$TMP/cowbench"
workload=("$TMP/cowbench" workload --memory private --pages "$PAGES" --no-pagemap)
if [[ ${HUGETLB:-0} == 1 ]]; then
  gcc -O2 -Wall -o "$TMP/cowbench" "$(dirname "$0")/forkrewrite.c"
  (( HUGEPAGES >= 2 )) || echo 2 > /proc/sys/vm/nr_hugepages
  workload=("$TMP/cowbench" "$PAGES" hugetlb)
fi
echo 1 > /proc/sys/kernel/bpf_stats_enabled
select=(--comm cowbench); [[ $MODE == all ]] && select=(--all)
for round in $(seq "$ROUNDS"); do
  for which in old new; do
    bpftool prog show --json > "$TMP/before.json"
    "$TMP/$which" trace "${select[@]}" 2> "$TMP/err" > /dev/null &
    tracer=$!
    until grep -q "snapshot: tracing" "$TMP/err"; do sleep 0.05; done
    "${workload[@]}" > /dev/null
    bpftool prog show --json > "$TMP/progs.json"
    kill -INT "$tracer"; wait "$tracer" || true
    python3 - "$which" "$round" "$PAGES" "$TMP/progs.json" "$TMP/before.json" <<'PY'
import json, sys
which, rnd, pages, path, before = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
# Only this tracer's programs (loaded after `before`): a tracer left running
# by someone else has the same names.
old_ids = {p["id"] for p in json.load(open(before))}
names = ("page_fault_user", "page_fault_kern", "mm_page_alloc", "sys_enter", "tlb_flush", "rss_stat",
         "sched_process_f", "sched_process_e")
rows, total = [], 0
for p in json.load(open(path)):
    if p["id"] not in old_ids and p.get("name", "").startswith(names) and "run_cnt" in p:
        total += p["run_time_ns"]
        rows.append(f'{p["name"]}={p["run_time_ns"] / max(p["run_cnt"], 1):.0f}ns/run x{p["run_cnt"] / pages:.3f}')
print(f"{which} round {rnd}: {total / pages:.0f} ns per copy  " + "  ".join(sorted(rows)))
PY
  done
done
