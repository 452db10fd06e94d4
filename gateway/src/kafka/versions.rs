//! What this gateway serves, and so what ApiVersions advertises. A request for anything
//! else is answered with the protocol's error (ApiVersions) or a closed connection with a
//! log line (every other API, as Apache Kafka does: there is no response version to
//! encode an error in).

use kafka_protocol::messages::ApiKey;

/// `(api, min version, max version)`.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    // Produce, Fetch, ListOffsets and Metadata up to Apache Kafka 4.0's versions: clients
    // that infer the broker's version from these see 4.0.
    (ApiKey::Produce, 3, 12),
    (ApiKey::Fetch, 4, 17),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeTopicPartitions, 0, 0),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    // ACLs (SECURITY_DISABLED without --authorizer acl, as Kafka without an authorizer).
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
    // Client quotas (producer_byte_rate and consumer_byte_rate per user and client id).
    (ApiKey::DescribeClientQuotas, 0, 1),
    (ApiKey::AlterClientQuotas, 0, 1),
    // SASL (answered with ILLEGAL_SASL_STATE on a listener without it). Handshake v0 is
    // advertised because librdkafka before 2.2 looks for it, but answered with
    // UNSUPPORTED_VERSION: its raw tokens travel outside Kafka's framing.
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
];

pub fn supported(key: ApiKey, version: i16) -> bool {
    SUPPORTED
        .iter()
        .any(|(k, min, max)| *k == key && (*min..=*max).contains(&version))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything advertised must be decodable and encodable by the protocol crate.
    #[test]
    fn advertised_versions_are_within_the_crate_range() {
        for (key, min, max) in SUPPORTED {
            let range = key.valid_versions();
            assert!(
                range.min <= *min && *max <= range.max,
                "{key:?} {min}..={max} vs {range:?}"
            );
        }
    }
}
