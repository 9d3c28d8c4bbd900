//! The one seam between the runner and where jobs live. Every statement the library and the
//! CLI send is in [`postgres`], once, with its row decoding; [`memory`] keeps the same
//! operations in this process's memory (`Soniq::in_memory()`), and one conformance suite
//! (`runner/tests/conformance.rs`) runs against both, so the two cannot drift.
//!
//! Internal: public only so that suite can reach it, hidden from the documentation and free
//! to change in any release. Operations are named noun first (`job_claim`, `worker_heartbeat`)
//! and take parameter structs.

pub mod memory;
pub mod postgres;

use crate::error::Result;
use crate::job::JobContext;
use crate::jobs::{DependencyResult, JobFilter, JobInfo, JobOutcome, QueueStats};
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};
use uuid::Uuid;

pub use memory::MemoryStore;
pub use postgres::PgStore;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The options a producer may give a job. Unset ones come from the task's registered
/// options, then from the system defaults.
#[derive(Debug, Clone, Default)]
pub struct JobOptions {
    pub queue: Option<String>,
    pub priority: Option<i32>,
    pub retries: Option<i32>,
    /// `Duration::ZERO`: no time limit.
    pub timeout: Option<Duration>,
    pub unique: Option<bool>,
}

/// One job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub task_name: String,
    pub args: Value,
    pub options: JobOptions,
    pub scheduled_at: Option<SystemTime>,
    pub dedup_key: Option<String>,
    pub producer_id: String,
    /// The jobs it waits for (empty: none).
    pub depends_on: Vec<Uuid>,
    pub on_dependency_failure: Option<OnDependencyFailure>,
    /// Its end notifies `soniq_job_finished` (for [`crate::JobHandle::wait`]).
    pub awaitable: bool,
    /// The open batch it joins.
    pub batch_id: Option<Uuid>,
    /// The producer's W3C trace context (`crate::telemetry`).
    pub traceparent: Option<String>,
}

/// What a job does when a job it depends on is cancelled or dies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnDependencyFailure {
    /// It is cancelled too (and so are the jobs that depend on it).
    #[default]
    Cancel,
    /// It runs anyway, once the others it depends on are done.
    Run,
}

impl OnDependencyFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            OnDependencyFailure::Cancel => "cancel",
            OnDependencyFailure::Run => "run",
        }
    }
}

/// Many jobs of one task, with the same options.
#[derive(Debug, Clone)]
pub struct NewJobs {
    pub task_name: String,
    pub args: Vec<Value>,
    pub options: JobOptions,
    pub producer_id: String,
    /// The producer's W3C trace context, carried by every job (`crate::telemetry`).
    pub traceparent: Option<String>,
}

/// A claim: up to `count` due jobs for `worker_id`.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub worker_id: Uuid,
    /// `None`: every queue.
    pub queues: Option<Vec<String>>,
    pub count: usize,
    /// `None`: jobs of any task.
    pub task_names: Option<Vec<String>>,
}

/// A claimed attempt, ready to run.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub context: JobContext,
    pub args: Value,
    /// Why this attempt cannot run (its row holds a value the runner cannot use): it fails at
    /// once instead of taking down the worker.
    pub unrunnable: Option<String>,
    /// The producer's W3C trace context, which the attempt's span links to.
    pub traceparent: Option<String>,
}

/// Why an attempt's failure ends its job at once, whatever attempts remain, and the reason its
/// dead-letter row records. (A job that used its last attempt is `max_retries_exceeded`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// The handler gave up for good (`Outcome::discard`, a command's exit status 65).
    PermanentFailure,
    /// The arguments do not fit the handler's type.
    InvalidArguments,
    /// No handler for the task in the worker that claimed it.
    JobNotFound,
    /// The attempt ran past its time limit (retried like any failure while attempts remain).
    Timeout,
}

impl FailReason {
    pub fn as_str(self) -> &'static str {
        DeadLetterReason::from(self).as_str()
    }

    /// Whether the job dies with this failure even when attempts remain.
    pub fn is_final(self) -> bool {
        !matches!(self, FailReason::Timeout)
    }
}

/// Why a job is in the dead letter (`soniq.dead_letter_reason` in SQL, the same list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterReason {
    /// It used its last attempt.
    MaxRetriesExceeded,
    /// The handler gave up for good.
    PermanentFailure,
    /// No worker has a handler for its task.
    JobNotFound,
    /// Its arguments do not fit the handler.
    InvalidArguments,
    /// Its last attempt timed out.
    Timeout,
    /// An operator moved it there.
    ManualMove,
}

impl DeadLetterReason {
    pub const ALL: [DeadLetterReason; 6] = [
        DeadLetterReason::MaxRetriesExceeded,
        DeadLetterReason::PermanentFailure,
        DeadLetterReason::JobNotFound,
        DeadLetterReason::InvalidArguments,
        DeadLetterReason::Timeout,
        DeadLetterReason::ManualMove,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::MaxRetriesExceeded => "max_retries_exceeded",
            DeadLetterReason::PermanentFailure => "permanent_failure",
            DeadLetterReason::JobNotFound => "job_not_found",
            DeadLetterReason::InvalidArguments => "invalid_arguments",
            DeadLetterReason::Timeout => "timeout",
            DeadLetterReason::ManualMove => "manual_move",
        }
    }

    /// The reason `text` names; an error that lists the reasons otherwise.
    pub fn parse(text: &str) -> crate::Result<Self> {
        Self::ALL
            .into_iter()
            .find(|reason| reason.as_str() == text)
            .ok_or_else(|| {
                let all: Vec<&str> = Self::ALL.iter().map(|r| r.as_str()).collect();
                crate::Error::Invalid(format!(
                    "unknown dead-letter reason {text:?}: one of {}",
                    all.join(", ")
                ))
            })
    }
}

impl From<FailReason> for DeadLetterReason {
    fn from(reason: FailReason) -> Self {
        match reason {
            FailReason::PermanentFailure => DeadLetterReason::PermanentFailure,
            FailReason::InvalidArguments => DeadLetterReason::InvalidArguments,
            FailReason::JobNotFound => DeadLetterReason::JobNotFound,
            FailReason::Timeout => DeadLetterReason::Timeout,
        }
    }
}

impl std::fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One attempt's lease: the job, and the attempt the worker holds it for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub job_id: Uuid,
    pub attempt: i32,
}

/// A completed attempt, with its result (borrowed from the outcome: a result of up to 1 MiB is
/// not copied on its way to the database).
#[derive(Debug, Clone, Copy)]
pub struct Completion<'a> {
    pub lease: Lease,
    pub result: Option<&'a Value>,
}

/// A failed attempt (its error borrowed from the outcome).
#[derive(Debug, Clone, Copy)]
pub struct FailedAttempt<'a> {
    pub lease: Lease,
    pub error: &'a str,
    /// Retry after this delay instead of the task's retry policy.
    pub retry_in: Option<Duration>,
    pub reason: Option<FailReason>,
}

/// This process, as it registers as a worker.
#[derive(Debug, Clone)]
pub struct WorkerRegistration {
    pub host: Option<String>,
    pub pid: i32,
    pub queues: Option<Vec<String>>,
    pub concurrency: i32,
    pub version: String,
    pub task_names: Vec<String>,
}

/// The operations the worker, the producer API and the in-memory queue share. Refusals carry
/// the database's SQLSTATE in both implementations ([`crate::Error::sqlstate`]): 22023 for bad
/// input, 55000 for an outcome whose lease is gone, P0002 for an unknown job or worker.
pub trait Store: Send + Sync {
    /// Publish a task's options (the `soniq.register_task` document).
    fn task_register<'a>(&'a self, name: &'a str, defaults: &'a Value)
        -> BoxFuture<'a, Result<()>>;
    fn job_enqueue<'a>(&'a self, job: &'a NewJob) -> BoxFuture<'a, Result<Uuid>>;
    /// Ids in input order (a duplicate's is the queued job's).
    fn job_enqueue_many<'a>(&'a self, jobs: &'a NewJobs) -> BoxFuture<'a, Result<Vec<Uuid>>>;
    /// Jobs of any tasks, each with its own options, in one statement: ids in input order, all
    /// or nothing; a refusal names the job by its index (`jobs[3]: ...`).
    fn job_enqueue_batch<'a>(&'a self, jobs: &'a [NewJob]) -> BoxFuture<'a, Result<Vec<Uuid>>>;
    fn job_claim<'a>(&'a self, request: &'a ClaimRequest)
        -> BoxFuture<'a, Result<Vec<ClaimedJob>>>;
    /// Returns how many were recorded (an outcome whose lease is gone is left out).
    fn job_complete_many<'a>(
        &'a self,
        worker_id: Uuid,
        completions: &'a [Completion<'a>],
    ) -> BoxFuture<'a, Result<usize>>;
    /// Returns how many were recorded (an outcome whose lease is gone is left out).
    fn job_fail_many<'a>(
        &'a self,
        worker_id: Uuid,
        failures: &'a [FailedAttempt<'a>],
    ) -> BoxFuture<'a, Result<usize>>;
    /// Run again after `delay` without using up the attempt; 55000 when the lease is gone.
    fn job_snooze<'a>(
        &'a self,
        worker_id: Uuid,
        lease: Lease,
        delay: Duration,
        reason: Option<&'a str>,
    ) -> BoxFuture<'a, Result<()>>;
    /// End a running job as cancelled; 55000 when the lease is gone.
    fn job_abort<'a>(
        &'a self,
        worker_id: Uuid,
        lease: Lease,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<()>>;
    /// The jobs the leased job depends on, in the order it named them; 55000 when the lease
    /// is gone.
    fn job_dependency_results(
        &self,
        worker_id: Uuid,
        lease: Lease,
    ) -> BoxFuture<'_, Result<Vec<DependencyResult>>>;
    /// Record the leased attempt's progress; false when the job's progress was recorded less
    /// than a second ago (not kept). 55000 when the lease is gone.
    fn job_progress<'a>(
        &'a self,
        worker_id: Uuid,
        lease: Lease,
        progress: &'a Value,
    ) -> BoxFuture<'a, Result<bool>>;
    /// Save what the job's next attempt resumes from (JSON null: none); 55000 when the lease
    /// is gone.
    fn job_checkpoint_save<'a>(
        &'a self,
        worker_id: Uuid,
        lease: Lease,
        checkpoint: &'a Value,
    ) -> BoxFuture<'a, Result<()>>;
    /// The job's saved checkpoint; 55000 when the lease is gone.
    fn job_checkpoint_read(
        &self,
        worker_id: Uuid,
        lease: Lease,
    ) -> BoxFuture<'_, Result<Option<Value>>>;
    /// A job by id, also a dead one; `None` when unknown.
    fn job_get(&self, job_id: Uuid) -> BoxFuture<'_, Result<Option<JobInfo>>>;
    /// Where a job of this login stands, with its result and last error (`soniq.job_result`);
    /// `None` when unknown (or another login's).
    fn job_result(&self, job_id: Uuid) -> BoxFuture<'_, Result<Option<JobOutcome>>>;
    fn job_list<'a>(&'a self, filter: &'a JobFilter) -> BoxFuture<'a, Result<Vec<JobInfo>>>;
    /// A queued job never runs; a running one is aborted at its worker's next heartbeat.
    /// False when it already finished; P0002 when unknown.
    fn job_cancel(&self, job_id: Uuid) -> BoxFuture<'_, Result<bool>>;
    fn job_delete(&self, job_id: Uuid) -> BoxFuture<'_, Result<()>>;
    fn queue_stats<'a>(&'a self, queue: Option<&'a str>) -> BoxFuture<'a, Result<QueueStats>>;
    /// Stop claiming from a queue (jobs keep arriving); false when it was paused already.
    fn queue_pause<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<bool>>;
    /// Claim from the queue again; false when it was not paused.
    fn queue_resume<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<bool>>;
    /// Whether a queue with flow control (of `queues`; `None`: any) has runnable jobs of
    /// `task_names`: after a claim that found nothing, jobs its limits hold back, which a
    /// worker running until its queues are empty waits for.
    fn queue_held_back<'a>(
        &'a self,
        queues: Option<&'a [String]>,
        task_names: &'a [String],
    ) -> BoxFuture<'a, Result<bool>>;
    fn worker_register<'a>(&'a self, worker: &'a WorkerRegistration)
        -> BoxFuture<'a, Result<Uuid>>;
    /// Keep the worker's leases alive; `held` names the jobs it holds (the store takes back any
    /// other it thinks the worker has). Returns the held jobs whose cancellation was requested;
    /// P0002 when the worker was presumed dead.
    fn worker_heartbeat<'a>(
        &'a self,
        worker_id: Uuid,
        held: &'a [Uuid],
    ) -> BoxFuture<'a, Result<Vec<Uuid>>>;
    /// Hand back the worker's unfinished jobs (no attempt used) and forget it.
    fn worker_deregister(&self, worker_id: Uuid) -> BoxFuture<'_, Result<()>>;
    /// Take back the jobs of workers silent for longer than `heartbeat_timeout`.
    fn maintenance_rescue(&self, heartbeat_timeout: Duration) -> BoxFuture<'_, Result<()>>;
    /// Delete one batch of finished jobs past their retention; returns how many.
    fn maintenance_prune(&self, batch_size: i32) -> BoxFuture<'_, Result<i64>>;
}
