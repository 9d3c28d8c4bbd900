//! Looking at jobs: one job (also a dead one), its result, a filtered list, queue counts.

use crate::error::{Error, Result};
use crate::store::DeadLetterReason;
use crate::Soniq;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::time::SystemTime;
use uuid::Uuid;

/// Where a job is in its life. Dead jobs live in the dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// Waiting for the jobs it depends on to be done.
    Waiting,
    Queued,
    Processing,
    Done,
    Cancelled,
    Dead,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Waiting => "waiting",
            JobStatus::Queued => "queued",
            JobStatus::Processing => "processing",
            JobStatus::Done => "done",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Dead => "dead",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "waiting" => JobStatus::Waiting,
            "queued" => JobStatus::Queued,
            "processing" => JobStatus::Processing,
            "done" => JobStatus::Done,
            "cancelled" => JobStatus::Cancelled,
            "dead" => JobStatus::Dead,
            other => return Err(Error::Invalid(format!("unknown job status {other:?}"))),
        })
    }
}

/// A job as `soniq.get_job` and `soniq.list_jobs` show it.
#[derive(Debug, Clone)]
pub struct JobInfo {
    pub id: Uuid,
    pub task_name: String,
    pub args: Value,
    pub status: JobStatus,
    pub queue: String,
    pub priority: i32,
    pub attempts: i32,
    pub max_attempts: i32,
    pub scheduled_at: Option<SystemTime>,
    pub last_error: Option<String>,
    pub result: Option<Value>,
    pub dead_letter_reason: Option<DeadLetterReason>,
    pub producer_id: Option<String>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    /// The jobs it depends on (empty: none).
    pub depends_on: Vec<Uuid>,
    /// What its attempt last reported ([`crate::JobContext::report_progress`]).
    pub progress: Option<Value>,
}

/// Where a job stands for its producer (`soniq.job_result`), and how it ended once it has.
#[derive(Debug, Clone, PartialEq)]
pub struct JobOutcome {
    pub status: JobStatus,
    /// Its result, once done.
    pub result: Option<Value>,
    pub last_error: Option<String>,
}

impl JobOutcome {
    /// Whether the job has ended: done, cancelled or dead.
    pub fn ended(&self) -> bool {
        matches!(
            self.status,
            JobStatus::Done | JobStatus::Cancelled | JobStatus::Dead
        )
    }
}

/// What a job's handler sees of a job it depends on ([`crate::JobContext::dependency_results`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DependencyResult {
    pub job_id: Uuid,
    /// `None` once the job is pruned: it was done, and its result TTL has passed.
    pub status: Option<JobStatus>,
    pub task_name: Option<String>,
    pub result: Option<Value>,
    pub last_error: Option<String>,
}

/// Which jobs `list_jobs` returns: newest first.
#[derive(Debug, Clone)]
pub struct JobFilter {
    pub queue: Option<String>,
    /// Waiting, queued, processing, done or cancelled (dead jobs: the dead-letter service).
    pub status: Option<JobStatus>,
    pub limit: i32,
    pub offset: i32,
}

impl Default for JobFilter {
    fn default() -> Self {
        JobFilter {
            queue: None,
            status: None,
            limit: 100,
            offset: 0,
        }
    }
}

/// Counts of one queue, or of all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStats {
    pub total: i64,
    pub queued: i64,
    pub processing: i64,
    pub done: i64,
    pub cancelled: i64,
    pub dead_letter: i64,
    /// Waiting for the jobs they depend on.
    pub waiting: i64,
}

impl Soniq {
    /// A job by id, also when it is dead; `None` when unknown (or pruned).
    pub async fn get_job(&self, job_id: Uuid) -> Result<Option<JobInfo>> {
        self.store().job_get(job_id).await
    }

    /// A done job's result, as `T`; `None` while it is not done (or had no result).
    pub async fn get_result<T: DeserializeOwned>(&self, job_id: Uuid) -> Result<Option<T>> {
        match self.get_job(job_id).await? {
            Some(JobInfo {
                status: JobStatus::Done,
                result: Some(result),
                ..
            }) => serde_json::from_value(result).map(Some).map_err(|e| {
                Error::Invalid(format!("result of job {job_id} does not fit the type: {e}"))
            }),
            _ => Ok(None),
        }
    }

    pub async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobInfo>> {
        self.store().job_list(filter).await
    }

    /// Delete a job in any state (a running job's outcome will then be refused).
    pub async fn delete_job(&self, job_id: Uuid) -> Result<()> {
        self.store().job_delete(job_id).await
    }

    pub async fn queue_stats(&self, queue: Option<&str>) -> Result<QueueStats> {
        self.store().queue_stats(queue).await
    }
}
