//! Plain-text traces: SIPp's `-trace_msg` log and sngrep's "save as .txt".
//!
//! SIPp writes, per message, a dashed line with the date, then `UDP message sent (N bytes):`
//! or `TCP message received [N] bytes :`, a blank line and the N bytes. It gives no
//! addresses: the SIPp side is taken from the top Via of its first request and the peer from
//! that request's URI. sngrep writes `YYYY/MM/DD HH:MM:SS.ffffff SRC -> DST` then the
//! message; the transport comes from the top Via.
//!
//! Owns these two formats only; errors name the byte offset of the record.

use super::trace::Proto;
use super::trace::{sip_message, Trace, TraceError, TraceMessage};
use crate::sip::{top_via, Message, Uri};
use std::net::SocketAddr;
use std::time::Duration;

/// One text record before addresses are known.
struct Record {
    time: f64,
    sent: bool,
    proto: Proto,
    data: Vec<u8>,
    offset: u64,
}

/// SIPp `-trace_msg`.
pub fn read_sipp(data: &[u8]) -> Result<Trace, TraceError> {
    let mut records = Vec::new();
    let mut pos = 0;
    while let Some(start) = find_from(data, b"-----", pos) {
        let line_end = find_from(data, b"\n", start).ok_or_else(|| TraceError::at(start as u64, "record cut short"))?;
        let time = parse_time(line_text(data, start, line_end).trim_start_matches('-').trim())
            .ok_or_else(|| TraceError::at(start as u64, "bad date on record line"))?;
        let kind_end = find_from(data, b"\n", line_end + 1).ok_or_else(|| TraceError::at(start as u64, "record cut short"))?;
        let kind = line_text(data, line_end + 1, kind_end);
        let (sent, proto, len) = sipp_kind(&kind).ok_or_else(|| TraceError::at(line_end as u64 + 1, format!("unknown record: {kind}")))?;
        let body_start = kind_end + 2;
        let next = find_from(data, b"\n-----", body_start).map_or(data.len(), |n| n + 1);
        let end = (body_start + len).min(next);
        let bytes = data.get(body_start..end).ok_or_else(|| TraceError::at(start as u64, "record cut short"))?;
        records.push(Record { time, sent, proto, data: bytes.to_vec(), offset: start as u64 });
        pos = next;
    }
    if records.is_empty() {
        return Err(TraceError::at(0, "no SIPp record"));
    }
    let (local, remote) = sipp_endpoints(&records);
    Ok(build(records, |r| if r.sent { (local, remote) } else { (remote, local) }))
}

/// `UDP message sent (511 bytes):` / `TCP message received [309] bytes :`.
fn sipp_kind(line: &str) -> Option<(bool, Proto, usize)> {
    let proto = if line.starts_with("TCP") || line.starts_with("TLS") { Proto::Tcp } else { Proto::Udp };
    let sent = line.contains(" sent ");
    if !sent && !line.contains(" received ") {
        return None;
    }
    let digits: String = line.chars().skip_while(|c| !c.is_ascii_digit()).take_while(char::is_ascii_digit).collect();
    Some((sent, proto, digits.parse().ok()?))
}

/// The SIPp side (sent-by of the first sent request) and its peer (that request's URI).
fn sipp_endpoints(records: &[Record]) -> (SocketAddr, SocketAddr) {
    let fallback: (SocketAddr, SocketAddr) = (([127, 0, 0, 1], 5061).into(), ([127, 0, 0, 1], 5060).into());
    let first = records.iter().filter(|r| r.sent).find_map(|r| match sip_message(&r.data) {
        Some(Message::Request(req)) => Some(req),
        _ => None,
    });
    let Some(req) = first else { return fallback };
    let local = top_via(&req.headers).ok().and_then(|v| hostport(&v.host, v.port)).unwrap_or(fallback.0);
    let remote = Uri::parse(&req.uri).ok().and_then(|u| hostport(&u.host, u.port)).unwrap_or(fallback.1);
    (local, remote)
}

fn hostport(host: &str, port: Option<u16>) -> Option<SocketAddr> {
    let ip = host.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
    Some(SocketAddr::new(ip, port.unwrap_or(5060)))
}

/// sngrep's text export.
pub fn read_sngrep(data: &[u8]) -> Result<Trace, TraceError> {
    let mut records = Vec::new();
    let mut addrs = Vec::new();
    let mut pos = 0;
    let mut pending: Option<(usize, usize, f64, SocketAddr, SocketAddr)> = None;
    while pos < data.len() {
        let end = find_from(data, b"\n", pos).unwrap_or(data.len());
        let line = line_text(data, pos, end);
        if let Some((time, src, dst)) = sngrep_header(&line) {
            if let Some(p) = pending.take() {
                records.push(sngrep_record(data, p.0, p.1, pos, p.2)?);
                addrs.push((p.3, p.4));
            }
            pending = Some((pos, end + 1, time, src, dst));
        }
        pos = end + 1;
    }
    if let Some(p) = pending {
        records.push(sngrep_record(data, p.0, p.1, data.len(), p.2)?);
        addrs.push((p.3, p.4));
    }
    if records.is_empty() {
        return Err(TraceError::at(0, "no sngrep record"));
    }
    let mut i = 0;
    Ok(build(records, |_| {
        i += 1;
        addrs[i - 1]
    }))
}

fn sngrep_record(data: &[u8], offset: usize, start: usize, end: usize, time: f64) -> Result<Record, TraceError> {
    let bytes = data.get(start.min(end)..end).unwrap_or(&[]);
    let msg = cut_by_length(bytes).ok_or_else(|| TraceError::at(offset as u64, "record holds no SIP message"))?;
    let proto = match sip_message(msg).as_ref().and_then(|m| top_via(m.headers()).ok()) {
        Some(v) if !v.transport.eq_ignore_ascii_case("UDP") => Proto::Tcp,
        _ => Proto::Udp,
    };
    Ok(Record { time, sent: false, proto, data: msg.to_vec(), offset: offset as u64 })
}

/// The message in `bytes`: its head and exactly Content-Length body bytes when present.
fn cut_by_length(bytes: &[u8]) -> Option<&[u8]> {
    let (head_end, body_start) = crate::sip::parse::find_header_end(bytes)?;
    let head = String::from_utf8_lossy(&bytes[..head_end]);
    let len = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        let name = name.trim();
        (name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l")).then(|| value.trim().parse::<usize>().ok())?
    });
    let end = len.map_or(bytes.len(), |l| (body_start + l).min(bytes.len()));
    Some(&bytes[..end])
}

/// `2026/11/23 13:30:05.907132 127.0.0.1:5060 -> 127.0.0.1:5090`.
pub fn sngrep_header(line: &str) -> Option<(f64, SocketAddr, SocketAddr)> {
    let mut parts = line.split_whitespace();
    let (date, time, src, arrow, dst) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if arrow != "->" || parts.next().is_some() || !date.contains('/') {
        return None;
    }
    Some((parse_time(&format!("{date} {time}"))?, addr(src)?, addr(dst)?))
}

/// `1.2.3.4:5060`, `[::1]:5060` or `::1:5060`.
fn addr(s: &str) -> Option<SocketAddr> {
    s.parse().ok().or_else(|| {
        let (ip, port) = s.rsplit_once(':')?;
        Some(SocketAddr::new(ip.trim_matches(|c| c == '[' || c == ']').parse().ok()?, port.parse().ok()?))
    })
}

fn build(records: Vec<Record>, mut endpoints: impl FnMut(&Record) -> (SocketAddr, SocketAddr)) -> Trace {
    let first = records.iter().map(|r| r.time).fold(f64::INFINITY, f64::min);
    let mut messages = Vec::new();
    for r in &records {
        let (src, dst) = endpoints(r);
        let Some(message) = sip_message(&r.data) else { continue };
        let at = Duration::from_micros(((r.time - first) * 1e6).round().max(0.0) as u64);
        messages.push(TraceMessage { at, proto: r.proto, src, dst, message, offset: r.offset });
    }
    Trace { messages }
}

/// `YYYY-MM-DD HH:MM:SS.ffffff` (or with `/`) as seconds since 1970.
fn parse_time(s: &str) -> Option<f64> {
    let (date, time) = s.split_once(' ')?;
    let mut d = date.split(['-', '/']).map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.trim().split(':');
    let (h, min, sec) = (t.next()?.parse::<f64>().ok()?, t.next()?.parse::<f64>().ok()?, t.next()?.parse::<f64>().ok()?);
    Some(days_from_civil(y, m, day) as f64 * 86400.0 + h * 3600.0 + min * 60.0 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn find_from(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|p| p + from)
}

fn line_text(data: &[u8], start: usize, end: usize) -> String {
    String::from_utf8_lossy(data.get(start..end).unwrap_or(&[])).trim_end_matches('\r').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIPP: &str = "----------------------------------------------- 2026-11-23 13:30:05.907132\n\
UDP message sent (140 bytes):\n\n\
OPTIONS sip:rls@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK1\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n\n\
----------------------------------------------- 2026-11-23 13:30:05.917132\n\
UDP message received [126] bytes :\n\n\
SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK1\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n\n";

    #[test]
    fn sipp_log_with_addresses_from_the_first_request() {
        let t = read_sipp(SIPP.as_bytes()).unwrap();
        assert_eq!(t.messages.len(), 2);
        let (a, b) = (&t.messages[0], &t.messages[1]);
        assert_eq!(a.src.to_string(), "127.0.0.1:5090");
        assert_eq!(a.dst.to_string(), "127.0.0.1:5060");
        assert_eq!((b.src, b.dst), (a.dst, a.src));
        assert_eq!(b.at.as_millis(), 10);
        assert!(b.offset > 0);
    }

    #[test]
    fn sngrep_export() {
        let text = "2026/11/23 13:30:05.000000 127.0.0.1:5090 -> 127.0.0.1:5060\n\
OPTIONS sip:rls@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5090;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n\n\
2026/11/23 13:30:05.500000 127.0.0.1:5060 -> 127.0.0.1:5090\n\
SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 127.0.0.1:5090;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n\n";
        let t = super::super::read::parse(text.as_bytes()).unwrap();
        assert_eq!(t.messages.len(), 2);
        assert_eq!(t.messages[0].proto, Proto::Tcp);
        assert_eq!(t.messages[1].src.to_string(), "127.0.0.1:5060");
        assert_eq!(t.messages[1].at.as_millis(), 500);
    }

    #[test]
    fn malformed_text_gives_offsets() {
        let bad = "----------------------------------------------- 2026-11-23 13:30:05.9\nUDP message lost\n\n";
        assert_eq!(read_sipp(bad.as_bytes()).unwrap_err().offset, bad.find('\n').unwrap() as u64 + 1);
        assert!(read_sipp(b"----- not a date\n").is_err());
        for cut in 0..SIPP.len() {
            let _ = read_sipp(&SIPP.as_bytes()[..cut]);
        }
    }

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }
}
