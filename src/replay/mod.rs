//! `smart-presence replay`: replays the client side of a SIP trace against a server, in
//! many copies, and reports what differed and how long it took.
//!
//! - [`packet`]: Ethernet/SLL/loopback, IPv4/IPv6, UDP/TCP headers of captured frames
//!   (with the `etherparse` crate) and IPv4/IPv6 reassembly.
//! - [`pcap`]: pcap and pcapng files (with the `pcap-parser` crate).
//! - [`text`]: SIPp `-trace_msg` logs and sngrep text exports.
//! - [`trace`]: the trace model, format detection, TCP reassembly.
//! - [`script`]: what each client of the trace sent and how it answered.
//! - [`rewrite`]: addresses, Call-IDs, tags, branches and phone numbers per copy.
//! - [`runner`]: sockets, timing, retransmission, answering the server's requests.
//! - [`report`]: counts, differing response codes, latency percentiles.

pub mod packet;
pub mod pcap;
pub mod read;
pub mod report;
pub mod rewrite;
pub mod runner;
pub mod script;
pub mod text;
pub mod trace;

use trace::Proto;
use report::Report;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The `replay` command line.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The trace: pcap, pcapng, SIPp `-trace_msg` log or sngrep text export.
    pub trace: PathBuf,
    /// The server to replay against, HOST:PORT.
    #[arg(long)]
    pub target: SocketAddr,
    /// Trace time is divided by this (2 = twice as fast); 0 = no pauses at all.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Copies of the trace's clients run in parallel, each with its own socket and ids.
    #[arg(long, default_value_t = 1)]
    pub copies: u64,
    /// Copy N adds N x this to every phone number (+ and 7-15 digits), so copies are
    /// distinct users with distinct address books.
    #[arg(long, default_value_t = 1000)]
    pub number_step: u64,
    /// The trace's server address (default: where its first request went).
    #[arg(long)]
    pub server: Option<SocketAddr>,
    /// Replay over this transport instead of the trace's.
    #[arg(long, value_enum)]
    pub transport: Option<Transport>,
    /// Seconds to wait for a final response, or for the server requests the trace shows.
    #[arg(long, default_value_t = 5.0)]
    pub timeout: f64,
    /// Local address to send from (default: the loopback of the target's family).
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Reads the trace and replays it.
pub async fn run(args: Args) -> anyhow::Result<Report> {
    let trace = read::read_file(&args.trace)?;
    replay(&trace, &args).await
}

/// Replays a parsed trace as `args` say (`args.trace` is not read).
pub async fn replay(trace: &trace::Trace, args: &Args) -> anyhow::Result<Report> {
    let server = script::server_of(trace, args.server).ok_or_else(|| anyhow::anyhow!("the trace holds no request"))?;
    let scripts = script::scripts(trace, server);
    let steps: u64 = scripts.iter().map(|s| s.steps.len() as u64).sum::<u64>() * args.copies;
    let plan = Arc::new(runner::Plan {
        target: args.target,
        bind: args.bind.unwrap_or(if args.target.is_ipv4() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { IpAddr::V6(Ipv6Addr::LOCALHOST) }),
        speed: args.speed,
        timeout: Duration::from_secs_f64(args.timeout.max(0.01)),
        proto: args.transport.map(|t| if t == Transport::Udp { Proto::Udp } else { Proto::Tcp }),
        number_step: args.number_step,
        run_id: format!("{:06x}", rand::random::<u32>() & 0xff_ffff),
    });
    let progress = progress_bar(steps, args.quiet);
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for copy in 0..args.copies {
        for s in &scripts {
            tasks.push(tokio::spawn(runner::run_session(s.clone(), copy, plan.clone(), progress.clone())));
        }
    }
    let mut report = Report::default();
    for t in tasks {
        report.merge(t.await?);
    }
    progress.finish_and_clear();
    report.elapsed = started.elapsed();
    Ok(report)
}

/// A bar for runs of more than 100 requests on a terminal.
fn progress_bar(len: u64, quiet: bool) -> indicatif::ProgressBar {
    if quiet || len <= 100 {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} requests ({per_sec})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
