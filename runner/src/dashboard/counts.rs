//! The queues' counts, read once per interval however many pages ask: counting reads the
//! whole jobs table, which a page load must not do at a million rows. Pages say when the
//! counts were taken.

use crate::store::postgres::admin::{self, QueueCounts};
use crate::Soniq;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

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

/// Count now, then every `interval`, until the receivers are gone.
pub fn keep_counting(app: Arc<Soniq>, interval: Duration) -> watch::Receiver<Counts> {
    let (counts, receiver) = watch::channel(Counts::default());
    tokio::spawn(async move {
        loop {
            let began = Instant::now();
            let counted = count(&app).await;
            let took = began.elapsed();
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
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = counts.closed() => return,
            }
        }
    });
    receiver
}

async fn count(app: &Soniq) -> crate::Result<Vec<QueueCounts>> {
    let client = app.connection().await?;
    admin::queue_counts(&**client).await
}
