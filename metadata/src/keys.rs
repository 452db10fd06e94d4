//! The key layout, in one place. All keys are relative to the store's namespace.

/// Everything the commit log applies, in revision order: topics and commits.
pub const LOG_PREFIX: &str = "log/";
pub const TOPICS_PREFIX: &str = "log/topics/";
pub const COMMITS_PREFIX: &str = "log/commits/";
/// The cluster id, created once.
pub const CLUSTER_ID: &str = "cluster/id";

pub fn topic(name: &str) -> String {
    format!("{TOPICS_PREFIX}{name}")
}

pub fn commit(object_id: &str) -> String {
    format!("{COMMITS_PREFIX}{object_id}")
}
