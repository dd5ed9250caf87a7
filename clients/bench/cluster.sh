#!/usr/bin/env bash
# cluster.sh REDIS_PORT PORT [PORT...] -- WSBROKER [ARGS...]
#
# A throwaway wsbroker cluster on loopback for compare.py: a private
# redis-server on 127.0.0.1:REDIS_PORT (no persistence, no disk) and one
# broker per PORT, each started as `WSBROKER ARGS --port PORT --redis
# redis://127.0.0.1:REDIS_PORT`. SIGTERM (or SIGINT) stops the brokers,
# then Redis, and waits for them; if any of them exits on its own, the
# rest are stopped and the script exits 1. Used as a broker command:
#
#   clients/bench/compare.py \
#     --a-name 1-node --a-cmd 'clients/bench/cluster.sh {port3} {port} -- build-test/broker/wsbroker --bind 127.0.0.1 --workers 2' \
#     --b-name 2-nodes --b-cmd 'clients/bench/cluster.sh {port3} {port} {port2} -- build-test/broker/wsbroker --bind 127.0.0.1 --workers 2' \
#     --b-url 'ws://127.0.0.1:{port}/ws ws://127.0.0.1:{port2}/ws'
set -u
usage() { echo "usage: $0 REDIS_PORT PORT [PORT...] -- WSBROKER [ARGS...]" >&2; exit 2; }
[ $# -ge 4 ] || usage
rport=$1; shift
ports=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do ports+=("$1"); shift; done
[ $# -ge 2 ] && [ ${#ports[@]} -ge 1 ] || usage
shift
for p in "$rport" "${ports[@]}"; do
  [[ $p =~ ^[0-9]+$ ]] && [ "$p" -ge 1 ] && [ "$p" -le 65535 ] || { echo "$0: bad port '$p'" >&2; exit 2; }
done
command -v redis-server >/dev/null || { echo "$0: redis-server not found (apt-get install redis-server)" >&2; exit 2; }

rdir=$(mktemp -d /tmp/wsbroker-cluster-XXXXXX)
pids=()
rpid=""
stop() {
  trap - TERM INT
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
  if [ -n "$rpid" ]; then kill -TERM "$rpid" 2>/dev/null; wait "$rpid" 2>/dev/null; fi
  rm -rf "$rdir"
}
trap 'stop; exit 0' TERM INT

redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$rdir" \
  --logfile "$rdir/redis.log" &
rpid=$!
up=""
for _ in $(seq 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$rport") 2>/dev/null; then up=1; break; fi
  sleep 0.05
done
[ -n "$up" ] || { echo "$0: redis-server did not listen on $rport" >&2; stop; exit 1; }

for p in "${ports[@]}"; do
  "$@" --port "$p" --redis "redis://127.0.0.1:$rport" &
  pids+=($!)
done
# Bounded by the caller: compare.py sends SIGTERM after each run.
wait -n "${pids[@]}" "$rpid"
echo "$0: a process of the cluster exited on its own; stopping the rest" >&2
stop
exit 1
