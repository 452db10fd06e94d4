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
//!
//! Every call is signed: HMAC-SHA256 under the cluster secret (`--cluster-secret-file`)
//! of a version tag, the signing time, the path and the object's SHA-256. A call without a
//! valid signature, or signed more than a minute away from the receiver's clock, is refused
//! and counted; a gateway without a secret neither forwards nor accepts forwards (its MQTT
//! deliveries then read WAL objects from the object store).
//!
//! Even a signed object is not trusted: the writer commits the object's SHA-256 with it,
//! and a receiver keeps forwarded bytes aside ([`Warmed`]) until that commit reaches it,
//! caching them only if they hash to the committed digest. A peer cannot put bytes into
//! another gateway's cache that the commit log does not vouch for.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint, Server};
use uuid::Uuid;

use crate::server::Ctx;

mod warmed;
pub use warmed::Warmed;

pub mod proto {
    tonic::include_proto!("sluice.peer.v1");
}

use proto::peer_client::PeerClient;
use proto::peer_server::{Peer, PeerServer};
use proto::{WarmRequest, WarmResponse};

/// A connection a Kafka listener recognised as another gateway's gRPC: TCP, or TLS on a
/// TLS listener.
pub struct Incoming(std::pin::Pin<Box<dyn PeerIo>>);

pub trait PeerIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send> PeerIo for T {}

impl Incoming {
    pub fn new(io: impl PeerIo + 'static) -> Self {
        Self(Box::pin(io))
    }
}

impl tokio::io::AsyncRead for Incoming {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.0.as_mut().poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Incoming {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0.as_mut().poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.0.as_mut().poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.0.as_mut().poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Incoming {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

/// Objects larger than this are not forwarded (the receiver reads them as usual).
const MAX_FORWARD: usize = 32 << 20;
/// How long a forward may take; a slow peer just reads from the object store.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);

/// What a signature covers first: changing the signed fields changes the tag.
const SIGNATURE_TAG: &[u8] = b"sluice-peer-warm-v2";
/// How far a call's signing time may be from the receiver's clock.
const MAX_SKEW_MS: i64 = 60_000;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

fn mac(secret: &[u8], signed_at_ms: i64, path: &str, digest: &[u8]) -> HmacSha256 {
    use hmac::Mac;
    let mut mac =
        HmacSha256::new_from_slice(secret).expect("invariant: HMAC takes keys of any length");
    mac.update(SIGNATURE_TAG);
    mac.update(&signed_at_ms.to_be_bytes());
    mac.update(&(path.len() as u64).to_be_bytes());
    mac.update(path.as_bytes());
    mac.update(digest);
    mac
}

/// The signature of a Warm call.
pub fn sign(secret: &[u8], signed_at_ms: i64, path: &str, digest: &[u8]) -> Vec<u8> {
    use hmac::Mac;
    mac(secret, signed_at_ms, path, digest)
        .finalize()
        .into_bytes()
        .to_vec()
}

/// Why a Warm call is refused before its object is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unauthenticated {
    #[error("this gateway has no cluster secret and accepts no peer calls")]
    NoSecret,
    #[error("the call was signed too far from this gateway's clock")]
    Stale,
    #[error("the call's signature is not valid")]
    BadSignature,
}

/// Checks a Warm call's signature (in constant time) and signing time.
pub fn verify(secret: Option<&[u8]>, now_ms: i64, r: &WarmRequest) -> Result<(), Unauthenticated> {
    use hmac::Mac;
    let secret = secret.ok_or(Unauthenticated::NoSecret)?;
    if (now_ms - r.signed_at_ms).abs() > MAX_SKEW_MS {
        return Err(Unauthenticated::Stale);
    }
    mac(secret, r.signed_at_ms, &r.path, &r.digest)
        .verify_slice(&r.signature)
        .map_err(|_| Unauthenticated::BadSignature)
}

/// The gateways to forward to, and this gateway's own registration.
#[derive(Debug, Default)]
pub struct Peers {
    node: i32,
    /// Signs outgoing and checks incoming calls; without it nothing is forwarded.
    secret: Option<Arc<[u8]>>,
    /// For calls to gateways registered with a TLS address.
    tls: Option<Arc<crate::tls::Tls>>,
    /// Other gateways that deliver MQTT messages: their address and a client.
    targets: Mutex<HashMap<i32, (String, PeerClient<Channel>)>>,
    registered: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Peers {
    pub fn new(node: i32, secret: Option<Arc<[u8]>>, tls: Option<Arc<crate::tls::Tls>>) -> Self {
        Self {
            node,
            secret,
            tls,
            ..Self::default()
        }
    }

    /// Registers this gateway as one that delivers MQTT messages (once). Without a cluster
    /// secret it cannot accept forwards, so it does not ask for them.
    pub fn register(&self, ctx: &Ctx) {
        if self.registered.swap(true, Ordering::SeqCst) {
            return;
        }
        if self.secret.is_none() {
            tracing::info!(
                "no cluster secret: MQTT deliveries read WAL objects from the object store (see --cluster-secret-file)"
            );
            return;
        }
        let addr = ctx.peer_addr.clone();
        let key = sluice_metadata::keys::mqtt_peer(self.node);
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
        // A registration is `HOST:PORT`, or `tls://HOST:PORT` for a TLS listener.
        let (plain, tls) = match addr.strip_prefix("tls://") {
            Some(a) => (a, true),
            None => (addr.as_str(), false),
        };
        if tls && self.tls.is_none() {
            tracing::warn!(
                node,
                addr,
                "a gateway takes forwards over TLS, and this one has no TLS configuration (--tls-cert): not forwarding to it"
            );
            return;
        }
        match Endpoint::from_shared(format!("http://{plain}")) {
            Ok(e) => {
                let e = e.connect_timeout(FORWARD_TIMEOUT);
                let channel = match (&self.tls, tls) {
                    (Some(config), true) => tls_channel(e, config.clone(), plain.to_string()),
                    _ => e.connect_lazy(),
                };
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

    /// Whether an object of `size` bytes would be forwarded to anyone.
    fn forwards(&self, size: usize) -> bool {
        self.secret.is_some() && size <= MAX_FORWARD && !lock(&self.targets).is_empty()
    }

    /// Hands a WAL object to every registered peer, signed, without waiting.
    pub fn forward(&self, path: &object_store::path::Path, object: &Bytes, digest: [u8; 32]) {
        let Some(secret) = self.secret.as_deref() else {
            return;
        };
        let targets: Vec<(i32, PeerClient<Channel>)> = lock(&self.targets)
            .iter()
            .map(|(n, (_, c))| (*n, c.clone()))
            .collect();
        let path = path.to_string();
        let signed_at_ms = crate::kafka::now_ms();
        let signature = Bytes::from(sign(secret, signed_at_ms, &path, &digest));
        for (node, client) in targets {
            let request = WarmRequest {
                path: path.clone(),
                object: object.clone(),
                signed_at_ms,
                signature: signature.clone(),
                digest: Bytes::copy_from_slice(&digest),
            };
            send(node, client, request);
        }
    }
}

/// A channel to a gateway's TLS listener at `addr`: its certificate must chain to the peer
/// CA and name the address's host.
fn tls_channel(endpoint: Endpoint, tls: Arc<crate::tls::Tls>, addr: String) -> Channel {
    let host = addr
        .rsplit_once(':')
        .map_or(addr.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let connector = tower::service_fn(move |_: tonic::codegen::http::Uri| {
        let (tls, addr, host) = (tls.clone(), addr.clone(), host.clone());
        async move {
            let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
            let config = tls.peer_client().map_err(|e| invalid(e.to_string()))?;
            let name =
                rustls_pki_types::ServerName::try_from(host).map_err(|e| invalid(e.to_string()))?;
            let tcp = TcpStream::connect(&addr).await?;
            let _ = tcp.set_nodelay(true);
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    endpoint.connect_with_connector_lazy(connector)
}

/// Sends one Warm call without waiting for it; its outcome is counted.
fn send(node: i32, mut client: PeerClient<Channel>, request: WarmRequest) {
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

/// The flush hook: objects with data of MQTT-mapped log topics go to the peers.
pub struct Hook(pub Weak<Ctx>);

impl crate::batcher::FlushHook for Hook {
    fn wants(&self, size: usize, topics: &[Uuid]) -> bool {
        let Some(ctx) = self.0.upgrade() else {
            return false;
        };
        ctx.peers.forwards(size)
            && ctx.log.read(|s| {
                ctx.mqtt.map.log_topics().any(|name| {
                    s.topic(name)
                        .is_some_and(|t| topics.binary_search(&t.record.id).is_ok())
                })
            })
    }

    fn written(&self, path: &object_store::path::Path, object: &Bytes, digest: [u8; 32]) {
        if let Some(ctx) = self.0.upgrade() {
            ctx.peers.forward(path, object, digest);
        }
    }
}

struct Service {
    warmed: Arc<Warmed>,
    secret: Option<Arc<[u8]>>,
}

#[tonic::async_trait]
impl Peer for Service {
    async fn warm(
        &self,
        request: tonic::Request<WarmRequest>,
    ) -> Result<tonic::Response<WarmResponse>, tonic::Status> {
        let r = request.into_inner();
        let secret = self.secret.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let v = verify(secret.as_deref(), crate::kafka::now_ms(), &r);
            (r, v)
        })
        .await;
        let r = match checked {
            Ok((r, Ok(()))) => r,
            Ok((_, Err(e))) => {
                crate::metrics::AUTH_FAILURES
                    .with_label_values(&["peer", "hmac"])
                    .inc();
                tracing::warn!(error = %e, "peer call refused");
                return Err(tonic::Status::unauthenticated(e.to_string()));
            }
            Err(e) => return Err(tonic::Status::internal(e.to_string())),
        };
        let path = object_store::path::Path::parse(&r.path)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        if !sluice_storage::naming::is_wal(&path) {
            return Err(tonic::Status::invalid_argument("not a WAL object"));
        }
        let Ok(claimed) = <[u8; 32]>::try_from(&r.digest[..]) else {
            return Err(tonic::Status::invalid_argument(
                "the digest is not 32 bytes",
            ));
        };
        // Hashing reads the whole object: off the async workers.
        let object = r.object.clone();
        let actual = tokio::task::spawn_blocking(move || -> [u8; 32] {
            <sha2::Sha256 as sha2::Digest>::digest(&object[..]).into()
        })
        .await
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
        if actual != claimed {
            crate::metrics::PEER_FORWARDS
                .with_label_values(&["rejected"])
                .inc();
            tracing::warn!(object = %path, "forwarded object does not match its digest; not kept");
            return Err(tonic::Status::invalid_argument(
                "the object does not match its digest",
            ));
        }
        self.warmed.offer(path, r.object, actual);
        Ok(tonic::Response::new(WarmResponse {}))
    }
}

/// Serves the gRPC connections the Kafka listener hands over, until `cancel`.
pub async fn serve(
    warmed: Arc<Warmed>,
    secret: Option<Arc<[u8]>>,
    mut incoming: mpsc::Receiver<Incoming>,
    cancel: CancellationToken,
) {
    let stream = async_stream(&mut incoming);
    let service =
        PeerServer::new(Service { warmed, secret }).max_decoding_message_size(MAX_FORWARD + 1024);
    if let Err(e) = Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(stream, cancel.cancelled())
        .await
    {
        tracing::warn!(error = %e, "gateway gRPC server stopped");
    }
}

fn async_stream(
    incoming: &mut mpsc::Receiver<Incoming>,
) -> impl futures::Stream<Item = Result<Incoming, std::io::Error>> + '_ {
    futures::stream::unfold(incoming, |rx| async move {
        rx.recv().await.map(|s| (Ok(s), rx))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a cluster secret of some length";

    fn digest_of(object: &[u8]) -> [u8; 32] {
        <sha2::Sha256 as sha2::Digest>::digest(object).into()
    }

    fn signed(secret: &[u8], at: i64) -> WarmRequest {
        let path = sluice_storage::naming::new_wal_object().1.to_string();
        let object = Bytes::from_static(b"SLUICEWL object bytes");
        let digest = digest_of(&object);
        WarmRequest {
            signature: sign(secret, at, &path, &digest).into(),
            path,
            object,
            signed_at_ms: at,
            digest: Bytes::copy_from_slice(&digest),
        }
    }

    #[test]
    fn only_calls_signed_with_the_cluster_secret_pass() {
        let now = 1_796_000_000_000;
        assert_eq!(
            verify(Some(SECRET), now, &signed(SECRET, now - 5_000)),
            Ok(())
        );
        assert_eq!(
            verify(Some(SECRET), now, &signed(b"another secret entirely", now)),
            Err(Unauthenticated::BadSignature)
        );
        let mut tampered = signed(SECRET, now);
        tampered.digest = Bytes::copy_from_slice(&digest_of(b"SLUICEWL other bytes!"));
        assert_eq!(
            verify(Some(SECRET), now, &tampered),
            Err(Unauthenticated::BadSignature)
        );
        let mut moved = signed(SECRET, now);
        moved.path.push('x');
        assert_eq!(
            verify(Some(SECRET), now, &moved),
            Err(Unauthenticated::BadSignature)
        );
        let mut unsigned = signed(SECRET, now);
        unsigned.signature = Bytes::new();
        assert_eq!(
            verify(Some(SECRET), now, &unsigned),
            Err(Unauthenticated::BadSignature)
        );
        assert_eq!(
            verify(Some(SECRET), now, &signed(SECRET, now - 61_000)),
            Err(Unauthenticated::Stale)
        );
        assert_eq!(
            verify(None, now, &signed(SECRET, now)),
            Err(Unauthenticated::NoSecret)
        );
    }

    /// A real gRPC client against the real service: an unsigned call is refused; signed
    /// bytes that do not match their digest are refused; signed matching bytes are held
    /// until their commit, and cached only if the commit has their digest.
    #[tokio::test]
    async fn the_service_refuses_unsigned_calls_and_unvouched_bytes() {
        let cache = warmed::tests::memory_cache().await;
        let warmed = Arc::new(Warmed::new(cache.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind on loopback");
        let addr = listener.local_addr().expect("bound");
        let (tx, rx) = mpsc::channel(4);
        let cancel = CancellationToken::new();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                if tx.send(Incoming::new(socket)).await.is_err() {
                    return;
                }
            }
        });
        tokio::spawn(serve(
            warmed.clone(),
            Some(Arc::from(SECRET)),
            rx,
            cancel.clone(),
        ));
        let mut client = PeerClient::connect(format!("http://{addr}"))
            .await
            .expect("connects");
        let now = crate::kafka::now_ms();
        let mut forged = signed(b"not the cluster secret!", now);
        let status = client
            .warm(forged.clone())
            .await
            .expect_err("a forged call is refused");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        forged.signature = Bytes::new();
        let status = client
            .warm(forged)
            .await
            .expect_err("an unsigned call is refused");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        // Signed, but the bytes are not those the digest names.
        let mut swapped = signed(SECRET, now);
        swapped.object = Bytes::from_static(b"SLUICEWL other bytes!");
        let status = client
            .warm(swapped)
            .await
            .expect_err("bytes that do not match their digest are refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);

        let good = signed(SECRET, now);
        let path = object_store::path::Path::parse(&good.path).expect("a path");
        let size = good.object.len() as u64;
        let digest = digest_of(&good.object);
        client.warm(good).await.expect("a signed call is served");
        // Held until the commit: neither the cache nor the (empty) object store has it.
        assert!(cache.get_range(&path, size, 0..8).await.is_err());
        warmed.committed(path.as_ref(), Some(&digest));
        let kept = cache.get_range(&path, size, 0..8).await.expect("cached");
        assert_eq!(&kept[..], b"SLUICEWL");
        cancel.cancel();
    }
}
