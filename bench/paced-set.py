#!/usr/bin/env python3
"""paced-set.py PORT KEYS VALUE_SIZE RATE MAX: a rate-limited SET load on
127.0.0.1:PORT (redis-benchmark has no rate limit). Keys are named like
redis-benchmark -r KEYS names them (key:%012d, uniformly random), values are
VALUE_SIZE bytes. Sends RATE SETs per second in batches every 10 ms, reads the
replies, and stops after MAX SETs or on SIGTERM/SIGINT; prints the SETs sent."""
import random, signal, socket, sys, time

port, keys, size, rate, limit = (int(a) for a in sys.argv[1:6])
stop = False
def on_signal(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)

sock = socket.create_connection(("127.0.0.1", port))
sock.setblocking(True)
head = b"*3\r\n$3\r\nSET\r\n$16\r\n"
tail = b"\r\n$%d\r\n" % size + b"x" * size + b"\r\n"
batch = max(1, rate // 100)
sent = replied = 0
t0 = time.monotonic()
while not stop and sent < limit:
    n = min(batch, limit - sent)
    sock.sendall(b"".join(head + b"key:%012d" % random.randrange(keys) + tail for _ in range(n)))
    sent += n
    while replied < sent:  # each reply is "+OK\r\n"
        data = sock.recv(65536)
        if not data:
            sys.exit("connection closed")
        replied += data.count(b"\r\n")
    delay = t0 + sent / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
print(sent)
