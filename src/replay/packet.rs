//! Link, network and transport headers of one captured frame: Ethernet (with VLAN tags),
//! Linux cooked (SLL, SLL2), BSD loopback and raw IP link types; IPv4 and IPv6; UDP and TCP.
//!
//! Owns header decoding only. It hands back the payload with its endpoints; cutting TCP
//! streams into SIP messages is `trace.rs`'s job. IP fragments other than the first are
//! skipped (loopback captures do not fragment below 64 KiB).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The transport a SIP message travelled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Udp => "UDP",
            Proto::Tcp => "TCP",
        }
    }
}

/// A transport payload and where it went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment<'a> {
    pub proto: Proto,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// TCP sequence number of the first payload byte (0 for UDP).
    pub seq: u32,
    /// TCP SYN flag (the stream starts at seq + 1).
    pub syn: bool,
    pub payload: &'a [u8],
}

/// pcap link types we read (LINKTYPE_* values).
pub const LINK_NULL: u32 = 0;
pub const LINK_ETHERNET: u32 = 1;
pub const LINK_RAW: u32 = 101;
pub const LINK_LOOP: u32 = 108;
pub const LINK_SLL: u32 = 113;
pub const LINK_IPV4: u32 = 228;
pub const LINK_IPV6: u32 = 229;
pub const LINK_SLL2: u32 = 276;

/// Decodes one frame. `Ok(None)` for frames that carry no UDP/TCP payload (ARP, ICMP,
/// later fragments, empty TCP segments); `Err` names what was cut short or unknown.
pub fn decode(link: u32, frame: &[u8]) -> Result<Option<Segment<'_>>, String> {
    let (ethertype, ip) = match link {
        LINK_ETHERNET => ethernet(frame)?,
        LINK_SLL => (be16(frame, 14)?, tail(frame, 16)?),
        LINK_SLL2 => (be16(frame, 0)?, tail(frame, 20)?),
        LINK_NULL | LINK_LOOP => (family_to_ethertype(frame)?, tail(frame, 4)?),
        LINK_RAW | LINK_IPV4 | LINK_IPV6 => (version_to_ethertype(frame)?, frame),
        other => return Err(format!("unsupported link type {other}")),
    };
    match ethertype {
        0x0800 => ipv4(ip),
        0x86dd => ipv6(ip),
        _ => Ok(None),
    }
}

fn be16(b: &[u8], at: usize) -> Result<u16, String> {
    b.get(at..at + 2).map(|s| u16::from_be_bytes([s[0], s[1]])).ok_or_else(|| short("header"))
}

fn be32(b: &[u8], at: usize) -> Result<u32, String> {
    b.get(at..at + 4).map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]])).ok_or_else(|| short("header"))
}

fn tail(b: &[u8], from: usize) -> Result<&[u8], String> {
    b.get(from..).ok_or_else(|| short("link header"))
}

fn short(what: &str) -> String {
    format!("truncated {what}")
}

fn ethernet(frame: &[u8]) -> Result<(u16, &[u8]), String> {
    let mut at = 12;
    let mut ethertype = be16(frame, at)?;
    while ethertype == 0x8100 || ethertype == 0x88a8 {
        at += 4;
        ethertype = be16(frame, at)?;
    }
    Ok((ethertype, tail(frame, at + 2)?))
}

/// BSD loopback: a 4-byte address family in host order (2 = IPv4; 24, 28, 30 = IPv6).
fn family_to_ethertype(frame: &[u8]) -> Result<u16, String> {
    let b = frame.get(..4).ok_or_else(|| short("loopback header"))?;
    let family = if b[0] == 0 && b[1] == 0 { u32::from_be_bytes([b[0], b[1], b[2], b[3]]) } else { u32::from_le_bytes([b[0], b[1], b[2], b[3]]) };
    Ok(match family {
        2 => 0x0800,
        10 | 24 | 28 | 30 => 0x86dd,
        _ => 0,
    })
}

fn version_to_ethertype(ip: &[u8]) -> Result<u16, String> {
    match ip.first().map(|b| b >> 4) {
        Some(4) => Ok(0x0800),
        Some(6) => Ok(0x86dd),
        Some(_) => Ok(0),
        None => Err(short("IP header")),
    }
}

fn ipv4(ip: &[u8]) -> Result<Option<Segment<'_>>, String> {
    let ihl = usize::from(ip.first().ok_or_else(|| short("IPv4 header"))? & 0x0f) * 4;
    let total = usize::from(be16(ip, 2)?);
    let frag = be16(ip, 6)?;
    let proto = *ip.get(9).ok_or_else(|| short("IPv4 header"))?;
    let src = ip.get(12..16).ok_or_else(|| short("IPv4 header"))?;
    let dst = ip.get(16..20).ok_or_else(|| short("IPv4 header"))?;
    if ihl < 20 || frag & 0x1fff != 0 {
        return Ok(None);
    }
    // Captures on loopback may show total length 0 (TSO); then take what was captured.
    let end = if total >= ihl { total.min(ip.len()) } else { ip.len() };
    let body = ip.get(ihl..end).ok_or_else(|| short("IPv4 packet"))?;
    let src = IpAddr::V4(Ipv4Addr::new(src[0], src[1], src[2], src[3]));
    let dst = IpAddr::V4(Ipv4Addr::new(dst[0], dst[1], dst[2], dst[3]));
    transport(proto, src, dst, body)
}

fn ipv6(ip: &[u8]) -> Result<Option<Segment<'_>>, String> {
    let payload_len = usize::from(be16(ip, 4)?);
    let mut next = *ip.get(6).ok_or_else(|| short("IPv6 header"))?;
    let src = addr6(ip.get(8..24).ok_or_else(|| short("IPv6 header"))?);
    let dst = addr6(ip.get(24..40).ok_or_else(|| short("IPv6 header"))?);
    let end = (40 + payload_len).min(ip.len());
    let mut at = 40;
    // Skip hop-by-hop, routing and destination options; a fragment header ends the walk.
    while matches!(next, 0 | 43 | 60) {
        next = *ip.get(at).ok_or_else(|| short("IPv6 extension header"))?;
        at += (usize::from(*ip.get(at + 1).ok_or_else(|| short("IPv6 extension header"))?) + 1) * 8;
    }
    let body = ip.get(at..end).ok_or_else(|| short("IPv6 packet"))?;
    transport(next, IpAddr::V6(src), IpAddr::V6(dst), body)
}

fn addr6(b: &[u8]) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(b);
    Ipv6Addr::from(a)
}

fn transport(proto: u8, src: IpAddr, dst: IpAddr, body: &[u8]) -> Result<Option<Segment<'_>>, String> {
    let ports = |b: &[u8]| -> Result<(u16, u16), String> { Ok((be16(b, 0)?, be16(b, 2)?)) };
    match proto {
        17 => {
            let (sp, dp) = ports(body)?;
            let payload = body.get(8..).ok_or_else(|| short("UDP header"))?;
            let len = usize::from(be16(body, 4)?).saturating_sub(8).min(payload.len());
            let seg = Segment { proto: Proto::Udp, src: SocketAddr::new(src, sp), dst: SocketAddr::new(dst, dp), seq: 0, syn: false, payload: &payload[..len] };
            Ok(Some(seg))
        }
        6 => {
            let (sp, dp) = ports(body)?;
            let seq = be32(body, 4)?;
            let offset = usize::from(body.get(12).ok_or_else(|| short("TCP header"))? >> 4) * 4;
            let syn = body.get(13).ok_or_else(|| short("TCP header"))? & 0x02 != 0;
            let payload = body.get(offset..).ok_or_else(|| short("TCP header"))?;
            let seg = Segment { proto: Proto::Tcp, src: SocketAddr::new(src, sp), dst: SocketAddr::new(dst, dp), seq, syn, payload };
            Ok(Some(seg))
        }
        _ => Ok(None),
    }
}

/// Builds an Ethernet + IPv4/IPv6 + UDP/TCP frame (for writing fixtures and tests).
pub fn encode(proto: Proto, src: SocketAddr, dst: SocketAddr, seq: u32, payload: &[u8]) -> Vec<u8> {
    let l4 = transport_header(proto, src.port(), dst.port(), seq, payload.len());
    let mut out = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 2];
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.extend_from_slice(&[0x08, 0x00]);
            let total = (20 + l4.len() + payload.len()) as u16;
            out.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, proto_number(proto), 0, 0]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            out.extend_from_slice(&[0x86, 0xdd]);
            let len = (l4.len() + payload.len()) as u16;
            out.extend_from_slice(&[0x60, 0, 0, 0, (len >> 8) as u8, len as u8, proto_number(proto), 64]);
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
        }
    }
    out.extend_from_slice(&l4);
    out.extend_from_slice(payload);
    out
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

fn proto_number(proto: Proto) -> u8 {
    match proto {
        Proto::Udp => 17,
        Proto::Tcp => 6,
    }
}

fn transport_header(proto: Proto, sp: u16, dp: u16, seq: u32, len: usize) -> Vec<u8> {
    let mut h = Vec::with_capacity(20);
    h.extend_from_slice(&sp.to_be_bytes());
    h.extend_from_slice(&dp.to_be_bytes());
    match proto {
        Proto::Udp => {
            h.extend_from_slice(&((8 + len) as u16).to_be_bytes());
            h.extend_from_slice(&[0, 0]);
        }
        Proto::Tcp => {
            h.extend_from_slice(&seq.to_be_bytes());
            h.extend_from_slice(&[0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_over_ipv4_round_trips() {
        let (a, b) = ("127.0.0.1:5090".parse().unwrap(), "127.0.0.1:5060".parse().unwrap());
        let frame = encode(Proto::Udp, a, b, 0, b"hello");
        let seg = decode(LINK_ETHERNET, &frame).unwrap().unwrap();
        assert_eq!((seg.proto, seg.src, seg.dst, seg.payload), (Proto::Udp, a, b, &b"hello"[..]));
    }

    #[test]
    fn tcp_over_ipv6_round_trips() {
        let (a, b) = ("[::1]:40000".parse().unwrap(), "[::1]:5060".parse().unwrap());
        let frame = encode(Proto::Tcp, a, b, 77, b"SIP");
        let seg = decode(LINK_ETHERNET, &frame).unwrap().unwrap();
        assert_eq!((seg.proto, seg.src, seg.dst, seg.seq, seg.payload), (Proto::Tcp, a, b, 77, &b"SIP"[..]));
    }

    #[test]
    fn truncated_frames_are_errors_not_panics() {
        let (a, b) = ("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
        let frame = encode(Proto::Tcp, a, b, 1, b"x");
        for cut in 0..frame.len() - 1 {
            let _ = decode(LINK_ETHERNET, &frame[..cut]);
            let _ = decode(LINK_RAW, &frame[14..cut.max(14)]);
        }
        assert!(decode(LINK_ETHERNET, &frame[..20]).is_err());
        assert!(decode(999, &frame).is_err());
    }
}
