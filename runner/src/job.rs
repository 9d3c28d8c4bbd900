//! What a handler sees (the job's context) and what it returns (an outcome).

use crate::error::Error;
use crate::jobs::DependencyResult;
use crate::store::{Lease, Store};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use uuid::Uuid;

/// The largest result the database stores: 1 MiB of JSON text. A bigger one fails the
/// attempt instead (store the payload elsewhere, return a reference).
pub const MAX_RESULT_BYTES: usize = 1 << 20;
/// The most of an error (or a cancel or snooze reason) that is sent: the first 8192 bytes,
/// cut at a character boundary (the database keeps 8192 characters, refuses over 64 KiB).
pub const MAX_ERROR_BYTES: usize = 8192;
/// The longest snooze the database takes; a longer one is shortened to it (and logged).
pub const MAX_SNOOZE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Runtime metadata of the attempt a handler is running.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub job_id: Uuid,
    /// The task name.
    pub task_name: String,
    /// This attempt's number, from 1.
    pub attempt: i32,
    /// Total attempts allowed (retries + 1).
    pub max_attempts: i32,
    pub queue: String,
    /// The worker running the attempt (the lease holder).
    pub worker_id: Uuid,
    /// When the job was scheduled to run, if it was delayed.
    pub scheduled_at: Option<SystemTime>,
    pub created_at: SystemTime,
    /// The attempt's time limit, if any.
    pub timeout: Option<Duration>,
    /// Where the attempt reads the jobs it depends on (none: a context made outside a worker).
    pub(crate) store: StoreHandle,
}

/// The store a worker's attempt came from.
#[derive(Clone, Default)]
pub(crate) struct StoreHandle(pub(crate) Option<Arc<dyn Store>>);

impl fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "StoreHandle"
        } else {
            "None"
        })
    }
}

impl JobContext {
    fn lease(&self) -> Lease {
        Lease {
            job_id: self.job_id,
            attempt: self.attempt,
        }
    }

    /// The store the attempt came from; an error for a context made outside a worker.
    fn attempt_store(&self) -> crate::Result<&Arc<dyn Store>> {
        self.store.0.as_ref().ok_or_else(|| {
            Error::Invalid(format!(
                "job {}: this context belongs to no running attempt (made outside a worker)",
                self.job_id
            ))
        })
    }

    /// Report how far the attempt is (any JSON value of at most 64 KiB: a count, a
    /// percentage, a phase), shown by `get_job`, `list_jobs` and `soniq inspect`. Kept at most
    /// once a second per job: returns false when this report came sooner and was dropped
    /// (report often; the store keeps one a second).
    pub async fn report_progress(&self, progress: impl Serialize) -> crate::Result<bool> {
        let value = serde_json::to_value(progress)
            .map_err(|e| Error::Invalid(format!("progress does not serialize: {e}")))?;
        self.attempt_store()?
            .job_progress(self.worker_id, self.lease(), &value)
            .await
    }

    /// Save what the job's next attempt resumes from (at most 1 MiB of JSON; `None`, JSON
    /// null, clears it), after a failure, a timeout or a crash of this worker. Refused (55000)
    /// once the lease is gone, so a late write never overwrites what a later attempt saved.
    pub async fn save_checkpoint(&self, checkpoint: impl Serialize) -> crate::Result<()> {
        let value = serde_json::to_value(checkpoint)
            .map_err(|e| Error::Invalid(format!("the checkpoint does not serialize: {e}")))?;
        self.attempt_store()?
            .job_checkpoint_save(self.worker_id, self.lease(), &value)
            .await
    }

    /// The checkpoint an earlier attempt (or this one) saved, as `T`; `None` if none.
    pub async fn checkpoint<T: DeserializeOwned>(&self) -> crate::Result<Option<T>> {
        let saved = self
            .attempt_store()?
            .job_checkpoint_read(self.worker_id, self.lease())
            .await?;
        saved
            .filter(|value| !value.is_null())
            .map(|value| {
                serde_json::from_value(value).map_err(|e| {
                    Error::Invalid(format!(
                        "the checkpoint of job {} does not fit the type: {e}",
                        self.job_id
                    ))
                })
            })
            .transpose()
    }

    /// The jobs this job depends on (`Enqueue::depends_on`), in the order it named them, with
    /// their state and result: read through this attempt's lease (an error once the lease is
    /// gone). Empty for a job that depends on none, and for a context made outside a worker.
    pub async fn dependency_results(&self) -> crate::Result<Vec<DependencyResult>> {
        match &self.store.0 {
            Some(store) => {
                store
                    .job_dependency_results(self.worker_id, self.lease())
                    .await
            }
            None => Ok(Vec::new()),
        }
    }
}

/// How an attempt ended, as the handler decides.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Success, with an optional result kept for the task's result TTL.
    Done(Option<Value>),
    /// A failure: retried per the job's retry policy (or after `after`) while attempts remain.
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// Not now: run again after the delay (at most [`MAX_SNOOZE`]), without using up an
    /// attempt. The job's last error becomes `snoozed: <reason>`, or `snoozed`.
    Snooze {
        delay: Duration,
        reason: Option<String>,
    },
    /// Stop: the job ends cancelled.
    Cancel(String),
    /// Give up: straight to the dead letter (reason `permanent_failure`).
    Discard(String),
}

impl Outcome {
    pub fn done() -> Self {
        Outcome::Done(None)
    }

    /// Success with a result (serialised to JSON; a value that cannot be is an error).
    pub fn done_with(result: impl Serialize) -> Result<Self, JobError> {
        serde_json::to_value(result)
            .map(|v| Outcome::Done(Some(v)))
            .map_err(JobError::from)
    }

    pub fn retry(error: impl Into<String>) -> Self {
        Outcome::Retry {
            error: error.into(),
            after: None,
        }
    }

    pub fn retry_after(error: impl Into<String>, delay: Duration) -> Self {
        Outcome::Retry {
            error: error.into(),
            after: Some(delay),
        }
    }

    pub fn snooze(delay: Duration) -> Self {
        Outcome::Snooze {
            delay,
            reason: None,
        }
    }

    /// A snooze that says why (`snoozed: rate limited` in the job's last error).
    pub fn snooze_because(delay: Duration, reason: impl Into<String>) -> Self {
        Outcome::Snooze {
            delay,
            reason: Some(reason.into()),
        }
    }

    pub fn cancel(reason: impl Into<String>) -> Self {
        Outcome::Cancel(reason.into())
    }

    pub fn discard(reason: impl Into<String>) -> Self {
        Outcome::Discard(reason.into())
    }
}

/// An error a handler returns with `?`: the attempt failed and is retried while attempts
/// remain. Any `std::error::Error` converts into it.
#[derive(Debug)]
pub struct JobError(String);

impl JobError {
    pub fn new(message: impl Into<String>) -> Self {
        JobError(message.into())
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for JobError {
    fn from(e: E) -> Self {
        JobError(e.to_string())
    }
}

/// What a handler returns.
pub type JobResult = Result<Outcome, JobError>;

/// What a custom retry policy decides for a failed attempt (an error or a panic).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// The task's own policy (its retry delays) decides.
    Default,
    /// Retry after this delay (while attempts remain).
    After(Duration),
    /// No retry: straight to the dead letter (reason `permanent_failure`).
    GiveUp,
}

/// A custom retry policy: sees the attempt and its error, decides the retry.
pub type RetryPolicy = std::sync::Arc<dyn Fn(&JobContext, &str) -> RetryDecision + Send + Sync>;
