//! `sluice-bench`: a load generator for Kafka and MQTT brokers that drives real client
//! libraries (librdkafka through `rdkafka`, `rumqttc`), so that the same run can target
//! Sluice or another broker.
//!
//! ```sh
//! sluice-bench produce --bootstrap 127.0.0.1:9092 --size 1024 --partitions 8 --seconds 20
//! sluice-bench consume --bootstrap 127.0.0.1:9092 --topic bench-1 --consumers 2
//! sluice-bench e2e --bootstrap 127.0.0.1:9092 --rate 20000 --seconds 20
//! sluice-bench mqtt --addr 127.0.0.1:1883 --qos 1 --rate 20000
//! sluice-bench mqtt-idle --addr 127.0.0.1:1883 --connections 10000 --server-pid PID
//! sluice-bench connect --bootstrap 127.0.0.1:9093 --ca ca.pem --mechanism SCRAM-SHA-256 \
//!     --user bench --password secret
//! ```
//!
//! Progress goes to stderr once a second; the result is one JSON object on stdout (and in
//! `--json FILE`).

mod connect;
mod kafka;
mod mqtt;
mod report;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "sluice-bench",
    about = "Load generator for Kafka and MQTT brokers"
)]
struct Cli {
    /// Also write the result to this file (pretty JSON).
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// No progress lines.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Produce records; throughput and send-to-acknowledgement latency.
    Produce {
        #[command(flatten)]
        common: kafka::Common,
        #[command(flatten)]
        args: kafka::ProduceArgs,
    },
    /// Read a topic from each partition's start, or its last N records; throughput (recent
    /// reads right after a produce, catch-up reads from a cold gateway or after compaction).
    Consume {
        #[command(flatten)]
        common: kafka::Common,
        #[command(flatten)]
        args: kafka::ConsumeArgs,
    },
    /// Produce at a fixed rate while consuming from the end; produce-to-consume latency.
    E2e {
        #[command(flatten)]
        common: kafka::Common,
        #[command(flatten)]
        args: kafka::ProduceArgs,
    },
    /// MQTT publishers and subscribers; deliveries counted, publish-to-delivery latency.
    Mqtt {
        #[command(flatten)]
        common: mqtt::MqttCommon,
        #[command(flatten)]
        args: mqtt::PubSubArgs,
    },
    /// Kafka connections set up (TLS and SCRAM if asked) and closed; connections per second.
    Connect {
        #[command(flatten)]
        args: connect::ConnectArgs,
    },
    /// Idle MQTT connections held open; the broker's memory per connection.
    MqttIdle {
        #[command(flatten)]
        common: mqtt::MqttCommon,
        #[command(flatten)]
        args: mqtt::IdleArgs,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let q = cli.quiet;
    let report = match &cli.mode {
        Mode::Produce { common, args } => kafka::produce(common, args, q)?,
        Mode::Consume { common, args } => kafka::consume(common, args, q)?,
        Mode::E2e { common, args } => kafka::end_to_end(common, args, q)?,
        Mode::Mqtt { common, args } => runtime()?.block_on(mqtt::pubsub(common, args, q))?,
        Mode::Connect { args } => runtime()?.block_on(connect::run(args, q))?,
        Mode::MqttIdle { common, args } => runtime()?.block_on(mqtt::idle(common, args, q))?,
    };
    report::emit(&report, cli.json.as_deref())
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}
