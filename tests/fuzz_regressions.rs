//! Replays the fuzz targets' checks (`fuzz/checks/`, the very code the cargo-fuzz targets
//! run) over every saved input in `fuzz/regressions/<target>/` and over the fixtures, as
//! ordinary tests. A crash `bash fuzz/run.sh` finds goes into `fuzz/regressions/<target>/`
//! (named for what it hit) once fixed, and stays fixed.

#[path = "../fuzz/checks/pidf.rs"]
mod pidf;
#[path = "../fuzz/checks/resource_lists.rs"]
mod resource_lists;
#[path = "../fuzz/checks/sip_message.rs"]
mod sip_message;
#[path = "../fuzz/checks/trace_reader.rs"]
mod trace_reader;

use std::path::{Path, PathBuf};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else if !path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let saved = files(&root().join("fuzz/regressions").join(target));
    for path in &saved {
        let data = std::fs::read(path).unwrap();
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{target} regression {} fails again", path.display());
    }
    saved.len()
}

/// A target's saved regressions, then every fixture (whole, and its body alone).
fn regressions_and_fixtures(target: &str, check: fn(&[u8])) {
    let n = replay(target, check);
    for input in fixture_inputs() {
        check(&input);
    }
    eprintln!("{target}: {n} saved regressions replayed");
}

/// The fixtures, whole and cut after the header block (their bodies).
fn fixture_inputs() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for path in files(&root().join("fixtures")) {
        let data = std::fs::read(&path).unwrap();
        let body = data.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4).or_else(|| data.windows(2).position(|w| w == b"\n\n").map(|i| i + 2));
        if let Some(start) = body {
            out.push(data[start..].to_vec());
        }
        out.push(data);
    }
    out
}

#[test]
fn sip_message_regressions_and_fixtures() {
    regressions_and_fixtures("sip_message", sip_message::check);
}

#[test]
fn resource_lists_regressions_and_fixtures() {
    regressions_and_fixtures("resource_lists", resource_lists::check);
}

#[test]
fn pidf_regressions_and_fixtures() {
    regressions_and_fixtures("pidf", pidf::check);
    pidf::check(b"sip:alice@example.org");
}

#[test]
fn trace_reader_regressions_and_fixtures() {
    let n = replay("trace_reader", trace_reader::check);
    for path in files(&root().join("fixtures/replay")) {
        let data = std::fs::read(&path).unwrap();
        trace_reader::check(&data);
        // Every cut of a real trace: truncated captures are the common bad input.
        for cut in (0..data.len()).step_by(data.len() / 64 + 1) {
            trace_reader::check(&data[..cut]);
        }
    }
    eprintln!("trace_reader: {n} saved regressions replayed");
}
