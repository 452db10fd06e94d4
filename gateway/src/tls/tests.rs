use std::path::{Path, PathBuf};

use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::*;

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/tls/testdata")
        .join(name)
}

fn settings(dir: &Path, client_auth: ClientAuth) -> TlsSettings {
    TlsSettings {
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        client_ca: Some(testdata("ca.pem")),
        client_auth,
        principal: PrincipalFrom::Dn,
        peer_ca: None,
    }
}

fn copy(from: &str, dir: &Path, to: &str) {
    std::fs::copy(testdata(from), dir.join(to)).expect("copy");
}

fn client(with_cert: bool) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(testdata("ca.pem")).expect("ca");
    for c in CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.expect("pem")).expect("root");
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = if with_cert {
        let pem = std::fs::read(testdata("client.pem")).expect("client cert");
        let chain = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .expect("pem");
        let key = PrivateKeyDer::from_pem_file(testdata("client.key")).expect("client key");
        builder
            .with_client_auth_cert(chain, key)
            .expect("client auth")
    } else {
        builder.with_no_client_auth()
    };
    TlsConnector::from(Arc::new(config))
}

/// A handshake over an in-memory pipe: the server's certificate subject as the client saw
/// it, and the principal the server took from the client's certificate.
async fn handshake(tls: &Tls, with_cert: bool) -> Result<(String, Option<String>), std::io::Error> {
    let (c, s) = tokio::io::duplex(64 << 10);
    let acceptor = tls.acceptor();
    let from = tls.principal_from();
    let server = tokio::spawn(async move {
        let stream = acceptor.accept(s).await?;
        let (_, conn) = stream.get_ref();
        Ok::<_, std::io::Error>(principal(conn.peer_certificates(), from))
    });
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let client = client(with_cert).connect(name, c).await;
    let principal = server.await.expect("server task");
    let client = client?;
    let principal = principal?;
    let (_, conn) = client.get_ref();
    let cert = conn.peer_certificates().expect("server certificate")[0].clone();
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).expect("x509");
    Ok((parsed.subject().to_string(), principal))
}

#[tokio::test]
async fn a_client_certificate_names_its_principal_as_kafka_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy("server.pem", dir.path(), "server.pem");
    copy("server.key", dir.path(), "server.key");
    let tls = Tls::load(settings(dir.path(), ClientAuth::Required)).expect("load");
    let (server, principal) = handshake(&tls, true).await.expect("handshake");
    assert_eq!(server, "CN=server");
    assert_eq!(
        principal.as_deref(),
        Some("CN=device-42,OU=Fleet,O=Acme\\, Inc.,C=DE")
    );
    let mut cn = settings(dir.path(), ClientAuth::Optional);
    cn.principal = PrincipalFrom::Cn;
    let tls = Tls::load(cn).expect("load");
    let (_, principal) = handshake(&tls, true).await.expect("handshake");
    assert_eq!(principal.as_deref(), Some("device-42"));
    // Optional: a client without a certificate connects, with no principal.
    let (_, principal) = handshake(&tls, false).await.expect("handshake");
    assert_eq!(principal, None);
}

#[tokio::test]
async fn required_client_certificates_are_required() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy("server.pem", dir.path(), "server.pem");
    copy("server.key", dir.path(), "server.key");
    let tls = Tls::load(settings(dir.path(), ClientAuth::Required)).expect("load");
    assert!(handshake(&tls, false).await.is_err());
    let mut none = settings(dir.path(), ClientAuth::Required);
    none.client_ca = None;
    assert!(matches!(Tls::load(none), Err(TlsError::NoClientCa(_))));
}

#[tokio::test]
async fn changed_files_are_served_to_new_connections_and_a_bad_change_is_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy("server.pem", dir.path(), "server.pem");
    copy("server.key", dir.path(), "server.key");
    let tls = Tls::load(settings(dir.path(), ClientAuth::None)).expect("load");
    assert!(!tls.reload().expect("unchanged"));
    // Rotated: certificate and key replaced.
    copy("server2.pem", dir.path(), "server.pem");
    copy("server2.key", dir.path(), "server.key");
    assert!(tls.reload().expect("rotated"));
    assert_eq!(
        handshake(&tls, false).await.expect("handshake").0,
        "CN=server2"
    );
    // Half a rotation (a certificate that does not match the key) keeps what worked.
    copy("server.pem", dir.path(), "server.pem");
    assert!(tls.reload().is_err());
    assert!(!tls.reload().expect("tried once"));
    assert_eq!(
        handshake(&tls, false).await.expect("handshake").0,
        "CN=server2"
    );
    copy("server.key", dir.path(), "server.key");
    assert!(tls.reload().expect("whole again"));
    assert_eq!(
        handshake(&tls, false).await.expect("handshake").0,
        "CN=server"
    );
    // Garbage where the certificate was.
    std::fs::write(dir.path().join("server.pem"), b"not a certificate").expect("write");
    assert!(tls.reload().is_err());
    assert_eq!(
        handshake(&tls, false).await.expect("handshake").0,
        "CN=server"
    );
}
