//! Opening an object store from a URL: `file://PATH`, `memory://`, `s3://BUCKET/PREFIX`.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::prefix::PrefixStore;

use crate::metrics::MeteredStore;

/// A parsed `--object-store` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectStoreUrl {
    File(std::path::PathBuf),
    Memory,
    S3 { bucket: String, prefix: String },
}

impl std::fmt::Display for ObjectStoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "file://{}", path.display()),
            Self::Memory => f.write_str("memory://"),
            Self::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("unsupported object store URL {0:?}: use file://PATH, memory:// or s3://BUCKET/PREFIX")]
    BadUrl(String),
    #[error("cannot open the object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("cannot create the object store directory: {0}")]
    Io(#[from] std::io::Error),
}

impl std::str::FromStr for ObjectStoreUrl {
    type Err = OpenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("file://") {
            if path.is_empty() {
                return Err(OpenError::BadUrl(s.into()));
            }
            return Ok(Self::File(path.into()));
        }
        if s == "memory://" || s == "memory" {
            return Ok(Self::Memory);
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(OpenError::BadUrl(s.into()));
            }
            return Ok(Self::S3 {
                bucket: bucket.into(),
                prefix: prefix.trim_matches('/').into(),
            });
        }
        Err(OpenError::BadUrl(s.into()))
    }
}

/// Opens the store with metrics. S3 credentials, region and endpoint come from the
/// standard AWS environment variables (`AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP=true` for
/// plain-HTTP servers, ...).
pub fn open_object_store(url: &ObjectStoreUrl) -> Result<Arc<dyn ObjectStore>, OpenError> {
    let store: Arc<dyn ObjectStore> = match url {
        ObjectStoreUrl::File(path) => {
            std::fs::create_dir_all(path)?;
            // A write is answered once durable, as on S3: the file and its directory entry
            // are fsynced before the put returns (a commit may name the object next).
            Arc::new(LocalFileSystem::new_with_prefix(path)?.with_fsync(true))
        }
        ObjectStoreUrl::Memory => Arc::new(InMemory::new()),
        ObjectStoreUrl::S3 { bucket, prefix } => {
            let s3 = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()?;
            if prefix.is_empty() {
                Arc::new(s3)
            } else {
                Arc::new(PrefixStore::new(s3, prefix.as_str()))
            }
        }
    };
    Ok(Arc::new(MeteredStore::new(store)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            "memory://".parse::<ObjectStoreUrl>().ok(),
            Some(ObjectStoreUrl::Memory)
        );
        assert_eq!(
            "file:///tmp/x".parse::<ObjectStoreUrl>().ok(),
            Some(ObjectStoreUrl::File("/tmp/x".into()))
        );
        assert_eq!(
            "s3://b/some/prefix/".parse::<ObjectStoreUrl>().ok(),
            Some(ObjectStoreUrl::S3 {
                bucket: "b".into(),
                prefix: "some/prefix".into()
            })
        );
        assert!("s3://".parse::<ObjectStoreUrl>().is_err());
        for url in ["s3://b/some/prefix", "s3://b", "memory://", "file:///tmp/x"] {
            let parsed: ObjectStoreUrl = url.parse().expect("a URL");
            assert_eq!(parsed.to_string(), url);
        }
        assert!("gs://x".parse::<ObjectStoreUrl>().is_err());
    }
}
