//! Crash test: a child process imports bindings and is killed with SIGKILL mid-import; on
//! reopen every acknowledged binding is there and both directions agree.
//!
//! The child is this same test binary, re-executed with `SP_CRASH_CHILD` set: it then runs
//! only `crash_child`, which imports an endless generated stream and prints `ACK number uri`
//! for each binding once its chunk is durable.

use smart_presence::index::{Format, ImportOptions, Index};
use smart_presence::numbers::E164;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

/// Distinct numbers in the stream: line i binds number BASE + i % NUMBERS to `sip:u{i}@x`,
/// so numbers are re-bound over and over (exercising the reverse-entry maintenance).
const NUMBERS: u64 = 7_919;
const BASE: u64 = 33_612_000_000;

fn line(i: u64) -> String {
    format!("+{},sip:u{}@example.com\n", BASE + i % NUMBERS, i)
}

/// An endless CSV stream starting at line `from`.
struct Gen {
    i: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for Gen {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            for _ in 0..100 {
                self.buf.extend_from_slice(line(self.i).as_bytes());
                self.i += 1;
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn crash_child() {
    let Ok(dir) = std::env::var("SP_CRASH_CHILD") else { return };
    let from: u64 = std::env::var("SP_CRASH_FROM").unwrap().parse().unwrap();
    let idx = Index::open(std::path::Path::new(&dir)).unwrap();
    if std::env::var("SP_CRASH_MODE").as_deref() == Ok("bind") {
        // Single binds and unbinds: each acknowledged when bind/unbind returns.
        let mut out = std::io::stdout().lock();
        for i in from.. {
            let n = E164::from_digits(BASE + i % NUMBERS).unwrap();
            if i % 11 == 10 {
                idx.unbind(n).unwrap();
                writeln!(out, "UNBOUND {n} {i}").unwrap();
            } else {
                idx.bind(n, &format!("sip:u{i}@example.com"), smart_presence::index::Source::Admin).unwrap();
                writeln!(out, "ACK {n} {i}").unwrap();
            }
            out.flush().unwrap();
        }
    }
    let mut opts = ImportOptions::new(Format::Csv);
    opts.chunk_size = 997;
    let mut out = std::io::stdout().lock();
    let mut i = from;
    let reader = BufReader::new(Gen { i: from, buf: Vec::new(), pos: 0 });
    idx.import_with(reader, &opts, &mut |numbers: &[E164]| {
        for n in numbers {
            // Acknowledged: the chunk holding line i is durable.
            writeln!(out, "ACK {n} {i}").unwrap();
            i += 1;
        }
        out.flush().unwrap();
    })
    .unwrap();
}

/// Runs this test binary as the crash child (`mode`, starting at line `from`), feeds its
/// stdout to `record` (true for an acknowledgement), SIGKILLs it after `kill_after`
/// acknowledgements, then feeds the lines it printed before dying.
fn kill_after_acks(path: &std::path::Path, mode: &str, from: u64, kill_after: usize, mut record: impl FnMut(&str) -> bool) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env("SP_CRASH_CHILD", path)
        .env("SP_CRASH_MODE", mode)
        .env("SP_CRASH_FROM", from.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = 0usize;
    while seen < kill_after {
        let l = lines.next().expect("child ended early").unwrap();
        if record(&l) {
            seen += 1;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Acknowledgements printed before the kill count too.
    for l in lines {
        record(&l.unwrap());
    }
}

#[test]
fn acknowledged_bindings_survive_sigkill() {
    if std::env::var("SP_CRASH_CHILD").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index");
    let mut from = 0u64;
    // number -> line index of the last acknowledged binding of it
    let mut acked: HashMap<E164, u64> = HashMap::new();
    for (round, kill_after) in [3_000usize, 12_000, 40_000].into_iter().enumerate() {
        let mut last = from;
        kill_after_acks(&path, "import", from, kill_after, |l| {
            let Some(rest) = l.strip_prefix("ACK ") else { return false };
            let (num, i) = rest.split_once(' ').unwrap();
            let n: E164 = num.parse().unwrap();
            let i: u64 = i.parse().unwrap();
            assert_eq!(n.digits(), BASE + i % NUMBERS);
            acked.insert(n, i);
            last = i;
            true
        });
        let idx = Index::open(&path).unwrap();
        let problems = idx.check_consistency().unwrap();
        assert!(problems.is_empty(), "round {round}: {problems:?}");
        for (n, i) in &acked {
            let b = idx.lookup(*n).unwrap().unwrap_or_else(|| panic!("round {round}: acknowledged {n} lost"));
            let j: u64 = b.sip_uri.strip_prefix("sip:u").unwrap().split('@').next().unwrap().parse().unwrap();
            assert!(j >= *i && j % NUMBERS == i % NUMBERS, "round {round}: {n} at line {j}, acknowledged at {i}");
        }
        eprintln!("round {round}: {} acknowledged numbers checked, {} bound", acked.len(), idx.len());
        drop(idx);
        from = last + 1;
    }
}

#[test]
fn acknowledged_binds_and_unbinds_survive_sigkill() {
    if std::env::var("SP_CRASH_CHILD").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index");
    let mut from = 0u64;
    // number -> Some(line) of its last acknowledged bind, None if last acknowledged unbound
    let mut state: HashMap<E164, Option<u64>> = HashMap::new();
    for (round, kill_after) in [50usize, 200, 400].into_iter().enumerate() {
        let mut last = from;
        kill_after_acks(&path, "bind", from, kill_after, |l| {
            let (bound, rest) = if let Some(r) = l.strip_prefix("ACK ") {
                (true, r)
            } else if let Some(r) = l.strip_prefix("UNBOUND ") {
                (false, r)
            } else {
                return false;
            };
            let (num, i) = rest.split_once(' ').unwrap();
            let n: E164 = num.parse().unwrap();
            let i: u64 = i.parse().unwrap();
            state.insert(n, bound.then_some(i));
            last = i;
            true
        });
        let idx = Index::open(&path).unwrap();
        let problems = idx.check_consistency().unwrap();
        assert!(problems.is_empty(), "round {round}: {problems:?}");
        // The step after the last acknowledged one may have become durable before the kill.
        let next = last + 1;
        for (n, acked) in &state {
            let got = idx.lookup(*n).unwrap().map(|b| b.sip_uri);
            let want = acked.map(|i| format!("sip:u{i}@example.com"));
            let next_is_n = next % NUMBERS == n.digits() - BASE;
            if got != want {
                assert!(next_is_n, "round {round}: {n} is {got:?}, acknowledged {want:?}");
            }
        }
        // Whatever the store says about that step is the truth for the next rounds.
        let nn = E164::from_digits(BASE + next % NUMBERS).unwrap();
        let now = idx.lookup(nn).unwrap().map(|b| {
            b.sip_uri.strip_prefix("sip:u").unwrap().split('@').next().unwrap().parse::<u64>().unwrap()
        });
        state.insert(nn, now);
        drop(idx);
        from = next + 1;
    }
}
