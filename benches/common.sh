# Shared by the load scripts (sourced): the release build of the server and the fan-out
# tool (sets BIN and FAN), a scratch directory (WORK), and a clock.
build_release() {
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
  echo "== building (release)"
  cargo build --release --quiet --bin smart-presence --example fanout
  BIN=$CARGO_TARGET_DIR/release/smart-presence
  FAN=$CARGO_TARGET_DIR/release/examples/fanout
  WORK=$(mktemp -d "/tmp/sp-$1.XXXXXX")
}
now() { date +%s.%N; }
# The [limits] section of a server under load: all of it comes from 127.0.0.1, so no
# per-source or per-account caps. MAX_SUBSCRIPTIONS (default 0: no cap) sizes the node as
# an operator would.
no_load_caps() {
  printf '%s\n' '[limits]' 'requests_per_second = 0' 'max_subscriptions_per_account = 0' \
    'max_subscriptions_per_source = 0' "max_subscriptions = ${MAX_SUBSCRIPTIONS:-0}" 'max_entries_held = 0' 'max_connections_per_source = 0'
}
# A loopback port free for both UDP and TCP.
free_port() {
  python3 - <<'EOF'
import socket
while True:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0)); p = u.getsockname()[1]
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        t.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
EOF
}
# The config of a load-test server on loopback, on stdout: DATA_DIR SIP_PORT ADMIN_PORT
# LOG_LEVEL [TCP_PORT]; no accounts, no load caps. Callers append their own sections.
server_config() {
  local tcp=${5:+"\"127.0.0.1:$5\""}
  cat <<EOF
domain = "example.org"
data_dir = "$1"
log_level = "$4"
[sip]
udp = ["127.0.0.1:$2"]
tcp = [$tcp]
tls = []
[admin]
listen = "127.0.0.1:$3"
[auth]
# SIPp and the tools have no accounts.
mode = "none"
EOF
  no_load_caps
}
# Appends filler bindings (+337 numbers) to the CSV FILE until it has COUNT lines.
fill_bindings() {
  local have; have=$(wc -l < "$1")
  python3 -c "
for i in range(max(0, $2 - $have)):
    print(f'+337{i:08d},sip:f{i}@example.org')
" >> "$1"
}
