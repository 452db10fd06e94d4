//! Gateway to gateway, over gRPC (tonic) on every gateway's Kafka listener, which tells it
//! apart by the HTTP/2 preface.
//!
//! MQTT delivery follows the log, so a subscriber on gateway B gets a message published on
//! gateway A once A's commit reaches B and B has read the WAL object. To keep that read off
//! the object store, A hands every WAL object holding MQTT-mapped data, as soon as it is
//! written and while it is being committed, to the gateways that deliver MQTT messages
//! (registered under `mqtt/peers/<node id>` with their address); they keep it in their
//! cache. The log stays the only source of what is delivered, in what order: a forward
//! that is late, lost or never committed changes nothing but where a read is served from.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use sluice_cache::RangeCache;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint, Server};
use uuid::Uuid;

use crate::server::Ctx;

pub mod proto {
    tonic::include_proto!("sluice.peer.v1");
}

use proto::peer_client::PeerClient;
use proto::peer_server::{Peer, PeerServer};
use proto::{WarmRequest, WarmResponse};

/// Objects larger than this are not forwarded (the receiver reads them as usual).
const MAX_FORWARD: usize = 32 << 20;
/// How long a forward may take; a slow peer just reads from the object store.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// The gateways to forward to, and this gateway's own registration.
#[derive(Debug, Default)]
pub struct Peers {
    node: i32,
    /// Other gateways that deliver MQTT messages: their address and a client.
    targets: Mutex<HashMap<i32, (String, PeerClient<Channel>)>>,
    registered: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Peers {
    pub fn new(node: i32) -> Self {
        Self {
            node,
            ..Self::default()
        }
    }

    /// Registers this gateway as one that delivers MQTT messages (once).
    pub fn register(&self, ctx: &Ctx) {
        if self.registered.swap(true, Ordering::SeqCst) {
            return;
        }
        let key = sluice_metadata::keys::mqtt_peer(self.node);
        let addr = format!("{}:{}", ctx.host, ctx.port);
        let sessions = ctx.mqtt.sessions.clone();
        tokio::spawn(async move {
            if let Err(e) = sessions.put(key, addr).await {
                tracing::warn!(error = %e, "registering for mqtt forwarding failed");
            }
        });
    }

    /// Applies a change under `mqtt/peers/`.
    pub fn written(&self, key: &[u8], value: &[u8], present: bool) {
        let Some(node) = key
            .strip_prefix(sluice_metadata::keys::MQTT_PEERS_PREFIX.as_bytes())
            .and_then(|n| std::str::from_utf8(n).ok())
            .and_then(|n| n.parse::<i32>().ok())
        else {
            return;
        };
        if node == self.node {
            return;
        }
        let mut targets = lock(&self.targets);
        if !present {
            targets.remove(&node);
            crate::metrics::PEER_TARGETS.set(targets.len() as i64);
            return;
        }
        let addr = String::from_utf8_lossy(value).into_owned();
        if targets.get(&node).is_some_and(|(a, _)| *a == addr) {
            return;
        }
        match Endpoint::from_shared(format!("http://{addr}")) {
            Ok(e) => {
                let channel = e.connect_timeout(FORWARD_TIMEOUT).connect_lazy();
                let client = PeerClient::new(channel).max_decoding_message_size(MAX_FORWARD + 1024);
                targets.insert(node, (addr, client));
                crate::metrics::PEER_TARGETS.set(targets.len() as i64);
            }
            Err(e) => tracing::warn!(node, addr, error = %e, "bad peer address"),
        }
    }

    pub fn forget_all(&self) {
        lock(&self.targets).clear();
        crate::metrics::PEER_TARGETS.set(0);
    }

    /// Hands a WAL object to every registered peer, without waiting.
    pub fn forward(&self, path: &object_store::path::Path, object: &Bytes) {
        if object.len() > MAX_FORWARD {
            return;
        }
        let targets: Vec<(i32, PeerClient<Channel>)> = lock(&self.targets)
            .iter()
            .map(|(n, (_, c))| (*n, c.clone()))
            .collect();
        for (node, mut client) in targets {
            let request = WarmRequest {
                path: path.to_string(),
                object: object.clone(),
            };
            tokio::spawn(async move {
                match tokio::time::timeout(FORWARD_TIMEOUT, client.warm(request)).await {
                    Ok(Ok(_)) => crate::metrics::PEER_FORWARDS
                        .with_label_values(&["sent"])
                        .inc(),
                    Ok(Err(e)) => {
                        crate::metrics::PEER_FORWARDS
                            .with_label_values(&["failed"])
                            .inc();
                        tracing::debug!(node, error = %e, "forwarding a WAL object failed");
                    }
                    Err(_) => crate::metrics::PEER_FORWARDS
                        .with_label_values(&["timed_out"])
                        .inc(),
                }
            });
        }
    }
}

/// The flush hook: objects with data of MQTT-mapped log topics go to the peers.
pub fn hook(ctx: Weak<Ctx>) -> crate::batcher::FlushHook {
    Box::new(move |path, object, topics: &[Uuid]| {
        let Some(ctx) = ctx.upgrade() else {
            return;
        };
        let mapped = ctx.log.read(|s| {
            ctx.mqtt.map.log_topics().any(|name| {
                s.topic(name)
                    .is_some_and(|t| topics.binary_search(&t.record.id).is_ok())
            })
        });
        if mapped {
            ctx.peers.forward(path, object);
        }
    })
}

struct Service {
    cache: Arc<RangeCache>,
}

#[tonic::async_trait]
impl Peer for Service {
    async fn warm(
        &self,
        request: tonic::Request<WarmRequest>,
    ) -> Result<tonic::Response<WarmResponse>, tonic::Status> {
        let r = request.into_inner();
        let path = object_store::path::Path::parse(&r.path)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        if !sluice_storage::naming::is_wal(&path) {
            return Err(tonic::Status::invalid_argument("not a WAL object"));
        }
        self.cache.insert_object(&path, &r.object);
        crate::metrics::PEER_FORWARDS
            .with_label_values(&["received"])
            .inc();
        Ok(tonic::Response::new(WarmResponse {}))
    }
}

/// Serves the gRPC connections the Kafka listener hands over, until `cancel`.
pub async fn serve(
    cache: Arc<RangeCache>,
    mut incoming: mpsc::Receiver<TcpStream>,
    cancel: CancellationToken,
) {
    let stream = async_stream(&mut incoming);
    let service = PeerServer::new(Service { cache }).max_decoding_message_size(MAX_FORWARD + 1024);
    if let Err(e) = Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(stream, cancel.cancelled())
        .await
    {
        tracing::warn!(error = %e, "gateway gRPC server stopped");
    }
}

fn async_stream(
    incoming: &mut mpsc::Receiver<TcpStream>,
) -> impl futures::Stream<Item = Result<TcpStream, std::io::Error>> + '_ {
    futures::stream::unfold(incoming, |rx| async move {
        rx.recv().await.map(|s| (Ok(s), rx))
    })
}
