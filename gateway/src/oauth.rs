//! OAUTHBEARER tokens: JWTs signed with RS256 or ES256 by a key of a JWKS file
//! (`--oauth-jwks`), with optional issuer and audience checks, as Kafka's
//! `OAuthBearerValidatorCallbackHandler` validates them. The file is read again when it
//! changes on disk (an identity provider rotates its keys), so new tokens signed by a new
//! key are accepted without a restart; a file that does not load keeps the previous keys.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sha2::Digest;
use tokio_util::sync::CancellationToken;

/// How often the JWKS file is checked for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(5);

/// Clock skew allowed on `exp`, `nbf` and `iat` (Kafka's
/// `sasl.oauthbearer.clock.skew.seconds`).
const LEEWAY_SECONDS: u64 = 30;

#[derive(Debug, Clone)]
pub struct OAuthSettings {
    /// A JSON Web Key Set (RFC 7517) of the issuer's public keys.
    pub jwks: PathBuf,
    /// The `iss` tokens must carry, if set.
    pub issuer: Option<String>,
    /// A value the tokens' `aud` must hold, if set.
    pub audience: Option<String>,
    /// The claim that names the principal (Kafka's `sasl.oauthbearer.sub.claim.name`).
    pub principal_claim: String,
}

#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a JWK set: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("{0}: no RS256 or ES256 key")]
    NoKeys(String),
}

/// Why a token is refused (logged; the client is told only that authentication failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("algorithm {0:?} is not accepted (RS256 or ES256)")]
    Algorithm(String),
    #[error("no key of the JWKS has id {0:?} and the token's algorithm")]
    UnknownKey(Option<String>),
    #[error("{0}")]
    Invalid(String),
    #[error("the token has no claim {0} naming the principal")]
    NoPrincipal(String),
}

/// A valid token: who it names, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    pub principal: String,
    pub expires: SystemTime,
}

struct Key {
    id: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

struct Loaded {
    digest: [u8; 32],
    keys: Vec<Key>,
}

pub struct OAuth {
    settings: OAuthSettings,
    current: RwLock<Arc<Loaded>>,
}

impl std::fmt::Debug for OAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What a key of the set verifies, or `None` for keys this gateway does not use
/// (encryption keys, other algorithms and curves).
fn usable(jwk: &Jwk) -> Option<Key> {
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| !matches!(u, jsonwebtoken::jwk::PublicKeyUse::Signature))
    {
        return None;
    }
    let algorithm = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
            if ec.curve == EllipticCurve::P256 =>
        {
            Algorithm::ES256
        }
        _ => return None,
    };
    Some(Key {
        id: jwk.common.key_id.clone(),
        algorithm,
        key: DecodingKey::from_jwk(jwk).ok()?,
    })
}

fn load(path: &std::path::Path) -> Result<Loaded, OAuthError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| OAuthError::Read {
        path: shown.clone(),
        source,
    })?;
    let set: JwkSet = serde_json::from_slice(&bytes).map_err(|source| OAuthError::Parse {
        path: shown.clone(),
        source,
    })?;
    let keys: Vec<Key> = set.keys.iter().filter_map(usable).collect();
    if keys.is_empty() {
        return Err(OAuthError::NoKeys(shown));
    }
    Ok(Loaded {
        digest: sha2::Sha256::digest(&bytes).into(),
        keys,
    })
}

impl OAuth {
    pub fn new(settings: OAuthSettings) -> Result<Self, OAuthError> {
        let loaded = load(&settings.jwks)?;
        Ok(Self {
            settings,
            current: RwLock::new(Arc::new(loaded)),
        })
    }

    fn keys(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the file again; true if its keys changed.
    pub fn reload(&self) -> Result<bool, OAuthError> {
        let loaded = load(&self.settings.jwks)?;
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if current.digest == loaded.digest {
            return Ok(false);
        }
        *current = Arc::new(loaded);
        Ok(true)
    }

    /// Follows the JWKS file until `cancel`.
    pub async fn watch(self: Arc<Self>, cancel: CancellationToken) {
        crate::tls::follow_files(RELOAD_CHECK, &cancel, || self.reload(), |r| match r {
            Ok(false) => {}
            Ok(true) => {
                tracing::info!(jwks = %self.settings.jwks.display(), "OAUTHBEARER keys reloaded")
            }
            Err(e) => {
                tracing::warn!(error = %e, "JWKS file changed but does not load; keeping the previous keys")
            }
        })
        .await;
    }

    /// Checks a JWT: its signature by a key of the set (by `kid` when the token names
    /// one), `exp` (required), `nbf`, the issuer and the audience.
    pub fn validate(&self, token: &str) -> Result<Validated, TokenError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        match &self.settings.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &self.settings.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        let keys = self.keys();
        let candidates = keys.keys.iter().filter(|k| {
            k.algorithm == header.alg
                && (header.kid.is_none() || k.id.as_deref() == header.kid.as_deref())
        });
        let mut last = TokenError::UnknownKey(header.kid.clone());
        for k in candidates {
            match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                token,
                &k.key,
                &validation,
            ) {
                Ok(data) => return self.validated(&data.claims),
                Err(e) => last = TokenError::Invalid(e.to_string()),
            }
        }
        Err(last)
    }

    fn validated(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Validated, TokenError> {
        let claim = &self.settings.principal_claim;
        let principal = claims
            .get(claim)
            .and_then(|v| v.as_str())
            .filter(|p| !p.is_empty())
            .ok_or_else(|| TokenError::NoPrincipal(claim.clone()))?;
        let exp = claims
            .get("exp")
            .and_then(|v| v.as_f64())
            .ok_or_else(|| TokenError::Invalid("no exp".into()))?;
        Ok(Validated {
            principal: principal.to_string(),
            expires: UNIX_EPOCH + Duration::from_secs_f64(exp.max(0.0)),
        })
    }
}

#[cfg(test)]
mod tests;
