//! Fault injection for tests: a wrapper that fails or delays PUTs on demand.
//!
//! Only used when a test (or `sluice serve --fault-injection`, a hidden flag for the
//! end-to-end suite) asks for it; a production process never builds this wrapper.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// What the wrapper does to PUTs right now. Shared with whoever controls the faults.
#[derive(Debug, Default)]
pub struct Faults {
    /// Fail this many upcoming PUTs.
    fail_next_puts: AtomicU64,
    /// Fail every PUT until cleared.
    fail_all_puts: AtomicBool,
    /// Delay every PUT by this many milliseconds.
    put_delay_ms: AtomicU64,
    /// PUTs failed so far.
    injected: AtomicU64,
}

impl Faults {
    pub fn fail_next_puts(&self, n: u64) {
        self.fail_next_puts.store(n, Ordering::SeqCst);
    }
    pub fn fail_all_puts(&self, on: bool) {
        self.fail_all_puts.store(on, Ordering::SeqCst);
    }
    pub fn delay_puts(&self, d: Duration) {
        self.put_delay_ms
            .store(d.as_millis() as u64, Ordering::SeqCst);
    }
    pub fn clear(&self) {
        self.fail_next_puts(0);
        self.fail_all_puts(false);
        self.delay_puts(Duration::ZERO);
    }
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::SeqCst)
    }

    fn should_fail(&self) -> bool {
        if self.fail_all_puts.load(Ordering::SeqCst) {
            return true;
        }
        self.fail_next_puts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    faults: Arc<Faults>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>, faults: Arc<Faults>) -> Self {
        Self { inner, faults }
    }
}

impl std::fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let delay = self.faults.put_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if self.faults.should_fail() {
            self.faults.injected.fetch_add(1, Ordering::SeqCst);
            return Err(object_store::Error::Generic {
                store: "faulty",
                source: "injected PUT failure".into(),
            });
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn fails_exactly_the_requested_puts() {
        let faults = Arc::new(Faults::default());
        let s = FaultyStore::new(Arc::new(InMemory::new()), faults.clone());
        let p = Path::from("x");
        faults.fail_next_puts(2);
        assert!(s.put(&p, Bytes::from_static(b"1").into()).await.is_err());
        assert!(s.put(&p, Bytes::from_static(b"1").into()).await.is_err());
        assert!(s.put(&p, Bytes::from_static(b"1").into()).await.is_ok());
        faults.fail_all_puts(true);
        assert!(s.put(&p, Bytes::from_static(b"1").into()).await.is_err());
        faults.clear();
        assert!(s.put(&p, Bytes::from_static(b"1").into()).await.is_ok());
        assert_eq!(faults.injected(), 3);
    }
}
