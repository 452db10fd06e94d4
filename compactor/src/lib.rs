//! The compactor: committed WAL objects into Parquet segments, retention, and removal of what nothing needs any more.
