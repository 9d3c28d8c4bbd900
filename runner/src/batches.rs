//! Batches: jobs enqueued into an open batch ([`crate::Enqueue::batch`]); once it is closed
//! and every job of it has ended, its callback job is enqueued once, with the counts and the
//! failures in its args' `batch`. They live in the database (not in `Soniq::in_memory()`).

use crate::error::Result;
use crate::store::postgres::batches as store;
use crate::Soniq;
use serde_json::Value;
use std::time::SystemTime;
use uuid::Uuid;

/// A batch as `soniq.batch_status` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchStatus {
    pub id: Uuid,
    pub callback_task: String,
    /// Jobs enqueued into it.
    pub jobs: i32,
    /// Of those, not ended yet.
    pub pending: i32,
    pub done: i32,
    pub dead: i32,
    /// Cancelled, or deleted.
    pub cancelled: i32,
    /// The first 1,000 dead or cancelled jobs.
    pub failed_ids: Vec<Uuid>,
    pub created_at: SystemTime,
    /// No more jobs join it.
    pub closed_at: Option<SystemTime>,
    /// Its callback was enqueued.
    pub finished_at: Option<SystemTime>,
    pub callback_job_id: Option<Uuid>,
}

impl Soniq {
    /// Open a batch whose callback is a job of `callback_task` with `callback_args` (a JSON
    /// object; the callback's args are these plus `batch`: its id and counts), in `queue`
    /// (`None`: the task's). Returns the batch's id, for [`crate::Enqueue::batch`].
    pub async fn open_batch(
        &self,
        callback_task: &str,
        callback_args: &Value,
        queue: Option<&str>,
    ) -> Result<Uuid> {
        store::open(
            &**self.connection().await?,
            callback_task,
            callback_args,
            queue,
        )
        .await
    }

    /// No more jobs join the batch; if all have ended already, its callback is enqueued now.
    /// False when it was closed already.
    pub async fn close_batch(&self, batch_id: Uuid) -> Result<bool> {
        store::close(&**self.connection().await?, batch_id).await
    }

    /// A batch of this login; `None` when unknown (or another login's, or pruned).
    pub async fn batch_status(&self, batch_id: Uuid) -> Result<Option<BatchStatus>> {
        store::status(&**self.connection().await?, batch_id).await
    }
}
