//! The Kafka protocol: one task per connection, requests pipelined and answered in order.

mod acls;
mod admin;
mod authn;
mod authorize;
mod authorized;
mod conn;
mod delete_records;
mod describe_topic_partitions;
pub(crate) mod fetch;
mod groups;
mod init_producer_id;
mod list_offsets;
mod metadata;
mod produce;
mod quotas;
mod sasl;
mod scram;
mod versions;

pub use conn::serve_stream;

/// Wall-clock milliseconds, for the timestamps Kafka puts on the wire (LogAppendTime,
/// offset commit times, the arrival time of MQTT messages).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
