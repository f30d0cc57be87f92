//! cargo-fuzz target: see `fuzz/checks/pidf.rs` for what it drives and checks (shared with
//! `tests/fuzz_regressions.rs`, which replays `fuzz/regressions/pidf/`).
#![no_main]

#[path = "../checks/pidf.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
