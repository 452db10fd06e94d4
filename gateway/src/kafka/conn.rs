//! One Kafka connection: frames in, responses out in request order.
//!
//! Requests are decoded as they arrive and run concurrently (a producer with five requests
//! in flight gets them all into the same flush), but responses are written strictly in the
//! order the requests came, as the protocol requires, and produce requests reach the
//! batcher in that order too (see [`start`]).

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::*;
use sluice_protocols::kafka::frame::take_frame;
use sluice_protocols::kafka::header::{
    HeaderError, decode_body, decode_header, encode_response, peek_prefix,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::authn::{AUTH_TIMEOUT, Auth, MAX_UNAUTHENTICATED_REQUEST};
use super::groups::Caller;
use super::versions::{SUPPORTED, supported};
use super::{
    acls, admin, authorize, delete_records, describe_topic_partitions, fetch, groups,
    init_producer_id, list_offsets, metadata, produce, quotas as client_quotas, scram,
};
use crate::acl::{Operation, Principal};
use crate::metrics;
use crate::quotas::{self, Kind};
use crate::server::Ctx;
use kafka_protocol::protocol::StrBytes;

/// Requests of one connection being worked on at once.
const MAX_IN_FLIGHT: usize = 64;

/// Why a connection is closed. Every case is logged with the peer's address.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Frame(#[from] sluice_protocols::kafka::frame::FrameError),
    #[error("{0}")]
    Header(#[from] HeaderError),
    #[error("{api:?} v{version}: {source}")]
    Body {
        api: ApiKey,
        version: i16,
        source: HeaderError,
    },
    #[error("unknown api key {0}")]
    UnknownApi(i16),
    #[error("unsupported version {1} of {0:?}")]
    UnsupportedVersion(ApiKey, i16),
    #[error("cannot encode the response: {0}")]
    Encode(#[from] sluice_protocols::kafka::header::EncodeError),
    #[error("{0:?} before authentication")]
    Unauthenticated(ApiKey),
    #[error("not authenticated within {0:?}")]
    AuthTimeout(std::time::Duration),
    #[error("{0:?} after the authenticated session ended (KIP-368)")]
    SessionExpired(ApiKey),
}

/// Connections accepted so far: each gets the next number, which names it in log lines.
static CONNECTIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// What log lines say about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnInfo {
    pub id: u64,
    pub peer: Option<std::net::SocketAddr>,
    /// The listener's name (its protocol, as Kafka names it).
    pub listener: &'static str,
}

/// Serves one Kafka connection over TCP or TLS.
pub async fn serve_stream<S>(
    ctx: Arc<Ctx>,
    mut socket: S,
    accepted: crate::server::Accepted,
    cancel: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let protocol = ctx.kafka_listeners[accepted.listener];
    let conn = ConnInfo {
        id: CONNECTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        peer: Some(accepted.peer),
        listener: protocol.name(),
    };
    tracing::debug!(conn = conn.id, peer = ?conn.peer, listener = conn.listener, principal = ?accepted.principal, "kafka connection accepted");
    let host = Some(accepted.peer.ip());
    let open_as = match &accepted.principal {
        Some(subject) => Principal::user(subject, host),
        None => Principal::anonymous(host),
    };
    let auth = Auth::new(protocol.sasl(), open_as, ctx.config.sasl_session_lifetime);
    let _open = ctx.balance.open(crate::balance::Protocol::Kafka);
    match run(&ctx, &mut socket, &cancel, conn, auth).await {
        Ok(()) => tracing::debug!(conn = conn.id, peer = ?conn.peer, "kafka connection closed"),
        Err(ConnError::Io(e)) => {
            tracing::debug!(conn = conn.id, peer = ?conn.peer, error = %e, "kafka connection dropped")
        }
        Err(e) => {
            tracing::warn!(conn = conn.id, peer = ?conn.peer, error = %e, "closing kafka connection")
        }
    }
}

/// A request's answer: its bytes (none for a produce with acks=0), and how long the
/// connection then reads nothing (a client quota's throttle, KIP-219).
struct Reply {
    out: Option<Bytes>,
    throttle: std::time::Duration,
}

impl Reply {
    fn of(out: Bytes) -> Self {
        Self {
            out: Some(out),
            throttle: std::time::Duration::ZERO,
        }
    }
}

type Pending =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reply, ConnError>> + Send>>;

async fn run<S>(
    ctx: &Arc<Ctx>,
    socket: &mut S,
    cancel: &CancellationToken,
    conn: ConnInfo,
    mut auth: Auth,
) -> Result<(), ConnError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut buf = BytesMut::with_capacity(64 << 10);
    let mut pending: FuturesOrdered<Pending> = FuturesOrdered::new();
    let mut drain_logged = false;
    let mut eof = false;
    // After a failed authentication: answer it, then close.
    let mut closing = false;
    let auth_deadline = tokio::time::Instant::now() + AUTH_TIMEOUT;
    // A client over its quota: nothing more is read (or started) until then.
    let mut muted_until = tokio::time::Instant::now();
    loop {
        let mut muted = muted_until > tokio::time::Instant::now();
        // Draining: what was started is answered, nothing new is started (a request that
        // waits for others, such as a JoinGroup, would hold the drain up); the client sends
        // it again elsewhere.
        let draining = cancel.is_cancelled();
        while !closing && !draining && !muted && pending.len() < MAX_IN_FLIGHT {
            let limit = if auth.is_done() {
                ctx.config.max_request_bytes
            } else {
                MAX_UNAUTHENTICATED_REQUEST
            };
            let Some(frame) = take_frame(&mut buf, limit)? else {
                break;
            };
            let started = start(ctx, frame, conn, &mut auth).await?;
            pending.push_back(started.reply);
            if started.close {
                closing = true;
                eof = true;
            }
            if !started.throttle.is_zero() {
                muted_until = tokio::time::Instant::now() + started.throttle;
                muted = true;
            }
        }
        if eof && pending.is_empty() {
            return Ok(());
        }
        if draining && !pending.is_empty() && !drain_logged {
            drain_logged = true;
            tracing::debug!(conn = conn.id, peer = ?conn.peer, in_flight = pending.len(), "draining: answering the requests in flight");
        }
        tokio::select! {
            _ = cancel.cancelled(), if pending.is_empty() => return Ok(()),
            // Asked to go (this gateway has more than its share): between requests only.
            _ = ctx.balance.asked(crate::balance::Protocol::Kafka), if pending.is_empty() && buf.is_empty() => {
                if ctx.balance.take(crate::balance::Protocol::Kafka) {
                    tracing::debug!(conn = conn.id, peer = ?conn.peer, "kafka connection closed to rebalance connections");
                    return Ok(());
                }
            }
            _ = tokio::time::sleep_until(auth_deadline), if !auth.is_done() && !eof => {
                crate::metrics::AUTH_FAILURES.with_label_values(&[conn.listener, "timeout"]).inc();
                return Err(ConnError::AuthTimeout(AUTH_TIMEOUT));
            }
            _ = tokio::time::sleep_until(muted_until), if muted => {}
            n = socket.read_buf(&mut buf), if !eof && !draining && !muted && pending.len() < MAX_IN_FLIGHT => {
                if n? == 0 {
                    eof = true;
                }
            }
            Some(response) = pending.next() => {
                let reply = response?;
                if let Some(bytes) = reply.out {
                    socket.write_all(&bytes).await?;
                    // TLS keeps what the socket did not take until flushed.
                    socket.flush().await?;
                }
                if !reply.throttle.is_zero() {
                    muted_until = muted_until.max(tokio::time::Instant::now() + reply.throttle);
                }
            }
        }
    }
}

/// A request started.
struct Started {
    reply: Pending,
    /// Whether the connection is to be closed once the request is answered.
    close: bool,
    /// How long the connection reads nothing more from now (a produce over its quota).
    throttle: std::time::Duration,
}

impl Started {
    fn of(reply: Pending) -> Self {
        Self {
            reply,
            close: false,
            throttle: std::time::Duration::ZERO,
        }
    }
}

/// A request whose header is decoded.
struct Request {
    key: ApiKey,
    version: i16,
    header: RequestHeader,
    /// The body, still to decode.
    frame: Bytes,
    arrived: Instant,
}

/// Decodes one request's header and starts it; the returned future answers it.
///
/// Requests run concurrently (a producer with five requests in flight gets them all into
/// the same flush), with one exception that is ordered here, before the next frame is
/// looked at: a Produce request's batches go into the batcher in the order the requests
/// arrived. Kafka appends one connection's produce requests in arrival order, and a
/// non-idempotent producer with many requests in flight (librdkafka's default) relies on
/// it; handing batches over from the concurrent futures let their wake-up order decide.
/// Waiting for the batcher here is also the connection's backpressure.
async fn start(
    ctx: &Arc<Ctx>,
    mut frame: Bytes,
    conn: ConnInfo,
    auth: &mut Auth,
) -> Result<Started, ConnError> {
    let prefix = peek_prefix(&frame)?;
    let Ok(key) = ApiKey::try_from(prefix.api_key) else {
        // Clients probe with ApiVersions first, so an unknown key is a broken peer.
        return Err(ConnError::UnknownApi(prefix.api_key));
    };
    let version = prefix.api_version;
    if !supported(key, version) {
        if key == ApiKey::ApiVersions {
            // KIP-511: answer in v0 with UNSUPPORTED_VERSION and what we support, so the
            // client can retry with a version we know.
            let body = api_versions(ResponseError::UnsupportedVersion.code());
            let out = encode_response(prefix.correlation_id, 0, &body, 0)?;
            return Ok(Started::of(ready(out)));
        }
        return Err(ConnError::UnsupportedVersion(key, version));
    }
    if !auth.is_done()
        && !matches!(
            key,
            ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
        )
    {
        return Err(ConnError::Unauthenticated(key));
    }
    if auth.expired()
        && !matches!(
            key,
            ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate
        )
    {
        crate::metrics::AUTH_FAILURES
            .with_label_values(&[conn.listener, "session_expired"])
            .inc();
        return Err(ConnError::SessionExpired(key));
    }
    let header = decode_header(key, version, &mut frame)?;
    metrics::KAFKA_REQUESTS
        .with_label_values(&[api_name(key)])
        .inc();
    let cid = header.correlation_id;
    let header_version = key.response_header_version(version);
    // The SASL exchange is strictly sequential: served here, in the connection's order.
    if key == ApiKey::SaslHandshake {
        let req: SaslHandshakeRequest = body(&mut frame, key, version)?;
        let resp = auth.handshake(&req, version, ctx.oauth.is_some());
        let out = encode_response(cid, header_version, &resp, version)?;
        return Ok(Started::of(ready(out)));
    }
    if key == ApiKey::SaslAuthenticate {
        let req: SaslAuthenticateRequest = body(&mut frame, key, version)?;
        let (resp, close) = auth.authenticate(ctx, &req, conn).await;
        let out = encode_response(cid, header_version, &resp, version)?;
        return Ok(Started {
            close,
            ..Started::of(ready(out))
        });
    }
    let mut request = Request {
        key,
        version,
        header,
        frame,
        arrived: Instant::now(),
    };
    let principal = auth
        .principal()
        .cloned()
        .unwrap_or_else(|| Principal::anonymous(conn.peer.map(|p| p.ip())));
    if key == ApiKey::Produce {
        let req: ProduceRequest = body(&mut request.frame, key, version)?;
        let trace = produce::Trace {
            conn: conn.id,
            correlation_id: cid,
        };
        let checked = authorize::produce(ctx, &principal, req);
        let req = checked.req.unwrap_or_default();
        let charge = ctx.quotas.charge(
            Kind::Produce,
            quotas::user_of(&principal.name),
            request.header.client_id.as_deref().unwrap_or(""),
            || produce::record_bytes(&req),
        );
        let submitted = produce::submit(ctx, req, version, trace).await;
        let ctx = ctx.clone();
        let throttle = charge.throttle;
        return Ok(Started {
            // Muted from now, so a client with many requests in flight is held too.
            throttle,
            close: false,
            reply: Box::pin(async move {
                let acks = submitted.acks();
                let resp = (checked.finish)(submitted.answer(&ctx).await)
                    .with_throttle_time_ms(throttle_ms(charge.throttle));
                let out = if acks == 0 {
                    None
                } else {
                    Some(encode_response(cid, header_version, &resp, version)?)
                };
                observe(&request);
                if version < 6 {
                    // Before KIP-219 the broker delays the answer instead.
                    tokio::time::sleep(throttle).await;
                }
                Ok(Reply {
                    out,
                    throttle: std::time::Duration::ZERO,
                })
            }),
        });
    }
    Ok(Started::of(Box::pin(serve(
        ctx.clone(),
        request,
        conn,
        principal,
    ))))
}

/// A response already encoded.
fn ready(out: Bytes) -> Pending {
    Box::pin(async move { Ok(Reply::of(out)) })
}

fn throttle_ms(d: std::time::Duration) -> i32 {
    d.as_millis().min(i32::MAX as u128) as i32
}

/// A throttled answer: a client that throttles itself (KIP-219: Produce v6+, Fetch v8+)
/// gets it at once and the connection is muted for the time; an older one gets it late.
async fn throttled(out: Option<Bytes>, throttle: std::time::Duration, kip219: bool) -> Reply {
    if kip219 {
        return Reply { out, throttle };
    }
    tokio::time::sleep(throttle).await;
    Reply {
        out,
        throttle: std::time::Duration::ZERO,
    }
}

fn observe(r: &Request) {
    metrics::KAFKA_LATENCY
        .with_label_values(&[api_name(r.key)])
        .observe(r.arrived.elapsed().as_secs_f64());
}

/// Serves every request but Produce.
async fn serve(
    ctx: Arc<Ctx>,
    mut r: Request,
    conn: ConnInfo,
    principal: Principal,
) -> Result<Reply, ConnError> {
    let (key, version) = (r.key, r.version);
    let mut frame = std::mem::take(&mut r.frame);
    let cid = r.header.correlation_id;
    let header_version = key.response_header_version(version);
    macro_rules! serve {
        // Handlers that authorize themselves.
        ($req:ty, $handler:expr, principal) => {{
            let req: $req = body(&mut frame, key, version)?;
            let resp = $handler(&ctx, req, version, &principal).await;
            encode_response(cid, header_version, &resp, version)?
        }};
        // Checked: what `$check` refuses is answered by it, the rest by the handler (with
        // `asker` where the answer names gateways: at the client's listener's addresses, in its zone).
        ($req:ty, $handler:expr, $check:expr $(, $extra:ident)?) => {{
            let req: $req = body(&mut frame, key, version)?;
            let checked = $check(&*ctx, &principal, req);
            let resp = match checked.req {
                Some(req) => $handler(&ctx, req, version $(, &$extra)?).await,
                None => Default::default(),
            };
            encode_response(cid, header_version, &(checked.finish)(resp), version)?
        }};
    }
    use authorize as az;
    let asker = super::Asker {
        listener: conn.listener,
        zone: r
            .header
            .client_id
            .as_deref()
            .and_then(crate::cluster::client_zone),
    };
    let out = match key {
        ApiKey::ApiVersions => {
            let _: ApiVersionsRequest = body(&mut frame, key, version)?;
            encode_response(cid, header_version, &api_versions(0), version)?
        }
        ApiKey::Fetch => {
            let req: FetchRequest = body(&mut frame, key, version)?;
            let checked = az::fetch(&ctx, &principal, req);
            let resp = match checked.req {
                Some(req) => fetch::handle(&ctx, req, version).await,
                None => Default::default(),
            };
            let mut resp = (checked.finish)(resp);
            let charge = ctx.quotas.charge(
                Kind::Fetch,
                quotas::user_of(&principal.name),
                r.header.client_id.as_deref().unwrap_or(""),
                || fetch::record_bytes(&resp),
            );
            if !charge.deliver {
                // As Kafka: a fetch over its quota is answered without data.
                resp = FetchResponse::default().with_session_id(resp.session_id);
            }
            resp.throttle_time_ms = throttle_ms(charge.throttle);
            let out = encode_response(cid, header_version, &resp, version)?;
            observe(&r);
            return Ok(throttled(Some(out), charge.throttle, version >= 8).await);
        }
        ApiKey::ListOffsets => serve!(ListOffsetsRequest, list_offsets::handle, az::list_offsets),
        ApiKey::Metadata => serve!(
            MetadataRequest,
            metadata::handle,
            |c, p, r| az::metadata(c, p, r, version),
            asker
        ),
        ApiKey::CreateTopics => {
            serve!(CreateTopicsRequest, admin::create_topics, az::create_topics)
        }
        ApiKey::DeleteTopics => {
            serve!(DeleteTopicsRequest, admin::delete_topics, az::delete_topics)
        }
        ApiKey::CreatePartitions => serve!(
            CreatePartitionsRequest,
            admin::create_partitions,
            az::create_partitions
        ),
        ApiKey::DescribeConfigs => serve!(
            DescribeConfigsRequest,
            admin::describe_configs,
            az::describe_configs
        ),
        ApiKey::IncrementalAlterConfigs => serve!(
            IncrementalAlterConfigsRequest,
            admin::alter_configs,
            az::incremental_alter_configs
        ),
        ApiKey::DescribeCluster => serve!(
            DescribeClusterRequest,
            admin::describe_cluster,
            az::describe_cluster,
            asker
        ),
        ApiKey::InitProducerId => serve!(
            InitProducerIdRequest,
            init_producer_id::handle,
            az::init_producer_id
        ),
        ApiKey::FindCoordinator => serve!(
            FindCoordinatorRequest,
            groups::find_coordinator,
            |c, p, r| az::find_coordinator(c, p, r, version),
            asker
        ),
        ApiKey::JoinGroup => {
            let req: JoinGroupRequest = body(&mut frame, key, version)?;
            let checked = az::group_read(
                &ctx,
                &principal,
                req,
                |r| &r.group_id,
                |r: JoinGroupResponse| r.with_error_code(GROUP_DENIED).with_generation_id(-1),
            );
            let caller = Caller {
                client_id: r
                    .header
                    .client_id
                    .as_ref()
                    .map(|c| c.to_string())
                    .unwrap_or_default(),
                host: conn
                    .peer
                    .map(|p| format!("/{}", p.ip()))
                    .unwrap_or_default(),
            };
            let resp = match checked.req {
                Some(req) => groups::join_group(&ctx, req, version, &caller).await,
                None => Default::default(),
            };
            encode_response(cid, header_version, &(checked.finish)(resp), version)?
        }
        ApiKey::SyncGroup => serve!(SyncGroupRequest, groups::sync_group, |c, p, r| {
            az::group_read(
                c,
                p,
                r,
                |r: &SyncGroupRequest| &r.group_id,
                |r: SyncGroupResponse| r.with_error_code(GROUP_DENIED),
            )
        }),
        ApiKey::Heartbeat => serve!(HeartbeatRequest, groups::heartbeat, |c, p, r| {
            az::group_read(
                c,
                p,
                r,
                |r: &HeartbeatRequest| &r.group_id,
                |r: HeartbeatResponse| r.with_error_code(GROUP_DENIED),
            )
        }),
        ApiKey::LeaveGroup => serve!(LeaveGroupRequest, groups::leave_group, |c, p, r| {
            az::group_read(
                c,
                p,
                r,
                |r: &LeaveGroupRequest| &r.group_id,
                |r: LeaveGroupResponse| r.with_error_code(GROUP_DENIED),
            )
        }),
        ApiKey::OffsetCommit => serve!(
            OffsetCommitRequest,
            groups::offset_commit,
            az::offset_commit
        ),
        ApiKey::OffsetFetch => serve!(OffsetFetchRequest, groups::offset_fetch, |c, p, r| {
            az::offset_fetch(c, p, r, version)
        }),
        ApiKey::ListGroups => serve!(ListGroupsRequest, groups::list_groups, az::list_groups),
        ApiKey::DescribeGroups => serve!(
            DescribeGroupsRequest,
            groups::describe_groups,
            az::describe_groups
        ),
        ApiKey::DeleteGroups => serve!(
            DeleteGroupsRequest,
            groups::delete_groups,
            az::delete_groups
        ),
        ApiKey::OffsetDelete => serve!(
            OffsetDeleteRequest,
            groups::offset_delete,
            az::offset_delete
        ),
        ApiKey::DeleteRecords => serve!(
            DeleteRecordsRequest,
            delete_records::handle,
            az::delete_records
        ),
        ApiKey::DescribeTopicPartitions => serve!(
            DescribeTopicPartitionsRequest,
            describe_topic_partitions::handle,
            az::describe_topic_partitions,
            asker
        ),
        ApiKey::AlterConfigs => serve!(
            AlterConfigsRequest,
            admin::alter_configs_legacy,
            az::alter_configs
        ),
        ApiKey::DescribeUserScramCredentials => serve!(
            DescribeUserScramCredentialsRequest,
            scram::describe,
            |c, p, r| az::cluster(
                c,
                p,
                r,
                Operation::Describe,
                |r: DescribeUserScramCredentialsResponse| r
                    .with_error_code(31)
                    .with_error_message(Some(StrBytes::from_static_str("not authorized")))
            )
        ),
        ApiKey::AlterUserScramCredentials => serve!(
            AlterUserScramCredentialsRequest,
            scram::alter,
            az::alter_user_scram
        ),
        ApiKey::CreateAcls => serve!(CreateAclsRequest, acls::create_acls, principal),
        ApiKey::DescribeAcls => serve!(DescribeAclsRequest, acls::describe_acls, principal),
        ApiKey::DeleteAcls => serve!(DeleteAclsRequest, acls::delete_acls, principal),
        ApiKey::DescribeClientQuotas => serve!(
            DescribeClientQuotasRequest,
            client_quotas::describe,
            principal
        ),
        ApiKey::AlterClientQuotas => {
            serve!(AlterClientQuotasRequest, client_quotas::alter, principal)
        }
        // Produce is started in `start`; anything else is not advertised.
        other => return Err(ConnError::UnsupportedVersion(other, version)),
    };
    observe(&r);
    Ok(Reply::of(out))
}

const GROUP_DENIED: i16 = 30;

fn body<T: kafka_protocol::protocol::Decodable>(
    frame: &mut Bytes,
    api: ApiKey,
    version: i16,
) -> Result<T, ConnError> {
    decode_body(frame, version).map_err(|source| ConnError::Body {
        api,
        version,
        source,
    })
}

fn api_versions(error_code: i16) -> ApiVersionsResponse {
    // No feature tags: Apache Kafka sends none a client needs here, and librdkafka before
    // 2.2 cannot skip them.
    ApiVersionsResponse::default()
        .with_error_code(error_code)
        .with_api_keys(
            SUPPORTED
                .iter()
                .map(|(k, min, max)| {
                    ApiVersion::default()
                        .with_api_key(*k as i16)
                        .with_min_version(*min)
                        .with_max_version(*max)
                })
                .collect(),
        )
}

fn api_name(key: ApiKey) -> &'static str {
    match key {
        ApiKey::Produce => "produce",
        ApiKey::Fetch => "fetch",
        ApiKey::ListOffsets => "list_offsets",
        ApiKey::Metadata => "metadata",
        ApiKey::ApiVersions => "api_versions",
        ApiKey::CreateTopics => "create_topics",
        ApiKey::DeleteTopics => "delete_topics",
        ApiKey::DescribeConfigs => "describe_configs",
        ApiKey::CreatePartitions => "create_partitions",
        ApiKey::IncrementalAlterConfigs => "incremental_alter_configs",
        ApiKey::DescribeCluster => "describe_cluster",
        ApiKey::InitProducerId => "init_producer_id",
        ApiKey::FindCoordinator => "find_coordinator",
        ApiKey::JoinGroup => "join_group",
        ApiKey::SyncGroup => "sync_group",
        ApiKey::Heartbeat => "heartbeat",
        ApiKey::LeaveGroup => "leave_group",
        ApiKey::OffsetCommit => "offset_commit",
        ApiKey::OffsetFetch => "offset_fetch",
        ApiKey::ListGroups => "list_groups",
        ApiKey::DescribeGroups => "describe_groups",
        ApiKey::DeleteGroups => "delete_groups",
        ApiKey::OffsetDelete => "offset_delete",
        ApiKey::DeleteRecords => "delete_records",
        ApiKey::SaslHandshake => "sasl_handshake",
        ApiKey::SaslAuthenticate => "sasl_authenticate",
        ApiKey::DescribeTopicPartitions => "describe_topic_partitions",
        ApiKey::AlterConfigs => "alter_configs",
        ApiKey::DescribeUserScramCredentials => "describe_user_scram_credentials",
        ApiKey::AlterUserScramCredentials => "alter_user_scram_credentials",
        ApiKey::DescribeClientQuotas => "describe_client_quotas",
        ApiKey::AlterClientQuotas => "alter_client_quotas",
        _ => "other",
    }
}
