#!/usr/bin/env bash
# Restart benchmark (issue 13): hold N list subscriptions of 100 numbers, kill the server
# (SIGKILL, or SIGTERM with --clean), start it again on the same data directory, and report
# the start-up time, the time until every subscription has had its resumed NOTIFY, and the
# disk bytes per held subscription. Everything on loopback, on this machine.
#
#   bash benches/restart.sh                 # 100,000 held, SIGKILL
#   bash benches/restart.sh --hold 20000 --clean
#
# Options: --hold N [100000], --rate R resumed NOTIFYs per second [5000], --clean (SIGTERM),
# --profile: flame graphs (perf + inferno, into benches/flamegraphs/) of the node idle while
# it holds them (10 s), of the restarted node loading its store (restart-load) and of it
# resuming them (restart-resume).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
HOLD=100000 RATE=5000 SIGNAL=KILL PROFILE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --hold) HOLD=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --clean) SIGNAL=TERM ;;
    --profile) PROFILE=1 ;;
    *) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done
command -v python3 >/dev/null || { echo "missing python3" >&2; exit 1; }
if [ "$PROFILE" = 1 ]; then
  for tool in perf inferno-collapse-perf inferno-flamegraph; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install linux-perf; cargo install inferno)" >&2; exit 1; }
  done
fi
# record NAME UNTIL PID: records PID under perf until UNTIL (a number of seconds, or a line
# to wait for in the restarted server's log, at most 120 s).
record() {
  if [[ $2 =~ ^[0-9]+$ ]]; then
    perf record -F 499 --call-graph dwarf,16384 -p "$3" -o "$WORK/$1.perf" -- sleep "$2" 2>/dev/null || true
    return
  fi
  # perf stops when its `sleep` ends: the sleep is cut short once the line is logged.
  perf record -F 499 --call-graph dwarf,16384 -p "$3" -o "$WORK/$1.perf" -- sleep 120 2>/dev/null &
  local perf_pid=$!
  until grep -q "$2" "$WORK/server-2.log" 2>/dev/null || ! kill -0 "$perf_pid" 2>/dev/null; do sleep 0.1; done
  pkill -P "$perf_pid" sleep 2>/dev/null || true
  wait "$perf_pid" 2>/dev/null || true
}
# draw NAME TITLE: benches/flamegraphs/NAME.svg from the recording, and the top frames by
# self time (drawing takes a while: done after the recordings, not between them).
draw() {
  mkdir -p "$ROOT/benches/flamegraphs"
  local folded=$ROOT/benches/flamegraphs/$1.folded   # not committed (.gitignore)
  perf script -i "$WORK/$1.perf" 2>/dev/null | inferno-collapse-perf > "$folded"
  inferno-flamegraph --title "$2" < "$folded" > "$ROOT/benches/flamegraphs/$1.svg"
  echo "   benches/flamegraphs/$1.svg; top frames by self time:"
  awk '{n = $NF; $NF = ""; k = split($0, f, ";"); self[f[k]] += n; total += n}
       END {for (s in self) printf "%6.2f%% %s\n", 100 * self[s] / total, s}' "$folded" | sort -rn | head -15 || true
  rm -f "$WORK/$1.perf"
}

. "$ROOT/benches/common.sh"
build_release restart
SP_PID="" FAN_PID=""
cleanup() {
  [ -n "$FAN_PID" ] && kill "$FAN_PID" 2>/dev/null
  [ -n "$SP_PID" ] && kill "$SP_PID" 2>/dev/null && wait "$SP_PID" 2>/dev/null
  rm -rf "$WORK/data"
  echo "(logs of this run: $WORK)"
}
trap cleanup EXIT
free_port() {
  python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

SP_PORT=$(free_port) ADMIN_PORT=$(free_port)
# Sized as an operator would for what it holds (a fifth above it: README, "Sizing").
MAX_SUBSCRIPTIONS=$((HOLD * 6 / 5)) server_config "$WORK/data" "$SP_PORT" "$ADMIN_PORT" info > "$WORK/sp.toml"
printf '%s\n' '[subscription]' "resume_per_second = $RATE" >> "$WORK/sp.toml"

# start LOG: starts the server, waits until it answers OPTIONS; sets SP_PID and STARTUP (s).
start() {
  local t0 t1
  t0=$(now)
  "$BIN" serve --config "$WORK/sp.toml" 2> "$WORK/$1" &
  SP_PID=$!
  python3 - "$SP_PORT" <<'EOF'
import socket, sys, time
port = int(sys.argv[1]); s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.05)
msg = ("OPTIONS sip:rls@example.org SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKup{};rport\r\n"
       "From: <sip:b@example.org>;tag=b\r\nTo: <sip:rls@example.org>\r\nCall-ID: up{}\r\nCSeq: 1 OPTIONS\r\n"
       "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
for i in range(12000):  # up to ~10 min: a million stored subscriptions load for about a minute
    s.sendto(msg.format(i, i).encode(), ("127.0.0.1", port))
    try:
        s.recv(65535); sys.exit(0)
    except socket.timeout:
        pass
sys.exit(1)
EOF
  t1=$(now)
  STARTUP=$(echo "$t1 - $t0" | bc -l)
}

echo "== server on 127.0.0.1:$SP_PORT; holding $HOLD list subscriptions of 100 numbers"
start server-1.log
"$FAN" resume --target "127.0.0.1:$SP_PORT" --count "$HOLD" --lines 1000 --settle 600 --server-pid "$SP_PID" > "$WORK/resume.txt" &
FAN_PID=$!
until grep -q "restart the server now" "$WORK/resume.txt" 2>/dev/null; do sleep 0.5; done
sleep 2.5
grep -E "held|RSS" "$WORK/resume.txt"
sleep 1.5   # past the store's 500 ms write-back
if [ "$PROFILE" = 1 ]; then
  echo "== profile: the node idle, holding them (10 s)"
  record idle-holding 10 "$SP_PID"
  draw idle-holding "idle node holding $HOLD list subscriptions"
fi
STORE_BYTES=$(du -sb "$WORK/data/subscriptions" | cut -f1)
echo "== kill -$SIGNAL, then start again on the same data directory"
T_KILL=$(now)
kill -"$SIGNAL" "$SP_PID"; wait "$SP_PID" 2>/dev/null || true
STORE_BYTES_AFTER=$(du -sb "$WORK/data/subscriptions" | cut -f1)
T_START=$(now)
if [ "$PROFILE" = 1 ]; then
  "$BIN" serve --config "$WORK/sp.toml" 2> "$WORK/server-2.log" &
  SP_PID=$!
  sleep 0.2
  echo "== profile: the restarted node loading its store, then resuming them (paced full-state NOTIFYs)"
  record restart-load "stored subscriptions loaded" "$SP_PID"
  record restart-resume "every stored subscription resumed" "$SP_PID"
  draw restart-load "restarted node: loading $HOLD stored subscriptions"
  draw restart-resume "restarted node: resuming $HOLD stored subscriptions at up to $RATE/s"
  STARTUP=NaN
else
  start server-2.log
fi
wait "$FAN_PID"; FAN_PID=""
# The restarted server's CPU since its exec (user + system ticks of 1/100 s).
SERVER_CPU=$(awk '{sub(/.*\) /, ""); printf "%.1f", ($12 + $13) / 100}' "/proc/$SP_PID/stat")
CLIENT_CPU=$(awk '/client CPU while they resumed/ {print $(NF-1)}' "$WORK/resume.txt")
cat "$WORK/resume.txt" | tail -2 | head -1
read -r FIRST LAST < <(awk '/resumed; first NOTIFY at/ {print $(NF-5), $(NF-2)}' "$WORK/resume.txt" | tr -d ',')
RESUMED=$(awk '/resumed; first NOTIFY at/ {print $2}' "$WORK/resume.txt")
grep -E "stored subscriptions loaded|every stored subscription resumed" "$WORK/server-2.log" | sed 's/^/   server: /'
printf '\n%-58s %s\n' "held subscriptions (100 numbers each):" "$HOLD" \
  "resumed (got a full-state NOTIFY after the restart):" "$RESUMED" \
  "start-up (exec to answering OPTIONS; the store loads on):" "$(printf '%.2f' "$STARTUP") s" \
  "restart to the last resumed NOTIFY (paced at $RATE/s):" "$(printf '%.1f' "$(echo "$LAST - $T_START" | bc -l)") s" \
  "restart to the first resumed NOTIFY:" "$(printf '%.2f' "$(echo "$FIRST - $T_START" | bc -l)") s" \
  "CPU from the restart to the last resumed NOTIFY:" "server ${SERVER_CPU} s, fan-out client ${CLIENT_CPU} s (of $(nproc) cores)" \
  "store on disk per held subscription (record log, du):" "$((STORE_BYTES / HOLD)) bytes (after the kill: $((STORE_BYTES_AFTER / HOLD)))"
