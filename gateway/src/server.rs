//! Starting and stopping a gateway: listeners first (so startup is fast), then the log,
//! the batcher, and the accept loops; on shutdown, stop accepting, let connections answer
//! what they have in flight, flush the buffer.

use std::net::SocketAddr;
use std::sync::Arc;

use object_store::ObjectStore;
use sluice_cache::RangeCache;
use sluice_metadata::{Compare, MetaError, SharedStore, Txn, TxnOp, keys};
use sluice_protocols::sniff::{Protocol, SNIFF_BYTES, sniff};
use sluice_storage::faults::Faults;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::batcher::Batcher;
use crate::config::GatewayConfig;
use crate::groups::group::Limits;
use crate::groups::{Coordinator, Node};
use crate::http::HttpState;
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
const SNIFF_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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
}

impl Services {
    /// This process's copy of the log, loaded from the latest checkpoint and followed
    /// until `cancel`.
    async fn follow_log(&self, cancel: CancellationToken) -> Result<Arc<Log>, MetaError> {
        let checkpoints = sluice_storage::checkpoints::ObjectCheckpoints(self.objects.clone());
        Log::start(self.store.clone(), Arc::new(checkpoints), cancel).await
    }
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
    pub grpc: tokio::sync::mpsc::Sender<TcpStream>,
    pub producer_ids: ProducerIds,
    pub groups: Arc<Coordinator>,
    /// The live gateways, as Metadata responses list them.
    pub cluster: crate::cluster::Cluster,
    /// Open connections per source address, limited by `max_connections_per_ip`.
    pub per_ip: Arc<crate::per_ip::PerIp>,
    pub node_id: i32,
    pub host: String,
    pub port: u16,
    pub cluster_id: String,
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
}

/// A running gateway.
pub struct Gateway {
    pub kafka_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub mqtt_addr: Option<SocketAddr>,
    /// The node id clients see for this gateway.
    pub node_id: i32,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
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
        let kafka_listener = bind(config.kafka_listen).await?;
        let mqtt_listener = match config.mqtt_listen {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let mqtt_addr = match &mqtt_listener {
            Some(l) => Some(l.local_addr().map_err(|source| StartError::Bind {
                addr: config.mqtt_listen.unwrap_or(config.kafka_listen),
                source,
            })?),
            None => None,
        };
        let http_listener = bind(config.http_listen).await?;
        let kafka_addr = kafka_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: config.kafka_listen,
                source,
            })?;
        let http_addr = http_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: config.http_listen,
                source,
            })?;
        let (host, port) = config.advertise.clone().unwrap_or_else(|| {
            let ip = kafka_addr.ip();
            let host = if ip.is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                ip.to_string()
            };
            (host, kafka_addr.port())
        });
        let cancel = CancellationToken::new();
        let cluster_id = cluster_id(&services.store).await?;
        let log = services.follow_log(cancel.child_token()).await?;
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
            Node {
                id: node_id,
                host: host.clone(),
                port,
            },
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
        let grpc_cache = services.cache.clone();
        let peers = crate::peers::Peers::new(node_id, config.cluster_secret.clone());
        let ctx = Arc::new(Ctx {
            per_ip: crate::per_ip::PerIp::new(config.max_connections_per_ip),
            cluster: crate::cluster::Cluster::new(Node {
                id: node_id,
                host: host.clone(),
                port,
            }),
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
            cache: services.cache,
            host,
            port,
            cluster_id,
        });
        let http_state = Arc::new(HttpState {
            log: ctx.log.clone(),
            faults: services.faults.clone(),
            admin_token: ctx.config.admin_token.clone(),
            compactor,
            gateway: Some((ctx.clone(), cancel.clone())),
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(crate::cluster::Cluster::watch(ctx.clone(), cancel.clone()));
        tasks.spawn(Broker::watch_sessions(ctx.clone(), cancel.clone()));
        tasks.spawn(Broker::sweep_sessions(ctx.clone(), cancel.clone()));
        tasks.spawn(Broker::watch_shares(ctx.clone(), cancel.clone()));
        tasks.spawn(Broker::watch_peers(ctx.clone(), cancel.clone()));
        tasks.spawn(crate::peers::serve(
            grpc_cache,
            ctx.config.cluster_secret.clone(),
            grpc_rx,
            cancel.clone(),
        ));
        ctx.batcher
            .on_flush(crate::peers::hook(Arc::downgrade(&ctx)));
        let mqtt_done = CancellationToken::new();
        match mqtt_listener {
            Some(l) => {
                tasks.spawn(accept(
                    ctx.clone(),
                    l,
                    cancel.clone(),
                    Listener::Mqtt,
                    mqtt_done.clone(),
                ));
            }
            None => mqtt_done.cancel(),
        }
        tasks.spawn(accept_kafka(
            ctx.clone(),
            kafka_listener,
            cancel.clone(),
            batcher_cancel,
            mqtt_done,
        ));
        tasks.spawn(http::serve(http_state, http_listener, cancel.clone()));
        tracing::info!(kafka = %kafka_addr, http = %http_addr, advertised = %format!("{}:{}", ctx.host, ctx.port), node_id = ctx.node_id, cluster_id = %ctx.cluster_id, "gateway started");
        Ok(Self {
            kafka_addr,
            http_addr,
            mqtt_addr,
            node_id,
            cancel,
            tasks,
        })
    }

    /// Stops accepting, drains connections and the write buffer.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }

    /// Waits until the gateway has stopped.
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    /// Kafka, and MQTT recognised from a connection's first byte.
    Kafka,
    /// MQTT only.
    Mqtt,
}

impl Listener {
    fn name(self) -> &'static str {
        match self {
            Listener::Kafka => "kafka",
            Listener::Mqtt => "mqtt",
        }
    }
}

/// Serves one accepted connection, choosing the protocol from its first byte on the Kafka
/// listener.
async fn serve(ctx: Arc<Ctx>, socket: TcpStream, cancel: CancellationToken, listener: Listener) {
    let mqtt = match listener {
        Listener::Mqtt => true,
        Listener::Kafka => {
            let mut first = [0u8; 3];
            let peeked = tokio::time::timeout(SNIFF_TIMEOUT, socket.peek(&mut first)).await;
            match peeked {
                // HTTP/2 prior knowledge ("PRI * HTTP/2.0"): another gateway's gRPC.
                Ok(Ok(3)) if &first == b"PRI" => {
                    let _ = ctx.grpc.send(socket).await;
                    return;
                }
                Ok(Ok(n)) if n >= SNIFF_BYTES => sniff(first[0]) == Some(Protocol::Mqtt),
                _ => return,
            }
        }
    };
    if mqtt {
        crate::mqtt::conn::serve_connection(ctx, socket, cancel).await;
    } else {
        kafka::serve_connection(ctx, socket, cancel).await;
    }
}

/// Accepts connections until `cancel`, then waits for them to finish; `done` is cancelled
/// once they have.
async fn accept(
    ctx: Arc<Ctx>,
    listener: TcpListener,
    cancel: CancellationToken,
    kind: Listener,
    done: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
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
            a = listener.accept() => a,
        };
        match accepted {
            Ok((socket, peer)) => {
                let Some(slot) = ctx.per_ip.admit(peer.ip()) else {
                    // Kafka closes such a connection at once; so do we, with a log line.
                    crate::metrics::CONNECTIONS_REFUSED
                        .with_label_values(&[kind.name(), "per_ip_limit"])
                        .inc();
                    tracing::warn!(%peer, listener = kind.name(), limit = ctx.config.max_connections_per_ip, "connection refused: too many from this address");
                    continue;
                };
                let ctx = ctx.clone();
                let cancel = cancel.clone();
                conns.spawn(async move {
                    serve(ctx, socket, cancel, kind).await;
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
    drop(listener);
    while conns.join_next().await.is_some() {}
    done.cancel();
}

async fn accept_kafka(
    ctx: Arc<Ctx>,
    listener: TcpListener,
    cancel: CancellationToken,
    batcher: CancellationToken,
    mqtt_done: CancellationToken,
) {
    let done = CancellationToken::new();
    accept(ctx.clone(), listener, cancel, Listener::Kafka, done).await;
    // Every connection of both listeners has answered what it had in flight.
    mqtt_done.cancelled().await;
    batcher.cancel();
    // Let the batcher finish its last flush before the runtime goes away.
    ctx.batcher.closed().await;
}

/// A compactor running as its own process: it follows the log, compacts, and serves HTTP
/// (metrics, health, `/admin/compact`).
pub struct CompactorProcess {
    pub http_addr: SocketAddr,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

impl CompactorProcess {
    pub async fn start(
        config: sluice_compactor::CompactorConfig,
        http_listen: SocketAddr,
        admin_token: Option<Arc<str>>,
        services: Services,
    ) -> Result<Self, StartError> {
        let listener = bind(http_listen).await?;
        let http_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: http_listen,
            source,
        })?;
        let cancel = CancellationToken::new();
        let log = services.follow_log(cancel.child_token()).await?;
        let compactor = Compactor::start(
            config,
            services.store,
            services.objects,
            services.cache,
            log.clone(),
            cancel.child_token(),
        )
        .await?;
        let state = Arc::new(HttpState {
            log,
            faults: services.faults,
            admin_token,
            compactor: Some(compactor),
            gateway: None,
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(http::serve(state, listener, cancel.clone()));
        Ok(Self {
            http_addr,
            cancel,
            tasks,
        })
    }

    pub fn shutdown(&self) {
        self.cancel.cancel();
    }

    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}
