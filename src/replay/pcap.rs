//! pcap and pcapng captures, read with the `pcap-parser` crate: block framing, timestamps
//! and per-interface link types. Frames go to a `packet::Decoder` for their headers and IP
//! reassembly, and the payloads to the `trace::Collector`.
//!
//! Owns the capture file formats only. A malformed block stops the read with its offset;
//! a frame whose headers do not decode is skipped (captures hold all sorts of traffic), and
//! fragmented packets that could not be put back together are logged once per file.

use super::packet::{self, Decoder};
use super::trace::{Collector, Trace, TraceError};
use pcap_parser::pcapng::Block;
use pcap_parser::traits::PcapNGPacketBlock;
use pcap_parser::PcapError;

type Parsed<'a, T> = Result<(&'a [u8], T), pcap_parser::nom::Err<PcapError<&'a [u8]>>>;

fn offset_of(data: &[u8], rest: &[u8]) -> u64 {
    (data.len() - rest.len()) as u64
}

fn fail<T>(data: &[u8], rest: &[u8], e: pcap_parser::nom::Err<PcapError<&[u8]>>) -> Result<T, TraceError> {
    let what = match e {
        pcap_parser::nom::Err::Incomplete(_) => "truncated block".to_string(),
        pcap_parser::nom::Err::Error(e) | pcap_parser::nom::Err::Failure(e) => format!("malformed block: {e:?}"),
    };
    Err(TraceError::at(offset_of(data, rest), what))
}

/// Legacy pcap: a file header, then records.
pub fn read_pcap(data: &[u8]) -> Result<Trace, TraceError> {
    let (mut rest, header) = match pcap_parser::parse_pcap_header(data) {
        Ok(r) => r,
        Err(e) => return fail(data, data, e),
    };
    let link = header.network.0 as u32;
    let nanos = header.is_nanosecond_precision();
    let mut out = Collector::default();
    let mut decoder = Decoder::default();
    while !rest.is_empty() {
        let parsed: Parsed<'_, _> = if header.is_bigendian() {
            pcap_parser::parse_pcap_frame_be(rest)
        } else {
            pcap_parser::parse_pcap_frame(rest)
        };
        let (next, frame) = match parsed {
            Ok(r) => r,
            Err(e) => return fail(data, rest, e),
        };
        let frac = if nanos { 1e-9 } else { 1e-6 };
        let time = f64::from(frame.ts_sec) + f64::from(frame.ts_usec) * frac;
        if let Ok(Some(seg)) = decoder.decode(time, link, frame.data) {
            out.push(time, offset_of(data, rest), seg);
        }
        rest = next;
    }
    Ok(finish(out, &decoder))
}

/// The trace, with a log line if fragmented packets were lost.
fn finish(out: Collector, decoder: &Decoder) -> Trace {
    let (given_up, pending) = (decoder.given_up(), decoder.pending());
    if given_up + pending as u64 > 0 {
        tracing::warn!(given_up, pending, "fragmented IP packets of the capture could not be reassembled");
    }
    out.finish()
}

/// One pcapng interface: its link type and timestamp unit.
struct Interface {
    link: u32,
    tick: f64,
}

/// pcapng: sections of interfaces and packet blocks, either byte order.
pub fn read_pcapng(data: &[u8]) -> Result<Trace, TraceError> {
    let mut rest = data;
    let mut big_endian = false;
    let mut interfaces: Vec<Interface> = Vec::new();
    let mut out = Collector::default();
    let mut decoder = Decoder::default();
    while !rest.is_empty() {
        let parsed = if rest.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
            pcap_parser::pcapng::parse_sectionheaderblock(rest).map(|(r, shb)| (r, Block::SectionHeader(shb)))
        } else if big_endian {
            pcap_parser::pcapng::parse_block_be(rest)
        } else {
            pcap_parser::pcapng::parse_block_le(rest)
        };
        let (next, block) = match parsed {
            Ok(r) => r,
            Err(e) => return fail(data, rest, e),
        };
        let offset = offset_of(data, rest);
        match block {
            Block::SectionHeader(shb) => {
                big_endian = shb.big_endian();
                interfaces.clear();
            }
            Block::InterfaceDescription(idb) => {
                interfaces.push(Interface { link: idb.linktype.0 as u32, tick: tick(idb.if_tsresol) });
            }
            Block::EnhancedPacket(epb) => {
                let Some(iface) = interfaces.get(epb.if_id as usize) else {
                    return Err(TraceError::at(offset, format!("packet on undeclared interface {}", epb.if_id)));
                };
                let ticks = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                let time = ticks as f64 * iface.tick;
                if let Ok(Some(seg)) = decoder.decode(time, iface.link, epb.packet_data()) {
                    out.push(time, offset, seg);
                }
            }
            Block::SimplePacket(spb) => {
                let Some(iface) = interfaces.first() else {
                    return Err(TraceError::at(offset, "packet before any interface"));
                };
                if let Ok(Some(seg)) = decoder.decode(0.0, iface.link, spb.packet_data()) {
                    out.push(0.0, offset, seg);
                }
            }
            _ => {}
        }
        rest = next;
    }
    Ok(finish(out, &decoder))
}

/// Seconds per timestamp unit from `if_tsresol`: 10^-n, or 2^-n when the top bit is set.
fn tick(resol: u8) -> f64 {
    let n = i32::from(resol & 0x7f);
    if resol & 0x80 == 0 {
        10f64.powi(-n)
    } else {
        2f64.powi(-n)
    }
}

/// Writes a little-endian microsecond pcap of Ethernet frames (for fixtures and tests).
pub fn write_pcap(frames: &[(f64, Vec<u8>)]) -> Vec<u8> {
    write_pcap_link(packet::LINK_ETHERNET, frames)
}

/// Writes a little-endian microsecond pcap of frames of link type `link`.
pub fn write_pcap_link(link: u32, frames: &[(f64, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&link.to_le_bytes());
    for (time, frame) in frames {
        out.extend_from_slice(&(*time as u32).to_le_bytes());
        out.extend_from_slice(&(((time.fract()) * 1e6) as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(frame);
    }
    out
}

/// Writes a little-endian pcapng (one section, one Ethernet interface, microseconds).
pub fn write_pcapng(frames: &[(f64, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut shb = 0x1a2b3c4du32.to_le_bytes().to_vec();
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&(-1i64).to_le_bytes());
    block(&mut out, 0x0a0d0d0a, &shb);
    let mut idb = (packet::LINK_ETHERNET as u16).to_le_bytes().to_vec();
    idb.extend_from_slice(&[0, 0]);
    idb.extend_from_slice(&65535u32.to_le_bytes());
    block(&mut out, 1, &idb);
    for (time, frame) in frames {
        let ticks = (time * 1e6) as u64;
        let mut epb = 0u32.to_le_bytes().to_vec();
        epb.extend_from_slice(&((ticks >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(ticks as u32).to_le_bytes());
        epb.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        epb.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        epb.extend_from_slice(frame);
        while !epb.len().is_multiple_of(4) {
            epb.push(0);
        }
        block(&mut out, 6, &epb);
    }
    out
}

fn block(out: &mut Vec<u8>, kind: u32, body: &[u8]) {
    let len = (12 + body.len()) as u32;
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(&len.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::packet::{encode, Proto};

    const OPTIONS: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n";

    fn frames() -> Vec<(f64, Vec<u8>)> {
        let (a, b) = ("127.0.0.1:5090".parse().unwrap(), "127.0.0.1:5060".parse().unwrap());
        vec![(1000.25, encode(Proto::Udp, a, b, 0, OPTIONS)), (1000.5, encode(Proto::Tcp, b, a, 9, OPTIONS))]
    }

    #[test]
    fn pcap_round_trip() {
        let t = read_pcap(&write_pcap(&frames())).unwrap();
        assert_eq!(t.messages.len(), 2);
        assert_eq!(t.messages[1].proto, Proto::Tcp);
        assert_eq!(t.messages[1].at.as_millis(), 250);
    }

    #[test]
    fn pcapng_round_trip() {
        let t = read_pcapng(&write_pcapng(&frames())).unwrap();
        assert_eq!(t.messages.len(), 2);
        assert_eq!(t.messages[1].at.as_millis(), 250);
    }

    #[test]
    fn truncated_files_give_the_offset() {
        let file = write_pcap(&frames());
        let err = read_pcap(&file[..file.len() - 5]).unwrap_err();
        let second = 24 + 16 + frames()[0].1.len();
        assert_eq!(err.offset, second as u64, "{err}");
        let file = write_pcapng(&frames());
        for cut in 1..file.len() {
            let _ = read_pcapng(&file[..cut]);
        }
        assert!(read_pcapng(&file[..file.len() - 3]).is_err());
    }
}
