//! Wires the parts: binds the transports, builds the core and its handlers, and runs until
//! told to stop. The only place that knows every part; it holds no logic of its own.

use crate::accounts::{self, Accounts};
use crate::address_books::{self, AddressBooks};
use crate::budget::{self, Budget};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::core::{Core, CoreSink, Handlers};
use crate::index::{self, Index};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::presence::{PresenceStore, PublishHandler};
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
    accounts: Accounts,
    budget: Budget,
    provisioning: Option<std::net::SocketAddr>,
    limits: Arc<Limits>,
    shared: Arc<Shared>,
    on_shutdown: crate::config::OnShutdown,
    /// The embedded presence store, written back at shutdown (None in a cluster: Redis).
    publications: Option<Arc<crate::storage::sled::SledPublications>>,
    health: crate::health::Health,
    books: AddressBooks,
    cluster: Option<Arc<Cluster>>,
}

/// The address-book store, with its key (generated on first start when the config names none).
fn open_books(config: &Config, cluster: Option<&Cluster>) -> anyhow::Result<AddressBooks> {
    let cfg = &config.address_books;
    let limits = address_books::Limits { max_contacts: cfg.max_contacts, log_versions: cfg.log_versions };
    let Some(c) = cluster else {
        let key = address_books::master_key(cfg, &config.data_dir)?;
        return Ok(AddressBooks::open(&address_books::dir_in(&config.data_dir), &key, limits)?);
    };
    let key = if cfg.key.is_empty() && cfg.key_file.is_none() {
        tracing::warn!("address_books.key unset in cluster mode: the nodes share a key kept in Redis, beside the books it seals");
        crate::storage::redis::address_books::shared_key(&c.redis)?
    } else {
        address_books::master_key(cfg, &config.data_dir)?
    };
    let store = Arc::new(crate::storage::redis::RedisAddressBooks::open(c.redis.clone()).stream_max_len(c.stream_max_len));
    let books = AddressBooks::with_store(store.clone(), &key, limits)?;
    store.follow_changes(Box::new(books.remote_marker()))?;
    Ok(books)
}

/// Accounts, budgets and digest nonces: in Redis in cluster mode, else sled and memory.
fn open_shared(config: &Config, cluster: Option<&Cluster>) -> anyhow::Result<(Accounts, Budget, Arc<dyn crate::storage::NonceStore>)> {
    use crate::storage::redis::{RedisAccounts, RedisBudgets, RedisNonces};
    let Some(c) = cluster else {
        let accounts = Accounts::open(&accounts::dir_in(&config.data_dir), &config.domain)?;
        let budget = Budget::open(&budget::dir_in(&config.data_dir), &config.budget)?;
        return Ok((accounts, budget, Arc::new(crate::storage::nonces::MemoryNonces::default())));
    };
    let accounts = Accounts::with_store(Arc::new(RedisAccounts::open(c.redis.clone())), &config.domain);
    let budget = Budget::with_store(Arc::new(RedisBudgets::open(c.redis.clone())?), &config.budget);
    Ok((accounts, budget, Arc::new(RedisNonces::open(c.redis.clone(), "sip")?)))
}

/// In cluster mode (`[cluster]`), the connection to Redis and this node's name.
async fn connect_cluster(config: &Config, addrs: &BoundAddrs) -> anyhow::Result<Option<Arc<Cluster>>> {
    if !config.cluster.enabled() {
        return Ok(None);
    }
    let port = addrs.udp.iter().chain(&addrs.tcp).chain(&addrs.tls).map(|a| a.port()).next().unwrap_or(0);
    let cfg = config.cluster.clone();
    let cluster = tokio::task::spawn_blocking(move || Cluster::connect(&cfg, port)).await??;
    Ok(Some(Arc::new(cluster)))
}

/// The presence store and the registrar's registrations: in sled (`data_dir/presence`), or
/// in a cluster shared in Redis; with the presence change channel.
type PresenceStores = (
    Option<Arc<crate::storage::sled::SledPublications>>,
    Arc<dyn crate::storage::RegistrationStore>,
    Arc<dyn crate::storage::PublicationStore>,
    tokio::sync::mpsc::UnboundedReceiver<Box<str>>,
);

async fn open_presence(config: &Config, cluster: Option<&Cluster>) -> anyhow::Result<PresenceStores> {
    if let Some(c) = cluster {
        let (redis, max_len) = (c.redis.clone(), c.stream_max_len);
        let (store, rx) = tokio::task::spawn_blocking(move || crate::storage::redis::RedisPublications::open(redis, max_len)).await??;
        let registrations = Arc::new(crate::storage::redis::RedisRegistrations::new(c.redis.clone()));
        return Ok((None, registrations, Arc::new(store), rx));
    }
    let (store, rx) = crate::storage::sled::SledPublications::open(&config.data_dir.join("presence"))?;
    let store = Arc::new(store);
    Ok((Some(store.clone()), store.clone(), store, rx))
}

impl Server {
    /// Binds everything the config asks for and starts serving.
    pub async fn start(config: &Config) -> anyhow::Result<Server> {
        let (shutdown, shutdown_rx) = watch::channel(false);
        // The admin endpoint first: its health checks answer (not ready) while the rest starts.
        let health = crate::health::Health::default();
        let opening = health.pending("stores");
        let starting = health.pending("listeners");
        let admin = crate::admin::bind(config, &health, &shutdown_rx).await?;
        tokio::task::spawn_blocking(crate::numbers::warm_up).await?;
        let tls = if config.sip.tls.is_empty() {
            None
        } else {
            let (cert, key) = (config.tls.cert_file.as_deref(), config.tls.key_file.as_deref());
            Some(transport::tls::acceptor(cert, key, &config.data_dir, &config.domain)?)
        };
        let abuse = Limits::with_trusted(&config.limits, &config.auth.trusted_proxies);
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
        let cluster = connect_cluster(config, &addrs).await?;
        let index = match &cluster {
            Some(c) => {
                let (redis, max_len) = (c.redis.clone(), c.stream_max_len);
                let store = tokio::task::spawn_blocking(move || crate::storage::redis::RedisBindings::open(redis, max_len)).await??;
                Index::with_store(Arc::new(store))
            }
            None => Index::open(&index::dir_in(&config.data_dir))?,
        };
        let (accounts, budget, nonces) = open_shared(config, cluster.as_deref())?;
        let metrics = (config.metrics.enabled && config.admin.listen.is_some()).then(|| Arc::new(Metrics::new()));
        let (publications, registrations, presence_store, presence_changes) = open_presence(config, cluster.as_deref()).await?;
        let presence = Arc::new(PresenceStore::with_store(presence_store).sharing(accounts.clone()));
        if let Some(a) = &admin {
            a.serve_server(index.clone(), budget.clone(), metrics.clone(), accounts.clone(), presence.clone(), cluster.clone());
        }
        let admin = admin.map(|a| a.addr());
        let books = open_books(config, cluster.as_deref())?;
        let for_http = crate::provisioning::Books { books: books.clone(), presence: presence.clone() };
        let provisioning = crate::provisioning::start(
            config,
            index.clone(),
            accounts.clone(),
            budget.clone(),
            health.clone(),
            metrics.clone(),
            for_http,
            cluster.as_ref().map(|c| c.redis.clone()),
            shutdown_rx.clone(),
        )
        .await?;
        let sender = transports.sender();
        let client_tx = Arc::new(ClientTransactions::new(timers, sender.clone()).counted(metrics.clone()));
        let subscriptions = Arc::new(Subscriptions::default());
        let auth = Arc::new(crate::auth::Authenticator::with_nonces(&config.auth, accounts.clone(), nonces)?);
        let shared = Arc::new(Shared {
            index: index.clone(),
            auth: auth.clone(),
            discovery: crate::discovery::Discovery::new(index.clone(), budget.clone(), config.numbers.default_region),
            limits: abuse.clone(),
            presence: presence.clone(),
            long_term: config.presence.long_term,
            client_tx: client_tx.clone(),
            table: subscriptions.clone(),
            min_interval: Duration::from_millis(config.notify.min_interval_ms),
            store: subscription::durable::SubscriptionStore::open(&subscription::durable::dir_in(&config.data_dir))?,
            metrics: metrics.clone(),
            lists: subscription::books::StoredLists::new(books.clone(), &config.address_books.list_uri(&config.domain), &config.domain)?,
            loading: Default::default(),
        });
        if let Some(m) = &metrics {
            read_at_scrape(m, &index, &budget, &abuse, &subscriptions);
            tokio::spawn(Metrics::keep_up(m.clone(), shutdown_rx.clone()));
        }
        let interval = Duration::from_secs(config.presence.notify_interval_secs);
        subscription::start(shared.clone(), presence_changes, interval, shutdown_rx.clone());
        let shared_for_resume = shared.clone();
        crate::presence::spawn_expiry(presence.clone(), shutdown_rx.clone());
        let registrar = config
            .registrar
            .enabled
            .then(|| Arc::new(crate::registrar::Registrar::new(auth.clone(), presence.clone(), config.registrar.clone(), Some(registrations))) as Arc<dyn crate::core::Handler>);
        let publish = PublishHandler { auth: auth.clone(), store: presence, index: index.clone(), config: config.presence.clone() };
        let handlers = Handlers {
            subscribe: Some(SubscribeHandler::new(shared, config.subscribe_settings())),
            publish: Some(Arc::new(publish)),
            register: registrar,
            ..Handlers::default()
        };
        let core = Core::new(sender, client_tx.clone(), timers, handlers, sip.log_messages, abuse.clone(), metrics);
        tokio::spawn(Core::sweep_transactions(Arc::downgrade(&core), shutdown_rx.clone()));
        drop(opening);
        if let Some(c) = &cluster {
            let at = listening(config, &addrs, admin);
            crate::cluster::watch::start(c.clone(), shared_for_resume.clone(), abuse.clone(), at, shutdown_rx.clone()).await?;
        }
        let resuming = health.pending("resuming subscriptions");
        subscription::resume::resume(&shared_for_resume, config.subscription.resume_per_second, resuming);
        // Bound and about to be served (the kernel queues what arrives meanwhile): once a
        // request is answered, no probe may still see "listeners".
        drop(starting);
        transports.run(Arc::new(CoreSink(core)));
        tracing::info!(udp = ?addrs.udp, tcp = ?addrs.tcp, tls = ?addrs.tls, admin = ?admin, provisioning = ?provisioning, "smart-presence listening");
        let on_shutdown = config.subscription.on_shutdown;
        let shared = shared_for_resume;
        Ok(Server { addrs, shutdown, client_tx, index, subscriptions, admin, accounts, budget, provisioning, limits: abuse, shared, on_shutdown, publications, health, books, cluster })
    }

    /// The stored address books (shared by Contact Sync and the stored-list subscriptions).
    pub fn address_books(&self) -> &AddressBooks {
        &self.books
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

    /// Where the provisioning web service listens, when enabled.
    pub fn provisioning_addr(&self) -> Option<std::net::SocketAddr> {
        self.provisioning
    }

    /// The SIP account store (shared with the provisioning service).
    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    /// The per-account discovery budget (shared by address-book queries and subscriptions).
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    pub fn addrs(&self) -> &BoundAddrs {
        &self.addrs
    }

    /// What the server still waits for before it is ready (`/health/ready`).
    pub fn health(&self) -> &crate::health::Health {
        &self.health
    }

    /// This node's place in the cluster (None: one process, `[cluster]` unset).
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// A clean stop. With `subscription.on_shutdown = "deactivate"`, first ends every
    /// subscription with `terminated;reason=deactivated` (within `grace`); with `keep`, they
    /// stay stored for the next start. Then closes the listeners, gives our pending requests
    /// up to `grace` to finish, and writes the stores back.
    pub async fn shutdown(self, grace: Duration) {
        // Not ready from now on: load balancers stop sending new work.
        let _stopping = self.health.pending("stopping");
        let deadline = tokio::time::Instant::now() + grace;
        // No more read back from the store: what is not read yet stays stored.
        self.shared.loading.stop().await;
        // In cluster mode, always, as a survivor would: the phones move to a live node at
        // once; with `cluster.takeover = "adopt"` a survivor adopts them once we leave.
        let adopted = self.cluster.as_ref().is_some_and(|c| c.takeover == crate::config::Takeover::Adopt);
        if !adopted && (self.on_shutdown == crate::config::OnShutdown::Deactivate || self.cluster.is_some()) {
            let count = self.subscriptions.len();
            subscription::actor::resume(self.subscriptions.deactivate_all(), &self.shared);
            while !self.subscriptions.is_empty() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tracing::info!(count, left = self.subscriptions.len(), "subscriptions deactivated");
        }
        let _ = self.shutdown.send(true);
        while self.client_tx.pending() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(Err(e)) = self.publications.as_ref().map(|p| p.flush()) {
            tracing::error!("presence store not written back: {e}");
        }
        if let Err(e) = self.shared.store.flush() {
            tracing::error!("subscription store not written back: {e}");
        }
        if let Some(c) = self.cluster.clone() {
            match tokio::task::spawn_blocking(move || c.leave()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("cluster lease not given up (it expires by itself): {e}"),
                Err(e) => tracing::error!("cluster lease not given up: {e}"),
            }
        }
        tracing::info!(subscriptions = self.subscriptions.len(), "smart-presence stopped");
    }
}

/// Where this node listens, for its cluster lease; a wildcard address stands as the domain.
fn listening(config: &Config, addrs: &BoundAddrs, admin: Option<std::net::SocketAddr>) -> crate::cluster::watch::Listening {
    let named = |scheme: &str, list: &[std::net::SocketAddr]| list.iter().map(|a| format!("{scheme}:{a}")).collect::<Vec<_>>();
    let sip = [named("udp", &addrs.udp), named("tcp", &addrs.tcp), named("tls", &addrs.tls)].concat();
    let sent_by = match addrs.udp.first().or(addrs.tcp.first()) {
        Some(a) if a.ip().is_unspecified() => format!("{}:{}", config.domain, a.port()),
        Some(a) => a.to_string(),
        None => config.domain.clone(),
    };
    crate::cluster::watch::Listening { sip, admin: admin.map(|a| a.to_string()), sent_by }
}

/// The metrics that other parts already keep, read when scraped.
fn read_at_scrape(m: &Metrics, index: &Index, budget: &Budget, limits: &Arc<Limits>, table: &Arc<Subscriptions>) {
    use crate::metrics::scrape::*;
    let l = limits.clone();
    m.gauge_at_scrape(SUBSCRIPTIONS, &[("kind", "list")], move || l.subscriptions().saturating_sub(l.single_subscriptions()) as f64);
    let l = limits.clone();
    m.gauge_at_scrape(SUBSCRIPTIONS, &[("kind", "single")], move || l.single_subscriptions() as f64);
    let l = limits.clone();
    m.gauge_at_scrape(ENTRIES, &[], move || l.entries_held() as f64);
    let l = limits.clone();
    m.gauge_at_scrape(CONNECTIONS, &[], move || l.connections() as f64);
    let i = index.clone();
    m.gauge_at_scrape(BINDINGS, &[], move || i.len() as f64);
    let b = budget.clone();
    m.counter_at_scrape(BUDGET_REFUSALS, &[], move || b.refused_total());
    type Stat = fn(&subscription::table::DeliveryStats) -> &std::sync::atomic::AtomicU64;
    let outcomes: [(&'static str, Stat); 4] = [
        ("kept", |s| &s.unanswered_kept),
        ("unreachable", |s| &s.unreachable),
        ("undeliverable", |s| &s.undeliverable),
        ("refused", |s| &s.refused),
    ];
    for (outcome, field) in outcomes {
        let t = table.clone();
        m.counter_at_scrape(UNDELIVERED, &[("outcome", outcome)], move || subscription::table::DeliveryStats::get(field(t.stats())));
    }
}
