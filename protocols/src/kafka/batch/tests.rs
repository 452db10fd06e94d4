use super::*;
use bytes::BytesMut;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use proptest::prelude::*;

pub(crate) fn encode_batch(values: &[Vec<u8>], compression: Compression) -> Vec<u8> {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: i as i32,
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(bytes::Bytes::from(format!("k{i}"))),
            value: Some(bytes::Bytes::from(v.clone())),
            headers: [(
                StrBytes::from_static_str("h"),
                Some(bytes::Bytes::from_static(b"v")),
            )]
            .into_iter()
            .collect(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .expect("encode batch");
    buf.to_vec()
}

#[test]
fn accepts_a_valid_batch_of_each_codec() {
    for c in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let b = encode_batch(&[b"a".to_vec(), b"bb".to_vec(), b"ccc".to_vec()], c);
        let info = validate_produce(&b).expect("valid");
        assert_eq!(info.record_count, 3);
        assert_eq!(info.size, b.len());
        assert_eq!(info.max_timestamp, 1_700_000_000_002);
        assert_eq!(info.compression(), c as i16);
    }
}

#[test]
fn rejects_flipped_bit_as_bad_crc() {
    let mut b = encode_batch(&[b"hello".to_vec()], Compression::None);
    let last = b.len() - 1;
    b[last] ^= 1;
    assert!(matches!(
        validate_produce(&b),
        Err(BatchError::BadCrc { at: 0, .. })
    ));
}

#[test]
fn rejects_truncation_magic_and_two_batches() {
    let b = encode_batch(&[b"hello".to_vec()], Compression::None);
    assert!(matches!(
        validate_produce(&b[..b.len() - 1]),
        Err(BatchError::Truncated { .. })
    ));
    assert!(matches!(
        validate_produce(&b[..10]),
        Err(BatchError::Truncated { .. })
    ));
    let mut m = b.clone();
    m[16] = 1;
    assert!(matches!(
        validate_produce(&m),
        Err(BatchError::BadMagic { magic: 1, .. })
    ));
    let two = [b.clone(), b.clone()].concat();
    assert!(matches!(
        validate_produce(&two),
        Err(BatchError::Invalid { .. })
    ));
    assert_eq!(validate_produce(&[]), Err(BatchError::Empty));
}

#[test]
fn base_offset_patch_keeps_crc_and_log_append_time_recomputes_it() {
    let mut b = encode_batch(&[b"x".to_vec(), b"y".to_vec()], Compression::Lz4);
    set_base_offset(&mut b, 1234);
    set_log_append_time(&mut b, 42);
    let info = read_header(&b, 0).expect("header");
    assert!(info.uses_log_append_time());
    assert_eq!(info.max_timestamp, 42);
    let mut bytes = bytes::Bytes::from(b);
    let set = RecordBatchDecoder::decode(&mut bytes).expect("decodes with a valid crc");
    assert_eq!(set.records[0].offset, 1234);
    assert_eq!(set.records[1].offset, 1235);
}

proptest! {
    #[test]
    fn validation_never_panics_on_garbage(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = validate_produce(&data);
        let _ = iter_headers(&data).count();
    }

    #[test]
    fn concatenated_batches_validate(values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..50), 1..5), n in 1usize..4) {
        let one = encode_batch(&values, Compression::None);
        let all: Vec<u8> = std::iter::repeat_n(one.clone(), n).flatten().collect();
        let infos: Vec<BatchInfo> = iter_headers(&all).collect::<Result<_, _>>().expect("valid");
        prop_assert_eq!(infos.len(), n);
        prop_assert!(infos.iter().all(|i| i.record_count as usize == values.len()));
        prop_assert_eq!(infos.last().map(|i| i.position + i.size), Some(all.len()));
    }
}
