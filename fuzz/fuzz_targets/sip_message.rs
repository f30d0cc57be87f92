//! cargo-fuzz target: see `fuzz/checks/sip_message.rs` for what it drives and checks (shared with
//! `tests/fuzz_regressions.rs`, which replays `fuzz/regressions/sip_message/`).
#![no_main]

#[path = "../checks/sip_message.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
