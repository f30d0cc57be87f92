//! What a replay measured: messages per type, responses whose code differs from the trace,
//! timeouts, and latency percentiles per request method (request sent to final response)
//! and for the first server request after each client request ("NOTIFY after SUBSCRIBE").
//!
//! Owns counting and printing; the runner fills one `Report` per session and merges them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

#[derive(Debug, Default, Clone)]
pub struct Report {
    /// `sent SUBSCRIBE`, `recv 200 SUBSCRIBE`, `recv NOTIFY`, `sent 200 NOTIFY`, ...
    pub counts: BTreeMap<String, u64>,
    /// `SUBSCRIBE: trace 200, got 501` and how often.
    pub differing: BTreeMap<String, u64>,
    /// Requests without a final response in time.
    pub timeouts: u64,
    /// Server requests the trace's client never got (more than it got: counted here too).
    pub unexpected: u64,
    /// Server requests of the trace that did not come.
    pub missing: u64,
    pub latencies: BTreeMap<String, Vec<Duration>>,
    pub elapsed: Duration,
    pub sessions: u64,
}

impl Report {
    pub fn count(&mut self, what: String) {
        *self.counts.entry(what).or_default() += 1;
    }

    pub fn latency(&mut self, what: &str, d: Duration) {
        self.latencies.entry(what.to_string()).or_default().push(d);
    }

    pub fn differ(&mut self, method: &str, expected: u16, got: u16) {
        *self.differing.entry(format!("{method}: trace {expected}, got {got}")).or_default() += 1;
    }

    pub fn get(&self, what: &str) -> u64 {
        self.counts.get(what).copied().unwrap_or(0)
    }

    pub fn differing_total(&self) -> u64 {
        self.differing.values().sum()
    }

    /// True when nothing differed from the trace.
    pub fn matches_trace(&self) -> bool {
        self.differing_total() == 0 && self.timeouts == 0 && self.missing == 0
    }

    pub fn merge(&mut self, other: Report) {
        for (k, v) in other.counts {
            *self.counts.entry(k).or_default() += v;
        }
        for (k, v) in other.differing {
            *self.differing.entry(k).or_default() += v;
        }
        for (k, mut v) in other.latencies {
            self.latencies.entry(k).or_default().append(&mut v);
        }
        self.timeouts += other.timeouts;
        self.unexpected += other.unexpected;
        self.missing += other.missing;
        self.sessions += other.sessions;
    }

    /// The `p`-th percentile (0..=100) of a latency series.
    pub fn percentile(&self, what: &str, p: f64) -> Option<Duration> {
        let mut v = self.latencies.get(what)?.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let rank = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        v.get(rank.min(v.len() - 1)).copied()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let secs = self.elapsed.as_secs_f64();
        let _ = writeln!(out, "replay: {} sessions in {secs:.2} s", self.sessions);
        let _ = writeln!(out, "messages:");
        for (k, v) in &self.counts {
            let _ = writeln!(out, "  {k:<28} {v:>9}");
        }
        let _ = writeln!(out, "latency (ms)                    n      p50      p90      p99      max");
        for (k, v) in &self.latencies {
            let ms = |p| self.percentile(k, p).map_or(0.0, |d| d.as_secs_f64() * 1e3);
            let _ = writeln!(out, "  {k:<24} {:>7} {:>8.2} {:>8.2} {:>8.2} {:>8.2}", v.len(), ms(50.0), ms(90.0), ms(99.0), ms(100.0));
        }
        let _ = writeln!(out, "timeouts: {}  missing server requests: {}  unexpected: {}", self.timeouts, self.missing, self.unexpected);
        if self.differing.is_empty() {
            let _ = writeln!(out, "response codes: all as in the trace");
        } else {
            let _ = writeln!(out, "response codes differing from the trace:");
            for (k, v) in &self.differing {
                let _ = writeln!(out, "  {k:<36} {v:>9}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_and_percentiles() {
        let mut a = Report::default();
        for ms in 1..=100 {
            a.latency("SUBSCRIBE", Duration::from_millis(ms));
        }
        let mut b = Report::default();
        b.count("sent SUBSCRIBE".into());
        b.differ("SUBSCRIBE", 200, 501);
        a.merge(b);
        assert_eq!(a.percentile("SUBSCRIBE", 50.0), Some(Duration::from_millis(51)));
        assert_eq!(a.percentile("SUBSCRIBE", 100.0), Some(Duration::from_millis(100)));
        assert_eq!(a.get("sent SUBSCRIBE"), 1);
        assert!(!a.matches_trace());
        assert!(a.render().contains("SUBSCRIBE: trace 200, got 501"));
    }
}
