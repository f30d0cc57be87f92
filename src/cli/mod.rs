//! The command-line tools besides `serve` (`src/main.rs` parses and dispatches):
//! `bindings` (the index, through the admin endpoint or on the data directory) and
//! `accounts` (SIP accounts, on the data directory). They use the handles (`Index`,
//! `Accounts`) and the admin endpoint only; they must not open a store's files themselves
//! nor hold server state.

pub mod accounts;
pub mod bindings;
