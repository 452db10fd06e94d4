//! HTTP: `/metrics` (Prometheus text), `/healthz`, `/readyz`, `POST /admin/compact` where
//! a compactor runs in the process, and with fault injection enabled, `/admin/faults` to
//! fail or delay object store PUTs. Gateways and standalone compactors both serve it.
//!
//! `/admin/*` is for administrators: with an admin token configured, every call must carry
//! it (`Authorization: Bearer TOKEN`); without one, only clients on this host (loopback
//! addresses) reach it. Metrics and health stay open.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use sluice_compactor::Compactor;
use sluice_metadata::follower::Log;
use sluice_storage::faults::Faults;

/// The HTTP listener's view of its process: from the moment it binds, while the process
/// waits for metadata and the object store, until it stops.
pub struct Http {
    /// Set once the process has started.
    state: std::sync::OnceLock<Arc<HttpState>>,
    /// What startup waits for, answered by `/readyz` until then.
    waiting: std::sync::Mutex<String>,
}

impl Http {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Default::default(),
            waiting: std::sync::Mutex::new("checking metadata and the object store".into()),
        })
    }

    /// What startup is waiting for (a line of text).
    pub fn waiting(&self, reason: String) {
        *self.waiting.lock().unwrap_or_else(|e| e.into_inner()) = reason;
    }

    /// The process has started: every endpoint is served from now on.
    pub fn started(&self, state: Arc<HttpState>) {
        let _ = self.state.set(state);
    }
}

/// What the HTTP endpoints look at.
pub struct HttpState {
    pub log: Arc<Log>,
    pub faults: Option<Arc<Faults>>,
    pub compactor: Option<Compactor>,
    /// The bearer token `/admin/*` requires; `None`: loopback clients only.
    pub admin_token: Option<Arc<str>>,
    /// A gateway's shared state: MQTT over WebSocket is served where it is present.
    pub(crate) gateway: Option<(Arc<crate::server::Ctx>, CancellationToken)>,
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

fn metrics() -> Response<Full<Bytes>> {
    let mut out = String::new();
    let families = prometheus::gather();
    match prometheus::TextEncoder::new().encode_utf8(&families, &mut out) {
        Ok(()) => reply(StatusCode::OK, out),
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

fn faults(ctx: &HttpState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(faults) = &ctx.faults else {
        return reply(StatusCode::NOT_FOUND, "fault injection is not enabled\n");
    };
    if req.method() == Method::POST {
        for (k, v) in query(req) {
            let ok = match k.as_str() {
                "fail_next_puts" => v.parse().map(|n| faults.fail_next_puts(n)).is_ok(),
                "fail_all_puts" => v.parse().map(|b| faults.fail_all_puts(b)).is_ok(),
                "put_delay_ms" => v
                    .parse()
                    .map(|ms| faults.delay_puts(Duration::from_millis(ms)))
                    .is_ok(),
                "clear" => {
                    faults.clear();
                    true
                }
                _ => false,
            };
            if !ok {
                return reply(
                    StatusCode::BAD_REQUEST,
                    format!("bad fault setting {k}={v}\n"),
                );
            }
        }
    }
    reply(
        StatusCode::OK,
        format!("{{\"injected_put_failures\":{}}}\n", faults.injected()),
    )
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Compacts everything committed so far and answers with what was done, as JSON.
async fn compact(ctx: &HttpState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(c) = &ctx.compactor else {
        return reply(StatusCode::NOT_FOUND, "no compactor runs in this process\n");
    };
    if req.method() != Method::POST {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
    }
    let q = query(req);
    match c.compact_now(q.get("topic").map(String::as_str)).await {
        Ok(r) => reply(
            StatusCode::OK,
            format!(
                "{{\"segments\":{},\"merges\":{},\"records\":{},\"published\":{},\"log_starts_moved\":{},\"deleted_wal_objects\":{},\"deleted_staging_objects\":{},\"deleted_segment_files\":{},\"checkpoint_revision\":{}}}\n",
                r.segments,
                r.merges,
                r.records,
                r.published,
                r.log_starts_moved,
                r.swept.wal_objects,
                r.swept.staging_objects,
                r.swept.segment_files,
                r.checkpoint.map_or("null".to_string(), |c| c.to_string()),
            ),
        ),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("compaction failed: {e}\n"),
        ),
    }
}

/// MQTT over WebSocket (MQTT 5.0 section 6): a `GET /mqtt` upgrade with the `mqtt`
/// subprotocol; binary frames carry the MQTT byte stream.
fn websocket(
    ctx: &HttpState,
    mut req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let Some((gateway, cancel)) = ctx.gateway.clone() else {
        return reply(StatusCode::NOT_FOUND, "no MQTT in this process\n");
    };
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let upgrade = header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let offers_mqtt = header("sec-websocket-protocol")
        .is_some_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("mqtt")));
    let Some(key) = header("sec-websocket-key").filter(|_| upgrade) else {
        return reply(StatusCode::BAD_REQUEST, "expected a WebSocket upgrade\n");
    };
    if !offers_mqtt {
        return reply(
            StatusCode::BAD_REQUEST,
            "the WebSocket subprotocol must be mqtt\n",
        );
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                crate::mqtt::websocket::serve(gateway, TokioIo::new(upgraded), peer, cancel).await
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });
    let mut r = reply(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
    let h = r.headers_mut();
    h.insert(
        hyper::header::UPGRADE,
        hyper::header::HeaderValue::from_static("websocket"),
    );
    h.insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        "sec-websocket-protocol",
        hyper::header::HeaderValue::from_static("mqtt"),
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(
        &tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()),
    ) {
        h.insert("sec-websocket-accept", v);
    }
    r
}

/// Why an `/admin` call is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Denied {
    /// A token is configured and the call carries none, or another.
    BadToken,
    /// Basic credentials that are not a super user's.
    NotAdministrator,
    /// No token is configured and the caller is not on this host.
    NotLocal,
}

/// Whether a call to `/admin/*` from `peer` with this `Authorization` header may proceed.
fn authorize(
    token: Option<&str>,
    authorization: Option<&[u8]>,
    peer: SocketAddr,
) -> Result<(), Denied> {
    match token {
        Some(token) => {
            let given = authorization
                .and_then(|h| h.strip_prefix(b"Bearer "))
                .unwrap_or_default();
            // Constant time: a guess learns nothing from how long the answer took.
            let same: bool = subtle::ConstantTimeEq::ct_eq(given, token.as_bytes()).into();
            if same { Ok(()) } else { Err(Denied::BadToken) }
        }
        None if peer.ip().is_loopback() => Ok(()),
        None => Err(Denied::NotLocal),
    }
}

/// `Authorization: Basic` credentials.
fn basic_credentials(header: &[u8]) -> Option<(String, Vec<u8>)> {
    use base64::Engine;
    let encoded = header.strip_prefix(b"Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

/// An administrator from the user store: a super user (`--super-users`, `--admin-user`)
/// whose password checks out. Failures slow down as logins do.
async fn super_user(
    gw: &crate::server::Ctx,
    user: &str,
    password: Vec<u8>,
    peer: SocketAddr,
) -> Result<(), Denied> {
    let is_super = gw.config.acl.super_users.contains(&format!("User:{user}"));
    let verified = is_super
        && crate::users::verify_password(&gw.store, user, password)
            .await
            .unwrap_or(false);
    if verified {
        gw.failed_logins.succeeded(user, Some(peer.ip()));
        return Ok(());
    }
    tokio::time::sleep(gw.failed_logins.failed(user, Some(peer.ip()))).await;
    Err(Denied::NotAdministrator)
}

fn denied(d: Denied, peer: SocketAddr, path: &str) -> Response<Full<Bytes>> {
    let mechanism = match d {
        Denied::BadToken => "bearer",
        Denied::NotLocal => "loopback",
        Denied::NotAdministrator => "basic",
    };
    crate::metrics::AUTH_FAILURES
        .with_label_values(&["http", mechanism])
        .inc();
    tracing::warn!(%peer, path, mechanism, "admin call refused");
    let challenge = |text: &'static str, scheme: &'static str| {
        let mut r = reply(StatusCode::UNAUTHORIZED, text);
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static(scheme),
        );
        r
    };
    match d {
        Denied::BadToken => challenge("a valid admin token is required\n", "Bearer"),
        Denied::NotAdministrator => challenge(
            "an administrator's user name and password are required\n",
            "Basic realm=\"sluice\"",
        ),
        Denied::NotLocal => reply(
            StatusCode::FORBIDDEN,
            "/admin is only served to this host unless an admin token is configured (--admin-token-file)\n",
        ),
    }
}

async fn route(
    http: Arc<Http>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let Some(ctx) = http.state.get().cloned() else {
        // Starting: alive, not ready, metrics (of the waiting) served.
        let waiting = http
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        return Ok(match (req.method(), req.uri().path()) {
            (&Method::GET, "/metrics") => metrics(),
            (&Method::GET, "/healthz") => reply(StatusCode::OK, "ok\n"),
            _ => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("starting: {waiting}\n"),
            ),
        });
    };
    if req.uri().path().starts_with("/admin/") {
        let header = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec());
        let basic = header.as_deref().and_then(basic_credentials);
        let verdict = match (basic, &ctx.gateway) {
            (Some((user, password)), Some((gw, _))) => super_user(gw, &user, password, peer).await,
            _ => authorize(ctx.admin_token.as_deref(), header.as_deref(), peer),
        };
        if let Err(d) = verdict {
            return Ok(denied(d, peer, req.uri().path()));
        }
    }
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => metrics(),
        (&Method::GET, "/healthz") => reply(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => {
            if ctx.log.is_following() {
                reply(StatusCode::OK, "ready\n")
            } else {
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not following the metadata log\n",
                )
            }
        }
        (_, "/admin/faults") => faults(&ctx, &req),
        (_, "/admin/compact") => compact(&ctx, &req).await,
        (&Method::GET, "/mqtt") => websocket(&ctx, req, peer),
        _ => reply(StatusCode::NOT_FOUND, "not found\n"),
    })
}

/// Serves HTTP, or HTTPS with `tls`, until `cancel`.
pub async fn serve(
    ctx: Arc<Http>,
    listener: TcpListener,
    tls: Option<Arc<crate::tls::Tls>>,
    cancel: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let (socket, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "http accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        let acceptor = tls.as_ref().map(|t| t.acceptor());
        tokio::spawn(async move {
            let Some(acceptor) = acceptor else {
                return connection(ctx, socket, peer).await;
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
                Ok(Ok(stream)) => connection(ctx, stream, peer).await,
                Ok(Err(e)) => {
                    crate::metrics::TLS_HANDSHAKE_FAILURES
                        .with_label_values(&["https"])
                        .inc();
                    tracing::warn!(%peer, listener = "https", error = %e, "TLS handshake failed; connection closed");
                }
                Err(_) => {
                    crate::metrics::TLS_HANDSHAKE_FAILURES
                        .with_label_values(&["https"])
                        .inc();
                }
            }
        });
    }
}

/// How long an HTTPS client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn connection<S>(ctx: Arc<Http>, socket: S, peer: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| route(ctx.clone(), req, peer));
    if let Err(e) = http1::Builder::new()
        .serve_connection(TokioIo::new(socket), service)
        .with_upgrades()
        .await
    {
        tracing::debug!(error = %e, "http connection error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn basic_credentials_are_read_as_http_sends_them() {
        assert_eq!(
            basic_credentials(b"Basic YWRtaW46czNjcjp0"),
            Some(("admin".to_string(), b"s3cr:t".to_vec()))
        );
        assert_eq!(basic_credentials(b"Bearer x"), None);
        assert_eq!(basic_credentials(b"Basic !!"), None);
        assert_eq!(basic_credentials(b"Basic YWRtaW4="), None);
    }

    #[test]
    fn admin_calls_need_the_token_or_a_local_caller() {
        let remote = addr("10.1.2.3:5000");
        let local = addr("127.0.0.1:5000");
        let local6 = addr("[::1]:5000");
        // No token configured: this host only.
        assert_eq!(authorize(None, None, local), Ok(()));
        assert_eq!(authorize(None, None, local6), Ok(()));
        assert_eq!(authorize(None, None, remote), Err(Denied::NotLocal));
        // A token configured: it is needed from anywhere, loopback included.
        let t = Some("s3cret-token");
        assert_eq!(authorize(t, Some(b"Bearer s3cret-token"), remote), Ok(()));
        assert_eq!(authorize(t, None, local), Err(Denied::BadToken));
        for bad in [
            &b"Bearer s3cret-tokeN"[..],
            b"Bearer s3cret",
            b"s3cret-token",
            b"Basic x",
        ] {
            assert_eq!(authorize(t, Some(bad), remote), Err(Denied::BadToken));
        }
    }
}
