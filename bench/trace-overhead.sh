#!/usr/bin/env bash
# bench/trace-overhead.sh: how much does `snapshot trace` slow a fork plus a
# parent that rewrites 1 GiB, compared with no tracer and with bpftrace?
#
# Conditions, interleaved (the start rotates every round), ROUNDS rounds:
#   none               no tracer
#   snapshot-all       snapshot trace --all            (every process on the machine)
#   snapshot-comm      snapshot trace --comm cowbench  (only the benchmark's processes)
#   bpftrace-wp        bpftrace: write-protect faults per pid (the one-liner)
#   bpftrace-wp-alloc  bpftrace: write-protect fault followed by a user-page
#                      mm_page_alloc on the same thread = one copy (what snapshot does)
# Each tracer is started in the background and the timed runs start only once it
# has attached; its startup is reported separately (attach_s). Per session
# (one tracer start), REPS times:
#   workload  wall time of `snapshot workload --memory private --pages PAGES --no-pagemap`
#             (map + populate + fork + rewrite + child exit, the whole process)
#   window    fork() .. rewrite done .. child reaped, timed inside bench/forkrewrite.c,
#             which does the same thing as the workload (populate excluded)
# Then the tracer is stopped with SIGINT. Both benchmark binaries run under the
# name (comm) "cowbench", so --comm selects exactly them.
#
# Needs root. Mounts tracefs for bpftrace's tracepoints if it is not mounted, and
# unmounts it again on exit (also on error or Ctrl-C).
#
# DIAG=1 (default) adds a diagnosis: per eBPF program run count and run time
# (kernel.bpf_stats_enabled, switched on for one run each and restored) and the IRQ
# work interrupts (IWI in /proc/interrupts) each condition causes per run.
#
# Environment: SNAP (the snapshot binary, default target/release/snapshot of this
# checkout, built by `cargo xtask build`; copied to the temp dir, so a rebuild
# during the run changes nothing), ROUNDS (10), REPS (2), PAGES (262144 = 1 GiB),
# CONDS (the list above), VERIFY (1: also check the count against the pagemap truth).
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    echo "trace-overhead.sh: needs root (eBPF, pagemap, tracefs)" >&2
    exit 1
fi

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SNAP=${SNAP:-$HERE/../target/release/snapshot}
ROUNDS=${ROUNDS:-10}
REPS=${REPS:-2}
PAGES=${PAGES:-262144}
VERIFY=${VERIFY:-1}
DIAG=${DIAG:-1}
read -r -a CONDS <<<"${CONDS:-none snapshot-all snapshot-comm bpftrace-wp bpftrace-wp-alloc}"
TRACEFS=/sys/kernel/tracing

for tool in bpftrace gcc python3; do
    command -v "$tool" >/dev/null || { echo "trace-overhead.sh: $tool not found" >&2; exit 1; }
done
[[ -x $SNAP ]] || { echo "trace-overhead.sh: no snapshot binary (build: cargo xtask build)" >&2; exit 1; }

TMP=$(mktemp -d /tmp/trace-overhead.XXXXXX)
SNAP_SRC=$(realpath "$SNAP")
SNAP_SHA=$(sha256sum "$SNAP_SRC" | cut -d' ' -f1)
cp "$SNAP_SRC" "$TMP/snapshot"
SNAP=$TMP/snapshot
MOUNTED_BY_US=0
TRACER_PID=
BPF_STATS_WAS=$(sysctl -n kernel.bpf_stats_enabled)

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $TRACER_PID ]] && kill -0 "$TRACER_PID" 2>/dev/null; then
        kill -INT "$TRACER_PID" 2>/dev/null || true
        wait "$TRACER_PID" 2>/dev/null || true
    fi
    sysctl -qw kernel.bpf_stats_enabled="$BPF_STATS_WAS" || true
    if ((MOUNTED_BY_US)); then
        umount "$TRACEFS" || echo "trace-overhead.sh: could not unmount $TRACEFS" >&2
    fi
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

tracefs_mounted() { awk -v m="$TRACEFS" '$2 == m && $3 == "tracefs" { f = 1 } END { exit !f }' /proc/mounts; }
if ! tracefs_mounted; then
    mount -t tracefs nodev "$TRACEFS"
    MOUNTED_BY_US=1
fi

# Both benchmark programs are called "cowbench" (their comm), in two directories.
mkdir -p "$TMP/wl" "$TMP/fr"
cp "$SNAP" "$TMP/wl/cowbench"
gcc -O2 -Wall -o "$TMP/fr/cowbench" "$HERE/forkrewrite.c"

# bpftrace's BEGIN fires once every other probe is attached.
BT_WP='tracepoint:exceptions:page_fault_user /(args->error_code & 3) == 3/ { @[pid] = count(); }
BEGIN { printf("ATTACHED\n"); }'
# gfp bits (see events/kmem/mm_page_alloc/format): __GFP_HIGHMEM 0x2,
# __GFP_MOVABLE 0x8, __GFP_ZERO 0x100. A copy = a pending write-protect fault of
# this thread, then a highmem+movable allocation that is not zeroed.
BT_WP_ALLOC='tracepoint:exceptions:page_fault_user /(args->error_code & 3) == 3/ { @wp[pid] = count(); @pending[tid] = args->address; }
tracepoint:kmem:mm_page_alloc /@pending[tid]/ {
    if ((args->gfp_flags & 0xa) == 0xa) {
        delete(@pending[tid]);
        if ((args->gfp_flags & 0x100) == 0) { @copies[pid] = count(); }
    }
}
tracepoint:sched:sched_process_exit { delete(@pending[tid]); }
BEGIN { printf("ATTACHED\n"); }'

now() { echo "$EPOCHREALTIME"; }
# IRQ work interrupts (IWI) so far, all CPUs: bpf_find_vma() called with
# interrupts disabled defers its mmap_read_unlock() to an irq_work (a self-IPI).
irq_work_interrupts() { awk '$1 == "IWI:" { s = 0; for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) s += $i; print s }' /proc/interrupts; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$2"; }

# start_tracer COND: starts it in the background (TRACER_PID), waits until it has
# attached, and sets ATTACH to the seconds that took.
start_tracer() {
    local cond=$1 pattern t0
    rm -f "$TMP/tracer.out" "$TMP/tracer.err"
    t0=$(now)
    ATTACH=0
    case $cond in
    none) return ;;
    snapshot-all)
        "$SNAP" trace --all --json "$TMP/trace.json" >"$TMP/tracer.out" 2>"$TMP/tracer.err" &
        pattern='snapshot: tracing' ;;
    snapshot-comm)
        "$SNAP" trace --comm cowbench --json "$TMP/trace.json" >"$TMP/tracer.out" 2>"$TMP/tracer.err" &
        pattern='snapshot: tracing' ;;
    bpftrace-wp)
        bpftrace -e "$BT_WP" >"$TMP/tracer.out" 2>"$TMP/tracer.err" &
        pattern='ATTACHED' ;;
    bpftrace-wp-alloc)
        bpftrace -e "$BT_WP_ALLOC" >"$TMP/tracer.out" 2>"$TMP/tracer.err" &
        pattern='ATTACHED' ;;
    *) echo "unknown condition $cond" >&2; return 1 ;;
    esac
    TRACER_PID=$!
    local i
    for ((i = 0; i < 1200; i++)); do
        if grep -q "$pattern" "$TMP/tracer.out" "$TMP/tracer.err" 2>/dev/null; then
            ATTACH=$(elapsed "$t0" "$(now)")
            return
        fi
        if ! kill -0 "$TRACER_PID" 2>/dev/null; then
            echo "tracer for $cond died:" >&2
            cat "$TMP/tracer.err" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "tracer for $cond did not attach in 120 s" >&2
    return 1
}

stop_tracer() {
    [[ -n $TRACER_PID ]] || return 0
    kill -INT "$TRACER_PID"
    local rc=0
    wait "$TRACER_PID" || rc=$?
    TRACER_PID=
    # snapshot exits 0 on Ctrl-C; bpftrace too.
    if ((rc != 0)); then
        echo "tracer exited with status $rc:" >&2
        tail -5 "$TMP/tracer.err" >&2
        return 1
    fi
}

# Copies snapshot counted in the cowbench processes (its sanity check), or -.
traced_copies() {
    local cond=$1
    case $cond in
    snapshot-*)
        python3 - "$TMP/trace.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(sum(p["cow_copies"] for p in r["processes"] if p["comm"] == "cowbench"))
EOF
        ;;
    *) echo - ;;
    esac
}

echo "# trace-overhead: $(date -u +%FT%TZ)  nproc=$(nproc)  kernel=$(uname -r)  snapshot=$SNAP_SRC (sha256 $SNAP_SHA)"
echo "# pages=$PAGES ($((PAGES * 4 / 1024)) MiB)  rounds=$ROUNDS  reps/session=$REPS  conditions: ${CONDS[*]}"
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)"

CSV=$TMP/runs.csv
echo "round,cond,rep,attach_s,workload_s,fork_us,rewrite_us,window_us,iwi,traced_copies" >"$CSV"
n=${#CONDS[@]}
for ((r = 1; r <= ROUNDS; r++)); do
    for ((k = 0; k < n; k++)); do
        cond=${CONDS[$(((k + r - 1) % n))]}
        start_tracer "$cond"
        rows=()
        for ((i = 1; i <= REPS; i++)); do
            t0=$(now)
            "$TMP/wl/cowbench" workload --memory private --pages "$PAGES" --no-pagemap --truth /dev/null
            t1=$(now)
            w0=$(irq_work_interrupts)
            read -r fork_us rewrite_us window_us <<<"$("$TMP/fr/cowbench" "$PAGES")"
            w1=$(irq_work_interrupts)
            [[ -n $window_us ]] || { echo "forkrewrite failed" >&2; exit 1; }
            rows+=("$r,$cond,$i,$ATTACH,$(elapsed "$t0" "$t1"),$fork_us,$rewrite_us,$window_us,$((w1 - w0))")
        done
        stop_tracer
        copies=$(traced_copies "$cond")
        for row in "${rows[@]}"; do echo "$row,$copies" >>"$CSV"; done
        rm -f "$TMP/trace.json"
        sleep 1
    done
    echo "# round $r/$ROUNDS done $(date -u +%T)  load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "## raw runs (CSV)"
cat "$CSV"
echo
python3 - "$CSV" "$PAGES" "$REPS" <<'EOF'
import csv, statistics as st, sys
from collections import defaultdict
rows = list(csv.DictReader(open(sys.argv[1])))
pages, reps = int(sys.argv[2]), int(sys.argv[3])
conds = list(dict.fromkeys(r["cond"] for r in rows))
by = defaultdict(list)
for r in rows:
    by[r["cond"]].append(r)
def med(xs): return st.median(xs)
def q(xs, p):
    xs = sorted(xs); k = (len(xs) - 1) * p; f = int(k); c = min(f + 1, len(xs) - 1)
    return xs[f] + (xs[c] - xs[f]) * (k - f)
# Paired ratios: per round, median of the condition's runs / median of none's runs.
def per_round(cond, key):
    d = defaultdict(list)
    for r in by[cond]:
        d[r["round"]].append(float(r[key]))
    return {k: med(v) for k, v in d.items()}
def table(key, label, scale, unit):
    print(f"## {label}")
    print(f"| condition | n | median {unit} | p25–p75 {unit} | min–max {unit} | ratio of medians vs none | paired per-round ratio: median (min–max) |")
    print("|---|---|---|---|---|---|---|")
    base = per_round("none", key) if "none" in by else {}
    base_med = med([float(r[key]) for r in by["none"]]) if "none" in by else None
    for c in conds:
        xs = [float(r[key]) * scale for r in by[c]]
        if base_med:
            ratio = f"{med(xs) / (base_med * scale):.3f}"
            pr = per_round(c, key)
            rs = [pr[k] / base[k] for k in pr if k in base]
            paired = f"{med(rs):.3f} ({min(rs):.3f}–{max(rs):.3f})"
        else:
            ratio = paired = "-"
        print(f"| {c} | {len(xs)} | {med(xs):.3f} | {q(xs,.25):.3f}–{q(xs,.75):.3f} | {min(xs):.3f}–{max(xs):.3f} | {ratio} | {paired} |")
    print()
table("window_us", "fork + rewrite window (bench/forkrewrite.c, timed inside; populate and tracer startup excluded)", 1e-3, "ms")
table("rewrite_us", "rewrite alone (the parent's 1 GiB of COW writes)", 1e-3, "ms")
print("## IRQ work interrupts during one fork + rewrite window (machine-wide /proc/interrupts IWI delta)")
print("| condition | median | min–max |")
print("|---|---|---|")
for c in conds:
    xs = [int(r["iwi"]) for r in by[c]]
    print(f"| {c} | {med(xs):.0f} | {min(xs)}–{max(xs)} |")
print()
table("workload_s", "whole `snapshot workload --no-pagemap` process (map + populate + fork + rewrite)", 1.0, "s")
print("## tracer startup (launch until attached; not in the timings above)")
print("| condition | median s | min–max s |")
print("|---|---|---|")
for c in conds:
    if c == "none": continue
    xs = [float(r["attach_s"]) for r in by[c] if r["rep"] == "1"]
    print(f"| {c} | {med(xs):.2f} | {min(xs):.2f}–{max(xs):.2f} |")
print()
print("## sanity: copies snapshot counted in the cowbench processes per session")
print(f"(expected per session: {reps} × 2 programs × {pages} pages = {reps * 2 * pages}, plus a few stack/libc pages)")
for c in conds:
    if not c.startswith("snapshot"): continue
    sess = sorted({(r["round"], r["traced_copies"]) for r in by[c]}, key=lambda x: int(x[0]))
    print(f"- {c}: " + ", ".join(t for _, t in sess))
EOF

if ((VERIFY)); then
    echo
    echo "## count vs ground truth (one traced run with pagemap measurement)"
    echo "\$ snapshot trace --json trace.json -- snapshot workload --memory private --pages $PAGES --truth truth.json"
    "$SNAP" trace --json "$TMP/verify.json" -- "$SNAP" workload --memory private --pages "$PAGES" --truth "$TMP/truth.json" \
        >"$TMP/verify.out" 2>"$TMP/verify.err"
    python3 - "$TMP/verify.json" "$TMP/truth.json" <<'EOF'
import json, sys
rep, truth = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
tf = truth["forks"][0]
root = truth["pid"]
f = next(f for f in rep["forks"] if f["parent"] == root and f["child"] == tf["child"])
p = next(p for p in rep["processes"] if p["pid"] == root)
c = next((p for p in rep["processes"] if p["pid"] == tf["child"]), None)
print("| | truth (pagemap) | snapshot trace |")
print("|---|---|---|")
print(f"| parent copies (fork record) | {tf['parent_copied']} | {f['parent_copies']} ({f['parent_bytes']} bytes) |")
print(f"| child copies (fork record) | {tf['child_copied']} | {f['child_copies']} ({f['child_bytes']} bytes) |")
print(f"| workload process cow_copies / wp_faults / wp_reuse / zero_fills | - | {p['cow_copies']} / {p['wp_faults']} / {p['wp_reuse']} / {p['zero_fills']} |")
if c: print(f"| child process cow_copies | - | {c['cow_copies']} |")
print(f"| health | - | {json.dumps(rep['health'])} |")
print(f"difference parent (trace - truth): {f['parent_copies'] - tf['parent_copied']} pages")
EOF
fi

if ((DIAG)); then
    echo
    echo "## diagnosis: eBPF program cost during one fork + rewrite window (kernel.bpf_stats_enabled=1 for that run)"
    for cond in snapshot-comm bpftrace-wp bpftrace-wp-alloc; do
        # The tracer's programs: those loaded after this list was taken.
        bpftool prog show -j >"$TMP/progs_old.json"
        start_tracer "$cond"
        sysctl -qw kernel.bpf_stats_enabled=1
        bpftool prog show -j >"$TMP/progs0.json"
        w0=$(irq_work_interrupts)
        read -r fork_us rewrite_us window_us <<<"$("$TMP/fr/cowbench" "$PAGES")"
        w1=$(irq_work_interrupts)
        bpftool prog show -j >"$TMP/progs1.json"
        sysctl -qw kernel.bpf_stats_enabled="$BPF_STATS_WAS"
        echo "### $cond: rewrite ${rewrite_us} us, window ${window_us} us, IRQ work interrupts +$((w1 - w0))"
        python3 - "$TMP/progs0.json" "$TMP/progs1.json" "$TMP/progs_old.json" "$PAGES" <<'EOF'
import json, sys
before = {p["id"]: p for p in json.load(open(sys.argv[1]))}
after = json.load(open(sys.argv[2]))
old = {p["id"] for p in json.load(open(sys.argv[3]))}
pages = int(sys.argv[4])
print("| program | runs | run time ms | ns/run | ns per rewritten page |")
print("|---|---|---|---|---|")
for p in after:
    if p["id"] in old:
        continue
    b = before.get(p["id"], {})
    runs = p.get("run_cnt", 0) - b.get("run_cnt", 0)
    ns = p.get("run_time_ns", 0) - b.get("run_time_ns", 0)
    if runs == 0:
        continue
    print(f"| {p.get('name', p['id'])} | {runs} | {ns / 1e6:.1f} | {ns / runs:.0f} | {ns / pages:.1f} |")
EOF
        stop_tracer
        echo
    done
fi
