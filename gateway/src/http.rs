//! HTTP: `/metrics` (Prometheus text), `/healthz`, `/readyz`, `POST /admin/compact` where
//! a compactor runs in the process, and with fault injection enabled, `/admin/faults` to
//! fail or delay object store PUTs. Gateways and standalone compactors both serve it.

use std::collections::HashMap;
use std::convert::Infallible;
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

/// What the HTTP endpoints look at.
pub struct HttpState {
    pub log: Arc<Log>,
    pub faults: Option<Arc<Faults>>,
    pub compactor: Option<Compactor>,
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
fn websocket(ctx: &HttpState, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
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
                crate::mqtt::websocket::serve(gateway, TokioIo::new(upgraded), cancel).await
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

async fn route(
    ctx: Arc<HttpState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
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
        (&Method::GET, "/mqtt") => websocket(&ctx, req),
        _ => reply(StatusCode::NOT_FOUND, "not found\n"),
    })
}

pub async fn serve(ctx: Arc<HttpState>, listener: TcpListener, cancel: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => return,
            a = listener.accept() => a,
        };
        let (socket, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "http accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| route(ctx.clone(), req));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(socket), service)
                .with_upgrades()
                .await
            {
                tracing::debug!(error = %e, "http connection error");
            }
        });
    }
}
