//! Gateway metrics, declared in one place. Exposed with every other registered metric
//! (object store, cache) on `/metrics`.

use std::sync::LazyLock;

use prometheus::{
    Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, register_histogram,
    register_histogram_vec, register_int_counter, register_int_counter_vec, register_int_gauge,
};

/// Fine below 50 ms, where produce and flush latencies live and percentiles are compared.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0065, 0.008, 0.01, 0.0125, 0.015, 0.02,
    0.025, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub static KAFKA_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_kafka_requests_total",
        "Kafka requests by API",
        &["api"]
    )
    .expect("invariant: metric registered once")
});

pub static KAFKA_LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "sluice_kafka_request_seconds",
        "Kafka request latency by API, from decoded request to encoded response",
        &["api"],
        LATENCY_BUCKETS.to_vec()
    )
    .expect("invariant: metric registered once")
});

pub static TLS_RELOADS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_tls_reloads_total",
        "Changes of the TLS certificate files, by whether they loaded",
        &["result"]
    )
    .expect("invariant: metric registered once")
});

pub static TLS_HANDSHAKE_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_tls_handshake_failures_total",
        "TLS handshakes that failed (plaintext on a TLS port, untrusted or expired client certificates), by listener",
        &["listener"]
    )
    .expect("invariant: metric registered once")
});

pub static MQTT_DENIED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_mqtt_denied_total",
        "MQTT publishes and subscriptions refused by topic rules or ACLs (a 3.1.1 QoS 0 publish is dropped)",
        &["action"]
    )
    .expect("invariant: metric registered once")
});

pub static REAUTHENTICATIONS: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "sluice_kafka_reauthentications_total",
        "Kafka sessions renewed by re-authentication on their connection (KIP-368)"
    )
    .expect("invariant: metric registered once")
});

pub static MQTT_WILLS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_mqtt_wills_total",
        "MQTT wills kept back by a drain (deferred), and later published or dropped (their client came back)",
        &["outcome"]
    )
    .expect("invariant: metric registered once")
});

pub static QUOTA_THROTTLED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_quota_throttled_total",
        "Kafka responses throttled for a client quota, by quota",
        &["quota"]
    )
    .expect("invariant: metric registered once")
});

pub static AUTH_FAILURES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_auth_failures_total",
        "Refused authentications, by listener and mechanism",
        &["listener", "mechanism"]
    )
    .expect("invariant: metric registered once")
});

pub static CONNECTIONS_REFUSED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_connections_refused_total",
        "Connections closed right after accept, by listener and reason",
        &["listener", "reason"]
    )
    .expect("invariant: metric registered once")
});

pub static RECOMPRESSED_BATCHES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "sluice_recompressed_batches_total",
        "Produced batches stored with their topic's compression.type instead of the producer's codec"
    )
    .expect("invariant: metric registered once")
});

pub static BYTES_IN: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "sluice_bytes_in_total",
        "Record batch bytes accepted from producers"
    )
    .expect("invariant: metric registered once")
});

pub static BYTES_OUT: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "sluice_bytes_out_total",
        "Record batch bytes sent to consumers"
    )
    .expect("invariant: metric registered once")
});

pub static FLUSH_BYTES: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "sluice_flush_bytes",
        "Size of each WAL object written",
        prometheus::exponential_buckets(1024.0, 4.0, 10).expect("invariant: valid buckets")
    )
    .expect("invariant: metric registered once")
});

pub static FLUSH_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    register_histogram!(
        "sluice_flush_seconds",
        "Time from the start of a flush to its commit being applied",
        LATENCY_BUCKETS.to_vec()
    )
    .expect("invariant: metric registered once")
});

pub static FLUSH_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_flush_errors_total",
        "Flushes that failed, by stage (put, commit, apply)",
        &["stage"]
    )
    .expect("invariant: metric registered once")
});

pub static PRODUCE_BATCHES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_produce_batches_total",
        "Produced batches by where the log put them: appended, duplicate (a retry answered with \
         its original offset), out_of_order, fenced, gone",
        &["outcome"]
    )
    .expect("invariant: metric registered once")
});

pub static MQTT_CONNECTIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("sluice_mqtt_connections", "Open MQTT connections")
        .expect("invariant: metric registered once")
});

pub static KAFKA_CONNECTIONS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!("sluice_kafka_connections", "Open Kafka connections")
        .expect("invariant: metric registered once")
});

pub static CONNECTIONS_SHED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_connections_shed_total",
        "Connections asked to reconnect elsewhere, this gateway having more than its share",
        &["protocol"]
    )
    .expect("invariant: metric registered once")
});

pub static MQTT_SESSIONS_RESUMED: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "sluice_mqtt_sessions_resumed_total",
        "MQTT connections that resumed a stored session"
    )
    .expect("invariant: metric registered once")
});

pub static MQTT_SHARE_GATEWAYS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "sluice_mqtt_share_gateways",
        "Gateways with members of shared subscriptions, summed over the shared subscriptions \
         this gateway knows of"
    )
    .expect("invariant: metric registered once")
});

pub static MQTT_DELIVERIES: LazyLock<IntCounter> = LazyLock::new(|| {
    register_int_counter!(
        "sluice_mqtt_deliveries_total",
        "Messages handed to MQTT connections for sending"
    )
    .expect("invariant: metric registered once")
});

pub static PEER_FORWARDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_peer_forwards_total",
        "WAL objects forwarded between gateways for MQTT delivery, by outcome: sent, failed, \
         timed_out (by the writer); held (waiting for the commit), received (cached: the \
         commit's digest matched), rejected (it did not, or the bytes did not match the \
         digest sent), dropped (over the memory budget), expired (no commit came) by the \
         reader",
        &["outcome"]
    )
    .expect("invariant: metric registered once")
});

pub static PEER_TARGETS: LazyLock<IntGauge> = LazyLock::new(|| {
    register_int_gauge!(
        "sluice_peer_targets",
        "Other gateways this one forwards WAL objects holding MQTT data to"
    )
    .expect("invariant: metric registered once")
});
