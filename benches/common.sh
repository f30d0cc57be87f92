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
