//! Kafka modes over librdkafka: produce, consume and produce-to-consume latency.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode as Code;
use rdkafka::util::Timeout;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde_json::{Value, json};

use crate::report::{self, Counters, Latency, Progress, StoreCounters};

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Bootstrap address of the broker (Sluice, Kafka, ...).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// The topic; created with `--partitions` if missing.
    #[arg(long)]
    pub topic: Option<String>,
    #[arg(long, default_value_t = 8)]
    pub partitions: i32,
    /// A Sluice gateway's Prometheus URL (http://HOST:PORT/metrics): object store requests
    /// per GiB are added to the report.
    #[arg(long)]
    pub metrics: Option<String>,
    /// librdkafka properties, `name=value`, repeatable.
    #[arg(short = 'X', value_parser = parse_property)]
    pub property: Vec<(String, String)>,
}

#[derive(Args, Debug, Clone)]
pub struct ProduceArgs {
    /// Record value bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Records to produce (over all producers); 0: for `--seconds`.
    #[arg(long, default_value_t = 0)]
    pub messages: u64,
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Records per second over all producers; 0: as fast as the broker takes them.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Producer instances, each with its own connections and thread.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// 0, 1 or all.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
    #[arg(long)]
    pub idempotence: bool,
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected name=value, got {s}"))
}

impl Common {
    pub fn topic(&self) -> String {
        self.topic
            .clone()
            .unwrap_or_else(|| format!("bench-{}", report::unix_nanos() / 1_000_000))
    }

    fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in &self.property {
            c.set(k, v);
        }
        c
    }

    fn scrape(&self) -> anyhow::Result<Option<StoreCounters>> {
        self.metrics
            .as_deref()
            .map(StoreCounters::scrape)
            .transpose()
    }
}

/// Creates the topic unless it exists.
pub fn ensure_topic(common: &Common, topic: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = common.config().create()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let new = NewTopic::new(topic, common.partitions, TopicReplication::Fixed(1));
    let results = rt.block_on(admin.create_topics([&new], &AdminOptions::new()))?;
    for r in results {
        match r {
            Ok(_) | Err((_, Code::TopicAlreadyExists)) => {}
            Err((t, code)) => bail!("creating topic {t}: {code}"),
        }
    }
    Ok(())
}

/// The origin of the send times carried as delivery opaques.
static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

fn since_epoch(t: Instant) -> usize {
    t.saturating_duration_since(*EPOCH).as_nanos() as usize
}

struct Delivered {
    counters: Arc<Counters>,
    latency: Arc<Latency>,
    size: u64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl ClientContext for Delivered {}

impl ProducerContext for Delivered {
    /// The record's send time, as nanoseconds since `EPOCH`.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent: usize) {
        match result {
            Ok(_) => {
                let sent = Duration::from_nanos(sent as u64);
                self.latency.record(EPOCH.elapsed().saturating_sub(sent));
                self.counters.add(1, self.size);
            }
            Err((e, _)) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

/// Produces per `args` with `args.producers` threads; returns the producers' counters,
/// latencies (send to acknowledgement) and elapsed seconds.
fn produce_load(
    common: &Common,
    args: &ProduceArgs,
    topic: &str,
    counters: Arc<Counters>,
    latency: Arc<Latency>,
) -> anyhow::Result<(f64, Option<String>)> {
    let producers = args.producers.max(1) as u64;
    let mut ready = Vec::new();
    for _ in 0..producers {
        let mut config = common.config();
        config
            .set("acks", &args.acks)
            .set("compression.type", &args.compression)
            .set("linger.ms", args.linger_ms.to_string())
            .set("enable.idempotence", args.idempotence.to_string())
            .set("batch.size", (1 << 20).to_string())
            .set("queue.buffering.max.kbytes", (1 << 20).to_string());
        for (k, v) in &common.property {
            config.set(k, v);
        }
        let ctx = Delivered {
            counters: counters.clone(),
            latency: latency.clone(),
            size: args.size as u64,
            first_error: Default::default(),
        };
        let producer: ThreadedProducer<Delivered> = config.create_with_context(ctx)?;
        // Connected, with the topic's metadata, before the clock starts.
        producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(30))?;
        ready.push(producer);
    }
    let start = Instant::now();
    let deadline = (args.messages == 0).then(|| start + Duration::from_secs(args.seconds));
    let mut threads = Vec::new();
    for (n, producer) in (0..producers).zip(ready) {
        let topic = topic.to_string();
        let args = args.clone();
        let partitions = common.partitions.max(1) as u64;
        threads.push(std::thread::spawn(
            move || -> anyhow::Result<Option<String>> {
                let quota = match args.messages {
                    0 => u64::MAX,
                    m => m / producers + u64::from(n < m % producers),
                };
                // Each producer sends every `interval`; latency counts from the scheduled time,
                // so a stalled broker is not hidden by sends that did not happen.
                let interval = (args.rate > 0)
                    .then(|| Duration::from_secs_f64(producers as f64 / args.rate as f64));
                let mut value = report::payload(args.size);
                let mut i = 0u64;
                while i < quota && deadline.is_none_or(|d| Instant::now() < d) {
                    let scheduled = match interval {
                        Some(iv) => {
                            let at = start + iv.mul_f64(i as f64);
                            if let Some(wait) = at.checked_duration_since(Instant::now()) {
                                std::thread::sleep(wait);
                            }
                            at
                        }
                        None => Instant::now(),
                    };
                    report::stamp(&mut value, report::unix_nanos());
                    let partition = ((i * producers + n) % partitions) as i32;
                    let mut record = BaseRecord::with_opaque_to(&topic, since_epoch(scheduled))
                        .payload(&value[..])
                        .key(&[] as &[u8])
                        .partition(partition);
                    loop {
                        match producer.send(record) {
                            Ok(()) => break,
                            Err((
                                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                                r,
                            )) => {
                                record = r;
                                std::thread::sleep(Duration::from_micros(200));
                            }
                            Err((e, _)) => return Err(e.into()),
                        }
                    }
                    i += 1;
                }
                producer.flush(Timeout::After(Duration::from_secs(300)))?;
                Ok(producer
                    .context()
                    .first_error
                    .lock()
                    .ok()
                    .and_then(|e| e.clone()))
            },
        ));
    }
    let mut first_error = None;
    for t in threads {
        let e = t
            .join()
            .map_err(|_| anyhow::anyhow!("a producer thread panicked"))??;
        first_error = first_error.or(e);
    }
    Ok((start.elapsed().as_secs_f64(), first_error))
}

pub fn produce(common: &Common, args: &ProduceArgs, quiet: bool) -> anyhow::Result<Value> {
    let topic = common.topic();
    ensure_topic(common, &topic)?;
    let before = common.scrape()?;
    let counters = Arc::new(Counters::default());
    let latency = Arc::new(Latency::default());
    let progress = Progress::start(quiet, vec![("produced", counters.clone())]);
    let (seconds, first_error) =
        produce_load(common, args, &topic, counters.clone(), latency.clone())?;
    drop(progress);
    let mut report = json!({
        "mode": "produce",
        "topic": topic,
        "partitions": common.partitions,
        "size": args.size,
        "producers": args.producers,
        "acks": args.acks,
        "compression": args.compression,
        "idempotence": args.idempotence,
        "linger_ms": args.linger_ms,
        "rate": args.rate,
        "produce": report::rates(counters.messages(), counters.bytes(), seconds),
        "errors": counters.errors(),
        "first_error": first_error,
        "latency_ms": latency.summary(),
    });
    if let (Some(before), Some(after)) = (before, common.scrape()?) {
        report["object_store"] = after.since(&before, "put", counters.bytes());
    }
    Ok(report)
}

#[derive(Args, Debug, Clone)]
pub struct ConsumeArgs {
    /// Records to read; 0: everything from where reading starts to each partition's end
    /// when the run begins.
    #[arg(long, default_value_t = 0)]
    pub messages: u64,
    /// Start this many records (over all partitions) before the end, to read only recent
    /// data; 0: from each partition's start.
    #[arg(long, default_value_t = 0)]
    pub last: u64,
    /// Consumer instances, each reading its share of the partitions.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Give up when nothing arrives for this long.
    #[arg(long, default_value_t = 30)]
    pub stall_seconds: u64,
}

fn consumer_config(common: &Common) -> ClientConfig {
    let mut c = common.config();
    c.set("group.id", "sluice-bench")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.max.bytes", (50 << 20).to_string())
        .set("max.partition.fetch.bytes", (8 << 20).to_string())
        .set("queued.max.messages.kbytes", (256 << 10).to_string());
    for (k, v) in &common.property {
        c.set(k, v);
    }
    c
}

/// Each partition's (low, high) watermarks.
fn watermarks(common: &Common, topic: &str) -> anyhow::Result<Vec<(i64, i64)>> {
    let c: BaseConsumer = consumer_config(common).create()?;
    (0..common.partitions)
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(30))
                .with_context(|| format!("watermarks of {topic}-{p}"))
        })
        .collect()
}

/// What consumers read: partitions from offsets, until `expected` records arrived, giving
/// up after `stall` without any.
struct Reading<'a> {
    topic: &'a str,
    from: Vec<(i32, i64)>,
    consumers: usize,
    expected: u64,
    stall: Duration,
}

/// Reads with `reading.consumers` threads; with `latency`, records each payload's time
/// since its send time. The handle returns the seconds until the last record.
fn consume_load(
    common: &Common,
    reading: Reading<'_>,
    counters: Arc<Counters>,
    latency: Option<Arc<Latency>>,
) -> anyhow::Result<std::thread::JoinHandle<anyhow::Result<f64>>> {
    let Reading {
        topic,
        from,
        consumers,
        expected,
        stall,
    } = reading;
    let consumers = consumers.max(1);
    let mut handles = Vec::new();
    let start = Instant::now();
    for n in 0..consumers {
        let mut tpl = TopicPartitionList::new();
        for (p, offset) in from.iter().skip(n).step_by(consumers) {
            tpl.add_partition_offset(topic, *p, Offset::Offset(*offset))?;
        }
        let c: BaseConsumer = consumer_config(common).create()?;
        c.assign(&tpl)?;
        let counters = counters.clone();
        let latency = latency.clone();
        handles.push(std::thread::spawn(move || -> anyhow::Result<()> {
            let mut last = Instant::now();
            while counters.messages() < expected {
                match c.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) => {
                        let bytes = m.payload_len() + m.key().map_or(0, <[u8]>::len);
                        if let Some(l) = &latency
                            && let Some(sent) = m.payload().and_then(report::stamped)
                        {
                            l.record_nanos(report::unix_nanos().saturating_sub(sent));
                        }
                        counters.add(1, bytes as u64);
                        last = Instant::now();
                    }
                    Some(Err(e)) => {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("consume error: {e}");
                    }
                    None if last.elapsed() > stall => {
                        bail!(
                            "nothing arrived for {stall:?} after {} records",
                            counters.messages()
                        )
                    }
                    None => {}
                }
            }
            Ok(())
        }));
    }
    Ok(std::thread::spawn(move || {
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a consumer thread panicked"))??;
        }
        Ok(start.elapsed().as_secs_f64())
    }))
}

pub fn consume(common: &Common, args: &ConsumeArgs, quiet: bool) -> anyhow::Result<Value> {
    let topic = common
        .topic
        .clone()
        .context("--topic: which topic to read")?;
    let marks = watermarks(common, &topic)?;
    let per_partition = args.last.div_ceil(marks.len().max(1) as u64) as i64;
    let from: Vec<(i32, i64, i64)> = marks
        .iter()
        .enumerate()
        .map(|(p, (lo, hi))| {
            let start = if args.last == 0 {
                *lo
            } else {
                (*hi - per_partition).max(*lo)
            };
            (p as i32, start, *hi)
        })
        .collect();
    let expected = match args.messages {
        0 => from
            .iter()
            .map(|(_, start, hi)| (hi - start).max(0) as u64)
            .sum(),
        m => m,
    };
    let from = from.into_iter().map(|(p, start, _)| (p, start)).collect();
    let before = common.scrape()?;
    let counters = Arc::new(Counters::default());
    let progress = Progress::start(quiet, vec![("consumed", counters.clone())]);
    let reading = Reading {
        topic: &topic,
        from,
        consumers: args.consumers,
        expected,
        stall: Duration::from_secs(args.stall_seconds),
    };
    let done = consume_load(common, reading, counters.clone(), None)?;
    let seconds = done
        .join()
        .map_err(|_| anyhow::anyhow!("consumers panicked"))??;
    drop(progress);
    let mut report = json!({
        "mode": "consume",
        "topic": topic,
        "consumers": args.consumers,
        "expected": expected,
        "consume": report::rates(counters.messages(), counters.bytes(), seconds),
        "errors": counters.errors(),
    });
    if let (Some(before), Some(after)) = (before, common.scrape()?) {
        report["object_store"] = after.since(&before, "get", counters.bytes());
    }
    Ok(report)
}

/// Produce at a fixed rate while consumers read from the end: latency from the send time
/// in each payload to its arrival at a consumer.
pub fn end_to_end(common: &Common, args: &ProduceArgs, quiet: bool) -> anyhow::Result<Value> {
    if args.rate == 0 {
        bail!("end-to-end latency is measured at a fixed --rate");
    }
    let topic = common.topic();
    ensure_topic(common, &topic)?;
    let marks = watermarks(common, &topic)?;
    let from: Vec<(i32, i64)> = marks
        .iter()
        .enumerate()
        .map(|(p, (_, hi))| (p as i32, *hi))
        .collect();
    let expected = match args.messages {
        0 => args.rate * args.seconds,
        m => m,
    };
    let produced = Arc::new(Counters::default());
    let consumed = Arc::new(Counters::default());
    let e2e = Arc::new(Latency::default());
    let progress = Progress::start(
        quiet,
        vec![
            ("produced", produced.clone()),
            ("consumed", consumed.clone()),
        ],
    );
    let reading = Reading {
        topic: &topic,
        from,
        consumers: 1,
        expected,
        stall: Duration::from_secs(30),
    };
    let before = common.scrape()?;
    let done = consume_load(common, reading, consumed.clone(), Some(e2e.clone()))?;
    let args = ProduceArgs {
        messages: expected,
        ..args.clone()
    };
    let produce_latency = Arc::new(Latency::default());
    let (seconds, first_error) = produce_load(
        common,
        &args,
        &topic,
        produced.clone(),
        produce_latency.clone(),
    )?;
    let consumed_seconds = done
        .join()
        .map_err(|_| anyhow::anyhow!("consumers panicked"))??;
    drop(progress);
    let mut report = json!({
        "mode": "e2e",
        "topic": topic,
        "rate": args.rate,
        "size": args.size,
        "produce": report::rates(produced.messages(), produced.bytes(), seconds),
        "consume": report::rates(consumed.messages(), consumed.bytes(), consumed_seconds),
        "errors": produced.errors() + consumed.errors(),
        "first_error": first_error,
        "produce_latency_ms": produce_latency.summary(),
        "end_to_end_latency_ms": e2e.summary(),
    });
    if let (Some(before), Some(after)) = (before, common.scrape()?) {
        // Reads of the tail, while it is written: GETs should be none.
        let mut store = after.since(&before, "put", produced.bytes());
        if let (Some(m), Value::Object(gets)) = (
            store.as_object_mut(),
            after.since(&before, "get", consumed.bytes()),
        ) {
            m.extend(gets);
        }
        report["object_store"] = store;
    }
    Ok(report)
}
