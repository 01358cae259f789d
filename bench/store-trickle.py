#!/usr/bin/env python3
"""CPU a server spends on one big request that arrives in small pieces (issue 16 item 10).

usage: python3 bench/store-trickle.py BEFORE AFTER [ROUNDS]
An MSET of 1,000,001 arguments (500,000 pairs, 9.9 MB) sent in 4 KiB writes, each followed by a
1 ms pause, so the server sees the request grow over thousands of reads. Reports the server's CPU
time (utime + stime from /proc/PID/stat) spent from the first byte to the reply. Port 7313.
"""
import os, socket, statistics, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from storebench import Server, resp  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")

def cpu(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(") ", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK

def one(binary):
    s = Server(binary, 7313)
    try:
        args = ["MSET"]
        for i in range(500_000):
            args += [f"k{i}", "v"]
        req = resp(args)
        c = socket.create_connection(("127.0.0.1", 7313))
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        before = cpu(s.p.pid)
        for i in range(0, len(req), 4096):
            c.sendall(req[i:i + 4096])
            time.sleep(0.001)
        reply = c.recv(100)
        used = cpu(s.p.pid) - before
        assert reply == b"+OK\r\n", reply
        return used, len(req)
    finally:
        s.stop()

def main():
    before, after = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    res = {"before": [], "after": []}
    for r in range(rounds):
        order = [("before", before), ("after", after)]
        if r % 2:
            order.reverse()
        for name, b in order:
            used, n = one(b)
            print(f"round {r} {name}: {used:.2f} s of server CPU for a {n}-byte MSET in 4 KiB pieces", flush=True)
            res[name].append(used)
    b, a = statistics.median(res["before"]), statistics.median(res["after"])
    print(f"median: before {b:.2f} s, after {a:.2f} s (x{a / b if b else float('nan'):.3g})")

main()
