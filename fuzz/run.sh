#!/usr/bin/env bash
# Short fuzz runs of every target, seeded from fixtures/.
#
#   bash fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60 s, every target)
#
# Builds the targets the way `cargo fuzz build -s none` does (libFuzzer with SanitizerCoverage;
# these -C flags are stable, so no nightly is needed), then runs each one for the given time
# with corpus fuzz/corpus/<target>/ (kept between runs, not committed) over the seeds.
# The layout is cargo-fuzz's: where cargo-fuzz is installed, `RUSTC_BOOTSTRAP=1 cargo fuzz run
# <target>` (in the repository root) should work as well, with AddressSanitizer (not tried
# here: cargo-fuzz is not installed on this machine).
# A crash is saved as fuzz/artifacts/<target>/crash-*: reproduce it with
# `<binary> fuzz/artifacts/<target>/crash-...`, fix it, and keep it as a regression test by
# copying it into fuzz/regressions/<target>/ (tests/fuzz_regressions.rs replays those with
# the same checks, fuzz/checks/<target>.rs). Exit status is non-zero when a target crashed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
secs="${1:-60}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(sip_message resource_lists pidf trace_reader)

host="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="${RUSTFLAGS:-} -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
target_dir="${CARGO_TARGET_DIR:-$here/target}"
# --target keeps RUSTFLAGS off build scripts and proc macros, as cargo-fuzz does.
cargo build --manifest-path "$here/Cargo.toml" --release --target "$host" --target-dir "$target_dir" \
  $(printf -- '--bin %s ' "${targets[@]}")
bin="$target_dir/$host/release"

# Seeds from the captured fixtures: whole messages; their bodies (deflated and plain lists);
# the PIDF documents inside the NOTIFY fixtures.
seeds="$here/seeds"
rm -rf "$seeds"
mkdir -p "$seeds/sip_message" "$seeds/resource_lists" "$seeds/pidf" "$seeds/trace_reader"
cp "$root"/fixtures/replay/*.pcap "$root"/fixtures/replay/*.pcapng "$root"/fixtures/replay/*.log "$seeds/trace_reader/"
for f in "$root"/fixtures/*/*.raw "$root"/fixtures/*/*.txt; do
  [ -e "$f" ] || continue
  name="$(basename "$f")"
  cp "$f" "$seeds/sip_message/$name"
  perl -0777 -ne 'print $1 if /\r?\n\r?\n(.+)\z/s' "$f" > "$seeds/resource_lists/$name"
  perl -0777 -ne '$i = 0; while (/(<presence\b.*?<\/presence>)/gs) { open(my $o, ">", "$ARGV.pidf" . $i++) or die; print $o $1; close $o }' "$f"
  for p in "$f".pidf*; do [ -e "$p" ] && mv "$p" "$seeds/pidf/$(basename "$p")"; done
done
# Saved regressions are seeds too (fuzz/regressions/sip_message/stream-* drive the framer).
for t in sip_message resource_lists pidf trace_reader; do
  for f in "$here/regressions/$t"/*; do if [ -f "$f" ]; then cp "$f" "$seeds/$t/"; fi; done
done
find "$seeds" -type f -empty -delete

status=0
summary=()
for t in "${targets[@]}"; do
  mkdir -p "$here/corpus/$t" "$here/artifacts/$t"
  log="$here/artifacts/$t/last-run.log"
  echo "== $t: ${secs}s"
  set +e
  "$bin/$t" "$here/corpus/$t" "$seeds/$t" -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 \
    -timeout=10 -print_final_stats=1 -artifact_prefix="$here/artifacts/$t/" >"$log" 2>&1
  rc=$?
  set -e
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  crashes="$(find "$here/artifacts/$t" -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' | wc -l)"
  summary+=("$t: ${secs}s, ${runs:-?} executions, exit $rc, artifacts $crashes")
  if [ $rc -ne 0 ]; then
    status=1
    tail -40 "$log"
  fi
done
printf '%s\n' "${summary[@]}"
exit $status
