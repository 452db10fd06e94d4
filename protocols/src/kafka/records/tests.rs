use super::*;
use crate::kafka::batch::tests::encode_batch as encode_with_kafka_protocol;
use kafka_protocol::records::Compression;
use proptest::prelude::*;

fn header(codec: i16) -> BatchHeader {
    BatchHeader {
        base_offset: 42,
        partition_leader_epoch: -1,
        attributes: codec,
        base_timestamp: 1_700_000_000_000,
        max_timestamp: 1_700_000_000_009,
        producer_id: 7,
        producer_epoch: 1,
        base_sequence: 100,
    }
}

fn arb_bytes() -> impl Strategy<Value = Option<Bytes>> {
    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from))
}

fn arb_record() -> impl Strategy<Value = Record> {
    (
        any::<i64>(),
        arb_bytes(),
        arb_bytes(),
        proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..8), arb_bytes()),
            0..4,
        ),
    )
        .prop_map(|(ts, key, value, headers)| Record {
            attributes: 0,
            timestamp_delta: ts,
            offset_delta: 0,
            key,
            value,
            headers: headers
                .into_iter()
                .map(|(k, value)| Header {
                    key: Bytes::from(k),
                    value,
                })
                .collect(),
        })
}

proptest! {
    #[test]
    fn records_round_trip_with_every_codec(
        mut records in proptest::collection::vec(arb_record(), 1..20),
        codec in 0i16..5,
    ) {
        for (i, r) in records.iter_mut().enumerate() {
            r.offset_delta = i as i32;
        }
        let mut out = BytesMut::new();
        encode_batch(&header(codec), &records, &mut out).expect("encode");
        let bytes = out.freeze();
        // A valid batch by the produce path's own checks (CRC, counts).
        batch::validate_produce(&bytes).expect("valid batch");
        let (h, decoded) = decode_batch(&bytes).expect("decode");
        prop_assert_eq!(h, header(codec));
        prop_assert_eq!(decoded, records);
    }
}

#[test]
fn uncompressed_batches_re_encode_byte_for_byte() {
    let values: Vec<Vec<u8>> = (0..10).map(|i| vec![i as u8; i * 3]).collect();
    let original = Bytes::from(encode_with_kafka_protocol(&values, Compression::None));
    let (h, records) = decode_batch(&original).expect("decode");
    assert_eq!(records.len(), 10);
    assert_eq!(records[3].key.as_deref(), Some(&b"k3"[..]));
    assert_eq!(records[3].value.as_deref(), Some(&[3u8; 9][..]));
    assert_eq!(records[3].headers[0].key.as_ref(), b"h");
    let mut out = BytesMut::new();
    encode_batch(&h, &records, &mut out).expect("encode");
    assert_eq!(out.freeze(), original);
}

#[test]
fn batches_from_another_encoder_decode_with_every_codec() {
    let values: Vec<Vec<u8>> = (0..50).map(|i| format!("value {i}").into_bytes()).collect();
    for c in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let original = Bytes::from(encode_with_kafka_protocol(&values, c));
        let (h, records) = decode_batch(&original).expect("decode");
        let got: Vec<Vec<u8>> = records
            .iter()
            .map(|r| r.value.clone().expect("value").to_vec())
            .collect();
        assert_eq!(got, values, "{c:?}");
        let mut out = BytesMut::new();
        encode_batch(&h, &records, &mut out).expect("encode");
        let (h2, again) = decode_batch(&out.freeze()).expect("decode again");
        assert_eq!((h2, again), (h, records), "{c:?}");
    }
}

#[test]
fn repeated_header_keys_keep_their_order() {
    let r = Record {
        attributes: 0,
        timestamp_delta: 0,
        offset_delta: 0,
        key: None,
        value: None,
        headers: vec![
            Header {
                key: Bytes::from_static(b"a"),
                value: Some(Bytes::from_static(b"1")),
            },
            Header {
                key: Bytes::from_static(b"a"),
                value: None,
            },
        ],
    };
    let mut out = BytesMut::new();
    encode_batch(&header(0), std::slice::from_ref(&r), &mut out).expect("encode");
    let (_, got) = decode_batch(&out.freeze()).expect("decode");
    assert_eq!(got, vec![r]);
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let values = vec![b"abc".to_vec(); 3];
    let original = encode_with_kafka_protocol(&values, Compression::None);
    for cut in [HEADER_SIZE, original.len() - 1] {
        let mut b = original[..cut].to_vec();
        // Keep the length field consistent so the header parses and the records don't.
        let len = (b.len() - LOG_OVERHEAD) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        assert!(decode_batch(&Bytes::from(b)).is_err());
    }
}
