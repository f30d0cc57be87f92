#!/usr/bin/env bash
# The whole test suite: installs the real peers the tests use (Debian packages), then runs
# every test target. Works on a fresh Debian 12 machine with a Rust toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests need: package -> a file it installs.
declare -A needs=(
  [sip-tester]=/usr/bin/sipp
  [libxml2-utils]=/usr/bin/xmllint
  [liblinphone-dev]=/usr/include/linphone/core.h
  [kamailio]=/usr/sbin/kamailio
  [kamailio-presence-modules]=/usr/lib/x86_64-linux-gnu/kamailio/modules/presence.so
  [pkg-config]=/usr/bin/pkg-config
  [systemd]=/usr/bin/systemd-analyze
  # tests/metrics.rs: a real Prometheus scraping the server, and promtool (the package may
  # start its own service on :9090; the test runs its own instance on a free port).
  [prometheus]=/usr/bin/prometheus
  # tests/cluster.rs: several nodes sharing a real Redis, with Sentinel for failover (the
  # packages may start their own services on the default ports; the tests use free ones).
  [redis-server]=/usr/bin/redis-server
  [redis-sentinel]=/usr/bin/redis-sentinel
)
missing=()
for pkg in "${!needs[@]}"; do
  [ -e "${needs[$pkg]}" ] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  as_root=""
  [ "$(id -u)" -eq 0 ] || as_root="sudo"
  $as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $as_root apt-get install -y -qq "${missing[@]}"
fi

# A one-off build gains nothing from incremental caches, which double the target directory.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
echo "disk before the build:"; df -h . | tail -1

# Kamailio's package enables its service on install where systemd runs; the tests start
# their own instances on loopback ports, so nothing else is needed.
cargo test --all-targets --no-fail-fast "$@"

# The fuzz targets (fuzz/, a workspace of its own) must keep compiling; `bash fuzz/run.sh`
# runs them. Same target directory, so the dependencies built above are reused.
cargo build --manifest-path fuzz/Cargo.toml --target-dir "${CARGO_TARGET_DIR:-target}"
echo "disk after the build:"; df -h . | tail -1; du -sh "${CARGO_TARGET_DIR:-target}"
