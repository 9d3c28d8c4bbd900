//! The store in this process's memory, for unit tests of handlers without PostgreSQL. It
//! follows the extension's rules where a test can see them, checked by the conformance suite
//! against the real one: option precedence (call, then the task's published options, then the
//! defaults), the ranges of priority, retries and timeout, unique and dedup_key while queued,
//! the claim order and filters, paused queues, leases (an outcome for an attempt the worker
//! no longer holds is refused), retries (the published per-attempt delays; no backoff),
//! snooze, cancel, abort, the dead letter and its reasons, and hand-back at deregistration.

use super::{
    BoxFuture, ClaimRequest, ClaimedJob, Completion, DeadLetterReason, FailedAttempt, Lease,
    NewJob, NewJobs, Store, WorkerRegistration,
};
use crate::error::{Error, Result};
use crate::job::JobContext;
use crate::jobs::{DependencyResult, JobFilter, JobInfo, JobOutcome, JobStatus, QueueStats};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

const DEFAULT_QUEUE: &str = "default";
const DEFAULT_PRIORITY: i32 = 100;
const DEFAULT_RETRIES: i32 = 3;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
const MAX_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);

/// A task's published options, as far as the memory store uses them.
#[derive(Debug, Clone, Default)]
struct TaskDefaults {
    queue: Option<String>,
    priority: Option<i32>,
    retries: Option<i32>,
    timeout: Option<Duration>,
    unique: Option<bool>,
    retry_delays: Vec<Duration>,
}

impl TaskDefaults {
    /// The `soniq.register_task` document (seconds for durations; one delay or a list).
    fn parse(defaults: &Value) -> Self {
        let seconds = |value: &Value| {
            value
                .as_f64()
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
        };
        let int = |key: &str| {
            defaults
                .get(key)
                .and_then(Value::as_i64)
                .and_then(|n| i32::try_from(n).ok())
        };
        TaskDefaults {
            queue: defaults
                .get("queue")
                .and_then(Value::as_str)
                .map(str::to_string),
            priority: int("priority"),
            retries: int("retries"),
            timeout: defaults.get("timeout").and_then(seconds),
            unique: defaults.get("unique").and_then(Value::as_bool),
            retry_delays: match defaults.get("retry_delay") {
                Some(Value::Array(list)) => list.iter().filter_map(seconds).collect(),
                Some(one) => seconds(one).into_iter().collect(),
                None => Vec::new(),
            },
        }
    }
}

struct MemoryJob {
    info: JobInfo,
    timeout: Option<Duration>,
    traceparent: Option<String>,
    retry_delays: Vec<Duration>,
    unique: bool,
    dedup_key: Option<String>,
    worker_id: Option<Uuid>,
    cancel_requested: bool,
    /// When its progress was last kept (at most once a second, as in the database).
    progress_at: Option<SystemTime>,
    checkpoint: Option<Value>,
    /// Enqueue order, the claim order's last tie-break.
    seq: u64,
}

#[derive(Default)]
struct State {
    next_seq: u64,
    jobs: Vec<MemoryJob>,
    tasks: HashMap<String, TaskDefaults>,
    workers: HashSet<Uuid>,
    workers_registered: u128,
    paused: HashSet<String>,
}

/// The in-memory store. Job ids count up from 1 (`Uuid::from_u128(1)`): predictable in tests.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

fn refused(code: SqlState, message: String) -> Error {
    Error::Refused { code, message }
}

fn bad_input(message: String) -> Error {
    refused(SqlState::INVALID_PARAMETER_VALUE, message)
}

/// What `enqueue` refuses before it looks at the queue (its options' ranges, an empty key).
fn check_new_job(job: &NewJob) -> Result<()> {
    if !job.depends_on.is_empty() || job.on_dependency_failure.is_some() || job.batch_id.is_some() {
        return Err(Error::Invalid(format!(
            "cannot enqueue {} with dependencies or into a batch: this Soniq is in memory \
             (Soniq::in_memory()), and those need the database",
            job.task_name
        )));
    }
    let asked = &job.options;
    check_options(asked.priority, asked.retries, asked.timeout)?;
    if job.dedup_key.as_deref() == Some("") {
        return Err(bad_input("dedup_key must not be empty".into()));
    }
    check_traceparent(job.traceparent.as_deref())
}

fn check_traceparent(traceparent: Option<&str>) -> Result<()> {
    match traceparent {
        Some(bad) if !crate::telemetry::is_traceparent(bad) => Err(bad_input(format!(
            "traceparent must be a W3C trace context, got {bad}"
        ))),
        _ => Ok(()),
    }
}

fn check_options(
    priority: Option<i32>,
    retries: Option<i32>,
    timeout: Option<Duration>,
) -> Result<()> {
    if let Some(p) = priority.filter(|p| !(1..=1000).contains(p)) {
        return Err(bad_input(format!(
            "priority must be between 1 and 1000, got {p}"
        )));
    }
    if let Some(r) = retries.filter(|r| !(0..=1000).contains(r)) {
        return Err(bad_input(format!(
            "retries must be between 0 and 1000, got {r}"
        )));
    }
    if let Some(t) = timeout.filter(|t| *t > MAX_TIMEOUT) {
        return Err(bad_input(format!(
            "timeout must be at most 30 days, got {} s",
            t.as_secs_f64()
        )));
    }
    Ok(())
}

fn due(job: &MemoryJob, now: SystemTime) -> bool {
    job.info.status == JobStatus::Queued && job.info.scheduled_at.is_none_or(|at| at <= now)
}

impl MemoryStore {
    pub fn new() -> Self {
        MemoryStore::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every job, in enqueue order, in any state.
    pub fn all(&self) -> Vec<JobInfo> {
        self.state()
            .jobs
            .iter()
            .map(|job| job.info.clone())
            .collect()
    }
}

impl State {
    fn enqueue(&mut self, job: &NewJob) -> Result<Uuid> {
        check_new_job(job)?;
        let asked = &job.options;
        let task = self.tasks.get(&job.task_name).cloned().unwrap_or_default();
        let unique = asked.unique.or(task.unique).unwrap_or(false);
        if let Some(duplicate) = self.queued_duplicate(
            &job.task_name,
            &job.args,
            unique,
            job.dedup_key.as_deref(),
            None,
        ) {
            return Ok(duplicate);
        }
        let now = SystemTime::now();
        self.next_seq += 1;
        let seq = self.next_seq;
        let id = Uuid::from_u128(u128::from(seq));
        self.jobs.push(MemoryJob {
            info: JobInfo {
                id,
                task_name: job.task_name.clone(),
                args: job.args.clone(),
                status: JobStatus::Queued,
                queue: asked
                    .queue
                    .clone()
                    .or(task.queue)
                    .unwrap_or_else(|| DEFAULT_QUEUE.into()),
                priority: asked.priority.or(task.priority).unwrap_or(DEFAULT_PRIORITY),
                attempts: 0,
                max_attempts: asked.retries.or(task.retries).unwrap_or(DEFAULT_RETRIES) + 1,
                scheduled_at: job.scheduled_at,
                last_error: None,
                result: None,
                dead_letter_reason: None,
                producer_id: Some(job.producer_id.clone()),
                created_at: now,
                updated_at: now,
                depends_on: Vec::new(),
                progress: None,
            },
            timeout: Some(asked.timeout.or(task.timeout).unwrap_or(DEFAULT_TIMEOUT))
                .filter(|t| !t.is_zero()),
            traceparent: job.traceparent.clone(),
            retry_delays: task.retry_delays,
            unique,
            dedup_key: job.dedup_key.clone(),
            worker_id: None,
            cancel_requested: false,
            progress_at: None,
            checkpoint: None,
            seq,
        });
        Ok(id)
    }

    fn check_worker(&self, worker_id: Uuid) -> Result<()> {
        if self.workers.contains(&worker_id) {
            Ok(())
        } else {
            Err(refused(
                SqlState::NO_DATA_FOUND,
                format!("worker {worker_id} is not registered"),
            ))
        }
    }

    /// A queued job that the given one duplicates (same dedup key; or, both unique, the same
    /// task and arguments), other than `except`.
    fn queued_duplicate(
        &self,
        task_name: &str,
        args: &Value,
        unique: bool,
        dedup_key: Option<&str>,
        except: Option<Uuid>,
    ) -> Option<Uuid> {
        self.jobs
            .iter()
            .filter(|queued| {
                queued.info.status == JobStatus::Queued && Some(queued.info.id) != except
            })
            .find(|queued| {
                (dedup_key.is_some() && queued.dedup_key.as_deref() == dedup_key)
                    || (unique
                        && queued.unique
                        && queued.info.task_name == task_name
                        && queued.info.args == *args)
            })
            .map(|queued| queued.info.id)
    }

    /// The index of the job this worker holds for this attempt.
    fn leased(&self, worker_id: Uuid, lease: Lease) -> Option<usize> {
        self.jobs.iter().position(|job| {
            job.info.id == lease.job_id
                && job.info.status == JobStatus::Processing
                && job.worker_id == Some(worker_id)
                && job.info.attempts == lease.attempt
        })
    }

    /// The held job, or the refusal the extension gives: P0002 for an unknown job, 55000 for
    /// one this worker does not hold for this attempt.
    fn leased_or_refused(&self, worker_id: Uuid, lease: Lease) -> Result<usize> {
        if !self.jobs.iter().any(|job| job.info.id == lease.job_id) {
            return Err(refused(
                SqlState::NO_DATA_FOUND,
                format!("job {} does not exist", lease.job_id),
            ));
        }
        self.leased(worker_id, lease).ok_or_else(|| {
            refused(
                SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "worker {worker_id} does not hold the lease on attempt {} of job {}",
                    lease.attempt, lease.job_id
                ),
            )
        })
    }

    fn job(&mut self, job_id: Uuid) -> Result<&mut MemoryJob> {
        self.jobs
            .iter_mut()
            .find(|job| job.info.id == job_id)
            .ok_or_else(|| {
                refused(
                    SqlState::NO_DATA_FOUND,
                    format!("job {job_id} does not exist"),
                )
            })
    }

    /// Back to the queue with `attempts` used, due at `run_at`; a unique or dedup job whose
    /// duplicate is queued yields to it instead (cancelled, saying which runs instead).
    fn requeue(&mut self, i: usize, attempts: i32, run_at: Option<SystemTime>, error: String) {
        let job = &self.jobs[i];
        let duplicate = self.queued_duplicate(
            &job.info.task_name,
            &job.info.args,
            job.unique,
            job.dedup_key.as_deref(),
            Some(job.info.id),
        );
        let job = &mut self.jobs[i];
        if let Some(duplicate) = duplicate {
            let same = if job.dedup_key.is_some() {
                "dedup key"
            } else {
                "task and args"
            };
            finish(job, JobStatus::Cancelled);
            job.info.last_error = Some(format!(
                "{error}; not run again: job {duplicate}, queued with the same {same}, runs instead"
            ));
            return;
        }
        job.info.status = JobStatus::Queued;
        job.info.attempts = attempts;
        job.info.scheduled_at = run_at;
        job.info.last_error = Some(error);
        job.info.updated_at = SystemTime::now();
        job.worker_id = None;
        job.cancel_requested = false;
    }

    /// A failed attempt: retried per the job's delays while attempts remain, else dead.
    fn fail(&mut self, i: usize, failure: &FailedAttempt<'_>) {
        let job = &mut self.jobs[i];
        let dead_because = match failure.reason {
            Some(reason) if reason.is_final() => Some(reason.into()),
            reason if job.info.attempts >= job.info.max_attempts => {
                Some(reason.map_or(DeadLetterReason::MaxRetriesExceeded, DeadLetterReason::from))
            }
            _ => None,
        };
        if let Some(reason) = dead_because {
            bury(job, reason, failure.error.to_string());
            return;
        }
        let index = usize::try_from(job.info.attempts - 1).unwrap_or(0);
        let listed = job
            .retry_delays
            .get(index)
            .or(job.retry_delays.last())
            .copied();
        let delay = failure.retry_in.or(listed).unwrap_or(Duration::ZERO);
        let run_at = (!delay.is_zero()).then(|| SystemTime::now() + delay);
        let attempts = job.info.attempts;
        self.requeue(i, attempts, run_at, failure.error.to_string());
    }

    /// A worker's jobs when it leaves: a cancelled one ends, one on its last attempt dies,
    /// the others go back due as they were (the attempt counts).
    fn take_back(&mut self, worker_id: Uuid, why: &str) {
        for i in 0..self.jobs.len() {
            let job = &mut self.jobs[i];
            if job.info.status != JobStatus::Processing || job.worker_id != Some(worker_id) {
                continue;
            }
            let attempt = job.info.attempts;
            if job.cancel_requested {
                finish(job, JobStatus::Cancelled);
                job.info.last_error = Some(format!("cancelled; {why} during attempt {attempt}"));
            } else if attempt >= job.info.max_attempts {
                let error = format!("{why} during its last attempt; attempts exhausted");
                bury(job, DeadLetterReason::MaxRetriesExceeded, error);
            } else {
                let run_at = job.info.scheduled_at;
                self.requeue(
                    i,
                    attempt,
                    run_at,
                    format!("{why} during attempt {attempt}"),
                );
            }
        }
    }
}

fn finish(job: &mut MemoryJob, status: JobStatus) {
    job.info.status = status;
    job.worker_id = None;
    job.info.updated_at = SystemTime::now();
}

fn bury(job: &mut MemoryJob, reason: DeadLetterReason, error: String) {
    finish(job, JobStatus::Dead);
    job.info.dead_letter_reason = Some(reason);
    job.info.last_error = Some(error);
}

fn ready<'a, T: Send + 'a>(value: Result<T>) -> BoxFuture<'a, Result<T>> {
    Box::pin(std::future::ready(value))
}

impl Store for MemoryStore {
    fn task_register<'a>(
        &'a self,
        name: &'a str,
        defaults: &'a Value,
    ) -> BoxFuture<'a, Result<()>> {
        self.state()
            .tasks
            .insert(name.to_string(), TaskDefaults::parse(defaults));
        ready(Ok(()))
    }

    fn job_enqueue<'a>(&'a self, job: &'a NewJob) -> BoxFuture<'a, Result<Uuid>> {
        ready(self.state().enqueue(job))
    }

    fn job_enqueue_many<'a>(&'a self, new: &'a NewJobs) -> BoxFuture<'a, Result<Vec<Uuid>>> {
        let mut state = self.state();
        // All or nothing, as one statement: checked before any is kept.
        let options = &new.options;
        if let Err(e) = check_options(options.priority, options.retries, options.timeout)
            .and_then(|()| check_traceparent(new.traceparent.as_deref()))
        {
            return ready(Err(e));
        }
        let ids = new
            .args
            .iter()
            .map(|args| {
                state.enqueue(&NewJob {
                    task_name: new.task_name.clone(),
                    args: args.clone(),
                    options: new.options.clone(),
                    scheduled_at: None,
                    dedup_key: None,
                    producer_id: new.producer_id.clone(),
                    depends_on: Vec::new(),
                    on_dependency_failure: None,
                    awaitable: false,
                    batch_id: None,
                    traceparent: new.traceparent.clone(),
                })
            })
            .collect();
        ready(ids)
    }

    fn job_enqueue_batch<'a>(&'a self, jobs: &'a [NewJob]) -> BoxFuture<'a, Result<Vec<Uuid>>> {
        let mut state = self.state();
        // All or nothing, as one statement: every job checked before any is kept.
        let checked = jobs.iter().enumerate().try_for_each(|(index, job)| {
            check_new_job(job).map_err(|e| match e {
                Error::Refused { code, message } => Error::Refused {
                    code,
                    message: format!("jobs[{index}]: {message}"),
                },
                other => other,
            })
        });
        if let Err(e) = checked {
            return ready(Err(e));
        }
        ready(jobs.iter().map(|job| state.enqueue(job)).collect())
    }

    fn job_claim<'a>(
        &'a self,
        request: &'a ClaimRequest,
    ) -> BoxFuture<'a, Result<Vec<ClaimedJob>>> {
        let mut state = self.state();
        if let Err(e) = state.check_worker(request.worker_id) {
            return ready(Err(e));
        }
        if !(1..=10_000).contains(&request.count) {
            return ready(Err(bad_input(format!(
                "batch_size must be between 1 and 10000, got {}",
                request.count
            ))));
        }
        let now = SystemTime::now();
        let State { jobs, paused, .. } = &mut *state;
        let mut eligible: Vec<&mut MemoryJob> = jobs
            .iter_mut()
            .filter(|job| due(job, now) && !paused.contains(&job.info.queue))
            .filter(|job| {
                request
                    .queues
                    .as_ref()
                    .is_none_or(|q| q.contains(&job.info.queue))
            })
            .filter(|job| {
                request
                    .task_names
                    .as_ref()
                    .is_none_or(|names| names.contains(&job.info.task_name))
            })
            .collect();
        eligible.sort_by_key(|job| {
            (
                job.info.priority,
                job.info.scheduled_at.is_some(),
                job.info.scheduled_at,
                job.seq,
            )
        });
        let claimed = eligible
            .into_iter()
            .take(request.count)
            .map(|job| {
                job.info.status = JobStatus::Processing;
                job.info.attempts += 1;
                job.info.updated_at = now;
                job.worker_id = Some(request.worker_id);
                ClaimedJob {
                    context: JobContext {
                        job_id: job.info.id,
                        task_name: job.info.task_name.clone(),
                        attempt: job.info.attempts,
                        max_attempts: job.info.max_attempts,
                        queue: job.info.queue.clone(),
                        worker_id: request.worker_id,
                        scheduled_at: job.info.scheduled_at,
                        created_at: job.info.created_at,
                        timeout: job.timeout,
                        store: Default::default(),
                    },
                    args: job.info.args.clone(),
                    unrunnable: None,
                    traceparent: job.traceparent.clone(),
                }
            })
            .collect();
        ready(Ok(claimed))
    }

    fn job_complete_many<'a>(
        &'a self,
        worker_id: Uuid,
        completions: &'a [Completion<'a>],
    ) -> BoxFuture<'a, Result<usize>> {
        let mut state = self.state();
        let mut recorded = 0;
        for completion in completions {
            if let Some(i) = state.leased(worker_id, completion.lease) {
                let job = &mut state.jobs[i];
                finish(job, JobStatus::Done);
                job.info.result = completion.result.cloned();
                recorded += 1;
            }
        }
        ready(Ok(recorded))
    }

    fn job_fail_many<'a>(
        &'a self,
        worker_id: Uuid,
        failures: &'a [FailedAttempt<'a>],
    ) -> BoxFuture<'a, Result<usize>> {
        let mut state = self.state();
        let mut recorded = 0;
        for failure in failures {
            if let Some(i) = state.leased(worker_id, failure.lease) {
                state.fail(i, failure);
                recorded += 1;
            }
        }
        ready(Ok(recorded))
    }

    fn job_snooze<'a>(
        &'a self,
        worker_id: Uuid,
        lease: Lease,
        delay: Duration,
        reason: Option<&'a str>,
    ) -> BoxFuture<'a, Result<()>> {
        let mut state = self.state();
        let result = if delay > MAX_TIMEOUT {
            Err(bad_input("delay must be at most 30 days".into()))
        } else {
            state.leased_or_refused(worker_id, lease).map(|i| {
                let error = match reason {
                    Some(reason) => format!("snoozed: {reason}"),
                    None => "snoozed".into(),
                };
                let run_at = Some(SystemTime::now() + delay);
                state.requeue(i, lease.attempt - 1, run_at, error);
            })
        };
        ready(result)
    }

    fn job_abort<'a>(
        &'a self,
        worker_id: Uuid,
        lease: Lease,
        reason: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        let mut state = self.state();
        let result = state.leased_or_refused(worker_id, lease).map(|i| {
            let job = &mut state.jobs[i];
            finish(job, JobStatus::Cancelled);
            job.info.last_error = Some(reason.to_string());
        });
        ready(result)
    }

    fn job_dependency_results(
        &self,
        worker_id: Uuid,
        lease: Lease,
    ) -> BoxFuture<'_, Result<Vec<DependencyResult>>> {
        // No job here depends on another (enqueue refuses them).
        ready(
            self.state()
                .leased_or_refused(worker_id, lease)
                .map(|_| Vec::new()),
        )
    }

    fn job_progress<'a>(
        &'a self,
        worker_id: Uuid,
        lease: Lease,
        progress: &'a Value,
    ) -> BoxFuture<'a, Result<bool>> {
        let mut state = self.state();
        let result = state.leased_or_refused(worker_id, lease).map(|i| {
            let job = &mut state.jobs[i];
            let now = SystemTime::now();
            let recent = job.progress_at.is_some_and(|at| {
                now.duration_since(at)
                    .is_ok_and(|since| since < Duration::from_secs(1))
            });
            if !recent {
                job.info.progress = Some(progress.clone());
                job.progress_at = Some(now);
            }
            !recent
        });
        ready(result)
    }

    fn job_checkpoint_save<'a>(
        &'a self,
        worker_id: Uuid,
        lease: Lease,
        checkpoint: &'a Value,
    ) -> BoxFuture<'a, Result<()>> {
        let mut state = self.state();
        let result = state
            .leased_or_refused(worker_id, lease)
            .map(|i| state.jobs[i].checkpoint = Some(checkpoint.clone()));
        ready(result)
    }

    fn job_checkpoint_read(
        &self,
        worker_id: Uuid,
        lease: Lease,
    ) -> BoxFuture<'_, Result<Option<Value>>> {
        let state = self.state();
        let result = state
            .leased_or_refused(worker_id, lease)
            .map(|i| state.jobs[i].checkpoint.clone());
        ready(result)
    }

    fn job_get(&self, job_id: Uuid) -> BoxFuture<'_, Result<Option<JobInfo>>> {
        let state = self.state();
        let job = state.jobs.iter().find(|job| job.info.id == job_id);
        ready(Ok(job.map(|job| job.info.clone())))
    }

    fn job_result(&self, job_id: Uuid) -> BoxFuture<'_, Result<Option<JobOutcome>>> {
        let state = self.state();
        let job = state.jobs.iter().find(|job| job.info.id == job_id);
        ready(Ok(job.map(|job| JobOutcome {
            status: job.info.status,
            result: job.info.result.clone(),
            last_error: job.info.last_error.clone(),
        })))
    }

    fn job_list<'a>(&'a self, filter: &'a JobFilter) -> BoxFuture<'a, Result<Vec<JobInfo>>> {
        if filter.status == Some(JobStatus::Dead) {
            return ready(Err(bad_input(
                "status must be queued, processing, done or cancelled, got dead".into(),
            )));
        }
        if !(1..=10_000).contains(&filter.limit) || filter.offset < 0 {
            return ready(Err(bad_input(
                "row_limit must be between 1 and 10000 and row_offset at least 0".into(),
            )));
        }
        let state = self.state();
        let listed = state
            .jobs
            .iter()
            .rev()
            .map(|job| &job.info)
            .filter(|info| info.status != JobStatus::Dead)
            .filter(|info| filter.queue.as_ref().is_none_or(|q| *q == info.queue))
            .filter(|info| filter.status.is_none_or(|s| s == info.status))
            .skip(usize::try_from(filter.offset).unwrap_or(0))
            .take(usize::try_from(filter.limit).unwrap_or(0))
            .cloned()
            .collect();
        ready(Ok(listed))
    }

    fn job_cancel(&self, job_id: Uuid) -> BoxFuture<'_, Result<bool>> {
        let mut state = self.state();
        let result = state.job(job_id).map(|job| match job.info.status {
            JobStatus::Queued => {
                finish(job, JobStatus::Cancelled);
                true
            }
            JobStatus::Processing => {
                job.cancel_requested = true;
                true
            }
            JobStatus::Waiting | JobStatus::Done | JobStatus::Cancelled | JobStatus::Dead => false,
        });
        ready(result)
    }

    fn job_delete(&self, job_id: Uuid) -> BoxFuture<'_, Result<()>> {
        let mut state = self.state();
        let result = match state.jobs.iter().position(|job| job.info.id == job_id) {
            Some(i) if state.jobs[i].info.status == JobStatus::Dead => Err(refused(
                SqlState::NO_DATA_FOUND,
                format!("job {job_id} is in the dead letter"),
            )),
            Some(i) => {
                state.jobs.remove(i);
                Ok(())
            }
            None => Err(refused(
                SqlState::NO_DATA_FOUND,
                format!("job {job_id} does not exist"),
            )),
        };
        ready(result)
    }

    fn queue_stats<'a>(&'a self, queue: Option<&'a str>) -> BoxFuture<'a, Result<QueueStats>> {
        let state = self.state();
        let mut stats = QueueStats {
            total: 0,
            queued: 0,
            processing: 0,
            done: 0,
            cancelled: 0,
            dead_letter: 0,
            waiting: 0,
        };
        for job in state
            .jobs
            .iter()
            .filter(|job| queue.is_none_or(|q| q == job.info.queue))
        {
            stats.total += 1;
            *match job.info.status {
                JobStatus::Waiting => &mut stats.waiting,
                JobStatus::Queued => &mut stats.queued,
                JobStatus::Processing => &mut stats.processing,
                JobStatus::Done => &mut stats.done,
                JobStatus::Cancelled => &mut stats.cancelled,
                JobStatus::Dead => &mut stats.dead_letter,
            } += 1;
        }
        ready(Ok(stats))
    }

    fn queue_pause<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<bool>> {
        ready(Ok(self.state().paused.insert(queue.to_string())))
    }

    fn queue_resume<'a>(&'a self, queue: &'a str) -> BoxFuture<'a, Result<bool>> {
        ready(Ok(self.state().paused.remove(queue)))
    }

    /// The in-memory queue has no flow control: nothing is ever held back.
    fn queue_held_back<'a>(
        &'a self,
        _queues: Option<&'a [String]>,
        _task_names: &'a [String],
    ) -> BoxFuture<'a, Result<bool>> {
        ready(Ok(false))
    }

    fn worker_register<'a>(
        &'a self,
        _worker: &'a WorkerRegistration,
    ) -> BoxFuture<'a, Result<Uuid>> {
        let mut state = self.state();
        // Worker ids count up too, in a range of their own (the high bit set).
        let id = Uuid::from_u128((1 << 127) | state.workers_registered);
        state.workers_registered += 1;
        state.workers.insert(id);
        ready(Ok(id))
    }

    fn worker_heartbeat<'a>(
        &'a self,
        worker_id: Uuid,
        held: &'a [Uuid],
    ) -> BoxFuture<'a, Result<Vec<Uuid>>> {
        let state = self.state();
        let result = state.check_worker(worker_id).map(|()| {
            state
                .jobs
                .iter()
                .filter(|job| job.cancel_requested && job.worker_id == Some(worker_id))
                .filter(|job| held.contains(&job.info.id))
                .map(|job| job.info.id)
                .collect()
        });
        ready(result)
    }

    fn worker_deregister(&self, worker_id: Uuid) -> BoxFuture<'_, Result<()>> {
        let mut state = self.state();
        let result = state.check_worker(worker_id).map(|()| {
            state.workers.remove(&worker_id);
            state.take_back(worker_id, &format!("worker {worker_id} deregistered"));
        });
        ready(result)
    }

    /// Workers in one process do not die apart from it: nothing to take back.
    fn maintenance_rescue(&self, _heartbeat_timeout: Duration) -> BoxFuture<'_, Result<()>> {
        ready(Ok(()))
    }

    /// Finished jobs stay, for the test to look at.
    fn maintenance_prune(&self, _batch_size: i32) -> BoxFuture<'_, Result<i64>> {
        ready(Ok(0))
    }
}
