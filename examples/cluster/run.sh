#!/usr/bin/env bash
# One command, a whole cluster on loopback: redis-server, redis-sentinel watching it,
# three smart-presence nodes (the release binary) and Kamailio's dispatcher in front.
#   examples/cluster/run.sh [RUNDIR]        (default: ./cluster-run)
# Ctrl-C stops everything. Needs Debian's redis-server, redis-sentinel and kamailio, and
# `cargo build --release` (done here if the binary is missing).
#
# Ports (change them below): Kamailio 5060 (UDP/TCP), nodes 5071..5073 (UDP/TCP) with
# admin 8071..8073, Redis 6390, Sentinel 26390. Phones point at 127.0.0.1:5060.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
rundir="$(mkdir -p "${1:-cluster-run}" && cd "${1:-cluster-run}" && pwd)"
LB_PORT=5060 REDIS_PORT=6390 SENTINEL_PORT=26390
NODES=(1 2 3)

for tool in redis-server redis-sentinel kamailio; do
  command -v "$tool" >/dev/null || { echo "$tool not found: apt-get install redis-server redis-sentinel kamailio" >&2; exit 1; }
done
bin="${SMART_PRESENCE_BIN:-$root/target/release/smart-presence}"
[ -x "$bin" ] || (cd "$root" && cargo build --release)

pids=()
stopping=""
stop() {
  trap - INT TERM EXIT
  stopping=1
  echo "stopping..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

# Redis: append-only, fsync every write.
mkdir -p "$rundir/redis"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$rundir/redis" --appendonly yes \
  --appendfsync always --save "" >"$rundir/redis/redis.log" 2>&1 &
pids+=($!)
until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.1; done

# Sentinel: watches the primary as "smart-presence" (quorum 1: one Sentinel on loopback).
cat >"$rundir/sentinel.conf" <<CONF
port $SENTINEL_PORT
bind 127.0.0.1
sentinel monitor smart-presence 127.0.0.1 $REDIS_PORT 1
sentinel down-after-milliseconds smart-presence 2000
sentinel failover-timeout smart-presence 10000
CONF
redis-sentinel "$rundir/sentinel.conf" >"$rundir/sentinel.log" 2>&1 &
pids+=($!)
until redis-cli -p "$SENTINEL_PORT" ping >/dev/null 2>&1; do sleep 0.1; done

# Three nodes, asking Sentinel where the primary is.
for i in "${NODES[@]}"; do
  dir="$rundir/node$i"
  mkdir -p "$dir"
  cat >"$dir/smart-presence.toml" <<CONF
domain = "example.org"
data_dir = "$dir/data"
[sip]
udp = ["127.0.0.1:507$i"]
tcp = ["127.0.0.1:507$i"]
tls = []
[admin]
listen = "127.0.0.1:807$i"
[cluster]
sentinels = ["127.0.0.1:$SENTINEL_PORT"]
master_name = "smart-presence"
node = "node$i"
CONF
  RUST_LOG=info "$bin" serve --config "$dir/smart-presence.toml" 2>"$dir/node.log" &
  pids+=($!)
done

# Kamailio in front.
sed -e "s|@@LB_ADDR@@|127.0.0.1|g" -e "s|@@LB_PORT@@|$LB_PORT|g" \
  -e "s|@@DISPATCHER_LIST@@|$rundir/dispatcher.list|g" "$here/kamailio.cfg" >"$rundir/kamailio.cfg"
cp "$here/dispatcher.list" "$rundir/dispatcher.list"
kamailio -f "$rundir/kamailio.cfg" -DD -E -n 1 -m 32 -M 4 -P "$rundir/kamailio.pid" \
  -Y "$rundir" -w "$rundir" >"$rundir/kamailio.log" 2>&1 &
pids+=($!)

sleep 1
cat <<INFO
smart-presence cluster running (logs in $rundir):
  load balancer (Kamailio)  sip:127.0.0.1:$LB_PORT (UDP, TCP)   <- point the phones here
  node1                     sip:127.0.0.1:5071  admin http://127.0.0.1:8071
  node2                     sip:127.0.0.1:5072  admin http://127.0.0.1:8072
  node3                     sip:127.0.0.1:5073  admin http://127.0.0.1:8073
  Redis                     127.0.0.1:$REDIS_PORT, Sentinel 127.0.0.1:$SENTINEL_PORT
  the nodes and their leases: curl http://127.0.0.1:8071/cluster/nodes
Ctrl-C stops everything.
INFO
wait -n "${pids[@]}" || true
[ -n "$stopping" ] || echo "a process ended; see the logs in $rundir" >&2
