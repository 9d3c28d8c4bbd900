//! Looking at jobs: one job (also a dead one), its result, a filtered list, queue counts.

use crate::error::{Error, Result};
use crate::Soniq;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::time::SystemTime;
use tokio_postgres::Row;
use uuid::Uuid;

/// Where a job is in its life. Dead jobs live in the dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Queued,
    Processing,
    Done,
    Cancelled,
    Dead,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Processing => "processing",
            JobStatus::Done => "done",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Dead => "dead",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Self> {
        Ok(match text {
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
    pub dead_letter_reason: Option<String>,
    pub producer_id: Option<String>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

const JOB_COLUMNS: &str = "id, task_name, args, status, queue, priority, attempts, max_attempts, \
     scheduled_at, last_error, result, dead_letter_reason, producer_id, created_at, updated_at";

impl JobInfo {
    fn from_row(row: &Row) -> Result<Self> {
        Ok(JobInfo {
            id: row.get(0),
            task_name: row.get(1),
            args: row.get(2),
            status: JobStatus::parse(row.get(3))?,
            queue: row.get(4),
            priority: row.get(5),
            attempts: row.get(6),
            max_attempts: row.get(7),
            scheduled_at: row.get(8),
            last_error: row.get(9),
            result: row.get(10),
            dead_letter_reason: row.get(11),
            producer_id: row.get(12),
            created_at: row.get(13),
            updated_at: row.get(14),
        })
    }
}

/// Which jobs `list_jobs` returns: newest first.
#[derive(Debug, Clone)]
pub struct JobFilter {
    pub queue: Option<String>,
    /// Queued, processing, done or cancelled (dead jobs: the dead-letter service).
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
}

impl Soniq {
    /// A job by id, also when it is dead; `None` when unknown (or pruned).
    pub async fn get_job(&self, job_id: Uuid) -> Result<Option<JobInfo>> {
        if let crate::Backend::Memory(store) = &self.backend {
            return Ok(store.get(job_id));
        }
        let client = self.connection().await?;
        let row = client
            .query_opt(
                &format!("SELECT {JOB_COLUMNS} FROM soniq.get_job($1)"),
                &[&job_id],
            )
            .await?;
        row.as_ref().map(JobInfo::from_row).transpose()
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
        let client = self.connection().await?;
        let status = filter.status.map(JobStatus::as_str);
        let rows = client
            .query(
                &format!("SELECT {JOB_COLUMNS} FROM soniq.list_jobs($1, $2, $3, $4)"),
                &[&filter.queue, &status, &filter.limit, &filter.offset],
            )
            .await?;
        rows.iter().map(JobInfo::from_row).collect()
    }

    /// Delete a job in any state (a running job's outcome will then be refused).
    pub async fn delete_job(&self, job_id: Uuid) -> Result<()> {
        let client = self.connection().await?;
        client
            .execute("SELECT soniq.delete_job($1)", &[&job_id])
            .await?;
        Ok(())
    }

    pub async fn queue_stats(&self, queue: Option<&str>) -> Result<QueueStats> {
        let client = self.connection().await?;
        let row = client
            .query_one(
                "SELECT total, queued, processing, done, cancelled, dead_letter FROM soniq.queue_stats($1)",
                &[&queue],
            )
            .await?;
        Ok(QueueStats {
            total: row.get(0),
            queued: row.get(1),
            processing: row.get(2),
            done: row.get(3),
            cancelled: row.get(4),
            dead_letter: row.get(5),
        })
    }
}
