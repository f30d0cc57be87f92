#!/usr/bin/env bash
# Cluster-mode benchmark (issue 14), on loopback with a real redis-server and the release
# binary. Sections (functions below, run in this order; each can be skipped):
#   latency  binding-to-NOTIFY across nodes: bind at node A's admin endpoint, a list
#            subscriber at node B (examples/cluster_latency.rs), p50/p99
#   resync   a node's start until ready (its full load of the bindings from Redis) for each
#            size in --sizes, with the node's RSS; Redis is filled with a pipelined import
#
#   bash benches/cluster.sh                          # latency, then resync of 1M
#   bash benches/cluster.sh --sizes "1000000 10000000"
#   bash benches/cluster.sh --skip latency
#
# Options: --sizes "N ..." [1000000], --count N latency samples [300], --skip SECTION
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SIZES="1000000" COUNT=300 SKIP=""
while [ $# -gt 0 ]; do
  case "$1" in
    --sizes) SIZES=$2; shift ;;
    --count) COUNT=$2; shift ;;
    --skip) SKIP="$SKIP $2"; shift ;;
    *) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done
for tool in redis-server redis-cli python3 curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install redis-server python3 curl)" >&2; exit 1; }
done

. "$ROOT/benches/common.sh"

# ---- setup: build, scratch directory, cleanup of everything started here ----------------
setup() {
  build_release cluster
  cargo build --release --quiet --example cluster_latency
  LAT=$CARGO_TARGET_DIR/release/examples/cluster_latency
  PIDS=()
  trap cleanup EXIT
}
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"/redis/*.aof "$WORK"/redis/appendonlydir "$WORK"/n*/data
  echo "(logs of this run: $WORK)"
}

# ---- Redis -------------------------------------------------------------------------------
start_redis() {
  REDIS_PORT=$(free_port)
  mkdir -p "$WORK/redis"
  (cd "$WORK/redis" && exec redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" \
    --appendonly yes --appendfsync everysec --protected-mode no >redis.log 2>&1) &
  PIDS+=($!)
  until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.05; done
}
rcli() { redis-cli -p "$REDIS_PORT" "$@"; }

# Fills Redis with $1 bindings in the layout of src/storage/redis/bindings.rs (HASH sp:b:fwd,
# one SET per URI), pipelined; numbers +33700000000.., one URI each.
load_bindings() {
  local n=$1 t0
  t0=$(now)
  python3 - "$n" <<'EOF' | redis-cli -p "$REDIS_PORT" --pipe >/dev/null
import sys
n = int(sys.argv[1]); out = sys.stdout.buffer; ts = b"1780000000"
def cmd(*args):
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(parts)
step = 1000
for start in range(0, n, step):
    fields = []
    sets = []
    for i in range(start, min(n, start + step)):
        d = b"%d" % (33700000000 + i)
        uri = b"sip:u%d@example.org" % i
        fields += [d, uri + b"\t" + ts + b"\timport"]
        sets.append(cmd(b"SADD", b"sp:b:rev:" + uri, d))
    out.write(cmd(b"HSET", b"sp:b:fwd", *fields))
    out.write(b"".join(sets))
EOF
  echo "   loaded $(rcli hlen sp:b:fwd) bindings into Redis in $(echo "$(now) - $t0" | bc) s ($(rcli info memory | grep '^used_memory_human' | tr -d '\r'))"
}

# ---- nodes -------------------------------------------------------------------------------
# start_node NAME: writes its config and starts it (NODE_PID, NODE_UDP, NODE_ADMIN set).
start_node() {
  local name=$1 dir=$WORK/$1
  mkdir -p "$dir"
  NODE_UDP=$(free_port) NODE_ADMIN=$(free_port)
  cat >"$dir/sp.toml" <<EOF
domain = "example.org"
data_dir = "$dir/data"
[sip]
udp = ["127.0.0.1:$NODE_UDP"]
tcp = []
tls = []
[admin]
listen = "127.0.0.1:$NODE_ADMIN"
[auth]
mode = "none"
[notify]
min_interval_ms = 0
$(no_load_caps)
[cluster]
redis = "redis://127.0.0.1:$REDIS_PORT"
node = "$name"
timeout_ms = 5000
EOF
  "$BIN" serve --config "$dir/sp.toml" >"$dir/server.log" 2>&1 &
  NODE_PID=$!
  PIDS+=($NODE_PID)
}
# Waits until the node's /health/ready answers 200.
wait_ready() {
  until curl -sf "http://127.0.0.1:$1/health/ready" >/dev/null 2>&1; do
    kill -0 "$2" 2>/dev/null || { echo "node exited" >&2; exit 1; }
    sleep 0.02
  done
}
rss_mib() { awk '/^VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
stop_node() { kill "$1"; wait "$1" 2>/dev/null || true; }

# ---- sections ----------------------------------------------------------------------------
section_latency() {
  echo "== binding-to-NOTIFY across nodes ($COUNT bindings, one at a time)"
  rcli flushall >/dev/null
  start_node a; local a_pid=$NODE_PID a_admin=$NODE_ADMIN
  start_node b; local b_pid=$NODE_PID b_udp=$NODE_UDP b_admin=$NODE_ADMIN
  wait_ready "$a_admin" "$a_pid"; wait_ready "$b_admin" "$b_pid"
  echo "   empty node RSS: $(rss_mib "$b_pid") MiB"
  "$LAT" --target "127.0.0.1:$b_udp" --admin "127.0.0.1:$a_admin" --count "$COUNT" | sed 's/^/   /'
  stop_node "$a_pid"; stop_node "$b_pid"
}

section_resync() {
  local size
  for size in $SIZES; do
    echo "== resync of a node: $size bindings"
    rcli flushall >/dev/null
    load_bindings "$size"
    local t0; t0=$(now)
    start_node "r$size"
    wait_ready "$NODE_ADMIN" "$NODE_PID"
    local took; took=$(echo "$(now) - $t0" | bc)
    echo "   start until ready: $took s, node RSS $(rss_mib "$NODE_PID") MiB"
    grep -o 'bindings loaded from Redis.*' "$WORK/r$size/server.log" | sed 's/^/   /' || true
    stop_node "$NODE_PID"
  done
}

setup
start_redis
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); redis $(redis-server --version | grep -o 'v=[^ ]*')"
case " $SKIP " in *" latency "*) ;; *) section_latency ;; esac
case " $SKIP " in *" resync "*) ;; *) section_resync ;; esac
