#!/usr/bin/env python3
"""store: `redis-benchmark -t set,get` at -P 1 and -P 16 against `snapshot serve` and redis-server,
both running at once, the server order alternating each round. Needs redis-server, redis-benchmark."""
import subprocess
import harness as h

N = {1: h.pick(10_000, 200_000), 16: h.pick(20_000, 1_000_000)}
CONDS = ["redis-server", "snapshot"]


def check_stored(s, sets):
    """redis-benchmark counts error replies as answers: the SETs must have left keys (random out of 1 M,
    so at least half of them distinct), or the run measured a server that refused them."""
    keys = int(s.cli("DBSIZE"))
    if keys < sets // 2:
        raise RuntimeError(f"{' '.join(s.argv[:2])}: {keys} keys after {sets} SETs: the SETs were not stored")


def body():
    m = {}
    for p in (1, 16):
        for op in ("set", "get"):
            m[(op, p)] = h.metric(f"{op}_per_s_P{p}", f"{op.upper()} throughput, -P {p}", f"{op.upper()}/s", "higher",
                                  "redis-server", CONDS)
        m[("p99", p)] = h.metric(f"set_p99_ms_P{p}", f"SET p99 latency, -P {p}", "ms", "lower", "redis-server", CONDS)
    servers = {}
    try:
        servers["redis-server"] = h.Server("redis")
        servers["snapshot"] = h.Server("snapshot")
        for r in range(h.ROUNDS):
            for cond in h.rotated(CONDS, r):
                s = servers[cond]
                for p in (1, 16):
                    s.cli("FLUSHALL")
                    res = h.redis_benchmark(s.port, "-t", "set,get", "-P", p, "-c", 50, "-n", N[p], "-r", 1_000_000)
                    check_stored(s, N[p])
                    m[("set", p)]["samples"][cond].append(res["SET"][0])
                    m[("get", p)]["samples"][cond].append(res["GET"][0])
                    m[("p99", p)]["samples"][cond].append(res["SET"][1])
                    h.log(f"store round {r + 1} {cond} -P {p}: SET {res['SET'][0]:.0f}/s GET {res['GET'][0]:.0f}/s")
    finally:
        for s in servers.values():
            s.stop()
    ver = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    h.emit("store", METHOD,
           [f"redis-benchmark -p PORT --csv -t set,get -P 1 -c 50 -n {N[1]} -r 1000000",
            f"redis-benchmark -p PORT --csv -t set,get -P 16 -c 50 -n {N[16]} -r 1000000",
            "redis-server --save '' --appendonly no ; snapshot serve --save ''"],
           list(m.values()), [f"redis-server {ver}"])


METHOD = """Both servers run at once on loopback, single-threaded, no persistence during the run (`--save ''`), 4 KiB
pages, no tracer: redis-server (Debian package) and `snapshot serve`. Per round and server: `FLUSHALL`, then
redis-benchmark SET then GET (3-byte values, random keys out of 1 M, 50 connections) without pipelining and with
16-deep pipelines; the server order alternates each round. The client shares the machine's cores with the server."""

if __name__ == "__main__":
    h.main(body)
