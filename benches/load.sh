#!/usr/bin/env bash
# One-command load benchmark of smart-presence, with Kamailio 5.6's presence module as the
# baseline. Everything runs on loopback, on this machine. See BENCHMARKS.md for the method
# and the figures of the last run.
#
#   bash benches/load.sh                     # default run, under ~10 minutes
#   bash benches/load.sh --quick             # smoke run, about 2 minutes
#   bash benches/load.sh --step-secs 10 --max-rate 12000   # longer steps
#
# Needs: sipp (Debian sip-tester), kamailio + kamailio-presence-modules, python3, cargo.
# Options (defaults in brackets):
#   --bindings N     bindings preloaded into the index [100000]
#   --hold N         list subscriptions of 100 numbers held for the memory figure [100000]
#   --fanout N       subscribers of one number for the fan-out figure [10000]
#   --replay-copies N  copies of the recorded list-SUBSCRIBE trace replayed at once [2000]
#   --step-secs S    length of each ramp step [5]
#   --start-rate R   first ramp rate, calls/s [250]; --rate-step R [250]; --max-rate R [8000]
#   --single-start R, --single-step R, --single-max R   the same for both single-presentity
#                    ramps (ours and Kamailio's) [1000, 500, 16000]
#   --transport T    SIPp transport: u1 (UDP) or t1 (TCP) [u1]
#   --no-kamailio    skip the Kamailio baseline
#   --fuzz S         also run every fuzz target for S seconds (fuzz/run.sh) [0: off]
#   --charts DIR     where the ramps' data (ramps.tsv) and charts (PNG, by benches/charts.sh,
#                    needs gnuplot: apt-get install gnuplot-nox) go [$WORK: this run's scratch
#                    directory]; BENCHMARKS.md shows those of benches/charts/
#   --quick          --bindings 20000 --hold 5000 --fanout 2000 --step-secs 3 --rate-step 500
set -euo pipefail
ARGS="$*"
cd "$(dirname "$0")/.."
ROOT=$PWD

BINDINGS=100000 HOLD=100000 FANOUT=10000 REPLAY_COPIES=2000 STEP_SECS=5 START_RATE=250 RATE_STEP=250 MAX_RATE=8000
SINGLE_START=1000 SINGLE_STEP=500 SINGLE_MAX=16000
TRANSPORT=u1 KAMAILIO=1 FUZZ=0 CHARTS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bindings) BINDINGS=$2; shift ;;
    --hold) HOLD=$2; shift ;;
    --fanout) FANOUT=$2; shift ;;
    --replay-copies) REPLAY_COPIES=$2; shift ;;
    --step-secs) STEP_SECS=$2; shift ;;
    --start-rate) START_RATE=$2; shift ;;
    --rate-step) RATE_STEP=$2; shift ;;
    --max-rate) MAX_RATE=$2; shift ;;
    --single-start) SINGLE_START=$2; shift ;;
    --single-step) SINGLE_STEP=$2; shift ;;
    --single-max) SINGLE_MAX=$2; shift ;;
    --transport) TRANSPORT=$2; shift ;;
    --no-kamailio) KAMAILIO=0 ;;
    --fuzz) FUZZ=$2; shift ;;
    --charts) CHARTS=$2; shift ;;
    --quick) BINDINGS=20000 HOLD=5000 FANOUT=2000 REPLAY_COPIES=500 STEP_SECS=3 RATE_STEP=500 ;;
    *) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
  shift
done

for tool in sipp python3 cargo; do
  command -v "$tool" >/dev/null || { echo "missing $tool (sipp: apt-get install sip-tester)" >&2; exit 1; }
done
if [ "$KAMAILIO" = 1 ] && ! command -v kamailio >/dev/null; then
  echo "missing kamailio (apt-get install kamailio kamailio-presence-modules), or pass --no-kamailio" >&2
  exit 1
fi

. "$ROOT/benches/common.sh"
build_release load
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
CHARTS=${CHARTS:-$WORK}
mkdir -p "$CHARTS"
# One row per ramp step, for the charts: the series, the rates, the server's CPU and the
# time to first NOTIFY (SIPp rtd, 1 ms resolution).
RAMPS=$WORK/ramps.raw.tsv
printf '# series\tasked\tachieved\tok\tfailed\tcpu_pct\tnotify_p50_ms\tnotify_p99_ms\n' > "$RAMPS"
SP_PID="" KAM_PID=""
cleanup() {
  [ -n "$SP_PID" ] && kill "$SP_PID" 2>/dev/null && wait "$SP_PID" 2>/dev/null
  [ -n "$KAM_PID" ] && kill "$KAM_PID" 2>/dev/null && wait "$KAM_PID" 2>/dev/null
  # Keep the SIPp logs and outputs of the last run; drop the databases.
  rm -rf "$WORK/data" "$WORK/kamdb" "$WORK"/*.csv
  echo "(SIPp outputs and logs of this run: $WORK)"
}
trap cleanup EXIT


# SIPp's socket buffers default to 64 KB: four 17 KB NOTIFYs. Past ~1,000 list cycles/s the
# kernel then drops NOTIFYs on SIPp's socket (RcvbufErrors in /proc/net/snmp), SIPp's calls
# retransmit and fail, and the ramp stops at the client, not at the server. 4 MiB holds
# ~250 NOTIFYs; the kernel caps it at net.core.rmem_max.
SIPP_BUFF=4194304
RMEM_MAX=$(cat /proc/sys/net/core/rmem_max 2>/dev/null || echo 0)
if [ "$RMEM_MAX" -lt "$SIPP_BUFF" ]; then
  echo "warning: net.core.rmem_max is $RMEM_MAX: SIPp's receive buffer stays below $SIPP_BUFF bytes and" >&2
  echo "         NOTIFYs may be dropped at high rates (sysctl -w net.core.rmem_max=$SIPP_BUFF as root)" >&2
fi
udp_drops() { awk '/^Udp: [0-9]/ {print $6}' /proc/net/snmp; }

CLK_TCK=$(getconf CLK_TCK)
# CPU ticks of a process and its children (Kamailio's workers are its children).
cpu_ticks() {
  local sum=0 p t
  for p in "$1" $(pgrep -P "$1" || true); do
    t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)
    sum=$((sum + ${t:-0}))
  done
  echo "$sum"
}
status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

# sipp_run NAME TARGET RATE CALLS ARGS...: prints "successful failed seconds".
sipp_run() {
  local name=$1 target=$2 rate=$3 calls=$4; shift 4
  local dir=$WORK/sipp/$name port t0 t1 out
  mkdir -p "$dir"
  port=$(free_port)
  t0=$(now)
  out=$(cd "$dir" && sipp -t "${SIPP_T:-$TRANSPORT}" -trace_err -r "$rate" -m "$calls" -i 127.0.0.1 -p "$port" -nostdin \
        -buff_size "$SIPP_BUFF" \
        -recv_timeout 5000 -timeout $((STEP_SECS * 4 + 20))s "$@" "$target" 2>&1 || true)
  t1=$(now)
  echo "$out" > "$dir/stdout.txt"
  local ok failed
  ok=$(echo "$out" | awk -F'|' '/Successful call/ {gsub(/ /, "", $3); print $3; exit}')
  failed=$(echo "$out" | awk -F'|' '/Failed call/ {gsub(/ /, "", $3); print $3; exit}')
  echo "${ok:-0} ${failed:-$calls} $(echo "$t1 - $t0" | bc -l)"
}

# rtt_percentiles DIR: "p50 p99" (ms) of the first_notify rtd in the SIPp rtt files of DIR.
rtt_percentiles() {
  cat "$1"/*_rtt.csv 2>/dev/null | python3 -c "
import sys
v = sorted(float(l.split(';')[1]) for l in sys.stdin if l.strip().endswith(';first_notify'))
pick = lambda p: v[min(len(v) - 1, round(p / 100 * (len(v) - 1)))] if v else float('nan')
print(f'{pick(50):.0f} {pick(99):.0f}')"
}

# ramp NAME TARGET PID START STEP MAX ARGS...: raises the rate until the first failed call
# (or until the achieved rate falls 10% short of the asked one); sets BEST (achieved calls/s
# with no failure), BEST_CPU (server CPU % of one core at that step). Each step is a row of
# $RAMPS.
ramp() {
  local name=$1 target=$2 pid=$3 rate=$4 step=$5 max=$6; shift 6
  BEST=0 BEST_CPU=0
  printf '   %8s %10s %8s %8s %9s %10s %12s\n' "asked/s" "achieved/s" "ok" "failed" "cpu%" "udp drops" "notify p50/p99"
  while [ "$rate" -le "$max" ]; do
    local calls=$((rate * STEP_SECS)) c0 c1 ok failed secs achieved cpu d0 d1 run=$name-$rate p50 p99
    c0=$( [ -n "$pid" ] && cpu_ticks "$pid" || echo 0)
    d0=$(udp_drops)
    read -r ok failed secs < <(sipp_run "$run" "$target" "$rate" "$calls" -trace_rtt -rtt_freq 1 "$@")
    if [ "$failed" = 0 ] && [ "$ok" -lt "$calls" ]; then
      # SIPp sometimes stops early without a failed call on this shared machine: once more.
      echo "   (SIPp stopped after $ok calls at $rate/s without a failure: running the step again)"
      run=$name-$rate-again
      read -r ok failed secs < <(sipp_run "$run" "$target" "$rate" "$calls" -trace_rtt -rtt_freq 1 "$@")
    fi
    c1=$( [ -n "$pid" ] && cpu_ticks "$pid" || echo 0)
    d1=$(udp_drops)
    achieved=$(echo "$ok / $secs" | bc -l)
    cpu=$(echo "($c1 - $c0) * 100 / $CLK_TCK / $secs" | bc -l)
    read -r p50 p99 < <(rtt_percentiles "$WORK/sipp/$run")
    printf '   %8d %10.0f %8d %8d %9.0f %10d %12s\n' "$rate" "$achieved" "$ok" "$failed" "$cpu" "$((d1 - d0))" "$p50/$p99 ms"
    printf '%s\t%d\t%.0f\t%d\t%d\t%.0f\t%s\t%s\n' "$name" "$rate" "$achieved" "$ok" "$failed" "$cpu" "$p50" "$p99" >> "$RAMPS"
    if [ "$failed" != 0 ] || [ "$ok" -lt "$calls" ]; then
      echo "   first failure at $rate/s (SIPp output: $WORK/sipp/$name-$rate, kept until exit)"
      break
    fi
    if [ "$(printf '%.0f' "$achieved")" -gt "$BEST" ]; then
      BEST=$(printf '%.0f' "$achieved") BEST_CPU=$(printf '%.0f' "$cpu")
    fi
    if [ "$(echo "$achieved < $rate * 0.9" | bc -l)" = 1 ]; then
      echo "   achieved rate 10% below the asked one: saturated"
      break
    fi
    rate=$((rate + step))
  done
}

echo "== data: $BINDINGS bindings, lists of 100 and 500 numbers (20% bound)"
python3 examples/sipp/make_lists.py --entries 100 --lines 1000 --bound-every 5 --out "$WORK" >/dev/null
python3 examples/sipp/make_lists.py --entries 500 --lines 200 --bound-every 5 --out "$WORK" >/dev/null
cat "$WORK/bindings100.csv" "$WORK/bindings500.csv" > "$WORK/bindings.csv"
fill_bindings "$WORK/bindings.csv" "$BINDINGS"

SP_PORT=$(free_port) ADMIN_PORT=$(free_port)
server_config "$WORK/data" "$SP_PORT" "$ADMIN_PORT" warn "$SP_PORT" > "$WORK/sp.toml"
cat >> "$WORK/sp.toml" <<EOF
[notify]
# SIPp takes one full-state NOTIFY (it cannot read deflated bodies nor a split state): a
# 100-number state (~17 KB) fits one UDP datagram; 500-number lists run over TCP.
max_body_udp = 65000
EOF
t0=$(now)
"$BIN" bindings --config "$WORK/sp.toml" import "$WORK/bindings.csv" > "$WORK/import.txt" 2> "$WORK/import.err"
echo "   imported in $(printf '%.1f' "$(echo "$(now) - $t0" | bc -l)") s: $(tail -1 "$WORK/import.txt")"

echo "== smart-presence on 127.0.0.1:$SP_PORT (release build)"
"$BIN" serve --config "$WORK/sp.toml" 2> "$WORK/server.log" &
SP_PID=$!
for _ in $(seq 1 50); do
  read -r ok _ _ < <(sipp_run options "127.0.0.1:$SP_PORT" 10 1 -sf "$ROOT"/examples/sipp/options.xml)
  [ "$ok" = 1 ] && break
  sleep 0.2
done
[ "$ok" = 1 ] || { echo "the server does not answer OPTIONS; log:"; cat "$WORK/server.log"; exit 1; }
SP_CPU0=$(cpu_ticks "$SP_PID") SP_T0=$(now)

# First, on the fresh server: RSS grown by a later step would be reused by the held
# subscriptions and hide their cost. They stay held (an hour) for the rest of the run.
echo "== memory: $HOLD list subscriptions of 100 numbers held (RSS after 1 s, and after 35 s when transactions are gone)"
"$FAN" hold --target "127.0.0.1:$SP_PORT" --count "$HOLD" --lines 1000 --server-pid "$SP_PID" --settle 35 | tee "$WORK/hold.txt"
PER_SUB=$(awk '/bytes per subscription/ {v = $(NF-3)} END {print v}' "$WORK/hold.txt")

echo "== list-SUBSCRIBE cycles, 100 numbers ($TRANSPORT), ramp of ${STEP_SECS}s steps"
ramp list100 "127.0.0.1:$SP_PORT" "$SP_PID" "$START_RATE" "$RATE_STEP" "$MAX_RATE" \
  -sf "$ROOT"/examples/sipp/list_subscribe_100.xml -inf "$WORK/lists100.csv"
LIST100=$BEST LIST100_CPU=$BEST_CPU

HALF100=$((LIST100 / 2)); [ "$HALF100" -gt 0 ] || HALF100=50
echo "== time to first NOTIFY, 100 numbers, at $HALF100/s for $((STEP_SECS * 2)) s (SIPp rtd, 1 ms resolution)"
read -r ok failed _ < <(sipp_run rtt100 "127.0.0.1:$SP_PORT" "$HALF100" $((HALF100 * STEP_SECS * 2)) \
  -sf "$ROOT"/examples/sipp/list_subscribe_100.xml -inf "$WORK/lists100.csv" -trace_rtt -rtt_freq 1)
read -r RTT100_50 RTT100_99 < <(rtt_percentiles "$WORK/sipp/rtt100")
echo "   $ok ok, $failed failed; first NOTIFY p50 $RTT100_50 ms, p99 $RTT100_99 ms"

# SIPp cannot take a 500-number state (it reads at most 64 KB and cannot inflate): the
# fanout tool measures this one, offering deflate as phones do.
LAT_RATE=$((LIST100 / 10)); [ "$LAT_RATE" -gt 0 ] || LAT_RATE=50
echo "== time to first NOTIFY, 500 numbers (20% users), at $LAT_RATE/s for $((STEP_SECS * 2)) s (half the 100-number maximum, in numbers/s)"
"$FAN" latency --target "127.0.0.1:$SP_PORT" --count $((LAT_RATE * STEP_SECS * 2)) --entries 500 --lines 200 \
  --rate "$LAT_RATE" | tee "$WORK/latency.txt"
RTT50=$(awk '/first NOTIFY p50/ {print $(NF-7)}' "$WORK/latency.txt")
RTT99=$(awk '/first NOTIFY p50/ {print $(NF-4)}' "$WORK/latency.txt")

echo "== fan-out: $FANOUT subscribers of one number that becomes a user"
"$FAN" fanout --target "127.0.0.1:$SP_PORT" --admin "127.0.0.1:$ADMIN_PORT" --count "$FANOUT" | tee "$WORK/fanout.txt"
FAN_MS=$(awk '/notified; last after/ {print $(NF-7)}' "$WORK/fanout.txt")
FAN_N=$(awk '/notified; last after/ {print $2}' "$WORK/fanout.txt")

echo "== replay: fixtures/replay/list_subscribe_udp.pcap in $REPLAY_COPIES copies, no pauses"
"$BIN" replay fixtures/replay/list_subscribe_udp.pcap --target "127.0.0.1:$SP_PORT" --copies "$REPLAY_COPIES" \
  --speed 0 --quiet | tee "$WORK/replay.txt" || echo "   (the replay differed from the trace)"
REPLAY_RATE=$(awk '/^replay:/ {t = $(NF-1)} /sent SUBSCRIBE/ {n = $NF} END {if (t > 0) printf "%.0f", n / 2 / t; else print 0}' "$WORK/replay.txt")

echo "== single-presentity SUBSCRIBE cycles on smart-presence (1,000 watchers in turn, one presentity)"
SINGLE_ARGS=(-sf "$ROOT"/examples/sipp/subscribe_single.xml -inf "$ROOT"/examples/sipp/watchers.csv -s +33612345678)
ramp single-sp "127.0.0.1:$SP_PORT" "$SP_PID" "$SINGLE_START" "$SINGLE_STEP" "$SINGLE_MAX" "${SINGLE_ARGS[@]}"
SINGLE_SP=$BEST SINGLE_SP_CPU=$BEST_CPU
if [ "$SINGLE_SP" = 0 ]; then
  grep -h -o "SIP/2.0 [0-9]* [A-Za-z ]*" "$WORK"/sipp/single-sp-*/*errors.log 2>/dev/null | sort | uniq -c | head -3 || true
fi

SP_CPU=$(echo "($(cpu_ticks "$SP_PID") - $SP_CPU0) / $CLK_TCK" | bc -l)
SP_WALL=$(echo "$(now) - $SP_T0" | bc -l)
SP_HWM=$(status_kib "$SP_PID" VmHWM)
kill "$SP_PID"; wait "$SP_PID" 2>/dev/null || true; SP_PID=""

SINGLE_KAM=0 SINGLE_KAM_CPU=0
if [ "$KAMAILIO" = 1 ]; then
  KAM_PORT=$(free_port)
  cp -r /usr/share/kamailio/dbtext/kamailio "$WORK/kamdb"
  echo "== Kamailio $(kamailio -v | awk 'NR==1 {print $3}') presence on 127.0.0.1:$KAM_PORT"
  # Its fast allocator (tlsf: the default q_malloc took 28% of its CPU) and 2 GB of shared
  # memory (each transaction holds an 8 KB cell until its timers end: 512 MB ran out at
  # 3,000 cycles/s).
  kamailio -f benches/kamailio/kamailio.cfg -x tlsf -m 2048 -M 16 -DD -E -w "$WORK" -P "$WORK/kam.pid" \
    -l "udp:127.0.0.1:$KAM_PORT" -l "tcp:127.0.0.1:$KAM_PORT" -A "DBURL=\"text://$WORK/kamdb\"" \
    2> "$WORK/kamailio.log" &
  KAM_PID=$!
  sleep 2
  ramp single-kam "127.0.0.1:$KAM_PORT" "$KAM_PID" "$SINGLE_START" "$SINGLE_STEP" "$SINGLE_MAX" "${SINGLE_ARGS[@]}"
  SINGLE_KAM=$BEST SINGLE_KAM_CPU=$BEST_CPU
  kill "$KAM_PID"; wait "$KAM_PID" 2>/dev/null || true; KAM_PID=""
fi

if [ "$FUZZ" != 0 ]; then
  echo "== fuzzing: each target for ${FUZZ}s (fuzz/run.sh)"
  bash "$ROOT/fuzz/run.sh" "$FUZZ" | tee "$WORK/fuzz.txt" || echo "   a fuzz target crashed: see fuzz/artifacts/"
fi

ratio() {
  if [ "$1" = 0 ]; then echo "n/a (smart-presence served no single-presentity cycle)"
  elif [ "$2" != 0 ]; then printf '%.2f\n' "$(echo "$1 / $2" | bc -l)"; else echo "n/a"; fi
}
# CPU per cycle in microseconds, from a rate and the CPU % of one core at that rate.
per_cycle() { if [ "$1" != 0 ]; then printf '%.0f' "$(echo "$2 * 10000 / $1" | bc -l)"; else echo 0; fi; }
SP_US=$(per_cycle "$SINGLE_SP" "$SINGLE_SP_CPU") KAM_US=$(per_cycle "$SINGLE_KAM" "$SINGLE_KAM_CPU")
echo
echo "== summary ($(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo); SIPp on the same machine)"
printf '%-62s %s\n' \
  "100-number list cycles, highest rate with no failed call:" "$LIST100/s (server CPU ${LIST100_CPU}% of one core)" \
  "100-number list cycles driven by the replay tool ($REPLAY_COPIES at once):" "$REPLAY_RATE/s" \
  "time to first NOTIFY, 100 numbers at $HALF100/s (SIPp), p50 / p99:" "$RTT100_50 ms / $RTT100_99 ms" \
  "time to first NOTIFY, 500 numbers at $LAT_RATE/s, p50 / p99:" "$RTT50 ms / $RTT99 ms" \
  "memory per active 100-number list subscription ($HOLD held):" "${PER_SUB:-?} bytes" \
  "fan-out: $FANOUT subscribers of one new user, all notified in:" "${FAN_MS:-?} ms (${FAN_N:-?} notified)" \
  "single-presentity cycles, smart-presence:" "$SINGLE_SP/s ($SP_US µs of CPU per cycle)" \
  "single-presentity cycles, Kamailio presence (in-memory):" "$SINGLE_KAM/s ($KAM_US µs of CPU per cycle)" \
  "ratio smart-presence / Kamailio, cycles per second:" "$(ratio "$SINGLE_SP" "$SINGLE_KAM")" \
  "ratio Kamailio / smart-presence, CPU per cycle:" "$( [ "$SP_US" != 0 ] && [ "$KAM_US" != 0 ] && printf '%.2f' "$(echo "$KAM_US / $SP_US" | bc -l)" || echo n/a)" \
  "server CPU over the whole run:" "$(printf '%.1f' "$SP_CPU") s in $(printf '%.0f' "$SP_WALL") s" \
  "server peak RSS (VmHWM):" "$SP_HWM KiB"

MACHINE="$(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), load average $LOAD0 before the run, $(date -u '+%Y-%m-%d %H:%M UTC'), load.sh $ARGS"
{ echo "# machine: $MACHINE"; cat "$RAMPS"; } > "$CHARTS/ramps.tsv"
if command -v gnuplot >/dev/null; then
  bash "$ROOT/benches/charts.sh" "$CHARTS/ramps.tsv" "$CHARTS"
else
  echo "no charts: gnuplot is missing (apt-get install gnuplot-nox); data in $CHARTS/ramps.tsv" >&2
fi
