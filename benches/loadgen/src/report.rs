//! What every mode shares: latency histograms, the progress line, the JSON report, the
//! broker's object store counters and its memory.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Nanoseconds since the Unix epoch: the send time carried in payloads, comparable across
/// processes on one machine.
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A payload of `size` bytes (at least 8) whose first 8 carry a send time.
pub fn payload(size: usize) -> Vec<u8> {
    (0..size.max(8)).map(|i| b'a' + (i % 26) as u8).collect()
}

pub fn stamp(payload: &mut [u8], nanos: u64) {
    payload[..8].copy_from_slice(&nanos.to_be_bytes());
}

pub fn stamped(payload: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(payload.get(..8)?.try_into().ok()?))
}

/// Latencies in microseconds, from 1 µs to 10 minutes.
pub struct Latency(Mutex<Histogram<u64>>);

impl Default for Latency {
    fn default() -> Self {
        let h = Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds");
        Self(Mutex::new(h))
    }
}

impl Latency {
    pub fn record(&self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 600_000_000);
        if let Ok(mut h) = self.0.lock() {
            let _ = h.record(us);
        }
    }

    pub fn record_nanos(&self, nanos: u64) {
        self.record(Duration::from_nanos(nanos));
    }

    /// p50, p99, p99.9 and max in milliseconds.
    pub fn summary(&self) -> Value {
        let Ok(h) = self.0.lock() else {
            return Value::Null;
        };
        if h.is_empty() {
            return Value::Null;
        }
        let ms = |us: u64| (us as f64 / 10.0).round() / 100.0;
        json!({
            "samples": h.len(),
            "p50": ms(h.value_at_quantile(0.50)),
            "p99": ms(h.value_at_quantile(0.99)),
            "p999": ms(h.value_at_quantile(0.999)),
            "max": ms(h.max()),
        })
    }
}

/// Counters shown once a second on stderr while a run goes on.
#[derive(Default)]
pub struct Counters {
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
}

impl Counters {
    pub fn add(&self, messages: u64, bytes: u64) {
        self.messages.fetch_add(messages, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

/// Prints `label: N msgs/s, M MB/s` each second for each counter until dropped.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    pub fn start(quiet: bool, watched: Vec<(&'static str, Arc<Counters>)>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = (!quiet).then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut last: Vec<(u64, u64)> = watched.iter().map(|_| (0, 0)).collect();
                let mut tick = start;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    if tick.elapsed() < Duration::from_secs(1) {
                        continue;
                    }
                    let secs = tick.elapsed().as_secs_f64();
                    tick = Instant::now();
                    let mut line = format!("[{:>4.0}s]", start.elapsed().as_secs_f64());
                    for ((label, c), prev) in watched.iter().zip(last.iter_mut()) {
                        let (m, b) = (c.messages(), c.bytes());
                        line.push_str(&format!(
                            "  {label} {:>9.0} msg/s {:>7.1} MB/s (total {m}",
                            (m - prev.0) as f64 / secs,
                            (b - prev.1) as f64 / secs / 1e6,
                        ));
                        if c.errors() > 0 {
                            line.push_str(&format!(", {} errors", c.errors()));
                        }
                        line.push(')');
                        *prev = (m, b);
                    }
                    eprintln!("{line}");
                }
            })
        });
        Self { stop, thread }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Rates over `seconds` for a count of messages and bytes.
pub fn rates(messages: u64, bytes: u64, seconds: f64) -> Value {
    let s = seconds.max(1e-9);
    json!({
        "messages": messages,
        "bytes": bytes,
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "msgs_per_s": (messages as f64 / s).round(),
        "mb_per_s": (bytes as f64 / s / 1e5).round() / 10.0,
    })
}

/// Prints the report as one JSON line on stdout and, if asked, writes it to a file.
pub fn emit(report: &Value, path: Option<&std::path::Path>) -> anyhow::Result<()> {
    let text = serde_json::to_string(report)?;
    println!("{text}");
    if let Some(p) = path {
        std::fs::write(p, serde_json::to_string_pretty(report)?)?;
    }
    Ok(())
}

/// The object store counters of a Sluice gateway, read from its Prometheus endpoint
/// (`http://HOST:PORT/metrics`): requests and bytes by operation.
#[derive(Clone, Debug, Default)]
pub struct StoreCounters(Vec<(String, String, f64)>);

impl StoreCounters {
    pub fn scrape(url: &str) -> anyhow::Result<Self> {
        let text = http_get(url)?;
        let mut out = Vec::new();
        for line in text.lines() {
            for metric in [
                "sluice_object_store_requests_total",
                "sluice_object_store_bytes_total",
            ] {
                if let Some(rest) = line.strip_prefix(metric).and_then(|r| r.strip_prefix('{'))
                    && let Some(op) = rest.split("op=\"").nth(1).and_then(|r| r.split('"').next())
                    && let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse().ok())
                {
                    out.push((metric.to_string(), op.to_string(), v));
                }
            }
        }
        Ok(Self(out))
    }

    fn get(&self, metric: &str, op: &str) -> f64 {
        self.0
            .iter()
            .filter(|(m, o, _)| m == metric && o == op)
            .map(|(_, _, v)| v)
            .sum()
    }

    /// Requests of `op` since `before`, and per GiB of `data_bytes` moved by clients.
    pub fn since(&self, before: &Self, op: &str, data_bytes: u64) -> Value {
        let n = self.get("sluice_object_store_requests_total", op)
            - before.get("sluice_object_store_requests_total", op);
        let moved = self.get("sluice_object_store_bytes_total", op)
            - before.get("sluice_object_store_bytes_total", op);
        let gib = data_bytes as f64 / (1u64 << 30) as f64;
        json!({
            format!("{op}s"): n as u64,
            format!("{op}_bytes"): moved as u64,
            format!("{op}s_per_gib"): if gib > 0.0 { Some((n / gib * 10.0).round() / 10.0) } else { None },
        })
    }
}

/// A plain HTTP/1.0 GET: enough for a Prometheus endpoint on the local machine.
fn http_get(url: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("only http:// URLs: {url}"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    let (head, body) = body
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("no HTTP response from {url}"))?;
    anyhow::ensure!(
        head.contains(" 200 "),
        "{url}: {}",
        head.lines().next().unwrap_or("")
    );
    Ok(body.to_string())
}

/// Resident memory of a process in bytes (Linux).
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for pid {pid}"))?;
    Ok(kb * 1024)
}

/// A TLS client configuration trusting the CA certificates (PEM) in `ca`.
pub fn tls_client(ca: &std::path::Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca)? {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_short_payloads_have_none() {
        let mut p = payload(16);
        stamp(&mut p, 1_234_567_890_123);
        assert_eq!(stamped(&p), Some(1_234_567_890_123));
        assert_eq!(stamped(b"short"), None);
        assert_eq!(payload(3).len(), 8);
    }

    #[test]
    fn latency_summary_orders_percentiles() {
        let l = Latency::default();
        for ms in 1..=1000 {
            l.record(Duration::from_millis(ms));
        }
        let s = l.summary();
        assert_eq!(s["samples"], 1000);
        let p50 = s["p50"].as_f64().unwrap_or_default();
        let p99 = s["p99"].as_f64().unwrap_or_default();
        assert!((499.0..=501.0).contains(&p50), "{s}");
        assert!((989.0..=991.0).contains(&p99), "{s}");
        assert!(s["max"].as_f64().unwrap_or_default() >= p99);
    }

    #[test]
    fn store_counters_per_gib() {
        let before = StoreCounters(vec![
            (
                "sluice_object_store_requests_total".into(),
                "put".into(),
                10.0,
            ),
            (
                "sluice_object_store_bytes_total".into(),
                "put".into(),
                100.0,
            ),
        ]);
        let after = StoreCounters(vec![
            (
                "sluice_object_store_requests_total".into(),
                "put".into(),
                14.0,
            ),
            (
                "sluice_object_store_bytes_total".into(),
                "put".into(),
                1100.0,
            ),
        ]);
        let r = after.since(&before, "put", 1 << 29);
        assert_eq!(r["puts"], 4);
        assert_eq!(r["put_bytes"], 1000);
        assert_eq!(r["puts_per_gib"], 8.0);
    }
}
