//! Benchmarks of issue 3: normalisation, resolution against a large index, bulk import.
//!
//! The resolution index has `SP_BENCH_BINDINGS` bindings (default 10,000,000). It is built
//! once into `$CARGO_TARGET_TMPDIR/index-bench-<N>` and reused by later runs (a `complete`
//! marker says the build finished; delete the directory to rebuild).

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use phonenumber::country::Id;
use smart_presence::index::{Format, ImportOptions, Index};
use smart_presence::numbers::{from_uri, normalize, E164};
use std::hint::black_box;
use std::io::{BufReader, Read};
use std::path::PathBuf;

/// Number `i` of the synthetic population: FR, GB and DE mobiles in turn.
fn number(i: u64) -> String {
    match i % 3 {
        0 => format!("+336{:08}", i / 3),
        1 => format!("+4474{:08}", i / 3),
        _ => format!("+4915{:09}", i / 3),
    }
}

fn csv_line(i: u64) -> String {
    format!("{},sip:u{}@example.com\n", number(i), i / 2)
}

/// CSV lines `from..to`, generated as they are read.
struct Gen {
    i: u64,
    end: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl Gen {
    fn new(from: u64, to: u64) -> BufReader<Gen> {
        BufReader::with_capacity(1 << 16, Gen { i: from, end: to, buf: Vec::new(), pos: 0 })
    }
}

impl Read for Gen {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            while self.buf.len() < 1 << 16 && self.i < self.end {
                self.buf.extend_from_slice(csv_line(self.i).as_bytes());
                self.i += 1;
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn mixed_inputs() -> Vec<(String, bool)> {
    // (text, is_uri); FR national forms need the FR region.
    let mut v = Vec::new();
    for i in 0..500u64 {
        let nsn = format!("6{:08}", 12_345_000 + i * 7);
        let s = match i % 10 {
            0..=2 => (format!("+33{nsn}"), false),
            3 => (format!("+33 {} {} {} {} {}", &nsn[..1], &nsn[1..3], &nsn[3..5], &nsn[5..7], &nsn[7..]), false),
            4 => (format!("0{} {} {} {} {}", &nsn[..1], &nsn[1..3], &nsn[3..5], &nsn[5..7], &nsn[7..]), false),
            5 => (format!("0033 {nsn}"), false),
            6 => (format!("+1 (415) 555-{:04}", i), false),
            7 => (format!("sip:+33{nsn}@example.com;user=phone"), true),
            8 => (format!("tel:0{nsn};phone-context=+33"), true),
            _ => (format!("sip:0{nsn}@example.com;user=phone"), true),
        };
        v.push(s);
    }
    v
}

fn bench_normalize(c: &mut Criterion) {
    let inputs = mixed_inputs();
    let fr = Some(Id::FR);
    let mut g = c.benchmark_group("normalize");
    g.throughput(Throughput::Elements(inputs.len() as u64));
    g.bench_function("500_mixed_forms", |b| {
        b.iter(|| {
            for (s, uri) in &inputs {
                if *uri {
                    black_box(from_uri(black_box(s), fr));
                } else {
                    black_box(normalize(black_box(s), fr).unwrap());
                }
            }
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("fast_path_e164", |b| b.iter(|| normalize(black_box("+33612345678"), fr).unwrap()));
    g.bench_function("full_parser_human_text", |b| b.iter(|| normalize(black_box("06 12 34 56 78"), fr).unwrap()));
    g.bench_function("phonenumber_parse_reference", |b| {
        b.iter(|| phonenumber::parse(fr, black_box("+33612345678")).unwrap())
    });
    g.finish();
}

/// 10 million bindings under `cargo bench`; `cargo test --all-targets` runs each bench once
/// as a smoke test (no `--bench` argument) and gets a small index, so CI stays fast.
fn bench_index_size() -> u64 {
    let default = if std::env::args().any(|a| a == "--bench") { 10_000_000 } else { 10_000 };
    std::env::var("SP_BENCH_BINDINGS").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn cached_index(n: u64) -> Index {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("index-bench-{n}"));
    let marker = dir.join("complete");
    if !marker.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        eprintln!("building a {n}-binding index in {} (once) ...", dir.display());
        let t = std::time::Instant::now();
        let idx = Index::open(&dir).unwrap();
        let mut opts = ImportOptions::new(Format::Csv);
        opts.chunk_size = 20_000;
        let s = idx.import(Gen::new(0, n), &opts).unwrap();
        assert_eq!(s.imported, n);
        let secs = t.elapsed().as_secs_f64();
        eprintln!("built in {secs:.1} s ({:.0} bindings/s)", n as f64 / secs);
        drop(idx);
        std::fs::write(&marker, b"").unwrap();
    }
    let t = std::time::Instant::now();
    let idx = Index::open(&dir).unwrap();
    eprintln!("opened the {n}-binding index in {:.1} s", t.elapsed().as_secs_f64());
    while !idx.filter_ready() {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    eprintln!("its filter was ready {:.1} s after the open began", t.elapsed().as_secs_f64());
    idx
}

fn bench_resolve(c: &mut Criterion) {
    let n = bench_index_size();
    let idx = cached_index(n);
    assert_eq!(idx.len(), n);
    // An address book of 500: half bound (spread over the index), half not.
    let mut list: Vec<E164> = Vec::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for k in 0..500u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let s = if k % 2 == 0 { number(x % n) } else { format!("+14155{:06}", x % 1_000_000) };
        list.push(normalize(&s, None).unwrap());
    }
    let bound = idx.resolve(&list).unwrap().len();
    assert!(bound >= 240, "{bound} bound");
    let mut g = c.benchmark_group("resolve");
    g.throughput(Throughput::Elements(500));
    g.bench_with_input(BenchmarkId::new("500_numbers", n), &list, |b, list| {
        b.iter(|| black_box(idx.resolve(black_box(list)).unwrap()))
    });
    let (bound, unbound): (Vec<E164>, Vec<E164>) = list.iter().partition(|x| idx.is_bound(**x).unwrap());
    g.throughput(Throughput::Elements(bound.len() as u64));
    g.bench_with_input(BenchmarkId::new("only_bound_half", n), &bound, |b, list| {
        b.iter(|| black_box(idx.resolve(black_box(list)).unwrap()))
    });
    g.throughput(Throughput::Elements(unbound.len() as u64));
    g.bench_with_input(BenchmarkId::new("only_unbound_half", n), &unbound, |b, list| {
        b.iter(|| black_box(idx.resolve(black_box(list)).unwrap()))
    });
    g.throughput(Throughput::Elements(1));
    g.bench_with_input(BenchmarkId::new("lookup_one", n), &list[0], |b, one| {
        b.iter(|| black_box(idx.lookup(black_box(*one)).unwrap()))
    });
    g.finish();
}

fn bench_import(c: &mut Criterion) {
    const ROWS: u64 = 200_000;
    let mut g = c.benchmark_group("import");
    g.sample_size(10);
    g.throughput(Throughput::Elements(ROWS));
    g.bench_function(BenchmarkId::new("csv_fresh_store", ROWS), |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let idx = Index::open(dir.path()).unwrap();
                (dir, idx)
            },
            |(dir, idx)| {
                let s = idx.import(Gen::new(0, ROWS), &ImportOptions::new(Format::Csv)).unwrap();
                assert_eq!(s.imported, ROWS);
                (dir, idx)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

// Resolution first: measured in a fresh process, before the import runs churn the allocator.
criterion_group!(benches, bench_resolve, bench_normalize, bench_import);
criterion_main!(benches);
