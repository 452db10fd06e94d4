//! TLS for every listener: one server certificate (PEM, full chain) and key, optionally a
//! CA that client certificates must chain to (mutual TLS), TLS 1.2 and 1.3 only.
//!
//! The files are read again whenever they change on disk (cert-manager and the like replace
//! them in place): new connections get the new certificate, established ones keep theirs. A
//! change that does not load (a certificate written before its key) keeps the previous
//! configuration and is logged; the next change is tried again.
//!
//! A client certificate names a principal the way Kafka's default SSL principal builder
//! does: the subject as an RFC 2253 distinguished name (`CN=device-42,O=Acme`), or only its
//! common name with [`PrincipalFrom::Cn`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Digest;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// How often the certificate files are looked at for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// Whether clients present certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    #[default]
    None,
    /// Asked for; a client without one still connects (and authenticates otherwise).
    Optional,
    /// A client without a certificate the client CA signed is refused.
    Required,
}

impl std::str::FromStr for ClientAuth {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "optional" => Ok(Self::Optional),
            "required" => Ok(Self::Required),
            other => Err(format!("{other}: none, optional or required")),
        }
    }
}

/// What of a client certificate's subject names its principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrincipalFrom {
    /// The whole subject, RFC 2253 (Kafka's default).
    #[default]
    Dn,
    /// Its common name only.
    Cn,
}

impl std::str::FromStr for PrincipalFrom {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dn" => Ok(Self::Dn),
            "cn" => Ok(Self::Cn),
            other => Err(format!("{other}: dn or cn")),
        }
    }
}

/// Where the certificate, key and client CA are, and how clients are checked.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
    pub principal: PrincipalFrom,
    /// The CA certificates other gateways' certificates chain to, for gateway-to-gateway
    /// calls over TLS; `None`: the issuers in this gateway's own chain (or its certificate
    /// itself when the chain has no issuer), which is right when every gateway's
    /// certificate comes from the same place.
    pub peer_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: no certificate in the file")]
    NoCertificate(PathBuf),
    #[error("{0}: {1}")]
    Pem(PathBuf, String),
    #[error("--tls-client-auth {0:?} needs --tls-client-ca")]
    NoClientCa(ClientAuth),
    #[error("{0}")]
    Rustls(String),
}

/// The server side of TLS, following its files.
pub struct Tls {
    settings: TlsSettings,
    current: RwLock<Loaded>,
}

struct Loaded {
    digest: [u8; 32],
    config: Arc<ServerConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Tls {
    /// Loads the files; an error here stops the start.
    pub fn load(settings: TlsSettings) -> Result<Arc<Self>, TlsError> {
        if settings.client_auth != ClientAuth::None && settings.client_ca.is_none() {
            return Err(TlsError::NoClientCa(settings.client_auth));
        }
        let files = read_files(&settings)?;
        let config = build(&settings, &files)?;
        Ok(Arc::new(Self {
            current: RwLock::new(Loaded {
                digest: digest(&files),
                config,
            }),
            settings,
        }))
    }

    /// An acceptor with the configuration loaded last.
    pub fn acceptor(&self) -> TlsAcceptor {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        TlsAcceptor::from(current.config.clone())
    }

    pub fn principal_from(&self) -> PrincipalFrom {
        self.settings.principal
    }

    /// The client side of a gateway-to-gateway call over TLS: the receiving gateway's
    /// certificate must chain to the peer CA, and this gateway presents its own when asked
    /// (files read now, so rotated ones apply to the next connection).
    pub fn peer_client(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| TlsError::Read(p.clone(), e));
        let s = &self.settings;
        // This gateway's own certificate, for a receiver that asks for one (mutual TLS on
        // its listener): it must be valid for client authentication too.
        let chain = certs(&s.cert, &read(&s.cert)?)?;
        let key = PrivateKeyDer::from_pem_slice(&read(&s.key)?)
            .map_err(|e| TlsError::Pem(s.key.clone(), e.to_string()))?;
        let anchors = match &s.peer_ca {
            Some(path) => certs(path, &read(path)?)?,
            // The issuers in the chain, or the certificate itself when it has none.
            None if chain.len() > 1 => chain[1..].to_vec(),
            None => chain.clone(),
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in anchors {
            roots
                .add(c)
                .map_err(|e| TlsError::Rustls(format!("peer CA: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        Ok(Arc::new(config))
    }

    /// Loads the files again if they changed; returns whether a new configuration is in
    /// use.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let files = read_files(&self.settings)?;
        let d = digest(&files);
        if self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .digest
            == d
        {
            return Ok(false);
        }
        let built = build(&self.settings, &files);
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        // A change that does not load is not tried again until the files change again.
        let config = match built {
            Ok(c) => c,
            Err(e) => {
                current.digest = d;
                return Err(e);
            }
        };
        *current = Loaded { digest: d, config };
        Ok(true)
    }

    /// Follows the files until `cancel`.
    pub async fn watch(self: Arc<Self>, cancel: CancellationToken) {
        follow_files(RELOAD_CHECK, &cancel, || self.reload(), |r| match r {
            Ok(false) => {}
            Ok(true) => {
                crate::metrics::TLS_RELOADS.with_label_values(&["ok"]).inc();
                tracing::info!(cert = %self.settings.cert.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                crate::metrics::TLS_RELOADS
                    .with_label_values(&["failed"])
                    .inc();
                tracing::warn!(error = %e, "TLS files changed but do not load; keeping the previous certificate");
            }
        })
        .await;
    }
}

/// Calls `reload` every `every` until `cancel`, handing each outcome (whether something
/// changed, or why it did not load) to `report`.
pub(crate) async fn follow_files<E>(
    every: Duration,
    cancel: &CancellationToken,
    reload: impl Fn() -> Result<bool, E>,
    report: impl Fn(Result<bool, E>),
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        report(reload());
    }
}

struct Files {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

fn read_files(s: &TlsSettings) -> Result<Files, TlsError> {
    let read = |p: &PathBuf| std::fs::read(p).map_err(|e| TlsError::Read(p.clone(), e));
    Ok(Files {
        cert: read(&s.cert)?,
        key: read(&s.key)?,
        client_ca: s.client_ca.as_ref().map(read).transpose()?,
    })
}

fn digest(f: &Files) -> [u8; 32] {
    let mut h = sha2::Sha256::new();
    for part in [Some(&f.cert), Some(&f.key), f.client_ca.as_ref()] {
        let part = part.map_or(&[][..], Vec::as_slice);
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

fn certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(path.to_path_buf(), e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_path_buf()));
    }
    Ok(certs)
}

fn build(s: &TlsSettings, f: &Files) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = certs(&s.cert, &f.cert)?;
    let key = PrivateKeyDer::from_pem_slice(&f.key)
        .map_err(|e| TlsError::Pem(s.key.clone(), e.to_string()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match (&s.client_ca, &f.client_ca, s.client_auth) {
        (Some(path), Some(pem), ClientAuth::Optional | ClientAuth::Required) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(path, pem)? {
                roots
                    .add(c)
                    .map_err(|e| TlsError::Pem(path.clone(), e.to_string()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if s.client_auth == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::Rustls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    Ok(Arc::new(config))
}

/// The principal a verified client certificate names: `None` without one.
pub fn principal(certs: Option<&[CertificateDer<'_>]>, from: PrincipalFrom) -> Option<String> {
    let leaf = certs?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let subject = cert.subject();
    match from {
        PrincipalFrom::Cn => subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string),
        PrincipalFrom::Dn => Some(rfc2253(subject)),
    }
}

/// A distinguished name as Java's `X500Principal.getName()` writes it (RFC 2253): the
/// most specific part first, `,` between parts, `+` within one.
fn rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let oid = attr.attr_type();
                    let key =
                        x509_parser::objects::oid2abbrev(oid, x509_parser::objects::oid_registry())
                            .map_or_else(|_| oid.to_id_string(), str::to_string);
                    let value = attr
                        .as_str()
                        .map_or_else(|_| format!("#{}", hex(attr.attr_value().data)), escape);
                    format!("{key}={value}")
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        let edge = (i == 0 && (c == ' ' || c == '#')) || (i + 1 == v.chars().count() && c == ' ');
        if edge || matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests;
