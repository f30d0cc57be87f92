//! Configuration: the TOML file an operator writes, with a documented default for every key.
//!
//! Owns parsing, validation and defaults. Nothing here opens sockets or files other than the
//! config file itself; `server.rs` turns a `Config` into running parts. Every key is
//! documented in `examples/smart-presence.toml`, which a test parses so the two cannot drift
//! apart.
//!
//! Closed sets of values (`notify.format`, `auth.mode`, gateway kinds, regions, the log
//! level) are types parsed when the file is read: a typo is an error at start naming the key
//! and the allowed values, never a silent default.

use crate::numbers::Region;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// A setting taking one of a fixed set of words: an enum with its words, parsed (case
/// sensitive) with an error listing them.
macro_rules! choice {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal $(| $alias:literal)*),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vm])* $variant),+
        }

        impl $name {
            /// The words accepted, as the file writes them.
            pub const ALLOWED: &'static [&'static str] = &[$($text),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text $(| $alias)* => Ok($name::$variant),)+
                    _ => Err(format!("unknown value {s:?}, expected one of: {}", Self::ALLOWED.join(", "))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

choice! {
    /// How NOTIFY bodies are spelled (`notify.format`).
    NotifyFormat {
        /// By User-Agent: belle-sip 5.4+ and `rfc_user_agents` get RFC, others liblinphone's.
        Auto = "auto",
        Linphone = "linphone",
        Rfc = "rfc",
    }
}

choice! {
    /// What a clean stop does with the subscriptions (`subscription.on_shutdown`).
    OnShutdown {
        /// Keep them in the store: the next start resumes them, and no phone notices.
        Keep = "keep",
        /// End each with `terminated;reason=deactivated` (RFC 6665 §4.2.2): the phone
        /// re-subscribes at once (to another node, behind a load balancer).
        Deactivate = "deactivate",
    }
}

choice! {
    /// What a survivor does with a dead cluster node's subscriptions (`cluster.takeover`).
    Takeover {
        /// End each with `terminated;reason=deactivated` (RFC 6665 §4.2.2): the phone
        /// re-subscribes through the load balancer.
        Deactivate = "deactivate",
        /// Go on with each from the survivor, in the same dialog (a full state from it):
        /// for phones that do not re-subscribe on `deactivated`, as liblinphone 5.1's lists.
        Adopt = "adopt",
    }
}

choice! {
    /// Who is believed (`auth.mode`).
    AuthMode {
        /// Digest against the account store.
        Digest = "digest",
        /// The From URI as given (trusted networks or tests only).
        None = "none",
    }
}

choice! {
    /// A delivery gateway's kind (`provisioning.sms.kind`, `provisioning.voice.kind`).
    GatewayKind {
        Log = "log",
        Http = "http",
        /// Disabled (an empty string says the same).
        None = "none" | "",
    }
}

choice! {
    /// How an http gateway escapes values in its body template.
    BodyEncoding {
        Form = "form",
        Json = "json",
        Raw = "raw",
    }
}

choice! {
    /// How log lines are written (`log_format`).
    LogFormat {
        /// Human-readable lines.
        Text = "text",
        /// One JSON object a line: timestamp, level, target, message, the event's fields,
        /// and the fields of the spans it is in.
        Json = "json",
    }
}

/// A secret setting (`admin.token`): never shown by `Debug`, so a config printed in a log
/// or an error does not leak it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_string())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// `log_level`: a level (`error`, `warn`, `info`, `debug`, `trace`, `off`) or a full
/// `tracing` filter (`info,smart_presence::transport=debug`), checked when the file is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLevel(String);

impl LogLevel {
    const LEVELS: &'static [&'static str] = &["error", "warn", "info", "debug", "trace", "off"];

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<LogLevel, String> {
        let t = s.trim();
        let is_level = LogLevel::LEVELS.iter().any(|l| l.eq_ignore_ascii_case(t));
        // A bare word that is no level would be read by `tracing` as a target name and
        // silently log nothing of ours: only filters with directives pass as filters.
        let is_filter = t.contains(['=', ',']) && tracing_subscriber::EnvFilter::try_new(t).is_ok();
        if is_level || is_filter {
            return Ok(LogLevel(t.to_string()));
        }
        Err(format!(
            "unknown value {s:?}, expected one of: {}, or a tracing filter such as \"info,smart_presence=debug\"",
            LogLevel::LEVELS.join(", ")
        ))
    }
}

impl std::ops::Deref for LogLevel {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `numbers.default_region`: an ISO 3166 code (`FR`, any case), or `""` for none.
fn region<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Region>, D::Error> {
    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    match s.trim() {
        "" => Ok(None),
        r => crate::numbers::parse_region(r).map(Some).map_err(|_| {
            serde::de::Error::custom(format!("unknown region {s:?}, expected an ISO 3166 code such as FR, DE, US, or \"\" for none"))
        }),
    }
}

/// The whole configuration. Unknown keys are an error, so typos do not pass silently.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The service domain: used in our own URIs (`sip:rls@DOMAIN`) and To tags' Contact.
    pub domain: String,
    /// Where sled and the generated TLS certificate live.
    pub data_dir: PathBuf,
    /// `error`, `warn`, `info`, `debug`, `trace` or `off` (or a full `tracing` filter string).
    pub log_level: LogLevel,
    /// `text` (the default) or `json` (one object a line, for log collectors).
    pub log_format: LogFormat,
    pub sip: SipConfig,
    pub tls: TlsConfig,
    pub numbers: NumbersConfig,
    pub admin: AdminConfig,
    pub subscription: SubscriptionConfig,
    pub notify: NotifyConfig,
    pub presence: PresenceConfig,
    pub auth: AuthConfig,
    pub registrar: RegistrarConfig,
    pub provisioning: ProvisioningConfig,
    pub budget: BudgetConfig,
    pub limits: LimitsConfig,
    pub metrics: MetricsConfig,
    pub address_books: AddressBooksConfig,
    pub cluster: ClusterConfig,
}

/// Prometheus metrics (`src/metrics/`), served at the admin listener's `GET /metrics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Count and serve them (only while `admin.listen` is set). Off: nothing is counted.
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { enabled: true }
    }
}

/// The embedded registrar (REGISTER), for one-box deployments.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrarConfig {
    /// Serve REGISTER. Off when another registrar (e.g. Kamailio) publishes presence to us.
    pub enabled: bool,
    pub default_expires: u32,
    /// Shorter non-zero requests get 423 with Min-Expires.
    pub min_expires: u32,
    pub max_expires: u32,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig { enabled: true, default_expires: 3600, min_expires: 60, max_expires: 3600 }
    }
}

/// Who may subscribe, publish and register.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `digest`: SUBSCRIBE, PUBLISH and REGISTER are challenged (401, RFC 8760 SHA-256 and
    /// MD5) against the account store. `none`: the From URI is believed (trusted networks
    /// or tests only).
    pub mode: AuthMode,
    /// Source addresses of proxies whose requests are trusted without a challenge; the
    /// identity is their P-Asserted-Identity, else From (e.g. the registrar that PUBLISHes).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// How long a digest nonce is good for.
    pub nonce_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig { mode: AuthMode::Digest, trusted_proxies: Vec::new(), nonce_secs: 300 }
    }
}

/// Presence state from PUBLISH (and registrars that publish).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PresenceConfig {
    /// Expires granted to a PUBLISH that has none.
    pub default_expires: u32,
    /// Shorter non-zero PUBLISH Expires get 423 with Min-Expires.
    pub min_expires: u32,
    /// Longer ones are shortened.
    pub max_expires: u32,
    /// Least time between two presence NOTIFYs about one presentity (RFC 3856 §6.10: 5 s).
    pub notify_interval_secs: u64,
    /// Report bound users who are offline as reachable (open, with an "away" activity and
    /// their last-seen time), as Flexisip's long-term presence does; false reports closed.
    pub long_term: bool,
}

/// Abuse limits per source address and per account (`src/limits.rs`). 0 means unlimited.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Messages per second one source address may send, sustained (IPv6: per /64).
    pub requests_per_second: u32,
    /// Messages a source may send at once above the sustained rate.
    pub request_burst: u32,
    /// Beyond its rate, a source gets at most this many 503s (with Retry-After) a second;
    /// further messages are dropped unread.
    pub rejects_per_second: u32,
    /// Source addresses the rate limiter keeps state for; while it is full of busy ones,
    /// new sources share one bucket.
    pub max_sources: usize,
    /// TCP/TLS connections open at once from one source address.
    pub max_connections_per_source: usize,
    /// Active subscriptions of one account (the From URI as `sip:user@host`).
    pub max_subscriptions_per_account: usize,
    /// Active subscriptions from one source address.
    pub max_subscriptions_per_source: usize,
    /// Active subscriptions in all.
    pub max_subscriptions: usize,
    /// List entries held by all active subscriptions together: the memory bound (an entry
    /// costs about 200 bytes with its share of the reverse index).
    pub max_entries_held: usize,
    /// Retry-After (seconds) of the 503 refusing a subscription over a cap.
    pub subscription_retry_after_secs: u32,
}

/// List subscriptions: lifetimes and the caps on what a SUBSCRIBE may carry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubscriptionConfig {
    /// Expires granted when the SUBSCRIBE has none (RFC 3856 §6.4: 3600).
    pub default_expires: u32,
    /// The most we grant; longer requests are shortened.
    pub max_expires: u32,
    /// Shorter non-zero requests get 423 with Min-Expires.
    pub min_expires: u32,
    /// Most entries in one list (413 beyond).
    pub max_entries: usize,
    /// Most bytes of list XML after decompression (413 beyond).
    pub max_body_bytes: usize,
    /// Most inflated/compressed ratio accepted (decompression bombs get 413).
    pub max_compression_ratio: usize,
    /// Stored subscriptions resumed per second after a start (each gets a full-state
    /// NOTIFY), so that a restart does not burst.
    pub resume_per_second: u32,
    /// `keep` (resume at the next start) or `deactivate` (end them, the phones re-subscribe).
    /// In cluster mode this is not read: a clean stop hands them over as
    /// `cluster.takeover` says (left to a survivor to adopt, or deactivated).
    pub on_shutdown: OnShutdown,
}

/// How NOTIFYs are written and paced.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// `auto` (by User-Agent), `linphone` or `rfc`.
    pub format: NotifyFormat,
    /// With `auto`: clients whose User-Agent contains one of these get the RFC spelling.
    /// belle-sip 5.4 and later are recognised without being listed here.
    pub rfc_user_agents: Vec<String>,
    /// Compress NOTIFY bodies when the SUBSCRIBE's Accept-Encoding lists deflate.
    pub compress: bool,
    /// Largest NOTIFY body (as sent, after compression) over UDP; a larger state is split.
    pub max_body_udp: usize,
    /// The same over TCP and TLS.
    pub max_body_stream: usize,
    /// Most users (PIDF documents) in one list NOTIFY; more continue in partial NOTIFYs.
    /// liblinphone 5.1 takes time growing faster than linearly with the users in one
    /// NOTIFY (1,000 in one: ~43 s, past Timer F), so a big state goes in small steps.
    pub max_users_per_notify: usize,
    /// Least time between two NOTIFYs of one subscription for live updates (coalescing).
    pub min_interval_ms: u64,
}

/// Listening addresses and SIP-layer limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    pub udp: Vec<SocketAddr>,
    pub tcp: Vec<SocketAddr>,
    pub tls: Vec<SocketAddr>,
    /// Log every SIP message sent and received (at info level). Off by default: messages
    /// carry subscribers' address books.
    pub log_messages: bool,
    /// Largest message accepted on a stream transport, in bytes (UDP is capped at 65,535).
    pub max_message_size: usize,
    /// A TCP/TLS connection with no traffic for this long is closed.
    pub idle_timeout_secs: u64,
    /// A message started on a TCP/TLS connection must be complete within this many seconds,
    /// or the connection is closed (slow-loris clients).
    pub read_timeout_secs: u64,
    /// The most concurrent TCP/TLS connections; new ones are refused beyond it.
    pub max_connections: usize,
    /// RFC 3261 T1 (ms): base for retransmission timers (E, F, J).
    pub t1_ms: u64,
    /// RFC 3261 T2 (ms): cap of the retransmission interval.
    pub t2_ms: u64,
}

/// TLS certificate. When both paths are empty, a self-signed certificate is generated into
/// `data_dir/tls/` on first start and reused afterwards.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// Phone-number handling.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NumbersConfig {
    /// ISO 3166 region used for national numbers when the subscriber's own region is unknown
    /// (`""` in the file: none).
    #[serde(deserialize_with = "region")]
    pub default_region: Option<Region>,
}

/// The local management endpoint the CLI talks to while the server runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Empty disables it. Off loopback, `token` or `token_file` must be set.
    pub listen: Option<SocketAddr>,
    /// The bearer token every admin route but the health checks requires
    /// (`Authorization: Bearer <token>`). Unset: the routes are open to local users.
    pub token: Option<Secret>,
    /// The same read from a file (trimmed), e.g. one only the service's user can read.
    pub token_file: Option<PathBuf>,
    /// Serve `/metrics` without the token (a scraper on a trusted network).
    pub metrics_open: bool,
    /// HTTP connections open at once; more are closed on accept. 0 = unlimited.
    pub max_connections: usize,
    /// The same per source address (IPv6: per /64); 0 = only `max_connections` applies.
    pub max_connections_per_source: usize,
    /// A connection must send a request's whole header within this many seconds of opening
    /// (or of its previous response), else it is closed (idle and slow clients). At least 1.
    pub header_read_timeout_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            domain: "localhost".into(),
            data_dir: PathBuf::from("./data"),
            log_level: LogLevel("info".into()),
            log_format: LogFormat::Text,
            sip: SipConfig::default(),
            tls: TlsConfig::default(),
            numbers: NumbersConfig::default(),
            admin: AdminConfig::default(),
            subscription: SubscriptionConfig::default(),
            notify: NotifyConfig::default(),
            presence: PresenceConfig::default(),
            auth: AuthConfig::default(),
            registrar: RegistrarConfig::default(),
            provisioning: ProvisioningConfig::default(),
            budget: BudgetConfig::default(),
            limits: LimitsConfig::default(),
            metrics: MetricsConfig::default(),
            address_books: AddressBooksConfig::default(),
            cluster: ClusterConfig::default(),
        }
    }
}

impl Default for PresenceConfig {
    fn default() -> Self {
        PresenceConfig { default_expires: 3600, min_expires: 60, max_expires: 7200, notify_interval_secs: 5, long_term: true }
    }
}

impl Default for SubscriptionConfig {
    fn default() -> Self {
        SubscriptionConfig {
            default_expires: 3600,
            max_expires: 3600,
            min_expires: 60,
            max_entries: 5000,
            max_body_bytes: 1 << 20,
            max_compression_ratio: 100,
            resume_per_second: 5_000,
            on_shutdown: OnShutdown::Keep,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            requests_per_second: 50,
            request_burst: 200,
            rejects_per_second: 5,
            max_sources: 65_536,
            max_connections_per_source: 100,
            max_subscriptions_per_account: 20,
            max_subscriptions_per_source: 1000,
            max_subscriptions: 100_000,
            max_entries_held: 5_000_000,
            subscription_retry_after_secs: 60,
        }
    }
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            format: NotifyFormat::Auto,
            rfc_user_agents: Vec::new(),
            compress: true,
            max_body_udp: 16 * 1024,
            max_body_stream: 256 * 1024,
            max_users_per_notify: 100,
            min_interval_ms: 1000,
        }
    }
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            udp: vec![any_v4(5060), any_v6(5060)],
            tcp: vec![any_v4(5060), any_v6(5060)],
            tls: vec![any_v4(5061), any_v6(5061)],
            log_messages: false,
            max_message_size: 1 << 20,
            idle_timeout_secs: 600,
            read_timeout_secs: 10,
            max_connections: 10_000,
            t1_ms: 500,
            t2_ms: 4_000,
        }
    }
}

impl Default for NumbersConfig {
    fn default() -> Self {
        NumbersConfig { default_region: Some(Region::FR) }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: Some("127.0.0.1:5080".parse().expect("valid literal")),
            token: None,
            token_file: None,
            metrics_open: false,
            max_connections: 64,
            max_connections_per_source: 0,
            header_read_timeout_secs: 10,
        }
    }
}

/// The phone-number verification and provisioning web service (`src/provisioning/`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvisioningConfig {
    /// Where the HTTP API listens. Unset (the default) disables the service. The listener
    /// speaks plain HTTP: put a TLS proxy in front of it on a public address.
    pub listen: Option<SocketAddr>,
    /// The `{app}` placeholder of the messages.
    pub app_name: String,
    /// Digits in a one-time code.
    pub code_length: usize,
    /// How long a code may be used.
    pub code_validity_secs: u64,
    /// Most codes sent to one number and device within `send_window_secs`; then 429.
    pub max_sends: u32,
    /// Most codes sent to one number, all devices together, within `send_window_secs`:
    /// device ids are chosen by clients, so this bounds SMS to a victim and code guessing.
    pub max_sends_per_number: u32,
    /// The period the send counters cover, from their first send.
    pub send_window_secs: u64,
    /// Least time between two sends to one number and device (429 with Retry-After).
    pub resend_after_secs: u64,
    /// Wrong codes that lock a verification (a new code must be requested).
    pub max_wrong_codes: u32,
    /// SIP username of a new account: `{digits}` is the E.164 number without `+` (the
    /// default), `{number}` the same with `+` (`sip:+33...@domain` is a SIP user too).
    pub username_template: String,
    /// Let a device that already verified a number get fresh credentials for it without a
    /// new code. Off: a device id can be forged.
    pub reinstall_recovery: bool,
    /// Largest request body, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Most numbers in one address-book query (413 beyond).
    pub max_address_book: usize,
    /// Lifetime of an HTTP Digest nonce, in seconds.
    pub digest_nonce_secs: u64,
    /// HTTP connections open at once; more are closed on accept. 0 = unlimited.
    pub max_connections: usize,
    /// The same per source address (IPv6: per /64). Behind a proxy every connection comes
    /// from the proxy's address: raise it, or 0 (only `max_connections` applies).
    pub max_connections_per_source: usize,
    /// A connection must send a request's whole header within this many seconds of opening
    /// (or of its previous response), else it is closed (idle and slow clients). At least 1.
    pub header_read_timeout_secs: u64,
    /// When set, the delivery-status callback must carry `token=<this>` in its query.
    pub delivery_status_token: String,
    /// SMS text: `{app}` and `{code}`.
    pub sms_text: String,
    /// Voice-call text: `{app}`, `{code}` and `{spoken_code}` (digits spaced out).
    pub voice_text: String,
    /// Sender name or number (`{from}` of gateway templates).
    pub sender: String,
    pub sms: GatewayConfig,
    /// The optional "call me" channel; `kind = "none"` disables it.
    pub voice: GatewayConfig,
}

/// One delivery gateway (SMS or voice call).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// `log` (append to a file in data_dir and log), `http` (templated request) or `none`.
    pub kind: GatewayKind,
    /// `log`: the file, relative to data_dir.
    pub log_file: PathBuf,
    /// `http`: the URL; `{to}`, `{from}`, `{text}`, `{ref}` are replaced, URL-encoded.
    pub url: String,
    /// `http`: the method.
    pub method: String,
    /// `http`: headers sent as they are (e.g. Authorization, Content-Type).
    pub headers: std::collections::BTreeMap<String, String>,
    /// `http`: the body, with `{to}`, `{from}`, `{text}`, `{ref}` escaped by `body_encoding`.
    pub body_template: String,
    /// `http`: `form` (URL-encode values), `json` (JSON-escape values) or `raw`.
    pub body_encoding: BodyEncoding,
    /// `http` over https: PEM file of trusted CAs (unset: the platform's roots).
    pub ca_file: Option<PathBuf>,
    /// `http`: give up on the gateway after this many seconds.
    pub timeout_secs: u64,
}

/// The per-account discovery budget (`src/budget.rs`): how many new numbers an account may
/// learn about, as a token bucket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    /// Bucket size: new numbers an account may ask about at once.
    pub burst: u32,
    /// Tokens added back per day, continuously.
    pub refill_per_day: u32,
    /// Most numbers remembered per account as already charged; beyond, new numbers are
    /// still charged but not remembered.
    pub max_remembered: u32,
}

impl Default for ProvisioningConfig {
    fn default() -> Self {
        ProvisioningConfig {
            listen: None,
            app_name: "smart-presence".into(),
            code_length: 4,
            code_validity_secs: 600,
            max_sends: 5,
            max_sends_per_number: 10,
            send_window_secs: 86_400,
            resend_after_secs: 60,
            max_wrong_codes: 3,
            username_template: "{digits}".into(),
            reinstall_recovery: false,
            max_body_bytes: 256 * 1024,
            max_address_book: 5000,
            digest_nonce_secs: 300,
            max_connections: 256,
            max_connections_per_source: 32,
            header_read_timeout_secs: 10,
            delivery_status_token: String::new(),
            sms_text: "Your {app} code is: {code}".into(),
            voice_text: "Your {app} code is {spoken_code}".into(),
            sender: "smart-presence".into(),
            sms: GatewayConfig::default(),
            voice: GatewayConfig { kind: GatewayKind::None, log_file: PathBuf::from("voice.log"), ..GatewayConfig::default() },
        }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            kind: GatewayKind::Log,
            log_file: PathBuf::from("sms.log"),
            url: String::new(),
            method: "POST".into(),
            headers: Default::default(),
            body_template: String::new(),
            body_encoding: BodyEncoding::Form,
            ca_file: None,
            timeout_secs: 10,
        }
    }
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig { burst: 5000, refill_per_day: 100, max_remembered: 20_000 }
    }
}

fn any_v4(port: u16) -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], port))
}

fn any_v6(port: u16) -> SocketAddr {
    SocketAddr::from(([0u16; 8], port))
}

/// Stored address books (Contact Sync, `src/address_books/`) and the list URI a phone
/// subscribes to for its stored book (RFC 4662 with a server-side list).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AddressBooksConfig {
    /// The stored list's URI: a body-less SUBSCRIBE to it watches the subscriber's stored
    /// book. Empty: `sip:contacts@<domain>`.
    pub list_uri: String,
    /// The master key (64 hex digits) of the numbers' keyed hashes and the sealed raw
    /// forms. Empty: `key_file`, else `<data_dir>/address-books.key` (generated).
    pub key: String,
    pub key_file: Option<PathBuf>,
    /// Most contacts per book (413 beyond).
    pub max_contacts: usize,
    /// Largest upload or delta body, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Versions kept in each book's change log (older change lists answer "incomplete").
    pub log_versions: usize,
}

impl Default for AddressBooksConfig {
    fn default() -> Self {
        AddressBooksConfig { list_uri: String::new(), key: String::new(), key_file: None, max_contacts: 5000, max_body_bytes: 1 << 20, log_versions: 32 }
    }
}

impl AddressBooksConfig {
    /// The list URI, with the default filled in.
    pub fn list_uri(&self, domain: &str) -> String {
        if self.list_uri.trim().is_empty() {
            format!("sip:contacts@{domain}")
        } else {
            self.list_uri.trim().to_string()
        }
    }
}

/// Several nodes sharing their state in Redis (`src/cluster/`, `docs/cluster.md`). Off
/// unless `redis` or `sentinels` is set: then one process with sled, nothing else to start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// The Redis primary, `redis://host:port[/db]`, when no Sentinel is used.
    pub redis: String,
    /// Sentinel addresses (`host:port`), asked for the primary named `master_name`; takes
    /// the place of `redis`.
    pub sentinels: Vec<String>,
    pub master_name: String,
    /// Password of the Redis servers (`requirepass`), kept out of the logs.
    pub password: Option<Secret>,
    /// This node's name, unique in the cluster. Empty: `<host name>-<first SIP port>`.
    pub node: String,
    /// How long a node's lease lasts without renewal: a survivor takes over the
    /// subscribers of a node that stopped renewing within this time and a third of it.
    pub lease_ms: u64,
    /// Prefix of every key this cluster writes (several clusters may share one Redis).
    pub key_prefix: String,
    /// Replicas that must hold a binding write before it is acknowledged (Redis `WAIT`);
    /// 0: the primary alone (with its append-only file).
    pub replicas: u32,
    /// How long a write waits for those replicas before it is refused.
    pub wait_timeout_ms: u64,
    /// Longest wait for one Redis command; beyond it Redis counts as unreachable.
    pub timeout_ms: u64,
    /// Changes kept in each change stream (bindings, presence); a node further behind
    /// resynchronises.
    pub stream_max_len: u64,
    /// NOTIFYs per second a survivor sends to a dead node's subscribers.
    pub takeover_per_second: u32,
    /// What a survivor does with them: `adopt` (the default: it goes on with them, as
    /// their own) or `deactivate` (they re-subscribe).
    pub takeover: Takeover,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            redis: String::new(),
            sentinels: Vec::new(),
            master_name: "smart-presence".into(),
            password: None,
            node: String::new(),
            lease_ms: 6000,
            key_prefix: "sp:".into(),
            replicas: 0,
            wait_timeout_ms: 1000,
            timeout_ms: 1000,
            stream_max_len: 1_000_000,
            takeover_per_second: 500,
            takeover: Takeover::Adopt,
        }
    }
}

impl ClusterConfig {
    /// Whether cluster mode is on.
    pub fn enabled(&self) -> bool {
        !self.redis.trim().is_empty() || !self.sentinels.is_empty()
    }
}

/// What the SUBSCRIBE handler reads (`subscription::handler`), not the whole file.
#[derive(Debug, Clone)]
pub struct SubscribeSettings {
    /// The service domain (our Contact when the request's local address tells nothing).
    pub domain: String,
    pub subscription: SubscriptionConfig,
    pub notify: NotifyConfig,
    pub default_region: Option<Region>,
}

/// A configuration that does not parse: the key (as a dotted path) and what is wrong.
#[derive(Debug)]
pub struct ConfigError {
    /// `notify.format`; empty when the text is not TOML at all.
    pub key: String,
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.key.as_str(), self.line) {
            ("", Some(l)) => write!(f, "line {l}: {}", self.message),
            ("", None) => f.write_str(&self.message),
            (key, Some(l)) => write!(f, "{key} (line {l}): {}", self.message),
            (key, None) => write!(f, "{key}: {}", self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads a TOML file; a missing file is an error (the caller decides whether to default).
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        Config::parse(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))
    }

    /// Parses and checks a configuration; the error names the key.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let line = inner.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            ConfigError { key: if key == "." { String::new() } else { key }, line, message: inner.message().to_string() }
        })
    }

    /// The SUBSCRIBE handler's part.
    pub fn subscribe_settings(&self) -> SubscribeSettings {
        SubscribeSettings {
            domain: self.domain.clone(),
            subscription: self.subscription.clone(),
            notify: self.notify.clone(),
            default_region: self.numbers.default_region,
        }
    }

    /// A few lines saying what this configuration will run (for `check-config`).
    pub fn summary(&self) -> String {
        let addrs = |a: &[SocketAddr]| if a.is_empty() { "off".to_string() } else { a.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(" ") };
        let opt = |a: Option<SocketAddr>| a.map_or("off".to_string(), |a| a.to_string());
        let region = self.numbers.default_region.as_ref().map_or("none", |r| r.as_ref());
        format!(
            "domain {}\ndata_dir {}\nsip udp {}\nsip tcp {}\nsip tls {}\nauth.mode {}\nnotify.format {}\n\
             numbers.default_region {region}\nregistrar {}\nadmin {}{}\nprovisioning {}\nlog_level {}\nlog_format {}\n",
            self.domain,
            self.data_dir.display(),
            addrs(&self.sip.udp),
            addrs(&self.sip.tcp),
            addrs(&self.sip.tls),
            self.auth.mode,
            self.notify.format,
            if self.registrar.enabled { "on" } else { "off" },
            opt(self.admin.listen),
            if self.admin.token.is_some() || self.admin.token_file.is_some() { " (token)" } else { "" },
            opt(self.provisioning.listen),
            self.log_level.as_str(),
            self.log_format,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_matches_defaults() {
        let text = include_str!("../examples/smart-presence.toml");
        let parsed = Config::parse(text).expect("example config parses");
        let default = Config::default();
        assert_eq!(format!("{parsed:?}"), format!("{default:?}"));
    }

    #[test]
    fn unknown_key_is_an_error() {
        assert!(Config::parse("domian = \"x\"").is_err());
    }

    fn error(text: &str) -> String {
        Config::parse(text).expect_err(text).to_string()
    }

    #[test]
    fn a_wrong_value_names_its_key_and_the_allowed_values() {
        let e = error("[notify]\nformat = \"RFC\"\n");
        assert!(e.contains("notify.format") && e.contains("auto, linphone, rfc") && e.contains("line 2"), "{e}");
        let e = error("[auth]\nmode = \"Digest\"\n");
        assert!(e.contains("auth.mode") && e.contains("digest, none"), "{e}");
        let e = error("[numbers]\ndefault_region = \"XX\"\n");
        assert!(e.contains("numbers.default_region") && e.contains("ISO 3166"), "{e}");
        let e = error("log_level = \"verbose\"\n");
        assert!(e.contains("log_level") && e.contains("error, warn, info, debug, trace"), "{e}");
        let e = error("[provisioning.voice]\nkind = \"sms\"\n");
        assert!(e.contains("provisioning.voice.kind") && e.contains("log, http, none"), "{e}");
        let e = error("[provisioning.sms]\nbody_encoding = \"xml\"\n");
        assert!(e.contains("provisioning.sms.body_encoding") && e.contains("form, json, raw"), "{e}");
        let e = error("[sip]\nudpp = []\n");
        assert!(e.contains("udpp"), "{e}");
    }

    #[test]
    fn typed_values_parse() {
        let c = Config::parse("log_level = \"info,smart_presence=debug\"\n[notify]\nformat = \"rfc\"\n[numbers]\ndefault_region = \"de\"\n").unwrap();
        assert_eq!((c.notify.format, c.numbers.default_region), (NotifyFormat::Rfc, Some(Region::DE)));
        assert_eq!(c.log_level.as_str(), "info,smart_presence=debug");
        let c = Config::parse("[numbers]\ndefault_region = \"\"\n[provisioning.sms]\nkind = \"\"\n").unwrap();
        assert_eq!((c.numbers.default_region, c.provisioning.sms.kind), (None, GatewayKind::None));
    }
}
