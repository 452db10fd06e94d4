//! Following a metadata prefix: every change handed over in revision order, the watch
//! started again after errors (from scratch when the revision it needs is compacted).

use std::time::Duration;

use futures::StreamExt;
use sluice_metadata::{EventKind, keys};
use tokio_util::sync::CancellationToken;

use crate::server::Ctx;

/// Hands every change under `prefix` to `apply` (the key, and whether it was a put),
/// from now on; or with `load`, which forgets what was applied, first every key there is.
/// Starts again after errors.
pub(crate) async fn follow(
    ctx: &Ctx,
    prefix: &str,
    load: Option<fn(&Ctx)>,
    cancel: &CancellationToken,
    apply: impl Fn(&Ctx, &sluice_metadata::KeyValue, bool),
) {
    let mut from = None;
    loop {
        let start = match from {
            Some(r) => r,
            None => {
                let read = if load.is_some() {
                    ctx.store.range(prefix.as_bytes(), None).await
                } else {
                    ctx.store.range(keys::CLUSTER_ID.as_bytes(), None).await
                };
                match read {
                    Ok(r) => {
                        if let Some(reset) = load {
                            reset(ctx);
                            for kv in &r.kvs {
                                apply(ctx, kv, true);
                            }
                        }
                        r.revision + 1
                    }
                    Err(e) => {
                        tracing::warn!(prefix, error = %e, "metadata watch: store unavailable");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                            _ = cancel.cancelled() => return,
                        }
                    }
                }
            }
        };
        let mut events = match ctx.store.watch(prefix.as_bytes(), start).await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(prefix, error = %e, "metadata watch failed; starting again");
                from = None;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = cancel.cancelled() => return,
                }
            }
        };
        loop {
            let event = tokio::select! {
                e = events.next() => e,
                _ = cancel.cancelled() => return,
            };
            match event {
                Some(Ok(ev)) => {
                    from = Some(ev.kv.mod_revision + 1);
                    apply(ctx, &ev.kv, ev.kind == EventKind::Put);
                }
                Some(Err(e)) => {
                    tracing::warn!(prefix, error = %e, "metadata watch broke; starting again");
                    if matches!(e, sluice_metadata::MetaError::Compacted { .. }) {
                        from = None;
                    }
                    break;
                }
                None => break,
            }
        }
    }
}
