//! The in-memory queue: unit-test handlers without PostgreSQL.
//!
//! It follows the database's rules where a test can see them: option precedence (call,
//! then the handler's registration, then the defaults), unique and dedup_key while queued,
//! the claim order, attempts, immediate and delayed retries (the registered per-attempt
//! delays; no backoff), snooze (with its reason as the last error), cancel, the dead letter
//! with its reasons, and the size limits of errors, results and snoozes.

use crate::enqueue::Enqueue;
use crate::error::Result;
use crate::execute::{execute, ReportKind};
use crate::job::JobContext;
use crate::jobs::{JobInfo, JobStatus};
use crate::registry::{Registry, Task};
use crate::{Backend, Soniq};
use serde::Serialize;
use serde_json::Value;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};
use uuid::Uuid;

struct MemoryJob {
    info: JobInfo,
    timeout: Option<Duration>,
    retry_delays: Vec<Duration>,
    unique: bool,
    dedup_key: Option<String>,
    /// Enqueue order, the claim order's last tie-break.
    seq: u64,
}

#[derive(Default)]
pub(crate) struct Store {
    jobs: Mutex<(u64, Vec<MemoryJob>)>,
}

fn due(job: &MemoryJob, now: SystemTime) -> bool {
    job.info.status == JobStatus::Queued && job.info.scheduled_at.is_none_or(|at| at <= now)
}

impl Store {
    pub fn enqueue(&self, registry: &Registry, request: &Enqueue<'_>, args: Value) -> Uuid {
        let registered = registry.tasks.get(&request.task_name).map(|r| &r.options);
        let asked = &request.options;
        let unique = asked
            .unique
            .or(registered.and_then(|o| o.unique))
            .unwrap_or(false);
        let mut store = self.jobs.lock().unwrap();
        let existing = store.1.iter().find(|job| {
            job.info.status == JobStatus::Queued
                && ((request.dedup_key.is_some() && job.dedup_key == request.dedup_key)
                    || (unique
                        && job.unique
                        && job.info.task_name == request.task_name
                        && job.info.args == args))
        });
        if let Some(job) = existing {
            return job.info.id;
        }
        let now = SystemTime::now();
        store.0 += 1;
        let seq = store.0;
        // Ids of the in-memory queue count up from 1: predictable in tests.
        let id = Uuid::from_u128(u128::from(seq));
        store.1.push(MemoryJob {
            info: JobInfo {
                id,
                task_name: request.task_name.clone(),
                args,
                status: JobStatus::Queued,
                queue: asked
                    .queue
                    .clone()
                    .or_else(|| registered.and_then(|o| o.queue.clone()))
                    .unwrap_or_else(|| "default".into()),
                priority: asked
                    .priority
                    .or(registered.and_then(|o| o.priority))
                    .unwrap_or(100),
                attempts: 0,
                max_attempts: asked
                    .retries
                    .or(registered.and_then(|o| o.retries))
                    .unwrap_or(3)
                    + 1,
                scheduled_at: request.scheduled_at,
                last_error: None,
                result: None,
                dead_letter_reason: None,
                producer_id: None,
                created_at: now,
                updated_at: now,
            },
            timeout: match asked.timeout.or(registered.and_then(|o| o.timeout)) {
                Some(t) if t.is_zero() => None,
                Some(t) => Some(t),
                None => Some(Duration::from_secs(300)),
            },
            retry_delays: registered
                .and_then(|o| o.retry_delays.clone())
                .unwrap_or_default(),
            unique,
            dedup_key: request.dedup_key.clone(),
            seq,
        });
        id
    }

    /// Lease the next due job: attempts + 1, processing.
    fn claim(&self) -> Option<(JobContext, Value)> {
        let now = SystemTime::now();
        let mut store = self.jobs.lock().unwrap();
        let job = store
            .1
            .iter_mut()
            .filter(|job| due(job, now))
            .min_by_key(|job| {
                (
                    job.info.priority,
                    job.info.scheduled_at.is_some(),
                    job.info.scheduled_at,
                    job.seq,
                )
            })?;
        job.info.status = JobStatus::Processing;
        job.info.attempts += 1;
        let ctx = JobContext {
            job_id: job.info.id,
            job_name: job.info.task_name.clone(),
            attempt: job.info.attempts,
            max_attempts: job.info.max_attempts,
            queue: job.info.queue.clone(),
            worker_id: Uuid::nil(),
            scheduled_at: job.info.scheduled_at,
            created_at: job.info.created_at,
            timeout: job.timeout,
        };
        Some((ctx, job.info.args.clone()))
    }

    /// Record an attempt's outcome the way the database would.
    fn record(&self, id: Uuid, kind: ReportKind) {
        let now = SystemTime::now();
        let mut store = self.jobs.lock().unwrap();
        let Some(job) = store.1.iter_mut().find(|job| job.info.id == id) else {
            return;
        };
        let info = &mut job.info;
        info.updated_at = now;
        match kind {
            ReportKind::Done(result) => {
                info.status = JobStatus::Done;
                info.result = result;
            }
            ReportKind::Snooze { delay, reason } => {
                info.status = JobStatus::Queued;
                info.attempts -= 1;
                info.scheduled_at = Some(now + delay);
                info.last_error = Some(match reason {
                    Some(reason) => format!("snoozed: {reason}"),
                    None => "snoozed".into(),
                });
            }
            ReportKind::Abort(reason) => {
                info.status = JobStatus::Cancelled;
                info.last_error = Some(reason);
            }
            ReportKind::Fail {
                error,
                retry_in,
                reason,
            } => {
                info.last_error = Some(error);
                let final_reason = match reason {
                    Some(r @ ("permanent_failure" | "invalid_arguments" | "job_not_found")) => {
                        Some(r)
                    }
                    _ if info.attempts >= info.max_attempts => {
                        Some(reason.unwrap_or("max_retries_exceeded"))
                    }
                    _ => None,
                };
                if let Some(reason) = final_reason {
                    info.status = JobStatus::Dead;
                    info.dead_letter_reason = Some(reason.into());
                } else {
                    let index = usize::try_from(info.attempts - 1).unwrap_or(0);
                    let listed = job
                        .retry_delays
                        .get(index)
                        .or(job.retry_delays.last())
                        .copied();
                    let delay = retry_in.or(listed).unwrap_or(Duration::ZERO);
                    info.status = JobStatus::Queued;
                    info.scheduled_at = (!delay.is_zero()).then(|| now + delay);
                }
            }
        }
    }

    pub fn get(&self, id: Uuid) -> Option<JobInfo> {
        let store = self.jobs.lock().unwrap();
        store
            .1
            .iter()
            .find(|job| job.info.id == id)
            .map(|job| job.info.clone())
    }

    pub fn all(&self) -> Vec<JobInfo> {
        self.jobs
            .lock()
            .unwrap()
            .1
            .iter()
            .map(|job| job.info.clone())
            .collect()
    }
}

impl Soniq {
    fn memory(&self) -> &Store {
        match &self.backend {
            Backend::Memory(store) => store,
            Backend::Postgres(_) => panic!("this is a test helper of Soniq::in_memory()"),
        }
    }

    /// Run every due job inline until none is due (an immediate retry runs in the same
    /// drain; delayed retries and future jobs wait). Returns the attempts run, in order.
    /// Only for `Soniq::in_memory()`.
    pub async fn drain(&self) -> Vec<JobContext> {
        let mut ran = Vec::new();
        while let Some((ctx, args)) = self.memory().claim() {
            let kind = execute(&self.handlers, ctx.clone(), args).await;
            self.memory().record(ctx.job_id, kind);
            ran.push(ctx);
        }
        ran
    }

    /// The jobs of a task in the in-memory queue, in enqueue order, in any state.
    pub fn enqueued(&self, task_name: &str) -> Vec<JobInfo> {
        self.memory()
            .all()
            .into_iter()
            .filter(|job| job.task_name == task_name)
            .collect()
    }

    /// Panic unless a job of `task` with exactly these arguments was enqueued (in memory).
    #[track_caller]
    pub fn assert_enqueued<A: Serialize>(&self, task: &Task<A>, args: &A) {
        let expected = serde_json::to_value(args).expect("arguments serialise to JSON");
        let jobs = self.enqueued(task.name());
        if !jobs.iter().any(|job| job.args == expected) {
            let seen: Vec<String> = jobs.iter().map(|job| job.args.to_string()).collect();
            panic!(
                "no job of {} was enqueued with {expected}; enqueued: [{}]",
                task.name(),
                seen.join(", ")
            );
        }
    }
}

/// Wait until `condition` holds, checking every 10 ms; an error after `timeout`.
pub async fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition() {
        if tokio::time::Instant::now() >= deadline {
            return Err(crate::Error::Invalid(format!(
                "the condition did not hold within {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}
