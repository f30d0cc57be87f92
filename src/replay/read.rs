//! Reading a trace file of any supported format: sniffs the format, then hands the bytes to
//! `pcap.rs` (pcap, pcapng) or `text.rs` (SIPp `-trace_msg`, sngrep text export). Every
//! error names the byte offset in the file where the reader stopped.

use super::trace::{Trace, TraceError};
use std::path::Path;

/// The formats we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Pcap,
    PcapNg,
    SippText,
    SngrepText,
}

/// Reads and parses a trace file.
pub fn read_file(path: &Path) -> anyhow::Result<Trace> {
    let data = std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    parse(&data).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Parses a trace held in memory, whatever its format.
pub fn parse(data: &[u8]) -> Result<Trace, TraceError> {
    match detect(data)? {
        Format::Pcap => super::pcap::read_pcap(data),
        Format::PcapNg => super::pcap::read_pcapng(data),
        Format::SippText => super::text::read_sipp(data),
        Format::SngrepText => super::text::read_sngrep(data),
    }
}

pub fn detect(data: &[u8]) -> Result<Format, TraceError> {
    const PCAP_MAGICS: [[u8; 4]; 4] = [[0xd4, 0xc3, 0xb2, 0xa1], [0xa1, 0xb2, 0xc3, 0xd4], [0x4d, 0x3c, 0xb2, 0xa1], [0xa1, 0xb2, 0x3c, 0x4d]];
    match data.get(..4) {
        Some(m) if PCAP_MAGICS.iter().any(|p| p == m) => return Ok(Format::Pcap),
        Some([0x0a, 0x0d, 0x0d, 0x0a]) => return Ok(Format::PcapNg),
        _ => {}
    }
    let start = String::from_utf8_lossy(&data[..data.len().min(200)]).into_owned();
    let first = start.trim_start().lines().next().unwrap_or("");
    if first.starts_with("----") {
        Ok(Format::SippText)
    } else if super::text::sngrep_header(first).is_some() {
        Ok(Format::SngrepText)
    } else {
        Err(TraceError::at(0, "unknown trace format (expected pcap, pcapng, SIPp -trace_msg or sngrep text)"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn unknown_format_is_an_error() {
        assert_eq!(super::parse(b"hello").unwrap_err().offset, 0);
    }
}
