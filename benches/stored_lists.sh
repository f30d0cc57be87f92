#!/usr/bin/env bash
# Issue 17: stored-list subscription cycles against request-contained 100-number list cycles,
# in the same run, against the release server over UDP with SIPp. Both watch the same 100
# numbers (20% bound): the request-contained cycle sends them in its body
# (examples/sipp/list_subscribe_100.xml), the stored one sends a body-less SUBSCRIBE to
# sip:contacts@127.0.0.1 and the server reads the account's stored book
# (examples/sipp/stored_list_subscribe.xml). Also times the upload of a 2,000-contact book
# over HTTP and reports the bytes the book store takes.
#
#   bash benches/stored_lists.sh                 # 3,000 cycles of each at 500/s
#   CALLS=10000 RATE=1000 bash benches/stored_lists.sh
#
# Reports, per kind: calls, wall time, achieved rate, and the server's CPU per cycle
# (utime+stime from /proc, so the client's share is left out).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source benches/common.sh
CALLS=${CALLS:-3000}
RATE=${RATE:-500}
build_release stored
PORT=$(free_port); ADMIN=$(free_port); API=$(free_port)
cat > "$WORK/sp.toml" <<EOF
domain = "127.0.0.1"
data_dir = "$WORK/data"
log_level = "warn"
[sip]
udp = ["127.0.0.1:$PORT"]
tcp = []
tls = []
[admin]
listen = "127.0.0.1:$ADMIN"
[auth]
mode = "none"
[notify]
max_body_udp = 65000
[provisioning]
listen = "127.0.0.1:$API"
$(no_load_caps)
EOF

python3 examples/sipp/make_lists.py --entries 100 --lines 1 --bound-every 5 --out "$WORK" >/dev/null
"$BIN" bindings --config "$WORK/sp.toml" import "$WORK/bindings100.csv" >/dev/null
# SIPp's list cycle subscribes as sipp<N>@127.0.0.1; the stored one as the account `sipp`.
"$BIN" accounts --config "$WORK/sp.toml" add sipp sipp-pw >/dev/null
"$BIN" serve --config "$WORK/sp.toml" 2> "$WORK/server.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$API/health" >/dev/null && break; sleep 0.1; done

book() {  # a JSON book of the numbers of stdin
  python3 -c 'import json,sys; print(json.dumps({"contacts": [{"number": n, "name": "Contact " + n} for n in sys.stdin.read().split()]}))'
}
put() { curl -sf -X PUT "http://127.0.0.1:$API/v1/contacts" -u sipp:sipp-pw -H 'Content-Type: application/json' --data-binary @"$1"; }
tail -1 "$WORK/lists100.csv" | tr ';' '\n' | book > "$WORK/book100.json"
python3 -c 'print("\n".join(f"+3362{e:07d}" for e in range(2000)))' | book > "$WORK/book2000.json"

echo "== 2,000-contact upload over HTTP (then the 100-number book for the cycles)"
t0=$(now); put "$WORK/book2000.json" > "$WORK/up.json"; t1=$(now)
echo "   answered in $(printf '%.1f' "$(echo "($t1 - $t0) * 1000" | bc -l)") ms: $(cat "$WORK/up.json")"
put "$WORK/book100.json" >/dev/null

cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
ticks=$(getconf CLK_TCK)
cycles() {  # name scenario extra-args...
  local name=$1 scenario=$2; shift 2
  local c0 t0 t1 c1
  c0=$(cpu); t0=$(now)
  (cd "$WORK" && sipp -sf "$ROOT/examples/sipp/$scenario" "$@" -t u1 -r "$RATE" -m "$CALLS" -l 200 \
    -i 127.0.0.1 -buff_size 4194304 -timeout 120s -timeout_error -nostdin -trace_stat \
    "127.0.0.1:$PORT" > "$WORK/$name.out" 2>&1) || { echo "   $name: SIPp failed"; tail -20 "$WORK/$name.out"; exit 1; }
  t1=$(now); c1=$(cpu)
  local ok; ok=$(grep "Successful call" "$WORK/$name.out" | awk -F'|' '{print $3}' | tr -d ' ')
  printf '   %-18s %s calls ok in %.2f s: %.0f/s; server CPU %.0f us per cycle\n' "$name" "$ok" \
    "$(echo "$t1 - $t0" | bc -l)" "$(echo "$ok / ($t1 - $t0)" | bc -l)" \
    "$(echo "($c1 - $c0) / $ticks / $ok * 1000000" | bc -l)"
}
echo "== $CALLS cycles of each at $RATE/s over UDP"
cycles request-contained list_subscribe_100.xml -inf "$WORK/lists100.csv"
cycles stored-list stored_list_subscribe.xml -s sipp -key domain 127.0.0.1
echo "== the book store: $(du -sk "$WORK/data/address-books" | cut -f1) KiB on disk (sled, 2 uploads)"
