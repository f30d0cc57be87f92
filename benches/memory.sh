#!/usr/bin/env bash
# Memory per held list subscription (issue 18), alone: a fresh release server with the
# bindings `load.sh` imports, then `fanout hold` opens N subscriptions of 100 numbers
# (realistic address books) and reads the server's RSS before, 1 s after, and --settle s
# after (when the transactions are gone). Same method as load.sh's memory step, without
# the rest of its run. Opened at 2,000/s (load.sh: as fast as the tool goes, 4,000/s): on
# a shared machine the faster pace loses datagrams, re-sends and holds fewer.
#
#   bash benches/memory.sh                    # 100,000 held, 35 s settle
#   bash benches/memory.sh --hold 50000       # quicker, while iterating
#   SP_BIN=/path/to/glibc-build bash benches/memory.sh --heaptrack --hold 20000
#       # live heap by allocation site when the server is killed after the settle, in
#       # /tmp/sp-memory-heaptrack/ (heaptrack cannot see mimalloc: build the server with
#       # the system allocator, see BENCHMARKS.md "Memory per held subscription")
#   bash benches/memory.sh --smaps /tmp/sp-smaps
#       # the server's /proc/PID/smaps before the hold and after the settle (which
#       # mappings grew: the allocator's, the thread stacks', the files')
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
HOLD=100000 BINDINGS=100000 SETTLE=35 HEAPTRACK=0 BUILD=1 RATE=2000 SMAPS=
while [ $# -gt 0 ]; do
  case $1 in
    --hold) HOLD=$2; shift ;;
    --bindings) BINDINGS=$2; shift ;;
    --settle) SETTLE=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --heaptrack) HEAPTRACK=1 ;;
    --smaps) SMAPS=$2; shift ;;
    --no-build) BUILD=0 ;;
    *) echo "usage: $0 [--hold N] [--bindings N] [--settle S] [--rate PER_S] [--heaptrack] [--smaps DIR] [--no-build]" >&2; exit 2 ;;
  esac
  shift
done
# shellcheck source=benches/common.sh
. benches/common.sh
if [ "$BUILD" = 1 ]; then
  build_release memory
else
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
  BIN=$CARGO_TARGET_DIR/release/smart-presence FAN=$CARGO_TARGET_DIR/release/examples/fanout
  WORK=$(mktemp -d /tmp/sp-memory.XXXXXX)
fi
BIN=${SP_BIN:-$BIN}
OUT=/tmp/sp-memory-heaptrack
if [ "$HEAPTRACK" = 1 ]; then
  command -v heaptrack >/dev/null || { echo "--heaptrack needs heaptrack: apt-get install heaptrack" >&2; exit 1; }
  rm -rf "$OUT"; mkdir -p "$OUT"
fi
SP_PID=
cleanup() {
  [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null
  [ -n "$SP_PID" ] && kill "$SP_PID" 2>/dev/null && wait "$SP_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

python3 examples/sipp/make_lists.py --entries 100 --lines 1000 --bound-every 5 --out "$WORK" >/dev/null
cp "$WORK/bindings100.csv" "$WORK/bindings.csv"
fill_bindings "$WORK/bindings.csv" "$BINDINGS"
SP_PORT=$(free_port) ADMIN_PORT=$(free_port)
# Sized as an operator would for what it holds (a fifth above it: README, "Sizing").
MAX_SUBSCRIPTIONS=$((HOLD * 6 / 5)) server_config "$WORK/data" "$SP_PORT" "$ADMIN_PORT" warn > "$WORK/sp.toml"
printf '%s\n' '[notify]' 'max_body_udp = 65000' >> "$WORK/sp.toml"
"$BIN" bindings --config "$WORK/sp.toml" import "$WORK/bindings.csv" > "$WORK/import.txt" 2> "$WORK/import.err"

if [ "$HEAPTRACK" = 1 ]; then
  heaptrack -o "$OUT/heaptrack.memory" "$BIN" serve --config "$WORK/sp.toml" 2> "$WORK/server.log" &
else
  "$BIN" serve --config "$WORK/sp.toml" 2> "$WORK/server.log" &
fi
SP_PID=$!
# The server's own pid (heaptrack runs it as a child).
answering() {
  python3 - "$SP_PORT" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.3)
s.bind(("127.0.0.1", 0)); me = s.getsockname()[1]
msg = (f"OPTIONS sip:127.0.0.1:{sys.argv[1]} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKmem1\r\n"
       f"From: <sip:m@example.org>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: mem-probe\r\nCSeq: 1 OPTIONS\r\n"
       "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
s.sendto(msg.encode(), ("127.0.0.1", int(sys.argv[1])))
try:
    s.recv(65535); sys.exit(0)
except OSError:
    sys.exit(1)
EOF
}
for _ in $(seq 1 100); do answering && break; sleep 0.2; done
answering || { echo "the server does not answer OPTIONS; log:"; cat "$WORK/server.log"; exit 1; }
PID=$SP_PID
if [ "$HEAPTRACK" = 1 ]; then PID=$(pgrep -P "$SP_PID" -f " serve --config" | head -1); fi
echo "== $(uptime)"
if [ -n "$SMAPS" ]; then mkdir -p "$SMAPS"; cp "/proc/$PID/smaps" "$SMAPS/before.txt"; fi
echo "== memory: $HOLD list subscriptions of 100 numbers held, $BINDINGS bindings"
"$FAN" hold --target "127.0.0.1:$SP_PORT" --count "$HOLD" --lines 1000 --server-pid "$PID" --settle "$SETTLE" --rate "$RATE"
echo "== $(uptime)"
grep -E 'VmRSS|VmHWM' "/proc/$PID/status"
if [ -n "$SMAPS" ]; then cp "/proc/$PID/smaps" "$SMAPS/after.txt"; echo "smaps: $SMAPS/before.txt, $SMAPS/after.txt"; fi
if [ "$HEAPTRACK" = 1 ]; then
  # Killed, not stopped: what is still allocated shows as leaked, i.e. the live heap now.
  kill -9 "$PID"; wait "$SP_PID" || true; SP_PID=
  heaptrack_print -f "$OUT"/heaptrack.memory.* --print-leaks 1 --print-peaks 0 --print-allocators 0 \
    --print-temporary 0 --flamegraph-cost-type leaked -F "$OUT/stacks.txt" > "$OUT/leaks.txt" 2>&1 || true
  echo "heap profile: $OUT/leaks.txt (by site), $OUT/stacks.txt (flame-graph stacks, bytes live)"
fi
