//! Deciding what to compact and what retention removes. Pure functions of the log state
//! and the time, so they are tested without any store.

use std::ops::Range;

use sluice_metadata::log::{IndexEntry, PartitionLog};
use sluice_metadata::records::SegmentRecord;
use sluice_storage::naming;

/// When a partition's WAL data becomes a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trigger {
    /// Compact once this many WAL bytes wait; also the most one segment takes.
    pub target_bytes: u64,
    /// Compact once the oldest waiting data is this old (milliseconds).
    pub max_age_ms: i64,
    /// Compact once this many index entries wait (bounds index memory).
    pub max_entries: usize,
}

/// How old the data of an entry is: the creation time of its WAL object.
fn written_ms(e: &IndexEntry) -> Option<i64> {
    naming::created_ms(&e.object)
}

fn day(ms: i64) -> i64 {
    ms.div_euclid(86_400_000)
}

/// How many of `entries` (from the first) the next segment takes, or `None` when the
/// partition is not due. `force_until`: compact everything below this offset regardless
/// of the triggers. A segment ends at the first entry boundary past `target_bytes`, and
/// before an entry whose newest record falls on a later UTC day than the first entry's,
/// so a segment's `date=` folder holds that day's records.
pub fn next_segment(
    entries: &[IndexEntry],
    trigger: &Trigger,
    now_ms: i64,
    force_until: Option<i64>,
) -> Option<usize> {
    let first = entries.first()?;
    let forced = force_until.is_some_and(|f| first.base_offset < f);
    let waiting: u64 = entries.iter().map(|e| u64::from(e.size)).sum();
    let old = written_ms(first).is_some_and(|t| now_ms - t >= trigger.max_age_ms);
    let triggered = waiting >= trigger.target_bytes || entries.len() >= trigger.max_entries || old;
    if !(forced || triggered) {
        return None;
    }
    // Forced only: stop where the force ends.
    let stop_at = if triggered { None } else { force_until };
    let first_day = day(first.max_timestamp);
    let mut bytes = 0u64;
    let mut n = 0;
    for e in entries {
        if n > 0 {
            let full = bytes >= trigger.target_bytes || n >= trigger.max_entries;
            let next_day = day(e.max_timestamp) > first_day;
            let past_force = stop_at.is_some_and(|f| e.base_offset >= f);
            if full || next_day || past_force {
                break;
            }
        }
        bytes += u64::from(e.size);
        n += 1;
    }
    Some(n)
}

/// Most segments one merge reads.
pub const MERGE_MAX_SEGMENTS: usize = 1000;

/// Which run of `segments` to merge into one, if any. A segment below `small_bytes` of WAL
/// data is small (compaction made it early: by age, or to keep the uncompacted data within
/// budget); consecutive published small segments of one UTC day (by their newest record)
/// form a run. A run is merged once it holds `small_bytes` (the merged segment is then no
/// longer small, so data is rewritten once at most), or, with fewer bytes, once it cannot
/// grow any more: it is followed by another segment (but for a small one of the same day
/// that is not yet published), or its day is over.
pub fn next_merge(
    segments: &[SegmentRecord],
    small_bytes: u64,
    now_ms: i64,
) -> Option<Range<usize>> {
    let small = |s: &SegmentRecord| s.wal_bytes < small_bytes && s.staging.is_none();
    let mut i = 0;
    while i < segments.len() {
        if !small(&segments[i]) {
            i += 1;
            continue;
        }
        let run_day = day(segments[i].max_timestamp);
        let mut bytes = 0u64;
        let mut j = i;
        while j < segments.len()
            && small(&segments[j])
            && day(segments[j].max_timestamp) == run_day
            && j - i < MERGE_MAX_SEGMENTS
        {
            bytes += segments[j].wal_bytes;
            j += 1;
            if bytes >= small_bytes {
                break;
            }
        }
        let full = bytes >= small_bytes || j - i == MERGE_MAX_SEGMENTS;
        // A small segment of the same day not yet published joins the run once it is.
        let grows = segments.get(j).is_some_and(|s| {
            s.wal_bytes < small_bytes && s.staging.is_some() && day(s.max_timestamp) == run_day
        });
        let closed = (j < segments.len() && !grows) || day(now_ms) > run_day;
        if j - i >= 2 && (full || closed) {
            return Some(i..j);
        }
        i = j;
    }
    None
}

/// Which partitions to compact now, whatever their triggers, so that the WAL data waiting
/// for compaction stays within `budget`. `waiting`: a partition, when its oldest waiting
/// data was written, and how many bytes wait. None while the total is within the budget;
/// otherwise every partition with data waiting, oldest data first. So the WAL data a read
/// can meet is never more than the newest `budget` bytes written (and what arrives while
/// the pass runs), which a cache of twice that holds.
pub fn relieve<K>(mut waiting: Vec<(K, i64, u64)>, budget: u64) -> Vec<K> {
    let total: u64 = waiting.iter().map(|(_, _, b)| b).sum();
    if total <= budget {
        return Vec::new();
    }
    waiting.sort_by_key(|w| w.1);
    waiting
        .into_iter()
        .filter(|(_, _, bytes)| *bytes > 0)
        .map(|(k, _, _)| k)
        .collect()
}

/// Where retention moves the log start of `log`, if anywhere: past whole segments whose
/// newest record is older than `retention_ms`, and past the oldest segments while the
/// partition would still hold at least `retention_bytes` without them. Data still in WAL
/// objects (the active end of the log, in Kafka's terms) is never removed. Negative
/// limits mean none.
pub fn retention_start(
    log: &PartitionLog,
    retention_ms: i64,
    retention_bytes: i64,
    now_ms: i64,
) -> Option<i64> {
    let mut size = log.size_bytes();
    let mut start = None;
    for s in &log.segments {
        let expired = retention_ms >= 0 && s.max_timestamp < now_ms.saturating_sub(retention_ms);
        let excess =
            retention_bytes >= 0 && size.saturating_sub(s.wal_bytes) >= retention_bytes as u64;
        if !(expired || excess) {
            break;
        }
        size -= s.wal_bytes;
        start = Some(s.end_offset);
    }
    start.filter(|s| *s > log.log_start_offset)
}

#[cfg(test)]
mod tests;
