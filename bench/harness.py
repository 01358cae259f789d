"""Shared by the bodies of `cargo xtask bench` (bench/bench_*.py).

A body measures; it prints progress to stderr and, at the end, one JSON object on stdout:
  {"name", "method" (markdown), "commands" [str], "notes" [str],
   "metrics": [{"id", "title", "unit", "better": "lower"|"higher", "baseline": cond|null,
                "samples": {cond: [number, ...]}}]}
xtask computes medians, ranges, ratios and the issues' targets from the samples; a body prints
no summary of its own. Environment from xtask: BENCH_QUICK (1: tiny sizes, one round),
BENCH_ROUNDS, SNAP (the snapshot binary).
"""
import ctypes, json, os, shutil, signal, socket, subprocess, sys, tempfile, time
from storebench import Conn
from empty_tracepoints import COPY_PATH

QUICK = os.environ.get("BENCH_QUICK") == "1"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "1" if QUICK else "5"))
SNAP = os.environ.get("SNAP") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "snapshot")
TRACEFS = "/sys/kernel/tracing"

# bpftrace's naive count: every write-protect fault of a user page (error code: present + write).
BPFTRACE_WP = ('tracepoint:exceptions:page_fault_user /(args->error_code & 3) == 3/ { @[pid] = count(); } '
               'BEGIN { printf("ATTACHED\\n"); }')


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def pick(quick, full):
    return quick if QUICK else full


def rotated(items, r):
    """The conditions of round r, the first one rotating each round (interleaved rounds)."""
    k = r % len(items)
    return items[k:] + items[:k]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def private_dir(prefix):
    # mkdtemp: a fresh 0700 directory with a random name, never a predictable path.
    return tempfile.mkdtemp(prefix=f"bench-{prefix}.")


def emit(name, method, commands, metrics, notes=()):
    json.dump({"name": name, "method": method, "commands": list(commands), "notes": list(notes),
               "metrics": metrics}, sys.stdout, indent=1)
    print()


def metric(id, title, unit, better, baseline, conds):
    return {"id": id, "title": title, "unit": unit, "better": better, "baseline": baseline,
            "samples": {c: [] for c in conds}}


_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def _die_with_parent():
    # Runs in the child before exec: killed when this body dies, even by SIGKILL,
    # so no tracer or server outlives the run with parent 1.
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


# Tracers running now; main() stops any a body left behind (an exception
# between start_tracer and stop, SIGTERM, Ctrl-C).
_running = []


def spawn(argv, **kw):
    """Popen of a background process that dies with this body."""
    return subprocess.Popen(argv, preexec_fn=_die_with_parent, **kw)


class Tracer:
    """A tracer started in the background; usable once it has attached."""

    def __init__(self, argv, ready, workdir, attached=lambda pid: True):
        self.out = open(os.path.join(workdir, "tracer.out"), "w+")
        self.err = open(os.path.join(workdir, "tracer.err"), "w+")
        self.ended_early = False  # it exited before stop() asked it to
        t0 = time.monotonic()
        self.p = spawn(argv, stdout=self.out, stderr=self.err, stdin=subprocess.DEVNULL)
        _running.append(self)
        while True:
            for f in (self.out, self.err):
                f.seek(0)
                # At a line's start: bpftrace echoes a failing program, printf("ATTACHED") and all, on stderr.
                if any(line.startswith(ready) for line in f.read().splitlines()) and attached(self.p.pid):
                    self.attach_s = time.monotonic() - t0
                    return
            if self.p.poll() is not None:
                self.err.seek(0)
                self.stop()
                raise RuntimeError(f"{argv[0]} exited before attaching: {self.err.read()[-2000:]}")
            if time.monotonic() - t0 > 180:
                self.stop()
                raise RuntimeError(f"{argv[0]} did not attach in 180 s")
            time.sleep(0.05)

    def stop(self):
        if self in _running:
            _running.remove(self)
        self.ended_early = self.p.poll() is not None
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.out.seek(0)
        return self.out.read()

    def diagnosis(self):
        """How the tracer ended, for an error about what it counted."""
        self.err.seek(0)
        early = "before it was stopped" if self.ended_early else "when stopped"
        return f"{self.p.args[0]} ended {early} with exit status {self.p.returncode}; its stderr: {self.err.read()[-1500:]}"


def start_tracer(cond, workdir, pid=None, comm=None):
    """cond: none | empty | snapshot-pid | snapshot-comm | snapshot-all | bpftrace-wp."""
    if _running:
        # Conditions are compared one against another: none may run beside another's programs.
        raise RuntimeError(f"condition {cond} started with {len(_running)} tracer(s) still running")
    json_path = os.path.join(workdir, "trace.json")
    if cond == "none":
        return None
    if cond == "empty":
        # `return 0` on each tracepoint of the copy path: what any program there costs (the floor).
        here = os.path.dirname(os.path.abspath(__file__))
        return Tracer(["python3", os.path.join(here, "empty_tracepoints.py"), *COPY_PATH], "ATTACHED", workdir)
    if cond == "bpftrace-wp":
        ensure_tracefs()
        return Tracer(["bpftrace", "-e", BPFTRACE_WP], "ATTACHED", workdir, bpftrace_attached)
    target = {"snapshot-pid": ["--pid", str(pid)], "snapshot-comm": ["--comm", str(comm)],
              "snapshot-all": ["--all"]}[cond]
    return Tracer([SNAP, "trace", *target, "--json", json_path], "snapshot: tracing", workdir)


def bpftrace_attached(pid):
    """Whether bpftrace `pid` has attached its tracepoint: it runs BEGIN, which prints ATTACHED, before it
    attaches its other probes, so the line alone lets a short workload start untraced."""
    out = subprocess.run(["bpftool", "perf", "show", "--json"], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"bpftool perf show failed: {out.stderr[-2000:]}")
    return any(e.get("pid") == pid and e.get("tracepoint") == "page_fault_user" for e in json.loads(out.stdout or "[]"))


_mounted = False


def ensure_tracefs():
    """bpftrace's tracepoints need tracefs; mounted here if missing, unmounted at exit."""
    global _mounted
    with open("/proc/mounts") as f:
        if any(l.split()[1] == TRACEFS and l.split()[2] == "tracefs" for l in f):
            return
    subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS], check=True)
    _mounted = True


def cleanup_tracefs():
    if _mounted:
        subprocess.run(["umount", TRACEFS])


def bpftrace_counts(text):
    """@[pid]: count lines of the one-liner's output at exit."""
    counts = {}
    for line in text.splitlines():
        if line.startswith("@[") and "]:" in line:
            key, value = line[2:].split("]:", 1)
            counts[int(key)] = int(value)
    return counts


def copies_seen(cond, tracer_out, workdir, pids):
    """{pid: the copies (or, for bpftrace, write faults) the condition's tracer charged to each pid as a
    forking parent}: a tracer that attached but counted nothing must not pass as a cheap one."""
    if cond == "bpftrace-wp":
        counts = bpftrace_counts(tracer_out)
        return {p: counts.get(p, 0) for p in pids}
    with open(os.path.join(workdir, "trace.json")) as f:
        forks = json.load(f)["forks"]
    return {p: sum(f["parent_copies"] for f in forks if f["parent"] == p) for p in pids}


def check_seen(cond, seen, least):
    """Fails unless every pid in `seen` got at least `least` copies from the tracer."""
    short = {p: n for p, n in seen.items() if n < least}
    if short or not seen:
        raise RuntimeError(f"{cond}: the tracer counted {short or seen} for the measured pids, "
                           f"expected at least {least} each: it did not measure the workload")


class Server:
    """redis-server or `snapshot serve` in a private directory on a free port, stopped by pid."""

    def __init__(self, kind, extra=()):
        self.dir = private_dir(kind)
        self.port = free_port()
        if kind == "redis":
            argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--dir", self.dir, "--enable-debug-command", "yes", *extra]
        else:
            argv = [SNAP, "serve", "--port", str(self.port), "--save", "", "--dir", self.dir, *extra]
        self.argv = argv
        self.conn = None
        self.log = open(os.path.join(self.dir, "log"), "w")
        self.p = spawn(argv, stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        for _ in range(400):
            if self.p.poll() is not None:
                raise RuntimeError(f"{kind} exited at start: see {self.dir}/log")
            if self.cli("PING", check=False) == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError(f"{kind} did not answer PING")

    def cli(self, *args, check=True):
        r = subprocess.run(["redis-cli", "-p", str(self.port), *map(str, args)], capture_output=True, text=True)
        if check and (r.returncode != 0 or r.stdout.startswith("ERR")):
            raise RuntimeError(f"redis-cli {' '.join(map(str, args))}: {r.stdout}{r.stderr}")
        return r.stdout.strip()

    def info(self, section):
        # One connection per server: polling with redis-cli would fork and exec every 10 ms.
        if self.conn is None:
            self.conn = Conn(self.port)
        text = self.conn.cmd("INFO", section).decode()
        return dict(l.split(":", 1) for l in text.splitlines() if ":" in l)

    def wait_save(self):
        while self.info("persistence").get("rdb_bgsave_in_progress") != "0":
            time.sleep(0.01)

    def stop(self):
        if self.conn is not None:
            self.conn.s.close()
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def redis_benchmark(port, *args):
    """redis-benchmark --csv: {test: (requests per second, p99 ms)}."""
    r = subprocess.run(["redis-benchmark", "-p", str(port), "--csv", *map(str, args)], capture_output=True, text=True)
    rows = {}
    for line in r.stdout.splitlines()[1:]:
        cells = [c.strip('"') for c in line.split(",")]
        if len(cells) >= 7:
            rows[cells[0]] = (float(cells[1]), float(cells[6]))
    if not rows:
        raise RuntimeError(f"redis-benchmark printed no result: {r.stdout}{r.stderr}")
    return rows


def main(body):
    """Runs body() with cleanup on every exit path; its result is printed as JSON."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(129))
    try:
        body()
        if _running:
            # A body that ends with a tracer still attached measured its later conditions under it.
            raise RuntimeError(f"the body ended with {len(_running)} tracer(s) still running: "
                               "a condition after its own was measured with its programs attached")
    finally:
        # A second signal must not cut this short: the tracers are stopped first.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for t in list(_running):
            log(f"stopping a tracer left running: pid {t.p.pid}")
            t.stop()
        cleanup_tracefs()


def snapshot_run(workdir, args):
    """Runs `snapshot run --no-tui --json F ARGS`; returns [(setting, [snapshot summaries])], one per workload
    (page size, method), the workload's "end" record as setting["end"]."""
    path = os.path.join(workdir, "run.jsonl")
    subprocess.run([SNAP, "run", "--no-tui", "--json", path, *map(str, args)], check=True,
                   stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    runs = []
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("type") == "setting":
                runs.append((rec, []))
            elif rec.get("type") == "snapshot" and runs:
                runs[-1][1].append(rec)
            elif rec.get("type") == "end" and runs:
                # The run's totals (writes, duration, latency without a child) ride on its setting.
                runs[-1][0]["end"] = rec
    os.unlink(path)
    return runs
