//! MQTT 3.1.1 and 5.0: connections, the sessions and subscriptions they share, and how
//! messages map to log records.

pub mod auth;
pub(crate) mod batched;
pub(crate) mod broker;
pub(crate) mod conn;
pub mod mapping;
pub mod retained;
pub mod session;
pub mod subscriptions;
pub(crate) mod websocket;
pub mod wills;
