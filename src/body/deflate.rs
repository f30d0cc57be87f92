//! `Content-Encoding: deflate` for SIP bodies.
//!
//! In SIP as in HTTP, `deflate` means the zlib format (RFC 1950: 2-byte header, RFC 1951 data,
//! Adler-32 trailer). [`inflate`] takes zlib and falls back to raw RFC 1951 data when the zlib
//! header is absent (some clients get this wrong). [`deflate_zlib`] always writes zlib: raw
//! deflate makes liblinphone 5.1 abort.
//!
//! Inflating streams through a fixed 16 KiB buffer and checks the limits after every chunk, so
//! a decompression bomb costs at most `max_output` bytes of memory and stops as soon as it
//! crosses a limit.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Bounds on what one inflated body may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InflateLimits {
    /// Largest inflated body, in bytes.
    pub max_output: usize,
    /// Largest inflated/compressed size ratio, enforced once the output passes `ratio_floor`
    /// (small bodies legitimately reach high ratios).
    pub max_ratio: usize,
    /// Output size below which the ratio is not checked.
    pub ratio_floor: usize,
}

impl Default for InflateLimits {
    /// 2 MiB out, at most 100:1 past 64 KiB. A 5,000-entry list is about 300 KB inflated and
    /// compresses about 5:1; 100 MB of zeros deflates about 1000:1.
    fn default() -> Self {
        InflateLimits {
            max_output: 2 << 20,
            max_ratio: 100,
            ratio_floor: 64 << 10,
        }
    }
}

/// Why a body could not be inflated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// Over `max_output` or `max_ratio`: answer 413.
    #[error("inflated body too large")]
    TooLarge,
    /// Not zlib nor raw deflate, truncated, bad checksum, trailing bytes: answer 400.
    #[error("corrupt deflate body")]
    Corrupt,
}

impl InflateError {
    /// The SIP status this error maps to.
    pub fn sip_status(&self) -> u16 {
        match self {
            InflateError::TooLarge => 413,
            InflateError::Corrupt => 400,
        }
    }
}

const CHUNK: usize = 16 << 10;

/// Inflates a zlib (or, failing a zlib header, raw deflate) body within `limits`.
/// Data with a zlib-looking header that fails as zlib is retried as raw deflate.
/// Trailing bytes after the end of the stream make the body corrupt.
pub fn inflate(data: &[u8], limits: &InflateLimits) -> Result<Vec<u8>, InflateError> {
    if has_zlib_header(data) {
        match run(data, true, limits) {
            // A raw stream can start with two bytes that happen to look like a zlib header.
            Err(InflateError::Corrupt) => run(data, false, limits),
            other => other,
        }
    } else {
        run(data, false, limits)
    }
}

/// RFC 1950 §2.2: CM = 8, window <= 32 KiB, check bits, and no preset dictionary.
fn has_zlib_header(data: &[u8]) -> bool {
    match data {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8
                && cmf >> 4 <= 7
                && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0
                && flg & 0x20 == 0
        }
        _ => false,
    }
}

fn run(data: &[u8], zlib: bool, limits: &InflateLimits) -> Result<Vec<u8>, InflateError> {
    let mut d = Decompress::new(zlib);
    let mut out = Vec::with_capacity(data.len().saturating_mul(4).min(limits.max_output));
    let mut buf = [0u8; CHUNK];
    loop {
        let consumed = d.total_in() as usize;
        let before_out = d.total_out();
        let status = d
            .decompress(&data[consumed..], &mut buf, FlushDecompress::None)
            .map_err(|_| InflateError::Corrupt)?;
        let produced = (d.total_out() - before_out) as usize;
        check_limits(out.len() + produced, data.len(), limits)?;
        out.extend_from_slice(&buf[..produced]);
        match status {
            Status::StreamEnd if d.total_in() as usize == data.len() => return Ok(out),
            Status::StreamEnd => return Err(InflateError::Corrupt), // trailing bytes
            _ if produced == 0 && d.total_in() as usize == consumed => {
                return Err(InflateError::Corrupt); // truncated: no progress possible
            }
            _ => {}
        }
    }
}

fn check_limits(total: usize, input: usize, l: &InflateLimits) -> Result<(), InflateError> {
    if total > l.max_output {
        return Err(InflateError::TooLarge);
    }
    if total > l.ratio_floor && total / input.max(1) > l.max_ratio {
        return Err(InflateError::TooLarge);
    }
    Ok(())
}

/// Compresses `data` in zlib framing at the fast level, header `78 9c`.
///
/// Fast vs default, measured on a 500-entry / 100-user full state (84 KB raw, see
/// `benches/notify_body.rs`): 6.5 KB in ~120 us vs 5.7 KB in ~420 us. The fast level is used,
/// but the header says `78 9c` like every zlib default stream: its level bits are advisory
/// (RFC 1950 §2.2, "not needed for decompression") and some decoders sniff exactly `78 9c`.
pub fn deflate_zlib(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    deflate_zlib_into(data, &mut out);
    out
}

/// Like [`deflate_zlib`], appending to a reused buffer.
pub fn deflate_zlib_into(data: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    deflate_zlib_level(data, Compression::fast(), out);
    // 0x789c keeps CM/CINFO and the FCHECK rule ((CMF*256 + FLG) % 31 == 0).
    out[start + 1] = 0x9c;
}

/// Zlib at an explicit level (for measurements; production uses [`deflate_zlib`]).
pub fn deflate_zlib_level(data: &[u8], level: Compression, out: &mut Vec<u8>) {
    with_compressor(level, |c| compress_all(c, data, out))
}

thread_local! {
    /// This thread's compressor and its level: a new one allocates and zeroes ~300 KB of
    /// tables, which cost more than compressing a list NOTIFY; `reset` keeps them.
    static COMPRESSOR: std::cell::RefCell<Option<(u32, Compress)>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with a reset zlib compressor at `level`, reused across calls on this thread.
fn with_compressor<R>(level: Compression, f: impl FnOnce(&mut Compress) -> R) -> R {
    COMPRESSOR.with(|cell| {
        let Ok(mut slot) = cell.try_borrow_mut() else { return f(&mut Compress::new(level, true)) };
        match slot.as_mut() {
            Some((l, c)) if *l == level.level() => {
                c.reset();
                f(c)
            }
            _ => f(&mut slot.insert((level.level(), Compress::new(level, true))).1),
        }
    })
}

fn compress_all(c: &mut Compress, data: &[u8], out: &mut Vec<u8>) {
    out.reserve(data.len() / 4 + 64);
    loop {
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&data[consumed..], out, FlushCompress::Finish)
            .expect("deflate into a Vec cannot fail");
        if status == Status::StreamEnd {
            return;
        }
        out.reserve(out.capacity().max(1024));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const FIXTURE: &[u8] = include_bytes!(
        "../../fixtures/liblinphone-5.1/01-subscribe-initial-udp-4numbers-deflate.raw"
    );

    pub(crate) fn fixture_body() -> &'static [u8] {
        let at = FIXTURE.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        &FIXTURE[at..]
    }

    #[test]
    fn fixture_body_is_zlib_and_inflates() {
        let body = fixture_body();
        assert_eq!(body.len(), 226);
        assert_eq!(&body[..2], &[0x78, 0x9c]);
        let xml = inflate(body, &InflateLimits::default()).unwrap();
        let xml = String::from_utf8(xml).unwrap();
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
        assert!(xml.contains("sip:+33711223344@example.org;user=phone"));
    }

    #[test]
    fn round_trip_zlib_header() {
        let data = b"<resource-lists>hello hello hello</resource-lists>".repeat(20);
        let z = deflate_zlib(&data);
        assert_eq!(&z[..2], &[0x78, 0x9c]);
        assert!(has_zlib_header(&z));
        assert_eq!(inflate(&z, &InflateLimits::default()).unwrap(), data);
        let mut d = Vec::new();
        deflate_zlib_level(&data, Compression::default(), &mut d);
        assert_eq!(&d[..2], &[0x78, 0x9c]);
        assert_eq!(inflate(&d, &InflateLimits::default()).unwrap(), data);
    }

    #[test]
    fn raw_deflate_fallback() {
        let data = b"<list><entry uri=\"sip:1@x\"/></list>".repeat(10);
        let mut c = Compress::new(Compression::default(), false);
        let mut raw = Vec::with_capacity(1024);
        c.compress_vec(&data, &mut raw, FlushCompress::Finish)
            .unwrap();
        assert_eq!(inflate(&raw, &InflateLimits::default()).unwrap(), data);
    }

    #[test]
    fn the_reused_compressor_starts_clean_each_time() {
        let (a, b) = (b"first body ".repeat(50), b"second, other body ".repeat(70));
        let once = deflate_zlib(&b);
        for data in [&a, &b, &a] {
            assert_eq!(inflate(&deflate_zlib(data), &InflateLimits::default()).unwrap(), *data);
        }
        let mut best = Vec::new();
        deflate_zlib_level(&b, Compression::best(), &mut best);
        assert_eq!(inflate(&best, &InflateLimits::default()).unwrap(), b);
        assert_eq!(deflate_zlib(&b), once, "a reused compressor writes what a new one writes");
    }

    #[test]
    fn corrupt_inputs() {
        let l = InflateLimits::default();
        assert_eq!(inflate(b"", &l), Err(InflateError::Corrupt));
        assert_eq!(inflate(b"<?xml version", &l), Err(InflateError::Corrupt));
        let z = deflate_zlib(&b"abcdef".repeat(100));
        assert_eq!(inflate(&z[..z.len() - 3], &l), Err(InflateError::Corrupt));
        let mut bad_sum = z.clone();
        *bad_sum.last_mut().unwrap() ^= 1;
        assert_eq!(inflate(&bad_sum, &l), Err(InflateError::Corrupt));
        let mut trailing = z.clone();
        trailing.extend_from_slice(b"xx");
        assert_eq!(inflate(&trailing, &l), Err(InflateError::Corrupt));
        assert_eq!(InflateError::Corrupt.sip_status(), 400);
    }

    #[test]
    fn size_cap() {
        let data = vec![b'a'; 10_000];
        let z = deflate_zlib(&data);
        let l = InflateLimits {
            max_output: 9_999,
            max_ratio: 1_000_000,
            ratio_floor: 0,
        };
        assert_eq!(inflate(&z, &l), Err(InflateError::TooLarge));
        let l = InflateLimits {
            max_output: 10_000,
            ..l
        };
        assert_eq!(inflate(&z, &l).unwrap().len(), 10_000);
        assert_eq!(InflateError::TooLarge.sip_status(), 413);
    }

    #[test]
    fn bomb_of_100_mb_zeros_is_refused() {
        // 100 MB of zeros, compressed in 1 MB steps so the test itself stays cheap.
        let mut c = Compress::new(Compression::fast(), true);
        let zeros = vec![0u8; 1 << 20];
        let mut z = Vec::with_capacity(200 << 10);
        for _ in 0..100 {
            let start = c.total_in();
            while c.total_in() - start < zeros.len() as u64 {
                let done = (c.total_in() - start) as usize;
                z.reserve(4096);
                c.compress_vec(&zeros[done..], &mut z, FlushCompress::None)
                    .unwrap();
            }
        }
        loop {
            z.reserve(4096);
            if c.compress_vec(&[], &mut z, FlushCompress::Finish).unwrap() == Status::StreamEnd {
                break;
            }
        }
        assert!(z.len() < 1 << 20, "bomb is {} bytes", z.len());
        // Ratio check alone (output cap out of the way).
        let l = InflateLimits {
            max_output: usize::MAX,
            ..InflateLimits::default()
        };
        assert_eq!(inflate(&z, &l), Err(InflateError::TooLarge));
        // Output cap alone.
        let l = InflateLimits {
            max_ratio: usize::MAX,
            ..InflateLimits::default()
        };
        assert_eq!(inflate(&z, &l), Err(InflateError::TooLarge));
    }
}
