//! Kafka's default partitioner for keyed records: murmur2 of the key, made positive,
//! modulo the partition count. Records Sluice appends on behalf of other protocols (MQTT)
//! use it, so they land where a Kafka producer with the same key would put them.

/// MurmurHash2 (32 bits) with Kafka's seed, as `org.apache.kafka.common.utils.Utils.murmur2`.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition Kafka's default partitioner picks for `key` among `partitions`.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from the Java client's algorithm (as kafka-python implements it).
    #[test]
    fn matches_the_java_client() {
        let cases: [(&[u8], u32, u32); 6] = [
            (b"", 275_646_681, 1),
            (b"a", 2_731_586_172, 4),
            (b"21", 3_321_034_988, 4),
            (b"foobar", 3_504_634_814, 6),
            (b"sensors/a/temp", 1_903_861_109, 5),
            (
                &[
                    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19,
                ],
                424_957_063,
                7,
            ),
        ];
        for (key, hash, partition) in cases {
            assert_eq!(murmur2(key), hash, "{key:?}");
            assert_eq!(partition_for_key(key, 8), partition, "{key:?}");
        }
    }
}
