//! Compacting one range of one partition: WAL chunks in, one Parquet segment out.
//!
//! 1. Write the segment to `staging/<id>.parquet` (outside the table path).
//! 2. Swap the range in one metadata transaction: it compares the partition's compaction
//!    key (so two compactors never commit the same range), moves it to the segment's end,
//!    and puts the segment record, which names the staging object. From this revision
//!    every gateway reads the range from the segment.
//! 3. Publish: rename the staging object to its table path, then put the segment record
//!    again without the staging name.
//!
//! A crash before 2 leaves an orphaned staging object (deleted after a safe age); a crash
//! between 2 and 3 leaves a committed segment with a staging name, which the next pass of
//! any compactor publishes. So the table path only ever holds committed segments, each
//! covering offsets no other file covers.
//!
//! Merging a run of small segments into one goes the same way, except that the members'
//! files are deleted between 2 and 3, so that no two published files ever cover the same
//! offsets (a reader of the table may miss those rows until 3, or until the next pass if
//! the compactor dies before it).

use bytes::Bytes;
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use sluice_metadata::log::IndexEntry;
use sluice_metadata::records::{SEGMENT_RECORD_VERSION, SegmentRecord, TopicRecord};
use sluice_metadata::{Compare, MetaError, Revision, Txn, TxnOp, keys};
use sluice_protocols::kafka::batch;
use sluice_protocols::kafka::records::{RecordsError, decode_batch};
use sluice_storage::segment::{self, SegmentError, SegmentSummary, SegmentWriter};
use sluice_storage::{background, naming};

use crate::{Inner, metrics};

#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error("metadata: {0}")]
    Metadata(#[from] MetaError),
    #[error("reading WAL data: {0}")]
    Read(#[from] sluice_cache::CacheError),
    #[error("a stored batch is unreadable: {0}")]
    Batch(#[from] batch::BatchError),
    #[error("a stored batch's records are unreadable: {0}")]
    Records(#[from] RecordsError),
    #[error("writing the segment: {0}")]
    Segment(#[from] SegmentError),
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("the log did not apply revision {0} in time")]
    Lagging(Revision),
}

/// What a finished compaction produced.
#[derive(Debug, Clone)]
pub struct Compacted {
    /// The revision that published the segment: once the log has applied it, the segment
    /// is there with its table path.
    pub revision: Revision,
    pub records: u64,
}

/// Where the partition's compaction stands in metadata: the compaction key's revision
/// (0 when absent) and the offset it records.
async fn compaction_point(
    inner: &Inner,
    topic_id: &uuid::Uuid,
    partition: u32,
) -> Result<(Revision, Option<i64>), MetaError> {
    let kv = inner
        .store
        .get(keys::compaction(topic_id, partition).as_bytes())
        .await?;
    Ok(match kv {
        Some(kv) => (
            kv.mod_revision,
            std::str::from_utf8(&kv.value)
                .ok()
                .and_then(|v| v.parse().ok()),
        ),
        None => (0, None),
    })
}

/// Compacts `entries` (consecutive, the oldest uncompacted data of the partition) into a
/// segment and swaps it in. `Ok(None)`: another compactor got there first, or this
/// process's view of the log is behind; nothing was changed.
pub(crate) async fn compact_range(
    inner: &Inner,
    topic: &TopicRecord,
    partition: u32,
    entries: &[IndexEntry],
) -> Result<Option<Compacted>, CompactError> {
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return Ok(None);
    };
    let base = first.base_offset;
    let end = last.end_offset();
    let (point_rev, point) = compaction_point(inner, &topic.id, partition).await?;
    // The range must start where compaction stands, or later when the log start moved past
    // WAL data (DeleteRecords) and the index dropped it; never earlier.
    if point.is_some_and(|p| p > base) {
        tracing::debug!(topic = %topic.name, partition, base, ?point, "compaction point moved; skipping");
        return Ok(None);
    }
    let started = std::time::Instant::now();
    let mut staged = Staged::new(inner, topic, partition, base..end)?;
    let writer = &mut staged.writer;
    let mut wal_bytes = 0u64;
    let mut first_timestamp = None;
    for e in entries {
        let chunk = inner
            .cache
            .get_range_no_fill(
                &Path::from(e.object.as_ref()),
                e.object_size,
                e.position..e.position + u64::from(e.size),
            )
            .await?;
        wal_bytes += chunk.len() as u64;
        let mut offset = e.base_offset;
        for info in batch::iter_headers(&chunk) {
            let info = info?;
            batch::verify_crc(&chunk, &info)?;
            let bytes: Bytes = chunk.slice(info.position..info.position + info.size);
            let (mut header, records) = decode_batch(&bytes)?;
            header.base_offset = offset;
            if first_timestamp.is_none() {
                first_timestamp = Some(if info.uses_log_append_time() {
                    info.max_timestamp
                } else {
                    header.base_timestamp
                });
            }
            writer.append(&header, &records).await?;
            offset += i64::from(info.record_count);
        }
        if offset != e.end_offset() {
            // The index and the stored batches disagree: never publish such a segment.
            return Err(CompactError::Batch(batch::BatchError::Invalid {
                at: e.position as usize,
                reason: format!(
                    "entry at offset {} holds {} records, its batches {}",
                    e.base_offset,
                    e.records,
                    offset - e.base_offset
                ),
            }));
        }
    }
    let day = |summary: &SegmentSummary| {
        naming::utc_day(first_timestamp.unwrap_or(summary.min_timestamp))
    };
    let point = (point_rev, end);
    let Some(committed) = staged
        .commit(inner, topic, partition, base..end, day, wal_bytes, point)
        .await?
    else {
        return Ok(None);
    };
    let summary = &committed.summary;
    metrics::SEGMENTS.inc();
    metrics::COMPACTED_BYTES.inc_by(wal_bytes);
    metrics::COMPACTED_RECORDS.inc_by(summary.records);
    metrics::SEGMENT_SECONDS.observe(started.elapsed().as_secs_f64());
    tracing::info!(
        topic = %topic.name,
        partition,
        base,
        end,
        wal_bytes,
        parquet_bytes = summary.size,
        row_groups = summary.row_groups,
        seconds = started.elapsed().as_secs_f64(),
        "segment committed"
    );
    committed.publish(inner).await.map(Some)
}

type Writer = SegmentWriter<BufWriter>;

/// A segment being written to its staging object.
struct Staged {
    id: uuid::Uuid,
    staging: Path,
    writer: Writer,
}

/// A segment committed in metadata (its record still names the staging object).
struct Committed {
    record: SegmentRecord,
    revision: Revision,
    summary: SegmentSummary,
}

impl Staged {
    fn new(
        inner: &Inner,
        topic: &TopicRecord,
        partition: u32,
        offsets: std::ops::Range<i64>,
    ) -> Result<Self, CompactError> {
        let (id, staging) = naming::new_staging_object();
        let writer = segment_writer(inner, topic, partition, offsets, &staging)?;
        Ok(Self {
            id,
            staging,
            writer,
        })
    }

    /// Finishes the file and swaps it in for `offsets` (see [`swap`]), its `date=` folder
    /// given by `day` from what the file holds. `Ok(None)`: another compactor changed the
    /// partition first (logged here).
    #[allow(clippy::too_many_arguments)]
    async fn commit(
        self,
        inner: &Inner,
        topic: &TopicRecord,
        partition: u32,
        offsets: std::ops::Range<i64>,
        day: impl FnOnce(&SegmentSummary) -> String,
        wal_bytes: u64,
        (point_rev, point): (Revision, i64),
    ) -> Result<Option<Committed>, CompactError> {
        let summary = self.writer.finish().await?;
        let day = day(&summary);
        let path = naming::segment_path(&topic.name, partition, &day, offsets.start, &self.id);
        let record = SegmentRecord {
            v: SEGMENT_RECORD_VERSION,
            topic_id: topic.id,
            partition,
            base_offset: offsets.start,
            end_offset: offsets.end,
            path: path.to_string(),
            staging: Some(self.staging.to_string()),
            size: summary.size,
            min_timestamp: summary.min_timestamp,
            max_timestamp: summary.max_timestamp,
            wal_bytes,
        };
        let point_key = keys::compaction(&topic.id, partition);
        let Some(revision) = swap(inner, point_key, point_rev, point, &record).await? else {
            tracing::info!(topic = %topic.name, partition, base = offsets.start, "another compactor changed this partition first");
            return Ok(None);
        };
        Ok(Some(Committed {
            record,
            revision,
            summary,
        }))
    }
}

impl Committed {
    /// Publishes the segment (see [`publish`]).
    async fn publish(self, inner: &Inner) -> Result<Compacted, CompactError> {
        let published = publish(inner, &self.record).await?;
        Ok(Compacted {
            revision: published.unwrap_or(self.revision),
            records: self.summary.records,
        })
    }
}

/// A writer of a segment of `offsets` of the partition into the staging object `staging`.
fn segment_writer(
    inner: &Inner,
    topic: &TopicRecord,
    partition: u32,
    offsets: std::ops::Range<i64>,
    staging: &Path,
) -> Result<Writer, CompactError> {
    let sink = BufWriter::new(inner.objects.clone(), staging.clone());
    Ok(SegmentWriter::new(
        sink,
        inner.config.segment.clone(),
        vec![
            ("sluice.topic".into(), topic.name.clone()),
            ("sluice.topic_id".into(), topic.id.to_string()),
            ("sluice.partition".into(), partition.to_string()),
            ("sluice.base_offset".into(), offsets.start.to_string()),
            ("sluice.end_offset".into(), offsets.end.to_string()),
        ],
    )?)
}

/// Commits `record` in one metadata transaction that compares the partition's compaction
/// key with the revision it was read at and sets it to `point` (so two compactors never
/// commit over each other). `Ok(None)`: the key changed meanwhile; the staging object is
/// deleted. On an unknown outcome the staging object stays: if the swap did happen the
/// next pass publishes it, otherwise it is an orphan deleted later.
async fn swap(
    inner: &Inner,
    point_key: String,
    point_rev: Revision,
    point: i64,
    record: &SegmentRecord,
) -> Result<Option<Revision>, CompactError> {
    let compare = if point_rev == 0 {
        Compare::absent(point_key.clone())
    } else {
        Compare::mod_revision(point_key.clone(), point_rev)
    };
    let swapped = inner
        .store
        .txn(Txn {
            compares: vec![compare],
            success: vec![
                TxnOp::put(point_key, point.to_string()),
                TxnOp::put(
                    keys::segment(&record.topic_id, record.partition, record.base_offset),
                    record.encode(),
                ),
            ],
            failure: vec![],
        })
        .await?;
    if !swapped.succeeded {
        if let Some(staging) = &record.staging {
            let _ = inner.objects.delete(&Path::from(staging.as_str())).await;
        }
        return Ok(None);
    }
    Ok(Some(swapped.revision))
}

/// Merges `members` (consecutive published segments of the partition) into one segment
/// and swaps it in, like a compaction: the compaction key is compared (and written again
/// with the same offset), and the merged segment's record takes the first member's key.
/// Then the members' files leave the table path, before the merged one is published
/// there, so a reader of the table never sees a record twice. A fetch that resolved a
/// member just before the swap and reads a part of it not yet cached fails with a
/// retriable error and reads the merged segment on its next attempt. `Ok(None)`: another
/// compactor changed the partition's compaction first; nothing was changed.
pub(crate) async fn merge_range(
    inner: &Inner,
    topic: &TopicRecord,
    partition: u32,
    members: &[SegmentRecord],
) -> Result<Option<Compacted>, CompactError> {
    let (Some(first), Some(last)) = (members.first(), members.last()) else {
        return Ok(None);
    };
    let (base, end) = (first.base_offset, last.end_offset);
    let (point_rev, point) = compaction_point(inner, &topic.id, partition).await?;
    let Some(point) = point.filter(|p| *p >= end && point_rev > 0) else {
        return Ok(None);
    };
    let started = std::time::Instant::now();
    let mut staged = Staged::new(inner, topic, partition, base..end)?;
    let writer = &mut staged.writer;
    let mut wal_bytes = 0u64;
    let mut next = base;
    for m in members {
        let unexpected = |reason: String| {
            CompactError::Segment(SegmentError::Invalid(format!("{}: {reason}", m.path)))
        };
        if m.base_offset != next {
            return Err(unexpected(format!(
                "starts at offset {}, not {next}",
                m.base_offset
            )));
        }
        let before = writer.records();
        let file = inner
            .cache
            .get_range_no_fill(&Path::from(m.path.as_str()), m.size, 0..m.size)
            .await?;
        let index = std::sync::Arc::new(segment::index_of(&file)?);
        for i in 0..index.row_groups.len() {
            let span = &index.row_groups[i].range;
            let raw = file.slice(span.start as usize..span.end as usize);
            // Decoding is CPU work: on the background thread, as encoding is.
            let (index, size) = (index.clone(), m.size);
            let batches = background::run(move || segment::read_row_group(&index, i, raw, size))
                .await
                .map_err(|e| SegmentError::Task(e.to_string()))??;
            for (header, records) in batches {
                writer.append(&header, &records).await?;
            }
        }
        let held = writer.records() - before;
        if held != (m.end_offset - m.base_offset) as u64 {
            return Err(unexpected(format!(
                "holds {held} records for offsets {}..{}",
                m.base_offset, m.end_offset
            )));
        }
        wal_bytes += m.wal_bytes;
        next = m.end_offset;
    }
    let day = |summary: &SegmentSummary| {
        naming::segment_day(&first.path)
            .map_or_else(|| naming::utc_day(summary.min_timestamp), str::to_string)
    };
    let point = (point_rev, point);
    let Some(committed) = staged
        .commit(inner, topic, partition, base..end, day, wal_bytes, point)
        .await?
    else {
        return Ok(None);
    };
    let summary = &committed.summary;
    metrics::MERGES.inc();
    metrics::MERGED_SEGMENTS.inc_by(members.len() as u64);
    tracing::info!(
        topic = %topic.name,
        partition,
        base,
        end,
        segments = members.len(),
        wal_bytes,
        parquet_bytes = summary.size,
        seconds = started.elapsed().as_secs_f64(),
        "segments merged"
    );
    for m in members {
        match inner.objects.delete(&Path::from(m.path.as_str())).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                metrics::DELETED.with_label_values(&["segment"]).inc();
            }
            // The sweep deletes it later, as any file no segment names.
            Err(e) => {
                tracing::warn!(path = %m.path, error = %e, "deleting a merged segment failed")
            }
        }
    }
    committed.publish(inner).await.map(Some)
}

/// Moves a committed segment from its staging object to its table path and records that.
/// Safe to repeat, and to run on two compactors at once.
/// Returns the revision of the published record (`None` when it was published already).
pub(crate) async fn publish(
    inner: &Inner,
    record: &SegmentRecord,
) -> Result<Option<Revision>, CompactError> {
    let objects = inner.objects.as_ref();
    let Some(staging) = &record.staging else {
        return Ok(None);
    };
    let from = Path::from(staging.as_str());
    let to = Path::from(record.path.as_str());
    match objects.rename(&from, &to).await {
        Ok(()) => {}
        // Already moved (by an earlier attempt, or another compactor).
        Err(object_store::Error::NotFound { .. }) if objects.head(&to).await.is_ok() => {}
        Err(e) => return Err(e.into()),
    }
    let published = SegmentRecord {
        staging: None,
        ..record.clone()
    };
    let done = inner
        .store
        .txn(Txn {
            compares: vec![],
            success: vec![TxnOp::put(
                keys::segment(&record.topic_id, record.partition, record.base_offset),
                published.encode(),
            )],
            failure: vec![],
        })
        .await?;
    Ok(Some(done.revision))
}
