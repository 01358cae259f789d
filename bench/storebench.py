"""Helpers shared by the store benchmark scripts: a minimal RESP client, a server started in a
private temp dir under /tmp and killed by pid, redis-benchmark's SET rate."""
import os, shutil, socket, subprocess, tempfile, time

def resp(args):
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(parts)

class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.f = self.s.makefile("rb")
    def cmd(self, *args):
        self.s.sendall(resp(args))
        return self.read()
    def read(self):
        line = self.f.readline()
        t, body = line[:1], line[1:-2]
        if t == b"$":
            n = int(body)
            return None if n < 0 else self.f.read(n + 2)[:-2]
        if t == b"*":
            return [self.read() for _ in range(int(body))]
        if t == b":":
            return int(body)
        if t == b"-":
            raise RuntimeError(body.decode())
        return body.decode()

def info(c, section):
    text = c.cmd("INFO", section).decode()
    return dict(l.split(":", 1) for l in text.splitlines() if ":" in l)

class Server:
    def __init__(self, binary, port):
        self.dir = tempfile.mkdtemp(prefix="store-bench.", dir="/tmp")
        serve = [] if binary.endswith("snapshot-store") else ["serve"]
        self.log = open(os.path.join(self.dir, "log"), "w")
        self.p = subprocess.Popen([binary, *serve, "--port", str(port), "--save", "", "--dir", self.dir],
                                  stdout=self.log, stderr=self.log)
        for _ in range(200):
            try:
                self.c = Conn(port)
                self.c.cmd("PING")
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server did not start")
    def stop(self):
        self.p.kill()
        self.p.wait()
        shutil.rmtree(self.dir)

def wait_no_child(c):
    while info(c, "persistence")["rdb_bgsave_in_progress"] != "0":
        time.sleep(0.01)

def bench_set(port):
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-t", "set", "-n", "300000",
                          "-r", "100000000", "-P", "16", "-q"], capture_output=True, text=True).stdout
    last = out.replace("\r", "\n").strip().splitlines()[-1]
    return float(last.split(":")[1].split("requests")[0])

def big_values(c, n, size):
    v = b"x" * size
    for i in range(n):
        c.cmd("SET", f"big{i}", v)
