//! cargo-fuzz target: see `fuzz/checks/trace_reader.rs` for what it drives and checks
//! (shared with `tests/fuzz_regressions.rs`, which replays `fuzz/regressions/trace_reader/`).
#![no_main]

#[path = "../checks/trace_reader.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
