//! MQTT: how messages map to log records. (The listener and sessions come next.)

pub mod mapping;
pub mod subscriptions;
