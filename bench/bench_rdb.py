#!/usr/bin/env python3
"""rdb: BGSAVE of the same dataset to an RDB file by redis-server and by `snapshot serve`, with
`rdbcompression yes` and `no`; the four variants interleaved, the first rotating each round.
No tracer and no write load: the save alone. Needs redis-server, redis-cli, redis-check-rdb."""
import os, subprocess, time
import harness as h

KEYS = h.pick(20_000, 1_000_000)
SIZE = 512
PAUSE = h.pick(0, 2)
SERVERS = ["redis-server", "snapshot"]
VARIANTS = [(s, c) for s in SERVERS for c in ("yes", "no")]


def populate(s):
    s.cli("DEBUG", "POPULATE", KEYS, "key", SIZE)
    keys = s.info("keyspace").get("db0", "")
    if not keys.startswith(f"keys={KEYS},"):
        raise RuntimeError(f"DEBUG POPULATE left {keys!r}, not {KEYS} keys")


def save(s):
    """BGSAVE until done: (seconds, fork µs, the file's MiB), after sync and a pause (writeback settled)."""
    subprocess.run(["sync"], check=True)
    time.sleep(PAUSE)
    t0 = time.monotonic()
    reply = s.cli("BGSAVE")
    if "started" not in reply:
        raise RuntimeError(f"BGSAVE: {reply}")
    s.wait_save()
    took = time.monotonic() - t0
    pers = s.info("persistence")
    if pers.get("rdb_last_bgsave_status") != "ok":
        raise RuntimeError(f"BGSAVE failed: {pers}")
    return took, int(s.info("stats")["latest_fork_usec"]), os.path.getsize(os.path.join(s.dir, "dump.rdb")) / 2**20


def check(s):
    """The store's file is RDB by Redis's own checker."""
    r = subprocess.run(["redis-check-rdb", os.path.join(s.dir, "dump.rdb")], capture_output=True, text=True)
    if "RDB looks OK" not in r.stdout:
        raise RuntimeError(f"redis-check-rdb refused the store's file: {r.stdout[-2000:]}{r.stderr[-2000:]}")


def body():
    def metric(id, title, unit, better="lower"):
        return h.metric(id, title, unit, better, "redis-server", SERVERS)
    m = {
        ("save", "yes"): metric("save_s_compressed", "save duration, rdbcompression yes (BGSAVE until done)", "s"),
        ("save", "no"): metric("save_s_uncompressed", "save duration, rdbcompression no", "s"),
        ("rate", "yes"): metric("save_mib_per_s_compressed", "dataset saved per second, rdbcompression yes "
                                "(uncompressed file size / save duration)", "MiB/s", "higher"),
        ("size", "yes"): metric("file_mib_compressed", "file size, rdbcompression yes", "MiB"),
        ("size", "no"): metric("file_mib_uncompressed", "file size, rdbcompression no", "MiB"),
        ("fork", "all"): metric("fork_us", "fork time (INFO latest_fork_usec), every save", "µs"),
    }
    servers = {}
    checked = 0
    try:
        for name in SERVERS:
            servers[name] = h.Server("redis" if name == "redis-server" else "snapshot")
            populate(servers[name])
            h.log(f"rdb: {name} holds {KEYS} keys")
        plain = {}
        for r in range(h.ROUNDS):
            for name, comp in h.rotated(VARIANTS, r):
                s = servers[name]
                s.cli("CONFIG", "SET", "rdbcompression", comp)
                took, fork_us, mib = save(s)
                if name == "snapshot":
                    check(s)
                    checked += 1
                m[("save", comp)]["samples"][name].append(took)
                m[("size", comp)]["samples"][name].append(mib)
                m[("fork", "all")]["samples"][name].append(fork_us)
                if comp == "no":
                    plain[name] = mib
                h.log(f"rdb round {r + 1} {name} rdbcompression {comp}: {took:.2f} s, {mib:.1f} MiB, fork {fork_us} µs")
        for name in SERVERS:
            # The uncompressed size is the dataset's size in RDB: the same work for both settings.
            m[("rate", "yes")]["samples"][name] = [plain[name] / t for t in m[("save", "yes")]["samples"][name]]
    finally:
        for s in servers.values():
            s.stop()
    ver = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    h.emit("rdb", METHOD.format(keys=KEYS, size=SIZE, pause=PAUSE),
           [f"redis-server --save '' --enable-debug-command yes ; snapshot serve --save ''",
            f"DEBUG POPULATE {KEYS} key {SIZE}   # in each, once",
            "CONFIG SET rdbcompression yes|no ; sync ; BGSAVE ; INFO persistence until rdb_bgsave_in_progress:0",
            "redis-check-rdb dump.rdb   # the store's file, after each of its saves"],
           list(m.values()), [f"redis-server {ver}", f"redis-check-rdb accepted the store's file {checked} times"])


METHOD = """Both servers run at once, each in a private directory on the same file system, each loaded once with
`DEBUG POPULATE {keys} key {size}` (the same keys and values). Four variants: each server with `CONFIG SET
rdbcompression yes` (LZF on strings over 20 bytes, Redis's default) and `no`; one save per variant per round, the
order rotating each round. Before each save: `sync` and a {pause} s pause, so no writeback of the last file runs
into the next save. Duration: from sending BGSAVE until INFO shows `rdb_bgsave_in_progress:0` (polled every 10 ms),
so it includes the fork and the file's fsync and rename. No write load runs: this is the serialiser and the disk.
Both write RDB (issue 14); the store's file is checked by `redis-check-rdb` after each of its saves. MiB/s uses the
uncompressed file's size for both settings (the same dataset, whatever the encoding). Issue 14 asks for the
comparison and sets no target."""

if __name__ == "__main__":
    h.main(body)
