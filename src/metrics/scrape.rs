//! Values read when the metrics are scraped: each a handle and the closure that reads its
//! value from the part that keeps it (handed in by `server.rs`). Nothing is counted twice.

use ::metrics::{Counter, Gauge};
use parking_lot::Mutex;

/// The names of the metrics read at scrape time (their help is in `mod.rs`).
pub const UNDELIVERED: &str = "smart_presence_notify_undelivered_total";
pub const SUBSCRIPTIONS: &str = "smart_presence_subscriptions";
pub const ENTRIES: &str = "smart_presence_list_entries";
pub const BINDINGS: &str = "smart_presence_bindings";
pub const CONNECTIONS: &str = "smart_presence_tcp_connections";
pub const BUDGET_REFUSALS: &str = "smart_presence_discovery_budget_refusals_total";
pub const ALL: [&str; 6] = [UNDELIVERED, SUBSCRIPTIONS, ENTRIES, BINDINGS, CONNECTIONS, BUDGET_REFUSALS];

type ReadGauge = Box<dyn Fn() -> f64 + Send + Sync>;
type ReadCounter = Box<dyn Fn() -> u64 + Send + Sync>;

/// The registered readings. Bounded: one per metric `server.rs` wires (a dozen).
#[derive(Default)]
pub struct Readings {
    gauges: Mutex<Vec<(Gauge, ReadGauge)>>,
    counters: Mutex<Vec<(Counter, ReadCounter)>>,
}

impl Readings {
    pub fn gauge(&self, g: Gauge, read: impl Fn() -> f64 + Send + Sync + 'static) {
        self.gauges.lock().push((g, Box::new(read)));
    }

    pub fn counter(&self, c: Counter, read: impl Fn() -> u64 + Send + Sync + 'static) {
        self.counters.lock().push((c, Box::new(read)));
    }

    /// Sets every handle to what its closure reads now.
    pub fn read_all(&self) {
        for (g, read) in self.gauges.lock().iter() {
            g.set(read());
        }
        for (c, read) in self.counters.lock().iter() {
            c.absolute(read());
        }
    }
}
