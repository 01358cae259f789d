#!/usr/bin/env bash
# bench/methods-trace.sh (root, BTF): one BGSAVE FORK per --cow-strategy under `snapshot serve --trace`.
# 50 000 keys x 512 B (DEBUG POPULATE); the child is slowed (rdb-key-save-delay) so it lives through
# 10 000 overwrites of random keys; then the child is killed and INFO persistence printed: the
# tracer's exact copies (tracer_last_fork_parent_copies) beside the store's own count of shared
# index/record pages written and the child's Private_Dirty growth (smaps_rollup).
# Environment: SNAP (default target/release/snapshot of this checkout), PORT (7720).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
S=${SNAP:-$HERE/../target/release/snapshot}
PORT=${PORT:-7720}
for strat in inplace redirect; do
  D=$(mktemp -d /tmp/methods-trace.XXXX)
  $S serve --trace --port $PORT --dir $D --save "" --cow-strategy $strat > $D/log 2>&1 &
  P=$!
  for i in $(seq 100); do redis-cli -p $PORT ping >/dev/null 2>&1 && break; sleep 0.1; done
  sleep 1
  redis-cli -p $PORT debug populate 50000 key 512 >/dev/null
  redis-cli -p $PORT config set rdb-key-save-delay 2000 >/dev/null
  redis-cli -p $PORT bgsave fork >/dev/null
  sleep 0.3
  C=$(redis-cli -p $PORT info persistence | tr -d '\r' | awk -F: '/rdb_saves_pid/{print $2}')
  B=$(awk '/^Private_Dirty/{print $2}' /proc/$C/smaps_rollup)
  python3 -c "
import random,socket
s=socket.create_connection(('127.0.0.1',$PORT)); r=random.Random(11)
for b in range(10):
    out=b''
    for _ in range(1000):
        k=b'key:%d'%r.randrange(50000); v=b'y'*512
        out+=b'*3\r\n\$3\r\nSET\r\n\$%d\r\n%s\r\n\$512\r\n%s\r\n'%(len(k),k,v)
    s.sendall(out); got=0
    while got<1000: got+=s.recv(65536).count(b'\r\n')
"
  A=$(awk '/^Private_Dirty/{print $2}' /proc/$C/smaps_rollup)
  kill -9 $C
  sleep 1.5
  echo "== $strat: child Private_Dirty grew by $((A-B)) kB during the writes"
  redis-cli -p $PORT info persistence | tr -d '\r' | grep -E "^(tracer_|fork_shared|cow_strategy)"
  kill $P; wait $P || true
  rm -rf $D
done
