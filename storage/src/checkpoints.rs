//! Checkpoints of the log state live in the object store; the metadata follower reads them
//! through this.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use sluice_metadata::follower::CheckpointReader;

pub struct ObjectCheckpoints(pub Arc<dyn ObjectStore>);

#[async_trait]
impl CheckpointReader for ObjectCheckpoints {
    async fn read(&self, path: &str) -> Result<Bytes, String> {
        let r = self
            .0
            .get(&Path::from(path))
            .await
            .map_err(|e| e.to_string())?;
        r.bytes().await.map_err(|e| e.to_string())
    }
}
