//! CPU work that should take only what the rest of the process leaves: Parquet encoding and
//! decoding for compaction. It runs on one thread of its own under Linux's `SCHED_IDLE`
//! policy, which gets the CPU only when no other thread wants it and gives way the moment
//! one does, so in `sluice serve` a produce or fetch never waits behind compaction.
//!
//! Only self-contained work goes here: a closure that holds no lock another thread could
//! wait for (a thread of this priority may be kept off the CPU for as long as the machine
//! is busy). Under sustained full load compaction therefore waits; it catches up when the
//! load drops.

use std::sync::OnceLock;
use std::sync::mpsc::{Sender, channel};

type Job = Box<dyn FnOnce() + Send>;

static WORKER: OnceLock<Option<Sender<Job>>> = OnceLock::new();

/// The work could not run: the background thread could not be started or is gone.
#[derive(Debug, thiserror::Error)]
#[error("background work did not finish: {0}")]
pub struct BackgroundError(String);

fn worker() -> Option<&'static Sender<Job>> {
    WORKER
        .get_or_init(|| {
            let (tx, rx) = channel::<Job>();
            let started = std::thread::Builder::new()
                .name("sluice-background".into())
                .spawn(move || {
                    lower_priority();
                    for job in rx {
                        job();
                    }
                });
            match started {
                Ok(_) => Some(tx),
                Err(e) => {
                    tracing::warn!(error = %e, "no background thread; compaction encodes on blocking threads");
                    None
                }
            }
        })
        .as_ref()
}

fn lower_priority() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(e) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle) {
        tracing::debug!(error = ?e, "cannot lower the background thread's priority");
    }
}

/// Runs `f` on the background thread and waits for it (on a blocking thread of the
/// caller's runtime when there is no background thread). A panic in `f` is an error here;
/// the thread goes on.
pub async fn run<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, BackgroundError> {
    let Some(worker) = worker() else {
        return tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| BackgroundError(e.to_string()));
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(out);
    });
    worker
        .send(job)
        .map_err(|_| BackgroundError("the background thread is gone".into()))?;
    match rx.await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_)) => Err(BackgroundError("it panicked".into())),
        Err(_) => Err(BackgroundError("the background thread is gone".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_the_background_thread_and_a_panic_is_an_error() {
        let name = run(|| std::thread::current().name().map(str::to_string))
            .await
            .expect("ran");
        assert_eq!(name.as_deref(), Some("sluice-background"));
        let panicked = run(|| -> u32 { panic!("boom") }).await;
        assert!(panicked.is_err());
        // The thread survives a panic.
        assert_eq!(run(|| 2 + 2).await.expect("ran again"), 4);
    }
}
