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
