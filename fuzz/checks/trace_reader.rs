//! The trace reader of `smart-presence replay` (`replay::read::parse`: pcap, pcapng, SIPp
//! and sngrep text). Invariants: nothing panics on any file; an error names a byte offset
//! inside the input; every message read comes from within the input.

use smart_presence::replay::read;

pub fn check(data: &[u8]) {
    match read::parse(data) {
        Ok(t) => {
            for m in &t.messages {
                assert!(m.offset <= data.len() as u64, "offset {} past the end", m.offset);
            }
        }
        Err(e) => assert!(e.offset <= data.len() as u64, "error offset {} past the end", e.offset),
    }
}
