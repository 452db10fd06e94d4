//! Parquet segments: the compacted form of a partition's records, read both by Kafka
//! fetches (rebuilt into record batches) and directly by Spark, DuckDB, Polars or PyArrow.
//!
//! Schema, version 1 (recorded in the file's key-value metadata as
//! `sluice.segment.version`):
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `offset` | int64 | the record's offset in its partition |
//! | `timestamp` | timestamp(ms, UTC) | the timestamp Kafka consumers see |
//! | `timestamp_type` | int8 | 0 CreateTime, 1 LogAppendTime |
//! | `key` | binary, nullable | |
//! | `value` | binary, nullable | |
//! | `headers` | list of struct(key: string, value: binary nullable) | in order, repeats kept |
//! | `batch` | struct | the record batch the record came in: `offset` (its base offset), `attributes`, `base_timestamp`, `max_timestamp`, `leader_epoch`, `producer_id`, `producer_epoch`, `base_sequence` |
//!
//! The `batch` fields are the same for every record of a batch, so Parquet's run-length
//! encoding stores them almost for free; they let a fetch rebuild each batch with its
//! original boundaries, codec and producer fields. Row groups end only at batch
//! boundaries, so one row group always holds whole batches.

use std::ops::Range;
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int8Type, Int16Type, Int32Type, Int64Type, TimestampMillisecondType};
use arrow_array::{
    Array, ArrayRef, Int8Array, Int16Array, Int32Array, Int64Array, ListArray, RecordBatch,
    StructArray, TimestampMillisecondArray,
};
use arrow_buffer::{OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use bytes::{Buf, Bytes};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::async_writer::AsyncFileWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::{FooterTail, KeyValue, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::statistics::Statistics;
use parquet::schema::types::ColumnPath;
use sluice_protocols::kafka::records::{BatchHeader, Header, Record};

pub const SEGMENT_VERSION: u32 = 1;
const VERSION_KEY: &str = "sluice.segment.version";
/// The Parquet footer's fixed tail: metadata length and magic.
pub const FOOTER_TAIL: usize = 8;

const TIMESTAMP_TYPE_MASK: i16 = 0x08;

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("segment is not readable: {0}")]
    Invalid(String),
    #[error("encoding task failed: {0}")]
    Task(String),
}

fn header_fields() -> Fields {
    Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Binary, true),
    ])
}

fn batch_fields() -> Fields {
    Fields::from(vec![
        Field::new("offset", DataType::Int64, false),
        Field::new("attributes", DataType::Int16, false),
        Field::new("base_timestamp", DataType::Int64, false),
        Field::new("max_timestamp", DataType::Int64, false),
        Field::new("leader_epoch", DataType::Int32, false),
        Field::new("producer_id", DataType::Int64, false),
        Field::new("producer_epoch", DataType::Int16, false),
        Field::new("base_sequence", DataType::Int32, false),
    ])
}

fn headers_item() -> Arc<Field> {
    Arc::new(Field::new(
        "element",
        DataType::Struct(header_fields()),
        false,
    ))
}

/// The Arrow schema of every version 1 segment.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("offset", DataType::Int64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("timestamp_type", DataType::Int8, false),
        Field::new("key", DataType::Binary, true),
        Field::new("value", DataType::Binary, true),
        Field::new("headers", DataType::List(headers_item()), false),
        Field::new("batch", DataType::Struct(batch_fields()), false),
    ]))
}

/// How segments are written.
#[derive(Debug, Clone)]
pub struct SegmentOptions {
    /// A row group ends at the first batch boundary after this many bytes of records.
    pub row_group_bytes: usize,
    pub zstd_level: i32,
}

impl Default for SegmentOptions {
    fn default() -> Self {
        Self {
            row_group_bytes: 8 << 20,
            zstd_level: 1,
        }
    }
}

/// Rows being gathered for the next Arrow batch.
#[derive(Default)]
struct Rows {
    offset: Vec<i64>,
    timestamp: Vec<i64>,
    timestamp_type: Vec<i8>,
    key: BinaryBuilder,
    value: BinaryBuilder,
    header_offsets: Vec<i32>,
    header_key: StringBuilder,
    header_value: BinaryBuilder,
    b_offset: Vec<i64>,
    b_attributes: Vec<i16>,
    b_base_timestamp: Vec<i64>,
    b_max_timestamp: Vec<i64>,
    b_leader_epoch: Vec<i32>,
    b_producer_id: Vec<i64>,
    b_producer_epoch: Vec<i16>,
    b_base_sequence: Vec<i32>,
    /// Approximate bytes of record data gathered.
    bytes: usize,
}

impl Rows {
    fn push_batch(&mut self, h: &BatchHeader, records: &[Record]) {
        if self.header_offsets.is_empty() {
            self.header_offsets.push(0);
        }
        let log_append = h.attributes & TIMESTAMP_TYPE_MASK != 0;
        for r in records {
            self.offset.push(h.base_offset + i64::from(r.offset_delta));
            self.timestamp.push(if log_append {
                h.max_timestamp
            } else {
                h.base_timestamp.wrapping_add(r.timestamp_delta)
            });
            self.timestamp_type.push(i8::from(log_append));
            self.key.append_option(r.key.as_deref());
            self.value.append_option(r.value.as_deref());
            for hd in &r.headers {
                // Header keys are strings to every Kafka client (Java decodes them as
                // UTF-8, replacing invalid sequences); stored the same way.
                self.header_key
                    .append_value(String::from_utf8_lossy(&hd.key));
                self.header_value.append_option(hd.value.as_deref());
                self.bytes += hd.key.len() + hd.value.as_ref().map_or(0, |v| v.len());
            }
            let last = *self.header_offsets.last().unwrap_or(&0);
            self.header_offsets.push(last + r.headers.len() as i32);
            self.b_offset.push(h.base_offset);
            self.b_attributes.push(h.attributes);
            self.b_base_timestamp.push(h.base_timestamp);
            self.b_max_timestamp.push(h.max_timestamp);
            self.b_leader_epoch.push(h.partition_leader_epoch);
            self.b_producer_id.push(h.producer_id);
            self.b_producer_epoch.push(h.producer_epoch);
            self.b_base_sequence.push(h.base_sequence);
            self.bytes += 40
                + r.key.as_ref().map_or(0, |k| k.len())
                + r.value.as_ref().map_or(0, |v| v.len());
        }
    }

    fn take(&mut self) -> Result<RecordBatch, SegmentError> {
        let mut rows = std::mem::take(self);
        let header_offsets = if rows.header_offsets.is_empty() {
            vec![0]
        } else {
            std::mem::take(&mut rows.header_offsets)
        };
        let headers_struct = StructArray::try_new(
            header_fields(),
            vec![
                Arc::new(rows.header_key.finish()) as ArrayRef,
                Arc::new(rows.header_value.finish()),
            ],
            None,
        )?;
        let headers = ListArray::try_new(
            headers_item(),
            OffsetBuffer::new(ScalarBuffer::from(header_offsets)),
            Arc::new(headers_struct),
            None,
        )?;
        let batch = StructArray::try_new(
            batch_fields(),
            vec![
                Arc::new(Int64Array::from(rows.b_offset)) as ArrayRef,
                Arc::new(Int16Array::from(rows.b_attributes)),
                Arc::new(Int64Array::from(rows.b_base_timestamp)),
                Arc::new(Int64Array::from(rows.b_max_timestamp)),
                Arc::new(Int32Array::from(rows.b_leader_epoch)),
                Arc::new(Int64Array::from(rows.b_producer_id)),
                Arc::new(Int16Array::from(rows.b_producer_epoch)),
                Arc::new(Int32Array::from(rows.b_base_sequence)),
            ],
            None,
        )?;
        Ok(RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int64Array::from(rows.offset)),
                Arc::new(TimestampMillisecondArray::from(rows.timestamp).with_timezone("UTC")),
                Arc::new(Int8Array::from(rows.timestamp_type)),
                Arc::new(rows.key.finish()),
                Arc::new(rows.value.finish()),
                Arc::new(headers),
                Arc::new(batch),
            ],
        )?)
    }
}

/// What a finished segment holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentSummary {
    pub records: u64,
    pub row_groups: usize,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    /// Bytes of record data (keys, values, headers) before encoding.
    pub data_bytes: u64,
    /// Size of the Parquet file.
    pub size: u64,
}

/// Writes one segment: batches in offset order, a row group cut at the first batch
/// boundary past the configured size. Each row group is encoded (Parquet pages, zstd: tens
/// of milliseconds of CPU) on the background thread ([`crate::background`]), not on the
/// async worker that called, so that a gateway's requests (in `sluice serve`) neither queue
/// behind it nor wait for the CPU.
pub struct SegmentWriter<W: AsyncFileWriter> {
    /// The encoder, writing into its own buffer; `None` only while it is on the background
    /// thread (or after a failure there).
    encoder: Option<ArrowWriter<Vec<u8>>>,
    sink: W,
    rows: Rows,
    options: SegmentOptions,
    summary: SegmentSummary,
}

impl<W: AsyncFileWriter> SegmentWriter<W> {
    pub fn new(
        sink: W,
        options: SegmentOptions,
        metadata: Vec<(String, String)>,
    ) -> Result<Self, SegmentError> {
        let mut kv = vec![KeyValue::new(
            VERSION_KEY.to_string(),
            SEGMENT_VERSION.to_string(),
        )];
        kv.extend(metadata.into_iter().map(|(k, v)| KeyValue::new(k, v)));
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(options.zstd_level).map_err(SegmentError::Parquet)?,
            ))
            // Row groups are cut here, at batch boundaries, not by the writer.
            .set_max_row_group_row_count(None)
            .set_max_row_group_bytes(None)
            // Values rarely repeat; a dictionary would be built only to be dropped.
            .set_column_dictionary_enabled(ColumnPath::from("value"), false)
            .set_key_value_metadata(Some(kv))
            .build();
        let encoder = ArrowWriter::try_new(Vec::new(), schema(), Some(props))?;
        Ok(Self {
            encoder: Some(encoder),
            sink,
            rows: Rows::default(),
            options,
            summary: SegmentSummary {
                min_timestamp: i64::MAX,
                max_timestamp: i64::MIN,
                ..Default::default()
            },
        })
    }

    /// Appends one batch (its header's base offset is the batch's offset in the log).
    pub async fn append(
        &mut self,
        header: &BatchHeader,
        records: &[Record],
    ) -> Result<(), SegmentError> {
        let before = self.rows.bytes;
        let first_row = self.rows.timestamp.len();
        self.rows.push_batch(header, records);
        for &t in &self.rows.timestamp[first_row..] {
            self.summary.min_timestamp = self.summary.min_timestamp.min(t);
            self.summary.max_timestamp = self.summary.max_timestamp.max(t);
        }
        self.summary.records += records.len() as u64;
        self.summary.data_bytes += (self.rows.bytes - before) as u64;
        if self.rows.bytes >= self.options.row_group_bytes {
            self.end_row_group().await?;
        }
        Ok(())
    }

    /// Runs `f` on the encoder on a blocking thread, then hands what it wrote to the sink.
    async fn encode<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut ArrowWriter<Vec<u8>>) -> parquet::errors::Result<T> + Send + 'static,
    ) -> Result<T, SegmentError> {
        let mut encoder = self
            .encoder
            .take()
            .ok_or_else(|| SegmentError::Task("an earlier encoding failed".into()))?;
        let (mut encoder, result) = crate::background::run(move || {
            let r = f(&mut encoder);
            (encoder, r)
        })
        .await
        .map_err(|e| SegmentError::Task(e.to_string()))?;
        let value = result?;
        let encoded = std::mem::take(encoder.inner_mut());
        self.encoder = Some(encoder);
        if !encoded.is_empty() {
            self.sink.write(Bytes::from(encoded)).await?;
        }
        Ok(value)
    }

    async fn end_row_group(&mut self) -> Result<(), SegmentError> {
        if self.rows.offset.is_empty() {
            return Ok(());
        }
        let batch = self.rows.take()?;
        self.encode(move |e| {
            e.write(&batch)?;
            e.flush()
        })
        .await?;
        self.summary.row_groups += 1;
        Ok(())
    }

    /// Records appended so far.
    pub fn records(&self) -> u64 {
        self.summary.records
    }

    /// Writes the footer and closes the sink.
    pub async fn finish(mut self) -> Result<SegmentSummary, SegmentError> {
        self.end_row_group().await?;
        self.encode(|e| e.finish().map(|_| ())).await?;
        self.sink.complete().await?;
        self.summary.size = self.encoder.as_ref().map_or(0, |e| e.bytes_written()) as u64;
        Ok(self.summary)
    }
}

/// One row group as a fetch sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowGroupSpan {
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    /// Bytes of the file holding the row group's column chunks.
    pub range: Range<u64>,
}

/// A segment's footer, parsed: what a fetch needs to find offsets.
#[derive(Debug, Clone)]
pub struct SegmentIndex {
    pub metadata: Arc<ParquetMetaData>,
    pub row_groups: Vec<RowGroupSpan>,
}

impl SegmentIndex {
    /// The row group holding `offset`, or the first one after it.
    pub fn row_group_for(&self, offset: i64) -> Option<usize> {
        let i = self.row_groups.partition_point(|r| r.last_offset < offset);
        (i < self.row_groups.len()).then_some(i)
    }
}

/// The length of the footer metadata, from the file's last [`FOOTER_TAIL`] bytes.
pub fn footer_length(tail: &[u8]) -> Result<usize, SegmentError> {
    Ok(FooterTail::try_from(tail)?.metadata_length())
}

fn int_stats(s: Option<&Statistics>) -> Option<(i64, i64)> {
    match s? {
        Statistics::Int64(v) => Some((*v.min_opt()?, *v.max_opt()?)),
        _ => None,
    }
}

/// Parses a segment's footer metadata (the `footer_length` bytes before the tail).
pub fn parse_footer(metadata: &[u8]) -> Result<SegmentIndex, SegmentError> {
    let metadata = ParquetMetaDataReader::decode_metadata(metadata)?;
    let version = metadata
        .file_metadata()
        .key_value_metadata()
        .and_then(|kv| kv.iter().find(|k| k.key == VERSION_KEY))
        .and_then(|k| k.value.as_deref())
        .and_then(|v| v.parse::<u32>().ok());
    if version != Some(SEGMENT_VERSION) {
        return Err(SegmentError::Invalid(format!(
            "segment version {version:?}; this build reads version {SEGMENT_VERSION}"
        )));
    }
    let mut row_groups = Vec::with_capacity(metadata.num_row_groups());
    for rg in metadata.row_groups() {
        let offsets = int_stats(rg.column(0).statistics());
        let times = int_stats(rg.column(1).statistics());
        let (Some((first, last)), Some((_, max_ts))) = (offsets, times) else {
            return Err(SegmentError::Invalid(
                "row group without offset or timestamp statistics".into(),
            ));
        };
        let start = rg
            .columns()
            .iter()
            .map(|c| c.byte_range().0)
            .min()
            .unwrap_or(0);
        let end = rg
            .columns()
            .iter()
            .map(|c| c.byte_range().0 + c.byte_range().1)
            .max()
            .unwrap_or(0);
        row_groups.push(RowGroupSpan {
            first_offset: first,
            last_offset: last,
            max_timestamp: max_ts,
            range: start..end,
        });
    }
    Ok(SegmentIndex {
        metadata: Arc::new(metadata),
        row_groups,
    })
}

/// The parsed footer of a whole segment file held in memory.
pub fn index_of(file: &[u8]) -> Result<SegmentIndex, SegmentError> {
    let too_small =
        || SegmentError::Invalid(format!("{} bytes are too few for Parquet", file.len()));
    let end = file.len().checked_sub(FOOTER_TAIL).ok_or_else(too_small)?;
    let len = footer_length(&file[end..])?;
    let start = end
        .checked_sub(len)
        .filter(|s| *s >= 4)
        .ok_or_else(too_small)?;
    parse_footer(&file[start..end])
}

/// A window of a file: the bytes of `range` only, enough to decode one row group.
struct Window {
    start: u64,
    bytes: Bytes,
    file_len: u64,
}

impl Length for Window {
    fn len(&self) -> u64 {
        self.file_len
    }
}

impl ChunkReader for Window {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(self
            .get_bytes(
                start,
                (self.start + self.bytes.len() as u64 - start) as usize,
            )?
            .reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let from = start
            .checked_sub(self.start)
            .map(|f| f as usize)
            .filter(|f| f + length <= self.bytes.len())
            .ok_or_else(|| {
                parquet::errors::ParquetError::General(format!(
                    "read of {length} bytes at {start} outside the fetched range"
                ))
            })?;
        Ok(self.bytes.slice(from..from + length))
    }
}

/// One rebuilt batch: its header (base offset = the batch's offset in the log) and records.
pub type SegmentBatch = (BatchHeader, Vec<Record>);

/// Decodes row group `i` from the bytes of its range and rebuilds its record batches.
pub fn read_row_group(
    index: &SegmentIndex,
    i: usize,
    bytes: Bytes,
    file_len: u64,
) -> Result<Vec<SegmentBatch>, SegmentError> {
    let span = index
        .row_groups
        .get(i)
        .ok_or_else(|| SegmentError::Invalid(format!("no row group {i}")))?;
    let window = Window {
        start: span.range.start,
        bytes,
        file_len,
    };
    let meta = ArrowReaderMetadata::try_new(index.metadata.clone(), ArrowReaderOptions::new())?;
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(window, meta)
        .with_row_groups(vec![i])
        .with_batch_size(64 * 1024)
        .build()?;
    let mut out: Vec<SegmentBatch> = Vec::new();
    for rb in reader {
        rebuild(&rb?, &mut out)?;
    }
    Ok(out)
}

fn column<'a>(rb: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef, SegmentError> {
    rb.column_by_name(name)
        .ok_or_else(|| SegmentError::Invalid(format!("no column {name}")))
}

/// The values of a binary or string column as one shared buffer, so each value is a slice
/// of it rather than a copy.
struct Values {
    data: Bytes,
    offsets: arrow_buffer::OffsetBuffer<i32>,
    nulls: Option<arrow_buffer::NullBuffer>,
}

impl Values {
    fn of_binary(a: &arrow_array::BinaryArray) -> Self {
        Self {
            data: Bytes::from_owner(a.values().clone()),
            offsets: a.offsets().clone(),
            nulls: a.nulls().cloned(),
        }
    }

    fn of_string(a: &arrow_array::StringArray) -> Self {
        Self {
            data: Bytes::from_owner(a.values().clone()),
            offsets: a.offsets().clone(),
            nulls: a.nulls().cloned(),
        }
    }

    fn get(&self, i: usize) -> Option<Bytes> {
        if self.nulls.as_ref().is_some_and(|n| n.is_null(i)) {
            return None;
        }
        let (from, to) = (self.offsets[i] as usize, self.offsets[i + 1] as usize);
        Some(self.data.slice(from..to))
    }
}

/// Turns rows back into batches, appending to `out` (a batch may continue from the
/// previous Arrow batch of the same row group).
fn rebuild(rb: &RecordBatch, out: &mut Vec<SegmentBatch>) -> Result<(), SegmentError> {
    let offset = column(rb, "offset")?.as_primitive::<Int64Type>();
    let timestamp = column(rb, "timestamp")?.as_primitive::<TimestampMillisecondType>();
    let _ = column(rb, "timestamp_type")?.as_primitive::<Int8Type>();
    let key = Values::of_binary(column(rb, "key")?.as_binary::<i32>());
    let value = Values::of_binary(column(rb, "value")?.as_binary::<i32>());
    let headers = column(rb, "headers")?.as_list::<i32>();
    let header_values = headers.values().as_struct();
    let hkey = Values::of_string(header_values.column(0).as_string::<i32>());
    let hvalue = Values::of_binary(header_values.column(1).as_binary::<i32>());
    let batch = column(rb, "batch")?.as_struct();
    let b_offset = batch.column(0).as_primitive::<Int64Type>();
    let b_attributes = batch.column(1).as_primitive::<Int16Type>();
    let b_base_ts = batch.column(2).as_primitive::<Int64Type>();
    let b_max_ts = batch.column(3).as_primitive::<Int64Type>();
    let b_epoch = batch.column(4).as_primitive::<Int32Type>();
    let b_pid = batch.column(5).as_primitive::<Int64Type>();
    let b_pepoch = batch.column(6).as_primitive::<Int16Type>();
    let b_seq = batch.column(7).as_primitive::<Int32Type>();
    let list_offsets = headers.value_offsets();
    for i in 0..rb.num_rows() {
        let h = BatchHeader {
            base_offset: b_offset.value(i),
            partition_leader_epoch: b_epoch.value(i),
            attributes: b_attributes.value(i),
            base_timestamp: b_base_ts.value(i),
            max_timestamp: b_max_ts.value(i),
            producer_id: b_pid.value(i),
            producer_epoch: b_pepoch.value(i),
            base_sequence: b_seq.value(i),
        };
        let log_append = h.attributes & TIMESTAMP_TYPE_MASK != 0;
        let offset_delta = i32::try_from(offset.value(i) - h.base_offset)
            .map_err(|_| SegmentError::Invalid("record offset far from its batch".into()))?;
        let (from, to) = (list_offsets[i] as usize, list_offsets[i + 1] as usize);
        let record = Record {
            attributes: 0,
            timestamp_delta: if log_append {
                0
            } else {
                timestamp.value(i).wrapping_sub(h.base_timestamp)
            },
            offset_delta,
            key: key.get(i),
            value: value.get(i),
            headers: (from..to)
                .map(|j| Header {
                    key: hkey.get(j).unwrap_or_default(),
                    value: hvalue.get(j),
                })
                .collect(),
        };
        match out.last_mut() {
            Some((last, records)) if *last == h => records.push(record),
            _ => out.push((h, vec![record])),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
