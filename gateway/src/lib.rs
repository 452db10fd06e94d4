//! The stateless gateway: listeners, the Kafka protocol, the WAL batcher, the read path and
//! the HTTP endpoints. Everything it keeps in memory can be rebuilt from metadata and the
//! object store, so any gateway can serve any client for any partition.

pub mod acl;
mod balance;
mod batcher;
mod cluster;
pub mod config;
mod failed_logins;
mod groups;
mod http;
mod kafka;
pub mod metrics;
pub mod mqtt;
pub mod oauth;
mod peers;
mod per_ip;
mod producer_ids;
mod quotas;
mod segments;
mod server;
pub mod tls;
mod topics;
mod users;
mod watch;

pub use config::GatewayConfig;
pub use server::{CompactorProcess, Gateway, Services};
