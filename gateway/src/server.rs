//! Starting and stopping a gateway: listeners first (so startup is fast), then the log,
//! the batcher, and the accept loops; on shutdown, stop accepting, let connections answer
//! what they have in flight, flush the buffer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use sluice_cache::RangeCache;
use sluice_metadata::{Compare, MetaError, SharedStore, Txn, TxnOp, keys};
use sluice_protocols::sniff::{Protocol, SNIFF_BYTES, sniff};
use sluice_storage::faults::Faults;
use tokio::io::AsyncBufReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::batcher::Batcher;
use crate::config::{GatewayConfig, SecurityProtocol};
use crate::groups::group::Limits;
use crate::groups::{Coordinator, Node};
use crate::http::{Http, HttpState};
use crate::mqtt::broker::Broker;
use crate::mqtt::mapping::TopicMap;
use crate::producer_ids::ProducerIds;
use crate::segments::Segments;
use crate::{http, kafka};
use sluice_compactor::Compactor;
use sluice_metadata::follower::Log;

/// Rebuilt row groups of compacted data kept in memory.
const SEGMENT_MEMORY: usize = 64 << 20;

/// How long a new connection may take to send its first byte.
const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);

/// The read buffer under a TLS connection.
const TLS_READ_BUFFER: usize = 64 << 10;

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 10_000;

/// The services a gateway runs on.
#[derive(Clone)]
pub struct Services {
    pub store: SharedStore,
    pub objects: Arc<dyn ObjectStore>,
    pub cache: Arc<RangeCache>,
    /// Present when the object store is wrapped for fault injection (tests).
    pub faults: Option<Arc<Faults>>,
    /// Where metadata and objects live, as configured (for log lines and `/readyz`).
    pub metadata_url: String,
    pub object_store_url: String,
}

/// How long one check of metadata or the object store may take at startup.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Between checks at startup, and how often an unchanged failure is logged again.
const PROBE_INTERVAL: Duration = Duration::from_secs(2);
const PROBE_LOG_INTERVAL: Duration = Duration::from_secs(60);

impl Services {
    /// This process's copy of the log, loaded from the latest checkpoint and followed
    /// until `cancel`.
    async fn follow_log(&self, cancel: CancellationToken) -> Result<Arc<Log>, MetaError> {
        let checkpoints = sluice_storage::checkpoints::ObjectCheckpoints(self.objects.clone());
        Log::start(self.store.clone(), Arc::new(checkpoints), cancel).await
    }

    /// Whether the object store answers: a listing of the checkpoints.
    async fn probe_objects(&self) -> Result<(), MetaError> {
        let prefix = object_store::path::Path::from(sluice_storage::naming::CHECKPOINTS_PREFIX);
        self.objects
            .list_with_delimiter(Some(&prefix))
            .await
            .map(drop)
            .map_err(|e| MetaError::Unavailable(e.to_string()))
    }

    /// Runs `step` until it succeeds, while `service` (as log lines name it) cannot be
    /// reached: `/readyz` answers with why, a warning is logged when the reason changes
    /// (and every minute while it does not), and an error other than unavailability ends
    /// the wait.
    async fn when_reachable<T, F, Fut>(
        &self,
        http: &Http,
        what: &str,
        service: &str,
        mut step: F,
    ) -> Result<T, MetaError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, MetaError>>,
    {
        let mut logged: Option<(String, std::time::Instant)> = None;
        loop {
            let reason = match tokio::time::timeout(PROBE_TIMEOUT, step()).await {
                Ok(Ok(v)) => {
                    if logged.is_some() {
                        tracing::info!(what, "reachable again; starting");
                    }
                    return Ok(v);
                }
                Ok(Err(MetaError::Unavailable(e))) => e,
                Ok(Err(e)) => return Err(e),
                Err(_) => format!("no answer within {}s", PROBE_TIMEOUT.as_secs()),
            };
            let reason = format!("{service} unavailable: {reason}");
            let due = logged
                .as_ref()
                .is_none_or(|(last, at)| *last != reason || at.elapsed() >= PROBE_LOG_INTERVAL);
            if due {
                tracing::warn!(what, reason = %reason, "not ready: waiting for {what}");
                logged = Some((reason.clone(), std::time::Instant::now()));
            }
            http.waiting(format!("waiting for {what}: {reason}"));
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    fn metadata_service(&self) -> String {
        format!("metadata {}", self.metadata_url)
    }

    /// The object store, then the log, once they can be reached.
    async fn start_following(
        &self,
        http: &Http,
        cancel: &CancellationToken,
    ) -> Result<Arc<Log>, MetaError> {
        let objects = format!("object store {}", self.object_store_url);
        self.when_reachable(http, "the object store", &objects, || self.probe_objects())
            .await?;
        self.when_reachable(http, "the metadata log", &self.metadata_service(), || {
            self.follow_log(cancel.child_token())
        })
        .await
    }
}

/// Serves HTTP on `tasks` until `cancel`, from now on: alive at once, ready (and so given
/// connections by a load balancer) once the process has started and tells the returned
/// front so.
fn serve_http_early(
    tasks: &mut Tasks,
    listener: TcpListener,
    tls: Option<Arc<crate::tls::Tls>>,
    cancel: &CancellationToken,
) -> Arc<Http> {
    let front = Http::new();
    tasks.spawn(
        "http",
        http::serve(front.clone(), listener, tls, cancel.clone()),
    );
    front
}

/// What every request handler shares.
pub(crate) struct Ctx {
    pub config: GatewayConfig,
    pub store: SharedStore,
    pub log: Arc<Log>,
    pub batcher: Batcher,
    pub cache: Arc<RangeCache>,
    /// Compacted data, rebuilt into batches.
    pub segments: Segments,
    pub mqtt: Broker,
    /// The gateways MQTT data is forwarded to.
    pub peers: crate::peers::Peers,
    /// gRPC connections recognised on the Kafka listener go here.
    pub grpc: tokio::sync::mpsc::Sender<crate::peers::Incoming>,
    pub producer_ids: ProducerIds,
    pub groups: Arc<Coordinator>,
    /// The live gateways, as Metadata responses list them.
    pub cluster: crate::cluster::Cluster,
    /// Open connections per source address, limited by `max_connections_per_ip`.
    pub per_ip: Arc<crate::per_ip::PerIp>,
    pub node_id: i32,
    pub cluster_id: String,
    /// The Kafka listeners' protocols, in the order of the configuration; a connection
    /// knows its listener by index.
    pub kafka_listeners: Vec<SecurityProtocol>,
    /// The server certificate of TLS listeners.
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// ACL bindings, followed from metadata.
    pub acl: Arc<crate::acl::Authorizer>,
    /// OAUTHBEARER token validation (`--oauth-jwks`), if configured.
    pub oauth: Option<Arc<crate::oauth::OAuth>>,
    /// Client quotas, followed from metadata, and this gateway's meters.
    pub quotas: crate::quotas::Quotas,
    /// Recent failed logins, which slow down the next ones.
    pub failed_logins: crate::failed_logins::FailedLogins,
    /// Where other gateways call this one (signed gRPC, recognised on a Kafka listener):
    /// the peer listener's advertised address, `tls://HOST:PORT` for a TLS one.
    pub peer_addr: String,
    /// Open connections here and on the other gateways; connections asked to go.
    pub balance: Arc<crate::balance::Balance>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("metadata: {0}")]
    Metadata(#[from] MetaError),
    #[error("MQTT topic map: {0}")]
    TopicMap(#[from] crate::mqtt::mapping::MapError),
    #[error("MQTT auth: {0}")]
    Auth(#[from] crate::mqtt::auth::AuthError),
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("OAUTHBEARER: {0}")]
    OAuth(#[from] crate::oauth::OAuthError),
    #[error("{0}")]
    Config(String),
}

/// A running gateway.
pub struct Gateway {
    /// The first Kafka listener's bound address.
    pub kafka_addr: SocketAddr,
    /// Every Kafka listener's protocol and bound address, in the configured order.
    pub kafka_addrs: Vec<(SecurityProtocol, SocketAddr)>,
    pub http_addr: SocketAddr,
    /// Every MQTT listener's bound address, and whether it is TLS.
    pub mqtt_addrs: Vec<(bool, SocketAddr)>,
    /// The node id clients see for this gateway.
    pub node_id: i32,
    cancel: CancellationToken,
    tasks: Tasks,
    balance: Arc<crate::balance::Balance>,
    cache: Arc<RangeCache>,
}

/// A process's long-running tasks, named so that a drain that does not finish can say
/// which are still running.
#[derive(Default)]
struct Tasks {
    set: JoinSet<()>,
    names: Vec<(&'static str, tokio::task::AbortHandle)>,
}

impl Tasks {
    fn spawn(
        &mut self,
        name: &'static str,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let handle = self.set.spawn(task);
        self.names.push((name, handle));
    }

    /// Spawns `task(ctx, cancel)`, the shape of every watcher and sweeper of the gateway.
    fn spawn_with<F, Fut>(
        &mut self,
        name: &'static str,
        ctx: &Arc<Ctx>,
        cancel: &CancellationToken,
        task: F,
    ) where
        F: FnOnce(Arc<Ctx>, CancellationToken) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.spawn(name, task(ctx.clone(), cancel.clone()));
    }

    async fn join_all(&mut self) {
        while self.set.join_next().await.is_some() {}
    }

    fn running(&self) -> Vec<&'static str> {
        self.names
            .iter()
            .filter(|(_, h)| !h.is_finished())
            .map(|(name, _)| *name)
            .collect()
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// The cluster id, created by the first gateway ever started on this metadata.
async fn cluster_id(store: &SharedStore) -> Result<String, MetaError> {
    let fresh = uuid::Uuid::new_v4().simple().to_string();
    let r = store
        .txn(Txn {
            compares: vec![Compare::absent(keys::CLUSTER_ID)],
            success: vec![TxnOp::put(keys::CLUSTER_ID, fresh.clone())],
            failure: vec![TxnOp::Get {
                key: keys::CLUSTER_ID.into(),
            }],
        })
        .await?;
    if r.succeeded {
        return Ok(fresh);
    }
    let kv = r.gets.into_iter().flatten().next();
    Ok(kv.map_or(fresh, |kv| String::from_utf8_lossy(&kv.value).into_owned()))
}

fn node_id_for(host: &str, port: u16) -> i32 {
    (crc32c::crc32c(format!("{host}:{port}").as_bytes()) & 0x3fff_ffff) as i32
}

impl Gateway {
    pub async fn start(config: GatewayConfig, services: Services) -> Result<Self, StartError> {
        let topic_map =
            TopicMap::parse(&config.mqtt_topic_map, config.mqtt_default_topic.as_deref())?;
        let mqtt_auth = match &config.mqtt_auth {
            Some(path) => Some(crate::mqtt::auth::Auth::load(path)?),
            None => None,
        };
        let tls = tls_for(&config)?;
        let oauth = config
            .oauth
            .clone()
            .map(crate::oauth::OAuth::new)
            .transpose()?
            .map(Arc::new);
        let mut bound = Vec::new();
        let mut kafka_addrs = Vec::new();
        let mut endpoints = Vec::new();
        for (index, l) in config.kafka_listeners.iter().enumerate() {
            let listener = bind(l.addr).await?;
            let addr = local_addr(&listener, l.addr)?;
            kafka_addrs.push((l.protocol, addr));
            let (host, port) = l.advertise.clone().unwrap_or_else(|| {
                let ip = addr.ip();
                let host = if ip.is_unspecified() {
                    "127.0.0.1".to_string()
                } else {
                    ip.to_string()
                };
                (host, addr.port())
            });
            endpoints.push(crate::groups::Endpoint {
                name: l.protocol.name().to_string(),
                host,
                port,
            });
            bound.push(Bound {
                listener,
                serves: Listener::Kafka(index),
                tls: l.protocol.tls(),
            });
        }
        let mut mqtt_addrs = Vec::new();
        for l in &config.mqtt_listeners {
            let listener = bind(l.addr).await?;
            mqtt_addrs.push((l.tls, local_addr(&listener, l.addr)?));
            bound.push(Bound {
                listener,
                serves: Listener::Mqtt,
                tls: l.tls,
            });
        }
        let http_listener = bind(config.http_listen).await?;
        let http_addr = local_addr(&http_listener, config.http_listen)?;
        let kafka_addr = kafka_addrs[0].1;
        // Other gateways call this one on the peer listener: the one configured, else the
        // first without TLS, else the first.
        let peer_listener = match config.peer_listener {
            Some(p) => config
                .kafka_listeners
                .iter()
                .position(|l| l.protocol == p)
                .ok_or_else(|| {
                    StartError::Config(format!(
                        "--peer-listener {}: no such Kafka listener",
                        p.name()
                    ))
                })?,
            None => config
                .kafka_listeners
                .iter()
                .position(|l| !l.protocol.tls())
                .unwrap_or(0),
        };
        let peer_addr = {
            let e = &endpoints[peer_listener];
            let tls = config.kafka_listeners[peer_listener].protocol.tls();
            format!("{}{}:{}", if tls { "tls://" } else { "" }, e.host, e.port)
        };
        let (host, port) = (endpoints[0].host.clone(), endpoints[0].port);
        let listeners: Arc<[crate::groups::Endpoint]> = endpoints.into();
        let me = |id| Node {
            id,
            host: host.clone(),
            port,
            listeners: listeners.clone(),
            zone: config.zone.as_deref().map(Arc::from),
        };
        let cancel = CancellationToken::new();
        let mut tasks = Tasks::default();
        let http_tls = config.http_tls.then(|| tls.clone()).flatten();
        let http_front = serve_http_early(&mut tasks, http_listener, http_tls, &cancel);
        // The log is followed until the drain's last flush is applied: a flush commits,
        // then waits to see its commit applied before it answers.
        let follow_cancel = CancellationToken::new();
        let log = services
            .start_following(&http_front, &follow_cancel)
            .await?;
        let cluster_id = services
            .when_reachable(
                &http_front,
                "the metadata store",
                &services.metadata_service(),
                || cluster_id(&services.store),
            )
            .await?;
        if let Some((name, password)) = &config.admin_user {
            match crate::users::ensure(&services.store, name, password).await {
                Ok(true) => tracing::info!(user = %name, "administrator created in the user store"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(user = %name, error = %e, "creating the administrator failed")
                }
            }
        }
        // The batcher gets its own token: it must keep flushing while connections drain.
        let batcher_cancel = CancellationToken::new();
        let batcher = Batcher::start(
            config.clone(),
            services.store.clone(),
            services.objects.clone(),
            services.cache.clone(),
            log.clone(),
            batcher_cancel.clone(),
        );
        let node_id = config.node_id.unwrap_or_else(|| node_id_for(&host, port));
        let groups = Coordinator::start(
            services.store.clone(),
            me(node_id),
            Limits {
                min_session_timeout: config.group_min_session_timeout,
                max_session_timeout: config.group_max_session_timeout,
                initial_rebalance_delay: config.group_initial_rebalance_delay,
            },
            config.lease_ttl,
            cancel.child_token(),
        )
        .await?;
        let compactor = match &config.compactor {
            Some(c) => Some(
                Compactor::start(
                    c.clone(),
                    services.store.clone(),
                    services.objects.clone(),
                    services.cache.clone(),
                    log.clone(),
                    cancel.child_token(),
                )
                .await?,
            ),
            None => None,
        };

        let (grpc_tx, grpc_rx) = tokio::sync::mpsc::channel(64);
        // Forwarded WAL objects wait here for their commit (see `peers`).
        let warmed = Arc::new(crate::peers::Warmed::new(services.cache.clone()));
        let peers = crate::peers::Peers::new(node_id, config.cluster_secret.clone(), tls.clone());
        let ctx = Arc::new(Ctx {
            per_ip: crate::per_ip::PerIp::new(config.max_connections_per_ip),
            cluster: crate::cluster::Cluster::new(me(node_id)),
            kafka_listeners: config.kafka_listeners.iter().map(|l| l.protocol).collect(),
            tls: tls.clone(),
            oauth: oauth.clone(),
            acl: Arc::new(crate::acl::Authorizer::new(config.acl.clone())),
            quotas: Default::default(),
            failed_logins: Default::default(),
            peer_addr,
            balance: Default::default(),
            node_id,
            groups,
            config,
            producer_ids: ProducerIds::new(services.store.clone()),
            mqtt: Broker::new(topic_map, mqtt_auth, services.store.clone(), node_id),
            peers,
            grpc: grpc_tx,
            store: services.store,
            log,
            batcher,
            segments: Segments::new(services.cache.clone(), SEGMENT_MEMORY),
            cache: services.cache.clone(),
            cluster_id,
        });
        let http_state = Arc::new(HttpState {
            log: ctx.log.clone(),
            faults: services.faults.clone(),
            admin_token: ctx.config.admin_token.clone(),
            compactor,
            gateway: Some((ctx.clone(), cancel.clone())),
        });
        tasks.spawn_with(
            "cluster watch",
            &ctx,
            &cancel,
            crate::cluster::Cluster::watch,
        );
        if ctx.acl.enabled() {
            tasks.spawn_with("acl watch", &ctx, &cancel, crate::acl::Authorizer::watch);
        }
        tasks.spawn_with("quota watch", &ctx, &cancel, crate::quotas::Quotas::watch);
        tasks.spawn_with(
            "connection balance",
            &ctx,
            &cancel,
            crate::balance::Balance::run,
        );
        tasks.spawn_with("mqtt session watch", &ctx, &cancel, Broker::watch_sessions);
        tasks.spawn_with("mqtt session expiry", &ctx, &cancel, Broker::sweep_sessions);
        tasks.spawn_with("mqtt will delay", &ctx, &cancel, Broker::sweep_wills);
        tasks.spawn_with(
            "mqtt shared subscription watch",
            &ctx,
            &cancel,
            Broker::watch_shares,
        );
        tasks.spawn_with("mqtt peer watch", &ctx, &cancel, Broker::watch_peers);
        let on_commit = warmed.clone();
        ctx.log.on_commit(Box::new(move |path, digest| {
            on_commit.committed(path, digest)
        }));
        tasks.spawn(
            "peer service",
            crate::peers::serve(
                warmed,
                ctx.config.cluster_secret.clone(),
                grpc_rx,
                cancel.clone(),
            ),
        );
        ctx.batcher
            .on_flush(Box::new(crate::peers::Hook(Arc::downgrade(&ctx))));
        if let Some(tls) = &tls {
            tasks.spawn("certificate reload", tls.clone().watch(cancel.clone()));
        }
        if let Some(oauth) = &oauth {
            tasks.spawn("token key reload", oauth.clone().watch(cancel.clone()));
        }
        let loops: Vec<_> = bound
            .into_iter()
            .map(|b| accept(ctx.clone(), b, cancel.clone()))
            .collect();
        let drained = ctx.clone();
        tasks.spawn("connections and last flush", async move {
            futures::future::join_all(loops).await;
            // Every connection of every listener has answered what it had in flight.
            tracing::debug!("connections closed; flushing what is buffered");
            batcher_cancel.cancel();
            // Let the batcher finish its last flush before the runtime goes away.
            drained.batcher.closed().await;
            follow_cancel.cancel();
        });
        http_front.started(http_state);
        tracing::info!(kafka = ?kafka_addrs, http = %http_addr, advertised = ?listeners, node_id = ctx.node_id, cluster_id = %ctx.cluster_id, "gateway started");
        Ok(Self {
            kafka_addr,
            kafka_addrs,
            http_addr,
            mqtt_addrs,
            node_id,
            cancel,
            tasks,
            balance: ctx.balance.clone(),
            cache: services.cache,
        })
    }

    /// Stops accepting connections, lets them answer what they have in flight, flushes
    /// the write buffer, for at most `timeout`, or until `abandon` resolves; what is left
    /// then is abandoned, and logged. Nothing acknowledged is ever
    /// abandoned: a produce is answered once committed, a QoS 1/2 publish once stored.
    pub async fn drain(
        mut self,
        timeout: Duration,
        abandon: impl std::future::Future<Output = ()>,
    ) {
        let started = std::time::Instant::now();
        self.cancel.cancel();
        let finished = tokio::select! {
            r = tokio::time::timeout(timeout, async {
                self.tasks.join_all().await
            }) => r.is_ok(),
            _ = abandon => false,
        };
        let ms = started.elapsed().as_millis() as u64;
        if finished {
            tracing::info!(drain_ms = ms, "drained");
        } else {
            let open = self.balance.load();
            tracing::warn!(
                drain_ms = ms,
                kafka_connections = open.kafka,
                mqtt_connections = open.mqtt,
                waiting_for = ?self.tasks.running(),
                "drain not finished in time: abandoning the connections still open; their requests in flight were not acknowledged, and MQTT wills not yet held back are lost"
            );
            self.tasks.set.abort_all();
        }
        close_cache(&self.cache).await;
    }
}

/// Closes the cache's disk tier, for a few seconds at most.
async fn close_cache(cache: &RangeCache) {
    if tokio::time::timeout(Duration::from_secs(5), cache.close())
        .await
        .is_err()
    {
        tracing::warn!("closing the disk cache took more than 5 s; left as it is");
    }
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    /// Kafka (the configuration's listener at this index), and MQTT recognised from a
    /// connection's first byte.
    Kafka(usize),
    /// MQTT only.
    Mqtt,
}

/// A bound listener.
struct Bound {
    listener: TcpListener,
    serves: Listener,
    tls: bool,
}

impl Bound {
    fn name(&self, ctx: &Ctx) -> &'static str {
        match (self.serves, self.tls) {
            (Listener::Kafka(i), _) => ctx.kafka_listeners[i].name(),
            (Listener::Mqtt, false) => "mqtt",
            (Listener::Mqtt, true) => "mqtts",
        }
    }
}

fn local_addr(listener: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })
}

/// The TLS configuration, loaded if any listener needs it.
fn tls_for(config: &GatewayConfig) -> Result<Option<Arc<crate::tls::Tls>>, StartError> {
    let needed = config.http_tls
        || config.mqtt_listeners.iter().any(|l| l.tls)
        || config.kafka_listeners.iter().any(|l| l.protocol.tls());
    let mut protocols = std::collections::HashSet::new();
    if config.kafka_listeners.is_empty() {
        return Err(StartError::Config("no Kafka listener".into()));
    }
    for l in &config.kafka_listeners {
        if !protocols.insert(l.protocol) {
            return Err(StartError::Config(format!(
                "two {} Kafka listeners; one per protocol",
                l.protocol.name()
            )));
        }
    }
    match (&config.tls, needed) {
        (Some(settings), _) => Ok(Some(crate::tls::Tls::load(settings.clone())?)),
        (None, true) => Err(StartError::Config(
            "a TLS listener needs --tls-cert and --tls-key".into(),
        )),
        (None, false) => Ok(None),
    }
}

/// A connection's first moments: which listener, and who its TLS client certificate names.
pub(crate) struct Accepted {
    pub peer: SocketAddr,
    /// The Kafka listener's index (0 for MQTT listeners).
    pub listener: usize,
    /// The principal of a verified client certificate.
    pub principal: Option<String>,
    /// A SASL Kafka listener: MQTT clients on it authenticate against the user store too.
    pub sasl: bool,
}

/// Serves one accepted connection: TLS first on a TLS listener, then the protocol chosen
/// from the first bytes on a Kafka listener.
async fn serve(
    ctx: Arc<Ctx>,
    socket: TcpStream,
    peer: SocketAddr,
    cancel: CancellationToken,
    name: &'static str,
    serves: Listener,
    tls: bool,
) {
    let _ = socket.set_nodelay(true);
    let (listener, sasl) = match serves {
        Listener::Kafka(i) => (i, ctx.kafka_listeners[i].sasl()),
        Listener::Mqtt => (0, false),
    };
    let accepted = Accepted {
        peer,
        listener,
        principal: None,
        sasl,
    };
    if !tls {
        if serves == Listener::Mqtt {
            return crate::mqtt::conn::serve_stream(ctx, socket, accepted, cancel).await;
        }
        let mut first = [0u8; 3];
        let peeked = tokio::time::timeout(SNIFF_TIMEOUT, socket.peek(&mut first)).await;
        match peeked {
            // HTTP/2 prior knowledge ("PRI * HTTP/2.0"): another gateway's gRPC.
            Ok(Ok(3)) if &first == b"PRI" => {
                let _ = ctx.grpc.send(crate::peers::Incoming::new(socket)).await;
            }
            Ok(Ok(n)) if n >= SNIFF_BYTES => {
                if sniff(first[0]) == Some(Protocol::Mqtt) {
                    crate::mqtt::conn::serve_stream(ctx, socket, accepted, cancel).await;
                } else {
                    kafka::serve_stream(ctx, socket, accepted, cancel).await;
                }
            }
            _ => {}
        }
        return;
    }
    // rustls reads the socket 4 KiB at a time: a buffer below it saves most of those
    // system calls on a busy Kafka connection (MQTT devices keep their memory instead).
    if serves == Listener::Mqtt {
        serve_tls(ctx, socket, accepted, cancel, name, serves).await;
    } else {
        let socket = tokio::io::BufReader::with_capacity(TLS_READ_BUFFER, socket);
        serve_tls(ctx, socket, accepted, cancel, name, serves).await;
    }
}

/// The TLS handshake, then the protocol the first decrypted byte names; `accepted` gets
/// the principal of the client's certificate.
async fn serve_tls<S>(
    ctx: Arc<Ctx>,
    socket: S,
    mut accepted: Accepted,
    cancel: CancellationToken,
    name: &'static str,
    serves: Listener,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let peer = accepted.peer;
    let Some(acceptor) = ctx.tls.as_ref().map(|t| t.acceptor()) else {
        return; // tls_for saw to it
    };
    let stream = match tokio::time::timeout(SNIFF_TIMEOUT, acceptor.accept(socket)).await {
        Ok(Ok(s)) => s,
        failed => {
            crate::metrics::TLS_HANDSHAKE_FAILURES
                .with_label_values(&[name])
                .inc();
            match failed {
                Ok(Err(e)) => {
                    tracing::warn!(%peer, listener = name, error = %e, "TLS handshake failed; connection closed")
                }
                _ => {
                    tracing::debug!(%peer, listener = name, "no TLS handshake in time; connection closed")
                }
            }
            return;
        }
    };
    accepted.principal = {
        let (_, conn) = stream.get_ref();
        let from = ctx
            .tls
            .as_ref()
            .map(|t| t.principal_from())
            .unwrap_or_default();
        crate::tls::principal(conn.peer_certificates(), from)
    };
    if serves == Listener::Mqtt {
        return crate::mqtt::conn::serve_stream(ctx, stream, accepted, cancel).await;
    }
    // The protocol, from the first decrypted byte: kept in a small buffer that later reads
    // (larger than it) bypass.
    let mut stream = tokio::io::BufReader::with_capacity(SNIFF_BYTES.max(8), stream);
    let first = match tokio::time::timeout(SNIFF_TIMEOUT, stream.fill_buf()).await {
        Ok(Ok(b)) if !b.is_empty() => b[0],
        _ => return,
    };
    // HTTP/2 ("PRI * HTTP/2.0"): another gateway's gRPC. No Kafka frame (a length) or
    // MQTT packet (PUBREC) starts a connection with this byte.
    if first == b'P' {
        let _ = ctx.grpc.send(crate::peers::Incoming::new(stream)).await;
        return;
    }
    if sniff(first) == Some(Protocol::Mqtt) {
        crate::mqtt::conn::serve_stream(ctx, stream, accepted, cancel).await;
    } else {
        kafka::serve_stream(ctx, stream, accepted, cancel).await;
    }
}

/// Accepts connections until `cancel`, then waits for them to finish.
async fn accept(ctx: Arc<Ctx>, bound: Bound, cancel: CancellationToken) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let name = bound.name(&ctx);
    let mut conns = JoinSet::new();
    loop {
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            a = bound.listener.accept() => a,
        };
        match accepted {
            Ok((socket, peer)) => {
                let Some(slot) = ctx.per_ip.admit(peer.ip()) else {
                    // Kafka closes such a connection at once; so do we, with a log line.
                    crate::metrics::CONNECTIONS_REFUSED
                        .with_label_values(&[name, "per_ip_limit"])
                        .inc();
                    tracing::warn!(%peer, listener = name, limit = ctx.config.max_connections_per_ip, "connection refused: too many from this address");
                    continue;
                };
                let ctx = ctx.clone();
                let cancel = cancel.clone();
                let (serves, tls) = (bound.serves, bound.tls);
                conns.spawn(async move {
                    serve(ctx, socket, peer, cancel, name, serves, tls).await;
                    drop(slot);
                    drop(permit);
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        while conns.try_join_next().is_some() {}
    }
    drop(bound);
    tracing::debug!(
        listener = name,
        open = conns.len(),
        "listener closed; waiting for its connections"
    );
    while conns.join_next().await.is_some() {}
    tracing::debug!(listener = name, "listener's connections closed");
}

/// A compactor running as its own process: it follows the log, compacts, and serves HTTP
/// (metrics, health, `/admin/compact`).
pub struct CompactorProcess {
    pub http_addr: SocketAddr,
    cancel: CancellationToken,
    tasks: Tasks,
    cache: Arc<RangeCache>,
}

impl CompactorProcess {
    pub async fn start(
        config: sluice_compactor::CompactorConfig,
        http_listen: SocketAddr,
        https: Option<crate::tls::TlsSettings>,
        admin_token: Option<Arc<str>>,
        services: Services,
    ) -> Result<Self, StartError> {
        let tls = https.map(crate::tls::Tls::load).transpose()?;
        let listener = bind(http_listen).await?;
        let http_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: http_listen,
            source,
        })?;
        let cancel = CancellationToken::new();
        let mut tasks = Tasks::default();
        if let Some(tls) = &tls {
            tasks.spawn("certificate reload", tls.clone().watch(cancel.clone()));
        }
        let http_front = serve_http_early(&mut tasks, listener, tls, &cancel);
        let log = services.start_following(&http_front, &cancel).await?;
        let cache = services.cache.clone();
        let compactor = Compactor::start(
            config,
            services.store,
            services.objects,
            services.cache,
            log.clone(),
            cancel.child_token(),
        )
        .await?;
        http_front.started(Arc::new(HttpState {
            log,
            faults: services.faults,
            admin_token,
            compactor: Some(compactor),
            gateway: None,
        }));
        Ok(Self {
            http_addr,
            cancel,
            tasks,
            cache,
        })
    }

    pub fn shutdown(&self) {
        self.cancel.cancel();
    }

    pub async fn wait(mut self) {
        self.tasks.join_all().await;
        close_cache(&self.cache).await;
    }
}
