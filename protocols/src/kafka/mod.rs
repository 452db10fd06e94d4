//! Kafka: request framing and headers (message bodies come from the `kafka-protocol`
//! crate) and record batch validation.

pub mod batch;
pub mod frame;
pub mod header;
pub mod partitioner;
pub mod recompress;
pub mod records;
pub mod scram;

pub use kafka_protocol;
