//! Bulk import and export: CSV (`number,sip_uri`) and JSON lines
//! (`{"number":"..","sip_uri":".."}`). Owns the formats, line checks and chunking; writes
//! go through the store's `apply_chunk` and reads through `Index::iter`, so it must not
//! know how a store keeps bindings.

use super::{canonical_sip_uri, Index, IndexError, Rejection, Source};
use crate::numbers::{Region, E164};
use crate::storage::bindings::ChunkCounts;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};

/// File formats of import and export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// `number,sip_uri` per line; an optional header line `number,sip_uri`.
    Csv,
    /// One JSON object per line: `{"number":"+33612345678","sip_uri":"sip:bob@example.com"}`.
    Jsonl,
}

impl Format {
    /// From a file name's extension: `.csv`, or `.jsonl`/`.ndjson`/`.json`.
    pub fn from_path(p: &std::path::Path) -> Option<Format> {
        match p.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "jsonl" | "ndjson" | "json" => Some(Format::Jsonl),
            _ => None,
        }
    }

    /// From a name (`csv`, `jsonl`, `ndjson`) or a MIME type (`text/csv`,
    /// `application/x-ndjson`, `application/jsonl`, ...).
    pub fn from_name(s: &str) -> Option<Format> {
        let s = s.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match s.as_str() {
            "csv" | "text/csv" | "application/csv" => Some(Format::Csv),
            "jsonl" | "ndjson" | "json" | "application/x-ndjson" | "application/ndjson" | "application/jsonl"
            | "application/x-jsonlines" | "application/jsonlines" | "application/json-lines" | "application/json" => {
                Some(Format::Jsonl)
            }
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Jsonl => "jsonl",
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            Format::Csv => "text/csv",
            Format::Jsonl => "application/x-ndjson",
        }
    }
}

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub format: Format,
    /// Any bad line aborts the import before anything is written (the input is read and
    /// checked whole first, holding the parsed rows in memory).
    pub strict: bool,
    /// Region for national numbers (the configured default region).
    pub region: Option<Region>,
    pub source: Source,
    /// Rows per atomic, flushed chunk.
    pub chunk_size: usize,
}

impl ImportOptions {
    pub fn new(format: Format) -> ImportOptions {
        ImportOptions { format, strict: false, region: None, source: Source::Import, chunk_size: 10_000 }
    }
}

/// The outcome of an import.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportSummary {
    /// Bindings written: new ones plus replaced ones.
    pub imported: u64,
    /// Of `imported`, those that replaced a binding of the number to another URI.
    pub replaced: u64,
    /// Lines that matched the existing binding (nothing written).
    pub unchanged: u64,
    /// Bad lines (reported, skipped).
    pub rejected: u64,
    /// The first [`ImportSummary::MAX_REPORTED`] rejections with their line numbers.
    pub rejections: Vec<Rejection>,
}

impl ImportSummary {
    pub const MAX_REPORTED: usize = 1000;

    fn reject(&mut self, line: u64, reason: String) {
        self.rejected += 1;
        if self.rejections.len() < Self::MAX_REPORTED {
            self.rejections.push(Rejection { line, reason });
        }
    }
}

#[derive(Deserialize)]
struct JsonRow<'a> {
    #[serde(borrow)]
    number: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    sip_uri: std::borrow::Cow<'a, str>,
}

#[derive(Serialize)]
struct JsonOut<'a> {
    number: String,
    sip_uri: &'a str,
}

/// Splits a CSV line into fields (RFC 4180 quoting: `"a,b"`, `""` inside quotes).
fn csv_fields(line: &str) -> Result<Vec<String>, String> {
    let mut fields = Vec::with_capacity(2);
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut in_quotes = false;
    let mut was_quoted = false;
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    in_quotes = false;
                }
            } else {
                cur.push(c);
            }
        } else {
            match c {
                '"' if cur.trim().is_empty() && !was_quoted => {
                    cur.clear();
                    in_quotes = true;
                    was_quoted = true;
                }
                ',' => {
                    fields.push(std::mem::take(&mut cur));
                    was_quoted = false;
                }
                _ => cur.push(c),
            }
        }
    }
    if in_quotes {
        return Err("unterminated quote".into());
    }
    fields.push(cur);
    Ok(fields)
}

/// Parses one line into (number text, uri text); `Ok(None)` for lines to skip.
fn parse_line(format: Format, line: &str, first: bool) -> Result<Option<(String, String)>, String> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return Ok(None);
    }
    match format {
        Format::Csv => {
            let f = csv_fields(t)?;
            if f.len() != 2 {
                return Err(format!("expected 2 fields (number,sip_uri), found {}", f.len()));
            }
            if first && f[0].trim().eq_ignore_ascii_case("number") {
                return Ok(None);
            }
            Ok(Some((f[0].trim().to_string(), f[1].trim().to_string())))
        }
        Format::Jsonl => {
            let r: JsonRow<'_> = serde_json::from_str(t).map_err(|e| format!("bad JSON: {e}"))?;
            Ok(Some((r.number.trim().to_string(), r.sip_uri.trim().to_string())))
        }
    }
}

fn parse_row(format: Format, line: &str, first: bool, region: Option<Region>) -> Result<Option<(E164, String)>, String> {
    let Some((num, uri)) = parse_line(format, line, first)? else { return Ok(None) };
    let n = super::parse_number(&num, region).map_err(|e| e.to_string())?;
    let uri = canonical_sip_uri(&uri).map_err(|e| e.to_string())?;
    Ok(Some((n, uri)))
}

/// Longest input line accepted (a line is one binding: this is generous).
const MAX_LINE: u64 = 64 * 1024;

/// Consumes the rest of an over-long line.
fn skip_line(reader: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        if let Some(p) = buf.iter().position(|&b| b == b'\n') {
            reader.consume(p + 1);
            return Ok(());
        }
        let l = buf.len();
        reader.consume(l);
    }
}

pub(super) fn import(
    index: &Index,
    mut reader: impl BufRead,
    opts: &ImportOptions,
    on_ack: &mut dyn FnMut(&[E164]),
) -> Result<ImportSummary, IndexError> {
    let chunk_size = opts.chunk_size.max(1);
    let mut summary = ImportSummary::default();
    let mut line: Vec<u8> = Vec::new();
    let mut lineno = 0u64;
    let mut first = true;
    let mut rows: Vec<(E164, String)> = Vec::with_capacity(if opts.strict { 0 } else { chunk_size });
    let mut all: Vec<(E164, String)> = Vec::new();
    let mut acked: Vec<E164> = Vec::with_capacity(chunk_size);

    let mut flush_chunk = |rows: &mut Vec<(E164, String)>, summary: &mut ImportSummary| -> Result<(), IndexError> {
        if rows.is_empty() {
            return Ok(());
        }
        let ChunkCounts { new, replaced, unchanged } = index.store.apply_chunk(rows, opts.source)?;
        summary.imported += new + replaced;
        summary.replaced += replaced;
        summary.unchanged += unchanged;
        acked.clear();
        acked.extend(rows.iter().map(|(n, _)| *n));
        on_ack(&acked);
        rows.clear();
        Ok(())
    };

    loop {
        line.clear();
        if std::io::Read::take(&mut reader, MAX_LINE).read_until(b'\n', &mut line)? == 0 {
            break;
        }
        lineno += 1;
        if line.len() as u64 == MAX_LINE && line.last() != Some(&b'\n') {
            skip_line(&mut reader)?;
            summary.reject(lineno, format!("line longer than {MAX_LINE} bytes"));
            continue;
        }
        let Ok(text) = std::str::from_utf8(&line) else {
            summary.reject(lineno, "not UTF-8".into());
            continue;
        };
        let text = if lineno == 1 { text.trim_start_matches('\u{feff}') } else { text };
        let is_first = first && !text.trim().is_empty() && !text.trim_start().starts_with('#');
        match parse_row(opts.format, text, is_first, opts.region) {
            Ok(Some(row)) => {
                if opts.strict {
                    all.push(row);
                } else {
                    rows.push(row);
                    if rows.len() >= chunk_size {
                        flush_chunk(&mut rows, &mut summary)?;
                    }
                }
            }
            Ok(None) => {}
            Err(reason) => summary.reject(lineno, reason),
        }
        if is_first {
            first = false;
        }
    }
    if opts.strict {
        if summary.rejected > 0 {
            return Err(IndexError::StrictRejected(summary.rejections));
        }
        for chunk in all.chunks(chunk_size) {
            rows.extend_from_slice(chunk);
            flush_chunk(&mut rows, &mut summary)?;
        }
    } else {
        flush_chunk(&mut rows, &mut summary)?;
    }
    Ok(summary)
}

fn csv_quote(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

pub(super) fn export(index: &Index, w: impl Write, format: Format) -> Result<u64, IndexError> {
    let mut w = std::io::BufWriter::with_capacity(1 << 16, w);
    if format == Format::Csv {
        w.write_all(b"number,sip_uri\n")?;
    }
    let mut n = 0u64;
    for b in index.iter() {
        let b = b?;
        match format {
            Format::Csv => writeln!(w, "{},{}", b.number, csv_quote(&b.sip_uri))?,
            Format::Jsonl => {
                serde_json::to_writer(&mut w, &JsonOut { number: b.number.to_string(), sip_uri: &b.sip_uri })
                    .map_err(std::io::Error::from)?;
                w.write_all(b"\n")?;
            }
        }
        n += 1;
    }
    w.flush()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_splitting() {
        assert_eq!(csv_fields("a,b").unwrap(), vec!["a", "b"]);
        assert_eq!(csv_fields("\"+1 (415) 555-2671\",\"sip:a,b@x\"").unwrap(), vec!["+1 (415) 555-2671", "sip:a,b@x"]);
        assert_eq!(csv_fields("\"a\"\"b\",c").unwrap(), vec!["a\"b", "c"]);
        assert!(csv_fields("\"abc,d").is_err());
    }

    #[test]
    fn header_and_comments_are_skipped() {
        assert_eq!(parse_line(Format::Csv, "number,sip_uri", true).unwrap(), None);
        assert_eq!(parse_line(Format::Csv, "# hello", false).unwrap(), None);
        assert!(parse_line(Format::Csv, "number,sip_uri", false).unwrap().is_some());
    }
}
