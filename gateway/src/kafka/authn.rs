//! A Kafka connection's authentication: on a SASL listener a client must complete
//! SaslHandshake (v1) and SaslAuthenticate before any request but ApiVersions, as Kafka
//! requires; anything else closes the connection.
//!
//! Re-authentication (KIP-368): with a session lifetime (`--connections-max-reauth`, Kafka's
//! `connections.max.reauth.ms`), SaslAuthenticate tells the client how long its session
//! lasts; the client authenticates again on the same connection before then (its requests
//! go on meanwhile under the old session), as the same principal. A request other than
//! ApiVersions or SASL after the session ended closes the connection. The mechanisms' state machines
//! are in [`super::sasl`]; credentials come from the user store.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use sluice_metadata::records::ScramCredentialRecord;

use super::conn::ConnInfo;
use super::sasl::{self, SaslError, ScramServer};
use crate::acl::Principal;
use crate::server::Ctx;
use crate::users::Mechanism;

/// How long a client on a SASL listener has to authenticate.
pub const AUTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The largest request accepted before authentication (Kafka's
/// `sasl.server.max.receive.size`).
pub const MAX_UNAUTHENTICATED_REQUEST: usize = 512 << 10;

/// Where a connection is in authenticating.
pub(crate) struct Auth {
    state: State,
    /// While re-authenticating: the session being renewed, which requests still use.
    renewing: Option<Principal>,
    /// When the authenticated session ends, if it does.
    expires: Option<Instant>,
    /// How long a session lasts (KIP-368); `None`: as long as the connection.
    lifetime: Option<Duration>,
}

enum State {
    /// A listener without SASL: the client is its TLS certificate's principal, or
    /// anonymous.
    Open(Principal),
    /// Waiting for SaslHandshake.
    Handshake,
    /// Mechanism chosen, waiting for the first SaslAuthenticate.
    Chosen(SaslMechanism),
    /// A SCRAM exchange waiting for the client's final message.
    Scram(Box<ScramServer>),
    /// Authenticated as this user.
    Authenticated(Principal),
}

/// A SASL mechanism offered by the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SaslMechanism {
    Scram(Mechanism),
    Plain,
    /// A JWT checked against the JWKS file (`--oauth-jwks`).
    OAuthBearer,
}

impl Auth {
    /// A connection's start: SASL first on a SASL listener (sessions lasting `lifetime`);
    /// else it is `open_as`.
    pub fn new(sasl: bool, open_as: Principal, lifetime: Option<Duration>) -> Self {
        Self {
            state: if sasl {
                State::Handshake
            } else {
                State::Open(open_as)
            },
            renewing: None,
            expires: None,
            lifetime,
        }
    }

    /// Whether requests other than ApiVersions and SASL may be served.
    pub fn is_done(&self) -> bool {
        self.principal().is_some()
    }

    /// Whether the authenticated session has ended (KIP-368) without being renewed.
    pub fn expired(&self) -> bool {
        self.expires.is_some_and(|at| Instant::now() >= at)
    }

    /// Who the client is, once known.
    pub fn principal(&self) -> Option<&Principal> {
        match &self.state {
            State::Open(p) | State::Authenticated(p) => Some(p),
            _ => self.renewing.as_ref(),
        }
    }

    /// Serves SaslHandshake; `oauth`: whether OAUTHBEARER is offered too.
    pub fn handshake(
        &mut self,
        req: &SaslHandshakeRequest,
        version: i16,
        oauth: bool,
    ) -> SaslHandshakeResponse {
        let offered = sasl::mechanisms(oauth)
            .map(StrBytes::from_static_str)
            .collect();
        let resp = SaslHandshakeResponse::default().with_mechanisms(offered);
        if version == 0 {
            return resp.with_error_code(ResponseError::UnsupportedVersion.code());
        }
        match std::mem::replace(&mut self.state, State::Handshake) {
            State::Handshake => {}
            // Re-authentication (KIP-368): the session goes on until this one succeeds.
            State::Authenticated(p) if self.lifetime.is_some() => self.renewing = Some(p),
            other => {
                // A listener without SASL, or a handshake in the middle of an exchange.
                self.state = other;
                return resp.with_error_code(ResponseError::IllegalSaslState.code());
            }
        }
        let chosen = match req.mechanism.as_str() {
            "PLAIN" => SaslMechanism::Plain,
            "OAUTHBEARER" if oauth => SaslMechanism::OAuthBearer,
            name => match Mechanism::from_name(name) {
                Some(m) => SaslMechanism::Scram(m),
                None => {
                    return resp.with_error_code(ResponseError::UnsupportedSaslMechanism.code());
                }
            },
        };
        self.state = State::Chosen(chosen);
        resp
    }

    /// Serves one SaslAuthenticate; `true` with the response when the exchange failed and
    /// the connection is to be closed after it.
    pub async fn authenticate(
        &mut self,
        ctx: &Ctx,
        req: &SaslAuthenticateRequest,
        conn: ConnInfo,
    ) -> (SaslAuthenticateResponse, bool) {
        let state = std::mem::replace(&mut self.state, State::Handshake);
        // Who is trying, for slowing down repeated failures ("" when the token is too
        // broken to say).
        let attempted = match &state {
            State::Chosen(SaslMechanism::Plain) => sasl::plain(&req.auth_bytes)
                .map(|(u, _)| u)
                .unwrap_or_default(),
            State::Chosen(SaslMechanism::Scram(_)) => sasl::client_first(&req.auth_bytes)
                .map(|f| f.user)
                .unwrap_or_default(),
            State::Scram(server) => server.user().to_string(),
            _ => String::new(),
        };
        let addr = conn.peer.map(|a| a.ip());
        // When the credential itself expires (a token's `exp`).
        let mut credential_expires = None;
        let (result, mechanism) = match state {
            State::Chosen(SaslMechanism::Plain) => (plain(ctx, &req.auth_bytes).await, "PLAIN"),
            State::Chosen(SaslMechanism::OAuthBearer) => {
                let result = oauthbearer(ctx, &req.auth_bytes).map(|v| {
                    credential_expires = Some(v.expires);
                    (v.principal, Vec::new())
                });
                (result, "OAUTHBEARER")
            }
            State::Chosen(SaslMechanism::Scram(m)) => {
                match scram_first(ctx, m, &req.auth_bytes).await {
                    Ok((server, reply)) => {
                        self.state = State::Scram(Box::new(server));
                        return (ok(reply, None), false);
                    }
                    Err(e) => (Err(e), m.name()),
                }
            }
            State::Scram(server) => {
                let user = server.user().to_string();
                let m = server.mechanism();
                (
                    server.finish(&req.auth_bytes).map(|reply| (user, reply)),
                    m.name(),
                )
            }
            other => {
                self.state = other;
                return (
                    SaslAuthenticateResponse::default()
                        .with_error_code(ResponseError::IllegalSaslState.code())
                        .with_error_message(Some(StrBytes::from_static_str(
                            "SaslAuthenticate before SaslHandshake",
                        ))),
                    true,
                );
            }
        };
        // Re-authentication must keep the principal, as Kafka requires.
        let result = match (result, self.renewing.take()) {
            (Ok((user, _)), Some(old)) if Principal::user(&user, addr).name != old.name => {
                Err(SaslError::PrincipalChanged)
            }
            (result, _) => result,
        };
        match result {
            Ok((user, reply)) => {
                let renewed = self.expires.is_some();
                tracing::debug!(conn = conn.id, peer = ?conn.peer, user, mechanism, renewed, "kafka client authenticated");
                ctx.failed_logins.succeeded(&user, addr);
                self.state = State::Authenticated(Principal::user(&user, addr));
                // As Kafka: with re-authentication on, a session ends with its credential.
                let lifetime = match (self.lifetime, credential_expires) {
                    (Some(l), Some(at)) => Some(
                        l.min(
                            at.duration_since(std::time::SystemTime::now())
                                .unwrap_or_default(),
                        ),
                    ),
                    (l, _) => l,
                };
                self.expires = lifetime.map(|l| Instant::now() + l);
                if renewed {
                    crate::metrics::REAUTHENTICATIONS.inc();
                }
                (ok(reply, lifetime), false)
            }
            Err(e) => {
                crate::metrics::AUTH_FAILURES
                    .with_label_values(&[conn.listener, mechanism])
                    .inc();
                let delay = ctx.failed_logins.failed(&attempted, addr);
                tracing::warn!(conn = conn.id, peer = ?conn.peer, user = attempted, mechanism, error = %e, delay_ms = delay.as_millis() as u64, "kafka authentication failed");
                tokio::time::sleep(delay).await;
                let resp = SaslAuthenticateResponse::default()
                    .with_error_code(ResponseError::SaslAuthenticationFailed.code())
                    .with_error_message(Some(StrBytes::from_string(format!(
                        "Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"
                    ))));
                (resp, true)
            }
        }
    }
}

/// A successful step; the last one tells how long the session lasts (KIP-368; 0: as long
/// as the connection).
fn ok(reply: Vec<u8>, lifetime: Option<Duration>) -> SaslAuthenticateResponse {
    let ms = lifetime.map_or(0, |l| i64::try_from(l.as_millis()).unwrap_or(i64::MAX));
    SaslAuthenticateResponse::default()
        .with_auth_bytes(Bytes::from(reply))
        .with_session_lifetime_ms(ms)
}

/// The user's credential of mechanism `m`, if any.
async fn credential(
    ctx: &Ctx,
    user: &str,
    m: Mechanism,
) -> Result<Option<ScramCredentialRecord>, SaslError> {
    crate::users::credential(&ctx.store, user, m)
        .await
        .map_err(|_| SaslError::Unavailable)
}

async fn scram_first(
    ctx: &Ctx,
    m: Mechanism,
    token: &[u8],
) -> Result<(ScramServer, Vec<u8>), SaslError> {
    let first = sasl::client_first(token)?;
    let credential = credential(ctx, &first.user, m).await?;
    // Letters and digits only: librdkafka 2.0 mangles a nonce holding base64's '+' or '/'.
    let nonce: [u8; 16] = rand::random();
    let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let fake_salt = fake_salt(&first.user);
    Ok(ScramServer::start(m, first, credential, &nonce, &fake_salt))
}

/// OAUTHBEARER: the token checked against the JWKS; an authorization id, if given, must
/// be the token's principal (as Kafka requires).
fn oauthbearer(ctx: &Ctx, message: &[u8]) -> Result<crate::oauth::Validated, SaslError> {
    let oauth = ctx
        .oauth
        .as_ref()
        .ok_or(SaslError::Malformed("OAUTHBEARER is not offered"))?;
    let (authzid, token) = sasl::oauthbearer(message)?;
    let validated = oauth.validate(&token)?;
    match authzid {
        Some(a) if a != validated.principal => Err(SaslError::AuthzId(a)),
        _ => Ok(validated),
    }
}

/// PLAIN: the password checked against the user's SCRAM-SHA-512 or SCRAM-SHA-256
/// credential.
async fn plain(ctx: &Ctx, token: &[u8]) -> Result<(String, Vec<u8>), SaslError> {
    let (user, password) = sasl::plain(token)?;
    match crate::users::verify_password(&ctx.store, &user, password).await {
        Ok(true) => Ok((user, Vec::new())),
        Ok(false) => Err(SaslError::BadCredentials),
        Err(_) => Err(SaslError::Unavailable),
    }
}

/// A salt for a user without credentials, the same each time within this process, so a
/// client cannot tell unknown users from known ones by their salt changing.
fn fake_salt(user: &str) -> Vec<u8> {
    use hmac::Mac;
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    let key = KEY.get_or_init(rand::random);
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key)
        .expect("invariant: HMAC takes keys of any length");
    mac.update(user.as_bytes());
    mac.finalize().into_bytes()[..16].to_vec()
}
