//! The SIP request counters: one per (method, final status code, transport), each
//! registered on its first use and kept in a fixed table, so counting a request is an index
//! computation, one atomic load and one atomic add. The label sets are closed: 15 method
//! names, the codes of [`CODES`] plus `other` and `none`, 3 transports.

use crate::sip::Method;
use ::metrics::{Counter, Key, Label, Recorder};
use metrics_exporter_prometheus::PrometheusRecorder;
use std::sync::OnceLock;

pub const REQUESTS: &str = "smart_presence_sip_requests_total";

const METHODS: [&str; 15] = [
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "SUBSCRIBE", "NOTIFY", "PUBLISH", "INFO", "PRACK", "UPDATE",
    "MESSAGE", "REFER", "other",
];

/// The final codes labelled as themselves; any other is `other`.
pub const CODES: [u16; 28] = [
    200, 202, 400, 401, 403, 404, 405, 407, 408, 412, 413, 415, 416, 420, 421, 423, 480, 481, 482, 483, 488, 489, 500, 501,
    503, 504, 505, 513,
];
const CODE_NAMES: [&str; 30] = [
    "200", "202", "400", "401", "403", "404", "405", "407", "408", "412", "413", "415", "416", "420", "421", "423", "480",
    "481", "482", "483", "488", "489", "500", "501", "503", "504", "505", "513", "other", "none",
];
const OTHER_CODE: usize = CODES.len();
const NO_CODE: usize = CODES.len() + 1;

const TRANSPORTS: [&str; 3] = ["udp", "tcp", "tls"];

/// The transport a request came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp = 0,
    Tcp = 1,
    Tls = 2,
}

/// A request's method as a label: one of 15 names, `other` for the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodLabel(u8);

impl MethodLabel {
    pub fn of(m: &Method) -> MethodLabel {
        let i = match m {
            Method::Invite => 0,
            Method::Ack => 1,
            Method::Bye => 2,
            Method::Cancel => 3,
            Method::Options => 4,
            Method::Register => 5,
            Method::Subscribe => 6,
            Method::Notify => 7,
            Method::Publish => 8,
            Method::Info => 9,
            Method::Prack => 10,
            Method::Update => 11,
            Method::Message => 12,
            Method::Refer => 13,
            Method::Other(_) => 14,
        };
        MethodLabel(i)
    }
}

/// The table of counters, empty slots until first used.
pub struct Requests {
    slots: Box<[OnceLock<Counter>]>,
}

impl Requests {
    pub fn new() -> Requests {
        let n = METHODS.len() * CODE_NAMES.len() * TRANSPORTS.len();
        Requests { slots: (0..n).map(|_| OnceLock::new()).collect() }
    }

    /// The counter of one label set, registered with `recorder` the first time.
    pub fn get(&self, recorder: &PrometheusRecorder, method: MethodLabel, code: Option<u16>, transport: Transport) -> &Counter {
        let c = code.map_or(NO_CODE, code_slot);
        let (m, t) = (usize::from(method.0), transport as usize);
        let i = (m * CODE_NAMES.len() + c) * TRANSPORTS.len() + t;
        self.slots[i].get_or_init(|| {
            let labels = vec![
                Label::from_static_parts("method", METHODS[m]),
                Label::from_static_parts("code", CODE_NAMES[c]),
                Label::from_static_parts("transport", TRANSPORTS[t]),
            ];
            recorder.register_counter(&Key::from_parts(REQUESTS, labels), &super::metadata())
        })
    }
}

impl Default for Requests {
    fn default() -> Self {
        Requests::new()
    }
}

fn code_slot(code: u16) -> usize {
    CODES.binary_search(&code).unwrap_or(OTHER_CODE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_sorted_and_named() {
        assert!(CODES.windows(2).all(|w| w[0] < w[1]), "binary search needs them sorted");
        for (i, c) in CODES.iter().enumerate() {
            assert_eq!(CODE_NAMES[i], c.to_string());
        }
        assert_eq!(code_slot(299), OTHER_CODE);
        assert_eq!(MethodLabel::of(&Method::Other("FOO".into())).0 as usize, METHODS.len() - 1);
    }
}
