//! Prometheus metrics (issue 15), served as text by the admin listener's `GET /metrics`
//! (`admin/metrics.rs`). One [`Metrics`] value, built by `server.rs` when `[metrics]
//! enabled` and the admin listener is on, owns the recorder (the `metrics` crate's
//! Prometheus exporter, never installed as the global recorder) and is handed, as
//! `Option<Arc<Metrics>>`, to the parts that count. With metrics off they hold `None` and
//! count nothing.
//!
//! Counting is cheap: every label set is a handle resolved once (at start, or on its first
//! use for the request table) and counting is an atomic add on it; no label set is built,
//! hashed or allocated per event. Label values are `&'static str` from the closed sets
//! below: never a phone number, URI, address or account. Values that another part already
//! keeps (subscriptions held, bindings, budget refusals, delivery stats) are read when
//! scraped ([`Metrics::gauge_at_scrape`], [`Metrics::counter_at_scrape`]), not counted twice.
//!
//! | metric | type | labels (values) | what |
//! |---|---|---|---|
//! | `smart_presence_sip_requests_total` | counter | `method` (INVITE ACK BYE CANCEL OPTIONS REGISTER SUBSCRIBE NOTIFY PUBLISH INFO PRACK UPDATE MESSAGE REFER other), `code` (the final status we sent, one of [`requests::CODES`], else `other`; `none` for ACK), `transport` (udp tcp tls) | requests received and answered (retransmissions absorbed by a server transaction are not counted again) |
//! | `smart_presence_sip_rate_limited_total` | counter | `action` (rejected: answered 503; dropped: unread) | messages over their source's rate (`limits.rs`) |
//! | `smart_presence_notify_sent_total` | counter | | NOTIFYs sent (first transmissions) |
//! | `smart_presence_notify_retransmissions_total` | counter | | NOTIFY retransmissions (Timer E, UDP) |
//! | `smart_presence_notify_failed_total` | counter | `reason` (timeout: no answer by Timer F; transport: not sent; too_large: over a datagram; rejected: a final answer outside 2xx) | NOTIFYs that did not get a 2xx |
//! | `smart_presence_notify_undelivered_total` | counter (scrape) | `outcome` (kept, unreachable, undeliverable, refused) | what became of subscriptions whose NOTIFY did not arrive (`subscription::table::DeliveryStats`) |
//! | `smart_presence_subscriptions` | gauge (scrape) | `kind` (list, single) | subscriptions held |
//! | `smart_presence_list_entries` | gauge (scrape) | | list entries held by all subscriptions |
//! | `smart_presence_bindings` | gauge (scrape) | | numbers bound in the index |
//! | `smart_presence_tcp_connections` | gauge (scrape) | | TCP/TLS connections open |
//! | `smart_presence_change_feed_backlog` | gauge | | binding changes published and not yet taken by the subscriptions |
//! | `smart_presence_change_feed_lag_seconds` | histogram | | from a binding change's publication to the subscriptions taking it |
//! | `smart_presence_change_feed_resyncs_total` | counter | | times the subscriptions fell behind the feed and every one re-sent full state |
//! | `smart_presence_discovery_budget_refusals_total` | counter (scrape) | | new numbers refused for lack of discovery budget |
//! | `smart_presence_gateway_messages_total` | counter | `channel` (sms, voice), `gateway` (log, http, none), `outcome` (sent, failed) | one-time codes handed to a delivery gateway |
//! | `smart_presence_subscribe_first_notify_seconds` | histogram | | from a new subscription's SUBSCRIBE arriving to its initial full state delivered (every NOTIFY of it answered) |
//! | `smart_presence_binding_notify_seconds` | histogram | | from a binding change's publication to the NOTIFY carrying it answered |
//!
//! Histograms share the buckets [`LATENCY_BUCKETS`]. Must not know SIP beyond method
//! names, nor hold any other part's state: it is handed values, or closures to read them.

pub mod requests;
pub mod scrape;

use ::metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use std::time::{Duration, Instant};

pub use requests::{MethodLabel, Transport};

/// Upper bounds (seconds) of every histogram's buckets: 1 ms to 30 s.
pub const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Every metric: (name, help). The module doc says their labels.
const HELP: &[(&str, &str)] = &[
    (requests::REQUESTS, "SIP requests received and answered, by method, final status code and transport."),
    (RATE_LIMITED, "Messages over their source's rate: rejected (answered 503) or dropped unread."),
    (NOTIFY_SENT, "NOTIFY requests sent (first transmissions)."),
    (NOTIFY_RETRANSMITTED, "NOTIFY retransmissions (Timer E, UDP)."),
    (NOTIFY_FAILED, "NOTIFYs that got no 2xx, by reason."),
    (scrape::UNDELIVERED, "Subscriptions whose NOTIFY did not arrive, by what became of them."),
    (scrape::SUBSCRIPTIONS, "Subscriptions held, list or single presentity."),
    (scrape::ENTRIES, "List entries held by all subscriptions."),
    (scrape::BINDINGS, "Numbers bound in the index."),
    (scrape::CONNECTIONS, "TCP/TLS connections open."),
    (FEED_BACKLOG, "Binding changes published and not yet taken by the subscriptions."),
    (FEED_LAG, "Seconds from a binding change's publication to the subscriptions taking it."),
    (FEED_RESYNCS, "Times the subscriptions fell behind the change feed and all re-sent full state."),
    (scrape::BUDGET_REFUSALS, "New numbers refused for lack of discovery budget."),
    (GATEWAY, "One-time codes handed to a delivery gateway, by channel, gateway kind and outcome."),
    (FIRST_NOTIFY, "Seconds from a new SUBSCRIBE's arrival to its initial full state delivered."),
    (BINDING_NOTIFY, "Seconds from a binding change's publication to the NOTIFY carrying it answered."),
];

const RATE_LIMITED: &str = "smart_presence_sip_rate_limited_total";
const NOTIFY_SENT: &str = "smart_presence_notify_sent_total";
const NOTIFY_RETRANSMITTED: &str = "smart_presence_notify_retransmissions_total";
const NOTIFY_FAILED: &str = "smart_presence_notify_failed_total";
const FEED_BACKLOG: &str = "smart_presence_change_feed_backlog";
const FEED_LAG: &str = "smart_presence_change_feed_lag_seconds";
const FEED_RESYNCS: &str = "smart_presence_change_feed_resyncs_total";
const GATEWAY: &str = "smart_presence_gateway_messages_total";
const FIRST_NOTIFY: &str = "smart_presence_subscribe_first_notify_seconds";
const BINDING_NOTIFY: &str = "smart_presence_binding_notify_seconds";

/// A rate-limit verdict other than admit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimited {
    Rejected = 0,
    Dropped = 1,
}

/// Why a NOTIFY got no 2xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyFailure {
    Timeout = 0,
    Transport = 1,
    TooLarge = 2,
    Rejected = 3,
}

const NOTIFY_REASONS: [&str; 4] = ["timeout", "transport", "too_large", "rejected"];

/// Which one-time-code channel a gateway serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Sms = 0,
    Voice = 1,
}

const CHANNELS: [&str; 2] = ["sms", "voice"];
const GATEWAY_KINDS: [crate::config::GatewayKind; 3] =
    [crate::config::GatewayKind::Log, crate::config::GatewayKind::Http, crate::config::GatewayKind::None];

/// The server's metrics: the recorder, the handles the hot paths count on, and the values
/// read at scrape time. Share it as `Arc<Metrics>`.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    requests: requests::Requests,
    rate_limited: [Counter; 2],
    notify_sent: Counter,
    notify_retransmitted: Counter,
    notify_failed: [Counter; 4],
    feed_backlog: Gauge,
    feed_lag: Histogram,
    feed_resyncs: Counter,
    /// channel × gateway kind × (sent, failed).
    gateway: [[[Counter; 2]; 3]; 2],
    first_notify: Histogram,
    binding_notify: Histogram,
    scraped: scrape::Readings,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Every metric registered (labelled request counters on first use), at zero.
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        for (name, help) in HELP {
            let (name, help) = (KeyName::from_const_str(name), SharedString::const_str(help));
            if name.as_str().ends_with("_total") {
                recorder.describe_counter(name, None, help);
            } else if name.as_str().ends_with("_seconds") {
                recorder.describe_histogram(name, None, help);
            } else {
                recorder.describe_gauge(name, None, help);
            }
        }
        let r = &recorder;
        let gateway = CHANNELS.map(|channel| {
            GATEWAY_KINDS.map(|kind| {
                ["sent", "failed"].map(|outcome| counter(r, GATEWAY, &[("channel", channel), ("gateway", kind.as_str()), ("outcome", outcome)]))
            })
        });
        Metrics {
            requests: requests::Requests::new(),
            rate_limited: ["rejected", "dropped"].map(|a| counter(r, RATE_LIMITED, &[("action", a)])),
            notify_sent: counter(r, NOTIFY_SENT, &[]),
            notify_retransmitted: counter(r, NOTIFY_RETRANSMITTED, &[]),
            notify_failed: NOTIFY_REASONS.map(|reason| counter(r, NOTIFY_FAILED, &[("reason", reason)])),
            feed_backlog: r.register_gauge(&Key::from_static_name(FEED_BACKLOG), &metadata()),
            feed_lag: histogram(r, FEED_LAG),
            feed_resyncs: counter(r, FEED_RESYNCS, &[]),
            gateway,
            first_notify: histogram(r, FIRST_NOTIFY),
            binding_notify: histogram(r, BINDING_NOTIFY),
            scraped: scrape::Readings::default(),
            handle: recorder.handle(),
            recorder,
        }
    }

    /// One request answered with `code` (None: ACK, which gets no answer).
    pub fn request(&self, method: MethodLabel, code: Option<u16>, transport: Transport) {
        self.requests.get(&self.recorder, method, code, transport).increment(1);
    }

    pub fn rate_limited(&self, what: RateLimited) {
        self.rate_limited[what as usize].increment(1);
    }

    pub fn notify_sent(&self) {
        self.notify_sent.increment(1);
    }

    pub fn notify_retransmitted(&self) {
        self.notify_retransmitted.increment(1);
    }

    pub fn notify_failed(&self, why: NotifyFailure) {
        self.notify_failed[why as usize].increment(1);
    }

    /// The subscriptions took a binding change published at `published`; `backlog` more
    /// wait behind it.
    pub fn feed_taken(&self, published: Instant, backlog: usize) {
        self.feed_lag.record(published.elapsed().as_secs_f64());
        self.feed_backlog.set(backlog as f64);
    }

    pub fn feed_resync(&self) {
        self.feed_resyncs.increment(1);
        self.feed_backlog.set(0.0);
    }

    pub fn gateway_message(&self, channel: Channel, kind: crate::config::GatewayKind, sent: bool) {
        let k = GATEWAY_KINDS.iter().position(|g| *g == kind).unwrap_or(2);
        self.gateway[channel as usize][k][usize::from(!sent)].increment(1);
    }

    /// A new subscription's initial full state was delivered; its SUBSCRIBE arrived at `since`.
    pub fn first_notify(&self, since: Instant) {
        self.first_notify.record(since.elapsed().as_secs_f64());
    }

    /// A NOTIFY carrying a binding change published at `since` was delivered.
    pub fn binding_notify(&self, since: Instant) {
        self.binding_notify.record(since.elapsed().as_secs_f64());
    }

    /// A gauge whose value `read` gives when scraped (`labels` from closed sets).
    pub fn gauge_at_scrape(&self, name: &'static str, labels: &[(&'static str, &'static str)], read: impl Fn() -> f64 + Send + Sync + 'static) {
        let key = Key::from_parts(name, labels_of(labels));
        self.scraped.gauge(self.recorder.register_gauge(&key, &metadata()), read);
    }

    /// A counter whose total `read` gives when scraped.
    pub fn counter_at_scrape(&self, name: &'static str, labels: &[(&'static str, &'static str)], read: impl Fn() -> u64 + Send + Sync + 'static) {
        let key = Key::from_parts(name, labels_of(labels));
        self.scraped.counter(self.recorder.register_counter(&key, &metadata()), read);
    }

    /// The exposition (Prometheus text format 0.0.4), values read at scrape time included.
    pub fn render(&self) -> String {
        self.scraped.read_all();
        self.handle.render()
    }

    /// Folds the histograms' recent samples into their buckets (else they wait for the next
    /// scrape); run every few seconds so memory stays bounded without scrapes.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// Runs [`Metrics::upkeep`] every 5 s until `shutdown`.
    pub async fn keep_up(metrics: std::sync::Arc<Metrics>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => metrics.upkeep(),
                _ = shutdown.changed() => return,
            }
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn metadata() -> Metadata<'static> {
    Metadata::new(module_path!(), ::metrics::Level::INFO, Some(module_path!()))
}

fn labels_of(labels: &[(&'static str, &'static str)]) -> Vec<Label> {
    labels.iter().map(|(k, v)| Label::from_static_parts(k, v)).collect()
}

fn counter(r: &PrometheusRecorder, name: &'static str, labels: &[(&'static str, &'static str)]) -> Counter {
    r.register_counter(&Key::from_parts(name, labels_of(labels)), &metadata())
}

fn histogram(r: &PrometheusRecorder, name: &'static str) -> Histogram {
    r.register_histogram(&Key::from_static_name(name), &metadata())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_described_and_rendered() {
        let m = Metrics::new();
        m.request(MethodLabel::of(&crate::sip::Method::Subscribe), Some(200), Transport::Udp);
        m.first_notify(Instant::now());
        m.counter_at_scrape(scrape::BUDGET_REFUSALS, &[], || 3);
        let text = m.render();
        for (name, _) in HELP.iter().filter(|(n, _)| !scrape::ALL.contains(n) || *n == scrape::BUDGET_REFUSALS) {
            assert!(text.contains(&format!("# HELP {name} ")), "{name} described:\n{text}");
        }
        assert!(text.contains("smart_presence_sip_requests_total{method=\"SUBSCRIBE\",code=\"200\",transport=\"udp\"} 1"), "{text}");
        assert!(text.contains("smart_presence_discovery_budget_refusals_total 3"), "{text}");
        assert!(text.contains("smart_presence_subscribe_first_notify_seconds_bucket{le=\"0.001\"} 1"), "{text}");
    }
}
