//! Object names. Every object is written once under a name nobody else can pick.

use object_store::path::Path;
use uuid::Uuid;

pub const WAL_PREFIX: &str = "wal";

/// A new WAL object name: `wal/<uuid v7>.wal`. Version 7 ids sort by creation time, so a
/// listing shows the age of an object that was never committed.
pub fn new_wal_object() -> (String, Path) {
    let id = Uuid::now_v7().to_string();
    let path = Path::from(format!("{WAL_PREFIX}/{id}.wal"));
    (id, path)
}

/// Whether `path` names a WAL object (`wal/<uuid>.wal`).
pub fn is_wal(path: &Path) -> bool {
    let s = path.as_ref();
    s.strip_prefix(WAL_PREFIX)
        .and_then(|r| r.strip_prefix('/'))
        .and_then(|r| r.strip_suffix(".wal"))
        .is_some_and(|id| Uuid::parse_str(id).is_ok())
}

/// Where segments are staged before publication: outside the table path, so readers
/// listing a topic's folder never see them.
pub const STAGING_PREFIX: &str = "staging";
/// The table root: `topics/<topic>/partition=<n>/date=<day>/<file>.parquet`.
pub const TOPICS_PREFIX: &str = "topics";
pub const CHECKPOINTS_PREFIX: &str = "checkpoints";

/// A new staging object for a segment: `staging/<uuid v7>.parquet`.
pub fn new_staging_object() -> (Uuid, Path) {
    let id = Uuid::now_v7();
    (id, Path::from(format!("{STAGING_PREFIX}/{id}.parquet")))
}

/// The published name of a segment. Topic names are restricted by Kafka to
/// `[a-zA-Z0-9._-]`, so they are safe as a folder name. The first offset leads the file
/// name so a listing sorts in offset order; the segment id keeps a name from ever being
/// reused (a topic deleted and created again starts at offset 0 again).
pub fn segment_path(topic: &str, partition: u32, day: &str, base_offset: i64, id: &Uuid) -> Path {
    Path::from(format!(
        "{TOPICS_PREFIX}/{topic}/partition={partition}/date={day}/{base_offset:020}-{}.parquet",
        id.simple()
    ))
}

/// The day folder (`YYYY-MM-DD`) of a published segment's path.
pub fn segment_day(path: &str) -> Option<&str> {
    path.split('/').find_map(|part| part.strip_prefix("date="))
}

/// The UTC day (`YYYY-MM-DD`) of a time in milliseconds since the epoch.
pub fn utc_day(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    // Civil-from-days (Howard Hinnant's algorithm), valid for any day count here.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// A checkpoint object for the log state as of `revision`.
pub fn checkpoint_path(revision: i64) -> Path {
    Path::from(format!("{CHECKPOINTS_PREFIX}/{revision:020}.ckpt"))
}

/// When an object named by a version 7 uuid (WAL and staging objects) was created, in
/// milliseconds since the epoch.
pub fn created_ms(path: &str) -> Option<i64> {
    let name = path.rsplit('/').next()?;
    let id = Uuid::try_parse(name.split('.').next()?).ok()?;
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    Some(secs as i64 * 1000 + i64::from(nanos / 1_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_names() {
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(1_700_000_000_000), "2023-11-14");
        assert_eq!(utc_day(951_782_400_000), "2000-02-29");
        assert_eq!(utc_day(-1), "1969-12-31");
        let id = Uuid::from_u128(0xab);
        assert_eq!(
            segment_path("t.x", 3, "2026-11-22", 42, &id).as_ref(),
            "topics/t.x/partition=3/date=2026-11-22/00000000000000000042-000000000000000000000000000000ab.parquet"
        );
        assert_eq!(
            segment_day("topics/t.x/partition=3/date=2026-11-22/0-ab.parquet"),
            Some("2026-11-22")
        );
        assert_eq!(segment_day("staging/ab.parquet"), None);
        let (_, wal) = new_wal_object();
        let age = now_ms() - created_ms(wal.as_ref()).expect("v7 time");
        assert!((0..60_000).contains(&age), "{age}");
        assert_eq!(created_ms("topics/t/partition=0/x.parquet"), None);
        assert!(is_wal(&wal));
        assert!(!is_wal(&Path::from("wal/../topics/x.wal")));
        assert!(!is_wal(&Path::from("topics/t/partition=0/x.parquet")));
    }

    fn now_ms() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}
