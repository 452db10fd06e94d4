//! Real services for tests, started as child processes bound to 127.0.0.1 and stopped by
//! process id when dropped. Nothing here is a fake: tests that need etcd get etcd.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port that was free a moment ago on 127.0.0.1. For servers that cannot bind port 0 and
/// report what they got.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

/// Waits until `check` returns true, polling a server that gives no readiness event.
/// Panics with `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "{what} not ready after {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills the child by its pid on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn need_binary(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{name}` is not installed; `scripts/test-deps.sh` installs it ({package})");
}

/// A single-node etcd on loopback with its own data directory.
pub struct Etcd {
    pub endpoint: String,
    _child: ChildGuard,
    _dir: tempfile::TempDir,
}

impl Etcd {
    pub fn start() -> Self {
        let bin = need_binary("etcd", "Debian's etcd-server");
        let dir = tempfile::tempdir().expect("temp dir");
        let client = free_port();
        let peer = free_port();
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("log file");
        let child = Command::new(bin)
            .arg("--name=test")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=test={peer_url}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        let child = ChildGuard(child);
        wait_until("etcd", Duration::from_secs(20), || {
            http_get(&format!("127.0.0.1:{client}"), "/health").is_some_and(|b| b.contains("true"))
        });
        Self {
            endpoint: format!("127.0.0.1:{client}"),
            _child: child,
            _dir: dir,
        }
    }
}

/// moto's S3-compatible server on loopback, with one bucket.
pub struct S3Server {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub bucket: String,
    _child: ChildGuard,
}

impl S3Server {
    pub fn start() -> Self {
        let bin = need_binary("moto_server", "pip's moto[server]");
        let port = free_port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let child = ChildGuard(child);
        let addr = format!("127.0.0.1:{port}");
        wait_until("moto_server", Duration::from_secs(30), || {
            http_get(&addr, "/").is_some()
        });
        let bucket = "sluice-test".to_string();
        let status = http_request(&addr, "PUT", &format!("/{bucket}")).expect("create bucket");
        assert!(
            status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.0 200"),
            "{status}"
        );
        Self {
            endpoint: format!("http://{addr}"),
            bucket,
            _child: child,
        }
    }

    /// The environment a Sluice process needs to use this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}

fn http_request(addr: &str, method: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// A plain HTTP GET; the whole response (status line, headers, body) or `None`.
pub fn http_get(addr: &str, path: &str) -> Option<String> {
    http_request(addr, "GET", path)
}
