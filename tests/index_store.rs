//! The sled binding index: consistency rule, change feed, import/export.

use smart_presence::index::{
    BindOutcome, Change, ChangeError, Format, ImportOptions, Index, IndexError, Source,
};
use smart_presence::numbers::{normalize, E164};

fn n(s: &str) -> E164 {
    normalize(s, None).unwrap()
}

fn open() -> (tempfile::TempDir, Index) {
    let dir = tempfile::tempdir().unwrap();
    let idx = Index::open(&dir.path().join("index")).unwrap();
    (dir, idx)
}

#[test]
fn bind_rebind_unbind_keep_both_directions() {
    let (_d, idx) = open();
    let a = n("+33612345678");
    let b = n("+33612345679");
    assert_eq!(idx.bind(a, "sip:alice@example.com", Source::Admin).unwrap(), BindOutcome::New);
    assert_eq!(idx.bind(b, "sip:alice@example.com", Source::Admin).unwrap(), BindOutcome::New);
    assert_eq!(idx.bind(a, "sip:alice@EXAMPLE.com;transport=tcp", Source::Admin).unwrap(), BindOutcome::Unchanged);
    assert_eq!(idx.numbers_of("sip:alice@example.com").unwrap(), vec![a, b]);
    assert_eq!(idx.len(), 2);

    assert_eq!(
        idx.bind(a, "sip:bob@example.com", Source::Import).unwrap(),
        BindOutcome::Rebound { old_uri: "sip:alice@example.com".into() }
    );
    assert_eq!(idx.numbers_of("sip:alice@example.com").unwrap(), vec![b]);
    assert_eq!(idx.numbers_of("sip:bob@example.com").unwrap(), vec![a]);
    let got = idx.lookup(a).unwrap().unwrap();
    assert_eq!(got.sip_uri, "sip:bob@example.com");
    assert_eq!(got.source, Source::Import);
    assert!(got.bound_at > 1_600_000_000);
    assert_eq!(idx.len(), 2);

    let removed = idx.unbind(b).unwrap().unwrap();
    assert_eq!(removed.sip_uri, "sip:alice@example.com");
    assert_eq!(idx.unbind(b).unwrap(), None);
    assert!(idx.numbers_of("sip:alice@example.com").unwrap().is_empty());
    assert_eq!(idx.lookup(b).unwrap(), None);
    assert_eq!(idx.len(), 1);
    assert!(idx.check_consistency().unwrap().is_empty());
    let s = idx.stats().unwrap();
    assert_eq!((s.numbers, s.sip_uris), (1, 1));
}

#[test]
fn refuses_phone_uris_and_garbage_as_targets() {
    let (_d, idx) = open();
    let a = n("+33612345678");
    assert!(matches!(idx.bind(a, "tel:+33612345679", Source::Admin), Err(IndexError::InvalidUri(_))));
    assert!(matches!(idx.bind(a, "sip:+33612345679@x;user=phone", Source::Admin), Err(IndexError::InvalidUri(_))));
    assert!(matches!(idx.bind(a, "bob", Source::Admin), Err(IndexError::InvalidUri(_))));
    assert!(idx.is_empty());
}

#[test]
fn refuses_an_overlong_uri_and_keeps_the_store_sound() {
    let (_d, idx) = open();
    let a = n("+33612345678");
    idx.bind(a, "sip:alice@example.org", Source::Admin).unwrap();
    for len in [1_025, 70_000] {
        let uri = format!("sip:{}@example.org", "u".repeat(len));
        assert!(matches!(idx.bind(n("+33612345679"), &uri, Source::Admin), Err(IndexError::InvalidUri(_))), "{len}");
    }
    let longest = format!("sip:{}@example.org", "u".repeat(1_024 - "sip:@example.org".len()));
    idx.bind(n("+33612345680"), &longest, Source::Admin).unwrap();
    assert_eq!(idx.lookup(a).unwrap().unwrap().sip_uri, "sip:alice@example.org");
    assert_eq!(idx.numbers_of(&longest).unwrap(), [n("+33612345680")]);
    assert_eq!(idx.check_consistency().unwrap(), Vec::<String>::new());
}

#[test]
fn survives_reopen_with_count() {
    let dir = tempfile::tempdir().unwrap();
    {
        let idx = Index::open(dir.path()).unwrap();
        idx.bind(n("+14155552671"), "sip:carol@example.com", Source::Cli).unwrap();
        idx.bind(n("+447400123456"), "sip:dave@example.com", Source::Cli).unwrap();
    }
    let idx = Index::open(dir.path()).unwrap();
    assert_eq!(idx.len(), 2);
    assert_eq!(idx.lookup(n("+14155552671")).unwrap().unwrap().sip_uri, "sip:carol@example.com");
    assert!(idx.check_consistency().unwrap().is_empty());
}

#[test]
fn second_process_gets_a_clear_lock_error() {
    // sled's lock is per process (flock); a second open in this process would succeed on
    // Linux only through sled's own checks, so test the error through a child process.
    if let Ok(dir) = std::env::var("SP_INDEX_LOCK_CHILD") {
        match Index::open(std::path::Path::new(&dir)) {
            Err(IndexError::Locked { .. }) => std::process::exit(42),
            Err(e) => {
                eprintln!("unexpected error: {e}");
                std::process::exit(1)
            }
            Ok(_) => std::process::exit(0),
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let _idx = Index::open(dir.path()).unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "second_process_gets_a_clear_lock_error", "--nocapture", "--test-threads=1"])
        .env("SP_INDEX_LOCK_CHILD", dir.path())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(42), "the child should have seen IndexError::Locked");
    let msg = IndexError::Locked { path: dir.path().into() }.to_string();
    assert!(msg.contains("locked by another process"), "{msg}");
}

#[test]
fn change_feed_sees_bind_rebind_unbind_and_imports_in_order() {
    let (_d, idx) = open();
    let mut rx = idx.changes();
    let a = n("+33612345678");
    idx.bind(a, "sip:alice@example.com", Source::Admin).unwrap();
    idx.bind(a, "sip:alice@example.com", Source::Admin).unwrap(); // unchanged: no event
    idx.bind(a, "sip:bob@example.com", Source::Admin).unwrap();
    idx.unbind(a).unwrap();
    let csv = "number,sip_uri\n+33612345678,sip:carol@example.com\n+33612345678,sip:dave@example.com\n";
    idx.import(csv.as_bytes(), &ImportOptions::new(Format::Csv)).unwrap();
    let want = vec![
        Change { number: a, old: None, new: Some("sip:alice@example.com".into()) },
        Change { number: a, old: Some("sip:alice@example.com".into()), new: Some("sip:bob@example.com".into()) },
        Change { number: a, old: Some("sip:bob@example.com".into()), new: None },
        Change { number: a, old: None, new: Some("sip:carol@example.com".into()) },
        Change { number: a, old: Some("sip:carol@example.com".into()), new: Some("sip:dave@example.com".into()) },
    ];
    for w in want {
        assert_eq!(rx.try_recv().unwrap(), w);
    }
    assert_eq!(rx.try_recv(), Err(ChangeError::Empty));
    assert!(idx.check_consistency().unwrap().is_empty());
}

#[test]
fn slow_consumer_is_told_it_lagged() {
    let (_d, idx) = open();
    let mut rx = idx.changes();
    let total = smart_presence::index::CHANGE_CAPACITY + 10;
    let mut csv = String::new();
    for i in 0..total {
        csv.push_str(&format!("+3361{:07},sip:u{i}@example.com\n", i));
    }
    let mut opts = ImportOptions::new(Format::Csv);
    opts.chunk_size = 50_000;
    let s = idx.import(csv.as_bytes(), &opts).unwrap();
    assert_eq!(s.imported as usize, total);
    match rx.try_recv() {
        Err(ChangeError::Lagged(missed)) => assert_eq!(missed, 10),
        other => panic!("expected a lag signal, got {other:?}"),
    }
    // Then it goes on with the changes still kept.
    assert!(rx.try_recv().is_ok());
}

#[test]
fn change_feed_from_another_thread() {
    let (_d, idx) = open();
    let mut rx = idx.changes();
    let idx2 = idx.clone();
    let h = std::thread::spawn(move || {
        for i in 0..20 {
            idx2.bind(n(&format!("+336123456{i:02}")), "sip:x@example.com", Source::Admin).unwrap();
        }
    });
    let mut got = 0;
    while got < 20 {
        let c = rx.blocking_recv().unwrap();
        assert_eq!(c.new.as_deref(), Some("sip:x@example.com"));
        got += 1;
    }
    h.join().unwrap();
}

#[test]
fn import_reports_bad_lines_and_summarises() {
    let (_d, idx) = open();
    idx.bind(n("+33612345670"), "sip:old@example.com", Source::Admin).unwrap();
    idx.bind(n("+33612345671"), "sip:same@example.com", Source::Admin).unwrap();
    let csv = "\u{feff}number,sip_uri\n\
        +33 6 12 34 56 78,sip:alice@example.com\n\
        06 12 34 56 79,sip:alice@example.com\n\
        not a number,sip:bob@example.com\n\
        \n\
        # a comment\n\
        0033 6 12 34 56 70,sip:new@example.com\n\
        +33612345671,sip:same@example.com\n\
        \"+1 (415) 555-2671\",sip:carol@example.com\n\
        +33612345672,tel:+33612345673\n\
        +33612345674\n";
    let mut opts = ImportOptions::new(Format::Csv);
    opts.region = Some(phonenumber::country::Id::FR);
    let s = idx.import(csv.as_bytes(), &opts).unwrap();
    assert_eq!((s.imported, s.replaced, s.unchanged, s.rejected), (4, 1, 1, 3), "{s:?}");
    let lines: Vec<u64> = s.rejections.iter().map(|r| r.line).collect();
    assert_eq!(lines, vec![4, 10, 11]);
    assert_eq!(idx.lookup(n("+33612345670")).unwrap().unwrap().sip_uri, "sip:new@example.com");
    assert_eq!(idx.lookup(n("+14155552671")).unwrap().unwrap().source, Source::Import);
    assert!(idx.check_consistency().unwrap().is_empty());
}

#[test]
fn strict_import_writes_nothing_on_a_bad_line() {
    let (_d, idx) = open();
    let jsonl = "{\"number\":\"+33612345678\",\"sip_uri\":\"sip:a@example.com\"}\n{\"number\":\"x\",\"sip_uri\":\"sip:a@example.com\"}\n{bad json\n";
    let mut opts = ImportOptions::new(Format::Jsonl);
    opts.strict = true;
    match idx.import(jsonl.as_bytes(), &opts) {
        Err(IndexError::StrictRejected(r)) => assert_eq!(r.iter().map(|r| r.line).collect::<Vec<_>>(), vec![2, 3]),
        other => panic!("{other:?}"),
    }
    assert!(idx.is_empty());
    opts.strict = false;
    let s = idx.import(jsonl.as_bytes(), &opts).unwrap();
    assert_eq!((s.imported, s.rejected), (1, 2));
}

#[test]
fn export_then_import_round_trips_in_both_formats() {
    let (_d, idx) = open();
    let mut csv = String::new();
    for i in 0..2500 {
        csv.push_str(&format!("+4474001{:05},sip:user{}@example.com\n", i, i % 700));
    }
    csv.push_str("+33612345678,\"sip:odd,name@example.com\"\n");
    let mut opts = ImportOptions::new(Format::Csv);
    opts.chunk_size = 1000;
    let mut acked = 0;
    let s = idx.import_with(csv.as_bytes(), &opts, &mut |ns| acked += ns.len()).unwrap();
    assert_eq!(s.imported, 2501);
    assert_eq!(acked, 2501);
    for format in [Format::Csv, Format::Jsonl] {
        let mut out = Vec::new();
        assert_eq!(idx.export(&mut out, format).unwrap(), 2501);
        let (_d2, other) = open();
        let s = other.import(out.as_slice(), &ImportOptions::new(format)).unwrap();
        assert_eq!((s.imported, s.rejected), (2501, 0), "{format:?}");
        let a: Vec<_> = idx.iter().map(|b| b.map(|b| (b.number, b.sip_uri))).collect::<Result<_, _>>().unwrap();
        let b: Vec<_> = other.iter().map(|b| b.map(|b| (b.number, b.sip_uri))).collect::<Result<_, _>>().unwrap();
        assert_eq!(a, b);
        assert_eq!(other.stats().unwrap().sip_uris, 701);
    }
}

#[test]
fn resolve_returns_bound_ones_in_request_order() {
    let (_d, idx) = open();
    let a = n("+33612345678");
    let b = n("+14155552671");
    let c = n("+447400123456");
    idx.bind(a, "sip:a@x", Source::Admin).unwrap();
    idx.bind(b, "sip:b@x", Source::Admin).unwrap();
    let got = idx.resolve(&[b, c, a, b]).unwrap();
    assert_eq!(got, vec![(b, "sip:b@x".to_string()), (a, "sip:a@x".to_string())]);
    assert!(idx.is_bound(a).unwrap());
    assert!(!idx.is_bound(c).unwrap());
}

#[test]
fn subscriber_region_comes_from_his_bound_number() {
    let (_d, idx) = open();
    idx.bind(n("+14155552671"), "sip:carol@example.com", Source::Admin).unwrap();
    let fr = Some(phonenumber::country::Id::FR);
    assert_eq!(idx.region_of("sip:carol@example.com", fr).unwrap(), Some(phonenumber::country::Id::US));
    assert_eq!(idx.region_of("sip:nobody@example.com", fr).unwrap(), fr);
}

#[test]
fn filter_grows_and_never_hides_a_binding() {
    let dir = tempfile::tempdir().unwrap();
    let small = smart_presence::index::OpenOptions { filter_capacity: 1000 };
    let idx = Index::open_with(dir.path(), &small).unwrap();
    let mut csv = String::new();
    let total = 30_000u64;
    for i in 0..total {
        csv.push_str(&format!("+4915{:09},sip:u{}@example.com\n", i * 3, i % 1000));
    }
    let mut checked_during = 0;
    let idx2 = idx.clone();
    let s = idx
        .import_with(csv.as_bytes(), &ImportOptions::new(Format::Csv), &mut |ns| {
            // Acknowledged numbers are visible at once, whatever the filter's state.
            for x in ns.iter().step_by(7) {
                assert!(idx2.is_bound(*x).unwrap());
                checked_during += 1;
            }
        })
        .unwrap();
    assert_eq!(s.imported, total);
    assert!(checked_during > 1000);
    let t = std::time::Instant::now();
    while !idx.filter_ready() {
        assert!(t.elapsed() < std::time::Duration::from_secs(60));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for i in 0..total {
        assert!(idx.is_bound(n(&format!("+4915{:09}", i * 3))).unwrap(), "{i}");
    }
    let unbound: Vec<E164> = (0..1000).map(|i| n(&format!("+4915{:09}", i * 3 + 1))).collect();
    assert!(idx.resolve(&unbound).unwrap().is_empty());
    drop(idx);
    drop(idx2);
    // Reopen: a new filter is built from the store.
    let idx = Index::open_with(dir.path(), &small).unwrap();
    assert!(idx.is_bound(n("+4915000000003")).unwrap());
    while !idx.filter_ready() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(idx.is_bound(n(&format!("+4915{:09}", (total - 1) * 3))).unwrap());
}

#[test]
fn concurrent_writers_keep_the_store_consistent() {
    let (_d, idx) = open();
    let numbers: Vec<E164> = (0..40).map(|i| n(&format!("+336123456{i:02}"))).collect();
    let mut feed = idx.changes();
    let mut handles = Vec::new();
    for t in 0..4 {
        let idx = idx.clone();
        let numbers = numbers.clone();
        handles.push(std::thread::spawn(move || {
            for round in 0..30 {
                let x = numbers[(t * 7 + round * 3) % numbers.len()];
                match round % 5 {
                    0 => {
                        idx.unbind(x).unwrap();
                    }
                    4 => {
                        let csv: String = numbers
                            .iter()
                            .step_by(3)
                            .map(|m| format!("{m},sip:imp{}@example.com\n", (t + round) % 3))
                            .collect();
                        let mut o = ImportOptions::new(Format::Csv);
                        o.chunk_size = 5;
                        idx.import(csv.as_bytes(), &o).unwrap();
                    }
                    _ => {
                        idx.bind(x, &format!("sip:user{}@example.com", (t + round) % 3), Source::Admin).unwrap();
                    }
                }
            }
        }));
    }
    for h in handles {
        h.join().unwrap();
    }
    assert!(idx.check_consistency().unwrap().is_empty());
    // Replaying the feed gives the final state: events are complete and in commit order.
    let mut state = std::collections::HashMap::new();
    while let Ok(c) = feed.try_recv() {
        assert_eq!(state.get(&c.number).cloned(), c.old, "{c:?}");
        match c.new {
            Some(u) => state.insert(c.number, u),
            None => state.remove(&c.number),
        };
    }
    for x in &numbers {
        assert_eq!(idx.lookup(*x).unwrap().map(|b| b.sip_uri), state.get(x).cloned());
    }
}

#[test]
fn a_line_that_is_not_utf8_is_rejected_alone() {
    let (_d, idx) = open();
    let mut input = b"+33612345670,sip:a@example.com\n+33612345671,sip:\xff\xfe@example.com\n".to_vec();
    input.extend_from_slice(b"+33612345672,sip:c@example.com\n+33612345673,sip:d@example.com");
    let s = idx.import(input.as_slice(), &ImportOptions::new(Format::Csv)).unwrap();
    assert_eq!((s.imported, s.rejected), (3, 1));
    assert_eq!(s.rejections[0].line, 2);
    assert!(idx.is_bound(n("+33612345672")).unwrap());
    assert!(idx.is_bound(n("+33612345673")).unwrap()); // last line without a newline
}

#[test]
fn a_read_error_aborts_without_importing_the_partial_chunk() {
    struct Broken(usize);
    impl std::io::Read for Broken {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("connection reset"));
            }
            self.0 -= 1;
            let line = b"+33612345678,sip:truncated@exam";
            buf[..line.len()].copy_from_slice(line);
            Ok(line.len())
        }
    }
    let (_d, idx) = open();
    let r = idx.import(std::io::BufReader::new(Broken(1)), &ImportOptions::new(Format::Csv));
    assert!(matches!(r, Err(IndexError::Io(_))), "{r:?}");
    assert!(idx.is_empty());
}

#[test]
fn an_overlong_line_is_rejected_and_skipped() {
    let (_d, idx) = open();
    let mut input = String::from("+33612345670,sip:a@example.com\n+33612345671,sip:");
    input.push_str(&"x".repeat(200_000));
    input.push_str("@example.com\n+33612345672,sip:c@example.com\n");
    let s = idx.import(input.as_bytes(), &ImportOptions::new(Format::Csv)).unwrap();
    assert_eq!((s.imported, s.rejected), (2, 1), "{s:?}");
    assert_eq!(s.rejections[0].line, 2);
    assert!(idx.is_bound(n("+33612345672")).unwrap());
}

/// Writes a store in layout 1 (one sled key per binding: `n` + number → `[1][bound_at][source][uri]`,
/// `u` + uri + NUL + number → empty), as the first release did.
fn write_layout_1(dir: &std::path::Path, count: u64) {
    let db = sled::open(dir).unwrap();
    let tree = db.open_tree("bindings").unwrap();
    for i in 0..count {
        let num = (33_600_000_000 + i * 7).to_be_bytes();
        let uri = format!("sip:old{}@example.com", i / 3);
        let mut v = vec![1u8];
        v.extend_from_slice(&1_700_000_000u64.to_be_bytes());
        v.push(2);
        v.extend_from_slice(uri.as_bytes());
        tree.insert([&b"n"[..], &num].concat(), v).unwrap();
        tree.insert([&b"u"[..], uri.as_bytes(), &[0], &num].concat(), &[][..]).unwrap();
    }
    tree.insert(b"mcount", &count.to_be_bytes()).unwrap();
    db.flush().unwrap();
}

#[test]
fn a_store_of_the_first_layout_is_migrated_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index");
    write_layout_1(&path, 45_000);
    {
        let idx = Index::open(&path).unwrap();
        assert_eq!(idx.len(), 45_000);
        assert!(idx.check_consistency().unwrap().is_empty());
        let b = idx.lookup(E164::from_digits(33_600_000_000 + 44_999 * 7).unwrap()).unwrap().unwrap();
        assert_eq!((b.sip_uri.as_str(), b.bound_at, b.source), ("sip:old14999@example.com", 1_700_000_000, Source::Import));
        assert_eq!(idx.numbers_of("sip:old0@example.com").unwrap().len(), 3);
    }
    // Nothing of the old layout is left.
    let db = sled::open(&path).unwrap();
    let tree = db.open_tree("bindings").unwrap();
    assert_eq!(tree.scan_prefix(b"n").count() + tree.scan_prefix(b"u").count(), 0);
}
