//! The Kafka protocol: one task per connection, requests pipelined and answered in order.

mod admin;
mod conn;
mod fetch;
mod groups;
mod init_producer_id;
mod list_offsets;
mod metadata;
mod produce;
mod versions;

pub use conn::serve_connection;
