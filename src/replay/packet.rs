//! Link, network and transport headers of captured frames, decoded with the `etherparse`
//! crate: Ethernet (with VLAN tags), Linux cooked (SLL, SLL2), BSD loopback and raw IP link
//! types; IPv4 and IPv6; UDP and TCP. Fragmented IPv4 and IPv6 packets are put back together
//! with etherparse's `defrag` buffers, bounded in packets, bytes and capture time.
//!
//! Owns header decoding and IP reassembly. It hands back the payload with its endpoints;
//! cutting TCP streams into SIP messages is `trace.rs`'s job.

use etherparse::defrag::{IpDefragBuf, IpFragId, IpFragVersionSpecId};
use etherparse::{EtherType, IpFragOffset, IpNumber, Ipv6ExtensionSlice, LaxNetSlice, LaxSlicedPacket, PacketBuilder, TcpSlice, UdpSlice};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
pub use super::trace::{Proto, Segment};

/// pcap link types we read (LINKTYPE_* values).
pub const LINK_NULL: u32 = 0;
pub const LINK_ETHERNET: u32 = 1;
pub const LINK_RAW: u32 = 101;
pub const LINK_LOOP: u32 = 108;
pub const LINK_SLL: u32 = 113;
pub const LINK_IPV4: u32 = 228;
pub const LINK_IPV6: u32 = 229;
pub const LINK_SLL2: u32 = 276;

/// Bounds of IP reassembly, so a capture full of lost or forged fragments cannot make the
/// reader hold more than this.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Packets being reassembled at once; beyond, the oldest is given up.
    pub max_packets: usize,
    /// Bytes held by packets being reassembled; beyond, the oldest are given up.
    pub max_bytes: usize,
    /// Seconds of capture time from a packet's first fragment to its last (Linux's
    /// `ipfrag_time` is 30).
    pub timeout: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_packets: 256, max_bytes: 8 << 20, timeout: 30.0 }
    }
}

/// Decodes the frames of one capture in order, reassembling fragmented IP packets.
#[derive(Default)]
pub struct Decoder {
    limits: Limits,
    pending: HashMap<IpFragId, Pending>,
    /// Bytes held by `pending`.
    held: usize,
    /// The last reassembled IP payload (what a returned segment may borrow).
    whole: Vec<u8>,
    given_up: u64,
}

/// A packet being reassembled.
struct Pending {
    buf: IpDefragBuf,
    first_seen: f64,
}

/// The IP layer of a frame: endpoints and payload.
struct Ip<'a> {
    src: IpAddr,
    dst: IpAddr,
    number: IpNumber,
    payload: &'a [u8],
    /// Fragment id, offset and more-fragments flag when the payload is one fragment.
    fragment: Option<(IpFragId, IpFragOffset, bool)>,
    /// The capture cut the packet short.
    incomplete: bool,
}

impl Decoder {
    pub fn new(limits: Limits) -> Decoder {
        Decoder { limits, ..Decoder::default() }
    }

    /// Decodes one frame captured at `time` (seconds). `Ok(None)` for frames that carry no
    /// UDP/TCP payload (ARP, ICMP) and for fragments of a packet not yet complete; the
    /// last fragment gives the whole packet. `Err` names what was cut short or unknown.
    pub fn decode<'a>(&'a mut self, time: f64, link: u32, frame: &'a [u8]) -> Result<Option<Segment<'a>>, String> {
        let sliced = slice_link(link, frame)?;
        let Some(ip) = ip_layer(&sliced) else {
            return match sliced.stop_err {
                Some((e, _)) => Err(e.to_string()),
                None => Ok(None),
            };
        };
        match ip.fragment.clone() {
            None => transport(ip.number, ip.src, ip.dst, ip.payload),
            Some(_) if ip.incomplete => Err("IP fragment cut short by the capture".into()),
            Some((id, offset, more)) => self.reassemble(time, id, offset, more, ip),
        }
    }

    /// Fragmented packets given up so far: timed out, pushed out by the limits, or with
    /// fragments that do not fit together.
    pub fn given_up(&self) -> u64 {
        self.given_up
    }

    /// Fragmented packets still waiting for fragments.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn reassemble<'a>(&'a mut self, time: f64, id: IpFragId, offset: IpFragOffset, more: bool, ip: Ip<'_>) -> Result<Option<Segment<'a>>, String> {
        self.expire(time);
        if !self.pending.contains_key(&id) {
            let needs = usize::from(offset.byte_offset()) + ip.payload.len();
            self.make_room(self.limits.max_packets.saturating_sub(1), needs);
            let buf = IpDefragBuf::new(ip.number, Vec::new(), Vec::new());
            self.pending.insert(id.clone(), Pending { buf, first_seen: time });
        }
        let Some(entry) = self.pending.get_mut(&id) else { return Ok(None) };
        let before = entry.buf.data().len();
        let added = entry.buf.add(offset, more, ip.payload);
        let (after, complete) = (entry.buf.data().len(), entry.buf.is_complete());
        self.held = self.held - before + after;
        if let Err(e) = added {
            self.give_up(&id);
            return Err(format!("IP fragment: {e}"));
        }
        if !complete {
            self.make_room(self.limits.max_packets, 0);
            return Ok(None);
        }
        if let Some(done) = self.pending.remove(&id) {
            self.held -= done.buf.data().len();
            self.whole = done.buf.take_bufs().0;
        }
        transport(ip.number, ip.src, ip.dst, &self.whole)
    }

    /// Gives up packets whose first fragment is older than the timeout.
    fn expire(&mut self, now: f64) {
        let deadline = now - self.limits.timeout;
        let old: Vec<IpFragId> = self.pending.iter().filter(|(_, p)| p.first_seen < deadline).map(|(id, _)| id.clone()).collect();
        for id in old {
            self.give_up(&id);
        }
    }

    /// Gives up the oldest packets until at most `packets` remain and `incoming` more bytes
    /// fit within the byte limit.
    fn make_room(&mut self, packets: usize, incoming: usize) {
        while !self.pending.is_empty() && (self.pending.len() > packets || self.held + incoming > self.limits.max_bytes) {
            let oldest = self.pending.iter().min_by(|a, b| a.1.first_seen.total_cmp(&b.1.first_seen)).map(|(id, _)| id.clone());
            match oldest {
                Some(id) => self.give_up(&id),
                None => break,
            }
        }
    }

    fn give_up(&mut self, id: &IpFragId) {
        if let Some(p) = self.pending.remove(id) {
            self.held -= p.buf.data().len();
            self.given_up += 1;
        }
    }
}

/// Slices a frame from its link header down. The Linux cooked and BSD loopback headers are
/// read here: etherparse has no SLL2 nor loopback reader, and its SLL reader refuses the
/// loopback device's hardware type, which `tcpdump -i any` captures of `lo` carry.
fn slice_link(link: u32, frame: &[u8]) -> Result<LaxSlicedPacket<'_>, String> {
    let (ether_type, rest) = match link {
        LINK_ETHERNET => return LaxSlicedPacket::from_ethernet(frame).map_err(|e| e.to_string()),
        LINK_SLL => (be16(frame, 14)?, tail(frame, 16)?),
        LINK_SLL2 => (be16(frame, 0)?, tail(frame, 20)?),
        LINK_NULL | LINK_LOOP => (family_to_ethertype(frame)?, tail(frame, 4)?),
        LINK_RAW | LINK_IPV4 | LINK_IPV6 => (version_to_ethertype(frame)?, frame),
        other => return Err(format!("unsupported link type {other}")),
    };
    Ok(LaxSlicedPacket::from_ether_type(EtherType(ether_type), rest))
}

fn be16(b: &[u8], at: usize) -> Result<u16, String> {
    b.get(at..at + 2).map(|s| u16::from_be_bytes([s[0], s[1]])).ok_or_else(|| "truncated link header".to_string())
}

fn tail(b: &[u8], from: usize) -> Result<&[u8], String> {
    b.get(from..).ok_or_else(|| "truncated link header".to_string())
}

/// BSD loopback: a 4-byte address family in host order (2 = IPv4; 10, 24, 28, 30 = IPv6).
fn family_to_ethertype(frame: &[u8]) -> Result<u16, String> {
    let b = frame.get(..4).ok_or_else(|| "truncated loopback header".to_string())?;
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
        None => Err("truncated IP header".into()),
    }
}

/// The IP layer of a sliced frame, with its fragment identity if it is a fragment.
fn ip_layer<'a>(sliced: &LaxSlicedPacket<'a>) -> Option<Ip<'a>> {
    let vlan_ids = sliced.vlan_ids();
    match sliced.net.as_ref()? {
        LaxNetSlice::Ipv4(v4) => {
            let (h, payload) = (v4.header(), v4.payload());
            let fragment = payload.fragmented.then(|| {
                let ip = IpFragVersionSpecId::Ipv4 { source: h.source(), destination: h.destination(), identification: h.identification() };
                (IpFragId { vlan_ids, ip, payload_ip_number: payload.ip_number, channel_id: () }, h.fragments_offset(), h.more_fragments())
            });
            let (src, dst) = (IpAddr::V4(h.source_addr()), IpAddr::V4(h.destination_addr()));
            Some(Ip { src, dst, number: payload.ip_number, payload: payload.payload, fragment, incomplete: payload.incomplete })
        }
        LaxNetSlice::Ipv6(v6) => {
            let (h, payload) = (v6.header(), v6.payload());
            let frag = v6.extensions().clone().into_iter().find_map(|e| match e {
                Ipv6ExtensionSlice::Fragment(f) => Some(f),
                _ => None,
            });
            let fragment = frag.filter(|_| payload.fragmented).map(|f| {
                let ip = IpFragVersionSpecId::Ipv6 { source: h.source(), destination: h.destination(), identification: f.identification() };
                (IpFragId { vlan_ids, ip, payload_ip_number: payload.ip_number, channel_id: () }, f.fragment_offset(), f.more_fragments())
            });
            let (src, dst) = (IpAddr::V6(h.source_addr()), IpAddr::V6(h.destination_addr()));
            Some(Ip { src, dst, number: payload.ip_number, payload: payload.payload, fragment, incomplete: payload.incomplete })
        }
        LaxNetSlice::Arp(_) => None,
    }
}

/// The UDP or TCP segment in a whole IP payload; other protocols give `Ok(None)`.
fn transport(number: IpNumber, src: IpAddr, dst: IpAddr, data: &[u8]) -> Result<Option<Segment<'_>>, String> {
    match number {
        IpNumber::UDP => {
            let udp = UdpSlice::from_slice_lax(data).map_err(|e| e.to_string())?;
            let (src, dst) = (SocketAddr::new(src, udp.source_port()), SocketAddr::new(dst, udp.destination_port()));
            Ok(Some(Segment { proto: Proto::Udp, src, dst, seq: 0, syn: false, payload: udp.payload() }))
        }
        IpNumber::TCP => {
            let tcp = TcpSlice::from_slice(data).map_err(|e| e.to_string())?;
            let (src, dst) = (SocketAddr::new(src, tcp.source_port()), SocketAddr::new(dst, tcp.destination_port()));
            Ok(Some(Segment { proto: Proto::Tcp, src, dst, seq: tcp.sequence_number(), syn: tcp.syn(), payload: tcp.payload() }))
        }
        _ => Ok(None),
    }
}

/// Builds an Ethernet + IPv4/IPv6 + UDP/TCP frame (for writing fixtures and tests); an
/// IPv4 address facing an IPv6 one is written IPv4-mapped.
pub fn encode(proto: Proto, src: SocketAddr, dst: SocketAddr, seq: u32, payload: &[u8]) -> Vec<u8> {
    let link = PacketBuilder::ethernet2([0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 2]);
    let ip = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => link.ipv4(s.octets(), d.octets(), 64),
        (s, d) => link.ipv6(v6(s).octets(), v6(d).octets(), 64),
    };
    let mut out = Vec::new();
    let written = match proto {
        Proto::Udp => ip.udp(src.port(), dst.port()).write(&mut out, payload).map_err(|e| e.to_string()),
        Proto::Tcp => ip.tcp(src.port(), dst.port(), seq, 0xffff).psh().ack(0).write(&mut out, payload).map_err(|e| e.to_string()),
    };
    // Only a payload over the IP length limit fails; fixtures and tests never build one.
    if let Err(e) = written {
        tracing::warn!("cannot encode a {}-byte payload: {e}", payload.len());
    }
    out
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{Ethernet2Header, Ipv4Header};

    #[test]
    fn udp_over_ipv4_round_trips() {
        let (a, b) = ("127.0.0.1:5090".parse().unwrap(), "127.0.0.1:5060".parse().unwrap());
        let frame = encode(Proto::Udp, a, b, 0, b"hello");
        let mut d = Decoder::default();
        let seg = d.decode(0.0, LINK_ETHERNET, &frame).unwrap().unwrap();
        assert_eq!((seg.proto, seg.src, seg.dst, seg.payload), (Proto::Udp, a, b, &b"hello"[..]));
    }

    #[test]
    fn tcp_over_ipv6_round_trips() {
        let (a, b) = ("[::1]:40000".parse().unwrap(), "[::1]:5060".parse().unwrap());
        let frame = encode(Proto::Tcp, a, b, 77, b"SIP");
        let mut d = Decoder::default();
        let seg = d.decode(0.0, LINK_ETHERNET, &frame).unwrap().unwrap();
        assert_eq!((seg.proto, seg.src, seg.dst, seg.seq, seg.payload), (Proto::Tcp, a, b, 77, &b"SIP"[..]));
    }

    #[test]
    fn truncated_frames_are_errors_not_panics() {
        let (a, b) = ("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
        let frame = encode(Proto::Tcp, a, b, 1, b"x");
        let mut d = Decoder::default();
        for cut in 0..frame.len() - 1 {
            let _ = d.decode(0.0, LINK_ETHERNET, &frame[..cut]);
            let _ = d.decode(0.0, LINK_RAW, &frame[14..cut.max(14)]);
        }
        assert!(d.decode(0.0, LINK_ETHERNET, &frame[..20]).is_err());
        assert!(d.decode(0.0, 999, &frame).is_err());
    }

    /// Ethernet frames of `payload` (a UDP header and data) cut into IPv4 fragments of
    /// `size` bytes (a multiple of 8).
    fn v4_fragments(id: u16, payload: &[u8], size: usize) -> Vec<Vec<u8>> {
        let chunks: Vec<&[u8]> = payload.chunks(size).collect();
        let last = chunks.len() - 1;
        chunks
            .iter()
            .enumerate()
            .map(|(i, chunk)| {
                let mut ip = Ipv4Header::new(chunk.len() as u16, 64, IpNumber::UDP, [127, 0, 0, 1], [127, 0, 0, 2]).unwrap();
                ip.identification = id;
                ip.more_fragments = i < last;
                ip.fragment_offset = IpFragOffset::try_new((i * size / 8) as u16).unwrap();
                let eth = Ethernet2Header { source: [0; 6], destination: [0; 6], ether_type: EtherType::IPV4 };
                [&eth.to_bytes()[..], &ip.to_bytes()[..], chunk].concat()
            })
            .collect()
    }

    fn udp(data: &[u8]) -> Vec<u8> {
        let frame = encode(Proto::Udp, "127.0.0.1:5070".parse().unwrap(), "127.0.0.2:5060".parse().unwrap(), 0, data);
        frame[34..].to_vec()
    }

    #[test]
    fn ipv4_fragments_in_any_order_give_the_whole_datagram() {
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let mut frags = v4_fragments(7, &udp(&data), 1480);
        frags.swap(0, 2);
        let mut d = Decoder::default();
        for f in &frags[..frags.len() - 1] {
            assert_eq!(d.decode(1.0, LINK_ETHERNET, f).unwrap(), None);
        }
        let seg = d.decode(1.0, LINK_ETHERNET, frags.last().unwrap()).unwrap().unwrap();
        assert_eq!((seg.src.port(), seg.payload), (5070, &data[..]));
        assert_eq!((d.pending(), d.held, d.given_up()), (0, 0, 0));
    }

    #[test]
    fn reassembly_is_bounded_by_time_count_and_bytes() {
        let frags = v4_fragments(1, &udp(&[b'x'; 3000]), 1480);
        let limits = Limits { max_packets: 4, max_bytes: 5000, timeout: 2.0 };
        // Timed out by capture time: the last fragment comes 3 s after the first.
        let mut d = Decoder::new(limits);
        assert_eq!(d.decode(10.0, LINK_ETHERNET, &frags[0]).unwrap(), None);
        assert_eq!(d.decode(13.0, LINK_ETHERNET, &frags[2]).unwrap(), None);
        assert_eq!(d.given_up(), 1);
        // Count: 6 first fragments of distinct packets keep only the newest 4.
        let mut d = Decoder::new(Limits { max_bytes: usize::MAX, timeout: 100.0, ..limits });
        for id in 0..6 {
            let f = v4_fragments(id, &udp(&[b'y'; 3000]), 1480);
            d.decode(f64::from(id), LINK_ETHERNET, &f[0]).unwrap();
        }
        assert_eq!((d.pending(), d.given_up()), (4, 2));
        // Bytes: 5000 bytes hold three 1480-byte fragments, not four.
        let mut d = Decoder::new(Limits { max_packets: 100, timeout: 100.0, ..limits });
        for id in 0..4 {
            let f = v4_fragments(id, &udp(&[b'z'; 3000]), 1480);
            d.decode(f64::from(id), LINK_ETHERNET, &f[0]).unwrap();
        }
        assert_eq!((d.pending(), d.given_up()), (3, 1));
        assert!(d.held <= 5000);
    }

    #[test]
    fn inconsistent_fragments_are_an_error_and_released() {
        let frags = v4_fragments(3, &udp(&[b'x'; 3000]), 1480);
        let mut d = Decoder::default();
        assert_eq!(d.decode(0.0, LINK_ETHERNET, frags.last().unwrap()).unwrap(), None);
        // Another "last" fragment of the same packet, ending elsewhere.
        let other = v4_fragments(3, &udp(&[b'x'; 2992]), 1480);
        assert!(d.decode(0.0, LINK_ETHERNET, other.last().unwrap()).is_err());
        assert_eq!((d.pending(), d.held, d.given_up()), (0, 0, 1));
    }
}
