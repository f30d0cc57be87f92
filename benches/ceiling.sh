#!/usr/bin/env bash
# The server's ceiling for 100-number list cycles, measured with a client that is not the
# bottleneck (examples/cycles.rs; SIPp saturates first on a 2-core machine): the rate is
# raised step by step, over UDP then TCP, until cycles fail or the first-NOTIFY p99 passes
# 50 ms; each step prints the achieved rate, the latencies, and the CPU per cycle of the
# server and of the client. With --profile, one extra step at --profile-rate runs under
# `perf record` and is drawn as a flame graph (inferno) into benches/flamegraphs/.
#
#   bash benches/ceiling.sh [--start 1000] [--step 1000] [--max 12000] [--seconds 5]
#                           [--entries 100] [--profile --profile-rate 2000]
# Needs python3, cargo; for --profile: perf (Debian linux-perf) and inferno (cargo install inferno).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
START=1000 STEP=1000 MAX=12000 SECONDS_PER_STEP=5 ENTRIES=100 PROFILE=0 PROFILE_RATE=2000
while [ $# -gt 0 ]; do
  case $1 in
    --start) START=$2; shift ;;
    --step) STEP=$2; shift ;;
    --max) MAX=$2; shift ;;
    --seconds) SECONDS_PER_STEP=$2; shift ;;
    --entries) ENTRIES=$2; shift ;;
    --profile) PROFILE=1 ;;
    --profile-rate) PROFILE_RATE=$2; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if [ "$PROFILE" = 1 ]; then
  for tool in perf inferno-collapse-perf inferno-flamegraph; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install linux-perf; cargo install inferno)" >&2; exit 1; }
  done
fi

. "$ROOT/benches/common.sh"
build_release ceiling
cargo build --release --quiet --example cycles
CYC=$CARGO_TARGET_DIR/release/examples/cycles
SP_PID=""
cleanup() {
  [ -n "$SP_PID" ] && kill "$SP_PID" 2>/dev/null && wait "$SP_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

python3 examples/sipp/make_lists.py --entries "$ENTRIES" --lines 1000 --bound-every 5 --out "$WORK" >/dev/null
PORT=$(free_port)
cat > "$WORK/sp.toml" <<EOF
domain = "example.org"
data_dir = "$WORK/data"
log_level = "warn"
[sip]
udp = ["127.0.0.1:$PORT"]
tcp = ["127.0.0.1:$PORT"]
tls = []
[auth]
mode = "none"
EOF
no_load_caps >> "$WORK/sp.toml"
"$BIN" bindings --config "$WORK/sp.toml" import "$WORK/bindings$ENTRIES.csv" > /dev/null
"$BIN" serve --config "$WORK/sp.toml" 2> "$WORK/server.log" &
SP_PID=$!
sleep 1
kill -0 "$SP_PID" 2>/dev/null || { cat "$WORK/server.log"; exit 1; }

# step TRANSPORT RATE: one run; prints the tool's three lines.
step() {
  "$CYC" --target "127.0.0.1:$PORT" --transport "$1" --rate "$2" --seconds "$SECONDS_PER_STEP" \
    --entries "$ENTRIES" --lines 1000 --server-pid "$SP_PID"
}

echo "== machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo); load $(cut -d' ' -f1-3 /proc/loadavg)"
for transport in udp tcp; do
  echo "== $ENTRIES-number list cycles over $transport, ${SECONDS_PER_STEP} s steps"
  rate=$START best=0
  while [ "$rate" -le "$MAX" ]; do
    out=$(step "$transport" "$rate")
    echo "$out" | sed 's/^/   /'
    done_all=$(echo "$out" | awk '/done/ {split($0, a, " done"); n = split(a[1], b, " "); split(b[n], c, "/"); print (c[1] == c[2]) ? 1 : 0}')
    p99=$(echo "$out" | awk '/first NOTIFY p50/ {print $8}')
    if [ "$done_all" != 1 ] || awk -v p="$p99" 'BEGIN {exit !(p > 50)}'; then
      echo "   ceiling over $transport: $best cycles/s asked (next step lost cycles or p99 > 50 ms)"
      break
    fi
    best=$rate
    rate=$((rate + STEP))
  done
done

if [ "$PROFILE" = 1 ]; then
  mkdir -p "$ROOT/benches/flamegraphs"
  echo "== profile: UDP at $PROFILE_RATE/s under perf"
  perf record -F 499 --call-graph dwarf,32768 -p "$SP_PID" -o "$WORK/perf.data" -- sleep "$((SECONDS_PER_STEP + 1))" 2>/dev/null &
  PERF=$!
  step udp "$PROFILE_RATE" | sed 's/^/   /'
  wait "$PERF" || true
  FOLDED=$ROOT/benches/flamegraphs/list-cycles-udp.folded   # not committed (.gitignore)
  perf script -i "$WORK/perf.data" 2>/dev/null | inferno-collapse-perf > "$FOLDED"
  inferno-flamegraph --title "$ENTRIES-number list cycles, UDP, $PROFILE_RATE/s" < "$FOLDED" \
    > "$ROOT/benches/flamegraphs/list-cycles-udp.svg"
  echo "   benches/flamegraphs/list-cycles-udp.svg; top frames by self time:"
  awk '{n = $NF; $NF = ""; k = split($0, f, ";"); self[f[k]] += n; total += n}
       END {for (s in self) printf "%6.2f%% %s\n", 100 * self[s] / total, s}' "$FOLDED" | sort -rn | head -25 || true
fi
if [ "$PROFILE" = 1 ]; then
  echo "   top frames by inclusive time (each stack counted once per frame):"
  awk '{n = $NF; $NF = ""; k = split($0, f, ";"); delete seen
        for (i = 1; i <= k; i++) if (!(f[i] in seen)) {seen[f[i]] = 1; incl[f[i]] += n}; total += n}
       END {for (s in incl) printf "%6.2f%% %s\n", 100 * incl[s] / total, s}' "$FOLDED" | sort -rn | head -60 || true
fi
