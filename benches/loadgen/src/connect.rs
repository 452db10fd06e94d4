//! Kafka connection setup: each worker connects (TCP, then TLS if asked), authenticates
//! (SCRAM-SHA-256 or -512 if asked: SaslHandshake v1 and two SaslAuthenticate v1), sends one
//! ApiVersions and closes; connections per second and the setup latency.
//!
//! The client caches the salted password per salt, as a client that reconnects may: the
//! figure is the server's cost of a connection, not PBKDF2's on the client.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use sluice_protocols::kafka::scram::{ClientExchange, Mechanism};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::report::{self, Latency};

#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Trust this CA (PEM) and connect with TLS.
    #[arg(long)]
    pub ca: Option<std::path::PathBuf>,
    /// SCRAM-SHA-256 or SCRAM-SHA-512; without it, no SASL.
    #[arg(long)]
    pub mechanism: Option<String>,
    #[arg(long, default_value = "")]
    pub user: String,
    #[arg(long, default_value = "")]
    pub password: String,
    /// Connections set up at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
}

/// Salted passwords by (salt, iterations).
type SaltedCache = std::sync::Mutex<HashMap<(Vec<u8>, u32), Vec<u8>>>;

struct Shared {
    args: ConnectArgs,
    tls: Option<tokio_rustls::TlsConnector>,
    mechanism: Option<Mechanism>,
    salted: SaltedCache,
    done: AtomicU64,
    failed: AtomicU64,
    latency: Latency,
}

pub async fn run(args: &ConnectArgs, quiet: bool) -> anyhow::Result<Value> {
    let tls = match &args.ca {
        None => None,
        Some(path) => Some(tokio_rustls::TlsConnector::from(report::tls_client(path)?)),
    };
    let mechanism = match args.mechanism.as_deref() {
        None => None,
        Some(name) => match Mechanism::from_name(name) {
            Some(m) => Some(m),
            None => bail!("{name}: SCRAM-SHA-256 or SCRAM-SHA-512"),
        },
    };
    let shared = Arc::new(Shared {
        args: args.clone(),
        tls,
        mechanism,
        salted: std::sync::Mutex::new(HashMap::new()),
        done: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        latency: Latency::default(),
    });
    let start = Instant::now();
    let end = start + Duration::from_secs(args.seconds);
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let shared = shared.clone();
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < end {
                let t = Instant::now();
                match one(&shared, w, n).await {
                    Ok(()) => {
                        shared.latency.record(t.elapsed());
                        shared.done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        if shared.failed.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("connection failed: {e:#}");
                        }
                    }
                }
                n += 1;
            }
        }));
    }
    let progress = (!quiet).then(|| {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = shared.done.load(Ordering::Relaxed);
                eprintln!("{} connections/s", now - last);
                last = now;
            }
        })
    });
    for w in workers {
        w.await?;
    }
    if let Some(p) = progress {
        p.abort();
    }
    let secs = start.elapsed().as_secs_f64();
    let done = shared.done.load(Ordering::Relaxed);
    Ok(json!({
        "mode": "connect",
        "tls": args.ca.is_some(),
        "mechanism": args.mechanism,
        "concurrency": args.concurrency,
        "connections": done,
        "failed": shared.failed.load(Ordering::Relaxed),
        "seconds": (secs * 1000.0).round() / 1000.0,
        "connections_per_s": (done as f64 / secs).round(),
        "setup_latency_ms": shared.latency.summary(),
    }))
}

async fn one(shared: &Shared, worker: usize, n: u64) -> anyhow::Result<()> {
    let tcp = TcpStream::connect(&shared.args.bootstrap).await?;
    tcp.set_nodelay(true)?;
    match &shared.tls {
        None => session(shared, tcp, worker, n).await,
        Some(tls) => {
            let name = ServerName::try_from(host(&shared.args.bootstrap).to_string())?;
            let stream = tls.connect(name, tcp).await?;
            session(shared, stream, worker, n).await
        }
    }
}

fn host(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(h, _)| h)
}

async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    mut s: S,
    worker: usize,
    n: u64,
) -> anyhow::Result<()> {
    let mut correlation = 0;
    if let Some(m) = shared.mechanism {
        // SaslHandshake v1.
        let resp = call(&mut s, 17, 1, &mut correlation, &string(m.name())).await?;
        if i16::from_be_bytes([resp[0], resp[1]]) != 0 {
            bail!(
                "SaslHandshake error {}",
                i16::from_be_bytes([resp[0], resp[1]])
            );
        }
        let nonce = format!("{worker:08x}{n:016x}bench");
        let password = shared.args.password.as_bytes();
        let mut exchange = ClientExchange::new(m, &shared.args.user, password, &nonce);
        let server_first = authenticate(&mut s, &mut correlation, &exchange.first()).await?;
        let last = exchange.respond_with(&server_first, |salt, iterations| {
            let key = (salt.to_vec(), iterations);
            let cached = shared.salted.lock().ok().and_then(|c| c.get(&key).cloned());
            cached.unwrap_or_else(|| {
                let salted = m.salted_password(password, salt, iterations);
                if let Ok(mut c) = shared.salted.lock() {
                    c.insert(key, salted.clone());
                }
                salted
            })
        })?;
        let server_final = authenticate(&mut s, &mut correlation, &last).await?;
        exchange.verify(&server_final)?;
    }
    // ApiVersions v0: the connection serves requests.
    call(&mut s, 18, 0, &mut correlation, &[]).await?;
    Ok(())
}

/// One SaslAuthenticate v1; the server's bytes.
async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    correlation: &mut i32,
    bytes: &[u8],
) -> anyhow::Result<Vec<u8>> {
    let mut body = (bytes.len() as i32).to_be_bytes().to_vec();
    body.extend_from_slice(bytes);
    let resp = call(s, 36, 1, correlation, &body).await?;
    let code = i16::from_be_bytes([resp[0], resp[1]]);
    if code != 0 {
        bail!("SaslAuthenticate error {code}");
    }
    // error_message (nullable string), then auth_bytes.
    let len = i16::from_be_bytes([resp[2], resp[3]]);
    let at = 4 + len.max(0) as usize;
    let n = i32::from_be_bytes(resp[at..at + 4].try_into()?) as usize;
    Ok(resp[at + 4..at + 4 + n].to_vec())
}

fn string(s: &str) -> Vec<u8> {
    let mut out = (s.len() as i16).to_be_bytes().to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

/// Sends a request (header v1) and returns the response body after its correlation id.
async fn call<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    key: i16,
    version: i16,
    correlation: &mut i32,
    body: &[u8],
) -> anyhow::Result<Vec<u8>> {
    *correlation += 1;
    let client = b"bench";
    let mut frame = Vec::with_capacity(14 + client.len() + body.len());
    let size = 2 + 2 + 4 + 2 + client.len() + body.len();
    frame.extend_from_slice(&(size as i32).to_be_bytes());
    frame.extend_from_slice(&key.to_be_bytes());
    frame.extend_from_slice(&version.to_be_bytes());
    frame.extend_from_slice(&correlation.to_be_bytes());
    frame.extend_from_slice(&(client.len() as i16).to_be_bytes());
    frame.extend_from_slice(client);
    frame.extend_from_slice(body);
    s.write_all(&frame).await?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let mut resp = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut resp).await?;
    if resp.len() < 4 || i32::from_be_bytes(resp[..4].try_into()?) != *correlation {
        bail!("unexpected response");
    }
    Ok(resp[4..].to_vec())
}
