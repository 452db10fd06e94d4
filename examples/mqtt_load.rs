//! MQTT load generator for any MQTT 3.1.1 broker (Sluice, Mosquitto, ...): publishers and
//! subscribers on one machine, counting deliveries (not sends) and the latency of each from
//! publish to delivery; or, with `--idle N`, N idle connections held open, to measure the
//! broker's memory per connection.
//!
//! ```sh
//! cargo run --release --example mqtt_load -- --addr 127.0.0.1:1883 --qos 1 --rate 20000
//! cargo run --release --example mqtt_load -- --addr 127.0.0.1:1883 --idle 10000 --hold 20
//! ```
//!
//! Prints one JSON object per run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use clap::Parser;
use sluice_protocols::mqtt::{
    Ack, Connect, MAX_PACKET_SIZE, Packet, Properties, Publish, QoS, Subscribe,
    SubscriptionOptions, Version, decode, encode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Barrier;

#[derive(Parser, Debug)]
struct Args {
    /// The broker's MQTT address.
    #[arg(long, default_value = "127.0.0.1:1883")]
    addr: String,
    /// Where subscribers connect, if not to `--addr` (another gateway).
    #[arg(long)]
    sub_addr: Option<String>,
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
    /// 0 or 1.
    #[arg(long, default_value_t = 0)]
    qos: u8,
    /// Payload bytes (at least 8: the send time travels in it).
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// How long publishers publish; the first second is warm-up and not counted.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Messages per second over all publishers; 0: as fast as the broker takes them.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// QoS 1 publishes each publisher may have unacknowledged.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Open this many idle connections instead, hold them `--hold` seconds, and report.
    #[arg(long)]
    idle: Option<usize>,
    #[arg(long, default_value_t = 20)]
    hold: u64,
    /// A name for the run, echoed in the output.
    #[arg(long, default_value = "")]
    label: String,
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

struct Conn {
    socket: TcpStream,
    buf: BytesMut,
    out: BytesMut,
}

impl Conn {
    async fn open(addr: &str, client_id: &str) -> anyhow::Result<Self> {
        let socket = TcpStream::connect(addr).await?;
        socket.set_nodelay(true)?;
        let mut c = Self {
            socket,
            buf: BytesMut::with_capacity(64 << 10),
            out: BytesMut::with_capacity(64 << 10),
        };
        c.send(&Packet::Connect(Box::new(Connect {
            version: Version::V311,
            clean_start: true,
            keep_alive: 0,
            client_id: client_id.to_string(),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        })));
        c.flush().await?;
        match c.next().await? {
            Packet::ConnAck(a) if a.code == 0 => Ok(c),
            other => anyhow::bail!("connect refused: {other:?}"),
        }
    }

    fn send(&mut self, p: &Packet) {
        encode(p, Version::V311, &mut self.out);
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.socket.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// The next packet, reading as needed.
    async fn next(&mut self) -> anyhow::Result<Packet> {
        loop {
            if let Some(p) = self.decoded()? {
                return Ok(p);
            }
            self.read().await?;
        }
    }

    fn decoded(&mut self) -> anyhow::Result<Option<Packet>> {
        Ok(decode(&mut self.buf, Some(Version::V311), MAX_PACKET_SIZE)?)
    }

    async fn read(&mut self) -> anyhow::Result<()> {
        if self.socket.read_buf(&mut self.buf).await? == 0 {
            anyhow::bail!("connection closed");
        }
        Ok(())
    }
}

fn qos(q: u8) -> QoS {
    if q == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

/// Latencies of counted deliveries in microseconds, and the count of all deliveries.
async fn subscriber(
    args: Arc<Args>,
    i: usize,
    ready: Arc<Barrier>,
    count_from: Arc<AtomicU64>,
    count_until: Arc<AtomicU64>,
) -> anyhow::Result<(Vec<u32>, u64)> {
    let addr = args.sub_addr.as_deref().unwrap_or(&args.addr);
    let mut c = Conn::open(addr, &format!("load-sub-{i}")).await?;
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![(
            "bench/#".into(),
            SubscriptionOptions {
                qos: qos(args.qos),
                no_local: false,
                retain_as_published: false,
                retain_handling: 0,
            },
        )],
        properties: Properties::default(),
    }));
    c.flush().await?;
    loop {
        if let Packet::SubAck(_) = c.next().await? {
            break;
        }
    }
    ready.wait().await;
    let mut latencies = Vec::new();
    let mut all = 0u64;
    let idle = Duration::from_secs(3);
    loop {
        while let Some(p) = c.decoded()? {
            if let Packet::Publish(p) = p {
                all += 1;
                let sent = p
                    .payload
                    .get(..8)
                    .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])));
                if sent >= count_from.load(Ordering::Relaxed)
                    && sent < count_until.load(Ordering::Relaxed)
                {
                    latencies.push((now_nanos().saturating_sub(sent) / 1000) as u32);
                }
                if let Some(id) = p.packet_id {
                    c.send(&Packet::PubAck(Ack {
                        packet_id: id,
                        reason: 0,
                        properties: Properties::default(),
                    }));
                }
            }
        }
        c.flush().await?;
        // Done once publishing ended and nothing came for a while.
        match tokio::time::timeout(idle, c.read()).await {
            Ok(r) => r?,
            Err(_) if count_until.load(Ordering::Relaxed) != u64::MAX => break,
            Err(_) => {}
        }
    }
    Ok((latencies, all))
}

async fn publisher(args: Arc<Args>, i: usize, until: Instant) -> anyhow::Result<u64> {
    let mut c = Conn::open(&args.addr, &format!("load-pub-{i}")).await?;
    let topic = format!("bench/{i}");
    let mut payload = BytesMut::zeroed(args.size.max(8));
    let per_publisher = args.rate as f64 / args.publishers as f64;
    let started = Instant::now();
    let mut sent = 0u64;
    let mut inflight = 0usize;
    let mut next_id: u16 = 1;
    let q = qos(args.qos);
    while Instant::now() < until {
        // How many may go now: all the window (QoS 1) or a burst (QoS 0), paced by rate.
        let mut allowed = if q == QoS::AtLeastOnce {
            args.window - inflight
        } else {
            256
        };
        if per_publisher > 0.0 {
            let due = (started.elapsed().as_secs_f64() * per_publisher) as u64;
            allowed = allowed.min(due.saturating_sub(sent) as usize);
        }
        for _ in 0..allowed {
            payload[..8].copy_from_slice(&now_nanos().to_be_bytes());
            let packet_id = (q == QoS::AtLeastOnce).then(|| {
                let id = next_id;
                next_id = next_id.checked_add(1).unwrap_or(1);
                id
            });
            c.send(&Packet::Publish(Publish {
                dup: false,
                qos: q,
                retain: false,
                topic: topic.clone(),
                packet_id,
                properties: Properties::default(),
                payload: Bytes::copy_from_slice(&payload),
            }));
            sent += 1;
            if q == QoS::AtLeastOnce {
                inflight += 1;
            }
        }
        c.flush().await?;
        if q == QoS::AtLeastOnce && inflight >= args.window {
            // Wait for acknowledgements.
            c.read().await?;
        } else if allowed == 0 {
            tokio::time::sleep(Duration::from_micros(500)).await;
        } else {
            tokio::task::yield_now().await;
        }
        // Take whatever acknowledgements arrived.
        if q == QoS::AtLeastOnce {
            while let Ok(Ok(n)) =
                tokio::time::timeout(Duration::ZERO, c.socket.read_buf(&mut c.buf)).await
            {
                if n == 0 {
                    anyhow::bail!("connection closed");
                }
            }
            while let Some(p) = c.decoded()? {
                if let Packet::PubAck(_) = p {
                    inflight -= 1;
                }
            }
        }
    }
    // Let the last acknowledgements come.
    while inflight > 0 {
        if let Packet::PubAck(_) = c.next().await? {
            inflight -= 1;
        }
    }
    Ok(sent)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

async fn idle(args: Arc<Args>, n: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut conns = Vec::with_capacity(n);
    let mut opening = tokio::task::JoinSet::new();
    let mut next = 0;
    while conns.len() < n {
        while next < n && opening.len() < 256 {
            let addr = args.addr.clone();
            let id = format!("idle-{next}");
            opening.spawn(async move { Conn::open(&addr, &id).await });
            next += 1;
        }
        if let Some(r) = opening.join_next().await {
            conns.push(r??);
        }
    }
    let took = started.elapsed();
    eprintln!("{n} connections open; holding {} s", args.hold);
    println!(
        "{}",
        serde_json::json!({
            "label": args.label, "idle_connections": n,
            "connect_seconds": took.as_secs_f64(),
            "connects_per_second": n as f64 / took.as_secs_f64(),
        })
    );
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    drop(conns);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    if let Some(n) = args.idle {
        return idle(args, n).await;
    }
    let ready = Arc::new(Barrier::new(args.subscribers + 1));
    let count_from = Arc::new(AtomicU64::new(u64::MAX));
    let count_until = Arc::new(AtomicU64::new(u64::MAX));
    let subs: Vec<_> = (0..args.subscribers)
        .map(|i| {
            tokio::spawn(subscriber(
                args.clone(),
                i,
                ready.clone(),
                count_from.clone(),
                count_until.clone(),
            ))
        })
        .collect();
    ready.wait().await;
    // Every subscriber is in place. The first second of publishing is warm-up.
    let until = Instant::now() + Duration::from_secs(args.seconds);
    count_from.store(now_nanos() + 1_000_000_000, Ordering::Relaxed);
    let pubs: Vec<_> = (0..args.publishers)
        .map(|i| tokio::spawn(publisher(args.clone(), i, until)))
        .collect();
    let mut sent = 0;
    for p in pubs {
        sent += p.await??;
    }
    let counted_seconds = args.seconds.saturating_sub(1).max(1) as f64;
    count_until.store(now_nanos(), Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut delivered = 0;
    for s in subs {
        let (l, all) = s.await??;
        latencies.extend(l);
        delivered += all;
    }
    latencies.sort_unstable();
    let counted = latencies.len() as f64;
    let mut out = BytesMut::new();
    out.put_slice(
        serde_json::json!({
            "label": args.label,
            "qos": args.qos,
            "publishers": args.publishers,
            "subscribers": args.subscribers,
            "size": args.size,
            "target_rate": args.rate,
            "sent": sent,
            "delivered": delivered,
            "expected": sent * args.subscribers as u64,
            "deliveries_per_second": counted / counted_seconds,
            "latency_ms": {
                "p50": percentile(&latencies, 0.50),
                "p99": percentile(&latencies, 0.99),
                "p999": percentile(&latencies, 0.999),
                "max": percentile(&latencies, 1.0),
            },
        })
        .to_string()
        .as_bytes(),
    );
    println!("{}", String::from_utf8_lossy(&out));
    Ok(())
}
