//! cargo-fuzz target: see `fuzz/checks/resource_lists.rs` for what it drives and checks (shared with
//! `tests/fuzz_regressions.rs`, which replays `fuzz/regressions/resource_lists/`).
#![no_main]

#[path = "../checks/resource_lists.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
