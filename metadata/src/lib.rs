//! The source of truth.
//!
//! [`MetaStore`] is a small trait with etcd's semantics: keys with revisions, ranges at a
//! revision, transactions with compares, watches from a revision, and leases. Two backends
//! implement it: [`EmbeddedStore`] (in process, persisted to a local file) and
//! [`EtcdStore`]. [`conformance`] is the one suite both must pass.
//!
//! On top of the store, [`log`] holds the commit log that orders WAL objects and so
//! assigns offsets, and [`records`] the versioned values that live under its keys.

pub mod conformance;
mod embedded;
mod etcd;
pub mod follower;
pub mod keys;
pub mod log;
pub mod records;
mod store;
pub mod topic_configs;

pub use embedded::EmbeddedStore;
pub use etcd::EtcdStore;
pub use store::*;

#[cfg(test)]
mod golden {
    /// Compares `bytes` with the stored golden file; `SLUICE_BLESS=1` rewrites it.
    pub(crate) fn check_golden(name: &str, bytes: &[u8]) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(name);
        if std::env::var_os("SLUICE_BLESS").is_some() {
            std::fs::write(&path, bytes).expect("write golden file");
        }
        let golden = std::fs::read(&path).expect("golden file exists");
        assert_eq!(
            golden, bytes,
            "{name}: encoding changed; bump the format version"
        );
        golden
    }
}
