//! Object store metrics: request counts, errors, latency and bytes by operation.
//! The wrapper [`MeteredStore`] records them around any `ObjectStore`.

use std::ops::Range;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use prometheus::{HistogramVec, IntCounterVec, register_histogram_vec, register_int_counter_vec};

pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_object_store_requests_total",
        "Object store requests by operation (put, get, delete, list, copy)",
        &["op"]
    )
    .expect("invariant: metric registered once")
});

pub static ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_object_store_errors_total",
        "Object store requests that failed, by operation",
        &["op"]
    )
    .expect("invariant: metric registered once")
});

pub static LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    register_histogram_vec!(
        "sluice_object_store_request_seconds",
        "Object store request latency by operation",
        &["op"],
        vec![
            0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0065, 0.008, 0.01, 0.0125, 0.015,
            0.02, 0.025, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0
        ]
    )
    .expect("invariant: metric registered once")
});

pub static BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register_int_counter_vec!(
        "sluice_object_store_bytes_total",
        "Bytes written (put) and read (get) through the object store",
        &["op"]
    )
    .expect("invariant: metric registered once")
});

fn observe<T>(op: &str, start: Instant, r: &Result<T>) {
    REQUESTS.with_label_values(&[op]).inc();
    LATENCY
        .with_label_values(&[op])
        .observe(start.elapsed().as_secs_f64());
    if r.is_err() {
        ERRORS.with_label_values(&[op]).inc();
    }
}

/// Records metrics for every request made through it.
#[derive(Debug)]
pub struct MeteredStore {
    inner: Arc<dyn ObjectStore>,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self { inner }
    }
}

impl std::fmt::Display for MeteredStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Metered({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for MeteredStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let start = Instant::now();
        let len = payload.content_length() as u64;
        let r = self.inner.put_opts(location, payload, opts).await;
        observe("put", start, &r);
        if r.is_ok() {
            BYTES.with_label_values(&["put"]).inc_by(len);
        }
        r
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let start = Instant::now();
        let r = self.inner.put_multipart_opts(location, opts).await;
        observe("put_multipart", start, &r);
        r
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let start = Instant::now();
        let r = self.inner.get_opts(location, options).await;
        observe("get", start, &r);
        if let Ok(g) = &r {
            BYTES
                .with_label_values(&["get"])
                .inc_by(g.range.end - g.range.start);
        }
        r
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let start = Instant::now();
        let r = self.inner.get_ranges(location, ranges).await;
        observe("get", start, &r);
        if let Ok(v) = &r {
            BYTES
                .with_label_values(&["get"])
                .inc_by(v.iter().map(|b| b.len() as u64).sum());
        }
        r
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        REQUESTS.with_label_values(&["delete"]).inc();
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        REQUESTS.with_label_values(&["list"]).inc();
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let start = Instant::now();
        let r = self.inner.list_with_delimiter(prefix).await;
        observe("list", start, &r);
        r
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        let start = Instant::now();
        let r = self.inner.copy_opts(from, to, options).await;
        observe("copy", start, &r);
        r
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        let start = Instant::now();
        let r = self.inner.rename_opts(from, to, options).await;
        observe("rename", start, &r);
        r
    }
}
