//! The `smart-presence` command line.

use clap::{Parser, Subcommand};
use smart_presence::config::{Config, LogFormat};
use smart_presence::cli::accounts::AccountsCommand;
use smart_presence::cli::bindings::BindingsCommand;
use smart_presence::server::Server;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// mimalloc: glibc malloc spent a quarter of a bulk import faulting in pages it had just
/// given back to the kernel, and serialises threads on its arena lock. Built with `no_thp`
/// (Cargo.toml): with transparent huge pages, a first touch of a fresh 2 MB region faulted
/// in a whole huge page, sometimes after a synchronous compaction, which stalled a worker
/// for 20-200 ms (500-number first NOTIFY p99 up to 57 ms instead of 2.5 ms) and left
/// partly used huge pages in RSS (~200 B more per held subscription).
///
/// Long-lived state (`smart_presence::memory::long_lived`) comes from a mimalloc heap of
/// its own, so that the pages of short-lived buffers empty out and go back to the kernel.
#[global_allocator]
static GLOBAL: Routed = Routed;

/// The heap of long-lived state; null until `main` makes it.
static LONG_LIVED_HEAP: AtomicPtr<libmimalloc_sys::mi_heap_t> = AtomicPtr::new(std::ptr::null_mut());

/// mimalloc, with long-lived allocations in their own heap (mimalloc v3 heaps serve any
/// thread; `mi_free` frees a block of any heap).
struct Routed;

impl Routed {
    fn long_lived_heap() -> Option<*mut libmimalloc_sys::mi_heap_t> {
        let heap = LONG_LIVED_HEAP.load(Ordering::Relaxed);
        (!heap.is_null() && smart_presence::memory::is_long_lived()).then_some(heap)
    }
}

// SAFETY: every block comes from mimalloc (the default or the long-lived heap) with the
// layout's size and alignment, and `mi_free` (`MiMalloc::dealloc`) frees blocks of any heap.
unsafe impl GlobalAlloc for Routed {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match Self::long_lived_heap() {
            Some(heap) => unsafe { libmimalloc_sys::mi_heap_malloc_aligned(heap, layout.size(), layout.align()).cast() },
            None => unsafe { mimalloc::MiMalloc.alloc(layout) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match Self::long_lived_heap() {
            Some(heap) => unsafe { libmimalloc_sys::mi_heap_zalloc_aligned(heap, layout.size(), layout.align()).cast() },
            None => unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match Self::long_lived_heap() {
            Some(heap) => unsafe { libmimalloc_sys::mi_heap_realloc_aligned(heap, ptr.cast(), new_size, layout.align()).cast() },
            None => unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) },
        }
    }
}

/// Makes the long-lived heap; first thing in `main`, before any other thread.
fn make_long_lived_heap() {
    // SAFETY: creates an empty heap; mimalloc is initialised on first use.
    let heap = unsafe { libmimalloc_sys::mi_heap_new() };
    LONG_LIVED_HEAP.store(heap, Ordering::Relaxed);
}

/// mimalloc's `mi_option_purge_delay` (its `mi_option_t` in v2 and v3; libmimalloc-sys
/// names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed pages stay with mimalloc before going back to the kernel.
const PURGE_DELAY_MS: std::ffi::c_long = 1000;

/// Freed pages go back to the kernel within about a second of emptying out, even when the
/// server has gone idle. At once (a delay of 0) cost a tenth of a busy list cycle in page
/// faults and `madvise` (BENCHMARKS.md, session 14); left to mimalloc, the delay is
/// counted only when a heap is next used, and an idle server holding 100,000
/// subscriptions kept ~250 B of freed memory each ("Memory per held subscription"). A
/// thread of its own therefore has mimalloc purge what is pending every second
/// (mimalloc's purge is program-wide). An operator's `MIMALLOC_PURGE_DELAY` wins: then
/// neither the delay nor the thread is ours.
fn purge_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: sets one of mimalloc's options (any value is valid); first thing in `main`,
    // before any other thread exists (mimalloc: "not thread safe").
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
    let purge = || loop {
        std::thread::sleep(Duration::from_millis(PURGE_DELAY_MS as u64));
        // SAFETY: collects this thread's (empty) heap and has the arenas purge what is pending.
        unsafe { libmimalloc_sys::mi_collect(true) };
    };
    if let Err(e) = std::thread::Builder::new().name("memory-purge".into()).spawn(purge) {
        eprintln!("smart-presence: no memory-purge thread ({e}): freed memory goes back to the kernel only while busy");
    }
}

#[derive(Parser)]
#[command(name = "smart-presence", version, about = "SIP presence server for smart contacts")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (with no --config, the built-in defaults: see examples/smart-presence.toml).
    Serve {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Manage phone-number bindings: through the running server's admin endpoint, or
    /// directly on the data directory when no server runs (see docs/bindings.md).
    Bindings {
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: BindingsCommand,
    },
    /// Create and list SIP accounts (on the data directory; the server must be stopped).
    Accounts {
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: AccountsCommand,
    },
    /// Check a configuration file: prints "ok" and a summary, or fails naming the bad key.
    CheckConfig { file: PathBuf },
    /// Replay the client side of a SIP trace (pcap, pcapng, SIPp or sngrep text) against a server.
    Replay(smart_presence::replay::Args),
}

fn load_config(path: Option<&PathBuf>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Config::load(p),
        None => Ok(Config::default()),
    }
}

/// Logs go to stderr, coloured only when it is a terminal (journald and files get plain
/// text), or as JSON lines with `log_format = "json"`. `RUST_LOG`, when set and valid,
/// overrides `level`.
fn init_logging(level: &str, format: LogFormat) {
    let env = std::env::var("RUST_LOG").ok();
    let filter = env
        .as_deref()
        .and_then(log_filter)
        .or_else(|| log_filter(level))
        .unwrap_or_else(|| EnvFilter::new("info,rustls=error"));
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.with_ansi(std::io::stderr().is_terminal()).init(),
        // One object a line: timestamp, level, target, message and the event's fields at
        // the top, the current span's fields in `span` and every open span in `spans`.
        LogFormat::Json => fmt.json().flatten_event(true).with_current_span(true).with_span_list(true).init(),
    }
}

/// The filter `spec` asks for, with rustls at error unless `spec` names it: rustls warns
/// about peers' protocol slips an operator cannot act on (liblinphone sends an IP address
/// as SNI on every TLS connection: "Illegal SNI extension"), and handshakes that fail are
/// logged by the transport.
fn log_filter(spec: &str) -> Option<EnvFilter> {
    let spec = spec.trim();
    if spec.is_empty() {
        return None;
    }
    let names_rustls = spec.split(',').any(|d| {
        let target = d.split(['=', '[']).next().unwrap_or("").trim();
        target == "rustls" || target.starts_with("rustls::")
    });
    let full = if names_rustls { spec.to_string() } else { format!("{spec},rustls=error") };
    EnvFilter::try_new(full).ok()
}

/// Raises the open-file limit as far as allowed and logs the figure the server runs with.
fn raise_fd_limit() {
    match smart_presence::fd_limit::raise_to_hard() {
        Ok(n) => tracing::info!("open-file limit (RLIMIT_NOFILE): {n}"),
        Err(e) => tracing::warn!("cannot read the open-file limit: {e}"),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Installed before the sockets open, so a signal never finds the default action.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let server = Server::start(&config).await?;
    // Every listener is bound and served: systemd may count us started (Type=notify).
    let systemd = smart_presence::systemd::Notifier::from_env().map(std::sync::Arc::new);
    if let Some(n) = &systemd {
        n.notify("READY=1\nSTATUS=serving");
    }
    let (stop_watchdog, watchdog_stopped) = tokio::sync::watch::channel(false);
    if let (Some(every), Some(n)) = (smart_presence::systemd::watchdog_interval(), &systemd) {
        tracing::info!(every_ms = every.as_millis() as u64, "systemd watchdog");
        tokio::spawn(n.clone().watchdog(every, watchdog_stopped));
    }
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("stopping");
    if let Some(n) = &systemd {
        n.notify("STOPPING=1\nSTATUS=stopping");
    }
    server.shutdown(Duration::from_secs(2)).await;
    let _ = stop_watchdog.send(true);
    Ok(())
}

fn main() -> std::process::ExitCode {
    make_long_lived_heap();
    purge_freed_memory();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("smart-presence: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { config } => {
                let config = load_config(config.as_ref())?;
                init_logging(&config.log_level, config.log_format);
                raise_fd_limit();
                serve(config).await
            }
            Command::Bindings { config, command } => {
                let config = load_config(config.as_ref())?;
                init_logging("warn", LogFormat::Text);
                smart_presence::cli::bindings::run(command, &config).await
            }
            Command::Accounts { config, command } => {
                let config = load_config(config.as_ref())?;
                init_logging("warn", LogFormat::Text);
                smart_presence::cli::accounts::run(command, &config).await
            }
            Command::CheckConfig { file } => {
                let config = Config::load(&file)?;
                print!("ok\n{}", config.summary());
                Ok(())
            }
            Command::Replay(args) => {
                init_logging("warn", LogFormat::Text);
                let report = smart_presence::replay::run(args).await?;
                print!("{}", report.render());
                anyhow::ensure!(report.matches_trace(), "the replay differed from the trace");
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smart-presence: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn the_option_set_at_start_is_mimallocs_purge_delay() {
        // Its default, 1,000 ms, is no other option's (unless the environment set it).
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // SAFETY: reads an option.
            let delay = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
            assert_eq!(delay, 1000);
        }
    }

    #[test]
    fn rustls_is_quiet_unless_the_filter_names_it() {
        let shown = |spec: &str| log_filter(spec).map(|f| f.to_string());
        assert!(shown("debug").unwrap().contains("rustls=error"));
        assert!(shown("warn,smart_presence=debug").unwrap().contains("rustls=error"));
        let named = shown("info,rustls=debug").unwrap();
        assert!(named.contains("rustls=debug") && !named.contains("rustls=error"), "{named}");
        assert!(shown("tokio_rustls=debug").unwrap().contains("rustls=error"), "another crate is not rustls");
        assert!(shown("  ").is_none());
        assert!(shown("info,=[").is_none(), "an invalid filter falls back");
    }
}
