use super::*;
use bytes::BytesMut;
use sluice_protocols::kafka::records::{decode_batch, encode_batch};

fn record(i: i32, headers: Vec<Header>) -> Record {
    Record {
        attributes: 0,
        timestamp_delta: i64::from(i) * 10,
        offset_delta: i,
        key: (i % 3 != 0).then(|| Bytes::from(format!("key-{i}"))),
        value: (i % 5 != 4).then(|| Bytes::from(vec![i as u8; (i as usize % 7) * 11])),
        headers,
    }
}

/// Batches exercising every column: codecs, null keys/values, repeated header keys,
/// LogAppendTime, producer fields. Offsets start at 1000.
fn sample() -> Vec<SegmentBatch> {
    let mut out = Vec::new();
    let mut base = 1000;
    for b in 0..12i64 {
        let n = 1 + (b as i32 % 4) * 3;
        let header = BatchHeader {
            base_offset: base,
            partition_leader_epoch: -1,
            attributes: (b % 5) as i16 | if b == 7 { 0x08 } else { 0 },
            base_timestamp: 1_700_000_000_000 + b * 1000,
            max_timestamp: 1_700_000_000_000 + b * 1000 + i64::from(n - 1) * 10,
            producer_id: if b % 2 == 0 { 9 } else { -1 },
            producer_epoch: if b % 2 == 0 { 2 } else { -1 },
            base_sequence: if b % 2 == 0 { b as i32 * 100 } else { -1 },
        };
        let records = (0..n)
            .map(|i| {
                let headers = if i % 2 == 0 {
                    vec![
                        Header {
                            key: Bytes::from_static(b"trace"),
                            value: Some(Bytes::from(format!("t{i}"))),
                        },
                        Header {
                            key: Bytes::from_static(b"trace"),
                            value: None,
                        },
                    ]
                } else {
                    Vec::new()
                };
                record(i, headers)
            })
            .collect();
        out.push((header, records));
        base += i64::from(n);
    }
    out
}

async fn write(batches: &[SegmentBatch], row_group_bytes: usize) -> (Bytes, SegmentSummary) {
    let mut sink: Vec<u8> = Vec::new();
    let mut w = SegmentWriter::new(
        &mut sink,
        SegmentOptions {
            row_group_bytes,
            zstd_level: 1,
        },
        vec![("sluice.topic".into(), "t".into())],
    )
    .expect("writer");
    for (h, r) in batches {
        w.append(h, r).await.expect("append");
    }
    let summary = w.finish().await.expect("finish");
    assert_eq!(summary.size, sink.len() as u64);
    (Bytes::from(sink), summary)
}

fn read_all(file: &Bytes) -> (SegmentIndex, Vec<SegmentBatch>) {
    let len = file.len();
    let index = index_of(file).expect("footer");
    let mut out = Vec::new();
    for (i, rg) in index.row_groups.iter().enumerate() {
        let bytes = file.slice(rg.range.start as usize..rg.range.end as usize);
        out.extend(read_row_group(&index, i, bytes, len as u64).expect("row group"));
    }
    (index, out)
}

/// What a consumer of a LogAppendTime batch cannot see: the records' own timestamp deltas.
fn as_consumers_see(batches: &[SegmentBatch]) -> Vec<SegmentBatch> {
    batches
        .iter()
        .map(|(h, r)| {
            let mut r = r.clone();
            if h.attributes & 0x08 != 0 {
                r.iter_mut().for_each(|r| r.timestamp_delta = 0);
            }
            (*h, r)
        })
        .collect()
}

#[tokio::test]
async fn batches_survive_a_segment_with_row_groups_at_batch_boundaries() {
    let batches = sample();
    let (file, summary) = write(&batches, 200).await;
    assert_eq!(
        summary.records,
        batches.iter().map(|(_, r)| r.len() as u64).sum::<u64>()
    );
    let (index, got) = read_all(&file);
    assert!(index.row_groups.len() > 3, "{:?}", index.row_groups);
    assert_eq!(index.row_groups.len(), summary.row_groups);
    assert_eq!(got, as_consumers_see(&batches));
    // Row groups hold whole batches, cover the offsets in order, and find offsets.
    let mut next = 1000;
    for rg in &index.row_groups {
        assert_eq!(rg.first_offset, next);
        assert!(
            batches
                .iter()
                .any(|(h, _)| h.base_offset == rg.first_offset)
        );
        next = rg.last_offset + 1;
    }
    assert_eq!(index.row_group_for(999), Some(0));
    assert_eq!(
        index.row_group_for(next - 1),
        Some(index.row_groups.len() - 1)
    );
    assert_eq!(index.row_group_for(next), None);
    let mid = index.row_groups[2].first_offset + 1;
    assert_eq!(index.row_group_for(mid), Some(2));
}

#[tokio::test]
async fn uncompressed_create_time_batches_rebuild_byte_for_byte() {
    let batches: Vec<SegmentBatch> = sample()
        .into_iter()
        .filter(|(h, _)| h.attributes == 0)
        .collect();
    assert!(!batches.is_empty());
    let mut originals = Vec::new();
    for (h, r) in &batches {
        let mut b = BytesMut::new();
        encode_batch(h, r, &mut b).expect("encode");
        originals.push(b.freeze());
    }
    // Through the Kafka codec first, as the compactor does.
    let decoded: Vec<SegmentBatch> = originals
        .iter()
        .map(|b| decode_batch(b).expect("decode"))
        .collect();
    let (file, _) = write(&decoded, 1 << 20).await;
    let (_, got) = read_all(&file);
    for ((h, r), original) in got.iter().zip(&originals) {
        let mut b = BytesMut::new();
        encode_batch(h, r, &mut b).expect("encode");
        assert_eq!(&b.freeze(), original);
    }
}

#[tokio::test]
async fn a_file_of_another_version_is_refused() {
    let (file, _) = write(&sample(), 1 << 20).await;
    let len = file.len();
    let footer = footer_length(&file[len - FOOTER_TAIL..]).expect("tail");
    let meta = &file[len - FOOTER_TAIL - footer..len - FOOTER_TAIL];
    let mut changed = meta.to_vec();
    let at = changed
        .windows(VERSION_KEY.len())
        .position(|w| w == VERSION_KEY.as_bytes())
        .expect("version key in footer");
    changed[at] = b'x';
    assert!(parse_footer(meta).is_ok());
    assert!(matches!(
        index_of(&file[..6]),
        Err(SegmentError::Invalid(_))
    ));
    assert!(index_of(&file[..len - 1]).is_err());
    assert!(matches!(
        parse_footer(&changed),
        Err(SegmentError::Invalid(_))
    ));
}

/// A segment written by an earlier build must stay readable: the golden file is read, not
/// compared byte for byte (the Parquet writer's own bytes may change between versions).
#[tokio::test]
async fn golden_v1_segment_reads() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/segment-v1.parquet");
    if std::env::var_os("SLUICE_BLESS").is_some() {
        let (file, _) = write(&sample(), 200).await;
        std::fs::write(&path, &file).expect("write golden");
    }
    let file = Bytes::from(std::fs::read(&path).expect("golden file"));
    let (_, got) = read_all(&file);
    assert_eq!(
        got,
        as_consumers_see(&sample()),
        "segment v1 no longer reads"
    );
}
