//! What lives in the bucket: the WAL object format, object naming, and `object_store`
//! wrappers that add metrics and, for tests, injected faults.

pub mod background;
pub mod checkpoints;
pub mod faults;
pub mod metrics;
pub mod naming;
mod open;
pub mod segment;
pub mod wal;

pub use open::{ObjectStoreUrl, open_object_store};

pub use object_store;
