#!/usr/bin/env bash
# bench/store-save-alone.sh: `snapshot serve` alone (no Redis beside it), on tmpfs:
# DEBUG POPULATE 2000000 key 512, then 5 BGSAVEs (sync and 3 s pause before each),
# timed as bench/store-vs-redis.sh times them (BGSAVE until rdb_bgsave_in_progress:0,
# polled every 10 ms). A check on the save times store-vs-redis.sh measured with
# Redis's dataset resident beside the store's. Port 6405; kills only its own server.
# Environment: SNAP (default target/release/snapshot of this checkout).
set -eu
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SNAP=${SNAP:-$HERE/../target/release/snapshot}
D=$(mktemp -d /dev/shm/alone.XXXXXX)
"$SNAP" serve --port 6405 --save '' --dir "$D" 2>"$D.log" &
P=$!
trap 'kill $P; wait $P; rm -rf "$D" "$D.log"' EXIT
for _ in $(seq 50); do [[ $(redis-cli -p 6405 PING 2>/dev/null) == PONG ]] && break; sleep 0.1; done
redis-cli -p 6405 DEBUG POPULATE 2000000 key 512 >/dev/null
for i in 1 2 3 4 5; do
  sync; sleep 3
  s=$EPOCHREALTIME; redis-cli -p 6405 BGSAVE >/dev/null
  sleep 0.01
  while [[ $(redis-cli -p 6405 INFO persistence | tr -d '\r' | awk -F: '$1=="rdb_bgsave_in_progress"{print $2}') != 0 ]]; do sleep 0.01; done
  e=$EPOCHREALTIME
  echo "save $i: $(python3 -c "print(f'{$e-$s:.2f}')") s fork $(redis-cli -p 6405 INFO stats | tr -d '\r' | awk -F: '$1=="latest_fork_usec"{print $2}') us"
done
grep -i 'saving' "$D.log" | tail -10
