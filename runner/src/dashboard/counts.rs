//! The queues' counts, read once per interval however many pages ask: counting reads the
//! whole jobs table, which a page load must not do at a million rows. Pages say when the
//! counts were taken. A new job (`LISTEN soniq_new_job`) brings the next count forward; but no
//! count, early or on time, follows the last closer than twenty times what that one took (and
//! a second), so counting stays within a twentieth of one core however big the table and busy
//! the queues (a count uses one core: no parallel workers).

use crate::store::postgres::admin::{self, QueueCounts};
use crate::Soniq;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{watch, Notify};
use tokio::time::sleep_until;

/// The shortest time between two counts, whatever wakes them.
const MIN_COUNT_GAP: Duration = Duration::from_secs(1);
/// A count follows the last at the earliest this many times what the last one took.
const COUNT_COST_FACTOR: u32 = 20;

/// One count of every queue.
pub struct Counted {
    pub at: SystemTime,
    pub took: Duration,
    pub queues: Vec<QueueCounts>,
}

/// The latest count, and the error of the last try if it failed (the count before stays).
#[derive(Clone, Default)]
pub struct Counts {
    pub latest: Option<Arc<Counted>>,
    pub error: Option<String>,
}

/// Count now, then every `interval` (sooner after a new job, later when counting is slow),
/// until the receivers are gone.
pub fn keep_counting(app: Arc<Soniq>, interval: Duration) -> watch::Receiver<Counts> {
    let (counts, receiver) = watch::channel(Counts::default());
    tokio::spawn(async move {
        let new_job = Arc::new(Notify::new());
        // The listener ends when this task does (its stop sender is dropped with it).
        let (_stop, stop) = watch::channel(false);
        if let Some(listen) = app.listen.clone() {
            let retry_delay = app.settings.error_retry_delay();
            tokio::spawn(crate::worker::listener::run(
                listen,
                Arc::clone(&new_job),
                retry_delay,
                stop,
            ));
        }
        loop {
            let began = Instant::now();
            let counted = count(&app).await;
            let took = began.elapsed();
            let earliest = began + MIN_COUNT_GAP.max(took * COUNT_COST_FACTOR);
            counts.send_modify(|counts| match counted {
                Ok(queues) => {
                    *counts = Counts {
                        latest: Some(Arc::new(Counted {
                            at: SystemTime::now(),
                            took,
                            queues,
                        })),
                        error: None,
                    }
                }
                Err(e) => counts.error = Some(e.to_string()),
            });
            // A count that takes long waits longer: counting stays within a twentieth of one
            // core at any interval.
            let due = (Instant::now() + interval).max(earliest);
            tokio::select! {
                _ = sleep_until(due.into()) => {}
                _ = async {
                    new_job.notified().await;
                    sleep_until(earliest.into()).await;
                } => {}
                _ = counts.closed() => return,
            }
        }
    });
    receiver
}

/// One count, in a transaction of its own that may not use parallel workers: a parallel
/// scan of a big jobs table would take every core from the workers for its while.
async fn count(app: &Soniq) -> crate::Result<Vec<QueueCounts>> {
    let mut client = app.connection().await?;
    let transaction = client.transaction().await?;
    transaction
        .batch_execute("SET LOCAL max_parallel_workers_per_gather = 0")
        .await?;
    let counted = admin::queue_counts(&*transaction).await?;
    transaction.commit().await?;
    Ok(counted)
}
