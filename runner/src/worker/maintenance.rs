//! Maintenance (every `SONIQ_CLEANUP_INTERVAL`): the control plane's rescue and pruning,
//! done from the worker too, so they happen where no control plane serves the database (the
//! rounds lock with SKIP LOCKED, so running both is harmless).

use super::heartbeat::LastOutage;
use crate::error::Result;
use crate::store::Store;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Finished jobs deleted per pruning transaction.
const PRUNE_BATCH_SIZE: i32 = 1000;
/// The longest silence `soniq.rescue_jobs` takes: right after an outage only a worker silent
/// that long is presumed dead.
const LONGEST_SILENCE: Duration = Duration::from_secs(30 * 24 * 3600);

/// One round: rescue, then prune a batch per transaction (so a backlog of finished jobs never
/// becomes one long transaction) while batches come back full, for at most `budget` (the time
/// until the next round) and until the worker stops: a fixed number of batches a round would
/// prune fewer jobs than a busy queue finishes.
pub(crate) async fn round(
    store: &dyn Store,
    heartbeat_timeout: Duration,
    outage: &LastOutage,
    budget: Duration,
    stop: watch::Receiver<bool>,
) {
    let silence = if outage.within(heartbeat_timeout) {
        LONGEST_SILENCE
    } else {
        heartbeat_timeout
    };
    let result = async {
        store.maintenance_rescue(silence).await?;
        let started = Instant::now();
        while store.maintenance_prune(PRUNE_BATCH_SIZE).await? >= i64::from(PRUNE_BATCH_SIZE)
            && started.elapsed() < budget
            && !*stop.borrow()
        {}
        Ok::<_, crate::Error>(())
    };
    let result: Result<()> = result.await;
    if let Err(e) = result {
        tracing::warn!("maintenance round failed: {e}");
    }
}
