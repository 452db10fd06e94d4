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

/// Who a request comes from, for answers that name gateways: the listener it came
/// through (whose addresses it is given) and the zone its client id names, if any.
pub(crate) struct Asker<'a> {
    pub listener: &'static str,
    pub zone: Option<&'a str>,
}

impl Asker<'_> {
    /// The live gateways at this listener's addresses.
    pub fn nodes(&self, ctx: &crate::server::Ctx) -> Vec<crate::groups::Node> {
        ctx.cluster.nodes_on(self.listener)
    }
}

/// Wall-clock milliseconds, for the timestamps Kafka puts on the wire (LogAppendTime,
/// offset commit times, the arrival time of MQTT messages).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
