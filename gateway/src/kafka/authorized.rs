//! Authorized operations (KIP-430): what a client may do with a resource, as a bit set of
//! Kafka's ACL operation codes, sent when the client asks for it (Metadata,
//! DescribeCluster, DescribeGroups, DescribeTopicPartitions).
//!
//! No authorization is configured, so every operation a resource supports is allowed. A
//! client that asked and got Kafka's "not provided" value (`i32::MIN`) reads it as no
//! operation allowed.

/// Kafka's `AclOperation` codes.
const READ: i32 = 3;
const WRITE: i32 = 4;
const CREATE: i32 = 5;
const DELETE: i32 = 6;
const ALTER: i32 = 7;
const DESCRIBE: i32 = 8;
const CLUSTER_ACTION: i32 = 9;
const DESCRIBE_CONFIGS: i32 = 10;
const ALTER_CONFIGS: i32 = 11;
const IDEMPOTENT_WRITE: i32 = 12;
const CREATE_TOKENS: i32 = 13;
const DESCRIBE_TOKENS: i32 = 14;

/// The value that says "not requested".
pub const NOT_REQUESTED: i32 = i32::MIN;

/// The bit set of `ops`, or [`NOT_REQUESTED`].
fn answer(requested: bool, ops: &[i32]) -> i32 {
    if !requested {
        return NOT_REQUESTED;
    }
    ops.iter().fold(0, |acc, op| acc | (1 << op))
}

/// What Kafka's topic resource supports.
pub fn topic(requested: bool) -> i32 {
    let ops = [
        READ,
        WRITE,
        CREATE,
        DELETE,
        ALTER,
        DESCRIBE,
        DESCRIBE_CONFIGS,
        ALTER_CONFIGS,
    ];
    answer(requested, &ops)
}

/// What Kafka's group resource supports.
pub fn group(requested: bool) -> i32 {
    answer(requested, &[READ, DELETE, DESCRIBE])
}

/// What Kafka's cluster resource supports.
pub fn cluster(requested: bool) -> i32 {
    let ops = [
        CREATE,
        ALTER,
        DESCRIBE,
        CLUSTER_ACTION,
        DESCRIBE_CONFIGS,
        ALTER_CONFIGS,
        IDEMPOTENT_WRITE,
        CREATE_TOKENS,
        DESCRIBE_TOKENS,
    ];
    answer(requested, &ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_sets_match_kafka() {
        // The values Apache Kafka sends with no authorizer configured.
        assert_eq!(topic(true), 0b1101_1111_1000);
        assert_eq!(group(true), (1 << 3) | (1 << 6) | (1 << 8));
        assert_eq!(cluster(true), 0b111_1111_1010_0000);
        assert_eq!(topic(false), i32::MIN);
    }
}
