//! MQTT modes over rumqttc: publishers and subscribers with publish-to-delivery latency,
//! and idle connections with the broker's memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, Outgoing, QoS};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::report::{self, Counters, Latency, Progress};

#[derive(Args, Debug, Clone)]
pub struct MqttCommon {
    /// The broker's MQTT address.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub addr: String,
    /// Connect with TLS, trusting this CA (PEM).
    #[arg(long)]
    pub ca: Option<std::path::PathBuf>,
}

impl MqttCommon {
    /// The TLS client configuration, when `--ca` asks for TLS.
    fn tls(&self) -> anyhow::Result<Option<Arc<rustls::ClientConfig>>> {
        self.ca.as_deref().map(report::tls_client).transpose()
    }
}

#[derive(Args, Debug, Clone)]
pub struct PubSubArgs {
    /// Where subscribers connect, if not to `--addr` (another gateway).
    #[arg(long)]
    pub sub_addr: Option<String>,
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
    #[arg(long, default_value_t = 1)]
    pub subscribers: usize,
    /// 0 or 1.
    #[arg(long, default_value_t = 0)]
    pub qos: u8,
    /// Payload bytes (at least 8: the send time travels in it).
    #[arg(long, default_value_t = 128)]
    pub size: usize,
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Messages per second over all publishers; 0: as fast as the broker takes them.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// QoS 1 publishes each publisher may have unacknowledged.
    #[arg(long, default_value_t = 64)]
    pub window: u16,
    /// Topic prefix; each run uses its own level below it.
    #[arg(long, default_value = "bench")]
    pub topic: String,
}

fn options(
    addr: &str,
    id: &str,
    max_packet: usize,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> anyhow::Result<MqttOptions> {
    let (host, port) = addr
        .rsplit_once(':')
        .with_context(|| format!("expected HOST:PORT, got {addr}"))?;
    let mut o = MqttOptions::new(id, host, port.parse::<u16>()?);
    o.set_keep_alive(Duration::from_secs(60))
        .set_clean_session(true)
        .set_max_packet_size(max_packet, max_packet);
    if let Some(config) = tls {
        o.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(config.clone()),
        ));
    }
    Ok(o)
}

fn qos(q: u8) -> anyhow::Result<QoS> {
    Ok(match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        other => bail!("QoS {other}?"),
    })
}

/// Polls until connected; the error if the broker refuses.
async fn connected(events: &mut EventLoop) -> anyhow::Result<()> {
    loop {
        if let Event::Incoming(Incoming::ConnAck(ack)) = events.poll().await? {
            anyhow::ensure!(
                ack.code == rumqttc::ConnectReturnCode::Success,
                "CONNACK {:?}",
                ack.code
            );
            return Ok(());
        }
    }
}

pub async fn pubsub(common: &MqttCommon, args: &PubSubArgs, quiet: bool) -> anyhow::Result<Value> {
    let run = report::unix_nanos() / 1_000_000;
    let level = qos(args.qos)?;
    let max_packet = args.size + 1024;
    let filter = format!("{}/{run}/#", args.topic);
    let sent = Arc::new(Counters::default());
    let delivered = Arc::new(Counters::default());
    let latency = Arc::new(Latency::default());
    let start = Instant::now();
    let warm_up = report::unix_nanos() + 1_000_000_000;
    let last_delivery = Arc::new(AtomicU64::new(0));
    let tls = common.tls()?;

    let mut subscribers = Vec::new();
    for s in 0..args.subscribers {
        let addr = args.sub_addr.as_deref().unwrap_or(&common.addr);
        let (client, mut events) = AsyncClient::new(
            options(
                addr,
                &format!("bench-sub-{run}-{s}"),
                max_packet,
                tls.as_ref(),
            )?,
            64,
        );
        connected(&mut events).await?;
        client.subscribe(&filter, level).await?;
        loop {
            if let Event::Incoming(Incoming::SubAck(ack)) = events.poll().await? {
                anyhow::ensure!(
                    ack.return_codes
                        .iter()
                        .all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_))),
                    "SUBACK {:?}",
                    ack.return_codes
                );
                break;
            }
        }
        let (delivered, latency, last) =
            (delivered.clone(), latency.clone(), last_delivery.clone());
        subscribers.push(tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        let now = report::unix_nanos();
                        if let Some(t) = report::stamped(&p.payload)
                            && t >= warm_up
                        {
                            latency.record_nanos(now.saturating_sub(t));
                        }
                        delivered.add(1, p.payload.len() as u64);
                        last.store(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(e) => return (client, e),
                }
            }
        }));
    }

    let progress = Progress::start(
        quiet,
        vec![("sent", sent.clone()), ("delivered", delivered.clone())],
    );
    let deadline = start + Duration::from_secs(args.seconds);
    let mut publishers = Vec::new();
    for n in 0..args.publishers {
        let mut o = options(
            &common.addr,
            &format!("bench-pub-{run}-{n}"),
            max_packet,
            tls.as_ref(),
        )?;
        o.set_inflight(args.window.max(1));
        let (client, mut events) = AsyncClient::new(o, 1024);
        connected(&mut events).await?;
        let sent = sent.clone();
        let size = args.size as u64;
        // The connection's events: what went out (QoS 0) or was acknowledged (QoS 1).
        let driver = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Outgoing(Outgoing::Publish(_))) if level == QoS::AtMostOnce => {
                        sent.add(1, size);
                    }
                    Ok(Event::Incoming(Incoming::PubAck(_))) => sent.add(1, size),
                    Ok(Event::Outgoing(Outgoing::Disconnect)) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(anyhow::Error::from(e)),
                }
            }
        });
        let topic = format!("{}/{run}/{n}", args.topic);
        let interval = (args.rate > 0)
            .then(|| Duration::from_secs_f64(args.publishers as f64 / args.rate as f64));
        let size = args.size;
        publishers.push(tokio::spawn(async move {
            let mut value = report::payload(size);
            let mut i = 0u64;
            let begin = tokio::time::Instant::now();
            while Instant::now() < deadline {
                if let Some(iv) = interval {
                    tokio::time::sleep_until(begin + iv.mul_f64(i as f64)).await;
                }
                report::stamp(&mut value, report::unix_nanos());
                client.publish(&topic, level, false, value.clone()).await?;
                i += 1;
            }
            Ok::<_, anyhow::Error>((client, driver, i))
        }));
    }
    let mut issued = 0;
    let mut drivers = Vec::new();
    for p in publishers {
        let (client, driver, n) = p.await??;
        issued += n;
        drivers.push((client, driver));
    }
    // QoS 1: wait for the acknowledgements; then leave, after what is queued.
    let patience = Instant::now() + Duration::from_secs(30);
    while level != QoS::AtMostOnce && sent.messages() < issued && Instant::now() < patience {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (client, driver) in drivers {
        client.disconnect().await?;
        tokio::time::timeout(Duration::from_secs(30), driver)
            .await
            .context("a publisher did not finish sending")???;
    }
    let publish_seconds = start.elapsed().as_secs_f64();
    // Deliveries still on their way: wait until all arrived or none came for 3 s.
    let expected = sent.messages() * args.subscribers as u64;
    let mut seen = (delivered.messages(), Instant::now());
    while delivered.messages() < expected && seen.1.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if delivered.messages() != seen.0 {
            seen = (delivered.messages(), Instant::now());
        }
    }
    drop(progress);
    for s in subscribers {
        s.abort();
    }
    let delivery_seconds =
        Duration::from_nanos(last_delivery.load(Ordering::Relaxed)).as_secs_f64();
    Ok(json!({
        "mode": "mqtt",
        "qos": args.qos,
        "size": args.size,
        "publishers": args.publishers,
        "subscribers": args.subscribers,
        "rate": args.rate,
        "sent": sent.messages(),
        "expected": expected,
        "delivered": delivered.messages(),
        "publish": report::rates(sent.messages(), sent.bytes(), publish_seconds),
        "delivery": report::rates(delivered.messages(), delivered.bytes(), delivery_seconds),
        "latency_ms": latency.summary(),
    }))
}

#[derive(Args, Debug, Clone)]
pub struct IdleArgs {
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Seconds to hold the connections open once all are up.
    #[arg(long, default_value_t = 5)]
    pub hold: u64,
    /// The broker's process id, to report its resident memory per connection.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

pub async fn idle(common: &MqttCommon, args: &IdleArgs, quiet: bool) -> anyhow::Result<Value> {
    let run = report::unix_nanos() / 1_000_000;
    let rss_before = args.server_pid.map(report::rss_bytes).transpose()?;
    let tls = common.tls()?;
    let up = Arc::new(Counters::default());
    let progress = Progress::start(quiet, vec![("connected", up.clone())]);
    let opening = Arc::new(Semaphore::new(256));
    let start = Instant::now();
    let mut conns = Vec::new();
    for n in 0..args.connections {
        let o = options(
            &common.addr,
            &format!("bench-idle-{run}-{n}"),
            4096,
            tls.as_ref(),
        )?;
        let (up, opening) = (up.clone(), opening.clone());
        conns.push(tokio::spawn(async move {
            let permit = opening.acquire_owned().await?;
            let (client, mut events) = AsyncClient::new(o, 4);
            connected(&mut events).await?;
            drop(permit);
            up.add(1, 0);
            loop {
                // Keep-alive pings until the run ends.
                if let Err(e) = events.poll().await {
                    drop(client);
                    return Err::<(), _>(anyhow::Error::from(e));
                }
            }
        }));
    }
    while (up.messages() as usize) < args.connections {
        if let Some(done) = conns.iter_mut().find(|c| c.is_finished()) {
            let e = done.await?.err();
            bail!("a connection ended: {e:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let connect_seconds = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    let rss_after = args.server_pid.map(report::rss_bytes).transpose()?;
    let still_up = conns.iter().filter(|c| !c.is_finished()).count();
    drop(progress);
    for c in &conns {
        c.abort();
    }
    let per_conn = match (rss_before, rss_after) {
        (Some(b), Some(a)) => Some((a.saturating_sub(b)) as f64 / args.connections as f64),
        _ => None,
    };
    Ok(json!({
        "mode": "mqtt-idle",
        "connections": args.connections,
        "still_connected": still_up,
        "connects_per_s": (args.connections as f64 / connect_seconds).round(),
        "server_rss_before": rss_before,
        "server_rss_after": rss_after,
        "server_bytes_per_connection": per_conn.map(f64::round),
    }))
}
