//! Wires the parts: binds the transports, builds the core and its handlers, and runs until
//! told to stop. The only place that knows every part; it holds no logic of its own.

use crate::config::Config;
use crate::core::{Core, CoreSink, Handlers};
use crate::index::{self, Index};
use crate::limits::Limits;
use crate::subscription::{self, Shared, SubscribeHandler, Subscriptions};
use crate::transaction::{ClientTransactions, Timers};
use crate::transport::{self, BoundAddrs, StreamLimits, Transports};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A started server. Dropping it does not stop it: call `shutdown`.
pub struct Server {
    addrs: BoundAddrs,
    shutdown: watch::Sender<bool>,
    client_tx: Arc<ClientTransactions>,
    index: Index,
    subscriptions: Arc<Subscriptions>,
    admin: Option<std::net::SocketAddr>,
    limits: Arc<Limits>,
}

impl Server {
    /// Binds everything the config asks for and starts serving.
    pub async fn start(config: &Config) -> anyhow::Result<Server> {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let tls = if config.sip.tls.is_empty() {
            None
        } else {
            let (cert, key) = (config.tls.cert_file.as_deref(), config.tls.key_file.as_deref());
            Some(transport::tls::acceptor(cert, key, &config.data_dir, &config.domain)?)
        };
        let abuse = Limits::new(&config.limits);
        let limits = StreamLimits {
            max_message: config.sip.max_message_size,
            idle_timeout: Duration::from_secs(config.sip.idle_timeout_secs),
            read_timeout: Duration::from_secs(config.sip.read_timeout_secs),
            max_connections: config.sip.max_connections,
            sources: abuse.clone(),
        };
        let sip = &config.sip;
        let transports = Transports::bind(&sip.udp, &sip.tcp, &sip.tls, tls, limits, shutdown_rx.clone()).await?;
        let addrs = transports.local_addrs();
        let timers = Timers { t1: Duration::from_millis(sip.t1_ms), t2: Duration::from_millis(sip.t2_ms) };
        let index = Index::open(&index::dir_in(&config.data_dir))?;
        let admin = start_admin(config, &index, &shutdown_rx).await?;
        let sender = transports.sender();
        let client_tx = Arc::new(ClientTransactions::new(timers, sender.clone()));
        let subscriptions = Arc::new(Subscriptions::default());
        let shared = Arc::new(Shared {
            index: index.clone(),
            client_tx: client_tx.clone(),
            table: subscriptions.clone(),
            min_interval: Duration::from_millis(config.notify.min_interval_ms),
        });
        tokio::spawn(subscription::live::follow(index.clone(), subscriptions.clone(), shutdown_rx.clone()));
        let handlers = Handlers {
            subscribe: Some(SubscribeHandler::new(shared, Arc::new(config.clone()))?),
            ..Handlers::default()
        };
        let core = Core::new(sender, client_tx.clone(), timers, handlers, sip.log_messages, abuse.clone());
        transports.run(Arc::new(CoreSink(core)));
        tracing::info!(udp = ?addrs.udp, tcp = ?addrs.tcp, tls = ?addrs.tls, admin = ?admin, "smart-presence listening");
        Ok(Server { addrs, shutdown, client_tx, index, subscriptions, admin, limits: abuse })
    }

    /// The binding index the server serves from (bind through it and watchers are told).
    pub fn index(&self) -> &Index {
        &self.index
    }

    pub fn subscriptions(&self) -> &Arc<Subscriptions> {
        &self.subscriptions
    }

    /// The abuse limits' counters (connections, subscriptions, tracked sources).
    pub fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    /// Where the admin endpoint listens, when enabled.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin
    }

    pub fn addrs(&self) -> &BoundAddrs {
        &self.addrs
    }

    /// Closes the listeners, then gives our pending requests up to `grace` to finish.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.shutdown.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        while self.client_tx.pending() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tracing::info!("smart-presence stopped");
    }
}

/// Binds the admin endpoint (when configured) and serves it until shutdown.
async fn start_admin(config: &Config, index: &Index, shutdown: &watch::Receiver<bool>) -> anyhow::Result<Option<std::net::SocketAddr>> {
    let Some(listen) = config.admin.listen else { return Ok(None) };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind admin endpoint {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let mut stop = shutdown.clone();
    let index = index.clone();
    tokio::spawn(async move {
        let signal = async move {
            let _ = stop.changed().await;
        };
        if let Err(e) = index::admin::serve_on(listener, index, signal).await {
            tracing::error!("admin endpoint: {e}");
        }
    });
    Ok(Some(addr))
}
