//! Maintenance (every `SONIQ_CLEANUP_INTERVAL`): the control plane's rescue and pruning,
//! done from the worker too, so they happen where no control plane serves the database (the
//! rounds lock with SKIP LOCKED, so running both is harmless).

use crate::error::Result;
use crate::store::Store;
use std::time::Duration;

/// Finished jobs deleted per pruning transaction, and transactions per maintenance round.
const PRUNE_BATCH_SIZE: i32 = 1000;
const PRUNE_BATCHES_PER_ROUND: usize = 10;

pub(crate) async fn round(store: &dyn Store, heartbeat_timeout: Duration) {
    let result = async {
        store.maintenance_rescue(heartbeat_timeout).await?;
        // As the control plane prunes: one batch a transaction, so a backlog of finished jobs
        // never becomes one long transaction, at most PRUNE_BATCHES_PER_ROUND a round.
        for _ in 0..PRUNE_BATCHES_PER_ROUND {
            if store.maintenance_prune(PRUNE_BATCH_SIZE).await? < i64::from(PRUNE_BATCH_SIZE) {
                break;
            }
        }
        Ok::<_, crate::Error>(())
    };
    let result: Result<()> = result.await;
    if let Err(e) = result {
        tracing::warn!("maintenance round failed: {e}");
    }
}
