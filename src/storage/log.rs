//! An append-only file of keyed records: what a write-mostly store keeps on disk when
//! neither random reads nor ordering by key are needed (the held subscriptions). A put or a
//! removal is an entry appended at the end; the last entry of a key wins; a reader walks
//! the file from the start. Nothing of it stays in the process's memory: the kernel's page
//! cache holds the file, where sled kept about a third of what it was written in the heap
//! (BENCHMARKS.md, "Memory per held subscription").
//!
//! Each entry is framed as `[length u32 LE][crc32 u32 LE][kind u8][key length u16 LE][key]
//! [value]`, the length and checksum covering everything after them, behind a 16-byte
//! header (magic, this framing's version, the owner's record layout). A write that a crash
//! cut short leaves a bad last entry: [`Log::open`] cuts the file back to the last whole
//! one, and says how much it dropped.
//!
//! A log grows with every write; its owner rewrites it with only the live entries
//! ([`Log::rewrite`]) when it sees fit. Owns the file format only: which entries are live,
//! and when to rewrite, is the owner's.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::hash::BuildHasher;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"SPLOG\r\n\0";
const FRAMING: u32 = 1;
/// The file's header: entries start here.
pub const HEADER: u64 = 16;
/// Length and checksum in front of each entry.
const FRAME: usize = 8;
/// A log smaller than this is not worth a rewrite.
const MIN_REWRITE: u64 = 8 << 20;
/// An entry longer than this is damage, not a record.
const MAX_ENTRY: u32 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path} is not a record log of this server")]
    NotALog { path: String },
    #[error("{path} has layout {found}, this server reads layout {expected}: move it away or run the matching version")]
    Layout { path: String, found: u32, expected: u32 },
    #[error("{path} is open in another process (two servers on one data directory?)")]
    Locked { path: String },
}

/// What an entry does to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Put,
    Remove,
    /// No key's: a point in the log its owner gives a meaning to (kept by rewrites).
    Mark,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Put => 1,
            Kind::Remove => 2,
            Kind::Mark => 3,
        }
    }

    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Put),
            2 => Some(Kind::Remove),
            3 => Some(Kind::Mark),
            _ => None,
        }
    }
}

/// One entry as read: where it starts, what it does, its key and value.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub offset: u64,
    pub kind: Kind,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

/// The open log, for appending. One writer: its owner serialises the calls.
pub struct Log {
    path: PathBuf,
    file: File,
    layout: u32,
    end: u64,
    /// Entries framed and not yet written.
    buffer: Vec<u8>,
}

/// What opening found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Opened {
    /// Bytes cut off the end: a last entry that a crash left unfinished or damaged.
    pub dropped: u64,
}

impl Log {
    /// Opens the log at `path`, creating it with `layout` if there is none, and cuts off a
    /// damaged end. Refuses a file of another layout or none of ours.
    pub fn open(path: &Path, layout: u32) -> Result<(Log, Opened), LogError> {
        let io = |source| LogError::Io { path: path.display().to_string(), source };
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io)?;
        lock(&file).map_err(|_| LogError::Locked { path: path.display().to_string() })?;
        let size = file.metadata().map_err(io)?.len();
        if size < HEADER {
            // new, or its creation cut short before the header was whole
            file.set_len(0).map_err(io)?;
            file.write_all_at(&header(layout), 0).map_err(io)?;
            file.sync_all().map_err(io)?;
            sync_dir(path).map_err(io)?;
            return Ok((Log { path: path.into(), file, layout, end: HEADER, buffer: Vec::new() }, Opened::default()));
        }
        check_header(&file, path, layout)?;
        let end = Reader { file: file.try_clone().map_err(io)? }.valid_end().map_err(io)?;
        if end < size {
            file.set_len(end).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        Ok((Log { path: path.into(), file, layout, end, buffer: Vec::new() }, Opened { dropped: size - end }))
    }

    /// Where the next entry will start: the log's size once written.
    pub fn end(&self) -> u64 {
        self.end + self.buffer.len() as u64
    }

    /// Frames an entry; [`write`](Self::write) puts it in the file. Refuses a key over
    /// 65,535 bytes or an entry over 64 MiB (a reader would take it for damage).
    pub fn push(&mut self, kind: Kind, key: &[u8], value: &[u8]) -> io::Result<()> {
        if key.len() > usize::from(u16::MAX) || FRAME + 3 + key.len() + value.len() > MAX_ENTRY as usize {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("a record of {} + {} bytes is too large to log", key.len(), value.len())));
        }
        frame(&mut self.buffer, kind, key, value);
        Ok(())
    }

    /// Writes what was pushed, in one call. On an error nothing of it stays in the file,
    /// and it is dropped.
    pub fn write(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let result = self.file.write_all_at(&self.buffer, self.end);
        if result.is_ok() {
            self.end += self.buffer.len() as u64;
        } else {
            let _ = self.file.set_len(self.end); // no half entry for the next write to follow
        }
        self.buffer.clear();
        result
    }

    /// The entry at `offset` of the log as it is now (after a rewrite, the new file), into
    /// `buffer`.
    pub fn read_at<'a>(&self, offset: u64, buffer: &'a mut Vec<u8>) -> io::Result<Entry<'a>> {
        entry_at(&self.file, offset, buffer)
    }

    /// Makes what was written survive a power cut.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// A reader of the log as it is now, on a handle of its own: it goes on reading this
    /// version of the file after a [`rewrite`](Self::rewrite) replaced it.
    pub fn reader(&self) -> io::Result<Reader> {
        Ok(Reader { file: self.file.try_clone()? })
    }

    /// Replaces the log with a copy of the entries at `live` (offsets in this log, in
    /// order), written beside it and renamed over it once synced: a crash leaves one or the
    /// other, whole. Returns where each copied entry now starts, in the same order. On an
    /// error the log is as it was (and the copy deleted); once renamed, it is the copy,
    /// whatever follows.
    pub fn rewrite(&mut self, live: impl IntoIterator<Item = u64>) -> io::Result<Vec<u64>> {
        self.write()?;
        let next = self.path.with_extension("rewrite");
        let copied = self.copy_to(&next, live);
        let (file, offsets) = match copied {
            Ok(done) => done,
            Err(e) => {
                let _ = std::fs::remove_file(&next);
                return Err(e);
            }
        };
        if let Err(e) = std::fs::rename(&next, &self.path) {
            let _ = std::fs::remove_file(&next);
            return Err(e);
        }
        lock(&file)?;
        self.end = file.metadata()?.len();
        self.file = file;
        if let Err(e) = sync_dir(&self.path) {
            tracing::warn!(path = %self.path.display(), "a rewritten log's directory not synced (a power cut could bring the old one back): {e}");
        }
        Ok(offsets)
    }

    /// Writes a log of the entries at `live` to `next`, synced; its handle and offsets.
    fn copy_to(&self, next: &Path, live: impl IntoIterator<Item = u64>) -> io::Result<(File, Vec<u64>)> {
        let reader = self.reader()?;
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(next)?;
        let mut out = io::BufWriter::with_capacity(1 << 20, file);
        out.write_all(&header(self.layout))?;
        let mut at = HEADER;
        let mut offsets = Vec::new();
        let mut entry = Vec::new();
        for offset in live {
            reader.raw_at(offset, &mut entry)?;
            out.write_all(&entry)?;
            offsets.push(at);
            at += entry.len() as u64;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok((file, offsets))
    }
}

/// The entry of `file` at `offset`, into `buffer`.
fn entry_at<'a>(file: &File, offset: u64, buffer: &'a mut Vec<u8>) -> io::Result<Entry<'a>> {
    raw_at(file, offset, buffer)?;
    parse(offset, &buffer[FRAME..]).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("no entry at offset {offset}")))
}

/// The framed entry of `file` at `offset`, checked.
fn raw_at(file: &File, offset: u64, buffer: &mut Vec<u8>) -> io::Result<()> {
    let mut frame = [0u8; FRAME];
    file.read_exact_at(&mut frame, offset)?;
    let (len, crc) = lengths(&frame, offset)?;
    buffer.clear();
    buffer.extend_from_slice(&frame);
    buffer.resize(FRAME + len, 0);
    file.read_exact_at(&mut buffer[FRAME..], offset + FRAME as u64)?;
    check(&buffer[FRAME..], crc, offset)
}

/// Reads a log: from the start ([`scan`](Self::scan)) or one entry where a scan saw it.
pub struct Reader {
    file: File,
}

impl Reader {
    /// A second handle on the same version of the file.
    pub fn try_clone(&self) -> io::Result<Reader> {
        Ok(Reader { file: self.file.try_clone()? })
    }

    /// Walks the entries from the start, in the order they were written.
    pub fn scan(&self) -> Scan<'_> {
        Scan { input: BufReader::with_capacity(1 << 20, At { file: &self.file, pos: HEADER }), offset: HEADER, entry: Vec::new() }
    }

    /// The entry at `offset` (where a scan found it), into `buffer`.
    pub fn read_at<'a>(&self, offset: u64, buffer: &'a mut Vec<u8>) -> io::Result<Entry<'a>> {
        entry_at(&self.file, offset, buffer)
    }

    fn raw_at(&self, offset: u64, buffer: &mut Vec<u8>) -> io::Result<()> {
        raw_at(&self.file, offset, buffer)
    }

    /// Where the whole entries end: the first one cut short or damaged, or the file's end.
    fn valid_end(&self) -> io::Result<u64> {
        let mut scan = self.scan();
        let mut end = HEADER;
        while let Some(entry) = scan.next_entry() {
            match entry {
                Ok(_) => end = scan.offset,
                Err(e) if e.kind() == io::ErrorKind::InvalidData || e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            }
        }
        Ok(end)
    }
}

/// A walk over a log's entries (a lending iterator: each entry borrows the walk).
pub struct Scan<'a> {
    input: BufReader<At<'a>>,
    offset: u64,
    entry: Vec<u8>,
}

/// Reads a file from a position of its own (`pread`): handles that share the file's
/// offset (clones of one another) can scan at once.
struct At<'a> {
    file: &'a File,
    pos: u64,
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Scan<'_> {
    /// The next entry; None at the end; an error of kind `InvalidData` or `UnexpectedEof` for
    /// an entry damaged or cut short (the walk ends there).
    pub fn next_entry(&mut self) -> Option<io::Result<Entry<'_>>> {
        let at = self.offset;
        let mut frame = [0u8; FRAME];
        match read_full(&mut self.input, &mut frame) {
            Ok(0) => return None,
            Ok(n) if n < FRAME => return Some(Err(io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => {}
            Err(e) => return Some(Err(e)),
        }
        let (len, crc) = match lengths(&frame, at) {
            Ok(lc) => lc,
            Err(e) => return Some(Err(e)),
        };
        self.entry.resize(len, 0);
        if let Err(e) = self.input.read_exact(&mut self.entry).and_then(|()| check(&self.entry, crc, at)) {
            return Some(Err(e));
        }
        self.offset = at + (FRAME + len) as u64;
        Some(parse(at, &self.entry).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("damaged entry at offset {at}"))))
    }
}

/// How many entries of a log are live (the last of their key, a put) and dead (replaced,
/// removed, or a removal), as its owner counts them: a rewrite pays once the dead outnumber
/// the live. Pure growth never makes one due.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub live: u64,
    pub dead: u64,
}

impl Tally {
    /// A put, of a key that had a record (`replaced`) or not.
    pub fn put(&mut self, replaced: bool) {
        if replaced {
            self.dead += 1;
        } else {
            self.live += 1;
        }
    }

    /// A removal, of a key that had a record (`existed`) or not.
    pub fn remove(&mut self, existed: bool) {
        self.dead += 1;
        if existed {
            self.live = self.live.saturating_sub(1);
            self.dead += 1;
        }
    }

    /// Whether a log of `size` bytes with these entries is worth rewriting.
    pub fn rewrite_due(&self, size: u64) -> bool {
        size > MIN_REWRITE && self.dead > self.live
    }
}

/// The live entries of a log: the last entry of each key, if a put.
#[derive(Debug, Default)]
pub struct Live {
    /// Where each key's entry starts, by the key's hash. Two keys of one hash (2^-64 a
    /// pair, the hasher keyed per process) count as one: the owner checks a record's key
    /// where that matters.
    pub at: HashMap<u64, u64>,
    /// Where each mark starts, in order.
    pub marks: Vec<u64>,
    pub tally: Tally,
}

impl Live {
    /// The live entries and the marks, in the order of the file (what a rewrite keeps).
    pub fn in_file_order(&self) -> Vec<u64> {
        sorted(self.at.values().chain(&self.marks).copied())
    }

    /// The live entries alone, in the order of the file.
    pub fn records_in_file_order(&self) -> Vec<u64> {
        records_in_file_order(&self.at)
    }
}

/// Where the entries of `at` start, in the order of the file.
pub fn records_in_file_order(at: &HashMap<u64, u64>) -> Vec<u64> {
    sorted(at.values().copied())
}

fn sorted(offsets: impl Iterator<Item = u64>) -> Vec<u64> {
    let mut offsets: Vec<u64> = offsets.collect();
    offsets.sort_unstable();
    offsets
}

/// The live entries of the log `reader` reads.
pub fn live_entries(reader: &Reader, hasher: &RandomState) -> io::Result<Live> {
    let mut live = Live::default();
    let mut scan = reader.scan();
    while let Some(entry) = scan.next_entry() {
        let entry = entry?;
        let hash = || hasher.hash_one(entry.key);
        match entry.kind {
            Kind::Put => live.tally.put(live.at.insert(hash(), entry.offset).is_some()),
            Kind::Remove => live.tally.remove(live.at.remove(&hash()).is_some()),
            Kind::Mark => live.marks.push(entry.offset),
        }
    }
    Ok(live)
}

fn header(layout: u32) -> [u8; HEADER as usize] {
    let mut h = [0u8; HEADER as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&FRAMING.to_le_bytes());
    h[12..].copy_from_slice(&layout.to_le_bytes());
    h
}

fn check_header(file: &File, path: &Path, layout: u32) -> Result<(), LogError> {
    let mut h = [0u8; HEADER as usize];
    if file.read_exact_at(&mut h, 0).is_err() || &h[..8] != MAGIC || h[8..12] != FRAMING.to_le_bytes() {
        return Err(LogError::NotALog { path: path.display().to_string() });
    }
    let found = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
    if found != layout {
        return Err(LogError::Layout { path: path.display().to_string(), found, expected: layout });
    }
    Ok(())
}

/// Frames an entry onto `out` (`push` has checked its sizes).
fn frame(out: &mut Vec<u8>, kind: Kind, key: &[u8], value: &[u8]) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME]);
    out.push(kind.byte());
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    let body = &out[start + FRAME..];
    let (len, crc) = (body.len() as u32, crc32fast::hash(body));
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + FRAME].copy_from_slice(&crc.to_le_bytes());
}

/// The body length and checksum a frame (at `offset`) gives; a length past `MAX_ENTRY` is
/// damage.
fn lengths(frame: &[u8; FRAME], offset: u64) -> io::Result<(usize, u32)> {
    let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
    if len > MAX_ENTRY {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("entry at offset {offset} claims {len} bytes")));
    }
    Ok((len as usize, u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]])))
}

/// Whether an entry's body (at `offset`) matches its frame's checksum.
fn check(body: &[u8], crc: u32, offset: u64) -> io::Result<()> {
    if crc32fast::hash(body) == crc {
        Ok(())
    } else {
        Err(io::Error::new(io::ErrorKind::InvalidData, format!("damaged entry at offset {offset}")))
    }
}

/// An entry's body (after the frame), or None when it does not hold together.
fn parse(offset: u64, body: &[u8]) -> Option<Entry<'_>> {
    let (&kind, rest) = body.split_first()?;
    let kind = Kind::from_byte(kind)?;
    let key_len = u16::from_le_bytes([*rest.first()?, *rest.get(1)?]) as usize;
    let rest = &rest[2..];
    if rest.len() < key_len {
        return None;
    }
    let (key, value) = rest.split_at(key_len);
    Some(Entry { offset, kind, key, value })
}

/// Reads until `buf` is full or the input ends; the count read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Takes the file for this process alone (sled did the same for its database): a second
/// server on the same data directory would otherwise interleave its writes with ours.
/// Waits up to two seconds for a holder that is closing it (the store's own thread lets go
/// of a dropped store after its last batch).
fn lock(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        // SAFETY: flock on a descriptor this File owns; the lock goes with the descriptor.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::WouldBlock || std::time::Instant::now() > until {
            return Err(e);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Makes a file's creation or renaming in its directory survive a power cut.
fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(log: &Log) -> Vec<(Kind, Vec<u8>, Vec<u8>)> {
        let reader = log.reader().unwrap();
        let mut scan = reader.scan();
        let mut out = Vec::new();
        while let Some(e) = scan.next_entry() {
            let e = e.unwrap();
            out.push((e.kind, e.key.to_vec(), e.value.to_vec()));
        }
        out
    }

    #[test]
    fn entries_read_back_in_order_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let (mut log, _) = Log::open(&path, 7).unwrap();
        log.push(Kind::Put, b"a", b"one").unwrap();
        log.push(Kind::Remove, b"b", b"").unwrap();
        log.write().unwrap();
        log.push(Kind::Put, b"", &[0u8; 300]).unwrap();
        log.write().unwrap();
        drop(log);
        let (log, opened) = Log::open(&path, 7).unwrap();
        assert_eq!(opened.dropped, 0);
        let got = entries(&log);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], (Kind::Put, b"a".to_vec(), b"one".to_vec()));
        assert_eq!(got[1], (Kind::Remove, b"b".to_vec(), vec![]));
        assert_eq!(got[2].2.len(), 300);
    }

    #[test]
    fn a_cut_or_damaged_end_is_dropped_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let (mut log, _) = Log::open(&path, 1).unwrap();
        log.push(Kind::Put, b"kept", b"v").unwrap();
        log.write().unwrap();
        let whole = log.end();
        log.push(Kind::Put, b"cut", b"value").unwrap();
        log.write().unwrap();
        drop(log);
        // cut in the middle of the last entry
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(whole + 5).unwrap();
        let (mut log, opened) = Log::open(&path, 1).unwrap();
        assert_eq!(opened.dropped, 5);
        assert_eq!(entries(&log).len(), 1);
        // a damaged byte in a last entry of full length
        log.push(Kind::Put, b"flipped", b"value").unwrap();
        log.write().unwrap();
        drop(log);
        let size = std::fs::metadata(&path).unwrap().len();
        file.write_all_at(b"X", size - 1).unwrap();
        let (log, opened) = Log::open(&path, 1).unwrap();
        assert_eq!(opened.dropped, size - whole);
        assert_eq!(entries(&log)[0].1, b"kept");
        assert_eq!(log.end(), whole);
    }

    #[test]
    fn a_rewrite_is_due_once_dead_entries_outnumber_live_ones_not_for_growth() {
        let big = MIN_REWRITE + 1;
        let mut tally = Tally::default();
        (0..1000).for_each(|_| tally.put(false));
        assert!(!tally.rewrite_due(big), "pure growth");
        (0..400).for_each(|_| tally.put(true));
        tally.remove(true);
        assert_eq!(tally, Tally { live: 999, dead: 402 });
        (0..300).for_each(|_| tally.remove(true));
        assert!(tally.rewrite_due(big) && !tally.rewrite_due(MIN_REWRITE), "{tally:?}");
    }

    #[test]
    fn another_layout_or_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        drop(Log::open(&path, 1).unwrap());
        assert!(matches!(Log::open(&path, 2), Err(LogError::Layout { found: 1, expected: 2, .. })));
        std::fs::write(&path, b"not a log at all, just text").unwrap();
        assert!(matches!(Log::open(&path, 1), Err(LogError::NotALog { .. })));
    }

    #[test]
    fn a_rewrite_keeps_the_live_entries_and_an_old_reader_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let (mut log, _) = Log::open(&path, 1).unwrap();
        for i in 0..10u8 {
            log.push(Kind::Put, &[i], &[i; 50]).unwrap();
        }
        log.write().unwrap();
        let old = log.reader().unwrap();
        let live: Vec<u64> = {
            let mut scan = old.scan();
            let mut offsets = Vec::new();
            while let Some(e) = scan.next_entry() {
                let e = e.unwrap();
                if e.key[0] % 3 == 0 {
                    offsets.push(e.offset);
                }
            }
            offsets
        };
        let moved = log.rewrite(live).unwrap();
        assert_eq!(moved.len(), 4);
        assert_eq!(log.end(), std::fs::metadata(&path).unwrap().len());
        let mut buffer = Vec::new();
        assert_eq!(log.read_at(moved[1], &mut buffer).unwrap().key, [3], "the entries where the rewrite says");
        let keys: Vec<u8> = entries(&log).iter().map(|e| e.1[0]).collect();
        assert_eq!(keys, vec![0, 3, 6, 9]);
        log.push(Kind::Put, b"after", b"x").unwrap();
        log.write().unwrap();
        assert_eq!(entries(&log).len(), 5);
        let mut buffer = Vec::new();
        assert_eq!(old.read_at(HEADER, &mut buffer).unwrap().key, [0], "the old file, still readable");
        drop(log);
        assert_eq!(Log::open(&path, 1).unwrap().1.dropped, 0);
    }
}
